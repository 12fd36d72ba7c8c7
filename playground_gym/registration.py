"""Registers every Playground env with Gymnasium as ``playground/<Name>`` (vector-only).

Examples:
    >>> import gymnasium as gym, playground_gym
    >>> envs = gym.make_vec("playground/CartpoleBalance", num_envs=4, device="cpu")
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from playground_gym.configs import ENV_PREFIX, list_envs

__all__ = ["register_envs"]


def _single_env_unsupported(**kwargs: Any) -> gym.Env:
    raise gym.error.Error(
        "Playground envs are batched on the accelerator and exist only as vector envs: use "
        "gym.make_vec('playground/<Name>', num_envs=N) or playground_gym.make_vec('<Name>', N); "
        "for a single env use num_envs=1."
    )


def register_envs() -> list[str]:
    """Register ``playground/<Name>`` for each Playground env not yet registered; returns all the ids."""
    ids = []
    for name in list_envs():
        env_id = ENV_PREFIX + name
        ids.append(env_id)
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=_single_env_unsupported,
            vector_entry_point="playground_gym.vector_env:PlaygroundVectorEnv",
            kwargs={"env_id": name},
        )
    return ids

"""An skrl torch env wrapper over a torch-mode PlaygroundVectorEnv (instead of skrl's own ``"playground"`` wrapper).

skrl's trainers and agents (PPO, SAC, ...) run on it unchanged. Unlike ``skrl.envs.wrappers.torch.wrap_env(env,
"playground")``, which steps upstream's env directly, this one keeps playground_gym's episode semantics: fresh
initial states at every autoreset, ``truncated`` (time limit) kept apart from ``terminated`` (set ``time_limit_
bootstrap=True`` in skrl's agent config to bootstrap truncations; skrl bootstraps with the value of the observation
before the last step), and the true terminal observation in ``info["final_obs"]``.

- ``step`` returns ``(obs, reward, terminated, truncated, info)`` with reward and flags shaped ``(num_envs, 1)`` as skrl
  expects; tensors stay on the env's device, no host sync.
- ``state()`` is ``privileged_state`` for envs with dict observations (skrl's ``state_space``: asymmetric critics),
  else ``None``.
- ``info["episode"]`` holds ``"Episode / Return (unscaled)"`` and ``"Episode / Length"``: the mean over the episodes that
  ended on the latest step on which any ended (0-d tensors, updated on the device), which skrl's trainers log under
  those names (its ``environment_info`` is ``"episode"`` by default).

Examples:
    >>> import playground_gym
    >>> from playground_gym.adapters import SkrlEnv
    >>> env = SkrlEnv(playground_gym.make_vec("CartpoleBalance", 64, device="cpu"), seed=0)
    >>> env.observation_space.shape, env.num_envs
    ((5,), 64)
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from skrl.envs.wrappers.torch.base import Wrapper

from playground_gym.adapters._common import LatestEpisodeMeans, check_torch_env
from playground_gym.autoreset import PRIVILEGED_KEY
from playground_gym.vector_env import PlaygroundVectorEnv

__all__ = ["SkrlEnv"]


class SkrlEnv(Wrapper):
    """skrl env wrapper over a playground_gym vector env in torch mode.

    Args:
        envs: a :class:`~playground_gym.PlaygroundVectorEnv` with ``array_type="torch"``.
        seed: seed of the first ``reset()`` (later calls return the current observation: the envs autoreset).

    Raises:
        TypeError: ``envs`` is not a PlaygroundVectorEnv, or not in torch mode.
    """

    def __init__(self, envs: PlaygroundVectorEnv, seed: int | None = None) -> None:
        super().__init__(check_torch_env(envs, "SkrlEnv", "skrl"))
        self._seed = seed
        self._obs: torch.Tensor | None = None
        self._state: torch.Tensor | None = None
        self._state_space = None
        if envs.has_privileged_state:
            shape = tuple(envs.mjx_env.observation_size[PRIVILEGED_KEY])
            self._state_space = gymnasium.spaces.Box(-np.inf, np.inf, shape, np.float32)
        self._episodes = LatestEpisodeMeans(envs.device)

    @property
    def observation_space(self) -> gymnasium.Space:
        return self._env.single_observation_space

    @property
    def action_space(self) -> gymnasium.Space:
        return self._env.single_action_space

    @property
    def state_space(self) -> gymnasium.Space | None:
        return self._state_space

    def reset(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset once (seeded); afterwards the current observation, since the envs reset themselves."""
        if self._obs is None:
            obs, info = self._env.reset(seed=self._seed)
            self._obs, self._state = obs, info.get(PRIVILEGED_KEY)
        return self._obs, {}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        obs, reward, terminated, truncated, info = self._env.step(actions)
        self._obs, self._state = obs, info.get(PRIVILEGED_KEY)
        out = {"final_obs": info["final_obs"], "nan_reset": info["nan_reset"]}
        if PRIVILEGED_KEY in info:
            out["final_" + PRIVILEGED_KEY] = info["final_" + PRIVILEGED_KEY]
        stats = info.get("episode")
        if stats is not None:
            self._episodes.update(terminated | truncated, stats)
            out["episode"] = {"Episode / Return (unscaled)": self._episodes.episode_return,
                              "Episode / Length": self._episodes.episode_length}
        return obs, reward.unsqueeze(1), terminated.unsqueeze(1), truncated.unsqueeze(1), out

    def state(self) -> torch.Tensor | None:
        return self._state

    def render(self, *args: Any, **kwargs: Any) -> Any:
        return self._env.render()

    def close(self) -> None:
        self._env.close()

    def __repr__(self) -> str:
        return f"SkrlEnv({self._env!r})"

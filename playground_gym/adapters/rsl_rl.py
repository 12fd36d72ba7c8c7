"""An rsl_rl ``VecEnv`` (rsl-rl-lib 5.x: TensorDict observations) over a torch-mode PlaygroundVectorEnv.

rsl_rl's ``OnPolicyRunner`` (the trainer of Isaac Lab, mjlab and Playground's torch path) runs on it unchanged:

- observation groups: ``"policy"`` = the env's observation and, for envs with dict observations, ``"critic"`` =
  ``privileged_state``, so rsl_rl's ``obs_groups`` resolution gives the critic the privileged state by default
  (an asymmetric actor-critic) and ``{"critic": ["policy"]}`` turns that off;
- ``extras["time_outs"]`` = ``truncated`` (time-limit ends only; terminations are not time-outs);
- ``extras["final_obs"]``: the true terminal observation groups of the envs that finished (a TensorDict; other rows
  hold the current observation). rsl_rl itself does not read it: its PPO bootstraps a time-out with
  ``gamma * V(s_t)``, the value of the observation *before* the last step, not ``V(final_obs)``; it is there for
  algorithms that bootstrap properly;
- ``extras["log"]``: ``"Episode/return"`` (unscaled) and ``"Episode/length"``, the mean over the episodes that ended
  on the latest step on which any ended (device tensors, updated without a host sync; rsl_rl's logger averages the
  values it received over an iteration). Left out for the first ``max_episode_length`` steps, before which an
  episode may not have ended yet;
- ``episode_length_buf`` reads the env's ``elapsed_steps()``, and assigning it sets them (``set_elapsed_steps``), so
  ``runner.learn(..., init_at_random_ep_len=True)`` really spreads the episode ends; ``max_episode_length`` is
  the episode's agent steps.

Tensors stay on the env's device; a step makes no host sync (rsl_rl's own ``check_for_nan`` and logger do; set
``"check_for_nan": False`` and no ``log_dir`` for a sync-free rollout).

Examples:
    >>> import playground_gym
    >>> from playground_gym.adapters import RslRlVecEnv
    >>> env = RslRlVecEnv(playground_gym.make_vec("CartpoleBalance", 64, device="cpu"), seed=0)
    >>> env.get_observations()["policy"].shape
    torch.Size([64, 5])
"""

from __future__ import annotations

from typing import Any

import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from playground_gym.adapters._common import LatestEpisodeMeans, check_torch_env
from playground_gym.vector_env import PlaygroundVectorEnv

__all__ = ["RslRlVecEnv"]


class RslRlVecEnv(VecEnv):
    """rsl_rl ``VecEnv`` over a playground_gym vector env in torch mode.

    Args:
        envs: a :class:`~playground_gym.PlaygroundVectorEnv` with ``array_type="torch"``.
        seed: seed of the reset made here (rsl_rl reads observations before its first step).

    Raises:
        TypeError: ``envs`` is not a PlaygroundVectorEnv, or not in torch mode.
    """

    def __init__(self, envs: PlaygroundVectorEnv, seed: int | None = None) -> None:
        self.envs = check_torch_env(envs, "RslRlVecEnv", "rsl_rl")
        self.num_envs = envs.num_envs
        self.num_actions = int(envs.single_action_space.shape[0])
        self.max_episode_length = envs.max_episode_steps
        self.device = envs.device
        self.cfg = {"env_id": envs.env_id, "num_envs": envs.num_envs, "episode_length": envs.episode_length,
                    "action_repeat": envs.action_repeat, "reward_scale": envs.reward_scale,
                    "full_reset": envs.full_reset}
        obs, info = envs.reset(seed=seed)
        self._obs = self._groups(obs, info.get("privileged_state"))
        self._steps = 0
        self._episodes = LatestEpisodeMeans(self.device)

    def _groups(self, obs: torch.Tensor, privileged: torch.Tensor | None) -> TensorDict:
        groups = {"policy": obs} if privileged is None else {"policy": obs, "critic": privileged}
        return TensorDict(groups, batch_size=[self.num_envs], device=self.device)

    def get_observations(self) -> TensorDict:
        return self._obs

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.envs.step(actions)
        self._obs = self._groups(obs, info.get("privileged_state"))
        dones = terminated | truncated
        extras: dict[str, Any] = {
            "time_outs": truncated,
            "final_obs": self._groups(info["final_obs"], info.get("final_privileged_state")),
        }
        self._steps += 1
        stats = info.get("episode")
        if stats is not None:
            self._episodes.update(dones, stats)
            if self._steps >= self.max_episode_length:
                extras["log"] = {"Episode/return": self._episodes.episode_return,
                                 "Episode/length": self._episodes.episode_length}
        return self._obs, reward, dones, extras

    @property
    def episode_length_buf(self) -> torch.Tensor:
        """Agent steps into each env's current episode (int32, on the env's device)."""
        return self.envs.elapsed_steps()

    @episode_length_buf.setter
    def episode_length_buf(self, steps: torch.Tensor) -> None:
        self.envs.set_elapsed_steps(steps)

    def close(self) -> None:
        self.envs.close()

    def __repr__(self) -> str:
        return f"RslRlVecEnv({self.envs!r})"

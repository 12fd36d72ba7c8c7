"""A Stable-Baselines3 ``VecEnv`` over a :class:`~playground_gym.PlaygroundVectorEnv`.

SB3's own algorithms, ``VecNormalize`` and its logger work on it unchanged, with the episode semantics SB3 expects
from ``DummyVecEnv`` + ``Monitor``, which upstream's wrappers do not give:

- on a finished env, ``infos[i]["terminal_observation"]`` is the true terminal observation (the env's ``final_obs``),
  and ``infos[i]["TimeLimit.truncated"]`` is set exactly on time-limit ends, so SB3's on-policy algorithms bootstrap a
  truncated step with ``gamma * V(terminal_observation)`` and a terminated one with nothing;
- ``infos[i]["episode"] = {"r", "l", "t"}`` as ``Monitor`` writes it (the unscaled return, the length in agent steps,
  seconds since the adapter was made), so ``rollout/ep_rew_mean`` is logged without ``Monitor``/``VecMonitor``, and
  ``env_is_wrapped(Monitor)`` answers True (``evaluate_policy`` then reads episode returns from it, as with Monitor);
- ``infos[i]["nan_reset"] = True`` where the env was reset because its physics or actions went non-finite.

SB3's API is host numpy arrays and a list of per-env info dicts, so each step copies its results to the host; give the
adapter an ``array_type="numpy"`` env (any array type works: torch and JAX results are copied). The per-env dicts are
built only for envs that finished; the others get an empty dict.

Examples:
    >>> import playground_gym
    >>> from stable_baselines3 import PPO
    >>> from playground_gym.adapters import SB3VecEnv
    >>> venv = SB3VecEnv(playground_gym.make_vec("CartpoleBalance", 16, device="cpu", array_type="numpy"))
    >>> model = PPO("MlpPolicy", venv, n_steps=64, batch_size=256).learn(2048)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from playground_gym.vector_env import PlaygroundVectorEnv

__all__ = ["SB3VecEnv"]


def _host(x: Any) -> np.ndarray:
    """A writable numpy array of a torch tensor (any device), JAX array or numpy array: SB3 writes into the rewards
    (its time-out bootstrap), and a JAX array's numpy view is read-only."""
    if type(x).__module__.startswith("torch"):
        return x.numpy(force=True)
    host = np.asarray(x)
    return host if host.flags.writeable else np.array(host)


class SB3VecEnv(VecEnv):
    """Stable-Baselines3 ``VecEnv`` over a playground_gym vector env (one batched env, ``num_envs`` slots).

    Args:
        envs: a :class:`~playground_gym.PlaygroundVectorEnv` (``array_type="numpy"`` avoids a conversion per step).

    Raises:
        TypeError: ``envs`` is not a PlaygroundVectorEnv (a gymnasium-wrapped one included: SB3 needs the env's own
            ``final_obs`` and episode statistics).
    """

    def __init__(self, envs: PlaygroundVectorEnv) -> None:
        if not isinstance(envs, PlaygroundVectorEnv):
            raise TypeError(f"SB3VecEnv: expected a playground_gym.PlaygroundVectorEnv (make_vec(...)); got "
                            f"{type(envs).__name__}")
        self.envs = envs
        self._actions: np.ndarray | None = None
        self._start = time.time()
        super().__init__(envs.num_envs, envs.single_observation_space, envs.single_action_space)

    # -- the VecEnv API ----------------------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        """Reset every env; a seed set with :meth:`seed` is used once (the batch is seeded by env 0's seed)."""
        if any(self._options):
            raise ValueError(f"SB3VecEnv.reset: playground envs take no reset options; got {self._options[0]!r}")
        seed = self._seeds[0]
        obs, _ = self.envs.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return _host(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("SB3VecEnv.step_wait: call step_async(actions) first")
        actions, self._actions = self._actions, None  # consumed also when the step raises
        obs, reward, terminated, truncated, info = self.envs.step(actions)
        obs, reward, terminated, truncated = _host(obs), _host(reward), _host(terminated), _host(truncated)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        finished = np.flatnonzero(dones)
        if finished.size:
            final_obs = _host(info["final_obs"])
            stats = info.get("episode")
            returns, lengths = (_host(stats["r"]), _host(stats["l"])) if stats is not None else (None, None)
            nan_reset = _host(info["nan_reset"])
            elapsed = round(time.time() - self._start, 6)
            for i in finished:
                entry = infos[i]
                entry["terminal_observation"] = final_obs[i]
                entry["TimeLimit.truncated"] = bool(truncated[i])  # never set together with terminated
                if returns is not None:
                    entry["episode"] = {"r": float(returns[i]), "l": int(lengths[i]), "t": elapsed}
                if nan_reset[i]:
                    entry["nan_reset"] = True
        return obs, reward, dones, infos

    def close(self) -> None:
        self.envs.close()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seeds for the next reset (SB3's convention: ``seed + i`` for env i; the batch uses env 0's)."""
        return super().seed(seed)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The batched env's attribute, once per requested env (all slots share it)."""
        value = getattr(self.envs, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the batched env; only for all envs at once (the slots are one env)."""
        self._all_envs(indices, f"set_attr({attr_name!r})")
        setattr(self.envs, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call a method of the batched env once, for all envs (its result is repeated per env)."""
        self._all_envs(indices, f"env_method({method_name!r})")
        result = getattr(self.envs, method_name)(*method_args, **method_kwargs)
        return [result for _ in range(self.num_envs)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """True for SB3's ``Monitor``, whose episode info this adapter writes (unless the env was made with
        ``episode_statistics=False``: then there is none, and ``evaluate_policy`` must count episodes itself);
        False for any other wrapper."""
        wrapped = isinstance(wrapper_class, type) and issubclass(Monitor, wrapper_class) and \
            wrapper_class is not object and self.envs.episode_statistics
        return [wrapped for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Frames of the envs in ``envs.render_env_ids`` (needs ``render_mode="rgb_array"``)."""
        frames = self.envs.render()
        return list(frames) if frames is not None else []

    # -- helpers -------------------------------------------------------------------------------------------------

    def _all_envs(self, indices: VecEnvIndices, what: str) -> None:
        chosen = list(self._get_indices(indices))
        if sorted(int(i) for i in chosen) != list(range(self.num_envs)):
            raise ValueError(f"SB3VecEnv.{what}: the {self.num_envs} envs are one batched env, so this applies to all "
                             f"of them at once; got indices {chosen!r}")

    def __repr__(self) -> str:
        return f"SB3VecEnv({self.envs!r})"

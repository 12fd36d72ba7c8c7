"""The JAX side: one jitted function that steps every env, keeps episode books and autoresets.

Everything a step needs (action clipping, action repeat, NaN detection, time limits, episode returns and
lengths, capturing the true terminal observation, same-step autoreset) happens inside one compiled
function, so a step is one dispatch with no host round trip. The functions here are pure; the
:class:`~playground_gym.vector_env.PlaygroundVectorEnv` holds the carry between calls.

Example:
    >>> import jax
    >>> from playground_gym.loading import load_env
    >>> from playground_gym.autoreset import EpisodeSpec, make_vector_functions
    >>> env = load_env("CartpoleBalance", impl="jax")
    >>> reset_fn, step_fn = make_vector_functions(env, EpisodeSpec(max_steps=10))
    >>> carry, out = jax.jit(reset_fn)(jax.random.split(jax.random.PRNGKey(0), 4))
    >>> out["obs"].shape
    (4, 5)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["EpisodeSpec", "Carry", "make_vector_functions", "match_avals"]

PRIVILEGED_KEY = "privileged_state"


@dataclass(frozen=True)
class EpisodeSpec:
    """Static settings of the compiled step.

    Attributes:
        max_steps: agent decisions per episode (``episode_length // action_repeat``).
        action_repeat: physics control steps per decision; rewards are summed over them.
        reward_scale: multiplies the returned reward (episode statistics stay unscaled).
        obs_key: which entry of a dict observation is ``obs``.
        full_reset: re-randomise finished envs from fresh keys instead of replaying their first state.
    """

    max_steps: int
    action_repeat: int = 1
    reward_scale: float = 1.0
    obs_key: str = "state"
    full_reset: bool = False


class Carry(NamedTuple):
    """Per-env state carried between steps (every leaf has a leading num_envs axis)."""

    env_state: Any          # mjx_env.State
    first_state: Any        # cached reset state replayed on autoreset; None with full_reset
    elapsed: jax.Array      # int32 agent steps into the current episode
    episode_return: jax.Array  # float32 unscaled return so far
    key: jax.Array          # per-env PRNG key stream for full resets


def _where(mask: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Per-env select over two pytrees whose leaves have a leading env axis."""

    def pick(a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a, b)

    return jax.tree.map(pick, on_true, on_false)


def _all_finite(tree: Any) -> jax.Array:
    """Per-env: are all floating leaves of a (single-env) pytree finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def match_avals(tree: Any, avals: Any) -> Any:
    """Cast ``tree``'s leaves to the dtypes (and strong typing) of ``avals``.

    ``reset`` and ``step`` of Playground envs can differ in dtype or weak typing; without this, the first
    ``step`` on a state from ``reset`` compiles once, and the next step on a state from ``step`` again.
    """
    return jax.tree.map(lambda x, a: jax.lax.convert_element_type(x, a.dtype), tree, avals)


def _strong(tree: Any) -> Any:
    """The same leaves and dtypes, none weakly typed."""
    return match_avals(tree, tree)


def _split_obs(obs: Any, obs_key: str) -> tuple[jax.Array, jax.Array | None]:
    if isinstance(obs, Mapping):
        return obs[obs_key], obs.get(PRIVILEGED_KEY)
    return obs, None


def make_vector_functions(env: Any, spec: EpisodeSpec) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Build the batched ``reset(keys)`` and ``step(carry, actions)`` functions (to be jitted).

    ``reset(keys)`` takes per-env PRNG keys ``[num_envs, 2]`` and returns ``(carry, out)``; ``step(carry,
    actions)`` takes float32 actions ``[num_envs, act_dim]`` and returns ``(carry, out)``. ``out`` holds
    ``obs``, and after a step also ``reward`` (scaled), ``terminated``, ``truncated``, ``final_obs``,
    ``done`` (= ``_final_obs`` = ``_episode``), ``episode_return`` (unscaled), ``episode_length``,
    ``nan_reset`` and, for dict observations holding it, ``privileged_state`` (and
    ``final_privileged_state``).
    """
    if spec.max_steps < 1 or spec.action_repeat < 1:
        raise ValueError(f"EpisodeSpec: expected max_steps >= 1 and action_repeat >= 1; got {spec}")

    def physics_one(state: Any, action: jax.Array) -> tuple[Any, jax.Array, jax.Array]:
        """Step one env ``action_repeat`` times; stop (freeze) at the first done. Returns summed reward."""
        if spec.action_repeat == 1:
            nxt = env.step(state, action)
            return nxt, nxt.reward, nxt.done > 0

        def repeat(c: tuple[Any, jax.Array, jax.Array], _: None) -> tuple[tuple[Any, jax.Array, jax.Array], None]:
            s, total, done = c
            nxt = env.step(s, action)
            s = match_avals(jax.tree.map(lambda old, new: jnp.where(done, old, new), s, nxt), s)
            total = total + jnp.where(done, 0.0, nxt.reward)
            return (s, total, done | (nxt.done > 0)), None

        init = (_strong(state), jnp.zeros((), jnp.float32), jnp.zeros((), bool))
        (state, total, done), _ = jax.lax.scan(repeat, init, None, length=spec.action_repeat)
        return state, total, done

    def advance_one(carry: Carry, action: jax.Array) -> tuple[Carry, dict[str, jax.Array]]:
        """Physics and episode bookkeeping for one env; the autoreset happens batched afterwards."""
        finite_action = jnp.all(jnp.isfinite(action))
        # Non-finite actions never reach the physics: the env gets zeros and is terminated + flagged.
        action = jnp.where(finite_action, jnp.clip(action, -1.0, 1.0), jnp.zeros_like(action))
        prev = carry.env_state
        state, reward, env_done = physics_one(prev, action)
        physics_ok = _all_finite((state.obs, state.data.qpos, state.data.qvel)) & jnp.isfinite(reward)
        nan_reset = ~physics_ok | ~finite_action
        reward = jnp.where(nan_reset, 0.0, reward).astype(jnp.float32)
        # The terminal observation of a NaN episode is the last finite one, so V(final_obs) stays finite.
        final_obs_tree = jax.tree.map(lambda new, old: jnp.where(physics_ok, new, old), state.obs, prev.obs)
        final_obs, final_priv = _split_obs(final_obs_tree, spec.obs_key)
        terminated = env_done | nan_reset
        elapsed = carry.elapsed + 1
        truncated = (elapsed >= spec.max_steps) & ~terminated
        episode_return = carry.episode_return + reward
        out = {
            "reward": reward * jnp.float32(spec.reward_scale),
            "terminated": terminated,
            "truncated": truncated,
            "done": terminated | truncated,
            "final_obs": final_obs,
            "episode_return": episode_return,
            "episode_length": elapsed,
            "nan_reset": nan_reset,
        }
        if final_priv is not None:
            out["final_privileged_state"] = final_priv
        return carry._replace(env_state=state, elapsed=elapsed, episode_return=episode_return), out

    def observe(env_state: Any, out: dict[str, jax.Array]) -> dict[str, jax.Array]:
        obs, priv = _split_obs(env_state.obs, spec.obs_key)
        out["obs"] = obs
        if priv is not None:
            out[PRIVILEGED_KEY] = priv
        return out

    def reset(keys: jax.Array) -> tuple[Carry, dict[str, jax.Array]]:
        split = jax.vmap(jax.random.split)(keys)
        stream, reset_keys = split[:, 0], split[:, 1]
        state = jax.vmap(env.reset)(reset_keys)
        n = keys.shape[0]
        carry = Carry(
            env_state=state,
            first_state=None if spec.full_reset else state,
            elapsed=jnp.zeros((n,), jnp.int32),
            episode_return=jnp.zeros((n,), jnp.float32),
            key=stream,
        )
        # Hand out the carry exactly as step() will return it (dtypes, no weak types), so the first
        # step after reset reuses the compilation of every later step.
        stepped, _ = jax.eval_shape(step, carry, jnp.zeros((n, env.action_size), jnp.float32))
        carry = match_avals(carry, stepped)
        return carry, observe(carry.env_state, {})

    def fresh_states(carry: Carry, done: jax.Array) -> Carry:
        split = jax.vmap(jax.random.split)(carry.key)
        stream, reset_keys = split[:, 0], split[:, 1]
        fresh = jax.vmap(env.reset)(reset_keys)
        fresh = match_avals(fresh, carry.env_state)
        return carry._replace(env_state=_where(done, fresh, carry.env_state), key=stream)

    def step(carry: Carry, actions: jax.Array) -> tuple[Carry, dict[str, jax.Array]]:
        carry, out = jax.vmap(advance_one)(carry, actions)
        done = out["done"]
        if spec.full_reset:
            # A fresh reset of every env costs as much as a physics step or more: run it only on steps
            # where some env finished (a batch-level cond, not a per-env select).
            carry = jax.lax.cond(jnp.any(done), fresh_states, lambda c, _: c, carry, done)
        else:
            carry = carry._replace(env_state=_where(done, carry.first_state, carry.env_state))
        carry = carry._replace(
            elapsed=jnp.where(done, 0, carry.elapsed),
            episode_return=jnp.where(done, 0.0, carry.episode_return),
        )
        return _strong(carry), observe(carry.env_state, out)

    return reset, step

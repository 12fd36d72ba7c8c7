"""The PRNG key tree (playground_gym.keys): no two resets, autoresets or envs of one seed share a key, the whole
64-bit seed counts, and a custom env's state is keyed by its config, not its class name alone."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import playground_gym
from playground_gym import keys
from toy_env import ToyDictEnv, default_config

N = 4


@pytest.fixture(scope="module")
def short_cartpole():
    """CartpoleBalance x 4 with 2-step episodes: every second step ends every episode (an autoreset of all)."""
    return playground_gym.make_vec("CartpoleBalance", N, device="cpu", episode_length=2, action_repeat=1, seed=5)


def _rows(x):
    return [tuple(np.round(r, 6)) for r in np.asarray(x)]


def test_the_key_tree():
    assert keys.root_key(7).tolist() == np.asarray(jax.random.PRNGKey(7)).tolist()  # seeds < 2**32: PRNGKey's
    assert keys.root_key(2**32 + 7).tolist() == [1, 7] and keys.root_key(2**64 - 1).tolist() == [2**32 - 1] * 2
    with pytest.raises(ValueError, match="2\\*\\*64"):
        keys.root_key(2**64)
    drawn = np.concatenate([np.asarray(keys.reset_keys(s, c, 64)) for s in (0, 1, 2**32) for c in range(4)])
    assert len({tuple(k) for k in drawn}) == len(drawn)  # 12 resets x 64 envs, no key twice
    assert not np.array_equal(keys.purpose_key(0, keys.RESET), keys.purpose_key(0, keys.DOMAIN_RANDOMIZATION))


def test_unseeded_resets_and_autoresets_never_replay_an_initial_state(short_cartpole):
    """Seed once, then reset() again and again (the ordinary Gymnasium pattern), stepping through autoresets in
    between: every initial state of every env is new. Before the key tree, env 0's second reset replayed env 1's
    first (fold_in(base, 1) == split(base, n)[1])."""
    envs = short_cartpole
    starts = []
    obs, _ = envs.reset(seed=11)
    for _ in range(4):
        starts += _rows(obs)
        for _ in range(4):  # two autoresets of all envs: their first observations are fresh initial states
            obs, _, _, truncated, info = envs.step(torch.zeros(N, 1))
            if truncated.all():
                starts += _rows(obs)
        obs, _ = envs.reset()
    assert len(starts) == 4 * N * 3
    assert len(set(starts)) == len(starts)


def test_a_seed_reproduces_and_the_whole_64_bits_count(short_cartpole):
    envs = short_cartpole
    first, _ = envs.reset(seed=0)
    second, _ = envs.reset()
    again, _ = envs.reset(seed=0)
    assert torch.equal(first, again) and not torch.equal(first, second)
    high, _ = envs.reset(seed=2**32)  # PRNGKey would keep the low 32 bits: seed 0 again
    assert not torch.equal(high, first)
    assert torch.equal(envs.reset(seed=2**63 - 1)[0], envs.reset(seed=2**63 - 1)[0])


def test_a_custom_envs_state_is_keyed_by_its_config():
    def make(episode_length):
        config = default_config()
        config.episode_length = episode_length
        return playground_gym.make_vec(ToyDictEnv(config), N, device="cpu", episode_length=12)

    a, b = make(40), make(30)
    a.reset(seed=0)
    b.reset(seed=0)
    with pytest.raises(ValueError, match="env_config"):
        b.load_state_dict(a.state_dict())
    twin = make(40)
    twin.reset(seed=1)
    twin.load_state_dict(a.state_dict())  # same class and config: accepted
    saved = a.state_dict()
    saved["settings"]["num_envs"] = 99  # a copy: the env's own settings are untouched
    assert a.state_dict()["settings"]["num_envs"] == N
    a.load_state_dict(a.state_dict())


@pytest.mark.parametrize("partitionable", [True, False])
def test_no_derived_key_is_reused(partitionable):
    """Every key the tree and the autoreset derive (reset keys, each env's stream and initial-state key, the chain of
    pool refills and their reset keys), for 3 seeds x 4 resets x 8 envs, under both of JAX's threefry modes: all
    distinct. (The old derivation gave env 0 of the c-th reset env c's key of the first.)"""
    old = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", partitionable)
    try:
        seen = []
        for seed in (0, 1, 2**32):
            seen.append(np.asarray(keys.purpose_key(seed, keys.RESET)))
            for count in range(4):
                env_keys = keys.reset_keys(seed, count, 8)
                seen += list(np.asarray(env_keys))
                stream, initial = (lambda s: (s[:, 0], s[:, 1]))(jax.vmap(jax.random.split)(env_keys))
                seen += list(np.asarray(initial))
                for _ in range(3):  # refill_if: split the stream into the next stream and the pool's reset keys
                    split = jax.vmap(jax.random.split)(stream)
                    stream = split[:, 0]
                    seen += list(np.asarray(split[:, 1]))
        rows = {tuple(k) for k in seen}
        assert len(rows) == len(seen) == 3 * (1 + 4 * 8 * 5)
    finally:
        jax.config.update("jax_threefry_partitionable", old)

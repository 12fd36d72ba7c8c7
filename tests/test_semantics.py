"""The step semantics (docs/environment.md) on CartpoleBalance: same-step autoreset, final_obs, episode statistics,
truncation vs termination, dtypes, clipping, determinism, full_reset, single compilation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import NUM_ENVS, SHORT


def rollout(envs, actions, seed=0):
    """Reset with ``seed`` and step through ``actions`` [T, N, A]; returns the reset obs and step tuples."""
    obs0, _ = envs.reset(seed=seed)
    return obs0, [envs.step(a) for a in actions]


def random_actions(steps, act_dim=1, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [scale * (2 * torch.rand(NUM_ENVS, act_dim, generator=g) - 1) for _ in range(steps)]


@pytest.mark.parametrize("fixture", ["short_env", "replay_env"])
def test_same_step_autoreset_and_truncation(fixture, request):
    envs = request.getfixturevalue(fixture)
    obs0, steps = rollout(envs, random_actions(2 * SHORT + 2))
    for t, (obs, reward, terminated, truncated, info) in enumerate(steps, start=1):
        finished = t % SHORT == 0
        assert torch.equal(truncated, torch.full((NUM_ENVS,), finished))
        assert not terminated.any()  # DM Control episodes end by the time limit only
        assert torch.equal(info["_final_obs"], truncated) and torch.equal(info["_episode"], truncated)
        if finished:
            # the returned obs is already the next episode's first: a fresh initial state, or (replay) the cached one
            assert torch.equal(obs, obs0) == (fixture == "replay_env")
            assert not torch.allclose(info["final_obs"], obs)
        else:
            assert torch.equal(info["final_obs"], obs)


def test_final_obs_is_the_true_terminal_observation(short_env, long_env):
    actions = random_actions(SHORT)
    _, short = rollout(short_env, actions)
    _, long = rollout(long_env, actions)
    # the long-episode twin keeps going where the short one was truncated: its obs is the terminal obs
    torch.testing.assert_close(short[-1][4]["final_obs"], long[-1][0], rtol=0, atol=0)
    assert short[-1][3].all() and not long[-1][3].any()


def test_episode_statistics_are_unscaled_sums_and_lengths(short_env):
    _, steps = rollout(short_env, random_actions(SHORT))
    rewards = torch.stack([s[1] for s in steps])  # scaled by reward_scale=2
    info = steps[-1][4]
    torch.testing.assert_close(info["episode"]["r"], rewards.sum(0) / 2.0)
    assert info["episode"]["l"].dtype == torch.int32
    assert torch.equal(info["episode"]["l"], torch.full((NUM_ENVS,), SHORT, dtype=torch.int32))
    assert info["episode"]["r"].dtype == torch.float32


def test_reward_scale_scales_reward_only(short_env, long_env):
    actions = random_actions(3)
    _, scaled = rollout(short_env, actions)
    _, plain = rollout(long_env, actions)
    for s, p in zip(scaled, plain):
        torch.testing.assert_close(s[1], 2.0 * p[1])


def test_dtypes_shapes_devices(short_env):
    obs, info = short_env.reset(seed=0)
    assert obs.shape == (NUM_ENVS, 5) and obs.dtype == torch.float32 and obs.device == short_env.device
    obs, reward, terminated, truncated, info = short_env.step(torch.zeros(NUM_ENVS, 1))
    assert reward.shape == (NUM_ENVS,) and reward.dtype == torch.float32
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert info["final_obs"].shape == obs.shape and info["nan_reset"].dtype == torch.bool
    assert all(t.device == short_env.device for t in (obs, reward, terminated, truncated, info["final_obs"]))
    assert not (terminated & truncated).any()


def test_returned_tensors_are_not_overwritten_by_later_steps(short_env):
    short_env.reset(seed=0)
    out = short_env.step(torch.full((NUM_ENVS, 1), 0.5))
    frozen = [out[0].clone(), out[1].clone(), out[4]["final_obs"].clone()]
    for a in random_actions(2 * SHORT):
        short_env.step(a)
    assert torch.equal(frozen[0], out[0]) and torch.equal(frozen[1], out[1])
    assert torch.equal(frozen[2], out[4]["final_obs"])


def test_actions_are_clipped(short_env):
    _, big = rollout(short_env, [torch.full((NUM_ENVS, 1), 7.0)] * 3)
    _, one = rollout(short_env, [torch.ones(NUM_ENVS, 1)] * 3)
    for b, o in zip(big, one):
        assert torch.equal(b[0], o[0]) and torch.equal(b[1], o[1])


def test_seeding_is_deterministic(short_env, long_env, numpy_env):
    a, _ = short_env.reset(seed=3)
    b, _ = short_env.reset(seed=3)
    assert torch.equal(a, b)
    c, _ = short_env.reset(seed=4)
    assert not torch.equal(a, c)
    d, _ = short_env.reset()  # no seed: a fresh draw from the env's own stream
    assert not torch.equal(c, d)
    # initial states depend only on seed and num_envs, not on episode_length or array_type
    assert torch.equal(long_env.reset(seed=3)[0], a)
    np.testing.assert_array_equal(numpy_env.reset(seed=3)[0], a.numpy())


def test_same_seed_same_trajectory(short_env):
    actions = random_actions(2 * SHORT)
    _, first = rollout(short_env, actions, seed=11)
    _, second = rollout(short_env, actions, seed=11)
    for x, y in zip(first, second):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])


def test_full_reset_rerandomises_and_keeps_statistics(short_env):
    obs0, steps = rollout(short_env, random_actions(2 * SHORT))
    first_episode_end, second_episode_end = steps[SHORT - 1], steps[2 * SHORT - 1]
    for obs, _, terminated, truncated, info in (first_episode_end, second_episode_end):
        assert truncated.all() and not terminated.any()
        assert torch.equal(info["episode"]["l"], torch.full((NUM_ENVS,), SHORT, dtype=torch.int32))
        assert not torch.allclose(obs, obs0)  # a fresh random initial state, not the cached one
    assert not torch.allclose(first_episode_end[0], second_episode_end[0])
    rewards = torch.stack([s[1] for s in steps[SHORT: 2 * SHORT]]) / 2.0  # short_env scales rewards by 2
    torch.testing.assert_close(second_episode_end[4]["episode"]["r"], rewards.sum(0))
    assert not steps[SHORT][3].any()  # the flag is not carried into the next episode


def test_step_compiles_once(short_env):
    short_env.reset(seed=0)
    for a in random_actions(SHORT + 1):
        short_env.step(a)
    short_env.reset(seed=1)
    short_env.step(torch.zeros(NUM_ENVS, 1))
    assert short_env.trace_counts == {"reset": 1, "step": 1}


def test_step_before_reset_is_an_error():
    import gymnasium as gym
    import playground_gym

    envs = playground_gym.make_vec("CartpoleBalance", 2, device="cpu")
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        envs.step(torch.zeros(2, 1))


def test_envs_of_identical_settings_share_compiled_functions_not_state(short_env, monkeypatch):
    from collections import OrderedDict

    import playground_gym
    from playground_gym import vector_env

    # As after many other envs were made (the LRU of recently used settings evicted short_env's): a live env's
    # compiled functions are still found.
    monkeypatch.setattr(vector_env, "_SHARED", OrderedDict())
    twin = playground_gym.make_vec("CartpoleBalance", NUM_ENVS, device="cpu", episode_length=SHORT,
                                   reward_scale=2.0, seed=7)  # e.g. a trainer's evaluation envs
    other = playground_gym.make_vec("CartpoleBalance", NUM_ENVS, device="cpu", episode_length=SHORT + 1,
                                    reward_scale=2.0)
    assert twin._step_jit is short_env._step_jit and twin.mjx_env is short_env.mjx_env
    assert other._step_jit is not short_env._step_jit
    short_env.reset(seed=0)
    twin.reset(seed=1)
    stepped_a = short_env.step(torch.ones(NUM_ENVS, 1))[0]
    stepped_b = twin.step(-torch.ones(NUM_ENVS, 1))[0]
    again_a = short_env.step(torch.ones(NUM_ENVS, 1))[0]  # after the twin stepped: its own carry, untouched
    short_env.reset(seed=0)
    short_env.step(torch.ones(NUM_ENVS, 1))
    torch.testing.assert_close(short_env.step(torch.ones(NUM_ENVS, 1))[0], again_a)
    assert not torch.allclose(stepped_a, stepped_b)
    assert short_env.trace_counts == twin.trace_counts == {"reset": 1, "step": 1}


def test_fresh_initial_states_are_never_reused_with_spread_ends(short_env):
    """Ends spread over the steps (some env finishes on most steps): every new episode starts from its own state."""
    short_env.reset(seed=5)
    short_env.set_elapsed_steps(torch.arange(NUM_ENVS) % SHORT)
    starts = []
    for a in random_actions(6 * SHORT, scale=0.5):
        obs, _, _, truncated, _ = short_env.step(a)
        starts += [tuple(row) for row in obs[truncated].tolist()]
    assert len(starts) >= 5 * NUM_ENVS - NUM_ENVS // 2
    assert len(set(starts)) == len(starts)


def test_elapsed_steps_round_trip_and_bad_input(short_env):
    short_env.reset(seed=0)
    short_env.set_elapsed_steps(np.array([0, 1, 2, 4]))
    assert short_env.elapsed_steps().tolist() == [0, 1, 2, 4]
    truncated = short_env.step(torch.zeros(NUM_ENVS, 1))[3]
    assert truncated.tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match=r"values in \[0, 5\)"):
        short_env.set_elapsed_steps(np.array([0, 1, 2, 5]))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        short_env.set_elapsed_steps(np.zeros(3, int))
    with pytest.raises(TypeError, match="integers"):
        short_env.set_elapsed_steps(np.zeros(4))
    assert short_env.trace_counts["step"] == 1


@pytest.mark.parametrize("fixture", ["short_env", "replay_env"])
def test_state_dict_continues_exactly(fixture, request):
    import playground_gym

    envs = request.getfixturevalue(fixture)
    actions = random_actions(3 * SHORT, seed=4)
    envs.reset(seed=2)
    for a in actions[:SHORT + 2]:
        envs.step(a)
    saved = envs.state_dict()
    copy = {k: v.copy() for k, v in saved["carry"].items()}
    expected = [envs.step(a) for a in actions[SHORT + 2:]]
    assert all(np.array_equal(copy[k], saved["carry"][k]) for k in copy)  # host copies: not aliased by later steps
    twin = playground_gym.make_vec("CartpoleBalance", NUM_ENVS, device="cpu", episode_length=SHORT,
                                   reward_scale=envs.reward_scale, full_reset=envs.full_reset, seed=99)
    twin.load_state_dict(saved)
    for want, got in zip(expected, (twin.step(a) for a in actions[SHORT + 2:])):
        for x, y in zip(want[:4], got[:4]):
            assert torch.equal(x, y)
        assert torch.equal(want[4]["episode"]["r"], got[4]["episode"]["r"])
    assert twin.reset()[0].shape == (NUM_ENVS, 5) and twin._reset_count == saved["reset_count"] + 1
    assert twin.trace_counts["step"] == 1  # loading did not recompile the step


def test_state_dict_of_other_settings_is_a_clear_error(short_env, long_env):
    short_env.reset(seed=0)
    saved = short_env.state_dict()
    with pytest.raises(ValueError, match=r"episode: saved .*'max_steps': 5.*here .*'max_steps': 15"):
        long_env.load_state_dict(saved)
    with pytest.raises(TypeError, match="state_dict"):
        long_env.load_state_dict({"carry": {}})
    bad = {**saved, "carry": {k: v[:2] for k, v in saved["carry"].items()}}
    with pytest.raises(ValueError, match="carry does not fit this env.s carry"):
        short_env.load_state_dict(bad)


@pytest.mark.parametrize("full_reset", [True, False])
def test_a_leaf_by_leaf_carry_steps_exactly_as_a_fused_one(full_reset, monkeypatch):
    """Large batches carry the physics state leaf by leaf (autoreset.FUSE_LIMIT), small ones fused per dtype: the
    same outputs, bit for bit, across episode ends; and a vector env with such a carry saves and continues exactly."""
    import weakref
    from collections import OrderedDict

    import jax

    import playground_gym
    from playground_gym import autoreset, provenance, vector_env
    from playground_gym.loading import load_env

    env = load_env("CartpoleBalance", impl="jax")
    spec = autoreset.EpisodeSpec(max_steps=7, full_reset=full_reset)
    keys = jax.random.split(jax.random.PRNGKey(3), NUM_ENVS)
    actions = [jax.numpy.asarray(a.numpy()) for a in random_actions(20, seed=5)]
    runs = {}
    for limit in (autoreset.FUSE_LIMIT, 0):
        monkeypatch.setattr(autoreset, "FUSE_LIMIT", limit)
        fns = autoreset.make_vector_functions(env, spec)
        carry, first, out = jax.jit(fns.reset)(keys)
        outs = [out]
        step = jax.jit(fns.step)
        for a in actions:
            carry, out = step(carry, first, a)
            outs.append(out)
        runs[limit] = (set(carry), outs)
    (fused_names, fused), (leaf_names, leafwise) = runs.values()
    assert len(leaf_names) > 20 > len(fused_names)  # about a hundred leaves against one array per dtype
    assert any(bool(o["done"].any()) for o in fused[1:])  # fused[0]: the reset's outputs
    for a, b in zip(fused, leafwise):
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)

    # the vector env: no trace cache or sharing here (their keys do not cover a patched limit)
    monkeypatch.setattr(provenance, "cache_dir", lambda: None)
    monkeypatch.setattr(vector_env, "_SHARED_LIVE", weakref.WeakValueDictionary())
    monkeypatch.setattr(vector_env, "_SHARED", OrderedDict())
    make = lambda seed: playground_gym.make_vec("CartpoleBalance", NUM_ENVS, device="cpu", episode_length=7,  # noqa: E731
                                                full_reset=full_reset, seed=seed, array_type="numpy")
    envs = make(1)
    envs.reset(seed=2)
    assert envs._shared.layout(NUM_ENVS)[0].keys() == set(envs._carry)
    assert any("#" in name for name in envs._carry)  # leaf by leaf
    assert all(np.size(v) > 0 for v in envs._carry.values())  # size-0 leaves (30 of the state's 95) are not carried
    before = envs._carry
    for a in actions[:9]:
        envs.step(np.asarray(a))
    # updated in place (donated buffers the step never reads are not consumed: jit prunes unused inputs)
    assert envs._shared.donate_carry and any(x.is_deleted() for x in before.values())
    saved = envs.state_dict()
    expected = [envs.step(np.asarray(a))[1] for a in actions[9:]]
    twin = make(5)
    # as saved before the carry left out the leaves of no elements (one such array added)
    twin.load_state_dict({**saved, "carry": {**saved["carry"], "float32#3": np.zeros((NUM_ENVS, 0), np.float32)}})
    assert all(np.array_equal(w, twin.step(np.asarray(a))[1]) for w, a in zip(expected, actions[9:]))
    monkeypatch.setattr(autoreset, "FUSE_LIMIT", 2**17)  # a fused env (the limit keys the sharing: not the twin's)
    fused_env = make(6)
    assert not any("#" in name for name in fused_env._shared.layout(NUM_ENVS)[0])
    fused_env.reset(seed=2)
    before = fused_env._carry
    fused_env.step(np.asarray(actions[0]))
    # a fused carry is not donated (XLA would copy each donated array whole before writing it: slower)
    assert not fused_env._shared.donate_carry and not any(x.is_deleted() for x in before.values())
    with pytest.raises(ValueError, match="carried leaf by leaf and this env's fused per dtype"):
        fused_env.load_state_dict(saved)


@pytest.mark.parametrize("models", ["none", "drawn_once", "drawn_at_each_reset"])
def test_fresh_states_made_in_blocks_are_the_same_states(models):
    """On the CPU the step makes its fresh states in blocks of envs (autoreset.REFILL_BLOCK, one block after another):
    on CartpoleBalance bit for bit the states one batched reset makes, a padded last block included (5 envs in blocks
    of 2: 2, 2, 1 + 1 padding), with per-env models drawn once (each env's pool entry made with its own model) or at
    each reset; the vector env on the CPU blocks with REFILL_BLOCK."""
    import jax

    from playground_gym import autoreset, vector_env
    from playground_gym.loading import load_env
    from test_randomization import mass_scale

    env = load_env("CartpoleBalance", impl="jax")
    spec = autoreset.EpisodeSpec(max_steps=3, randomization=None if models == "none" else "custom",
                                 randomize_on_reset=models == "drawn_at_each_reset")
    randomizer = None if models == "none" else mass_scale
    keys = jax.random.split(jax.random.PRNGKey(3), 5)
    g = torch.Generator().manual_seed(4)
    actions = [jax.numpy.asarray((2 * torch.rand(5, 1, generator=g) - 1).numpy()) for _ in range(10)]
    runs = {}
    for block in (None, 2):
        fns = autoreset.make_vector_functions(env, spec, randomizer, refill_block=block)
        carry, first, out = jax.jit(fns.reset)(keys)
        step = jax.jit(fns.step)
        scans = str(jax.make_jaxpr(fns.step)(carry, first, actions[0])).count("scan[")
        outs = []
        for a in actions:
            carry, out = step(carry, first, a)
            outs.append(out)
        runs[block] = (outs, fns.env_state(carry), fns.model(carry), scans)
    (batched, state_b, model_b, scans_b), (blocked, state_k, model_k, scans_k) = runs.values()
    assert scans_k == scans_b + 1  # the blocks are one more loop in the step (lax.map)
    assert sum(int(o["done"].sum()) for o in batched) == 15  # every env ended 3 times: the pool refilled 3 times
    for a, b in zip(batched, blocked):
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    for a, b in ((state_b, state_k), (model_b, model_k)):
        assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert vector_env._refill_block(jax.devices("cpu")[0]) == autoreset.REFILL_BLOCK
    with pytest.raises(ValueError, match="refill_block: expected None or an int >= 1; got 0"):
        autoreset.make_vector_functions(env, spec, randomizer, refill_block=0)

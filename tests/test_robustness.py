"""Every input either works or gets a one-line error: warp builds and steps, the step owns its actions, a state is
loaded all or nothing, huge finite inputs act as what they are, and the smaller edges of the env API."""

from __future__ import annotations

import pathlib
import pickle

import gymnasium as gym
import jax
import numpy as np
import pytest
import torch

import playground_gym
from playground_gym import autoreset, vector_env
from playground_gym.vector_env import STATE_FORMAT

N = 4


def make(**kwargs):
    return playground_gym.make_vec("CartpoleBalance", N, **{"device": "cpu", "episode_length": 5, **kwargs})


@pytest.fixture(scope="module")
def env():
    return make()


# --- 1. impl="warp" builds, steps through autoresets and matches impl="jax" ---------------------------------------

@pytest.mark.parametrize("full_reset", [True, False])
def test_warp_builds_steps_and_matches_jax(full_reset):
    """A Warp-backed state has leaves without a per-env axis (the contact buffers, 22 of CartpoleBalance's 196); they
    are kept as they are by the autoreset. Warp on CPU is slow: 4 envs, 3-step episodes, 7 steps."""
    rows = {}
    for impl in ("warp", "jax"):
        envs = make(impl=impl, full_reset=full_reset, episode_length=3)
        obs, _ = envs.reset(seed=0)
        rows[impl] = [obs.clone()]
        for _ in range(7):
            obs, reward, _, truncated, info = envs.step(torch.full((N, 1), 0.5))
            rows[impl] += [obs.clone(), reward.clone(), truncated.clone().float(), info["final_obs"].clone()]
        saved = envs.state_dict()
        envs.load_state_dict(saved)  # the packed shared leaves round-trip
        assert envs.trace_counts == {"reset": 1, "step": 1}
    assert sum(int(t.sum()) for t in rows["warp"][3::4]) == 8  # two episode ends of every env
    for a, b in zip(rows["warp"], rows["jax"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


# --- 2. the step owns its actions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_jax_mode_never_reads_an_action_after_step_returns(kind):
    """The caller overwrites its action buffer right after step(): the step must have used the values it was given
    (jax mode does not wait for the step; before, 38 of 40 steps used the later values)."""
    envs = playground_gym.make_vec("PointMass", 16, device="cpu", array_type="jax", episode_length=50)
    twin = playground_gym.make_vec("PointMass", 16, device="cpu", array_type="jax", episode_length=50)
    envs.reset(seed=0)
    twin.reset(seed=0)
    for _ in range(20):
        act = torch.ones(16, 2) if kind == "torch" else np.ones((16, 2), np.float32)
        obs, *_ = envs.step(act)
        act.fill(-1.0) if kind == "numpy" else act.fill_(-1.0)
        expected, *_ = twin.step(jax.numpy.ones((16, 2)))
        np.testing.assert_array_equal(np.asarray(obs), np.asarray(expected))


# --- 3. load_state_dict: all or nothing -------------------------------------------------------------------------------

def _bad(saved, **changes):
    state = {k: v for k, v in saved.items()}
    for key, value in changes.items():
        if value is KeyError:
            del state[key]
        else:
            state[key] = value
    return state


def _elapsed(saved, value):
    state = _bad(saved)
    envs = make()  # same settings: a scratch env to write the counter into the packed carry
    envs.load_state_dict(saved)
    envs.set_elapsed_steps(np.zeros(N, np.int64))
    carry = envs.state_dict()["carry"]
    probe = {k: v.copy() for k, v in carry.items()}
    envs.set_elapsed_steps(np.full(N, 3))
    changed = {k: np.nonzero(envs.state_dict()["carry"][k] != probe[k]) for k in probe}
    (key,) = [k for k, (rows, _) in changed.items() if rows.size]  # the int32 column that moved from 0 to 3
    probe[key][changed[key]] = value
    state["carry"] = probe
    return state


@pytest.mark.parametrize("change, error, message", [
    ({"seed": -1}, ValueError, "seed: expected 0 <="),
    ({"action_space_rng": {"bit_generator": "PCG64", "state": "x"}}, ValueError, "action_space_rng"),
    ({"carry": KeyError}, ValueError, r"missing \['carry'\]"),
    ({"settings": None}, ValueError, "settings expected a dict"),
    ({"reset_count": -5}, ValueError, "reset_count expected an int"),
    ({"format": 1}, TypeError, f"format {STATE_FORMAT}"),
    ("elapsed", ValueError, "elapsed steps expected in"),
])
def test_a_bad_state_is_refused_and_changes_nothing(env, change, error, message):
    env.reset(seed=3)
    env.step(torch.zeros(N, 1))
    before = env.state_dict()
    other = make()
    other.reset(seed=9)
    saved = other.state_dict()
    state = _elapsed(saved, -2**31) if change == "elapsed" else _bad(saved, **change)
    with pytest.raises(error, match=message):
        env.load_state_dict(state)
    after = env.state_dict()
    assert after["seed"] == before["seed"] and after["reset_count"] == before["reset_count"]
    assert after["action_space_rng"] == before["action_space_rng"]
    assert all(np.array_equal(after["carry"][k], before["carry"][k]) for k in before["carry"])


def test_a_state_saved_before_the_pool_was_packed_loads_and_continues_as_it_did(monkeypatch):
    """A leaf-by-leaf carry with fresh initial states saved by commit 446d0b1, whose pool was a state of its own
    leaves (``tests/data/make_state_before_packed_pool.py``), is repacked on load: the next 9 steps (seven episode
    ends, two refills of the pool) give what that version gave, bit for bit."""
    monkeypatch.setattr(autoreset, "FUSE_LIMIT", 0)  # leaf by leaf at 4 envs, as saved
    with open(pathlib.Path(__file__).parent / "data" / "state_before_packed_pool.pkl", "rb") as f:
        saved = pickle.load(f)
    envs = playground_gym.make_vec("CartpoleBalance", 4, device="cpu", array_type="numpy", episode_length=5)
    assert envs._shared.layout(4)[0].keys() != saved["state"]["carry"].keys()  # another layout than today's
    envs.load_state_dict(saved["state"])
    for want in saved["steps"]:
        obs, reward, _, truncated, info = envs.step(np.full((4, 1), 0.3, np.float32))
        for got, expected in zip((obs, reward, truncated, info["final_obs"]), want):
            np.testing.assert_array_equal(got, expected)
    assert sum(int(t.sum()) for *_, t, _ in saved["steps"]) == 7


def test_state_dict_settings_are_a_copy(env):
    env.reset(seed=0)
    env.state_dict()["settings"]["num_envs"] = 99
    assert env.state_dict()["settings"]["num_envs"] == N


# --- 4. huge finite inputs -------------------------------------------------------------------------------------------

def test_a_huge_finite_float64_action_acts_as_the_bound(env):
    env.reset(seed=1)
    obs, _, terminated, _, info = env.step(torch.full((N, 1), 1e300, dtype=torch.float64))
    env.reset(seed=1)
    expected, *_ = env.step(torch.ones(N, 1))
    assert not info["nan_reset"].any() and not terminated.any()
    assert torch.equal(obs, expected)
    env.reset(seed=1)
    obs, *_ = env.step(np.full((N, 1), -1e300))
    env.reset(seed=1)
    assert torch.equal(obs, env.step(-torch.ones(N, 1))[0])
    env.reset(seed=1)
    assert env.step(np.full((N, 1), np.inf))[4]["nan_reset"].all()  # a non-finite action stays one


@pytest.mark.parametrize("kwargs, message", [
    ({"reward_scale": 1e39}, "reward_scale: expected a finite number within float32"),
    ({"episode_length": 2**31}, "episode_length: expected at most 2\\*\\*31 - 1"),
    ({"num_envs": 2**31}, "num_envs: expected at most 2\\*\\*31 - 1"),
])
def test_numbers_beyond_the_device_types_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        playground_gym.make_vec("CartpoleBalance", kwargs.pop("num_envs", N), device="cpu", **kwargs)


# --- 7. smaller ------------------------------------------------------------------------------------------------------

def test_the_done_masks_are_separate_buffers(env):
    env.reset(seed=0)
    _, _, _, _, info = env.step(torch.zeros(N, 1))
    assert info["_final_obs"] is not info["_episode"]
    info["_final_obs"][:] = True
    assert not info["_episode"].any()


def test_a_closed_env_says_so():
    envs = make()
    envs.reset(seed=0)
    envs.close()
    for call in (lambda: envs.step(torch.zeros(N, 1)), lambda: envs.reset(), envs.state_dict):
        with pytest.raises(gym.error.ClosedEnvironmentError, match="after close"):
            call()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"obs_key": "privileged_state"}, ValueError, "one array, not a dict"),
    ({"device": "cpu:1"}, ValueError, "CPU device 1"),
    ({"config_overrides": {"sim_dt": 0}}, ValueError, "'sim_dt' expected a finite number > 0"),
    ({"config_overrides": {"ctrl_dt": None}}, ValueError, "'ctrl_dt' expected a finite number > 0"),
    ({"config_overrides": {"ctrl_dt": float("nan")}}, ValueError, "'ctrl_dt' expected a finite number > 0"),
    ({"config_overrides": {"ctrl_dt": -1}}, ValueError, "'ctrl_dt' expected a finite number > 0"),
    ({"config_overrides": {"ctrl_dt": 0.001}}, ValueError, "expected >= sim_dt"),
])
def test_smaller_bad_inputs(kwargs, error, message):
    with pytest.raises(error, match=message):
        make(**kwargs)


def test_empty_and_no_overrides_are_the_same_settings(env):
    same = make(config_overrides={})
    assert same._shared is env._shared and same._settings == env._settings


def test_warp_shared_leaves_are_found_by_name_not_by_length():
    """BallInCup's Warp contact buffers are naconmax (10,000) long, whatever num_envs: the packer keeps exactly MJX's
    DATA_NON_VMAP fields once, and every other leaf per env, also at num_envs = 1 and num_envs = naconmax."""
    from mujoco.mjx.warp.types import DATA_NON_VMAP

    from playground_gym.autoreset import Packer
    from playground_gym.loading import load_env

    env = load_env("BallInCup", "warp")
    for n in (1, 3, 10_000):
        state = jax.eval_shape(jax.vmap(env.reset), jax.ShapeDtypeStruct((n, 2), jax.numpy.uint32))
        packer = Packer(state, n)
        paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
        shared = {p.rsplit(".", 1)[1] for p, s in zip(paths, packer.shared) if s}
        assert shared and shared <= set(DATA_NON_VMAP) and all(".data._impl." in p for p, s in zip(paths, packer.shared) if s)
        assert all(leaf.shape[0] == n for leaf, s in zip(jax.tree.leaves(state), packer.shared) if not s)
        assert all(packer.shape_of(name)[0] == n for name in packer.groups if not name.endswith("@shared"))


def test_cond_2d_passes_any_leaf_shape_through_unchanged():
    """The pool's conditionals see arrays of more than two dimensions as [d0, -1]; leaves of size 0 (a Warp shared
    contact field with no contacts: leading size 0), scalars and absent fields come back as they went in."""
    import jax.numpy as jnp

    from playground_gym.autoreset import _cond_2d

    tree = {"contacts": jnp.zeros((4, 0, 3)), "shared": jnp.zeros((0, 3, 3)), "scalar": jnp.float32(2.0),
            "none": None, "data": jnp.arange(24.0).reshape(4, 2, 3)}
    for pred in (True, False):
        out = _cond_2d(jnp.asarray(pred), lambda t: {**t, "data": t["data"] + 1}, lambda t: t, tree)
        assert jax.tree.map(lambda x: (x.shape, x.dtype), out) == jax.tree.map(lambda x: (x.shape, x.dtype), tree)
        np.testing.assert_array_equal(out["data"], tree["data"] + (1 if pred else 0))
    with pytest.raises(ValueError, match="changed the shapes"):
        _cond_2d(jnp.asarray(True), lambda t: {**t, "data": t["data"].reshape(4, 3, 2)}, lambda t: t, tree)


@pytest.mark.parametrize("fuse", [True, False])
def test_leaves_of_no_elements_are_not_carried_but_come_back_as_zeros(fuse):
    """An MJX state has many size-0 leaves (CartpoleBalance: 30 of 95); the packed carry leaves them out, so a step
    neither takes nor returns them, and unpacking gives each back with its shape and dtype."""
    import jax.numpy as jnp

    from playground_gym.autoreset import Packer

    tree = {"contacts": jnp.zeros((4, 0, 3)), "flags": jnp.zeros((4, 0), bool), "ids": jnp.zeros((4, 5, 0), jnp.int32),
            "qpos": jnp.arange(8.0).reshape(4, 2), "steps": jnp.arange(4, dtype=jnp.int32)}
    packer = Packer(tree, 4, fuse=fuse)
    packed = packer.pack(tree)
    assert all(v.size > 0 for v in packed.values()) and len(packed) == 2  # float32 and int32 of qpos and steps
    back = packer.unpack(packed)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), back) == jax.tree.map(lambda x: (x.shape, x.dtype), tree)
    np.testing.assert_array_equal(back["qpos"], tree["qpos"])
    np.testing.assert_array_equal(back["steps"], tree["steps"])

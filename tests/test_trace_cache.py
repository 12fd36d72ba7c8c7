"""The trace cache: a second process loads the exported programs instead of tracing, and continues identically;
a corrupt, truncated or stale entry is reported and rebuilt, never used."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import weakref
from pathlib import Path
from collections import OrderedDict

import numpy as np
import pytest
import torch

import playground_gym
from playground_gym import autoreset, provenance, trace_cache, vector_env

SETTINGS = dict(device="cpu", episode_length=5, action_repeat=1)  # 5-step episodes: truncations within 8 steps
N = 3

CHILD = r"""
import json, sys, numpy as np, torch, playground_gym
envs = playground_gym.make_vec("CartpoleBalance", 3, device="cpu", episode_length=5, action_repeat=1)
obs, _ = envs.reset(seed=7)
actions = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, (8, 3, 1)), dtype=torch.float32)
rows = [obs.tolist()]
for a in actions:
    obs, reward, terminated, truncated, info = envs.step(a)
    rows.append([obs.tolist(), reward.tolist(), truncated.tolist(), info["final_obs"].tolist(),
                 info["episode"]["r"].tolist()])
print(json.dumps({"source": envs.programs_source, "counts": envs.trace_counts, "rows": rows,
                  "playground_imported": "mujoco_playground" in sys.modules}))
"""


def _run_child(cache: str, trace_cache_on: bool = True) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(PLAYGROUND_GYM_CACHE_DIR=cache, PLAYGROUND_GYM_TRACE_CACHE="1" if trace_cache_on else "0")
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_traced_programs_and_steps_bit_identically(tmp_path):
    first = _run_child(str(tmp_path))
    entries = list((tmp_path / "playground_gym_traces").glob("CartpoleBalance-*.bin"))
    second = _run_child(str(tmp_path))
    off = _run_child(str(tmp_path), trace_cache_on=False)
    assert (first["source"], second["source"], off["source"]) == ("traced", "trace cache", "traced (trace cache off)")
    assert len(entries) == 1
    assert second["rows"] == first["rows"] == off["rows"]  # obs, rewards, truncations, final_obs, episode returns
    assert any(any(row[2]) for row in first["rows"][1:])  # the run crossed episode ends
    assert first["counts"] == second["counts"] == {"reset": 1, "step": 1}
    # the warm process never imported MuJoCo Playground (ids and configs came from the snapshot)
    assert (first["playground_imported"], second["playground_imported"], off["playground_imported"]) == \
        (True, False, True)


def test_the_snapshot_of_ids_and_official_configs_equals_playground(tmp_path, monkeypatch):
    from playground_gym import configs

    monkeypatch.setattr(provenance, "cache_dir", lambda: tmp_path)
    configs._snapshot.cache_clear()  # and again at the end: later tests read the real snapshot
    configs._suite_envs.cache_clear()
    try:
        direct = {name: configs.official_config(name) for name in configs.list_envs()}  # read from Playground
        (snapshot,) = tmp_path.glob("registry-*.json")
        configs._snapshot.cache_clear()
        configs._suite_envs.cache_clear()
        assert configs.list_envs() == list(direct) and len(direct) == 54
        assert {name: configs.official_config(name) for name in direct} == direct  # read back from the file
        assert configs.official_config("FingerSpin")["discounting"] == 0.95
        snapshot.write_text("{not json")  # unreadable: ignored, read from Playground again and rewritten
        configs._snapshot.cache_clear()
        configs._suite_envs.cache_clear()
        assert configs.official_config("PendulumSwingup") == direct["PendulumSwingup"]
        assert "PendulumSwingup" in json.loads(snapshot.read_text())["official"]
    finally:
        configs._snapshot.cache_clear()
        configs._suite_envs.cache_clear()


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A trace cache in tmp_path, and empty in-process sharing (restored afterwards, so the session's fixtures and
    their twins in other tests still share)."""
    monkeypatch.setattr(provenance, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(vector_env, "_SHARED_LIVE", weakref.WeakValueDictionary())
    monkeypatch.setattr(vector_env, "_SHARED", OrderedDict())
    return tmp_path


def _fresh(**kwargs):
    """A new vector env that cannot share another's compiled functions in this process."""
    vector_env._SHARED.clear()
    vector_env._SHARED_LIVE.clear()
    return playground_gym.make_vec("CartpoleBalance", N, **{**SETTINGS, **kwargs})


def _roll(envs, steps=7):
    actions = torch.as_tensor(np.random.default_rng(1).uniform(-1, 1, (steps, N, 1)), dtype=torch.float32)
    return [torch.cat([o.flatten() for o in (envs.step(a)[0], envs.elapsed_steps().float())]) for a in actions]


def test_an_entry_is_used_in_process_and_the_model_is_loaded_only_when_needed(private_cache):
    traced = _fresh()
    assert traced.programs_source == "traced"
    traced.reset(seed=3)
    saved = traced.state_dict()
    expected = _roll(traced)
    del traced
    cached = _fresh()
    assert cached.programs_source == "trace cache" and cached._shared._mjx_env is None
    cached.load_state_dict(saved)  # a state saved by traced programs continues under loaded ones
    assert all(torch.equal(a, b) for a, b in zip(_roll(cached), expected))
    assert cached._shared._mjx_env is None  # stepping needed no model
    state = cached.env_state()  # needs the model's structure: loaded now
    assert state.data.qpos.shape == (N, cached.mjx_env.mj_model.nq) and cached._shared._mjx_env is not None


@pytest.mark.parametrize("fuse_limit", [0, autoreset.FUSE_LIMIT])
def test_programs_from_the_cache_donate_the_carry_as_traced_ones(private_cache, monkeypatch, fuse_limit):
    """The carry is donated only where it travels leaf by leaf, whichever path built the programs."""
    monkeypatch.setattr(autoreset, "FUSE_LIMIT", fuse_limit)  # 0: leaf by leaf even for 3 envs
    traced = _fresh()
    cached = _fresh()
    assert (traced.programs_source, cached.programs_source) == ("traced", "trace cache")
    assert traced._shared.donate_carry == cached._shared.donate_carry == (fuse_limit == 0)
    cached.reset(seed=0)
    before = cached._carry
    cached.step(torch.zeros(N, 1))
    assert any(x.is_deleted() for x in before.values()) == (fuse_limit == 0)


def _entry(folder):
    (path,) = folder.glob("*.bin")
    return path


def _header(path):
    data = path.read_bytes()
    magic = len(b"playground_gym trace cache\n")
    (size,) = struct.unpack("<Q", data[magic:magic + 8])
    return data, magic, size, json.loads(data[magic + 8:magic + 8 + size])


def _flip_payload_byte(path):
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-1000])


def _stale_version(path):
    data, magic, size, header = _header(path)
    header["key"]["versions"]["jax"] = "0.0.1"
    new = json.dumps(header, sort_keys=True).encode()
    path.write_bytes(data[:magic] + struct.pack("<Q", len(new)) + new + data[magic + 8 + size:])


def _not_a_cache_file(path):
    path.write_bytes(b"hello")


@pytest.mark.parametrize("damage, reason", [(_flip_payload_byte, "checksum"), (_truncate, "checksum"),
                                            (_stale_version, "other settings or versions"),
                                            (_not_a_cache_file, "not a trace cache file")])
def test_a_damaged_or_stale_entry_is_reported_rebuilt_and_never_used(private_cache, damage, reason):
    _fresh()
    path = _entry(private_cache)
    damage(path)
    with pytest.warns(UserWarning, match=f"trace cache entry .* is unusable .*{reason}"):
        rebuilt = _fresh()
    assert rebuilt.programs_source == "traced"
    again = _fresh()  # the rewritten entry is whole
    assert again.programs_source == "trace cache"
    rebuilt.reset(seed=0)
    again.reset(seed=0)
    assert all(torch.equal(a, b) for a, b in zip(_roll(rebuilt), _roll(again)))


def test_settings_that_change_the_program_key_their_own_entries(private_cache):
    _fresh()
    _fresh(episode_length=6)
    _fresh(reward_scale=0.5)
    assert len(list(private_cache.glob("*.bin"))) == 3
    assert _fresh(episode_length=6).programs_source == "trace cache"


def test_program_keys_differ_exactly_where_the_program_differs():
    device = playground_gym.backend.resolve_device("cpu")
    base = {"env_id": "CartpoleBalance", "num_envs": 4, "impl": "jax", "config_overrides": None,
            "episode": {"max_steps": 5, "action_repeat": 1, "reward_scale": 1.0, "obs_key": "state",
                        "full_reset": True}}
    key = trace_cache.program_key(base, device)
    assert trace_cache.program_key(dict(base), device) == key
    for change in ({"num_envs": 8}, {"config_overrides": {"vision": False}},
                   {"episode": {**base["episode"], "full_reset": False}},
                   {"episode": {**base["episode"], "randomization": "official"}},
                   {"episode": {**base["episode"], "randomization": "official", "randomize_on_reset": True}}):
        assert trace_cache.program_key({**base, **change}, device) != key
    assert key["versions"]["jax"] and key["platform"] == "cpu" and key["menagerie"] is None


def test_custom_envs_are_not_cached(private_cache):
    from playground_gym.loading import load_env

    envs = playground_gym.make_vec(load_env("CartpoleBalance"), N, device="cpu", episode_length=5)
    assert envs.programs_source == "traced (trace cache off)"
    assert not list(private_cache.glob("*.bin"))


def test_a_randomiser_of_your_own_is_not_cached(private_cache):
    from test_randomization import mass_scale

    envs = _fresh(domain_randomization=mass_scale)
    assert envs.programs_source == "traced (trace cache off)"
    assert not list(private_cache.glob("*.bin"))


def _edited_obs_shape(path, rechecksum=False):
    data, magic, size, header = _header(path)
    header["meta"]["obs_shapes"] = [6]  # CartpoleBalance's observations are 5 wide
    if rechecksum:  # as if written so: the checksum fits, the programs do not
        body = {k: v for k, v in header.items() if k != "sha256"}
        header["sha256"] = trace_cache._checksum(body, data[magic + 8 + size:])
    new = json.dumps(header, sort_keys=True).encode()
    path.write_bytes(data[:magic] + struct.pack("<Q", len(new)) + new + data[magic + 8 + size:])


@pytest.mark.parametrize("rechecksum, reason", [(False, "checksum"), (True, "header says")])
def test_an_edited_header_is_caught(private_cache, rechecksum, reason):
    _fresh()
    _edited_obs_shape(_entry(private_cache), rechecksum)
    with pytest.warns(UserWarning, match=f"trace cache entry .* is unusable .*{reason}"):
        rebuilt = _fresh()
    assert rebuilt.programs_source == "traced" and rebuilt.single_observation_space.shape == (5,)


REWARD_CHILD = r"""
import json, torch, playground_gym
from playground_gym import trace_cache
envs = playground_gym.make_vec("CartpoleBalance", 3, device="cpu", episode_length=50, action_repeat=1)
obs, _ = envs.reset(seed=1)
total = 0.0
for _ in range(20):
    _, reward, *_ = envs.step(torch.zeros(3, 1))
    total += float(reward.sum())
print(json.dumps({"source": envs.programs_source, "reward": round(total, 4), "first_obs": obs.tolist(),
                  "discounting": playground_gym.official_config("CartpoleBalance")["discounting"]}))
"""


def _reward_child(cache, **env_vars) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(PLAYGROUND_GYM_CACHE_DIR=str(cache), **env_vars)
    out = subprocess.run([sys.executable, "-c", REWARD_CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_edited_playground_is_never_served_the_programs_or_settings_of_the_old_one(tmp_path):
    """A copy of MuJoCo Playground first on PYTHONPATH (as a source checkout), then edited in place (its version
    string unchanged): the warm cache must miss, the edited reward and official settings must apply."""
    import importlib.util
    import shutil

    installed = Path(importlib.util.find_spec("mujoco_playground").submodule_search_locations[0])
    copy = tmp_path / "checkout" / "mujoco_playground"
    shutil.copytree(installed, copy, ignore=shutil.ignore_patterns("__pycache__", "external_deps"))
    cache = tmp_path / "cache"
    path = {"PYTHONPATH": str(copy.parent)}
    before = _reward_child(cache, **path)
    assert before["source"] == "traced" and _reward_child(cache, **path)["source"] == "trace cache"
    cartpole = copy / "_src" / "dm_control_suite" / "cartpole.py"
    cartpole.write_text(cartpole.read_text().replace("    r = self._get_reward(", "    r = 2.0 * self._get_reward("))
    params = copy / "config" / "dm_control_suite_params.py"
    params.write_text(params.read_text().replace("discounting=0.995,", "discounting=0.5,", 1))
    after = _reward_child(cache, **path)
    assert after["source"] == "traced"
    assert after["reward"] == pytest.approx(2 * before["reward"], rel=1e-5) and before["reward"] > 0
    assert (before["discounting"], after["discounting"]) == (0.995, 0.5)
    assert _reward_child(cache, **path)["source"] == "trace cache"  # the edited copy's own entry


def test_jax_settings_key_the_cache_and_the_in_process_sharing(tmp_path, monkeypatch, private_cache):
    """A warm entry traced with the default random bits is not served to a process that turned
    jax_threefry_partitionable off: it traces its own, whose initial states equal a cold run's with that flag."""
    cache = tmp_path / "cache"
    default = _reward_child(cache)
    flag = {"JAX_THREEFRY_PARTITIONABLE": "0"}
    off = _reward_child(cache, **flag)
    cold = _reward_child(tmp_path / "cold", PLAYGROUND_GYM_TRACE_CACHE="0", **flag)
    assert (default["source"], off["source"]) == ("traced", "traced")
    assert off["first_obs"] == cold["first_obs"] != default["first_obs"]
    assert _reward_child(cache, **flag)["source"] == "trace cache"
    import jax

    before = provenance.jax_settings()
    for name, value in (("jax_enable_x64", True), ("jax_default_matmul_precision", "highest")):
        old = getattr(jax.config, name)
        jax.config.update(name, value)
        try:
            assert provenance.jax_settings() != before  # part of the cache key and the sharing key
        finally:
            jax.config.update(name, old)
    assert provenance.jax_settings() == before
    first = _fresh()
    monkeypatch.setattr(provenance, "jax_settings", lambda: {**before, "x64": not before["x64"]})
    other = playground_gym.make_vec("CartpoleBalance", N, **SETTINGS)
    assert other._shared is not first._shared


def test_the_export_platform_of_a_gpu_is_the_name_exported_programs_run_under():
    from types import SimpleNamespace

    import jax
    import jax.numpy as jnp

    def device(platform, version):
        return SimpleNamespace(platform=platform, client=SimpleNamespace(platform_version=version))

    # a CUDA device says "gpu"; a program exported for "gpu" refuses to run there ('used on cuda')
    assert trace_cache.export_platform(device("gpu", "cuda 13000")) == "cuda"
    assert trace_cache.export_platform(device("gpu", "rocm 6.3")) == "rocm"
    assert trace_cache.export_platform(jax.devices("cpu")[0]) == "cpu"
    exported = jax.export.export(jax.jit(lambda x: x * 2),
                                 platforms=(trace_cache.export_platform(device("gpu", "cuda 13000")),))(
        jax.ShapeDtypeStruct((3,), jnp.float32))
    assert exported.platforms == ("cuda",)

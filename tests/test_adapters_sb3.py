"""Stable-Baselines3 drives playground_gym through `playground_gym.adapters.SB3VecEnv`, with SB3's own semantics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import playground_gym
from playground_gym.adapters import SB3VecEnv

sb3 = pytest.importorskip("stable_baselines3", reason="pip install -e '.[sb3]' (the dev extra includes it)")
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import VecEnv, VecNormalize  # noqa: E402

N, LENGTH = 4, 5


@pytest.fixture(scope="module")
def twins():
    """Two identical numpy-mode CartpoleBalance envs (5-step episodes): one behind the adapter, one stepped directly."""
    make = lambda: playground_gym.make_vec("CartpoleBalance", N, device="cpu", array_type="numpy",  # noqa: E731
                                           episode_length=LENGTH, reward_scale=2.0)
    return make(), make()


def test_it_is_an_sb3_vecenv_with_single_env_spaces(twins):
    venv = SB3VecEnv(twins[0])
    assert isinstance(venv, VecEnv) and venv.num_envs == N
    assert venv.observation_space == twins[0].single_observation_space
    assert venv.action_space == twins[0].single_action_space and venv.render_mode is None


def test_truncation_carries_the_true_terminal_observation_and_the_time_limit_flag(twins):
    envs, twin = twins
    venv = SB3VecEnv(envs)
    venv.seed(11)
    obs = venv.reset()
    twin_obs, _ = twin.reset(seed=11)
    np.testing.assert_array_equal(obs, twin_obs)
    rng = np.random.default_rng(0)
    scaled_returns = np.zeros(N)
    for t in range(LENGTH):
        actions = rng.uniform(-1, 1, (N, 1)).astype(np.float32)
        obs, rewards, dones, infos = venv.step(actions)
        t_obs, t_reward, t_term, t_trunc, t_info = twin.step(actions)
        np.testing.assert_array_equal(rewards, t_reward)
        scaled_returns += rewards
        assert isinstance(obs, np.ndarray) and obs.dtype == np.float32 and dones.dtype == bool
        if t < LENGTH - 1:
            assert not dones.any() and infos == [{}] * N
    assert dones.all()
    np.testing.assert_array_equal(obs, t_obs)  # the next episode's first observation, as SB3 expects
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        np.testing.assert_array_equal(info["terminal_observation"], t_info["final_obs"][i])
        assert not np.array_equal(info["terminal_observation"], obs[i])
        assert info["episode"]["l"] == LENGTH
        assert info["episode"]["r"] == pytest.approx(float(t_info["episode"]["r"][i]))
        assert info["episode"]["r"] == pytest.approx(scaled_returns[i] / 2.0, rel=1e-5)  # unscaled, as Monitor's
        assert info["episode"]["t"] >= 0 and "nan_reset" not in info


def test_terminations_are_not_time_limits(toy_env):
    """The toy env (torch mode: the adapter copies to numpy) terminates when pushed, and NaN-resets when poisoned."""
    venv = SB3VecEnv(toy_env)
    venv.reset()
    push, poison = np.array([[1.0, 0.0]], np.float32), np.array([[0.0, 1.0]], np.float32)
    terminated_infos = []
    for _ in range(12):
        obs, rewards, dones, infos = venv.step(np.repeat(push, toy_env.num_envs, 0))
        assert isinstance(obs, np.ndarray) and isinstance(rewards, np.ndarray)
        terminated_infos += [infos[i] for i in np.flatnonzero(dones)]
    assert terminated_infos and all(info["TimeLimit.truncated"] is False for info in terminated_infos)
    assert all(isinstance(info["terminal_observation"], np.ndarray) for info in terminated_infos)
    obs, rewards, dones, infos = venv.step(np.repeat(poison, toy_env.num_envs, 0))
    assert dones.all() and all(info["nan_reset"] is True and info["TimeLimit.truncated"] is False for info in infos)


def test_seed_makes_the_next_reset_reproducible(twins):
    venv = SB3VecEnv(twins[0])
    assert venv.seed(5) == [5, 6, 7, 8]
    first = venv.reset()
    venv.seed(5)
    np.testing.assert_array_equal(venv.reset(), first)
    venv.seed(6)
    assert not np.array_equal(venv.reset(), first)
    venv.set_options({"x": 1})
    with pytest.raises(ValueError, match="no reset options"):
        venv.reset()


def test_attributes_methods_and_wrappers(twins):
    venv = SB3VecEnv(twins[0])
    venv.reset()
    assert venv.get_attr("num_envs") == [N] * N and venv.get_attr("render_mode", [0, 2]) == [None, None]
    assert venv.has_attr("episode_statistics") and not venv.has_attr("no_such_attribute")
    venv.set_attr("render_size", (64, 64))
    assert twins[0].render_size == (64, 64)
    with pytest.raises(ValueError, match="one batched env"):
        venv.set_attr("render_size", (32, 32), indices=[1])
    steps = venv.env_method("elapsed_steps")
    assert len(steps) == N and np.array_equal(steps[0], np.zeros(N))
    with pytest.raises(ValueError, match="one batched env"):
        venv.env_method("elapsed_steps", indices=0)
    assert venv.env_is_wrapped(Monitor) == [True] * N
    assert venv.env_is_wrapped(gym.wrappers.TimeLimit) == [False] * N


def test_vecnormalize_and_ppo_train_through_it():
    envs = playground_gym.make_vec("CartpoleBalance", 8, device="cpu", array_type="numpy", episode_length=50)
    venv = VecNormalize(SB3VecEnv(envs), gamma=0.99)
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=128, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=2048)
    assert model.num_timesteps == 2048
    # SB3's logger buffer is filled from the adapter's episode info, without a Monitor: 8 envs x 2048/8/50 episodes
    assert len(model.ep_info_buffer) == 8 * (2048 // 8 // 50)
    assert all(e["l"] == 50 for e in model.ep_info_buffer)
    assert venv.obs_rms.count > 2048  # VecNormalize saw every observation
    obs = venv.reset()
    assert np.abs(obs).max() <= venv.clip_obs


def test_bad_input_is_a_clear_type_error(twins, numpy_env):
    with pytest.raises(TypeError, match="expected a playground_gym.PlaygroundVectorEnv"):
        SB3VecEnv(object())
    with pytest.raises(TypeError, match="got RecordEpisodeStatistics"):
        SB3VecEnv(gym.wrappers.vector.RecordEpisodeStatistics(numpy_env))
    venv = SB3VecEnv(twins[0])
    venv.reset()
    with pytest.raises(ValueError, match="expected shape"):
        venv.step(np.zeros((N, 3), np.float32))
    with pytest.raises(RuntimeError, match="step_async"):
        venv.step_wait()


def test_a_torch_env_works_too(short_env):
    venv = SB3VecEnv(short_env)
    obs = venv.reset()
    assert isinstance(obs, np.ndarray) and obs.shape == (short_env.num_envs, short_env.single_observation_space.shape[0])
    obs, rewards, dones, infos = venv.step(np.zeros((short_env.num_envs, 1), np.float32))
    assert rewards.dtype == np.float32 and not isinstance(rewards, torch.Tensor)


def test_a_jax_env_and_an_env_without_episode_statistics_work_with_sb3():
    """SB3 writes its time-out bootstrap into the rewards (a JAX array's numpy view is read-only), and evaluate_policy
    needs Monitor's episode info, which an env made with episode_statistics=False has not: it must not wait for it."""
    from stable_baselines3.common.evaluation import evaluate_policy

    jax_env = playground_gym.make_vec("CartpoleBalance", N, device="cpu", array_type="jax", episode_length=LENGTH)
    model = PPO("MlpPolicy", SB3VecEnv(jax_env), n_steps=8, batch_size=16, n_epochs=1, seed=0)
    model.learn(16)  # crosses time limits: SB3 bootstraps in place
    bare = playground_gym.make_vec("CartpoleBalance", N, device="cpu", array_type="numpy", episode_length=LENGTH,
                                   episode_statistics=False)
    venv = SB3VecEnv(bare)
    assert venv.env_is_wrapped(Monitor) == [False] * N
    with pytest.warns(UserWarning, match="Monitor"):
        mean, _ = evaluate_policy(model, venv, n_eval_episodes=N, warn=True)
    assert np.isfinite(mean)

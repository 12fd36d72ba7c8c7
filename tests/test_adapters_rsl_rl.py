"""rsl_rl (rsl-rl-lib 5.x) drives playground_gym through `playground_gym.adapters.RslRlVecEnv`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import playground_gym

pytest.importorskip("rsl_rl", reason="pip install -e '.[rsl-rl]' (the dev extra includes it)")
from rsl_rl.env import VecEnv  # noqa: E402
from rsl_rl.runners import OnPolicyRunner  # noqa: E402
from tensordict import TensorDict  # noqa: E402

from playground_gym.adapters import RslRlVecEnv  # noqa: E402
from test_no_host_sync import no_host_sync  # noqa: E402


def train_cfg(obs_groups: dict | None = None, steps: int = 16) -> dict:
    """A small rsl_rl PPO configuration (rsl-rl-lib 5.x format)."""
    mlp = {"class_name": "MLPModel", "hidden_dims": [32, 32], "activation": "elu", "obs_normalization": True}
    return {"num_steps_per_env": steps, "save_interval": 1000, "obs_groups": obs_groups or {},
            "check_for_nan": True, "logger": "tensorboard", "experiment_name": "test",
            "algorithm": {"class_name": "PPO", "num_learning_epochs": 2, "num_mini_batches": 2, "gamma": 0.99,
                          "lam": 0.95, "learning_rate": 1e-3, "schedule": "fixed"},
            "actor": {**mlp, "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 1.0}},
            "critic": mlp}


def test_it_is_an_rsl_rl_vecenv(short_env):
    env = RslRlVecEnv(short_env, seed=0)
    assert isinstance(env, VecEnv) and env.num_envs == short_env.num_envs and env.num_actions == 1
    assert env.max_episode_length == short_env.max_episode_steps == 5 and env.device == torch.device("cpu")
    obs = env.get_observations()
    assert isinstance(obs, TensorDict) and list(obs.keys()) == ["policy"] and obs["policy"].shape == (4, 5)


def test_time_outs_final_obs_and_episode_log(short_env, long_env):
    """short_env: 5-step episodes, reward x2; long_env is its 15-step twin (same seed, same states)."""
    env = RslRlVecEnv(short_env, seed=2)
    long_env.reset(seed=2)
    actions = torch.linspace(-1, 1, 4).reshape(4, 1)
    rewards = torch.zeros(4)
    for t in range(5):
        obs, reward, dones, extras = env.step(actions)
        twin_obs = long_env.step(actions)[0]
        rewards += reward
        assert ("log" in extras) == (t == 4)  # left out until max_episode_length steps have passed
    assert dones.all() and extras["time_outs"].all() and extras["time_outs"].dtype == torch.bool
    torch.testing.assert_close(extras["final_obs"]["policy"], twin_obs)  # the true terminal observation
    assert not torch.equal(obs["policy"], twin_obs)  # ... while obs is the next episode's first
    assert extras["log"]["Episode/length"].item() == 5
    torch.testing.assert_close(extras["log"]["Episode/return"], rewards.mean() / 2)  # unscaled
    obs, reward, dones, extras = env.step(actions)  # no episode ended: the last mean is kept
    assert not dones.any() and extras["log"]["Episode/length"].item() == 5


def test_dict_observations_give_the_critic_the_privileged_state(toy_env):
    env = RslRlVecEnv(toy_env, seed=0)
    obs = env.get_observations()
    assert set(obs.keys()) == {"policy", "critic"} and obs["critic"].shape[1] > obs["policy"].shape[1]
    push = torch.tensor([[1.0, 0.0]]).repeat(toy_env.num_envs, 1)
    terminated_any = False
    for _ in range(12):
        obs, reward, dones, extras = env.step(push)
        terminated_any |= bool((dones & ~extras["time_outs"]).any())  # falls are dones, not time-outs
        assert set(extras["final_obs"].keys()) == {"policy", "critic"}
    assert terminated_any


def test_init_at_random_ep_len_really_spreads_the_episode_ends(short_env):
    env = RslRlVecEnv(short_env, seed=0)
    env.episode_length_buf = torch.tensor([0, 1, 3, 4], dtype=torch.int32)
    assert env.episode_length_buf.tolist() == [0, 1, 3, 4]
    ends = []
    for _ in range(5):
        ends.append(env.step(torch.zeros(4, 1))[2].tolist())
    assert np.array(ends).T.tolist() == [[False] * 4 + [True], [False] * 3 + [True, False],
                                         [False, True, False, False, False], [True] + [False] * 4]


def test_a_step_makes_no_host_sync(short_env):
    env = RslRlVecEnv(short_env, seed=0)
    log = []
    with no_host_sync(log):
        for _ in range(7):
            env.step(torch.zeros(4, 1))
    assert log == []


@pytest.mark.parametrize("obs_groups", [{}, {"actor": ["policy"], "critic": ["policy"]}])
def test_rsl_rl_ppo_trains_through_it(obs_groups, tmp_path):
    envs = playground_gym.make_vec("CartpoleBalance", 16, device="cpu", episode_length=50)
    env = RslRlVecEnv(envs, seed=0)
    runner = OnPolicyRunner(env, train_cfg(obs_groups), log_dir=str(tmp_path), device="cpu")
    runner.learn(num_learning_iterations=8, init_at_random_ep_len=True)  # 8 x 16 steps x 16 envs = 2048
    assert runner.current_learning_iteration == 7 and runner.logger.tot_timesteps == 2048
    assert len(runner.logger.lenbuffer) > 0  # episodes ended, spread by init_at_random_ep_len
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".pt") == ["model_0.pt", "model_7.pt"]


def test_dict_obs_critic_is_asymmetric_in_ppo(toy_env):
    env = RslRlVecEnv(toy_env, seed=0)
    runner = OnPolicyRunner(env, train_cfg(steps=8), log_dir=None, device="cpu")
    assert runner.cfg["obs_groups"] == {"actor": ["policy"], "critic": ["critic"]}
    runner.learn(num_learning_iterations=2)


def test_bad_input_is_a_clear_type_error(numpy_env):
    with pytest.raises(TypeError, match="expected a playground_gym.PlaygroundVectorEnv"):
        RslRlVecEnv(object())
    with pytest.raises(TypeError, match="array_type='torch'.*got array_type='numpy'"):
        RslRlVecEnv(numpy_env)

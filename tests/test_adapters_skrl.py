"""skrl (2.x) drives playground_gym through `playground_gym.adapters.SkrlEnv`."""

from __future__ import annotations

import pytest
import torch

import playground_gym

pytest.importorskip("skrl", reason="pip install -e '.[skrl]' (the dev extra includes it)")
from skrl.agents.torch.ppo import PPO, PPO_CFG  # noqa: E402
from skrl.envs.wrappers.torch.base import Wrapper  # noqa: E402
from skrl.memories.torch import RandomMemory  # noqa: E402
from skrl.trainers.torch import SequentialTrainer, SequentialTrainerCfg  # noqa: E402
from skrl.utils.model_instantiators.torch import deterministic_model, gaussian_model  # noqa: E402

from playground_gym.adapters import SkrlEnv  # noqa: E402
from test_no_host_sync import no_host_sync  # noqa: E402


def test_spaces_shapes_and_final_obs(short_env, long_env):
    env = SkrlEnv(short_env, seed=4)
    assert isinstance(env, Wrapper) and env.num_envs == 4 and env.device == torch.device("cpu")
    assert env.observation_space.shape == (5,) and env.action_space.shape == (1,) and env.state_space is None
    obs, info = env.reset()
    twin_obs, _ = long_env.reset(seed=4)
    torch.testing.assert_close(obs, twin_obs)
    assert env.reset()[0] is obs  # the envs autoreset: a second reset() changes nothing
    actions = torch.full((4, 1), 0.3)
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(actions)
        twin_obs = long_env.step(actions)[0]
    assert reward.shape == terminated.shape == truncated.shape == (4, 1)
    assert truncated.all() and not terminated.any() and env.state() is None
    torch.testing.assert_close(info["final_obs"], twin_obs)
    assert info["episode"]["Episode / Length"].item() == 5


def test_dict_obs_state_is_the_privileged_state_and_falls_terminate(toy_env):
    env = SkrlEnv(toy_env, seed=0)
    obs, _ = env.reset()
    assert env.state_space is not None and env.state().shape == (toy_env.num_envs, env.state_space.shape[0])
    push = torch.tensor([[1.0, 0.0]]).repeat(toy_env.num_envs, 1)
    terminated_any = False
    for _ in range(12):
        obs, reward, terminated, truncated, info = env.step(push)
        terminated_any |= bool(terminated.any())
        assert not (terminated & truncated).any() and "final_privileged_state" in info
    assert terminated_any


def test_a_step_makes_no_host_sync(short_env):
    env = SkrlEnv(short_env, seed=0)
    env.reset()
    log = []
    with no_host_sync(log):
        for _ in range(6):
            env.step(torch.zeros(4, 1))
    assert log == []


def test_skrl_ppo_trains_through_it():
    envs = playground_gym.make_vec("CartpoleBalance", 16, device="cpu", episode_length=50)
    env = SkrlEnv(envs, seed=0)
    common = dict(observation_space=env.observation_space, state_space=env.state_space,
                  action_space=env.action_space, device=env.device)
    layers = [{"name": "net", "input": "OBSERVATIONS", "layers": [32, 32], "activations": "elu"}]
    models = {"policy": gaussian_model(**common, network=layers, output="ACTIONS"),
              "value": deterministic_model(**common, network=layers, output="ONE")}
    cfg = PPO_CFG(rollouts=16, learning_epochs=2, mini_batches=2, time_limit_bootstrap=True)
    cfg.experiment.write_interval = 0
    cfg.experiment.checkpoint_interval = 0
    agent = PPO(models=models, memory=RandomMemory(memory_size=16, num_envs=16, device=env.device), cfg=cfg, **common)
    trainer = SequentialTrainer(cfg=SequentialTrainerCfg(timesteps=112, headless=True, disable_progressbar=True,
                                                                     close_environment_at_exit=False),
                                env=env, agents=agent)
    trainer.train()  # 112 steps x 16 envs, 7 updates
    assert envs.elapsed_steps().tolist() == [112 % 50] * 16  # the trainer stepped the envs 112 times
    assert all(torch.isfinite(p).all() for p in models["policy"].parameters())
    # skrl's memory holds the last rollout, steps 97-112: the time limit at step 100 reached it, as truncation only
    truncated = agent.memory.get_tensor_by_name("truncated")[:, :, 0]
    assert truncated.shape == (16, 16) and truncated[3].all() and truncated.sum() == 16
    assert not agent.memory.get_tensor_by_name("terminated").any()


def test_bad_input_is_a_clear_type_error(numpy_env):
    with pytest.raises(TypeError, match="expected a playground_gym.PlaygroundVectorEnv"):
        SkrlEnv(object())
    with pytest.raises(TypeError, match="array_type='torch'.*got array_type='numpy'"):
        SkrlEnv(numpy_env)


def test_what_skrl_does_at_a_truncation_is_what_the_docs_say():
    """skrl 2.1.1 (docs/libraries.md): with time_limit_bootstrap=True, PPO adds gamma * V(next_observations)
    on truncated steps (after a same-step autoreset: the next episode's first observation) and its GAE cuts there;
    with the default False it adds nothing and its GAE runs on across the truncation."""
    import inspect
    import re

    from skrl.agents.torch.ppo import ppo as skrl_ppo

    source = re.sub(r"\s+", " ", inspect.getsource(skrl_ppo))
    assert '"observations": self._observation_preprocessor(next_observations)' in source
    assert "rewards += self.cfg.discount_factor * next_values * truncated" in source
    rewards, values = torch.ones(3, 1), torch.zeros(3, 1)
    terminated, truncated = torch.zeros(3, 1, dtype=torch.bool), torch.tensor([[False], [True], [False]])
    last = torch.full((1,), 10.0)
    kwargs = dict(rewards=rewards, terminated=terminated, truncated=truncated, values=values, last_values=last,
                  discount_factor=0.5, lambda_coefficient=1.0)
    returns_cut, _ = skrl_ppo.compute_gae(**kwargs, time_limit_bootstrap=True)
    returns_across, _ = skrl_ppo.compute_gae(**kwargs, time_limit_bootstrap=False)
    assert returns_cut[0, 0] == pytest.approx(1 + 0.5 * 1)  # stops at the truncated step 1
    assert returns_across[0, 0] == pytest.approx(1 + 0.5 * (1 + 0.5 * (1 + 0.5 * 10)))  # runs into the next episode

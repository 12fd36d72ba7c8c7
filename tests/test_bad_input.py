"""Every public entry point rejects bad input with a clear ValueError/TypeError/KeyError."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import playground_gym
from conftest import NUM_ENVS


def make(**kwargs):
    kwargs.setdefault("device", "cpu")
    return playground_gym.make_vec(kwargs.pop("env_id", "CartpoleBalance"), kwargs.pop("num_envs", 2), **kwargs)


def test_unknown_env_id_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean 'CartpoleBalance'"):
        make(env_id="CartpoleBalence")
    with pytest.raises(ValueError, match="Did you mean 'CartpoleBalance'"):
        make(env_id="playground/cartpolebalance")
    with pytest.raises(TypeError, match="env_id: expected"):
        make(env_id=42)
    with pytest.raises(ValueError, match="unknown Playground env"):
        playground_gym.official_config("NoSuchEnv")


@pytest.mark.parametrize("num_envs, error", [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError),
                                             ("4", TypeError)])
def test_bad_num_envs(num_envs, error):
    with pytest.raises(error, match=f"num_envs: expected a positive int; got .*{num_envs!s}"):
        make(num_envs=num_envs)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"device": "tpu"}, ValueError, "device: expected 'cpu', 'cuda'"),
    ({"device": "cuda"}, ValueError, "JAX has no GPU backend"),
    ({"device": "cuda:x"}, ValueError, "cuda:N"),
    ({"device": 3}, TypeError, "device: expected"),
    ({"array_type": "tensorflow"}, ValueError, "array_type: expected one of"),
    ({"impl": "cuda"}, ValueError, "impl: expected one of"),
    ({"episode_length": 0}, ValueError, "episode_length: expected a positive int"),
    ({"episode_length": 3, "action_repeat": 4}, ValueError, "episode_length: expected >= action_repeat"),
    ({"action_repeat": 2.0}, TypeError, "action_repeat: expected"),
    ({"reward_scale": float("nan")}, ValueError, "reward_scale: expected a finite number"),
    ({"reward_scale": "2"}, TypeError, "reward_scale: expected a real number"),
    ({"render_mode": "human"}, ValueError, "render_mode: expected None or 'rgb_array'"),
    ({"seed": -1}, ValueError, "seed: expected 0 <="),
    ({"seed": "0"}, TypeError, "seed: expected an int"),
    ({"full_reset": 1}, TypeError, "full_reset: expected a bool"),
    ({"obs_key": 0}, TypeError, "obs_key: expected a str"),
    ({"config_overrides": {"no_such_key": 1}}, KeyError, r"unknown key\(s\) \['no_such_key'\]"),
    ({"config_overrides": {"episode_length": 10}}, KeyError, "pass make_vec"),
    ({"config_overrides": [("ctrl_dt", 0.1)]}, TypeError, "config_overrides: expected a dict"),
])
def test_bad_constructor_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        make(**kwargs)


def test_valid_config_override_is_applied():
    envs = make(config_overrides={"ctrl_dt": 0.02})
    assert envs.mjx_env.dt == 0.02


@pytest.mark.parametrize("actions, error, message", [
    (torch.zeros(NUM_ENVS, 2), ValueError, r"expected shape \(4, 1\).*got \(4, 2\)"),
    (torch.zeros(NUM_ENVS), ValueError, r"expected shape \(4, 1\).*got \(4,\)"),
    (np.zeros((NUM_ENVS + 1, 1)), ValueError, r"got \(5, 1\)"),
    (torch.zeros(NUM_ENVS, 1, dtype=torch.bool), TypeError, "real numeric"),
    (np.zeros((NUM_ENVS, 1), dtype=np.complex64), TypeError, "real numeric"),
    (np.array([["a"]] * NUM_ENVS), TypeError, "real numeric"),
    ("left", TypeError, "actions: expected a torch tensor"),
    (None, TypeError, "actions: expected"),
    ([[0.0], [1.0, 2.0]], TypeError, "unconvertible"),
])
def test_bad_actions(short_env, actions, error, message):
    short_env.reset(seed=0)
    with pytest.raises(error, match=message):
        short_env.step(actions)


def test_bad_reset_arguments(short_env):
    with pytest.raises(ValueError, match="options: expected None"):
        short_env.reset(options={"reset_mask": np.ones(NUM_ENVS, bool)})
    with pytest.raises(TypeError, match="seed: expected an int"):
        short_env.reset(seed=[0, 1, 2, 3])


def test_bad_obs_key_for_dict_observations():
    from toy_env import ToyDictEnv

    with pytest.raises(KeyError, match=r"obs_key: expected one of \['privileged_state', 'state'\]"):
        playground_gym.make_vec(ToyDictEnv(), 2, device="cpu", obs_key="pixels")

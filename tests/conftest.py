"""Shared, compiled envs: each JIT compile costs seconds, so every fixture is built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import playground_gym  # noqa: E402
from toy_env import ToyDictEnv  # noqa: E402

NUM_ENVS = 4
SHORT = 5  # episode_length of the short-episode fixtures (action_repeat 1: 5 agent steps)


@pytest.fixture(scope="session")
def short_env():
    """CartpoleBalance, torch mode, 5-step episodes, reward scaled by 2, fresh initial states (the default)."""
    return playground_gym.make_vec("CartpoleBalance", NUM_ENVS, device="cpu", episode_length=SHORT, reward_scale=2.0)


@pytest.fixture(scope="session")
def long_env():
    """The short env's twin with 3x longer episodes: same seed, same initial states."""
    return playground_gym.make_vec("CartpoleBalance", NUM_ENVS, device="cpu", episode_length=3 * SHORT)


@pytest.fixture(scope="session")
def numpy_env():
    return playground_gym.make_vec("CartpoleBalance", NUM_ENVS, device="cpu", array_type="numpy",
                                   episode_length=SHORT, episode_statistics=False)


@pytest.fixture(scope="session")
def jax_env():
    return playground_gym.make_vec("CartpoleBalance", NUM_ENVS, device="cpu", array_type="jax", episode_length=SHORT)


@pytest.fixture(scope="session")
def replay_env():
    """Upstream's replay of each env's cached first state instead of fresh initial states."""
    return playground_gym.make_vec("CartpoleBalance", NUM_ENVS, device="cpu", episode_length=SHORT, full_reset=False)


@pytest.fixture(scope="session")
def toy_env():
    """Dict observations with privileged_state, early termination, NaN on demand; 12-step episodes."""
    return playground_gym.make_vec(ToyDictEnv(), NUM_ENVS, device="cpu", episode_length=12)

"""Tests of playground_gym.baselines: the shipped random-policy return table."""

from __future__ import annotations

import json
from importlib import resources

import pytest

import playground_gym
from playground_gym.baselines import random_policy_return, random_policy_returns


def test_table_covers_every_dm_control_env():
    table = random_policy_returns()
    assert set(playground_gym.list_envs("dm_control_suite")) <= set(table)
    assert all(isinstance(v, float) and v >= 0.0 for v in table.values())  # DM Control rewards lie in [0, 1]


def test_meta_records_how_the_table_was_made():
    raw = json.loads(resources.files("playground_gym").joinpath("data", "random_policy_returns.json").read_text())
    meta = raw["_meta"]
    assert {"command", "num_envs", "seed", "date", "versions"} <= set(meta)
    assert meta["command"].startswith("python benchmarks/random_policy_returns.py")


def test_lookup_with_and_without_prefix():
    assert random_policy_return("playground/CartpoleBalance") == random_policy_return("CartpoleBalance") > 0


def test_missing_env_names_it():
    with pytest.raises(ValueError, match="Go1JoystickFlatTerrain"):
        random_policy_return("Go1JoystickFlatTerrain")
    with pytest.raises(TypeError):
        random_policy_return(3)  # type: ignore[arg-type]

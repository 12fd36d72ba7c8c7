"""Domain randomisation: per-env models drawn from the seed, carried as data, redrawn on reset when asked.

The mechanics are tested on CartpoleBalance with a randomiser of upstream's signature (cheap to compile); the official
randomiser of a robot (Go1) in tests/test_robots.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import playground_gym
from playground_gym import randomization

N = 4


def mass_scale(model, keys):
    """Scale every body's mass by U(0.5, 2), one draw per env."""
    scale = jax.vmap(lambda k: jax.random.uniform(k, (), minval=0.5, maxval=2.0))(keys)
    batched = model.tree_replace({"body_mass": scale[:, None] * model.body_mass})
    return batched, jax.tree.map(lambda _: None, model).tree_replace({"body_mass": 0})


def first_env_unchanged(model, keys):
    """Env 0 keeps its model; the others get 3x heavier bodies and 3x the joint damping."""
    scale = jnp.where(jnp.arange(keys.shape[0]) == 0, 1.0, 3.0)
    batched = model.tree_replace({"body_mass": scale[:, None] * model.body_mass,
                                  "dof_damping": scale[:, None] * model.dof_damping})
    return batched, jax.tree.map(lambda _: None, model).tree_replace({"body_mass": 0, "dof_damping": 0})


def make(**kwargs):
    kwargs = {"device": "cpu", "episode_length": 5, "action_repeat": 1, **kwargs}
    return playground_gym.make_vec("CartpoleBalance", N, **kwargs)


@pytest.fixture(scope="module")
def randomized():
    return make(domain_randomization=mass_scale)


@pytest.fixture(scope="module")
def redrawn():
    return make(domain_randomization=mass_scale, randomize_on_reset=True)


def masses(envs):
    return np.asarray(envs.model.body_mass)


def test_each_env_gets_its_own_model_drawn_from_the_seed(randomized):
    randomized.reset(seed=0)
    first = masses(randomized)
    base = np.asarray(randomized.mjx_env.mjx_model.body_mass)
    assert first.shape == (N, *base.shape)
    assert len({round(float(m), 6) for m in first[:, 1]}) == N  # four different models
    ratio = first[:, 1:] / base[1:]
    assert np.allclose(ratio, ratio[:, :1]) and ((ratio >= 0.5) & (ratio <= 2.0)).all()
    assert randomized.model.geom_friction.shape == randomized.mjx_env.mjx_model.geom_friction.shape  # not randomised
    randomized.reset(seed=0)
    assert np.array_equal(masses(randomized), first)  # same seed, same models
    randomized.reset(seed=1)
    assert not np.allclose(masses(randomized), first)  # another seed, others
    assert randomized.trace_counts["reset"] == 1  # three resets, one compile: the models are data


def test_the_physics_steps_each_env_with_its_own_model():
    plain = make()
    varied = make(domain_randomization=first_env_unchanged)
    obs_plain, _ = plain.reset(seed=3)
    obs_varied, _ = varied.reset(seed=3)
    assert torch.equal(obs_plain, obs_varied)  # the model draws do not touch the reset keys
    actions = torch.full((N, 1), 0.7)
    for _ in range(3):
        obs_plain = plain.step(actions)[0]
        obs_varied = varied.step(actions)[0]
    assert torch.equal(obs_plain[0], obs_varied[0])  # env 0 kept the env's own model
    assert not torch.allclose(obs_plain[1:], obs_varied[1:])  # the heavier, damped ones move differently


def test_models_drawn_once_stay_across_autoresets_and_compile_once(randomized):
    randomized.reset(seed=5)
    before = masses(randomized)
    for _ in range(12):  # two 5-step episodes end in every env
        *_, truncated, info = randomized.step(torch.full((N, 1), 0.3))
    assert np.array_equal(masses(randomized), before)
    assert randomized.trace_counts["step"] == 1


def test_randomize_on_reset_redraws_only_the_finished_envs_models(redrawn):
    redrawn.reset(seed=0)
    redrawn.set_elapsed_steps(np.array([4, 4, 0, 0]))  # envs 0 and 1 end at the next step
    before = masses(redrawn)
    *_, truncated, info = redrawn.step(torch.zeros(N, 1))
    assert truncated.tolist() == [True, True, False, False]
    after = masses(redrawn)
    assert not np.allclose(after[:2], before[:2], rtol=0, atol=0) and (after[:2] != before[:2]).any(axis=1).all()
    assert np.array_equal(after[2:], before[2:])
    seen = {round(float(m), 6) for m in after[:, 1]} | {round(float(m), 6) for m in before[:, 1]}
    for _ in range(20):  # four more episodes per env: new models keep coming
        redrawn.step(torch.zeros(N, 1))
        seen |= {round(float(m), 6) for m in masses(redrawn)[:, 1]}
    assert len(seen) >= 3 * N


def test_state_dict_carries_the_models_and_continues_exactly(redrawn):
    redrawn.reset(seed=7)
    for _ in range(3):
        redrawn.step(torch.zeros(N, 1))
    saved = redrawn.state_dict()
    twin = make(domain_randomization=mass_scale, randomize_on_reset=True)
    twin.load_state_dict(saved)
    assert np.array_equal(masses(twin), masses(redrawn))
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):  # across episode ends, where models are redrawn
        actions = 2 * torch.rand(N, 1, generator=gen) - 1
        a, b = redrawn.step(actions), twin.step(actions)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert np.array_equal(masses(twin), masses(redrawn))
    plain = make()
    with pytest.raises(ValueError, match="randomization"):
        plain.load_state_dict(saved)


def test_a_reset_that_keeps_the_models_gives_new_states_only(randomized):
    obs, _ = randomized.reset(seed=11)
    models = masses(randomized)
    obs_kept, _ = randomized.reset(seed=12, options={"keep_models": True})
    assert np.array_equal(masses(randomized), models) and not torch.equal(obs_kept, obs)
    redrawn, _ = randomized.reset(seed=12)
    assert not np.array_equal(masses(randomized), models)
    assert torch.equal(redrawn, obs_kept)  # the states are the seed's either way (the model draws have their own keys)
    plain = make()
    plain.reset(seed=0, options={"keep_models": True})  # nothing to keep: an ordinary reset
    with pytest.raises(ValueError, match="keep_models"):
        randomized.reset(options={"keep_models": 1})


def test_bad_settings_are_refused_naming_what_was_expected():
    with pytest.raises(ValueError, match=r"CartpoleBalance has no official domain randomiser; expected one of \[.*"
                                         r"Go1JoystickFlatTerrain"):
        make(domain_randomization=True)
    with pytest.raises(ValueError, match="randomize_on_reset=True: expected domain_randomization"):
        make(randomize_on_reset=True)
    with pytest.raises(ValueError, match="full_reset=True"):
        make(domain_randomization=mass_scale, randomize_on_reset=True, full_reset=False)
    with pytest.raises(TypeError, match="domain_randomization: expected a bool or a callable"):
        make(domain_randomization="official")

    def wrong_shape(model, keys):
        return model, jax.tree.map(lambda _: None, model).tree_replace({"body_mass": 0})

    with pytest.raises(ValueError, match=r"body_mass expected shape \(4, 3\)"):
        make(domain_randomization=wrong_shape).reset(seed=0)


def test_randomisers_that_would_be_silently_misapplied_are_refused():
    def shared_change(model, keys):  # gravity changed for every env but marked shared: upstream's vmap would apply it
        batched, in_axes = mass_scale(model, keys)
        return batched.tree_replace({"opt.gravity": batched.opt.gravity * 2}), in_axes

    def unmarked(model, keys):  # damping drawn per env but marked shared
        batched, in_axes = mass_scale(model, keys)
        damping = jax.vmap(lambda k: jax.random.uniform(k, model.dof_damping.shape))(keys)
        return batched.tree_replace({"dof_damping": damping}), in_axes

    def prefix_axes(model, keys):
        return mass_scale(model, keys)[0], 0

    def int_field(model, keys):  # masses as integers: a silent cast would truncate them
        batched, in_axes = mass_scale(model, keys)
        return batched.tree_replace({"body_mass": batched.body_mass.astype(jnp.int32)}), in_axes

    for randomizer, message in [(shared_change, r"\.opt\.gravity was changed but in_axes marks it None"),
                                (unmarked, r"dof_damping was changed but in_axes marks it None"),
                                (prefix_axes, "in_axes expected a Model"),
                                (int_field, "body_mass expected dtype float32")]:
        with pytest.raises(ValueError, match=message):
            make(domain_randomization=randomizer).reset(seed=0)


def test_a_state_of_another_randomiser_of_the_same_layout_is_refused():
    def damping(model, keys):
        scale = jax.vmap(lambda k: jax.random.uniform(k, (), minval=0.5, maxval=2.0))(keys)
        batched = model.tree_replace({"dof_damping": scale[:, None] * model.dof_damping})
        return batched, jax.tree.map(lambda _: None, model).tree_replace({"dof_damping": 0})

    def armature(model, keys):
        scale = jax.vmap(lambda k: jax.random.uniform(k, (), minval=0.5, maxval=2.0))(keys)
        batched = model.tree_replace({"dof_armature": scale[:, None] * model.dof_armature})
        return batched, jax.tree.map(lambda _: None, model).tree_replace({"dof_armature": 0})

    saved = make(domain_randomization=damping)
    saved.reset(seed=0)
    with pytest.raises(ValueError, match="randomizer"):
        make(domain_randomization=armature).load_state_dict(saved.state_dict())


def test_a_wrapped_env_steps_the_randomised_models():
    from mujoco_playground._src.wrapper import Wrapper

    from playground_gym.loading import load_env

    plain = playground_gym.make_vec(load_env("CartpoleBalance"), N, device="cpu", episode_length=5)
    wrapped = playground_gym.make_vec(Wrapper(load_env("CartpoleBalance")), N, device="cpu", episode_length=5,
                                      domain_randomization=first_env_unchanged)
    assert torch.equal(plain.reset(seed=3)[0], wrapped.reset(seed=3)[0])
    for _ in range(3):
        a, b = plain.step(torch.full((N, 1), 0.7))[0], wrapped.step(torch.full((N, 1), 0.7))[0]
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1:], b[1:])


def test_the_official_randomiser_table():
    envs = playground_gym.randomized_envs()
    assert "Go1JoystickFlatTerrain" in envs and "LeapCubeReorient" in envs and "CartpoleBalance" not in envs
    assert len(envs) == 14  # 11 locomotion and 3 manipulation tasks in Playground 0.2.0
    assert randomization.official_randomizer("CartpoleBalance") is None

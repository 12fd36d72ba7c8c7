"""torch/jax/numpy array modes, DLPack zero-copy, and gymnasium's own vector wrappers in numpy mode."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from gymnasium.wrappers import vector as vector_wrappers

from conftest import NUM_ENVS, SHORT
from playground_gym.interop import actions_to_jax


def test_numpy_mode_returns_writable_host_arrays(numpy_env):
    obs, info = numpy_env.reset(seed=0)
    assert isinstance(obs, np.ndarray) and obs.dtype == np.float32 and obs.flags.writeable
    obs, reward, terminated, truncated, info = numpy_env.step(np.zeros((NUM_ENVS, 1)))
    assert isinstance(reward, np.ndarray) and reward.dtype == np.float32
    assert terminated.dtype == np.bool_ and isinstance(info["final_obs"], np.ndarray)
    assert "episode" not in info  # episode_statistics=False leaves the key to gymnasium's wrapper


def test_jax_mode_returns_jax_arrays(jax_env):
    obs, _ = jax_env.reset(seed=0)
    assert isinstance(obs, jax.Array)
    obs, reward, terminated, truncated, info = jax_env.step(jax.numpy.zeros((NUM_ENVS, 1)))
    assert isinstance(reward, jax.Array) and isinstance(info["final_obs"], jax.Array)
    assert isinstance(info["episode"]["r"], jax.Array)


def test_modes_agree(short_env, numpy_env, jax_env):
    actions = [np.full((NUM_ENVS, 1), v, np.float32) for v in (0.3, -0.7, 0.1)]
    short_env.reset(seed=5), numpy_env.reset(seed=5), jax_env.reset(seed=5)
    for a in actions:
        t = short_env.step(torch.from_numpy(a))[0]
        n = numpy_env.step(a)[0]
        j = jax_env.step(jax.numpy.asarray(a))[0]
        np.testing.assert_array_equal(t.numpy(), n)
        np.testing.assert_array_equal(np.asarray(j), n)


def test_torch_actions_reach_jax_without_a_copy():
    cpu = jax.devices("cpu")[0]
    actions = torch.rand(NUM_ENVS, 3)
    handed = actions_to_jax(actions, (NUM_ENVS, 3), cpu)
    assert handed.ctypes.data == actions.data_ptr()  # a view of the tensor's memory...
    assert jax.device_put(handed, cpu).unsafe_buffer_pointer() == actions.data_ptr()  # ...which JAX uses as is
    non_contiguous = torch.rand(3, NUM_ENVS).T  # strided tensors must be made dense first
    np.testing.assert_array_equal(np.asarray(actions_to_jax(non_contiguous, (NUM_ENVS, 3), cpu)),
                                  non_contiguous.numpy())


def test_mixed_action_types_share_one_compilation(short_env):
    import jax.monitoring

    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: compiles.append(name) if "backend_compile" in name else None)
    batches = [np.zeros((NUM_ENVS, 1)), jax.numpy.zeros((NUM_ENVS, 1)),
               jax.device_put(np.zeros((NUM_ENVS, 1)), jax.devices("cpu")[0]),
               torch.zeros(NUM_ENVS, 1, dtype=torch.float64)]
    short_env.reset(seed=0)
    short_env.step(torch.zeros(NUM_ENVS, 1))
    compiles.clear()  # whatever making the batches and the fixture's first use compiled
    for actions in batches:
        short_env.step(actions)
    assert compiles == [] and short_env.trace_counts["step"] == 1


def test_torch_outputs_share_jax_buffers():
    from playground_gym.interop import export

    x = jax.numpy.arange(12.0).reshape(3, 4)
    tensors = export({"a": x, "b": [x]}, "torch")
    assert tensors["a"].data_ptr() == x.unsafe_buffer_pointer() == tensors["b"][0].data_ptr()


def test_other_action_dtypes_are_converted(numpy_env):
    numpy_env.reset(seed=0)
    numpy_env.step(np.zeros((NUM_ENVS, 1), dtype=np.int64))
    numpy_env.step([[0.0]] * NUM_ENVS)
    numpy_env.step(torch.zeros(NUM_ENVS, 1, dtype=torch.float64))


def test_gymnasium_vector_wrappers_work_in_numpy_mode(numpy_env):
    envs = vector_wrappers.RecordEpisodeStatistics(numpy_env)
    envs = vector_wrappers.NormalizeReward(envs)
    envs = vector_wrappers.ClipAction(envs)
    envs.reset(seed=0)
    for _ in range(SHORT):
        obs, reward, terminated, truncated, info = envs.step(np.full((NUM_ENVS, 1), 3.0))
    stats = envs.env.env  # RecordEpisodeStatistics
    assert "episode" in info and info["_episode"].all()
    np.testing.assert_array_equal(info["episode"]["l"], np.full(NUM_ENVS, SHORT))
    assert len(stats.return_queue) == NUM_ENVS and all(np.isfinite(stats.return_queue))
    # the next episode starts counting at once (SAME_STEP autoreset)
    envs.step(np.zeros((NUM_ENVS, 1)))
    assert (stats.episode_lengths == 1).all()


def test_render_draws_the_current_state_of_chosen_envs():
    import playground_gym

    envs = playground_gym.make_vec("CartpoleBalance", 2, device="cpu", render_mode="rgb_array", episode_length=SHORT)
    envs.reset(seed=0)
    envs.render_env_ids = (0, 1)
    before = envs.render()
    assert len(before) == 2 and before[0].shape == (240, 320, 3) and before[0].dtype == np.uint8
    assert before[0].std() > 0  # a picture, not a blank frame
    for _ in range(3):
        envs.step(torch.ones(2, 1))
    after = envs.render()
    assert not np.array_equal(before[0], after[0])  # the cart moved
    assert envs.env_state().data.qpos.shape == (2, 2)
    envs.close()


def test_packed_outputs_round_trip_as_separate_contiguous_views():
    """A step's outputs travel as one byte buffer (BytePacker); the host gets typed views, one region each."""
    from playground_gym.autoreset import BytePacker
    from playground_gym.interop import export_packed

    tree = {"obs": jax.numpy.arange(12.0).reshape(4, 3), "done": jax.numpy.array([True, False, True, False]),
            "length": jax.numpy.array([1, 2, 3, 4], jax.numpy.int32), "scalar": jax.numpy.float32(2.5),
            "nested": [jax.numpy.full((4, 2, 2), -1.0), jax.numpy.array([7, 8, 9, 10], jax.numpy.int32)]}
    packer = BytePacker(tree)
    packed = jax.jit(packer.pack)(tree)
    # the 4-byte leaves (12 + 4 + 1 + 16 + 4 elements), then the 4 bools
    assert packed.dtype == np.uint8 and packed.shape == (packer.nbytes,) == (4 * (12 + 4 + 1 + 16 + 4) + 4,)
    for array_type in ("torch", "numpy"):
        out = export_packed(jax.jit(packer.pack)(tree), packer, array_type)  # torch views alias their buffer
        for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(tree)):
            got = got.numpy() if array_type == "torch" else got
            assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
            np.testing.assert_array_equal(got, np.asarray(want))
        out["obs"][:] = 99  # writing into one leaf leaves every other leaf as it was
        np.testing.assert_array_equal(np.asarray(out["length"]), [1, 2, 3, 4])
        assert bool(out["done"][0]) and float(out["scalar"]) == 2.5
    with pytest.raises(ValueError, match="'torch' or 'numpy'.*got 'jax'"):
        export_packed(packed, packer, "jax")


def test_torch_step_outputs_are_views_of_one_buffer(short_env):
    short_env.reset(seed=0)
    obs, reward, terminated, truncated, info = short_env.step(torch.zeros(NUM_ENVS, 1))
    tensors = [obs, reward, terminated, truncated, info["final_obs"], info["episode"]["r"], info["episode"]["l"]]
    assert len({t.untyped_storage().data_ptr() for t in tensors}) == 1  # one export per step, not seven
    tensors += [info["_final_obs"], info["_episode"]]  # the done mask twice: two regions of the buffer, so
    assert len({t.untyped_storage().data_ptr() for t in tensors}) == 1  # clearing one never clears the other
    assert info["_final_obs"].data_ptr() != info["_episode"].data_ptr()
    assert all(t.is_contiguous() for t in tensors)
    assert (obs.dtype, reward.dtype, terminated.dtype, info["episode"]["l"].dtype) == (
        torch.float32, torch.float32, torch.bool, torch.int32)

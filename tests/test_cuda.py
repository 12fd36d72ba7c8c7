"""CUDA paths: device placement, zero-copy DLPack both ways, torch's stream respected, no host sync.

Skipped (with the reason shown by ``-ra``) on machines without a CUDA GPU that both torch and JAX see; the GPU kit
(``benchmarks/gpu/run.sh``) runs this file on a lent GPU. Written for one GPU, ``cuda:0``.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

import playground_gym
from playground_gym import backend, interop, loading


def _jax_gpus() -> list:
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and _jax_gpus()),
                                reason="needs a CUDA GPU seen by both torch and JAX (the GPU kit runs these)")

NUM_ENVS = 64
CUDA0 = torch.device("cuda", 0)


@contextlib.contextmanager
def sync_debug_error():
    """Every synchronising CUDA call torch makes inside the block raises (torch's own host-sync detector)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.fixture(scope="module")
def cuda_env():
    return playground_gym.make_vec("CartpoleBalance", NUM_ENVS, device="cuda:0", episode_length=20)


@pytest.fixture(scope="module")
def cuda_jax_env():
    """The torch env's twin returning JAX arrays: same seed, same results."""
    return playground_gym.make_vec("CartpoleBalance", NUM_ENVS, device="cuda:0", episode_length=20,
                                   array_type="jax")


def _tensors(tree):
    return [x for x in jax.tree.leaves(tree) if isinstance(x, torch.Tensor)]


def test_every_returned_tensor_is_on_the_gpu(cuda_env):
    obs, info = cuda_env.reset(seed=0)
    assert obs.device == CUDA0
    actions = torch.zeros(cuda_env.action_space.shape, device=CUDA0)
    for _ in range(20):  # to the end of the first episodes: final_obs and episode statistics are filled
        out = cuda_env.step(actions)
    tensors = _tensors(out)
    assert len(tensors) >= 8 and {t.device for t in tensors} == {CUDA0}
    assert bool(out[3].all()) and torch.isfinite(out[4]["final_obs"]).all()
    assert bool((out[4]["episode"]["l"] == 20).all())


def test_outputs_are_zero_copy_views_of_the_jax_result(cuda_env, monkeypatch):
    cuda_env.reset(seed=0)
    captured = {}
    step = cuda_env._step_jit

    def capture(*args):
        carry, packed = step(*args)
        captured["packed"] = packed
        return carry, packed

    monkeypatch.setattr(cuda_env, "_step_jit", capture)
    obs = cuda_env.step(torch.zeros(cuda_env.action_space.shape, device=CUDA0))[0]
    packed = captured["packed"]
    assert list(packed.devices())[0].platform == "gpu"
    base = packed.unsafe_buffer_pointer()
    assert base <= obs.data_ptr() < base + packed.nbytes  # a view into JAX's buffer, not a copy


def test_actions_reach_jax_without_a_copy():
    device = backend.resolve_device("cuda:0")
    actions = torch.randn(NUM_ENVS, 1, device=CUDA0)
    as_jax = interop.actions_to_jax(actions, (NUM_ENVS, 1), device)
    assert as_jax.devices() == {device}
    assert as_jax.unsafe_buffer_pointer() == actions.data_ptr()
    np.testing.assert_array_equal(np.asarray(as_jax), actions.cpu().numpy())


def test_results_match_the_jax_twin(cuda_env, cuda_jax_env):
    cuda_env.reset(seed=3)
    cuda_jax_env.reset(seed=3)
    gen = torch.Generator(device=CUDA0).manual_seed(0)
    for _ in range(12):
        actions = 2 * torch.rand(cuda_env.action_space.shape, device=CUDA0, generator=gen) - 1
        obs, reward, *_ = cuda_env.step(actions)
        jobs, jreward, *_ = cuda_jax_env.step(jax.dlpack.from_dlpack(actions.clone()))
    # the packed (torch) and plain (jax) steps are two XLA programs: GPU fusions may round differently
    np.testing.assert_allclose(obs.cpu().numpy(), np.asarray(jobs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reward.cpu().numpy(), np.asarray(jreward), rtol=1e-5, atol=1e-5)


def test_torch_side_stream_is_respected(cuda_env, cuda_jax_env):
    """Actions written by a long kernel on a side stream are read only once it finishes, and outputs are read
    on that stream only once JAX's step has written them (DLPack's stream hand-shake, both ways)."""
    cuda_env.reset(seed=5)
    cuda_jax_env.reset(seed=5)
    side = torch.cuda.Stream()
    big = torch.randn(4096, 4096, device=CUDA0)
    target = torch.linspace(-1, 1, NUM_ENVS, device=CUDA0).reshape(NUM_ENVS, 1)
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        slow_zero = (big @ big @ big).sum() * 0.0  # tens of ms of work on the side stream, then exactly 0
        actions = target + slow_zero
        obs, reward, *_ = cuda_env.step(actions)
        seen = obs.clone()  # read on the side stream, right away
    torch.cuda.synchronize()
    jobs, jreward, *_ = cuda_jax_env.step(jax.dlpack.from_dlpack(target.clone()))
    np.testing.assert_allclose(seen.cpu().numpy(), np.asarray(jobs), rtol=1e-5, atol=1e-5)
    assert not torch.equal(seen, torch.zeros_like(seen))  # read after the step wrote it, not before


def test_a_step_loop_never_syncs_the_host(cuda_env):
    obs, _ = cuda_env.reset(seed=0)
    weights = torch.randn(obs.shape[1], cuda_env.action_space.shape[1], device=CUDA0)
    returns = torch.zeros(NUM_ENVS, device=CUDA0)
    with sync_debug_error():
        for _ in range(50):
            obs, reward, terminated, truncated, info = cuda_env.step(torch.tanh(obs @ weights))
            returns += reward
            returns = torch.where(terminated | truncated, torch.zeros_like(returns), returns)
    assert torch.isfinite(returns).all()


def test_the_sync_detector_works():
    with pytest.raises(RuntimeError), sync_debug_error():
        torch.ones(2, device=CUDA0).sum().item()


def test_device_specs_map_to_the_same_gpu():
    gpu0 = _jax_gpus()[0]
    for spec in ("cuda", "cuda:0", "gpu", CUDA0, torch.device("cuda"), gpu0):
        assert backend.resolve_device(spec) == gpu0
    assert backend.torch_device_of(gpu0) == CUDA0
    assert backend.resolve_device(None) == gpu0  # a GPU is preferred when there is one
    with pytest.raises(ValueError, match="GPU 99"):
        backend.resolve_device("cuda:99")


def test_cpu_actions_on_a_gpu_env_are_moved_and_bad_ones_rejected(cuda_env):
    cuda_env.reset(seed=0)
    obs = cuda_env.step(np.zeros(cuda_env.action_space.shape, np.float32))[0]
    assert obs.device == CUDA0
    obs = cuda_env.step(torch.zeros(cuda_env.action_space.shape))[0]  # a CPU tensor
    assert obs.device == CUDA0
    with pytest.raises(ValueError, match=r"expected shape \(64, 1\)"):
        cuda_env.step(torch.zeros(NUM_ENVS, 2, device=CUDA0))


def test_jax_leaves_the_gpu_memory_to_torch(cuda_env):
    free, total = torch.cuda.mem_get_info()
    assert free > 0.5 * total, f"JAX took {1 - free / total:.0%} of the GPU (preallocation should be off)"


def test_auto_impl_without_warp_is_jax_with_a_notice():
    if loading.warp_available():
        assert loading.resolve_impl("auto", "gpu") == "warp"
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert loading.resolve_impl("auto", "gpu") == "jax"
    assert any("warp-lang is not installed" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="warp-lang"):
        loading.resolve_impl("warp", "gpu")


# -- the trainers on CUDA: rollout and update under torch's host-sync detector (the kit's step 2) ------------

sys.path.insert(0, str(Path(__file__).parent))
from trainer_harness import TINY, TINY_MULTIUNROLL, load_trainer  # noqa: E402


def _under_sync_detector(fn, calls):
    def wrapper(*args, **kwargs):
        calls.append(fn.__name__)
        with sync_debug_error():
            return fn(*args, **kwargs)
    return wrapper


@pytest.mark.parametrize("name, argv", [
    ("ppo_continuous", TINY), ("ppo_tanh", [*TINY, "--target-kl", "0.001"]), ("ppo_multiunroll", TINY_MULTIUNROLL)])
def test_trainer_rollout_and_update_never_sync_on_cuda(name, argv, tmp_path, monkeypatch):
    trainer = load_trainer(name)
    calls = []
    monkeypatch.setattr(trainer, "rollout", _under_sync_detector(trainer.rollout, calls))
    monkeypatch.setattr(trainer, "update", _under_sync_detector(trainer.update, calls))
    summary = trainer.main([*argv, "--device", "cuda", "--total-timesteps", "2048", "--runs-dir", str(tmp_path)])
    assert calls.count("rollout") == calls.count("update") >= 2
    assert summary["env_steps"] == 2048 and summary["env_trace_counts"] == {"reset": 1, "step": 1}

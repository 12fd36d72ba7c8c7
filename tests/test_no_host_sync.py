"""The rollout and the SGD loop of every trainer never wait for the device.

On CUDA, `torch.cuda.set_sync_debug_mode("error")` proves it (the GPU kit runs that). On this CPU a narrower check
runs each trainer in-process with its `rollout` and `update` wrapped so that, while they run, the usual paths from a
tensor to the host raise (not every op that can wait on a GPU): `.item()`, `.tolist()`, `.numpy()`, `.cpu()`,
`bool()`/`float()`/`int()`/indexing with a tensor, printing, and boolean-mask indexing (a data-dependent shape), plus
torch functions that wait for the GPU inside ATen: `torch.normal` with a tensor std (it checks std >= 0 on the host: `Normal.sample()` takes that path) and
the ops whose result's shape depends on the data (`nonzero`, `masked_select`, `unique`). The one exception is
playground_gym's own action hand-over on CPU (interop.py passes a numpy *view* of the action tensor to JAX; on CUDA it
uses DLPack instead).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trainer_harness import TINY, TINY_MULTIUNROLL, load_trainer

HOST_PATHS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "__array__",
              "__format__", "__repr__")
ALLOWED_CALLERS = (str(Path(__file__).resolve().parents[1] / "playground_gym" / "interop.py"),)
# ATen ops that synchronise on CUDA: a data-dependent output shape, or (normal) a host-side check of a tensor argument
DATA_SHAPED = ("nonzero", "masked_select", "unique")


@contextlib.contextmanager
def no_host_sync(log: list[str]):
    """Make every tensor-to-host path raise while the block runs (except from ALLOWED_CALLERS)."""
    originals = {name: getattr(torch.Tensor, name) for name in HOST_PATHS + ("__getitem__",)}

    def guard(name):
        def guarded(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller not in ALLOWED_CALLERS:
                log.append(f"Tensor.{name} from {caller}:{sys._getframe(1).f_lineno}")
                raise AssertionError(f"host sync: Tensor.{name} called from {caller}:{sys._getframe(1).f_lineno}")
            return originals[name](self, *args, **kwargs)
        return guarded

    def getitem(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in parts):
            log.append("boolean-mask indexing")
            raise AssertionError("host sync: boolean-mask indexing (its result's shape depends on the data)")
        return originals["__getitem__"](self, index)

    def refuse(what):
        log.append(what)
        raise AssertionError(f"host sync on CUDA: {what}")

    def data_shaped(name):
        def guarded(*args, **kwargs):
            refuse(f"torch.{name} (its result's shape depends on the data)")
        return guarded

    def normal(mean, std=1.0, *args, **kwargs):
        if isinstance(std, torch.Tensor):
            refuse("torch.normal with a tensor std (Normal.sample(); rsample() does not check on the host)")
        return torch_originals["normal"](mean, std, *args, **kwargs)

    torch_originals = {name: getattr(torch, name) for name in DATA_SHAPED + ("normal",)}
    originals.update({name: getattr(torch.Tensor, name) for name in DATA_SHAPED})
    try:
        for name in HOST_PATHS:
            setattr(torch.Tensor, name, guard(name))
        torch.Tensor.__getitem__ = getitem
        for name in DATA_SHAPED:
            setattr(torch, name, data_shaped(name))
            setattr(torch.Tensor, name, data_shaped(name))
        torch.normal = normal
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
        for name, original in torch_originals.items():
            setattr(torch, name, original)


def guarded(fn, calls, log):
    def wrapper(*args, **kwargs):
        calls.append(fn.__name__)
        with no_host_sync(log):
            return fn(*args, **kwargs)
    return wrapper


@pytest.mark.parametrize("name, argv", [
    ("ppo_continuous", TINY), ("ppo_tanh", [*TINY, "--target-kl", "0.001"]), ("ppo_multiunroll", TINY_MULTIUNROLL)])
def test_rollout_and_update_never_read_the_device(name, argv, tmp_path, monkeypatch):
    trainer = load_trainer(name)
    calls, log = [], []
    monkeypatch.setattr(trainer, "rollout", guarded(trainer.rollout, calls, log))
    monkeypatch.setattr(trainer, "update", guarded(trainer.update, calls, log))
    argv = [*argv, "--total-timesteps", "2048", "--no-pin-jax-cpu", "--runs-dir", str(tmp_path)]
    summary = trainer.main(argv)
    assert log == [] and calls.count("rollout") == calls.count("update") >= 2
    assert summary["env_steps"] == 2048 and summary["env_trace_counts"] == {"reset": 1, "step": 1}


def test_the_guard_catches_a_sync():
    log = []
    with pytest.raises(AssertionError, match="Tensor.item"), no_host_sync(log):
        torch.ones(2).sum().item()
    with pytest.raises(AssertionError, match="boolean-mask"), no_host_sync(log):
        torch.arange(3)[torch.tensor([True, False, True])]
    with pytest.raises(AssertionError, match="torch.normal with a tensor std"), no_host_sync(log):
        torch.distributions.Normal(torch.zeros(3), torch.ones(3), validate_args=False).sample()
    with pytest.raises(AssertionError, match="torch.nonzero"), no_host_sync(log):
        torch.arange(3).nonzero()
    with no_host_sync(log):  # the reparametrised draw and a scalar std stay on the device
        torch.distributions.Normal(torch.zeros(3), torch.ones(3), validate_args=False).rsample()
        torch.normal(torch.zeros(3), 1.0)
    assert torch.ones(1).item() == 1.0 and len(log) == 4  # restored afterwards
    assert torch.arange(3).nonzero().shape == (2, 1) and torch.normal(torch.zeros(2), torch.ones(2)).shape == (2,)


def test_non_finite_gradient_steps_are_skipped_on_the_device():
    ppo = load_trainer("ppo_continuous")
    torch.manual_seed(0)
    agent = ppo.Agent(5, 2, (8,), (8,))
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-2, fused=True)
    args = ppo.Args(update_epochs=2, num_minibatches=4, gamma=0.99, episode_length=10, action_repeat=1)
    n = 32
    b = SimpleNamespace(obs=torch.randn(n, 5), actions=torch.randn(n, 2), logprobs=torch.randn(n) - 3,
                        critic_obs=torch.randn(n, 5),
                        advantages=torch.randn(n), targets=torch.randn(n), old_values=torch.randn(n))
    b.advantages[3] = float("nan")  # poisons the minibatch that holds it, in each epoch
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    skipped, log = torch.zeros(()), []
    with no_host_sync(log):
        ppo.update(agent, optimizer, b, args, skipped)
    assert skipped.item() == 2  # one poisoned minibatch per epoch
    assert all(torch.isfinite(v).all() for v in agent.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in agent.state_dict().items())  # the other steps were applied
    assert optimizer.state[agent.actor_logstd]["step"].item() == 2 * 4 - 2

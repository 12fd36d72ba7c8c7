"""Data-parallel training across processes started by ``torchrun``: one process (rank) per device.

Each rank steps its own envs on its own device and computes gradients on its own data; the ranks then agree on
everything that shapes the next update, as Brax's ``pmap`` trainer does:

- gradients are averaged with one flat ``all_reduce`` per SGD step (:func:`all_reduce_gradients`);
- normaliser statistics are merged exactly (:func:`merge_moments`: Chan et al.'s parallel merge of count, mean and
  M2 over all ranks), so every rank normalises with the statistics of the concatenated batches;
- scalars that gate an update (e.g. an approximate KL for early stopping) are averaged (:func:`all_mean`);
- parameters can be checked to be identical on every rank (:func:`check_replicated`, Brax's
  ``assert_is_replicated``).

A process that was not started by ``torchrun`` (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``) never initialises
``torch.distributed``; every function here is then a no-op that returns its input, so single-process runs are
unchanged and pay nothing.

Examples:
    >>> import torch
    >>> from playground_gym import distributed
    >>> world = distributed.World.from_environment({})  # what a plain `python train.py` sees
    >>> world.size, world.rank, world.is_main, world.active
    (1, 0, True, False)
    >>> distributed.merge_moments(4, torch.tensor([1.0]), torch.tensor([2.0]))  # one process: unchanged
    (4, tensor([1.]), tensor([2.]))
"""

from __future__ import annotations

import datetime
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistributedError", "World", "active", "all_mean", "all_reduce_gradients", "broadcast_parameters",
           "check_replicated", "init_world", "merge_moments", "rank_device"]


class DistributedError(RuntimeError):
    """The ranks of a distributed run disagree (e.g. their parameters differ), or a collective failed."""


@dataclass(frozen=True)
class World:
    """Where this process stands in a ``torchrun`` launch: its global ``rank``, its ``local_rank`` on this node
    and the number of processes (``size``)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that evaluates and writes TensorBoard, checkpoints and summary.json."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> World:
        """The world that torchrun's variables (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) describe.

        Raises:
            DistributedError: a variable is not an integer, or the rank is outside the world.
        """
        environ = os.environ if environ is None else environ
        try:
            size = int(environ.get("WORLD_SIZE", "1"))
            rank = int(environ.get("RANK", "0"))
            local_rank = int(environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise DistributedError("WORLD_SIZE, RANK and LOCAL_RANK: expected integers (torchrun sets them); got "
                                   f"{[environ.get(k) for k in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK')]}") from None
        if size < 1 or not 0 <= rank < size or local_rank < 0:
            raise DistributedError(f"expected WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE; got WORLD_SIZE={size}, "
                                   f"RANK={rank}, LOCAL_RANK={local_rank}")
        return cls(rank, local_rank, size)


def rank_device(device: str | None, world: World, has_gpu: bool) -> str | None:
    """The device of this rank's envs and networks: ``cuda:LOCAL_RANK`` for a GPU run, ``cpu`` for a CPU one.

    Args:
        device: the run's ``--device`` (``None``, ``"cpu"``, ``"cuda"``/``"gpu"``; a fixed ``"cuda:N"`` is refused
            in a distributed run, where every rank would otherwise use the same GPU).
        world: this process's :class:`World`; a single process keeps ``device`` as given.
        has_gpu: whether JAX sees a GPU (decides ``None``).

    Raises:
        ValueError: ``cuda:N`` in a distributed run.
    """
    if not world.active:
        return device
    spec = device.strip().lower() if device is not None else None
    if spec == "cpu" or (spec is None and not has_gpu):
        return "cpu"
    if spec in (None, "cuda", "gpu"):
        return f"cuda:{world.local_rank}"
    raise ValueError(f"--device: a distributed run puts rank r on cuda:LOCAL_RANK; expected cpu, cuda or none, "
                     f"got {device!r}")


def init_world(device: str | None, timeout_s: float, world: World | None = None) -> World:
    """Join the process group of a torchrun launch (gloo on CPU, NCCL on CUDA); a single process joins nothing.

    ``timeout_s`` bounds every collective: a rank that died or hangs makes the others fail after it (with gloo, a
    dead peer's closed connection fails them at once) instead of blocking forever.

    Raises:
        DistributedError: the group cannot be formed within ``timeout_s``.
    """
    world = World.from_environment() if world is None else world
    if not world.active or (dist.is_available() and dist.is_initialized()):
        return world
    on_cuda = device is not None and device.startswith("cuda")
    if on_cuda:
        torch.cuda.set_device(int(device.partition(":")[2] or 0))
    try:
        dist.init_process_group("nccl" if on_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"rank {world.rank}: could not join the process group of {world.size} ranks "
                               f"within {timeout_s:g} s: {e}") from e
    return world


def active() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_gradients(parameters: Iterable[torch.Tensor]) -> None:
    """Replace every gradient by its mean over the ranks: one ``all_reduce`` of one flat buffer (no per-parameter
    collectives). Call between ``backward()`` and any clipping, so that clipping sees the averaged gradient, as
    Brax's ``pmean`` before its optimizer does. A non-finite gradient on any rank makes the mean non-finite on
    every rank, so every rank skips that SGD step together."""
    if not active():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for g, mean in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(mean.view_as(g))


def all_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the ranks (a new tensor; ``value`` itself in one process)."""
    if not active():
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def merge_moments(count: Any, mean: torch.Tensor, var: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The count, mean and (population) variance of the concatenation of every rank's batch, from each rank's own
    (Chan et al.'s parallel merge of count, mean and M2 = var * count). Every rank merges the same gathered values
    in the same order, so all get bit-identical statistics. One process: the inputs, unchanged.

    Example (two ranks, batches [1, 3] and [5]): counts 2 and 1, means 2 and 5, variances 1 and 0 merge to count 3,
    mean 3 and variance 8/3, the statistics of [1, 3, 5].
    """
    if not active():
        return count, mean, var
    count = torch.as_tensor(count, dtype=torch.float64, device=mean.device).reshape(1)
    packed = torch.cat([count, mean.reshape(-1).to(torch.float64), var.reshape(-1).to(torch.float64)])
    gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, packed)
    stacked = torch.stack(gathered)  # (world, 1 + 2 * size)
    size = mean.numel()
    counts, means, variances = stacked[:, :1], stacked[:, 1:1 + size], stacked[:, 1 + size:]
    total = counts.sum()
    merged_mean = (counts * means).sum(0) / total
    m2 = (counts * variances).sum(0) + (counts * (means - merged_mean).square()).sum(0)
    return total, merged_mean.reshape(mean.shape).to(mean.dtype), (m2 / total).reshape(var.shape).to(var.dtype)


def broadcast_parameters(modules: Iterable[torch.nn.Module]) -> None:
    """Copy rank 0's parameters and buffers to every rank (the start of a fresh run; DDP does the same)."""
    if not active():
        return
    for module in modules:
        for tensor in module.state_dict().values():
            if isinstance(tensor, torch.Tensor):
                dist.broadcast(tensor, src=0)


def _checksum(modules: Iterable[torch.nn.Module]) -> int:
    crc = 0
    for module in modules:
        for name, tensor in module.state_dict().items():
            if isinstance(tensor, torch.Tensor):
                crc = zlib.crc32(name.encode(), crc)
                data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # 0-dim buffers too
                crc = zlib.crc32(data.numpy().tobytes(), crc)
    return crc


def check_replicated(modules: Iterable[torch.nn.Module], where: str) -> int:
    """Check that every rank holds bit-identical parameters and buffers (a CRC-32 of their bytes, all-gathered).

    Returns the checksum. One process: just the checksum.

    Raises:
        DistributedError: the checksums differ; the message names the ranks that differ from rank 0.
    """
    checksum = _checksum(modules)
    if not active():
        return checksum
    sums: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(sums, checksum)
    differ = [rank for rank, value in enumerate(sums) if value != sums[0]]
    if differ:
        raise DistributedError(f"{where}: the parameters of ranks {differ} differ from rank 0's (CRC-32 per rank: "
                               f"{[f'{s:08x}' for s in sums]}); the ranks no longer train one model")
    return checksum

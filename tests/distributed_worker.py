"""One rank of tests/test_distributed.py's checks of the sync functions: `torchrun --standalone --nproc-per-node 2
tests/distributed_worker.py OUT_DIR`. Each rank computes on its own shard of one batch what a single process computes
on the whole batch, and writes what it found to OUT_DIR/rank<r>.json (no JAX: these start in seconds)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from playground_gym import distributed
from playground_gym.experiment import RunningMeanStd


def main(out: Path) -> None:
    world = distributed.init_world("cpu", timeout_s=60)
    rank, size = world.rank, world.size
    results: dict[str, object] = {"rank": rank, "active": distributed.active()}

    # Gradients: the mean of the ranks' gradients on their shards equals the single-process gradient on all the data.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x, y = torch.randn(8 * size, 3), torch.randn(8 * size, 2)
    loss = ((model(x) - y) ** 2).mean()
    reference = torch.autograd.grad(loss, list(model.parameters()))
    shard = slice(8 * rank, 8 * (rank + 1))
    model.zero_grad()
    ((model(x[shard]) - y[shard]) ** 2).mean().backward()
    local = [p.grad.clone() for p in model.parameters()]
    distributed.all_reduce_gradients(model.parameters())
    results["grads_match_single_process"] = all(torch.allclose(p.grad, r, atol=1e-6)
                                                for p, r in zip(model.parameters(), reference))
    results["grads_changed"] = any(not torch.equal(p.grad, g) for p, g in zip(model.parameters(), local))

    # Normaliser statistics: unequal shards (7 and 13 rows on 2 ranks), merged = the statistics of the concatenation.
    data = torch.randn(40, 3, dtype=torch.float64) * 3 + 1
    bounds = [0, 3, 8, 20, 40][: size + 1]
    first, second = data[:20], data[20:]
    rms = RunningMeanStd((3,))
    for batch in (first, second):  # two updates, each from all ranks' shards
        cut = [int(b * len(batch) / bounds[-1]) for b in bounds]
        rms.update(batch[cut[rank]:cut[rank + 1]])
    results["rms_matches_concatenated"] = bool(torch.allclose(rms.mean, data.mean(0)) and rms.count == len(data) and
                                               torch.allclose(rms.var, data.var(0, unbiased=False)))
    results["rms_mean"] = rms.mean.tolist()
    results["rms_var"] = rms.var.tolist()
    bad = data[:4].clone()
    if rank == 1:
        bad[0, 0] = float("nan")
    before = rms.mean.clone()
    rms.update(bad)
    results["nonfinite_batch_skipped_everywhere"] = bool(torch.equal(rms.mean, before))

    # all_mean, and the replication check: equal parameters pass, one rank's change is named.
    results["all_mean"] = distributed.all_mean(torch.tensor(float(rank))).item()
    distributed.check_replicated([model, rms], "equal")  # rms: 0-dim buffers (count) too
    if rank == 1:
        with torch.no_grad():
            model[0].bias[0] += 1.0
    try:
        distributed.check_replicated([model], "after a change on rank 1")
        results["mismatch_error"] = None
    except distributed.DistributedError as e:
        results["mismatch_error"] = str(e)
    (out / f"rank{rank}.json").write_text(json.dumps(results))
    torch.distributed.destroy_process_group()


def hang(out: Path, timeout_s: float) -> None:
    """Rank 1 hangs (sleeps past the timeout) before a collective; rank 0's all_reduce must fail after the timeout."""
    world = distributed.init_world("cpu", timeout_s=timeout_s)
    if world.rank == 1:
        time.sleep(3 * timeout_s)
        return
    start = time.time()
    try:
        distributed.all_mean(torch.ones(3))
        error = None
    except RuntimeError as e:  # gloo's timeout (a DistError subclass in recent torch)
        error = f"{type(e).__name__}: {e}"
    (out / "hang.json").write_text(json.dumps({"error": error, "waited": time.time() - start}))
    os._exit(0)  # the process group cannot be shut down cleanly while the peer sleeps


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "hang":
        hang(Path(sys.argv[1]), float(sys.argv[3]))
    else:
        main(Path(sys.argv[1]))

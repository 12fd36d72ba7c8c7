"""What an untaken ``lax.cond`` branch costs each call of a jitted function on JAX's CPU backend.

A conditional runs one branch, but XLA's CPU runtime pays, on every execution of the program, for the buffer
allocations of every computation in it, the branch not taken included (its constants, and the scalar parameters
of each reduction's reducer). The vector env's step with fresh initial states holds the pool's refill, a batched
reset, in a branch that runs once per ``num_envs`` episode ends: its allocations are paid on every step, where no
env ends too. This script shows the mechanism on a small synthetic program: ``x * 2 + 1`` with a conditional whose
untaken branch holds ``k`` distinct constants and reductions, timed per call (JAX pinned to one CPU, synchronous
dispatch, as the trainers run it; interleaved rounds, medians) against the program without it, with the number of
buffer allocations XLA assigned (read from its buffer-assignment dump, taken in a child process: dumping slows every
call).

    python benchmarks/branch_cost.py --branch-sizes 0 10 50 150 --json docs/benchmarks/throughput/branch_cost.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from env_throughput import _cpu_model, _git_commit  # noqa: E402

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--branch-sizes", type=int, nargs="+", default=[0, 10, 50, 150],
                        help="constants and reductions in the untaken branch (0: no conditional)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000, help="calls per contender and round")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--allocations-only", action="store_true", help=argparse.SUPPRESS)  # the child
    args = parser.parse_args(argv)
    if args.allocations_only:
        dump = tempfile.mkdtemp(prefix="branch_cost_")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump}"
                                   " --xla_dump_hlo_module_re=.*branch_cost.*")
    else:  # XLA's buffer assignment, dumped by a child (dumping slows every call: ~15 us here)
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--allocations-only", "--branch-sizes",
                                *map(str, args.branch_sizes)], capture_output=True, text=True, check=True)
        allocations = {int(k): v for k, v in json.loads(child.stdout.strip().splitlines()[-1]).items()}
    # before JAX starts: its CPU client on one CPU
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    jax.config.update("jax_enable_compilation_cache", False)  # compile here, so the dump holds every program
    rng = np.random.default_rng(0)
    constants = [jnp.asarray(rng.normal(size=(4, 16)).astype(np.float32)) for _ in range(max(args.branch_sizes))]

    def branch(y: jax.Array, k: int) -> jax.Array:
        for c in constants[:k]:
            y = y * c + 1.0
            y = jnp.where(jnp.sum(y) > 0, y, -y)
        return y

    def make(k: int):  # noqa: ANN202
        def branch_cost(x: jax.Array, p: jax.Array) -> jax.Array:
            if k == 0:
                return x * 2 + 1
            return jax.lax.cond(p, lambda y: branch(y, k), lambda y: y, x * 2) + 1
        branch_cost.__name__ = f"branch_cost_{k}"
        return jax.jit(branch_cost)

    fns = {k: make(k) for k in args.branch_sizes}
    x, p = jnp.ones((4, 16)), jnp.bool_(False)
    for f in fns.values():
        jax.block_until_ready(f(x, p))
    if args.allocations_only:
        counts = {}
        for k in fns:
            files = glob.glob(os.path.join(dump, f"*jit_branch_cost_{k}.*buffer-assignment.txt"))
            counts[k] = sum(line.startswith("allocation ") for line in open(files[0])) if files else None
        print(json.dumps(counts))
        return
    us: dict[int, list[float]] = {k: [] for k in fns}
    for r in range(args.rounds):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            start = time.perf_counter()
            for _ in range(args.calls):
                y = fns[k](x, p)
            jax.block_until_ready(y)
            us[k].append(1e6 * (time.perf_counter() - start) / args.calls)
    meta = {"date": time.strftime("%Y-%m-%d"), "commit": _git_commit(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "jax": jax.__version__,
            "command": "python benchmarks/branch_cost.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"# {meta['date']}, {meta['cpu']} ({meta['cores']} cores), jax {meta['jax']}: {meta['command']}\n")
    print("| untaken branch: constants + reductions | buffer allocations | us per call (median) |")
    print("|---:|---:|---:|")
    for k in fns:
        print(f"| {k if k else 'no conditional'} | {allocations[k]} | {statistics.median(us[k]):.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "allocations": allocations, "us_per_call": us}, f, indent=1)


if __name__ == "__main__":
    main()

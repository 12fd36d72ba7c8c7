"""Where a compiled step's time goes, op by op: raw ``jit(vmap(env.step))`` against the wrapper's step (a profile).

For each contender this times ``--steps`` steps (each waited for), then records as many with ``jax.profiler.trace``
and reads the trace it writes: on the CPU every executed XLA op (a fusion, a copy, a while loop, a conditional, ...)
is an event carrying its ``hlo_op``, so the ops' self times (an op's time minus that of the ops nested in it: a
loop's or a branch's body) say what each program spends its time on. Contenders:

  raw              jax.jit(jax.vmap(env.step)) of the Playground env (no autoreset, no books)
  raw_torch        the same, each step's observation and reward taken into torch (``torch.from_dlpack``)
  ours_jax         the vector env's step in jax mode with fresh initial states (``full_reset=True``, the default)
  ours_jax_replay  the same with replayed first states (``full_reset=False``, upstream's reset work)
  ours_torch_replay  the vector env's step in torch mode (torch actions in, torch tensors out), replayed states

Random constant actions and the official 1000-step episodes (no env ends inside the recorded steps), as in
``env_throughput.py``'s throughput table; every step is waited for, so contenders whose ops take the same time
but whose wall times differ differ in what the host adds per step (dispatch, the hand-over, idle threads). Printed
per contender: the wall time of a step (untraced, median), the ops' CPU time per step (traced; XLA's worker threads
add up, and the profiler's own cost per op inflates it alike for every contender), how many ops a step executes,
and the op kinds (names without their numeric suffix) that take the most time: what the wrapper's program adds is
read from the profile, not guessed.

    python benchmarks/step_profile.py --envs CartpoleBalance CheetahRun --num-envs 1024 \\
        --json docs/benchmarks/throughput/step_profile.json
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from typing import Any

__all__ = ["main", "op_self_times", "profile_step"]



def op_self_times(trace_events: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, int]]:
    """({op kind: self time in us}, {op kind: executions}) of a trace's complete events of XLA ops (those carrying
    an ``hlo_op`` argument: the runtime's own events, e.g. its ``end: ...`` markers, are left out). An op's self time
    is its duration less that of the ops nested in it on its thread (a loop's or a branch's body); ops on XLA's
    worker threads add up, so the sum is CPU time, which may exceed the wall time."""
    by_thread: dict[Any, list[dict[str, Any]]] = collections.defaultdict(list)
    for e in trace_events:
        if e.get("ph") == "X" and "hlo_op" in e.get("args", {}):
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    self_time: dict[str, float] = collections.defaultdict(float)
    counts: dict[str, int] = collections.defaultdict(int)
    for events in by_thread.values():
        events.sort(key=lambda e: (e["ts"], -e.get("dur", 0.0)))
        stack: list[list[Any]] = []  # [end, name, time of nested ops, duration]
        for e in events:
            start, dur = e["ts"], e.get("dur", 0.0)
            while stack and (stack[-1][0] <= start or start + dur > stack[-1][0] + 1e-3):  # not contained: closed
                _close(stack.pop(), self_time, counts)
            if stack:
                stack[-1][2] += dur
            stack.append([start + dur, e["name"], 0.0, dur])
        while stack:
            _close(stack.pop(), self_time, counts)
    return dict(self_time), dict(counts)


def _close(frame: list[Any], self_time: dict[str, float], counts: dict[str, int]) -> None:
    _, name, children, dur = frame
    kind = re.sub(r"(\.\d+)+$", "", name)
    self_time[kind] += max(dur - children, 0.0)
    counts[kind] += 1


def profile_step(env_id: str, num_envs: int, steps: int) -> dict[str, dict[str, Any]]:
    import jax
    import numpy as np
    import torch
    from mujoco_playground import registry

    import playground_gym
    from playground_gym.keys import reset_keys

    raw_env = registry.load(env_id, config_overrides={"impl": "jax"})
    # the keys the vector envs' reset(seed=0) resets with: every contender steps its own copy of the same initial
    # states as many times (MJX's solver iterates to a tolerance, so a step's cost depends on the states)
    keys = jax.vmap(jax.random.split)(reset_keys(0, 0, num_envs))[:, 1]
    actions = jax.random.uniform(jax.random.PRNGKey(1), (num_envs, raw_env.action_size), minval=-1.0, maxval=1.0)
    raw_step = jax.jit(jax.vmap(raw_env.step))
    raw_states = {name: jax.jit(jax.vmap(raw_env.reset))(keys) for name in ("raw", "raw_torch")}
    ours = {name: playground_gym.make_vec(env_id, num_envs, device="cpu", episode_length=1000, impl="jax",
                                          array_type="torch" if "torch" in name else "jax",
                                          full_reset=name == "ours_jax", quiet=True)
            for name in ("ours_jax", "ours_jax_replay", "ours_torch_replay")}
    for e in ours.values():
        e.reset(seed=0)
        if not np.allclose(np.asarray(e.env_state().data.qpos), np.asarray(raw_states["raw"].data.qpos), atol=1e-5):
            raise RuntimeError(f"profile_step: {env_id}'s vector env does not start from raw's initial states")
    torch_actions = torch.from_dlpack(actions).clone()

    def step(name: str) -> None:
        if name == "raw":
            raw_states[name] = jax.block_until_ready(raw_step(raw_states[name], actions))
        elif name == "raw_torch":  # on the CPU, from_dlpack waits for the step
            raw_states[name] = s = raw_step(raw_states[name], actions)
            torch.from_dlpack(s.obs), torch.from_dlpack(s.reward)
        elif name == "ours_torch_replay":  # step() returns once its results are ready (torch mode, CPU)
            ours[name].step(torch_actions)
        else:
            jax.block_until_ready(ours[name].step(actions)[1])

    results = {}
    for name in ("raw", "raw_torch", *ours):
        for _ in range(3):  # compile and warm up
            step(name)
        walls = []
        for _ in range(steps):  # untraced: the wall time of a step, waited for
            start = time.perf_counter()
            step(name)
            walls.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as folder:
            with jax.profiler.trace(folder):
                for _ in range(steps):
                    step(name)
            path = sorted(glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True))[-1]
            with gzip.open(path) as f:
                trace = json.load(f)
        events = trace["traceEvents"] if isinstance(trace, dict) else trace
        self_time, counts = op_self_times(events)
        results[name] = {"wall_ms_per_step": 1e3 * statistics.median(walls),
                         "ops_ms_per_step": sum(self_time.values()) / 1e3 / steps,
                         "op_executions_per_step": sum(counts.values()) / steps,
                         "ops": {k: {"ms_per_step": v / 1e3 / steps, "executions_per_step": counts[k] / steps}
                                 for k, v in sorted(self_time.items(), key=lambda kv: -kv[1])}}
    for e in ours.values():
        e.close()
    return results


def _print(env_id: str, num_envs: int, res: dict[str, dict[str, Any]], top: int) -> None:
    print(f"\n## {env_id} x {num_envs}\n")
    print("| program | wall ms/step (untraced, median) | ops ms/step (CPU, traced) | op executions/step |")
    print("|---|---:|---:|---:|")
    for name, r in res.items():
        print(f"| {name} | {r['wall_ms_per_step']:.3f} | {r['ops_ms_per_step']:.3f} | "
              f"{r['op_executions_per_step']:.0f} |")
    kinds = sorted({k for r in res.values() for k in r["ops"]},
                   key=lambda k: -max(r["ops"].get(k, {"ms_per_step": 0})["ms_per_step"] for r in res.values()))
    print(f"\n| op kind (top {top}) | " + " | ".join(f"{n} ms/step (executions)" for n in res) + " |")
    print("|---|" + "---:|" * len(res))
    for k in kinds[:top]:
        cells = []
        for r in res.values():
            o = r["ops"].get(k)
            cells.append("-" if o is None else f"{o['ms_per_step']:.3f} ({o['executions_per_step']:.0f})")
        print(f"| {k} | " + " | ".join(cells) + " |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1024])
    parser.add_argument("--steps", type=int, default=20, help="recorded steps per contender")
    parser.add_argument("--top", type=int, default=15, help="op kinds printed per table")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    os.environ["JAX_PLATFORMS"] = "cpu"  # all contenders on the CPU (the profile reads XLA:CPU's op events)
    import jax

    from env_throughput import _cpu_model, _git_commit  # this folder's: benchmarks/ is on sys.path as a script

    meta = {"date": time.strftime("%Y-%m-%d"), "commit": _git_commit(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "jax": jax.__version__,
            "command": "python benchmarks/step_profile.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"# {meta['date']}, {meta['cpu']} ({meta['cores']} cores), jax {meta['jax']}: {meta['command']}")
    results: dict[str, Any] = {"meta": meta}
    for env_id in args.envs:
        for n in args.num_envs:
            results[f"{env_id} x {n}"] = res = profile_step(env_id, n, args.steps)
            _print(env_id, n, res, args.top)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

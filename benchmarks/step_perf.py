"""Where a call of the vector env's compiled step spends its CPU time, sampled with Linux ``perf``: fresh initial
states (the default) against replayed first states, where no env ends.

Each contender's compiled step (jax mode's program, ``PlaygroundVectorEnv`` with ``array_type="jax"``, called
directly on its carry; torch mode's program differs only in packing its outputs into one byte buffer) runs in a loop
in a child process: JAX pinned to one CPU with synchronous dispatch (``backend.pin_jax_cpu``, as the trainers run on
the CPU), random constant actions, episodes longer than the run (no env ends, so the pool's refill and hand-out are
never taken; checked on the last call of every block of calls), on the same carry every call, or where the carry is donated (above ``FUSE_LIMIT``) on the
carry the call before returned. ``perf record -e cpu-clock --call-graph dwarf`` samples the child, all its threads;
the calls counted are those the child finished between perf's first and last sample (the child logs its call count
against ``CLOCK_MONOTONIC``, perf's clock here). Contenders run in interleaved rounds (replay, fresh, fresh,
replay, ...); each number is the mean over rounds, with each round's value kept in the JSON.

A sample is assigned, in this order, to the first of
  thread switches         a frame in the kernel's ``__schedule`` (CPU time spent switching threads: XLA runs a
                          program's thunks on its worker thread as well as the calling thread)
  constants               ``xla::CpuDeviceMemory::CreateConstantMemory``: each execution wraps each of the
                          program's constant buffers in a new aligned heap object (and frees it)
  allocation refs freed   ``StatusOrData<std::vector<tsl::AsyncValueRef<xla::CpuDeviceMemory>>>``: releasing the
                          execution's per-allocation references (a destructor name of this jaxlib build; another
                          build may inline it, and its samples then count as "runtime, per call")
  temp buffers            ``BufferAlloc::Allocate``: the execution's temporary buffers
that any frame of its stack names; else, walking from the leaf, to the owner of the first frame that names one:
  thunks                  ``xla::cpu::*Thunk*``: the thunk executor and what it runs (library kernels, loops,
                          conditionals)
  runtime, per call       XLA's per-execution code (``xla::Cpu*``, ``xla::cpu::``, ``xla::CommonPjRt*``)
  JAX's dispatch          ``xla::ifrt::``, ``PjitFunction``, ``jax::`` (PjRt's own frames, e.g.
                          ``xla::PjRtCpuLoadedExecutable::Execute``, match no owner: samples there count here)
  Python                  the interpreter
Samples whose frames are all unknown are XLA's generated kernels (perf cannot unwind through them: "compiled
kernels"); the rest is "other": the allocator or system libraries with no owner frame, libm called from generated
kernels (``__powf_fma``) and page faults taken in them (so "compiled kernels" undercounts the kernels' work).

Requires ``perf`` (linux-tools) allowed to sample the child's kernel time: root or ``kernel.perf_event_paranoid``
<= 1 (checked: without it the thread switches would silently read 0).

    python benchmarks/step_perf.py --env CheetahRun --num-envs 4 --rounds 2 \\
        --json docs/benchmarks/throughput/step_perf_cheetah4.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from env_throughput import _cpu_model, _git_commit  # noqa: E402

__all__ = ["main"]

NAMED = (  # (category, regex on a frame's symbol): the first that any frame of a sample's stack matches
    ("thread switches", r"^__schedule$"),
    ("constants", r"CpuDeviceMemory::CreateConstantMemory"),
    ("allocation refs freed", r"StatusOrData<std::vector<tsl::AsyncValueRef<xla::CpuDeviceMemory"),
    ("temp buffers", r"BufferAlloc::Allocate"),
)
OWNERS = (  # else the owner of the frame nearest the leaf that matches one of these
    ("thunks", r"^xla::cpu::\w*Thunk"),
    ("runtime, per call", r"^xla::Cpu|^xla::cpu::|^xla::CommonPjRt"),
    ("JAX's dispatch", r"^xla::ifrt::|PjitFunction|^jax::"),
    ("Python", r"^_?Py|^_PyEval"),
)
CATEGORIES = [name for name, _ in NAMED + OWNERS] + ["compiled kernels", "other"]


def _child(env_id: str, num_envs: int, mode: str, seconds: float) -> None:
    """Step the compiled program in a loop. Prints "ready" before the timed loop; after it, one JSON line: the
    (CLOCK_MONOTONIC seconds, calls finished) log and whether an env ended."""
    from playground_gym import backend

    if backend.pin_jax_cpu("cpu") is None:
        raise SystemExit("step_perf: JAX could not be pinned to one CPU (one CPU only, PLAYGROUND_GYM_PIN_JAX_CPU=0, "
                         "or no sched_setaffinity): the numbers would not be of the pinned, synchronous step")
    import jax
    import numpy as np

    import playground_gym

    envs = playground_gym.make_vec(env_id, num_envs, array_type="jax", full_reset=mode == "fresh",
                                   episode_length=10**6)
    envs.reset(seed=0)
    actions = jax.numpy.asarray(np.random.default_rng(0).uniform(-1, 1, envs.action_space.shape).astype(np.float32))
    step, first, chain = envs._shared.step, envs._first, envs._shared.donate_carry
    state = {"carry": envs._carry}

    def call() -> Any:
        carry, out = step(state["carry"], first, actions)
        if chain:  # a donated carry is consumed by the call
            state["carry"] = carry
        return out

    block = 20 if num_envs < 1024 else 1
    for _ in range(10 * block):
        out = call()
    ended = bool(jax.numpy.any(out["done"]))
    print("ready", flush=True)
    log, calls, start = [], 0, time.monotonic()
    while time.monotonic() - start < seconds:
        for _ in range(block):
            out = call()
        ended = ended or bool(jax.numpy.any(out["done"]))  # waits for the step, as block_until_ready would
        calls += block
        log.append((time.clock_gettime(time.CLOCK_MONOTONIC), calls))
    print(json.dumps({"log": log, "ended": ended}), flush=True)


def _classify(frames: list[str]) -> str:
    if frames and all(frame == "[unknown]" for frame in frames):
        return "compiled kernels"
    for name, pattern in NAMED:
        if any(re.search(pattern, frame) for frame in frames):
            return name
    for frame in frames:  # leaf first
        for name, pattern in OWNERS:
            if re.search(pattern, frame):
                return name
    return "other"


def _profile(env_id: str, num_envs: int, mode: str, window: float, freq: int, folder: str) -> dict[str, float]:
    """µs per call of each of :data:`CATEGORIES`, "all" (their sum) and "wall" for one run of one contender."""
    data = os.path.join(folder, f"{mode}.data")
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", env_id, str(num_envs), mode,
                              str(window + 6)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    while (line := child.stdout.readline()) and line.strip() != "ready":
        pass
    if line.strip() != "ready":
        raise RuntimeError(f"step_perf: the {mode} child exited before its timed loop (return code {child.wait()})")
    time.sleep(1)  # past the first timed calls
    try:
        record = subprocess.run(["perf", "record", "-e", "cpu-clock", "-k", "CLOCK_MONOTONIC", "--call-graph",
                                 "dwarf,16384", "-F", str(freq), "-p", str(child.pid), "-o", data, "--", "sleep",
                                 str(window)], capture_output=True, text=True, timeout=window + 60)
    except subprocess.TimeoutExpired:
        child.kill()
        raise
    if record.returncode != 0 or re.search(r"lost \d+ chunks|LOST", record.stderr):
        child.kill()
        raise RuntimeError(f"step_perf: perf record failed or lost samples: {record.stderr.strip()}")
    output = child.stdout.read()
    if child.wait() != 0:
        raise RuntimeError(f"step_perf: the {mode} child failed (return code {child.returncode})")
    result = json.loads(output.strip().splitlines()[-1])
    if result["ended"]:
        raise RuntimeError(f"step_perf: an env ended in the {mode} child's calls (its pool's branches ran)")
    script = subprocess.run(["perf", "script", "-i", data, "--no-inline", "-F", "time,period,ip,sym"],
                            capture_output=True, text=True, check=True).stdout
    ns = dict.fromkeys(CATEGORIES, 0)
    other_leaves: collections.Counter[str] = collections.Counter()  # where "other" is: its samples' leaf frames
    first = last = None
    for sample in script.strip().split("\n\n"):
        lines = sample.strip().splitlines()
        if not lines:
            continue
        stamp, period = lines[0].split()[:2]  # "12345.678901:" and the cpu-clock period in nanoseconds
        stamp = float(stamp.rstrip(":"))
        first, last = stamp if first is None else first, stamp
        frames = [parts[1].strip() if len(parts := ln.split(None, 1)) > 1 else "" for ln in lines[1:]]
        category = _classify(frames)
        ns[category] += int(period)
        if category == "other":
            other_leaves[next((f for f in frames if f != "[unknown]"), "[unknown]")[:80]] += int(period)
    if first is None:
        raise RuntimeError(f"step_perf: perf recorded no samples of the {mode} child: {record.stderr.strip()}")
    log = result["log"]
    done = [calls for stamp, calls in log if stamp <= last]
    before = [calls for stamp, calls in log if stamp <= first]
    if not done or done[-1] == (before[-1] if before else 0) or log[-1][0] < last:
        raise RuntimeError(f"step_perf: the {mode} child's call log does not cover perf's samples")
    calls = done[-1] - (before[-1] if before else 0)  # finished within perf's sampled span, to one block
    out = {name: value / 1e3 / calls for name, value in ns.items()}
    out["all"] = sum(ns.values()) / 1e3 / calls
    out["wall"] = (last - first) * 1e6 / calls
    out["other, top leaf frames"] = {leaf: value / 1e3 / calls for leaf, value in other_leaves.most_common(8)}
    return out


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CheetahRun")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="runs per contender, interleaved (replay first)")
    parser.add_argument("--window", type=float, default=6.0, help="seconds sampled per run")
    parser.add_argument("--freq", type=int, default=999, help="samples per second")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        raise SystemExit("step_perf: expected Linux perf on PATH (linux-tools); found none")
    with open("/proc/sys/kernel/perf_event_paranoid") as f:
        paranoid = int(f.read())
    if os.geteuid() != 0 and paranoid > 1:
        raise SystemExit(f"step_perf: expected root or kernel.perf_event_paranoid <= 1 (kernel time sampled); got "
                         f"{paranoid} as uid {os.geteuid()}")
    runs: dict[str, list[dict[str, float]]] = {"replay": [], "fresh": []}
    with tempfile.TemporaryDirectory(prefix="step_perf_") as folder:
        for round_ in range(args.rounds):
            for mode in ("replay", "fresh") if round_ % 2 == 0 else ("fresh", "replay"):
                runs[mode].append(_profile(args.env, args.num_envs, mode, args.window, args.freq, folder))
    mean = {mode: {name: statistics.fmean(run[name] for run in runs[mode]) for name in CATEGORIES + ["all", "wall"]}
            for mode in runs}
    print(f"{args.env} x {args.num_envs}: us per call of the compiled step, no env ending (mean of {args.rounds} "
          f"runs each; in brackets each run's fresh - replay)")
    print("| | replay | fresh | fresh - replay |\n|---|---:|---:|---:|")
    for name in mean["replay"]:
        diffs = ", ".join(f"{f[name] - r[name]:+.1f}" for r, f in zip(runs["replay"], runs["fresh"]))
        print(f"| {name} | {mean['replay'][name]:.1f} | {mean['fresh'][name]:.1f} | "
              f"{mean['fresh'][name] - mean['replay'][name]:+.1f} ({diffs}) |")
    for mode in runs:
        for i, run in enumerate(runs[mode]):
            leaves = ", ".join(f"{leaf} {us:.1f}" for leaf, us in run["other, top leaf frames"].items())
            print(f"{mode} run {i + 1}, other by leaf frame (us per call): {leaves}")
    if args.json:
        import jax

        perf = subprocess.run(["perf", "--version"], capture_output=True, text=True).stdout.strip()
        meta = {"date": time.strftime("%Y-%m-%d"), "commit": _git_commit(), "cpu": _cpu_model(),
                "cores": os.cpu_count(), "jax": jax.__version__, "perf": perf, "event": "cpu-clock",
                "env": args.env, "num_envs": args.num_envs, "rounds": args.rounds, "window_s": args.window,
                "freq_hz": args.freq, "environment": {k: v for k, v in os.environ.items()
                                                       if k.startswith(("MALLOC_", "GLIBC_", "XLA_", "LD_PRELOAD"))},
                "command": "python benchmarks/step_perf.py " + " ".join(argv or sys.argv[1:])}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "us_per_call": mean, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()

"""Where a call of the vector env's compiled step spends its time on the CPU, sampled with Linux ``perf``: fresh
initial states (the default) against replayed first states, where no env ends.

Each contender's compiled step (jax mode's program, called directly on its carry) runs in a loop in a child process
(JAX pinned to one CPU, synchronous dispatch, the same carry and random constant actions every call, episodes longer
than the run: no env ends, so the pool's refill and hand-out are never taken). ``perf record --call-graph dwarf``
samples the child (its CPU time, all threads; on one CPU that is the call's wall time less idle), and each
sample goes to the first of these that a frame of its call stack names:

  thread switches         the kernel's ``__schedule``: XLA hands thunks to its worker thread and the caller waits
  constants               ``xla::CpuDeviceMemory::CreateConstantMemory``: each execution wraps each of the
                          program's constant buffers in a new aligned heap object (and frees it)
  allocation refs freed   ``StatusOrData<std::vector<tsl::AsyncValueRef<CpuDeviceMemory>>>``: releasing the
                          execution's per-allocation references at its end
  temp buffers            ``BufferAlloc::Allocate``: the execution's temporary buffers
  thunks                  ``xla::cpu::*Thunk*``: running the program's kernels, loops and conditionals
  runtime, other          the rest of XLA's and its libraries' per-call work
  Python and JAX's dispatch
  compiled kernels        samples in XLA's generated code, which perf cannot unwind
  other

Requires ``perf`` (linux-tools) with permission to sample the child (``kernel.perf_event_paranoid`` <= 1 or root).

    python benchmarks/step_perf.py --env CheetahRun --num-envs 4 --json docs/benchmarks/throughput/step_perf.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from env_throughput import _cpu_model, _git_commit  # noqa: E402

__all__ = ["main"]

CATEGORIES = (  # (name, regex on a frame's symbol); a sample goes to the first that a frame of its stack matches
    ("thread switches", r"^__schedule$"),
    ("constants", r"CpuDeviceMemory::CreateConstantMemory"),
    ("allocation refs freed", r"StatusOrData<std::vector<tsl::AsyncValueRef<xla::CpuDeviceMemory"),
    ("temp buffers", r"BufferAlloc::Allocate"),
    ("thunks", r"xla::cpu::\w*Thunk"),
    ("runtime, other", r"^xla::|^tsl::|^absl::"),
    ("Python and JAX's dispatch", r"PjitFunction|^_?Py|^jax::"),
)


def _child(env_id: str, num_envs: int, mode: str, seconds: float) -> None:
    """Step the compiled program in a loop; print "ready" before the timed loop and calls per second after it."""
    from playground_gym import backend

    backend.pin_jax_cpu("cpu")
    import jax
    import numpy as np

    import playground_gym

    envs = playground_gym.make_vec(env_id, num_envs, array_type="jax", full_reset=mode == "fresh",
                                   episode_length=10**6)
    envs.reset(seed=0)
    actions = jax.numpy.asarray(np.random.default_rng(0).uniform(-1, 1, envs.action_space.shape).astype(np.float32))
    step, carry, first = envs._shared.step, envs._carry, envs._first
    if envs._shared.donate_carry:
        raise SystemExit("step_perf: this carry is donated (above FUSE_LIMIT): calling it twice on one carry fails")
    for _ in range(200):
        _, out = step(carry, first, actions)
    if bool(jax.numpy.any(out["done"])):
        raise SystemExit("step_perf: an env ended: the timed calls would take the pool's branches")
    jax.block_until_ready(out)
    print("ready", flush=True)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            _, out = step(carry, first, actions)
        jax.block_until_ready(out)
        calls += 20
    print(json.dumps({"calls_per_s": calls / (time.perf_counter() - start)}), flush=True)


def _profile(env_id: str, num_envs: int, mode: str, window: float, freq: int, folder: str) -> dict[str, float]:
    """µs per call of each group in :data:`GROUPS` for one contender."""
    data = os.path.join(folder, f"{mode}.data")
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", env_id, str(num_envs), mode,
                              str(window + 4)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    while (line := child.stdout.readline()) and line.strip() != "ready":
        pass
    time.sleep(1)  # past the first timed calls
    subprocess.run(["perf", "record", "-q", "--call-graph", "dwarf,16384", "-F", str(freq), "-p", str(child.pid),
                    "-o", data, "--", "sleep", str(window)], check=True, capture_output=True)
    rate = json.loads(child.stdout.read().strip().splitlines()[-1])["calls_per_s"]
    if child.wait() != 0:
        raise RuntimeError(f"step_perf: the {mode} child failed")
    script = subprocess.run(["perf", "script", "-i", data, "--no-inline", "-F", "period,ip,sym"],
                            capture_output=True, text=True, check=True).stdout
    ns = dict.fromkeys([name for name, _ in CATEGORIES] + ["compiled kernels", "other"], 0)
    for sample in script.strip().split("\n\n"):
        lines = sample.strip().splitlines()
        if not lines:
            continue
        period = int(lines[0].split()[0])  # cpu-clock: nanoseconds
        frames = [ln.split(None, 1)[1].strip() if len(ln.split(None, 1)) > 1 else "" for ln in lines[1:]]
        if all(frame == "[unknown]" for frame in frames):  # XLA's generated code: perf cannot unwind through it
            ns["compiled kernels"] += period
            continue
        ns[next((name for name, pattern in CATEGORIES if any(re.search(pattern, frame) for frame in frames)),
                "other")] += period
    calls = rate * window  # calls in the sampled window
    out = {name: value / 1e3 / calls for name, value in ns.items()}
    out["all"] = sum(ns.values()) / 1e3 / calls
    out["wall us per call"] = 1e6 / rate
    return out


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CheetahRun")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--window", type=float, default=6.0, help="seconds sampled per contender")
    parser.add_argument("--freq", type=int, default=999, help="samples per second")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        raise SystemExit("step_perf: expected Linux perf on PATH (linux-tools); found none")
    with tempfile.TemporaryDirectory(prefix="step_perf_") as folder:
        results = {mode: _profile(args.env, args.num_envs, mode, args.window, args.freq, folder)
                   for mode in ("replay", "fresh")}
    print(f"{args.env} x {args.num_envs}, us per call of the compiled step (no env ends)")
    print("| | replay | fresh | fresh - replay |\n|---|---:|---:|---:|")
    for name in results["replay"]:
        a, b = results["replay"][name], results["fresh"][name]
        print(f"| {name} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
    if args.json:
        meta = {"date": time.strftime("%Y-%m-%d"), "commit": _git_commit(), "cpu": _cpu_model(),
                "cores": os.cpu_count(), "env": args.env, "num_envs": args.num_envs, "window_s": args.window,
                "freq_hz": args.freq, "command": "python benchmarks/step_perf.py " + " ".join(argv or sys.argv[1:])}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "us_per_call": results}, f, indent=1)


if __name__ == "__main__":
    main()

"""Start-up of a fresh process: cold, with JAX's compilation cache only, and with the trace cache.

Every trainer run, test process and campaign run first loads the env, traces its reset and step and compiles
them. This measures, in fresh subprocesses, the seconds from launching the process to the end of its second step,
and its parts: imports (torch + playground_gym, which imports JAX, and MuJoCo Playground unless the trace
cache's snapshot of its ids and configs is warm), construction (``make_vec``), ``reset`` and two steps, for four
processes per env and round:

  cold                 empty cache folder: load, trace, compile (and write both caches)
  trace cache          a second process on that folder: the exported programs are loaded, the executable too
  cold (no trace cache)  ``PLAYGROUND_GYM_TRACE_CACHE=0``, empty folder
  compile cache only   a second process on that folder: what a warm start cost before the trace cache
                       (without the trace cache there is no snapshot either: Playground is imported)

Rounds go env by env, so machine noise hits all four alike; the table gives medians over rounds and the ratio
of warm to cold (construct + reset + 2 steps, and from launch to the end of step 2; the process's exit is not
counted).

    python benchmarks/startup.py --envs CartpoleBalance CheetahRun HumanoidRun --num-envs 64 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("cold", "trace cache", "cold (no trace cache)", "compile cache only")


def _child(env_id: str, num_envs: int) -> dict[str, object]:
    """In the fresh process: seconds per phase, and where the env's programs came from."""
    t0 = time.perf_counter()
    import torch

    import playground_gym

    t1 = time.perf_counter()
    envs = playground_gym.make_vec(env_id, num_envs, device="cpu")
    t2 = time.perf_counter()
    obs, _ = envs.reset(seed=0)
    float(obs.sum())
    t3 = time.perf_counter()
    actions = torch.zeros(envs.action_space.shape)
    for _ in range(2):
        reward = envs.step(actions)[1]
    float(reward.sum())
    t4 = time.perf_counter()
    return {"imports": t1 - t0, "construct": t2 - t1, "reset": t3 - t2, "two_steps": t4 - t3,
            "in_process": t4 - t1, "source": envs.programs_source, "end_of_step_2": time.time()}


def run_process(env_id: str, num_envs: int, cache: str, trace_cache: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(PLAYGROUND_GYM_CACHE_DIR=cache, PLAYGROUND_GYM_TRACE_CACHE="1" if trace_cache else "0")
    start = time.time()
    out = subprocess.run([sys.executable, __file__, "--child", env_id, str(num_envs)], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{env_id}: the child process failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process"] = result.pop("end_of_step_2") - start  # from the launch: interpreter start included, exit not
    return result


def measure(env_id: str, num_envs: int) -> dict[str, dict[str, object]]:
    """One round: the four processes (two fresh cache folders)."""
    res = {}
    with tempfile.TemporaryDirectory() as on, tempfile.TemporaryDirectory() as off:
        res["cold"] = run_process(env_id, num_envs, on, True)
        res["trace cache"] = run_process(env_id, num_envs, on, True)
        entries = list(Path(on, "playground_gym_traces").glob("*.bin"))
        res["trace cache"]["entry_bytes"] = sum(p.stat().st_size for p in entries)
        res["cold (no trace cache)"] = run_process(env_id, num_envs, off, False)
        res["compile cache only"] = run_process(env_id, num_envs, off, False)
    expected = {"cold": "traced", "trace cache": "trace cache", "cold (no trace cache)": "traced (trace cache off)",
                "compile cache only": "traced (trace cache off)"}
    for mode, source in expected.items():
        if res[mode]["source"] != source:
            raise RuntimeError(f"{env_id}, {mode}: the programs came from {res[mode]['source']!r}, not {source!r}")
    return res


def table(results: dict[str, list[dict]], num_envs: int) -> str:
    lines = [f"Start-up, {num_envs} envs, CPU ({os.cpu_count()} cores), median over {len(next(iter(results.values())))} "
             "rounds (seconds):", "",
             "| env | process | imports | make_vec | reset | 2 steps | construct + reset + 2 steps | launch to step 2 "
             "| vs cold (in process / from launch) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for env_id, rounds in results.items():
        med = {m: {k: statistics.median(r[m][k] for r in rounds)
                   for k in ("imports", "construct", "reset", "two_steps", "in_process", "process")} for m in MODES}
        for m in MODES:
            cold = "cold" if m in ("cold", "trace cache") else "cold (no trace cache)"
            ratio = "" if m.startswith("cold") else \
                f"{med[m]['in_process'] / med[cold]['in_process']:.2f} / {med[m]['process'] / med[cold]['process']:.2f}"
            t = med[m]
            lines.append(f"| {env_id} | {m} | {t['imports']:.1f} | {t['construct']:.2f} | {t['reset']:.2f} | "
                         f"{t['two_steps']:.2f} | {t['in_process']:.2f} | {t['process']:.1f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", help="folder for results.json and table.md (written after every round)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]))))
        return
    results: dict[str, list[dict]] = {env_id: [] for env_id in args.envs}
    for r in range(args.rounds):
        for env_id in args.envs:
            results[env_id].append(measure(env_id, args.num_envs))
            print(f"round {r + 1}, {env_id}: " + ", ".join(
                f"{m} {results[env_id][-1][m]['in_process']:.2f}/{results[env_id][-1][m]['process']:.1f} s"
                for m in MODES), flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            meta = {"num_envs": args.num_envs, "rounds_done": r + 1, "cpu_count": os.cpu_count(),
                    "command": " ".join(sys.argv)}
            Path(args.out, "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
            Path(args.out, "table.md").write_text(table(results, args.num_envs) + "\n")
    print("\n" + table(results, args.num_envs))


if __name__ == "__main__":
    main()

"""Time (and env steps) until a trainer's deterministic eval return first reaches a threshold, trainers interleaved.

    python benchmarks/time_to_return.py --trainers ppo_continuous ppo_tanh --env-id CartpoleBalance --seeds 1 2 3 \
        --threshold 990 --out docs/figures/time_to_990

Runs each (seed, trainer) in a fresh process at the trainer's defaults (plus --trainer-arg flags), seed by seed with
the trainers alternating (continuous 1, tanh 1, continuous 2, ...), so that a machine's drift over the hour hits all
trainers alike; machines here differ 2-3x from day to day, so read the ratio, not the seconds. Wall time is the
trainer's own (from process start: imports and JIT compiles included) at the first evaluation at or above the
threshold. Resumable: runs already in <out>/results.json are kept. Prints a markdown table and writes results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def first_reach(history: list[dict], threshold: float) -> dict | None:
    """The first evaluation after training began (step > 0: ppo_multiunroll also evaluates the initial policy)
    whose return reaches ``threshold``."""
    return next((e for e in history if e["step"] > 0 and e["return"] >= threshold), None)


def run_one(trainer: str, env_id: str, seed: int, runs_dir: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, str(ROOT / "cleanrl_ppo" / f"{trainer}.py"), "--env-id", env_id, "--seed", str(seed),
           "--runs-dir", str(runs_dir), *extra]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.DEVNULL)
    (summary_path,) = sorted(runs_dir.glob("*/summary.json"))
    summary = json.loads(summary_path.read_text())
    return {"trainer": trainer, "seed": seed, "eval_history": summary["eval_history"], "sps": summary["sps"],
            "wall_time_s": summary["wall_time_s"], "final_eval_return": summary["final_eval_return"]}


def table(results: list[dict], trainers: list[str], threshold: float) -> str:
    rows = [f"| trainer | seed | first eval >= {threshold:g}: env steps | wall time (s) | final eval | run wall (s) |",
            "|---|---:|---:|---:|---:|---:|"]
    times: dict[str, list[float]] = {t: [] for t in trainers}
    for r in sorted(results, key=lambda r: (trainers.index(r["trainer"]), r["seed"])):
        hit = first_reach(r["eval_history"], threshold)
        if hit:
            times[r["trainer"]].append(hit["wall_time"])
        rows.append(f"| {r['trainer']} | {r['seed']} | {hit['step'] if hit else 'never'} | "
                    f"{hit['wall_time'] if hit else '-'} | {r['final_eval_return']:.1f} | {r['wall_time_s']:.0f} |")
    base = trainers[0]
    for t in trainers[1:]:
        pairs = [(a, b) for a, b in zip(times[base], times[t])]
        if pairs and len(times[base]) == len(times[t]):
            ratio = np.mean([b / a for a, b in pairs])
            rows.append(f"\n{t} / {base}, time to {threshold:g}: {ratio:.2f}x (mean of per-seed ratios)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainers", nargs="+", default=["ppo_continuous", "ppo_tanh"])
    parser.add_argument("--env-id", default="CartpoleBalance")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--threshold", type=float, default=990.0)
    parser.add_argument("--out", default=str(ROOT / "runs" / "time_to_return"))
    parser.add_argument("--trainer-arg", action="append", default=[], help="extra flag for every run, e.g. "
                                                                           "--trainer-arg=--torch-threads=2")
    a = parser.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text())["runs"] if path.exists() else []
    extra = [x for arg in a.trainer_arg for x in arg.split("=", 1)]
    for seed in a.seeds:
        for trainer in a.trainers:
            if any(r["trainer"] == trainer and r["seed"] == seed for r in results):
                continue
            results.append(run_one(trainer, a.env_id, seed, out / "runs" / f"{trainer}_{seed}", extra))
            path.write_text(json.dumps({"env_id": a.env_id, "threshold": a.threshold, "extra": extra,
                                        "runs": results}, indent=1))
    text = table([r for r in results if r["trainer"] in a.trainers and r["seed"] in a.seeds], a.trainers, a.threshold)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

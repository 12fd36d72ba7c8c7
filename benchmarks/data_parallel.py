"""Equal learning across ranks: N ranks x E/N envs (torchrun) against 1 process x E envs, same total env steps.

    python benchmarks/data_parallel.py --trainer ppo_continuous --env-id CartpoleBalance --seeds 3 --ranks 2 \
        --num-envs 64 --out docs/benchmarks/data_parallel

Seeds are interleaved (single 1, ranks 1, single 2, ...), each run a fresh process; both sides get the trainer's
defaults otherwise. ppo_continuous and ppo_tanh count --num-envs per rank, so each rank gets E/N and an update sees
E x num_steps env steps on both sides; ppo_multiunroll counts --num-envs and --batch-size over all ranks (as Brax),
so both sides get E and run the same schedule (updates, global batch, evaluation points). Writes
OUT/results.json (every run's summary: eval history, SPS, world size) and OUT/table.md. Resumable: runs already in
results.json are kept. On this 2-core CPU, ranks share the cores, so the bar is equal learning, not speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_one(trainer: str, env_id: str, seed: int, ranks: int, num_envs: int, extra: list[str], workdir: Path) -> dict:
    script = ROOT / "cleanrl_ppo" / f"{trainer}.py"
    per_rank = trainer != "ppo_multiunroll"  # ppo_multiunroll splits the global num_envs itself
    args = ["--env-id", env_id, "--seed", str(seed), "--num-envs", str(num_envs // ranks if per_rank else num_envs),
            "--runs-dir", str(workdir), "--checkpoint-interval", "0", *extra]
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
               str(script), *args, "--device", "cpu", "--torch-threads", "1"]
    else:
        cmd = [sys.executable, str(script), *args]
    print(" ".join(cmd), flush=True)
    result = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")
    (summary,) = workdir.glob("*/summary.json")
    return json.loads(summary.read_text())


def table(results: dict, ranks: int) -> str:
    def stats(side: str, pick) -> str:
        values = [pick(r) for r in results[side]]
        return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if values else "-"

    final = lambda r: r["final_eval_return"]  # noqa: E731
    trained_mean = lambda r: np.mean([e["return"] for e in r["eval_history"] if e["step"] > 0])  # noqa: E731
    lines = [f"| | 1 process x {results['num_envs']} envs | {ranks} ranks x {results['num_envs'] // ranks} envs |",
             "|-|-|-|",
             f"| final eval return | {stats('single', final)} | {stats('ranks', final)} |",
             f"| mean eval return over the run | {stats('single', trained_mean)} | {stats('ranks', trained_mean)} |",
             f"| SPS (whole run) | {stats('single', lambda r: r['sps'])} | {stats('ranks', lambda r: r['sps'])} |",
             f"| env steps | {stats('single', lambda r: r['env_steps'])} | {stats('ranks', lambda r: r['env_steps'])} |"]
    per_seed = "; ".join(f"seed {a['seed']}: {a['final_eval_return']:.1f} vs {b['final_eval_return']:.1f}"
                         for a, b in zip(results["single"], results["ranks"]))
    return "\n".join(lines) + f"\n\nFinal eval return per seed (1 process vs {ranks} ranks): {per_seed}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainer", default="ppo_continuous", choices=["ppo_continuous", "ppo_tanh", "ppo_multiunroll"])
    parser.add_argument("--env-id", default="CartpoleBalance")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--num-envs", type=int, default=64, help="envs of the single process; each rank gets a share")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "data_parallel")
    parser.add_argument("--trainer-arg", action="append", default=[], help="extra trainer flag for both sides")
    opts = parser.parse_args()
    if opts.num_envs % opts.ranks:
        parser.error(f"--num-envs ({opts.num_envs}) must be a multiple of --ranks ({opts.ranks})")
    opts.out.mkdir(parents=True, exist_ok=True)
    path = opts.out / "results.json"
    config = {"trainer": opts.trainer, "env_id": opts.env_id, "ranks": opts.ranks, "num_envs": opts.num_envs,
              "trainer_args": opts.trainer_arg}
    results = json.loads(path.read_text()) if path.exists() else {}
    if results.get("config") != config:
        results = {"config": config, "num_envs": opts.num_envs, "single": [], "ranks": []}
    for seed in range(1, opts.seeds + 1):
        for side, ranks in (("single", 1), ("ranks", opts.ranks)):
            if any(r["seed"] == seed for r in results[side]):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                summary = run_one(opts.trainer, opts.env_id, seed, ranks, opts.num_envs, opts.trainer_arg, Path(tmp))
            results[side].append(summary)
            path.write_text(json.dumps(results, indent=1))
    text = table(results, opts.ranks)
    (opts.out / "table.md").write_text(f"{opts.trainer}, {opts.env_id}, {opts.seeds} seeds\n\n{text}")
    print(text)


if __name__ == "__main__":
    main()

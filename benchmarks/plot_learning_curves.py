"""Plot evaluation return against env steps and against wall time from trainers' summary.json files.

    python benchmarks/plot_learning_curves.py runs/CartpoleBalance__ppo_continuous__1__* runs/CartpoleBalance__ppo_tanh__1__* \
        --out docs/figures/cartpole_continuous_vs_tanh.png

Each input is a run folder (holding summary.json) or a summary.json path; one line per run, labelled by its exp_name
(plus the seed when runs of one exp_name differ in seed) unless --labels names them. The random-policy return is drawn as a dashed line when the
summaries carry it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load_summary(path: str) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    if not p.is_file():
        raise SystemExit(f"plot_learning_curves.py: error: no summary.json at {p}")
    summary = json.loads(p.read_text())
    if not summary.get("eval_history"):
        raise SystemExit(f"plot_learning_curves.py: error: {p} has no eval_history")
    return summary


def label_of(summary: dict, summaries: list[dict]) -> str:
    name = summary.get("exp_name") or summary.get("args", {}).get("exp_name", "run")
    seeds = {s.get("seed") for s in summaries if (s.get("exp_name") or s.get("args", {}).get("exp_name")) == name}
    return f"{name} (seed {summary.get('seed')})" if len(seeds) > 1 else name


def plot(summaries: list[dict], out: str, title: str | None = None, labels: list[str] | None = None,
         references: dict[str, float] | None = None) -> None:
    fig, (ax_steps, ax_wall) = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    for i, summary in enumerate(summaries):
        history = summary["eval_history"]
        steps = [e["step"] for e in history]
        walls = [e["wall_time"] for e in history]
        returns = [e["return"] for e in history]
        label = labels[i] if labels else label_of(summary, summaries)
        line, = ax_steps.plot(steps, returns, marker="o", markersize=3, label=label)
        ax_wall.plot(walls, returns, marker="o", markersize=3, color=line.get_color(), label=label)
    baselines = {s.get("random_policy_return") for s in summaries} - {None}
    if len(baselines) == 1:
        baseline = baselines.pop()
        for ax in (ax_steps, ax_wall):
            ax.axhline(baseline, color="gray", linestyle="--", linewidth=1, label="random policy")
    for (name, value), style in zip((references or {}).items(), ("--", ":", "-.")):
        for ax in (ax_steps, ax_wall):
            ax.axhline(value, color="black", linestyle=style, linewidth=1, label=f"{name} ({value:g})")
    env_ids = sorted({s.get("env_id", "?") for s in summaries})
    ax_steps.set_xlabel("env steps (agent decisions)")
    ax_wall.set_xlabel("wall time (s, imports and JIT compiles included)")
    ax_steps.set_ylabel("deterministic eval return" if all(s.get("eval_deterministic", True) for s in summaries)
                        else "eval return")
    for ax in (ax_steps, ax_wall):
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
    handles, names = ax_steps.get_legend_handles_labels()
    ncol = 2 if max(len(n) for n in names) < 45 else 1
    rows = -(-len(names) // ncol)
    fig.legend(handles, names, loc="lower center", ncol=ncol, frameon=False)  # below the panels: never over a curve
    fig.suptitle(title or ", ".join(env_ids))
    fig.tight_layout(rect=(0, 0.055 * rows + 0.01, 1, 1))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders or summary.json files")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default=None, help="figure title (default: the env ids)")
    parser.add_argument("--labels", nargs="+", default=None, help="one legend label per run (default: exp_name)")
    parser.add_argument("--reference", action="append", default=[], metavar="NAME=VALUE",
                        help="a horizontal reference line, e.g. --reference 'zero action=4.2' (repeatable)")
    args = parser.parse_args(argv)
    references = {}
    for item in args.reference:
        name, sep, value = item.rpartition("=")
        try:
            references[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            parser.error(f"--reference: expected NAME=NUMBER; got {item!r}")
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels needs one label per run: {len(args.runs)} runs, {len(args.labels)} labels")
    plot([load_summary(r) for r in args.runs], args.out, args.title, args.labels, references)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])

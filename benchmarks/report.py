"""Aggregate trainer run folders into a markdown table and learning-curve plots.

    python benchmarks/report.py RUN_ROOT_OR_FOLDER [...] --out DIR

Every folder under the given paths that holds a ``summary.json`` (as written by the cleanrl_ppo trainers) is one
run. Runs are grouped by (env_id, exp_name, settings digest): runs of other settings (budget, flags, number of ranks;
see playground_gym.run_settings) are never averaged together but get rows of their own, and a section names the
flags in which the rows of one (env, trainer) differ. Within a group each seed counts once: of several runs of one
seed the newest is used and the others are listed. For each group the report gives the number of seeds and the mean ±
sample standard deviation (ddof=1; a single seed shows its value alone) over seeds of final eval return, strength,
final_strength, total_reward_ma, SPS and wall time, next to the reference scores of
``benchmarks/data/reference_scores.json`` (whose ``_sources`` say where each column comes from and what it measures).

Outputs: ``DIR/report.md`` and ``DIR/plots/<env>.png``: the ``eval/episodic_return`` scalar of the TensorBoard event
files against env steps, one colour per trainer, its mean over seeds as a line, min-max over seeds as a band, each
seed as a thin line, and the random-policy return (from the summaries) dashed. A run without event files falls back
to its summary's ``eval_history``. Failed runs recorded by benchmarks/campaign.py (``status/*.json`` in a given
path, e.g. the campaign's --out folder, or ``--status DIR``) are listed with their reasons; a status record that is
not valid JSON is listed as such, never skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from playground_gym.experiment import TOTAL_REWARD_MA_FRACTION, total_reward_ma
from playground_gym.run_settings import differing_settings, settings_of, summary_digest

__all__ = [
    "DEFAULT_REFERENCES",
    "METRICS",
    "Run",
    "find_runs",
    "group_runs",
    "load_references",
    "load_statuses",
    "mean_std",
    "read_curve",
    "render_table",
    "write_plots",
    "write_report",
    "main",
]

DEFAULT_REFERENCES = Path(__file__).resolve().parent / "data" / "reference_scores.json"
EVAL_TAG = "eval/episodic_return"
TRAIN_TAG = "charts/episodic_return"
# (summary.json key, column header, format of one number)
METRICS: tuple[tuple[str, str, str], ...] = (
    ("final_eval_return", "final eval return", "{:.1f}"),
    ("strength", "strength", "{:.1f}"),
    ("final_strength", "final_strength", "{:.1f}"),
    ("total_reward_ma", "total_reward_ma", "{:.1f}"),
    ("sps", "SPS", "{:.0f}"),
    ("wall_time_s", "wall time (s)", "{:.0f}"),
)
DASH = "\u2014"


@dataclass
class Run:
    """One run folder and its summary."""

    path: Path
    summary: dict[str, Any]

    @property
    def env_id(self) -> str:
        return str(self.summary.get("env_id") or self.summary.get("args", {}).get("env_id") or "?")

    @property
    def exp_name(self) -> str:
        return str(self.summary.get("exp_name") or self.summary.get("args", {}).get("exp_name") or "?")

    @property
    def seed(self) -> Any:
        return self.summary.get("seed", self.summary.get("args", {}).get("seed"))

    @property
    def args(self) -> dict[str, Any]:
        args = self.summary.get("args")
        return args if isinstance(args, dict) else {}

    @property
    def settings_fields(self) -> dict[str, Any]:
        """What the settings digest covers (playground_gym.run_settings.settings_of)."""
        return settings_of(self.args, self.summary.get("world_size") or 1, self.summary.get("extensions") or ())

    @property
    def settings(self) -> str:
        """The settings digest of the run's resolved args (``?`` for a summary without args)."""
        return summary_digest(self.summary) or "?"

    @property
    def started(self) -> float:
        """When the run started: its folder's ``__<unix time>`` suffix (the trainers name it so), else summary.json's
        modification time (which a copy or a checkout resets)."""
        suffix = self.path.name.rsplit("__", 1)[-1]
        if suffix.isdigit() and "__" in self.path.name:
            return float(suffix)
        try:
            return (self.path / "summary.json").stat().st_mtime
        except OSError:
            return 0.0


@dataclass
class Group:
    """The runs of one env, trainer and settings digest, one per seed; ``superseded``: older runs of those seeds."""

    env_id: str
    exp_name: str
    settings: str = "?"
    runs: list[Run] = field(default_factory=list)
    superseded: list[Run] = field(default_factory=list)


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every folder at or under ``paths`` holding a readable summary.json (a summary.json path also counts).

    Raises:
        FileNotFoundError: a path does not exist.
    """
    runs: dict[Path, Run] = {}
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise FileNotFoundError(f"no such run folder or root: {str(p)!r}")
        candidates = [p] if p.is_file() and p.name == "summary.json" else sorted(p.rglob("summary.json"))
        for s in candidates:
            try:
                summary = json.loads(s.read_text())
            except (OSError, json.JSONDecodeError) as e:
                print(f"report.py: warning: skipping unreadable {s}: {e}", file=sys.stderr)
                continue
            if isinstance(summary, dict):
                run = Run(s.parent, summary)
                if "train_history" not in summary:  # written before total_reward_ma was SLM-Lab's: from TensorBoard
                    steps, values = read_curve(run, TRAIN_TAG)
                    summary["total_reward_ma"] = total_reward_ma(steps, values, summary.get("env_steps") or 0)
                runs[s.parent.resolve()] = run
    return sorted(runs.values(), key=lambda r: (r.env_id, r.exp_name, _seed_key(r.seed), str(r.path)))


def _seed_key(seed: Any) -> tuple[int, float, str]:
    return (0, float(seed), "") if isinstance(seed, (int, float)) else (1, 0.0, str(seed))


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs grouped by (env_id, exp_name, settings digest), sorted so; each seed once per group (its newest run, by
    :attr:`Run.started`; the older ones in ``superseded``)."""
    groups: dict[tuple[str, str, str], Group] = {}
    for run in runs:
        key = (run.env_id, run.exp_name, run.settings)
        groups.setdefault(key, Group(*key)).runs.append(run)
    for g in groups.values():
        newest: dict[str, Run] = {}
        for run in sorted(g.runs, key=lambda r: (r.started, str(r.path))):
            seed = json.dumps(run.seed)
            if seed in newest:
                g.superseded.append(newest[seed])
            newest[seed] = run
        g.runs = sorted(newest.values(), key=lambda r: (_seed_key(r.seed), str(r.path)))
    return [groups[k] for k in sorted(groups)]


def code_differences(groups: Sequence[Group]) -> list[str]:
    """Markdown lines naming each row whose runs were written by different code (``summary.json``'s ``code``:
    playground_gym's source digest, the trainer file's hash, library versions), with what differs; runs without the
    record are not compared."""
    lines = []
    for g in groups:
        codes = [r.summary["code"] for r in g.runs if isinstance(r.summary.get("code"), dict)]
        fields = sorted({k for c in codes for k in c if len({json.dumps(x.get(k)) for x in codes}) > 1})
        if fields:
            values = "; ".join(f"`{k}`: {', '.join(sorted({str(c.get(k)) for c in codes}))}" for k in fields)
            lines.append(f"- {g.env_id} / {g.exp_name} `{g.settings[:8]}`: {values}")
    return lines


def settings_differences(groups: Sequence[Group]) -> list[str]:
    """Markdown lines naming, for each (env, trainer) with rows of several settings, the flags in which each row's
    settings differ from the first row's."""
    by_pair: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        by_pair.setdefault((g.env_id, g.exp_name), []).append(g)
    lines = []
    for (env_id, exp_name), gs in by_pair.items():
        if len(gs) < 2:
            continue
        first = gs[0]
        for g in gs[1:]:
            diff = differing_settings(first.runs[0].settings_fields, g.runs[0].settings_fields)
            text = "; ".join(f"`{k}` {a!r} vs {b!r}" for k, (a, b) in diff.items()) or "(no args to compare)"
            lines.append(f"- {env_id} / {exp_name}: settings `{first.settings[:8]}` vs `{g.settings[:8]}`: {text}")
    return lines


def _finite(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def mean_std(values: Iterable[Any]) -> tuple[float, float | None, int] | None:
    """(mean, sample std or None for one value, count) of the finite numbers in ``values``; None if there are none."""
    xs = _finite(values)
    if not xs:
        return None
    arr = np.asarray(xs, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None), len(arr)


def _fmt(stat: tuple[float, float | None, int] | None, fmt: str, n_runs: int) -> str:
    if stat is None:
        return DASH
    mean, std, n = stat
    text = fmt.format(mean) if std is None else f"{fmt.format(mean)} ± {fmt.format(std)}"
    return text if n == n_runs else f"{text} (n={n})"


def load_references(path: str | Path | None = DEFAULT_REFERENCES) -> dict[str, Any]:
    """The reference-score file; an empty table if ``path`` is None or missing."""
    if path is None or not Path(path).is_file():
        return {"_sources": {}}
    return json.loads(Path(path).read_text())


def _reference(refs: dict[str, Any], source: str, env_id: str) -> str:
    entry = refs.get(source, {}).get(env_id)
    if entry is None:
        return DASH
    value = entry.get("value") if isinstance(entry, dict) else entry
    return DASH if value is None else f"{float(value):.1f}"


def load_statuses(dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Status records (``*.json`` written by campaign.py) in ``dirs``; missing folders are ignored. A record that
    cannot be read as a JSON object becomes ``{"key": <file stem>, "status": "unreadable", "reason": ...}`` (with a
    warning on stderr): a run never drops out of the report unseen."""
    out = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.json")):
            try:
                rec = json.loads(f.read_text())
                if not isinstance(rec, dict):
                    raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
            except (OSError, ValueError) as e:  # ValueError: invalid JSON or UTF-8
                print(f"report.py: warning: unreadable status record {f}: {e}", file=sys.stderr)
                rec = {"key": f.stem, "status": "unreadable", "reason": f"status record {f} is not readable JSON: "
                                                                        f"{type(e).__name__}: {e}"}
            out.append(rec)
    return out


def render_table(groups: Sequence[Group], refs: dict[str, Any]) -> str:
    """The markdown table: one row per (env, trainer)."""
    header = (["env", "trainer", "settings", "seeds"] + [h for _, h, _ in METRICS]
              + ["SLM-Lab PPO (ref)", "Playground paper (ref)"])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for g in groups:
        seeds = sorted({r.seed for r in g.runs}, key=_seed_key)
        cells = [g.env_id, g.exp_name, f"`{g.settings[:8]}`", f"{len(g.runs)} ({', '.join(map(str, seeds))})"]
        for key, _, fmt in METRICS:
            cells.append(_fmt(mean_std(r.summary.get(key) for r in g.runs), fmt, len(g.runs)))
        cells += [_reference(refs, "slm_lab", g.env_id), _reference(refs, "playground_paper", g.env_id)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_curve(run: Run, tag: str = EVAL_TAG) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, values) of ``tag`` from the run's TensorBoard event files, else (the eval tag only) from summary
    eval_history; empty where neither has it."""
    if any(run.path.glob("events.out.tfevents.*")):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run.path), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            by_step = {e.step: e.value for e in acc.Scalars(tag)}  # a resumed run may repeat a step: last one wins
            steps = np.array(sorted(by_step), dtype=float)
            return steps, np.array([by_step[s] for s in sorted(by_step)], dtype=float)
    hist = (run.summary.get("eval_history") or []) if tag == EVAL_TAG else []
    steps = np.array([h["step"] for h in hist], dtype=float)
    return steps, np.array([h["return"] for h in hist], dtype=float)


def _mean_band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds on the union of steps within the range all seeds cover (linear interpolation)."""
    curves = [(s, v) for s, v in curves if len(s)]
    lo = max(s[0] for s, _ in curves)
    hi = min(s[-1] for s, _ in curves)
    grid = np.unique(np.concatenate([s for s, _ in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    if not len(grid):
        grid = curves[0][0]
    ys = np.stack([np.interp(grid, s, v) for s, v in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def write_plots(groups: Sequence[Group], out_dir: str | Path) -> list[Path]:
    """One PNG per env in ``out_dir`` (all trainers and seeds); returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_env: dict[str, list[Group]] = {}
    for g in groups:
        by_env.setdefault(g.env_id, []).append(g)
    written = []
    for env_id, env_groups in by_env.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        baselines = []
        drew = False
        for i, g in enumerate(env_groups):
            color = colors[i % len(colors)]
            curves = [read_curve(r) for r in g.runs]
            curves = [(s, v) for s, v in curves if len(s)]
            baselines += _finite(r.summary.get("random_policy_return") for r in g.runs)
            if not curves:
                continue
            drew = True
            for s, v in curves:
                ax.plot(s, v, color=color, alpha=0.3, linewidth=0.8)
            grid, mean, lo, hi = _mean_band(curves)
            shared = sum(other.exp_name == g.exp_name for other in env_groups) > 1  # name the settings then
            name = f"{g.exp_name} [{g.settings[:8]}]" if shared else g.exp_name
            ax.plot(grid, mean, color=color, linewidth=2, marker="o", markersize=3,
                    label=f"{name} (mean of {len(curves)})")
            if len(curves) > 1:
                ax.fill_between(grid, lo, hi, color=color, alpha=0.15)
        if baselines:
            ax.axhline(float(np.mean(baselines)), color="gray", linestyle="--", linewidth=1, label="random policy")
        if not drew:
            ax.text(0.5, 0.5, "no eval/episodic_return data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{env_id}: evaluation return (band = min-max over seeds)")
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval episodic return")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{env_id}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _sources_text(refs: dict[str, Any]) -> str:
    lines = []
    names = {"slm_lab": "SLM-Lab PPO (ref)", "playground_paper": "Playground paper (ref)"}
    for key, src in refs.get("_sources", {}).items():
        if not isinstance(src, dict):
            continue
        parts = [f"**{names.get(key, key)}**: {src.get('title', key)}"]
        if src.get("url"):
            parts.append(f"<{src['url']}>")
        if src.get("measures"):
            parts.append(f"Measures: {src['measures'].rstrip('.')}.")
        if src.get("transcribed"):
            parts.append(f"Transcribed: {src['transcribed'].rstrip('.')}.")
        lines.append("- " + " ".join(parts))
    return "\n".join(lines) if lines else "- (no reference file)"


def write_report(paths: Sequence[str | Path], out: str | Path, references: str | Path | None = DEFAULT_REFERENCES,
                 status_dirs: Sequence[str | Path] = (), title: str = "Benchmark report",
                 notes: Sequence[str] = ()) -> Path:
    """Write ``out/report.md`` and ``out/plots/<env>.png`` for the runs under ``paths``; returns the report path.

    ``status_dirs``: folders of campaign status records; ``<path>/status`` of each given path is also read.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = find_runs(paths)
    groups = group_runs(runs)
    refs = load_references(references)
    dirs = list(status_dirs) + [Path(p) / "status" for p in paths]
    seen, statuses = set(), []
    for rec in load_statuses(dict.fromkeys(Path(d).resolve() for d in dirs)):
        key = rec.get("key") or json.dumps(rec, sort_keys=True)
        if key not in seen:
            seen.add(key)
            statuses.append(rec)
    # a record of a run that has since completed with the same settings (rerun, or killed after its summary) is moot
    done = {(f"{r.env_id}__{r.exp_name}__{r.seed}", r.settings) for g in groups for r in g.runs + g.superseded}
    failed = [s for s in statuses if s.get("status") not in ("ok", "completed")
              and (s.get("key"), s.get("settings_digest")) not in done]
    plots = write_plots(groups, out / "plots")

    md = [f"# {title}", ""]
    used = sum(len(g.runs) for g in groups)
    md += [f"{used} completed runs in {len(groups)} (env, trainer, settings) groups, read from: "
           + ", ".join(f"`{p}`" for p in paths) + "." + (f" {len(runs) - used} older runs of a seed already counted "
                                                         f"are left out (listed below)." if used < len(runs) else ""),
           ""]
    md += list(notes) + ([""] if notes else [])
    md += ["Each cell: mean ± sample std (ddof=1) over seeds (one seed: its value; `(n=k)`: only k seeds had the "
           "value). strength = mean deterministic eval return over the run (after step 0) minus the random-policy "
           "return; final_strength = final eval return minus it; total_reward_ma = SLM-Lab's end-of-training score: "
           f"the mean training return (episodes that ended while training, unscaled) over the last "
           f"{TOTAL_REWARD_MA_FRACTION:.0%} of the run's env steps (from TensorBoard's charts/episodic_return for "
           "summaries written before it was defined so). The SLM-Lab column is SLM-Lab's total_reward_ma (its training "
           "returns, unscaled as ours, at 100M frames); the Playground-paper column its final eval return. "
           f"References are other setups' scores at other budgets, for orientation only; {DASH} = none. settings = the "
           "first digits of the runs' settings digest (playground_gym.run_settings): rows with different digests "
           "trained with different resolved flags and are never averaged together.", ""]
    md += [render_table(groups, refs) if groups else "_No completed runs (no summary.json found)._", ""]
    differences = settings_differences(groups)
    if differences:
        md += ["## Rows of one env and trainer with different settings", "", *differences, ""]
    mixed_code = code_differences(groups)
    if mixed_code:
        md += ["## Rows whose seeds ran on different code", "",
               "Same settings, but the seeds were written by different code (this package's source, the trainer "
               "file or a library version); their spread includes that difference:", "", *mixed_code, ""]
    superseded = [(g, r) for g in groups for r in g.superseded]
    if superseded:
        md += ["## Runs left out (an older run of a seed with the same settings)", ""]
        md += [f"- {g.env_id} / {g.exp_name} seed {r.seed}: `{r.path}`" for g, r in superseded] + [""]
    md += ["## Reference sources", "", _sources_text(refs), ""]
    if failed:
        md += ["## Failed or unfinished runs", "", "| run | status | exit code | reason | log |",
               "|---|---|---|---|---|"]
        for s in failed:
            reason = str(s.get("reason", "")).replace("|", "\\|").replace("\n", " ")
            md.append(f"| {s.get('key', '?')} | {s.get('status')} | {s.get('returncode')} | {reason} | "
                      f"`{s.get('log', '')}` |")
        md.append("")
    if plots:
        md += ["## Learning curves", ""]
        for p in plots:
            md += [f"### {p.stem}", "", f"![{p.stem}](plots/{p.name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="report.py", description=__doc__.split("\n\n")[0] + " Writes OUT/report.md and OUT/plots/<env>.png.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run folders, or roots searched recursively for summary.json")
    parser.add_argument("--out", required=True, help="output folder for report.md and plots/")
    parser.add_argument("--references", default=str(DEFAULT_REFERENCES),
                        help="reference-score JSON (default: %(default)s); 'none' for no references")
    parser.add_argument("--status", action="append", default=[],
                        help="folder of campaign status records to list failures from (repeatable)")
    parser.add_argument("--title", default="Benchmark report")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.paths, args.out, None if args.references == "none" else args.references,
                            args.status, args.title)
    except FileNotFoundError as e:
        parser.error(str(e))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

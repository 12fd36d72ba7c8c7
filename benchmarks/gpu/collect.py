"""The GPU kit's bookkeeping: the machine's facts, and one summary of every step's results (run by run.sh).

    python benchmarks/gpu/collect.py --environment cuda FILE     # versions and devices, as JSON, to FILE
    python benchmarks/gpu/collect.py WORK OUT --mode gpu         # WORK's step results -> OUT/{summary.md,
                                                                 #   results.json, logs.tar.gz}

Three files only come back from the device machine's $OUT in this workplace (it returns at most 8), so everything
raw (logs, per-step JSON) travels packed in logs.tar.gz, and summary.md holds the tables a reader wants.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

DISTRIBUTIONS = ("torch", "jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "mujoco", "mujoco-mjx",
                 "playground", "brax", "gymnasium", "tyro", "numpy", "warp-lang")


def environment(device: str) -> dict:
    """Versions of everything that matters, what torch and JAX see, and nvidia-smi's view of the GPU."""
    versions = {}
    for name in DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    facts: dict = {"python": sys.version.split()[0], "platform": platform.platform(), "versions": versions,
                   "requested_device": device}
    import torch

    facts["torch_cuda"] = {"available": torch.cuda.is_available(), "version": torch.version.cuda,
                           "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    import jax

    facts["jax_devices"] = [str(d) for d in jax.devices()]
    facts["jax_backend"] = jax.default_backend()
    import playground_gym  # noqa: F401  (the import itself is part of the check: every carried wheel is found)
    from mujoco_playground import registry  # noqa: F401
    from brax.training.agents.ppo import train  # noqa: F401

    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        facts["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        facts["nvidia_smi"] = f"unavailable: {err}"
    return facts


def junit(path: Path) -> dict | None:
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = tag
                message = (child.get("message") or "")[:300]
                break
        else:
            message = ""
        cases.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)),
                      "message": message})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failure", "error", "skipped")}
    return {"counts": counts, "cases": cases}


def throughput_rows(work: Path) -> list[dict]:
    rows = []
    for path in sorted(work.glob("throughput_*.json")):
        for env_id, res in json.loads(path.read_text()).items():
            med = {k: statistics.median(v) for k, v in res["sps"].items()}
            num_envs = int(path.stem.rsplit("_", 1)[1])
            rows.append({"env": env_id, "num_envs": num_envs, **{f"sps_{k}": v for k, v in med.items()},
                         "ours_over_raw": res["ratio_raw"], "ours_over_upstream": res["ratio_upstream"]})
    return sorted(rows, key=lambda r: (r["num_envs"], r["env"]))


def peer_brax(work: Path) -> dict | None:
    path = work / "peer_brax" / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    table = work / "peer_brax" / "table.md"
    cfg = results["config"]
    return {"env": cfg["env_id"], "preset": cfg["preset"], "num_envs": cfg["num_envs"],
            "total_timesteps": cfg["total_timesteps"],
            "brax": [{k: r[k] for k in ("seed", "sps", "train_sps", "wall_time_s", "env_steps")} |
                     {"final_eval": r["eval_history"][-1]["return"]} for r in results["brax"]],
            "ours": [{k: r[k] for k in ("seed", "sps", "wall_time_s", "env_steps")} |
                     {"final_eval": r["eval_history"][-1]["return"]} for r in results["ours"]],
            "table": table.read_text() if table.exists() else None}


def trainer_summary(work: Path, folder: str = "ppo_scale") -> dict | None:
    found = sorted(work.glob(f"{folder}/*/summary.json"))
    if not found:
        return None
    s = json.loads(found[-1].read_text())
    keys = ("env_id", "env_steps", "wall_time_s", "sps", "final_eval_return", "env_trace_counts")
    return {k: s.get(k) for k in keys} | {"num_envs": s["args"]["num_envs"], "device": s["args"].get("device"),
                                          "compile": s["args"].get("compile"), "cudagraphs": s["args"].get("cudagraphs")}


def robot_summary(work: Path) -> dict | None:
    """ppo_multiunroll on Go1 at its official scale: SPS, evaluation returns, and the robot settings it ran with."""
    found = sorted(work.glob("robot_go1/*/summary.json"))
    if not found:
        return None
    s = json.loads(found[-1].read_text())
    a = s["args"]
    return {k: s.get(k) for k in ("env_id", "env_steps", "wall_time_s", "sps", "final_eval_return")} | {
        "num_envs": a["num_envs"], "critic_obs_key": a.get("critic_obs_key"),
        "domain_randomization": a.get("domain_randomization"),
        "eval_history": [(e["step"], e["return"]) for e in s.get("eval_history", [])]}


def summary_markdown(results: dict) -> str:
    env = results.get("environment") or {}
    lines = [f"# GPU kit results ({results['mode']})", ""]
    if env:
        v = env.get("versions", {})
        lines += [f"- machine: {env.get('nvidia_smi') or 'no GPU'}; torch {v.get('torch')} "
                  f"(CUDA {env.get('torch_cuda', {}).get('version')}), jax {v.get('jax')} on "
                  f"{env.get('jax_backend')}, mujoco {v.get('mujoco')}, mujoco-mjx {v.get('mujoco-mjx')}, "
                  f"playground {v.get('playground')}, brax {v.get('brax')}, warp-lang {v.get('warp-lang')}",
                  f"- python {env.get('python')}; JAX devices {env.get('jax_devices')}", ""]
    lines += ["## Steps", "", "| step | status | seconds | limit (s) |", "|---|---|---:|---:|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']} | {s['limit_s']} |" for s in results["steps"]]
    for name in ("cuda_tests", "trainer_sync"):
        res = results.get(name)
        if res:
            c = res["counts"]
            lines += ["", f"## {name}: {c['passed']} passed, {c['failure'] + c['error']} failed, {c['skipped']} "
                      "skipped", ""]
            lines += [f"- {t['outcome']}: {t['test']} ({t['seconds']:.1f} s){': ' + t['message'] if t['message'] else ''}"
                      for t in res["cases"]]
    if results.get("throughput"):
        lines += ["", "## Env throughput (median of interleaved rounds; env steps per second)", "",
                  "| env | envs | raw jit(vmap(step)) | upstream wrapper | ours (torch) | ours (jax mode) | ours/raw | "
                  "ours/upstream | ours (jax mode)/raw |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        na = lambda v, fmt: format(v, fmt) if isinstance(v, (int, float)) else "-"  # noqa: E731
        lines += [f"| {r['env']} | {r['num_envs']} | {r['sps_raw']:,.0f} | {r['sps_upstream']:,.0f} | "
                  f"{r['sps_ours']:,.0f} | {na(r.get('sps_ours_jax'), ',.0f')} | {r['ours_over_raw']:.2f} | "
                  f"{r['ours_over_upstream']:.2f} | "
                  f"{na(r.get('sps_ours_jax') and r['sps_ours_jax'] / r['sps_raw'], '.2f')} |"
                  for r in results["throughput"]]
    peer = results.get("peer_brax")
    if peer:
        lines += ["", f"## ppo_multiunroll vs Brax ppo.train: {peer['env']}, preset {peer['preset']}, "
                  f"{peer['num_envs']} envs, {peer['total_timesteps']:,} env steps", ""]
        for side in ("brax", "ours"):
            lines += [f"- {side} seed {r['seed']}: {r['sps']:,.0f} SPS over the whole run ({r['wall_time_s']} s), "
                      f"final eval {r['final_eval']:.1f}" for r in peer[side]]
        if peer["table"]:
            lines += ["", peer["table"]]
    for key in ("ppo_scale", "ppo_compile"):
        scale = results.get(key)
        if scale:
            flags = " ".join(f"--{k}" for k in ("compile", "cudagraphs") if scale.get(k)) or "eager"
            lines += ["", f"## ppo_continuous ({flags}) at {scale['num_envs']} envs on {scale['device']}: "
                      f"{scale['sps']:,} SPS ({scale['env_steps']:,} env steps in {scale['wall_time_s']} s, compiles "
                      f"included), final eval {scale['final_eval_return']:.1f}"]
    robot = results.get("robot_go1")
    if robot:
        lines += ["", f"## ppo_multiunroll on {robot['env_id']} (official config: {robot['num_envs']} envs, critic "
                  f"{robot['critic_obs_key']}, randomisation {robot['domain_randomization']}): {robot['sps']:,} SPS "
                  f"({robot['env_steps']:,} env steps in {robot['wall_time_s']} s, compiles included)", "",
                  "| env steps | eval return |", "|---:|---:|"]
        lines += [f"| {step:,} | {ret:.2f} |" for step, ret in robot["eval_history"]]
    return "\n".join(lines) + "\n"


def collect(work: Path, out: Path, mode: str) -> dict:
    """Gather every step's results into OUT. Each section is read on its own: one that raises (a step's half-written
    output) is recorded under ``errors`` and the others are still written."""
    env_path = work / "environment.json"
    sections = {
        "steps": lambda: json.loads((work / "steps.json").read_text()),
        "environment": lambda: (json.loads(env_path.read_text()) if env_path.exists() and env_path.stat().st_size
                                else None),
        "cuda_tests": lambda: junit(work / "cuda_tests.xml"), "trainer_sync": lambda: junit(work / "trainer_sync.xml"),
        "throughput": lambda: throughput_rows(work), "peer_brax": lambda: peer_brax(work),
        "ppo_scale": lambda: trainer_summary(work), "ppo_compile": lambda: trainer_summary(work, "ppo_compile"),
        "robot_go1": lambda: robot_summary(work),
    }
    results: dict = {"mode": mode, "errors": {}}
    for name, read in sections.items():
        try:
            results[name] = read()
        except Exception as err:  # noqa: BLE001 -- one broken section must not cost the others
            results[name] = [] if name in ("steps", "throughput") else None
            results["errors"][name] = f"{type(err).__name__}: {err}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    summary = summary_markdown(results)
    if results["errors"]:
        summary += "\n## Sections that could not be read\n\n" + "\n".join(
            f"- {name}: {error}" for name, error in results["errors"].items()) + "\n"
    (out / "summary.md").write_text(summary)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file() and "jax_cache" not in path.parts and path.suffix in {".log", ".json", ".xml", ".md"}:
                tar.add(path, arcname=str(path.relative_to(work)))
    return results


def junit_counts(path: Path) -> dict[str, int]:
    """Passed, skipped, failed and errored test cases of a junit XML report."""
    import xml.etree.ElementTree as ET

    counts = {"passed": 0, "skipped": 0, "failure": 0, "error": 0}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        counts[kinds[0] if kinds else "passed"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", nargs="?")
    parser.add_argument("out", nargs="?")
    parser.add_argument("--mode", default="gpu")
    parser.add_argument("--environment", metavar="DEVICE",
                        help="write the machine's facts as JSON to the file WORK names, and exit")
    parser.add_argument("--require-passed", action="store_true",
                        help="exit 1 unless the junit XML that WORK names has a passed test (GPU mode: all skipped "
                             "means JAX saw no GPU, and nothing was proven)")
    args = parser.parse_args()
    if args.require_passed:
        counts = junit_counts(Path(args.work))
        if not counts["passed"]:
            raise SystemExit(f"collect.py: no test passed in {args.work} ({counts}): every one was skipped or failed")
        return
    if args.environment:
        if not args.work:
            parser.error("--environment DEVICE: expected the JSON file to write")
        # written to a file, not stdout: MJX prints its optional-import notices ("Failed to import warp") to stdout
        facts = environment(args.environment)
        Path(args.work).write_text(json.dumps(facts, indent=1))
        print(json.dumps(facts, indent=1))
        return
    if not (args.work and args.out):
        parser.error("expected WORK and OUT folders (or --environment DEVICE)")
    collect(Path(args.work), Path(args.out), args.mode)


if __name__ == "__main__":
    main()

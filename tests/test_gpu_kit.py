"""The GPU kit (benchmarks/gpu/) rehearsed on this CPU, so that it cannot rot between the times a GPU is lent.

The rehearsal runs every step of `run.sh` at tiny sizes (a few minutes on 2 cores: each step is its own process and
pays its own JIT compiles, as on the GPU machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "benchmarks" / "gpu" / "run.sh"


def run_kit(tmp_path: Path, *args: str, caps: str = "") -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_KIT_WORK=str(tmp_path / "work"), PYTHON=sys.executable,
               GPU_KIT_CAPS=caps)
    proc = subprocess.run(["bash", str(KIT), "--rehearse", *args], env=env, capture_output=True, text=True,
                          timeout=1200)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    return proc, results


def test_the_whole_rehearsal_passes(tmp_path):
    proc, results = run_kit(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = {s["step"]: s["status"] for s in results["steps"]}
    assert steps == {"setup": "ok", "cuda_tests": "ok", "trainer_sync": "ok", "throughput_CartpoleBalance_32": "ok",
                     "peer_brax_brax": "ok", "peer_brax_ours": "ok", "ppo_scale": "ok", "ppo_compile": "ok"}
    assert results["environment"]["requested_device"] == "cpu" and results["environment"]["versions"]["mujoco"]
    # on a machine without a GPU every CUDA test is collected and skipped (with its reason), none fails
    cuda_tests = sum(1 for line in (ROOT / "tests" / "test_cuda.py").read_text().splitlines()
                     if line.startswith("def test_") and "trainer" not in line)
    assert results["cuda_tests"]["counts"]["skipped"] + results["cuda_tests"]["counts"]["passed"] == cuda_tests
    assert results["trainer_sync"]["counts"]["failure"] == 0 and len(results["trainer_sync"]["cases"]) == 3
    (row,) = results["throughput"]
    assert row["num_envs"] == 32 and min(row["sps_raw"], row["sps_upstream"], row["sps_ours"]) > 0
    peer = results["peer_brax"]
    assert len(peer["brax"]) == len(peer["ours"]) == 1 and peer["total_timesteps"] == 4096
    assert peer["ours"][0]["env_steps"] == 4096 and "ours / Brax" in peer["table"]
    assert results["ppo_scale"]["env_steps"] == 1024 and results["ppo_scale"]["device"] == "cpu"
    assert results["ppo_compile"]["env_steps"] == 1024 and results["ppo_compile"]["compile"] is True
    # three files come back from the device machine (it returns at most 8): the summary, the numbers, the logs
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == ["logs.tar.gz", "results.json", "summary.md"]
    with tarfile.open(tmp_path / "out" / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert {"logs/setup.log", "logs/ppo_scale.log", "steps.json", "peer_brax/results.json"} <= set(names)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| ppo_scale | ok |" in summary and "ours/upstream" in summary


@pytest.mark.parametrize("caps, budget, status", [("cuda_tests=1", "540", "timeout"), ("", "5", "skipped")])
def test_a_step_over_its_time_is_recorded_and_the_kit_goes_on(tmp_path, caps, budget, status):
    proc, results = run_kit(tmp_path, "--only", "cuda_tests", "--budget", budget, caps=caps)
    assert [(s["step"], s["status"]) for s in results["steps"]] == [("cuda_tests", status)]
    assert proc.returncode == (1 if status == "timeout" else 0)
    assert f"| cuda_tests | {status} |" in (tmp_path / "out" / "summary.md").read_text()


def test_bad_arguments_are_refused():
    proc = subprocess.run(["bash", str(KIT), "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "expected --rehearse" in proc.stderr


def test_the_carried_wheels_are_pinned_once_each():
    lines = [line.strip() for line in (ROOT / "benchmarks" / "gpu" / "wheels.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    names = [line.split("==")[0].lower().replace("_", "-") for line in lines]
    assert all("==" in line for line in lines) and len(set(names)) == len(names)
    # what playground_gym, its trainers and the kit import at run time and the GPU image lacks (see wheels.txt)
    assert {"mujoco", "mujoco-core", "mujoco-mjx", "playground", "brax", "gymnasium", "tyro", "ml-collections",
            "trimesh", "jaxopt", "pyopengl", "farama-notifications", "docstring-parser"} <= set(names)


@pytest.mark.parametrize("mode", [[], ["--rehearse"]])
def test_the_core_plan_fits_the_budget_most_valuable_steps_first(mode):
    """The GPU kit's one call: the core steps' caps add up to no more than the budget (540 s of a 600 s call), in the
    order a user most wants them proven; the rehearsal runs the same order with CPU-sized caps."""
    proc = subprocess.run(["bash", str(KIT), *mode, "--plan"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    *steps, total = proc.stdout.split("\n")[:-1]
    plan = [line.split() for line in steps]
    core = [name for name, _, _, kind in plan if kind == "core"]
    assert core[:4] == ["setup", "peer_brax_brax", "peer_brax_ours", "trainer_sync"]
    assert core[4].startswith("throughput_") and core[5] == "ppo_scale"
    # on the GPU, --compile's run is the first extra (the core is sized for cold GPU processes' compiles)
    first_extras = ["ppo_compile", "cuda_tests"] if not mode else ["cuda_tests"]
    assert core[6:] == ([] if not mode else ["ppo_compile"])
    assert [name for name, _, _, kind in plan if kind == "extra"][:len(first_extras)] == first_extras
    _, core_total, _, budget = total.split()
    assert int(core_total) == sum(int(cap) for _, cap, _, kind in plan if kind == "core") <= int(budget)
    assert int(budget) == (540 if not mode else 1100)
    assert all(0 < int(minimum) <= int(cap) for _, cap, minimum, _ in plan if int(cap) >= 15)


def test_in_gpu_mode_a_test_step_with_every_test_skipped_fails(tmp_path):
    """Here JAX sees no GPU: in GPU mode that is no success (in the rehearsal the same skips are expected)."""
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_KIT_WORK=str(tmp_path / "work"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(KIT), "--only", "cuda_tests", "--budget", "300"], env=env, capture_output=True,
                          text=True, timeout=600)
    steps = {s["step"]: s["status"] for s in json.loads((tmp_path / "out" / "results.json").read_text())["steps"]}
    assert steps["cuda_tests"] == "failed" and proc.returncode == 1, proc.stdout[-2000:]
    assert "every one was skipped" in (tmp_path / "work" / "logs" / "cuda_tests.log").read_text()


def test_the_carried_wheels_are_what_the_tests_ran_with():
    """One place for the versions: every carried package installed here (the CPU venv the suite runs in) has the
    pinned version, so the GPU machine runs what CI tested."""
    import importlib.metadata

    differ = {}
    for line in (ROOT / "benchmarks" / "gpu" / "wheels.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==")
            try:
                installed = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
            if installed != version:
                differ[name] = (version, installed)
    assert not differ, f"wheels.txt pins (pinned, installed here): {differ}; update wheels.txt"


def test_one_broken_section_does_not_cost_the_others(tmp_path):
    """collect.py reads each step's output on its own: a half-written throughput JSON is recorded as an error and the
    steps, the other sections and the summary are still written."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
    import collect

    work = tmp_path / "work"
    work.mkdir()
    (work / "steps.json").write_text(json.dumps([{"step": "throughput_X_4", "status": "ok", "rc": 0, "seconds": 1,
                                                  "limit_s": 40}]))
    (work / "throughput_X_4.json").write_text("{not json")
    results = collect.collect(work, tmp_path / "out", "gpu")
    assert "throughput" in results["errors"] and results["throughput"] == [] and len(results["steps"]) == 1
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| throughput_X_4 | ok |" in summary and "could not be read" in summary

"""What the trainer tests share: a tiny run's flags, the summary fields, loading and running a trainer script."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

TRAINERS = Path(__file__).resolve().parents[1] / "cleanrl_ppo"

# A tiny run: batch 16 x 64 = 1024 steps, 4 updates, 100-step episodes so that episodes (and truncations) happen;
# 16 eval envs (the default, --num-envs) so that evaluation shares the training envs' compiled step.
TINY = ["--env-id", "playground/CartpoleBalance", "--seed", "3", "--total-timesteps", "4096", "--num-envs", "16",
        "--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "2", "--episode-length", "100",
        "--eval-interval", "2", "--checkpoint-interval", "2", "--save-model"]
# ppo_multiunroll's tiny run (Brax's knobs): 2 unrolls x 16 envs x 16 steps = 512 steps per update; Brax's schedule
# for 4096 steps and 5 evaluations: 4 eval epochs of 2 updates (8 updates), evaluated before training and every 2.
TINY_MULTIUNROLL = ["--env-id", "playground/CartpoleBalance", "--seed", "3", "--total-timesteps", "4096", "--num-envs",
                    "16", "--unroll-length", "16", "--batch-size", "8", "--num-minibatches", "4",
                    "--num-updates-per-batch", "2", "--episode-length", "100",
                    "--num-evals", "5", "--checkpoint-interval", "2", "--num-resets-per-eval", "0", "--save-model"]
SUMMARY_FIELDS = {"env_id", "env_steps", "wall_time_s", "sps", "final_eval_return", "strength", "final_strength",
                  "total_reward_ma", "random_policy_return", "eval_history", "nan_skipped_updates", "env_trace_counts",
                  "args", "settings_digest", "code"}


def load_trainer(name: str) -> ModuleType:
    """Import cleanrl_ppo/<name>.py as module ``name`` (its main() does not run)."""
    spec = importlib.util.spec_from_file_location(name, TRAINERS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # tyro reads field docstrings through the module's source
    spec.loader.exec_module(module)
    return module


def run_trainer(script: Path, args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir())


def tiny_run_in(script: Path, args: list[str], cwd: Path) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Run ``script`` once in ``cwd`` with ``args`` (writing to ``cwd/runs``); returns (cwd, its run folder, result)."""
    result = run_trainer(script, [*args, "--runs-dir", "runs"], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = run_dirs(cwd / "runs")
    return cwd, run_dir, result


def killed_and_resumed_matches(script: Path, args: list[str], cwd: Path, reference: Path, kill_at: int = 2) -> None:
    """Run ``script`` with ``args``, SIGKILL it right after its checkpoint of iteration ``kill_at``, resume it, and
    check that it ends bit-identical to the uninterrupted run in ``reference`` (parameters, normalisers, evals)."""
    import torch

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(script), *args, "--runs-dir", "killed"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"checkpoint: iteration {kill_at},"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(lines)
    (run_dir,) = run_dirs(cwd / "killed")
    assert not (run_dir / "summary.json").exists()  # killed before the end
    result = run_trainer(script, ["--resume", str(run_dir)], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resume: continuing from step" in result.stdout
    name = script.stem
    resumed = torch.load(run_dir / f"{name}.cleanrl_model", weights_only=False)
    expected = torch.load(reference / f"{name}.cleanrl_model", weights_only=False)
    for part in [k for k in expected if k != "args"]:
        for key, value in expected[part].items():
            assert torch.equal(resumed[part][key], value), (part, key)
    history = lambda d: [(e["step"], e["return"]) for e in json.loads((d / "summary.json").read_text())["eval_history"]]
    assert history(run_dir) == history(reference)

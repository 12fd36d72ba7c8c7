"""Tests of cleanrl_ppo/ppo_continuous.py: pure pieces in-process, end-to-end runs as subprocesses (CPU)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from playground_gym import experiment, resolve, run_settings
from trainer_harness import (SUMMARY_FIELDS, TINY, TRAINERS, killed_and_resumed_matches, load_trainer, run_dirs,
                             run_trainer, tiny_run_in)

SCRIPT = TRAINERS / "ppo_continuous.py"


@pytest.fixture(scope="module")
def ppo():
    return load_trainer("ppo_continuous")


def run(args: list[str], cwd: Path, timeout: float = 300):
    return run_trainer(SCRIPT, args, cwd, timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_run_in(SCRIPT, TINY, tmp_path_factory.mktemp("tiny"))


def test_import_has_no_side_effects(tmp_path):
    code = f"import importlib.util as u; s = u.spec_from_file_location('m', {str(SCRIPT)!r}); m = u.module_from_spec(s); " \
           "s.loader.exec_module(m); print('ok', m.Args().env_id)"
    result = subprocess.run([sys.executable, "-c", code, "--num-envs", "-1"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok CartpoleBalance"
    assert list(tmp_path.iterdir()) == []  # no run folder, no files


def test_pieces_importable(ppo):
    for name in ("Args", "Agent", "compute_gae_truncation", "rollout", "update", "main"):
        assert hasattr(ppo, name)
    agent = ppo.Agent(5, 2, (8,), (16, 16), "tanh", 0.0, (-5.0, 1.0))
    action, logprob, entropy, value = agent.get_action_and_value(torch.zeros(3, 5))
    assert action.shape == (3, 2) and logprob.shape == entropy.shape == value.shape == (3,)


def test_log_std_bounds(ppo):
    agent = ppo.Agent(3, 1, log_std_init=5.0, log_std_bounds=(-2.0, 0.5))
    assert torch.allclose(agent.get_distribution(torch.zeros(1, 3)).stddev, torch.tensor(np.exp(0.5), dtype=torch.float32))


def test_gae_truncation_hand_computed(ppo):
    # env 0: time limit after step 1 (bootstrap from V(final_obs) = 2.0, trace cut); env 1: termination after step 1.
    gamma, lam = 0.9, 0.8
    rewards = torch.ones(3, 2)
    values = torch.tensor([[0.5, 0.5], [0.6, 0.6], [0.7, 0.7]])
    next_values = torch.tensor([[0.6, 0.6], [2.0, 2.0], [0.9, 0.9]])
    terminated = torch.tensor([[False, False], [False, True], [False, False]])
    dones = torch.tensor([[False, False], [True, True], [False, False]])
    adv = ppo.compute_gae_truncation(rewards, values, next_values, terminated, dones, gamma, lam)
    # deltas env 0: 1 + .9*.6 - .5 = 1.04; 1 + .9*2 - .6 = 2.2; 1 + .9*.9 - .7 = 1.11
    # A2 = 1.11; A1 = 2.2 (trace cut); A0 = 1.04 + .72 * 2.2 = 2.624
    # env 1: delta1 = 1 - .6 = 0.4 (no bootstrap) -> A1 = 0.4; A0 = 1.04 + .72 * .4 = 1.328
    expected = torch.tensor([[2.624, 1.328], [2.2, 0.4], [1.11, 1.11]])
    assert torch.allclose(adv, expected, atol=1e-6)


def test_gae_without_episode_ends_matches_standard(ppo):
    torch.manual_seed(0)
    T, N, gamma, lam = 7, 3, 0.99, 0.95
    r, v, nv = torch.randn(T, N), torch.randn(T, N), torch.randn(T, N)
    none = torch.zeros(T, N, dtype=torch.bool)
    adv = ppo.compute_gae_truncation(r, v, nv, none, none, gamma, lam)
    expected, last = torch.zeros(T, N), torch.zeros(N)
    for t in reversed(range(T)):
        last = r[t] + gamma * nv[t] - v[t] + gamma * lam * last
        expected[t] = last
    assert torch.allclose(adv, expected, atol=1e-5)


@pytest.mark.parametrize("argv, fragment", [
    (["--num-envs", "-4"], "--num-envs"),
    (["--env-id", "CartpoleBalanc"], "CartpoleBalance"),
    (["--num-minibatches", "7"], "divisible"),
    (["--total-timesteps", "100"], "one batch"),
    (["--gamma", "1.5"], "--gamma"),
    (["--num-envs", "abc"], "--num-envs"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_bad_cli_input_in_process(ppo, argv, fragment):
    with pytest.raises(ppo.CLIError, match=None) as err:
        ppo.main(argv)
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_bad_cli_input_exits_with_one_line(tmp_path):
    result = run(["--num-envs", "0"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["ppo_continuous.py: error: --num-envs must be > 0; got 0"]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()


def test_user_gamma_wins_over_official(ppo):
    args, sources = experiment.resolve_args(ppo.Args(env_id="FingerSpin", gamma=0.9))
    assert args.gamma == 0.9 and sources["gamma"] == "user"
    args, sources = experiment.resolve_args(ppo.Args(env_id="playground/PendulumSwingup"))
    assert args.env_id == "PendulumSwingup" and args.action_repeat == 4 and sources["action_repeat"] != "user"
    assert args.gamma == 0.995


def test_tiny_run_writes_everything(tiny_run):
    _, run_dir, result = tiny_run
    assert run_dir.name.startswith("CartpoleBalance__ppo_continuous__3__")
    assert "gamma=0.995 (official_config['discounting'])" in result.stdout
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "ppo_continuous.cleanrl_model").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_FIELDS <= set(summary)
    # the digest the run records is the one a campaign resolves for the same command line without running it
    (resolved,) = resolve.resolve_commands(SCRIPT, [[*TINY, "--runs-dir", "elsewhere", "--device", "cpu"]])
    assert summary["settings_digest"] == resolved["digest"] == run_settings.settings_digest(summary["args"])
    assert summary["code"]["trainer_sha256"] == hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:16]
    assert summary["code"]["playground_gym_source"] and summary["code"]["torch"]
    assert summary["env_steps"] == 4096 and len(summary["eval_history"]) == 2
    assert summary["env_trace_counts"] == {"reset": 1, "step": 1}  # evaluation shares the training envs' step
    assert summary["final_eval_return"] == summary["eval_history"][-1]["return"]
    train = summary["train_history"]  # the training return of every update that ended episodes
    assert train and all(a["step"] < b["step"] for a, b in zip(train, train[1:]))
    late = [e["return"] for e in train if e["step"] >= 0.9 * summary["env_steps"]]
    assert summary["total_reward_ma"] == pytest.approx(np.mean(late) if late else train[-1]["return"])
    # the random-policy baseline was measured with official episode lengths, not 100 steps: no strength here
    assert summary["strength"] is None and summary["random_policy_return"] is None
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert {"agent", "optimizer", "obs_rms", "rng", "global_step", "iteration"} <= set(ckpt)
    assert ckpt["global_step"] == 4096 and ckpt["obs_rms"]["count"].item() == 4096

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir)).Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("charts/episodic_return", "charts/SPS", "losses/value_loss", "losses/approx_kl", "eval/episodic_return"):
        assert tag in tags
    assert "hyperparameters/text_summary" in acc.Tags()["tensors"]


def test_killed_run_resumes_bit_identical(tiny_run, tmp_path):
    killed_and_resumed_matches(SCRIPT, TINY, tmp_path, tiny_run[1])


def test_resume_continues_step_counter(tiny_run):
    cwd, run_dir, _ = tiny_run
    result = run(["--resume", str(run_dir), "--total-timesteps", "6144"], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_dirs(cwd / "runs") == [run_dir]  # appended to the same run folder
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 6144
    assert [e["step"] for e in summary["eval_history"]] == [2048, 4096, 6144]
    # a run extended mid-way stretched its schedules: it is not the run a campaign plans at 6144 steps
    assert summary["extensions"] == [{"step": 4096, "from_total_timesteps": 4096}]
    (planned,) = resolve.resolve_commands(SCRIPT, [[*TINY, "--total-timesteps", "6144"]])
    assert planned["args"]["total_timesteps"] == summary["args"]["total_timesteps"] == 6144
    assert summary["settings_digest"] != planned["digest"]
    assert summary["settings_digest"] == run_settings.settings_digest(summary["args"], 1, summary["extensions"])
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["iteration"] == 6

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir)).Reload()  # both sessions' event files, one curve without repeats
    assert [e.step for e in acc.Scalars("eval/episodic_return")] == [2048, 4096, 6144]
    logged_steps = [e.step for e in acc.Scalars("charts/SPS")]
    assert logged_steps == [1024 * i for i in range(1, 7)]


def test_same_seed_same_returns(tiny_run, tmp_path):
    _, run_dir, _ = tiny_run
    first = json.loads((run_dir / "summary.json").read_text())["eval_history"][:2]
    result = run([*TINY, "--runs-dir", "runs"], tmp_path)
    assert result.returncode == 0, result.stderr
    (again,) = run_dirs(tmp_path / "runs")
    second = json.loads((again / "summary.json").read_text())["eval_history"]
    assert [e["return"] for e in first] == [e["return"] for e in second]


@pytest.mark.slow
def test_cartpole_balance_learns_with_defaults(tmp_path):
    result = run(["--env-id", "CartpoleBalance", "--runs-dir", "runs"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    reached = [e for e in summary["eval_history"] if e["return"] >= 990]
    # measured: 995.5 at 328k steps (73 s); the wall-time criterion is reported in docs/trainers.md, not asserted
    assert reached and reached[0]["step"] <= 500_000, summary["eval_history"]

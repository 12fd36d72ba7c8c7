"""playground_gym.experiment: the trainers' shared plumbing (seeds, normaliser, schedule, scores, checkpoint checks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from playground_gym import experiment
from trainer_harness import TINY, TRAINERS, load_trainer, tiny_run_in


def test_derived_seeds_are_deterministic_distinct_and_in_range():
    seeds = {(s, p, i): experiment.derive_seed(s, p, i) for s in range(1, 8) for p in ("train", "eval") for i in range(12)}
    assert len(set(seeds.values())) == len(seeds)  # no collisions, e.g. (1, eval, 10) vs (6, eval, 5)
    assert all(0 <= v < 2**63 for v in seeds.values())
    assert experiment.derive_seed(3, "eval", 4) == seeds[(3, "eval", 4)]


def test_welford_matches_numpy():
    rng = np.random.default_rng(0)
    rms = experiment.RunningMeanStd((4,))
    batches = [rng.normal(loc=[1.0, -3.0, 100.0, 0.0], scale=[1.0, 0.1, 10.0, 5.0], size=(n, 4)) for n in (1, 7, 300, 64)]
    for b in batches:
        rms.update(torch.as_tensor(b, dtype=torch.float32))
    data = np.concatenate(batches).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-6, atol=1e-8)
    assert rms.count.item() == len(data)
    x = torch.as_tensor(data[:5], dtype=torch.float32)
    expected = np.clip((data[:5] - data.mean(0)) / np.sqrt(data.var(0) + 1e-8), -10, 10)
    np.testing.assert_allclose(rms.normalize(x).numpy(), expected, rtol=1e-4, atol=1e-4)
    assert set(rms.state_dict()) == {"mean", "var", "count"}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_normaliser_skips_a_non_finite_batch(bad):
    rms = experiment.RunningMeanStd((2,))
    rms.update(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    before = {k: v.clone() for k, v in rms.state_dict().items()}
    rms.update(torch.tensor([[1.0, bad], [0.0, 0.0]]))
    assert all(torch.equal(before[k], v) for k, v in rms.state_dict().items())
    rms.update(torch.tensor([[5.0, 6.0]]))
    assert rms.count.item() == 3 and torch.allclose(rms.mean, torch.tensor([3.0, 4.0], dtype=torch.float64))


def test_fused_adam_found_inf_skips_the_whole_step():
    """What the trainers rely on to skip a non-finite update without a host sync: params, moments and step stay."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1, fused=True)
    for found_inf in (0.0, 1.0, 0.0):
        opt.zero_grad()
        layer(torch.randn(4, 3)).sum().backward()
        if found_inf:
            layer.weight.grad[0, 0] = float("nan")
        before = [(p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}) for p in layer.parameters()]
        opt.found_inf = torch.tensor(found_inf)
        opt.step()
        for p, (old, old_state) in zip(layer.parameters(), before):
            assert torch.equal(p, old) == bool(found_inf) and torch.isfinite(p).all()
            if found_inf:
                assert all(torch.equal(opt.state[p][k], v) for k, v in old_state.items())
    assert opt.state[layer.weight]["step"].item() == 2


def test_anneal_schedule_is_cleanrls_and_extends_without_a_jump():
    n = 10
    segment = (0, 1.0, n)
    np.testing.assert_allclose([experiment.anneal_fraction(segment, k) for k in range(1, n + 1)],
                               [1.0 - (k - 1.0) / n for k in range(1, n + 1)], rtol=1e-15)
    extended = experiment.extend_schedule(segment, 6, 30)
    fractions = [experiment.anneal_fraction(segment, k) for k in range(1, 7)] + \
        [experiment.anneal_fraction(extended, k) for k in range(7, 31)]
    steps = np.diff(fractions)
    assert (steps <= 0).all() and abs(steps).max() <= 1.0 / n + 1e-12  # never up, never a bigger drop than before
    assert fractions[6] == fractions[5] == 0.5 and fractions[-1] == pytest.approx(0.5 / 24)  # down to ~0 at the end


def test_scores():
    history = [{"step": i, "return": r} for i, r in enumerate([10.0, 20.0, 60.0], start=1)]
    assert experiment.scores(history, 5.0) == {"strength": 25.0, "final_strength": 55.0, "total_reward_ma": None}
    assert experiment.scores(history, None)["strength"] is None
    # an evaluation of the initial policy (step 0, as ppo_multiunroll's) is not part of the scores
    assert experiment.scores([{"step": 0, "return": -500.0}, *history], 5.0) == experiment.scores(history, 5.0)


def test_resume_rejects_old_or_missing_checkpoints(tmp_path):
    ppo = load_trainer("ppo_continuous")
    with pytest.raises(experiment.CLIError, match="no checkpoint"):
        experiment.Experiment(ppo.Args, ["--resume", str(tmp_path / "nothing.pt")])
    old = tmp_path / "checkpoint.pt"
    torch.save({"agent": {}, "global_step": 1024, "args": {}}, old)  # what the trainers wrote before format 2
    with pytest.raises(experiment.CLIError, match=f"older version.*format 1, expected {experiment.CHECKPOINT_FORMAT}"):
        experiment.Experiment(ppo.Args, ["--resume", str(tmp_path)])


def test_args_carry_per_env_defaults_and_checks():
    ppo = load_trainer("ppo_multiunroll")
    args, sources = experiment.resolve_args(ppo.Args(env_id="PendulumSwingup", preset="cpu"))
    assert (args.action_repeat, sources["action_repeat"]) == (4, "official_config['action_repeat']")
    assert (args.num_envs, sources["num_envs"]) == (64, "preset 'cpu'")
    with pytest.raises(experiment.CLIError, match=r"--seed must be in \[0, 2\*\*32\)"):
        experiment.resolve_args(ppo.Args(seed=-1))


@pytest.mark.parametrize("trainer", ["ppo_continuous", "ppo_tanh", "ppo_multiunroll"])
def test_domain_randomization_defaults_to_on_exactly_where_the_task_has_an_official_randomiser(trainer):
    ppo = load_trainer(trainer)
    resolve = lambda argv: experiment.resolve_args(experiment.parse_args(ppo.Args, argv))  # noqa: E731
    args, sources = resolve(["--env-id", "Go1JoystickFlatTerrain"])
    assert args.domain_randomization is True and sources["domain_randomization"] == \
        "official_config['domain_randomization']"
    assert resolve(["--env-id", "PandaPickCube"])[0].domain_randomization is False  # no official randomiser
    assert resolve(["--env-id", "CartpoleBalance"])[0].domain_randomization is False
    args, sources = resolve(["--env-id", "Go1JoystickFlatTerrain", "--no-domain-randomization"])
    assert args.domain_randomization is False and sources["domain_randomization"] == "user"
    assert resolve(["--domain-randomization", "--env-id", "Go1Getup"])[0].domain_randomization is True
    assert resolve(["--env-id", "Go1Getup", "--domain-randomization", "False"])[0].domain_randomization is False


def test_domain_randomization_on_a_task_without_a_randomiser_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(TRAINERS / "ppo_continuous.py"), "--env-id", "CartpoleBalance",
                             "--domain-randomization", "--num-envs", "4", "--total-timesteps", "2048", "--runs-dir",
                             "runs"], cwd=tmp_path, env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "CartpoleBalance has no official domain randomiser; expected one of" in line, line


def test_stochastic_evaluation_does_not_change_training(tmp_path):
    """With --eval-stochastic, evaluation samples from its own seeded generator: the same run evaluated after every
    update or only at the end trains to the same parameters, bit for bit, and its final evaluation is the same."""
    script = TRAINERS / "ppo_continuous.py"
    finals = []
    for interval in ("1", "0"):
        (tmp_path / f"every{interval}").mkdir()
        _, run_dir, _ = tiny_run_in(script, [*TINY, "--eval-stochastic", "--eval-interval", interval,
                                             "--checkpoint-interval", "0"], tmp_path / f"every{interval}")
        finals.append((torch.load(run_dir / "ppo_continuous.cleanrl_model", weights_only=False),
                       json.loads((run_dir / "summary.json").read_text())["eval_history"]))
    (often, often_history), (once, once_history) = finals
    assert len(often_history) == 4 and len(once_history) == 1
    assert often_history[-1] == {**once_history[0], "wall_time": often_history[-1]["wall_time"]}
    for part in ("agent", "obs_rms"):
        for key, value in once[part].items():
            assert torch.equal(often[part][key], value), (part, key)


def test_a_robot_task_without_menagerie_is_one_line(tmp_path):
    """No Menagerie for a robot task: exit 2 with the loader's one-line message, no traceback."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PLAYGROUND_GYM_MENAGERIE_PATH=str(tmp_path / "no_menagerie"))
    result = subprocess.run([sys.executable, str(TRAINERS / "ppo_continuous.py"), "--env-id", "Go1JoystickFlatTerrain",
                             "--num-envs", "4", "--total-timesteps", "2048", "--runs-dir", "runs"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ppo_continuous.py: error: mujoco_menagerie is required") and "no_menagerie" in line
    assert "Traceback" not in result.stdout + result.stderr


# --- bad trainer input: one line, exit 2 (issue: every input works or gets a one-line error) -------------------------

@pytest.mark.parametrize("argv, message", [
    (["--torch-threads", "-1"], "--torch-threads must be > 0"),
    (["--episode-length", "2147483648"], "--episode-length must be < 2**31"),
    (["--log-std-init", "nan"], "--log-std-init must be finite"),
    (["--ent-coef", "nan"], "--ent-coef must be finite"),
    (["--seed", "4294967296"], "--seed must be in [0, 2**32)"),
    (["--exp-name", "a/../../b"], "--exp-name must be a plain name"),
    (["--reward-scale", "1e39"], "reward_scale: expected a finite number within float32"),
])
def test_bad_trainer_input_is_one_line(argv, message, tmp_path):
    ppo = load_trainer("ppo_continuous")
    with pytest.raises(experiment.CLIError) as err:
        ppo.main([*argv, "--runs-dir", str(tmp_path / "runs"), "--num-envs", "4", "--num-steps", "8",
                  "--total-timesteps", "64", "--no-pin-jax-cpu"])
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_runs_dir_naming_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(experiment.CLIError, match="--runs-dir must be a folder"):
        experiment.Experiment(load_trainer("ppo_continuous").Args, ["--runs-dir", str(tmp_path / "file")])


@pytest.mark.parametrize("content", [b"", b"\x00\x01not a checkpoint" * 10, "truncated", "foreign"])
def test_resume_from_an_unusable_checkpoint_is_one_line(content, tmp_path):
    import dataclasses

    ppo, tanh = load_trainer("ppo_continuous"), load_trainer("ppo_tanh")
    path = tmp_path / "checkpoint.pt"
    full = {"format": experiment.CHECKPOINT_FORMAT, "args": dataclasses.asdict(tanh.Args()), "agent": {}}
    torch.save(full, path)
    if content == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(experiment.CLIError) as err:
        experiment.Experiment(ppo.Args, ["--resume", str(path)])
    message = str(err.value)
    assert message.startswith("--resume: ") and "\n" not in message
    assert ("written by 'ppo_tanh'" in message) if content == "foreign" else ("not a readable checkpoint" in message)


FULL_DISK = """import runpy, sys, torch
def full(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0: "
                       "file write failed")
torch.save = full
sys.argv = [{script!r}, *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def test_a_full_disk_is_one_line_and_exit_1(tmp_path):
    launcher = tmp_path / "full_disk.py"
    launcher.write_text(FULL_DISK.format(script=str(TRAINERS / "ppo_continuous.py")))
    result = subprocess.run([sys.executable, str(launcher), *TINY, "--runs-dir", "runs"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and line.startswith("ppo_continuous.py: error: could not write the checkpoint") and "file write failed" in line
    assert not list((tmp_path / "runs").glob("*/checkpoint.pt*"))


def test_total_reward_ma_is_slm_labs_end_of_training_score():
    """Low early training returns and high late ones: the score is the late value (the last tenth of the run), not
    the run's mean; the evaluations' mean is strength's business."""
    steps = np.arange(1, 101) * 1000
    returns = np.where(steps <= 50_000, 10.0, 900.0) + np.random.default_rng(0).normal(0, 5, 100)
    train = [{"step": int(s), "return": float(r)} for s, r in zip(steps, returns)]
    evals = [{"step": 0, "return": 0.0}, {"step": 50_000, "return": 10.0}, {"step": 100_000, "return": 900.0}]
    got = experiment.scores(evals, 5.0, train, final_step=100_000)
    assert got["total_reward_ma"] == pytest.approx(np.mean(returns[89:]))  # steps 90k..100k
    assert abs(got["total_reward_ma"] - 900.0) < 5 and got["strength"] == pytest.approx(450.0)
    assert experiment.total_reward_ma([], [], 100) is None
    assert experiment.total_reward_ma([10, 20], [1.0, 2.0], final_step=1000) == 2.0  # none in the window: the last

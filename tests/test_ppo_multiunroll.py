"""Tests of cleanrl_ppo/ppo_multiunroll.py (Brax's PPO schedule in torch): compute_gae against Brax's, the segment
bookkeeping, the command line, end-to-end runs as subprocesses (CPU)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import playground_gym
from playground_gym import experiment
from trainer_harness import (SUMMARY_FIELDS, TINY_MULTIUNROLL, TRAINERS, killed_and_resumed_matches, load_trainer,
                             run_dirs, run_trainer, tiny_run_in)

SCRIPT = TRAINERS / "ppo_multiunroll.py"
TINY = TINY_MULTIUNROLL
TINY_STEPS_PER_UPDATE = 2 * 16 * 16  # 8 segments x 4 minibatches = 32 segments = 2 unrolls of 16 envs, 16 steps each


@pytest.fixture(scope="module")
def ppo():
    return load_trainer("ppo_multiunroll")


def run(args: list[str], cwd: Path, timeout: float = 300):
    return run_trainer(SCRIPT, args, cwd, timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_run_in(SCRIPT, TINY, tmp_path_factory.mktemp("tiny"))


# --- compute_gae against brax.training.agents.ppo.losses.compute_gae ------------------------------------------------

def random_rollout(rng: np.random.Generator, T: int, B: int, p_trunc: float, p_term: float):
    """Random float32 data with random truncation and termination masks (never both on one step, as in Brax)."""
    truncation = (rng.random((T, B)) < p_trunc).astype(np.float32)
    termination = ((rng.random((T, B)) < p_term) & (truncation == 0)).astype(np.float32)
    rewards = rng.normal(0.0, 3.0, (T, B)).astype(np.float32)
    values = rng.normal(0.0, 10.0, (T, B)).astype(np.float32)
    bootstrap = rng.normal(0.0, 10.0, (B,)).astype(np.float32)
    return truncation, termination, rewards, values, bootstrap


@pytest.mark.parametrize("T, B, p_trunc, p_term, lam, gamma", [
    (7, 5, 0.2, 0.2, 0.95, 0.995),
    (30, 64, 0.05, 0.05, 0.95, 0.995),
    (1, 3, 0.5, 0.3, 0.9, 0.99),
    (12, 9, 0.0, 0.0, 1.0, 0.95),
    (16, 4, 0.6, 0.3, 0.0, 0.9),
])
def test_compute_gae_matches_brax(ppo, T, B, p_trunc, p_term, lam, gamma):
    import jax.numpy as jnp
    from brax.training.agents.ppo.losses import compute_gae as brax_compute_gae

    data = random_rollout(np.random.default_rng(T * 100 + B), T, B, p_trunc, p_term)
    expected_vs, expected_adv = brax_compute_gae(*map(jnp.asarray, data), lambda_=lam, discount=gamma)
    vs, adv = ppo.compute_gae(*map(torch.from_numpy, data), lam, gamma)
    assert vs.shape == adv.shape == (T, B) and not vs.requires_grad
    np.testing.assert_allclose(vs.numpy(), np.asarray(expected_vs), rtol=0, atol=1e-5)
    np.testing.assert_allclose(adv.numpy(), np.asarray(expected_adv), rtol=0, atol=1e-5)


def test_compute_gae_masks_truncated_steps(ppo):
    """A truncated step contributes nothing (zero advantage, vs = v) and cuts the trace; bool masks work too."""
    T, B = 6, 2
    rewards, values, bootstrap = torch.ones(T, B), torch.zeros(T, B), torch.full((B,), 100.0)
    truncation = torch.zeros(T, B, dtype=torch.bool)
    truncation[3, 0] = True
    vs, adv = ppo.compute_gae(truncation, torch.zeros(T, B, dtype=torch.bool), rewards, values, bootstrap, 1.0, 1.0)
    assert adv[3, 0] == 0 and vs[3, 0] == values[3, 0]
    assert vs[0, 0] == 3.0  # rewards of steps 0..2 only, bootstrapping V(obs[3]) = 0: the trace stops at the cut
    assert vs[0, 1] == 106.0  # no cut in env 1: six rewards plus the bootstrap value


def test_compute_gae_has_no_gradient(ppo):
    values = torch.randn(5, 3, requires_grad=True)
    vs, adv = ppo.compute_gae(torch.zeros(5, 3), torch.zeros(5, 3), torch.randn(5, 3), values, torch.randn(3))
    assert not vs.requires_grad and not adv.requires_grad  # Brax's stop_gradient


# --- segment bookkeeping ----------------------------------------------------------------------------------------

def shape_args(num_envs, batch_size, num_minibatches, unroll_length, action_repeat=1, total=10**6, evals=2, resets=0):
    return SimpleNamespace(num_envs=num_envs, batch_size=batch_size, num_minibatches=num_minibatches,
                           unroll_length=unroll_length, action_repeat=action_repeat, total_timesteps=total,
                           num_evals=evals, num_resets_per_eval=resets)


@pytest.mark.parametrize("num_envs, batch_size, num_minibatches, unroll_length, n_unrolls", [
    (2048, 1024, 32, 30, 16),  # Brax's official DM Control config: 983040 steps per update
    (128, 128, 8, 30, 8),
    (16, 8, 4, 16, 2),
    (4, 4, 1, 5, 1),
])
def test_update_shape(ppo, num_envs, batch_size, num_minibatches, unroll_length, n_unrolls):
    sched = ppo.brax_schedule(shape_args(num_envs, batch_size, num_minibatches, unroll_length))
    assert (sched.n_unrolls, sched.local_envs) == (n_unrolls, num_envs)
    assert sched.steps_per_update == num_envs * unroll_length * n_unrolls
    assert num_envs * n_unrolls == batch_size * num_minibatches == sched.local_segments  # every segment used


def test_update_shape_rejects_indivisible(ppo):
    with pytest.raises(ppo.CLIError, match=r"\(6 \* 4 = 24 segments.*--num-envs \(16\)"):
        ppo.brax_schedule(shape_args(16, 6, 4, 30))
    with pytest.raises(ppo.CLIError, match=r"--num-envs \(16\) and --batch-size \(6\).*ranks \(4\)"):
        ppo.brax_schedule(shape_args(16, 6, 8, 30), world_size=4)


BRAX_SCHEDULE_SOURCE = [  # the lines of brax/training/agents/ppo/train.py that brax_reference_schedule transcribes
    "env_step_per_training_step = ( batch_size * unroll_length * num_minibatches * action_repeat )",
    "num_evals_after_init = max(num_evals - 1, 1)",
    "num_training_steps_per_epoch = np.ceil( num_timesteps / ( num_evals_after_init * env_step_per_training_step * "
    "max(num_resets_per_eval, 1) ) ).astype(int)",
    "length=batch_size * num_minibatches // num_envs,",
    "if process_id == 0 and num_evals > 1 and run_evals:",
    "for it in range(num_evals_after_init):",
    "for _ in range(max(num_resets_per_eval, 1)):",
    "length=num_training_steps_per_epoch,",
    "if num_resets_per_eval > 0: env_state = reset_fn(env_state, key_envs)",
]


def brax_reference_schedule(cfg):
    """Brax 0.14.2's schedule for a config, transcribed line by line from ppo/train.py (checked by the next test):
    (updates, updates between forced resets or 0, env steps of each evaluation)."""
    env_step_per_training_step = cfg["batch_size"] * cfg["unroll_length"] * cfg["num_minibatches"] * \
        cfg["action_repeat"]
    num_evals_after_init = max(cfg["num_evals"] - 1, 1)
    num_training_steps_per_epoch = int(np.ceil(cfg["num_timesteps"] / (
        num_evals_after_init * env_step_per_training_step * max(cfg["num_resets_per_eval"], 1))).astype(int))
    updates, eval_steps = 0, [0] if cfg["num_evals"] > 1 else []
    for _ in range(num_evals_after_init):
        for _ in range(max(cfg["num_resets_per_eval"], 1)):
            updates += num_training_steps_per_epoch
        eval_steps.append(updates * env_step_per_training_step)
    return updates, num_training_steps_per_epoch if cfg["num_resets_per_eval"] > 0 else 0, eval_steps


def test_brax_reference_schedule_is_brax_source():
    import inspect
    import re

    from brax.training.agents.ppo import train as brax_train

    source = re.sub(r"\s+", " ", re.sub(r"#[^\n]*", "", inspect.getsource(brax_train.train)))
    source = source.replace("( ", "(").replace(" )", ")")
    for line in BRAX_SCHEDULE_SOURCE:
        assert line.replace("( ", "(").replace(" )", ")") in source, line


def test_schedule_is_braxs_for_all_54_official_configs(ppo):
    """ppo_multiunroll's defaults perform Brax's updates, forced resets and evaluation points for every env's official
    config, in one process and split over 2 or 4 ranks (num_envs and batch_size are global, as in Brax)."""
    import playground_gym

    names = playground_gym.list_envs()
    assert len(names) == 54
    for name in names:
        args, _ = experiment.resolve_args(ppo.Args(env_id=name))
        cfg = playground_gym.official_config(name)
        updates, reset_every, eval_steps = brax_reference_schedule(cfg)
        sched = ppo.brax_schedule(args)
        assert (sched.num_updates, sched.reset_every) == (updates, reset_every), name
        assert sched.steps_per_update == cfg["batch_size"] * cfg["unroll_length"] * cfg["num_minibatches"] * \
            cfg["action_repeat"], name
        ours = [0] * sched.eval_at_start + [k * sched.steps_per_update
                                            for k in range(sched.eval_every, sched.num_updates + 1, sched.eval_every)]
        assert ours == eval_steps, name
        for world in (2, 4):
            split = ppo.brax_schedule(args, world)
            assert split.local_envs * world == args.num_envs and split.local_segments * world == \
                args.batch_size * args.num_minibatches, name
            assert {k: v for k, v in vars(split).items() if not k.startswith("local")} == \
                {k: v for k, v in vars(sched).items() if not k.startswith("local")}, name


@pytest.mark.parametrize("env_id, updates, reset_every, eval_every", [
    ("Go1JoystickFlatTerrain", 1260, 14, 140), ("T1JoystickFlatTerrain", 1235, 65, 65),
    ("PandaRobotiqPushCube", 279, 31, 31), ("LeapCubeReorient", 627, 33, 33), ("CartpoleBalance", 90, 1, 10),
    ("AcrobotSwingup", 180, 2, 20), ("AlohaSinglePegInsertion", 180, 2, 20),
])
def test_schedule_examples(ppo, env_id, updates, reset_every, eval_every):
    sched = ppo.brax_schedule(experiment.resolve_args(ppo.Args(env_id=env_id))[0])
    assert (sched.num_updates, sched.reset_every, sched.eval_every) == (updates, reset_every, eval_every)


def test_cpu_preset_schedule(ppo):
    """--preset cpu: 80 updates of 16384 steps, evaluated before training and every 5, no forced resets; with
    PendulumSwingup's action_repeat 4 the same 1.31M env steps are 4x fewer agent steps (32 updates, every 2)."""
    sched = ppo.brax_schedule(experiment.resolve_args(ppo.Args(preset="cpu"))[0])
    assert (sched.num_updates, sched.steps_per_update, sched.eval_every, sched.reset_every) == (80, 16384, 5, 0)
    sched = ppo.brax_schedule(experiment.resolve_args(ppo.Args(env_id="PendulumSwingup", preset="cpu"))[0])
    assert (sched.num_updates, sched.steps_per_update, sched.eval_every) == (32, 65536, 2)


@pytest.mark.parametrize("num_envs, act_dim", [(64, 1), (13, 6)])
def test_batched_behaviour_logprobs_equal_per_step(ppo, num_envs, act_dim):
    """The rollout stores the actor's outputs and computes the behaviour log-probs once per update: the same
    numbers (to float32 rounding) as the per-step log-probs of the sampled pre-tanh actions."""
    torch.manual_seed(0)
    agent = ppo.Agent(obs_dim=7, act_dim=act_dim)
    obs = torch.randn(3, 4, num_envs, 7) * 3  # [unroll, step, env, obs]
    outs, actions, per_step = torch.zeros(3, 4, num_envs, 2 * act_dim), torch.zeros(3, 4, num_envs, act_dim), []
    with torch.no_grad():
        for u in range(3):
            for t in range(4):
                outs[u, t] = agent.actor(obs[u, t])
                dist = agent.distribution(outs[u, t])
                _, actions[u, t] = dist.sample()
                per_step.append(dist.log_prob(actions[u, t]))
        batched = agent.distribution(outs).log_prob(actions)
    assert batched.shape == (3, 4, num_envs)
    torch.testing.assert_close(batched, torch.stack(per_step).view(3, 4, num_envs), rtol=1e-6, atol=1e-6)
    # and the evaluation's deterministic action is tanh(loc) of the same distribution
    loc = outs[..., :act_dim]
    assert torch.equal(agent.distribution(outs).mode(), torch.tanh(loc))


def test_defaults_are_official_and_cpu_preset(ppo):
    args, sources = experiment.resolve_args(ppo.Args(env_id="FingerSpin"))
    assert (args.num_envs, args.batch_size, args.num_minibatches, args.num_updates_per_batch) == (2048, 1024, 32, 16)
    assert (args.unroll_length, args.learning_rate, args.ent_coef, args.clip_coef) == (30, 1e-3, 1e-2, 0.3)
    assert (args.gamma, args.reward_scaling, args.max_grad_norm, args.total_timesteps) == (0.95, 10.0, None, 60_000_000)
    assert args.critic_hidden_sizes == (256,) * 5 and sources["gamma"] == "official_config['discounting']"
    args, sources = experiment.resolve_args(ppo.Args(preset="cpu", num_minibatches=4))
    assert sources["num_envs"] == "preset 'cpu'" and sources["num_minibatches"] == "user"
    assert (args.num_envs, args.batch_size, args.num_minibatches) == (ppo.Args.presets["cpu"]["num_envs"],
                                                                       ppo.Args.presets["cpu"]["batch_size"], 4)
    assert (args.unroll_length, args.reward_scaling) == (ppo.Args.presets["cpu"]["unroll_length"], 0.1)
    assert sources["reward_scaling"] == "preset 'cpu'" and args.gamma == 0.995  # not in the preset: official


# --- the command line and end-to-end runs ------------------------------------------------------------------------

def test_import_has_no_side_effects(tmp_path):
    code = f"import importlib.util as u; s = u.spec_from_file_location('m', {str(SCRIPT)!r}); m = u.module_from_spec(s); " \
           "s.loader.exec_module(m); print('ok', m.Args().env_id)"
    result = subprocess.run([sys.executable, "-c", code, "--num-envs", "-1"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok CartpoleBalance"
    assert list(tmp_path.iterdir()) == []  # no run folder, no files


@pytest.mark.parametrize("argv, fragment", [
    (["--num-envs", "-4"], "--num-envs"),
    (["--env-id", "CartpoleBalanc"], "CartpoleBalance"),
    (["--num-envs", "96", "--batch-size", "10", "--num-minibatches", "4"], "divisible by --num-envs (96)"),
    (["--num-evals", "0"], "--num-evals must be > 0"),
    (["--num-resets-per-eval", "-1"], "--num-resets-per-eval"),
    (["--preset", "gpu"], "--preset"),
    (["--num-steps", "8"], "--num-steps"),
])
def test_bad_cli_input_in_process(ppo, argv, fragment):
    with pytest.raises(ppo.CLIError) as err:
        ppo.main(argv)
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_bad_config_exits_2_with_one_line(tmp_path):
    result = run(["--num-envs", "48", "--batch-size", "20", "--num-minibatches", "2"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ppo_multiunroll.py: error: --batch-size * --num-minibatches (20 * 2 = 40 segments per update) must be "
        "divisible by --num-envs (48): each unroll gives one segment per env"]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()


def test_tiny_run_writes_everything(tiny_run):
    _, run_dir, result = tiny_run
    assert run_dir.name.startswith("CartpoleBalance__ppo_multiunroll__3__")
    assert "gamma=0.995 (official_config['discounting'])" in result.stdout
    assert "reward_scaling=10.0 (official_config['reward_scaling'])" in result.stdout
    assert (f"2 unrolls x 16 envs x 16 steps x action_repeat 1 = {TINY_STEPS_PER_UPDATE} env steps in 32 segments; 8 "
            f"updates of 2 epochs x 4 minibatches of 8 segments; forced resets every no updates; evaluations every 2 "
            f"updates and before training") in result.stdout
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "ppo_multiunroll.cleanrl_model").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_FIELDS <= set(summary)
    updates = 4096 // TINY_STEPS_PER_UPDATE
    assert summary["env_steps"] == updates * TINY_STEPS_PER_UPDATE == 4096 and len(summary["eval_history"]) == 5
    assert [e["step"] for e in summary["eval_history"]] == [0, 1024, 2048, 3072, 4096]  # Brax's points
    assert summary["final_eval_return"] == summary["eval_history"][-1]["return"]
    assert summary["nan_skipped_updates"] == 0 and summary["env_trace_counts"] == {"reset": 1, "step": 1}
    assert summary["args"]["actor_hidden_sizes"] == [32] * 4 and summary["args"]["batch_size"] == 8
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert {"agent", "optimizer", "obs_rms", "rng", "global_step", "iteration"} <= set(ckpt)
    assert ckpt["global_step"] == 4096 and ckpt["iteration"] == updates
    assert ckpt["obs_rms"]["count"] == 4096  # every collected observation, once (not the bootstrap observations)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir)).Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("charts/episodic_return", "charts/SPS", "losses/value_loss", "losses/policy_loss", "losses/entropy",
                "losses/approx_kl", "eval/episodic_return"):
        assert tag in tags
    assert all(math.isfinite(e.value) for e in acc.Scalars("losses/value_loss"))


def test_killed_run_resumes_bit_identical(tiny_run, tmp_path):
    killed_and_resumed_matches(SCRIPT, TINY, tmp_path, tiny_run[1], kill_at=4)


def test_resume_continues_step_counter(tiny_run):
    cwd, run_dir, _ = tiny_run
    result = run(["--resume", str(run_dir), "--total-timesteps", "8192"], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_dirs(cwd / "runs") == [run_dir]  # appended to the same run folder
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 8192  # Brax's schedule of the new budget: 4 eval epochs of 4 updates
    assert [e["step"] for e in summary["eval_history"]] == [0, 1024, 2048, 3072, 4096, 6144, 8192]


def test_forced_resets_and_same_seed_same_returns(tiny_run, tmp_path):
    """The same seed evaluates the same at the same points (a 2-update run against the tiny run's first two); with
    --num-resets-per-eval 2 and one update per training epoch, every update ends with a forced reset."""
    _, run_dir, _ = tiny_run
    first = json.loads((run_dir / "summary.json").read_text())["eval_history"][:2]
    result = run([*TINY, "--total-timesteps", "1024", "--num-evals", "2", "--runs-dir", "runs"], tmp_path)
    assert result.returncode == 0, result.stderr
    (again,) = run_dirs(tmp_path / "runs")
    second = json.loads((again / "summary.json").read_text())["eval_history"]
    assert [(e["step"], e["return"]) for e in first] == [(e["step"], e["return"]) for e in second]
    result = run([*TINY, "--total-timesteps", "1024", "--num-resets-per-eval", "2", "--runs-dir", "resets"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "8 updates of 2 epochs" in result.stdout and "forced resets every 1 updates" in result.stdout
    (resets_dir,) = run_dirs(tmp_path / "resets")
    envs = torch.load(resets_dir / "checkpoint.pt", weights_only=False)["envs"]
    # the envs were last reset after update 8, by the forced reset (the tiny run's were never: its training seed)
    assert envs["seed"] == experiment.derive_seed(3, "forced reset", 8) and envs["reset_count"] == 1
    tiny_envs = torch.load(run_dir / "checkpoint.pt", weights_only=False)["envs"]
    assert tiny_envs["seed"] == experiment.derive_seed(3, "train")
    summary = json.loads((resets_dir / "summary.json").read_text())
    assert summary["agent_steps"] == summary["env_steps"] == 8 * 512  # action_repeat 1


@pytest.mark.slow
def test_cartpole_balance_rises_with_cpu_preset(tmp_path):
    """The cpu preset (1.31M steps) lifts CartpoleBalance's deterministic eval return well above the random policy's
    (341.5) and its own start. Seed 1 measured 617 / 636 / 556 / 716 at 262k / 524k / 786k / 1.05M steps and then fell
    to 282 (peer benchmark, 2 torch threads); other seeds reached 999 and 760-773, Brax's own trainer 1000 / 1000 / 447
    (docs/trainers.md). Wall time is reported there, not asserted."""
    result = run(["--env-id", "CartpoleBalance", "--preset", "cpu", "--eval-interval", "8", "--runs-dir", "runs"],
                 tmp_path, timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    start, *trained = summary["eval_history"]
    assert start["step"] == 0 and all(e["step"] > 0 for e in trained)
    assert max(e["return"] for e in trained) >= max(600, start["return"] + 100), summary["eval_history"]


@pytest.mark.parametrize("env_id", ["Go1JoystickFlatTerrain", "T1JoystickRoughTerrain", "LeapCubeReorient",
                                    "PandaPickCube", "AlohaHandOver"])
def test_defaults_on_a_robot_task_are_its_official_brax_config(env_id):
    ppo = load_trainer("ppo_multiunroll")
    args, sources = experiment.resolve_args(experiment.parse_args(ppo.Args, ["--env-id", env_id]))
    official = playground_gym.official_config(env_id)
    pairs = {"num_envs": "num_envs", "unroll_length": "unroll_length", "batch_size": "batch_size",
             "num_minibatches": "num_minibatches", "num_updates_per_batch": "num_updates_per_batch",
             "learning_rate": "learning_rate", "ent_coef": "entropy_cost", "gamma": "discounting",
             "reward_scaling": "reward_scaling", "clip_coef": "clipping_epsilon", "max_grad_norm": "max_grad_norm",
             "total_timesteps": "num_timesteps", "num_evals": "num_evals", "episode_length": "episode_length",
             "action_repeat": "action_repeat", "actor_hidden_sizes": "policy_hidden_layer_sizes",
             "critic_hidden_sizes": "value_hidden_layer_sizes", "critic_obs_key": "value_obs_key",
             "domain_randomization": "domain_randomization", "num_resets_per_eval": "num_resets_per_eval"}
    for field, key in pairs.items():
        assert getattr(args, field) == official[key], (field, getattr(args, field), official[key])
        assert sources[field] == f"official_config[{key!r}]", field
    assert official["policy_obs_key"] == "state"  # the policy sees make_vec's default observation

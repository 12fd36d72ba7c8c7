"""--export-onnx: onnxruntime gives the trainer's own deterministic actions; play replays the final evaluation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch

import playground_gym
from playground_gym import export
from playground_gym.experiment import RunningMeanStd
from trainer_harness import TINY, TINY_MULTIUNROLL, TRAINERS, load_trainer, run_trainer, tiny_run_in

TRAINER_NAMES = ["ppo_continuous", "ppo_tanh", "ppo_multiunroll"]


def torch_policy(name, model):
    """The trainer's own deterministic policy rebuilt from its saved model (agent + normaliser), as evaluation runs
    it; actions clipped to [-1, 1] as the env clips them."""
    ppo = load_trainer(name)
    args = model["args"]
    state = model["agent"]
    obs_dim = model["obs_rms"]["mean"].shape[0]
    critic_dim = model["critic_rms"]["mean"].shape[0]
    act_dim = 1  # CartpoleBalance
    if name == "ppo_continuous":
        agent = ppo.Agent(obs_dim, act_dim, tuple(args["actor_hidden_sizes"]), tuple(args["critic_hidden_sizes"]),
                          args["activation"], args["log_std_init"], (args["log_std_min"], args["log_std_max"]),
                          critic_dim)
    else:
        agent = ppo.Agent(obs_dim, act_dim, tuple(args["actor_hidden_sizes"]), tuple(args["critic_hidden_sizes"]),
                          args["activation"], args["init"], args["min_std"], critic_dim)
    agent.load_state_dict(state)
    rms = RunningMeanStd((obs_dim,))
    rms.load_state_dict(model["obs_rms"])

    @torch.no_grad()
    def act(obs):
        x = rms.normalize(torch.as_tensor(obs))
        if name == "ppo_multiunroll":
            return agent.get_distribution(x).mode().clamp(-1, 1).numpy()
        return agent.get_action(x, True)[0].clamp(-1, 1).numpy()

    return act


@pytest.fixture(scope="module", params=TRAINER_NAMES)
def exported(request, tmp_path_factory):
    name = request.param
    cwd = tmp_path_factory.mktemp(name)
    tiny = TINY_MULTIUNROLL if name == "ppo_multiunroll" else TINY
    _, run_dir, result = tiny_run_in(TRAINERS / f"{name}.py", [*tiny, "--export-onnx"], cwd)
    model = torch.load(run_dir / f"{name}.cleanrl_model", weights_only=False)
    return name, run_dir, result, model


def observations(rng, n, dim):
    real_envs = playground_gym.make_vec("CartpoleBalance", n, device="cpu", array_type="numpy", episode_length=100)
    obs, _ = real_envs.reset(seed=5)
    for _ in range(20):
        obs, *_ = real_envs.step(rng.uniform(-1, 1, (n, 1)).astype(np.float32))
    return {"real": obs, "random": rng.normal(size=(n, dim)).astype(np.float32),
            "large": (rng.normal(size=(n, dim)) * 1e6).astype(np.float32)}


def test_onnxruntime_gives_the_trainers_deterministic_actions(exported):
    name, run_dir, result, model = exported
    assert "policy exported to" in result.stdout and "torchvision" not in result.stderr
    session = onnxruntime.InferenceSession(str(run_dir / "policy.onnx"), providers=["CPUExecutionProvider"])
    act = torch_policy(name, model)
    rng = np.random.default_rng(0)
    for batch in (1, 4096):
        for kind, obs in observations(rng, batch, 5).items():
            ours = session.run(["action"], {"obs": obs})[0]
            assert ours.shape == (batch, 1) and ours.dtype == np.float32
            np.testing.assert_allclose(ours, act(obs), rtol=1e-5, atol=1e-5, err_msg=f"{name} {kind} batch {batch}")
            assert np.all(np.abs(ours) <= 1.0)
    bad = np.array([[np.nan, 0, 0, 0, 0], [np.inf, 0, 0, 0, 0], [-np.inf, 1, 2, 3, 4], [0, 0, 0, 0, 0]], np.float32)
    ours, theirs = session.run(["action"], {"obs": bad})[0], act(bad)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))  # a NaN observation gives a NaN action, as in training
    np.testing.assert_allclose(ours[~np.isnan(ours)], theirs[~np.isnan(theirs)], rtol=1e-5, atol=1e-5)


def test_the_sidecar_says_what_the_env_expects_and_where_the_policy_came_from(exported):
    name, run_dir, _, _ = exported
    meta = export.read_sidecar(run_dir / "policy.onnx")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (meta["env_id"], meta["obs_key"], meta["obs_dim"], meta["action_size"]) == ("CartpoleBalance", "state", 5, 1)
    assert meta["action_repeat"] == 1 and meta["episode_length"] == 100 and meta["ctrl_dt"] == pytest.approx(0.01)
    assert meta["control_period_s"] == pytest.approx(0.01) and meta["action_scale"] is None
    assert meta["env_config"]["ctrl_dt"] == pytest.approx(0.01) and (meta["device"], meta["impl"]) == ("cpu", "jax")
    assert meta["run"]["settings_digest"] == summary["settings_digest"] and meta["run"]["trainer"] == name
    assert meta["evaluation"]["return"] == summary["final_eval_return"]
    assert meta["evaluation"]["step"] == summary["env_steps"]


def test_play_replays_the_final_evaluation(exported):
    name, run_dir, _, _ = exported
    out = subprocess.run([sys.executable, "-m", "playground_gym.play", str(run_dir / "policy.onnx"), "--json",
                          "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result["episodes"] == result["num_envs"] == 16
    assert result["return_mean"] == pytest.approx(summary["final_eval_return"], rel=1e-4, abs=1e-3)


@pytest.mark.parametrize("how", ["resume alone", "its steps"])
def test_a_finished_run_is_exported_without_training_and_its_summary_unchanged(how, tmp_path):
    args = list(TINY)
    args[args.index("--total-timesteps") + 1] = "4500"  # not whole updates: 4 updates, 4096 steps
    _, run_dir, _ = tiny_run_in(TRAINERS / "ppo_continuous.py", args, tmp_path)
    assert not (run_dir / "policy.onnx").exists()
    before = (run_dir / "summary.json").read_bytes()
    steps = json.loads(before)["env_steps"]
    assert steps == 4096
    extra = [] if how == "resume alone" else ["--total-timesteps", str(steps)]
    result = run_trainer(TRAINERS / "ppo_continuous.py", ["--resume", str(run_dir), *extra, "--export-onnx"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "policy exported to" in result.stdout and "unchanged" in result.stdout
    assert (run_dir / "summary.json").read_bytes() == before  # no extension, no new wall time, digest or code
    meta = export.read_sidecar(run_dir / "policy.onnx")
    assert meta["run"]["settings_digest"] == json.loads(before)["settings_digest"]
    model = torch.load(run_dir / "ppo_continuous.cleanrl_model", weights_only=False)
    obs = np.random.default_rng(1).normal(size=(64, 5)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(run_dir / "policy.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["action"], {"obs": obs})[0], torch_policy("ppo_continuous", model)(obs),
                               rtol=1e-5, atol=1e-5)


def test_the_deployment_example_of_the_docs_runs_without_torch_or_jax(exported):
    """docs/export.md's example, as written there (with this run's folder): onnxruntime and numpy only."""
    from pathlib import Path

    _, run_dir, _, _ = exported
    page = (Path(__file__).parents[1] / "docs" / "export.md").read_text()
    example = page.split("## Deploying it")[1].split("```python")[1].split("```")[0]
    assert len(example.strip().splitlines()) <= 10
    code = example.replace("runs/RUN", str(run_dir)) + (
        "\nimport sys\nassert 'torch' not in sys.modules and 'jax' not in sys.modules\nprint(offset.shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "(1, 1)", out.stderr

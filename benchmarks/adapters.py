"""Other libraries' PPO through playground_gym's adapters, next to our ppo_continuous, at the same env-step budget.

    python benchmarks/adapters.py --env-id CartpoleBalance --total-timesteps 300000 --seeds 1 2 3 \
        --out docs/benchmarks/adapters          # the table of docs/libraries.md

Each run is its own subprocess (fresh JIT caches), runs interleaved seed by seed (sb3 1, rsl_rl 1, skrl 1, ours 1,
sb3 2, ...) so machine noise hits all alike. 64 envs everywhere; each library with its documented defaults where it
has them, named here in LIBRARY_SETTINGS, time-limit bootstrapping on where the library offers it. Every final policy
is evaluated the same way: its deterministic action (the Gaussian's mean), one full official-length episode in each of
64 fresh envs (ours: its own final deterministic evaluation, which is exactly that).

SPS, two ways: env steps / wall time of the whole subprocess (imports, env construction and JIT compiles, training,
the one final evaluation: the same work for all four), and, for the three libraries, env steps / wall time of the
training call alone (SB3 ``learn``, rsl_rl ``runner.learn``, skrl ``trainer.train``; the env's reset and step are
compiled before it). Each library uses torch's default threads (every core); the env's JAX is not pinned.
Resumable: results already in <out>/results.json for the same settings are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUM_ENVS = 64
LIBRARY_SETTINGS = {
    # SB3's defaults (lr 3e-4, 10 epochs, minibatch 64, clip 0.2, gamma 0.99, gae 0.95), its 2048-step rollout
    # spread over the 64 envs
    "sb3": "PPO('MlpPolicy'): n_steps 32 x 64 envs, batch_size 64, n_epochs 10, SB3 defaults otherwise",
    # Isaac Lab's cartpole runner config for rsl_rl
    "rsl_rl": "PPO: actor/critic MLP [32, 32] elu, 16 steps/env, 5 epochs x 4 minibatches, lr 1e-3 adaptive (kl 0.01), "
              "entropy 0.005, gamma 0.99, lam 0.95, obs normalisation",
    # skrl's PPO_CFG defaults with a 32-step rollout and 8 minibatches, as its Isaac Lab cartpole example
    "skrl": "PPO_CFG: rollouts 32, 8 epochs x 8 minibatches, lr 1e-3, MLP [64, 64] elu, time_limit_bootstrap, "
            "skrl defaults otherwise",
    "ours": "cleanrl_ppo/ppo_continuous.py defaults, --num-envs 64",
}


def evaluate(act, env_id: str, seed: int) -> float:
    """Mean undiscounted return of one full episode in each of 64 fresh envs, deterministic actions."""
    import torch

    import playground_gym

    envs = playground_gym.make_vec(env_id, NUM_ENVS, device="cpu", seed=10_000 + seed, quiet=True)
    obs, _ = envs.reset()
    returns = torch.zeros(NUM_ENVS)
    done = torch.zeros(NUM_ENVS, dtype=torch.bool)
    for _ in range(envs.max_episode_steps):
        with torch.no_grad():
            obs, reward, terminated, truncated, info = envs.step(act(obs))
        returns += torch.where(done, 0.0, reward)
        done |= terminated | truncated
    return float(returns.mean())


def compiled(envs, seed: int):
    """The env with its reset and step compiled (one step taken, then reset again), so training times exclude JIT."""
    import numpy as np

    envs.reset(seed=seed)
    envs.step(np.zeros(envs.action_space.shape, np.float32))
    envs.reset(seed=seed)
    return envs


def run_sb3(env_id: str, seed: int, steps: int) -> dict:
    import torch
    from stable_baselines3 import PPO

    import playground_gym
    from playground_gym.adapters import SB3VecEnv

    venv = SB3VecEnv(compiled(playground_gym.make_vec(env_id, NUM_ENVS, device="cpu", array_type="numpy", quiet=True),
                              seed))
    venv.seed(seed)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=10, seed=seed, device="cpu", verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - start
    act = lambda obs: torch.as_tensor(model.predict(obs.numpy(), deterministic=True)[0])  # noqa: E731
    return {"env_steps": model.num_timesteps, "train_wall_s": wall, "final_eval": evaluate(act, env_id, seed)}


def run_rsl_rl(env_id: str, seed: int, steps: int) -> dict:
    import torch
    from rsl_rl.runners import OnPolicyRunner

    import playground_gym
    from playground_gym.adapters import RslRlVecEnv

    torch.manual_seed(seed)
    env = RslRlVecEnv(compiled(playground_gym.make_vec(env_id, NUM_ENVS, device="cpu", quiet=True), seed), seed=seed)
    mlp = {"class_name": "MLPModel", "hidden_dims": [32, 32], "activation": "elu", "obs_normalization": True}
    cfg = {"num_steps_per_env": 16, "save_interval": 10**9, "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
           "check_for_nan": False, "logger": "tensorboard", "experiment_name": "adapters",
           "algorithm": {"class_name": "PPO", "num_learning_epochs": 5, "num_mini_batches": 4, "gamma": 0.99,
                         "lam": 0.95, "learning_rate": 1e-3, "schedule": "adaptive", "desired_kl": 0.01,
                         "entropy_coef": 0.005, "clip_param": 0.2, "value_loss_coef": 1.0, "max_grad_norm": 1.0},
           "actor": {**mlp, "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 1.0}},
           "critic": mlp}
    runner = OnPolicyRunner(env, cfg, log_dir=None, device="cpu")
    iterations = steps // (16 * NUM_ENVS)
    start = time.perf_counter()
    runner.learn(num_learning_iterations=iterations)
    wall = time.perf_counter() - start
    policy = runner.get_inference_policy(device="cpu")
    act = lambda obs: policy(env._groups(obs, None))  # noqa: E731
    return {"env_steps": iterations * 16 * NUM_ENVS, "train_wall_s": wall, "final_eval": evaluate(act, env_id, seed)}


def run_skrl(env_id: str, seed: int, steps: int) -> dict:
    import torch
    from skrl.agents.torch.ppo import PPO, PPO_CFG
    from skrl.memories.torch import RandomMemory
    from skrl.trainers.torch import SequentialTrainer, SequentialTrainerCfg
    from skrl.utils import set_seed
    from skrl.utils.model_instantiators.torch import deterministic_model, gaussian_model

    import playground_gym
    from playground_gym.adapters import SkrlEnv

    set_seed(seed)
    env = SkrlEnv(compiled(playground_gym.make_vec(env_id, NUM_ENVS, device="cpu", quiet=True), seed), seed=seed)
    common = dict(observation_space=env.observation_space, state_space=env.state_space,
                  action_space=env.action_space, device=env.device)
    layers = [{"name": "net", "input": "OBSERVATIONS", "layers": [64, 64], "activations": "elu"}]
    models = {"policy": gaussian_model(**common, network=layers, output="ACTIONS"),
              "value": deterministic_model(**common, network=layers, output="ONE")}
    cfg = PPO_CFG(rollouts=32, learning_epochs=8, mini_batches=8, learning_rate=1e-3, time_limit_bootstrap=True)
    cfg.experiment.write_interval = 0
    cfg.experiment.checkpoint_interval = 0
    agent = PPO(models=models, memory=RandomMemory(memory_size=32, num_envs=NUM_ENVS, device=env.device), cfg=cfg,
                **common)
    trainer = SequentialTrainer(cfg=SequentialTrainerCfg(timesteps=steps // NUM_ENVS, headless=True,
                                                         disable_progressbar=True, close_environment_at_exit=False),
                                env=env, agents=agent)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start

    def act(obs):
        mean = models["policy"].act({"observations": obs, "states": None}, role="policy")[1]["mean_actions"]
        return mean

    return {"env_steps": steps // NUM_ENVS * NUM_ENVS, "train_wall_s": wall, "final_eval": evaluate(act, env_id, seed)}


def run_ours(env_id: str, seed: int, steps: int) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, str(ROOT / "cleanrl_ppo" / "ppo_continuous.py"), "--env-id", env_id, "--seed", str(seed),
               "--num-envs", str(NUM_ENVS), "--total-timesteps", str(steps), "--checkpoint-interval", "0",
               "--eval-interval", "0",
               "--runs-dir", runs]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        (summary,) = Path(runs).glob("*/summary.json")
        s = json.loads(summary.read_text())
    return {"env_steps": s["env_steps"], "train_wall_s": None, "final_eval": s["final_eval_return"]}


RUNNERS = {"sb3": run_sb3, "rsl_rl": run_rsl_rl, "skrl": run_skrl, "ours": run_ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="CartpoleBalance")
    parser.add_argument("--total-timesteps", type=int, default=300_000)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--libraries", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--out", default=str(ROOT / "runs" / "adapters"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        library, env_id, seed = args.child
        print(json.dumps(RUNNERS[library](env_id, int(seed), args.total_timesteps)))
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    settings = {"env_id": args.env_id, "total_timesteps": args.total_timesteps, "num_envs": NUM_ENVS,
                "library_settings": LIBRARY_SETTINGS}
    results = json.loads(path.read_text()) if path.exists() else {"settings": settings, "runs": []}
    if results["settings"] != settings:
        raise SystemExit(f"{path} holds runs of other settings; use another --out")
    env = dict(os.environ, PLAYGROUND_GYM_PIN_JAX_CPU="0", PYTHONUNBUFFERED="1")
    for seed in args.seeds:
        for library in args.libraries:
            if any(r["library"] == library and r["seed"] == seed for r in results["runs"]):
                continue
            print(f"== {library} seed {seed}", flush=True)
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", library, args.env_id, str(seed),
                                   "--total-timesteps", str(args.total_timesteps)], env=env, cwd=ROOT,
                                  capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{library} seed {seed} failed:\n{proc.stderr[-3000:]}")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            run.update(library=library, seed=seed, process_wall_s=time.perf_counter() - start)
            run["process_sps"] = run["env_steps"] / run["process_wall_s"]
            run["train_sps"] = run["env_steps"] / run["train_wall_s"] if run["train_wall_s"] else None
            print(f"   final eval {run['final_eval']:.1f}, {run['process_sps']:,.0f} SPS (whole process)", flush=True)
            results["runs"].append(run)
            path.write_text(json.dumps(results, indent=1))
    print(table(results))
    (out / "table.md").write_text(table(results) + "\n")


def table(results: dict) -> str:
    import numpy as np

    rows = ["| library (through its adapter) | final deterministic eval, mean ± std | per seed | env steps/s, whole "
            "process | env steps/s, training call |", "|---|---:|---|---:|---:|"]
    for library in RUNNERS:
        runs = sorted((r for r in results["runs"] if r["library"] == library), key=lambda r: r["seed"])
        if not runs:
            continue
        evals = np.array([r["final_eval"] for r in runs])
        sps = np.mean([r["process_sps"] for r in runs])
        train = [r["train_sps"] for r in runs if r["train_sps"]]
        rows.append(f"| {library} | {evals.mean():.1f} ± {evals.std():.1f} (n={len(runs)}) | "
                    f"{', '.join(f'{e:.0f}' for e in evals)} | {sps:,.0f} | "
                    f"{f'{np.mean(train):,.0f}' if train else 'n/a'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()

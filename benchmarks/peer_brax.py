"""Brax's own PPO (`brax.training.agents.ppo.train`) against cleanrl_ppo/ppo_multiunroll.py, side by side.

    python benchmarks/peer_brax.py --env-id CartpoleBalance --preset cpu --seeds 5 --num-evals 6 --num-eval-envs 64 \
        --trainer-arg=--torch-threads=2 --out docs/figures/peer_brax

Same env (Playground, impl="jax"), same hyperparameters (ppo_multiunroll's resolved --preset, handed to both), same
machine, same env steps; seeds interleaved (brax 1, ours 1, brax 2, ...), each run in its own subprocess (fresh JIT
caches). Both run Brax's schedule for the same num_timesteps, num_evals and num_resets_per_eval (ppo_multiunroll's
brax_schedule is Brax's arithmetic), so they perform the same updates and evaluate at the same env steps, the same way:
deterministic policy, one full episode in each of --num-eval-envs envs (Brax: `deterministic_eval=True` in its
Evaluator; ours: the trainer's own evaluation).

Episode starts: Brax's `wrap_for_brax_training` replays each env's first state at every episode end (its
`full_reset=True` would zero the truncation flags Brax's GAE masks with), and the cpu preset forces no resets, so
both sides replay: ppo_multiunroll runs with `--no-full-reset` here (its default draws fresh initial states).

SPS = env steps / wall time of the whole run (imports, JIT compiles and the evaluations included; both evaluate the
same episodes at the same points), measured around each subprocess. Brax's own in-training `training/sps` (its last
epoch, evaluations excluded) is reported too.

The shim: brax 0.14.2 calls `jax.device_put_replicated(x, devices)` (ppo/train.py, to put the training state on each
local device before its `pmap`), which jax 0.10 removed. On one device it is equivalent to stacking a leading axis of
len(devices) and `jax.device_put` on that device; the worker defines exactly that before calling `ppo.train`, and only
if jax lacks the function.

Resumable: runs already in <out>/results.json under the same config are kept (a killed benchmark reruns only what
is missing; --seeds 10 after --seeds 5 adds seeds 6-10). Writes <out>/results.json (every run's eval curve, wall
time, SPS) and <out>/peer_brax_<env>.png (eval return vs env
steps, mean and min-max band over seeds, both sides), and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ROOT / "cleanrl_ppo" / "ppo_multiunroll.py"


def resolved_config(env_id: str, preset: str, total_timesteps: int | None, extra: list[str]) -> dict:
    """ppo_multiunroll's resolved args for this preset: the one source of both sides' hyperparameters."""
    sys.path.insert(0, str(ROOT / "tests"))
    from trainer_harness import load_trainer

    from playground_gym import experiment

    ppo = load_trainer("ppo_multiunroll")
    argv = ["--env-id", env_id, "--preset", preset, *extra]
    if total_timesteps:
        argv += ["--total-timesteps", str(total_timesteps)]
    args, _ = experiment.resolve_args(experiment.parse_args(ppo.Args, argv))
    cfg = vars(args)
    cfg["full_reset"] = False  # as Brax's wrapper: episodes restart from each env's replayed first state
    cfg["schedule"] = vars(ppo.brax_schedule(args))
    return cfg


# --- the Brax worker (runs in its own subprocess) -------------------------------------------------------------------

def brax_worker(cfg: dict, seed: int, num_eval_envs: int, out: str) -> None:
    import jax
    import jax.numpy as jnp

    if not hasattr(jax, "device_put_replicated"):  # removed from jax; brax 0.14.2 still calls it (see the docstring)
        def device_put_replicated(x, devices):
            return jax.tree.map(lambda a: jax.device_put(jnp.stack([jnp.asarray(a)] * len(devices)), devices[0]), x)

        jax.device_put_replicated = device_put_replicated
    import functools

    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo
    from mujoco_playground import wrapper

    from playground_gym.loading import load_env

    start = time.time()
    env = load_env(cfg["env_id"], impl="jax")
    history = []

    def progress(step, metrics):
        if "eval/episode_reward" in metrics:
            history.append({"step": int(step), "return": float(metrics["eval/episode_reward"]),
                            "wall_time": round(time.time() - start, 2),
                            "train_sps": float(metrics.get("training/sps", float("nan")))})
            print(f"brax step {step}: eval {history[-1]['return']:.1f} ({history[-1]['wall_time']:.0f} s)", flush=True)

    network_factory = functools.partial(ppo_networks.make_ppo_networks,
                                        policy_hidden_layer_sizes=tuple(cfg["actor_hidden_sizes"]),
                                        value_hidden_layer_sizes=tuple(cfg["critic_hidden_sizes"]))
    ppo.train(environment=env, wrap_env_fn=wrapper.wrap_for_brax_training,
              num_timesteps=cfg["total_timesteps"], episode_length=cfg["episode_length"],
              action_repeat=cfg["action_repeat"], num_envs=cfg["num_envs"], batch_size=cfg["batch_size"],
              num_minibatches=cfg["num_minibatches"], unroll_length=cfg["unroll_length"],
              num_updates_per_batch=cfg["num_updates_per_batch"], learning_rate=cfg["learning_rate"],
              entropy_cost=cfg["ent_coef"], discounting=cfg["gamma"], reward_scaling=cfg["reward_scaling"],
              gae_lambda=cfg["gae_lambda"], clipping_epsilon=cfg["clip_coef"],
              max_grad_norm=cfg["max_grad_norm"] or None, num_resets_per_eval=cfg["num_resets_per_eval"],
              normalize_observations=True, num_evals=cfg["num_evals"], num_eval_envs=num_eval_envs,
              deterministic_eval=True, seed=seed, progress_fn=progress, network_factory=network_factory)
    Path(out).write_text(json.dumps({"eval_history": history, "env_steps": history[-1]["step"]}))


# --- the driver -----------------------------------------------------------------------------------------------------

def run_brax(cfg, seed, num_eval_envs, workdir):
    out = Path(workdir) / f"brax_{seed}.json"
    cmd = [sys.executable, __file__, "--worker-brax", json.dumps(cfg), "--seed-one", str(seed),
           "--num-eval-envs", str(num_eval_envs), "--worker-out", str(out)]
    t = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.time() - t
    result = json.loads(out.read_text())
    return {**result, "wall_time_s": round(wall, 1), "sps": result["env_steps"] / wall,
            "train_sps": result["eval_history"][-1]["train_sps"]}


def run_ours(cfg, seed, num_eval_envs, workdir, extra, preload=None):
    runs = Path(workdir) / f"ours_{seed}"
    cmd = [sys.executable, str(TRAINER), "--env-id", cfg["env_id"], "--preset", cfg["preset"], "--seed", str(seed),
           "--total-timesteps", str(cfg["total_timesteps"]), "--num-evals", str(cfg["num_evals"]),
           "--num-eval-envs", str(num_eval_envs), "--checkpoint-interval", "0", "--runs-dir", str(runs),
           *([] if cfg["full_reset"] else ["--no-full-reset"]), *extra]
    t = time.time()
    sys.path.insert(0, str(ROOT / "tools"))  # tools/mkl_shim.py: outside the package
    from mkl_shim import preload_env

    subprocess.run(cmd, check=True, cwd=ROOT, env=preload_env(dict(os.environ, PYTHONUNBUFFERED="1"), preload))
    wall = time.time() - t
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"eval_history": summary["eval_history"], "env_steps": summary["env_steps"], "wall_time_s": round(wall, 1),
            "sps": summary["env_steps"] / wall, "train_sps": None}


def at_step(history, step):
    return next((e["return"] for e in history if e["step"] == step), float("nan"))


def mean_std(values):
    import numpy as np

    values = np.asarray(values, dtype=float)
    return f"{values.mean():.1f} ± {values.std():.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def report(results, cfg, out_dir):
    import numpy as np

    brax, ours = results["brax"], results["ours"]
    steps = sorted(({e["step"] for r in ours for e in r["eval_history"]} & {e["step"] for r in brax for e in
                                                                           r["eval_history"]}) - {0})  # trained
    final, mid = steps[-1], steps[len(steps) // 2 - 1] if len(steps) > 1 else steps[-1]
    rows = ["| | Brax ppo.train | ppo_multiunroll | ours / Brax |", "|-|-|-|-|"]
    sps_b, sps_o = [r["sps"] for r in brax], [r["sps"] for r in ours]
    rows.append(f"| SPS (whole run) | {mean_std(sps_b)} | {mean_std(sps_o)} | {np.mean(sps_o) / np.mean(sps_b):.2f}x |")
    rows.append(f"| Brax in-training SPS (last epoch, no eval) | {mean_std([r['train_sps'] for r in brax])} | | |")
    for label, step in (("mid", mid), ("final", final)):
        rb, ro = [at_step(r["eval_history"], step) for r in brax], [at_step(r["eval_history"], step) for r in ours]
        rows.append(f"| eval return at {step} steps ({label}) | {mean_std(rb)} | {mean_std(ro)} | "
                    f"{np.mean(ro) / np.mean(rb):.2f}x |")
    rows.append(f"| wall time (s) | {mean_std([r['wall_time_s'] for r in brax])} | "
                f"{mean_std([r['wall_time_s'] for r in ours])} | |")
    table = "\n".join(rows)
    print(f"\n{cfg['env_id']}, preset {cfg['preset']}: {cfg['num_envs']} envs, batch {cfg['batch_size']}, "
          f"{cfg['num_minibatches']} minibatches x {cfg['num_updates_per_batch']} epochs, unroll "
          f"{cfg['unroll_length']}, {final} env steps, {len(brax)} seed(s)\n\n{table}\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, runs, color in (("Brax ppo.train (shimmed)", brax, "tab:blue"), ("ppo_multiunroll (torch)", ours,
                                                                                  "tab:orange")):
        xs = sorted({e["step"] for r in runs for e in r["eval_history"]})
        ys = np.array([[at_step(r["eval_history"], x) for x in xs] for r in runs])
        ax.plot(xs, np.nanmean(ys, 0), color=color, label=f"{name}, {len(runs)} seed(s)")
        ax.fill_between(xs, np.nanmin(ys, 0), np.nanmax(ys, 0), color=color, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("deterministic eval return")
    ax.set_title(f"{cfg['env_id']}, preset {cfg['preset']}: Brax's PPO vs ppo_multiunroll")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = Path(out_dir) / f"peer_brax_{cfg['env_id']}.png"
    fig.savefig(png, dpi=110)
    (Path(out_dir) / "table.md").write_text(table + "\n")
    print(f"wrote {png} and {Path(out_dir) / 'results.json'}")


def _cpu_model() -> str:
    """The CPU's model name: XLA compiles for the host's features, so Brax's curves differ across CPU models."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown CPU")
    except OSError:
        return "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="CartpoleBalance")
    parser.add_argument("--preset", choices=["official", "cpu"], default="cpu")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N, interleaved brax/ours")
    parser.add_argument("--total-timesteps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--num-evals", type=int, default=None,
                        help="Brax's num_evals for both sides (default: the preset's); see ppo_multiunroll --help")
    parser.add_argument("--num-eval-envs", type=int, default=128, help="episodes per evaluation (Brax's default)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "peer_brax"))
    parser.add_argument("--only", choices=["brax", "ours"], default=None, help="run one side only")
    parser.add_argument("--trainer-arg", action="append", default=[],
                        help="extra ppo_multiunroll flag for both sides, e.g. --trainer-arg=--num-envs=64")
    parser.add_argument("--cpu-blas", choices=["auto", "default"], default="auto",
                        help="auto: run ours with tools/mkl_shim.py's MKL shim preloaded where torch's MKL would "
                             "take its AVX2 kernels on an AVX-512 CPU (AMD); default: never (Brax's XLA uses no MKL)")
    parser.add_argument("--worker-brax", help=argparse.SUPPRESS)
    parser.add_argument("--seed-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.worker_brax:
        return brax_worker(json.loads(a.worker_brax), a.seed_one, a.num_eval_envs, a.worker_out)

    extra = [x for arg in a.trainer_arg for x in arg.split("=", 1)]
    if a.num_evals is not None:
        extra += ["--num-evals", str(a.num_evals)]
    cfg = resolved_config(a.env_id, a.preset, a.total_timesteps, extra)
    sys.path.insert(0, str(ROOT / "tools"))
    import mkl_shim as cpu_blas

    preload = cpu_blas.preload_path() if a.cpu_blas == "auto" else None  # host-side only: harmless on a GPU run
    cfg["cpu_blas"] = "mkl-avx512-shim" if preload else "default"  # part of the key: results of both never mix
    os.makedirs(a.out, exist_ok=True)
    results_path = Path(a.out) / "results.json"
    results = {"config": cfg, "brax": [], "ours": [], "seeds": list(range(1, a.seeds + 1)),
               "machine": f"{os.cpu_count()} CPUs, {_cpu_model()}", "sps_definition": "env steps / whole-run wall time",
               "evaluation": {"num_evals": cfg["num_evals"], "num_eval_envs": a.num_eval_envs}}
    if results_path.exists():  # resume: runs already recorded under the same config are kept, not rerun
        previous = json.loads(results_path.read_text())
        mine = json.loads(json.dumps([cfg, results["evaluation"]]))  # as stored: tuples become lists
        if [previous.get("config"), previous.get("evaluation")] != mine:
            raise SystemExit(f"{results_path} holds runs of another config or evaluation; use another --out or "
                             f"remove it\n  there: {(previous.get('config'), previous.get('evaluation'))}\n"
                             f"  now:   {mine}")
        for side in ("brax", "ours"):
            results[side] = [r for r in previous[side] if r["seed"] in results["seeds"]]
        print(f"resuming {results_path}: brax seeds {[r['seed'] for r in results['brax']]}, ours seeds "
              f"{[r['seed'] for r in results['ours']]} already done", flush=True)
    done = {side: {r["seed"] for r in results[side]} for side in ("brax", "ours")}
    with tempfile.TemporaryDirectory() as workdir:
        for seed in results["seeds"]:
            if a.only != "ours" and seed not in done["brax"]:
                print(f"== brax seed {seed}", flush=True)
                results["brax"].append({"seed": seed, **run_brax(cfg, seed, a.num_eval_envs, workdir)})
            if a.only != "brax" and seed not in done["ours"]:
                print(f"== ppo_multiunroll seed {seed}", flush=True)
                results["ours"].append({"seed": seed, **run_ours(cfg, seed, a.num_eval_envs, workdir, extra,
                                                                 preload)})
            for side in ("brax", "ours"):
                results[side].sort(key=lambda r: r["seed"])
            results_path.write_text(json.dumps(results, indent=1))
    if results["brax"] and results["ours"]:
        report(results, cfg, a.out)


if __name__ == "__main__":
    main()

"""torch's CPU matmuls with and without tools/mkl_shim.py's MKL shim, in fresh processes, interleaved.

    python benchmarks/cpu_blas.py --rounds 4 --out docs/benchmarks/cpu_blas

Each round runs two worker processes, one plain and one with ``LD_PRELOAD`` = the shim, in alternating order. A
worker measures, on torch's default threads (all cores):
- ``matmul``: a (2112 x 256) @ (256 x 256) float32 matmul (one hidden layer of ppo_multiunroll's 5x256 critic on a
  --preset cpu minibatch of 64 segments x 32 steps + 64 bootstrap observations), in GFLOPS, on one thread and on
  all, and the same matmul under XLA (jax.jit), which does not use MKL: a control the shim must leave alone;
- ``update``: one ppo_multiunroll `update()` (10 epochs x 8 minibatches, the preset's shapes, CartpoleBalance's
  5-dim observations, random data), in ms per minibatch, and its final value loss (the shim changes MKL's summation
  order, so it agrees to float32 rounding, not bit for bit).
Writes results.json and summary.md under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def worker() -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from trainer_harness import load_trainer

    sys.path.insert(0, str(ROOT / "tools"))  # tools/mkl_shim.py: outside the package
    import mkl_shim as cpu_blas

    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    a, w = torch.randn(2112, 256), torch.randn(256, 256)

    def gflops(matmul, n=200):
        for _ in range(20):
            matmul()
        t = time.perf_counter()
        for _ in range(n):
            matmul()
        return 2 * 2112 * 256 * 256 / ((time.perf_counter() - t) / n) / 1e9

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_thread = gflops(lambda: a @ w)
    torch.set_num_threads(threads)
    all_threads = gflops(lambda: a @ w)
    import jax  # the control: XLA's own kernels, which the shim cannot touch

    xla_matmul = jax.jit(lambda x, y: x @ y)
    xa, xw = jax.numpy.asarray(a.numpy()), jax.numpy.asarray(w.numpy())
    xla = gflops(lambda: xla_matmul(xa, xw).block_until_ready())

    ppo = load_trainer("ppo_multiunroll")
    T, segments, obs_dim, act_dim = 32, 512, 5, 1
    args = SimpleNamespace(batch_size=64, num_minibatches=8, num_updates_per_batch=10, gae_lambda=0.95, gamma=0.995,
                           clip_coef=0.3, ent_coef=1e-2, vf_coef=0.5, norm_adv=True, max_grad_norm=None)
    agent = ppo.Agent(obs_dim, act_dim)
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3, eps=1e-8, fused=True)
    s = SimpleNamespace(obs=torch.randn(T, segments, obs_dim), actions=torch.randn(T, segments, act_dim),
                        boot_critic_obs=torch.randn(segments, obs_dim), logprobs=-torch.rand(T, segments),
                        rewards=torch.rand(T, segments) * 0.1, terminations=torch.zeros(T, segments),
                        truncations=(torch.rand(T, segments) < 0.01).float())
    s.critic_obs = s.obs  # the critic sees the policy's observations
    nonfinite = torch.zeros(())
    ppo.update(agent, optimizer, s, args, nonfinite)  # warm-up
    t = time.perf_counter()
    metrics = ppo.update(agent, optimizer, s, args, nonfinite)
    per_minibatch_ms = (time.perf_counter() - t) / (args.num_updates_per_batch * args.num_minibatches) * 1e3
    return {"shim_loaded": cpu_blas.shim_loaded(), "threads": threads, "matmul_gflops": all_threads,
            "matmul_gflops_1_thread": one_thread, "xla_matmul_gflops": xla,
            "update_ms_per_minibatch": per_minibatch_ms, "value_loss": float(metrics["losses/value_loss"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default=None, help="folder for results.json and summary.md (default: print only)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.worker:
        print(json.dumps(worker()))
        return
    sys.path.insert(0, str(ROOT / "tools"))  # tools/mkl_shim.py: outside the package
    import mkl_shim as cpu_blas

    shim = cpu_blas.build_shim()
    runs: dict[str, list[dict]] = {"plain": [], "shim": []}
    for r in range(a.rounds):
        for kind in (("plain", "shim") if r % 2 == 0 else ("shim", "plain")):
            plain_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            env = cpu_blas.preload_env(plain_env, shim if kind == "shim" else None)
            out = subprocess.run([sys.executable, __file__, "--worker"], env=env, cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout
            runs[kind].append(json.loads(out.strip().splitlines()[-1]))
            print(kind, runs[kind][-1], flush=True)
    if any(r["shim_loaded"] for r in runs["plain"]) or not all(r["shim_loaded"] for r in runs["shim"]):
        raise SystemExit("a worker ran with the wrong MKL (see shim_loaded above)")

    def stat(kind, key):
        values = [r[key] for r in runs[kind]]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    reason = cpu_blas.slow_mkl_reason()
    lines = ["| | plain torch (MKL's own dispatch) | with the shim | shim / plain |", "|-|-|-|-|"]
    for key, label in (("matmul_gflops_1_thread", "torch matmul GFLOPS (2112x256 @ 256x256), 1 thread"),
                       ("matmul_gflops", "torch matmul GFLOPS, all threads"),
                       ("xla_matmul_gflops", "XLA matmul GFLOPS (jax.jit, its default threads; a control)"),
                       ("update_ms_per_minibatch", "ppo_multiunroll update, ms per minibatch")):
        (p, ps), (q, qs) = stat("plain", key), stat("shim", key)
        lines.append(f"| {label} | {p:.1f} ± {ps:.1f} | {q:.1f} ± {qs:.1f} | {q / p:.2f}x |")
    lines.append(f"| value loss after the update (seed 0) | {runs['plain'][0]['value_loss']:.6g} | "
                 f"{runs['shim'][0]['value_loss']:.6g} | |")
    summary = (f"{a.rounds} rounds, fresh processes, interleaved; {os.cpu_count()} CPUs, torch on "
               f"{runs['plain'][0]['threads']} threads; this machine: {reason or 'the shim is not needed here'}\n\n"
               + "\n".join(lines) + "\n")
    print("\n" + summary)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "results.json").write_text(json.dumps(runs, indent=1))
        (Path(a.out) / "summary.md").write_text(summary)


if __name__ == "__main__":
    main()

"""Is a gap between jax mode and raw ``jit(vmap(step))`` in the compiled program, in buffer donation, or in Python?

Times, in one process with the contenders interleaved round by round (medians of per-round ms per step, and each
round's ratio to raw), with random constant actions and the official 1000-step episodes (no env ends inside the
rounds, as in ``env_throughput.py``'s table):

  raw                 jax.jit(jax.vmap(env.step))
  raw_donated         the same with its state donated (updated in place, as the wrapper's carry is)
  program             the vector env's own compiled step (replayed first states), called directly on its carry
  program_undonated   the same step function, jitted without donation
  program_fresh       the compiled step of fresh initial states (the default), called directly
  vec_step            ``PlaygroundVectorEnv.step`` in jax mode (replay): the program plus the Python of ``step()``

``program / raw`` is what the bookkeeping costs inside XLA; ``vec_step / program`` what the Python wrapper costs;
``raw_donated / raw`` and ``program / program_undonated`` what donation is worth.

    python benchmarks/step_ab.py --envs CartpoleBalance CheetahRun --num-envs 64 1024 --rounds 9 \\
        --json docs/benchmarks/throughput/step_ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from env_throughput import _cpu_model, _interleaved  # noqa: E402

__all__ = ["main", "step_ab"]

CONTENDERS = ("raw", "raw_donated", "program", "program_undonated", "program_fresh", "vec_step")


def step_ab(env_id: str, num_envs: int, seconds: float, rounds: int) -> tuple[dict[str, list[float]], int]:
    """({contender: ms per step, one per round}, steps per round: about ``seconds`` of raw's)."""
    import jax
    from mujoco_playground import registry

    import playground_gym
    from playground_gym import autoreset

    raw_env = registry.load(env_id, config_overrides={"impl": "jax"})
    keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
    actions = jax.random.uniform(jax.random.PRNGKey(1), (num_envs, raw_env.action_size), minval=-1.0, maxval=1.0)
    vecs = {full: playground_gym.make_vec(env_id, num_envs, device="cpu", episode_length=1000, array_type="jax",
                                          full_reset=full, quiet=True) for full in (False, True)}
    for v in vecs.values():
        v.reset(seed=0)
    undonated = jax.jit(autoreset.make_vector_functions(raw_env, vecs[False]._shared._spec).step)
    raw_jits = {name: jax.jit(jax.vmap(raw_env.step), donate_argnums=0 if name == "raw_donated" else ())
                for name in ("raw", "raw_donated")}
    state: dict[str, Any] = {name: jax.jit(jax.vmap(raw_env.reset))(keys) for name in raw_jits}
    carry, first = vecs[False]._carry, vecs[False]._first
    state["program_undonated"] = jax.tree.map(lambda x: x.copy(), carry)

    steps = 3

    def run(name: str) -> float:
        start = time.perf_counter()
        if name in raw_jits:
            s = state[name]
            for _ in range(steps):
                s = raw_jits[name](s, actions)
            state[name] = s
        elif name == "vec_step":
            for _ in range(steps):
                s = vecs[False].step(actions)[1]
        elif name == "program_undonated":
            s = state[name]
            for _ in range(steps):
                s, _ = undonated(s, first, actions)
            state[name] = s
        else:  # the vector env's compiled step, called on its carry as step() calls it
            v = vecs[name == "program_fresh"]
            for _ in range(steps):
                v._carry, s = v._step_jit(v._carry, v._first, actions)
        jax.block_until_ready(s)
        return 1e3 * (time.perf_counter() - start) / steps

    for name in CONTENDERS:  # compile and warm up
        run(name)
    steps = max(3, round(seconds * 1e3 / min(run("raw") for _ in range(3))))
    res = _interleaved(CONTENDERS, run, rounds, warmups=0)
    for v in vecs.values():
        v.close()
    return res, steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.3, help="about this long per contender and round")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    meta = {"date": time.strftime("%Y-%m-%d"), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "command": "python benchmarks/step_ab.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"# {meta['date']}, {meta['cpu']} ({meta['cores']} cores): {meta['command']}\n")
    print("| env | envs | raw ms/step | " + " | ".join(f"{c} / raw" for c in CONTENDERS[1:]) + " | vec_step / program |")
    print("|---|---:|---:|" + "---:|" * len(CONTENDERS))
    results: dict[str, Any] = {"meta": meta}
    for env_id in args.envs:
        for n in args.num_envs:
            ms, steps = step_ab(env_id, n, args.seconds, args.rounds)
            ratio = lambda a, b: statistics.median(x / y for x, y in zip(ms[b], ms[a]))  # noqa: E731  speed a/b
            results[f"{env_id} x {n}"] = {"steps_per_round": steps, "ms_per_step": ms,
                                          "speed_vs_raw": {c: ratio(c, "raw") for c in CONTENDERS[1:]},
                                          "vec_step_vs_program": ratio("vec_step", "program")}
            print(f"| {env_id} | {n} | {statistics.median(ms['raw']):.3f} | "
                  + " | ".join(f"{ratio(c, 'raw'):.2f}x" for c in CONTENDERS[1:])
                  + f" | {ratio('vec_step', 'program'):.2f}x |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

"""The compiled step of this checkout's ``playground_gym/autoreset.py`` against another commit's, in one process.

A change to the step's bookkeeping is judged by timing both programs in the same process, interleaved round by round
(machine noise then hits both alike): the other commit's ``autoreset.py`` is read with ``git show`` and loaded as a
module of its own next to this checkout's, each builds its step for the same env, and each step is jitted as the
vector env donates it (the carry donated where it travels leaf by leaf; no sharding pinned: one CPU device) and
called directly on its carry. Every contender starts from the same initial states (``reset`` of the same keys;
the observations checked equal between the two versions) and takes the same random constant actions; episodes are
longer than the run (no env ends inside it: checked after every round, each env's elapsed steps against the steps
taken), so what is timed is a step where no env ends: the step and its books, the refill and hand-out of fresh
states untaken (what a taken refill costs is ``env_throughput.py --reset-cost``'s to measure). Contenders: ``base`` and
``head``, each with fresh initial states (``full_reset=True``, the default) and, with ``--replay``, also replaying
first states. Reported per env and size: the median over rounds of head / base steps per second, each round's
ratio, and the compiled step's temporary buffer (XLA's ``memory_analysis``), which the CPU runtime allocates at
every call.

    python benchmarks/autoreset_ab.py --base 5cff72f --envs CartpoleBalance CheetahRun --num-envs 4 64 1024 4096 \\
        --rounds 9 --steps 40 --json docs/benchmarks/throughput/autoreset_ab.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from env_throughput import _cpu_model, _git_commit  # noqa: E402
from playground_gym import autoreset, vector_env  # noqa: E402
from playground_gym.loading import load_env  # noqa: E402


def load_base(commit: str) -> ModuleType:
    """``playground_gym/autoreset.py`` at ``commit`` as the module ``autoreset_base`` (it imports only the package's
    other modules, shared with this checkout)."""
    try:
        source = subprocess.run(["git", "show", f"{commit}:playground_gym/autoreset.py"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"--base: expected a commit holding playground_gym/autoreset.py; got {commit!r}: "
                         f"{err.stderr.strip()}") from None
    path = Path(f"/tmp/autoreset_base_{re.sub(r'[^A-Za-z0-9_.-]', '_', commit)}.py")
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("autoreset_base", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["autoreset_base"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def build(module: ModuleType, env: Any, n: int, full_reset: bool) -> dict[str, Any]:
    """The module's step for ``env`` x ``n``, jitted as the vector env jits it on the CPU, and its initial carry."""
    spec = module.EpisodeSpec(max_steps=1000, full_reset=full_reset)
    kwargs = {"refill_block": vector_env._refill_block(jax.devices("cpu")[0])} \
        if "refill_block" in module.make_vector_functions.__code__.co_varnames else {}
    fns = module.make_vector_functions(env, spec, **kwargs)
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    carry, first, out = jax.jit(fns.reset)(keys)
    donate = 0 if module.leaf_by_leaf(fns.layout(n)[0]) else ()
    actions = jax.random.uniform(jax.random.PRNGKey(1), (n, env.action_size), minval=-1.0, maxval=1.0)
    step = jax.jit(fns.step, donate_argnums=donate).lower(carry, first, actions).compile()  # one compile
    return {"step": step, "carry": carry, "first": first, "actions": actions, "obs0": np.asarray(out["obs"]),
            "temp_mb": step.memory_analysis().temp_size_in_bytes / 1e6, "elapsed": jax.jit(fns.elapsed), "taken": 0}


def run_round(c: dict[str, Any], steps: int) -> float:
    """``steps`` calls of the contender's step; its steps per second (of all envs)."""
    carry, t0 = c["carry"], time.perf_counter()
    for _ in range(steps):
        carry, out = c["step"](carry, c["first"], c["actions"])
    jax.block_until_ready((carry, out))
    seconds = time.perf_counter() - t0
    c["carry"], c["taken"] = carry, c["taken"] + steps
    if not bool((np.asarray(c["elapsed"](carry)) == c["taken"]).all()):  # an end anywhere restarts an env's count
        raise SystemExit("an env ended inside the timed rounds: expected none (episodes of 1000 steps)")
    return steps * c["actions"].shape[0] / seconds


def measure(env_id: str, n: int, base: ModuleType, rounds: int, steps: int, replay: bool) -> dict[str, Any]:
    env = load_env(env_id, impl="jax")
    modes = (True, False) if replay else (True,)
    contenders = {f"{name}_{'fresh' if full else 'replay'}": build(module, env, n, full)
                  for full in modes for name, module in (("base", base), ("head", autoreset))}
    obs0 = [c["obs0"] for c in contenders.values()]
    if not all(np.array_equal(obs0[0], o) for o in obs0[1:]):
        raise SystemExit(f"{env_id} x {n}: the versions' resets differ: expected the same initial states")
    for c in contenders.values():  # warm: compile and first calls outside the timing
        run_round(c, 2)
    sps: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            sps[name].append(run_round(contenders[name], steps))
    result: dict[str, Any] = {"env": env_id, "num_envs": n,
                              "temp_mb": {name: round(c["temp_mb"], 2) for name, c in contenders.items()},
                              "sps_median": {name: round(statistics.median(v)) for name, v in sps.items()},
                              "sps_rounds": {name: [round(x) for x in v] for name, v in sps.items()}}
    for mode in ("fresh", "replay") if replay else ("fresh",):
        per_round = [h / b for h, b in zip(sps[f"head_{mode}"], sps[f"base_{mode}"])]
        result[f"head_over_base_{mode}"] = round(statistics.median(per_round), 3)
        result[f"head_over_base_{mode}_rounds"] = [round(x, 3) for x in per_round]
    if replay:
        for name in ("base", "head"):
            per_round = [f / p for f, p in zip(sps[f"{name}_fresh"], sps[f"{name}_replay"])]
            result[f"{name}_fresh_over_replay"] = round(statistics.median(per_round), 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit whose autoreset.py is the baseline")
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[4, 64, 1024, 4096])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=40, help="steps per round (rounds x steps + 2 < 1000)")
    parser.add_argument("--replay", action="store_true", help="also time both versions with full_reset=False")
    parser.add_argument("--refill-block", type=int, default=None,
                        help="head's autoreset.REFILL_BLOCK for this run (0: all envs at once); default: as committed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.refill_block is not None:
        if args.refill_block < 0:
            parser.error(f"--refill-block: expected 0 (all envs at once) or a block size >= 1; got {args.refill_block}")
        autoreset.REFILL_BLOCK = args.refill_block or None
    if args.rounds < 1 or args.steps < 1 or args.rounds * args.steps + 2 >= 1000:
        parser.error(f"--rounds/--steps: expected rounds x steps + 2 < 1000 (no env may end); got {args.rounds} x "
                     f"{args.steps}")
    base = load_base(args.base)
    meta = {"base": args.base, "head": _git_commit(), "cpu": _cpu_model(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python benchmarks/autoreset_ab.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "jax": jax.__version__, "refill_block": autoreset.REFILL_BLOCK}
    results = []
    for env_id in args.envs:
        for n in args.num_envs:
            row = measure(env_id, n, base, args.rounds, args.steps, args.replay)
            results.append(row)
            print(f"{env_id} x {n}: head/base fresh {row['head_over_base_fresh']:.3f}"
                  + (f", replay {row['head_over_base_replay']:.3f}; fresh/replay base {row['base_fresh_over_replay']:.3f}"
                     f" head {row['head_fresh_over_replay']:.3f}" if args.replay else "")
                  + f"; temp MB {row['temp_mb']}", flush=True)
            if args.json:
                args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

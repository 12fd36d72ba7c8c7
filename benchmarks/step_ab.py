"""Is a gap between jax mode and raw ``jit(vmap(step))`` in the compiled program, in buffer donation, or in Python?

Times, in one process with the contenders interleaved round by round (medians of per-round ms per step, and each
round's ratio to raw), on the CPU, with random constant actions, every contender from the same initial states, and
episodes longer than the run (no env ends inside it: checked), so what is timed is the step and its books:

  raw                 jax.jit(jax.vmap(env.step))
  raw_donated         the same with its state donated (updated in place, as the wrapper's carry is)
  program             the vector env's own compiled step (replayed first states), called directly on its carry
                      (its carry donated only where it travels leaf by leaf: ``_Compiled.donate_carry``)
  program_donated     the same step function (as traced or taken from the trace cache), jitted with the same
                      shardings, its carry donated
  program_undonated   the same, not donated
  program_fresh       the compiled step of fresh initial states (the default), called directly
  program_torch       torch mode's compiled step (replay; its outputs packed into one byte buffer), called directly,
                      nothing waited for between steps: torch mode's program without its wait per step
  vec_step            ``PlaygroundVectorEnv.step`` in jax mode (replay): the program plus the Python of ``step()``

Printed: each contender's speed relative to raw (median of the per-round ratios; below 1: slower than raw), and the
copy ops of the compiled step (optimised HLO) donated and not: in the entry computation (with their bytes) and in
all computations. XLA copies a donated array before it writes the result over it wherever the program still reads
the input afterwards.
``program`` against raw is what the bookkeeping costs inside XLA; ``vec_step`` against ``program`` what the Python
of ``step()`` costs; ``raw_donated`` against raw and ``program_donated`` against ``program_undonated`` what donation
is worth.

    python benchmarks/step_ab.py --envs CartpoleBalance CheetahRun --num-envs 4 64 1024 --rounds 9 --seconds 0.5 \\
        --json docs/benchmarks/throughput/step_ab.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from env_throughput import _cpu_model, _git_commit, _interleaved  # noqa: E402

__all__ = ["copy_ops", "main", "step_ab"]

EPISODE_LENGTH = 100_000  # agent steps: longer than any run, so no env ends inside it
CONTENDERS = ("raw", "raw_donated", "program", "program_donated", "program_undonated", "program_fresh", "program_torch",
              "vec_step")


_ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
               "s64": 8, "u64": 8, "f64": 8}


def copy_ops(jitted: Any, *args: Any) -> dict[str, int]:
    """Copy ops in ``jitted``'s optimised HLO for ``args``: in its entry computation (run once per call), their bytes,
    and in all computations (branches, loop bodies: some run many times or not at all per call)."""
    text = jitted.lower(*args).compile().as_text()
    entry = text[text.index("\nENTRY"):]
    entry = entry[:entry.index("\n}")]
    pattern = r"= (\w+)\[([\d,]*)\]\S* copy\("
    nbytes = sum(_ITEM_BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(",") if d)
                 for dtype, dims in re.findall(pattern, entry))
    return {"entry": len(re.findall(pattern, entry)), "entry_bytes": nbytes, "all": len(re.findall(pattern, text))}


def step_ab(env_id: str, num_envs: int, seconds: float, rounds: int) -> tuple[dict[str, list[float]], int, dict]:
    """({contender: ms per step, one per round}, steps per round: about ``seconds`` of raw's, {"donates_carry":
    whether the env donates its carry, "copy_ops": {program_donated / program_undonated: :func:`copy_ops`}})."""
    import jax
    from mujoco_playground import registry

    import playground_gym

    raw_env = registry.load(env_id, config_overrides={"impl": "jax"})
    vecs = {kind: playground_gym.make_vec(env_id, num_envs, device="cpu", episode_length=EPISODE_LENGTH,
                                          action_repeat=1, array_type="torch" if kind == "torch" else "jax",
                                          full_reset=kind == "fresh", quiet=True) for kind in ("replay", "fresh", "torch")}
    for v in vecs.values():
        v.reset(seed=0)
    device = vecs["replay"].jax_device
    on_device = jax.sharding.SingleDeviceSharding(device)
    actions = jax.device_put(jax.random.uniform(jax.random.PRNGKey(1), (num_envs, raw_env.action_size), minval=-1.0,
                                                maxval=1.0), device)
    rejit = {name: jax.jit(vecs["replay"]._shared.step_function, in_shardings=on_device, out_shardings=on_device,
                           donate_argnums=0 if name == "program_donated" else ())
             for name in ("program_donated", "program_undonated")}
    raw_jits = {name: jax.jit(jax.vmap(raw_env.step), donate_argnums=0 if name == "raw_donated" else ())
                for name in ("raw", "raw_donated")}
    copy = lambda tree: jax.tree.map(lambda x: x.copy(), tree)  # noqa: E731
    start_state = vecs["replay"].env_state()  # the wrapper's initial states: raw steps the same ones
    state: dict[str, Any] = {name: copy(start_state) for name in raw_jits}
    carry, first = vecs["replay"]._carry, vecs["replay"]._first
    state.update({name: copy(carry) for name in rejit})
    info = {"donates_carry": vecs["replay"]._shared.donate_carry,
            "copy_ops": {name: copy_ops(fn, carry, first, actions) for name, fn in rejit.items()}}
    steps_run = {name: 0 for name in CONTENDERS}

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
                s = vecs["replay"].step(actions)[1]
        elif name in rejit:
            s = state[name]
            for _ in range(steps):
                s, _ = rejit[name](s, first, actions)
            state[name] = s
        else:  # the vector env's compiled step, called on its carry as step() calls it
            v = vecs[{"program": "replay", "program_fresh": "fresh", "program_torch": "torch"}[name]]
            for _ in range(steps):
                v._carry, s = v._step_jit(v._carry, v._first, actions)
        jax.block_until_ready(s)
        steps_run[name] += steps
        return 1e3 * (time.perf_counter() - start) / steps

    for name in CONTENDERS:  # compile and warm up
        run(name)
    steps = max(3, round(seconds * 1e3 / min(run("raw") for _ in range(3))))
    if steps_run["program"] + steps_run["vec_step"] + 2 * steps * rounds >= EPISODE_LENGTH:  # both step one env
        raise SystemExit(f"step_ab: {steps} steps x {rounds} rounds would end episodes ({EPISODE_LENGTH} steps): "
                         f"fewer --rounds or --seconds")
    res = _interleaved(CONTENDERS, run, rounds, warmups=0)
    for v in vecs.values():
        v.close()
    return res, steps, info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.3, help="about this long per contender and round")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    meta = {"date": time.strftime("%Y-%m-%d"), "commit": _git_commit(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "command": "python benchmarks/step_ab.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"# {meta['date']}, {meta['cpu']} ({meta['cores']} cores): {meta['command']}\n")
    print("| env | envs | program donates | copy ops donated / not: entry (bytes), all | raw ms/step | " + " | ".join(f"{c} vs raw" for c in CONTENDERS[1:])
          + " | vec_step vs program |")
    print("|---|---:|---|---:|---:|" + "---:|" * len(CONTENDERS))
    results: dict[str, Any] = {"meta": meta}
    for env_id in args.envs:
        for n in args.num_envs:
            ms, steps, info = step_ab(env_id, n, args.seconds, args.rounds)
            ratio = lambda a, b: statistics.median(x / y for x, y in zip(ms[b], ms[a]))  # noqa: E731  speed a/b
            results[f"{env_id} x {n}"] = {"steps_per_round": steps, **info, "ms_per_step": ms,
                                          "speed_vs_raw": {c: ratio(c, "raw") for c in CONTENDERS[1:]},
                                          "vec_step_vs_program": ratio("vec_step", "program")}
            copies = [info["copy_ops"][name] for name in ("program_donated", "program_undonated")]
            print(f"| {env_id} | {n} | {'yes' if info['donates_carry'] else 'no'} | "
                  + " / ".join(f"{c['entry']} ({c['entry_bytes'] / 1024:.0f} KiB), {c['all']}" for c in copies)
                  + f" | {statistics.median(ms['raw']):.3f} | "
                  + " | ".join(f"{ratio(c, 'raw'):.2f}x" for c in CONTENDERS[1:])
                  + f" | {ratio('vec_step', 'program'):.2f}x |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

"""Env stepping throughput and time-to-first-step: playground_gym vs raw MJX vs upstream's wrapper.

Measures, in ONE process with the three contenders interleaved round by round (so machine noise hits
all of them alike), env steps per second of:
  raw       jax.jit(jax.vmap(env.step)) on a Playground env: no autoreset, no episode books (the ceiling);
            nothing waits between steps, so the Python side of step N+1 overlaps step N's physics
  raw_torch the same raw step as a torch user must run it: each step's observation and reward taken into torch
            (torch.from_dlpack), which on CPU waits for that step (a policy cannot act on unfinished results);
            its actions are JAX arrays (ours convert torch actions, so this favours raw_torch).
            ours/raw_torch is the wrapper's own cost at equal waiting; raw/raw_torch what the wait costs
  upstream  mujoco_playground.wrapper.wrap_for_brax_training(env) stepped with jax.jit
  ours      playground_gym.make_vec(..., array_type="torch").step(torch actions), outputs as torch tensors
  ours_jax  the same env with array_type="jax" (JAX actions in, JAX arrays out, no wait per step): the same
            compiled step and bookkeeping without torch mode's hand-over, so ours_jax/raw is what the bookkeeping
            costs and ours/ours_jax what the hand-over costs
  ours_replay, ours_jax_replay  the same two with full_reset=False: finished envs replay their first state, the
            same reset work as upstream's (the default, fresh initial states, keeps a pool of them in the carry)
and reports each round's ratio to raw and to upstream (median over rounds). Every contender steps its own copy of
the same initial states (those of ours' ``reset(seed=0)``; checked) with the same actions and as many steps per
round, so all are at the same point of the same trajectories (MJX's solver iterates to a tolerance: a step's cost
depends on the states it steps). Actions are random but constant, so no
episode ends inside the timed rounds (1000-step episodes): what is timed is the step and its books, not resets
(``--reset-cost`` times those). Several ``--num-envs`` make one table of all sizes. Time to first step is
measured in fresh subprocesses with the persistent compilation cache off (cold), plus ours with a warm
cache: wall time from env construction to the end of the SECOND step, because upstream compiles its step
twice (reset and step outputs differ in weak types).

    python benchmarks/env_throughput.py --envs CartpoleBalance CheetahRun --num-envs 1024
    python benchmarks/env_throughput.py --envs CartpoleBalance CheetahRun --num-envs 4 64 1024 4096 \
        --skip-first-step --steps 30 --rounds 5 --json docs/benchmarks/throughput/results.json

``--reset-cost`` measures instead what fresh initial states (``full_reset=True``, the default) cost against
upstream's replay of each env's first state (``full_reset=False``), torch mode, interleaved: rounds of exactly one
episode (``--episode-length`` agent steps, 100 by default, so each round holds one reset of every env), with the
episodes of all envs ending together (as DM Control's do from a reset) and spread uniformly over the episode
(``set_elapsed_steps``: about num_envs / episode_length envs finish per step, as with falls or rsl_rl's
``init_at_random_ep_len``):

    python benchmarks/env_throughput.py --reset-cost --envs CartpoleBalance CheetahRun HumanoidRun --num-envs 64

``--randomization-cost`` measures what domain randomisation costs per step, torch mode, interleaved: the same task
without randomisation, with the official randomiser (per-env models drawn at reset, the randomised fields carried
with a leading env axis) and with ``randomize_on_reset=True`` (each finished env draws a new model); zero actions.
Two regimes: the official episode length (no env ends inside the rounds: the step alone) and, with
``--episode-length L``, episodes of L steps whose ends are spread uniformly, so fresh states are drawn (with models
drawn once, each env's fresh states must be made with its own model: see the robots page):

    python benchmarks/env_throughput.py --randomization-cost --envs Go1JoystickFlatTerrain --num-envs 64 256
    python benchmarks/env_throughput.py --randomization-cost --envs Go1JoystickFlatTerrain --num-envs 256 \
        --episode-length 20 --steps 40
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable


def _time_to_first_steps(kind: str, env_id: str, num_envs: int) -> dict[str, float]:
    """Run in a child process: seconds for construction+reset, first step, second step."""
    import jax
    import jax.numpy as jnp

    t0 = time.perf_counter()
    if kind == "upstream":
        from mujoco_playground import registry, wrapper

        env = wrapper.wrap_for_brax_training(registry.load(env_id, config_overrides={"impl": "jax"}),
                                             episode_length=1000)
        reset, step = jax.jit(env.reset), jax.jit(env.step)
        state = jax.block_until_ready(reset(jax.random.split(jax.random.PRNGKey(0), num_envs)))
        actions = jnp.zeros((num_envs, env.action_size))
        t1 = time.perf_counter()
        state = jax.block_until_ready(step(state, actions))
        t2 = time.perf_counter()
        state = jax.block_until_ready(step(state, actions))
    else:
        import torch

        import playground_gym

        envs = playground_gym.make_vec(env_id, num_envs, device="cpu", episode_length=1000)
        envs.reset(seed=0)
        actions = torch.zeros(envs.action_space.shape)
        t1 = time.perf_counter()
        float(envs.step(actions)[1].sum())
        t2 = time.perf_counter()
        float(envs.step(actions)[1].sum())
    t3 = time.perf_counter()
    return {"construct_and_reset": t1 - t0, "first_step": t2 - t1, "second_step": t3 - t2, "total": t3 - t0}


def time_to_first_steps(kind: str, env_id: str, num_envs: int, cache_dir: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    if cache_dir is None:
        env["PLAYGROUND_GYM_COMPILATION_CACHE"] = "0"
    else:
        env["PLAYGROUND_GYM_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, __file__, "--child", kind, env_id, str(num_envs)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def throughput(env_id: str, num_envs: int, steps: int, rounds: int, device: str = "cpu") -> dict[str, list[float]]:
    import jax
    import torch
    from mujoco_playground import registry, wrapper

    import numpy as np

    import playground_gym
    from playground_gym import backend
    from playground_gym.keys import reset_keys

    jax_device = backend.resolve_device(device)
    # the keys ours' reset(seed=0) resets its envs with: every contender steps its own copy of the same initial
    # states (checked below; MJX's solver iterates to a tolerance, so a step's cost depends on the states it steps:
    # CheetahRun's vary). Upstream's autoreset wrapper derives its envs' keys from the keys it is given with
    # vmap(split)(keys)[..., 1], which for raw uint32 keys mixes words of two keys, so no keys give it ours' states:
    # it gets them put in (its state's data and observation, and the cached first ones it replays)
    keys = jax.device_put(jax.vmap(jax.random.split)(reset_keys(0, 0, num_envs))[:, 1], jax_device)
    raw_env = registry.load(env_id, config_overrides={"impl": "jax"})
    up_env = wrapper.wrap_for_brax_training(registry.load(env_id, config_overrides={"impl": "jax"}),
                                            episode_length=1000)
    ours = {kind: playground_gym.make_vec(env_id, num_envs, device=device, episode_length=1000, impl="jax",
                                          array_type="jax" if "jax" in kind else "torch",
                                          full_reset="replay" not in kind)
            for kind in ("ours", "ours_jax", "ours_replay", "ours_jax_replay")}
    act_dim = raw_env.action_size
    gen = torch.Generator().manual_seed(0)
    host_actions = 2 * torch.rand(num_envs, act_dim, generator=gen) - 1
    torch_actions = host_actions.to(backend.torch_device_of(jax_device))
    jax_actions = jax.device_put(host_actions.numpy(), jax_device)

    raw_step = jax.jit(jax.vmap(raw_env.step))
    up_step = jax.jit(up_env.step)
    with jax.default_device(jax_device):
        state = {name: jax.jit(jax.vmap(raw_env.reset))(keys) for name in ("raw", "raw_torch")}
        up = jax.jit(up_env.reset)(keys)
        raw0 = state["raw"]
        first = {k: raw0.data if k.endswith("_first_data") else raw0.obs if k.endswith("_first_obs") else v
                 for k, v in up.info.items()}
        state["upstream"] = up.replace(data=raw0.data, obs=raw0.obs, info=first)
    for e in ours.values():
        e.reset(seed=0)
    qpos = [np.asarray(s.data.qpos) for s in (state["raw"], state["upstream"], *(e.env_state() for e in ours.values()))]
    if not all(np.allclose(q, qpos[0], atol=1e-5) for q in qpos):
        raise RuntimeError(f"throughput: {env_id}'s contenders do not start from the same initial states")

    def run(kind: str) -> float:
        start = time.perf_counter()
        if kind in ("ours", "ours_replay"):
            for _ in range(steps):
                reward = ours[kind].step(torch_actions)[1]
            float(reward.sum())  # reading a result waits for the last step
        elif kind in ("ours_jax", "ours_jax_replay"):
            for _ in range(steps):
                reward = ours[kind].step(jax_actions)[1]
            jax.block_until_ready(reward)
        elif kind == "raw_torch":
            s = state[kind]
            for _ in range(steps):
                s = raw_step(s, jax_actions)
                obs, reward = torch.from_dlpack(s.obs), torch.from_dlpack(s.reward)
            float(reward.sum())
            state[kind] = s
        else:
            fn, s = (raw_step, state[kind]) if kind == "raw" else (up_step, state[kind])
            for _ in range(steps):
                s = fn(s, jax_actions)
            jax.block_until_ready(s)
            state[kind] = s
        return steps * num_envs / (time.perf_counter() - start)

    kinds = ("raw", "raw_torch", "upstream", "ours", "ours_jax", "ours_replay", "ours_jax_replay")
    return _interleaved(kinds, run, rounds, warmups=2)


def _interleaved(names: list[str] | tuple[str, ...], run: Callable[[str], float], rounds: int,
                 warmups: int = 1) -> dict[str, list[float]]:
    """``run(name)`` of every contender ``warmups`` times (compiles), then ``rounds`` rounds in alternating order (so
    drifting machine load hits every contender alike): {name: one result per round}."""
    names = list(names)
    for name in names:
        for _ in range(warmups):
            run(name)
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            results[name].append(run(name))
    return results


def reset_cost(env_id: str, num_envs: int, episode_length: int, rounds: int,
               device: str = "cpu") -> dict[str, list[float]]:
    """ms per step of replayed vs fresh resets, ends synchronised vs spread; rounds of one episode each. Also the
    env's own batched reset of ``num_envs`` states (``jit(vmap(reset))``, what one refill of the fresh-state pool
    runs) divided by ``episode_length``: the least fresh states can cost per step when every env ends once an
    episode (fresh - replay also holds the pool's own per-step cost)."""
    import jax
    import numpy as np
    import torch

    import playground_gym

    envs, actions = {}, None
    for mode in ("replay", "fresh"):
        for ends in ("together", "spread"):
            e = playground_gym.make_vec(env_id, num_envs, device=device, episode_length=episode_length,
                                        action_repeat=1, full_reset=mode == "fresh", quiet=True)
            e.reset(seed=0)
            if ends == "spread":
                e.set_elapsed_steps(np.random.default_rng(0).integers(0, episode_length, num_envs))
            envs[f"{mode}, ends {ends}"] = e
            actions = torch.zeros(e.action_space.shape, device=e.device)

    some = envs["fresh, ends together"]
    env_reset = jax.jit(jax.vmap(some._shared.mjx_env.reset))
    resets = 0

    def run(name: str) -> float:
        nonlocal resets
        if name == ENV_RESET:  # new keys each time, as each refill of the pool draws (a solver's cost varies)
            resets += 1
            keys = jax.device_put(jax.random.split(jax.random.PRNGKey(resets), num_envs), some.jax_device)
        start = time.perf_counter()
        if name == ENV_RESET:
            jax.block_until_ready(env_reset(keys))
        else:
            for _ in range(episode_length):
                reward = envs[name].step(actions)[1]
            float(reward.sum())
        return 1e3 * (time.perf_counter() - start) / episode_length

    return _interleaved([*envs, ENV_RESET], run, rounds)


ENV_RESET = "env reset / episode length"  # reset_cost's contender: the env's own reset of all envs, amortised


def randomization_cost(env_id: str, num_envs: int, steps: int, rounds: int, episode_length: int | None = None,
                       device: str = "cpu") -> dict[str, dict[str, list[float]]]:
    """ms per step and episode ends per round of one task without randomisation, with the official randomiser
    (models drawn once: each env's fresh states made with its own model, a pool entry per env) and redrawn at each
    reset (a shared pool). ``episode_length`` None: the official length and action repeat, no time-limit end inside
    the rounds (checked; a fall still ends an episode: the ends are counted); else episodes of that many steps at
    action repeat 1 with the ends spread uniformly (``set_elapsed_steps``), so the fresh-state pools refill."""
    import numpy as np
    import torch

    import playground_gym

    settings = {"off": {}, "official": {"domain_randomization": True},
                "official, redrawn at reset": {"domain_randomization": True, "randomize_on_reset": True}}
    envs = {}
    for name, kwargs in settings.items():
        envs[name] = playground_gym.make_vec(env_id, num_envs, device=device, quiet=True, episode_length=episode_length,
                                             action_repeat=1 if episode_length else None, **kwargs)
        envs[name].reset(seed=0)
        if episode_length:
            envs[name].set_elapsed_steps(np.random.default_rng(0).integers(0, episode_length, num_envs))
        elif steps * (rounds + 1) >= envs[name].max_episode_steps:
            raise SystemExit(f"--randomization-cost: {steps} steps x {rounds + 1} rounds reach {env_id}'s official "
                             f"episode end ({envs[name].max_episode_steps} steps): fewer --steps or --rounds")
    actions = torch.zeros(envs["off"].action_space.shape, device=envs["off"].device)
    ends: dict[str, list[float]] = {k: [] for k in envs}

    def run(name: str) -> float:
        e, ended = envs[name], torch.zeros((), dtype=torch.int64, device=envs[name].device)
        start = time.perf_counter()
        for _ in range(steps):
            _, reward, _, _, info = e.step(actions)
            ended += info["_final_obs"].sum()
        float(reward.sum())
        elapsed = time.perf_counter() - start
        ends[name].append(float(ended))
        return 1e3 * elapsed / steps

    for name in envs:  # compile and warm up; their ends are not counted
        run(name)
    for k in ends:
        ends[k].clear()
    ms = _interleaved(list(envs), run, rounds, warmups=0)
    for e in envs.values():
        e.close()
    return {"ms_per_step": ms, "ends_per_round": ends}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1024], help="one or more batch sizes")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--skip-first-step", action="store_true", help="throughput only")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    parser.add_argument("--reset-cost", action="store_true", help="fresh vs replayed resets (see above)")
    parser.add_argument("--randomization-cost", action="store_true",
                        help="domain randomisation off vs official vs redrawn at reset (see above)")
    parser.add_argument("--episode-length", type=int, default=None,
                        help="--reset-cost: agent steps per episode (default 100); --randomization-cost: see above")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (all three contenders run there)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, env_id, n = args.child
        print(json.dumps(_time_to_first_steps(kind, env_id, int(n))))
        return

    if args.reset_cost:
        rows = {}
        args.num_envs = args.num_envs[0]
        print("| env | envs | ends | replay ms/step | fresh ms/step | fresh / replay | fresh - replay (ms/step) | "
              "env's own reset / episode length (ms/step) |\n|---|---:|---|---:|---:|---:|---:|---:|")
        for env_id in args.envs:
            ms = reset_cost(env_id, args.num_envs, args.episode_length or 100, args.rounds, args.device)
            rows[env_id] = ms
            med = {k: statistics.median(v) for k, v in ms.items()}
            for ends in ("together", "spread"):
                fresh, replay = ms[f"fresh, ends {ends}"], ms[f"replay, ends {ends}"]
                ratio = statistics.median(f / r for f, r in zip(fresh, replay))
                extra = statistics.median(f - r for f, r in zip(fresh, replay))
                print(f"| {env_id} | {args.num_envs} | {ends} | {med[f'replay, ends {ends}']:.2f} | "
                      f"{med[f'fresh, ends {ends}']:.2f} | {ratio:.2f} | {extra:.2f} | {med[ENV_RESET]:.2f} |",
                      flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"date": time.strftime("%Y-%m-%d"), "commit": _git_commit(), "cpu": _cpu_model(),
                           "cores": os.cpu_count(),
                           "command": "python benchmarks/env_throughput.py " + " ".join(sys.argv[1:]),
                           "episode_length": args.episode_length or 100, "rounds": args.rounds, "ms_per_step": rows}, f)
        return

    meta = {"date": time.strftime("%Y-%m-%d"), "commit": _git_commit(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "device": args.device,
            "command": "python benchmarks/env_throughput.py " + " ".join(sys.argv[1:])}
    if args.randomization_cost:
        from playground_gym import randomized_envs

        print(f"# {meta['date']}, {meta['cpu']} ({meta['cores']} cores), device {args.device}: {meta['command']}")
        regime = (f"episodes of {args.episode_length} agent steps at action repeat 1, ends spread"
                  if args.episode_length else "official episode length and action repeat, no time-limit end")
        print(f"\n{regime}; median ms per step over {args.rounds} interleaved rounds of {args.steps} steps, "
              f"episode ends per round (falls included)\n")
        print("| env | envs | off | official | redrawn at reset | official / off | redrawn / off | ends per round "
              "(off / official / redrawn) |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        rows = {}
        for env_id in args.envs:
            if env_id not in randomized_envs():
                print(f"| {env_id} | skipped: no official randomiser (playground_gym.randomized_envs()) |||||||")
                continue
            for n in args.num_envs:
                res = randomization_cost(env_id, n, args.steps, args.rounds, args.episode_length, args.device)
                rows[f"{env_id} x {n}"] = res
                ms, ends = res["ms_per_step"], res["ends_per_round"]
                med = {k: statistics.median(v) for k, v in ms.items()}
                ratio = lambda a: statistics.median(x / o for x, o in zip(ms[a], ms["off"]))  # noqa: E731
                print(f"| {env_id} | {n} | {med['off']:.2f} | {med['official']:.2f} | "
                      f"{med['official, redrawn at reset']:.2f} | {ratio('official'):.2f}x | "
                      f"{ratio('official, redrawn at reset'):.2f}x | "
                      + " / ".join(f"{statistics.median(v):.0f}" for v in ends.values()) + " |", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"meta": meta, "regime": regime, "steps": args.steps, "rounds": args.rounds, "results": rows},
                          f, indent=1)
        return

    print(f"# {meta['date']}, {meta['cpu']} ({meta['cores']} cores), device {args.device}: {meta['command']}")
    by_size = {n: sweep(args, n) for n in args.num_envs}
    if args.json:
        with open(args.json, "w") as f:  # one size: {env: results} (benchmarks/gpu reads it so); several: by size
            json.dump(by_size[args.num_envs[0]] if len(by_size) == 1
                      else {"meta": meta, **{str(n): r for n, r in by_size.items()}}, f, indent=1)


def _git_commit() -> str:
    """The checkout's commit (``+`` if its tracked files differ from it), or "unknown" outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=here).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "unknown CPU"


def sweep(args: argparse.Namespace, num_envs: int) -> dict[str, dict[str, object]]:
    """Throughput (and time to first steps) of every env at one size; prints its tables, returns the results."""
    results = {}
    for env_id in args.envs:
        res: dict[str, object] = {}
        if not args.skip_first_step:
            with tempfile.TemporaryDirectory() as cache:
                res["ttfs"] = {
                    "upstream (cold)": time_to_first_steps("upstream", env_id, num_envs, None),
                    "ours (cold)": time_to_first_steps("ours", env_id, num_envs, None),
                    "ours (warm cache)": (time_to_first_steps("ours", env_id, num_envs, cache),
                                          time_to_first_steps("ours", env_id, num_envs, cache))[1],
                }
        sps = throughput(env_id, num_envs, args.steps, args.rounds, args.device)
        res["sps"] = sps
        ratio = lambda a, b: statistics.median(x / y for x, y in zip(sps[a], sps[b]))  # noqa: E731
        res["ratio_raw"], res["ratio_upstream"] = ratio("ours", "raw"), ratio("ours", "upstream")
        res["ratio_jax_raw"] = ratio("ours_jax", "raw")
        res["ratios"] = {f"{k}/{ref}": ratio(k, ref) for k in ("ours", "ours_jax", "ours_replay", "ours_jax_replay")
                         for ref in ("raw", "upstream")}
        res["ratios"] |= {f"{k}/raw_torch": ratio(k, "raw_torch") for k in ("ours", "ours_replay")}
        res["ratios"]["raw_torch/raw"] = ratio("raw_torch", "raw")
        results[env_id] = res

    print(f"\n## Env throughput, {num_envs} envs, {args.device} ({os.cpu_count()} CPU cores), "
          f"{args.rounds} interleaved rounds x {args.steps} steps (ratios: median over rounds)\n")
    print("| env | envs | raw vmap SPS | upstream SPS | torch fresh | torch replay | jax fresh | jax replay | "
          "raw, waited per step (x raw) | torch replay / raw waited |")
    print("|---|---:|---:|---:|---|---|---|---|---|---:|")
    for env_id, res in results.items():
        med = {k: statistics.median(v) for k, v in res["sps"].items()}
        cells = [f"{med[k]:,.0f} ({res['ratios'][f'{k}/raw']:.2f}x raw, {res['ratios'][f'{k}/upstream']:.2f}x up)"
                 for k in ("ours", "ours_replay", "ours_jax", "ours_jax_replay")]
        print(f"| {env_id} | {num_envs} | {med['raw']:,.0f} | {med['upstream']:,.0f} | " + " | ".join(cells) +
              f" | {med['raw_torch']:,.0f} ({res['ratios']['raw_torch/raw']:.2f}x) | "
              f"{res['ratios']['ours_replay/raw_torch']:.2f}x |", flush=True)
    if not args.skip_first_step:
        print("\n## Time to first steps (s): construct+reset, step 1, step 2, total\n")
        print("| env | contender | construct+reset | step 1 | step 2 | total |")
        print("|---|---|---:|---:|---:|---:|")
        for env_id, res in results.items():
            for name, t in res["ttfs"].items():
                print(f"| {env_id} | {name} | {t['construct_and_reset']:.1f} | {t['first_step']:.2f} | "
                      f"{t['second_step']:.2f} | {t['total']:.1f} |")
    return results


if __name__ == "__main__":
    main()

"""Env stepping throughput and time-to-first-step: playground_gym vs raw MJX vs upstream's wrapper.

Measures, in ONE process with the three contenders interleaved round by round (so machine noise hits
all of them alike), env steps per second of:
  raw       jax.jit(jax.vmap(env.step)) on a Playground env: no autoreset, no episode books (the ceiling)
  upstream  mujoco_playground.wrapper.wrap_for_brax_training(env) stepped with jax.jit
  ours      playground_gym.make_vec(..., array_type="torch").step(torch actions), outputs as torch tensors
  ours_jax  the same env with array_type="jax" (JAX actions in, JAX arrays out, no wait per step): the same
            compiled step and bookkeeping without torch mode's hand-over, so ours_jax/raw is what the bookkeeping
            costs and ours/ours_jax what the hand-over costs
and reports each round's ratio ours/raw and ours/upstream (median over rounds), plus ours_jax/raw. Time to first step is
measured in fresh subprocesses with the persistent compilation cache off (cold), plus ours with a warm
cache: wall time from env construction to the end of the SECOND step, because upstream compiles its step
twice (reset and step outputs differ in weak types).

    python benchmarks/env_throughput.py --envs CartpoleBalance CheetahRun --num-envs 1024

``--reset-cost`` measures instead what fresh initial states (``full_reset=True``, the default) cost against
upstream's replay of each env's first state (``full_reset=False``), torch mode, interleaved: rounds of exactly one
episode (``--episode-length`` agent steps, 100 by default, so each round holds one reset of every env), with the
episodes of all envs ending together (as DM Control's do from a reset) and spread uniformly over the episode
(``set_elapsed_steps``: about num_envs / episode_length envs finish per step, as with falls or rsl_rl's
``init_at_random_ep_len``):

    python benchmarks/env_throughput.py --reset-cost --envs CartpoleBalance CheetahRun HumanoidRun --num-envs 64
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

    import playground_gym
    from playground_gym import backend

    jax_device = backend.resolve_device(device)
    keys = jax.device_put(jax.random.split(jax.random.PRNGKey(0), num_envs), jax_device)
    raw_env = registry.load(env_id, config_overrides={"impl": "jax"})
    up_env = wrapper.wrap_for_brax_training(registry.load(env_id, config_overrides={"impl": "jax"}),
                                            episode_length=1000)
    ours = playground_gym.make_vec(env_id, num_envs, device=device, episode_length=1000)
    ours_jax = playground_gym.make_vec(env_id, num_envs, device=device, episode_length=1000, array_type="jax")
    act_dim = raw_env.action_size
    gen = torch.Generator().manual_seed(0)
    host_actions = 2 * torch.rand(num_envs, act_dim, generator=gen) - 1
    torch_actions = host_actions.to(backend.torch_device_of(jax_device))
    jax_actions = jax.device_put(host_actions.numpy(), jax_device)

    raw_step = jax.jit(jax.vmap(raw_env.step))
    up_step = jax.jit(up_env.step)
    with jax.default_device(jax_device):
        state = {"raw": jax.jit(jax.vmap(raw_env.reset))(keys), "upstream": jax.jit(up_env.reset)(keys)}
    ours.reset(seed=0)
    ours_jax.reset(seed=0)

    def run(kind: str) -> float:
        start = time.perf_counter()
        if kind == "ours":
            for _ in range(steps):
                reward = ours.step(torch_actions)[1]
            float(reward.sum())  # reading a result waits for the last step
        elif kind == "ours_jax":
            for _ in range(steps):
                reward = ours_jax.step(jax_actions)[1]
            jax.block_until_ready(reward)
        else:
            fn, s = (raw_step, state[kind]) if kind == "raw" else (up_step, state[kind])
            for _ in range(steps):
                s = fn(s, jax_actions)
            jax.block_until_ready(s)
            state[kind] = s
        return steps * num_envs / (time.perf_counter() - start)

    kinds = ("raw", "upstream", "ours", "ours_jax")
    for kind in kinds:  # compile and warm up
        run(kind), run(kind)
    sps: dict[str, list[float]] = {kind: [] for kind in kinds}
    for r in range(rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for kind in order:
            sps[kind].append(run(kind))
    return sps


def reset_cost(env_id: str, num_envs: int, episode_length: int, rounds: int,
               device: str = "cpu") -> dict[str, list[float]]:
    """ms per step of replayed vs fresh resets, ends synchronised vs spread; rounds of one episode each."""
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

    def run(e: object) -> float:
        start = time.perf_counter()
        for _ in range(episode_length):
            reward = e.step(actions)[1]
        float(reward.sum())
        return 1e3 * (time.perf_counter() - start) / episode_length

    for e in envs.values():  # compile and warm up
        run(e)
    ms: dict[str, list[float]] = {k: [] for k in envs}
    for r in range(rounds):
        for k in (list(envs) if r % 2 == 0 else list(envs)[::-1]):
            ms[k].append(run(envs[k]))
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartpoleBalance", "CheetahRun"])
    parser.add_argument("--num-envs", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--skip-first-step", action="store_true", help="throughput only")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    parser.add_argument("--reset-cost", action="store_true", help="fresh vs replayed resets (see above)")
    parser.add_argument("--episode-length", type=int, default=100, help="--reset-cost: agent steps per episode")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (all three contenders run there)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, env_id, n = args.child
        print(json.dumps(_time_to_first_steps(kind, env_id, int(n))))
        return

    if args.reset_cost:
        rows = {}
        for env_id in args.envs:
            ms = reset_cost(env_id, args.num_envs, args.episode_length, args.rounds, args.device)
            rows[env_id] = ms
            med = {k: statistics.median(v) for k, v in ms.items()}
            for ends in ("together", "spread"):
                ratio = statistics.median(f / r for f, r in zip(ms[f"fresh, ends {ends}"], ms[f"replay, ends {ends}"]))
                print(f"| {env_id} | {args.num_envs} | {ends} | {med[f'replay, ends {ends}']:.2f} | "
                      f"{med[f'fresh, ends {ends}']:.2f} | {ratio:.2f} |", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"episode_length": args.episode_length, "rounds": args.rounds, "ms_per_step": rows}, f)
        return

    results = {}
    for env_id in args.envs:
        res: dict[str, object] = {}
        if not args.skip_first_step:
            with tempfile.TemporaryDirectory() as cache:
                res["ttfs"] = {
                    "upstream (cold)": time_to_first_steps("upstream", env_id, args.num_envs, None),
                    "ours (cold)": time_to_first_steps("ours", env_id, args.num_envs, None),
                    "ours (warm cache)": (time_to_first_steps("ours", env_id, args.num_envs, cache),
                                          time_to_first_steps("ours", env_id, args.num_envs, cache))[1],
                }
        sps = throughput(env_id, args.num_envs, args.steps, args.rounds, args.device)
        res["sps"] = sps
        res["ratio_raw"] = statistics.median(o / r for o, r in zip(sps["ours"], sps["raw"]))
        res["ratio_upstream"] = statistics.median(o / u for o, u in zip(sps["ours"], sps["upstream"]))
        res["ratio_jax_raw"] = statistics.median(o / r for o, r in zip(sps["ours_jax"], sps["raw"]))
        results[env_id] = res

    print(f"\n## Env throughput, {args.num_envs} envs, {args.device} ({os.cpu_count()} CPU cores), "
          f"{args.rounds} interleaved rounds x {args.steps} steps\n")
    print("| env | raw vmap SPS | upstream SPS | playground_gym (torch) SPS | ours/raw | ours/upstream "
          "| playground_gym (jax) SPS | ours_jax/raw |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for env_id, res in results.items():
        med = {k: statistics.median(v) for k, v in res["sps"].items()}
        print(f"| {env_id} | {med['raw']:,.0f} | {med['upstream']:,.0f} | {med['ours']:,.0f} | "
              f"{res['ratio_raw']:.2f} | {res['ratio_upstream']:.2f} | {med['ours_jax']:,.0f} | "
              f"{res['ratio_jax_raw']:.2f} |")
    if not args.skip_first_step:
        print("\n## Time to first steps (s): construct+reset, step 1, step 2, total\n")
        print("| env | contender | construct+reset | step 1 | step 2 | total |")
        print("|---|---|---:|---:|---:|---:|")
        for env_id, res in results.items():
            for name, t in res["ttfs"].items():
                print(f"| {env_id} | {name} | {t['construct_and_reset']:.1f} | {t['first_step']:.2f} | "
                      f"{t['second_step']:.2f} | {t['total']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

"""Generate playground_gym/data/random_policy_returns.json: each env's return under uniform random actions.

The trainers' ``strength`` score is "return minus the env's random-policy return" (docs/campaigns.md); this
script measures that baseline. For each env: ``num_envs`` parallel envs with the official episode length
and action repeat, actions uniform in [-1, 1] from a seeded torch generator, one full episode each, and
the mean undiscounted (unscaled) return read from ``info["episode"]["r"]``.

Usage:
    python benchmarks/random_policy_returns.py                      # all DM Control envs, rewrites the table
    python benchmarks/random_policy_returns.py --env-ids FingerSpin  # merges one env into the table
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

import playground_gym

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "playground_gym" / "data" / "random_policy_returns.json"
VERSIONED = ("playground", "mujoco", "mujoco-mjx", "jax", "torch", "gymnasium", "playground_gym")


def random_return(env_id: str, num_envs: int, seed: int) -> float:
    """Mean return of the first full episode of each of ``num_envs`` envs under uniform random actions."""
    envs = playground_gym.make_vec(env_id, num_envs, device="cpu", seed=seed, impl="jax", quiet=True)
    gen = torch.Generator().manual_seed(seed)
    envs.reset(seed=seed)
    returns = torch.full((num_envs,), float("nan"))
    got = torch.zeros(num_envs, dtype=torch.bool)
    act_dim = envs.single_action_space.shape[0]
    for _ in range(envs.max_episode_steps):
        actions = torch.rand((num_envs, act_dim), generator=gen) * 2.0 - 1.0
        _, _, _, _, info = envs.step(actions)
        if "_episode" in info:
            first = info["_episode"] & ~got
            returns = torch.where(first, info["episode"]["r"], returns)
            got |= first
        if bool(got.all()):
            break
    envs.close()
    if not bool(got.all()):
        raise RuntimeError(f"{env_id}: only {int(got.sum())}/{num_envs} episodes finished in {envs.max_episode_steps} steps")
    return float(returns.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-ids", nargs="*", default=None, help="default: every DM Control env")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    env_ids = args.env_ids or playground_gym.list_envs("dm_control_suite")

    table: dict = {}
    merging = bool(args.env_ids) and args.out.exists()
    if merging:  # a partial run merges into the existing table (and is recorded in _meta["merged"])
        table = json.loads(args.out.read_text())
    command = "python " + shlex.join(["benchmarks/random_policy_returns.py", *sys.argv[1:]])
    versions = {}
    for dist in VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    previous = table.get("_meta", {})
    table["_meta"] = {
        "command": previous.get("command", command) if merging else command,
        "description": "mean undiscounted return of one full episode per env, actions uniform in [-1, 1], "
                       "official episode_length and action_repeat, impl jax on CPU",
        "num_envs": args.num_envs,
        "seed": args.seed,
        "date": datetime.date.today().isoformat(),
        "versions": versions,
    }
    if merging:
        merged = previous.get("merged", []) + [{"command": command, "env_ids": env_ids, "date": table["_meta"]["date"]}]
        table["_meta"]["merged"] = merged
    for env_id in env_ids:
        start = time.perf_counter()
        table[env_id] = round(random_return(env_id, args.num_envs, args.seed), 4)
        print(f"{env_id:24s} {table[env_id]:10.4f}   ({time.perf_counter() - start:.1f} s)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

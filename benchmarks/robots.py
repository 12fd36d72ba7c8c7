"""Every Playground robot task through playground_gym on this machine: sizes, official settings, time to first step.

For each locomotion and manipulation env, in fresh subprocesses (so every figure includes imports and compiles):
  cold  make_vec(env, NUM_ENVS, device="cpu") + reset + one step, with an empty JAX compilation cache and trace cache
  warm  the same again with the caches the cold run filled (what a second run of a trainer pays)
and, from the cold run: the observation sizes of ``state`` and ``privileged_state`` as the vector env reports them
(checked equal to Playground's own ``observation_size``), the action size (checked against Playground's), the official
episode length (``official_config``), and whether Playground has an official domain randomiser for the env.

Results are written after each env to the JSON file, and envs already in it are skipped: a killed run resumes.

    python benchmarks/robots.py --json docs/benchmarks/robots/survey.json          # all 29 (about an hour here)
    python benchmarks/robots.py --envs Go1JoystickFlatTerrain --json /tmp/go1.json
    python benchmarks/robots.py --json docs/benchmarks/robots/survey.json --markdown  # print the table only
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

NUM_ENVS = 2


def _probe(env_id: str) -> dict[str, object]:
    """Runs in the child: construct, reset and step once; report sizes and times."""
    start = time.perf_counter()
    import torch

    import playground_gym
    from playground_gym import configs

    envs = playground_gym.make_vec(env_id, NUM_ENVS, device="cpu", quiet=True)
    obs, info = envs.reset(seed=0)
    reset_done = time.perf_counter()
    obs, reward, terminated, truncated, info = envs.step(torch.zeros(envs.action_space.shape))
    if not bool(torch.isfinite(reward).all()):
        raise RuntimeError(f"{env_id}: non-finite reward after one step")
    first_step = time.perf_counter()

    raw = envs.mjx_env
    sizes = raw.observation_size
    as_list = lambda v: [int(v)] if isinstance(v, int) else [int(x) for x in v]  # noqa: E731
    sizes = {k: as_list(v) for k, v in sizes.items()} if isinstance(sizes, dict) else {"state": as_list(sizes)}
    ours = {"state": list(obs.shape[1:])}
    if "privileged_state" in info:
        ours["privileged_state"] = list(info["privileged_state"].shape[1:])
    for key, shape in ours.items():
        if shape != sizes[key]:
            raise RuntimeError(f"{env_id}: {key} {shape} here, {sizes[key]} in Playground")
    if envs.action_space.shape[1] != raw.action_size:
        raise RuntimeError(f"{env_id}: action size {envs.action_space.shape[1]} here, {raw.action_size} in Playground")
    official = configs.official_config(env_id)
    return {"env": env_id, "suite": configs.suite_of(env_id), "obs": ours, "action_size": int(raw.action_size),
            "episode_length": official["episode_length"], "ctrl_dt": official["ctrl_dt"],
            "randomizer": official["domain_randomization"],
            "value_obs_key": official.get("value_obs_key"), "source": envs._shared.source,
            "construct_reset_s": reset_done - start, "first_step_s": first_step - reset_done,
            "total_s": first_step - start}


def _run_child(env_id: str, cache: str) -> dict[str, object]:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, "--child", env_id], capture_output=True, text=True, env=env)
    if proc.returncode:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        return {"env": env_id, "error": detail[-1] if detail else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(results: dict[str, dict[str, object]]) -> str:
    lines = ["| env | suite | obs `state` | obs `privileged_state` | actions | episode | randomiser | "
             "first step cold (s) | warm (s) |", "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for env_id, r in results.items():
        if "error" in r:
            lines.append(f"| {env_id} | | | | | | | failed: {r['error']} | |")
            continue
        obs = r["obs"]
        size = lambda key: "x".join(str(v) for v in obs[key]) if key in obs else "-"  # noqa: E731
        lines.append(f"| {env_id} | {r['suite']} | {size('state')} | {size('privileged_state')} | {r['action_size']} | "
                     f"{r['episode_length']} | {'yes' if r['randomizer'] else 'no'} | {r['total_s']:.0f} | "
                     f"{r['warm']['total_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", help="default: all locomotion and manipulation envs")
    parser.add_argument("--json", help="results file (read first: envs in it are skipped)")
    parser.add_argument("--markdown", action="store_true", help="print the table of the results file and stop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_probe(args.child)))
        return
    if not args.json:
        parser.error("--json: expected the results file")
    from playground_gym import configs

    path = Path(args.json)
    data = json.loads(path.read_text()) if path.exists() else {"meta": {}, "envs": {}}
    if args.markdown:
        print(markdown(data["envs"]))
        return
    envs = args.envs or configs.list_envs("locomotion") + configs.list_envs("manipulation")
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown CPU")
    data["meta"] = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "cores": os.cpu_count(), "num_envs": NUM_ENVS,
                    "command": "python benchmarks/robots.py " + " ".join(sys.argv[1:])}
    for env_id in envs:
        if "error" not in data["envs"].get(env_id, {"error": ""}):
            continue
        with tempfile.TemporaryDirectory() as cache:
            result = _run_child(env_id, cache)
            if "error" not in result:
                result["warm"] = {k: v for k, v in _run_child(env_id, cache).items()
                                  if k in ("construct_reset_s", "first_step_s", "total_s", "source", "error")}
        data["envs"][env_id] = result
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

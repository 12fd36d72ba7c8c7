"""Run an exported policy (``policy.onnx`` and its sidecar) in its env: returns, lengths and, optionally, a video.

    python -m playground_gym.play runs/RUN/policy.onnx                      # the env and settings of the sidecar
    python -m playground_gym.play policy.onnx --env-id Go1JoystickFlatTerrain --num-envs 64 --video go1.mp4

The policy runs under onnxruntime (CUDA where onnxruntime has it, else the CPU), the env on its device through
:func:`playground_gym.make_vec`. Each of ``--num-envs`` envs plays one episode from the same start: all reset
together with ``--seed`` (default: the seed of the training run's final evaluation, so the mean return is the one the
trainer reported for the same envs; :func:`playground_gym.experiment.episodes` computes both). Prints the mean and
standard deviation of the return and length, as JSON with ``--json``. ``--video`` renders one deterministic episode
with the trainers' video renderer.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = ["play"]


def play(policy_path: str, env_id: str | None = None, num_envs: int | None = None, seed: int | None = None,
         device: str | None = None, video: str | None = None) -> dict[str, Any]:
    """Play one episode in each of ``num_envs`` envs with the exported policy; the statistics of their returns.

    Defaults come from the sidecar: the env id, episode length, action repeat, randomisation and fresh-reset settings
    the policy was trained with, and the number of envs and seed of its final evaluation.

    Raises:
        FileNotFoundError: no policy or sidecar. ValueError: the env's observations do not fit the policy.
    """
    import torch

    import playground_gym
    from playground_gym.experiment import capture_video, episodes
    from playground_gym.export import OnnxPolicy

    policy = OnnxPolicy(policy_path)
    meta, evaluation = policy.meta, policy.meta.get("evaluation") or {}
    env_id = env_id or meta["env_id"]
    num_envs = num_envs or evaluation.get("num_envs") or 16
    seed = seed if seed is not None else (evaluation.get("seed") if evaluation.get("seed") is not None else 0)
    same_env = env_id == meta["env_id"]
    if device is None and meta.get("device") is not None:  # the evaluation's device (and so its physics backend)
        device = "cpu" if meta["device"] == "cpu" else None
    envs = playground_gym.make_vec(
        env_id, num_envs, device=device, quiet=True, obs_key=meta.get("obs_key", "state"),
        impl=meta.get("impl") or "auto",
        episode_length=meta.get("episode_length") if same_env else None,
        action_repeat=meta.get("action_repeat") if same_env else None,
        domain_randomization=bool(evaluation.get("domain_randomization")) and same_env,
        full_reset=evaluation.get("full_reset", True))
    if envs.single_observation_space.shape != (policy.obs_dim,):
        raise ValueError(f"{env_id}: observations of shape {envs.single_observation_space.shape}; the policy expects "
                         f"({policy.obs_dim},)")
    def act(obs: Any, deterministic: bool) -> Any:  # the exported policy is deterministic already
        return torch.as_tensor(policy(obs.cpu().numpy()), device=envs.device)

    returns, lengths = (x.double().cpu().numpy() for x in episodes(act, envs, seed))  # as the trainer evaluates
    result = {"env_id": env_id, "num_envs": num_envs, "seed": seed, "episodes": num_envs,
              "return_mean": float(returns.mean()), "return_std": float(returns.std()),
              "length_mean": float(lengths.mean()), "length_std": float(lengths.std()),
              "trained_return": None}
    # the trainer's number is comparable only for its own final policy, deterministic, in the same envs
    comparable = (same_env and evaluation.get("deterministic", True) and evaluation.get("seed") == seed
                  and evaluation.get("num_envs") == num_envs and evaluation.get("step") is not None
                  and evaluation.get("step") == (meta.get("run") or {}).get("env_steps"))
    if comparable:
        result["trained_return"] = evaluation.get("return")
    if video:  # one deterministic episode from the seed, the trainers' --capture-video renderer (the nominal model)
        stem = os.path.splitext(os.path.abspath(video))[0]
        result["video"] = capture_video(act, envs, stem, seed)
    envs.close()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m playground_gym.play", description=__doc__.split("\n\n")[0])
    parser.add_argument("policy", help="an exported policy.onnx (its policy.json next to it)")
    parser.add_argument("--env-id", help="default: the sidecar's")
    parser.add_argument("--num-envs", type=int, help="episodes, one per env, in parallel (default: the final "
                                                     "evaluation's number of envs)")
    parser.add_argument("--seed", type=int, help="default: the seed of the training run's final evaluation")
    parser.add_argument("--device", help="the envs' device: cpu, cuda or cuda:N (default: JAX's GPU if any)")
    parser.add_argument("--video", help="render one deterministic episode to this file's name, as .mp4 with ffmpeg, "
                                        "else .gif (MuJoCo's renderer)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        result = play(args.policy, args.env_id, args.num_envs, args.seed, args.device, args.video)
    except (FileNotFoundError, ValueError, KeyError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['env_id']}: {result['episodes']} episodes, return {result['return_mean']:.2f} "
          f"+- {result['return_std']:.2f}, length {result['length_mean']:.0f} +- {result['length_std']:.0f}"
          + (f" (the trainer's final evaluation: {result['trained_return']:.2f})"
             if result["trained_return"] is not None else ""))


if __name__ == "__main__":
    main()

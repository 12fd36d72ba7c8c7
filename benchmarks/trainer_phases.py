"""Where a trainer's time goes: its `rollout` and `update` (and the evaluation) timed by wrapping them, one run,
and within the rollout, the env's step against the rest (the policy, normalisers and storage).

    python benchmarks/trainer_phases.py ppo_multiunroll --env-id CartpoleBalance --preset cpu \\
        --total-timesteps 262144 --torch-threads 2 --no-full-reset --checkpoint-interval 0 [--compile]
    LD_PRELOAD=$(python tools/mkl_shim.py) python benchmarks/trainer_phases.py ppo_multiunroll ...

The trainer (cleanrl_ppo/<name>.py) runs as usual with the flags given; each call of its module-level `rollout` and
`update` and of `playground_gym.experiment.evaluate` is timed (wall clock, the trainers do no host sync inside them
on CPU). Prints the mean seconds per call, the first call excluded (it holds compiles), and the total. Inside the
rollouts, `PlaygroundVectorEnv.step` is timed too: on the CPU it returns once the step has run (torch reads JAX's
buffers through DLPack, which waits for them), so its time is the env's share of a rollout step and the remainder
the policy's. On a GPU nothing waits there and the split is meaningless (it says so). Run it with
``--torch-threads 1`` on a small machine, so torch's worker threads do not spin into the env's time.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        raise SystemExit("usage: python benchmarks/trainer_phases.py TRAINER [trainer flags...]")
    from trainer_harness import load_trainer

    from playground_gym import experiment, vector_env

    trainer = load_trainer(argv[0])
    times: dict[str, list[float]] = {}

    def timed(module, name):
        fn = getattr(module, name)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times.setdefault(name, []).append(time.perf_counter() - start)

        setattr(module, name, wrapper)

    in_rollout = [False]
    vector_steps: list[int] = []  # per rollout call: how many vector env steps it ran
    step_of = vector_env.PlaygroundVectorEnv.step
    devices: set[str] = set()

    @functools.wraps(step_of)
    def step(self, actions):
        if not in_rollout[0]:
            return step_of(self, actions)
        devices.add(str(self.device))
        vector_steps[-1] += 1
        start = time.perf_counter()
        try:
            return step_of(self, actions)
        finally:
            times["env step within the rollout"][-1] += time.perf_counter() - start

    rollout_of = trainer.rollout

    @functools.wraps(rollout_of)
    def rollout(*args, **kwargs):
        times.setdefault("env step within the rollout", []).append(0.0)
        vector_steps.append(0)
        in_rollout[0] = True
        try:
            return rollout_of(*args, **kwargs)
        finally:
            in_rollout[0] = False

    trainer.rollout = rollout
    vector_env.PlaygroundVectorEnv.step = step
    timed(trainer, "rollout"), timed(trainer, "update"), timed(experiment, "evaluate")
    trainer.main(argv[1:], start_time=time.time())
    for name, calls in times.items():
        later = calls[1:] or calls
        print(f"{name}: {len(calls)} calls, {sum(later) / len(later):.3f} s per call after the first, "
              f"{sum(calls):.1f} s in all")
    rollouts, env_steps = times.get("rollout", [])[1:], times.get("env step within the rollout", [])[1:]
    if rollouts and sum(rollouts) > 0 and devices:
        share = sum(env_steps) / sum(rollouts)
        note = "" if devices == {"cpu"} else " (not a split: on a GPU the env step returns before its work is done)"
        per_step = 1e3 / max(sum(vector_steps[1:]), 1)
        print(f"rollout after the first: env step {share:.1%}, the rest (policy, normalisers, storage) "
              f"{1 - share:.1%}{note}; per vector step {sum(rollouts) * per_step:.3f} ms = env "
              f"{sum(env_steps) * per_step:.3f} ms + the rest {(sum(rollouts) - sum(env_steps)) * per_step:.3f} ms")


if __name__ == "__main__":
    main()

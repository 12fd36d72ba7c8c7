"""Where a trainer's time goes: its `rollout` and `update` (and the evaluation) timed by wrapping them, one run.

    python benchmarks/trainer_phases.py ppo_multiunroll --env-id CartpoleBalance --preset cpu \\
        --total-timesteps 262144 --torch-threads 2 --no-full-reset --checkpoint-interval 0 [--compile]
    LD_PRELOAD=$(python tools/mkl_shim.py) python benchmarks/trainer_phases.py ppo_multiunroll ...

The trainer (cleanrl_ppo/<name>.py) runs as usual with the flags given; each call of its module-level `rollout` and
`update` and of `playground_gym.experiment.evaluate` is timed (wall clock, the trainers do no host sync inside them
on CPU). Prints the mean seconds per call, the first call excluded (it holds compiles), and the total.
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

    from playground_gym import experiment

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

    timed(trainer, "rollout"), timed(trainer, "update"), timed(experiment, "evaluate")
    trainer.main(argv[1:], start_time=time.time())
    for name, calls in times.items():
        later = calls[1:] or calls
        print(f"{name}: {len(calls)} calls, {sum(later) / len(later):.3f} s per call after the first, "
              f"{sum(calls):.1f} s in all")


if __name__ == "__main__":
    main()

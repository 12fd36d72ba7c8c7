"""What makes two trainer runs the same experiment: the settings digest that campaigns and reports key runs by.

Two runs have the same :func:`settings_digest` when they trained with the same resolved settings (every flag after
the per-env official values and ``--preset`` were filled in) on the same number of ranks. They may differ in the
seed and in how they ran: the fields of :data:`HOW_IT_RUNS` (device, threads, ``--compile``, output folders,
checkpoints, videos) change speed or files, not what is learned. ``summary.json`` records the digest and the
resolved ``args`` it was computed from.

The resolved settings of a command line come from the trainer itself, without training: ``python -m
playground_gym.run_settings TRAINER.py [--world-size N]`` reads a JSON list of argument lists on stdin and prints,
for each, ``{"digest": ..., "args": {...}}`` or ``{"error": "one line"}``. The trainer must define ``Args``, an
:class:`~playground_gym.experiment.ExperimentArgs` dataclass, at module level (as the ``cleanrl_ppo`` trainers do);
its ``__main__`` block does not run.

Example:
    >>> a = {"env_id": "PointMass", "seed": 1, "learning_rate": 0.001, "device": "cpu", "runs_dir": "runs"}
    >>> b = {**a, "seed": 2, "device": "cuda", "runs_dir": "elsewhere"}
    >>> settings_digest(a) == settings_digest(b)
    True
    >>> settings_digest(a) == settings_digest({**a, "learning_rate": 0.0003})
    False
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["HOW_IT_RUNS", "SETTINGS_FORMAT", "SettingsError", "differing_settings", "resolve_commands",
           "settings_digest"]

SETTINGS_FORMAT = 1  # part of every digest: a change of what the digest covers makes old digests differ
# ExperimentArgs fields that change how a run executes or where it writes, not what it learns. ``preset`` only fills
# other fields (their resolved values are covered); ``seed`` is compared on its own (runs of one setting, many seeds).
HOW_IT_RUNS = frozenset({
    "seed", "preset", "device", "torch_threads", "pin_jax_cpu", "compile", "cudagraphs", "torch_deterministic",
    "runs_dir", "capture_video", "save_model", "checkpoint_interval", "resume", "dist_timeout",
})


class SettingsError(Exception):
    """A trainer whose settings cannot be resolved (no ``Args`` dataclass, an import error, bad output)."""


def _settings(args: Mapping[str, Any], world_size: int) -> dict[str, Any]:
    settings = {k: v for k, v in args.items() if k not in HOW_IT_RUNS}
    return {**settings, "_world_size": int(world_size), "_format": SETTINGS_FORMAT}


def settings_digest(args: Mapping[str, Any], world_size: int = 1) -> str:
    """16 hex digits identifying the resolved ``args`` (a trainer's ``asdict(args)`` or ``summary.json``'s ``args``)
    on ``world_size`` ranks, ignoring the fields of :data:`HOW_IT_RUNS`. Tuples and lists hash alike (JSON)."""
    text = json.dumps(_settings(args, world_size), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differing_settings(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{field: (value in a, value in b)}`` of the result-changing fields where two args dicts differ (a field
    missing on one side shows as ``None``)."""
    a, b = _settings(a, 1), _settings(b, 1)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if json.dumps(a.get(k), default=str) != json.dumps(b.get(k), default=str)}


def _load_args_type(script: Path) -> type:
    from playground_gym.experiment import ExperimentArgs

    spec = importlib.util.spec_from_file_location(f"_playground_gym_trainer_{script.stem}", script)
    if spec is None or spec.loader is None:
        raise SettingsError(f"{script}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # tyro reads the field docstrings through inspect, which looks the module up
    try:
        spec.loader.exec_module(module)  # its __name__ is not "__main__": the trainer does not run
    except Exception as e:  # noqa: BLE001 -- any import-time failure of the trainer is reported as one line
        raise SettingsError(f"{script}: importing it failed ({type(e).__name__}: {e})") from None
    args_type = getattr(module, "Args", None)
    if not (isinstance(args_type, type) and issubclass(args_type, ExperimentArgs)):
        raise SettingsError(f"{script} defines no `Args` (a playground_gym.experiment.ExperimentArgs dataclass), so "
                            f"its runs' settings cannot be resolved")
    return args_type


def resolve_commands(script: str | Path, argvs: Sequence[Sequence[str]], world_size: int = 1) -> list[dict[str, Any]]:
    """For each argument list, what the trainer ``script`` would run with: ``{"digest", "args"}``, or ``{"error"}``
    (its one-line command-line error). Resolution is :class:`~playground_gym.experiment.Experiment`'s own
    (``parse_args`` then ``resolve_args``).

    Raises:
        SettingsError: the script cannot be imported or defines no ``Args``.
    """
    from dataclasses import asdict

    from playground_gym.experiment import CLIError, parse_args, resolve_args

    args_type = _load_args_type(Path(script))
    out: list[dict[str, Any]] = []
    for argv in argvs:
        try:
            args, _ = resolve_args(parse_args(args_type, list(argv)))
        except CLIError as e:
            out.append({"error": str(e)})
            continue
        resolved = json.loads(json.dumps(asdict(args), default=str))
        out.append({"digest": settings_digest(resolved, world_size), "args": resolved})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m playground_gym.run_settings",
                                     description="Resolve trainer command lines (a JSON list of argument lists on "
                                                 "stdin) to their settings digests (JSON on stdout).")
    parser.add_argument("script", help="the trainer, e.g. cleanrl_ppo/ppo_continuous.py")
    parser.add_argument("--world-size", type=int, default=1, help="ranks each run will have (default: 1)")
    args = parser.parse_args(argv)
    try:
        argvs = json.loads(sys.stdin.read())
        if not (isinstance(argvs, list) and all(isinstance(a, list) and all(isinstance(s, str) for s in a)
                                                for a in argvs)):
            raise ValueError(f"expected a JSON list of lists of strings; got {type(argvs).__name__}")
    except ValueError as e:
        print(f"run_settings: error: stdin: {e}", file=sys.stderr)
        return 2
    try:
        result = resolve_commands(args.script, argvs, args.world_size)
    except SettingsError as e:
        print(f"run_settings: error: {e}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a trainer would run with, without running it: its command lines resolved to settings digests.

    echo '[["--env-id", "PointMass", "--seed", "1"]]' | python -m playground_gym.resolve cleanrl_ppo/ppo_tanh.py

reads a JSON list of argument lists on stdin and prints, for each, ``{"digest": ..., "args": {...}}`` (the resolved
args and their :func:`~playground_gym.run_settings.settings_digest`) or ``{"error": "one line"}`` (the trainer's own
command-line error). The trainer must define ``Args``, an :class:`~playground_gym.experiment.ExperimentArgs`
dataclass, at module level (as the ``cleanrl_ppo`` trainers do); it is imported by path and its ``__main__`` block
does not run. Resolution is :class:`~playground_gym.experiment.Experiment`'s own (``parse_args``, then
``resolve_args``), so a run records the digest that was resolved for it. Benchmark campaigns key their runs by it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from playground_gym.experiment import CLIError, ExperimentArgs, parse_args, resolve_args
from playground_gym.run_settings import settings_digest

__all__ = ["SettingsError", "load_args_type", "main", "resolve_commands"]


class SettingsError(Exception):
    """A trainer whose settings cannot be resolved (not importable, or no ``Args`` dataclass)."""


def load_args_type(script: Path) -> type:
    """The ``Args`` dataclass of the trainer file ``script`` (imported by path; its ``__main__`` block does not run).

    Raises:
        SettingsError: the file cannot be imported or defines no ``Args`` (an ExperimentArgs dataclass).
    """
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
    args_type = load_args_type(Path(script))
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

    parser = argparse.ArgumentParser(prog="python -m playground_gym.resolve",
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
        print(f"resolve: error: stdin: {e}", file=sys.stderr)
        return 2
    try:
        result = resolve_commands(args.script, argvs, args.world_size)
    except SettingsError as e:
        print(f"resolve: error: {e}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

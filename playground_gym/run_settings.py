"""What makes two trainer runs the same experiment: the settings digest that campaigns and reports key runs by.

Two runs have the same :func:`settings_digest` when they trained with the same resolved settings (every flag after
the per-env official values and ``--preset`` were filled in) on the same number of ranks. They may differ in the
seed and in how they ran: the fields of :data:`HOW_IT_RUNS` (device, threads, ``--compile``, output folders,
checkpoints, videos) change speed or files, not what is learned. ``summary.json`` records the digest and the
resolved ``args`` it was computed from.

The resolved settings of a command line come from the trainer itself, without training:
:mod:`playground_gym.resolve`. This module imports no other ``playground_gym`` module.

Examples:
    >>> a = {"env_id": "PointMass", "seed": 1, "learning_rate": 0.001, "device": "cpu", "runs_dir": "runs"}
    >>> b = {**a, "seed": 2, "device": "cuda", "runs_dir": "elsewhere"}
    >>> settings_digest(a) == settings_digest(b)
    True
    >>> settings_digest(a) == settings_digest({**a, "learning_rate": 0.0003})
    False
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["HOW_IT_RUNS", "SETTINGS_FORMAT", "differing_settings", "settings_digest"]

SETTINGS_FORMAT = 1  # part of every digest: a change of what the digest covers makes old digests differ
# ExperimentArgs fields that change how a run executes or where it writes, not what it learns. ``preset`` only fills
# other fields (their resolved values are covered); ``seed`` is compared on its own (runs of one setting, many seeds).
HOW_IT_RUNS = frozenset({
    "seed", "preset", "device", "torch_threads", "pin_jax_cpu", "compile", "cudagraphs", "torch_deterministic",
    "runs_dir", "capture_video", "save_model", "checkpoint_interval", "resume", "dist_timeout",
})


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

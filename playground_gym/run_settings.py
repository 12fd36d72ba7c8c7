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
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ABSENT_MEANS", "HOW_IT_RUNS", "SETTINGS_FORMAT", "differing_settings", "settings_digest", "settings_of",
           "summary_digest"]

SETTINGS_FORMAT = 1  # part of every digest: a change of what the digest covers makes old digests differ
# ExperimentArgs fields that change how a run executes or where it writes, not what it learns. ``preset`` only fills
# other fields (their resolved values are covered); ``seed`` is compared on its own (runs of one setting, many seeds).
HOW_IT_RUNS = frozenset({
    "seed", "preset", "device", "torch_threads", "pin_jax_cpu", "compile", "cudagraphs", "torch_deterministic",
    "runs_dir", "capture_video", "save_model", "checkpoint_interval", "resume", "dist_timeout", "export_onnx",
    "track", "wandb_project_name", "wandb_entity", "wandb_group",
})

# fields added after runs were recorded: where one is absent, the run did what this value does (so its digest stays)
ABSENT_MEANS = {"critic_obs_key": "state", "domain_randomization": False}


def settings_of(args: Mapping[str, Any], world_size: int = 1,
                extensions: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """What :func:`settings_digest` hashes: the result-changing fields of ``args``, the number of ranks and, for a run
    resumed with a larger ``--total-timesteps``, its ``extensions`` (``summary.json``'s: the step of each resume and
    the budget before it; such a run stretched its schedules mid-way: it is not the run planned at its final budget)."""
    settings = {**{k: v for k, v in ABSENT_MEANS.items() if k not in args},
                **{k: v for k, v in args.items() if k not in HOW_IT_RUNS}}
    settings.update(_world_size=int(world_size), _format=SETTINGS_FORMAT)
    if extensions:
        settings["_extensions"] = [dict(e) for e in extensions]
    return settings


def settings_digest(args: Mapping[str, Any], world_size: int = 1, extensions: Sequence[Mapping[str, Any]] = ()) -> str:
    """16 hex digits identifying the resolved ``args`` (a trainer's ``asdict(args)`` or ``summary.json``'s ``args``)
    on ``world_size`` ranks (see :func:`settings_of`), ignoring the fields of :data:`HOW_IT_RUNS`. Tuples and lists
    hash alike (JSON)."""
    text = json.dumps(settings_of(args, world_size, extensions), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def summary_digest(summary: Any) -> str | None:
    """The settings digest of a trainer's ``summary.json`` (from its resolved ``args``, ``world_size`` and
    ``extensions``, so summaries written before the digest was recorded count too); None without args."""
    args = summary.get("args") if isinstance(summary, Mapping) else None
    if not isinstance(args, Mapping) or not args:
        return None
    return settings_digest(args, summary.get("world_size") or 1, summary.get("extensions") or ())


_MISSING = "(absent)"


def differing_settings(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{field: (value in a, value in b)}`` where two :func:`settings_of` dicts differ; a field only one of them has
    shows as ``"(absent)"`` on the other side (``_world_size``: the ranks; ``_extensions``: resumed budgets)."""
    return {k: (a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(set(a) | set(b))
            if k not in a or k not in b or json.dumps(a[k], default=str) != json.dumps(b[k], default=str)}

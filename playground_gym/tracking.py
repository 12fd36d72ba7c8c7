"""Weights & Biases for the trainers, CleanRL's way: ``--track`` syncs TensorBoard's scalars to a W&B run.

The run's config is every resolved flag; its TensorBoard scalars are synced as they are written
(``sync_tensorboard``); the evaluation video and ``summary.json`` are uploaded at the end, and the summary's headline
numbers become the W&B run summary. A resumed run continues the same W&B run (its id is derived from the run folder).
``WANDB_MODE=offline`` keeps everything in ``<run folder>/wandb/offline-run-*`` for a later ``wandb sync``.

Examples:
    >>> # python cleanrl_ppo/ppo_continuous.py --track --wandb-project-name playground --wandb-entity my-lab
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["available", "finish", "start"]

INSTALL_HINT = "pip install 'playground_gym[track]'"


def available() -> bool:
    """Whether the ``wandb`` package is installed."""
    return importlib.util.find_spec("wandb") is not None


def start(args: Any, run_dir: str, config: Mapping[str, Any]) -> Any:
    """Start (or, for a resumed run folder, continue) the W&B run; call before TensorBoard's writer is made.

    ``config``: the resolved flags. The run's name is the run folder's; its group ``args.wandb_group`` (campaigns set
    it), else the env id.
    """
    import wandb

    name = os.path.basename(os.path.abspath(run_dir))
    # from the folder's name (unique: env, trainer, seed, start time) and the project: a moved folder resumes it too
    run_id = hashlib.sha256(f"{args.wandb_project_name}/{name}".encode()).hexdigest()[:16]
    return wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, group=args.wandb_group or args.env_id,
                      name=name, id=run_id, resume="allow", config=dict(config), sync_tensorboard=True,
                      dir=run_dir, job_type=args.exp_name, save_code=False)


def finish(run: Any, summary: Mapping[str, Any], summary_path: str, video: str | None = None,
           policy: Any = None) -> None:
    """Upload ``summary.json`` (the evaluation video, the exported policy and its sidecar), put the summary's headline
    numbers in the run summary, close."""
    import wandb

    if video:
        run.log({"videos/eval": wandb.Video(video)})
    headline = ("final_eval_return", "strength", "final_strength", "total_reward_ma", "sps", "env_steps",
                "wall_time_s", "settings_digest")
    run.summary.update({k: summary[k] for k in headline if summary.get(k) is not None})
    base = os.path.dirname(summary_path)
    for path in [summary_path] + ([str(policy), str(policy.with_suffix(".json"))] if policy is not None else []):
        run.save(path, base_path=base, policy="now")
    run.finish()

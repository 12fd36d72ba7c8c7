"""--track: a W&B run (offline here: no network) holds the run's config, its TensorBoard scalars and summary.json."""

from __future__ import annotations

import json
import os

from trainer_harness import TINY, TRAINERS, run_dirs, run_trainer


def test_track_writes_an_offline_wandb_run_with_config_metrics_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = run_trainer(TRAINERS / "ppo_continuous.py", [*TINY, "--track", "--wandb-project-name", "pg-test",
                                                          "--wandb-group", "campaign-x", "--runs-dir", "runs"],
                         tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path / "runs")
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    (log,) = offline.glob("run-*.wandb")  # the run's records: config, history (the synced scalars), summary
    records = log.read_bytes()
    for item in (b"learning_rate", b"num_minibatches", b"playground/CartpoleBalance",  # the config
                 b"eval/episodic_return", b"losses/value_loss", b"charts/SPS",  # TensorBoard's scalars
                 b"campaign-x", b"pg-test", b"final_eval_return"):  # group, project, run summary
        assert item in records, item
    uploaded = offline / "files" / "summary.json"
    assert json.loads(uploaded.read_text()) == json.loads((run_dir / "summary.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["args"]["track"] is True and os.path.isdir(run_dir / "wandb")

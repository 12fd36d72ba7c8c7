"""`benchmark.sh --slurm --submit` on a real SLURM cluster that the fixture starts on this machine (tests/slurm_cluster.py;
needs Debian's `slurm-wlm` and `munge`: `.ci/run` installs them; elsewhere the test is skipped with the reason shown by
`-ra`): two real trainer runs at the smoke budget and a run made to fail, their status records, and the report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import slurm_cluster

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import campaign  # noqa: E402
import report  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = slurm_cluster.missing_binaries()
    if missing:
        pytest.skip(f"no SLURM here: {', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    with slurm_cluster.local_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


def test_a_campaign_submitted_to_slurm_runs_records_and_reports(cluster, tmp_path):
    scripts = tmp_path / "trainers"  # the real trainer, and one that crashes after parsing its flags
    scripts.mkdir()
    shutil.copy(ROOT / "cleanrl_ppo" / "ppo_continuous.py", scripts / "ppo_continuous.py")
    trainer = (ROOT / "cleanrl_ppo" / "ppo_continuous.py").read_text()  # its flags, so the campaign resolves them
    crash = '\n    import sys\n    print("crashes: simulated failure", file=sys.stderr)\n    sys.exit(3)'
    main = 'if __name__ == "__main__":'
    (scripts / "crashes.py").write_text(trainer.replace(main, main + crash))
    out = tmp_path / "out"
    env = dict(cluster, PYTHON=sys.executable)
    submitted = []
    # the crashing copy is not a known trainer, so the smoke preset gives it only --total-timesteps: a batch to fit
    for script, envs, extra in (("ppo_continuous", "CartpoleBalance,PointMass", []),
                                ("crashes", "CartpoleBalance", ["--", "--num-envs", "16", "--num-steps", "64"])):
        result = subprocess.run([str(ROOT / "benchmark.sh"), "--preset", "smoke", "--scripts", script, "--scripts-dir",
                                 str(scripts), "--envs", envs, "--workers", "2", "--out", str(out), "--slurm",
                                 "--submit", *extra], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        submitted.append(re.search(r"Submitted batch job (\d+)", result.stdout).group(1))
    for job in submitted:
        slurm_cluster.wait_for_job(job, cluster, timeout=900)

    status = {p.stem: json.loads(p.read_text()) for p in (out / "status").glob("*.json")}
    assert set(status) == {"CartpoleBalance__ppo_continuous__1", "PointMass__ppo_continuous__1",
                           "CartpoleBalance__crashes__1"}
    for key in ("CartpoleBalance__ppo_continuous__1", "PointMass__ppo_continuous__1"):
        assert status[key]["status"] == "ok", (out / "logs" / f"{key}.log").read_text()[-3000:]
        env_id = key.split("__")[0]
        (summary,) = (out / "runs" / env_id / "ppo_continuous" / "seed1").glob("*/summary.json")
        assert json.loads(summary.read_text())["env_steps"] == 4096
    crashed = status["CartpoleBalance__crashes__1"]
    assert crashed["status"] == "failed" and crashed["returncode"] == 3
    assert "exit code 3" in crashed["reason"] and "simulated failure" in crashed["reason"]
    assert "SLURM task" in (out / "logs" / "CartpoleBalance__crashes__1.log").read_text()
    md = report.write_report([out], out).read_text()
    for env_id in ("CartpoleBalance", "PointMass"):
        assert re.search(rf"\| {env_id} \| ppo_continuous \| `[0-9a-f]{{8}}` \| 1 \(1\) \|", md), md
    assert "CartpoleBalance__crashes__1" in md  # failures are listed with their reason


def test_gpus_per_run_asks_slurm_for_gpus_and_runs_torchrun(capsys, tmp_path):
    out = tmp_path / "out"
    rc = campaign.main(["--envs", "CartpoleBalance", "--scripts", "ppo_tanh", "--out", str(out), "--slurm",
                        "--gpus-per-run", "4"])
    assert rc == 0
    sbatch = (out / "slurm" / "benchmark.sbatch").read_text()
    assert "#SBATCH --gres=gpu:4" in sbatch
    (line,) = (out / "slurm" / "commands.txt").read_text().splitlines()
    assert ('srun --ntasks=1 --gres=gpu:4 ${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} "$PYTHON" '
            '-m torch.distributed.run --standalone --nproc-per-node 4 '
            in line) and "ppo_tanh.py --env-id CartpoleBalance" in line
    assert subprocess.run(["bash", "-n", str(out / "slurm" / "benchmark.sbatch")]).returncode == 0
    one = campaign.main(["--envs", "CartpoleBalance", "--scripts", "ppo_tanh", "--out", str(tmp_path / "one"),
                         "--slurm", "--gpus-per-run", "1"])
    assert one == 0 and "torch.distributed.run" not in (tmp_path / "one" / "slurm" / "commands.txt").read_text()
    with pytest.raises(SystemExit):
        campaign.main(["--envs", "CartpoleBalance", "--gpus-per-run", "2", "--out", str(tmp_path / "x")])
    assert "--gpus-per-run" in capsys.readouterr().err and os.path.exists(ROOT / "benchmark.sh")

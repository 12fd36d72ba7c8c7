"""benchmark.sh, benchmarks/campaign.py and benchmarks/report.py: planning, presets, resumability, failure isolation,
Ctrl-C, SLURM scripts and the aggregated table and plots. No env runs here: trainers are tiny fake scripts with the
real trainers' command line (an ExperimentArgs dataclass), so that campaigns resolve their settings."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK_SH = ROOT / "benchmark.sh"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


campaign = _load("campaign")
report = _load("report")

# A fake trainer: the real trainers' command line and summary.json (eval return = step / 1000 + seed), no training.
GOOD = textwrap.dedent('''
    import json, os
    from dataclasses import asdict, dataclass
    from playground_gym.experiment import ExperimentArgs, cli, parse_args, resolve_args
    from playground_gym.run_settings import settings_digest

    @dataclass
    class Args(ExperimentArgs):
        exp_name: str = os.path.basename(__file__)[:-3]
        total_timesteps: int = 4096
        learning_rate: float = 1e-3

    def main(start_time=None):
        a, _ = resolve_args(parse_args(Args))
        run = os.path.join(a.runs_dir, f"{a.env_id}__{a.exp_name}__{a.seed}__0")
        os.makedirs(run, exist_ok=True)
        hist = [{"step": s, "wall_time": 1.0, "return": s / 1000 + a.seed} for s in (1024, 2048, 4096)]
        summary = {"env_id": a.env_id, "exp_name": a.exp_name, "seed": a.seed, "env_steps": 4096, "wall_time_s": 2.0,
                   "sps": 2048, "final_eval_return": hist[-1]["return"], "strength": 1.0, "final_strength": 2.0,
                   "total_reward_ma": 3.0, "random_policy_return": 0.5, "eval_history": hist, "world_size": 1,
                   "settings_digest": settings_digest(asdict(a)), "args": asdict(a)}
        json.dump(summary, open(os.path.join(run, "summary.json"), "w"), indent=2)
        print("fake trainer done")

    if __name__ == "__main__":
        cli(main)
''')
_PARSED = "a, _ = resolve_args(parse_args(Args))"
BAD = GOOD.replace(_PARSED, _PARSED + '\n    import sys\n    print("boom: simulated crash", file=sys.stderr)\n'
                                      '    sys.exit(1)')
# records its pid before any import when run (not when the campaign imports it to resolve its settings): under load,
# importing playground_gym alone can outlast a short --timeout
SLOW = ('import os\nif __name__ == "__main__":\n    open(os.path.join(os.environ["PIDS_DIR"], str(os.getpid())), "w").close()\n'
        + GOOD.replace(_PARSED, _PARSED + '\n    import time\n    time.sleep(120)'))


@pytest.fixture
def scripts_dir(tmp_path: Path) -> Path:
    d = tmp_path / "trainers"
    d.mkdir()
    for name, text in (("good", GOOD), ("bad", BAD), ("slow", SLOW)):
        (d / f"{name}.py").write_text(text)
    return d


def sh(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BENCHMARK_SH), *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env=dict(os.environ, PYTHON=sys.executable, **(env or {})))


def dry(capsys, *args: str) -> tuple[int, list[str], str]:
    rc = campaign.main(["--dry-run", *args])
    out, err = capsys.readouterr()
    return rc, [ln for ln in out.splitlines() if ln.strip()], err


# ------------------------------------------------------------------------------------------------ campaign


def test_dm_control_list_matches_playground():
    import playground_gym

    assert list(campaign.DM_CONTROL_ENVS) == playground_gym.list_envs("dm_control_suite")


def test_help_lists_presets():
    r = sh("--help")
    assert r.returncode == 0, r.stderr
    for word in ("--preset", "smoke", "cpu", "paper", "--dry-run", "--slurm", "--workers", "4096", "100000000"):
        assert word in r.stdout
    assert os.access(BENCHMARK_SH, os.X_OK)
    assert BENCHMARK_SH.read_text().startswith("#!/usr/bin/env bash\n")


def test_dry_run_smoke_through_benchmark_sh(tmp_path):
    r = sh("--preset", "smoke", "--dry-run", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 25 * 3  # every DM Control env x the three default trainers, one seed
    assert {ln.split("--env-id ")[1].split()[0] for ln in lines} == set(campaign.DM_CONTROL_ENVS)
    assert all("--total-timesteps 4096" in ln and "--torch-threads 1" in ln for ln in lines)
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


@pytest.mark.parametrize("preset,expected", [("smoke", 25 * 3 * 1), ("cpu", 4 * 3 * 2),
                                             ("smoke-robots", 29 * 3)])
def test_dry_run_presets(capsys, tmp_path, monkeypatch, preset, expected):
    monkeypatch.delenv("PLAYGROUND_GYM_MENAGERIE_PATH", raising=False)  # smoke-robots plans the installed wheels' 29
    rc, lines, _ = dry(capsys, "--preset", preset, "--scripts", "ppo_continuous,ppo_tanh,ppo_multiunroll",
                       "--out", str(tmp_path))
    assert rc == 0 and len(lines) == expected
    flags = campaign.PRESET_FLAGS[preset]
    for ln in lines:
        script = Path(ln.split()[1]).stem
        assert " ".join(flags[script]) in ln


def test_dry_run_paper_skips_menagerie_envs_with_reason(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_GYM_MENAGERIE_PATH", str(tmp_path / "no_menagerie"))
    rc, lines, err = dry(capsys, "--preset", "paper", "--out", str(tmp_path))
    assert rc == 0 and len(lines) == 25 * 3 * 4
    assert "skipped 19 locomotion envs" in err and "skipped 10 manipulation envs" in err
    assert "is not a directory" in err
    assert all("--total-timesteps 100000000" in ln for ln in lines)
    # the CleanRL-style trainers get 2048 envs from the preset; ppo_multiunroll from its official Brax config
    assert all(("--preset official" if "ppo_multiunroll" in ln else "--num-envs 2048") in ln for ln in lines)


def test_a_partial_menagerie_runs_the_envs_it_covers_and_names_what_it_lacks(capsys, tmp_path, monkeypatch):
    partial = tmp_path / "menagerie"
    for robot in ("unitree_go1", "unitree_g1"):  # a partial Menagerie: two robots only
        (partial / robot / "assets").mkdir(parents=True)
        (partial / robot / "assets" / "mesh.stl").write_bytes(b"")
    monkeypatch.setenv("PLAYGROUND_GYM_MENAGERIE_PATH", str(partial))
    rc, lines, err = dry(capsys, "--preset", "smoke", "--envs", "all", "--out", str(tmp_path / "out"))
    go1_g1 = {ln.split("--env-id ")[1].split()[0] for ln in lines if "--env-id Go1" in ln or "--env-id G1" in ln}
    assert rc == 0 and len(lines) == (25 + 7) * 3
    assert go1_g1 == {"Go1JoystickFlatTerrain", "Go1JoystickRoughTerrain", "Go1Getup", "Go1Handstand",
                      "Go1Footstand", "G1JoystickFlatTerrain", "G1JoystickRoughTerrain"}
    assert "skipped 12 locomotion envs" in err and "skipped 10 manipulation envs" in err and "lacks" in err
    with pytest.raises(campaign.CampaignError, match="BerkeleyHumanoidJoystickFlatTerrain needs .*berkeley_humanoid"):
        campaign.resolve_envs("Go1Getup,BerkeleyHumanoidJoystickFlatTerrain")


def test_track_passes_through_and_groups_the_campaigns_runs(capsys, tmp_path):
    rc, lines, _ = dry(capsys, "--envs", "CartpoleBalance", "--scripts", "ppo_continuous", "--out",
                       str(tmp_path / "my-campaign"), "--", "--track", "--wandb-project-name", "lab")
    assert rc == 0 and lines and all("--track --wandb-project-name lab --wandb-group my-campaign" in ln for ln in lines)
    rc, lines, _ = dry(capsys, "--envs", "CartpoleBalance", "--scripts", "ppo_continuous", "--out",
                       str(tmp_path / "c2"), "--", "--track", "--wandb-group", "mine")
    assert all(ln.count("--wandb-group") == 1 and "--wandb-group mine" in ln for ln in lines)


def test_overrides_and_extra_flags(capsys, tmp_path):
    rc, lines, _ = dry(capsys, "--envs", "playground/CartpoleBalance,pointmass", "--seeds", "2",
                       "--scripts", "ppo_continuous", "--total-timesteps", "8192", "--out", str(tmp_path),
                       "--", "--learning-rate", "3e-4")
    assert rc == 0 and len(lines) == 4
    for ln in lines:
        assert ln.count("--total-timesteps") == 1 and "--total-timesteps 8192" in ln
        assert ln.endswith("--learning-rate 3e-4")
    # seed-major, then trainer, then env: the first pass over the envs fills the compile cache for the rest
    assert [re.search(r"--env-id (\S+) --seed (\d)", ln).groups() for ln in lines] == [
        ("CartpoleBalance", "1"), ("PointMass", "1"), ("CartpoleBalance", "2"), ("PointMass", "2")]


@pytest.mark.parametrize("args,message", [
    (["--seeds", "0"], "--seeds must be >= 1; got 0"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--envs", "CartpoleBalanse"], "Did you mean 'CartpoleBalance'"),
    (["--scripts", "ppo_tan"], "unknown trainer 'ppo_tan'"),
    (["--", "--seed", "3"], "may not set --seed"),
])
def test_bad_input_exits_2(capsys, tmp_path, args, message):
    with pytest.raises(SystemExit) as e:
        campaign.main([*args, "--out", str(tmp_path), "--dry-run"])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_script_file_is_named(capsys, scripts_dir, tmp_path):
    with pytest.raises(SystemExit) as e:
        campaign.main(["--scripts", "good,ppo_multiunroll", "--scripts-dir", str(scripts_dir), "--dry-run",
                       "--out", str(tmp_path)])
    assert e.value.code == 2
    assert str(scripts_dir / "ppo_multiunroll.py") + " does not exist" in capsys.readouterr().err


def test_flags_a_trainer_does_not_accept_fail_up_front(capsys, scripts_dir, tmp_path):
    with pytest.raises(SystemExit) as e:
        campaign.main(["--scripts", "good", "--scripts-dir", str(scripts_dir), "--envs", "PointMass", "--out",
                       str(tmp_path), "--", "--bogus-flag", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "good rejects the planned command of PointMass__good__1: Unrecognized options: --bogus-flag" in err, err
    assert not (tmp_path / "logs").exists()  # nothing ran
    (scripts_dir / "plain.py").write_text("print('a script without an Args dataclass')\n")
    with pytest.raises(SystemExit):
        campaign.main(["--scripts", "plain", "--scripts-dir", str(scripts_dir), "--out", str(tmp_path), "--dry-run"])
    assert "plain.py defines no `Args`" in capsys.readouterr().err


def test_completion_is_keyed_by_the_resolved_settings(capsys, scripts_dir, tmp_path):
    """A summary counts as done only for a plan of the same resolved settings and seed; others are kept, not reused."""
    base = ("--scripts", "good", "--scripts-dir", str(scripts_dir), "--envs", "PointMass", "--out", str(tmp_path))
    assert campaign.main([*base, "--no-report"]) == 0
    capsys.readouterr()
    (summary,) = (tmp_path / "runs").rglob("summary.json")
    rc, lines, err = dry(capsys, *base)
    assert rc == 0 and lines == [] and "1 complete with the same settings (reused), 0 to run" in err
    assert f"reused PointMass__good__1: {summary}" in err
    for flags, reused in ((["--", "--device", "cpu", "--torch-threads", "2"], True),  # how it runs, not what
                          (["--", "--learning-rate", "0.001"], True),  # the default, given explicitly
                          (["--total-timesteps", "999999"], False),
                          (["--", "--learning-rate", "1e-5"], False),
                          (["--", "--episode-length", "1000"], True),  # PointMass's official episode length
                          (["--", "--episode-length", "999"], False)):
        rc, lines, err = dry(capsys, *base, *flags)
        assert rc == 0 and len(lines) == (0 if reused else 1), (flags, err)
        if not reused:
            assert "have summaries of other settings or seeds in their runs dir (kept, not reused" in err
    # another seed is another run; a summary without resolved args (or unreadable) is never taken for complete
    rc, lines, _ = dry(capsys, *base, "--seeds", "2")
    assert [re.search(r"--seed (\d)", ln).group(1) for ln in lines] == ["2"]
    summary.write_text("{}")
    assert len(dry(capsys, *base)[1]) == 1
    summary.write_text("{not json")
    assert len(dry(capsys, *base)[1]) == 1


def test_real_trainers_resolve_their_settings(tmp_path):
    """The three trainers resolve a campaign's command lines (official per-env values filled in) to digests."""
    scripts = campaign.resolve_scripts(",".join(campaign.KNOWN_SCRIPTS), campaign.DEFAULT_SCRIPTS_DIR)
    tasks = campaign.plan_tasks(["CartpoleBalance", "PointMass"], scripts, [1, 2], tmp_path, "smoke", None, [])
    resolved = campaign.resolve_settings(tasks, scripts)
    digests = {(t.env_id, t.script, t.seed): t.digest for t in resolved}
    assert all(len(d) == 16 for d in digests.values())
    assert digests[("PointMass", "ppo_tanh", 1)] == digests[("PointMass", "ppo_tanh", 2)]  # seeds share settings
    assert len({digests[(e, s, 1)] for e in ("CartpoleBalance", "PointMass") for s in scripts}) == 6
    with pytest.raises(campaign.CampaignError, match="ppo_multiunroll rejects the planned command"):
        campaign.resolve_settings(campaign.plan_tasks(["PointMass"], {"ppo_multiunroll": scripts["ppo_multiunroll"]},
                                                      [1], tmp_path, "smoke", None, ["--num-envs", "15"]), scripts)


def test_batch_isolates_failures_records_them_and_reports(capsys, scripts_dir, tmp_path):
    out = tmp_path / "out"
    rc = campaign.main(["--scripts", "good,bad", "--scripts-dir", str(scripts_dir), "--envs",
                        "CartpoleBalance,PointMass", "--seeds", "2", "--workers", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 1  # some runs failed, but the batch went on
    statuses = {p.stem: json.loads(p.read_text()) for p in (out / "status").glob("*.json")}
    assert len(statuses) == 8
    for key, s in statuses.items():
        if "__good__" in key:
            assert s["status"] == "ok" and s["returncode"] == 0
            assert campaign.completed_run(campaign.Task(**{f: s[f] for f in ("env_id", "script", "seed", "runs_dir")},
                                                        command=(), log="", status="", digest=s["settings_digest"]))
        else:
            assert s["status"] == "failed" and s["returncode"] == 1
            assert "exit code 1" in s["reason"] and "boom: simulated crash" in s["reason"]
            assert any("boom" in ln for ln in s["tail"])
    log = (out / "logs" / "PointMass__bad__2.log").read_text()
    assert log.startswith("# run PointMass__bad__2") and "# command: " in log and "boom" in log
    assert "4 ok, 4 failed" in printed
    md = (out / "report.md").read_text()
    assert re.search(r"\| CartpoleBalance \| good \| `[0-9a-f]{8}` \| 2 \(1, 2\) \| 5.6 ± 0.7 \|", md)  # 5.096, 6.096
    assert "## Failed or unfinished runs" in md and "PointMass__bad__1" in md and "boom: simulated crash" in md
    assert (out / "plots" / "CartpoleBalance.png").stat().st_size > 0
    plan = json.loads((out / "plan.json").read_text())
    assert len(plan["runs"]) == 8

    # resuming: completed runs are skipped, failed ones retried
    _, lines, _ = dry(capsys, "--scripts", "good,bad", "--scripts-dir", str(scripts_dir), "--envs",
                      "CartpoleBalance,PointMass", "--seeds", "2", "--out", str(out))
    assert len(lines) == 4 and all("bad.py" in ln for ln in lines)


@pytest.mark.skipif(not any(shutil.which(c) for c in ("cc", "gcc", "clang")), reason="no C compiler on PATH")
def test_cpu_blas_shim_reaches_local_runs_unless_turned_off(capsys, scripts_dir, tmp_path, monkeypatch):
    cpu_blas = campaign._mkl_shim()
    shim = str(cpu_blas.build_shim(tmp_path / "shim"))
    monkeypatch.setattr(campaign, "cpu_blas_preload", lambda: shim)  # as on an AMD CPU with AVX-512
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    (scripts_dir / "probe.py").write_text(GOOD.replace('"args": asdict(a)}',
                                                       '"args": asdict(a), "ld_preload": os.environ.get("LD_PRELOAD")}'))
    seen = {}
    for mode in ("auto", "default"):
        out = tmp_path / mode
        assert campaign.main(["--scripts", "probe", "--scripts-dir", str(scripts_dir), "--envs", "CartpoleBalance",
                              "--seeds", "1", "--out", str(out), "--no-report", "--cpu-blas", mode]) == 0
        (summary,) = (out / "runs").rglob("summary.json")
        seen[mode] = json.loads(summary.read_text())["ld_preload"]
    assert seen == {"auto": shim, "default": None}
    assert cpu_blas.SHIM_NAME in shim


def test_exit_0_without_summary_and_timeout_are_failures(capsys, scripts_dir, tmp_path):
    writes = 'json.dump(summary, open(os.path.join(run, "summary.json"), "w"), indent=2)'
    (scripts_dir / "nosummary.py").write_text(GOOD.replace(writes, "pass"))
    # a trainer whose summary records other settings than the plan resolved (here: it ignores --learning-rate)
    (scripts_dir / "othersettings.py").write_text(GOOD.replace(_PARSED, _PARSED + "\n    a.learning_rate = 0.5"))
    rc = campaign.main(["--scripts", "nosummary,othersettings", "--scripts-dir", str(scripts_dir), "--envs",
                        "PointMass", "--out", str(tmp_path), "--no-report"])
    assert rc == 1
    for name in ("nosummary", "othersettings"):
        s = json.loads((tmp_path / "status" / f"PointMass__{name}__1.json").read_text())
        assert s["status"] == "failed" and "exited 0 but wrote no summary.json of seed 1 with the planned settings" \
            in s["reason"], s

    pids = tmp_path / "pids"
    pids.mkdir()
    os.environ["PIDS_DIR"] = str(pids)
    try:
        rc = campaign.main(["--scripts", "slow", "--scripts-dir", str(scripts_dir), "--envs", "PointMass",
                            "--out", str(tmp_path), "--timeout", "3", "--no-report"])
    finally:
        del os.environ["PIDS_DIR"]
    assert rc == 1
    s = json.loads((tmp_path / "status" / "PointMass__slow__1.json").read_text())
    # a run waited out instead of killed would have written its summary and ended "ok"
    assert s["status"] == "failed" and "timed out after 3 s" in s["reason"]
    (child,) = [int(p.name) for p in pids.iterdir()]
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_stops_children_and_exits_130(scripts_dir, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    env = dict(os.environ, PYTHON=sys.executable, PIDS_DIR=str(pids))
    proc = subprocess.Popen([str(BENCHMARK_SH), "--scripts", "slow", "--scripts-dir", str(scripts_dir), "--envs",
                             "CartpoleBalance,PointMass,ReacherEasy", "--workers", "2", "--out", str(tmp_path / "out"),
                             ], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a shell that started pytest in the background leaves SIGINT ignored, and an ignored
                            # signal stays ignored across exec: give the campaign a Ctrl-C as a terminal would
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while len(list(pids.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.2)
    children = [int(p.name) for p in pids.iterdir()]
    assert len(children) == 2
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in children)
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "out" / "status").glob("*.json")]
    assert sorted(s["status"] for s in statuses) == ["interrupted", "interrupted"]
    assert not (tmp_path / "out" / "runs" / "ReacherEasy").exists()  # the queued run never started
    assert not list((tmp_path / "out" / "runs").rglob("summary.json"))


def test_slurm_script_runs_a_task_like_the_local_runner(capsys, scripts_dir, tmp_path):
    out = tmp_path / "out"
    rc = campaign.main(["--scripts", "good,bad", "--scripts-dir", str(scripts_dir), "--envs", "PointMass",
                        "--seeds", "2", "--workers", "3", "--out", str(out), "--slurm",
                        "--sbatch-option=--time=01:00:00"])
    assert rc == 0
    sbatch = (out / "slurm" / "benchmark.sbatch").read_text()
    assert "#SBATCH --array=0-3%3" in sbatch and "#SBATCH --time=01:00:00" in sbatch
    commands = (out / "slurm" / "commands.txt").read_text().splitlines()
    assert len(commands) == 4
    assert re.match(rf'PointMass__good__1\t{out}/runs/PointMass/good/seed1\t[0-9a-f]{{16}}\t"\$PYTHON" ', commands[0])
    assert subprocess.run(["bash", "-n", str(out / "slurm" / "benchmark.sbatch")]).returncode == 0
    for task, expected_rc in ((0, 0), (1, 1)):  # good seed 1, bad seed 1 (seed-major order)
        env = dict(os.environ, PYTHON=sys.executable, SLURM_ARRAY_TASK_ID=str(task))
        r = subprocess.run(["bash", str(out / "slurm" / "benchmark.sbatch")], env=env, capture_output=True, text=True)
        assert r.returncode == expected_rc, r.stderr
    assert json.loads((out / "status" / "PointMass__good__1.json").read_text())["status"] == "ok"
    bad = json.loads((out / "status" / "PointMass__bad__1.json").read_text())
    assert bad["status"] == "failed" and "exit code 1" in bad["reason"]
    assert "boom" in (out / "logs" / "PointMass__bad__1.log").read_text()
    # the same report works on the cluster's output
    md = report.write_report([out], out).read_text()
    assert re.search(r"\| PointMass \| good \| `[0-9a-f]{8}` \| 1 \(1\) \|", md) and "PointMass__bad__1" in md
    if shutil.which("sbatch") is None:
        rc = campaign.main(["--scripts", "good", "--scripts-dir", str(scripts_dir), "--envs", "ReacherEasy",
                            "--out", str(out), "--slurm", "--submit"])
        assert rc == 1 and "sbatch not found" in capsys.readouterr().err


def test_slurm_task_records_scheduler_kills_and_any_failure_text_as_valid_json(scripts_dir, tmp_path):
    """The batch script's SIGTERM (time limit, scancel) leaves a failure record, a task that never ends leaves its
    'running' record, and a last log line with control characters, quotes and non-ASCII still makes valid JSON."""
    crash = r'print("\x1b[31mboom\x07 \"q\" \\ t\there \u00b1 end", file=sys.stderr)'
    (scripts_dir / "ansi.py").write_text(BAD.replace('print("boom: simulated crash", file=sys.stderr)', crash))
    out = tmp_path / "out"
    assert campaign.main(["--scripts", "ansi,slow", "--scripts-dir", str(scripts_dir), "--envs", "PointMass",
                          "--out", str(out), "--slurm"]) == 0
    sbatch = str(out / "slurm" / "benchmark.sbatch")
    env = dict(os.environ, PYTHON=sys.executable, SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_JOB_ID="77")
    assert subprocess.run(["bash", sbatch], env=env, capture_output=True).returncode == 1
    rec = json.loads((out / "status" / "PointMass__ansi__1.json").read_bytes().decode("ascii"))
    assert rec["status"] == "failed" and rec["returncode"] == 1 and rec["slurm_task"] == "77_0"
    assert rec["reason"].startswith("exit code 1: ?[31mboom? \"q\" \\ t?here ") and rec["reason"].endswith(" end")
    report_md = report.write_report([out], out).read_text()
    assert "PointMass__ansi__1" in report_md  # listed among the failed runs, not skipped

    pids = tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen(["bash", sbatch], env=dict(env, SLURM_ARRAY_TASK_ID="1", PIDS_DIR=str(pids)))
    deadline = time.time() + 60
    while not list(pids.iterdir()) and time.time() < deadline:
        time.sleep(0.2)
    (trainer,) = [int(p.name) for p in pids.iterdir()]
    running = json.loads((out / "status" / "PointMass__slow__1.json").read_text())
    assert running["status"] == "running" and "no end recorded" in running["reason"]
    proc.send_signal(signal.SIGTERM)  # what SLURM sends at the time limit, before its SIGKILL
    assert proc.wait(timeout=30) == 143
    killed = json.loads((out / "status" / "PointMass__slow__1.json").read_text())
    assert killed["status"] == "failed" and "killed by the scheduler (SIGTERM" in killed["reason"]
    deadline = time.time() + 10
    while _alive(trainer) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(trainer)


def test_report_never_averages_other_settings_or_a_seed_twice(tmp_path, capsys):
    """Runs of other settings get rows of their own with the differing flags named; a seed run twice with the same
    settings counts once (the newest), the other is listed; an unreadable status record is listed, not skipped."""
    root = tmp_path / "runs"
    base = {"env_id": "CartpoleBalance", "exp_name": "ppo_continuous", "total_timesteps": 800_000, "num_envs": 64}
    for seed, final, args in ((1, 900.0, base), (2, 950.0, base), (1, 10.0, {**base, "total_timesteps": 4096}),
                              (2, 20.0, {**base, "total_timesteps": 4096})):
        run = _write_run(root / str(args["total_timesteps"]), "CartpoleBalance", "ppo_continuous", seed, final,
                         [final])
        summary = json.loads((run / "summary.json").read_text())
        code = {"trainer_sha256": f"sha{seed}", "torch": "2.13.0"}  # seed 2 ran another trainer file than seed 1
        (run / "summary.json").write_text(json.dumps({**summary, "args": {**args, "seed": seed}, "code": code}))
    again = _write_run(root / "rerun", "CartpoleBalance", "ppo_continuous", 1, 1000.0, [1000.0])
    again = again.rename(again.with_name(again.name.replace("1700000000", "1700000001")))  # started later: newest
    summary = json.loads((again / "summary.json").read_text())
    (again / "summary.json").write_text(json.dumps({**summary, "args": {**base, "seed": 1},
                                                    "code": {"trainer_sha256": "sha1", "torch": "2.13.0"}}))
    (tmp_path / "status").mkdir()
    (tmp_path / "status" / "X__y__1.json").write_text('{"key": "X__y__1", "reason": "a\x1bb"}')  # raw control char
    from playground_gym.run_settings import settings_digest

    for seed, digest in ((2, settings_digest({**base, "seed": 2})), (3, settings_digest({**base, "seed": 3}))):
        key = f"CartpoleBalance__ppo_continuous__{seed}"  # seed 2 failed once, then completed: moot; seed 3 never did
        (tmp_path / "status" / f"{key}.json").write_text(json.dumps(
            {"key": key, "status": "failed", "reason": f"killed {seed}", "settings_digest": digest}))
    md = report.write_report([root], tmp_path / "rep", status_dirs=[tmp_path / "status"]).read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| CartpoleBalance | ")]
    assert len(rows) == 2
    finals = sorted(ln.split("|")[5].strip() for ln in rows)
    assert finals == ["15.0 ± 7.1", f"975.0 ± {np.std([950.0, 1000.0], ddof=1):.1f}"]  # never 900 and 1000 of seed 1
    assert all("| 2 (1, 2) |" in ln for ln in rows)
    assert "`total_timesteps` 4096 vs 800000" in md or "`total_timesteps` 800000 vs 4096" in md
    assert "older runs of a seed already counted are left out" in md and "seed 1" in md
    assert "X__y__1 | unreadable |" in md and "not readable JSON" in md
    assert "killed 3" in md and "killed 2" not in md
    mixed = md.split("## Rows whose seeds ran on different code")[1].split("##")[0]
    assert mixed.count("CartpoleBalance / ppo_continuous") == 2 and "`trainer_sha256`: sha1, sha2" in mixed
    assert "torch" not in mixed  # the same version on both sides
    assert "unreadable status record" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ report


def _write_run(root: Path, env: str, trainer: str, seed: int, final: float, tb_returns: list[float]) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    run = root / env / trainer / f"{env}__{trainer}__{seed}__1700000000"
    run.mkdir(parents=True)
    steps = [1000 * (i + 1) for i in range(len(tb_returns))]
    writer = SummaryWriter(str(run))
    for step, value in zip(steps, tb_returns):
        writer.add_scalar("eval/episodic_return", value, step)
        writer.add_scalar("charts/SPS", 1000.0, step)
    writer.close()
    summary = {"env_id": env, "exp_name": trainer, "seed": seed, "env_steps": steps[-1],
               "wall_time_s": 10.0 * seed, "sps": 100 * seed, "final_eval_return": final,
               "strength": final - 50.0, "final_strength": final - 10.0, "total_reward_ma": final / 2,
               "random_policy_return": 10.0, "eval_deterministic": True, "nan_skipped_updates": 0,
               "eval_history": [{"step": 1, "wall_time": 0.0, "return": -1.0}],
               "args": {"env_id": env, "exp_name": trainer, "seed": seed},
               "train_history": [{"step": steps[-1], "return": final / 2}]}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_report_recomputes_total_reward_ma_of_older_summaries_from_tensorboard(tmp_path):
    """A summary written before total_reward_ma was SLM-Lab's (no train_history): the report takes the training
    returns of its TensorBoard file, last 10% of the run's env steps; without them, no score (never the evals)."""
    from torch.utils.tensorboard import SummaryWriter

    run = _write_run(tmp_path / "runs", "CartpoleBalance", "ppo_continuous", 1, 500.0, [1.0, 2.0, 500.0])
    summary = json.loads((run / "summary.json").read_text())
    del summary["train_history"]
    summary["env_steps"] = 100_000
    (run / "summary.json").write_text(json.dumps(summary))
    writer = SummaryWriter(str(run))
    for step in range(1000, 100_001, 1000):
        writer.add_scalar("charts/episodic_return", 10.0 if step < 90_000 else 800.0, step)
    writer.close()
    (found,) = report.find_runs([tmp_path / "runs"])
    assert found.summary["total_reward_ma"] == 800.0
    bare = _write_run(tmp_path / "bare", "PointMass", "ppo_tanh", 1, 5.0, [5.0])
    summary = json.loads((bare / "summary.json").read_text())
    del summary["train_history"]
    (bare / "summary.json").write_text(json.dumps(summary))
    (found,) = report.find_runs([tmp_path / "bare"])
    assert found.summary["total_reward_ma"] is None


def test_report_on_synthetic_runs(tmp_path):
    root = tmp_path / "runs"
    finals = {("CartpoleBalance", "ppo_continuous"): (100.0, 200.0), ("CartpoleBalance", "ppo_tanh"): (300.0, 310.0),
              ("PointMass", "ppo_continuous"): (5.0, 7.0), ("PointMass", "ppo_tanh"): (1.0, 2.0)}
    for (env, trainer), values in finals.items():
        for seed, final in enumerate(values, start=1):
            _write_run(root, env, trainer, seed, final, [final / 4, final / 2, final])
    (tmp_path / "not_a_run").mkdir()
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), str(root), "--out",
                        str(tmp_path / "rep")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    rows = {tuple(c.strip() for c in ln.strip("|").split("|")[:2]): [c.strip() for c in ln.strip("|").split("|")]
            for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| env")}
    assert len(rows) == 4
    row = rows[("CartpoleBalance", "ppo_continuous")]
    std = np.std([100.0, 200.0], ddof=1)  # 70.7
    assert re.fullmatch("`[0-9a-f]{8}`", row[2]) and row[3] == "2 (1, 2)"
    assert row[4] == f"150.0 ± {std:.1f}"  # final eval return
    assert row[5] == f"100.0 ± {std:.1f}"  # strength
    assert row[6] == f"140.0 ± {std:.1f}"  # final_strength
    assert row[7] == f"75.0 ± {std / 2:.1f}"  # total_reward_ma
    assert row[8] == f"150 ± {np.std([100, 200], ddof=1):.0f}"  # SPS
    assert row[9] == f"15 ± {np.std([10, 20], ddof=1):.0f}"  # wall time
    refs = json.loads(report.DEFAULT_REFERENCES.read_text())
    assert row[10] == f"{refs['slm_lab']['CartpoleBalance']['value']:.1f}"
    assert row[11] == "\u2014"  # no verified Playground-paper number
    assert rows[("PointMass", "ppo_tanh")][4] == f"1.5 ± {np.std([1.0, 2.0], ddof=1):.1f}"
    for env in ("CartpoleBalance", "PointMass"):
        png = tmp_path / "rep" / "plots" / f"{env}.png"
        assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{env}.png)" in md
    assert "## Reference sources" in md and "SLM-Lab-doc" in md


def test_curves_come_from_event_files(tmp_path):
    run = _write_run(tmp_path, "PointMass", "t", 1, 9.0, [1.0, 4.0, 9.0])
    steps, values = report.read_curve(report.find_runs([run])[0])
    assert steps.tolist() == [1000, 2000, 3000] and values.tolist() == [1.0, 4.0, 9.0]  # not the summary's history
    (run / next(p.name for p in run.iterdir() if p.name.startswith("events"))).unlink()
    steps, values = report.read_curve(report.find_runs([run])[0])  # no events: summary eval_history
    assert steps.tolist() == [1] and values.tolist() == [-1.0]


def test_mean_std_and_missing_values():
    assert report.mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2)), 2)
    assert report.mean_std([4.0, None, float("nan")]) == (4.0, None, 1)
    assert report.mean_std([None]) is None


def test_reference_file_states_sources():
    refs = json.loads(report.DEFAULT_REFERENCES.read_text())
    assert set(refs["_sources"]) == {"slm_lab", "playground_paper"}
    for src in refs["_sources"].values():
        assert src["url"] and src["measures"] and src["transcribed"]
    assert set(campaign.DM_CONTROL_ENVS) <= set(refs["slm_lab"])
    assert refs["playground_paper"] == {}


def test_report_cli_errors_on_missing_path(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), str(tmp_path / "nope"), "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no such run folder" in r.stderr


def test_learning_curve_plot_draws_reference_lines_and_refuses_bad_ones(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import plot_learning_curves

    for seed in (1, 2):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        history = [{"step": 1000 * k, "wall_time": 10.0 * k, "return": float(k * seed)} for k in (1, 2, 3)]
        (run / "summary.json").write_text(json.dumps({"env_id": "Go1Getup", "exp_name": "ppo_tanh", "seed": seed,
                                                      "eval_history": history, "random_policy_return": None}))
    out = tmp_path / "curves.png"
    plot_learning_curves.main([str(tmp_path / "run1"), str(tmp_path / "run2"), "--out", str(out),
                               "--reference", "random policy=0.001", "--reference", "zero action=2.5"])
    assert out.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        plot_learning_curves.main([str(tmp_path / "run1"), "--out", str(out), "--reference", "zero action"])
    assert "expected NAME=NUMBER" in capsys.readouterr().err


def test_runs_recorded_before_a_settings_field_existed_keep_their_digest():
    from playground_gym.run_settings import settings_digest

    old = {"env_id": "CartpoleBalance", "learning_rate": 1e-3, "seed": 1}  # before critics and randomisation
    same = {**old, "critic_obs_key": "state", "domain_randomization": False, "track": True}
    assert settings_digest(old) == settings_digest(same)
    assert settings_digest(old) != settings_digest({**old, "critic_obs_key": "privileged_state"})
    assert settings_digest(old) != settings_digest({**old, "domain_randomization": True})


def test_with_the_asset_wheels_the_robot_suites_plan_every_robot_task(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("PLAYGROUND_GYM_MENAGERIE_PATH", raising=False)
    for suite, count in (("locomotion", 19), ("manipulation", 10), ("robots", 29)):
        rc, lines, err = dry(capsys, "--envs", suite, "--scripts", "ppo_multiunroll", "--out", str(tmp_path / suite))
        assert rc == 0 and len(lines) == count and "skipped" not in err, err
    rc, lines, _ = dry(capsys, "--envs", "all", "--scripts", "ppo_continuous", "--out", str(tmp_path / "all"))
    assert rc == 0 and len(lines) == 54

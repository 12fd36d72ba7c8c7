"""Data-parallel training with torchrun on CPU (gloo, 2 ranks, tiny sizes): the sync functions, the three trainers end to
end, an exact distributed resume, and a dead rank failing the survivor instead of blocking it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from playground_gym import distributed
from trainer_harness import TINY, TINY_MULTIUNROLL, TRAINERS, run_dirs

TESTS = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
# Each rank: 8 envs on the CPU, one torch thread (2 ranks share the 2 cores); 4096 steps of both ranks together.
# ppo_multiunroll's --num-envs and --batch-size count all ranks (as Brax's): its tiny flags (16 envs) as they are.
RANK_FLAGS = ["--device", "cpu", "--torch-threads", "1", "--dist-timeout", "120"]


def tiny_args(trainer: str) -> list[str]:
    if trainer == "ppo_multiunroll":
        return [*TINY_MULTIUNROLL, *RANK_FLAGS]
    return [*TINY, "--num-envs", "8", *RANK_FLAGS]


def torchrun(script: Path, args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([*TORCHRUN, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_one_process_is_a_world_of_one_and_the_sync_functions_are_no_ops():
    world = distributed.World.from_environment({})
    assert (world.size, world.rank, world.is_main, world.active) == (1, 0, True, False)
    assert not distributed.active()
    model = torch.nn.Linear(2, 1)
    model(torch.ones(3, 2)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    distributed.all_reduce_gradients(model.parameters())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    value = torch.tensor(2.0)
    assert distributed.all_mean(value) is value
    assert distributed.check_replicated([model], "one process") == distributed.check_replicated([model], "again")


def test_world_and_device_errors_name_what_was_expected():
    with pytest.raises(distributed.DistributedError, match="RANK < WORLD_SIZE"):
        distributed.World.from_environment({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(distributed.DistributedError, match="integers"):
        distributed.World.from_environment({"WORLD_SIZE": "two"})
    two = distributed.World(rank=1, local_rank=1, size=2)
    assert distributed.rank_device(None, two, has_gpu=True) == "cuda:1"
    assert distributed.rank_device("cuda", two, has_gpu=True) == "cuda:1"
    assert distributed.rank_device(None, two, has_gpu=False) == "cpu"
    assert distributed.rank_device("cuda:0", distributed.World(), has_gpu=True) == "cuda:0"  # one process: as given
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        distributed.rank_device("cuda:0", two, has_gpu=True)


def test_sync_functions_on_two_ranks_equal_one_process_on_the_concatenated_data(tmp_path):
    result = torchrun(TESTS / "distributed_worker.py", [str(tmp_path)], cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for found in ranks:
        assert found["active"] and found["grads_changed"] and found["grads_match_single_process"]
        assert found["rms_matches_concatenated"] and found["nonfinite_batch_skipped_everywhere"]
        assert found["all_mean"] == 0.5
        assert "ranks [1] differ from rank 0" in found["mismatch_error"]
    assert ranks[0]["rms_mean"] == ranks[1]["rms_mean"] and ranks[0]["rms_var"] == ranks[1]["rms_var"]  # bitwise


def test_a_hung_rank_fails_the_others_collective_after_the_timeout(tmp_path):
    result = torchrun(TESTS / "distributed_worker.py", [str(tmp_path), "hang", "5"], cwd=tmp_path, timeout=120)
    found = json.loads((tmp_path / "hang.json").read_text())
    assert found["error"] is not None, result.stdout + result.stderr
    assert 4 < found["waited"] < 30  # the 5 s timeout, not forever


@pytest.fixture(scope="module")
def continuous_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("dist_continuous")
    result = torchrun(TRAINERS / "ppo_continuous.py", [*tiny_args("ppo_continuous"), "--runs-dir", "runs"], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return cwd, result


@pytest.mark.parametrize("trainer", ["ppo_continuous", "ppo_tanh", "ppo_multiunroll"])
def test_each_trainer_runs_on_two_ranks(trainer, continuous_run, tmp_path):
    if trainer == "ppo_continuous":
        cwd, result = continuous_run
    else:
        cwd, result = tmp_path, torchrun(TRAINERS / f"{trainer}.py", [*tiny_args(trainer), "--runs-dir", "runs"],
                                         tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = run_dirs(cwd / "runs")  # rank 0 alone writes, into one folder
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["env_steps"] == 4096  # steps of both ranks together
    checks = summary["replica_checks"]
    assert [c["iteration"] for c in checks] == list(range(2, 2 * len(checks) + 1, 2)) and len(checks) >= 2
    assert all(c["ranks"] == 2 for c in checks)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rank_states"]) == 1
    rank1 = checkpoint["rank_states"][0]
    assert rank1["envs"]["seed"] != checkpoint["envs"]["seed"]  # each rank steps envs of its own seed
    assert not torch.equal(rank1["next_obs"][0], checkpoint["next_obs"][0])
    assert result.stdout.count("final eval return") == 1  # rank 0 evaluates and reports
    if trainer == "ppo_multiunroll":  # the schedule of one process with the same flags (test_ppo_multiunroll)
        assert ("2 unrolls x 16 envs x 16 steps x action_repeat 1 = 512 env steps in 32 segments; 8 updates of 2 "
                "epochs x 4 minibatches of 8 segments") in result.stdout
        assert [e["step"] for e in summary["eval_history"]] == [0, 1024, 2048, 3072, 4096]
        assert rank1["envs"]["settings"]["num_envs"] == 8  # each rank steps half of the 16 envs


RANK_DEPENDENT = """import os, runpy, sys
if os.environ["RANK"] == "1":
    sys.argv += {rank1_args!r}
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.parametrize("rank1_args, message", [
    (["--total-timesteps", "8192"], "the ranks were launched with different flags (launch every rank with the same "
                                    "ones): total_timesteps: [4096, 8192] (rank 0, 1, ...)"),
    ([], "--total-timesteps (600) must be >= one update of all 2 ranks (1024 env steps); got 0 updates"),
])
def test_ranks_check_the_schedule_before_training(rank1_args, message, tmp_path):
    """A manual launch whose ranks disagree stops at start with one message on every rank; so does a budget below one
    update of all ranks (one rank's batch, 512 steps, passes the trainer's own check)."""
    launcher = tmp_path / "launch.py"
    launcher.write_text(RANK_DEPENDENT.format(rank1_args=rank1_args, script=str(TRAINERS / "ppo_continuous.py")))
    args = tiny_args("ppo_continuous") + ([] if rank1_args else ["--total-timesteps", "600"])
    result = torchrun(launcher, [*args, "--runs-dir", "runs"], tmp_path, timeout=300)
    assert result.returncode != 0
    assert result.stderr.count(message) == 2, result.stdout + result.stderr  # both ranks, one line each
    assert "playground_gym/" not in result.stderr and "cleanrl_ppo/" not in result.stderr  # no trace of ours
    assert not list((tmp_path / "runs").glob("*/events.out.tfevents.*"))


def test_a_distributed_run_killed_and_resumed_ends_as_the_uninterrupted_one(continuous_run, tmp_path):
    reference_dir, _ = continuous_run
    (reference,) = run_dirs(reference_dir / "runs")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([*TORCHRUN, str(TRAINERS / "ppo_continuous.py"), *tiny_args("ppo_continuous"),
                             "--runs-dir", "killed"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "checkpoint: iteration 2," in line:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks at once
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(lines)
    (run_dir,) = run_dirs(tmp_path / "killed")
    assert not (run_dir / "summary.json").exists()
    result = torchrun(TRAINERS / "ppo_continuous.py", ["--resume", str(run_dir)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    resumed = torch.load(run_dir / "ppo_continuous.cleanrl_model", weights_only=False)
    expected = torch.load(reference / "ppo_continuous.cleanrl_model", weights_only=False)
    for part in [k for k in expected if k != "args"]:
        for key, value in expected[part].items():
            assert torch.equal(resumed[part][key], value), (part, key)
    history = lambda d: [(e["step"], e["return"]) for e in json.loads((d / "summary.json").read_text())["eval_history"]]
    assert history(run_dir) == history(reference)


def test_resuming_with_another_number_of_ranks_is_refused(continuous_run, tmp_path):
    (run_dir,) = run_dirs(continuous_run[0] / "runs")
    result = subprocess.run([sys.executable, str(TRAINERS / "ppo_continuous.py"), "--resume", str(run_dir)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "checkpoint of 2 rank(s); this run has 1" in result.stderr


def test_a_dead_rank_makes_the_survivor_exit_nonzero_with_a_message(tmp_path):
    """Ranks started without torchrun's agent (which would kill the survivors itself): rank 1 is killed after the
    first update; rank 0 must fail at its next collective, well within --dist-timeout, and say why."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port), WORLD_SIZE="2")
    args = [sys.executable, str(TRAINERS / "ppo_continuous.py"), *tiny_args("ppo_continuous"), "--runs-dir", "runs",
            "--total-timesteps", "65536"]
    ranks = [subprocess.Popen(args, cwd=tmp_path, env=dict(base, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    try:
        lines = []
        for line in ranks[0].stdout:
            lines.append(line)
            if line.startswith("step "):  # the first log: both ranks are past their compiles and first update
                ranks[1].kill()
                killed_at = time.time()
                break
        else:
            pytest.fail("rank 0 ended before its first log:\n" + "".join(lines))
        rest = ranks[0].communicate(timeout=110)[0]
        waited = time.time() - killed_at
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
    assert ranks[0].returncode == 1, "".join(lines) + rest
    assert "rank 0 of 2: error" in rest and "another rank died" in rest, rest[-3000:]
    assert waited < 110  # a dead peer's closed connection fails the collective; the timeout bounds a hung one
    assert not list((tmp_path / "runs").glob("*/summary.json"))


def test_each_rank_draws_its_own_forced_reset_states_and_rank_0_those_of_one_process():
    from types import SimpleNamespace

    from playground_gym.experiment import Experiment, derive_seed

    def seed_of(rank: int, size: int) -> int:
        run = SimpleNamespace(args=SimpleNamespace(seed=1), world=distributed.World(rank, rank, size))
        return Experiment.rank_seed(run, "forced reset", 3)

    assert seed_of(0, 1) == seed_of(0, 2) == derive_seed(1, "forced reset", 3)
    assert len({seed_of(r, 4) for r in range(4)}) == 4

"""Benchmark campaigns: batches of trainer runs across envs, seeds and trainers, then a report (see ../benchmark.sh).

    ./benchmark.sh --preset smoke --envs CartpoleBalance,PointMass --scripts ppo_continuous,ppo_tanh --workers 2
    python benchmarks/campaign.py --help

One run = one (env, script, seed): ``python cleanrl_ppo/<script>.py --env-id ENV --seed K --runs-dir
OUT/runs/ENV/SCRIPT/seedK --torch-threads 1 <preset flags> [--total-timesteps N] [extra flags after --]``. Per-env
official settings (gamma, episode length, action repeat; the whole Brax config for ppo_multiunroll) come from the
trainers' own defaults; later flags win, so extra flags override the preset's.

Presets (flags per script in PRESET_FLAGS below; --total-timesteps and extra flags override them):

- ``smoke``: every DM Control env (25), 1 seed, 4096 env steps per run (4 updates of 16 envs x 64 steps, 1 epoch,
  100-step episodes, 16 eval envs). Proves each env trains end to end; a run is dominated by its JIT compiles
  (strength scores are unavailable: the random-policy baselines are for the official episode length).
- ``smoke-robots``: the 29 robot tasks (locomotion and manipulation), 1 seed, 64 env steps per run (2 updates of 2
  envs x 16 steps, 16-step episodes, the official action repeat): the robots step hundreds to thousands of times
  slower than DM Control on a CPU, so a run is mostly its JIT compiles (PandaRobotiqPushCube, 4 control steps per
  agent step at ~3 s each, takes longer). Randomisation and privileged critics as the trainers' defaults (official).
- ``cpu``: CartpoleBalance, PendulumSwingup, PointMass, ReacherEasy, 2 seeds; ppo_continuous/ppo_tanh at their
  defaults (800k steps, 64 envs x 256 steps, 8 minibatches x 10 epochs; CartpoleBalance reaches ~999 with
  ppo_continuous), ppo_multiunroll with its own ``--preset cpu`` (1.31M steps, 64 envs x 8 unrolls x 32 steps).
- ``paper``: GPU scale as in SLM-Lab's published Playground campaign: all envs (DM Control, plus locomotion and
  manipulation when mujoco_menagerie is available), 4 seeds, 100M env steps per run; ppo_continuous/ppo_tanh with 2048
  envs x 480 steps per update (Brax's 1024 x 32 x 30 = 983,040 steps), 32 minibatches x 16 epochs, 2048 eval envs;
  ppo_multiunroll with the official Brax config (``--preset official``).

Output layout under ``--out``: ``runs/<env>/<script>/seed<k>/<env>__<exp>__<k>__<time>/`` (trainer run folders),
``logs/<env>__<script>__<k>.log`` (command header + stdout/stderr), ``status/<env>__<script>__<k>.json`` (ok / failed /
interrupted, exit code, reason, log tail), ``plan.json``, ``report.md``, ``plots/<env>.png``; with ``--slurm``:
``slurm/commands.txt`` and ``slurm/benchmark.sbatch``.

Resumable and never mixing settings: before anything runs, each trainer resolves every planned command line to its
settings digest (``playground_gym.run_settings``: the resolved flags that change results, per-env official values
filled in; this also rejects flags a trainer does not accept). A run is complete, and reused, when its runs dir holds
a ``*/summary.json`` of the same seed whose settings digest is the planned one; a summary of other settings is kept
but not reused (the plan says which runs are reused and which runs dirs hold other settings). Failed or interrupted
runs are retried. A failing run is recorded and the batch goes on (exit code 1 at the end if any failed). Ctrl-C (or
SIGTERM) terminates the running trainers' process groups, records them as interrupted and exits 130.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import difflib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DM_CONTROL_ENVS",
    "KNOWN_SCRIPTS",
    "PRESETS",
    "PRESET_FLAGS",
    "CampaignError",
    "Task",
    "build_parser",
    "completed_run",
    "main",
    "plan_tasks",
    "resolve_settings",
    "resolve_envs",
    "resolve_scripts",
    "run_tasks",
    "summaries",
    "write_slurm",
]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCRIPTS_DIR = REPO / "cleanrl_ppo"
KNOWN_SCRIPTS = ("ppo_continuous", "ppo_tanh", "ppo_multiunroll")
DEFAULT_SCRIPTS = KNOWN_SCRIPTS
# playground_gym.list_envs("dm_control_suite"), kept here so that planning does not import JAX (~10 s);
# tests/test_benchmark.py checks it against the installed Playground.
DM_CONTROL_ENVS = (
    "AcrobotSwingup", "AcrobotSwingupSparse", "BallInCup", "CartpoleBalance", "CartpoleBalanceSparse",
    "CartpoleSwingup", "CartpoleSwingupSparse", "CheetahRun", "FingerSpin", "FingerTurnEasy", "FingerTurnHard",
    "FishSwim", "HopperHop", "HopperStand", "HumanoidStand", "HumanoidWalk", "HumanoidRun", "PendulumSwingup",
    "PointMass", "ReacherEasy", "ReacherHard", "SwimmerSwimmer6", "WalkerRun", "WalkerStand", "WalkerWalk",
)
COMMON_FLAGS = ("--torch-threads", "1")  # every run: one torch thread (JAX takes the rest of the cores)

# The eval envs default to --num-envs, so they reuse the training envs' compiled step (a second shape costs a second
# JIT compile, ~50 s on PointMass here); 100-step episodes so that episodes end within the 4 updates.
_CLEANRL_SMOKE = ("--total-timesteps", "4096", "--num-envs", "16", "--num-steps", "64", "--num-minibatches", "4",
                  "--update-epochs", "1", "--eval-interval", "2", "--episode-length", "100",
                  "--checkpoint-interval", "0")
# Robots step hundreds to thousands of times slower than DM Control on a CPU (PandaRobotiqPushCube: ~6 s per
# control step of 4 envs, its mesh collisions in MJX's JAX backend): 2 envs, 2 updates of 16 agent steps, 16-step
# episodes (a time-limit end per env and update; the official action repeat stays: AlohaSinglePegInsertion 2,
# PandaRobotiqPushCube 4 control steps per agent step, so their episodes are 8 and 4 agent steps and their runs 2-4x
# the physics).
_CLEANRL_SMOKE_ROBOTS = ("--total-timesteps", "64", "--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2",
                         "--update-epochs", "1", "--eval-interval", "1", "--episode-length", "16",
                         "--checkpoint-interval", "0")
_CLEANRL_PAPER = ("--total-timesteps", "100000000", "--num-envs", "2048", "--num-steps", "480",
                  "--num-minibatches", "32", "--update-epochs", "16", "--eval-interval", "10")
# Flags of each preset per script; "*" is the fallback for scripts not listed (e.g. custom trainers in --scripts-dir).
PRESET_FLAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "smoke": {
        "ppo_continuous": _CLEANRL_SMOKE,
        "ppo_tanh": _CLEANRL_SMOKE,
        # 16 x 4 = 64 segments of 16 steps per update = 4 unrolls of 16 envs = 1024 steps; Brax's schedule for 3
        # evaluations: 2 eval epochs of 2 updates, evaluated before training and after each
        "ppo_multiunroll": ("--preset", "cpu", "--total-timesteps", "4096", "--num-envs", "16", "--unroll-length",
                            "16", "--batch-size", "16", "--num-minibatches", "4", "--num-updates-per-batch", "1",
                            "--num-evals", "3", "--episode-length", "100",
                            "--checkpoint-interval", "0"),
        "*": ("--total-timesteps", "4096"),
    },
    "smoke-robots": {
        "ppo_continuous": _CLEANRL_SMOKE_ROBOTS,
        "ppo_tanh": _CLEANRL_SMOKE_ROBOTS,
        # 2 x 2 = 4 segments of 8 steps per update = 2 unrolls of 2 envs = 32 steps; 2 eval epochs of 1 update
        "ppo_multiunroll": ("--preset", "cpu", "--total-timesteps", "64", "--num-envs", "2", "--unroll-length", "8",
                            "--batch-size", "2", "--num-minibatches", "2", "--num-updates-per-batch", "1",
                            "--num-evals", "3", "--episode-length", "16", "--checkpoint-interval", "0"),
        "*": ("--total-timesteps", "64"),
    },
    "cpu": {
        "ppo_continuous": ("--total-timesteps", "800000"),
        "ppo_tanh": ("--total-timesteps", "800000"),
        "ppo_multiunroll": ("--preset", "cpu"),
        "*": (),
    },
    "paper": {
        "ppo_continuous": _CLEANRL_PAPER,
        "ppo_tanh": _CLEANRL_PAPER,
        # Brax's schedule rounds the budget up to whole epochs: 17 eval epochs x 6 training epochs (resets after
        # each, as the official DM Control config) x 1 update of 983,040 steps = 100.3M (10 evals, 10 resets: 176.9M)
        "ppo_multiunroll": ("--preset", "official", "--total-timesteps", "100000000", "--num-evals", "18",
                            "--num-resets-per-eval", "6"),
        "*": ("--total-timesteps", "100000000"),
    },
}


@dataclass(frozen=True)
class Preset:
    envs: str
    seeds: int
    budget: str


PRESETS: dict[str, Preset] = {
    "smoke": Preset("dmc", 1, "4096 steps/run, all 25 DM Control envs x 1 seed; a run is its JIT compiles (23-165 s "
                              "each): 75 runs (3 trainers) with --workers 2 took 42 min on a 2-core CPU "
                              "(docs/benchmarks/smoke)"),
    "smoke-robots": Preset("robots", 1, "64 steps/run (2 envs), all 29 robot tasks x 1 seed; a run is mostly its "
                                        "JIT compiles (docs/benchmarks/smoke_robots)"),
    "cpu": Preset("CartpoleBalance,PendulumSwingup,PointMass,ReacherEasy", 2,
                  "800k steps/run (ppo_multiunroll: 1.31M), 4 cheap envs x 2 seeds: ~3-10 min per run at 2 workers"),
    "paper": Preset("all", 4, "100M steps/run, every env x 4 seeds, 2048 envs: GPU scale (use --slurm)"),
}


class CampaignError(Exception):
    """Bad campaign input (unknown env, script or option): reported as one line, exit code 2."""


@dataclass(frozen=True)
class Task:
    """One planned run."""

    env_id: str
    script: str
    seed: int
    command: tuple[str, ...]
    runs_dir: str
    log: str
    status: str
    digest: str | None = None  # the resolved settings' digest (resolve_settings); None until resolved

    @property
    def key(self) -> str:
        return f"{self.env_id}__{self.script}__{self.seed}"


# ----------------------------------------------------------------------------------------------------- planning


def menagerie_status() -> tuple[bool, str]:
    """Whether mujoco_menagerie is available without cloning it (campaigns never clone), and why not."""
    from playground_gym.loading import find_menagerie

    path, why = find_menagerie()
    return path is not None, why and f"{why} (campaigns never clone it; set the variable to an existing checkout)"


def menagerie_lacks(env_id: str) -> list[str]:
    """The robot folders of ``env_id`` missing from the available Menagerie (a partial checkout named with
    ``PLAYGROUND_GYM_MENAGERIE_PATH`` covers only some envs); ``[]`` if it has them all."""
    from playground_gym.loading import find_menagerie
    from playground_gym.menagerie import missing_robots

    path, _ = find_menagerie()
    return missing_robots(env_id, path) if path is not None else []


def _suite_envs(suite: str) -> list[str]:
    if suite == "dm_control_suite":
        return list(DM_CONTROL_ENVS)
    from playground_gym.configs import list_envs

    return list_envs(suite)


def resolve_envs(spec: str) -> tuple[list[str], list[str]]:
    """Env ids for ``--envs`` (``dmc``, ``all``, ``locomotion``, ``manipulation``, ``robots`` (both) or
    ``Name,Name``) and notes on what was skipped and why.

    Raises:
        CampaignError: unknown name (with suggestions), or a named Menagerie env while Menagerie is unavailable.
    """
    spec = spec.strip()
    notes: list[str] = []
    groups = {"dmc": ["dm_control_suite"], "dm_control_suite": ["dm_control_suite"], "locomotion": ["locomotion"],
              "manipulation": ["manipulation"], "robots": ["locomotion", "manipulation"],
              "all": ["dm_control_suite", "locomotion", "manipulation"]}
    if spec.lower() in groups:
        envs: list[str] = []
        for suite in groups[spec.lower()]:
            names = _suite_envs(suite)
            if suite != "dm_control_suite":
                ok, why = menagerie_status()
                if not ok:
                    notes.append(f"skipped {len(names)} {suite} envs ({', '.join(names)}): mujoco_menagerie is not "
                                 f"available: {why}")
                    continue
                lacking = {name: menagerie_lacks(name) for name in names}
                skipped = [name for name in names if lacking[name]]
                if skipped:
                    folders = sorted({folder for name in skipped for folder in lacking[name]})
                    notes.append(f"skipped {len(skipped)} {suite} envs ({', '.join(skipped)}): the mujoco_menagerie "
                                 f"here is partial and lacks {', '.join(folders)}")
                    names = [name for name in names if not lacking[name]]
            envs += names
        if not envs:
            raise CampaignError(f"--envs {spec}: no env is runnable here; " + "; ".join(notes))
        return envs, notes
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise CampaignError(f"--envs: expected dmc, all, locomotion, manipulation, robots or a comma-separated list "
                            f"of env ids; got {spec!r}")
    folded = {n.lower(): n for n in DM_CONTROL_ENVS}
    envs = []
    for raw in names:
        name = raw[len("playground/"):] if raw.startswith("playground/") else raw
        if name.lower() in folded:
            envs.append(folded[name.lower()])
            continue
        try:  # not a DM Control env: ask the installed Playground (slow import), which suggests close names
            from playground_gym.configs import resolve_env_id, suite_of

            name = resolve_env_id(name)
        except ValueError as e:  # its message already suggests close names among all 54 ids
            raise CampaignError(f"--envs: {e}") from None
        if suite_of(name) != "dm_control_suite":
            ok, why = menagerie_status()
            if not ok:
                raise CampaignError(f"--envs: {name} ({suite_of(name)}) needs mujoco_menagerie, which is not "
                                    f"available: {why}")
            lacking = menagerie_lacks(name)
            if lacking:
                raise CampaignError(f"--envs: {name} needs the mujoco_menagerie folders {', '.join(lacking)}, which "
                                    f"the (partial) mujoco_menagerie here lacks")
        envs.append(name)
    return list(dict.fromkeys(envs)), notes


def resolve_scripts(spec: str, scripts_dir: Path) -> dict[str, Path]:
    """Script name -> path, checking that each file exists.

    Raises:
        CampaignError: empty list, unknown name or missing file (named).
    """
    names = list(dict.fromkeys(n.strip().removesuffix(".py") for n in spec.split(",") if n.strip()))
    if not names:
        raise CampaignError(f"--scripts: expected a comma-separated list from {', '.join(KNOWN_SCRIPTS)}; got {spec!r}")
    out = {}
    for name in names:
        path = scripts_dir / f"{name}.py"
        if not path.is_file():
            if scripts_dir == DEFAULT_SCRIPTS_DIR and name not in KNOWN_SCRIPTS:
                close = difflib.get_close_matches(name, KNOWN_SCRIPTS, n=2, cutoff=0.5)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise CampaignError(f"--scripts: unknown trainer {name!r}; expected some of "
                                    f"{', '.join(KNOWN_SCRIPTS)}.{hint}")
            raise CampaignError(f"--scripts: trainer {name!r} not found: {path} does not exist")
        out[name] = path
    return out


def summaries(runs_dir: str | Path) -> list[tuple[Path, str | None, Any]]:
    """(summary.json path, settings digest, seed) of every trainer run folder in ``runs_dir``; the digest is
    recomputed from the summary's resolved ``args`` (so summaries written before digests existed count too), None for
    an unreadable summary or one without args."""
    from playground_gym.run_settings import summary_digest

    out = []
    for path in sorted(Path(runs_dir).glob("*/summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            summary = None
        digest = summary_digest(summary)
        out.append((path, digest, summary.get("seed", summary["args"].get("seed")) if digest else None))
    return out


def _status_of(task: Task) -> str | None:
    try:
        return json.loads(Path(task.status).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def completed_run(task: Task) -> Path | None:
    """The summary.json in ``task.runs_dir`` of a run with the task's seed and settings digest, if any (the newest)."""
    if task.digest is None:
        raise CampaignError(f"{task.key}: its settings are not resolved (resolve_settings) so completion is unknown")
    matches = [p for p, digest, seed in summaries(task.runs_dir) if digest == task.digest and seed == task.seed]
    return max(matches, key=lambda p: p.stat().st_mtime) if matches else None


def plan_tasks(envs: Sequence[str], scripts: dict[str, Path], seeds: Sequence[int], out: Path, preset: str,
               total_timesteps: int | None, extra: Sequence[str], python: str = sys.executable) -> list[Task]:
    """Every (env, script, seed) run with its command, ordered seed, script, env: the first pass over the envs fills
    the persistent JIT compile cache, so the other trainers and seeds of an env start without compiling (measured
    here: 44 s instead of 79 s for a PointMass smoke run), and parallel workers do not compile one env twice."""
    tasks = []
    extra = list(extra)
    if "--track" in extra and not any(a.split("=")[0] in ("--wandb-group", "--wandb_group") for a in extra):
        extra += ["--wandb-group", out.resolve().name]  # W&B groups a campaign's runs (named after its folder)
    for seed in seeds:
        for script, path in scripts.items():
            flags = list(PRESET_FLAGS[preset].get(script, PRESET_FLAGS[preset]["*"]))
            if total_timesteps is not None:
                flags = _set_flag(flags, "--total-timesteps", str(total_timesteps))
            for env_id in envs:
                key = f"{env_id}__{script}__{seed}"
                runs_dir = out / "runs" / env_id / script / f"seed{seed}"
                command = (python, str(path), "--env-id", env_id, "--seed", str(seed), "--runs-dir", str(runs_dir),
                           *COMMON_FLAGS, *flags, *extra)
                tasks.append(Task(env_id, script, seed, command, str(runs_dir), str(out / "logs" / f"{key}.log"),
                                  str(out / "status" / f"{key}.json")))
    return tasks


def _set_flag(flags: list[str], name: str, value: str) -> list[str]:
    if name in flags:
        i = flags.index(name)
        return flags[:i] + [name, value] + flags[i + 2:]
    return [name, value] + flags


def _flag_names(args: Sequence[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def resolve_settings(tasks: Sequence[Task], scripts: dict[str, Path], world_size: int = 1,
                     timeout: float = 300) -> list[Task]:
    """``tasks`` with their settings digests, resolved by each trainer itself (one ``python -m
    playground_gym.resolve`` process per trainer, in parallel; ~10 s: each imports torch and JAX).

    Raises:
        CampaignError: a trainer rejects a planned command line (its own one-line error, with the run and where the
            flags come from), or cannot be resolved at all (no ``Args`` dataclass, import error, timeout).
    """
    by_script: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        by_script.setdefault(t.script, []).append(i)

    def resolve(script: str) -> list[dict[str, Any]]:
        argvs = [list(tasks[i].command[2:]) for i in by_script[script]]
        cmd = [sys.executable, "-m", "playground_gym.resolve", str(scripts[script]), "--world-size",
               str(world_size)]
        try:
            proc = subprocess.run(cmd, input=json.dumps(argvs), capture_output=True, text=True, timeout=timeout,
                                  cwd=REPO)
        except subprocess.TimeoutExpired:
            raise CampaignError(f"{script}: resolving its settings took over {timeout:.0f} s") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise CampaignError(f"{script}: its settings cannot be resolved (exit {proc.returncode}): {tail[0]}")
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            raise CampaignError(f"{script}: resolving its settings printed no JSON: {proc.stdout[-300:]!r}") from None
        if not isinstance(result, list) or len(result) != len(argvs):
            raise CampaignError(f"{script}: resolving {len(argvs)} command lines gave {type(result).__name__} "
                                f"of length {len(result) if isinstance(result, list) else '?'}")
        return result

    with ThreadPoolExecutor(max_workers=max(1, len(by_script))) as pool:
        resolved = dict(zip(by_script, pool.map(resolve, by_script)))
    out = list(tasks)
    for script, indices in by_script.items():
        errors = [(tasks[i], r["error"]) for i, r in zip(indices, resolved[script]) if "error" in r]
        if errors:
            task, message = errors[0]
            more = f" ({len(errors) - 1} more of its runs failed too)" if len(errors) > 1 else ""
            raise CampaignError(f"{script} rejects the planned command of {task.key}: {message}{more}; the flags "
                                f"come from the preset's PRESET_FLAGS[...][{script!r}] in {Path(__file__).name}, "
                                f"--total-timesteps or the extra flags after --")
        for i, r in zip(indices, resolved[script]):
            out[i] = dataclasses.replace(tasks[i], digest=r["digest"])
    return out


# ----------------------------------------------------------------------------------------------------- running


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _write_json(path: str | Path, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _tail(path: str | Path, n: int = 15) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 20000))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    lines = [ln.rstrip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-n:]


class _Runner:
    """Runs tasks on a thread pool, each trainer in its own process group; stops them all on request."""

    def __init__(self, workers: int, timeout: float | None, quiet: bool = False, preload: str | None = None):
        self.workers = workers
        self.preload = preload
        self.timeout = timeout
        self.quiet = quiet
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.procs: dict[str, subprocess.Popen] = {}

    def run_one(self, task: Task) -> dict[str, Any]:
        record: dict[str, Any] = {"key": task.key, "env_id": task.env_id, "script": task.script, "seed": task.seed,
                                  "command": shlex.join(task.command), "log": task.log, "runs_dir": task.runs_dir}
        if self.stop.is_set():
            return {**record, "status": "not started"}
        Path(task.log).parent.mkdir(parents=True, exist_ok=True)
        Path(task.runs_dir).mkdir(parents=True, exist_ok=True)
        started = time.time()
        record["started"] = _now()
        with open(task.log, "w") as log:
            log.write(f"# run {task.key}\n# started {record['started']} in {REPO}\n# command: {record['command']}\n\n")
            log.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            if self.workers > 1:  # parallel runs would all pin their JAX to the same CPU (backend.pin_jax_cpu)
                env["PLAYGROUND_GYM_PIN_JAX_CPU"] = "0"
            if self.preload:  # tools/mkl_shim.py: torch's MKL on its AVX-512 kernels on an AMD CPU
                preload_env = _mkl_shim().preload_env

                env = preload_env(env, self.preload)
            try:
                proc = subprocess.Popen(task.command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                        start_new_session=True)
            except OSError as e:
                record.update(status="failed", returncode=None, reason=f"could not start: {e}", ended=_now(),
                              wall_s=0.0)
                _write_json(task.status, record)
                return record
            with self.lock:
                self.procs[task.key] = proc
            if self.stop.is_set():  # stopped between the check above and the registration: terminate_all missed it
                _kill_group(proc)
            timed_out = False
            try:
                rc = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                rc = proc.wait()
            finally:
                with self.lock:
                    self.procs.pop(task.key, None)
        wall = round(time.time() - started, 1)
        record.update(returncode=rc, ended=_now(), wall_s=wall, settings_digest=task.digest)
        done = completed_run(task)
        if done is not None:  # none matched when planned: this run wrote it, and its results are whole
            note = "" if rc == 0 else f"exit code {rc} after writing its summary.json (killed while closing?)"
            record.update(status="ok", reason=note, summary=str(done))
        elif self.stop.is_set():
            record.update(status="interrupted", reason="campaign stopped (Ctrl-C / SIGTERM) while running")
        elif timed_out:
            record.update(status="failed", reason=f"timed out after {self.timeout:.0f} s (--timeout)")
        elif rc == 0:
            record.update(status="failed", reason=f"exited 0 but wrote no summary.json of seed {task.seed} with the "
                                                  f"planned settings (digest {task.digest}) under {task.runs_dir}")
        else:
            how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
            tail = _tail(task.log, 3)
            record.update(status="failed", reason=f"{how}: {tail[-1] if tail else '(empty log)'}")
        if record["status"] != "ok":
            record["tail"] = _tail(task.log)
        _write_json(task.status, record)
        return record

    def terminate_all(self, grace: float = 10.0) -> None:
        with self.lock:
            procs = list(self.procs.values())
        for p in procs:
            _signal_group(p, signal.SIGTERM)
        deadline = time.time() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)


def run_tasks(tasks: Sequence[Task], workers: int, timeout: float | None = None,
              log=print, preload: str | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Run ``tasks`` with up to ``workers`` at once, each with ``preload`` (a shared library's path) added to its
    ``LD_PRELOAD`` if given. Returns (status records, interrupted?)."""
    unresolved = [t.key for t in tasks if t.digest is None]
    if unresolved:
        raise CampaignError(f"run_tasks: the settings of {', '.join(unresolved)} are not resolved (resolve_settings)")
    runner = _Runner(workers, timeout, preload=preload)
    records: list[dict[str, Any]] = []
    interrupted = False
    previous = signal.getsignal(signal.SIGTERM)
    previous = signal.SIG_DFL if previous is None else previous  # None: a handler not installed from Python

    def on_term(signum, frame):  # SIGTERM to the campaign behaves like Ctrl-C
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="run")
    try:
        pending: set[Future] = {pool.submit(runner.run_one, t) for t in tasks}
        done_count = 0
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                rec = fut.result()
                records.append(rec)
                done_count += 1
                extra = "" if rec["status"] == "ok" else f": {rec.get('reason', '')}"
                wall = rec.get("wall_s", 0)
                log(f"[{done_count}/{len(tasks)}] {rec['status']:<6} {rec['key']} ({wall:.0f} s){extra}")
    except KeyboardInterrupt:
        interrupted = True
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        runner.stop.set()
        log("campaign: interrupted: stopping running trainers ...")
        runner.terminate_all()
        pool.shutdown(wait=True, cancel_futures=True)
        for fut in pending:
            if fut.done() and not fut.cancelled():
                records.append(fut.result())
    finally:
        pool.shutdown(wait=True)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
            if interrupted:
                signal.signal(signal.SIGINT, signal.default_int_handler)
    return records, interrupted


# ----------------------------------------------------------------------------------------------------- SLURM

_SBATCH = """#!/usr/bin/env bash
# Written by benchmarks/campaign.py: one array task per run; line N+1 of the list below (= commands.txt) is task N
# ("KEY<TAB>RUNS_DIR<TAB>SETTINGS_DIGEST<TAB>COMMAND"). Same layout as local runs: logs/KEY.log, status/KEY.json,
# RUNS_DIR/*/summary.json.
#SBATCH --job-name={job_name}
#SBATCH --array=0-{last}%{workers}
#SBATCH --output={slurm_dir}/slurm-%A_%a.out
{options}
set -euo pipefail
cd {repo}
PYTHON=${{PYTHON:-{python}}}
export PYTHON
export PYTHONUNBUFFERED=1
# The commands are part of this script (sbatch keeps a copy at submission), so a later campaign writing to the same
# folder cannot change what a queued task runs; {commands} is the same list, for reading.
LINE=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" <<'PLAYGROUND_GYM_COMMANDS'
{commands_text}PLAYGROUND_GYM_COMMANDS
)
IFS=$'\\t' read -r KEY RUNS_DIR DIGEST CMD <<< "$LINE"
LOG={logs}/$KEY.log
STATUS={status}/$KEY.json
TASK="${{SLURM_ARRAY_JOB_ID:-?}}_$SLURM_ARRAY_TASK_ID"
mkdir -p {logs} {status}
json_text() {{  # a JSON string's body: printable ASCII, \\ and " escaped, any other byte (control, non-ASCII) as ?
    printf '%s' "$1" | LC_ALL=C tr -c '\\040-\\176' '?' | sed 's/[\\\\"]/\\\\&/g'
}}
record() {{  # STATE RETURNCODE REASON: status/KEY.json, written whole (rename)
    printf '{{"key": "%s", "status": "%s", "returncode": %s, "reason": "%s", "settings_digest": "%s", "log": "%s", '\\
'"slurm_task": "%s", "ended": "%s"}}\\n' "$(json_text "$KEY")" "$1" "$2" "$(json_text "$3")" \\
        "$(json_text "$DIGEST")" "$(json_text "$LOG")" "$(json_text "$TASK")" "$(date -Is)" > "$STATUS.tmp"
    mv -f "$STATUS.tmp" "$STATUS"
}}
printf '# run %s\\n# started %s on %s (SLURM task %s)\\n# command: %s\\n\\n' "$KEY" "$(date -Is)" "$(hostname)" \\
    "$TASK" "$CMD" > "$LOG"
# Until the run ends this record stands: a task killed without warning (SIGKILL, node failure) leaves it.
record running null "started $(date -Is) on $(hostname); no end recorded (still running, or killed without warning)"
CHILD=""
ENDED=""
on_signal() {{  # the scheduler's SIGTERM (time limit, scancel, preemption) comes before its SIGKILL: record it
    [ -n "$ENDED" ] && return  # the run is over: its own record is being written
    trap - TERM INT
    [ -n "$CHILD" ] && kill -TERM -- "-$CHILD" 2>/dev/null  # the run's process group: the trainer and its children
    record failed null "killed by the scheduler (SIG$1: time limit, scancel or preemption) after $SECONDS s"
    if [ "$1" = INT ]; then exit 130; else exit 143; fi
}}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
set +e
set -m  # job control: the run gets a process group of its own, which on_signal stops as a whole
eval "$CMD" >> "$LOG" 2>&1 &
CHILD=$!
set +m
wait "$CHILD"  # a trapped signal interrupts the wait at once (a foreground command would delay the trap)
RC=$?
ENDED=1
LAST=$(tail -n 1 "$LOG" 2>/dev/null | cut -c1-300 || true)
set -e
if grep -qsF "\\"settings_digest\\": \\"$DIGEST\\"" "$RUNS_DIR"/*/summary.json; then
    # none matched when planned: this run wrote it (a non-zero exit after it: killed while closing)
    record ok "$RC" "$([ "$RC" -eq 0 ] || echo "exit code $RC after writing its summary.json")"
elif [ "$RC" -eq 0 ]; then
    record failed 0 "exited 0 but wrote no summary.json with the planned settings (digest $DIGEST) under $RUNS_DIR"
elif [ "$RC" -gt 128 ]; then
    record failed "$RC" "killed by signal $((RC - 128)) (SIG$(kill -l $((RC - 128)) 2>/dev/null); SIGKILL: out of \\
memory or the scheduler): $LAST"
else
    record failed "$RC" "exit code $RC: $LAST"
fi
exit "$RC"
"""


def write_slurm(tasks: Sequence[Task], out: Path, workers: int, options: Sequence[str] = (),
                job_name: str = "playground_gym_bench", gpus_per_run: int = 0) -> tuple[Path, Path]:
    """Write ``out/slurm/commands.txt`` and ``out/slurm/benchmark.sbatch`` (a job array over ``tasks``).

    The commands use ``"$PYTHON"`` (default: this interpreter) so that the cluster's Python can be chosen at
    submission. ``gpus_per_run`` N > 0 asks SLURM for N GPUs per task; N > 1 runs each trainer under
    ``srun ... torchrun --standalone --nproc-per-node N`` (one rank per GPU of the task's node). Returns (sbatch
    path, commands path).
    """
    if not tasks:
        raise CampaignError("--slurm: nothing to run (every planned run is complete)")
    slurm_dir = out / "slurm"
    slurm_dir.mkdir(parents=True, exist_ok=True)
    commands = slurm_dir / "commands.txt"
    lines = []
    for t in tasks:
        cmd = '"$PYTHON" ' + shlex.join(t.command[1:])
        if gpus_per_run > 1:
            # srun does not inherit the job's --cpus-per-task (SLURM >= 22.05): pass it on where it was set
            cmd = (f'srun --ntasks=1 --gres=gpu:{gpus_per_run} '
                   '${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} '
                   f'"$PYTHON" -m torch.distributed.run --standalone '
                   f'--nproc-per-node {gpus_per_run} ' + shlex.join(t.command[1:]))
        lines.append(f"{t.key}\t{t.runs_dir}\t{t.digest}\t{cmd}")
    commands.write_text("\n".join(lines) + "\n")
    gres = [f"--gres=gpu:{gpus_per_run}"] if gpus_per_run else []
    opts = "\n".join(f"#SBATCH {o}" for o in [*gres, *options])
    sbatch = slurm_dir / "benchmark.sbatch"
    q = shlex.quote
    sbatch.write_text(_SBATCH.format(job_name=job_name, last=len(tasks) - 1, workers=workers,
                                     slurm_dir=q(str(slurm_dir)), options=opts, repo=q(str(REPO)),
                                     python=q(sys.executable), commands=str(commands),
                                     commands_text="\n".join(lines) + "\n",
                                     logs=q(str(out / "logs")), status=q(str(out / "status"))))
    sbatch.chmod(0o755)
    return sbatch, commands


# ----------------------------------------------------------------------------------------------------- CLI


def _epilog() -> str:
    lines = ["presets (flags per trainer: PRESET_FLAGS in benchmarks/campaign.py; default envs / seeds / budget):"]
    for name, p in PRESETS.items():
        lines.append(f"  {name:<12} envs={p.envs} seeds={p.seeds}: {p.budget}")
        for script in KNOWN_SCRIPTS:
            lines.append(f"                 {script}: {' '.join(PRESET_FLAGS[name][script]) or '(trainer defaults)'}")
    lines += [
        "",
        "every run also gets: --env-id ENV --seed K --runs-dir OUT/runs/ENV/SCRIPT/seedK --torch-threads 1",
        "",
        "examples:",
        "  ./benchmark.sh --preset smoke --workers 2                       # all 25 DM Control envs, 3 trainers",
        "  ./benchmark.sh --preset cpu --scripts ppo_continuous --seeds 5 -- --learning-rate 3e-4",
        "  ./benchmark.sh --preset paper --slurm --submit --sbatch-option=--gres=gpu:1 --sbatch-option=--time=12:00:00",
        "  python benchmarks/report.py OUT --out OUT                       # re-aggregate any run folders",
        "",
        "output: OUT/runs/<env>/<script>/seed<k>/..., OUT/logs/*.log, OUT/status/*.json, OUT/report.md, "
        "OUT/plots/<env>.png",
        "rerunning the same command reuses runs with a summary.json of the same resolved settings and seed (others are "
        "run; failed runs are retried); Ctrl-C stops cleanly (exit 130)",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmark.sh",
        usage="benchmark.sh [options] [-- extra trainer flags]",
        description="Run a benchmark campaign of the cleanrl_ppo trainers across envs, seeds and trainers (in "
                    "parallel, resumable, failure-isolated), then write a markdown table and learning-curve plots.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="smoke", help="budget preset (default: smoke)")
    parser.add_argument("--scripts", default=",".join(DEFAULT_SCRIPTS),
                        help=f"comma-separated trainers from {', '.join(KNOWN_SCRIPTS)} (default: %(default)s)")
    parser.add_argument("--envs", default=None,
                        help="dmc (the 25 DM Control envs), all (plus locomotion and manipulation when "
                             "mujoco_menagerie is available), locomotion, manipulation, robots (both), or "
                             "Name,Name "
                             "(default: the preset's)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per (env, trainer): 1..N (default: preset's)")
    parser.add_argument("--total-timesteps", type=int, default=None, help="override the preset's env steps per run")
    parser.add_argument("--workers", type=int, default=1, help="runs at once (default: 1)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/benchmark/<preset>)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the planned commands (one per line, completed runs left out) and exit")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run before it is killed (failed)")
    parser.add_argument("--slurm", action="store_true",
                        help="write OUT/slurm/benchmark.sbatch (job array, one run per task) and commands.txt "
                             "instead of running here")
    parser.add_argument("--submit", action="store_true", help="with --slurm: submit it with sbatch")
    parser.add_argument("--gpus-per-run", type=int, default=0, metavar="N",
                        help="with --slurm: give each run N GPUs (#SBATCH --gres=gpu:N); N > 1 runs it data-parallel "
                             "as `srun torchrun --standalone --nproc-per-node N` (one rank per GPU; default: 0)")
    parser.add_argument("--sbatch-option", action="append", default=[], metavar="OPT",
                        help="extra #SBATCH line, e.g. --sbatch-option=--gres=gpu:1 (repeatable)")
    parser.add_argument("--cpu-blas", choices=["auto", "default"], default="auto",
                        help="auto: local runs preload tools/mkl_shim.py's MKL shim where torch's MKL would "
                             "take its AVX2 kernels on an AVX-512 CPU (AMD); default: never")
    parser.add_argument("--no-report", action="store_true", help="do not write report.md and plots at the end")
    parser.add_argument("--scripts-dir", default=str(DEFAULT_SCRIPTS_DIR),
                        help="folder of the trainer scripts NAME.py (for tests and custom trainers; default: "
                             "cleanrl_ppo/)")
    return parser


def _mkl_shim():
    """tools/mkl_shim.py (a CPU benchmarking tool kept outside the package)."""
    if str(REPO / "tools") not in sys.path:
        sys.path.insert(0, str(REPO / "tools"))
    import mkl_shim

    return mkl_shim


def cpu_blas_preload() -> str | None:
    """The MKL shim's path where this machine's torch would run MKL's AVX2 kernels on an AVX-512 CPU (AMD), else
    None; a shim that cannot be built is a note, not an error (the runs are slower, not wrong)."""
    cpu_blas = _mkl_shim()
    try:
        path = cpu_blas.preload_path()
    except cpu_blas.CPUBlasError as e:
        print(f"campaign: note: runs use torch's MKL as it is: {e}", file=sys.stderr)
        return None
    if path is None:
        return None
    print(f"campaign: runs preload {path} (tools/mkl_shim.py: MKL's AVX-512 kernels on this CPU; "
          f"--cpu-blas default turns it off)", file=sys.stderr)
    return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _main(args, extra, parser)
    except CampaignError as e:
        parser.error(str(e))  # exit code 2
    return 2  # pragma: no cover


def _main(args: argparse.Namespace, extra: list[str], parser: argparse.ArgumentParser) -> int:
    preset = PRESETS[args.preset]
    seeds = preset.seeds if args.seeds is None else args.seeds
    if seeds < 1:
        raise CampaignError(f"--seeds must be >= 1; got {seeds}")
    if args.workers < 1:
        raise CampaignError(f"--workers must be >= 1; got {args.workers}")
    if args.total_timesteps is not None and args.total_timesteps <= 0:
        raise CampaignError(f"--total-timesteps must be > 0; got {args.total_timesteps}")
    if args.timeout is not None and args.timeout <= 0:
        raise CampaignError(f"--timeout must be > 0; got {args.timeout}")
    if args.submit and not args.slurm:
        raise CampaignError("--submit needs --slurm")
    if args.gpus_per_run < 0 or (args.gpus_per_run and not args.slurm):
        raise CampaignError(f"--gpus-per-run: expected an int >= 0 with --slurm; got {args.gpus_per_run}"
                            + ("" if args.slurm else " without --slurm"))
    reserved = _flag_names(extra) & {"--env-id", "--seed", "--runs-dir", "--resume"}
    if reserved:
        raise CampaignError(f"extra trainer flags may not set {', '.join(sorted(reserved))}: the campaign sets them")
    scripts_dir = Path(args.scripts_dir).resolve()
    if not scripts_dir.is_dir():
        raise CampaignError(f"--scripts-dir: {scripts_dir} is not a directory")
    scripts = resolve_scripts(args.scripts, scripts_dir)
    envs, notes = resolve_envs(args.envs or preset.envs)
    out = Path(args.out or REPO / "runs" / "benchmark" / args.preset).resolve()
    for note in notes:
        print(f"campaign: {note}", file=sys.stderr)

    tasks = plan_tasks(envs, scripts, range(1, seeds + 1), out, args.preset, args.total_timesteps, extra)
    tasks = resolve_settings(tasks, scripts, world_size=max(1, args.gpus_per_run))
    reused = {t.key: completed_run(t) for t in tasks}
    todo = [t for t in tasks if reused[t.key] is None]
    other = [t for t in todo if summaries(t.runs_dir)]
    print(f"campaign: preset {args.preset}: {len(envs)} envs x {len(scripts)} trainers x {seeds} seeds = "
          f"{len(tasks)} runs; {len(tasks) - len(todo)} complete with the same settings (reused), {len(todo)} to run; "
          f"out {out}", file=sys.stderr)
    for t in tasks:
        if reused[t.key] is not None:
            print(f"campaign: reused {t.key}: {reused[t.key]}", file=sys.stderr)
    running = [t.key for t in todo if _status_of(t) == "running"]
    if running:
        print(f"campaign: warning: {len(running)} runs to run have a 'running' status record (a SLURM task of an "
              f"earlier submission still queued or running, or killed without warning): running them again "
              f"duplicates that work if it is alive (squeue): {', '.join(running)}", file=sys.stderr)
    if other:
        print(f"campaign: {len(other)} runs to run have summaries of other settings or seeds in their runs dir (kept, "
              f"not reused; the report shows each setting on its own row): "
              + ", ".join(t.key for t in other), file=sys.stderr)
    if args.dry_run:
        for t in todo:
            print(shlex.join(t.command))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "plan.json", {
        "written": _now(), "preset": args.preset, "scripts": list(scripts), "envs": envs, "seeds": seeds,
        "total_timesteps": args.total_timesteps, "extra_flags": extra, "skipped_envs": notes,
        "runs": [asdict(t) | {"key": t.key, "complete": reused[t.key] is not None,
                              "reused": None if reused[t.key] is None else str(reused[t.key])} for t in tasks]})

    if args.slurm:
        sbatch, commands = write_slurm(todo, out, args.workers, args.sbatch_option, gpus_per_run=args.gpus_per_run)
        print(f"campaign: wrote {sbatch} ({len(todo)} array tasks, at most {args.workers} at once) and {commands}")
        if args.submit:
            exe = shutil.which("sbatch")
            if exe is None:
                print(f"campaign: error: --submit: sbatch not found on PATH (SLURM not installed here); submit "
                      f"{sbatch} on the cluster with `sbatch {sbatch}`", file=sys.stderr)
                return 1
            proc = subprocess.run([exe, str(sbatch)], capture_output=True, text=True)
            print((proc.stdout + proc.stderr).strip())
            return proc.returncode
        print(f"campaign: submit with `sbatch {sbatch}`; afterwards `python benchmarks/report.py {out} --out {out}`")
        return 0

    preload = cpu_blas_preload() if args.cpu_blas == "auto" and todo else None
    t0 = time.time()
    records, interrupted = run_tasks(todo, args.workers, args.timeout, log=lambda m: print(m, flush=True),
                                     preload=preload)
    wall = time.time() - t0
    failed = [r for r in records if r["status"] not in ("ok", "not started")]
    print(f"campaign: {sum(r['status'] == 'ok' for r in records)} ok, {len(failed)} failed/interrupted of "
          f"{len(todo)} runs in {wall:.0f} s", flush=True)
    if interrupted:
        print("campaign: stopped; rerun the same command to resume (completed runs are skipped)", file=sys.stderr)
        return 130
    if not args.no_report:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        try:
            import report

            notes_md = [f"Campaign: preset `{args.preset}`, trainers {', '.join(f'`{s}`' for s in scripts)}, "
                        f"{len(envs)} envs, {seeds} seed(s)" + (f", extra flags `{shlex.join(extra)}`" if extra else "")
                        + f"; this invocation ran {len(todo)} runs in {wall:.0f} s with {args.workers} workers."]
            notes_md += [f"Note: {n}." for n in notes]
            if preload:
                notes_md.append("Runs preloaded tools/mkl_shim.py's MKL shim (torch's matmuls on MKL's AVX-512 "
                                "kernels on this AMD CPU).")
            path = report.write_report([out / "runs"], out, status_dirs=[out / "status"],
                                       title=f"Benchmark report ({args.preset})", notes=notes_md)
            print(f"campaign: report {path}")
        except Exception as e:  # the runs are done: a report problem must not lose them
            print(f"campaign: error: writing the report failed ({type(e).__name__}: {e}); rerun "
                  f"`python benchmarks/report.py {out / 'runs'} --out {out}`", file=sys.stderr)
            return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

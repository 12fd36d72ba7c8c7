"""A real single-node SLURM cluster on this machine for tests: munged, slurmctld and slurmd on localhost, with their
config, key, state, logs and sockets in one temporary folder (Debian's `slurm-wlm` and `munge` packages:
`apt-get install slurm-wlm munge`). Nothing outside that folder is touched; the daemons stop when the context ends."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


def missing_binaries() -> list[str]:
    """The SLURM/munge programs not on PATH (slurmctld, slurmd and munged live in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [name for name in DAEMONS if shutil.which(name, path=path) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return shutil.which(name, path=path) or name


CONF = """ClusterName=playgroundgym
SlurmctldHost={host}(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={d}/munge.sock
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def local_cluster(folder: Path, start_timeout: float = 60) -> Iterator[dict[str, str]]:
    """Start the cluster in ``folder``; yields the environment (``SLURM_CONF``) under which sbatch/squeue use it.

    Raises:
        RuntimeError: a daemon did not start or the node did not become idle within ``start_timeout`` (the message
            holds the daemons' logs).
    """
    d = folder.resolve()
    for sub in ("state", "spool"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = d / "slurm.conf"
    conf.write_text(CONF.format(host=socket.gethostname(), user=getpass.getuser(), d=d, ctld_port=_free_port(),
                                slurmd_port=_free_port(), cpus=os.cpu_count()))
    env = dict(os.environ, SLURM_CONF=str(conf))
    logs = lambda: "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(d.glob("*.log")))  # noqa: E731
    try:
        subprocess.run([_sbin("munged"), "--force", f"--socket={d}/munge.sock", f"--key-file={key}",
                        f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log", f"--seed-file={d}/munge.seed"],
                       check=True, capture_output=True, text=True, timeout=30)
        subprocess.run([_sbin("slurmctld"), "-f", str(conf)], check=True, env=env, capture_output=True, timeout=30)
        subprocess.run([_sbin("slurmd"), "-f", str(conf)], check=True, env=env, capture_output=True, timeout=30)
        deadline = time.time() + start_timeout
        state = ""
        while time.time() < deadline:
            result = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
            state = result.stdout.strip()
            if state == "idle":
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"the SLURM node did not become idle within {start_timeout:g} s (state "
                               f"{state!r})\n{logs()}")
        yield env
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"a SLURM daemon failed to start: {e} {e.stderr}\n{logs()}") from e
    finally:
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = d / f"{name}.pid"
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)


def wait_for_job(job_id: str, env: dict[str, str], timeout: float) -> None:
    """Wait until job ``job_id`` (all its array tasks) left the queue.

    Raises:
        TimeoutError: still queued or running after ``timeout`` seconds.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True, timeout=30)
        if (result.returncode == 0 and not result.stdout.strip()) or "Invalid job id" in result.stderr:
            return  # finished (or already purged from slurmctld's memory)
        time.sleep(2)
    raise TimeoutError(f"SLURM job {job_id} still in the queue after {timeout:g} s")

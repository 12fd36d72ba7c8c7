"""torch's CPU matmuls on AMD: MKL's AVX-512 kernels through a one-function ``LD_PRELOAD`` shim.

torch's x86 wheels do their float32 matmuls with the Intel MKL linked into them, and MKL picks its kernels by CPU
vendor: on an AMD CPU it runs its AVX2 code even where the CPU has AVX-512 (Zen 4 and Zen 5). Measured here (AMD
EPYC, Zen 5, 2 cores; ``benchmarks/cpu_blas.py``): a (2112 x 256) @ (256 x 256) float32 matmul ran at 91 GFLOPS on
one core (about the AVX2 peak of this clock) and at 202 GFLOPS with MKL told the CPU is an Intel one, while XLA (which
does not use MKL) already ran it at 320 GFLOPS on two threads against torch's 166 (391 with the shim); one
ppo_multiunroll --preset cpu update (80 SGD steps of a 5x256 critic, most of its time here) took 1.32 s instead of
2.21 s (``benchmarks/trainer_phases.py``).

MKL asks one internal function, ``mkl_serv_intel_cpu_true``, whether the CPU is Intel's; torch exports it from
``libtorch_cpu.so``, so a shared library preloaded with ``LD_PRELOAD`` that defines it as ``return 1`` takes its
place. MKL still chooses among its kernels by the CPU's feature bits, so this only applies where those bits include
AVX-512 (checked). It has to be in place before the process starts (the dynamic loader binds the symbol), so it is a
command prefix, not a call::

    LD_PRELOAD=$(python tools/mkl_shim.py) python cleanrl_ppo/ppo_multiunroll.py --preset cpu

``python tools/mkl_shim.py`` builds the shim once with the system C compiler (``$CC``, ``cc``, ``gcc`` or
``clang``) into ``$XDG_CACHE_HOME/playground_gym/cpu_blas/`` and prints its path; ``--status`` says whether the
current machine needs it. ``benchmark.sh`` preloads it for local campaign runs where it applies (``--cpu-blas``).
It is a tool for CPU benchmarking, not part of the environment library: nothing in ``playground_gym`` loads it.

Examples:
    >>> import mkl_shim  # with tools/ on sys.path
    >>> reason = mkl_shim.slow_mkl_reason()  # None on Intel, ARM, a non-MKL torch, or with the shim loaded
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import playground_gym.backend as backend

__all__ = ["CPUBlasError", "SHIM_NAME", "build_shim", "preload_env", "preload_path", "shim_loaded", "slow_mkl_reason",
           "main"]

SHIM_NAME = "libplayground_gym_mkl_intel_cpu.so"
_SHIM_SOURCE = "int mkl_serv_intel_cpu_true(void) { return 1; }\n"
_AVX512 = ("avx512f", "avx512dq", "avx512bw", "avx512vl")  # MKL's AVX-512 kernels need all four


class CPUBlasError(RuntimeError):
    """The shim cannot be built (no C compiler, or it failed)."""


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """(vendor_id, flags) of the first CPU in ``path``; ("", set()) where it cannot be read."""
    vendor, flags = "", set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
                if vendor and flags:
                    break
    except OSError:
        pass
    return vendor, flags


def shim_loaded() -> bool:
    """Whether this process runs with the shim preloaded (it is mapped into the process)."""
    try:
        return SHIM_NAME in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def slow_mkl_reason(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """Why torch's float32 matmuls run MKL's AVX2 kernels on a CPU with AVX-512, or ``None`` where they do not.

    ``None`` when torch does not use MKL, the CPU is not x86-64 Linux, its vendor is Intel, it lacks AVX-512, or the
    shim is loaded already. Reads ``cpuinfo`` (a path, for tests) and imports torch.
    """
    import torch

    if sys.platform != "linux" or platform.machine() != "x86_64":
        return None
    if not torch.backends.mkl.is_available():
        return None
    vendor, flags = _cpuinfo(cpuinfo)
    if not vendor or vendor == "GenuineIntel" or not all(flag in flags for flag in _AVX512):
        return None
    if shim_loaded():
        return None
    return (f"torch's MKL runs its AVX2 matmul kernels on this {vendor} CPU although it has AVX-512 "
            f"(float32 matmuls ~2x slower); run with LD_PRELOAD=$(python tools/mkl_shim.py) "
            f"(docs/performance.md, 'CPU matmuls on AMD')")


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def build_shim(directory: str | os.PathLike[str] | None = None) -> Path:
    """The path of the shim, built with the system C compiler if it is not there yet (atomically: concurrent
    builders each write a temporary file and rename it).

    Raises:
        CPUBlasError: no C compiler was found, or compiling failed (its output is in the message).
    """
    target = Path(directory) if directory is not None else backend.cache_subdir("cpu_blas")
    path = target / SHIM_NAME
    if path.is_file():
        return path
    compiler = _compiler()
    if compiler is None:
        raise CPUBlasError("building the MKL shim needs a C compiler: none of $CC, cc, gcc, clang was found on PATH")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        source, built = Path(tmp) / "shim.c", Path(tmp) / SHIM_NAME
        source.write_text(_SHIM_SOURCE)
        result = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(source)],
                                capture_output=True, text=True)
        if result.returncode != 0 or not built.is_file():
            raise CPUBlasError(f"building the MKL shim with {compiler} failed (exit {result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()}")
        os.replace(built, path)
    return path


def preload_path() -> Path | None:
    """The shim's path (built if needed) where :func:`slow_mkl_reason` says this machine needs it, else ``None``: what
    a launcher of trainer processes puts in their ``LD_PRELOAD`` (with :func:`preload_env`).

    Raises:
        CPUBlasError: it is needed but cannot be built.
    """
    return build_shim() if slow_mkl_reason() is not None else None


def preload_env(env: dict[str, str], path: str | os.PathLike[str] | None) -> dict[str, str]:
    """A copy of the environment ``env`` with ``path`` appended to its ``LD_PRELOAD`` (``env`` itself if ``None``).

    Examples:
        >>> preload_env({"LD_PRELOAD": "/a.so"}, "/b.so")["LD_PRELOAD"]
        '/a.so:/b.so'
    """
    if path is None:
        return env
    return {**env, "LD_PRELOAD": ":".join(filter(None, [env.get("LD_PRELOAD"), str(path)]))}


def main(argv: list[str] | None = None) -> int:
    """``python tools/mkl_shim.py``: print the shim's path (building it); ``--status``: whether needed."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--status"]:
        reason = slow_mkl_reason()
        if shim_loaded():
            print("the MKL shim is loaded: torch's matmuls take MKL's AVX-512 kernels")
        else:
            print(reason or "not needed here: torch's matmuls already take the best kernels MKL has for this CPU")
        return 0
    if argv:
        print(f"usage: python tools/mkl_shim.py [--status]; got {' '.join(argv)!r}", file=sys.stderr)
        return 2
    try:
        print(build_shim())
    except CPUBlasError as e:
        print(f"mkl_shim: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

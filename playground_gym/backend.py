"""Backend setup: JAX memory behaviour, the persistent compilation cache, devices, quiet stderr.

This module is imported first by :mod:`playground_gym`, before anything imports JAX, so that the
environment variables JAX reads when it initialises its backend are in place. Every variable is only
*defaulted*: a value the user already exported wins.

Examples:
    >>> from playground_gym import backend
    >>> backend.resolve_device("cpu").platform
    'cpu'
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "cache_subdir",
    "configure_jax_environment",
    "enable_compilation_cache",
    "enable_inductor_cache",
    "pin_jax_cpu",
    "resolve_device",
    "torch_device_of",
    "silence_stderr",
]

# JAX otherwise grabs 75% of GPU memory at its first operation, leaving torch (policy, optimiser,
# rollout storage) to fight over the rest. Growing on demand shares the GPU with torch.
_JAX_ENV_DEFAULTS = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}

_CACHE_OPT_OUT = "PLAYGROUND_GYM_COMPILATION_CACHE"
_CACHE_DIR_VAR = "PLAYGROUND_GYM_CACHE_DIR"
_PIN_OPT_OUT = "PLAYGROUND_GYM_PIN_JAX_CPU"


def configure_jax_environment() -> None:
    """Default the environment variables read when JAX initialises its backend and MuJoCo its GL.

    ``XLA_PYTHON_CLIENT_PREALLOCATE=false``, and ``MUJOCO_GL=egl`` on a machine without a display where an EGL
    library loads (where none does, MuJoCo's ``import mujoco``, which loads its GL backend, would fail on
    ``MUJOCO_GL=egl``: MUJOCO_GL is then left unset and rendering says what is missing when asked for).
    Called on ``import playground_gym``. Has no effect on a variable the user already set, nor on a
    JAX backend that was already initialised before ``playground_gym`` was imported.
    """
    for name, value in _JAX_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and "MUJOCO_GL" not in os.environ \
            and _egl_loads():
        # MuJoCo's default GL backend (GLFW) needs a display; EGL renders headless (CPU via Mesa, or GPU).
        os.environ["MUJOCO_GL"] = "egl"


def _egl_loads() -> bool:
    """Whether an EGL library can be loaded (PyOpenGL's EGL bindings need one)."""
    import ctypes
    import ctypes.util

    for name in dict.fromkeys(filter(None, (ctypes.util.find_library("EGL"), "libEGL.so.1", "libEGL.so"))):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def _opted_out(variable: str) -> bool:
    """Whether an on-by-default feature's environment variable turns it off (0, false, off, no)."""
    return os.environ.get(variable, "1").strip().lower() in {"0", "false", "off", "no"}


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "playground_gym" / "jax_cache"


def cache_subdir(name: str) -> Path:
    """The folder ``name`` next to JAX's default cache: ``$PLAYGROUND_GYM_CACHE_DIR/<name>`` where that is set, else
    ``$XDG_CACHE_HOME/playground_gym/<name>`` (inductor's cache, the MKL shim)."""
    base = os.environ.get(_CACHE_DIR_VAR)
    return Path(base).expanduser() / name if base else _default_cache_dir().parent / name


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache so a second process skips the env's JIT compile.

    On by default (called on import) in ``$XDG_CACHE_HOME/playground_gym/jax_cache``. Opt out with
    ``PLAYGROUND_GYM_COMPILATION_CACHE=0``; choose the folder with ``PLAYGROUND_GYM_CACHE_DIR``. A cache
    directory the user configured for JAX (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept.

    Returns:
        The cache directory in use, or ``None`` when the cache is disabled.
    """
    import jax

    if _opted_out(_CACHE_OPT_OUT):
        return None
    configured = jax.config.jax_compilation_cache_dir
    if configured and path is None:
        return Path(configured)
    target = Path(path or os.environ.get(_CACHE_DIR_VAR) or _default_cache_dir()).expanduser()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a read-only home must not break the import
        warnings.warn(f"playground_gym: compilation cache disabled, cannot create {target}: {err}", stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(target))
    # The env step compiles in seconds; small helper functions are not worth a disk round trip.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return target


def enable_inductor_cache() -> Path | None:
    """Keep torch inductor's caches (FX graph and AOTAutograd: ``--compile``'s compiled code) next to JAX's cache.

    Inductor caches by default in ``/tmp/torchinductor_<user>``, which a reboot or a fresh container empties; this
    defaults ``TORCHINDUCTOR_CACHE_DIR`` to ``$XDG_CACHE_HOME/playground_gym/inductor`` (or, with
    ``PLAYGROUND_GYM_CACHE_DIR``, its ``inductor`` subfolder). A value the user set wins; the opt-out of the
    compilation cache turns this off too. Returns the folder set, or ``None``.
    """
    if _opted_out(_CACHE_OPT_OUT) or "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return None
    target = cache_subdir("inductor")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(target)
    return target


def _jax_gpu_plugin_installed() -> bool:
    import importlib.util
    import pkgutil

    if any(importlib.util.find_spec(name) is not None for name in ("jax_cuda12_plugin", "jax_cuda13_plugin")):
        return True
    try:
        import jax_plugins  # namespace package of JAX's PJRT plugins (CUDA, ROCm)
    except ImportError:
        return False
    return any("cuda" in m.name or "rocm" in m.name for m in pkgutil.iter_modules(jax_plugins.__path__))


def pin_jax_cpu(device: Any = None, torch_threads: int | None = None) -> int | None:
    """On a CPU run, give JAX's env steps one core and leave torch every core: call once, before JAX starts.

    JAX's CPU client sizes its thread pools from the CPU affinity of the thread that creates it. A jitted
    env step of a few hundred small kernels then spends more time handing work between those threads,
    across cores, than computing (on the 2-core VMs here: 64 CartpoleBalance envs stepped in ~0.3 ms inside a
    ``lax.scan`` but ~0.65-0.95 ms per call). This function

    1. sets torch's CPU threads (``torch_threads``, if given) and starts torch's OpenMP workers while the
       calling thread may still use every CPU, so they keep every CPU for SGD;
    2. creates JAX's CPU client while the calling thread is pinned to one CPU (its pools then have one
       thread, on that CPU), with synchronous CPU dispatch (a step runs on the calling thread);
    3. leaves the calling thread on that CPU, so an env step never wakes a thread on another core.

    Threads the calling thread creates afterwards inherit the one-CPU affinity. Does nothing (returns
    ``None``) when the run is not on the CPU (``device`` other than ``None``/``"cpu"``, or ``None`` with a
    JAX GPU plugin installed), on platforms without ``os.sched_setaffinity``, or when the process may
    use only one CPU anyway, when JAX's backend is already initialised (its pools exist), and when
    ``PLAYGROUND_GYM_PIN_JAX_CPU=0`` (e.g. several runs sharing a machine, which would all pick the same CPU).

    Args:
        device: the run's device spec, as given to :class:`~playground_gym.PlaygroundVectorEnv`.
        torch_threads: torch's intra-op threads (``None``: torch's default, every CPU).

    Returns:
        The CPU the calling thread and JAX's threads now run on, or ``None`` when nothing was changed.

    Examples:
        >>> from playground_gym import backend
        >>> backend.pin_jax_cpu(device="cuda") is None  # not a CPU run: nothing to do
        True
    """
    if torch_threads is not None and (isinstance(torch_threads, bool) or not isinstance(torch_threads, int)
                                      or torch_threads < 1):
        raise ValueError(f"torch_threads: expected None or an int >= 1; got {torch_threads!r}")
    spec = device.type if type(device).__module__.startswith("torch") else device
    spec = spec.strip().lower() if isinstance(spec, str) else spec
    on_cpu = spec == "cpu" or getattr(device, "platform", None) == "cpu" or (
        device is None and not _jax_gpu_plugin_installed())
    if _opted_out(_PIN_OPT_OUT) or not on_cpu or not hasattr(os, "sched_setaffinity"):
        return None
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    import jax
    import torch

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    warm = torch.ones(256, 256)
    (warm @ warm).sum()  # a parallel region: OpenMP (torch, MKL, oneDNN) creates its workers now, unpinned
    cpu = allowed[0]
    os.sched_setaffinity(0, {cpu})
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    jax.devices("cpu")  # creates the CPU client, and its thread pools, under the one-CPU affinity
    return cpu


def _jax_gpus() -> list[Any]:
    import jax

    try:
        return list(jax.devices("gpu"))
    except RuntimeError:  # no GPU backend in this jaxlib build
        return []


def _no_gpu_message(requested: str) -> str:
    import jax

    msg = (
        f"device={requested!r} was requested but JAX has no GPU backend "
        f"(jax {jax.__version__}, default backend {jax.default_backend()!r})."
    )
    try:
        import torch

        torch_cuda = torch.cuda.is_available()
    except Exception:  # torch import problems are not this function's business
        torch_cuda = False
    if torch_cuda:
        msg += (
            " torch sees CUDA but JAX does not: install a CUDA build of JAX that matches torch's CUDA"
            " (pip install 'playground_gym[cuda]'); a cuDNN/CUDA version mismatch between torch and jax"
            " makes JAX fall back to CPU."
        )
    else:
        msg += " Neither torch nor JAX sees a GPU; use device='cpu' (or None for the best available)."
    return msg


def resolve_device(device: Any = None) -> Any:
    """Map a user's device spec to a ``jax.Device``, never falling back silently.

    Args:
        device: ``None`` (JAX's GPU if it has one, else CPU), ``"cpu"``, ``"cuda"``/``"gpu"``,
            ``"cuda:N"``, a ``torch.device`` or a ``jax.Device``.

    Raises:
        ValueError: a GPU was asked for and JAX has none (the message names the likely cause), or the
            index is out of range, or the spec is not understood.
        TypeError: the spec is of an unsupported type.
    """
    import jax

    if device is None:
        gpus = _jax_gpus()
        return gpus[0] if gpus else jax.devices("cpu")[0]
    if isinstance(device, jax.Device):
        return device
    spec: str
    if isinstance(device, str):
        spec = device.strip().lower()
    elif type(device).__name__ == "device" and type(device).__module__.startswith("torch"):
        spec = str(device)
    else:
        raise TypeError(
            f"device: expected None, a str like 'cpu'/'cuda:0', a torch.device or a jax.Device; "
            f"got {type(device).__name__} {device!r}"
        )
    kind, _, index_text = spec.partition(":")
    if index_text and not index_text.isdigit():
        raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N' with N an integer; got {device!r}")
    index = int(index_text) if index_text else 0
    if kind == "cpu":
        cpus = jax.devices("cpu")
        if index >= len(cpus):
            raise ValueError(f"device: {device!r} asked for CPU device {index} but JAX has {len(cpus)} (use 'cpu')")
        return cpus[index]
    if kind in {"cuda", "gpu"}:
        gpus = _jax_gpus()
        if not gpus:
            raise ValueError(_no_gpu_message(str(device)))
        if index >= len(gpus):
            raise ValueError(f"device: {device!r} asked for GPU {index} but JAX sees {len(gpus)} GPU(s)")
        return gpus[index]
    raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N'; got {device!r}")


def torch_device_of(jax_device: Any) -> Any:
    """The ``torch.device`` that DLPack maps a JAX device's buffers to."""
    import torch

    if jax_device.platform == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", jax_device.local_hardware_id or 0)


@contextlib.contextmanager
def silence_stderr(enabled: bool = True) -> Iterator[None]:
    """Temporarily send file descriptor 2 (C/C++ and Python stderr) and Python warnings to /dev/null.

    MuJoCo, Warp and XLA write compile-time chatter straight to fd 2, which ``contextlib.redirect_stderr``
    cannot catch. The original descriptor is restored on exit, also when the body raises, so the
    process's stderr is never redirected for good.

    Examples:
        >>> with silence_stderr():
        ...     print("hidden", file=sys.stderr)
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved_fd = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with warnings.catch_warnings(), open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        os.close(devnull)

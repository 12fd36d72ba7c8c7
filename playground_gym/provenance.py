"""Where cached artefacts live and what they were made from: the cache folder, package versions, source digests.

The trace cache (:mod:`playground_gym.trace_cache`) and the snapshot of ids and official settings
(:mod:`playground_gym.configs`) key their files by these, so that no process is served an artefact built by other
code. This module is at the bottom of the package's imports: it imports no other ``playground_gym`` module.

Examples:
    >>> from playground_gym import provenance
    >>> provenance.version_of("no-such-distribution") is None
    True
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
from pathlib import Path
from typing import Any

import jax

__all__ = ["cache_dir", "code_identity", "jax_settings", "playground_digest", "source_digest", "version_of"]

_OPT_OUT = "PLAYGROUND_GYM_TRACE_CACHE"


def cache_dir() -> Path | None:
    """The folder of the trace cache: ``playground_gym_traces`` inside JAX's compilation cache folder.

    ``None`` when the compilation cache is off (a trace-cache hit would then still compile for seconds), when
    ``PLAYGROUND_GYM_TRACE_CACHE=0``, or when ``flatbuffers`` (which ``jax.export`` serialises with) is missing.
    """
    if os.environ.get(_OPT_OUT, "1").strip().lower() in {"0", "false", "off", "no"}:
        return None
    compile_dir = jax.config.jax_compilation_cache_dir
    if not compile_dir:
        return None
    try:
        import flatbuffers  # noqa: F401
    except ImportError:
        return None
    return Path(compile_dir) / "playground_gym_traces"


def version_of(package: str) -> str | None:
    """The installed version of a distribution, or ``None``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def source_digest() -> str:
    """This package's own source: an edited checkout must not load programs traced by other code."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def jax_settings() -> dict[str, Any]:
    """The JAX settings an env's traced program depends on (random bits, matmul precision, 64-bit types)."""
    return {"x64": bool(jax.config.jax_enable_x64),
            "threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
            "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
            "default_prng_impl": str(jax.config.jax_default_prng_impl)}


@functools.cache
def playground_digest() -> str:
    """Names, sizes and modification and change times of the files of the ``mujoco_playground`` package that Python
    imports (found without importing it; symlinked folders followed), ``external_deps`` (Menagerie, keyed
    separately), ``__pycache__`` and ``.git`` left out: an installed release and a source checkout, edited or not,
    copied with its times kept or not (the change time cannot be kept), get different digests although both say
    ``0.2.0``."""
    import importlib.util

    spec = importlib.util.find_spec("mujoco_playground")
    if spec is None or not spec.submodule_search_locations:
        return "missing"
    digest = hashlib.sha256()
    for location in spec.submodule_search_locations:
        root = Path(location)
        digest.update(str(root.resolve()).encode() + b"\n")
        files = []
        for folder, subfolders, names in os.walk(root, followlinks=True):
            here = Path(folder)
            subfolders[:] = [d for d in subfolders if d not in ("__pycache__", ".git")
                             and not (here == root and d == "external_deps")]  # pruned: never walked
            files += [here / name for name in names]
        for path in sorted(files):
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\n"
                          .encode())
    return digest.hexdigest()[:16]


def code_identity(script: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What code produced a result: this package's :func:`source_digest`, the SHA-256 (16 hex digits) of the trainer
    file ``script`` (``None`` if not given or unreadable) and the versions of the libraries it ran on. ``summary.json``
    records it; a benchmark report flags rows whose runs differ in it (settings digests do not cover code)."""
    trainer = None
    if script is not None:
        try:
            trainer = hashlib.sha256(Path(script).read_bytes()).hexdigest()[:16]
        except OSError:
            trainer = None
    return {"playground_gym_source": source_digest(), "trainer_sha256": trainer,
            **{name: version_of(name) for name in ("playground", "mujoco", "mujoco-mjx", "jax", "torch", "brax")}}

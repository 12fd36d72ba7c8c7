"""The trace cache: an env's batched programs saved with ``jax.export``, so a second process skips loading and tracing.

JAX's persistent compilation cache (:func:`playground_gym.backend.enable_compilation_cache`) only skips XLA's
compile: every new process still loads the model and traces MJX's reset and step, which costs seconds. Here the
traced programs (StableHLO, via :func:`jax.export.export`) are written next to the compilation cache, keyed by
everything that changes them (:func:`program_key`): env id, config overrides, num_envs, episode settings, device
kind, the JAX settings baked in at trace time (x64, ``jax_threefry_partitionable``,
``jax_default_matmul_precision``), the versions of jax/jaxlib/mujoco/mujoco-mjx/playground/warp-lang, the files of
the MuJoCo Playground package actually imported (a source checkout edited in place keeps its version string),
this package's own source, and for Menagerie robots their files.
A later process with the same key deserialises them instead: no model load, no trace, and the compilation
cache then holds the executable, because the cold process ran the very same deserialised programs.

An entry is never trusted blindly: its stored key must equal the wanted one, a SHA-256 covers its header and
payload, and the deserialised programs' shapes must fit the settings and the header's observation and action sizes; anything else is reported (a warning naming the file
and the reason) and the entry rebuilt. On by default with the compilation cache; opt out with
``PLAYGROUND_GYM_TRACE_CACHE=0``.

Examples:
    >>> import playground_gym
    >>> from playground_gym import trace_cache
    >>> envs = playground_gym.make_vec("CartpoleBalance", 4, device="cpu")
    >>> envs.programs_source in ("traced", "trace cache", "traced (trace cache off)")
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from playground_gym import autoreset, menagerie, provenance
from playground_gym.configs import suite_of
from playground_gym.loading import find_menagerie

__all__ = ["EnvPrograms", "export_platform", "export_programs", "load_programs", "program_key", "save_programs"]
_MAGIC = b"playground_gym trace cache\n"
FORMAT = 2
_PROGRAMS = ("reset", "step", "elapsed", "set_elapsed")


class EnvPrograms(NamedTuple):
    """An env's batched functions (see :func:`playground_gym.autoreset.make_vector_functions`) as exported programs.

    ``reset``/``step``/``elapsed``/``set_elapsed`` are ``jax.export.Exported``; call them through ``.call``
    inside ``jax.jit``. ``meta`` holds what the vector env needs without loading the model: ``action_size``
    and ``obs_shapes`` (the raw env's observation shape, or a dict of them).
    """

    reset: Any
    step: Any
    elapsed: Any
    set_elapsed: Any
    meta: dict[str, Any]

    def calls(self) -> dict[str, Any]:
        """The four programs as functions to wrap in ``jax.jit`` (each ``Exported.call``), by name."""
        return {name: getattr(self, name).call for name in _PROGRAMS}

    def layout(self) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, Any] | None]:
        """Shapes and dtype names of the packed carry and replay cache, as ``VectorFunctions.layout`` gives them."""
        carry, first, _ = jax.tree.unflatten(self.reset.out_tree, self.reset.out_avals)
        shapes = lambda tree: {k: (tuple(v.shape), jnp.dtype(v.dtype).name) for k, v in tree.items()}  # noqa: E731
        return shapes(carry), None if first is None else shapes(first)


def _menagerie_digest(env_id: str) -> dict[str, Any] | None:
    """Path, names, sizes and modification times of the Menagerie files an env loads (``None`` for DM Control)."""
    if suite_of(env_id) == "dm_control_suite":
        return None
    root, _ = find_menagerie()
    if root is None:
        return {"path": None}
    digest = hashlib.sha256()
    for robot in menagerie.robots_of(env_id):
        for path in sorted((root / robot).rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return {"path": str(root), "files": digest.hexdigest()[:16]}


def program_key(settings: Mapping[str, Any], jax_device: Any) -> dict[str, Any]:
    """Everything that changes an env's traced programs, as plain JSON data.

    Args:
        settings: the vector env's settings (``env_id``, ``num_envs``, ``impl``, ``episode`` as a dict,
            ``config_overrides`` as plain data).
        jax_device: the device the programs run on (its platform and kind are part of the key).
    """
    return {
        "format": FORMAT,
        "settings": json.loads(json.dumps(dict(settings), sort_keys=True)),
        "platform": export_platform(jax_device),
        "device_kind": jax_device.device_kind,
        "jax_settings": provenance.jax_settings(),
        "fuse_limit": autoreset.FUSE_LIMIT,  # the carry's layout (fused per dtype or leaf by leaf) follows from it
        "versions": {name: provenance.version_of(name)
                     for name in ("jax", "jaxlib", "mujoco", "mujoco-mjx", "playground", "warp-lang")},
        "playground_files": provenance.playground_digest(),
        "playground_gym_source": provenance.source_digest(),
        "menagerie": _menagerie_digest(settings["env_id"]),
    }


def export_platform(jax_device: Any) -> str:
    """The platform name ``jax.export`` lowers for on ``jax_device``: ``"cuda"`` or ``"rocm"`` for a GPU (whose
    ``Device.platform`` is ``"gpu"``, a name exported programs refuse to run under), else the device's platform."""
    if jax_device.platform != "gpu":
        return jax_device.platform
    version = str(getattr(jax_device.client, "platform_version", "")).lower()
    return "rocm" if "rocm" in version or "hip" in version else "cuda"


def _entry_path(key: Mapping[str, Any]) -> Path | None:
    folder = provenance.cache_dir()
    if folder is None:
        return None
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return folder / f"{key['settings']['env_id']}-{name}.bin"


def export_programs(fns: Any, num_envs: int, action_size: int, obs_shapes: Any, platform: str) -> EnvPrograms:
    """Trace and export an env's batched functions (a ``VectorFunctions``) for ``num_envs`` envs on ``platform``."""
    n = num_envs
    spec = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)  # noqa: E731
    exporter = lambda fn: jax.export.export(jax.jit(fn), platforms=(platform,))  # noqa: E731
    reset = exporter(fns.reset)(jax.ShapeDtypeStruct((n, 2), jnp.uint32))
    carry, first, _ = spec(jax.tree.unflatten(reset.out_tree, reset.out_avals))
    step = exporter(fns.step)(carry, first, jax.ShapeDtypeStruct((n, action_size), jnp.float32))
    elapsed = exporter(fns.elapsed)(carry)
    set_elapsed = exporter(fns.set_elapsed)(carry, jax.ShapeDtypeStruct((n,), jnp.int32))
    return EnvPrograms(reset, step, elapsed, set_elapsed, {"action_size": int(action_size), "obs_shapes": obs_shapes})


def save_programs(key: Mapping[str, Any], programs: EnvPrograms) -> Path | None:
    """Write ``programs`` under ``key`` (atomically: a reader sees the old entry or the new one, never half)."""
    path = _entry_path(key)
    if path is None:
        return None
    blobs = [bytes(getattr(programs, name).serialize()) for name in _PROGRAMS]
    payload = b"".join(blobs)
    body = {"key": key, "meta": programs.meta, "sizes": [len(b) for b in blobs]}
    header = json.dumps({**body, "sha256": _checksum(body, payload)}, sort_keys=True).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as tmp:
            tmp.write(_MAGIC + struct.pack("<Q", len(header)) + header + payload)
        os.replace(tmp.name, path)
    except OSError as err:  # a full or read-only disk costs the next process its speed-up, nothing else
        warnings.warn(f"playground_gym: could not write the trace cache entry {path}: {err}", stacklevel=3)
        return None
    return path


def _checksum(body: Mapping[str, Any], payload: bytes) -> str:
    """SHA-256 of a header's fields (but the checksum itself, in their canonical JSON form) and the payload."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode() + b"\0" + payload).hexdigest()


def _check_programs(programs: EnvPrograms, key: Mapping[str, Any]) -> None:
    """Raise ValueError unless the programs take and return what these settings need."""
    n = key["settings"]["num_envs"]
    action_size = programs.meta["action_size"]
    if any(key["platform"] not in getattr(programs, name).platforms for name in _PROGRAMS):
        raise ValueError(f"programs not exported for {key['platform']}")
    (keys,) = programs.reset.in_avals
    if keys.shape != (n, 2) or keys.dtype != jnp.uint32:
        raise ValueError(f"reset takes {keys}, expected uint32[{n},2]")
    carry, first, _ = jax.tree.unflatten(programs.reset.out_tree, programs.reset.out_avals)
    want = jax.tree.structure(((carry, first, 0), {}))
    if programs.step.in_tree != want:
        raise ValueError("step's arguments do not have the structure reset returns")
    *carry_in, actions = programs.step.in_avals
    if actions.shape != (n, action_size) or [a.shape for a in carry_in] != [a.shape for a in jax.tree.leaves((carry, first))]:
        raise ValueError("step's argument shapes do not fit reset's outputs")
    obs_shapes, obs_key = programs.meta["obs_shapes"], key["settings"]["episode"]["obs_key"]
    want_obs = tuple(obs_shapes[obs_key] if isinstance(obs_shapes, Mapping) else obs_shapes)
    *_, out = jax.tree.unflatten(programs.reset.out_tree, programs.reset.out_avals)
    if tuple(out["obs"].shape) != (n, *want_obs):
        raise ValueError(f"reset returns observations {tuple(out['obs'].shape)}, the header says {(n, *want_obs)}")


def load_programs(key: Mapping[str, Any]) -> EnvPrograms | None:
    """The programs saved under ``key``, or ``None`` on a miss or an unusable entry (then warned about and removed)."""
    path = _entry_path(key)
    if path is None or not path.is_file():
        return None
    try:
        data = path.read_bytes()
        if not data.startswith(_MAGIC):
            raise ValueError("not a trace cache file")
        start = len(_MAGIC) + 8
        (header_size,) = struct.unpack("<Q", data[len(_MAGIC):start])
        header = json.loads(data[start:start + header_size])
        payload = data[start + header_size:]
        if header.get("key") != json.loads(json.dumps(key, sort_keys=True)):
            raise ValueError("saved for other settings or versions")
        checksum = header.pop("sha256", None)
        if checksum != _checksum(header, payload) or sum(header["sizes"]) != len(payload):
            raise ValueError("header and payload do not match their checksum (edited, truncated or corrupt)")
        blobs, offset = [], 0
        for size in header["sizes"]:
            blobs.append(bytearray(payload[offset:offset + size]))
            offset += size
        programs = EnvPrograms(*(jax.export.deserialize(b) for b in blobs), meta=header["meta"])
        _check_programs(programs, key)
    except Exception as err:  # noqa: BLE001 -- whatever is wrong with the file, it is rebuilt, never used
        warnings.warn(f"playground_gym: trace cache entry {path} is unusable ({type(err).__name__}: {err}); "
                      "tracing the env anew and replacing it", stacklevel=3)
        try:
            path.unlink()
        except OSError:
            pass
        return None
    return programs


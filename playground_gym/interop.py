"""Moving arrays between the caller's framework and JAX: validation in, DLPack out.

Actions come in as torch tensors (any device), numpy arrays, JAX arrays or nested sequences; they are
checked on metadata only (shape, dtype: no device sync) and handed to JAX without a copy where the
device allows. Results go out as torch tensors via ``torch.from_dlpack`` (zero-copy, same device), JAX
arrays, or numpy copies.

Examples:
    >>> import numpy as np, jax
    >>> from playground_gym.interop import actions_to_jax
    >>> actions_to_jax(np.zeros((4, 2)), (4, 2), jax.devices("cpu")[0]).dtype
    dtype('float32')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ARRAY_TYPES", "actions_to_jax", "export", "export_packed", "check_array_type"]

ARRAY_TYPES = ("torch", "jax", "numpy")


def check_array_type(array_type: Any) -> str:
    if array_type not in ARRAY_TYPES:
        raise ValueError(f"array_type: expected one of {list(ARRAY_TYPES)}; got {array_type!r}")
    return array_type


def _check(shape: tuple[int, ...], dtype_kind: str, dtype: Any, expected: tuple[int, ...]) -> None:
    if dtype_kind not in "fiu":
        raise TypeError(f"actions: expected a real numeric (float or int) array; got dtype {dtype}")
    if tuple(shape) != tuple(expected):
        raise ValueError(f"actions: expected shape {tuple(expected)} (num_envs, act_dim); got {tuple(shape)}")


_F32_MAX = float(np.finfo(np.float32).max)


def _torch_to_jax(actions: Any, expected: tuple[int, ...], device: Any, copy: bool) -> Any:
    import torch

    kind = "b" if actions.dtype == torch.bool else ("c" if actions.is_complex() else
                                                     ("f" if actions.is_floating_point() else "i"))
    _check(tuple(actions.shape), kind, actions.dtype, expected)
    target = torch.device("cpu") if device.platform == "cpu" else torch.device("cuda", device.local_hardware_id or 0)
    actions = actions.detach()
    if actions.dtype == torch.float64:  # a finite 1e300 must act as 1.0, not become float32 inf (a NaN reset)
        huge = torch.isfinite(actions) & (actions.abs() > _F32_MAX)
        actions = torch.where(huge, actions.clamp(-1.0, 1.0), actions)
    # A dense float32 tensor on the env's device; .to() and .contiguous() are no-ops when it already is one,
    # so the common path copies nothing (but where the step must own its input: copy).
    converted = actions.to(device=target, dtype=torch.float32).contiguous()
    actions = converted.clone() if copy and converted.data_ptr() == actions.data_ptr() else converted
    if device.platform == "cpu":
        # A numpy view of the tensor's memory: the jitted step takes host arrays in its C++ fast path
        # (aliasing, not copying, on CPU), far cheaper per step than a DLPack import or a device_put.
        return actions.numpy()
    return jax.device_put(jax.dlpack.from_dlpack(actions), device)  # DLPack syncs torch's stream with JAX's


def actions_to_jax(actions: Any, expected: tuple[int, ...], device: Any, copy: bool = False) -> Any:
    """Validate an action batch and return float32 data for the jitted step on ``device``.

    No copy where the data already is dense float32: host data bound for a CPU device stays a numpy
    array (a view of a CPU tensor's memory), which the jitted call takes in its C++ fast path; a CUDA
    tensor arrives through DLPack; a JAX array on ``device`` is passed as is. The step runs after this returns
    (JAX dispatches asynchronously), so a caller that can write into its buffer before the step has read it
    passes ``copy=True``: mutable torch and numpy inputs are then copied (JAX arrays are immutable). Float64
    values beyond float32's range are clipped to [-1, 1] first (they would become ``inf``); NaN and inf stay.

    Raises:
        TypeError: not an array, or not real numeric (bool, complex, strings, objects).
        ValueError: wrong shape; the message names expected and received shapes.
    """
    module = type(actions).__module__
    if module.startswith("torch"):
        return _torch_to_jax(actions, expected, device, copy)
    if isinstance(actions, jax.Array):
        _check(actions.shape, actions.dtype.kind, actions.dtype, expected)
        if actions.dtype == jnp.float64:
            huge = jnp.isfinite(actions) & (jnp.abs(actions) > _F32_MAX)
            actions = jnp.where(huge, jnp.clip(actions, -1.0, 1.0), actions)
        if actions.dtype != jnp.float32:
            actions = actions.astype(jnp.float32)
        return actions if actions.devices() == {device} else jax.device_put(actions, device)
    if isinstance(actions, (str, bytes, Mapping)) or actions is None:
        raise TypeError(f"actions: expected a torch tensor, numpy or JAX array; got {type(actions).__name__}")
    try:
        host = np.asarray(actions)
    except (ValueError, TypeError) as err:
        raise TypeError(f"actions: expected an array of shape {tuple(expected)}; got an unconvertible "
                        f"{type(actions).__name__}: {err}") from err
    _check(host.shape, host.dtype.kind, host.dtype, expected)
    if host.dtype == np.float64:
        huge = np.isfinite(host) & (np.abs(host) > _F32_MAX)
        host = np.where(huge, np.clip(host, -1.0, 1.0), host)
    host = np.array(host, dtype=np.float32, order="C") if copy else np.ascontiguousarray(host, dtype=np.float32)
    return host if device.platform == "cpu" else jax.device_put(host, device)


def export(tree: Any, array_type: str) -> Any:
    """Convert a pytree of JAX arrays to the caller's array type (dicts stay dicts).

    In torch mode on CPU, DLPack hands over the buffer only once the computation that writes it has
    finished (torch CPU tensors have no stream to wait on), so exporting a step's results waits for
    that step. On CUDA, torch passes its stream and JAX makes it wait on the device: no host sync.
    """
    if array_type == "jax":
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    if array_type == "torch":
        import torch

        convert = torch.from_dlpack
    else:
        convert = np.array  # a copy: host arrays the caller (or a gymnasium wrapper) may write into
    exported: dict[int, Any] = {}  # one export per distinct array (the done mask appears under several keys)
    for x in leaves:
        if id(x) not in exported:
            exported[id(x)] = convert(x)
    return jax.tree.unflatten(treedef, [exported[id(x)] for x in leaves])


def export_packed(packed: Any, packer: Any, array_type: str) -> Any:
    """Rebuild the pytree a :class:`~playground_gym.autoreset.BytePacker` packed, as ``array_type`` arrays.

    The byte buffer is exported once (torch: one DLPack import, zero-copy; numpy: one copy) and every leaf
    is a typed view into it, so each leaf is contiguous and its own memory region: writing into one never
    changes another. ``"jax"`` is not supported here: slicing JAX arrays outside ``jit`` costs a dispatch
    per leaf; keep the unpacked outputs for JAX callers.

    Examples:
        >>> import jax.numpy as jnp
        >>> from playground_gym.autoreset import BytePacker
        >>> tree = {"obs": jnp.ones((2, 3)), "done": jnp.array([True, False])}
        >>> packer = BytePacker(tree)
        >>> out = export_packed(packer.pack(tree), packer, "torch")
        >>> out["done"], out["obs"].shape
        (tensor([ True, False]), torch.Size([2, 3]))
    """
    if array_type == "torch":
        import torch

        buffer = torch.from_dlpack(packed)
        typed = lambda start, stop, dtype: buffer[start:stop].view(_torch_dtype(dtype))  # noqa: E731
    elif array_type == "numpy":
        buffer = np.array(packed)  # a copy: host arrays the caller (or a gymnasium wrapper) may write into
        typed = lambda start, stop, dtype: buffer[start:stop].view(dtype)  # noqa: E731
    else:
        raise ValueError(f"array_type: expected 'torch' or 'numpy' for packed outputs; got {array_type!r}")
    leaves: list[Any] = [None] * len(packer.spans)
    # one typed view and one split per dtype: each array op here costs microseconds, and this runs every step
    for start, stop, dtype, members in packer.groups:
        view = typed(start, stop, dtype)
        pieces = view.split_with_sizes([size for _, size, _ in members]) if array_type == "torch" else \
            np.split(view, np.cumsum([size for _, size, _ in members[:-1]]))
        for (i, _, shape), piece in zip(members, pieces):
            leaves[i] = piece if len(shape) == 1 else piece.reshape(shape)
    return jax.tree.unflatten(packer.treedef, leaves)


_TORCH_DTYPES: dict[np.dtype, Any] = {}


def _torch_dtype(dtype: np.dtype) -> Any:
    if dtype not in _TORCH_DTYPES:
        import torch

        _TORCH_DTYPES[dtype] = torch.from_numpy(np.empty(0, dtype)).dtype
    return _TORCH_DTYPES[dtype]

"""Domain randomisation: a model per env, drawn by a Playground-style randomiser, carried as data.

Playground's randomisers (``registry.get_domain_randomizer(env_id)``) take the env's ``mjx.Model`` and a batch of keys
and return ``(batched model, in_axes)``: the fields they randomise get a leading ``num_envs`` axis (``in_axes`` 0),
the others stay shared (``None``). Here only the randomised fields are kept, as a dict from the field's path in the
model (``jax.tree_util.keystr``, e.g. ``".geom_friction"``) to its batched array, so they can travel in the vector
env's carry (saved by ``state_dict``, never baked into the compiled program) and be redrawn per env.

Examples:
    >>> import jax
    >>> from playground_gym import randomization
    >>> def heavier(model, keys):  # a user randomiser with upstream's signature
    ...     scale = jax.vmap(lambda k: jax.random.uniform(k, (), minval=0.9, maxval=1.1))(keys)
    ...     batched = model.tree_replace({"body_mass": scale[:, None] * model.body_mass})
    ...     in_axes = jax.tree.map(lambda _: None, model).tree_replace({"body_mass": 0})
    ...     return batched, in_axes
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

__all__ = ["Randomizer", "describe", "draw", "official_randomizer", "using_model", "with_fields"]

Randomizer = Callable[[Any, jax.Array], tuple[Any, Any]]


def official_randomizer(env_id: str) -> Randomizer | None:
    """Playground's own randomiser for ``env_id`` (what ``registry.get_domain_randomizer`` returns, without its print
    for the envs that have none), or ``None``."""
    from mujoco_playground._src import locomotion, manipulation

    for suite in (locomotion, manipulation):
        if env_id in suite.ALL_ENVS:
            return suite._randomizer.get(env_id)
    return None


def _path_of(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path)


def draw(randomizer: Randomizer, model: Any, keys: jax.Array) -> dict[str, jax.Array]:
    """The randomised fields of ``randomizer(model, keys)``: ``{path: array with a leading len(keys) axis}``.

    Raises:
        TypeError: the randomiser did not return ``(model, in_axes)``.
        ValueError: an axis other than 0 or ``None`` (or one axis for the whole model), a batched field of the wrong
            size, shape or kind of dtype, a field changed but marked ``None`` (it would be silently dropped), a model
            of another structure, or no field randomised at all.
    """
    result = randomizer(model, keys)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"domain randomiser: expected (batched mjx.Model, in_axes); got {type(result).__name__}")
    batched, in_axes = result
    if not isinstance(in_axes, type(model)):
        raise ValueError(f"domain randomiser: in_axes expected a {type(model).__name__} of 0 (randomised) and None "
                         f"(shared) per field, as Playground's randomisers give; got {type(in_axes).__name__}")
    axes = {_path_of(p): a for p, a in jax.tree_util.tree_flatten_with_path(in_axes)[0]}
    bad = {p: a for p, a in axes.items() if a != 0}
    if bad:
        raise ValueError(f"domain randomiser: in_axes expected 0 (randomised) or None (shared); got {bad}")
    if jax.tree.structure(batched) != jax.tree.structure(model):
        raise ValueError("domain randomiser: the returned model's structure differs from the env's model")
    leaves = {_path_of(p): x for p, x in jax.tree_util.tree_flatten_with_path(batched)[0]}
    base = {_path_of(p): x for p, x in jax.tree_util.tree_flatten_with_path(model)[0]}
    for path, value in leaves.items():  # a shared field must come back as it was: its change would be dropped here
        if path not in axes and value is not base[path] and (
                isinstance(value, jax.core.Tracer) or not np.array_equal(np.asarray(value), np.asarray(base[path]))):
            raise ValueError(f"domain randomiser: {path} was changed but in_axes marks it None (shared); mark it 0 "
                             f"with a leading num_envs axis, or change the env's model itself")
    fields = {}
    for path in axes:
        if path not in leaves or path not in base:
            raise ValueError(f"domain randomiser: in_axes names {path}, which the model does not have")
        value, reference = leaves[path], base[path]
        if value.shape != (keys.shape[0], *reference.shape):
            raise ValueError(f"domain randomiser: {path} expected shape {(keys.shape[0], *reference.shape)} "
                             f"(num_envs, *model shape); got {value.shape}")
        if np.dtype(value.dtype).kind != np.dtype(reference.dtype).kind:
            raise ValueError(f"domain randomiser: {path} expected dtype {reference.dtype} (the model's); got "
                             f"{value.dtype}")
        fields[path] = value.astype(reference.dtype)
    if not fields:
        raise ValueError("domain randomiser: in_axes marks no field with 0: nothing is randomised")
    return fields


def describe(randomizer: Randomizer, model: Any, num_envs: int) -> dict[str, Any]:
    """What ``randomizer`` randomises, as plain data (its name; each field's path, shape and dtype), without drawing:
    settings that tell two randomisers apart where their carried values would have the same layout."""
    keys = jax.ShapeDtypeStruct((num_envs, 2), np.uint32)
    fields = jax.eval_shape(lambda k: draw(randomizer, model, k), keys)
    name = f"{getattr(randomizer, '__module__', '?')}.{getattr(randomizer, '__qualname__', type(randomizer).__name__)}"
    return {"name": name, "fields": {p: [list(v.shape), np.dtype(v.dtype).name] for p, v in sorted(fields.items())}}


def with_fields(model: Any, fields: dict[str, jax.Array]) -> Any:
    """``model`` with the fields named in ``fields`` (paths as :func:`draw` gives them) replaced."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(model)
    return jax.tree_util.tree_unflatten(treedef, [fields.get(_path_of(p), x) for p, x in leaves])


@contextlib.contextmanager
def using_model(env: Any, model: Any) -> Iterator[None]:
    """Let ``env`` (a Playground ``MjxEnv``, or a wrapper of one) step with ``model`` while tracing, as upstream's
    randomisation wrapper does (``env.unwrapped._mjx_model = model``); its own model is put back afterwards, so no
    tracer outlives the trace.

    Raises:
        TypeError: the env does not read its model from ``_mjx_model`` (randomisation would be silently ignored).
    """
    inner = getattr(env, "unwrapped", env)
    own = inner._mjx_model
    inner._mjx_model = model
    try:
        if env.mjx_model is not model:
            raise TypeError(f"domain randomisation: {type(env).__name__}.mjx_model does not read _mjx_model, so the "
                            f"env would step its own model")
        yield
    finally:
        inner._mjx_model = own

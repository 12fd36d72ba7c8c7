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

__all__ = ["Randomizer", "draw", "official_randomizer", "using_model", "with_fields"]

Randomizer = Callable[[Any, jax.Array], tuple[Any, Any]]


def official_randomizer(env_id: str) -> Randomizer | None:
    """Playground's own randomiser for ``env_id`` (``registry.get_domain_randomizer``), or ``None`` where it has none."""
    from mujoco_playground import registry

    return registry.get_domain_randomizer(env_id)


def _path_of(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path)


def draw(randomizer: Randomizer, model: Any, keys: jax.Array) -> dict[str, jax.Array]:
    """The randomised fields of ``randomizer(model, keys)``: ``{path: array with a leading len(keys) axis}``.

    Raises:
        TypeError: the randomiser did not return ``(model, in_axes)``.
        ValueError: an axis other than 0 or ``None``, a batched field of the wrong size or shape, or no field
            randomised at all.
    """
    result = randomizer(model, keys)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"domain randomiser: expected (batched mjx.Model, in_axes); got {type(result).__name__}")
    batched, in_axes = result
    axes = {_path_of(p): a for p, a in jax.tree_util.tree_flatten_with_path(in_axes)[0]}
    bad = {p: a for p, a in axes.items() if a != 0}
    if bad:
        raise ValueError(f"domain randomiser: in_axes expected 0 (randomised) or None (shared); got {bad}")
    leaves = {_path_of(p): x for p, x in jax.tree_util.tree_flatten_with_path(batched)[0]}
    base = {_path_of(p): x for p, x in jax.tree_util.tree_flatten_with_path(model)[0]}
    fields = {}
    for path in axes:
        if path not in leaves or path not in base:
            raise ValueError(f"domain randomiser: in_axes names {path}, which the model does not have")
        value, reference = leaves[path], base[path]
        if value.shape != (keys.shape[0], *reference.shape):
            raise ValueError(f"domain randomiser: {path} expected shape {(keys.shape[0], *reference.shape)} "
                             f"(num_envs, *model shape); got {value.shape}")
        fields[path] = value.astype(reference.dtype)
    if not fields:
        raise ValueError("domain randomiser: in_axes marks no field with 0: nothing is randomised")
    return fields


def with_fields(model: Any, fields: dict[str, jax.Array]) -> Any:
    """``model`` with the fields named in ``fields`` (paths as :func:`draw` gives them) replaced."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(model)
    return jax.tree_util.tree_unflatten(treedef, [fields.get(_path_of(p), x) for p, x in leaves])


@contextlib.contextmanager
def using_model(env: Any, model: Any) -> Iterator[None]:
    """Let ``env`` (a Playground ``MjxEnv``) step with ``model`` while tracing, as upstream's randomisation wrapper
    does (``env._mjx_model = model``); its own model is put back afterwards, so no tracer outlives the trace."""
    own = env._mjx_model
    env._mjx_model = model
    try:
        yield
    finally:
        env._mjx_model = own

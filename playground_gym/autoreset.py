"""The JAX side: one jitted function that steps every env, keeps episode books and autoresets.

Everything a step needs (action clipping, action repeat, NaN detection, time limits, episode returns and
lengths, capturing the true terminal observation, same-step autoreset) happens inside one compiled
function, so a step is one dispatch with no host round trip. The functions here are pure; the
:class:`~playground_gym.vector_env.PlaygroundVectorEnv` holds the carry between calls.

Examples:
    >>> import jax
    >>> from playground_gym.loading import load_env
    >>> from playground_gym.autoreset import EpisodeSpec, make_vector_functions
    >>> env = load_env("CartpoleBalance", impl="jax")
    >>> reset_fn, step_fn = make_vector_functions(env, EpisodeSpec(max_steps=10))[:2]
    >>> carry, first, out = jax.jit(reset_fn)(jax.random.split(jax.random.PRNGKey(0), 4))
    >>> out["obs"].shape
    (4, 5)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import copy
import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from playground_gym import randomization

__all__ = ["FUSE_LIMIT", "REFILL_BLOCK", "EpisodeSpec", "Carry", "Packer", "BytePacker", "VectorFunctions", "leaf_by_leaf",
           "make_vector_functions", "match_avals"]

PRIVILEGED_KEY = "privileged_state"


@dataclass(frozen=True)
class EpisodeSpec:
    """Static settings of the compiled step.

    Attributes:
        max_steps: agent decisions per episode (``episode_length // action_repeat``).
        action_repeat: physics control steps per decision; rewards are summed over them.
        reward_scale: multiplies the returned reward (episode statistics stay unscaled).
        obs_key: which entry of a dict observation is ``obs``.
        full_reset: re-randomise finished envs from fresh keys instead of replaying their first state.
        randomization: ``None``, ``"official"`` (Playground's randomiser of the env) or ``"custom"`` (the user's):
            each env steps its own model, drawn at reset (:mod:`playground_gym.randomization`).
        randomize_on_reset: draw a new model for an env at each of its autoresets (needs ``full_reset``).
    """

    max_steps: int
    action_repeat: int = 1
    reward_scale: float = 1.0
    obs_key: str = "state"
    full_reset: bool = True
    randomization: str | None = None
    randomize_on_reset: bool = False


class Carry(NamedTuple):
    """Per-env state carried between steps (every leaf has a leading num_envs axis, but the shared leaves of a
    Warp-backed MJX state: see :func:`_is_shared`)."""

    env_state: Any          # mjx_env.State
    elapsed: jax.Array      # int32 agent steps into the current episode
    episode_return: jax.Array  # float32 unscaled return so far
    key: jax.Array          # per-env PRNG key stream for full resets
    pool: Any = None        # full_reset: fresh initial states not yet handed out (an mjx_env.State batch, packed
    #                         into one [num_envs, k] array per dtype: see make_vector_functions' _layouts)
    pool_used: Any = None   # full_reset: int32, every entry the number of pool states handed out so far (with
    #                         per-env models drawn once: per entry, 1 where that env's own pool state was used)
    model: Any = None       # randomisation: {field path: per-env value} of the model each env steps
    pool_model: Any = None  # randomize_on_reset: the models the pool's states were made with (handed out with them)


@functools.cache
def _warp_shared_fields() -> frozenset[str]:
    """The fields of MJX's Warp data that are not per-env (``mujoco.mjx.warp.types.DATA_NON_VMAP``)."""
    try:
        from mujoco.mjx.warp.types import DATA_NON_VMAP
    except ImportError:  # an MJX without Warp support: every leaf is per-env
        return frozenset()
    return frozenset(DATA_NON_VMAP)


def _is_shared(path: tuple[Any, ...]) -> bool:
    """Whether the leaf at ``path`` of a batched env state is kept once for all envs, not per env.

    A Warp-backed MJX state (``impl="warp"``) keeps some fields of ``data._impl`` once for all envs: the contact
    buffers ``contact__*`` (``naconmax`` long, up to 200,000 by default), ``cdof_tri_*``, the counters ``nacon``/
    ``ncollision`` and sizes (22 of CartpoleBalance's 196 leaves); Warp rewrites them every step. MJX lists them
    (``DATA_NON_VMAP``, what its own vmap rule skips); they are recognised by name, never by shape, so no length can
    be mistaken for ``num_envs``. Per-env selects and gathers leave them as they are.
    """
    names = [key.name for key in path if isinstance(key, jax.tree_util.GetAttrKey)]
    return len(names) >= 2 and names[-2] == "_impl" and names[-1] in _warp_shared_fields()


def _cond_2d(pred: jax.Array, on_true: Callable[[Any], Any], on_false: Callable[[Any], Any], tree: Any) -> Any:
    """``lax.cond(pred, on_true, on_false, tree)`` for functions that return a tree shaped as ``tree``, with every
    array of more than two dimensions passed through the conditional as ``[d0, -1]`` (a free row-major reshape).

    Why: XLA's layout assignment gives a conditional's N-d operands the layouts its busier branch prefers (the
    batched reset's put the env axis inside), so the branch that keeps the carry as it is transposed and copied
    every physics-state array on every step, and the step's output copied them back (CartpoleBalance x 1024:
    ~0.4 ms of ~4 ms per step, read from benchmarks/step_profile.py). Two-dimensional operands keep their layout.
    """
    shapes = jax.tree.map(lambda x: x.shape, tree)  # a leaf's shape (a tuple) at each array's place
    flat = lambda t: jax.tree.map(  # noqa: E731
        lambda x: x.reshape(x.shape[0], math.prod(x.shape[1:])) if x.ndim > 2 else x, t)  # no -1: size-0 leaves
    unflat = lambda t: jax.tree.map(lambda x, shape: x.reshape(shape), t, shapes)  # noqa: E731

    def branch(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(f: Any) -> Any:
            out = fn(unflat(f))
            got, want = [x.shape for x in jax.tree.leaves(out)], [x.shape for x in jax.tree.leaves(tree)]
            if got != want:  # the flat operands would hide a transposed or reshaped leaf
                raise ValueError(f"_cond_2d: a branch changed the shapes of its tree's arrays: expected {want}, "
                                 f"got {got}")
            return flat(out)
        return run

    return unflat(jax.lax.cond(pred, branch(on_true), branch(on_false), flat(tree)))


def _where(mask: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Per-env select over two pytrees whose leaves have a leading env axis (shared leaves: ``on_false``'s)."""

    def pick(path: tuple[Any, ...], a: jax.Array, b: jax.Array) -> jax.Array:
        if _is_shared(path):
            return b
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a, b)

    return jax.tree_util.tree_map_with_path(pick, on_true, on_false)


def _all_finite(tree: Any) -> jax.Array:
    """Per-env: are all floating leaves of a (single-env) pytree finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def match_avals(tree: Any, avals: Any) -> Any:
    """Cast ``tree``'s leaves to the dtypes (and strong typing) of ``avals``.

    ``reset`` and ``step`` of Playground envs can differ in dtype or weak typing; without this, the first
    ``step`` on a state from ``reset`` compiles once, and the next step on a state from ``step`` again.
    """
    return jax.tree.map(lambda x, a: jax.lax.convert_element_type(x, a.dtype), tree, avals)


def _strong(tree: Any) -> Any:
    """The same leaves and dtypes, none weakly typed."""
    return match_avals(tree, tree)


# Carries of at most this many elements (num_envs x elements per env) are fused into one array per dtype; larger
# ones are carried leaf by leaf. Fusing saves a jitted call's per-leaf cost (about a hundred leaves), but rewrites
# the whole carry every step; measured (CartpoleBalance, CheetahRun, jax mode, 2026-12-05, 2-core AMD EPYC):
# fused wins up to CartpoleBalance x 256 (114k elements: 0.94x against 0.59x of raw) and loses from x 1024 (456k:
# 0.69x against 0.94x), CheetahRun x 256 (~280k) is 0.93x fused against 1.04x leaf by leaf.
FUSE_LIMIT = 2**17

# On the CPU the step makes its fresh states (full_reset) in blocks of at most this many envs. XLA's CPU runtime
# allocates a program's scratch memory anew at every call, sized for every branch, taken or not; with the reset of all
# envs at once (and a hand-out that gathered the whole pool, now leaf by leaf), CheetahRun x 4096's step needed 49 MB,
# above glibc's largest mmap threshold (32 MiB), so each call mapped fresh pages and faulted them in (3-4 ms of a
# ~164 ms step). With both changes it needs 21 MB, as replay's; either alone left 42-49 MB.
REFILL_BLOCK = 1024


class Packer:
    """Packs a pytree whose leaves share a leading batch axis into one ``[batch, k]`` array per dtype (leaves
    without it, the shared leaves of a Warp state, into one flat ``[k]`` array per dtype, named ``"<dtype>@shared"``);
    with ``fuse=False`` each leaf becomes an array of its own (``"<dtype>#<leaf>"``), reshaped to ``[batch, k]``.
    Leaves with no elements are not packed, nor, with ``keep_shared=False``, the shared leaves; :meth:`unpack` gives
    them back as zeros of their shape.

    An MJX state has about a hundred leaves, and a jitted call pays Python-side costs per argument
    and per result leaf (flattening, one ``jax.Array`` object each). Carrying a handful of packed
    arrays between steps instead makes that cost independent of the model; unpacking is slicing inside
    the compiled function, which XLA fuses into the consumers, but packing writes the whole carry anew each
    step, which costs more than the per-leaf overhead for large batches (:data:`FUSE_LIMIT`).

    Examples:
        >>> import jax.numpy as jnp
        >>> tree = {"a": jnp.zeros((3, 2)), "b": jnp.ones((3,), jnp.int32), "c": jnp.ones((3, 2, 2))}
        >>> packer = Packer(tree)
        >>> sorted((k, v.shape) for k, v in packer.pack(tree).items())
        [('float32', (3, 6)), ('int32', (3, 1))]
        >>> bool(jnp.all(packer.unpack(packer.pack(tree))["c"] == 1))
        True
    """

    def __init__(self, struct: Any, batch: int | None = None, fuse: bool = True, keep_shared: bool = True) -> None:
        with_paths, self.treedef = jax.tree_util.tree_flatten_with_path(struct)
        leaves = [leaf for _, leaf in with_paths]
        self.shared = [_is_shared(path) for path, _ in with_paths]
        self.batch = next(leaf.shape[0] for leaf, shared in zip(leaves, self.shared) if not shared) \
            if batch is None else batch
        self.shapes = [tuple(leaf.shape if shared else leaf.shape[1:]) for leaf, shared in zip(leaves, self.shared)]
        self.dtypes = [jnp.dtype(leaf.dtype) for leaf in leaves]
        # Leaves of no elements (an MJX state has many: contact and constraint fields of a model without them) are
        # not carried: unpacking makes them anew, so a step neither receives nor returns them (each returned one
        # would be an output buffer of its own, made by a copy op, every step).
        self.omitted = [math.prod(shape) == 0 or (is_shared and not keep_shared)
                        for shape, is_shared in zip(self.shapes, self.shared)]
        # per dtype (and shared or not): the leaf indices in it, and each leaf's column span
        self.groups: dict[str, list[tuple[int, int, int]]] = {}
        for i, (shape, dtype) in enumerate(zip(self.shapes, self.dtypes)):
            if self.omitted[i]:
                continue
            name = dtype.name if fuse else f"{dtype.name}#{i}"
            group = self.groups.setdefault(name + ("@shared" if self.shared[i] else ""), [])
            start = group[-1][2] if group else 0
            group.append((i, start, start + math.prod(shape)))

    def shape_of(self, name: str) -> tuple[int, ...]:
        """The packed array's shape of group ``name``."""
        width = self.groups[name][-1][2]
        return (width,) if name.endswith("@shared") else (self.batch, width)

    def with_batch(self, batch: int) -> "Packer":
        """The same packer for a batch of ``batch`` (the per-leaf layout does not depend on it)."""
        packer = copy.copy(self)
        packer.batch = batch
        return packer

    def layout(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """{group name: (packed shape, dtype name)}: what :meth:`pack` returns, as shapes."""
        return {name: (self.shape_of(name), _dtype_of(name)) for name in self.groups}

    def pack(self, tree: Any) -> dict[str, jax.Array]:
        leaves = jax.tree.leaves(tree)

        def flat(i: int, name: str) -> jax.Array:
            dtype = _dtype_of(name)
            return leaves[i].reshape(-1).astype(dtype) if self.shared[i] else \
                leaves[i].reshape(self.batch, -1).astype(dtype)

        return {name: jnp.concatenate([flat(i, name) for i, _, _ in group], axis=-1)
                for name, group in self.groups.items()}

    def unpack(self, packed: dict[str, jax.Array]) -> Any:
        leaves: list[Any] = [jnp.zeros(shape if shared else (self.batch,) + shape, dtype) if omitted else None
                             for shape, dtype, shared, omitted in zip(self.shapes, self.dtypes, self.shared,
                                                                      self.omitted)]
        for name, group in self.groups.items():
            for i, start, stop in group:
                if self.shared[i]:
                    leaves[i] = packed[name][start:stop].reshape(self.shapes[i])
                else:
                    leaves[i] = packed[name][:, start:stop].reshape((self.batch,) + self.shapes[i])
        return jax.tree.unflatten(self.treedef, leaves)


class BytePacker:
    """Packs a pytree of arrays into one flat ``uint8`` array, to be read back on the host as views.

    A jitted call pays per result array (a ``jax.Array`` object), and an export to torch per array again
    (a DLPack capsule and a wait for the computation, ~30 us each on CPU): for a step's ten outputs that
    cost more than the physics of a small model. One byte buffer is one result and one export. Leaves are
    bitcast to bytes, widest dtype first, so each starts at a multiple of its item size and the host can
    take zero-copy typed views (:func:`playground_gym.interop.export_packed`).

    Attributes:
        spans: per leaf, in tree order: (start byte, stop byte, numpy dtype, shape).
        groups: the same per run of one dtype: (start byte, stop byte, dtype, [(leaf, size, shape)]).
        treedef: the tree structure the host rebuilds from the views.

    Examples:
        >>> import jax.numpy as jnp, numpy as np
        >>> tree = {"done": jnp.array([True, False]), "obs": jnp.ones((2, 3)), "len": jnp.array([1, 2], jnp.int32)}
        >>> packer = BytePacker(tree)
        >>> packed = packer.pack(tree)
        >>> packed.dtype, packed.shape
        (dtype('uint8'), (34,))
        >>> start, stop, dtype, shape = packer.spans[2]  # "obs" (dict keys are sorted)
        >>> np.asarray(packed)[start:stop].view(dtype).reshape(shape)[1]
        array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, struct: Any) -> None:
        leaves, self.treedef = jax.tree.flatten(struct)
        dtypes = [np.dtype(leaf.dtype) for leaf in leaves]
        # sorted() is stable: leaves of one item size keep their tree order
        self._order = sorted(range(len(leaves)), key=lambda i: -dtypes[i].itemsize)
        spans: list[Any] = [None] * len(leaves)
        offset = 0
        for i in self._order:
            shape = tuple(leaves[i].shape)
            nbytes = math.prod(shape) * dtypes[i].itemsize
            spans[i] = (offset, offset + nbytes, dtypes[i], shape)
            offset += nbytes
        self.spans: list[tuple[int, int, np.dtype, tuple[int, ...]]] = spans
        self.nbytes = offset
        # the same layout per dtype, for hosts that take one typed view per dtype and split it:
        # (start byte, stop byte, dtype, [(leaf index, element count, shape)]), leaves contiguous in order
        self.groups: list[tuple[int, int, np.dtype, list[tuple[int, int, tuple[int, ...]]]]] = []
        for i in self._order:
            start, stop, dtype, shape = spans[i]
            if not self.groups or self.groups[-1][2] != dtype:
                self.groups.append((start, stop, dtype, []))
            group_start, _, _, members = self.groups[-1]
            members.append((i, math.prod(shape), shape))
            self.groups[-1] = (group_start, stop, dtype, members)

    def pack(self, tree: Any) -> jax.Array:
        leaves = jax.tree.leaves(tree)
        parts = []
        for i in self._order:
            x = leaves[i]
            if x.dtype == jnp.bool_:
                x = x.astype(jnp.uint8)
            elif x.dtype.itemsize > 1:
                x = jax.lax.bitcast_convert_type(x, jnp.uint8)  # adds a trailing axis of item-size bytes
            parts.append(x.reshape(-1))
        return jnp.concatenate(parts) if parts else jnp.zeros((0,), jnp.uint8)


def leaf_by_leaf(groups: Any) -> bool:
    """Whether :class:`Packer` group names ``groups`` are those of a carry packed leaf by leaf (``fuse=False``)."""
    return any("#" in name for name in groups)


def _dtype_of(group: str) -> str:
    """The dtype name of a :class:`Packer` group name (``float32``, ``float32@shared``, ``float32#12``)."""
    return group.split("@")[0].split("#")[0]


def _split_obs(obs: Any, obs_key: str) -> tuple[jax.Array, jax.Array | None]:
    if isinstance(obs, Mapping):
        return obs[obs_key], obs.get(PRIVILEGED_KEY)
    return obs, None


class VectorFunctions(NamedTuple):
    """The pure batched functions of one env; see :func:`make_vector_functions`."""

    reset: Callable[..., Any]
    step: Callable[..., Any]
    env_state: Callable[..., Any]
    elapsed: Callable[..., Any]
    set_elapsed: Callable[..., Any]
    layout: Callable[..., Any]
    model: Callable[..., Any]
    legacy_layout: Callable[..., Any]
    upgrade_legacy: Callable[..., Any]


_MODEL_STREAM = 0x6D6F64  # folded into a reset key for the model draws, so states keep the keys they had without them


def make_vector_functions(env: Any, spec: EpisodeSpec, randomizer: Callable[..., Any] | None = None,
                          refill_block: int | None = None) -> VectorFunctions:
    """Build the batched ``reset(keys)`` and ``step(carry, first, actions)`` functions (to be jitted).

    ``reset(keys)`` takes per-env PRNG keys ``[num_envs, 2]`` and returns ``(carry, first, out)``: the
    packed carry (see :class:`Packer`), the packed initial states replayed on autoreset (``None`` with
    ``full_reset``) and the outputs. ``step(carry, first, actions)`` takes float32 actions
    ``[num_envs, act_dim]`` and returns ``(carry, out)``; ``carry`` may be donated.
    ``env_state(carry)`` unpacks the batched ``mjx_env.State`` (for rendering and inspection);
    ``elapsed(carry)`` / ``set_elapsed(carry, steps)`` read and write the agent steps into each episode;
    ``layout(num_envs)`` gives the packed shapes (to check a saved carry before loading it). ``out`` holds
    ``obs``, and after a step also ``reward`` (scaled), ``terminated``, ``truncated``, ``final_obs``,
    ``done`` (= ``_final_obs``), ``episode_done`` (the same values in a buffer of its own: ``_episode``),
    ``episode_return`` (unscaled), ``episode_length``,
    ``nan_reset`` and, for dict observations holding it, ``privileged_state`` (and
    ``final_privileged_state``). ``randomizer`` (with ``spec.randomization`` set): each env steps its own model
    (``model(carry)`` gives the fields it randomised, batched). ``refill_block``: with ``full_reset``, the step
    makes its fresh states in blocks of at most this many envs, one block after another (the CPU uses
    :data:`REFILL_BLOCK`): the same states up to float rounding (XLA compiles a block's reset apart from a whole
    batch's; CartpoleBalance's are bit for bit the same, CheetahRun's differ in their last digits after its 200
    settling steps); ``None`` = all envs at once. A Warp-backed env always makes them at once (its state keeps
    some fields once for all envs).
    """
    if refill_block is not None and (isinstance(refill_block, bool) or not isinstance(refill_block, int)
                                     or refill_block < 1):
        raise ValueError(f"refill_block: expected None or an int >= 1; got {refill_block!r}")
    if spec.max_steps < 1 or spec.action_repeat < 1:
        raise ValueError(f"EpisodeSpec: expected max_steps >= 1 and action_repeat >= 1; got {spec}")
    if (randomizer is None) != (spec.randomization is None):
        raise ValueError(f"randomizer: expected one exactly where spec.randomization is set; got {spec.randomization!r}")
    if spec.randomize_on_reset and (randomizer is None or not spec.full_reset):
        raise ValueError("randomize_on_reset: expected domain randomisation with full_reset (a replayed first state "
                         "was made with the old model)")
    base_model = env.mjx_model if randomizer is not None else None
    # per-env models drawn once but fresh states from a pool: each env's pool entry is made with its own model
    own_pool = randomizer is not None and not spec.randomize_on_reset

    def draw_models(keys: jax.Array) -> dict[str, jax.Array]:
        model_keys = jax.vmap(lambda k: jax.random.fold_in(k, _MODEL_STREAM))(keys)
        return randomization.draw(randomizer, base_model, model_keys)

    def env_call(method: str, fields: Any, *args: Any) -> Any:
        if fields is None:
            return getattr(env, method)(*args)
        with randomization.using_model(env, randomization.with_fields(base_model, fields)):
            return getattr(env, method)(*args)

    def batched_reset(keys: jax.Array, fields: Any) -> Any:
        return jax.vmap(lambda k, f: env_call("reset", f, k))(keys, fields)

    def fresh_pool(keys: jax.Array, fields: Any, pool_packer: Packer) -> dict[str, jax.Array]:
        """The packed states of ``batched_reset``, made (and packed) in blocks of at most ``refill_block`` envs, one
        after another (``lax.map``): the same states up to float rounding, from a program whose scratch memory
        holds one block's reset instead of every env's (the unpacked states of 4096 CheetahRun envs alone are
        ~34 MB). Not for a Warp-backed state, whose shared leaves have no env axis to split."""
        n = keys.shape[0]
        if refill_block is None or n <= refill_block or any(pool_packer.shared):
            return pool_packer.pack(batched_reset(keys, fields))
        blocks = -(-n // refill_block)
        size = -(-n // blocks)  # balanced blocks: the last is padded with copies of the first envs' inputs
        pad = blocks * size - n

        def split(x: jax.Array) -> jax.Array:
            return jnp.concatenate([x, x[:pad]]).reshape(blocks, size, *x.shape[1:])

        keys, fields = jax.tree.map(split, (keys, fields))
        block_packer = pool_packer.with_batch(size)
        packed = jax.lax.map(lambda kf: block_packer.pack(batched_reset(*kf)), (keys, fields))
        return {name: x.reshape(blocks * size, *x.shape[2:])[:n] for name, x in packed.items()}

    def physics_one(state: Any, action: jax.Array, fields: Any) -> tuple[Any, jax.Array, jax.Array]:
        """Step one env ``action_repeat`` times; stop (freeze) at the first done. Returns summed reward."""
        if spec.action_repeat == 1:
            nxt = env_call("step", fields, state, action)
            return nxt, nxt.reward, nxt.done > 0

        def repeat(c: tuple[Any, jax.Array, jax.Array], _: None) -> tuple[tuple[Any, jax.Array, jax.Array], None]:
            s, total, done = c
            nxt = env_call("step", fields, s, action)
            s = match_avals(jax.tree.map(lambda old, new: jnp.where(done, old, new), s, nxt), s)
            total = total + jnp.where(done, 0.0, nxt.reward)
            return (s, total, done | (nxt.done > 0)), None

        init = (_strong(state), jnp.zeros((), jnp.float32), jnp.zeros((), bool))
        (state, total, done), _ = jax.lax.scan(repeat, init, None, length=spec.action_repeat)
        return state, total, done

    def advance_one(carry: Carry, action: jax.Array) -> tuple[Carry, dict[str, jax.Array]]:
        """Physics and episode bookkeeping for one env; the autoreset happens batched afterwards."""
        finite_action = jnp.all(jnp.isfinite(action))
        # Non-finite actions never reach the physics: the env gets zeros and is terminated + flagged.
        action = jnp.where(finite_action, jnp.clip(action, -1.0, 1.0), jnp.zeros_like(action))
        prev = carry.env_state
        state, reward, env_done = physics_one(prev, action, carry.model)
        physics_ok = _all_finite((state.obs, state.data.qpos, state.data.qvel)) & jnp.isfinite(reward)
        nan_reset = ~physics_ok | ~finite_action
        reward = jnp.where(nan_reset, 0.0, reward).astype(jnp.float32)
        # The terminal observation of a NaN episode is the last finite one, so V(final_obs) stays finite.
        final_obs_tree = jax.tree.map(lambda new, old: jnp.where(physics_ok, new, old), state.obs, prev.obs)
        final_obs, final_priv = _split_obs(final_obs_tree, spec.obs_key)
        terminated = env_done | nan_reset
        elapsed = carry.elapsed + 1
        truncated = (elapsed >= spec.max_steps) & ~terminated
        episode_return = carry.episode_return + reward
        out = {
            "reward": reward * jnp.float32(spec.reward_scale),
            "terminated": terminated,
            "truncated": truncated,
            "done": terminated | truncated,
            "episode_done": terminated | truncated,  # its own buffer: info's "_episode" and "_final_obs" never alias
            "final_obs": final_obs,
            "episode_return": episode_return,
            "episode_length": elapsed,
            "nan_reset": nan_reset,
        }
        if final_priv is not None:
            out["final_privileged_state"] = final_priv
        return carry._replace(env_state=state, elapsed=elapsed, episode_return=episode_return), out

    def observe(env_state: Any, out: dict[str, jax.Array]) -> dict[str, jax.Array]:
        obs, priv = _split_obs(env_state.obs, spec.obs_key)
        out["obs"] = obs
        if priv is not None:
            out[PRIVILEGED_KEY] = priv
        return out

    def initial(keys: jax.Array, fields: Any = None) -> tuple[Carry, Any]:
        """Fresh states of every env from ``keys``; with randomisation, of the models ``fields`` (None: new ones)."""
        split = jax.vmap(jax.random.split)(keys)
        stream, reset_keys = split[:, 0], split[:, 1]
        if randomizer is not None and fields is None:
            fields = draw_models(reset_keys)
        state = batched_reset(reset_keys, fields)
        n = keys.shape[0]
        # the pool starts empty (all n entries used): the first episode end fills it
        pool, pool_used = (state, jnp.full((n,), 1 if own_pool else n, jnp.int32)) if spec.full_reset else (None, None)
        carry = Carry(state, jnp.zeros((n,), jnp.int32), jnp.zeros((n,), jnp.float32), stream, pool, pool_used,
                      fields, fields if spec.randomize_on_reset else None)
        return carry, state

    def refill_if(pred: jax.Array, carry: Carry, pool_packer: Packer) -> Carry:
        """Where ``pred``: num_envs fresh initial states in one batched reset, each from a new key of one env's key
        stream (and, with randomize_on_reset, a new model drawn from that key).

        Only the pool's part of the carry passes through the conditional, the pool packed: a handful of arrays,
        where the ~100 leaves of a state unpacked from a fused carry would each be materialised as an operand
        and a result (CartpoleBalance x 4: 35 slice ops more per step).
        """

        def refill(part: tuple[Any, ...]) -> tuple[Any, ...]:
            key, _, used, _ = part
            split = jax.vmap(jax.random.split)(key)
            models = draw_models(split[:, 1]) if spec.randomize_on_reset else carry.model  # None: no randomisation
            pool = fresh_pool(split[:, 1], models, pool_packer)
            return split[:, 0], pool, jnp.zeros_like(used), models if spec.randomize_on_reset else None

        key, pool, used, pool_model = _cond_2d(pred, refill, lambda part: part,
                                               (carry.key, carry.pool, carry.pool_used, carry.pool_model))
        return carry._replace(key=key, pool=pool, pool_used=used, pool_model=pool_model)

    def fresh_states(carry: Carry, done: jax.Array, pool_packer: Packer) -> Carry:
        """Hand the finished envs the pool's next unused fresh states (in env order), refilling it when short.

        A reset computed for a few envs costs nearly as much as one for all of them (per-op overhead; and
        CheetahRun settles for 200 physics steps), so fresh states are made num_envs at a time: one batched
        reset per num_envs episode ends, however the ends are spread over the steps. Each state is used once.
        """
        n = done.shape[0]
        count = jnp.sum(done, dtype=jnp.int32)
        unpack = lambda pool: match_avals(pool_packer.unpack(pool), carry.env_state)  # noqa: E731
        if own_pool:
            # each env's entry was made with its own model: env i takes entry i, refilled once any is wanted twice
            carry = refill_if(jnp.any(done & (carry.pool_used > 0)), carry, pool_packer)
            return carry._replace(env_state=_where(done, unpack(carry.pool), carry.env_state),
                                  pool_used=carry.pool_used | done.astype(jnp.int32))

        carry = refill_if(carry.pool_used[0] + count > n, carry, pool_packer)

        def hand_out(part: tuple[Any, ...]) -> tuple[Any, ...]:
            env_state, used, model = part
            entry = jnp.where(done, used[0] + jnp.cumsum(done) - 1, 0)
            take = lambda x: jnp.take(x, entry, axis=0)  # noqa: E731
            # leaf by leaf, each gather fuses into its select: gathering the packed pool whole first made one
            # [num_envs, width] scratch array, which every call allocates (taken or not: CheetahRun x 4096, 33 MB)
            picked = jax.tree_util.tree_map_with_path(  # a shared leaf (Warp) is the carry's: _where keeps it
                lambda path, x: x if _is_shared(path) else take(x), unpack(carry.pool))
            if spec.randomize_on_reset:  # the state comes with the model it was made with
                model = _where(done, jax.tree.map(take, carry.pool_model), model)
            return _where(done, picked, env_state), used + count, model

        # most steps end no episode: then the state passes through untouched (a plain conditional over the
        # carry's own leaves, as replay's, is updated in place; the pool is only read, packed)
        env_state, used, model = jax.lax.cond(count > 0, hand_out, lambda part: part,
                                              (carry.env_state, carry.pool_used, carry.model))
        return carry._replace(env_state=env_state, pool_used=used, model=model)

    def logical_step(carry: Carry, first_state: Any, actions: jax.Array,
                     pool_packer: Packer | None) -> tuple[Carry, dict[str, jax.Array]]:
        carry, out = jax.vmap(advance_one)(carry, actions)
        done = out["done"]
        if spec.full_reset:
            carry = fresh_states(carry, done, pool_packer)
        else:
            replay = lambda c: c._replace(env_state=_where(done, first_state, c.env_state))  # noqa: E731
            carry = jax.lax.cond(jnp.any(done), replay, lambda c: c, carry)
        carry = carry._replace(
            elapsed=jnp.where(done, 0, carry.elapsed),
            episode_return=jnp.where(done, 0.0, carry.episode_return),
        )
        return _strong(carry), observe(carry.env_state, out)

    # The packed layout is that of the carry as step() returns it (dtypes, no weak types), so the first
    # step after reset reuses the compilation of every later step. Cached: tracing an env step costs seconds.
    # The pool of fresh states is always packed one array per dtype (its states are read only where envs end), so
    # the carry holds a few pool arrays however it travels: leaf by leaf, a pool of ~100 leaves was as many more
    # arguments and results of every step (CheetahRun x 64: a step that carried it untouched ran at 0.95x replay's).
    @functools.cache
    def _layouts(num_envs: int) -> tuple[Packer, Packer | None, Packer | None]:
        keys = jax.ShapeDtypeStruct((num_envs, 2), jnp.uint32)
        carry, first = jax.eval_shape(initial, keys)
        # the states a reset makes, less the shared leaves of a Warp state (a handed-out state keeps the carry's)
        pool_packer = Packer(first, num_envs, keep_shared=False) if spec.full_reset else None
        if pool_packer is not None:
            carry = carry._replace(pool=jax.eval_shape(pool_packer.pack, carry.pool))
        actions = jax.ShapeDtypeStruct((num_envs, env.action_size), jnp.float32)
        stepped, _ = jax.eval_shape(functools.partial(logical_step, pool_packer=pool_packer), carry, first, actions)
        fused = Packer(stepped, num_envs)
        size = sum(math.prod(fused.shape_of(name)) for name in fused.groups if not name.endswith("@shared"))
        fuse = size <= FUSE_LIMIT
        first_packer = None if spec.full_reset else Packer(stepped.env_state, num_envs, fuse)
        return Packer(stepped, num_envs, fuse), first_packer, pool_packer

    def reset(keys: jax.Array, packed_carry: Any = None) -> tuple[dict[str, jax.Array], Any, dict[str, jax.Array]]:
        """New episodes of every env; given the current ``packed_carry``, each env keeps its randomised model."""
        carry_packer, first_packer, pool_packer = _layouts(keys.shape[0])
        kept = None if packed_carry is None or randomizer is None else carry_packer.unpack(packed_carry).model
        carry, first_state = initial(keys, kept)
        if pool_packer is not None:
            carry = carry._replace(pool=pool_packer.pack(carry.pool))
        carry = match_avals(carry, carry_packer.unpack(carry_packer.pack(carry)))
        packed_first = None if first_packer is None else first_packer.pack(first_state)
        return carry_packer.pack(carry), packed_first, observe(carry.env_state, {})

    def step(packed_carry: dict[str, jax.Array], packed_first: Any,
             actions: jax.Array) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        carry_packer, first_packer, pool_packer = _layouts(actions.shape[0])
        carry = carry_packer.unpack(packed_carry)
        first_state = None if first_packer is None else first_packer.unpack(packed_first)
        carry, out = logical_step(carry, first_state, actions, pool_packer)
        return carry_packer.pack(carry), out

    def _num_envs(packed_carry: dict[str, jax.Array]) -> int:
        return next(v for k, v in packed_carry.items() if not k.endswith("@shared")).shape[0]

    def env_state(packed_carry: dict[str, jax.Array]) -> Any:
        return _layouts(_num_envs(packed_carry))[0].unpack(packed_carry).env_state

    def model(packed_carry: dict[str, jax.Array]) -> Any:
        fields = _layouts(_num_envs(packed_carry))[0].unpack(packed_carry).model
        return env.mjx_model if fields is None else randomization.with_fields(base_model, fields)

    def elapsed(packed_carry: dict[str, jax.Array]) -> jax.Array:
        return _layouts(_num_envs(packed_carry))[0].unpack(packed_carry).elapsed

    def set_elapsed(packed_carry: dict[str, jax.Array], steps: jax.Array) -> dict[str, jax.Array]:
        packer = _layouts(steps.shape[0])[0]
        carry = packer.unpack(packed_carry)
        return packer.pack(carry._replace(elapsed=steps.astype(carry.elapsed.dtype)))

    def layout(num_envs: int) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, Any] | None]:
        """Shapes and dtype names of the packed carry and replay cache (``None`` with ``full_reset``)."""
        carry_packer, first_packer, _ = _layouts(num_envs)
        return carry_packer.layout(), None if first_packer is None else first_packer.layout()

    # A carry saved before the pool was packed (2026-12-06) held the pool as a state; fused per dtype its columns
    # were today's, leaf by leaf its leaves were the pool's own (other names, other count).
    @functools.cache
    def _legacy_packer(num_envs: int) -> Packer | None:
        carry_packer, _, pool_packer = _layouts(num_envs)
        if pool_packer is None or not leaf_by_leaf(carry_packer.groups):
            return None
        structs = [jax.ShapeDtypeStruct(shape if shared else (num_envs,) + shape, dtype)
                   for shape, dtype, shared in zip(carry_packer.shapes, carry_packer.dtypes, carry_packer.shared)]
        stepped = jax.tree.unflatten(carry_packer.treedef, structs)
        return Packer(stepped._replace(pool=stepped.env_state), num_envs, fuse=False)

    def legacy_layout(num_envs: int) -> dict[str, tuple[tuple[int, ...], str]] | None:
        """Shapes and dtype names of a carry saved before the fresh-state pool was packed, where they differ from
        :func:`layout`'s (a leaf-by-leaf carry with fresh states); else ``None``."""
        packer = _legacy_packer(num_envs)
        return None if packer is None else packer.layout()

    def upgrade_legacy(packed_carry: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """A carry of :func:`legacy_layout` in today's layout (the same states, pool and counters)."""
        num_envs = _num_envs(packed_carry)
        carry_packer, _, pool_packer = _layouts(num_envs)
        old = _legacy_packer(num_envs).unpack(packed_carry)
        return carry_packer.pack(old._replace(pool=pool_packer.pack(old.pool)))

    return VectorFunctions(reset, step, env_state, elapsed, set_elapsed, layout, model, legacy_layout, upgrade_legacy)

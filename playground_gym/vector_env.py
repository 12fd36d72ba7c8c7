"""``PlaygroundVectorEnv``: a Gymnasium ``VectorEnv`` over one batched, jitted Playground env.

Examples:
    >>> import torch, playground_gym
    >>> envs = playground_gym.make_vec("CartpoleBalance", num_envs=8, device="cpu")
    >>> obs, info = envs.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = envs.step(torch.zeros(8, 1))
    >>> obs.shape, info["final_obs"].shape
    (torch.Size([8, 5]), torch.Size([8, 5]))
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import numbers
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import jax
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from playground_gym import autoreset, backend, keys, provenance, trace_cache
from playground_gym.autoreset import PRIVILEGED_KEY, BytePacker, EpisodeSpec, VectorFunctions, make_vector_functions
from playground_gym.configs import official_config, resolve_env_id
from playground_gym.interop import _F32_MAX, actions_to_jax, check_array_type, export, export_packed
from playground_gym.loading import load_env, resolve_impl
from playground_gym.randomization import describe, official_randomizer

__all__ = ["PlaygroundVectorEnv", "STATE_FORMAT", "make_vec", "randomized_envs"]

STATE_FORMAT = 3  # 2: reset keys from playground_gym.keys (a format-1 state would continue on other keys); 3: large
# batches carry their physics state leaf by leaf (autoreset.FUSE_LIMIT)
_INT32_MAX = 2**31 - 1  # counters (elapsed steps, episode lengths, num_envs) are int32 on the device


def _positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        expected = "a positive int or None" if allow_none else "a positive int"
        raise TypeError(f"{name}: expected {expected}; got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int; got {value}")
    if value > _INT32_MAX:
        raise ValueError(f"{name}: expected at most 2**31 - 1 (it is an int32 on the device); got {value}")
    return int(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool; got {type(value).__name__} {value!r}")
    return bool(value)


def _plain(value: Any) -> Any:
    """Config overrides as plain, comparable data (nested dicts, lists, scalars; arrays by shape, dtype and a digest
    of their bytes, since numpy abbreviates long ones; anything else as its repr)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        host = np.ascontiguousarray(np.asarray(value))
        return {"array": list(host.shape), "dtype": host.dtype.name,
                "sha256": hashlib.sha256(host.tobytes()).hexdigest()[:16]}
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"seed: expected an int; got {type(value).__name__} {value!r}")
    if not 0 <= int(value) < 2**63:
        raise ValueError(f"seed: expected 0 <= seed < 2**63; got {value}")
    return int(value)


class _Compiled:
    """An env's jitted batched functions, shareable by vector envs of identical settings.

    The functions are either traced in this process (``make_vector_functions``) or the exported programs of the
    trace cache (:mod:`playground_gym.trace_cache`); then the MjxEnv itself is only loaded when something needs
    it (``mjx_env``, ``env_state``, rendering).
    """

    def __init__(self, fns: Mapping[str, Callable[..., Any]], layout: Callable[[int], Any], meta: Mapping[str, Any],
                 jax_device: Any, load: Callable[[], Any], spec: EpisodeSpec, source: str, num_envs: int,
                 mjx_env: Any = None, vector_fns: VectorFunctions | None = None,
                 randomizer: Callable[[], Any] | None = None) -> None:
        self.action_size, self.obs_shapes = int(meta["action_size"]), meta["obs_shapes"]
        self.layout, self.source, self._load, self._spec = layout, source, load, spec
        self._mjx_env, self._vector_fns, self._randomizer = mjx_env, vector_fns, randomizer
        self._jax_device = jax_device
        self._jitted: dict[str, Any] = {}  # VectorFunctions field -> jax.jit of it, compiled on first use
        reset_fn, step_fn = fns["reset"], fns["step"]
        self.step_function = step_fn  # the step as traced or exported, before jit (benchmarks jit it other ways)
        self.trace_counts = {"reset": 0, "step": 0}
        # Donating the carry lets XLA update it in place where it travels leaf by leaf. A carry fused into one
        # array per dtype (autoreset.FUSE_LIMIT) is read by slices while the next one is written whole, so XLA
        # copies each donated array before writing it: more copy ops, not fewer (read from the compiled HLO on the
        # CPU; benchmarks/step_ab.py counts them and times both, within its noise for fused carries).
        self.donate_carry = autoreset.leaf_by_leaf(layout(num_envs)[0])
        donate = 0 if self.donate_carry else ()

        def counted(name: str, fn: Any) -> Any:
            def traced(*args: Any) -> Any:
                self.trace_counts[name] += 1  # runs only when JAX (re)traces, i.e. before a (re)compile
                return fn(*args)
            return traced

        self.reset = jax.jit(counted("reset", reset_fn))
        # The packed carry is private (never handed out), so its buffers can be reused for the next one.
        # Everything lives on one device: pinning the shardings lets host actions (numpy views of CPU
        # tensors, passed without a device_put) and committed or uncommitted JAX arrays share one executable.
        on_device = jax.sharding.SingleDeviceSharding(jax_device)
        self.step = jax.jit(counted("step", step_fn), donate_argnums=donate, in_shardings=on_device,
                            out_shardings=on_device)
        # torch and numpy callers get the step's outputs as one byte buffer (one result, one export; see
        # BytePacker): the layout is fixed when the step is traced, which happens before its first result.
        self.out_packer: BytePacker | None = None

        def step_packed(carry: Any, first: Any, actions: Any) -> Any:
            carry, out = step_fn(carry, first, actions)
            self.out_packer = BytePacker(out)
            return carry, self.out_packer.pack(out)

        self.step_packed = jax.jit(counted("step", step_packed), donate_argnums=donate, in_shardings=on_device,
                                   out_shardings=on_device)
        self.elapsed = jax.jit(fns["elapsed"])
        self.set_elapsed = jax.jit(fns["set_elapsed"], donate_argnums=0)

    @property
    def mjx_env(self) -> Any:
        if self._mjx_env is None:
            self._mjx_env = self._load()
        return self._mjx_env

    @property
    def vector_fns(self) -> VectorFunctions:
        """The env's pure batched functions (traced here, or rebuilt from the loaded env after a trace-cache hit)."""
        if self._vector_fns is None:
            randomizer = self._randomizer() if self._randomizer is not None else None
            self._vector_fns = make_vector_functions(self.mjx_env, self._spec, randomizer,
                                                     _refill_block(self._jax_device))
        return self._vector_fns

    def _jit(self, name: str) -> Any:
        if name not in self._jitted:
            self._jitted[name] = jax.jit(getattr(self.vector_fns, name))
        return self._jitted[name]

    def env_state(self, carry: Any) -> Any:
        return self._jit("env_state")(carry)

    def model(self, carry: Any) -> Any:
        return self._jit("model")(carry)

    def reset_keeping_models(self, keys: Any, carry: Any) -> Any:
        """``reset(keys)`` whose envs keep the randomised models of ``carry``."""
        return self._jit("reset")(keys, carry)


def _refill_block(jax_device: Any) -> int | None:
    """Blocks of fresh states only on the CPU, whose runtime maps a large step's scratch memory anew every call
    (:data:`~playground_gym.autoreset.REFILL_BLOCK`); a GPU's allocator keeps it, and a refill in one batch is the
    GPU's widest."""
    return autoreset.REFILL_BLOCK if jax_device.platform == "cpu" else None


def _obs_shapes(obs_struct: Any) -> Any:
    """The raw env's observation shape (a list), or a dict of them for dict observations (plain JSON data)."""
    if isinstance(obs_struct, Mapping):
        return {str(k): list(v.shape) for k, v in obs_struct.items()}
    return list(obs_struct.shape)


def _json_plain(value: Any) -> bool:
    """Whether config overrides are plain data whose JSON form identifies them (so they can key the trace cache)."""
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _json_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_json_plain(v) for v in value)
    return isinstance(value, (str, int, float, bool, type(None))) and not (isinstance(value, float) and not
                                                                           np.isfinite(value))


def _compile(load: Callable[[], Any], spec: EpisodeSpec, jax_device: Any, num_envs: int, obs_key: str,
             env_name: str, key: Mapping[str, Any] | None, rekey: Callable[[], Any] | None, quiet: bool,
             randomizer: Callable[[], Any] | None = None) -> _Compiled:
    """Load the env's programs from the trace cache under ``key``, or load the env and trace them (saving them
    under ``rekey()``: loading may have fetched the Menagerie, which is part of the key). ``randomizer``: a function
    that returns the domain randomiser (resolved only where the env is traced)."""
    programs = trace_cache.load_programs(key) if key is not None else None
    if programs is not None:
        return _Compiled(programs.calls(), lambda n: programs.layout(), programs.meta, jax_device, load, spec,
                         "trace cache", num_envs, randomizer=randomizer)
    with backend.silence_stderr(quiet), jax.default_device(jax_device):
        mjx_env = load()
        obs_struct = jax.eval_shape(mjx_env.reset, jax.random.PRNGKey(0)).obs
    if isinstance(obs_struct, Mapping) and obs_key not in obs_struct:
        raise KeyError(f"obs_key: expected one of {sorted(obs_struct)} for {env_name}; got {obs_key!r}")
    fns = make_vector_functions(mjx_env, spec, randomizer() if randomizer is not None else None,
                                _refill_block(jax_device))
    meta = {"action_size": int(mjx_env.action_size), "obs_shapes": _obs_shapes(obs_struct)}
    if key is None or provenance.cache_dir() is None:
        with backend.silence_stderr(quiet), jax.default_device(jax_device):
            return _Compiled(fns._asdict(), fns.layout, meta, jax_device, load, spec, "traced (trace cache off)",
                             num_envs, mjx_env, fns)
    with backend.silence_stderr(quiet), jax.default_device(jax_device):
        programs = trace_cache.export_programs(fns, num_envs, meta["action_size"], meta["obs_shapes"],
                                               trace_cache.export_platform(jax_device))
    trace_cache.save_programs(rekey() if rekey is not None else key, programs)
    # this process runs the exported programs too, so the compilation cache then holds what a later process needs
    with backend.silence_stderr(quiet), jax.default_device(jax_device):
        return _Compiled(programs.calls(), fns.layout, meta, jax_device, load, spec, "traced", num_envs, mjx_env, fns)


# Compiled functions in use by a live vector env are always found (weak references: they go when the last env
# using them goes); the LRU keeps the most recently used few alive after that, for the next env of those settings.
_SHARED_LIVE: weakref.WeakValueDictionary[tuple, _Compiled] = weakref.WeakValueDictionary()
_SHARED: OrderedDict[tuple, _Compiled] = OrderedDict()  # least recently used first
_SHARED_LIMIT = 8


def randomized_envs() -> list[str]:
    """The Playground envs with an official domain randomiser (``registry.get_domain_randomizer``)."""
    from playground_gym.configs import list_envs

    return [name for suite in ("locomotion", "manipulation") for name in list_envs(suite)
            if official_config(name)["domain_randomization"]]


def _randomizer_of(setting: Any, env_id: str, custom_env: bool) -> tuple[Callable[[], Any] | None, str | None]:
    """``(function returning the randomiser, "official" | "custom")`` for ``domain_randomization``, or ``(None, None)``."""
    if setting is False or setting is None:
        return None, None
    if setting is True:
        if custom_env:
            raise ValueError("domain_randomization=True: an MjxEnv instance of your own has no official randomiser; "
                             "pass your randomiser (a callable) instead")
        if not official_config(env_id)["domain_randomization"]:
            raise ValueError(f"domain_randomization=True: {env_id} has no official domain randomiser; expected one of "
                             f"{randomized_envs()} (or pass a callable of your own)")
        return (lambda: official_randomizer(env_id)), "official"
    if callable(setting):
        return (lambda: setting), "custom"
    raise TypeError(f"domain_randomization: expected a bool or a callable (mjx.Model, keys) -> (model, in_axes); "
                    f"got {type(setting).__name__} {setting!r}")


class PlaygroundVectorEnv(VectorEnv):
    """Every env of a MuJoCo Playground task, batched on one device, as a Gymnasium ``VectorEnv``.

    Semantics (docs/environment.md): same-step autoreset; ``terminated`` (the task ended, or the physics went
    non-finite) and ``truncated`` (time limit) are never both set; ``info["final_obs"]`` holds the true
    terminal observation where an env finished; ``info["episode"]`` the unscaled return and length of
    the episodes that finished; ``info["nan_reset"]`` the envs reset because of non-finite physics or
    actions. Each ``step`` is one call of one compiled JAX function, with no host sync in torch and jax
    modes; returned arrays are never overwritten by later steps.

    Args:
        env_id: Playground name, with or without the ``playground/`` prefix, or an ``MjxEnv`` instance of
            your own (its config's ``episode_length``/``action_repeat`` are the defaults; ``impl`` and
            ``config_overrides`` then do not apply).
        num_envs: number of parallel envs.
        device: ``None`` (JAX's GPU if any, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a torch or
            JAX device. A GPU without a JAX GPU backend is an error, never a silent CPU fallback.
        array_type: ``"torch"`` (zero-copy DLPack tensors on ``device``), ``"jax"`` or ``"numpy"``.
        seed: seed of the first ``reset()`` that is given none.
        episode_length: physics control steps per episode; ``None`` = the official value.
        action_repeat: control steps per agent decision; ``None`` = the official value. The agent
            sees ``episode_length // action_repeat`` decisions per episode.
        reward_scale: multiplies the returned reward (``info["episode"]["r"]`` stays unscaled).
        obs_key: for dict observations, the entry returned as ``obs``.
        full_reset: ``True`` (default, Gymnasium semantics): a finished env starts its next episode from a fresh
            initial state drawn from its own key stream. ``False``: it replays its cached first state
            (upstream's default; cheaper where resets are costly and frequent, but a run then sees only
            ``num_envs`` initial states, and envs that draw noise or commands from ``info["rng"]`` repeat
            the same sequence every episode).
        impl: ``"auto"`` (warp on GPU, jax on CPU), ``"jax"`` or ``"warp"``.
        config_overrides: env config keys to override (nested dicts or dotted keys).
        domain_randomization: ``False`` (default), ``True`` (the env's official Playground randomiser, as
            Playground's training scripts use it) or a callable of upstream's signature ``(mjx.Model,
            keys[num_envs]) -> (batched model, in_axes)``: each env then steps its own model, drawn at ``reset``
            from the reset's keys (same seed, same models), kept in ``state_dict()``; ``model`` shows them.
        randomize_on_reset: draw a new model for an env at each of its autoresets (Isaac Lab's and mjlab's
            "on reset" events), so a run sees as many models as episodes; needs ``domain_randomization`` and
            ``full_reset``. Default ``False``: drawn once per ``reset`` (upstream's behaviour).
        episode_statistics: include ``info["episode"]``; turn off to use gymnasium's own
            ``RecordEpisodeStatistics`` wrapper, which refuses an existing ``episode`` key.
        quiet: silence MuJoCo/Warp/XLA stderr output while loading and compiling (restored after).
        render_mode: ``None`` or ``"rgb_array"``: ``render()`` then returns one frame (H, W, 3 uint8) per
            env in ``render_env_ids`` (default ``(0,)``), drawn by MuJoCo's CPU renderer (headless: set
            ``MUJOCO_GL=egl`` or ``osmesa``). Size ``render_size`` (240, 320), camera ``render_camera``.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["rgb_array"]}

    def __init__(
        self,
        env_id: Any,
        num_envs: int,
        *,
        device: Any = None,
        array_type: str = "torch",
        seed: int = 0,
        episode_length: int | None = None,
        action_repeat: int | None = None,
        reward_scale: float = 1.0,
        obs_key: str = "state",
        full_reset: bool = True,
        impl: str = "auto",
        config_overrides: Mapping[str, Any] | None = None,
        domain_randomization: Any = False,
        randomize_on_reset: bool = False,
        episode_statistics: bool = True,
        quiet: bool = False,
        render_mode: str | None = None,
    ) -> None:
        self.metadata = dict(type(self).metadata)
        custom_env = None if isinstance(env_id, str) else env_id
        if custom_env is not None and not (callable(getattr(custom_env, "reset", None))
                                           and callable(getattr(custom_env, "step", None))):
            raise TypeError(f"env_id: expected a Playground env name or an MjxEnv instance; got {type(env_id).__name__}")
        self.env_id = type(custom_env).__name__ if custom_env is not None else resolve_env_id(env_id)
        self.num_envs = _positive_int("num_envs", num_envs)
        self.array_type = check_array_type(array_type)
        self._seed = _seed(seed)
        episode_length = _positive_int("episode_length", episode_length, allow_none=True)
        action_repeat = _positive_int("action_repeat", action_repeat, allow_none=True)
        if isinstance(reward_scale, bool) or not isinstance(reward_scale, numbers.Real):
            raise TypeError(f"reward_scale: expected a real number; got {type(reward_scale).__name__} {reward_scale!r}")
        if not abs(reward_scale) <= _F32_MAX:  # rewards are float32: 1e39 would make every reward inf
            raise ValueError(f"reward_scale: expected a finite number within float32's range (|x| <= "
                             f"{_F32_MAX:.4g}); got {reward_scale}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected None or 'rgb_array'; got {render_mode!r}")
        if not isinstance(obs_key, str):
            raise TypeError(f"obs_key: expected a str; got {type(obs_key).__name__} {obs_key!r}")
        self.full_reset = _bool("full_reset", full_reset)
        self.episode_statistics = _bool("episode_statistics", episode_statistics)
        self.quiet = _bool("quiet", quiet)

        if custom_env is not None:
            env_config = getattr(custom_env, "_config", None) or {}
            self.config = {"episode_length": env_config.get("episode_length"),
                           "action_repeat": env_config.get("action_repeat", 1)}
        else:
            self.config = official_config(self.env_id)
        self.episode_length = episode_length if episode_length is not None else self.config["episode_length"]
        self.action_repeat = action_repeat if action_repeat is not None else self.config["action_repeat"]
        if self.episode_length is None:
            raise ValueError(f"episode_length: {self.env_id} has no episode_length in its config; pass one")
        if self.episode_length < self.action_repeat:
            raise ValueError(
                f"episode_length: expected >= action_repeat ({self.action_repeat}) so an episode has at least one "
                f"decision; got {self.episode_length}"
            )
        self.max_episode_steps = self.episode_length // self.action_repeat
        self.reward_scale = float(reward_scale)

        self.jax_device = backend.resolve_device(device)
        self.device = backend.torch_device_of(self.jax_device)
        self.impl = resolve_impl(impl, self.jax_device.platform, None if custom_env is not None else self.env_id)
        if isinstance(config_overrides, Mapping) and not config_overrides:
            config_overrides = None  # {} is no override: the same settings, programs and compiled functions as None
        if custom_env is not None and config_overrides is not None:
            raise ValueError("config_overrides: only for Playground env names; configure an MjxEnv instance yourself")
        randomizer, randomization_kind = _randomizer_of(domain_randomization, self.env_id, custom_env is not None)
        self.domain_randomization = randomization_kind
        self.randomize_on_reset = _bool("randomize_on_reset", randomize_on_reset)
        if self.randomize_on_reset and (randomizer is None or not self.full_reset):
            raise ValueError("randomize_on_reset=True: expected domain_randomization and full_reset=True (a replayed "
                             f"first state was made with the old model); got domain_randomization="
                             f"{domain_randomization!r}, full_reset={self.full_reset}")
        spec = EpisodeSpec(self.max_episode_steps, self.action_repeat, self.reward_scale, obs_key, self.full_reset,
                           randomization_kind, self.randomize_on_reset)
        self._settings = {"env_id": self.env_id, "num_envs": self.num_envs, "impl": self.impl,
                          "episode": dataclasses.asdict(spec), "config_overrides": _plain(config_overrides)}
        if custom_env is not None:  # its class name alone would let two differently configured instances meet
            config = getattr(custom_env, "_config", None)
            self._settings["env_config"] = _plain(config.to_dict() if hasattr(config, "to_dict") else config)
        # Vector envs of identical settings (e.g. a trainer's training and evaluation envs) share the loaded env and
        # its compiled functions: tracing and compiling an env step costs seconds.
        share_key = (None if custom_env is not None or config_overrides or randomization_kind == "custom" else
                     (self.env_id, self.impl, self.jax_device, spec, self.num_envs, autoreset.FUSE_LIMIT,
                      _refill_block(self.jax_device), tuple(sorted(provenance.jax_settings().items()))))
        shared = _SHARED_LIVE.get(share_key) if share_key else None
        if shared is None:
            # Warp's FFI kernels are custom calls that jax.export cannot serialise: warp programs are traced
            cacheable = (custom_env is None and _json_plain(config_overrides) and self.impl == "jax"
                         and randomization_kind != "custom")
            # the program's code is keyed by the package's source; a block size set at run time (benchmarks) is not
            programs_of = {**self._settings, "refill_block": _refill_block(self.jax_device)}
            key = trace_cache.program_key(programs_of, self.jax_device) if cacheable else None
            # A load deferred by a trace-cache hit uses the Menagerie folder of the key, found now.
            menagerie_path = ((key or {}).get("menagerie") or {}).get("path")

            # no reference to self: the shared functions outlive this env (the LRU below)
            def load(env_id: str = self.env_id, impl: str = self.impl, quiet: bool = self.quiet,
                     jax_device: Any = self.jax_device) -> Any:
                with backend.silence_stderr(quiet), jax.default_device(jax_device):
                    if custom_env is not None:
                        return custom_env
                    return load_env(env_id, impl, config_overrides, menagerie_path)

            rekey = (lambda: trace_cache.program_key(programs_of, self.jax_device)) if cacheable else None
            shared = _compile(load, spec, self.jax_device, self.num_envs, obs_key, self.env_id, key, rekey, self.quiet,
                              randomizer)
        if share_key:
            _SHARED_LIVE[share_key] = shared
            _SHARED[share_key] = shared
            _SHARED.move_to_end(share_key)
            while len(_SHARED) > _SHARED_LIMIT:
                _SHARED.popitem(last=False)
        self.programs_source = shared.source
        obs_shapes = shared.obs_shapes
        self.obs_key = obs_key
        self.has_privileged_state = False
        self.privileged_state_shape: tuple[int, ...] | None = None  # of one env's info["privileged_state"]
        if isinstance(obs_shapes, Mapping):
            if obs_key not in obs_shapes:
                raise KeyError(f"obs_key: expected one of {sorted(obs_shapes)} for {self.env_id}; got {obs_key!r}")
            self.has_privileged_state = PRIVILEGED_KEY in obs_shapes and obs_key != PRIVILEGED_KEY
            if self.has_privileged_state:
                self.privileged_state_shape = tuple(obs_shapes[PRIVILEGED_KEY])
            obs_shapes = obs_shapes[obs_key]
        elif obs_key != "state":
            raise ValueError(f"obs_key: {self.env_id}'s observations are one array, not a dict: expected the default "
                             f"'state'; got {obs_key!r}")

        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, tuple(obs_shapes), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (shared.action_size,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.action_space.seed(self._seed)

        self.trace_counts = shared.trace_counts  # shared with the vector envs that share the compiled functions
        if randomization_kind == "custom":  # "custom" alone would let a state of another randomiser load
            self._settings["randomizer"] = describe(randomizer(), shared.mjx_env.mjx_model, self.num_envs)
        self._shared = shared
        self._reset_jit = shared.reset
        self._step_jit = shared.step if self.array_type == "jax" else shared.step_packed
        self._carry: Any = None
        self._first: Any = None
        self.render_mode = render_mode
        self.render_env_ids: tuple[int, ...] = (0,)
        self.render_size = (240, 320)
        self.render_camera: str | int = -1
        self._renderer: Any = None
        self._reset_count = 0

    # -- gymnasium API ---------------------------------------------------------------------------------

    def _require_state(self, method: str) -> None:
        """Raise if ``method`` cannot run: the envs were closed, or never reset."""
        if self.closed:
            raise gym.error.ClosedEnvironmentError(f"{method}() was called after close(): make new envs")
        if self._carry is None:
            raise gym.error.ResetNeeded(f"{method}() was called before reset(): call reset() first")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every env. ``seed`` reseeds (initial states depend only on it and ``num_envs``);
        without one, the first reset uses the constructor's ``seed`` and later ones fresh keys: the c-th reset since
        the seed was set draws the keys ``keys.reset_keys(seed, c, num_envs)`` (:mod:`playground_gym.keys`), which
        no other reset, autoreset or env shares. With domain randomisation a reset draws new models too, unless
        ``options={"keep_models": True}``: new states of the models the envs have (Brax's forced resets)."""
        if self.closed:
            raise gym.error.ClosedEnvironmentError("reset() was called after close(): make new envs")
        if options and (set(options) != {"keep_models"} or not isinstance(options["keep_models"], bool)):
            raise ValueError(f"options: expected None or {{'keep_models': bool}} (with domain randomisation, True keeps "
                             f"each env's model: new states only); got {options!r}")
        keep_models = bool(options and options["keep_models"]) and self.domain_randomization is not None
        if seed is not None:
            self._seed = _seed(seed)
            self._reset_count = 0
            self.action_space.seed(self._seed)
        env_keys = jax.device_put(keys.reset_keys(self._seed, self._reset_count, self.num_envs), self.jax_device)
        self._reset_count += 1
        with backend.silence_stderr(self.quiet and self.trace_counts["reset"] == 0):
            if keep_models and self._carry is not None:
                self._carry, self._first, out = self._shared.reset_keeping_models(env_keys, self._carry)
            else:
                self._carry, self._first, out = self._reset_jit(env_keys)
        info = {PRIVILEGED_KEY: out[PRIVILEGED_KEY]} if self.has_privileged_state else {}
        return export(out["obs"], self.array_type), export(info, self.array_type)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step every env with ``actions`` of shape ``(num_envs, act_dim)``, clipped to [-1, 1]."""
        self._require_state("step")
        # jax mode returns before the step has run (nothing waits for its results): the step must own its input
        actions = actions_to_jax(actions, self.action_space.shape, self.jax_device, copy=self.array_type == "jax")
        with backend.silence_stderr(self.quiet and self.trace_counts["step"] == 0):
            self._carry, out = self._step_jit(self._carry, self._first, actions)
        if self.array_type != "jax":
            out = export_packed(out, self._shared.out_packer, self.array_type)
        info: dict[str, Any] = {"final_obs": out["final_obs"], "_final_obs": out["done"], "nan_reset": out["nan_reset"]}
        if self.episode_statistics:
            info["episode"] = {"r": out["episode_return"], "l": out["episode_length"]}
            info["_episode"] = out["episode_done"]
        if self.has_privileged_state:
            info[PRIVILEGED_KEY] = out[PRIVILEGED_KEY]
            info["final_" + PRIVILEGED_KEY] = out["final_" + PRIVILEGED_KEY]
        return out["obs"], out["reward"], out["terminated"], out["truncated"], info

    @property
    def mjx_env(self) -> Any:
        """The Playground ``MjxEnv`` (loaded on first use where the programs came from the trace cache)."""
        return self._shared.mjx_env

    def env_state(self) -> Any:
        """The current batched ``mjx_env.State`` (JAX arrays, leading num_envs axis), for inspection."""
        self._require_state("env_state")
        return self._shared.env_state(self._carry)

    @property
    def model(self) -> Any:
        """The ``mjx.Model`` the envs step: with domain randomisation, the fields it randomises carry a leading
        ``num_envs`` axis (each env's current values); without, the env's own model."""
        self._require_state("model")
        return self._shared.model(self._carry)

    def elapsed_steps(self) -> Any:
        """Agent steps into the current episode, per env (int32 ``(num_envs,)``, of ``array_type``)."""
        self._require_state("elapsed_steps")
        return export(self._shared.elapsed(self._carry), self.array_type)

    def set_elapsed_steps(self, steps: Any) -> None:
        """Set how many agent steps each env's current episode has run, e.g. to spread the episode ends.

        ``steps``: integers in ``[0, max_episode_steps)``, shape ``(num_envs,)`` (torch, numpy or JAX). An env
        whose count reaches ``max_episode_steps`` is truncated, so random counts make the envs finish at
        different steps instead of all at once (rsl_rl's ``init_at_random_ep_len``). The episode returns so
        far are kept.

        Raises:
            ValueError: wrong shape or a value outside ``[0, max_episode_steps)``. TypeError: not integers.
        """
        self._require_state("set_elapsed_steps")
        if type(steps).__module__.startswith("torch"):
            steps = steps.detach().cpu().numpy()
        host = np.asarray(steps)
        if host.dtype.kind not in "iu":
            raise TypeError(f"steps: expected integers; got dtype {host.dtype}")
        if host.shape != (self.num_envs,):
            raise ValueError(f"steps: expected shape ({self.num_envs},); got {host.shape}")
        if host.size and (host.min() < 0 or host.max() >= self.max_episode_steps):
            raise ValueError(f"steps: expected values in [0, {self.max_episode_steps}); got {host.min()}..{host.max()}")
        steps = jax.device_put(host.astype(np.int32), self.jax_device)
        self._carry = self._shared.set_elapsed(self._carry, steps)

    def state_dict(self) -> dict[str, Any]:
        """Everything the next ``step`` reads, as host (numpy) copies, so a checkpoint can continue the run exactly.

        Holds the packed carry (physics state, episode counters and returns, per-env key streams), the replay
        cache (``full_reset=False``), the seed and reset counter of ``reset()``, the action space's RNG, and the
        settings that :meth:`load_state_dict` checks.

        Examples:
            >>> envs = make_vec("CartpoleBalance", 4, device="cpu")
            >>> _ = envs.reset(seed=0)
            >>> saved = envs.state_dict()
            >>> twin = make_vec("CartpoleBalance", 4, device="cpu")
            >>> twin.load_state_dict(saved)  # twin.step(a) now equals envs.step(a)
        """
        self._require_state("state_dict")
        # np.array copies: a carry that travels leaf by leaf is donated to (and reused by) the next step
        host = lambda tree: None if tree is None else {k: np.array(v) for k, v in tree.items()}  # noqa: E731
        return {"format": STATE_FORMAT, "settings": copy.deepcopy(self._settings), "seed": self._seed,
                "reset_count": self._reset_count,
                "carry": host(self._carry), "first": host(self._first),
                "action_space_rng": self.action_space.np_random.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of envs with the same settings (env, num_envs, episode settings).

        Raises:
            ValueError: the state was saved by envs of other settings (the message names what differs), or its
                arrays do not have this env's shapes and dtypes.
            TypeError: ``state`` is not such a dict.
        """
        if self.closed:
            raise gym.error.ClosedEnvironmentError("load_state_dict() was called after close(): make new envs")
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            found = f"format {state.get('format')!r}" if isinstance(state, Mapping) else type(state).__name__
            raise TypeError(f"state: expected a dict from PlaygroundVectorEnv.state_dict() (format {STATE_FORMAT}); "
                            f"got {found}")
        missing = sorted({"settings", "seed", "reset_count", "carry", "first", "action_space_rng"} - set(state))
        if missing:
            raise ValueError(f"state: missing {missing} (expected a dict from PlaygroundVectorEnv.state_dict())")
        # Everything is checked before anything is applied: a bad state leaves the env as it was.
        saved = state["settings"]
        if not isinstance(saved, Mapping):
            raise ValueError(f"state: settings expected a dict; got {type(saved).__name__}")
        canonical = lambda v: json.dumps(v, sort_keys=True, default=repr)  # noqa: E731 -- NaN == NaN here
        differ = {k: (saved.get(k), v) for k, v in self._settings.items() if canonical(saved.get(k)) != canonical(v)}
        if differ:
            detail = "; ".join(f"{k}: saved {a!r}, here {b!r}" for k, (a, b) in differ.items())
            raise ValueError(f"state: saved by envs of other settings ({detail})")
        seed = _seed(state["seed"])
        reset_count = state["reset_count"]
        if isinstance(reset_count, bool) or not isinstance(reset_count, numbers.Integral) or \
                not 0 <= reset_count < 2**32:
            raise ValueError(f"state: reset_count expected an int in [0, 2**32); got {reset_count!r}")
        rng = type(self.action_space.np_random.bit_generator)()
        try:
            rng.state = state["action_space_rng"]
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"state: action_space_rng is not a {type(rng).__name__} state ({err})") from None
        carry_layout, first_layout = self._shared.layout(self.num_envs)

        def check(name: str, arrays: Any, layout: Any) -> dict[str, Any] | None:
            if layout is None or arrays is None:
                if (layout is None) != (arrays is None):
                    raise ValueError(f"state: {name} expected {layout}; got {arrays!r:.80}")
                return None
            if not isinstance(arrays, Mapping):
                raise ValueError(f"state: {name} expected a dict of arrays; got {type(arrays).__name__}")
            # a format-3 state saved before the carry left out leaves of no elements holds them; no values: it fits
            arrays = {k: v for k, v in arrays.items() if k in layout or np.size(v) != 0}
            got = {k: (tuple(np.shape(v)), np.asarray(v).dtype.name) for k, v in arrays.items()}
            if got != layout and name == "carry" and autoreset.leaf_by_leaf(got):
                # saved before the fresh-state pool was packed: repacked (loads and traces the env: seconds)
                fns = self._shared.vector_fns
                if got == fns.legacy_layout(self.num_envs):
                    on_device = {k: jax.device_put(np.array(v), self.jax_device) for k, v in arrays.items()}
                    return dict(jax.jit(fns.upgrade_legacy)(on_device))
            if got != layout:
                kind = lambda names: "leaf by leaf" if autoreset.leaf_by_leaf(names) else "fused per dtype"  # noqa: E731
                if kind(got) != kind(layout):
                    raise ValueError(f"state: {name} is carried {kind(got)} and this env's {kind(layout)} "
                                     f"(autoreset.FUSE_LIMIT); save and load with the same version and settings")
                differ = sorted(k for k in set(got) | set(layout) if got.get(k) != layout.get(k))
                raise ValueError(f"state: {name} does not fit this env's carry: {len(differ)} of its arrays differ, "
                                 f"e.g. {differ[0]!r}: expected {layout.get(differ[0])}, got {got.get(differ[0])}")
            return {k: jax.device_put(np.array(v), self.jax_device) for k, v in arrays.items()}

        carry = check("carry", state["carry"], carry_layout)
        first = check("first", state["first"], first_layout)
        elapsed = np.asarray(self._shared.elapsed(carry))
        if elapsed.min() < 0 or elapsed.max() >= self.max_episode_steps:
            raise ValueError(f"state: elapsed steps expected in [0, {self.max_episode_steps}); got "
                             f"{elapsed.min()}..{elapsed.max()}")
        self._carry, self._first = carry, first
        self._seed, self._reset_count = seed, int(reset_count)
        self.action_space.np_random.bit_generator.state = rng.state

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One RGB frame per env in ``render_env_ids`` of the current state (``render_mode="rgb_array"``)."""
        if self.render_mode is None:
            return None
        import mujoco

        data = self.env_state().data
        fields = ("qpos", "qvel", "mocap_pos", "mocap_quat", "xfrc_applied")
        host = {f: np.asarray(getattr(data, f)) for f in fields}
        model = self.mjx_env.mj_model
        if self._renderer is None:
            self._renderer = mujoco.Renderer(model, *self.render_size)
            self._mj_data = mujoco.MjData(model)
        frames = []
        for i in self.render_env_ids:
            for f in fields:
                getattr(self._mj_data, f)[...] = host[f][i].reshape(getattr(self._mj_data, f).shape)
            mujoco.mj_forward(model, self._mj_data)
            self._renderer.update_scene(self._mj_data, camera=self.render_camera)
            frames.append(self._renderer.render().copy())
        return tuple(frames)

    def close_extras(self, **kwargs: Any) -> None:
        self._carry = self._first = None
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __repr__(self) -> str:
        return (f"PlaygroundVectorEnv({self.env_id!r}, num_envs={self.num_envs}, device={self.jax_device}, "
                f"array_type={self.array_type!r}, impl={self.impl!r})")


def make_vec(env_id: str, num_envs: int, **kwargs: Any) -> PlaygroundVectorEnv:
    """Create a :class:`PlaygroundVectorEnv`; the same as ``gym.make_vec("playground/<env_id>", num_envs, ...)``.

    Examples:
        >>> envs = make_vec("CartpoleBalance", 4, device="cpu", array_type="numpy")
        >>> envs.single_action_space.shape
        (1,)
    """
    return PlaygroundVectorEnv(env_id, num_envs, **kwargs)

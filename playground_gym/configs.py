"""Env ids and official per-env settings, read from the installed MuJoCo Playground.

Importing MuJoCo Playground costs seconds (it imports MJX and every env module), so what is read from it here (the
ids per suite, each env's official settings) is kept as a small JSON snapshot next to the trace cache
(:func:`playground_gym.provenance.cache_dir`), keyed by the playground and brax versions, the files of the Playground package
that Python would import (:func:`playground_gym.provenance.playground_digest`: an edited source checkout is not
served the settings of another) and this package's source: a warm process starts without importing Playground. An unreadable snapshot is ignored and rewritten.

Examples:
    >>> import playground_gym
    >>> len(playground_gym.list_envs("dm_control_suite"))
    25
    >>> playground_gym.official_config("FingerSpin")["discounting"]
    0.95
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from playground_gym import provenance, randomization

__all__ = ["SUITES", "ENV_PREFIX", "EnvId", "has_impl_setting", "list_envs", "official_config", "resolve_env_id", "suite_of"]

SUITES = ("dm_control_suite", "locomotion", "manipulation")
ENV_PREFIX = "playground/"


def _snapshot_path() -> Path | None:
    folder = provenance.cache_dir()
    if folder is None:
        return None
    key = [provenance.version_of("playground"), provenance.version_of("brax"), provenance.playground_digest(),
           provenance.source_digest()]
    return folder / f"registry-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]}.json"


@functools.cache
def _snapshot() -> dict[str, Any]:
    """The snapshot of what was read from Playground (loaded once per process; empty if missing or unreadable)."""
    path = _snapshot_path()
    try:
        data = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    return data if isinstance(data, dict) else {}


def _save_snapshot() -> None:
    path = _snapshot_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".tmp-", delete=False) as tmp:
            json.dump(_snapshot(), tmp, sort_keys=True)
        os.replace(tmp.name, path)
    except OSError:  # a read-only cache costs the next process its speed-up, nothing else
        pass


def remembered(section: str, name: str, compute: Any) -> Any:
    """``compute()`` (JSON data read from Playground), kept in the snapshot under ``section``/``name``: a later
    process reads it back instead of importing Playground. The result is a fresh copy each call."""
    entries = _snapshot().setdefault(section, {})
    if name not in entries:
        entries[name] = json.loads(json.dumps(compute()))  # anything JSON cannot hold fails here, not later
        _save_snapshot()
    return json.loads(json.dumps(entries[name]))


@functools.cache
def _suite_envs() -> dict[str, tuple[str, ...]]:
    suites = _snapshot().get("suites")
    if isinstance(suites, dict) and sorted(suites) == sorted(SUITES):
        return {suite: tuple(suites[suite]) for suite in SUITES}
    from mujoco_playground import dm_control_suite, locomotion, manipulation

    envs = {
        "dm_control_suite": tuple(dm_control_suite.ALL_ENVS),
        "locomotion": tuple(locomotion.ALL_ENVS),
        "manipulation": tuple(manipulation.ALL_ENVS),
    }
    _snapshot()["suites"] = {suite: list(names) for suite, names in envs.items()}
    _save_snapshot()
    return envs


def list_envs(suite: str | None = None) -> list[str]:
    """Ids of the Playground envs, all of them or one suite's, in Playground's order.

    Args:
        suite: ``None`` for all, or one of ``"dm_control_suite"``, ``"locomotion"``, ``"manipulation"``.

    Raises:
        ValueError: unknown suite.
    """
    envs = _suite_envs()
    if suite is None:
        return [name for names in envs.values() for name in names]
    if suite not in envs:
        raise ValueError(f"suite: expected None or one of {list(SUITES)}; got {suite!r}")
    return list(envs[suite])


class EnvId(str):
    """An env id that :func:`resolve_env_id` has resolved (the Playground name): resolving it again returns it as is,
    so an id resolved at :func:`~playground_gym.make_vec`'s door is not looked up again by every function it reaches."""

    __slots__ = ()


def resolve_env_id(env_id: Any) -> EnvId:
    """Normalise ``"playground/Name"`` or ``"Name"`` to the Playground name, with suggestions on a miss.

    Raises:
        TypeError: ``env_id`` is not a str.
        ValueError: unknown id; the message suggests close names.
    """
    if isinstance(env_id, EnvId):
        return env_id
    return _lookup(env_id)


def _lookup(env_id: Any) -> EnvId:
    if not isinstance(env_id, str):
        raise TypeError(f"env_id: expected a str such as 'CartpoleBalance'; got {type(env_id).__name__} {env_id!r}")
    name = env_id[len(ENV_PREFIX):] if env_id.startswith(ENV_PREFIX) else env_id
    known = list_envs()
    if name in known:
        return EnvId(name)
    folded = {k.lower(): k for k in known}
    if name.lower() in folded:
        hint = [folded[name.lower()]]
    else:
        hint = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    suggestion = f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
    raise ValueError(
        f"env_id: unknown Playground env {env_id!r}.{suggestion} "
        f"Expected one of playground_gym.list_envs() ({len(known)} ids)."
    )


def suite_of(env_id: str) -> str:
    """The suite an env id belongs to."""
    name = resolve_env_id(env_id)
    return next(suite for suite, names in _suite_envs().items() if name in names)


@functools.cache
def has_impl_setting(env_id: str) -> bool:
    """Whether the env's Playground config has an ``impl`` field (MJX backend: jax or warp). AeroCubeRotateZAxis has
    none: it always runs MJX's JAX backend."""
    name = resolve_env_id(env_id)

    def compute() -> bool:
        from mujoco_playground import registry

        return "impl" in registry.get_default_config(name)

    return bool(remembered("has_impl", name, compute))


def _brax_ppo_defaults() -> dict[str, Any]:
    """Brax's own ``ppo.train`` and ``make_ppo_networks`` defaults: what the official runs use for every
    key the Playground table leaves out (e.g. clipping_epsilon, network sizes for DM Control)."""
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo_train

    def defaults(fn: Any, keys: tuple[str, ...]) -> dict[str, Any]:
        params = inspect.signature(fn).parameters
        return {k: params[k].default for k in keys}

    out = defaults(ppo_train.train, ("clipping_epsilon", "gae_lambda", "max_grad_norm", "vf_loss_coefficient",
                                     "normalize_advantage", "num_resets_per_eval", "num_eval_envs"))
    net = defaults(ppo_networks.make_ppo_networks, ("policy_hidden_layer_sizes", "value_hidden_layer_sizes",
                                                    "activation", "policy_obs_key", "value_obs_key"))
    net["activation"] = getattr(net["activation"], "__name__", str(net["activation"]))
    out.update(net)
    return out


# Corrections to upstream's table, applied in official_config. Each entry says why.
_CORRECTIONS: dict[str, dict[str, Any]] = {
    # Playground's dm_control_suite_params checks `env_name == "PendulumSwingUp"`, but the env is registered
    # as "PendulumSwingup", so its action_repeat 4 (and 4 updates per batch) never applies upstream.
    "PendulumSwingup": {"action_repeat": 4, "num_updates_per_batch": 4},
}


def _params_module(suite: str) -> Any:
    from mujoco_playground.config import dm_control_suite_params, locomotion_params, manipulation_params

    return {"dm_control_suite": dm_control_suite_params, "locomotion": locomotion_params,
            "manipulation": manipulation_params}[suite]


def official_config(env_id: str) -> dict[str, Any]:
    """The official per-env settings: env timing plus Brax PPO hyperparameters, as a fresh plain dict.

    Keys include ``episode_length``, ``action_repeat``, ``ctrl_dt``, ``sim_dt``, ``domain_randomization``
    (whether Playground has an official randomiser for the env), ``discounting``,
    ``num_timesteps``, ``reward_scaling``, ``unroll_length``, ``num_envs``, ``batch_size``,
    ``num_minibatches``, ``num_updates_per_batch``, ``learning_rate``, ``entropy_cost``,
    ``clipping_epsilon``, ``gae_lambda``, ``max_grad_norm``, ``policy_hidden_layer_sizes``,
    ``value_hidden_layer_sizes``, ``activation``, ``policy_obs_key``, ``value_obs_key``, ``suite`` and
    ``corrections`` (what this library changed relative to upstream's table, and why).

    Values come from ``mujoco_playground.config.<suite>_params.brax_ppo_config``; keys that table omits
    take Brax's ``ppo.train``/``make_ppo_networks`` defaults, which is what an official run gets.

    Raises:
        ValueError / TypeError: unknown or malformed env id.
    """
    name = resolve_env_id(env_id)
    cfg = remembered("official", name, lambda: _official_config(name))
    for key in ("policy_hidden_layer_sizes", "value_hidden_layer_sizes"):
        cfg[key] = tuple(int(v) for v in cfg[key])
    return cfg


def _official_config(name: str) -> dict[str, Any]:
    """official_config read from Playground's and Brax's own tables (JSON data: tuples as lists)."""
    from mujoco_playground import registry

    suite = suite_of(name)
    env_config = registry.get_default_config(name)
    cfg: dict[str, Any] = dict(_brax_ppo_defaults())
    cfg.update(
        suite=suite,
        env_id=name,
        ctrl_dt=float(env_config.ctrl_dt),
        sim_dt=float(env_config.sim_dt),
        episode_length=int(env_config.episode_length),
        action_repeat=int(env_config.get("action_repeat", 1)),
        domain_randomization=randomization.official_randomizer(name) is not None,
    )
    try:
        rl = _params_module(suite).brax_ppo_config(name).to_dict()
    except (ValueError, NotImplementedError):  # an env upstream's table does not cover: Brax defaults stand
        rl = {}
    network = rl.pop("network_factory", {}) or {}
    cfg.update(rl)
    cfg.update({k: v for k, v in network.items() if k in cfg})
    corrections = _CORRECTIONS.get(name, {})
    cfg.update(corrections)
    cfg["corrections"] = dict(corrections)
    for key in ("policy_hidden_layer_sizes", "value_hidden_layer_sizes"):
        cfg[key] = [int(v) for v in cfg[key]]
    return cfg

"""The PRNG keys of a vector env's life, all drawn from one tree rooted at its seed, so no two purposes meet.

JAX's keys are derived by ``fold_in(key, i)`` and ``split(key, n)``; under JAX's default
(``jax_threefry_partitionable=True``) ``split(key, n)[i]`` *is* ``fold_in(key, i)``, so deriving two purposes
from one key by the two functions makes them collide (``fold_in(base, c)`` for the c-th reset was env c's key of
the first). Here every key is a node of one tree whose children are indexed by distinct integers:

    root = seed (all 64 bits)
    ├── 0: reset()                           RESET
    │   └── c: the c-th reset since the seed  (c = 0, 1, ...; a seeded reset starts again at 0)
    │       └── i: env i                      split(node, num_envs)[i]
    │           ├── 0: env i's key stream     fresh initial states of its autoresets (the pool), one child a refill
    │           └── 1: env i's initial state  the env's own ``reset(key)``
    └── 1: domain randomisation               DOMAIN_RANDOMIZATION (reserved: model draws per env slot)

The root holds the whole seed: ``[seed >> 32, seed & 0xFFFFFFFF]`` as uint32, which is what
``jax.random.PRNGKey(seed)`` gives with x64 on, and also without it (where ``PRNGKey`` would keep the low 32 bits
only, so seeds ``s`` and ``s + 2**32`` would meet). Seeds below ``2**32`` give ``PRNGKey(seed)``.

Examples:
    >>> from playground_gym import keys
    >>> keys.root_key(2**32).tolist(), keys.root_key(5).tolist()
    ([1, 0], [0, 5])
    >>> a, b = keys.reset_keys(0, 0, 4), keys.reset_keys(0, 1, 4)  # the first and the second reset of seed 0
    >>> bool((a[:, None] == b[None]).all(-1).any())  # no env of the second reset reuses a key of the first
    False
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["DOMAIN_RANDOMIZATION", "RESET", "purpose_key", "reset_keys", "root_key"]

RESET = 0
DOMAIN_RANDOMIZATION = 1


def root_key(seed: int) -> np.ndarray:
    """The root of a seed's tree: a raw uint32 key ``[seed >> 32, seed & 0xFFFFFFFF]`` (``0 <= seed < 2**64``)."""
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected 0 <= seed < 2**64; got {seed}")
    return np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32)


def purpose_key(seed: int, purpose: int) -> jax.Array:
    """The node of ``purpose`` (:data:`RESET`, :data:`DOMAIN_RANDOMIZATION`) under a seed's root."""
    return jax.random.fold_in(root_key(seed), purpose)


def reset_keys(seed: int, reset_count: int, num_envs: int) -> jax.Array:
    """The per-env keys ``[num_envs, 2]`` of the ``reset_count``-th ``reset()`` since ``seed`` was set."""
    return jax.random.split(jax.random.fold_in(purpose_key(seed, RESET), reset_count), num_envs)

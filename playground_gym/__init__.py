"""playground_gym: MuJoCo Playground tasks as device-resident Gymnasium vector envs for PyTorch.

Examples:
    >>> import gymnasium as gym
    >>> import playground_gym
    >>> envs = gym.make_vec("playground/CartpoleBalance", num_envs=16, device="cpu")
    >>> obs, info = envs.reset(seed=0)
"""

from playground_gym import backend

# Before anything below imports JAX: its GPU memory behaviour is read when its backend initialises.
backend.configure_jax_environment()
backend.enable_compilation_cache()
backend.enable_inductor_cache()

from playground_gym.configs import list_envs, official_config  # noqa: E402
from playground_gym.loading import MENAGERIE_ENV_VAR, MenagerieUnavailableError  # noqa: E402
from playground_gym.registration import register_envs  # noqa: E402
from playground_gym.vector_env import PlaygroundVectorEnv, make_vec, randomized_envs  # noqa: E402

register_envs()

__version__ = "0.2.0"

__all__ = [
    "MENAGERIE_ENV_VAR",
    "MenagerieUnavailableError",
    "PlaygroundVectorEnv",
    "list_envs",
    "make_vec",
    "official_config",
    "randomized_envs",
    "register_envs",
    "silence_stderr",
]

silence_stderr = backend.silence_stderr

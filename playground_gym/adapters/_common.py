"""What the torch adapters (rsl_rl, skrl) share: the env check and on-device episode means."""

from __future__ import annotations

from typing import Any

import torch

from playground_gym.vector_env import PlaygroundVectorEnv

__all__ = ["LatestEpisodeMeans", "check_torch_env"]


def check_torch_env(envs: Any, adapter: str, library: str) -> PlaygroundVectorEnv:
    """``envs`` if it is a torch-mode PlaygroundVectorEnv, else a TypeError naming what was expected."""
    if not isinstance(envs, PlaygroundVectorEnv):
        raise TypeError(f"{adapter}: expected a playground_gym.PlaygroundVectorEnv (make_vec(...)); got "
                        f"{type(envs).__name__}")
    if envs.array_type != "torch":
        raise TypeError(f"{adapter}: expected an env with array_type='torch' ({library} trains on torch tensors); "
                        f"got array_type={envs.array_type!r}")
    return envs


class LatestEpisodeMeans:
    """Mean return and length of the episodes that ended on the latest step on which any ended.

    0-d tensors on the env's device, updated without a host sync (a step on which none ended keeps the last means).
    """

    def __init__(self, device: torch.device) -> None:
        self.episode_return = torch.zeros((), device=device)
        self.episode_length = torch.zeros((), device=device)

    def update(self, dones: torch.Tensor, stats: dict[str, torch.Tensor]) -> None:
        ended = dones.sum()
        some = ended > 0
        weight = dones.to(torch.float32) / ended.clamp(min=1)
        self.episode_return = torch.where(some, (stats["r"] * weight).sum(), self.episode_return)
        self.episode_length = torch.where(some, (stats["l"].to(torch.float32) * weight).sum(), self.episode_length)

"""A trained policy as one ONNX file and a JSON sidecar, and the same policy run back with onnxruntime.

The graph takes raw observations (float32 ``(batch, obs_dim)``, any batch size) and returns the deterministic action
in [-1, 1] (float32 ``(batch, act_dim)``): the observation normaliser and the trainer's own deterministic action (the
Gaussian mean clipped to [-1, 1]; tanh of the tanh-Normal's mean) are inside it, so a robot's computer needs nothing
but onnxruntime. The sidecar (``policy.json`` next to ``policy.onnx``) says what the env expects around it: env id,
observation key and size, action size, the action scale the env applies, the control period, and the run it came
from (with the seed of its final evaluation, which ``python -m playground_gym.play`` replays).

Examples:
    >>> import numpy as np, onnxruntime
    >>> session = onnxruntime.InferenceSession("runs/RUN/policy.onnx")  # doctest: +SKIP
    >>> action = session.run(None, {"obs": np.zeros((1, 5), np.float32)})[0]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["EXPORT_FORMAT", "OnnxPolicy", "export_policy", "read_sidecar"]

EXPORT_FORMAT = 1  # of the sidecar


class _Deterministic(torch.nn.Module):
    """``act(obs, deterministic=True)`` clipped to [-1, 1] (the env's own clip), as a module to export."""

    def __init__(self, act: Callable[[torch.Tensor, bool], torch.Tensor], modules: Mapping[str, torch.nn.Module]):
        super().__init__()
        self.parts = torch.nn.ModuleDict(dict(modules))  # parameters and buffers become the graph's initialisers
        self.act = act

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.act(obs, True).clamp(-1.0, 1.0)


def export_policy(act: Callable[[torch.Tensor, bool], torch.Tensor], modules: Mapping[str, torch.nn.Module],
                  obs_dim: int, path: str | os.PathLike[str], sidecar: Mapping[str, Any]) -> Path:
    """Write ``act``'s deterministic policy to ``path`` (ONNX, dynamic batch) and ``sidecar`` next to it (``.json``).

    Args:
        act: ``act(raw_obs, deterministic) -> actions``, as the trainers evaluate.
        modules: the modules ``act`` reads (agent, normalisers); they are moved to the CPU for the export.
        obs_dim: the observation size.
        path: the ``.onnx`` file to write.
        sidecar: JSON data to write next to it (``EXPORT_FORMAT`` and the graph's input and output names are added).

    Raises:
        ValueError: ``path`` does not end in ``.onnx``.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"path: expected a file name ending in .onnx; got {str(path)!r}")
    module = _Deterministic(act, modules).to("cpu").eval()
    example = torch.zeros(2, obs_dim, dtype=torch.float32)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # its notes on torchvision (not needed) would read like failures
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), input_names=["obs"], output_names=["action"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False)
    finally:
        exporter_log.setLevel(level)
    meta = {"format": EXPORT_FORMAT, "input": "obs", "output": "action", **sidecar}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of ``path`` (``policy.onnx`` -> ``policy.json``).

    Raises:
        FileNotFoundError: no sidecar next to the policy. ValueError: a sidecar of another format.
    """
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        raise FileNotFoundError(f"{side}: expected the JSON sidecar written with the policy (--export-onnx)")
    meta = json.loads(side.read_text())
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{side}: sidecar format {meta.get('format')!r}, expected {EXPORT_FORMAT}")
    return meta


class OnnxPolicy:
    """An exported policy under onnxruntime: ``policy(obs) -> actions`` on numpy float32 arrays.

    ``providers``: onnxruntime's execution providers, default CUDA where onnxruntime has it, else the CPU.
    """

    def __init__(self, path: str | os.PathLike[str], providers: list[str] | None = None) -> None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        self.meta = read_sidecar(path)
        self.obs_dim = int(self.meta["obs_dim"])

    def __call__(self, obs: Any) -> np.ndarray:
        obs = np.ascontiguousarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs: expected shape (batch, {self.obs_dim}); got {obs.shape}")
        return self.session.run(["action"], {"obs": obs})[0]

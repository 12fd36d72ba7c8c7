"""The run plumbing of the ``cleanrl_ppo`` trainers: command line, per-env defaults, seeds, envs, evaluation,
checkpoints that resume exactly, TensorBoard, progress and ``summary.json``.

A trainer keeps the algorithm in its own file (its ``Args`` fields, Agent and distribution, GAE, rollout, loss and
update) and hands the rest to an :class:`Experiment`:

    run = Experiment(Args, argv)                       # parse, resolve per-env defaults, seed, run folder
    envs = run.make_envs(args.num_envs)                # training envs; the eval envs share their compiled step
    agent, optimizer, obs_rms = ...
    next_obs = run.start(agent=agent, optimizer=optimizer, obs_rms=obs_rms)   # a fresh reset, or the checkpoint
    for iteration in run.iterations(num_iterations):
        ...                                            # rollout and update: device work only, no host sync
        run.end_iteration(iteration, steps, next_obs, metrics, act)           # eval, one log transfer, checkpoint
    run.finish(act)                                    # model, video, summary.json

Launched by ``torchrun --nproc-per-node N``, a trainer runs data-parallel (see :mod:`playground_gym.distributed`):
each rank steps its own envs (seeded by its rank) on its own device, ``--total-timesteps`` and ``global_step`` count
the env steps of all ranks, and rank 0 alone evaluates and writes TensorBoard, checkpoints (holding every rank's env
state and RNGs) and ``summary.json``. A plain ``python`` run never initialises ``torch.distributed``.

Everything a checkpoint holds is what the next update reads (modules, optimizer, normalisers, the env state, the
last observation, every RNG, counters, accumulators, evaluation history, the learning-rate schedule), so a run
killed after a checkpoint and resumed with ``--resume`` ends bit-identical to the uninterrupted run (on CPU; on CUDA
as far as its kernels are deterministic).

Examples:
    >>> from playground_gym.experiment import derive_seed
    >>> derive_seed(1, "eval", 10) != derive_seed(6, "eval", 5)  # additive offsets would collide here
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import typing
import json
import math
import os
import random
import shutil
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import tyro

import playground_gym
from playground_gym import distributed, keys, provenance, tracking
from playground_gym.autoreset import PRIVILEGED_KEY
from playground_gym.run_settings import HOW_IT_RUNS, settings_digest
from playground_gym.baselines import random_policy_return

__all__ = ["CLIError", "OutputError", "TOTAL_REWARD_MA_FRACTION", "Experiment", "total_reward_ma", "ExperimentArgs",
           "RunningMeanStd", "anneal_fraction", "cli", "derive_seed",
           "episodes", "evaluate", "extend_schedule", "parse_args", "resolve_args", "scores"]

CHECKPOINT_FORMAT = 7  # 3: ppo_multiunroll's Brax schedule, evaluation's own RNG stream; 4: env state format 2;
# 5: the training-return history (total_reward_ma); 6: env state format 3, resumes that extended the run;
# 7: next_obs is the pair (policy observation, critic observation)


class CLIError(Exception):
    """Bad command-line input: reported as one line and exit code 2 (see :func:`cli`)."""


class OutputError(Exception):
    """A run's output could not be written (a full disk, a read-only folder): reported as one line and exit code 1
    (see :func:`cli`); the last checkpoint written before stays intact."""


@dataclass
class ExperimentArgs:
    """The flags every trainer shares; a trainer's ``Args`` extends it with the algorithm's own."""

    exp_name: str = "experiment"
    """the name of this experiment (part of the run folder's name; a trainer's default is its file name)"""
    seed: int = 1
    """seed of torch, numpy, random and (through derive_seed) the envs; the same seed on CPU gives the same run"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    torch_threads: int | None = None
    """torch's CPU threads; None = torch's default (all cores)"""
    device: str | None = None
    """'cpu', 'cuda' or 'cuda:N' for envs, networks and storage; None = JAX's GPU if it has one, else CPU"""
    pin_jax_cpu: bool = True
    """CPU runs: step the envs on one core with a one-thread JAX, torch keeping every core (backend.pin_jax_cpu)"""
    compile: bool = False
    """torch.compile the policy step, GAE and the loss with its backward (inductor; a second run reuses its compiled
    code from the FX graph cache); off by default: on the 2-core CPU it cost more than it saved (docs/trainers.md)"""
    cudagraphs: bool = False
    """with --compile on CUDA: replay the compiled functions as CUDA graphs (torch.compile mode "reduce-overhead")"""
    runs_dir: str = "runs"
    """parent folder of the run folders"""
    capture_video: bool = False
    """render one deterministic evaluation episode at the end to <run>/videos/ (mp4 with ffmpeg, else gif)"""
    save_model: bool = False
    """save the final model (agent + normalisers) to <run>/<exp_name>.cleanrl_model"""
    track: bool = False
    """log to Weights & Biases (config, TensorBoard scalars, the evaluation video, summary.json), CleanRL's way"""
    wandb_project_name: str = "playground_gym"
    """the W&B project of --track"""
    wandb_entity: str | None = None
    """the W&B entity (team or user) of --track; None = your default"""
    wandb_group: str | None = None
    """the W&B group of --track (benchmark.sh sets the campaign's); None = the env id"""
    export_onnx: bool = False
    """write the deterministic policy (observation normaliser included) to <run>/policy.onnx and policy.json at the
    end; with --resume RUN of a finished run, export it without training (its summary.json unchanged)"""
    checkpoint_interval: int = 10
    """write <run>/checkpoint.pt every this many updates and at the end (0 = only with --save-model, at the end)"""
    resume: str | None = None
    """a checkpoint.pt (or its run folder) to continue exactly, with its saved args (--device and a longer
    --total-timesteps may be given)"""
    env_id: str = "CartpoleBalance"
    """a Playground env id, with or without the `playground/` prefix (see playground_gym.list_envs())"""
    full_reset: bool = True
    """every episode starts from a fresh initial state; --no-full-reset replays each env's first state (upstream)"""
    critic_obs_key: str | None = None
    """what the critic sees: 'state' (the policy's observation) or 'privileged_state' (an asymmetric critic, with its
    own normaliser); None = the official config's value_obs_key (privileged_state for Go1, G1, T1, LEAP, ...)"""
    domain_randomization: bool | None = None
    """--domain-randomization / --no-domain-randomization: each env steps its own model drawn by the task's official
    Playground randomiser (friction, masses, ...); None = on exactly where the task has one, as Playground's scripts"""
    episode_length: int | None = None
    """physics control steps per episode; None = the env's official value (1000 on DM Control)"""
    action_repeat: int | None = None
    """control steps per agent decision; None = the env's official value (e.g. 4 for PendulumSwingup)"""
    eval_interval: int = 5
    """evaluate every this many updates and at the end (0 = only at the end)"""
    num_eval_envs: int | None = None
    """envs (one full episode each) per evaluation; None = --num-envs, so they share the training envs' compiled step"""
    eval_stochastic: bool = False
    """evaluate with sampled actions instead of the deterministic action"""
    log_interval: int = 1
    """write scalars and progress every this many updates (the only time values leave the device)"""
    dist_timeout: float = 900.0
    """torchrun runs: seconds a collective may wait for the other ranks before the run fails (a dead or hung rank)"""

    # field -> official_config key of the fields that None resolves per env; trainers extend it
    per_env_defaults: ClassVar[dict[str, str]] = {"episode_length": "episode_length",
                                                  "action_repeat": "action_repeat",
                                                  "domain_randomization": "domain_randomization",
                                                  "critic_obs_key": "value_obs_key"}
    # name -> {field: value}: what --preset NAME gives the None fields before official_config does
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def checks(self) -> list[tuple[bool, str]]:
        """(condition, message if it fails) of the resolved args; trainers add their own."""
        return [
            (self.episode_length > 0 and self.action_repeat > 0 and self.episode_length >= self.action_repeat,
             f"--episode-length ({self.episode_length}) and --action-repeat ({self.action_repeat}) must be > 0 with "
             f"episode_length >= action_repeat"),
            (self.num_eval_envs is None or self.num_eval_envs > 0,
             f"--num-eval-envs must be > 0; got {self.num_eval_envs}"),
            ((self.eval_interval is None or self.eval_interval >= 0) and self.checkpoint_interval >= 0
             and self.log_interval > 0,
             "--eval-interval and --checkpoint-interval must be >= 0, --log-interval > 0"),
            (0 <= self.seed < 2**32, f"--seed must be in [0, 2**32) (numpy's seed range); got {self.seed}"),
            (self.episode_length < 2**31, f"--episode-length must be < 2**31 (an int32 on the device); got "
                                          f"{self.episode_length}"),
            (self.torch_threads is None or self.torch_threads > 0,
             f"--torch-threads must be > 0; got {self.torch_threads}"),
            (self.exp_name not in ("", ".", "..") and "/" not in self.exp_name and os.sep not in self.exp_name,
             f"--exp-name must be a plain name (it names a folder inside --runs-dir); got {self.exp_name!r}"),
            (not os.path.exists(self.runs_dir) or os.path.isdir(self.runs_dir),
             f"--runs-dir must be a folder; {self.runs_dir!r} is a file"),
            *_finite_checks(self),
            (self.dist_timeout > 0, f"--dist-timeout must be > 0; got {self.dist_timeout}"),
            (self.compile or not self.cudagraphs, "--cudagraphs needs --compile (it is a torch.compile mode)"),
            (self.critic_obs_key in ("state", PRIVILEGED_KEY),
             f"--critic-obs-key must be 'state' (the policy's observation) or '{PRIVILEGED_KEY}'; got "
             f"{self.critic_obs_key!r}"),
        ]


def _finite_checks(args: Any) -> list[tuple[bool, str]]:
    """Every float flag (alone or in a tuple) must be finite: a NaN coefficient would skip every update and a run
    would still end with exit code 0."""
    out = []
    for field in dataclasses.fields(args):
        value = getattr(args, field.name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            out.append((False, f"--{field.name.replace('_', '-')} must be finite; got {value}"))
    return out


def _optional_flag_pairs(args_type: type, argv: list[str]) -> list[str]:
    """``--name`` / ``--no-name`` for the ``bool | None`` fields (None = a per-env default), which tyro otherwise
    spells ``--name True`` / ``--name False`` (still accepted)."""
    hints = typing.get_type_hints(args_type)
    names = {f.name.replace("_", "-") for f in dataclasses.fields(args_type) if hints.get(f.name) == (bool | None)}
    out = []
    for i, token in enumerate(argv):
        flag = token[2:] if token.startswith("--") else ""
        value_follows = i + 1 < len(argv) and argv[i + 1] in ("True", "False", "None")
        if flag in names and not value_follows:
            out += [token, "True"]
        elif flag.startswith("no-") and flag[3:] in names:
            out += [f"--{flag[3:]}", "False"]
        else:
            out.append(token)
    return out


def parse_args(args_type: type, argv: list[str] | None = None) -> Any:
    """tyro's parser, but an error is one line (tyro prints a multi-line box) raised as :class:`CLIError`."""
    argv = _optional_flag_pairs(args_type, sys.argv[1:] if argv is None else list(argv))
    if "-h" in argv or "--help" in argv:
        return tyro.cli(args_type, args=argv)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            return tyro.cli(args_type, args=argv)
    except SystemExit as e:
        lines = [ln.strip(" │╭╮╰╯─") for ln in buf.getvalue().splitlines()]
        lines = [ln for ln in lines if ln and set(ln) - set("-─ ")]
        raise CLIError(lines[1] if len(lines) > 1 else (lines[0] if lines else f"invalid arguments (code {e.code})"))


def resolve_args(args: Any) -> tuple[Any, dict[str, str]]:
    """Fill the None per-env fields (preset first, then official_config) and run ``args.checks()``.

    Returns ``(args, sources)``: ``sources[field]`` says where each per-env value came from ("user",
    "preset 'cpu'", "official_config['discounting']").

    Raises:
        CLIError: an unknown env id, or a failed check (the message names the flag and the value).
    """
    try:
        config = playground_gym.official_config(args.env_id)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    args.env_id = config["env_id"]
    preset = type(args).presets.get(getattr(args, "preset", None), {})
    sources = {}
    for field, key in type(args).per_env_defaults.items():
        if getattr(args, field) is not None:
            sources[field] = "user"
        elif field in preset:
            sources[field] = f"preset {args.preset!r}"
            setattr(args, field, preset[field])
        else:
            sources[field] = f"official_config[{key!r}]"
            setattr(args, field, config[key])
    for field in dataclasses.fields(args):  # tyro gives lists for tuple fields read back from JSON
        if isinstance(getattr(args, field.name), list):
            setattr(args, field.name, tuple(getattr(args, field.name)))
    for ok, message in args.checks():
        if not ok:
            raise CLIError(message)
    return args, sources


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """An independent seed for (``seed``, ``purpose``, ``index``) by numpy's SeedSequence (a key split).

    Additive offsets collide across runs (seed 1 at iteration 10 would share evaluation states with seed 6 at
    iteration 5); spawn keys do not.

    Examples:
        >>> derive_seed(1, "train") == derive_seed(1, "train") != derive_seed(1, "eval")
        True
    """
    sequence = np.random.SeedSequence(seed, spawn_key=(zlib.crc32(purpose.encode()), index))
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


class RunningMeanStd(nn.Module):
    """Running mean and variance over batches (Chan et al.'s parallel Welford update), on the device in float64.

    The statistics are buffers, so they travel with ``state_dict()`` into checkpoints. A batch with a non-finite
    value is skipped (without a host sync), so one bad batch cannot poison every later normalisation. In a
    distributed run each update folds in the batches of all ranks (:func:`playground_gym.distributed.merge_moments`;
    one non-finite batch makes every rank skip), so every rank normalises with the same statistics, as Brax does.

    Examples:
        >>> rms = RunningMeanStd((2,))
        >>> rms.update(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
        >>> rms.mean.tolist(), rms.var.tolist()
        ([2.0, 4.0], [1.0, 4.0])
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-8, clip: float = 10.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.epsilon, self.clip = epsilon, clip

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch ``x`` of shape (n, *shape) into the statistics (no host sync)."""
        x = x.reshape((-1,) + self.mean.shape).to(torch.float64)
        n = x.shape[0]
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)
        if distributed.active():  # the statistics of every rank's batch together, identical on every rank
            n, batch_mean, batch_var = distributed.merge_moments(n, batch_mean, batch_var)
            finite = torch.isfinite(batch_mean).all() & torch.isfinite(batch_var).all()
        else:
            finite = torch.isfinite(x).all()
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.mean.copy_(torch.where(finite, self.mean + delta * n / total, self.mean))
        self.var.copy_(torch.where(finite, m2 / total, self.var))
        self.count.copy_(torch.where(finite, total, self.count))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(self.var + self.epsilon)
        return ((x - self.mean) / std).clamp(-self.clip, self.clip).to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x * torch.sqrt(self.var + self.epsilon) + self.mean).to(x.dtype)


TOTAL_REWARD_MA_FRACTION = 0.1  # SLM-Lab: a 100-checkpoint moving average of a run logged 1,000 times, at its end


def total_reward_ma(steps: Any, returns: Any, final_step: float,
                    fraction: float = TOTAL_REWARD_MA_FRACTION) -> float | None:
    """SLM-Lab's end-of-training score: the mean *training* return (episodes that ended during training, as logged
    at each log interval) over the last ``fraction`` of the run's env steps, i.e. the returns logged at steps
    ``>= (1 - fraction) * final_step``; the last logged return where none falls there; ``None`` with none at all.

    SLM-Lab's ``total_reward_ma`` is the moving average (window 100) of the training return at its log checkpoints,
    read at the end of a run logged every 100k of 100M frames: the last tenth of the run.

    Examples:
        >>> total_reward_ma([100, 200, 900, 1000], [10.0, 20.0, 90.0, 100.0], final_step=1000)
        95.0
    """
    steps, returns = np.asarray(steps, dtype=float), np.asarray(returns, dtype=float)
    keep = np.isfinite(returns)
    steps, returns = steps[keep], returns[keep]
    if not len(returns):
        return None
    late = returns[steps >= (1.0 - fraction) * final_step]
    return float(np.mean(late)) if len(late) else float(returns[-1])


def scores(eval_history: list[dict[str, Any]], baseline: float | None,
           train_history: list[dict[str, Any]] | None = None, final_step: float | None = None) -> dict[str, float | None]:
    """The benchmark scores of ``summary.json`` (docs/campaigns.md): ``strength`` and ``final_strength``
    over the evaluation checkpoints after training began (an evaluation of the initial policy at step 0,
    ppo_multiunroll's as Brax's, is left out, so trainers with and without one compare); ``total_reward_ma`` from
    the training returns of ``train_history`` (:func:`total_reward_ma`, the last tenth of the run up to
    ``final_step``, default the last logged step)."""
    returns = [e["return"] for e in eval_history if e["step"] > 0]
    train = train_history or []
    final = final_step if final_step is not None else (train[-1]["step"] if train else 0)
    ma = total_reward_ma([e["step"] for e in train], [e["return"] for e in train], final)
    if not returns:
        return {"strength": None, "final_strength": None, "total_reward_ma": ma}
    return {
        "strength": None if baseline is None else float(np.mean(returns) - baseline),
        "final_strength": None if baseline is None else float(returns[-1] - baseline),
        "total_reward_ma": ma,
    }


def anneal_fraction(segment: tuple[int, float, int], iteration: int) -> float:
    """Linear annealing to 0: ``segment = (start, fraction at start, last iteration)``.

    A run of N updates has the segment ``(0, 1.0, N)``, so ``iteration`` k (1-based) trains at ``(N - k + 1) / N`` of
    the initial rate (CleanRL's schedule).

    Examples:
        >>> [anneal_fraction((0, 1.0, 4), k) for k in (1, 2, 3, 4)]
        [1.0, 0.75, 0.5, 0.25]
    """
    start, fraction, end = segment
    return fraction * (end - iteration + 1) / (end - start)


def extend_schedule(segment: tuple[int, float, int], iteration: int, new_end: int) -> tuple[int, float, int]:
    """The schedule of a run resumed after ``iteration`` with a new last iteration ``new_end``: it goes on from the
    fraction that ``iteration`` used down to 0 at the new end, so the learning rate never jumps back up.

    Examples:
        >>> extended = extend_schedule((0, 1.0, 4), 2, 8)  # 2 of 4 updates done (0.75 used last), now 8 in all
        >>> [round(anneal_fraction(extended, k), 4) for k in range(3, 9)]
        [0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    """
    return (iteration, anneal_fraction(segment, iteration), new_end)


Act = Callable[[torch.Tensor, bool], torch.Tensor]  # act(raw_obs, deterministic) -> actions for envs.step


@torch.no_grad()
def evaluate(act: Act, eval_envs: Any, seed: int, stochastic: bool = False) -> float:
    """One full episode in each eval env (all start together, so all end within max_episode_steps); mean return.

    Sampled actions (``stochastic``) draw from torch's generators seeded by ``seed`` inside a fork of the global RNG
    state, which is restored afterwards: a training run is the same whether or not, and how often, it evaluates.
    """
    return episodes(act, eval_envs, seed, stochastic)[0].mean().item()


@torch.no_grad()
def episodes(act: Act, eval_envs: Any, seed: int, stochastic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`evaluate`'s episodes, per env: ``(returns, lengths)``, the first episode of each env (device tensors)."""
    device = eval_envs.device
    cuda_devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        obs, _ = eval_envs.reset(seed=seed)
        returns = torch.zeros(eval_envs.num_envs, device=device)
        lengths = torch.zeros(eval_envs.num_envs, dtype=torch.int32, device=device)
        finished = torch.zeros(eval_envs.num_envs, dtype=torch.bool, device=device)
        for _ in range(eval_envs.max_episode_steps):
            obs, _, _, _, info = eval_envs.step(act(obs, not stochastic))
            first = info["_episode"] & ~finished
            returns = torch.where(first, info["episode"]["r"], returns)
            lengths = torch.where(first, info["episode"]["l"], lengths)
            finished |= first
        return returns, lengths


@torch.no_grad()
def capture_video(act: Act, envs: Any, path: str, seed: int) -> str | None:
    """Render one deterministic episode with the MjxEnv's own renderer (MuJoCo's CPU renderer via MUJOCO_GL)."""
    import jax

    env = envs.mjx_env
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    state = reset(keys.root_key(seed))  # the whole 63-bit seed (PRNGKey keeps 32 bits without x64)
    trajectory = [state]
    for _ in range(envs.max_episode_steps):
        obs = state.obs[envs.obs_key] if isinstance(state.obs, dict) else state.obs
        action = act(torch.as_tensor(np.array(obs), device=envs.device)[None], True)
        action = jax.numpy.asarray(action[0].clamp(-1, 1).cpu().numpy())
        for _ in range(envs.action_repeat):
            state = step(state, action)
        trajectory.append(state)
        if float(state.done) > 0:
            break
    has_ffmpeg = shutil.which("ffmpeg") is not None
    fps = 1.0 / (float(env.dt) * envs.action_repeat)
    stride = max(1, round(fps / (30 if has_ffmpeg else 15)))  # GIFs get fewer frames to stay a few MB
    try:
        frames = env.render(trajectory[::stride], height=240, width=320)
    except Exception as e:  # no usable OpenGL backend (EGL/OSMesa libraries missing, no display for GLFW)
        print(f"capture_video: rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} ({type(e).__name__}: "
              f"{e}); install EGL or OSMesa and set MUJOCO_GL=egl or MUJOCO_GL=osmesa. Skipping the video.")
        return None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if has_ffmpeg:
        import mediapy

        mediapy.write_video(path + ".mp4", frames, fps=fps / stride)
        return path + ".mp4"
    from PIL import Image

    images = [Image.fromarray(np.asarray(f)) for f in frames]
    images[0].save(path + ".gif", save_all=True, append_images=images[1:], duration=int(1000 * stride / fps), loop=0)
    return path + ".gif"


def _rng_states(device: torch.device) -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


class Experiment:
    """One training run's plumbing; see the module docstring for the life cycle.

    Args:
        args_type: the trainer's ``Args`` (an :class:`ExperimentArgs` dataclass).
        argv: command-line arguments (``None`` = ``sys.argv[1:]``).
        start_time: when the run's wall time starts (the trainer's import time: imports and compiles count).

    Attributes:
        args, sources: the resolved args and where each per-env value came from.
        run_dir: ``<runs_dir>/<env>__<exp_name>__<seed>__<unix time>`` (a resumed run's own folder).
        resumed: the loaded checkpoint, or ``None``.
        global_step: env steps so far; ``episode_stats``: device (3,) sum of returns, lengths and count of
            finished episodes since the last log; ``nonfinite_updates``: device count of skipped SGD steps.
    """

    def __init__(self, args_type: type, argv: list[str] | None = None, start_time: float | None = None) -> None:
        self.start_time = start_time or time.time()
        try:
            self.world = distributed.World.from_environment()
        except distributed.DistributedError as e:
            raise CLIError(str(e)) from None
        args = parse_args(args_type, argv)
        self.resumed: dict[str, Any] | None = None
        self.extended_from: int | None = None
        # every resume that raised --total-timesteps: {"step", "from_total_timesteps"} (run_settings.settings_of)
        self.extensions: list[dict[str, int]] = []
        if args.resume:
            path = os.path.join(args.resume, "checkpoint.pt") if os.path.isdir(args.resume) else args.resume
            if not os.path.isfile(path):
                raise CLIError(f"--resume: no checkpoint at {path!r}")
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as err:  # noqa: BLE001 -- truncated, empty, random or not a torch file: one line
                raise CLIError(f"--resume: {path} is not a readable checkpoint ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else 'no detail'})") from None
            if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
                found = checkpoint.get("format", 1) if isinstance(checkpoint, dict) else type(checkpoint).__name__
                raise CLIError(f"--resume: {path} is a checkpoint of an older version (format {found}, expected "
                               f"{CHECKPOINT_FORMAT}); it cannot continue exactly")
            given = sys.argv[1:] if argv is None else argv  # flags that may change on resume: device, total_timesteps
            extend = any(a.split("=")[0] in ("--total-timesteps", "--total_timesteps") for a in given)
            saved = checkpoint["args"]
            if extend and args.total_timesteps == checkpoint["global_step"]:
                extend = False  # the steps it has done: nothing more to train (e.g. an export), not an extension
            # flags added after the checkpoint was written that only change how a run executes: their defaults
            defaults = {f.name: f.default for f in dataclasses.fields(args_type) if f.name in HOW_IT_RUNS}
            saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
            fields = {f.name for f in dataclasses.fields(args_type)}
            if set(saved) != fields:  # another trainer's checkpoint (ppo_tanh's given to ppo_continuous, ...)
                raise CLIError(f"--resume: {path} was written by {saved.get('exp_name', 'another trainer')!r}, whose "
                               f"flags differ from this trainer's (only there: {sorted(set(saved) - fields)}; only "
                               f"here: {sorted(fields - set(saved))}); resume it with the trainer that wrote it")
            if checkpoint.get("world_size", 1) != self.world.size:
                raise CLIError(f"--resume: {path} is a checkpoint of {checkpoint.get('world_size', 1)} rank(s); this "
                               f"run has {self.world.size} (resume with the same torchrun --nproc-per-node/--nnodes)")
            if extend and args.total_timesteps != saved["total_timesteps"]:
                if args.total_timesteps < checkpoint["global_step"]:
                    raise CLIError(f"--total-timesteps ({args.total_timesteps}) must be >= the checkpoint's "
                                   f"{checkpoint['global_step']} steps to continue it")
                self.extended_from = saved["total_timesteps"]
            self.extensions = list(checkpoint.get("extensions", []))
            if self.extended_from is not None:
                self.extensions.append({"step": int(checkpoint["global_step"]),
                                        "from_total_timesteps": int(self.extended_from)})
            exporting = any(a.split("=")[0] in ("--export-onnx", "--export_onnx") for a in given)
            args = args_type(**{**saved, "resume": args.resume, "device": args.device,
                                **({"total_timesteps": args.total_timesteps} if extend else {}),
                                **({"export_onnx": args.export_onnx} if exporting else {})})
            args, _ = resolve_args(args)  # tuples from JSON lists; values are all set, so nothing is overridden
            self.sources, self.run_dir, self.resumed = checkpoint["sources"], os.path.dirname(os.path.abspath(path)), \
                checkpoint
            if self.world.is_main:
                print(f"resume: continuing from step {checkpoint['global_step']} with the checkpoint's saved args")
        else:
            args, self.sources = resolve_args(args)
            self.run_dir = os.path.join(args.runs_dir, f"{args.env_id}__{args.exp_name}__{args.seed}__"
                                                       f"{int(self.start_time)}")
        self.args = args
        world = self.world
        self.device_spec = args.device
        if args.track and not tracking.available():
            raise CLIError(f"--track needs the wandb package ({tracking.INSTALL_HINT})")
        if args.export_onnx:
            missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
            if missing:
                raise CLIError(f"--export-onnx needs {missing} (pip install 'playground_gym[export]')")
        if args.cudagraphs:
            try:
                platform = playground_gym.backend.resolve_device(args.device).platform
            except (ValueError, RuntimeError) as e:
                raise CLIError(str(e)) from None
            if platform != "gpu":
                raise CLIError(f"--cudagraphs: needs a CUDA device; this run's device is {args.device or platform!r}")
        if world.active:
            try:
                self.device_spec = distributed.rank_device(args.device, world, bool(playground_gym.backend._jax_gpus()))
            except ValueError as e:
                raise CLIError(str(e)) from None
            distributed.init_world(self.device_spec, args.dist_timeout, world)
            self._check_same_args()
            shared = [self.run_dir]
            torch.distributed.broadcast_object_list(shared, src=0)  # rank 0's folder (its clock names it)
            self.run_dir = shared[0]
        if world.is_main:
            print(f"{'resuming' if self.resumed else 'run'}: {self.run_dir}"
                  + (f" ({world.size} ranks, data-parallel)" if world.active else ""))
            print("resolved per-env settings: " + ", ".join(f"{k}={getattr(args, k)} ({v})"
                                                            for k, v in self.sources.items()))
            print("args: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()))

        # TRY NOT TO MODIFY: seeding
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        torch.backends.cudnn.deterministic = args.torch_deterministic
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        # Ranks sharing a machine would all pin JAX to the same core; they keep the OS's placement.
        cpu = playground_gym.backend.pin_jax_cpu(args.device) if args.pin_jax_cpu and not world.active else None
        if cpu is not None:
            print(f"CPU run: JAX's env steps pinned to CPU {cpu} (one thread), torch on {torch.get_num_threads()} threads")
        torch.set_flush_denormal(True)  # as XLA on CPU: denormal gradients made backward passes up to ~10x slower here

        self.global_step, self.start_iteration, self.eval_history = 0, 0, []
        self.prior_wall, self.last_return = 0.0, float("nan")
        self.train_history: list[dict[str, Any]] = []  # (step, mean return of the episodes ended) per log interval
        self.lr_segment: tuple[int, float, int] | None = None  # (iteration, learning rate there, last iteration)
        self.envs: Any = None
        self.eval_envs: Any = None
        self._modules: dict[str, Any] = {}
        self._networks: list[nn.Module] = []
        self.replica_checks: list[dict[str, Any]] = []

    def _check_same_args(self) -> None:
        """torchrun: every rank must run with the same flags (one collective, before anything rank-dependent);
        ranks that differ would run different schedules and fail later with an unrelated message, or hang."""
        mine = json.loads(json.dumps(asdict(self.args), default=str))
        every: list[Any] = [None] * self.world.size
        torch.distributed.all_gather_object(every, mine)
        differ = sorted(k for k in mine if len({json.dumps(rank.get(k)) for rank in every}) > 1)
        if differ:
            raise CLIError("the ranks were launched with different flags (launch every rank with the same ones): " +
                           "; ".join(f"{k}: {[rank.get(k) for rank in every]} (rank 0, 1, ...)" for k in differ))

    # -- envs and start ---------------------------------------------------------------------------------------------

    def make_envs(self, num_envs: int, **env_kwargs: Any) -> Any:
        """The training envs (seeded by rank_seed("train")) and ``self.eval_envs``, of identical settings
        unless --num-eval-envs differs, so they share one compiled step. ``env_kwargs`` go to both (e.g. a
        ``reward_scale``: evaluation reads the unscaled episode returns)."""
        args = self.args
        kwargs = dict(device=self.device_spec, episode_length=args.episode_length, action_repeat=args.action_repeat,
                      full_reset=args.full_reset, domain_randomization=bool(args.domain_randomization), quiet=True,
                      **env_kwargs)
        num_eval_envs = args.num_eval_envs or num_envs
        if num_eval_envs != num_envs and self.world.is_main:
            print(f"note: --num-eval-envs {num_eval_envs} != {num_envs} training envs: evaluation compiles its own step")
        try:
            self.envs = playground_gym.make_vec(args.env_id, num_envs, seed=self.rank_seed("train"), **kwargs)
            self.eval_envs = playground_gym.make_vec(args.env_id, num_eval_envs, seed=derive_seed(args.seed, "eval"),
                                                     **kwargs)
        except (ValueError, TypeError, KeyError, playground_gym.MenagerieUnavailableError) as e:
            raise CLIError(str(e)) from None  # bad input or missing robot assets: one line, not a traceback
        if args.critic_obs_key == PRIVILEGED_KEY and not self.envs.has_privileged_state:
            self.envs.close()
            self.eval_envs.close()
            raise CLIError(f"--critic-obs-key {PRIVILEGED_KEY}: {args.env_id}'s observations have no {PRIVILEGED_KEY}; "
                           f"expected --critic-obs-key state")
        self.critic_key = PRIVILEGED_KEY if args.critic_obs_key == PRIVILEGED_KEY else None
        self.critic_obs_dim = int(np.prod(self.envs.privileged_state_shape if self.critic_key else
                                          self.envs.single_observation_space.shape))
        self.device = self.envs.device
        self.episode_stats = torch.zeros(3, device=self.device)
        self.nonfinite_updates = torch.zeros((), device=self.device)
        self.baseline = self._baseline()
        return self.envs

    def observe(self, obs: torch.Tensor, info: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(policy observation, critic observation)`` of a reset or step: ``info["privileged_state"]`` for an
        asymmetric critic (--critic-obs-key privileged_state), else ``obs`` itself (the same tensor, not a copy)."""
        return obs, info[self.critic_key] if self.critic_key else obs

    def final_observations(self, info: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The true terminal ``(policy, critic)`` observations of a step (where an env finished; elsewhere the next
        ones): ``info["final_obs"]`` and, for an asymmetric critic, ``info["final_privileged_state"]``."""
        final = info["final_obs"]
        return final, info["final_" + self.critic_key] if self.critic_key else final

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` under ``torch.compile`` with --compile (as CUDA graphs with --cudagraphs), else ``fn`` itself.

        Under CUDA graphs a replay overwrites the previous call's outputs, so the outputs are cloned: a trainer may
        keep them (rollout storage, last-minibatch losses) as it does in eager mode.
        """
        if not self.args.compile:
            return fn
        if not self.args.cudagraphs:
            return torch.compile(fn)
        graphed = torch.compile(fn, mode="reduce-overhead")

        def replay(*args: Any, **kwargs: Any) -> Any:
            torch.compiler.cudagraph_mark_step_begin()
            return torch.utils._pytree.tree_map_only(torch.Tensor, torch.clone, graphed(*args, **kwargs))

        return replay

    def rank_seed(self, purpose: str, index: int = 0) -> int:
        """``derive_seed(seed, purpose, index)`` for this rank's own draws (its training envs, its sampling RNGs, a
        trainer's forced resets): a single process and rank 0 get exactly that; rank r > 0 a further split of it by
        its rank, so ranks never draw the same initial states or noise."""
        seed = derive_seed(self.args.seed, purpose, index)
        return seed if self.world.rank == 0 else derive_seed(seed, "rank", self.world.rank)

    def _baseline(self) -> float | None:
        args = self.args
        try:
            baseline = random_policy_return(args.env_id)
            official = playground_gym.official_config(args.env_id)
        except ValueError as e:
            print(f"note: strength scores unavailable: {e}")
            return None
        if (args.episode_length, args.action_repeat) != (official["episode_length"], official["action_repeat"]):
            print(f"note: strength scores unavailable: the random-policy return of {args.env_id} was measured with the "
                  f"official episode_length/action_repeat, not {args.episode_length}/{args.action_repeat}")
            return None
        return baseline

    def start(self, **modules: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Register what a checkpoint saves (modules and optimizers: anything with ``state_dict``) and return the
        first ``(policy, critic)`` observations (:meth:`observe`): the training envs' fresh reset, or, resuming, every
        saved state put back exactly."""
        from torch.utils.tensorboard import SummaryWriter

        self._modules = modules
        # what must match across ranks, each module once (critic_rms may be another name of obs_rms)
        self._networks = list({id(m): m for m in modules.values() if isinstance(m, nn.Module)}.values())
        world, networks = self.world, self._networks
        if self.resumed is None:
            next_obs = self.observe(*self.envs.reset(seed=self.rank_seed("train")))
            if world.active:  # one model on every rank; then each rank samples its own actions and minibatches
                distributed.broadcast_parameters(networks)
                distributed.check_replicated(networks, "start")
                if world.rank:
                    own_seed = self.rank_seed("torch")
                    torch.manual_seed(own_seed)
                    np.random.seed(own_seed % 2**32)
                    random.seed(own_seed)
            self.wandb = tracking.start(self.args, self.run_dir, vars(self.args)) if self.args.track and world.is_main \
                else None  # before TensorBoard's writer: W&B syncs what it writes
            self.writer = SummaryWriter(self.run_dir) if world.is_main else None
            if self.writer is None:
                return next_obs
            self.writer.add_text("hyperparameters", "|param|value|source|\n|-|-|-|\n" + "\n".join(
                f"|{k}|{v}|{self.sources.get(k, 'default or flag')}|" for k, v in vars(self.args).items()))
            return next_obs
        c = self.resumed
        own = c if world.rank == 0 else c["rank_states"][world.rank - 1]  # this rank's envs, observations, RNGs
        try:
            for name, module in modules.items():
                module.load_state_dict(c[name])
            self.envs.load_state_dict(own["envs"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:  # a checkpoint of other shapes or envs
            raise CLIError(f"--resume: the checkpoint does not fit this run ({type(err).__name__}: "
                           f"{str(err).splitlines()[0]})") from None
        self.episode_stats.copy_(own["episode_stats"])
        self.nonfinite_updates.copy_(c["nonfinite_updates"])
        self.global_step, self.start_iteration, self.eval_history = c["global_step"], c["iteration"], c["eval_history"]
        self.prior_wall, self.last_return, self.lr_segment = c["wall_time"], c["last_return"], c["lr_segment"]
        self.train_history = c["train_history"]
        self.replica_checks = c.get("replica_checks", [])
        _set_rng_states(own["rng"])
        # purge_step drops events a killed run wrote after its last checkpoint, so curves do not overlap
        self.wandb = tracking.start(self.args, self.run_dir, vars(self.args)) if self.args.track and world.is_main \
            else None
        self.writer = SummaryWriter(self.run_dir, purge_step=self.global_step + 1) if world.is_main else None
        distributed.check_replicated(networks, "resume")
        obs, critic_obs = (x.to(self.device) for x in own["next_obs"])
        return (obs, obs) if self.critic_key is None else (obs, critic_obs)  # one tensor where the critic shares it

    def check_schedule(self, num_iterations: int, steps_per_update: int) -> None:
        """Check a trainer's schedule before it starts: at least one update of ``steps_per_update`` env steps (of all
        ranks together). Under torchrun every rank computes the same schedule: it is a function of the flags, which
        the ranks compared when the run was made (one collective, :meth:`_check_same_args`), and of the world size.

        Raises:
            CLIError: fewer than one update (every rank raises it).
        """
        args = self.args
        if num_iterations < 1:
            ranks = f" of all {self.world.size} ranks" if self.world.active else ""
            raise CLIError(f"--total-timesteps ({args.total_timesteps}) must be >= one update{ranks} "
                           f"({steps_per_update} env steps); got 0 updates")

    def iterations(self, num_iterations: int, eval_interval: int | None = None,
                   steps_per_agent_step: int = 1) -> Iterator[int]:
        """The updates still to run, 1-based; a progress bar follows ``global_step``.

        ``eval_interval``: evaluate every this many updates (and after the last; 0 = only then); ``None`` = the
        ``--eval-interval`` flag. ``steps_per_agent_step``: what one agent step adds to ``global_step`` (1, or
        ``action_repeat`` for a trainer that counts control steps as Brax does); ``summary.json`` records both counts.
        """
        from tqdm import tqdm

        self.num_iterations = num_iterations
        self.eval_interval = self.args.eval_interval if eval_interval is None else eval_interval
        self.steps_per_agent_step = steps_per_agent_step
        if self.lr_segment is None:
            self.lr_segment = (0, 1.0, num_iterations)
        elif self.extended_from is not None and self.lr_segment[2] != num_iterations:
            self.lr_segment = extend_schedule(self.lr_segment, self.start_iteration, num_iterations)
        self.session_start_step, self.session_start_time = self.global_step, time.time()
        self.progress = tqdm(total=self.args.total_timesteps, initial=self.global_step, unit="step", file=sys.stdout,
                             disable=not sys.stdout.isatty() or not self.world.is_main, dynamic_ncols=True)
        return iter(range(self.start_iteration + 1, num_iterations + 1))

    def lr_fraction(self, iteration: int) -> float:
        """The fraction of the initial learning rate that linear annealing uses at ``iteration`` (1-based)."""
        return anneal_fraction(self.lr_segment, iteration)

    # -- per update -------------------------------------------------------------------------------------------------

    def end_iteration(self, iteration: int, steps: int, next_obs: tuple[torch.Tensor, torch.Tensor],
                      metrics: Mapping[str, Any],
                      act: Act) -> None:
        """After an update of ``steps`` env steps: evaluate, log (one device-to-host transfer), checkpoint.

        ``metrics``: TensorBoard tag -> device tensor or number, read only on log intervals.
        ``act(raw_obs, deterministic)``: the policy evaluated.
        """
        args = self.args
        self.global_step += steps * self.world.size
        last = iteration == self.num_iterations
        if (self.eval_interval and iteration % self.eval_interval == 0) or last:
            self._evaluate(act, iteration)
        if iteration % args.log_interval == 0 or last:
            self._log(metrics)
        if (args.checkpoint_interval and iteration % args.checkpoint_interval == 0) or (last and (
                args.checkpoint_interval or args.save_model)):
            self._checkpoint(iteration, next_obs)

    def evaluate_initial_policy(self, act: Act) -> None:
        """Evaluate the policy before its first update, at step 0 (as Brax's ``ppo.train`` does when num_evals > 1);
        nothing when resuming. Call after :meth:`iterations`. The benchmark scores leave this evaluation out."""
        if self.resumed is None:
            self._evaluate(act, 0)

    def _evaluate(self, act: Act, iteration: int) -> None:
        """Rank 0: one evaluation of ``act`` (seeded by ``iteration``) into the history and TensorBoard."""
        if not self.world.is_main:
            return
        args = self.args
        eval_return = evaluate(act, self.eval_envs, derive_seed(args.seed, "eval", iteration), args.eval_stochastic)
        wall = self.wall_time()
        self.eval_history.append({"step": self.global_step, "wall_time": round(wall, 2), "return": eval_return,
                                  "iteration": iteration})
        self.writer.add_scalar("eval/episodic_return", eval_return, self.global_step)
        if not self.progress.disable:
            self.progress.write(f"step {self.global_step}: eval return {eval_return:.1f} ({wall:.0f} s)")

    def _finish_without_training(self, act: Act, model: tuple[str, ...], summary_path: str) -> dict[str, Any]:
        """A resumed run with nothing left to train: export if asked; its summary.json stays as the run wrote it."""
        with open(summary_path) as f:
            summary = json.load(f)
        if self.args.export_onnx:
            exported = self._export(act, {name: self._modules[name] for name in model}, summary)
            print(f"policy exported to {exported} (and {exported.with_suffix('.json').name}); nothing left to train, "
                  f"{summary_path} unchanged")
        else:
            print(f"nothing left to train ({self.global_step} steps done); {summary_path} unchanged")
        self.envs.close()
        self.eval_envs.close()
        self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.world.active:
            torch.distributed.destroy_process_group()
        return summary

    def _export(self, act: Act, modules: Mapping[str, nn.Module], summary: Mapping[str, Any]) -> Any:
        """policy.onnx and its sidecar (playground_gym.export); the modules end on the CPU (the run is over)."""
        from playground_gym import export

        args, envs = self.args, self.eval_envs
        config = getattr(envs.mjx_env, "_config", None) or {}
        plain_config = json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else dict(config),
                                             default=str))
        last = self.eval_history[-1] if self.eval_history else {}
        scale, ctrl_dt = plain_config.get("action_scale"), plain_config.get("ctrl_dt")
        sidecar = {
            "env_id": args.env_id, "obs_key": envs.obs_key, "obs_dim": int(envs.single_observation_space.shape[0]),
            "action_size": int(envs.single_action_space.shape[0]),
            "action_scale": scale, "ctrl_dt": ctrl_dt,
            "action_repeat": envs.action_repeat, "episode_length": envs.episode_length,
            "control_period_s": float(ctrl_dt) * envs.action_repeat if ctrl_dt else None,
            "policy": "deterministic action of " + args.exp_name + ", clipped to [-1, 1]; observation normaliser inside",
            "env_config": plain_config,  # Kp, Kd, action_scale, noise, ...: what the env does around the policy
            "device": envs.jax_device.platform, "impl": envs.impl,
            "run": {"run_dir": os.path.abspath(self.run_dir), "trainer": args.exp_name, "seed": args.seed,
                    "env_steps": summary.get("env_steps"), "settings_digest": summary.get("settings_digest"),
                    "code": summary.get("code"), "final_eval_return": summary.get("final_eval_return")},
            "evaluation": {"seed": derive_seed(args.seed, "eval", last["iteration"]) if "iteration" in last else None,
                           "num_envs": envs.num_envs, "return": last.get("return"), "step": last.get("step"),
                           "deterministic": not args.eval_stochastic,
                           "domain_randomization": bool(args.domain_randomization), "full_reset": args.full_reset},
        }
        try:
            return export.export_policy(act, modules, sidecar["obs_dim"], os.path.join(self.run_dir, "policy.onnx"),
                                        sidecar)
        except Exception as err:  # noqa: BLE001 -- the exporter's many failure types: one line (summary.json is written)
            raise OutputError(f"--export-onnx: the export failed ({type(err).__name__}: {err})") from err

    def _log(self, metrics: Mapping[str, Any]) -> None:
        tensors = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor)}
        names = ["ep_sum", "ep_len", "ep_count", "nonfinite", *tensors]
        values = torch.cat([self.episode_stats, self.nonfinite_updates[None]] +
                           [v.detach().reshape(1).to(self.episode_stats) for v in tensors.values()])
        if self.world.active:  # episodes summed over the ranks; everything else (losses, skipped steps) averaged
            torch.distributed.all_reduce(values)
            values[3:] /= self.world.size
        host = dict(zip(names, values.tolist()))  # the one transfer of this log interval
        self.episode_stats.zero_()
        if not self.world.is_main:
            return
        step, writer = self.global_step, self.writer
        sps = int((step - self.session_start_step) / (time.time() - self.session_start_time))
        if host["ep_count"] > 0:
            self.last_return = host["ep_sum"] / host["ep_count"]
            self.train_history.append({"step": step, "return": self.last_return})
            writer.add_scalar("charts/episodic_return", self.last_return, step)
            writer.add_scalar("charts/episodic_length", host["ep_len"] / host["ep_count"], step)
        writer.add_scalar("charts/SPS", sps, step)
        writer.add_scalar("losses/nonfinite_skipped_updates", host["nonfinite"], step)
        for name, value in metrics.items():
            writer.add_scalar(name, host[name] if name in tensors else value, step)
        eval_text = f"{self.eval_history[-1]['return']:.1f}" if self.eval_history else "-"
        ret_text = "-" if math.isnan(self.last_return) else f"{self.last_return:.1f}"
        self.progress.set_postfix(SPS=sps, ret=ret_text, eval=eval_text, refresh=False)
        self.progress.update(step - self.progress.n)
        if self.progress.disable:
            print(f"step {step}/{self.args.total_timesteps} | SPS {sps} | return {ret_text} | eval {eval_text} | "
                  f"{self.wall_time():.0f} s", flush=True)

    def wall_time(self) -> float:
        return self.prior_wall + time.time() - self.start_time

    def _checkpoint(self, iteration: int, next_obs: tuple[torch.Tensor, torch.Tensor]) -> None:
        world = self.world
        own = {"envs": self.envs.state_dict(), "next_obs": tuple(x.detach().cpu() for x in next_obs),
               "rng": _rng_states(self.device),
               "episode_stats": self.episode_stats.cpu()}
        rank_states: list[Any] = []
        if world.active:  # the ranks must still train one model; rank 0 saves every rank's own state
            checksum = distributed.check_replicated(self._networks, f"checkpoint at iteration {iteration}")
            self.replica_checks.append({"iteration": iteration, "crc32": f"{checksum:08x}", "ranks": world.size})
            rank_states = [None] * world.size
            torch.distributed.all_gather_object(rank_states, own)
            if not world.is_main:
                return
        state = {name: module.state_dict() for name, module in self._modules.items()}
        state.update(own)
        state.update({
            "format": CHECKPOINT_FORMAT, "args": asdict(self.args), "sources": self.sources,
            "world_size": world.size, "rank_states": rank_states[1:], "replica_checks": self.replica_checks,
            "global_step": self.global_step, "iteration": iteration, "eval_history": self.eval_history,
            "nonfinite_updates": self.nonfinite_updates.cpu(),
            "last_return": self.last_return, "lr_segment": self.lr_segment, "extensions": self.extensions,
            "wall_time": self.wall_time(),
            "train_history": self.train_history,
        })
        path = os.path.join(self.run_dir, "checkpoint.pt")
        try:
            os.makedirs(self.run_dir, exist_ok=True)
            torch.save(state, path + ".tmp")
            os.replace(path + ".tmp", path)  # atomic: a kill -9 mid-write leaves the previous checkpoint intact
        except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError of its zip writer
            with contextlib.suppress(OSError):
                os.remove(path + ".tmp")
            raise OutputError(f"could not write the checkpoint {path} ({str(err).splitlines()[0]}); the previous "
                              f"checkpoint, if any, is intact") from None
        print(f"checkpoint: iteration {iteration}, step {self.global_step} -> {path}", flush=True)

    # -- end --------------------------------------------------------------------------------------------------------

    def finish(self, act: Act, model: tuple[str, ...] = ()) -> dict[str, Any]:
        """Save the model (``model``: names of registered modules), a video, ``summary.json``; close everything."""
        args = self.args
        self.progress.close()
        summary_path = os.path.join(self.run_dir, "summary.json")
        if self.resumed is not None and self.global_step == self.session_start_step and os.path.isfile(summary_path) \
                and self.world.is_main:
            return self._finish_without_training(act, model, summary_path)
        if not self.world.is_main:
            self.envs.close()
            self.eval_envs.close()
            torch.distributed.destroy_process_group()
            return {}
        if args.save_model:
            path = os.path.join(self.run_dir, f"{args.exp_name}.cleanrl_model")
            torch.save({**{name: self._modules[name].state_dict() for name in model}, "args": asdict(args)}, path)
            print(f"model saved to {path}")
        video = None
        if args.capture_video:
            video = capture_video(act, self.eval_envs, os.path.join(self.run_dir, "videos", "eval"),
                                  derive_seed(args.seed, "video"))
            if video:
                print(f"video saved to {video}")
        wall_time = self.wall_time()
        summary = {
            "env_id": args.env_id, "exp_name": args.exp_name, "seed": args.seed, "env_steps": self.global_step,
            "agent_steps": self.global_step // self.steps_per_agent_step,
            "steps_per_agent_step": self.steps_per_agent_step,  # env_steps, eval steps and SPS count in these units
            "wall_time_s": round(wall_time, 2), "sps": int(self.global_step / wall_time),
            "final_eval_return": self.eval_history[-1]["return"] if self.eval_history else None,
            **scores(self.eval_history, self.baseline, self.train_history, self.global_step),
            "total_reward_ma_window": f"training returns of the last {TOTAL_REWARD_MA_FRACTION:.0%} of env steps",
            "random_policy_return": self.baseline,
            "eval_deterministic": not args.eval_stochastic,
            "nan_skipped_updates": int(self.nonfinite_updates.item()),
            "env_trace_counts": dict(self.envs.trace_counts),
            "world_size": self.world.size, "replica_checks": self.replica_checks,
            "extensions": self.extensions,  # resumes that raised --total-timesteps (part of the settings digest)
            "settings_digest": settings_digest(asdict(args), self.world.size, self.extensions),
            "code": provenance.code_identity(getattr(sys.modules.get("__main__"), "__file__", None)),
            "eval_history": self.eval_history, "train_history": self.train_history, "args": asdict(args),
        }
        try:
            with open(summary_path + ".tmp", "w") as f:
                json.dump(summary, f, indent=2)
            os.replace(summary_path + ".tmp", summary_path)  # atomic: a campaign reading it never sees half a file
        except OSError as err:
            raise OutputError(f"could not write {summary_path} ({err})") from None
        final = summary["final_eval_return"]
        print(f"final eval return {final:.1f} | strength {summary['strength']} | {self.global_step} steps in "
              f"{wall_time:.0f} s ({summary['sps']} SPS) | {self.run_dir}/summary.json")
        exported = None
        if args.export_onnx:  # it moves the modules to the CPU: after everything that runs the policy
            exported = self._export(act, {name: self._modules[name] for name in model}, summary)
            print(f"policy exported to {exported} (and {exported.with_suffix('.json').name})")
        if self.wandb is not None:
            self.writer.flush()
            tracking.finish(self.wandb, summary, summary_path, video, exported)
        self.envs.close()
        self.eval_envs.close()
        self.writer.close()
        if self.world.active:
            torch.distributed.destroy_process_group()
        return summary


def cli(main: Callable[..., Any], start_time: float | None = None) -> None:
    """Run a trainer's ``main`` as a script: a :class:`CLIError` becomes one line on stderr and exit code 2."""
    try:
        main(start_time=start_time)
    except CLIError as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OutputError as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except (distributed.DistributedError, torch.distributed.DistError, RuntimeError) as e:
        world = distributed.World.from_environment()
        if not world.active:
            raise
        if not isinstance(e, (distributed.DistributedError, torch.distributed.DistError)):
            traceback.print_exc()  # gloo reports a dead peer as a plain RuntimeError: keep the trace of anything else
        print(f"{os.path.basename(sys.argv[0])}: rank {world.rank} of {world.size}: error: {e}\n(in a distributed run "
              f"this usually means a collective failed or timed out: another rank died, hangs, or disagrees; see its "
              f"log)", file=sys.stderr)
        sys.exit(1)

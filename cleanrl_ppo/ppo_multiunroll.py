# PPO with Brax's `ppo.train` schedule on MuJoCo Playground, CleanRL single-file style: ppo_tanh.py (Brax's tanh-Normal
# policy and DM Control networks) with the data collection and consumption of brax.training.agents.ppo.train. Per update:
# batch_size * num_minibatches // num_envs sequential unrolls of unroll_length steps (env state carried across them),
# kept as batch_size * num_minibatches segments of unroll_length steps; the observation normaliser is updated once from
# all collected observations before SGD; num_updates_per_batch epochs each shuffle the segments into num_minibatches
# minibatches of batch_size segments, and inside each minibatch values and GAE are recomputed with the CURRENT critic
# (Brax's compute_gae: a truncated step gets zero TD error and cuts the trace, so its reward and the terminal obs go
# unused), rewards are multiplied by reward_scaling inside the loss, advantages normalised per minibatch, value loss
# 0.25 * MSE unclipped; Adam (eps 1e-8), no grad clipping unless max_grad_norm is set; optional forced resets of all envs
# (num_resets_per_eval). Defaults are the env's official Brax config (playground_gym.official_config); `--preset cpu`
# scales it down for a small CPU. Known differences from Brax: env steps count agent decisions (Brax multiplies by
# action_repeat), the observation normaliser clips at 10 std (Brax: no clip), entropy uses torch's random stream.
# Run folder: runs/<env>__<exp_name>__<seed>__<unix time>/ with TensorBoard events, checkpoint.pt and summary.json.
import contextlib
import io
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal

START_TIME = time.time()  # a run's wall time counts from here: imports and JIT compiles included

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering for --capture-video; must precede `import mujoco`

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import tyro
from torch.distributions.normal import Normal
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import playground_gym
from playground_gym.baselines import random_policy_return


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run folder's name)"""
    seed: int = 1
    """seed of torch, numpy, random and the envs; the same seed on CPU gives the same returns"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    torch_threads: int | None = None
    """torch's CPU threads; None (default) = torch's default, all cores (with --pin-jax-cpu JAX's env steps stay on
    one core, so the two do not fight)"""
    device: str | None = None
    """'cpu', 'cuda' or 'cuda:N' for envs, networks and storage; None = JAX's GPU if it has one, else CPU"""
    pin_jax_cpu: bool = True
    """CPU runs: step the envs on one core with a one-thread JAX (its hand-offs across cores cost more than a small
    step: the rollout took ~20% less time here), torch keeping every core (playground_gym.backend.pin_jax_cpu)"""
    runs_dir: str = "runs"
    """parent folder of the run folders"""
    capture_video: bool = False
    """render one deterministic evaluation episode at the end to <run>/videos/ (mp4 if ffmpeg is found, else gif)"""
    save_model: bool = False
    """save the final model (agent + normaliser) to <run>/<exp_name>.cleanrl_model"""
    checkpoint_interval: int = 10
    """write <run>/checkpoint.pt every this many updates and at the end (0 = only with --save-model, at the end)"""
    resume: str | None = None
    """a checkpoint.pt (or its run folder) to continue; its saved args are used (except --device and, if given,
    --total-timesteps, to extend a run) and its run folder, TensorBoard log and summary are appended to"""

    # Algorithm specific arguments (None = the env's official Brax value, or the preset's; printed with its source)
    env_id: str = "CartpoleBalance"
    """a Playground env id, with or without the `playground/` prefix (see playground_gym.list_envs())"""
    preset: Literal["official", "cpu"] = "official"
    """official: every None below takes the env's official Brax config (DM Control: 2048 envs, batch 1024, 32
    minibatches x 16 epochs, 60M steps); cpu: a 2-core CPU scale of it, CPU_PRESET (64 envs x 8 unrolls x 32 steps =
    16384 steps per update, 8 minibatches of 64 segments x 10 epochs, reward_scaling 0.1, 1.31M steps, no forced
    resets; solves CartpoleBalance in some seeds here, as does Brax's own trainer with the same values: see the
    README); explicit flags win"""
    total_timesteps: int | None = None
    """total env steps (agent decisions summed over envs) of the run; None = official `num_timesteps` or the preset's"""
    learning_rate: float | None = None
    """Adam's learning rate (None = official `learning_rate`, 1e-3 on DM Control)"""
    anneal_lr: bool = False
    """anneal the learning rate linearly to 0 (Brax's default schedule is constant)"""
    num_envs: int | None = None
    """the number of parallel envs (None = official `num_envs`)"""
    unroll_length: int | None = None
    """steps per unroll, the length of a segment (None = official `unroll_length`, 30 on DM Control)"""
    batch_size: int | None = None
    """segments per minibatch (None = official `batch_size`); an update collects batch_size * num_minibatches
    segments, in batch_size * num_minibatches // num_envs sequential unrolls of all envs"""
    num_minibatches: int | None = None
    """minibatches (SGD steps) per epoch (None = official `num_minibatches`)"""
    num_updates_per_batch: int | None = None
    """epochs over each update's data (None = official `num_updates_per_batch`)"""
    gamma: float | None = None
    """the discount factor; None = the env's official `discounting` (0.995 on most DM Control envs, 0.95 FingerSpin)"""
    gae_lambda: float | None = None
    """the lambda of generalised advantage estimation (None = official `gae_lambda`)"""
    episode_length: int | None = None
    """physics control steps per episode; None = the env's official value (1000 on DM Control)"""
    action_repeat: int | None = None
    """control steps per agent decision; None = the env's official value (e.g. 4 for PendulumSwingup)"""
    reward_scaling: float | None = None
    """multiplies rewards inside the loss (episodic returns are logged unscaled); None = official, 10 on DM Control"""
    num_resets_per_eval: int | None = None
    """force-reset all envs this many times per --eval-interval updates, after an update, as Brax does between
    evaluations (0 = never: only episode ends reset); None = official (10) or the preset's"""
    norm_obs: bool = True
    """normalise observations with a running mean/std updated once per update before SGD (saved with the model)"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    clip_coef: float | None = None
    """the surrogate clipping coefficient (None = official `clipping_epsilon`, 0.3 on DM Control)"""
    ent_coef: float | None = None
    """coefficient of the entropy bonus (None = official `entropy_cost`, 1e-2 on DM Control)"""
    vf_coef: float = 0.5
    """coefficient of the value loss 0.5 * MSE (Brax's vf_loss_coefficient: 0.5 gives 0.25 * MSE)"""
    max_grad_norm: float | None = None
    """the maximum norm of the gradient (clipping); <= 0 disables clipping; None = official (none on DM Control)"""
    actor_hidden_sizes: tuple[int, ...] | None = None
    """hidden layer widths of the actor MLP; None = official `policy_hidden_layer_sizes` (4x32 on DM Control)"""
    critic_hidden_sizes: tuple[int, ...] | None = None
    """hidden layer widths of the critic MLP; None = official `value_hidden_layer_sizes` (5x256 on DM Control)"""
    activation: Literal["tanh", "relu", "elu", "silu"] = "silu"
    """activation of both MLPs (silu = Brax's swish)"""
    init: Literal["lecun_uniform", "orthogonal"] = "lecun_uniform"
    """weight init: Brax's lecun_uniform (U(+-sqrt(3/fan_in)), every layer) or CleanRL's orthogonal (gain sqrt 2,
    output layers 0.01 actor / 1 critic); biases are zero either way"""
    min_std: float = 0.001
    """the policy's scale is softplus(raw) + min_std (Brax's NormalTanhDistribution default)"""
    eval_interval: int = 5
    """evaluate every this many updates and at the end (0 = only at the end)"""
    num_eval_envs: int = 16
    """envs (one full episode each) per evaluation, created separately with their own seed (Brax's default: 128)"""
    eval_stochastic: bool = False
    """evaluate with sampled actions instead of the deterministic action tanh(loc)"""
    log_interval: int = 1
    """write scalars and progress every this many updates (values are read from the device only then)"""


PER_ENV_DEFAULTS = {
    "gamma": "discounting", "episode_length": "episode_length", "action_repeat": "action_repeat",
    "total_timesteps": "num_timesteps", "learning_rate": "learning_rate", "num_envs": "num_envs",
    "unroll_length": "unroll_length", "batch_size": "batch_size", "num_minibatches": "num_minibatches",
    "num_updates_per_batch": "num_updates_per_batch", "gae_lambda": "gae_lambda", "reward_scaling": "reward_scaling",
    "num_resets_per_eval": "num_resets_per_eval", "clip_coef": "clipping_epsilon", "ent_coef": "entropy_cost",
    "max_grad_norm": "max_grad_norm", "actor_hidden_sizes": "policy_hidden_layer_sizes",
    "critic_hidden_sizes": "value_hidden_layer_sizes",
}
# --preset cpu: Brax's schedule at a 2-core CPU's scale: 64 envs x 8 unrolls x 32 steps = 16384 steps per update,
# 8 minibatches of 64 segments x 10 epochs (80 SGD steps per update, ~5 per 1k env steps, as CleanRL's default; the
# official config's ~0.5 per 1k needs tens of M steps), and reward_scaling 0.1 so the 5x256 critic's targets are
# O(10) instead of O(1000). The earlier preset (128 envs, unroll 30, 8 x 128 segments x 4 epochs, official reward
# scaling 10) left Brax's own trainer at 360 -> 725 after 8M steps on CartpoleBalance; measured results: README.
CPU_PRESET = {"num_envs": 64, "unroll_length": 32, "batch_size": 64, "num_minibatches": 8, "num_updates_per_batch": 10,
              "reward_scaling": 0.1, "total_timesteps": 1_310_720, "num_resets_per_eval": 0}


def rollout_shape(num_envs: int, batch_size: int, num_minibatches: int, unroll_length: int) -> tuple[int, int]:
    """(unrolls per update, env steps per update) of Brax's schedule: batch_size * num_minibatches segments of
    unroll_length steps, collected by num_envs envs in sequential unrolls. Raises CLIError if they do not divide."""
    segments = batch_size * num_minibatches
    if segments % num_envs:
        raise CLIError(f"--batch-size * --num-minibatches ({batch_size} * {num_minibatches} = {segments} segments per "
                       f"update) must be divisible by --num-envs ({num_envs}): each unroll gives one segment per env")
    return segments // num_envs, segments * unroll_length


class CLIError(Exception):
    """Bad command-line input: reported as one line and exit code 2."""


def parse_args(argv: list[str] | None = None) -> Args:
    """tyro's parser, but errors become one line (tyro prints a multi-line box) and exit with code 2."""
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        return tyro.cli(Args, args=argv)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            return tyro.cli(Args, args=argv)
    except SystemExit as e:
        lines = [ln.strip(" │╭╮╰╯─") for ln in buf.getvalue().splitlines()]
        lines = [ln for ln in lines if ln and set(ln) - set("-─ ")]
        raise CLIError(lines[1] if len(lines) > 1 else (lines[0] if lines else f"invalid arguments (code {e.code})"))


def resolve_args(args: Args) -> tuple[Args, dict[str, str]]:
    """Fill the None fields from the preset and official_config and check values; returns (args, source of each)."""
    try:
        config = playground_gym.official_config(args.env_id)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    args.env_id = config["env_id"]
    preset = CPU_PRESET if args.preset == "cpu" else {}
    sources = {}
    for field, key in PER_ENV_DEFAULTS.items():
        if getattr(args, field) is not None:
            sources[field] = "user"
        elif field in preset:
            sources[field] = f"preset {args.preset!r}"
            setattr(args, field, preset[field])
        else:
            sources[field] = f"official_config[{key!r}]"
            setattr(args, field, config[key])
    args.max_grad_norm = 0.0 if args.max_grad_norm is None else args.max_grad_norm  # official None: no clipping
    args.actor_hidden_sizes, args.critic_hidden_sizes = map(tuple, (args.actor_hidden_sizes, args.critic_hidden_sizes))
    positive = ["total_timesteps", "num_envs", "unroll_length", "batch_size", "num_minibatches", "num_updates_per_batch"]
    for field in positive:
        if getattr(args, field) <= 0:
            raise CLIError(f"--{field.replace('_', '-')} must be > 0; got {getattr(args, field)}")
    _, steps_per_update = rollout_shape(args.num_envs, args.batch_size, args.num_minibatches, args.unroll_length)
    checks = [
        (args.total_timesteps >= steps_per_update,
         f"--total-timesteps ({args.total_timesteps}) must be >= one update, --batch-size * --num-minibatches * "
         f"--unroll-length ({steps_per_update})"),
        (0.0 < args.gamma <= 1.0, f"--gamma must be in (0, 1]; got {args.gamma}"),
        (0.0 <= args.gae_lambda <= 1.0, f"--gae-lambda must be in [0, 1]; got {args.gae_lambda}"),
        (args.learning_rate > 0, f"--learning-rate must be > 0; got {args.learning_rate}"),
        (args.clip_coef > 0, f"--clip-coef must be > 0; got {args.clip_coef}"),
        (math.isfinite(args.reward_scaling), f"--reward-scaling must be finite; got {args.reward_scaling}"),
        (args.num_resets_per_eval >= 0, f"--num-resets-per-eval must be >= 0; got {args.num_resets_per_eval}"),
        (args.episode_length > 0 and args.action_repeat > 0 and args.episode_length >= args.action_repeat,
         f"--episode-length ({args.episode_length}) and --action-repeat ({args.action_repeat}) must be > 0 with "
         f"episode_length >= action_repeat"),
        (args.min_std > 0, f"--min-std must be > 0; got {args.min_std}"),
        (all(h > 0 for h in args.actor_hidden_sizes + args.critic_hidden_sizes), "hidden sizes must be > 0"),
        (args.num_eval_envs > 0, f"--num-eval-envs must be > 0; got {args.num_eval_envs}"),
        (min(args.eval_interval, args.checkpoint_interval) >= 0 and args.log_interval > 0,
         "--eval-interval and --checkpoint-interval must be >= 0, --log-interval > 0"),
        (args.seed >= 0, f"--seed must be >= 0; got {args.seed}"),
    ]
    for ok, message in checks:
        if not ok:
            raise CLIError(message)
    return args, sources


def hparams_table(args: Args, sources: dict[str, str]) -> str:
    rows = [f"|{k}|{v}|{sources.get(k, 'default or flag')}|" for k, v in vars(args).items()]
    return "|param|value|source|\n|-|-|-|\n" + "\n".join(rows)


class RunningMeanStd(nn.Module):
    """Running mean and variance over batches (Chan et al.'s parallel Welford update), kept on the device in float64.

    The statistics are buffers, so they travel with `state_dict()` into checkpoints."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-8, clip: float = 10.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.epsilon, self.clip = epsilon, clip

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch `x` of shape (n, *shape) into the statistics (no host sync)."""
        x = x.reshape((-1,) + self.mean.shape).to(torch.float64)
        n = x.shape[0]
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(self.var + self.epsilon)
        return ((x - self.mean) / std).clamp(-self.clip, self.clip).to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x * torch.sqrt(self.var + self.epsilon) + self.mean).to(x.dtype)


def compute_gae(truncation, termination, rewards, values, bootstrap_value, gae_lambda=1.0, gamma=0.99):
    """brax.training.agents.ppo.losses.compute_gae in torch: time-major (T, B) inputs, bootstrap_value (B,).

    `values[t]` = V(obs[t]); `bootstrap_value` = V(obs after the last step). A truncated step gets zero TD error and
    cuts the trace (its reward and terminal obs go unused; the step before it bootstraps from V(obs[t])); termination
    zeroes the bootstrap. Returns (vs, advantages), both (T, B) and detached: vs are the value targets, advantages
    `(r + gamma * (1 - term) * vs[t+1] - v[t]) * (1 - trunc)`."""
    values, bootstrap_value = values.detach(), bootstrap_value.detach()
    truncation_mask, not_term = 1.0 - truncation.to(values.dtype), 1.0 - termination.to(values.dtype)
    values_t_plus_1 = torch.cat([values[1:], bootstrap_value[None]], 0)
    deltas = (rewards + gamma * not_term * values_t_plus_1 - values) * truncation_mask
    decay = gamma * gae_lambda * not_term * truncation_mask
    vs_minus_v = torch.empty_like(values)
    acc = torch.zeros_like(bootstrap_value)
    for t in reversed(range(values.shape[0])):  # vs_minus_v[t] = deltas[t] + decay[t] * vs_minus_v[t + 1], one op
        acc = torch.addcmul(deltas[t], decay[t], acc, out=vs_minus_v[t])
    vs = vs_minus_v + values
    vs_t_plus_1 = torch.cat([vs[1:], bootstrap_value[None]], 0)
    advantages = (rewards + gamma * not_term * vs_t_plus_1 - values) * truncation_mask
    return vs, advantages


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}


def layer_init(layer, std=np.sqrt(2), bias_const=0.0, init="orthogonal"):
    if init == "lecun_uniform":  # jax.nn.initializers.lecun_uniform: variance 1/fan_in, as Brax's networks
        bound = math.sqrt(3.0 / layer.weight.shape[1])
        torch.nn.init.uniform_(layer.weight, -bound, bound)
    else:
        torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim, hidden_sizes, out_dim, activation, out_std, init="orthogonal"):
    layers, last = [], in_dim
    for width in hidden_sizes:
        layers += [layer_init(nn.Linear(last, width), init=init), ACTIVATIONS[activation]()]
        last = width
    return nn.Sequential(*layers, layer_init(nn.Linear(last, out_dim), std=out_std, init=init))


def tanh_log_det_jacobian(x):
    """log |d tanh(x) / dx| = log(1 - tanh(x)^2) in the stable form of Brax's TanhBijector (finite for any x)."""
    return 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))


class NormalTanh:
    """Brax's NormalTanhDistribution: x ~ N(loc, softplus(raw_scale) + min_std), action = tanh(x).

    Works on PRE-tanh samples: `sample()` returns (action, pre_tanh), `log_prob(pre_tanh)` is the log-density of the
    action tanh(pre_tanh) (Normal log-prob minus the log-det-Jacobian, summed over the last axis), so no atanh is ever
    taken. `entropy()` is Brax's one-sample estimate: Normal entropy plus the log-det-Jacobian at a fresh
    (reparametrised) sample."""

    def __init__(self, loc, raw_scale, min_std=0.001):
        self.normal = Normal(loc, F.softplus(raw_scale) + min_std, validate_args=False)  # checks: a GPU host sync

    def sample(self):
        pre_tanh = self.normal.sample()
        return torch.tanh(pre_tanh), pre_tanh

    def log_prob(self, pre_tanh):
        return (self.normal.log_prob(pre_tanh) - tanh_log_det_jacobian(pre_tanh)).sum(-1)

    def entropy(self):
        return (self.normal.entropy() + tanh_log_det_jacobian(self.normal.rsample())).sum(-1)

    def mode(self):
        return torch.tanh(self.normal.loc)


class Agent(nn.Module):
    """Separate actor and critic MLPs; tanh-Normal policy whose loc and raw scale are both outputs of the actor."""

    def __init__(self, obs_dim, act_dim, actor_hidden_sizes=(32, 32, 32, 32), critic_hidden_sizes=(256,) * 5,
                 activation="silu", init="lecun_uniform", min_std=0.001):
        super().__init__()
        self.critic = mlp(obs_dim, critic_hidden_sizes, 1, activation, out_std=1.0, init=init)
        self.actor = mlp(obs_dim, actor_hidden_sizes, 2 * act_dim, activation, out_std=0.01, init=init)
        self.min_std = min_std

    def get_value(self, x):
        return self.critic(x).squeeze(-1)

    def get_distribution(self, x):
        return self.distribution(self.actor(x))

    def distribution(self, actor_out):
        """The policy for the actor's output `actor_out` (loc and raw scale, concatenated on the last axis)."""
        loc, raw_scale = actor_out.chunk(2, dim=-1)
        return NormalTanh(loc, raw_scale, self.min_std)

    def get_action(self, x, deterministic=False):
        """Returns (action in [-1, 1], pre-tanh sample, log-prob); deterministic: tanh(loc), loc."""
        dist = self.get_distribution(x)
        if deterministic:
            pre_tanh = dist.normal.loc
            return dist.mode(), pre_tanh, dist.log_prob(pre_tanh)
        action, pre_tanh = dist.sample()
        return action, pre_tanh, dist.log_prob(pre_tanh)

    def get_action_and_value(self, x, pre_tanh=None):
        dist = self.get_distribution(x)
        if pre_tanh is None:
            _, pre_tanh = dist.sample()
        return pre_tanh, dist.log_prob(pre_tanh), dist.entropy(), self.get_value(x)


@torch.no_grad()
def evaluate(agent, normalize, eval_envs, seed, stochastic=False):
    """One full episode in each eval env (all start together, so all end within max_episode_steps); mean return."""
    obs, _ = eval_envs.reset(seed=seed)
    returns = torch.zeros(eval_envs.num_envs, device=eval_envs.device)
    finished = torch.zeros(eval_envs.num_envs, dtype=torch.bool, device=eval_envs.device)
    for _ in range(eval_envs.max_episode_steps):
        dist = agent.get_distribution(normalize(obs))
        action = dist.sample()[0] if stochastic else dist.mode()  # no log-prob: not needed here
        obs, _, _, _, info = eval_envs.step(action)
        if "_episode" in info:
            first = info["_episode"] & ~finished
            returns = torch.where(first, info["episode"]["r"], returns)
            finished |= first
    return returns.mean().item()


@torch.no_grad()
def capture_video(agent, normalize, eval_envs, args, path, seed):
    """Render one deterministic episode with the MjxEnv's own renderer (MuJoCo's CPU renderer via MUJOCO_GL)."""
    import jax

    env = eval_envs.mjx_env
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    state = reset(jax.random.PRNGKey(seed))
    trajectory = [state]
    for _ in range(eval_envs.max_episode_steps):
        obs = state.obs[eval_envs.obs_key] if isinstance(state.obs, dict) else state.obs
        obs = torch.as_tensor(np.array(obs), device=eval_envs.device)[None]
        action, _, _ = agent.get_action(normalize(obs), deterministic=True)
        action = jax.numpy.asarray(action[0].clamp(-1, 1).cpu().numpy())
        for _ in range(args.action_repeat):
            state = step(state, action)
        trajectory.append(state)
        if float(state.done) > 0:
            break
    has_ffmpeg = shutil.which("ffmpeg") is not None
    fps = 1.0 / (float(env.dt) * args.action_repeat)
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


def scores(eval_history, baseline):
    """DESIGN.md's benchmark scores over the evaluation checkpoints (eval returns)."""
    returns = [e["return"] for e in eval_history]
    if not returns:
        return {"strength": None, "final_strength": None, "total_reward_ma": None}
    return {
        "strength": None if baseline is None else float(np.mean(returns) - baseline),
        "final_strength": None if baseline is None else float(returns[-1] - baseline),
        "total_reward_ma": float(np.mean(returns[-100:])),
    }


def save_checkpoint(path, state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill -9 mid-write leaves the previous checkpoint intact


def main(argv=None, start_time=None):
    # TRY NOT TO MODIFY: arguments, resume, per-env defaults
    start_time = start_time or time.time()
    args = parse_args(argv)
    checkpoint = None
    if args.resume:
        path = os.path.join(args.resume, "checkpoint.pt") if os.path.isdir(args.resume) else args.resume
        if not os.path.isfile(path):
            raise CLIError(f"--resume: no checkpoint at {path!r}")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        given = sys.argv[1:] if argv is None else argv  # flags that may change on resume: device, total_timesteps
        extend = any(a.split("=")[0] in ("--total-timesteps", "--total_timesteps") for a in given)
        args = Args(**{**checkpoint["args"], "resume": args.resume, "device": args.device,
                       **({"total_timesteps": args.total_timesteps} if extend else {})})
        args.actor_hidden_sizes, args.critic_hidden_sizes = map(tuple, (args.actor_hidden_sizes, args.critic_hidden_sizes))
        sources, run_dir = checkpoint["sources"], os.path.dirname(os.path.abspath(path))
        print(f"resume: continuing from step {checkpoint['global_step']} with the checkpoint's saved args")
    else:
        args, sources = resolve_args(args)
        run_dir = os.path.join(args.runs_dir, f"{args.env_id}__{args.exp_name}__{args.seed}__{int(start_time)}")
    n_unrolls, steps_per_update = rollout_shape(args.num_envs, args.batch_size, args.num_minibatches,
                                                args.unroll_length)
    n_segments, T = args.batch_size * args.num_minibatches, args.unroll_length
    num_iterations = args.total_timesteps // steps_per_update
    eval_every = args.eval_interval or num_iterations  # Brax resets num_resets_per_eval times between evaluations
    reset_every = max(1, eval_every // args.num_resets_per_eval) if args.num_resets_per_eval else 0
    print(f"{'resuming' if checkpoint else 'run'}: {run_dir}")
    print("resolved per-env settings: " + ", ".join(f"{k}={getattr(args, k)} ({sources[k]})" for k in PER_ENV_DEFAULTS))
    print("args: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()))
    print(f"update: {n_unrolls} unrolls x {args.num_envs} envs x {T} steps = {steps_per_update} steps in {n_segments} "
          f"segments; {num_iterations} updates of {args.num_updates_per_batch} epochs x {args.num_minibatches} "
          f"minibatches of {args.batch_size} segments; forced resets every {reset_every or 'no'} updates")

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.pin_jax_cpu and (cpu := playground_gym.backend.pin_jax_cpu(args.device)) is not None:
        print(f"CPU run: JAX's env steps pinned to CPU {cpu} (one thread), torch on {torch.get_num_threads()} threads")
    torch.set_flush_denormal(True)  # as XLA on CPU: denormal gradients made backward passes up to ~10x slower here

    # env setup: training envs and separate evaluation envs with their own seed
    env_kwargs = dict(device=args.device, episode_length=args.episode_length, action_repeat=args.action_repeat, quiet=True)
    try:
        envs = playground_gym.make_vec(args.env_id, args.num_envs, seed=args.seed, **env_kwargs)
        eval_envs = playground_gym.make_vec(args.env_id, args.num_eval_envs, seed=args.seed + 1_000_000, **env_kwargs)
    except (ValueError, TypeError, KeyError) as e:
        raise CLIError(str(e)) from None
    device = envs.device
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    try:
        baseline = random_policy_return(args.env_id)
        official = playground_gym.official_config(args.env_id)
        if (args.episode_length, args.action_repeat) != (official["episode_length"], official["action_repeat"]):
            print(f"note: strength scores unavailable: the random-policy return of {args.env_id} was measured with the "
                  f"official episode_length/action_repeat, not {args.episode_length}/{args.action_repeat}")
            baseline = None
    except ValueError as e:
        baseline = None
        print(f"note: strength scores unavailable: {e}")

    agent = Agent(obs_dim, act_dim, args.actor_hidden_sizes, args.critic_hidden_sizes, args.activation, args.init,
                  args.min_std).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-8, fused=True)  # optax.adam's eps
    obs_rms = RunningMeanStd((obs_dim,)).to(device)
    normalize = obs_rms.normalize if args.norm_obs else (lambda x: x)

    # ALGO Logic: Storage setup (once, on the envs' device): [unroll, step, env], raw (unnormalised) observations
    obs = torch.zeros((n_unrolls, T, args.num_envs, obs_dim), device=device)
    boot_obs = torch.zeros((n_unrolls, args.num_envs, obs_dim), device=device)  # obs after each unroll's last step
    actions = torch.zeros((n_unrolls, T, args.num_envs, act_dim), device=device)  # PRE-tanh samples
    # the actor's outputs: the behaviour log-probs are computed from them once per update, not in the env loop
    actor_outs = torch.zeros((n_unrolls, T, args.num_envs, 2 * act_dim), device=device)
    rewards = torch.zeros((n_unrolls, T, args.num_envs), device=device)
    terminations = torch.zeros((n_unrolls, T, args.num_envs), device=device)
    truncations = torch.zeros((n_unrolls, T, args.num_envs), device=device)  # Brax's state.info["truncation"]
    # episodes that ended at each step and their returns/lengths; summed per update into ep_stats, read at log time
    ep_ends = torch.zeros((3, n_unrolls, T, args.num_envs), device=device)  # done mask, return, length
    ep_stats = torch.zeros(3, device=device)  # sum of returns, sum of lengths, count
    last_return = float("nan")

    def segments(x):  # [unroll, step, env, ...] -> time-major segments [step, unroll * num_envs, ...]
        return x.transpose(0, 1).reshape(T, n_segments, *x.shape[3:])

    global_step, start_iteration, eval_history, nan_skipped, prior_wall = 0, 0, [], 0, 0.0
    if checkpoint:
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        obs_rms.load_state_dict(checkpoint["obs_rms"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        np.random.set_state(checkpoint["rng"]["numpy"])
        random.setstate(checkpoint["rng"]["python"])
        global_step, start_iteration = checkpoint["global_step"], checkpoint["iteration"]
        eval_history, nan_skipped = checkpoint["eval_history"], checkpoint["nan_skipped"]
        prior_wall = checkpoint["wall_time"]
    # purge_step drops events a killed run wrote after its last checkpoint, so curves do not overlap
    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint else None)
    if not checkpoint:
        writer.add_text("hyperparameters", hparams_table(args, sources))

    def make_checkpoint():
        return {"agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "obs_rms": obs_rms.state_dict(),
                "args": asdict(args), "sources": sources,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
                "global_step": global_step, "iteration": iteration, "eval_history": eval_history,
                "nan_skipped": nan_skipped, "wall_time": prior_wall + time.time() - start_time}

    # TRY NOT TO MODIFY: start the game (a resumed run restarts its episodes from a seed derived from the iteration)
    next_obs, _ = envs.reset(seed=args.seed + 1_000_003 * start_iteration)
    session_start_step = global_step
    progress = tqdm(total=args.total_timesteps, initial=global_step, unit="step", file=sys.stdout,
                    disable=not sys.stdout.isatty(), dynamic_ncols=True)
    iteration = start_iteration
    for iteration in range(start_iteration + 1, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate

        # ALGO LOGIC: rollout: n_unrolls sequential unrolls of T steps, env state carried (no host sync inside)
        with torch.no_grad():
            for unroll in range(n_unrolls):
                for step in range(T):
                    obs[unroll, step] = next_obs
                    actor_out = agent.actor(normalize(next_obs))
                    action, pre_tanh = agent.distribution(actor_out).sample()
                    actor_outs[unroll, step], actions[unroll, step] = actor_out, pre_tanh  # PRE-tanh: no atanh later
                    next_obs, reward, terminated, truncated, info = envs.step(action)
                    rewards[unroll, step], terminations[unroll, step], truncations[unroll, step] = \
                        reward, terminated, truncated
                    ep_ends[0, unroll, step], ep_ends[1, unroll, step], ep_ends[2, unroll, step] = \
                        info["_episode"], info["episode"]["r"], info["episode"]["l"]
                boot_obs[unroll] = next_obs  # after a done this is the next episode's first obs: Brax masks it
            # behaviour log-probs in one pass over the stored actor outputs (elementwise: the per-step numbers)
            logprobs = agent.distribution(actor_outs).log_prob(actions)
            truncations *= 1.0 - terminations  # time limits only (never both, kept explicit)
            ep_stats += torch.stack([(ep_ends[1] * ep_ends[0]).sum(), (ep_ends[2] * ep_ends[0]).sum(), ep_ends[0].sum()])
            global_step += steps_per_update
            if args.norm_obs:
                obs_rms.update(obs)  # once per update, from all collected observations, before SGD (as Brax)
            # segments [T, n_segments]; observations normalised with the updated statistics, as in Brax's loss
            s_obs, s_boot = normalize(segments(obs)), normalize(boot_obs.reshape(n_segments, obs_dim))
            s_actions, s_logprobs = segments(actions), segments(logprobs)
            s_rewards = segments(rewards) * args.reward_scaling
            s_terms, s_truncs = segments(terminations), segments(truncations)

        # ALGO LOGIC: optimizing the policy and value network, GAE per minibatch with the current critic
        clipfrac_sum, num_mb = torch.zeros((), device=device), 0
        for epoch in range(args.num_updates_per_batch):
            for mb in torch.randperm(n_segments, device=device).view(args.num_minibatches, args.batch_size):
                mb_obs = s_obs[:, mb]
                values = agent.get_value(torch.cat([mb_obs.reshape(-1, obs_dim), s_boot[mb]]))
                newvalue, bootstrap = values[:-args.batch_size].view(T, -1), values[-args.batch_size:]
                vs, mb_adv = compute_gae(s_truncs[:, mb], s_terms[:, mb], s_rewards[:, mb], newvalue, bootstrap,
                                         args.gae_lambda, args.gamma)
                dist = agent.get_distribution(mb_obs)
                logratio = dist.log_prob(s_actions[:, mb]) - s_logprobs[:, mb]
                ratio = logratio.exp()
                with torch.no_grad():  # http://joschu.net/blog/kl-approx.html
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfrac_sum += ((ratio - 1.0).abs() > args.clip_coef).float().mean()
                if args.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std(unbiased=False) + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
                v_loss = 0.5 * ((newvalue - vs) ** 2).mean()
                entropy_loss = dist.entropy().mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                if args.max_grad_norm > 0:
                    grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                else:  # no clipping (Brax's max_grad_norm None); the norm still serves the NaN check
                    grad_norm = nn.utils.get_total_norm([p.grad for p in agent.parameters()])
                if not torch.isfinite(grad_norm):  # NaN/inf loss or gradient: skip, never corrupt the parameters
                    nan_skipped += 1
                    optimizer.zero_grad()
                    continue
                optimizer.step()
                num_mb += 1
        if reset_every and iteration % reset_every == 0:  # Brax's forced resets (episodes in progress are dropped)
            next_obs, _ = envs.reset(seed=args.seed + 1_000_003 * iteration)

        # TRY NOT TO MODIFY: evaluation, logging, checkpoints
        last_iteration = iteration == num_iterations
        if (args.eval_interval and iteration % args.eval_interval == 0) or last_iteration:
            eval_return = evaluate(agent, normalize, eval_envs, args.seed + 1_000_000 + iteration, args.eval_stochastic)
            wall = prior_wall + time.time() - start_time
            eval_history.append({"step": global_step, "wall_time": round(wall, 2), "return": eval_return})
            writer.add_scalar("eval/episodic_return", eval_return, global_step)
            if not progress.disable:
                progress.write(f"step {global_step}: eval return {eval_return:.1f} ({wall:.0f} s)")
        if iteration % args.log_interval == 0 or last_iteration:
            sps = int((global_step - session_start_step) / (time.time() - start_time))
            ep_sum, len_sum, ep_count = ep_stats.tolist()
            ep_stats.zero_()
            if ep_count > 0:
                last_return = ep_sum / ep_count
                writer.add_scalar("charts/episodic_return", last_return, global_step)
                writer.add_scalar("charts/episodic_length", len_sum / ep_count, global_step)
            var_y = vs.var()  # of the last minibatch
            explained_var = (1 - (vs - newvalue.detach()).var() / var_y).item() if var_y > 0 else float("nan")
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
            writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
            writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
            writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
            writer.add_scalar("losses/clipfrac", clipfrac_sum.item() / max(num_mb, 1), global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            writer.add_scalar("losses/nan_skipped_updates", nan_skipped, global_step)
            eval_text = f"{eval_history[-1]['return']:.1f}" if eval_history else "-"
            ret_text = "-" if math.isnan(last_return) else f"{last_return:.1f}"
            progress.set_postfix(SPS=sps, ret=ret_text, eval=eval_text, refresh=False)
            progress.update(global_step - progress.n)
            if progress.disable:
                print(f"step {global_step}/{args.total_timesteps} | SPS {sps} | return {ret_text} | "
                      f"eval {eval_text} | {prior_wall + time.time() - start_time:.0f} s", flush=True)
        if (args.checkpoint_interval and iteration % args.checkpoint_interval == 0) or (last_iteration and (
                args.checkpoint_interval or args.save_model)):
            save_checkpoint(os.path.join(run_dir, "checkpoint.pt"), make_checkpoint())
    progress.close()

    if args.save_model:
        model_path = os.path.join(run_dir, f"{args.exp_name}.cleanrl_model")
        torch.save({"agent": agent.state_dict(), "obs_rms": obs_rms.state_dict(), "args": asdict(args)}, model_path)
        print(f"model saved to {model_path}")
    if args.capture_video:
        video = capture_video(agent, normalize, eval_envs, args, os.path.join(run_dir, "videos", "eval"), args.seed + 2)
        if video:
            print(f"video saved to {video}")

    wall_time = prior_wall + time.time() - start_time
    summary = {
        "env_id": args.env_id, "exp_name": args.exp_name, "seed": args.seed, "env_steps": global_step,
        "wall_time_s": round(wall_time, 2), "sps": int(global_step / wall_time),
        "final_eval_return": eval_history[-1]["return"] if eval_history else None,
        **scores(eval_history, baseline), "random_policy_return": baseline,
        "eval_deterministic": not args.eval_stochastic, "nan_skipped_updates": nan_skipped,
        "eval_history": eval_history, "args": asdict(args),
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"final eval return {summary['final_eval_return']:.1f} | strength {summary['strength']} | "
          f"{global_step} steps in {wall_time:.0f} s ({summary['sps']} SPS) | {run_dir}/summary.json")
    envs.close()
    eval_envs.close()
    writer.close()
    return summary


if __name__ == "__main__":
    try:
        main(start_time=START_TIME)
    except CLIError as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(2)

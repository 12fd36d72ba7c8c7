# PPO with a Gaussian policy (state-independent log-std) on MuJoCo Playground, CleanRL single-file style.
# Differences from CleanRL's ppo_continuous_action.py: environments are playground_gym's device-resident vector envs;
# time-limit ends bootstrap from V(final_obs) and cut the GAE trace; observations are normalised by a torch running
# mean/std saved with the model; per-env defaults come from playground_gym.official_config. Run folder:
# runs/<env>__<exp_name>__<seed>__<unix time>/ with TensorBoard events, checkpoint.pt and summary.json.
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

    # Algorithm specific arguments
    env_id: str = "CartpoleBalance"
    """a Playground env id, with or without the `playground/` prefix (see playground_gym.list_envs())"""
    total_timesteps: int = 800_000
    """total env steps (agent decisions summed over envs) of the run"""
    learning_rate: float = 1e-3
    """Adam's learning rate"""
    anneal_lr: bool = False
    """anneal the learning rate linearly to 0; off by default: a constant rate was the single most helpful change on
    DM Control in SLM-Lab's PyTorch campaign"""
    num_envs: int = 64
    """the number of parallel envs"""
    num_steps: int = 256
    """the number of steps per env per rollout (batch = num_envs * num_steps)"""
    gamma: float | None = None
    """the discount factor; None = the env's official `discounting` (0.995 on most DM Control envs, 0.95 FingerSpin)"""
    gae_lambda: float = 0.95
    """the lambda of generalised advantage estimation"""
    episode_length: int | None = None
    """physics control steps per episode; None = the env's official value (1000 on DM Control)"""
    action_repeat: int | None = None
    """control steps per agent decision; None = the env's official value (e.g. 4 for PendulumSwingup)"""
    reward_scale: float = 1.0
    """multiplies training rewards (episodic returns are logged unscaled); SLM-Lab found 10 helpful on DM Control"""
    norm_obs: bool = True
    """normalise observations with a running mean/std updated once per rollout (saved with the model)"""
    norm_value_targets: bool = False
    """normalise the critic's targets with running statistics (the critic predicts normalised returns); helped about
    half of the DM Control tasks and hurt the rest in SLM-Lab's campaign"""
    num_minibatches: int = 8
    """the number of minibatches per epoch"""
    update_epochs: int = 10
    """the number of epochs over each batch"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient (0.3 raised final returns on DM Control in SLM-Lab's campaign)"""
    clip_vloss: bool = False
    """clip the value loss around the old values with clip_coef (only sensible with small-scale value targets)"""
    ent_coef: float = 0.0
    """coefficient of the entropy bonus"""
    vf_coef: float = 0.5
    """coefficient of the value loss"""
    max_grad_norm: float = 0.5
    """the maximum norm of the gradient (clipping); <= 0 disables clipping"""
    target_kl: float | None = None
    """stop the epochs of an update early when the approximate KL exceeds this"""
    actor_hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths of the actor MLP (its depth is the number of entries)"""
    critic_hidden_sizes: tuple[int, ...] = (256, 256)
    """hidden layer widths of the critic MLP"""
    activation: Literal["tanh", "relu", "elu", "silu"] = "tanh"
    """activation of both MLPs"""
    log_std_init: float = 0.0
    """initial log standard deviation of the Gaussian policy"""
    log_std_min: float = -5.0
    """lower bound of the log-std"""
    log_std_max: float = 1.0
    """upper bound of the log-std (an upper bound stopped NaN blow-ups in SLM-Lab's campaign)"""
    eval_interval: int = 5
    """evaluate every this many updates and at the end (0 = only at the end)"""
    num_eval_envs: int = 16
    """envs (one full episode each) per evaluation, created separately with their own seed"""
    eval_stochastic: bool = False
    """evaluate with sampled actions instead of the deterministic mean action"""
    log_interval: int = 1
    """write scalars and progress every this many updates (values are read from the device only then)"""


PER_ENV_DEFAULTS = {"gamma": "discounting", "episode_length": "episode_length", "action_repeat": "action_repeat"}


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
    """Fill the None per-env fields from official_config and check values; returns (args, source of each per-env value)."""
    try:
        config = playground_gym.official_config(args.env_id)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    args.env_id = config["env_id"]
    sources = {}
    for field, key in PER_ENV_DEFAULTS.items():
        sources[field] = "user" if getattr(args, field) is not None else f"official_config[{key!r}]"
        if getattr(args, field) is None:
            setattr(args, field, config[key])
    checks = [
        (args.total_timesteps > 0, f"--total-timesteps must be > 0; got {args.total_timesteps}"),
        (args.num_envs > 0, f"--num-envs must be > 0; got {args.num_envs}"),
        (args.num_steps > 0, f"--num-steps must be > 0; got {args.num_steps}"),
        (args.num_minibatches > 0, f"--num-minibatches must be > 0; got {args.num_minibatches}"),
        (args.num_envs * args.num_steps % max(args.num_minibatches, 1) == 0,
         f"--num-envs * --num-steps ({args.num_envs * args.num_steps}) must be divisible by --num-minibatches "
         f"({args.num_minibatches}), so minibatches are equal and no larger than the batch"),
        (args.total_timesteps >= args.num_envs * args.num_steps,
         f"--total-timesteps ({args.total_timesteps}) must be >= one batch, --num-envs * --num-steps "
         f"({args.num_envs * args.num_steps})"),
        (args.update_epochs > 0, f"--update-epochs must be > 0; got {args.update_epochs}"),
        (0.0 < args.gamma <= 1.0, f"--gamma must be in (0, 1]; got {args.gamma}"),
        (0.0 <= args.gae_lambda <= 1.0, f"--gae-lambda must be in [0, 1]; got {args.gae_lambda}"),
        (args.learning_rate > 0, f"--learning-rate must be > 0; got {args.learning_rate}"),
        (args.clip_coef > 0, f"--clip-coef must be > 0; got {args.clip_coef}"),
        (math.isfinite(args.reward_scale), f"--reward-scale must be finite; got {args.reward_scale}"),
        (args.episode_length > 0 and args.action_repeat > 0 and args.episode_length >= args.action_repeat,
         f"--episode-length ({args.episode_length}) and --action-repeat ({args.action_repeat}) must be > 0 with "
         f"episode_length >= action_repeat"),
        (args.log_std_min < args.log_std_max, f"--log-std-min must be < --log-std-max; got {args.log_std_min}, "
         f"{args.log_std_max}"),
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


def compute_gae_truncation(rewards, values, next_values, terminated, dones, gamma, gae_lambda):
    """GAE over a (T, N) rollout that handles time limits.

    `next_values[t]` is V of the observation reached by step t: V(final_obs) where the episode ended there (the true
    terminal or time-limit observation, not the next episode's first), else V(obs[t+1]). The TD error bootstraps
    `r + gamma * V(next) * (1 - terminated)`, so a truncated step still bootstraps; `dones = terminated | truncated`
    cuts the trace so no advantage leaks across episodes. Returns advantages (T, N); returns = advantages + values.
    """
    not_terminated, not_done = 1.0 - terminated.float(), 1.0 - dones.float()
    deltas = rewards + gamma * next_values * not_terminated - values
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        lastgaelam = deltas[t] + gamma * gae_lambda * not_done[t] * lastgaelam
        advantages[t] = lastgaelam
    return advantages


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim, hidden_sizes, out_dim, activation, out_std):
    layers, last = [], in_dim
    for width in hidden_sizes:
        layers += [layer_init(nn.Linear(last, width)), ACTIVATIONS[activation]()]
        last = width
    return nn.Sequential(*layers, layer_init(nn.Linear(last, out_dim), std=out_std))


class Agent(nn.Module):
    """Separate actor and critic MLPs; Gaussian policy with a state-independent, bounded log-std."""

    def __init__(self, obs_dim, act_dim, actor_hidden_sizes=(64, 64), critic_hidden_sizes=(256, 256),
                 activation="tanh", log_std_init=0.0, log_std_bounds=(-5.0, 1.0)):
        super().__init__()
        self.critic = mlp(obs_dim, critic_hidden_sizes, 1, activation, out_std=1.0)
        self.actor_mean = mlp(obs_dim, actor_hidden_sizes, act_dim, activation, out_std=0.01)
        self.actor_logstd = nn.Parameter(torch.full((1, act_dim), float(log_std_init)))
        self.log_std_bounds = log_std_bounds

    def get_value(self, x):
        return self.critic(x).squeeze(-1)

    def get_distribution(self, x):
        mean = self.actor_mean(x)
        logstd = self.actor_logstd.clamp(*self.log_std_bounds).expand_as(mean)
        return Normal(mean, logstd.exp(), validate_args=False)  # torch's checks: a host sync per call on GPU

    def get_action(self, x, deterministic=False):
        dist = self.get_distribution(x)
        action = dist.mean if deterministic else dist.sample()
        return action, dist.log_prob(action).sum(-1)

    def get_action_and_value(self, x, action=None):
        dist = self.get_distribution(x)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1), self.get_value(x)


@torch.no_grad()
def evaluate(agent, normalize, eval_envs, seed, stochastic=False):
    """One full episode in each eval env (all start together, so all end within max_episode_steps); mean return."""
    obs, _ = eval_envs.reset(seed=seed)
    returns = torch.zeros(eval_envs.num_envs, device=eval_envs.device)
    finished = torch.zeros(eval_envs.num_envs, dtype=torch.bool, device=eval_envs.device)
    for _ in range(eval_envs.max_episode_steps):
        action, _ = agent.get_action(normalize(obs), deterministic=not stochastic)
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
        action, _ = agent.get_action(normalize(obs), deterministic=True)
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
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size
    print(f"{'resuming' if checkpoint else 'run'}: {run_dir}")
    print("resolved per-env settings: " + ", ".join(f"{k}={getattr(args, k)} ({sources[k]})" for k in PER_ENV_DEFAULTS))
    print("args: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()))
    print(f"batch {batch_size} = {args.num_envs} envs x {args.num_steps} steps, {num_iterations} updates of "
          f"{args.update_epochs} epochs x {args.num_minibatches} minibatches of {minibatch_size}")

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
        envs = playground_gym.make_vec(args.env_id, args.num_envs, seed=args.seed, reward_scale=args.reward_scale,
                                       **env_kwargs)
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

    agent = Agent(obs_dim, act_dim, args.actor_hidden_sizes, args.critic_hidden_sizes, args.activation,
                  args.log_std_init, (args.log_std_min, args.log_std_max)).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)  # one kernel, CPU or GPU
    obs_rms = RunningMeanStd((obs_dim,)).to(device)
    return_rms = RunningMeanStd(()).to(device)
    normalize = obs_rms.normalize if args.norm_obs else (lambda x: x)

    def value_fn(x):  # V in return units; with --norm-value-targets the critic predicts normalised returns
        v = agent.get_value(x)
        return return_rms.denormalize(v) if args.norm_value_targets else v

    # ALGO Logic: Storage setup (once, on the envs' device)
    obs = torch.zeros((args.num_steps, args.num_envs, obs_dim), device=device)
    raw_obs = torch.zeros((args.num_steps, args.num_envs, obs_dim), device=device)
    final_obs = torch.zeros((args.num_steps, args.num_envs, obs_dim), device=device)
    actions = torch.zeros((args.num_steps, args.num_envs, act_dim), device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    terminateds = torch.zeros((args.num_steps, args.num_envs), dtype=torch.bool, device=device)
    dones = torch.zeros((args.num_steps, args.num_envs), dtype=torch.bool, device=device)
    # episode statistics accumulated on the device, read only at log intervals
    ep_stats = torch.zeros(3, device=device)  # sum of returns, sum of lengths, count
    last_return = float("nan")

    global_step, start_iteration, eval_history, nan_skipped, prior_wall = 0, 0, [], 0, 0.0
    if checkpoint:
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        obs_rms.load_state_dict(checkpoint["obs_rms"])
        return_rms.load_state_dict(checkpoint["return_rms"])
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
                "return_rms": return_rms.state_dict(), "args": asdict(args), "sources": sources,
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

        # ALGO LOGIC: rollout (actor only; no host sync inside)
        with torch.no_grad():
            for step in range(args.num_steps):
                raw_obs[step] = next_obs
                obs[step] = normalize(next_obs)
                action, logprob = agent.get_action(obs[step])
                actions[step], logprobs[step] = action, logprob
                next_obs, reward, terminated, truncated, info = envs.step(action)
                rewards[step], terminateds[step], dones[step] = reward, terminated, terminated | truncated
                final_obs[step] = normalize(info["final_obs"])
                if "_episode" in info:
                    mask = info["_episode"]
                    ep_stats += torch.stack([(info["episode"]["r"] * mask).sum(),
                                             (info["episode"]["l"] * mask).sum().float(), mask.sum().float()])
            global_step += batch_size
            if args.norm_obs:
                obs_rms.update(raw_obs)  # once per rollout: the stored obs keep the statistics the actions saw

            # ALGO LOGIC: GAE, bootstrapping time-limit ends from V(final_obs)
            values = value_fn(obs).view(args.num_steps, args.num_envs)
            next_values = value_fn(final_obs).view(args.num_steps, args.num_envs)
            advantages = compute_gae_truncation(rewards, values, next_values, terminateds, dones,
                                                args.gamma, args.gae_lambda)
            returns = advantages + values

        # flatten the batch
        b_obs, b_actions = obs.view(-1, obs_dim), actions.view(-1, act_dim)
        b_logprobs, b_advantages = logprobs.view(-1), advantages.view(-1)
        b_returns, b_values = returns.view(-1), values.view(-1)
        if args.norm_value_targets:
            return_rms.update(b_returns)
            b_targets, b_old_v = return_rms.normalize(b_returns), return_rms.normalize(b_values)
        else:
            b_targets, b_old_v = b_returns, b_values

        # ALGO LOGIC: optimizing the policy and value network
        clipfrac_sum, num_mb = torch.zeros((), device=device), 0
        for epoch in range(args.update_epochs):
            b_inds = torch.randperm(batch_size, device=device)
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_inds[start:start + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                with torch.no_grad():  # http://joschu.net/blog/kl-approx.html
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfrac_sum += ((ratio - 1.0).abs() > args.clip_coef).float().mean()
                mb_adv = b_advantages[mb_inds]
                if args.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
                if args.clip_vloss:
                    v_clipped = b_old_v[mb_inds] + (newvalue - b_old_v[mb_inds]).clamp(-args.clip_coef, args.clip_coef)
                    v_loss_max = torch.max((newvalue - b_targets[mb_inds]) ** 2, (v_clipped - b_targets[mb_inds]) ** 2)
                    v_loss = 0.5 * v_loss_max.mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_targets[mb_inds]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                max_norm = args.max_grad_norm if args.max_grad_norm > 0 else math.inf
                grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), max_norm)
                if not torch.isfinite(grad_norm):  # NaN/inf loss or gradient: skip, never corrupt the parameters
                    nan_skipped += 1
                    optimizer.zero_grad()
                    continue
                optimizer.step()
                num_mb += 1
            if args.target_kl is not None and approx_kl > args.target_kl:
                break

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
            var_y = b_returns.var()
            explained_var = (1 - (b_returns - b_values).var() / var_y).item() if var_y > 0 else float("nan")
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
        torch.save({"agent": agent.state_dict(), "obs_rms": obs_rms.state_dict(), "return_rms": return_rms.state_dict(),
                    "args": asdict(args)}, model_path)
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

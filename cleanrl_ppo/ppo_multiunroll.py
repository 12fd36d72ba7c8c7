# PPO with Brax's `ppo.train` on MuJoCo Playground, CleanRL single-file style: ppo_tanh.py's tanh-Normal policy with
# Brax's data collection, consumption and schedule. Per update: n_unrolls sequential unrolls of unroll_length steps of
# every env as batch_size * num_minibatches segments; normalisers updated once before SGD; num_updates_per_batch epochs
# shuffle the segments into num_minibatches minibatches, each recomputing values and GAE with the CURRENT critic (Brax's
# compute_gae: a truncated step gets zero TD error and cuts the trace); reward_scaling inside the loss, advantages
# normalised per minibatch, value loss 0.25 * MSE unclipped, Adam (eps 1e-8). Updates, forced resets, evaluation points
# and env-step count (x action_repeat) are Brax's (brax_schedule); num_envs and batch_size are global, split across
# torchrun ranks as Brax's pmap does. Defaults: the env's official Brax config (official_config; `--preset cpu` scales
# it down). Known differences: the normaliser clips at 10 std, entropy uses torch's RNG. No host sync in the loop.
import math
import os
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar, Literal

START_TIME = time.time()  # a run's wall time counts from here: imports and JIT compiles included

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.distributions.normal import Normal

from playground_gym.distributed import all_reduce_gradients  # a no-op in one process
from playground_gym.experiment import CLIError, Experiment, ExperimentArgs, RunningMeanStd, cli  # noqa: F401


@dataclass
class Args(ExperimentArgs):
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run folder's name)"""

    # Algorithm specific arguments (None = the env's official Brax value, or the preset's; printed with its source)
    preset: Literal["official", "cpu"] = "official"
    """official: None values take the env's official Brax config; cpu: CPU_PRESET, a 2-core CPU's scale of it"""
    total_timesteps: int | None = None
    """Brax's num_timesteps: env steps (x action_repeat, all envs), rounded up to whole epochs; None = official"""
    num_evals: int | None = None
    """Brax's num_evals: one evaluation before training (if > 1), one after each of num_evals - 1 eval epochs"""
    eval_interval: int | None = None
    """evaluate every this many updates instead (0 = only after the last); None = Brax's points (see --num-evals)"""
    learning_rate: float | None = None
    """Adam's learning rate (None = official `learning_rate`, 1e-3 on DM Control)"""
    anneal_lr: bool = False
    """anneal the learning rate linearly to 0 (Brax's default schedule is constant)"""
    num_envs: int | None = None
    """the number of parallel envs of all ranks together (None = official `num_envs`)"""
    unroll_length: int | None = None
    """steps per unroll, the length of a segment (None = official `unroll_length`, 30 on DM Control)"""
    batch_size: int | None = None
    """segments per minibatch, all ranks together (None = official `batch_size`)"""
    num_minibatches: int | None = None
    """minibatches (SGD steps) per epoch (None = official `num_minibatches`)"""
    num_updates_per_batch: int | None = None
    """epochs over each update's data (None = official `num_updates_per_batch`)"""
    gamma: float | None = None
    """the discount factor; None = the env's official `discounting` (0.995 on most DM Control envs)"""
    gae_lambda: float | None = None
    """the lambda of generalised advantage estimation (None = official `gae_lambda`)"""
    reward_scaling: float | None = None
    """multiplies rewards inside the loss (episodic returns are logged unscaled); None = official, 10 on DM Control"""
    num_resets_per_eval: int | None = None
    """Brax's: training epochs per eval epoch, all envs reset after each (0 = one, no resets); None = official"""
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
    """weight init: Brax's lecun_uniform (every layer) or CleanRL's orthogonal (output gains 0.01 actor, 1 critic)"""
    min_std: float = 0.001
    """the policy's scale is softplus(raw) + min_std (Brax's NormalTanhDistribution default)"""

    per_env_defaults: ClassVar[dict[str, str]] = {
        **ExperimentArgs.per_env_defaults, "gamma": "discounting", "total_timesteps": "num_timesteps",
        "num_evals": "num_evals", "learning_rate": "learning_rate", "num_envs": "num_envs", "unroll_length": "unroll_length",
        "batch_size": "batch_size", "num_minibatches": "num_minibatches",
        "num_updates_per_batch": "num_updates_per_batch", "gae_lambda": "gae_lambda",
        "reward_scaling": "reward_scaling", "num_resets_per_eval": "num_resets_per_eval",
        "clip_coef": "clipping_epsilon", "ent_coef": "entropy_cost", "max_grad_norm": "max_grad_norm",
        "actor_hidden_sizes": "policy_hidden_layer_sizes", "critic_hidden_sizes": "value_hidden_layer_sizes",
    }
    # --preset cpu: Brax's schedule at a 2-core CPU's scale (docs/trainers.md): 64 envs x 8 unrolls x 32 steps = 16384
    # steps per update, 8 minibatches of 64 segments x 10 epochs (~5 SGD steps per 1k env steps, as CleanRL's defaults),
    # reward_scaling 0.1 (the 5x256 critic's targets O(10)), no forced resets; 80 updates, evaluated at 0 and every 5
    presets: ClassVar[dict[str, dict]] = {"official": {}, "cpu": {
        "num_envs": 64, "unroll_length": 32, "batch_size": 64, "num_minibatches": 8, "num_updates_per_batch": 10,
        "reward_scaling": 0.1, "total_timesteps": 1_310_720, "num_resets_per_eval": 0, "num_evals": 17}}

    def checks(self):
        for field in ["total_timesteps", "num_envs", "unroll_length", "batch_size", "num_minibatches",
                      "num_updates_per_batch", "num_evals", "action_repeat"]:
            if getattr(self, field) <= 0:
                raise CLIError(f"--{field.replace('_', '-')} must be > 0; got {getattr(self, field)}")
        brax_schedule(self)  # raises where the shapes do not divide
        return [
            (0.0 < self.gamma <= 1.0, f"--gamma must be in (0, 1]; got {self.gamma}"),
            (0.0 <= self.gae_lambda <= 1.0, f"--gae-lambda must be in [0, 1]; got {self.gae_lambda}"),
            (self.learning_rate > 0, f"--learning-rate must be > 0; got {self.learning_rate}"),
            (self.clip_coef > 0, f"--clip-coef must be > 0; got {self.clip_coef}"),
            (math.isfinite(self.reward_scaling), f"--reward-scaling must be finite; got {self.reward_scaling}"),
            (self.num_resets_per_eval >= 0, f"--num-resets-per-eval must be >= 0; got {self.num_resets_per_eval}"),
            (self.min_std > 0, f"--min-std must be > 0; got {self.min_std}"),
            (all(h > 0 for h in self.actor_hidden_sizes + self.critic_hidden_sizes), "hidden sizes must be > 0"),
        ] + super().checks()


def brax_schedule(args, world_size=1):
    """Brax's ppo.train schedule (brax/training/agents/ppo/train.py) for `args` on `world_size` ranks: an update is
    n_unrolls unrolls of every env; num_envs, batch_size are global (local_envs, local_segments per rank);
    steps_per_update counts all ranks' env steps x action_repeat. max(num_evals - 1, 1) eval epochs of
    max(num_resets_per_eval, 1) training epochs of updates_per_epoch updates (envs reset after each if it is > 0)."""
    segments = args.batch_size * args.num_minibatches
    if segments % args.num_envs:
        raise CLIError(f"--batch-size * --num-minibatches ({args.batch_size} * {args.num_minibatches} = {segments} "
                       f"segments per update) must be divisible by --num-envs ({args.num_envs}): each unroll gives one "
                       f"segment per env")
    if args.num_envs % world_size or args.batch_size % world_size:
        raise CLIError(f"--num-envs ({args.num_envs}) and --batch-size ({args.batch_size}) count all ranks together: "
                       f"both must be divisible by the number of ranks ({world_size})")
    steps_per_update = segments * args.unroll_length * args.action_repeat
    eval_epochs, epochs_per_eval = max(args.num_evals - 1, 1), max(args.num_resets_per_eval, 1)
    per_epoch = math.ceil(args.total_timesteps / (eval_epochs * steps_per_update * epochs_per_eval))
    return SimpleNamespace(num_updates=eval_epochs * epochs_per_eval * per_epoch, updates_per_epoch=per_epoch,
                           reset_every=per_epoch if args.num_resets_per_eval > 0 else 0,
                           eval_every=epochs_per_eval * per_epoch, eval_at_start=args.num_evals > 1,
                           n_unrolls=segments // args.num_envs, local_envs=args.num_envs // world_size,
                           local_segments=segments // world_size, steps_per_update=steps_per_update)


def compute_gae(truncation, termination, rewards, values, bootstrap_value, gae_lambda=1.0, gamma=0.99):
    """brax.training.agents.ppo.losses.compute_gae in torch: time-major (T, B) inputs, bootstrap_value (B,) = V(obs
    after the last step). A truncated step gets zero TD error and cuts the trace; termination zeroes the bootstrap.
    Returns detached (vs, advantages): targets, and `(r + gamma * (1 - term) * vs[t+1] - v[t]) * (1 - trunc)`."""
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
    """Brax's NormalTanhDistribution: x ~ N(loc, softplus(raw_scale) + min_std), action = tanh(x). Works on PRE-tanh
    samples (`sample()` gives (action, pre_tanh); `log_prob(pre_tanh)`), so no atanh is ever taken; `entropy()` is
    Brax's one-sample estimate (Normal entropy plus the log-det-Jacobian at a fresh reparametrised sample)."""

    def __init__(self, loc, raw_scale, min_std=0.001):
        self.normal = Normal(loc, F.softplus(raw_scale) + min_std, validate_args=False)  # checks: a GPU host sync

    def sample(self):
        pre_tanh = self.normal.rsample().detach()  # sample()'s draw; its torch.normal syncs on CUDA
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
                 activation="silu", init="lecun_uniform", min_std=0.001, critic_obs_dim=None):
        super().__init__()
        self.critic = mlp(critic_obs_dim or obs_dim, critic_hidden_sizes, 1, activation, out_std=1.0, init=init)
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

    def get_action(self, x):
        """(actor output, action, PRE-tanh sample) for observations `x`: one policy step of the rollout."""
        actor_out = self.actor(x)
        action, pre_tanh = self.distribution(actor_out).sample()
        return actor_out, action, pre_tanh


@torch.no_grad()
def rollout(policy, envs, next_obs, normalize, storage, run):
    """n_unrolls sequential unrolls of T steps of every env into `storage`; returns the next (policy, critic)
    observations (run.observe). Stores raw observations (normalised after the statistics' update, as Brax's loss sees
    them) and the actor's outputs (behaviour log-probs come from them once per update). Device work only: no sync."""
    n_unrolls, T = storage.obs.shape[:2]
    for unroll in range(n_unrolls):
        for step in range(T):
            storage.obs[unroll, step], storage.critic_obs[unroll, step] = next_obs  # one tensor unless asymmetric
            actor_out, action, pre_tanh = policy(normalize(next_obs[0]))  # agent.get_action
            storage.actor_outs[unroll, step], storage.actions[unroll, step] = actor_out, pre_tanh  # PRE-tanh: no atanh
            obs, reward, terminated, truncated, info = envs.step(action)
            next_obs = run.observe(obs, info)
            storage.rewards[unroll, step], storage.terminations[unroll, step] = reward, terminated
            storage.truncations[unroll, step] = truncated  # Brax's state.info["truncation"]
            storage.episodes[:, unroll, step] = torch.stack([info["_episode"], info["episode"]["r"],
                                                             info["episode"]["l"]])
        storage.boot_critic_obs[unroll] = next_obs[1]  # after a done this is the next episode's first: Brax masks it
    return next_obs


def ppo_loss(agent, s, mb, args):
    """The PPO loss of the segments `mb` of `s`, with values and GAE from the current critic, and its statistics
    (detached): value loss, policy loss, entropy, approximate KL, clip fraction, explained variance."""
    values = agent.get_value(torch.cat([s.critic_obs[:, mb].flatten(0, 1), s.boot_critic_obs[mb]]))  # [T*B + B]
    newvalue, bootstrap = values[:-len(mb)].view(-1, len(mb)), values[-len(mb):]
    vs, mb_adv = compute_gae(s.truncations[:, mb], s.terminations[:, mb], s.rewards[:, mb], newvalue, bootstrap,
                             args.gae_lambda, args.gamma)
    dist = agent.get_distribution(s.obs[:, mb])
    logratio = dist.log_prob(s.actions[:, mb]) - s.logprobs[:, mb]
    ratio = logratio.exp()
    with torch.no_grad():  # http://joschu.net/blog/kl-approx.html
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()
        var_y = vs.var()
        explained_var = torch.where(var_y > 0, 1 - (vs - newvalue).var() / var_y, math.nan)
    if args.norm_adv:
        mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std(unbiased=False) + 1e-8)
    pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
    v_loss = 0.5 * ((newvalue - vs) ** 2).mean()
    entropy_loss = dist.entropy().mean()
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    return loss, torch.stack([v_loss.detach(), pg_loss.detach(), entropy_loss.detach(), approx_kl, clipfrac,
                              explained_var])


def update(agent, optimizer, s, args, nonfinite_updates, loss_fn=ppo_loss):
    """num_updates_per_batch epochs of num_minibatches SGD steps on shuffled segments `s` (time-major); each minibatch
    recomputes values and GAE with the current critic. Returns the last minibatch's losses (device tensors). A step
    with a non-finite gradient is skipped by fused Adam's found_inf: decided on the device, no host sync."""
    n_segments = s.obs.shape[1]
    clipfracs = []
    for epoch in range(args.num_updates_per_batch):
        for mb in torch.randperm(n_segments, device=s.obs.device).view(args.num_minibatches, -1):
            loss, stats = loss_fn(agent, s, mb, args)
            clipfracs.append(stats[4])
            optimizer.zero_grad()
            loss.backward()
            all_reduce_gradients(agent.parameters())  # torchrun: the mean over ranks, before clipping
            if args.max_grad_norm is not None and args.max_grad_norm > 0:  # None: official, no clipping
                grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            else:
                grad_norm = nn.utils.get_total_norm([p.grad for p in agent.parameters()])
            nonfinite = ~torch.isfinite(grad_norm)  # NaN/inf loss or gradient: skipped, never applied
            optimizer.found_inf = nonfinite.float()  # fused Adam leaves params and moments where it is 1
            optimizer.step()
            nonfinite_updates += nonfinite
    v_loss, pg_loss, entropy_loss, approx_kl, _, explained_var = stats  # of the last minibatch
    return {"losses/value_loss": v_loss, "losses/policy_loss": pg_loss, "losses/entropy": entropy_loss,
            "losses/approx_kl": approx_kl, "losses/clipfrac": torch.stack(clipfracs).mean(),
            "losses/explained_variance": explained_var}


def main(argv=None, start_time=None):
    run = Experiment(Args, argv, start_time)
    args = run.args
    sched = brax_schedule(args, run.world.size)  # this rank's share of Brax's global batch
    n_unrolls, T, num_envs, n_segments = sched.n_unrolls, args.unroll_length, sched.local_envs, sched.local_segments
    eval_every = sched.eval_every if args.eval_interval is None else args.eval_interval
    if run.world.is_main:
        print(f"update: {n_unrolls} unrolls x {args.num_envs} envs x {T} steps x action_repeat {args.action_repeat} = "
              f"{sched.steps_per_update} env steps in {args.batch_size * args.num_minibatches} segments; "
              f"{sched.num_updates} updates of {args.num_updates_per_batch} epochs x {args.num_minibatches} minibatches "
              f"of {args.batch_size} segments; forced resets every {sched.reset_every or 'no'} updates; evaluations "
              f"every {eval_every or 'no'} updates{' and before training' if sched.eval_at_start else ''}")
    run.check_schedule(sched.num_updates, sched.steps_per_update)

    envs = run.make_envs(num_envs)
    device = envs.device
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = Agent(obs_dim, act_dim, args.actor_hidden_sizes, args.critic_hidden_sizes, args.activation, args.init,
                  args.min_std, run.critic_obs_dim).to(device)  # the critic's input: obs, or privileged_state
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-8, fused=True)  # optax.adam's eps
    obs_rms = RunningMeanStd((obs_dim,)).to(device)
    critic_rms = RunningMeanStd((run.critic_obs_dim,)).to(device) if run.critic_key else obs_rms  # own if asymmetric
    normalize, critic_normalize = (obs_rms.normalize, critic_rms.normalize) if args.norm_obs else (lambda x: x,) * 2

    def act(obs, deterministic):  # the policy that evaluation and --capture-video run
        dist = agent.get_distribution(normalize(obs))
        return dist.mode() if deterministic else dist.sample()[0]

    # ALGO Logic: Storage setup (once, on the envs' device): [unroll, step, env], raw (unnormalised) observations
    def zeros(*shape):
        return torch.zeros((n_unrolls, T, num_envs, *shape), device=device)

    storage = SimpleNamespace(obs=zeros(obs_dim), actions=zeros(act_dim), actor_outs=zeros(2 * act_dim),
                              rewards=zeros(), terminations=zeros(), truncations=zeros(),  # actions: PRE-tanh
                              boot_critic_obs=torch.zeros((n_unrolls, num_envs, run.critic_obs_dim), device=device),
                              episodes=torch.zeros((3, n_unrolls, T, num_envs), device=device))  # ended, r, l

    storage.critic_obs = zeros(run.critic_obs_dim) if run.critic_key else storage.obs  # one buffer unless asymmetric

    def segments(x):  # [unroll, step, env, ...] -> time-major segments [step, unroll * num_envs, ...]
        return x.transpose(0, 1).reshape(T, n_segments, *x.shape[3:])

    # --compile: the policy step and the loss with its GAE and backward under torch.compile (Adam is fused already)
    policy, loss_fn = run.compile(agent.get_action), run.compile(ppo_loss)

    next_obs = run.start(agent=agent, optimizer=optimizer, obs_rms=obs_rms, critic_rms=critic_rms)
    iterations = run.iterations(sched.num_updates, eval_every, steps_per_agent_step=args.action_repeat)
    if sched.eval_at_start:
        run.evaluate_initial_policy(act)  # Brax evaluates the initial policy at step 0
    for iteration in iterations:
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = run.lr_fraction(iteration) * args.learning_rate

        # ALGO LOGIC: rollout: n_unrolls sequential unrolls of T steps, env state carried
        next_obs = rollout(policy, envs, next_obs, normalize, storage, run)
        ended, ep_return, ep_length = storage.episodes
        run.episode_stats += torch.stack([(ep_return * ended).sum(), (ep_length * ended).sum(), ended.sum()])

        with torch.no_grad():
            # behaviour log-probs in one pass over the stored actor outputs (elementwise: the per-step numbers)
            logprobs = agent.distribution(storage.actor_outs).log_prob(storage.actions)
            if args.norm_obs:
                obs_rms.update(storage.obs)  # once per update, from all collected observations, before SGD (as Brax)
                if run.critic_key:
                    critic_rms.update(storage.critic_obs)
            # segments [T, n_segments]; observations normalised with the updated statistics, as in Brax's loss
            s = SimpleNamespace(obs=(obs := normalize(segments(storage.obs))), actions=segments(storage.actions),
                                critic_obs=critic_normalize(segments(storage.critic_obs)) if run.critic_key else obs,
                                boot_critic_obs=critic_normalize(storage.boot_critic_obs.reshape(n_segments, -1)),
                                logprobs=segments(logprobs), rewards=segments(storage.rewards) * args.reward_scaling,
                                terminations=segments(storage.terminations),
                                truncations=segments(storage.truncations * (1.0 - storage.terminations)))

        # ALGO LOGIC: optimizing the policy and value network, GAE per minibatch with the current critic
        metrics = update(agent, optimizer, s, args, run.nonfinite_updates, loss_fn)
        if sched.reset_every and iteration % sched.reset_every == 0:  # Brax's forced resets: new states, same models
            next_obs = run.observe(*envs.reset(seed=run.rank_seed("forced reset", iteration),
                                               options={"keep_models": True}))

        # TRY NOT TO MODIFY: evaluation, logging (values leave the device only here, once), checkpoints
        metrics["charts/learning_rate"] = optimizer.param_groups[0]["lr"]
        run.end_iteration(iteration, sched.steps_per_update // run.world.size, next_obs, metrics, act)
    return run.finish(act, model=("agent", "obs_rms", "critic_rms"))


if __name__ == "__main__":
    cli(main, START_TIME)

# PPO with Brax's tanh-squashed Normal policy on MuJoCo Playground, CleanRL single-file style: ppo_continuous.py with
# the policy of brax.training.distribution.NormalTanhDistribution. The actor outputs loc and a raw scale per action dim
# (state-dependent std softplus(raw) + 0.001); actions are tanh of a pre-tanh Normal sample, the PRE-tanh sample is
# stored and log-probs are computed on it (no atanh), with the log-det-Jacobian in the stable form
# 2*(log 2 - x - softplus(-2x)). Networks and optimiser settings are ppo_continuous.py's (Brax's DM Control networks,
# 4x32 / 5x256 SiLU with lecun-uniform init, are a flag away; docs/trainers.md: why they are not the default here).
# Differences from CleanRL's ppo_continuous_action.py: environments are playground_gym's device-resident vector envs
# (each episode from a fresh initial state); time-limit ends bootstrap from V(final_obs) and cut the GAE trace;
# observations are normalised by a running mean/std saved with the model; per-env defaults come from
# playground_gym.official_config; rollout and update never wait for the device (a non-finite gradient step is skipped
# through fused Adam's found_inf, values reach the host once per log interval). The run plumbing (command line,
# evaluation, checkpoints that resume exactly, TensorBoard, summary.json) is playground_gym.experiment.
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

from playground_gym.distributed import all_mean, all_reduce_gradients  # no-ops in one process
from playground_gym.experiment import CLIError, Experiment, ExperimentArgs, RunningMeanStd, cli  # noqa: F401


@dataclass
class Args(ExperimentArgs):
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run folder's name)"""

    # Algorithm specific arguments
    total_timesteps: int = 800_000
    """total env steps (agent decisions summed over envs) of the run"""
    learning_rate: float = 1e-3
    """Adam's learning rate"""
    anneal_lr: bool = False
    """anneal the learning rate linearly to 0 (off: a constant rate did best on DM Control in SLM-Lab's campaign)"""
    num_envs: int = 64
    """the number of parallel envs"""
    num_steps: int = 256
    """the number of steps per env per rollout (batch = num_envs * num_steps)"""
    gamma: float | None = None
    """the discount factor; None = the env's official `discounting` (0.995 on most DM Control envs)"""
    gae_lambda: float = 0.95
    """the lambda of generalised advantage estimation"""
    reward_scale: float = 1.0
    """multiplies training rewards (episodic returns are logged unscaled)"""
    norm_obs: bool = True
    """normalise observations with a running mean/std updated once per rollout (saved with the model)"""
    norm_value_targets: bool = False
    """normalise the critic's targets with running statistics (the critic then predicts normalised returns)"""
    num_minibatches: int = 8
    """the number of minibatches per epoch"""
    update_epochs: int = 10
    """the number of epochs over each batch"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = False
    """clip the value loss around the old values with clip_coef (only sensible with small-scale value targets)"""
    ent_coef: float = 0.0
    """coefficient of the entropy bonus (Brax's official entropy_cost: 0.01)"""
    vf_coef: float = 0.5
    """coefficient of the value loss"""
    max_grad_norm: float = 0.5
    """the maximum norm of the gradient (clipping); <= 0 disables clipping"""
    target_kl: float | None = None
    """skip the rest of an update's SGD steps once an epoch ends with the approximate KL above this"""
    actor_hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths of the actor MLP, its depth the number of entries (Brax's DM Control policy: 32 32 32 32)"""
    critic_hidden_sizes: tuple[int, ...] = (256, 256)
    """hidden layer widths of the critic MLP (Brax's DM Control value network: 256 x 5)"""
    activation: Literal["tanh", "relu", "elu", "silu"] = "tanh"
    """activation of both MLPs (Brax's: silu)"""
    init: Literal["lecun_uniform", "orthogonal"] = "orthogonal"
    """weight init: CleanRL's orthogonal (output gains 0.01 actor, 1 critic) or Brax's lecun_uniform (every layer)"""
    min_std: float = 0.001
    """the policy's scale is softplus(raw) + min_std (Brax's NormalTanhDistribution default)"""

    per_env_defaults: ClassVar[dict[str, str]] = {**ExperimentArgs.per_env_defaults, "gamma": "discounting"}

    def checks(self):
        batch_size = self.num_envs * self.num_steps
        return [
            (self.total_timesteps > 0, f"--total-timesteps must be > 0; got {self.total_timesteps}"),
            (self.num_envs > 0, f"--num-envs must be > 0; got {self.num_envs}"),
            (self.num_steps > 0, f"--num-steps must be > 0; got {self.num_steps}"),
            (self.num_minibatches > 0, f"--num-minibatches must be > 0; got {self.num_minibatches}"),
            (batch_size % max(self.num_minibatches, 1) == 0,
             f"--num-envs * --num-steps ({batch_size}) must be divisible by --num-minibatches "
             f"({self.num_minibatches}), so minibatches are equal and no larger than the batch"),
            (self.total_timesteps >= batch_size,
             f"--total-timesteps ({self.total_timesteps}) must be >= one batch, --num-envs * --num-steps "
             f"({batch_size})"),
            (self.update_epochs > 0, f"--update-epochs must be > 0; got {self.update_epochs}"),
            (0.0 < self.gamma <= 1.0, f"--gamma must be in (0, 1]; got {self.gamma}"),
            (0.0 <= self.gae_lambda <= 1.0, f"--gae-lambda must be in [0, 1]; got {self.gae_lambda}"),
            (self.learning_rate > 0, f"--learning-rate must be > 0; got {self.learning_rate}"),
            (self.clip_coef > 0, f"--clip-coef must be > 0; got {self.clip_coef}"),
            (math.isfinite(self.reward_scale), f"--reward-scale must be finite; got {self.reward_scale}"),
            (self.min_std > 0, f"--min-std must be > 0; got {self.min_std}"),
            (all(h > 0 for h in self.actor_hidden_sizes + self.critic_hidden_sizes), "hidden sizes must be > 0"),
        ] + super().checks()


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

    def __init__(self, obs_dim, act_dim, actor_hidden_sizes=(64, 64), critic_hidden_sizes=(256, 256),
                 activation="tanh", init="orthogonal", min_std=0.001, critic_obs_dim=None):
        super().__init__()
        self.critic = mlp(critic_obs_dim or obs_dim, critic_hidden_sizes, 1, activation, out_std=1.0, init=init)
        self.actor = mlp(obs_dim, actor_hidden_sizes, 2 * act_dim, activation, out_std=0.01, init=init)
        self.min_std = min_std

    def get_value(self, x):
        return self.critic(x).squeeze(-1)

    def get_distribution(self, x):
        loc, raw_scale = self.actor(x).chunk(2, dim=-1)
        return NormalTanh(loc, raw_scale, self.min_std)

    def get_action(self, x, deterministic=False):
        """Returns (action in [-1, 1], pre-tanh sample, log-prob); deterministic: tanh(loc), loc."""
        dist = self.get_distribution(x)
        if deterministic:
            pre_tanh = dist.normal.loc
            return dist.mode(), pre_tanh, dist.log_prob(pre_tanh)
        action, pre_tanh = dist.sample()
        return action, pre_tanh, dist.log_prob(pre_tanh)

    def get_action_and_value(self, x, pre_tanh=None, critic_x=None):
        """critic_x: what the critic sees (an asymmetric critic's privileged observation); None = x"""
        dist = self.get_distribution(x)
        if pre_tanh is None:
            _, pre_tanh = dist.sample()
        return pre_tanh, dist.log_prob(pre_tanh), dist.entropy(), self.get_value(x if critic_x is None else critic_x)


@torch.no_grad()
def rollout(policy, envs, next_obs, normalize, critic_normalize, storage, run):
    """num_steps steps of every env with `policy` (agent.get_action) into `storage`; returns the (policy, critic)
    observations after the last. Observations are stored normalised with the statistics the actions saw; the critic's
    are the same tensors unless it is asymmetric (run.observe). Device work only: no host sync."""
    for step in range(storage.obs.shape[0]):
        obs, critic_obs = next_obs
        storage.raw_obs[step], storage.obs[step] = obs, normalize(obs)
        if critic_obs is not obs:  # an asymmetric critic's own observation (else it shares these buffers)
            storage.raw_critic_obs[step], storage.critic_obs[step] = critic_obs, critic_normalize(critic_obs)
        action, pre_tanh, logprob = policy(storage.obs[step])
        storage.actions[step], storage.logprobs[step] = pre_tanh, logprob  # store the PRE-tanh sample: no atanh later
        obs, reward, terminated, truncated, info = envs.step(action)
        next_obs = run.observe(obs, info)
        storage.rewards[step], storage.terminateds[step] = reward, terminated
        storage.dones[step] = terminated | truncated
        _, final_critic_obs = run.final_observations(info)
        storage.final_obs[step] = critic_normalize(final_critic_obs)  # only the critic reads it: V(final_obs)
        storage.episodes[:, step] = torch.stack([info["_episode"], info["episode"]["r"], info["episode"]["l"]])
    return next_obs


def ppo_loss(agent, b, mb_inds, args):
    """The clipped-surrogate loss of the minibatch `mb_inds` of the flat batch `b`, and its statistics (detached):
    value loss, policy loss, entropy, approximate KL, clip fraction."""
    _, newlogprob, entropy, newvalue = agent.get_action_and_value(b.obs[mb_inds], b.actions[mb_inds],
                                                                  b.critic_obs[mb_inds])
    logratio = newlogprob - b.logprobs[mb_inds]
    ratio = logratio.exp()
    with torch.no_grad():  # http://joschu.net/blog/kl-approx.html
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()
    mb_adv = b.advantages[mb_inds]
    if args.norm_adv:
        mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
    pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
    if args.clip_vloss:
        v_clipped = b.old_values[mb_inds] + (newvalue - b.old_values[mb_inds]).clamp(-args.clip_coef, args.clip_coef)
        v_loss_max = torch.max((newvalue - b.targets[mb_inds]) ** 2, (v_clipped - b.targets[mb_inds]) ** 2)
        v_loss = 0.5 * v_loss_max.mean()
    else:
        v_loss = 0.5 * ((newvalue - b.targets[mb_inds]) ** 2).mean()
    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    return loss, torch.stack([v_loss.detach(), pg_loss.detach(), entropy_loss.detach(), approx_kl, clipfrac])


def update(agent, optimizer, b, args, nonfinite_updates, loss_fn=ppo_loss):
    """update_epochs epochs of num_minibatches clipped-surrogate SGD steps on the flat batch `b`; returns the losses
    of the last minibatch (device tensors). A step with a non-finite gradient, and with --target-kl every step after
    an epoch that ended above it, is skipped by fused Adam's found_inf: decided on the device, no host sync."""
    batch_size = b.obs.shape[0]
    minibatch_size = batch_size // args.num_minibatches
    stop = torch.zeros((), dtype=torch.bool, device=b.obs.device)
    clipfracs = []
    for epoch in range(args.update_epochs):
        b_inds = torch.randperm(batch_size, device=b.obs.device)
        for start in range(0, batch_size, minibatch_size):
            mb_inds = b_inds[start:start + minibatch_size]
            loss, stats = loss_fn(agent, b, mb_inds, args)
            clipfracs.append(stats[4])
            optimizer.zero_grad()
            loss.backward()
            all_reduce_gradients(agent.parameters())  # torchrun: the mean over ranks, before clipping
            if args.max_grad_norm > 0:
                grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            else:
                grad_norm = nn.utils.get_total_norm([p.grad for p in agent.parameters()])
            nonfinite = ~torch.isfinite(grad_norm)  # NaN/inf loss or gradient: skipped, never applied
            optimizer.found_inf = (nonfinite | stop).float()  # fused Adam leaves params and moments where it is 1
            optimizer.step()
            nonfinite_updates += nonfinite
        if args.target_kl is not None:
            stop |= all_mean(stats[3]) > args.target_kl  # every rank stops together
    v_loss, pg_loss, entropy_loss, approx_kl, _ = stats  # of the last minibatch
    return {"losses/value_loss": v_loss, "losses/policy_loss": pg_loss, "losses/entropy": entropy_loss,
            "losses/approx_kl": approx_kl, "losses/clipfrac": torch.stack(clipfracs).mean()}


def main(argv=None, start_time=None):
    run = Experiment(Args, argv, start_time)
    args = run.args
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // (batch_size * run.world.size)  # steps of all ranks
    print(f"batch {batch_size} = {args.num_envs} envs x {args.num_steps} steps, {num_iterations} updates of "
          f"{args.update_epochs} epochs x {args.num_minibatches} minibatches of {batch_size // args.num_minibatches}")
    run.check_schedule(num_iterations, batch_size * run.world.size)

    envs = run.make_envs(args.num_envs, reward_scale=args.reward_scale)
    device = envs.device
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    critic_obs_dim = run.critic_obs_dim  # obs_dim, or the privileged observation's size for an asymmetric critic
    agent = Agent(obs_dim, act_dim, args.actor_hidden_sizes, args.critic_hidden_sizes, args.activation, args.init,
                  args.min_std, critic_obs_dim).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)  # fused: found_inf skips
    obs_rms, return_rms = RunningMeanStd((obs_dim,)).to(device), RunningMeanStd(()).to(device)
    critic_rms = RunningMeanStd((critic_obs_dim,)).to(device) if run.critic_key else obs_rms  # its own, if asymmetric
    normalize, critic_normalize = (obs_rms.normalize, critic_rms.normalize) if args.norm_obs else (lambda x: x,) * 2

    def value_fn(x):  # V in return units; with --norm-value-targets the critic predicts normalised returns
        v = agent.get_value(x)
        return return_rms.denormalize(v) if args.norm_value_targets else v

    def act(obs, deterministic):  # the policy that evaluation and --capture-video run
        return agent.get_action(normalize(obs), deterministic)[0]

    # ALGO Logic: Storage setup (once, on the envs' device)
    def zeros(*shape, dtype=torch.float32):
        return torch.zeros((args.num_steps, args.num_envs, *shape), dtype=dtype, device=device)

    storage = SimpleNamespace(obs=zeros(obs_dim), raw_obs=zeros(obs_dim), final_obs=zeros(critic_obs_dim),
                              critic_obs=zeros(critic_obs_dim) if run.critic_key else None,
                              raw_critic_obs=zeros(critic_obs_dim) if run.critic_key else None,
                              actions=zeros(act_dim), logprobs=zeros(), rewards=zeros(),  # actions: PRE-tanh
                              terminateds=zeros(dtype=torch.bool), dones=zeros(dtype=torch.bool),
                              episodes=torch.zeros((3, args.num_steps, args.num_envs), device=device))  # ended, r, l
    if not run.critic_key:  # the critic sees the policy's observations: the same buffers
        storage.critic_obs, storage.raw_critic_obs = storage.obs, storage.raw_obs

    # --compile: the policy step, GAE and the loss with its backward under torch.compile (Adam is fused already)
    policy, gae, loss_fn = run.compile(agent.get_action), run.compile(compute_gae_truncation), run.compile(ppo_loss)

    next_obs = run.start(agent=agent, optimizer=optimizer, obs_rms=obs_rms, return_rms=return_rms, critic_rms=critic_rms)
    for iteration in run.iterations(num_iterations):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = run.lr_fraction(iteration) * args.learning_rate

        # ALGO LOGIC: rollout (actor only)
        next_obs = rollout(policy, envs, next_obs, normalize, critic_normalize, storage, run)
        ended, ep_return, ep_length = storage.episodes
        run.episode_stats += torch.stack([(ep_return * ended).sum(), (ep_length * ended).sum(), ended.sum()])

        with torch.no_grad():
            if args.norm_obs:
                obs_rms.update(storage.raw_obs)  # once per rollout: the stored obs keep the statistics the actions saw
                if run.critic_key:
                    critic_rms.update(storage.raw_critic_obs)
            # ALGO LOGIC: GAE, bootstrapping time-limit ends from V(final_obs)
            values = value_fn(storage.critic_obs)
            advantages = gae(storage.rewards, values, value_fn(storage.final_obs), storage.terminateds, storage.dones,
                             args.gamma, args.gae_lambda)
            returns = advantages + values

        # flatten the batch
        b = SimpleNamespace(obs=storage.obs.view(-1, obs_dim), critic_obs=storage.critic_obs.view(-1, critic_obs_dim),
                            actions=storage.actions.view(-1, act_dim),
                            logprobs=storage.logprobs.view(-1), advantages=advantages.view(-1))
        if args.norm_value_targets:
            return_rms.update(returns)
            b.targets, b.old_values = return_rms.normalize(returns).view(-1), return_rms.normalize(values).view(-1)
        else:
            b.targets, b.old_values = returns.view(-1), values.view(-1)

        # ALGO LOGIC: optimizing the policy and value network
        metrics = update(agent, optimizer, b, args, run.nonfinite_updates, loss_fn)

        # TRY NOT TO MODIFY: evaluation, logging (values leave the device only here, once), checkpoints
        var_y = returns.var()
        metrics["losses/explained_variance"] = torch.where(var_y > 0, 1 - (returns - values).var() / var_y, math.nan)
        metrics["charts/learning_rate"] = optimizer.param_groups[0]["lr"]
        run.end_iteration(iteration, batch_size, next_obs, metrics, act)
    return run.finish(act, model=("agent", "obs_rms", "return_rms", "critic_rms"))


if __name__ == "__main__":
    cli(main, START_TIME)

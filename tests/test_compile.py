"""--compile: each trainer's loss under torch.compile gives the eager loss, statistics and gradients; the flags are
checked; a whole tiny run with --compile (each trainer, -m slow) trains and evaluates."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from playground_gym.experiment import CLIError
from trainer_harness import TINY, TINY_MULTIUNROLL, TRAINERS, load_trainer, tiny_run_in


def _flat_batch(n, obs_dim, act_dim, gen):
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    batch = SimpleNamespace(obs=rand(n, obs_dim), actions=rand(n, act_dim).clamp(-0.99, 0.99), logprobs=rand(n) - 1,
                            advantages=rand(n), targets=rand(n), old_values=rand(n))
    batch.critic_obs = batch.obs  # a critic that sees the policy's observations
    return batch


def _segments(T, n, obs_dim, act_dim, gen):
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    segments = SimpleNamespace(obs=rand(T, n, obs_dim), actions=rand(T, n, act_dim), boot_critic_obs=rand(n, obs_dim),
                               logprobs=rand(T, n) - 1, rewards=rand(T, n),
                               terminations=(torch.rand(T, n, generator=gen) < 0.05).float(),
                               truncations=(torch.rand(T, n, generator=gen) < 0.05).float())
    segments.critic_obs = segments.obs  # a critic that sees the policy's observations
    return segments


def _loss_case(name):
    """(agent, loss function, its arguments after the agent) for one trainer with its default args."""
    ppo = load_trainer(name)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "ppo_multiunroll":
        args = ppo.Args(gamma=0.99, gae_lambda=0.95, clip_coef=0.3, ent_coef=0.01, batch_size=4)
        agent = ppo.Agent(5, 2)
        s = _segments(8, 16, 5, 2, gen)
        return ppo, agent, (s, torch.arange(4), args)
    args = ppo.Args(gamma=0.99, clip_vloss=True, ent_coef=0.01)
    agent = ppo.Agent(5, 2)
    return ppo, agent, (_flat_batch(64, 5, 2, gen), torch.randperm(64, generator=gen)[:32], args)


@pytest.mark.parametrize("name", ["ppo_continuous", "ppo_tanh", "ppo_multiunroll"])
def test_the_compiled_loss_gives_the_eager_loss_statistics_and_gradients(name):
    ppo, agent, inputs = _loss_case(name)
    results = []
    for fn in (ppo.ppo_loss, torch.compile(ppo.ppo_loss)):
        torch.manual_seed(1)  # the tanh policies' entropy estimate draws a sample
        agent.zero_grad()
        loss, stats = fn(agent, *inputs)
        loss.backward()
        results.append((loss.detach(), stats, [p.grad.clone() for p in agent.parameters()]))
    (eager_loss, eager_stats, eager_grads), (loss, stats, grads) = results
    assert torch.isfinite(eager_loss) and eager_stats.shape == stats.shape
    if name == "ppo_continuous":  # no sampling inside the loss: the same numbers up to float rounding
        torch.testing.assert_close(loss, eager_loss, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stats, eager_stats, rtol=1e-4, atol=1e-5)
        for g, e in zip(grads, eager_grads):
            torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-5)
    else:  # inductor draws its own random numbers for the entropy's sample: all but the entropy term agree
        keep = [0, 1, 3, 4] + ([5] if name == "ppo_multiunroll" else [])  # value, policy loss, kl, clipfrac (, ev)
        torch.testing.assert_close(stats[keep], eager_stats[keep], rtol=1e-4, atol=1e-5)
        assert abs(float(stats[2] - eager_stats[2])) < 0.5  # a one-sample entropy estimate, another sample
    assert all(torch.isfinite(g).all() for g in grads)


def test_cudagraphs_needs_compile_and_a_cuda_device(tmp_path):
    ppo = load_trainer("ppo_continuous")
    with pytest.raises(CLIError, match="--cudagraphs needs --compile"):
        ppo.main(["--cudagraphs", "--runs-dir", str(tmp_path)])
    if not torch.cuda.is_available():
        with pytest.raises(CLIError, match="--cudagraphs: needs a CUDA device"):
            ppo.main([*TINY, "--compile", "--cudagraphs", "--device", "cpu", "--runs-dir", str(tmp_path)])


@pytest.mark.slow
@pytest.mark.parametrize("name, tiny", [("ppo_continuous", TINY), ("ppo_tanh", TINY),
                                        ("ppo_multiunroll", TINY_MULTIUNROLL)])
def test_a_tiny_compiled_run_trains_and_evaluates(name, tiny, tmp_path):
    _, run_dir, result = tiny_run_in(TRAINERS / f"{name}.py", [*tiny, "--compile"], tmp_path)
    import json

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["args"]["compile"] is True and summary["final_eval_return"] is not None
    assert summary["nan_skipped_updates"] == 0

"""The ex05 checks: the reference ppo_update passes, stubs report "todo", crashes report "error"."""

import numpy as np
import torch
from torch import nn

from ppo_course import losses
from ppo_course.checks import check_ppo_update, check_training_improves
from ppo_course.checks.loop import FAST_MARGIN, compare_with_random, make_update_rollout

from conftest import ppo_loss


# The solution notebook's reference (solutions/ex05_training_loop.ipynb).
def ppo_update(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
    b = buf.flatten(advantages=advantages, returns=returns)  # (T, N, ...) -> (T*N, ...)
    for epoch in range(config.update_epochs):
        order = rng.permutation(config.batch_size)
        kls = []
        for start in range(0, config.batch_size, config.minibatch_size):
            idx = order[start:start + config.minibatch_size]
            _, new_logprobs, entropy, new_values = agent.get_action_and_value(b["obs"][idx], b["actions"][idx])
            loss = ppo_loss(new_logprobs, b["logprobs"][idx], b["advantages"][idx], new_values, b["values"][idx],
                            b["returns"][idx], entropy, config.clip_coef, config.vf_coef, ent_coef)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                logratio = new_logprobs - b["logprobs"][idx]
                kls.append(((torch.exp(logratio) - 1) - logratio).mean())
        if config.target_kl is not None and torch.stack(kls).mean() > config.target_kl:
            break
    return torch.stack(kls).mean().item()


def test_reference_passes():
    result = check_ppo_update(ppo_update, quiet=True)
    assert result.status == "pass", result.message
    assert "shuffling, indexing" in result.message  # the watched path ran
    assert "3 epochs × 4 minibatches, and 4 × 2 stopped after 2 by target_kl" in result.message  # the early stop acts


def test_reference_passes_without_a_global_ppo_loss():
    """A loop that calls the package's loss directly cannot be watched, but its steps, weights and kl still match.
    It also returns a 0-d tensor rather than a float, and indexes with torch tensors."""
    def update(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        n = len(b["obs"])
        for _ in range(config.update_epochs):
            order = torch.as_tensor(rng.permutation(n))
            kls = []
            for idx in order.split(n // config.num_minibatches):
                out = agent.get_action_and_value(b["obs"][idx], b["actions"][idx])
                loss = losses.ppo_loss(out.logprob, b["logprobs"][idx], b["advantages"][idx], out.value,
                                       b["values"][idx], b["returns"][idx], out.entropy, clip_coef=config.clip_coef,
                                       vf_coef=config.vf_coef, ent_coef=ent_coef)
                optimizer.zero_grad()
                loss.loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
                optimizer.step()
                kls.append(loss.approx_kl)
            if config.target_kl is not None and torch.stack(kls).mean() > config.target_kl:
                break
        return torch.stack(kls).mean()

    result = check_ppo_update(update, quiet=True)
    assert result.status == "pass", result.message
    assert "shuffling, indexing" not in result.message


def test_global_namespace_restored():
    check_ppo_update(ppo_update, quiet=True)
    assert globals()["ppo_loss"] is ppo_loss


def test_deterministic():
    assert check_ppo_update(ppo_update, quiet=True) == check_ppo_update(ppo_update, quiet=True)


def test_make_update_rollout_is_a_real_rollout_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    agent, optimizer, buf, advantages, returns = make_update_rollout()
    assert torch.equal(torch.rand(3), expected)
    assert buf.obs.shape == (8, 4, 8) and advantages.shape == returns.shape == (8, 4)
    assert torch.allclose(returns, advantages + buf.values)
    assert optimizer.param_groups[0]["params"][0] is next(agent.parameters())


def test_stub_is_todo():
    def stub(*args):
        raise NotImplementedError("loop over epochs and minibatches")

    result = check_ppo_update(stub, quiet=True)
    assert result.status == "todo" and result.message == "loop over epochs and minibatches"


def test_crash_is_error_with_line():
    def crashing(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        obs = buf.observations  # a wrong name
        return obs

    result = check_ppo_update(crashing, quiet=True)
    assert result.status == "error"
    assert "AttributeError" in result.message and "obs = buf.observations" in result.message


def test_training_check_without_agent_is_todo():
    result = check_training_improves(None, quiet=True)
    assert result.status == "todo"
    assert "not implemented yet — train your agent first" in str(result)


class _Uniform(nn.Module):
    """An untrained stand-in: every action equally likely."""

    def get_action_and_value(self, x, action=None):
        dist = torch.distributions.Categorical(logits=torch.zeros(len(x), 4))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), torch.zeros(len(x))


def test_random_agent_does_not_pass_fast_check(monkeypatch):
    monkeypatch.setenv("PPO_COURSE_FAST", "1")
    result = check_training_improves(_Uniform(), episodes=10, quiet=True)
    assert result.status == "fail" and "not better by" in result.message


def test_shipped_agent_passes_both_modes(monkeypatch):
    """The shipped, fully trained lander passes the fast check and the full one (>= 200)."""
    from ppo_course.assets import pretrained_path
    from ppo_course.trainer import load_agent

    pilot, _ = load_agent(pretrained_path("lunar_lander"))
    monkeypatch.setenv("PPO_COURSE_FAST", "1")
    fast = check_training_improves(pilot, episodes=10, quiet=True)
    assert fast.status == "pass", fast.message
    monkeypatch.setenv("PPO_COURSE_FAST", "0")
    full = check_training_improves(pilot, episodes=10, quiet=True)
    assert full.status == "pass", full.message
    assert "landed" in full.message


def test_compare_with_random_is_reproducible():
    a1, r1 = compare_with_random(_Uniform(), episodes=3)
    a2, r2 = compare_with_random(_Uniform(), episodes=3)
    assert np.array_equal(a1.returns, a2.returns) and np.array_equal(r1.returns, r2.returns)
    assert FAST_MARGIN > 0

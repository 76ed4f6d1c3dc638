"""The bug catalogue, ex05: realistic broken PPO update loops, each caught by check_ppo_update with its diagnosis.

Every test here is a deliberately broken implementation; ``pytest -k bug`` selects exactly this
catalogue (and ex04's), so nothing else in these files may carry that word. Each loop has the
package's arguments, ``(agent, optimizer, buf, advantages, returns, config, ent_coef, rng)``, and
calls the global ``ppo_loss`` as the learner's notebook does.
"""

import numpy as np
import torch
from torch import nn

from ppo_course.checks import check_ppo_update

from conftest import assert_caught, ppo_loss


def _assert_caught(fn, phrase):
    assert_caught(check_ppo_update(fn, quiet=True), phrase)


def _kl(new_logprobs, old_logprobs):
    with torch.no_grad():
        logratio = new_logprobs - old_logprobs
        return ((torch.exp(logratio) - 1) - logratio).mean()


def _minibatch_step(agent, optimizer, b, idx, config, ent_coef, *, old_logprobs=None, advantages=None,
                    returns_idx=None, zero_grad=True, clip=True, zero_grad_after_backward=False):
    """One minibatch of the loop, with the optional slips; returns its approx_kl."""
    _, new_logprobs, entropy, new_values = agent.get_action_and_value(b["obs"][idx], b["actions"][idx])
    old = b["logprobs"][idx] if old_logprobs is None else old_logprobs(new_logprobs)
    adv = b["advantages"][idx] if advantages is None else advantages
    ret = b["returns"][idx if returns_idx is None else returns_idx]
    loss = ppo_loss(new_logprobs, old, adv, new_values, b["values"][idx], ret, entropy,
                    config.clip_coef, config.vf_coef, ent_coef)
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    if zero_grad_after_backward:
        optimizer.zero_grad()
    if clip:
        nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
    optimizer.step()
    return _kl(new_logprobs, b["logprobs"][idx])


def _stops(kls, config):
    """The early stop after an epoch: its mean approx_kl past target_kl."""
    return config.target_kl is not None and torch.stack(kls).mean() > config.target_kl


def _loop(**step_kwargs):
    """The reference loop, with one slip passed on to every minibatch step."""
    def update(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        size = config.minibatch_size
        for _ in range(config.update_epochs):
            order = rng.permutation(config.batch_size)
            kls = []
            for start in range(0, config.batch_size, size):
                idx = order[start:start + size]
                kwargs = {k: (v(idx, order, start, size) if k == "returns_idx" else v) for k, v in step_kwargs.items()}
                kls.append(_minibatch_step(agent, optimizer, b, idx, config, ent_coef, **kwargs))
            if _stops(kls, config):
                break
        return torch.stack(kls).mean().item()
    return update


def test_bug_advantages_normalised_over_whole_rollout():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        size = config.minibatch_size
        for _ in range(config.update_epochs):
            order = rng.permutation(config.batch_size)
            kls = []
            for start in range(0, config.batch_size, size):
                idx = order[start:start + size]
                adv = b["advantages"]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # the whole rollout's statistics
                kls.append(_minibatch_step(agent, optimizer, b, idx, config, ent_coef, advantages=adv[idx]))
            if _stops(kls, config):
                break
        return torch.stack(kls).mean().item()

    _assert_caught(broken, "advantages were normalised over the whole rollout inside the minibatch loop")


def test_bug_normalised_advantages_written_into_the_rollout():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        b["advantages"] -= b["advantages"].mean()  # b's tensors are views: this changes the caller's advantages
        b["advantages"] /= b["advantages"].std() + 1e-8
        return _loop()(agent, optimizer, buf, advantages, returns, config, ent_coef, rng)

    _assert_caught(broken, "your update wrote into advantages")


def test_bug_no_shuffling_between_epochs():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        size = config.minibatch_size
        order = rng.permutation(config.batch_size)  # drawn once, outside the epoch loop
        for _ in range(config.update_epochs):
            kls = [_minibatch_step(agent, optimizer, b, order[start:start + size], config, ent_coef)
                   for start in range(0, config.batch_size, size)]
            if _stops(kls, config):
                break
        return torch.stack(kls).mean().item()

    _assert_caught(broken, "no shuffling between epochs")


def test_bug_never_shuffled():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        size = config.minibatch_size
        for _ in range(config.update_epochs):
            kls = [_minibatch_step(agent, optimizer, b, np.arange(start, start + size), config, ent_coef)
                   for start in range(0, config.batch_size, size)]
            if _stops(kls, config):
                break
        return torch.stack(kls).mean().item()

    _assert_caught(broken, "the minibatches are never shuffled")


def test_bug_shuffled_without_the_given_rng():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        size = config.minibatch_size
        for _ in range(config.update_epochs):
            order = torch.randperm(config.batch_size)  # PyTorch's global generator, not the rng passed in
            kls = [_minibatch_step(agent, optimizer, b, order[start:start + size], config, ent_coef)
                   for start in range(0, config.batch_size, size)]
            if _stops(kls, config):
                break
        return torch.stack(kls).mean().item()

    _assert_caught(broken, "the shuffling does not follow the contract")


def test_bug_zero_grad_forgotten():
    _assert_caught(_loop(zero_grad=False), "optimizer.zero_grad() is missing: gradients accumulate")


def test_bug_zero_grad_after_backward():
    _assert_caught(_loop(zero_grad_after_backward=True), "the gradient is zero when optimizer.step() runs")


def test_bug_no_gradient_clipping():
    _assert_caught(_loop(clip=False), "gradients were not clipped")


def test_bug_new_logprobs_used_as_old():
    _assert_caught(_loop(old_logprobs=lambda new: new), "the old log-probs passed to ppo_loss are the new ones")


def test_bug_old_logprobs_detached_new():
    _assert_caught(_loop(old_logprobs=lambda new: new.detach()), "the ratio is always 1")


def test_bug_mismatched_minibatch_indices():
    # the returns come from the next minibatch's slice: an off-by-one-slice indexing slip
    def next_slice(idx, order, start, size):
        return order[(start + size) % len(order):(start + size) % len(order) + size]

    _assert_caught(_loop(returns_idx=next_slice), "tensors indexed with different minibatch indices")


def test_bug_one_minibatch_per_epoch():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        for _ in range(config.update_epochs):
            order = rng.permutation(config.batch_size)
            kl = _minibatch_step(agent, optimizer, b, order[:config.minibatch_size], config, ent_coef)
        return kl.item()

    _assert_caught(broken, "optimizer.step() ran")


def test_bug_actions_resampled():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        size = config.minibatch_size
        for _ in range(config.update_epochs):
            order = rng.permutation(config.batch_size)
            kls = []
            for start in range(0, config.batch_size, size):
                idx = order[start:start + size]
                _, new_logprobs, entropy, new_values = agent.get_action_and_value(b["obs"][idx])  # no actions
                loss = ppo_loss(new_logprobs, b["logprobs"][idx], b["advantages"][idx], new_values, b["values"][idx],
                                b["returns"][idx], entropy, config.clip_coef, config.vf_coef, ent_coef)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
                optimizer.step()
                kls.append(_kl(new_logprobs, b["logprobs"][idx]))
            if _stops(kls, config):
                break
        return torch.stack(kls).mean().item()

    _assert_caught(broken, "the network scores actions that are not the rollout's")


def test_bug_config_ent_coef_instead_of_the_argument():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        return _loop()(agent, optimizer, buf, advantages, returns, config, config.ent_coef, rng)  # the unscheduled one

    _assert_caught(broken, "pass ent_coef, not config.ent_coef")


def test_bug_target_kl_ignored():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        size = config.minibatch_size
        for _ in range(config.update_epochs):  # always every epoch
            order = rng.permutation(config.batch_size)
            kls = [_minibatch_step(agent, optimizer, b, order[start:start + size], config, ent_coef)
                   for start in range(0, config.batch_size, size)]
        return torch.stack(kls).mean().item()

    _assert_caught(broken, "no early stop")


def test_bug_early_stop_tested_after_each_minibatch():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        size = config.minibatch_size
        for _ in range(config.update_epochs):
            order = rng.permutation(config.batch_size)
            kls = []
            for start in range(0, config.batch_size, size):
                kls.append(_minibatch_step(agent, optimizer, b, order[start:start + size], config, ent_coef))
                if config.target_kl is not None and kls[-1] > config.target_kl:
                    break  # leaves the epoch half done
            if _stops(kls, config):
                break
        return torch.stack(kls).mean().item()

    _assert_caught(broken, "test that mean after each whole epoch")


def test_bug_returns_nothing():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        _loop()(agent, optimizer, buf, advantages, returns, config, ent_coef, rng)  # the result is dropped

    _assert_caught(broken, "your update returned None")


def test_bug_returns_the_mean_kl_of_every_epoch():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        size = config.minibatch_size
        every = []
        for _ in range(config.update_epochs):
            order = rng.permutation(config.batch_size)
            kls = [_minibatch_step(agent, optimizer, b, order[start:start + size], config, ent_coef)
                   for start in range(0, config.batch_size, size)]
            every += kls  # never reset: the return averages over the whole update
            if _stops(kls, config):
                break
        return torch.stack(every).mean().item()

    _assert_caught(broken, "the mean over every epoch, not only the last")


def _loss_call(new_values_of, old_values_of):
    """The reference loop whose ppo_loss call gets new_values_of(net values, stored values) as new_values and
    old_values_of(...) as old_values."""
    def update(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        for _ in range(config.update_epochs):
            order = rng.permutation(config.batch_size)
            kls = []
            for start in range(0, config.batch_size, config.minibatch_size):
                idx = order[start:start + config.minibatch_size]
                _, new_logprobs, entropy, new_values = agent.get_action_and_value(b["obs"][idx], b["actions"][idx])
                stored = b["values"][idx]
                loss = ppo_loss(new_logprobs, b["logprobs"][idx], b["advantages"][idx],
                                new_values_of(new_values, stored), old_values_of(new_values, stored),
                                b["returns"][idx], entropy, config.clip_coef, config.vf_coef, ent_coef)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
                optimizer.step()
                kls.append(_kl(new_logprobs, b["logprobs"][idx]))
            if _stops(kls, config):
                break
        return torch.stack(kls).mean().item()
    return update


def test_bug_new_and_old_values_swapped():
    _assert_caught(_loss_call(lambda new, stored: stored, lambda new, stored: new),
                   "the old values passed to ppo_loss carry gradient (epoch 0, minibatch 0)")


def test_bug_new_values_detached():
    _assert_caught(_loss_call(lambda new, stored: new.detach(), lambda new, stored: stored),
                   "the new_values passed to ppo_loss carry no gradient (epoch 0, minibatch 0)")


def test_bug_minibatch_slice_one_too_long():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        for _ in range(config.update_epochs):
            order = rng.permutation(config.batch_size)
            kls = [_minibatch_step(agent, optimizer, b, order[start:start + config.minibatch_size + 1], config,
                                   ent_coef)  # the slice end "included"
                   for start in range(0, config.batch_size, config.minibatch_size)]
            if _stops(kls, config):
                break
        return torch.stack(kls).mean().item()

    _assert_caught(broken, "ppo_loss got a minibatch of 9 samples (epoch 0, minibatch 0), expected "
                           "config.minibatch_size = 8")


def test_bug_returned_kl_with_the_sign_of_log_r_flipped():
    def broken(agent, optimizer, buf, advantages, returns, config, ent_coef, rng):
        b = buf.flatten(advantages=advantages, returns=returns)
        for _ in range(config.update_epochs):
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
                    kls.append(((torch.exp(logratio) - 1) + logratio).mean())  # + log r
            if torch.stack(kls).mean() > (config.target_kl if config.target_kl is not None else float("inf")):
                break
        return torch.stack(kls).mean().item()

    _assert_caught(broken, "the sign of log r flipped")

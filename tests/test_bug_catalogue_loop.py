"""The bug catalogue, ex05: realistic broken PPO update loops, each caught by check_ppo_update with its diagnosis.

Every test here is a deliberately broken implementation; ``pytest -k bug`` selects exactly this
catalogue (and ex04's), so nothing else in these files may carry that word. Each loop calls the
global ``ppo_loss`` as the learner's notebook does.
"""

import numpy as np
import torch
from torch import nn

from ppo_course.checks import check_ppo_update

from conftest import assert_caught, ppo_loss


def _assert_caught(fn, phrase):
    assert_caught(check_ppo_update(fn, quiet=True), phrase)


def _minibatch_step(agent, optimizer, batch, idx, hp, *, old_logprobs=None, advantages=None, returns_idx=None,
                    zero_grad=True, clip=True, zero_grad_after_backward=False):
    clip_coef, vf_coef, ent_coef, max_grad_norm = hp
    _, new_logprobs, entropy, new_values = agent.get_action_and_value(batch["obs"][idx], batch["actions"][idx])
    old = batch["logprobs"][idx] if old_logprobs is None else old_logprobs(new_logprobs)
    adv = batch["advantages"][idx] if advantages is None else advantages
    ret = batch["returns"][idx if returns_idx is None else returns_idx]
    loss = ppo_loss(new_logprobs, old, adv, new_values, batch["values"][idx], ret, entropy,
                    clip_coef, vf_coef, ent_coef)
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    if zero_grad_after_backward:
        optimizer.zero_grad()
    if clip:
        nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
    optimizer.step()


def test_bug_advantages_normalised_over_whole_rollout():
    def broken(agent, optimizer, batch, num_minibatches, update_epochs, clip_coef, vf_coef, ent_coef, max_grad_norm,
               rng):
        n, size = len(batch["obs"]), len(batch["obs"]) // num_minibatches
        for _ in range(update_epochs):
            order = rng.permutation(n)
            for start in range(0, n, size):
                idx = order[start:start + size]
                adv = batch["advantages"]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # the whole rollout's statistics
                _minibatch_step(agent, optimizer, batch, idx, (clip_coef, vf_coef, ent_coef, max_grad_norm),
                                advantages=adv[idx])

    _assert_caught(broken, "advantages were normalised over the whole rollout inside the minibatch loop")


def test_bug_no_shuffling_between_epochs():
    def broken(agent, optimizer, batch, num_minibatches, update_epochs, clip_coef, vf_coef, ent_coef, max_grad_norm,
               rng):
        n, size = len(batch["obs"]), len(batch["obs"]) // num_minibatches
        order = rng.permutation(n)  # drawn once, outside the epoch loop
        for _ in range(update_epochs):
            for start in range(0, n, size):
                _minibatch_step(agent, optimizer, batch, order[start:start + size],
                                (clip_coef, vf_coef, ent_coef, max_grad_norm))

    _assert_caught(broken, "no shuffling between epochs")


def test_bug_never_shuffled():
    def broken(agent, optimizer, batch, num_minibatches, update_epochs, clip_coef, vf_coef, ent_coef, max_grad_norm,
               rng):
        n, size = len(batch["obs"]), len(batch["obs"]) // num_minibatches
        for _ in range(update_epochs):
            for start in range(0, n, size):
                _minibatch_step(agent, optimizer, batch, np.arange(start, start + size),
                                (clip_coef, vf_coef, ent_coef, max_grad_norm))

    _assert_caught(broken, "the minibatches are never shuffled")


def test_bug_shuffled_without_the_given_rng():
    def broken(agent, optimizer, batch, num_minibatches, update_epochs, clip_coef, vf_coef, ent_coef, max_grad_norm,
               rng):
        n, size = len(batch["obs"]), len(batch["obs"]) // num_minibatches
        for _ in range(update_epochs):
            order = torch.randperm(n)  # PyTorch's global generator, not the rng passed in
            for start in range(0, n, size):
                _minibatch_step(agent, optimizer, batch, order[start:start + size],
                                (clip_coef, vf_coef, ent_coef, max_grad_norm))

    _assert_caught(broken, "the shuffling does not follow the contract")


def _loop(**step_kwargs):
    def update(agent, optimizer, batch, num_minibatches, update_epochs, clip_coef, vf_coef, ent_coef, max_grad_norm,
               rng):
        n, size = len(batch["obs"]), len(batch["obs"]) // num_minibatches
        for _ in range(update_epochs):
            order = rng.permutation(n)
            for start in range(0, n, size):
                idx = order[start:start + size]
                kwargs = {k: (v(idx, order, start, size) if k == "returns_idx" else v) for k, v in step_kwargs.items()}
                _minibatch_step(agent, optimizer, batch, idx, (clip_coef, vf_coef, ent_coef, max_grad_norm), **kwargs)
    return update


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
    def broken(agent, optimizer, batch, num_minibatches, update_epochs, clip_coef, vf_coef, ent_coef, max_grad_norm,
               rng):
        n, size = len(batch["obs"]), len(batch["obs"]) // num_minibatches
        for _ in range(update_epochs):
            order = rng.permutation(n)
            _minibatch_step(agent, optimizer, batch, order[:size], (clip_coef, vf_coef, ent_coef, max_grad_norm))

    _assert_caught(broken, "optimizer.step() ran")


def test_bug_actions_resampled():
    def broken(agent, optimizer, batch, num_minibatches, update_epochs, clip_coef, vf_coef, ent_coef, max_grad_norm,
               rng):
        n, size = len(batch["obs"]), len(batch["obs"]) // num_minibatches
        for _ in range(update_epochs):
            order = rng.permutation(n)
            for start in range(0, n, size):
                idx = order[start:start + size]
                _, new_logprobs, entropy, new_values = agent.get_action_and_value(batch["obs"][idx])  # no actions
                loss = ppo_loss(new_logprobs, batch["logprobs"][idx], batch["advantages"][idx], new_values,
                                batch["values"][idx], batch["returns"][idx], entropy, clip_coef, vf_coef, ent_coef)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
                optimizer.step()

    _assert_caught(broken, "the network scores actions that are not the batch's")

"""Bug catalogue, ex03: realistic broken GAE implementations, each caught by its check with its
specific diagnosis (selected by ``pytest -k bug``)."""

import torch

from ppo_course.advantages import discounted_returns
from ppo_course.checks import check_gae, check_gae_with_truncation

from conftest import assert_caught
from test_checks_gae import compute_gae_terminations_only


# -- ex03 task 1: compute_gae -------------------------------------------------------------------
def test_bug_gae_leaks_across_episode_boundaries():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in reversed(range(len(rewards))):
            next_values = next_value if t == len(rewards) - 1 else values[t + 1]
            delta = rewards[t] + gamma * next_values * (1 - terminations[t]) - values[t]
            last_gae = delta + gamma * gae_lambda * last_gae  # forgot (1 - terminations[t])
            advantages[t] = last_gae
        return advantages, advantages + values

    assert_caught(check_gae(compute_gae, quiet=True),
                  "advantages leak across episode boundaries: terminations[3] = 1 but A[3] changes when r[4] changes")


def test_bug_gae_no_bootstrap_at_the_rollout_cut():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in reversed(range(len(rewards))):
            next_values = torch.zeros_like(next_value) if t == len(rewards) - 1 else values[t + 1]
            not_terminated = 1 - terminations[t]
            delta = rewards[t] + gamma * next_values * not_terminated - values[t]
            last_gae = delta + gamma * gae_lambda * not_terminated * last_gae
            advantages[t] = last_gae
        return advantages, advantages + values

    assert_caught(check_gae(compute_gae, quiet=True), "no bootstrap at the rollout cut")


def test_bug_gae_bootstraps_through_terminal_step():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in reversed(range(len(rewards))):
            next_values = next_value if t == len(rewards) - 1 else values[t + 1]
            delta = rewards[t] + gamma * next_values - values[t]  # V(s') counted after the episode ended
            last_gae = delta + gamma * gae_lambda * (1 - terminations[t]) * last_gae
            advantages[t] = last_gae
        return advantages, advantages + values

    assert_caught(check_gae(compute_gae, quiet=True), "bootstrapping through a terminal step")


def test_bug_gae_iterates_forwards():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in range(len(rewards)):
            next_values = next_value if t == len(rewards) - 1 else values[t + 1]
            not_terminated = 1 - terminations[t]
            delta = rewards[t] + gamma * next_values * not_terminated - values[t]
            last_gae = delta + gamma * gae_lambda * not_terminated * last_gae
            advantages[t] = last_gae
        return advantages, advantages + values

    assert_caught(check_gae(compute_gae, quiet=True), "the recursion runs forwards in time")


def test_bug_gae_lambda_missing():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in reversed(range(len(rewards))):
            next_values = next_value if t == len(rewards) - 1 else values[t + 1]
            not_terminated = 1 - terminations[t]
            delta = rewards[t] + gamma * next_values * not_terminated - values[t]
            last_gae = delta + gamma * not_terminated * last_gae
            advantages[t] = last_gae
        return advantages, advantages + values

    assert_caught(check_gae(compute_gae, quiet=True), "lambda is missing from the recursion")


def test_bug_gae_gamma_missing_from_recursion():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in reversed(range(len(rewards))):
            next_values = next_value if t == len(rewards) - 1 else values[t + 1]
            not_terminated = 1 - terminations[t]
            delta = rewards[t] + gamma * next_values * not_terminated - values[t]
            last_gae = delta + gae_lambda * not_terminated * last_gae
            advantages[t] = last_gae
        return advantages, advantages + values

    assert_caught(check_gae(compute_gae, quiet=True), "gamma is missing from the recursion")


def test_bug_gae_td_error_without_gamma():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in reversed(range(len(rewards))):
            next_values = next_value if t == len(rewards) - 1 else values[t + 1]
            not_terminated = 1 - terminations[t]
            delta = rewards[t] + next_values * not_terminated - values[t]
            last_gae = delta + gamma * gae_lambda * not_terminated * last_gae
            advantages[t] = last_gae
        return advantages, advantages + values

    assert_caught(check_gae(compute_gae, quiet=True), "the TD error is missing gamma")


def test_bug_gae_off_by_one_on_terminations():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):  # CleanRL's next-done convention
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in reversed(range(len(rewards))):
            if t == len(rewards) - 1:
                next_non_terminal, next_values = 1.0, next_value
            else:
                next_non_terminal, next_values = 1.0 - terminations[t + 1], values[t + 1]
            delta = rewards[t] + gamma * next_values * next_non_terminal - values[t]
            last_gae = delta + gamma * gae_lambda * next_non_terminal * last_gae
            advantages[t] = last_gae
        return advantages, advantages + values

    assert_caught(check_gae(compute_gae, quiet=True), "off-by-one on terminations")


def test_bug_gae_returns_without_values():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in reversed(range(len(rewards))):
            next_values = next_value if t == len(rewards) - 1 else values[t + 1]
            not_terminated = 1 - terminations[t]
            delta = rewards[t] + gamma * next_values * not_terminated - values[t]
            last_gae = delta + gamma * gae_lambda * not_terminated * last_gae
            advantages[t] = last_gae
        return advantages, advantages.clone()

    assert_caught(check_gae(compute_gae, quiet=True), "you forgot to add the values")


def test_bug_gae_returns_are_discounted_rewards():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in reversed(range(len(rewards))):
            next_values = next_value if t == len(rewards) - 1 else values[t + 1]
            not_terminated = 1 - terminations[t]
            delta = rewards[t] + gamma * next_values * not_terminated - values[t]
            last_gae = delta + gamma * gae_lambda * not_terminated * last_gae
            advantages[t] = last_gae
        return advantages, discounted_returns(rewards, terminations, gamma, next_value)

    assert_caught(check_gae(compute_gae, quiet=True), "returns are plain discounted rewards")


def test_bug_gae_overwrites_rewards_in_place():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = rewards, torch.zeros_like(next_value)  # aliases rewards
        for t in reversed(range(len(rewards))):
            next_values = next_value if t == len(rewards) - 1 else values[t + 1]
            not_terminated = 1 - terminations[t]
            delta = rewards[t] + gamma * next_values * not_terminated - values[t]
            last_gae = delta + gamma * gae_lambda * not_terminated * last_gae
            advantages[t] = last_gae
        return advantages, advantages + values

    assert_caught(check_gae(compute_gae, quiet=True), "modified `rewards` in place")


def test_bug_gae_without_the_packages_signature():
    def compute_gae(rewards, values, terminations, next_value, gamma, gae_lambda):  # no truncations, final_values
        return compute_gae_terminations_only(rewards, values, terminations, torch.zeros_like(terminations),
                                             next_value, None, gamma, gae_lambda)

    assert_caught(check_gae(compute_gae, quiet=True), "cannot be called like the package's")


# -- ex03 task 2: compute_gae with truncation ---------------------------------------------------
def _gae(rewards, values, next_values, delta_mask, carry_mask, gamma, gae_lambda):
    """The recursion, given V(s') per step and the two masks -- the bugs below differ only in those."""
    advantages, last_gae = torch.zeros_like(values), torch.zeros_like(values[0])
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] * delta_mask[t] - values[t]
        last_gae = delta + gamma * gae_lambda * carry_mask[t] * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def _following(values, next_value):
    return torch.cat([values[1:], next_value.unsqueeze(0)])


def test_bug_truncation_treated_as_termination():
    def gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
            gae_lambda=0.95):
        ended = torch.clamp(terminations + truncations, max=1.0)
        return _gae(rewards, values, _following(values, next_value), 1 - ended, 1 - ended, gamma, gae_lambda)

    assert_caught(check_gae_with_truncation(gae, quiet=True), "truncation treated as termination")


def test_bug_truncation_ignored():
    def gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
            gae_lambda=0.95):
        return _gae(rewards, values, _following(values, next_value), 1 - terminations, 1 - terminations,
                    gamma, gae_lambda)

    assert_caught(check_gae_with_truncation(gae, quiet=True), "truncation ignored")


def test_bug_truncation_final_values_used_where_terminated():
    def gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
            gae_lambda=0.95):
        ended = torch.clamp(terminations + truncations, max=1.0)
        next_values = torch.where(ended.bool(), final_values, _following(values, next_value))
        return _gae(rewards, values, next_values, torch.ones_like(ended), 1 - ended, gamma, gae_lambda)

    assert_caught(check_gae_with_truncation(gae, quiet=True), "final_values used where terminated")


def test_bug_truncation_leaks_into_next_episode():
    def gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
            gae_lambda=0.95):
        next_values = torch.where(truncations.bool(), final_values, _following(values, next_value))
        return _gae(rewards, values, next_values, 1 - terminations, 1 - terminations, gamma, gae_lambda)

    assert_caught(check_gae_with_truncation(gae, quiet=True), "leaks into the next episode after the truncation")


def test_bug_truncation_at_last_step_bootstraps_from_next_value():
    def gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
            gae_lambda=0.95):
        next_values = torch.where(truncations.bool(), final_values, values.roll(-1, 0))
        next_values[-1] = next_value  # the rollout cut overrides everything, even a truncation
        ended = torch.clamp(terminations + truncations, max=1.0)
        return _gae(rewards, values, next_values, 1 - terminations, 1 - ended, gamma, gae_lambda)

    assert_caught(check_gae_with_truncation(gae, quiet=True), "bootstraps from next_value")


# -- mistakes named because a hypothesis reproduces the learner's advantages ---------------------------------
def _loop(rewards, values, terminations, next_value, gamma, gae_lambda, steps=None, following=None, mask=None):
    """Task 1's loop with one piece replaceable: the steps visited, V(s') per step, the termination mask per step."""
    T = len(rewards)
    following = torch.cat([values[1:], next_value.unsqueeze(0)]) if following is None else following
    mask = 1 - terminations if mask is None else mask
    advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
    for t in (reversed(range(T)) if steps is None else steps):
        delta = rewards[t] + gamma * following[t] * mask[t] - values[t]
        last_gae = delta + gamma * gae_lambda * mask[t] * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def test_bug_gae_loop_stops_before_t0():
    """Formerly reported as "the recursion never carries A_{t+1} back": A[0] is simply never computed."""
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        return _loop(rewards, values, terminations, next_value, gamma, gae_lambda,
                     steps=range(len(rewards) - 1, 0, -1))  # stops at t = 1

    assert_caught(check_gae(compute_gae, quiet=True), "your loop stops before t = 0")


def test_bug_gae_loop_starts_one_step_early():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        return _loop(rewards, values, terminations, next_value, gamma, gae_lambda,
                     steps=reversed(range(len(rewards) - 1)))  # the last step is skipped

    assert_caught(check_gae(compute_gae, quiet=True), "your loop starts at t = T-2")


def test_bug_gae_normalises_inside():
    """Formerly reported as "environments are mixed": true of the output, but the mistake is the normalisation."""
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, _ = compute_gae_terminations_only(rewards, values, terminations, truncations, next_value,
                                                      final_values, gamma, gae_lambda)
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        return advantages, advantages + values

    assert_caught(check_gae(compute_gae, quiet=True), "you normalised the advantages inside compute_gae")


def test_bug_gae_next_value_from_the_current_step():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        following = torch.cat([values[:-1], next_value.unsqueeze(0)])  # values[t] where values[t + 1] belongs
        return _loop(rewards, values, terminations, next_value, gamma, gae_lambda, following=following)

    assert_caught(check_gae(compute_gae, quiet=True), "V(s_{t+1}) is taken from values[t]")


def test_bug_gae_roll_wraps_around():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        return _loop(rewards, values, terminations, next_value, gamma, gae_lambda, following=values.roll(-1, 0))

    assert_caught(check_gae(compute_gae, quiet=True), "the last step bootstraps from values[0]")


def test_bug_gae_terminations_of_the_previous_step():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        previous = torch.cat([torch.zeros_like(terminations[:1]), terminations[:-1]])
        return _loop(rewards, values, terminations, next_value, gamma, gae_lambda, mask=1 - previous)

    assert_caught(check_gae(compute_gae, quiet=True), "you used terminations[t-1]")


def test_bug_gae_td_error_uses_lambda():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in reversed(range(len(rewards))):
            next_values = next_value if t == len(rewards) - 1 else values[t + 1]
            not_terminated = 1 - terminations[t]
            delta = rewards[t] + gae_lambda * next_values * not_terminated - values[t]
            last_gae = delta + gamma * gae_lambda * not_terminated * last_gae
            advantages[t] = last_gae
        return advantages, advantages + values

    assert_caught(check_gae(compute_gae, quiet=True), "the TD error uses lambda where it needs gamma")


def test_bug_gae_returns_add_the_next_value():
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, _ = compute_gae_terminations_only(rewards, values, terminations, truncations, next_value,
                                                      final_values, gamma, gae_lambda)
        return advantages, advantages + torch.cat([values[1:], next_value.unsqueeze(0)])

    assert_caught(check_gae(compute_gae, quiet=True), "returns = advantages + V(s_{t+1})")


def test_bug_truncation_terminated_and_truncated_bootstraps():
    def gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
            gae_lambda=0.95):
        next_values = torch.where(truncations.bool(), final_values, _following(values, next_value))
        ended = torch.clamp(terminations + truncations, max=1.0)
        bootstrap = 1 - terminations * (1 - truncations)  # a truncation flag overrides the termination
        return _gae(rewards, values, next_values, bootstrap, 1 - ended, gamma, gae_lambda)

    assert_caught(check_gae_with_truncation(gae, quiet=True), "termination wins")


def test_bug_gae_two_mistakes_get_the_localisation():
    """Leaking across episodes and dropping lambda at once: no single mistake reproduces it, so the check says
    where the advantages first differ (with that rollout's inputs) and what a one-input probe measured."""
    def compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
                    gae_lambda=0.95):
        advantages, last_gae = torch.zeros_like(values), torch.zeros_like(next_value)
        for t in reversed(range(len(rewards))):
            next_values = next_value if t == len(rewards) - 1 else values[t + 1]
            delta = rewards[t] + gamma * next_values * (1 - terminations[t]) - values[t]
            last_gae = delta + gamma * last_gae
            advantages[t] = last_gae
        return advantages, advantages + values

    result = check_gae(compute_gae, quiet=True)
    assert_caught(result, "advantages differ in case 'one long episode cut by the rollout' (T=8, N=1")
    assert "at t=6, env 0 expected" in result.message and "rewards[:, 0] = [" in result.message
    assert "A[3] changes when r[4] changes" in result.message
    assert "none of the" in result.message and "lambda is missing" not in result.message

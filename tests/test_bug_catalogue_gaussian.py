"""Bug catalogue, ex08: realistic broken Gaussian policies, clipped-action bookkeeping and running observation
normalisers, each caught by its check with its specific diagnosis (selected by ``pytest -k bug``)."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from ppo_course.checks import check_clip_and_score, check_gaussian_sample_and_score, check_running_obs_normalizer

from conftest import assert_caught
from test_checks_gaussian import RunningObsNormalizer, clip_and_score, gaussian_sample_and_score

LOG_2PI = math.log(2 * math.pi)


def gaussian_check(fn):
    return check_gaussian_sample_and_score(fn, quiet=True)


# -- ex08 task 1: gaussian_sample_and_score ----------------------------------------------------------
def test_bug_gaussian_logprob_not_summed():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        if action is None:
            action = mean if deterministic else dist.rsample()
        return action, dist.log_prob(action), dist.entropy().sum(-1)  # (batch, act_dim)

    assert_caught(gaussian_check(fn), "logprob has shape (batch, act_dim) = (5, 3): it is not summed")


def test_bug_gaussian_logprob_averaged():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        if action is None:
            action = mean if deterministic else dist.rsample()
        return action, dist.log_prob(action).mean(-1), dist.entropy().sum(-1)

    assert_caught(gaussian_check(fn), "log-probs are averaged over the action dimensions")


def test_bug_gaussian_logstd_used_as_std():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.expand_as(mean))  # log_std where Normal takes sigma
        if action is None:
            action = mean if deterministic else dist.rsample()
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)

    assert_caught(gaussian_check(fn), "log_std is used as the standard deviation")


def test_bug_gaussian_variance_as_scale():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, torch.exp(2 * logstd))  # sigma^2 passed as sigma
        if action is None:
            action = mean if deterministic else dist.rsample()
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)

    assert_caught(gaussian_check(fn), "Normal got the variance exp(log_std)^2")


def test_bug_gaussian_density_without_log_sigma():
    def fn(mean, logstd, action=None, deterministic=False):
        std = logstd.exp()
        if action is None:
            action = mean if deterministic else mean + std * torch.randn_like(mean)
        logprob = (-((action - mean) / std) ** 2 / 2 - 0.5 * LOG_2PI).sum(-1)
        return action, logprob, Normal(mean, std).entropy().sum(-1)

    assert_caught(gaussian_check(fn), "lacks its -log sigma term")


def test_bug_gaussian_density_without_constant():
    def fn(mean, logstd, action=None, deterministic=False):
        std = logstd.exp()
        if action is None:
            action = mean if deterministic else mean + std * torch.randn_like(mean)
        logprob = (-((action - mean) / std) ** 2 / 2 - logstd).sum(-1)
        return action, logprob, Normal(mean, std).entropy().sum(-1)

    assert_caught(gaussian_check(fn), "lacks the constant -log(2 pi) / 2")


def test_bug_gaussian_sample_not_reparameterised():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        if action is None:
            action = mean if deterministic else dist.sample()  # no gradient path
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)

    assert_caught(gaussian_check(fn), "the sampled action is not reparameterised")


def test_bug_gaussian_sample_with_torch_normal():
    def fn(mean, logstd, action=None, deterministic=False):
        std = logstd.exp().expand_as(mean)
        if action is None:
            action = mean if deterministic else torch.normal(mean, std)  # requires grad, but the gradient is 0
        dist = Normal(mean, std)
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)

    assert_caught(gaussian_check(fn), "the sampled action is not reparameterised")


def test_bug_gaussian_sample_with_detached_std():
    def fn(mean, logstd, action=None, deterministic=False):
        std = logstd.exp()
        if action is None:
            action = mean if deterministic else mean + std.detach() * torch.randn_like(mean)
        dist = Normal(mean, std)
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)

    assert_caught(gaussian_check(fn), "gets a gradient from the mean but none from log_std")


def test_bug_gaussian_sampled_with_logstd_as_std():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        if action is None:  # scored right, sampled with the wrong scale
            action = mean if deterministic else mean + logstd * torch.randn_like(mean)
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)

    assert_caught(gaussian_check(fn), "log_std used as the standard deviation; sigma = log_std.exp()")


def test_bug_gaussian_sample_is_the_mean():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        if action is None:
            action = mean.clone()  # no exploration
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)

    assert_caught(gaussian_check(fn), "every sampled action equals the mean")


def test_bug_gaussian_entropy_not_summed():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        if action is None:
            action = mean if deterministic else dist.rsample()
        return action, dist.log_prob(action).sum(-1), dist.entropy()

    assert_caught(gaussian_check(fn), "entropy has shape (batch, act_dim) = (5, 3): it is not summed")


def test_bug_gaussian_entropy_averaged():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        if action is None:
            action = mean if deterministic else dist.rsample()
        return action, dist.log_prob(action).sum(-1), dist.entropy().mean(-1)

    assert_caught(gaussian_check(fn), "the entropy is averaged over the action dimensions")


def test_bug_gaussian_entropy_from_logstd_alone():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        if action is None:
            action = mean if deterministic else dist.rsample()
        return action, dist.log_prob(action).sum(-1), (0.5 + 0.5 * LOG_2PI + logstd).sum(-1)  # (1,)

    assert_caught(gaussian_check(fn), "computed from log_std (1, act_dim) alone")


def test_bug_gaussian_entropy_one_sample_estimate():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        if action is None:
            action = mean if deterministic else dist.rsample()
        logprob = dist.log_prob(action).sum(-1)
        return action, logprob, -logprob

    assert_caught(gaussian_check(fn), "one-sample estimate")


def test_bug_gaussian_resamples_given_actions():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        action = dist.rsample()  # the stored action is thrown away
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)

    assert_caught(gaussian_check(fn), "you sampled a new one")


def test_bug_gaussian_logprob_detached():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean.detach(), logstd.exp().detach())
        if action is None:
            action = mean if deterministic else mean + logstd.exp() * torch.randn_like(mean)
        return action, dist.log_prob(action).sum(-1), Normal(mean, logstd.exp()).entropy().sum(-1)

    assert_caught(gaussian_check(fn), "logprob of given actions is detached from mean and log_std")


def test_bug_gaussian_deterministic_ignored():
    def fn(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        if action is None:
            action = dist.rsample()
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)

    assert_caught(gaussian_check(fn), "deterministic=True is ignored")


# -- ex08 task 2: clip_and_score ---------------------------------------------------------------------
def _score(raw_action, mean, logstd):
    return Normal(mean, logstd.exp()).log_prob(raw_action).sum(-1)


def test_bug_clip_scores_the_clipped_action():
    def fn(raw_action, mean, logstd, low, high):
        env_action = torch.clamp(raw_action, torch.as_tensor(low), torch.as_tensor(high))
        return env_action, _score(env_action, mean, logstd)

    assert_caught(check_clip_and_score(fn, quiet=True), "the log-prob is that of the clipped action")


def test_bug_clip_in_place():
    def fn(raw_action, mean, logstd, low, high):
        logprob = _score(raw_action, mean, logstd)
        return raw_action.clamp_(torch.as_tensor(low), torch.as_tensor(high)), logprob

    assert_caught(check_clip_and_score(fn, quiet=True), "you clipped raw_action in place")


def test_bug_clip_forgotten():
    def fn(raw_action, mean, logstd, low, high):
        return raw_action.clone(), _score(raw_action, mean, logstd)

    assert_caught(check_clip_and_score(fn, quiet=True), "the env's action is not clipped")


def test_bug_clip_to_unit_box():
    def fn(raw_action, mean, logstd, low, high):
        return raw_action.clamp(-1.0, 1.0), _score(raw_action, mean, logstd)

    assert_caught(check_clip_and_score(fn, quiet=True), "clipped to [-1, 1] rather than to the space's bounds")


def test_bug_clip_scalar_bounds():
    def fn(raw_action, mean, logstd, low, high):
        return raw_action.clamp(float(low[0]), float(high[0])), _score(raw_action, mean, logstd)

    assert_caught(check_clip_and_score(fn, quiet=True), "clipped to the first dimension's bounds")


def test_bug_clip_symmetric_bounds():
    def fn(raw_action, mean, logstd, low, high):
        bound = torch.as_tensor(high)
        return torch.max(torch.min(raw_action, bound), -bound), _score(raw_action, mean, logstd)

    assert_caught(check_clip_and_score(fn, quiet=True), "clipped to [-high, high]")


def test_bug_clip_logprob_not_summed():
    def fn(raw_action, mean, logstd, low, high):
        env_action = torch.clamp(raw_action, torch.as_tensor(low), torch.as_tensor(high))
        return env_action, Normal(mean, logstd.exp()).log_prob(raw_action)

    assert_caught(check_clip_and_score(fn, quiet=True), "logprob has shape (batch, act_dim) = (6, 2): it is not summed")


def test_bug_clip_returns_float64_numpy():
    def fn(raw_action, mean, logstd, low, high):
        return np.clip(raw_action.numpy().astype(np.float64), low, high), _score(raw_action, mean, logstd)

    assert_caught(check_clip_and_score(fn, quiet=True), "the env's action should be float32 (the Box's dtype)")


# -- ex08 task 3: RunningObsNormalizer ---------------------------------------------------------------
def normalizer_check(cls):
    return check_running_obs_normalizer(cls, quiet=True)


def _moments(batch):
    batch = batch.double()
    return batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]


def test_bug_normalizer_variances_merged_without_mean_difference():
    class Norm(RunningObsNormalizer):
        def update(self, batch):
            batch_mean, batch_var, n = _moments(batch)
            total = self.count + n
            self.mean = self.mean + (batch_mean - self.mean) * n / total
            self.var = (self.var * self.count + batch_var * n) / total  # weighted average of the variances only
            self.count = total

    assert_caught(normalizer_check(Norm), "merged without the mean-difference term")


def test_bug_normalizer_delta_after_mean_update():
    class Norm(RunningObsNormalizer):
        def update(self, batch):
            batch_mean, batch_var, n = _moments(batch)
            total = self.count + n
            self.mean = self.mean + (batch_mean - self.mean) * n / total
            delta = batch_mean - self.mean  # the mean has moved already
            self.var = (self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total) / total
            self.count = total

    assert_caught(normalizer_check(Norm), "after self.mean was updated")


@pytest.mark.filterwarnings("ignore:var\\(\\)")
def test_bug_normalizer_unbiased_batch_variance():
    class Norm(RunningObsNormalizer):
        def update(self, batch):
            batch = batch.double()
            batch_mean, batch_var, n = batch.mean(0), batch.var(0), batch.shape[0]  # torch's default: n - 1
            delta, total = batch_mean - self.mean, self.count + n
            self.mean = self.mean + delta * n / total
            self.var = (self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total) / total
            self.count = total

    assert_caught(normalizer_check(Norm), "the batch variance is unbiased")


def test_bug_normalizer_equal_weights():
    class Norm(RunningObsNormalizer):
        def update(self, batch):
            batch_mean, batch_var, n = _moments(batch)
            self.mean, self.var, self.count = (self.mean + batch_mean) / 2, (self.var + batch_var) / 2, self.count + n

    assert_caught(normalizer_check(Norm), "averaged with equal weights")


def test_bug_normalizer_keeps_only_the_last_batch():
    class Norm(RunningObsNormalizer):
        def update(self, batch):
            self.mean, self.var, n = _moments(batch)
            self.count += n

    assert_caught(normalizer_check(Norm), "replaced by the last batch's instead of merged")


def test_bug_normalizer_count_never_grows():
    class Norm(RunningObsNormalizer):
        def update(self, batch):
            count = self.count
            super().update(batch)
            self.count = count

    assert_caught(normalizer_check(Norm), "add each batch's number of rows")


def test_bug_normalizer_mean_keeps_the_batch_axis():
    class Norm(RunningObsNormalizer):
        def update(self, batch):
            super().update(batch)
            self.mean, self.var = self.mean[None], self.var[None]

    assert_caught(normalizer_check(Norm), "reduce over the batch axis only")


def test_bug_normalizer_without_epsilon():
    class Norm(RunningObsNormalizer):
        def normalize(self, obs):
            return ((obs.double() - self.mean) / torch.sqrt(self.var)).clamp(-self.clip, self.clip).float()

    assert_caught(normalizer_check(Norm), "no epsilon under the square root")


def test_bug_normalizer_epsilon_outside_the_root():
    class Norm(RunningObsNormalizer):
        def normalize(self, obs):
            z = (obs.double() - self.mean) / (torch.sqrt(self.var) + self.epsilon)
            return z.clamp(-self.clip, self.clip).float()

    assert_caught(normalizer_check(Norm), "epsilon is added outside the square root")


def test_bug_normalizer_without_clip():
    class Norm(RunningObsNormalizer):
        def normalize(self, obs):
            return ((obs.double() - self.mean) / torch.sqrt(self.var + self.epsilon)).float()

    assert_caught(normalizer_check(Norm), "are not clipped to [-10, 10]")


def test_bug_normalizer_divides_by_the_variance():
    class Norm(RunningObsNormalizer):
        def normalize(self, obs):
            return ((obs.double() - self.mean) / (self.var + self.epsilon)).clamp(-self.clip, self.clip).float()

    assert_caught(normalizer_check(Norm), "divided by the variance")


def test_bug_normalizer_updates_when_frozen():
    class Norm(RunningObsNormalizer):
        def __call__(self, obs):
            self.update(obs)  # update_running_mean never looked at
            return self.normalize(obs)

    assert_caught(normalizer_check(Norm), "the statistics changed while update_running_mean is False")


def test_bug_normalizer_normalize_updates():
    class Norm(RunningObsNormalizer):
        def normalize(self, obs):
            self.update(obs)
            return super().normalize(obs)

        def __call__(self, obs):
            return self.normalize(obs)

    assert_caught(normalizer_check(Norm), "normalize() changed the statistics")


def test_bug_normalizer_normalises_before_updating():
    class Norm(RunningObsNormalizer):
        def __call__(self, obs):
            out = self.normalize(obs)
            if self.update_running_mean:
                self.update(obs)
            return out

    assert_caught(normalizer_check(Norm), "the statistics from before this batch")


def test_bug_normalizer_never_updates_in_call():
    class Norm(RunningObsNormalizer):
        def __call__(self, obs):
            return self.normalize(obs)

    assert_caught(normalizer_check(Norm), "__call__ does not update the statistics")


def test_bug_normalizer_normalize_forgets_to_return():
    class Norm(RunningObsNormalizer):
        def normalize(self, obs):
            self.last = super().normalize(obs)  # kept, never returned

    assert_caught(normalizer_check(Norm), "normalize returned NoneType: return the normalised observations")


def test_catalogue_uses_correct_references():
    assert check_gaussian_sample_and_score(gaussian_sample_and_score, quiet=True)
    assert check_clip_and_score(clip_and_score, quiet=True)
    assert check_running_obs_normalizer(RunningObsNormalizer, quiet=True)

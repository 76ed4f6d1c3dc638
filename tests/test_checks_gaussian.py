"""The ex08 checks: the solution's code and unusual but correct implementations pass (a diagonal
MultivariateNormal, float64 inside, a hand-written density, NumPy, Welford's one-row-at-a-time update, Gymnasium's
RunningMeanStd), stubs say "not implemented yet", and results are deterministic."""

import math

import numpy as np
import pytest
import torch
from gymnasium.wrappers.utils import RunningMeanStd
from torch.distributions import Independent, MultivariateNormal, Normal

from ppo_course.checks import check_clip_and_score, check_gaussian_sample_and_score, check_running_obs_normalizer
from ppo_course.networks import OBS_CLIP, OBS_EPSILON, ObsNormalizer


# -- reference implementations (the solution notebook's code) -------------------------------------
def gaussian_sample_and_score(mean, logstd, action=None, deterministic=False):
    dist = Normal(mean, logstd.exp().expand_as(mean))
    if action is None:
        action = mean if deterministic else dist.rsample()
    return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)


def clip_and_score(raw_action, mean, logstd, low, high):
    low, high = torch.as_tensor(low), torch.as_tensor(high)
    env_action = torch.clamp(raw_action, low, high)
    logprob = Normal(mean, logstd.exp().expand_as(mean)).log_prob(raw_action).sum(-1)
    return env_action, logprob


class RunningObsNormalizer:
    def __init__(self, obs_dim, clip=OBS_CLIP, epsilon=OBS_EPSILON):
        self.mean = torch.zeros(obs_dim, dtype=torch.float64)
        self.var = torch.ones(obs_dim, dtype=torch.float64)
        self.count = 1e-4
        self.clip, self.epsilon = clip, epsilon
        self.update_running_mean = True

    def update(self, batch):
        batch = batch.double()
        batch_mean, batch_var, n = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total) / total
        self.count = total

    def normalize(self, obs):
        return ((obs.double() - self.mean) / torch.sqrt(self.var + self.epsilon)).clamp(-self.clip, self.clip).float()

    def __call__(self, obs):
        if self.update_running_mean:
            self.update(obs)
        return self.normalize(obs)


# -- unusual but correct ----------------------------------------------------------------------------
def multivariate_gaussian(mean, logstd, action=None, deterministic=False):
    """One MultivariateNormal with a diagonal covariance instead of independent Normals."""
    dist = MultivariateNormal(mean, scale_tril=torch.diag_embed(logstd.exp().expand_as(mean)))
    if action is None:
        action = mean if deterministic else dist.rsample()
    return action, dist.log_prob(action), dist.entropy()


def float64_gaussian(mean, logstd, action=None, deterministic=False):
    """Everything in float64 inside, a torch.distributions.Independent, float32 out."""
    dist = Independent(Normal(mean.double(), logstd.double().exp().expand_as(mean)), 1)
    if action is None:
        action = mean if deterministic else dist.rsample().float()
    return action, dist.log_prob(action.double()).float(), dist.entropy().float()


def handwritten_gaussian(mean, logstd, action=None, deterministic=False):
    """The density written out, torch.randn_like noise, entropy from log_std alone (expanded)."""
    std = torch.exp(logstd)
    if action is None:
        action = mean if deterministic else mean + std * torch.randn_like(mean)
    z = (action - mean) / std
    logprob = (-0.5 * z ** 2 - logstd - 0.5 * math.log(2 * math.pi)).sum(dim=-1)
    entropy = (0.5 * (1.0 + math.log(2 * math.pi)) + logstd).expand_as(mean).sum(dim=-1)
    return action, logprob, entropy


def numpy_clip_and_score(raw_action, mean, logstd, low, high):
    """The env's action as a NumPy array (what env.step takes); the log-density written out."""
    env_action = np.clip(raw_action.detach().numpy(), low, high).astype(np.float32)
    var = torch.exp(2 * logstd)
    logprob = (-(raw_action - mean) ** 2 / (2 * var) - logstd - 0.5 * math.log(2 * math.pi)).sum(-1)
    return env_action, logprob


def where_clip_and_score(raw_action, mean, logstd, low, high):
    """Clipping by torch.where; scoring in float64."""
    lo, hi = torch.from_numpy(low), torch.from_numpy(high)
    env_action = torch.where(raw_action > hi, hi, torch.where(raw_action < lo, lo, raw_action))
    dist = Normal(mean.double(), logstd.double().exp())
    return env_action, dist.log_prob(raw_action.double()).sum(-1).float()


class NumpyNormalizer:
    """NumPy float64 statistics; NumPy arrays out."""

    def __init__(self, obs_dim, clip=OBS_CLIP, epsilon=OBS_EPSILON):
        self.mean, self.var, self.count = np.zeros(obs_dim), np.ones(obs_dim), 1e-4
        self.clip, self.epsilon = clip, epsilon
        self.update_running_mean = True

    def update(self, batch):
        x = np.asarray(batch, dtype=np.float64)
        batch_mean, batch_var, n = x.mean(axis=0), x.var(axis=0), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        m2 = self.var * self.count + batch_var * n + np.square(delta) * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    def normalize(self, obs):
        z = (np.asarray(obs, dtype=np.float64) - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def __call__(self, obs):
        if self.update_running_mean:
            self.update(obs)
        return self.normalize(obs)


class WelfordNormalizer(NumpyNormalizer):
    """One row at a time (Welford), the prior counted as 1e-4 rows of mean 0 and variance 1."""

    def update(self, batch):
        m2 = self.var * self.count
        for row in np.asarray(batch, dtype=np.float64):
            self.count += 1
            delta = row - self.mean
            self.mean = self.mean + delta / self.count
            m2 = m2 + delta * (row - self.mean)
        self.var = m2 / self.count


class GymnasiumNormalizer(torch.nn.Module):
    """Gymnasium's RunningMeanStd for the statistics, the package's ObsNormalizer for the formula."""

    def __init__(self, obs_dim, clip=OBS_CLIP, epsilon=OBS_EPSILON):
        super().__init__()
        self.rms = RunningMeanStd(shape=(obs_dim,))
        self.frozen = ObsNormalizer(obs_dim, clip, epsilon)
        self.update_running_mean = True

    mean = property(lambda self: self.rms.mean)
    var = property(lambda self: self.rms.var)
    count = property(lambda self: self.rms.count)

    def update(self, batch):
        self.rms.update(batch.double().numpy())

    def normalize(self, obs):
        self.frozen.set_statistics(self.rms.mean, self.rms.var, self.rms.count)
        return self.frozen(obs)

    def forward(self, obs):
        if self.update_running_mean:
            self.update(obs)
        return self.normalize(obs)


CASES = [
    (check_gaussian_sample_and_score, gaussian_sample_and_score),
    (check_gaussian_sample_and_score, multivariate_gaussian),
    (check_gaussian_sample_and_score, float64_gaussian),
    (check_gaussian_sample_and_score, handwritten_gaussian),
    (check_clip_and_score, clip_and_score),
    (check_clip_and_score, numpy_clip_and_score),
    (check_clip_and_score, where_clip_and_score),
    (check_running_obs_normalizer, RunningObsNormalizer),
    (check_running_obs_normalizer, NumpyNormalizer),
    (check_running_obs_normalizer, WelfordNormalizer),
    (check_running_obs_normalizer, GymnasiumNormalizer),
]
IDS = ["gaussian", "multivariate_gaussian", "float64_gaussian", "handwritten_gaussian", "clip", "numpy_clip",
       "where_clip", "normalizer", "numpy_normalizer", "welford_normalizer", "gymnasium_normalizer"]


@pytest.mark.parametrize("check, reference", CASES, ids=IDS)
def test_reference_passes(check, reference):
    result = check(reference, quiet=True)
    assert result.status == "pass", result.message
    assert result


@pytest.mark.parametrize("check, reference", CASES[::4], ids=IDS[::4])
def test_deterministic(check, reference):
    assert check(reference, quiet=True) == check(reference, quiet=True)


def test_prints_a_tick_line(capsys):
    check_clip_and_score(clip_and_score)
    assert capsys.readouterr().out.startswith("✓ clip_and_score:")


def test_stubs_are_todo_with_their_hint():
    def gaussian_stub(mean, logstd, action=None, deterministic=False):
        raise NotImplementedError("Normal(mean, logstd.exp())")

    def clip_stub(raw_action, mean, logstd, low, high):
        raise NotImplementedError("torch.clamp")

    class NormalizerStub(RunningObsNormalizer):
        def update(self, batch):
            raise NotImplementedError("merge the moments")

    for check, stub, hint in ((check_gaussian_sample_and_score, gaussian_stub, "Normal(mean, logstd.exp())"),
                              (check_clip_and_score, clip_stub, "torch.clamp"),
                              (check_running_obs_normalizer, NormalizerStub, "merge the moments")):
        result = check(stub, quiet=True)
        assert result.status == "todo" and hint in result.message
        assert "not implemented yet" in str(result)


def test_stub_todo_does_not_raise_in_strict_mode(monkeypatch):
    monkeypatch.setenv("PPO_COURSE_STRICT_CHECKS", "1")

    class Stub(RunningObsNormalizer):
        def normalize(self, obs):
            raise NotImplementedError("clip((obs - mean) / sqrt(var + eps))")

    assert check_running_obs_normalizer(Stub, quiet=True).status == "todo"


def test_other_exception_is_error_with_the_learners_line():
    def broken(mean, logstd, action=None, deterministic=False):
        dist = Normal(mean, logstd.exp())
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)  # action may be None

    result = check_gaussian_sample_and_score(broken, quiet=True)
    assert result.status == "error" and "line" in result.message

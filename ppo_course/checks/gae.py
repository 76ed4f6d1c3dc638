"""Checks for ex03 (Generalised Advantage Estimation).

The learner writes one function with the package's name and signature,
``compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
gae_lambda=0.95)``, in two steps: terminations only (:func:`check_gae`, whose rollouts have no
truncations and all-zero ``final_values``), then truncations too (:func:`check_gae_with_truncation`).
Both call it the same way and compare it with :func:`ppo_course.advantages.compute_gae` on
hand-picked rollouts (a long episode cut by the rollout, episodes ending mid-rollout and at the last
step, T = 1, several environments, lambda = 0 and 1, truncations). When it differs, the check finds
*where* the dependence structure is wrong: GAE is linear in the rewards and values, so adding 1 to
one input and watching which advantages move tells exactly which step leaks into which (an
episode boundary crossed, a bootstrap missing, the loop running forwards, ...).
"""

from __future__ import annotations

import inspect

import torch

from ppo_course.advantages import compute_gae as _reference_gae
from ppo_course.advantages import discounted_returns

from ._core import Diagnosis, expect_tensor, flags, fmt, raise_if_modified, run_check

__all__ = ["check_gae", "check_gae_with_truncation"]

GAMMA, LAMBDA = 0.9, 0.8  # distinct, so that a missing gamma or lambda shows
_ATOL = 1e-4


# --------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------
def _case(name, T, N, seed, terminated=(), truncated=(), gamma=GAMMA, lam=LAMBDA):
    """A rollout: seeded rewards/values, episode ends at the given (t, env) positions."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        name=name, gamma=gamma, lam=lam,
        rewards=torch.randn(T, N, generator=g),
        values=torch.rand(T, N, generator=g) * 2 - 1,
        next_value=torch.rand(N, generator=g) * 2 - 1,
        terminations=flags((T, N), terminated),
        truncations=flags((T, N), truncated),
        # V of the final observations: only meaningful where truncated, garbage elsewhere on purpose
        final_values=torch.rand(T, N, generator=g) * 4 + 1,
    )


def _copy(case):
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}


def _reference(case):
    return _reference_gae(case["rewards"], case["values"], case["terminations"], case["truncations"],
                          case["next_value"], case["final_values"], gamma=case["gamma"], gae_lambda=case["lam"])


_SIGNATURE = ("compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99, "
              "gae_lambda=0.95)")
_TENSOR_ARGS = ("rewards", "values", "terminations", "truncations", "next_value", "final_values")


class _Runner:
    """Calls the learner's function on a case, the package's way (all eight arguments, in its order),
    validating what comes back. ``zero_final_values``: pass zeros as ``final_values`` (task 1)."""

    def __init__(self, fn, zero_final_values: bool = False):
        self.fn, self.zero_final_values, self.signature_checked = fn, zero_final_values, False

    def args(self, c):
        final_values = torch.zeros_like(c["values"]) if self.zero_final_values else c["final_values"]
        return (c["rewards"], c["values"], c["terminations"], c["truncations"], c["next_value"], final_values,
                c["gamma"], c["lam"])

    def _check_signature(self, args) -> None:
        """A function that cannot take the package's eight arguments gets a diagnosis, not a TypeError."""
        self.signature_checked = True
        try:
            signature = inspect.signature(self.fn)
        except (TypeError, ValueError):
            return
        try:
            signature.bind(*args)
        except TypeError as exc:
            raise Diagnosis(f"your compute_gae cannot be called like the package's ({exc}): keep the signature "
                            f"{_SIGNATURE}, even where you ignore some arguments") from None

    def __call__(self, case):
        c = _copy(case)
        args = self.args(c)
        if not self.signature_checked:
            self._check_signature(args)
        before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        out = self.fn(*args)
        raise_if_modified(zip(args, before, _TENSOR_ARGS), "your function modified `{name}` in place: work on new "
                          "tensors (e.g. advantages = torch.zeros_like(values))")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise Diagnosis("return a tuple (advantages, returns)")
        T, N = case["values"].shape
        for name, t in zip(("advantages", "returns"), out):
            expect_tensor(t, name)
            if tuple(t.shape) != (T, N):
                raise Diagnosis(f"{name} should have shape (T, N) = ({T}, {N}), the shape of values; got "
                                f"{tuple(t.shape)}")
            if t.dtype != torch.float32:
                raise Diagnosis(f"{name} should be float32 (the dtype of values), got {t.dtype}")
        return out[0].detach(), out[1].detach()


def _sens(run, case, key, index):
    """Change in the advantages when case[key][index] grows by 1 (exact: GAE is linear)."""
    base = run(case)[0]
    bumped = _copy(case)
    bumped[key][index] += 1.0
    return run(bumped)[0] - base


def _nz(x) -> bool:
    return abs(float(x)) > _ATOL


def _flags_desc(case, key="terminations", env=0):
    return fmt(case[key][:, env], significant=True)


# --------------------------------------------------------------------------------------------
# diagnoses shared by both checks (no truncations involved)
# --------------------------------------------------------------------------------------------
def _probe_recursion(run):
    """Specific diagnoses of the recursion, on cases without truncation."""
    long = _case("one long episode", 8, 1, seed=1)
    mid = _case("episode ending at step 3", 8, 1, seed=2, terminated=[(3, 0)])
    end = _case("episode ending at the last step", 6, 1, seed=3, terminated=[(5, 0)])
    envs = _case("three envs", 6, 3, seed=4, terminated=[(2, 1)])
    _probe_separate_envs(run, envs)
    _probe_direction(run, long)
    _probe_episode_end(run, mid, end)
    _probe_rollout_cut(run, long)
    _probe_coefficients(run, long)


def _probe_separate_envs(run, envs):
    """Several environments must stay separate columns."""
    for n_from in range(3):
        for key in ("rewards", "values"):
            moved = _sens(run, envs, key, (1, n_from))
            others = [n for n in range(3) if n != n_from and bool((moved[:, n].abs() > _ATOL).any())]
            if others:
                raise Diagnosis(f"environments are mixed: the advantages of env {others[0]} change when {key}[1, "
                                f"{n_from}] (env {n_from}) changes; each column is its own stream of steps")


def _probe_direction(run, long):
    """Iterating forwards in time: A[t] must not depend on earlier steps."""
    T = 8
    for j in range(T - 1):
        moved = _sens(run, long, "rewards", (j, 0))
        later = [t for t in range(j + 1, T) if _nz(moved[t, 0])]
        if later:
            raise Diagnosis(f"the recursion runs forwards in time: A[{later[0]}] changes when r[{j}] (an earlier "
                            "reward) changes; A_t sums future TD errors, so loop backwards: "
                            "for t in reversed(range(T))")


def _probe_episode_end(run, mid, end):
    """An episode end (mid-rollout at step 3, or at the last step) cuts the recursion after that step."""
    # off-by-one on terminations (CleanRL's next-done convention applied to flags that belong to step t)
    ref_mid = lambda key, idx: _sens(_reference, mid, key, idx)  # noqa: E731
    if not _nz(_sens(run, mid, "rewards", (3, 0))[2, 0]) and _nz(ref_mid("rewards", (3, 0))[2, 0]) \
            and _nz(_sens(run, mid, "rewards", (4, 0))[3, 0]):
        raise Diagnosis("off-by-one on terminations: terminations[3] = 1 cuts the recursion between steps 2 and 3 "
                        "instead of after step 3 (A[2] ignores r[3], A[3] uses r[4]): you used terminations[t+1]; here "
                        "terminations[t] = 1 means the episode ended at step t itself")

    # leak across the episode boundary
    moved = _sens(run, mid, "rewards", (4, 0))
    leaked = [t for t in range(4) if _nz(moved[t, 0])]
    if leaked:
        through = _nz(_sens(run, mid, "values", (4, 0))[3, 0])
        raise Diagnosis(f"advantages leak across episode boundaries: terminations[3] = 1 but A[{leaked[-1]}] "
                        "changes when r[4] changes; multiply the carried advantage by (1 - terminations[t]): A_t = "
                        "delta_t + gamma * lambda * (1 - terminations[t]) * A_{t+1}"
                        + (" (and delta_3 bootstraps from values[4] too)" if through else ""))
    if _nz(_sens(run, mid, "values", (4, 0))[3, 0]):
        raise Diagnosis("bootstrapping through a terminal step: terminations[3] = 1 but A[3] changes when values[4] "
                        "(the next episode's first state) changes; at a terminal step delta_t = r_t - V(s_t), "
                        "nothing after it: multiply gamma * V(s_{t+1}) by (1 - terminations[t])")
    if _nz(_sens(run, end, "next_value", (0,))[5, 0]):
        raise Diagnosis("bootstrapping through a terminal step: terminations[5] = 1 at the last step, but A[5] "
                        "changes with next_value (the first state of the next episode); mask it with "
                        "(1 - terminations[t])")


def _probe_rollout_cut(run, long):
    """The rollout cut: the last step bootstraps from next_value, times gamma."""
    T = 8
    cut = _sens(run, long, "next_value", (0,))
    if not _nz(cut[T - 1, 0]):
        raise Diagnosis("no bootstrap at the rollout cut: next_value is ignored. The last episode did not end, "
                        "so delta_{T-1} = r_{T-1} + gamma * next_value - V(s_{T-1})")
    if abs(float(cut[T - 1, 0]) - 1.0) < _ATOL:
        raise Diagnosis("the TD error is missing gamma: delta_t = r_t + gamma * V(s_{t+1}) - V(s_t) "
                        "(A[T-1] grows by 1, not by gamma, when next_value grows by 1)")


def _probe_coefficients(run, long):
    """The coefficients of the recursion: A[0] grows by gamma * lambda when r[1] grows by 1."""
    c = float(_sens(run, long, "rewards", (1, 0))[0, 0])
    if abs(c - GAMMA * LAMBDA) > _ATOL:
        what = {GAMMA: "lambda is missing from the recursion: A_t = delta_t + gamma * lambda * A_{t+1} "
                       f"(here A[0] grows by gamma = {GAMMA} instead of gamma * lambda = {GAMMA * LAMBDA:.2f} "
                       "when r[1] grows by 1)",
                LAMBDA: "gamma is missing from the recursion: A_t = delta_t + gamma * lambda * A_{t+1} "
                        f"(here A[0] grows by lambda = {LAMBDA} instead of gamma * lambda = {GAMMA * LAMBDA:.2f} "
                        "when r[1] grows by 1)",
                1.0: "gamma and lambda are missing from the recursion: A_t = delta_t + gamma * lambda * A_{t+1}",
                0.0: "the recursion never carries A_{t+1} back: A_t = delta_t + gamma * lambda * A_{t+1}"}
        for value, message in what.items():
            if abs(c - value) < _ATOL:
                raise Diagnosis(message)
        raise Diagnosis(f"A[0] should grow by gamma * lambda = {GAMMA * LAMBDA:.2f} when r[1] grows by 1 "
                        f"(gamma = {GAMMA}, lambda = {LAMBDA}), but it grows by {c:.4f}")
    dv = float(_sens(run, long, "values", (1, 0))[0, 0])
    if abs(dv - (GAMMA - GAMMA * LAMBDA)) > _ATOL and abs(dv - (1 - GAMMA * LAMBDA)) < _ATOL:
        raise Diagnosis("the TD error is missing gamma: delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)")


def _probe_returns(case, adv, ret):
    values = case["values"]
    if torch.allclose(ret, adv + values, atol=_ATOL):
        return
    if torch.allclose(ret, adv, atol=_ATOL):
        raise Diagnosis("returns are equal to the advantages: you forgot to add the values, returns = advantages "
                        "+ values (the critic's regression targets)")
    if torch.allclose(ret, adv - values, atol=_ATOL):
        raise Diagnosis("returns = advantages - values; it should be advantages + values")
    ended = torch.clamp(case["terminations"] + case["truncations"], max=1.0)
    for nv in (None, case["next_value"]):
        if torch.allclose(ret, discounted_returns(case["rewards"], ended, case["gamma"], nv), atol=_ATOL):
            raise Diagnosis("returns are plain discounted rewards; PPO's value targets are the lambda-returns, "
                            "returns = advantages + values")
    t, n = divmod(int((ret - adv - values).abs().argmax()), values.shape[1])
    raise Diagnosis(f"returns should equal advantages + values; in case '{case['name']}' at t={t}, env {n}: "
                    f"expected {float(adv[t, n] + values[t, n]):.4f}, got {float(ret[t, n]):.4f}")


def _compare(run, cases, probes):
    """Run every case; on the first wrong advantage run the probes, then a generic diagnosis."""
    results = [(case, run(case), _reference(case)) for case in cases]
    for case, (adv, _), (ref_adv, _) in results:
        if not torch.allclose(adv, ref_adv, atol=_ATOL):
            for probe in probes:
                probe()
            raise Diagnosis(_advantage_mismatch(case, adv, ref_adv))
    for case, (adv, ret), _ in results:
        _probe_returns(case, adv, ret)


def _advantage_mismatch(case, adv, ref_adv) -> str:
    """The generic diagnosis: where the advantages differ most, with that environment's inputs."""
    T, N = ref_adv.shape
    t, n = divmod(int((adv - ref_adv).abs().argmax()), N)
    ends = ""
    if case["terminations"][:, n].any():
        ends += f", terminations[:, {n}] = {_flags_desc(case, env=n)}"
    if case["truncations"][:, n].any():
        ends += f", truncations[:, {n}] = {_flags_desc(case, 'truncations', n)}"
    return (f"advantages differ in case '{case['name']}' (T={T}, N={N}, gamma={case['gamma']}, "
            f"lambda={case['lam']}{ends}): at t={t}, env {n} expected {float(ref_adv[t, n]):.4f}, got "
            f"{float(adv[t, n]):.4f}; rewards[:, {n}] = {fmt(case['rewards'][:, n], significant=True)}, "
            f"values[:, {n}] = {fmt(case['values'][:, n], significant=True)}, "
            f"next_value = {float(case['next_value'][n]):.3f}")


def _basic_cases():
    return [
        _case("one long episode cut by the rollout", 8, 1, seed=1),
        _case("episode ending mid-rollout (terminations[3] = 1)", 8, 1, seed=2, terminated=[(3, 0)]),
        _case("episode ending at the last step", 6, 1, seed=3, terminated=[(5, 0)]),
        _case("T = 1", 1, 2, seed=5, terminated=[(0, 1)]),
        _case("several envs, several episode ends", 10, 4, seed=6,
              terminated=[(2, 0), (7, 0), (0, 1), (9, 2), (4, 3), (5, 3)]),
        _case("lambda = 0 (one-step TD errors)", 7, 2, seed=7, terminated=[(3, 1)], lam=0.0),
        _case("lambda = 1 (Monte-Carlo)", 7, 2, seed=8, terminated=[(2, 0)], lam=1.0),
        _case("gamma = 0.99, lambda = 0.95", 12, 3, seed=9, terminated=[(5, 1), (11, 2)], gamma=0.99, lam=0.95),
    ]


# --------------------------------------------------------------------------------------------
# ex03 task 1
# --------------------------------------------------------------------------------------------
def check_gae(compute_gae, quiet: bool = False):
    """Check ``compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
    gae_lambda=0.95) -> (advantages, returns)`` on rollouts without truncations (ex03 task 1).

    Contract: the package's signature; ``rewards``, ``values``, ``terminations``, ``truncations`` are
    ``(T, N)`` float32, ``next_value`` is ``(N,)`` (V of the observation after the rollout);
    ``terminations[t] = 1`` if the episode terminated at step t, so nothing is bootstrapped past it;
    the last step bootstraps from ``next_value`` unless terminated. Here ``truncations`` and
    ``final_values`` are all zeros, so the function may ignore them. Returns ``(advantages, returns)``,
    both ``(T, N)`` float32, with returns = advantages + values. Compared with
    :func:`ppo_course.advantages.compute_gae` on a long episode cut by the rollout, an episode ending
    mid-rollout and at the last step, T = 1, several envs, lambda = 0 and 1; when it differs, the
    dependence of A on each input is probed to name the bug.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        run = _Runner(compute_gae, zero_final_values=True)
        _compare(run, _basic_cases(), [lambda: _probe_recursion(run)])
        return ("equals ppo_course.advantages.compute_gae on 8 rollouts: a cut episode, episode ends mid-rollout and "
                "at the last step, T = 1, several envs, lambda = 0 and 1; returns = advantages + values")

    return run_check("compute_gae", body, hint="loop backwards over t: delta, then A_t = delta_t + gamma * lambda * "
                     "(1 - terminations[t]) * A_{t+1}", quiet=quiet)


# --------------------------------------------------------------------------------------------
# ex03 task 2
# --------------------------------------------------------------------------------------------
def _probe_truncation(run):
    T = 8
    # env 0 truncated at step 3, env 1 terminated at step 4
    case = _case("truncation at step 3 (env 0), termination at step 4 (env 1)", T, 2, seed=11,
                 terminated=[(4, 1)], truncated=[(3, 0)])
    s = lambda key, idx: _sens(run, case, key, idx)  # noqa: E731
    uses_final = _nz(s("final_values", (3, 0))[3, 0])
    uses_next_r = _nz(s("rewards", (4, 0))[3, 0]) or any(_nz(x) for x in s("rewards", (4, 0))[:3, 0])
    uses_next_v = _nz(s("values", (4, 0))[3, 0])
    if not uses_final and not uses_next_r and not uses_next_v:
        raise Diagnosis("truncation treated as termination: truncations[3] = 1 but A[3] does not bootstrap from "
                        "final_values[3]; a time limit is not an ending: delta_3 = r_3 + gamma * final_values[3] "
                        "- V(s_3)")
    if not uses_final and (uses_next_r or uses_next_v):
        raise Diagnosis("truncation ignored: truncations[3] = 1 but A[3] changes with "
                        + ("r[4]" if uses_next_r else "values[4]")
                        + ", the next episode's first step; bootstrap from final_values[3] and stop the recursion there")
    if uses_next_r:
        raise Diagnosis("the advantage leaks into the next episode after the truncation: truncations[3] = 1 but A[3] "
                        "changes when r[4] changes; the recursion stops at any episode end (done = terminated or "
                        "truncated), only delta bootstraps from final_values")
    if uses_next_v:
        raise Diagnosis("truncations[3] = 1 but delta_3 uses values[4] (the next episode's first state) as well as "
                        "final_values[3]: after a truncation V(s') is final_values[t] only")
    if _nz(s("final_values", (4, 1))[4, 1]):
        raise Diagnosis("final_values used where terminated: terminations[4] = 1 (env 1) but A[4] changes with "
                        "final_values[4]; a terminated episode has no future, delta = r - V(s)")
    for t in range(T):
        if t != 3 and _nz(s("final_values", (t, 0))[t, 0]):
            raise Diagnosis(f"final_values used at a step that was not truncated (step {t}): final_values[t] only "
                            "means something where truncations[t] = 1")
    last = _case("truncation at the last step", 6, 1, seed=12, truncated=[(5, 0)])
    if _nz(_sens(run, last, "next_value", (0,))[5, 0]):
        raise Diagnosis("truncations[5] = 1 at the last step, but A[5] bootstraps from next_value, which is V of the "
                        "next episode's first observation; use final_values[5]")
    if not _nz(_sens(run, last, "final_values", (5, 0))[5, 0]):
        raise Diagnosis("truncations[5] = 1 at the last step, but A[5] ignores final_values[5]")
    both = _case("terminated and truncated at step 2", 6, 1, seed=13, terminated=[(2, 0)], truncated=[(2, 0)])
    if _nz(_sens(run, both, "final_values", (2, 0))[2, 0]):
        raise Diagnosis("a step both terminated and truncated (terminations[2] = truncations[2] = 1) bootstraps from "
                        "final_values[2]; termination wins: delta = r - V(s)")


def check_gae_with_truncation(compute_gae, quiet: bool = False):
    """Check ``compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
    gae_lambda=0.95) -> (advantages, returns)`` with truncations too (ex03 task 2).

    Contract: as :func:`ppo_course.advantages.compute_gae`: ``(T, N)`` float32 inputs except
    ``next_value`` ``(N,)``; a terminated step bootstraps from nothing, a truncated step from
    ``final_values[t]`` (V of the episode's real last observation), and both stop the recursion;
    the last step bootstraps from ``next_value`` unless it ended an episode. Compared with the
    package on truncations mid-rollout and at the last step, terminations, both in one step,
    several envs, T = 1, lambda = 0 and 1.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        run = _Runner(compute_gae)
        cases = _basic_cases() + [
            _case("truncation at step 3", 8, 1, seed=21, truncated=[(3, 0)]),
            _case("truncation at the last step", 6, 2, seed=22, truncated=[(5, 0)], terminated=[(5, 1)]),
            _case("terminated and truncated at once", 6, 1, seed=23, terminated=[(2, 0)], truncated=[(2, 0)]),
            _case("several envs, terminations and truncations", 10, 4, seed=24,
                  terminated=[(2, 0), (9, 1), (4, 3)], truncated=[(6, 0), (0, 1), (9, 2), (5, 3)]),
            _case("T = 1, truncated", 1, 2, seed=25, truncated=[(0, 0)], terminated=[(0, 1)]),
            _case("truncations, lambda = 1", 9, 2, seed=26, truncated=[(4, 0), (2, 1)], terminated=[(7, 1)],
                  lam=1.0),
            _case("truncations, lambda = 0", 9, 2, seed=27, truncated=[(4, 0)], terminated=[(6, 1)], lam=0.0),
        ]
        _compare(run, cases, [lambda: _probe_recursion(run), lambda: _probe_truncation(run)])
        return ("equals ppo_course.advantages.compute_gae on 15 rollouts: truncations mid-rollout and at the last "
                "step (bootstrap from final_values), terminations, both at once, several envs, T = 1, lambda = 0 "
                "and 1; returns = advantages + values")

    return run_check("compute_gae with truncation", body,
                     hint="V(s') is values[t+1], final_values[t] if truncated, next_value at the end; any done stops "
                          "the recursion", quiet=quiet)

"""Checks for ex03 (Generalised Advantage Estimation).

The learner writes one function with the package's name and signature,
``compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
gae_lambda=0.95)``, in two steps: terminations only (:func:`check_gae`, whose rollouts have no
truncations and all-zero ``final_values``), then truncations too (:func:`check_gae_with_truncation`).
Both call it the same way and compare it with :func:`ppo_course.advantages.compute_gae` on
hand-picked rollouts (a long episode cut by the rollout, episodes ending mid-rollout and at the last
step, T = 1, several environments, lambda = 0 and 1, truncations).

When the advantages differ, the check names a mistake only when it can reproduce the learner's numbers
(see :mod:`ppo_course.checks._hypotheses`): each common mistake is the reference GAE with one thing
changed (a coefficient, V(s'), an episode-end mask, an index shifted by one, the loop's direction or
range, normalisation added), run on the same inputs, and the first, in the documented order of
``_GAE_HYPOTHESES`` and ``_TRUNCATION_HYPOTHESES``, that equals the learner's advantages on every rollout
is named. Otherwise the diagnosis is the localisation: the first rollout that differs, the first wrong
step in the recursion's order (t = T-1 down to 0) with that environment's inputs, and one measured
dependence GAE does not have (GAE is linear, so adding 1 to one input and watching which advantages
move shows which step leaks into which). The returns are then checked the same way.
"""

from __future__ import annotations

import inspect
from functools import partial

import torch

from ppo_course.advantages import compute_gae as _reference_gae
from ppo_course.advantages import discounted_returns

from ._core import Diagnosis, expect_tensor, flags, fmt, raise_if_modified, run_check
from ._hypotheses import as_double, first_difference, matching_hypothesis, reproduces

__all__ = ["check_gae", "check_gae_with_truncation"]

GAMMA, LAMBDA = 0.9, 0.8  # distinct, so that a missing gamma or lambda shows
_ATOL, _RTOL = 1e-4, 1e-5  # as torch.allclose(atol=1e-4)


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
# hypotheses: the reference GAE with one thing changed, run on the learner's own inputs
# --------------------------------------------------------------------------------------------
def _pieces(args) -> dict:
    """The reference's ingredients for one call (the runner's eight arguments), in float64."""
    r, v, term, trunc, nv, fv = (as_double(x) for x in args[:6])
    following = torch.cat([v[1:], nv.unsqueeze(0)])  # values[t+1], next_value at the cut
    return dict(r=r, v=v, term=term, trunc=trunc, ended=torch.clamp(term + trunc, max=1.0), fv=fv, next_value=nv,
                following=following, nv=torch.where(trunc.bool(), fv, following), gamma=args[6], lam=args[7],
                T=r.shape[0])


def _gae64(p, nv=None, dmask=None, cmask=None, gamma_delta=None, coef=None, ts=None) -> torch.Tensor:
    """GAE's recursion with any ingredient replaced (None keeps the reference's): V(s') ``nv``, the mask on
    the bootstrap ``dmask``, the mask on the carried advantage ``cmask``, the discount in delta, the
    coefficient of the carry, and the steps the loop visits, in order."""
    nv = p["nv"] if nv is None else nv
    dmask = 1 - p["term"] if dmask is None else dmask
    cmask = 1 - p["ended"] if cmask is None else cmask
    gamma_delta = p["gamma"] if gamma_delta is None else gamma_delta
    coef = p["gamma"] * p["lam"] if coef is None else coef
    adv, last = torch.zeros_like(p["v"]), torch.zeros_like(p["v"][0])
    for t in (reversed(range(p["T"])) if ts is None else ts):
        last = p["r"][t] + gamma_delta * nv[t] * dmask[t] - p["v"][t] + coef * cmask[t] * last
        adv[t] = last
    return adv


def _shift(x, by: int) -> torch.Tensor:
    """``x[t + by]`` along time, zero where that falls outside the rollout."""
    out = torch.zeros_like(x)
    if by > 0:
        out[:-by] = x[by:]
    else:
        out[-by:] = x[:by]
    return out


def _normalised(a, dim=None, correction=1) -> torch.Tensor:
    if dim is None:
        return (a - a.mean()) / (a.std(correction=correction) + 1e-8)
    return (a - a.mean(dim, keepdim=True)) / (a.std(dim, keepdim=True, correction=correction) + 1e-8)


def _ones(p):
    return torch.ones_like(p["term"])


def _with_truncation(p, following):
    return torch.where(p["trunc"].bool(), p["fv"], following)


_LOOP = "loop over every step, t = T-1 down to 0: for t in reversed(range(T))"
_CARRY = "A_t = delta_t + gamma * lambda * A_{t+1}"
_NORMALISED = ("you normalised the advantages inside compute_gae ({}): return the raw advantages; PPO normalises "
               "them per minibatch in the loss (ex04), and the returns are raw advantages + values")
#: What each common mistake makes of GAE, in the order they are tried (the first that reproduces the learner's
#: advantages on every rollout is named): a missing or wrong coefficient, a wrong V(s'), a missing or shifted
#: episode-end mask, the loop's direction or range, then normalisation added afterwards.
_GAE_HYPOTHESES = [
    (f"the recursion never carries A_{{t+1}} back: {_CARRY} (your advantages are the one-step TD errors)",
     lambda p: _gae64(p, coef=0.0)),
    (f"lambda is missing from the recursion: {_CARRY} (A[0] grows by gamma = {GAMMA} instead of gamma * lambda = "
     f"{GAMMA * LAMBDA:.2f} when r[1] grows by 1)", lambda p: _gae64(p, coef=p["gamma"])),
    (f"gamma is missing from the recursion: {_CARRY} (A[0] grows by lambda = {LAMBDA} instead of gamma * lambda = "
     f"{GAMMA * LAMBDA:.2f} when r[1] grows by 1)", lambda p: _gae64(p, coef=p["lam"])),
    (f"gamma and lambda are missing from the recursion: {_CARRY}", lambda p: _gae64(p, coef=1.0)),
    ("the TD error is missing gamma: delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)",
     lambda p: _gae64(p, gamma_delta=1.0)),
    ("the TD error uses lambda where it needs gamma: delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)",
     lambda p: _gae64(p, gamma_delta=p["lam"])),
    ("no bootstrap at the rollout cut: next_value is ignored. The last episode did not end, so delta_{T-1} = "
     "r_{T-1} + gamma * next_value - V(s_{T-1})", lambda p: _gae64(p, nv=_with_truncation(p, _shift(p["v"], 1)))),
    ("the last step bootstraps from values[0]: torch.roll wraps around; V(s') after the last step is next_value",
     lambda p: _gae64(p, nv=_with_truncation(p, p["v"].roll(-1, 0)))),
    ("V(s_{t+1}) is taken from values[t], the value of step t itself: delta_t = r_t + gamma * values[t+1] - "
     "values[t] (next_value at the last step)",
     lambda p: _gae64(p, nv=_with_truncation(p, torch.cat([p["v"][:-1], p["next_value"][None]])))),
    ("V(s_{t+1}) is taken from values[t], the value of step t itself: delta_t = r_t + gamma * values[t+1] - "
     "values[t] (next_value at the last step)", lambda p: _gae64(p, nv=_with_truncation(p, p["v"]))),
    ("bootstrapping through a terminal step: delta_t adds gamma * V(s_{t+1}) even where terminations[t] = 1; at a "
     "terminal step delta_t = r_t - V(s_t), nothing after it: multiply gamma * V(s_{t+1}) by (1 - terminations[t])",
     lambda p: _gae64(p, dmask=_ones(p))),
    ("advantages leak across episode boundaries: terminations[3] = 1 but A[3] changes when r[4] changes; multiply "
     "the carried advantage by (1 - terminations[t]): A_t = delta_t + gamma * lambda * (1 - terminations[t]) * "
     "A_{t+1}", lambda p: _gae64(p, cmask=1 - p["trunc"])),
    ("episode ends are ignored: terminations[t] = 1 must remove both the bootstrap in delta_t and the carried "
     "A_{t+1}; multiply both by (1 - terminations[t])", lambda p: _gae64(p, dmask=_ones(p), cmask=1 - p["trunc"])),
    ("off-by-one on terminations: terminations[3] = 1 cuts the recursion between steps 2 and 3 instead of after step "
     "3 (A[2] ignores r[3], A[3] uses r[4]): you used terminations[t+1]; here terminations[t] = 1 means the episode "
     "ended at step t itself", lambda p: _gae64(p, dmask=1 - _shift(p["term"], 1), cmask=1 - _shift(p["ended"], 1))),
    ("off-by-one on terminations: you used terminations[t-1], the previous step's flag; terminations[t] = 1 means "
     "the episode ended at step t itself, so it masks step t's bootstrap and the advantage carried into step t",
     lambda p: _gae64(p, dmask=1 - _shift(p["term"], -1), cmask=1 - _shift(p["ended"], -1))),
    ("off-by-one on terminations: you used terminations[t-1], the previous step's flag (and at t = 0, "
     "terminations[-1] is the last step's); terminations[t] = 1 means the episode ended at step t itself",
     lambda p: _gae64(p, dmask=1 - p["term"].roll(1, 0), cmask=1 - p["ended"].roll(1, 0))),
    ("the recursion runs forwards in time: A_t carries the advantage of step t-1; A_t sums future TD errors, so "
     f"{_LOOP}", lambda p: _gae64(p, ts=range(p["T"]))),
    (f"your loop stops before t = 0: A[0] is never computed and stays 0; {_LOOP}",
     lambda p: _gae64(p, ts=range(p["T"] - 1, 0, -1))),
    (f"your loop starts at t = T-2: the last step's A[T-1] is never computed (it stays 0, and the recursion starts "
     f"from it); {_LOOP}", lambda p: _gae64(p, ts=range(p["T"] - 2, -1, -1))),
    (_NORMALISED.format("(A - mean) / std over all T x N entries"), lambda p: _normalised(_gae64(p))),
    (_NORMALISED.format("(A - mean) / std over all T x N entries"), lambda p: _normalised(_gae64(p), correction=0)),
    (_NORMALISED.format("per environment, over time"), lambda p: _normalised(_gae64(p), 0)),
    (_NORMALISED.format("per environment, over time"), lambda p: _normalised(_gae64(p), 0, correction=0)),
    (_NORMALISED.format("per time step, over the environments"), lambda p: _normalised(_gae64(p), 1)),
    (_NORMALISED.format("per time step, over the environments"), lambda p: _normalised(_gae64(p), 1, correction=0)),
]

_TRUNCATION_HYPOTHESES = [
    ("truncation treated as termination: a truncated step does not bootstrap from final_values[t]; a time limit is "
     "not an ending: delta_t = r_t + gamma * final_values[t] - V(s_t), and only the recursion stops there",
     lambda p: _gae64(p, nv=p["following"], dmask=1 - p["ended"])),
    ("truncation ignored: a truncated step bootstraps from values[t+1], the next episode's first state, and its "
     "advantage runs on into that episode; bootstrap from final_values[t] and stop the recursion there",
     lambda p: _gae64(p, nv=p["following"], cmask=1 - p["term"])),
    ("final_values used where terminated: a terminated step bootstraps from final_values[t]; a terminated episode "
     "has no future, delta = r - V(s) (final_values only matter where truncations[t] = 1)",
     lambda p: _gae64(p, nv=torch.where(p["ended"].bool(), p["fv"], p["following"]), dmask=_ones(p))),
    ("the advantage leaks into the next episode after the truncation: the recursion stops at any episode end (done "
     "= terminated or truncated), only delta bootstraps from final_values", lambda p: _gae64(p, cmask=1 - p["term"])),
    ("a truncated last step bootstraps from next_value, which is V of the next episode's first observation; use "
     "final_values[T-1] there (the truncation wins over the rollout cut)",
     lambda p: _gae64(p, nv=torch.cat([p["nv"][:-1], p["next_value"][None]]))),
    ("a step both terminated and truncated bootstraps from final_values; termination wins: delta = r - V(s)",
     lambda p: _gae64(p, dmask=1 - p["term"] * (1 - p["trunc"]))),
]


def _each_case(hypothesis, run, cases):
    """A hypothesis's advantages on each case in turn (a generator: stops being evaluated at a mismatch)."""
    return (hypothesis(_pieces(run.args(case))) for case in cases)


# --------------------------------------------------------------------------------------------
# measured dependences: GAE is linear, so bumping one input by 1 shows which advantages depend on it
# --------------------------------------------------------------------------------------------
def _fact_recursion(run) -> str | None:
    """A dependence of a no-truncation rollout that GAE does not have, in words, or None."""
    envs = _case("three envs", 6, 3, seed=4, terminated=[(2, 1)])
    for n_from in range(3):
        for key in ("rewards", "values"):
            moved = _sens(run, envs, key, (1, n_from))
            others = [n for n in range(3) if n != n_from and bool((moved[:, n].abs() > _ATOL).any())]
            if others:
                return (f"in a 3-env rollout the advantages of env {others[0]} change when {key}[1, {n_from}] "
                        f"(env {n_from}) changes, though each env is its own stream of steps")
    long, mid = _case("long", 8, 1, seed=1), _case("mid", 8, 1, seed=2, terminated=[(3, 0)])
    for j in range(7):
        later = [t for t in range(j + 1, 8) if _nz(_sens(run, long, "rewards", (j, 0))[t, 0])]
        if later:
            return (f"in one long episode A[{later[0]}] changes when r[{j}], an earlier reward, changes, though A_t "
                    "sums rewards from t on")
    leaked = [t for t in range(4) if _nz(_sens(run, mid, "rewards", (4, 0))[t, 0])]
    if leaked:
        return (f"in a rollout with terminations[3] = 1, A[{leaked[-1]}] changes when r[4] changes, though that "
                "episode ended at step 3")
    if _nz(_sens(run, mid, "values", (4, 0))[3, 0]):
        return ("in a rollout with terminations[3] = 1, A[3] changes when values[4] changes, though nothing follows "
                "a terminal step")
    cut = float(_sens(run, long, "next_value", (0,))[7, 0])
    if abs(cut - GAMMA) > _ATOL:
        return (f"in one long episode A[7] (the last step) grows by {cut:.4f} when next_value grows by 1; GAE gives "
                f"gamma = {GAMMA}")
    c = float(_sens(run, long, "rewards", (1, 0))[0, 0])
    if abs(c - GAMMA * LAMBDA) > _ATOL:
        return (f"in one long episode A[0] grows by {c:.4f} when r[1] grows by 1; GAE gives gamma * lambda = "
                f"{GAMMA * LAMBDA:.2f}")
    return None


def _fact_truncation(run) -> str | None:
    """A dependence of a rollout with truncations that GAE does not have, in words, or None."""
    case = _case("truncation at step 3 (env 0), termination at step 4 (env 1)", 8, 2, seed=11,
                 terminated=[(4, 1)], truncated=[(3, 0)])
    s = lambda key, idx: _sens(run, case, key, idx)  # noqa: E731
    if not _nz(s("final_values", (3, 0))[3, 0]):
        return "in a rollout with truncations[3] = 1, A[3] does not change with final_values[3]"
    leaked = [t for t in range(4) if _nz(s("rewards", (4, 0))[t, 0])]
    if leaked:
        return (f"in a rollout with truncations[3] = 1, A[{leaked[-1]}] changes when r[4] changes, though that "
                "episode ended at step 3")
    if _nz(s("values", (4, 0))[3, 0]):
        return ("in a rollout with truncations[3] = 1, A[3] changes when values[4] (the next episode's first "
                "state) changes")
    if _nz(s("final_values", (4, 1))[4, 1]):
        return "in a rollout with terminations[4] = 1 in env 1, A[4] of env 1 changes with final_values[4]"
    for t in range(8):
        if t != 3 and _nz(s("final_values", (t, 0))[t, 0]):
            return f"A[{t}] changes with final_values[{t}], though step {t} of that rollout was not truncated"
    last = _case("truncation at the last step", 6, 1, seed=12, truncated=[(5, 0)])
    if _nz(_sens(run, last, "next_value", (0,))[5, 0]):
        return "in a rollout with truncations[5] = 1 at the last step, A[5] changes with next_value"
    both = _case("terminated and truncated at step 2", 6, 1, seed=13, terminated=[(2, 0)], truncated=[(2, 0)])
    if _nz(_sens(run, both, "final_values", (2, 0))[2, 0]):
        return "in a rollout terminated and truncated at step 2, A[2] changes with final_values[2]"
    return None


def _measured_fact(run, truncation: bool) -> str:
    """``"; measured: ..."`` with the first wrong dependence found, or ``""`` (also when probing fails)."""
    try:
        fact = _fact_recursion(run) or (_fact_truncation(run) if truncation else None)
    except Exception:  # noqa: BLE001 -- the learner's code failing on a probe rollout: report the localisation alone
        return ""
    return f"; measured by changing one input at a time: {fact}" if fact else ""


# --------------------------------------------------------------------------------------------
# comparison: localise, then name a mistake only when it reproduces the learner's output
# --------------------------------------------------------------------------------------------
def _diagnose_advantages(run, results, truncation: bool) -> None:
    """Raise the diagnosis for the first rollout whose advantages differ (results: (case, got, reference))."""
    bad = [i for i, (_, got, ref) in enumerate(results) if not reproduces(got[0], ref[0], atol=_ATOL, rtol=_RTOL)]
    if not bad:
        return
    ordered = [results[i] for i in bad] + [r for i, r in enumerate(results) if i not in bad]  # failing ones first
    cases = [case for case, _, _ in ordered]
    hypotheses = _GAE_HYPOTHESES + (_TRUNCATION_HYPOTHESES if truncation else [])
    found = matching_hypothesis([got[0] for _, got, _ in ordered],
                                [(name, partial(_each_case, h, run, cases)) for name, h in hypotheses],
                                atol=_ATOL, rtol=_RTOL)
    if found:
        raise Diagnosis(f"{found} (this mistake reproduces your advantages on all {len(results)} rollouts)")
    case, (adv, _), (ref_adv, _) = results[bad[0]]
    raise Diagnosis(_advantage_mismatch(case, adv, ref_adv) + _measured_fact(run, truncation)
                    + f"; none of the {len({name for name, _ in hypotheses})} common mistakes tried reproduces "
                    "your advantages")


def _advantage_mismatch(case, adv, ref_adv) -> str:
    """Where the advantages first differ, in the recursion's order (t = T-1 down to 0), with that env's inputs."""
    T, N = ref_adv.shape
    d = first_difference(ref_adv, adv, ("t", "env"), atol=_ATOL, rtol=_RTOL, reverse=(0,))
    t, n = d.index
    ends = ""
    if case["terminations"][:, n].any():
        ends += f", terminations[:, {n}] = {_flags_desc(case, env=n)}"
    if case["truncations"][:, n].any():
        ends += f", truncations[:, {n}] = {_flags_desc(case, 'truncations', n)}"
    later = {T - 1: "", T - 2: f"step {T - 1} is right; "}.get(t, f"steps {t + 1}..{T - 1} are right; ")
    return (f"advantages differ in case '{case['name']}' (T={T}, N={N}, gamma={case['gamma']}, "
            f"lambda={case['lam']}{ends}): at t={t}, env {n} expected {d.expected:.4f}, got {d.got:.4f}, the first "
            f"wrong entry going backwards as the recursion does ({later}{d.count} of {d.size} entries differ); "
            f"rewards[:, {n}] = {fmt(case['rewards'][:, n], significant=True)}, "
            f"values[:, {n}] = {fmt(case['values'][:, n], significant=True)}, "
            f"next_value[{n}] = {float(case['next_value'][n]):.3f}")


_RETURNS_PLAIN = ("returns are plain discounted rewards; PPO's value targets are the lambda-returns, returns = "
                  "advantages + values")
#: The returns' common mistakes, given (pieces, advantages), in the order they are tried.
_RETURNS_HYPOTHESES = [
    ("returns are equal to the advantages: you forgot to add the values, returns = advantages + values (the "
     "critic's regression targets)", lambda p, adv: adv),
    ("returns = advantages - values; it should be advantages + values", lambda p, adv: adv - p["v"]),
    ("returns = advantages + V(s_{t+1}); it should be advantages + values[t], the value of the state the advantage "
     "belongs to", lambda p, adv: adv + p["nv"]),
    (_RETURNS_PLAIN, lambda p, adv: discounted_returns(p["r"], p["ended"], p["gamma"])),
    (_RETURNS_PLAIN, lambda p, adv: discounted_returns(p["r"], p["ended"], p["gamma"], p["next_value"])),
    (_RETURNS_PLAIN, lambda p, adv: discounted_returns(p["r"], p["term"], p["gamma"])),
    (_RETURNS_PLAIN, lambda p, adv: discounted_returns(p["r"], p["term"], p["gamma"], p["next_value"])),
]


def _diagnose_returns(run, results) -> None:
    """The returns, once the advantages are right: advantages + values, or the mistake that reproduces them."""
    expected = [as_double(adv) + as_double(case["values"]) for case, (adv, _), _ in results]
    got = [ret for _, (_, ret), _ in results]
    if reproduces(got, expected, atol=_ATOL, rtol=_RTOL):
        return
    inputs = [(_pieces(run.args(case)), as_double(adv)) for case, (adv, _), _ in results]
    found = matching_hypothesis(got, [(name, lambda h=h: [h(p, adv) for p, adv in inputs])
                                      for name, h in _RETURNS_HYPOTHESES], atol=_ATOL, rtol=_RTOL)
    if found:
        raise Diagnosis(found)
    i = next(i for i, (g, e) in enumerate(zip(got, expected)) if not reproduces(g, e, atol=_ATOL, rtol=_RTOL))
    case, d = results[i][0], first_difference(expected[i], got[i], ("t", "env"), atol=_ATOL, rtol=_RTOL)
    raise Diagnosis(f"returns should equal advantages + values; in case '{case['name']}' at t={d.index[0]}, env "
                    f"{d.index[1]}: expected {d.expected:.4f}, got {d.got:.4f} ({d.count} of {d.size} entries differ, "
                    f"this is the first); none of the {len({n for n, _ in _RETURNS_HYPOTHESES})} common mistakes tried "
                    "reproduces your returns")


def _compare(run, cases, truncation: bool):
    """Run every case, then diagnose the advantages, then the returns."""
    results = [(case, run(case), _reference(case)) for case in cases]
    _diagnose_advantages(run, results, truncation)
    _diagnose_returns(run, results)


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
    mid-rollout and at the last step, T = 1, several envs, lambda = 0 and 1. When it differs, a mistake of
    ``_GAE_HYPOTHESES`` is named only if it reproduces the advantages on every rollout; otherwise the
    diagnosis is where they first differ (rollout, step, env, inputs) and a measured wrong dependence.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        run = _Runner(compute_gae, zero_final_values=True)
        _compare(run, _basic_cases(), truncation=False)
        return ("equals ppo_course.advantages.compute_gae on 8 rollouts: a cut episode, episode ends mid-rollout and "
                "at the last step, T = 1, several envs, lambda = 0 and 1; returns = advantages + values")

    return run_check("compute_gae", body, hint="loop backwards over t: delta, then A_t = delta_t + gamma * lambda * "
                     "(1 - terminations[t]) * A_{t+1}", quiet=quiet)


# --------------------------------------------------------------------------------------------
# ex03 task 2
# --------------------------------------------------------------------------------------------
def check_gae_with_truncation(compute_gae, quiet: bool = False):
    """Check ``compute_gae(rewards, values, terminations, truncations, next_value, final_values=None, gamma=0.99,
    gae_lambda=0.95) -> (advantages, returns)`` with truncations too (ex03 task 2).

    Contract: as :func:`ppo_course.advantages.compute_gae`: ``(T, N)`` float32 inputs except
    ``next_value`` ``(N,)``; a terminated step bootstraps from nothing, a truncated step from
    ``final_values[t]`` (V of the episode's real last observation), and both stop the recursion;
    the last step bootstraps from ``next_value`` unless it ended an episode. Compared with the
    package on truncations mid-rollout and at the last step, terminations, both in one step,
    several envs, T = 1, lambda = 0 and 1; diagnosed as :func:`check_gae`, with the mistakes of
    ``_TRUNCATION_HYPOTHESES`` tried after those of ``_GAE_HYPOTHESES``.

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
        _compare(run, cases, truncation=True)
        return ("equals ppo_course.advantages.compute_gae on 15 rollouts: truncations mid-rollout and at the last "
                "step (bootstrap from final_values), terminations, both at once, several envs, T = 1, lambda = 0 "
                "and 1; returns = advantages + values")

    return run_check("compute_gae with truncation", body,
                     hint="V(s') is values[t+1], final_values[t] if truncated, next_value at the end; any done stops "
                          "the recursion", quiet=quiet)

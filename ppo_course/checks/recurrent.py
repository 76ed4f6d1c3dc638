"""Checks for ex07 (LSTM sequences: done masking, sequence minibatches, re-unrolling).

The references are the package's own code, so there is one recurrence and one minibatch layout:

* ``masked_lstm_unroll`` is compared with
  :func:`ppo_course.networks.masked_lstm_unroll` (the agent's unroll, which takes the learner's
  features directly) on seeded LSTMs, states and episode starts: one and two layers, T = 1, one env, no starts;
* ``sequence_minibatches`` is compared with :func:`ppo_course.trainer.minibatch_indices`
  (``recurrent=True``), given the learner's own grouping of the environments, and checked for a
  partition of the environments that is reshuffled every epoch;
* ``reunroll_logprobs`` must regenerate, before any gradient step, exactly the log-probabilities
  a small :class:`~ppo_course.networks.RecurrentActorCritic` recorded while it stepped through a
  synthetic rollout whose episodes end mid-rollout (ratio = 1 to float precision).

When the learner's result differs, the check computes the usual mistakes with the package's code
(no masking, masking after the step, masking the whole batch, a zero initial state, flat random
minibatches, ...) and names the first one that reproduces it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ppo_course.networks import RecurrentActorCritic, masked_lstm_unroll
from ppo_course.trainer import minibatch_indices as _reference_minibatch_indices

from ._core import Diagnosis, flags, fmt, raise_if_modified, run_check

__all__ = ["check_masked_lstm_unroll", "check_sequence_minibatches", "check_reunroll_logprobs",
           "make_recurrent_rollout"]

_ATOL = 1e-5


# ============================================================================================
# ex07 task 1: masked_lstm_unroll
# ============================================================================================
def _reference_unroll(lstm: nn.LSTM, features: torch.Tensor, state, starts: torch.Tensor):
    """The package's unroll (:func:`ppo_course.networks.masked_lstm_unroll`): ``(T, N, H)`` outputs, final ``(h, c)``."""
    return masked_lstm_unroll(lstm, features, state, starts)


def _unroll_masking(lstm, features, state, starts, mask_h=True, mask_c=True):
    """A per-step unroll that zeroes only h or only c (two of the mistakes)."""
    h, c = state
    outs = []
    for t in range(features.shape[0]):
        keep = (1.0 - starts[t]).reshape(1, -1, 1)
        h, c = (h * keep if mask_h else h), (c * keep if mask_c else c)
        out, (h, c) = lstm(features[t:t + 1], (h, c))
        outs.append(out)
    return torch.cat(outs), (h, c)


def _unroll_case(name, T, N, F, H, layers, seed, start_at=()):
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lstm = nn.LSTM(F, H, num_layers=layers)
    starts = flags((T, N), start_at)
    state = (torch.randn(layers, N, H, generator=g), torch.randn(layers, N, H, generator=g))
    return dict(name=name, lstm=lstm, features=torch.randn(T, N, F, generator=g), state=state, starts=starts)


def _unroll_cases():
    return [
        _unroll_case("3 envs, episodes starting at t=0 (env 1), t=3 (env 0) and t=5 (env 2)", 6, 3, 5, 7, 1, 1,
                     start_at=[(0, 1), (3, 0), (5, 2)]),
        _unroll_case("a two-layer LSTM, starts at t=0 (env 0) and t=2 (env 1)", 5, 2, 4, 6, 2, 2,
                     start_at=[(0, 0), (2, 1)]),
        _unroll_case("T = 1, env 0 starting an episode", 1, 2, 4, 6, 1, 3, start_at=[(0, 0)]),
        _unroll_case("no episode starts", 4, 2, 3, 5, 1, 4),
        _unroll_case("one env, a start at t=2", 5, 1, 3, 5, 1, 5, start_at=[(2, 0)]),
    ]


def _unroll_variants(c):
    """(name, outputs) of the usual mistakes on case ``c``; most specific first."""
    lstm, x, s, d = c["lstm"], c["features"], c["state"], c["starts"]
    T = d.shape[0]
    shifted = torch.zeros_like(d)
    shifted[1:] = d[:-1]
    first_only = torch.zeros_like(d)
    first_only[0] = d[0]
    whole_batch = d.amax(dim=1, keepdim=True).expand_as(d).contiguous()
    return [
        ("leak", _reference_unroll(lstm, x, s, torch.zeros_like(d))[0]),
        ("first_only", _reference_unroll(lstm, x, s, first_only)[0] if T > 1 else None),
        ("after", _reference_unroll(lstm, x, s, shifted)[0]),
        ("whole_batch", _reference_unroll(lstm, x, s, whole_batch)[0]),
        ("h_only", _unroll_masking(lstm, x, s, d, mask_c=False)[0]),
        ("c_only", _unroll_masking(lstm, x, s, d, mask_h=False)[0]),
    ]


def _starts_desc(starts) -> str:
    where = [(int(t), int(n)) for t, n in torch.nonzero(starts)]
    return ", ".join(f"starts[{t}, {n}] = 1" for t, n in where) or "no starts"


def _call_unroll(masked_lstm_unroll, c):
    """The learner's unroll on case ``c`` (inputs left unchanged): ``(T, N, H)`` outputs with gradients
    and the final ``(h, c)``, each ``(num_layers, N, H)``."""
    T, N, _ = c["features"].shape
    L, H = c["lstm"].num_layers, c["lstm"].hidden_size
    feats, starts = c["features"].clone(), c["starts"].clone()
    state = (c["state"][0].clone(), c["state"][1].clone())
    out = masked_lstm_unroll(c["lstm"], feats, state, starts)
    raise_if_modified([(feats, c["features"], "features"), (starts, c["starts"], "starts"),
                       (state[0], c["state"][0], "lstm_state (h)"), (state[1], c["state"][1], "lstm_state (c)")],
                      "your function modified {name} in place (e.g. h[:, done] = 0); build new tensors "
                      "instead: h = h * (1 - starts[t]).view(1, -1, 1)")
    if (not isinstance(out, (tuple, list)) or len(out) != 2 or not isinstance(out[1], (tuple, list))
            or len(out[1]) != 2):
        raise Diagnosis("return (outputs, (h, c)): the (T, N, H) outputs and the final LSTM state")
    outputs, (h, c_) = out
    if not all(isinstance(t, torch.Tensor) for t in (outputs, h, c_)):
        raise Diagnosis("outputs, h and c should be torch tensors")
    if tuple(outputs.shape) != (T, N, H):
        if tuple(outputs.shape) == (N, T, H):
            raise Diagnosis(f"outputs have shape (N, T, H) = {tuple(outputs.shape)}: keep the rollout's "
                            f"time-major layout (T, N, H) = {(T, N, H)}, as nn.LSTM's default (batch_first=False)")
        if tuple(outputs.shape) == (T, L, N, H) or tuple(outputs.shape) == (T * N, H):
            raise Diagnosis(f"outputs have shape {tuple(outputs.shape)}; return (T, N, H) = {(T, N, H)}: "
                            "one output per step and env (torch.cat the per-step outputs along dim 0)")
        raise Diagnosis(f"outputs should have shape (T, N, H) = {(T, N, H)} in case '{c['name']}', got "
                        f"{tuple(outputs.shape)}")
    for name, t in (("h", h), ("c", c_)):
        if tuple(t.shape) != (L, N, H):
            if tuple(t.shape) == (N, L, H) and L != N:
                raise Diagnosis(f"the final {name} has shape (N, num_layers, H) = {tuple(t.shape)}: nn.LSTM's "
                                f"state layout is (num_layers, N, H) = {(L, N, H)} (the batch is dim 1); "
                                "a batch-first (N, 1, H) array is a storage layout, not the LSTM's")
            raise Diagnosis(f"the final {name} should have shape (num_layers, N, H) = {(L, N, H)} in case "
                            f"'{c['name']}', got {tuple(t.shape)}")
    if not outputs.requires_grad:
        raise Diagnosis("the outputs carry no gradient (torch.no_grad() or .detach() inside?): the PPO loss "
                        "backpropagates through the unroll, into the LSTM and the CNN")
    return outputs, h, c_


def _unroll_mistake(kind: str, name: str, desc: str) -> str:
    """The diagnosis of mistake ``kind`` of :func:`_unroll_variants` in case ``name`` (episode starts ``desc``)."""
    return {
        "leak": f"memory leaking across episodes: in case '{name}' ({desc}) your outputs are "
                "those of an LSTM whose state is never zeroed where an episode starts, so the new "
                "episode remembers the old one; before step t, multiply h and c by (1 - starts[t]) "
                "(one nn.LSTM call over the whole sequence cannot reset in the middle)",
        "first_only": f"the whole sequence goes through nn.LSTM in one call: in case '{name}' "
                      f"({desc}) the state is reset only before the first step; step through time "
                      "and mask before every step",
        "after": f"the mask is applied after the step (off by one): in case '{name}' ({desc}) "
                 "the step where an episode starts still sees the old memory, and the reset happens "
                 "one step later; starts[t] = 1 means features[t] is a new episode's first step, so "
                 "zero the state before feeding features[t]",
        "whole_batch": f"the mask resets the whole batch: in case '{name}' ({desc}) every env's "
                       "memory is zeroed when any env starts an episode; mask per env, h * (1 - "
                       "starts[t]).view(1, N, 1)",
        "h_only": f"only h is zeroed where an episode starts (case '{name}', {desc}); the cell "
                  "state c carries the old episode's memory: zero both",
        "c_only": f"only c is zeroed where an episode starts (case '{name}', {desc}); zero h too",
    }[kind]


def _diagnose_unroll(outputs, ref_out, c) -> None:
    """The usual mistake that reproduces the learner's outputs on case ``c``, else where they differ."""
    with torch.no_grad():
        variants = _unroll_variants(c)
    for kind, v in variants:
        if v is None or torch.allclose(v, ref_out, atol=_ATOL):
            continue  # this mistake makes no difference in this case
        if not torch.allclose(outputs, v, atol=_ATOL):
            continue
        raise Diagnosis(_unroll_mistake(kind, c["name"], _starts_desc(c["starts"])))
    N = ref_out.shape[1]
    t, n = divmod(int((outputs - ref_out).abs().amax(dim=-1).argmax()), N)
    raise Diagnosis(f"outputs differ in case '{c['name']}' ({_starts_desc(c['starts'])}): first at t={t}, "
                    f"env {n}: expected {fmt(ref_out[t, n, :3])}..., got {fmt(outputs[t, n, :3])}...")


def _diagnose_final_state(h, ref_h, c) -> None:
    """The outputs are right but the final (h, c) is not."""
    last = c["starts"][-1]
    keep = (1 - last).view(1, -1, 1)
    if last.any() and torch.allclose(h, ref_h * keep, atol=_ATOL):
        raise Diagnosis(f"the outputs are right but the final state is masked with the last step's starts "
                        f"(case '{c['name']}'); return the state after the last step, unmasked: the next "
                        "call masks it with its own starts")
    raise Diagnosis(f"the outputs are right but the final (h, c) is not the state after the last step "
                    f"(case '{c['name']}'); return the (h, c) that nn.LSTM gave for step T-1")


def _check_gradient_through_time(masked_lstm_unroll, c) -> None:
    """The last step's outputs must carry gradient back to every earlier step's features, as the package's do
    (the update backpropagates through the whole sequence): a ``.detach()`` of ``(h, c)`` between steps keeps
    every output's value and cuts that path."""
    def grad_of_last(fn):
        feats = c["features"].clone().requires_grad_(True)
        out, _ = fn(c["lstm"], feats, (c["state"][0].clone(), c["state"][1].clone()), c["starts"].clone())
        (g,) = torch.autograd.grad(out[-1].sum(), feats, allow_unused=True)
        return torch.zeros_like(feats) if g is None else g

    got, ref = grad_of_last(masked_lstm_unroll), grad_of_last(_reference_unroll)
    if torch.allclose(got, ref, atol=1e-5):
        return
    T = ref.shape[0]
    if T > 1 and float(got[:-1].abs().max()) == 0.0 < float(ref[:-1].abs().max()):
        raise Diagnosis(f"no gradient flows back through time (case '{c['name']}'): the last step's outputs do "
                        "not depend, for autograd, on any earlier step's features. Is (h, c) detached between "
                        "steps? The values stay right, but the PPO loss must reach the earlier steps through the "
                        "memory: truncated backpropagation through time over the whole rollout")
    t, n = divmod(int((got - ref).abs().amax(dim=-1).argmax()), ref.shape[1])
    raise Diagnosis(f"the outputs are right but their gradient is not (case '{c['name']}'): d outputs[T-1] / "
                    f"d features[{t}, env {n}] is {fmt(got[t, n, :3])}..., expected {fmt(ref[t, n, :3])}...")


def check_masked_lstm_unroll(masked_lstm_unroll, quiet: bool = False):
    """Check ``masked_lstm_unroll(lstm, features, lstm_state, starts) -> (outputs, (h, c))``.

    Contract: ``lstm`` is an ``nn.LSTM(F, H, num_layers)`` (time-major); ``features`` is
    ``(T, N, F)`` float32; ``lstm_state`` is ``(h, c)``, each ``(num_layers, N, H)`` (PyTorch's
    layout), the memory before step 0; ``starts`` is ``(T, N)`` float32, 1.0 where ``features[t]``
    is the first step of a new episode. Step through time; before step t, zero ``h`` and ``c`` of
    every env whose ``starts[t]`` is 1 (the convention of
    :func:`ppo_course.networks.masked_lstm_unroll`), then advance the LSTM one step.
    Returns the ``(T, N, H)`` outputs and the final ``(h, c)`` (each ``(num_layers, N, H)``), with
    gradients (the loss backpropagates through them, back through time); inputs left unchanged. Compared
    with the package's ``masked_lstm_unroll`` on 5 cases (one and two layers, T = 1, one env, no starts),
    values and the gradient of the last step's outputs with respect to every step's features.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        cases = _unroll_cases()
        for c in cases:
            outputs, h, c_ = _call_unroll(masked_lstm_unroll, c)
            ref_out, (ref_h, ref_c) = _reference_unroll(c["lstm"], c["features"], c["state"], c["starts"])
            outputs, h, c_ = outputs.detach(), h.detach(), c_.detach()
            ref_out, ref_h, ref_c = ref_out.detach(), ref_h.detach(), ref_c.detach()
            if not torch.allclose(outputs, ref_out, atol=_ATOL):
                _diagnose_unroll(outputs, ref_out, c)
            if not (torch.allclose(h, ref_h, atol=_ATOL) and torch.allclose(c_, ref_c, atol=_ATOL)):
                _diagnose_final_state(h, ref_h, c)
            _check_gradient_through_time(masked_lstm_unroll, c)
        return ("equals the package's masked_lstm_unroll on 5 cases (1 and 2 layers, T = 1, one env, no starts): "
                "(T, N, H) outputs and final (h, c), state zeroed per env before the step where starts = 1, "
                "gradients through time as the package's")

    return run_check("masked_lstm_unroll", body,
                     hint="for each t: mask h and c with (1 - starts[t]).view(1, -1, 1), then lstm(features[t:t+1], (h, c))",
                     quiet=quiet)


# ============================================================================================
# ex07 task 2: sequence_minibatches
# ============================================================================================
class _GivenOrder:
    """An rng whose ``permutation`` returns a given order (to ask the package for its layout)."""

    def __init__(self, order):
        self.order = np.asarray(order)

    def permutation(self, n):
        return self.order.copy()


def _as_index(x, what) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(x, (list, tuple)):
        x = torch.as_tensor(x)
    if not isinstance(x, torch.Tensor):
        raise Diagnosis(f"{what} should be a tensor of indices, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise Diagnosis(f"{what} should hold integer indices (torch.long), got {x.dtype}")
    if x.dim() != 1:
        raise Diagnosis(f"{what} should be 1-D, got shape {tuple(x.shape)}")
    return x.long()


def _minibatches(fn, T, N, M, rng):
    out = fn(T, N, M, rng)
    try:
        out = list(out)
    except TypeError:
        raise Diagnosis("return a list of (flat_indices, env_indices) pairs, one per minibatch") from None
    pairs = []
    for i, pair in enumerate(out):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise Diagnosis("each minibatch should be a pair (flat_indices, env_indices)")
        pairs.append((_as_index(pair[0], f"flat_indices of minibatch {i}"),
                      _as_index(pair[1], f"env_indices of minibatch {i}")))
    return pairs


def _check_partition(pairs, T: int, N: int, M: int) -> None:
    """M minibatches of whole env sequences whose env groups partition the N envs."""
    if len(pairs) != M:
        raise Diagnosis(f"with num_envs = {N} and num_minibatches = {M} you returned {len(pairs)} "
                        f"minibatches; return {M}, each of N // M = {N // M} whole env sequences")
    envs = [e.tolist() for _, e in pairs]
    flat_all = torch.cat([f for f, _ in pairs])
    cols = sorted(set((flat_all % N).tolist()))
    first_flat, first_envs = pairs[0]
    first_cols = (first_flat % N).tolist()
    whole = (all(first_cols.count(n) == T for n in set(first_cols))
             and len(set(first_cols)) * T == len(first_cols))
    if not whole or set(first_cols) != set(first_envs.tolist()):
        _check_stride(first_flat, first_envs, T, N)
        steps = sorted({(int(i) // N, int(i) % N) for i in first_flat.tolist()})[:4]
        raise Diagnosis(f"flat-minibatch unrolling: minibatch 0 (T = {T}, N = {N}) holds scattered (step, "
                        f"env) samples such as {steps} instead of whole env sequences; an LSTM can only "
                        "re-create the rollout's memory by stepping through every step of an env in "
                        "order, so a minibatch must be all T steps of a group of envs (permute the envs, "
                        "not the T * N samples)")
    flat_envs = sorted(e for group in envs for e in group)
    if len(set(flat_envs)) != len(flat_envs):
        dup = next(e for e in flat_envs if flat_envs.count(e) > 1)
        raise Diagnosis(f"env {dup} appears in more than one minibatch (T = {T}, N = {N}, M = {M}): "
                        f"{envs}; split one permutation of the N envs into M groups")
    if flat_envs != list(range(N)):
        missing = sorted(set(range(N)) - set(flat_envs))
        raise Diagnosis(f"envs {missing} are in no minibatch (N = {N}, M = {M}, groups {envs}); every env "
                        "must be in exactly one minibatch each epoch")
    if len(flat_all) != T * N or cols != list(range(N)):
        raise Diagnosis(f"the minibatches' flat indices should cover each of the T * N = {T * N} samples "
                        "exactly once")


def _check_stride(flat: torch.Tensor, env: torch.Tensor, T: int, N: int) -> None:
    """Whole sequences laid out with the wrong step between rows: flat = t * stride + env_indices[j] (time-major)
    or env_indices[j] * stride + t (env-major) for a stride other than N."""
    t = torch.arange(T)
    for stride in dict.fromkeys([T, N - 1, N + 1, len(env), 1]):
        if stride == N or stride < 1:
            continue
        for layout, candidate in (("time-major", (t[:, None] * stride + env[None, :]).reshape(-1)),
                                  ("env-major", (env[:, None] * stride + t[None, :]).reshape(-1))):
            if candidate.shape == flat.shape and torch.equal(flat, candidate):
                raise Diagnosis(f"the flat indices step by {stride} from one time step to the next ({layout}, "
                                f"T = {T}, N = {N}): the rollout is flattened as (T, N), so sample (t, env) sits "
                                f"at t * N + env; use (torch.arange(T)[:, None] * N + env_indices).reshape(-1)")


def _check_layout(pairs, T: int, N: int, M: int) -> None:
    """Each minibatch's flat indices are the package's for its env group: time-major."""
    order = np.concatenate([np.asarray(e.tolist(), dtype=np.int64) for _, e in pairs])
    ref = list(_reference_minibatch_indices(_GivenOrder(order), T, N, M, recurrent=True))
    for i, ((flat, env), (ref_flat, ref_env)) in enumerate(zip(pairs, ref)):
        if torch.equal(flat, ref_flat.cpu()):
            continue
        env_major = (env[:, None] + torch.arange(T)[None, :] * N).reshape(-1)
        if torch.equal(flat, env_major) and T > 1:
            raise Diagnosis(f"minibatch {i} is env-major (all steps of env {int(env[0])}, then the next "
                            "env); the unroll expects time-major rows, entry t * len(env_indices) + j = "
                            "t * N + env_indices[j]: (torch.arange(T)[:, None] * N + env_indices).reshape(-1)")
        raise Diagnosis(f"minibatch {i} with env_indices {env.tolist()} (T = {T}, N = {N}) should have "
                        f"flat_indices {ref_flat.tolist()}, got {flat.tolist()}")


def _check_shuffled(epochs, T: int, N: int, M: int) -> None:
    """Several epochs do not all give the same groups in the same order. Only which envs share a minibatch, and
    the order of the minibatches, change the update: the order of the envs inside a group does not (sorted
    groups are fine), and with M = 1 there is nothing to shuffle."""
    groups = [[tuple(e.tolist()) for _, e in pairs] for pairs in epochs]
    if M > 1:
        orders = [tuple(frozenset(g) for g in gs) for gs in groups]
        if len(set(orders)) == 1 and N >= 4:
            raise Diagnosis(f"the minibatches are not shuffled: 4 epochs (T = {T}, N = {N}, M = {M}) all "
                            f"give the groups {groups[0]}; permute the envs with rng.permutation(num_envs) each "
                            "call, so that each epoch's gradient steps see different groups in a different "
                            "order")


def check_sequence_minibatches(sequence_minibatches, quiet: bool = False):
    """Check ``sequence_minibatches(num_steps, num_envs, num_minibatches, rng) -> [(flat_indices, env_indices), ...]``.

    Contract: a rollout holds ``num_steps`` (T) steps of ``num_envs`` (N) environments, flattened
    time-major: row ``t * N + n`` of the ``(T * N, ...)`` batch is env n at step t.
    ``num_minibatches`` (M) divides N. Return M pairs, one per minibatch: ``env_indices``, a 1-D
    int64 tensor of ``N // M`` environments (the M groups partition the environments, shuffled with
    ``rng``, a ``numpy.random.Generator``: different each call, reproducible from its seed), and
    ``flat_indices``, every step of those environments, time-major: ``(T * N // M,)`` int64 with
    entry ``t * (N // M) + j`` = ``t * N + env_indices[j]``, so that an LSTM can unroll it from
    ``initial_state[:, env_indices]``. Compared with :func:`ppo_course.trainer.minibatch_indices`
    (``recurrent=True``) on 4 shapes (M = 1 and M = N included), over several epochs.

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        shapes = [(5, 8, 4), (3, 6, 1), (4, 4, 4), (1, 6, 3), (6, 12, 3)]
        for T, N, M in shapes:
            epochs = [_minibatches(sequence_minibatches, T, N, M, rng)
                      for rng in [np.random.default_rng(7)] for _ in range(4)]
            for pairs in epochs:
                _check_partition(pairs, T, N, M)
                _check_layout(pairs, T, N, M)
            _check_shuffled(epochs, T, N, M)
            again = [_minibatches(sequence_minibatches, T, N, M, np.random.default_rng(7)) for _ in range(2)]
            if [e.tolist() for _, e in again[0]] != [e.tolist() for _, e in again[1]]:
                raise Diagnosis("two calls with rngs seeded alike gave different minibatches: shuffle with the rng "
                                "you are given (rng.permutation(num_envs)), not np.random or torch.randperm, so that "
                                "a run can be reproduced from its seed")
        return ("matches ppo_course.trainer.minibatch_indices (recurrent) on 5 shapes (M = 1 and M = N included): M "
                "groups partitioning the envs, whole time-major sequences, reshuffled each epoch, reproducible "
                "from the rng")

    return run_check("sequence_minibatches", body,
                     hint="split rng.permutation(num_envs) into M groups; flat = (arange(T)[:, None] * N + group).reshape(-1)",
                     quiet=quiet)


# ============================================================================================
# ex07 task 3: reunroll_logprobs
# ============================================================================================
def make_recurrent_rollout(num_steps: int = 8, num_envs: int = 4, obs_shape=(2, 36, 36), n_actions: int = 3,
                           seed: int = 0):
    """A synthetic recurrent rollout, recorded as the trainer's collector records one.

    A small :class:`~ppo_course.networks.RecurrentActorCritic` (hidden 16) steps through random
    uint8 frames one step at a time, carrying its LSTM state (its actor head has gain 3, so that the
    log-probabilities depend visibly on the memory); episodes start at t = 0 in env 1 and
    mid-rollout elsewhere, and the rollout starts from a non-zero memory (the agent has already
    played 3 steps).

    Returns:
        dict with ``agent``, ``obs`` ``(T, N, C, H, W)`` uint8, ``actions`` ``(T, N)`` int64,
        ``logprobs`` ``(T, N)`` float32 (recorded while stepping), ``starts`` ``(T, N)`` float32
        (1.0 where ``obs[t]`` begins an episode), ``initial_state`` ``(h, c)`` each
        ``(1, N, 16)`` (the memory before step 0), and ``step_states``, the ``(h, c)`` before
        each step (the state an implementation that stores the memory per sample would keep).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        agent = RecurrentActorCritic(obs_shape, n_actions, lstm_hidden_size=16, features_dim=32)
        # A freshly initialised actor (gain 0.01) is almost uniform whatever its memory, which would hide a
        # wrong state; give it the sharper logits of an agent that has learnt something.
        nn.init.orthogonal_(agent.actor_head.weight, gain=3.0)
        T, N = num_steps, num_envs
        obs = torch.randint(0, 256, (T, N, *obs_shape), generator=g, dtype=torch.uint8)
        starts = torch.zeros(T, N)
        for t, n in [(0, 1), (3, 0), (2, 1), (5, 2), (7, 3), (6, 1)]:
            if t < T and n < N:
                starts[t, n] = 1.0
        with torch.no_grad():
            state = agent.initial_state(N)
            for _ in range(3):  # warm-up: the rollout starts mid-episode with a non-zero memory
                warm = torch.randint(0, 256, (N, *obs_shape), generator=g, dtype=torch.uint8)
                state = agent.get_action_and_value(warm, state, torch.zeros(N)).lstm_state
            initial_state = state
            actions, logprobs, step_states = [], [], []
            for t in range(T):
                step_states.append(state)
                out = agent.get_action_and_value(obs[t], state, starts[t])
                actions.append(out.action)
                logprobs.append(out.logprob)
                state = out.lstm_state
    return dict(agent=agent, obs=obs, actions=torch.stack(actions), logprobs=torch.stack(logprobs), starts=starts,
                initial_state=initial_state, step_states=step_states)


def _reunroll_reference(agent, r, env_idx, state=None, starts=None, selected_state=None):
    """The package's re-unroll (as ppo_update): log-probs ``(T * n,)`` time-major. ``state``: a full
    ``(1, N, hidden)`` state to use instead of the stored one; ``selected_state``: the minibatch's own."""
    idx = env_idx
    h0, c0 = r["initial_state"] if state is None else state
    starts = r["starts"] if starts is None else starts
    obs, acts = r["obs"][:, idx], r["actions"][:, idx]
    return agent.get_action_and_value(obs.reshape(-1, *obs.shape[2:]),
                                      (h0[:, idx], c0[:, idx]) if selected_state is None else selected_state,
                                      starts[:, idx].reshape(-1), acts.reshape(-1)).logprob


def _call_reunroll(reunroll_logprobs, r, env_idx) -> torch.Tensor:
    """The learner's re-unroll of rollout ``r`` for ``env_idx`` (inputs left unchanged): time-major
    log-probs with gradients, returned detached and flat ``(T * n,)``."""
    T = r["actions"].shape[0]
    group, n = env_idx.tolist(), len(env_idx)
    inputs = [r["obs"].clone(), r["actions"].clone(), r["starts"].clone(),
              (r["initial_state"][0].clone(), r["initial_state"][1].clone()), env_idx.clone()]
    new = reunroll_logprobs(r["agent"], *inputs)
    raise_if_modified([(inputs[0], r["obs"], "obs"), (inputs[1], r["actions"], "actions"),
                       (inputs[2], r["starts"], "starts"), (inputs[3][0], r["initial_state"][0], "h"),
                       (inputs[3][1], r["initial_state"][1], "c"), (inputs[4], env_idx, "env_idx")],
                      "your function modified {name} in place; the rollout is reused for every "
                      "epoch and minibatch, so leave it unchanged")
    if not isinstance(new, torch.Tensor):
        raise Diagnosis(f"return a tensor of log-probabilities, got {type(new).__name__}")
    if tuple(new.shape) == (n, T) and n != T:
        raise Diagnosis(f"the log-probs have shape (n_envs, T) = {tuple(new.shape)}: env-major; return them "
                        f"time-major, (T * n_envs,) or (T, n_envs) = {(T, n)}")
    if tuple(new.shape) not in ((T * n,), (T, n)):
        raise Diagnosis(f"for env_idx = {group} the log-probs should have shape (T * n_envs,) = ({T * n},), "
                        f"got {tuple(new.shape)}")
    if not new.requires_grad:
        raise Diagnosis("the log-probs carry no gradient (torch.no_grad() or .detach() inside?): the PPO loss "
                        "backpropagates through them")
    return new.detach().reshape(-1)


def _reunroll_variants(r, env_idx, group: list[int]) -> list:
    """(log-probs, diagnosis) of the usual mistakes for minibatch ``env_idx`` (None where a mistake
    makes no difference)."""
    agent, n = r["agent"], len(group)
    zeros = agent.initial_state(r["actions"].shape[1])
    h0, c0 = r["initial_state"]
    return [
        (_reunroll_reference(agent, r, env_idx, state=zeros),
         "re-unrolled from a zero state instead of the stored initial state: the rollout started "
         "mid-episode with a memory (initial_state), so the first steps' log-probs differ; unroll from "
         "(h0[:, env_idx], c0[:, env_idx])"),
        (_reunroll_reference(agent, r, env_idx, starts=torch.zeros_like(r["starts"])),
         "the episode starts are ignored (done masks all 0): memory leaking across episodes, the "
         "re-unroll carries the previous episode's memory into the next one, which the rollout did not; "
         "pass starts[:, env_idx].reshape(-1) as done"),
        (_reunroll_reference(agent, r, torch.arange(n), state=None) if group != list(range(n)) else None,
         "the minibatch uses envs 0..n-1 instead of env_idx (observations, actions, starts or the "
         "initial state not indexed with env_idx)"),
        (_reunroll_reference(agent, r, env_idx,
                             selected_state=(h0[:, torch.arange(n)], c0[:, torch.arange(n)]))
         if group != list(range(n)) else None,
         "the initial state is not selected with env_idx: use (h0[:, env_idx], c0[:, env_idx]) (the "
         "LSTM state is (num_layers, N, hidden): envs are dim 1)"),
    ]


def _env_major_logprobs(r, env_idx):
    """The log-probs of the minibatch flattened env-major (all steps of one env, then the next)."""
    h0, c0 = r["initial_state"]
    obs = r["obs"][:, env_idx].transpose(0, 1).reshape(-1, *r["obs"].shape[2:])
    return r["agent"].get_action_and_value(
        obs, (h0[:, env_idx], c0[:, env_idx]), r["starts"][:, env_idx].T.reshape(-1),
        r["actions"][:, env_idx].T.reshape(-1)).logprob


def _diagnose_reunroll(new, ratio, r, env_idx) -> None:
    """The usual mistake that reproduces the learner's log-probs, else where the ratio is furthest from 1."""
    group, n = env_idx.tolist(), len(env_idx)
    T = r["actions"].shape[0]
    with torch.no_grad():
        variants = _reunroll_variants(r, env_idx, group)
        flat_env_major = _env_major_logprobs(r, env_idx) if n > 1 else None
    for variant, message in variants:
        if variant is not None and torch.allclose(new, variant.reshape(-1), atol=1e-4):
            raise Diagnosis(message)
    if flat_env_major is not None and (torch.allclose(new, flat_env_major, atol=1e-4)
                                       or torch.allclose(new, flat_env_major.reshape(n, T).T.reshape(-1),
                                                         atol=1e-4)):
        raise Diagnosis("the minibatch is flattened env-major (all steps of one env, then the next): the "
                        "agent reads its input time-major, row t * n + j = env env_idx[j] at step t, so "
                        "its unroll mixes envs; index obs[:, env_idx] and reshape(-1, C, H, W) without "
                        "transposing")
    k = int((ratio - 1).abs().argmax())
    t, j = divmod(k, n)
    raise Diagnosis(f"the ratio exp(new - old) should be 1 before any update; for env_idx = {group} it is "
                    f"{float(ratio[k]):.4f} at t={t}, env {group[j]} (max |ratio - 1| = "
                    f"{float((ratio - 1).abs().max()):.3g}); re-unroll from initial_state[:, env_idx] "
                    "with starts[:, env_idx] as done, time-major")


def check_reunroll_logprobs(reunroll_logprobs, quiet: bool = False):
    """Check ``reunroll_logprobs(agent, obs, actions, starts, initial_state, env_idx) -> new_logprobs``.

    Contract: ``agent`` is a :class:`~ppo_course.networks.RecurrentActorCritic`; ``obs`` is
    ``(T, N, C, H, W)`` uint8, ``actions`` ``(T, N)`` int64, ``starts`` ``(T, N)`` float32 (1.0
    where ``obs[t]`` begins an episode), ``initial_state`` ``(h, c)`` each ``(1, N, hidden)``: the
    LSTM state the rollout started from; ``env_idx`` a 1-D int64 tensor, the minibatch's
    environments. Re-unroll the agent over all T steps of those environments from their stored
    initial state with the episode-start masks and return the log-probabilities of the taken
    actions, ``(T * len(env_idx),)`` time-major (as ``agent.get_action_and_value`` returns them;
    ``(T, len(env_idx))`` is accepted too), with gradients. Before any gradient step they must
    equal the log-probabilities recorded while the agent stepped through the rollout: the ratio
    ``exp(new - old)`` is 1 (checked on :func:`make_recurrent_rollout`'s rollout, T = 8, N = 4, for
    minibatches of 2, 1 and 4 envs, in shuffled orders).

    Returns:
        The :class:`~ppo_course.checks.CheckResult` (printed unless ``quiet``).
    """

    def body():
        r = make_recurrent_rollout()
        groups = [[2, 0], [3, 1], [1], [3, 0, 2, 1]]
        for group in groups:
            env_idx = torch.tensor(group)
            new = _call_reunroll(reunroll_logprobs, r, env_idx)
            old = r["logprobs"][:, env_idx].reshape(-1)
            ratio = torch.exp(new - old)
            if float((ratio - 1).abs().max()) <= 1e-4:
                continue
            _diagnose_reunroll(new, ratio, r, env_idx)
        return ("ratio = 1 (|ratio - 1| <= 1e-4) against the log-probs recorded while stepping, for minibatches of "
                "2, 1 and 4 envs of a rollout that starts from a non-zero memory and has episodes starting mid-rollout")

    return run_check("reunroll_logprobs", body,
                     hint="index obs, actions, starts and the state with env_idx (state: dim 1), flatten time-major, "
                          "call agent.get_action_and_value",
                     quiet=quiet)

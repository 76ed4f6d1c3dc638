"""Checks for ex05 (the training loop): the learner's ``ppo_update`` and their trained agent.

:func:`check_ppo_update` gives the learner's update exactly what :func:`ppo_course.trainer.ppo_update`
takes -- an agent and its optimiser, a :class:`~ppo_course.buffer.RolloutBuffer` from a real short
rollout, its GAE advantages and returns, a :class:`~ppo_course.config.PPOConfig`, ``ent_coef`` and a
NumPy generator -- and watches it run on copies: the loss function it calls (``ppo_loss`` in the
learner's namespace) is swapped for a recording wrapper around :func:`ppo_course.losses.ppo_loss` (so a
mistake in their loss does not blur the diagnosis of their loop), the network records which
observations it is asked about, and the optimiser records the gradient it steps with. From that it
can say *which* part of the loop is wrong -- shuffling, indexing, old log-probs, coefficients,
zero_grad, clipping, the early stop at ``target_kl`` -- before comparing the final weights and the
returned ``approx_kl`` with the package's ``ppo_update`` run on copies of the same agent and
optimiser with an identically seeded generator (so the same permutations).

:func:`check_training_improves` evaluates the learner's trained agent against a uniformly
random policy on the same fixed-seed episodes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from .. import losses as ref
from ..advantages import compute_gae
from ..buffer import RolloutBuffer
from ..config import PPOConfig
from ..course import fast_mode
from ..evaluate import EVAL_SEED, EvalResult, evaluate_policy
from ..networks import MLPActorCritic
from ..trainer import ppo_update as reference_ppo_update
from ._core import CheckResult, Diagnosis, close, raise_if_modified, run_check

__all__ = ["check_ppo_update", "check_training_improves", "make_update_rollout"]

#: The rollout the update check learns from: 4 LunarLander-v3 environments × 8 steps, a batch of 32.
_ENV_ID, _NUM_ENVS, _NUM_STEPS = "LunarLander-v3", 4, 8
#: The two updates it runs (``seed``: of the NumPy generator that shuffles). In the second, the epochs' mean
#: approx_kl is about 0.001, 0.02, 0.03, 0.02 without a target, so target_kl = 0.01 stops it after 2 of 4 epochs.
_CASES = (dict(update_epochs=3, num_minibatches=4, target_kl=None, seed=0),
          dict(update_epochs=4, num_minibatches=2, target_kl=0.01, seed=1))
#: Adam's learning rate (large, so that the ratios move and the clip acts within a few steps); max_grad_norm
#: below the gradients' norms (about 1), so that clipping acts; an ent_coef unlike config.ent_coef (0.01), as
#: a schedule would give.
_LR, _MAX_GRAD_NORM, _ENT_COEF = 0.01, 0.5, 0.02


def make_update_rollout(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, RolloutBuffer, torch.Tensor,
                                                torch.Tensor]:
    """A small :class:`MLPActorCritic`, its Adam optimiser, and one real rollout it collected, with its GAE.

    As in notebook 07, only smaller: 4 LunarLander-v3 environments × 8 steps from the package's
    ``RolloutCollector`` (first reset seeded with ``seed``), advantages and returns from
    :func:`ppo_course.advantages.compute_gae` (γ = 0.99, λ = 0.95). The global PyTorch generator is
    left as it was.

    Returns:
        ``(agent, optimizer, buf, advantages, returns)``: ``buf`` a :class:`RolloutBuffer` of ``(8, 4, ...)``
        tensors, ``advantages`` and ``returns`` ``(8, 4)`` float32.
    """
    from ..envs import make_vector_env
    from ..rollout import RolloutCollector

    envs = make_vector_env(_ENV_ID, _NUM_ENVS)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            agent = MLPActorCritic(envs.single_observation_space.shape[0], int(envs.single_action_space.n),
                                   hidden_size=16)
            buf, next_value = RolloutCollector(envs, agent, _NUM_STEPS, seed=seed).collect()
    finally:
        envs.close()
    advantages, returns = compute_gae(buf.rewards, buf.values, buf.terminations, buf.truncations, next_value,
                                      buf.final_values, gamma=0.99, gae_lambda=0.95)
    optimizer = torch.optim.Adam(agent.parameters(), lr=_LR, eps=1e-5)
    return agent, optimizer, buf, advantages, returns


def _config(case: dict) -> PPOConfig:
    return PPOConfig(env_id=_ENV_ID, num_envs=_NUM_ENVS, num_steps=_NUM_STEPS, update_epochs=case["update_epochs"],
                     num_minibatches=case["num_minibatches"], target_kl=case["target_kl"], clip_coef=0.2,
                     vf_coef=0.5, ent_coef=0.01, max_grad_norm=_MAX_GRAD_NORM, clip_vloss=True, norm_adv=True)


def _reference(agent, optimizer, rollout, config, seed) -> tuple[list[torch.Tensor], list[list[tuple[float, float]]]]:
    """The package's update on copies: the final weights, and for each epoch done the ``(k3, naive)``
    approx_kl estimates of each of its minibatches (before that minibatch's step)."""
    agent, optimizer = copy.deepcopy((agent, optimizer))
    kls: list[list[tuple[float, float]]] = [[] for _ in range(config.update_epochs)]

    def record(epoch: int, minibatch: int, ratio: torch.Tensor) -> None:
        ratio = ratio.double()
        kls[epoch].append((((ratio - 1) - ratio.log()).mean().item(), (-ratio.log()).mean().item()))

    stats = reference_ppo_update(agent, optimizer, *rollout, config, _ENT_COEF, np.random.default_rng(seed),
                                 on_minibatch=record)
    return [p.detach().clone() for p in agent.parameters()], kls[:stats.epochs_done]


def _rows(values: torch.Tensor, table: torch.Tensor, idx: list[int] | None = None) -> list[int] | None:
    """Indices i such that values[j] == table[i] (rows or scalars), or None if some value is no row.
    ``idx`` is tried first, so that equal values in the table do not blur which rows were taken."""
    values, table = values.detach(), table.detach()
    if idx is not None and values.shape == table[idx].shape and torch.equal(values, table[idx]):
        return idx
    if values.dim() == 0 or values.shape[1:] != table.shape[1:] or values.numel() == 0:
        return None
    eq = (values.reshape(len(values), 1, -1) == table.reshape(1, len(table), -1)).all(-1)
    return eq.float().argmax(1).tolist() if bool(eq.any(1).all()) else None


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _check_step_count(steps: int, config: PPOConfig, epochs_done: int) -> None:
    """One optimizer step per minibatch of every epoch done; the epochs stop early past target_kl."""
    epochs, m = config.update_epochs, config.num_minibatches
    expected = epochs_done * m
    if steps == expected:
        return
    if epochs_done == epochs:
        raise Diagnosis(f"optimizer.step() ran {steps} times, expected update_epochs × num_minibatches = "
                        f"{epochs} × {m} = {expected} (one step per minibatch, every epoch)")
    stop = (f"with config.target_kl = {config.target_kl:g} the update stops after {epochs_done} of its {epochs} "
            f"epochs ({epochs_done} × {m} = {expected} steps), when the mean approx_kl of an epoch's minibatches "
            "exceeds target_kl")
    if steps == epochs * m:
        raise Diagnosis(f"no early stop: {stop}, but yours ran all {epochs} epochs — after each epoch, break out of "
                        "the epoch loop if config.target_kl is not None and that mean > config.target_kl")
    raise Diagnosis(f"optimizer.step() ran {steps} times: {stop} — test that mean after each whole epoch (not after "
                    "each minibatch), with approx_kl = mean((r - 1) - log r) of each minibatch")


def _describe_loop(spy, b, config, epochs_done, seed) -> None:
    """Raise a Diagnosis for the first thing the recorded run did wrong (or return quietly)."""
    losses, steps = spy["losses"], spy["steps"]
    _check_step_count(len(steps), config, epochs_done)
    if not losses:
        return  # the learner's loss is not called `ppo_loss`: only the final weights can tell
    if len(losses) != len(steps):
        raise Diagnosis(f"ppo_loss was called {len(losses)} times for {len(steps)} optimizer steps: compute "
                        "one loss per minibatch, inside the loop")
    norm_all = ref.normalize_advantages(b["advantages"])
    m = config.num_minibatches
    minibatches = [_minibatch_rows(spy, k, b, norm_all, config) for k in range(len(losses))]
    _check_epochs(minibatches, len(b["obs"]), m, seed)
    _check_gradients(losses, steps, m, config.max_grad_norm)


def _minibatch_rows(spy, k, b, norm_all, config) -> list[int]:
    """The rows of the flat batch ``b`` used by the k-th ppo_loss call, after checking that every tensor passed
    to it is indexed with them (old log-probs from the rollout, raw advantages, the rollout's actions)."""
    rec, forwards = spy["losses"][k], spy["forwards"]
    where = f"(epoch {k // config.num_minibatches}, minibatch {k % config.num_minibatches})"
    size = len(rec["new_logprobs"]) if rec["new_logprobs"].dim() else 1
    if size != config.minibatch_size:
        raise Diagnosis(f"ppo_loss got a minibatch of {size} samples {where}, expected config.minibatch_size = "
                        f"{config.minibatch_size}: take idx = order[start:start + config.minibatch_size] for start in "
                        "range(0, config.batch_size, config.minibatch_size)")
    _check_loss_gradients(rec, where)
    idx_obs = _rows(forwards[k]["x"], b["obs"]) if len(forwards) == len(spy["losses"]) else None
    _check_coefficients(rec, config, where)
    stored = _rows(rec["old_logprobs"], b["logprobs"], idx_obs) is not None
    if rec["old_logprobs_requires_grad"] or (not stored and rec["old_logprobs"].shape == rec["new_logprobs"].shape
                                             and torch.equal(rec["old_logprobs"], rec["new_logprobs"])):
        raise Diagnosis(f"the old log-probs passed to ppo_loss are the new ones {where}: the ratio is always 1 "
                        "and clipping never acts — pass b['logprobs'][idx], recorded during the rollout")
    named = {"advantages": _advantage_rows(rec, b, norm_all, idx_obs, where),
             "old log-probs": _rows(rec["old_logprobs"], b["logprobs"], idx_obs),
             "old values": _rows(rec["old_values"], b["values"], idx_obs),
             "returns": _rows(rec["returns"], b["returns"], idx_obs)}
    for name, idx in named.items():
        if idx is None:
            source = {"old log-probs": "logprobs", "old values": "values"}.get(name, name)
            raise Diagnosis(f"the {name} passed to ppo_loss {where} are not rows of the rollout's {source}: take "
                            f"them from b = buf.flatten(advantages=advantages, returns=returns), b['{source}'][idx]")
    reference_idx = idx_obs if idx_obs is not None else named["advantages"]
    for name, idx in named.items():
        if idx != reference_idx:
            first = "observations" if idx_obs is not None else "advantages"
            raise Diagnosis(f"tensors indexed with different minibatch indices {where}: the {first} are rows "
                            f"{reference_idx[:4]}… but the {name} are rows {idx[:4]}… — index every tensor "
                            "with the same idx")
    action = forwards[k]["action"] if idx_obs is not None else None
    if idx_obs is not None and (action is None or not torch.equal(action, b["actions"][idx_obs])):
        raise Diagnosis(f"the network scores actions that are not the rollout's {where}: call "
                        "agent.get_action_and_value(b['obs'][idx], b['actions'][idx]) — without the actions "
                        "it samples new ones")
    return reference_idx


def _check_loss_gradients(rec, where) -> None:
    """What the network computes now (new log-probs, new values, entropy) carries gradient; the rollout's old
    values do not (old log-probs: the caller names that mistake)."""
    if rec["old_values_requires_grad"]:
        raise Diagnosis(f"the old values passed to ppo_loss carry gradient {where}: they are the critic's new "
                        "values (new and old swapped?) — ppo_loss takes (new_logprobs, old_logprobs, advantages, "
                        "new_values, old_values, returns, entropy, ...): new_values from the network, old_values = "
                        "b['values'][idx]")
    for name, what in (("new_logprobs", "log-probs"), ("new_values", "values"), ("entropy", "entropy")):
        if not rec[f"{name}_requires_grad"]:
            raise Diagnosis(f"the {name} passed to ppo_loss carry no gradient {where}: pass the {what} the network "
                            "computes now for the minibatch (agent.get_action_and_value(b['obs'][idx], "
                            "b['actions'][idx]), not detached, not from the rollout), or the update cannot change "
                            "them")


def _check_coefficients(rec, config, where) -> None:
    """ppo_loss gets config.clip_coef and config.vf_coef, and the ent_coef argument (not config.ent_coef)."""
    if rec["ent_coef"] != _ENT_COEF:
        source = "config.ent_coef" if rec["ent_coef"] == config.ent_coef else "ent_coef"
        raise Diagnosis(f"ppo_loss got {source} = {rec['ent_coef']!r} {where}, but this update's entropy "
                        f"coefficient is the ent_coef argument, {_ENT_COEF} — a schedule may change it from update "
                        "to update, so pass ent_coef, not config.ent_coef")
    for name in ("clip_coef", "vf_coef"):
        if rec[name] != getattr(config, name):
            raise Diagnosis(f"ppo_loss got {name} = {rec[name]!r} {where}, but config.{name} = "
                            f"{getattr(config, name)}: pass config.{name}")


def _advantage_rows(rec, b, norm_all, idx_obs, where) -> list[int]:
    """The rows of b['advantages'] passed to ppo_loss (normalised per minibatch counts as those rows)."""
    idx_adv = _rows(rec["advantages"], b["advantages"], idx_obs)
    if idx_adv is not None:
        return idx_adv
    if idx_obs is not None and _close_rows(rec["advantages"], norm_all[idx_obs]):
        raise Diagnosis("advantages were normalised over the whole rollout inside the minibatch loop (or "
                        "before splitting): pass the raw b['advantages'][idx] — ppo_loss normalises "
                        "each minibatch with its own mean and std")
    if idx_obs is not None and _close_rows(rec["advantages"], ref.normalize_advantages(b["advantages"][idx_obs])):
        return idx_obs  # normalised per minibatch twice: harmless
    raise Diagnosis(f"the advantages passed to ppo_loss {where} are not rows of the rollout's advantages: "
                    "index the flat batch with the minibatch indices, b['advantages'][idx]")


def _check_epochs(minibatches, batch_size, num_minibatches, seed) -> None:
    """Each epoch visits every sample once, in a fresh rng.permutation(batch_size) order (rng seeded with seed)."""
    n_epochs = len(minibatches) // num_minibatches
    epochs = [sum(minibatches[e * num_minibatches:(e + 1) * num_minibatches], []) for e in range(n_epochs)]
    for e, order in enumerate(epochs):
        if sorted(order) != list(range(batch_size)):
            raise Diagnosis(f"epoch {e} does not visit every sample exactly once: split one permutation of the "
                            f"{batch_size} indices into {num_minibatches} minibatches of "
                            f"{batch_size // num_minibatches}")
    if n_epochs > 1 and all(order == epochs[0] for order in epochs):
        if epochs[0] == list(range(batch_size)):
            raise Diagnosis("the minibatches are never shuffled: every epoch walks the batch in rollout order "
                            "(consecutive, correlated steps) — draw order = rng.permutation(batch_size) at the start "
                            "of each epoch")
        raise Diagnosis("no shuffling between epochs: every epoch uses the same minibatches — draw a new "
                        "permutation at the start of each epoch")
    rng = np.random.default_rng(seed)
    expected_orders = [rng.permutation(batch_size).tolist() for _ in range(n_epochs)]
    if epochs != expected_orders:
        raise Diagnosis("the shuffling does not follow the contract: at the start of each epoch draw "
                        "order = rng.permutation(batch_size) from the rng you are given (not np.random, "
                        "torch.randperm or a new generator) and take the minibatches order[start:start + "
                        "minibatch_size] in turn (the seeded rng makes runs reproducible)")


def _check_gradients(losses, steps, num_minibatches, max_grad_norm) -> None:
    """Each optimizer step used its own minibatch's gradient, clipped: zero_grad, backward, clip, step."""
    carry = None
    for k, (rec, grad) in enumerate(zip(losses, steps)):
        raw = rec["grad"]
        clipped = raw * min(1.0, max_grad_norm / (raw.norm().item() + 1e-6))
        if torch.allclose(grad, clipped, rtol=1e-4, atol=1e-6):
            carry = grad
            continue
        where = f"minibatch {k % num_minibatches} of epoch {k // num_minibatches}"
        if grad.abs().max().item() == 0.0:
            raise Diagnosis(f"the gradient is zero when optimizer.step() runs ({where}): zero_grad() must come "
                            "before backward(), not between backward() and step()")
        if carry is not None:
            accumulated = carry + raw
            acc_clipped = accumulated * min(1.0, max_grad_norm / (accumulated.norm().item() + 1e-6))
            if torch.allclose(grad, acc_clipped, rtol=1e-4, atol=1e-6) or torch.allclose(grad, accumulated,
                                                                                         rtol=1e-4, atol=1e-6):
                raise Diagnosis(f"optimizer.zero_grad() is missing: gradients accumulate across minibatches "
                                f"({where} stepped with this minibatch's gradient plus the previous ones)")
        if torch.allclose(grad, raw, rtol=1e-4, atol=1e-6):
            raise Diagnosis(f"gradients were not clipped: the gradient norm at {where} was {raw.norm().item():.3f} "
                            f"> config.max_grad_norm = {max_grad_norm} — call nn.utils.clip_grad_norm_("
                            "agent.parameters(), config.max_grad_norm) between backward() and step()")
        raise Diagnosis(f"the gradient optimizer.step() used at {where} is not the (clipped) gradient of that "
                        "minibatch's loss: zero_grad, backward, clip_grad_norm_, step — in that order")


def _close_rows(a: torch.Tensor, b: torch.Tensor) -> bool:
    return close(a, b, atol=1e-5, rtol=1e-4, dtype=None)


def _recording_loss(spy, params) -> Callable:
    """A stand-in for the learner's ppo_loss: the package's loss, recording its inputs and its gradient."""
    def ppo_loss(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                 clip_coef, vf_coef, ent_coef):
        loss = ref.ppo_loss(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                            clip_coef=clip_coef, vf_coef=vf_coef, ent_coef=ent_coef).loss
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        spy["losses"].append({
            "new_logprobs": new_logprobs.detach().clone(), "old_logprobs": old_logprobs.detach().clone(),
            "old_logprobs_requires_grad": old_logprobs.requires_grad,
            **{f"{name}_requires_grad": bool(getattr(t, "requires_grad", False)) for name, t in
               (("new_logprobs", new_logprobs), ("new_values", new_values), ("entropy", entropy),
                ("old_values", old_values))},
            "advantages": advantages.detach().clone(), "old_values": old_values.detach().clone(),
            "returns": returns.detach().clone(), "clip_coef": clip_coef, "vf_coef": vf_coef, "ent_coef": ent_coef,
            "grad": _flat(torch.zeros_like(p) if g is None else g for p, g in zip(params, grads))})
        return loss
    return ppo_loss


def _watch(agent, optimizer, spy) -> None:
    """Make this (copied) network record what it is asked to score, and its optimiser the gradient it steps with."""
    params, forward, step = list(agent.parameters()), agent.get_action_and_value, optimizer.step

    def get_action_and_value(x, action=None, *args, **kwargs):
        spy["forwards"].append({"x": x.detach().clone(), "action": None if action is None else action.clone()})
        return forward(x, action, *args, **kwargs)

    def watched_step(*args, **kwargs):
        spy["steps"].append(_flat(torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params))
        return step(*args, **kwargs)

    agent.get_action_and_value = get_action_and_value
    optimizer.step = watched_step


def _run_watched(fn, agent, optimizer, rollout, config, seed):
    """Run the learner's ppo_update on copies, with the loss, network and optimiser recording what happens.

    Returns:
        ``(final weights, what fn returned, the (buf, advantages, returns) it was given, the recording)``.
    """
    agent, optimizer = copy.deepcopy((agent, optimizer))
    given = copy.deepcopy(rollout)
    spy = {"losses": [], "forwards": [], "steps": []}
    _watch(agent, optimizer, spy)
    namespace = getattr(fn, "__globals__", {})
    missing = object()
    saved = namespace.get("ppo_loss", missing)
    if saved is not missing:
        namespace["ppo_loss"] = _recording_loss(spy, list(agent.parameters()))
    try:
        returned = fn(agent, optimizer, *given, config, _ENT_COEF, np.random.default_rng(seed))
    finally:
        if saved is not missing:
            namespace["ppo_loss"] = saved
        del agent.get_action_and_value
    return [p.detach().clone() for p in agent.parameters()], returned, given, spy


def _check_unmodified(given, rollout) -> None:
    """The learner's update must leave the rollout, its advantages and its returns as they were."""
    (buf, advantages, returns), (buf0, advantages0, returns0) = given, rollout
    pairs = [(getattr(buf, f.name), getattr(buf0, f.name), f"buf.{f.name}") for f in dataclasses.fields(buf0)
             if isinstance(getattr(buf0, f.name), torch.Tensor)]
    raise_if_modified(pairs + [(advantages, advantages0, "advantages"), (returns, returns0, "returns")],
                      "your update wrote into {name}: the rollout is the caller's — buf.flatten(...) "
                      "returns views of its tensors, so b[key] -= ... or b[key][idx] = ... writes into it. Compute "
                      "new tensors instead (x = x - m), and pass the raw advantages to ppo_loss")


def _check_weights(got, expected, config, epochs_done) -> None:
    diff = max((g - e).abs().max().item() for g, e in zip(got, expected))
    if not math.isfinite(diff) or diff > 1e-4:
        raise Diagnosis(f"after the update ({epochs_done} epochs × {config.num_minibatches} minibatches of "
                        f"{config.minibatch_size}) your weights differ from the reference by up to {diff:.3g}: "
                        "compare your loop, step by step, with zero_grad → backward → clip_grad_norm_ → step on "
                        "ppo_loss(...) of each minibatch")


def _check_returned_kl(returned, kls) -> None:
    """What the update returns: the mean approx_kl over the last epoch's minibatches, as notebook 07's does."""
    last = [k3 for k3, _ in kls[-1]]
    expected = sum(last) / len(last)
    want = f"return the mean approx_kl over the last epoch's minibatches ({expected:.4g} here), as a float"
    if returned is None:
        raise Diagnosis(f"your update returned None: {want}")
    try:
        value = float(returned)
    except (TypeError, ValueError, RuntimeError):
        raise Diagnosis(f"your update returned a {type(returned).__name__}: {want}") from None
    if close(value, expected, atol=1e-6, rtol=1e-3, dtype=torch.float64):
        return
    every = [k3 for epoch in kls for k3, _ in epoch]
    naive = sum(n for _, n in kls[-1]) / len(last)
    mistakes = {"the mean over every epoch, not only the last": sum(every) / len(every),
                "the last minibatch's alone": last[-1],
                "the naive estimate mean(-log r), not mean((r - 1) - log r)": naive,
                "mean((r - 1) + log r), the sign of log r flipped, not mean((r - 1) - log r)": expected - 2 * naive,
                "mean(r - log r), without the - 1 of mean((r - 1) - log r)": expected + 1}
    for what, wrong in mistakes.items():
        if close(value, wrong, atol=1e-6, rtol=1e-3, dtype=torch.float64):
            raise Diagnosis(f"your update returned approx_kl = {value:.4g}, {what}: {want}")
    raise Diagnosis(f"your update returned {value:.4g}: {want} — per minibatch mean((r - 1) - log r) with "
                    "log r = new - old log-probs, from the log-probs its loss used")


def check_ppo_update(fn: Callable, quiet: bool = False) -> CheckResult:
    """Check ``ppo_update(agent, optimizer, buf, advantages, returns, config, ent_coef, rng) -> approx_kl``,
    the arguments of :func:`ppo_course.trainer.ppo_update`.

    Runs it on copies of a small :class:`MLPActorCritic` and its Adam optimiser, with a real short rollout
    (see :func:`make_update_rollout`), twice: 3 epochs × 4 minibatches of 8, and 4 epochs × 2 of 16 with a
    ``target_kl`` that stops the update after 2 epochs. It verifies one optimizer step per minibatch of
    each epoch done; each minibatch's tensors indexed with the same indices; raw advantages, the rollout's
    (old) log-probs and the right coefficients passed to ``ppo_loss``; a fresh ``rng.permutation(batch_size)``
    each epoch; zero_grad, backward, clip_grad_norm_, step; that the rollout is left unchanged; then that the
    weights equal those of the package's ``ppo_update`` run on copies with a generator of the same seed, and
    that the return value is the mean approx_kl over the last epoch's minibatches.

    Args:
        fn: the learner's function; ``buf`` is a :class:`RolloutBuffer` of ``(T, N, ...)`` tensors,
            ``advantages``/``returns`` ``(T, N)``, ``config`` a :class:`PPOConfig`, ``rng`` a seeded
            ``np.random.Generator``.

    Returns:
        The :class:`CheckResult` (printed unless ``quiet``).
    """
    def body() -> str:
        agent, optimizer, *rollout = make_update_rollout()
        b = rollout[0].flatten(advantages=rollout[1], returns=rollout[2])
        watched, epochs_done = True, []
        for case in _CASES:
            config = _config(case)
            expected, kls = _reference(agent, optimizer, rollout, config, case["seed"])
            with torch.random.fork_rng():
                got, returned, given, spy = _run_watched(fn, agent, optimizer, rollout, config, case["seed"])
            watched = watched and bool(spy["losses"])
            _check_unmodified(given, rollout)
            _describe_loop(spy, b, config, len(kls), case["seed"])
            _check_weights(got, expected, config, len(kls))
            _check_returned_kl(returned, kls)
            epochs_done.append(len(kls))
        how = "shuffling, indexing, old log-probs, coefficients, zero_grad/clip/step order, " if watched else ""
        return (f"{how}early stop at target_kl, final weights and the returned approx_kl equal the reference's "
                f"({epochs_done[0]} epochs × 4 minibatches, and 4 × 2 stopped after {epochs_done[1]} by target_kl)")

    return run_check("ppo_update", body,
                     hint="for each epoch: order = rng.permutation(batch_size), then per minibatch: loss, zero_grad, "
                          "backward, clip, step; stop early past target_kl; return the last epoch's approx_kl",
                     quiet=quiet)


# --------------------------------------------------------------------------------------
# The finale: does the learner's agent beat a random policy?
# --------------------------------------------------------------------------------------
#: Fast mode: how much better than a uniformly random policy (mean return over the same 20 fixed-seed
#: episodes, seeds 1_000_000..1_000_019) the trained agent must be. Measured on LunarLander-v3:
#: * the random policy scores -224.2 on these 20 episodes (per-episode std 130, so the standard error
#:   of a 20-episode mean is about 25-30);
#: * an untrained, near-uniform ActorCritic (4 initialisations) scores -174.5 to -187.4: +37 to +50
#:   above that random draw -- so the margin must sit well above 50;
#: * the reference solution after 49,152 steps (sampled actions, minibatches shuffled by
#:   np.random.default_rng(seed)) scores +27.0, +15.8 and +13.8 (training seeds 0, 1, 2): +238 to +251
#:   above random; after ex05's fast budget, 32,768 steps, +204 to +216.
#: A margin of 150 is about 4 standard errors beyond what an untrained agent reaches and about 55
#: below what the reference reaches in fast mode.
FAST_MARGIN = 150.0
#: Full mode: LunarLander's "solved". The reference solution (400k steps, seed 0) scores 231.9 (argmax actions).
SOLVED = 200.0


def _agent_policy(agent: nn.Module, n_actions: int, deterministic: bool) -> Callable[[np.ndarray], np.ndarray]:
    """A NumPy batch policy from ``get_action_and_value``: sampled actions, or the most likely one (the argmax of
    the log-probabilities of every action, so only the exercise's interface is needed)."""
    def policy(obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(obs, dtype=torch.float32)
        with torch.no_grad():
            if not deterministic:
                return agent.get_action_and_value(x)[0].cpu().numpy()
            logprobs = torch.stack([agent.get_action_and_value(x, torch.full((len(x),), a, dtype=torch.long))[1]
                                    for a in range(n_actions)], dim=-1)
            return logprobs.argmax(-1).cpu().numpy()
    return policy


def compare_with_random(agent: nn.Module, env_id: str = "LunarLander-v3", episodes: int = 20,
                        deterministic: bool = False, seed: int = EVAL_SEED) -> tuple[EvalResult, EvalResult]:
    """Evaluate ``agent`` and a uniformly random policy on the same fixed-seed episodes.

    Returns:
        ``(agent_result, random_result)``.
    """
    from ..envs import make_env

    env = make_env(env_id)
    n_actions = int(env.action_space.n)
    env.close()
    rng = np.random.default_rng(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        was_training = agent.training
        agent.eval()
        try:
            mine = evaluate_policy(_agent_policy(agent, n_actions, deterministic), env_id, episodes, seed)
        finally:
            agent.train(was_training)
    rand = evaluate_policy(lambda obs: rng.integers(0, n_actions, len(obs)), env_id, episodes, seed)
    return mine, rand


def check_training_improves(agent: nn.Module | None, env_id: str = "LunarLander-v3", episodes: int = 20,
                            quiet: bool = False) -> CheckResult:
    """Check that the learner's trained agent is really better than chance (fast mode) or lands (full mode).

    Fast mode (``PPO_COURSE_FAST=1``): the agent's *sampled* actions (early in training the policy
    is still exploring; its argmax can be much worse) must beat a uniformly random policy by
    :data:`FAST_MARGIN` in mean return on the same ``episodes`` fixed-seed episodes. Full mode:
    its deterministic (argmax) mean return must reach 200, LunarLander's "solved".

    Args:
        agent: the trained network (``get_action_and_value(x, action=None)``), or None when the
            training cell was skipped -- reported as "not implemented yet".
        env_id: the environment it was trained on.
        episodes: evaluation episodes (seeds ``EVAL_SEED, EVAL_SEED + 1, ...``).

    Returns:
        The :class:`CheckResult` (printed unless ``quiet``).
    """
    def body() -> str:
        if agent is None:
            raise NotImplementedError("train your agent first: implement the pieces above, then run the training "
                                      "cell")
        if fast_mode():
            mine, rand = compare_with_random(agent, env_id, episodes, deterministic=False)
            gain = mine.mean_return - rand.mean_return
            if gain < FAST_MARGIN:
                raise Diagnosis(f"your agent scores {mine.mean_return:.1f} (sampled actions), a random policy "
                                f"{rand.mean_return:.1f} on the same {episodes} episodes: not better by "
                                f"{FAST_MARGIN:g} — if check_ppo_update passed, look at the loop: GAE on the "
                                "rollout's tensors, and ppo_update called on every rollout with its GAE")
            return (f"your agent {mine.mean_return:.1f} vs random {rand.mean_return:.1f} on the same {episodes} "
                    f"fixed-seed episodes (+{gain:.0f}, margin {FAST_MARGIN:g}); full mode trains it to land")
        mine, _ = compare_with_random(agent, env_id, episodes, deterministic=True)
        if mine.mean_return < SOLVED:
            raise Diagnosis(f"mean return {mine.mean_return:.1f} < {SOLVED:g} over {episodes} episodes "
                            "(deterministic): not landed yet — train longer or compare your loop with notebook 07")
        return f"landed: mean return {mine.mean_return:.1f} ≥ {SOLVED:g} over {episodes} fixed-seed episodes"

    return run_check("training", body, hint="train your agent first", quiet=quiet)

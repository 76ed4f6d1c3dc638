"""Checks for ex05 (the training loop): the learner's ``ppo_update`` and their trained agent.

:func:`check_ppo_update` runs the learner's update on a small synthetic batch while watching
it: the loss function it calls (``ppo_loss`` in the learner's namespace) is swapped for a
recording wrapper around :func:`ppo_course.losses.ppo_loss` (so a mistake in their loss does
not blur the diagnosis of their loop), the network records which observations it is asked
about, and the optimiser records the gradient it steps with. From that it can say *which*
part of the loop is wrong -- shuffling, indexing, old log-probs, zero_grad, clipping -- before
comparing the final weights with :func:`ppo_course.trainer.ppo_update` run on the same batch
with the same permutations.

:func:`check_training_improves` evaluates the learner's trained agent against a uniformly
random policy on the same fixed-seed episodes.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from .. import losses as ref
from ..buffer import RolloutBuffer
from ..config import PPOConfig
from ..course import fast_mode
from ..evaluate import EVAL_SEED, EvalResult, evaluate_policy
from ..networks import MLPActorCritic
from ..trainer import ppo_update as reference_ppo_update
from ._core import CheckResult, Diagnosis, close, run_check

__all__ = ["check_ppo_update", "check_training_improves", "make_update_batch"]

_OBS_DIM, _N_ACTIONS = 4, 3


def make_update_batch(batch_size: int = 32, seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A small :class:`MLPActorCritic` and a synthetic flat batch for it (what a rollout would give).

    The batch's ``logprobs``/``values`` are the network's own plus noise (so ratios differ from 1
    and some are clipped); every observation and advantage is distinct, so a minibatch's rows
    can be told apart.

    Returns:
        ``(agent, batch)`` with ``batch`` a dict of ``(batch_size, ...)`` tensors: ``obs``
        float32 ``(B, 4)``, ``actions`` int64, ``logprobs``, ``values``, ``advantages``, ``returns``.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        agent = MLPActorCritic(_OBS_DIM, _N_ACTIONS, hidden_size=16)
        g = torch.Generator().manual_seed(seed)
        obs = torch.randn(batch_size, _OBS_DIM, generator=g)
        actions = torch.randint(0, _N_ACTIONS, (batch_size,), generator=g)
        with torch.no_grad():
            out = agent.get_action_and_value(obs, actions)
        logprobs = out.logprob + 0.3 * torch.randn(batch_size, generator=g)
        values = out.value + 0.2 * torch.randn(batch_size, generator=g)
        advantages = torch.randn(batch_size, generator=g) * 2.0 + 0.5
        returns = advantages + values
    return agent, {"obs": obs, "actions": actions, "logprobs": logprobs, "values": values,
                   "advantages": advantages, "returns": returns}


def _reference_params(agent, batch, lr, num_minibatches, update_epochs, clip_coef, vf_coef, ent_coef,
                      max_grad_norm, seed) -> list[torch.Tensor]:
    agent = copy.deepcopy(agent)
    optimizer = torch.optim.SGD(agent.parameters(), lr=lr)
    col = {k: v.unsqueeze(1) for k, v in batch.items()}  # (B, 1, ...): one environment, B steps
    zeros = torch.zeros_like(col["values"])
    buf = RolloutBuffer(obs=col["obs"], actions=col["actions"], logprobs=col["logprobs"], values=col["values"],
                        rewards=zeros, terminations=zeros, truncations=zeros, final_values=zeros)
    config = PPOConfig(update_epochs=update_epochs, num_minibatches=num_minibatches, clip_coef=clip_coef,
                       vf_coef=vf_coef, max_grad_norm=max_grad_norm, clip_vloss=True, norm_adv=True, target_kl=None)
    reference_ppo_update(agent, optimizer, buf, col["advantages"], col["returns"], config, ent_coef,
                         np.random.default_rng(seed))
    return [p.detach().clone() for p in agent.parameters()]


def _rows(values: torch.Tensor, table: torch.Tensor) -> list[int] | None:
    """Indices i such that values[j] == table[i] (rows or scalars), or None if some value is no row."""
    values, table = values.detach(), table.detach()
    if values.dim() == 1 and table.dim() == 1:
        eq = values[:, None] == table[None, :]
    else:
        eq = (values.reshape(len(values), 1, -1) == table.reshape(1, len(table), -1)).all(-1)
    if values.shape[1:] != table.shape[1:] or not bool(eq.any(1).all()):
        return None
    return eq.float().argmax(1).tolist()


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _describe_loop(spy, batch, num_minibatches, update_epochs, max_grad_norm, seed) -> None:
    """Raise a Diagnosis for the first thing the recorded run did wrong (or return quietly)."""
    losses, steps = spy["losses"], spy["steps"]
    expected_steps = update_epochs * num_minibatches
    if len(steps) != expected_steps:
        raise Diagnosis(f"optimizer.step() ran {len(steps)} times, expected update_epochs × num_minibatches = "
                        f"{update_epochs} × {num_minibatches} = {expected_steps} (one step per minibatch, every "
                        "epoch)")
    if not losses:
        return  # the learner's loss is not called `ppo_loss`: only the final weights can tell
    if len(losses) != expected_steps:
        raise Diagnosis(f"ppo_loss was called {len(losses)} times for {expected_steps} optimizer steps: compute "
                        "one loss per minibatch, inside the loop")
    norm_all = ref.normalize_advantages(batch["advantages"])
    minibatches = [_minibatch_rows(spy, k, batch, norm_all, num_minibatches) for k in range(len(losses))]
    _check_epochs(minibatches, len(batch["obs"]), num_minibatches, update_epochs, seed)
    _check_gradients(losses, steps, num_minibatches, max_grad_norm)


def _minibatch_rows(spy, k, batch, norm_all, num_minibatches) -> list[int]:
    """The batch rows of the k-th ppo_loss call, after checking that every tensor passed to it is
    indexed with them (old log-probs from the batch, raw advantages, the batch's actions)."""
    rec, forwards = spy["losses"][k], spy["forwards"]
    epoch, mb = divmod(k, num_minibatches)
    where = f"(epoch {epoch}, minibatch {mb})"
    idx_obs = _rows(forwards[k]["x"], batch["obs"]) if len(forwards) == len(spy["losses"]) else None
    if rec["old_logprobs_requires_grad"] or (rec["old_logprobs"].shape == rec["new_logprobs"].shape
                                             and torch.equal(rec["old_logprobs"], rec["new_logprobs"])):
        raise Diagnosis(f"the old log-probs passed to ppo_loss are the new ones {where}: the ratio is always 1 "
                        "and clipping never acts — pass batch['logprobs'][idx], recorded during the rollout")
    named = {"advantages": _advantage_rows(rec, batch, norm_all, idx_obs, where),
             "old log-probs": _rows(rec["old_logprobs"], batch["logprobs"]),
             "old values": _rows(rec["old_values"], batch["values"]),
             "returns": _rows(rec["returns"], batch["returns"])}
    for name, idx in named.items():
        if idx is None:
            source = {"old log-probs": "logprobs", "old values": "values"}.get(name, name)
            raise Diagnosis(f"the {name} passed to ppo_loss {where} are not rows of batch['{source}']: take "
                            f"them from the batch, batch['{source}'][idx]")
    reference_idx = idx_obs if idx_obs is not None else named["advantages"]
    for name, idx in named.items():
        if idx != reference_idx:
            first = "observations" if idx_obs is not None else "advantages"
            raise Diagnosis(f"tensors indexed with different minibatch indices {where}: the {first} are rows "
                            f"{reference_idx[:4]}… but the {name} are rows {idx[:4]}… — index every tensor "
                            "with the same idx")
    action = forwards[k]["action"] if idx_obs is not None else None
    if idx_obs is not None and (action is None or not torch.equal(action, batch["actions"][idx_obs])):
        raise Diagnosis(f"the network scores actions that are not the batch's {where}: call "
                        "agent.get_action_and_value(batch['obs'][idx], batch['actions'][idx]) — without the "
                        "actions it samples new ones")
    return reference_idx


def _advantage_rows(rec, batch, norm_all, idx_obs, where) -> list[int]:
    """The rows of batch['advantages'] passed to ppo_loss (normalised per minibatch counts as those rows)."""
    idx_adv = _rows(rec["advantages"], batch["advantages"])
    if idx_adv is not None:
        return idx_adv
    if idx_obs is not None and _close_rows(rec["advantages"], norm_all[idx_obs]):
        raise Diagnosis("advantages were normalised over the whole rollout inside the minibatch loop (or "
                        "before splitting): pass the raw batch['advantages'][idx] — ppo_loss normalises "
                        "each minibatch with its own mean and std")
    if idx_obs is not None and _close_rows(rec["advantages"], ref.normalize_advantages(
            batch["advantages"][idx_obs])):
        return idx_obs  # normalised per minibatch twice: harmless
    raise Diagnosis(f"the advantages passed to ppo_loss {where} are not rows of batch['advantages']: "
                    "index the batch with the minibatch indices, batch['advantages'][idx]")


def _check_epochs(minibatches, batch_size, num_minibatches, update_epochs, seed) -> None:
    """Each epoch visits every sample once, in a fresh rng.permutation(batch_size) order (rng seeded with seed)."""
    epochs = [sum(minibatches[e * num_minibatches:(e + 1) * num_minibatches], []) for e in range(update_epochs)]
    for e, order in enumerate(epochs):
        if sorted(order) != list(range(batch_size)):
            raise Diagnosis(f"epoch {e} does not visit every sample exactly once: split one permutation of the "
                            f"{batch_size} indices into {num_minibatches} minibatches of "
                            f"{batch_size // num_minibatches}")
    if update_epochs > 1 and all(order == epochs[0] for order in epochs):
        if epochs[0] == list(range(batch_size)):
            raise Diagnosis("the minibatches are never shuffled: every epoch walks the batch in rollout order "
                            "(consecutive, correlated steps) — draw order = rng.permutation(batch_size) at the start "
                            "of each epoch")
        raise Diagnosis("no shuffling between epochs: every epoch uses the same minibatches — draw a new "
                        "permutation at the start of each epoch")
    rng = np.random.default_rng(seed)
    expected_orders = [rng.permutation(batch_size).tolist() for _ in range(update_epochs)]
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
                            f"> max_grad_norm = {max_grad_norm} — call nn.utils.clip_grad_norm_(agent.parameters(), "
                            "max_grad_norm) between backward() and step()")
        raise Diagnosis(f"the gradient optimizer.step() used at {where} is not the (clipped) gradient of that "
                        "minibatch's loss: zero_grad, backward, clip_grad_norm_, step — in that order")


def _close_rows(a: torch.Tensor, b: torch.Tensor) -> bool:
    return close(a, b, atol=1e-5, rtol=1e-4, dtype=None)


def _run_watched(fn, agent, batch, lr, num_minibatches, update_epochs, clip_coef, vf_coef, ent_coef, max_grad_norm,
                 seed):
    """Run the learner's ppo_update with the loss, network and optimiser recording what happens."""
    agent = copy.deepcopy(agent)
    params = list(agent.parameters())
    optimizer = torch.optim.SGD(params, lr=lr)
    spy = {"losses": [], "forwards": [], "steps": []}

    def ppo_loss(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                 clip_coef, vf_coef, ent_coef):
        loss = ref.ppo_loss(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, entropy,
                            clip_coef=clip_coef, vf_coef=vf_coef, ent_coef=ent_coef).loss
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        spy["losses"].append({
            "new_logprobs": new_logprobs.detach().clone(), "old_logprobs": old_logprobs.detach().clone(),
            "old_logprobs_requires_grad": old_logprobs.requires_grad,
            "advantages": advantages.detach().clone(), "old_values": old_values.detach().clone(),
            "returns": returns.detach().clone(),
            "grad": _flat(torch.zeros_like(p) if g is None else g for p, g in zip(params, grads))})
        return loss

    forward = agent.get_action_and_value

    def get_action_and_value(x, action=None, *args, **kwargs):
        spy["forwards"].append({"x": x.detach().clone(), "action": None if action is None else action.clone()})
        return forward(x, action, *args, **kwargs)

    step = optimizer.step

    def watched_step(*args, **kwargs):
        spy["steps"].append(_flat(torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params))
        return step(*args, **kwargs)

    agent.get_action_and_value = get_action_and_value
    optimizer.step = watched_step
    namespace = getattr(fn, "__globals__", {})
    missing = object()
    saved = namespace.get("ppo_loss", missing)
    if saved is not missing:
        namespace["ppo_loss"] = ppo_loss
    try:
        fn(agent, optimizer, {k: v.clone() for k, v in batch.items()}, num_minibatches, update_epochs, clip_coef,
           vf_coef, ent_coef, max_grad_norm, np.random.default_rng(seed))
    finally:
        if saved is not missing:
            namespace["ppo_loss"] = saved
        del agent.get_action_and_value
    return [p.detach().clone() for p in params], spy


def check_ppo_update(fn: Callable, quiet: bool = False) -> CheckResult:
    """Check ``ppo_update(agent, optimizer, batch, num_minibatches, update_epochs, clip_coef, vf_coef, ent_coef,
    max_grad_norm, rng)``.

    Runs it on a small :class:`MLPActorCritic` and a synthetic batch (see :func:`make_update_batch`)
    with an SGD optimiser, twice (3 epochs × 4 minibatches of 8, and 2 × 2 of 8), and verifies:
    one optimiser step per minibatch per epoch; each minibatch's tensors indexed with the same
    indices; raw advantages and the batch's (old) log-probs passed to ``ppo_loss``; a fresh
    ``rng.permutation(batch_size)`` each epoch; zero_grad, backward, clip_grad_norm_, step; and
    finally that the weights equal those of :func:`ppo_course.trainer.ppo_update` on the same batch
    with a NumPy generator of the same seed (so the same permutations).

    Args:
        fn: the learner's function; ``batch`` is a dict of flat ``(batch, ...)`` tensors with keys
            ``obs, actions, logprobs, values, advantages, returns``; ``rng`` a seeded ``np.random.Generator``.

    Returns:
        The :class:`CheckResult` (printed unless ``quiet``).
    """
    cases = [dict(batch_size=32, num_minibatches=4, update_epochs=3, seed=0),
             dict(batch_size=16, num_minibatches=2, update_epochs=2, seed=1)]
    hp = dict(clip_coef=0.2, vf_coef=0.5, ent_coef=0.01, max_grad_norm=0.1)
    lr = 0.05

    def body() -> str:
        watched = True
        for case in cases:
            agent, batch = make_update_batch(case["batch_size"], case["seed"])
            args = (case["num_minibatches"], case["update_epochs"], hp["clip_coef"], hp["vf_coef"], hp["ent_coef"],
                    hp["max_grad_norm"], case["seed"])
            with torch.random.fork_rng():
                got, spy = _run_watched(fn, agent, batch, lr, *args)
            watched = watched and bool(spy["losses"])
            _describe_loop(spy, batch, case["num_minibatches"], case["update_epochs"], hp["max_grad_norm"],
                           case["seed"])
            expected = _reference_params(agent, batch, lr, *args)
            diff = max((g - e).abs().max().item() for g, e in zip(got, expected))
            if not math.isfinite(diff) or diff > 1e-4:
                raise Diagnosis(f"after the update ({case['update_epochs']} epochs × {case['num_minibatches']} "
                                f"minibatches of {case['batch_size'] // case['num_minibatches']}) your weights differ "
                                f"from the reference by up to {diff:.3g}: compare your loop, step by step, with "
                                "zero_grad → backward → clip_grad_norm_ → step on ppo_loss(...) of each minibatch")
        how = "shuffling, indexing, old log-probs, zero_grad/clip/step order and " if watched else ""
        return (f"{how}final weights equal the reference's (3 epochs × 4 minibatches, and 2 × 2)")

    return run_check("ppo_update", body,
                     hint="each epoch: order = rng.permutation(batch_size), then per minibatch: loss, zero_grad, "
                          "backward, clip, step",
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
#: * the reference solution after ex05's fast budget (49,152 steps, sampled actions, minibatches
#:   shuffled by np.random.default_rng(seed)) scores +27.0, +15.8 and +13.8 (training seeds 0, 1, 2):
#:   +238 to +251 above random; after 32,768 steps +204 to +216.
#: A margin of 150 is about 4 standard errors beyond what an untrained agent reaches and about 90
#: below what the reference reaches.
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
                                "rollout's tensors, the batch flattened, ppo_update called every rollout")
            return (f"your agent {mine.mean_return:.1f} vs random {rand.mean_return:.1f} on the same {episodes} "
                    f"fixed-seed episodes (+{gain:.0f}, margin {FAST_MARGIN:g}); full mode trains it to land")
        mine, _ = compare_with_random(agent, env_id, episodes, deterministic=True)
        if mine.mean_return < SOLVED:
            raise Diagnosis(f"mean return {mine.mean_return:.1f} < {SOLVED:g} over {episodes} episodes "
                            "(deterministic): not landed yet — train longer or compare your loop with notebook 07")
        return f"landed: mean return {mine.mean_return:.1f} ≥ {SOLVED:g} over {episodes} fixed-seed episodes"

    return run_check("training", body, hint="train your agent first", quiet=quiet)

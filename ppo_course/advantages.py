"""Returns and advantages: discounted returns (for teaching) and Generalised Advantage Estimation.

GAE is from Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized
Advantage Estimation", eqs. 11-16; the recursion is the one in the PPO paper (eqs. 11-12)
and CleanRL's ``ppo.py``. What this version adds, and tests, is the difference between
the two ways an episode can stop:

* **termination** (the lander crashed or came to rest): the episode is over, the value
  of what comes next is 0, so nothing is bootstrapped;
* **truncation** (a time limit, or the end of the rollout): the episode *would* have
  gone on, so the return is bootstrapped from V of the state where it was cut.

Storage is time-major: every tensor is ``(num_steps, num_envs)`` (extra trailing dims
are allowed), float32.
"""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminations: torch.Tensor,
    truncations: torch.Tensor,
    next_value: torch.Tensor,
    final_values: torch.Tensor | None = None,
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation over one rollout.

    For each step t (``s'`` is the state the transition led to)::

        delta_t = r_t + gamma * V(s') * (1 - terminations[t]) - V(s_t)
        A_t     = delta_t + gamma * lambda * (1 - max(terminations[t], truncations[t])) * A_{t+1}
        R_t     = A_t + V(s_t)      (the value target, "returns")

    where V(s') is

    * ``values[t+1]`` when the episode goes on,
    * ``final_values[t]`` -- V of the episode's last observation -- when it was truncated,
    * ``next_value`` -- V of the observation after the rollout -- at the last step (the cut),
      unless that step also ended an episode.

    Only a termination removes the bootstrap from delta_t; any episode end, terminated or
    truncated, stops the recursion.

    Args:
        rewards: ``(T, N)`` rewards r_t.
        values: ``(T, N)`` V(s_t) recorded during the rollout.
        terminations: ``(T, N)`` 1.0 where the episode terminated at step t, else 0.0.
        truncations: ``(T, N)`` 1.0 where the episode was truncated at step t, else 0.0.
        next_value: ``(N,)`` V of the observation that follows the rollout's last step.
        final_values: ``(T, N)`` V of the final observation wherever ``truncations`` is 1
            (other entries are ignored). Required if any step is truncated.
        gamma: discount factor.
        gae_lambda: GAE lambda; 0 gives one-step TD errors, 1 gives Monte-Carlo returns minus V.

    Returns:
        ``(advantages, returns)``, both ``(T, N)`` and the dtype of ``values``.

    Raises:
        ValueError: shapes disagree, or a truncation has no ``final_values``.
    """
    if not (rewards.shape == values.shape == terminations.shape == truncations.shape):
        raise ValueError(
            "rewards, values, terminations and truncations must share one (num_steps, num_envs) shape; got "
            f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(terminations.shape)}, {tuple(truncations.shape)}")
    if next_value.shape != values.shape[1:]:
        raise ValueError(f"next_value must have shape {tuple(values.shape[1:])}, got {tuple(next_value.shape)}")
    terminations, truncations = terminations.to(values.dtype), truncations.to(values.dtype)
    if final_values is None:
        if bool(truncations.any()):
            raise ValueError("some steps are truncated: pass final_values, V of their final observations")
        final_values = torch.zeros_like(values)

    num_steps = values.shape[0]
    # V(s') for every step: the next stored value, the one after the rollout at the cut,
    # or -- where the episode was truncated -- the value of its true final observation.
    following = torch.cat([values[1:], next_value.unsqueeze(0)], dim=0)
    next_values = torch.where(truncations.bool(), final_values, following)
    ended = torch.clamp(terminations + truncations, max=1.0)  # the episode ended at t, either way

    advantages = torch.zeros_like(values)
    last_gae = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminations[t]) - values[t]
        last_gae = delta + gamma * gae_lambda * (1.0 - ended[t]) * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def discounted_returns(rewards: torch.Tensor, dones: torch.Tensor, gamma: float,
                       next_value: torch.Tensor | None = None) -> torch.Tensor:
    """Discounted return G_t = r_t + gamma * G_{t+1} * (1 - done_t), computed backwards.

    The plain (lambda = 1) return used to teach discounting before GAE.

    Args:
        rewards: ``(T,)`` or ``(T, N)`` rewards.
        dones: same shape; 1.0 where an episode ended at step t (nothing after it counts).
        gamma: discount factor.
        next_value: optional ``rewards.shape[1:]`` bootstrap for whatever follows the last
            step (0 if omitted: the rollout is treated as the end of everything).

    Returns:
        ``rewards.shape`` tensor of returns.
    """
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0]) if next_value is None else next_value.to(rewards.dtype)
    dones = dones.to(rewards.dtype)
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * running * (1.0 - dones[t])
        returns[t] = running
    return returns

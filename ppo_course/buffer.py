"""Rollout storage: one time-major tensor per quantity.

Every field is ``(num_steps, num_envs, ...)`` (CleanRL's layout): row t holds what all
environments did at step t. :meth:`RolloutBuffer.flatten` reshapes to ``(batch, ...)``
with ``batch = num_steps * num_envs`` for the minibatch updates.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class RolloutBuffer:
    """What one rollout collected. Shapes use T = num_steps, N = num_envs.

    Attributes:
        obs: ``(T, N, *obs_shape)`` observation s_t the action was chosen from (dtype of the env, e.g.
            float32 vectors or uint8 pixels).
        actions: ``(T, N)`` int64 actions a_t.
        logprobs: ``(T, N)`` float32 log pi_old(a_t | s_t).
        values: ``(T, N)`` float32 V_old(s_t).
        rewards: ``(T, N)`` float32 r_t.
        terminations: ``(T, N)`` float32, 1.0 where the episode terminated at step t.
        truncations: ``(T, N)`` float32, 1.0 where it was truncated (time limit) at step t.
        final_values: ``(T, N)`` float32 V(final observation) where truncated, else 0.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    terminations: torch.Tensor
    truncations: torch.Tensor
    final_values: torch.Tensor

    @property
    def num_steps(self) -> int:
        return self.obs.shape[0]

    @property
    def num_envs(self) -> int:
        return self.obs.shape[1]

    def flatten(self, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
        """All fields (plus ``extra`` ``(T, N, ...)`` tensors such as advantages) as ``(T*N, ...)``."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        tensors.update(extra)
        return {name: t.reshape(-1, *t.shape[2:]) for name, t in tensors.items()}

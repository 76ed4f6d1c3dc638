"""Rollout storage: one time-major tensor per quantity.

Every field is ``(num_steps, num_envs, ...)`` (CleanRL's layout): row t holds what all
environments did at step t. :meth:`RolloutBuffer.flatten` reshapes to ``(batch, ...)``
with ``batch = num_steps * num_envs`` for the minibatch updates; row ``t * num_envs + n``
of the flat batch is env n at step t, so ``flat_index.reshape(T, N)[:, envs]`` selects whole
environment sequences (the recurrent update does).

A recurrent agent's rollout also keeps ``initial_lstm_state``, the LSTM state ``(h, c)`` the
rollout started from, each ``(1, N, hidden)`` -- PyTorch's ``(num_layers, batch, hidden)``
layout, not the ``(T, N, ...)`` one -- and ``starts``, the per-step episode-start flags that
zero it. From these two and the observations the update replays the rollout's memory exactly.
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
        actions: ``(T, N)`` int64 actions a_t; for a continuous (``Box``) action space ``(T, N, act_dim)``
            float32, the policy's samples before the environment clipped them.
        logprobs: ``(T, N)`` float32 log pi_old(a_t | s_t).
        values: ``(T, N)`` float32 V_old(s_t).
        rewards: ``(T, N)`` float32 r_t.
        terminations: ``(T, N)`` float32, 1.0 where the episode terminated at step t.
        truncations: ``(T, N)`` float32, 1.0 where it was truncated (time limit) at step t.
        final_values: ``(T, N)`` float32 V(final observation) where truncated, else 0.
        starts: ``(T, N)`` float32, 1.0 where ``obs[t]`` is the first observation of an episode
            (the step before ended one, in this rollout or the previous one; CleanRL's ``dones``).
            Recurrent agents zero their memory there. None if not recorded.
        initial_lstm_state: ``(h, c)``, each ``(1, N, hidden)`` float32, the LSTM state before
            step 0 (before masking with ``starts[0]``); None for feed-forward agents. Not flattened.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    terminations: torch.Tensor
    truncations: torch.Tensor
    final_values: torch.Tensor
    starts: torch.Tensor | None = None
    initial_lstm_state: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_steps(self) -> int:
        return self.obs.shape[0]

    @property
    def num_envs(self) -> int:
        return self.obs.shape[1]

    def flatten(self, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
        """All ``(T, N, ...)`` fields (plus ``extra`` ones such as advantages) as ``(T*N, ...)``.

        ``initial_lstm_state`` is not a per-step field and is left out, as are fields that are None.
        """
        tensors = {f.name: getattr(self, f.name) for f in fields(self)
                   if f.name != "initial_lstm_state" and getattr(self, f.name) is not None}
        tensors.update(extra)
        return {name: t.reshape(-1, *t.shape[2:]) for name, t in tensors.items()}

"""The masked LSTM unroll written the plain way, as the ex07 solution writes it: ``nn.LSTM`` called on one
step at a time, ``(h, c)`` zeroed where an episode starts (CleanRL's ``ppo_atari_lstm.py``). Tests compare
the package's :func:`ppo_course.networks.masked_lstm_unroll` and the ex07 checks against it."""

import torch


def masked_lstm_unroll(lstm, features, lstm_state, starts):
    """``(T, N, hidden)`` outputs and the final ``(h, c)``; ``starts`` is ``(T, N)``, 1.0 where an episode starts."""
    h, c = lstm_state
    outputs = []
    for t in range(features.shape[0]):
        keep = (1.0 - starts[t]).view(1, -1, 1)
        out, (h, c) = lstm(features[t:t + 1], (h * keep, c * keep))
        outputs.append(out)
    return torch.cat(outputs), (h, c)

"""A speed device for slow environments: env groups stepped in a background thread while the policy acts.

:class:`PipelinedCollector` splits the ``num_envs`` environments into G vector envs ("env groups",
``config.env_groups``; the Doom presets use 2). A background thread steps one group while the policy
chooses the actions of the next, so game time hides behind inference time. It pays when an env step
spends its time outside the Python interpreter (ViZDoom's engines run in child processes; OpenCV and
PyTorch kernels release the GIL); ``benchmarks/doom_throughput.py`` measures it, and
``benchmarks/RESULTS.md`` has the figures.

Each group is a plain :class:`~ppo_course.rollout.RolloutCollector` (its ``begin``/``act``/``record``/
``finish``), so every group's actions come from that group's own latest observations: the rollout is
the one a single vector env of all ``num_envs`` environments collects, only the order of work changes
(``tests/test_recurrent.py`` checks it). While the groups are stepped PyTorch runs on one thread,
leaving the other cores to the group in flight and its game processes; the setting is restored after
each rollout.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait

import torch
from torch import nn

from .buffer import RolloutBuffer
from .networks import weight_snapshot
from .rollout import RolloutCollector


class PipelinedCollector:
    """Several vector envs, stepped in turn by a background thread; one :class:`RolloutBuffer` out.

    Args:
        env_groups: a list of vector envs with the same spaces; their environments fill the buffer's
            columns in list order.
        agent, num_steps, device: as for :class:`~ppo_course.rollout.RolloutCollector`.
        seed: seed of the first reset; environment i of the rollout (counted across groups) gets ``seed + i``.

    Raises:
        ValueError: an empty list, or groups whose spaces differ.
    """

    def __init__(self, env_groups, agent: nn.Module, num_steps: int, device: torch.device | str = "cpu",
                 seed: int = 0):
        env_groups = list(env_groups)
        if not env_groups:
            raise ValueError("PipelinedCollector needs at least one vector env")
        first = env_groups[0]
        if any(g.single_observation_space != first.single_observation_space
               or g.single_action_space != first.single_action_space for g in env_groups):
            raise ValueError("all env groups must have the same observation and action spaces")
        offsets = [sum(g.num_envs for g in env_groups[:i]) for i in range(len(env_groups))]
        self.groups = [RolloutCollector(g, agent, num_steps, device, seed + offset)
                       for g, offset in zip(env_groups, offsets)]
        self.agent, self.num_steps, self.device = agent, num_steps, torch.device(device)
        self.num_envs = sum(g.num_envs for g in env_groups)
        self.obs_shape = self.groups[0].obs_shape
        self._stepper = ThreadPoolExecutor(1, thread_name_prefix="env-group")

    @property
    def envs(self):
        """The first group's vector env (its spaces and reward normaliser stand for all)."""
        return self.groups[0].envs

    @property
    def episode_returns(self) -> list[float]:
        return [r for g in self.groups for r in g.episode_returns]

    @property
    def episode_lengths(self) -> list[int]:
        return [n for g in self.groups for n in g.episode_lengths]

    @property
    def episode_stats(self) -> list[dict[str, float]]:
        return [s for g in self.groups for s in g.episode_stats]

    def _step_groups(self) -> None:
        """All ``num_steps`` steps of every group, group g stepping in the background while g + 1 chooses."""
        T, G = self.num_steps, len(self.groups)
        pending = [None] * G  # group g's step in flight
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the other cores are for the group stepping in the background
        try:
            with torch.inference_mode():
                for t in range(T):
                    for g, group in enumerate(self.groups):
                        if pending[g] is not None:
                            group.record(t - 1, pending[g].result())
                        pending[g] = self._stepper.submit(group.envs.step, group.act(t))
                for g, group in enumerate(self.groups):
                    group.record(T - 1, pending[g].result())
                    pending[g] = None
        finally:  # never leave a group stepping in the background (e.g. on Ctrl-C): its envs may be closed next
            wait([p for p in pending if p is not None])
            torch.set_num_threads(torch_threads)

    def close(self) -> None:
        """Stop the background thread and close every group's environments."""
        self._stepper.shutdown()
        for group in self.groups:
            group.close()

    def state_dict(self) -> dict:
        """Every group's :meth:`RolloutCollector.state_dict <ppo_course.rollout.RolloutCollector.state_dict>`."""
        return {"groups": [group.state_dict() for group in self.groups]}

    def load_state_dict(self, state: dict) -> list[int]:
        """Undo :meth:`state_dict`; returns the environments (numbered across groups) whose replay diverged."""
        if len(state["groups"]) != len(self.groups):
            raise ValueError(f"the saved state has {len(state['groups'])} env groups, this collector {len(self.groups)}")
        diverged, offset = [], 0
        for group, saved in zip(self.groups, state["groups"]):
            diverged += [offset + i for i in group.load_state_dict(saved)]
            offset += group.num_envs
        return diverged

    @torch.no_grad()
    def collect(self) -> tuple[RolloutBuffer, torch.Tensor]:
        """One rollout of ``num_steps`` steps in every environment of every group (see
        :meth:`RolloutCollector.collect <ppo_course.rollout.RolloutCollector.collect>`)."""
        with weight_snapshot(self.agent):  # one copy of the large weights for the whole rollout
            for group in self.groups:
                group.begin()
            self._step_groups()
            parts = [group.finish() for group in self.groups]
        return concat_buffers([buf for buf, _ in parts]), torch.cat([value for _, value in parts])


def concat_buffers(buffers: list[RolloutBuffer]) -> RolloutBuffer:
    """Rollouts of disjoint environments side by side: every ``(T, N_i, ...)`` field concatenated along
    the environment axis (dim 1), and so is ``initial_lstm_state`` (``(1, N_i, hidden)``)."""
    def cat(name):
        values = [getattr(b, name) for b in buffers]
        if values[0] is None:
            return None
        if name == "initial_lstm_state":
            return tuple(torch.cat([v[k] for v in values], dim=1) for k in range(2))
        return torch.cat(values, dim=1)

    return RolloutBuffer(**{name: cat(name) for name in RolloutBuffer.__dataclass_fields__})

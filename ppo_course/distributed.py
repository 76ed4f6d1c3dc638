"""Data-parallel PPO on ``torch.distributed``: the few collective operations the trainer needs.

Launched by ``torchrun`` (``torchrun --standalone --nproc-per-node N -m ppo_course.cli train ...``, or
``ppo-course train --nproc N``), every process -- a *rank* -- runs the same :func:`ppo_course.train`:
it owns ``num_envs`` environments of its own (seeded ``seed + rank * num_envs + j``, so that two ranks of
E environments play the environments one process of 2E would), collects its own rollouts and computes
their advantages, and takes the same gradient steps as every other rank, on gradients averaged across
ranks. The parameters therefore stay identical everywhere. This is DD-PPO's synchronous design (Wijmans
et al., 2020, "DD-PPO"), and CleanRL's ``ppo_atari_multigpu.py``.

Choices, and why:

* **Explicit all-reduce, not DistributedDataParallel.** The update calls ``agent.get_action_and_value``,
  not ``agent(...)``; DDP's gradient hooks are armed by its wrapper's ``forward``. One all-reduce of all
  gradients flattened into one vector per minibatch step (:func:`average_gradients`) is the whole of what
  DDP would do here, visible in one line of the update loop.
* **Advantages are normalised per rank's minibatch**, as CleanRL's multi-GPU script does: each rank's
  minibatch is an unbiased sample of the global batch, and it needs no extra communication.
* **``approx_kl`` early stopping uses the mean over ranks** (:func:`mean_over_ranks`): every rank must
  stop after the same epoch, or the ranks would wait for each other's gradients forever.
* **The learning rate and entropy schedules** read the global step, counted over all ranks, so they are
  the same everywhere.
* **Reward normalisation is per rank**: it only rescales rewards, and each rank's running estimate of the
  return's scale converges to the same value. Observation normalisation (``norm_obs``) would feed the one
  network inputs scaled differently on each rank, so it is refused with several ranks.

Backends: ``gloo`` on CPU, ``nccl`` on CUDA, chosen from the device. With one process (no ``torchrun``)
every function here is the identity or a no-op, so the single-process trainer pays nothing.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    """A rank stopped answering (it died, was killed, or its machine went away)."""


def launched() -> bool:
    """True in a process started by ``torchrun`` with more than one process in the job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """True when this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one that evaluates, logs and writes checkpoints."""
    return rank() == 0


def device_for_rank(device: torch.device) -> torch.device:
    """One GPU per rank on a machine (``LOCAL_RANK``); CPU stays CPU."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init(device: torch.device) -> None:
    """Join the job ``torchrun`` started (its ``MASTER_ADDR``/``RANK``/``WORLD_SIZE`` environment):
    ``nccl`` for CUDA devices, ``gloo`` for CPU. Nothing happens outside ``torchrun`` or when already joined."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return
    device = device_for_rank(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def _collective(fn, *args, **kwargs):
    """Run a collective; a peer that is gone becomes one :class:`DistributedError` line."""
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, dist.DistBackendError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistributedError(f"rank {rank()} lost contact with the other ranks (one died, was killed or "
                               f"stopped answering): {first}") from None


def average_gradients(params: Iterable[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Average the gradients of ``params`` over the ranks, in place, and return the mean ``loss``.

    All gradients (and the loss, so that every rank sees the same non-finite value and stops together)
    travel in one flat vector: one all-reduce per minibatch step. Without a process group: returns ``loss``.
    """
    if not active():
        return loss
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1)])
    _collective(dist.all_reduce, flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[-1]


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over the ranks (a copy; ``values`` itself without a group)."""
    if not active():
        return values
    total = values.detach().clone()
    _collective(dist.all_reduce, total, op=dist.ReduceOp.SUM)
    return total / world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any (e.g. a stop request that reached one process)."""
    if not active():
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64)
    _collective(dist.all_reduce, t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere); ``[obj]`` without a group."""
    if not active():
        return [obj]
    out = [None] * world_size() if is_main() else None
    _collective(dist.gather_object, obj, out, dst=0)
    return out


def from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself without a group)."""
    if not active():
        return obj
    box = [obj]
    _collective(dist.broadcast_object_list, box, src=0)
    return box[0]


def scatter_from_main(objs: list[Any] | None) -> Any:
    """Rank r gets ``objs[r]`` of rank 0's list; ``objs[0]`` without a group."""
    if not active():
        return objs[0]
    out = [None]
    _collective(dist.scatter_object_list, out, objs if is_main() else None, src=0)
    return out[0]


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (the same starting network everywhere)."""
    if not active():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        _collective(dist.broadcast, tensor.data, src=0)


def shutdown() -> None:
    """Leave the process group (at the end of a run, or after an error)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

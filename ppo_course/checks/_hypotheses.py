"""Diagnosis by hypothesis: localise a wrong output first, then name a mistake only when it reproduces it.

A check that finds the learner's output differs from the reference does two things, in this order:

1. :func:`first_difference` says *where*: the first element (in a chosen scan order) that differs,
   its index in words, the expected and the actual value, and how many elements differ. That is
   always true, whatever the mistake.
2. :func:`matching_hypothesis` says *what*, but only when it can prove it: each hypothesis is a
   transformation of the reference (a sign flipped, a term missing, an index shifted, ...) applied to
   the same inputs, and it is named only when its output reproduces the learner's, every element,
   within tolerance. Hypotheses are tried in the order given (the caller documents that order,
   simplest first) and the first that reproduces wins; none reproducing means the check reports the
   localisation alone.

An *output* is a tensor, a NumPy array, a number, ``None``, or a tuple/list/generator of outputs (several
outputs of one call, or one output per case). Sequences are compared pairwise and lazily, so a
hypothesis written as a generator over cases stops being evaluated at its first case that does not
match. Everything is compared in float64; NaN equals NaN, so a hypothesis may reproduce a NaN too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import torch

Labels = Union[Sequence[str], Callable[[tuple], str], None]


@dataclass(frozen=True)
class Difference:
    """Where an output first differs from the expected one.

    Attributes:
        index: the index of that element (``()`` for a 0-d output).
        where: that index in words, e.g. ``"t=3, env=1"``.
        expected, got: the two values there.
        count: how many elements differ; size: how many there are.
    """

    index: tuple
    where: str
    expected: float
    got: float
    count: int
    size: int

    def __str__(self) -> str:
        at = f"at {self.where}: " if self.where else ""
        of = f" ({self.count} of {self.size} entries differ)" if self.size > 1 else ""
        return f"{at}expected {self.expected:.4f}, got {self.got:.4f}{of}"


def as_double(x) -> torch.Tensor:
    """A detached float64 CPU tensor of ``x`` (tensor, array or number)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def differs(expected, got, atol: float = 1e-4, rtol: float = 1e-4) -> torch.Tensor:
    """Elementwise: True where ``got`` is not within ``atol + rtol * |expected|`` of ``expected``.

    Equal infinities and NaN against NaN count as equal; anything else non-finite differs.
    """
    e, g = torch.broadcast_tensors(as_double(expected), as_double(got))
    near = (g - e).abs() <= atol + rtol * e.abs()
    same_special = (torch.isnan(e) & torch.isnan(g)) | (torch.isinf(e) & (e == g))
    return ~(near | same_special)


def _where(index: tuple, labels: Labels) -> str:
    if callable(labels):
        return labels(index)
    if labels is None:
        return f"index {index[0] if len(index) == 1 else index}" if index else ""
    return ", ".join(f"{name}={i}" for name, i in zip(labels, index))


def first_difference(expected, got, labels: Labels = None, *, atol: float = 1e-4, rtol: float = 1e-4,
                     reverse: Iterable[int] = ()) -> Difference | None:
    """The first element where ``got`` differs from ``expected``, or None when they agree everywhere.

    Args:
        expected, got: same-shaped tensors, arrays or numbers.
        labels: how to name an index: one name per axis (``("t", "env")`` gives ``"t=3, env=1"``), a
            function of the index tuple, or None (``"index 3"``).
        reverse: axes scanned from their end, e.g. ``(0,)`` for the order of a recursion that runs
            backwards in time; the others are scanned from 0, in row-major order.

    Raises:
        ValueError: the shapes differ (check shapes before localising values).
    """
    e, g = as_double(expected), as_double(got)
    if e.shape != g.shape:
        raise ValueError(f"shapes differ: expected {tuple(e.shape)}, got {tuple(g.shape)}")
    bad = differs(e, g, atol, rtol)
    if not bool(bad.any()):
        return None
    dims = [d % max(e.dim(), 1) for d in reverse] if e.dim() else []
    scan = bad.flip(dims) if dims else bad
    flat = int(scan.flatten().nonzero()[0])
    index = tuple(int(i) for i in np.unravel_index(flat, tuple(e.shape))) if e.dim() else ()
    index = tuple(e.shape[d] - 1 - i if d in dims else i for d, i in enumerate(index))
    return Difference(index, _where(index, labels), float(e[index]), float(g[index]), int(bad.sum()), bad.numel())


_END = object()


def reproduces(got, produced, *, atol: float = 1e-4, rtol: float = 1e-4) -> bool:
    """True when ``produced`` equals ``got`` element by element within tolerance (same structure, same shapes)."""
    if got is None or produced is None:
        return got is None and produced is None
    if isinstance(got, (tuple, list)):
        if isinstance(produced, (torch.Tensor, np.ndarray)):
            return False
        items = iter(produced)
        for part in got:
            try:
                other = next(items)
            except StopIteration:
                return False
            if not reproduces(part, other, atol=atol, rtol=rtol):
                return False
        return next(items, _END) is _END
    if isinstance(produced, (tuple, list)) or hasattr(produced, "__next__"):
        return False  # one output against several
    g, p = as_double(got), as_double(produced)
    return g.shape == p.shape and not bool(differs(p, g, atol, rtol).any())


def matching_hypothesis(got, hypotheses: Mapping[str, Any] | Iterable[tuple[str, Any]], *, atol: float = 1e-4,
                        rtol: float = 1e-4) -> str | None:
    """The name of the first hypothesis whose output reproduces ``got``, or None.

    Args:
        got: the learner's output (see the module's docstring for what an output may be).
        hypotheses: ``{name: hypothesis}`` or ``(name, hypothesis)`` pairs, in priority order (the first
            that reproduces wins; the same name may appear twice). A hypothesis is a no-argument callable
            returning an output, or the output itself. One that raises (a shape that cannot broadcast, a
            case it does not apply to) reproduces nothing.
    """
    items = hypotheses.items() if isinstance(hypotheses, Mapping) else hypotheses
    for name, hypothesis in items:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                produced = hypothesis() if callable(hypothesis) else hypothesis
                if reproduces(got, produced, atol=atol, rtol=rtol):
                    return name
            except Exception:  # a hypothesis that cannot be evaluated here explains nothing
                continue
    return None

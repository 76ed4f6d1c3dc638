"""Mutation testing of the exercise checks: how many small bugs in the reference solutions does each check
catch, and how many of those does it *explain*?

For every task function (or class) of every solution notebook (``solutions/ex0*_*.ipynb``), the check
called by its check cell (``check_gae(compute_gae)``, ...) is run on automatically generated mutants of the
reference code. Only the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` of that definition
are mutated, with these operators (Python's ``ast``; each mutant changes one node):

* ``arith``: ``+`` <-> ``-``, ``*`` <-> ``/``, ``//`` -> ``*``, ``**`` -> ``*`` (also in ``+=``, ...), and a
  unary minus dropped (``-x`` -> ``x``);
* ``compare``: ``<`` -> ``<=``/``>``, ``<=`` -> ``<``/``>=``, ``>`` -> ``>=``/``<``, ``>=`` -> ``>``/``<=``,
  ``==`` <-> ``!=``, ``is`` <-> ``is not``, ``in`` <-> ``not in``;
* ``constant``: a number c -> c + 1, -c (0 -> 1, 1 -> 0), ``True`` <-> ``False``;
* ``index``: a subscript's index (or slice bound) i -> i + 1, i - 1 (so -1 -> 0); string keys are left alone;
* ``remove``: one statement replaced by ``pass``;
* ``swap-args``: two adjacent positional arguments of a call swapped;
* ``detach``: ``.detach()`` appended to a call's result (calls whose value is unused, and a few builtins
  that never return a tensor, are skipped).

Each mutant is executed in the notebook's namespace (its import cell and the solution cells before it,
then the mutated cell), in a forked process with a timeout, and classified:

* **stillborn** (not counted): it does not compile, or ``.detach()`` landed on something that is not a
  tensor (``AttributeError: ... has no attribute 'detach'``);
* **equivalent** (not counted): on a few seeded random inputs of the task's contract its outputs (and, for
  outputs that carry a gradient, the gradients with respect to the contract's differentiable inputs: the
  parameters of a network, ``logits``, ``new_logprobs``, ...) equal the reference's to 1e-6, inputs left
  unchanged as well. A mutant that raises on those inputs is *not* equivalent;
* otherwise its check is run (``quiet=True``): **survived** (the check passed: a false negative) or
  **killed**. A killed mutant is **diagnosed** when the learner would be told what is wrong or where:

  - ``named``: a failed check (status ``fail``) whose message is not one of the modules' fallback messages;
  - ``localised``: a fallback message that points at a location (a time step, env, row, pixel, case and
    term, minibatch, ...), or a crash of the learner's code reported with its line
    (``your code raised ...(line N: ...)``);
  - not diagnosed (``generic``): a fallback message with no named mistake and no location (e.g. "the total
    loss is X, expected Y ... check each term"), a crash reported without a line of the learner's code (the
    check itself tripped over the output), or a timeout.

  ``CheckResult`` has no structured field for this, so the fallback messages are recognised by the regexes
  of :data:`FALLBACKS`, one per fallback ``raise Diagnosis`` of ``ppo_course/checks/*.py``, each marked
  localised or generic; the checks built on ``_hypotheses`` (gae.py, loss.py) end every fallback with "none
  of the N common mistakes tried reproduces", localised when it names a step, env, sample or term. The
  regexes follow the checks' wording: update them when a fallback message changes. Equivalent mutants are
  run through the check too: one that fails it is reported (``equiv-rejected``), since either the check
  rejects a correct program or the probe inputs missed a case.

ex05 mutates ``ppo_update`` only (its other check cells repeat ex02-ex04, and ``check_training_improves``
trains). A task with more mutants than ``--cap`` (``--cap-update`` for ``ppo_update``) is sampled with a
fixed seed; the output says so.

    python benchmarks/check_mutants.py [--exercise ex03] [--list-survivors] [--jobs 2] [--cap 120]

The last line is ``mutants_killed = K/N, diagnosed = D/N`` over the non-equivalent mutants.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import linecache
import math
import os
import random
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.pop("PPO_COURSE_STRICT_CHECKS", None)  # a failed check must return, not raise

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # before any torch op: the children are forked

from ppo_course.exercises import BEGIN, END  # noqa: E402

SKIPPED_CHECKS = {"check_training_improves"}
#: Exercises whose tasks are restricted to these names (ex05 repeats ex02-ex04 before its update loop).
ONLY = {"ex05": {"ppo_update"}}
TOLERANCE = 1e-6


# ============================================================================================
# the tasks: which definition each check cell checks
# ============================================================================================
@dataclass
class Task:
    exercise: str
    notebook: Path
    cell: int  # the cell that defines the checked object
    name: str  # the object's name (a function or a class)
    check: str  # the check function's name
    source: str  # that cell's source
    region: set  # 1-based line numbers of the cell inside solution regions of the definition
    setup: list  # [(cell index, source)] executed before the cell: the import cell(s) and earlier solution cells

    @property
    def label(self) -> str:
        return f"{self.exercise} {self.name}" + (" (truncation)" if self.check == "check_gae_with_truncation" else "")


def _region_lines(source: str) -> set:
    inside, lines = False, set()
    for lineno, line in enumerate(source.splitlines(), 1):
        if BEGIN.match(line):
            inside = True
        elif END.match(line):
            inside = False
        elif inside:
            lines.add(lineno)
    return lines


def discover(exercise: str | None = None) -> list[Task]:
    """One task per check cell ``check_xxx(Name)`` of each solution notebook (the last definition of Name above it)."""
    tasks = []
    for path in sorted((ROOT / "solutions").glob("ex*.ipynb")):
        ex = path.name[:4]
        if exercise and ex != exercise:
            continue
        nb = nbformat.read(path, as_version=4)
        setup, defined = [], {}
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            source = cell.source
            match = re.fullmatch(r"\s*(check_\w+)\((\w+)\)\s*", source)
            if match:
                check, name = match.groups()
                if check in SKIPPED_CHECKS or name not in defined or name not in ONLY.get(ex, {name}):
                    continue
                cell_index, cell_source = defined[name]
                tree = ast.parse(cell_source)
                node = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name)
                span = set(range(node.lineno, node.end_lineno + 1))
                earlier = [(i, s) for i, s in setup if i < cell_index]
                tasks.append(Task(ex, path, cell_index, name, check, cell_source, _region_lines(cell_source) & span,
                                  earlier))
            elif "from ppo_course.checks import" in source:
                setup.append((index, source))
            elif "### BEGIN SOLUTION" in source:
                setup.append((index, source))
                for node in ast.parse(source).body:
                    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                        defined[node.name] = (index, source)
    return tasks


# ============================================================================================
# the mutants
# ============================================================================================
@dataclass
class Mutant:
    task: Task
    kind: str
    lineno: int  # in the cell
    desc: str
    source: str  # the mutated cell
    result: dict = field(default_factory=dict)


_ARITH = {ast.Add: [ast.Sub], ast.Sub: [ast.Add], ast.Mult: [ast.Div], ast.Div: [ast.Mult],
          ast.FloorDiv: [ast.Mult], ast.Pow: [ast.Mult]}
_COMPARE = {ast.Lt: [ast.LtE, ast.Gt], ast.LtE: [ast.Lt, ast.GtE], ast.Gt: [ast.GtE, ast.Lt],
            ast.GtE: [ast.Gt, ast.LtE], ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq], ast.Is: [ast.IsNot],
            ast.IsNot: [ast.Is], ast.In: [ast.NotIn], ast.NotIn: [ast.In]}
#: Calls whose result is never a tensor: no ``.detach()`` mutant.
_NOT_TENSOR = {"range", "reversed", "len", "enumerate", "zip", "dict", "list", "tuple", "set", "print", "isinstance",
               "super", "float", "int", "str", "sorted", "getattr", "hasattr", "max", "min", "sum", "deque",
               "append", "extend", "clear", "items", "keys", "values", "split", "permutation", "Generator",
               "DoomConfig", "Sequential", "Linear", "Tanh", "layer_init", "Categorical", "Normal", "ActionAndValue"}


def _is_number(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def _negative_number(node) -> bool:
    return isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _is_number(node.operand)


def _num(value) -> ast.expr:
    return ast.UnaryOp(ast.USub(), ast.Constant(-value)) if value < 0 else ast.Constant(value)


def _shift(node: ast.expr, delta: int) -> ast.expr:
    """``node + 1`` / ``node - 1``, folding numbers (-1 + 1 -> 0)."""
    if _is_number(node):
        return _num(node.value + delta)
    if _negative_number(node):
        return _num(-node.operand.value + delta)
    return ast.BinOp(copy.deepcopy(node), ast.Add() if delta > 0 else ast.Sub(), ast.Constant(abs(delta)))


def _index_like(node: ast.expr) -> bool:
    """An index worth shifting: not a string key, a slice, an Ellipsis or a None."""
    if isinstance(node, ast.Constant):
        return _is_number(node)
    return not isinstance(node, (ast.Slice, ast.JoinedStr, ast.Tuple, ast.List, ast.Dict))


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _candidates(target: ast.AST, region: set):
    """(node, replacement node, kind) for every mutation of the nodes of ``target`` whose line is in ``region``."""
    parents = {child: parent for parent in ast.walk(target) for child in ast.iter_child_nodes(parent)}
    in_fstring = {id(n) for f in ast.walk(target) if isinstance(f, ast.JoinedStr) for n in ast.walk(f)}
    for node in ast.walk(target):
        if getattr(node, "lineno", None) not in region or id(node) in in_fstring:
            continue
        # arith
        if isinstance(node, (ast.BinOp, ast.AugAssign)):
            for op in _ARITH.get(type(node.op), []):
                new = copy.deepcopy(node)
                new.op = op()
                yield node, new, "arith"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and not _is_number(node.operand):
            yield node, copy.deepcopy(node.operand), "arith"
        # compare
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                for other in _COMPARE.get(type(op), []):
                    new = copy.deepcopy(node)
                    new.ops[i] = other()
                    yield node, new, "compare"
        # constants (a negative literal is one constant)
        parent = parents.get(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield node, ast.Constant(not node.value), "constant"
        elif (_is_number(node) and not _negative_number(parent)) or _negative_number(node):
            value = node.value if _is_number(node) else -node.operand.value
            for new_value in {0: [1], 1: [0, 2, -1]}.get(value, [value + 1, -value]):
                yield node, _num(new_value), "constant"
        # index / slice bounds
        if isinstance(node, ast.Subscript):
            parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            for part in parts:
                bounds = [b for b in (part.lower, part.upper) if b is not None] if isinstance(part, ast.Slice) \
                    else [part] if _index_like(part) else []
                for bound in bounds:
                    for delta in (1, -1):
                        yield bound, _shift(bound, delta), "index"
        # statements
        if isinstance(node, ast.stmt) and not isinstance(node, ast.Pass) and not (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            yield node, ast.Pass(), "remove"
        # calls
        if isinstance(node, ast.Call):
            positional = node.args
            for i in range(len(positional) - 1):
                if isinstance(positional[i], ast.Starred) or isinstance(positional[i + 1], ast.Starred):
                    continue
                new = copy.deepcopy(node)
                new.args[i], new.args[i + 1] = new.args[i + 1], new.args[i]
                yield node, new, "swap-args"
            name = _call_name(node)
            if name not in _NOT_TENSOR and name != "detach" and not isinstance(parent, ast.Expr):
                yield node, ast.Call(ast.Attribute(copy.deepcopy(node), "detach", ast.Load()), [], []), "detach"


def _splice(source: str, node: ast.AST, text: str) -> str:
    """``source`` with ``node``'s span replaced by ``text``, keeping every other line where it was (the offsets
    are UTF-8 byte offsets)."""
    lines = source.encode().split(b"\n")
    first, last = node.lineno - 1, node.end_lineno - 1
    extra = last - first
    if isinstance(node, ast.stmt):
        new = text + "\n" * extra
    else:
        new = "(" + text + "\n" * extra + ")"
    head = lines[first][:node.col_offset]
    tail = lines[last][node.end_col_offset:]
    lines[first:last + 1] = (head + new.encode() + tail).split(b"\n")
    return b"\n".join(lines).decode()


def _short(text: str, n: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


def make_mutants(task: Task) -> list[Mutant]:
    tree = ast.parse(task.source)
    target = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == task.name)
    original = ast.dump(tree)
    seen, mutants = {original}, []
    for node, new, kind in _candidates(target, task.region):
        text = ast.unparse(new)
        source = _splice(task.source, node, text)
        try:
            dumped = ast.dump(ast.parse(source))
        except SyntaxError:
            continue
        if dumped in seen:
            continue
        seen.add(dumped)
        before = ast.get_source_segment(task.source, node) or ast.unparse(node)
        if kind == "remove":
            desc = f"remove `{_short(before, 60)}`"
        elif kind == "detach":
            desc = f"`{_short(before, 60)}` + `.detach()`"
        elif kind == "swap-args":
            i = next(i for i, (a, b) in enumerate(zip(node.args, new.args)) if ast.dump(a) != ast.dump(b))
            desc = (f"swap `{_short(ast.unparse(node.args[i]), 30)}` and `{_short(ast.unparse(node.args[i + 1]), 30)}` "
                    f"in `{_short(ast.unparse(node.func), 30)}(...)`")
        else:
            desc = f"`{_short(before, 50)}` -> `{_short(text, 50)}`"
        mutants.append(Mutant(task, kind, node.lineno, f"{kind}: {desc}", source))
    return mutants


# ============================================================================================
# equivalence: the task's contract on a few seeded inputs
# ============================================================================================
def _flatten(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _flatten(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _flatten(v)
    else:
        yield x


def _freeze(x):
    """A detached, cloned copy of a nested output (tensors, arrays, numbers, containers)."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, dict):
        return {k: _freeze(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_freeze(v) for v in x]
    if isinstance(x, (int, float, bool, str, type(None), np.generic)):
        return x
    return f"<{type(x).__name__}>"


def with_grads(outputs, leaves, seed: int = 0):
    """The outputs, and for each output tensor that requires grad, d(sum(w * out)) / d leaves (w seeded)."""
    g = torch.Generator().manual_seed(seed)
    grads = []
    for t in _flatten(outputs):
        if isinstance(t, torch.Tensor) and t.requires_grad:
            w = torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)
            got = torch.autograd.grad((t * w).sum(), leaves, allow_unused=True, retain_graph=True)
            grads.append([torch.zeros_like(leaf) if d is None else d.detach().clone() for leaf, d in zip(leaves, got)])
        else:
            grads.append(None)
    return {"out": _freeze(outputs), "grads": grads}


def same(a, b) -> bool:
    """Equal to TOLERANCE (tensors and arrays: same type, shape and dtype too)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape \
                or a.dtype != b.dtype:
            return False
        if not (a.is_floating_point() or a.is_complex()):
            return torch.equal(a, b)
        return bool(torch.allclose(a.double(), b.double(), rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not np.issubdtype(a.dtype, np.floating):
            return np.array_equal(a, b)
        return bool(np.allclose(a, b, rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True))
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)) or a is None or b is None \
            or isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
        fa, fb = float(a), float(b)
        return (math.isnan(fa) and math.isnan(fb)) or math.isclose(fa, fb, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
    return a == b


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def probe_policy_network(cls):
    out = []
    for obs_dim, n_actions, hidden, seed in ((8, 4, 32, 0), (3, 2, 16, 1)):
        torch.manual_seed(seed)
        net = cls(obs_dim, n_actions, hidden_size=hidden)
        params = list(net.parameters())
        x = torch.randn(6, obs_dim, generator=_gen(seed))
        out.append([with_grads(net(x), params, seed), with_grads(net(x[:1]), params, seed),
                    [p.detach().clone() for p in params]])
    return out


def probe_sampling(fn):
    g = _gen(3)
    logits = (torch.randn(6, 5, generator=g) * 2)
    logits[2] = logits[2] + 80.0
    logits = logits.requires_grad_()
    given = torch.randint(0, 5, (6,), generator=g)
    out = []
    for kwargs in ({}, {"action": given}, {"deterministic": True}, {"action": given, "deterministic": True}):
        for x in (logits, logits[:1]):
            kw = dict(kwargs)
            if "action" in kw:
                kw["action"] = kw["action"][:len(x)].clone()
            torch.manual_seed(0)
            out.append(with_grads(fn(x, **kw), [logits]))
    torch.manual_seed(0)
    out.append(_freeze(fn(logits.detach().repeat(200, 1))[0]))
    return out


def probe_layer_init(fn):
    from torch import nn
    cases = [(lambda: nn.Linear(6, 4), dict(std=0.5, bias_const=0.3)), (lambda: nn.Linear(3, 7), {}),
             (lambda: nn.Conv2d(2, 3, 2), dict(std=1.0, bias_const=-0.2)),
             (lambda: nn.Linear(4, 2, bias=False), dict(std=2.0)), (lambda: nn.Linear(5, 5), dict(std=0.01))]
    out = []
    for i, (make, kwargs) in enumerate(cases):
        torch.manual_seed(i)
        layer = make()
        torch.manual_seed(100 + i)
        returned = fn(layer, **kwargs)
        out.append([returned is layer, layer.weight.detach().clone(),
                    None if layer.bias is None else layer.bias.detach().clone()])
    return out


def probe_actor_critic(cls):
    out = []
    for obs_dim, n_actions, hidden, seed in ((8, 4, 32, 0), (3, 2, 16, 1)):
        torch.manual_seed(seed)
        agent = cls(obs_dim, n_actions, hidden_size=hidden)
        params = list(agent.parameters())
        g = _gen(seed)
        x = torch.randn(6, obs_dim, generator=g)
        given = torch.randint(0, n_actions, (6,), generator=g)
        torch.manual_seed(1)
        sampled = agent.get_action_and_value(x)
        torch.manual_seed(2)
        scored = agent.get_action_and_value(x, given)
        out.append([with_grads([agent.get_value(x), agent.get_value(x[:1]), list(sampled), list(scored)], params),
                    [p.detach().clone() for p in params]])
    return out


def _gae_inputs(seed, T, N, truncate: bool):
    g = _gen(seed)
    terminations = (torch.rand(T, N, generator=g) < 0.25).float()
    truncations = ((torch.rand(T, N, generator=g) < 0.25).float() if truncate else torch.zeros(T, N))
    if truncate:
        truncations[0, 0] = terminations[0, 0] = 1.0  # both at once
    return [torch.randn(T, N, generator=g), torch.rand(T, N, generator=g) * 2 - 1, terminations, truncations,
            torch.rand(N, generator=g) * 2 - 1,
            torch.rand(T, N, generator=g) * 3 if truncate else torch.zeros(T, N)]


def _probe_gae(fn, truncate: bool):
    out = []
    for seed, (T, N), (gamma, lam) in ((0, (7, 3), (0.9, 0.8)), (1, (5, 2), (0.99, 0.95)), (2, (1, 2), (0.5, 1.0)),
                                        (3, (6, 1), (0.8, 0.0))):
        args = _gae_inputs(seed, T, N, truncate)
        given = [a.clone() for a in args]
        out.append([_freeze(fn(*given, gamma, lam)), _freeze(given)])
    if truncate:
        args = _gae_inputs(5, 6, 2, False)[:5]
        out.append(_freeze(fn(*args, None, 0.9, 0.8)))
    return out


def probe_gae(fn):
    return _probe_gae(fn, truncate=False)


def probe_gae_with_truncation(fn):
    return _probe_gae(fn, truncate=True)


def probe_clipped_surrogate(fn):
    g = _gen(4)
    old = -torch.rand(10, generator=g) * 2
    new = (old + torch.randn(10, generator=g) * 0.4).requires_grad_()
    adv = torch.randn(10, generator=g)
    return [with_grads(fn(new, old, adv, 0.2), [new]), with_grads(fn(new, old, adv, 0.1), [new]),
            with_grads(fn(new[:1], old[:1], adv[:1], 0.2), [new]), _freeze([old, adv])]


def probe_value_loss(fn):
    g = _gen(5)
    old = torch.randn(10, generator=g)
    new = (old + torch.randn(10, generator=g) * 0.4).requires_grad_()
    ret = torch.randn(10, generator=g)
    return [with_grads(fn(new, old, ret, 0.2), [new]), with_grads(fn(new, old, ret, None), [new]),
            with_grads(fn(new, None, ret), [new]), with_grads(fn(new[:1], old[:1], ret[:1], 0.1), [new]),
            _freeze([old, ret])]


def probe_ppo_loss(fn):
    g = _gen(6)
    n = 12
    old_lp = -torch.rand(n, generator=g) * 2 - 0.1
    new_lp = (old_lp + (torch.rand(n, generator=g) - 0.5) * 0.8).requires_grad_()
    adv = torch.randn(n, generator=g) * 2 + 1
    old_v = torch.randn(n, generator=g)
    new_v = (old_v + (torch.rand(n, generator=g) - 0.5)).requires_grad_()
    ret = torch.randn(n, generator=g)
    ent = (torch.rand(n, generator=g) + 0.5).requires_grad_()
    leaves = [new_lp, new_v, ent]
    args = [new_lp, old_lp, adv, new_v, old_v, ret, ent]
    return [with_grads(fn(*args, 0.2, 0.5, 0.01), leaves), with_grads(fn(*args, 0.1, 1.0, 0.05), leaves),
            with_grads(fn(*(a[:1] for a in args), 0.2, 0.5, 0.01), leaves),
            with_grads(fn(*(a[:2] for a in args), 0.2, 0.5, 0.01), leaves), _freeze([old_lp, adv, old_v, ret])]


def probe_approx_kl(fn):
    g = _gen(7)
    old = -torch.rand(16, generator=g) * 2
    new = old + torch.randn(16, generator=g) * 0.3
    return _freeze([fn(new, old), fn(old.clone(), old.clone()), fn(new[:1], old[:1]), old, new])


_UPDATE = {}


def _update_rollout():
    """A rollout for the ppo_update probe (built once, in the parent, before forking)."""
    if not _UPDATE:
        from ppo_course.checks.loop import make_update_rollout
        _UPDATE["rollout"] = make_update_rollout(seed=3)
    return _UPDATE["rollout"]


def probe_ppo_update(fn):
    from ppo_course.checks import loop
    out = []
    for case in (dict(update_epochs=2, num_minibatches=4, target_kl=None, seed=5),
                 dict(update_epochs=3, num_minibatches=2, target_kl=0.005, seed=6)):
        agent, optimizer, buf, advantages, returns = copy.deepcopy(_update_rollout())
        config = loop._config(case)
        torch.manual_seed(0)
        returned = fn(agent, optimizer, buf, advantages, returns, config, 0.03, np.random.default_rng(case["seed"]))
        try:
            returned = float(returned)
        except (TypeError, ValueError, RuntimeError):
            returned = f"<{type(returned).__name__}>"
        out.append([[p.detach().clone() for p in agent.parameters()], returned, _freeze(vars(buf)),
                    _freeze([advantages, returns])])
    return out


def probe_preprocess_frame(fn):
    rng = np.random.default_rng(8)
    out = []
    for shape, size in (((120, 160, 3), None), ((100, 130, 3), None), ((84, 84, 3), None), ((120, 160, 3), (60, 80))):
        frame = rng.integers(0, 256, size=shape, dtype=np.uint8)
        given = frame.copy()
        out.append([_freeze(fn(given) if size is None else fn(given, size)), given])
    return out


def probe_frame_stacker(cls):
    rng = np.random.default_rng(9)
    out = []
    for num_frames in (None, 3, 1):
        stacker = cls() if num_frames is None else cls(num_frames)
        frames = [rng.integers(0, 256, size=(10, 12), dtype=np.uint8) for _ in range(9)]
        returned, copies = [], []
        for i, f in enumerate(frames):
            obs = stacker.reset(f.copy()) if i in (0, 6) else stacker.step(f.copy())
            returned.append(obs)
            copies.append(_freeze(obs))
        out.append([copies, _freeze(returned)])
    return out


def probe_shaping_reward(fn):
    from ppo_course.envs.doom import DoomConfig
    rng = np.random.default_rng(10)
    names = ["KILLCOUNT", "HEALTH", "POSITION_X", "AMMO2", "AMMO3", "AMMO5", "AMMO6", "SELECTED_WEAPON_AMMO"]
    out = []
    for i in range(8):
        order = list(rng.permutation(names)) + (["AMMO4"] if i % 2 else [])
        prev = {"KILLCOUNT": float(rng.integers(0, 3)), "HEALTH": float(rng.integers(-5, 100)),
                "POSITION_X": float(rng.uniform(0, 500)), "AMMO2": float(rng.integers(0, 50)),
                "AMMO3": float(rng.integers(0, 20)), "AMMO5": float(rng.integers(0, 5)),
                "AMMO6": float(rng.integers(0, 5)), "SELECTED_WEAPON_AMMO": float(rng.integers(0, 50)),
                "AMMO4": float(rng.integers(0, 50))}
        now = {k: v + float(rng.integers(-8, 9)) * (rng.random() < 0.6) for k, v in prev.items()}
        if i == 0:
            now["HEALTH"] = -7.0  # a killing blow
        config = DoomConfig(native_scale=0.0, kill_reward=float(rng.uniform(0, 5)),
                            ammo_reward=float(rng.uniform(0, .1)),
                            ammo_penalty=float(rng.uniform(0, .1)), health_penalty=float(rng.uniform(0, .1)),
                            health_gain_scale=float(rng.uniform(0, .1)),
                            progress_scale=float(rng.uniform(0, .05)) if i != 3 else 0.0)
        prev_values = np.array([prev[n] for n in order])
        values = np.array([now[n] for n in order])
        max_x = prev["POSITION_X"] + float(rng.uniform(-20, 20))
        given = (prev_values.copy(), values.copy())
        out.append([_freeze(fn(tuple(order), given[0], given[1], max_x, config)), _freeze(given)])
    return out


def probe_masked_lstm_unroll(fn):
    from torch import nn
    out = []
    for seed, (T, N, F, H, layers) in ((0, (5, 3, 4, 6, 1)), (1, (4, 2, 3, 5, 2)), (2, (1, 2, 3, 4, 1))):
        torch.manual_seed(seed)
        lstm = nn.LSTM(F, H, num_layers=layers)
        g = _gen(seed)
        features = torch.randn(T, N, F, generator=g).requires_grad_()
        state = (torch.randn(layers, N, H, generator=g), torch.randn(layers, N, H, generator=g))
        starts = (torch.rand(T, N, generator=g) < 0.3).float()
        given = [features, (state[0].clone(), state[1].clone()), starts.clone()]
        result = fn(lstm, given[0], given[1], given[2])
        out.append([with_grads(result, [features, *lstm.parameters()]), _freeze(given)])
    return out


def probe_sequence_minibatches(fn):
    out = []
    for seed, (T, N, M) in ((0, (4, 6, 3)), (1, (3, 4, 1)), (2, (2, 4, 4))):
        rng = np.random.default_rng(seed)
        out.append([_freeze(fn(T, N, M, rng)), _freeze(fn(T, N, M, rng))])
    return out


_RECURRENT = {}


def probe_reunroll_logprobs(fn):
    if not _RECURRENT:
        from ppo_course.checks.recurrent import make_recurrent_rollout
        _RECURRENT["r"] = make_recurrent_rollout(num_steps=6, num_envs=3, seed=2)
    r = _RECURRENT["r"]
    params = list(r["agent"].parameters())
    out = []
    for group in ([2, 0], [1], [0, 2, 1]):
        given = [r["obs"].clone(), r["actions"].clone(), r["starts"].clone(),
                 (r["initial_state"][0].clone(), r["initial_state"][1].clone()), torch.tensor(group)]
        out.append([with_grads(fn(r["agent"], *given), params), _freeze(given)])
    return out


def probe_gaussian_sample_and_score(fn):
    g = _gen(11)
    mean = torch.randn(5, 3, generator=g).requires_grad_()
    logstd = (torch.randn(1, 3, generator=g) * 0.7).requires_grad_()
    rows = (torch.randn(5, 3, generator=g) * 0.7).requires_grad_()
    given = torch.randn(5, 3, generator=g) * 2
    out = []
    for ls in (logstd, rows):
        for kwargs in ({}, {"action": given}, {"deterministic": True}, {"action": given, "deterministic": True}):
            kw = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
            torch.manual_seed(0)
            out.append(with_grads(fn(mean, ls, **kw), [mean, ls]))
    return out


def probe_clip_and_score(fn):
    g = _gen(12)
    out = []
    for batch, low, high in ((6, [-2.0, 0.0], [2.0, 1.0]), (1, [-1.0, -3.0], [0.5, 3.0])):
        raw = torch.randn(batch, 2, generator=g) * 2
        mean = torch.randn(batch, 2, generator=g)
        logstd = torch.randn(1, 2, generator=g) * 0.5
        lo, hi = np.array(low, np.float32), np.array(high, np.float32)
        given = [raw.clone(), mean.clone(), logstd.clone(), lo.copy(), hi.copy()]
        out.append([_freeze(fn(*given)), _freeze(given)])
    return out


def _normalizer_state(norm):
    return _freeze([getattr(norm, k, None) for k in ("mean", "var", "count")])


def probe_running_obs_normalizer(cls):
    rng = np.random.default_rng(13)
    norm = cls(3)
    out = [_normalizer_state(norm)]
    for n in (5, 1, 40):
        batch = torch.as_tensor(rng.normal([3.0, 0.0, -2.0], [2.0, 0.0, 0.5], size=(n, 3)), dtype=torch.float32)
        norm.update(batch.clone())
        out.append(_normalizer_state(norm))
    obs = torch.tensor([[10.0, 1e-4, 0.0], [200.0, -5e-5, 0.5], [-3.0, 0.0, -2.0]])
    out.append(_freeze(norm.normalize(obs.clone())))
    norm.update_running_mean = False
    out += [_freeze(norm(obs.clone())), _normalizer_state(norm)]
    norm.update_running_mean = True
    out += [_freeze(norm(obs.clone())), _normalizer_state(norm)]
    return out


PROBES = {
    "check_policy_network": probe_policy_network, "check_sampling": probe_sampling,
    "check_layer_init": probe_layer_init, "check_actor_critic": probe_actor_critic,
    "check_gae": probe_gae, "check_gae_with_truncation": probe_gae_with_truncation,
    "check_clipped_surrogate": probe_clipped_surrogate, "check_value_loss": probe_value_loss,
    "check_ppo_loss": probe_ppo_loss, "check_approx_kl": probe_approx_kl, "check_ppo_update": probe_ppo_update,
    "check_preprocess_frame": probe_preprocess_frame, "check_frame_stacker": probe_frame_stacker,
    "check_shaping_reward": probe_shaping_reward, "check_masked_lstm_unroll": probe_masked_lstm_unroll,
    "check_sequence_minibatches": probe_sequence_minibatches, "check_reunroll_logprobs": probe_reunroll_logprobs,
    "check_gaussian_sample_and_score": probe_gaussian_sample_and_score, "check_clip_and_score": probe_clip_and_score,
    "check_running_obs_normalizer": probe_running_obs_normalizer,
}


# ============================================================================================
# classifying a check's verdict
# ============================================================================================
#: The fallback messages of ppo_course/checks/*.py (the last ``raise Diagnosis`` of a comparison, reached when no
#: specific mistake reproduced the learner's output), and whether each points at a location (True) or not.
#: Modules that localise with ``_hypotheses.first_difference`` end their fallbacks with "none of the N common
#: mistakes tried reproduces ..." instead: see :data:`HYPOTHESES_FALLBACK`.
FALLBACKS = [
    # networks.py (ex01, ex02)
    (r"^logprob is not log pi\(action\): logits \[", True),  # that row's logits and action
    (r"^entropy is off: logits \[", True),
    (r"^sampled frequencies do not match softmax\(logits\)", False),
    (r"^logprob of the given action is not log pi\(action\): logits \[", True),
    (r"^wrong scale: layer_init\(", True),  # the layer and its arguments
    (r"^layer_init\(.*\): every bias entry should be", True),
    (r"^entropy does not match the policy: expected", False),
    # gae.py (ex03), loss.py (ex04): their other fallbacks are HYPOTHESES_FALLBACK's
    (r"^returns should equal advantages \+ values; in case '.*' at t=\d+", True),
    # loop.py (ex05)
    (r"your weights differ from the reference by up to", False),
    (r"^your update returned [-+\d.e]+(inf|nan)?: return the mean approx_kl", False),
    (r"^the gradient optimizer\.step\(\) used at minibatch \d+ of epoch \d+ is not", True),
    # doom.py (ex06)
    (r"^for .*, pixel \(\d+, \d+\) should be", True),
    (r"^after .* the stack should be \[.*\] \(oldest first\), got", True),
    (r"^in case '.*' \(max_x = .*\) the \w+ term should be", True),  # the case and the term
    (r"^in case '.*' new_max_x should be max\(max_x, x\)", True),
    # recurrent.py (ex07)
    (r"^outputs differ in case '.*': first at t=\d+, env \d+", True),
    (r"^minibatch \d+ with env_indices .* should have flat_indices", True),
    (r"^the ratio exp\(new - old\) should be 1 before any update; .* at t=\d+, env \d+", True),
    # gaussian.py (ex08)
    (r"^logprob is not log N\(action; mean, exp\(log_std\)\) summed", True),  # that row
    (r"^entropy is off: log_std \[", True),
    (r"^the log-prob returned with a sampled action is not that action's \(row \d+", True),
    (r"^\d+ draws from mean .* have means .* and standard deviations .*: expected", False),
    (r"^logprob is not log N\(raw sample; mean, exp\(log_std\)\): row \d+", True),
    (r"^row \d+, dimension \d+: raw sample", True),
    (r"^after update \d+ \(a batch of \d+ rows\) (mean|var)\[\d+\]", True),
    (r"^normalize: observation \d+, dimension \d+", True),
]
_FALLBACKS = [(re.compile(pattern, re.S), localised) for pattern, localised in FALLBACKS]
#: The fallback of the hypothesis-style checks (gae.py, loss.py): localised when it names a location.
HYPOTHESES_FALLBACK = re.compile(r"none of the \d+ common mistakes tried reproduces")
LOCATION = re.compile(r"\bt=\d+|\benv \d+|\bsample \d+|\brow \d+|\bdimension \d+|\bminibatch \d+|"
                      r"\bthe \w+ term differs|\bfirst differs at")


def classify(status: str, message: str) -> str:
    """``survived``, ``named``, ``localised`` or ``generic`` for a check's (status, message)."""
    if status == "pass":
        return "survived"
    if status == "error":
        return "localised" if re.search(r"\(line \d+", message) else "generic"
    if status == "fail":
        for pattern, localised in _FALLBACKS:
            if pattern.search(message):
                return "localised" if localised else "generic"
        if HYPOTHESES_FALLBACK.search(message):
            return "localised" if LOCATION.search(message) else "generic"
        return "named"
    return "generic"  # "todo": a mutant cannot raise NotImplementedError


# ============================================================================================
# running a mutant (in a forked child)
# ============================================================================================
_BASE: dict = {}  # (notebook, cell) -> namespace after the setup cells


def base_namespace(task: Task) -> dict:
    key = (task.notebook, task.cell)
    if key not in _BASE:
        ns = {"__name__": "__main__"}
        for index, source in task.setup:
            filename = f"<{task.notebook.name} cell {index}>"
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            exec(compile(source, filename, "exec"), ns)
        _BASE[key] = ns
    return _BASE[key]


def build(task: Task, source: str, tag: str):
    """The object the cell ``source`` defines, executed after the task's setup cells (source registered in
    linecache so that a crash shows the learner's line, as in Jupyter)."""
    ns = dict(base_namespace(task))
    filename = f"<{task.notebook.name} cell {task.cell}{tag}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), ns)
    return ns[task.name]


def _check_fn(task: Task):
    import ppo_course.checks as checks
    return getattr(checks, task.check)


def evaluate(mutant: Mutant, reference) -> dict:
    """Equivalence, then the check's verdict. Runs in the child."""
    task = mutant.task
    try:
        obj = build(task, mutant.source, " (mutant)")
    except SyntaxError:
        return {"kind": "stillborn", "why": "does not compile"}
    try:
        equivalent = same(PROBES[task.check](obj), reference)
        why = ""
    except Exception as exc:  # noqa: BLE001 - any crash means "not equivalent"
        if mutant.kind == "detach" and isinstance(exc, AttributeError) and "detach" in str(exc):
            return {"kind": "stillborn", "why": "detach on a non-tensor"}
        equivalent, why = False, f"{type(exc).__name__}: {exc}"
    result = _check_fn(task)(build(task, mutant.source, " (mutant)"), quiet=True)
    return {"kind": "equivalent" if equivalent else "mutant", "probe_crash": why, "status": result.status,
            "message": result.message, "verdict": classify(result.status, result.message)}


def run_all(mutants: list[Mutant], references: dict, jobs: int, timeout: float, progress: bool) -> None:
    """Each mutant in its own forked child (at most ``jobs`` at once), killed after ``timeout`` seconds."""
    tmp = Path(tempfile.mkdtemp(prefix="check_mutants_"))
    pending = list(enumerate(mutants))
    active: dict[int, tuple] = {}
    done = 0
    while pending or active:
        while pending and len(active) < jobs:
            i, mutant = pending.pop(0)
            out = tmp / f"{i}.json"
            pid = os.fork()
            if pid == 0:  # child
                code = 0
                try:
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, 1)
                    os.dup2(devnull, 2)
                    result = evaluate(mutant, references[id(mutant.task)])
                    out.write_text(json.dumps(result))
                except BaseException as exc:  # noqa: BLE001
                    out.write_text(json.dumps({"kind": "harness-error", "why": f"{type(exc).__name__}: {exc}"}))
                    code = 1
                finally:
                    os._exit(code)
            active[pid] = (i, mutant, out, time.monotonic())
        time.sleep(0.005)
        for pid, (i, mutant, out, start) in list(active.items()):
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == 0 and time.monotonic() - start > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                mutant.result = {"kind": "mutant", "status": "timeout", "message": f"no verdict within {timeout:g} s",
                                 "verdict": "generic", "probe_crash": "timeout"}
            elif finished:
                try:
                    mutant.result = json.loads(out.read_text())
                except (OSError, ValueError):
                    mutant.result = {"kind": "harness-error", "why": "the child wrote no result"}
            else:
                continue
            del active[pid]
            done += 1
            if progress and done % 50 == 0:
                print(f"  ... {done}/{len(mutants)} mutants", file=sys.stderr, flush=True)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


# ============================================================================================
# report
# ============================================================================================
COLUMNS = ("mutants", "stillborn", "equiv", "equiv-rejected", "N", "survived", "killed", "named", "localised",
           "generic", "diagnosed")


def tally(mutants: list[Mutant]) -> dict:
    t = dict.fromkeys(COLUMNS, 0)
    for m in mutants:
        r = m.result
        t["mutants"] += 1
        if r.get("kind") in ("stillborn", "harness-error"):
            t["stillborn"] += 1
        elif r["kind"] == "equivalent":
            t["equiv"] += 1
            t["equiv-rejected"] += r["status"] != "pass"
        else:
            t["N"] += 1
            t[r["verdict"] if r["verdict"] != "survived" else "survived"] += 1
    t["killed"] = t["N"] - t["survived"]
    t["diagnosed"] = t["named"] + t["localised"]
    return t


def print_table(groups: list[tuple[str, list[Mutant]]], notes: list[str]) -> dict:
    width = max(len(label) for label, _ in groups) + 2
    header = f"{'task':<{width}}" + "".join(f"{c:>{max(len(c), 5) + 2}}" for c in COLUMNS)
    print(header)
    print("-" * len(header))
    total: list[Mutant] = []
    by_ex: dict[str, list[Mutant]] = {}
    for label, ms in groups:
        by_ex.setdefault(label[:4], []).extend(ms)
    current = None
    for label, ms in groups:
        if current is not None and label[:4] != current and len(
                [g for g in groups if g[0][:4] == current]) > 1:
            _row(f"{current} (all)", tally(by_ex[current]), width)
        current = label[:4]
        _row(label, tally(ms), width)
        total += ms
    if current is not None and len([g for g in groups if g[0][:4] == current]) > 1:
        _row(f"{current} (all)", tally(by_ex[current]), width)
    print("-" * len(header))
    t = tally(total)
    _row("total", t, width)
    for note in notes:
        print(note)
    return t


def _row(label, t, width):
    print(f"{label:<{width}}" + "".join(f"{t[c]:>{max(len(c), 5) + 2}}" for c in COLUMNS))


def list_survivors(mutants: list[Mutant]) -> None:
    rows = [m for m in mutants if m.result.get("kind") == "mutant" and m.result["verdict"] in ("survived", "generic")]
    rows += [m for m in mutants if m.result.get("kind") == "equivalent" and m.result["status"] != "pass"]
    print(f"\n{len(rows)} surviving or undiagnosed mutants (and equivalent ones a check rejects):")
    for m in rows:
        r = m.result
        what = {"survived": "SURVIVED", "generic": "UNDIAGNOSED"}.get(r.get("verdict"), "SURVIVED")
        if r["kind"] == "equivalent":
            what = "EQUIVALENT BUT REJECTED"
        line = m.source.splitlines()[m.lineno - 1].strip() if m.lineno <= len(m.source.splitlines()) else ""
        print(f"- [{what}] {m.task.notebook.relative_to(ROOT)} cell {m.task.cell} line {m.lineno} "
              f"({m.task.check}): {m.desc}")
        print(f"    mutated line: {_short(line, 110)}")
        if r.get("probe_crash") and what != "SURVIVED":
            print(f"    on the probe inputs: {_short(r['probe_crash'], 110)}")
        print(f"    check: [{r['status']}] {_short(r['message'], 300)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exercise", help="only this exercise, e.g. ex03")
    parser.add_argument("--list-survivors", action="store_true", help="print each surviving or undiagnosed mutant")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (forked processes)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per mutant")
    parser.add_argument("--cap", type=int, default=150, help="at most this many mutants per task (seeded sample)")
    parser.add_argument("--cap-update", type=int, default=80, help="the cap for ex05's ppo_update (it trains)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample when a task is capped")
    parser.add_argument("--match", help="only the mutants whose description contains this text")
    parser.add_argument("--list-equivalent", action="store_true", help="print the mutants judged equivalent")
    args = parser.parse_args(argv)
    try:
        import cv2
        cv2.setNumThreads(0)
    except ImportError:
        pass

    start = time.perf_counter()
    tasks = discover(args.exercise)
    if not tasks:
        print(f"no task found for {args.exercise!r}")
        return 2
    references, groups, notes, everything = {}, [], [], []
    for task in tasks:
        reference = build(task, task.source, "")
        result = _check_fn(task)(reference, quiet=True)
        if not result:
            print(f"{task.label}: the reference fails its own check: {result}")
            return 1
        references[id(task)] = PROBES[task.check](reference)
        if not same(PROBES[task.check](build(task, task.source, "")), references[id(task)]):
            print(f"{task.label}: the probe is not deterministic on the reference")
            return 1
        mutants = make_mutants(task)
        cap = args.cap_update if task.check == "check_ppo_update" else args.cap
        if len(mutants) > cap:
            notes.append(f"note: {task.label}: {cap} of {len(mutants)} mutants sampled (random.Random({args.seed}))")
            mutants = sorted(random.Random(args.seed).sample(mutants, cap), key=lambda m: (m.lineno, m.desc))
        if args.match:
            mutants = [m for m in mutants if args.match in m.desc]
        groups.append((task.label, mutants))
        everything += mutants
    if not notes:
        notes.append(f"note: no task has more than --cap {args.cap} mutants (--cap-update {args.cap_update} for "
                     "ppo_update): none sampled")
    print(f"{len(tasks)} tasks, {len(everything)} mutants; {args.jobs} at a time, {args.timeout:g} s timeout each",
          file=sys.stderr, flush=True)
    run_all(everything, references, args.jobs, args.timeout, progress=True)

    print()
    t = print_table(groups, notes)
    print("columns: N = non-equivalent mutants; killed = N - survived; diagnosed = named + localised "
          "(see the module docstring)")
    if args.list_survivors:
        list_survivors(everything)
    if args.list_equivalent:
        equivalent = [m for m in everything if m.result.get("kind") == "equivalent"]
        print(f"\n{len(equivalent)} equivalent mutants (same outputs and gradients on the probe inputs):")
        for m in equivalent:
            print(f"- {m.task.label} cell {m.task.cell} line {m.lineno}: {m.desc}")
    print(f"\nrun time {time.perf_counter() - start:.0f} s")
    print(f"mutants_killed = {t['killed']}/{t['N']}, diagnosed = {t['diagnosed']}/{t['N']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

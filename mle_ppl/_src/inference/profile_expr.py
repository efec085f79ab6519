"""Scalar expressions of a model's parameters (``"exp(beta[x1])"``, ``"mu / sigma"``), parsed
safely and compiled with their gradient and Hessian, for profiling a function of the parameters.

The expression is parsed with :mod:`ast` and evaluated over a whitelist (numbers, parameter names
and labels, ``+ - * / **`` and the functions in :data:`_FUNCS`): nothing is executed.
"""

from __future__ import annotations

import ast
import weakref
from collections.abc import Callable

import numpy as np
import pytensor
import pytensor.tensor as pt

from mle_ppl._src.engine.likelihood import _compile
from mle_ppl._src.errors import MLEError, did_you_mean

_FUNCS: dict[str, Callable] = {
    "exp": pt.exp, "log": pt.log, "log1p": pt.log1p, "expm1": pt.expm1, "sqrt": pt.sqrt,
    "abs": pt.abs, "sigmoid": pt.sigmoid, "logit": lambda v: pt.log(v) - pt.log1p(-v),
    "tanh": pt.tanh, "sin": pt.sin, "cos": pt.cos, "sum": pt.sum, "square": pt.square,
}
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b,
           ast.Pow: lambda a, b: a**b}

_EXPR_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def param_names(lik) -> dict:
    names = {b.name: c for b, c in zip(lik.blocks, lik._constrained, strict=True)}
    names.update(zip(lik.deterministic_names, lik._deterministics, strict=True))
    return names


def _flat_constrained(lik):
    return pt.concatenate([c.ravel() for c in lik._constrained])


def _parse(expr: str, lik):
    names = param_names(lik)
    labels = list(lik.labels)
    flat = _flat_constrained(lik)
    allowed = sorted(set(names) | set(labels))

    def sub_key(node) -> str:
        if isinstance(node, ast.Tuple):
            return ", ".join(sub_key(e) for e in node.elts)
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return "-" + sub_key(node.operand)
        raise MLEError(f"expression {expr!r}: unsupported index {ast.dump(node)}.")

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return pt.constant(float(node.value))
        if isinstance(node, ast.Name):
            if node.id in names:
                return names[node.id]
            raise MLEError(f"expression {expr!r}: unknown name {node.id!r}; the model's "
                           f"parameters are {allowed}.{did_you_mean(node.id, allowed)}")
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            label = f"{node.value.id}[{sub_key(node.slice)}]"
            if label in labels:
                return flat[labels.index(label)]
            raise MLEError(f"expression {expr!r}: unknown parameter {label!r}; labels are "
                           f"{labels}.{did_you_mean(label, labels)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            if node.func.id not in _FUNCS:
                raise MLEError(f"expression {expr!r}: function {node.func.id!r} is not allowed; "
                               f"use one of {sorted(_FUNCS)}.")
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise MLEError(f"expression {expr!r}: unsupported syntax ({type(node).__name__}); use "
                       "numbers, parameter names/labels, + - * / **, and "
                       f"{sorted(_FUNCS)}.")

    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as err:
        raise MLEError(f"expression {expr!r} is not valid: {err.msg}.") from None
    return ev(tree)


def expression_fn(lik, expr):
    if not hasattr(lik, "_x"):
        raise MLEError(f"profiles of expressions such as {expr!r} are not available for "
                       f"{type(lik).__name__} objectives (mixed models, streamed data) yet: "
                       "only the in-memory likelihood compiles them. Profile a parameter label "
                       f"instead (e.g. fit.profile({lik.labels[0]!r})); the interval of a "
                       "monotone function of one parameter is that function of its interval.")
    cache = _EXPR_CACHE.setdefault(lik, {})
    if expr in cache:
        return cache[expr]
    if callable(expr):
        g = expr(param_names(lik))
    else:
        g = _parse(expr, lik)
    g = pt.as_tensor(g)
    if g.ndim != 0:
        g = g.squeeze() if all(s == 1 for s in g.type.shape) else None
    if g is None:
        raise MLEError(f"expression {expr!r} is not a scalar; profile a scalar function of the "
                       "parameters (index a vector, e.g. beta[0]).")
    grad = pt.grad(g, lik._x)
    hess = pytensor.gradient.jacobian(grad, lik._x, vectorize=True,
                                      disconnected_inputs="ignore")
    fn0 = _compile([lik._x], [g, grad, hess], lik.mode, model=lik.model)

    def fn(x):
        c, a, h = fn0(np.asarray(x, dtype=float))
        return float(c), np.asarray(a, dtype=float), 0.5 * (h + np.asarray(h).T)

    cache[expr] = fn
    return fn

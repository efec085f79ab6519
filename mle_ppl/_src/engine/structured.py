"""The Hessian of a likelihood whose parameters enter through linear predictors: Dᵀ diag(w) D.

In a GLM (and the linear part of most models) a coefficient vector ``β`` enters the negative
log-likelihood only through a linear predictor ``η = D β`` with a data matrix ``D`` (n x k), and
the NLL is a sum of per-row terms ``Σᵢ ℓᵢ(η₁ᵢ, η₂ᵢ, ..., θ)``. Then

    ∂²NLL/∂βⱼ∂βₗ = Dⱼᵀ diag(wⱼₗ) Dₗ,   wⱼₗ,ᵢ = ∂²ℓᵢ/∂ηⱼᵢ∂ηₗᵢ,

one weighted cross-product (one BLAS pass over the data) per pair of predictors, where the generic
vectorised Jacobian builds n x p intermediates row by row of the Hessian. The weights come from two
reverse-mode passes on the graph with ``η`` cut out as a free vector (``grad`` of the per-row
gradient's sum is the diagonal of the second derivative exactly because the terms are per row).
The other parameters (an intercept, σ, a dispersion: few, see :data:`MAX_OTHER`) get their rows of
the Hessian by reverse mode, one pass per parameter.

:func:`structured_hessian` finds that structure in the graph of a PyMC model's NLL, checks it
(see :func:`_separable`), and returns ``None`` whenever the model does not have it, so the caller
keeps the generic path: structure is used only when it is proven from the graph.
"""

from __future__ import annotations

import numpy as np

#: At most this many parameters outside the linear predictors (their Hessian rows are generic).
MAX_OTHER = 16

_LINEAR_ELEMWISE = ("Add", "Sub", "Neg")

#: Why the last :func:`structured_hessian` call fell back to the generic Hessian (diagnostics).
last_reason = ""


def _no(node) -> bool:
    global last_reason
    last_reason = f"not separable by rows at {node}"
    return False


def _const_int(var):
    from pytensor.tensor.basic import get_underlying_scalar_constant_value
    from pytensor.tensor.exceptions import NotScalarConstantError

    try:
        return int(get_underlying_scalar_constant_value(var))
    except (NotScalarConstantError, TypeError, ValueError):
        return None


def _param_range(v, x) -> tuple[int, int] | None:
    """``(start, stop)`` if ``v`` is the 1-D slice ``x[start:stop]`` (through a reshape)."""
    from pytensor.tensor.shape import Reshape, SpecifyShape
    from pytensor.tensor.subtensor import Subtensor

    if v.ndim != 1:
        return None
    node = v.owner
    while node is not None and isinstance(node.op, SpecifyShape):  # model files pin shapes
        node = node.inputs[0].owner
    if node is not None and isinstance(node.op, Reshape):
        node = node.inputs[0].owner
        if node is None or node.outputs[0].ndim != 1:
            return None
    if node is None or not isinstance(node.op, Subtensor) or node.inputs[0] is not x:
        return None
    idx = node.op.idx_list
    if len(idx) != 1 or not isinstance(idx[0], slice) or idx[0].step is not None:
        return None
    bounds = [_const_int(i) for i in node.inputs[1:]]
    if len(bounds) != 2 or None in bounds:
        return None
    return bounds[0], bounds[1]


def _linear_terms(nll, x):
    """``[(T, D, (start, stop))]``: the nodes ``T = D @ x[start:stop]`` with ``D`` free of ``x``."""
    from pytensor.graph.traversal import ancestors, applys_between
    from pytensor.tensor.elemwise import DimShuffle
    from pytensor.tensor.math import Dot

    out = []
    for node in applys_between([x], [nll]):
        op = node.op
        core = getattr(op, "core_op", op)
        if not isinstance(core, Dot) or len(node.inputs) != 2:
            continue
        D, v = node.inputs
        if D.ndim != 2 or x in set(ancestors([D])):
            continue
        term = node.outputs[0]
        if v.ndim == 2:  # matmul: D @ b[:, None], then squeezed
            vin = v.owner
            if vin is None or not isinstance(vin.op, DimShuffle):
                continue
            if tuple(vin.op.new_order) != (0, "x"):
                continue
            v = vin.inputs[0]
            clients = _clients(nll, term)
            if (len(clients) != 1 or not isinstance(clients[0].op, DimShuffle)
                    or tuple(clients[0].op.new_order) != (0,)):
                continue
            term = clients[0].outputs[0]
        rng = _param_range(v, x)
        if rng is not None and term.ndim == 1:
            out.append((term, D, rng))
    return out


def _clients(out, var):
    from pytensor.graph.traversal import applys_between

    return [n for n in applys_between([var], [out]) if var in n.inputs]


def _is_float(v) -> bool:
    return getattr(v.type, "dtype", "").startswith(("float", "complex"))


def _separable(nll, ts) -> bool:
    """True when ``nll`` is a sum over rows of terms each depending on row i of every ``t`` only.

    Tracks, for every variable that depends on a ``t``, either the axis that indexes rows ("row"
    values: only elementwise ops, broadcasting, reductions over other axes) or that it is a linear
    combination of full sums of row values ("sum" values: add, subtract, negate, scale). Anything
    else that is differentiable (a reduction over rows followed by a nonlinearity, a gather, a dot
    product, a cumulative sum...) makes it non-separable.
    """
    from pytensor.graph.traversal import toposort
    from pytensor.scalar.basic import Add
    from pytensor.tensor.elemwise import CAReduce, DimShuffle, Elemwise

    state: dict = {t: ("row", 0) for t in ts}
    for node in toposort([nll], blockers=ts):
        deps = [state[i] for i in node.inputs if i in state]
        if not deps:
            continue
        outs = node.outputs
        if not any(_is_float(o) for o in outs):
            continue  # boolean/integer results (support checks): no derivative flows through
        op = node.op
        name = type(op).__name__
        kinds = {d[0] for d in deps}
        if len(kinds) != 1:
            return _no(node)
        kind = kinds.pop()
        if kind == "sum":
            lin = isinstance(op, Elemwise) and type(op.scalar_op).__name__ in _LINEAR_ELEMWISE
            scale = (isinstance(op, Elemwise) and type(op.scalar_op).__name__ == "Mul"
                     and len(deps) == 1)
            ok = (lin or scale or isinstance(op, DimShuffle) or name in (
                "TensorFromScalar", "ScalarFromTensor", "SpecifyShape", "Alloc",
                "CheckParameterValue")
                or (isinstance(op, CAReduce) and isinstance(op.scalar_op, Add)))
            if not ok:
                return _no(node)
            for o in outs:
                state[o] = ("sum", None)
            continue
        axes = {d[1] for d in deps}
        if len(axes) != 1:
            return _no(node)
        ax = axes.pop()
        if isinstance(op, Elemwise):
            if any(i in state and i.ndim != outs[0].ndim for i in node.inputs):
                return _no(node)
            for o in outs:
                state[o] = ("row", ax)
        elif isinstance(op, DimShuffle):
            order = list(op.new_order)
            if ax not in order:
                return _no(node)
            state[outs[0]] = ("row", order.index(ax))
        elif isinstance(op, CAReduce):
            if not isinstance(op.scalar_op, Add):
                return _no(node)
            inp = node.inputs[0]
            red = tuple(range(inp.ndim)) if op.axis is None else tuple(op.axis)
            if ax in red:
                if len(red) != inp.ndim:
                    return _no(node)
                state[outs[0]] = ("sum", None)
            else:
                state[outs[0]] = ("row", ax - sum(1 for a in red if a < ax))
        elif name in ("SpecifyShape", "CheckParameterValue"):
            if node.inputs[0] not in state:
                return _no(node)
            state[outs[0]] = state[node.inputs[0]]
        elif name == "Alloc":
            if node.inputs[0] not in state:
                return _no(node)
            state[outs[0]] = ("row", ax + outs[0].ndim - node.inputs[0].ndim)
        else:
            return _no(node)
    return state.get(nll, (None,))[0] == "sum"


def cut_predictors(nll, x, n_params: int, *, any_length: bool = False):
    """``(terms, ts, nll_r, others)``: the linear predictors ``terms = [(T, D, (a, b))]`` of
    ``nll``, cut out as free vectors ``ts`` in ``nll_r``, and the positions of the parameters
    outside them; None when the NLL does not have that structure or it cannot be proven.

    ``any_length``: the vectors ``ts`` have an unknown length (the graph then does not depend on
    the number of rows, as for lifted data; see :mod:`~mle_ppl._src.engine.compiled`).
    """
    from pytensor.graph.replace import clone_replace
    from pytensor.graph.traversal import applys_between
    from pytensor.tensor.subtensor import Subtensor
    from pytensor.tensor.type import TensorType

    terms = _linear_terms(nll, x)
    if not terms:
        return None
    structured = np.zeros(n_params, dtype=bool)
    for _, _, (a, b) in terms:
        structured[a:b] = True
    others = np.flatnonzero(~structured)
    if len(others) > MAX_OTHER:
        return None
    if any_length:
        ts = [TensorType(t.dtype, shape=tuple(1 if s == 1 else None for s in t.type.shape))()
              for t, _, _ in terms]
    else:
        ts = [t.type() for t, _, _ in terms]
    nll_r = clone_replace(nll, {t: new for (t, _, _), new in zip(terms, ts, strict=True)},
                          rebuild_strict=not any_length)
    # the structured coordinates must be gone from the graph once the predictors are cut out
    for node in applys_between([x], [nll_r]):
        if x not in node.inputs:
            continue
        rng = (_param_range(node.outputs[0], x) if isinstance(node.op, Subtensor)
               and node.outputs[0].ndim == 1 else None)
        if rng is None and isinstance(node.op, Subtensor) and node.outputs[0].ndim == 0:
            k = _const_int(node.inputs[1]) if len(node.inputs) == 2 else None
            rng = None if k is None else (k, k + 1)
        if rng is None or structured[rng[0]:rng[1]].any():
            return None
    if not _separable(nll_r, ts):
        return None
    return terms, ts, nll_r, others


def structured_hessian(nll, x, n_params: int):
    """The Hessian graph of ``nll`` in ``x`` through its linear predictors, or None (no such
    structure, or it could not be proven: the caller then uses the generic Jacobian)."""
    import pytensor
    import pytensor.tensor as pt
    from pytensor.graph.replace import graph_replace

    cut = cut_predictors(nll, x, n_params)
    if cut is None:
        return None
    terms, ts, nll_r, others = cut
    grads = pytensor.grad(nll_r, ts, disconnected_inputs="ignore")
    back = dict(zip(ts, [t for t, _, _ in terms], strict=True))
    H = pt.zeros((n_params, n_params))
    for j, (_, Dj, (a, b)) in enumerate(terms):
        for k in range(j, len(terms)):
            _, Dk, (c, d) = terms[k]
            w = pytensor.grad(grads[j].sum(), ts[k], disconnected_inputs="ignore",
                              return_disconnected="None")
            if w is None:
                continue
            w = graph_replace(w, back, strict=False)
            block = pt.dot(Dj.T, w[:, None] * Dk)
            H = pt.inc_subtensor(H[a:b, c:d], block)
            if k != j:
                H = pt.inc_subtensor(H[c:d, a:b], block.T)
    if len(others):
        # one reverse pass per other parameter (a scalar gradient each: PyTensor's vectorised
        # Jacobian of a few gradient entries gave a shape error under Numba on the Longley model)
        g = pytensor.grad(nll, x)
        for k in others.tolist():
            row = pytensor.grad(g[k], x)
            H = pt.set_subtensor(H[k, :], row)
            H = pt.set_subtensor(H[:, k], row)
    return H

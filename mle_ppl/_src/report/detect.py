"""Detection of a closed-form structure in a model's PyTensor graph (mean or linear predictor).

Detection works on the graph of the observed variable's distribution parameters, on PyMC's flat
unconstrained vector (the layout of :class:`~mle_ppl.Likelihood`):

- a *mean* (Normal ``mu``) or *linear predictor* (the ``eta`` inside ``p = sigmoid(eta)``,
  ``p = Φ(eta)``, ``p = softmax(eta)``) is searched among the sub-expressions of the parameter's
  graph and confirmed numerically (``p == link⁻¹(eta)`` to 1e-12 at two parameter points);
- it is affine in the parameters iff its Jacobian is constant: the Jacobian is evaluated at three
  parameter points and compared, and then *is* the design matrix.

:func:`detect` returns the :class:`Detected` design, outcome and offset, or raises
:class:`NotApplicable` saying why no closed form applies; it never guesses.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special

from mle_ppl._src.report.reference import link_inv

if TYPE_CHECKING:
    from mle_ppl._src.engine.likelihood import Likelihood

#: Absolute tolerance when matching p == link⁻¹(eta) during detection (probabilities are O(1)).
LINK_ATOL = 1e-12

#: The one registry of likelihoods a closed form exists for: observed op -> (family, links).
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "NormalRV": ("normal", ("identity",)),
    "BernoulliRV": ("bernoulli", ("logit", "probit")),
    "BinomialRV": ("binomial", ("logit", "probit")),
    "CategoricalRV": ("categorical", ("softmax",)),
}


@dataclass(frozen=True)
class _Graph:
    """Compiled pieces of one model's observed distribution, cached per pm.Model."""

    family: str
    observed: str
    fn: Any  #: x -> [target, *aux, *candidates]
    n_aux: int
    candidates: tuple  #: symbolic candidates (on the flat x)
    cand_blocks: tuple[frozenset[str], ...]  #: value-var names each candidate depends on
    aux_blocks: tuple[frozenset[str], ...]
    x: Any  #: the flat symbolic input
    jac_cache: dict = field(default_factory=dict)


_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class NotApplicable(Exception):  # noqa: N818 - internal control flow, never escapes
    """No closed form applies; ``reason`` says why (caught by the closed-form check)."""

    reason: str


def _depends(var, value_names: set[str], memo: dict) -> frozenset[str]:
    """Names of the value variables ``var`` depends on (memoised walk)."""
    stack = [var]
    while stack:
        v = stack[-1]
        if id(v) in memo:
            stack.pop()
            continue
        if v.owner is None:
            memo[id(v)] = frozenset({v.name}) if v.name in value_names else frozenset()
            stack.pop()
            continue
        pending = [i for i in v.owner.inputs if id(i) not in memo]
        if pending:
            stack.extend(pending)
            continue
        deps = frozenset().union(*(memo[id(i)] for i in v.owner.inputs))
        for out in v.owner.outputs:
            memo[id(out)] = deps
        stack.pop()
    return memo[id(var)]


def _graph_for(lik: Likelihood) -> _Graph:
    model = lik.model
    cached = _GRAPHS.get(model)
    if cached is not None:
        return cached
    from pymc.pytensorf import join_nonshared_inputs
    from pytensor.graph.traversal import ancestors

    from mle_ppl._src.engine.likelihood import _compile

    if len(model.observed_RVs) != 1:
        raise NotApplicable(
            f"the model has {len(model.observed_RVs)} observed variables "
            f"({', '.join(lik.observed_names)}); the closed forms cover one observed outcome.")
    rv = model.observed_RVs[0]
    op_name = type(rv.owner.op).__name__
    if op_name not in FAMILIES:
        dist = op_name.removesuffix("RV")
        raise NotApplicable(
            f"the likelihood of {rv.name!r} is {dist}: closed forms exist for a Normal with a "
            "linear mean (least squares) and for Bernoulli/Binomial (logit or probit link) or "
            "Categorical (softmax) outcomes (cross-entropy); no closed form applies to "
            f"{dist}.")
    family = FAMILIES[op_name][0]
    params = list(rv.owner.op.dist_params(rv.owner))
    if family == "normal":
        target, aux = params[0], [params[1]]  # mu; sigma
    elif family == "bernoulli":
        target, aux = params[0], []
    elif family == "binomial":
        target, aux = params[1], [params[0]]  # p; n
    else:
        target, aux = params[0], []
    replaced = model.replace_rvs_by_values([target, *aux])
    target_r, aux_r = replaced[0], replaced[1:]
    value_names = {v.name for v in model.value_vars}
    memo: dict = {}
    if family == "normal":
        cands = [target_r]
    else:
        cands = []
        seen = set()
        for v in ancestors([target_r]):
            if id(v) in seen or v is target_r:
                continue
            seen.add(id(v))
            if getattr(v.type, "dtype", "").startswith("float") and _depends(v, value_names, memo):
                cands.append(v)
    if not cands:
        raise NotApplicable(
            f"the distribution of {rv.name!r} does not depend on any free parameter.")
    cand_blocks = tuple(_depends(c, value_names, memo) for c in cands)
    aux_blocks = tuple(_depends(a, value_names, memo) for a in aux_r)
    outputs = [target_r, *aux_r, *cands]
    outputs, x = join_nonshared_inputs(lik._point, outputs, model.value_vars)
    fn = _compile([x], outputs, lik.mode, model=lik.model)
    graph = _Graph(family=family, observed=rv.name, fn=fn, n_aux=len(aux_r),
                   candidates=tuple(outputs[1 + len(aux_r):]), cand_blocks=cand_blocks,
                   aux_blocks=aux_blocks, x=x)
    _GRAPHS[model] = graph
    return graph


def _jacobian_fn(lik: Likelihood, graph: _Graph, index: int):
    fn = graph.jac_cache.get(index)
    if fn is None:
        import pytensor

        from mle_ppl._src.engine.likelihood import _compile

        cand = graph.candidates[index]
        jac = pytensor.gradient.jacobian(cand.ravel(), graph.x, vectorize=True,
                                         disconnected_inputs="ignore")
        fn = _compile([graph.x], jac, lik.mode, model=lik.model)
        graph.jac_cache[index] = fn
    return fn



def _matches(link: str, v: np.ndarray, p: np.ndarray) -> float | None:
    """The factor ``c`` with ``p == link⁻¹(c · v)`` (to 1e-12), or None.

    ``c`` is 1 unless the model computes the inverse link with a rounded constant: PyMC's
    ``invprobit(x) = 0.5·erfc(−x/√2)`` takes √2 in float32, i.e. Φ(c·x) with c = 1 + 1.2e-8. The
    predictor ``c·v`` is what the model uses, so the reference solves the same problem.
    """
    v = np.asarray(v, dtype=float)
    p = np.asarray(p, dtype=float)
    if link == "softmax" and (v.ndim == 0 or p.ndim == 0 or v.shape[-1] != p.shape[-1]):
        return None
    try:
        q = link_inv(link, v)
        vb, pb = np.broadcast_arrays(v, p)
    except ValueError:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        if np.all(np.abs(q - p) <= LINK_ATOL):
            return 1.0
        if link == "softmax":
            return None
        inv = special.logit if link == "logit" else special.ndtri
        ok = (pb > 1e-3) & (pb < 1 - 1e-3) & (np.abs(vb) > 1e-3)
        if not np.any(ok):
            return None
        c = float(np.median(inv(pb[ok]) / vb[ok]))
        if abs(c - 1.0) > 1e-6:
            return None
        if np.all(np.abs(link_inv(link, c * v) - p) <= LINK_ATOL):
            return c
    return None


@dataclass(frozen=True)
class Detected:
    """What :func:`detect` found: the linear structure of the observed variable's likelihood."""

    family: str
    link: str
    observed: str
    y: np.ndarray
    design: np.ndarray  #: (N, m) for identity/logit/probit; (N, K, m) for softmax
    offset: np.ndarray  #: (N,) or (N, K): the linear predictor at θ = 0 of the mean blocks
    cols: np.ndarray  #: indices of the mean parameters in the flat vector
    theta_hat: np.ndarray  #: the fit's values of those parameters
    eta_hat: np.ndarray  #: linear predictor at the fit (N,) or (N, K)
    aux: tuple  #: normal: (sigma values,), binomial: (trials,)
    aux_blocks: tuple[frozenset[str], ...]
    mean_names: tuple[str, ...]  #: variable names of the mean parameters
    link_factor: float = 1.0  #: p = link⁻¹(c·eta): c ≠ 1 when the model rounds a constant
    candidate: int = 0  #: which sub-expression of the graph is the mean / linear predictor


def _points(x_hat: np.ndarray, cols: np.ndarray) -> list[np.ndarray]:
    """Two extra parameter points, moving only ``cols`` (fixed seed: reproducible)."""
    rng = np.random.default_rng(20240607)
    out = []
    for scale in (0.5, 2.0):
        x = np.array(x_hat, dtype=float)
        x[cols] = x[cols] + scale * (1.0 + np.abs(x[cols])) * rng.standard_normal(len(cols))
        out.append(x)
    return out


def detect(lik: Likelihood, x: np.ndarray) -> Detected:
    """The design, outcome and offset of the fit at ``x``, or :class:`NotApplicable` and why."""
    graph = _graph_for(lik)
    x_hat = np.array(x, dtype=float)
    outs, y = evaluate(lik, x_hat)
    target, cvals = outs[0], outs[1 + graph.n_aux:]
    links = FAMILIES[{"normal": "NormalRV", "bernoulli": "BernoulliRV", "binomial": "BinomialRV",
                      "categorical": "CategoricalRV"}[graph.family]][1]
    factor = 1.0
    if graph.family == "normal":
        index, link = 0, "identity"
    else:
        index = link = None
        for i, v in enumerate(cvals):
            for lk in links:
                factor = _matches(lk, v, target)
                if factor is not None:
                    index, link = i, lk
                    break
            if index is not None:
                break
        if index is None:
            what = {"bernoulli": "p", "binomial": "p", "categorical": "p"}[graph.family]
            forms = " or ".join(f"{'sigmoid' if lk == 'logit' else 'Φ' if lk == 'probit' else lk}"
                                "(eta)" for lk in links)
            raise NotApplicable(
                f"{what} of {graph.observed!r} is not of the form {forms} for any sub-expression "
                "eta of its graph; the cross-entropy identity holds, but no closed form or "
                "linear-predictor reference applies.")
    names = graph.cand_blocks[index]
    if not names:
        raise NotApplicable(f"the {'mean' if link == 'identity' else 'linear predictor'} of "
                             f"{graph.observed!r} has no free parameters: nothing to estimate "
                             "in closed form.")
    blocks = [b for b in lik.blocks if b.value_name in names]
    bounded = [b.name for b in blocks if b.transform is not None or np.isfinite(b.lower)
               or np.isfinite(b.upper)]
    what = "mean" if link == "identity" else "linear predictor"
    if bounded:
        raise NotApplicable(
            f"the {what} of {graph.observed!r} depends on the bounded parameter(s) {bounded}; "
            "the closed forms are for unconstrained coefficients.")
    for blocks_aux in graph.aux_blocks:
        shared = blocks_aux & names
        if shared:
            raise NotApplicable(
                f"the {'scale' if graph.family == 'normal' else 'number of trials'} of "
                f"{graph.observed!r} depends on {sorted(shared)}, which the {what} uses too.")
    cols = np.concatenate([np.arange(b.start, b.start + b.size) for b in blocks]).astype(int)
    jfn = _jacobian_fn(lik, graph, index)
    J = np.asarray(jfn(x_hat), dtype=float)
    jmax = max(float(np.max(np.abs(J))), 1e-300) if J.size else 1.0
    for xp in _points(x_hat, cols):
        Jp = np.asarray(jfn(xp), dtype=float)
        if not np.allclose(J, Jp, rtol=1e-9, atol=1e-12 * jmax):
            kind = "nonlinear least squares" if link == "identity" else "a nonlinear predictor"
            raise NotApplicable(
                f"the {what} of {graph.observed!r} is not linear in "
                f"{[b.name for b in blocks]} (its Jacobian changes with the parameter values): "
                f"{kind} has no closed form.")
    return assemble(graph, x_hat, outs, y, link, factor, index, cols, J[:, cols],
                    tuple(b.name for b in blocks))


def evaluate(lik: Likelihood, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The graph's outputs at ``x`` (target, aux, candidates) and the observed values."""
    graph = _graph_for(lik)
    outs = [np.asarray(o, dtype=float) for o in graph.fn(np.array(x, dtype=float))]
    return outs, np.asarray(lik.current_observed()[graph.observed])


def assemble(graph: _Graph, x_hat: np.ndarray, outs: list[np.ndarray], y: np.ndarray, link: str,
             factor: float, index: int, cols: np.ndarray, Jc: np.ndarray,
             mean_names: tuple[str, ...]) -> Detected:
    """The :class:`Detected` design of candidate ``index`` from its Jacobian's columns ``cols``
    (``Jc``: one row per element of the candidate), broadcast to one row per observation."""
    target, aux = outs[0], outs[1:1 + graph.n_aux]
    v_hat = outs[1 + graph.n_aux + index]
    eta_shape = v_hat.shape
    # broadcast the linear predictor (and its Jacobian) to one row per observation
    if link == "softmax":
        K = target.shape[-1]
        full = np.broadcast_shapes(y.shape + (K,), eta_shape, target.shape)
    else:
        full = np.broadcast_shapes(y.shape, eta_shape, target.shape)
    Jfull = factor * Jc.reshape(eta_shape + (len(cols),))
    Jfull = np.broadcast_to(Jfull, full + (len(cols),))
    eta_hat = np.broadcast_to(factor * v_hat, full)
    m = len(cols)
    if link == "softmax":
        K = full[-1]
        design = np.array(Jfull.reshape(-1, K, m))
        eta_hat = np.array(eta_hat.reshape(-1, K))
        y_flat = np.asarray(y).reshape(-1)
    else:
        design = np.array(Jfull.reshape(-1, m))
        eta_hat = np.array(eta_hat.reshape(-1))
        y_flat = np.broadcast_to(y, full).reshape(-1)
    theta_hat = x_hat[cols]
    offset = eta_hat - design @ theta_hat
    aux_vals = tuple(np.broadcast_to(a, full[:len(full) - (link == "softmax")]).reshape(-1)
                     for a in aux)
    return Detected(family=graph.family, link=link, observed=graph.observed,
                     y=np.asarray(y_flat, dtype=float), design=design, offset=offset, cols=cols,
                     theta_hat=theta_hat, eta_hat=eta_hat, aux=aux_vals,
                     aux_blocks=graph.aux_blocks, mean_names=mean_names, link_factor=factor,
                     candidate=index)



"""Closed-form cross-checks: the MLE is least squares (MSE) or minimum cross-entropy.

Maximising a likelihood is minimising a loss. For a Gaussian likelihood whose mean is linear in the
parameters the MLE of the coefficients is the least-squares solution and ``σ̂² = RSS/n`` (the mean
squared error at it), so ``NLL(θ̂) = n/2 · (log(2π · MSE) + 1)``. For Bernoulli, binomial and
categorical likelihoods the negative log-likelihood *is* ``n ×`` the cross-entropy of the fitted
probabilities. This module recognises those models from the PyMC graph, recomputes the solution
independently of PyMC (NumPy/SciPy only: SVD least squares, frequencies, a Newton/IRLS loop) and
sets it beside a fit: :func:`closed_form_check` (``fit.closed_form()``).

Detection works on the graph of the observed variable's distribution parameters, on PyMC's flat
unconstrained vector (the layout of :class:`~mle_ppl.Likelihood`):

- a *mean* (Normal ``mu``) or *linear predictor* (the ``eta`` inside ``p = sigmoid(eta)``,
  ``p = Φ(eta)``, ``p = softmax(eta)``) is searched among the sub-expressions of the parameter's
  graph and confirmed numerically (``p == link⁻¹(eta)`` to 1e-12 at two parameter points);
- it is affine in the parameters iff its Jacobian is constant: the Jacobian is evaluated at three
  parameter points and compared, and then *is* the design matrix.

Anything else says "no closed form applies" and why; it never guesses.

The two "practical points" of the seed live here too: :func:`underflow_demo` (the likelihood as a
product underflows, the log-likelihood does not) and :func:`compare_optimizers` (gradient descent
against Newton / L-BFGS, with loss histories).
"""

from __future__ import annotations

import contextlib
import html
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import special

from mle_ppl._src.errors import MLEError

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate
    from mle_ppl._src.engine.likelihood import Likelihood

EPS = np.finfo(float).eps

#: Default tolerance for parameters, in standard errors: a difference below 1e-3 SE is invisible to
#: any inference. A Newton fit at its default tolerance (Newton decrement < 1e-10) is within
#: sqrt(2e-10) ≈ 1.4e-5 SE of the optimum; L-BFGS (decrement < 1e-8) within 1.4e-4 SE.
SE_TOL = 1e-3
#: Default tolerance for log-likelihood identities, in log-likelihood units. An optimum found to
#: 1e-3 SE in each of p parameters is off by ~p/2·1e-6 in log-likelihood; 1e-6 is far below what
#: a likelihood-ratio test can see (chi² quantiles are O(1)).
LOGLIK_TOL = 1e-6
#: Relative tolerance of pure evaluation identities (same θ, two formulas): rounding only.
EVAL_RTOL = 1e-9
#: Absolute tolerance when matching p == link⁻¹(eta) during detection (probabilities are O(1)).
LINK_ATOL = 1e-12

#: The one registry of likelihoods a closed form exists for: observed op -> (family, links).
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "NormalRV": ("normal", ("identity",)),
    "BernoulliRV": ("bernoulli", ("logit", "probit")),
    "BinomialRV": ("binomial", ("logit", "probit")),
    "CategoricalRV": ("categorical", ("softmax",)),
}


# =====================================================================================  results
@dataclass(frozen=True)
class CheckRow:
    """One line of a :class:`ClosedFormCheck` table."""

    quantity: str
    mle: float  #: value from the fit
    closed_form: float  #: value from the independent computation
    tol: float  #: absolute tolerance used
    tol_rule: str  #: how ``tol`` was chosen (e.g. "1e-3 SE")

    @property
    def abs_diff(self) -> float:
        return abs(self.mle - self.closed_form)

    @property
    def rel_diff(self) -> float:
        denom = abs(self.closed_form)
        return self.abs_diff / denom if denom > 0 else (0.0 if self.abs_diff == 0 else math.inf)

    @property
    def agrees(self) -> bool:
        return bool(np.isfinite(self.mle) and np.isfinite(self.closed_form)
                    and self.abs_diff <= self.tol)


@dataclass(frozen=True)
class ClosedFormCheck:
    """The fit beside its closed-form (or independent reference) solution.

    Created by :meth:`MLEFit.closed_form` / :func:`closed_form_check`. Immutable.

    Attributes
    ----------
    applies : bool
        Whether a closed form applies to this model.
    kind : {"least_squares", "cross_entropy"} or None
    family, link : str or None
        E.g. ``"normal"``/``"identity"``, ``"bernoulli"``/``"logit"``,
        ``"categorical"``/``"softmax"``.
    reason : str
        What was detected (or why nothing applies).
    reference : str
        How the closed-form column was computed.
    rows : tuple of CheckRow
        Quantity, MLE value, closed-form value, tolerance.
    extras : mapping
        Further numbers (RSS, MSE, unbiased s², cross-entropy, ...).
    notes : tuple of str
        Explanations (e.g. why σ̂² = RSS/n differs from the unbiased RSS/(n − p)).
    references : mapping
        Closed-form value per model variable (original shapes), for ArviZ reference lines.

    Examples
    --------
    >>> check = fit.closed_form()          # doctest: +SKIP
    >>> check.agrees, check.table()        # doctest: +SKIP
    """

    applies: bool
    reason: str
    kind: str | None = None
    family: str | None = None
    link: str | None = None
    observed: str | None = None
    reference: str = ""
    rows: tuple[CheckRow, ...] = ()
    extras: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    references: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))
        refs = {}
        for k, v in self.references.items():
            a = np.array(v, dtype=float, copy=True)
            a.flags.writeable = False
            refs[k] = a
        object.__setattr__(self, "references", MappingProxyType(refs))

    @property
    def agrees(self) -> bool | None:
        """True if every row agrees within its tolerance; None when no closed form applies."""
        if not self.applies:
            return None
        return all(r.agrees for r in self.rows)

    def table(self) -> pd.DataFrame:
        """DataFrame indexed by quantity: mle, closed_form, abs_diff, rel_diff, tol, agrees."""
        cols = ["mle", "closed_form", "abs_diff", "rel_diff", "tol", "tol_rule", "agrees"]
        data = [[r.mle, r.closed_form, r.abs_diff, r.rel_diff, r.tol, r.tol_rule, r.agrees]
                for r in self.rows]
        return pd.DataFrame(data, columns=cols, index=pd.Index([r.quantity for r in self.rows],
                                                               name="quantity"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN and infinities become ``None``)."""
        if not self.applies:
            return {"applies": False, "reason": self.reason}
        return {
            "applies": True, "kind": self.kind, "family": self.family, "link": self.link,
            "observed": self.observed, "reason": self.reason, "reference": self.reference,
            "agrees": self.agrees,
            "rows": [{"quantity": r.quantity, "mle": _num(r.mle),
                      "closed_form": _num(r.closed_form), "abs_diff": _num(r.abs_diff),
                      "rel_diff": _num(r.rel_diff), "tol": _num(r.tol), "tol_rule": r.tol_rule,
                      "agrees": r.agrees} for r in self.rows],
            "extras": {k: _num(v) for k, v in self.extras.items()},
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        if not self.applies:
            return f"Closed-form check: no closed form applies: {self.reason}"
        verdict = "all identities agree" if self.agrees else "DISAGREEMENT"
        head = (f"Closed-form check ({self.kind}: {self.family}, {self.link} link): {verdict}\n"
                f"{self.reason}\nreference: {self.reference}")
        with pd.option_context("display.float_format", "{:.10g}".format, "display.width", 140,
                               "display.max_colwidth", 60):
            body = self.table().to_string()
        extras = "\n".join(f"{k:>28}: {v:.10g}" for k, v in self.extras.items())
        notes = "".join(f"\nNote: {n}" for n in self.notes)
        return f"{head}\n\n{body}\n\n{extras}{notes}"

    def __repr__(self) -> str:
        if not self.applies:
            return f"<ClosedFormCheck: does not apply ({self.reason[:60]}...)>"
        return (f"<ClosedFormCheck {self.kind} ({self.family}/{self.link}): {len(self.rows)} rows, "
                f"agrees={self.agrees}>")

    def _repr_html_(self) -> str:
        if not self.applies:
            return ("<p><b>Closed-form check:</b> no closed form applies: "
                    f"{html.escape(self.reason)}</p>")
        verdict = ("<span style='color:#070'>all identities agree</span>" if self.agrees
                   else "<span style='color:#b00'><b>DISAGREEMENT</b></span>")
        tab = self.table().to_html(float_format=lambda v: f"{v:.10g}")
        extras = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                         f"<td>{v:.10g}</td></tr>" for k, v in self.extras.items())
        notes = "".join(f"<p><i>Note:</i> {html.escape(n)}</p>" for n in self.notes)
        return (f"<div><b>Closed-form check</b> ({html.escape(str(self.kind))}: "
                f"{html.escape(str(self.family))}, {html.escape(str(self.link))} link): {verdict}"
                f"<p>{html.escape(self.reason)}<br>reference: {html.escape(self.reference)}</p>"
                f"{tab}<table>{extras}</table>{notes}</div>")


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


# ===================================================================================  detection
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
_CHECKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _NotApplicable(Exception):  # noqa: N818 - internal control flow, never escapes
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
        raise _NotApplicable(
            f"the model has {len(model.observed_RVs)} observed variables "
            f"({', '.join(lik.observed_names)}); the closed forms cover one observed outcome.")
    rv = model.observed_RVs[0]
    op_name = type(rv.owner.op).__name__
    if op_name not in FAMILIES:
        dist = op_name.removesuffix("RV")
        raise _NotApplicable(
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
        raise _NotApplicable(
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


def _softmax(v: np.ndarray) -> np.ndarray:
    z = v - np.max(v, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def _link_inv(link: str, v: np.ndarray) -> np.ndarray:
    if link == "logit":
        return special.expit(v)
    if link == "probit":
        return special.ndtr(v)
    return _softmax(v)


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
        q = _link_inv(link, v)
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
        if np.all(np.abs(_link_inv(link, c * v) - p) <= LINK_ATOL):
            return c
    return None


@dataclass(frozen=True)
class _Detected:
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


def _points(x_hat: np.ndarray, cols: np.ndarray) -> list[np.ndarray]:
    """Two extra parameter points, moving only ``cols`` (fixed seed: reproducible)."""
    rng = np.random.default_rng(20240607)
    out = []
    for scale in (0.5, 2.0):
        x = np.array(x_hat, dtype=float)
        x[cols] = x[cols] + scale * (1.0 + np.abs(x[cols])) * rng.standard_normal(len(cols))
        out.append(x)
    return out


def _detect(fit: Estimate) -> _Detected:
    lik = fit.likelihood
    graph = _graph_for(lik)
    x_hat = np.array(fit.x, dtype=float)
    outs = [np.asarray(o, dtype=float) for o in graph.fn(x_hat)]
    target, aux = outs[0], outs[1:1 + graph.n_aux]
    cvals = outs[1 + graph.n_aux:]
    y = np.asarray(lik.current_observed()[graph.observed])
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
            raise _NotApplicable(
                f"{what} of {graph.observed!r} is not of the form {forms} for any sub-expression "
                "eta of its graph; the cross-entropy identity holds, but no closed form or "
                "linear-predictor reference applies.")
    names = graph.cand_blocks[index]
    if not names:
        raise _NotApplicable(f"the {'mean' if link == 'identity' else 'linear predictor'} of "
                             f"{graph.observed!r} has no free parameters: nothing to estimate "
                             "in closed form.")
    blocks = [b for b in lik.blocks if b.value_name in names]
    bounded = [b.name for b in blocks if b.transform is not None or np.isfinite(b.lower)
               or np.isfinite(b.upper)]
    what = "mean" if link == "identity" else "linear predictor"
    if bounded:
        raise _NotApplicable(
            f"the {what} of {graph.observed!r} depends on the bounded parameter(s) {bounded}; "
            "the closed forms are for unconstrained coefficients.")
    for blocks_aux in graph.aux_blocks:
        shared = blocks_aux & names
        if shared:
            raise _NotApplicable(
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
            raise _NotApplicable(
                f"the {what} of {graph.observed!r} is not linear in "
                f"{[b.name for b in blocks]} (its Jacobian changes with the parameter values): "
                f"{kind} has no closed form.")
    v_hat = cvals[index]
    eta_shape = v_hat.shape
    # broadcast the linear predictor (and its Jacobian) to one row per observation
    if link == "softmax":
        K = target.shape[-1]
        full = np.broadcast_shapes(y.shape + (K,), eta_shape, target.shape)
    else:
        full = np.broadcast_shapes(y.shape, eta_shape, target.shape)
    Jfull = factor * J[:, cols].reshape(eta_shape + (len(cols),))
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
    return _Detected(family=graph.family, link=link, observed=graph.observed,
                     y=np.asarray(y_flat, dtype=float), design=design, offset=offset, cols=cols,
                     theta_hat=theta_hat, eta_hat=eta_hat, aux=aux_vals,
                     aux_blocks=graph.aux_blocks,
                     mean_names=tuple(b.name for b in blocks), link_factor=factor)


# =============================================================================  least squares
@dataclass(frozen=True)
class LeastSquares:
    """Least-squares solution by SVD of the column-equilibrated design (array layer)."""

    coef: np.ndarray
    rss: float
    rank: int
    xtx_inv: np.ndarray  #: (X'X)^-1 (pseudo-inverse when rank deficient)
    singular_values: np.ndarray  #: of the equilibrated design


def least_squares(X: np.ndarray, z: np.ndarray) -> LeastSquares:
    """Minimise ``||z - X b||²`` by SVD of ``X`` with unit-norm columns, plus one refinement step.

    Column equilibration makes the solution insensitive to column scales (10⁶ apart is common);
    the SVD handles near-collinearity and reports the numerical rank.

    Examples
    --------
    >>> X = np.c_[np.ones(4), [0.0, 1, 2, 3]]
    >>> least_squares(X, np.array([1.0, 3, 5, 7])).coef.round(12)
    array([1., 2.])
    """
    X = np.asarray(X, dtype=float)
    z = np.asarray(z, dtype=float)
    n, m = X.shape
    norms = np.linalg.norm(X, axis=0)
    d = np.where(norms > 0, norms, 1.0)
    Xs = X / d
    U, s, Vt = np.linalg.svd(Xs, full_matrices=False)
    rank = int(np.sum(s > s[0] * max(n, m) * EPS)) if s.size and s[0] > 0 else 0
    Ur, sr, Vr = U[:, :rank], s[:rank], Vt[:rank].T

    def solve(r):
        return Vr @ ((Ur.T @ r) / sr)

    bs = solve(z)
    bs = bs + solve(z - Xs @ bs)  # iterative refinement: recovers digits lost to conditioning
    coef = bs / d
    resid = z - X @ coef
    inv_s = (Vr / sr**2) @ Vr.T
    return LeastSquares(coef=coef, rss=float(resid @ resid), rank=rank,
                        xtx_inv=inv_s / np.outer(d, d), singular_values=s)


def _regression(fit: Estimate, det: _Detected, *, se_tol: float, loglik_tol: float
                ) -> ClosedFormCheck:
    X, y, c = det.design, det.y, det.offset
    n, m = X.shape
    ls = least_squares(X, y - c)
    lik = fit.likelihood
    labels = [lik.labels[i] for i in det.cols]
    rss = ls.rss
    mse = rss / n
    sig = np.asarray(det.aux[0], dtype=float)
    if not np.all(sig == sig.flat[0]):
        raise _NotApplicable(
            f"the scale (sigma) of {det.observed!r} varies across observations: the MLE is "
            "weighted least squares, not the ordinary least squares checked here.")
    sigma_hat = float(sig.flat[0])
    sigma_free = bool(det.aux_blocks[0])
    rows: list[CheckRow] = []
    notes: list[str] = []
    sigma2 = mse if sigma_free else sigma_hat**2
    se = np.sqrt(np.clip(np.diag(ls.xtx_inv) * sigma2, 0, None))
    if ls.rank == m:
        for lab, est, ref, s in zip(labels, det.theta_hat, ls.coef, se, strict=True):
            rows.append(_param_row(lab, est, ref, s, se_tol))
    else:
        notes.append(
            f"the design has rank {ls.rank} < {m} columns: the coefficients are not identifiable "
            "(many solutions fit equally well), so only RSS, σ̂ and the log-likelihood are "
            "compared.")
    resid_hat = y - c - X @ det.theta_hat
    mse_hat = float(resid_hat @ resid_hat) / n
    rows.append(CheckRow("MSE at θ̂ = RSS(θ̂)/n", mse_hat, mse, 2 * loglik_tol / n * mse,
                         f"Δloglik {loglik_tol:g} (n/2·ΔMSE/MSE)"))
    if sigma_free:
        se_sigma = math.sqrt(mse) / math.sqrt(2 * n)
        rows.append(CheckRow("sigma (σ̂ vs √MSE = √(RSS/n))", sigma_hat, math.sqrt(mse),
                             max(se_tol * se_sigma, 4 * EPS * math.sqrt(mse)), f"{se_tol:g} SE"))
        ll_cf = -0.5 * n * (math.log(2 * math.pi * mse) + 1.0)
        rows.append(CheckRow("log-likelihood = −n/2·(log(2π·MSE) + 1)", fit.loglik, ll_cf,
                             max(loglik_tol, EVAL_RTOL * abs(ll_cf)),
                             f"{loglik_tol:g} (loglik units)"))
    else:
        ll_cf = -0.5 * n * math.log(2 * math.pi * sigma_hat**2) - rss / (2 * sigma_hat**2)
        rows.append(CheckRow("log-likelihood = −n/2·log(2πσ²) − RSS/(2σ²) (σ known)",
                             fit.loglik, ll_cf, max(loglik_tol, EVAL_RTOL * abs(ll_cf)),
                             f"{loglik_tol:g} (loglik units)"))
        notes.append(f"sigma is fixed at {sigma_hat:g} (not a parameter): only the coefficients "
                     "and the log-likelihood are compared.")
    extras = {"n": n, "p (mean parameters)": m, "RSS": rss, "MSE = RSS/n": mse,
              "sqrt(MSE)": math.sqrt(mse)}
    if n > ls.rank:
        s2 = rss / (n - ls.rank)
        extras["s² = RSS/(n−p) (unbiased)"] = s2
        extras["s = sqrt(RSS/(n−p))"] = math.sqrt(s2)
        if sigma_free:
            notes.append(
                f"σ̂² = RSS/n = {mse:.6g} is the maximum-likelihood estimate; it is biased "
                f"downwards (E[σ̂²] = σ²·(n−p)/n). The unbiased s² = RSS/(n−p) = {s2:.6g} "
                f"(what lm() and statsmodels' OLS report as the scale) is larger by the factor "
                f"n/(n−p) = {n / (n - ls.rank):.6g}; both give the same coefficients.")
    references = {}
    for name in det.mean_names:
        b = next(b for b in lik.blocks if b.name == name)
        idx = [int(np.flatnonzero(det.cols == i)[0]) for i in range(b.start, b.start + b.size)]
        references[name] = ls.coef[idx].reshape(b.shape)
    if sigma_free and len(det.aux_blocks[0]) == 1:
        (vname,) = det.aux_blocks[0]
        b = next(b for b in lik.blocks if b.value_name == vname)
        if b.shape == () and np.isclose(fit.values[b.name], sigma_hat, rtol=1e-12):
            references[b.name] = np.asarray(math.sqrt(mse))
    params = ", ".join(det.mean_names)
    reason = (f"Normal likelihood for {det.observed!r} with a mean linear in ({params}) "
              "(identity link): the MLE of the coefficients is the least-squares solution and "
              "σ̂² = RSS/n is the mean squared error.")
    return ClosedFormCheck(applies=True, reason=reason, kind="least_squares", family="normal",
                           link="identity", observed=det.observed,
                           reference="NumPy SVD least squares on the column-equilibrated design "
                                     "(+1 refinement step)",
                           rows=tuple(rows), extras=extras, notes=tuple(notes),
                           references=references)


def _param_row(label: str, est: float, ref: float, se: float, se_tol: float) -> CheckRow:
    if np.isfinite(se) and se > 0:
        tol = max(se_tol * se, 8 * EPS * abs(ref))
        return CheckRow(label, float(est), float(ref), tol, f"{se_tol:g} SE")
    return CheckRow(label, float(est), float(ref), 1e-6 * max(abs(ref), 1.0), "1e-6 relative")


# ==============================================================================  cross-entropy
def _binary_terms(eta: np.ndarray, k: np.ndarray, trials: np.ndarray, link: str):
    """Per-observation log-likelihood (without log C(n, k)) and its first two eta-derivatives.

    Clipping-free: log p and log(1 − p) come from log-sum-exp (logit) or log Φ (probit).
    """
    if link == "logit":
        lp, lq = -np.logaddexp(0.0, -eta), -np.logaddexp(0.0, eta)
        p = special.expit(eta)
        d1 = k - trials * p
        d2 = -trials * p * special.expit(-eta)
    else:
        lp, lq = special.log_ndtr(eta), special.log_ndtr(-eta)
        lphi = -0.5 * eta**2 - 0.5 * math.log(2 * math.pi)
        lam1 = np.exp(lphi - lp)  # φ(η)/Φ(η)
        lam0 = np.exp(lphi - lq)  # φ(η)/Φ(−η)
        d1 = k * lam1 - (trials - k) * lam0
        d2 = -k * lam1 * (eta + lam1) - (trials - k) * lam0 * (lam0 - eta)
    # 0·log 0 = 0: an outcome with no trials in a class contributes nothing
    ll = np.where(k > 0, k * lp, 0.0) + np.where(trials - k > 0, (trials - k) * lq, 0.0)
    return ll, d1, d2


def _categorical_terms(eta: np.ndarray, y: np.ndarray):
    logp = eta - special.logsumexp(eta, axis=-1, keepdims=True)
    yi = y.astype(int)
    ll = logp[np.arange(len(yi)), yi]
    return ll, logp


@dataclass(frozen=True)
class NewtonResult:
    """Reference solution of a binary or categorical likelihood (array layer)."""

    theta: np.ndarray
    loglik: float
    info: np.ndarray  #: observed information (−Hessian) at ``theta``
    iterations: int
    converged: bool
    rank: int


class _Problem:
    """Log-likelihood, gradient and information of a linear-predictor model, in NumPy."""

    def __init__(self, det: _Detected):
        self.det = det
        self.link = det.link
        self.X = det.design
        self.c = det.offset
        self.y = det.y
        self.trials = det.aux[0].astype(float) if det.family == "binomial" else np.ones_like(det.y)

    def eta(self, theta):
        return self.c + self.X @ theta

    def evaluate(self, theta):
        eta = self.eta(theta)
        if self.link == "softmax":
            ll, logp = _categorical_terms(eta, self.y)
            p = np.exp(logp)
            onehot = np.zeros_like(p)
            onehot[np.arange(len(self.y)), self.y.astype(int)] = 1.0
            g = np.einsum("nkm,nk->m", self.X, onehot - p)
            Jp = np.einsum("nkm,nk->nm", self.X, p)
            info = np.einsum("nkm,nk,nkl->ml", self.X, p, self.X) - Jp.T @ Jp
            return float(np.sum(ll)), g, info
        ll, d1, d2 = _binary_terms(eta, self.y, self.trials, self.link)
        g = self.X.T @ d1
        info = (self.X * (-d2)[:, None]).T @ self.X
        return float(np.sum(ll)), g, info

    def loglik(self, theta):
        eta = self.eta(theta)
        if self.link == "softmax":
            return float(np.sum(_categorical_terms(eta, self.y)[0]))
        return float(np.sum(_binary_terms(eta, self.y, self.trials, self.link)[0]))


def _scaled_solve(info: np.ndarray, g: np.ndarray):
    diag = np.abs(np.diag(info))
    d = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    w, V = np.linalg.eigh(d[:, None] * info * d[None, :])
    keep = w > 1e-12 * max(float(np.max(np.abs(w))), 1e-300)
    a = (V[:, keep].T @ (d * g)) / w[keep]
    return d * (V[:, keep] @ a), int(np.sum(keep))


def newton_reference(problem: _Problem, *, max_iter: int = 200) -> NewtonResult:
    """Maximise the log-likelihood by Newton's method (IRLS for the logit link) with halving.

    Independent of PyMC and of the engine: NumPy/SciPy only, starting from θ = 0. Converged when
    the Newton decrement is below 1e-14 (then one more full step); the information is
    Jacobi-scaled and inverted by eigendecomposition (pseudo-inverse if singular).
    """
    m = problem.X.shape[-1]
    theta = np.zeros(m)
    f, g, info = problem.evaluate(theta)
    converged = False
    rank0 = _scaled_solve(info, g)[1]  # rank of the design's information at θ = 0
    rank = m
    it = 0
    for it in range(1, max_iter + 1):
        step, rank = _scaled_solve(info, g)
        if rank < rank0:
            break  # fitted probabilities saturate: the information underflows (separation)
        dec = 0.5 * float(g @ step)
        t = 1.0
        while True:
            f_new = problem.loglik(theta + t * step)
            if np.isfinite(f_new) and f_new >= f - 64 * EPS * max(abs(f), 1.0):
                break
            t *= 0.5
            if t < 1e-12:
                break
        if t < 1e-12:
            break
        theta = theta + t * step
        f, g, info = problem.evaluate(theta)
        # Converged: tiny Newton decrement AND a step that no longer moves θ. Under separation the
        # decrement also vanishes (the log-likelihood tends to 0) while θ keeps running off.
        if dec < 1e-14 and t == 1.0:
            if np.max(np.abs(step), initial=0.0) <= 1e-6 * (1.0 + np.max(np.abs(theta))):
                converged = True
                break
        if np.max(np.abs(theta)) > 1e8:
            break
    return NewtonResult(theta=theta, loglik=f, info=info, iterations=it, converged=converged,
                        rank=rank)


def _cross_entropy(fit: Estimate, det: _Detected, *, se_tol: float, loglik_tol: float
                   ) -> ClosedFormCheck:
    prob = _Problem(det)
    lik = fit.likelihood
    labels = [lik.labels[i] for i in det.cols]
    m = len(det.cols)
    n_obs = len(det.y)
    rows: list[CheckRow] = []
    notes: list[str] = []
    trials = prob.trials
    n_ce = float(np.sum(trials))  # observations (Bernoulli, categorical) or trials (binomial)
    ll_hat = prob.loglik(det.theta_hat)  # numpy, at the fit's θ̂
    ce_hat = -ll_hat / n_ce
    log_binom = 0.0
    if det.family == "binomial":
        log_binom = float(np.sum(special.gammaln(trials + 1) - special.gammaln(det.y + 1)
                                 - special.gammaln(trials - det.y + 1)))
        label = "log-likelihood = −N·CE(θ̂) + Σ log C(n, k)"
    else:
        label = "log-likelihood = −n·CE(θ̂)"
    ll_id = -n_ce * ce_hat + log_binom
    rows.append(CheckRow(label, fit.loglik, ll_id, max(EVAL_RTOL * max(abs(ll_id), 1.0), 1e-12),
                         f"{EVAL_RTOL:g} relative (same θ̂, two formulas)"))
    # the reference solution: closed form on saturated designs, Newton/IRLS otherwise
    sat = _saturated(prob)
    if sat is not None:
        theta_ref, groups, freqs, ok = sat
        reference = "observed frequencies (saturated design: the MLE probabilities are the " \
                    "relative frequencies of each outcome in each group of identical rows)"
        info = prob.evaluate(theta_ref)[2] if ok else None
        converged, rank = ok, m if ok else 0
        p_hat = _link_inv(det.link, det.eta_hat)
        for gi, (rows_g, f) in enumerate(zip(groups, freqs, strict=True)):
            i0 = rows_g[0]
            n_g = float(np.sum(trials[rows_g]))
            where = "" if len(groups) == 1 else f" | group of row {i0} (n={int(n_g)})"
            if det.link == "softmax":
                for k in range(len(f)):
                    se = math.sqrt(f[k] * (1 - f[k]) / n_g)
                    rows.append(CheckRow(f"P(y={k}{where})", float(p_hat[i0, k]), float(f[k]),
                                         max(se_tol * se, 1e-9), f"{se_tol:g} SE (binomial)"))
            else:
                se = math.sqrt(f * (1 - f) / n_g)
                rows.append(CheckRow(f"P(y=1{where})", float(p_hat[i0]), float(f),
                                     max(se_tol * se, 1e-9), f"{se_tol:g} SE (binomial)"))
            del gi
        if not ok:
            notes.append("an outcome has frequency 0 or 1 in some group: the MLE of the "
                         "coefficients is infinite (separation); only probabilities are compared.")
    else:
        ref = newton_reference(prob)
        theta_ref, info, converged, rank = ref.theta, ref.info, ref.converged, ref.rank
        reference = (f"NumPy Newton/IRLS from θ = 0 ({ref.iterations} iterations, "
                     f"{'converged' if ref.converged else 'NOT converged'})")
        if not ref.converged:
            notes.append("the reference Newton solver did not converge (the coefficients run "
                         "off: separation?); coefficients are not compared.")
    ce_ref = -prob.loglik(theta_ref) / n_ce
    rows.append(CheckRow("cross-entropy CE(θ̂) vs minimum CE", ce_hat, ce_ref,
                         max(loglik_tol / n_ce, EVAL_RTOL * abs(ce_ref)),
                         f"{loglik_tol:g}/N (loglik units / N)"))
    if converged and rank == m:
        w, V = np.linalg.eigh(info)
        cov = (V / w) @ V.T
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
        for lab, est, r, s in zip(labels, det.theta_hat, theta_ref, se, strict=True):
            rows.insert(len(rows) - 1, _param_row(lab, est, r, s, se_tol))
    elif converged:
        notes.append(f"the information matrix has rank {rank} < {m}: the coefficients are not "
                     "identifiable, so only the cross-entropy is compared.")
    if det.link_factor != 1.0:
        notes.append(f"the model computes p = {det.link}⁻¹(c·eta) with c = 1 "
                     f"{det.link_factor - 1:+.3g} (PyMC's invprobit takes √2 in float32); the "
                     "reference uses the same c, so it solves the model's own problem.")
    extras = {"n (observations)": n_obs, "CE(θ̂)": ce_hat, "min CE (reference)": ce_ref,
              "NLL(θ̂)": -fit.loglik}
    if det.family == "binomial":
        extras["N (trials)"] = n_ce
        extras["Σ log C(n, k)"] = log_binom
    references = {}
    if converged and rank == m:
        for name in det.mean_names:
            b = next(b for b in lik.blocks if b.name == name)
            idx = [int(np.flatnonzero(det.cols == i)[0]) for i in range(b.start, b.start + b.size)]
            references[name] = theta_ref[idx].reshape(b.shape)
    fam = {"bernoulli": "Bernoulli", "binomial": "Binomial", "categorical": "Categorical"}[
        det.family]
    reason = (f"{fam} likelihood for {det.observed!r} with a {det.link} link and a linear "
              f"predictor in ({', '.join(det.mean_names)}): NLL(θ) = n·CE(θ), so the MLE "
              "minimises the cross-entropy of the fitted probabilities.")
    return ClosedFormCheck(applies=True, reason=reason, kind="cross_entropy", family=det.family,
                           link=det.link, observed=det.observed, reference=reference,
                           rows=tuple(rows), extras=extras, notes=tuple(notes),
                           references=references)


def _saturated(prob: _Problem):
    """Closed form when the design has one parameter per free probability (groups of rows).

    Returns ``(theta, groups, freqs, finite)`` or None when the design is not saturated.
    """
    X, c = prob.X, prob.c
    n = X.shape[0]
    if prob.link == "softmax":
        K = X.shape[1]
        key = np.concatenate([c.reshape(n, -1), X.reshape(n, -1)], axis=1)
        free = K - 1
    else:
        K = 2
        key = np.concatenate([c[:, None], X], axis=1)
        free = 1
    m = X.shape[-1]
    uniq, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    G = len(uniq)
    if G * free != m:
        return None
    groups = [np.flatnonzero(inverse == g) for g in range(G)]
    groups.sort(key=lambda r: r[0])
    if prob.link == "softmax":
        C = np.eye(K) - 1.0 / K
        A = np.concatenate([C @ X[r[0]] for r in groups])
    else:
        A = np.stack([X[r[0]] for r in groups])
    if np.linalg.matrix_rank(A) != m:
        return None
    freqs = []
    for r in groups:
        if prob.link == "softmax":
            counts = np.bincount(prob.y[r].astype(int), minlength=K).astype(float)
            freqs.append(counts / counts.sum())
        else:
            freqs.append(float(np.sum(prob.y[r]) / np.sum(prob.trials[r])))
    if prob.link == "softmax":
        finite = all(np.all(f > 0) for f in freqs)
    else:
        finite = all(0 < f < 1 for f in freqs)
    if not finite:
        return np.full(m, np.nan), groups, freqs, False
    if prob.link == "softmax":
        C = np.eye(K) - 1.0 / K
        rhs = np.concatenate([C @ (np.log(f) - c[r[0]]) for r, f in zip(groups, freqs,
                                                                         strict=True)])
    else:
        inv = special.logit if prob.link == "logit" else special.ndtri
        rhs = np.array([inv(f) - c[r[0]] for r, f in zip(groups, freqs, strict=True)])
    theta = least_squares(A, rhs).coef
    return theta, groups, freqs, True


# ===================================================================================  public
def closed_form_check(fit: Estimate, *, se_tol: float = SE_TOL,
                      loglik_tol: float = LOGLIK_TOL) -> ClosedFormCheck:
    """Set a fit beside its closed-form solution (least squares or minimum cross-entropy).

    Parameters
    ----------
    fit : Estimate
        A fit of a ``pm.Model`` (or model file). Its model's data must not have changed since.
    se_tol : float
        Tolerance for parameters and probabilities, in standard errors of the closed-form
        solution (default 1e-3: invisible to inference; a converged Newton fit is ~1e-5 SE off).
    loglik_tol : float
        Tolerance for log-likelihood identities that involve the optimum, in log-likelihood
        units (default 1e-6).

    Returns
    -------
    ClosedFormCheck
        ``applies=False`` with the reason when no closed form applies.

    Examples
    --------
    >>> import numpy as np, pymc as pm, mle_ppl
    >>> x = np.array([0.0, 1, 2, 3]); y = np.array([0.1, 0.9, 2.2, 2.8])
    >>> with pm.Model() as m:
    ...     a = pm.Flat("a"); b = pm.Flat("b"); s = pm.HalfFlat("s")
    ...     _ = pm.Normal("y", a + b * x, s, observed=y)
    >>> mle_ppl.fit(m).closed_form().agrees
    True
    """
    if not (se_tol > 0 and loglik_tol > 0):
        raise MLEError(f"se_tol={se_tol!r} and loglik_tol={loglik_tol!r} must be positive "
                       f"(defaults {SE_TOL:g} and {LOGLIK_TOL:g}).")
    per_fit = _CHECKS.setdefault(fit, {})
    key = (float(se_tol), float(loglik_tol))
    if key not in per_fit:
        # MLEFit.bound() (when present) puts the fit's own data back into the model's containers
        bound = getattr(fit, "bound", None)
        with bound() if callable(bound) else contextlib.nullcontext():
            per_fit[key] = _compute(fit, se_tol=se_tol, loglik_tol=loglik_tol)
    return per_fit[key]


def _compute(fit: Estimate, *, se_tol: float, loglik_tol: float) -> ClosedFormCheck:
    lik = fit.likelihood
    current = -lik.value(np.asarray(fit.x))
    if not math.isclose(current, fit.loglik, rel_tol=1e-9, abs_tol=1e-9):
        raise MLEError(
            f"the model's data changed since this fit (log-likelihood at θ̂ was {fit.loglik:.10g}, "
            f"is now {current:.10g}; pm.set_data?). Refit, then call closed_form() before "
            "changing the data again.")
    try:
        det = _detect(fit)
        if det.family == "normal":
            return _regression(fit, det, se_tol=se_tol, loglik_tol=loglik_tol)
        return _cross_entropy(fit, det, se_tol=se_tol, loglik_tol=loglik_tol)
    except _NotApplicable as na:
        return ClosedFormCheck(applies=False, reason=na.reason)


def closed_form_dict(fit: Estimate) -> dict[str, Any]:
    """``fit.to_dict()["closed_form"]``: the check as a dict, or ``applies: false`` and why."""
    try:
        return closed_form_check(fit).to_dict()
    except MLEError as err:
        return {"applies": False, "reason": str(err)}
    except Exception as err:  # noqa: BLE001 - an export must not fail; the reason says why
        return {"applies": False, "reason": f"the closed-form check failed: "
                                             f"{type(err).__name__}: {err}"}


def closed_form_groups(fit: Estimate, posterior) -> dict[str, Any]:
    """The ``closed_form`` groups of the fit's DataTree (see :meth:`MLEFit.to_datatree`).

    Returns ``{"closed_form": Dataset, "closed_form/checks": Dataset}``. ``closed_form`` holds
    the closed-form value of each parameter with the name and dims of ``posterior`` without
    ``chain``/``draw`` (so ArviZ plots take it as reference values: ``arviz_plots.add_lines``);
    its attributes say whether a closed form applies, what it is, and whether the fit agrees.
    ``closed_form/checks`` is the table of :class:`ClosedFormCheck` along dim ``quantity``.
    """
    import xarray as xr

    try:
        check = closed_form_check(fit)
    except MLEError as err:
        check = ClosedFormCheck(applies=False, reason=str(err))
    except Exception as err:  # noqa: BLE001 - an export must not fail; the reason says why
        check = ClosedFormCheck(applies=False, reason=f"the closed-form check failed: "
                                                      f"{type(err).__name__}: {err}")
    data = {}
    for name, value in check.references.items():
        if name not in posterior:
            continue
        template = posterior[name].isel(chain=0, draw=0, drop=True)
        data[name] = template.copy(data=np.broadcast_to(value, template.shape).copy())
    ds = xr.Dataset(data)
    ds.attrs.update({"applies": int(check.applies), "reason": check.reason,
                     "kind": check.kind or "", "family": check.family or "",
                     "link": check.link or "", "reference": check.reference})
    if check.applies:
        ds.attrs["agrees"] = int(bool(check.agrees))
    rows = xr.Dataset(
        {"mle": ("quantity", np.array([r.mle for r in check.rows], dtype=float)),
         "closed_form": ("quantity", np.array([r.closed_form for r in check.rows], dtype=float)),
         "abs_diff": ("quantity", np.array([r.abs_diff for r in check.rows], dtype=float)),
         "tol": ("quantity", np.array([r.tol for r in check.rows], dtype=float)),
         "agrees": ("quantity", np.array([r.agrees for r in check.rows], dtype=bool))},
        coords={"quantity": [r.quantity for r in check.rows]})
    return {"closed_form": ds, "closed_form/checks": rows}


def plot_closed_form(fit: Estimate, *, laplace_draws: int = 2000, random_seed=0, var_names=None,
                     **pc_kwargs):
    """Draw the fit (Laplace approximation) with reference lines at the closed-form solution.

    Uses ``arviz_plots.plot_dist`` on the posterior group of ``fit.to_datatree(laplace_draws=)``
    and ``arviz_plots.add_lines`` with the DataTree's ``closed_form`` group.

    Parameters
    ----------
    fit : Estimate
    laplace_draws : int
        Draws from the normal approximation at the MLE (shows the sampling uncertainty).
    random_seed : int or numpy.random.Generator
    var_names : list of str, optional
        Variables to draw (default: those with a closed-form value).
    **pc_kwargs
        Passed to ``arviz_plots.plot_dist``.

    Returns
    -------
    arviz_plots.PlotCollection

    Examples
    --------
    >>> pc = fit.plot_closed_form()          # doctest: +SKIP
    >>> pc.savefig("closed_form.png")        # doctest: +SKIP
    """
    import arviz_plots as azp

    check = closed_form_check(fit)
    if not check.applies:
        raise MLEError(f"no closed form applies to this fit, so there is nothing to draw: "
                       f"{check.reason}")
    if not check.references:
        raise MLEError("the closed-form check has no reference values for the parameters "
                       f"({'; '.join(check.notes)}).")
    dt = fit.to_datatree(laplace_draws=laplace_draws, random_seed=random_seed)
    refs = dt["closed_form"].to_dataset()
    names = list(var_names) if var_names is not None else list(refs.data_vars)
    missing = [n for n in names if n not in refs]
    if missing:
        raise MLEError(f"var_names {missing} have no closed-form value; choose among "
                       f"{list(refs.data_vars)}.")
    n_panels = sum(int(refs[n].size) for n in names)
    cols = min(4, max(n_panels, 1))
    rows = -(-n_panels // cols)
    pc_kwargs.setdefault("col_wrap", cols)
    fig_kw = dict(pc_kwargs.pop("figure_kwargs", None) or {})
    fig_kw.setdefault("figsize", (3.4 * cols, 2.6 * rows + 0.3))
    fig_kw.setdefault("layout", "constrained")
    pc_kwargs["figure_kwargs"] = fig_kw
    pc = azp.plot_dist(dt, var_names=names, **pc_kwargs)
    azp.add_lines(pc, refs[names], visuals={"ref_line": {"color": "C1", "linestyle": "--"}})
    return pc


# =========================================================================  practical points
#: log of the smallest positive (subnormal) float64, ≈ −744.44.
LOG_TINY = math.log(np.nextafter(0.0, 1.0))
#: log of the largest float64, ≈ 709.78.
LOG_HUGE = math.log(np.finfo(float).max)


@dataclass(frozen=True)
class UnderflowDemo:
    """Why we maximise the log-likelihood: the product of densities underflows in float64.

    ``n_underflow`` is the number of observations (taken in data order) at which the running
    product of the likelihood terms first becomes exactly 0.0; the log-likelihood of the same
    observations stays finite (``loglik_at_underflow``).
    """

    n_obs: int
    loglik: float  #: sum of the log terms, all observations
    product: float  #: the product of the likelihood terms in float64, all observations
    mean_loglik: float  #: per observation
    n_underflow: int | None  #: first n with product == 0.0 (None: not within the data)
    loglik_at_underflow: float | None
    n_overflow: int | None  #: first n with product == inf (densities > 1)
    n_predicted: float | None  #: log(smallest float)/mean log term: where it would underflow

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if v is None else _num(v) if isinstance(v, float) else v)
                for k, v in self.__dict__.items()}

    def __str__(self) -> str:
        lines = [f"n = {self.n_obs} observations, log-likelihood = {self.loglik:.10g} "
                 f"(mean {self.mean_loglik:.6g} per observation)",
                 f"likelihood as a product of {self.n_obs} terms in float64: {self.product!r}"]
        if self.n_underflow is not None:
            lines.append(f"the product becomes 0.0 after n = {self.n_underflow} observations, "
                         f"while their log-likelihood is a finite {self.loglik_at_underflow:.10g}")
        elif self.n_overflow is not None:
            lines.append(f"the densities exceed 1 on average: the product overflows to inf after "
                         f"n = {self.n_overflow} observations (the log-likelihood stays finite)")
        elif self.n_predicted is not None:
            lines.append(f"the product would underflow after about n = {self.n_predicted:.0f} "
                         f"observations like these (log of the smallest float64 = "
                         f"{LOG_TINY:.2f})")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(str(self)) + "</pre>"


def underflow_demo(fit_or_terms) -> UnderflowDemo:
    """The likelihood as a product underflows to 0.0; the log-likelihood stays finite.

    Parameters
    ----------
    fit_or_terms : Estimate or array-like
        A fit (its per-observation log-likelihood terms at θ̂ are used) or the terms themselves.

    Returns
    -------
    UnderflowDemo

    Examples
    --------
    >>> demo = underflow_demo(np.full(1000, -1.4))
    >>> demo.n_underflow, demo.loglik_at_underflow is not None
    (533, True)
    """
    if hasattr(fit_or_terms, "likelihood") and hasattr(fit_or_terms, "x"):
        fit = fit_or_terms
        terms = np.concatenate([np.ravel(v) for v in fit.likelihood.pointwise(fit.x).values()])
    else:
        terms = np.ravel(np.asarray(fit_or_terms, dtype=float))
    if terms.size == 0 or not np.all(np.isfinite(terms)):
        raise MLEError("underflow_demo needs a non-empty array of finite per-observation "
                       f"log-likelihood terms; got {terms.size} terms "
                       f"({int(np.sum(~np.isfinite(terms)))} not finite).")
    with np.errstate(under="ignore", over="ignore"):
        running = np.cumprod(np.exp(terms))
    cum_ll = np.cumsum(terms)
    zero = np.flatnonzero(running == 0.0)
    inf = np.flatnonzero(np.isinf(running))
    mean = float(np.mean(terms))
    n_under = int(zero[0]) + 1 if zero.size else None
    return UnderflowDemo(
        n_obs=int(terms.size), loglik=float(cum_ll[-1]), product=float(running[-1]),
        mean_loglik=mean, n_underflow=n_under,
        loglik_at_underflow=float(cum_ll[n_under - 1]) if n_under else None,
        n_overflow=int(inf[0]) + 1 if inf.size else None,
        n_predicted=(LOG_TINY / mean) if mean < 0 else None)


@dataclass(frozen=True)
class OptimizerComparison:
    """The same likelihood maximised by several methods: iterations, loss histories, agreement."""

    fits: Mapping[str, Estimate]
    histories: Mapping[str, np.ndarray]  #: mean NLL per observation after each iteration
    n_obs: int

    def table(self) -> pd.DataFrame:
        """Per method: converged, iterations, loglik, max |θ − θ_newton| in standard errors."""
        base = self.fits.get("newton")
        out = []
        for name, f in self.fits.items():
            dev = np.nan
            if base is not None:
                se = base.std_errors.to_numpy()
                with np.errstate(divide="ignore", invalid="ignore"):
                    dev = float(np.max(np.abs(f.theta - base.theta) / se)) if len(se) else 0.0
            out.append({"method": name, "converged": f.converged, "iterations": f.iterations,
                        "n_evals": f.n_evals, "loglik": f.loglik,
                        "max_dev_se": dev, "time_s": f.fit_time})
        return pd.DataFrame(out).set_index("method")

    def to_dict(self) -> dict[str, Any]:
        tab = self.table()
        return {name: {"converged": bool(r.converged), "iterations": int(r.iterations),
                       "n_evals": int(r.n_evals), "loglik": _num(r.loglik),
                       "max_dev_se": _num(r.max_dev_se),
                       "loss_history": [_num(v) for v in self.histories[name]]}
                for name, r in tab.iterrows()}

    def __str__(self) -> str:
        with pd.option_context("display.float_format", "{:.10g}".format, "display.width", 120):
            return ("Optimizers on the same negative log-likelihood (max_dev_se: largest "
                    "|θ − θ_newton| in standard errors)\n" + self.table().to_string())

    def _repr_html_(self) -> str:
        return ("<div><b>Optimizers on the same negative log-likelihood</b>"
                + self.table().to_html(float_format=lambda v: f"{v:.10g}") + "</div>")

    def plot(self, ax=None):
        """Loss histories (mean NLL per observation above its minimum, log scale) by iteration.

        Returns the matplotlib Axes.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        best = min(float(np.min(h)) for h in self.histories.values() if len(h))
        for name, h in self.histories.items():
            gap = np.asarray(h) - best
            ax.plot(np.arange(len(h)), np.maximum(gap, 1e-16), label=name,
                    marker="o" if len(h) < 40 else None, ms=3)
        ax.set_yscale("log")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("mean NLL − min (per observation)")
        ax.legend()
        return ax


def compare_optimizers(model, data=None, *, methods: Sequence[str] = ("newton", "lbfgs", "gd"),
                       learning_rate: float = 0.1, max_iter: int | None = None
                       ) -> OptimizerComparison:
    """Fit one model with several optimizers; gradient descent reaches the same θ̂, slowly.

    Parameters
    ----------
    model : pymc.Model, model file path or bundled name, or MLEFit
        What :func:`mle_ppl.fit` accepts (a fit: its model is refitted).
    data : optional
        Data for a model file.
    methods : sequence of str
        Names from :data:`mle_ppl.METHODS`.
    learning_rate, max_iter : optional
        Passed to ``method="gd"`` only (the others use their defaults).

    Returns
    -------
    OptimizerComparison
        ``.table()`` (iterations, agreement in SE), ``.histories`` (mean NLL per iteration),
        ``.plot()``.

    Examples
    --------
    >>> cmp = compare_optimizers(model, learning_rate=0.5)   # doctest: +SKIP
    >>> cmp.table()                                         # doctest: +SKIP
    """
    from mle_ppl._src.engine.fit import estimate as run_fit
    from mle_ppl._src.engine.fit import resolve_model
    from mle_ppl._src.engine.optimize import get_method

    for m in methods:
        get_method(m)
    if hasattr(model, "likelihood") and hasattr(model, "x"):
        pm_model = model.likelihood.model
    else:
        pm_model = resolve_model(model, data)[0]
    fits: dict[str, Estimate] = {}
    hists: dict[str, np.ndarray] = {}
    for m in methods:
        kw: dict[str, Any] = {}
        if m == "gd":
            kw["learning_rate"] = learning_rate
            if max_iter is not None:
                kw["max_iter"] = max_iter
        f = run_fit(pm_model, method=m, warn=False, **kw)
        n = max(f.n_obs, 1)
        h = np.asarray(f.history, dtype=float)
        if m != "gd":
            h = h / n  # newton/lbfgs record the total NLL
        if m == "lbfgs":
            h = np.concatenate([[f.likelihood.value(f.likelihood.x0()) / n], h])
        fits[m] = f
        hists[m] = h
    n_obs = next(iter(fits.values())).n_obs if fits else 0
    return OptimizerComparison(fits=MappingProxyType(fits), histories=MappingProxyType(hists),
                               n_obs=n_obs)

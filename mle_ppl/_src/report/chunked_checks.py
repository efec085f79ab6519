"""The closed-form checks on chunked data (streamed, Dask): per-chunk sums reduced on the driver.

The structure (family, link, which sub-expression is the mean or linear predictor, its
parameters) is detected once, by :func:`.detect.detect` on the first rows of the data
(:meth:`~mle_ppl._src.engine.chunked.ChunkedObjective.map_head`). Each chunk then gets its design
from a forward-mode Jacobian of that sub-expression (one push-forward per mean parameter:
rows x parameters of memory, whole chunks at a time), and is confirmed linear on its own rows:
the predictor at a second parameter point must equal ``offset + design @ θ`` (to 1e-9).

- **Least squares** (Normal, linear mean): everything the check needs is a function of the
  augmented design ``[X, z]`` (``z = y − offset``) through its Gram matrix. Instead of the Gram
  matrix (which squares the condition number), each chunk returns the R factor of its own
  ``[X, z]`` (``numpy.linalg.qr``, Householder) and the driver takes the R factor of the stacked
  factors (a tall-skinny QR): ``[X, z] = Q R`` with ``Rᵀ R`` the Gram matrix of all rows, so the
  least-squares problem on ``R`` has the same solution, residual norms and singular values. The
  reduced problem goes through the in-memory :func:`.checks.regression_check`.
- **Cross-entropy** (Bernoulli, binomial, categorical): NLL = n·CE is a sum over rows, and so are
  the gradient and information of the NumPy :class:`~.reference.Problem`; each chunk returns
  them at a given θ, and the driver runs the NumPy Newton/IRLS reference
  (:func:`~.reference.newton_reference`) on the sums, one data pass per Newton iteration. It
  starts at the fit's θ̂ (a concave log-likelihood has one maximum whatever the start; from
  θ̂ a correct fit needs one or two passes). The saturated-design closed form of the in-memory
  check (observed frequencies per group of identical rows) needs all rows together and is not
  used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import special

from mle_ppl._src.report.checks import (
    EVAL_RTOL,
    CheckRow,
    ClosedFormCheck,
    _param_row,
    regression_check,
)
from mle_ppl._src.report.detect import (
    Detected,
    NotApplicable,
    _graph_for,
    _points,
    assemble,
    detect,
    evaluate,
)
from mle_ppl._src.report.reference import Problem, newton_reference

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate

REFERENCE = ("NumPy Householder QR of [X, y] per chunk, the QR of the stacked R factors on the "
             "driver (tall-skinny QR), then SVD least squares on the column-equilibrated R "
             "(+1 refinement step)")


@dataclass(frozen=True)
class Head:
    """The structure :func:`.detect.detect` found on the first rows (sent to every chunk)."""

    family: str
    link: str
    factor: float
    candidate: int
    cols: tuple[int, ...]
    mean_names: tuple[str, ...]
    observed: str


def find_head(lik, x) -> tuple:
    """``("ok", Head)`` or ``("na", reason)`` on the rows bound (module level: Dask pickles it)."""
    try:
        det = detect(lik, x)
    except NotApplicable as na:
        return ("na", na.reason)
    return ("ok", Head(det.family, det.link, float(det.link_factor), int(det.candidate),
                       tuple(int(c) for c in det.cols), tuple(det.mean_names), det.observed))


def _forward_jacobian(lik, head: Head):
    """Compiled ``x -> (m, elements)``: the candidate's derivative along each mean parameter."""
    graph = _graph_for(lik)
    key = ("forward", head.candidate, head.cols)
    fn = graph.jac_cache.get(key)
    if fn is None:
        import pytensor
        import pytensor.tensor as pt
        from pytensor.graph.replace import vectorize_graph

        from mle_ppl._src.engine.likelihood import _compile

        cand = graph.candidates[head.candidate].ravel()
        direction = pt.vector("direction", shape=(lik.n_params,))
        along = pytensor.gradient.pushforward(cand, graph.x, direction,
                                              disconnected_outputs="ignore")
        E = pt.constant(np.eye(lik.n_params)[list(head.cols)])
        fn = _compile([graph.x], vectorize_graph(along, {direction: E}), lik.mode,
                      model=lik.model)
        graph.jac_cache[key] = fn
    return fn


def chunk_detected(lik, x, head: Head) -> Detected | str:
    """The bound chunk's design, outcome and offset for ``head``'s structure, or why not."""
    graph = _graph_for(lik)
    x = np.asarray(x, dtype=float)
    cols = np.array(head.cols, dtype=int)
    outs, y = evaluate(lik, x)
    Jc = np.asarray(_forward_jacobian(lik, head)(x), dtype=float).reshape(len(cols), -1).T
    det = assemble(graph, x, outs, y, head.link, head.factor, head.candidate, cols, Jc,
                   head.mean_names)
    xp = _points(x, cols)[0]
    outs_p, _ = evaluate(lik, xp)
    eta_p = assemble(graph, xp, outs_p, y, head.link, head.factor, head.candidate, cols, Jc,
                     head.mean_names).eta_hat
    scale = max(float(np.max(np.abs(eta_p), initial=0.0)), 1e-300)
    if not np.allclose(eta_p, det.offset + det.design @ xp[cols], rtol=1e-9,
                       atol=1e-12 * scale):
        what = "mean" if head.link == "identity" else "linear predictor"
        return (f"the {what} of {head.observed!r} is linear in {list(head.mean_names)} on the "
                "first rows but not on all chunks: no closed form applies.")
    return det


@dataclass(frozen=True)
class LeastSquaresFactor:
    """Per chunk: ``("ls", R, rows, σ min, σ max)`` or ``("na", reason)``."""

    head: Head

    def __call__(self, lik, x) -> tuple:
        det = chunk_detected(lik, x, self.head)
        if isinstance(det, str):
            return ("na", det)
        z = det.y - det.offset
        R = np.linalg.qr(np.c_[det.design, z], mode="r")
        sig = np.asarray(det.aux[0], dtype=float)
        return ("ls", R, int(z.shape[0]), float(sig.min()), float(sig.max()))


@dataclass(frozen=True)
class CrossEntropySums:
    """Per chunk at the coefficients ``theta``: ``("ce", loglik, gradient, information,
    N (observations or trials), Σ log C(n, k), observations)`` or ``("na", reason)``."""

    head: Head
    theta: tuple[float, ...]

    def __call__(self, lik, x) -> tuple:
        det = chunk_detected(lik, x, self.head)
        if isinstance(det, str):
            return ("na", det)
        trials = det.aux[0] if det.family == "binomial" else None
        prob = Problem(det.link, det.design, det.offset, det.y, trials)
        ll, g, info = prob.evaluate(np.array(self.theta, dtype=float))
        log_binom = 0.0
        if det.family == "binomial":
            t = prob.trials
            log_binom = float(np.sum(special.gammaln(t + 1) - special.gammaln(det.y + 1)
                                     - special.gammaln(t - det.y + 1)))
        return ("ce", ll, g, info, float(np.sum(prob.trials)), log_binom, len(det.y))


def _no_chunk_declined(parts) -> None:
    if not parts:
        raise NotApplicable("the data have no rows.")
    for part in parts:
        if part[0] == "na":
            raise NotApplicable(part[1])


class SummedProblem:
    """A :class:`~.reference.Problem` whose sums run over the chunks (one pass per new θ)."""

    def __init__(self, lik, x, head: Head):
        self.lik, self.x, self.head = lik, x, head
        self.X = np.empty((0, len(head.cols)))  # newton_reference reads the parameter count
        self._last: tuple = (None, None)
        self.passes = 0

    def sums(self, theta) -> tuple:
        theta = np.asarray(theta, dtype=float)
        if self._last[0] is None or not np.array_equal(self._last[0], theta):
            parts = self.lik.map_chunks(CrossEntropySums(self.head, tuple(theta.tolist())),
                                        self.x)
            self.passes += 1
            _no_chunk_declined(parts)
            total = [sum(p[i] for p in parts) for i in range(1, 7)]
            self._last = (theta.copy(), tuple(total))
        return self._last[1]

    def evaluate(self, theta):
        ll, g, info = self.sums(theta)[:3]
        return float(ll), np.asarray(g, dtype=float), np.asarray(info, dtype=float)

    def loglik(self, theta) -> float:
        return float(self.sums(theta)[0])


def chunked_check(fit: Estimate, *, se_tol: float, loglik_tol: float) -> ClosedFormCheck:
    """The closed-form check of a fit whose objective reads its data in chunks."""
    lik = fit.likelihood
    x = np.asarray(fit.x, dtype=float)
    found = lik.map_head(find_head, x)
    if found[0] == "na":
        raise NotApplicable(found[1])
    head = found[1]
    if head.family != "normal":
        return cross_entropy_check(fit, head, se_tol=se_tol, loglik_tol=loglik_tol)
    parts = lik.map_chunks(LeastSquaresFactor(head), x)
    _no_chunk_declined(parts)
    R = np.linalg.qr(np.vstack([part[1] for part in parts]), mode="r")
    n = sum(part[2] for part in parts)
    cols = np.array(head.cols, dtype=int)
    m = len(cols)
    design = R[:, :m]
    graph = _graph_for(lik.lik)  # the driver's own compiled likelihood (Dask heads run on workers)
    det = Detected(family="normal", link="identity", observed=head.observed, y=R[:, m],
                   design=design, offset=np.zeros(R.shape[0]), cols=cols,
                   theta_hat=x[cols], eta_hat=design @ x[cols],
                   aux=(np.array([min(p[3] for p in parts), max(p[4] for p in parts)]),),
                   aux_blocks=graph.aux_blocks, mean_names=head.mean_names)
    return regression_check(fit, det, se_tol=se_tol, loglik_tol=loglik_tol, n_obs=n,
                            reference=REFERENCE)


def cross_entropy_check(fit: Estimate, head: Head, *, se_tol: float,
                        loglik_tol: float) -> ClosedFormCheck:
    """NLL = n·CE at θ̂ from per-chunk sums, and the Newton/IRLS reference on the sums."""
    lik = fit.likelihood
    x = np.asarray(fit.x, dtype=float)
    cols = np.array(head.cols, dtype=int)
    m = len(cols)
    labels = [lik.labels[i] for i in cols]
    theta_hat = x[cols]
    prob = SummedProblem(lik, x, head)
    ll_hat, _, _, n_ce, log_binom, n_obs = prob.sums(theta_hat)
    ce_hat = -ll_hat / n_ce
    rows: list[CheckRow] = []
    notes: list[str] = []
    if head.family == "binomial":
        label = "log-likelihood = −N·CE(θ̂) + Σ log C(n, k)"
    else:
        label = "log-likelihood = −n·CE(θ̂)"
    ll_id = -n_ce * ce_hat + log_binom
    rows.append(CheckRow(label, fit.loglik, ll_id, max(EVAL_RTOL * max(abs(ll_id), 1.0), 1e-12),
                         f"{EVAL_RTOL:g} relative (same θ̂, two formulas)"))
    ref = newton_reference(prob, start=theta_hat)
    reference = (f"NumPy Newton/IRLS on gradient and information summed over the chunks, from "
                 f"the fit's θ̂ ({ref.iterations} iteration(s), {prob.passes} data passes, "
                 f"{'converged' if ref.converged else 'NOT converged'})")
    if not ref.converged:
        notes.append("the reference Newton solver did not converge (the coefficients run "
                     "off: separation?); coefficients are not compared.")
    ce_ref = -prob.loglik(ref.theta) / n_ce
    rows.append(CheckRow("cross-entropy CE(θ̂) vs minimum CE", ce_hat, ce_ref,
                         max(loglik_tol / n_ce, EVAL_RTOL * abs(ce_ref)),
                         f"{loglik_tol:g}/N (loglik units / N)"))
    references = {}
    if ref.converged and ref.rank == m:
        w, V = np.linalg.eigh(ref.info)
        se = np.sqrt(np.clip(np.diag((V / w) @ V.T), 0, None))
        for lab, est, r, s in zip(labels, theta_hat, ref.theta, se, strict=True):
            rows.insert(len(rows) - 1, _param_row(lab, est, r, s, se_tol))
        for name in head.mean_names:
            b = next(b for b in lik.blocks if b.name == name)
            idx = [int(np.flatnonzero(cols == i)[0]) for i in range(b.start, b.start + b.size)]
            references[name] = ref.theta[idx].reshape(b.shape)
    elif ref.converged:
        notes.append(f"the information matrix has rank {ref.rank} < {m}: the coefficients are "
                     "not identifiable, so only the cross-entropy is compared.")
    if head.factor != 1.0:
        notes.append(f"the model computes p = {head.link}⁻¹(c·eta) with c = 1 "
                     f"{head.factor - 1:+.3g} (PyMC's invprobit takes √2 in float32); the "
                     "reference uses the same c, so it solves the model's own problem.")
    extras = {"n (observations)": n_obs, "CE(θ̂)": ce_hat, "min CE (reference)": ce_ref,
              "NLL(θ̂)": -fit.loglik}
    if head.family == "binomial":
        extras["N (trials)"] = n_ce
        extras["Σ log C(n, k)"] = log_binom
    fam = {"bernoulli": "Bernoulli", "binomial": "Binomial", "categorical": "Categorical"}[
        head.family]
    reason = (f"{fam} likelihood for {head.observed!r} with a {head.link} link and a linear "
              f"predictor in ({', '.join(head.mean_names)}): NLL(θ) = n·CE(θ), so the MLE "
              "minimises the cross-entropy of the fitted probabilities.")
    return ClosedFormCheck(applies=True, reason=reason, kind="cross_entropy", family=head.family,
                           link=head.link, observed=head.observed, reference=reference,
                           rows=tuple(rows), extras=extras, notes=tuple(notes),
                           references=references)

"""The closed-form checks: a fit's numbers beside the reference solution's, row by row.

Maximising a likelihood is minimising a loss. For a Gaussian likelihood whose mean is linear in the
parameters the MLE of the coefficients is the least-squares solution and ``σ̂² = RSS/n`` (the mean
squared error at it), so ``NLL(θ̂) = n/2 · (log(2π · MSE) + 1)``: :func:`regression_check`. For
Bernoulli, binomial and categorical likelihoods the negative log-likelihood *is* ``n ×`` the
cross-entropy of the fitted probabilities: :func:`cross_entropy_check`. Both set the fit (an
``Estimate`` of the engine) beside the reference solutions of :mod:`.reference` for the
structure :mod:`.detect` found, as a :class:`ClosedFormCheck` of :class:`CheckRow` s.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import special

from mle_ppl._src.report.detect import Detected, NotApplicable
from mle_ppl._src.report.reference import (
    EPS,
    Problem,
    least_squares,
    link_inv,
    newton_reference,
    saturated,
)

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate

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
            "rows": [{"quantity": r.quantity, "mle": num_or_none(r.mle),
                      "closed_form": num_or_none(r.closed_form),
                      "abs_diff": num_or_none(r.abs_diff), "rel_diff": num_or_none(r.rel_diff),
                      "tol": num_or_none(r.tol), "tol_rule": r.tol_rule,
                      "agrees": r.agrees} for r in self.rows],
            "extras": {k: num_or_none(v) for k, v in self.extras.items()},
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


def num_or_none(v) -> float | None:
    """``v`` as a float for JSON, or None when it is NaN or infinite."""
    v = float(v)
    return v if math.isfinite(v) else None


def regression_check(fit: Estimate, det: Detected, *, se_tol: float, loglik_tol: float,
                     n_obs: int | None = None, reference: str | None = None) -> ClosedFormCheck:
    """Least squares: coefficients, MSE = RSS/n, σ̂ = √MSE and the log-likelihood identity.

    ``n_obs`` and ``reference`` are for a reduced problem with the same least-squares solution
    and residual sums (the R factor of chunked data, :mod:`.chunked_checks`): its rows are not
    the observations, so ``n_obs`` gives their number."""
    X, y, c = det.design, det.y, det.offset
    n, m = X.shape
    if n_obs is not None:
        n = int(n_obs)
    ls = least_squares(X, y - c, n_rows=n_obs)
    lik = fit.likelihood
    labels = [lik.labels[i] for i in det.cols]
    rss = ls.rss
    mse = rss / n
    sig = np.asarray(det.aux[0], dtype=float)
    if not np.all(sig == sig.flat[0]):
        raise NotApplicable(
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
                           reference=reference or "NumPy SVD least squares on the "
                                     "column-equilibrated design (+1 refinement step)",
                           rows=tuple(rows), extras=extras, notes=tuple(notes),
                           references=references)


def _param_row(label: str, est: float, ref: float, se: float, se_tol: float) -> CheckRow:
    if np.isfinite(se) and se > 0:
        tol = max(se_tol * se, 8 * EPS * abs(ref))
        return CheckRow(label, float(est), float(ref), tol, f"{se_tol:g} SE")
    return CheckRow(label, float(est), float(ref), 1e-6 * max(abs(ref), 1.0), "1e-6 relative")


def cross_entropy_check(fit: Estimate, det: Detected, *, se_tol: float, loglik_tol: float
                        ) -> ClosedFormCheck:
    """Minimum cross-entropy: NLL = n·CE, the reference coefficients or group frequencies."""
    trials = det.aux[0] if det.family == "binomial" else None
    prob = Problem(det.link, det.design, det.offset, det.y, trials)
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
    sat = saturated(prob)
    if sat is not None:
        theta_ref, groups, freqs, ok = sat
        reference = "observed frequencies (saturated design: the MLE probabilities are the " \
                    "relative frequencies of each outcome in each group of identical rows)"
        info = prob.evaluate(theta_ref)[2] if ok else None
        converged, rank = ok, m if ok else 0
        p_hat = link_inv(det.link, det.eta_hat)
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



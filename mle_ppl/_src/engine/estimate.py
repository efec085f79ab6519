"""The core estimate a fit produces: numbers, diagnostics and where they came from (no I/O).

:class:`Estimate` is what the engine returns. It holds the estimates on both scales, the
covariance from the observed information, the log-likelihood and the diagnostics, grouped as
:class:`Convergence` (how the optimizer got there) and :class:`DataSource` (the data the fit was
made on, so it can be re-bound later). The user-facing :class:`~mle_ppl.MLEFit` (``api`` layer)
extends it with the methods that reach the inference and report layers (profile, sandwich,
bootstrap, closed forms, DataTree, JSON); the layers below see only an ``Estimate``.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mle_ppl._src.engine.objective import Objective
from mle_ppl._src.errors import MLEError

#: The one registry of confidence-interval methods for :meth:`MLEFit.conf_int`.
CI_METHODS = ("wald", "profile")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float, copy=True)
    a.flags.writeable = False
    return a


def _normal_quantile(q: float) -> float:
    """Standard normal quantile (stdlib: scipy.special/stats cost 0.3-1.5 s to import)."""
    return statistics.NormalDist().inv_cdf(q)


def _two_sided_p(z: np.ndarray) -> np.ndarray:
    """Two-sided normal p-values ``2 (1 - Phi(|z|)) = erfc(|z| / sqrt 2)``, accurate in the tail."""
    z = np.asarray(z, dtype=float)
    return np.array([math.erfc(abs(v) / math.sqrt(2.0)) if not math.isnan(v)
                     else np.nan for v in z.ravel()]).reshape(z.shape)


def check_ci(level: float, method: str) -> None:
    """Validate a confidence level and interval method (one of :data:`CI_METHODS`)."""
    if not 0 < level < 1:
        raise MLEError(f"level={level!r} must be between 0 and 1 (e.g. 0.95).")
    if method not in CI_METHODS:
        raise MLEError(f"method={method!r} is not a confidence-interval method; expected one "
                       f"of {list(CI_METHODS)}.")


@dataclass(frozen=True)
class Convergence:
    """How the optimizer reached the estimate, and the curvature there."""

    converged: bool
    message: str
    iterations: int
    n_evals: int
    grad_norm: float
    hessian_min_eig: float
    hessian_cond: float
    history: tuple[float, ...] = ()  #: objective after each iteration (gd: mean NLL)
    fit_time: float = 0.0  #: seconds spent optimizing and assembling


@dataclass(frozen=True)
class DataSource:
    """The data a fit was made on (see :meth:`Estimate.bound`)."""

    table: Any = None  #: the bound data table, when fitted from a model file
    spec: Any = None  #: the ModelSpec, when fitted from a model file
    snapshot: tuple = ()  #: (shared variable, value) pairs of the objective's data containers
    coords: dict = field(default_factory=dict)  #: the model's coordinates at fit time
    #: how the data were read: ``{"kind": "in-memory" | "streamed" | "dask", ...}``
    reading: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False, repr=False)
class Estimate:
    """A maximum-likelihood estimate: numbers on the user's scale, observed-information
    uncertainty, diagnostics. Immutable; built by :func:`mle_ppl._src.engine.fit.estimate`.
    """

    model_name: str
    labels: tuple[str, ...]
    theta: np.ndarray  #: estimates on the user's scale, flat, in label order
    x: np.ndarray  #: the optimum on the unconstrained (optimizer's) scale
    cov_array: np.ndarray  #: covariance on the user's scale (NaN when not trustworthy)
    cov_unconstrained: np.ndarray
    loglik: float
    n_obs: int
    method: str
    values: dict[str, np.ndarray]  #: estimates by variable (and deterministics), original shapes
    convergence: Convergence
    warnings: tuple[str, ...]  #: diagnostics that make the fit not trustworthy
    notes: tuple[str, ...]  #: facts the user should know (dropped priors, multistart summary)
    likelihood: Objective = field(repr=False)  #: the objective that was maximised
    source: DataSource = field(default_factory=DataSource, repr=False)
    #: :class:`~mle_ppl._src.engine.multistart.MultiStartReport` when fitted with ``starts > 1``
    multistart: Any = field(default=None, repr=False)
    #: :class:`~mle_ppl._src.engine.re_report.RandomEffects` of a mixed model (modes, SDs,
    #: variance parameters, boundary), None without random effects
    random_effects: Any = field(default=None, repr=False)
    #: "ML" (the likelihood, or the marginal likelihood of a mixed model) or "REML" (restricted:
    #: the fixed effects integrated out too; ``fit(..., reml=True)``)
    criterion: str = "ML"

    @classmethod
    def from_estimate(cls, est: Estimate, **changes):
        """The same estimate as an instance of ``cls`` (e.g. the user-facing MLEFit)."""
        from dataclasses import fields

        kw = {f.name: getattr(est, f.name) for f in fields(Estimate)}
        kw.update(changes)
        return cls(**kw)

    # -------------------------------------------- grouped fields, flat names
    converged = property(lambda self: self.convergence.converged, doc="Optimizer converged.")
    iterations = property(lambda self: self.convergence.iterations)
    n_evals = property(lambda self: self.convergence.n_evals)
    grad_norm = property(lambda self: self.convergence.grad_norm)
    hessian_min_eig = property(lambda self: self.convergence.hessian_min_eig)
    hessian_cond = property(lambda self: self.convergence.hessian_cond)
    history = property(lambda self: self.convergence.history)
    fit_time = property(lambda self: self.convergence.fit_time)
    data = property(lambda self: self.source.table, doc="The bound data table (model files).")
    spec = property(lambda self: self.source.spec, doc="The ModelSpec (model files).")
    data_snapshot = property(lambda self: self.source.snapshot)
    coords_snapshot = property(lambda self: self.source.coords)

    @contextlib.contextmanager
    def bound(self):
        """Context in which the model's data containers hold this fit's data again.

        A model (or a model file's cached model) refitted on new data shares its containers
        with earlier fits; every method that evaluates the likelihood again (profiles, sandwich,
        bootstrap, predictions, the DataTree) runs inside this context, so an older fit keeps
        describing its own data.
        """
        changed = [(v, v.get_value(borrow=True), val) for v, val in self.source.snapshot
                   if v.get_value(borrow=True) is not val]
        model = getattr(self.likelihood, "model", None)  # objectives without one keep no coords
        coords_now = dict(model.coords) if model is not None else {}
        for v, _, val in changed:
            v.set_value(val, borrow=True)
        if changed and self.source.coords and model is not None:
            model._coords.update(self.source.coords)  # PyMC keeps coordinate values here
        try:
            yield self
        finally:
            for v, cur, _ in changed:
                v.set_value(cur, borrow=True)
            if changed and self.source.coords and model is not None:
                model._coords.update(coords_now)

    def __post_init__(self):
        for name in ("theta", "x", "cov_array", "cov_unconstrained"):
            object.__setattr__(self, name, _readonly(getattr(self, name)))

    # ------------------------------------------------------------- numbers
    @property
    def n_params(self) -> int:
        """Number of free parameters (scalars) estimated."""
        return len(self.theta)

    @property
    def estimates(self) -> pd.Series:
        """MLE by parameter label."""
        return pd.Series(np.array(self.theta), index=list(self.labels), name="estimate")

    @property
    def std_errors(self) -> pd.Series:
        """Standard errors from the inverse observed information (NaN when not trustworthy)."""
        se = np.sqrt(np.clip(np.diag(self.cov_array), 0, None)) if self.n_params else np.zeros(0)
        se = np.where(np.isfinite(np.diag(self.cov_array)), se, np.nan)
        return pd.Series(se, index=list(self.labels), name="std_err")

    @property
    def cov(self) -> pd.DataFrame:
        """Covariance matrix on the user's scale, labels × labels."""
        return pd.DataFrame(np.array(self.cov_array), index=list(self.labels),
                            columns=list(self.labels))

    @property
    def aic(self) -> float:
        """Akaike information criterion, ``2k - 2 loglik``."""
        return 2.0 * self.n_params - 2.0 * self.loglik

    @property
    def bic(self) -> float:
        """Bayesian information criterion, ``k log n - 2 loglik``."""
        return self.n_params * math.log(max(self.n_obs, 1)) - 2.0 * self.loglik

    @property
    def trustworthy(self) -> bool:
        """Converged, identifiable, interior: no diagnostic warning."""
        return self.converged and not self.warnings

    def conf_int(self, level: float = 0.95, method: str = "wald") -> pd.DataFrame:
        """Confidence intervals, a DataFrame indexed by label with columns ``lower``, ``upper``.

        Parameters
        ----------
        level : float
            Coverage, in (0, 1).
        method : {"wald", "profile"}
            Wald: ``estimate ± z·SE``; an end outside the parameter's support (an SD's
            lower end below 0) is NaN, with the reason in ``attrs["notes"]``. Profile: where
            the profile log-likelihood drops by ``chi2(1).ppf(level)/2`` (see :meth:`profile`).
        """
        check_ci(level, method)
        if method != "wald":
            raise MLEError(f"method={method!r}: this estimate has Wald intervals only; profile "
                           "intervals come with the MLEFit returned by mle_ppl.fit.")
        return self._wald(self.std_errors.to_numpy(), level)

    def _support(self) -> tuple[np.ndarray, np.ndarray]:
        """Per label, the parameter's support ``(lower, upper)`` from the objective's blocks."""
        lik = self.likelihood
        where = {lab: i for i, lab in enumerate(getattr(lik, "labels", ()))}
        bounds = np.full((max(len(where), 1), 2), [-np.inf, np.inf])
        for b in getattr(lik, "blocks", ()):
            bounds[b.start:b.start + b.size] = b.lower, b.upper
        rows = [bounds[where[lab]] if lab in where else (-np.inf, np.inf) for lab in self.labels]
        rows = np.array(rows, dtype=float).reshape(-1, 2)
        return rows[:, 0], rows[:, 1]

    def _wald(self, se: np.ndarray, level: float) -> pd.DataFrame:
        """Wald interval ``estimate ± z·SE``; an end outside the parameter's support (an SD's
        lower end < 0, a correlation's beyond ±1) is no confidence bound: NaN, with a note in
        ``attrs["notes"]`` and ``attrs["outside_support"]`` (label: (lower out, upper out))."""
        z = _normal_quantile(0.5 + level / 2)
        est = np.array(self.theta)
        lower, upper = est - z * se, est + z * se
        sup_lo, sup_hi = self._support()
        lo_out, hi_out = lower < sup_lo, upper > sup_hi
        out, notes = {}, []
        for i in np.flatnonzero(lo_out | hi_out):
            lab = self.labels[i]
            out[lab] = (bool(lo_out[i]), bool(hi_out[i]))
            bad = [(side, v) for side, v, b in (("lower", lower[i], lo_out[i]),
                                                 ("upper", upper[i], hi_out[i])) if b]
            ends = " and ".join(f"{side} end ({v:.4g})" for side, v in bad)
            notes.append(f"{lab}: the {level:.0%} Wald {ends} lies outside the parameter's "
                         f"support [{sup_lo[i]:g}, {sup_hi[i]:g}], so it is no confidence bound "
                         "and is NaN (null in JSON); use profile intervals "
                         '(conf_int(method="profile"), --ci profile).')
        ci = pd.DataFrame({"lower": np.where(lo_out, np.nan, lower),
                           "upper": np.where(hi_out, np.nan, upper)}, index=list(self.labels))
        ci.attrs.update(notes=notes, outside_support=out)
        return ci

    def table(self, level: float = 0.95) -> pd.DataFrame:
        """Estimate, std_err, z, p_value (two-sided Wald), ci_lower, ci_upper per parameter.

        A Wald end outside the parameter's support is NaN, with the reason in
        ``attrs["notes"]`` (see :meth:`conf_int`)."""
        return self._table(self.std_errors.to_numpy(), self.conf_int(level))

    def _table(self, se: np.ndarray, ci: pd.DataFrame) -> pd.DataFrame:
        est = np.array(self.theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = est / se
        p = _two_sided_p(z)
        tab = pd.DataFrame({"estimate": est, "std_err": se, "z": z, "p_value": p,
                            "ci_lower": ci["lower"].to_numpy(),
                            "ci_upper": ci["upper"].to_numpy()}, index=list(self.labels))
        tab.attrs.update(ci.attrs)  # the notes on Wald ends outside the support
        return tab

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.model_name!r}: {self.n_params} params, "
                f"n={self.n_obs}, loglik={self.loglik:.6g}, converged={self.converged}, "
                f"warnings={len(self.warnings)}>")

"""The user-facing result of ``mle_ppl.fit``: an estimate plus inference, report and export."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

from mle_ppl._src.engine.estimate import (
    CI_METHODS,
    Estimate,
    check_ci,
)
from mle_ppl._src.engine.numbers import fmt_p
from mle_ppl._src.errors import MLEError


class MLEFit(Estimate):
    """A maximum-likelihood fit: estimates, observed-information uncertainty and diagnostics.

    Created by :func:`mle_ppl.fit`; immutable. Numbers are on the user's (constrained) scale.
    The fields are those of :class:`~mle_ppl._src.engine.estimate.Estimate` (grouped as
    ``convergence`` and ``source``, with flat aliases such as ``fit.converged``); this class
    adds the methods that use the inference and report layers.

    Examples
    --------
    >>> fit = mle_ppl.fit(model)          # doctest: +SKIP
    >>> fit.table()                       # doctest: +SKIP
    """

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
        if method == "profile":
            from mle_ppl._src.inference.profile import profile_conf_int

            with self.bound():
                return profile_conf_int(self, level=level)
        return super().conf_int(level)

    def table(self, level: float = 0.95, *, cov_type: str = "nonrobust",
              groups=None) -> pd.DataFrame:
        """Estimate, std_err, z, p_value (two-sided Wald), ci_lower, ci_upper per parameter.

        ``cov_type`` ("nonrobust", "HC0", "HC1", "cluster" with ``groups=``) chooses the
        covariance behind std_err, z, p_value and the Wald interval (see :meth:`robust_cov`).
        """
        if cov_type == "nonrobust":
            return super().table(level)
        cov = self.robust_cov(cov_type, groups=groups).to_numpy()
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
        se = np.where(np.isfinite(np.diag(cov)), se, np.nan)
        return self._table(se, self._wald(se, level))

    # ------------------------------------------- inference beyond Wald (issue 6)
    def robust_cov(self, kind: str = "HC0", *, groups=None) -> pd.DataFrame:
        """Sandwich covariance ("HC0", "HC1", "cluster" with ``groups=``); see
        :func:`mle_ppl._src.inference.robust.robust_cov`."""
        from mle_ppl._src.inference.robust import robust_cov

        with self.bound():
            return robust_cov(self, kind, groups=groups)

    def profile(self, param: str, **kwargs):
        """Profile likelihood of a parameter label or an expression; see :func:`mle_ppl.profile`."""
        from mle_ppl._src.inference.profile import profile

        with self.bound():
            return profile(self, param, **kwargs)

    def bootstrap(self, n_boot: int = 200, **kwargs):
        """Nonparametric, Poisson or parametric bootstrap; see :func:`mle_ppl.bootstrap`."""
        from mle_ppl._src.inference.bootstrap import bootstrap

        with self.bound():
            return bootstrap(self, n_boot, **kwargs)

    def predict(self, new_data=None, kind: str = "mean", **kwargs) -> pd.DataFrame:
        """Predictions on new data with intervals; see :func:`mle_ppl.predict`."""
        from mle_ppl._src.inference.predict import predict

        with self.bound():
            return predict(self, new_data, kind=kind, **kwargs)

    # ------------------------------------------- closed-form cross-checks (issue 7)
    def closed_form(self, **kwargs):
        """The fit beside its closed form (least squares / minimum cross-entropy); see
        :func:`mle_ppl.closed_form_check`."""
        from mle_ppl._src.report.closed_form import closed_form_check

        with self.bound():
            return closed_form_check(self, **kwargs)

    def plot_closed_form(self, **kwargs):
        """ArviZ plot of the fit with reference lines at the closed-form solution; see
        :func:`mle_ppl._src.report.closed_form.plot_closed_form`."""
        from mle_ppl._src.report.closed_form import plot_closed_form

        with self.bound():
            return plot_closed_form(self, **kwargs)

    # ------------------------------------------------------------- exports
    def diagnostics(self) -> dict[str, Any]:
        """Optimizer and curvature diagnostics as a plain dict."""
        return {"grad_norm": _num(self.grad_norm), "hessian_min_eig": _num(self.hessian_min_eig),
                "hessian_cond": _num(self.hessian_cond), "iterations": int(self.iterations),
                "n_evals": int(self.n_evals)}

    def to_dict(self, *, ci: str = "wald", cov_type: str = "nonrobust",
                groups=None) -> dict[str, Any]:
        """The JSON document of docs/json.md (NaN and infinities become ``null``).

        ``ci="profile"`` gives profile-likelihood intervals (with ``ci_open`` flags per
        parameter: an open end is ``null``); ``cov_type`` ("HC0", "HC1", "cluster" with
        ``groups=``) the covariance behind ``std_err`` and Wald intervals. The document records
        both as ``ci_method`` and ``cov_type``.
        """
        if ci not in CI_METHODS:
            raise MLEError(f"ci={ci!r} is not a confidence-interval method; expected one of "
                           f"{list(CI_METHODS)}.")
        tab = self.table(cov_type=cov_type, groups=groups)
        params = {
            lab: {"estimate": _num(r.estimate), "std_err": _num(r.std_err),
                  "ci_lower": _num(r.ci_lower), "ci_upper": _num(r.ci_upper)}
            for lab, r in tab.iterrows()
        }
        notes = list(self.notes)
        if ci == "wald":  # why a Wald end is null: outside the parameter's support
            notes += tab.attrs.get("notes", [])
        if ci == "profile":
            pci = self.conf_int(method="profile")
            for lab, r in pci.iterrows():
                lo_open, hi_open = pci.attrs["open"][lab]
                params[lab].update({"ci_lower": None if lo_open else _num(r.lower),
                                    "ci_upper": None if hi_open else _num(r.upper),
                                    "ci_open": [bool(lo_open), bool(hi_open)]})
        out = {"model": self.model_name, "n_obs": int(self.n_obs),
               "n_params": int(self.n_params), "method": self.method,
               "criterion": self.criterion,
               "converged": bool(self.converged), "loglik": _num(self.loglik),
               "aic": _num(self.aic), "bic": _num(self.bic), "ci_method": ci,
               "cov_type": cov_type, "parameters": params,
               "diagnostics": self.diagnostics(), "warnings": list(self.warnings),
               "notes": notes, "closed_form": self._closed_form_dict(),
               "data_source": dict(self.source.reading)}
        if self.multistart is not None:
            out["multistart"] = self.multistart.to_dict()
        if self.random_effects is not None:
            out["random_effects"] = self.random_effects.to_dict()
        return out

    def _closed_form_dict(self) -> dict[str, Any]:
        from mle_ppl._src.report.closed_form import closed_form_dict

        with self.bound():
            return closed_form_dict(self)

    def to_datatree(self, *, laplace_draws: int = 0, random_seed=None):
        """ArviZ ``DataTree``: posterior (the MLE as one draw, or Laplace draws), fit, ...

        See docs/datatree.md. ``laplace_draws=N`` draws N times from the normal approximation
        on the unconstrained scale and maps the draws back (so σ stays positive).
        """
        from mle_ppl._src.report.datatree import fit_to_datatree

        with self.bound():
            return fit_to_datatree(self, laplace_draws=laplace_draws, random_seed=random_seed)

    # ------------------------------------------------------------- display
    def _title(self) -> str:
        return ("REML fit (restricted maximum likelihood)" if self.criterion == "REML"
                else "Maximum-likelihood fit")

    def _header(self) -> list[tuple[str, str]]:
        crit = [("criterion", "REML")] if self.criterion == "REML" else []
        return [("model", self.model_name), ("method", self.method), *crit,
                ("converged", str(self.converged)), ("n_obs", str(self.n_obs)),
                ("n_params", str(self.n_params)),
                # the restricted log-likelihood; lme4's "REML criterion" is -2 x this
                ("REML log-likelihood" if crit else "log-likelihood", f"{self.loglik:.6g}"),
                ("AIC", f"{self.aic:.6g}"), ("BIC", f"{self.bic:.6g}"),
                ("iterations", str(self.iterations)), ("grad norm", f"{self.grad_norm:.2e}")]

    def __str__(self) -> str:
        head = "\n".join(f"{k:>15}: {v}" for k, v in self._header())
        with pd.option_context("display.float_format", "{:.6g}".format, "display.width", 120):
            # p-values that underflow show as <1e-300, never as a bare 0
            body = self.table().to_string(formatters={"p_value": fmt_p})
        warn = "".join(f"\nWARNING: {w}" for w in self.warnings)
        notes = "".join(f"\nNote: {n}" for n in self.notes)
        return f"{self._title()}\n{head}\n\n{body}{warn}{notes}"

    def _repr_html_(self) -> str:
        head = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td>{html.escape(v)}</td></tr>" for k, v in self._header())
        tab = self.table().to_html(float_format=lambda v: f"{v:.6g}", na_rep="NaN",
                                   formatters={"p_value": fmt_p})
        warn = "".join(f"<p style='color:#b00'><b>Warning:</b> {html.escape(w)}</p>"
                       for w in self.warnings)
        notes = "".join(f"<p><i>Note:</i> {html.escape(n)}</p>" for n in self.notes)
        return (f"<div><b>{self._title()}</b><table>{head}</table>{tab}{warn}{notes}"
                "</div>")


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None

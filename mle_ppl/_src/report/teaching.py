"""Teaching demos: the likelihood as a product underflows; optimizers compared on one likelihood.

The two "practical points" of the seed: :func:`underflow_demo` (the likelihood as a product
underflows, the log-likelihood does not) and :func:`compare_optimizers` (gradient descent against
Newton / L-BFGS, with loss histories).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mle_ppl._src.errors import MLEError
from mle_ppl._src.report.checks import num_or_none

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate

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
        return {k: (None if v is None else num_or_none(v) if isinstance(v, float) else v)
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
                       "n_evals": int(r.n_evals), "loglik": num_or_none(r.loglik),
                       "max_dev_se": num_or_none(r.max_dev_se),
                       "loss_history": [num_or_none(v) for v in self.histories[name]]}
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

        Returns the matplotlib Figure (the one holding ``ax`` when given).
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        best = min(float(np.min(h)) for h in self.histories.values() if len(h))
        for name, h in self.histories.items():
            gap = np.asarray(h) - best
            ax.plot(np.arange(len(h)), np.maximum(gap, 1e-16), label=name,
                    marker="o" if len(h) < 40 else None, ms=3)
        ax.set_yscale("log")
        if max(len(h) for h in self.histories.values()) > 30:
            ax.set_xscale("symlog", linthresh=10)  # long gd runs: first 10 linear, then log
        else:  # a few iterations: plain integer ticks (symlog would label them 2.1×10⁰)
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(left=0)
        ax.set_xlabel("iteration")
        ax.set_ylabel("mean NLL − min (per observation)")
        ax.legend(title="optimizer")
        return ax.figure


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

"""Multi-start optimisation: several jittered starts, a report on whether they agree.

``mle_ppl.fit(model, starts=K, random_seed=...)`` runs the optimizer from the usual start and
from ``K - 1`` jittered starts, returns the fit at the best optimum found, and records every
start in ``fit.multistart`` (a :class:`MultiStartReport`). When converged starts end at different
log-likelihoods (local optima: mixtures, nonlinear models), it warns with
:class:`~mle_ppl.MultimodalityWarning` and says so in ``fit.notes``.

Jitter: start ``k >= 1`` is ``c + JITTER * max(1, |c|) * N(0, 1)`` coordinate-wise on the
unconstrained scale (log σ for a positive parameter), centred at ``c``, the optimum of the first
start (or the first start itself when that failed). Draws come from
``numpy.random.default_rng(random_seed)``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mle_ppl._src.errors import MLEError, MultimodalityWarning

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate
    from mle_ppl._src.engine.likelihood import Likelihood
    from mle_ppl._src.engine.optimize import OptimResult

#: Scale of the jitter (standard deviations, relative to max(1, |coordinate|)).
JITTER = 1.0
#: Log-likelihoods within ``LL_ATOL + LL_RTOL * |loglik|`` are "the same optimum".
LL_ATOL = 1e-6
LL_RTOL = 1e-8


@dataclass(frozen=True)
class MultiStartReport:
    """What the starts of a multi-start fit found."""

    n_starts: int
    logliks: np.ndarray  #: per start (NaN when the log-likelihood was not finite)
    converged: np.ndarray  #: per start
    estimates: np.ndarray  #: (n_starts, n_params), user scale
    best: int  #: index of the start whose optimum is returned
    optima: tuple[float, ...]  #: distinct log-likelihood values among converged starts, best first
    counts: tuple[int, ...]  #: how many converged starts reached each optimum
    equivalent_spread: float  #: max |estimate difference| among starts at the best optimum

    @property
    def agree(self) -> bool:
        """All starts converged to the same log-likelihood."""
        return bool(self.converged.all()) and len(self.optima) == 1

    @property
    def n_distinct(self) -> int:
        """Number of distinct optima (by log-likelihood) among converged starts."""
        return len(self.optima)

    def summary(self) -> str:
        """One-paragraph description (the note added to the fit)."""
        nc = int(self.converged.sum())
        head = f"multi-start: {self.n_starts} starts, {nc} converged"
        if self.agree:
            msg = f"{head}; all agree on the optimum (loglik {self.optima[0]:.10g})."
        elif len(self.optima) <= 1:
            msg = (f"{head}; the converged starts agree"
                   + (f" (loglik {self.optima[0]:.10g})." if self.optima else
                      " on nothing: none converged."))
        else:
            found = ", ".join(f"{ll:.8g} ({c}x)" for ll, c in zip(self.optima, self.counts,
                                                                   strict=True))
            msg = (f"{head}; they found {len(self.optima)} different local optima (loglik: "
                   f"{found}). The best is returned; more starts may find a better one.")
        if self.equivalent_spread > 1e-4 and len(self.optima) >= 1:
            msg += (f" Starts at the best log-likelihood differ in their estimates (by up to "
                    f"{self.equivalent_spread:.3g}): label switching or a flat direction.")
        return msg

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return {"n_starts": self.n_starts, "agree": self.agree,
                "n_converged": int(self.converged.sum()),
                "optima": [float(v) for v in self.optima], "counts": list(self.counts),
                "logliks": [None if not np.isfinite(v) else float(v) for v in self.logliks],
                "best": int(self.best)}

    def __str__(self) -> str:
        return self.summary()


def _distinct(lls: np.ndarray) -> tuple[tuple[float, ...], tuple[int, ...]]:
    vals = np.sort(lls[np.isfinite(lls)])[::-1]
    optima: list[float] = []
    counts: list[int] = []
    for v in vals:
        if optima and abs(optima[-1] - v) <= LL_ATOL + LL_RTOL * abs(optima[-1]):
            counts[-1] += 1
        else:
            optima.append(float(v))
            counts.append(1)
    return tuple(optima), tuple(counts)


def run_starts(optimizer, lik: Likelihood, x0: np.ndarray, *, starts: int, random_seed=None,
               progress=None, **kwargs) -> tuple[OptimResult, MultiStartReport]:
    """Run ``optimizer`` from ``x0`` and ``starts - 1`` jittered starts; best result + report."""
    if not isinstance(starts, int | np.integer) or starts < 1:
        raise MLEError(f"starts={starts!r} must be a positive integer (e.g. starts=10).")
    rng = np.random.default_rng(random_seed)
    results: list[OptimResult] = []
    first = optimizer(lik, x0, progress=progress, **kwargs)
    results.append(first)
    center = first.x if np.all(np.isfinite(first.x)) and np.isfinite(first.fun) else x0
    for _ in range(1, starts):
        xs = center + JITTER * np.maximum(1.0, np.abs(center)) * rng.standard_normal(len(x0))
        f0, _g = lik.value_and_grad(xs)
        if not np.isfinite(f0):  # e.g. a probability of exactly 0: shrink towards the centre
            for shrink in (0.5, 0.25, 0.1):
                cand = center + shrink * (xs - center)
                if np.isfinite(lik.value_and_grad(cand)[0]):
                    xs = cand
                    break
        results.append(optimizer(lik, xs, progress=progress,
                                 **kwargs))
    lls = np.array([-r.fun if np.isfinite(r.fun) else np.nan for r in results])
    conv = np.array([bool(r.converged) for r in results])
    est = np.array([lik.constrained_flat(r.x) if np.all(np.isfinite(r.x))
                    else np.full(lik.n_params, np.nan) for r in results])
    # best: highest log-likelihood among converged starts (any start if none converged)
    pool = np.flatnonzero(conv & np.isfinite(lls))
    if not len(pool):
        pool = np.flatnonzero(np.isfinite(lls)) if np.isfinite(lls).any() else np.array([0])
    best = int(pool[np.nanargmax(lls[pool])]) if np.isfinite(lls[pool]).any() else 0
    optima, counts = _distinct(np.where(conv, lls, np.nan))
    spread = 0.0
    if optima:
        same = [i for i in range(starts) if conv[i] and np.isfinite(lls[i])
                and abs(lls[i] - optima[0]) <= LL_ATOL + LL_RTOL * abs(optima[0])]
        if len(same) > 1:
            spread = float(np.nanmax(np.abs(est[same] - est[same[0]])))
    report = MultiStartReport(n_starts=starts, logliks=lls, converged=conv, estimates=est,
                              best=best, optima=optima, counts=counts,
                              equivalent_spread=spread)
    return results[best], report


def attach(fit: Estimate, report: MultiStartReport, *, warn: bool) -> Estimate:
    """Return ``fit`` with the report attached and its summary in the notes (warns if needed)."""
    if warn and report.n_distinct > 1:
        warnings.warn(report.summary(), MultimodalityWarning, stacklevel=3)
    return dataclasses.replace(fit, multistart=report, notes=(*fit.notes, report.summary()))

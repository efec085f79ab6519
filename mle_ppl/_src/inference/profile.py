"""Profile-likelihood curves and confidence intervals.

For a parameter ``psi`` the profile log-likelihood is ``l_p(psi) = max l(theta)`` over the other
parameters with ``psi`` held fixed, and the signed root deviance is
``r(psi) = sign(psi - psi_hat) * sqrt(2 (l(theta_hat) - l_p(psi)))``. The level-``1 - a``
interval is ``{psi : |r(psi)| <= z_{1-a/2}}`` (equivalently a likelihood-ratio test with
``chi2_1``). Unlike a Wald interval it follows the likelihood's shape, invariant to reparametrising.

How it is computed, from the compiled functions of the fit (nothing is recompiled per point):

- a **parameter** (a label such as ``"sigma"`` or ``"beta[x1]"``) is profiled in its coordinate
  of the unconstrained vector ``x`` (``log sigma`` for a positive parameter). The transforms of
  flat-prior parameters (log, interval) are monotone in each coordinate, so the interval maps back
  to the user's scale exactly. The other coordinates are re-optimised by trust-region Newton on
  their block of the compiled Hessian, warm-started by extrapolating the path.
- an **expression** (a scalar function ``g(theta)``, e.g. ``"exp(beta[x1])"`` or
  ``"alpha + 2 * beta[0]"``) is profiled by maximising the likelihood subject to ``g = c``:
  Newton's method on the Lagrange (KKT) conditions, with ``g``, its gradient and its Hessian
  compiled once per expression.

The walk steps out from the MLE by ~1/4 of the Wald half-width (doubled where flat) until ``|r|``
crosses the critical value, then root-finds ``r`` by Brent. A side not crossing in ``max_steps``
(boundary of the support, failed inner fits) is **open**: its end is the support bound, flagged.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.optimize
from scipy import stats

from mle_ppl._src.engine.objective import Callables
from mle_ppl._src.engine.optimize import newton
from mle_ppl._src.engine.re_fit import settle_profile_point
from mle_ppl._src.errors import ConvergenceWarning, MLEError, did_you_mean
from mle_ppl._src.inference.profile_expr import expression_fn, param_names

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate

#: Distance on the unconstrained scale from the MLE beyond which a transformed (bounded) parameter
#: is at its boundary (log scale: a factor e^30); also the level below which a coordinate without a
#: standard error is taken as held on its boundary (a variance component at 0).
BOUNDARY_U = 30.0
#: Largest step (unconstrained scale) of the walk up from a coordinate held on its boundary.
HELD_STEP_MAX = 4.0
#: Relative tolerance on the log-likelihood: a profile point above the MLE by more than this
#: means the fit was not at the maximum.
LL_RTOL = 1e-7


# ----------------------------------------------------------------------------- result
@dataclass(frozen=True)
class Profile:
    """A profile-likelihood curve and the confidence interval it gives.

    ``values`` are the points of the walk on the user's scale (sorted), ``loglik`` the profile
    log-likelihood there and ``z`` the signed root deviance. ``lower``/``upper`` are the interval
    ends; an end that the profile never reached is the support bound with ``open_lower`` /
    ``open_upper`` set.
    """

    param: str
    level: float
    estimate: float
    std_err: float  #: Wald (delta-method) standard error, for comparison
    max_loglik: float
    values: np.ndarray
    loglik: np.ndarray
    z: np.ndarray
    lower: float
    upper: float
    open_lower: bool
    open_upper: bool
    notes: tuple[str, ...] = field(default=())

    @property
    def interval(self) -> tuple[float, float]:
        """``(lower, upper)``."""
        return (self.lower, self.upper)

    @property
    def critical(self) -> float:
        """The critical value of ``|z|`` at :attr:`level`."""
        return float(stats.norm.ppf(0.5 + self.level / 2))

    def to_frame(self) -> pd.DataFrame:
        """The profile as a DataFrame (value, loglik, z)."""
        return pd.DataFrame({"value": self.values, "loglik": self.loglik, "z": self.z})

    def __str__(self) -> str:
        lo = f"{self.lower:.6g}" + (" (open: not reached)" if self.open_lower else "")
        hi = f"{self.upper:.6g}" + (" (open: not reached)" if self.open_upper else "")
        notes = "".join(f"\nNote: {n}" for n in self.notes)
        return (f"Profile likelihood of {self.param}: estimate {self.estimate:.6g}, "
                f"{100 * self.level:g}% interval [{lo}, {hi}] "
                f"({len(self.values)} points){notes}")

    def plot(self, ax=None, *, kind: str = "z"):
        """Plot the profile: ``kind="z"`` (signed root deviance, with the Wald line) or
        ``kind="loglik"`` (profile log-likelihood and the cut-off).

        Every line is in the legend (profile, Wald, cut-offs, interval ends, MLE). Returns the
        matplotlib Figure (the one holding ``ax`` when given): ``prof.plot().savefig(path)``.
        """
        import matplotlib.pyplot as plt

        if kind not in ("z", "loglik"):
            raise MLEError(f"kind={kind!r}; expected 'z' or 'loglik'.")
        if ax is None:
            _, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
        zc = self.critical
        pct = f"{100 * self.level:g}%"
        if kind == "z":
            ax.plot(self.values, self.z, "o-", ms=3, label="profile (signed root deviance)")
            if np.isfinite(self.std_err) and self.std_err > 0:
                ax.plot(self.values, (self.values - self.estimate) / self.std_err, "--",
                        color="grey", label="Wald (estimate − value)/SE")
            for k, h in enumerate((-zc, zc)):
                ax.axhline(h, color="k", lw=0.8, ls=":",
                           label=f"±{zc:.3g}: {pct} cut-offs" if k == 0 else None)
            ax.set_ylabel("z")
        else:
            ax.plot(self.values, self.loglik, "o-", ms=3, label="profile log-likelihood")
            ax.axhline(self.max_loglik - zc**2 / 2, color="k", lw=0.8, ls=":",
                       label=f"{pct} cut-off (max − {zc**2 / 2:.3g})")
            ax.set_ylabel("log-likelihood")
        shown = False
        for v, is_open in ((self.lower, self.open_lower), (self.upper, self.open_upper)):
            if np.isfinite(v) and not is_open:
                ax.axvline(v, color="C3", lw=0.8,
                           label=None if shown else f"{pct} profile interval")
                shown = True
        ax.axvline(self.estimate, color="C2", lw=0.8, label="MLE")
        ax.set_xlabel(self.param)
        ax.legend(fontsize="small")
        return ax.figure


# ----------------------------------------------------------------- constrained solvers
class _CoordinateSolver:
    """Maximise the likelihood over all coordinates but ``i``, which is held at ``t``, and those
    held on their boundary (``held``: variance components at 0), which stay where the fit put
    them."""

    def __init__(self, lik, i: int, held: np.ndarray):
        self.lik = lik
        self.i = i
        self.others = np.array([j for j in range(lik.n_params) if j != i and not held[j]],
                               dtype=int)

    def target(self, x: np.ndarray) -> float:
        return float(x[self.i])

    def initial_slope(self, x: np.ndarray, H: np.ndarray) -> np.ndarray:
        """d x / d t along the profile path at the MLE (from the Hessian)."""
        o, i = self.others, self.i
        d = np.zeros(len(x))
        d[i] = 1.0
        if len(o):
            try:
                d[o] = -np.linalg.solve(H[np.ix_(o, o)], H[o, i])
            except np.linalg.LinAlgError:
                pass
        return d

    def solve(self, t: float, guess: np.ndarray) -> tuple[np.ndarray, float, bool]:
        lik, o, i = self.lik, self.others, self.i
        x = np.array(guess, dtype=float)
        x[i] = t
        if not len(o):
            f = lik.value_and_grad(x)[0]
            return x, -f, bool(np.isfinite(f))
        if hasattr(lik, "variance_coords"):  # mixed model: another σ may settle at 0 (re_fit)
            return settle_profile_point(lik, x, o)

        def vg(z):
            xx = x.copy()
            xx[o] = z
            f, g = lik.value_and_grad(xx)
            return f, g[o]

        def hess(z):
            xx = x.copy()
            xx[o] = z
            return lik.hessian(xx)[np.ix_(o, o)]

        z0 = x[o]
        if not np.isfinite(vg(z0)[0]):
            return x, -np.inf, False
        res = newton(Callables(vg, hess), z0, tol=1e-12, max_iter=100, runaway=0)
        x[o] = res.x
        return x, -float(res.fun), bool(res.converged and np.isfinite(res.fun))


class _ExpressionSolver:
    """Maximise the likelihood subject to ``g(x) = t`` (Newton on the KKT conditions) over the
    coordinates not ``held`` on their boundary."""

    def __init__(self, lik, fn, held: np.ndarray):
        self.lik = lik
        self.free = np.flatnonzero(~held)
        self.fn = fn  # x -> (g, grad g, hess g)

    def target(self, x: np.ndarray) -> float:
        return float(self.fn(x)[0])

    def initial_slope(self, x: np.ndarray, H: np.ndarray) -> np.ndarray:
        # maximising l subject to g = t: dx/dt = H^-1 a / (a' H^-1 a), a = grad g
        fr = self.free
        _, a, _ = self.fn(x)
        a = a[fr]
        d = np.zeros(len(x))
        try:
            Ha = np.linalg.solve(H[np.ix_(fr, fr)], a)
        except np.linalg.LinAlgError:
            d[fr] = a / max(a @ a, 1e-300)
            return d
        d[fr] = Ha / (a @ Ha)
        return d

    def _kkt(self, x, lam, t):
        f, gf = self.lik.value_and_grad(x)
        c, a, _ = self.fn(x)
        return f, np.concatenate([(gf + lam * a)[self.free], [c - t]])

    def solve(self, t: float, guess: np.ndarray) -> tuple[np.ndarray, float, bool]:
        lik, fr = self.lik, self.free
        x = np.array(guess, dtype=float)
        f, gf = lik.value_and_grad(x)
        if not np.isfinite(f):
            return x, -np.inf, False
        c, a, _ = self.fn(x)
        lam = -float(a[fr] @ gf[fr]) / max(float(a[fr] @ a[fr]), 1e-300)
        ok = False
        for _ in range(100):
            f, gf = lik.value_and_grad(x)
            c, a, Hg = self.fn(x)
            F = np.concatenate([(gf + lam * a)[fr], [c - t]])
            K = np.zeros((len(fr) + 1, len(fr) + 1))
            K[:-1, :-1] = (lik.hessian(x) + lam * Hg)[np.ix_(fr, fr)]
            K[:-1, -1] = a[fr]
            K[-1, :-1] = a[fr]
            try:
                step = -np.linalg.solve(K, F)
            except np.linalg.LinAlgError:
                break
            norm0 = np.linalg.norm(F)
            if norm0 < 1e-11 * (1 + abs(f)) and np.linalg.norm(step[:-1]) < 1e-10 * (
                    1 + np.linalg.norm(x)):
                ok = True
                break
            alpha = 1.0
            for _ls in range(40):
                x_new = x.copy()
                x_new[fr] += alpha * step[:-1]
                lam_new = lam + alpha * step[-1]
                f_new, F_new = self._kkt(x_new, lam_new, t)
                if np.isfinite(f_new) and np.linalg.norm(F_new) < (1 - 1e-4 * alpha) * norm0:
                    break
                alpha *= 0.5
            else:
                # no decrease of the KKT residual: accept only if already tiny
                ok = norm0 < 1e-7 * (1 + abs(f))
                break
            x, lam = x_new, lam_new
        f = lik.value_and_grad(x)[0]
        c = self.fn(x)[0]
        ok = ok and np.isfinite(f) and abs(c - t) < 1e-8 * (1 + abs(t))
        return x, -float(f), bool(ok)


# ------------------------------------------------------------------------------- walk
def _walk(fit: Estimate, solver, *, level: float, max_steps: int, step: float | None,
          t_limits: tuple[float, float], name: str, h_max: float = math.inf):
    """Walk both sides from the MLE; return the points and per side the end ``t``: None when
    open (not reached), NaN when it could not be computed (an inner fit failed; said in the
    notes and warned)."""
    lik = fit.likelihood
    xhat = np.array(fit.x)
    ll_hat = fit.loglik
    zc = float(stats.norm.ppf(0.5 + level / 2))
    H = lik.hessian(xhat)
    slope = solver.initial_slope(xhat, H)
    t_hat = solver.target(xhat)
    # Wald scale of t: 1 / sqrt(curvature of the profile along the path)
    curv = float(slope @ H @ slope)
    se_t = 1.0 / math.sqrt(curv) if curv > 0 and np.isfinite(curv) else np.nan
    h0 = step if step is not None else (zc * se_t / 4 if np.isfinite(se_t) and se_t > 0
                                        else 0.1 * max(1.0, abs(t_hat)))
    tol_ll = LL_RTOL * max(1.0, abs(ll_hat))
    above = []

    def side(direction):
        return "lower" if direction < 0 else "upper"

    def rdev(t, ll):
        d = 2 * (ll_hat - ll)
        if d < -2 * tol_ll:
            above.append((t, ll))
        return math.copysign(math.sqrt(max(d, 0.0)), t - t_hat)

    points = {}  # t -> (ll, r, x)
    points[t_hat] = (ll_hat, 0.0, xhat)
    ends = {}
    notes = []
    for direction in (-1.0, 1.0):
        h = h0
        t_prev, x_prev, r_prev = t_hat, xhat, 0.0
        dxdt = slope * direction
        end = None
        for _ in range(max_steps):
            t = t_prev + direction * h
            lo, hi = t_limits
            if (direction < 0 and not t > lo) or (direction > 0 and not t < hi):
                notes.append(f"the profile of {name} reaches the boundary of the parameter space "
                             f"on the {'lower' if direction < 0 else 'upper'} side without "
                             f"crossing the {100 * level:g}% cut-off.")
                break
            guess = x_prev + dxdt * h
            x, ll, ok = solver.solve(t, guess)
            if not ok:
                x, ll, ok = solver.solve(t, x_prev)
            if not ok and h > h0 * (1 + 1e-12):
                h = max(h / 4, h0)  # a doubled step went too far for the warm start: shorten
                continue
            if not ok:
                end = math.nan
                notes.append(f"the inner fit (the other parameters maximised with {name} fixed) "
                             f"failed at {name} (unconstrained) = {t:.6g}, before the "
                             f"{100 * level:g}% cut-off: the {side(direction)} end is NaN (not "
                             "computed).")
                break
            r = rdev(t, ll)
            points[t] = (ll, r, x)
            if abs(r) >= zc:
                # bracket [t_prev, t]: Brent on r(t) - (+-zc), warm-started at the nearest point
                target = direction * zc

                def fr(tt, target=target):
                    near = min(points, key=lambda p: abs(p - tt))
                    xx, lll, okk = solver.solve(tt, points[near][2])
                    if not okk:
                        raise _InnerFail
                    rr = rdev(tt, lll)
                    points[tt] = (lll, rr, xx)
                    return rr - target

                try:
                    end = scipy.optimize.brentq(fr, t_prev, t, xtol=1e-10 * (1 + abs(t)),
                                                rtol=1e-12)
                except _InnerFail:
                    end = math.nan
                    notes.append(f"root-finding for the {side(direction)} end of {name} hit a "
                                 f"failed inner fit between {name} (unconstrained) = "
                                 f"{min(t, t_prev):.6g} and {max(t, t_prev):.6g}: the end is NaN "
                                 "(not computed).")
                break
            dxdt = (x - x_prev) / abs(t - t_prev)  # secant: warm start of the next point
            if abs(r) - abs(r_prev) < zc / 8:
                h = min(2 * h, h_max)  # slow progress: the profile is flat, take bigger steps
            t_prev, x_prev, r_prev = t, x, r
        else:
            notes.append(f"the profile of {name} does not cross the {100 * level:g}% cut-off "
                         f"within {max_steps} steps on the "
                         f"{'lower' if direction < 0 else 'upper'} side (flat likelihood).")
        ends[direction] = end
    if any(e is not None and math.isnan(e) for e in ends.values()):
        warnings.warn(f"the profile of {name}: " + " ".join(n for n in notes if "NaN" in n),
                      ConvergenceWarning, stacklevel=4)
    if above:
        t_best, ll_best = max(above, key=lambda p: p[1])
        warnings.warn(
            f"the profile of {name} found a higher log-likelihood ({ll_best:.10g}) than the fit "
            f"({ll_hat:.10g}): the fit is not at the maximum. Refit (e.g. with starts= or "
            "start=) before trusting intervals.", ConvergenceWarning, stacklevel=4)
        notes.append("the profile found a higher log-likelihood than the fit.")
    return points, ends, se_t, notes


class _InnerFail(Exception):
    pass


def _check_fit(fit: Estimate) -> None:
    if not fit.converged:
        raise MLEError("profile intervals need a converged fit (the profile is measured from the "
                       "maximum); this fit did not converge. Refit first (see fit.warnings).")


def _held(fit: Estimate) -> np.ndarray:
    """Coordinates held on their boundary in the inner fits: the variance components the fit
    put at 0 (``fit.random_effects.boundary``, lme4's singular fit), and any bounded coordinate
    at least BOUNDARY_U down without a standard error. The likelihood is flat in them there, so
    a Newton step cannot move them; lme4 profiles a singular fit the same way."""
    lik = fit.likelihood
    held = np.zeros(lik.n_params, dtype=bool)
    labels = list(fit.labels)
    for lab in getattr(fit.random_effects, "boundary", ()) or ():
        held[labels.index(lab)] = True
    for b in lik.blocks:
        if b.transform is not None:
            for i in range(b.start, b.start + b.size):
                held[i] |= (fit.x[i] <= -BOUNDARY_U and not np.isfinite(fit.std_errors.iloc[i]))
    return held


def _coordinate_profile(fit: Estimate, i: int, *, level, max_steps, step) -> Profile:
    lik = fit.likelihood
    label = lik.labels[i]
    block = next(b for b in lik.blocks if b.start <= i < b.start + b.size)
    # a bounded parameter's boundary is BOUNDARY_U from its MLE (free of the data's units: y x 1e-30
    # puts log sigma at -69); one held on its boundary (a variance component at 0, no standard
    # error) walks up from there, the others on their boundary staying there
    held_all = _held(fit)
    held = bool(held_all[i]) and block.transform is not None
    limits = ((fit.x[i], BOUNDARY_U) if held else (-np.inf, np.inf)
              if block.transform is None else (fit.x[i] - BOUNDARY_U, fit.x[i] + BOUNDARY_U))
    step = 1.0 if held and step is None else step
    # from the boundary the walk doubles its step across the flat part; at most a factor e^4 a
    # step, so that it does not leap to σ ~ e^13, where the inner fits are slow or fail
    h_max = HELD_STEP_MAX if held else math.inf
    solver = _CoordinateSolver(lik, i, held_all)
    points, ends, _, notes = _walk(fit, solver, level=level, max_steps=max_steps, step=step,
                                   t_limits=limits, name=label, h_max=h_max)
    ts = np.array(sorted(points))
    theta = np.array([lik.constrained_flat(points[t][2])[i] for t in ts])
    increasing = theta[-1] >= theta[0]
    lo_end, hi_end = (ends[-1.0], ends[1.0]) if increasing else (ends[1.0], ends[-1.0])

    def to_theta(t):
        x = np.array(fit.x)
        x[i] = t
        return float(lik.constrained_flat(x)[i])

    def end_value(e, bound):
        return bound if e is None else math.nan if math.isnan(e) else to_theta(e)

    lower, upper = end_value(lo_end, block.lower), end_value(hi_end, block.upper)
    order = np.argsort(theta)
    se = float(fit.std_errors.iloc[i])
    return Profile(param=label, level=level, estimate=float(fit.theta[i]), std_err=se,
                   max_loglik=fit.loglik, values=theta[order],
                   loglik=np.array([points[t][0] for t in ts])[order],
                   z=np.array([points[t][1] for t in ts])[order] * (1 if increasing else -1),
                   lower=lower, upper=upper, open_lower=lo_end is None,
                   open_upper=hi_end is None, notes=tuple(notes))


def _expression_profile(fit: Estimate, expr, *, level, max_steps, step) -> Profile:
    lik = fit.likelihood
    fn = expression_fn(lik, expr)
    name = expr if isinstance(expr, str) else getattr(expr, "__name__", "expression")
    solver = _ExpressionSolver(lik, fn, _held(fit))
    points, ends, se_t, notes = _walk(fit, solver, level=level, max_steps=max_steps, step=step,
                                      t_limits=(-np.inf, np.inf), name=name)
    ts = np.array(sorted(points))
    return Profile(param=name, level=level, estimate=solver.target(np.array(fit.x)),
                   std_err=se_t, max_loglik=fit.loglik, values=ts,
                   loglik=np.array([points[t][0] for t in ts]),
                   z=np.array([points[t][1] for t in ts]),
                   lower=ends[-1.0] if ends[-1.0] is not None else -np.inf,
                   upper=ends[1.0] if ends[1.0] is not None else np.inf,
                   open_lower=ends[-1.0] is None, open_upper=ends[1.0] is None,
                   notes=tuple(notes))


# ------------------------------------------------------------------------- public API
def profile(fit: Estimate, param, *, level: float = 0.95, max_steps: int = 40,
            step: float | None = None) -> Profile:
    """Profile likelihood of a parameter or of a scalar function of the parameters.

    Parameters
    ----------
    fit : Estimate
        A converged fit.
    param : str or callable
        A parameter label (``"sigma"``, ``"beta[x1]"``), an expression over parameter names and
        labels (``"exp(beta[x1])"``, ``"alpha + 2 * beta[0]"``, ``"mu / sigma"``; functions
        ``exp log log1p expm1 sqrt abs sigmoid logit tanh sin cos sum square``), or a callable
        taking ``{name: pytensor variable}`` and returning a scalar PyTensor expression.
    level : float
        Confidence level of the interval.
    max_steps : int
        Steps per side before a side is declared open.
    step : float, optional
        Step of the walk in the profiled coordinate (the unconstrained one for a parameter, e.g.
        log σ); default a quarter of the Wald half-width, doubled while the profile is flat.

    Returns
    -------
    Profile
        ``.lower``, ``.upper``, ``.open_lower``, ``.open_upper``, the curve (``.values``,
        ``.loglik``, ``.z``, ``.to_frame()``) and ``.plot()``.

    Examples
    --------
    >>> prof = fit.profile("sigma")           # doctest: +SKIP
    >>> prof.interval                         # doctest: +SKIP
    >>> fit.profile("exp(beta[x1])").plot()   # doctest: +SKIP
    """
    if not 0 < level < 1:
        raise MLEError(f"level={level!r} must be between 0 and 1 (e.g. 0.95).")
    _check_fit(fit)
    labels = list(fit.labels)
    if isinstance(param, str) and param in labels:
        return _coordinate_profile(fit, labels.index(param), level=level, max_steps=max_steps,
                                   step=step)
    if (isinstance(param, str) and param.isidentifier()
            and param not in param_names(fit.likelihood)):
        raise MLEError(f"{param!r} is not a parameter of the model; labels are {labels}."
                       f"{did_you_mean(param, labels)}")
    return _expression_profile(fit, param, level=level, max_steps=max_steps, step=step)


def profile_conf_int(fit: Estimate, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood intervals for every parameter, a DataFrame (lower, upper) by label.

    Open ends are the support bounds (``-inf``/``inf``, ``0`` for a positive parameter); which
    ends are open is in ``df.attrs["open"]`` (``{label: (open_lower, open_upper)}``).

    Examples
    --------
    >>> fit.conf_int(method="profile")        # doctest: +SKIP
    """
    _check_fit(fit)
    rows, open_ = [], {}
    for i, lab in enumerate(fit.labels):
        pr = _coordinate_profile(fit, i, level=level, max_steps=40, step=None)
        rows.append((pr.lower, pr.upper))
        open_[lab] = (pr.open_lower, pr.open_upper)
    df = pd.DataFrame(rows, index=list(fit.labels), columns=["lower", "upper"])
    df.attrs["open"] = open_
    df.attrs["method"] = "profile"
    df.attrs["level"] = level
    return df

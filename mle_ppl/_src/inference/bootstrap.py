"""Bootstrap: refit on resampled or simulated data, percentile and BCa intervals.

Both kinds refit with trust-region Newton from the MLE (a warm start) on one objective compiled
once per model (cached), ``-sum_i w_i l_i(x; y)``, whose inputs are the parameter vector, one
weight per observation and the observed values:

- **nonparametric** (``kind="nonparametric"``): resample the ``n`` rows with replacement. A row
  drawn ``k`` times has weight ``k``, which is exactly a refit on the resampled rows, with no data
  copied and no container changed. Rows are as for sandwich errors
  (:mod:`mle_ppl._src.inference.robust`):
  every observed variable must have the same first-axis length ``n``; a row's covariates travel
  with it because the weight multiplies that row's log-likelihood term.
- **poisson** (``kind="poisson"``): each row gets an independent Poisson(1) weight (the
  multinomial counts of the nonparametric bootstrap, without the constraint that they sum to
  ``n``; the same first-order variance). Row ``i``'s weight in replicate ``b`` depends only on
  ``(random_seed, b, i)``: a Philox counter-based generator keyed by replicate ``b``'s seed,
  advanced to row ``i`` (:func:`poisson_weights`), so in memory, streamed (Parquet,
  ``chunk_rows=``) and on Dask the same seed gives the same replicates whatever the chunking.
  On chunked data each replicate is a Newton fit from the MLE on the weighted sums (value,
  gradient, Hessian) computed chunk by chunk, one data pass per Newton iteration; replicates run
  one after the other (about 7 passes per replicate for a logistic regression).
- **parametric** (``kind="parametric"``): simulate the outcomes from the fitted model at the MLE
  (PyMC's random graph of each observed variable, compiled once) and refit with unit weights.

Randomness: replicate ``b`` uses the ``b``-th child of ``numpy.random.SeedSequence(random_seed)``,
so results do not depend on ``n_jobs``. With ``n_jobs > 1`` the replicates run in worker
processes (``concurrent.futures``, spawn start method); each worker unpickles the model
(cloudpickle) and compiles the objective once (PyTensor's disk cache makes this cheap after the
first time).

Intervals (``BootstrapResult.conf_int``): percentile, and BCa (Efron's bias-corrected and
accelerated). The acceleration uses the empirical influence of each row on the MLE,
``U_i = J C s_i`` (``s_i`` the row's score, ``C`` the inverse observed information, ``J`` the map
to the user's scale): the infinitesimal jackknife, which needs no ``n`` extra refits.
"""

from __future__ import annotations

import weakref
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
from pytensor.graph.replace import clone_replace
from scipy import special

from mle_ppl._src.engine.likelihood import _compile
from mle_ppl._src.engine.objective import Callables
from mle_ppl._src.engine.optimize import newton
from mle_ppl._src.errors import MLEError

if TYPE_CHECKING:
    from mle_ppl._src.engine.estimate import Estimate
    from mle_ppl._src.engine.likelihood import Likelihood

#: The one registry of bootstrap kinds.
KINDS = {"nonparametric": "resample rows with replacement (as weights)",
         "poisson": "independent Poisson(1) weight per row (streamed and Dask data too)",
         "parametric": "simulate outcomes from the fitted model at the MLE"}
#: The one registry of bootstrap interval methods.
CI_METHODS = ("percentile", "bca")

_OBJ: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# ----------------------------------------------------------------------- compiled objective
class _Objective:
    """``-sum_i w_i l_i(x; y)``: value+grad and Hessian, with weights and outcomes as inputs."""

    def __init__(self, lik: Likelihood):

        self.lik = lik
        self.rows = lik.row_mode
        model = lik.model
        obs_nodes = [model.rvs_to_values[rv] for rv in model.observed_RVs]
        self.obs_dtypes = [n.type.dtype for n in obs_nodes]
        self.y_in = [pt.tensor(f"{rv.name}_boot", shape=(None,) * n.type.ndim, dtype=n.type.dtype)
                     for rv, n in zip(model.observed_RVs, obs_nodes, strict=True)]
        w = pt.vector("w")
        if self.rows:
            terms = lik.row_loglik_graph()
        else:
            terms = pt.concatenate([t.ravel() for t in lik._pointwise])
        nll = -pt.sum(w * terms)
        nll = clone_replace(nll, dict(zip(obs_nodes, self.y_in, strict=True)))
        x = lik._x
        grad = pt.grad(nll, x)
        hess = pytensor.gradient.jacobian(grad, x, vectorize=True)
        inputs = [x, w, *self.y_in]
        self._vg = _compile(inputs, [nll, grad], lik.mode, model=lik.model)
        self._h = _compile(inputs, hess, lik.mode, model=lik.model)

    def refit(self, x0: np.ndarray, w: np.ndarray, ys: list[np.ndarray]):
        ys = [np.asarray(y, dtype=d) for y, d in zip(ys, self.obs_dtypes, strict=True)]
        w = np.asarray(w, dtype=float)

        def vg(x):
            f, g = self._vg(x, w, *ys)
            return float(f), np.asarray(g, dtype=float)

        def h(x):
            H = np.asarray(self._h(x, w, *ys), dtype=float)
            return 0.5 * (H + H.T)

        return newton(Callables(vg, h), np.asarray(x0, dtype=float), tol=1e-10, max_iter=200)


def objective(lik: Likelihood) -> _Objective:
    """The cached weighted objective of ``lik`` (two compilations per model, once)."""
    obj = _OBJ.get(lik)
    if obj is None:
        obj = _Objective(lik)
        _OBJ[lik] = obj
    return obj


# ------------------------------------------------------------------------- replicates
#: Poisson(1) CDF at 0..20; P(W > 20) < 1e-19 is below the 2**-53 resolution of the uniforms.
_POISSON_CDF = np.cumsum(np.exp(-1.0) / special.factorial(np.arange(21)))


def replicate_key(seed: np.random.SeedSequence) -> np.ndarray:
    """The Philox key of a replicate (two 64-bit words from its SeedSequence)."""
    return seed.generate_state(2, np.uint64)


def poisson_weights(key, offset: int, m: int) -> np.ndarray:
    """Poisson(1) weights of rows ``offset .. offset + m - 1``: row ``i`` uses the ``i``-th
    64-bit word of ``Philox(key)`` (the counter advanced to it, no draws in between), turned
    into a uniform on [0, 1) with 53 bits and inverted through the Poisson CDF. Depends on
    ``(key, i)`` only, so any split of the rows into chunks gives the same weights."""
    bg = np.random.Philox(key=np.asarray(key, dtype=np.uint64))
    bg.advance(int(offset) // 4)  # one counter step makes four 64-bit words
    if offset % 4:
        bg.random_raw(int(offset) % 4)
    u = (bg.random_raw(int(m)) >> np.uint64(11)).astype(float) * 2.0**-53
    return np.searchsorted(_POISSON_CDF, u, side="right").astype(float)


class _PoissonSums:
    """One chunk's weighted ``(-sum w l, gradient, Hessian)`` (sent to Dask workers: pickles)."""

    def __init__(self, key):
        self.key = np.asarray(key, dtype=np.uint64)

    def __call__(self, lik, x, offset):
        obj = objective(lik)
        now = lik.current_observed()
        ys = [np.asarray(now[k], dtype=d) for k, d in zip(lik.observed_names, obj.obs_dtypes,
                                                          strict=True)]
        w = poisson_weights(self.key, offset, ys[0].shape[0])
        f, g = obj._vg(x, w, *ys)
        return float(f), np.asarray(g, dtype=float), np.asarray(obj._h(x, w, *ys), dtype=float)


def _chunked_poisson_replicate(chunked, x_hat: np.ndarray, seed: np.random.SeedSequence):
    fn = _PoissonSums(replicate_key(seed))
    last: dict = {}

    def sums(x):  # one data pass gives value, gradient and Hessian (Newton asks for both)
        k = np.asarray(x, dtype=float).tobytes()
        if k not in last:
            parts = chunked.map_rows(fn, x)
            last.clear()
            last[k] = (sum(p[0] for p in parts), sum(p[1] for p in parts),
                       sum(p[2] for p in parts))
        return last[k]

    def vg(x):
        f, g, _ = sums(x)
        return float(f), np.asarray(g, dtype=float)

    def h(x):
        H = sums(x)[2]
        return 0.5 * (H + H.T)

    res = newton(Callables(vg, h), np.asarray(x_hat, dtype=float), tol=1e-10, max_iter=200)
    ok = bool(res.converged) and np.all(np.isfinite(res.x))
    return (chunked.constrained_flat(res.x) if ok else np.full(chunked.n_params, np.nan)), ok


def _replicate(lik: Likelihood, obj: _Objective, kind: str, x_hat: np.ndarray,
               observed: list[np.ndarray], n: int, seed: np.random.SeedSequence):
    rng = np.random.default_rng(seed)
    if kind == "nonparametric":
        w = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(float)
        ys = observed
    elif kind == "poisson":
        w = poisson_weights(replicate_key(seed), 0, n)
        ys = observed
    else:
        from mle_ppl._src.inference.predict import simulate

        sims = simulate(lik, x_hat, int(rng.integers(0, 2**63 - 1)), sized=True)
        ys = [sims[name] for name in lik.observed_names]
        w = np.ones(n)
    res = obj.refit(x_hat, w, ys)
    ok = bool(res.converged) and np.all(np.isfinite(res.x))
    theta = lik.constrained_flat(res.x) if ok else np.full(lik.n_params, np.nan)
    return theta, ok


_WORKER: dict[str, Any] = {}


def _worker_init(payload: bytes) -> None:
    import cloudpickle

    from mle_ppl._src.engine.likelihood import likelihood_for

    state = cloudpickle.loads(payload)
    lik = likelihood_for(state["model"], likelihood_only=state["likelihood_only"],
                         mode=state["mode"])
    state["lik"] = lik
    state["obj"] = objective(lik)
    _WORKER.update(state)


def _worker_run(jobs):
    s = _WORKER
    return [(b, *_replicate(s["lik"], s["obj"], s["kind"], s["x_hat"], s["observed"], s["n"],
                            seed)) for b, seed in jobs]


# ---------------------------------------------------------------------------- intervals
def bca_interval(theta_hat: float, boot: np.ndarray, influence: np.ndarray,
                 level: float) -> tuple[float, float]:
    """Array layer: Efron's BCa interval from replicates and influence values.

    ``z0 = Phi^-1(fraction of replicates below theta_hat, ties counted half)``,
    ``a = sum U^3 / (6 (sum U^2)^1.5)``; the ends are the replicates' quantiles at
    ``Phi(z0 + (z0 + z)/(1 - a (z0 + z)))`` for ``z = Phi^-1(alpha), Phi^-1(1 - alpha)``.
    """
    boot = np.asarray(boot, dtype=float)
    boot = boot[np.isfinite(boot)]
    U = np.asarray(influence, dtype=float)
    frac = (np.count_nonzero(boot < theta_hat) + np.count_nonzero(boot <= theta_hat)) / (
        2 * len(boot))
    z0 = special.ndtri(frac)
    den = np.sum(U**2)
    a = np.sum(U**3) / (6 * den**1.5) if den > 0 else 0.0
    alpha = (1 - level) / 2
    ends = []
    for zq in (special.ndtri(alpha), -special.ndtri(alpha)):
        num = z0 + zq
        ends.append(special.ndtr(z0 + num / (1 - a * num)))
    if not np.all(np.isfinite(ends)):
        return (np.nan, np.nan)
    lo, hi = np.quantile(boot, ends)
    return float(lo), float(hi)


@dataclass(frozen=True)
class BootstrapResult:
    """Bootstrap replicates of the estimates and the intervals they give."""

    kind: str
    n_boot: int
    labels: tuple[str, ...]
    estimate: np.ndarray  #: the MLE (user scale)
    replicates: np.ndarray  #: (n_boot, n_params); NaN rows where the refit failed
    converged: np.ndarray  #: per replicate
    influence: np.ndarray = field(repr=False)  #: (n, n_params) empirical influence (BCa)
    seeds: tuple = field(default=(), repr=False)  #: SeedSequence per replicate

    @property
    def n_failed(self) -> int:
        """Replicates whose refit did not converge (left out of every summary)."""
        return int((~self.converged).sum())

    def to_frame(self) -> pd.DataFrame:
        """Replicates as a DataFrame (replicate × label)."""
        return pd.DataFrame(self.replicates, columns=list(self.labels))

    @property
    def std_errors(self) -> pd.Series:
        """Bootstrap standard errors (standard deviation of the replicates)."""
        return pd.Series(np.nanstd(self.replicates, axis=0, ddof=1), index=list(self.labels),
                         name="std_err")

    @property
    def bias(self) -> pd.Series:
        """Mean of the replicates minus the estimate."""
        return pd.Series(np.nanmean(self.replicates, axis=0) - self.estimate,
                         index=list(self.labels), name="bias")

    def conf_int(self, level: float = 0.95, method: str = "percentile") -> pd.DataFrame:
        """Intervals by label: ``method="percentile"`` or ``"bca"``; columns lower, upper."""
        if method not in CI_METHODS:
            raise MLEError(f"method={method!r} is not a bootstrap interval; expected one of "
                           f"{list(CI_METHODS)}.")
        if method == "bca" and self.influence.shape[0] == 0:
            raise MLEError("BCa intervals need each row's influence (per-row scores), which "
                           "streamed and Dask data do not keep; use method='percentile'.")
        if not 0 < level < 1:
            raise MLEError(f"level={level!r} must be between 0 and 1 (e.g. 0.95).")
        R = self.replicates[self.converged]
        rows = []
        a = (1 - level) / 2
        for j in range(len(self.labels)):
            if method == "percentile":
                rows.append(tuple(np.quantile(R[:, j], [a, 1 - a])))
            else:
                rows.append(bca_interval(self.estimate[j], R[:, j], self.influence[:, j], level))
        return pd.DataFrame(rows, index=list(self.labels), columns=["lower", "upper"])

    def indices(self, b: int) -> np.ndarray:
        """Row indices drawn for replicate ``b`` (nonparametric)."""
        if self.kind != "nonparametric":
            raise MLEError("indices() exist for the nonparametric bootstrap only.")
        n = self.influence.shape[0]
        return np.random.default_rng(self.seeds[b]).integers(0, n, size=n)

    def __str__(self) -> str:
        tab = pd.DataFrame({"estimate": self.estimate, "boot_se": self.std_errors,
                            "bias": self.bias}, index=list(self.labels))
        ci = self.conf_int()
        tab["ci_lower"], tab["ci_upper"] = ci["lower"], ci["upper"]
        head = (f"{self.kind.capitalize()} bootstrap: {self.n_boot} replicates"
                + (f", {self.n_failed} failed (left out)" if self.n_failed else ""))
        with pd.option_context("display.float_format", "{:.6g}".format, "display.width", 120):
            return f"{head}\n{tab.to_string()}"


# ---------------------------------------------------------------------------- public API
def _seed_sequence(random_seed) -> np.random.SeedSequence:
    if isinstance(random_seed, np.random.SeedSequence):
        return random_seed
    if isinstance(random_seed, np.random.Generator):
        return np.random.SeedSequence(int(random_seed.integers(0, 2**63 - 1)))
    return np.random.SeedSequence(random_seed)


def bootstrap(fit: Estimate, n_boot: int = 200, *, kind: str = "nonparametric",
              random_seed=None, n_jobs: int = 1, progress: bool = False) -> BootstrapResult:
    """Bootstrap the estimates of a fit: nonparametric (rows) or parametric (simulation).

    Parameters
    ----------
    fit : Estimate
        A converged fit.
    n_boot : int
        Number of replicates.
    kind : {"nonparametric", "poisson", "parametric"}
        ``"poisson"`` also works on streamed (Parquet, ``chunk_rows=``) and Dask data.
    random_seed : int, SeedSequence or numpy.random.Generator, optional
    n_jobs : int
        Worker processes (1: in this process).
    progress : bool
        Show a rich progress bar.

    Returns
    -------
    BootstrapResult
        ``.conf_int(level, method="percentile" | "bca")``, ``.std_errors``, ``.bias``,
        ``.replicates``.

    Examples
    --------
    >>> boot = fit.bootstrap(500, random_seed=1)    # doctest: +SKIP
    >>> boot.conf_int(method="bca")                 # doctest: +SKIP
    """
    if kind not in KINDS:
        raise MLEError(f"kind={kind!r} is not a bootstrap kind; expected one of {list(KINDS)}.")
    if not isinstance(n_boot, int | np.integer) or n_boot < 2:
        raise MLEError(f"n_boot={n_boot!r} must be an integer >= 2 (e.g. 500).")
    if not isinstance(n_jobs, int | np.integer) or n_jobs < 1:
        raise MLEError(f"n_jobs={n_jobs!r} must be a positive integer.")
    if not fit.converged:
        raise MLEError("the bootstrap refits from the MLE; this fit did not converge. Refit "
                       "first (see fit.warnings).")
    from mle_ppl._src.inference.robust import bread_unconstrained

    lik = fit.likelihood
    if kind == "poisson" and not getattr(lik, "rows_in_memory", True):
        return _chunked_poisson(fit, lik, int(n_boot), random_seed, n_jobs, progress)
    if not getattr(lik, "rows_in_memory", True):
        from mle_ppl._src.engine.objective import NotAvailable

        raise NotAvailable(
            f"a {kind} bootstrap refits on resampled or simulated rows, which needs the data in "
            f"memory; this fit read them in chunks ({lik.data_source.get('kind')}). Use the "
            "sandwich (fit.robust_cov), profile intervals or kind='poisson' (a Poisson "
            "bootstrap, which weights rows where they are read).")
    if kind in ("nonparametric", "poisson") and not lik.row_mode:
        raise MLEError(
            f"the nonparametric bootstrap resamples rows, but the observed variables "
            f"{list(lik.observed_names)} have different lengths; use kind='parametric'.")
    x_hat = np.array(fit.x, dtype=float)
    obj = objective(lik)
    observed_now = lik.current_observed()
    observed = [observed_now[name] for name in lik.observed_names]
    S = lik.scores(x_hat)
    n = S.shape[0]
    C = bread_unconstrained(fit)
    if C is not None:
        influence = S @ C.T @ lik.constrained_jacobian(x_hat).T
    else:
        influence = np.full((n, lik.n_params), np.nan)
    seeds = tuple(_seed_sequence(random_seed).spawn(int(n_boot)))
    thetas = np.full((n_boot, lik.n_params), np.nan)
    conv = np.zeros(n_boot, dtype=bool)
    with _Progress(progress, n_boot, kind) as advance:
        if n_jobs == 1:
            for b, seed in enumerate(seeds):
                thetas[b], conv[b] = _replicate(lik, obj, kind, x_hat, observed, n, seed)
                advance(1)
        else:
            _run_parallel(fit, lik, kind, x_hat, observed, n, seeds, n_jobs, thetas, conv,
                          advance)
    return BootstrapResult(kind=kind, n_boot=int(n_boot), labels=tuple(fit.labels),
                           estimate=np.array(fit.theta), replicates=thetas, converged=conv,
                           influence=influence, seeds=seeds)


def _chunked_poisson(fit, chunked, n_boot, random_seed, n_jobs, progress) -> BootstrapResult:
    if n_jobs != 1:
        raise MLEError(f"n_jobs={n_jobs}: on {chunked.backend.kind} data the Poisson bootstrap's "
                       "replicates run one after the other (each data pass is already spread "
                       "over the chunks or Dask partitions); leave n_jobs out.")
    if not chunked.lik.row_mode:
        raise MLEError(
            f"the Poisson bootstrap weights rows, but the observed variables "
            f"{list(chunked.observed_names)} have different lengths; fit in memory and use "
            "kind='parametric'.")
    x_hat = np.array(fit.x, dtype=float)
    seeds = tuple(_seed_sequence(random_seed).spawn(n_boot))
    thetas = np.full((n_boot, chunked.n_params), np.nan)
    conv = np.zeros(n_boot, dtype=bool)
    with _Progress(progress, n_boot, "poisson") as advance:
        for b, seed in enumerate(seeds):
            thetas[b], conv[b] = _chunked_poisson_replicate(chunked, x_hat, seed)
            advance(1)
    return BootstrapResult(kind="poisson", n_boot=n_boot, labels=tuple(fit.labels),
                           estimate=np.array(fit.theta), replicates=thetas, converged=conv,
                           influence=np.zeros((0, chunked.n_params)), seeds=seeds)


def _run_parallel(fit, lik, kind, x_hat, observed, n, seeds, n_jobs, thetas, conv, advance):
    import multiprocessing

    import cloudpickle

    payload = cloudpickle.dumps({"model": lik.model, "likelihood_only": lik.likelihood_only,
                                 "mode": lik.mode, "kind": kind, "x_hat": x_hat,
                                 "observed": observed, "n": n})
    jobs = list(enumerate(seeds))
    size = max(1, len(jobs) // (4 * n_jobs))
    chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx, initializer=_worker_init,
                             initargs=(payload,)) as pool:
        for out in pool.map(_worker_run, chunks):
            for b, theta, ok in out:
                thetas[b], conv[b] = theta, ok
            advance(len(out))


class _Progress:
    def __init__(self, enabled: bool, total: int, kind: str):
        self.enabled, self.total, self.kind = enabled, total, kind

    def __enter__(self):
        if not self.enabled:
            return lambda k: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        # progress goes to stderr, like the optimizer's: stdout stays for results
        self._bar = Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), transient=True,
                             console=Console(stderr=True))
        self._bar.__enter__()
        task = self._bar.add_task(f"{self.kind} bootstrap", total=self.total)
        return lambda k: self._bar.update(task, advance=k)

    def __exit__(self, *exc):
        if self.enabled:
            self._bar.__exit__(*exc)
        return False

"""Fitting: from a model (and data) to an :class:`~mle_ppl._src.engine.estimate.Estimate`."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from mle_ppl._src.engine.alloc import blas_threads, fit_scope, reuse_large_allocations
from mle_ppl._src.engine.compiled import DEFAULT_MODE
from mle_ppl._src.engine.estimate import Convergence, DataSource, Estimate
from mle_ppl._src.engine.objective import Objective
from mle_ppl._src.engine.optimize import OptimResult, get_method
from mle_ppl._src.engine.start import explain_nonfinite_start, start_vector
from mle_ppl._src.engine.uncertainty import diagnose
from mle_ppl._src.errors import DataError, MLEError, ModelError, first_line, rows_text

if TYPE_CHECKING:
    import pymc as pm

# PyMC is imported where a pm.Model is built or inspected, not here: a fit from the on-disk
# cache (engine.fitcache) never imports it.


def is_pm_model(obj) -> bool:
    """``isinstance(obj, pm.Model)`` without importing PyMC (no PyMC loaded: no pm.Model)."""
    pymc = sys.modules.get("pymc")
    return pymc is not None and isinstance(obj, pymc.Model)


def _check_finite(name: str, value: np.ndarray) -> None:
    arr = np.asarray(value)
    if arr.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.argwhere(bad)[:, 0]) if arr.ndim else np.array([0])
        kind = "NaN" if np.isnan(arr[bad]).any() else "infinite"
        raise DataError(
            f"data variable {name} has {int(bad.sum())} {kind} value(s), first at "
            f"{rows_text(rows)}. Drop or impute those rows before fitting.")


def check_model_data(model: pm.Model) -> None:
    """NaN/inf in observed values or ``pm.Data`` containers: a DataError naming the variable."""
    for rv in model.observed_RVs:
        val = model.rvs_to_values[rv]
        if hasattr(val, "get_value"):
            data = val.get_value(borrow=True)
        else:
            data = getattr(val, "data", None)
        if data is not None:
            label = f"'{rv.name}'" if not val.name or val.name == rv.name else (
                f"'{rv.name}' (data container '{val.name}')")
            _check_finite(label, data)
    for var in model.data_vars:
        if hasattr(var, "get_value"):
            _check_finite(f"'{var.name}'", var.get_value(borrow=True))
    # arrays written into the model as constants (e.g. `mu = X_numpy @ beta`)
    from pytensor.graph.traversal import graph_inputs
    from pytensor.tensor.variable import TensorConstant

    for var in graph_inputs(model.observed_RVs):
        if isinstance(var, TensorConstant) and var.data.size > 1:
            shape = "x".join(map(str, var.data.shape))
            _check_finite(var.name or f"constant array of shape {shape} in the model", var.data)


def _shape_error(model: pm.Model, err: Exception) -> DataError:
    shapes = {}
    for rv in model.observed_RVs:
        shapes[rv.name] = tuple(np.shape(model.rvs_to_values[rv].eval()))
    for var in model.data_vars:
        if hasattr(var, "get_value"):
            shapes[var.name] = tuple(np.shape(var.get_value()))
    desc = ", ".join(f"{k} {v}" for k, v in shapes.items())
    return DataError(
        f"the model's shapes do not fit together when the likelihood is evaluated: "
        f"{first_line(err)} (data shapes: {desc}). Check the shapes of the parameters and data "
        "in each observed variable's parameters (e.g. a coefficient vector's length against "
        "the columns it multiplies).")


def resolve_model(model, data) -> tuple[pm.Model, str, Any, Any]:
    """Turn ``model`` (pm.Model, ModelSpec, path or bundled name) and ``data`` into a pm.Model."""
    if is_pm_model(model):
        if data is not None:
            raise MLEError(
                "data= is for model files; a pm.Model already holds its data. Use "
                "pm.set_data({...}, model=model) to change it (no recompilation).")
        return model, (model.name or "model"), None, None
    if isinstance(model, str | PathLike):
        from mle_ppl._src.model.library import load_model

        model = load_model(model)
    if hasattr(model, "model_for"):
        spec = model
        if data is None:
            data = spec.default_data()
            if data is None:
                raise MLEError(
                    f"model {spec.name!r} names no default data; pass data= (a DataFrame, a "
                    "mapping of arrays, or a CSV/Parquet path).",
                    cli=f"model {spec.name!r} names no default data; give --data FILE (CSV or "
                        "Parquet).")
        pm_model, table = spec.model_for(data)
        return pm_model, spec.name, table, spec
    raise MLEError(
        f"model must be a pymc.Model, a model file path or a bundled model name; got "
        f"{type(model).__name__}.")


def estimate(
    model,
    data: Any = None,
    *,
    method: str = "newton",
    likelihood_only: bool = False,
    start: Mapping[str, Any] | None = None,
    tol: float = 1e-10,
    max_iter: int | None = None,
    learning_rate: float = 0.1,
    progress: bool = False,
    mode: str = DEFAULT_MODE,
    warn: bool = True,
    starts: int = 1,
    random_seed=None,
    chunk_rows: int | None = None,
    memory_budget: int | str | None = None,
    random: Sequence[str] | None = None,
    n_quadrature: int | None = None,
    reml: bool = False,
) -> Estimate:
    """Maximum-likelihood fit of a PyMC model with flat priors (the MAP point under flat priors).

    Parameters
    ----------
    model : pymc.Model, ModelSpec, str or path
        A ``pm.Model`` whose free variables are ``pm.Flat``/``pm.HalfFlat``/``pm.Uniform``; or a
        model file (``.toml``/``.py``) or bundled model name (see :func:`mle_ppl.load_model`).
    data : DataFrame, mapping of arrays, or path, optional
        Data for a model file; optional when the file names default data.
    method : str
        One of :data:`mle_ppl.METHODS`: ``"newton"`` (default), ``"lbfgs"``, ``"gd"``.
    likelihood_only : bool
        Accept proper priors and drop their terms (the result says so).
    start : mapping, optional
        Starting values on the user's scale, by variable name (others: the model's initial point).
    tol : float
        Convergence tolerance (Newton decrement in log-likelihood units; ``gd``: gradient of the
        mean NLL).
    max_iter : int, optional
        Iteration cap (method's default if None).
    learning_rate : float
        Step size of ``method="gd"`` on the mean NLL.
    progress : bool
        Show a progress bar (rich) with the loss and gradient norm.
    mode : str
        PyTensor compilation mode. ``"auto"`` (default): a quick-to-compile Python-VM mode for
        data of at most 10,000 elements, PyTensor's ``"FAST_RUN"`` (Numba) above that.
    warn : bool
        Also emit each diagnostic as a Python warning (they are always in ``fit.warnings``).
    starts : int
        Number of optimizer starts: the usual one plus ``starts - 1`` jittered ones (see
        :mod:`mle_ppl._src.engine.multistart`). The best optimum is returned;
        ``fit.multistart`` says
        whether the starts agree, and a :class:`~mle_ppl.MultimodalityWarning` is raised when
        they found different local optima.
    random_seed : int or numpy.random.Generator, optional
        Seed of the jittered starts.
    chunk_rows : int, optional
        Stream Parquet ``data`` (a file, a glob such as ``"big/*.parquet"``, or a directory)
        in chunks of this many rows: memory is bounded by a chunk (see
        :mod:`mle_ppl._src.engine.chunked`). ``data`` may also be a ``dask.dataframe.DataFrame``:
        its partitions are fitted on the workers that hold them.
    memory_budget : int or str, optional
        Parquet data whose in-memory fit would need more than this (bytes, or ``"4G"``) are
        streamed without ``chunk_rows`` (default ``$MLE_PPL_MEMORY_BUDGET`` or 2 GiB).
    random : list of str, optional
        Names of the random effects to integrate out (Laplace approximation; see the README,
        "Random effects"). Default: detected (a free variable with a proper distribution whose
        parameters depend on free parameters); ``[]`` turns random effects off.
    n_quadrature : int, optional
        Integrate the random effects out by adaptive Gauss-Hermite quadrature with this many
        nodes per group (1 to 100; glmer's ``nAGQ``; 1 is the Laplace approximation) instead of
        the Laplace approximation. Only for one scalar random effect per group of one grouping
        factor (random intercepts).
    reml : bool
        Restricted maximum likelihood (REML) for a Gaussian linear mixed model, as lme4's
        ``REML=TRUE`` and statsmodels' ``MixedLM(reml=True)``: the fixed effects (``pm.Flat``
        parameters entering the mean linearly) are integrated out with the random effects; the
        variance parameters maximise the restricted likelihood and the fixed effects are their
        GLS estimates (see the README, "Random effects"). ``loglik`` is the REML criterion.

    Returns
    -------
    MLEFit

    Examples
    --------
    >>> import numpy as np, pymc as pm, mle_ppl
    >>> with pm.Model() as m:
    ...     mu = pm.Flat("mu"); sigma = pm.HalfFlat("sigma")
    ...     y = pm.Normal("y", mu, sigma, observed=np.array([1.0, 2.0, 4.0]))
    >>> round(mle_ppl.fit(m).estimates["mu"], 6)
    2.333333
    """
    optimizer = get_method(method)
    from mle_ppl._src.engine.chunked import plan
    from mle_ppl._src.engine.quadrature import check_nodes

    n_quadrature = check_nodes(n_quadrature)

    how = plan(model, data, chunk_rows=chunk_rows, memory_budget=memory_budget)
    if how is not None and how.kind == "memory":
        model, data, how = how.spec, how.data, None
    cached = None
    if how is None and n_quadrature is None and not reml:
        from mle_ppl._src.engine import fitcache

        # a TOML model file in a process without PyMC: the fit cache (hit: no PyMC at all)
        cached = fitcache.prepare(model, data, likelihood_only=likelihood_only, mode=mode,
                                  random=random)
    if cached is not None:
        name, table, spec = cached.spec.name, cached.bound.table, cached.spec
        pm_model = None if cached.objective is not None else spec.model_for_bound(cached.bound)
    elif how is None:
        pm_model, name, table, spec = resolve_model(model, data)
    else:
        pm_model, name, table, spec = None, how.spec.name, None, how.spec
    with reuse_large_allocations(), blas_threads(), fit_scope():
        out = _fit(pm_model, name, table, spec, optimizer, how=how, method=method,
                   likelihood_only=likelihood_only, start=start, tol=tol, max_iter=max_iter,
                   learning_rate=learning_rate, progress=progress, mode=mode, warn=warn,
                   starts=starts, random_seed=random_seed, random=random,
                   n_quadrature=n_quadrature, reml=reml,
                   objective=cached.objective if cached is not None else None)
    if cached is not None and cached.objective is None:
        fitcache.record(cached, out)  # for the next process
    return out


def _fit(pm_model, name, table, spec, optimizer, *, how=None, method, likelihood_only, start,
         tol, max_iter, learning_rate, progress, mode, warn, starts, random_seed,
         random=None, n_quadrature=None, reml=False,
         objective: Objective | None = None) -> Estimate:
    if pm_model is not None:
        check_model_data(pm_model)
    lik = objective if objective is not None else objective_for(
        pm_model, likelihood_only=likelihood_only, mode=mode, how=how, progress=progress,
        random=random, n_quadrature=n_quadrature, reml=reml)
    x0 = lik.x0()
    if start is not None:
        x0 = start_vector(lik, x0, start)  # MLEErrors naming the parameter
    t0 = time.perf_counter()
    try:
        f0, g0 = lik.value_and_grad(x0)
    except MLEError:
        raise
    except (ValueError, IndexError) as err:
        raise _shape_error(lik.model, err) from None
    start_value = (x0, f0, g0)
    if not np.isfinite(f0):
        explain_nonfinite_start(lik, x0)  # data outside the support: rows, values, support
        x0 = _finite_start(lik, x0)
    kwargs = {"tol": tol, "learning_rate": learning_rate, "n_obs": lik.count_obs(x0),
              "bounded": lik.bounded, "start_value": start_value}
    if max_iter is not None:
        kwargs["max_iter"] = max_iter
    report = None
    with _progress(progress, name, method, lik) as cb:
        if starts != 1:
            from mle_ppl._src.engine.multistart import run_starts

            res, report = run_starts(optimizer, lik, x0, starts=starts, random_seed=random_seed,
                                     progress=cb, **kwargs)
        else:
            res: OptimResult = optimizer(lik, x0, progress=cb, **kwargs)
    settle = getattr(lik, "settle_boundary", None)  # variance components at 0 (mixed models)
    fixed = ()
    if settle is not None and (res.converged or res.runaway):
        res, fixed = settle(res, optimizer, kwargs)
    coords = lik.fit_coords() if hasattr(lik, "fit_coords") else dict(lik.model.coords)
    out = _assemble(lik, res, name=name, table=table, spec=spec, t0=t0, warn=warn,
                    method=method, coords=coords, fixed=fixed)
    if report is not None:
        from mle_ppl._src.engine.multistart import attach

        out = attach(out, report, warn=warn)
    return out


def objective_for(pm_model: pm.Model | None, *, likelihood_only: bool, mode: str, how=None,
                  progress: bool = False,
                  random: Sequence[str] | None = None,
                  n_quadrature: int | None = None, reml: bool = False) -> Objective:
    """The objective that ``fit`` maximises for ``pm_model``: the one place that chooses an
    implementation of :class:`~mle_ppl._src.engine.objective.Objective`.

    The in-memory compiled likelihood (cached per model and options, so refits after
    ``pm.set_data`` do not recompile); for data read in chunks (``how``: a
    :class:`~mle_ppl._src.engine.chunked.Plan`) the same compiled pieces summed over Parquet
    chunks or Dask partitions. A model with random effects
    (:func:`~mle_ppl._src.engine.random_effects.classify`) gets the Laplace-marginal objective
    (:mod:`~mle_ppl._src.engine.laplace`), or with ``n_quadrature`` the adaptive Gauss-Hermite
    one over it (:mod:`~mle_ppl._src.engine.quadrature`); with ``reml=True`` the REML objective
    (:mod:`~mle_ppl._src.engine.reml`: the fixed effects integrated out too).
    """
    if n_quadrature is not None and how is not None:
        raise MLEError(f"n_quadrature= integrates random effects out; data read in chunks "
                       f"({how.kind}) are fitted without random effects. Drop n_quadrature.")
    if reml and n_quadrature is not None:
        raise MLEError("reml=True and n_quadrature= exclude each other: REML is for Gaussian "
                       "linear mixed models, where the Laplace approximation is already exact.",
                       cli="--reml and --n-quadrature exclude each other: REML is for Gaussian "
                           "linear mixed models, where the Laplace approximation is exact.")
    if reml and how is not None and how.kind in ("streamed", "dask"):
        raise MLEError("reml=True needs the data in memory (REML is for linear mixed models, "
                       "fitted in memory); drop chunk_rows= or the Dask data frame.",
                       cli="--reml needs the data in memory; drop --chunk-rows / --scheduler.")
    if how is not None and how.kind == "streamed":
        from mle_ppl._src.engine.chunked import streamed_objective

        return streamed_objective(how.spec, how.data, chunk_rows=how.chunk_rows,
                                  likelihood_only=likelihood_only, mode=mode, reason=how.reason)
    if how is not None and how.kind == "dask":
        from mle_ppl._src.engine.distributed import dask_objective

        return dask_objective(how.spec, how.data, likelihood_only=likelihood_only, mode=mode)
    from mle_ppl._src.engine.likelihood import check_structure
    from mle_ppl._src.engine.random_effects import classify, refuse_priors

    check_structure(pm_model)
    roles = classify(pm_model, random=random, likelihood_only=likelihood_only)
    if not likelihood_only:
        refuse_priors(roles, pm_model, likelihood_only=False)  # priors: refused by name
    if reml:
        from mle_ppl._src.engine.reml import reml_for

        return reml_for(pm_model, roles, likelihood_only=likelihood_only, mode=mode)
    if roles.random:
        from mle_ppl._src.engine.laplace import laplace_for

        lap = laplace_for(pm_model, roles, likelihood_only=likelihood_only, mode=mode)
        if n_quadrature is None:
            return lap
        from mle_ppl._src.engine.quadrature import quadrature_for

        return quadrature_for(lap, n_quadrature)
    if n_quadrature is not None:
        raise ModelError(f"n_quadrature={n_quadrature} integrates random effects out, but the "
                         "model has none (no free variable with a proper distribution whose "
                         "parameters depend on free parameters). Drop n_quadrature.",
                         cli="--n-quadrature integrates random effects out, but the model has "
                             "none. Drop --n-quadrature.")
    from mle_ppl._src.engine.likelihood import likelihood_for

    return likelihood_for(pm_model, likelihood_only=likelihood_only, mode=mode)


def _finite_start(lik: Objective, x0: np.ndarray) -> np.ndarray:
    """Find a start with a finite log-likelihood by scaling unconstrained values (e.g. log σ)."""
    for scale in (1.0, 3.0, 10.0, 30.0):
        for cand in (x0 + scale, x0 - scale):
            for b in lik.blocks:
                if b.transform is None:
                    cand[b.slice] = x0[b.slice]
            if np.isfinite(lik.value(cand)):
                return cand
    raise DataError("the log-likelihood is -inf or NaN at the starting point and nearby, "
                    "although every row has a finite likelihood somewhere: give starting values "
                    "(start= in Python, start = ... in a model file's [parameters]) where the "
                    "model fits the data.")


def _assemble(lik: Objective, res: OptimResult, *, name, table, spec, t0, warn, method,
              coords, fixed=()) -> Estimate:
    x = res.x
    H = res.hessian if res.hessian is not None else lik.hessian(x)
    values, J = lik.constrained_and_jacobian(x)
    n_obs = lik.count_obs(x)
    loglik = -float(res.fun)
    # coordinates held on their boundary (a variance component at 0): diagnosed without them
    keep = np.array([i for i in range(lik.n_params) if i not in fixed], dtype=int)
    sub = np.ix_(keep, keep)
    diag = diagnose(x=x[keep], grad_u=res.grad[keep], hessian_u=H[sub], jacobian=J[sub],
                    labels=tuple(lik.labels[i] for i in keep),
                    converged=res.converged, optimizer_message=res.message,
                    bounded=lik.bounded[keep], runaway=tuple(
                        int(np.flatnonzero(keep == i)[0]) for i in res.runaway if i in keep),
                    pointwise=(
                        (lambda: lik.perfect_counts(x)) if hasattr(lik, "perfect_counts")
                        else (lambda: lik.pointwise(x))),
                    discrete_outcome=lik.discrete_outcome, n_obs=n_obs,
                    loglik=loglik, method=method)
    inner = getattr(lik, "warn_inner", None)  # mixed models: the inner Newton's failures
    found = list(diag.warnings) + (inner(x, res.converged) if inner is not None else [])
    if warn:
        for cat, msg in found:
            warnings.warn(msg, cat, stacklevel=3)
    theta = (np.concatenate([np.asarray(values[b.name], dtype=float).ravel() for b in lik.blocks])
             if lik.blocks else np.zeros(0))
    cov, cov_u = diag.cov, diag.cov_unconstrained
    notes = lik.notes
    if len(fixed):
        p = lik.n_params
        cov, cov_u = np.full((p, p), np.nan), np.full((p, p), np.nan)
        cov[sub], cov_u[sub] = diag.cov, diag.cov_unconstrained
        for i in fixed:
            b = next(b for b in lik.blocks if b.start <= i < b.start + b.size)
            theta[i] = b.lower
            flat_vals = np.array(values[b.name], dtype=float)
            flat_vals.reshape(-1)[i - b.start] = b.lower
            values[b.name] = flat_vals
        names = ", ".join(lik.labels[i] for i in fixed)
        notes = notes + (
            f"boundary (singular) fit: {names} = 0 maximises the marginal likelihood (a "
            "legitimate maximum on the boundary, as lme4 reports it). Its standard error is "
            "NaN (the Wald approximation does not apply at a boundary; use "
            "conf_int(method='profile') for a one-sided interval); the other estimates and "
            "standard errors are those of the model with it at 0.",)
    re_report = getattr(lik, "random_effects_report", None)
    convergence = Convergence(
        converged=res.converged, message=res.message, iterations=res.iterations,
        n_evals=res.n_evals, grad_norm=diag.grad_norm, hessian_min_eig=diag.hessian_min_eig,
        hessian_cond=diag.hessian_cond, history=res.history, fit_time=time.perf_counter() - t0)
    return Estimate(
        model_name=name, labels=lik.labels, theta=theta, x=x,
        cov_array=cov, cov_unconstrained=cov_u, loglik=loglik,
        n_obs=n_obs, method=method, values=values, convergence=convergence,
        warnings=tuple(m for _, m in found), notes=notes, likelihood=lik,
        source=DataSource(table=table, spec=spec, snapshot=lik.snapshot(), coords=coords,
                          reading=getattr(lik, "data_source", None) or {
                              "kind": "in-memory",
                              "rows": int(table.shape[0]) if table is not None else n_obs}),
        random_effects=None if re_report is None else re_report(x, cov_u, tuple(fixed)),
        criterion=getattr(lik, "criterion", "ML"))


class _progress:
    """A rich progress bar fed by the optimizer's callback (or nothing when disabled)."""

    def __init__(self, enabled: bool, name: str, method: str, objective=None):
        self.enabled = enabled
        self.name = name
        self.method = method
        self.objective = objective

    def __enter__(self):
        if not self.enabled:
            return None
        if hasattr(self.objective, "report"):  # chunked data: a line per iteration (rows/s)
            from mle_ppl._src.engine.chunked import progress_printer

            self.enabled = False
            return progress_printer(self.objective)
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        # on stderr, so that stdout (tables, --json) stays clean
        self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                             TimeElapsedColumn(), transient=True, console=Console(stderr=True))
        self._bar.__enter__()
        self._task = self._bar.add_task(f"fitting {self.name} ({self.method})", total=None)

        def cb(it, f, gnorm):
            self._bar.update(self._task, description=(
                f"fitting {self.name} ({self.method}) iter {it}: NLL {f:.8g}, |grad| {gnorm:.2e}"))
        return cb

    def __exit__(self, *exc):
        if self.enabled:
            self._bar.__exit__(*exc)
        return False

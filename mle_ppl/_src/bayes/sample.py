"""``mle_ppl.sample``: NUTS on the same model as :func:`mle_ppl.fit`, for a side-by-side view.

Under the model's own flat priors the posterior is proportional to the likelihood, so the
posterior mode is the MLE and, for large samples, the posterior mean and sd approach the MLE and
its standard error (Bernstein–von Mises). ``priors=`` swaps proper priors in for named parameters.

Before sampling with flat priors left in the model, the likelihood is maximised first: when the
MLE is not finite (separation, a boundary, a flat direction) the posterior under flat priors is
improper and NUTS would only drift and diverge, so :func:`sample` refuses and explains.
"""

from __future__ import annotations

import ast
import json
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pymc as pm
import xarray as xr

from mle_ppl._src.bayes.init import INIT_METHODS, mle_nuts_setup
from mle_ppl._src.errors import (
    BoundaryWarning,
    ConvergenceWarning,
    IdentifiabilityWarning,
    MLEError,
    ModelError,
    SamplingWarning,
    SeparationWarning,
    did_you_mean,
)
from mle_ppl._src.model.names import normalize

#: Free-variable distributions that are improper (flat) priors.
IMPROPER_OPS = ("FlatRV", "HalfFlatRV")

#: MLE diagnostics that mean the likelihood has no finite, isolated maximum.
IMPROPER_SIGNS = (SeparationWarning, BoundaryWarning, IdentifiabilityWarning)

#: Thresholds of :func:`sampling_problems` (Vehtari et al. 2021; PyMC uses the same values).
RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100


# --------------------------------------------------------------------------- priors
def parse_prior(name: str, text: str):
    """Parse a prior such as ``"Normal(0, 2.5)"`` into ``(distribution class, args, kwargs)``.

    Arguments must be numbers (``-1``, ``2.5``, ``1e-3``); the distribution must be a continuous
    PyMC distribution.

    Examples
    --------
    >>> parse_prior("beta", "Normal(0, sigma=2.5)")[1:]
    ((0,), {'sigma': 2.5})
    """
    where = f"prior for {name!r}"
    try:
        node = ast.parse(str(text).strip(), mode="eval").body
    except SyntaxError:
        node = None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise MLEError(f"{where}: expected a distribution call such as 'Normal(0, 2.5)' or "
                       f"'HalfNormal(1)', got {text!r}.")
    dist_name = node.func.id
    cls = getattr(pm, dist_name, None)
    if not (isinstance(cls, type) and issubclass(cls, pm.Continuous)):
        options = [n for n in dir(pm) if isinstance(getattr(pm, n), type)
                   and issubclass(getattr(pm, n), pm.Continuous)]
        raise MLEError(f"{where}: {dist_name!r} is not a continuous PyMC distribution."
                       f"{did_you_mean(dist_name, options)} Examples: Normal(0, 2.5), "
                       "StudentT(3, 0, 2.5), HalfNormal(1), Exponential(1).")

    def number(arg):
        try:
            value = ast.literal_eval(arg)
        except ValueError:
            value = None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MLEError(f"{where}: arguments of {dist_name} must be numbers, got "
                           f"{ast.unparse(arg)!r} in {text!r}.")
        return value

    args = tuple(number(a) for a in node.args)
    kwargs = {k.arg: number(k.value) for k in node.keywords}
    return cls, args, kwargs


def _prior_rv(name: str, prior, shape: tuple[int, ...]):
    """A prior distribution variable of ``shape`` from a string or a ``Distribution.dist()``."""
    if isinstance(prior, str):
        cls, args, kwargs = parse_prior(name, prior)
        try:
            return cls.dist(*args, **kwargs, shape=shape)
        except (TypeError, ValueError) as err:
            raise MLEError(f"prior for {name!r}: {prior!r} does not build: {err}. Check the "
                           f"arguments of pm.{cls.__name__}.") from None
    if hasattr(prior, "owner") and prior.owner is not None:
        import pytensor.tensor as pt

        if tuple(prior.type.shape) != tuple(shape):
            prior = pt.broadcast_to(prior, shape)  # pragma: no cover - rare
        return prior
    raise MLEError(f"prior for {name!r} must be a string such as 'Normal(0, 2.5)' or a "
                   f"pm.<Distribution>.dist(...) variable; got {type(prior).__name__}.")


def with_priors(model: pm.Model, priors: Mapping[str, Any]) -> pm.Model:
    """A copy of ``model`` in which the named free variables get proper priors.

    The likelihood, data, dims and deterministics are unchanged. A parameter keeps its support
    (a ``HalfFlat`` σ keeps its log transform, so ``Normal(0, 1)`` acts as a half-normal); a
    real-valued flat parameter takes the prior's own default transform.

    Parameters
    ----------
    model : pymc.Model
    priors : mapping
        Parameter name -> ``"Normal(0, 2.5)"`` (string) or ``pm.Normal.dist(0, 2.5)``.

    Examples
    --------
    >>> m2 = with_priors(m, {"beta": "Normal(0, 2.5)"})     # doctest: +SKIP
    """
    from pymc.distributions.transforms import _default_transform
    from pymc.model.fgraph import ModelFreeRV, fgraph_from_model, model_free_rv, model_from_fgraph

    free = {rv.name: rv for rv in model.free_RVs}
    # names as Python reads them (NFKC: µ is μ), matched to the model's variable names
    spelled = {normalize(n): n for n in free}
    priors = {spelled.get(normalize(k), k) if isinstance(k, str) else k: v
              for k, v in priors.items()}
    for name in priors:
        if name not in free:
            tail = f"{did_you_mean(name, free)} The parameters are {sorted(free)}."
            raise MLEError(f"priors= names {name!r}, which is not a parameter of the model.{tail}",
                           cli=f"--prior names {name!r}, which is not a parameter of the "
                               f"model.{tail}")
    point = model.initial_point()
    shapes = {rv.name: tuple(np.shape(point[model.rvs_to_values[rv].name]))
              for rv in model.free_RVs}
    fgraph, _ = fgraph_from_model(model)
    nodes = {node.op.name: node for node in fgraph.toposort() if isinstance(node.op, ModelFreeRV)}
    for name, prior in priors.items():
        node = nodes[name]
        old_rv, old_value = node.inputs
        new_rv = _prior_rv(name, prior, shapes[name])
        if new_rv.type.dtype != old_rv.type.dtype:
            import pytensor.tensor as pt

            new_rv = pt.cast(new_rv, old_rv.type.dtype)  # pragma: no cover - float32 setups
        transform = node.op.transform
        value = old_value
        if transform is None and new_rv.owner is not None:
            transform = _default_transform(new_rv.owner.op, new_rv)
            if transform is not None:
                value = transform.forward(new_rv, *new_rv.owner.inputs).type()
                value.name = f"{name}_{transform.name}__"
        new_node_out = model_free_rv(new_rv, value, transform, name, *node.op.dims)
        fgraph.replace(node.outputs[0], new_node_out, import_missing=True)
    new = model_from_fgraph(fgraph, mutate_fgraph=True)
    # keep the declaration order of the parameters (labels, posterior variables, tables)
    order = {rv.name: i for i, rv in enumerate(model.free_RVs)}
    new.free_RVs.sort(key=lambda rv: order[rv.name])
    return new


def flat_parameters(model: pm.Model) -> list[str]:
    """Names of the free variables whose prior is improper (``Flat``/``HalfFlat``)."""
    return [rv.name for rv in model.free_RVs if type(rv.owner.op).__name__ in IMPROPER_OPS]


def _merge_priors(spec, priors, file_priors: bool = True) -> dict[str, Any]:
    """The file's ``[priors]`` table overridden by ``priors=`` (``"flat"``/None keeps it flat)."""
    if isinstance(priors, str):
        if priors != "flat":
            raise MLEError(f"priors={priors!r}: expected a mapping such as "
                           "{'beta': 'Normal(0, 2.5)'}, or 'flat' to ignore the model file's "
                           "[priors] table.")
        return {}
    merged = dict(getattr(spec, "priors", None) or {}) if spec is not None and file_priors else {}
    if priors is not None:
        if not isinstance(priors, Mapping):
            raise MLEError(f"priors= must be a mapping from parameter name to a prior such as "
                           f"'Normal(0, 2.5)'; got {type(priors).__name__}.")
        merged.update(priors)
    return {k: v for k, v in merged.items() if not (v is None or v == "flat")}


# --------------------------------------------------------------------------- improper check
def _fit_likelihood(flat_model: pm.Model):
    """The MLE of ``flat_model`` and the warnings it raised (``(None, [])`` if it cannot fit)."""
    from mle_ppl._src.api.fit import fit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mle = fit(flat_model, likelihood_only=True)
        except MLEError:
            # Not a likelihood mle-ppl can maximise (e.g. potentials): nothing to check with.
            return None, []
    return mle, list(caught)


def require_proper_posterior(flat_model: pm.Model, still_flat: list[str], name: str,
                             fitted=None) -> list[str]:
    """Fit the likelihood; raise :class:`ModelError` if the flat-prior posterior is improper.

    ``fitted`` is ``(mle, caught warnings)`` from an earlier fit of ``flat_model``, if any.
    Returns the MLE's other warnings (e.g. non-convergence), to be passed on as notes.
    """
    mle, caught = fitted if fitted is not None else _fit_likelihood(flat_model)
    if mle is None:
        return []
    signs = [str(w.message) for w in caught if issubclass(w.category, IMPROPER_SIGNS)]
    if not signs and mle.likelihood.discrete_outcome:
        # Second line of defence for separation: at a finite MLE of a Bernoulli/binomial/
        # categorical likelihood no observation is fitted with probability 1 to 8 digits
        # (that needs a linear predictor beyond ±18); under separation the optimizer stops
        # with such observations and huge but finite "standard errors".
        pw = mle.likelihood.pointwise(np.asarray(mle.x))
        n_perfect = int(sum(np.sum(v > -1e-8) for v in pw.values()))
        if n_perfect:
            n_tot = int(sum(v.size for v in pw.values()))
            signs = [f"{n_perfect} of {n_tot} observations are fitted with probability 1 at the "
                     "maximum: likely (quasi-)complete separation, the MLE does not exist."]
    if signs:
        why = " ".join(signs)
        examples = ", ".join(f"{p!r}: 'Normal(0, 2.5)'" for p in still_flat[:2])
        head = (f"model {name!r}: the likelihood has no finite, isolated maximum ({why}) Under "
                f"the flat priors of {still_flat} the posterior is then improper (it does not "
                "integrate to 1), and NUTS would drift and diverge instead of sampling it. Give "
                "those parameters proper priors, e.g. ")
        options = " ".join(f"--prior '{p}=Normal(0, 2.5)'" for p in still_flat[:2])
        raise ModelError(
            f"{head}priors={{{examples}}} (or a [priors] table in the model file), or pass "
            "check_proper=False to sample anyway.",
            cli=f"{head}{options} (or a [priors] table in the model file).")
    return [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]


# --------------------------------------------------------------------------- diagnostics
def sampling_problems(posterior: xr.DataTree, var_names=None) -> list[str]:
    """Bad NUTS diagnostics, as sentences: divergences, R-hat > 1.01, ESS < 100 per chain."""
    import arviz_stats

    problems = []
    stats = posterior.get("sample_stats") if hasattr(posterior, "get") else None
    if stats is not None and "diverging" in stats:
        n_div = int(stats["diverging"].sum())
        if n_div:
            problems.append(f"{n_div} divergent transition(s) after tuning: the sampler could not "
                            "follow the posterior's curvature; raise target_accept, "
                            "reparametrise, or use proper priors.")
    post = posterior["posterior"].to_dataset()
    names = list(var_names) if var_names is not None else list(post.data_vars)
    n_chain = post.sizes.get("chain", 1)
    if post.sizes.get("draw", 0) < 4:
        return problems
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = arviz_stats.rhat(post[names]) if n_chain > 1 else None
        ess = arviz_stats.ess(post[names], method="bulk")
        ess_tail = arviz_stats.ess(post[names], method="tail")
    if rhat is not None:
        worst = {k: float(np.nanmax(v.values)) for k, v in rhat.data_vars.items() if v.size}
        bad = {k: v for k, v in worst.items() if not v <= RHAT_MAX}
        if bad:
            problems.append("R-hat above " + f"{RHAT_MAX} for " + ", ".join(
                f"{k} ({v:.3f})" for k, v in bad.items())
                + ": the chains disagree; sample longer (more tune/draws).")
    floor = ESS_PER_CHAIN_MIN * n_chain
    low = {}
    for ds in (ess, ess_tail):
        for k, v in ds.data_vars.items():
            if v.size:
                low[k] = min(low.get(k, math.inf), float(np.nanmin(v.values)))
    bad = {k: v for k, v in low.items() if not v >= floor}
    if bad:
        problems.append(f"effective sample size below {floor} ({ESS_PER_CHAIN_MIN} per chain) for "
                        + ", ".join(f"{k} ({v:.0f})" for k, v in bad.items())
                        + ": R-hat and ESS are unreliable; draw more samples.")
    return problems


# --------------------------------------------------------------------------- sample
def sample(
    model,
    data: Any = None,
    *,
    priors: Mapping[str, Any] | str | None = None,
    file_priors: bool = True,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    cores: int | None = None,
    target_accept: float = 0.8,
    random_seed=None,
    progress: bool = False,
    check_proper: bool = True,
    init: str = "mle",
) -> xr.DataTree:
    """Sample the posterior of the same model with NUTS (PyMC), for comparison with the MLE.

    Parameters
    ----------
    model : pymc.Model, ModelSpec, str or path
        The same inputs as :func:`mle_ppl.fit`: a ``pm.Model`` (flat priors, or proper ones), a
        model file or a bundled model name.
    data : DataFrame, mapping of arrays, or path, optional
        Data for a model file (default: the file's default data).
    priors : mapping or "flat", optional
        Proper priors for named parameters, e.g. ``{"beta": "Normal(0, 2.5)"}`` (a string of a
        continuous PyMC distribution with numeric arguments, or ``pm.Normal.dist(0, 2.5)``).
        They override the model file's ``[priors]`` table; ``None``/``"flat"`` as a value keeps
        that parameter flat; ``priors="flat"`` ignores the file's table. Parameters without a
        prior keep their flat prior: the posterior is then proportional to the likelihood.
    file_priors : bool
        Use the model file's ``[priors]`` table (under ``priors=``); False: only ``priors=``.
    draws, tune, chains : int
        NUTS draws and tuning steps per chain, and the number of chains.
    cores : int, optional
        Chains run in parallel (PyMC's default: the number of CPUs, at most 4).
    target_accept : float
        NUTS target acceptance rate (raise towards 0.95 if there are divergences).
    random_seed : int or numpy.random.Generator, optional
        Seed for reproducible draws.
    progress : bool
        Show PyMC's progress bar and log messages.
    check_proper : bool
        With flat priors left in the model, maximise the likelihood first and refuse (with a
        :class:`~mle_ppl.ModelError` that explains) when the MLE is not finite, i.e. when the
        posterior is improper (separation, an estimate on a boundary, a flat direction).
    init : {"mle", "pymc"}
        ``"mle"`` (default): every chain starts at the MLE, with a mass matrix from the inverse
        observed information on the unconstrained scale (dense when two parameters correlate
        beyond ``DENSE_CORRELATION`` = 0.5, else diagonal), adapted further during tuning;
        see ``benchmarks/README.md`` for what it gains over PyMC's default. When the MLE cannot
        serve (no finite maximum, priors that change a parameter's transform) PyMC's default
        is used and ``posterior.attrs["mle_ppl_init"]`` says why. ``"pymc"``: PyMC's default
        (``jitter+adapt_diag``).

    Returns
    -------
    xarray.DataTree
        ``posterior``, ``sample_stats``, ``log_likelihood`` (pointwise), ``observed_data`` (and
        ``constant_data``), with the variable names and dims of :meth:`MLEFit.to_datatree`. The
        priors used are in ``posterior.attrs["mle_ppl_priors"]`` (JSON), the initialisation
        in ``posterior.attrs["mle_ppl_init"]``.

    Warns
    -----
    SamplingWarning
        Divergences, R-hat above 1.01 or fewer than 100 effective draws per chain.

    Examples
    --------
    >>> import numpy as np, pymc as pm, mle_ppl
    >>> with pm.Model() as m:
    ...     mu = pm.Flat("mu"); sigma = pm.HalfFlat("sigma")
    ...     y = pm.Normal("y", mu, sigma, observed=np.array([1.0, 2.0, 4.0, 3.0]))
    >>> post = mle_ppl.sample(m, draws=200, tune=200, chains=2, cores=1,
    ...                       random_seed=1)                          # doctest: +SKIP
    >>> float(post.posterior["mu"].mean())                            # doctest: +SKIP
    2.5...
    """
    from mle_ppl._src.engine.fit import check_model_data, resolve_model

    if int(draws) < 1 or int(tune) < 0 or int(chains) < 1:
        raise MLEError(f"draws={draws}, tune={tune}, chains={chains}: need draws >= 1, "
                       "tune >= 0 and chains >= 1 (e.g. draws=1000, tune=1000, chains=4).")
    if not 0 < target_accept < 1:
        raise MLEError(f"target_accept={target_accept!r} must be between 0 and 1 (e.g. 0.9).")
    if init not in INIT_METHODS:
        raise MLEError(f"init={init!r}: expected one of {', '.join(map(repr, INIT_METHODS))} "
                       f"({'; '.join(f'{k}: {v}' for k, v in INIT_METHODS.items())}).")
    flat_model, name, _table, spec = resolve_model(model, data)
    check_model_data(flat_model)
    chosen = _merge_priors(spec, priors, file_priors)
    if spec is not None and chosen and all(isinstance(v, str) for v in chosen.values()):
        # the model file builds its own priors (bounded parameters get truncated priors)
        src_data = data if data is not None else spec.default_data()
        bayes_model = spec.build_model(src_data, priors=chosen)
    elif chosen:
        bayes_model = with_priors(flat_model, chosen)
    else:
        bayes_model = flat_model
    still_flat = flat_parameters(bayes_model)
    notes: list[str] = []
    fitted = None
    if (check_proper and still_flat) or init == "mle":
        fitted = _fit_likelihood(flat_model)
    if check_proper and still_flat:
        notes = require_proper_posterior(flat_model, still_flat, name, fitted)
    how = {"nuts": {"target_accept": float(target_accept)}}
    init_text = "pymc: " + INIT_METHODS["pymc"]
    if init == "mle":
        setup, why = mle_nuts_setup(fitted[0], bayes_model)
        if setup is None:
            init_text += f" (init='mle' could not be used: {why})"
            notes.append(f"NUTS started from PyMC's default, not from the MLE: {why}.")
        else:
            init_text = setup.describe()
            seeds = np.random.default_rng(random_seed).integers(2**31, size=2)
            how = {"initvals": setup.initvals,
                   "step": setup.step(bayes_model, target_accept=target_accept,
                                      random_seed=int(seeds[0]))}
            random_seed = int(seeds[1])
    with warnings.catch_warnings():
        # PyMC's own convergence messages are logged (quiet=True silences them); we report
        # diagnostics once, as SamplingWarning, below. PyTensor's numba backend says when it
        # runs a draw from a flat prior (HalfFlat) in object mode, for PyMC's start points:
        # not the user's concern.
        warnings.filterwarnings("ignore", message="Numba will use object mode",
                                category=UserWarning)
        idata = pm.sample(
            draws=int(draws), tune=int(tune), chains=int(chains), cores=cores,
            random_seed=random_seed, progressbar=progress, quiet=not progress,
            compute_convergence_checks=False, nuts_sampler="pymc", model=bayes_model, **how)
        _log_likelihood(idata, bayes_model)
    idata["posterior"].attrs["mle_ppl_model"] = name
    idata["posterior"].attrs["mle_ppl_init"] = init_text
    idata["posterior"].attrs["mle_ppl_priors"] = json.dumps(
        {rv.name: _describe_prior(rv) for rv in bayes_model.free_RVs})
    problems = sampling_problems(idata, [rv.name for rv in bayes_model.free_RVs])
    idata["posterior"].attrs["mle_ppl_sampling_problems"] = "\n".join(problems)
    if notes:
        idata["posterior"].attrs["mle_ppl_notes"] = "\n".join(notes)
    for msg in problems:
        warnings.warn(f"model {name!r}: {msg}", SamplingWarning, stacklevel=2)
    return idata



def _log_likelihood(idata, model: pm.Model) -> None:
    """``pm.compute_log_likelihood`` also for models whose file sets ``initval=``.

    PyMC refuses to rebuild a model with non-default initial values ("Cannot convert models
    with non-default initial_values"); they play no part in the pointwise log-likelihood, so
    they are set aside for the call and restored after it.
    """
    saved = dict(model.rvs_to_initial_values)
    try:
        for rv in saved:
            model.rvs_to_initial_values[rv] = None
        pm.compute_log_likelihood(idata, model=model, progressbar=False)
    finally:
        model.rvs_to_initial_values.update(saved)


def _describe_prior(rv) -> str:
    """``"Flat"``, ``"HalfFlat"`` or ``"Normal(0, 2.5)"``-style text for a free variable."""
    op = type(rv.owner.op).__name__.removesuffix("RV")
    params = rv.owner.op.dist_params(rv.owner) if hasattr(rv.owner.op, "dist_params") else []
    vals = []
    for p in params:
        try:
            v = np.asarray(p.eval())
        except Exception:  # noqa: BLE001 - symbolic parameter: name only
            return op
        if v.size != 1:
            return op
        vals.append(f"{v.item():g}")
    return f"{op}({', '.join(vals)})" if vals else op

"""The in-memory objective: a PyMC model's negative log-likelihood compiled on one flat vector.

:class:`Likelihood` is the first implementation of the objective protocol
(:mod:`~mle_ppl._src.engine.objective`); this module is the one place in the engine that knows
PyMC and PyTensor, the optimizers and diagnostics above it see only the protocol.

The objective is ``-sum(logp(observed))`` with ``jacobian=False``: the prior terms of the free
variables are left out (they are flat, or the user asked for ``likelihood_only=True``) and so is the
log-Jacobian of the transforms, so the optimum in the unconstrained space maps to the MLE on the
user's scale (the MLE is invariant under reparametrisation).

Everything is a sum over observations: :meth:`Likelihood.pointwise` gives the per-observation
log-likelihood terms that sandwich errors, LOO and the cross-entropy identity use.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import get_mode

from mle_ppl._src.engine import diskcache
from mle_ppl._src.engine.compiled import (  # noqa: F401
    DEFAULT_MODE,
    SMALL_DATA,
    SMALL_MODE,
    DataFunction,
    Quiet,
    lift_data,
    register_small_mode,
    relinked,
)
from mle_ppl._src.engine.objective import ParamBlock
from mle_ppl._src.errors import DataError, ModelError, rows_text

if TYPE_CHECKING:  # PyMC is imported where a graph is built: a cached fit never imports it
    import pymc as pm

#: Distributions accepted as "flat on their support" for free variables.
FLAT_OPS = ("FlatRV", "HalfFlatRV", "UniformRV")

#: Observed distributions whose likelihood can separate (probabilities driven to 0 or 1).
DISCRETE_OUTCOME_OPS = ("BernoulliRV", "BinomialRV", "CategoricalRV", "MultinomialRV")

#: ``mode="auto"`` (the default) picks one of two compilation modes by the size of the data:
#:
#: - ``"FAST_RUN"``, PyTensor 3's default: all graph rewrites and the Numba linker, with fused
#:   loops and BLAS kernels. The fastest per call, but a model's first fit pays for it: ~1 s of
#:   rewriting per compiled function, ~0.6 s to import Numba and ~0.5 s to load its cache.
#:   (The C backend, "CVM", warns on a pip install that it cannot link a BLAS library and is then
#:   several times slower for the Hessian's matrix products.)
#: - ``"MLE_PPL_SMALL"``: PyTensor's Python virtual machine (NumPy kernels, no C or Numba) after
#:   the canonicalize and *stabilize* rewrites only (stabilize turns ``log(sigmoid(x))`` into
#:   ``log_sigmoid(x)`` and the like; without it an extreme linear predictor gives ``inf``).
#:   Compiling is 2-4x faster and Numba is never imported. A call costs ~1 ms of interpreter
#:   overhead, plus ~2 µs per element for the few scalar ops that NumPy has no ufunc for and
#:   PyTensor then loops over in Python (``softplus`` in the Bernoulli/logistic log-probability:
#:   5 ms per gradient at 2,000 rows), which is why the mode stops at small data.
#:
#: Data of at most :data:`SMALL_DATA` elements (all ``pm.Data`` containers and observed arrays
#: together) get the second: there a fit's ~10-30 calls cost less than Numba's compile, and a
#: profile likelihood's ~1,000 calls about as much.  (The constants: ``engine.compiled``.)


register_small_mode()


def data_size(model: pm.Model) -> int:
    """Number of elements in the model's data containers and constant observed arrays."""
    total = 0
    for var in model.data_vars:
        if hasattr(var, "get_value"):
            total += int(np.size(var.get_value(borrow=True)))
    for rv in model.observed_RVs:
        value = model.rvs_to_values[rv]
        if hasattr(value, "data"):
            total += int(np.size(value.data))
    return total


def resolve_mode(mode: str, model: pm.Model) -> str:
    """``"auto"`` -> ``"MLE_PPL_SMALL"`` or ``"FAST_RUN"`` by :func:`data_size`; others as given."""
    if mode != "auto":
        return mode
    return SMALL_MODE if data_size(model) <= SMALL_DATA else "FAST_RUN"

_compile_lock = threading.Lock()
#: Number of PyTensor functions compiled by mle-ppl in this process (tests count recompilations).
COMPILE_COUNT = 0


def _compile(inputs, outputs, mode, *, model: pm.Model | None = None):
    """Compile with PyMC's rewrites. Inside ``model``'s context, so that its ``check_bounds``
    flag holds: ``pm.Model(check_bounds=False)`` drops the parameter checks (e.g. ``0 <= p <= 1``)
    from the compiled log-likelihood, which saves a data pass (~30 % of a logistic gradient)
    when the parametrisation keeps parameters valid anyway.
    """
    global COMPILE_COUNT
    with _compile_lock:
        COMPILE_COUNT += 1
    with warnings.catch_warnings(), (model if model is not None else contextlib.nullcontext()):
        # PyTensor's numba backend falls back to Python ("object mode") for a few scalar ops
        # (e.g. tri_gamma in the negative binomial's Hessian): slower, not wrong, and nothing a
        # user can act on, so it is not shown.
        warnings.filterwarnings("ignore", message="Numba will use object mode",
                                category=UserWarning)
        single = not isinstance(outputs, list | tuple)
        lifted, data_inputs, sources = lift_data([outputs] if single else list(outputs))
        all_inputs = list(inputs) + data_inputs
        key = diskcache.function_key(
            all_inputs, lifted, mode=mode,
            check_bounds=bool(getattr(model, "check_bounds", True)))
        fn = None if key is None else diskcache.load(key)
        if fn is None:
            import pymc as pm

            fn = pm.pytensorf.compile(all_inputs, lifted[0] if single else lifted,
                                      mode=get_mode(mode), on_unused_input="ignore")
            if key is not None:
                diskcache.store(key, fn)
            if mode == SMALL_MODE:
                fn = relinked(fn)  # as a cached function is: same numbers, cache on or off
    fn = DataFunction(fn, sources)
    return Quiet(fn) if mode == SMALL_MODE else fn


def _labels(name: str, shape: tuple[int, ...], dims: tuple, coords: dict) -> tuple[str, ...]:
    if not shape:
        return (name,)
    axes = []
    for axis, length in enumerate(shape):
        dim = dims[axis] if axis < len(dims) else None
        values = coords.get(dim) if dim is not None else None
        if values is not None and len(values) == length:
            axes.append([str(v) for v in values])
        else:
            axes.append([str(i) for i in range(length)])
    out = []
    for idx in np.ndindex(*shape):
        out.append(f"{name}[{', '.join(axes[a][i] for a, i in enumerate(idx))}]")
    return tuple(out)


def _support(model: pm.Model, rv) -> tuple[float, float]:
    op = type(rv.owner.op).__name__
    if op == "HalfFlatRV":
        return 0.0, np.inf
    if op == "UniformRV":
        try:  # Python VM: the default mode (eval()) would import Numba, ~1 s or more
            lo, hi = (np.asarray(pytensor.function([], v, mode="FAST_COMPILE")()) for v in rv.owner.inputs[-2:])  # noqa: E501
            if lo.size == 1 and hi.size == 1:
                return float(lo), float(hi)
        except Exception:  # noqa: BLE001 - symbolic bounds: unknown support
            pass
        return -np.inf, np.inf
    transform = model.rvs_to_transforms.get(rv)
    if transform is not None and type(transform).__name__ == "LogTransform":
        return 0.0, np.inf
    return -np.inf, np.inf


def _missing_rows(model: pm.Model, unobserved) -> str:
    """``"'y': 2 value(s), row(s) [1, 3]"`` from PyMC's imputation mask (or just the name)."""
    from pytensor.graph.traversal import ancestors
    from pytensor.tensor.variable import TensorConstant

    name = unobserved.name.removesuffix("_unobserved")
    try:
        for var in ancestors([model[name]]):
            node = var.owner
            if (node is not None and node.inputs[1:2] == [unobserved] and len(node.inputs) > 2
                    and isinstance(node.inputs[2], TensorConstant)
                    and type(node.op).__name__ in ("AdvancedIncSubtensor", "AdvancedSetSubtensor")):
                rows = np.flatnonzero(np.asarray(node.inputs[2].data))
                return f"{name!r}: {rows.size} value(s), {rows_text(rows)}"
    except Exception:  # noqa: BLE001 - PyMC internals: fall back to the name alone
        pass
    return repr(name)


def check_model(model: pm.Model, *, likelihood_only: bool) -> list[str]:
    """Check that ``model`` describes a likelihood with flat priors; return notes for the result.

    Raises
    ------
    ModelError
        No observed variable, discrete or imputed free variables, potentials, or non-flat priors
        (unless ``likelihood_only``).
    """
    notes: list[str] = []
    check_structure(model)
    not_flat = [
        f"{rv.name} ({type(rv.owner.op).__name__.removesuffix('RV')})"
        for rv in model.free_RVs
        if type(rv.owner.op).__name__ not in FLAT_OPS
    ]
    if not_flat:
        if not likelihood_only:
            has = ("has a proper prior" if len(not_flat) == 1 else "have proper priors")
            raise ModelError(
                f"maximum likelihood needs flat priors, but {', '.join(not_flat)} {has}. Use "
                "pm.Flat / pm.HalfFlat (or pm.Uniform for a bounded parameter) in the model, or, "
                "from Python, fit(..., likelihood_only=True) to drop the prior terms and "
                "maximise the likelihood alone."
            )
        notes.append(
            "likelihood_only=True: the prior terms of "
            + ", ".join(not_flat)
            + " were dropped; the estimates maximise the likelihood alone (not the MAP)."
        )
    return notes


def check_structure(model: pm.Model) -> None:
    """No observed variable, imputed or discrete free variables, potentials: a ModelError."""
    if not model.observed_RVs:
        raise ModelError(
            "the model has no observed variable, so there is no likelihood to maximise. "
            "Give the outcome as `observed=` in its distribution."
        )
    imputed = [rv for rv in model.free_RVs if rv.name.endswith("_unobserved")]
    if imputed:
        where = "; ".join(_missing_rows(model, rv) for rv in imputed)
        raise DataError(
            f"the observed data contain missing values ({where}); PyMC would treat them as "
            "parameters. Maximum likelihood here needs complete data: drop or impute those rows "
            "first."
        )
    discrete = [rv.name for rv in model.free_RVs if "int" in rv.dtype]
    if discrete:
        raise ModelError(
            f"free variables {discrete} are discrete; maximum likelihood by gradient methods needs "
            "continuous parameters. Marginalise them out or fix them as data."
        )
    if model.potentials:
        names = [p.name for p in model.potentials]
        raise ModelError(
            f"the model has potentials {names}; mle-ppl cannot tell a likelihood term from a "
            "penalty. Write the term as an observed distribution (e.g. pm.CustomDist with "
            "observed=) or remove it."
        )


def unconstrain(model: pm.Model, rvs, blocks, values: dict[str, np.ndarray]) -> np.ndarray:
    """User-scale values (by variable name) of ``rvs`` -> the flat unconstrained vector laid out
    by ``blocks`` (one block per variable, same order), through the model's transforms."""
    out = np.zeros(sum(b.size for b in blocks))
    for rv, b in zip(rvs, blocks, strict=True):
        v = np.asarray(values[b.name], dtype=float).reshape(b.shape)
        tr = model.rvs_to_transforms.get(rv)
        if tr is not None:
            v = np.asarray(tr.forward(pt.as_tensor(v), *rv.owner.inputs).eval(), dtype=float)
        out[b.slice] = v.ravel()
    return out


class Likelihood:
    """Negative log-likelihood of a PyMC model and its derivatives, compiled once per model.

    Parameters
    ----------
    model : pymc.Model
        A model whose free variables have flat priors (see :func:`check_model`).
    likelihood_only : bool
        Accept proper priors and drop them from the objective.
    mode : str
        PyTensor compilation mode: ``"auto"`` (default; see :data:`DEFAULT_MODE`), or any
        PyTensor mode name (``"FAST_RUN"``: Numba; ``"MLE_PPL_SMALL"``: Python VM).

    Notes
    -----
    Data live in the model's shared variables (``pm.Data``). Changing them with ``pm.set_data``
    changes what the compiled functions compute, without recompiling.
    """

    def __init__(self, model: pm.Model, *, likelihood_only: bool = False, mode: str = DEFAULT_MODE):
        self.model = model
        self.mode = resolve_mode(mode, model)
        self.notes = tuple(check_model(model, likelihood_only=likelihood_only))
        self.likelihood_only = likelihood_only
        point = model.initial_point()
        self._point = point
        coords = {k: v for k, v in model.coords.items() if v is not None}
        blocks = []
        start = 0
        for rv, value in zip(model.free_RVs, model.value_vars, strict=True):
            shape = tuple(int(s) for s in np.shape(point[value.name]))
            dims = tuple(d for d in model.named_vars_to_dims.get(rv.name, ()) if d is not None)
            transform = model.rvs_to_transforms.get(rv)
            lo, hi = _support(model, rv)
            block = ParamBlock(
                name=rv.name,
                value_name=value.name,
                shape=shape,
                start=start,
                transform=None if transform is None else type(transform).__name__,
                lower=lo,
                upper=hi,
                dims=tuple(model.named_vars_to_dims.get(rv.name) or ()),
                labels=_labels(rv.name, shape, dims, coords),
            )
            blocks.append(block)
            start += block.size
        self.blocks: tuple[ParamBlock, ...] = tuple(blocks)
        self.n_params = start
        self.labels: tuple[str, ...] = tuple(lab for b in blocks for lab in b.labels)
        self.observed_names = tuple(rv.name for rv in model.observed_RVs)
        self.observed_ops = tuple(type(rv.owner.op).__name__ for rv in model.observed_RVs)
        #: coordinates with a transform (log sigma, ...): their estimate can sit at a bound
        self.bounded = np.zeros(self.n_params, dtype=bool)
        for b in blocks:
            if b.transform is not None:
                self.bounded[b.slice] = True
        self.bounded.flags.writeable = False
        self._n_obs_by_shapes: dict[tuple, int] = {}
        #: "auto": linear predictors' products in NumPy (predictors.py) where the graph has them;
        #: "graph": their structured Hessian inside the compiled graph; "generic": neither
        self._hessian_kind = "auto"
        self._build_graph()

    # ------------------------------------------------------------------ graph
    def _build_graph(self) -> None:
        from pymc.pytensorf import join_nonshared_inputs

        model = self.model
        pointwise = model.logp(vars=model.observed_RVs, jacobian=False, sum=False)
        total = pt.add(*[pt.sum(term) for term in pointwise])
        nll = -total
        constrained = model.replace_rvs_by_values(model.free_RVs)
        deterministics = model.replace_rvs_by_values(model.deterministics)
        outputs = [nll, *pointwise, *constrained, *deterministics]
        outputs, x = join_nonshared_inputs(self._point, outputs, model.value_vars)
        k = len(pointwise)
        m = len(constrained)
        self._x = x
        self._nll = outputs[0]
        self._pointwise = outputs[1 : 1 + k]
        self._constrained = outputs[1 + k : 1 + k + m]
        self._deterministics = outputs[1 + k + m :]
        self.deterministic_names = tuple(d.name for d in model.deterministics)

    @cached_property
    def shared_inputs(self) -> tuple:
        """The shared variables (data containers, dim lengths) the compiled functions read."""
        from pytensor.compile.sharedvalue import SharedVariable
        from pytensor.graph.traversal import graph_inputs
        from pytensor.tensor.type import TensorType

        outs = [self._nll, *self._pointwise, *self._constrained, *self._deterministics]
        return tuple(v for v in graph_inputs(outs)
                     if isinstance(v, SharedVariable) and isinstance(v.type, TensorType))

    def snapshot(self) -> tuple:
        """Current data values (no copies: ``pm.set_data`` replaces arrays, it does not mutate)."""
        return tuple((v, v.get_value(borrow=True)) for v in self.shared_inputs)

    def x0(self) -> np.ndarray:
        """The model's initial point on the unconstrained scale, as one flat vector."""
        return np.concatenate(
            [np.asarray(self._point[b.value_name], dtype=float).ravel() for b in self.blocks]
        ) if self.blocks else np.zeros(0)

    # ------------------------------------------------------- compiled pieces
    @cached_property
    def _fn_value_and_grad(self):
        grad = pt.grad(self._nll, self._x)
        return _compile([self._x], [self._nll, grad], self.mode, model=self.model)

    @cached_property
    def _fn_value(self):
        return _compile([self._x], self._nll, self.mode, model=self.model)

    @cached_property
    def _fn_hessian(self):
        from mle_ppl._src.engine.structured import structured_hessian

        hess = None if self._hessian_kind == "generic" else structured_hessian(
            self._nll, self._x, self.n_params)
        #: "structured" (Dᵀ diag(w) D through the linear predictors) or "generic"
        self.hessian_kind = "generic" if hess is None else "structured"
        if hess is None:
            grad = pt.grad(self._nll, self._x)
            hess = pytensor.gradient.jacobian(grad, self._x, vectorize=True)
        return _compile([self._x], hess, self.mode, model=self.model)

    @cached_property
    def _predictors(self):
        """Value, gradient and Hessian through linear predictors with the data products in NumPy
        row blocks (:mod:`~mle_ppl._src.engine.predictors`), or None (not that structure)."""
        if self._hessian_kind != "auto":
            return None
        from mle_ppl._src.engine.predictors import predictor_eval
        from mle_ppl._src.engine.structured import cut_predictors

        cut = cut_predictors(self._nll, self._x, self.n_params, any_length=True)
        ev = None if cut is None else predictor_eval(
            self._x, self.n_params, cut, lambda i, o: _compile(i, o, self.mode, model=self.model))
        if ev is not None:
            self.hessian_kind = "structured"
        return ev

    @cached_property
    def _fn_pointwise(self):
        return _compile([self._x], self._pointwise, self.mode, model=self.model)

    @property
    def _has_transforms(self) -> bool:
        return any(b.transform for b in self.blocks)

    @cached_property
    def _fn_constrained(self):
        # the user-scale values, the deterministics and (with transforms) d theta / d x in one
        # compiled function: one graph rewrite on a model's first fit instead of two
        outputs = self._constrained + self._deterministics
        if self._has_transforms:
            flat = pt.concatenate([c.ravel() for c in self._constrained])
            outputs = outputs + [pytensor.gradient.jacobian(
                flat, self._x, vectorize=True, disconnected_inputs="ignore")]
        return _compile([self._x], outputs, self.mode, model=self.model)

    def compile_all(self) -> None:
        """Compile the functions a fit needs (value, gradient, Hessian, constrained values), so
        timing excludes it."""
        if self._predictors is None:
            self._fn_value_and_grad  # noqa: B018
            self._fn_hessian  # noqa: B018
        self._fn_constrained  # noqa: B018

    # ------------------------------------------------------------ evaluation
    def value(self, x: np.ndarray) -> float:
        """Negative log-likelihood at the unconstrained point ``x``."""
        return float(self._fn_value(np.asarray(x, dtype=float)))

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative log-likelihood and its gradient (unconstrained scale), one fused call."""
        if self._predictors is not None:
            return self._predictors.value_and_grad(np.array(x, dtype=float))
        f, g = self._fn_value_and_grad(np.asarray(x, dtype=float))
        return float(f), np.asarray(g, dtype=float)

    def hessian(self, x: np.ndarray) -> np.ndarray:
        """Hessian of the negative log-likelihood on the unconstrained scale."""
        if self._predictors is not None:
            return self._predictors.hessian(np.array(x, dtype=float))
        h = np.asarray(self._fn_hessian(np.asarray(x, dtype=float)), dtype=float)
        return 0.5 * (h + h.T)

    def pointwise(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per-observation log-likelihood terms, one array per observed variable."""
        out = self._fn_pointwise(np.asarray(x, dtype=float))
        return {name: np.asarray(v) for name, v in zip(self.observed_names, out, strict=True)}

    @cached_property
    def row_mode(self) -> bool:
        """True when all observed variables share one first-axis length: observations are rows.

        The terms of all observed variables (and of trailing axes, e.g. a multivariate outcome)
        in a row are then one observation's; otherwise every element of every observed variable
        is its own observation.
        """
        pw = self.pointwise(self.x0())
        lengths = {np.shape(v)[0] if np.ndim(v) else None for v in pw.values()}
        return len(lengths) == 1 and None not in lengths

    def row_loglik_graph(self):
        """Symbolic per-observation log-likelihood vector (see :attr:`row_mode`)."""
        terms = self._pointwise
        if self.row_mode:
            per = [t.reshape((t.shape[0], -1)).sum(axis=1) for t in terms]
            return per[0] if len(per) == 1 else pt.add(*per)
        return pt.concatenate([t.ravel() for t in terms])

    @cached_property
    def _fn_scores(self):
        # Forward mode: column k of the (n, p) score matrix is the directional derivative of the
        # per-row log-likelihood along the k-th coordinate (a push-forward, which PyTensor builds
        # from two reverse passes), vectorised over the p coordinates. Intermediates are n x p.
        # (The reverse-mode per-row Jacobian, ``jacobian(rows, x, vectorize=True)``, pushes an
        # n x n identity through the graph wherever rows meet the parameters in a matrix product
        # ``X @ beta``: 12.8 GB at n = 40,000.)
        from pytensor.graph.replace import vectorize_graph

        direction = pt.vector("direction", shape=(self.n_params,))
        along = pytensor.gradient.pushforward(self.row_loglik_graph(), self._x, direction,
                                              disconnected_outputs="ignore")
        scores = vectorize_graph(along, {direction: pt.eye(self.n_params)}).T
        return _compile([self._x], scores, self.mode, model=self.model)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Per-observation scores ``d l_i / d x`` on the unconstrained scale, shape ``(n, p)``.

        Compiled once per model (forward mode: memory n x p); later calls, also after
        ``pm.set_data``, reuse it.
        """
        return np.asarray(self._fn_scores(np.asarray(x, dtype=float)), dtype=float).reshape(
            -1, self.n_params)

    def constrained_and_jacobian(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """:meth:`constrained` and :meth:`constrained_jacobian` from one evaluation."""
        out = list(self._fn_constrained(np.asarray(x, dtype=float)))
        jac = (np.asarray(out.pop(), dtype=float) if self._has_transforms
               else np.eye(self.n_params))
        names = [b.name for b in self.blocks] + list(self.deterministic_names)
        return {n: np.asarray(v) for n, v in zip(names, out, strict=True)}, jac

    def constrained(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Free variables (and deterministics) on the user's scale at ``x``."""
        return self.constrained_and_jacobian(x)[0]

    def constrained_flat(self, x: np.ndarray) -> np.ndarray:
        """The flat parameter vector on the user's scale (the order of :attr:`labels`)."""
        vals = self.constrained(x)
        if not self.blocks:
            return np.zeros(0)
        return np.concatenate([np.asarray(vals[b.name], dtype=float).ravel() for b in self.blocks])

    def constrained_jacobian(self, x: np.ndarray) -> np.ndarray:
        """``d theta / d x``: Jacobian of the user-scale vector w.r.t. the unconstrained one."""
        return self.constrained_and_jacobian(x)[1]

    def unconstrain(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """Map user-scale values (by variable name) to the flat unconstrained vector."""
        return unconstrain(self.model, self.model.free_RVs, self.blocks, values)

    @cached_property
    def observed_data(self) -> dict[str, np.ndarray]:
        """Current observed values, by observed variable name (read from the model)."""
        return self.current_observed()

    def current_observed(self) -> dict[str, np.ndarray]:
        out = {}
        for rv in self.model.observed_RVs:
            out[rv.name] = np.asarray(self.model.rvs_to_values[rv].eval())
        return out

    def count_obs(self, x: np.ndarray | None = None) -> int:
        """Number of observations, from the shapes of the observed data (no likelihood pass).

        An observed variable contributes one term per element of its value minus the support
        dimensions (``ndim_supp``: a d-variate normal's n x d data are n terms). Falls back to
        counting the pointwise log-likelihood when a shape is not known without evaluating.
        """
        from pytensor.tensor.elemwise import Elemwise

        total = 0
        for rv in self.model.observed_RVs:
            value = self.model.rvs_to_values[rv]
            # a data container behind a cast (pm.Data of int32 under an int64 distribution)
            while (value.owner is not None and isinstance(value.owner.op, Elemwise)
                   and len(value.owner.inputs) == 1):
                value = value.owner.inputs[0]
            if hasattr(value, "get_value"):
                shape = np.shape(value.get_value(borrow=True))
            elif hasattr(value, "data"):
                shape = np.shape(value.data)
            else:
                return self._n_obs_cached(x)
            ndim_supp = getattr(rv.owner.op, "ndim_supp", None)
            if not isinstance(ndim_supp, int) or ndim_supp > len(shape):
                return self._n_obs_cached(x)
            total += int(np.prod(shape[: len(shape) - ndim_supp], dtype=int))
        return total

    def _n_obs_cached(self, x) -> int:
        key = tuple(np.shape(v) for _, v in self.snapshot())
        if key not in self._n_obs_by_shapes:
            self._n_obs_by_shapes[key] = self.n_obs(x)
        return self._n_obs_by_shapes[key]

    def n_obs(self, x: np.ndarray | None = None) -> int:
        """Number of observations: elements of the pointwise log-likelihood, over observed vars."""
        x = self.x0() if x is None else x
        return int(sum(v.size for v in self.pointwise(x).values()))

    @property
    def discrete_outcome(self) -> bool:
        """True if an observed variable is Bernoulli, binomial, categorical or multinomial."""
        return any(op in DISCRETE_OUTCOME_OPS for op in self.observed_ops)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def likelihood_for(model: pm.Model, *, likelihood_only: bool = False,
                   mode: str = DEFAULT_MODE) -> Likelihood:
    """Return the cached :class:`Likelihood` of ``model`` (compiled once per model and options)."""
    mode = resolve_mode(mode, model)
    per_model = _CACHE.setdefault(model, {})
    key = (likelihood_only, mode)
    if key not in per_model:
        per_model[key] = Likelihood(model, likelihood_only=likelihood_only, mode=mode)
    return per_model[key]

"""The Laplace-marginal objective: random effects integrated out, an inner Newton per call.

For flat parameters θ (on the unconstrained vector ``x``) and random effects u, with the joint
log-density ``L(θ, u) = Σ log p(yᵢ | θ, u) + log p(u | θ)``, the objective is the negative
Laplace-approximate marginal log-likelihood

    f(θ) = -L(θ, û) + ½ log det H(θ, û) - (q/2) log 2π,   H = -∂²L/∂u²,  û = argmax_u L(θ, u)

(exact for a Gaussian linear mixed model). It implements the objective protocol
(:mod:`~mle_ppl._src.engine.objective`), so the optimizers see no difference.

- **Inner Newton** on u with the exact Hessian. ``H`` is assembled from one Hessian-vector
  product per colour of its sparsity pattern and factorised block by block
  (:mod:`~mle_ppl._src.engine.re_structure`); one compiled call gives the value, the gradient
  and a product (:mod:`~mle_ppl._src.engine.laplace_graph`), so a random intercept costs one
  call per Newton iteration. Started from the last inner optimum moved along ``dû/dθ`` when
  that is known (TMB starts from the last optimum).
- **Exact gradient**: ``df/dθ = -∂L/∂θ + ∂T/∂θ + L_θu H⁻¹ ∂T/∂u`` with
  ``T(θ, u) = ½ Σ_ab S_ab H_ab(θ, u)`` for the fixed matrix ``S = H⁻¹`` (its derivative is that
  of ``½ log det H``), the last term from the implicit-function theorem (``dû/dθ = H⁻¹ L_uθ``).
  ``∇T`` is one third-order product per colour.
- **Hessian** of f (standard errors, Newton): central differences of the exact gradient; each
  displaced inner Newton starts at ``û + h dû/dθ_j``, a second-order accurate guess, so it needs
  one step and the final check.

The compiled functions are made once per model on first use; new data of the same shapes re-use
them (only the sparsity structure is probed again). Everything runs with one BLAS thread
(:mod:`~mle_ppl._src.engine.threads`): the work is many small matrix operations.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from functools import cached_property

import numpy as np
import pymc as pm

from mle_ppl._src.engine.laplace_graph import Graphs
from mle_ppl._src.engine.likelihood import (
    DEFAULT_MODE,
    DISCRETE_OUTCOME_OPS,
    _labels,
    _support,
    resolve_mode,
    unconstrain,
)
from mle_ppl._src.engine.objective import NotAvailable, ParamBlock
from mle_ppl._src.engine.random_effects import Roles, _params
from mle_ppl._src.engine.re_structure import Blocks, Layout, Structure, incidence
from mle_ppl._src.engine.threads import blas_threads
from mle_ppl._src.errors import ConvergenceWarning

#: Inner Newton stops when the Newton decrement ``½ g'H⁻¹g`` is below this times ``max(1, |L|)``
#: (then û is exact to ~1e-10 of its conditional SD and the outer gradient to rounding).
INNER_TOL = 1e-22
INNER_MAX_ITER = 100
#: Relative step of the central differences of the gradient that give the Hessian of f.
FD_STEP = 1e-4
#: A start predicted along ``dû/dθ`` is used for parameter moves up to this (sup norm).
PREDICT_MAX = 2.0


class _State:
    __slots__ = ("x", "u", "L", "gz", "blocks", "f", "grad", "ok", "iters")


class LaplaceMarginal:
    """Negative Laplace marginal log-likelihood of the flat parameters (see module docstring)."""

    def __init__(self, model: pm.Model, roles: Roles, *, notes: tuple[str, ...] = (),
                 mode: str = DEFAULT_MODE):
        self.model = model
        self.roles = roles
        self.mode = resolve_mode(mode, model)
        self.likelihood_only = bool(roles.priors)
        self.notes = tuple(notes) + roles.notes()
        point = model.initial_point()
        self._point = point
        coords = {k: v for k, v in model.coords.items() if v is not None}
        random = set(roles.random)
        self._theta_rvs = [rv for rv in model.free_RVs if rv.name not in random]
        self._u_rvs = [rv for rv in model.free_RVs if rv.name in random]
        blocks, start = [], 0
        for rv in self._theta_rvs:
            value = model.rvs_to_values[rv]
            shape = tuple(int(s) for s in np.shape(point[value.name]))
            dims = tuple(d for d in model.named_vars_to_dims.get(rv.name, ()) if d is not None)
            transform = model.rvs_to_transforms.get(rv)
            lo, hi = _support(model, rv)
            b = ParamBlock(name=rv.name, value_name=value.name, shape=shape, start=start,
                           transform=None if transform is None else type(transform).__name__,
                           lower=lo, upper=hi,
                           dims=tuple(model.named_vars_to_dims.get(rv.name) or ()),
                           labels=_labels(rv.name, shape, dims, coords))
            blocks.append(b)
            start += b.size
        self.blocks = tuple(blocks)
        self.n_params = start
        self.labels = tuple(lab for b in blocks for lab in b.labels)
        self.bounded = np.zeros(self.n_params, dtype=bool)
        for b in blocks:
            if b.transform is not None:
                self.bounded[b.slice] = True
        self.bounded.flags.writeable = False
        u_shapes = [tuple(int(s) for s in np.shape(point[model.rvs_to_values[rv].name]))
                    for rv in self._u_rvs]
        self.u_layout = Layout.from_shapes([rv.name for rv in self._u_rvs], u_shapes)
        self.u_labels = tuple(
            lab for rv, s in zip(self._u_rvs, u_shapes, strict=True)
            for lab in _labels(rv.name, s, tuple(
                d for d in model.named_vars_to_dims.get(rv.name, ()) if d is not None), coords))
        self.random_names = tuple(rv.name for rv in self._u_rvs)
        self.observed_names = tuple(rv.name for rv in model.observed_RVs)
        self.observed_ops = tuple(type(rv.owner.op).__name__ for rv in model.observed_RVs)
        self.variance_coords = self._variance_coords()
        self._states: OrderedDict = OrderedDict()
        self._u_warm = self._u0()
        self._predict = None  # (x, û(x), dû/dx) from the last Hessian: predicted starts
        self._quad = (None, None)  # (x bytes, (∂²L_quad/∂u²) V) for the current x
        self._structure_key = None
        self._structure = None
        self.inner_failures = 0
        self.graphs = Graphs(model, self._theta_rvs, self._u_rvs, point, self.mode,
                             with_jacobian=bool(self.bounded.any()))
        g = self.graphs
        # (names of earlier versions, for code written against them)
        self._z, self._L, self._has_quad = g.z, g.L, g.has_quad
        self.deterministic_names = g.deterministic_names

    def _variance_coords(self) -> np.ndarray:
        """Flat coordinates of the parameters of the random effects' distributions."""
        from pytensor.graph.traversal import ancestors

        deps = set(ancestors([p for rv in self._u_rvs for p in _params(rv)]))
        mask = np.zeros(self.n_params, dtype=bool)
        for rv, b in zip(self._theta_rvs, self.blocks, strict=True):
            if rv in deps:
                mask[b.slice] = True
        return mask

    def _u0(self) -> np.ndarray:
        vals = [np.asarray(self._point[self.model.rvs_to_values[rv].name], dtype=float).ravel()
                for rv in self._u_rvs]
        return np.concatenate(vals) if vals else np.zeros(0)

    # ---------------------------------------------- compiled functions (see laplace_graph)
    @property
    def _fn_vg(self):
        """``z -> [L, ∇L]`` (compiled on first use; the objective itself uses ``main``)."""
        return self.graphs.vg

    @property
    def _fn_terms(self):
        """``z -> per-term log-density`` (concatenated)."""
        return self.graphs.terms

    @property
    def _fn_pointwise(self):
        """``z -> [per-observation log-likelihood of each observed variable]``."""
        return self.graphs.pointwise

    @property
    def _fn_constrained(self):
        """``z -> [*values, *modes, *deterministics(, dθ/dz)]``."""
        return self.graphs.constrained

    # (helpers under the names of earlier versions, used by the REML and quadrature objectives)
    def _fn(self, inputs, outputs):
        return self.graphs._fn(inputs, outputs)

    @cached_property
    def _terms(self):
        """The per-term log-density graph in ``z`` (see :meth:`Graphs.terms`)."""
        import pytensor.tensor as pt

        parts = [t.reshape((t.shape[0], -1)).sum(axis=1) if t.ndim >= 1 else t.reshape((1,))
                 for t in self.graphs.obs] + list(self.graphs.prior_rows)
        return pt.concatenate(parts)

    def _hv_u(self, z, vu):
        """``(d²L/du²) vu``."""
        p = self.n_params
        out = self.graphs.main(z, self._pad(z, vu))[2][p:]
        if self.graphs.has_quad:
            out = out + self.graphs.quad_hess_u(z[:p], np.asarray(vu)[None])[0]
        return out

    def _grad_T(self, z, V, M):
        """Gradient of ``T = ½ Σ_c M[c]·(H V[c])`` (``H = -d²L/du²``) in ``z``."""
        return self.graphs.third_sum(z, V, M)

    def compile_all(self) -> None:
        """Compile the functions a fit needs, so that timing excludes it."""
        g = self.graphs
        g.main, g.third, g.rows  # noqa: B018
        if g.has_quad:
            g.qbatch  # noqa: B018

    @cached_property
    def shared_inputs(self) -> tuple:
        return self.graphs.shared_inputs()

    def snapshot(self) -> tuple:
        return tuple((v, v.get_value(borrow=True)) for v in self.shared_inputs)

    # ------------------------------------------------------------- structure
    @property
    def structure(self) -> Structure:
        """Sparsity of H for the current data (probed again when the data change)."""
        key = tuple(id(val) for _, val in self.snapshot())
        if key != self._structure_key:
            x = self.x0()

            def terms(u):
                return self.graphs.terms(np.concatenate([x, u]))

            Z = incidence(terms, self._u0(), self.u_layout, np.random.default_rng(0))
            self._structure = Structure(Z, self.u_layout)
            self._structure_key = key
            self._states.clear()
            self._u_warm = self._u0()
            self._predict = None
            self._quad = (None, None)
        return self._structure

    # ------------------------------------------------------------ evaluation
    def x0(self) -> np.ndarray:
        vals = [np.asarray(self._point[b.value_name], dtype=float).ravel() for b in self.blocks]
        return np.concatenate(vals) if vals else np.zeros(0)

    def _pad(self, z, vu) -> np.ndarray:
        v = np.zeros(len(z))
        v[self.n_params:] = vu
        return v

    def _quad_hv(self, x, st: Structure) -> np.ndarray:
        """``-(∂²L_quad/∂u²) V[c]`` per colour, once per x (free of u)."""
        key = x.tobytes()
        if self._quad[0] != key:
            self._quad = (key, -self.graphs.quad_hess_u(x, st.V))
        return self._quad[1]

    def _hessian_u(self, z, st: Structure, hv0=None) -> Blocks:
        """``H = -∂²L/∂u²`` at z, by blocks; ``hv0`` is the product along colour 0 if known."""
        p = self.n_params
        HV = np.empty_like(st.V)
        for c in range(st.n_colors):
            hv = hv0 if c == 0 and hv0 is not None else self.graphs.main(
                z, self._pad(z, st.V[c]))[2]
            HV[c] = -hv[p:]
        if self.graphs.has_quad:
            HV += self._quad_hv(z[:p], st)
        return Blocks(st, st.assemble(HV))

    def _inner(self, x: np.ndarray, start: np.ndarray | None = None, *,
               store: bool = True) -> _State:
        """The inner optimum for ``x`` (cached for the last few x). ``start``: a guess of û."""
        x = np.asarray(x, dtype=float)
        key = x.tobytes()
        st_ = self.structure
        if key in self._states:
            self._states.move_to_end(key)
            return self._states[key]
        if start is None and self._predict is not None:
            xr, ur, D = self._predict
            if np.max(np.abs(x - xr), initial=0.0) <= PREDICT_MAX:
                start = ur + D @ (x - xr)
        tried = []
        state = None
        for u0 in (start, self._u_warm, self._u0()):
            if u0 is None or any(np.array_equal(u0, t) for t in tried):
                continue
            tried.append(u0)
            state = self._newton(x, u0, st_)
            if state.ok:
                break
        if state.ok:
            self._u_warm = state.u.copy()
        else:
            self.inner_failures += 1
        if store:
            self._states[key] = state
            if len(self._states) > 8:
                self._states.popitem(last=False)
        return state

    def _newton(self, x, u0, st: Structure) -> _State:
        # far from the optimum (a profile walking to sigma -> 0) H overflows: the step fails
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._newton_loop(x, u0, st)

    def _newton_loop(self, x, u0, st: Structure) -> _State:
        p = self.n_params
        z = np.concatenate([x, u0])
        s = _State()
        s.x, s.grad, s.ok, s.blocks = x, None, False, None
        v0 = self._pad(z, st.V[0])
        L, gz, hv0 = self.graphs.main(z, v0)
        L = float(L)
        prev = np.inf
        it = 0
        for it in range(1, INNER_MAX_ITER + 1):
            if not np.isfinite(L):
                break
            g = -gz[p:]
            blocks = self._hessian_u(z, st, hv0)
            step = -blocks.solve(g)
            dec = -0.5 * float(g @ step)
            s.blocks = blocks
            if blocks.pd and (dec <= INNER_TOL * max(1.0, abs(L))
                              or (dec < 1e-12 * max(1.0, abs(L)) and dec > 0.25 * prev)):
                s.ok = True
                break
            prev = dec
            alpha = 1.0
            noise = 64 * np.finfo(float).eps * max(1.0, abs(L))
            for _ in range(40):
                zc = z.copy()
                zc[p:] += alpha * step
                Lc, gc, hc = self.graphs.main(zc, v0)
                Lc = float(Lc)
                if np.isfinite(Lc) and -Lc <= -L + 1e-4 * alpha * float(g @ step) + noise:
                    break
                alpha *= 0.5
            else:
                break
            z, L, gz, hv0 = zc, Lc, gc, hc
        s.u, s.L, s.gz, s.iters = z[p:].copy(), L, np.asarray(gz), it
        q = self.u_layout.size
        if s.ok:
            s.f = -L + 0.5 * s.blocks.logdet - 0.5 * q * math.log(2 * math.pi)
        else:
            s.f = np.nan
        return s

    @blas_threads
    def value(self, x: np.ndarray) -> float:
        f = self._inner(x).f
        return float(f) if np.isfinite(f) else np.inf

    @blas_threads
    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        return self._value_and_grad(self._inner(x))

    def _value_and_grad(self, s: _State) -> tuple[float, np.ndarray]:
        if not s.ok or not np.isfinite(s.f):
            return np.inf, np.full(self.n_params, np.nan)
        if s.grad is None:
            s.grad = self._gradient(s)
        return float(s.f), s.grad.copy()

    def _gradient(self, s: _State) -> np.ndarray:
        st = self.structure
        p = self.n_params
        z = np.concatenate([s.x, s.u])
        gT = self.graphs.third_sum(z, st.V, st.scatter(s.blocks.inverse()))
        w = s.blocks.solve(gT[p:])
        return -s.gz[:p] + gT[:p] + self._mixed_theta(z, w)

    def _mixed_theta(self, z, w):
        """``(d²L/dx du) w``."""
        p = self.n_params
        out = self.graphs.main(z, self._pad(z, w))[2][:p]
        if self.graphs.has_quad:  # exact: L_quad's gradient is affine in u
            u = z[p:]
            out = out + self.graphs.quad_batch(z[:p], np.stack([u + w, u - w]),
                                               np.array([0.5, -0.5]))[0][:p]
        return out

    def _mixed_u(self, z, j):
        """``(d²L/du dx_j)``: exact for the main part, central differences for L_quad."""
        p = self.n_params
        v = np.zeros(len(z))
        v[j] = 1.0
        out = self.graphs.main(z, v)[2][p:]
        if self.graphs.has_quad:
            x, u = z[:p].copy(), z[p:]
            h = FD_STEP * max(1.0, abs(x[j]))
            xp, xm = x.copy(), x.copy()
            xp[j] += h
            xm[j] -= h
            one = np.ones(1)
            out = out + (self.graphs.quad_batch(xp, u[None], one)[1][0]
                         - self.graphs.quad_batch(xm, u[None], one)[1][0]) / (2 * h)
        return out

    def _dudx(self, s: _State) -> np.ndarray:
        """``dû/dx = H⁻¹ L_ux`` at the inner optimum ``s`` (q x p)."""
        z = np.concatenate([s.x, s.u])
        D = np.empty((self.u_layout.size, self.n_params))
        for j in range(self.n_params):
            D[:, j] = s.blocks.solve(self._mixed_u(z, j))
        return D

    @blas_threads
    def hessian(self, x: np.ndarray) -> np.ndarray:
        """Central differences of the exact gradient (step ``FD_STEP * max(1, |x_j|)``); each
        displaced inner Newton starts at ``û(x) ± h dû/dx_j``."""
        x = np.asarray(x, dtype=float)
        p = self.n_params
        s0 = self._inner(x)
        D = self._dudx(s0) if s0.ok else None
        H = np.empty((p, p))
        for j in range(p):
            h = FD_STEP * max(1.0, abs(x[j]))
            cols = []
            for sign in (1.0, -1.0):
                xs = x.copy()
                xs[j] += sign * h
                start = None if D is None else s0.u + sign * h * D[:, j]
                cols.append(self._value_and_grad(self._inner(xs, start, store=False))[1])
            H[:, j] = (cols[0] - cols[1]) / (2 * h)
        if s0.ok:  # the warm start returns to x; later steps from x start along dû/dx
            self._u_warm = s0.u.copy()
            self._predict = (x.copy(), s0.u.copy(), D)
        return 0.5 * (H + H.T)

    # ------------------------------------------------------------- protocol
    @property
    def discrete_outcome(self) -> bool:
        return any(op in DISCRETE_OUTCOME_OPS for op in self.observed_ops)

    def count_obs(self, x: np.ndarray | None = None) -> int:
        total = 0
        for t in self.graphs.pointwise(np.concatenate([self.x0(), self._u0()])):
            total += int(t.shape[0]) if t.ndim else 1
        return total

    @blas_threads
    def pointwise(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per-observation log-likelihood *conditional on the modes* û(θ) (not marginal)."""
        s = self._inner(x)
        out = self.graphs.pointwise(np.concatenate([s.x, s.u]))
        return dict(zip(self.observed_names, out, strict=True))

    def scores(self, x: np.ndarray) -> np.ndarray:
        raise NotAvailable("per-row scores do not exist for a marginal likelihood with random "
                           "effects (rows in one group are not independent).")

    @blas_threads
    def constrained_and_jacobian(self, x):
        s = self._inner(x)
        out = list(self._fn_constrained(np.concatenate([s.x, s.u])))
        jac = (np.asarray(out.pop(), dtype=float)[:, :self.n_params]
               if any(b.transform for b in self.blocks) else np.eye(self.n_params))
        names = ([b.name for b in self.blocks] + list(self.random_names)
                 + list(self.deterministic_names))
        return {n: np.asarray(v) for n, v in zip(names, out, strict=True)}, jac

    def constrained(self, x):
        return self.constrained_and_jacobian(x)[0]

    def constrained_flat(self, x):
        vals = self.constrained(x)
        if not self.blocks:
            return np.zeros(0)
        return np.concatenate([np.asarray(vals[b.name], dtype=float).ravel() for b in self.blocks])

    def constrained_jacobian(self, x):
        return self.constrained_and_jacobian(x)[1]

    def unconstrain(self, values) -> np.ndarray:
        return unconstrain(self.model, self._theta_rvs, self.blocks, values)

    @property
    def observed_data(self) -> dict[str, np.ndarray]:
        return self.current_observed()

    def current_observed(self) -> dict[str, np.ndarray]:
        out = {}
        for rv in self.model.observed_RVs:
            value = self.model.rvs_to_values[rv]
            out[rv.name] = np.asarray(value.data if hasattr(value, "data")
                                      else value.get_value() if hasattr(value, "get_value")
                                      else value.eval())
        return out

    # ------------------------------------------------------------ after the fit
    @blas_threads
    def mixed_partials(self, x: np.ndarray) -> np.ndarray:
        """``dû/dx = H⁻¹ L_ux`` at the inner optimum for ``x`` (q x p)."""
        return self._dudx(self._inner(x))

    def joint_logp(self, z: np.ndarray) -> float:
        """The joint log-density at ``z = (x, u)`` (the inner Newton's compiled function)."""
        return float(self.graphs.main(z, np.zeros_like(z))[0])

    @blas_threads
    def modes(self, x: np.ndarray):
        s = self._inner(x)
        return s.u.copy(), s.blocks

    def settle_boundary(self, res, optimizer, options):
        """See :func:`~mle_ppl._src.engine.re_fit.settle_boundary`."""
        from mle_ppl._src.engine.re_fit import settle_boundary

        return settle_boundary(self, res, optimizer, options)

    def random_effects_report(self, x, cov_u, fixed=()):
        """See :func:`~mle_ppl._src.engine.re_fit.random_effects_report`."""
        from mle_ppl._src.engine.re_fit import random_effects_report

        return random_effects_report(self, x, cov_u, fixed)

    def warn_inner(self, x: np.ndarray, converged: bool) -> list[tuple[type, str]]:
        """A warning when the inner Newton failed at the final point, or failed on the way to
        a fit that did not converge (failed points elsewhere are rejected steps, as usual)."""
        s = self._inner(x)
        if not s.ok:
            return [(ConvergenceWarning,
                     f"the inner Newton on the random effects did not converge at the final "
                     f"point ({s.iters} iterations): the marginal likelihood there is not "
                     "reliable. Try start= values or rescale the data.")]
        if not converged and self.inner_failures:
            return [(ConvergenceWarning,
                     f"the inner Newton on the random effects failed at {self.inner_failures} "
                     "point(s) the optimizer tried (those steps were rejected).")]
        return []


def _u_shapes(model: pm.Model, names) -> tuple | None:
    """The random effects' shapes from their static types and the model's dim lengths,
    without compiling anything; None when some length is symbolic."""
    out = []
    for n in names:
        rv = model[n]
        dims = model.named_vars_to_dims.get(n) or ()
        shape = []
        for axis, s in enumerate(rv.type.shape):
            if s is None:
                dim = dims[axis] if axis < len(dims) else None
                length = model.dim_lengths.get(dim) if dim is not None else None
                if length is None:
                    return None
                s = (length.get_value() if hasattr(length, "get_value")
                     else getattr(length, "data", None))
                if s is None:
                    return None
            shape.append(int(s))
        out.append(tuple(shape))
    return tuple(out)


_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def laplace_for(model: pm.Model, roles: Roles, *, likelihood_only: bool,
                mode: str = DEFAULT_MODE) -> LaplaceMarginal:
    """The cached :class:`LaplaceMarginal` of ``model`` (compiled once per model and options)."""
    from mle_ppl._src.engine.random_effects import refuse_priors

    notes = refuse_priors(roles, model, likelihood_only=likelihood_only)
    mode = resolve_mode(mode, model)
    per_model = _MODELS.setdefault(model, {})
    key = (roles.random, roles.priors, mode)
    obj = per_model.get(key)
    if obj is not None:
        shapes = _u_shapes(model, roles.random)
        if shapes is None:
            point = model.initial_point()
            shapes = tuple(np.shape(point[model.rvs_to_values[model[n]].name])
                           for n in roles.random)
        if tuple(obj.u_layout.shapes) != shapes:
            obj = None
    if obj is None:
        obj = LaplaceMarginal(model, roles, notes=notes, mode=mode)
        per_model[key] = obj
    return obj

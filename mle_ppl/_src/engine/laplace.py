"""The Laplace-marginal objective: random effects integrated out, an inner Newton per call.

For flat parameters θ (on the unconstrained vector ``x``) and random effects u, with the joint
log-density ``L(θ, u) = Σ log p(yᵢ | θ, u) + log p(u | θ)``, the objective is the negative
Laplace-approximate marginal log-likelihood

    f(θ) = -L(θ, û) + ½ log det H(θ, û) - (q/2) log 2π,   H = -∂²L/∂u²,  û = argmax_u L(θ, u)

(exact for a Gaussian linear mixed model). It implements the objective protocol
(:mod:`~mle_ppl._src.engine.objective`), so the optimizers see no difference.

- **Inner Newton** on u with the exact Hessian, warm-started from the last inner optimum (as
  TMB does). ``H`` is assembled from one Hessian-vector product per colour of its sparsity
  pattern and factorised block by block (:mod:`~mle_ppl._src.engine.re_structure`).
- **Exact gradient**: ``df/dθ = -∂L/∂θ + ∂T/∂θ + L_θu H⁻¹ ∂T/∂u`` with
  ``T(θ, u) = ½ Σ_ab S_ab H_ab(θ, u)`` for the fixed matrix ``S = H⁻¹`` (its derivative is that
  of ``½ log det H``), the last term from the implicit-function theorem (``dû/dθ = H⁻¹ L_uθ``).
  ``∇T`` is one third-order product per colour, compiled by PyTensor.
- **Hessian** of f (standard errors, Newton): central differences of the exact gradient.

All PyTensor functions (the joint log-density and its gradient, the Hessian-vector and the
third-order products, per-term log-densities) are compiled once per model; new data of the same
shapes re-uses them (only the sparsity structure is probed again).
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from functools import cached_property

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pymc.pytensorf import join_nonshared_inputs

from mle_ppl._src.engine.likelihood import (
    DEFAULT_MODE,
    DISCRETE_OUTCOME_OPS,
    _compile,
    _labels,
    _support,
    resolve_mode,
    unconstrain,
)
from mle_ppl._src.engine.objective import NotAvailable, ParamBlock
from mle_ppl._src.engine.random_effects import Roles, _params
from mle_ppl._src.engine.re_structure import Blocks, Layout, Structure, incidence
from mle_ppl._src.errors import ConvergenceWarning

#: Inner Newton stops when the Newton decrement ``½ g'H⁻¹g`` is below this times ``max(1, |L|)``
#: (then û is exact to ~1e-10 of its conditional SD and the outer gradient to rounding).
INNER_TOL = 1e-22
INNER_MAX_ITER = 100
#: Relative step of the central differences of the gradient that give the Hessian of f.
FD_STEP = 1e-4


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
        self._structure_key = None
        self._structure = None
        self.inner_failures = 0
        self._build_graph()

    # ------------------------------------------------------------------ graph
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

    def _gaussian_priors(self) -> list:
        """Random effects with a Normal/MvNormal density whose parameters involve no other
        random effect: their log-density is quadratic in u, with a Hessian free of u."""
        from pytensor.graph.traversal import ancestors

        us = set(self._u_rvs)
        out = []
        for rv in self._u_rvs:
            if (type(rv.owner.op).__name__ in ("NormalRV", "MvNormalRV")
                    and self.model.rvs_to_transforms.get(rv) is None
                    and not us & set(ancestors(_params(rv)))):
                out.append(rv)
        return out

    def _build_graph(self) -> None:
        model = self.model
        obs = model.logp(vars=model.observed_RVs, jacobian=False, sum=False)
        gauss = self._gaussian_priors()
        other = [rv for rv in self._u_rvs if rv not in gauss]
        prior_u = model.logp(vars=self._u_rvs, jacobian=True, sum=False)
        prior_u = [_mvnormal_logp(model, rv) if rv in gauss else t
                   for rv, t in zip(self._u_rvs, prior_u, strict=True)]
        prior_u = [t if t is not None else pt0
                   for t, pt0 in zip(prior_u, model.logp(vars=self._u_rvs, jacobian=True,
                                                          sum=False), strict=True)]
        by_rv = dict(zip(self._u_rvs, prior_u, strict=True))
        main = pt.add(*[pt.sum(t) for t in obs + [by_rv[rv] for rv in other]])
        quad = pt.add(*[pt.sum(by_rv[rv]) for rv in gauss]) if gauss else pt.constant(0.0)

        def rows(t):
            return t.reshape((t.shape[0], -1)).sum(axis=1) if t.ndim >= 1 else t.reshape((1,))

        terms = pt.concatenate([rows(t) for t in obs + prior_u])
        constrained = model.replace_rvs_by_values(self._theta_rvs)
        u_constrained = model.replace_rvs_by_values(self._u_rvs)
        dets = model.replace_rvs_by_values(model.deterministics)
        self.deterministic_names = tuple(d.name for d in model.deterministics)
        values = [model.rvs_to_values[rv] for rv in self._theta_rvs + self._u_rvs]
        outputs = [main, quad, terms, *obs, *constrained, *u_constrained, *dets]
        outputs, z = join_nonshared_inputs(self._point, outputs, values)
        self._z = z
        self._L_main, self._L_quad = outputs[0], outputs[1]
        self._has_quad = bool(gauss)
        self._L = self._L_main + self._L_quad
        self._terms = outputs[2]
        k, m, r = len(obs), len(constrained), len(u_constrained)
        self._obs = outputs[3:3 + k]
        self._constrained = outputs[3 + k:3 + k + m]
        self._u_constrained = outputs[3 + k + m:3 + k + m + r]
        self._deterministics = outputs[3 + k + m + r:]

    def _fn(self, inputs, outputs):
        return _compile(inputs, outputs, self.mode, model=self.model)

    @cached_property
    def _fn_vg(self):
        return self._fn([self._z], [self._L, pt.grad(self._L, self._z)])

    @cached_property
    def _fn_quad_grad(self):
        """Gradient of the Gaussian random effects' log-density (quadratic in u)."""
        return self._fn([self._z], pt.grad(self._L_quad, self._z,
                                           disconnected_inputs="ignore"))

    @cached_property
    def _hv_graph(self):
        v = pt.vector("v", dtype=self._z.dtype)
        gz = pt.grad(self._L_main, self._z)
        return v, pt.grad(pt.sum(gz * v), self._z)

    @cached_property
    def _fn_hv(self):
        v, hv = self._hv_graph
        return self._fn([self._z, v], hv)

    @cached_property
    def _fn_third(self):
        v, hv = self._hv_graph
        m = pt.vector("m", dtype=self._z.dtype)
        return self._fn([self._z, v, m], pt.grad(pt.sum(hv * m), self._z))

    # Products with the Hessian of L = L_main + L_quad. L_quad is quadratic in u, so its
    # second derivatives in u are exact differences of its gradient (no higher-order graph
    # through the MvNormal's Cholesky factor, whose third derivative PyTensor builds slowly).
    def _qgrad(self, x, u):
        return self._fn_quad_grad(np.concatenate([x, u]))

    def _hv_u(self, z, vu):
        """``(d²L/du²) vu``."""
        p = self.n_params
        v = np.zeros(len(z))
        v[p:] = vu
        out = self._fn_hv(z, v)[p:]
        if self._has_quad:
            x = z[:p]
            out = out + self._qgrad(x, vu)[p:] - self._qgrad(x, 0 * vu)[p:]
        return out

    def _mixed_theta(self, z, w):
        """``(d²L/dx du) w``."""
        p = self.n_params
        v = np.zeros(len(z))
        v[p:] = w
        out = self._fn_hv(z, v)[:p]
        if self._has_quad:
            x, u = z[:p], z[p:]
            out = out + 0.5 * (self._qgrad(x, u + w)[:p] - self._qgrad(x, u - w)[:p])
        return out

    def _mixed_u(self, z, j):
        """``(d²L/du dx_j)``: exact for the main part, central differences for L_quad."""
        p = self.n_params
        v = np.zeros(len(z))
        v[j] = 1.0
        out = self._fn_hv(z, v)[p:]
        if self._has_quad:
            x, u = z[:p].copy(), z[p:]
            h = FD_STEP * max(1.0, abs(x[j]))
            xp, xm = x.copy(), x.copy()
            xp[j] += h
            xm[j] -= h
            out = out + (self._qgrad(xp, u)[p:] - self._qgrad(xm, u)[p:]) / (2 * h)
        return out

    def _grad_T(self, z, V, M):
        """Gradient of ``T = ½ Σ_c M[c]·(H V[c])`` (``H = -d²L/du²``) in ``z``."""
        p = self.n_params
        gT = np.zeros(len(z))
        v = np.zeros(len(z))
        m = np.zeros(len(z))
        for c in range(len(V)):
            v[p:] = V[c]
            m[p:] = M[c]
            gT += self._fn_third(z, v, m)
        if self._has_quad:
            # M·(d²L_quad/du²) V = [L(aM + V) - L(aM) - L(V) + L(0)] / a (exact: quadratic)
            x = z[:p]
            zero = np.zeros(len(z) - p)
            g0 = self._qgrad(x, zero)[:p]
            for c in range(len(V)):
                nm = np.linalg.norm(M[c])
                if nm == 0:
                    continue
                a = np.linalg.norm(V[c]) / nm
                gT[:p] += (self._qgrad(x, a * M[c] + V[c])[:p] - self._qgrad(x, a * M[c])[:p]
                           - self._qgrad(x, V[c])[:p] + g0) / a
        return -0.5 * gT

    @cached_property
    def _fn_terms(self):
        return self._fn([self._z], self._terms)

    @cached_property
    def _fn_pointwise(self):
        return self._fn([self._z], self._obs)

    @cached_property
    def _fn_constrained(self):
        outs = self._constrained + self._u_constrained + self._deterministics
        if any(b.transform for b in self.blocks):
            flat = pt.concatenate([c.ravel() for c in self._constrained])
            outs = outs + [pytensor.gradient.jacobian(flat, self._z, vectorize=True,
                                                      disconnected_inputs="ignore")]
        return self._fn([self._z], outs)

    def compile_all(self) -> None:
        """Compile the functions a fit needs, so that timing excludes it."""
        self._fn_vg, self._fn_hv, self._fn_third, self._fn_terms, self._fn_quad_grad  # noqa: B018

    @cached_property
    def shared_inputs(self) -> tuple:
        from pytensor.compile.sharedvalue import SharedVariable
        from pytensor.graph.traversal import graph_inputs
        from pytensor.tensor.type import TensorType

        outs = [self._L, self._terms, *self._constrained, *self._deterministics]
        return tuple(v for v in graph_inputs(outs)
                     if isinstance(v, SharedVariable) and isinstance(v.type, TensorType))

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
                return self._fn_terms(np.concatenate([x, u]))

            Z = incidence(terms, self._u0(), self.u_layout, np.random.default_rng(0))
            self._structure = Structure(Z, self.u_layout)
            self._structure_key = key
            self._states.clear()
            self._u_warm = self._u0()
        return self._structure

    # ------------------------------------------------------------ evaluation
    def x0(self) -> np.ndarray:
        vals = [np.asarray(self._point[b.value_name], dtype=float).ravel() for b in self.blocks]
        return np.concatenate(vals) if vals else np.zeros(0)

    def _hessian_u(self, z, st: Structure) -> Blocks:
        HV = np.empty_like(st.V)
        for c in range(st.n_colors):
            HV[c] = -self._hv_u(z, st.V[c])
        return Blocks(st, st.assemble(HV))

    def _inner(self, x: np.ndarray) -> _State:
        x = np.asarray(x, dtype=float)
        key = x.tobytes()
        st_ = self.structure
        if key in self._states:
            self._states.move_to_end(key)
            return self._states[key]
        state = self._newton(x, self._u_warm, st_)
        if not state.ok and not np.array_equal(self._u_warm, self._u0()):
            state = self._newton(x, self._u0(), st_)
        if state.ok:
            self._u_warm = state.u.copy()
        else:
            self.inner_failures += 1
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
        L, gz = self._fn_vg(z)
        L = float(L)
        prev = np.inf
        it = 0
        for it in range(1, INNER_MAX_ITER + 1):
            if not np.isfinite(L):
                break
            g = -gz[p:]
            blocks = self._hessian_u(z, st)
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
                Lc, gc = self._fn_vg(zc)
                Lc = float(Lc)
                if np.isfinite(Lc) and -Lc <= -L + 1e-4 * alpha * float(g @ step) + noise:
                    break
                alpha *= 0.5
            else:
                break
            z, L, gz = zc, Lc, gc
        s.u, s.L, s.gz, s.iters = z[p:].copy(), L, np.asarray(gz), it
        q = self.u_layout.size
        if s.ok:
            s.f = -L + 0.5 * s.blocks.logdet - 0.5 * q * math.log(2 * math.pi)
        else:
            s.f = np.nan
        return s

    def value(self, x: np.ndarray) -> float:
        f = self._inner(x).f
        return float(f) if np.isfinite(f) else np.inf

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        s = self._inner(x)
        if not s.ok or not np.isfinite(s.f):
            return np.inf, np.full(self.n_params, np.nan)
        if s.grad is None:
            s.grad = self._gradient(s)
        return float(s.f), s.grad.copy()

    def _gradient(self, s: _State) -> np.ndarray:
        st = self.structure
        p = self.n_params
        z = np.concatenate([s.x, s.u])
        gT = self._grad_T(z, st.V, st.scatter(s.blocks.inverse()))
        w = s.blocks.solve(gT[p:])
        return -s.gz[:p] + gT[:p] + self._mixed_theta(z, w)

    def hessian(self, x: np.ndarray) -> np.ndarray:
        """Central differences of the exact gradient (step ``FD_STEP * max(1, |x_j|)``)."""
        x = np.asarray(x, dtype=float)
        p = self.n_params
        H = np.empty((p, p))
        for j in range(p):
            h = FD_STEP * max(1.0, abs(x[j]))
            xp, xm = x.copy(), x.copy()
            xp[j] += h
            xm[j] -= h
            gp = self.value_and_grad(xp)[1]
            gm = self.value_and_grad(xm)[1]
            H[:, j] = (gp - gm) / (2 * h)
        self.value_and_grad(x)  # the warm start returns to x
        return 0.5 * (H + H.T)

    # ------------------------------------------------------------- protocol
    @property
    def discrete_outcome(self) -> bool:
        return any(op in DISCRETE_OUTCOME_OPS for op in self.observed_ops)

    def count_obs(self, x: np.ndarray | None = None) -> int:
        total = 0
        for t in self._fn_pointwise(np.concatenate([self.x0(), self._u0()])):
            t = np.asarray(t)
            total += int(t.shape[0]) if t.ndim else 1
        return total

    def pointwise(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per-observation log-likelihood *conditional on the modes* û(θ) (not marginal)."""
        s = self._inner(x)
        out = self._fn_pointwise(np.concatenate([s.x, s.u]))
        return {n: np.asarray(v) for n, v in zip(self.observed_names, out, strict=True)}

    def scores(self, x: np.ndarray) -> np.ndarray:
        raise NotAvailable("per-row scores do not exist for a marginal likelihood with random "
                           "effects (rows in one group are not independent).")

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
        return {rv.name: np.asarray(self.model.rvs_to_values[rv].eval())
                for rv in self.model.observed_RVs}

    # ------------------------------------------------------------ after the fit
    def mixed_partials(self, x: np.ndarray) -> np.ndarray:
        """``dû/dx = H⁻¹ L_ux`` at the inner optimum for ``x`` (q x p)."""
        s = self._inner(x)
        p = self.n_params
        z = np.concatenate([s.x, s.u])
        D = np.empty((self.u_layout.size, p))
        for j in range(p):
            D[:, j] = s.blocks.solve(self._mixed_u(z, j))
        return D

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


def _mvnormal_logp(model: pm.Model, rv):
    """An MvNormal random effect's log-density with one covariance matrix for all groups, as
    plain matrix algebra (PyMC's graph broadcasts the Cholesky factor to every group, which the
    Python VM then solves group by group). None for anything else (PyMC's own logp is used)."""
    if type(rv.owner.op).__name__ != "MvNormalRV":
        return None
    mu, cov = model.replace_rvs_by_values(_params(rv)[:2])
    while cov.ndim > 2 and cov.type.shape[0] == 1:  # PyMC's broadcastable batch axes
        cov = cov[0]
    if cov.ndim != 2:
        return None
    value = model.rvs_to_values[rv]
    k = cov.shape[-1]
    delta = value - mu
    chol = pt.linalg.cholesky(cov)
    chol_inv = pt.linalg.solve_triangular(chol, pt.eye(k), lower=True)
    quad = pt.sum(pt.square(delta @ chol_inv.T), axis=-1)
    logdet = 2.0 * pt.sum(pt.log(pt.diagonal(chol)))
    return -0.5 * (quad + logdet + k * np.log(2 * np.pi))


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
    shapes = tuple(np.shape(model.initial_point()[model.rvs_to_values[model[n]].name])
                   for n in roles.random)
    if obj is None or tuple(s for s in obj.u_layout.shapes) != shapes:
        obj = LaplaceMarginal(model, roles, notes=notes, mode=mode)
        per_model[key] = obj
    return obj

"""The Laplace objective's PyTensor side: the joint log-density's graphs, compiled on first use.

For the flat vector ``z = (x, u)`` (parameters on the unconstrained scale, then the random
effects), the joint log-density is split as ``L = L_main + L_quad``:

- ``L_quad``: random effects with an ``MvNormal`` density whose parameters involve no other random
  effect. Quadratic in u, so its u-Hessian is free of u; its products are exact differences of its
  gradient (no third-order graph through the covariance's Cholesky factor, which PyTensor builds
  and rewrites slowly).
- ``L_main``: everything else (observed terms, scalar ``Normal`` and other random effects'
  densities).

Compiled functions (each on first use, once per model; the on-disk cache of
:mod:`~mle_ppl._src.engine.diskcache` keys them by the graph, so a new process re-uses them):

``main(z, v)``
    ``[L, ∇L, ∇²L_main v]``: the value, gradient and one Hessian-vector product in one call (the
    product needs the gradient's graph anyway, so value and gradient are nearly free). The inner
    Newton's line search asks it for the product along the first colour of the next Hessian.
``third(z, v, m)``
    ``∇(m · ∇²L_main v)``: the derivative of ``½ log det H`` (third order, one call per colour).
``qbatch(z, w, *U)``
    ``∇ Σ_b w_b L_quad(x, U_b)`` in x and in each ``U_b``: ``L_quad`` at B points in one call,
    for its Hessian products and their derivatives by exact differences (only with a quadratic
    part).
``rows(z)``
    the per-term log-densities: each observed variable's elementwise terms, then each random
    effect's (the sparsity probe, ``pointwise``, ``count_obs``); in the same call the
    user-scale values, modes, deterministics and ``dθ/dx`` (after a fit).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pymc.pytensorf import join_nonshared_inputs

from mle_ppl._src.engine.likelihood import _compile
from mle_ppl._src.engine.random_effects import _params
from mle_ppl._src.engine.re_structure import Layout


def mvnormal_logp(model: pm.Model, rv, value=None):
    """An MvNormal random effect's log-density with one covariance matrix for all groups, as
    plain matrix algebra (PyMC's graph broadcasts the Cholesky factor to every group, which the
    Python VM then solves group by group), one term per group. ``value``: evaluated there
    instead of at the value variable (any leading batch axes). None for anything else."""
    if type(rv.owner.op).__name__ != "MvNormalRV":
        return None
    mu, cov = model.replace_rvs_by_values(_params(rv)[:2])
    while cov.ndim > 2 and cov.type.shape[0] == 1:  # PyMC's broadcastable batch axes
        cov = cov[0]
    if cov.ndim != 2:
        return None
    value = model.rvs_to_values[rv] if value is None else value
    k = cov.shape[-1]
    delta = value - mu
    chol = pt.linalg.cholesky(cov)
    chol_inv = pt.linalg.solve_triangular(chol, pt.eye(k), lower=True)
    quad = pt.sum(pt.square(delta @ chol_inv.T), axis=-1)
    logdet = 2.0 * pt.sum(pt.log(pt.diagonal(chol)))
    return -0.5 * (quad + logdet + k * np.log(2 * np.pi))


def quadratic_priors(model: pm.Model, u_rvs) -> list:
    """Random effects whose log-density goes to ``L_quad``: MvNormal, untransformed, whose
    parameters involve no random effect, and expressible by :func:`mvnormal_logp`."""
    from pytensor.graph.traversal import ancestors

    us = set(u_rvs)
    return [rv for rv in u_rvs
            if type(rv.owner.op).__name__ == "MvNormalRV"
            and model.rvs_to_transforms.get(rv) is None
            and not us & set(ancestors(_params(rv)))
            and mvnormal_logp(model, rv) is not None]


class Graphs:
    """The symbolic joint log-density of a model on ``z = (x, u)`` and its compiled functions."""

    def __init__(self, model: pm.Model, theta_rvs, u_rvs, point: dict, mode: str, *,
                 with_jacobian: bool):
        self.model = model
        self.mode = mode
        self.with_jacobian = with_jacobian
        self.n_params = sum(int(np.size(point[model.rvs_to_values[rv].name]))
                            for rv in theta_rvs)
        obs = model.logp(vars=list(model.observed_RVs) + list(u_rvs), jacobian=True, sum=False)
        prior_u = obs[len(model.observed_RVs):]
        obs = obs[:len(model.observed_RVs)]
        quad_rvs = quadratic_priors(model, u_rvs)
        self.u_layout = Layout.from_shapes(
            [rv.name for rv in u_rvs],
            [tuple(np.shape(point[model.rvs_to_values[rv].name])) for rv in u_rvs])
        self._quad_index = [i for i, rv in enumerate(u_rvs) if rv in quad_rvs]
        prior_u = [mvnormal_logp(model, rv) if rv in quad_rvs else t
                   for rv, t in zip(u_rvs, prior_u, strict=True)]
        main = pt.add(*[pt.sum(t) for t in obs]
                      + [pt.sum(t) for rv, t in zip(u_rvs, prior_u, strict=True)
                         if rv not in quad_rvs])
        quad = (pt.add(*[pt.sum(t) for rv, t in zip(u_rvs, prior_u, strict=True)
                         if rv in quad_rvs]) if quad_rvs else pt.constant(0.0))

        def rows(t):
            return t.reshape((t.shape[0], -1)).sum(axis=1) if t.ndim >= 1 else t.reshape((1,))

        # L_quad at B points at once: (w (B,), U_rv (B, *shape)) -> sum_b w_b L_quad(x, U_b)
        self.quad_rvs = quad_rvs
        self._w = pt.vector("w", dtype="float64")
        self._U = [pt.tensor(f"U_{rv.name}", dtype="float64", shape=(None,) * (rv.ndim + 1))
                   for rv in quad_rvs]
        qsum = pt.constant(0.0)
        for rv, U in zip(quad_rvs, self._U, strict=True):
            t = mvnormal_logp(model, rv, U)
            qsum = qsum + pt.sum(self._w * t.reshape((t.shape[0], -1)).sum(axis=1))
        constrained = model.replace_rvs_by_values(theta_rvs)
        u_constrained = model.replace_rvs_by_values(u_rvs)
        dets = model.replace_rvs_by_values(model.deterministics)
        self.deterministic_names = tuple(d.name for d in model.deterministics)
        values = [model.rvs_to_values[rv] for rv in list(theta_rvs) + list(u_rvs)]
        k, r = len(obs), len(prior_u)
        outputs = [main, quad, qsum, *obs, *[rows(t) for t in prior_u], *constrained,
                   *u_constrained, *dets]
        outputs, z = join_nonshared_inputs(point, outputs, values)
        self.z = z
        self.L_main, self.L_quad, self._qsum = outputs[0], outputs[1], outputs[2]
        outputs = outputs[1:]
        self.has_quad = bool(quad_rvs)
        self.L = self.L_main + self.L_quad if quad_rvs else self.L_main
        self.obs = outputs[2:2 + k]
        self.prior_rows = outputs[2 + k:2 + k + r]
        rest = outputs[2 + k + r:]
        m = len(constrained)
        self.constrained_out = rest[:m]
        self.u_constrained = rest[m:m + len(u_constrained)]
        self.deterministics = rest[m + len(u_constrained):]
        self.n_obs_vars = k

    def _fn(self, inputs, outputs):
        return _compile(inputs, outputs, self.mode, model=self.model)

    @cached_property
    def _v(self):
        return pt.vector("v", dtype=self.z.dtype)

    @cached_property
    def _hv(self):
        gz = pt.grad(self.L_main, self.z)
        return gz, pt.grad(pt.sum(gz * self._v), self.z)

    @cached_property
    def main(self):
        """``(z, v) -> [L, ∇L, ∇²L_main v]``."""
        gz_main, hv = self._hv
        g = gz_main + pt.grad(self.L_quad, self.z) if self.has_quad else gz_main
        return self._fn([self.z, self._v], [self.L, g, hv])

    @cached_property
    def third(self):
        """``(z, v, m) -> ∇(m · ∇²L_main v)``."""
        m = pt.vector("m", dtype=self.z.dtype)
        return self._fn([self.z, self._v, m], pt.grad(pt.sum(self._hv[1] * m), self.z))

    @cached_property
    def qbatch(self):
        """``(z, w, *U) -> [∇_z Σ_b w_b L_quad(x, U_b), *∇_U]`` (only x's part of z matters)."""
        grads = pt.grad(self._qsum, [self.z, *self._U], disconnected_inputs="ignore")
        return self._fn([self.z, self._w, *self._U], grads)

    @cached_property
    def rows(self):
        """``z -> [*observed terms, *random effects' terms per group, *values, *modes,
        *deterministics(, dθ/dz)]`` (one function: a fit's first and last uses)."""
        outs = (list(self.obs) + list(self.prior_rows) + list(self.constrained_out)
                + list(self.u_constrained) + list(self.deterministics))
        if self.with_jacobian:
            flat = pt.concatenate([c.ravel() for c in self.constrained_out])
            outs = outs + [pytensor.gradient.jacobian(flat, self.z, vectorize=True,
                                                      disconnected_inputs="ignore")]
        return self._fn([self.z], outs)

    @cached_property
    def vg(self):
        """``z -> [L, ∇L]`` (for callers that need no Hessian product)."""
        return self._fn([self.z], [self.L, pt.grad(self.L, self.z)])

    def constrained(self, z: np.ndarray) -> list:
        """``[*values, *modes, *deterministics(, dθ/dz)]`` at z."""
        return list(self.rows(z)[self.n_obs_vars + len(self.prior_rows):])

    def shared_inputs(self) -> tuple:
        from pytensor.compile.sharedvalue import SharedVariable
        from pytensor.graph.traversal import graph_inputs
        from pytensor.tensor.type import TensorType

        outs = [self.L, *self.obs, *self.prior_rows, *self.constrained_out, *self.deterministics]
        return tuple(v for v in graph_inputs(outs)
                     if isinstance(v, SharedVariable) and isinstance(v.type, TensorType))

    # ------------------------------------------------------------- numeric pieces
    def terms(self, z: np.ndarray) -> np.ndarray:
        """Per-term log-density (every observed element's row sum, every group's density)."""
        out = self.rows(z)[:self.n_obs_vars + len(self.prior_rows)]
        parts = [np.asarray(t, dtype=float) for t in out]
        parts = [t.reshape(t.shape[0], -1).sum(axis=1) if t.ndim >= 1 else t.reshape(1)
                 for t in parts[:self.n_obs_vars]] + parts[self.n_obs_vars:]
        return np.concatenate(parts) if parts else np.zeros(0)

    def pointwise(self, z: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(t) for t in self.rows(z)[:self.n_obs_vars]]

    def third_sum(self, z: np.ndarray, V: np.ndarray, M: np.ndarray) -> np.ndarray:
        """``∇_z T`` with ``T = ½ Σ_c M[c]·(H V[c])``, ``H = -∂²L/∂u²`` (V, M over u)."""
        p = self.n_params
        gT = np.zeros(len(z))
        v = np.zeros(len(z))
        m = np.zeros(len(z))
        for c in range(len(V)):
            v[p:] = V[c]
            m[p:] = M[c]
            gT += self.third(z, v, m)
        if self.has_quad:
            # M·(d²L_quad/du²)V = [L(aM + V) - L(aM) - L(V) + L(0)] / a (exact: quadratic),
            # all colours' points in one batched call
            pts, wts = [], []
            for c in range(len(V)):
                nm = np.linalg.norm(M[c])
                if nm == 0:
                    continue
                a = np.linalg.norm(V[c]) / nm
                pts += [a * M[c] + V[c], a * M[c], V[c], np.zeros_like(V[c])]
                wts += [1 / a, -1 / a, -1 / a, 1 / a]
            if pts:
                gT[:p] += self.quad_batch(z[:p], np.array(pts), np.array(wts))[0][:p]
        return -0.5 * gT

    def quad_batch(self, x: np.ndarray, U: np.ndarray, w: np.ndarray):
        """``(∇_z Σ_b w_b L_quad(x, U_b), [w_b ∇_u L_quad(x, U_b)]_b)``; ``U`` is (B, q)."""
        lay = self.u_layout
        z = np.concatenate([x, np.zeros(lay.size)])
        Us = [U[:, lay.offsets[i]:lay.offsets[i] + int(np.prod(lay.shapes[i], dtype=int))]
              .reshape((len(U),) + lay.shapes[i]) for i in self._quad_index]
        out = self.qbatch(z, np.asarray(w, dtype=float), *Us)
        gu = np.zeros(U.shape)
        for i, g in zip(self._quad_index, out[1:], strict=True):
            o = lay.offsets[i]
            gu[:, o:o + int(np.prod(lay.shapes[i], dtype=int))] = np.asarray(g).reshape(len(U), -1)
        return np.asarray(out[0]), gu

    def quad_hess_u(self, x: np.ndarray, V: np.ndarray) -> np.ndarray:
        """``(∂²L_quad/∂u²) V[c]`` for every row of V (exact differences: quadratic in u)."""
        U = np.vstack([np.zeros((1, V.shape[1])), V])
        gu = self.quad_batch(x, U, np.ones(len(U)))[1]
        return gu[1:] - gu[0]

"""The adaptive Gauss–Hermite objective: scalar random effects integrated out with K nodes.

For a model with one scalar random effect per group (random intercepts, one grouping factor)
the marginal log-likelihood is a sum of one-dimensional integrals,

    log p(y | θ) = Σ_g log ∫ exp ℓ_g(θ, u) du,   ℓ_g = Σ_{terms of group g} log-density,

(plus the terms that touch no group). Adaptive Gauss–Hermite quadrature (glmer's ``nAGQ``)
centres the nodes on the conditional mode û_g and scales them by the conditional SD
``1/√h_g`` (``h_g = -∂²ℓ_g/∂u²`` at û_g), both from the Laplace objective's inner Newton:

    ∫ exp ℓ_g ≈ s_g Σ_k w_k e^{t_k²} exp ℓ_g(û_g + s_g t_k),   s_g = √(2/h_g).

Written as the Laplace value plus a correction per group,
``c_g = log Σ_k (w_k/√π) e^{t_k²} exp(ℓ_g(û_g + s_g t_k) - ℓ_g(û_g))``, so that with one node
(``t = 0``, ``c_g = 0``) the objective *is* the Laplace one, bit for bit.

**Exact gradient** of the correction in θ (with π_gk the normalised node weights):
``dc_g/dθ = Σ_k π_gk ∂ℓ_g/∂θ(node k) - ∂ℓ_g/∂θ(û_g) + a_g dû_g/dθ + b_g ds_g/dθ`` with
``a_g = Σ_k π_gk ∂ℓ_g/∂u(node k)``, ``b_g = Σ_k π_gk t_k ∂ℓ_g/∂u(node k)``,
``dû/dθ = H⁻¹ L_uθ`` (implicit-function theorem) and ``ds_g/dθ = -(s_g/2h_g) dh_g/dθ``, where
``dh_g/dθ`` is the total derivative of ``H_gg(θ, û(θ))``: the Laplace objective's third-order
product (``T = Σ_g e_g H_gg``) and its mixed product do both parts. The Hessian (standard errors)
is central differences of that gradient, as for the Laplace objective.

What this module uses of :class:`~mle_ppl._src.engine.laplace.LaplaceMarginal` (keep in step
when changing it; tests/test_glmm_quadrature.py checks the result): ``_inner(x)`` (``.u``,
``.blocks``), ``structure`` (``max_block``, ``buckets``, ``V``, ``scatter``), ``_fn_terms``,
``_u0``, ``u_layout``, ``_grad_T``, ``_mixed_theta``, and ``_fn``/``_z``/``_terms`` to compile
one more function (the gradient of a weighted sum of the per-term log-densities).
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from dataclasses import replace

import numpy as np

from mle_ppl._src.engine.linalg import central_hessian
from mle_ppl._src.errors import MLEError, ModelError

#: Largest number of nodes accepted (glmer allows 25; 100 nodes are exact to rounding for
#: anything a unimodal integrand can be, and more only costs time).
MAX_NODES = 100
#: Relative step of the central differences of the gradient that give the Hessian.
FD_STEP = 1e-4


def check_nodes(n_quadrature) -> int | None:
    """``n_quadrature=`` as given by the user: None, or an int in 1..MAX_NODES."""
    if n_quadrature is None:
        return None
    if isinstance(n_quadrature, bool) or not isinstance(n_quadrature, int | np.integer):
        raise MLEError(
            f"n_quadrature must be a whole number of Gauss-Hermite nodes (1 to {MAX_NODES}); "
            f"got {n_quadrature!r}.",
            cli=f"--n-quadrature must be a whole number from 1 to {MAX_NODES}; got "
                f"{n_quadrature!r}.")
    k = int(n_quadrature)
    if not 1 <= k <= MAX_NODES:
        raise MLEError(
            f"n_quadrature={k}: the number of adaptive Gauss-Hermite nodes must be between 1 "
            f"(the Laplace approximation) and {MAX_NODES}; 10 to 25 nodes give the integral to "
            "many digits for a scalar random effect.",
            cli=f"--n-quadrature {k}: give 1 (Laplace) to {MAX_NODES} nodes; 10 to 25 give the "
                "integral to many digits.")
    return k


def method_text(n_nodes: int) -> str:
    """How the random effects were integrated out, as results and JSON record it."""
    return (f"adaptive Gauss-Hermite, {n_nodes} node" + ("s" if n_nodes != 1 else "")
            + (" (= the Laplace approximation)" if n_nodes == 1 else ""))


class _Nodes:
    __slots__ = ("f", "grad", "x")


class AdaptiveQuadrature:
    """Negative AGQ marginal log-likelihood (see module docstring); wraps a Laplace objective.

    Everything but the value, gradient, Hessian, notes and the random-effects report is the
    Laplace objective's (parameter layout, conditional modes, inner Newton, data).
    """

    def __init__(self, laplace, n_nodes: int):
        self.laplace = laplace
        self.n_nodes = int(n_nodes)
        _check_scalar(laplace, self.n_nodes)
        t, w = np.polynomial.hermite.hermgauss(self.n_nodes)
        self._t = t
        # log of the node weights relative to one node: w_k e^{t_k²} / √π (exactly 0 for K = 1)
        self._lw = np.zeros(1) if self.n_nodes == 1 else np.log(w) - 0.5 * math.log(math.pi) + t**2
        self.method = method_text(self.n_nodes)
        self._group_key = None
        self._group_of = None
        self._cache: OrderedDict = OrderedDict()

    def __getattr__(self, name):
        if name == "laplace":  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self.laplace, name)

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(n.replace("by the Laplace approximation",
                               f"by adaptive Gauss-Hermite quadrature ({self.n_nodes} nodes per "
                               "group, centred and scaled by the conditional modes)")
                     for n in self.laplace.notes)

    # --------------------------------------------------------------- groups
    def _groups(self) -> np.ndarray:
        """Group of each term of the joint log-density (-1: touches no random effect)."""
        lap = self.laplace
        st = lap.structure  # probes the data again when they changed
        if st is not self._group_key:
            from mle_ppl._src.engine.re_structure import incidence

            if st.max_block > 1:
                raise ModelError(_coupled(lap))
            x = lap.x0()

            def terms(u):
                return lap._fn_terms(np.concatenate([x, u]))

            Z = incidence(terms, lap._u0(), lap.u_layout, np.random.default_rng(0)).tocsr()
            if np.any(np.diff(Z.indptr) > 1):
                raise ModelError(_coupled(lap))
            g = np.full(Z.shape[0], -1, dtype=np.int64)
            rows = np.repeat(np.arange(Z.shape[0]), np.diff(Z.indptr))
            g[rows] = Z.indices
            self._group_of = g
            self._group_key = st
            self._cache.clear()
        return self._group_of

    def _per_group(self, terms: np.ndarray, groups: np.ndarray, G: int) -> np.ndarray:
        sel = groups >= 0
        return np.bincount(groups[sel], weights=np.asarray(terms, dtype=float)[sel], minlength=G)

    # ------------------------------------------------------------ evaluation
    def _evaluate(self, x: np.ndarray, need_grad: bool) -> _Nodes:
        x = np.asarray(x, dtype=float)
        groups = self._groups()  # (clears the cache when the data changed)
        key = x.tobytes()
        out = self._cache.get(key)
        if out is not None and (out.grad is not None or not need_grad):
            return out
        from scipy.special import logsumexp

        lap = self.laplace
        if need_grad:
            f_lap, g_lap = lap.value_and_grad(x)
        else:
            f_lap, g_lap = lap.value(x), None
        out = _Nodes()
        out.x, out.grad = x, None
        if not np.isfinite(f_lap):
            out.f = np.inf
            if need_grad:
                out.grad = np.full(lap.n_params, np.nan)
            return out
        if self.n_nodes == 1:
            out.f = float(f_lap)
            out.grad = None if g_lap is None else np.asarray(g_lap, dtype=float)
            self._store(key, out)
            return out
        s = lap._inner(x)
        h = _diagonal(s.blocks)
        G = h.size
        sd = np.sqrt(2.0 / h)
        z0 = np.concatenate([x, s.u])
        ell0 = self._per_group(lap._fn_terms(z0), groups, G)
        zs = []
        logits = np.empty((self.n_nodes, G))
        with np.errstate(over="ignore", invalid="ignore"):
            for k, t in enumerate(self._t):
                zk = np.concatenate([x, s.u + sd * t])
                zs.append(zk)
                logits[k] = self._lw[k] + self._per_group(lap._fn_terms(zk), groups, G) - ell0
        logits[~np.isfinite(logits)] = -np.inf  # a node outside the support adds nothing
        corr = logsumexp(logits, axis=0)
        if not np.all(np.isfinite(corr)):
            out.f = np.inf
            if need_grad:
                out.grad = np.full(lap.n_params, np.nan)
            return out
        out.f = float(f_lap - np.sum(corr))
        if need_grad:
            pi = np.exp(logits - corr)  # (K, G): the nodes' shares of each group's integral
            out.grad = np.asarray(g_lap, dtype=float) - self._grad_correction(
                x, s, z0, zs, pi, h, sd, groups)
        self._store(key, out)
        return out

    def _store(self, key, out) -> None:
        self._cache[key] = out
        self._cache.move_to_end(key)
        if len(self._cache) > 8:
            self._cache.popitem(last=False)

    def _grad_correction(self, x, s, z0, zs, pi, h, sd, groups) -> np.ndarray:
        """Gradient in x of Σ_g c_g (module docstring)."""
        lap = self.laplace
        p = lap.n_params
        fn = _weighted_grad(lap)
        grouped = groups >= 0
        G1 = np.zeros(p)
        a = np.zeros(h.size)
        b = np.zeros(h.size)
        for k, zk in enumerate(zs):
            c = np.where(grouped, pi[k][np.clip(groups, 0, None)], 0.0)
            gk = fn(zk, c)
            G1 += gk[:p]
            a += gk[p:]
            b += self._t[k] * gk[p:]
        G1 -= fn(z0, grouped.astype(float))[:p]
        e = -b * sd / (2.0 * h)
        st = lap.structure
        M = st.scatter([2.0 * e[idx][..., None] for idx, _, _ in st.buckets])
        gT = lap._grad_T(z0, st.V, M)  # gradient of Σ_g e_g H_gg in (x, u)
        return G1 + gT[:p] + lap._mixed_theta(z0, (a + gT[p:]) / h)

    def value(self, x: np.ndarray) -> float:
        f = self._evaluate(x, need_grad=False).f
        return float(f) if np.isfinite(f) else np.inf

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        out = self._evaluate(x, need_grad=True)
        if not np.isfinite(out.f):
            return np.inf, np.full(self.laplace.n_params, np.nan)
        return float(out.f), out.grad.copy()

    def hessian(self, x: np.ndarray) -> np.ndarray:
        """Central differences of the exact gradient (step ``FD_STEP * max(1, |x_j|)``)."""
        H = central_hessian(lambda z: self.value_and_grad(z)[1], x, FD_STEP)
        self.value_and_grad(np.asarray(x, dtype=float))  # the inner warm start returns to x
        return H

    # ------------------------------------------------------------ after the fit
    def settle_boundary(self, res, optimizer, options):
        """See :func:`~mle_ppl._src.engine.re_fit.settle_boundary` (on the AGQ marginal)."""
        from mle_ppl._src.engine.re_fit import settle_boundary

        return settle_boundary(self, res, optimizer, options)

    def random_effects_report(self, x, cov_u, fixed=()):
        """The Laplace objective's report (conditional modes and SDs), with this method."""
        from mle_ppl._src.engine.re_fit import random_effects_report

        rep = random_effects_report(self, x, cov_u, fixed)
        return replace(rep, method=self.method, notes=rep.notes + (
            "modes and sd_conditional are the conditional modes and curvatures that centre "
            "and scale the quadrature nodes (as glmer's ranef).",))


def _diagonal(blocks) -> np.ndarray:
    """Diagonal of a block-diagonal ``H`` whose blocks are all 1 x 1."""
    q = blocks.structure.layout.size
    h = np.empty(q)
    for (idx, _, _), B in zip(blocks.structure.buckets, blocks.blocks, strict=True):
        h[idx[:, 0]] = B[:, 0, 0]
    return h


_WEIGHTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weighted_grad(lap):
    """Compiled ``(z, c) -> ∂(Σ_i c_i termᵢ)/∂z`` for the Laplace objective's graph (once)."""
    fn = _WEIGHTED.get(lap)
    if fn is None:
        import pytensor.tensor as pt

        c = pt.vector("c", dtype=lap._z.dtype)
        fn = lap._fn([lap._z, c], pt.grad(pt.sum(lap._terms * c), lap._z))
        _WEIGHTED[lap] = fn
    return fn


def _coupled(lap) -> str:
    name = lap.random_names[0]
    return (f"n_quadrature= integrates one scalar random effect per group, but some terms of the "
            f"likelihood involve several groups of {name!r} (multiple membership), so its "
            "groups' integrals do not separate. Fit with the Laplace approximation "
            "(n_quadrature=None).")


def _check_scalar(lap, n_nodes: int) -> None:
    """Refuse models whose marginal is not a product of one-dimensional integrals."""
    names = lap.random_names
    shapes = lap.u_layout.shapes
    if len(names) != 1:
        raise ModelError(
            f"n_quadrature={n_nodes} needs one scalar random effect per group of one grouping "
            f"factor; this model has {len(names)} random-effect variables "
            f"({', '.join(names)}: several grouping factors, nested or crossed), whose "
            "integrals do not separate into one-dimensional ones. Fit it with the Laplace "
            "approximation (n_quadrature=None).",
            cli=f"--n-quadrature needs one scalar random effect per group; this model has "
                f"{len(names)} random-effect variables ({', '.join(names)}). Drop "
                "--n-quadrature to use the Laplace approximation.")
    shape = shapes[0]
    if len(shape) > 1 and int(np.prod(shape[1:], dtype=int)) > 1:
        k = int(np.prod(shape[1:], dtype=int))
        raise ModelError(
            f"n_quadrature={n_nodes} needs a scalar random effect per group; {names[0]!r} has "
            f"{k} entries per group (shape {shape}: a vector random effect, e.g. correlated "
            f"intercepts and slopes), whose integral is {k}-dimensional. Fit it with the "
            "Laplace approximation (n_quadrature=None).",
            cli=f"--n-quadrature needs a scalar random effect per group; {names[0]!r} has {k} "
                "entries per group (a vector random effect). Drop --n-quadrature to use the "
                "Laplace approximation.")


_OBJECTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def quadrature_for(laplace, n_nodes: int) -> AdaptiveQuadrature:
    """The cached AGQ objective with ``n_nodes`` nodes over a (cached) Laplace objective."""
    per = _OBJECTS.setdefault(laplace, {})
    obj = per.get(n_nodes)
    if obj is None:
        obj = AdaptiveQuadrature(laplace, n_nodes)
        obj._groups()  # refuse coupled groups before the fit starts
        per[n_nodes] = obj
    return obj

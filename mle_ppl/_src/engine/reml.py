"""REML for Gaussian linear mixed models: the fixed effects integrated out with the random effects.

The restricted (REML) likelihood of the variance parameters θ is the marginal likelihood with the
fixed effects β integrated out under flat priors, ``p_R(y | θ) = ∫∫ p(y | β, u, θ) p(u | θ) du dβ``.
For a Gaussian linear mixed model the integrand is Gaussian in ``(u, β)``, so the Laplace-marginal
objective (:mod:`~mle_ppl._src.engine.laplace`) with β moved into the integrated set computes it
exactly; it equals statsmodels' ``MixedLM(reml=True)`` log-likelihood, constant included.

The result still reports β, so :class:`RemlObjective` lays out the flat parameters as an ML fit
does, ``x = (β, θ)`` in declaration order, and its value is

    F(β, θ) = -log p_R(y | θ) + ½ (β - β̂(θ))ᵀ K(θ) (β - β̂(θ)),   K = XᵀV⁻¹X = [H⁻¹]_ββ⁻¹,

with β̂(θ) the GLS estimate (the β part of the joint conditional mode). ``-F`` is statsmodels'
REML log-likelihood with β as a parameter (``ℓ(β, θ) - ½ log det XᵀV⁻¹X + (p/2) log 2π``): its
maximum over β is the REML criterion, at β̂(θ̂) (GLS at the REML variance components), and its
inverse Hessian gives the covariance statsmodels reports, ``Var β̂ = K⁻¹ + B Σ_θ Bᵀ``
(``B = dβ̂/dθ``; lme4's ``vcov`` is ``K⁻¹`` alone, without the uncertainty of θ̂). Profiles in
θ are profiles of the REML criterion. The gradient is exact: with ``w = H⁻¹ [0; K d]``, the joint
point ``(û, β̂) + w`` is the conditional mode of u given β, and by the envelope theorem
``∂F/∂θ = ∇(-log p_R) + ∂L/∂θ (at the joint mode) - ∂L/∂θ (at the mode given β)``.

REML is offered for Normal observations whose mean is linear in β and in the random effects, with
Normal/MvNormal random effects: checked on the compiled joint log-density (quadratic in (u, β),
:func:`_check_quadratic`). Without random effects it is ordinary least squares with the unbiased
variance RSS/(n − p).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np
import pymc as pm
import scipy.linalg as sla
from pytensor.graph.traversal import ancestors

from mle_ppl._src.engine.likelihood import DEFAULT_MODE, FLAT_OPS, _labels
from mle_ppl._src.engine.linalg import central_hessian, quadratic_along
from mle_ppl._src.engine.objective import NotAvailable, ParamBlock
from mle_ppl._src.engine.random_effects import Roles, _op_name, _params
from mle_ppl._src.errors import MLEError, ModelError

#: Relative step of the central differences of the gradient that give the Hessian of F.
FD_STEP = 1e-4
#: What ``fit.random_effects.method`` says of a REML fit.
REML_METHOD = ("REML (restricted likelihood: fixed effects integrated out with the random "
               "effects under flat priors; exact for a Gaussian linear mixed model)")
_HOW = ("Fit with reml=False (maximum marginal likelihood), or write the model as a Gaussian "
        "linear mixed model: y ~ Normal(X @ beta + Z u, sigma) with Normal/MvNormal random "
        "effects u.")


def fixed_effects(model: pm.Model, roles: Roles) -> tuple[str, ...]:
    """The fixed effects β of a Gaussian (mixed) model, by name, in declaration order.

    β are the flat parameters that reach the mean of a Normal observed variable (not through a
    random effect) and neither its standard deviation nor a random effect's distribution. They
    must be unbounded (``pm.Flat``): REML integrates them over the real line.
    """
    for rv in model.observed_RVs:
        if _op_name(rv) != "NormalRV":
            dist = _op_name(rv).removesuffix("RV")
            raise ModelError(
                f"reml=True is for Gaussian linear mixed models, but observed {rv.name!r} has a "
                f"{dist} likelihood: REML (the fixed effects integrated out) is exact only for "
                f"a Normal likelihood with a mean linear in them. {_HOW}")
    random = [model[n] for n in roles.random]
    flat = [rv for rv in model.free_RVs if _op_name(rv) in FLAT_OPS and rv.name in roles.flat]
    mus = [_params(rv)[0] for rv in model.observed_RVs]
    scales = [_params(rv)[1] for rv in model.observed_RVs]
    scales += [p for rv in random for p in _params(rv)]
    in_mean = set(ancestors(mus, blockers=random))
    in_scale = set(ancestors(scales))
    both = [rv.name for rv in flat if rv in in_mean and rv in in_scale]
    if both:
        raise ModelError(
            f"reml=True: {', '.join(both)} enter(s) both the mean of the observations and a "
            "variance (the observations' sigma or a random effect's distribution), so it is "
            f"neither a fixed effect nor a variance parameter. {_HOW}")
    beta = [rv for rv in flat if rv in in_mean]
    bounded = [rv.name for rv in beta
               if _op_name(rv) != "FlatRV" or model.rvs_to_transforms.get(rv) is not None]
    if bounded:
        raise ModelError(
            f"reml=True: {', '.join(bounded)} enter(s) the mean but is bounded "
            f"({', '.join(_op_name(model[n]).removesuffix('RV') for n in bounded)}); REML "
            "integrates the fixed effects over the whole real line. Declare them pm.Flat, or "
            "fit with reml=False.")
    if not beta:
        raise ModelError(
            "reml=True: no fixed effect found (a pm.Flat parameter in the mean of the "
            "observations); REML differs from maximum likelihood only by integrating the fixed "
            "effects out. Fit with reml=False.")
    return tuple(rv.name for rv in beta)


def _check_quadratic(inner, beta_u: np.ndarray, names: dict[int, str]) -> None:
    """The joint log-density is quadratic in (u, β) (Gaussian, mean linear in both), else a
    ModelError naming the fixed effect or the random effects that are not."""
    x = inner.x0()
    u0 = inner._u0()
    z0 = np.concatenate([x, u0])
    k = len(x)

    def L(z):
        with np.errstate(all="ignore"):
            return float(inner._fn_vg(z)[0])

    def quadratic(v) -> bool:
        return quadratic_along(L, z0, v)

    rng = np.random.default_rng(0)
    for j, pos in enumerate(beta_u):
        v = np.zeros(len(z0))
        v[k + pos] = 0.5 + abs(u0[pos])
        if not quadratic(v):
            raise ModelError(
                f"reml=True: the mean of the observations is not linear in the fixed effect "
                f"{names[j]} (or the likelihood is not Normal in it): REML integrates the fixed "
                f"effects out exactly only when the mean is linear in them. {_HOW}")
    u_only = np.setdiff1d(np.arange(len(u0)), beta_u)
    for which, idx in (("random effects", u_only), ("fixed and random effects jointly",
                                                    np.arange(len(u0)))):
        if not len(idx):
            continue
        v = np.zeros(len(z0))
        v[k + idx] = rng.uniform(0.3, 0.7, len(idx)) * rng.choice([-1.0, 1.0], len(idx))
        if not quadratic(v):
            raise ModelError(
                f"reml=True: the joint log-density is not quadratic in the {which} (a mean not "
                "linear in them, a product of a fixed and a random effect, or non-Normal "
                f"random effects), so REML is not exact here. {_HOW}")


class _GLS:
    __slots__ = ("u", "C", "cho")


class RemlObjective:
    """Negative REML log-likelihood with β as a parameter (see the module docstring).

    Implements the objective protocol (:mod:`~mle_ppl._src.engine.objective`) over ``(β, θ)``;
    the restricted likelihood itself is ``inner``, a Laplace-marginal objective over θ with the
    random effects and β integrated out.
    """

    criterion = "REML"

    def __init__(self, model: pm.Model, inner, beta: tuple[str, ...], *, notes=()):
        self.model = model
        self.inner = inner
        self.mode = inner.mode
        self.likelihood_only = inner.likelihood_only
        self.fixed_effect_names = beta
        coords = {k: v for k, v in model.coords.items() if v is not None}
        inner_blocks = {b.name: b for b in inner.blocks}
        layout = inner.u_layout
        blocks, start, beta_x, theta_x, beta_u = [], 0, [], [], []
        for rv in model.free_RVs:
            if rv.name in beta:
                shape = tuple(int(s) for s in layout.shapes[layout.names.index(rv.name)])
                dims = tuple(model.named_vars_to_dims.get(rv.name) or ())
                b = ParamBlock(name=rv.name, value_name=model.rvs_to_values[rv].name,
                               shape=shape, start=start, transform=None, lower=-np.inf,
                               upper=np.inf, dims=dims, labels=_labels(
                                   rv.name, shape, tuple(d for d in dims if d is not None),
                                   coords))
                off = layout.offsets[layout.names.index(rv.name)]
                beta_u.extend(range(off, off + b.size))
                beta_x.extend(range(start, start + b.size))
            elif rv.name in inner_blocks:
                b = dataclasses.replace(inner_blocks[rv.name], start=start)
                theta_x.extend(range(start, start + b.size))
            else:
                continue  # a random effect
            blocks.append(b)
            start += b.size
        self.blocks = tuple(blocks)
        self.n_params = start
        self.labels = tuple(lab for b in blocks for lab in b.labels)
        self._beta_x, self._theta_x = np.array(beta_x, int), np.array(theta_x, int)
        self._beta_u = np.array(beta_u, int)
        self._u_only = np.setdiff1d(np.arange(layout.size), self._beta_u)
        self.bounded = np.zeros(self.n_params, dtype=bool)
        self.bounded[self._theta_x] = inner.bounded
        self.bounded.flags.writeable = False
        self.variance_coords = np.zeros(self.n_params, dtype=bool)
        self.variance_coords[self._theta_x] = inner.variance_coords
        self.random_names = tuple(n for n in inner.random_names if n not in beta)
        self.u_labels = tuple(inner.u_labels[i] for i in self._u_only)
        self.observed_names = inner.observed_names
        self.observed_ops = inner.observed_ops
        self.deterministic_names = inner.deterministic_names
        self.notes = tuple(notes)
        self._gls_cache: OrderedDict = OrderedDict()

    # ------------------------------------------------------------------ pieces
    def _gls(self, xt: np.ndarray) -> _GLS | None:
        """Joint mode (û, β̂) at θ, ``H⁻¹[:, β]`` and the Cholesky factor of ``K⁻¹``."""
        key = xt.tobytes()
        if key in self._gls_cache:
            self._gls_cache.move_to_end(key)
            return self._gls_cache[key]
        if not np.isfinite(self.inner.value(xt)):
            return None
        u, blocks = self.inner.modes(xt)
        q, p = len(u), len(self._beta_u)
        C = np.empty((q, p))
        for j, pos in enumerate(self._beta_u):
            e = np.zeros(q)
            e[pos] = 1.0
            C[:, j] = blocks.solve(e)
        P = C[self._beta_u]
        try:
            cho = sla.cho_factor(0.5 * (P + P.T), lower=True)
        except np.linalg.LinAlgError:
            return None
        g = _GLS()
        g.u, g.C, g.cho = u, C, cho
        self._gls_cache[key] = g
        if len(self._gls_cache) > 8:
            self._gls_cache.popitem(last=False)
        return g

    def _split(self, x):
        x = np.asarray(x, dtype=float)
        return x[self._beta_x], np.ascontiguousarray(x[self._theta_x])

    def _point(self, x) -> tuple[np.ndarray, np.ndarray | None, _GLS | None]:
        """The joint conditional mode of (u, β) given β = x's β: ``z = (θ, (û, β̂) + w)``."""
        xb, xt = self._split(x)
        g = self._gls(xt)
        if g is None:
            return xt, None, None
        w = g.C @ sla.cho_solve(g.cho, xb - g.u[self._beta_u])
        return xt, g.u + w, g

    # ------------------------------------------------------------- protocol
    def x0(self) -> np.ndarray:
        """θ from the model's initial point, β at its GLS estimate there."""
        xt = self.inner.x0()
        x = np.zeros(self.n_params)
        x[self._theta_x] = xt
        g = self._gls(xt)
        if g is not None:
            x[self._beta_x] = g.u[self._beta_u]
        return x

    def value(self, x: np.ndarray) -> float:
        return self.value_and_grad(x)[0]

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        xb, xt = self._split(x)
        f, gt = self.inner.value_and_grad(xt)
        g = self._gls(xt) if np.isfinite(f) else None
        if g is None:
            return np.inf, np.full(self.n_params, np.nan)
        d = xb - g.u[self._beta_u]
        Kd = sla.cho_solve(g.cho, d)
        grad = np.zeros(self.n_params)
        grad[self._theta_x] = gt
        if np.any(d):
            w = g.C @ Kd
            k = len(xt)
            gz_hat = self.inner._fn_vg(np.concatenate([xt, g.u]))[1]
            gz_w = self.inner._fn_vg(np.concatenate([xt, g.u + w]))[1]
            grad[self._theta_x] += np.asarray(gz_hat[:k]) - np.asarray(gz_w[:k])
            grad[self._beta_x] = Kd
        return float(f + 0.5 * d @ Kd), grad

    def hessian(self, x: np.ndarray) -> np.ndarray:
        """Central differences of the exact gradient (step ``FD_STEP * max(1, |x_j|)``)."""
        H = central_hessian(lambda z: self.value_and_grad(z)[1], x, FD_STEP)
        self.value_and_grad(np.asarray(x, dtype=float))  # the inner warm start returns to x
        return H

    @property
    def discrete_outcome(self) -> bool:
        return False

    def count_obs(self, x: np.ndarray | None = None) -> int:
        return self.inner.count_obs()

    def pointwise(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per-observation log-likelihood conditional on the modes of u given β and θ."""
        xt, u, _ = self._point(x)
        if u is None:
            raise MLEError("the REML objective is not finite at this point.")
        out = self.inner._fn_pointwise(np.concatenate([xt, u]))
        return {n: np.asarray(v) for n, v in zip(self.observed_names, out, strict=True)}

    def scores(self, x: np.ndarray) -> np.ndarray:
        raise NotAvailable("per-row scores do not exist for a restricted (REML) likelihood "
                           "(rows in one group are not independent).")

    def constrained_and_jacobian(self, x):
        xt, u, _ = self._point(x)
        if u is None:
            raise MLEError("the REML objective is not finite at this point.")
        inner = self.inner
        out = list(inner._fn_constrained(np.concatenate([xt, u])))
        k = len(xt)
        J = np.zeros((self.n_params, self.n_params))
        J[self._beta_x, self._beta_x] = 1.0
        if any(b.transform for b in inner.blocks):
            J[np.ix_(self._theta_x, self._theta_x)] = np.asarray(out.pop(), dtype=float)[:, :k]
        else:
            J[self._theta_x, self._theta_x] = 1.0
        names = ([b.name for b in inner.blocks] + list(inner.random_names)
                 + list(inner.deterministic_names))
        return {n: np.asarray(v) for n, v in zip(names, out, strict=True)}, J

    def constrained(self, x):
        return self.constrained_and_jacobian(x)[0]

    def constrained_flat(self, x):
        vals = self.constrained(x)
        return np.concatenate([np.asarray(vals[b.name], dtype=float).ravel()
                               for b in self.blocks])

    def constrained_jacobian(self, x):
        return self.constrained_and_jacobian(x)[1]

    def unconstrain(self, values) -> np.ndarray:
        x = np.zeros(self.n_params)
        x[self._theta_x] = self.inner.unconstrain(values)
        for b in self.blocks:
            if b.name in self.fixed_effect_names:
                x[b.slice] = np.asarray(values[b.name], dtype=float).ravel()
        return x

    @property
    def shared_inputs(self) -> tuple:
        return self.inner.shared_inputs

    def snapshot(self) -> tuple:
        return self.inner.snapshot()

    @property
    def observed_data(self) -> dict[str, np.ndarray]:
        return self.inner.observed_data

    def current_observed(self) -> dict[str, np.ndarray]:
        return self.inner.current_observed()

    # ------------------------------------------------------------ after the fit
    def settle_boundary(self, res, optimizer, options):
        """See :func:`~mle_ppl._src.engine.re_fit.settle_boundary`."""
        from mle_ppl._src.engine.re_fit import settle_boundary

        return settle_boundary(self, res, optimizer, options)

    def random_effects_report(self, x, cov_u, fixed=()):
        """Modes of the random effects (β dropped from the inner report); None without any."""
        if not len(self._u_only):
            return None
        from mle_ppl._src.engine.re_fit import random_effects_report

        t = self._theta_x
        pos = {int(i): j for j, i in enumerate(t)}
        rep = random_effects_report(self.inner, np.ascontiguousarray(np.asarray(x)[t]),
                                    np.asarray(cov_u)[np.ix_(t, t)],
                                    tuple(pos[int(i)] for i in fixed))
        keep = self._u_only
        return dataclasses.replace(
            rep, names=self.random_names, labels=self.u_labels, mode=rep.mode[keep],
            std_err=rep.std_err[keep], sd_conditional=rep.sd_conditional[keep],
            method=REML_METHOD, notes=rep.notes + (
                "REML: the modes are the BLUPs at the GLS fixed effects; sd_conditional is "
                "given θ̂ with the fixed effects integrated out, std_err adds the uncertainty "
                "of θ̂.",))

    def warn_inner(self, x: np.ndarray, converged: bool) -> list[tuple[type, str]]:
        return self.inner.warn_inner(self._split(x)[1], converged)

    def fixed_design(self) -> dict[str, np.ndarray]:
        """The fixed-effects design X (rows: observations, stacked; one column per β label):
        the mean at ``β = e_j`` minus the mean at ``β = 0``, random effects at 0 (the mean is
        linear in both). Compiled on first use (likelihood-ratio tests compare it)."""
        if getattr(self, "_design", None) is not None:
            return self._design
        model = self.model
        mus = model.replace_rvs_by_values([_params(rv)[0] for rv in model.observed_RVs])
        fn = pm.pytensorf.compile(model.value_vars, [m.ravel() for m in mus],
                                  mode=self.mode, on_unused_input="ignore")
        point = model.initial_point()
        for rv in model.free_RVs:
            if rv.name in self.fixed_effect_names or rv.name in self.random_names:
                name = model.rvs_to_values[rv].name
                point[name] = np.zeros_like(point[name])

        def mean(pt_):
            return np.concatenate([np.asarray(m, dtype=float).ravel()
                                   for m in fn(*[pt_[v.name] for v in model.value_vars])])

        base = mean(point)
        cols = {}
        for b in self.blocks:
            if b.name not in self.fixed_effect_names:
                continue
            name = b.value_name
            for i, lab in enumerate(b.labels):
                pt_ = dict(point)
                e = np.zeros(b.size)
                e[i] = 1.0
                pt_[name] = e.reshape(b.shape)
                cols[lab] = mean(pt_) - base
        self._design = cols
        return cols


def check_comparable(fits, names, *, what: str) -> None:
    """REML fits are compared only with REML fits with the same fixed effects (same labels and
    design); ML and REML fits never with each other. An MLEError otherwise."""
    crit = [getattr(f, "criterion", "ML") for f in fits]
    if len(set(crit)) > 1:
        i = crit.index("REML")
        j = crit.index("ML")
        raise MLEError(
            f"{names[i]!r} is a REML fit and {names[j]!r} an ML fit: their log-likelihoods are "
            f"different criteria and cannot be compared ({what}). Fit both with the same "
            "reml= setting (reml=False to compare fixed effects).")
    if crit[0] != "REML":
        return
    ref = fits[0].likelihood.fixed_design()
    for f, n in zip(fits[1:], names[1:], strict=True):
        X = f.likelihood.fixed_design()
        same = list(X) == list(ref) and all(
            X[k].shape == ref[k].shape and np.allclose(X[k], ref[k], rtol=1e-10, atol=1e-12)
            for k in ref)
        if not same:
            raise MLEError(
                f"{names[0]!r} and {n!r} are REML fits with different fixed effects "
                f"({', '.join(ref)} vs {', '.join(X)}, or different columns behind them): REML "
                "likelihoods with different fixed effects are not comparable (each integrates "
                f"its own fixed effects out), so {what} is refused. Refit both with "
                "reml=False (maximum likelihood) to compare fixed effects, as lme4's anova does.")


def reml_for(model: pm.Model, roles: Roles, *, likelihood_only: bool,
             mode: str = DEFAULT_MODE) -> RemlObjective:
    """The REML objective of ``model`` (random effects ``roles.random``, possibly none)."""
    from mle_ppl._src.engine.laplace import laplace_for

    beta = fixed_effects(model, roles)
    random = tuple(rv.name for rv in model.free_RVs if rv.name in beta + roles.random)
    inner_roles = Roles(flat=tuple(n for n in roles.flat if n not in beta), random=random,
                        priors=roles.priors, detected=roles.detected)
    inner = laplace_for(model, inner_roles, likelihood_only=likelihood_only, mode=mode)
    layout = inner.u_layout
    beta_u, names = [], {}
    for name in beta:
        off = layout.offsets[layout.names.index(name)]
        size = int(np.prod(layout.shapes[layout.names.index(name)], dtype=int))
        for i in range(size):
            names[len(beta_u)] = name if size == 1 else f"{name}[{i}]"
            beta_u.append(off + i)
    _check_quadratic(inner, np.array(beta_u, int), names)
    notes = tuple(n for n in inner.notes if not n.startswith("random effects "))
    what = (f"random effects {', '.join(roles.random)} and " if roles.random else "")
    notes += (
        f"REML: {what}fixed effects {', '.join(beta)} are integrated out (flat priors); the "
        f"variance parameters maximise the restricted likelihood, and the fixed effects are "
        "their GLS estimates at those values. loglik is the restricted log-likelihood (lme4 "
        "prints -2 x loglik as its 'REML criterion'); AIC and BIC count "
        "all parameters (lme4's convention): compare them, and likelihood-ratio tests, only "
        "between REML fits with the same fixed effects.",)
    if not roles.random:
        notes += ("REML without random effects is ordinary least squares with the unbiased "
                  "variance sigma² = RSS/(n − p).",)
    return RemlObjective(model, inner, beta, notes=notes)

"""GLMMs: adaptive Gauss-Hermite quadrature (``n_quadrature=``) and the Laplace approximation,
against references computed here with NumPy/SciPy only (nothing from the engine):

- the exact marginal per group by ``scipy.integrate.quad`` of the integrand around its mode;
- the Laplace approximation by a Newton search per group with analytic derivatives;
- for the maximum, a fixed trapezoid grid of each group's integral, maximised by SciPy;
- for correlated random intercepts and slopes, a 2-D tensor Gauss-Hermite rule centred at each
  group's mode and scaled by the Cholesky factor of its curvature;
- lme4's ``cbpp`` data (tests/data/cbpp.csv) against glmer's and glmmML's published values.

Bernoulli, Poisson and negative binomial random intercepts; Poisson random slopes.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import pytest
from scipy import integrate, optimize, special, stats
from scipy.special import gammaln

import mle_ppl
from mle_ppl import MLEError, ModelError
from mle_ppl._src.engine.fit import objective_for

DATA = Path(__file__).parent / "data"


# ----------------------------------------------------------------- data and models
def _simulate(fam: str, seed: int):
    """Random-intercept data: G groups, a covariate x, u_g ~ N(0, sd_u)."""
    rng = np.random.default_rng(seed)
    G, m = {"poisson": (15, 20), "bernoulli": (30, 6), "negbin": (20, 10)}[fam]
    g = np.repeat(np.arange(G), m)
    x = rng.normal(size=G * m)
    sd = {"poisson": 0.5, "bernoulli": 1.5, "negbin": 0.6}[fam]
    eta = {"poisson": 0.3, "bernoulli": -0.2, "negbin": 1.0}[fam] + 0.5 * x
    eta = eta + rng.normal(0, sd, G)[g]
    if fam == "poisson":
        y = rng.poisson(np.exp(eta))
    elif fam == "bernoulli":
        y = rng.binomial(1, special.expit(eta))
    else:
        alpha = 3.0
        mu = np.exp(eta)
        y = rng.negative_binomial(alpha, alpha / (alpha + mu))
    return y, x, g, G


def _model(fam, y, x, g, G):
    with pm.Model(coords={"group": np.arange(G)}) as m:
        a = pm.Flat("a")
        b = pm.Flat("b")
        sd_u = pm.HalfFlat("sd_u")
        u = pm.Normal("u", 0, sd_u, dims="group")
        eta = a + b * x + u[g]
        if fam == "poisson":
            pm.Poisson("y", pm.math.exp(eta), observed=y)
        elif fam == "bernoulli":
            pm.Bernoulli("y", logit_p=eta, observed=y)
        else:
            alpha = pm.HalfFlat("alpha")
            pm.NegativeBinomial("y", mu=pm.math.exp(eta), alpha=alpha, observed=y)
    return m


def _rows(fam, y, eta, theta):
    """log p(y | eta) per row and its first two derivatives in eta (NumPy; broadcasts)."""
    if fam == "poisson":
        mu = np.exp(eta)
        return y * eta - mu - gammaln(y + 1), y - mu, -mu
    if fam == "bernoulli":
        p = special.expit(eta)
        return y * eta - np.logaddexp(0, eta), y - p, -p * (1 - p)
    alpha = theta[3]
    mu = np.exp(eta)
    lp = (gammaln(y + alpha) - gammaln(alpha) - gammaln(y + 1) + alpha * np.log(alpha)
          + y * eta - (y + alpha) * np.log(alpha + mu))
    return lp, y - (y + alpha) * mu / (alpha + mu), -(y + alpha) * mu * alpha / (alpha + mu) ** 2


def _modes(fam, theta, y, x, g, G):
    """Each group's mode of h_g(u) = sum log p(y | a + b x + u) + log N(u; 0, sd), and -h''."""
    eta0, sd = theta[0] + theta[1] * x, theta[2]
    u = np.zeros(G)
    for _ in range(200):
        _, d1, d2 = _rows(fam, y, eta0 + u[g], theta)
        grad = np.bincount(g, d1, G) - u / sd**2
        curv = -np.bincount(g, d2, G) + 1 / sd**2
        u += grad / curv
        if np.abs(grad / curv).max() < 1e-14:
            break
    _, _, d2 = _rows(fam, y, eta0 + u[g], theta)
    return u, -np.bincount(g, d2, G) + 1 / sd**2


def _h(fam, theta, y, x, g, j, u):
    sel = g == j
    lp = _rows(fam, y[sel], theta[0] + theta[1] * x[sel] + u, theta)[0]
    return float(np.sum(lp) + stats.norm.logpdf(u, 0, theta[2]))


def _laplace_ref(fam, theta, y, x, g, G):
    u, curv = _modes(fam, theta, y, x, g, G)
    return sum(_h(fam, theta, y, x, g, j, u[j]) for j in range(G)) + np.sum(
        0.5 * np.log(2 * np.pi / curv))


def _quad_ref(fam, theta, y, x, g, G):
    """The exact marginal log-likelihood: scipy.integrate.quad per group (relative 1e-13) on
    [mode - 40 w - 15 sd_u, mode + 40 w + 15 sd_u] (w the conditional SD; beyond, the integrand
    is below e^-100 of its peak)."""
    u, curv = _modes(fam, theta, y, x, g, G)
    total = 0.0
    for j in range(G):
        top = _h(fam, theta, y, x, g, j, u[j])
        half = 40 / np.sqrt(curv[j]) + 15 * theta[2]
        val, err = integrate.quad(lambda v, j=j, top=top: np.exp(_h(fam, theta, y, x, g, j, v)
                                                                  - top),
                                  u[j] - half, u[j] + half, points=[u[j]], epsabs=0,
                                  epsrel=1e-13, limit=400)
        assert err < 1e-11 * val
        total += top + np.log(val)
    return total


def _grid_ref(fam, theta, y, x, g, G, n_grid=1201):
    """The marginal log-likelihood by the trapezoid rule on a fixed grid of 1201 points over
    [-15 sd_u, 15 sd_u] per group (a smooth, light-tailed integrand whose width is > 8 grid
    steps: error far below 1e-10 here, checked against quad in the test)."""
    sd = theta[2]
    z = np.linspace(-15, 15, n_grid)
    U = sd * z
    lp = _rows(fam, y[:, None], (theta[0] + theta[1] * x)[:, None] + U[None, :], theta)[0]
    onehot = (g[None, :] == np.arange(G)[:, None]).astype(float)
    per = onehot @ lp + stats.norm.logpdf(U, 0, sd)[None, :]
    w = np.full(n_grid, sd * (z[1] - z[0]))
    w[[0, -1]] *= 0.5
    return float(np.sum(special.logsumexp(per, b=w[None, :], axis=1)))


THETA = {"poisson": {"a": 0.2, "b": 0.45, "sd_u": 0.6},
         "bernoulli": {"a": -0.1, "b": 0.6, "sd_u": 1.4},
         "negbin": {"a": 0.9, "b": 0.5, "sd_u": 0.5, "alpha": 2.5}}


def _theta(fam):
    return np.array(list(THETA[fam].values()))


# ------------------------------------------------------------------ objective at given θ
@pytest.mark.parametrize("fam", ["poisson", "bernoulli", "negbin"])
def test_quadrature_and_laplace_against_independent_integrals(fam):
    y, x, g, G = _simulate(fam, seed=3)
    m = _model(fam, y, x, g, G)
    lap = objective_for(m, likelihood_only=False, mode="auto")
    agq = objective_for(m, likelihood_only=False, mode="auto", n_quadrature=25)
    theta = _theta(fam)
    xu = lap.unconstrain(THETA[fam])
    exact = _quad_ref(fam, theta, y, x, g, G)
    laplace = _laplace_ref(fam, theta, y, x, g, G)
    # 25 adaptive nodes are the integral to ~1e-12 here; the sum over groups to 1e-8 absolute
    # (quad's own relative error is 1e-13 per group)
    assert -agq.value(xu) == pytest.approx(exact, abs=1e-8)
    # the engine's Laplace value is the independent one to rounding of sums of ~200 terms
    assert -lap.value(xu) == pytest.approx(laplace, rel=1e-11)
    # the fixed-grid reference used for the maximum below agrees with quad
    assert _grid_ref(fam, theta, y, x, g, G) == pytest.approx(exact, abs=1e-9)
    # the Laplace error is real on these small groups (it is what quadrature corrects)
    assert abs(exact - laplace) > 1e-4


@pytest.mark.parametrize("fam", ["bernoulli", "negbin"])
def test_one_node_is_laplace_bit_for_bit(fam):
    y, x, g, G = _simulate(fam, seed=4)
    m = _model(fam, y, x, g, G)
    lap = objective_for(m, likelihood_only=False, mode="auto")
    one = objective_for(m, likelihood_only=False, mode="auto", n_quadrature=1)
    xu = lap.unconstrain(THETA[fam]) + 0.05
    f1, g1 = one.value_and_grad(xu)
    f0, g0 = lap.value_and_grad(xu)
    assert f1 == f0
    assert np.array_equal(g1, g0)
    # the Hessian: differences of those gradients; the inner Newton's warm starts differ along
    # the way, so equal to the inner optimum's precision (1e-10 of u), not bit for bit
    np.testing.assert_allclose(one.hessian(xu), lap.hessian(xu), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("fam", ["poisson", "bernoulli", "negbin"])
def test_quadrature_gradient_is_exact(fam):
    y, x, g, G = _simulate(fam, seed=5)
    m = _model(fam, y, x, g, G)
    agq = objective_for(m, likelihood_only=False, mode="auto", n_quadrature=10)
    xu = agq.unconstrain(THETA[fam]) + np.linspace(-0.1, 0.1, len(THETA[fam]))
    _, grad = agq.value_and_grad(xu)
    # central differences of the value, step 1e-5: truncation ~1e-10, rounding ~1e-13/1e-5
    fd = np.array([(agq.value(xu + 1e-5 * e) - agq.value(xu - 1e-5 * e)) / 2e-5
                   for e in np.eye(len(xu))])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ the maximum
@pytest.mark.parametrize("fam", ["bernoulli", pytest.param("negbin", marks=pytest.mark.slow)])
def test_quadrature_maximum_against_grid_maximum(fam):
    y, x, g, G = _simulate(fam, seed=11)
    m = _model(fam, y, x, g, G)
    fit = mle_ppl.fit(m, n_quadrature=25)
    assert fit.converged and fit.trustworthy and not fit.warnings
    assert fit.random_effects.method == "adaptive Gauss-Hermite, 25 nodes"
    assert fit.to_dict()["random_effects"]["method"] == "adaptive Gauss-Hermite, 25 nodes"
    assert any("adaptive Gauss-Hermite quadrature (25 nodes" in n for n in fit.notes)
    attrs = fit.to_datatree()["optimizer_result"].attrs
    assert attrs["random_effects_method"] == "adaptive Gauss-Hermite, 25 nodes"
    n_pos = 2  # a, b unconstrained; the scales on the log scale

    def to_theta(t):
        return np.r_[t[:n_pos], np.exp(t[n_pos:])]

    def nll(t):
        return -_grid_ref(fam, to_theta(t), y, x, g, G)

    theta = fit.theta
    t_hat = np.r_[theta[:n_pos], np.log(theta[n_pos:])]
    ref = optimize.minimize(nll, t_hat + 0.05, method="BFGS", options={"gtol": 1e-8})
    # the engine's maximum is the exact marginal's: its log-likelihood to 1e-8, and BFGS on a
    # numerical gradient finds the same point to ~1e-5, i.e. < 1e-3 standard errors
    assert fit.loglik == pytest.approx(-nll(t_hat), abs=1e-8)
    assert -ref.fun <= fit.loglik + 1e-8
    np.testing.assert_array_less(np.abs(to_theta(ref.x) - theta), 1e-3 * fit.std_errors)
    # standard errors from the Hessian of the AGQ marginal = those of the exact marginal:
    # central second differences of the grid reference (step 1e-3: truncation ~1e-6 relative)
    k, h = len(t_hat), 1e-3
    H = np.empty((k, k))
    E = np.eye(k) * h
    for i in range(k):
        for j in range(k):
            H[i, j] = (nll(t_hat + E[i] + E[j]) - nll(t_hat + E[i] - E[j])
                       - nll(t_hat - E[i] + E[j]) + nll(t_hat - E[i] - E[j])) / (4 * h * h)
    J = np.diag(np.r_[np.ones(n_pos), theta[n_pos:]])  # d theta / d t
    se = np.sqrt(np.diag(J @ np.linalg.inv(H) @ J))
    np.testing.assert_allclose(fit.std_errors.to_numpy(), se, rtol=1e-4)
    # the Laplace fit of the same model is a different (approximate) maximum
    lap = mle_ppl.fit(m)
    assert lap.converged
    assert lap.loglik == pytest.approx(_laplace_ref(fam, lap.theta, y, x, g, G), rel=1e-10)
    assert abs(lap.loglik - fit.loglik) > 1e-4


# ------------------------------------------------------------------ random slopes (2-D)
def _slopes_data(seed=8):
    rng = np.random.default_rng(seed)
    G, m = 25, 12
    g = np.repeat(np.arange(G), m)
    x = rng.uniform(-1, 1, G * m)
    L = np.linalg.cholesky(np.array([[0.6**2, 0.5 * 0.6 * 0.4], [0.5 * 0.6 * 0.4, 0.4**2]]))
    u = rng.normal(size=(G, 2)) @ L.T
    y = rng.poisson(np.exp(0.4 + 0.3 * x + u[g, 0] + u[g, 1] * x))
    return y, x, g, G


def _slopes_model(y, x, g, G):
    with pm.Model(coords={"group": np.arange(G), "effect": ["intercept", "slope"]}) as m:
        a = pm.Flat("a")
        b = pm.Flat("b")
        sds = pm.HalfFlat("sd_u", dims="effect")
        rho = pm.Uniform("rho", -1, 1)
        off = rho * sds[0] * sds[1]
        cov = pt.stack([pt.stack([sds[0] ** 2, off]), pt.stack([off, sds[1] ** 2])])
        u = pm.MvNormal("u", mu=pt.zeros(2), cov=cov, dims=("group", "effect"))
        pm.Poisson("y", pm.math.exp(a + b * x + u[g, 0] + u[g, 1] * x), observed=y)
    return m


def _slopes_ref(theta, y, x, g, G, n_nodes):
    """Per group: Newton for the 2-D mode of h(u) = sum log Poisson + log N2(u; 0, Sigma), then
    the tensor Gauss-Hermite rule on u = mode + sqrt(2) L^-T t (H = L L', the curvature):
    log int e^h = log(2 / det L) + log sum_kl w_k w_l e^{|t|^2} e^{h(u_kl)}. One node per axis
    is the Laplace approximation."""
    a, b, s1, s2, rho = theta
    S = np.array([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]])
    Si = np.linalg.inv(S)
    t, w = np.polynomial.hermite.hermgauss(n_nodes)
    T = np.array(np.meshgrid(t, t, indexing="ij")).reshape(2, -1)  # (2, K^2)
    W = np.outer(w, w).ravel() * np.exp(np.sum(T**2, axis=0))
    total = 0.0
    for j in range(G):
        sel = g == j
        yj, xj = y[sel], x[sel]
        Zj = np.c_[np.ones(sel.sum()), xj]

        def h(U, yj=yj, xj=xj, Zj=Zj):  # U: (2, n)
            eta = a + b * xj[:, None] + Zj @ U
            return (np.sum(yj[:, None] * eta - np.exp(eta) - gammaln(yj + 1)[:, None], axis=0)
                    + stats.multivariate_normal(np.zeros(2), S).logpdf(U.T))

        u = np.zeros(2)
        for _ in range(100):
            mu = np.exp(a + b * xj + Zj @ u)
            grad = Zj.T @ (yj - mu) - Si @ u
            H = Zj.T @ (mu[:, None] * Zj) + Si
            step = np.linalg.solve(H, grad)
            u += step
            if np.abs(step).max() < 1e-14:
                break
        mu = np.exp(a + b * xj + Zj @ u)
        L = np.linalg.cholesky(Zj.T @ (mu[:, None] * Zj) + Si)
        nodes = u[:, None] + np.sqrt(2) * np.linalg.solve(L.T, T)
        total += (np.log(2.0) - np.sum(np.log(np.diag(L)))
                  + special.logsumexp(h(nodes), b=W))
    return float(total)


def test_random_slopes_laplace_against_2d_quadrature():
    y, x, g, G = _slopes_data()
    m = _slopes_model(y, x, g, G)
    lap = objective_for(m, likelihood_only=False, mode="auto")
    values = {"a": 0.35, "b": 0.25, "sd_u": np.array([0.55, 0.35]), "rho": 0.3}
    theta = np.r_[0.35, 0.25, 0.55, 0.35, 0.3]
    xu = lap.unconstrain(values)
    laplace = _slopes_ref(theta, y, x, g, G, 1)
    exact = _slopes_ref(theta, y, x, g, G, 20)
    # 20 x 20 nodes are converged: 30 x 30 changes the sum by < 1e-10
    assert _slopes_ref(theta, y, x, g, G, 30) == pytest.approx(exact, abs=1e-10)
    # the engine's Laplace value is the independent 2-D Laplace to rounding
    assert -lap.value(xu) == pytest.approx(laplace, rel=1e-11)
    # Laplace's error here: ~0.04 over 25 groups of 12 counts (reported in the README)
    assert 1e-5 < abs(exact - laplace) < 0.05
    # vector random effects have no scalar quadrature: refused by name
    with pytest.raises(ModelError, match="'u' has 2 entries per group"):
        objective_for(m, likelihood_only=False, mode="auto", n_quadrature=9)


@pytest.mark.slow  # ~60 s of CPU: compiling and fitting the MvNormal model
def test_random_slopes_laplace_fit_is_the_independent_maximum():
    y, x, g, G = _slopes_data()
    m = _slopes_model(y, x, g, G)
    fit = mle_ppl.fit(m)
    assert fit.converged and not fit.warnings
    theta = fit.theta
    assert fit.loglik == pytest.approx(_slopes_ref(theta, y, x, g, G, 1), rel=1e-10)

    def ll(t):  # on the optimizer's scale: log sds, atanh rho
        return _slopes_ref(np.r_[t[:2], np.exp(t[2:4]), np.tanh(t[4])], y, x, g, G, 1)

    t_hat = np.r_[theta[:2], np.log(theta[2:4]), np.arctanh(theta[4])]
    grad = np.array([(ll(t_hat + 1e-5 * e) - ll(t_hat - 1e-5 * e)) / 2e-5 for e in np.eye(5)])
    # a maximum of the independent Laplace marginal: gradient at the level of the differences
    np.testing.assert_array_less(np.abs(grad), 1e-5)


# ------------------------------------------------------------------ lme4's cbpp
def _cbpp_model():
    d = pd.read_csv(DATA / "cbpp.csv")
    herd, per = d.herd.to_numpy() - 1, d.period.to_numpy() - 1
    with pm.Model(coords={"herd": np.arange(1, 16), "period": [2, 3, 4]}) as m:
        a = pm.Flat("alpha")
        b = pm.Flat("beta", dims="period")
        s = pm.HalfFlat("sd_herd")
        u = pm.Normal("u", 0, s, dims="herd")
        eta = a + pm.math.concatenate([[0.0], b])[per] + u[herd]
        pm.Binomial("y", n=d["size"].to_numpy(), logit_p=eta, observed=d.incidence.to_numpy())
    return m, d


def test_cbpp_against_glmer_and_glmmml():
    """glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), binomial, cbpp)."""
    m, d = _cbpp_model()
    lap = mle_ppl.fit(m)
    agq = mle_ppl.fit(m, n_quadrature=25)
    assert lap.converged and agq.converged and not lap.warnings and not agq.warnings
    # Laplace: glmmML's fixed effects (lme4 tests/glmer-1.R, coef_m1_glmmML), to 1e-5 (its
    # optimizer's tolerance; glmer's own test compares the packages to 5e-4)
    glmmml = [-1.39853234657711, -0.992336901732793, -1.12867036466201, -1.58030977686564]
    np.testing.assert_allclose(lap.theta[:4], glmmml, atol=1e-5)
    # glmer prints logLik -92.0266 (deviance 184.0531328, lme4 issue #375); its optimizer
    # stops slightly short (fixed effects differ from glmmML's at 1e-4), ours is higher by 3e-4
    assert -184.0531328 / 2 <= lap.loglik < -184.0531328 / 2 + 5e-4
    # nAGQ = 25: glmer's fixed effects (lme4 tests/glmer-1.R, m2; glmer's tolerance 5e-4)
    glmer25 = [-1.39922533406847, -0.991407294757321, -1.12782184600404, -1.57946627431248]
    np.testing.assert_allclose(agq.theta[:4], glmer25, atol=2e-5)
    # glmer's -2 logLik with nAGQ > 1 (100.010030538022, same test) omits the saturated
    # binomial log-likelihood (lme4 issue #161); with it added back it is the marginal to 1e-8
    n, y = d["size"].to_numpy(), d.incidence.to_numpy()
    saturated = np.sum(gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)
                       + special.xlogy(y, y / n) + special.xlogy(n - y, 1 - y / n))
    assert agq.loglik == pytest.approx(-100.010030538022 / 2 + saturated, abs=1e-8)


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("bad", [0, -3, 101, 2.5, True, "9"])
def test_bad_node_counts_are_refused(bad):
    y, x, g, G = _simulate("poisson", seed=1)
    with pytest.raises(MLEError, match="n_quadrature"):
        mle_ppl.fit(_model("poisson", y, x, g, G), n_quadrature=bad)


def test_models_without_one_scalar_effect_per_group_are_refused():
    rng = np.random.default_rng(0)
    n = 120
    g1, g2 = rng.integers(0, 6, n), rng.integers(0, 5, n)
    y = rng.poisson(2.0, n)
    with pm.Model(coords={"g1": np.arange(6), "g2": np.arange(5)}) as crossed:
        a = pm.Flat("a")
        s1, s2 = pm.HalfFlat("s1"), pm.HalfFlat("s2")
        u1 = pm.Normal("u1", 0, s1, dims="g1")
        u2 = pm.Normal("u2", 0, s2, dims="g2")
        pm.Poisson("y", pm.math.exp(a + u1[g1] + u2[g2]), observed=y)
    with pytest.raises(ModelError, match=r"2 random-effect variables \(u1, u2"):
        mle_ppl.fit(crossed, n_quadrature=5)
    with pm.Model(coords={"g": np.arange(6)}) as membership:
        a = pm.Flat("a")
        s = pm.HalfFlat("s")
        u = pm.Normal("u", 0, s, dims="g")
        pm.Poisson("y", pm.math.exp(a + u[g1] + u[g1[::-1]]), observed=y)
    with pytest.raises(ModelError, match="several groups of 'u'"):
        mle_ppl.fit(membership, n_quadrature=5)
    with pm.Model() as plain:
        a = pm.Flat("a")
        pm.Poisson("y", pm.math.exp(a), observed=y)
    with pytest.raises(ModelError, match="has none"):
        mle_ppl.fit(plain, n_quadrature=5)


# ------------------------------------------------------------------ command line
def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "mle_ppl", *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.slow  # two fresh processes compile the model
def test_cli_n_quadrature():
    rc, out, err = _cli("fit", "binomial_mixed", "--n-quadrature", "15", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["random_effects"]["method"] == "adaptive Gauss-Hermite, 15 nodes"
    same = mle_ppl.fit("binomial_mixed", n_quadrature=15)
    # the same fit (JSON floats are printed with full precision)
    assert doc["loglik"] == pytest.approx(same.loglik, abs=1e-10)
    for args, fragment in ((("binomial_mixed", "--n-quadrature", "0"), "--n-quadrature"),
                           (("linear_mixed", "--n-quadrature", "3"), "u_subject")):
        rc, out, err = _cli("fit", *args)
        assert rc == 2 and out == "" and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and fragment in err, err


def test_lrt_notes_fits_integrated_differently():
    y, x, g, G = _simulate("bernoulli", seed=11)
    big = _model("bernoulli", y, x, g, G)
    with pm.Model(coords={"group": np.arange(G)}) as small:
        a = pm.Flat("a")
        sd_u = pm.HalfFlat("sd_u")
        u = pm.Normal("u", 0, sd_u, dims="group")
        pm.Bernoulli("y", logit_p=a + u[g], observed=y)
    same = mle_ppl.lrt(mle_ppl.fit(small, n_quadrature=25), mle_ppl.fit(big, n_quadrature=25))
    assert not any("differently" in n for n in same.notes)
    mixed = mle_ppl.lrt(mle_ppl.fit(small), mle_ppl.fit(big, n_quadrature=25))
    assert any("(adaptive Gauss-Hermite, 25 nodes vs laplace)" in n for n in mixed.notes)

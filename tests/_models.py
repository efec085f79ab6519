"""Small PyMC model builders shared by the engine tests (flat priors, data in pm.Data)."""

import numpy as np
import pymc as pm
import pytensor.tensor as pt


def gaussian_linear(X, y, names=None):
    """y ~ Normal(alpha + X @ beta, sigma) with flat priors."""
    names = names or [f"x{j}" for j in range(X.shape[1])]
    with pm.Model(coords={"x": names}) as m:
        Xd = pm.Data("X", X, dims=("obs", "x"))
        yd = pm.Data("y_obs", y, dims="obs")
        alpha = pm.Flat("alpha")
        beta = pm.Flat("beta", dims="x")
        sigma = pm.HalfFlat("sigma")
        pm.Normal("y", mu=alpha + Xd @ beta, sigma=sigma, observed=yd, dims="obs")
    return m


def logistic(X, y):
    """y ~ Bernoulli(logit_p = X @ beta) (no separate intercept: include a column of ones)."""
    with pm.Model() as m:
        Xd = pm.Data("X", X)
        yd = pm.Data("y_obs", y)
        beta = pm.Flat("beta", shape=X.shape[1])
        pm.Bernoulli("y", logit_p=Xd @ beta, observed=yd)
    return m


def poisson(X, y, exposure=None):
    with pm.Model() as m:
        Xd = pm.Data("X", X)
        yd = pm.Data("y_obs", y)
        beta = pm.Flat("beta", shape=X.shape[1])
        eta = Xd @ beta
        if exposure is not None:
            eta = eta + np.log(exposure)
        pm.Poisson("y", mu=pt.exp(eta), observed=yd)
    return m


def multinomial_logit(X, y, k):
    """Softmax regression with category 0 as the reference level."""
    with pm.Model() as m:
        Xd = pm.Data("X", X)
        yd = pm.Data("y_obs", y)
        beta = pm.Flat("beta", shape=(X.shape[1], k - 1))
        eta = pt.concatenate([pt.zeros((Xd.shape[0], 1)), Xd @ beta], axis=1)
        pm.Categorical("y", p=pt.special.softmax(eta, axis=-1), observed=yd)
    return m

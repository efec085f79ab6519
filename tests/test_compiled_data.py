"""Data are inputs of the compiled functions: a NumPy ``observed=`` and a ``pm.Data`` container
give the same compiled graph (no data folded in as constants), and the same numbers."""

import numpy as np
import pymc as pm
import pytest
from pytensor.tensor.variable import TensorConstant

from mle_ppl._src.engine.compiled import LIFT_MIN_SIZE
from mle_ppl._src.engine.likelihood import Likelihood


def _logistic(X, y, *, y_data: bool, X_data: bool):
    with pm.Model() as m:
        Xd = pm.Data("X", X) if X_data else X
        a = pm.Flat("a")
        b = pm.Flat("b", shape=X.shape[1])
        pm.Bernoulli("y", logit_p=a + Xd @ b, observed=pm.Data("y_obs", y) if y_data else y)
    return m


def _fgraph(fn):
    while not hasattr(fn, "maker"):
        fn = fn.fn
    return fn.maker.fgraph


@pytest.mark.parametrize("mode", ["FAST_RUN", "MLE_PPL_SMALL"])
def test_numpy_and_container_data_compile_to_the_same_graph(mode):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 4))
    y = (rng.random(300) < 0.4).astype(np.int64)
    liks = [Likelihood(_logistic(X, y, y_data=yd, X_data=xd), mode=mode)
            for yd, xd in ((True, True), (False, True), (False, False))]
    x = np.array([0.3, -0.2, 0.1, 0.5, -0.4])
    for lik in liks:
        fg = _fgraph(lik._fn_hessian)
        # no data array inside the compiled graph: it is an input, read at each call
        big = [c for c in fg.variables if isinstance(c, TensorConstant)
               and c.data.size > LIFT_MIN_SIZE]
        assert big == []
    ref_f, ref_g = liks[0].value_and_grad(x)
    ref_h = liks[0].hessian(x)
    for lik in liks[1:]:
        f, g = lik.value_and_grad(x)
        # same arithmetic on the same data: equal to rounding (1e-12 relative)
        assert f == pytest.approx(ref_f, rel=1e-12)
        np.testing.assert_allclose(g, ref_g, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(lik.hessian(x), ref_h, rtol=1e-10, atol=1e-10)


def test_set_data_is_seen_without_recompiling():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((200, 2))
    y = (rng.random(200) < 0.5).astype(np.int64)
    m = _logistic(X, y, y_data=True, X_data=True)
    lik = Likelihood(m, mode="MLE_PPL_SMALL")
    x = np.array([0.1, 0.2, -0.3])
    f1, _ = lik.value_and_grad(x)
    y2 = 1 - y
    with m:
        pm.set_data({"y_obs": y2})
    f2, _ = lik.value_and_grad(x)
    # reference: the Bernoulli NLL by hand on the new data
    eta = x[0] + X @ x[1:]
    ref = np.sum(np.logaddexp(0, eta) - y2 * eta)
    assert f2 == pytest.approx(ref, rel=1e-12)
    assert f1 != pytest.approx(f2)

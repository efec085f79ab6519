"""What ``pm.find_MAP`` returns on a flat-prior model, as the README states (issue 12, section 5).

The installed PyMC optimises ``model.logp(jacobian=False)`` in ``find_MAP``: the log-Jacobian of
σ's log transform is left out, so on a flat-prior regression its σ is the MLE √(RSS/n), not the
mode with the Jacobian, √(RSS/(n−1)) (flat prior on σ, density on log σ: the Jacobian adds
+log σ, which moves the optimum of −n log σ − RSS/(2σ²) from √(RSS/n) to √(RSS/(n−1))).
Reference: NumPy's least squares on the bundled stack-loss data (n = 21, 3 predictors).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytest

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def stackloss():
    d = pd.read_csv(MODELS_DIR / "data" / "stackloss.csv")
    X = d[["AIRFLOW", "WATERTEMP", "ACIDCONC"]].to_numpy(dtype=float)
    y = d["STACKLOSS"].to_numpy(dtype=float)
    A = np.column_stack([np.ones(len(y)), X])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    rss = float(np.sum((y - A @ coef) ** 2))
    return X, y, coef, rss


def test_find_map_returns_the_mle_sigma(stackloss):
    X, y, coef, rss = stackloss
    n = len(y)
    with pm.Model():
        a = pm.Flat("a")
        b = pm.Flat("b", shape=3)
        s = pm.HalfFlat("s")
        pm.Normal("y", a + X @ b, s, observed=y)
        with warnings.catch_warnings():
            # PyMC's optimizer notes (e.g. from scipy) are not what is tested here
            warnings.simplefilter("ignore")
            mp = pm.find_MAP(progressbar=False)
    mle_sigma, jacobian_mode = np.sqrt(rss / n), np.sqrt(rss / (n - 1))
    # find_MAP stops L-BFGS-B at its default tolerances: about 1e-5 relative here. The two
    # candidates differ by 2.4 %, so 1e-4 tells them apart with a margin of 200.
    assert abs(mp["s"] / mle_sigma - 1) < 1e-4
    assert abs(mp["s"] / jacobian_mode - 1) > 1e-2
    np.testing.assert_allclose(mp["b"], coef[1:], rtol=1e-3)  # same tolerance reason

"""Regenerate the bundled data tables of ``mle_ppl.models`` (run from any directory).

Real public-domain data:

- ``longley.csv``: Longley (1967) macroeconomic data, the NIST StRD linear-regression benchmark
  with certified values (public domain; taken from ``statsmodels.datasets.longley``).
- ``stackloss.csv``: Brownlee's (1965) stack-loss plant data (public domain; from
  ``statsmodels.datasets.stackloss``).
- ``iris.csv``: Fisher's (1936) iris measurements (public domain; from scikit-learn's copy).

Simulated data (seeded, so the files are reproducible bit for bit): every other table. The true
parameter values are written next to each simulation below.

Usage: ``python models/data/make_data.py`` (needs numpy, pandas, statsmodels, scikit-learn).
"""

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
SEED = 20240601


def real_data():
    from sklearn.datasets import load_iris
    from statsmodels.datasets import longley, stackloss

    lon = longley.load_pandas().data
    lon = lon.rename(columns={"TOTEMP": "employed"})
    lon.to_csv(HERE / "longley.csv", index=False)
    st = stackloss.load_pandas().data
    st.to_csv(HERE / "stackloss.csv", index=False)
    iris = load_iris(as_frame=True)
    df = iris.data.copy()
    df.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    df["species"] = np.asarray(iris.target_names)[iris.target]
    df.to_csv(HERE / "iris.csv", index=False)


def simulated():
    rng = np.random.default_rng(SEED)

    # logistic regression: P(y = 1) = sigmoid(-0.5 + 1.2 x1 - 0.8 x2)
    n = 300
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    p = 1 / (1 + np.exp(-(-0.5 + 1.2 * x1 - 0.8 * x2)))
    pd.DataFrame({"x1": x1, "x2": x2, "y": rng.binomial(1, p)}).round(6).to_csv(
        HERE / "logistic_regression.csv", index=False)

    # Poisson with exposure: claims ~ Poisson(exposure * exp(-1.0 + 0.5 age_std + 0.3 urban))
    n = 250
    age = rng.normal(size=n)
    urban = rng.integers(0, 2, size=n)
    exposure = rng.uniform(0.5, 5.0, size=n)
    mu = exposure * np.exp(-1.0 + 0.5 * age + 0.3 * urban)
    pd.DataFrame({"age": age.round(6), "urban": urban, "exposure": exposure.round(6),
                  "claims": rng.poisson(mu)}).to_csv(HERE / "poisson_exposure.csv", index=False)

    # negative binomial: visits ~ NB(mu = exp(0.8 + 0.4 x - 0.6 treated), alpha = 2)
    n = 300
    x = rng.normal(size=n)
    treated = rng.integers(0, 2, size=n)
    group = rng.choice(["north", "south", "west"], size=n)
    eff = {"north": 0.0, "south": 0.3, "west": -0.2}
    mu = np.exp(0.8 + 0.4 * x - 0.6 * treated + np.vectorize(eff.get)(group))
    alpha = 2.0
    visits = rng.poisson(rng.gamma(alpha, mu / alpha))
    pd.DataFrame({"x": x.round(6), "treated": treated, "group": group,
                  "visits": visits}).to_csv(HERE / "negative_binomial.csv", index=False)

    # exponential decay: y = a exp(-k t) + c + N(0, 0.05^2), a = 2.5, k = 0.7, c = 0.3
    t = np.linspace(0, 8, 60)
    y = 2.5 * np.exp(-0.7 * t) + 0.3 + rng.normal(0, 0.05, size=t.size)
    pd.DataFrame({"t": t.round(6), "y": y.round(6)}).to_csv(HERE / "exponential_decay.csv",
                                                            index=False)

    # heteroscedastic Gaussian: y ~ N(1 + 2 x, exp(-1 + 0.8 x)^2)
    n = 400
    x = rng.uniform(-2, 2, size=n)
    y = 1 + 2 * x + np.exp(-1 + 0.8 * x) * rng.normal(size=n)
    pd.DataFrame({"x": x.round(6), "y": y.round(6)}).to_csv(HERE / "heteroscedastic.csv",
                                                            index=False)

    # binomial with trials: germinated ~ Binomial(seeds, sigmoid(-1 + 0.9 dose + 0.5 [variety b]))
    n = 80
    dose = rng.uniform(0, 3, size=n)
    variety = rng.choice(["a", "b"], size=n)
    seeds = rng.integers(5, 40, size=n)
    p = 1 / (1 + np.exp(-(-1 + 0.9 * dose + 0.5 * (variety == "b"))))
    pd.DataFrame({"dose": dose.round(6), "variety": variety, "seeds": seeds,
                  "germinated": rng.binomial(seeds, p)}).to_csv(HERE / "binomial_trials.csv",
                                                                index=False)


if __name__ == "__main__":
    real_data()
    simulated()

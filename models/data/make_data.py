"""Regenerate the bundled data tables of ``mle_ppl.models`` (run from any directory).

Real public-domain data:

- ``longley.csv``: Longley (1967) macroeconomic data, the NIST StRD linear-regression benchmark
  with certified values (public domain; taken from ``statsmodels.datasets.longley``).
- ``stackloss.csv``: Brownlee's (1965) stack-loss plant data (public domain; from
  ``statsmodels.datasets.stackloss``).
- ``iris.csv``: Fisher's (1936) iris measurements (public domain; from scikit-learn's copy).

Simulated data (seeded, so the files are reproducible bit for bit): every other table
(``reaction_times.csv`` and ``herd_incidence.csv``, for the mixed models, by ``mixed()``). The true
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


def mixed():
    """Grouped data for the mixed models (own generator: the tables above stay bit for bit)."""
    rng = np.random.default_rng(SEED + 14)

    # linear mixed model (sleep-study-like design, simulated): 18 subjects x 10 days,
    # reaction = 251 + 10.5 days + a_s + b_s days + N(0, 25^2),
    # (a_s, b_s) ~ MvNormal(0, SDs 24 and 6, correlation 0.1)
    n_subj, days = 18, np.arange(10)
    sd, rho = np.array([24.0, 6.0]), 0.1
    cov = np.outer(sd, sd) * np.array([[1, rho], [rho, 1]])
    ab = rng.multivariate_normal(np.zeros(2), cov, size=n_subj)
    rows = []
    for s in range(n_subj):
        y = 251 + 10.5 * days + ab[s, 0] + ab[s, 1] * days + rng.normal(0, 25, size=days.size)
        rows += [{"subject": f"S{s + 1:02d}", "days": int(d), "reaction": round(float(v), 4)}
                 for d, v in zip(days, y, strict=True)]
    pd.DataFrame(rows).to_csv(HERE / "reaction_times.csv", index=False)

    # binomial GLMM (cbpp-like design, simulated): 15 herds x 4 periods,
    # incidence ~ Binomial(size, sigmoid(-1.4 + [0, -1.0, -1.1, -1.6][period] + u_herd)),
    # u_herd ~ N(0, 0.65^2)
    n_herd, effect = 15, np.array([0.0, -1.0, -1.1, -1.6])
    u = rng.normal(0, 0.65, size=n_herd)
    rows = []
    for h in range(n_herd):
        for per in range(4):
            size = int(rng.integers(5, 30))
            p = 1 / (1 + np.exp(-(-1.4 + effect[per] + u[h])))
            rows.append({"herd": f"H{h + 1:02d}", "period": per + 1, "size": size,
                         "incidence": int(rng.binomial(size, p))})
    pd.DataFrame(rows).to_csv(HERE / "herd_incidence.csv", index=False)


if __name__ == "__main__":
    real_data()
    simulated()
    mixed()

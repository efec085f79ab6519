"""Plots of the MLE beside the posterior: the expected artists exist (no image diffing)."""

import matplotlib

matplotlib.use("Agg")  # no display in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from _models import gaussian_linear  # noqa: E402
from scipy import stats  # noqa: E402

import mle_ppl  # noqa: E402
from mle_ppl._src.bayes.plots import save_comparison_plots  # noqa: E402


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 2))
    y = 1 + X @ np.array([0.5, -1.0]) + rng.normal(size=40)
    model = gaussian_linear(X, y, ["a", "b"])
    fit = mle_ppl.fit(model)
    post = mle_ppl.sample(model, draws=300, tune=300, chains=2, cores=1, random_seed=3)
    yield fit, post
    plt.close("all")


def test_forest_has_wald_and_hdi_per_parameter(fitted):
    fit, post = fitted
    pc = mle_ppl.plot_forest(fit, post, level=0.9)
    twig = pc.viz["twig"]
    assert list(twig["beta"].coords["model"].values) == ["MLE ± Wald", "posterior mean ± HDI"]
    # the MLE's twig spans exactly the 90 % Wald interval
    line = twig["beta"].sel(model="MLE ± Wald", x="a").item()
    xs = np.sort(np.asarray(line.get_xdata(), dtype=float))
    z = stats.norm.ppf(0.95)
    est, se = fit.estimates["beta[a]"], fit.std_errors["beta[a]"]
    np.testing.assert_allclose([xs[0], xs[-1]], [est - z * se, est + z * se], rtol=1e-10)
    for name in ("alpha", "beta", "sigma"):
        assert name in twig and name in pc.viz["trunk"] and name in pc.viz["point_estimate"]
    fig = pc.viz["figure"].item()
    assert isinstance(fig, matplotlib.figure.Figure)
    keys = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert {"MLE ± Wald", "posterior mean ± HDI"} <= set(keys)  # colours
    # the inner (thick) bar and the outer one are explained (issue 12)
    assert {"thin line: 90% interval", "thick line: 50% interval"} <= set(keys)
    # no stray column headers ("variable", "x") under the label column
    fig.canvas.draw()
    shown = {t.get_text() for ax in fig.axes for t in ax.get_xticklabels() if t.get_visible()
             and t.get_text()}
    assert not shown & {"variable", "x", "label"}, shown


def test_densities_have_mle_reference_lines(fitted):
    fit, post = fitted
    pc = mle_ppl.plot_densities(fit, post)
    ref = pc.viz["ref_line"]
    line = ref["sigma"].item() if ref["sigma"].ndim == 0 else ref["sigma"].values.ravel()[0]
    assert np.asarray(line.get_xdata(), dtype=float)[0] == pytest.approx(
        fit.estimates["sigma"], rel=1e-12)
    assert set(pc.viz["dist"]["beta"].coords["model"].values) == {
        "posterior", "Laplace approximation"}
    keys = [t.get_text() for leg in pc.viz["figure"].item().legends for t in leg.get_texts()]
    assert {"posterior", "Laplace approximation", "MLE", "mean and 95% HDI"} <= set(keys)
    only_post = mle_ppl.plot_densities(fit, post, laplace=False, title=False)
    assert "model" not in only_post.viz["dist"]["alpha"].dims
    keys = [t.get_text() for leg in only_post.viz["figure"].item().legends
            for t in leg.get_texts()]
    assert {"MLE", "mean and 95% HDI"} <= set(keys)


def test_save_png_and_svg(fitted, tmp_path):
    fit, post = fitted
    for suffix in (".png", ".svg"):
        written = save_comparison_plots(fit, post, tmp_path / f"cmp{suffix}")
        assert [p.name for p in written] == [f"cmp{suffix}", f"cmp_densities{suffix}"]
        assert all(p.stat().st_size > 1000 for p in written)
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "cmp.svg").read_bytes()[:500]
    with pytest.raises(mle_ppl.MLEError, match="expected a name ending in"):
        save_comparison_plots(fit, post, tmp_path / "cmp.jpg")
    with pytest.raises(mle_ppl.MLEError, match="does not exist"):
        save_comparison_plots(fit, post, tmp_path / "nope" / "cmp.png")

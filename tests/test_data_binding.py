"""Binding data tables to model files: formats, and an error for each kind of bad data.

Each error names the model file, the key path and the column, and suggests a near name. All of
these checks run before any PyMC object is built (nothing is fitted on half-bound data).
"""

import numpy as np
import pandas as pd
import pytest

from mle_ppl import DataError, loads_model
from mle_ppl._src.model.data import DataItem, bind, read_table

LINEAR = """
[model]
name = "lin"
[data]
y = "y"
x = ["x1", "x2"]
[parameters]
alpha = {}
beta = { dims = "x" }
sigma = { lower = 0 }
[likelihood]
y = { distribution = "Normal", mu = "alpha + x @ beta", sigma = "sigma" }
"""

CATEG = """
[model]
name = "cat"
[data]
g = { column = "group", levels = ["a", "b", "c"], reference = "a" }
y = "y"
[parameters]
mu = { dims = "g" }
c = {}
[likelihood]
y = { distribution = "Poisson", mu = "exp(c + mu[g])" }
"""


@pytest.fixture
def table():
    rng = np.random.default_rng(1)
    return pd.DataFrame({"x1": rng.normal(size=6), "x2": rng.normal(size=6),
                         "y": rng.normal(size=6)})


@pytest.fixture(scope="module")
def linear():
    return loads_model(LINEAR, name="lin")


def test_formats_agree(tmp_path, table, linear):
    csv = tmp_path / "d.csv"
    pq = tmp_path / "d.parquet"
    table.to_csv(csv, index=False)
    table.to_parquet(pq)
    mapping = {k: table[k].to_numpy() for k in table.columns}
    bounds = [linear.bind(d) for d in (table, csv, str(pq), mapping)]
    for b in bounds[1:]:
        np.testing.assert_allclose(b.arrays["x"], bounds[0].arrays["x"], rtol=1e-15)
        np.testing.assert_allclose(b.arrays["y"], bounds[0].arrays["y"], rtol=1e-15)
        assert b.structure == bounds[0].structure
    assert bounds[0].coords["x"] == ("x1", "x2")
    np.testing.assert_array_equal(bounds[0].arrays["x"], table[["x1", "x2"]].to_numpy())


def test_missing_column_names_file_key_and_suggests(table, linear):
    bad = table.rename(columns={"x2": "x_2"})
    with pytest.raises(DataError, match=r"model file '<lin>', key data\.x \(used in "
                                        r"likelihood\.y\.mu\): column 'x2' is not in the data "
                                        r"table\. Did you mean 'x_2'\?"):
        linear.bind(bad)


def test_non_numeric_column(table, linear):
    table["x1"] = ["a", "b", "c", "a", "b", "c"]
    with pytest.raises(DataError, match=r"key data\.x: column 'x1' is not numeric.*categorical"):
        linear.bind(table)


@pytest.mark.parametrize(("value", "kind"), [(np.nan, "missing"), (np.inf, "infinite")])
def test_nan_and_inf(table, linear, value, kind):
    table.loc[3, "y"] = value
    with pytest.raises(DataError, match=rf"key data\.y: column 'y' has 1 {kind}.*row\(s\) \[3\]"):
        linear.bind(table)


def test_empty_table(table, linear):
    with pytest.raises(DataError, match=r"empty \(0 rows\)"):
        linear.bind(table.iloc[:0])


def test_files(tmp_path, linear):
    with pytest.raises(DataError, match="does not exist"):
        linear.bind(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="unknown format '.xlsx'"):
        linear.bind(tmp_path / "d.xlsx")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        linear.bind(tmp_path / "empty.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read data file"):
        linear.bind(tmp_path / "bad.parquet")


def test_mapping_errors(linear):
    with pytest.raises(DataError, match="1-D columns"):
        linear.bind({"y": np.ones(3), "x": np.ones((3, 2))})
    with pytest.raises(DataError, match="different lengths"):
        linear.bind({"y": np.ones(3), "x1": np.ones(2), "x2": np.ones(3)})
    with pytest.raises(DataError, match="must be a pandas DataFrame"):
        linear.bind([1, 2, 3])


@pytest.fixture
def groups():
    return pd.DataFrame({"group": ["a", "b", "c", "b", "a", "c"], "y": [1, 0, 3, 2, 1, 4]})


def test_categorical_codes_and_reference(groups):
    spec = loads_model(CATEG, name="cat")
    b = spec.bind(groups)
    np.testing.assert_array_equal(b.arrays["g"], [0, 1, 2, 1, 0, 2])
    assert b.coords["g"] == ("b", "c")  # the reference level has no parameter
    assert b.levels["g"] == ("a", "b", "c")
    assert b.arrays["y"].dtype.kind == "i"  # Poisson outcome bound as counts


def test_level_absent_from_data(groups):
    spec = loads_model(CATEG, name="cat")
    with pytest.raises(DataError, match=r"key data\.g: level\(s\) \['c'\] of column 'group' do "
                                        "not occur"):
        spec.bind(groups[groups.group != "c"])


def test_value_not_among_levels(groups):
    spec = loads_model(CATEG, name="cat")
    groups.loc[2, "group"] = "d"
    with pytest.raises(DataError,
                       match=r"value\(s\) \['d'\] at row\(s\) \[2\] \(0-based.*declared levels"):
        spec.bind(groups)


def test_reference_absent_from_inferred_levels(groups):
    spec = loads_model(CATEG.replace('levels = ["a", "b", "c"], ', "").replace(
        'reference = "a"', 'reference = "A"'), name="cat")
    with pytest.raises(DataError, match="reference level 'A' does not occur.*Did you mean 'a'"):
        spec.bind(groups)


def test_missing_categorical_value(groups):
    spec = loads_model(CATEG, name="cat")
    groups.loc[1, "group"] = None
    with pytest.raises(DataError, match=r"1 missing value\(s\), first at row\(s\) \[1\]"):
        spec.bind(groups)


def test_discrete_outcome_must_be_integer(groups):
    spec = loads_model(CATEG, name="cat")
    groups["y"] = groups["y"] + 0.5
    with pytest.raises(DataError, match="discrete distribution but has non-integer values"):
        spec.bind(groups)


def test_bind_helper_directly():
    items = [DataItem("z", "data.z", "vector", ("zz",))]
    with pytest.raises(DataError, match="column 'zz'.*Did you mean 'zzz'"):
        bind(items, {"zzz": [1.0, 2.0]})
    assert read_table({"a": [1, 2]}).shape == (2, 1)


def test_bool_column_is_numeric(linear):
    b = linear.bind({"y": [1.0, 2.0, 3.0], "x1": [True, False, True], "x2": [0.1, 0.2, 0.3]})
    np.testing.assert_array_equal(b.arrays["x"][:, 0], [1.0, 0.0, 1.0])


def test_nothing_built_on_bad_data(table, linear):
    """A failed bind leaves the spec's model cache untouched."""
    table.loc[0, "x1"] = np.nan
    with pytest.raises(DataError):
        linear.model_for(table)
    assert len(linear._cache) == 0

"""The contracts in ``docs/`` stay honest: what the code produces is documented, and vice versa.

``docs/json.md``, ``docs/model-files.md`` and ``docs/datatree.md`` list keys in tables that follow
a marker ``<!-- keys: NAME -->``; the first cell of each row is the key in backticks. These tests
compare each table with the keys the code produces (JSON documents of a real fit and of the CLI
run in-process, the DataTree) or with the registries of allowed keys (model files), in both
directions: a key produced but not documented fails, and so does a documented key that no longer
exists. When one fails, update the doc (or the code), not this test.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


# ---------------------------------------------------------------------------- doc parsing
def doc_table(file: str, name: str) -> dict[str, list[str]]:
    """Rows of the table after ``<!-- keys: name -->`` in ``docs/file``: key -> other cells."""
    lines = (DOCS / file).read_text(encoding="utf-8").splitlines()
    marker = f"<!-- keys: {name} -->"
    starts = [i for i, line in enumerate(lines) if line.strip() == marker]
    assert len(starts) == 1, f"docs/{file}: expected one {marker!r}, found {len(starts)}"
    rows: dict[str, list[str]] = {}
    body = lines[starts[0] + 1:]
    assert body and body[0].startswith("|"), f"docs/{file}: no table after {marker!r}"
    for line in body[2:]:  # header and separator rows first
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        m = re.fullmatch(r"`\[?([^`\]]+)\]?`", cells[0])
        assert m, f"docs/{file} ({name}): first cell {cells[0]!r} is not a `key`"
        assert m.group(1) not in rows, f"docs/{file} ({name}): {m.group(1)!r} listed twice"
        rows[m.group(1)] = cells[1:]
    assert rows, f"docs/{file}: empty table after {marker!r}"
    return rows


def doc_keys(file: str, name: str) -> set[str]:
    return set(doc_table(file, name))


def same(produced, file: str, name: str) -> None:
    produced, documented = set(produced), doc_keys(file, name)
    assert produced == documented, (
        f"docs/{file}, table {name!r}: produced but not documented: "
        f"{sorted(produced - documented)}; documented but not produced: "
        f"{sorted(documented - produced)}")


def keys_of(entries) -> set[str]:
    """Union of the keys of several dicts."""
    return set().union(*(set(e) for e in entries))


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fit():
    import mle_ppl

    # two starts, so that the optional "multistart" object is produced too
    return mle_ppl.fit("logistic_regression", starts=2, random_seed=0)


@pytest.fixture(scope="module")
def documents(fit):
    """fit.to_dict() with Wald and with profile intervals (the latter adds ci_open)."""
    return [fit.to_dict(), fit.to_dict(ci="profile")]


@pytest.fixture(scope="module")
def mixed_document():
    """The fit document of a mixed model (adds the random_effects section)."""
    import mle_ppl

    return mle_ppl.fit("binomial_mixed").to_dict()


def run_cli(capsys, *argv) -> tuple[int, dict]:
    from mle_ppl._src.cli import main

    capsys.readouterr()
    status = main(list(argv))
    out = capsys.readouterr().out
    return status, json.loads(out)


@pytest.fixture(scope="module")
def stand_in_posterior(fit):
    """Laplace draws of the fit, labelled as ``mle_ppl.sample`` labels a posterior.

    The sample/compare JSON tests check the keys the CLI writes, not NUTS (tested in
    test_bayes.py, test_compare_cli.py): a stand-in posterior keeps them fast.
    """
    tree = fit.to_datatree(laplace_draws=100, random_seed=0)
    tree["posterior"].attrs.update(
        mle_ppl_model=fit.model_name, mle_ppl_priors=json.dumps({"alpha": "Flat", "beta": "Flat"}),
        mle_ppl_sampling_problems="", mle_ppl_notes="")
    return tree


# ---------------------------------------------------------------------------- docs/json.md
def test_fit_document_matches_json_md(documents, mixed_document):
    same(keys_of([*documents, mixed_document]), "json.md", "fit")
    re_doc = mixed_document["random_effects"]
    same(re_doc, "json.md", "fit.random_effects")
    same(keys_of(re_doc["modes"].values()), "json.md", "fit.random_effects.modes")
    assert set(re_doc["variance_parameters"]) <= set(mixed_document["parameters"])
    same(keys_of(e for d in documents for e in d["parameters"].values()), "json.md",
         "fit.parameters")
    same(keys_of(d["diagnostics"] for d in documents), "json.md", "fit.diagnostics")
    same(documents[0]["multistart"], "json.md", "fit.multistart")
    closed = documents[0]["closed_form"]
    assert closed["applies"] is True  # logistic regression: the cross-entropy check applies
    same(closed, "json.md", "closed_form")
    same(keys_of(closed["rows"]), "json.md", "closed_form.rows")


def test_json_md_types_match_values(documents, mixed_document):
    """The type column of the fit tables agrees with the values (null only where allowed)."""
    python_types = {"string": str, "integer": int, "number": float, "boolean": bool,
                    "object": dict, "null": type(None)}

    def check(values: dict, name: str):
        for key, (typ, *_rest) in doc_table("json.md", name).items():
            if key not in values:
                continue
            if typ.startswith("array"):
                assert isinstance(values[key], list), (name, key)
                continue
            allowed = tuple(python_types[t] for t in typ.replace("\\", "").split("|"))
            v = values[key]
            assert isinstance(v, allowed) and not (isinstance(v, bool) and bool not in allowed), \
                f"docs/json.md {name}.{key}: documented {typ}, got {v!r}"

    for d in documents:
        check(d, "fit")
    check(mixed_document["random_effects"], "fit.random_effects")
    for entry in mixed_document["random_effects"]["modes"].values():
        check(entry, "fit.random_effects.modes")
    for d in documents:
        check(d["diagnostics"], "fit.diagnostics")
        for entry in d["parameters"].values():
            check(entry, "fit.parameters")


def test_not_applicable_closed_form_is_documented():
    from mle_ppl._src.report.closed_form import ClosedFormCheck

    doc = ClosedFormCheck(applies=False, reason="none").to_dict()
    assert set(doc) == {"applies", "reason"} <= doc_keys("json.md", "closed_form")


def test_check_document_matches_json_md(capsys):
    status, doc = run_cli(capsys, "check", "linear_regression", "--json", "--underflow",
                          "--optimizers")
    assert status in (0, 1)
    fit_keys, extra = doc_keys("json.md", "fit"), doc_keys("json.md", "check")
    assert set(doc) <= fit_keys | extra, sorted(set(doc) - fit_keys - extra)
    same(set(doc) - fit_keys, "json.md", "check")
    same(doc["underflow"], "json.md", "check.underflow")
    same(keys_of(doc["optimizers"].values()), "json.md", "check.optimizers")
    assert set(doc["optimizers"]) == {"newton", "lbfgs", "gd"}


def test_sample_document_matches_json_md(capsys, monkeypatch, stand_in_posterior):
    import mle_ppl._src.cli.sample as cli_sample

    monkeypatch.setattr(cli_sample, "run_sample", lambda args: stand_in_posterior)
    status, doc = run_cli(capsys, "sample", "logistic_regression", "--json")
    assert status == 0
    same(doc, "json.md", "sample")
    same(keys_of(doc["parameters"].values()), "json.md", "sample.parameters")


def test_compare_document_matches_json_md(capsys, monkeypatch, stand_in_posterior):
    import mle_ppl._src.cli.compare as cli_compare

    monkeypatch.setattr(cli_compare, "run_sample", lambda args: stand_in_posterior)
    with warnings.catch_warnings():
        # one chain of 100 independent draws: R-hat is undefined (null), which is documented
        warnings.simplefilter("ignore", RuntimeWarning)
        status, doc = run_cli(capsys, "compare", "logistic_regression", "--json",
                              "--laplace-draws", "100", "--seed", "0")
    assert status == 0
    same(doc, "json.md", "compare")
    same(keys_of(doc["parameters"].values()), "json.md", "compare.parameters")
    same(doc["model_stats"], "json.md", "compare.model_stats")
    from mle_ppl._src.bayes.compare import COLUMNS

    same(COLUMNS, "json.md", "compare.parameters")


def test_demo_and_models_documents_match_json_md(capsys):
    status, doc = run_cli(capsys, "demo", "--json", "--model", "logistic_regression")
    assert status == 0
    same(doc, "json.md", "demo")
    entry = doc["models"]["logistic_regression"]
    assert set(entry) - doc_keys("json.md", "fit") == {"underflow"}
    same(entry["underflow"], "json.md", "check.underflow")
    status, doc = run_cli(capsys, "models", "--json")
    assert status == 0 and doc and all(isinstance(v, str) for v in doc.values())
    status, doc = run_cli(capsys, "models", "linear_regression", "--json")
    assert status == 0
    same(doc, "json.md", "models.name")


def test_every_command_has_its_exit_statuses():
    from mle_ppl._src.cli import COMMANDS

    same(COMMANDS, "json.md", "exit")
    for command, cells in doc_table("json.md", "exit").items():
        assert len(cells) == 3 and cells[0] and cells[2], command


# ---------------------------------------------------------------------------- model-files.md
def test_toml_keys_match_model_files_md():
    from mle_ppl._src.model.toml import (
        DATA_KEYS,
        FORMULA_ONLY_KEYS,
        LIKELIHOOD_KEYS,
        PARAMETER_KEYS,
        SECTIONS,
    )

    same(SECTIONS, "model-files.md", "sections")
    same(SECTIONS["model"], "model-files.md", "model")
    same(DATA_KEYS, "model-files.md", "data")
    same(PARAMETER_KEYS, "model-files.md", "parameters")
    same(LIKELIHOOD_KEYS, "model-files.md", "likelihood")
    from mle_ppl._src.model.random import MVNORMAL_KEYS, RANDOM_KEYS

    same(RANDOM_KEYS, "model-files.md", "random")
    same(MVNORMAL_KEYS, "model-files.md", "mvnormal")
    model_rows = doc_table("model-files.md", "model")
    for key in FORMULA_ONLY_KEYS:
        assert model_rows[key][1].startswith("formula only"), key


def test_expression_functions_match_model_files_md():
    from mle_ppl._src.model.expressions import FUNCTIONS

    rows = doc_table("model-files.md", "functions")
    same(FUNCTIONS, "model-files.md", "functions")
    for name, (args, _meaning) in rows.items():
        required = len(re.sub(r"\[.*?\]", "", args).split(","))
        total = len(re.sub(r"[\[\]]", "", args).split(","))
        assert (required, total) == FUNCTIONS[name].n_args, (name, args)


def test_formula_registries_match_model_files_md():
    from mle_ppl._src.model.formula import FAMILIES, FORMULA_FUNCTIONS, LINKS

    same(FORMULA_FUNCTIONS, "model-files.md", "formula_functions")
    same(LINKS, "model-files.md", "links")
    same(FAMILIES, "model-files.md", "families")
    for name, (dist, link, extra) in doc_table("model-files.md", "families").items():
        fam = FAMILIES[name]
        assert link == fam.default_link, name
        assert f"`{fam.distribution}(" in dist, name
        assert set(re.findall(r"`(\w+)`", extra)) == set(fam.extra), name


# ---------------------------------------------------------------------------- datatree.md
def test_datatree_groups_match_datatree_md(fit):
    tree = fit.to_datatree(laplace_draws=20, random_seed=0)
    groups = [node.path.lstrip("/") for node in tree.subtree if node.path != "/"]
    same(groups, "datatree.md", "groups")
    same(tree["fit"].data_vars, "datatree.md", "datatree.fit")
    same(tree["optimizer_result"].data_vars, "datatree.md", "datatree.optimizer_result")
    assert "sample_stats" not in fit.to_datatree().children  # only with laplace_draws

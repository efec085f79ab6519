"""``mle-ppl models`` lists the bundled models without importing PyMC or PyTensor, and lists
exactly what loading every model file gives."""

import subprocess
import sys

from mle_ppl._src.model.library import bundled_models, list_models, load_model


def test_listing_equals_the_loaded_descriptions():
    listed = dict(list_models())
    assert set(listed) == set(bundled_models())
    for name, path in bundled_models().items():
        desc = load_model(path).description  # the reference: the file built the full way
        assert listed[name] == (desc.strip().splitlines()[0] if desc.strip() else "")


def test_models_command_imports_neither_pymc_nor_pytensor():
    code = ("import sys; from mle_ppl._src.cli.main import main\n"
            "try:\n    main(['models'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pymc', 'pytensor', 'numba', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=None).stdout
    assert "linear_regression" in out
    assert out.strip().splitlines()[-1] == "[]"

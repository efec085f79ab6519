"""Shared test settings.

PyTensor compiles each new graph once (cached on disk); tests share fitted models through
module-scoped fixtures to keep the suite fast.
"""

import os
import tempfile

import matplotlib

# compiled functions are cached on disk (mle_ppl/_src/engine/diskcache.py): a test run uses its
# own directory, never the user's cache
os.environ.setdefault("MLE_PPL_CACHE_DIR", tempfile.mkdtemp(prefix="mle-ppl-test-cache-"))

# Something in the test process puts COLUMNS=80 (and LINES) into the C-level environment that
# subprocesses inherit, without it appearing in os.environ (a terminfo set-up). The CLI honours
# $COLUMNS when stdout is not a terminal, so CLI subprocesses would render 80-column tables with
# fewer digits; tests that want a narrow table set COLUMNS themselves.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)
    os.unsetenv(_name)

matplotlib.use("Agg")  # no display in CI; plotting tests only inspect artists

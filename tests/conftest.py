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

matplotlib.use("Agg")  # no display in CI; plotting tests only inspect artists

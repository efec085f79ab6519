"""Shared test settings.

PyTensor compiles each new graph once (cached on disk); tests share fitted models through
module-scoped fixtures to keep the suite fast.
"""

import matplotlib

matplotlib.use("Agg")  # no display in CI; plotting tests only inspect artists

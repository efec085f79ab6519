"""One BLAS thread while a computation makes many calls on small matrices (threadpoolctl).

OpenBLAS runs some LAPACK routines threaded at any size (``trtrs``, the triangular solve behind
``scipy.linalg.solve_triangular``), and after a threaded call its workers spin, waiting for the
next one. On a machine whose cores are busy with other work, a 2 x 2 triangular solve then
takes 5-30 ms instead of 4 µs, and a 200 x 200 matrix product 60 ms instead of 4 ms (measured
on this project's 2-core machine at load 10). The Laplace objective's inner Newton makes
thousands of such small calls (2 x 2 covariance factors, per-group blocks), so it runs them with
one thread: :func:`single_blas_thread` is a re-entrant context manager that limits every loaded
BLAS library to ``MLE_PPL_BLAS_THREADS`` threads (default 1; ``0`` leaves the setting alone, as
for :func:`~mle_ppl._src.engine.alloc.blas_threads`, which covers a whole ``fit``) and restores
the previous setting on exit. This one is cheap enough to wrap every objective call (the
controller is made once), so Hessians, profiles and LRTs called after a fit are covered too.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_state: dict = {"controller": None, "linalg": False}


def _controller():
    """A ThreadpoolController that knows every BLAS library loaded so far (SciPy's own
    OpenBLAS is loaded with ``scipy.linalg``, possibly after the first call)."""
    linalg = "scipy.linalg" in sys.modules
    if _state["controller"] is None or (linalg and not _state["linalg"]):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            return None
        _state["controller"] = ThreadpoolController()
        _state["linalg"] = linalg
    return _state["controller"]


@contextmanager
def single_blas_thread():
    """Run the block with ``MLE_PPL_BLAS_THREADS`` (default 1) BLAS threads (re-entrant; only
    the outermost level acts)."""
    global _depth
    try:
        k = int(os.environ.get("MLE_PPL_BLAS_THREADS", "1"))
    except ValueError:
        k = 1
    if k <= 0:
        yield
        return
    with _lock:
        _depth += 1
        outer = _depth == 1
    limiter = None
    try:
        if outer:
            ctl = _controller()
            if ctl is not None:
                limiter = ctl.limit(limits=k, user_api="blas")
        yield
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
        with _lock:
            _depth -= 1


def blas_threads(fn):
    """Decorator: ``fn`` runs inside :func:`single_blas_thread`."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_blas_thread():
            return fn(*args, **kwargs)
    return wrapper

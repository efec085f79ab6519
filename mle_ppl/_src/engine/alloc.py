"""Process settings for the duration of a fit: large temporaries' pages kept, BLAS on one thread.

Each call of a compiled likelihood function allocates its n-sized (and n x p, for the Hessian)
temporaries afresh. glibc serves allocations above ~32 MB with a new ``mmap`` and returns them to
the system on ``free``, so every call page-faults its temporaries in again, 4 KiB at a time.
NumPy avoids most of that cost by asking for transparent huge pages on its own arrays; Numba,
which runs PyTensor's kernels, does not. Measured on a logistic model with n = 1e6, p = 20: the
Hessian took 0.33 s, 0.12 s with the pages kept (NumPy's ``X.T @ (X * w)``: 0.12 s).

:func:`reuse_large_allocations` switches ``mmap`` off for the duration of a fit, so large blocks
come from the heap and freed ones are reused by the next call; on exit glibc's defaults are
restored and the freed memory is handed back with ``malloc_trim``. It is a no-op on other C
libraries (macOS, musl, Windows) and can be turned off with ``MLE_PPL_MALLOC_TUNING=0``.

:func:`blas_threads` runs the fit's BLAS and LAPACK calls on one thread (threadpoolctl). A fit's
dense algebra is small (p x p eigendecompositions; data products in cache-sized row blocks, see
:mod:`~mle_ppl._src.engine.predictors`), where OpenBLAS's extra threads gain little and, on a
machine whose cores are busy, spin: a 52 x 52 ``eigh`` took 0.15 s on two threads against
0.2 ms on one (load average 11 on 2 cores). ``MLE_PPL_BLAS_THREADS=K`` sets another number,
``0`` leaves the process's setting alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from contextlib import contextmanager

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# glibc's defaults for them (the trim threshold's dynamic value after large frees)
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 64 * 1024 * 1024

_lock = threading.Lock()
_depth = 0
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
                and os.environ.get("MLE_PPL_MALLOC_TUNING", "1") != "0"):
            try:
                lib = ctypes.CDLL(None)
                lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                lib.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc = lib
            except (OSError, AttributeError):
                _libc = False
    return _libc


@contextmanager
def reuse_large_allocations():
    """Within the block, large freed allocations stay mapped and are reused (see module doc)."""
    global _depth
    lib = _glibc()
    if not lib:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            lib.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
            lib.mallopt(_M_MMAP_MAX, 0)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                lib.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                lib.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                lib.malloc_trim(0)


@contextmanager
def blas_threads():
    """Within the block, BLAS/LAPACK use ``MLE_PPL_BLAS_THREADS`` threads (default 1)."""
    try:
        k = int(os.environ.get("MLE_PPL_BLAS_THREADS", "1"))
    except ValueError:
        k = 1
    if k <= 0:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=k, user_api="blas"):
        yield


_fit_depth = 0
_fit_count = 0


@contextmanager
def fit_scope():
    """Marks the duration of one fit: caches of quantities computed from the data (the Gram
    matrix ``DᵀD`` of a constant-weight predictor, :mod:`~mle_ppl._src.engine.predictors`) are
    reused only within it, so data changed in place between fits are never answered from one."""
    global _fit_depth, _fit_count
    with _lock:
        _fit_depth += 1
        if _fit_depth == 1:
            _fit_count += 1
    try:
        yield
    finally:
        with _lock:
            _fit_depth -= 1


def current_fit() -> int | None:
    """A number identifying the fit under way, or None outside a fit."""
    return _fit_count if _fit_depth > 0 else None

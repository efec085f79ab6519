"""A persistent on-disk cache of compiled PyTensor functions, so a new process skips the rewrites.

Compiling a likelihood's function costs ~1 s of graph rewriting, on every run of a script or of
``mle-ppl fit``. A compiled PyTensor ``Function`` pickles together with its rewritten graph, and
unpickling it links that graph again without rewriting (checked with PyTensor 3.3: unpickling
calls ``FunctionMaker.create``, not the rewriter). The functions are compiled with their data as
inputs (:mod:`~mle_ppl._src.engine.compiled`), so an entry holds no data and fits any data of
the same dtypes and ranks.

Key
    SHA-256 of a canonical text of the graph (every node's op with its parameters, its inputs by
    position, constants by content, input types with their dtypes and broadcastable axes), the
    compilation mode, ``check_bounds``, PyTensor's ``floatX`` and the versions of Python,
    mle-ppl, PyTensor, PyMC, NumPy and Numba. A graph with anything the text cannot describe
    exactly (an op from outside PyTensor/PyMC, a Python function in an op's parameters) is not
    cached at all. A changed model, data type, option or library gives another key; nothing is
    ever looked up by a name that could go stale.
Storage
    ``$MLE_PPL_CACHE_DIR`` if set, else ``platformdirs.user_cache_dir("mle-ppl")/functions``
    (on Linux ``$XDG_CACHE_HOME/mle-ppl/functions``, by default ``~/.cache/mle-ppl/functions``).
    One file per function, written to a temporary file in the same directory and renamed into
    place (atomic), so processes can share the cache; an entry that fails to load (corrupt,
    truncated, written by another version) is removed and the function compiled afresh.
Size
    At most ``$MLE_PPL_CACHE_MAX_MB`` megabytes (default 256): after each write the least
    recently used entries are removed down to 80 % of that.
Off switch
    ``MLE_PPL_CACHE=0`` (or ``off``/``false``/``no``) compiles everything in memory, as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

_log = logging.getLogger("mle_ppl.cache")

#: Bumped when the entry layout or the key text changes.
FORMAT = 1
_MAGIC = b"mle-ppl compiled function"
DEFAULT_MAX_MB = 256
_TRUSTED = ("pytensor", "pymc", "numpy", "builtins")


class Uncacheable(Exception):
    """The graph holds something the key cannot describe exactly."""


def cache_dir() -> Path | None:
    """The cache directory, or None when the cache is switched off (``MLE_PPL_CACHE=0``)."""
    if os.environ.get("MLE_PPL_CACHE", "1").strip().lower() in ("0", "off", "false", "no"):
        return None
    path = os.environ.get("MLE_PPL_CACHE_DIR")
    if path:
        return Path(path)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mle-ppl")) / "functions"


def _max_bytes() -> int:
    try:
        return int(float(os.environ.get("MLE_PPL_CACHE_MAX_MB", DEFAULT_MAX_MB)) * 1e6)
    except ValueError:
        return int(DEFAULT_MAX_MB * 1e6)


# ----------------------------------------------------------------------------------- the key
def _trusted(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in _TRUSTED


def _canon(obj, depth: int = 0) -> str:
    if depth > 20:
        raise Uncacheable("parameters nested too deeply")
    if obj is None or isinstance(obj, bool | int | float | str | bytes):
        return repr(obj)
    if isinstance(obj, tuple | list):
        return "(" + ",".join(_canon(o, depth + 1) for o in obj) + ")"
    if isinstance(obj, dict):
        return "{" + ",".join(f"{_canon(k, depth + 1)}:{_canon(v, depth + 1)}"
                              for k, v in sorted(obj.items(), key=lambda kv: repr(kv[0]))) + "}"
    if isinstance(obj, slice):
        return f"slice({_canon(obj.start)},{_canon(obj.stop)},{_canon(obj.step)})"
    if isinstance(obj, np.dtype):
        return f"dtype({obj.str})"
    if isinstance(obj, np.ndarray):
        return _array(obj)
    if isinstance(obj, np.generic):
        return f"{type(obj).__name__}({obj!r})"
    if isinstance(obj, types.FunctionType | types.BuiltinFunctionType | type):
        name = getattr(obj, "__qualname__", "")
        if not _trusted(getattr(obj, "__module__", None)) or "<" in name:
            raise Uncacheable(f"function {obj!r}")
        return f"{obj.__module__}.{name}"
    if isinstance(obj, np.ufunc):
        return f"ufunc({obj.__name__})"
    cls = type(obj)
    if not _trusted(cls.__module__):
        raise Uncacheable(f"{cls.__module__}.{cls.__qualname__}")
    props = getattr(obj, "__props__", None)
    if props is not None:
        state = {p: getattr(obj, p) for p in props}
    elif hasattr(obj, "__dict__"):
        # e.g. scalar ops (equal when of one class with equal attributes)
        state = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    else:
        raise Uncacheable(f"{cls.__module__}.{cls.__qualname__}")
    return f"{cls.__module__}.{cls.__qualname__}{_canon(state, depth + 1)}"


def _array(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    if a.dtype.hasobject:
        raise Uncacheable("object array")
    return f"array({a.dtype.str},{a.shape},{hashlib.sha256(a.tobytes()).hexdigest()})"


def graph_text(inputs: list, outputs: list) -> str:
    """A canonical text of the graph from ``inputs`` to ``outputs`` (raises Uncacheable)."""
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import toposort

    names: dict = {}
    lines = []
    for i, v in enumerate(inputs):
        names[v] = f"i{i}"
        lines.append(f"i{i}: {_canon(v.type)}")

    def name(v) -> str:
        if v not in names:
            if not isinstance(v, Constant):
                raise Uncacheable(f"free variable {v}")
            names[v] = f"c{len(names)}"
            lines.append(f"{names[v]} = {_canon(v.type)} {_canon(v.data)}")
        return names[v]

    for node in toposort(outputs, blockers=inputs):
        args = ",".join(name(v) for v in node.inputs)
        label = f"n{len(lines)}"
        lines.append(f"{label} = {_canon(node.op)}({args})")
        for k, out in enumerate(node.outputs):
            names[out] = f"{label}.{k}"
    lines.append("outputs: " + ",".join(name(o) for o in outputs))
    return "\n".join(lines)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


def function_key(inputs: list, outputs: list, *, mode: str, check_bounds: bool) -> str | None:
    """The cache key of a function, or None when its graph cannot be keyed exactly."""
    import pytensor

    try:
        text = graph_text(inputs, outputs)
    except Uncacheable as why:
        _log.debug("not cached: %s", why)
        return None
    head = [f"format {FORMAT}", f"python {sys.version}", f"mode {mode}",
            f"check_bounds {check_bounds}", f"floatX {pytensor.config.floatX}"]
    head += [f"{d} {_version(d)}" for d in ("mle-ppl", "pytensor", "pymc", "numpy", "numba")]
    return hashlib.sha256(("\n".join(head) + "\n" + text).encode()).hexdigest()


# ------------------------------------------------------------------------------- the storage
def load(key: str):
    """The cached function for ``key``, or None (missing, off, or unreadable: then removed)."""
    root = cache_dir()
    if root is None:
        return None
    path = root / f"{key}.pkl"
    try:
        with open(path, "rb") as fh:
            magic, stored_key, fn = pickle.load(fh)
        if magic != _MAGIC or stored_key != key:
            raise ValueError("entry does not match its key")
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - any unreadable entry is rebuilt
        _log.debug("dropping unreadable cache entry %s: %s", path, err)
        with _quiet_os():
            path.unlink()
        return None
    with _quiet_os():
        os.utime(path)  # recently used: kept by the size bound
    return fn


def store(key: str, fn) -> bool:
    """Write ``fn`` under ``key`` (atomic rename); False if the cache is off or not writable."""
    root = cache_dir()
    if root is None:
        return False
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)  # pickles: private to the user
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".pkl")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump((_MAGIC, key, fn), fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, root / f"{key}.pkl")
        tmp = None
    except Exception as err:  # noqa: BLE001 - an unwritable cache only costs speed
        _log.debug("could not write cache entry %s: %s", key, err)
        return False
    finally:
        if tmp is not None:
            with _quiet_os():
                os.unlink(tmp)
    prune(root, _max_bytes())
    return True


def prune(root: Path, max_bytes: int) -> None:
    """Remove least recently used entries until the cache holds at most 80 % of ``max_bytes``
    (only when it holds more than ``max_bytes``); also stale temporary files (> 1 hour)."""
    entries = []
    now = time.time()
    with _quiet_os():
        for entry in os.scandir(root):
            try:
                st = entry.stat()
            except OSError:
                continue
            if entry.name.startswith(".tmp-"):
                if now - st.st_mtime > 3600:
                    with _quiet_os():
                        os.unlink(entry.path)
            elif entry.name.endswith(".pkl"):
                entries.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    if total <= max_bytes:
        return
    for _, size, path in sorted(entries):
        if total <= 0.8 * max_bytes:
            break
        with _quiet_os():
            os.unlink(path)
        total -= size


class _quiet_os:
    """Ignore OSError (another process removed or replaced the file first)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, OSError)

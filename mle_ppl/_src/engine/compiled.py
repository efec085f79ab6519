"""Compiled functions whose data are call arguments, not part of the graph: one compiled graph per
model structure, however the data were passed, and a graph small enough to cache on disk.

A PyMC model holds its data in two ways: ``pm.Data`` containers (PyTensor shared variables) and
NumPy arrays written into the model (``observed=y``, ``mu = X @ beta`` with a NumPy ``X``), which
become constants of the graph. Compiled as they are, the two give different graphs: a constant
observed vector is folded into the rewritten graph (a 1e6-element constant that the Numba backend
then embeds in its generated code, which it cannot cache, so every process recompiles it, and whose
static shape sends the graph down other rewrites than a container's). :func:`lift_data` replaces
both by plain input variables before compiling; :class:`DataFunction` passes their current values
on each call (a ``pm.set_data`` is seen at once, nothing is copied). The compiled graph then
depends only on the model's structure and the data's dtypes and ranks, which is what the on-disk
cache (:mod:`~mle_ppl._src.engine.diskcache`) keys on.
"""

from __future__ import annotations

import numpy as np

#: Compilation modes (what they are and when ``"auto"`` picks which: ``engine.likelihood``). They
#: are defined here, in a module that imports neither PyMC nor PyTensor, so that a fit from the
#: cache (:mod:`~mle_ppl._src.engine.fitcache`) can name them without importing either.
DEFAULT_MODE = "auto"
SMALL_MODE = "MLE_PPL_SMALL"
SMALL_DATA = 10_000



def register_small_mode() -> None:
    """Register :data:`SMALL_MODE` with PyTensor (the Python VM after a few rewrites)."""
    from pytensor.compile.mode import Mode, predefined_modes, register_mode
    from pytensor.graph.rewriting.db import RewriteDatabaseQuery
    from pytensor.link.vm import VMLinker

    if SMALL_MODE not in predefined_modes:
        register_mode(SMALL_MODE, Mode(
            linker=VMLinker(use_cloop=False, c_thunks=False),
            optimizer=RewriteDatabaseQuery(include=["fast_compile", "canonicalize", "stabilize"],
                                           exclude=["inplace"])))


#: Constants with more elements than this are treated as data (lifted to inputs); smaller ones
#: (shapes, indices of a few parameters, literal coefficients) stay part of the model's structure.
LIFT_MIN_SIZE = 64


def lift_data(outputs: list) -> tuple[list, list, list]:
    """Replace the shared tensors and large constants that ``outputs`` read by input variables.

    Returns ``(new_outputs, data_inputs, sources)``: ``sources[i]`` is the shared variable (read
    at each call) or the constant's array that ``data_inputs[i]`` stands for.
    """
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.replace import clone_replace
    from pytensor.graph.traversal import graph_inputs
    from pytensor.tensor.type import TensorType
    from pytensor.tensor.variable import TensorConstant

    replace = {}
    sources = []
    for var in graph_inputs(outputs):
        if isinstance(var, SharedVariable) and isinstance(var.type, TensorType):
            new = var.type()
            sources.append(var)
        elif isinstance(var, TensorConstant) and var.data.size > LIFT_MIN_SIZE:
            # static length-1 axes stay (they broadcast); other lengths become unknown, so
            # the graph does not depend on the number of rows
            shape = tuple(1 if s == 1 else None for s in var.type.shape)
            new = TensorType(var.type.dtype, shape=shape)()
            sources.append(np.asarray(var.data))
        else:
            continue
        new.name = var.name or "data"
        replace[var] = new
    if not replace:
        return list(outputs), [], []
    new_outputs = clone_replace(list(outputs), replace, rebuild_strict=False)
    # (rebuilt, not ``graph_replace``d: the nodes' types follow the new inputs' unknown lengths;
    # a model's own SpecifyShape stays, it may make a length-1 axis broadcastable)
    return new_outputs, list(replace.values()), sources


def relinked(fn):
    """``fn`` as a process that loads it from the on-disk cache gets it: pickled and unpickled.

    PyTensor links an unpickled Python-VM function slightly differently from the one it just
    compiled (some elementwise nodes get other NumPy kernels), which moves results by an ulp or
    so (seen in a negative binomial Hessian: 2e-13). Using every Python-VM function in its
    unpickled form makes a fit give the same numbers to the last digit whether its functions were
    compiled now, loaded from the function cache or from the fit cache. A function that does not
    pickle (an op holding a local Python function) is never cached, and is returned as it is.
    """
    import pickle

    try:
        data = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - pickle raises several types for unpicklable objects
        return fn
    return pickle.loads(data)


class DataFunction:
    """A compiled function of ``(*args, *data)`` called as ``f(*args)``: the data are read from
    their sources (shared variables' current values, or constant arrays) at each call."""

    __slots__ = ("fn", "_getters")

    def __init__(self, fn, sources: list):
        self.fn = fn
        self._getters = tuple(
            (s.get_value, True) if hasattr(s, "get_value") else (s, False) for s in sources)

    def data(self) -> list:
        return [g(borrow=True) if shared else g for g, shared in self._getters]

    def __call__(self, *args):
        return self.fn(*args, *self.data())

    def __getattr__(self, name):
        if name in DataFunction.__slots__:  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.fn, name)


class Quiet:
    """A compiled function run with NumPy's floating-point warnings off.

    The Python-VM mode evaluates with NumPy kernels, which warn on ``inf - inf`` or ``log(0)``
    where the Numba kernels silently give ``nan``/``-inf``; the optimizers treat non-finite values
    themselves (a step to them is rejected), so the warnings would only be noise.
    """

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        with np.errstate(all="ignore"):
            return self.fn(*args, **kwargs)

    def __getattr__(self, name):
        if name in Quiet.__slots__:  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.fn, name)

"""The library of model files: bundled models, and loading a file, name or TOML text into a spec.

:func:`load_model` reads a ``.toml`` file (validated by :mod:`.toml`), a Python file defining
``build(data)``, or a bundled model by name (:func:`bundled_models`, :func:`list_models`) into a
:class:`~mle_ppl.ModelSpec` (:mod:`.spec`). This module imports neither PyMC nor the modules that
do at import time: listing the bundled files stays instant.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import inspect
import os
import sys
import tomllib
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from mle_ppl._src.errors import MLEError, ModelFileError, did_you_mean, first_line

if TYPE_CHECKING:
    from mle_ppl._src.model.spec import ModelSpec


def _bundled_dir() -> Path:
    return Path(os.fspath(importlib.resources.files("mle_ppl.models")))


def bundled_models() -> dict[str, Path]:
    """Bundled model files by name (``.toml`` and ``.py`` files of ``mle_ppl.models``)."""
    root = _bundled_dir()
    out = {}
    for p in sorted(root.iterdir()):
        if p.suffix in (".toml", ".py") and not p.name.startswith("_") and p.is_file():
            out.setdefault(p.stem, p)
    return out


def list_models() -> list[tuple[str, str]]:
    """Bundled models as ``(name, one-line description)`` pairs, sorted by name.

    Examples
    --------
    >>> names = [n for n, _ in list_models()]
    >>> "linear_regression" in names
    True
    """
    out = []
    for name, path in bundled_models().items():
        desc = _description(path)
        out.append((name, desc.strip().splitlines()[0] if desc and desc.strip() else ""))
    return out


def _description(path: Path) -> str:
    """A model file's description without building it (no PyMC import, no code run): TOML's
    ``[model] description``; a Python file's ``DESCRIPTION = "..."`` literal, else its docstring.
    Falls back to loading the file when the description is not a literal."""
    import ast

    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        desc = tomllib.loads(text).get("model", {}).get("description", "")
        if isinstance(desc, str):
            return desc
    else:
        tree = ast.parse(text)
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == "DESCRIPTION"):
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    return node.value.value
                break  # computed: ask the loaded module
        else:
            return ast.get_docstring(tree, clean=False) or ""
    return load_model(path).description


def loads_model(text: str, *, name: str = "model", base: Path | None = None) -> ModelSpec:
    """A :class:`ModelSpec` from TOML text (``base``: folder for a relative ``[model] data``).

    Examples
    --------
    >>> spec = loads_model('''
    ... [data]
    ... y = "y"
    ... [parameters]
    ... mu = {}
    ... sigma = { lower = 0 }
    ... [likelihood]
    ... y = { distribution = "Normal", mu = "mu", sigma = "sigma" }
    ... ''')
    >>> spec.parameter_names
    ('mu', 'sigma')
    """
    file = f"<{name}>"
    doc = _parse_toml_text(text, file)
    path = (base / f"{name}.toml") if base is not None else None
    spec = spec_from_toml(doc, path=path, file=file)
    model = doc.get("model")
    if not (isinstance(model, dict) and model.get("name")):
        spec.name = name
    return spec


def spec_from_toml(doc: Mapping, *, path: Path | None = None, file: str | None = None
                   ) -> ModelSpec:
    """Validate a parsed TOML document (a dict) and return its :class:`ModelSpec`."""
    from mle_ppl._src.model.spec import ModelSpec
    from mle_ppl._src.model.toml import parse_toml

    return ModelSpec.from_decl(parse_toml(doc, path=path, file=file))


def _load_toml(path: Path) -> ModelSpec:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ModelFileError(f"cannot read model file {str(path)!r}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelFileError(f"model file {path.name!r} is not UTF-8 text (byte {err.start} "
                             "cannot be decoded).") from None
    return spec_from_toml(_parse_toml_text(text, path.name), path=path, file=path.name)


def _parse_toml_text(text: str, file: str) -> dict:
    """``tomllib.loads`` with every way it can fail on hostile text as a ModelFileError.

    Besides syntax errors: arrays or tables nested thousands deep exhaust Python's recursion
    limit, and an integer of more than 4300 digits exceeds Python's int-from-text limit
    (``ValueError``).
    """
    where = f"model file {file!r}: invalid TOML"
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ModelFileError(f"{where}: {err}") from None
    except RecursionError:
        raise ModelFileError(f"{where}: arrays or tables are nested too deeply (thousands of "
                             "levels); a model file needs at most a few.") from None
    except ValueError as err:  # int() of more than 4300 digits
        what = ("an integer has more than 4300 digits" if "digits" in str(err)
                else first_line(err))
        raise ModelFileError(f"{where}: {what}; numbers in a model file must be ordinary "
                             "floats or integers.") from None
    except (TypeError, MemoryError) as err:
        raise ModelFileError(f"{where}: {type(err).__name__}") from None


def _load_python(path: Path) -> ModelSpec:
    from mle_ppl._src.model.expressions import parse_distribution_call
    from mle_ppl._src.model.spec import ModelSpec

    modname = f"mle_ppl_modelfile_{abs(hash(str(path.resolve())))}"
    try:
        ispec = importlib.util.spec_from_file_location(modname, path)
        module = importlib.util.module_from_spec(ispec)
        sys.modules[modname] = module
        try:
            ispec.loader.exec_module(module)
        finally:
            sys.modules.pop(modname, None)
    except MLEError:
        raise
    except SyntaxError as err:
        raise ModelFileError(f"Python model file {path.name!r}: syntax error at line "
                             f"{err.lineno}: {err.msg}") from None
    except Exception as err:  # noqa: BLE001 - user code: report it without a traceback
        raise ModelFileError(f"Python model file {path.name!r} failed to load: "
                             f"{type(err).__name__}: {first_line(err)}") from None
    build = getattr(module, "build", None)
    if not callable(build):
        raise ModelFileError(f"Python model file {path.name!r} must define build(data) -> "
                             "pymc.Model (data: the bound pandas DataFrame).")
    try:
        takes_priors = "priors" in inspect.signature(build).parameters
    except (TypeError, ValueError):
        takes_priors = False
    doc = (module.__doc__ or "").strip()
    description = getattr(module, "DESCRIPTION", None) or doc
    default = getattr(module, "DATA", None)
    priors = getattr(module, "PRIORS", {}) or {}
    if not isinstance(priors, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in priors.items()):
        raise ModelFileError(f"Python model file {path.name!r}: PRIORS must be a dict of "
                             "name -> 'Distribution(...)' strings.")
    for k, v in priors.items():
        parse_distribution_call(v, where=f"Python model file {path.name!r}, PRIORS[{k!r}]")
    return ModelSpec(name=str(getattr(module, "NAME", path.stem)), description=str(description),
                     path=path, priors=priors, _file=path.name,
                     _default_data=None if default is None else str(default), _build=build,
                     _build_takes_priors=takes_priors)


def load_model(path_or_name: str | PathLike | ModelSpec) -> ModelSpec:
    """Load a model file (``.toml`` or ``.py``) or a bundled model by name.

    Parameters
    ----------
    path_or_name : str or path
        A path to a ``.toml``/``.py`` model file, or the name of a bundled model (see
        :func:`list_models`).

    Returns
    -------
    ModelSpec

    Raises
    ------
    ModelFileError
        Unknown name (with the bundled names and a did-you-mean), missing file, or an invalid
        model file (the message names the file and the key path).

    Examples
    --------
    >>> spec = load_model("linear_regression")
    >>> spec.name
    'linear_regression'
    """
    from mle_ppl._src.model.spec import ModelSpec

    if isinstance(path_or_name, ModelSpec):
        return path_or_name
    if not isinstance(path_or_name, str | PathLike):
        raise ModelFileError(f"expected a model file path or bundled model name, got "
                             f"{type(path_or_name).__name__}.")
    path = Path(path_or_name)
    text = str(path_or_name)
    looks_like_path = path.suffix in (".toml", ".py") or os.sep in text or "/" in text
    if path.is_file():
        if path.suffix == ".py":
            return _load_python(path)
        if path.suffix == ".toml":
            return _load_toml(path)
        raise ModelFileError(f"model file {text!r}: unknown kind {path.suffix!r}; expected a "
                             ".toml or .py file, or a bundled model name.")
    bundled = bundled_models()
    if not looks_like_path and text in bundled:
        return load_model(bundled[text])
    if path.is_dir():
        raise ModelFileError(f"{text!r} is a directory, not a model file.")
    names = sorted(bundled)
    hint = did_you_mean(path.stem if looks_like_path else text, names)
    what = "model file does not exist" if looks_like_path else "unknown model"
    raise ModelFileError(f"{what}: {text!r}.{hint} Give a path to a .toml/.py model file or a "
                         f"bundled model name: {', '.join(names)}.")


def toml_file(path_or_name) -> Path | None:
    """The TOML file that :func:`load_model` reads for ``path_or_name``, without reading it.

    None for anything else (a Python model file, a ModelSpec, a name that is no bundled TOML
    model, a missing file): :func:`load_model` then decides, with its own errors.
    """
    if not isinstance(path_or_name, str | PathLike):
        return None
    path = Path(path_or_name)
    text = str(path_or_name)
    if path.is_file():
        return path if path.suffix == ".toml" else None
    looks_like_path = path.suffix in (".toml", ".py") or os.sep in text or "/" in text
    if looks_like_path:
        return None
    found = bundled_models().get(text)
    return found if found is not None and found.suffix == ".toml" and found.is_file() else None


__all__ = ["bundled_models", "list_models", "load_model", "loads_model", "spec_from_toml"]

"""Options and checks shared by the subcommands: MODEL/--data, numeric option types, output files.

Output files follow one rule: every input is validated, and the output folder is checked to be
writable, before any work starts; a file is written to a temporary sibling and renamed into place
only when it is complete, so a failed write (read-only or full filesystem) leaves nothing behind
and is reported with the path the user gave.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

#: Seeds accepted by --seed (NumPy's and PyMC's seeding take 32-bit unsigned integers).
MAX_SEED = 2**32 - 1


def add_model_arguments(parser) -> None:
    """``MODEL`` (model file or bundled name) and ``--data FILE``, worded once for all commands."""
    parser.add_argument("model", metavar="MODEL",
                        help="model file (.toml/.py) or bundled model name (see `mle-ppl models`)")
    parser.add_argument("--data", metavar="FILE", default=None,
                        help="data table, CSV or Parquet (default: the data the model file names)")


# ------------------------------------------------------------------ option types (argparse)
def _integer(text: str) -> int:
    text = text.strip()
    if len(text) > 30:  # int() of thousands of digits is slow, and no option needs them
        raise argparse.ArgumentTypeError(f"expected an integer, got {text[:20]}… "
                                         f"({len(text)} characters)")
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    """argparse type: an integer from ``lo`` to ``hi``.

    The upper limits keep a typo from becoming a run that never ends (``--starts 10**9``,
    ``--draws 10**12``); each is far above what a fit or a posterior needs.
    """
    def parse(text: str) -> int:
        v = _integer(text)
        if not lo <= v <= hi:
            what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
            raise argparse.ArgumentTypeError(f"expected {what} (at most {hi:,}), got {v}")
        return v

    parse.__name__ = f"integer {lo}..{hi}"
    return parse


#: Iteration caps, optimizer starts, draws and chains: generous upper limits.
MAX_ITER = 10_000_000
MAX_STARTS = 10_000
MAX_DRAWS = 10_000_000
MAX_CHAINS = 256

positive_int = int_range(1, MAX_ITER)  #: --max-iter
nonnegative_int = int_range(0, MAX_DRAWS)  #: --tune, --laplace-draws


def seed(text: str) -> int:
    """argparse type: a random seed, 0 <= seed <= 2**32 - 1."""
    v = _integer(text)
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, got {v}")
    return v


def memory_size(text: str) -> str:
    """argparse type: a memory size such as ``500M`` or ``4G`` (checked now, used later)."""
    from mle_ppl._src.errors import MLEError
    from mle_ppl._src.model.chunks import memory_budget

    try:
        memory_budget(text)
    except MLEError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r:.40}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r:.40}")
    return v


def probability(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r:.40}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (e.g. 0.95), got "
                                         f"{text!r:.40}")
    return v


# ------------------------------------------------------------------ output files
def _reason(err: BaseException, hide: str | None = None, shown: str | None = None) -> str:
    """An OS/netCDF error as a short reason, with no internal temporary path in it."""
    text = getattr(err, "strerror", None)
    if not text:
        full = str(err).strip()
        text = full.splitlines()[0] if full else type(err).__name__
    if hide and shown is not None:
        text = text.replace(hide, shown)
    return text


def check_writable_folder(option: str, value: str, folder: Path) -> None:
    """``folder`` exists and a file can be created in it (else an MLEError naming the option).

    Creating (and removing) an empty file is the one reliable test: permissions, read-only
    mounts and pseudo filesystems such as /proc all show up here, before any work is done.
    """
    from mle_ppl._src.errors import MLEError

    if not folder.is_dir():
        raise MLEError(f"{option} {value!r}: the folder {str(folder)!r} does not exist.")
    try:
        fd, name = tempfile.mkstemp(prefix=".mle-ppl-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise MLEError(f"{option} {value!r}: cannot write in the folder {str(folder)!r}: "
                       f"{err.strerror or type(err).__name__}.") from None


def check_out_file(option: str, value: str, suffixes: dict[str, str]) -> Path:
    """Validate an output file option before any work: its suffix, folder, and writability.

    ``suffixes`` maps accepted suffixes to a format description (``{".nc": "netCDF"}``).
    """
    from mle_ppl._src.errors import MLEError

    path = Path(value)
    if path.suffix.lower() not in suffixes:
        kinds = " or ".join(f"{suffix} ({kind})" for suffix, kind in suffixes.items())
        raise MLEError(f"{option} {value!r}: unknown format {path.suffix or '(no suffix)'!r}; use "
                       f"a name ending in {kinds}.")
    if path.is_dir() and path.suffix.lower() != ".zarr":
        raise MLEError(f"{option} {value!r} is a folder; give a file name.")
    check_writable_folder(option, value, path.parent if str(path.parent) else Path("."))
    return path


def write_file(option: str, value: str, path: Path, writer: Callable[[Path], None]) -> None:
    """Write ``path`` with ``writer(target)`` atomically: a temporary sibling, then a rename.

    On any failure (no permission, read-only or full filesystem, netCDF errors) the temporary
    file is removed, nothing is left at ``path``, and an MLEError names ``option`` and the path
    the user gave (never the temporary one).
    """
    from mle_ppl._src.errors import MLEError

    parent = path.parent if str(path.parent) else Path(".")
    failed = (f"{option} {value!r}: cannot write the file: {{}}. Nothing was written (the "
              "computation itself finished; its results are not printed when the file they "
              "go with cannot be saved). Free space or choose another path.")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    except OSError as err:
        raise MLEError(failed.format(err.strerror or type(err).__name__)) from None
    target = tmp / path.name
    try:
        writer(target)
        if path.is_dir() and path.suffix.lower() == ".zarr":
            shutil.rmtree(path)
        os.replace(target, path)
    except (OSError, RuntimeError) as err:  # netCDF4 reports a full disk as RuntimeError
        raise MLEError(failed.format(_reason(err, str(target), value))) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""Size limits on the numbers written in expressions and formulas, checked on the syntax tree.

Python's integers are unbounded: ``10**10**10`` or ``9**9**9`` is exact integer arithmetic that
runs until the process is killed, and formulaic evaluates formula factors (``I(...)``,
``poly(x, k)``) as Python. Every expression and formula factor is therefore checked here, on its
syntax tree, before anything evaluates it:

- an integer literal may not exceed :data:`MAX_INT` (2**53, the integers a float holds exactly);
  larger numbers are written as floats (``1e20``);
- a float literal must be finite (``1e999`` is ``inf``);
- every constant sub-expression (numbers, ``+ - * / // % **``, unary signs) is folded in floating
  point, which cannot hang, and must give a finite real number: ``10**10**10`` overflows and is
  refused, ``2**0.5`` is fine.

Nothing here evaluates Python integers: the folding converts every number to a float first.
"""

from __future__ import annotations

import ast
import math

from mle_ppl._src.errors import ModelFileError

#: Largest integer literal accepted (the integers a float64 represents exactly).
MAX_INT = 2**53

_FOLDABLE = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)


class _NotFinite(Exception):
    """A constant sub-expression whose value is not a finite real number."""


def _snippet(node: ast.AST, limit: int = 40) -> str:
    try:
        text = ast.unparse(node)
    except (ValueError, RecursionError):  # pragma: no cover - trees here are small
        text = type(node).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def int_text(value: int) -> str:
    """A huge integer shortened for a message: ``123456… (401 digits)``."""
    try:
        digits = str(abs(value))
    except ValueError:  # beyond Python's 4300-digit str() limit
        return f"of about {int(abs(value).bit_length() * math.log10(2)) + 1} digits"
    if len(digits) <= 20:
        return str(value)
    return f"{'-' if value < 0 else ''}{digits[:6]}… ({len(digits)} digits)"


def _quote(text: str, limit: int = 80) -> str:
    """``text`` quoted for a message, shortened in the middle of a long expression."""
    if len(text) > limit:
        text = text[: limit - 25] + " … " + text[-20:]
    return repr(text)


def _is_constant(node: ast.AST) -> bool:
    """Numbers combined by arithmetic only (no names, no calls): Python would fold it."""
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float)
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, ast.USub | ast.UAdd) and _is_constant(node.operand)
    if isinstance(node, ast.BinOp):
        return (isinstance(node.op, _FOLDABLE) and _is_constant(node.left)
                and _is_constant(node.right))
    return False


def _fold(node: ast.AST) -> float:
    """The value of a constant sub-expression, computed in floating point (never hangs)."""
    if isinstance(node, ast.Constant):
        return float(node.value)  # int literals are at most MAX_INT here
    if isinstance(node, ast.UnaryOp):
        v = _fold(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    a, b = _fold(node.left), _fold(node.right)
    try:
        if isinstance(node.op, ast.Add):
            v = a + b
        elif isinstance(node.op, ast.Sub):
            v = a - b
        elif isinstance(node.op, ast.Mult):
            v = a * b
        elif isinstance(node.op, ast.Div):
            v = a / b
        elif isinstance(node.op, ast.FloorDiv):
            v = a // b
        elif isinstance(node.op, ast.Mod):
            v = a % b
        else:
            v = a**b
    except ZeroDivisionError:
        raise _NotFinite("divides by zero") from None
    except OverflowError:
        raise _NotFinite("overflows (its value is beyond 1.8e308)") from None
    if isinstance(v, complex):
        raise _NotFinite("is not a real number (a negative number to a fractional power)")
    if not math.isfinite(v):
        raise _NotFinite("overflows (its value is beyond 1.8e308)")
    return v


def check_numbers(tree: ast.AST, *, text: str, where: str) -> None:
    """Refuse oversized literals and constant arithmetic that is not a finite real number.

    Parameters
    ----------
    tree : ast.AST
        The parsed expression (at most a few hundred nodes: the callers bound its size).
    text : str
        The expression as written, for the message.
    where : str
        Context (file and key) that starts the message.

    Raises
    ------
    ModelFileError
        Naming ``where``, the offending number or sub-expression, and the fix.

    Examples
    --------
    >>> import ast
    >>> check_numbers(ast.parse("x ** 2 + 2**0.5", mode="eval"), text="", where="key mu")
    >>> check_numbers(ast.parse("10**10**10", mode="eval"), text="10**10**10", where="key mu")
    Traceback (most recent call last):
    ...
    mle_ppl._src.errors.ModelFileError: key mu: the constant 10 ** 10 ** 10 in '10**10**10' \
overflows (its value is beyond 1.8e308); numbers in expressions must be finite floats.
    """
    prefix = f"{where}: " if where else ""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant):
            continue
        v = node.value
        if type(v) is int and abs(v) > MAX_INT:
            raise ModelFileError(
                f"{prefix}the integer {int_text(v)} in {_quote(text)} is too large: integers may "
                f"be at most 2**53 = {MAX_INT}; write large numbers as floats, e.g. 1e20.")
        if type(v) is float and not math.isfinite(v):
            raise ModelFileError(f"{prefix}the number {_snippet(node)} in {_quote(text)} is not "
                                 "finite (floats end at 1.8e308).")
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.BinOp | ast.UnaryOp) and _is_constant(node):
            try:
                _fold(node)
            except _NotFinite as why:
                raise ModelFileError(
                    f"{prefix}the constant {_snippet(node)} in {_quote(text)} {why}; numbers in "
                    "expressions must be finite floats.") from None
            continue  # its parts are folded with it
        todo.extend(ast.iter_child_nodes(node))

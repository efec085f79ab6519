"""The layers of ``mle_ppl/_src`` (docs/architecture.md), checked from the source's AST.

Every ``import`` counts: module level, inside functions, and under ``if TYPE_CHECKING``, since
each is a dependency of the module on another. The rules: no import cycle anywhere in
``mle_ppl/``; each layer imports only from the layers below it (or itself); no module over 600
lines; every module opens with a docstring whose first line states its job.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "mle_ppl"

#: Layer of each subpackage of ``mle_ppl._src``, bottom to top. ``inference`` and ``report`` are
#: peers: both sit on the engine, neither imports the other.
LAYERS = {"errors": 0, "model": 1, "engine": 2, "inference": 3, "report": 3, "api": 4,
          "bayes": 5, "cli": 6}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        mods[name] = path
    return mods


def _targets(mod: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = mod.split(".")
        keep = len(base) - node.level + (1 if path.name == "__init__.py" else 0)
        target = ".".join(base[:keep] + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{a.name}" for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``mle_ppl`` modules it imports (resolved to existing modules)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(mod, path, node):
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                # a package importing its own submodules, or the top package (lazy public face)
                if target and target != mod and not mod.startswith(target + ".") \
                        and target != "mle_ppl":
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _layer(mod: str) -> str | None:
    parts = mod.split(".")
    if len(parts) >= 3 and parts[1] == "_src":
        return parts[2]
    return None


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_every_module_is_in_a_known_layer():
    unknown = {m for m in _modules() if m.startswith("mle_ppl._src.")
               and _layer(m) not in LAYERS}
    assert not unknown, f"modules outside the layers {sorted(LAYERS)}: {sorted(unknown)}"


def test_layers_import_only_downward():
    bad = []
    for mod, targets in import_graph().items():
        here = _layer(mod)
        if here is None:
            continue
        for target in targets:
            there = _layer(target)
            if there is None or there == here:
                continue
            if LAYERS[there] >= LAYERS[here]:
                bad.append(f"{mod} ({here}) imports {target} ({there})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize("path", sorted(_modules().values()), ids=lambda p: str(
    p.relative_to(ROOT.parent)))
def test_module_size_and_docstring(path):
    text = path.read_text()
    n = text.count("\n")
    assert n <= MAX_LINES, f"{path.name} has {n} lines (at most {MAX_LINES}): split it by job"
    if path.name == "__init__.py" and not text.strip():
        return
    doc = ast.get_docstring(ast.parse(text))
    assert doc and doc.splitlines()[0].strip(), f"{path} has no docstring stating its job"

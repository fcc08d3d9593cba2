"""The house rule `api → domain ← workers`, checked on the real import graph (grimp).

Every import counts, including the deferred ones inside functions: a lazy import is still a
dependency. The rule is what lets each front end (API, worker, CLI) change without the others.
"""

from __future__ import annotations

from collections.abc import Iterator

import grimp
import pytest

PACKAGES = ("clipmod", "api", "workers", "cli", "bench", "tests", "migrations", "policies")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=False)


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _imports_of(graph: grimp.ImportGraph, package: str) -> Iterator[tuple[str, str]]:
    for module in graph.find_descendants(package) | {package}:
        for imported in graph.find_modules_directly_imported_by(module):
            yield module, imported


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("clipmod", {"api", "workers", "cli", "bench", "tests"}),
        ("api", {"workers", "cli", "bench", "tests"}),
        ("workers", {"api", "cli", "bench", "tests"}),
        ("cli", {"bench", "tests"}),
        ("bench", {"tests"}),
    ],
)
def test_layers(graph: grimp.ImportGraph, package: str, forbidden: set[str]) -> None:
    bad = sorted(f"{a} -> {b}" for a, b in _imports_of(graph, package) if _top(b) in forbidden)
    assert not bad, f"{package} must not import {sorted(forbidden)}:\n" + "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    # A package's __init__ importing its own submodules is how packages re-export; it is not a
    # cycle between concerns, so edges from a package to its own children are left out.
    edges = {
        m: {i for i in graph.find_modules_directly_imported_by(m) if not i.startswith(m + ".")}
        for m in graph.modules
    }
    assert _cycles(edges) == []


def test_modules_stay_small() -> None:
    """~400 lines is where a module starts holding two concerns; data-like modules excepted."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    exempt = {"clipmod/demo/world.py"}  # the generated world's object and scene tables
    big = []
    for package in ("clipmod", "api", "workers", "cli", "bench"):
        for path in (root / package).rglob("*.py"):
            rel = path.relative_to(root).as_posix()
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > 420 and rel not in exempt:
                big.append(f"{rel}: {lines} lines")
    assert not big, "split these by concern:\n" + "\n".join(big)

"""The dependency direction of STYLE.md, read from the imports of every module.

Below everything: ``paths``, ``errors``, ``log``, ``fsio``, ``signing`` (and the other small
top-level modules: ``machine``, ``logroll``, ``unixsock``, the package's ``__init__``). Then
``model <- plan <- {observe, apply <- bus, run} <- {proofs, sandbox} <- {cli, registry}``.

Inside a pair of braces the layers are siblings: neither imports the other. The test forbids
every import against the chain, sideways included. Packages STYLE.md does not name are placed:

* ``config`` (host and profile files -> models) sits beside ``plan``: both only read models.
* ``bus`` and ``run`` are the leaves of the effect group, and so is ``store``, the release
  store's read side (find, list, manifests, verify), which apply and observe both read.
  ``observe`` and ``apply`` are siblings: what the promote executor must read of a gateway it
  gets from its caller as a ``Probe`` (apply/poll.py), which observe/gateway.py implements.
* ``lab`` (boots the integration lab) sits beside ``proofs`` and ``sandbox``.
* ``registry`` is served by a CLI command, so ``cli`` is the top and nothing imports it.

A layer imports only layers of a lower rank (a bottom module may import another bottom module);
``registry`` never imports ``apply``; only run.py runs programs (subprocess; the CLI fork
server forks itself, cli/forkserver.py) and only bus/ talks to
pystemd. A second test walks the import graph between packages and fails on any cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "supervisor" / "agentgw"

BOTTOM = {"agentgw", "paths", "errors", "log", "fsio", "signing", "machine", "logroll",
          "unixsock"}
CHAIN: list[set[str]] = [
    BOTTOM,
    {"model"},
    {"plan", "config"},
    {"bus", "run", "store"},
    {"observe", "apply"},
    {"proofs", "sandbox", "lab"},
    {"registry"},
    {"cli"},
]
RANK = {layer: rank for rank, group in enumerate(CHAIN) for layer in group}
NEVER = {"registry": {"apply"}}
EXTERNAL_ONLY_IN = {"subprocess": "run", "pystemd": "bus"}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "data" not in p.relative_to(PACKAGE).parts)


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    if rel == Path("__init__.py"):
        return "agentgw"
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def layers_imported(path: Path) -> set[str]:
    """The agentgw layers ``path`` imports (``from agentgw import x`` counts as layer x when x
    is a layer, else as the package itself)."""
    found: set[str] = set()
    for name in imported(path):
        parts = name.split(".")
        if parts[0] != "agentgw" or len(parts) == 1:
            continue
        found.add(parts[1] if parts[1] in RANK else "agentgw")
    return found - {layer_of(path)}


def test_every_layer_has_a_place() -> None:
    """Each top-level module and package of agentgw is in the table, so none escapes it."""
    on_disk = {layer_of(p) for p in modules()}
    assert sorted(on_disk - RANK.keys()) == []
    assert sorted(RANK.keys() - on_disk) == []


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_respects_layers(path: Path) -> None:
    """No module imports a layer of its own rank or above, a banned process/D-Bus module, or
    (in the registry) apply."""
    layer = layer_of(path)
    rank = RANK[layer]
    ours = layers_imported(path)
    allowed = {other for other in ours if RANK[other] < rank or RANK[other] == rank == 0}
    assert sorted(ours - allowed) == [], f"{layer} (rank {rank}) imports upward or sideways"
    assert sorted(ours & NEVER.get(layer, set())) == [], f"{layer} must not import those"
    names = imported(path)
    for external, owner in EXTERNAL_ONLY_IN.items():
        uses = any(n == external or n.startswith(external + ".") for n in names)
        assert not uses or layer == owner, f"only {owner} may import {external}"


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {layer: set() for layer in RANK}
    for path in modules():
        graph[layer_of(path)] |= layers_imported(path)
    return graph


def cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Every cycle a depth-first walk meets (each reported from the node where it closes)."""
    done: set[str] = set()

    def walk(node: str, stack: list[str]) -> Iterator[list[str]]:
        if node in stack:
            yield [*stack[stack.index(node):], node]
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            yield from walk(nxt, [*stack, node])
        done.add(node)

    for start in sorted(graph):
        yield from walk(start, [])


def test_no_import_cycle_between_packages() -> None:
    """The package-level import graph (bottom modules each a node) has no cycle."""
    assert list(cycles(import_graph())) == []


def test_cycle_walk_finds_a_cycle() -> None:
    """The walk reports a planted cycle, so an empty answer means something."""
    assert list(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}})) == [["a", "b", "c", "a"]]


def test_layer_test_sees_the_package() -> None:
    """The scan finds run.py and its subprocess import, and observe reading through bus,
    so an empty scan cannot pass silently."""
    run_py = PACKAGE / "run.py"
    assert run_py in modules()
    assert "subprocess" in imported(run_py)
    assert "bus" in layers_imported(PACKAGE / "observe" / "status.py")

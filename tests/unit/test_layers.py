"""The dependency direction of STYLE.md, read from the imports of every module.

model <- plan <- {observe, apply <- bus, run} <- {cli, registry}; only run.py starts processes,
only bus/ talks to pystemd, the registry never imports apply/, and nothing imports the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "supervisor" / "agentgw"

# For each layer: agentgw layers it must never import.
FORBIDDEN: dict[str, set[str]] = {
    "model": {"plan", "observe", "apply", "bus", "run", "cli", "registry", "sandbox", "lab",
              "proofs", "config"},
    "plan": {"observe", "apply", "bus", "run", "cli", "registry", "sandbox", "lab"},
    "config": {"plan", "observe", "apply", "bus", "run", "cli", "registry", "sandbox", "lab"},
    "bus": {"plan", "observe", "apply", "run", "cli", "registry", "sandbox", "lab", "proofs"},
    "observe": {"apply", "cli", "registry", "lab"},
    "apply": {"cli", "registry", "lab"},
    "proofs": {"cli", "registry", "lab"},
    "registry": {"apply", "cli", "lab"},
    "sandbox": {"cli", "registry", "lab", "apply"},
    "lab": {"plan", "observe", "apply", "bus", "cli", "registry", "sandbox", "proofs"},
}
EXTERNAL_ONLY_IN = {"subprocess": "run", "pystemd": "bus"}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "data" not in p.relative_to(PACKAGE).parts)


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
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


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_respects_layers(path: Path) -> None:
    """No module imports a layer above it, a banned process/D-Bus module, or the CLI."""
    layer = layer_of(path)
    names = imported(path)
    ours = {n.split(".")[1] for n in names if n.startswith("agentgw.") and n.count(".") >= 1}
    bad = sorted(ours & FORBIDDEN.get(layer, set()))
    assert bad == [], f"{layer} must not import {bad}"
    if layer != "cli":
        assert "cli" not in ours, "only the CLI imports the CLI"
    for external, owner in EXTERNAL_ONLY_IN.items():
        uses = any(n == external or n.startswith(external + ".") for n in names)
        assert not uses or layer == owner, f"only {owner} may import {external}"


def test_layer_test_sees_the_package() -> None:
    """The scan finds run.py and its subprocess import, so an empty scan cannot pass silently."""
    run_py = PACKAGE / "run.py"
    assert run_py in modules()
    assert "subprocess" in imported(run_py)

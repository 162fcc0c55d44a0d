"""Lint the gateway units as systemd loaded them: runtime declared once, instances independent,
`systemd-analyze verify` clean, exposure at or under the host's threshold."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agentgw import run
from agentgw.paths import TEMPLATE_UNIT, Layout, unit_name

EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: ([0-9.]+)")
DEPENDENCIES = ("Requires", "Requisite", "PartOf", "BindsTo", "Upholds")
GATEWAY_PREFIX = "agent-gateway@"
SERVICE = "org.freedesktop.systemd1.Service"


@dataclass(frozen=True)
class Finding:
    check: str
    unit: str
    ok: bool
    detail: str
    evidence: dict[str, object] = field(default_factory=dict)


class UnitProps(Protocol):
    def unit_properties(
        self, name: str, interface: str = ..., names: Sequence[str] | None = None
    ) -> dict[str, object]: ...


def unit_files(layout: Layout, profile: str) -> list[Path]:
    """The template (the package's in /usr, or init's in /etc) and every drop-in systemd
    reads for this instance."""
    candidates = (layout.vendor_unit_dir / TEMPLATE_UNIT, layout.template_unit)
    files = [f for f in candidates if f.exists()] or [layout.template_unit]
    for d in (layout.unit_dir / "agent-gateway@.service.d", layout.dropin_dir(profile)):
        if d.is_dir():
            files += sorted(d.glob("*.conf"))
    return files


def pythonpath_lines(path: Path) -> list[str]:
    """Non-comment lines naming PYTHONPATH (an Environment= or anything else that sets it)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [
        f"{path}:{n}: {line.strip()}"
        for n, line in enumerate(text.splitlines(), start=1)
        if "PYTHONPATH" in line and not line.lstrip().startswith(("#", ";"))
    ]


def check_pythonpath(layout: Layout, profile: str) -> Finding:
    unit = unit_name(profile)
    hits = [hit for f in unit_files(layout, profile) for hit in pythonpath_lines(f)]
    if hits:
        return Finding("no-pythonpath-in-unit", unit, False,
                       f"set in the unit: {hits[0]}", {"lines": hits})
    return Finding("no-pythonpath-in-unit", unit, True,
                   "only the env file declares the runtime",
                   {"files": [str(f) for f in unit_files(layout, profile)]})


def check_independent(sd: UnitProps, profile: str) -> Finding:
    """No Requires=/PartOf=/BindsTo= (or kin) from this instance to another gateway."""
    unit = unit_name(profile)
    props = sd.unit_properties(unit, "org.freedesktop.systemd1.Unit", list(DEPENDENCIES))
    links = {
        dep: [str(u) for u in value if str(u).startswith(GATEWAY_PREFIX) and str(u) != unit]
        for dep, value in props.items()
        if isinstance(value, list)
    }
    bad: dict[str, object] = {dep: units for dep, units in links.items() if units}
    if bad:
        dep, units = next((d, u) for d, u in links.items() if u)
        return Finding("independent-instances", unit, False, f"{dep}={' '.join(units)}", dict(bad))
    return Finding("independent-instances", unit, True,
                   "no Requires/PartOf/BindsTo between instances", {})


def check_readiness(sd: UnitProps, profile: str, readiness: str) -> Finding:
    """The unit as loaded waits for what the profile's readiness says: health, Type=exec with
    the health waiter as ExecStartPost=; notify, Type=notify with NotifyAccess=all (READY=1
    from any of its processes)."""
    unit = unit_name(profile)
    props = sd.unit_properties(unit, SERVICE, ["Type", "NotifyAccess", "ExecStartPost"])
    kind, access = str(props["Type"]), str(props["NotifyAccess"])
    posts = [str(entry[0]) for entry in props["ExecStartPost"] or [] if entry]  # type: ignore[attr-defined]
    waiter = any(path.endswith("/_lib/ready") for path in posts)
    evidence: dict[str, object] = {"readiness": readiness, "Type": kind, "NotifyAccess": access,
                                   "ExecStartPost": posts}
    if readiness == "notify":
        ok = kind == "notify" and access == "all"
        want = "Type=notify, NotifyAccess=all"
    else:
        ok = kind == "exec" and waiter
        want = "Type=exec, ExecStartPost=<lib>/ready"
    seen = f"Type={kind}, NotifyAccess={access}" + (f", ExecStartPost={' '.join(posts)}"
                                                   if posts else "")
    detail = f"{readiness}: {seen}" if ok else f"{readiness} wants {want}; loaded {seen}"
    return Finding("readiness", unit, ok, detail + ("" if ok else " (run agentgw apply)"),
                   evidence)


def check_verify(profile: str) -> Finding:
    unit = unit_name(profile)
    result = run.run(["systemd-analyze", "verify", unit], check=False)
    lines = [x for x in (result.stdout + result.stderr).splitlines() if x.strip()]
    if result.returncode != 0 or lines:
        return Finding("systemd-analyze-verify", unit, False,
                       lines[0] if lines else f"exit {result.returncode}", {"output": lines})
    return Finding("systemd-analyze-verify", unit, True, "no complaints", {})


def exposure(unit: str) -> float | None:
    out = run.run(["systemd-analyze", "security", "--no-pager", unit], check=False).stdout
    match = EXPOSURE_RE.search(out)
    return float(match.group(1)) if match else None


def check_exposure(profile: str, threshold: float) -> Finding:
    unit = unit_name(profile)
    score = exposure(unit)
    if score is None:
        return Finding("exposure", unit, False, "systemd-analyze security gave no score", {})
    ok = score <= threshold
    return Finding("exposure", unit, ok, f"{score} (threshold {threshold})",
                   {"score": score, "threshold": threshold})


def lint_profiles(
    layout: Layout, sd: UnitProps, readiness: Mapping[str, str], threshold: float
) -> list[Finding]:
    """Every check for each profile (by name, with its readiness mode)."""
    findings: list[Finding] = []
    for p, mode in readiness.items():
        findings += [
            check_pythonpath(layout, p),
            check_independent(sd, p),
            check_readiness(sd, p, mode),
            check_verify(p),
            check_exposure(p, threshold),
        ]
    return findings

"""Set up a host inside the lab the way an operator would: init, config, releases, apply."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AGENTGW = "/opt/agentgw/venv/bin/agentgw"
PROFILES = ("core", "api", "mcp")
ETC = Path("/etc/agentgw")
OPT = Path("/opt/agent")
KEY = ETC / "keys" / "release-signing.key"


def agentgw(*args: str, check: bool = True, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([AGENTGW, *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"agentgw {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@dataclass(frozen=True)
class Releases:
    a: str
    b: str
    crash: str
    unhealthy: str
    wrongsha: str
    crashloop: str  # answers /health once, then exits 1 0.3 s later (and after every restart)


def setup_host(build: Path) -> Releases:
    """init, trust a signing key, add release A, B and the broken variants, apply 3 profiles.

    Idempotent, so every integration module can call it (the lab is shared by the session).
    """
    agentgw("init")
    for sub in ("core", "api"):
        secret = ETC / "secrets" / sub
        secret.mkdir(parents=True, exist_ok=True)
    for name, text in (("core/chat-token", "token\n"), ("api/provider-key", "key\n")):
        (ETC / "secrets" / name).write_text(text)
        (ETC / "secrets" / name).chmod(0o600)  # agentgw refuses secrets others can read
    if not KEY.exists():
        KEY.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        agentgw("release", "keygen", "--out", str(KEY))
    # The lab has no working KVM and the broker does not run gVisor (yet): its VMs run on
    # TCG, which must be opted into (issue 16).
    (ETC / "agentgw.yaml").write_text(
        f"isolation: production\nrequire_signature: true\ntrusted_keys:\n  - {KEY}.pub\n"
        "sandbox:\n  allow_emulation: true\n"
    )
    for name in PROFILES:
        shutil.copy(REPO / "gateways" / f"{name}.yaml", ETC / "gateways" / f"{name}.yaml")
    out = subprocess.run([str(REPO / "scripts/build-releases"), "--out", str(build)],
                         capture_output=True, text=True, check=True).stdout
    shas = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    good2 = build / "good2"
    if not good2.exists():
        shutil.copytree(build / "good", good2)
        (good2 / "CHANGES").write_text("second build\n")
    # B's sha is A's with another first digit: "b", unless A's already starts with "b" (then
    # the two would be one ambiguous sha).
    b = ("c" if shas["good"].startswith("b") else "b") + shas["good"][1:]
    labels = {"a": (build / "good", shas["good"]), "b": (good2, b)}
    for v in ("crash", "unhealthy", "wrongsha", "crashloop"):
        labels[v] = (build / v, shas[v])
    for label, (src, sha) in labels.items():
        if not list((OPT / "releases").glob(f"{sha}-{label}")):
            agentgw("release", "add", str(src), "--sha", sha, "--label", label,
                    "--sign-key", str(KEY))
    agentgw("apply")
    return Releases(a=shas["good"], b=b, crash=shas["crash"],
                    unhealthy=shas["unhealthy"], wrongsha=shas["wrongsha"],
                    crashloop=shas["crashloop"])


def main_pid(profile: str) -> tuple[int, str]:
    """MainPID and its start time (ExecMainStartTimestampMonotonic) of a profile's unit."""
    out = subprocess.run(
        ["systemctl", "show", "-P", "MainPID", f"agent-gateway@{profile}.service"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    pid = int(out)
    started = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[19] if pid else ""
    return pid, started


def current(profile: str) -> str:
    return (OPT / "gateways" / profile / "current").resolve().name


def status_json(profile: str) -> dict[str, object]:
    doc = json.loads(agentgw("status", profile, "--json", check=False).stdout)
    row = doc["profiles"][0]
    assert isinstance(row, dict)
    return row


@contextmanager
def all_promoted(build: Path) -> Iterator[Releases]:
    """The host of ``setup_host`` with all three profiles running release A.

    The lab is shared by the session: a profile that had no release promoted before is
    stopped, disabled and unpromoted again afterwards, as later modules expect to find it.
    """
    unpromoted = [p for p in PROFILES if not (OPT / "gateways" / p / "current").is_symlink()]
    releases = setup_host(build)
    for p in PROFILES:
        agentgw("promote", p, releases.a, "--allow-downgrade")
    try:
        yield releases
    finally:
        for p in unpromoted:
            unit = f"agent-gateway@{p}.service"
            for verb in ("stop", "disable", "reset-failed"):
                subprocess.run(["systemctl", verb, unit], capture_output=True, check=False)
            for link in ("current", "previous"):
                (OPT / "gateways" / p / link).unlink(missing_ok=True)

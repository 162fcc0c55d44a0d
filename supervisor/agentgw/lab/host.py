"""A host inside the lab, set up the way an operator would: init, config, releases, apply.

Shared by the integration tests and the benchmarks that run in a lab (tests/integration,
benchmarks/soak*, benchmarks/blast.py); ``repo`` is the checkout bound into the lab, whose
``gateways/`` and ``scripts/build-releases`` it uses.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from agentgw import run

AGENTGW = "/opt/agentgw/venv/bin/agentgw"
PROFILES = ("core", "api", "mcp")
ETC = Path("/etc/agentgw")
OPT = Path("/opt/agent")
KEY = ETC / "keys" / "release-signing.key"


def agentgw(*args: str, check: bool = True, env: dict[str, str] | None = None) -> run.Completed:
    """Run the installed ``agentgw`` with ``args``; AssertionError (a failed check, for tests
    and benchmarks alike) with its output when it exits non-zero and ``check`` is set."""
    proc = run.run([AGENTGW, *args], env=env, check=False)
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


def setup_host(repo: Path, build: Path) -> Releases:
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
    # The lab has no working KVM: the broker runs gVisor jobs; TCG stays allowed for the tests
    # that make gVisor unavailable or boot microVMs on purpose (issue 16).
    (ETC / "agentgw.yaml").write_text(
        f"isolation: production\nrequire_signature: true\ntrusted_keys:\n  - {KEY}.pub\n"
        "sandbox:\n  allow_emulation: true\n"
    )
    for name in PROFILES:
        shutil.copy(repo / "gateways" / f"{name}.yaml", ETC / "gateways" / f"{name}.yaml")
    out = run.run([repo / "scripts/build-releases", "--out", build]).stdout
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

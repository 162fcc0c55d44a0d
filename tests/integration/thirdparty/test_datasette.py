"""A runtime agentgw did not write, deployed the documented way: datasette from PyPI (compiled
dependencies, no READY=1, no sha in its health answer), built from the wheels `make setup`
fetched, through release build, a profile, apply, promote, verify, rollback and logs; and the
ways such a deployment fails, each named with its cause.
"""

from __future__ import annotations

import http.client
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgw.observe.lint import exposure
from tests.integration.support import (
    ETC,
    KEY,
    OPT,
    REPO,
    agentgw,
    current,
    main_pid,
    setup_host,
    sh,
    status_json,
)

pytestmark = pytest.mark.integration

WHEELS = Path("/var/cache/agentgw/wheels/datasette")
REQUIREMENTS = REPO / "releases/thirdparty/datasette/requirements.txt"
WEB = "web"
LISTEN = ("127.77.0.5", 8080)
NOTIFY = "webnotify"
SHA_1, SHA_2, SHA_BROKEN, SHA_VENV = "d5a7e11", "d5a7e12", "d5a7e13", "d5a7e14"


def health() -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection(*LISTEN, timeout=5, source_address=(LISTEN[0], 0))
    try:
        conn.request("GET", "/-/versions.json")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def build(sha: str, label: str) -> str:
    return agentgw("release", "build", "--sha", sha, "--label", label, "-r", str(REQUIREMENTS),
                   "--wheelhouse", str(WHEELS), "--sign-key", str(KEY)).stdout


def release_dir(sha: str) -> Path:
    (found,) = (OPT / "releases").glob(f"{sha}-*")
    return found


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    assert any(WHEELS.glob("datasette-*.whl")), f"no wheels in {WHEELS}: run make setup"
    setup_host(tmp_path_factory.mktemp("build"))
    shutil.copy(REPO / "gateways" / "web.yaml", ETC / "gateways" / "web.yaml")
    notify = (REPO / "gateways" / "web.yaml").read_text()
    notify = notify.replace("readiness: health", "readiness: notify")
    notify = notify.replace("start_timeout_s: 30", "start_timeout_s: 6")
    notify = notify.replace("127.77.0.5", "127.77.0.6")
    (ETC / "gateways" / f"{NOTIFY}.yaml").write_text(notify)
    agentgw("apply")
    build(SHA_1, "datasette")
    build(SHA_2, "datasette2")
    try:
        yield
    finally:
        for p in (WEB, NOTIFY):
            for verb in ("stop", "disable", "reset-failed"):
                sh("systemctl", verb, f"agent-gateway@{p}.service")
            (ETC / "gateways" / f"{p}.yaml").unlink(missing_ok=True)
        agentgw("apply", "--prune", check=False)


def test_build_is_repeatable(web: None) -> None:
    """The same requirements and wheels give the same content digest (version and created
    differ: they are the host's)."""
    first, second = build("d5a7e19", "again"), build("d5a7e1a", "again")
    digest = [out.splitlines()[-1].removeprefix("content ") for out in (first, second)]
    assert digest[0] == digest[1] and digest[0].startswith("sha256:")
    tree = release_dir("d5a7e19")
    assert not list(tree.rglob("*.pyc")), "bytecode in the release"
    assert list(tree.glob("markupsafe/_speedups*.so")), "the compiled extension is missing"


def test_promote_verify_logs_and_rollback(web: None) -> None:
    """promote (health readiness: aligned, healthy, though it sends no READY=1 and reports no
    sha), verify ISOLATED with exposure <= 1.5, its log lines in order as they happen, then
    a second build and a rollback to the first."""
    out = json.loads(agentgw("promote", WEB, SHA_1, "--json").stdout)
    assert out["result"] == "ok", out
    assert current(WEB).startswith(SHA_1)
    status, versions = health()
    assert status == 200 and "sha" not in versions
    row = status_json(WEB)
    assert row["aligned"]["state"] == "yes", row["aligned"]
    assert sh("systemctl", "show", "-P", "Type", f"agent-gateway@{WEB}.service").stdout.strip() \
        == "exec"

    verify = agentgw("verify", WEB, "--json", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    (record,) = json.loads(verify.stdout)["proofs"]
    assert record["profile"] == WEB and record["isolated"] is True
    score = exposure(f"agent-gateway@{WEB}.service")
    assert score is not None and score <= 1.5, score

    logs = agentgw("logs", WEB, "-n", "200", "-o", "cat", "--no-pager").stdout.splitlines()
    banner = max(i for i, line in enumerate(logs) if line.startswith("agentgw-launch "))
    running = [i for i, line in enumerate(logs) if "Uvicorn running on" in line]
    ready = [i for i, line in enumerate(logs) if line.startswith("agentgw-ready: healthy")]
    assert running and ready, logs[-20:]
    assert banner < running[-1] < ready[-1], logs[-20:]

    assert json.loads(agentgw("promote", WEB, SHA_2, "--json").stdout)["result"] == "ok"
    back = json.loads(agentgw("rollback", WEB, "--json").stdout)
    assert back["result"] == "ok" and current(WEB).startswith(SHA_1)
    assert health()[0] == 200


def test_systemctl_restart_returns_once_healthy(web: None) -> None:
    """readiness: health holds a plain `systemctl restart` until the health check answers:
    right after it returns, the new process answers 200 on the first try."""
    if not current(WEB).startswith(SHA_1):
        agentgw("promote", WEB, SHA_1)
    for _ in range(3):
        before, _ = main_pid(WEB)
        done = sh("systemctl", "restart", f"agent-gateway@{WEB}.service")
        assert done.returncode == 0, done.stderr
        assert health()[0] == 200
        after, _ = main_pid(WEB)
        assert after != before


def test_a_release_missing_a_dependency_is_rolled_back_naming_it(
    web: None, tmp_path: Path
) -> None:
    """A build without one of its dependencies exits at once: the promote rolls back well
    within start_timeout_s, names the exit and shows the gateway's last log lines (the
    ModuleNotFoundError); the history record keeps them."""
    tree = tmp_path / "broken"
    shutil.copytree(release_dir(SHA_1), tree, symlinks=True,
                    ignore=shutil.ignore_patterns("manifest.json", "manifest.sig"))
    shutil.rmtree(tree / "click")
    agentgw("release", "add", str(tree), "--sha", SHA_BROKEN, "--label", "noclick",
            "--sign-key", str(KEY))
    agentgw("promote", WEB, SHA_1, check=False)
    t0 = time.monotonic()
    proc = agentgw("promote", WEB, SHA_BROKEN, check=False)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert elapsed < 30, elapsed
    assert "the gateway exited with status 1 before it was ready (readiness: health)" in proc.stdout
    assert "last log lines of agent-gateway@web.service:" in proc.stdout
    assert "No module named 'click'" in proc.stdout
    assert current(WEB).startswith(SHA_1)
    history = json.loads(agentgw("history", WEB, "--json").stdout)
    last = [r for r in history["records"] if r["action"] == "promote"][-1]
    failure = last["detail"]["start_failure"]
    assert failure["readiness"] == "health"
    assert any("No module named 'click'" in line for line in failure["log"])


def test_notify_without_ready_names_readiness_health(web: None) -> None:
    """Under readiness: notify a runtime that never sends READY=1 fails at start_timeout_s
    with a message that says so and names readiness: health; status shows the same cause."""
    proc = agentgw("promote", NOTIFY, SHA_1, "--json", check=False)
    assert proc.returncode == 1
    record = json.loads(proc.stdout)
    assert "readiness: notify: no READY=1 within start_timeout_s=6s" in record["reason"]
    assert "set readiness: health" in record["reason"]
    assert record["start_failure"]["readiness"] == "notify"
    score = exposure(f"agent-gateway@{NOTIFY}.service")
    assert score is not None and score <= 1.5, score


def test_a_release_with_its_own_venv_runs_under_it(web: None, tmp_path: Path) -> None:
    """A release holding a virtualenv made with the host's /usr/bin/python3 is accepted (its
    interpreter link is the one absolute link allowed) and the launcher runs its interpreter."""
    tree = tmp_path / "venvtree"
    tree.mkdir()
    venv = sh("/usr/bin/python3", "-m", "venv", "--without-pip", str(tree / ".venv"))
    assert venv.returncode == 0, venv.stderr
    site = next((tree / ".venv/lib").glob("python3*/site-packages"))
    pip = sh("/opt/agentgw/venv/bin/python", "-m", "pip", "install", "-q", "--no-compile",
             "--no-index", "--find-links", str(WHEELS), "--target", str(site), "-r",
             str(REQUIREMENTS))
    assert pip.returncode == 0, pip.stderr
    agentgw("release", "add", str(tree), "--sha", SHA_VENV, "--label", "venv",
            "--sign-key", str(KEY))
    out = json.loads(agentgw("promote", WEB, SHA_VENV, "--json").stdout)
    assert out["result"] == "ok", out
    pid, _ = main_pid(WEB)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[0].decode() == f"{OPT}/gateways/{WEB}/current/.venv/bin/python"
    assert health()[0] == 200


def test_a_venv_linking_to_an_interpreter_the_host_does_not_allow_is_refused(
    web: None, tmp_path: Path
) -> None:
    """.venv/bin/python3 -> an interpreter not in agentgw.yaml: exit 2, nothing written."""
    tree = tmp_path / "badvenv"
    (tree / ".venv/bin").mkdir(parents=True)
    (tree / ".venv/pyvenv.cfg").write_text("home = /usr/local/bin\n")
    (tree / ".venv/bin/python3").symlink_to("/usr/local/bin/python3.12")
    (tree / ".venv/bin/python").symlink_to("python3")
    before = sorted(p.name for p in (OPT / "releases").iterdir())
    proc = agentgw("release", "add", str(tree), "--sha", "d5a7e1f", "--label", "badvenv",
                   "--sign-key", str(KEY), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "which this host does not allow" in proc.stderr
    assert sorted(p.name for p in (OPT / "releases").iterdir()) == before

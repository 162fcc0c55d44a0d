"""Backend choice: parsed from QEMU, cached per kernel + QEMU + host, and the probe's verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgw.errors import AgentgwError
from agentgw.sandbox import backend
from agentgw.sandbox.backend import Detection
from agentgw.sandbox.image import Image
from agentgw.sandbox.job import JobResult

HELP = """Supported machines are:
microvm              microvm (i386)
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)
"""



def store_gvisor(cache: Path, reason: str) -> Detection:
    """A gVisor detection stored in ``cache`` for kernel 6.1, QEMU 7.2 and host 6.18."""
    stored = Detection(backend="gvisor", machine="microvm", qemu_version="QEMU 7.2",
                       kernel_version="6.1", host_kernel="6.18", reason=reason,
                       detected_at="2026-01-01T00:00:00+00:00")
    key = backend.detection_key("6.1", "QEMU 7.2", "6.18")
    (cache / f"backend-{key}.json").write_text(stored.model_dump_json())
    return stored

def test_machines_are_read_from_qemu_help() -> None:
    """The first word of each line after the heading is a machine name."""
    assert {"microvm", "pc", "q35"} <= backend.parse_machines(HELP)
    assert "Supported" not in backend.parse_machines(HELP)


def test_probe_output_gives_kernel_and_cmdline() -> None:
    """The probe job prints uname -r, then /proc/cmdline."""
    ok = JobResult(exit_code=0, stdout=b"6.1.0-56-cloud-amd64\nconsole=ttyS0 quiet\n",
                   backend="tcg")
    assert backend.parse_probe(ok) == ("6.1.0-56-cloud-amd64", "console=ttyS0 quiet")


@pytest.mark.parametrize(
    "result",
    [
        JobResult(exit_code=1, stdout=b"a\nb\n", backend="kvm"),
        JobResult(exit_code=124, timed_out=True, backend="kvm"),
        JobResult(exit_code=0, stdout=b"only one line\n", backend="kvm"),
    ],
)
def test_a_failed_probe_is_an_error(result: JobResult) -> None:
    """A failing, hanging or short probe never counts as a working backend."""
    with pytest.raises(AgentgwError):
        backend.parse_probe(result)


def test_key_changes_with_kernel_qemu_and_host() -> None:
    """A new guest kernel, QEMU or host kernel means probing again."""
    base = backend.detection_key("6.1", "QEMU 7.2", "6.18")
    assert len({base, backend.detection_key("6.2", "QEMU 7.2", "6.18"),
                backend.detection_key("6.1", "QEMU 8.0", "6.18"),
                backend.detection_key("6.1", "QEMU 7.2", "6.19")}) == 4


def test_cached_detection_is_reused_without_booting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KVM or gVisor detection stored for this kernel + QEMU + host is returned as is: nothing
    is probed. (A stored TCG answer is not: it was a fallback, so the better ones are retried.)"""
    monkeypatch.setattr(backend, "qemu_version", lambda qemu="": "QEMU 7.2")
    monkeypatch.setattr(backend, "host_kernel", lambda: "6.18")
    monkeypatch.setattr(backend.gvisor, "runsc_path", lambda: "/usr/bin/runsc")

    def no_boot(*args: object, **kwargs: object) -> str:
        raise AssertionError("must not probe")

    monkeypatch.setattr(backend, "_try_kvm", no_boot)
    monkeypatch.setattr(backend, "try_gvisor", no_boot)
    img = Image(tmp_path, {"kernel_version": "6.1"})
    stored = store_gvisor(tmp_path, "gVisor: test")
    assert backend.detect(img, tmp_path) == stored
    assert stored.boundary == "user-space-kernel"


def test_a_cached_gvisor_answer_is_dropped_once_runsc_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gVisor removed after detection: probed again, and without emulation allowed, refused."""
    monkeypatch.setattr(backend, "qemu_version", lambda qemu="": "QEMU 7.2")
    monkeypatch.setattr(backend, "host_kernel", lambda: "6.18")
    monkeypatch.setattr(backend, "pick_machine", lambda qemu="": "microvm")
    monkeypatch.setattr(backend.gvisor, "runsc_path", lambda: None)
    monkeypatch.setattr(backend, "_try_kvm", lambda image, machine: "no /dev/kvm")
    img = Image(tmp_path, {"kernel_version": "6.1"})
    store_gvisor(tmp_path, "gVisor: test")
    found = backend.detect(img, tmp_path)
    assert found.backend == "none"
    assert "runsc (gVisor) is not installed" in found.reason
    with pytest.raises(AgentgwError, match="will not run jobs"):
        backend.machine_for(found)


@pytest.mark.parametrize(
    ("kvm", "gv", "emulation", "chosen"),
    [
        ("", "", False, "kvm"),
        ("", "runsc missing", False, "kvm"),
        ("hang", "", False, "gvisor"),
        ("hang", "", True, "gvisor"),
        ("hang", "runsc missing", True, "tcg"),
        ("hang", "runsc missing", False, "none"),
    ],
)
def test_backends_are_chosen_best_first(kvm: str, gv: str, emulation: bool, chosen: str) -> None:
    """KVM, then gVisor, then TCG only when emulation is allowed; the reason names the skipped."""
    got, reason = backend.choose(kvm, gv, allow_emulation=emulation)
    assert got == chosen
    if kvm:
        assert kvm in reason
    if chosen in ("tcg", "none"):
        assert gv in reason
    assert backend.is_boundary(got) == (chosen in ("kvm", "gvisor"))


def test_detection_falls_back_to_tcg_only_when_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KVM and gVisor failing: TCG with the reasons when allowed, else none; cached."""
    monkeypatch.setattr(backend, "qemu_version", lambda qemu="": "QEMU 7.2")
    monkeypatch.setattr(backend, "pick_machine", lambda qemu="": "microvm")
    monkeypatch.setattr(backend, "_try_kvm", lambda image, machine: "a KVM boot failed: hang")
    monkeypatch.setattr(backend, "try_gvisor", lambda access: "runsc (gVisor) is not installed")
    img = Image(tmp_path, {"kernel_version": "6.1"})
    found = backend.detect(img, tmp_path, allow_emulation=True)
    assert found.backend == "tcg"
    assert "a KVM boot failed: hang" in found.reason and "not a security boundary" in found.reason
    assert len(list(tmp_path.glob("backend-*.json"))) == 1
    assert backend.detect(img, tmp_path).backend == "none"


def test_without_a_way_to_gvisor_a_stored_gvisor_answer_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gvisor access unavailable (the broker without its job socket): a stored gVisor answer is
    not used; KVM failing, TCG when allowed, with the access's reason, and that TCG answer is
    then reused without probing again."""
    monkeypatch.setattr(backend, "qemu_version", lambda qemu="": "QEMU 7.2")
    monkeypatch.setattr(backend, "host_kernel", lambda: "6.18")
    monkeypatch.setattr(backend, "pick_machine", lambda qemu="": "microvm")
    monkeypatch.setattr(backend.gvisor, "runsc_path", lambda: "/usr/bin/runsc")
    probes: list[str] = []
    monkeypatch.setattr(backend, "_try_kvm",
                        lambda image, machine: probes.append("kvm") or "hang")

    def no_gvisor(request: object) -> object:
        raise AssertionError("gVisor must not be probed when it is unavailable")

    access = backend.Gvisor(run=no_gvisor, unavailable="agentgw-job.socket is not listening")
    img = Image(tmp_path, {"kernel_version": "6.1"})
    store_gvisor(tmp_path, "gVisor: test")
    found = backend.detect(img, tmp_path, allow_emulation=True, access=access)
    assert found.backend == "tcg"
    assert "gVisor skipped, agentgw-job.socket is not listening" in found.reason
    again = backend.detect(img, tmp_path, allow_emulation=True, access=access)
    assert again == found and probes == ["kvm"]
    assert backend.detect(img, tmp_path, access=access).backend == "none"


def test_the_broker_proves_its_way_to_gvisor_or_detects_again_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored gVisor answer (root's runsc) is used by the broker only once a probe job through
    its job socket works; when that fails, KVM is probed again, through a job unit too, and the
    choice says why both were skipped (here: none, emulation not allowed)."""
    from agentgw.paths import Layout
    from agentgw.sandbox import jobclient, serve

    monkeypatch.setattr(backend, "qemu_version", lambda qemu="": "QEMU 7.2")
    monkeypatch.setattr(backend, "host_kernel", lambda: "6.18")
    monkeypatch.setattr(backend, "pick_machine", lambda qemu="": "microvm")
    monkeypatch.setattr(backend.gvisor, "runsc_path", lambda: "/usr/bin/runsc")
    monkeypatch.setattr(backend, "_try_kvm", lambda image, machine: "hang")
    monkeypatch.setattr(jobclient, "unavailable", lambda path, backend="gvisor": "")
    img = Image(tmp_path, {"kernel_version": "6.1"})
    stored = store_gvisor(tmp_path, "gVisor: root's")
    layout = Layout(root=tmp_path)
    works = JobResult(exit_code=0, stdout=b"4.4.0\nBOOT_IMAGE=/vmlinuz-4.4.0\n", backend="gvisor")
    monkeypatch.setattr(jobclient, "runner", lambda path, backend="gvisor": lambda request: works)
    found, access = serve.pick_backend(layout, img, tmp_path, allow_emulation=False)
    assert (found, access.unavailable) == (stored, "")

    def refused(request: object) -> JobResult:
        raise AgentgwError("cannot reach the job socket: Connection refused")

    monkeypatch.setattr(jobclient, "runner", lambda path, backend="gvisor": refused)
    found, access = serve.pick_backend(layout, img, tmp_path, allow_emulation=False)
    assert found.backend == "none"
    assert "gVisor skipped, gVisor failed: cannot reach the job socket" in found.reason
    assert access.unavailable.startswith("gVisor failed: cannot reach")
    assert found.reason.startswith("no sandbox backend: KVM skipped, a KVM boot failed: "
                                   "cannot reach the job socket"), found.reason

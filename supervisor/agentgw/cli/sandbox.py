"""``agentgw sandbox build|selftest|serve`` and ``agentgw exec PROFILE -- ARGV``.

``exec`` asks the profile's broker (``agentgw sandbox serve``, run by agentgw-sandbox.service)
over its socket, as the gateway does; ``--direct`` runs the job in this process instead on the
self-tested backend (a cold KVM microVM, a gVisor sandbox, or TCG when allowed).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TypedDict, Unpack

import click
from pydantic import ValidationError

from agentgw.cli.context import App, echo_json, etc_option, pass_app
from agentgw.config.load import load_config
from agentgw.errors import Exit, die, usage
from agentgw.fsio import write_atomic
from agentgw.log import get_logger
from agentgw.model.fields import PROFILE_NAME_RE
from agentgw.paths import Layout
from agentgw.sandbox import backend, image
from agentgw.sandbox.broker import QUEUE_WAIT_S, ExecLog
from agentgw.sandbox.job import JobRequest, JobResult, check_relative_path
from agentgw.sandbox.protocol import call, render_record

log = get_logger(__name__)

CACHE_ENV = "AGENTGW_SANDBOX_CACHE"

cache_option = click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=CACHE_ENV,
    default=None,
    help=f"Image cache (default ROOT/{image.DEFAULT_CACHE}; also ${CACHE_ENV}).",
)


def cache_dir(layout: Layout, cache: Path | None) -> Path:
    return cache.absolute() if cache is not None else layout.root / image.DEFAULT_CACHE


def allow_emulation(layout: Layout) -> bool:
    """sandbox.allow_emulation from the host config; False without a config directory."""
    if not layout.etc.is_dir():
        return False
    return load_config(layout.etc).host.sandbox.allow_emulation


@click.group("sandbox")
def sandbox() -> None:
    """Build and check the microVM sandbox that runs untrusted code."""


@sandbox.command("build")
@cache_option
@click.option("--force", is_flag=True, help="Rebuild even if the cached image is current.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@pass_app
def build(app: App, cache: Path | None, force: bool, as_json: bool) -> None:
    """Fetch the Debian cloud kernel and build the base initramfs (cached, reproducible)."""
    built, fresh = image.build(cache_dir(app.layout, cache), force=force)
    if as_json:
        echo_json({"dir": str(built.dir), "built": fresh, "manifest": dict(built.manifest)})
        return
    state = "built" if fresh else "up to date"
    click.echo(f"sandbox image {state}: {built.dir}")
    click.echo(f"  kernel     {built.kernel_version} ({built.manifest['kernel_package_version']})")
    click.echo(f"  busybox    {built.manifest['busybox_version']}")
    for name, digest in sorted(built.manifest["files"].items()):
        click.echo(f"  {name:<10} sha256:{digest}")


@sandbox.command("selftest")
@cache_option
@click.option("--redetect", is_flag=True, help="Probe KVM again instead of the cached answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the self-test record as JSON.")
@pass_app
def selftest(app: App, cache: Path | None, redetect: bool, as_json: bool) -> None:
    """Pick the backend, best first (KVM microVM, gVisor, then QEMU TCG only with
    sandbox.allow_emulation: true), prove a job runs under another kernel than the host's, and
    record the result. Without a usable backend: exit 1 with the reasons."""
    directory = cache_dir(app.layout, cache)
    built = image.load(directory)
    detection = backend.detect(built, directory, redetect=redetect,
                               allow_emulation=allow_emulation(app.layout))
    if detection.backend == "none":
        _write_json(app.layout.sandbox_selftest, {
            "backend": "none", "boundary": "none", "reason": detection.reason,
            "time": detection.detected_at})
    record = backend.probe(built, backend.machine_for(detection), reason=detection.reason)
    _write_json(app.layout.sandbox_selftest, record.model_dump(mode="json"))
    if as_json:
        echo_json(record.model_dump(mode="json"))
    else:
        click.echo(f"backend        {record.backend} ({record.boundary}); {record.reason}")
        click.echo(f"guest kernel   {record.guest_kernel}")
        click.echo(f"guest cmdline  {record.guest_cmdline}")
        click.echo(f"host kernel    {record.host_kernel}")
        verdict = "differs from the host" if record.differs else "SAME AS THE HOST"
        click.echo(f"result         {verdict} ({record.duration:.2f} s)")
    if not record.differs:
        sys.exit(Exit.VERIFY)


@sandbox.command("serve")
@cache_option
@etc_option()
@click.option("--records", default=None, metavar="FILE|-",
              help="Append exec records here; '-': to stdout, which the unit opens in append "
              "mode [default: ROOT/var/lib/agentgw/sandbox/execs.jsonl].")
@click.option("--queue-wait", type=click.FloatRange(min=0), default=QUEUE_WAIT_S,
              show_default=True, help="Seconds a request waits for a free slot before 'busy'.")
@pass_app
def serve(
    app: App, cache: Path | None, etc: Path | None, records: str | None, queue_wait: float
) -> None:
    """Run the broker for /run/agentgw/sandbox/<p>.sock (0660, root:agent-<p>); only
    agent-<p> and root are served (SO_PEERCRED). Run by agentgw-sandbox.service (Type=notify),
    it serves the connections each profile's relay passes over its control socket (the sockets
    are systemd's); run by hand, it makes a socket per applied profile. Until SIGTERM.
    """
    from agentgw.sandbox.serve import records_on_stdout, run_broker

    config = load_config(etc if etc is not None else app.layout.etc)
    if records == "-":
        sink = records_on_stdout()
    else:
        sink = ExecLog.open(Path(records) if records else app.layout.sandbox_execs)
    try:
        run_broker(app.layout, config, cache=cache_dir(app.layout, cache), records=sink,
                   queue_wait_s=queue_wait)
    finally:
        sink.close()


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n",
                 tmp=path.with_name(f".{path.name}.{os.getpid()}"))


def read_files(specs: tuple[str, ...]) -> dict[str, bytes]:
    """``LOCAL:REMOTE`` (or just ``LOCAL``, kept under its base name) -> {remote: bytes}."""
    files: dict[str, bytes] = {}
    for spec in specs:
        local, sep, remote = spec.partition(":")
        remote = remote if sep else os.path.basename(local)
        try:
            check_relative_path(remote)
        except ValueError as exc:
            raise usage(str(exc), hint="REMOTE is relative to the job's working directory") from exc
        try:
            files[remote] = Path(local).read_bytes()
        except OSError as exc:
            raise usage(f"cannot read {local}: {exc.strerror}") from exc
    return files


def build_request(argv: tuple[str, ...], **fields: object) -> JobRequest:
    try:
        return JobRequest.model_validate({"argv": argv, **fields})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise usage(f"bad sandbox request: {where}: {first['msg']}") from exc


def emit(result: JobResult) -> None:
    """The job's output as it came back, then what agentgw has to say about it (stderr)."""
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(result.stderr)
    sys.stderr.buffer.flush()
    for name, cut in (("stdout", result.stdout_truncated), ("stderr", result.stderr_truncated)):
        if cut:
            click.echo(f"agentgw: {name} truncated", err=True)
    if result.timed_out:
        click.echo(f"agentgw: timed out ({result.detail})", err=True)


class ExecOptions(TypedDict):
    """The options of ``agentgw exec`` (see the option decorators)."""

    pass_stdin: bool
    files: tuple[str, ...]
    timeout: float | None
    memory: int | None
    direct: bool
    cache: Path | None


@click.command("exec")
@click.argument("profile")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-i", "--stdin", "pass_stdin", is_flag=True, help="Pass this stdin to the job.")
@click.option("--file", "files", multiple=True, metavar="LOCAL:REMOTE",
              help="Copy a file into the job's working directory (repeatable).")
@click.option("--timeout", type=float, default=None,
              help="Seconds [default: the host's sandbox.timeout_s; 10 with --direct].")
@click.option("--memory", type=int, default=None,
              help="MiB of VM memory [default: the host's sandbox.memory_mb; 256 with --direct].")
@click.option("--direct", is_flag=True,
              help="Run the job in this process instead of asking the profile's broker: a "
              "KVM microVM, else gVisor (runsc; needs root), else TCG only with "
              "sandbox.allow_emulation: true; without the broker's confinement.")
@cache_option
@pass_app
def exec_(
    app: App, profile: str, argv: tuple[str, ...], **options: Unpack[ExecOptions]
) -> None:
    """Run ARGV in a fresh microVM for PROFILE; exit with the job's exit code.

    The request goes through the profile's broker socket (/run/agentgw/sandbox/PROFILE.sock),
    exactly as the gateway's does, so it is limited, queued and recorded the same way. Limits
    larger than the host's are lowered to them. --direct skips the broker (--cache applies
    only then).

    Example: agentgw exec api -- sh -c 'echo hi; exit 3'
    """
    pass_stdin, files, direct = options["pass_stdin"], options["files"], options["direct"]
    timeout, memory, cache = options["timeout"], options["memory"], options["cache"]
    if not PROFILE_NAME_RE.fullmatch(profile):
        raise usage(f"bad profile name: {profile!r}", hint="names match [a-z][a-z0-9]{0,24}")
    chosen = {k: v for k, v in (("timeout_s", timeout), ("memory_mb", memory)) if v is not None}
    request = build_request(
        argv,
        stdin=sys.stdin.buffer.read() if pass_stdin else b"",
        files=read_files(files),
        **chosen,
    )
    result = run_direct(app.layout, profile, request, cache) if direct else (
        run_brokered(app.layout, profile, request))
    log.info("sandbox_exec", profile=profile, exit_code=result.exit_code,
             backend=result.backend, duration_s=result.duration_s, direct=direct)
    emit(result)
    sys.exit(result.exit_code)


def run_brokered(layout: Layout, profile: str, request: JobRequest) -> JobResult:
    path = layout.sandbox_socket(profile)
    try:
        result, _ = call(path, request)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise die(
            f"no sandbox broker for profile {profile} at {path} ({exc.strerror})",
            hint="is the profile applied ('agentgw apply') and the broker running "
            "('systemctl start agentgw-sandbox', after 'agentgw sandbox build')? "
            "--direct boots the VM here instead",
        ) from exc
    except OSError as exc:
        raise die(f"cannot reach the sandbox broker at {path}: {exc.strerror or exc}",
                  hint="exec through the broker needs root or the profile's user") from exc
    return result


def run_direct(
    layout: Layout, profile: str, request: JobRequest, cache: Path | None
) -> JobResult:
    """A cold VM in this process, recorded like a brokered exec."""
    directory = cache_dir(layout, cache)
    built = image.load(directory)
    detection = backend.detect(built, directory, allow_emulation=allow_emulation(layout))
    result = backend.run_once(detection, built, request)
    try:
        records = ExecLog.open(layout.sandbox_execs)
    except OSError as exc:  # the job ran; a record this user cannot write is not its failure
        log.warning("sandbox_record_failed", path=str(layout.sandbox_execs), error=exc.strerror)
        return result
    try:
        records.append(render_record(profile=profile, uid=os.getuid(), argv=request.argv,
                                     via="direct", result=result))
    finally:
        records.close()
    return result

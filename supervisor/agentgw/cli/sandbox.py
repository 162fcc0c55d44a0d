"""``agentgw sandbox build|selftest`` and ``agentgw exec PROFILE -- ARGV``.

``exec`` boots a cold microVM for the job itself; once the per-profile broker exists it will go
through the profile's socket instead, with the same request and result.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from agentgw.cli.context import App, echo_json, pass_app
from agentgw.errors import Exit, usage
from agentgw.log import get_logger
from agentgw.model.profile import PROFILE_NAME_RE
from agentgw.paths import Layout
from agentgw.sandbox import backend, image
from agentgw.sandbox.job import JobRequest, JobResult, check_relative_path
from agentgw.sandbox.vm import run_cold

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


def selftest_path(layout: Layout) -> Path:
    """Where the last self-test is kept for verify and the registry."""
    return layout.state / "sandbox" / "selftest.json"


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
    """Boot a VM and prove it runs another kernel than the host's; record the result."""
    directory = cache_dir(app.layout, cache)
    built = image.load(directory)
    detection = backend.detect(built, directory, redetect=redetect)
    record = backend.probe(built, backend.machine_for(detection), reason=detection.reason)
    _write_json(selftest_path(app.layout), record.model_dump(mode="json"))
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


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


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


@click.command("exec")
@click.argument("profile")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-i", "--stdin", "pass_stdin", is_flag=True, help="Pass this stdin to the job.")
@click.option("--file", "files", multiple=True, metavar="LOCAL:REMOTE",
              help="Copy a file into the job's working directory (repeatable).")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds.")
@click.option("--memory", type=int, default=256, show_default=True, help="MiB of VM memory.")
@cache_option
@pass_app
def exec_(
    app: App, profile: str, argv: tuple[str, ...], pass_stdin: bool, files: tuple[str, ...],
    timeout: float, memory: int, cache: Path | None,
) -> None:
    """Run ARGV in a fresh microVM for PROFILE; exit with the job's exit code.

    Example: agentgw exec api -- sh -c 'echo hi; exit 3'
    """
    if not PROFILE_NAME_RE.fullmatch(profile):
        raise usage(f"bad profile name: {profile!r}", hint="names match [a-z][a-z0-9]{0,24}")
    request = build_request(
        argv,
        stdin=sys.stdin.buffer.read() if pass_stdin else b"",
        files=read_files(files),
        timeout_s=timeout,
        memory_mb=memory,
    )
    directory = cache_dir(app.layout, cache)
    built = image.load(directory)
    machine = backend.machine_for(backend.detect(built, directory))
    result = run_cold(machine, built, request)
    log.info("sandbox_exec", profile=profile, exit_code=result.exit_code,
             backend=result.backend, duration_s=result.duration_s)
    emit(result)
    sys.exit(result.exit_code)

"""``agentgw release``: add, list, verify and garbage-collect immutable releases; make keys."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict, Unpack

import click

from agentgw.apply.release import AddResult, add_release, gc
from agentgw.apply.release_source import exported_commit
from agentgw.cli.context import App, echo_json, pass_app
from agentgw.config import load_config
from agentgw.errors import AgentgwError, Exit, usage
from agentgw.fsio import write_atomic
from agentgw.model.host import HostConfig
from agentgw.model.release import ReleasePolicy, ReleaseRef
from agentgw.paths import Layout
from agentgw.plan.release import (
    DEFAULT_LABEL,
    check_label,
    check_sha,
    content_digest,
    render_statement,
)
from agentgw.plan.tree_diff import render_problems
from agentgw.signing import generate_keypair
from agentgw.store.release import (
    find_release,
    gc_candidates,
    list_releases,
    verify_release,
)

# The reproducible-builds convention: with it set, adding the same source twice (or again after
# an interrupted add) yields byte-identical trees, manifest and signature included.
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
# An armored SSH signature is ~300 bytes; nothing larger is read.
SIGNATURE_CAP = 64 * 1024


def host_policy(layout: Layout) -> ReleasePolicy:
    """The release trust rules of agentgw.yaml; the defaults when there is no config at all."""
    if not layout.etc.is_dir():
        return ReleasePolicy()
    return ReleasePolicy.of_host(load_config(layout.etc).host)


def _created() -> datetime | None:
    value = os.environ.get(SOURCE_DATE_EPOCH)
    if value is None:
        return None
    if not value.isdigit():
        raise usage(
            f"{SOURCE_DATE_EPOCH}={value!r} is not a number of seconds",
            hint=f"unset {SOURCE_DATE_EPOCH}, or set it to a Unix time",
        )
    return datetime.fromtimestamp(int(value), UTC)


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


@contextlib.contextmanager
def _source(src: Path | None, repo: Path | None, sha: str) -> Iterator[Path]:
    """SRC as given, or commit SHA of REPO exported to a temporary tarball."""
    if repo is None:
        if src is None:
            raise usage("give SRC or --git REPO", hint="agentgw release add ./tree --sha 3f9c2e1")
        yield src
    elif src is not None:
        raise usage("give SRC or --git REPO, not both", hint="--git exports SHA of REPO as SRC")
    else:
        with exported_commit(repo, sha) as tarball:
            yield tarball


@click.group("release")
def release() -> None:
    """Immutable release trees: /opt/agent/releases/<sha>-<label>/ with a manifest.

    A release is built beside its final place and renamed in complete, root-owned and
    read-only; with a signing key it carries an Ed25519 signature (manifest.sig).
    """


class AddOptions(TypedDict):
    """The options of ``release add`` beyond the key (see the option decorators)."""

    signature: Path | None
    repo: Path | None
    allow_untrusted_source: bool


@release.command("add")
@click.argument("src", required=False, type=click.Path(path_type=Path))
@click.option("--sha", required=True, help="The git commit the release is built from (7-40 hex).")
@click.option(
    "--label", default=DEFAULT_LABEL, show_default=True, help="Name suffix: [a-z0-9._-], <= 40."
)
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 private key (from 'release keygen') to sign the manifest with.",
)
@click.option(
    "--signature",
    "signature",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Signature made off-host by 'agentgw release sign' (the host needs only the public key).",
)
@click.option(
    "--git",
    "repo",
    type=click.Path(file_okay=False, path_type=Path),
    help="Export commit SHA of this git repository instead of giving SRC.",
)
@click.option(
    "--allow-untrusted-source",
    is_flag=True,
    help="Add a directory that users other than root can change (read race-free, file by "
    "file, through O_NOFOLLOW directory fds; each must stay the inode scanned).",
)
@pass_app
def add(
    app: App,
    src: Path | None,
    sha: str,
    label: str,
    sign_key: Path | None,
    **options: Unpack[AddOptions],
) -> None:
    """Add SRC (a directory or a tarball) as release <sha>-<label>.

    Refused before anything is written: members escaping the tree, absolute paths, links out,
    device nodes or fifos, a bad sha or label, a missing or untrusted key when the host requires
    signatures, a --signature that does not cover this tree (exit 3), a directory users other
    than root can change (without --allow-untrusted-source). Adding the same content again
    changes nothing.
    """
    signature, repo = options["signature"], options["repo"]
    check_sha(sha)
    check_label(label)
    policy = host_policy(app.layout)
    created = _created()
    statement_sig = _read_signature(signature)
    with _source(src, repo, sha) as path:
        result = add_release(app.layout, path, sha, label, sign_key, policy, created=created,
                             statement_sig=statement_sig,
                             allow_untrusted=options["allow_untrusted_source"])
    _report(result, "signed" if sign_key else "signed off-host" if signature else "unsigned")


def _read_signature(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()[:SIGNATURE_CAP]
    except OSError as exc:
        raise usage(f"cannot read {path}: {exc.strerror}", hint="give the .sig file") from exc


@release.command("sign")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--sha", required=True, help="The git commit the release is built from (7-40 hex).")
@click.option(
    "--label", default=DEFAULT_LABEL, show_default=True, help="Name suffix: [a-z0-9._-], <= 40."
)
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 private key (from 'release keygen'); never needed on the hosts.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the signature (default: SRC.sig beside SRC).",
)
def sign_(src: Path, sha: str, label: str, key_path: Path, out: Path | None) -> None:
    """Sign SRC once, off-host, for every host that trusts the key.

    The signature covers a host-independent statement, printed on stdout: the release's sha,
    label and content digest (every path, type, mode, sha256 and link target as 'release add'
    would install them), not what a host adds (version, created). The envelope is OpenSSH's
    (ssh-keygen -Y sign, namespace agentgw-release), so the standard tool verifies it too:
    ssh-keygen -Y verify -f allowed_signers -I release -n agentgw-release -s SIG < statement.
    Hosts then run: agentgw release add SRC --sha SHA --label LABEL --signature SIG.
    """
    from agentgw.apply.release_tree import source_files
    from agentgw.signing import fingerprint, load_private_key, sshsig

    check_sha(sha)
    check_label(label)
    key = load_private_key(key_path)
    statement = render_statement(sha, label, content_digest(source_files(src)))
    target = out or src.with_name(src.name.rstrip("/") + ".sig")
    import grp
    import pwd

    write_atomic(target, sshsig.sign_message(key, statement), mode=0o644,
                 owner=pwd.getpwuid(os.getuid()).pw_name, group=grp.getgrgid(os.getgid()).gr_name)
    click.echo(statement.decode(), nl=False)
    public = key.public_key()
    click.echo(
        f"wrote {target}: signed by key {fingerprint(public)}; for ssh-keygen -Y verify, "
        f"allowed_signers: release namespaces=\"{sshsig.NAMESPACE}\" "
        f"{sshsig.render_ssh_public_key(public)}",
        err=True,
    )


class BuildDeps(TypedDict):
    """Where ``release build`` takes the runtime's dependencies from."""

    requirements: Path | None
    wheelhouse: Path | None


@release.command("build")
@click.argument(
    "src", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--sha", required=True, help="The git commit the release is built from (7-40 hex).")
@click.option(
    "--label", default=DEFAULT_LABEL, show_default=True, help="Name suffix: [a-z0-9._-], <= 40."
)
@click.option(
    "--requirements",
    "-r",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="pip requirements file of the runtime's dependencies (pin them for a repeatable tree).",
)
@click.option(
    "--wheelhouse",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Install offline from the wheels in DIR (all of them, without --requirements).",
)
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 private key (from 'release keygen') to sign the manifest with.",
)
@pass_app
def build(
    app: App,
    src: Path | None,
    sha: str,
    label: str,
    sign_key: Path | None,
    **deps: Unpack[BuildDeps],
) -> None:
    """Build a release with its dependencies, then add it as release <sha>-<label>.

    Copies SRC (the runtime's own code; optional), installs --requirements (from the index, or
    only from --wheelhouse when given) or every wheel of --wheelhouse into the same tree with
    pip --target, for the interpreter gateways run (python in agentgw.yaml), then hashes and
    signs it like 'release add'. Wheels only: no package's build code runs. The same inputs
    give the same content digest.
    """
    from agentgw.apply.release_build import built_tree

    check_sha(sha)
    check_label(label)
    policy = host_policy(app.layout)
    python = _host_python(app.layout)
    created = _created()
    requirements, wheelhouse = deps["requirements"], deps["wheelhouse"]
    with built_tree(src, requirements, wheelhouse, python, app.layout.state / "build") as tree:
        result = add_release(app.layout, tree, sha, label, sign_key, policy, created=created)
    _report(result, "unsigned" if sign_key is None else "signed")


def _host_python(layout: Layout) -> Path:
    if not layout.etc.is_dir():
        return HostConfig().python
    return load_config(layout.etc).host.python


def _report(result: AddResult, signed: str) -> None:
    for name in result.removed:
        click.echo(f"removed leftover {name} of an interrupted run", err=True)
    manifest = result.manifest
    digest = content_digest(manifest.files)
    if not result.created:
        click.echo(f"unchanged {manifest.name}: already present with the same files ({digest})")
        return
    files = sum(1 for e in manifest.files if e.type == "file")
    click.echo(
        f"added {manifest.name}: version {manifest.version}, {files} files, "
        f"{_size(manifest.size)}, {signed}"
    )
    click.echo(f"content {digest}")


def _uses(ref: ReleaseRef) -> str:
    return ", ".join(f"{u.profile} ({u.slot})" for u in ref.used_by) or "-"


@release.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def list_(app: App, as_json: bool) -> None:
    """Every release, newest first: version, size, signature key, which profiles use it."""
    refs = list_releases(app.layout)
    if as_json:
        echo_json({"releases": [ref.model_dump(mode="json") for ref in refs]})
        return
    if not refs:
        click.echo("no releases: add one with 'agentgw release add SRC --sha SHA'")
        return
    rows = [("VERSION", "RELEASE", "CREATED", "SIZE", "SIGNED", "USED BY")]
    for ref in refs:
        rows.append(
            (
                str(ref.version) if ref.version is not None else "?",
                ref.name,
                ref.created or f"({ref.problem})",
                _size(ref.size),
                f"yes ({ref.key})" if ref.signed else "no",
                _uses(ref),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        click.echo("  ".join([*cells, row[-1]]))


@release.command("verify")
@click.argument("ref", metavar="SHA")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def verify(app: App, ref: str, as_json: bool) -> None:
    """Re-hash release SHA (a unique prefix, or <sha>-<label>) against its manifest, modes,
    owner and signature policy; exit 3 naming every changed file."""
    policy = host_policy(app.layout)
    name = find_release(app.layout, ref).name
    problems = verify_release(app.layout, name, policy)
    if as_json:
        echo_json(
            {"release": name, "ok": not problems, "problems": [p.model_dump() for p in problems]}
        )
    else:
        for problem in problems:
            click.echo(str(problem))
        if not problems:
            click.echo(f"ok: {name} matches its manifest")
    if problems:
        raise AgentgwError(
            f"release {name} failed verification: {render_problems(problems)}",
            hint="do not promote it; re-add the release from its source under a new label",
            code=Exit.VERIFY,
        )


@release.command("gc")
@click.option("--keep", type=click.IntRange(min=0), required=True, help="Newest releases to keep.")
@click.option("--dry-run", is_flag=True, help="Print what would be removed.")
@pass_app
def gc_(app: App, keep: int, dry_run: bool) -> None:
    """Remove all but the N newest releases; never one a profile's current or previous uses."""
    if dry_run:
        doomed = gc_candidates(app.layout, keep)
        for name in doomed:
            click.echo(f"would remove {name}")
    else:
        result = gc(app.layout, keep)
        for name in result.leftovers:
            click.echo(f"removed leftover {name} of an interrupted run", err=True)
        doomed = list(result.removed)
        for name in doomed:
            click.echo(f"removed {name}")
    if not doomed:
        click.echo("nothing to remove")


@release.command("keygen")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file to write (0600); the public key goes to OUT.pub.",
)
def keygen(out: Path) -> None:
    """Create an Ed25519 key pair for signing releases (never overwrites a key)."""
    key = generate_keypair(out)
    click.echo(f"wrote {out} (private, 0600) and {out}.pub (public); fingerprint {key}")
    click.echo(f"trust it on a host: list {out}.pub under trusted_keys in agentgw.yaml")

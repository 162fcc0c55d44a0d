"""Adding, re-adding, listing, verifying and collecting releases on a temp root."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentgw.apply.lock import releases_lock
from agentgw.apply.release import add_release, gc
from agentgw.errors import AgentgwError, Exit
from agentgw.model.release import ReleasePolicy
from agentgw.paths import Layout
from agentgw.plan.tree_diff import same_tree
from agentgw.signing import fingerprint, load_public_key
from agentgw.store.release import (
    check_promotable,
    current_manifest,
    find_release,
    gc_candidates,
    read_manifest,
    release_names,
    verify_release,
)
from tests.unit.release.support import (
    OTHER_SHA,
    SHA,
    Keys,
    Member,
    make_keys,
    make_tar,
    point,
    snapshot,
    work_in_progress,
    write_tree,
)
from tests.unit.runner import agentgw

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "root")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "src")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path / "keys")


def test_add_builds_a_read_only_tree_with_its_manifest(layout: Layout, src: Path) -> None:
    """The release holds the source with files 0444 (0555 if executable), dirs 0555, links as
    they were, a 0444 manifest listing every path, all owned like the releases dir."""
    result = add_release(layout, src, SHA, created=WHEN)
    release = layout.release(SHA, "release")
    assert (result.created, result.path, result.removed) == (True, release, ())
    tree = snapshot(release)
    assert {path: (kind, oct(mode)) for path, (kind, mode, _) in tree.items()} == {
        "agent_cli": ("dir", "0o555"),
        "agent_cli/__init__.py": ("file", "0o444"),
        "agent_cli/data": ("dir", "0o555"),
        "agent_cli/main.py": ("file", "0o444"),
        "bin": ("dir", "0o555"),
        "bin/agent": ("file", "0o555"),
        "bin/main.py": ("symlink", "0o777"),
        "manifest.json": ("file", "0o444"),
    }
    assert stat.S_IMODE(release.stat().st_mode) == 0o555
    assert tree["bin/main.py"][2] == "../agent_cli/main.py"
    owner = (layout.releases.stat().st_uid, layout.releases.stat().st_gid)
    for path in [release, *release.rglob("*")]:
        assert (path.lstat().st_uid, path.lstat().st_gid) == owner
    manifest = read_manifest(release)
    assert manifest == result.manifest
    assert (manifest.sha, manifest.label, manifest.version) == (SHA, "release", 1)
    assert manifest.created == "2025-01-02T03:04:05Z"
    assert [e.path for e in manifest.files] == sorted(p for p in tree if p != "manifest.json")
    assert verify_release(layout, SHA, ReleasePolicy()) == []
    assert work_in_progress(layout) == []


def test_tarball_and_directory_give_the_same_files(
    layout: Layout, src: Path, tmp_path: Path
) -> None:
    """A gzip tarball of a tree becomes the same files, modes and links as the tree itself."""
    tarball = tmp_path / "src.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(src, arcname=".")
    from_dir = add_release(layout, src, SHA).manifest
    from_tar = add_release(layout, tarball, SHA, "fromtar").manifest
    assert same_tree(from_dir.files, from_tar.files)
    assert from_tar.version == 2


def test_hardlinks_inside_a_tarball_become_copies(layout: Layout, tmp_path: Path) -> None:
    """A hardlink member to an earlier file becomes an independent read-only copy."""
    tarball = make_tar(
        tmp_path / "t.tar",
        [Member("pkg/a.py", data=b"A\n"), Member("pkg/b.py", "hardlink", link="pkg/a.py")],
    )
    add_release(layout, tarball, SHA)
    copy = layout.release(SHA, "release") / "pkg" / "b.py"
    assert copy.read_bytes() == b"A\n"
    assert copy.stat().st_nlink == 1


def test_readding_the_same_content_changes_nothing(layout: Layout, src: Path) -> None:
    """A second add of the same source is a success that touches nothing, not even mtimes."""
    first = add_release(layout, src, SHA, created=WHEN)
    before = snapshot(layout.root)
    mtime = (first.path / "manifest.json").stat().st_mtime_ns
    again = add_release(layout, src, SHA)
    assert (again.created, again.manifest) == (False, first.manifest)
    assert snapshot(layout.root) == before
    assert (first.path / "manifest.json").stat().st_mtime_ns == mtime


def test_same_name_with_other_content_is_refused_before_writing(layout: Layout, src: Path) -> None:
    """Releases never change: other content under an existing name exits 1, nothing written."""
    add_release(layout, src, SHA)
    (src / "agent_cli" / "main.py").write_text("print('changed')\n")
    before = snapshot(layout.root)
    with pytest.raises(AgentgwError) as raised:
        add_release(layout, src, SHA)
    assert raised.value.code == Exit.FAILED
    assert raised.value.message == f"release {SHA}-release already exists with different content"
    assert "--label" in raised.value.hint
    assert snapshot(layout.root) == before


def test_versions_only_go_up_even_after_gc_removed_the_newest(layout: Layout, src: Path) -> None:
    """gc removing the highest version does not let the next add reuse its number."""
    add_release(layout, src, SHA)
    add_release(layout, src, OTHER_SHA)
    point(layout, "api", "current", f"{SHA}-release")
    assert gc(layout, keep=0).removed == (f"{OTHER_SHA}-release",)
    assert add_release(layout, src, "abcdef9").manifest.version == 3


def _leftover_tree(path: Path) -> None:
    (path / "deep").mkdir(parents=True)
    (path / "deep" / "f").write_text("half")
    (path / "deep" / "f").chmod(0o444)
    (path / "deep").chmod(0o555)
    path.chmod(0o555)


def test_leftovers_of_killed_runs_are_removed_and_reported(layout: Layout, src: Path) -> None:
    """Read-only .tmp-* trees, .trash-* trees and temp files of killed runs are removed by the
    next add, which names each one."""
    layout.releases.mkdir(parents=True)
    _leftover_tree(layout.releases / f".tmp-{SHA}-release-0000")
    _leftover_tree(layout.releases / ".trash-0a1b2c3-release-1111")
    (layout.releases / ".tmp-version-2222").write_text("7\n")
    result = add_release(layout, src, SHA)
    assert result.removed == (
        f".tmp-{SHA}-release-0000",
        ".tmp-version-2222",
        ".trash-0a1b2c3-release-1111",
    )
    assert work_in_progress(layout) == []
    assert release_names(layout) == [f"{SHA}-release"]


def test_gc_never_removes_a_release_a_profile_uses(layout: Layout, src: Path) -> None:
    """With --keep 1, gc removes only old releases no profile's current or previous points at."""
    names = [
        add_release(layout, src, sha).manifest.name for sha in ("aaaaaa1", "bbbbbb2", "ccccccc")
    ]
    names.append(add_release(layout, src, "ddddddd").manifest.name)
    point(layout, "api", "current", names[0])
    point(layout, "api", "previous", names[1])
    point(layout, "core", "current", names[1])
    assert gc_candidates(layout, keep=1) == [names[2]]
    result = gc(layout, keep=1)
    assert (result.removed, result.leftovers) == ((names[2],), ())
    assert release_names(layout) == sorted([names[0], names[1], names[3]])
    assert work_in_progress(layout) == []


def test_gc_finishes_an_interrupted_removal(layout: Layout, src: Path) -> None:
    """A .trash-* tree left by a gc killed mid-removal is removed by the next gc."""
    add_release(layout, src, SHA)
    _leftover_tree(layout.releases / ".trash-0a1b2c3-release-1111")
    result = gc(layout, keep=5)
    assert (result.removed, result.leftovers) == ((), (".trash-0a1b2c3-release-1111",))
    assert work_in_progress(layout) == []


def test_gc_on_a_host_without_releases_creates_nothing(layout: Layout) -> None:
    """gc before any add is a no-op that does not even create the releases dir."""
    assert gc(layout, keep=0).removed == ()
    assert not layout.root.exists()


def test_current_manifest_follows_the_profile_symlink(layout: Layout, src: Path) -> None:
    """current_manifest reads the release a profile's current points at, or None."""
    added = add_release(layout, src, SHA).manifest
    assert current_manifest(layout, "api") is None
    point(layout, "api", "current", added.name)
    assert current_manifest(layout, "api") == added


def test_check_promotable_accepts_an_intact_trusted_release(
    layout: Layout, src: Path, keys: Keys
) -> None:
    """A release signed by a trusted key, untouched and newer than current, may be promoted."""
    policy = ReleasePolicy(require_signature=True, trusted_keys=(str(keys.trusted_pub),))
    old = add_release(layout, src, OTHER_SHA, sign_key=keys.trusted, policy=policy).manifest
    new = add_release(layout, src, SHA, sign_key=keys.trusted, policy=policy).manifest
    check_promotable(layout, new, policy, old, allow_downgrade=False)
    check_promotable(layout, old, policy, new, allow_downgrade=True)


def test_same_source_and_date_give_byte_identical_signed_trees(
    tmp_path: Path, src: Path, keys: Keys
) -> None:
    """Adds are reproducible: same source, sha, date and key give identical trees, signature
    included (Ed25519 is deterministic) — what makes a re-add after a crash indistinguishable."""
    one, two = Layout(tmp_path / "one"), Layout(tmp_path / "two")
    add_release(one, src, SHA, sign_key=keys.trusted, created=WHEN)
    add_release(two, src, SHA, sign_key=keys.trusted, created=WHEN)
    assert snapshot(one.root) == snapshot(two.root)
    assert "manifest.sig" in snapshot(one.release(SHA, "release"))


@pytest.mark.skipif(os.geteuid() != 0, reason="the ownership check applies when run as root")
def test_a_releases_dir_others_can_write_is_refused(layout: Layout, src: Path) -> None:
    """As root, a group/world-writable releases dir (others could swap releases) is refused."""
    layout.releases.mkdir(parents=True)
    layout.releases.chmod(0o777)
    before = snapshot(layout.root)
    with pytest.raises(AgentgwError) as raised:
        add_release(layout, src, SHA)
    assert "must be owned by root and writable only by root" in raised.value.message
    assert snapshot(layout.root) == before


# the command line ------------------------------------------------------------------------------


def test_cli_add_list_and_verify(
    layout: Layout, src: Path, keys: Keys
) -> None:
    """add prints what it built; list --json shows versions, signatures and users; verify is ok."""
    code, out, _ = agentgw("--root", str(layout.root), "release", "add", str(src), "--sha", SHA)
    first, second = out.splitlines()
    assert (code, first) == (0, f"added {SHA}-release: version 1, 3 files, 78 B, unsigned")
    assert re.fullmatch(r"content sha256:[0-9a-f]{64}", second)
    code, out, _ = agentgw("--root", str(layout.root),
                           "release", "add", str(src), "--sha", OTHER_SHA,
        "--label", "canary", "--sign-key", str(keys.trusted),
    )  # fmt: skip
    assert code == 0
    point(layout, "api", "current", f"{OTHER_SHA}-canary")
    point(layout, "api", "previous", f"{SHA}-release")
    point(layout, "core", "current", f"{SHA}-release")
    code, out, _ = agentgw("--root", str(layout.root), "release", "list", "--json")
    listed = {r["name"]: r for r in json.loads(out)["releases"]}
    assert code == 0
    assert list(listed) == [f"{OTHER_SHA}-canary", f"{SHA}-release"]
    canary, plain = listed[f"{OTHER_SHA}-canary"], listed[f"{SHA}-release"]
    assert (canary["version"], canary["signed"], canary["size"]) == (2, True, 78)
    assert canary["key"] == keys_fingerprint(keys.trusted_pub)
    assert canary["used_by"] == [{"profile": "api", "slot": "current"}]
    assert (plain["signed"], plain["key"], plain["problem"]) == (False, None, None)
    assert plain["used_by"] == [
        {"profile": "api", "slot": "previous"},
        {"profile": "core", "slot": "current"},
    ]
    code, out, _ = agentgw("--root", str(layout.root), "release", "list")
    assert out.splitlines()[2].split() == [
        "1", f"{SHA}-release", plain["created"], "78", "B", "no", "api", "(previous),", "core",
        "(current)",
    ]  # fmt: skip
    code, out, _ = agentgw("--root", str(layout.root), "release", "verify", OTHER_SHA[:8])
    assert (code, out) == (0, f"ok: {OTHER_SHA}-canary matches its manifest\n")


def keys_fingerprint(public: Path) -> str:
    return fingerprint(load_public_key(public))


def test_cli_verify_names_changed_files_and_exits_3(
    layout: Layout, src: Path
) -> None:
    """A file changed after add: verify exits 3, prints it, and the error line names it."""
    add_release(layout, src, SHA)
    main_py = layout.release(SHA, "release") / "agent_cli" / "main.py"
    main_py.chmod(0o644)
    main_py.write_text("print('owned')\n")
    main_py.chmod(0o444)
    code, out, err = agentgw("--root", str(layout.root), "release", "verify", SHA)
    assert code == Exit.VERIFY
    assert out == "changed: agent_cli/main.py: content differs from the manifest\n"
    assert err.splitlines()[0] == (
        f"error: release {SHA}-release failed verification: "
        "changed: agent_cli/main.py: content differs from the manifest"
    )
    code, out, _ = agentgw("--root", str(layout.root), "release", "verify", SHA, "--json")
    assert code == Exit.VERIFY
    assert json.loads(out)["problems"] == [
        {
            "kind": "changed",
            "path": "agent_cli/main.py",
            "detail": "content differs from the manifest",
        }
    ]


def test_cli_ambiguous_prefix_exits_2_listing_candidates(
    layout: Layout, src: Path
) -> None:
    """verify with a prefix matching two releases names both and exits 2."""
    add_release(layout, src, SHA)
    add_release(layout, src, SHA, "canary")
    code, _, err = agentgw("--root", str(layout.root), "release", "verify", SHA)
    assert code == Exit.USAGE
    assert err.splitlines()[0] == f"error: {SHA} is ambiguous: {SHA}-canary, {SHA}-release"
    assert find_release(layout, f"{SHA}-canary").name == f"{SHA}-canary"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["{src}", "--sha", "XYZ"], {}, "error: sha 'XYZ' is not 7 to 40 lowercase hex digits"),
        (["{src}", "--sha", SHA, "--label", "A B"], {}, "error: label 'A B' must be 1 to 40"),
        (["--sha", SHA], {}, "error: give SRC or --git REPO"),
        (["{src}", "--sha", SHA, "--git", "{src}"], {}, "error: give SRC or --git REPO, not both"),
        (["{src}/nope", "--sha", SHA], {}, "error: {src}/nope: no such directory or tarball"),
        (["{src}/bin/agent", "--sha", SHA], {}, "error: {src}/bin/agent is neither a directory"),
        (
            ["{src}", "--sha", SHA, "--sign-key", "{src}/nokey"],
            {},
            "error: cannot read signing key",
        ),
        (["{src}", "--sha", SHA], {"SOURCE_DATE_EPOCH": "soon"}, "error: SOURCE_DATE_EPOCH='soon'"),
        (["{src}"], {}, "error: Missing option '--sha'."),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    layout: Layout,
    src: Path,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    """Bad sha, label, source, key or date: one error line and a hint, exit 2, no root at all."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    argv = [a.format(src=src) for a in args]
    code, _, err = agentgw("--root", str(layout.root), "release", "add", *argv)
    assert code == Exit.USAGE
    lines = err.splitlines()
    assert lines[0].startswith(message.format(src=src))
    assert lines[1].startswith("hint: ")
    assert not layout.root.exists()


def test_cli_takes_the_signature_policy_from_agentgw_yaml(
    layout: Layout, src: Path, keys: Keys
) -> None:
    """With require_signature in agentgw.yaml: unsigned and untrusted adds exit 2 writing
    nothing; the trusted key's add succeeds and verifies."""
    layout.etc.mkdir(parents=True)
    layout.host_config.write_text(
        f"require_signature: true\ntrusted_keys:\n  - {keys.trusted_pub}\n"
    )
    add = ["release", "add", str(src), "--sha", SHA]
    code, _, err = agentgw("--root", str(layout.root), *add)
    assert (code, err.splitlines()[0]) == (
        2, "error: this host requires signed releases and no --sign-key or --signature was given"
    )  # fmt: skip
    code, _, err = agentgw("--root", str(layout.root), *add, "--sign-key", str(keys.other))
    assert code == 2
    assert "is not one of this host's trusted keys" in err
    assert not layout.releases.exists()
    code, out, _ = agentgw("--root", str(layout.root), *add, "--sign-key", str(keys.trusted))
    assert (code, out.splitlines()[0].endswith(", signed")) == (0, True)
    assert agentgw("--root", str(layout.root), "release", "verify", SHA)[0] == 0


def test_cli_without_agentgw_yaml_uses_the_defaults(
    layout: Layout, src: Path
) -> None:
    """An etc dir without agentgw.yaml means no signature requirement."""
    layout.etc.mkdir(parents=True)
    assert agentgw("--root", str(layout.root), "release", "add", str(src), "--sha", SHA)[0] == 0


def test_cli_gc_dry_run_then_gc(
    layout: Layout, src: Path
) -> None:
    """--dry-run prints what gc would remove and removes nothing; gc then removes exactly that."""
    add_release(layout, src, SHA)
    add_release(layout, src, OTHER_SHA)
    code, out, _ = agentgw("--root", str(layout.root), "release", "gc", "--keep", "1", "--dry-run")
    assert (code, out) == (0, f"would remove {SHA}-release\n")
    assert len(release_names(layout)) == 2
    code, out, _ = agentgw("--root", str(layout.root), "release", "gc", "--keep", "1")
    assert (code, out) == (0, f"removed {SHA}-release\n")
    code, out, _ = agentgw("--root", str(layout.root), "release", "gc", "--keep", "1")
    assert (code, out) == (0, "nothing to remove\n")
    assert agentgw("--root", str(layout.root), "release", "gc", "--keep", "-1")[0] == Exit.USAGE


def test_cli_keygen_writes_a_pair_once(tmp_path: Path) -> None:
    """keygen writes OUT and OUT.pub and prints the fingerprint; a second run exits 2."""
    out = tmp_path / "k"
    code, text, _ = agentgw("--root", str(tmp_path / "root"),
                            "release", "keygen", "--out", str(out))
    assert code == 0
    assert text.startswith(f"wrote {out} (private, 0600) and {out}.pub (public); fingerprint ")
    assert agentgw("--root", str(tmp_path / "root"), "release", "keygen", "--out", str(out))[0] == 2


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def test_cli_git_source_exports_that_commit(
    monkeypatch: pytest.MonkeyPatch,
    layout: Layout,
    tmp_path: Path,
) -> None:
    """--git REPO adds the tree of commit SHA (not the work tree), leaving no temp tarball."""
    repo = write_tree(tmp_path / "repo")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "one")
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "agent_cli" / "main.py").write_text("print('two')\n")
    _git(repo, "commit", "-q", "-am", "two")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)
    code, _, err = agentgw("--root", str(layout.root),
                           "release", "add", "--git", str(repo), "--sha", first[:10]
    )
    assert code == 0, err
    release = layout.release(first[:10], "release")
    assert (release / "agent_cli" / "main.py").read_text() == "print('gateway')\n"
    assert os.readlink(release / "bin" / "main.py") == "../agent_cli/main.py"
    assert list(scratch.iterdir()) == []
    code, _, err = agentgw("--root", str(layout.root),
                           "release", "add", "--git", str(repo), "--sha", "1234567"
    )
    assert (code, err.splitlines()[0]) == (2, f"error: {repo} has no commit 1234567")


@pytest.mark.parametrize("compression", ["", "gz"])
def test_truncated_tarball_is_refused_writing_nothing(
    layout: Layout, tmp_path: Path, compression: str
) -> None:
    """A tarball cut short (plain or gzip) exits 2 as damaged and leaves no trace."""
    whole = tmp_path / f"whole.tar{'.' + compression if compression else ''}"
    with tarfile.open(whole, f"w:{compression}") as archive:  # type: ignore[call-overload]
        for name in ("a", "b", "c"):
            info = tarfile.TarInfo(name)
            info.size = 100_000
            archive.addfile(info, io.BytesIO(os.urandom(info.size)))
    cut = tmp_path / f"cut-{whole.name}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    with pytest.raises(AgentgwError) as raised:
        add_release(layout, cut, SHA)
    assert raised.value.code == Exit.USAGE
    assert raised.value.message.startswith(f"{cut}: damaged tarball: ")
    assert not layout.root.exists()


def test_a_held_releases_lock_makes_add_and_gc_exit_4(layout: Layout, src: Path) -> None:
    """While another operation holds the releases lock, add and gc refuse with exit 4 and
    change nothing; shared holders (promotes) do not exclude each other."""
    add_release(layout, src, SHA)
    before = snapshot(layout.root)
    with releases_lock(layout, shared=True), releases_lock(layout, shared=True):
        for attempt in (lambda: add_release(layout, src, OTHER_SHA), lambda: gc(layout, 0)):
            with pytest.raises(AgentgwError) as raised:
                attempt()
            assert raised.value.code == Exit.LOCKED
    assert snapshot(layout.root) == before


def test_a_broken_manifest_is_listed_and_fails_verification(
    layout: Layout, src: Path
) -> None:
    """list shows a release whose manifest.json is unreadable with the problem; verify exits 3."""
    added = add_release(layout, src, SHA)
    manifest = added.path / "manifest.json"
    manifest.chmod(0o644)
    manifest.write_text("{}")
    manifest.chmod(0o444)
    code, out, _ = agentgw("--root", str(layout.root), "release", "list", "--json")
    (listed,) = json.loads(out)["releases"]
    assert (code, listed["version"]) == (0, None)
    assert listed["problem"] == f"{SHA}-release: manifest.json is invalid (5 errors)"
    code, out, _ = agentgw("--root", str(layout.root), "release", "verify", SHA)
    assert code == Exit.VERIFY
    assert out.startswith(f"manifest: manifest.json: {SHA}-release: manifest.json is invalid")

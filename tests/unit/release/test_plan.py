"""Pure release planning: names, member and symlink safety, manifests, diffs, gc, downgrades."""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentgw.errors import AgentgwError, Exit
from agentgw.model.host import HostConfig
from agentgw.model.release import FileEntry, Manifest, Problem, ReleasePolicy
from agentgw.plan.release import (
    SourceEntry,
    canonical_manifest,
    check_downgrade,
    check_label,
    check_sha,
    check_symlink_target,
    match_release,
    next_version,
    normalize_name,
    plan_gc,
    plan_tree,
    render_manifest,
)
from agentgw.plan.tree_diff import ObservedEntry, diff_tree, render_problems, same_tree

FILE = FileEntry(path="a/f", type="file", mode="0444", size=2, sha256="0" * 64)


def manifest(version: int = 1, files: tuple[FileEntry, ...] = ()) -> Manifest:
    return Manifest(
        sha="3f9c2e1", label="release", version=version, created="2025-01-02T03:04:05Z", files=files
    )


@pytest.mark.parametrize("sha", ["3f9c2e1", "0" * 40, "abcdef0123"])
def test_valid_shas_pass(sha: str) -> None:
    """7 to 40 lowercase hex digits are a sha."""
    assert check_sha(sha) == sha


@pytest.mark.parametrize("sha", ["3f9c2e", "0" * 41, "3F9C2E1", "3f9c2eg", "-3f9c2e1", ""])
def test_invalid_shas_are_usage_errors(sha: str) -> None:
    """Too short, too long, uppercase or non-hex shas exit 2 with a hint."""
    with pytest.raises(AgentgwError) as raised:
        check_sha(sha)
    assert raised.value.code == Exit.USAGE
    assert "7 to 40 lowercase hex digits" in raised.value.message


@pytest.mark.parametrize("label", ["release", "canary-2", "v1.2_rc", "a" * 40])
def test_valid_labels_pass(label: str) -> None:
    """Labels of [a-z0-9._-], 1 to 40 long, are accepted."""
    assert check_label(label) == label


@pytest.mark.parametrize("label", ["", "Release", "a/b", "a b", "a" * 41, "é", "x\n"])
def test_invalid_labels_are_usage_errors(label: str) -> None:
    """Anything outside [a-z0-9._-] or longer than 40 exits 2."""
    with pytest.raises(AgentgwError) as raised:
        check_label(label)
    assert raised.value.code == Exit.USAGE


NAMES = ["3f9c2e1-release", "3f9c2e1-canary", "3f9c2ff-release", ".tmp-x", "notes"]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("3f9c2ff", "3f9c2ff-release"), ("3f9c2e1-canary", "3f9c2e1-canary")],
)
def test_release_lookup_by_unique_prefix_or_name(ref: str, expected: str) -> None:
    """A unique sha prefix of 7+ digits or the full name finds the release."""
    assert match_release(NAMES, ref) == expected


def test_ambiguous_prefix_lists_candidates() -> None:
    """A prefix matching two releases exits 2 and names both."""
    with pytest.raises(AgentgwError) as raised:
        match_release(NAMES, "3f9c2e1")
    assert raised.value.code == Exit.USAGE
    assert "3f9c2e1-canary, 3f9c2e1-release" in raised.value.message


@pytest.mark.parametrize("ref", ["3f9c2", "1234567", ".tmp-x", "notes"])
def test_short_unknown_or_non_release_refs_are_refused(ref: str) -> None:
    """Prefixes under 7 digits, unknown shas and non-release entries find nothing (exit 2)."""
    with pytest.raises(AgentgwError) as raised:
        match_release(NAMES, ref)
    assert raised.value.code == Exit.USAGE


# member names ----------------------------------------------------------------------------------

NAME_PARTS = st.sampled_from(["a", "b", ".", "..", "", "...", "..a", "a..", "\\..", " ", "é"])
MEMBER_NAMES = st.one_of(st.lists(NAME_PARTS, max_size=8).map("/".join), st.text(max_size=40))


@given(MEMBER_NAMES)
@settings(max_examples=500)
def test_random_member_names_never_escape(name: str) -> None:
    """Whatever a tar member is called, an accepted name stays inside the release tree."""
    try:
        path = normalize_name(name)
    except ValueError:
        return
    assert not path.startswith("/")
    assert ".." not in path.split("/")
    joined = posixpath.normpath(posixpath.join("/release", path))
    assert joined == "/release" or joined.startswith("/release/")
    assert joined == posixpath.join("/release", path).rstrip("/")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x", "escapes the release tree"),
        ("a/../../x", "escapes the release tree"),
        ("a/..", "escapes the release tree"),
        ("/etc/passwd", "absolute path"),
        ("a\nb", "control character"),
        ("a\udcff", "not valid UTF-8"),
    ],
)
def test_unsafe_member_names_are_refused(name: str, reason: str) -> None:
    """'..' anywhere, absolute names, control characters and undecodable bytes are refused."""
    with pytest.raises(ValueError, match=reason):
        normalize_name(name)


@pytest.mark.parametrize(
    ("name", "expected"), [("./a//b/", "a/b"), (".", ""), ("a/./b", "a/b"), ("a..b", "a..b")]
)
def test_member_names_are_normalized(name: str, expected: str) -> None:
    """'.' and empty components vanish; '..' inside a name is just a name."""
    assert normalize_name(name) == expected


# symlinks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "target"),
    [("a", "b"), ("a/b", "../c"), ("a/b/c", "../../d/e"), ("a", "."), ("a/b", ".."), ("a", "./b")],
)
def test_symlinks_inside_the_tree_are_accepted(path: str, target: str) -> None:
    """Leading '..' up to the link's depth, then names, stays inside."""
    assert check_symlink_target(path, target) is None


@pytest.mark.parametrize(
    ("path", "target", "reason"),
    [
        ("a", "..", "points outside"),
        ("lib/etc", "../../etc", "points outside"),
        ("a", "/etc/passwd", "absolute symlink"),
        ("t", "s/..", "'..' after a name"),
        ("a", "", "empty"),
        ("a", "b\x00", "control character"),
    ],
)
def test_symlinks_that_may_leave_the_tree_are_refused(path: str, target: str, reason: str) -> None:
    """Climbing above the root, absolute targets, and '..' after a name are refused."""
    why = check_symlink_target(path, target)
    assert why is not None and reason in why


LINK_PLACES = ["s", "a/s", "a/b/s", "c/t", "u"]
TARGET_PARTS = st.sampled_from([".", "..", "a", "b", "c", "s", "t", "u", "x"])
LINKS = st.dictionaries(
    st.sampled_from(LINK_PLACES),
    st.lists(TARGET_PARTS, min_size=1, max_size=5).map("/".join),
    max_size=5,
)


@given(LINKS)
@settings(max_examples=300, deadline=None)
def test_accepted_symlink_sets_resolve_inside_on_a_real_filesystem(links: dict[str, str]) -> None:
    """Chains of accepted symlinks (s -> ., t -> s/.. and the like), materialized on disk,
    all resolve inside the tree: the rule is not fooled by links that change the depth."""
    entries = [SourceEntry(d, "dir") for d in ("a", "a/b", "c")]
    entries += [SourceEntry(path, "symlink", link=target) for path, target in links.items()]
    try:
        planned = plan_tree(entries, "src")
    except AgentgwError:
        return
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch, "tree")
        for item in planned:
            if item.type == "dir":
                (root / item.path).mkdir(parents=True)
        for item in planned:
            if item.type == "symlink":
                (root / item.path).symlink_to(item.target)
        real_root = os.path.realpath(root)
        for item in planned:
            real = os.path.realpath(root / item.path)
            assert os.path.commonpath([real_root, real]) == real_root, (item, links)


# the tree of a source --------------------------------------------------------------------------


def test_plan_tree_adds_parents_copies_hardlinks_and_sets_modes() -> None:
    """Implicit parents become 0555 dirs, a hardlink a copy of its file, x bits 0555 else 0444."""
    planned = plan_tree(
        [
            SourceEntry("./pkg/mod.py", "file", 0o644),
            SourceEntry("bin/tool", "file", 0o700),
            SourceEntry("pkg/same.py", "hardlink", link="pkg/mod.py"),
            SourceEntry("./", "dir", 0o777),
        ],
        "src",
    )
    shown = [(p.path, p.type, oct(p.mode), p.origin) for p in planned]
    assert shown == [
        ("bin", "dir", "0o555", -1),
        ("bin/tool", "file", "0o555", 1),
        ("pkg", "dir", "0o555", -1),
        ("pkg/mod.py", "file", "0o444", 0),
        ("pkg/same.py", "file", "0o444", 0),
    ]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([SourceEntry("a", "file"), SourceEntry("a", "file")], "a: appears twice"),
        (
            [
                SourceEntry("a", "symlink", link="d"),
                SourceEntry("d", "dir"),
                SourceEntry("a/x", "file"),
            ],
            "a/x: lies inside a, which is a symlink",
        ),
        ([SourceEntry("h", "hardlink", link="later"), SourceEntry("later", "file")], "no regular"),
        ([SourceEntry("manifest.json", "file")], "reserved for the manifest"),
        ([SourceEntry("s", "socket")], "'s': socket"),
        ([SourceEntry(".", "file")], "root must be a directory"),
    ],
)
def test_plan_tree_refuses_ambiguous_trees(entries: list[SourceEntry], message: str) -> None:
    """Duplicates, members under a symlink, forward hardlinks, the manifest's own names and
    sockets are refused with the member named."""
    with pytest.raises(AgentgwError) as raised:
        plan_tree(entries, "src")
    assert raised.value.code == Exit.USAGE
    assert message in raised.value.message


def test_every_problem_is_counted_in_one_line() -> None:
    """Several unsafe members give one message: the first three and how many more."""
    entries = [SourceEntry(f"../x{i}", "file") for i in range(5)]
    with pytest.raises(AgentgwError) as raised:
        plan_tree(entries, "bad.tar")
    assert raised.value.message.startswith("refusing unsafe release source bad.tar: '../x0'")
    assert raised.value.message.endswith("(and 2 more)")
    assert "\n" not in raised.value.message


# manifests -------------------------------------------------------------------------------------


def test_manifest_json_has_sha_and_label_at_top_level_and_omits_unused_fields() -> None:
    """The launcher reads sha and label from the top level; dirs carry no sha256/target."""
    doc = json.loads(render_manifest(manifest(files=(FILE,))))
    assert (doc["sha"], doc["label"], doc["format"]) == ("3f9c2e1", "release", 1)
    assert doc["files"] == [
        {"path": "a/f", "type": "file", "mode": "0444", "size": 2, "sha256": "0" * 64}
    ]
    assert Manifest.model_validate(doc) == manifest(files=(FILE,))


def test_canonical_bytes_are_compact_sorted_and_stable() -> None:
    """The signed bytes do not depend on how manifest.json was indented."""
    first = manifest(files=(FILE,))
    again = Manifest.model_validate_json(render_manifest(first))
    assert canonical_manifest(first) == canonical_manifest(again)
    assert canonical_manifest(first).startswith(b'{"created":"2025-01-02T03:04:05Z","files":[')


def test_same_tree_ignores_order_version_and_date() -> None:
    """Two adds of the same content compare equal whatever their version."""
    other = FileEntry(path="b", type="dir", mode="0555", size=0)
    assert same_tree(manifest(1, (FILE, other)).files, manifest(2, (other, FILE)).files)
    assert not same_tree((FILE,), (FILE.model_copy(update={"mode": "0555"}),))


def test_next_version_stays_above_removed_releases() -> None:
    """The counter keeps versions rising after gc removed the newest release."""
    assert next_version([], 0) == 1
    assert next_version([1, 4, 2], 0) == 5
    assert next_version([1, 2], 7) == 8


# verification ----------------------------------------------------------------------------------


def observed(
    path: str, kind: str, mode: int, sha256: str | None = None, target: str | None = None
) -> ObservedEntry:
    return ObservedEntry(
        path=path, type=kind, mode=mode, uid=0, gid=0, sha256=sha256, target=target
    )


def test_diff_tree_names_every_kind_of_difference() -> None:
    """Changed content, wrong mode, wrong owner, retargeted link, missing and extra files."""
    link = FileEntry(path="l", type="symlink", mode="0777", size=1, target="a")
    gone = FileEntry(path="gone", type="file", mode="0444", size=0, sha256="1" * 64)
    want = manifest(files=(FileEntry(path="a", type="dir", mode="0555", size=0), FILE, link, gone))
    tree = [
        observed(".", "dir", 0o555),
        observed("manifest.json", "file", 0o444, sha256="2" * 64),
        observed("a", "dir", 0o755),
        observed("a/f", "file", 0o444, sha256="f" * 64),
        observed("l", "symlink", 0o777, target="/etc"),
        observed("new", "file", 0o444, sha256="3" * 64),
    ]
    problems = diff_tree(want, tree, owner=(0, 1))
    assert [(p.kind, p.path) for p in problems] == [
        ("owner", "."),
        ("mode", "a"),
        ("owner", "a"),
        ("changed", "a/f"),
        ("owner", "a/f"),
        ("missing", "gone"),
        ("owner", "l"),
        ("target", "l"),
        ("owner", "manifest.json"),
        ("extra", "new"),
    ]


def test_diff_tree_of_an_intact_tree_is_empty() -> None:
    """A tree exactly as its manifest says (signature file included) has no problems."""
    want = manifest(files=(FileEntry(path="a", type="dir", mode="0555", size=0), FILE))
    tree = [
        observed(".", "dir", 0o555),
        observed("manifest.json", "file", 0o444, sha256="2" * 64),
        observed("manifest.sig", "file", 0o444, sha256="3" * 64),
        observed("a", "dir", 0o555),
        observed("a/f", "file", 0o444, sha256="0" * 64),
    ]
    assert diff_tree(want, tree, owner=(0, 0)) == []


def test_diff_tree_reports_a_type_swap_once() -> None:
    """A file replaced by a symlink is one 'type' problem, not a cascade."""
    tree = [observed(".", "dir", 0o555), observed("manifest.json", "file", 0o444, sha256="2" * 64)]
    tree += [observed("a", "dir", 0o555), observed("a/f", "symlink", 0o777, target="/etc/shadow")]
    want = manifest(files=(FileEntry(path="a", type="dir", mode="0555", size=0), FILE))
    assert [(p.kind, p.path, p.detail) for p in diff_tree(want, tree, (0, 0))] == [
        ("type", "a/f", "is a symlink, not a file")
    ]


def test_downgrade_is_refused_unless_allowed() -> None:
    """A lower version than current exits 2 with the --allow-downgrade hint; equal or higher
    versions, no current, or the flag pass."""
    with pytest.raises(AgentgwError) as raised:
        check_downgrade(manifest(1), manifest(2), allow_downgrade=False)
    assert raised.value.code == Exit.USAGE
    assert "older than the current" in raised.value.message
    assert "--allow-downgrade" in raised.value.hint
    check_downgrade(manifest(1), manifest(2), allow_downgrade=True)
    check_downgrade(manifest(2), manifest(2), allow_downgrade=False)
    check_downgrade(manifest(1), None, allow_downgrade=False)


# gc --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keep", "in_use", "expected"),
    [
        (2, set(), ["broken", "a", "b"]),
        (2, {"a"}, ["broken", "b"]),
        (0, {"d", "broken"}, ["a", "b", "c"]),
        (9, set(), []),
    ],
)
def test_plan_gc_keeps_the_newest_and_everything_in_use(
    keep: int, in_use: set[str], expected: list[str]
) -> None:
    """All but the N newest go, oldest first; in-use releases stay; unreadable count as oldest."""
    releases = [("c", 3), ("a", 1), ("d", 4), ("broken", None), ("b", 2)]
    assert plan_gc(releases, in_use, keep) == expected


def test_problems_render_on_one_line_with_a_count_of_the_rest() -> None:
    """verify's and promote's error line shows the first problems and counts the others."""
    problems = [Problem(kind="changed", path=f"f{i}", detail="differs") for i in range(7)]
    assert render_problems(problems[:1]) == "changed: f0: differs"
    assert render_problems(problems).endswith("changed: f4: differs (and 2 more)")


def test_policy_comes_from_the_host_settings() -> None:
    """The release policy is agentgw.yaml's require_signature and trusted_keys, unchanged, and
    the interpreters a release venv may link to: python, then interpreters."""
    host = HostConfig(
        require_signature=True,
        trusted_keys=("/etc/agentgw/keys/ci.pub",),
        interpreters=(Path("/opt/py/bin/python3.12"),),
    )
    assert ReleasePolicy.of_host(host) == ReleasePolicy(
        require_signature=True,
        trusted_keys=("/etc/agentgw/keys/ci.pub",),
        interpreters=("/usr/bin/python3", "/opt/py/bin/python3.12"),
    )
    assert ReleasePolicy.of_host(HostConfig()) == ReleasePolicy(interpreters=("/usr/bin/python3",))


VENV = [
    SourceEntry(".venv", "dir"),
    SourceEntry(".venv/pyvenv.cfg", "file", 0o644),
    SourceEntry(".venv/bin", "dir"),
    SourceEntry(".venv/bin/python", "symlink", link="python3"),
    SourceEntry(".venv/bin/python3.11", "symlink", link="python3"),
]


def test_a_venv_interpreter_link_to_an_allowed_interpreter_is_accepted() -> None:
    """``python -m venv`` links .venv/bin/python3 to the interpreter by its absolute path: the
    one absolute link a release may hold, when the host allows that interpreter."""
    entries = [*VENV, SourceEntry(".venv/bin/python3", "symlink", link="/usr/bin/python3")]
    planned = {p.path: p for p in plan_tree(entries, "src", {"/usr/bin/python3"})}
    assert planned[".venv/bin/python3"].target == "/usr/bin/python3"


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        (
            [*VENV, SourceEntry(".venv/bin/python3", "symlink", link="/root/.pyenv/bin/python")],
            "which this host does not allow",
        ),
        (
            # no pyvenv.cfg: not a virtualenv, just an absolute link
            [SourceEntry(".venv/bin/python3", "symlink", link="/usr/bin/python3")],
            "absolute symlink",
        ),
        (
            [*VENV, SourceEntry(".venv/bin/pip", "symlink", link="/usr/bin/python3")],
            "absolute symlink",
        ),
        (
            [*VENV, SourceEntry("venv/bin/python3", "symlink", link="/usr/bin/python3")],
            "absolute symlink",
        ),
    ],
)
def test_other_absolute_links_and_disallowed_interpreters_are_refused(
    entries: list[SourceEntry], reason: str
) -> None:
    """Only .venv/bin/python* beside .venv/pyvenv.cfg, and only to an allowed interpreter."""
    with pytest.raises(AgentgwError) as info:
        plan_tree(entries, "src", {"/usr/bin/python3"})
    assert info.value.code == Exit.USAGE
    assert reason in info.value.message

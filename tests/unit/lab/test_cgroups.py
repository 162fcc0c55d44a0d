"""Which host cgroup hierarchies a lab gets its own group in (parsed from /proc text)."""

from __future__ import annotations

from pathlib import Path

from agentgw.lab import cgroups

# This machine's layout: v1 controllers each on its own hierarchy, cgroup2 at .../unified, the
# caller in a sub-group of memory only.
PROC_CGROUP = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
3:cpuset:/
0::/
"""
MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:29 /sub /mnt/elsewhere rw,relatime - cgroup cgroup rw,cpu
"""


def test_parse_pairs_each_hierarchy_with_its_root_mount() -> None:
    found = {h.key: h for h in cgroups.parse(PROC_CGROUP, MOUNTINFO)}
    assert set(found) == {"name=systemd", "pids", "memory", "cpuacct", "cpu", "cpuset", ""}
    assert found[""].mount == Path("/sys/fs/cgroup/unified")
    assert found["cpu"].mount == Path("/sys/fs/cgroup/cpu"), "a bind of a sub-tree is not it"
    assert found["memory"].group("t") == Path(
        "/sys/fs/cgroup/memory/process_api/abc/agentgw-lab-t")


def test_unified_labs_get_cgroup2_and_systemd_hybrid_also_the_controllers() -> None:
    found = cgroups.parse(PROC_CGROUP, MOUNTINFO)
    assert {h.key for h in cgroups.wanted(found, hybrid=False)} == {"", "name=systemd"}
    assert {h.key for h in cgroups.wanted(found, hybrid=True)} == {
        "", "name=systemd", "cpu", "cpuacct", "memory", "pids"}
    assert cgroups.missing_for_hybrid(found) == []


def test_a_pure_cgroup2_host_cannot_boot_hybrid() -> None:
    v2 = cgroups.parse("0::/user.slice\n",
                       "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert [h.key for h in v2] == [""]
    assert cgroups.missing_for_hybrid(v2) == ["cpu", "cpuacct", "memory", "pids"]


def test_remove_takes_nested_groups_deepest_first(tmp_path: Path) -> None:
    group = tmp_path / "agentgw-lab-t"
    (group / "system.slice" / "x.service").mkdir(parents=True)
    (group / "init.scope").mkdir()
    busy = tmp_path / "agentgw-lab-busy"
    busy.mkdir()
    (busy / "file").write_text("a process would keep a real group")
    assert cgroups.remove([group, busy, tmp_path / "absent"]) == [busy]
    assert not group.exists()


def test_scripts_name_what_they_act_on() -> None:
    assert 'exec "$@"' in cgroups.enter_script()
    init = cgroups.init_script(("cpu", "memory"), "lab.target")
    assert "/sys/fs/cgroup/cpu /sys/fs/cgroup/memory" in init
    assert init.endswith("exec /lib/systemd/systemd systemd.unit=lab.target")
    assert "|| exit 1" in init

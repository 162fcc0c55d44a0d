"""A big real runtime tree (issue 14): litellm and its ~60 pinned dependencies, ~220 MiB and
~10,000 files with compiled extensions, from the wheels `make bench` fetched.

On the host, under a temporary root on the machine's disk (a lab's root is tmpfs-backed, which
would flatter every write), each beside a baseline measured in the same run:
- `agentgw release build` vs a plain `pip install --target` of the same wheels;
- `agentgw release add` of the built tree (goal <= 3 s) vs `cp -a` of it;
- the integrity re-hash a promote does (goal <= 0.5 s) vs reading every byte without hashing.
Then, in a lab, the promote overhead of a release carrying that tree (the demo gateway plus
the litellm tree) beside a bare `systemctl restart` + readiness of the same unit
(benchmarks/runtime_inside.py).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from agentgw.lab.machine import booted
from agentgw.lab.spec import LabSpec
from agentgw.model.release import ReleasePolicy
from agentgw.paths import Layout
from agentgw.store.release import release_owner, verify_tree
from benchmarks.rows import Row, rows_from_json, rows_to_json

REPO = Path(__file__).resolve().parents[1]
AGENTGW = "/opt/agentgw/venv/bin/agentgw"
PYTHON = "/opt/agentgw/venv/bin/python"
WHEELS = Path("/var/cache/agentgw/wheels/bench-runtime")
REQUIREMENTS = REPO / "benchmarks" / "runtime-requirements.txt"
SCRATCH = Path("/var/tmp")
RUNS = 3


def timed(argv: list[str], **kwargs: Any) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, **kwargs)
    return time.perf_counter() - t0


def read_all(root: Path) -> float:
    """Seconds to read every regular file under ``root`` (the re-hash's I/O, without hashing)."""
    t0 = time.perf_counter()
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb", buffering=0) as f:
                    while f.read(1 << 20):
                        pass
    return time.perf_counter() - t0


def tree_size(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            info = os.lstat(os.path.join(dirpath, name))
            files += 1
            size += info.st_size
    return files, size


def row(name: str, value: float, baseline: float, goal: str, ok: bool | None) -> Row:
    return Row(
        name=name,
        value=round(value * 1000, 1),
        unit="ms",
        baseline=round(baseline * 1000, 1),
        ratio=round(value / baseline, 2),
        goal=goal,
        ok=ok,
    )


def on_host() -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="agentgw-bench-", dir=SCRATCH))
    try:
        root = work / "root"
        root.mkdir()
        pip = [PYTHON, "-m", "pip", "install", "-q", "--only-binary=:all:", "--no-compile",
               "--no-index", "--find-links", str(WHEELS), "-r", str(REQUIREMENTS)]
        t_pip = statistics.median(
            timed([*pip, "--target", str(work / f"pip{i}")]) for i in range(RUNS)
        )
        files, size = tree_size(work / "pip0")
        builds = []
        for i in range(RUNS):
            builds.append(timed([AGENTGW, "--root", str(root), "release", "build", "--sha",
                                 f"b{i:06d}", "--label", "big", "-r", str(REQUIREMENTS),
                                 "--wheelhouse", str(WHEELS)]))
        adds, copies = [], []
        for i in range(RUNS):
            subprocess.run(["sync"], check=True)
            adds.append(timed([AGENTGW, "--root", str(root), "release", "add",
                               str(work / f"pip{i}"), "--sha", f"a{i:06d}", "--label", "big"]))
            subprocess.run(["sync"], check=True)
            copies.append(timed(["cp", "-a", str(work / f"pip{i}"), str(work / f"copy{i}")]))
        layout = Layout(root)
        release = layout.releases / "a000000-big"
        policy = ReleasePolicy()
        owner = release_owner(layout)
        rehash, reads = [], []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            problems = verify_tree(release, policy, owner)
            rehash.append(time.perf_counter() - t0)
            assert not problems, problems
            reads.append(read_all(release))
        what = f"{files} files, {size / 2**20:.0f} MiB"
        t_build, t_add = statistics.median(builds), statistics.median(adds)
        t_rehash = statistics.median(rehash)
        return [
            row(f"release build ({what}) vs pip install --target", t_build, t_pip,
                "(for comparison)", None),
            row(f"release add ({what}) vs cp -a", t_add, statistics.median(copies),
                "<= 3 s", t_add <= 3.0),
            row(f"re-hash at promote ({what}) vs reading every byte", t_rehash,
                statistics.median(reads), "<= 0.5 s", t_rehash <= 0.5),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def in_lab() -> list[Row]:
    spec = LabSpec(name=f"bench-rt-{uuid.uuid4().hex[:6]}", binds=(REPO,))
    with booted(spec) as lab:
        out = lab.exec([PYTHON, "-m", "benchmarks.runtime_inside"], cwd=REPO,
                       timeout=1200)
    rows = rows_from_json(out.stdout.strip().splitlines()[-1])
    return rows


def run() -> list[Row]:
    if not any(WHEELS.glob("litellm-*.whl")):
        raise RuntimeError(f"no wheels in {WHEELS}: run make bench (it fetches them)")
    return on_host() + in_lab()


if __name__ == "__main__":
    print(rows_to_json(run()))

"""Launcher overhead: exec of launcher/launch to the start of its target, against exec of the
target directly (the argv the launcher chose), interleaved in the same run.

Both paths time from just before the spawn to the first statement of the target (a script in a
release of a fake host on a temp dir), on CLOCK_MONOTONIC, so the interpreter start of the
target is in both and the difference is the launcher: its interpreter start, checks, banner,
launch.json and exec. Goal (issue 4): <= 20 ms extra at the median.
Runnable alone: ``python benchmarks/bench_launcher.py``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.rows import Row

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launcher" / "launch"
PYTHON = "/usr/bin/python3"
ITERATIONS = 40
GOAL_MS = 20.0
SHA, LABEL = "0123456789ab", "bench"
TARGET = "import time\nprint(time.monotonic_ns())\n"


def fake_host(root: Path) -> dict[str, str]:
    """A promoted script-mode profile under ``root``; returns its environment."""
    opt = root / "opt" / "agent"
    release = opt / "releases" / f"{SHA}-{LABEL}"
    release.mkdir(parents=True)
    (release / "target.py").write_text(TARGET)
    (release / "manifest.json").write_text(json.dumps({"sha": SHA, "label": LABEL}))
    pdir = opt / "gateways" / "bench"
    for sub in ("home", "logs"):
        (pdir / sub).mkdir(parents=True)
    (pdir / "current").symlink_to(Path("../../releases") / release.name)
    current = str(pdir / "current")
    return {
        "AGENT_PROFILE": "bench",
        "AGENT_ROOT": current,
        "PYTHONPATH": current,
        "AGENT_HOME": str(pdir / "home"),
        "AGENT_GATEWAY_MODE": "script",
        "AGENT_PROFILE_EXEC": "target.py",
        "AGENT_PYTHON": PYTHON,
    }


def to_target_ms(argv: list[str], env: dict[str, str], cwd: str) -> float:
    """Milliseconds from just before the spawn to the target's first statement."""
    t0 = time.monotonic_ns()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return (int(done.stdout.split()[-1]) - t0) / 1e6


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[-1]


def measure(iterations: int = ITERATIONS) -> tuple[list[float], list[float]]:
    """(via the launcher, direct) samples in ms, alternating so drift hits both alike."""
    with tempfile.TemporaryDirectory() as tmp:
        env = fake_host(Path(tmp))
        dry = subprocess.run(
            [str(LAUNCHER)],
            env={**env, "AGENT_LAUNCH_DRYRUN": "1"},
            capture_output=True,
            text=True,
            check=True,
        )
        direct_argv = dry.stdout.removeprefix("dryrun: would exec ").split()
        via, direct = [], []
        for _ in range(iterations):
            via.append(to_target_ms([str(LAUNCHER)], env, env["AGENT_HOME"]))
            direct.append(to_target_ms(direct_argv, env, env["AGENT_HOME"]))
    return via, direct


def run() -> list[Row]:
    via, direct = measure()
    n = len(via)
    via_med, direct_med = statistics.median(via), statistics.median(direct)
    via_p95, direct_p95 = p95(via), p95(direct)
    extra_med = via_med - direct_med
    return [
        Row(
            name=f"exec to target via launcher, median of {n}",
            value=via_med,
            unit="ms",
            baseline=direct_med,
            ratio=via_med / direct_med,
            goal="",
            ok=None,
        ),
        Row(
            name=f"exec to target via launcher, p95 of {n}",
            value=via_p95,
            unit="ms",
            baseline=direct_p95,
            ratio=via_p95 / direct_p95,
            goal="",
            ok=None,
        ),
        Row(
            name="launcher overhead, median extra",
            value=extra_med,
            unit="ms",
            baseline=None,
            ratio=None,
            goal=f"<= {GOAL_MS:g} ms",
            ok=extra_med <= GOAL_MS,
        ),
        Row(
            name="launcher overhead, p95 extra",
            value=via_p95 - direct_p95,
            unit="ms",
            baseline=None,
            ratio=None,
            goal="",
            ok=None,
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']:<42} {row['value']:8.2f} {row['unit']}", end="")
        if row["baseline"] is not None:
            print(f"  (direct {row['baseline']:.2f} ms, x{row['ratio']:.2f})", end="")
        if row["goal"]:
            print(f"  goal {row['goal']}: {'ok' if row['ok'] else 'MISSED'}", end="")
        print()

#!/usr/bin/python3 -IS
"""agentgw-ready: the ExecStartPost= of ``readiness: health`` gateways.

systemd runs it, under the gateway's own user and sandbox, once the launcher has exec'd the
runtime; the unit becomes active (and a restart job, agentgw's or a plain ``systemctl restart``,
completes) only when it exits 0. It polls ``GET http://$AGENT_LISTEN$AGENT_HEALTH_PATH`` from the
profile's own address until the answer is 200, for at most ``--timeout`` seconds (a little less
than the unit's TimeoutStartSec=, so it can still say what it saw).

It prints one line to stderr (the profile's journal) and records the same facts in
``$AGENT_LOGS/ready.json``, where ``agentgw promote`` and ``agentgw status`` read why a start
failed: ``{"result": "healthy" | "timeout" | "exited", "url", "elapsed_s", "attempts",
"last_error", "main_pid", "timeout_s"}``.

Exit status: 0 healthy, 1 not healthy in time (or the gateway exited), 2 bad options or
environment. Stdlib only, like the launcher.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time

EX_USAGE = 2
# The first probes come quickly, then back off to POLL_S: a gateway that is up 30 ms after its
# exec is not made to wait for a fixed 0.2 s tick (with one, a restart job took 0.2 s longer
# about every other time: bench_control's "promote" rows measure every restart through this).
FIRST_POLL_S = 0.01
POLL_S = 0.2
PROBE_TIMEOUT_S = 2.0
BODY_CAP = 65536
USAGE = """\
usage: ready [--timeout SECONDS]

Wait until the gateway's health check answers 200 (AGENT_LISTEN, AGENT_HEALTH_PATH from the
profile's env file); record the outcome in $AGENT_LOGS/ready.json. Exit 0 healthy, 1 not.
"""


class Usage(Exception):
    pass


def parse_args(args: list[str]) -> float:
    timeout = 90.0
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        if arg == "--timeout" and i + 1 < len(args):
            i += 1
            try:
                timeout = float(args[i])
            except ValueError:
                raise Usage(f"--timeout {args[i]!r} is not a number of seconds") from None
            if not 0 < timeout <= 3600:
                raise Usage(f"--timeout {args[i]} is not between 0 and 3600 seconds")
        else:
            raise Usage(f"{arg}: unknown option or missing value (see --help)")
        i += 1
    return timeout


def target(env: dict[str, str]) -> tuple[str, int, str]:
    listen = env.get("AGENT_LISTEN", "")
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise Usage(f"AGENT_LISTEN={listen!r} is not host:port; run 'agentgw apply'")
    path = env.get("AGENT_HEALTH_PATH", "")
    if not path.startswith("/"):
        raise Usage(f"AGENT_HEALTH_PATH={path!r} is not an HTTP path; run 'agentgw apply'")
    return host, int(port), path


def probe(host: str, port: int, path: str) -> tuple[int, str]:
    """One GET from the profile's own address (its unit's IP filter allows only that one).
    Returns the status (0 without an answer) and what went wrong, if anything."""
    conn = http.client.HTTPConnection(
        host, port, timeout=PROBE_TIMEOUT_S, source_address=(host, 0)
    )
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        response.read(BODY_CAP)
    except (OSError, http.client.HTTPException) as exc:
        return 0, describe(exc)
    finally:
        conn.close()
    if response.status != 200:
        return response.status, f"answered {response.status} {response.reason}"
    return 200, ""


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def alive(pid: int) -> bool:
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def record(logs: str, doc: dict[str, object]) -> None:
    """ready.json, replaced atomically; a failure to write it must not fail the start."""
    if not logs.startswith("/"):
        return
    final = os.path.join(logs, "ready.json")
    tmp = os.path.join(logs, f".ready.json.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o640)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, final)
    except OSError as exc:
        sys.stderr.write(f"agentgw-ready: cannot write {final}: {exc.strerror}\n")


def poll_pause(attempts: int) -> float:
    """The pause after the ``attempts``-th probe: 10 ms, doubling up to POLL_S (0.2 s)."""
    return float(min(POLL_S, FIRST_POLL_S * 2 ** min(attempts - 1, 16)))


def wait(env: dict[str, str], timeout: float) -> tuple[int, dict[str, object]]:
    host, port, path = target(env)
    url = f"http://{host}:{port}{path}"
    main_pid = int(env["MAINPID"]) if env.get("MAINPID", "").isdigit() else 0
    started = time.monotonic()
    deadline = started + timeout
    attempts, last = 0, "no answer yet"
    result = "timeout"
    while True:
        attempts += 1
        status, last = probe(host, port, path)
        if status == 200:
            result = "healthy"
            break
        if not alive(main_pid):
            result, last = "exited", f"the gateway (pid {main_pid}) exited; last: {last}"
            break
        pause = poll_pause(attempts)
        if time.monotonic() + pause >= deadline:
            break
        time.sleep(pause)
    doc: dict[str, object] = {
        "result": result,
        "profile": env.get("AGENT_PROFILE", ""),
        "url": url,
        "elapsed_s": round(time.monotonic() - started, 3),
        "attempts": attempts,
        "last_error": last,
        "main_pid": main_pid,
        "timeout_s": timeout,
        "time": time.time(),
    }
    return (0 if result == "healthy" else 1), doc


def main(args: list[str]) -> int:
    try:
        timeout = parse_args(args)
        code, doc = wait(dict(os.environ), timeout)
    except Usage as exc:
        sys.stderr.write(f"agentgw-ready: error: {exc}\n")
        return EX_USAGE
    record(os.environ.get("AGENT_LOGS", ""), doc)
    if code == 0:
        line = (f"agentgw-ready: healthy: GET {doc['url']} answered 200 after "
                f"{doc['elapsed_s']}s ({doc['attempts']} tries)")
    elif doc["result"] == "exited":
        line = (f"agentgw-ready: error: {doc['last_error']}, before GET {doc['url']} "
                f"answered 200 ({doc['elapsed_s']}s, {doc['attempts']} tries)")
    else:
        line = (f"agentgw-ready: error: GET {doc['url']} never answered 200 within "
                f"{doc['elapsed_s']}s ({doc['attempts']} tries); last: {doc['last_error']}")
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

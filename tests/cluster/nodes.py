"""Ray nodes of a test's own: `ray start --block` processes, each in a session of its own, so
ending that session ends the node and every process it started (the fake autoscaler's nodes
included), never `ray stop`, which would end every Ray on the machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import psutil
import yaml

from kiki.config import APPS
from kiki.db.embedded import free_port

BIN = Path(sys.executable).parent
T = TypeVar("T")


def node_env(**extra: str) -> dict[str, str]:
    """A user's shell: none of this session's KIKI_* or RAY_* settings, token auth on (as
    `ray start` has it), plus `extra` (the nodes' KIKI_* settings)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KIKI_", "RAY_"))}
    return {**inherited, "RAY_AUTH_MODE": "token", **extra}


@contextmanager
def short_temp_dir() -> Iterator[str]:
    """A node's --temp-dir: short, as Ray's socket paths inside it are long; removed after."""
    with tempfile.TemporaryDirectory(prefix="kr", dir="/tmp", ignore_cleanup_errors=True) as d:
        yield d


def agent_ports() -> list[str]:
    """Fixed ports for a node's agents: left at 0, the raylet waits for each agent to write
    the port it chose to a file, and on a loaded 2-core machine that wait timed out."""
    names = ("metrics-export-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "runtime-env-agent-port")  # fmt: skip
    return [f"--{name}={free_port()}" for name in names]


@contextmanager
def ray_node(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """One `ray start --block ARGS` node, ended with all it started when the block exits."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *agent_ports(),
             *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        _end_session(proc)


def _end_session(proc: subprocess.Popen) -> None:
    def members() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            with suppress(psutil.Error, ProcessLookupError):
                if os.getsid(p.pid) == proc.pid:
                    found.append(p)
        return found

    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=60)
    _, alive = psutil.wait_procs(members(), timeout=10)
    for p in alive:
        with suppress(psutil.Error):
            p.kill()
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def wait_for(check: Callable[[], T], timeout_s: float, what: str, every_s: float = 1.0) -> T:
    """`check()` once it is truthy; fails naming `what` and the last value after `timeout_s`
    (an exception counts as not yet, a node or dashboard may still be starting; an
    AssertionError ends the wait at once)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            last = check()
            if last:
                return last
        except AssertionError:
            raise
        except Exception as exc:
            last = f"{exc.__class__.__name__}: {exc}"
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {timeout_s:.0f}s (last seen: {last})")
        time.sleep(every_s)


def apps_running(serve_status: str) -> bool:
    """Does `serve status`'s output show every app (the six and the root) RUNNING? (An app
    that failed to deploy ends the wait at once, with the output.)"""
    apps = (yaml.safe_load(serve_status) or {}).get("applications") or {}
    statuses = {name: app["status"] for name, app in apps.items()}
    assert "DEPLOY_FAILED" not in statuses.values(), serve_status
    return sorted(statuses) == sorted(APPS) and set(statuses.values()) == {"RUNNING"}

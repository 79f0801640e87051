"""Mistakes a user can fix end in one line that says how, and a non-zero exit."""

import os
import socket
import subprocess
import sys
from pathlib import Path

from kiki.db.embedded import free_port


def kiki(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KIKI_", "RAY_"))}
    full_env = {**inherited, "KIKI_HOME": str(tmp_path / "home"), **env}
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        capture_output=True, text=True, env=full_env, timeout=120,
    )  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kiki: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def test_bad_config_value(tmp_path: Path) -> None:
    result = kiki(["up"], tmp_path, KIKI_HTTP_PORT="eighty")
    assert result.returncode == 2
    assert "KIKI_HTTP_PORT" in one_error_line(result)


def test_bad_database_url(tmp_path: Path) -> None:
    result = kiki(["db", "status"], tmp_path, KIKI_DATABASE_URL="mysql://u@h/db")
    assert result.returncode == 2
    assert "postgresql://" in one_error_line(result)


def test_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql://kiki:secret@127.0.0.1:{free_port()}/kiki"
    result = kiki(["db", "status"], tmp_path, KIKI_DATABASE_URL=url)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "cannot reach PostgreSQL" in line and "KIKI_DATABASE_URL" in line
    assert "secret" not in line  # the password is redacted


def test_port_already_in_use(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = kiki(["up"], tmp_path, KIKI_HTTP_PORT=str(port))
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"port {port} (HTTP) is already in use" in line and "KIKI_HTTP_PORT" in line


def test_help_texts_name_every_command(tmp_path: Path) -> None:
    result = kiki(["--help"], tmp_path)
    assert result.returncode == 0
    for command in ("up", "down", "status", "db", "keys"):
        assert command in result.stdout


def test_status_when_not_running(tmp_path: Path) -> None:
    result = kiki(["status"], tmp_path)
    assert result.returncode == 3
    assert "not running" in result.stdout


def test_fuzz_needs_a_running_platform(tmp_path: Path) -> None:
    result = kiki(["bench", "fuzz", "--examples", "1"], tmp_path)
    assert result.returncode == 1
    assert "kiki up --detach" in one_error_line(result)


def test_fuzz_names_an_unknown_app(tmp_path: Path) -> None:
    result = kiki(["bench", "fuzz", "--apps", "value,nope"], tmp_path)
    assert result.returncode == 2
    assert "--apps: unknown nope" in one_error_line(result)

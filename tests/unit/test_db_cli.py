"""`kiki db backup` / `restore`: bad input is one line and a non-zero exit, before any
database is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import main


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["backup", "--to", "ftp://host/x"], 2, "--to 'ftp://host/x': give file:///absolute"),
        (["restore", "relative/dir"], 2, "FROM 'relative/dir': give file:///absolute"),
        (["restore", "file:///x", "--until", "yesterday"], 2, "--until 'yesterday' is not a time"),
        (["restore", "file:///no/such/backup"], 1, "no backup at file:///no/such/backup"),
    ],
)
def test_bad_input_is_one_line(args: list[str], code: int, message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["db", *args], env={"KIKI_HOME": str(tmp_path)})
    assert result.exit_code == code, result.output
    assert f"kiki: error: {message}" in result.output
    assert "Traceback" not in result.output

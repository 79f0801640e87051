from pathlib import Path

import pytest

from kiki.db.migrate import default_dir, discover
from kiki.errors import ConfigError


def test_shipped_migrations_are_ordered_and_named() -> None:
    migrations = discover()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions) and versions[0] == 1
    assert len(set(versions)) == len(versions)
    assert all(m.sql.strip() for m in migrations)
    assert default_dir().is_dir()


def test_bad_names_and_duplicate_versions_are_errors(tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("SELECT 1;")
    (tmp_path / "2_bad.sql").write_text("SELECT 1;")
    with pytest.raises(ConfigError, match="NNNN_lower_snake"):
        discover(tmp_path)
    (tmp_path / "2_bad.sql").unlink()
    (tmp_path / "0001_again.sql").write_text("SELECT 1;")
    with pytest.raises(ConfigError, match="share version 0001"):
        discover(tmp_path)

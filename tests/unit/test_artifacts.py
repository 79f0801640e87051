"""The artifact store over a file:// folder and a real S3 endpoint (moto's server): model
folders by content digest, checked on download; single objects; bad URLs refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiki.artifacts import MANIFEST, ArtifactStore, url_problem
from kiki.config import Settings, load_settings
from kiki.errors import ConfigError, FailedPrecondition
from tests.conftest import S3Server


def model_folder(root: Path, weights: bytes = b"\x00weights") -> Path:
    folder = root / "model"
    (folder / "nested").mkdir(parents=True)
    (folder / "weights.pt").write_bytes(weights)
    (folder / "nested" / "model.json").write_text('{"features": ["recency"]}')
    return folder


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "file":
        return ArtifactStore.from_settings(Settings(home=tmp_path / "home"))
    s3: S3Server = request.getfixturevalue("s3_server")
    settings = Settings(
        home=tmp_path / "home",
        artifacts_url=f"s3://{s3.bucket()}/kiki",
        artifacts_endpoint_url=s3.endpoint_url,
    )
    return ArtifactStore.from_settings(settings)


def test_a_model_folder_round_trips_by_digest(store: ArtifactStore, tmp_path: Path) -> None:
    url = store.put_folder(model_folder(tmp_path / "a"), "ltv")
    assert url.startswith(f"{store.url}/models/ltv/") and len(url.rsplit("/", 1)[1]) == 64
    # The same bytes land at the same URL; other bytes elsewhere.
    assert store.put_folder(model_folder(tmp_path / "b"), "ltv") == url
    assert store.put_folder(model_folder(tmp_path / "c", b"other"), "ltv") != url

    # Another node: its own cache folder, nothing local.
    other = ArtifactStore(store.url, tmp_path / "node2-cache", store.endpoint_url)
    local = other.fetch_folder(url)
    assert local.parent == tmp_path / "node2-cache"
    assert (local / "weights.pt").read_bytes() == b"\x00weights"
    assert (local / "nested" / "model.json").read_text() == '{"features": ["recency"]}'
    assert (local / MANIFEST).is_file()
    assert other.fetch_folder(url) == local  # cached: no second download


def test_a_tampered_or_missing_folder_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    url = store.put_folder(model_folder(tmp_path), "churn")
    remote = url[len(store.url) + 1 :]
    store.put_bytes(f"{remote}/weights.pt", b"tampered")
    with pytest.raises(FailedPrecondition, match=r"weights.pt does not match its manifest"):
        store.fetch_folder(url)
    assert not any(store.cache_dir.iterdir())  # the bad copy is not kept
    with pytest.raises(FailedPrecondition, match="model files are missing at"):
        store.fetch_folder(f"{store.url}/models/churn/{'0' * 64}")


def test_single_objects(store: ArtifactStore) -> None:
    url = store.put_bytes("creatives/t/e/c.png", b"\x89PNG")
    assert url == f"{store.url}/creatives/t/e/c.png"
    assert store.get_bytes(url) == b"\x89PNG"
    with pytest.raises(FailedPrecondition, match="is missing from the artifact store"):
        store.get_bytes(f"{store.url}/creatives/none.png")


def test_a_folder_from_before_the_store_loads_from_its_node_path(tmp_path: Path) -> None:
    store = ArtifactStore.from_settings(Settings(home=tmp_path))
    folder = model_folder(tmp_path)
    assert store.fetch_folder(str(folder)) == folder
    with pytest.raises(FailedPrecondition, match="from before the artifact store"):
        store.fetch_folder(str(tmp_path / "gone"))


def test_urls_of_another_kind_of_store_are_refused(tmp_path: Path) -> None:
    store = ArtifactStore.from_settings(Settings(home=tmp_path))
    with pytest.raises(FailedPrecondition, match="set KIKI_ARTIFACTS_URL to the store"):
        store.get_bytes("s3://elsewhere/x.png")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("s3://bucket/prefix", None),
        ("file:///srv/kiki", None),
        ("/srv/kiki", "give file:///absolute/path or s3://bucket/prefix"),
        ("gs://bucket", "give file:///absolute/path or s3://bucket/prefix"),
        ("s3:///prefix", "give file:///absolute/path or s3://bucket/prefix"),
        ("file://host/srv", "a file URL needs an absolute path"),
    ],
)
def test_store_urls(url: str, problem: str | None) -> None:
    found = url_problem(url)
    assert found == problem if problem is None else found is not None and found.startswith(problem)


def test_a_bad_url_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIKI_ARTIFACTS_URL", "gs://bucket")
    with pytest.raises(ConfigError, match=r"KIKI_ARTIFACTS_URL='gs://bucket' is not valid"):
        load_settings()


def test_a_cluster_needs_a_store_every_node_reads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KIKI_ARTIFACTS_URL is not set"):
        ArtifactStore.for_cluster(Settings(home=tmp_path, ray_address="10.0.0.1:6379"))
    chosen = Settings(home=tmp_path, ray_address="10.0.0.1:6379", artifacts_url="s3://b/k")
    assert ArtifactStore.for_cluster(chosen).url == "s3://b/k"

"""The artifact store: model weights, Ray Tune results, creative images and simulation plots,
by URL, so that no node depends on another node's disk.

`KIKI_ARTIFACTS_URL` names it: `file:///path` (default `file://$KIKI_HOME/artifacts`, right for
one machine or a filesystem every node mounts) or `s3://bucket/prefix` for any S3-compatible
store (`KIKI_ARTIFACTS_ENDPOINT_URL` for one that is not AWS; credentials from the usual AWS
variables or the node's instance profile). fsspec does the I/O (s3fs for S3).

A model is a folder stored under `models/<kind>/<digest>/`, where the digest is the SHA-256 of
its `MANIFEST.json` (each file's SHA-256); the manifest is written last, so a folder without
one is incomplete. Readers download a folder once per node into a local cache named by the
digest and check every file against the manifest, so a registered URL always means the same
bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import urlsplit

import fsspec

from kiki.errors import ConfigError, FailedPrecondition

if TYPE_CHECKING:
    import pyarrow.fs

    from kiki.config import Settings

MANIFEST = "MANIFEST.json"
M = TypeVar("M", bound="Loadable")


class Loadable(Protocol):
    @classmethod
    def load(cls: type[M], directory: Path) -> M: ...


SCHEMES = ("file", "s3")


def default_url(home: Path) -> str:
    return (Path(home).resolve() / "artifacts").as_uri()


def url_problem(url: str) -> str | None:
    """What is wrong with `url` as a store (None when KIKI can use it)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or (parts.scheme == "s3" and not parts.netloc):
        return "give file:///absolute/path or s3://bucket/prefix"
    if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        return "a file URL needs an absolute path (file:///srv/kiki/artifacts)"
    return None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_of(folder: Path) -> dict[str, str]:
    """Each file under `folder` (relative POSIX path) and its SHA-256."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): _sha256_file(p) for p in files}


def digest_of(manifest: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


@dataclass
class ArtifactStore:
    """One store, shared by every node; `cache_dir` is this node's copy of the folders read."""

    url: str
    cache_dir: Path
    endpoint_url: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        return cls(
            url=(settings.artifacts_url or default_url(settings.home)).rstrip("/"),
            cache_dir=Path(settings.home).resolve() / "cache" / "artifacts",
            endpoint_url=settings.artifacts_endpoint_url,
        )

    @classmethod
    def for_cluster(cls, settings: Settings) -> ArtifactStore:
        """The store, refused when it is the default folder under one node's KIKI_HOME: on a
        cluster every node must read what any node wrote."""
        if not settings.artifacts_url:
            raise ConfigError(
                "RAY_ADDRESS names a cluster but KIKI_ARTIFACTS_URL is not set: models and files "
                "written on one node would be missing on the others; set it to s3://bucket/prefix "
                "(or a file:///path every node mounts) here and on the cluster's nodes"
            )
        return cls.from_settings(settings)

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def shared(self) -> bool:
        """Can every node of a cluster read it? An S3 store can; a file store only if the
        operator mounted the same folder everywhere, which KIKI cannot see."""
        return self.scheme == "s3"

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self.scheme == "s3":
            # No listings cache: other processes write here, and a stale listing would hide
            # their files.
            return fsspec.filesystem("s3", endpoint_url=self.endpoint_url, use_listings_cache=False)
        return fsspec.filesystem("file", auto_mkdir=True)

    def _path(self, url_or_key: str) -> str:
        """The filesystem path (no scheme) of a key under this store, or of a URL of this
        store's kind (an older store's URL stays readable after KIKI_ARTIFACTS_URL moves)."""
        if "://" not in url_or_key:
            return f"{self._root}/{url_or_key.lstrip('/')}"
        parts = urlsplit(url_or_key)
        if parts.scheme != self.scheme:
            raise FailedPrecondition(
                f"{url_or_key} is not in a {self.scheme}:// store like {self.url}: set "
                "KIKI_ARTIFACTS_URL to the store it was written to"
            )
        return parts.path if self.scheme == "file" else f"{parts.netloc}{parts.path}"

    @property
    def _root(self) -> str:
        parts = urlsplit(self.url)
        return parts.path if self.scheme == "file" else f"{parts.netloc}{parts.path}"

    def url_of(self, key: str) -> str:
        return f"{self.url}/{key.lstrip('/')}"

    # Single objects: creative images, plots.

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write `data` under `key` (whole or not at all) and give its URL."""
        return self._put_whole(key, lambda path: self.fs.pipe_file(path, data))

    def put_file(self, local: Path, key: str) -> str:
        """Upload a local file under `key` (whole or not at all) and give its URL: large
        exports are written to local disk first, then streamed up (multipart on S3)."""
        return self._put_whole(key, lambda path: self.fs.put_file(str(local), path))

    def _put_whole(self, key: str, write: Callable[[str], object]) -> str:
        path = self._path(key)
        if self.scheme == "file":  # S3 objects appear whole; a local file needs a rename
            draft = f"{path}.{uuid.uuid4().hex}.tmp"
            write(draft)
            self.fs.mv(draft, path)
        else:
            write(path)
        return self.url_of(key)

    def get_bytes(self, url: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(url))
        except FileNotFoundError:
            raise FailedPrecondition(f"{url} is missing from the artifact store") from None

    def names(self, prefix: str) -> list[str]:
        """The names of the objects directly under the key `prefix` (none when it is absent)."""
        try:
            found = self.fs.ls(self._path(prefix), detail=False)
        except FileNotFoundError:
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in found)

    # Folders: model weights.

    def put_folder(self, folder: Path, kind: str, root: str = "models") -> str:
        """Upload a folder (model weights; a database backup under `root="backups"`) to
        `<root>/<kind>/<digest>/` and give its URL. The same content always lands at the same
        URL, so uploading twice is harmless."""
        manifest = manifest_of(folder)
        if not manifest:
            raise FailedPrecondition(f"{folder} holds no files to store")
        digest = digest_of(manifest)
        key = f"{root}/{kind}/{digest}"
        for name in manifest:
            self.fs.put_file(str(folder / name), self._path(f"{key}/{name}"))
        self.put_bytes(f"{key}/{MANIFEST}", json.dumps(manifest, sort_keys=True).encode())
        return self.url_of(key)

    def fetch_folder(self, url: str) -> Path:
        """A local copy of a stored folder, downloaded once per node and checked file by file.
        A node-local path (a model registered before the store existed) is used as it is."""
        if "://" not in url:
            return self._existing_local(Path(url))
        digest = url.rstrip("/").rsplit("/", 1)[-1]
        cached = self.cache_dir / digest
        if (cached / MANIFEST).is_file():
            return cached
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        draft = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=f".{digest[:12]}-"))
        try:
            missing = f"model files are missing at {url}; retrain or restore the artifact store"
            self.get_folder(url, draft, missing)
            try:
                os.rename(draft, cached)
            except OSError:  # another process of this node got there first: same bytes
                if not (cached / MANIFEST).is_file():
                    raise
        finally:
            shutil.rmtree(draft, ignore_errors=True)
        return cached

    def get_folder(self, url: str, into: Path, missing: str) -> dict[str, str]:
        """Download a folder stored by `put_folder` into the empty folder `into`, checking
        each file against the manifest and the manifest against the URL's digest; returns
        the manifest. `missing`: the message when nothing is stored there."""
        digest = url.rstrip("/").rsplit("/", 1)[-1]
        remote = self._path(url)
        try:
            manifest = json.loads(self.fs.cat_file(f"{remote}/{MANIFEST}"))
        except FileNotFoundError:
            raise FailedPrecondition(missing) from None
        if digest_of(manifest) != digest:
            raise FailedPrecondition(f"{url}: its manifest does not match its digest")
        for name, sha in manifest.items():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(f"{remote}/{name}", str(target))
            if _sha256_file(target) != sha:
                raise FailedPrecondition(f"{url}/{name} does not match its manifest")
        (into / MANIFEST).write_text(json.dumps(manifest, sort_keys=True))
        return manifest

    def load(self, url: str, kind: type[M]) -> M:
        """A model saved by `kind.save`, from its stored folder."""
        return kind.load(self.fetch_folder(url))

    @staticmethod
    def _existing_local(path: Path) -> Path:
        if not path.is_dir():
            raise FailedPrecondition(
                f"model files are missing at {path} (a folder on one node's disk, from before "
                "the artifact store); retrain the model"
            )
        return path

    # Ray Tune's results.

    def tune_storage(self) -> tuple[str, pyarrow.fs.FileSystem | None]:
        """`RunConfig(storage_path=..., storage_filesystem=...)` for Tune's results under
        `tune/`, reachable from trials on any node."""
        if self.scheme == "file":
            return self._path("tune"), None
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return self._path("tune"), PyFileSystem(FSSpecHandler(self.fs))

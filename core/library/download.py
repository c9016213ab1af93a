"""Download a catalog model from the Hugging Face hub: resumable, cancellable, verified.

    path = download_model(entry, models_dir(), on_progress, should_stop)   # then open it

huggingface_hub makes the HTTP calls: `get_hf_file_metadata` (HEAD of the file's
/resolve/ URL: X-Repo-Commit, ETag or X-Linked-Etag, X-Linked-Size, and the Location of a
large file) and `http_get` (GET, with `Range: bytes=N-` from where an earlier attempt
stopped, and its own retries when a connection drops mid-file). `hf_hub_download` is not
used: since huggingface_hub 2.x it writes to a per-process temporary file that it deletes
on any failure, so a cancelled or interrupted download would start over. Here a file grows
in `<folder>/.partial/<name>.<etag>.part`, kept across cancels and restarts (named by the
hub's ETag, so a file changed on the hub never resumes from the old one), and is hashed as
it grows: the hub's ETag of a large (LFS) file is its SHA-256, that of a small one its git
blob SHA-1; a mismatch deletes the part and fails. Verified files are renamed into the
model's folder; a marker file then says the download is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.cluster.transfer_rate import TransferRate
from core.errors import ModelError, TpiError
from core.library.catalog import CatalogEntry

log = logging.getLogger(__name__)

PARTIAL = ".partial"
MARKER = ".tpi-download.json"
CHUNK_BYTES = 1 << 20  # a cancel or a progress report waits at most one chunk
REPORT_S = 0.1
SIZE_SLACK, SIZE_SLACK_BYTES = 1.25, 10_000_000  # how far the hub's size may exceed ours
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")


class DownloadCancelled(TpiError):
    """The user cancelled; what arrived stays for the next attempt."""


class ChecksumError(ModelError):
    """A downloaded file is not what the hub says it is."""


@dataclass(frozen=True)
class DownloadProgress:
    stage: str  # "Connecting", "Checking what was downloaded", "Downloading", "Done"
    file: str
    done: int  # bytes of the whole model
    total: int
    rate: float | None  # bytes/s, None while estimating
    eta_s: float | None


OnProgress = Callable[[DownloadProgress], None]


def is_downloaded(entry: CatalogEntry, models_dir: Path) -> bool:
    """Whether every file of `entry` is in its folder, verified (files only get there
    once their checksum matched) and the download marked complete."""
    folder = entry.folder(models_dir)
    return (folder / MARKER).is_file() and all((folder / f.name).is_file()
                                                for f in entry.files)


def download_model(entry: CatalogEntry, models_dir: Path, on_progress: OnProgress,
                   should_stop: Callable[[], bool] = lambda: False) -> Path:
    """Download what is missing of `entry` into its folder; returns what to open.

    Raises DownloadCancelled (what arrived is kept), ChecksumError or ModelError."""
    from huggingface_hub import constants

    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, CHUNK_BYTES)
    folder = entry.folder(models_dir)
    partial = folder / PARTIAL
    try:
        partial.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create {partial} ({e.strerror})") from None
    job = _Job(entry, on_progress, should_stop)
    job.report("Connecting", 0, force=True)
    revision, todo, record = entry.revision, [], {}
    for f in entry.files:  # a HEAD each first: the sizes, and one commit for all
        final = folder / f.name
        if final.is_file():  # verified by an earlier attempt
            job.before += final.stat().st_size
            record[f.name] = {"size": final.stat().st_size}
            continue
        job.at(0, "Connecting")
        meta = _metadata(entry.repo, f.name, revision)
        _check_size(meta, f.size)
        revision = meta.commit
        todo.append((meta, final))
        record[f.name] = {"etag": meta.etag, "size": meta.size}
    job.total = job.before + sum(m.size for m, _ in todo)
    for meta, final in todo:
        job.file, job.expected = meta.name, meta.size
        _fetch(job, meta, partial, final)
    (folder / MARKER).write_text(json.dumps(
        {"repo": entry.repo, "commit": revision, "files": record}, indent=1), encoding="utf-8")
    shutil.rmtree(partial, ignore_errors=True)
    job.report("Done", job.total, force=True)
    return entry.open_path(models_dir)


# the hub ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Meta:
    repo: str
    url: str  # where the bytes are (the CDN's Location for a large file)
    commit: str
    etag: str
    size: int
    name: str


def _endpoint() -> str | None:
    """HF_ENDPOINT as it is now (huggingface_hub reads it once, when imported)."""
    return os.environ.get("HF_ENDPOINT") or None


def _metadata(repo: str, name: str, revision: str) -> _Meta:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo, name, revision=revision, endpoint=_endpoint())
    with hub_errors(repo, name):
        meta = get_hf_file_metadata(url, endpoint=_endpoint())
    if not meta.commit_hash or not meta.etag:
        raise ModelError(f"{url} did not answer like the Hugging Face hub (no commit or "
                         "ETag); check HF_ENDPOINT")
    if meta.size is None or meta.size < 0:
        raise ModelError(f"the hub did not say how large {name} is")
    return _Meta(repo, meta.location or url, meta.commit_hash, meta.etag.lower(), meta.size, name)


class hub_errors:  # noqa: N801 (used as a context manager)
    """huggingface_hub's and httpx's exceptions as one sentence for the user."""

    def __init__(self, repo: str, name: str):
        self.repo, self.name = repo, name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, _tb) -> bool:
        if err is None or isinstance(err, TpiError):
            return False
        raise ModelError(hub_message(err, self.repo, self.name)) from None


def hub_message(err: BaseException, repo: str, name: str) -> str:
    import httpx2
    from huggingface_hub import errors

    where = _endpoint() or "https://huggingface.co"
    if isinstance(err, errors.OfflineModeIsEnabled):
        return "downloads are turned off here (HF_HUB_OFFLINE is set)"
    if isinstance(err, errors.GatedRepoError):
        return f"{repo} asks you to accept its licence on the hub first"
    if isinstance(err, errors.RepositoryNotFoundError):
        return f"the hub has no model {repo}"
    if isinstance(err, (errors.RemoteEntryNotFoundError, errors.RevisionNotFoundError)):
        return f"{repo} has no file {name} on the hub"
    if isinstance(err, errors.HfHubHTTPError):
        status = err.response.status_code if err.response is not None else "?"
        return f"the hub answered {status} for {name}; try again later"
    if isinstance(err, (httpx2.TransportError, ConnectionError, TimeoutError)):
        return f"cannot reach {where} ({type(err).__name__}); check the connection"
    if isinstance(err, OSError) and "Consistency check failed" in str(err):
        return f"the download of {name} was cut short; try again to resume it"
    if isinstance(err, OSError):
        return f"downloading {name} failed ({err.strerror or err}); try again to resume"
    return f"downloading {name} failed: {err}"


# one file -----------------------------------------------------------------------------
class _Job:
    """Byte counts, rate and reports across the files of one model."""

    def __init__(self, entry: CatalogEntry, on_progress: OnProgress,
                 should_stop: Callable[[], bool]):
        self.total = entry.size  # the hub's sizes replace the catalog's once known
        self.before = 0  # bytes of the files already finished
        self.file = ""
        self.expected = 0  # bytes of the file being downloaded, as the hub said
        self.on_progress, self.should_stop = on_progress, should_stop
        self.rate = TransferRate()
        self._last = 0.0

    def at(self, in_file: int, stage: str = "Downloading") -> None:
        if self.should_stop():
            raise DownloadCancelled("the download was cancelled")
        self.report(stage, self.before + in_file)

    def report(self, stage: str, done: int | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < REPORT_S:
            return
        self._last = now
        done = self.total if done is None else min(done, self.total)
        e = self.rate.update(done, self.total)
        self.on_progress(DownloadProgress(stage, self.file, done, self.total, e.rate, e.eta_s))


def _fetch(job: _Job, meta: _Meta, partial: Path, final: Path) -> None:
    """Resume or start `meta`'s file in `partial`, verify it, move it to `final`."""
    from filelock import FileLock, Timeout
    from huggingface_hub import file_download
    from huggingface_hub.utils import build_hf_headers

    hasher = _hasher(meta)
    part = partial / f"{final.name}.{meta.etag[:16]}.part"
    lock = FileLock(str(part) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TpiError(f"{meta.name} is being downloaded by another TPI Chat already") from None
    try:
        _check_disk(partial, meta.size - (_size(part) or 0))
        with open(part, "r+b" if part.exists() else "w+b") as raw:
            f = _HashingFile(raw, hasher, job)
            f.seed()
            if f.size > meta.size:  # longer than the file: not ours to trust
                f.seek(0)
                f.truncate()
            with hub_errors(meta.repo, meta.name):
                file_download.http_get(meta.url, f, resume_size=f.size,
                                       headers=build_hf_headers(), expected_size=meta.size,
                                       tqdm_class=_QuietBar)
            f.check()
        job.before += meta.size
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
    except ChecksumError:
        part.unlink(missing_ok=True)  # wrong bytes: resuming them would stay wrong
        raise
    finally:
        lock.release()
        Path(str(part) + ".lock").unlink(missing_ok=True)


def _hasher(meta: _Meta):
    if _SHA256.match(meta.etag):
        return _Digest("sha256", meta.etag)
    if _GIT_SHA1.match(meta.etag):  # a small file: the hub's ETag is its git blob id
        return _Digest("sha1", meta.etag, f"blob {meta.size}\0".encode())
    raise ModelError(f"the hub gave {meta.name} a checksum we cannot verify "
                     f"({meta.etag[:40]!r}), so it is not downloaded")


class _Digest:
    def __init__(self, kind: str, expected: str, prefix: bytes = b""):
        self.kind, self.expected, self.prefix = kind, expected, prefix
        self.reset()

    def reset(self) -> None:
        self.h = hashlib.new(self.kind)
        self.h.update(self.prefix)

    def update(self, data: bytes) -> None:
        self.h.update(data)

    def matches(self) -> bool:
        return self.h.hexdigest() == self.expected


class _HashingFile:
    """The part file as http_get writes it: every byte hashed, counted and reported, and
    the user's cancel checked between chunks. Rewinds (a server that ignored Range) re-hash
    what is kept."""

    def __init__(self, raw: BinaryIO, digest: _Digest, job: _Job):
        self.raw, self.digest, self.job = raw, digest, job
        self.size = 0

    def seed(self) -> None:
        """Hash what an earlier attempt downloaded (the file's current contents)."""
        self.digest.reset()
        self.raw.seek(0)
        self.size = 0
        while chunk := self.raw.read(CHUNK_BYTES):
            self.digest.update(chunk)
            self.size += len(chunk)
            self.job.at(self.size, "Checking what was downloaded")

    def write(self, data: bytes) -> int:
        if self.size + len(data) > self.job.expected:  # never more than the hub promised
            raise ChecksumError(f"{self.job.file} is longer than the hub said "
                                f"({self.job.expected} bytes); it was deleted, try again")
        n = self.raw.write(data)
        self.digest.update(data)
        self.size += len(data)
        self.job.at(self.size)
        return n

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.raw.seek(pos, whence)

    def truncate(self, size: int | None = None) -> int:
        keep = self.raw.truncate(size)
        self.raw.flush()
        pos = self.raw.tell()
        self.seed()  # re-hash what is kept
        self.raw.seek(pos)
        return keep

    def flush(self) -> None:
        self.raw.flush()

    def check(self) -> None:
        self.raw.flush()
        os.fsync(self.raw.fileno())
        if not self.digest.matches():
            raise ChecksumError(
                f"{self.job.file} arrived damaged (its {self.digest.kind} is not the hub's "
                f"{self.digest.expected[:12]}\u2026); it was deleted, try again")


class _QuietBar:
    """http_get's progress bar, silenced: _HashingFile reports the progress."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self) -> _QuietBar:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _check_size(meta: _Meta, listed: int) -> None:
    """The hub's size may differ a little from the catalog's (a re-upload), not a lot: a
    98 MB model must not turn into 40 GB behind the user's back."""
    if meta.size > listed * SIZE_SLACK + SIZE_SLACK_BYTES:
        from core.library.fit import human_bytes

        raise ModelError(f"the hub's {meta.name} is {human_bytes(meta.size)}, not about "
                         f"{human_bytes(listed)} as the catalog says; it was not downloaded")


def _check_disk(folder: Path, need: int) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if need > free:
        from core.library.fit import human_bytes

        raise ModelError(f"the models folder {folder.parent.parent} needs "
                         f"{human_bytes(need)} more free disk space")


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None

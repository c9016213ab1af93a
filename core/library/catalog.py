"""The curated catalog of chat models the app offers to download (resources/models.json).

    for entry in load_catalog():
        entry.name, entry.repo, entry.size, entry.open_path(models_dir())

Every field is checked on load: a file name becomes a path under the models folder, so
one that could leave it (absolute, `..`, a backslash) is refused, as are repos that are
not `owner/name`.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ModelError

# resources/ sits beside core/ in the repo; a PyInstaller bundle unpacks it into _MEIPASS.
_ROOT = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent.parent))
CATALOG_PATH = _ROOT / "resources" / "models.json"
MAX_CATALOG_BYTES = 1 << 20

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_FILE_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")


@dataclass(frozen=True)
class CatalogFile:
    name: str  # path inside the repo, "/"-separated
    size: int  # bytes


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable model: a GGUF file, or the files of a Hugging Face folder."""

    id: str
    name: str
    repo: str
    revision: str
    files: tuple[CatalogFile, ...]
    parameters: int
    quantization: str
    license: str
    chat_template: str
    layers: int
    hidden_size: int
    vocab_size: int
    summary: str = ""

    @property
    def size(self) -> int:
        """Bytes on disk once downloaded."""
        return sum(f.size for f in self.files)

    @property
    def is_gguf(self) -> bool:
        return len(self.files) == 1 and self.files[0].name.lower().endswith(".gguf")

    def folder(self, models_dir: Path) -> Path:
        """Where its files go: one folder per entry under the models folder."""
        return Path(models_dir) / self.id

    def open_path(self, models_dir: Path) -> Path:
        """What to open once downloaded: the GGUF file, or the folder."""
        d = self.folder(models_dir)
        return d / self.files[0].name if self.is_gguf else d


def load_catalog(path: Path | None = None) -> list[CatalogEntry]:
    """The catalog's entries, in its order; ModelError if the file is missing or bad."""
    path = Path(path or CATALOG_PATH)
    try:
        if path.stat().st_size > MAX_CATALOG_BYTES:
            raise ModelError(f"the model catalog {path} is larger than 1 MB")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelError(f"cannot read the model catalog {path} ({e.strerror or e})") from None
    except ValueError as e:
        raise ModelError(f"the model catalog {path} is not valid JSON ({e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
        raise ModelError(f"the model catalog {path} has no list of models")
    entries = [parse_entry(m, i) for i, m in enumerate(raw["models"])]
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise ModelError(f"the model catalog {path} lists an id twice")
    return entries


def parse_entry(m: Any, index: int) -> CatalogEntry:
    """One catalog entry, checked field by field."""
    where = f"model #{index + 1} of the catalog"
    if not isinstance(m, dict):
        raise ModelError(f"{where} is not an object")

    def text(key: str, pattern: re.Pattern | None = None, default: str | None = None) -> str:
        v = m.get(key, default)
        if not isinstance(v, str) or not v or len(v) > 300 or (pattern and not pattern.match(v)):
            raise ModelError(f"{where}: {key!r} is missing or not valid")
        return v

    def count(key: str) -> int:
        v = m.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ModelError(f"{where}: {key!r} must be a positive whole number")
        return v

    files = m.get("files")
    if not isinstance(files, list) or not files or len(files) > 64:
        raise ModelError(f"{where}: 'files' must list 1 to 64 files")
    parsed = tuple(_parse_file(f, where) for f in files)
    if len({f.name for f in parsed}) != len(parsed):
        raise ModelError(f"{where}: a file is listed twice")
    return CatalogEntry(
        id=text("id", _ID_RE), name=text("name"), repo=text("repo", _REPO_RE),
        revision=text("revision", _FILE_PART_RE, "main"), files=parsed,
        parameters=count("parameters"), quantization=text("quantization"),
        license=text("license"), chat_template=text("chat_template"),
        layers=count("layers"), hidden_size=count("hidden_size"),
        vocab_size=count("vocab_size"), summary=str(m.get("summary", ""))[:300])


def _parse_file(f: Any, where: str) -> CatalogFile:
    if not isinstance(f, dict):
        raise ModelError(f"{where}: a file entry is not an object")
    name, size = f.get("name"), f.get("size")
    if not isinstance(name, str) or not safe_relative(name):
        raise ModelError(f"{where}: the file name {str(name)[:80]!r} is not a safe relative path")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ModelError(f"{where}: the size of {name} must be a positive whole number")
    return CatalogFile(name, size)


def safe_relative(name: str) -> bool:
    """A "/"-separated path that stays inside the folder it is joined to."""
    parts = name.split("/")
    return 0 < len(parts) <= 4 and all(_FILE_PART_RE.match(p) and p not in (".", "..")
                                       for p in parts)

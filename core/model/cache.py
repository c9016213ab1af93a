"""Where TPI Chat keeps files it can rebuild: converted models, shards, downloads.

The location is the platform's user cache dir, unless the environment variable
`TPI_CHAT_CACHE` names another one (tests point it at a temp dir; users with a small
system disk can point it at a bigger one).
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

from core.errors import ModelError

ENV_VAR = "TPI_CHAT_CACHE"


def cache_dir() -> Path:
    """The cache root, created if it does not exist yet."""
    override = os.environ.get(ENV_VAR)
    path = Path(override).expanduser() if override else Path(user_cache_dir("tpi-chat"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create the cache folder {path} ({e.strerror})") from None
    return path

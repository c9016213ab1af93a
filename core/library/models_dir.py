"""The models folder: where the library's downloads go (one folder per catalog entry).

`TPI_CHAT_MODELS` names another one (a bigger disk); by default it is `downloads/` in the
cache folder, beside the imported GGUFs and the shards.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import ModelError
from core.model.cache import cache_dir

ENV_VAR = "TPI_CHAT_MODELS"


def models_dir() -> Path:
    """The models folder, created if it does not exist yet."""
    override = os.environ.get(ENV_VAR)
    path = Path(override).expanduser() if override else cache_dir() / "downloads"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create the models folder {path} ({e.strerror})") from None
    return path

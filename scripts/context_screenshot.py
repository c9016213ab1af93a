"""Render the screenshot of a chat longer than the context: the marker above the first
message the model still sees.

    xvfb-run -a taskset -c 0 .venv/bin/python scripts/context_screenshot.py [--out DIR]

The real app on the default model, with Settings -> Context at 512 tokens and replies of
up to 64 tokens: it asks questions until older messages fall out of the model's view, then
one more, scrolls the marker into sight and writes context-marker.png. Data and cache
folders are temporary.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.library_screenshots import ask  # noqa: E402
from scripts.screenshots import settle, wait  # noqa: E402

QUESTIONS = ("What is the capital of France?", "Tell me about its history.",
             "What should I visit there?", "And what about food?",
             "Which museums are the best?", "How do I get around the city?",
             "What is the weather like in spring?", "Suggest a two-day plan.",
             "What about Lyon?", "Which city would you pick?")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    os.environ["TPI_CHAT_DATA"] = str(tmp / "data")
    os.environ.setdefault("TPI_CHAT_CACHE", str(tmp / "cache"))
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb" if os.environ.get("DISPLAY") else "offscreen")

    from app.engine.host import EngineHost
    from app.main import create_app
    from app.main_window import MainWindow
    from app.store.db import Store
    from app.theme import theme

    app = create_app(["tpi-chat"])
    theme().apply(app, "dark")
    store = Store()
    store.set_setting("context", 512)
    store.set_setting("speculate", "off")
    store.set_setting("sampling", {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64})
    w = MainWindow(store, EngineHost())
    w.resize(1360, 860)
    w.splitter.setSizes([260, 760, 340])
    w.show()
    wait(app, lambda: w.controller.ready, 600, "the default model to load")
    asked = 0
    for q in QUESTIONS:
        ask(w, app, q)
        asked += 1
        if w.chat_view.marker is not None and asked >= 7:
            break
    marker = w.chat_view.marker
    if marker is None:
        print("no message fell out of view", file=sys.stderr)
        return 1
    settle(app, 300)
    w.chat_view.ensureWidgetVisible(marker, 0, 160)
    settle(app, 600)
    path = out / "context-marker.png"
    w.grab().save(str(path))
    print(f"wrote {path}: {marker.label.text()!r} after {asked} questions")
    w.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

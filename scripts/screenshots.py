"""Render TPI Chat's screenshots for the README.

    xvfb-run -a .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--fake]

Writes main-window.png (dark), main-window-light.png and add-device.png. By default the
main window is live: real `tpi-chat worker` processes are paired and enrolled, each on a
device of its own (a network namespace on an emulated home network, as root; on loopback
otherwise), the default model loads over them (a cluster Session) and answers two
questions, and the Devices panel shows what the session reports. One of the devices
sits behind a strict firewall: it is left out, and its card says why. `--fake` renders
a scripted conversation and made-up devices instead (no model, no worker). The live Add
device dialog lists the real workers (a second, unpaired one included) and shows a real
refusal of a wrong code; `--fake` gives it two made-up LAN peers.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GB = 2**30

LIVE_QUESTIONS = ("What is the capital of France?", "And of Italy?")
LIVE_WORKER = "mini-pc"
WALLED_WORKER = "walled-board"
SPARE_WORKER = "spare-worker"
QUESTION = "How do I split a matrix multiply across two devices?"
ANSWER = """Split the weight **by columns**: each device multiplies the same input by its
half of the columns, and the two halves are concatenated (or, for a row split, summed with
an *allreduce*).

```python
import torch

x = torch.randn(1, 576)          # hidden state, on both devices
w0, w1 = w.chunk(2, dim=1)       # device 0 and device 1 hold one half each
y = torch.cat([x @ w0, x @ w1], dim=1)
assert torch.allclose(y, x @ w)
```

TPI Chat does this for every attention and MLP layer, so each device only stores its
share of the weights."""


def fake_loader(model, opts, progress):
    """A LoadedModel whose session replies with a fixed text (the engine is not needed)."""
    from app.engine.worker import LoadedModel

    class Session:
        system = None
        messages: list[dict] = []

        def send(self, text, params, on_text=None, should_stop=None):
            raise RuntimeError("the screenshot engine does not chat")

    progress("Loading", 1, 1)
    return LoadedModel(name="SmolLM2-135M-Instruct", world_size=2, close=lambda: None,
                       rank_stats=lambda: [], session_factory=Session)


def fake_devices(i: int) -> list:
    """Two devices as the cluster would report them, at sample `i` of the RTT history."""
    from core.cluster.device_status import DeviceStatus

    rtt = 2.4 + 0.9 * math.sin(i / 4.0) + 0.5 * math.sin(i / 1.7) + (2.5 if i % 17 == 5 else 0)
    return [
        DeviceStatus("This device", "master", "ready", "2 KV heads \u00b7 1024 MLP columns",
                     resident_blocks=18, budget_blocks=30,
                     resident_bytes=int(0.27 * GB), budget_bytes=int(0.45 * GB),
                     tokens_per_s=21.4, rss_mb=612),
        DeviceStatus("mini-pc", "worker", "ready", "1 KV head \u00b7 512 MLP columns",
                     resident_blocks=12, budget_blocks=30, resident_bytes=int(0.09 * GB),
                     budget_bytes=int(0.22 * GB), rtt_ms=rtt, tokens_per_s=21.4, rss_mb=344),
    ]


def fake_peers() -> list:
    from core.cluster.peer_info import PeerInfo

    return [
        PeerInfo("mini-pc", "192.168.1.20", 47000, 1, 16 * GB, int(11.5 * GB), 8,
                 "Linux-x86_64", "3f9a-12c4-88be-07d1", False, 47001),
        PeerInfo("living-room-pi", "192.168.1.31", 47000, 1, 8 * GB, int(5.2 * GB), 4,
                 "Linux-aarch64", "b20e-5d71-c3a9-64f0", False, 47001),
    ]


def settle(app, ms: int = 300) -> None:
    """Let layouts, style polish and queued signals run for `ms` milliseconds."""
    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def wait(app, done, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout_s:.0f} s")
        settle(app, 50)


class Devices:
    """Workers on devices of their own when namespaces can be made here, else on loopback."""

    def __init__(self):
        from tests.fixtures import home_lan

        self.lan = home_lan.HomeLan() if home_lan.available() is None else None
        self.remote = home_lan.RemoteWorkers(self.lan) if self.lan else None
        self.host_ip = self.remote.host_ip if self.remote else "127.0.0.1"

    def start(self, name: str):
        from tests.app.worker_process import WorkerProcess

        data = Path(tempfile.mkdtemp()) / name
        return self.remote.start(name, data) if self.remote else WorkerProcess(name, data)

    def wall(self, worker) -> None:
        """A strict firewall: the device answers, but cannot connect to this computer."""
        if self.remote:
            self.remote.by_name[worker.name].firewall(self.host_ip,
                                                      [worker.control_port, worker.port])

    def close(self) -> None:
        if self.lan:
            self.lan.close()


def live_add_device_shot(app, w, out: Path, devices: Devices) -> None:
    """The dialog over real discovery: pick the unpaired worker, try a wrong code."""
    from app.theme import theme

    spare = devices.start(SPARE_WORKER)
    try:
        code = spare.code()
        theme().apply(app, "dark")
        w.discovery_interfaces = [devices.host_ip]
        dlg = w.open_add_device()
        dlg.resize(780, 560)
        names = lambda: {dlg.model.peer(r).name for r in range(dlg.model.rowCount())}  # noqa: E731
        wait(app, lambda: {LIVE_WORKER, SPARE_WORKER} <= names(), 30, "mDNS to list the workers")
        dlg.select_peer(SPARE_WORKER)
        dlg.code.setText(str((int(code[0]) + 1) % 10) + code[1:])
        dlg.pair()
        wait(app, lambda: "tries left" in dlg.status.text(), 30, "the wrong code's refusal")
        settle(app, 500)
        dlg.grab().save(str(out))
        print(f"wrote {out}")
        dlg.close()
    finally:
        spare.stop()


def live_main_window_shots(app, outs: dict[str, Path], dialog_out: Path) -> None:
    """Pair real worker processes, load the default model over them, ask LIVE_QUESTIONS."""
    from app.engine.host import EngineHost
    from app.main_window import MainWindow
    from app.store.db import Store
    from app.theme import theme
    from tests.app.worker_process import enroll_in_app

    devices = Devices()
    worker = devices.start(LIVE_WORKER)
    walled = devices.start(WALLED_WORKER) if devices.remote else None
    try:
        enroll_in_app(worker, 2 * GB)
        if walled is not None:
            enroll_in_app(walled, GB)
            devices.wall(walled)
        theme().apply(app, "dark")
        store = Store()
        store.set_setting("model", None)
        w = MainWindow(store, EngineHost())
        w.resize(1360, 860)
        w.splitter.setSizes([270, 720, 370])
        w.right.setCurrentIndex(1)
        w.show()
        wait(app, lambda: w.controller.ready, 600, "the model to load")
        for q in LIVE_QUESTIONS:
            w.composer.editor.setPlainText(q)
            w.composer.submitted.emit(q)
            w.composer.editor.clear()
            settle(app, 100)
            wait(app, lambda: not w.controller.busy, 300, "the reply")
            if w.controller.last_error:
                raise SystemExit(f"the reply failed: {w.controller.last_error}")
        settle(app, 15000)  # a quarter of a minute of RTT samples for the sparkline
        for mode, out in outs.items():
            theme().apply(app, mode)
            settle(app, 600)
            w.grab().save(str(out))
            print(f"wrote {out}")
        live_add_device_shot(app, w, dialog_out, devices)
        w.close()
        store.close()
    finally:
        worker.stop()
        if walled is not None:
            walled.stop()
        devices.close()


def main_window_shot(app, mode: str, out: Path) -> None:
    from app.engine.host import EngineHost
    from app.main_window import MainWindow
    from app.store.db import Store
    from app.theme import theme

    theme().apply(app, mode)
    store = Store(Path(tempfile.mkdtemp()) / "chats.sqlite3")
    for title in ("Weekend trip packing list", "Explain the KV cache"):
        cid = store.create_conversation(title)
        store.add_message(cid, "user", title)
        store.add_message(cid, "assistant", "\u2026")
    cid = store.create_conversation("Splitting a matmul across devices")
    store.add_message(cid, "user", QUESTION)
    store.add_message(cid, "assistant", ANSWER)
    engine = EngineHost(fake_loader)
    w = MainWindow(store, engine)
    w.resize(1360, 860)
    w.splitter.setSizes([270, 720, 370])
    w.show()
    deadline = time.monotonic() + 10
    while not w.controller.ready and time.monotonic() < deadline:
        settle(app, 50)
    engine.worker.stats.disconnect(w.devices.update_devices)  # show the made-up cluster
    w.open_conversation(cid)
    w.right.setCurrentIndex(1)
    for i in range(60):
        w.devices.update_devices(fake_devices(i))
    w.status.set_reply_stats(182, 21.4)
    w.status.note("Ready")
    settle(app, 600)
    w.grab().save(str(out))
    print(f"wrote {out}")
    w.close()
    store.close()


def add_device_shot(app, out: Path) -> None:
    from app.devices.add_dialog import AddDeviceDialog
    from app.devices.roster import DeviceRoster
    from app.store.db import Store
    from app.theme import theme

    theme().apply(app, "dark")
    tmp = Path(tempfile.mkdtemp())
    store = Store(tmp / "chats.sqlite3")
    roster = DeviceRoster(store, tmp)
    dlg = AddDeviceDialog(roster, discover=False)
    for p in fake_peers():
        dlg.model.upsert(f"{p.name}._tpi-chat._tcp.local.", p)
    dlg.searching.setText("2 found")
    dlg.resize(780, 560)
    dlg.show()
    dlg.select_peer("mini-pc")
    dlg.code.setText("482-913")
    dlg.budget.setValue(8.0)
    dlg.show_status("'mini-pc' refused the code (2 tries left).", "danger")
    settle(app, 500)
    dlg.grab().save(str(out))
    print(f"wrote {out}")
    dlg.close()
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--fake", action="store_true",
                        help="a scripted chat and made-up devices (no model, no worker)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = tempfile.mkdtemp()
    os.environ["TPI_CHAT_DATA"] = data  # never touch the user's chats or paired devices
    if args.fake:
        os.environ["TPI_CHAT_CACHE"] = data  # live: reuse the converted default model
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen" if not os.environ.get("DISPLAY")
                          else "xcb")
    from app.main import create_app

    app = create_app(["tpi-chat"])
    if args.fake:
        main_window_shot(app, "dark", out / "main-window.png")
        main_window_shot(app, "light", out / "main-window-light.png")
        add_device_shot(app, out / "add-device.png")
    else:
        live_main_window_shots(app, {"dark": out / "main-window.png",
                                     "light": out / "main-window-light.png"},
                               out / "add-device.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

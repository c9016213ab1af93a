"""The devices panel while shards ship to a device: the card's bar and its line
"Shipping 412 / 980 MB · 11.3 MB/s · 50 s left", paced redraws, a stall, and the progress
of a real ship arriving from another thread as queued signals."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Qt, Signal

from app.devices.panel import DevicesPanel
from app.devices.transfer_ticker import REFRESH_MS
from app.theme import theme
from core.cluster.device_status import DeviceStatus
from core.cluster.transfer_rate import GRACE_S, WINDOW_S

MB = 1_000_000
PNG = Path("/tmp/tpi_chat_shipping_card.png")


class FakeClock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


def plain(text: str) -> str:
    """The label's text with the no-break spaces that keep "11.3 MB/s" together."""
    return text.replace("\u00a0", " ")


def panel_with(qtbot, name: str, clock=time.monotonic) -> DevicesPanel:
    panel = DevicesPanel(clock=clock)
    qtbot.addWidget(panel)
    panel.resize(340, 520)
    panel.update_devices([DeviceStatus("This device", "master", resident_blocks=2,
                                       budget_blocks=4),
                          DeviceStatus(name, state="starting")])
    panel.show()
    return panel


def test_a_shipping_update_shows_the_bar_and_the_line_on_the_devices_card(qtbot, themed):
    theme().apply(themed, "light")
    clock = FakeClock()
    panel = panel_with(qtbot, "mini-pc", clock)
    card = panel.cards["mini-pc"]
    done = 412 * MB - 60 * 1_130_000
    panel.show_transfer("mini-pc", done, 980 * MB)
    # the first update shows at once: shipping began, nothing measured yet
    assert plain(card.memory_label.text()) == "Shipping 344 / 980 MB \u00b7 estimating\u2026"
    assert card.role.text() == "worker \u00b7 loading" and card.memory.isVisible()
    for _ in range(60):  # 11.3 MB/s for 6 s, one update every 0.1 s
        clock.t += 0.1
        done += 1_130_000
        panel.show_transfer("mini-pc", done, 980 * MB)
    # the timer redraws: the line and the bar of 412 of 980 MB
    qtbot.waitUntil(lambda: "left" in card.memory_label.text(), timeout=3 * REFRESH_MS + 2000)
    assert plain(card.memory_label.text()) == (
        "Shipping 412 / 980 MB \u00b7 11.3 MB/s \u00b7 50 s left")
    assert card.memory.fraction == pytest.approx(412 / 980)
    card.grab().save(str(PNG))
    assert PNG.stat().st_size > 0

    clock.t += 0.1
    panel.show_transfer("mini-pc", 980 * MB, 980 * MB)
    end = plain(card.memory_label.text())
    assert re.fullmatch(r"Shipped 980 MB \u00b7 [\d.]+ MB/s", end), end
    for _ in range(2):  # the sender repeats the end: the last file's ack, the commit's
        clock.t += 0.01
        panel.show_transfer("mini-pc", 980 * MB, 980 * MB)
    assert plain(card.memory_label.text()) == end
    assert card.memory.fraction == 1.0 and not card.transfer.ticking
    # the session's first status row replaces the transfer
    panel.update_devices([DeviceStatus("This device", "master"),
                          DeviceStatus("mini-pc", state="ready", resident_blocks=1,
                                       budget_blocks=2)])
    assert "Memory window 1/2 blocks" in card.memory_label.text()
    assert not card.transfer.active


def test_status_rows_wait_while_shards_are_on_their_way_unless_the_device_is_gone(
        qtbot, themed):
    """A re-planning session pushes a row each second while it ships again: the card keeps
    the shipping line (and its measured rate) instead of flickering between the two."""
    clock = FakeClock()
    panel = panel_with(qtbot, "nas", clock)
    card = panel.cards["nas"]
    rows = [DeviceStatus("This device", "master"), DeviceStatus("nas", state="starting",
                                                                rtt_ms=2.0)]
    done = 0
    for i in range(30):
        clock.t += 0.1
        done += MB
        panel.show_transfer("nas", done, 900 * MB)
        if i % 10 == 9:
            panel.update_devices(rows)
    qtbot.waitUntil(lambda: "10.0 MB/s" in plain(card.memory_label.text()), timeout=3000)
    assert card.role.text() == "worker \u00b7 loading" and len(card.spark.samples) == 3
    panel.update_devices([rows[0], DeviceStatus("nas", state="offline")])
    assert "Offline" in card.rtt_label.text() and "Shipping" not in card.memory_label.text()
    assert not card.transfer.active


def test_updates_by_the_hundred_redraw_the_card_a_few_times_a_second(qtbot, themed):
    panel = panel_with(qtbot, "laptop")
    card = panel.cards["laptop"]
    redraws: list[float] = []
    card.transfer.changed.connect(lambda _e: redraws.append(time.monotonic()))
    t0 = time.monotonic()
    done = 0
    while time.monotonic() - t0 < 1.5:  # a fast link: an ack every millisecond
        done += 10_000
        panel.show_transfer("laptop", done, 10**12)
        qtbot.wait(1)
    assert done > 100 * 10_000
    assert 2 <= len(redraws) <= 1.5 * 1000 / REFRESH_MS + 2
    assert "Shipping" in card.memory_label.text()


def test_a_stall_shows_on_the_card_without_any_update(qtbot, themed):
    clock = FakeClock()
    panel = panel_with(qtbot, "nas", clock)
    card = panel.cards["nas"]
    done = 0
    for _ in range(30):
        clock.t += 0.1
        done += MB
        panel.show_transfer("nas", done, 900 * MB)
    qtbot.waitUntil(lambda: "10.0 MB/s" in plain(card.memory_label.text()), timeout=3000)
    clock.t += GRACE_S + WINDOW_S + 0.1  # the worker went quiet: no update comes
    qtbot.waitUntil(lambda: "stalled" in card.memory_label.text(), timeout=3000)
    assert plain(card.memory_label.text()) == "Shipping 30 / 900 MB \u00b7 stalled"
    assert not card.transfer.ticking  # nothing more to redraw until bytes come
    clock.t += 0.1
    panel.show_transfer("nas", done + MB, 900 * MB)
    assert card.transfer.ticking


class Relay(QObject):
    """What the engine worker does: a signal emitted in its thread, queued to the panel."""

    device_progress = Signal(str, int, int)


@pytest.fixture(scope="module")
def rank_dir(tmp_path_factory) -> Path:
    from core.model.config import load_config
    from core.shard.plan import make_plan
    from core.shard.splitter import split_model
    from tests.fixtures.tiny_models import make_tiny_model

    base = tmp_path_factory.mktemp("ship-card")
    model = make_tiny_model(base / "model")
    return split_model(model, make_plan(load_config(model), world_size=2),
                       base / "out").rank_dirs[1]


def test_a_real_ship_in_another_thread_fills_the_card(qtbot, themed, rank_dir, tmp_path):
    """ship_rank to a ShardCache (through the wire codec) in a thread of its own, its
    progress queued to the GUI thread as the app's engine thread does: the card measures
    the rate, says the time left, and ends full; the GUI thread never ships."""
    from core.cluster.shard_cache import ShardCache
    from core.cluster.ship_messages import REPLY_OPS, REQUEST_OPS
    from core.cluster.ship_receiver import serve_shipping
    from core.cluster.ship_sender import ShipProgress, ship_rank, split_id_for
    from core.comm.codec import decode, encode
    from core.shard.manifest import load_manifest

    panel = panel_with(qtbot, "mini-pc")
    card = panel.cards["mini-pc"]
    relay = Relay()
    relay.device_progress.connect(panel.show_transfer)
    cache = ShardCache(tmp_path / "cache")
    replies: deque[list] = deque()
    shipping_threads: set[int] = set()

    def send(op, meta, tensors=()):
        op, meta = serve_shipping(cache, decode(encode(op, meta, tensors), REQUEST_OPS,
                                                writable=True))
        replies.append(encode(op, meta))

    def progress(e: ShipProgress) -> None:
        shipping_threads.add(threading.get_ident())
        relay.device_progress.emit("mini-pc", e.bytes_done, e.bytes_total)
        time.sleep(0.03)  # a slow link, so the ship lasts past the first second

    shipper = threading.Thread(target=ship_rank, args=(
        send, lambda _t: decode(replies.popleft(), REPLY_OPS) if replies else None,
        rank_dir, split_id_for(rank_dir), progress), kwargs={"chunk_size": 4096})
    texts: list[str] = []
    shipper.start()
    qtbot.waitUntil(lambda: texts.append(plain(card.memory_label.text()))
                    or not shipper.is_alive(), timeout=60_000)
    shipper.join()
    qtbot.waitUntil(lambda: card.memory.fraction == 1.0, timeout=5000)
    total = load_manifest(rank_dir).total_bytes
    end = plain(card.memory_label.text())
    assert re.fullmatch(rf"Shipped {round(total / 1000)} KB \u00b7 [\d.]+ KB/s", end), end
    assert any(t.endswith("estimating\u2026") for t in texts)
    assert any(t.startswith("Shipping ") and "KB/s" in t and t.endswith(" left")
               for t in texts), texts[-5:]
    assert threading.get_ident() not in shipping_threads


def test_a_device_the_planner_left_out_says_why_and_can_be_forced_in(qtbot, themed):
    panel = DevicesPanel()
    qtbot.addWidget(panel)
    panel.resize(340, 520)
    why = "adds ~246 ms/token of link latency; not needed: the model fits here"
    panel.update_devices([
        DeviceStatus("This device", "master", resident_blocks=60, budget_blocks=60,
                     tokens_per_s=20.0, predicted_ms=47.0,
                     measured="reads 2.2 GB/s q4_1 · disk 0.9 GB/s · 20.0 GB free · 1 core"),
        DeviceStatus("mini-pc", state="standby", share=f"Not used: {why}")])
    panel.show()
    me, card = panel.cards["This device"], panel.cards["mini-pc"]
    assert "50 ms/token (predicted 47)" in me.rtt_label.text()
    assert "Measured: reads 2.2 GB/s q4_1" in me.rtt_label.text()
    assert why in card.share.text() and card.retry_button.isHidden()
    assert not card.force_button.isHidden()
    with qtbot.waitSignal(panel.force_device_requested) as got:
        qtbot.mouseClick(card.force_button, Qt.MouseButton.LeftButton)
    assert got.args == ["mini-pc"]
    panel.update_devices([DeviceStatus("This device", "master"),
                          DeviceStatus("mini-pc", state="ready", rtt_ms=0.4)])
    assert card.force_button.isHidden()

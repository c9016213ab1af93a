"""The Devices panel: one card per device with its memory window and link latency.

The cluster layer feeds it with `update_devices(list[DeviceStatus])`; cards appear,
update and disappear by device name. Each card keeps the last SPARK_SAMPLES round-trip
times for its sparkline. The "This computer" card is always there (the master's status
goes into it) and offers extra local worker processes. Enrolled devices
(`set_enrolled`) the running model does not use yet show as "paired, share pending";
their cards have a Remove button and context menu (`remove_device_requested(key)`).
While a model loads, `show_transfer(name, done, total)` puts shard shipping progress on
that device's card: a bar and "Shipping 412 / 980 MB · 11.3 MB/s · 50 s left", redrawn
at most a few times a second (app/devices/transfer_ticker.py). A status row replaces it
once the shards are through or stalled (an offline or failed row at once).
"""

from __future__ import annotations

import time
from collections import deque

from PySide6.QtCore import QPoint, QPointF, QRectF, QSignalBlocker, Qt, Signal
from PySide6.QtGui import QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.devices.roster import EnrolledDevice
from app.devices.transfer_ticker import TransferTicker
from app.plain_text import plain, tip
from app.theme import theme
from core.cluster.device_status import DeviceStatus
from core.cluster.transfer_rate import Clock, TransferEstimate, shipping_line

SPARK_SAMPLES = 60
MAX_EXTRA_LOCAL_WORKERS = 3
THIS_COMPUTER = "This computer"


def _nb(text: str) -> str:
    """Keep "12.5 MB" on one line when a label wraps."""
    return text.replace(" ", "\u00a0")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class MemoryBar(QWidget):
    """A rounded bar filled to resident / budget."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.fraction = 0.0
        self.setFixedHeight(8)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_fraction(self, f: float) -> None:
        self.fraction = max(0.0, min(1.0, f))
        self.update()

    def paintEvent(self, _e) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        r = QRectF(self.rect())
        p.setBrush(theme().color("border"))
        p.drawRoundedRect(r, 4, 4)
        if self.fraction > 0:
            fill = QRectF(r.x(), r.y(), max(8.0, r.width() * self.fraction), r.height())
            p.setBrush(theme().color("accent"))
            p.drawRoundedRect(fill, 4, 4)


class Sparkline(QWidget):
    """A line of the last SPARK_SAMPLES values (RTT in ms)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.samples: deque[float] = deque(maxlen=SPARK_SAMPLES)
        self.setFixedHeight(28)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def add(self, value: float) -> None:
        self.samples.append(float(value))
        self.update()

    def paintEvent(self, _e) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(self.rect()).adjusted(1, 2, -1, -2)
        p.setPen(QPen(theme().color("border"), 1, Qt.PenStyle.DotLine))
        p.drawLine(QPointF(r.left(), r.bottom()), QPointF(r.right(), r.bottom()))
        if len(self.samples) < 2:
            return
        hi = max(self.samples) or 1.0
        step = r.width() / (SPARK_SAMPLES - 1)
        x0 = r.right() - step * (len(self.samples) - 1)
        path = QPainterPath()
        for i, v in enumerate(self.samples):
            pt = QPointF(x0 + i * step, r.bottom() - r.height() * v / hi)
            path.moveTo(pt) if i == 0 else path.lineTo(pt)
        p.setPen(QPen(theme().color("accent"), 1.6))
        p.drawPath(path)


class DeviceCard(QFrame):
    """One device: name, role, state, share, memory window, RTT sparkline, tokens/s.

    `set_removable(key)` adds a Remove button and context menu emitting
    `remove_requested(key)` (an enrolled device's public key).
    """

    remove_requested = Signal(str)
    retry_requested = Signal(str)  # device name: plan the model again, with it
    force_requested = Signal(str)  # device name: use it even though the planner left it out

    def __init__(self, name: str, parent: QWidget | None = None, *,
                 clock: Clock = time.monotonic):
        super().__init__(parent)
        self.setObjectName("DeviceCard")
        self.name = name
        self.remove_key: str | None = None
        self.transfer = TransferTicker(self, clock)
        self.transfer.changed.connect(self._show_transfer)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        lay.setSpacing(6)
        head = QHBoxLayout()
        self.dot = QLabel("\u25cf", self)
        self.title = QLabel(name, self)
        self.title.setTextFormat(Qt.TextFormat.PlainText)  # a device names itself
        self.title.setObjectName("DeviceName")
        self.role = QLabel(self)
        self.role.setObjectName("Muted")
        self.remove_button = QToolButton(self)
        self.remove_button.setIcon(theme().icon("trash", size=14))
        self.remove_button.setToolTip("Remove this device (unpair it)")
        self.remove_button.clicked.connect(self._remove)
        self.remove_button.hide()
        self.customContextMenuRequested.connect(self._menu)
        head.addWidget(self.dot)
        head.addWidget(self.title, 1)
        head.addWidget(self.role)
        head.addWidget(self.remove_button)
        lay.addLayout(head)
        self.body = lay
        self.share = QLabel(self)
        self.share.setTextFormat(Qt.TextFormat.PlainText)  # may quote a device's own log
        self.share.setObjectName("Muted")
        self.share.setWordWrap(True)
        self.share.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.share)

        self.memory_label = QLabel(self)
        self.memory_label.setStyleSheet("font-size: 12px;")
        self.memory_label.setWordWrap(True)
        lay.addWidget(self.memory_label)
        self.memory = MemoryBar(self)
        lay.addWidget(self.memory)
        self.rtt_label = QLabel(self)
        self.rtt_label.setStyleSheet("font-size: 12px;")
        self.rtt_label.setWordWrap(True)
        lay.addWidget(self.rtt_label)
        plain(self.role, self.memory_label, self.rtt_label)  # states a device reports
        self.spark = Sparkline(self)
        lay.addWidget(self.spark)
        self.retry_button = QPushButton("Retry", self)
        self.retry_button.setToolTip("Try this device again: the model reloads with it")
        self.retry_button.clicked.connect(lambda: self.retry_requested.emit(self.name))
        self.retry_button.hide()
        lay.addWidget(self.retry_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.force_button = QPushButton("Use anyway", self)
        self.force_button.setToolTip("Put this device in the plan even though the model is "
                                     "predicted to be faster without it; the model reloads")
        self.force_button.clicked.connect(lambda: self.force_requested.emit(self.name))
        self.force_button.hide()
        lay.addWidget(self.force_button, 0, Qt.AlignmentFlag.AlignLeft)

    def set_removable(self, key: str | None) -> None:
        """Offer "Remove device" for the enrolled device with public key `key` (None: not)."""
        self.remove_key = key
        self.remove_button.setVisible(key is not None)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu if key
                                  else Qt.ContextMenuPolicy.NoContextMenu)

    def _menu(self, pos: QPoint) -> None:
        if not self.remove_key:
            return
        menu = QMenu(self)
        menu.addAction(theme().icon("trash", size=16), "Remove device", self._remove)
        menu.popup(self.mapToGlobal(pos))

    def _remove(self) -> None:
        if self.remove_key:
            self.remove_requested.emit(self.remove_key)

    def show_idle(self) -> None:
        """This computer with no model loaded: only its name and a line saying so."""
        self.update_status(DeviceStatus(self.name, role="master", state="idle",
                                        share="No model loaded yet."))
        self.spark.hide()
        self.rtt_label.hide()
        self.memory_label.hide()
        self.role.setText("this device")

    def show_transfer(self, done: int, total: int) -> None:
        """Shard shipping to this device: bytes it holds of the bytes its share needs
        (shown at once, then paced by the ticker)."""
        self.transfer.update(done, total)

    def _show_transfer(self, e: TransferEstimate) -> None:
        self.dot.setStyleSheet(f"color: {theme().hex('warn')};")
        self.role.setText("worker \u00b7 loading")
        self.share.setText("Receiving its share of the model\u2026")
        self.share.show()
        # a narrow card wraps the line between its parts, never inside "11.3 MB/s"
        self.memory_label.setText(" \u00b7 ".join(_nb(part) for part in
                                                   shipping_line(e).split(" \u00b7 ")))
        self.memory_label.show()
        self.memory.set_fraction(e.fraction)
        self.memory.show()

    def update_status(self, s: DeviceStatus, sample: bool = True) -> None:
        """Show `s`; `sample` adds its RTT to the sparkline (once per status report)."""
        if self.transfer.ticking and s.state not in ("offline", "failed"):
            # shards on their way say more than the row a re-planning session pushes each
            # second ("starting"); the row shows once they are through or stalled
            if s.rtt_ms is not None and sample:
                self.spark.add(s.rtt_ms)
            return
        self.transfer.stop()
        colors = {"ready": "ok", "busy": "accent", "loading": "warn", "offline": "danger",
                  "failed": "danger", "paired": "muted", "starting": "warn",
                  "standby": "muted"}
        self.dot.setStyleSheet(f"color: {theme().hex(colors.get(s.state, 'muted'))};")
        self.dot.setToolTip(tip(s.state))
        self.role.setText(f"{s.role} \u00b7 {s.state}")
        self.share.setText(s.share)
        self.share.setVisible(bool(s.share))
        budget = s.budget_blocks or s.resident_blocks
        total = max(s.total_blocks, budget)
        frac = s.resident_blocks / total if total else 0.0
        mem = f"Memory window {s.resident_blocks}/{total} blocks"
        if budget < total:  # streaming: say how many it may keep
            mem += f" (keeps {budget})"
        if not budget and s.budget_bytes:  # enrolled, no share yet: show what it may use
            mem = f"Memory budget {_nb(human_bytes(s.budget_bytes))}"
        elif s.budget_bytes or s.resident_bytes:
            mem += f" \u00b7 {_nb(human_bytes(s.resident_bytes))}"
            if s.budget_bytes:
                mem += f"\u00a0/ {_nb(human_bytes(s.budget_bytes))}"
        if s.rss_mb:
            mem += f" \u00b7 RSS\u00a0{s.rss_mb:.0f}\u00a0MB"
        self.memory_label.setText(mem)
        self.memory.set_fraction(frac)
        if s.rtt_ms is not None and sample:
            self.spark.add(s.rtt_ms)
        self.spark.setVisible(bool(self.spark.samples) and s.state not in ("offline",
                                                                          "failed"))
        out = s.state in ("offline", "failed")
        self.retry_button.setVisible(out and self.remove_key is not None)
        self.force_button.setVisible(s.state == "standby")
        if s.state == "failed":
            rtt = "Left out of the model"
        elif s.state == "offline":
            rtt = "Offline: not answering"
        elif s.rtt_ms is not None:
            rtt = f"Link RTT {s.rtt_ms:.2f} ms" if s.rtt_ms < 10 else f"Link RTT {s.rtt_ms:.0f} ms"
        else:
            rtt = "Link RTT \u2014 (local)"
        if s.state in ("paired", "standby"):
            rtt = ""
        if s.tokens_per_s and rtt and not out:
            rtt += f" \u00b7 {s.tokens_per_s:.1f} tok/s"
        if s.predicted_ms is not None:  # the plan's prediction beside what it does
            measured = (f"{1000 / s.tokens_per_s:.0f}" if s.tokens_per_s else "\u2014")
            rtt += (f" \u00b7 {measured} ms/token (predicted {s.predicted_ms:.0f})")
        if s.measured:
            rtt += ("\n" if rtt else "") + "Measured: " + s.measured
        self.rtt_label.setText(rtt)
        self.rtt_label.setVisible(bool(rtt))
        self.memory.setVisible(bool(budget))
        self.memory_label.setVisible(bool(budget or s.budget_bytes))


class DevicesPanel(QWidget):
    """Cards for the devices of the cluster, "Add device…" and the local workers setting.

    Signals: `add_device_requested()`, `remove_device_requested(public_key)`,
    `retry_device_requested(name)` (a device left out or offline: try it again),
    `force_device_requested(name)` (a device the planner left out: use it anyway),
    `local_workers_changed(n)` (extra local worker processes, 0..MAX_EXTRA_LOCAL_WORKERS).
    """

    add_device_requested = Signal()
    remove_device_requested = Signal(str)
    retry_device_requested = Signal(str)  # device name
    force_device_requested = Signal(str)  # device name
    local_workers_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None, *, clock: Clock = time.monotonic):
        super().__init__(parent)
        self._clock = clock  # times shipping progress on the cards (tests pass a fake one)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(14, 14, 14, 14)
        lay.setSpacing(8)
        title = QLabel("DEVICES", self)
        title.setObjectName("SectionTitle")
        lay.addWidget(title)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        inner.setStyleSheet("background: transparent;")
        self.cards_layout = QVBoxLayout(inner)
        self.cards_layout.setContentsMargins(0, 0, 0, 0)
        self.cards_layout.setSpacing(8)
        self.this_computer = self._make_this_computer()
        self.cards_layout.addWidget(self.this_computer)
        self.placeholder = QLabel("No model loaded yet.", inner)
        self.placeholder.setObjectName("Muted")
        self.placeholder.hide()  # kept for callers; the This computer card says it now
        self.cards_layout.addWidget(self.placeholder)
        self.cards_layout.addStretch(1)
        scroll.setWidget(inner)
        lay.addWidget(scroll, 1)
        self.add_button = QPushButton("Add device\u2026", self)
        self.add_button.setIcon(theme().icon("devices", size=16))
        self.add_button.setToolTip("Pair another device of your home")
        self.add_button.clicked.connect(self.add_device_requested)
        lay.addWidget(self.add_button)
        self.cards: dict[str, DeviceCard] = {}  # shown devices by name (master included)
        self._stats: list[DeviceStatus] = []
        self._enrolled: list[EnrolledDevice] = []
        self._render()

    def _make_this_computer(self) -> DeviceCard:
        card = DeviceCard(THIS_COMPUTER)
        row = QHBoxLayout()
        label = QLabel("Extra local worker processes", card)
        label.setStyleSheet("font-size: 12px;")
        label.setToolTip("Run more ranks on this computer as separate processes (the model "
                         "reloads). Useful on many-core machines.")
        self.local_workers = QSpinBox(card)
        self.local_workers.setRange(0, MAX_EXTRA_LOCAL_WORKERS)
        self.local_workers.setToolTip(label.toolTip())
        self.local_workers.setFixedWidth(64)
        self.local_workers.valueChanged.connect(self.local_workers_changed)
        row.addWidget(label, 1)
        row.addWidget(self.local_workers)
        card.body.addLayout(row)
        return card

    def set_local_workers(self, n: int) -> None:
        """Show `n` extra local workers without emitting local_workers_changed."""
        with QSignalBlocker(self.local_workers):
            self.local_workers.setValue(max(0, min(MAX_EXTRA_LOCAL_WORKERS, n)))

    def update_devices(self, devices: list[DeviceStatus]) -> None:
        """Show exactly `devices`, in order (cards keep their RTT history by name), then the
        enrolled devices not among them."""
        self._stats = list(devices)
        self._render(sample=True)

    def set_enrolled(self, devices: list[EnrolledDevice]) -> None:
        """The paired devices (from the DeviceRoster); unused ones show as share pending."""
        self._enrolled = list(devices)
        self._render()

    def _rows(self) -> list[tuple[DeviceStatus, str | None]]:
        keys = {d.name: d.public_key for d in self._enrolled}
        rows: list[tuple[DeviceStatus, str | None]] = [(s, keys.get(s.name))
                                                       for s in self._stats]
        shown = {s.name for s in self._stats}
        for d in self._enrolled:
            if d.name not in shown:
                rows.append((DeviceStatus(
                    d.name, role="worker", state="paired", budget_bytes=d.memory_budget,
                    share="Share pending: it joins when the model reloads."), d.public_key))
        return rows

    def state_of(self, name: str) -> str | None:
        """The state the panel shows for device `name` (None: no such card)."""
        return next((s.state for s, _k in self._rows() if s.name == name), None)

    def show_transfer(self, name: str, done: int, total: int) -> None:
        """Shard shipping progress on the card of device `name` (if it has one)."""
        card = self.cards.get(name)
        if card is not None and card is not self.this_computer:
            card.show_transfer(done, total)

    def _render(self, sample: bool = False) -> None:
        rows = self._rows()
        master = next((s for s, _k in rows if s.role == "master"), None)
        names = [s.name for s, _k in rows]
        for name in list(self.cards):
            if name not in names or (self.cards[name] is self.this_computer
                                     and (master is None or master.name != name)):
                card = self.cards.pop(name)
                if card is not self.this_computer:
                    self.cards_layout.removeWidget(card)
                    card.deleteLater()
        if master is None:
            self.this_computer.show_idle()
        else:
            self.this_computer.memory_label.show()
        i = 1
        for s, key in rows:
            if s is master:
                self.cards[s.name] = self.this_computer
                self.this_computer.setToolTip(tip(s.name))
                self.this_computer.update_status(s, sample)
                continue
            card = self.cards.get(s.name)
            if card is None:
                card = DeviceCard(s.name, clock=self._clock)
                card.remove_requested.connect(self.remove_device_requested)
                card.retry_requested.connect(self.retry_device_requested)
                card.force_requested.connect(self.force_device_requested)
                self.cards[s.name] = card
            self.cards_layout.insertWidget(i, card)
            i += 1
            card.set_removable(key)
            card.update_status(s, sample)

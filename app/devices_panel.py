"""The Devices panel: one card per device with its memory window and link latency.

The cluster layer feeds it with `update_devices(list[DeviceStatus])`; cards appear,
update and disappear by device name. Each card keeps the last SPARK_SAMPLES round-trip
times for its sparkline.
"""

from __future__ import annotations

from collections import deque

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.device_status import DeviceStatus
from app.theme import theme

SPARK_SAMPLES = 60


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
    """One device: name, role, state, share, memory window, RTT sparkline, tokens/s."""

    def __init__(self, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("DeviceCard")
        self.name = name
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        lay.setSpacing(6)
        head = QHBoxLayout()
        self.dot = QLabel("\u25cf", self)
        self.title = QLabel(name, self)
        self.title.setObjectName("DeviceName")
        self.role = QLabel(self)
        self.role.setObjectName("Muted")
        head.addWidget(self.dot)
        head.addWidget(self.title, 1)
        head.addWidget(self.role)
        lay.addLayout(head)
        self.share = QLabel(self)
        self.share.setObjectName("Muted")
        self.share.setWordWrap(True)
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
        self.spark = Sparkline(self)
        lay.addWidget(self.spark)

    def update_status(self, s: DeviceStatus) -> None:
        colors = {"ready": "ok", "busy": "accent", "loading": "warn", "offline": "danger"}
        self.dot.setStyleSheet(f"color: {theme().hex(colors.get(s.state, 'muted'))};")
        self.dot.setToolTip(s.state)
        self.role.setText(f"{s.role} \u00b7 {s.state}")
        self.share.setText(s.share)
        self.share.setVisible(bool(s.share))
        budget = s.budget_blocks or s.resident_blocks
        frac = s.resident_blocks / budget if budget else 0.0
        mem = f"Memory window {s.resident_blocks}/{budget} blocks"
        if s.budget_bytes or s.resident_bytes:
            mem += f" \u00b7 {human_bytes(s.resident_bytes)}"
            if s.budget_bytes:
                mem += f" / {human_bytes(s.budget_bytes)}"
        if s.rss_mb:
            mem += f" \u00b7 RSS {s.rss_mb:.0f} MB"
        self.memory_label.setText(mem)
        self.memory.set_fraction(frac)
        if s.rtt_ms is not None:
            self.spark.add(s.rtt_ms)
        self.spark.setVisible(bool(self.spark.samples))
        rtt = f"Link RTT {s.rtt_ms:.1f} ms" if s.rtt_ms is not None else "Link RTT \u2014 (local)"
        if s.tokens_per_s:
            rtt += f" \u00b7 {s.tokens_per_s:.1f} tok/s"
        self.rtt_label.setText(rtt)


class DevicesPanel(QWidget):
    """Cards for the devices of the cluster; `add_device_requested` is for the pairing UI."""

    add_device_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
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
        self.placeholder = QLabel("No model loaded yet.", inner)
        self.placeholder.setObjectName("Muted")
        self.cards_layout.addWidget(self.placeholder)
        self.cards_layout.addStretch(1)
        scroll.setWidget(inner)
        lay.addWidget(scroll, 1)
        self.add_button = QPushButton("Add device\u2026", self)
        self.add_button.setIcon(theme().icon("devices", size=16))
        self.add_button.setToolTip("Pair another device of your home")
        self.add_button.clicked.connect(self.add_device_requested)
        lay.addWidget(self.add_button)
        self.cards: dict[str, DeviceCard] = {}

    def update_devices(self, devices: list[DeviceStatus]) -> None:
        """Show exactly `devices`, in order (cards keep their RTT history by name)."""
        names = [d.name for d in devices]
        for name in list(self.cards):
            if name not in names:
                card = self.cards.pop(name)
                self.cards_layout.removeWidget(card)
                card.deleteLater()
        for i, d in enumerate(devices):
            card = self.cards.get(d.name)
            if card is None:
                card = DeviceCard(d.name)
                self.cards[d.name] = card
            self.cards_layout.insertWidget(i, card)
            card.update_status(d)
        self.placeholder.setVisible(not devices)

"""The Add device dialog: live list of workers, pairing by code, memory budget, manual host:port.

Workers found over mDNS appear and vanish as they start and stop (PeerBrowser marshals
zeroconf's callbacks to the GUI thread). A worker pairs only while its user has opened
pairing on it (`tpi-chat worker --pair`, or P in its console: a 5-minute window with a
fresh code, closed after 3 wrong codes), so the dialog says what to do on the selected
device. The user picks one, types the code its console shows and chooses how much of its
memory the model may use; pairing and the host:port probe run on QThreadPool threads
while the dialog shows progress. A refusal is shown in the worker's words as core words
them ("not accepting pairing right now", "refused the code (2 tries left)", "locked").
A paired device is enrolled in the DeviceRoster (trust store + app settings) and
`enrolled(EnrolledDevice)` is emitted. Text that came from the network (device names,
refusals) is shown as plain text, never rich text.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QItemSelection, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.devices.pairing_jobs import JobSignals, PairJob, ProbeJob
from app.devices.peer_browser import PeerBrowser, connect_queued
from app.devices.peer_list_model import PeerListModel
from app.devices.roster import GB, DeviceRoster, EnrolledDevice
from app.theme import theme
from core.cluster.discovery import PeerEvent
from core.cluster.pairing import PairedPeer
from core.cluster.peer_info import PeerInfo
from core.comm.endpoint import parse_host_port

MIN_BUDGET_GB = 0.5
INTRO = ("Run <code>tpi-chat worker</code> on the other device; it appears below when it "
         "is on the same network. To pair it, open pairing on that device: run "
         "<code>tpi-chat worker --pair</code> there (or press P in its console). Then "
         "select it here, type the code it shows and choose how much of its memory the "
         "model may use.")


def pair_hint(name: str) -> str:
    """What the user must do on the device before typing its code."""
    return (f"On \u201c{name}\u201d, run `tpi-chat worker --pair` (or press P in its "
            "console) to open pairing for 5 minutes, then type the code it shows.")


def default_budget_gb(peer: PeerInfo) -> float:
    """Its free memory, rounded down to half a GB (at least MIN_BUDGET_GB)."""
    return max(MIN_BUDGET_GB, int(peer.mem_free / GB * 2) / 2)


class AddDeviceDialog(QDialog):
    """Pair a worker with this app. `interfaces` limits discovery (tests: ["127.0.0.1"])."""

    enrolled = Signal(object)  # EnrolledDevice

    def __init__(self, roster: DeviceRoster, interfaces: Sequence[str] | None = None,
                 parent: QWidget | None = None, discover: bool = True):
        super().__init__(parent)
        self.roster = roster
        self.setWindowTitle("Add device")
        self.setMinimumSize(720, 520)
        self.model = PeerListModel(roster.is_enrolled, self)
        self._jobs: list[JobSignals] = []  # keep job signal objects alive until they report
        self._pairing = False
        self._build()
        self.browser = PeerBrowser(interfaces)
        connect_queued(self.browser, self.on_peer_event)
        self.browser.failed.connect(lambda m: self.show_status(m, "warn"),
                                    Qt.ConnectionType.QueuedConnection)
        roster.changed.connect(self.model.refresh_status)
        if discover:
            self.browser.start()
        self._selection_changed()

    # layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(20, 18, 20, 16)
        lay.setSpacing(10)
        title = QLabel("Add a device", self)
        title.setStyleSheet("font-size: 17px; font-weight: 600;")
        intro = QLabel(INTRO, self)
        intro.setObjectName("Muted")
        intro.setWordWrap(True)
        lay.addWidget(title)
        lay.addWidget(intro)
        lay.addSpacing(4)

        heading = QHBoxLayout()
        found = QLabel("DEVICES ON YOUR NETWORK", self)
        found.setObjectName("SectionTitle")
        self.searching = QLabel("Searching\u2026", self)
        self.searching.setObjectName("Muted")
        heading.addWidget(found, 1)
        heading.addWidget(self.searching)
        lay.addLayout(heading)

        self.table = QTableView(self)
        self.table.setObjectName("PeerTable")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(30)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setStyleSheet(self._table_qss())
        # ResizeToContents sized the columns to their titles only once rows came in live
        # (mDNS): refit whenever rows change, else "Linux-x86_64" shows as "Linux-x…"
        for sig in (self.model.rowsInserted, self.model.dataChanged, self.model.rowsRemoved):
            sig.connect(self._fit_columns)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.table.doubleClicked.connect(lambda _i: self.code.setFocus())
        lay.addWidget(self.table, 1)

        manual = QHBoxLayout()
        self.manual = QLineEdit(self)
        self.manual.setPlaceholderText("Not listed? Enter its host:port, e.g. 192.168.1.20:47000")
        self.manual.returnPressed.connect(self.probe)
        self.probe_button = QPushButton("Look up", self)
        self.probe_button.clicked.connect(self.probe)
        manual.addWidget(self.manual, 1)
        manual.addWidget(self.probe_button)
        lay.addLayout(manual)

        form = QFormLayout()
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(8)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.selected = QLabel("Select a device above.", self)
        self.selected.setObjectName("Muted")
        self.selected.setTextFormat(Qt.TextFormat.PlainText)  # names come from the network
        self.hint = QLabel(self)
        self.hint.setObjectName("Muted")
        self.hint.setWordWrap(True)
        self.hint.setTextFormat(Qt.TextFormat.PlainText)
        self.hint.hide()
        self.code = QLineEdit(self)
        self.code.setPlaceholderText("482-913")
        self.code.setMaxLength(11)
        self.code.setFixedWidth(160)
        self.code.returnPressed.connect(self.pair)
        self.code.textChanged.connect(lambda _t: self._update_buttons())
        self.budget = QDoubleSpinBox(self)
        self.budget.setSuffix(" GB")
        self.budget.setDecimals(1)
        self.budget.setSingleStep(0.5)
        self.budget.setRange(MIN_BUDGET_GB, 1024.0)
        self.budget.setFixedWidth(160)
        self.budget.setToolTip("How much of the device's memory the model may use; "
                               "its share of the model follows from it.")
        form.addRow("Device", self.selected)
        form.addRow("", self.hint)
        form.addRow("Pairing code", self.code)
        form.addRow("Memory budget", self.budget)
        lay.addLayout(form)

        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)  # a worker's words, names
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 0)
        self.progress.setFixedHeight(6)
        self.progress.setTextVisible(False)
        self.progress.hide()
        lay.addWidget(self.status)
        lay.addWidget(self.progress)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.close_button = QPushButton("Close", self)
        self.close_button.clicked.connect(self.reject)
        self.pair_button = QPushButton("Pair", self)
        self.pair_button.setObjectName("Primary")
        # Return pairs from the code field and looks up from the host:port field; no button
        # is a default, so Return never also closes or pairs from the wrong field.
        for b in (self.close_button, self.pair_button, self.probe_button):
            b.setAutoDefault(False)
        self.pair_button.clicked.connect(self.pair)
        buttons.addWidget(self.close_button)
        buttons.addWidget(self.pair_button)
        lay.addLayout(buttons)

    def _fit_columns(self, *_: object) -> None:
        header = self.table.horizontalHeader()
        for col in range(1, self.model.columnCount()):
            header.resizeSection(col, max(header.sectionSizeHint(col),
                                          self.table.sizeHintForColumn(col)))

    @staticmethod
    def _table_qss() -> str:
        t = theme()
        return (
            f"QTableView#PeerTable {{ background: {t.hex('input_bg')}; border: 1px solid "
            f"{t.hex('border')}; border-radius: 8px; selection-background-color: "
            f"{t.hex('selected')}; selection-color: {t.hex('text')}; outline: 0; }}"
            f"QTableView#PeerTable::item {{ padding: 0 5px; border: none; }}"
            f"QHeaderView::section {{ background: {t.hex('surface')}; color: {t.hex('muted')};"
            f" border: none; border-bottom: 1px solid {t.hex('border')}; padding: 5px 8px;"
            f" font-size: 12px; font-weight: 600; }}")

    # discovery -------------------------------------------------------------------------
    def on_peer_event(self, event: PeerEvent) -> None:
        """GUI thread: a worker appeared, changed or left."""
        selected = self.current_key()
        self.model.apply(event)
        if event.kind != "remove":
            self.roster.update_address(event.peer)
        if selected is not None and self.model.row_of(selected) < 0 and not self._pairing:
            self._selection_changed()
        self.searching.setText(f"{self.model.rowCount()} found" if self.model.rowCount()
                               else "Searching\u2026")

    def probe(self) -> None:
        """Ask the host:port typed in the manual field who it is (off the GUI thread)."""
        hp = parse_host_port(self.manual.text())
        if hp is None:
            self.show_status("Type the device's address as host:port, e.g. "
                             "192.168.1.20:47000 (the worker prints it at start).", "danger")
            return
        host, port = hp
        self.probe_button.setEnabled(False)
        self.show_status(f"Looking up {host}:{port}\u2026", "muted", busy=True)
        signals = ProbeJob(host, port).start()
        self._jobs.append(signals)
        signals.succeeded.connect(lambda peer: self._probed(signals, peer))
        signals.failed.connect(lambda msg: self._probe_failed(signals, msg))

    def _probed(self, signals: JobSignals, peer: PeerInfo) -> None:
        self._done(signals)
        self.probe_button.setEnabled(True)
        key = f"manual:{peer.address}:{peer.port}"
        self.model.upsert(key, peer)
        self.table.selectRow(self.model.row_of(key))
        self.show_status(f"Found \u201c{peer.name}\u201d. Open pairing on it, then type the "
                         "code it shows.", "muted")
        self.code.setFocus()

    def _probe_failed(self, signals: JobSignals, message: str) -> None:
        self._done(signals)
        self.probe_button.setEnabled(True)
        self.show_status(message, "danger")

    # selection and pairing --------------------------------------------------------------
    def current_key(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.key(rows[0].row()) if rows else None

    def current_peer(self) -> PeerInfo | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.peer(rows[0].row()) if rows else None

    def select_peer(self, name: str) -> bool:
        """Select the row of the device called `name` (tests, keyboard users)."""
        for row, peer in enumerate(self.model.peers()):
            if peer.name == name:
                self.table.selectRow(row)
                return True
        return False

    def _selection_changed(self, *_: QItemSelection) -> None:
        peer = self.current_peer()
        if peer is None:
            self.selected.setText("Select a device above.")
            self.hint.hide()
        else:
            self.selected.setText(f"{peer.name} \u00b7 {peer.address}:{peer.port} \u00b7 "
                                  f"fingerprint {peer.fingerprint}")
            self.hint.setText(pair_hint(peer.name))
            self.hint.show()
            self.budget.setRange(MIN_BUDGET_GB, max(MIN_BUDGET_GB, peer.mem_total / GB))
            self.budget.setValue(default_budget_gb(peer))
        self._update_buttons()

    def _update_buttons(self) -> None:
        peer = self.current_peer()
        can = peer is not None and not self._pairing and bool(self.code.text().strip())
        self.pair_button.setEnabled(can)
        self.pair_button.setText("Pair again" if peer is not None
                                 and self.roster.is_enrolled(peer.fingerprint) else "Pair")
        self.code.setReadOnly(self._pairing)  # read-only, not disabled: keeps the focus
        self.budget.setEnabled(not self._pairing)
        self.table.setEnabled(not self._pairing)

    def pair(self) -> None:
        """Pair the selected device with the typed code (off the GUI thread)."""
        peer = self.current_peer()
        code = self.code.text().strip()
        if peer is None or not code or self._pairing:
            return
        budget = int(self.budget.value() * GB)
        self._pairing = True
        self._update_buttons()
        self.show_status(f"Pairing with \u201c{peer.name}\u201d\u2026", "muted", busy=True)
        job = PairJob(peer.endpoint, code, self.roster.data_dir, self.roster.trust)
        signals = job.start()
        self._jobs.append(signals)
        signals.succeeded.connect(lambda paired: self._paired(signals, peer, budget, paired))
        signals.failed.connect(lambda msg: self._pair_failed(signals, msg))

    def _paired(self, signals: JobSignals, peer: PeerInfo, budget: int,
                paired: PairedPeer) -> None:
        self._done(signals)
        self._pairing = False
        device: EnrolledDevice = self.roster.enroll(paired.public_key, peer, budget)
        self.code.clear()
        self._update_buttons()
        self.show_status(f"Paired with \u201c{device.name}\u201d (fingerprint "
                         f"{device.fingerprint}). The model reloads to give it its share.", "ok")
        self.enrolled.emit(device)

    def _pair_failed(self, signals: JobSignals, message: str) -> None:
        self._done(signals)
        self._pairing = False
        self._update_buttons()
        self.show_status(message, "danger")
        self.code.setFocus()
        self.code.selectAll()

    def _done(self, signals: JobSignals) -> None:
        if signals in self._jobs:
            self._jobs.remove(signals)

    def show_status(self, text: str, color: str = "muted", busy: bool = False) -> None:
        """One line of feedback under the form (`color` is a theme colour name)."""
        self.status.setText(text[:1].upper() + text[1:])  # core words start lower case
        self.status.setStyleSheet(f"color: {theme().hex(color)};")
        self.progress.setVisible(busy)

    # lifetime --------------------------------------------------------------------------
    def done(self, result: int) -> None:  # noqa: D102 (QDialog API)
        self.browser.close()
        super().done(result)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.browser.close()
        super().closeEvent(event)

"""Model -> Get models...: the catalog, whether each model fits here, and its download.

A table of the curated catalog (core.library.catalog) with, per model, its size,
parameters, quantization, licence, a fit verdict for this computer and the paired devices
(core.library.fit, from `resources()` at each showing) and the expected speed once one was
measured. Download runs a DownloadJob (its own thread) with a progress bar, the speed and
the time left, and Cancel; when it is done `open_requested(path)` asks the window to load
the model. The dialog is kept while the app runs, so hiding it does not stop a download.
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.library.download_job import DownloadJob
from app.plain_text import plain
from core.cluster.transfer_rate import format_amount, format_duration, format_rate
from core.errors import ModelError
from core.library.catalog import CatalogEntry, load_catalog
from core.library.download import DownloadProgress, is_downloaded
from core.library.fit import Fit, Resources, Verdict, assess, human_bytes

COLUMNS = ("Model", "Parameters", "Quantization", "Size", "Licence", "Runs on", "Speed", "")
MARKS = {Verdict.THIS_COMPUTER: "\u2713 ", Verdict.WITH_DEVICES: "\u2713 ",
         Verdict.TOO_BIG: "\u2717 "}


def parameters_text(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def fit_text(fit: Fit) -> str:
    text = MARKS[fit.verdict] + fit.verdict.value
    return text + " (memory window)" if fit.windowed else text


def speed_text(fit: Fit) -> str:
    if fit.ms_per_token is not None:
        return f"~{fit.ms_per_token:.0f} ms/token"
    return "slow (streams)" if fit.windowed else "\u2013"


def disk_note(e: CatalogEntry, models_dir: Path) -> str:
    """"Needs 4.7 GB of disk; 120 GB free in ~/.cache/tpi-chat/downloads"."""
    try:
        free = shutil.disk_usage(models_dir).free
    except OSError:
        return f"Needs {human_bytes(e.size)} of disk in {models_dir}."
    short = "" if free >= e.size else " (not enough)"
    return (f"Needs {human_bytes(e.size)} of disk; {human_bytes(free)} free{short} in "
            f"{models_dir}.")


def progress_line(p: DownloadProgress) -> str:
    """"Downloading 412 / 980 MB · 11.3 MB/s · 50 s left"."""
    head = f"{p.stage} {format_amount(p.done, p.total)}"
    if p.stage != "Downloading" or p.rate is None:
        return f"{head}\u2026"
    if p.eta_s is None:
        return f"{head} \u00b7 stalled"
    return f"{head} \u00b7 {format_rate(p.rate)} \u00b7 {format_duration(p.eta_s)} left"


class LibraryDialog(QDialog):
    """Signals: open_requested(path) once a model is downloaded (or Open is clicked on a
    downloaded one), open_file_requested() for "Open a file you have...". `status(text)`
    says what a download does, for the status bar while the dialog is hidden."""

    open_requested = Signal(str)
    open_file_requested = Signal()
    status = Signal(str)

    def __init__(self, resources: Callable[[], Resources], models_dir: Callable[[], Path],
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Get models")
        self.resize(980, 560)
        self._resources, self._models_dir = resources, models_dir
        self.confirm_too_big = True  # tests turn the question off
        self.job = DownloadJob(self)
        self.job.progress.connect(self._progress)
        self.job.done.connect(self._done)
        self.job.failed.connect(self._failed)
        self.job.cancelled.connect(self._cancelled)
        try:
            self.entries: list[CatalogEntry] = load_catalog()
            error = ""
        except ModelError as e:
            self.entries, error = [], str(e)
        self.fits: dict[str, Fit] = {}

        lay = QVBoxLayout(self)
        intro = QLabel("Chat models that run on home devices. A model too big for this "
                       "computer can run across your paired devices (Devices tab).", self)
        intro.setObjectName("Muted")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        self.table = QTableWidget(len(self.entries), len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.doubleClicked.connect(lambda _i: self._primary())
        lay.addWidget(self.table, 1)
        self.details = QLabel(error, self)
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setMinimumHeight(48)
        lay.addWidget(self.details)
        row = QHBoxLayout()
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress_label = QLabel(self)
        plain(self.progress_label)  # errors may quote what a server sent
        row.addWidget(self.progress, 1)
        row.addWidget(self.progress_label, 2)
        lay.addLayout(row)
        buttons = QHBoxLayout()
        self.primary = QPushButton("Download", self)
        self.primary.setObjectName("Primary")
        self.primary.clicked.connect(self._primary)
        self.cancel_button = QPushButton("Cancel download", self)
        self.cancel_button.clicked.connect(self.cancel_download)
        self.open_file = QPushButton("Open a GGUF or folder you have\u2026", self)
        self.open_file.clicked.connect(self.open_file_requested)
        close = QPushButton("Close", self)
        close.clicked.connect(self.hide)
        for b in (self.primary, self.cancel_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.open_file)
        buttons.addWidget(close)
        lay.addLayout(buttons)
        self._show_progress(False)
        self.refresh()
        if self.entries:
            self.table.selectRow(0)

    # the table -----------------------------------------------------------------------
    def refresh(self) -> None:
        """Fit verdicts and download states again (memory, devices and speed change)."""
        res = self._resources()
        models = self._models_dir()
        for row, e in enumerate(self.entries):
            fit = assess(e, res)
            self.fits[e.id] = fit
            state = ("Downloading\u2026" if self._downloading(e) else
                     "Downloaded" if is_downloaded(e, models) else "")
            cells = (e.name, parameters_text(e.parameters), e.quantization,
                     human_bytes(e.size), e.license, fit_text(fit), speed_text(fit), state)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 5:
                    item.setToolTip(fit.detail)
                if col == 6:
                    item.setToolTip("Expected from the speed measured on your last replies, "
                                    "scaled by the model's size" if fit.ms_per_token else
                                    "Known once a reply was measured on these devices")
                self.table.setItem(row, col, item)
        self._selection_changed()

    def selected(self) -> CatalogEntry | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.entries[rows[0].row()] if rows else None

    def select(self, entry_id: str) -> None:
        for row, e in enumerate(self.entries):
            if e.id == entry_id:
                self.table.selectRow(row)

    def _downloading(self, e: CatalogEntry) -> bool:
        return self.job.running and self.job.entry is not None and self.job.entry.id == e.id

    def _selection_changed(self) -> None:
        e = self.selected()
        if e is None:
            self.primary.setEnabled(False)
            return
        fit = self.fits.get(e.id)
        files = ", ".join(f.name for f in e.files[:3]) + (" \u2026" if len(e.files) > 3 else "")
        h = html.escape
        self.details.setText(
            f"<b>{h(e.name)}</b> \u2014 {h(e.summary)}<br>"
            f"<span style='color:gray'>{h(e.repo)} \u00b7 {h(files)} \u00b7 chat template: "
            f"{h(e.chat_template)} \u00b7 licence: {h(e.license)}</span><br>"
            f"{h(fit.detail) if fit else ''}.")
        downloaded = is_downloaded(e, self._models_dir())
        if not downloaded:
            self.details.setText(self.details.text() + f"<br>{h(disk_note(e, self._models_dir()))}")
        self.primary.setText("Open" if downloaded else "Download")
        self.primary.setEnabled(downloaded or not self.job.running)

    # downloading ---------------------------------------------------------------------
    def _primary(self) -> None:
        e = self.selected()
        if e is None:
            return
        if is_downloaded(e, self._models_dir()):
            self.open_requested.emit(str(e.open_path(self._models_dir())))
            self.hide()
        elif not self.job.running and self._worth_it(e):
            self.download(e)

    def _worth_it(self, e: CatalogEntry) -> bool:
        """A model too big for these devices is downloaded only if the user says so."""
        fit = self.fits.get(e.id)
        if fit is None or fit.verdict is not Verdict.TOO_BIG or not self.confirm_too_big:
            return True
        answer = QMessageBox.question(
            self, "Download a model too big for your devices?",
            f"{e.name} is too big for this computer and your paired devices: "
            f"{fit.detail[:1].lower() + fit.detail[1:]}. Download {human_bytes(e.size)} anyway?")
        return answer == QMessageBox.StandardButton.Yes

    def download(self, entry: CatalogEntry) -> None:
        """Start (or resume) downloading `entry` into the models folder."""
        self.job.start(entry, self._models_dir())
        self.progress.setValue(0)
        self.progress_label.setText(f"Connecting for {entry.name}\u2026")
        self._show_progress(True)
        self.refresh()

    def cancel_download(self) -> None:
        if self.job.running:
            self.job.cancel()
            self.progress_label.setText("Cancelling\u2026")

    def _show_progress(self, on: bool) -> None:
        self.progress.setVisible(on)
        self.cancel_button.setVisible(on)

    def _progress(self, p: DownloadProgress) -> None:
        if p.total > 0:
            self.progress.setValue(int(1000 * p.done / p.total))
        line = progress_line(p)
        self.progress_label.setText(line)
        name = self.job.entry.name if self.job.entry else ""
        self.status.emit(f"{name}: {line}")

    def _done(self, entry_id: str, path: str) -> None:
        self._show_progress(False)
        self.progress_label.setText("Downloaded and verified; opening it\u2026")
        self.status.emit("Download complete; opening the model\u2026")
        self.refresh()
        self.open_requested.emit(path)

    def _failed(self, entry_id: str, message: str) -> None:
        self._show_progress(False)
        self.progress_label.setText(message)
        self.status.emit(message)
        self.refresh()

    def _cancelled(self, entry_id: str) -> None:
        self._show_progress(False)
        self.progress_label.setText("Download paused: Download again resumes where it "
                                    "stopped.")
        self.status.emit("Download paused.")
        self.refresh()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.refresh()
        super().showEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt API)
        self.hide()  # a running download goes on; the status bar follows it
        event.ignore()

"""The status bar: loading progress (cancellable), model name, cluster size, last reply speed
(and speculative decoding's acceptance rate), and the local API server when it is on."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar, QWidget

from app.plain_text import plain, tip


class StatusBar(QStatusBar):
    """Permanent labels on the right; a progress bar with Cancel while a model loads."""

    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setSizeGripEnabled(False)
        self.stage = QLabel(self)
        self.progress = QProgressBar(self)
        self.progress.setFixedWidth(160)
        self.progress.setTextVisible(False)
        self.cancel = QPushButton("Cancel", self)
        self.cancel.setToolTip("Stop waiting for this model")
        self.cancel.clicked.connect(self.cancel_requested)
        self.addWidget(self.stage)
        self.addWidget(self.progress)
        self.addWidget(self.cancel)
        self.model = QLabel("No model", self)
        self.cluster = QLabel(self)
        self.speed = QLabel(self)
        self.api = QLabel(self)  # the local API server, when it is on
        for w in (self.api, self.speed, self.cluster, self.model):
            self.addPermanentWidget(w)
        plain(self.stage, self.model, self.cluster, self.speed, self.api)  # stages name devices
        self.api.hide()
        self.set_loading(False)

    def set_loading(self, loading: bool, text: str = "") -> None:
        self.progress.setVisible(loading)
        self.cancel.setVisible(loading)
        self.stage.setText(text)
        if loading:
            self.progress.setRange(0, 0)

    def show_progress(self, stage: str, done: int, total: int) -> None:
        stage = stage[:1].upper() + stage[1:]  # core names stages in lower case
        if total > 0:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * min(done, total) / total))
            self.stage.setText(f"{stage}\u2026 {100 * done / total:.0f}%")
        else:
            self.progress.setRange(0, 0)
            self.stage.setText(f"{stage}\u2026")

    def set_model(self, name: str, world_size: int) -> None:
        self.model.setText(name)
        self.model.setToolTip(tip(f"Model: {name}"))
        self.cluster.setText(f"{world_size} rank" + ("s" if world_size != 1 else ""))
        self.cluster.setToolTip("Tensor-parallel ranks (this device + workers)")

    def set_no_model(self, text: str = "No model") -> None:
        """No model is running: `text` ("Loading…", "No model") and no rank count."""
        self.model.setText(text)
        self.cluster.clear()

    def set_world_size(self, world_size: int) -> None:
        """The running model now spans `world_size` ranks (after a re-plan)."""
        self.set_model(self.model.text(), world_size)

    def set_reply_stats(self, ttft_ms: float, tokens_per_s: float,
                        acceptance: float | None = None) -> None:
        """The last reply's speed; with speculative decoding, the share of drafted tokens
        the model kept (its acceptance rate)."""
        text = f"TTFT {ttft_ms:.0f} ms \u00b7 {tokens_per_s:.1f} tok/s"
        if acceptance is not None:
            text += f" \u00b7 {acceptance:.0%} drafts kept"
        self.speed.setText(text)
        self.speed.setToolTip(
            "" if acceptance is None else
            "Speculative decoding: a copy of the model on this computer drafted tokens and "
            f"the devices kept {acceptance:.0%} of them (checked several at a time)")

    def set_api(self, text: str, detail: str = "") -> None:
        """The local API server's state ("API 8080"; "" hides it)."""
        self.api.setText(text)
        self.api.setToolTip(tip(detail) if detail else "")
        self.api.setVisible(bool(text))

    def note(self, text: str) -> None:
        """A short message on the left (replaced by the next one)."""
        self.stage.setText(text)

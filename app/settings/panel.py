"""Chat settings: the conversation's system prompt, the sampling parameters, the context
(its length reloads the model; what happens when a chat outgrows it) and the memory window
(a load setting: changing it reloads the model)."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.settings.api_setting import ApiServerSetting
from app.settings.context_setting import ContextSetting
from app.settings.speculate_setting import SpeculateSetting
from app.settings.window_setting import MemoryWindowSetting
from core.engine.sampler import SamplingParams

# Greedy by default: the embedded SmolLM2-135M (Q4_1) puts "The" and "L" 0.09 logits apart
# as the first token of "What is the capital of France?", so even temperature 0.2 answered
# "L'Étoile, la Marseillaise, ..." about 4 times in 10 (measured); greedy says "Paris".
DEFAULT_PARAMS = SamplingParams(temperature=0.0, top_p=0.9)

SAVE_DELAY_MS = 400

log = logging.getLogger(__name__)


def _double(lo: float, hi: float, step: float, decimals: int = 2) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setDecimals(decimals)
    return s


def _int(lo: int, hi: int, step: int = 1) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    return s


class SettingsPanel(QWidget):
    """Emits `system_prompt_changed` (debounced), `params_changed` on every edit and
    `window_changed` ("auto", "all" or a block count) when the memory window is edited,
    `speculate_changed` ("auto", "off" or a number) when speculative decoding is."""

    system_prompt_changed = Signal(str)
    params_changed = Signal(dict)
    window_changed = Signal(object)
    api_changed = Signal(dict)  # Local API server: app.store.settings_keys.API_SERVER
    speculate_changed = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(14, 14, 14, 14)
        lay.setSpacing(8)

        title = QLabel("SYSTEM PROMPT", self)
        title.setObjectName("SectionTitle")
        lay.addWidget(title)
        self.system_prompt = QPlainTextEdit(self)
        self.system_prompt.setObjectName("SystemPrompt")
        self.system_prompt.setPlaceholderText("e.g. You are a concise assistant.")
        self.system_prompt.setFixedHeight(110)
        lay.addWidget(self.system_prompt)
        note = QLabel("Applies to this conversation.", self)
        note.setObjectName("Muted")
        note.setStyleSheet("font-size: 11px;")
        lay.addWidget(note)
        self._prompt_timer = QTimer(self)
        self._prompt_timer.setSingleShot(True)
        self._prompt_timer.setInterval(SAVE_DELAY_MS)
        self._prompt_timer.timeout.connect(self._emit_prompt)
        self.system_prompt.textChanged.connect(self._prompt_edited)
        self._loading = False

        lay.addSpacing(10)
        title = QLabel("SAMPLING", self)
        title.setObjectName("SectionTitle")
        lay.addWidget(title)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        form.setHorizontalSpacing(12)
        form.setVerticalSpacing(8)
        self.temperature = _double(0.0, 2.0, 0.05)
        self.temperature.setToolTip("0 = greedy (always the most likely token)")
        self.top_p = _double(0.05, 1.0, 0.05)
        self.top_k = _int(0, 1000)
        self.top_k.setSpecialValueText("off")
        self.max_new_tokens = _int(1, 32768, 64)
        self.repetition_penalty = _double(0.5, 2.0, 0.05)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Top-k", self.top_k)
        form.addRow("Max new tokens", self.max_new_tokens)
        form.addRow("Repetition penalty", self.repetition_penalty)
        lay.addLayout(form)
        self.reset_button = QPushButton("Reset to defaults", self)
        self.reset_button.clicked.connect(lambda: self.set_params(DEFAULT_PARAMS))
        lay.addWidget(self.reset_button, 0, Qt.AlignmentFlag.AlignLeft)
        lay.addSpacing(10)
        title = QLabel("CONTEXT", self)
        title.setObjectName("SectionTitle")
        lay.addWidget(title)
        self.context = ContextSetting(self)  # main_window wires its signals
        lay.addWidget(self.context)
        lay.addSpacing(10)
        title = QLabel("MEMORY", self)
        title.setObjectName("SectionTitle")
        lay.addWidget(title)
        mem = QFormLayout()
        mem.setHorizontalSpacing(12)
        self.memory_window = MemoryWindowSetting(self)
        self.memory_window.changed.connect(self.window_changed)
        mem.addRow("Memory window", self.memory_window)
        self.speculate = SpeculateSetting(self)
        self.speculate.changed.connect(self.speculate_changed)
        mem.addRow("Speculative decoding", self.speculate)
        lay.addLayout(mem)
        lay.addSpacing(10)
        title = QLabel("LOCAL API SERVER", self)
        title.setObjectName("SectionTitle")
        lay.addWidget(title)
        self.api_server = ApiServerSetting(self)
        self.api_server.changed.connect(self.api_changed)
        lay.addWidget(self.api_server)
        lay.addStretch(1)
        for w in (self.temperature, self.top_p, self.repetition_penalty):
            w.valueChanged.connect(self._params_edited)
        for w in (self.top_k, self.max_new_tokens):
            w.valueChanged.connect(self._params_edited)
        self.set_params(DEFAULT_PARAMS)

    # sampling ------------------------------------------------------------------------
    def set_memory_window(self, value: str | int) -> None:
        """Show the saved memory window ("auto", "all" or a block count) without a reload."""
        self.memory_window.set_value(value)

    def set_speculate(self, value: str | int) -> None:
        """Show the saved speculative decoding setting without a reload."""
        self.speculate.set_value(value)

    def params(self) -> SamplingParams:
        return SamplingParams(
            temperature=round(self.temperature.value(), 4),
            top_p=round(self.top_p.value(), 4),
            top_k=self.top_k.value(),
            max_new_tokens=self.max_new_tokens.value(),
            repetition_penalty=round(self.repetition_penalty.value(), 4),
        )

    def set_params(self, params: SamplingParams | dict) -> None:
        if isinstance(params, dict):
            known = set(asdict(SamplingParams()))
            try:
                params = replace(DEFAULT_PARAMS,
                                 **{k: v for k, v in params.items() if k in known})
            except (TypeError, ValueError) as e:  # e.g. a top-p of 0 saved by hand
                log.warning("Saved sampling parameters are not valid (%s); using the "
                            "defaults", e)
                params = DEFAULT_PARAMS
        self._loading = True
        try:
            self.temperature.setValue(params.temperature)
            self.top_p.setValue(params.top_p)
            self.top_k.setValue(params.top_k)
            self.max_new_tokens.setValue(params.max_new_tokens)
            self.repetition_penalty.setValue(params.repetition_penalty)
        finally:
            self._loading = False
        self._params_edited()

    def _params_edited(self, *_args) -> None:
        if not self._loading:
            self.params_changed.emit(asdict(self.params()))

    # system prompt -------------------------------------------------------------------
    def set_system_prompt(self, text: str) -> None:
        """Show a conversation's prompt (does not emit system_prompt_changed)."""
        self.flush()
        self._loading = True
        try:
            self.system_prompt.setPlainText(text)
        finally:
            self._loading = False

    def flush(self) -> None:
        """Emit a pending system prompt edit now (before switching conversations)."""
        if self._prompt_timer.isActive():
            self._prompt_timer.stop()
            self._emit_prompt()

    def _prompt_edited(self) -> None:
        if not self._loading:
            self._prompt_timer.start()

    def _emit_prompt(self) -> None:
        self.system_prompt_changed.emit(self.system_prompt.toPlainText())

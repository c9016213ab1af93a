"""The main window: conversations on the left, the chat in the middle, settings and devices on
the right, menus and a status bar. Chat logic lives in ChatController, model work in the
engine thread (EngineHost)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import shiboken6
from PySide6.QtCore import QByteArray, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.chat.controller import ChatController
from app.chat.conversation_list import ConversationList
from app.chat.input_box import InputBox
from app.chat.view import ChatView
from app.devices.add_dialog import AddDeviceDialog
from app.devices.panel import DevicesPanel
from app.devices.roster import DeviceRoster
from app.devices.watch import DeviceWatch
from app.engine.host import EngineHost
from app.engine.worker import ReplyStats
from app.library.dialog import LibraryDialog
from app.logs import log_dir
from app.plain_text import ask, warn
from app.settings.panel import SettingsPanel
from app.settings.speculate_setting import speculate_option
from app.settings.window_setting import window_option
from app.status_bar import StatusBar
from app.store.db import Store, data_dir
from app.store.settings_keys import (
    API_SERVER,
    CONTEXT,
    CONTEXT_OVERFLOW,
    DECODE_SPEED,
    GEOMETRY,
    MAX_LOCAL_RANKS,
    MODEL,
    PANEL_VISIBLE,
    RANKS,
    SAMPLING,
    SPECULATE,
    WINDOW,
)
from app.theme import app_icon
from core.cluster.open_model import DEFAULT_MODEL_NAME
from core.engine.options import RunOptions
from core.library.fit import Resources
from core.library.models_dir import models_dir
from core.library.speed import bytes_per_second

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    """TPI Chat's window. `autoload` loads the saved (or default) model at once."""

    def __init__(self, store: Store, engine: EngineHost, autoload: bool = True,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.store, self.engine = store, engine
        self.confirm_delete = True  # tests turn the confirmation dialog off
        #: addresses mDNS discovery binds to (None = every interface; tests: loopback)
        self.discovery_interfaces: list[str] | None = None
        self.add_device_dialog: AddDeviceDialog | None = None
        self.library: LibraryDialog | None = None
        self.world_size = 0  # ranks of the running model (0: none)
        self.roster = DeviceRoster(store, data_dir(), self)
        self.forced_devices: set[str] = set()  # "Use anyway" on a device the planner left out
        self._closed = False
        self._reload_pending = False  # devices changed while a reply was streaming
        self.setWindowTitle("TPI Chat")
        self.setWindowIcon(app_icon())
        self.resize(1280, 820)
        self.setMinimumSize(760, 480)

        self.conversations = ConversationList()
        self.chat_view = ChatView()
        self.composer = InputBox()
        self.settings = SettingsPanel()
        self.devices = DevicesPanel()
        self.status = StatusBar(self)
        self.setStatusBar(self.status)

        center = QWidget()
        cl = QVBoxLayout(center)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.setSpacing(0)
        cl.addWidget(self.chat_view, 1)
        cl.addWidget(self.composer)
        self.right = QTabWidget()
        self.right.setObjectName("RightPanel")
        self.right.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.right.addTab(self._scrolling(self.settings), "Settings")
        self.right.addTab(self.devices, "Devices")
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setHandleWidth(1)
        for w in (self.conversations, center, self.right):
            self.splitter.addWidget(w)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setSizes([260, 720, 300])
        self.splitter.setCollapsible(1, False)
        self.setCentralWidget(self.splitter)

        self.controller = ChatController(store, engine, self.chat_view, self.composer,
                                         self.settings.params)
        self._wire()
        self._build_menus()
        self._restore_settings()
        self.refresh_conversations()
        ids = self.conversations.ids()
        self.open_conversation(ids[0] if ids else None)
        self.model_path: str | None = MODEL.get(store)
        if autoload:
            self.load_model(self.model_path)
        self.composer.focus()

    # wiring --------------------------------------------------------------------------
    def _wire(self) -> None:
        cl = self.conversations
        cl.selected.connect(self.open_conversation)
        cl.new_requested.connect(self.new_chat)
        cl.rename_requested.connect(self.rename_conversation)
        cl.delete_requested.connect(self.delete_conversation)
        cl.export_requested.connect(self.export_conversation)
        self.controller.conversation_created.connect(self._created)
        self.controller.conversations_changed.connect(self.refresh_conversations)
        self.controller.reply_finished.connect(self._reply_finished)
        self.controller.busy_changed.connect(self._busy_changed)
        self.settings.system_prompt_changed.connect(self._system_prompt_changed)
        self.settings.params_changed.connect(lambda p: SAMPLING.set(self.store, p))
        self.settings.window_changed.connect(self.set_memory_window)
        self.settings.api_changed.connect(self.set_api_server)
        self.engine.api.changed.connect(self._api_state)
        self.settings.speculate_changed.connect(self.set_speculate)
        self.settings.context.length_changed.connect(self.set_context_length)
        self.settings.context.overflow_changed.connect(self.set_context_overflow)
        w = self.engine.worker
        w.loading_progress.connect(self.status.show_progress)
        w.ready.connect(self._model_ready)
        w.load_failed.connect(self._load_failed)
        w.load_cancelled.connect(self._load_cancelled)
        w.stats.connect(self.devices.update_devices)
        w.device_progress.connect(self.devices.show_transfer)
        w.world_size_changed.connect(self._world_size_changed)
        w.waiting_for_api.connect(self._waiting_for_api)
        w.context_info.connect(self.settings.context.set_model_max)
        self.status.cancel_requested.connect(self.cancel_load)
        d = self.devices
        d.add_device_requested.connect(self.open_add_device)
        d.remove_device_requested.connect(self.remove_device)
        d.retry_device_requested.connect(self.retry_device)
        d.force_device_requested.connect(self.force_device)
        d.local_workers_changed.connect(lambda n: self.set_local_ranks(n + 1))
        self.roster.changed.connect(self._roster_changed)
        self._roster_changed()
        self.watch: DeviceWatch | None = None
        QTimer.singleShot(0, self._start_watch)  # after callers set discovery_interfaces

    @staticmethod
    def _scrolling(panel: QWidget) -> QScrollArea:
        """`panel` in a frameless scroll area: on a short screen it scrolls instead of
        squashing its fields to nothing."""
        scroll = QScrollArea()
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.viewport().setAutoFillBackground(False)
        panel.setAutoFillBackground(False)
        scroll.setMinimumWidth(panel.minimumSizeHint().width()
                               + scroll.verticalScrollBar().sizeHint().width())
        return scroll

    def _start_watch(self) -> None:
        if self.watch is None and not self._closed:
            self.watch = DeviceWatch(self.roster, self.discovery_interfaces, self)
            self.watch.reappeared.connect(self._device_reappeared)

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        if tip:
            a.setStatusTip(tip)
        a.triggered.connect(slot)
        menu.addAction(a)
        return a

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "New chat", self.new_chat, QKeySequence.StandardKey.New)
        self._action(f, "Export chat as Markdown\u2026", lambda: self.export_conversation(
            self.controller.conv_id), "Ctrl+E")
        f.addSeparator()
        self._action(f, "Quit", self.close, QKeySequence.StandardKey.Quit)

        c = mb.addMenu("&Chat")
        self.stop_action = self._action(c, "Stop", self._escape, "Esc")
        self.stop_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self._action(c, "Regenerate", self.controller.regenerate, "Ctrl+R")
        self._action(c, "Edit last message", self.controller.edit_last, "Ctrl+Shift+E")
        c.addSeparator()
        self._action(c, "Rename chat", lambda: self.conversations.start_rename(
            self.controller.conv_id), "F2")
        self._action(c, "Delete chat", lambda: self.delete_conversation(
            self.controller.conv_id), "Ctrl+Shift+Backspace")
        self._action(c, "Search chats", self.conversations.focus_search, "Ctrl+K")

        m = mb.addMenu("&Model")
        self._action(m, "Get models\u2026", self.open_library, "Ctrl+Shift+M",
                     tip="Download a chat model that fits your devices")
        self._action(m, "Open model folder\u2026", self.open_model_folder)
        self._action(m, "Open GGUF file\u2026", self.open_gguf)
        self._action(m, f"Use the default model ({DEFAULT_MODEL_NAME})",
                     lambda: self.load_model(None))
        m.addSeparator()
        ranks = m.addMenu("Local ranks")
        group = QActionGroup(self)
        self.rank_actions: dict[int, QAction] = {}
        for n in range(1, MAX_LOCAL_RANKS + 1):
            a = QAction(f"{n} rank" + ("s" if n > 1 else ""), self, checkable=True)
            a.triggered.connect(lambda _c=False, n=n: self.set_local_ranks(n))
            group.addAction(a)
            ranks.addAction(a)
            self.rank_actions[n] = a
        self._action(m, "Reload model", lambda: self.load_model(self.model_path))

        v = mb.addMenu("&View")
        self.panel_action = self._action(v, "Show side panel", self._toggle_panel, "Ctrl+B")
        self.panel_action.setCheckable(True)
        self.panel_action.setChecked(True)
        self._action(v, "Settings", lambda: self._show_tab(0), "Ctrl+,")
        self._action(v, "Devices", lambda: self._show_tab(1), "Ctrl+D")

        h = mb.addMenu("&Help")
        self.log_folder_action = self._action(
            h, "Open log folder", self.open_log_folder,
            tip="Show the folder of TPI Chat's log file (to attach to a bug report)")
        self._action(h, "About TPI Chat", self._about)

    def _restore_settings(self) -> None:
        self.settings.set_params(SAMPLING.get(self.store))
        self.settings.set_memory_window(WINDOW.get(self.store))
        api = API_SERVER.get(self.store)
        self.settings.api_server.set_value(api)
        if api["enabled"]:
            self.engine.api.configure(api)
        self.settings.set_speculate(SPECULATE.get(self.store))
        overflow = CONTEXT_OVERFLOW.get(self.store)
        self.settings.context.set_values(CONTEXT.get(self.store), overflow)
        self.engine.set_context_overflow(overflow)
        ranks = RANKS.get(self.store)
        self.rank_actions[ranks].setChecked(True)
        self.devices.set_local_workers(ranks - 1)
        geometry = GEOMETRY.get(self.store)
        if geometry and not self.restoreGeometry(QByteArray.fromHex(geometry.encode())):
            log.warning("The saved window geometry could not be restored; using the default")
        if not PANEL_VISIBLE.get(self.store):
            self.panel_action.setChecked(False)
            self.right.hide()

    # conversations -------------------------------------------------------------------
    def refresh_conversations(self) -> None:
        self.conversations.set_conversations(self.store.conversations(), self.controller.conv_id)

    def open_conversation(self, conv_id: int | None) -> None:
        self.settings.flush()
        self.controller.open(conv_id)
        conv = self.store.conversation(conv_id) if conv_id is not None else None
        self.settings.set_system_prompt(conv.system_prompt if conv else "")
        if conv_id is not None:
            self.conversations.select(conv_id)

    def new_chat(self) -> None:
        """Ctrl+N: a fresh conversation (reuses the current one if it is still empty)."""
        cid = self.controller.conv_id
        if cid is None or self.store.messages(cid):
            cid = self.store.create_conversation()
            self.refresh_conversations()
        self.conversations.clear_search()
        self.open_conversation(cid)
        self.composer.focus()

    def _created(self, conv_id: int) -> None:
        self.refresh_conversations()
        self.conversations.select(conv_id)
        prompt = self.settings.system_prompt.toPlainText()
        if prompt:
            self.store.set_system_prompt(conv_id, prompt)

    def rename_conversation(self, conv_id: int, title: str) -> None:
        self.store.rename_conversation(conv_id, title)
        self.refresh_conversations()

    def delete_conversation(self, conv_id: int | None) -> None:
        if conv_id is None:
            return
        conv = self.store.conversation(conv_id)
        if conv is None:
            return
        if self.confirm_delete:
            question = f"Delete \u201c{conv.title}\u201d? This cannot be undone."
            if not ask(self, "Delete chat", question):
                return
        s = self.controller.stream
        if s is not None and s.conv_id == conv_id:
            self.controller.stop()
        self.store.delete_conversation(conv_id)
        was_current = conv_id == self.controller.conv_id
        if was_current:
            self.controller.conv_id = None
        self.refresh_conversations()
        if was_current:
            ids = self.conversations.ids()
            self.open_conversation(ids[0] if ids else None)

    def export_conversation(self, conv_id: int | None, path: str | None = None) -> Path | None:
        """Write the conversation as Markdown to `path` (asks for one when None)."""
        if conv_id is None or self.store.conversation(conv_id) is None:
            return None
        if path is None:
            title = self.store.conversation(conv_id).title
            safe = "".join(ch if ch.isalnum() or ch in " -_" else "_" for ch in title).strip()
            path, _ = QFileDialog.getSaveFileName(self, "Export chat", f"{safe or 'chat'}.md",
                                                  "Markdown (*.md)")
            if not path:
                return None
        out = Path(path)
        out.write_text(self.store.export_markdown(conv_id), encoding="utf-8")
        self.status.note(f"Exported to {out}")
        return out

    def _system_prompt_changed(self, text: str) -> None:
        if self.controller.conv_id is not None:
            self.store.set_system_prompt(self.controller.conv_id, text)

    # model ---------------------------------------------------------------------------
    def run_options(self) -> RunOptions:
        return RunOptions(ranks=RANKS.get(self.store),
                          window=window_option(WINDOW.get(self.store)),
                          speculate=speculate_option(SPECULATE.get(self.store)),
                          context=CONTEXT.get(self.store))

    def load_model(self, path: str | None) -> None:
        """Load `path` (None = the default model) in the engine thread."""
        self.model_path = path
        MODEL.set(self.store, path)
        self.controller.model_ready(False)
        self.status.set_no_model("Loading\u2026")
        self.status.set_loading(True, "Loading model\u2026")
        self.engine.load(path, self.run_options())

    def cancel_load(self) -> None:
        self.engine.cancel_load()
        self.status.set_loading(False, "Model loading cancelled.")
        self.status.set_no_model()

    def open_model_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Open a Hugging Face model folder")
        if d:
            self.load_model(d)

    def open_gguf(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Open a GGUF file", "", "GGUF (*.gguf)")
        if f:
            self.load_model(f)

    def open_library(self) -> LibraryDialog:
        """Model -> Get models...: the catalog with fit verdicts (one dialog, kept while the
        app runs so a download goes on when it is hidden)."""
        if self.library is None:
            self.library = LibraryDialog(self.library_resources, models_dir, self)
            self.library.open_requested.connect(self.load_model)
            self.library.open_file_requested.connect(self.open_gguf)
            self.library.status.connect(self.status.note)
        self.library.show()
        self.library.raise_()
        self.library.activateWindow()
        return self.library

    def library_resources(self) -> Resources:
        """What a catalog model would run on: free memory here, the paired devices'
        budgets, the memory window setting and the speeds measured so far."""
        import psutil

        speed = DECODE_SPEED.get(self.store)
        return Resources(
            local_budget=int(psutil.virtual_memory().available),
            device_budgets=tuple(s.memory_budget for s in self.roster.worker_specs()),
            window=WINDOW.get(self.store), local_ranks=RANKS.get(self.store),
            local_bytes_per_s=speed.get("local"), cluster_bytes_per_s=speed.get("cluster"))

    def set_local_ranks(self, n: int) -> None:
        """Run `n` ranks on this computer (rank 0 + n-1 worker processes); reloads."""
        n = max(1, min(MAX_LOCAL_RANKS, n))
        if n in self.rank_actions:
            self.rank_actions[n].setChecked(True)
        self.devices.set_local_workers(n - 1)
        if n != RANKS.get(self.store):
            RANKS.set(self.store, n)
            self.load_model(self.model_path)

    def set_memory_window(self, value: str | int) -> None:
        """Keep "auto", "all" or `value` blocks per rank resident; reloads when it changed."""
        if value != WINDOW.get(self.store):
            WINDOW.set(self.store, value)
            self.load_model(self.model_path)

    def set_speculate(self, value: str | int) -> None:
        """Speculative decoding "auto", "off" or a number of draft tokens; reloads when it
        changed."""
        if value != SPECULATE.get(self.store):
            SPECULATE.set(self.store, value)
            self.load_model(self.model_path)

    def set_context_length(self, tokens: int) -> None:
        """The context length in tokens (the model's maximum caps it); reloads if changed."""
        if tokens != CONTEXT.get(self.store):
            CONTEXT.set(self.store, tokens)
            self.load_model(self.model_path)

    def set_context_overflow(self, overflow: str) -> None:
        """What the next replies do when a conversation outgrows the context."""
        CONTEXT_OVERFLOW.set(self.store, overflow)
        self.engine.set_context_overflow(overflow)

    # local API server ----------------------------------------------------------------
    def set_api_server(self, value: dict) -> None:
        """Settings -> Local API server changed: save it and start/stop the server."""
        API_SERVER.set(self.store, value)
        self.engine.api.configure(value)

    def _api_state(self, state) -> None:
        self.settings.api_server.set_state(state)
        tip = (f"OpenAI-compatible API at {state.url}/v1" if state.url else state.error)
        self.status.set_api(state.text(), tip)

    def _waiting_for_api(self, waiting: bool) -> None:
        if waiting:
            self.status.note("Waiting for an API request to finish\u2026 (Esc to stop)")

    # devices -------------------------------------------------------------------------
    def open_add_device(self) -> AddDeviceDialog:
        """Show the Add device dialog (a fresh one each time: discovery restarts)."""
        old = self.add_device_dialog
        if old is not None and old.isVisible():
            old.raise_()
            old.activateWindow()
            return old
        if old is not None:
            old.deleteLater()
        dlg = AddDeviceDialog(self.roster, self.discovery_interfaces, self)
        dlg.enrolled.connect(self._device_enrolled)
        self.add_device_dialog = dlg
        dlg.show()
        return dlg

    def remove_device(self, public_key: str) -> None:
        """Unpair the enrolled device with `public_key` and drop it from the roster."""
        dev = self.roster.get(public_key)
        if dev is None:
            return
        if self.confirm_delete:
            question = (f"Remove \u201c{dev.name}\u201d? It is unpaired: to use it again, "
                        "pair it with a new code.")
            if not ask(self, "Remove device", question):  # the name is the device's
                return
        self.roster.remove(public_key)
        self.status.note(f"Removed \u201c{dev.name}\u201d.")
        if dev.name in self.devices.cards:  # the running model uses it: plan again without
            self.reload_when_idle()

    def retry_device(self, name: str) -> None:
        """The user asked to try a device that was left out again: a new plan with it."""
        self.status.note(f"Trying \u201c{name}\u201d again; the model reloads.")
        self.reload_when_idle()

    def force_device(self, name: str) -> None:
        """The user wants a device the planner left out: plan again with it forced in."""
        self.forced_devices.add(name)
        self.status.note(f"Using \u201c{name}\u201d anyway; the model reloads.")
        self._roster_changed()
        self.reload_when_idle()

    def _device_reappeared(self, name: str) -> None:
        """An enrolled device is (back) on the network: re-plan if the model left it out."""
        if self.controller.ready and self.devices.state_of(name) in ("offline", "paired"):
            self.status.note(f"\u201c{name}\u201d is back; the model reloads to use it.")
            self.reload_when_idle()

    def _device_enrolled(self, dev) -> None:
        self.status.note(f"Paired with \u201c{dev.name}\u201d; the model reloads to use it.")
        self.reload_when_idle()

    def reload_when_idle(self) -> None:
        """Reload the model (a new plan over the enrolled devices), after the running reply."""
        if self.controller.busy:
            self._reload_pending = True
        else:
            self.load_model(self.model_path)

    def _roster_changed(self) -> None:
        self.devices.set_enrolled(self.roster.devices())
        self.engine.set_remote_devices(
            [replace(w, forced=w.name in self.forced_devices) for w in self.roster.worker_specs()])

    def _model_ready(self, name: str, world_size: int) -> None:
        self.world_size = world_size
        self.status.set_loading(False, "Ready")
        self.status.set_model(name, world_size)
        self.controller.model_ready(True)

    def _world_size_changed(self, n: int) -> None:
        self.world_size = n
        self.status.set_world_size(n)
        self.status.note(f"Running on {n} rank" + ("s" if n != 1 else "") + " now.")

    def _load_cancelled(self) -> None:
        self.status.note("Model loading cancelled.")

    def _load_failed(self, message: str) -> None:
        self.status.set_loading(False, "")
        self.status.set_no_model()
        self.status.note("Model not loaded")
        self.controller.model_failed(message)
        warn(self, "Could not load the model", message)  # may quote a device's words

    def _reply_finished(self, stats: ReplyStats) -> None:
        self.status.set_reply_stats(stats.ttft_ms, stats.tokens_per_s, stats.acceptance)
        self._note_speed(stats)

    def _note_speed(self, stats: ReplyStats) -> None:
        """Keep the decode speed (weight bytes/s) for the library's ms/token estimates."""
        if stats.new_tokens < 8:  # too short to say much beyond the first token
            return
        rate = bytes_per_second(self.model_path, stats.tokens_per_s)
        if rate is None:
            return
        where = "cluster" if self.world_size > RANKS.get(self.store) else "local"
        DECODE_SPEED.set(self.store, {**DECODE_SPEED.get(self.store), where: rate})

    def _busy_changed(self, busy: bool) -> None:
        self.status.note("Generating\u2026 (Esc to stop)" if busy else "Ready")
        if not busy and self._reload_pending:
            self._reload_pending = False
            self.load_model(self.model_path)

    # view ----------------------------------------------------------------------------
    def _escape(self) -> None:
        """Esc stops a reply, or cancels editing the last message."""
        if self.controller.busy or self.controller.queued:
            self.controller.stop()
        elif self.composer.editing:
            self.composer.clear()
            self.composer.set_editing(False)

    def _toggle_panel(self) -> None:
        visible = not self.right.isVisible()
        self.right.setVisible(visible)
        self.panel_action.setChecked(visible)
        PANEL_VISIBLE.set(self.store, visible)

    def _show_tab(self, index: int) -> None:
        if not self.right.isVisible():
            self._toggle_panel()
        self.right.setCurrentIndex(index)

    def open_log_folder(self) -> Path:
        """Help -> Open log folder: the folder of the log file in the file manager."""
        folder = log_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)  # a file manager cannot open a ghost
        except OSError as e:
            log.warning("Cannot create the log folder %s: %s", folder, e)
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            log.warning("No file manager opened the log folder %s", folder)
            self.status.note(f"The log folder is {folder}")
        return folder

    def _about(self) -> None:
        QMessageBox.about(self, "About TPI Chat", (
            "<b>TPI Chat</b><br>One language model across the devices of your home, with "
            "tensor parallelism (after TPI-LLM, Li et al. 2024).<br><br>Your prompts, tokens "
            "and replies never leave this device; other devices only see hidden states."))

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt API)
        if self._closed:
            super().closeEvent(event)
            return
        self._closed = True
        if self.add_device_dialog is not None:
            self.add_device_dialog.close()
            shiboken6.delete(self.add_device_dialog)  # now, not later: it browses mDNS
            self.add_device_dialog = None
        if self.watch is not None:
            self.watch.close()
        if self.library is not None:
            self.library.job.cancel()  # what arrived stays; the next download resumes
        self.settings.flush()
        s = self.controller.stream
        if s is not None:
            self.store.update_message(s.msg_id, s.text)
        GEOMETRY.set(self.store, bytes(self.saveGeometry().toHex()).decode())
        self.engine.shutdown()
        super().closeEvent(event)

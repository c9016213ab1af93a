"""The `tpi-chat` console entry point: the window with no arguments, else core's CLI.

Lives in app/ because choosing the GUI means importing Qt, which core/ never does. Where no
window can open, the terminal chat starts instead, after one sentence saying why.
"""

from __future__ import annotations

import os
import sys

from core.cli import main as cli_main


def gui_unavailable_reason() -> str | None:
    """Why the window cannot open here (one sentence), or None when it can.

    Only a missing display or a missing/broken Qt counts: the app's own import errors are
    bugs and must surface, not hide behind the terminal chat.
    """
    if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            or os.environ.get("QT_QPA_PLATFORM")):
        return "there is no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    try:
        import PySide6.QtWidgets  # noqa: F401
    except ImportError as e:
        return f"Qt for Python (PySide6) cannot be loaded ({e})"
    return None


def main(argv: list[str] | None = None) -> int:
    """`tpi-chat [ARGS]`: subcommands go to core.cli; none starts the desktop app."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        return cli_main(args)
    reason = gui_unavailable_reason()
    if reason is not None:
        print(f"TPI Chat cannot open its window because {reason}; starting the terminal "
              "chat instead.", file=sys.stderr, flush=True)
        return cli_main(["chat"])
    from app.main import main as app_main

    return app_main()


if __name__ == "__main__":
    sys.exit(main())

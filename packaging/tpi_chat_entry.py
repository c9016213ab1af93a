"""Entry point of the frozen `tpi-chat` executable (PyInstaller).

One executable is everything: no arguments starts the app, `tpi-chat rank ...` is a local
worker rank (see core.engine.rank_host.rank_command), `tpi-chat --self-test` checks the
bundle. freeze_support() must run first so a multiprocessing child never starts the app.
A bundle always ships the GUI, so with no arguments it starts the GUI directly: the
terminal-chat fallback of `app.launch` would be invisible when launched from a menu.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    if len(sys.argv) == 1:
        from app.main import main as app_main

        sys.exit(app_main())
    from core.cli import main

    sys.exit(main())

"""Entry point of the frozen `tpi-chat` executable (PyInstaller).

One executable is everything: no arguments starts the app, `tpi-chat rank ...` is a local
worker rank (see core.ranks.rank_host.rank_command), `tpi-chat --self-test` checks the
bundle. freeze_support() must run first so a multiprocessing child never starts the app.
With no arguments it starts through `app.launch`, like `tpi-chat` from a venv: missing
system libraries for Qt are named with the install command (terminal and notification)
instead of Qt aborting; from a menu (no terminal) that ends with exit status 1.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    if len(sys.argv) == 1:
        from app.launch import main as launch_main

        sys.exit(launch_main([]))
    from core.cli import main

    sys.exit(main())

"""TPI Chat's desktop app (PySide6).

Importing it gives None, True and False a reference count PySide6 6.12.0 cannot use up on
Python 3.11 (app/refcount_guard.py says why); every module of ours that uses Qt is in this
package, so that happens before the first Qt call of ours.
"""

from app.refcount_guard import protect_singletons

protect_singletons()

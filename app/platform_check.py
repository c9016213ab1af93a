"""Can Qt open a window on this Linux desktop? Checked before Qt loads, because Qt cannot fail
softly: when no platform plugin loads it calls abort() ("no Qt platform plugin could be
initialized. Reinstalling the application may fix this problem"), and names no package.

Qt's X11 plugin (PySide6/Qt/plugins/platforms/libqxcb.so and libQt6XcbQpa.so.6) links a dozen
small X libraries that a fresh desktop may lack (libxcb-cursor0 since Qt 6.5, libxcb-icccm4,
...). Each is probed here with dlopen, as Qt would load it, and a missing one is mapped to the
package that provides it on the user's distribution, read from /etc/os-release. The mapping
(`install_advice`, `missing_libraries_message`) is pure: missing sonames and os-release text in,
text out. The probes and the X connection test are the only parts that touch the system.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence

# System libraries libQt6Gui.so.6 links (so every platform plugin needs them), from
# `readelf -d` of PySide6 6.12's Qt; the C/C++ runtime, glib, zlib and dbus are left out
# (no Linux desktop lacks them; should one, importing PySide6 fails and names the file).
GUI_SONAMES: tuple[str, ...] = (
    "libGL.so.1", "libEGL.so.1", "libxkbcommon.so.0", "libfontconfig.so.1",
    "libfreetype.so.6", "libX11.so.6",
)

# What the xcb plugin links on top (libqxcb.so + libQt6XcbQpa.so.6, same readelf). Any one
# missing and Qt aborts. A module constant: the launcher probes exactly what is listed here.
XCB_SONAMES: tuple[str, ...] = (
    "libxcb.so.1", "libX11-xcb.so.1", "libxkbcommon-x11.so.0",
    "libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-image.so.0", "libxcb-keysyms.so.1",
    "libxcb-render-util.so.0", "libxcb-util.so.1",
    "libxcb-randr.so.0", "libxcb-render.so.0", "libxcb-shape.so.0", "libxcb-shm.so.0",
    "libxcb-sync.so.1", "libxcb-xfixes.so.0", "libxcb-xkb.so.1",
)

# Only used to tell whether Qt's Wayland plugin will load (then xcb is never tried).
WAYLAND_SONAMES: tuple[str, ...] = ("libwayland-client.so.0", "libwayland-cursor.so.0")

FAMILIES: dict[str, tuple[str, str]] = {  # family: (shown name, install command prefix)
    "debian": ("Debian/Ubuntu", "sudo apt install"),
    "fedora": ("Fedora/RHEL", "sudo dnf install"),
    "arch": ("Arch", "sudo pacman -S --needed"),
    "suse": ("openSUSE", "sudo zypper install"),
}

# soname -> package, per family (order: debian, fedora, arch, suse). The Debian names are
# `dpkg -S` on Debian 12; the others are the distributions' package names for the same file.
_PACKAGE_ROWS: dict[str, tuple[str, str, str, str]] = {
    "libGL.so.1": ("libgl1", "libglvnd-glx", "libglvnd", "libGL1"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl", "libglvnd", "libEGL1"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon", "libxkbcommon", "libxkbcommon0"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig", "fontconfig", "libfontconfig1"),
    "libfreetype.so.6": ("libfreetype6", "freetype", "freetype2", "libfreetype6"),
    "libX11.so.6": ("libx11-6", "libX11", "libx11", "libX11-6"),
    "libxcb.so.1": ("libxcb1", "libxcb", "libxcb", "libxcb1"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb", "libx11", "libX11-xcb1"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11", "libxkbcommon-x11",
                              "libxkbcommon-x11-0"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor", "xcb-util-cursor",
                           "libxcb-cursor0"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm", "xcb-util-wm", "libxcb-icccm4"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image", "xcb-util-image", "libxcb-image0"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms", "xcb-util-keysyms",
                            "libxcb-keysyms1"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil",
                                "xcb-util-renderutil", "libxcb-render-util0"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util", "xcb-util", "libxcb-util1"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb", "libxcb", "libxcb-randr0"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb", "libxcb", "libxcb-render0"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb", "libxcb", "libxcb-shape0"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb", "libxcb", "libxcb-shm0"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb", "libxcb", "libxcb-sync1"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb", "libxcb", "libxcb-xfixes0"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb", "libxcb", "libxcb-xkb1"),
}
PACKAGES: dict[str, dict[str, str]] = {
    soname: dict(zip(FAMILIES, row, strict=True)) for soname, row in _PACKAGE_ROWS.items()}

# How to find the package of a file the table does not know.
_FIND_PACKAGE = {"debian": "apt-file search {}", "fedora": "dnf provides '*/{}'",
                 "arch": "pacman -F {}"}


# --- pure: os-release text and missing sonames in, advice out --------------------------------

def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines of os-release(5), quotes removed."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            fields[key] = value.strip().strip("\"'")
    return fields


def distro_family(os_release: str) -> str | None:
    """"debian", "fedora", "arch" or "suse" from ID and ID_LIKE; None when unknown."""
    fields = parse_os_release(os_release)
    ids = [fields.get("ID", "").lower(), *fields.get("ID_LIKE", "").lower().split()]
    for name in ids:  # ID first: Ubuntu is "debian"-like, Mint "ubuntu debian"
        if name in ("debian", "ubuntu", "raspbian", "linuxmint", "pop", "elementary", "zorin",
                    "kali", "neon"):
            return "debian"
        if name in ("fedora", "rhel", "centos", "rocky", "almalinux", "ol", "nobara"):
            return "fedora"
        if name in ("arch", "archlinux", "manjaro", "endeavouros", "garuda", "cachyos"):
            return "arch"
        if name.startswith(("opensuse", "suse", "sles", "sled")):
            return "suse"
    return None


def packages_for(missing: Iterable[str], family: str) -> list[str]:
    """The packages providing `missing` on `family`, each once, in order."""
    out: list[str] = []
    for soname in missing:
        pkg = PACKAGES.get(soname, {}).get(family)
        if pkg and pkg not in out:
            out.append(pkg)
    return out


def install_command(missing: Sequence[str], os_release: str) -> str | None:
    """The one command that installs what is missing here, or None (unknown distribution,
    or no known package for any of the files)."""
    family = distro_family(os_release)
    if family is None:
        return None
    pkgs = packages_for(missing, family)
    return f"{FAMILIES[family][1]} {' '.join(pkgs)}" if pkgs else None


def install_advice(missing: Sequence[str], os_release: str) -> str:
    """What to install, for this distribution (or for each known one when it is unknown)."""
    family = distro_family(os_release)
    unknown = [s for s in missing if s not in PACKAGES]
    lines: list[str] = []
    command = install_command(missing, os_release)
    if command is not None:
        known = len(missing) - len(unknown)
        lines += [f"Install {'it' if known == 1 else 'them'} with:", "",
                  f"    {command}", ""]
    elif family is None and len(unknown) < len(missing):
        lines += ["Install the packages that provide them; on the common distributions:", ""]
        for fam, (shown, prefix) in FAMILIES.items():
            lines.append(f"    {shown + ':':15} {prefix} {' '.join(packages_for(missing, fam))}")
        lines.append("")
    for soname in unknown:
        find = _FIND_PACKAGE.get(family or "")
        hint = f" (`{find.format(soname)}` names it)" if find else ""
        lines.append(f"Also install the package that provides {soname}{hint}.")
    lines.append("Then start TPI Chat again.")
    return "\n".join(lines)


def missing_libraries_message(missing: Sequence[str], os_release: str) -> str:
    """The whole explanation for the terminal: what is missing and how to install it."""
    return (f"TPI Chat cannot open its window because Qt needs system libraries that are "
            f"missing here: {', '.join(missing)}.\n{install_advice(missing, os_release)}")


_SONAME_IN_ERROR = re.compile(r"([\w.+-]+\.so(?:\.\d+)*): cannot open shared object file")


def sonames_in_error(text: str) -> list[str]:
    """The libraries a loader error names as missing (an ImportError of PySide6, say)."""
    return list(dict.fromkeys(_SONAME_IN_ERROR.findall(text)))


def xcb_will_load(env: Mapping[str, str], wayland_usable: bool) -> bool:
    """Will Qt try its xcb plugin here (so the xcb libraries must be present)?

    Qt 6.12 (checked by starting it): QT_QPA_PLATFORM, when set, is the list of plugins to
    try in order ("wayland;xcb"); otherwise it tries wayland first when WAYLAND_DISPLAY is
    set or XDG_SESSION_TYPE is "wayland", then xcb. A wayland entry that works ends the
    search (`wayland_usable`), as does any other plugin (offscreen, eglfs, ...)."""
    if not sys.platform.startswith("linux"):
        return False
    setting = env.get("QT_QPA_PLATFORM", "").strip()
    if setting:
        order = [entry.split(":", 1)[0].strip().lower() for entry in setting.split(";")]
    elif env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE", "").lower() == "wayland":
        order = ["wayland", "xcb"]
    else:
        order = ["xcb"]
    for name in order:
        if name == "xcb":
            return True
        if name.startswith("wayland") and not wayland_usable:
            continue
        if name:
            return False
    return False


# --- probes: what this machine has ------------------------------------------------------------

def _search_dirs() -> list[str]:
    """Where a frozen bundle keeps the libraries it ships (its loader path may not cover
    a dlopen from Python); empty when not frozen."""
    base = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or not base:
        return []
    return [base, os.path.join(base, "PySide6", "Qt", "lib")]


def can_load(soname: str) -> bool:
    """dlopen(soname) succeeds, as Qt's own load of it would (same search path)."""
    for candidate in [soname, *(os.path.join(d, soname) for d in _search_dirs())]:
        try:
            ctypes.CDLL(candidate)
            return True
        except OSError:
            continue
    return False


def missing_libraries(sonames: Iterable[str]) -> list[str]:
    return [s for s in dict.fromkeys(sonames) if not can_load(s)]


def wayland_usable(env: Mapping[str, str]) -> bool:
    """A Wayland compositor socket exists where libwayland looks ($WAYLAND_DISPLAY, default
    wayland-0, under $XDG_RUNTIME_DIR) and the Wayland plugin's libraries load."""
    name = env.get("WAYLAND_DISPLAY") or "wayland-0"
    if not os.path.isabs(name):
        runtime = env.get("XDG_RUNTIME_DIR")
        if not runtime:
            return False
        name = os.path.join(runtime, name)
    return os.path.exists(name) and not missing_libraries(WAYLAND_SONAMES)


def read_os_release() -> str:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            continue
    return ""


_XCB_ERRORS = {5: "is not a valid display name", 6: "has no such screen"}
_XCB_CONN_ERROR = 1  # socket, pipe or stream error: a refused or dropped connection
_X_RETRY_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.0)  # ~0.4 s in all; the last try has no wait


def _xcb_connect_error(xcb: ctypes.CDLL, display: str) -> int:
    """libxcb's error code for one connect to `display` (0: it accepted)."""
    conn = xcb.xcb_connect(display.encode(), None)
    try:
        return xcb.xcb_connection_has_error(conn)
    finally:
        xcb.xcb_disconnect(conn)  # a no-op on libxcb's static error connection


def x_display_error(display: str | None) -> str | None:
    """Why the X server named `display` (the value of DISPLAY) refuses a connection, or None when
    it accepts. Qt aborts on a refused connection too ("could not connect to display")."""
    if not display:
        return "no X display is set (DISPLAY is empty)"
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return None  # reported by the library check
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    xcb.xcb_connection_has_error.restype = ctypes.c_int
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    # An X server with no clients left resets itself (Xvfb and xvfb-run do, without -noreset),
    # and refuses connections for the few milliseconds that takes; our own connect-and-close
    # is enough to trigger it. So a refusal is retried briefly before it counts.
    for delay in _X_RETRY_DELAYS:
        code = _xcb_connect_error(xcb, display)
        if code != _XCB_CONN_ERROR:
            break
        time.sleep(delay)
    if code == 0:
        return None
    what = _XCB_ERRORS.get(code, "does not accept a connection (is DISPLAY right? is the "
                                 "X server running, and XAUTHORITY set for this user?)")
    return f"the X display {display} {what}"


def notify(title: str, body: str, timeout: float = 5.0) -> bool:
    """A desktop notification via notify-send, where there is one; never raises."""
    exe = shutil.which("notify-send")
    if exe is None:
        return False
    env = dict(os.environ)
    if getattr(sys, "frozen", False):  # the bundle's loader path must not leak into it
        orig = env.pop("LD_LIBRARY_PATH_ORIG", None)
        env.pop("LD_LIBRARY_PATH", None)
        if orig:
            env["LD_LIBRARY_PATH"] = orig
    for args in ([exe, "--app-name=TPI Chat", "--urgency=critical", title, body],
                 [exe, title, body]):  # the second for a notify-send without those options
        try:
            done = subprocess.run(args, env=env, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return False
        if done.returncode == 0:
            return True
    return False

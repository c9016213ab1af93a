#!/bin/sh
# Install the unpacked TPI Chat bundle for the current user, no root needed:
#   the app in ~/.local/opt/tpi-chat, `tpi-chat` in ~/.local/bin, menu entry and icon.
# Run it from the bundle folder: ./install-linux.sh   (uninstall: ./install-linux.sh --remove)
set -eu
SRC=$(cd "$(dirname "$0")" && pwd)
DEST="$HOME/.local/opt/tpi-chat"
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
ICON="$DATA/icons/hicolor/256x256/apps/tpi-chat.png"
ENTRY="$DATA/applications/tpi-chat.desktop"

if [ "${1:-}" = "--remove" ]; then
    rm -rf "$DEST" "$ICON" "$ENTRY" "$HOME/.local/bin/tpi-chat"
    echo "TPI Chat removed (your conversations and cache are kept)."
    exit 0
fi
mkdir -p "$HOME/.local/opt" "$HOME/.local/bin" "$(dirname "$ICON")" "$(dirname "$ENTRY")"
if [ "$SRC" != "$DEST" ]; then
    rm -rf "$DEST"
    cp -a "$SRC" "$DEST"
fi
ln -sf "$DEST/tpi-chat" "$HOME/.local/bin/tpi-chat"
cp "$SRC/tpi-chat.png" "$ICON"
sed -e "s|^Exec=tpi-chat|Exec=$DEST/tpi-chat|" -e "s|^TryExec=tpi-chat|TryExec=$DEST/tpi-chat|" \
    "$SRC/tpi-chat.desktop" > "$ENTRY"
command -v update-desktop-database >/dev/null && update-desktop-database "$(dirname "$ENTRY")" || true
echo "TPI Chat installed: find it in your applications menu, or run $DEST/tpi-chat"

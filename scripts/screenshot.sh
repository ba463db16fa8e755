#!/usr/bin/env bash
# Starts the desktop demo (`repvgg-demo`) in a real window under Xvfb and saves a screenshot.
#
# Usage: scripts/screenshot.sh [OUT.png]        (default: target/screenshot.png)
# Needs (installs nothing): Xvfb, ImageMagick's `import` (Debian: xvfb x11-apps imagemagick),
# a Vulkan driver for wgpu (Debian: mesa-vulkan-drivers), optionally xdotool to click
# "Load test digit" first. Env: DISPLAY_NUM (default 99), WAIT_S (default 60),
# PROFILE (cargo profile, default release), DEMO_ARGS (extra arguments, e.g. "--weights repvgg_a0.safetensors").
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${1:-target/screenshot.png}"
DISPLAY_NUM="${DISPLAY_NUM:-99}"
WAIT_S="${WAIT_S:-60}"

for tool in Xvfb import; do
    command -v "$tool" >/dev/null || { echo "screenshot.sh: $tool not found (apt-get install xvfb x11-apps imagemagick)" >&2; exit 2; }
done

# PROFILE=dev reuses a debug build (e.g. the one `cargo test` made); default: release.
PROFILE="${PROFILE:-release}"
cargo build --profile "$PROFILE" -p repvgg-demo
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ "$PROFILE" = dev ]; then BIN="$TARGET_DIR/debug/repvgg-demo"; else BIN="$TARGET_DIR/$PROFILE/repvgg-demo"; fi
[ -x "$BIN" ] || { echo "screenshot.sh: $BIN missing after build" >&2; exit 1; }

mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true

XVFB_PID=""
APP_PID=""
cleanup() {
    [ -n "$APP_PID" ] && kill "$APP_PID" 2>/dev/null || true
    [ -n "$XVFB_PID" ] && kill "$XVFB_PID" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

Xvfb ":$DISPLAY_NUM" -screen 0 1280x800x24 -nolisten tcp &
XVFB_PID=$!
export DISPLAY=":$DISPLAY_NUM"
for _ in $(seq 1 50); do
    [ -e "/tmp/.X11-unix/X$DISPLAY_NUM" ] && break
    sleep 0.1
done

# shellcheck disable=SC2086
"$BIN" ${DEMO_ARGS:-} > "${OUT%.png}.log" 2>&1 &
APP_PID=$!

# Wait for the window to be mapped (xwininfo from x11-apps lists it).
found=""
for _ in $(seq 1 "$((WAIT_S * 2))"); do
    kill -0 "$APP_PID" 2>/dev/null || { echo "screenshot.sh: repvgg-demo exited early:" >&2; cat "${OUT%.png}.log" >&2; exit 1; }
    if command -v xwininfo >/dev/null; then
        xwininfo -root -tree 2>/dev/null | grep -q '"RepVGG demo"' && { found=1; break; }
    elif command -v xdotool >/dev/null; then
        xdotool search --name "RepVGG demo" >/dev/null 2>&1 && { found=1; break; }
    else
        sleep 10; found=1; break
    fi
    sleep 0.5
done
[ -n "$found" ] || { echo "screenshot.sh: no window after ${WAIT_S}s" >&2; exit 1; }
sleep 3   # first frames

if command -v xdotool >/dev/null; then
    WIN="$(xdotool search --name "RepVGG demo" | head -1 || true)"
    if [ -n "$WIN" ]; then
        xdotool windowactivate --sync "$WIN" 2>/dev/null || true
        # "Load test digit" sits under the 280x280 canvas; find it by its place in the layout.
        X="${CLICK_X:-111}"; Y="${CLICK_Y:-361}"
        xdotool mousemove --window "$WIN" "$X" "$Y" click 1 || true
        sleep 2
    fi
fi

import -window root "$OUT"
size=$(stat -c %s "$OUT" 2>/dev/null || echo 0)
if [ "$size" -lt 10000 ]; then
    echo "screenshot.sh: $OUT missing or tiny ($size bytes)" >&2
    exit 1
fi
echo "screenshot.sh: wrote $OUT ($size bytes)"

#!/usr/bin/env bash
# Makes sure headless Chromium (and a font to draw text with) is installed, for the tests that
# render HTML the way a person sees it. Idempotent and quiet: does nothing when it is already there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
FONT_PACKAGE=fonts-dejavu-core

if [[ -x "$CHROMIUM" ]] && dpkg -s "$FONT_PACKAGE" >/dev/null 2>&1; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    SUDO=sudo
else
    SUDO=
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium "$FONT_PACKAGE" >/dev/null
test -x "$CHROMIUM" || { echo "chromium did not install at $CHROMIUM" >&2; exit 1; }

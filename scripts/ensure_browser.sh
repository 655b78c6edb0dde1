#!/bin/sh
# Make sure Debian's headless Chromium and its driver are installed for the browser
# test (tests/test_dashboard_browser.py): /usr/bin/chromium and /usr/bin/chromedriver.
#
# Idempotent: does nothing when both are present. Installs the `chromium` and
# `chromium-driver` packages with apt-get when we are root, or when sudo works
# without a password. Otherwise it prints what to run and exits 0; the browser test
# then skips (or fails when HIVE_REQUIRE_BROWSER=1).
#
# Packages come only from the machine's configured apt sources; nothing is
# downloaded from anywhere else.
set -u

CHROMIUM=/usr/bin/chromium
DRIVER=/usr/bin/chromedriver
PACKAGES="chromium chromium-driver"

if [ -x "$CHROMIUM" ] && [ -x "$DRIVER" ]; then
    exit 0
fi

note() { echo "ensure_browser: $*" >&2; }

if ! command -v apt-get >/dev/null 2>&1; then
    note "no apt-get here; install Chromium and chromedriver as $CHROMIUM and $DRIVER to run the browser test"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    note "$CHROMIUM or $DRIVER is missing and we are not root (and sudo needs a password)."
    note "Run: sudo apt-get install -y $PACKAGES"
    exit 0
fi

note "installing $PACKAGES with apt-get"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # $SUDO and $PACKAGES are word lists on purpose
if ! $SUDO apt-get install -y $PACKAGES; then
    note "apt-get install failed; refreshing the package lists and trying once more"
    $SUDO apt-get update -q || true
    # shellcheck disable=SC2086
    if ! $SUDO apt-get install -y $PACKAGES; then
        note "could not install $PACKAGES; the browser test will skip (or fail under HIVE_REQUIRE_BROWSER=1)"
        exit 0
    fi
fi

if [ -x "$CHROMIUM" ] && [ -x "$DRIVER" ]; then
    note "ready: $("$DRIVER" --version 2>/dev/null | head -n 1)"
else
    note "installed $PACKAGES but $CHROMIUM or $DRIVER is still missing"
fi
exit 0

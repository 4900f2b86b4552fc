#!/usr/bin/env bash
# Installs what the browser tests (pytest -m browser) need:
#   - Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver);
#   - the Playwright Python package into the active venv (its wheel bundles the driver).
# Playwright's own browser download (`playwright install`) is never used: the tests launch
# /usr/bin/chromium through `executable_path`.
# Idempotent: skips apt when /usr/bin/chromium exists and pip when playwright imports.
set -euo pipefail

PYTHON="${PYTHON:-python}"
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    PYTHON="$VIRTUAL_ENV/bin/python"
fi

if [[ -x /usr/bin/chromium ]]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
else
    SUDO=""
    if [[ "$(id -u)" -ne 0 ]]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver
    echo "installed: $(/usr/bin/chromium --version)"
fi

if "$PYTHON" -c "import playwright" 2>/dev/null; then
    echo "playwright already installed in $("$PYTHON" -c 'import sys; print(sys.prefix)')"
else
    "$PYTHON" -m pip install -q playwright
    echo "installed playwright into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
fi

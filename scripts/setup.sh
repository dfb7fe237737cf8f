#!/usr/bin/env bash
# Installs what the bridge needs on a fresh Debian/Ubuntu machine (or reuses what is there):
# redis-server for the embedded default, and a virtualenv in .venv with the bridge.
# EXTRAS=test also installs the test tools, chromium (browser tests) and dovecot (IMAP tests).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${EXTRAS:-all}

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [[ $EXTRAS == test ]]; then
  [[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
  command -v dovecot >/dev/null 2>&1 || need_apt+=(dovecot-imapd)
fi
if ((${#need_apt[@]})); then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    echo "setup: installing ${need_apt[*]} with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install ${need_apt[*]} with your package manager" >&2
  fi
fi
# dovecot from apt starts a system instance on ports 143/993; the tests run their own.
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"

#!/usr/bin/env bash
# One command from a fresh checkout to a running bridge on its embedded default:
# installs redis-server and the bridge (scripts/setup.sh), then runs `bridge run "$@"`.
# The install runs only when needed: no .venv yet, no redis-server, or pyproject.toml (or
# EXTRAS) changed since the last one; the package is installed editable, so code changes
# need no reinstall. FORCE_SETUP=1 installs again anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.bridge-setup
want="$(sha256sum pyproject.toml | cut -d' ' -f1) extras=${EXTRAS:-all}"
if [[ ${FORCE_SETUP:-0} == 1 || ! -x .venv/bin/bridge || ! -f $stamp || "$(cat "$stamp")" != "$want" ]] \
    || ! command -v redis-server >/dev/null 2>&1; then
  scripts/setup.sh
  echo "$want" >"$stamp"
fi
exec .venv/bin/bridge run "$@"

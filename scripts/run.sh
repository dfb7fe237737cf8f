#!/usr/bin/env bash
# One command from a fresh checkout to a running bridge on its embedded default:
# installs redis-server and the bridge (scripts/setup.sh), then runs `bridge run "$@"`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/bridge run "$@"

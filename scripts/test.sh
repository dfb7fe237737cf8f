#!/usr/bin/env bash
# One command from a fresh checkout to the test results: installs everything the tests
# need (redis-server, chromium, dovecot, the test extras) and runs pytest.
# The tests start their own redis-server, IMAP, SMTP and fake platform servers on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test scripts/setup.sh
exec .venv/bin/python -m pytest "$@"

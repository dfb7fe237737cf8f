"""`python -m bridge`: the same as the `bridge` command (useful where iproute2's
`/usr/sbin/bridge` comes first on PATH)."""

import sys

from bridge.cli import main

sys.exit(main())

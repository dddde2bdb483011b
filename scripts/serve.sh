#!/usr/bin/env bash
# One command for a newcomer: set up, then run the RTMP server.
# Extra arguments go to rtmp2-server (see `rtmp2-server --help`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# With uvloop (the `fast` extra), which rtmp2-server uses when it is installed: less CPU per
# stream in every benchmark figure (bench/README.md). RTMP2_EXTRAS= (empty) leaves it out.
RTMP2_EXTRAS="${RTMP2_EXTRAS-fast}" bash "$here/scripts/setup.sh"
exec "$here/.venv/bin/rtmp2-server" "$@"

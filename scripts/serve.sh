#!/usr/bin/env bash
# One command for a newcomer: set up, then run the RTMP server.
# Extra arguments go to rtmp2-server (see `rtmp2-server --help`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup.sh"
exec "$here/.venv/bin/rtmp2-server" "$@"

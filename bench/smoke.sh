#!/usr/bin/env bash
# Checks in under 2 minutes that the benchmark harness works with our server (no other
# server, nothing installed): one short ingest over RTMP and one over RTMPS (trustme makes
# the certificate; the project's .venv has it), 1 and 2 real-time publishers, 20 held
# connections, and fan-out/latency when the relay is there. For optional CI use; it is not
# part of the test suite's pass/fail. Needs ffmpeg, ffprobe and rtmpdump (scripts/setup.sh
# installs them). Output: bench/results/tmp/smoke/.
set -euo pipefail
bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$bench")"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
cd "$repo"
export PYTHONPATH="$bench:$repo/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 170 "$python" -m rtmpbench --smoke "$@"

#!/usr/bin/env bash
# One command for a newcomer and for CI: set up, lint, type-check and run the whole test suite
# (twice: compiled hot path and pure, see the end).
# Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
RTMP2_EXTRAS=test bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The whole suite twice: as installed, with the compiled hot path (RTMP2_COMPILED=1 makes its
# absence a failure, so that a broken build cannot pass as two pure runs), then with the
# pure-Python modules it was compiled from (RTMP2_PURE=1). Both must pass.
RTMP2_COMPILED=1 .venv/bin/python -m pytest -n 2 "$@"
echo "test: again with the pure-Python hot path (RTMP2_PURE=1)"
RTMP2_PURE=1 exec .venv/bin/python -m pytest -n 2 "$@"

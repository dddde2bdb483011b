#!/usr/bin/env bash
# A long mutation fuzz run: tests/test_fuzz_connections.py with more mutants, another seed or a
# time limit. Mutant N of seed S is always the same bytes, so a failure is replayed with
#   scripts/fuzz.sh --seed S --only N[,M...]
# Options: --mutants N (default 5000), --seed S (default: from the clock, printed),
#          --seconds T (stop starting rounds after T seconds; 0 = none), --only LIST,
#          --concurrency C (mutants at once, default 8). Anything after -- goes to pytest.
# It uses the checkout's .venv (scripts/setup.sh makes it); PYTHON=... picks another.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
mutants=5000 seed="" seconds=0 only="" concurrency=8
while [[ $# -gt 0 ]]; do
    case "$1" in
        --mutants) mutants="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        --concurrency) concurrency="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
seed="${seed:-$(date +%s)}"
echo "fuzz: seed $seed, mutants $mutants, seconds $seconds${only:+, only $only}" >&2
export RTMP2_FUZZ_SEED="$seed" RTMP2_FUZZ_MUTANTS="$mutants" RTMP2_FUZZ_SECONDS="$seconds"
export RTMP2_FUZZ_ONLY="$only" RTMP2_FUZZ_CONCURRENCY="$concurrency"
python="${PYTHON:-.venv/bin/python}"
exec "$python" -m pytest -p no:cacheprovider -o timeout=0 -s -q \
    "tests/test_fuzz_connections.py::test_mutated_real_connections_beside_a_good_publisher" "$@"

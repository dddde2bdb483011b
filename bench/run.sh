#!/usr/bin/env bash
# The benchmark of issue 5: installs the servers it compares (nginx + libnginx-mod-rtmp from
# Debian, node-media-server from npm into bench/.cache/nms, pyrtmp + matplotlib + py-spy +
# uvloop into the bench venv bench/.cache/venv; never the project's .venv), then runs every
# server in turn on loopback and writes bench/results/<date>/ and bench/results/latest.md.
#
#   bash bench/run.sh            # full: 3 runs per figure (about 35-45 min on 2 cores)
#   bash bench/run.sh --quick    # 1 short run (about 8 min)
#   bash bench/run.sh --profile  # py-spy + cProfile of our ingest path -> results/<date>/profile.md
#   bash bench/run.sh --help     # every option (--runs, --servers, --max-publishers, ...)
#   bash bench/run.sh capacity   # publishers and players per core (rtmpbench/loadgen.py)
#   bash bench/run.sh section2   # every capacity figure of issue 13, side by side (section2.py)
set -euo pipefail
bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$bench")"
cache="$bench/.cache"
mkdir -p "$cache"

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

# Debian packages. nginx's postinst would start the system nginx on port 80: a temporary
# policy-rc.d (only if none exists) keeps services from starting during the install.
apt_packages=(nginx-light libnginx-mod-rtmp ffmpeg rtmpdump nodejs npm python3-venv)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Any nginx flavour will do.
if command -v nginx >/dev/null; then
    missing=("${missing[@]/nginx-light}")
fi
if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=("${missing[@]/nodejs}")
    missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]}"
if ((${#missing[@]})); then
    echo "bench: installing apt packages: ${missing[*]}"
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
    [ "$added_policy" -eq 0 ] || "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d
fi

# The bench venv: Debian's python3 (the interpreter of the project's .venv), so our server
# runs under the same Python as in production, plus the comparison's Python packages.
venv="$cache/venv"
if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv "$venv"
fi
if [ ! -f "$venv/.stamp" ] || [ "$bench/requirements.txt" -nt "$venv/.stamp" ]; then
    echo "bench: installing $bench/requirements.txt into $venv"
    "$venv/bin/python" -m pip install -q -r "$bench/requirements.txt"
    touch "$venv/.stamp"
fi

# node-media-server, pinned in nms-package.json.
nms="$cache/nms"
if [ ! -f "$nms/.stamp" ] || [ "$bench/nms-package.json" -nt "$nms/.stamp" ]; then
    echo "bench: installing node-media-server into $nms"
    mkdir -p "$nms"
    cp "$bench/nms-package.json" "$nms/package.json"
    (cd "$nms" && npm install --no-audit --no-fund --loglevel=error)
    touch "$nms/.stamp"
fi

cd "$repo"
export PYTHONPATH="$bench:$repo/src${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$venv/bin:$PATH"
if [ "${1:-}" = capacity ]; then
    # capacity per core: `bash bench/run.sh capacity --servers nginx-rtmp,ours+uvloop --window 10`
    shift
    exec "$venv/bin/python" -m rtmpbench.loadgen "$@"
fi
if [ "${1:-}" = section2 ]; then
    # `bash bench/run.sh section2` (about 20-25 min for 3 servers), `... section2 --quick` (3 min)
    shift
    exec "$venv/bin/python" -m rtmpbench.section2 "$@"
fi
exec "$venv/bin/python" -m rtmpbench "$@"

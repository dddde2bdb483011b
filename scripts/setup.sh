#!/usr/bin/env bash
# Set up everything gst-rtmp2-server needs on a fresh Debian 12 machine:
# the apt packages (GStreamer, its Python loader, ffmpeg, rtmpdump), a venv made from
# Debian's /usr/bin/python3 with --system-site-packages (so it sees gi/Gst, the same
# interpreter GStreamer's Python plugin loader embeds), and this package installed editable.
# Idempotent: a second run only checks.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

apt_packages=(
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-python3-plugin-loader python3-gst-1.0
    gir1.2-gstreamer-1.0 ffmpeg rtmpdump python3-venv python3-gi
    # decoders for what rtmp2flvdemux outputs: avdec_h264/h265/aac/ac3 (libav); av1dec (aom)
    # is in plugins-bad, vp9dec and flacdec in good, opusdec in base
    gstreamer1.0-libav
)
extras="${RTMP2_EXTRAS:-}"
if [[ ",$extras," == *",test,"* ]]; then
    # The tests' second, independent RTMP server (tests/test_client.py): nginx with
    # nginx-rtmp. Its service is not started (see policy-rc.d below).
    apt_packages+=(nginx-light libnginx-mod-rtmp)
    # node and npm for node-media-server (tests/test_push.py); a NodeSource nodejs has npm.
    command -v npm >/dev/null || apt_packages+=(nodejs npm)
    # Headless Chromium for the browser tests (tests/test_browser.py): Debian's build has the
    # proprietary codecs, so H.264/AAC play through Media Source Extensions.
    apt_packages+=(chromium)
fi
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing apt packages: ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    # No package may start its service here (nginx would take port 80): policy-rc.d says no
    # for the install, and is removed after it unless it was there before.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
        "${sudo_cmd[@]}" chmod +x "$policy"
        own_policy=1
    fi
    if ((own_policy)); then trap '"${sudo_cmd[@]}" rm -f "$policy"' EXIT; fi
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
    if ((own_policy)); then "${sudo_cmd[@]}" rm -f "$policy"; trap - EXIT; fi
fi

# node-media-server 4, a push target of tests/test_push.py, pinned in
# tests/support/nms-package.json, into tests/.cache/nms (git-ignored).
if [[ ",$extras," == *",test,"* ]]; then
    nms="tests/.cache/nms"
    if [ ! -f "$nms/.stamp" ] || [ tests/support/nms-package.json -nt "$nms/.stamp" ]; then
        echo "setup: installing node-media-server into $nms"
        mkdir -p "$nms"
        cp tests/support/nms-package.json "$nms/package.json"
        (cd "$nms" && npm install --no-audit --no-fund --loglevel=error)
        touch "$nms/.stamp"
    fi
fi

stamp=".venv/.setup-stamp${extras:+-$extras}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv from /usr/bin/python3 (with system site packages for gi/Gst)"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing gst-rtmp2-server${extras:+[$extras]} into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
    touch "$stamp"
fi

# The browser-side packages of package.json (mpegts.js for the dashboard and HTTP-FLV in a
# browser), pinned by package-lock.json. The HTTP listener serves them itself, never from a
# CDN: they are copied into the package's git-ignored static/vendor/, where an editable install
# finds them (and a wheel built after setup includes them).
npm_stamp="node_modules/.setup-stamp"
if [ ! -f "$npm_stamp" ] || [ package-lock.json -nt "$npm_stamp" ]; then
    command -v npm >/dev/null || { echo "setup: npm (Node.js) is needed for mpegts.js" >&2; exit 1; }
    echo "setup: installing npm packages (package-lock.json)"
    npm ci --omit=dev --no-audit --no-fund
    touch "$npm_stamp"
fi
vendor="src/rtmp2server/http/static/vendor"
mkdir -p "$vendor"
cp -p node_modules/mpegts.js/dist/mpegts.js node_modules/mpegts.js/dist/mpegts.js.LICENSE.txt \
    "$vendor/"

# rtmp2serversrc and rtmp2flvdemux for gst-launch-1.0/gst-inspect-1.0: GStreamer's Python plugin
# loader (1.22) also scans ~/.gstreamer-1.0/plugins/python, so link the elements' loader shims
# there. Without this, GST_PLUGIN_PATH="$here/gst-plugins" does the same.
gst_python_dir="$HOME/.gstreamer-1.0/plugins/python"
mkdir -p "$gst_python_dir"
ln -sfn "$here/gst-plugins/python/rtmp2serversrc.py" "$gst_python_dir/rtmp2serversrc.py"
ln -sfn "$here/gst-plugins/python/rtmp2flvdemux.py" "$gst_python_dir/rtmp2flvdemux.py"

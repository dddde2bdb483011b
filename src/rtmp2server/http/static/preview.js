// A live HTTP-FLV preview in a <video>, through mpegts.js (Media Source Extensions): shared by
// the dashboard and play.html. mpegts.js is /static/vendor/mpegts.js, served by this server.
"use strict";

function flvUrl(app, name, key) {
  let path = "/" + encodeURIComponent(app) + "/" + encodeURIComponent(name) + ".flv";
  if (key) path += "?token=" + encodeURIComponent(key);
  // Absolute: mpegts.js may fetch from a worker, where a relative URL means something else.
  return new URL(path, location.href).href;
}

// Start playing app/name into `video`; `onError(text)` is told why it stopped. Returns an
// object with stop().
function startPreview(video, app, name, key, onError) {
  const mpegts = window.mpegts;
  if (!mpegts) {
    onError("mpegts.js is not installed on the server (run scripts/setup.sh)");
    return { stop() {} };
  }
  if (!mpegts.isSupported()) {
    onError("this browser has no Media Source Extensions");
    return { stop() {} };
  }
  video.muted = true; // a muted video may start without a click
  const player = mpegts.createPlayer(
    { type: "flv", isLive: true, url: flvUrl(app, name, key) },
    { enableWorker: false, lazyLoad: false, liveBufferLatencyChasing: true }
  );
  player.on(mpegts.Events.ERROR, (type, detail, info) => {
    onError(type + ": " + detail + (info && info.msg ? " (" + info.msg + ")" : ""));
  });
  player.attachMediaElement(video);
  player.load();
  const started = player.play();
  if (started && started.catch) started.catch((err) => onError(String(err)));
  return {
    stop() {
      player.pause();
      player.unload();
      player.detachMediaElement();
      player.destroy();
    },
  };
}

// flowengine live player: WebSocket frames -> Media Source Extensions -> <audio>.
//
// Protocol (flowengine/live/protocol.py): a JSON "metadata" message, then one
// binary message per MP3/ADTS frame; JSON "clock" (the sender's stamp of the
// next frame), "skip" (the server left frames out for us) and "end" in
// between. A new "metadata" means a new stream: the MediaSource is rebuilt.
//
// Query options: ?autoplay=1 starts at once, muted (browsers allow muted
// autoplay); ?stream=NAME follows one stream; ?target=0.3 is the buffer
// (seconds) the player keeps ahead after catching up; ?token=T is the
// server's viewer token, passed on to /ws. A WebSocket the server refuses
// (401/403 before the upgrade) only shows the browser a failed connection,
// so the page then asks /stats, guarded by the same token, for the reason.
//
// window.flowengineStats is the page's state for tests and benchmarks.
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const TARGET_AHEAD = parseFloat(params.get("target") || "0.3");   // seconds kept buffered
  const MAX_AHEAD = Math.max(1.0, TARGET_AHEAD * 4);                  // beyond this: catch up
  const KEEP_BEHIND = 5.0;                                            // seconds kept behind playback
  const MAX_PENDING_BYTES = 1 << 20;                                  // frames waiting for MSE

  const $ = (id) => document.getElementById(id);
  const audio = $("player");

  const stats = window.flowengineStats = {
    state: "stopped",          // stopped | connecting | waiting | playing | unsupported | error
                               // | refused (the server wants a viewer token)
    stream: null,
    codec: null,
    mime: null,
    metadata: null,            // the last metadata message
    metadataCount: 0,
    framesReceived: 0,
    bytesReceived: 0,
    framesBeforeMetadata: 0,   // binary messages that came before any metadata (must stay 0)
    messageKinds: [],          // the first 20 messages: "metadata", "binary", "clock", ...
    bufferedSeconds: 0,        // buffered audio ahead of the playback position
    latencyMs: null,           // sender clock stamp -> frame arrival here
    playbackLatencyMs: null,   // latencyMs + bufferedSeconds: sender -> loudspeaker
    latencySamples: [],        // the last 200 latencyMs values
    skippedFrames: 0,
    mseErrors: 0,
    errors: [],                // messages of MSE / media errors
    currentTime: 0,
    restarts: 0,
    supported: null,           // MediaSource.isTypeSupported(mime) for the current stream
  };

  let ws = null;
  let mediaSource = null;
  let sourceBuffer = null;
  let pending = [];
  let pendingBytes = 0;
  let pendingClock = null;
  let lastTrim = 0;
  let ticker = null;

  function show(id, text) { $(id).textContent = text; }
  function setState(state) { stats.state = state; show("state", state); }
  function message(text) { show("message", text); }

  function recordError(text) {
    stats.mseErrors += 1;
    stats.errors.push(text);
    show("errors", String(stats.mseErrors));
    console.error("flowengine player:", text);
  }

  function noteKind(kind) {
    if (stats.messageKinds.length < 20) stats.messageKinds.push(kind);
  }

  // ---- media --------------------------------------------------------------------------------

  function teardownMedia() {
    pending = [];
    pendingBytes = 0;
    sourceBuffer = null;
    if (mediaSource) {
      const old = mediaSource;
      mediaSource = null;
      if (old.readyState === "open") {
        try { old.endOfStream(); } catch (e) { /* already ending */ }
      }
    }
    if (audio.src) {
      URL.revokeObjectURL(audio.src);
      audio.removeAttribute("src");
      audio.load();
    }
  }

  function setupMedia(meta) {
    teardownMedia();
    stats.supported = !!(window.MediaSource && MediaSource.isTypeSupported(meta.mime));
    if (!stats.supported) {
      setState("unsupported");
      message("This browser cannot play " + meta.codec + " (" + meta.mime + ") through Media " +
              "Source Extensions" + (meta.codec === "aac" ? ": AAC as ADTS is not supported " +
              "here; send MP3 instead (flowengine send --codec mp3)." : "."));
      return;
    }
    message("");
    const ms = new MediaSource();
    mediaSource = ms;
    ms.addEventListener("sourceopen", () => {
      if (mediaSource !== ms) return;
      try {
        sourceBuffer = ms.addSourceBuffer(meta.mime);
        sourceBuffer.mode = "sequence";   // frames carry no timestamps: play them in order
      } catch (e) {
        recordError("addSourceBuffer(" + meta.mime + "): " + e.message);
        setState("error");
        return;
      }
      sourceBuffer.addEventListener("updateend", pump);
      sourceBuffer.addEventListener("error", () => recordError("SourceBuffer error"));
      pump();
    }, { once: true });
    audio.src = URL.createObjectURL(ms);
    setState("waiting");
  }

  function pump() {
    if (!sourceBuffer || sourceBuffer.updating || !mediaSource ||
        mediaSource.readyState !== "open") return;
    const now = audio.currentTime;
    if (now - lastTrim > KEEP_BEHIND * 2 && now > KEEP_BEHIND) {
      lastTrim = now;
      try { sourceBuffer.remove(0, now - KEEP_BEHIND); return; } catch (e) { /* try later */ }
    }
    if (pending.length === 0) return;
    const chunk = new Uint8Array(pendingBytes);
    let at = 0;
    for (const frame of pending) { chunk.set(frame, at); at += frame.byteLength; }
    pending = [];
    pendingBytes = 0;
    try {
      sourceBuffer.appendBuffer(chunk);
    } catch (e) {
      if (e.name === "QuotaExceededError") {       // full: drop what is behind, retry later
        pending = [chunk];
        pendingBytes = chunk.byteLength;
        lastTrim = 0;
      } else {
        recordError("appendBuffer: " + e.name + ": " + e.message);
      }
    }
  }

  function onFrame(data) {
    stats.framesReceived += 1;
    stats.bytesReceived += data.byteLength;
    if (!stats.metadata) { stats.framesBeforeMetadata += 1; return; }
    if (pendingClock) {
      const latency = Date.now() - pendingClock.sender_time * 1000;
      pendingClock = null;
      stats.latencyMs = latency;
      stats.latencySamples.push(latency);
      if (stats.latencySamples.length > 200) stats.latencySamples.shift();
    }
    if (!mediaSource) return;          // unsupported codec: count, do not buffer
    if (pendingBytes > MAX_PENDING_BYTES) { pending = []; pendingBytes = 0; }
    pending.push(new Uint8Array(data));
    pendingBytes += data.byteLength;
    pump();
  }

  function onText(text) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { recordError("bad JSON from server"); return; }
    noteKind(msg.type);
    if (msg.type === "metadata") {
      if (stats.metadata) stats.restarts += 1;
      stats.metadata = msg;
      stats.metadataCount += 1;
      stats.stream = msg.stream;
      stats.codec = msg.codec;
      stats.mime = msg.mime;
      pendingClock = null;
      show("stream", msg.stream + " (#" + msg.generation + ")");
      show("codec", msg.codec + ", " + msg.sample_rate + " Hz, " + msg.channels + " ch" +
           (msg.bitrate ? ", " + Math.round(msg.bitrate / 1000) + " kb/s" : ""));
      setupMedia(msg);
    } else if (msg.type === "clock") {
      pendingClock = msg;
    } else if (msg.type === "skip") {
      stats.skippedFrames += msg.frames;
      show("skipped", String(stats.skippedFrames));
    } else if (msg.type === "end") {
      if (stats.state === "unsupported") return;      // keep saying why nothing played
      message("The stream ended (" + msg.reason + "); waiting for it to start again.");
      setState("waiting");
      if (mediaSource && mediaSource.readyState === "open" && sourceBuffer && !sourceBuffer.updating) {
        pump();
      }
    }
  }

  // ---- playback position ---------------------------------------------------------------------

  function bufferedAhead() {
    const ranges = audio.buffered;
    if (!ranges || ranges.length === 0) return 0;
    return Math.max(0, ranges.end(ranges.length - 1) - audio.currentTime);
  }

  function tick() {
    const ahead = bufferedAhead();
    stats.bufferedSeconds = ahead;
    stats.currentTime = audio.currentTime;
    show("buffered", ahead.toFixed(2) + " s");
    show("frames", String(stats.framesReceived));
    if (stats.latencyMs !== null) {
      stats.playbackLatencyMs = stats.latencyMs + ahead * 1000;
      show("latency", stats.latencyMs.toFixed(0) + " ms");
      show("playback-latency", stats.playbackLatencyMs.toFixed(0) + " ms");
    }
    const ranges = audio.buffered;
    if (ranges && ranges.length > 0) {
      const end = ranges.end(ranges.length - 1);
      if (ahead > MAX_AHEAD) {
        audio.currentTime = end - TARGET_AHEAD;       // fell behind the live edge: catch up
      } else if (audio.currentTime < ranges.start(ranges.length - 1)) {
        audio.currentTime = ranges.start(ranges.length - 1);   // a gap (skip, restart)
      }
      if (audio.paused && stats.state !== "stopped" && ahead >= TARGET_AHEAD) play();
    }
  }

  function play() {
    const started = audio.play();
    if (started && started.then) {
      started.then(() => { if (stats.state !== "stopped") setState("playing"); })
             .catch((e) => message("Playback did not start: " + e.message +
                                   " (press Start, or open with ?autoplay=1 for muted autoplay)"));
    }
  }

  // ---- connection -----------------------------------------------------------------------------

  // The viewer token of this page's URL, for the server (empty when there is none).
  function serverQuery() {
    const query = new URLSearchParams();
    if (params.get("token")) query.set("token", params.get("token"));
    return query;
  }

  function queryText(query) {
    const text = query.toString();
    return text ? "?" + text : "";
  }

  // The WebSocket never opened: a refused viewer token, or no server at all.
  function explainRefusal() {
    fetch("/stats" + queryText(serverQuery()), { cache: "no-store" })
      .then((response) => {
        if (response.status !== 401 && response.status !== 403) {
          message("Could not connect to the server's WebSocket (HTTP " + response.status +
                  " from /stats).");
          return;
        }
        return response.json().then((body) => {
          setState("refused");
          message("The server refused this page: " + body.error + " (HTTP " + response.status +
                  "). Open the page as /?token=<the viewer token>.");
        });
      })
      .catch(() => message("Could not connect to the server."));
  }

  function start() {
    if (ws) return;
    $("start").disabled = true;
    $("stop").disabled = false;
    setState("connecting");
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const query = serverQuery();
    if (params.get("stream")) query.set("stream", params.get("stream"));
    const url = scheme + "//" + window.location.host + "/ws" + queryText(query);
    ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    let opened = false;
    ws.onopen = () => { opened = true; };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") onText(event.data);
      else { noteKind("binary"); onFrame(event.data); }
    };
    ws.onclose = () => {
      if (stats.state === "stopped") return;
      stop();
      if (opened) message("The connection to the server closed.");
      else explainRefusal();
    };
    ticker = setInterval(tick, 250);
    play();     // inside the click: lets the browser start audio later
  }

  function stop() {
    setState("stopped");
    $("start").disabled = false;
    $("stop").disabled = true;
    if (ticker) { clearInterval(ticker); ticker = null; }
    if (ws) { const old = ws; ws = null; old.onclose = null; old.close(); }
    stats.metadata = null;
    teardownMedia();
    audio.pause();
  }

  audio.addEventListener("error", () => {
    if (!audio.error || !audio.getAttribute("src")) return;
    recordError("media error " + audio.error.code + ": " + (audio.error.message || ""));
  });
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  if (params.get("autoplay") === "1") {
    audio.muted = true;
    start();
  }
})();

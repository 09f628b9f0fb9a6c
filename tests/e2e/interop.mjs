// Chromium participants of the interop matrix (tests/interop/): many at once, one headless
// Chromium. The browser counterpart of tests/py/interop_agent.py, with the same job format, roles
// and output lines.
//
// Usage: node tests/e2e/interop.mjs JOB.json   (any cwd; paths are resolved from this file)
// Environment: CHROMIUM (default /usr/bin/chromium); INTEROP_VERBOSE=1 logs every signaling
// message (SDPs in full) to stderr.
//
// The job is {"base": "https://host:port", "roles": [ROLE, ...]}. A ROLE is one side of one cell:
//
//   {"cell": "c12", "side": "doctor" | "patient", "token", "userId", "userType" ("medecin" |
//    "patient"), "sessionId", "conversationId", "code" (patient), "layout": ["audio", "video",
//    "video"...] (tracks in the order they are added), "codec": "VP8" | "VP9" | "H264" | null (video
//    codec put first with setCodecPreferences before this side offers), "bundlePolicy": null
//    (Chromium's default) | "balanced" | "max-bundle" | "max-compat", "delay": seconds before
//    entering, "seconds": media time after the PeerConnection is connected, "linger": seconds the
//    call stays up after this side's report (the other side measures), "expectTracks": how many
//    tracks the other side publishes (the measure waits for them, at most 12 s more)}
//
// Each role gets its own browser context and page: the page opens `${base}/healthz` (same origin,
// secure context for getUserMedia, self-signed certificate accepted), loads the official
// socket.io client and plays the role the way a well-written browser app does:
//
//  - media: the fake microphone (a WebAudio tone past Chromium's 16 audio inputs); the fake
//    camera at 320x240 for the first video; canvases of 480x270 then 240x160 (a "screen share")
//    for the next ones. The sizes let receivers tell the published tracks apart.
//  - "perfect negotiation", the client being the polite side: negotiationneeded offers
//    (`webrtc_offer`) when stable; a server offer is always accepted and answered
//    (`webrtc_answer`), an offer of ours still outstanding being rolled back (Chromium does it in
//    setRemoteDescription; the server refuses ours with `negotiation_in_progress`, and
//    negotiationneeded offers again once stable). Trickle ICE both ways (`webrtc_ice_candidates`, queued until a remote
//    description exists). At most 6 offers per role. Received audio is played (muted) so that
//    its concealment statistics exist.
//  - a doctor adds its tracks and offers; a patient sends `request_webrtc_offer` with the code,
//    puts its tracks in the server's first offer (Chromium reuses the offered transceivers of the
//    same kind; a track with no free one gets a new transceiver, offered after the answer).
//  - all the pages are readied first (media, PeerConnection); a role then enters (connects its
//    socket) `delay` seconds after this process started, like the aiortc agent's roles. When
//    Chromium was not ready by the shortest delay, all roles are shifted alike (their order and
//    spacing kept) and say so in a note. It waits (20 s at most) for connectionState
//    "connected", then measures for `seconds` from when the last received track started (once
//    `expectTracks` have started; at most 12 s later), reading getStats() 2 s before the end and
//    at the end (frames in that window = "tailFrames"), prints its line, keeps the call up
//    `linger` seconds and closes it.
//
// Each role prints one JSON line on stdout when done:
//
//   {"cell", "side", "ok": true,
//    "received": [{"kind", "stream" (the server's stream id, e.g. "medecin-79"), "id", "mid",
//                  "frames" (video: framesDecoded, audio: packetsReceived), "tailFrames",
//                  "width", "height", "freezeCount", "freezeMs", "concealedRatio", "packetsLost"}],
//    "sent": [{"kind", "codec" (mimeType), "mid", "packetsSent", and for video "frames"
//              (framesEncoded), "width", "height", "qualityLimitation"}],
//    "transceivers": [{"mid", "kind", "direction", "currentDirection"}],
//    "path": "udp" | "tcp" (the selected candidate pair's transport) | null,
//    "errors": [{"code", "message", "event"?}], "notes": ["..."]}
//
// or {"cell", "side", "ok": false, "error": "...", "errors": [...], "notes": [...]}. `errors` holds
// the server's `webrtc_error`s, the acknowledgements with `success: false` (with the event), ack
// timeouts (code "ack_timeout") and descriptions or candidates of the server the browser refused
// (code "client_error"). Nothing runs unbounded: every wait in the page has a timeout, every role
// one, the whole job one (the longest delay + seconds + linger, plus 12 + 90 s); Chromium is
// closed at the end, whatever happened. The pages' console goes to stderr, prefixed with the
// cell and side. A fatal error prints {"fatal": "..."} and exits 1 (a role's failure is its own
// line: the exit status stays 0).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const STARTED = Date.now();
const HERE = dirname(fileURLToPath(import.meta.url));
const SOCKET_IO = join(HERE, '..', 'js', 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const VERBOSE = process.env.INTEROP_VERBOSE === '1';
/** The window at the end of the call in which frames must keep coming. */
const TAIL_MS = 2_000;
/** How much longer than `seconds` a role waits for tracks that start late (`expectTracks`). */
const SETTLE_MS = 12_000;
/** Opening a role's page and readying its media and PeerConnection. */
const PREPARE_MS = 30_000;
/** A role's own bound once it is ready, on top of its wait and seconds (signaling, connection,
 * statistics). */
const ROLE_SLACK_MS = 45_000;
/** The job's bound, on top of the longest delay + seconds (beyond the roles' own bounds). */
const JOB_SLACK_MS = 90_000;

const say = (line) => process.stderr.write(`${line}\n`);
/** An error's first line (Playwright appends its call log, with colours, to its messages). */
const firstLine = (e) => String(e?.message ?? e).split('\n')[0];
const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const bounded = (promise, ms, what) => {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
};

// ---- the role, in the page ----------------------------------------------------------------------
// Serialized by page.evaluate: self-contained, no reference to anything outside the function.
// Prepares the role (media, PeerConnection, handlers) and resolves with {ok} (never rejects);
// then window.__role.enter(enterAt, lateMs) plays it and resolves with its result. The
// PeerConnection and socket stay open until window.__role.close() is called.
async function prepareRole({ spec, base, tailMs, settleMs, verbose }) {
  const ACK_MS = 15_000;
  const CONNECT_MS = 20_000;
  const MAX_OFFERS = 6;
  const FPS = 15;
  const CANVAS_SIZES = [
    [480, 270],
    [240, 160],
  ];
  const R = (window.__role = { step: 'start', errors: [], notes: [], close: async () => undefined });
  const log = (...a) => console.log(...a); // node prefixes the cell and side
  const step = (s) => {
    R.step = s;
    log(s);
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const bounded = (promise, ms, what) => {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  };
  const noted = new Set();
  const note = (n) => {
    if (!noted.has(n)) {
      noted.add(n);
      R.notes.push(n);
      log('note:', n);
    }
  };
  const clientError = (event, e) => {
    R.errors.push({ code: 'client_error', message: String(e?.message ?? e), event });
    log(`client error on ${event}:`, String(e?.message ?? e));
  };

  let pc = null;
  let socket = null;
  const timers = [];
  const localTracks = [];
  R.close = async () => {
    for (const t of timers) clearInterval(t); // clears timeouts too
    try {
      pc?.close();
    } catch {
      /* closed already */
    }
    for (const t of localTracks) t.stop();
    try {
      socket?.disconnect();
    } catch {
      /* closed already */
    }
  };

  try {
    // ---- media: what the layout asks for, in its order ----
    step('media');
    const stream = new MediaStream();
    let videos = 0;
    for (const kind of spec.layout) {
      let track;
      if (kind === 'audio') {
        try {
          const s = await bounded(navigator.mediaDevices.getUserMedia({ audio: true }), 10_000, 'getUserMedia audio');
          track = s.getAudioTracks()[0];
        } catch (e) {
          // Chromium opens at most 16 audio inputs at once (all pages together): past that the
          // fake microphone refuses ("Could not start audio source"); a WebAudio tone instead.
          note(`fake microphone refused (${e?.message ?? e}): a WebAudio tone instead`);
          const ac = new AudioContext();
          const osc = ac.createOscillator();
          osc.frequency.value = 440;
          const dest = ac.createMediaStreamDestination();
          osc.connect(dest);
          osc.start();
          track = dest.stream.getAudioTracks()[0];
        }
      } else if (videos === 0) {
        const s = await bounded(
          navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240, frameRate: FPS } }),
          10_000,
          'getUserMedia video',
        );
        track = s.getVideoTracks()[0];
        videos += 1;
      } else {
        // A "screen share": an animated canvas, each frame different (so each is coded).
        const [w, h] = CANVAS_SIZES[Math.min(videos - 1, CANVAS_SIZES.length - 1)];
        videos += 1;
        const canvas = document.createElement('canvas');
        canvas.width = w;
        canvas.height = h;
        document.body.appendChild(canvas);
        const ctx = canvas.getContext('2d');
        let n = 0;
        const draw = () => {
          n += 1;
          ctx.fillStyle = `hsl(${(n * 7) % 360} 60% 40%)`;
          ctx.fillRect(0, 0, w, h);
          ctx.fillStyle = '#fff';
          ctx.fillRect((n * 5) % w, h / 3, 30, 30);
          ctx.font = '20px sans-serif';
          ctx.fillText(`${spec.cell} ${spec.side} ${n}`, 8, 24);
        };
        draw();
        timers.push(setInterval(draw, 1000 / FPS));
        track = canvas.captureStream(FPS).getVideoTracks()[0];
        track.contentHint = 'detail';
      }
      if (!track) throw new Error(`no ${kind} track`);
      localTracks.push(track);
      stream.addTrack(track);
    }

    // ---- the PeerConnection ----
    const config = { iceServers: [] };
    if (spec.bundlePolicy) config.bundlePolicy = spec.bundlePolicy;
    pc = new RTCPeerConnection(config);
    const received = new Map(); // track id -> {kind, stream, id, mid}
    pc.ontrack = (ev) => {
      const t = ev.track;
      const known = received.get(t.id);
      const streamId = ev.streams[0]?.id ?? known?.stream ?? null;
      received.set(t.id, { kind: t.kind, stream: streamId, id: t.id, mid: ev.transceiver?.mid ?? known?.mid ?? null });
      if (t.kind === 'audio' && !known) {
        // Played, as an app does: Chromium counts received samples (and concealment) only for
        // audio that is pulled for playout. Chromium runs with --mute-audio.
        const el = document.createElement('audio');
        el.autoplay = true;
        el.srcObject = new MediaStream([t]);
        document.body.appendChild(el);
        el.play().catch((e) => note(`remote audio does not play: ${e.message}`));
      }
      log(`ontrack ${t.kind} stream=${streamId} mid=${ev.transceiver?.mid}`);
    };
    let connectedResolve;
    let connectedReject;
    const connected = new Promise((res, rej) => {
      connectedResolve = res;
      connectedReject = rej;
    });
    connected.catch(() => undefined);
    pc.onconnectionstatechange = () => {
      log('connectionState', pc.connectionState);
      if (pc.connectionState === 'connected') connectedResolve();
      if (pc.connectionState === 'failed') connectedReject(new Error('connectionState failed'));
    };

    const wantCodec = spec.codec ? `video/${spec.codec}`.toLowerCase() : null;
    if (wantCodec) {
      const can = (caps) => (caps?.codecs ?? []).some((c) => c.mimeType.toLowerCase() === wantCodec);
      if (!can(RTCRtpSender.getCapabilities('video'))) note(`chromium cannot send ${spec.codec}`);
      if (!can(RTCRtpReceiver.getCapabilities('video'))) note(`chromium cannot receive ${spec.codec}`);
    }
    /** The layout's codec first on every video transceiver (before each offer of ours). */
    const preferCodec = () => {
      if (!wantCodec) return;
      const caps = RTCRtpReceiver.getCapabilities('video')?.codecs ?? [];
      const first = caps.filter((c) => c.mimeType.toLowerCase() === wantCodec);
      if (!first.length) return;
      const order = [...first, ...caps.filter((c) => !first.includes(c))];
      for (const t of pc.getTransceivers()) {
        if (t.receiver.track.kind !== 'video' || t.currentDirection === 'stopped') continue;
        try {
          t.setCodecPreferences(order);
        } catch (e) {
          note(`setCodecPreferences: ${e.message}`);
        }
      }
    };

    // ---- signaling ----
    /** With INTEROP_VERBOSE=1: every signaling message on the console, SDPs in full. */
    const trace = (dir, event, data) => {
      if (verbose) log(`${dir} ${event} ${JSON.stringify(data)}`);
    };
    const emit = async (event, data) => {
      try {
        trace('>>', event, data);
        const reply = await socket.timeout(ACK_MS).emitWithAck(event, data);
        trace('<< ack', event, reply);
        if (reply && reply.success === false) {
          const err = reply.error ?? {};
          R.errors.push({ code: err.code, message: err.message, event });
          log(`${event} refused:`, err.code, err.message);
        }
        return reply;
      } catch (e) {
        R.errors.push({ code: 'ack_timeout', message: String(e?.message ?? e), event });
        return null;
      }
    };
    socket = io(base, {
      auth: { token: spec.token, userType: spec.userType, userId: spec.userId, role: spec.userType },
      transports: ['websocket'],
      reconnection: false,
      timeout: 10_000,
      autoConnect: false, // entering is connecting: R.enter does it
    });

    // Server events are handled one after the other, in their order of arrival.
    let chain = Promise.resolve();
    const enqueue = (what, task) => {
      chain = chain.then(task).catch((e) => clientError(what, e));
    };
    let pendingCandidates = [];
    const addCandidates = async (list) => {
      for (const c of list) {
        try {
          await pc.addIceCandidate(c);
        } catch (e) {
          clientError('webrtc_ice_candidates', e);
        }
      }
    };
    const flushCandidates = async () => {
      const list = pendingCandidates;
      pendingCandidates = [];
      await addCandidates(list);
    };

    let offers = 0;
    let makingOffer = false;
    /** Sends our current local offer; after `negotiation_in_progress`, waits for the server's. */
    const sendOffer = async () => {
      const ours = pc.localDescription.sdp;
      log(`offer #${offers}`);
      const reply = await emit('webrtc_offer', {
        sessionId: spec.sessionId,
        conversationId: spec.conversationId,
        sdpOffer: ours,
        sessionType: 'audio_video',
      });
      if (reply?.success === false && reply.error?.code === 'negotiation_in_progress') {
        // The server's own offer is on its way (it holds one outstanding): applying it rolls
        // ours back, and negotiationneeded offers again once stable. Nothing is re-sent here: a
        // server that refused and then sent nothing would leave this role stuck, as it should.
        note('our offer crossed the server\'s (negotiation_in_progress)');
      }
    };
    pc.onnegotiationneeded = async () => {
      if (pc.signalingState !== 'stable') return; // Chromium fires it again once stable
      if (offers >= MAX_OFFERS) {
        note(`negotiationneeded after ${MAX_OFFERS} offers: not offering again`);
        return;
      }
      try {
        // makingOffer covers only the making of the offer, not the wait for its acknowledgement:
        // a negotiationneeded fired meanwhile (after a glare) must not be lost.
        makingOffer = true;
        offers += 1;
        preferCodec();
        await pc.setLocalDescription();
      } catch (e) {
        clientError('webrtc_offer', e);
        return;
      } finally {
        makingOffer = false;
      }
      if (pc.signalingState !== 'have-local-offer') return; // a server offer came first
      await sendOffer();
    };
    pc.onicecandidate = (ev) => {
      if (!ev.candidate || !ev.candidate.candidate) return;
      emit('webrtc_ice_candidates', { sessionId: spec.sessionId, candidates: [ev.candidate.toJSON()] });
    };

    if (verbose) socket.onAny((event, data) => trace('<<', event, data));
    let placed = spec.side !== 'patient';
    let glares = 0;
    socket.on('webrtc_offer', (data) =>
      enqueue('webrtc_offer', async () => {
        if (makingOffer || pc.signalingState !== 'stable') {
          // Polite: the server's offer wins, ours is rolled back (implicitly by Chromium).
          glares += 1;
          note(`glare #${glares}: our offer rolled back for the server offer`);
        }
        await pc.setRemoteDescription({ type: 'offer', sdp: data.sdpOffer });
        await flushCandidates();
        if (!placed) {
          placed = true;
          for (const track of localTracks) pc.addTrack(track, stream);
        }
        await pc.setLocalDescription();
        await emit('webrtc_answer', { sessionId: spec.sessionId, sdpAnswer: pc.localDescription.sdp });
      }),
    );
    socket.on('webrtc_answer', (data) =>
      enqueue('webrtc_answer', async () => {
        if (pc.signalingState !== 'have-local-offer') {
          note(`answer ignored in signaling state ${pc.signalingState}`);
          return;
        }
        await pc.setRemoteDescription({ type: 'answer', sdp: data.sdpAnswer });
        await flushCandidates();
      }),
    );
    socket.on('webrtc_ice_candidates', (data) =>
      enqueue('webrtc_ice_candidates', async () => {
        const list = (data?.candidates ?? []).filter((c) => c && c.candidate);
        if (!pc.remoteDescription) pendingCandidates.push(...list);
        else await addCandidates(list);
      }),
    );
    socket.on('webrtc_error', (data) => {
      R.errors.push({ code: data?.code, message: data?.message });
      log('webrtc_error', data?.code, data?.message);
    });
    // The other side leaving ends the measure: its media stops there, not by a fault.
    let otherLeftAt = null;
    socket.on('participant_left', (data) => {
      const p = data?.participant;
      if (p && !(p.userId === spec.userId && p.userType === spec.userType) && otherLeftAt === null) {
        otherLeftAt = Date.now();
      }
    });
    socket.on('session_ended', (data) => note(`session_ended: ${data?.reason}`));
    socket.on('session_moved', (data) => note(`session_moved: ${data?.reason}`));
    socket.on('disconnect', (reason) => {
      if (reason !== 'io client disconnect') note(`socket disconnected: ${reason}`);
    });

    // ---- ready: the rest runs when node says so (every role of the job ready) ----
    /** Enters at `enterAt` (epoch ms), plays the role, resolves with its result (never rejects). */
    R.enter = async (enterAt, lateMs) => {
      try {
        if (lateMs > 500) {
          // Chromium and the pages took longer than the shortest delay (a loaded machine): every
          // role of the job enters that much later than asked, their order kept.
          note(`entered ${lateMs} ms later than its delay asked (all the job's roles alike): Chromium was not ready before`);
        }
        const wait = enterAt - Date.now();
        if (wait > 0) {
          step(`waiting ${wait} ms before entering`);
          await sleep(wait);
        }
        step('socket.io connect');
        const connecting = new Promise((resolve, reject) => {
          socket.once('connect', resolve);
          socket.once('connect_error', (e) => reject(new Error(`connect_error: ${e.message}`)));
        });
        socket.connect();
        await bounded(connecting, 12_000, 'socket.io connect');
        if (spec.side === 'doctor') {
          step('publishing');
          for (const track of localTracks) pc.addTrack(track, stream);
          preferCodec();
          // negotiationneeded offers.
        } else {
          step('request_webrtc_offer');
          await emit('request_webrtc_offer', {
            code: spec.code,
            sessionId: spec.sessionId,
            user: { userId: spec.userId, userType: spec.userType },
            action: 'join_conference',
          });
        }
        await bounded(connected, CONNECT_MS, 'PeerConnection connected');
        step('connected');

        // ---- the call, then the report ----
        const read = async () => {
          const stats = await bounded(pc.getStats(), 5_000, 'getStats');
          const byId = new Map();
          stats.forEach((s) => byId.set(s.id, s));
          return byId;
        };
        const framesOf = (s) => (s.kind === 'video' ? (s.framesDecoded ?? 0) : (s.packetsReceived ?? 0));
        /** Inbound RTP per received track id (the one with most frames if several SSRCs). */
        const inbound = (byId) => {
          const m = new Map();
          for (const s of byId.values()) {
            if (s.type !== 'inbound-rtp') continue;
            const key = s.trackIdentifier ?? `mid:${s.mid}:${s.ssrc}`;
            if (!m.has(key) || framesOf(s) > framesOf(m.get(key))) m.set(key, s);
          }
          return m;
        };
        // Measured for `seconds` from when the last received track so far started (a publisher
        // that arrives after us gets its full window) once `expectTracks` tracks have started,
        // at most `settleMs` later; as the aiortc agent does. Tracks start when the statistics
        // first count a frame (read every 250 ms).
        const windowMs = Math.max(0, (spec.seconds ?? 4) * 1000);
        const expect = spec.expectTracks ?? 0;
        // The other side leaving ends it early: the readings then stop at its departure.
        const connectedAt = Date.now();
        const starts = new Map();
        /** Readings every 250 ms, [time, inbound], to read the window before a departure. */
        const history = [];
        let due = connectedAt + windowMs + settleMs;
        for (;;) {
          const now = Date.now();
          const reading = inbound(await read());
          history.push([now, reading]);
          if (history.length > 200) history.shift();
          for (const [key, s] of reading) {
            if (framesOf(s) > 0 && !starts.has(key)) starts.set(key, now);
          }
          due =
            starts.size >= expect
              ? Math.min(Math.max(connectedAt, ...starts.values()) + windowMs, connectedAt + windowMs + settleMs)
              : connectedAt + windowMs + settleMs;
          if (otherLeftAt !== null) {
            note('the other side left before the end of the measure');
            break;
          }
          const left = due - Date.now();
          if (left <= 0) break;
          await sleep(Math.min(250, left));
        }
        if (starts.size < expect) note(`${starts.size} of ${expect} expected tracks started`);
        step('report');
        const last = await read();
        const end = otherLeftAt ?? Date.now();
        const at = (t) => [...history].reverse().find(([when]) => when <= t)?.[1];
        const after = at(end) ?? new Map();
        const before = at(end - tailMs);

        const rows = new Map(received);
        for (const [key, s] of after) {
          if (rows.has(key)) continue;
          const byMid = [...rows.values()].find((r) => r.mid != null && r.mid === s.mid && !after.has(r.id));
          if (byMid) {
            // The stats name the track differently: keep one row, under the stats' key.
            rows.delete(byMid.id);
            rows.set(key, byMid);
          } else {
            rows.set(key, { kind: s.kind, stream: null, id: s.trackIdentifier ?? null, mid: s.mid ?? null });
          }
        }
        /** Frames in the last `tailMs` (the two readings' own timestamps: on a loaded machine the
         * second one may come late). */
        const tail = (s, b) => {
          if (!b) return framesOf(s);
          const elapsed = s.timestamp - b.timestamp;
          const delta = framesOf(s) - framesOf(b);
          return elapsed > tailMs ? Math.round((delta * tailMs) / elapsed) : delta;
        };
        const report = [];
        for (const [key, r] of rows) {
          const s = after.get(key);
          const b = before.get(key);
          const frames = s ? framesOf(s) : 0;
          const row = {
            kind: r.kind,
            stream: r.stream,
            id: r.id,
            mid: r.mid ?? s?.mid ?? null,
            frames,
            tailFrames: s ? tail(s, b) : 0,
            width: null,
            height: null,
            freezeCount: null,
            freezeMs: null,
            concealedRatio: null,
            packetsLost: s?.packetsLost ?? null,
          };
          if (s && r.kind === 'video') {
            row.width = s.frameWidth ?? null;
            row.height = s.frameHeight ?? null;
            row.freezeCount = s.freezeCount ?? null;
            row.freezeMs = s.totalFreezesDuration != null ? Math.round(s.totalFreezesDuration * 1000) : null;
          }
          if (s && r.kind === 'audio' && s.totalSamplesReceived) {
            row.concealedRatio = Math.round(((s.concealedSamples ?? 0) / s.totalSamplesReceived) * 1e4) / 1e4;
          }
          report.push(row);
        }
        const sent = [];
        for (const s of last.values()) {
          if (s.type !== 'outbound-rtp') continue;
          sent.push({
            kind: s.kind,
            codec: s.codecId ? (last.get(s.codecId)?.mimeType ?? null) : null,
            mid: s.mid ?? null,
            packetsSent: s.packetsSent ?? 0,
            ...(s.kind === 'video'
              ? {
                  frames: s.framesEncoded ?? 0,
                  width: s.frameWidth ?? null,
                  height: s.frameHeight ?? null,
                  qualityLimitation: s.qualityLimitationReason ?? null,
                }
              : {}),
          });
        }
        // The transport of the selected candidate pair ("udp" or "tcp"), as Chromium sees it.
        let path = null;
        for (const s of last.values()) {
          if (s.type !== 'transport' || !s.selectedCandidatePairId) continue;
          const pair = last.get(s.selectedCandidatePairId);
          path = last.get(pair?.localCandidateId)?.protocol ?? null;
        }
        const transceivers = pc.getTransceivers().map((t) => ({
          mid: t.mid,
          kind: t.receiver.track.kind,
          direction: t.direction,
          currentDirection: t.currentDirection,
        }));
        return { ok: true, received: report, sent, transceivers, path, errors: R.errors, notes: R.notes };
      } catch (e) {
        return { ok: false, error: `${R.step}: ${e?.message ?? e}`, errors: R.errors, notes: R.notes };
      }
    };
    step('ready');
    return { ok: true };
  } catch (e) {
    return { ok: false, error: `${R.step}: ${e?.message ?? e}`, errors: R.errors, notes: R.notes };
  }
}

// ---- node: one browser, one context and page per role -------------------------------------------

/**
 * One role's page: `prepare()` opens it and readies the role (bounded), `play(enterAt, lateMs)`
 * plays it and prints its line (bounded; a failure is printed as the role's failure), `close()`
 * ends its connection and page. Nothing here throws.
 */
function rolePage(browser, base, spec) {
  const tag = `[${spec.cell}/${spec.side}]`;
  const head = { cell: spec.cell, side: spec.side };
  let context = null;
  let page = null;
  let done = false;
  let closed = false;
  /** Prints the role's failure, with what the page knew (its errors and notes) if it answers. */
  const fail = async (e) => {
    let state = null;
    try {
      const read = () => {
        const r = window.__role;
        return r ? { step: r.step, errors: r.errors, notes: r.notes } : null;
      };
      state = page ? await bounded(page.evaluate(read), 2_000, 'state') : null;
    } catch {
      /* nothing more to learn */
    }
    const where = state?.step ? `${state.step}: ` : '';
    report({ ok: false, error: `${where}${firstLine(e)}`, errors: state?.errors ?? [], notes: state?.notes ?? [] });
  };
  const report = (result) => {
    if (done) return;
    done = true;
    out({ ...head, ...result });
  };
  return {
    spec,
    async prepare() {
      try {
        const ready = await bounded(
          (async () => {
            // bypassCSP: this harness page (relais's /healthz, with the official socket.io
            // client injected inline) is the matrix's own, not the product's: relais's
            // Content-Security-Policy rightly forbids inline script on its origin.
            context = await browser.newContext({ ignoreHTTPSErrors: true, bypassCSP: true });
            // The page asks for /favicon.ico, which the server does not serve: answered here.
            await context.route('**/favicon.ico', (route) => route.fulfill({ status: 204, body: '' }));
            page = await context.newPage();
            page.on('console', (m) => say(`${tag} ${m.type()}: ${m.text()}`));
            page.on('pageerror', (e) => say(`${tag} pageerror: ${e.message}`));
            // A namespace whose veth just came up makes Chromium see a network change and abort
            // the first navigations (ERR_NETWORK_CHANGED): try again, a bounded number of times.
            for (let attempt = 1; ; attempt += 1) {
              try {
                await page.goto(`${base}/healthz`, { timeout: 15_000 });
                break;
              } catch (e) {
                if (attempt >= 5 || !String(e).includes('ERR_NETWORK_CHANGED')) throw e;
                await new Promise((r) => setTimeout(r, 500));
              }
            }
            await page.addScriptTag({ path: SOCKET_IO });
            return page.evaluate(prepareRole, { spec, base, tailMs: TAIL_MS, settleMs: SETTLE_MS, verbose: VERBOSE });
          })(),
          PREPARE_MS,
          'preparing the page',
        );
        if (!ready.ok) report(ready);
        return ready.ok;
      } catch (e) {
        await fail(e);
        return false;
      }
    },
    /** Plays the role, prints its line, keeps the call up `linger` seconds (the other side may
     * still be measuring), then closes it. */
    async play(enterAt, lateMs) {
      const limit = enterAt - Date.now() + (spec.seconds ?? 4) * 1000 + SETTLE_MS + ROLE_SLACK_MS;
      try {
        report(await bounded(page.evaluate(([t, l]) => window.__role.enter(t, l), [enterAt, lateMs]), limit, 'role'));
      } catch (e) {
        await fail(e);
      }
      await new Promise((r) => setTimeout(r, (spec.linger ?? 0) * 1000));
      await this.close();
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        if (page) await bounded(page.evaluate(() => window.__role?.close()), 3_000, 'close');
      } catch {
        /* the page may be gone */
      }
      await context?.close().catch(() => undefined);
    },
  };
}

async function main() {
  const jobPath = process.argv[2];
  if (!jobPath) throw new Error('usage: node interop.mjs JOB.json');
  const job = JSON.parse(readFileSync(jobPath, 'utf8'));
  const roles = job.roles ?? [];
  const longest = Math.max(0, ...roles.map((r) => (r.delay ?? 0) + (r.seconds ?? 4) + (r.linger ?? 0)));
  const loopback = /^(127\.|localhost$|\[::1\]$)/.test(new URL(job.base).hostname);
  let browser = null;
  const shutdown = async () => {
    if (browser) await bounded(browser.close(), 10_000, 'closing chromium').catch((e) => say(`[interop] ${e.message}`));
  };
  const everything = async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 60_000,
      args: [
        '--no-sandbox',
        '--headless=new',
        '--use-fake-device-for-media-stream',
        '--use-fake-ui-for-media-stream',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--autoplay-policy=no-user-gesture-required',
        // Many pages at once: none of them is throttled as a background page.
        '--disable-background-timer-throttling',
        '--disable-renderer-backgrounding',
        '--disable-backgrounding-occluded-windows',
        // A server on 127.0.0.1 (a test in a namespace with only lo): loopback candidates.
        ...(loopback ? ['--allow-loopback-in-peer-connection'] : []),
      ],
    });
    say(`[interop] chromium ${browser.version()}, ${roles.length} roles`);
    const pages = roles.map((spec) => rolePage(browser, job.base, spec));
    const ready = (await Promise.all(pages.map(async (p) => ((await p.prepare()) ? p : null)))).filter(Boolean);
    // Delays count from the start of this process, as the aiortc agent's do (agents of one
    // cell started together then enter as the job says). When Chromium and the pages were
    // ready only after the shortest delay, every role is shifted by the same amount: their
    // order and spacing, which the cells are about, are kept.
    const now = Date.now();
    const first = Math.min(...ready.map((p) => p.spec.delay ?? 0));
    const lateMs = ready.length ? Math.max(0, now + 200 - (STARTED + first * 1000)) : 0;
    say(`[interop] ${ready.length} of ${roles.length} roles ready after ${now - STARTED} ms`);
    await Promise.all(ready.map((p) => p.play(STARTED + lateMs + (p.spec.delay ?? 0) * 1000, lateMs)));
    await Promise.all(pages.map((p) => p.close())); // those that failed before playing
  };
  try {
    await bounded(everything(), longest * 1000 + SETTLE_MS + JOB_SLACK_MS, 'interop job');
  } finally {
    await shutdown();
  }
}

try {
  await main();
  process.exit(0);
} catch (e) {
  say(`[interop] ${e?.stack ?? e}`);
  out({ fatal: firstLine(e) });
  process.exit(1);
}

// End-to-end: a doctor and a patient in Debian's chromium (fake camera and microphone), media
// through the relais SFU. Run by tests/browser.rs inside a network namespace whose only
// interface is `lo`, next to a relais started there; prints one JSON line (the last line of
// stdout) that the Rust test asserts.
//
// The waiting room is on (the server's default): the patient waits (*Le médecin va vous
// recevoir*, no media), the doctor sees them and admits them, the call starts. After the media
// cut and after the server's SIGKILL restart the patient comes back without waiting again: every
// page records what it shows (`window.__views`), and the script returns what was shown then.
//
// Environment: HTTP_BASE (http://127.0.0.1:3000), HTTPS_BASE (https://127.0.0.1:3443),
// MEDIA_PORT (the server's media UDP port), ARTIFACTS (directory for screenshots and logs),
// CHROMIUM (default /usr/bin/chromium), E2E_TIMEOUT_MS (default 150000), RESTART_DIR (when set:
// the script writes RESTART_DIR/kill mid-call, the test kills relais with SIGKILL and starts it
// again with the same command, then writes RESTART_DIR/restarted).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const HTTP = process.env.HTTP_BASE ?? 'http://127.0.0.1:3000';
const HTTPS = process.env.HTTPS_BASE ?? 'https://127.0.0.1:3443';
const MEDIA_PORT = Number(process.env.MEDIA_PORT ?? '3479');
const ARTIFACTS = process.env.ARTIFACTS ?? 'artifacts';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const TOTAL_MS = Number(process.env.E2E_TIMEOUT_MS ?? '150000');
const STEP_MS = 30_000;
// In a namespace of the test's own (tests/browser.rs sets it): cut the media path for a while.
const CUT_MEDIA = process.env.CUT_MEDIA === '1';
const CUT_MS = Number(process.env.CUT_MS ?? '14000');
const RESTART_DIR = process.env.RESTART_DIR ?? '';

mkdirSync(ARTIFACTS, { recursive: true });
const consoleLog = [];
const result = { ok: false, step: 'start', mediaPort: MEDIA_PORT, timings: {} };
const started = Date.now();
let browser;

// The media path (all UDP, and ICE-TCP on the media port) is routed into a blackhole; the pages
// and Socket.IO (TCP on the HTTP/HTTPS ports) keep working.
let mediaCut = false;
function ip(...args) {
  execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 5_000 });
}
const CUT_RULES = [
  ['pref', '10', 'ipproto', 'udp'],
  ['pref', '11', 'ipproto', 'tcp', 'dport', String(MEDIA_PORT)],
  ['pref', '12', 'ipproto', 'tcp', 'sport', String(MEDIA_PORT)],
];
function cutMedia() {
  ip('route', 'add', 'blackhole', '127.0.0.0/8', 'table', '100');
  // The local table must come after our rules for them to win.
  ip('rule', 'add', 'pref', '20', 'lookup', 'local');
  ip('rule', 'del', 'pref', '0', 'lookup', 'local');
  for (const r of CUT_RULES) ip('rule', 'add', ...r, 'lookup', '100');
  mediaCut = true;
}
function restoreMedia() {
  if (!mediaCut) return;
  for (const r of CUT_RULES) ip('rule', 'del', r[0], r[1]);
  mediaCut = false;
}

function finish(code) {
  try {
    restoreMedia();
  } catch {
    /* the namespace goes away anyway */
  }
  result.elapsedMs = Date.now() - started;
  try {
    writeFileSync(join(ARTIFACTS, 'browser-console.log'), consoleLog.join('\n') + '\n');
  } catch {
    /* best effort */
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(code);
}

// Nothing may hang: the whole run is bounded.
const watchdog = setTimeout(() => {
  result.error = `timed out after ${TOTAL_MS} ms at step "${result.step}"`;
  browser?.close().catch(() => undefined);
  setTimeout(() => finish(1), 2_000).unref();
}, TOTAL_MS);
watchdog.unref();

function step(name) {
  result.step = name;
  result.timings[name] = Date.now() - started;
  process.stderr.write(`[e2e] ${name}\n`);
}

// Every PeerConnection the page creates, to read its statistics and descriptions.
const RECORD_PCS = () => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
    }
  };
};

// What the page shows, each time it changes: the call's state (`.call-state`), `+lobby` while
// the waiting screen is up, `+waits:<who>` while the doctor's waiting list shows someone.
const RECORD_VIEWS = () => {
  window.__views = [];
  const note = () => {
    let view = document.querySelector('.call-state')?.getAttribute('data-state') ?? '-';
    if (document.querySelector('.lobby')) view += '+lobby';
    const waits = [...document.querySelectorAll('.waiting-list [data-user]')].map((e) => e.getAttribute('data-user'));
    if (waits.length > 0) view += `+waits:${waits.join(',')}`;
    if (window.__views[window.__views.length - 1]?.view !== view) window.__views.push({ at: Date.now(), view });
  };
  new MutationObserver(note).observe(document, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ['data-state'],
  });
};

/** What the page showed (see RECORD_VIEWS), from the `from`-th change on. */
const viewsSince = (page, from = 0) =>
  page.evaluate((from) => (window.__views ?? []).slice(from).map((v) => v.view), from);
const viewCount = (page) => page.evaluate(() => (window.__views ?? []).length);

/** Everything the page's PeerConnections received so far: bytes, video frames decoded. */
function receivedSoFar(page) {
  return page.evaluate(async () => {
    let inboundBytes = 0;
    let framesDecoded = 0;
    for (const pc of window.__pcs ?? []) {
      if (pc.connectionState === 'closed') continue;
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        inboundBytes += s.bytesReceived ?? 0;
        if (s.kind === 'video') framesDecoded += s.framesDecoded ?? 0;
      });
    }
    return {
      peerConnections: (window.__pcs ?? []).length,
      inboundBytes,
      framesDecoded,
      remoteVideos: document.querySelectorAll('video.remote-video').length,
    };
  });
}

async function newPage(name) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, // the server's generated, self-signed certificate
    viewport: { width: 1280, height: 860 },
    locale: 'fr-FR',
  });
  await context.addInitScript(RECORD_PCS);
  await context.addInitScript(RECORD_VIEWS);
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('console', (m) => consoleLog.push(`[${name}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLog.push(`[${name}] pageerror: ${e.message}`));
  return { context, page };
}

async function signIn(page, role, id, name) {
  await page.locator('#signin-role').waitFor();
  await page.selectOption('#signin-role', role);
  await page.fill('#signin-id', String(id));
  if (name) await page.fill('#signin-name', name);
  await page.click('#signin-submit');
}

/** The remote video element plays: frames decoded and time advancing. */
async function remoteVideoPlays(page) {
  await page.waitForFunction(
    () => {
      const v = document.querySelector('video.remote-video');
      return !!v && v.videoWidth > 0 && v.currentTime > 0;
    },
    null,
    { timeout: STEP_MS },
  );
  const first = await page.evaluate(() => {
    const v = document.querySelector('video.remote-video');
    return { width: v.videoWidth, height: v.videoHeight, t: v.currentTime, stream: v.dataset.streamId };
  });
  await page.waitForTimeout(1_500);
  const t2 = await page.evaluate(() => document.querySelector('video.remote-video').currentTime);
  return { ...first, currentTimeDelta: t2 - first.t };
}

const pcCount = (page) => page.evaluate(() => (window.__pcs ?? []).length);

/** Video frames decoded by the page's PeerConnections created after the first `since`. */
function framesDecodedSince(page, since) {
  return page.evaluate(async (since) => {
    let frames = 0;
    for (const pc of (window.__pcs ?? []).slice(since)) {
      if (pc.connectionState === 'closed') continue;
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded ?? 0;
      });
    }
    return frames;
  }, since);
}

/**
 * Milliseconds from `from` until a PeerConnection made after the first `since` decodes video.
 * Fails at once if the page shows the waiting screen: whoever took part does not wait again.
 */
async function videoBackAfter(page, since, from) {
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if ((await framesDecodedSince(page, since)) > 0) return Date.now() - from;
    if ((await page.locator('.lobby').count()) > 0) {
      throw new Error(`back in the waiting room ${Date.now() - from} ms after the kill`);
    }
    await page.waitForTimeout(100);
  }
  throw new Error(`no video decoded on a new connection ${Date.now() - from} ms after the kill`);
}

/** Inbound RTP bytes, the selected candidate pair's remote port, the server SDP's ports. */
async function mediaStats(page) {
  return page.evaluate(async () => {
    const pcs = (window.__pcs ?? []).filter((pc) => pc.connectionState !== 'closed');
    const pc = pcs[pcs.length - 1];
    if (!pc) return { error: 'no PeerConnection' };
    const read = async () => {
      const stats = await pc.getStats();
      let inbound = 0;
      let inboundVideo = 0;
      let frames = 0;
      let pairId = null;
      const byId = new Map();
      stats.forEach((s) => {
        byId.set(s.id, s);
        if (s.type === 'inbound-rtp') {
          inbound += s.bytesReceived ?? 0;
          if (s.kind === 'video') {
            inboundVideo += s.bytesReceived ?? 0;
            frames += s.framesDecoded ?? 0;
          }
        }
        if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      });
      if (!pairId) {
        stats.forEach((s) => {
          if (s.type === 'candidate-pair' && s.state === 'succeeded' && (s.nominated || s.selected)) pairId = s.id;
        });
      }
      const pair = pairId ? byId.get(pairId) : null;
      const remote = pair ? byId.get(pair.remoteCandidateId) : null;
      const local = pair ? byId.get(pair.localCandidateId) : null;
      return {
        inbound,
        inboundVideo,
        frames,
        // The browser's send-side bandwidth estimate: it rises above its start (300 kbit/s)
        // only on the server's congestion feedback (transport-wide cc).
        availableOutgoingBitrate: pair?.availableOutgoingBitrate ?? null,
        remote: remote ? { address: remote.address ?? remote.ip, port: remote.port, protocol: remote.protocol } : null,
        local: local ? { address: local.address ?? local.ip, port: local.port } : null,
      };
    };
    const a = await read();
    await new Promise((r) => setTimeout(r, 2_000));
    const b = await read();
    const sdpPorts = [];
    for (const line of (pc.remoteDescription?.sdp ?? '').split(/\r?\n/)) {
      const m = /^a=candidate:\S+ \d+ (\S+) \d+ (\S+) (\d+) typ/.exec(line);
      if (m) sdpPorts.push(Number(m[3]));
    }
    return {
      connectionState: pc.connectionState,
      inboundBytesBefore: a.inbound,
      inboundBytesAfter: b.inbound,
      inboundBytesDelta: b.inbound - a.inbound,
      inboundVideoDelta: b.inboundVideo - a.inboundVideo,
      framesDecodedDelta: b.frames - a.frames,
      availableOutgoingBitrate: b.availableOutgoingBitrate,
      selectedRemote: b.remote,
      selectedLocal: b.local,
      remoteSdpCandidatePorts: sdpPorts,
      peerConnections: (window.__pcs ?? []).length,
    };
  });
}

try {
  step('launch chromium');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60_000,
    args: [
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--no-first-run',
      '--disable-gpu',
    ],
  });
  result.browserVersion = browser.version();

  // ---- the doctor, over HTTP --------------------------------------------------------------
  step('doctor signs in');
  const doctor = await newPage('doctor');
  await doctor.page.goto(`${HTTP}/`);
  await signIn(doctor.page, 'medecin', 79, 'Dr. Martin');
  await doctor.page.waitForURL(/\/doctor$/);

  step('doctor opens a conversation with patient 11');
  await doctor.page.fill('#new-conversation-patient', '11');
  await doctor.page.click('#btn-new-conversation');
  await doctor.page.locator('.chat[data-conversation-id]').waitFor();
  result.conversationId = Number(
    await doctor.page.locator('.chat[data-conversation-id]').getAttribute('data-conversation-id'),
  );

  step('doctor starts the video consultation');
  await doctor.page.click('#btn-start-consultation');
  await doctor.page.waitForFunction(() => document.querySelector('#conference-link')?.value?.includes('/conference/'));
  const link = await doctor.page.inputValue('#conference-link');
  const joinCode = (await doctor.page.textContent('#join-code'))?.trim();
  result.conferenceLink = link;
  result.joinCode = joinCode;
  await doctor.page.click('#btn-copy-link');
  await doctor.page.click('#btn-send-link');
  await doctor.page.locator(`.chat .chat-message.mine a[href="${link}"]`).waitFor();
  result.linkSentInChat = true;
  step('doctor waits in the waiting room');
  await doctor.page.locator('.call-state[data-state="waiting"]').waitFor();
  await doctor.page.locator('.waiting-room').waitFor();
  result.doctorWaitingRoom = true;
  // The session's waiting room, as the server made it (the test leaves the default).
  result.waitingRoomSetting = await doctor.page.locator('#waiting-room-enabled').isChecked();

  // ---- a wrong code is explained in plain language -----------------------------------------
  step('a wrong code is refused');
  const intruder = await newPage('wrong-code');
  const wrong = new URL(link);
  wrong.searchParams.set('code', 'ZZZZ9999');
  await intruder.page.goto(wrong.toString());
  await signIn(intruder.page, 'patient', 12);
  await intruder.page.locator('.call-error[data-code="invalid_code"]').waitFor();
  result.invalidCodeMessage = (await intruder.page.textContent('.call-error p'))?.trim();
  await intruder.context.close();

  // ---- the patient opens the link (HTTPS, the link as the server built it) ----------------
  step('patient opens the link and signs in');
  if (!link.startsWith('https://')) throw new Error(`conference link is not https: ${link}`);
  const patient = await newPage('patient');
  await patient.page.goto(link);
  await signIn(patient.page, 'patient', 11, 'Jean Dupont');

  // ---- the waiting room: the patient waits, the doctor admits, the call starts -------------
  step('the patient waits; the doctor sees them waiting');
  await patient.page.locator('.call-state[data-state="lobby"]').waitFor();
  await patient.page.locator('.lobby .lobby-since').waitFor();
  const patientRow = doctor.page.locator('.waiting-list [data-user="patient-11"]');
  await patientRow.waitFor();
  // Two seconds more in the waiting room: nothing reaches the patient meanwhile.
  await patient.page.waitForTimeout(2_000);
  result.admission = {
    lobbyTitle: (await patient.page.textContent('.lobby .lobby-title'))?.trim(),
    stateText: (await patient.page.textContent('.call-state'))?.trim(),
    since: (await patient.page.textContent('.lobby .lobby-since'))?.trim(),
    stillWaiting: (await patient.page.getAttribute('.call-state', 'data-state')) === 'lobby',
    patientMediaWhileWaiting: await receivedSoFar(patient.page),
    doctorWaitingList: {
      name: (await patientRow.locator('.waiting-name').textContent())?.trim(),
      since: (await patientRow.locator('.waiting-since').textContent())?.trim(),
    },
  };
  await patient.page.screenshot({ path: join(ARTIFACTS, 'patient-lobby.png') });
  await doctor.page.screenshot({ path: join(ARTIFACTS, 'doctor-waiting-list.png') });

  step('the doctor admits the patient');
  const admitAt = Date.now();
  await patientRow.locator('.btn-admit').click();
  await patientRow.waitFor({ state: 'detached' });
  await patient.page.locator('.call-state[data-state="connected"]').waitFor();
  await doctor.page.locator('.call-state[data-state="connected"]').waitFor();
  result.admission.connectedAfterMs = Date.now() - admitAt;
  result.admission.patientViews = await viewsSince(patient.page);
  result.admission.doctorViews = await viewsSince(doctor.page);

  step('both remote videos play');
  await patient.page.locator('.call-state[data-state="connected"]').waitFor();
  await doctor.page.locator('.call-state[data-state="connected"]').waitFor();
  result.patientVideo = await remoteVideoPlays(patient.page);
  result.doctorVideo = await remoteVideoPlays(doctor.page);

  step('getStats on both sides');
  result.doctorStats = await mediaStats(doctor.page);
  result.patientStats = await mediaStats(patient.page);

  step('server metrics');
  const metrics = await (await fetch(`${HTTP}/metrics`)).text();
  const metric = (name) => {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(metrics);
    return m ? Number(m[1]) : null;
  };
  result.metrics = {
    peerConnections: metric('relais_peer_connections'),
    tracks: metric('relais_tracks'),
    rtpPacketsForwarded: metric('relais_rtp_packets_forwarded_total'),
  };

  step('the doctor shares the screen: the patient sees it beside the camera');
  const screenSelector = 'video.remote-video[data-stream-id="medecin-79.2"]';
  await doctor.page.click('#btn-screen');
  await doctor.page.locator('#btn-screen[aria-pressed="true"]').waitFor();
  await patient.page.waitForFunction(
    (sel) => {
      const v = document.querySelector(sel);
      return !!v && v.videoWidth > 0 && v.currentTime > 0;
    },
    screenSelector,
    { timeout: STEP_MS },
  );
  const screenFirst = await patient.page.evaluate((sel) => {
    const v = document.querySelector(sel);
    return {
      width: v.videoWidth,
      height: v.videoHeight,
      t: v.currentTime,
      label: v.closest('figure')?.querySelector('figcaption')?.textContent ?? null,
    };
  }, screenSelector);
  await patient.page.waitForTimeout(1_500);
  const screenT2 = await patient.page.evaluate((sel) => document.querySelector(sel).currentTime, screenSelector);
  const cameraDuring = await patient.page.evaluate(() => {
    const v = document.querySelector('video.remote-video[data-stream-id="medecin-79"]');
    return v ? { width: v.videoWidth, t: v.currentTime } : null;
  });
  await patient.page.screenshot({ path: join(ARTIFACTS, 'patient-screen-share.png') });
  step('the doctor stops sharing: the screen leaves the patient\'s page');
  await doctor.page.click('#btn-screen');
  await patient.page.waitForFunction((sel) => !document.querySelector(sel), screenSelector, { timeout: STEP_MS });
  result.screenShare = {
    width: screenFirst.width,
    height: screenFirst.height,
    label: screenFirst.label,
    currentTimeDelta: screenT2 - screenFirst.t,
    cameraDuring,
    removed: true,
    doctorButtonAfter: await doctor.page.textContent('#btn-screen'),
  };

  step('the patient types; the doctor sees it typing, then the message');
  const text = `Bonjour docteur, je vous vois bien (${Date.now()})`;
  const input = patient.page.locator('.messaging-widget .chat-input');
  await input.waitFor();
  await input.pressSequentially('Bonjour', { delay: 20 });
  await doctor.page.waitForFunction(() =>
    (document.querySelector('.chat .typing-indicator')?.textContent ?? '').includes('écrit'),
  );
  result.typingSeen = true;
  await input.fill(text);
  await input.press('Enter');
  await doctor.page.locator('.chat .chat-message.theirs', { hasText: text }).waitFor();
  result.chatMessageSeen = true;
  // The doctor's screen showed it as a message of the patient.
  result.chatSender = await doctor.page
    .locator('.chat .chat-message.theirs', { hasText: text })
    .getAttribute('data-sender');

  step('screenshots');
  await doctor.page.screenshot({ path: join(ARTIFACTS, 'doctor.png') });
  await patient.page.screenshot({ path: join(ARTIFACTS, 'patient.png') });
  result.screenshots = [join(ARTIFACTS, 'doctor.png'), join(ARTIFACTS, 'patient.png')];

  if (CUT_MEDIA) {
    step('media path cut: both sides reconnect');
    const before = { doctor: await pcCount(doctor.page), patient: await pcCount(patient.page) };
    const viewsFrom = { doctor: await viewCount(doctor.page), patient: await viewCount(patient.page) };
    cutMedia();
    const cutAt = Date.now();
    await Promise.all(
      [doctor.page, patient.page].map((p) =>
        p.locator('.call-state[data-state="reconnecting"]').waitFor({ timeout: STEP_MS }),
      ),
    );
    result.reconnect = { sawReconnecting: true, noticedAfterMs: Date.now() - cutAt };
    await patient.page.screenshot({ path: join(ARTIFACTS, 'patient-reconnecting.png') });
    // Past the server's ICE failure timeout, so that the connections are really rebuilt.
    const rest = CUT_MS - (Date.now() - cutAt);
    if (rest > 0) await patient.page.waitForTimeout(rest);
    restoreMedia();
    const restoredAt = Date.now();
    step('media path back: both sides connected again');
    await Promise.all(
      [doctor.page, patient.page].map((p) =>
        p.locator('.call-state[data-state="connected"]').waitFor({ timeout: 60_000 }),
      ),
    );
    result.reconnect.recoveredAfterMs = Date.now() - restoredAt;
    result.reconnect.patientVideo = await remoteVideoPlays(patient.page);
    result.reconnect.doctorVideo = await remoteVideoPlays(doctor.page);
    result.reconnect.peerConnections = {
      doctorBefore: before.doctor,
      doctorAfter: await pcCount(doctor.page),
      patientBefore: before.patient,
      patientAfter: await pcCount(patient.page),
    };
    result.reconnect.patientStats = await mediaStats(patient.page);
    // The patient took part: back without the waiting room.
    result.reconnect.patientViews = await viewsSince(patient.page, viewsFrom.patient);
    result.reconnect.doctorViews = await viewsSince(doctor.page, viewsFrom.doctor);
    await patient.page.screenshot({ path: join(ARTIFACTS, 'patient-reconnected.png') });
  }

  if (RESTART_DIR) {
    step('relais killed (SIGKILL) mid-call and started again: both sides come back by themselves');
    const since = { doctor: await pcCount(doctor.page), patient: await pcCount(patient.page) };
    const viewsFrom = { doctor: await viewCount(doctor.page), patient: await viewCount(patient.page) };
    // A message the server acknowledged just before it died must survive it.
    const lastWords = `Juste avant la coupure (${Date.now()})`;
    await input.fill(lastWords);
    await input.press('Enter');
    await doctor.page.locator('.chat .chat-message.theirs', { hasText: lastWords }).waitFor();
    writeFileSync(join(RESTART_DIR, 'kill'), '');
    const killAt = Date.now();
    const waitUntil = Date.now() + 60_000;
    while (!existsSync(join(RESTART_DIR, 'restarted'))) {
      if (Date.now() > waitUntil) throw new Error('relais was not started again within 60 s');
      await patient.page.waitForTimeout(100);
    }
    result.restart = { serverListeningAfterMs: Date.now() - killAt };
    const [doctorBack, patientBack] = await Promise.all([
      videoBackAfter(doctor.page, since.doctor, killAt),
      videoBackAfter(patient.page, since.patient, killAt),
    ]);
    result.restart.videoBackMs = { doctor: doctorBack, patient: patientBack };
    await Promise.all(
      [doctor.page, patient.page].map((p) =>
        p.locator('.call-state[data-state="connected"]').waitFor({ timeout: 60_000 }),
      ),
    );
    result.restart.patientVideo = await remoteVideoPlays(patient.page);
    result.restart.doctorVideo = await remoteVideoPlays(doctor.page);
    result.restart.patientStats = await mediaStats(patient.page);
    result.restart.doctorStats = await mediaStats(doctor.page);
    result.restart.peerConnections = {
      doctorBefore: since.doctor,
      doctorAfter: await pcCount(doctor.page),
      patientBefore: since.patient,
      patientAfter: await pcCount(patient.page),
    };
    // The message is still stored, and the chat works again.
    result.restart.stored = await doctor.page.evaluate(
      async ([id, text]) => {
        const auth = JSON.parse(sessionStorage.getItem('relais.auth') ?? '{}');
        const r = await fetch(`/api/messaging/conversations/${id}/messages`, {
          headers: { Authorization: `Bearer ${auth.token}` },
        });
        return { status: r.status, lastWords: (await r.text()).includes(text) };
      },
      [result.conversationId, lastWords],
    );
    const after = `Après le redémarrage (${Date.now()})`;
    await input.fill(after);
    await input.press('Enter');
    await doctor.page.locator('.chat .chat-message.theirs', { hasText: after }).waitFor({ timeout: 60_000 });
    result.restart.chatAfter = true;
    // Everything the pages showed from the kill until now: the patient, admitted before the
    // kill, rejoined the new server without waiting (no waiting screen, not in the doctor's
    // waiting list).
    result.restart.patientViews = await viewsSince(patient.page, viewsFrom.patient);
    result.restart.doctorViews = await viewsSince(doctor.page, viewsFrom.doctor);
    await patient.page.screenshot({ path: join(ARTIFACTS, 'patient-after-restart.png') });
  }

  step('mute and camera off');
  await patient.page.click('#btn-mute');
  await patient.page.click('#btn-camera');
  result.controls = await patient.page.evaluate(() => ({
    mute: document.querySelector('#btn-mute')?.getAttribute('aria-pressed'),
    camera: document.querySelector('#btn-camera')?.getAttribute('aria-pressed'),
  }));

  step('the doctor ends the consultation');
  await doctor.page.click('#btn-hangup');
  await patient.page.locator('.call-state[data-state="ended"]').waitFor();
  await doctor.page.locator('.call-state[data-state="ended"]').waitFor();
  result.endedForPatient = (await patient.page.textContent('.call-ended'))?.trim();
  await patient.page.screenshot({ path: join(ARTIFACTS, 'patient-ended.png') });

  step('done');
  result.ok = true;
  await browser.close();
  finish(0);
} catch (e) {
  result.error = String(e?.stack ?? e);
  // What each page showed, change by change (RECORD_VIEWS), to tell what went wrong.
  try {
    result.viewsAtFailure = [];
    for (const ctx of browser?.contexts() ?? []) {
      for (const p of ctx.pages()) result.viewsAtFailure.push(await viewsSince(p).catch(() => null));
    }
  } catch {
    /* best effort */
  }
  try {
    for (const [i, ctx] of (browser?.contexts() ?? []).entries()) {
      for (const [j, p] of ctx.pages().entries()) {
        await p.screenshot({ path: join(ARTIFACTS, `failure-${i}-${j}.png`) }).catch(() => undefined);
      }
    }
    await browser?.close();
  } catch {
    /* best effort */
  }
  finish(1);
}

// End-to-end, issue 21: the waiting room, a guest by its link, removal and audio-only, in
// Debian's chromium (fake camera and microphone), media through the relais SFU. Run by
// tests/browser.rs inside a network namespace whose only interface is `lo`, next to a relais
// started there; prints one JSON line (the last line of stdout) that the Rust test asserts.
//
// The story: the patient opens the link and waits (*Le médecin va vous recevoir*); the doctor
// sees them in the waiting room and admits them; the call starts (video decoded both ways). The
// doctor invites a guest; the guest opens its link in a third browser context (no sign-in),
// waits, is admitted; the three see each other (each page decodes the other two). The doctor
// removes the guest: the guest's page says so, the others' tiles of the guest go. The patient
// switches to audio only: the doctor's page says *Audio seulement* on the patient's tile, the
// doctor decodes no more video from the patient while the patient's audio keeps coming (and
// the patient no longer decodes the doctor's video); back to video, the frames come again.
//
// Environment: HTTP_BASE, HTTPS_BASE, ARTIFACTS, CHROMIUM, E2E_TIMEOUT_MS (as consultation.mjs).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const HTTP = process.env.HTTP_BASE ?? 'http://127.0.0.1:3000';
const ARTIFACTS = process.env.ARTIFACTS ?? 'artifacts';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const TOTAL_MS = Number(process.env.E2E_TIMEOUT_MS ?? '180000');
const STEP_MS = 30_000;

mkdirSync(ARTIFACTS, { recursive: true });
const consoleLog = [];
const result = { ok: false, step: 'start', timings: {} };
const started = Date.now();
let browser;

function finish(code) {
  result.elapsedMs = Date.now() - started;
  try {
    writeFileSync(join(ARTIFACTS, 'browser-console.log'), consoleLog.join('\n') + '\n');
  } catch {
    /* best effort */
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(code);
}

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

async function newPage(name) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, // the server's generated, self-signed certificate
    viewport: { width: 1280, height: 900 },
    locale: 'fr-FR',
  });
  await context.addInitScript(RECORD_PCS);
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

/**
 * Per remote stream (msid), what the page's open PeerConnections received: video frames
 * decoded, audio bytes and samples. Sections are told apart by their mid, named by the msid
 * the server's description gives them.
 */
function receivedByStream(page) {
  return page.evaluate(async () => {
    const out = {};
    for (const pc of window.__pcs ?? []) {
      if (pc.connectionState === 'closed') continue;
      const streamOfMid = new Map();
      const kindOfMid = new Map();
      let mid = null;
      for (const line of (pc.remoteDescription?.sdp ?? '').split(/\r?\n/)) {
        if (line.startsWith('m=')) mid = null;
        const m = /^a=mid:(\S+)/.exec(line);
        if (m) mid = m[1];
        const s = /^a=msid:(\S+)/.exec(line);
        if (s && mid !== null && s[1] !== '-') streamOfMid.set(mid, s[1]);
      }
      const stats = await pc.getStats();
      stats.forEach((r) => {
        if (r.type !== 'inbound-rtp') return;
        let stream = r.mid !== undefined ? streamOfMid.get(r.mid) : undefined;
        if (!stream) {
          const t = pc.getTransceivers().find((x) => x.receiver.track?.id === r.trackIdentifier);
          stream = t?.mid ? streamOfMid.get(t.mid) : undefined;
        }
        stream = stream ?? `mid-${r.mid ?? '?'}`;
        kindOfMid.set(r.mid, r.kind);
        const e = (out[stream] ??= { framesDecoded: 0, videoBytes: 0, audioBytes: 0, audioSamples: 0 });
        if (r.kind === 'video') {
          e.framesDecoded += r.framesDecoded ?? 0;
          e.videoBytes += r.bytesReceived ?? 0;
        } else {
          e.audioBytes += r.bytesReceived ?? 0;
          e.audioSamples += r.totalSamplesReceived ?? 0;
        }
      });
    }
    return out;
  });
}

/** What grew in `ms`: per stream, the difference of {@link receivedByStream}. */
async function receivedDuring(page, ms) {
  const a = await receivedByStream(page);
  await page.waitForTimeout(ms);
  const b = await receivedByStream(page);
  const out = {};
  for (const [k, v] of Object.entries(b)) {
    const p = a[k] ?? { framesDecoded: 0, videoBytes: 0, audioBytes: 0, audioSamples: 0 };
    out[k] = {
      framesDecoded: v.framesDecoded - p.framesDecoded,
      videoBytes: v.videoBytes - p.videoBytes,
      audioBytes: v.audioBytes - p.audioBytes,
      audioSamples: v.audioSamples - p.audioSamples,
    };
  }
  return out;
}

/** Waits until the page decodes video from each of `streams` (frames growing). */
async function decodesFrom(page, streams, label) {
  const deadline = Date.now() + STEP_MS;
  let last = null;
  while (Date.now() < deadline) {
    last = await receivedDuring(page, 1_000);
    if (streams.every((s) => (last[s]?.framesDecoded ?? 0) > 0)) return last;
  }
  throw new Error(`${label}: no video decoded from ${streams.join(', ')} in time: ${JSON.stringify(last)}`);
}

/** The remote video elements the page shows: stream, size, time advancing. */
async function remoteTiles(page) {
  const first = await page.evaluate(() =>
    [...document.querySelectorAll('video.remote-video')].map((v) => ({
      stream: v.dataset.streamId,
      width: v.videoWidth,
      t: v.currentTime,
      label: v.closest('figure')?.querySelector('figcaption')?.textContent ?? null,
    })),
  );
  await page.waitForTimeout(1_000);
  const second = await page.evaluate(() =>
    Object.fromEntries([...document.querySelectorAll('video.remote-video')].map((v) => [v.dataset.streamId, v.currentTime])),
  );
  return first.map((f) => ({ ...f, currentTimeDelta: (second[f.stream] ?? f.t) - f.t }));
}

async function waitTiles(page, wanted) {
  await page.waitForFunction(
    (wanted) => {
      const vs = [...document.querySelectorAll('video.remote-video')];
      return wanted.every((w) => vs.some((v) => v.dataset.streamId === w && v.videoWidth > 0 && v.currentTime > 0));
    },
    wanted,
    { timeout: STEP_MS },
  );
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
      // Three pages decode video at once in a headless browser: keep the background ones going.
      '--disable-background-timer-throttling',
      '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows',
    ],
  });
  result.browserVersion = browser.version();

  // ---- the doctor -------------------------------------------------------------------------
  step('doctor signs in and starts the consultation');
  const doctor = await newPage('doctor');
  await doctor.page.goto(`${HTTP}/`);
  await signIn(doctor.page, 'medecin', 79, 'Dr. Martin');
  await doctor.page.waitForURL(/\/doctor$/);
  await doctor.page.fill('#new-conversation-patient', '11');
  await doctor.page.click('#btn-new-conversation');
  await doctor.page.locator('.chat[data-conversation-id]').waitFor();
  await doctor.page.click('#btn-start-consultation');
  await doctor.page.waitForFunction(() => document.querySelector('#conference-link')?.value?.includes('/conference/'));
  const link = await doctor.page.inputValue('#conference-link');
  result.conferenceLink = link;
  await doctor.page.locator('.call-state[data-state="waiting"]').waitFor();
  result.waitingRoomSetting = await doctor.page.locator('#waiting-room-enabled').isChecked();

  // ---- the patient waits ------------------------------------------------------------------
  step('patient opens the link and waits');
  const patient = await newPage('patient');
  await patient.page.goto(link);
  await signIn(patient.page, 'patient', 11, 'Jean Dupont');
  await patient.page.locator('.call-state[data-state="lobby"]').waitFor();
  await patient.page.locator('.lobby .lobby-since').waitFor();
  result.patientLobby = {
    text: (await patient.page.textContent('.lobby .lobby-title'))?.trim(),
    since: (await patient.page.textContent('.lobby .lobby-since'))?.trim(),
    preview: await patient.page.evaluate(() => {
      const v = document.querySelector('video.local-video');
      return { width: v?.videoWidth ?? 0 };
    }),
  };

  step('the doctor sees who waits');
  const patientRow = doctor.page.locator('.waiting-list [data-user="patient-11"]');
  await patientRow.waitFor();
  // Two seconds in the waiting room: nothing reaches the patient meanwhile.
  await patient.page.waitForTimeout(2_000);
  result.patientLobby.stillWaiting = (await patient.page.getAttribute('.call-state', 'data-state')) === 'lobby';
  result.patientLobby.mediaWhileWaiting = await receivedByStream(patient.page);
  result.doctorWaitingList = {
    name: (await patientRow.locator('.waiting-name').textContent())?.trim(),
    since: (await patientRow.locator('.waiting-since').textContent())?.trim(),
  };
  await doctor.page.screenshot({ path: join(ARTIFACTS, 'doctor-waiting-list.png') });
  await patient.page.screenshot({ path: join(ARTIFACTS, 'patient-lobby.png') });

  step('the doctor admits the patient: the call starts');
  await patientRow.locator('.btn-admit').click();
  await patientRow.waitFor({ state: 'detached' });
  await patient.page.locator('.call-state[data-state="connected"]').waitFor();
  await doctor.page.locator('.call-state[data-state="connected"]').waitFor();
  await waitTiles(patient.page, ['medecin-79']);
  await waitTiles(doctor.page, ['patient-11']);
  result.twoWay = {
    patient: await decodesFrom(patient.page, ['medecin-79'], 'patient'),
    doctor: await decodesFrom(doctor.page, ['patient-11'], 'doctor'),
  };

  // ---- a guest ----------------------------------------------------------------------------
  step('the doctor invites a guest');
  await doctor.page.click('#btn-invite-guest');
  await doctor.page.fill('#guest-name', 'Interprète');
  await doctor.page.selectOption('#guest-validity', '60');
  await doctor.page.click('#btn-create-guest');
  const guestUrl = await doctor.page.locator('.guest-link-url').first().inputValue();
  result.guestUrl = guestUrl;

  step('the guest opens its link (no sign-in) and waits');
  const guest = await newPage('guest');
  await guest.page.goto(guestUrl);
  await guest.page.locator('.call-state[data-state="lobby"]').waitFor();
  result.guestLobby = {
    text: (await guest.page.textContent('.lobby .lobby-title'))?.trim(),
    banner: (await guest.page.textContent('#guest-name-banner'))?.trim(),
    signInShown: (await guest.page.locator('#signin-role').count()) > 0,
    messagingShown: (await guest.page.locator('.messaging-widget, .chat').count()) > 0,
  };
  const guestRow = doctor.page.locator('.waiting-list [data-user^="invite-"]');
  await guestRow.waitFor();
  const guestKey = await guestRow.getAttribute('data-user');
  result.guestKey = guestKey;
  result.doctorSawGuestWaiting = (await guestRow.locator('.waiting-name').textContent())?.trim();

  step('the doctor admits the guest: the three see each other');
  await guestRow.locator('.btn-admit').click();
  await guest.page.locator('.call-state[data-state="connected"]').waitFor();
  await waitTiles(guest.page, ['medecin-79', 'patient-11']);
  await waitTiles(doctor.page, ['patient-11', guestKey]);
  await waitTiles(patient.page, ['medecin-79', guestKey]);
  result.threeWay = {
    doctor: await decodesFrom(doctor.page, ['patient-11', guestKey], 'doctor'),
    patient: await decodesFrom(patient.page, ['medecin-79', guestKey], 'patient'),
    guest: await decodesFrom(guest.page, ['medecin-79', 'patient-11'], 'guest'),
  };
  result.threeWayTiles = {
    doctor: await remoteTiles(doctor.page),
    patient: await remoteTiles(patient.page),
    guest: await remoteTiles(guest.page),
  };
  result.guestMessagingAfterJoin = (await guest.page.locator('.messaging-widget, .chat').count()) > 0;
  await doctor.page.screenshot({ path: join(ARTIFACTS, 'doctor-three.png') });
  await guest.page.screenshot({ path: join(ARTIFACTS, 'guest-three.png') });

  // ---- removal ----------------------------------------------------------------------------
  step('the doctor removes the guest');
  await doctor.page.locator(`.participant-list [data-user="${guestKey}"] .btn-remove`).click();
  await guest.page.locator('.call-ended[data-reason="removed"]').waitFor();
  result.guestRemoved = (await guest.page.textContent('.call-ended'))?.trim();
  const tileGone = (page) =>
    page.waitForFunction((k) => !document.querySelector(`video.remote-video[data-stream-id="${k}"]`), guestKey, {
      timeout: STEP_MS,
    });
  await Promise.all([tileGone(doctor.page), tileGone(patient.page)]);
  result.tilesAfterRemoval = {
    doctor: await doctor.page.evaluate(() => [...document.querySelectorAll('video.remote-video')].map((v) => v.dataset.streamId)),
    patient: await patient.page.evaluate(() => [...document.querySelectorAll('video.remote-video')].map((v) => v.dataset.streamId)),
  };
  result.guestMediaStopped = await guest.page.evaluate(() =>
    (window.__pcs ?? []).every((pc) => pc.connectionState === 'closed'),
  );
  await guest.page.screenshot({ path: join(ARTIFACTS, 'guest-removed.png') });

  step('the removed guest reloads its page: still refused');
  await guest.page.reload();
  await guest.page.waitForSelector('.call-ended[data-reason="removed"], .call-error', { timeout: STEP_MS });
  result.guestAfterReload = await guest.page.evaluate(() => ({
    ended: document.querySelector('.call-ended')?.getAttribute('data-reason') ?? null,
    error: document.querySelector('.call-error')?.getAttribute('data-code') ?? null,
    text: (document.querySelector('.call-ended, .call-error')?.textContent ?? '').trim(),
  }));
  await guest.context.close();

  // ---- audio only -------------------------------------------------------------------------
  step('the patient switches to audio only');
  result.beforeAudioOnly = await decodesFrom(doctor.page, ['patient-11'], 'doctor before audio only');
  await patient.page.click('#btn-audio-only');
  await patient.page.selectOption('#audio-only-reason', 'connexion insuffisante');
  await patient.page.click('#btn-audio-only-confirm');
  await patient.page.locator('#btn-audio-only[aria-pressed="true"]').waitFor();
  await doctor.page
    .locator('figure[data-stream-id="patient-11"] .video-badge', { hasText: 'Audio seulement' })
    .waitFor();
  result.doctorShowsAudioOnly = (
    await doctor.page.textContent('figure[data-stream-id="patient-11"] .video-badge')
  )?.trim();
  // The renegotiation settles, then 3 s are counted.
  await doctor.page.waitForTimeout(2_000);
  result.audioOnly = {
    doctor: await receivedDuring(doctor.page, 3_000),
    patient: await receivedDuring(patient.page, 3_000),
    doctorSdp: await doctor.page.evaluate(() => {
      const pcs = (window.__pcs ?? []).filter((pc) => pc.connectionState !== 'closed');
      const pc = pcs[pcs.length - 1];
      // The server's sections carrying the patient: kind and direction.
      const out = [];
      let cur = null;
      for (const line of (pc?.remoteDescription?.sdp ?? '').split(/\r?\n/)) {
        if (line.startsWith('m=')) {
          cur = { kind: line.slice(2).split(' ')[0], direction: 'sendrecv', stream: null };
          out.push(cur);
        }
        const d = /^a=(sendrecv|sendonly|recvonly|inactive)$/.exec(line);
        if (d && cur) cur.direction = d[1];
        const s = /^a=msid:(\S+)/.exec(line);
        if (s && cur) cur.stream = s[1];
      }
      return out;
    }),
    patientSenders: await patient.page.evaluate(() => {
      const pcs = (window.__pcs ?? []).filter((pc) => pc.connectionState !== 'closed');
      const pc = pcs[pcs.length - 1];
      return (pc?.getTransceivers() ?? [])
        .filter((t) => t.receiver.track?.kind === 'video')
        .map((t) => ({ mid: t.mid, direction: t.direction, currentDirection: t.currentDirection, track: !!t.sender.track }));
    }),
  };
  await doctor.page.screenshot({ path: join(ARTIFACTS, 'doctor-audio-only.png') });

  step('the patient comes back to video');
  await patient.page.click('#btn-audio-only');
  await patient.page.locator('#btn-audio-only[aria-pressed="false"]').waitFor();
  await doctor.page.waitForFunction(
    () => !document.querySelector('figure[data-stream-id="patient-11"] .video-badge'),
    null,
    { timeout: STEP_MS },
  );
  result.backToVideo = {
    doctor: await decodesFrom(doctor.page, ['patient-11'], 'doctor after audio only'),
    patient: await decodesFrom(patient.page, ['medecin-79'], 'patient after audio only'),
  };

  step('the doctor ends the consultation');
  await doctor.page.click('#btn-hangup');
  await patient.page.locator('.call-state[data-state="ended"]').waitFor();

  step('done');
  result.ok = true;
  await browser.close();
  finish(0);
} catch (e) {
  result.error = String(e?.stack ?? e);
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

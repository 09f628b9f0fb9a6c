// A call on a patient's poor link (issue 17), in Chromium: what the receiving browser sees.
// Run by tests/browser.rs (`shaped_call`): node and the doctor's chromium in the server's
// namespace (the doctor's page over loopback, unconstrained), the patient's chromium in a
// namespace of its own (PATIENT_CHROMIUM, a wrapper that enters it) whose downlink from the
// server the Rust side shapes. The doctor's camera is a y4m clip (DOCTOR_VIDEO_FILE), asked for
// at 1280x720 30 fps; the web client itself asks for `ideal` 640x480, which Chromium would
// honour by scaling the clip down, so the doctor's page asks for 720p instead (CAMERA_720P=0
// keeps what the client asks).
//
// Once the patient's call is connected (t = 0), both pages are read with getStats every second
// until CALL_MS; the patient's page also watches the remote video's decoded-frame count every
// 20 ms for the longest gap between two frames. The samples are printed raw (one JSON line, the
// last line of stdout); the Rust side computes the figures over its window.
//
// Environment: DOCTOR_BASE (the doctor's origin, http://127.0.0.1:3000), CHROMIUM (the
// doctor's), PATIENT_CHROMIUM, DOCTOR_VIDEO_FILE, CAMERA_720P, CALL_MS (45000), WINDOW_FROM_MS
// (15000: where the longest-gap watch starts), ARTIFACTS, E2E_TIMEOUT_MS.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const DOCTOR_BASE = process.env.DOCTOR_BASE ?? 'http://127.0.0.1:3000';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const PATIENT_CHROMIUM = process.env.PATIENT_CHROMIUM ?? CHROMIUM;
const DOCTOR_VIDEO_FILE = process.env.DOCTOR_VIDEO_FILE ?? '';
const CAMERA_720P = process.env.CAMERA_720P !== '0';
const CALL_MS = Number(process.env.CALL_MS ?? '45000');
const WINDOW_FROM_MS = Number(process.env.WINDOW_FROM_MS ?? '15000');
const ARTIFACTS = process.env.ARTIFACTS ?? 'artifacts';
const TOTAL_MS = Number(process.env.E2E_TIMEOUT_MS ?? '150000');
const STEP_MS = 30_000;

mkdirSync(ARTIFACTS, { recursive: true });
const consoleLog = [];
const result = { ok: false, step: 'start', timings: {} };
const started = Date.now();
const browsers = [];

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
  for (const b of browsers) b.close().catch(() => undefined);
  setTimeout(() => finish(1), 2_000).unref();
}, TOTAL_MS);
watchdog.unref();

function step(name) {
  result.step = name;
  result.timings[name] = Date.now() - started;
  process.stderr.write(`[e2e shaped] ${name}\n`);
}

// Every PeerConnection the page creates; for the doctor, the camera asked for at 720p30.
const INIT = (camera720p) => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
    }
  };
  if (camera720p && navigator.mediaDevices?.getUserMedia) {
    const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = (c) =>
      original(
        c && c.video
          ? { ...c, video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } } }
          : c,
      );
  }
};

async function launch(executablePath, extra) {
  const b = await chromium.launch({
    executablePath,
    headless: true,
    timeout: 60_000,
    args: [
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--no-first-run',
      '--disable-gpu',
      // Both pages stay "visible": no timer throttling of the headless pages.
      '--disable-background-timer-throttling',
      '--disable-renderer-backgrounding',
      ...extra,
    ],
  });
  browsers.push(b);
  return b;
}

async function newPage(browser, name, camera720p) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 860 },
    locale: 'fr-FR',
  });
  await context.addInitScript(INIT, camera720p);
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

/** One reading of the page's open PeerConnections: the cumulative counters the figures need. */
const SAMPLE = async () => {
  const out = {
    t: performance.now(),
    video: null,
    audio: null,
    rttMs: null,
    availableOutgoingBitrate: null,
    sentVideo: null,
  };
  for (const pc of (window.__pcs ?? []).filter((p) => p.connectionState !== 'closed')) {
    const stats = await pc.getStats();
    const byId = new Map();
    let pairId = null;
    stats.forEach((s) => {
      byId.set(s.id, s);
      if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    stats.forEach((s) => {
      // The camera: the video stream with the most frames (a screen share would be another).
      if (s.type === 'inbound-rtp' && s.kind === 'video' && (s.framesDecoded ?? 0) >= (out.video?.framesDecoded ?? 0)) {
        out.video = {
          framesDecoded: s.framesDecoded ?? 0,
          framesPerSecond: s.framesPerSecond ?? null,
          frameHeight: s.frameHeight ?? null,
          frameWidth: s.frameWidth ?? null,
          freezeCount: s.freezeCount ?? 0,
          totalFreezesDuration: s.totalFreezesDuration ?? 0,
          packetsLost: s.packetsLost ?? 0,
          packetsReceived: s.packetsReceived ?? 0,
          bytesReceived: s.bytesReceived ?? 0,
          nackCount: s.nackCount ?? 0,
          pliCount: s.pliCount ?? 0,
          keyFramesDecoded: s.keyFramesDecoded ?? 0,
        };
      }
      if (s.type === 'inbound-rtp' && s.kind === 'audio' && (s.totalSamplesReceived ?? 0) >= (out.audio?.totalSamplesReceived ?? 0)) {
        out.audio = {
          concealedSamples: s.concealedSamples ?? 0,
          totalSamplesReceived: s.totalSamplesReceived ?? 0,
          packetsLost: s.packetsLost ?? 0,
          packetsReceived: s.packetsReceived ?? 0,
          jitterBufferDelay: s.jitterBufferDelay ?? 0,
          jitterBufferEmittedCount: s.jitterBufferEmittedCount ?? 0,
        };
      }
      if (s.type === 'outbound-rtp' && s.kind === 'video' && (s.bytesSent ?? 0) >= (out.sentVideo?.bytesSent ?? 0)) {
        out.sentVideo = {
          bytesSent: s.bytesSent ?? 0,
          frameHeight: s.frameHeight ?? null,
          framesPerSecond: s.framesPerSecond ?? null,
          qualityLimitationReason: s.qualityLimitationReason ?? null,
          targetBitrate: s.targetBitrate ?? null,
        };
      }
    });
    const pair = pairId ? byId.get(pairId) : null;
    if (pair) {
      if (typeof pair.currentRoundTripTime === 'number') out.rttMs = pair.currentRoundTripTime * 1000;
      if (typeof pair.availableOutgoingBitrate === 'number') out.availableOutgoingBitrate = pair.availableOutgoingBitrate;
    }
  }
  return out;
};

/** The longest gap between two decoded frames of the remote video, from `fromMs` on (20 ms). */
const WATCH_FRAMES = (fromMs) => {
  const t0 = performance.now();
  window.__gaps = { longestMs: 0, frames: 0, since: null };
  let last = null;
  let lastChange = null;
  setInterval(() => {
    const v = document.querySelector('video.remote-video');
    if (!v) return;
    const n = v.webkitDecodedFrameCount ?? 0;
    const now = performance.now();
    if (now - t0 < fromMs) {
      last = n;
      lastChange = now;
      return;
    }
    if (window.__gaps.since === null) window.__gaps.since = now - t0;
    if (n !== last) {
      window.__gaps.frames += 1;
      last = n;
      lastChange = now;
    }
    window.__gaps.longestMs = Math.max(window.__gaps.longestMs, now - lastChange);
  }, 20);
};

try {
  step("launch the doctor's chromium (720p clip as camera) and the patient's (shaped namespace)");
  const doctorArgs = DOCTOR_VIDEO_FILE ? [`--use-file-for-fake-video-capture=${DOCTOR_VIDEO_FILE}`] : [];
  const doctorBrowser = await launch(CHROMIUM, doctorArgs);
  const patientBrowser = await launch(PATIENT_CHROMIUM, []);
  result.browserVersion = doctorBrowser.version();

  step('doctor signs in');
  const doctor = await newPage(doctorBrowser, 'doctor', CAMERA_720P);
  await doctor.page.goto(`${DOCTOR_BASE}/`);
  await signIn(doctor.page, 'medecin', 79, 'Dr. Martin');
  await doctor.page.waitForURL(/\/doctor$/);

  step('doctor opens a conversation with patient 11 and starts the consultation');
  await doctor.page.fill('#new-conversation-patient', '11');
  await doctor.page.click('#btn-new-conversation');
  await doctor.page.locator('.chat[data-conversation-id]').waitFor();
  await doctor.page.click('#btn-start-consultation');
  await doctor.page.waitForFunction(() => document.querySelector('#conference-link')?.value?.includes('/conference/'));
  const link = await doctor.page.inputValue('#conference-link');
  result.conferenceLink = link;
  await doctor.page.locator('.call-state[data-state="waiting"]').waitFor();

  step('patient opens the link over its link and signs in');
  const patient = await newPage(patientBrowser, 'patient', false);
  await patient.page.goto(link, { timeout: 60_000 });
  await signIn(patient.page, 'patient', 11, 'Jean Dupont');

  step('both sides connected');
  await patient.page.locator('.call-state[data-state="connected"]').waitFor({ timeout: 60_000 });
  const callStart = Date.now();
  result.timings.callStart = callStart - started;
  await patient.page.evaluate(WATCH_FRAMES, WINDOW_FROM_MS);
  await doctor.page.locator('.call-state[data-state="connected"]').waitFor({ timeout: 60_000 });

  step(`the call, read every second for ${CALL_MS} ms`);
  result.samples = [];
  for (let i = 0; ; i += 1) {
    const due = callStart + i * 1000;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const at = Date.now() - callStart;
    const [p, d] = await Promise.all([patient.page.evaluate(SAMPLE), doctor.page.evaluate(SAMPLE)]);
    result.samples.push({ atMs: at, patient: p, doctor: d });
    if (at >= CALL_MS) break;
  }
  result.frameGaps = await patient.page.evaluate(() => window.__gaps);
  result.patientVideo = await patient.page.evaluate(() => {
    const v = document.querySelector('video.remote-video');
    return v ? { width: v.videoWidth, height: v.videoHeight, stream: v.dataset.streamId } : null;
  });
  await patient.page.screenshot({ path: join(ARTIFACTS, 'patient.png') });

  step('the doctor ends the consultation');
  await doctor.page.click('#btn-hangup');
  await patient.page.locator('.call-state[data-state="ended"]').waitFor({ timeout: 60_000 });

  step('done');
  result.ok = true;
  for (const b of browsers) await b.close();
  finish(0);
} catch (e) {
  result.error = String(e?.stack ?? e);
  try {
    for (const [i, b] of browsers.entries()) {
      for (const [j, ctx] of b.contexts().entries()) {
        for (const [k, p] of ctx.pages().entries()) {
          await p.screenshot({ path: join(ARTIFACTS, `failure-${i}-${j}-${k}.png`) }).catch(() => undefined);
        }
      }
      await b.close();
    }
  } catch {
    /* best effort */
  }
  finish(1);
}

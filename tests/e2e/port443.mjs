// A clinic that lets out only TCP to the server's address on port 443, in Chromium: the patient
// loads the web client from https://SERVER/ (the page, the API and Socket.IO over 443) and the
// call's media takes the one way left, ICE-TCP or TURN over TLS on that same port. Run by
// tests/browser.rs: node and the doctor's chromium in the server's namespace (unrestricted),
// the patient's chromium in the clinic's namespace (PATIENT_CHROMIUM, a wrapper that enters
// it). Prints one JSON line (the last line of stdout) that the Rust test asserts.
//
// Environment: DOCTOR_BASE (the doctor's origin, e.g. http://127.0.0.1:3000), METRICS_URL,
// MODE (`as-served`: the patient's PeerConnection as the web client makes it, with the ICE
// servers the server hands out; `ice-tcp`: no ICE servers, so the server's passive TCP
// candidate on 443 is its only way; `turn-tls`: iceTransportPolicy `relay` with only the
// server's `turns:…:443` URL), CHROMIUM (the doctor's), PATIENT_CHROMIUM, PATIENT_ARGS
// (extra chromium flags for the patient, space-separated), PATIENT_VERIFIES_TLS (`1`: the
// patient's page does not ignore certificate errors), ARTIFACTS, E2E_TIMEOUT_MS.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const DOCTOR_BASE = process.env.DOCTOR_BASE ?? 'http://127.0.0.1:3000';
const METRICS_URL = process.env.METRICS_URL ?? `${DOCTOR_BASE}/metrics`;
const MODE = process.env.MODE ?? 'ice-tcp';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const PATIENT_CHROMIUM = process.env.PATIENT_CHROMIUM ?? CHROMIUM;
const PATIENT_ARGS = (process.env.PATIENT_ARGS ?? '').split(' ').filter(Boolean);
// The patient's chromium trusts the server's certificate (its issuer is in the NSS database of
// the wrapper's HOME): no certificate error is ignored for its page.
const PATIENT_VERIFIES_TLS = process.env.PATIENT_VERIFIES_TLS === '1';
const ARTIFACTS = process.env.ARTIFACTS ?? 'artifacts';
const TOTAL_MS = Number(process.env.E2E_TIMEOUT_MS ?? '150000');
const STEP_MS = 30_000;

if (!['as-served', 'ice-tcp', 'turn-tls'].includes(MODE)) throw new Error(`MODE: ${MODE}`);
mkdirSync(ARTIFACTS, { recursive: true });
const consoleLog = [];
const result = { ok: false, mode: MODE, step: 'start', timings: {} };
const started = Date.now();
const browsers = [];

function finish(code) {
  result.elapsedMs = Date.now() - started;
  try {
    writeFileSync(join(ARTIFACTS, `browser-console-${MODE}.log`), consoleLog.join('\n') + '\n');
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
  process.stderr.write(`[e2e ${MODE}] ${name}\n`);
}

// Every PeerConnection the page creates. For the patient, the configuration the page asks for
// is recorded and then narrowed to what this run tests (MODE).
const RECORD_PCS = (mode) => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.__configs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(config = {}, ...rest) {
      const asked = JSON.parse(JSON.stringify(config));
      const given = { ...config };
      if (mode === 'ice-tcp') {
        given.iceServers = [];
      } else if (mode === 'turn-tls') {
        given.iceServers = (config.iceServers ?? [])
          .map((s) => {
            const urls = (Array.isArray(s.urls) ? s.urls : [s.urls]).filter((u) =>
              /^turns:[^?]+:443\?transport=tcp$/.test(u),
            );
            return { ...s, urls };
          })
          .filter((s) => s.urls.length > 0);
        given.iceTransportPolicy = 'relay';
      }
      super(given, ...rest);
      window.__configs.push({
        asked: asked.iceServers?.map((s) => s.urls) ?? [],
        given: given.iceServers?.map((s) => s.urls) ?? [],
        policy: given.iceTransportPolicy ?? 'all',
      });
      window.__pcs.push(this);
    }
  };
};

async function launch(executablePath, extra) {
  const b = await chromium.launch({
    executablePath,
    headless: true,
    timeout: 60_000,
    args: [
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      // No --allow-loopback-in-peer-connection: nobody here talks over loopback, and with it
      // chromium also gathers on `lo`, whose TURN port opens a TLS connection to the server that
      // it then leaves idle (its socket is not on the loopback network).
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--no-first-run',
      '--disable-gpu',
      ...extra,
    ],
  });
  browsers.push(b);
  return b;
}

async function newPage(browser, name, mode, ignoreHTTPSErrors) {
  const context = await browser.newContext({
    ignoreHTTPSErrors,
    viewport: { width: 1280, height: 860 },
    locale: 'fr-FR',
  });
  await context.addInitScript(RECORD_PCS, mode);
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
 * The page's last PeerConnection, read twice 3 s apart: the selected candidate pair with both
 * candidates, what arrives (video frames decoded, audio samples) and what leaves, the server
 * SDP's candidates.
 */
async function mediaStats(page) {
  return page.evaluate(async () => {
    const pcs = (window.__pcs ?? []).filter((pc) => pc.connectionState !== 'closed');
    const pc = pcs[pcs.length - 1];
    if (!pc) return { error: 'no PeerConnection' };
    const read = async () => {
      const stats = await pc.getStats();
      const byId = new Map();
      const media = {
        framesDecoded: 0,
        videoBytes: 0,
        audioBytes: 0,
        audioSamples: 0,
        audioEnergy: 0,
        bytesSent: 0,
      };
      let pairId = null;
      stats.forEach((s) => {
        byId.set(s.id, s);
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          media.framesDecoded += s.framesDecoded ?? 0;
          media.videoBytes += s.bytesReceived ?? 0;
        }
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          media.audioBytes += s.bytesReceived ?? 0;
          media.audioSamples += s.totalSamplesReceived ?? 0;
          media.audioEnergy += s.totalAudioEnergy ?? 0;
        }
        if (s.type === 'outbound-rtp') media.bytesSent += s.bytesSent ?? 0;
        if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      });
      const pair = pairId ? byId.get(pairId) : null;
      const cand = (id) => {
        const c = id ? byId.get(id) : null;
        if (!c) return null;
        return {
          candidateType: c.candidateType,
          protocol: c.protocol,
          address: c.address ?? c.ip,
          port: c.port,
          tcpType: c.tcpType ?? null,
          relayProtocol: c.relayProtocol ?? null,
          url: c.url ?? null,
        };
      };
      return {
        media,
        pair: pair
          ? {
              state: pair.state,
              nominated: pair.nominated,
              bytesSent: pair.bytesSent,
              bytesReceived: pair.bytesReceived,
              local: cand(pair.localCandidateId),
              remote: cand(pair.remoteCandidateId),
            }
          : null,
      };
    };
    const a = await read();
    await new Promise((r) => setTimeout(r, 3_000));
    const b = await read();
    const delta = {};
    for (const k of Object.keys(b.media)) delta[k] = b.media[k] - a.media[k];
    const sdpCandidates = [];
    for (const line of (pc.remoteDescription?.sdp ?? '').split(/\r?\n/)) {
      const m = /^a=candidate:\S+ \d+ (\S+) \d+ (\S+) (\d+) typ (\S+)(?:.* tcptype (\S+))?/.exec(line);
      if (m) sdpCandidates.push(`${m[1].toLowerCase()} ${m[2]}:${m[3]} ${m[4]}${m[5] ? ` ${m[5]}` : ''}`);
    }
    return {
      connectionState: pc.connectionState,
      media: b.media,
      delta,
      selectedPair: b.pair,
      remoteSdpCandidates: sdpCandidates,
      peerConnections: (window.__pcs ?? []).length,
      configs: window.__configs ?? [],
    };
  });
}

/** Every PeerConnection's ICE state, candidates and pairs (for a failure's report). */
const iceReport = async () => {
  const out = [];
  for (const pc of window.__pcs ?? []) {
    const stats = await pc.getStats();
    const c = [];
    const pairs = [];
    stats.forEach((s) => {
      if (s.type === 'local-candidate' || s.type === 'remote-candidate') {
        c.push(`${s.type} ${s.id} ${s.candidateType} ${s.protocol} ${s.address}:${s.port} ${s.tcpType ?? ''} ${s.relayProtocol ?? ''} ${s.url ?? ''}`);
      }
      if (s.type === 'candidate-pair') {
        pairs.push(`${s.localCandidateId} -> ${s.remoteCandidateId} ${s.state} nominated=${s.nominated} req=${s.requestsSent} resp=${s.responsesReceived}`);
      }
    });
    out.push({
      ice: pc.iceConnectionState,
      gathering: pc.iceGatheringState,
      connection: pc.connectionState,
      config: pc.getConfiguration(),
      candidates: c,
      pairs,
      remoteSdpCandidates: (pc.remoteDescription?.sdp ?? '').split(/\r?\n/).filter((l) => l.startsWith('a=candidate')),
    });
  }
  return out;
};

try {
  step('launch the doctor\'s chromium (server side) and the patient\'s (in the clinic)');
  const doctorBrowser = await launch(CHROMIUM, []);
  const patientBrowser = await launch(PATIENT_CHROMIUM, PATIENT_ARGS);
  result.browserVersion = doctorBrowser.version();

  step('doctor signs in');
  const doctor = await newPage(doctorBrowser, 'doctor', 'record', true);
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

  step('patient opens the link in the clinic (https, port 443) and signs in');
  const patient = await newPage(patientBrowser, 'patient', MODE, !PATIENT_VERIFIES_TLS);
  const response = await patient.page.goto(link);
  result.patientPage = {
    status: response?.status() ?? null,
    url: patient.page.url(),
    // What the page's own origin is (the web client, its API calls and Socket.IO use it).
    origin: await patient.page.evaluate(() => location.origin),
    serverAddr: response ? (await response.serverAddr()) : null,
    protocol: await patient.page.evaluate(
      () => performance.getEntriesByType('navigation')[0]?.nextHopProtocol ?? null,
    ),
  };
  await signIn(patient.page, 'patient', 11, 'Jean Dupont');

  step('both sides connected');
  await patient.page.locator('.call-state[data-state="connected"]').waitFor({ timeout: 60_000 });
  await doctor.page.locator('.call-state[data-state="connected"]').waitFor({ timeout: 60_000 });

  step('the patient decodes the doctor\'s video; the doctor the patient\'s');
  for (const p of [patient.page, doctor.page]) {
    await p.waitForFunction(
      () => {
        const v = document.querySelector('video.remote-video');
        return !!v && v.videoWidth > 0 && v.currentTime > 0;
      },
      null,
      { timeout: STEP_MS },
    );
  }
  // What the patient's page loaded, every resource, from where (performance timeline).
  result.patientResources = await patient.page.evaluate(() =>
    [location.href, ...performance.getEntriesByType('resource').map((e) => e.name)].map((u) => new URL(u).origin),
  );

  step('getStats on both sides');
  result.patientStats = await mediaStats(patient.page);
  result.doctorStats = await mediaStats(doctor.page);
  result.patientVideo = await patient.page.evaluate(() => {
    const v = document.querySelector('video.remote-video');
    return { width: v.videoWidth, height: v.videoHeight, stream: v.dataset.streamId };
  });
  result.doctorVideo = await doctor.page.evaluate(() => {
    const v = document.querySelector('video.remote-video');
    return { width: v.videoWidth, height: v.videoHeight, stream: v.dataset.streamId };
  });
  await patient.page.screenshot({ path: join(ARTIFACTS, `patient-${MODE}.png`) });
  await doctor.page.screenshot({ path: join(ARTIFACTS, `doctor-${MODE}.png`) });

  step('server metrics');
  const metrics = await (await fetch(METRICS_URL)).text();
  result.sharedPort = {};
  for (const m of metrics.matchAll(/^relais_shared_port_connections_total\{kind="([^"]+)"\} ([0-9.e+]+)$/gm)) {
    result.sharedPort[m[1]] = Number(m[2]);
  }

  step('the doctor ends the consultation');
  await doctor.page.click('#btn-hangup');
  await patient.page.locator('.call-state[data-state="ended"]').waitFor();

  step('done');
  result.ok = true;
  for (const b of browsers) await b.close();
  finish(0);
} catch (e) {
  result.error = String(e?.stack ?? e);
  // What ICE tried, on every page: the failure's explanation.
  result.ice = {};
  for (const b of browsers) {
    for (const ctx of b.contexts()) {
      for (const p of ctx.pages()) {
        const name = p.url();
        result.ice[name] = await p.evaluate(iceReport).catch((err) => String(err));
      }
    }
  }
  try {
    for (const [i, b] of browsers.entries()) {
      for (const [j, ctx] of b.contexts().entries()) {
        for (const [k, p] of ctx.pages().entries()) {
          await p.screenshot({ path: join(ARTIFACTS, `failure-${MODE}-${i}-${j}-${k}.png`) }).catch(() => undefined);
        }
      }
      await b.close();
    }
  } catch {
    /* best effort */
  }
  finish(1);
}

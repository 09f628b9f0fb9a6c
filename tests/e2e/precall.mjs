// The pre-call check page (/test-appel) in Chromium, from a clinic behind a firewall of the
// test's (tests/browser.rs: `precall_check_in_chromium_*`). Node runs in the server's
// namespace; the patient's chromium (PATIENT_CHROMIUM, a wrapper) in the clinic's. The page is
// loaded from PAGE_BASE (https://SERVER over 443) with a patient's token in its session, the
// test is started with its button, and what the page shows is read back from its DOM: the
// verdict, each way it tried (ok or not, round trip, how the server saw the media arrive) and
// the measured throughput. Prints one JSON line (the last line of stdout).
//
// Environment: DEV_BASE (where node mints the patient's development token, e.g.
// http://127.0.0.1:3000), PAGE_BASE, PATIENT_CHROMIUM, LABEL, ARTIFACTS, E2E_TIMEOUT_MS.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const DEV_BASE = process.env.DEV_BASE ?? 'http://127.0.0.1:3000';
const PAGE_BASE = process.env.PAGE_BASE ?? 'https://198.51.100.1';
const PATIENT_CHROMIUM = process.env.PATIENT_CHROMIUM ?? process.env.CHROMIUM ?? '/usr/bin/chromium';
const LABEL = process.env.LABEL ?? 'precall';
const ARTIFACTS = process.env.ARTIFACTS ?? 'artifacts';
const TOTAL_MS = Number(process.env.E2E_TIMEOUT_MS ?? '150000');

mkdirSync(ARTIFACTS, { recursive: true });
const consoleLog = [];
const result = { ok: false, label: LABEL, step: 'start' };
const started = Date.now();
let browser = null;

function finish(code) {
  result.elapsedMs = Date.now() - started;
  try {
    writeFileSync(join(ARTIFACTS, `browser-console-${LABEL}.log`), consoleLog.join('\n') + '\n');
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
  process.stderr.write(`[precall ${LABEL}] ${name} (${Date.now() - started} ms)\n`);
}

async function main() {
  step('token');
  const res = await fetch(`${DEV_BASE}/api/dev/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ role: 'patient', id: 11, name: 'Camille Patient' }),
  });
  if (!res.ok) throw new Error(`dev token: HTTP ${res.status}`);
  const { data } = await res.json();
  const auth = { token: data.token, user: { userId: 11, role: 'patient', name: 'Camille Patient' } };

  step('launch');
  browser = await chromium.launch({
    executablePath: PATIENT_CHROMIUM,
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
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  // The server's certificate is one the clinic's chromium trusts (tests/browser.rs): nothing
  // is ignored, for the page as for TURN over TLS.
  const context = await browser.newContext({ viewport: { width: 1100, height: 1200 }, locale: 'fr-FR' });
  await context.addInitScript((a) => sessionStorage.setItem('relais.auth', a), JSON.stringify(auth));
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('console', (m) => consoleLog.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLog.push(`pageerror: ${e.message}`));

  step('page');
  const response = await page.goto(`${PAGE_BASE}/test-appel?retour=/conference/1`);
  result.pageStatus = response?.status();
  await page.locator('#btn-precall-start:not([disabled])').waitFor();

  step('preview');
  // The camera preview plays and the microphone meter moves (chromium's fake microphone beeps).
  await page.waitForFunction(() => {
    const v = document.querySelector('video.local-video');
    return v instanceof HTMLVideoElement && v.videoWidth > 0;
  });
  result.previewWidth = await page.evaluate(() => document.querySelector('video.local-video')?.videoWidth ?? 0);
  let maxLevel = 0;
  for (let i = 0; i < 30 && maxLevel === 0; i += 1) {
    maxLevel = Math.max(maxLevel, Number(await page.locator('#precall-mic-level').getAttribute('data-level')));
    await page.waitForTimeout(100);
  }
  result.micLevel = maxLevel;

  step('check');
  await page.click('#btn-precall-start');
  await page.locator('#precall-verdict').waitFor({ timeout: 120_000 });
  await page.screenshot({ path: join(ARTIFACTS, `precall-${LABEL}.png`), fullPage: true });

  step('read');
  result.verdict = await page.evaluate(() => {
    const v = document.querySelector('#precall-verdict');
    return { level: v?.getAttribute('data-level'), title: v?.querySelector('strong')?.textContent, text: v?.textContent };
  });
  result.probes = await page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll('tr.precall-probe')].map((tr) => [
        tr.getAttribute('data-probe'),
        {
          ok: tr.getAttribute('data-ok') === 'true',
          rttMs: tr.querySelector('[data-rtt]')?.getAttribute('data-rtt') || null,
          serverTransport: tr.getAttribute('data-server-transport') || null,
          serverPort: tr.getAttribute('data-server-port') || null,
        },
      ]),
    ),
  );
  result.throughput = await page.evaluate(() => {
    const t = document.querySelector('#precall-throughput');
    if (!t) return null;
    return {
      via: t.getAttribute('data-via'),
      uploadKbps: Number(t.getAttribute('data-upload-kbps')),
      downloadKbps: Number(t.getAttribute('data-download-kbps')),
      rttMs: t.getAttribute('data-rtt-ms') === '' ? null : Number(t.getAttribute('data-rtt-ms')),
    };
  });
  result.backLink = await page.locator('#precall-back').getAttribute('href');
  result.ok = true;
  await browser.close();
}

main()
  .then(() => finish(0))
  .catch(async (e) => {
    result.error = String(e?.stack ?? e);
    await browser?.close().catch(() => undefined);
    finish(1);
  });

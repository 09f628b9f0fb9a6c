/**
 * The pre-call check (`/test-appel`): can this browser reach THIS server's media, by which way,
 * how fast — and what that means for a consultation, in plain French.
 *
 * What is tested (the server's own ports, from `GET /api/messaging/webrtc/check`):
 * - direct media over UDP and over ICE-TCP, one port at a time: a short-lived server
 *   PeerConnection that sends back ("echoes") what it receives
 *   (`POST /api/messaging/webrtc/check`); the server's candidates of the other transports and
 *   ports are removed from its descriptions, so a connection proves that very way;
 * - the embedded TURN relay, one URL at a time (UDP, TCP, TLS), with
 *   `iceTransportPolicy: "relay"`: a relay candidate means the allocation worked over it.
 *
 * What is measured, on the best way that works (direct UDP, then ICE-TCP, then a TURN relay):
 * - round-trip time: `currentRoundTripTime` of the selected candidate pair (the browser's ICE
 *   consent checks, answered by the server);
 * - upload: the media bytes the SERVER says it received per second (`GET …/check/{id}`,
 *   `inbound` tracks) — what actually arrived, not what the browser tried to send;
 * - download: the echoed streams as this browser received them per second (`inbound-rtp`). The
 *   echo carries no more than what arrived, so it is a lower bound of the download capacity.
 *
 * The verdict logic ({@link verdictOf}) and the SDP narrowing ({@link keepCandidates}) are pure
 * and unit-tested; {@link runPrecallCheck} drives the browser.
 */

// ---- what the server says -------------------------------------------------------------------

export interface CheckPorts {
  mediaUdp: number[];
  mediaTcp: number[];
  turnUdp: number | null;
  turnTcp: number | null;
  turnTls: number[];
}

export interface IceServerInfo {
  urls: string[];
  username: string;
  credential: string;
}

export interface CheckPlan {
  ports: CheckPorts;
  iceServers: IceServerInfo[];
  durationSeconds: number;
}

interface CheckStarted {
  checkId: number;
  answer: string;
  offer: string;
  expiresInSeconds: number;
}

interface ServerTrack {
  direction: string;
  kind: string;
  bytes: number;
  packets: number;
}

interface CheckStats {
  checkId: number;
  connected: boolean;
  transport: string | null;
  serverPort: number | null;
  tracks: ServerTrack[];
}

// ---- probes and results ----------------------------------------------------------------------

export type TransportKind = 'udp' | 'tcp' | 'turn-udp' | 'turn-tcp' | 'turn-tls';

export interface Probe {
  /** `udp:3479`, `tcp:443`, `turn-tls:5349`… */
  id: string;
  kind: TransportKind;
  port: number;
  /** TURN probes: the one URL tried. */
  url?: string;
}

export interface ProbeResult extends Probe {
  ok: boolean;
  /** Round-trip time of the connection, when one was made (direct probes). */
  rttMs?: number;
  /** How the server saw the media arrive (direct probes): `udp` or `tcp`, and its port. */
  serverTransport?: string;
  serverPort?: number;
  error?: string;
}

export interface Throughput {
  /** The probe whose way was measured. */
  via: string;
  /** Media the server received from this browser, kbit/s. */
  uploadKbps: number;
  /** The echo this browser received back, kbit/s. */
  downloadKbps: number;
  rttMs?: number;
  /** The browser's own estimate of what it may send (`availableOutgoingBitrate`), kbit/s. */
  estimatedUploadKbps?: number;
  /** Seconds measured. */
  seconds: number;
}

export type VerdictLevel = 'video' | 'audio' | 'blocked';

export interface Verdict {
  level: VerdictLevel;
  title: string;
  detail: string;
}

/** Below this (kbit/s, both ways), video is not worth trying: a small picture needs ~150. */
export const VIDEO_MIN_KBPS = 150;
/** Below this, even audio (Opus ~30 kbit/s) will break up. */
export const AUDIO_MIN_KBPS = 30;
/** Above this round trip (ms), conversation with video lags too much: audio only. */
export const VIDEO_MAX_RTT_MS = 500;

export const KIND_LABELS: Record<TransportKind, string> = {
  udp: 'Média direct en UDP',
  tcp: 'Média direct en TCP (ICE-TCP)',
  'turn-udp': 'Relais TURN en UDP',
  'turn-tcp': 'Relais TURN en TCP',
  'turn-tls': 'Relais TURN en TLS',
};

/** The probes for a plan: each direct port, then each TURN URL. */
export function probesFor(plan: CheckPlan): Probe[] {
  const probes: Probe[] = [];
  for (const port of plan.ports.mediaUdp) probes.push({ id: `udp:${port}`, kind: 'udp', port });
  for (const port of plan.ports.mediaTcp) probes.push({ id: `tcp:${port}`, kind: 'tcp', port });
  for (const server of plan.iceServers) {
    for (const url of server.urls) {
      const p = turnProbe(url);
      if (p && !probes.some((q) => q.id === p.id)) probes.push(p);
    }
  }
  return probes;
}

/** `turns:host:5349?transport=tcp` → a `turn-tls` probe on 5349; not a TURN URL → null. */
export function turnProbe(url: string): Probe | null {
  const m = /^(turns?):(\[[^\]]+\]|[^:?]+):(\d+)(?:\?transport=(udp|tcp))?$/.exec(url);
  if (!m) return null;
  const port = Number(m[3]);
  const kind: TransportKind = m[1] === 'turns' ? 'turn-tls' : m[4] === 'tcp' ? 'turn-tcp' : 'turn-udp';
  return { id: `${kind}:${port}`, kind, port, url };
}

function list(ports: number[]): string {
  return ports.join(', ');
}

/** The ports a firewall must let out to this server, in words an IT department reads. */
export function portsToOpen(ports: CheckPorts): string {
  const parts: string[] = [];
  if (ports.mediaUdp.length) parts.push(`UDP ${list(ports.mediaUdp)}`);
  if (ports.mediaTcp.length) parts.push(`TCP ${list(ports.mediaTcp)}`);
  const turn: string[] = [];
  if (ports.turnUdp !== null) turn.push(`UDP ${ports.turnUdp}`);
  if (ports.turnTcp !== null) turn.push(`TCP ${ports.turnTcp}`);
  if (ports.turnTls.length) turn.push(`TLS ${list(ports.turnTls)}`);
  if (turn.length) parts.push(`relais TURN ${turn.join(', ')}`);
  return parts.join(' ; ');
}

/**
 * The verdict. Nothing reachable: blocked, naming the ports. Something reachable: video when
 * the measured upload and download both reach {@link VIDEO_MIN_KBPS} and the round trip stays
 * under {@link VIDEO_MAX_RTT_MS}; audio when both reach {@link AUDIO_MIN_KBPS} (or when a way
 * works but nothing could be measured on it); below that, too weak for a call.
 */
export function verdictOf(results: ProbeResult[], throughput: Throughput | null, ports: CheckPorts): Verdict {
  const working = results.filter((r) => r.ok);
  if (working.length === 0) {
    return {
      level: 'blocked',
      title: `Connexion bloquée : contactez votre service informatique (ports ${portsToOpen(ports)})`,
      detail:
        "Aucun chemin n'atteint le serveur de consultation. Votre pare-feu doit laisser sortir " +
        `vers ce serveur au moins un de ces ports : ${portsToOpen(ports)}.`,
    };
  }
  const ways = [...new Set(working.map((r) => KIND_LABELS[r.kind]))].join(', ');
  if (!throughput) {
    return {
      level: 'audio',
      title: "Votre connexion permet l'audio seulement",
      detail: `Le serveur est joignable (${ways}), mais le débit n'a pas pu être mesuré.`,
    };
  }
  const slowest = Math.min(throughput.uploadKbps, throughput.downloadKbps);
  const rttOk = throughput.rttMs === undefined || throughput.rttMs <= VIDEO_MAX_RTT_MS;
  if (slowest >= VIDEO_MIN_KBPS && rttOk) {
    return {
      level: 'video',
      title: 'Votre connexion permet la vidéo',
      detail: `Chemins qui fonctionnent : ${ways}.`,
    };
  }
  if (slowest >= AUDIO_MIN_KBPS) {
    const why = rttOk
      ? `le débit mesuré (${Math.round(slowest)} kbit/s) est trop faible pour la vidéo`
      : `le délai aller-retour (${Math.round(throughput.rttMs ?? 0)} ms) est trop long pour la vidéo`;
    return {
      level: 'audio',
      title: "Votre connexion permet l'audio seulement",
      detail: `Chemins qui fonctionnent : ${ways} ; ${why}.`,
    };
  }
  return {
    level: 'blocked',
    title: 'Connexion trop faible : contactez votre service informatique',
    detail: `Le serveur est joignable (${ways}) mais le débit mesuré (${Math.round(slowest)} kbit/s) ne suffit pas à un appel.`,
  };
}

/**
 * The server's description with only the candidates of one transport and port (a direct probe
 * proves that way and no other). Other lines are untouched.
 */
export function keepCandidates(sdp: string, transport: 'udp' | 'tcp', port: number): string {
  const eol = sdp.includes('\r\n') ? '\r\n' : '\n';
  return sdp
    .split(eol)
    .filter((line) => {
      if (!line.startsWith('a=candidate:')) return true;
      // candidate:<foundation> <component> <transport> <priority> <address> <port> typ …
      const f = line.slice('a=candidate:'.length).split(' ');
      return f[2]?.toLowerCase() === transport && Number(f[5]) === port;
    })
    .join(eol);
}

// ---- the browser side ------------------------------------------------------------------------

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export class PrecallError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The check's REST calls (`/api/messaging/webrtc/check…`). */
export class PrecallClient {
  constructor(
    private readonly token: string,
    private readonly fetchFn: FetchLike = (i, init) => globalThis.fetch(i, init),
    private readonly base = '/api/messaging/webrtc/check',
  ) {}

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json', Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await this.fetchFn(this.base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = (await res.json().catch(() => ({}))) as { data?: T; error?: { code?: string; message?: string } };
    if (!res.ok) {
      throw new PrecallError(res.status, json.error?.code ?? 'http_error', json.error?.message ?? `HTTP ${res.status}`);
    }
    return json.data as T;
  }

  plan(): Promise<CheckPlan> {
    return this.call('GET', '');
  }
  start(sdp: string): Promise<CheckStarted> {
    return this.call('POST', '', { sdp });
  }
  answer(id: number, sdp: string): Promise<unknown> {
    return this.call('POST', `/${id}/answer`, { sdp });
  }
  stats(id: number): Promise<CheckStats> {
    return this.call('GET', `/${id}`);
  }
  close(id: number): Promise<unknown> {
    return this.call('DELETE', `/${id}`);
  }
}

export interface RunOptions {
  /** How long a direct way may take to connect. */
  connectTimeoutMs?: number;
  /** How long a TURN URL may take to give a relay candidate. */
  relayTimeoutMs?: number;
  /** How long throughput is measured. */
  measureMs?: number;
  createPeerConnection?: (config: RTCConfiguration) => RTCPeerConnection;
  onProgress?: (results: ProbeResult[], stage: string) => void;
}

export interface PrecallReport {
  plan: CheckPlan;
  results: ProbeResult[];
  throughput: Throughput | null;
  verdict: Verdict;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function waitConnected(pc: RTCPeerConnection, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (v: boolean) => {
      clearTimeout(timer);
      pc.removeEventListener('connectionstatechange', on);
      resolve(v);
    };
    const on = () => {
      if (pc.connectionState === 'connected') done(true);
      else if (pc.connectionState === 'failed' || pc.connectionState === 'closed') done(false);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    pc.addEventListener('connectionstatechange', on);
    on();
  });
}

interface Sample {
  at: number;
  sentBytes: number;
  receivedBytes: number;
  rttMs?: number;
  availableOutgoingKbps?: number;
}

async function sample(pc: RTCPeerConnection): Promise<Sample> {
  const report = await pc.getStats();
  let sentBytes = 0;
  let receivedBytes = 0;
  let pair: Record<string, unknown> | undefined;
  let selectedId: string | undefined;
  report.forEach((s: Record<string, unknown>) => {
    if (s.type === 'outbound-rtp') sentBytes += Number(s.bytesSent ?? 0);
    if (s.type === 'inbound-rtp') receivedBytes += Number(s.bytesReceived ?? 0);
    if (s.type === 'transport' && typeof s.selectedCandidatePairId === 'string') selectedId = s.selectedCandidatePairId;
  });
  report.forEach((s: Record<string, unknown>) => {
    if (s.type !== 'candidate-pair') return;
    if (selectedId ? s.id === selectedId : s.nominated === true && s.state === 'succeeded') pair = s;
  });
  const rtt = pair && typeof pair.currentRoundTripTime === 'number' ? pair.currentRoundTripTime * 1000 : undefined;
  const out = pair && typeof pair.availableOutgoingBitrate === 'number' ? pair.availableOutgoingBitrate / 1000 : undefined;
  return { at: performance.now(), sentBytes, receivedBytes, rttMs: rtt, availableOutgoingKbps: out };
}

function serverInbound(s: CheckStats): number {
  return s.tracks.filter((t) => t.direction === 'inbound').reduce((n, t) => n + t.bytes, 0);
}

/**
 * One way to the server, tried with a loopback check: connects (or not) within the timeout;
 * when `measureMs` is given and it connects, also measures throughput for that long.
 */
async function echoProbe(
  client: PrecallClient,
  stream: MediaStream,
  probe: Probe,
  turn: IceServerInfo | null,
  opts: Required<Pick<RunOptions, 'connectTimeoutMs'>> & RunOptions,
  measureMs: number | null,
): Promise<{ result: ProbeResult; throughput: Throughput | null }> {
  const relay = probe.kind.startsWith('turn');
  const config: RTCConfiguration = relay && turn
    ? { iceServers: [{ urls: [probe.url ?? ''], username: turn.username, credential: turn.credential }], iceTransportPolicy: 'relay' }
    : { iceServers: [] };
  const create = opts.createPeerConnection ?? ((c: RTCConfiguration) => new RTCPeerConnection(c));
  const pc = create(config);
  const narrow = (sdp: string) =>
    relay ? sdp : keepCandidates(sdp, probe.kind as 'udp' | 'tcp', probe.port);
  let checkId: number | null = null;
  const result: ProbeResult = { ...probe, ok: false };
  let throughput: Throughput | null = null;
  try {
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendrecv', streams: [stream] });
    await pc.setLocalDescription(await pc.createOffer());
    const started = await client.start(pc.localDescription?.sdp ?? '');
    checkId = started.checkId;
    await pc.setRemoteDescription({ type: 'answer', sdp: narrow(started.answer) });
    await pc.setRemoteDescription({ type: 'offer', sdp: narrow(started.offer) });
    await pc.setLocalDescription(await pc.createAnswer());
    await client.answer(checkId, pc.localDescription?.sdp ?? '');
    result.ok = await waitConnected(pc, opts.connectTimeoutMs);
    if (!result.ok) {
      result.error = 'pas de connexion';
      return { result, throughput };
    }
    // The round trip needs a consent check or two after the connection; the server knows
    // its path once the echo has sent something on it.
    await sleep(600);
    result.rttMs = (await sample(pc)).rttMs;
    const server = await client.stats(checkId).catch((e: unknown) => {
      console.warn(`pre-call check ${probe.id}: the server's statistics are unavailable`, e);
      return null;
    });
    result.serverTransport = server?.transport ?? undefined;
    result.serverPort = server?.serverPort ?? undefined;
    if (measureMs !== null) {
      // The first second is the encoder's ramp-up: measured after it.
      await sleep(1000);
      const a = await sample(pc);
      const sa = await client.stats(checkId);
      await sleep(measureMs);
      const b = await sample(pc);
      const sb = await client.stats(checkId);
      const seconds = (b.at - a.at) / 1000;
      throughput = {
        via: probe.id,
        uploadKbps: ((serverInbound(sb) - serverInbound(sa)) * 8) / 1000 / seconds,
        downloadKbps: ((b.receivedBytes - a.receivedBytes) * 8) / 1000 / seconds,
        rttMs: b.rttMs ?? result.rttMs,
        estimatedUploadKbps: b.availableOutgoingKbps,
        seconds,
      };
      if (b.rttMs !== undefined) result.rttMs = b.rttMs;
    }
  } catch (e) {
    result.ok = false;
    result.error = e instanceof PrecallError ? `${e.code}: ${e.message}` : String(e);
  } finally {
    if (checkId !== null) await client.close(checkId).catch(() => undefined);
    pc.close();
  }
  return { result, throughput };
}

/** A TURN URL alone, relay candidates only: a relay candidate means the allocation worked. */
async function relayProbe(probe: Probe, turn: IceServerInfo, opts: RunOptions): Promise<ProbeResult> {
  const create = opts.createPeerConnection ?? ((c: RTCConfiguration) => new RTCPeerConnection(c));
  const pc = create({
    iceServers: [{ urls: [probe.url ?? ''], username: turn.username, credential: turn.credential }],
    iceTransportPolicy: 'relay',
  });
  const timeoutMs = opts.relayTimeoutMs ?? 8000;
  try {
    const found = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      pc.addEventListener('icecandidate', (ev) => {
        if (ev.candidate && ev.candidate.type === 'relay') {
          clearTimeout(timer);
          resolve(true);
        }
      });
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') {
          clearTimeout(timer);
          // A relay candidate, if any, came before the end of gathering.
          setTimeout(() => resolve(false), 0);
        }
      });
    });
    pc.addTransceiver('audio', { direction: 'sendrecv' });
    await pc.setLocalDescription(await pc.createOffer());
    const ok = await found;
    return { ...probe, ok, error: ok ? undefined : 'aucun relais obtenu' };
  } catch (e) {
    return { ...probe, ok: false, error: String(e) };
  } finally {
    pc.close();
  }
}

const PREFERENCE: TransportKind[] = ['udp', 'tcp', 'turn-udp', 'turn-tcp', 'turn-tls'];

/**
 * Runs every probe against the server and measures the best way that works; see the module
 * documentation. `stream` is the camera and microphone (their media is what gets echoed).
 */
export async function runPrecallCheck(
  client: PrecallClient,
  stream: MediaStream,
  options: RunOptions = {},
): Promise<PrecallReport> {
  const opts = { connectTimeoutMs: 6000, measureMs: 4000, ...options };
  const plan = await client.plan();
  const probes = probesFor(plan);
  const turn = plan.iceServers[0] ?? null;
  const results: ProbeResult[] = probes.map((p) => ({ ...p, ok: false, error: 'en attente' }));
  const report = (stage: string) => opts.onProgress?.(results.map((r) => ({ ...r })), stage);
  const put = (r: ProbeResult) => {
    results[results.findIndex((x) => x.id === r.id)] = r;
  };
  report('start');
  // TURN URLs in parallel (gathering only), while the direct ways are tried one by one (the
  // server runs at most two checks per person at once).
  const relays = Promise.all(
    probes
      .filter((p) => p.kind.startsWith('turn') && turn)
      .map(async (p) => {
        const r = await relayProbe(p, turn as IceServerInfo, opts);
        put(r);
        report(p.id);
      }),
  );
  let throughput: Throughput | null = null;
  for (const p of probes.filter((q) => !q.kind.startsWith('turn'))) {
    const measure = throughput === null ? opts.measureMs : null;
    const { result, throughput: t } = await echoProbe(client, stream, p, null, opts, measure);
    put(result);
    if (t) throughput = t;
    report(p.id);
  }
  await relays;
  if (!throughput) {
    // No direct way: the media would go through the relay; measured through the best one.
    const relay = results
      .filter((r) => r.ok && r.kind.startsWith('turn'))
      .sort((a, b) => PREFERENCE.indexOf(a.kind) - PREFERENCE.indexOf(b.kind))[0];
    if (relay && turn) {
      const { result, throughput: t } = await echoProbe(client, stream, relay, turn, opts, opts.measureMs);
      throughput = t;
      if (result.ok) {
        put({ ...relay, rttMs: result.rttMs, serverTransport: result.serverTransport, serverPort: result.serverPort });
      }
      report('measure');
    }
  }
  const verdict = verdictOf(results, throughput, plan.ports);
  return { plan, results, throughput, verdict };
}

import { useEffect, useMemo, useRef, useState } from 'react';
import { VideoTile } from '../components/VideoTile';
import type { AuthState } from '../services/auth';
import { useServices } from '../services/context';
import {
  KIND_LABELS,
  PrecallClient,
  runPrecallCheck,
  type PrecallReport,
  type ProbeResult,
} from '../services/precall';

/** The level of the microphone, 0–100, from a Web Audio AnalyserNode (RMS of the waveform). */
function useMicLevel(stream: MediaStream | null): number {
  const [level, setLevel] = useState(0);
  useEffect(() => {
    if (!stream || stream.getAudioTracks().length === 0) return;
    const Ctx = globalThis.AudioContext;
    if (!Ctx) return;
    const ctx = new Ctx();
    const source = ctx.createMediaStreamSource(stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const data = new Uint8Array(analyser.fftSize);
    let last = 0;
    let frame = 0;
    const tick = (t: number) => {
      frame = requestAnimationFrame(tick);
      if (t - last < 100) return;
      last = t;
      analyser.getByteTimeDomainData(data);
      let sum = 0;
      for (const v of data) {
        const x = (v - 128) / 128;
        sum += x * x;
      }
      // RMS of a loud voice is ~0.3: scaled so that it fills the meter.
      setLevel(Math.min(100, Math.round(Math.sqrt(sum / data.length) * 300)));
    };
    frame = requestAnimationFrame(tick);
    void ctx.resume().catch(() => undefined);
    return () => {
      cancelAnimationFrame(frame);
      source.disconnect();
      void ctx.close().catch(() => undefined);
    };
  }, [stream]);
  return level;
}

function ms(v: number | undefined): string {
  return v === undefined ? '—' : `${Math.round(v)} ms`;
}

function ProbeRow({ r, done }: { r: ProbeResult; done: boolean }) {
  const state = r.ok ? 'ok' : done || r.error !== 'en attente' ? 'ko' : 'pending';
  return (
    <tr
      className="precall-probe"
      data-probe={r.id}
      data-ok={r.ok ? 'true' : 'false'}
      data-state={state}
      data-server-transport={r.serverTransport ?? ''}
      data-server-port={r.serverPort ?? ''}
    >
      <td>{KIND_LABELS[r.kind]}</td>
      <td>{r.port}</td>
      <td>{state === 'ok' ? '✔ joignable' : state === 'ko' ? '✘ bloqué' : '…'}</td>
      <td data-rtt={r.rttMs === undefined ? '' : Math.round(r.rttMs)}>{ms(r.rttMs)}</td>
    </tr>
  );
}

/**
 * `/test-appel`: the pre-call check. Camera preview and microphone level first, then, on
 * demand, every way to this server's media tried one by one, the best one measured, and a
 * verdict in plain French (see `services/precall.ts` for what each number means).
 */
export function PrecallCheckPage({ auth, back }: { auth: AuthState; back: string | null }) {
  const services = useServices();
  const client = useMemo(() => new PrecallClient(auth.token), [auth.token]);
  const [stream, setStream] = useState<MediaStream | null>(null);
  const [mediaError, setMediaError] = useState<string | null>(null);
  const [running, setRunning] = useState(false);
  const [progress, setProgress] = useState<ProbeResult[]>([]);
  const [report, setReport] = useState<PrecallReport | null>(null);
  const [error, setError] = useState<string | null>(null);
  const streamRef = useRef<MediaStream | null>(null);
  const level = useMicLevel(stream);

  useEffect(() => {
    const devices = services.mediaDevices();
    if (!devices) {
      setMediaError("Ce navigateur ne donne pas accès à la caméra ni au micro.");
      return;
    }
    let cancelled = false;
    devices
      .getUserMedia({ audio: true, video: true })
      .catch(() => devices.getUserMedia({ audio: true }))
      .then((s) => {
        if (cancelled) {
          s.getTracks().forEach((t) => t.stop());
          return;
        }
        streamRef.current = s;
        setStream(s);
        if (s.getVideoTracks().length === 0) setMediaError('Caméra indisponible : seul le micro est testé.');
      })
      .catch(() => setMediaError("Caméra et micro refusés ou absents : autorisez-les dans le navigateur."));
    return () => {
      cancelled = true;
      streamRef.current?.getTracks().forEach((t) => t.stop());
    };
  }, [services]);

  const start = async () => {
    if (!stream) return;
    setRunning(true);
    setReport(null);
    setError(null);
    try {
      const r = await runPrecallCheck(client, stream, {
        createPeerConnection: services.createPeerConnection,
        onProgress: (results) => setProgress(results),
      });
      setProgress(r.results);
      setReport(r);
    } catch (e) {
      setError(`Le test n'a pas pu être mené : ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      setRunning(false);
    }
  };

  const t = report?.throughput ?? null;
  return (
    <div className="precall-page" style={{ maxWidth: '52rem', margin: '1rem auto', padding: '0 1rem' }}>
      <h1>Tester ma connexion avant la consultation</h1>
      <section aria-label="Caméra et micro" className="webrtc-widget">
        <h2>1. Caméra et micro</h2>
        <VideoTile stream={stream} label="Votre caméra" local placeholder="Caméra en attente…" />
        <div className="row">
          <span>Niveau du micro :</span>
          <div
            id="precall-mic-level"
            role="meter"
            aria-label="Niveau du micro"
            aria-valuemin={0}
            aria-valuemax={100}
            aria-valuenow={level}
            data-level={level}
            style={{ width: '12rem', height: '0.8rem', background: '#e5e9ef', borderRadius: '4px', overflow: 'hidden' }}
          >
            <div style={{ width: `${level}%`, height: '100%', background: level > 5 ? '#2e7d32' : '#9aa5b1' }} />
          </div>
          <span className="muted">Parlez : la barre doit bouger.</span>
        </div>
        {mediaError && (
          <p className="call-notice" role="status">
            {mediaError}
          </p>
        )}
      </section>

      <section aria-label="Connexion au serveur" className="webrtc-widget" style={{ marginTop: '1rem' }}>
        <h2>2. Connexion au serveur de consultation</h2>
        <div className="row">
          <button
            type="button"
            id="btn-precall-start"
            className="primary"
            disabled={!stream || running}
            onClick={() => void start()}
          >
            {running ? 'Test en cours…' : report ? 'Relancer le test' : 'Tester ma connexion'}
          </button>
          <span className="muted">Environ 30 secondes.</span>
        </div>
        {error && (
          <p className="call-error" role="alert">
            {error}
          </p>
        )}
        {progress.length > 0 && (
          <table id="precall-probes" style={{ width: '100%', borderCollapse: 'collapse' }}>
            <thead>
              <tr>
                <th align="left">Chemin</th>
                <th align="left">Port</th>
                <th align="left">Résultat</th>
                <th align="left">Aller-retour</th>
              </tr>
            </thead>
            <tbody>
              {progress.map((r) => (
                <ProbeRow key={r.id} r={r} done={!running} />
              ))}
            </tbody>
          </table>
        )}
        {t && (
          <dl
            id="precall-throughput"
            data-via={t.via}
            data-upload-kbps={Math.round(t.uploadKbps)}
            data-download-kbps={Math.round(t.downloadKbps)}
            data-rtt-ms={t.rttMs === undefined ? '' : Math.round(t.rttMs)}
          >
            <dt>Envoi (mesuré par le serveur)</dt>
            <dd>
              {Math.round(t.uploadKbps)} kbit/s — ce que le serveur a effectivement reçu de votre caméra et de
              votre micro.
              {t.estimatedUploadKbps !== undefined &&
                ` Estimation du navigateur : ${Math.round(t.estimatedUploadKbps)} kbit/s.`}
            </dd>
            <dt>Réception (écho du serveur)</dt>
            <dd>
              {Math.round(t.downloadKbps)} kbit/s — le serveur vous renvoie ce qu'il reçoit : c'est un minimum,
              votre connexion peut recevoir davantage.
            </dd>
            <dt>Délai aller-retour</dt>
            <dd>{ms(t.rttMs)} — le temps d'un aller-retour jusqu'au serveur (au-delà de 500 ms la vidéo est pénible).</dd>
          </dl>
        )}
        {report && (
          <div
            id="precall-verdict"
            data-level={report.verdict.level}
            role="status"
            className={report.verdict.level === 'video' ? 'call-ended' : report.verdict.level === 'audio' ? 'call-notice' : 'call-error'}
          >
            <strong>{report.verdict.title}</strong>
            <p>{report.verdict.detail}</p>
          </div>
        )}
      </section>
      {back && (
        <p>
          <a href={back} id="precall-back">
            Revenir à la consultation
          </a>
        </p>
      )}
    </div>
  );
}

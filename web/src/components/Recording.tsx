import { useState } from 'react';
import type { Api } from '../services/api';
import type { ConsultationCall, RecordingInfo } from '../services/call';
import type { RecordingView } from '../services/events';
import { describe } from '../services/messages';

/** Visible to every participant while the consultation is recorded. */
export function RecordingIndicator({ recording, isDoctor }: { recording: RecordingInfo | null; isDoctor: boolean }) {
  if (!recording) return null;
  const since = new Date(recording.startedAt);
  const time = Number.isNaN(since.getTime())
    ? ''
    : ` depuis ${since.toLocaleTimeString('fr-FR', { hour: '2-digit', minute: '2-digit' })}`;
  return (
    <div className="recording-indicator" role="status" aria-live="polite" data-recording="on">
      <span className="rec-dot" aria-hidden="true" />
      {isDoctor ? `Enregistrement en cours${time}` : `Cette consultation est enregistrée${time}`}
    </div>
  );
}

function duration(ms: number | null): string {
  if (ms === null) return '—';
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
}

function size(bytes: number | null): string {
  if (bytes === null) return '—';
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} Mo`;
  return `${Math.max(1, Math.round(bytes / 1024))} Ko`;
}

function participant(r: RecordingView): string {
  return r.participant.role === 'medecin' ? `Médecin ${r.participant.id}` : `Patient ${r.participant.id}`;
}

/**
 * The doctor's recording controls: a consent checkbox that must be ticked before recording
 * starts (the server refuses otherwise), start and stop, errors in plain language, and the
 * files a stop finished, to download.
 */
export function RecordingControls(props: {
  call: ConsultationCall;
  recording: RecordingInfo | null;
  api: Api;
  /** Recording needs someone connected. */
  live: boolean;
}) {
  const { call, recording, api, live } = props;
  const [consent, setConsent] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<{ code: string; message: string } | null>(null);
  const [finished, setFinished] = useState<RecordingView[]>([]);

  const run = async (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'error';
      setError({ code, message: describe(code, (e as Error).message) });
    } finally {
      setBusy(false);
    }
  };

  const start = () =>
    run(async () => {
      await call.startRecording(consent);
    });
  const stop = () =>
    run(async () => {
      const done = await call.stopRecording();
      setFinished((f) => [...f, ...done.filter((r) => r.status !== 'failed')]);
      setConsent(false);
    });
  const download = (r: RecordingView) =>
    run(async () => {
      const blob = await api.downloadRecording(r.url);
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = `consultation-${r.sessionId}-${r.participant.role}-${r.participant.id}.${r.content_type.includes('matroska') ? 'mkv' : 'webm'}`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    });

  return (
    <div className="recording-controls" aria-label="Enregistrement">
      {recording ? (
        <button type="button" id="btn-stop-recording" className="danger" disabled={busy} onClick={() => void stop()}>
          Arrêter l'enregistrement
        </button>
      ) : (
        <div className="row">
          <label className="consent">
            <input
              type="checkbox"
              id="recording-consent"
              checked={consent}
              onChange={(e) => {
                setConsent(e.target.checked);
                setError(null);
              }}
            />
            Les participants ont donné leur consentement à l'enregistrement
          </label>
          <button
            type="button"
            id="btn-start-recording"
            disabled={busy || !consent || !live}
            onClick={() => void start()}
          >
            Démarrer l'enregistrement
          </button>
        </div>
      )}
      {error && (
        <p className="recording-error error" role="alert" data-code={error.code}>
          {error.message}
        </p>
      )}
      {finished.length > 0 && (
        <ul className="recording-list" aria-label="Enregistrements">
          {finished.map((r) => (
            <li key={r.id} data-recording-id={r.id}>
              {participant(r)} — {duration(r.duration_ms)}, {size(r.size_bytes)}{' '}
              <button type="button" className="link-button" disabled={busy} onClick={() => void download(r)}>
                Télécharger
              </button>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

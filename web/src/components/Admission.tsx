/**
 * Issue 21 in the consultation: the patient's (or guest's) waiting room, the doctor's list of
 * who waits with *Admettre* / *Refuser*, the participants with *Retirer*, the guest invitation,
 * the waiting-room setting, and the audio-only switch.
 */
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { ApiError, type Api, type GuestInvite } from '../services/api';
import type { ConsultationCall, WaitingPerson } from '../services/call';
import { userKey, type UserRef } from '../services/events';
import { describe } from '../services/messages';

/** The current time, ticking every `everyMs` (live durations). */
export function useNow(everyMs = 1_000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(t);
  }, [everyMs]);
  return now;
}

/** "3 min 05 s", "45 s", "1 h 02 min". */
export function elapsed(sinceIso: string, now: number): string {
  const since = Date.parse(sinceIso);
  if (Number.isNaN(since)) return '';
  const s = Math.max(0, Math.floor((now - since) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

function clock(sinceIso: string): string {
  const d = new Date(sinceIso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString('fr-FR', { hour: '2-digit', minute: '2-digit' });
}

/** How a person is called in the consultation: the name the server gave, else role and number. */
export function personName(u: UserRef | null, names: Record<string, string> = {}): string {
  if (!u) return 'Participant';
  const named = names[userKey(u)];
  if (named) return named;
  if (u.userType === 'invite') return `Invité ${u.userId}`;
  return u.userType === 'medecin' ? `Médecin ${u.userId}` : `Patient ${u.userId}`;
}

/** The patient's (or guest's) side of the waiting room: told, with since when; camera preview beside. */
export function LobbyNotice({ since, guest }: { since: string | null; guest: boolean }) {
  const now = useNow();
  return (
    <div className="lobby" role="status" aria-live="polite">
      <p className="lobby-title">Le médecin va vous recevoir</p>
      <p className="lobby-detail">
        {guest ? 'Vous êtes invité à cette consultation. ' : ''}
        Restez sur cette page : la consultation commence dès que le médecin vous fait entrer.
      </p>
      {since && (
        <p className="lobby-since" data-since={since}>
          En attente depuis {clock(since)} ({elapsed(since, now)})
        </p>
      )}
    </div>
  );
}

/** The doctor's list of who waits: name, for how long (live), *Admettre* / *Refuser*. */
export function WaitingList({ call, waiting }: { call: ConsultationCall; waiting: WaitingPerson[] }) {
  const now = useNow();
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<{ code: string; message: string } | null>(null);
  /** The person whose refusal is being confirmed (with an optional reason). */
  const [declining, setDeclining] = useState<string | null>(null);
  const [reason, setReason] = useState('');
  if (waiting.length === 0 && !error) return null;

  const act = async (w: WaitingPerson, action: 'admit' | 'decline') => {
    setBusy(userKey(w.user));
    setError(null);
    try {
      if (action === 'admit') await call.admit(w.user);
      else await call.decline(w.user, reason.trim() || undefined);
      setDeclining(null);
      setReason('');
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'error';
      setError({ code, message: describe(code, (e as Error).message) });
    } finally {
      setBusy(null);
    }
  };

  return (
    <section className="waiting-list" aria-label="Salle d'attente">
      <h3>Salle d&apos;attente ({waiting.length})</h3>
      {waiting.length > 0 && (
      <ul>
        {waiting.map((w) => {
          const key = userKey(w.user);
          return (
            <li key={key} className="waiting-person" data-user={key}>
              <span className="waiting-name">{w.name || personName(w.user)}</span>
              <span className="waiting-since" title={clock(w.since)}>
                attend depuis {elapsed(w.since, now)}
              </span>
              <span className="row">
                <button
                  type="button"
                  className="primary btn-admit"
                  disabled={busy === key}
                  onClick={() => void act(w, 'admit')}
                >
                  Admettre
                </button>
                {declining !== key && (
                  <button type="button" className="btn-decline" disabled={busy === key} onClick={() => setDeclining(key)}>
                    Refuser
                  </button>
                )}
              </span>
              {declining === key && (
                <span className="row decline-ask">
                  <input
                    className="decline-reason"
                    aria-label="Motif du refus (facultatif, transmis à la personne)"
                    placeholder="Motif (facultatif)"
                    maxLength={200}
                    value={reason}
                    onChange={(e) => setReason(e.target.value)}
                  />
                  <button
                    type="button"
                    className="danger btn-decline-confirm"
                    disabled={busy === key}
                    onClick={() => void act(w, 'decline')}
                  >
                    Confirmer le refus
                  </button>
                  <button type="button" onClick={() => (setDeclining(null), setReason(''))}>
                    Annuler
                  </button>
                </span>
              )}
            </li>
          );
        })}
      </ul>
      )}
      {error && (
        <p className="call-error" role="alert" data-code={error.code}>
          {error.message}
        </p>
      )}
    </section>
  );
}

/** The doctor's list of who is in the consultation, with *Retirer*. */
export function ParticipantList(props: {
  call: ConsultationCall;
  others: UserRef[];
  names: Record<string, string>;
  audioOnlyUsers: Record<string, { reason: string | null }>;
}) {
  const { call, others, names, audioOnlyUsers } = props;
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<{ code: string; message: string } | null>(null);
  if (others.length === 0) return null;
  const remove = async (u: UserRef) => {
    setBusy(userKey(u));
    setError(null);
    try {
      await call.remove(u);
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'error';
      setError({ code, message: describe(code, (e as Error).message) });
    } finally {
      setBusy(null);
    }
  };
  return (
    <section className="participant-list" aria-label="Participants">
      <h3>Participants</h3>
      <ul>
        {others.map((u) => {
          const key = userKey(u);
          return (
            <li key={key} className="participant" data-user={key}>
              <span>{personName(u, names)}</span>
              {audioOnlyUsers[key] && <span className="badge audio-only-badge">Audio seulement</span>}
              <button type="button" className="danger btn-remove" disabled={busy === key} onClick={() => void remove(u)}>
                Retirer
              </button>
            </li>
          );
        })}
      </ul>
      {error && (
        <p className="call-error" role="alert" data-code={error.code}>
          {error.message}
        </p>
      )}
    </section>
  );
}

const VALIDITY: { minutes: number; label: string }[] = [
  { minutes: 30, label: '30 minutes' },
  { minutes: 60, label: '1 heure' },
  { minutes: 240, label: '4 heures' },
  { minutes: 1440, label: '24 heures' },
];

/** The doctor invites a guest (interpreter, family member): a link of its own to copy. */
export function GuestInviteForm({ api, sessionId }: { api: Api; sessionId: number }) {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState('');
  const [minutes, setMinutes] = useState(60);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [invites, setInvites] = useState<GuestInvite[]>([]);
  const [copied, setCopied] = useState<number | null>(null);
  const fields = useRef(new Map<number, HTMLInputElement>());

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const displayName = name.trim();
    if (!displayName) {
      setError("Indiquez le nom de l'invité (il le verra, et vous aussi dans la salle d'attente).");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const g = await api.inviteGuest(sessionId, displayName, minutes);
      setInvites((cur) => [g, ...cur]);
      setName('');
    } catch (err) {
      setError(
        err instanceof ApiError
          ? `Invitation impossible : ${describe(err.code, err.message)}`
          : "Invitation impossible : le serveur n'a pas répondu.",
      );
    } finally {
      setBusy(false);
    }
  };

  const copy = async (g: GuestInvite) => {
    let ok = false;
    try {
      if (navigator.clipboard?.writeText) {
        await navigator.clipboard.writeText(g.url);
        ok = true;
      }
    } catch {
      /* select instead */
    }
    if (!ok) fields.current.get(g.id)?.select();
    setCopied(g.id);
    setTimeout(() => setCopied((c) => (c === g.id ? null : c)), 2500);
  };

  return (
    <section className="guest-invite" aria-label="Inviter un participant">
      {!open ? (
        <button type="button" id="btn-invite-guest" className="link-button" onClick={() => setOpen(true)}>
          Inviter un participant (interprète, proche…)
        </button>
      ) : (
        <form className="row" onSubmit={submit}>
          <input
            id="guest-name"
            aria-label="Nom de l'invité"
            placeholder="Nom affiché (ex. Interprète)"
            value={name}
            maxLength={80}
            onChange={(e) => setName(e.target.value)}
          />
          <select
            id="guest-validity"
            aria-label="Validité du lien"
            value={minutes}
            onChange={(e) => setMinutes(Number(e.target.value))}
          >
            {VALIDITY.map((v) => (
              <option key={v.minutes} value={v.minutes}>
                valable {v.label}
              </option>
            ))}
          </select>
          <button type="submit" id="btn-create-guest" className="primary" disabled={busy}>
            Créer le lien
          </button>
        </form>
      )}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {invites.map((g) => (
        <div key={g.id} className="guest-link" data-guest-id={g.id}>
          <label htmlFor={`guest-link-${g.id}`}>
            Lien pour {g.display_name} (valable jusqu&apos;à {clock(g.expires_at)}, une seule utilisation)
          </label>
          <div className="row">
            <input
              id={`guest-link-${g.id}`}
              className="guest-link-url"
              readOnly
              value={g.url}
              ref={(el) => {
                if (el) fields.current.set(g.id, el);
                else fields.current.delete(g.id);
              }}
              onFocus={(e) => e.target.select()}
            />
            <button type="button" className="btn-copy-guest" onClick={() => void copy(g)}>
              {copied === g.id ? 'Copié ✓' : 'Copier'}
            </button>
          </div>
        </div>
      ))}
    </section>
  );
}

/** The session's waiting room, on or off (the doctor). */
export function WaitingRoomToggle({ api, sessionId, initial }: { api: Api; sessionId: number; initial: boolean }) {
  const [on, setOn] = useState(initial);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => setOn(initial), [initial]);
  const toggle = async (next: boolean) => {
    setBusy(true);
    setError(null);
    try {
      const s = await api.setWaitingRoom(sessionId, next);
      setOn(s?.waiting_room ?? next);
    } catch (e) {
      setError(`Réglage non modifié : ${describe((e as { code?: string }).code ?? 'error', (e as Error).message)}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="waiting-room-toggle">
      <label>
        <input
          type="checkbox"
          id="waiting-room-enabled"
          checked={on}
          disabled={busy}
          onChange={(e) => void toggle(e.target.checked)}
        />{' '}
        Salle d&apos;attente : je fais entrer chaque participant
      </label>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

export const AUDIO_ONLY_REASONS = [
  { value: 'connexion insuffisante', label: 'Connexion insuffisante' },
  { value: 'demande du patient', label: 'Demande du patient' },
  { value: 'autre', label: 'Autre' },
] as const;

/**
 * *Audio seulement*: asks why (recorded with the switch), then stops video both ways; *Revenir
 * à la vidéo* restores it.
 */
export function AudioOnlyControl({ call, audioOnly }: { call: ConsultationCall; audioOnly: boolean }) {
  const [asking, setAsking] = useState(false);
  const [reason, setReason] = useState<string>(AUDIO_ONLY_REASONS[0].value);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<{ code: string; message: string } | null>(null);

  const run = async (on: boolean) => {
    setBusy(true);
    setError(null);
    try {
      await call.setAudioOnly(on, on ? reason : undefined);
      setAsking(false);
    } catch (e) {
      const code = (e as { code?: string; name?: string }).code ?? mediaCode(e);
      setError({ code, message: describe(code, (e as Error).message) });
      setAsking(false);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="audio-only-control">
      {audioOnly ? (
        <button type="button" id="btn-audio-only" aria-pressed="true" disabled={busy} onClick={() => void run(false)}>
          Revenir à la vidéo
        </button>
      ) : !asking ? (
        <button type="button" id="btn-audio-only" aria-pressed="false" onClick={() => setAsking(true)}>
          Audio seulement
        </button>
      ) : (
        <span className="row audio-only-ask" role="group" aria-label="Passer en audio seulement">
          <label htmlFor="audio-only-reason">Motif :</label>
          <select id="audio-only-reason" value={reason} onChange={(e) => setReason(e.target.value)}>
            {AUDIO_ONLY_REASONS.map((r) => (
              <option key={r.value} value={r.value}>
                {r.label}
              </option>
            ))}
          </select>
          <button type="button" id="btn-audio-only-confirm" className="primary" disabled={busy} onClick={() => void run(true)}>
            Passer en audio seulement
          </button>
          <button type="button" onClick={() => setAsking(false)}>
            Annuler
          </button>
        </span>
      )}
      {error && (
        <p className="call-error" role="alert" data-code={error.code}>
          {error.message}
        </p>
      )}
    </div>
  );
}

function mediaCode(e: unknown): string {
  const name = (e as { name?: string } | null)?.name ?? '';
  return name === 'NotAllowedError' ? 'permission_denied' : name === 'NotReadableError' ? 'device_busy' : 'error';
}

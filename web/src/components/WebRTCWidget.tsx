import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { useCallSnapshot, useSignalingStatus } from '../hooks/useExternal';
import { ApiError, type ConferenceLink } from '../services/api';
import { loadAuth, socketAuthOf, type AuthState } from '../services/auth';
import { ConsultationCall, type CallSnapshot } from '../services/call';
import { useServices } from '../services/context';
import { isSecondaryStream, userKey, type SessionType, type UserRef } from '../services/events';
import { describe, mediaErrorCode } from '../services/messages';
import {
  AudioOnlyControl,
  GuestInviteForm,
  LobbyNotice,
  ParticipantList,
  personName,
  WaitingList,
  WaitingRoomToggle,
} from './Admission';
import { RecordingControls, RecordingIndicator } from './Recording';
import { VideoTile } from './VideoTile';

/** The seed's props, plus optional ones for embedding. */
export interface WebRTCWidgetProps {
  conversationId?: number | null;
  /** The doctor who starts the consultation (true) or the patient who joins it (false). */
  isInitiator: boolean;
  /** `…/conference/{id}?code=…`: the consultation to join (or, for a doctor, to resume). */
  initialConferenceLink?: string | null;
  onClose?: () => void;
  /** Default: the signed-in user. */
  auth?: AuthState | null;
  sessionType?: SessionType;
  /** Called once the consultation (and its conversation) is known. */
  onSessionInfo?: (info: { sessionId: number; conversationId: number | null }) => void;
}

export function parseConferenceLink(link: string): { sessionId: number; code: string } | null {
  let url: URL;
  try {
    url = new URL(link, typeof location !== 'undefined' ? location.href : 'http://localhost/');
  } catch {
    return null;
  }
  const m = /\/conference\/(\d+)\/?$/.exec(url.pathname);
  const code = url.searchParams.get('code')?.trim();
  if (!m || !code) return null;
  return { sessionId: Number(m[1]), code };
}

/** The session of a `/conference/{id}` link (a guest's: its token is the proof, no code). */
export function conferenceSessionOf(link: string): number | null {
  try {
    const url = new URL(link, typeof location !== 'undefined' ? location.href : 'http://localhost/');
    const m = /\/conference\/(\d+)\/?$/.exec(url.pathname);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

type Phase =
  | { kind: 'starting'; step: string }
  | { kind: 'error'; code: string; message: string; retry: boolean }
  | { kind: 'call'; call: ConsultationCall };

/** A remote tile's caption: the person, or the screen they share (a further stream of theirs). */
function streamLabel(id: string, u: UserRef | null, names: Record<string, string>): string {
  return isSecondaryStream(id) ? `Écran partagé — ${personName(u, names)}` : personName(u, names);
}

const canShareScreen = (): boolean =>
  typeof navigator !== 'undefined' && typeof navigator.mediaDevices?.getDisplayMedia === 'function';

function stateText(s: CallSnapshot, isDoctor: boolean): string {
  switch (s.state) {
    case 'idle':
    case 'connecting':
      return 'Connexion en cours…';
    case 'lobby':
      return 'Le médecin va vous recevoir';
    case 'waiting':
      return isDoctor ? 'En attente du patient…' : 'En attente du médecin…';
    case 'connected':
      return 'Connecté';
    case 'reconnecting':
      return `Connexion perdue — reconnexion en cours${s.attempt ? ` (tentative ${s.attempt})` : ''}…`;
    case 'ended':
      switch (s.endedReason) {
        case 'left':
          return 'Vous avez quitté la consultation.';
        case 'declined':
          return "Le médecin n'a pas accepté votre participation à cette consultation.";
        case 'removed':
          return 'Vous avez été retiré de la consultation par le médecin.';
        default:
          return 'La consultation est terminée.';
      }
    case 'failed':
      return s.error?.message ?? 'La connexion a échoué.';
  }
}

/**
 * What the server said when turning us away, worth showing under our own sentence: the
 * doctor's reason (`… declined to admit you: {reason}`), or a message we have no sentence for;
 * nothing for the server's default wording, which our sentence already says.
 */
export function refusalDetail(message: string | null): string | null {
  if (!message) return null;
  const reason = /declined to admit you: ([\s\S]+)$/.exec(message);
  if (reason) return `Motif : ${reason[1].trim()}`;
  if (/^the doctor (declined|removed)/i.test(message)) return null;
  return message;
}

/** Copies text; falls back to a selected field when the Clipboard API is unavailable (http). */
async function copyText(text: string, field: HTMLInputElement | null): Promise<boolean> {
  try {
    if (navigator.clipboard?.writeText) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    /* fall back */
  }
  if (field) {
    field.focus();
    field.select();
    try {
      return document.execCommand?.('copy') ?? false;
    } catch {
      return false;
    }
  }
  return false;
}

/**
 * The video consultation: camera and microphone, the doctor's conference link and waiting
 * room, local and remote video, mute, camera off, hang up, connection state, and plain-language
 * messages for what can go wrong (code, permissions, lost connection with automatic
 * reconnection).
 */
export function WebRTCWidget(props: WebRTCWidgetProps) {
  const { isInitiator, initialConferenceLink, onClose, sessionType = 'audio_video', onSessionInfo } = props;
  const services = useServices();
  const auth = useMemo(() => props.auth ?? loadAuth(), [props.auth]);
  const [phase, setPhase] = useState<Phase>({ kind: 'starting', step: 'Préparation…' });
  const [link, setLink] = useState<ConferenceLink | null>(null);
  const [localStream, setLocalStream] = useState<MediaStream | null>(null);
  const [copied, setCopied] = useState<'idle' | 'copied' | 'failed'>('idle');
  const [linkSent, setLinkSent] = useState<'idle' | 'sending' | 'sent' | 'failed'>('idle');
  const [attemptKey, setAttemptKey] = useState(0);
  const [screenError, setScreenError] = useState(false);
  const linkField = useRef<HTMLInputElement | null>(null);
  const sessionRef = useRef<number | null>(null);
  const signalingStatus = useSignalingStatus(services.signaling);
  const call = phase.kind === 'call' ? phase.call : null;
  const snap = useCallSnapshot(call);
  const isDoctor = auth?.user.role === 'medecin';
  const isGuest = auth?.user.role === 'invite';
  const infoSent = useRef<string>('');
  const [sessionId, setSessionId] = useState<number | null>(null);
  const [waitingRoomOn, setWaitingRoomOn] = useState<boolean | null>(null);

  useEffect(() => {
    let alive = true;
    let stream: MediaStream | null = null;
    let created: ConsultationCall | null = null;
    const fail = (code: string, message?: string, retry = false) =>
      alive && setPhase({ kind: 'error', code, message: describe(code, message), retry });

    (async () => {
      if (!auth) return fail('refused');
      const api = services.api(auth.token);
      const self: UserRef = { userId: auth.user.userId, userType: auth.user.role };
      const guest = auth.user.role === 'invite';
      // A guest's link has no code: its token, bound to the session, is the proof.
      const guestSession = guest && initialConferenceLink ? conferenceSessionOf(initialConferenceLink) : null;
      const parsed =
        guestSession !== null
          ? { sessionId: guestSession, code: '' }
          : initialConferenceLink
            ? parseConferenceLink(initialConferenceLink)
            : null;
      if (!isInitiator && !parsed) return fail('bad_link');
      if (isInitiator && auth.user.role !== 'medecin') return fail('doctor_only');

      // The server's TURN, for clinics without UDP: from the code check or the new session.
      let iceServers: RTCIceServer[] = [];
      // A wrong or expired code is told before asking for the camera.
      if (parsed && !isInitiator && !guest) {
        setPhase({ kind: 'starting', step: "Vérification du code d'accès…" });
        try {
          const v = await api.validateCode(parsed.code, parsed.sessionId);
          if (!v.isValid) return fail(v.reason ?? 'invalid_code');
          iceServers = v.iceServers ?? [];
        } catch (e) {
          if (e instanceof ApiError && e.status === 429) return fail('too_many_attempts');
          // Otherwise the join itself will tell.
        }
      }
      if (!alive) return;

      setPhase({ kind: 'starting', step: 'Accès à la caméra et au micro…' });
      const devices = services.mediaDevices();
      if (!devices) return fail('insecure_context');
      try {
        stream = await devices.getUserMedia({
          audio: true,
          video: sessionType === 'audio_only' ? false : { width: { ideal: 640 }, height: { ideal: 480 } },
        });
      } catch (e) {
        return fail(mediaErrorCode(e), undefined, true);
      }
      if (!alive) {
        stream.getTracks().forEach((t) => t.stop());
        return;
      }
      setLocalStream(stream);

      setPhase({ kind: 'starting', step: 'Connexion au serveur…' });
      try {
        await services.signaling.connect(socketAuthOf(auth));
      } catch (e) {
        return fail((e as { code?: string }).code ?? 'unreachable', undefined, true);
      }
      if (!alive) return;

      let sessionId: number;
      let code: string | undefined = parsed?.code || undefined;
      if (parsed) {
        sessionId = parsed.sessionId;
      } else {
        setPhase({ kind: 'starting', step: 'Création de la consultation…' });
        try {
          const created = await api.createSession({
            conversationId: props.conversationId ?? 0,
            sessionType,
            initiator: self,
          });
          if (!alive) return;
          if (!created.conferenceLink) return fail('error');
          setLink(created.conferenceLink);
          sessionId = created.session.id;
          setWaitingRoomOn(created.session.waiting_room ?? true);
          code = created.conferenceLink.joinCode;
          iceServers = created.iceServers ?? [];
        } catch (e) {
          return fail(e instanceof ApiError ? e.code : 'unreachable', (e as Error).message, true);
        }
      }
      if (isInitiator && parsed) {
        setLink({
          sessionId,
          joinCode: parsed.code,
          conferenceUrl: `${location.origin}/conference/${sessionId}`,
          fullLink: `${location.origin}/conference/${sessionId}?code=${encodeURIComponent(parsed.code)}`,
        });
        void api
          .getSession(sessionId)
          .then((s) => alive && typeof s.waiting_room === 'boolean' && setWaitingRoomOn(s.waiting_room))
          .catch(() => undefined);
      }
      if (iceServers.length === 0) {
        iceServers = await api
          .iceServers()
          .then((a) => a.iceServers)
          .catch(() => []);
        if (!alive) return;
      }
      sessionRef.current = sessionId;
      setSessionId(sessionId);
      created = new ConsultationCall({
        signaling: services.signaling,
        sessionId,
        mode: isDoctor ? 'publish' : 'join',
        code,
        conversationId: props.conversationId ?? null,
        sessionType,
        self,
        localStream: stream,
        createPeerConnection: services.createPeerConnection,
        iceServers,
        getCamera: () =>
          devices.getUserMedia({ audio: false, video: { width: { ideal: 640 }, height: { ideal: 480 } } }),
        log: (m, d) => console.debug(`[relais call ${sessionId}] ${m}`, d ?? ''),
      });
      setPhase({ kind: 'call', call: created });
      created.start();
    })();

    return () => {
      alive = false;
      created?.destroy();
      stream?.getTracks().forEach((t) => t.stop());
    };
    // One start per mount (and per explicit retry); props are read once.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [attemptKey]);

  // Tell the page which consultation and conversation this is.
  useEffect(() => {
    if (!onSessionInfo || !call) return;
    const conversationId = snap?.conversationId ?? props.conversationId ?? null;
    const key = `${call.sessionId}:${conversationId}`;
    if (infoSent.current === key) return;
    infoSent.current = key;
    onSessionInfo({ sessionId: call.sessionId, conversationId });
  }, [call, snap?.conversationId, onSessionInfo, props.conversationId]);

  // The call is over: release the camera.
  useEffect(() => {
    if (snap?.state === 'ended') localStream?.getTracks().forEach((t) => t.stop());
  }, [snap?.state, localStream]);

  const hangUp = useCallback(async () => {
    if (!call) return;
    if (isDoctor) {
      try {
        await call.hangUp({ end: true });
      } catch {
        // The socket is away: end it over REST.
        if (auth && sessionRef.current !== null) {
          await services.api(auth.token).endSession(sessionRef.current).catch(() => undefined);
        }
      }
    } else {
      await call.hangUp();
    }
  }, [call, isDoctor, auth, services]);

  const copy = async () => {
    if (!link) return;
    setCopied((await copyText(link.fullLink, linkField.current)) ? 'copied' : 'failed');
    setTimeout(() => setCopied('idle'), 2500);
  };

  const conversationForLink = props.conversationId ?? snap?.conversationId ?? null;
  const sendLink = async () => {
    if (!link || !auth || conversationForLink === null) return;
    setLinkSent('sending');
    try {
      await services.api(auth.token).sendMessage(conversationForLink, {
        contenu: `Votre consultation vidéo vous attend : ${link.fullLink}`,
        type_message: 'texte',
      });
      setLinkSent('sent');
    } catch {
      setLinkSent('failed');
    }
  };

  const others = snap ? snap.participants.filter((p) => !(auth && p.userId === auth.user.userId && p.userType === auth.user.role)) : [];
  const over = snap?.state === 'ended' || snap?.state === 'failed';

  return (
    <section className="webrtc-widget" aria-label="Consultation vidéo" data-state={snap?.state ?? phase.kind}>
      <header className="webrtc-header">
        <h2>Consultation vidéo</h2>
        <span
          className={`call-state state-${snap?.state ?? phase.kind}`}
          data-state={snap?.state ?? phase.kind}
          role="status"
        >
          {phase.kind === 'starting' ? phase.step : phase.kind === 'error' ? 'Impossible de démarrer' : snap ? stateText(snap, isDoctor) : ''}
        </span>
      </header>

      {phase.kind === 'error' && (
        <div className="call-error" role="alert" data-code={phase.code}>
          <p>{phase.message}</p>
          <div className="row">
            {phase.retry && (
              <button type="button" className="primary" onClick={() => setAttemptKey((k) => k + 1)}>
                Réessayer
              </button>
            )}
            {onClose && (
              <button type="button" onClick={onClose}>
                Fermer
              </button>
            )}
          </div>
        </div>
      )}

      {snap?.state === 'failed' && snap.error && (
        <div className="call-error" role="alert" data-code={snap.error.code}>
          <p>{snap.error.message}</p>
          {snap.error.code === 'connection_lost' && (
            <button type="button" className="primary" onClick={() => call?.retry()}>
              Réessayer
            </button>
          )}
        </div>
      )}
      {snap && !over && <RecordingIndicator recording={snap.recording} isDoctor={isDoctor} />}

      {snap?.state === 'reconnecting' && (
        <p className="call-notice reconnecting" role="status">
          La connexion a été interrompue. Reconnexion automatique en cours…
        </p>
      )}
      {call && signalingStatus !== 'connected' && !over && (
        <p className="call-notice signaling-lost" role="status">
          Connexion au serveur interrompue — reconnexion…
        </p>
      )}
      {snap?.weakLink && !over && (
        <p className="call-notice weak-link" role="status">
          Votre connexion est faible : la vidéo que vous recevez passe en qualité réduite.
        </p>
      )}
      {snap && !snap.weakLink && Object.keys(snap.weakLinks).length > 0 && !over && (
        <p className="call-notice weak-link" role="status">
          Connexion faible de votre interlocuteur : votre vidéo lui est envoyée en qualité réduite.
        </p>
      )}

      {isDoctor && link && !over && (
        <div className="conference-link-box">
          <label htmlFor="conference-link">Lien à envoyer au patient</label>
          <div className="row">
            <input id="conference-link" ref={linkField} readOnly value={link.fullLink} onFocus={(e) => e.target.select()} />
            <button type="button" id="btn-copy-link" className="primary" onClick={() => void copy()}>
              {copied === 'copied' ? 'Copié ✓' : copied === 'failed' ? 'Copiez le lien' : 'Copier le lien'}
            </button>
          </div>
          <p>
            Code d'accès : <strong id="join-code">{link.joinCode}</strong>
          </p>
          {conversationForLink !== null && (
            <button
              type="button"
              id="btn-send-link"
              className="link-button"
              disabled={linkSent === 'sending' || linkSent === 'sent'}
              onClick={() => void sendLink()}
            >
              {linkSent === 'sent'
                ? 'Lien envoyé dans la conversation ✓'
                : linkSent === 'failed'
                  ? "Échec de l'envoi — réessayer"
                  : 'Envoyer le lien dans la conversation'}
            </button>
          )}
        </div>
      )}

      {snap?.state === 'lobby' && <LobbyNotice since={snap.waitingSince} guest={isGuest} />}

      {isDoctor && call && snap && !over && <WaitingList call={call} waiting={snap.waitingRoom} />}

      {snap && (snap.state === 'waiting' || (isDoctor && others.length === 0 && !over)) && (
        <div className="waiting-room" role="status">
          {isDoctor
            ? 'Salle d’attente : le patient n’est pas encore arrivé. Envoyez-lui le lien ci-dessus.'
            : 'Salle d’attente : le médecin va vous rejoindre.'}
        </div>
      )}

      {(phase.kind === 'call' || localStream) && !over && (
        <div className={`video-grid${(snap?.remoteStreams.length ?? 0) > 1 ? ' multi' : ''}`}>
          {snap?.remoteStreams.map((r) => (
            <VideoTileRemote
              key={r.id}
              id={r.id}
              stream={r.stream}
              label={streamLabel(r.id, r.user, snap.names)}
              audioOnly={!!(r.user && !isSecondaryStream(r.id) && snap.audioOnlyUsers[userKey(r.user)])}
              weak={!!(r.user && !isSecondaryStream(r.id) && snap.weakLinks[userKey(r.user)])}
            />
          ))}
          {(!snap || snap.remoteStreams.length === 0) && (
            <div className="video-tile remote empty">
              <div className="video-placeholder">
                {isDoctor ? 'Le patient apparaîtra ici.' : 'Le médecin apparaîtra ici.'}
              </div>
            </div>
          )}
          <VideoTile
            stream={localStream}
            label="Vous"
            local
            badge={snap?.audioOnly ? 'Audio seulement' : snap?.weakLink ? 'Connexion faible' : undefined}
            className={`self${snap?.audioOnly ? ' audio-only' : ''}${snap?.weakLink ? ' weak-link' : ''}`}
          />
          {snap?.screenStream && (
            <VideoTile stream={snap.screenStream} label="Votre écran partagé" local className="self screen" />
          )}
        </div>
      )}

      {screenError && snap && !over && (
        <p className="call-notice" role="status">
          Le partage d&apos;écran n&apos;a pas pu démarrer (refusé ou non disponible).
        </p>
      )}
      {call && snap && !over && (
        <div className="call-controls">
          <button
            type="button"
            id="btn-mute"
            aria-pressed={!snap.micEnabled}
            onClick={() => call.setMicrophoneEnabled(!snap.micEnabled)}
          >
            {snap.micEnabled ? 'Couper le micro' : 'Activer le micro'}
          </button>
          <button
            type="button"
            id="btn-camera"
            aria-pressed={!snap.cameraEnabled}
            onClick={() => call.setCameraEnabled(!snap.cameraEnabled)}
          >
            {snap.cameraEnabled ? 'Couper la caméra' : 'Activer la caméra'}
          </button>
          {canShareScreen() && !snap.audioOnly && snap.state !== 'lobby' && (
            <button
              type="button"
              id="btn-screen"
              aria-pressed={!!snap.screenStream}
              onClick={() =>
                snap.screenStream
                  ? call.stopScreenShare()
                  : (setScreenError(false), void call.startScreenShare().catch(() => setScreenError(true)))
              }
            >
              {snap.screenStream ? 'Arrêter le partage' : "Partager l'écran"}
            </button>
          )}
          {snap.state !== 'lobby' && <AudioOnlyControl call={call} audioOnly={snap.audioOnly} />}
          <button type="button" id="btn-hangup" className="danger" onClick={() => void hangUp()}>
            {isDoctor ? 'Terminer la consultation' : 'Raccrocher'}
          </button>
        </div>
      )}

      {isDoctor && call && snap && !over && (
        <ParticipantList call={call} others={others} names={snap.names} audioOnlyUsers={snap.audioOnlyUsers} />
      )}

      {isDoctor && call && auth && sessionId !== null && !over && (
        <div className="doctor-session-tools">
          <GuestInviteForm api={services.api(auth.token)} sessionId={sessionId} />
          {waitingRoomOn !== null && (
            <WaitingRoomToggle api={services.api(auth.token)} sessionId={sessionId} initial={waitingRoomOn} />
          )}
        </div>
      )}

      {isDoctor && call && snap && auth && !over && (
        <RecordingControls
          call={call}
          recording={snap.recording}
          api={services.api(auth.token)}
          live={snap.state === 'connected' || snap.state === 'waiting'}
        />
      )}

      {snap?.state === 'ended' && (
        <div className="call-ended" role="status" data-reason={snap.endedReason ?? undefined}>
          <p>{stateText(snap, isDoctor)}</p>
          {refusalDetail(snap.endedMessage) && <p className="ended-message">{refusalDetail(snap.endedMessage)}</p>}
        </div>
      )}
      {over && onClose && (
        <div className="row">
          <button type="button" onClick={onClose}>
            Fermer
          </button>
        </div>
      )}
    </section>
  );
}

function VideoTileRemote(props: { id: string; stream: MediaStream; label: string; audioOnly: boolean; weak: boolean }) {
  const { id, stream, label, audioOnly, weak } = props;
  return (
    <VideoTile
      stream={stream}
      label={label}
      streamId={id}
      className={`${isSecondaryStream(id) ? 'other screen' : 'other'}${audioOnly ? ' audio-only' : ''}${weak ? ' weak-link' : ''}`}
      badge={audioOnly ? 'Audio seulement' : weak ? 'Connexion faible' : undefined}
    />
  );
}


export default WebRTCWidget;

/**
 * One browser's side of a video consultation through the relais SFU. Plain TypeScript: the
 * React widget renders its snapshots, a script could drive it alone.
 *
 * Every PeerConnection ends on the server:
 * - `publish` (the doctor): our offer with audio and video → the server's `webrtc_answer`;
 * - `join` (the patient): `request_webrtc_offer` with the code → the server's `webrtc_offer`,
 *   whose sections the server receives on are the slots for our own media (one per kind; a
 *   `sendrecv` one already carries someone's track to us) → our answer.
 * Afterwards the server re-offers whenever someone arrives or leaves; we answer. Our own
 * changes (sharing the screen, stopping it) are offered by us on `negotiationneeded`; when our
 * offer crosses one of the server's, the server's wins (it refuses ours with
 * `negotiation_in_progress`; applying its offer rolls ours back) and we offer again after.
 *
 * Signaling for the PeerConnection is handled one event at a time (a queue), so candidates
 * never overtake the description they belong to. Server candidates that come before a remote
 * description are kept until there is one.
 *
 * Waiting room: a patient's (or a guest's) `request_webrtc_offer` may be answered `waiting: true`:
 * the call stays in `lobby` (no media, no connection timeout) until the doctor admits them
 * (`admitted`, then the server's offer as for any join), declines them (`declined`: the call ends
 * with the doctor's message) or, later, removes them (`removed`: the call ends, media stops).
 * The doctor's call keeps the list of who waits (`participant_waiting` / `_left`) and admits,
 * declines or removes people.
 *
 * Audio only (`setAudioOnly`): every video transceiver of ours goes `inactive` (our camera is
 * stopped and unhooked, and we receive nobody's video): our next description says so whoever
 * offers it; the server is told (`set_audio_only`) and renegotiates its side. Back to video:
 * a new camera track, the transceivers as they were. Who else is audio only comes from the
 * server's `audio_only` events.
 *
 * Lost media (connection `failed`, or `disconnected` for longer than a grace period, or the
 * server saying our connection failed) → a fresh PeerConnection and the same entry again
 * (the server replaces a participant's old PeerConnection with the new one), with a bounded
 * number of attempts and growing delays; then the call stops in `failed` until `retry()`.
 */
import type {
  AudioOnlyPayload,
  ConnectionQualityPayload,
  IceCandidateInit,
  ParticipantWaitingPayload,
  ParticipantEventPayload,
  RecordingStartedPayload,
  RecordingView,
  ServerAnswerPayload,
  ServerCandidatesPayload,
  ServerOfferPayload,
  SessionEndedPayload,
  SessionType,
  UserRef,
  WebrtcErrorPayload,
} from './events';
import { sameUser, userKey, userOfStreamId } from './events';
import { describe, FATAL_CODES } from './messages';
import { iceUfrag, receiveSlots, sendingStreamIds } from './sdp';
import { SignalingError, type SignalingService } from './signalingService';

export type CallMode = 'publish' | 'join';

export type CallState =
  | 'idle'
  | 'connecting'
  /** In the waiting room: the doctor has not admitted us yet. */
  | 'lobby'
  /** Connected, nobody else there yet. */
  | 'waiting'
  | 'connected'
  | 'reconnecting'
  | 'ended'
  | 'failed';

export interface CallError {
  code: string;
  message: string;
}

export interface RemoteStream {
  /** The msid stream id, `"{role}-{id}"`. */
  id: string;
  user: UserRef | null;
  stream: MediaStream;
}

export interface CallSnapshot {
  state: CallState;
  /** The PeerConnection's own state. */
  media: RTCPeerConnectionState;
  participants: UserRef[];
  remoteStreams: RemoteStream[];
  error: CallError | null;
  /** Reconnection attempts since the media was last connected. */
  attempt: number;
  conversationId: number | null;
  endedReason: string | null;
  micEnabled: boolean;
  cameraEnabled: boolean;
  /** Our shared screen while we share it (sent as a second video track). */
  screenStream: MediaStream | null;
  /** Set while the consultation is recorded (every participant sees it). */
  recording: RecordingInfo | null;
  /** In the lobby: since when we wait (RFC 3339, the server's clock when it said). */
  waitingSince: string | null;
  /** Why the call ended when the server said more (the doctor's message when declined). */
  endedMessage: string | null;
  /** The doctor's view of the waiting room: who waits, since when. */
  waitingRoom: WaitingPerson[];
  /** Names the server gave (who waited), by {@link userKey}. */
  names: Record<string, string>;
  /** We are in audio-only mode (no video either way). */
  audioOnly: boolean;
  audioOnlyReason: string | null;
  /** Others in audio-only mode, by {@link userKey}, with their reason. */
  audioOnlyUsers: Record<string, { reason: string | null }>;
  /** Our own link is weak: the server sends us reduced video (`connection_quality`). */
  weakLink: boolean;
  /** Others whose link is weak, by {@link userKey}: what we send them is reduced. */
  weakLinks: Record<string, true>;
}

export interface WaitingPerson {
  user: UserRef;
  name: string;
  since: string;
}

export interface RecordingInfo {
  startedAt: string;
  startedBy: UserRef;
}

export type CallSignaling = Pick<SignalingService, 'on' | 'request'> &
  Partial<Pick<SignalingService, 'onStatus'>>;

export interface ReconnectPolicy {
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** How long `disconnected` may last before we rebuild the connection. */
  disconnectedGraceMs: number;
  /** How long a new PeerConnection may take to connect before we rebuild it. */
  connectTimeoutMs: number;
}

export interface CallOptions {
  signaling: CallSignaling;
  sessionId: number;
  mode: CallMode;
  /** The join code (mode `join`). */
  code?: string;
  conversationId?: number | null;
  sessionType?: SessionType;
  self: UserRef;
  localStream: MediaStream;
  createPeerConnection?: (config: RTCConfiguration) => RTCPeerConnection;
  /**
   * The server's own TURN (from the session or `/webrtc/ice-servers`): the way out for
   * clinics whose firewall drops UDP. No STUN or TURN of anyone else.
   */
  iceServers?: RTCIceServer[];
  reconnect?: Partial<ReconnectPolicy>;
  log?: (message: string, detail?: unknown) => void;
  /** Asks for the screen to share (default: `navigator.mediaDevices.getDisplayMedia`). */
  getDisplayMedia?: () => Promise<MediaStream>;
  /** A new camera, when audio-only mode ends (default: `getUserMedia({video})`). */
  getCamera?: () => Promise<MediaStream>;
}

const DEFAULT_POLICY: ReconnectPolicy = {
  maxAttempts: 6,
  baseDelayMs: 1_000,
  maxDelayMs: 8_000,
  disconnectedGraceMs: 4_000,
  connectTimeoutMs: 10_000,
};

/** Candidates gathered within this window travel in one `webrtc_ice_candidates`. */
const CANDIDATE_BATCH_MS = 30;
const MAX_BUFFERED_CANDIDATES = 64;
const MAX_RETIRED_UFRAGS = 32;

type Listener = (s: CallSnapshot) => void;

export class ConsultationCall {
  private readonly o: CallOptions;
  private readonly policy: ReconnectPolicy;
  private pc: RTCPeerConnection | null = null;
  /** Increases with every PeerConnection; work for an older one is dropped. */
  private generation = 0;
  private queue: Promise<void> = Promise.resolve();
  private pendingRemoteCandidates: IceCandidateInit[] = [];
  private outgoingCandidates: IceCandidateInit[] = [];
  private candidateTimer: ReturnType<typeof setTimeout> | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private disconnectedTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  /** Join mode: our request is out, the server's first offer not yet applied. */
  private awaitingJoinOffer = false;
  private localAttached = false;
  /** The first offer/answer of the current PeerConnection completed: our own changes (a
   * shared screen) are offered by us from then on. */
  private negotiatedOnce = false;
  /** Our shared screen: its stream, and its sender on the current PeerConnection. */
  private screen: { stream: MediaStream; sender: RTCRtpSender | null } | null = null;
  /**
   * ICE ufrags of server PeerConnections we dropped (each has its own). An offer or answer
   * that still carries one was sent for a connection the server has since replaced (for
   * instance a renegotiation emitted just before our rejoin reached it): it is ignored.
   */
  private readonly retiredUfrags = new Set<string>();
  /** Ufrags of the descriptions the server sent for the current PeerConnection. */
  private readonly currentUfrags = new Set<string>();
  private readonly streams = new Map<string, MediaStream>();
  private readonly unsubscribers: (() => void)[] = [];
  private readonly listeners = new Set<Listener>();
  private snap: CallSnapshot;
  /** The server admitted us on the current PeerConnection (a late `waiting: true` ack is stale). */
  private admittedGen = -1;
  /**
   * Audio only: the directions our video transceivers had before we made them inactive, and
   * the one that sent our camera.
   */
  private savedDirections = new Map<RTCRtpTransceiver, RTCRtpTransceiverDirection>();
  private cameraTransceiver: RTCRtpTransceiver | null = null;

  constructor(options: CallOptions) {
    this.o = options;
    this.policy = { ...DEFAULT_POLICY, ...options.reconnect };
    this.snap = {
      state: 'idle',
      media: 'new',
      participants: [],
      remoteStreams: [],
      error: null,
      attempt: 0,
      conversationId: options.conversationId ?? null,
      endedReason: null,
      micEnabled: true,
      cameraEnabled: true,
      screenStream: null,
      recording: null,
      waitingSince: null,
      endedMessage: null,
      waitingRoom: [],
      names: {},
      audioOnly: false,
      audioOnlyReason: null,
      audioOnlyUsers: {},
      weakLink: false,
      weakLinks: {},
    };
  }

  // ---- public API ---------------------------------------------------------------------------

  getSnapshot = (): CallSnapshot => this.snap;

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  /** The current PeerConnection (diagnostics, statistics). */
  get peerConnection(): RTCPeerConnection | null {
    return this.pc;
  }

  get sessionId(): number {
    return this.o.sessionId;
  }

  start(): void {
    if (this.snap.state !== 'idle') return;
    const s = this.o.signaling;
    const mine = (p: { sessionId: number | null }) => p.sessionId === this.o.sessionId;
    this.unsubscribers.push(
      s.on('webrtc_offer', (p) => mine(p) && this.onServerOffer(p)),
      s.on('webrtc_answer', (p) => mine(p) && this.onServerAnswer(p)),
      s.on('webrtc_ice_candidates', (p) => mine(p) && this.onServerCandidates(p)),
      s.on('participant_joined', (p) => mine(p) && this.onParticipants(p)),
      s.on('participant_left', (p) => mine(p) && this.onParticipantLeft(p)),
      s.on('session_ended', (p) => mine(p) && this.onSessionEnded(p)),
      s.on('webrtc_error', (p) => (mine(p) || p.sessionId === null) && this.onWebrtcError(p)),
      s.on('recording_started', (p) => mine(p) && this.onRecordingStarted(p)),
      s.on('recording_stopped', (p) => mine(p) && this.update({ recording: null })),
      s.on('session_moved', (p) => mine(p) && this.onSessionMoved(p.reason)),
      s.on('waiting', (p) => mine(p) && this.enterLobby(p.since)),
      s.on('admitted', (p) => mine(p) && this.onAdmitted()),
      s.on('declined', (p) => mine(p) && this.onRefused('declined', p.message)),
      s.on('removed', (p) => mine(p) && this.onRefused('removed', p.message)),
      s.on('participant_waiting', (p) => mine(p) && this.onParticipantWaiting(p)),
      s.on('participant_waiting_left', (p) => mine(p) && this.dropWaiting(p.user)),
      s.on('audio_only', (p) => mine(p) && this.onAudioOnly(p)),
      s.on('connection_quality', (p) => mine(p) && this.onConnectionQuality(p)),
    );
    // The server forgets who waits when their socket goes: back in the waiting room after a
    // reconnection, ask again.
    let socketLost = false;
    const offStatus = s.onStatus?.((status) => {
      if (status === 'reconnecting') socketLost = true;
      else if (status === 'connected' && socketLost) {
        socketLost = false;
        if (this.snap.state === 'lobby') {
          this.log('socket back while waiting: asking to join again');
          this.establish();
        }
      }
    });
    if (offStatus) this.unsubscribers.push(offStatus);
    this.update({ state: 'connecting' });
    this.establish();
  }

  setMicrophoneEnabled(enabled: boolean): void {
    for (const t of this.o.localStream.getAudioTracks()) t.enabled = enabled;
    this.update({ micEnabled: enabled });
  }

  setCameraEnabled(enabled: boolean): void {
    for (const t of this.o.localStream.getVideoTracks()) t.enabled = enabled;
    this.update({ cameraEnabled: enabled });
  }

  /**
   * Shares the screen: a second video track, in a stream of its own (the others see it beside
   * our camera, and it is recorded to a file of its own). The browser's own "stop sharing"
   * ends it like {@link stopScreenShare}. Rejects when the user refuses.
   */
  async startScreenShare(): Promise<void> {
    if (this.screen || this.isOver()) return;
    const get =
      this.o.getDisplayMedia ??
      (() => navigator.mediaDevices.getDisplayMedia({ video: true, audio: false }));
    const stream = await get();
    const track = stream.getVideoTracks()[0];
    if (!track || this.isOver()) {
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    track.addEventListener?.('ended', () => this.stopScreenShare());
    this.screen = { stream, sender: null };
    this.update({ screenStream: stream });
    this.attachScreen();
  }

  /** Stops sharing the screen: its track leaves the call for everyone. */
  stopScreenShare(): void {
    const screen = this.screen;
    if (!screen) return;
    this.screen = null;
    for (const t of screen.stream.getTracks()) t.stop();
    if (screen.sender && this.pc) {
      try {
        this.pc.removeTrack(screen.sender);
      } catch (e) {
        this.log('removing the screen track failed', e);
      }
    }
    this.update({ screenStream: null });
  }

  /**
   * The doctor starts recording the consultation; `consent` confirms every participant
   * agreed (the server refuses without it). Rejects with the server's code
   * (`consent_required`, `already_recording`, `session_not_live`, `forbidden`, …).
   */
  async startRecording(consent: boolean): Promise<void> {
    await this.o.signaling.request('start_recording', { sessionId: this.o.sessionId, consent });
  }

  /** The doctor stops recording; resolves with the recordings it finished. */
  async stopRecording(): Promise<RecordingView[]> {
    const ack = await this.o.signaling.request('stop_recording', { sessionId: this.o.sessionId }, 20_000);
    this.update({ recording: null });
    return ack.recordings;
  }

  // ---- the doctor's waiting room ------------------------------------------------------------

  /** Lets someone in from the waiting room (the server then connects them). */
  async admit(user: UserRef): Promise<void> {
    try {
      await this.o.signaling.request('admit_participant', { sessionId: this.o.sessionId, user });
    } catch (e) {
      // Not (or no longer) waiting: the list was stale.
      if (e instanceof SignalingError && e.code === 'not_waiting') this.dropWaiting(user);
      throw e;
    }
    this.dropWaiting(user);
  }

  /** Turns someone in the waiting room away; they are told (with `reason` when given). */
  async decline(user: UserRef, reason?: string): Promise<void> {
    try {
      await this.o.signaling.request('decline_participant', {
        sessionId: this.o.sessionId,
        user,
        ...(reason ? { reason } : {}),
      });
    } catch (e) {
      if (e instanceof SignalingError && e.code === 'not_waiting') this.dropWaiting(user);
      throw e;
    }
    this.dropWaiting(user);
  }

  /** Removes someone from the consultation (they cannot come back with the same link). */
  async remove(user: UserRef): Promise<void> {
    await this.o.signaling.request('remove_participant', { sessionId: this.o.sessionId, user });
  }

  // ---- audio only ---------------------------------------------------------------------------

  /**
   * Audio only (`on`), or back to video. On: our camera stops, and every video transceiver
   * goes `inactive` (we send and receive no video; the renegotiation that follows, ours or the
   * server's, says so), and the server is told with `reason`. Off: a new camera, the
   * transceivers as they were, and the server is told. Rejects with the server's code when it
   * refuses (audio-only stays on locally: the link is still spared).
   */
  async setAudioOnly(on: boolean, reason?: string): Promise<void> {
    if (this.isOver() || on === this.snap.audioOnly) return;
    const payload = { sessionId: this.o.sessionId, audioOnly: on, ...(reason ? { reason } : {}) };
    if (on) {
      this.stopScreenShare();
      this.update({ audioOnly: true, audioOnlyReason: reason ?? null });
      const told = this.o.signaling.request('set_audio_only', payload);
      if (this.pc) this.applyAudioOnly(this.pc);
      this.stopCamera();
      await told;
      return;
    }
    const camera = await this.newCamera();
    if (this.isOver() || !this.snap.audioOnly) {
      for (const t of camera.getTracks()) t.stop();
      return;
    }
    const track = camera.getVideoTracks()[0];
    if (track) {
      this.o.localStream.addTrack(track);
      if (!this.snap.cameraEnabled) track.enabled = false;
    }
    this.update({ audioOnly: false, audioOnlyReason: null });
    const restored = this.pc ? this.restoreVideo(this.pc, track ?? null) : true;
    const told = this.o.signaling.request('set_audio_only', payload);
    if (!restored) {
      // No slot for the camera on this PeerConnection (rebuilt while audio only): a fresh one
      // takes every local track.
      this.log('no slot to send the camera on: connecting again');
      this.update({ state: 'reconnecting', attempt: 0 });
      this.establish();
    }
    await told;
  }

  /** After `failed`: start over (the attempt counter restarts). */
  retry(): void {
    if (this.snap.state !== 'failed' || this.snap.error && FATAL_CODES.has(this.snap.error.code)) {
      return;
    }
    this.update({ state: 'reconnecting', error: null, attempt: 0 });
    this.establish();
  }

  /**
   * Leaves the call. `end: true` (the doctor) ends the consultation for everyone; otherwise the
   * others see us leave.
   */
  async hangUp(options: { end?: boolean } = {}): Promise<void> {
    if (this.isOver()) return;
    const event = options.end ? 'end_session' : 'leave_session';
    this.finish('ended', options.end ? 'ended_by_doctor' : 'left');
    try {
      await this.o.signaling.request(event, { sessionId: this.o.sessionId }, 5_000);
    } catch (e) {
      this.log(`${event} failed`, e);
      if (options.end) throw e;
    }
  }

  /** Stops everything without telling the server (page closed, component gone). */
  destroy(): void {
    if (!this.isOver()) this.finish('ended', 'closed');
  }

  // ---- connection lifecycle -----------------------------------------------------------------

  private isOver(): boolean {
    return this.snap.state === 'ended' || (this.snap.state === 'failed' && this.reconnectTimer === null && this.pc === null);
  }

  private establish(): void {
    this.clearTimers();
    const pc = this.newPeerConnection();
    const gen = this.generation;
    // A connection that never comes up (media path blocked) is rebuilt like a lost one.
    this.armConnectTimer(gen);
    const entry = this.o.mode === 'publish' ? this.publish(pc, gen) : this.join(gen);
    entry.catch((e) => this.onFailure(e, gen));
  }

  private armConnectTimer(gen: number): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null;
      if (gen === this.generation && this.snap.state !== 'lobby' && this.pc?.connectionState !== 'connected') {
        this.scheduleReconnect('connect_timeout');
      }
    }, this.policy.connectTimeoutMs);
  }

  private newPeerConnection(): RTCPeerConnection {
    this.closePeerConnection();
    this.generation += 1;
    const gen = this.generation;
    const make =
      this.o.createPeerConnection ?? ((config: RTCConfiguration) => new RTCPeerConnection(config));
    // The server's candidates come with its SDP; its TURN relays when nothing else gets through.
    const pc = make({
      iceServers: this.o.iceServers ?? [],
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    this.pc = pc;
    this.queue = Promise.resolve();
    this.pendingRemoteCandidates = [];
    this.outgoingCandidates = [];
    this.localAttached = false;
    this.negotiatedOnce = false;
    this.savedDirections = new Map();
    this.cameraTransceiver = null;
    if (this.screen) this.screen.sender = null;
    // Our own changes after the first negotiation (a shared screen starts or stops): we offer.
    // Before it, the entry (our first offer, or our answer to the server's) carries them.
    pc.onnegotiationneeded = () => {
      if (gen !== this.generation) return;
      this.enqueue((p, g) => this.offerChanges(p, g));
    };
    pc.onicecandidate = (ev) => {
      if (gen !== this.generation || !ev.candidate || !ev.candidate.candidate) return;
      const c = ev.candidate;
      this.outgoingCandidates.push({
        candidate: c.candidate,
        sdpMid: c.sdpMid,
        sdpMLineIndex: c.sdpMLineIndex,
        usernameFragment: c.usernameFragment,
      });
      if (!this.candidateTimer) {
        this.candidateTimer = setTimeout(() => this.flushCandidates(gen), CANDIDATE_BATCH_MS);
      }
    };
    pc.ontrack = (ev) => {
      if (gen !== this.generation) return;
      const stream = ev.streams[0];
      if (!stream) return;
      if (this.streams.get(stream.id) !== stream) {
        this.streams.set(stream.id, stream);
        stream.addEventListener?.('removetrack', () => {
          if (stream.getTracks().length === 0 && this.streams.get(stream.id) === stream) {
            this.streams.delete(stream.id);
            this.publishStreams();
          }
        });
      }
      this.publishStreams();
    };
    pc.onconnectionstatechange = () => {
      if (gen !== this.generation) return;
      this.onMediaState(pc.connectionState);
    };
    this.update({ media: pc.connectionState ?? 'new' });
    return pc;
  }

  private closePeerConnection(): void {
    const pc = this.pc;
    this.pc = null;
    for (const u of this.currentUfrags) this.retiredUfrags.add(u);
    this.currentUfrags.clear();
    while (this.retiredUfrags.size > MAX_RETIRED_UFRAGS) {
      this.retiredUfrags.delete(this.retiredUfrags.values().next().value as string);
    }
    if (this.candidateTimer) {
      clearTimeout(this.candidateTimer);
      this.candidateTimer = null;
    }
    if (pc) {
      pc.onicecandidate = null;
      pc.onnegotiationneeded = null;
      pc.ontrack = null;
      pc.onconnectionstatechange = null;
      try {
        pc.close();
      } catch {
        /* already closed */
      }
    }
    if (this.streams.size) {
      this.streams.clear();
      this.publishStreams();
    }
  }

  /** The doctor's entry: our offer with our tracks. */
  private async publish(pc: RTCPeerConnection, gen: number): Promise<void> {
    const withVideo = this.o.sessionType !== 'audio_only';
    for (const track of this.o.localStream.getTracks()) {
      if (track.kind === 'video' && !withVideo) continue;
      pc.addTrack(track, this.o.localStream);
    }
    this.localAttached = true;
    const offer = await pc.createOffer();
    if (gen !== this.generation) return;
    await pc.setLocalDescription(offer);
    if (gen !== this.generation) return;
    await this.o.signaling.request('webrtc_offer', {
      sessionId: this.o.sessionId,
      conversationId: this.o.conversationId ?? undefined,
      sdpOffer: pc.localDescription?.sdp ?? offer.sdp ?? '',
      sessionType: this.o.sessionType ?? 'audio_video',
    });
  }

  /**
   * The patient's (or guest's) entry: ask the server for its offer with the code (a guest's
   * token is its proof). `waiting: true`: the waiting room, until the doctor admits us.
   */
  private async join(gen: number): Promise<void> {
    this.awaitingJoinOffer = true;
    const guest = this.o.self.userType === 'invite';
    const ack = await this.o.signaling.request('request_webrtc_offer', {
      sessionId: this.o.sessionId,
      ...(this.o.code ? { code: this.o.code } : guest ? {} : { code: '' }),
      ...(guest ? {} : { user: this.o.self }),
      action: 'join_conference',
    });
    if (gen !== this.generation) return;
    if (ack?.waiting && this.admittedGen !== gen) this.enterLobby(null);
  }

  /** The waiting room: no media until the doctor admits us, and no connection timeout. */
  private enterLobby(since: string | null): void {
    if (this.isOver() || this.o.mode !== 'join' || this.admittedGen === this.generation) return;
    if (this.connectTimer) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
    this.update({
      state: 'lobby',
      waitingSince: since ?? this.snap.waitingSince ?? new Date().toISOString(),
    });
  }

  /** The doctor let us in: the server's offer follows. */
  private onAdmitted(): void {
    if (this.isOver()) return;
    this.admittedGen = this.generation;
    this.update({ state: 'connecting', waitingSince: null });
    this.armConnectTimer(this.generation);
  }

  /** Declined in the waiting room, or removed from the call: the end, with the reason. */
  private onRefused(reason: 'declined' | 'removed', message?: string): void {
    if (this.isOver()) return;
    this.finish('ended', reason);
    this.update({ endedMessage: message ?? null, waitingSince: null });
  }

  private onParticipantWaiting(p: ParticipantWaitingPayload): void {
    const key = userKey(p.user);
    const rest = this.snap.waitingRoom.filter((w) => !sameUser(w.user, p.user));
    this.update({
      waitingRoom: [...rest, { user: p.user, name: p.name ?? '', since: p.since }],
      names: p.name ? { ...this.snap.names, [key]: p.name } : this.snap.names,
    });
  }

  private dropWaiting(user: UserRef): void {
    if (!this.snap.waitingRoom.some((w) => sameUser(w.user, user))) return;
    this.update({ waitingRoom: this.snap.waitingRoom.filter((w) => !sameUser(w.user, user)) });
  }

  private onAudioOnly(p: AudioOnlyPayload): void {
    if (sameUser(p.user, this.o.self)) return;
    const key = userKey(p.user);
    const next = { ...this.snap.audioOnlyUsers };
    if (p.audioOnly) next[key] = { reason: p.reason ?? null };
    else delete next[key];
    this.update({ audioOnlyUsers: next });
  }

  private onConnectionQuality(p: ConnectionQualityPayload): void {
    const weak = p.quality === 'weak';
    if (sameUser(p.user, this.o.self)) {
      if (weak !== this.snap.weakLink) this.update({ weakLink: weak });
      return;
    }
    const key = userKey(p.user);
    if (weak === !!this.snap.weakLinks[key]) return;
    const next = { ...this.snap.weakLinks };
    if (weak) next[key] = true;
    else delete next[key];
    this.update({ weakLinks: next });
  }

  /** Every video transceiver inactive (remembering how it was), our camera unhooked. */
  private applyAudioOnly(pc: RTCPeerConnection): void {
    const camera = new Set<unknown>(this.o.localStream.getVideoTracks());
    for (const t of pc.getTransceivers()) {
      if (transceiverKind(t) !== 'video' || t.direction === 'stopped' || t.direction === 'inactive') continue;
      if (!this.savedDirections.has(t)) this.savedDirections.set(t, t.direction);
      if (t.sender.track && camera.has(t.sender.track)) this.cameraTransceiver = t;
      t.direction = 'inactive';
      if (t.sender.track) {
        t.sender.replaceTrack(null).catch((e) => this.log('unhooking the camera failed', e));
      }
    }
  }

  /** The transceivers as before audio only, the new camera on its own; false when the camera's
   * transceiver is not on `pc` (then a new PeerConnection is needed to send it). */
  private restoreVideo(pc: RTCPeerConnection, track: MediaStreamTrack | null): boolean {
    const live = new Set(pc.getTransceivers());
    for (const [t, dir] of this.savedDirections) {
      if (live.has(t) && t.direction !== 'stopped') t.direction = dir;
    }
    this.savedDirections = new Map();
    const cam = this.cameraTransceiver;
    this.cameraTransceiver = null;
    if (!track) return true;
    if (cam && live.has(cam)) {
      cam.sender.replaceTrack(track).catch((e) => this.log('restoring the camera failed', e));
      cam.sender.setStreams?.(this.o.localStream);
      return true;
    }
    // Rebuilt while audio only (the camera was never on this connection): joining, the
    // server's video receive slot takes it, if it offers one.
    if (this.o.mode === 'join' && pc.remoteDescription?.sdp) {
      for (const slot of receiveSlots(pc.remoteDescription.sdp)) {
        if (slot.kind !== 'video' || slot.mid === null) continue;
        const t = pc.getTransceivers().find((x) => x.mid === slot.mid);
        if (!t || t.sender.track || t.direction === 'stopped') continue;
        t.sender.replaceTrack(track).catch((e) => this.log('restoring the camera failed', e));
        t.sender.setStreams?.(this.o.localStream);
        t.direction = slot.direction === 'sendrecv' ? 'sendrecv' : 'sendonly';
        return true;
      }
    }
    // Otherwise (the doctor's camera went with its own offer): a new PeerConnection.
    return false;
  }

  private stopCamera(): void {
    for (const t of this.o.localStream.getVideoTracks()) {
      t.stop();
      this.o.localStream.removeTrack(t);
    }
  }

  private newCamera(): Promise<MediaStream> {
    const get =
      this.o.getCamera ??
      (() => navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } } }));
    return get();
  }

  private onMediaState(state: RTCPeerConnectionState): void {
    this.update({ media: state });
    if (this.isOver()) return;
    if (state === 'connected') {
      for (const t of [this.disconnectedTimer, this.connectTimer]) if (t) clearTimeout(t);
      this.disconnectedTimer = null;
      this.connectTimer = null;
      this.update({ attempt: 0, error: null });
      this.refreshState();
    } else if (state === 'disconnected') {
      this.update({ state: 'reconnecting' });
      if (!this.disconnectedTimer) {
        const gen = this.generation;
        this.disconnectedTimer = setTimeout(() => {
          this.disconnectedTimer = null;
          if (gen === this.generation && this.pc?.connectionState !== 'connected') {
            this.scheduleReconnect('media_lost');
          }
        }, this.policy.disconnectedGraceMs);
      }
    } else if (state === 'failed') {
      this.scheduleReconnect('media_failed');
    }
  }

  private onFailure(e: unknown, gen: number): void {
    if (gen !== this.generation || this.isOver()) return;
    const code = e instanceof SignalingError ? e.code : 'negotiation_failed';
    this.log('signaling failed', e);
    if (code === 'declined' || code === 'removed') {
      // Asking again after the doctor said no.
      this.onRefused(code, e instanceof Error ? e.message : undefined);
    } else if (FATAL_CODES.has(code)) {
      this.fail(code, e instanceof Error ? e.message : undefined);
    } else if (code === 'negotiation_in_progress') {
      // The server's own offer is on its way; answering it settles the negotiation.
    } else {
      this.scheduleReconnect(code);
    }
  }

  /** The session lives on another node now: media again at once, same entry, new PeerConnection. */
  private onSessionMoved(reason: string): void {
    if (this.isOver()) return;
    this.log(`session moved (${reason}): connecting media again`);
    if (this.reconnectTimer) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
    this.update({ state: 'reconnecting', error: null, attempt: 0 });
    this.establish();
  }

  private scheduleReconnect(reason: string): void {
    if (this.isOver() || this.reconnectTimer) return;
    const attempt = this.snap.attempt + 1;
    if (attempt > this.policy.maxAttempts) {
      this.closePeerConnection();
      this.fail('connection_lost');
      return;
    }
    this.log(`reconnecting (${reason}), attempt ${attempt}`);
    const delay = Math.min(this.policy.baseDelayMs * 2 ** (attempt - 1), this.policy.maxDelayMs);
    this.update({ state: 'reconnecting', attempt });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (!this.isOver()) this.establish();
    }, delay);
  }

  private fail(code: string, serverMessage?: string): void {
    this.finish('failed', null, { code, message: describe(code, serverMessage) });
  }

  private finish(state: 'ended' | 'failed', reason: string | null, error: CallError | null = null): void {
    this.clearTimers();
    if (state === 'ended') this.stopScreenShare();
    this.closePeerConnection();
    this.generation += 1;
    if (state === 'ended') {
      for (const off of this.unsubscribers.splice(0)) off();
    }
    this.update({ state, endedReason: reason, error, ...(state === 'ended' ? { recording: null } : {}) });
  }

  private clearTimers(): void {
    for (const t of [this.reconnectTimer, this.disconnectedTimer, this.connectTimer]) {
      if (t) clearTimeout(t);
    }
    this.reconnectTimer = null;
    this.disconnectedTimer = null;
    this.connectTimer = null;
  }

  // ---- server events ------------------------------------------------------------------------

  /** Runs `task` after the signaling work already queued for the current PeerConnection. */
  private enqueue(task: (pc: RTCPeerConnection, gen: number) => Promise<void>): void {
    const pc = this.pc;
    const gen = this.generation;
    if (!pc) return;
    this.queue = this.queue
      .then(() => (gen === this.generation ? task(pc, gen) : undefined))
      .catch((e) => this.onFailure(e, gen));
  }

  /** False for a description meant for a server PeerConnection that was replaced. */
  private current(sdp: string): boolean {
    const u = iceUfrag(sdp);
    if (u && this.retiredUfrags.has(u)) {
      this.log('ignoring a description for a replaced connection', u);
      return false;
    }
    if (u) this.currentUfrags.add(u);
    return true;
  }

  private onServerOffer(p: ServerOfferPayload): void {
    if (!this.current(p.sdpOffer)) return;
    if (p.conversationId && this.snap.conversationId !== p.conversationId) {
      this.update({ conversationId: p.conversationId });
    }
    this.enqueue(async (pc, gen) => {
      if (pc.signalingState === 'have-local-offer') {
        // Before our first offer was answered, a server offer can only be for a connection
        // it already dropped. After, our change crossed the server's: the server's wins
        // (setRemoteDescription rolls ours back) and negotiationneeded offers ours again.
        if (!this.negotiatedOnce) return;
        this.log('our offer crossed the server\'s: taking the server\'s first');
      }
      if (this.o.mode === 'join' && !this.localAttached && !this.awaitingJoinOffer) return;
      await pc.setRemoteDescription({ type: 'offer', sdp: p.sdpOffer });
      if (gen !== this.generation) return;
      if (!this.localAttached) {
        await this.attachToReceiveSlots(pc, p.sdpOffer);
        this.localAttached = true;
        this.awaitingJoinOffer = false;
      }
      // Audio only: video sections the server added (someone came) stay inactive too.
      if (this.snap.audioOnly) this.applyAudioOnly(pc);
      await this.applyPendingCandidates(pc);
      const answer = await pc.createAnswer();
      if (gen !== this.generation) return;
      await pc.setLocalDescription(answer);
      if (gen !== this.generation) return;
      this.pruneStreams(p.sdpOffer);
      await this.o.signaling.request('webrtc_answer', {
        sessionId: this.o.sessionId,
        sdpAnswer: pc.localDescription?.sdp ?? answer.sdp ?? '',
      });
      this.markNegotiated();
    });
  }

  /** The first negotiation of this PeerConnection completed: a screen shared before (or
   * during a reconnection) joins it now. */
  private markNegotiated(): void {
    if (this.negotiatedOnce) return;
    this.negotiatedOnce = true;
    this.attachScreen();
  }

  /** Puts the shared screen on the current PeerConnection (negotiationneeded offers it). */
  private attachScreen(): void {
    const pc = this.pc;
    if (!pc || !this.screen || this.screen.sender || !this.negotiatedOnce) return;
    const track = this.screen.stream.getVideoTracks()[0];
    if (!track) return;
    this.screen.sender = pc.addTrack(track, this.screen.stream);
  }

  /** Offers our own changes (negotiationneeded), once the first negotiation is done. */
  private async offerChanges(pc: RTCPeerConnection, gen: number): Promise<void> {
    if (!this.negotiatedOnce || pc.signalingState !== 'stable') return;
    const offer = await pc.createOffer();
    if (gen !== this.generation || pc.signalingState !== 'stable') return;
    await pc.setLocalDescription(offer);
    if (gen !== this.generation) return;
    await this.o.signaling.request('webrtc_offer', {
      sessionId: this.o.sessionId,
      conversationId: this.snap.conversationId ?? undefined,
      sdpOffer: pc.localDescription?.sdp ?? offer.sdp ?? '',
      sessionType: this.o.sessionType ?? 'audio_video',
    });
  }

  /**
   * Our media goes into the server's receive slots (the sections it receives on), one per
   * kind; a kind without a slot (video in an audio-only consultation) is not sent. A slot that
   * also carries someone's track to us stays `sendrecv`.
   */
  private async attachToReceiveSlots(pc: RTCPeerConnection, offerSdp: string): Promise<void> {
    const slots = receiveSlots(offerSdp);
    const used = new Set<string>();
    const transceivers = pc.getTransceivers();
    for (const track of this.o.localStream.getTracks()) {
      const slot = slots.find((s) => s.kind === track.kind && s.mid !== null && !used.has(s.mid));
      if (!slot || slot.mid === null) continue;
      const t = transceivers.find((x) => x.mid === slot.mid);
      if (!t) continue;
      used.add(slot.mid);
      await t.sender.replaceTrack(track);
      t.sender.setStreams?.(this.o.localStream);
      t.direction = slot.direction === 'sendrecv' ? 'sendrecv' : 'sendonly';
    }
  }

  private onServerAnswer(p: ServerAnswerPayload): void {
    if (!this.current(p.sdpAnswer)) return;
    this.enqueue(async (pc) => {
      if (pc.signalingState !== 'have-local-offer') return;
      await pc.setRemoteDescription({ type: 'answer', sdp: p.sdpAnswer });
      await this.applyPendingCandidates(pc);
      this.pruneStreams(p.sdpAnswer);
      this.markNegotiated();
    });
  }

  private onServerCandidates(p: ServerCandidatesPayload): void {
    this.enqueue(async (pc) => {
      if (!pc.remoteDescription) {
        const room = MAX_BUFFERED_CANDIDATES - this.pendingRemoteCandidates.length;
        this.pendingRemoteCandidates.push(...p.candidates.slice(0, Math.max(0, room)));
        return;
      }
      for (const c of p.candidates) await this.addRemoteCandidate(pc, c);
    });
  }

  private async applyPendingCandidates(pc: RTCPeerConnection): Promise<void> {
    for (const c of this.pendingRemoteCandidates.splice(0)) await this.addRemoteCandidate(pc, c);
  }

  private async addRemoteCandidate(pc: RTCPeerConnection, c: IceCandidateInit): Promise<void> {
    if (!c.candidate) return;
    try {
      await pc.addIceCandidate({
        candidate: c.candidate.startsWith('candidate:') ? c.candidate : `candidate:${c.candidate}`,
        sdpMid: c.sdpMid ?? undefined,
        sdpMLineIndex: c.sdpMLineIndex ?? undefined,
      });
    } catch (e) {
      // The server's candidates are in its SDP too: a refused duplicate changes nothing.
      this.log('remote candidate refused', e);
    }
  }

  private flushCandidates(gen: number): void {
    this.candidateTimer = null;
    if (gen !== this.generation || this.outgoingCandidates.length === 0) return;
    const candidates = this.outgoingCandidates.splice(0);
    this.o.signaling
      .request('webrtc_ice_candidates', { sessionId: this.o.sessionId, candidates })
      .catch((e) => this.log('candidates not taken', e));
  }

  private onParticipants(p: ParticipantEventPayload): void {
    this.update({ participants: p.participants });
    // Admitted (by us, or another doctor): no longer waiting.
    this.dropWaiting(p.participant);
    this.refreshState();
  }

  private onParticipantLeft(p: ParticipantEventPayload): void {
    const me = this.o.self;
    this.update({ participants: p.participants });
    if (p.participant.userId === me.userId && p.participant.userType === me.userType) {
      // Removed by the doctor: the end. Dropped by the server (connection failed, socket gone
      // too long): come back.
      if (p.reason === 'removed') this.onRefused('removed');
      else if (!this.isOver() && p.reason !== 'left') this.scheduleReconnect(p.reason ?? 'dropped');
      return;
    }
    const key = userKey(p.participant);
    if (this.snap.audioOnlyUsers[key]) {
      const { [key]: _gone, ...rest } = this.snap.audioOnlyUsers;
      this.update({ audioOnlyUsers: rest });
    }
    if (this.snap.weakLinks[key]) {
      const { [key]: _weak, ...others } = this.snap.weakLinks;
      this.update({ weakLinks: others });
    }
    this.refreshState();
  }

  private onRecordingStarted(p: RecordingStartedPayload): void {
    this.update({ recording: { startedAt: p.startedAt, startedBy: p.startedBy } });
  }

  private onSessionEnded(p: SessionEndedPayload): void {
    if (this.isOver()) return;
    this.finish('ended', p.reason);
  }

  private onWebrtcError(p: WebrtcErrorPayload): void {
    if (this.isOver()) return;
    if (p.code === 'session_ended') {
      this.finish('ended', 'session_ended');
    } else if (p.code === 'declined' || p.code === 'removed') {
      this.onRefused(p.code, p.message);
    } else if (FATAL_CODES.has(p.code)) {
      this.fail(p.code, p.message);
    } else if (p.code === 'ice_failed' || p.code === 'connection_failed' || p.code === 'peer_gone') {
      this.scheduleReconnect(p.code);
    }
    // Other codes answer a request of ours, whose rejection is handled where it was made.
  }

  // ---- snapshot -----------------------------------------------------------------------------

  private others(): UserRef[] {
    const me = this.o.self;
    return this.snap.participants.filter(
      (u) => !(u.userId === me.userId && u.userType === me.userType),
    );
  }

  private refreshState(): void {
    if (this.isOver() || this.snap.state === 'failed' || this.snap.state === 'lobby') return;
    if (this.pc?.connectionState === 'connected') {
      this.update({ state: this.others().length > 0 ? 'connected' : 'waiting' });
    } else if (this.snap.state !== 'reconnecting') {
      this.update({ state: 'connecting' });
    }
  }

  /** Drops streams the server no longer sends (after each description it gave us). */
  private pruneStreams(remoteSdp: string): void {
    const live = sendingStreamIds(remoteSdp);
    let changed = false;
    for (const id of [...this.streams.keys()]) {
      if (!live.has(id)) {
        this.streams.delete(id);
        changed = true;
      }
    }
    if (changed) this.publishStreams();
  }

  private publishStreams(): void {
    const remoteStreams: RemoteStream[] = [...this.streams.entries()].map(([id, stream]) => ({
      id,
      user: userOfStreamId(id),
      stream,
    }));
    this.update({ remoteStreams });
  }

  private update(patch: Partial<CallSnapshot>): void {
    this.snap = { ...this.snap, ...patch };
    for (const l of [...this.listeners]) l(this.snap);
  }

  private log(message: string, detail?: unknown): void {
    this.o.log?.(message, detail);
  }
}

/** A transceiver's media kind (its receiver's track is there from its creation). */
function transceiverKind(t: RTCRtpTransceiver): string | undefined {
  return t.receiver?.track?.kind ?? t.sender.track?.kind;
}

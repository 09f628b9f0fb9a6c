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
 * Lost media (connection `failed`, or `disconnected` for longer than a grace period, or the
 * server saying our connection failed) → a fresh PeerConnection and the same entry again
 * (the server replaces a participant's old PeerConnection with the new one), with a bounded
 * number of attempts and growing delays; then the call stops in `failed` until `retry()`.
 */
import type {
  IceCandidateInit,
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
import { userOfStreamId } from './events';
import { describe, FATAL_CODES } from './messages';
import { iceUfrag, receiveSlots, sendingStreamIds } from './sdp';
import { SignalingError, type SignalingService } from './signalingService';

export type CallMode = 'publish' | 'join';

export type CallState =
  | 'idle'
  | 'connecting'
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
}

export interface RecordingInfo {
  startedAt: string;
  startedBy: UserRef;
}

export type CallSignaling = Pick<SignalingService, 'on' | 'request'>;

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
    );
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
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null;
      if (gen === this.generation && this.pc?.connectionState !== 'connected') {
        this.scheduleReconnect('connect_timeout');
      }
    }, this.policy.connectTimeoutMs);
    const entry = this.o.mode === 'publish' ? this.publish(pc, gen) : this.join(gen);
    entry.catch((e) => this.onFailure(e, gen));
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

  /** The patient's entry: ask the server for its offer with the code. */
  private async join(gen: number): Promise<void> {
    this.awaitingJoinOffer = true;
    await this.o.signaling.request('request_webrtc_offer', {
      code: this.o.code ?? '',
      sessionId: this.o.sessionId,
      user: this.o.self,
      action: 'join_conference',
    });
    if (gen !== this.generation) return;
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
    if (FATAL_CODES.has(code)) {
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
    this.refreshState();
  }

  private onParticipantLeft(p: ParticipantEventPayload): void {
    const me = this.o.self;
    this.update({ participants: p.participants });
    if (p.participant.userId === me.userId && p.participant.userType === me.userType) {
      // The server removed us (connection failed, socket gone too long): come back.
      if (!this.isOver() && p.reason !== 'left') this.scheduleReconnect(p.reason ?? 'removed');
      return;
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
    if (this.isOver() || this.snap.state === 'failed') return;
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

/**
 * Test doubles: a Socket.IO socket that plays the server, and a PeerConnection / MediaStream
 * good enough for the call's logic (descriptions, transceivers, tracks, states).
 */
import type { Ack } from '../services/events';
import { mediaSections } from '../services/sdp';
import { SignalingService, type SocketLike } from '../services/signalingService';

type Handler = (...args: any[]) => void;

export interface Emitted {
  event: string;
  payload: any;
  hasAck: boolean;
}

/** Answers a client event's acknowledgement; `undefined` leaves it unanswered. */
export type Responder = (event: string, payload: any) => Ack<any> | undefined;

export class FakeSocket implements SocketLike {
  connected = false;
  active = true;
  readonly emitted: Emitted[] = [];
  readonly handlers = new Map<string, Set<Handler>>();
  readonly managerHandlers = new Map<string, Set<Handler>>();
  /** What `connect()` does: accept, refuse with a message, or nothing (unreachable). */
  onConnect: 'accept' | { refuse: string } | 'silent' = 'accept';
  responder: Responder = () => ({ success: true, data: {} });
  readonly io = {
    on: (event: string, fn: Handler) => {
      if (!this.managerHandlers.has(event)) this.managerHandlers.set(event, new Set());
      this.managerHandlers.get(event)!.add(fn);
    },
  };

  constructor(readonly options: Record<string, any> = {}) {}

  on(event: string, fn: Handler) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event)!.add(fn);
    return this;
  }

  off(event: string, fn?: Handler) {
    if (fn) this.handlers.get(event)?.delete(fn);
    else this.handlers.delete(event);
    return this;
  }

  emit(event: string, ...args: any[]) {
    const last = args[args.length - 1];
    const ack = typeof last === 'function' ? (last as (a: unknown) => void) : null;
    this.emitted.push({ event, payload: args[0], hasAck: !!ack });
    if (ack) {
      const answer = this.responder(event, args[0]);
      if (answer !== undefined) queueMicrotask(() => ack(answer));
    }
    return this;
  }

  connect() {
    queueMicrotask(() => {
      if (this.onConnect === 'accept') {
        this.connected = true;
        this.fire('connect');
      } else if (this.onConnect !== 'silent') {
        this.active = false;
        this.fire('connect_error', new Error(this.onConnect.refuse));
      }
    });
    return this;
  }

  disconnect() {
    this.connected = false;
    this.active = false;
    this.fire('disconnect', 'io client disconnect');
    return this;
  }

  /** The server sends an event. */
  fire(event: string, ...args: any[]) {
    for (const h of [...(this.handlers.get(event) ?? [])]) h(...args);
  }

  /** The network drops the socket; the client will retry. */
  drop(reason = 'transport close') {
    this.connected = false;
    this.fire('disconnect', reason);
  }

  /** The client's retry succeeds. */
  reconnect() {
    this.connected = true;
    this.fire('connect');
  }

  sent(event: string): Emitted[] {
    return this.emitted.filter((e) => e.event === event);
  }
}

export function fakeSignaling(options: { ackTimeoutMs?: number; connectTimeoutMs?: number } = {}) {
  const sockets: FakeSocket[] = [];
  const service = new SignalingService({
    ackTimeoutMs: options.ackTimeoutMs ?? 1_000,
    connectTimeoutMs: options.connectTimeoutMs ?? 1_000,
    socketFactory: (_url, opts) => {
      const s = new FakeSocket(opts as Record<string, any>);
      sockets.push(s);
      return s;
    },
  });
  return {
    service,
    sockets,
    get socket(): FakeSocket {
      return sockets[sockets.length - 1];
    },
  };
}

// ---- media --------------------------------------------------------------------------------

export class FakeTrack {
  enabled = true;
  stopped = false;
  readonly id: string;
  constructor(readonly kind: 'audio' | 'video', id?: string) {
    this.id = id ?? `${kind}-${Math.random().toString(36).slice(2, 8)}`;
  }
  stop() {
    this.stopped = true;
  }
}

export class FakeMediaStream {
  private listeners = new Map<string, Set<() => void>>();
  constructor(
    readonly id: string,
    private tracks: FakeTrack[] = [],
  ) {}
  getTracks() {
    return [...this.tracks];
  }
  getAudioTracks() {
    return this.tracks.filter((t) => t.kind === 'audio');
  }
  getVideoTracks() {
    return this.tracks.filter((t) => t.kind === 'video');
  }
  addTrack(t: FakeTrack) {
    if (!this.tracks.includes(t)) this.tracks.push(t);
    for (const l of this.listeners.get('addtrack') ?? []) l();
  }
  removeTrack(t: FakeTrack) {
    this.tracks = this.tracks.filter((x) => x !== t);
    for (const l of this.listeners.get('removetrack') ?? []) l();
  }
  addEventListener(event: string, fn: () => void) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event)!.add(fn);
  }
}

export function localStream(): MediaStream {
  return new FakeMediaStream('local', [new FakeTrack('audio'), new FakeTrack('video')]) as unknown as MediaStream;
}

interface FakeTransceiver {
  mid: string | null;
  kind: string;
  direction: RTCRtpTransceiverDirection;
  receiver: { track: { kind: string } };
  sender: {
    track: FakeTrack | null;
    streams: unknown[];
    replaceTrack(t: FakeTrack | null): Promise<void>;
    setStreams(...s: unknown[]): void;
  };
}

/**
 * A transceiver; `onDirection` is called when its direction is changed while the connection is
 * stable (a browser then fires negotiationneeded).
 */
function transceiver(
  kind: string,
  mid: string | null,
  initial: RTCRtpTransceiverDirection,
  onDirection: () => void = () => undefined,
): FakeTransceiver {
  let direction = initial;
  const sender = {
    track: null as FakeTrack | null,
    streams: [] as unknown[],
    async replaceTrack(t: FakeTrack | null) {
      sender.track = t;
    },
    setStreams(...s: unknown[]) {
      sender.streams = s;
    },
  };
  return {
    mid,
    kind,
    get direction() {
      return direction;
    },
    set direction(d: RTCRtpTransceiverDirection) {
      const changed = d !== direction;
      direction = d;
      if (changed) onDirection();
    },
    receiver: { track: { kind } },
    sender,
  };
}

/** Builds an SDP with the given sections (what the server would send). */
export function sdpOf(
  sections: { kind: 'audio' | 'video'; mid: string; direction: string; stream?: string }[],
  ufrag = 'srv1',
): string {
  const lines = ['v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 't=0 0', `a=group:BUNDLE ${sections.map((s) => s.mid).join(' ')}`];
  for (const s of sections) {
    lines.push(
      `m=${s.kind} 9 UDP/TLS/RTP/SAVPF ${s.kind === 'audio' ? 111 : 96}`,
      'c=IN IP4 0.0.0.0',
      `a=ice-ufrag:${ufrag}`,
      `a=mid:${s.mid}`,
      `a=${s.direction}`,
    );
    if (s.stream) lines.push(`a=msid:${s.stream} ${s.stream}-${s.kind}`);
    lines.push('a=candidate:1 1 udp 2130706431 127.0.0.1 3479 typ host');
  }
  return lines.join('\r\n') + '\r\n';
}

let pcCount = 0;

export class FakePeerConnection {
  readonly id = ++pcCount;
  connectionState: RTCPeerConnectionState = 'new';
  signalingState: RTCSignalingState = 'stable';
  localDescription: RTCSessionDescriptionInit | null = null;
  remoteDescription: RTCSessionDescriptionInit | null = null;
  onicecandidate: ((ev: { candidate: any }) => void) | null = null;
  ontrack: ((ev: { track: FakeTrack; streams: FakeMediaStream[] }) => void) | null = null;
  onconnectionstatechange: (() => void) | null = null;
  onnegotiationneeded: (() => void) | null = null;
  closed = false;
  readonly transceivers: FakeTransceiver[] = [];
  readonly addedCandidates: RTCIceCandidateInit[] = [];
  readonly remoteStreams = new Map<string, FakeMediaStream>();
  /** Make the next setRemoteDescription fail. */
  failNextRemote = false;
  /** Offers of ours that a server offer rolled back. */
  rolledBack = 0;

  constructor(readonly config: RTCConfiguration) {}

  addTrack(track: FakeTrack, stream: unknown) {
    const t = transceiver(track.kind, String(this.transceivers.length), 'sendrecv', this.directionChanged);
    t.sender.track = track;
    t.sender.streams = [stream];
    this.transceivers.push(t);
    this.needsNegotiation();
    return t.sender;
  }

  removeTrack(sender: FakeTransceiver['sender']) {
    const t = this.transceivers.find((x) => x.sender === sender);
    if (!t) throw new Error('InvalidAccessError: not a sender of this connection');
    t.sender.track = null;
    t.direction = t.direction === 'sendrecv' ? 'recvonly' : 'inactive';
    this.needsNegotiation();
  }

  /** A direction set by the application: renegotiate (when stable, as browsers check then). */
  private directionChanged = () => {
    if (this.signalingState === 'stable' && this.remoteDescription) this.needsNegotiation();
  };

  /** As browsers do, negotiationneeded once the current task is done. */
  private needsNegotiation() {
    queueMicrotask(() => this.onnegotiationneeded?.());
  }

  getTransceivers() {
    return this.transceivers as unknown as RTCRtpTransceiver[];
  }

  private describe(type: 'offer' | 'answer'): RTCSessionDescriptionInit {
    const body = this.transceivers
      .map((t) => `m=${t.kind} 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:${t.mid}\r\na=${t.direction}\r\n`)
      .join('');
    return { type, sdp: `v=0\r\no=- ${this.id} 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n${body}` };
  }

  async createOffer() {
    return this.describe('offer');
  }

  async createAnswer() {
    if (this.signalingState !== 'have-remote-offer') throw new Error('no remote offer');
    return this.describe('answer');
  }

  async setLocalDescription(d: RTCSessionDescriptionInit) {
    this.localDescription = d;
    this.signalingState = d.type === 'offer' ? 'have-local-offer' : 'stable';
  }

  async setRemoteDescription(d: RTCSessionDescriptionInit) {
    if (d.type === 'offer' && this.signalingState === 'have-local-offer') {
      // Implicit rollback of our own offer (perfect negotiation, as browsers do now).
      this.signalingState = 'stable';
      this.rolledBack += 1;
    }
    if (this.failNextRemote) {
      this.failNextRemote = false;
      throw new Error('refused');
    }
    if (d.type === 'answer' && this.signalingState !== 'have-local-offer') {
      throw new Error('InvalidStateError: no local offer');
    }
    this.remoteDescription = d;
    this.signalingState = d.type === 'offer' ? 'have-remote-offer' : 'stable';
    if (d.type !== 'offer') return;
    for (const s of mediaSections(d.sdp ?? '')) {
      let t = this.transceivers.find((x) => x.mid === s.mid);
      if (!t) {
        t = transceiver(s.kind, s.mid, 'recvonly', this.directionChanged);
        this.transceivers.push(t);
      }
      if ((s.direction === 'sendonly' || s.direction === 'sendrecv') && s.streamId) {
        let stream = this.remoteStreams.get(s.streamId);
        if (!stream) {
          stream = new FakeMediaStream(s.streamId);
          this.remoteStreams.set(s.streamId, stream);
        }
        const track = new FakeTrack(s.kind as 'audio' | 'video', `${s.streamId}-${s.mid}`);
        stream.addTrack(track);
        this.ontrack?.({ track, streams: [stream] });
      }
    }
  }

  async addIceCandidate(c: RTCIceCandidateInit) {
    if (!this.remoteDescription) throw new Error('no remote description');
    this.addedCandidates.push(c);
  }

  close() {
    this.closed = true;
    this.connectionState = 'closed';
  }

  /** The ICE agent finds a candidate. */
  gather(candidate: string) {
    this.onicecandidate?.({
      candidate: { candidate, sdpMid: '0', sdpMLineIndex: 0, usernameFragment: 'abc' },
    });
  }

  setConnectionState(s: RTCPeerConnectionState) {
    this.connectionState = s;
    this.onconnectionstatechange?.();
  }
}

export function peerConnectionFactory() {
  const created: FakePeerConnection[] = [];
  const create = (config: RTCConfiguration) => {
    const pc = new FakePeerConnection(config);
    created.push(pc);
    return pc as unknown as RTCPeerConnection;
  };
  return {
    create,
    created,
    get last(): FakePeerConnection {
      return created[created.length - 1];
    },
  };
}

/** Lets queued promise work run (microtasks and zero-delay timers). */
export async function settle(rounds = 10) {
  for (let i = 0; i < rounds; i++) await Promise.resolve();
}

/** A JWT-shaped token (unsigned) for the client-side decoding. */
export function fakeToken(claims: Record<string, unknown>): string {
  const b64 = (o: unknown) =>
    btoa(JSON.stringify(o)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.sig`;
}

/**
 * signalingService: the Socket.IO connection to relais, typed with the events of `events.ts`.
 * Plain TypeScript, usable without React (a node script or another framework can drive it).
 *
 * - `connect(auth)` opens the socket (same origin by default, so it works over HTTP and over
 *   HTTPS with the server's certificate) and resolves once the server accepted the handshake;
 *   a refusal rejects with the server's reason.
 * - `on(event, handler)` registers a typed listener and returns its unsubscribe function;
 *   listeners survive reconnections and a change of user.
 * - `request(event, payload)` emits with an acknowledgement and resolves with its `data`, or
 *   rejects with a {@link SignalingError} carrying the server's `{code, message}` (or
 *   `timeout`).
 * - Conversations joined with `joinConversation` are joined again after every reconnection
 *   (the server forgets a socket's rooms when it goes).
 */
import { io, type ManagerOptions, type SocketOptions } from 'socket.io-client';
import {
  SERVER_EVENTS,
  type Ack,
  type ClientAcks,
  type ClientEvent,
  type ClientEvents,
  type SendMessagePayload,
  type ServerEvent,
  type ServerEvents,
  type SocketAuth,
} from './events';

/** The part of a socket.io-client `Socket` this service uses (a fake one in tests). */
export interface SocketLike {
  readonly connected: boolean;
  /** socket.io-client: false once the client gave up (a refused handshake). */
  readonly active?: boolean;
  on(event: string, listener: (...args: any[]) => void): unknown;
  off(event: string, listener?: (...args: any[]) => void): unknown;
  emit(event: string, ...args: any[]): unknown;
  connect(): unknown;
  disconnect(): unknown;
  /** The manager (reconnection events). */
  io?: { on(event: string, listener: (...args: any[]) => void): unknown };
}

export type SocketFactory = (
  url: string | undefined,
  options: Partial<ManagerOptions & SocketOptions>,
) => SocketLike;

export type ConnectionStatus =
  | 'idle'
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'disconnected'
  | 'refused';

export interface SignalingOptions {
  /** Server URL; default: the page's own origin. */
  url?: string;
  /** How long `request` waits for an acknowledgement. */
  ackTimeoutMs?: number;
  /** How long `connect` waits for the first connection. */
  connectTimeoutMs?: number;
  socketFactory?: SocketFactory;
}

/** A failed request or connection: the server's code (or `timeout`, `refused`, `closed`). */
export class SignalingError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'SignalingError';
    this.code = code;
  }
}

type Listener<E extends ServerEvent> = (payload: ServerEvents[E]) => void;
type StatusListener = (status: ConnectionStatus, detail?: string) => void;

const defaultFactory: SocketFactory = (url, options) =>
  (url === undefined ? io(options) : io(url, options)) as unknown as SocketLike;

export class SignalingService {
  private readonly options: Required<Omit<SignalingOptions, 'url'>> & { url?: string };
  private socket: SocketLike | null = null;
  private currentAuth: SocketAuth | null = null;
  private statusValue: ConnectionStatus = 'idle';
  private lastError: string | undefined;
  private readonly listeners = new Map<ServerEvent, Set<(p: unknown) => void>>();
  private readonly statusListeners = new Set<StatusListener>();
  /** Conversation rooms to hold, with how many users of this service want each. */
  private readonly rooms = new Map<number, number>();
  private connecting: Promise<void> | null = null;
  private everConnected = false;

  constructor(options: SignalingOptions = {}) {
    this.options = {
      ackTimeoutMs: options.ackTimeoutMs ?? 10_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 20_000,
      socketFactory: options.socketFactory ?? defaultFactory,
      url: options.url,
    };
  }

  get status(): ConnectionStatus {
    return this.statusValue;
  }

  /** Why the last connection attempt failed, if it did. */
  get error(): string | undefined {
    return this.lastError;
  }

  get auth(): SocketAuth | null {
    return this.currentAuth;
  }

  get connected(): boolean {
    return this.socket?.connected ?? false;
  }

  /**
   * Connects as `auth` (a no-op when already connected or connecting as the same token; a
   * different token closes the old socket first).
   */
  connect(auth: SocketAuth): Promise<void> {
    if (
      this.socket &&
      this.currentAuth?.token === auth.token &&
      this.statusValue !== 'refused' &&
      this.statusValue !== 'disconnected'
    ) {
      if (this.socket.connected) return Promise.resolve();
      return this.connecting ?? this.waitConnected();
    }
    this.disconnect();
    this.currentAuth = auth;
    this.everConnected = false;
    this.lastError = undefined;
    const socket = this.options.socketFactory(this.options.url, {
      auth: { ...auth },
      // The seed's options: WebSocket first, long-polling when WebSocket is blocked.
      transports: ['websocket', 'polling'],
      timeout: 20_000,
      forceNew: true,
      reconnection: true,
      reconnectionAttempts: 10,
      reconnectionDelay: 1_000,
      reconnectionDelayMax: 5_000,
      autoConnect: false,
    });
    this.socket = socket;
    for (const event of SERVER_EVENTS) {
      socket.on(event, (payload: unknown) => this.dispatch(event, payload));
    }
    this.connecting = new Promise<void>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        this.connecting = null;
        reject(new SignalingError('timeout', 'the server did not answer in time'));
      }, this.options.connectTimeoutMs);
      const settle = (err?: SignalingError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.connecting = null;
        if (err) reject(err);
        else resolve();
      };
      socket.on('connect', () => {
        if (this.socket !== socket) return;
        const again = this.everConnected;
        this.everConnected = true;
        this.lastError = undefined;
        this.setStatus('connected');
        if (again) this.rejoinRooms();
        settle();
      });
      socket.on('connect_error', (err: Error) => {
        if (this.socket !== socket) return;
        this.lastError = err?.message ?? String(err);
        // A refused handshake (bad token…) is final; a network error is retried by the client.
        if (socket.active === false) {
          this.setStatus('refused', this.lastError);
          settle(new SignalingError('refused', this.lastError));
        } else {
          this.setStatus(this.everConnected ? 'reconnecting' : 'connecting', this.lastError);
        }
      });
      socket.on('disconnect', (reason: string) => {
        if (this.socket !== socket) return;
        // "io client disconnect" is ours; anything else is retried by the client.
        this.setStatus(
          reason === 'io client disconnect' ? 'disconnected' : 'reconnecting',
          reason,
        );
      });
      socket.io?.on('reconnect_failed', () => {
        if (this.socket !== socket) return;
        this.setStatus('disconnected', 'reconnection failed');
        settle(new SignalingError('unreachable', 'the server cannot be reached'));
      });
    });
    this.setStatus('connecting');
    socket.connect();
    return this.connecting;
  }

  /** Closes the socket. Listeners stay registered for the next `connect`. */
  disconnect(): void {
    const socket = this.socket;
    this.socket = null;
    this.connecting = null;
    if (socket) {
      socket.disconnect();
      this.setStatus('disconnected');
    }
  }

  /** A typed listener; returns its unsubscribe function. */
  on<E extends ServerEvent>(event: E, listener: Listener<E>): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    const l = listener as (p: unknown) => void;
    set.add(l);
    return () => {
      set.delete(l);
    };
  }

  /** Connection status changes (`reconnecting` while the socket is away). */
  onStatus(listener: StatusListener): () => void {
    this.statusListeners.add(listener);
    return () => {
      this.statusListeners.delete(listener);
    };
  }

  /** Fire and forget (a failure comes back as `messaging_error` / `webrtc_error`). */
  emit<E extends ClientEvent>(event: E, payload: ClientEvents[E]): void {
    this.requireSocket().emit(event, payload);
  }

  /** Emits with an acknowledgement: resolves with its data, rejects with its error. */
  request<E extends ClientEvent>(
    event: E,
    payload: ClientEvents[E],
    timeoutMs: number = this.options.ackTimeoutMs,
  ): Promise<ClientAcks[E]> {
    let socket: SocketLike;
    try {
      socket = this.requireSocket();
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new SignalingError('timeout', `no answer to ${event} in time`)),
        timeoutMs,
      );
      socket.emit(event, payload, (ack: Ack<ClientAcks[E]> | undefined) => {
        clearTimeout(timer);
        if (ack && ack.success) resolve(ack.data);
        else
          reject(
            new SignalingError(
              ack?.error?.code ?? 'error',
              ack?.error?.message ?? `${event} failed`,
            ),
          );
      });
    });
  }

  // ---- messaging conveniences ---------------------------------------------------------------

  /** Joins a conversation's room (kept across reconnections until every joiner left). */
  async joinConversation(conversationId: number): Promise<void> {
    this.rooms.set(conversationId, (this.rooms.get(conversationId) ?? 0) + 1);
    try {
      await this.request('join_conversation', this.joinPayload(conversationId));
    } catch (e) {
      this.releaseRoom(conversationId);
      throw e;
    }
  }

  async leaveConversation(conversationId: number): Promise<void> {
    if (this.releaseRoom(conversationId) && this.socket) {
      await this.request('leave_conversation', { conversationId }).catch(() => undefined);
    }
  }

  setTyping(conversationId: number, isTyping: boolean): void {
    if (this.socket?.connected) this.emit('typing', { conversationId, isTyping });
  }

  markRead(conversationId: number, messageId: number): Promise<ClientAcks['message_read']> {
    return this.request('message_read', { conversationId, messageId });
  }

  sendMessage(payload: SendMessagePayload): Promise<ClientAcks['send_message']> {
    return this.request('send_message', payload);
  }

  /** Conversations held (for tests and diagnostics). */
  heldConversations(): number[] {
    return [...this.rooms.keys()];
  }

  // ---- internals ----------------------------------------------------------------------------

  /** Resolves at the next `connected`, rejects when the socket gives up (or in time). */
  private waitConnected(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new SignalingError('timeout', 'the server did not answer in time'));
      }, this.options.connectTimeoutMs);
      const off = this.onStatus((status, detail) => {
        if (status === 'connected') {
          clearTimeout(timer);
          off();
          resolve();
        } else if (status === 'refused' || status === 'disconnected') {
          clearTimeout(timer);
          off();
          reject(new SignalingError(status === 'refused' ? 'refused' : 'unreachable', detail ?? status));
        }
      });
    });
  }

  private joinPayload(conversationId: number) {
    const a = this.currentAuth;
    return a
      ? { conversationId, user: { userId: a.userId, userType: a.userType, role: a.role } }
      : { conversationId };
  }

  /** True when nobody holds the room any more. */
  private releaseRoom(conversationId: number): boolean {
    const n = this.rooms.get(conversationId);
    if (n === undefined) return false;
    if (n <= 1) {
      this.rooms.delete(conversationId);
      return true;
    }
    this.rooms.set(conversationId, n - 1);
    return false;
  }

  private rejoinRooms(): void {
    for (const id of this.rooms.keys()) {
      this.request('join_conversation', this.joinPayload(id)).catch(() => undefined);
    }
  }

  private requireSocket(): SocketLike {
    if (!this.socket) throw new SignalingError('closed', 'not connected: call connect() first');
    return this.socket;
  }

  private dispatch(event: ServerEvent, payload: unknown): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const l of [...set]) {
      try {
        l(payload);
      } catch (e) {
        console.error(`relais: a ${event} listener failed`, e);
      }
    }
  }

  private setStatus(status: ConnectionStatus, detail?: string): void {
    this.statusValue = status;
    for (const l of [...this.statusListeners]) l(status, detail);
  }
}

/** The application's shared connection (one socket per signed-in user). */
export const signalingService = new SignalingService();

export default signalingService;

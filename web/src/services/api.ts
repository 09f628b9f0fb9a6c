/**
 * The REST API of relais, same origin (relative URLs: HTTP and HTTPS alike).
 * Messaging answers `{success, data}`; WebRTC answers `{status: "success", data}`; errors
 * `{success: false, error: {code, message}}`.
 */
import type {
  AttachmentView,
  MessageType,
  MessageView,
  RecordingView,
  Role,
  SessionType,
  UserRef,
} from './events';

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

export interface Person {
  id: number;
  type: Role;
  role: Role;
}

export interface Conversation {
  id: number;
  type: 'private' | 'group';
  participants: Person[];
  created_by: Person;
  created_at: string;
}

export interface ConversationSummary extends Conversation {
  last_message: MessageView | null;
  unread_count: number;
  last_read_message_id: number;
}

export interface HistoryPage {
  messages: MessageView[];
  pagination: { has_more: boolean; oldest_id: number | null; newest_id: number | null };
}

export interface SendMessageBody {
  contenu: string;
  type_message: MessageType;
  metadata?: Record<string, unknown>;
  client_message_id?: string;
  attachment_id?: string;
}

export interface SessionView {
  id: number;
  conversation_id: number;
  session_type: SessionType;
  statut: 'initiating' | 'active' | 'ended';
  /** Patients and guests wait for the doctor's admission (default true). */
  waiting_room?: boolean;
}

/** A guest link the doctor made (the code is shown once, at creation). */
export interface GuestInvite {
  id: number;
  display_name: string;
  expires_at: string;
  code: string;
  url: string;
}

/** A guest's token for one session, from its single-use code. */
export interface GuestToken {
  token: string;
  user: { userId: number; userType: 'invite' };
  display_name: string;
  sessionId: number;
  expiresAt: string;
}

export interface ConferenceLink {
  sessionId: number;
  conferenceUrl: string;
  joinCode: string;
  fullLink: string;
}

export interface CreatedSession {
  session: SessionView;
  conferenceLink?: ConferenceLink;
  expiresAt?: string;
  /** The server's TURN URLs with fresh credentials (empty when TURN is off). */
  iceServers?: RTCIceServer[];
}

export interface IceServersAnswer {
  iceServers: RTCIceServer[];
  /** Seconds the credentials stay valid. */
  ttl: number;
  expiresAt: number | null;
}

export interface DevTokenAnswer {
  token: string;
  user: { userId: number; userType: Role; role: Role };
}

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface ApiOptions {
  token?: string | null;
  /** Prefix for every path; default '' (same origin). */
  baseUrl?: string;
  fetch?: FetchLike;
}

export class Api {
  private readonly token: string | null;
  private readonly baseUrl: string;
  private readonly fetchFn: FetchLike;

  constructor(options: ApiOptions = {}) {
    this.token = options.token ?? null;
    this.baseUrl = options.baseUrl ?? '';
    this.fetchFn = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  // ---- messaging ----------------------------------------------------------------------------

  async listConversations(): Promise<ConversationSummary[]> {
    const d = await this.call<{ conversations: ConversationSummary[] }>(
      'GET',
      '/api/messaging/conversations',
    );
    return d.conversations;
  }

  async createConversation(
    participants: { role: Role; id: number }[],
    type: 'private' | 'group' = 'private',
  ): Promise<Conversation> {
    const d = await this.call<{ conversation: Conversation }>('POST', '/api/messaging/conversations', {
      type,
      participants,
    });
    return d.conversation;
  }

  async getConversation(id: number): Promise<Conversation> {
    const d = await this.call<{ conversation: Conversation }>(
      'GET',
      `/api/messaging/conversations/${id}`,
    );
    return d.conversation;
  }

  history(
    conversationId: number,
    q: { before?: number; after?: number; limit?: number } = {},
  ): Promise<HistoryPage> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    return this.call<HistoryPage>(
      'GET',
      `/api/messaging/conversations/${conversationId}/messages${qs ? `?${qs}` : ''}`,
    );
  }

  async sendMessage(conversationId: number, body: SendMessageBody): Promise<MessageView> {
    const d = await this.call<{ message: MessageView }>(
      'POST',
      `/api/messaging/conversations/${conversationId}/messages`,
      body,
    );
    return d.message;
  }

  async markRead(conversationId: number, messageId: number): Promise<void> {
    await this.call('POST', `/api/messaging/conversations/${conversationId}/read`, { messageId });
  }

  /** Uploads a file (multipart field `file`); then send a message with its `attachment_id`. */
  async uploadAttachment(conversationId: number, file: Blob, fileName: string): Promise<AttachmentView> {
    const form = new FormData();
    form.append('file', file, fileName);
    const d = await this.call<{ attachment: AttachmentView }>(
      'POST',
      `/api/messaging/conversations/${conversationId}/attachments`,
      form,
    );
    return d.attachment;
  }

  /** Downloads an attachment (the URL needs the Authorization header, so no plain <img src>). */
  async downloadAttachment(url: string): Promise<Blob> {
    const res = await this.fetchFn(this.baseUrl + url, { headers: this.headers() });
    if (!res.ok) throw await errorOf(res);
    return res.blob();
  }

  // ---- video consultations ------------------------------------------------------------------

  /** A doctor creates a consultation with its conference link and join code. */
  createSession(input: {
    conversationId: number | string;
    sessionType?: SessionType;
    initiator: UserRef;
  }): Promise<CreatedSession> {
    return this.call<CreatedSession>('POST', '/api/messaging/webrtc/sessions?generate_conference_link=true', {
      conversation_id: input.conversationId,
      session_type: input.sessionType ?? 'audio_video',
      sdp_offer: null,
      initiator: input.initiator,
    });
  }

  async getSession(id: number): Promise<Record<string, unknown>> {
    const d = await this.call<{ session: Record<string, unknown> }>(
      'GET',
      `/api/messaging/webrtc/sessions/${id}`,
    );
    return d.session;
  }

  async endSession(id: number): Promise<SessionView> {
    const d = await this.call<{ session: SessionView }>(
      'POST',
      `/api/messaging/webrtc/sessions/${id}/end`,
    );
    return d.session;
  }

  /** The session's doctor turns the waiting room on or off. */
  async setWaitingRoom(id: number, waitingRoom: boolean): Promise<SessionView> {
    const d = await this.call<{ session: SessionView }>('PATCH', `/api/messaging/webrtc/sessions/${id}`, {
      waiting_room: waitingRoom,
    });
    return d.session;
  }

  /** The session's doctor invites a guest (interpreter, family): a link of its own. */
  async inviteGuest(sessionId: number, displayName: string, expiresInMinutes: number): Promise<GuestInvite> {
    const d = await this.call<{ guest: GuestInvite }>('POST', `/api/messaging/webrtc/sessions/${sessionId}/guests`, {
      display_name: displayName,
      expires_in_minutes: expiresInMinutes,
    });
    return d.guest;
  }

  /** No sign-in: a guest's single-use code for its token (409 `guest_code_used`, 403
   * `expired_code` / `invalid_code`). */
  guestToken(sessionId: number, code: string): Promise<GuestToken> {
    return this.call<GuestToken>('POST', '/api/messaging/webrtc/guest-token', { sessionId, code });
  }

  // ---- recordings (the session's doctor only) -----------------------------------------------

  /** Starts recording a live consultation; `consent` must be true. */
  startRecording(sessionId: number, consent: boolean) {
    return this.call<{ recording: { sessionId: number; active: boolean; started_at: string; recordings: string[] } }>(
      'POST',
      `/api/messaging/webrtc/sessions/${sessionId}/recording`,
      { consent },
    );
  }

  /** Stops recording; resolves with the recordings it finished. */
  async stopRecording(sessionId: number): Promise<RecordingView[]> {
    const d = await this.call<{ recordings: RecordingView[] }>(
      'DELETE',
      `/api/messaging/webrtc/sessions/${sessionId}/recording`,
    );
    return d.recordings;
  }

  /** A consultation's recordings, oldest first. */
  async listRecordings(sessionId: number): Promise<RecordingView[]> {
    const d = await this.call<{ recordings: RecordingView[] }>(
      'GET',
      `/api/messaging/webrtc/sessions/${sessionId}/recordings`,
    );
    return d.recordings;
  }

  /** Downloads a recording (its URL needs the Authorization header). */
  async downloadRecording(url: string): Promise<Blob> {
    const res = await this.fetchFn(this.baseUrl + url, { headers: this.headers() });
    if (!res.ok) throw await errorOf(res);
    return res.blob();
  }

  validateCode(code: string, sessionId?: number) {
    return this.call<{
      conferenceCode: string;
      sessionId: number | null;
      isValid: boolean;
      expiresAt: string | null;
      createdBy: UserRef | null;
      reason?: string;
      iceServers?: RTCIceServer[];
    }>('POST', '/api/messaging/webrtc/validate-code', { code, sessionId });
  }

  /** TURN credentials for the signed-in user (relay for clinics without UDP). */
  iceServers(): Promise<IceServersAnswer> {
    return this.call<IceServersAnswer>('GET', '/api/messaging/webrtc/ice-servers');
  }

  // ---- development sign-in ------------------------------------------------------------------

  /** Whether development sign-in exists (a 404 ApiError means a real secret is configured). */
  devMode(): Promise<{ developmentMode: boolean; signInHere?: boolean }> {
    return this.call<{ developmentMode: boolean; signInHere?: boolean }>('GET', '/api/dev/token');
  }

  /** Development mode only; a 404 (ApiError status 404) means a real secret is configured. */
  devToken(role: Role, id: number, name?: string): Promise<DevTokenAnswer> {
    return this.call<DevTokenAnswer>('POST', '/api/dev/token', { role, id, name: name || undefined });
  }

  // ---- plumbing -----------------------------------------------------------------------------

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { Accept: 'application/json', ...extra };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = { method, headers: this.headers() };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.headers = this.headers({ 'Content-Type': 'application/json' });
      init.body = JSON.stringify(body);
    }
    let res: Response;
    try {
      res = await this.fetchFn(this.baseUrl + path, init);
    } catch (e) {
      throw new ApiError(0, 'network_error', 'the server cannot be reached');
    }
    if (!res.ok) throw await errorOf(res);
    const json = (await res.json()) as { data?: T };
    return json.data as T;
  }
}

async function errorOf(res: Response): Promise<ApiError> {
  try {
    const j = (await res.json()) as { error?: { code?: string; message?: string } };
    return new ApiError(res.status, j.error?.code ?? 'http_error', j.error?.message ?? res.statusText);
  } catch {
    return new ApiError(res.status, 'http_error', res.statusText || `HTTP ${res.status}`);
  }
}

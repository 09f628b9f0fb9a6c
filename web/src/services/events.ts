/**
 * Socket.IO event names and payloads, spelled once. Mirrors the server's
 * `src/wire.rs` (and the message views of `src/messaging/views.rs`); the French field
 * names (`contenu`, `type_message`, `expediteur_id`, …) are the seed's contract.
 */

/** Who signs in at the clinic. */
export type Role = 'patient' | 'medecin';
/** Who can be in a consultation: the clinic's people, and guests (`invite`: an interpreter, a
 * family member) who came by a guest link and have no account. */
export type UserType = Role | 'invite';
export type SessionType = 'audio_video' | 'audio_only';
export type MessageType = 'texte' | 'image' | 'file' | 'audio';

export const MESSAGE_TYPES = {
  TEXT: 'texte',
  IMAGE: 'image',
  FILE: 'file',
  AUDIO: 'audio',
} as const satisfies Record<string, MessageType>;

export const MESSAGING_TYPES = {
  PRIVATE: 'private',
  GROUP: 'group',
} as const;

/** `{userId, userType}`: a person in events. */
export interface UserRef {
  userId: number;
  userType: UserType;
}

/** `from` of server-originated signaling. */
export interface ServerRef {
  userType: 'server';
  userId: null;
}

/** What the handshake sends (`auth` of the Socket.IO connection). */
export interface SocketAuth {
  token: string;
  userType: UserType;
  userId: number;
  role: UserType;
}

export interface AttachmentView {
  id: string;
  file_name: string;
  content_type: string;
  size_bytes: number;
  /** Relative download URL (needs the Authorization header). */
  url: string;
}

/** A message: the REST answer and the `new_message` payload share this shape. */
export interface MessageView {
  id: number;
  contenu: string;
  type_message: MessageType;
  expediteur_id: number;
  expediteur_type: Role;
  conversation_id: number;
  timestamp: string;
  created_at: string;
  sender: { id: number; type: Role; nom: string };
  client_message_id?: string;
  metadata?: Record<string, unknown> | null;
  attachment?: AttachmentView;
}

export interface IceCandidateInit {
  candidate: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  usernameFragment?: string | null;
}

// ---- client → server ----------------------------------------------------------------------

export interface JoinConversationPayload {
  conversationId: number;
  user?: { userId: number; userType: UserType; role: UserType };
}
export interface ConversationRefPayload {
  conversationId: number;
}
export interface TypingPayload {
  conversationId: number;
  isTyping: boolean;
}
export interface MessageReadPayload {
  conversationId: number;
  messageId: number;
}
export interface SendMessagePayload {
  conversationId: number;
  contenu: string;
  type_message: MessageType;
  metadata?: Record<string, unknown>;
  client_message_id?: string;
  attachment_id?: string;
}
export interface ClientOfferPayload {
  sessionId: number;
  conversationId?: number | string;
  sdpOffer: string;
  sessionType?: SessionType;
}
export interface RequestOfferPayload {
  /** The join code; a guest has none (its token is the proof). */
  code?: string;
  sessionId: number;
  user?: UserRef;
  action?: 'join_conference';
}
export interface ClientAnswerPayload {
  sessionId: number;
  sdpAnswer: string;
}
export interface ClientCandidatesPayload {
  sessionId: number;
  candidates: IceCandidateInit[];
}
export interface SessionRefPayload {
  sessionId: number;
}
/** The session's doctor starts recording; `consent: true` confirms every participant agreed. */
export interface StartRecordingPayload {
  sessionId: number;
  consent: boolean;
}

/** A recording as the REST API and `stop_recording`'s acknowledgement show it. */
export interface RecordingView {
  id: string;
  sessionId: number;
  participant: { role: Role; id: number };
  consent: { confirmed_by: UserRef; confirmed_at: string };
  status: 'recording' | 'finished' | 'interrupted' | 'failed';
  started_at: string;
  ended_at: string | null;
  duration_ms: number | null;
  size_bytes: number | null;
  content_type: string;
  end_reason: string | null;
  /** Relative download URL (needs the Authorization header; Range requests honoured). */
  url: string;
}

/** The session's doctor admits, declines or removes someone. */
export interface ParticipantActionPayload {
  sessionId: number;
  user: UserRef;
  reason?: string;
}
/** Any participant: audio only (video stops both ways) or back to video. */
export interface SetAudioOnlyPayload {
  sessionId: number;
  audioOnly: boolean;
  reason?: string;
}

/** Client events and their payloads. */
export interface ClientEvents {
  join_conversation: JoinConversationPayload;
  leave_conversation: ConversationRefPayload;
  typing: TypingPayload;
  message_read: MessageReadPayload;
  send_message: SendMessagePayload;
  webrtc_offer: ClientOfferPayload;
  request_webrtc_offer: RequestOfferPayload;
  webrtc_answer: ClientAnswerPayload;
  webrtc_ice_candidates: ClientCandidatesPayload;
  leave_session: SessionRefPayload;
  end_session: SessionRefPayload;
  start_recording: StartRecordingPayload;
  stop_recording: SessionRefPayload;
  admit_participant: ParticipantActionPayload;
  decline_participant: ParticipantActionPayload;
  remove_participant: ParticipantActionPayload;
  set_audio_only: SetAudioOnlyPayload;
}

/** The `data` of a successful acknowledgement, per client event. */
export interface ClientAcks {
  join_conversation: { conversationId: number };
  leave_conversation: { conversationId: number };
  typing: { conversationId: number };
  message_read: { conversationId: number; messageId: number };
  send_message: { message: MessageView };
  webrtc_offer: { sessionId: number };
  /** `waiting: true`: the waiting room is on; the doctor admits (`admitted`) or declines. */
  request_webrtc_offer: { sessionId: number; waiting?: boolean };
  webrtc_answer: { sessionId: number };
  webrtc_ice_candidates: { sessionId: number; accepted: number };
  leave_session: { sessionId: number };
  end_session: { sessionId: number };
  start_recording: { sessionId: number; startedAt: string; recordings: string[] };
  stop_recording: { sessionId: number; recordings: RecordingView[] };
  admit_participant: { sessionId: number };
  decline_participant: { sessionId: number };
  remove_participant: { sessionId: number };
  set_audio_only: { sessionId: number };
}

export type ClientEvent = keyof ClientEvents;

export interface AckError {
  code: string;
  message: string;
}
export type Ack<T> = { success: true; data: T } | { success: false; error: AckError };

// ---- server → client ----------------------------------------------------------------------

export interface TypingRelay {
  conversationId: number;
  isTyping: boolean;
  user: UserRef;
}
export interface MessageReadRelay {
  conversationId: number;
  messageId: number;
  user: UserRef;
  readAt: string;
}
export interface MessagingErrorPayload {
  event: string;
  code: string;
  message: string;
}
export interface ServerOfferPayload {
  sessionId: number;
  conversationId: number;
  sdpOffer: string;
  sessionType: SessionType;
  from: ServerRef;
}
export interface ServerAnswerPayload {
  sessionId: number;
  sdpAnswer: string;
  from: ServerRef;
}
export interface ServerCandidatesPayload {
  sessionId: number;
  candidates: IceCandidateInit[];
  from: ServerRef;
}
export interface ParticipantEventPayload {
  sessionId: number;
  participant: UserRef;
  reason?: string;
  /** Everyone in the session after this change. */
  participants: UserRef[];
}
export interface SessionEndedPayload {
  sessionId: number;
  reason: string;
}
/** Known codes: invalid_code, expired_code, session_ended, too_many_attempts,
 * negotiation_in_progress, not_in_session, ice_failed, connection_failed, bad_sdp, … */
export interface WebrtcErrorPayload {
  sessionId: number | null;
  code: string;
  message: string;
}

/** The consultation is being recorded (sent to everyone in it, and to each newcomer). */
export interface RecordingStartedPayload {
  sessionId: number;
  startedAt: string;
  startedBy: UserRef;
  consent: { confirmedBy: UserRef; confirmedAt: string };
}
/** `reason`: stopped_by_doctor, session_ended, server_shutdown. */
export interface RecordingStoppedPayload {
  sessionId: number;
  reason: string;
  stoppedAt: string;
}

/**
 * `session_moved`: the node serving the session was lost (or stopped); the session now lives
 * on `node`. The client builds a new PeerConnection and sends its offer (or its code) again,
 * on the same socket: signaling reaches the new node from any node.
 */
export interface SessionMovedPayload {
  sessionId: number;
  /** `node_lost`, `node_shutdown` or `node_restarted`. */
  reason: string;
  from: string;
  node: { id: string; publicBaseUrl: string };
  conferenceUrl: string;
}

/** To the person waiting for admission: since when (RFC 3339). */
export interface WaitingPayload {
  sessionId: number;
  since: string;
}
/** To the session's doctor(s): someone waits for admission. */
export interface ParticipantWaitingPayload {
  sessionId: number;
  user: UserRef;
  /** Who they are, as their token says (null when it says nothing). */
  name: string | null;
  since: string;
}
/** To the session's doctor(s): a waiting person went away. */
export interface ParticipantWaitingLeftPayload {
  sessionId: number;
  user: UserRef;
}
export interface AdmittedPayload {
  sessionId: number;
}
export interface DeclinedPayload {
  sessionId: number;
  message: string;
}
export interface RemovedPayload {
  sessionId: number;
  message?: string;
}
/**
 * A participant's link became weak (the server sends them less than a good video needs, and
 * asks those who send to them for less), or good again.
 */
export interface ConnectionQualityPayload {
  sessionId: number;
  user: UserRef;
  quality: 'weak' | 'good';
  /** What their link takes for each video they receive (bit/s), when limited. */
  availableBps: number | null;
}

/** Someone switched to audio only (or back to video). */
export interface AudioOnlyPayload {
  sessionId: number;
  user: UserRef;
  audioOnly: boolean;
  reason?: string | null;
}

/** Server events and their payloads. */
export interface ServerEvents {
  new_message: MessageView;
  typing: TypingRelay;
  message_read: MessageReadRelay;
  messaging_error: MessagingErrorPayload;
  webrtc_offer: ServerOfferPayload;
  webrtc_answer: ServerAnswerPayload;
  webrtc_ice_candidates: ServerCandidatesPayload;
  participant_joined: ParticipantEventPayload;
  participant_left: ParticipantEventPayload;
  session_ended: SessionEndedPayload;
  webrtc_error: WebrtcErrorPayload;
  recording_started: RecordingStartedPayload;
  recording_stopped: RecordingStoppedPayload;
  session_moved: SessionMovedPayload;
  waiting: WaitingPayload;
  participant_waiting: ParticipantWaitingPayload;
  participant_waiting_left: ParticipantWaitingLeftPayload;
  admitted: AdmittedPayload;
  declined: DeclinedPayload;
  removed: RemovedPayload;
  audio_only: AudioOnlyPayload;
  connection_quality: ConnectionQualityPayload;
}

export type ServerEvent = keyof ServerEvents;

/** Every server event, to route them from one socket to typed listeners. */
export const SERVER_EVENTS: readonly ServerEvent[] = [
  'new_message',
  'typing',
  'message_read',
  'messaging_error',
  'webrtc_offer',
  'webrtc_answer',
  'webrtc_ice_candidates',
  'participant_joined',
  'participant_left',
  'session_ended',
  'webrtc_error',
  'recording_started',
  'recording_stopped',
  'session_moved',
  'waiting',
  'participant_waiting',
  'participant_waiting_left',
  'admitted',
  'declined',
  'removed',
  'audio_only',
  'connection_quality',
] as const;

/**
 * `msid` stream id of a participant's media as the SFU forwards it: `"{role}-{id}"` for their
 * camera and microphone, `"{role}-{id}.{n}"` for a further stream of theirs (a shared screen).
 */
export function streamIdOf(who: UserRef): string {
  return `${who.userType}-${who.userId}`;
}

/** Reverse of {@link streamIdOf}; null for anything else. */
export function userOfStreamId(streamId: string): UserRef | null {
  const m = /^(patient|medecin|invite)-(\d+)(?:\.\d+)?$/.exec(streamId);
  return m ? { userType: m[1] as UserType, userId: Number(m[2]) } : null;
}

/** True for a participant's further stream (`"medecin-79.2"`: a shared screen). */
export function isSecondaryStream(streamId: string): boolean {
  return /^(patient|medecin|invite)-\d+\.\d+$/.test(streamId);
}

/** One key per person, for maps and DOM attributes: `"invite-5"`. */
export function userKey(u: UserRef): string {
  return `${u.userType}-${u.userId}`;
}

export function sameUser(a: UserRef, b: UserRef): boolean {
  return a.userId === b.userId && a.userType === b.userType;
}

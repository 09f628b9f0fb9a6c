/**
 * One conversation, live: history (with older pages), new messages, who is typing, how far the
 * others read, sending text and attachments. Shared by ChatMessage and MessagingWidget.
 */
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import type { AttachmentView, MessageType, MessageView, Role, UserRef } from '../services/events';
import { useServices } from '../services/context';
import type { ConnectionStatus } from '../services/signalingService';

/** The seed's formatted message, plus what the interface needs to draw it. */
export interface ChatItem {
  id: number;
  sender: Role;
  senderId: number;
  senderName: string;
  content: string;
  timestamp: string;
  type: MessageType;
  attachment?: AttachmentView;
  mine: boolean;
  /** Sent, not yet confirmed by the server. */
  pending?: boolean;
  failed?: boolean;
  clientId?: string;
}

export interface Me {
  userId: number;
  role: Role;
}

export function formatMessage(m: MessageView, me: Me): ChatItem {
  return {
    id: m.id,
    sender: m.sender?.type ?? m.expediteur_type,
    senderId: m.expediteur_id,
    senderName: m.sender?.nom ?? '',
    content: m.contenu,
    timestamp: m.timestamp ?? m.created_at,
    type: m.type_message,
    attachment: m.attachment,
    mine: m.expediteur_id === me.userId && (m.sender?.type ?? m.expediteur_type) === me.role,
    clientId: m.client_message_id,
  };
}

export function typeForFile(contentType: string): MessageType {
  if (contentType.startsWith('image/')) return 'image';
  if (contentType.startsWith('audio/')) return 'audio';
  return 'file';
}

function newClientId(): string {
  const c = globalThis.crypto as Crypto | undefined;
  if (c?.randomUUID) return c.randomUUID();
  return `c-${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

/** Keeps items ordered by id (pending ones last), one per id and per client message id. */
function merge(items: ChatItem[], incoming: ChatItem[]): ChatItem[] {
  const byId = new Map<number, ChatItem>();
  const pending: ChatItem[] = [];
  for (const it of [...items, ...incoming]) {
    if (it.pending || it.failed) pending.push(it);
    else byId.set(it.id, it);
  }
  const confirmedClientIds = new Set(
    [...byId.values()].map((i) => i.clientId).filter((x): x is string => !!x),
  );
  const stillPending = pending.filter((p) => !p.clientId || !confirmedClientIds.has(p.clientId));
  return [...[...byId.values()].sort((a, b) => a.id - b.id), ...stillPending];
}

const TYPING_IDLE_MS = 3_000;
const TYPING_SHOWN_MS = 6_000;
const PAGE = 50;

export interface ConversationState {
  messages: ChatItem[];
  loading: boolean;
  error: string | null;
  hasMore: boolean;
  /** Others typing now. */
  typing: UserRef[];
  /** The highest message id someone else has read. */
  readByOthers: number;
  connection: ConnectionStatus;
  send(text: string): Promise<void>;
  sendFile(file: File): Promise<void>;
  loadOlder(): Promise<void>;
  notifyTyping(): void;
  stopTyping(): void;
}

export function useConversation(params: {
  conversationId: number | null;
  token: string;
  userId: number;
  role: Role;
}): ConversationState {
  const { conversationId, token, userId, role } = params;
  const services = useServices();
  const signaling = services.signaling;
  const api = useMemo(() => services.api(token), [services, token]);
  const me = useMemo(() => ({ userId, role }), [userId, role]);
  const [messages, setMessages] = useState<ChatItem[]>([]);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const [hasMore, setHasMore] = useState(false);
  const [typing, setTyping] = useState<UserRef[]>([]);
  const [readByOthers, setReadByOthers] = useState(0);
  const [connection, setConnection] = useState<ConnectionStatus>(signaling.status);
  const messagesRef = useRef<ChatItem[]>([]);
  messagesRef.current = messages;
  const typingTimers = useRef(new Map<string, ReturnType<typeof setTimeout>>());
  const myTypingTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const lastMarked = useRef(0);

  const lastConfirmedId = () =>
    messagesRef.current.reduce((m, i) => (!i.pending && !i.failed && i.id > m ? i.id : m), 0);

  // Messages from others that arrived: mark them read (REST; relayed as message_read).
  useEffect(() => {
    if (conversationId === null) return;
    const latestOther = messages.reduce((m, i) => (!i.mine && !i.pending && i.id > m ? i.id : m), 0);
    if (latestOther > lastMarked.current) {
      lastMarked.current = latestOther;
      api.markRead(conversationId, latestOther).catch(() => undefined);
    }
  }, [messages, conversationId, api]);

  useEffect(() => {
    if (conversationId === null) return;
    let alive = true;
    setMessages([]);
    setLoading(true);
    setError(null);
    setTyping([]);
    setReadByOthers(0);
    lastMarked.current = 0;
    const add = (items: ChatItem[]) => alive && setMessages((cur) => merge(cur, items));

    const offs = [
      signaling.on('new_message', (m) => {
        if (m.conversation_id === conversationId) add([formatMessage(m, me)]);
      }),
      signaling.on('typing', (t) => {
        if (t.conversationId !== conversationId) return;
        if (t.user.userId === me.userId && t.user.userType === me.role) return;
        const key = `${t.user.userType}-${t.user.userId}`;
        const timers = typingTimers.current;
        const old = timers.get(key);
        if (old) clearTimeout(old);
        timers.delete(key);
        const drop = () =>
          setTyping((cur) => cur.filter((u) => `${u.userType}-${u.userId}` !== key));
        if (t.isTyping) {
          setTyping((cur) =>
            cur.some((u) => `${u.userType}-${u.userId}` === key) ? cur : [...cur, t.user],
          );
          timers.set(key, setTimeout(drop, TYPING_SHOWN_MS));
        } else drop();
      }),
      signaling.on('message_read', (r) => {
        if (r.conversationId !== conversationId) return;
        if (r.user.userId === me.userId && r.user.userType === me.role) return;
        setReadByOthers((cur) => Math.max(cur, r.messageId));
      }),
      signaling.onStatus((s) => {
        setConnection(s);
        // Back after a disconnection: fetch what was said meanwhile.
        if (s === 'connected' && alive) {
          const after = lastConfirmedId();
          if (after > 0) {
            api
              .history(conversationId, { after, limit: 100 })
              .then((page) => add(page.messages.map((m) => formatMessage(m, me))))
              .catch(() => undefined);
          }
        }
      }),
    ];

    let joined = false;
    signaling
      .connect({ token, userType: role, userId, role })
      .then(() => signaling.joinConversation(conversationId))
      .then(() => {
        joined = true;
        if (!alive) signaling.leaveConversation(conversationId);
      })
      .catch((e: Error) => alive && setError(`Messagerie en direct indisponible : ${e.message}`))
      .finally(() => alive && setConnection(signaling.status));

    api
      .history(conversationId, { limit: PAGE })
      .then((page) => {
        if (!alive) return;
        add(page.messages.map((m) => formatMessage(m, me)));
        setHasMore(page.pagination.has_more);
      })
      .catch((e: Error) => alive && setError(`Historique indisponible : ${e.message}`))
      .finally(() => alive && setLoading(false));

    const timers = typingTimers.current;
    return () => {
      alive = false;
      for (const off of offs) off();
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
      if (myTypingTimer.current) clearTimeout(myTypingTimer.current);
      myTypingTimer.current = null;
      if (joined) signaling.leaveConversation(conversationId);
    };
  }, [conversationId, token, userId, role, signaling, api, me]);

  const stopTyping = useCallback(() => {
    if (myTypingTimer.current) {
      clearTimeout(myTypingTimer.current);
      myTypingTimer.current = null;
      if (conversationId !== null) signaling.setTyping(conversationId, false);
    }
  }, [conversationId, signaling]);

  const notifyTyping = useCallback(() => {
    if (conversationId === null) return;
    if (!myTypingTimer.current) signaling.setTyping(conversationId, true);
    else clearTimeout(myTypingTimer.current);
    myTypingTimer.current = setTimeout(() => {
      myTypingTimer.current = null;
      signaling.setTyping(conversationId, false);
    }, TYPING_IDLE_MS);
  }, [conversationId, signaling]);

  const sendBody = useCallback(
    async (draft: ChatItem, body: Parameters<typeof api.sendMessage>[1]) => {
      if (conversationId === null) return;
      setMessages((cur) => [...cur, draft]);
      try {
        const m = await api.sendMessage(conversationId, body);
        setMessages((cur) =>
          merge(
            cur.filter((i) => i.clientId !== draft.clientId || !i.pending),
            [formatMessage(m, me)],
          ),
        );
      } catch (e) {
        setMessages((cur) =>
          cur.map((i) => (i.clientId === draft.clientId ? { ...i, pending: false, failed: true } : i)),
        );
        setError(`Message non envoyé : ${(e as Error).message}`);
      }
    },
    [api, conversationId, me],
  );

  const draftOf = useCallback(
    (content: string, type: MessageType): ChatItem => ({
      id: Number.MAX_SAFE_INTEGER,
      sender: role,
      senderId: userId,
      senderName: '',
      content,
      timestamp: new Date().toISOString(),
      type,
      mine: true,
      pending: true,
      clientId: newClientId(),
    }),
    [role, userId],
  );

  const send = useCallback(
    async (text: string) => {
      const contenu = text.trim();
      if (!contenu || conversationId === null) return;
      stopTyping();
      const draft = draftOf(contenu, 'texte');
      await sendBody(draft, {
        contenu,
        type_message: 'texte',
        client_message_id: draft.clientId,
        metadata: { timestamp: draft.timestamp, sender_id: userId, conversation_id: conversationId },
      });
    },
    [conversationId, draftOf, sendBody, stopTyping, userId],
  );

  const sendFile = useCallback(
    async (file: File) => {
      if (conversationId === null) return;
      setError(null);
      let attachment: AttachmentView;
      try {
        attachment = await api.uploadAttachment(conversationId, file, file.name);
      } catch (e) {
        setError(`Fichier refusé : ${(e as Error).message}`);
        return;
      }
      const type = typeForFile(attachment.content_type);
      const draft = draftOf(attachment.file_name, type);
      await sendBody(draft, {
        contenu: attachment.file_name,
        type_message: type,
        attachment_id: attachment.id,
        client_message_id: draft.clientId,
      });
    },
    [api, conversationId, draftOf, sendBody],
  );

  const loadOlder = useCallback(async () => {
    if (conversationId === null) return;
    const oldest = messagesRef.current.find((i) => !i.pending && !i.failed)?.id;
    if (!oldest) return;
    try {
      const page = await api.history(conversationId, { before: oldest, limit: PAGE });
      setMessages((cur) => merge(cur, page.messages.map((m) => formatMessage(m, me))));
      setHasMore(page.pagination.has_more);
    } catch (e) {
      setError(`Historique indisponible : ${(e as Error).message}`);
    }
  }, [api, conversationId, me]);

  return {
    messages,
    loading,
    error,
    hasMore,
    typing,
    readByOthers,
    connection,
    send,
    sendFile,
    loadOlder,
    notifyTyping,
    stopTyping,
  };
}

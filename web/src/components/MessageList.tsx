import { useEffect, useRef } from 'react';
import type { ChatItem } from '../hooks/useConversation';
import { AttachmentPreview } from './AttachmentPreview';

const URL_RE = /(https?:\/\/[^\s<>"]+)/g;

/** Text with its http(s) links clickable (a conference link sent in the chat, for one). */
export function Linkified({ text }: { text: string }) {
  const parts = text.split(URL_RE);
  return (
    <>
      {parts.map((part, i) =>
        i % 2 === 1 ? (
          <a key={i} href={part} target="_blank" rel="noopener noreferrer">
            {part}
          </a>
        ) : (
          part
        ),
      )}
    </>
  );
}

function time(ts: string): string {
  const d = new Date(ts);
  return Number.isNaN(d.getTime())
    ? ''
    : d.toLocaleTimeString('fr-FR', { hour: '2-digit', minute: '2-digit' });
}

export interface MessageListProps {
  messages: ChatItem[];
  token: string;
  readByOthers: number;
  hasMore?: boolean;
  onLoadOlder?: () => void;
  emptyText?: string;
}

/** Messages, oldest first, scrolled to the newest; mine on the right with their read state. */
export function MessageList({ messages, token, readByOthers, hasMore, onLoadOlder, emptyText }: MessageListProps) {
  const end = useRef<HTMLDivElement | null>(null);
  const count = messages.length;
  useEffect(() => {
    end.current?.scrollIntoView?.({ block: 'end' });
  }, [count]);
  return (
    <div className="chat-messages" role="log" aria-live="polite">
      {hasMore && onLoadOlder && (
        <button type="button" className="link-button chat-load-older" onClick={onLoadOlder}>
          Messages précédents
        </button>
      )}
      {count === 0 && <p className="chat-empty">{emptyText ?? 'Aucun message pour le moment.'}</p>}
      {messages.map((m) => (
        <div
          key={m.clientId && m.pending ? m.clientId : `${m.id}-${m.clientId ?? ''}`}
          className={`chat-message ${m.mine ? 'mine' : 'theirs'}${m.pending ? ' pending' : ''}${m.failed ? ' failed' : ''}`}
          data-message-id={m.pending || m.failed ? undefined : m.id}
          data-sender={m.sender}
        >
          {!m.mine && <div className="chat-message-sender">{m.senderName}</div>}
          <div className="chat-message-body">
            {m.attachment ? <AttachmentPreview attachment={m.attachment} token={token} /> : <Linkified text={m.content} />}
          </div>
          <div className="chat-message-meta">
            <span>{time(m.timestamp)}</span>
            {m.mine && (
              <span className="chat-message-status">
                {m.failed ? 'Non envoyé' : m.pending ? 'Envoi…' : m.id <= readByOthers ? 'Lu' : 'Envoyé'}
              </span>
            )}
          </div>
        </div>
      ))}
      <div ref={end} />
    </div>
  );
}

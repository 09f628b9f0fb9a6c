import { useConversation } from '../hooks/useConversation';
import type { Role, UserRef } from '../services/events';
import { Composer } from './Composer';
import { MessageList } from './MessageList';

/** The seed's props. */
export interface ChatMessageProps {
  userId: number;
  role: Role;
  token: string;
  conversationId: number;
  medecinId?: number;
  patientId?: number;
  /** Shown as the title (default: the other participant named from the ids above). */
  title?: string;
}

function typingText(users: UserRef[]): string {
  if (users.length === 0) return '';
  const who = users.map((u) => (u.userType === 'medecin' ? 'Le médecin' : 'Le patient'));
  return `${who.join(', ')} ${users.length > 1 ? 'écrivent' : 'écrit'}…`;
}

function defaultTitle(role: Role, medecinId?: number, patientId?: number): string {
  if (role === 'medecin' && patientId) return `Conversation avec le patient ${patientId}`;
  if (role === 'patient' && medecinId) return `Conversation avec le médecin ${medecinId}`;
  return 'Conversation';
}

/** The full chat: history with older pages, live messages, typing, read state, attachments. */
export function ChatMessage(props: ChatMessageProps) {
  const { userId, role, token, conversationId, medecinId, patientId, title } = props;
  const c = useConversation({ conversationId, token, userId, role });
  return (
    <section className="chat" data-conversation-id={conversationId} aria-label="Messagerie">
      <header className="chat-header">
        <h2>{title ?? defaultTitle(role, medecinId, patientId)}</h2>
        <span className={`connection-badge conn-${c.connection}`} title="Messagerie en direct">
          {c.connection === 'connected' ? 'En direct' : c.connection === 'reconnecting' ? 'Reconnexion…' : 'Hors ligne'}
        </span>
      </header>
      {c.error && (
        <p className="chat-error" role="alert">
          {c.error}
        </p>
      )}
      {c.loading ? (
        <p className="chat-loading">Chargement des messages…</p>
      ) : (
        <MessageList
          messages={c.messages}
          token={token}
          readByOthers={c.readByOthers}
          hasMore={c.hasMore}
          onLoadOlder={() => void c.loadOlder()}
        />
      )}
      <div className="typing-indicator" aria-live="polite">
        {typingText(c.typing)}
      </div>
      <Composer onSend={c.send} onFile={c.sendFile} onTyping={c.notifyTyping} />
    </section>
  );
}

export default ChatMessage;

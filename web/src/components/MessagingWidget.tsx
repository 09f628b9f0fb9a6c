import { useConversation } from '../hooks/useConversation';
import type { Role } from '../services/events';
import { Composer } from './Composer';
import { MessageList } from './MessageList';

/** The seed's props. */
export interface MessagingWidgetProps {
  userId: number;
  role: Role;
  token: string;
  conversationId: number;
  /** The addressee (for the title). */
  toUserId?: number;
  onClose?: () => void;
  title?: string;
}

/** A compact chat panel (used beside the video, or opened by MessagingButton). */
export function MessagingWidget(props: MessagingWidgetProps) {
  const { userId, role, token, conversationId, toUserId, onClose } = props;
  const c = useConversation({ conversationId, token, userId, role });
  const other = role === 'medecin' ? 'le patient' : 'le médecin';
  const title = props.title ?? (toUserId ? `Messages avec ${other} ${toUserId}` : 'Messages');
  return (
    <aside className="messaging-widget" data-conversation-id={conversationId} aria-label="Messagerie">
      <header className="messaging-widget-header">
        <strong>{title}</strong>
        {onClose && (
          <button type="button" className="messaging-widget-close icon-button" aria-label="Fermer" onClick={onClose}>
            ✕
          </button>
        )}
      </header>
      {c.error && (
        <p className="chat-error" role="alert">
          {c.error}
        </p>
      )}
      <MessageList
        messages={c.messages.slice(-30)}
        token={token}
        readByOthers={c.readByOthers}
        emptyText="Écrivez ici pendant la consultation."
      />
      <div className="typing-indicator" aria-live="polite">
        {c.typing.length > 0 ? `${other.replace(/^le /, 'Le ')} écrit…` : ''}
      </div>
      <Composer compact onSend={c.send} onFile={c.sendFile} onTyping={c.notifyTyping} />
    </aside>
  );
}

export default MessagingWidget;

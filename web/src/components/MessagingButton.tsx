import { useEffect, useState } from 'react';
import { useServices } from '../services/context';
import type { Role } from '../services/events';
import { MessagingWidget } from './MessagingWidget';

/** The seed's MessagingWidget props, plus a label. */
export interface MessagingButtonProps {
  userId: number;
  role: Role;
  token: string;
  conversationId: number;
  toUserId?: number;
  label?: string;
}

/** Opens the compact MessagingWidget; while closed, counts new messages from the others. */
export function MessagingButton({ userId, role, token, conversationId, toUserId, label }: MessagingButtonProps) {
  const { signaling } = useServices();
  const [open, setOpen] = useState(false);
  const [unread, setUnread] = useState(0);

  useEffect(() => {
    if (open) {
      setUnread(0);
      return;
    }
    let alive = true;
    let joined = false;
    const off = signaling.on('new_message', (m) => {
      if (m.conversation_id !== conversationId) return;
      if (m.expediteur_id === userId && m.sender?.type === role) return;
      setUnread((n) => n + 1);
    });
    signaling
      .connect({ token, userType: role, userId, role })
      .then(() => signaling.joinConversation(conversationId))
      .then(() => {
        joined = true;
        if (!alive) void signaling.leaveConversation(conversationId);
      })
      .catch(() => undefined);
    return () => {
      alive = false;
      off();
      if (joined) void signaling.leaveConversation(conversationId);
    };
  }, [open, signaling, conversationId, token, userId, role]);

  return (
    <div className="messaging-button-wrap">
      <button
        type="button"
        className="messaging-button"
        aria-expanded={open}
        onClick={() => setOpen((o) => !o)}
      >
        {label ?? 'Messages'}
        {unread > 0 && (
          <span className="badge" aria-label={`${unread} nouveau(x) message(s)`}>
            {unread}
          </span>
        )}
      </button>
      {open && (
        <MessagingWidget
          userId={userId}
          role={role}
          token={token}
          conversationId={conversationId}
          toUserId={toUserId}
          onClose={() => setOpen(false)}
        />
      )}
    </div>
  );
}

export default MessagingButton;

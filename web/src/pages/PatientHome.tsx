import { useEffect, useMemo, useState } from 'react';
import { ChatMessage } from '../components/ChatMessage';
import type { ConversationSummary } from '../services/api';
import type { AuthState } from '../services/auth';
import { useServices } from '../services/context';

/** A patient's conversations with their doctors. */
export function PatientHome({ auth }: { auth: AuthState }) {
  const services = useServices();
  const api = useMemo(() => services.api(auth.token), [services, auth.token]);
  const [conversations, setConversations] = useState<ConversationSummary[]>([]);
  const [selected, setSelected] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    api
      .listConversations()
      .then((list) => {
        setConversations(list);
        if (list.length > 0) setSelected((s) => s ?? list[0].id);
      })
      .catch((e: Error) => setError(`Impossible de charger vos conversations : ${e.message}`));
  }, [api]);

  const current = conversations.find((c) => c.id === selected);
  const doctor = current?.participants.find((p) => p.type === 'medecin');
  return (
    <div className="console">
      <aside className="conversation-list" aria-label="Mes conversations">
        <h2>Mes conversations</h2>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        {conversations.length === 0 && !error && (
          <p className="muted">Votre médecin ouvrira une conversation avec vous.</p>
        )}
        <ul>
          {conversations.map((c) => {
            const d = c.participants.find((p) => p.type === 'medecin');
            return (
              <li key={c.id}>
                <button
                  type="button"
                  className={`conversation-item${c.id === selected ? ' selected' : ''}`}
                  data-conversation-id={c.id}
                  onClick={() => setSelected(c.id)}
                >
                  <span className="conversation-name">{d ? `Médecin ${d.id}` : `Conversation ${c.id}`}</span>
                  {c.unread_count > 0 && c.id !== selected && <span className="badge">{c.unread_count}</span>}
                </button>
              </li>
            );
          })}
        </ul>
      </aside>
      <section className="console-main">
        {current && (
          <ChatMessage
            key={current.id}
            userId={auth.user.userId}
            role="patient"
            token={auth.token}
            conversationId={current.id}
            medecinId={doctor?.id}
            patientId={auth.user.userId}
          />
        )}
      </section>
    </div>
  );
}

import { useCallback, useEffect, useMemo, useRef, useState, type FormEvent } from 'react';
import { ChatMessage } from '../components/ChatMessage';
import { WebRTCWidget } from '../components/WebRTCWidget';
import type { ConversationSummary } from '../services/api';
import { socketAuthOf, type AuthState } from '../services/auth';
import { useServices } from '../services/context';

function otherPeople(c: ConversationSummary, auth: AuthState) {
  return c.participants.filter((p) => !(p.id === auth.user.userId && p.type === auth.user.role));
}

function nameOf(c: ConversationSummary, auth: AuthState): string {
  const others = otherPeople(c, auth);
  if (others.length === 0) return `Conversation ${c.id}`;
  return others.map((p) => (p.type === 'patient' ? `Patient ${p.id}` : `Médecin ${p.id}`)).join(', ');
}

/** The doctor's console: my conversations, the chat, and the video consultation. */
export function DoctorConsole({ auth }: { auth: AuthState }) {
  const services = useServices();
  const api = useMemo(() => services.api(auth.token), [services, auth.token]);
  const [conversations, setConversations] = useState<ConversationSummary[]>([]);
  const [selected, setSelected] = useState<number | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const [patientId, setPatientId] = useState('');
  const [videoFor, setVideoFor] = useState<number | null>(null);
  const selectedRef = useRef<number | null>(null);
  selectedRef.current = selected;

  const refresh = useCallback(async () => {
    try {
      const list = await api.listConversations();
      setConversations(list);
      setError(null);
      return list;
    } catch (e) {
      setError(`Impossible de charger vos conversations : ${(e as Error).message}`);
      return [];
    } finally {
      setLoading(false);
    }
  }, [api]);

  useEffect(() => {
    void refresh();
  }, [refresh]);

  // Live list: the latest message and unread counts of every conversation.
  useEffect(() => {
    const { signaling } = services;
    const joined: number[] = [];
    let alive = true;
    const ids = conversations.slice(0, 50).map((c) => c.id);
    signaling
      .connect(socketAuthOf(auth))
      .then(async () => {
        for (const id of ids) {
          if (!alive) break;
          await signaling.joinConversation(id).then(
            () => joined.push(id),
            () => undefined,
          );
        }
      })
      .catch(() => undefined);
    const off = signaling.on('new_message', (m) => {
      setConversations((cur) => {
        const i = cur.findIndex((c) => c.id === m.conversation_id);
        if (i < 0) return cur;
        const mine = m.expediteur_id === auth.user.userId && m.sender?.type === auth.user.role;
        const c = cur[i];
        const updated: ConversationSummary = {
          ...c,
          last_message: m,
          unread_count: mine || c.id === selectedRef.current ? c.unread_count : c.unread_count + 1,
        };
        return [updated, ...cur.slice(0, i), ...cur.slice(i + 1)];
      });
    });
    return () => {
      alive = false;
      off();
      for (const id of joined) void signaling.leaveConversation(id);
    };
    // Re-subscribe when the set of conversations changes, not on every update of one.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [services, auth, conversations.map((c) => c.id).join(',')]);

  const select = (id: number) => {
    setSelected(id);
    setConversations((cur) => cur.map((c) => (c.id === id ? { ...c, unread_count: 0 } : c)));
  };

  const create = async (e: FormEvent) => {
    e.preventDefault();
    const id = Number(patientId);
    if (!Number.isInteger(id) || id <= 0) {
      setError('Indiquez le numéro du patient.');
      return;
    }
    try {
      const conv = await api.createConversation([{ role: 'patient', id }]);
      setPatientId('');
      await refresh();
      select(conv.id);
    } catch (err) {
      setError(`Conversation non créée : ${(err as Error).message}`);
    }
  };

  const current = conversations.find((c) => c.id === selected) ?? null;
  const patient = current ? otherPeople(current, auth).find((p) => p.type === 'patient') : undefined;

  return (
    <div className="console">
      <aside className="conversation-list" aria-label="Mes conversations">
        <h2>Mes conversations</h2>
        <form className="new-conversation row" onSubmit={create}>
          <input
            id="new-conversation-patient"
            inputMode="numeric"
            placeholder="N° du patient"
            aria-label="Numéro du patient"
            value={patientId}
            onChange={(e) => setPatientId(e.target.value)}
          />
          <button id="btn-new-conversation" type="submit">
            Nouvelle
          </button>
        </form>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        {loading && <p>Chargement…</p>}
        {!loading && conversations.length === 0 && <p className="muted">Aucune conversation.</p>}
        <ul>
          {conversations.map((c) => (
            <li key={c.id}>
              <button
                type="button"
                className={`conversation-item${c.id === selected ? ' selected' : ''}`}
                data-conversation-id={c.id}
                onClick={() => select(c.id)}
              >
                <span className="conversation-name">{nameOf(c, auth)}</span>
                {c.unread_count > 0 && <span className="badge">{c.unread_count}</span>}
                <span className="conversation-last">{c.last_message?.contenu ?? 'Pas encore de message'}</span>
              </button>
            </li>
          ))}
        </ul>
        <button type="button" className="link-button" onClick={() => void refresh()}>
          Actualiser
        </button>
      </aside>

      <section className="console-main">
        {current ? (
          <>
            <div className="console-actions row">
              {videoFor === current.id ? null : (
                <button
                  id="btn-start-consultation"
                  type="button"
                  className="primary"
                  disabled={videoFor !== null}
                  onClick={() => setVideoFor(current.id)}
                >
                  Démarrer une consultation vidéo
                </button>
              )}
            </div>
            <div className={`console-panes${videoFor !== null ? ' with-video' : ''}`}>
              {videoFor !== null && (
                <WebRTCWidget
                  key={videoFor}
                  conversationId={videoFor}
                  isInitiator
                  auth={auth}
                  onClose={() => setVideoFor(null)}
                />
              )}
              <ChatMessage
                key={current.id}
                userId={auth.user.userId}
                role="medecin"
                token={auth.token}
                conversationId={current.id}
                medecinId={auth.user.userId}
                patientId={patient?.id}
                title={nameOf(current, auth)}
              />
            </div>
          </>
        ) : (
          <p className="muted placeholder">Choisissez une conversation, ou ouvrez-en une avec un patient.</p>
        )}
      </section>
    </div>
  );
}

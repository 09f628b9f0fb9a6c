import { useCallback, useState } from 'react';
import { MessagingWidget } from '../components/MessagingWidget';
import { WebRTCWidget } from '../components/WebRTCWidget';
import type { AuthState } from '../services/auth';
import { navigate } from '../router';

/** `/conference/{id}?code=…`: joining a consultation from the link the doctor sent. */
export function ConferencePage({ auth, link }: { auth: AuthState; link: string }) {
  const [conversationId, setConversationId] = useState<number | null>(null);
  const onInfo = useCallback((i: { conversationId: number | null }) => {
    if (i.conversationId) setConversationId(i.conversationId);
  }, []);
  const isDoctor = auth.user.role === 'medecin';
  return (
    <div className="conference-page">
      {!isDoctor && (
        <p style={{ gridColumn: '1 / -1', margin: 0 }}>
          <a id="link-precall" href={`/test-appel?retour=${encodeURIComponent(link)}`}>
            Tester ma caméra, mon micro et ma connexion avant de rejoindre
          </a>
        </p>
      )}
      <WebRTCWidget
        isInitiator={isDoctor}
        initialConferenceLink={link}
        auth={auth}
        onSessionInfo={onInfo}
        onClose={() => navigate(isDoctor ? '/doctor' : '/patient')}
      />
      {conversationId !== null && (
        <MessagingWidget
          userId={auth.user.userId}
          role={auth.user.role}
          token={auth.token}
          conversationId={conversationId}
          title="Messages pendant la consultation"
        />
      )}
    </div>
  );
}

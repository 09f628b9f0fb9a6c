import { useCallback, useEffect, useMemo, useState } from 'react';
import { MessagingWidget } from '../components/MessagingWidget';
import { WebRTCWidget } from '../components/WebRTCWidget';
import { ApiError } from '../services/api';
import { guestAuth, guestSignIn, type AuthState } from '../services/auth';
import { useServices } from '../services/context';
import { describe } from '../services/messages';
import type { GuestToken } from '../services/api';
import { navigate } from '../router';

/** `/conference/{id}?code=…`: joining a consultation from the link the doctor sent. */
export function ConferencePage({ auth, link }: { auth: AuthState; link: string }) {
  const [conversationId, setConversationId] = useState<number | null>(null);
  const onInfo = useCallback((i: { conversationId: number | null }) => {
    if (i.conversationId) setConversationId(i.conversationId);
  }, []);
  const isDoctor = auth.user.role === 'medecin';
  const role = auth.user.role;
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
      {conversationId !== null && role !== 'invite' && (
        <MessagingWidget
          userId={auth.user.userId}
          role={role}
          token={auth.token}
          conversationId={conversationId}
          title="Messages pendant la consultation"
        />
      )}
    </div>
  );
}

/** The server's refusal of a guest code, as one of our message codes. */
function guestErrorCode(e: unknown): string {
  if (!(e instanceof ApiError)) return 'unreachable';
  if (e.status === 0) return 'unreachable';
  if (e.status === 429 || e.code === 'too_many_attempts') return 'too_many_attempts';
  if (e.code === 'session_ended') return 'session_ended';
  if (e.code === 'guest_code_used' || e.status === 409) return 'guest_code_used';
  if (e.code === 'expired_code') return 'guest_expired';
  return 'guest_invalid';
}

type GuestState =
  | { kind: 'loading' }
  | { kind: 'error'; code: string }
  | { kind: 'ready'; guest: GuestToken };

/**
 * `/conference/{id}?guest={code}`: a guest (interpreter, family member) with no account. The
 * single-use code is exchanged for a token bound to this session, kept in this tab (a reload
 * uses it again); then the guest asks to join and waits like a patient. No messaging: a guest
 * has no access to the conversation.
 */
export function GuestConferencePage({ sessionId, code }: { sessionId: number; code: string | null }) {
  const services = useServices();
  const api = useMemo(() => services.api(null), [services]);
  const [state, setState] = useState<GuestState>({ kind: 'loading' });

  useEffect(() => {
    let alive = true;
    guestSignIn(sessionId, code, api).then(
      (guest) => alive && setState({ kind: 'ready', guest }),
      (e) => alive && setState({ kind: 'error', code: guestErrorCode(e) }),
    );
    return () => {
      alive = false;
    };
  }, [sessionId, code, api]);

  if (state.kind === 'loading') {
    return (
      <div className="conference-page guest">
        <p role="status">Vérification du lien d&apos;invitation…</p>
      </div>
    );
  }
  if (state.kind === 'error') {
    return (
      <div className="conference-page guest">
        <div className="call-error guest-error" role="alert" data-code={state.code}>
          <p>{describe(state.code)}</p>
        </div>
      </div>
    );
  }
  return (
    <div className="conference-page guest">
      <p className="guest-banner" id="guest-name-banner">
        Vous participez en tant qu&apos;invité : <strong>{state.guest.display_name}</strong>
      </p>
      <WebRTCWidget
        isInitiator={false}
        initialConferenceLink={`/conference/${sessionId}`}
        auth={guestAuth(state.guest)}
      />
    </div>
  );
}

import { useEffect, useState } from 'react';
import { clearAuth, displayName, loadAuth, loadGuest, type AuthState } from './services/auth';
import { useServices } from './services/context';
import { ConferencePage, GuestConferencePage } from './pages/ConferencePage';
import { DoctorConsole } from './pages/DoctorConsole';
import { PatientHome } from './pages/PatientHome';
import { PrecallCheckPage } from './pages/PrecallCheckPage';
import { SignInPage } from './pages/SignInPage';
import { navigate, useLocation } from './router';

function homeOf(auth: AuthState): string {
  return auth.user.role === 'medecin' ? '/doctor' : '/patient';
}

/** `?retour=/conference/…`: where the check's page sends the patient back (this site only). */
function backToConference(search: string): string | null {
  const back = new URLSearchParams(search).get('retour');
  return back && /^\/conference\/\d+/.test(back) ? back : null;
}

export function App() {
  const place = useLocation();
  const services = useServices();
  const [auth, setAuth] = useState<AuthState | null>(() => loadAuth());
  const conference = /^\/conference\/(\d+)\/?$/.exec(place.pathname);
  // The pre-call check, for anyone signed in (a patient comes from the conference link).
  const precall = /^\/test-appel\/?$/.test(place.pathname);
  // A guest link (`?guest=CODE`), or a guest of this session reloading its page: no sign-in.
  const guestCode = conference ? new URLSearchParams(place.search).get('guest') : null;
  const guestSession =
    conference && (guestCode !== null || (!auth && loadGuest(Number(conference[1])) !== null))
      ? Number(conference[1])
      : null;

  const signOut = () => {
    clearAuth();
    services.signaling.disconnect();
    setAuth(null);
    navigate('/signin');
  };

  const onSignedIn = (state: AuthState) => {
    setAuth(state);
    if (!conference && !precall) navigate(homeOf(state), { replace: true });
  };

  // "/", "/signin" or a page of the other role: go home.
  const redirect =
    auth &&
    !conference &&
    !precall &&
    !(place.pathname === '/doctor' && auth.user.role === 'medecin') &&
    !(place.pathname === '/patient' && auth.user.role === 'patient')
      ? homeOf(auth)
      : null;
  useEffect(() => {
    if (redirect) navigate(redirect, { replace: true });
  }, [redirect]);

  let page;
  if (guestSession !== null) {
    page = <GuestConferencePage sessionId={guestSession} code={guestCode?.trim() || null} />;
  } else if (!auth) {
    page = (
      <SignInPage
        onSignedIn={onSignedIn}
        defaultRole={conference || precall ? 'patient' : 'medecin'}
        intro={
          conference
            ? 'Connectez-vous pour rejoindre votre consultation vidéo.'
            : precall
              ? 'Connectez-vous pour tester votre connexion avant la consultation.'
              : undefined
        }
      />
    );
  } else if (conference) {
    page = <ConferencePage auth={auth} link={`${place.pathname}${place.search}`} />;
  } else if (precall) {
    page = <PrecallCheckPage auth={auth} back={backToConference(place.search)} />;
  } else if (place.pathname === '/doctor' && auth.user.role === 'medecin') {
    page = <DoctorConsole auth={auth} />;
  } else if (place.pathname === '/patient' && auth.user.role === 'patient') {
    page = <PatientHome auth={auth} />;
  } else {
    page = null;
  }

  return (
    <div className="app">
      <header className="topbar">
        <span className="brand">relais · téléconsultation</span>
        {auth && guestSession === null && (
          <span className="whoami">
            <span id="whoami" data-role={auth.user.role} data-user-id={auth.user.userId}>
              {displayName(auth.user)}
            </span>
            <button type="button" className="link-button" onClick={signOut}>
              Se déconnecter
            </button>
          </span>
        )}
      </header>
      {page}
    </div>
  );
}

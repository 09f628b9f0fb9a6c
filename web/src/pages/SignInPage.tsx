import { useEffect, useState, type FormEvent } from 'react';
import { DevSignInLocalOnly, DevSignInUnavailable, devSignIn, probeDevMode, type AuthState } from '../services/auth';
import { useServices } from '../services/context';
import type { Role } from '../services/events';

export interface SignInPageProps {
  onSignedIn(state: AuthState): void;
  /** Role selected at first (a conference link suggests "patient"). */
  defaultRole?: Role;
  intro?: string;
}

/**
 * Development sign-in: a token for a chosen role and id. It exists only while the server runs
 * without a real JWT secret; otherwise the page says that the clinic's system signs people in.
 */
export function SignInPage({ onSignedIn, defaultRole = 'medecin', intro }: SignInPageProps) {
  const services = useServices();
  const [mode, setMode] = useState<'probing' | 'dev' | 'local-only' | 'unavailable' | 'unreachable'>('probing');
  const [role, setRole] = useState<Role>(defaultRole);
  const [id, setId] = useState(defaultRole === 'medecin' ? '79' : '11');
  const [name, setName] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    let alive = true;
    probeDevMode(services.api(null))
      .then((m) => alive && setMode(m))
      .catch(() => alive && setMode('unreachable'));
    return () => {
      alive = false;
    };
  }, [services]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const n = Number(id);
    if (!Number.isInteger(n) || n <= 0) {
      setError('Indiquez un identifiant numérique positif.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      onSignedIn(await devSignIn(role, n, name.trim() || undefined, services.api(null)));
    } catch (err) {
      if (err instanceof DevSignInUnavailable) setMode('unavailable');
      else if (err instanceof DevSignInLocalOnly) setMode('local-only');
      else setError(`Connexion impossible : ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="signin-page card">
      <h1>Connexion</h1>
      {intro && <p>{intro}</p>}
      {mode === 'probing' && <p>Chargement…</p>}
      {mode === 'unreachable' && (
        <p className="error" role="alert">
          Le serveur est injoignable. Vérifiez votre connexion puis rechargez la page.
        </p>
      )}
      {mode === 'unavailable' && (
        <p className="signin-unavailable" role="alert">
          La connexion est gérée par le système de votre établissement de santé. Ouvrez cette page depuis
          votre espace patient ou professionnel.
        </p>
      )}
      {mode === 'local-only' && (
        <p className="signin-unavailable" role="alert">
          Ce serveur est en mode développement : la connexion n'est possible que depuis la machine qui l'héberge
          (http://localhost). Pour l'ouvrir à votre établissement, configurez son système de connexion (JWT).
        </p>
      )}
      {mode === 'dev' && (
        <form className="signin-form" onSubmit={submit}>
          <p className="dev-banner">Mode développement : choisissez un rôle et un identifiant.</p>
          <label>
            Rôle
            <select id="signin-role" value={role} onChange={(e) => setRole(e.target.value as Role)}>
              <option value="medecin">Médecin</option>
              <option value="patient">Patient</option>
            </select>
          </label>
          <label>
            Identifiant
            <input id="signin-id" inputMode="numeric" value={id} onChange={(e) => setId(e.target.value)} />
          </label>
          <label>
            Nom affiché (facultatif)
            <input id="signin-name" value={name} onChange={(e) => setName(e.target.value)} placeholder="Dr. Martin" />
          </label>
          {error && (
            <p className="error" role="alert">
              {error}
            </p>
          )}
          <button id="signin-submit" type="submit" className="primary" disabled={busy}>
            Se connecter
          </button>
        </form>
      )}
    </main>
  );
}

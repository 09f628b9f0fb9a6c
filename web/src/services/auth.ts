/**
 * Who is signed in. A development sign-in stores its token in sessionStorage (gone when the tab
 * closes); a clinic's system may instead leave the seed's keys in localStorage (`jwt` or
 * `token`, plus `patient` / `medecin` objects), which are read as a fallback.
 */
import { Api, ApiError, type GuestToken } from './api';
import type { Role, SocketAuth, UserType } from './events';

export interface AuthUser {
  userId: number;
  /** `invite`: a guest, by its guest link (never from sign-in). */
  role: UserType;
  name?: string;
}

export interface AuthState {
  token: string;
  user: AuthUser;
}

const KEY = 'relais.auth';

interface Claims {
  role?: string;
  userType?: string;
  sub?: string | number;
  userId?: string | number;
  id?: string | number;
  nom?: string;
  name?: string;
  exp?: number;
}

function base64UrlDecode(s: string): string {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(s.length / 4) * 4, '=');
  const bin = atob(b64);
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/** Reads (does not verify) a JWT's claims: role, id, name, expiry. */
export function decodeToken(token: string): (AuthUser & { exp?: number }) | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  let claims: Claims;
  try {
    claims = JSON.parse(base64UrlDecode(parts[1])) as Claims;
  } catch {
    return null;
  }
  const role = claims.role ?? claims.userType;
  const id = Number(claims.sub ?? claims.userId ?? claims.id);
  if ((role !== 'patient' && role !== 'medecin') || !Number.isInteger(id) || id <= 0) return null;
  return { role, userId: id, name: claims.nom ?? claims.name, exp: claims.exp };
}

function expired(exp: number | undefined, nowMs: number): boolean {
  return exp !== undefined && exp * 1000 <= nowMs;
}

function storage(kind: 'session' | 'local'): Storage | null {
  try {
    return kind === 'session' ? globalThis.sessionStorage : globalThis.localStorage;
  } catch {
    return null;
  }
}

/** The signed-in user, or null (no token, or an expired one). */
export function loadAuth(nowMs: number = Date.now()): AuthState | null {
  const raw = storage('session')?.getItem(KEY);
  if (raw) {
    try {
      const s = JSON.parse(raw) as AuthState;
      const claims = decodeToken(s.token);
      if (claims && !expired(claims.exp, nowMs)) return s;
    } catch {
      /* fall through */
    }
    storage('session')?.removeItem(KEY);
  }
  const local = storage('local');
  const token = local?.getItem('jwt') ?? local?.getItem('token');
  if (token) {
    const claims = decodeToken(token);
    if (claims && !expired(claims.exp, nowMs)) {
      return { token, user: { userId: claims.userId, role: claims.role, name: claims.name } };
    }
  }
  return null;
}

export function saveAuth(state: AuthState): void {
  storage('session')?.setItem(KEY, JSON.stringify(state));
}

export function clearAuth(): void {
  storage('session')?.removeItem(KEY);
}

export function socketAuthOf(state: AuthState): SocketAuth {
  return {
    token: state.token,
    userType: state.user.role,
    userId: state.user.userId,
    role: state.user.role,
  };
}

export function displayName(user: { role: UserType; userId: number; name?: string }): string {
  if (user.name) return user.name;
  if (user.role === 'invite') return `Invité ${user.userId}`;
  return user.role === 'medecin' ? `Médecin ${user.userId}` : `Patient ${user.userId}`;
}

// ---- guests ---------------------------------------------------------------------------------

const guestKey = (sessionId: number) => `relais.guest.${sessionId}`;

/** A guest's token for `sessionId` kept in this tab (the code is single-use: a reload needs it). */
export function loadGuest(sessionId: number, nowMs: number = Date.now()): GuestToken | null {
  const store = storage('session');
  const raw = store?.getItem(guestKey(sessionId));
  if (!raw) return null;
  try {
    const g = JSON.parse(raw) as GuestToken;
    const until = Date.parse(g.expiresAt);
    if (g.token && g.sessionId === sessionId && (Number.isNaN(until) || until > nowMs)) return g;
  } catch {
    /* dropped below */
  }
  store?.removeItem(guestKey(sessionId));
  return null;
}

export function clearGuest(sessionId: number): void {
  storage('session')?.removeItem(guestKey(sessionId));
}

/** The guest as the client's other code sees a signed-in user. */
export function guestAuth(g: GuestToken): AuthState {
  return { token: g.token, user: { userId: g.user.userId, role: 'invite', name: g.display_name || undefined } };
}

/**
 * The guest's token for `sessionId`: the one kept in this tab, else `code` exchanged for one
 * (and kept). Rejects with the server's {@link ApiError} (`guest_code_used`, `expired_code`,
 * `invalid_code`, `too_many_attempts`).
 */
export async function guestSignIn(sessionId: number, code: string | null, api: Api = new Api()): Promise<GuestToken> {
  const kept = loadGuest(sessionId);
  if (kept) return kept;
  if (!code) throw new ApiError(403, 'invalid_code', 'no guest code in the link');
  const g = await api.guestToken(sessionId, code);
  storage('session')?.setItem(guestKey(sessionId), JSON.stringify(g));
  return g;
}

/** Thrown when the server has a real secret: sign-in belongs to the clinic's system. */
export class DevSignInUnavailable extends Error {
  constructor() {
    super("la connexion est gérée par le système de l'établissement");
    this.name = 'DevSignInUnavailable';
  }
}

/** Thrown when development sign-in answers the server's own machine only. */
export class DevSignInLocalOnly extends Error {
  constructor() {
    super('la connexion de développement ne fonctionne que sur la machine du serveur');
    this.name = 'DevSignInLocalOnly';
  }
}

/**
 * What development sign-in offers, without minting anything: `GET /api/dev/token` answers 200
 * in development mode (`signInHere: false` when this browser is not on the server's machine)
 * and 404 otherwise.
 */
export async function probeDevMode(api: Api = new Api()): Promise<'dev' | 'local-only' | 'unavailable'> {
  try {
    const d = await api.devMode();
    if (d.developmentMode !== true) return 'unavailable';
    return d.signInHere === false ? 'local-only' : 'dev';
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return 'unavailable';
    throw e;
  }
}

/** Development sign-in: a token for a chosen role and id, stored for this tab. */
export async function devSignIn(
  role: Role,
  id: number,
  name?: string,
  api: Api = new Api(),
): Promise<AuthState> {
  try {
    const d = await api.devToken(role, id, name);
    const state: AuthState = {
      token: d.token,
      user: { userId: d.user.userId, role: d.user.userType, name: name || undefined },
    };
    saveAuth(state);
    return state;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) throw new DevSignInUnavailable();
    if (e instanceof ApiError && e.code === 'dev_sign_in_local_only') throw new DevSignInLocalOnly();
    throw e;
  }
}

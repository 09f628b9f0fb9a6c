import { afterEach, describe, expect, it } from 'vitest';
import { fakeToken } from '../test/fakes';
import { Api } from './api';
import {
  clearAuth,
  decodeToken,
  devSignIn,
  DevSignInLocalOnly,
  DevSignInUnavailable,
  loadAuth,
  probeDevMode,
  socketAuthOf,
} from './auth';

function api(status: number, body: unknown, calls: { url: string; init?: RequestInit }[] = []) {
  return new Api({
    fetch: async (url, init) => {
      calls.push({ url, init });
      return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
    },
  });
}

afterEach(() => {
  sessionStorage.clear();
  localStorage.clear();
});

describe('auth', () => {
  it('decodes role, id and name from the token claims', () => {
    expect(decodeToken(fakeToken({ role: 'medecin', sub: '79', nom: 'Dr. Martin', exp: 10 }))).toEqual({
      role: 'medecin',
      userId: 79,
      name: 'Dr. Martin',
      exp: 10,
    });
    expect(decodeToken(fakeToken({ userType: 'patient', userId: 11 }))?.userId).toBe(11);
    expect(decodeToken(fakeToken({ role: 'admin', sub: '1' }))).toBeNull();
    expect(decodeToken('not-a-jwt')).toBeNull();
  });

  it('development sign-in stores the token for this tab', async () => {
    const token = fakeToken({ role: 'patient', sub: '11', exp: 4_000_000_000 });
    const calls: { url: string; init?: RequestInit }[] = [];
    const a = api(200, { success: true, data: { token, user: { userId: 11, userType: 'patient', role: 'patient' } } }, calls);
    const state = await devSignIn('patient', 11, 'Jean', a);
    expect(calls[0].url).toBe('/api/dev/token');
    expect(JSON.parse(String(calls[0].init?.body))).toEqual({ role: 'patient', id: 11, name: 'Jean' });
    expect(state.user).toEqual({ userId: 11, role: 'patient', name: 'Jean' });
    expect(loadAuth()).toEqual(state);
    expect(socketAuthOf(state)).toEqual({ token, userType: 'patient', userId: 11, role: 'patient' });
    clearAuth();
    expect(loadAuth()).toBeNull();
  });

  it('a configured secret (404) means the clinic signs people in', async () => {
    const a = api(404, { success: false, error: { code: 'not_found', message: 'no such endpoint' } });
    await expect(devSignIn('medecin', 79, undefined, a)).rejects.toBeInstanceOf(DevSignInUnavailable);
    await expect(probeDevMode(a)).resolves.toBe('unavailable');
    await expect(probeDevMode(api(200, { success: true, data: { developmentMode: true } }))).resolves.toBe('dev');
    await expect(
      probeDevMode(api(200, { success: true, data: { developmentMode: true, signInHere: true } })),
    ).resolves.toBe('dev');
  });

  it('development sign-in from another machine is refused with a clear reason', async () => {
    await expect(
      probeDevMode(api(200, { success: true, data: { developmentMode: true, signInHere: false } })),
    ).resolves.toBe('local-only');
    const refused = api(403, {
      success: false,
      error: { code: 'dev_sign_in_local_only', message: 'development sign-in answers clients on the server machine only' },
    });
    await expect(devSignIn('patient', 11, undefined, refused)).rejects.toBeInstanceOf(DevSignInLocalOnly);
  });

  it('an expired stored token is dropped; the seed localStorage keys are read', () => {
    sessionStorage.setItem('relais.auth', JSON.stringify({ token: fakeToken({ role: 'patient', sub: 1, exp: 1 }), user: { userId: 1, role: 'patient' } }));
    expect(loadAuth()).toBeNull();
    expect(sessionStorage.getItem('relais.auth')).toBeNull();
    const jwt = fakeToken({ userType: 'medecin', id: 79, name: 'Dr. Dupont' });
    localStorage.setItem('jwt', jwt);
    expect(loadAuth()).toEqual({ token: jwt, user: { userId: 79, role: 'medecin', name: 'Dr. Dupont' } });
  });
});

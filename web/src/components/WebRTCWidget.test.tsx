import { act, cleanup, fireEvent, screen, waitFor } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { AuthState } from '../services/auth';
import { fakeSignaling, fakeToken, localStream, peerConnectionFactory, sdpOf } from '../test/fakes';
import { fakeRest, renderWithServices, type Route } from '../test/render';
import { parseConferenceLink, WebRTCWidget } from './WebRTCWidget';

afterEach(cleanup);

const patientAuth: AuthState = {
  token: fakeToken({ role: 'patient', sub: '11' }),
  user: { userId: 11, role: 'patient' },
};
const doctorAuth: AuthState = {
  token: fakeToken({ role: 'medecin', sub: '79' }),
  user: { userId: 79, role: 'medecin', name: 'Dr. Martin' },
};
const LINK = 'https://clinic.example:3443/conference/193?code=81392D21';
const server = { userType: 'server', userId: null } as const;

function valid(): Route {
  return () => [200, { status: 'success', data: { conferenceCode: '81392D21', sessionId: 193, isValid: true } }];
}

async function mount(opts: {
  auth: AuthState;
  link?: string;
  isInitiator?: boolean;
  routes?: Record<string, Route>;
  getUserMedia?: () => Promise<MediaStream>;
}) {
  const sig = fakeSignaling();
  const pcs = peerConnectionFactory();
  const rest = fakeRest({ 'POST /api/messaging/webrtc/validate-code': valid(), ...opts.routes });
  const getUserMedia = vi.fn(opts.getUserMedia ?? (async () => localStream()));
  const view = renderWithServices(
    <WebRTCWidget
      isInitiator={opts.isInitiator ?? false}
      conversationId={opts.isInitiator ? 3 : undefined}
      initialConferenceLink={opts.link}
      auth={opts.auth}
      onClose={() => undefined}
    />,
    { signaling: sig.service, rest, mediaDevices: { getUserMedia }, createPeerConnection: pcs.create },
  );
  // The start (code check, camera, socket, REST) runs inside act.
  await act(async () => {
    await new Promise((r) => setTimeout(r, 30));
  });
  return { sig, pcs, rest, getUserMedia, view };
}

function state() {
  return document.querySelector('.call-state')?.getAttribute('data-state');
}

describe('parseConferenceLink', () => {
  it('reads the session and the code', () => {
    expect(parseConferenceLink(LINK)).toEqual({ sessionId: 193, code: '81392D21' });
    expect(parseConferenceLink('/conference/7?code=ABCD')).toEqual({ sessionId: 7, code: 'ABCD' });
    expect(parseConferenceLink('/conference/7')).toBeNull();
    expect(parseConferenceLink('/doctor?code=x')).toBeNull();
  });
});

describe('WebRTCWidget for the patient', () => {
  it('says so plainly when camera and microphone are refused, and retries', async () => {
    const denied = Object.assign(new Error('Permission denied'), { name: 'NotAllowedError' });
    const { getUserMedia } = await mount({
      auth: patientAuth,
      link: LINK,
      getUserMedia: () => Promise.reject(denied),
    });
    const alert = await screen.findByRole('alert');
    expect(alert.getAttribute('data-code')).toBe('permission_denied');
    expect(alert.textContent).toMatch(/caméra ou au micro a été refusé/);
    fireEvent.click(screen.getByRole('button', { name: 'Réessayer' }));
    await waitFor(() => expect(getUserMedia).toHaveBeenCalledTimes(2));
  });

  it('explains an invalid code before asking for the camera', async () => {
    const { getUserMedia } = await mount({
      auth: patientAuth,
      link: LINK,
      routes: {
        'POST /api/messaging/webrtc/validate-code': () => [
          200,
          { status: 'success', data: { conferenceCode: '81392D21', sessionId: null, isValid: false, reason: 'invalid_code' } },
        ],
      },
    });
    const alert = await screen.findByRole('alert');
    expect(alert.getAttribute('data-code')).toBe('invalid_code');
    expect(alert.textContent).toMatch(/code d'accès n'est pas valide/);
    expect(getUserMedia).not.toHaveBeenCalled();
    expect(screen.queryByRole('button', { name: 'Réessayer' })).toBeNull();
  });

  it('explains an expired code', async () => {
    await mount({
      auth: patientAuth,
      link: LINK,
      routes: {
        'POST /api/messaging/webrtc/validate-code': () => [200, { status: 'success', data: { isValid: false, reason: 'expired_code' } }],
      },
    });
    expect((await screen.findByRole('alert')).textContent).toMatch(/a expiré/);
  });

  it('explains a link without code', async () => {
    await mount({ auth: patientAuth, link: '/conference/193' });
    expect((await screen.findByRole('alert')).getAttribute('data-code')).toBe('bad_link');
  });

  it('joins, shows the doctor, mutes, hangs up', async () => {
    const { sig, pcs } = await mount({ auth: patientAuth, link: LINK });
    await waitFor(() => expect(sig.socket?.sent('request_webrtc_offer')).toHaveLength(1));
    expect(sig.socket.sent('request_webrtc_offer')[0].payload).toMatchObject({ code: '81392D21', sessionId: 193 });
    expect(state()).toBe('connecting');

    act(() => {
      sig.socket.fire('webrtc_offer', {
        sessionId: 193,
        conversationId: 3,
        sessionType: 'audio_video',
        sdpOffer: sdpOf([
          { kind: 'audio', mid: '0', direction: 'recvonly' },
          { kind: 'video', mid: '1', direction: 'recvonly' },
          { kind: 'audio', mid: '2', direction: 'sendonly', stream: 'medecin-79' },
          { kind: 'video', mid: '3', direction: 'sendonly', stream: 'medecin-79' },
        ]),
        from: server,
      });
    });
    await waitFor(() => expect(sig.socket.sent('webrtc_answer')).toHaveLength(1));
    act(() => {
      sig.socket.fire('participant_joined', {
        sessionId: 193,
        participant: { userId: 11, userType: 'patient' },
        participants: [{ userId: 79, userType: 'medecin' }, { userId: 11, userType: 'patient' }],
      });
      pcs.last.setConnectionState('connected');
    });
    expect(state()).toBe('connected');
    expect(document.querySelector('video.remote-video[data-stream-id="medecin-79"]')).not.toBeNull();
    expect(document.querySelector('video.local-video')).not.toBeNull();
    expect(screen.getByText('Médecin 79')).toBeTruthy();

    fireEvent.click(screen.getByRole('button', { name: 'Couper le micro' }));
    expect(screen.getByRole('button', { name: 'Activer le micro' }).getAttribute('aria-pressed')).toBe('true');
    fireEvent.click(screen.getByRole('button', { name: 'Couper la caméra' }));
    expect(screen.getByRole('button', { name: 'Activer la caméra' })).toBeTruthy();

    // A lost connection is told while it is rebuilt.
    act(() => pcs.last.setConnectionState('disconnected'));
    expect(state()).toBe('reconnecting');
    expect(screen.getByText(/Reconnexion automatique en cours/)).toBeTruthy();
    act(() => pcs.last.setConnectionState('connected'));
    expect(state()).toBe('connected');

    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Raccrocher' })));
    await waitFor(() => expect(sig.socket.sent('leave_session')).toHaveLength(1));
    expect(state()).toBe('ended');
    expect(screen.getByText('Vous avez quitté la consultation.', { selector: '.call-ended p' })).toBeTruthy();
  });

  it('tells the patient when the doctor ends the consultation', async () => {
    const { sig } = await mount({ auth: patientAuth, link: LINK });
    await waitFor(() => expect(sig.socket?.sent('request_webrtc_offer')).toHaveLength(1));
    act(() => sig.socket.fire('session_ended', { sessionId: 193, reason: 'ended_by_doctor' }));
    expect(state()).toBe('ended');
    expect(screen.getByText('La consultation est terminée.', { selector: '.call-ended p' })).toBeTruthy();
    expect(screen.queryByRole('button', { name: 'Raccrocher' })).toBeNull();
  });

  it('tells a webrtc_error about the code in plain language', async () => {
    const { sig } = await mount({ auth: patientAuth, link: LINK });
    await waitFor(() => expect(sig.socket?.sent('request_webrtc_offer')).toHaveLength(1));
    act(() => sig.socket.fire('webrtc_error', { sessionId: 193, code: 'too_many_attempts', message: 'too many wrong codes' }));
    expect(state()).toBe('failed');
    expect(screen.getByRole('alert').textContent).toMatch(/Trop de tentatives/);
  });
});

describe('WebRTCWidget for the doctor', () => {
  it('creates the consultation, shows link and code with a copy button, waits for the patient', async () => {
    const writeText = vi.fn(async () => undefined);
    Object.defineProperty(navigator, 'clipboard', { configurable: true, value: { writeText } });
    const { sig, pcs, rest } = await mount({
      auth: doctorAuth,
      isInitiator: true,
      routes: {
        'POST /api/messaging/conversations/3/messages': () => [201, { success: true, data: { message: {} } }],
        'POST /api/messaging/webrtc/sessions': () => [
          201,
          {
            status: 'success',
            data: {
              session: { id: 193, conversation_id: 3, session_type: 'audio_video', statut: 'initiating' },
              conferenceLink: {
                sessionId: 193,
                conferenceUrl: 'https://h:3443/conference/193',
                joinCode: '81392D21',
                fullLink: 'https://h:3443/conference/193?code=81392D21',
              },
            },
          },
        ],
      },
    });
    expect(sig.socket.sent('webrtc_offer')).toHaveLength(1);
    const create = rest.calls.find((c) => c.path.startsWith('/api/messaging/webrtc/sessions'))!;
    expect(create.path).toBe('/api/messaging/webrtc/sessions?generate_conference_link=true');
    expect(create.body).toEqual({
      conversation_id: 3,
      session_type: 'audio_video',
      sdp_offer: null,
      initiator: { userType: 'medecin', userId: 79 },
    });
    expect((document.querySelector('#conference-link') as HTMLInputElement).value).toBe(
      'https://h:3443/conference/193?code=81392D21',
    );
    expect(document.querySelector('#join-code')?.textContent).toBe('81392D21');
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Copier le lien' })));
    await waitFor(() => expect(screen.getByRole('button', { name: 'Copié ✓' })).toBeTruthy());
    expect(writeText).toHaveBeenCalledWith('https://h:3443/conference/193?code=81392D21');
    // …or posts it in the conversation.
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Envoyer le lien dans la conversation' })));
    const posted = rest.calls.find((c) => c.path === '/api/messaging/conversations/3/messages')!;
    expect(posted.body).toMatchObject({ type_message: 'texte' });
    expect(posted.body.contenu).toContain('https://h:3443/conference/193?code=81392D21');
    expect(screen.getByRole('button', { name: 'Lien envoyé dans la conversation ✓' })).toBeTruthy();

    act(() => {
      sig.socket.fire('webrtc_answer', {
        sessionId: 193,
        sdpAnswer: sdpOf([{ kind: 'audio', mid: '0', direction: 'recvonly' }]),
        from: server,
      });
      sig.socket.fire('participant_joined', {
        sessionId: 193,
        participant: { userId: 79, userType: 'medecin' },
        participants: [{ userId: 79, userType: 'medecin' }],
      });
    });
    await waitFor(() => expect(pcs.last.signalingState).toBe('stable'));
    act(() => pcs.last.setConnectionState('connected'));
    expect(state()).toBe('waiting');
    expect(document.querySelector('.waiting-room')?.textContent).toMatch(/patient n’est pas encore arrivé/);

    act(() =>
      sig.socket.fire('participant_joined', {
        sessionId: 193,
        participant: { userId: 11, userType: 'patient' },
        participants: [{ userId: 79, userType: 'medecin' }, { userId: 11, userType: 'patient' }],
      }),
    );
    expect(state()).toBe('connected');
    expect(document.querySelector('.waiting-room')).toBeNull();

    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Terminer la consultation' })));
    await waitFor(() => expect(sig.socket.sent('end_session')).toHaveLength(1));
    expect(state()).toBe('ended');
  });

  it('a patient cannot start a consultation', async () => {
    await mount({ auth: patientAuth, isInitiator: true });
    expect((await screen.findByRole('alert')).getAttribute('data-code')).toBe('doctor_only');
  });
});

describe('WebRTCWidget: recording', () => {
  const started = {
    sessionId: 193,
    startedAt: '2026-11-25T10:30:00.000Z',
    startedBy: { userId: 79, userType: 'medecin' },
    consent: { confirmedBy: { userId: 79, userType: 'medecin' }, confirmedAt: '2026-11-25T10:30:00.000Z' },
  };

  async function connectedDoctor(routes: Record<string, Route> = {}) {
    const m = await mount({ auth: doctorAuth, isInitiator: true, link: LINK, routes });
    await waitFor(() => expect(m.sig.socket?.sent('webrtc_offer')).toHaveLength(1));
    act(() => {
      m.sig.socket.fire('webrtc_answer', {
        sessionId: 193,
        sdpAnswer: sdpOf([{ kind: 'audio', mid: '0', direction: 'recvonly' }]),
        from: server,
      });
      m.sig.socket.fire('participant_joined', {
        sessionId: 193,
        participant: { userId: 11, userType: 'patient' },
        participants: [{ userId: 79, userType: 'medecin' }, { userId: 11, userType: 'patient' }],
      });
    });
    await waitFor(() => expect(m.pcs.last.signalingState).toBe('stable'));
    act(() => m.pcs.last.setConnectionState('connected'));
    expect(state()).toBe('connected');
    return m;
  }

  it('shows the patient that the consultation is recorded, without controls', async () => {
    const { sig, pcs } = await mount({ auth: patientAuth, link: LINK });
    await waitFor(() => expect(sig.socket?.sent('request_webrtc_offer')).toHaveLength(1));
    act(() => {
      sig.socket.fire('webrtc_offer', {
        sessionId: 193,
        conversationId: 3,
        sessionType: 'audio_video',
        sdpOffer: sdpOf([
          { kind: 'audio', mid: '0', direction: 'recvonly' },
          { kind: 'video', mid: '1', direction: 'recvonly' },
        ]),
        from: server,
      });
    });
    await waitFor(() => expect(sig.socket.sent('webrtc_answer')).toHaveLength(1));
    act(() => pcs.last.setConnectionState('connected'));
    expect(document.querySelector('.recording-indicator')).toBeNull();
    act(() => sig.socket.fire('recording_started', started));
    const indicator = document.querySelector('.recording-indicator')!;
    expect(indicator.getAttribute('role')).toBe('status');
    expect(indicator.textContent).toMatch(/Cette consultation est enregistrée/);
    expect(document.querySelector('#btn-start-recording')).toBeNull();
    expect(document.querySelector('#recording-consent')).toBeNull();
    act(() => sig.socket.fire('recording_stopped', { sessionId: 193, reason: 'stopped_by_doctor', stoppedAt: 'x' }));
    expect(document.querySelector('.recording-indicator')).toBeNull();
  });

  it('the doctor confirms consent, starts, sees the indicator, stops and downloads', async () => {
    const download = vi.fn(() => [200, { fake: 'bytes' }] as [number, unknown]);
    const { sig, rest } = await connectedDoctor({ 'GET /api/messaging/webrtc/recordings/r1': download });
    const finished = {
      id: 'r1',
      sessionId: 193,
      participant: { role: 'patient', id: 11 },
      consent: { confirmed_by: { userId: 79, userType: 'medecin' }, confirmed_at: 'x' },
      status: 'finished',
      started_at: 'x',
      ended_at: 'y',
      duration_ms: 65_000,
      size_bytes: 3 * 1024 * 1024,
      content_type: 'video/webm',
      end_reason: 'stopped_by_doctor',
      url: '/api/messaging/webrtc/recordings/r1',
    };
    sig.socket.responder = (event) =>
      event === 'stop_recording'
        ? { success: true, data: { sessionId: 193, recordings: [finished] } }
        : { success: true, data: { sessionId: 193, startedAt: 'x', recordings: ['r1'] } };
    const start = screen.getByRole('button', { name: "Démarrer l'enregistrement" }) as HTMLButtonElement;
    expect(start.disabled).toBe(true);
    fireEvent.click(screen.getByLabelText(/consentement à l'enregistrement/));
    expect(start.disabled).toBe(false);
    await act(async () => fireEvent.click(start));
    expect(sig.socket.sent('start_recording').map((e) => e.payload)).toEqual([{ sessionId: 193, consent: true }]);
    act(() => sig.socket.fire('recording_started', started));
    expect(document.querySelector('.recording-indicator')?.textContent).toMatch(/Enregistrement en cours/);

    await act(async () => fireEvent.click(screen.getByRole('button', { name: "Arrêter l'enregistrement" })));
    await waitFor(() => expect(sig.socket.sent('stop_recording')).toHaveLength(1));
    expect(document.querySelector('.recording-indicator')).toBeNull();
    const item = await screen.findByText(/Patient 11 — 1 min 05 s, 3.0 Mo/);
    expect(item).toBeTruthy();
    // Consent is asked again for the next recording.
    expect((screen.getByLabelText(/consentement à l'enregistrement/) as HTMLInputElement).checked).toBe(false);

    const createObjectURL = vi.fn(() => 'blob:recording');
    Object.assign(URL, { createObjectURL, revokeObjectURL: vi.fn() });
    const click = vi.spyOn(HTMLAnchorElement.prototype, 'click').mockImplementation(() => undefined);
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Télécharger' })));
    await waitFor(() => expect(click).toHaveBeenCalled());
    const call = rest.calls.find((c) => c.path === '/api/messaging/webrtc/recordings/r1')!;
    expect(call.method).toBe('GET');
    expect(createObjectURL).toHaveBeenCalled();
    click.mockRestore();
  });

  it("says why the server refused to record", async () => {
    const { sig } = await connectedDoctor();
    sig.socket.responder = () => ({ success: false, error: { code: 'session_not_live', message: 'nobody' } });
    fireEvent.click(screen.getByLabelText(/consentement à l'enregistrement/));
    await act(async () => fireEvent.click(screen.getByRole('button', { name: "Démarrer l'enregistrement" })));
    const alert = await screen.findByRole('alert');
    expect(alert.getAttribute('data-code')).toBe('session_not_live');
    expect(alert.textContent).toMatch(/rien à enregistrer/);
    // The call goes on.
    expect(state()).toBe('connected');
  });
});

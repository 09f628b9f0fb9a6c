/**
 * Issue 21 in the browser client: waiting room (both sides), guests, removal, audio only, and
 * groups of three or four; the server is played by the fake socket and the fake REST routes.
 */
import { act, cleanup, fireEvent, screen, waitFor } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { GuestConferencePage } from '../pages/ConferencePage';
import type { AuthState } from '../services/auth';
import {
  FakeMediaStream,
  fakeSignaling,
  fakeToken,
  FakeTrack,
  localStream,
  peerConnectionFactory,
  sdpOf,
} from '../test/fakes';
import { fakeRest, renderWithServices, type Route } from '../test/render';
import { elapsed } from './Admission';
import { refusalDetail, WebRTCWidget } from './WebRTCWidget';

afterEach(cleanup);
beforeEach(() => sessionStorage.clear());

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
const doctor = { userId: 79, userType: 'medecin' } as const;
const patient = { userId: 11, userType: 'patient' } as const;
const guest = { userId: 5, userType: 'invite' } as const;

const waitingAck = (event: string) =>
  event === 'request_webrtc_offer'
    ? { success: true as const, data: { sessionId: 193, waiting: true } }
    : { success: true as const, data: { sessionId: 193 } };

function sessionRoutes(): Record<string, Route> {
  return {
    'POST /api/messaging/webrtc/sessions': () => [
      201,
      {
        status: 'success',
        data: {
          session: { id: 193, conversation_id: 3, session_type: 'audio_video', statut: 'initiating', waiting_room: true },
          conferenceLink: {
            sessionId: 193,
            conferenceUrl: 'https://h:3443/conference/193',
            joinCode: '81392D21',
            fullLink: 'https://h:3443/conference/193?code=81392D21',
          },
        },
      },
    ],
  };
}

async function mount(opts: {
  auth: AuthState;
  link?: string;
  isInitiator?: boolean;
  routes?: Record<string, Route>;
  responder?: (event: string, payload: any) => any;
}) {
  const sig = fakeSignaling();
  const pcs = peerConnectionFactory();
  const rest = fakeRest({
    'POST /api/messaging/webrtc/validate-code': () => [
      200,
      { status: 'success', data: { conferenceCode: '81392D21', sessionId: 193, isValid: true } },
    ],
    ...(opts.isInitiator ? sessionRoutes() : {}),
    ...opts.routes,
  });
  const streams: MediaStream[] = [];
  const getUserMedia = vi.fn(async (c: MediaStreamConstraints) => {
    const s = c.audio
      ? localStream()
      : (new FakeMediaStream('camera-again', [new FakeTrack('video', 'camera-again')]) as unknown as MediaStream);
    streams.push(s);
    return s;
  });
  // The first socket is made by connect(): set its responder as soon as it exists.
  if (opts.responder) {
    const origConnect = sig.service.connect.bind(sig.service);
    sig.service.connect = (auth) => {
      const p = origConnect(auth);
      sig.socket.responder = opts.responder!;
      return p;
    };
  }
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
  await act(async () => {
    await new Promise((r) => setTimeout(r, 30));
  });
  return { sig, pcs, rest, getUserMedia, streams, view };
}

function state() {
  return document.querySelector('.call-state')?.getAttribute('data-state');
}

const joinOffer = (extra: { kind: 'audio' | 'video'; mid: string; direction: string; stream?: string }[] = []) =>
  sdpOf([
    { kind: 'audio', mid: '0', direction: 'recvonly' },
    { kind: 'video', mid: '1', direction: 'recvonly' },
    { kind: 'audio', mid: '2', direction: 'sendonly', stream: 'medecin-79' },
    { kind: 'video', mid: '3', direction: 'sendonly', stream: 'medecin-79' },
    ...extra,
  ]);

/** A doctor whose call is up, with the patient in it. */
async function connectedDoctor(routes: Record<string, Route> = {}) {
  const m = await mount({ auth: doctorAuth, isInitiator: true, routes, responder: () => ({ success: true, data: { sessionId: 193 } }) });
  await waitFor(() => expect(m.sig.socket.sent('webrtc_offer')).toHaveLength(1));
  act(() => {
    m.sig.socket.fire('webrtc_answer', {
      sessionId: 193,
      sdpAnswer: sdpOf([
        { kind: 'audio', mid: '0', direction: 'recvonly' },
        { kind: 'video', mid: '1', direction: 'recvonly' },
      ]),
      from: server,
    });
  });
  await waitFor(() => expect(m.pcs.last.signalingState).toBe('stable'));
  act(() => m.pcs.last.setConnectionState('connected'));
  return m;
}

describe('the patient in the waiting room', () => {
  it('is told the doctor will see them, since when, with the camera preview; admitted, the call starts', async () => {
    const { sig, pcs } = await mount({ auth: patientAuth, link: LINK, responder: waitingAck });
    await waitFor(() => expect(state()).toBe('lobby'));
    const since = new Date(Date.now() - 65_000).toISOString();
    act(() => sig.socket.fire('waiting', { sessionId: 193, since }));
    const lobby = document.querySelector('.lobby')!;
    expect(lobby.textContent).toMatch(/Le médecin va vous recevoir/);
    expect(lobby.querySelector('.lobby-since')?.textContent).toMatch(/En attente depuis \d\d:\d\d \(1 min 0\d s\)/);
    expect(document.querySelector('video.local-video')).not.toBeNull();
    // Waiting: no audio-only switch, no screen sharing yet.
    expect(document.querySelector('#btn-audio-only')).toBeNull();
    expect(document.querySelector('.call-state')?.textContent).toBe('Le médecin va vous recevoir');

    act(() => sig.socket.fire('admitted', { sessionId: 193 }));
    expect(document.querySelector('.lobby')).toBeNull();
    expect(state()).toBe('connecting');
    act(() => {
      sig.socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: joinOffer(), from: server });
    });
    await waitFor(() => expect(sig.socket.sent('webrtc_answer')).toHaveLength(1));
    act(() => {
      sig.socket.fire('participant_joined', { sessionId: 193, participant: patient, participants: [doctor, patient] });
      pcs.last.setConnectionState('connected');
    });
    expect(state()).toBe('connected');
    expect(document.querySelector('video.remote-video[data-stream-id="medecin-79"]')).not.toBeNull();
  });

  it("is told the doctor declined, with the doctor's message; the camera stops", async () => {
    const { sig, streams } = await mount({ auth: patientAuth, link: LINK, responder: waitingAck });
    await waitFor(() => expect(state()).toBe('lobby'));
    act(() =>
      sig.socket.fire('declined', { sessionId: 193, message: 'the doctor declined to admit you: Veuillez reprendre rendez-vous.' }),
    );
    expect(state()).toBe('ended');
    const ended = document.querySelector('.call-ended')!;
    expect(ended.getAttribute('data-reason')).toBe('declined');
    expect(ended.textContent).toMatch(/Le médecin n'a pas accepté votre participation/);
    expect(ended.querySelector('.ended-message')?.textContent).toBe('Motif : Veuillez reprendre rendez-vous.');
    expect(streams[0].getTracks().every((t) => (t as unknown as FakeTrack).stopped)).toBe(true);
    expect(document.querySelector('.lobby')).toBeNull();
  });

  it('is told when removed from the consultation; media stops', async () => {
    const { sig, pcs, streams } = await mount({ auth: patientAuth, link: LINK });
    await waitFor(() => expect(sig.socket.sent('request_webrtc_offer')).toHaveLength(1));
    act(() => {
      sig.socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: joinOffer(), from: server });
    });
    await waitFor(() => expect(sig.socket.sent('webrtc_answer')).toHaveLength(1));
    act(() => pcs.last.setConnectionState('connected'));
    act(() => sig.socket.fire('removed', { sessionId: 193, message: 'the doctor removed you from this consultation' }));
    expect(state()).toBe('ended');
    expect(document.querySelector('.call-ended')?.getAttribute('data-reason')).toBe('removed');
    expect(document.querySelector('.call-ended')?.textContent).toMatch(/retiré de la consultation/);
    // The server's English wording is not repeated under ours.
    expect(document.querySelector('.ended-message')).toBeNull();
    expect(pcs.last.closed).toBe(true);
    expect(streams[0].getTracks().every((t) => (t as unknown as FakeTrack).stopped)).toBe(true);
    expect(document.querySelector('video.remote-video')).toBeNull();
  });
});

describe("the doctor's waiting room, participants and guests", () => {
  it('lists who waits with a live duration; Admettre and Refuser go to the server', async () => {
    const { sig } = await connectedDoctor();
    const since = new Date(Date.now() - 125_000).toISOString();
    act(() => {
      sig.socket.fire('participant_waiting', { sessionId: 193, user: patient, name: 'Jean Dupont', since });
      sig.socket.fire('participant_waiting', { sessionId: 193, user: guest, name: 'Interprète', since: new Date(Date.now() - 10_000).toISOString() });
    });
    const rows = [...document.querySelectorAll('.waiting-list .waiting-person')];
    expect(rows.map((r) => r.querySelector('.waiting-name')?.textContent)).toEqual(['Jean Dupont', 'Interprète']);
    expect(rows[0].querySelector('.waiting-since')?.textContent).toMatch(/attend depuis 2 min 0\d s/);
    // Live: the duration moves on by itself.
    const before = rows[1].querySelector('.waiting-since')?.textContent;
    await act(async () => {
      await new Promise((r) => setTimeout(r, 1_100));
    });
    expect(document.querySelector('[data-user="invite-5"] .waiting-since')?.textContent).not.toBe(before);

    await act(async () => fireEvent.click(document.querySelector('[data-user="patient-11"] .btn-admit')!));
    expect(sig.socket.sent('admit_participant').map((e) => e.payload)).toEqual([{ sessionId: 193, user: patient }]);
    expect(document.querySelector('[data-user="patient-11"]')).toBeNull();

    fireEvent.click(document.querySelector('[data-user="invite-5"] .btn-decline')!);
    // Not yet: the doctor may say why first.
    expect(sig.socket.sent('decline_participant')).toHaveLength(0);
    fireEvent.change(screen.getByLabelText(/Motif du refus/), { target: { value: 'Rappelez demain' } });
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Confirmer le refus' })));
    expect(sig.socket.sent('decline_participant').map((e) => e.payload)).toEqual([
      { sessionId: 193, user: guest, reason: 'Rappelez demain' },
    ]);
    expect(document.querySelector('.waiting-person')).toBeNull();
  });

  it('says so when the person admitted had already left', async () => {
    const { sig } = await connectedDoctor();
    act(() => sig.socket.fire('participant_waiting', { sessionId: 193, user: guest, name: 'Interprète', since: new Date().toISOString() }));
    sig.socket.responder = () => ({ success: false, error: { code: 'not_waiting', message: 'not waiting' } });
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Admettre' })));
    expect((await screen.findByRole('alert')).getAttribute('data-code')).toBe('not_waiting');
  });

  it('a waiting person who leaves disappears from the list', async () => {
    const { sig } = await connectedDoctor();
    act(() => sig.socket.fire('participant_waiting', { sessionId: 193, user: guest, name: 'Interprète', since: new Date().toISOString() }));
    expect(document.querySelector('.waiting-list')).not.toBeNull();
    act(() => sig.socket.fire('participant_waiting_left', { sessionId: 193, user: guest }));
    expect(document.querySelector('.waiting-list')).toBeNull();
  });

  it('Retirer removes a participant; their tile goes when the server drops their stream', async () => {
    const { sig, pcs } = await connectedDoctor();
    const offer = (withGuest: boolean) =>
      sdpOf([
        { kind: 'audio', mid: '0', direction: 'sendrecv' },
        { kind: 'video', mid: '1', direction: 'sendrecv' },
        { kind: 'audio', mid: '2', direction: 'sendonly', stream: 'patient-11' },
        { kind: 'video', mid: '3', direction: 'sendonly', stream: 'patient-11' },
        { kind: 'audio', mid: '4', direction: withGuest ? 'sendonly' : 'inactive', stream: withGuest ? 'invite-5' : undefined },
        { kind: 'video', mid: '5', direction: withGuest ? 'sendonly' : 'inactive', stream: withGuest ? 'invite-5' : undefined },
      ]);
    act(() => {
      sig.socket.fire('participant_waiting', { sessionId: 193, user: guest, name: 'Interprète', since: new Date().toISOString() });
      sig.socket.fire('participant_joined', { sessionId: 193, participant: guest, participants: [doctor, patient, guest] });
      sig.socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: offer(true), from: server });
    });
    await waitFor(() => expect(sig.socket.sent('webrtc_answer')).toHaveLength(1));
    // Three people: a tile for each other one, named.
    const tiles = () => [...document.querySelectorAll('video.remote-video')].map((v) => v.getAttribute('data-stream-id'));
    expect(tiles()).toEqual(['patient-11', 'invite-5']);
    expect(document.querySelector('figure[data-stream-id="invite-5"] figcaption')?.textContent).toBe('Interprète');
    expect(document.querySelector('.video-grid')?.classList.contains('multi')).toBe(true);
    // Admitted: no longer listed as waiting; listed as a participant.
    expect(document.querySelector('.waiting-list')).toBeNull();
    expect([...document.querySelectorAll('.participant-list .participant')].map((p) => p.getAttribute('data-user'))).toEqual([
      'patient-11',
      'invite-5',
    ]);

    await act(async () => fireEvent.click(document.querySelector('[data-user="invite-5"] .btn-remove')!));
    expect(sig.socket.sent('remove_participant').map((e) => e.payload)).toEqual([{ sessionId: 193, user: guest }]);
    act(() => {
      sig.socket.fire('participant_left', { sessionId: 193, participant: guest, reason: 'removed', participants: [doctor, patient] });
      sig.socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: offer(false), from: server });
    });
    await waitFor(() => expect(sig.socket.sent('webrtc_answer')).toHaveLength(2));
    expect(tiles()).toEqual(['patient-11']);
    expect(document.querySelector('[data-user="invite-5"]')).toBeNull();
    // The doctor's own call goes on.
    expect(state()).toBe('connected');
    expect(pcs.created).toHaveLength(1);
  });

  it('four people: every other participant gets a tile', async () => {
    const { sig } = await connectedDoctor();
    act(() => {
      sig.socket.fire('webrtc_offer', {
        sessionId: 193,
        conversationId: 3,
        sessionType: 'audio_video',
        sdpOffer: sdpOf([
          { kind: 'audio', mid: '0', direction: 'sendrecv' },
          { kind: 'video', mid: '1', direction: 'sendrecv' },
          ...(['patient-11', 'patient-12', 'invite-5'] as const).flatMap((stream, i) => [
            { kind: 'audio' as const, mid: String(2 + 2 * i), direction: 'sendonly', stream },
            { kind: 'video' as const, mid: String(3 + 2 * i), direction: 'sendonly', stream },
          ]),
        ]),
        from: server,
      });
      sig.socket.fire('participant_joined', {
        sessionId: 193,
        participant: guest,
        participants: [doctor, patient, { userId: 12, userType: 'patient' }, guest],
      });
    });
    await waitFor(() => expect(sig.socket.sent('webrtc_answer')).toHaveLength(1));
    expect([...document.querySelectorAll('video.remote-video')].map((v) => v.getAttribute('data-stream-id'))).toEqual([
      'patient-11',
      'patient-12',
      'invite-5',
    ]);
    expect([...document.querySelectorAll('figure.remote figcaption')].map((f) => f.textContent)).toEqual([
      'Patient 11',
      'Patient 12',
      'Invité 5',
    ]);
  });

  it('invites a guest: name and validity, then the link to copy', async () => {
    const writeText = vi.fn(async () => undefined);
    Object.defineProperty(navigator, 'clipboard', { configurable: true, value: { writeText } });
    const url = 'https://h:3443/conference/193?guest=GST12345';
    const { rest } = await connectedDoctor({
      'POST /api/messaging/webrtc/sessions/193/guests': (body) => [
        201,
        {
          status: 'success',
          data: { guest: { id: 5, display_name: body.display_name, expires_at: '2026-12-07T17:00:00Z', code: 'GST12345', url } },
        },
      ],
    });
    fireEvent.click(screen.getByRole('button', { name: /Inviter un participant/ }));
    // A name is required.
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Créer le lien' })));
    expect(screen.getByRole('alert').textContent).toMatch(/nom de l'invité/);
    expect(rest.calls.some((c) => c.path.endsWith('/guests'))).toBe(false);

    fireEvent.change(screen.getByLabelText("Nom de l'invité"), { target: { value: 'Interprète' } });
    fireEvent.change(screen.getByLabelText('Validité du lien'), { target: { value: '240' } });
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Créer le lien' })));
    const call = rest.calls.find((c) => c.path === '/api/messaging/webrtc/sessions/193/guests')!;
    expect(call.method).toBe('POST');
    expect(call.body).toEqual({ display_name: 'Interprète', expires_in_minutes: 240 });
    const field = (await screen.findByDisplayValue(url)) as HTMLInputElement;
    expect(field.closest('.guest-link')?.textContent).toMatch(/Lien pour Interprète/);
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Copier' })));
    expect(writeText).toHaveBeenCalledWith(url);
  });

  it('says why an invitation failed', async () => {
    await connectedDoctor({
      'POST /api/messaging/webrtc/sessions/193/guests': () => [403, { success: false, error: { code: 'forbidden', message: 'no' } }],
    });
    fireEvent.click(screen.getByRole('button', { name: /Inviter un participant/ }));
    fireEvent.change(screen.getByLabelText("Nom de l'invité"), { target: { value: 'Interprète' } });
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Créer le lien' })));
    expect((await screen.findByRole('alert')).textContent).toMatch(/Invitation impossible : Vous n'avez pas accès/);
  });

  it("turns the session's waiting room off", async () => {
    const { rest } = await connectedDoctor({
      'PATCH /api/messaging/webrtc/sessions/193': (body) => [
        200,
        { status: 'success', data: { session: { id: 193, waiting_room: body.waiting_room } } },
      ],
    });
    const box = document.querySelector('#waiting-room-enabled') as HTMLInputElement;
    expect(box.checked).toBe(true);
    await act(async () => fireEvent.click(box));
    const call = rest.calls.find((c) => c.method === 'PATCH')!;
    expect(call.path).toBe('/api/messaging/webrtc/sessions/193');
    expect(call.body).toEqual({ waiting_room: false });
    await waitFor(() => expect((document.querySelector('#waiting-room-enabled') as HTMLInputElement).checked).toBe(false));
  });
});

describe('audio only', () => {
  async function connectedPatient() {
    const m = await mount({ auth: patientAuth, link: LINK });
    await waitFor(() => expect(m.sig.socket.sent('request_webrtc_offer')).toHaveLength(1));
    act(() => {
      m.sig.socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: joinOffer(), from: server });
    });
    await waitFor(() => expect(m.sig.socket.sent('webrtc_answer')).toHaveLength(1));
    act(() => {
      m.sig.socket.fire('participant_joined', { sessionId: 193, participant: patient, participants: [doctor, patient] });
      m.pcs.last.setConnectionState('connected');
    });
    return m;
  }

  it('the patient chooses a reason, switches; video stops both ways; back to video with a new camera', async () => {
    const { sig, pcs, streams, getUserMedia } = await connectedPatient();
    fireEvent.click(screen.getByRole('button', { name: 'Audio seulement' }));
    fireEvent.change(screen.getByLabelText('Motif :'), { target: { value: 'demande du patient' } });
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Passer en audio seulement' })));
    expect(sig.socket.sent('set_audio_only').map((e) => e.payload)).toEqual([
      { sessionId: 193, audioOnly: true, reason: 'demande du patient' },
    ]);
    const video = pcs.last.transceivers.filter((t) => t.kind === 'video');
    expect(video.map((t) => t.direction)).toEqual(['inactive', 'inactive']);
    expect(video[0].sender.track).toBeNull();
    const camera = streams[0];
    expect(camera.getVideoTracks()).toHaveLength(0);
    expect(document.querySelector('figure.self .video-badge')?.textContent).toBe('Audio seulement');
    expect(document.querySelector('#btn-screen')).toBeNull();

    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Revenir à la vidéo' })));
    await waitFor(() => expect(sig.socket.sent('set_audio_only')).toHaveLength(2));
    expect(sig.socket.sent('set_audio_only')[1].payload).toEqual({ sessionId: 193, audioOnly: false });
    expect(getUserMedia).toHaveBeenLastCalledWith(expect.objectContaining({ audio: false }));
    expect(video.map((t) => t.direction)).toEqual(['sendonly', 'recvonly']);
    expect((video[0].sender.track as FakeTrack | null)?.id).toBe('camera-again');
    expect(document.querySelector('figure.self .video-badge')).toBeNull();
    expect(screen.getByRole('button', { name: 'Audio seulement' })).toBeTruthy();
  });

  it("the doctor's tile of an audio-only participant says so, and stops saying it when video is back", async () => {
    const { sig } = await connectedDoctor();
    act(() => {
      sig.socket.fire('webrtc_offer', {
        sessionId: 193,
        conversationId: 3,
        sessionType: 'audio_video',
        sdpOffer: sdpOf([
          { kind: 'audio', mid: '0', direction: 'sendrecv' },
          { kind: 'video', mid: '1', direction: 'sendrecv' },
          { kind: 'audio', mid: '2', direction: 'sendonly', stream: 'patient-11' },
          { kind: 'video', mid: '3', direction: 'sendonly', stream: 'patient-11' },
        ]),
        from: server,
      });
      sig.socket.fire('participant_joined', { sessionId: 193, participant: patient, participants: [doctor, patient] });
    });
    await waitFor(() => expect(document.querySelector('figure[data-stream-id="patient-11"]')).not.toBeNull());
    expect(document.querySelector('figure[data-stream-id="patient-11"] .video-badge')).toBeNull();
    act(() => sig.socket.fire('audio_only', { sessionId: 193, user: patient, audioOnly: true, reason: 'connexion insuffisante' }));
    expect(document.querySelector('figure[data-stream-id="patient-11"] .video-badge')?.textContent).toBe('Audio seulement');
    expect(document.querySelector('[data-user="patient-11"] .audio-only-badge')?.textContent).toBe('Audio seulement');
    act(() => sig.socket.fire('audio_only', { sessionId: 193, user: patient, audioOnly: false, reason: null }));
    expect(document.querySelector('figure[data-stream-id="patient-11"] .video-badge')).toBeNull();
  });
});

describe('a guest, by its link', () => {
  const token = 'rlg.header.payload.sig';
  const exchange = (status = 200, json?: unknown): Route => () => [
    status,
    json ?? {
      status: 'success',
      data: {
        token,
        user: { userId: 5, userType: 'invite' },
        display_name: 'Interprète',
        sessionId: 193,
        expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
      },
    },
  ];

  async function mountGuest(routes: Record<string, Route>, code: string | null = 'GST12345') {
    const sig = fakeSignaling();
    const pcs = peerConnectionFactory();
    const rest = fakeRest(routes);
    const origConnect = sig.service.connect.bind(sig.service);
    sig.service.connect = (auth) => {
      const p = origConnect(auth);
      sig.socket.responder = waitingAck;
      return p;
    };
    const getUserMedia = vi.fn(async () => localStream());
    const view = renderWithServices(<GuestConferencePage sessionId={193} code={code} />, {
      signaling: sig.service,
      rest,
      mediaDevices: { getUserMedia },
      createPeerConnection: pcs.create,
    });
    await act(async () => {
      await new Promise((r) => setTimeout(r, 40));
    });
    return { sig, pcs, rest, view, getUserMedia };
  }

  it('exchanges its code, connects as a guest, asks to join without code, waits; no messaging', async () => {
    const { sig, rest } = await mountGuest({ 'POST /api/messaging/webrtc/guest-token': exchange() });
    const ex = rest.calls.find((c) => c.path === '/api/messaging/webrtc/guest-token')!;
    expect(ex.body).toEqual({ sessionId: 193, code: 'GST12345' });
    // No code check for a guest: its token is the proof.
    expect(rest.calls.some((c) => c.path.includes('validate-code'))).toBe(false);
    expect(sig.socket.options.auth).toMatchObject({ token, userType: 'invite', userId: 5 });
    await waitFor(() => expect(sig.socket.sent('request_webrtc_offer')).toHaveLength(1));
    expect(sig.socket.sent('request_webrtc_offer')[0].payload).toEqual({ sessionId: 193, action: 'join_conference' });
    await waitFor(() => expect(state()).toBe('lobby'));
    expect(document.querySelector('.lobby')?.textContent).toMatch(/Le médecin va vous recevoir/);
    expect(document.querySelector('#guest-name-banner')?.textContent).toMatch(/Interprète/);
    expect(JSON.parse(sessionStorage.getItem('relais.guest.193')!).token).toBe(token);

    act(() => sig.socket.fire('admitted', { sessionId: 193 }));
    act(() => {
      sig.socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: joinOffer(), from: server });
    });
    await waitFor(() => expect(sig.socket.sent('webrtc_answer')).toHaveLength(1));
    // The conversation is known, and still no messaging for a guest.
    expect(document.querySelector('.messaging-widget')).toBeNull();
    expect(document.querySelector('.chat')).toBeNull();
  });

  it('a reload uses the kept token: the single-use code is not exchanged again', async () => {
    sessionStorage.setItem(
      'relais.guest.193',
      JSON.stringify({
        token,
        user: { userId: 5, userType: 'invite' },
        display_name: 'Interprète',
        sessionId: 193,
        expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
      }),
    );
    const refuse = vi.fn(exchange(409, { success: false, error: { code: 'guest_code_used', message: 'used' } }));
    const { sig } = await mountGuest({ 'POST /api/messaging/webrtc/guest-token': refuse });
    expect(refuse).not.toHaveBeenCalled();
    await waitFor(() => expect(sig.socket.sent('request_webrtc_offer')).toHaveLength(1));
  });

  it('an expired kept token is dropped and the code tried again', async () => {
    sessionStorage.setItem(
      'relais.guest.193',
      JSON.stringify({ token: 'old', user: { userId: 5, userType: 'invite' }, display_name: 'x', sessionId: 193, expiresAt: '2020-01-01T00:00:00Z' }),
    );
    const { rest, sig } = await mountGuest({ 'POST /api/messaging/webrtc/guest-token': exchange() });
    expect(rest.calls.filter((c) => c.path.endsWith('/guest-token'))).toHaveLength(1);
    expect(sig.socket.options.auth.token).toBe(token);
  });

  for (const [status, code, shown, text] of [
    [409, 'guest_code_used', 'guest_code_used', /déjà été utilisé/],
    [403, 'expired_code', 'guest_expired', /a expiré/],
    [403, 'invalid_code', 'guest_invalid', /n'est pas valide/],
    [429, 'too_many_attempts', 'too_many_attempts', /Trop de tentatives/],
    [409, 'session_ended', 'session_ended', /consultation est terminée/],
    [404, 'session_not_found', 'guest_invalid', /n'est pas valide/],
  ] as const) {
    it(`explains a refused link (${code})`, async () => {
      const { getUserMedia, sig } = await mountGuest({
        'POST /api/messaging/webrtc/guest-token': exchange(status, { success: false, error: { code, message: code } }),
      });
      const alert = await screen.findByRole('alert');
      expect(alert.getAttribute('data-code')).toBe(shown);
      expect(alert.textContent).toMatch(text);
      expect(getUserMedia).not.toHaveBeenCalled();
      expect(sig.sockets).toHaveLength(0);
      expect(sessionStorage.getItem('relais.guest.193')).toBeNull();
    });
  }
});

describe('refusalDetail', () => {
  it("keeps the doctor's reason, drops the server's default wording, shows anything else", () => {
    expect(refusalDetail('the doctor declined to admit you: Rappelez demain')).toBe('Motif : Rappelez demain');
    expect(refusalDetail('the doctor declined to admit you to this consultation')).toBeNull();
    expect(refusalDetail('the doctor removed you from this consultation')).toBeNull();
    expect(refusalDetail('Consultation complète')).toBe('Consultation complète');
    expect(refusalDetail(null)).toBeNull();
  });
});

describe('elapsed', () => {
  it('reads as a person would say it', () => {
    const now = Date.parse('2026-12-07T15:00:00Z');
    expect(elapsed('2026-12-07T14:59:15Z', now)).toBe('45 s');
    expect(elapsed('2026-12-07T14:56:55Z', now)).toBe('3 min 05 s');
    expect(elapsed('2026-12-07T13:58:00Z', now)).toBe('1 h 02 min');
    expect(elapsed('nonsense', now)).toBe('');
  });
});

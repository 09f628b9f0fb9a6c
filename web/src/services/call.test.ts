import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  fakeSignaling,
  FakeMediaStream,
  FakeTrack,
  localStream,
  peerConnectionFactory,
  sdpOf,
  settle,
  type FakeSocket,
} from '../test/fakes';
import { ConsultationCall, type CallMode } from './call';
import type { UserRef } from './events';

const doctor: UserRef = { userId: 79, userType: 'medecin' };
const patient: UserRef = { userId: 11, userType: 'patient' };

async function setup(mode: CallMode, extra: Partial<ConstructorParameters<typeof ConsultationCall>[0]> = {}) {
  const f = fakeSignaling({ ackTimeoutMs: 500 });
  const me = mode === 'publish' ? doctor : patient;
  await f.service.connect({ token: 't', userType: me.userType, userId: me.userId, role: me.userType });
  const pcs = peerConnectionFactory();
  const stream = localStream();
  const call = new ConsultationCall({
    signaling: f.service,
    sessionId: 193,
    mode,
    code: mode === 'join' ? '81392D21' : undefined,
    conversationId: mode === 'publish' ? 3 : null,
    sessionType: 'audio_video',
    self: me,
    localStream: stream,
    createPeerConnection: pcs.create,
    reconnect: { maxAttempts: 2, baseDelayMs: 100, maxDelayMs: 200, disconnectedGraceMs: 1000, connectTimeoutMs: 3000 },
    ...extra,
  });
  return { f, socket: f.socket as FakeSocket, pcs, stream, call };
}

/** The server's first offer to a joining patient while the doctor publishes. */
const joinOffer = sdpOf([
  { kind: 'audio', mid: '0', direction: 'recvonly' },
  { kind: 'video', mid: '1', direction: 'recvonly' },
  { kind: 'audio', mid: '2', direction: 'sendonly', stream: 'medecin-79' },
  { kind: 'video', mid: '3', direction: 'sendonly', stream: 'medecin-79' },
]);

describe('ConsultationCall: ICE servers', () => {
  it("uses the server's TURN for every PeerConnection it builds", async () => {
    const turn: RTCIceServer = {
      urls: ['turn:10.0.0.1:3478?transport=udp', 'turns:relais.example:5349?transport=tcp'],
      username: '1764000000:patient-11',
      credential: 'c2VjcmV0',
    };
    const { pcs, call } = await setup('publish', { iceServers: [turn] });
    call.start();
    await settle();
    expect(pcs.last.config.iceServers).toEqual([turn]);
    call.destroy();
  });
});

describe('ConsultationCall: the doctor publishes', () => {
  it('offers audio and video, applies the answer, then candidates', async () => {
    const { socket, pcs, call } = await setup('publish');
    call.start();
    await settle();
    const offer = socket.sent('webrtc_offer')[0];
    expect(offer.payload).toMatchObject({ sessionId: 193, conversationId: 3, sessionType: 'audio_video' });
    expect(offer.payload.sdpOffer).toContain('m=audio');
    expect(offer.payload.sdpOffer).toContain('m=video');
    expect(pcs.last.config.iceServers).toEqual([]);

    // A server candidate before the answer waits for it.
    const cand = { candidate: 'candidate:1 1 udp 2130706431 127.0.0.1 3479 typ host', sdpMid: '0', sdpMLineIndex: 0 };
    socket.fire('webrtc_ice_candidates', { sessionId: 193, candidates: [cand], from: { userType: 'server', userId: null } });
    socket.fire('webrtc_answer', {
      sessionId: 193,
      sdpAnswer: sdpOf([{ kind: 'audio', mid: '0', direction: 'recvonly' }, { kind: 'video', mid: '1', direction: 'recvonly' }]),
      from: { userType: 'server', userId: null },
    });
    await settle();
    expect(pcs.last.signalingState).toBe('stable');
    expect(pcs.last.addedCandidates).toEqual([cand]);
    // Events of other sessions are not ours.
    socket.fire('webrtc_answer', { sessionId: 194, sdpAnswer: 'x', from: { userType: 'server', userId: null } });
    await settle();
    expect(call.getSnapshot().state).toBe('connecting');
  });

  it('sends gathered candidates in one batch', async () => {
    vi.useFakeTimers();
    try {
      const { socket, pcs, call } = await setup('publish');
      call.start();
      await settle();
      pcs.last.gather('candidate:a 1 udp 1 127.0.0.1 5000 typ host');
      pcs.last.gather('candidate:b 1 udp 1 127.0.0.1 5001 typ host');
      await vi.advanceTimersByTimeAsync(50);
      const sent = socket.sent('webrtc_ice_candidates');
      expect(sent).toHaveLength(1);
      expect(sent[0].payload.sessionId).toBe(193);
      expect(sent[0].payload.candidates.map((c: { candidate: string }) => c.candidate)).toEqual([
        'candidate:a 1 udp 1 127.0.0.1 5000 typ host',
        'candidate:b 1 udp 1 127.0.0.1 5001 typ host',
      ]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('waits alone, then answers the server offer carrying the patient and shows them', async () => {
    const { socket, pcs, call } = await setup('publish');
    call.start();
    await settle();
    socket.fire('webrtc_answer', { sessionId: 193, sdpAnswer: sdpOf([{ kind: 'audio', mid: '0', direction: 'recvonly' }]), from: { userType: 'server', userId: null } });
    socket.fire('participant_joined', { sessionId: 193, participant: doctor, participants: [doctor] });
    await settle();
    pcs.last.setConnectionState('connected');
    expect(call.getSnapshot().state).toBe('waiting');

    socket.fire('participant_joined', { sessionId: 193, participant: patient, participants: [doctor, patient] });
    expect(call.getSnapshot().state).toBe('connected');
    socket.fire('webrtc_offer', {
      sessionId: 193,
      conversationId: 3,
      sessionType: 'audio_video',
      sdpOffer: sdpOf([
        { kind: 'audio', mid: '0', direction: 'recvonly' },
        { kind: 'video', mid: '1', direction: 'recvonly' },
        { kind: 'audio', mid: '2', direction: 'sendonly', stream: 'patient-11' },
        { kind: 'video', mid: '3', direction: 'sendonly', stream: 'patient-11' },
      ]),
      from: { userType: 'server', userId: null },
    });
    await settle(20);
    const answers = socket.sent('webrtc_answer');
    expect(answers).toHaveLength(1);
    expect(answers[0].payload.sessionId).toBe(193);
    expect(answers[0].payload.sdpAnswer).toContain('a=mid:3');
    const remote = call.getSnapshot().remoteStreams;
    expect(remote.map((r) => [r.id, r.user])).toEqual([['patient-11', patient]]);
    expect(remote[0].stream.getTracks()).toHaveLength(2);

    // The patient leaves: the server's next offer stops sending their media.
    socket.fire('participant_left', { sessionId: 193, participant: patient, reason: 'left', participants: [doctor] });
    expect(call.getSnapshot().state).toBe('waiting');
    socket.fire('webrtc_offer', {
      sessionId: 193,
      conversationId: 3,
      sessionType: 'audio_video',
      sdpOffer: sdpOf([
        { kind: 'audio', mid: '0', direction: 'recvonly' },
        { kind: 'video', mid: '1', direction: 'recvonly' },
        { kind: 'audio', mid: '2', direction: 'inactive' },
        { kind: 'video', mid: '3', direction: 'inactive' },
      ]),
      from: { userType: 'server', userId: null },
    });
    await settle(20);
    expect(call.getSnapshot().remoteStreams).toEqual([]);
  });

  it('ignores a server offer while its own offer is out (a dropped PeerConnection)', async () => {
    const { socket, pcs, call } = await setup('publish');
    socket.responder = () => undefined; // the offer's ack never comes
    call.start();
    await settle();
    expect(pcs.last.signalingState).toBe('have-local-offer');
    socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: joinOffer, from: { userType: 'server', userId: null } });
    await settle();
    expect(socket.sent('webrtc_answer')).toHaveLength(0);
    expect(pcs.last.signalingState).toBe('have-local-offer');
  });

  it('audio-only sends no video', async () => {
    const { socket, call } = await setup('publish', { sessionType: 'audio_only' });
    call.start();
    await settle();
    const sdp: string = socket.sent('webrtc_offer')[0].payload.sdpOffer;
    expect(sdp).toContain('m=audio');
    expect(sdp).not.toContain('m=video');
  });

  it('mute and camera off disable the local tracks', async () => {
    const { stream, call } = await setup('publish');
    call.start();
    call.setMicrophoneEnabled(false);
    call.setCameraEnabled(false);
    expect((stream.getAudioTracks()[0] as unknown as FakeTrack).enabled).toBe(false);
    expect((stream.getVideoTracks()[0] as unknown as FakeTrack).enabled).toBe(false);
    expect(call.getSnapshot()).toMatchObject({ micEnabled: false, cameraEnabled: false });
    call.setMicrophoneEnabled(true);
    expect((stream.getAudioTracks()[0] as unknown as FakeTrack).enabled).toBe(true);
  });

  it('hanging up as the doctor ends the session for everyone', async () => {
    const { socket, pcs, call } = await setup('publish');
    call.start();
    await settle();
    await call.hangUp({ end: true });
    expect(socket.sent('end_session')[0].payload).toEqual({ sessionId: 193 });
    expect(call.getSnapshot()).toMatchObject({ state: 'ended', endedReason: 'ended_by_doctor' });
    expect(pcs.last.closed).toBe(true);
  });
});

describe('ConsultationCall: the patient joins', () => {
  it('asks for the offer with the code and sends its media in the receive slots', async () => {
    const { socket, pcs, stream, call } = await setup('join');
    call.start();
    await settle();
    expect(socket.sent('request_webrtc_offer')[0].payload).toEqual({
      code: '81392D21',
      sessionId: 193,
      user: patient,
      action: 'join_conference',
    });
    socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: joinOffer, from: { userType: 'server', userId: null } });
    await settle(20);
    const pc = pcs.last;
    const byMid = new Map(pc.transceivers.map((t) => [t.mid, t]));
    expect(byMid.get('0')!.sender.track).toBe(stream.getAudioTracks()[0]);
    expect(byMid.get('1')!.sender.track).toBe(stream.getVideoTracks()[0]);
    expect(byMid.get('0')!.direction).toBe('sendonly');
    expect(byMid.get('2')!.sender.track).toBeNull();
    expect(pc.transceivers).toHaveLength(4); // nothing added: no new m-line to negotiate
    expect(socket.sent('webrtc_answer')[0].payload.sdpAnswer).toContain('a=sendonly');
    expect(call.getSnapshot().conversationId).toBe(3);
    expect(call.getSnapshot().remoteStreams.map((r) => r.user)).toEqual([doctor]);

    socket.fire('participant_joined', { sessionId: 193, participant: patient, participants: [doctor, patient] });
    pc.setConnectionState('connected');
    expect(call.getSnapshot().state).toBe('connected');
  });

  it('in an audio-only consultation the camera has no slot and is not sent', async () => {
    const { socket, pcs, call } = await setup('join');
    call.start();
    await settle();
    socket.fire('webrtc_offer', {
      sessionId: 193,
      conversationId: 3,
      sessionType: 'audio_only',
      sdpOffer: sdpOf([{ kind: 'audio', mid: '0', direction: 'recvonly' }]),
      from: { userType: 'server', userId: null },
    });
    await settle(20);
    expect(pcs.last.transceivers.map((t) => [t.kind, t.sender.track?.kind ?? null])).toEqual([['audio', 'audio']]);
  });

  it('an invalid code stops with a plain-language message and no retry', async () => {
    vi.useFakeTimers();
    try {
      const { socket, pcs, call } = await setup('join');
      socket.responder = (event) =>
        event === 'request_webrtc_offer'
          ? { success: false, error: { code: 'invalid_code', message: 'this consultation code is not valid' } }
          : { success: true, data: {} };
      call.start();
      await settle();
      socket.fire('webrtc_error', { sessionId: 193, code: 'invalid_code', message: 'this consultation code is not valid' });
      expect(call.getSnapshot().state).toBe('failed');
      expect(call.getSnapshot().error?.code).toBe('invalid_code');
      expect(call.getSnapshot().error?.message).toMatch(/code d'accès n'est pas valide/);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(pcs.created).toHaveLength(1);
      call.retry(); // nothing to retry with a wrong code
      expect(pcs.created).toHaveLength(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it.each([
    ['expired_code', /expiré/],
    ['too_many_attempts', /Trop de tentatives/],
  ])('%s is explained', async (code, text) => {
    const { socket, call } = await setup('join');
    socket.responder = () => ({ success: false, error: { code, message: code } });
    call.start();
    await settle();
    expect(call.getSnapshot().error?.message).toMatch(text);
  });

  it('session_ended closes the call', async () => {
    const { socket, pcs, call } = await setup('join');
    call.start();
    await settle();
    socket.fire('session_ended', { sessionId: 193, reason: 'ended_by_doctor' });
    expect(call.getSnapshot()).toMatchObject({ state: 'ended', endedReason: 'ended_by_doctor' });
    expect(pcs.last.closed).toBe(true);
    // Listeners are gone: later events change nothing.
    socket.fire('participant_joined', { sessionId: 193, participant: doctor, participants: [doctor] });
    expect(call.getSnapshot().participants).toEqual([]);
  });

  it('hanging up as the patient leaves the session', async () => {
    const { socket, call } = await setup('join');
    call.start();
    await settle();
    await call.hangUp();
    expect(socket.sent('leave_session')[0].payload).toEqual({ sessionId: 193 });
    expect(call.getSnapshot()).toMatchObject({ state: 'ended', endedReason: 'left' });
  });
});

describe('ConsultationCall: lost connections', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('a failed connection is rebuilt: new PeerConnection, same entry', async () => {
    const { socket, pcs, call } = await setup('join');
    call.start();
    await vi.advanceTimersByTimeAsync(0);
    const first = pcs.last;
    first.setConnectionState('failed');
    expect(call.getSnapshot()).toMatchObject({ state: 'reconnecting', attempt: 1 });
    await vi.advanceTimersByTimeAsync(100);
    expect(first.closed).toBe(true);
    expect(pcs.created).toHaveLength(2);
    expect(socket.sent('request_webrtc_offer')).toHaveLength(2);
    socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: joinOffer, from: { userType: 'server', userId: null } });
    await vi.advanceTimersByTimeAsync(0);
    expect(socket.sent('webrtc_answer')).toHaveLength(1);
    socket.fire('participant_joined', { sessionId: 193, participant: patient, participants: [doctor, patient] });
    pcs.last.setConnectionState('connected');
    expect(call.getSnapshot()).toMatchObject({ state: 'connected', attempt: 0 });
  });

  it('after a rebuild, descriptions for the replaced server connection are ignored', async () => {
    const { socket, pcs, call } = await setup('join');
    const offer = (ufrag: string) => ({
      sessionId: 193,
      conversationId: 3,
      sessionType: 'audio_video' as const,
      sdpOffer: sdpOf(
        [
          { kind: 'audio', mid: '0', direction: 'recvonly' },
          { kind: 'video', mid: '1', direction: 'recvonly' },
        ],
        ufrag,
      ),
      from: { userType: 'server' as const, userId: null },
    });
    call.start();
    await vi.advanceTimersByTimeAsync(0);
    socket.fire('webrtc_offer', offer('old'));
    await vi.advanceTimersByTimeAsync(0);
    expect(socket.sent('webrtc_answer')).toHaveLength(1);
    pcs.last.setConnectionState('failed');
    await vi.advanceTimersByTimeAsync(100);
    expect(pcs.created).toHaveLength(2);
    // A renegotiation the old server connection sent just before our rejoin reached it.
    socket.fire('webrtc_offer', offer('old'));
    await vi.advanceTimersByTimeAsync(0);
    expect(pcs.last.remoteDescription).toBeNull();
    expect(socket.sent('webrtc_answer')).toHaveLength(1);
    socket.fire('webrtc_offer', offer('new'));
    await vi.advanceTimersByTimeAsync(0);
    expect(pcs.last.remoteDescription?.sdp).toContain('a=ice-ufrag:new');
    expect(socket.sent('webrtc_answer')).toHaveLength(2);
  });

  it('session_moved (its node was lost) rebuilds at once, for both sides', async () => {
    for (const mode of ['join', 'publish'] as const) {
      const { socket, pcs, call } = await setup(mode);
      const entry = mode === 'join' ? 'request_webrtc_offer' : 'webrtc_offer';
      call.start();
      await vi.advanceTimersByTimeAsync(0);
      pcs.last.setConnectionState('connected');
      const first = pcs.last;
      // Another session's move changes nothing.
      socket.fire('session_moved', { sessionId: 7, reason: 'node_lost', from: 'b', node: { id: 'c', publicBaseUrl: 'http://c' }, conferenceUrl: 'http://c/conference/7' });
      expect(pcs.created).toHaveLength(1);
      socket.fire('session_moved', { sessionId: 193, reason: 'node_lost', from: 'b', node: { id: 'c', publicBaseUrl: 'http://c' }, conferenceUrl: 'http://c/conference/193' });
      await vi.advanceTimersByTimeAsync(0);
      expect(first.closed).toBe(true);
      expect(pcs.created).toHaveLength(2);
      expect(socket.sent(entry)).toHaveLength(2);
      expect(call.getSnapshot()).toMatchObject({ state: 'reconnecting', attempt: 0 });
      pcs.last.setConnectionState('connected');
      // Media is up again: waiting for the others' tracks (the server renegotiates next).
      expect(call.getSnapshot()).toMatchObject({ state: 'waiting', error: null });
    }
  });

  it('the doctor rebuilds with a new offer', async () => {
    const { socket, pcs, call } = await setup('publish');
    call.start();
    await vi.advanceTimersByTimeAsync(0);
    socket.fire('webrtc_error', { sessionId: 193, code: 'ice_failed', message: 'the media connection failed' });
    await vi.advanceTimersByTimeAsync(100);
    expect(pcs.created).toHaveLength(2);
    expect(socket.sent('webrtc_offer')).toHaveLength(2);
  });

  it('a short disconnection is waited out; a long one is rebuilt', async () => {
    const { pcs, call } = await setup('join');
    call.start();
    await vi.advanceTimersByTimeAsync(0);
    const pc = pcs.last;
    pc.setConnectionState('connected');
    pc.setConnectionState('disconnected');
    expect(call.getSnapshot().state).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(500);
    pc.setConnectionState('connected');
    await vi.advanceTimersByTimeAsync(2_000);
    expect(pcs.created).toHaveLength(1);

    pc.setConnectionState('disconnected');
    await vi.advanceTimersByTimeAsync(1_000 + 100);
    expect(pcs.created).toHaveLength(2);
  });

  it('a connection that never comes up is rebuilt', async () => {
    const { pcs, call } = await setup('join');
    call.start();
    await vi.advanceTimersByTimeAsync(2_900);
    expect(pcs.created).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(200);
    expect(call.getSnapshot()).toMatchObject({ state: 'reconnecting', attempt: 1 });
    await vi.advanceTimersByTimeAsync(100);
    expect(pcs.created).toHaveLength(2);
    pcs.last.setConnectionState('connected');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(pcs.created).toHaveLength(2);
    expect(call.getSnapshot().attempt).toBe(0);
  });

  it('the server removing us (socket gone too long) brings us back', async () => {
    const { socket, pcs, call } = await setup('join');
    call.start();
    await vi.advanceTimersByTimeAsync(0);
    socket.fire('participant_left', { sessionId: 193, participant: patient, reason: 'disconnected', participants: [doctor] });
    await vi.advanceTimersByTimeAsync(100);
    expect(pcs.created).toHaveLength(2);
  });

  it('gives up after the bounded attempts, then retries on demand', async () => {
    const { socket, pcs, call } = await setup('join');
    socket.responder = (event) =>
      event === 'request_webrtc_offer' ? { success: false, error: { code: 'timeout', message: 'slow' } } : { success: true, data: {} };
    call.start();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(pcs.created).toHaveLength(3); // the first try and 2 attempts
    expect(call.getSnapshot().state).toBe('failed');
    expect(call.getSnapshot().error?.code).toBe('connection_lost');
    expect(call.getSnapshot().error?.message).toMatch(/connexion a été perdue/);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(pcs.created).toHaveLength(3);

    socket.responder = () => ({ success: true, data: { sessionId: 193 } });
    call.retry();
    await vi.advanceTimersByTimeAsync(0);
    expect(pcs.created).toHaveLength(4);
    expect(call.getSnapshot().state).toBe('reconnecting');
  });
});

describe('ConsultationCall: recording', () => {
  const startedPayload = {
    sessionId: 193,
    startedAt: '2026-11-25T10:30:00.000Z',
    startedBy: doctor,
    consent: { confirmedBy: doctor, confirmedAt: '2026-11-25T10:30:00.000Z' },
  };

  it('every participant sees recording start and stop; other sessions are ignored', async () => {
    const { socket, call } = await setup('join');
    call.start();
    await settle();
    expect(call.getSnapshot().recording).toBeNull();
    socket.fire('recording_started', { ...startedPayload, sessionId: 7 });
    expect(call.getSnapshot().recording).toBeNull();
    socket.fire('recording_started', startedPayload);
    expect(call.getSnapshot().recording).toEqual({ startedAt: startedPayload.startedAt, startedBy: doctor });
    socket.fire('recording_stopped', { sessionId: 193, reason: 'stopped_by_doctor', stoppedAt: 'x' });
    expect(call.getSnapshot().recording).toBeNull();
    // The session's end clears it too.
    socket.fire('recording_started', startedPayload);
    socket.fire('session_ended', { sessionId: 193, reason: 'ended_by_doctor' });
    expect(call.getSnapshot().recording).toBeNull();
  });

  it('the doctor starts with the consent flag and stops; refusals carry the server code', async () => {
    const { socket, call } = await setup('publish');
    const finished = [{ id: 'r1', status: 'finished', url: '/api/messaging/webrtc/recordings/r1' }];
    socket.responder = (event, payload) => {
      if (event === 'start_recording') {
        return payload.consent
          ? { success: true, data: { sessionId: 193, startedAt: 'x', recordings: ['r1'] } }
          : { success: false, error: { code: 'consent_required', message: 'consent' } };
      }
      if (event === 'stop_recording') return { success: true, data: { sessionId: 193, recordings: finished } };
      return { success: true, data: {} };
    };
    call.start();
    await settle();
    await expect(call.startRecording(false)).rejects.toMatchObject({ code: 'consent_required' });
    await call.startRecording(true);
    expect(socket.sent('start_recording').map((e) => e.payload)).toEqual([
      { sessionId: 193, consent: false },
      { sessionId: 193, consent: true },
    ]);
    socket.fire('recording_started', startedPayload);
    expect(call.getSnapshot().recording).not.toBeNull();
    await expect(call.stopRecording()).resolves.toEqual(finished);
    expect(socket.sent('stop_recording')[0].payload).toEqual({ sessionId: 193 });
    expect(call.getSnapshot().recording).toBeNull();
    call.destroy();
  });
});

describe('ConsultationCall: sharing the screen', () => {
  const screenStream = () => new (class {
    tracks = [new FakeTrack('video', 'screen-track')];
    id = 'screen';
    getTracks() {
      return this.tracks;
    }
    getVideoTracks() {
      return this.tracks;
    }
  })() as unknown as MediaStream;

  async function connectedDoctor() {
    const s = await setup('publish', { getDisplayMedia: async () => screenStream() });
    s.call.start();
    await settle();
    s.socket.fire('webrtc_answer', {
      sessionId: 193,
      sdpAnswer: sdpOf([{ kind: 'audio', mid: '0', direction: 'recvonly' }, { kind: 'video', mid: '1', direction: 'recvonly' }]),
      from: { userType: 'server', userId: null },
    });
    await settle();
    return s;
  }

  it('adds a second video track in a stream of its own and offers it; stopping removes it', async () => {
    const { socket, pcs, call } = await connectedDoctor();
    expect(socket.sent('webrtc_offer')).toHaveLength(1);
    await call.startScreenShare();
    await settle();
    const offers = socket.sent('webrtc_offer');
    expect(offers).toHaveLength(2);
    expect(offers[1].payload.sdpOffer.match(/m=video/g)).toHaveLength(2);
    const screen = pcs.last.transceivers.find((t) => t.sender.track?.id === 'screen-track');
    expect((screen?.sender.streams[0] as MediaStream).id).toBe('screen');
    expect(call.getSnapshot().screenStream).not.toBeNull();

    socket.fire('webrtc_answer', { sessionId: 193, sdpAnswer: 'v=0\r\n', from: { userType: 'server', userId: null } });
    await settle();
    call.stopScreenShare();
    await settle();
    expect(socket.sent('webrtc_offer')).toHaveLength(3);
    expect(screen?.sender.track).toBeNull();
    expect(screen?.direction).toBe('recvonly');
    expect(call.getSnapshot().screenStream).toBeNull();
  });

  it("our offer crossing the server's: the server's is answered, ours offered again", async () => {
    const { socket, pcs, call } = await connectedDoctor();
    socket.responder = (event: string) =>
      event === 'webrtc_offer'
        ? { success: false, error: { code: 'negotiation_in_progress', message: 'answer ours first' } }
        : { success: true, data: {} };
    await call.startScreenShare();
    await settle();
    expect(pcs.last.signalingState).toBe('have-local-offer');
    socket.fire('webrtc_offer', {
      sessionId: 193,
      conversationId: 3,
      sessionType: 'audio_video',
      sdpOffer: sdpOf([
        { kind: 'audio', mid: '0', direction: 'sendrecv', stream: 'patient-11' },
        { kind: 'video', mid: '1', direction: 'sendrecv', stream: 'patient-11' },
      ]),
      from: { userType: 'server', userId: null },
    });
    await settle();
    expect(pcs.last.rolledBack).toBe(1);
    expect(socket.sent('webrtc_answer')).toHaveLength(1);
    expect(call.getSnapshot().remoteStreams.map((r) => r.id)).toEqual(['patient-11']);
  });

  it("another participant's screen comes as a stream of its own", async () => {
    const { socket, call } = await connectedDoctor();
    socket.fire('webrtc_offer', {
      sessionId: 193,
      conversationId: 3,
      sessionType: 'audio_video',
      sdpOffer: sdpOf([
        { kind: 'audio', mid: '0', direction: 'sendrecv', stream: 'patient-11' },
        { kind: 'video', mid: '1', direction: 'sendrecv', stream: 'patient-11' },
        { kind: 'video', mid: '2', direction: 'sendonly', stream: 'patient-11.2' },
      ]),
      from: { userType: 'server', userId: null },
    });
    await settle();
    const streams = call.getSnapshot().remoteStreams;
    expect(streams.map((r) => [r.id, r.user])).toEqual([
      ['patient-11', patient],
      ['patient-11.2', patient],
    ]);
  });
});

describe('ConsultationCall: the waiting room, patient side', () => {
  const waitingAck = (event: string) =>
    event === 'request_webrtc_offer'
      ? { success: true as const, data: { sessionId: 193, waiting: true } }
      : { success: true as const, data: {} };

  it('waits in the lobby without timing out, is admitted, then answers the server offer', async () => {
    vi.useFakeTimers();
    try {
      const { socket, pcs, call } = await setup('join');
      socket.responder = waitingAck;
      call.start();
      await vi.advanceTimersByTimeAsync(0);
      expect(call.getSnapshot().state).toBe('lobby');
      expect(call.getSnapshot().waitingSince).not.toBeNull();
      socket.fire('waiting', { sessionId: 193, since: '2026-12-07T15:00:00Z' });
      expect(call.getSnapshot().waitingSince).toBe('2026-12-07T15:00:00Z');
      // Far past the connection timeout: still waiting, no rebuild, no second request.
      await vi.advanceTimersByTimeAsync(20_000);
      expect(call.getSnapshot().state).toBe('lobby');
      expect(pcs.created).toHaveLength(1);
      expect(socket.sent('request_webrtc_offer')).toHaveLength(1);
      // A participant event meanwhile does not take us out of the lobby.
      socket.fire('participant_joined', { sessionId: 193, participant: doctor, participants: [doctor] });
      expect(call.getSnapshot().state).toBe('lobby');

      socket.fire('admitted', { sessionId: 193 });
      expect(call.getSnapshot().state).toBe('connecting');
      expect(call.getSnapshot().waitingSince).toBeNull();
      socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: joinOffer, from: { userType: 'server', userId: null } });
      await vi.advanceTimersByTimeAsync(0);
      expect(socket.sent('webrtc_answer')).toHaveLength(1);
      socket.fire('participant_joined', { sessionId: 193, participant: patient, participants: [doctor, patient] });
      pcs.last.setConnectionState('connected');
      expect(call.getSnapshot().state).toBe('connected');
      call.destroy();
    } finally {
      vi.useRealTimers();
    }
  });

  it('after admission the connection timeout applies again', async () => {
    vi.useFakeTimers();
    try {
      const { socket, pcs, call } = await setup('join');
      socket.responder = waitingAck;
      call.start();
      await vi.advanceTimersByTimeAsync(0);
      await vi.advanceTimersByTimeAsync(10_000);
      socket.fire('admitted', { sessionId: 193 });
      await vi.advanceTimersByTimeAsync(3_100);
      expect(pcs.created.length).toBeGreaterThan(1);
      call.destroy();
    } finally {
      vi.useRealTimers();
    }
  });

  it('declined: the call ends with the message and the connection closes', async () => {
    const { socket, pcs, call } = await setup('join');
    socket.responder = waitingAck;
    call.start();
    await settle();
    expect(call.getSnapshot().state).toBe('lobby');
    socket.fire('declined', { sessionId: 193, message: 'Le médecin ne peut pas vous recevoir.' });
    expect(call.getSnapshot()).toMatchObject({
      state: 'ended',
      endedReason: 'declined',
      endedMessage: 'Le médecin ne peut pas vous recevoir.',
    });
    expect(pcs.last.closed).toBe(true);
    // Nothing more is listened to.
    socket.fire('admitted', { sessionId: 193 });
    expect(call.getSnapshot().state).toBe('ended');
  });

  it('asking again after being declined ends the call the same way', async () => {
    const { socket, call } = await setup('join');
    socket.responder = (event) =>
      event === 'request_webrtc_offer'
        ? { success: false, error: { code: 'declined', message: 'declined by the doctor' } }
        : { success: true, data: {} };
    call.start();
    await settle();
    expect(call.getSnapshot()).toMatchObject({ state: 'ended', endedReason: 'declined' });
  });

  it('removed during the call: ended, connection closed, no reconnection', async () => {
    vi.useFakeTimers();
    try {
      const { socket, pcs, call } = await setup('join');
      call.start();
      await vi.advanceTimersByTimeAsync(0);
      socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: joinOffer, from: { userType: 'server', userId: null } });
      await vi.advanceTimersByTimeAsync(0);
      pcs.last.setConnectionState('connected');
      socket.fire('removed', { sessionId: 193 });
      expect(call.getSnapshot()).toMatchObject({ state: 'ended', endedReason: 'removed' });
      expect(pcs.last.closed).toBe(true);
      await vi.advanceTimersByTimeAsync(30_000);
      expect(pcs.created).toHaveLength(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it('participant_left about us with reason "removed" ends the call too', async () => {
    const { socket, call } = await setup('join');
    call.start();
    await settle();
    socket.fire('participant_left', { sessionId: 193, participant: patient, reason: 'removed', participants: [doctor] });
    expect(call.getSnapshot()).toMatchObject({ state: 'ended', endedReason: 'removed' });
  });

  it('the socket comes back while waiting: asks again (the server forgot us)', async () => {
    const { socket, call } = await setup('join');
    socket.responder = waitingAck;
    call.start();
    await settle();
    expect(call.getSnapshot().state).toBe('lobby');
    socket.drop();
    socket.reconnect();
    await settle();
    expect(socket.sent('request_webrtc_offer')).toHaveLength(2);
    expect(call.getSnapshot().state).toBe('lobby');
    call.destroy();
  });

  it('a guest asks with its session only: no code, no user (its token says who it is)', async () => {
    const guest: UserRef = { userId: 5, userType: 'invite' };
    const { socket, call } = await setup('join', { self: guest, code: undefined });
    socket.responder = waitingAck;
    call.start();
    await settle();
    expect(socket.sent('request_webrtc_offer')[0].payload).toEqual({ sessionId: 193, action: 'join_conference' });
    expect(call.getSnapshot().state).toBe('lobby');
    call.destroy();
  });
});

describe('ConsultationCall: the waiting room, doctor side', () => {
  const guest: UserRef = { userId: 5, userType: 'invite' };

  it('lists who waits, admits, declines, and drops those who leave', async () => {
    const { socket, call } = await setup('publish');
    call.start();
    await settle();
    socket.fire('participant_waiting', { sessionId: 193, user: patient, name: 'Jean Dupont', since: '2026-12-07T15:00:00Z' });
    socket.fire('participant_waiting', { sessionId: 193, user: guest, name: 'Interprète', since: '2026-12-07T15:01:00Z' });
    socket.fire('participant_waiting', { sessionId: 999, user: { userId: 12, userType: 'patient' }, name: 'x', since: 'x' });
    // The same person again (a reconnection) is listed once.
    socket.fire('participant_waiting', { sessionId: 193, user: patient, name: 'Jean Dupont', since: '2026-12-07T15:00:00Z' });
    expect(call.getSnapshot().waitingRoom.map((w) => w.name)).toEqual(['Interprète', 'Jean Dupont']);
    expect(call.getSnapshot().names).toMatchObject({ 'invite-5': 'Interprète', 'patient-11': 'Jean Dupont' });

    await call.admit(patient);
    expect(socket.sent('admit_participant')[0].payload).toEqual({ sessionId: 193, user: patient });
    expect(call.getSnapshot().waitingRoom.map((w) => w.name)).toEqual(['Interprète']);

    await call.decline(guest, 'Pas maintenant');
    expect(socket.sent('decline_participant')[0].payload).toEqual({ sessionId: 193, user: guest, reason: 'Pas maintenant' });
    expect(call.getSnapshot().waitingRoom).toEqual([]);

    socket.fire('participant_waiting', { sessionId: 193, user: guest, name: 'Interprète', since: 'x' });
    socket.fire('participant_waiting_left', { sessionId: 193, user: guest });
    expect(call.getSnapshot().waitingRoom).toEqual([]);
  });

  it('someone admitted elsewhere (participant_joined) leaves the list; a stale admission is dropped', async () => {
    const { socket, call } = await setup('publish');
    call.start();
    await settle();
    socket.fire('participant_waiting', { sessionId: 193, user: patient, name: 'Jean', since: 'x' });
    socket.fire('participant_joined', { sessionId: 193, participant: patient, participants: [doctor, patient] });
    expect(call.getSnapshot().waitingRoom).toEqual([]);

    socket.fire('participant_waiting', { sessionId: 193, user: guest, name: 'Interprète', since: 'x' });
    socket.responder = () => ({ success: false, error: { code: 'not_waiting', message: 'not waiting' } });
    await expect(call.admit(guest)).rejects.toMatchObject({ code: 'not_waiting' });
    expect(call.getSnapshot().waitingRoom).toEqual([]);
  });

  it('removes a participant', async () => {
    const { socket, call } = await setup('publish');
    call.start();
    await settle();
    await call.remove(guest);
    expect(socket.sent('remove_participant')[0].payload).toEqual({ sessionId: 193, user: guest });
    socket.responder = () => ({ success: false, error: { code: 'forbidden', message: 'no' } });
    await expect(call.remove(guest)).rejects.toMatchObject({ code: 'forbidden' });
  });
});

describe('ConsultationCall: audio only', () => {
  const server = { userType: 'server', userId: null } as const;
  const camera = () => new FakeMediaStream('cam2', [new FakeTrack('video', 'camera-2')]) as unknown as MediaStream;

  async function joinedPatient() {
    const s = await setup('join', { getCamera: async () => camera() });
    s.call.start();
    await settle();
    s.socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: joinOffer, from: server });
    await settle(20);
    s.pcs.last.setConnectionState('connected');
    return s;
  }

  it('stops the camera and every video transceiver, tells the server why, and offers it', async () => {
    const { socket, pcs, stream, call } = await joinedPatient();
    const cameraTrack = stream.getVideoTracks()[0] as unknown as FakeTrack;
    const byMid = new Map(pcs.last.transceivers.map((t) => [t.mid, t]));
    expect(byMid.get('1')!.sender.track).toBe(cameraTrack);

    await call.setAudioOnly(true, 'connexion insuffisante');
    await settle();
    expect(socket.sent('set_audio_only').map((e) => e.payload)).toEqual([
      { sessionId: 193, audioOnly: true, reason: 'connexion insuffisante' },
    ]);
    expect(call.getSnapshot()).toMatchObject({ audioOnly: true, audioOnlyReason: 'connexion insuffisante' });
    expect(cameraTrack.stopped).toBe(true);
    expect(stream.getVideoTracks()).toHaveLength(0);
    expect(byMid.get('1')!.sender.track).toBeNull();
    // Our slot and the doctor's video: inactive; audio untouched.
    expect(byMid.get('1')!.direction).toBe('inactive');
    expect(byMid.get('3')!.direction).toBe('inactive');
    expect(byMid.get('0')!.direction).toBe('sendonly');
    expect(byMid.get('0')!.sender.track).toBe(stream.getAudioTracks()[0]);
    // Our own offer says so (the browser's negotiationneeded).
    const offer: string = socket.sent('webrtc_offer')[0].payload.sdpOffer;
    expect(offer).toMatch(/a=mid:1\r\na=inactive/);
    expect(offer).toMatch(/a=mid:3\r\na=inactive/);
    expect(offer).toMatch(/a=mid:0\r\na=sendonly/);
  });

  it("keeps video sections the server adds meanwhile inactive in our answer", async () => {
    const { socket, pcs, call } = await joinedPatient();
    await call.setAudioOnly(true, 'demande du patient');
    socket.fire('webrtc_answer', { sessionId: 193, sdpAnswer: joinOffer.replace(/recvonly|sendonly/g, 'inactive'), from: server });
    await settle(20);
    const answers = socket.sent('webrtc_answer').length;
    socket.fire('webrtc_offer', {
      sessionId: 193,
      conversationId: 3,
      sessionType: 'audio_video',
      sdpOffer: sdpOf([
        { kind: 'audio', mid: '0', direction: 'recvonly' },
        { kind: 'video', mid: '1', direction: 'inactive' },
        { kind: 'audio', mid: '2', direction: 'sendonly', stream: 'medecin-79' },
        { kind: 'video', mid: '3', direction: 'inactive' },
        { kind: 'audio', mid: '4', direction: 'sendonly', stream: 'invite-5' },
        { kind: 'video', mid: '5', direction: 'sendonly', stream: 'invite-5' },
      ]),
      from: server,
    });
    await settle(20);
    const answer: string = socket.sent('webrtc_answer')[answers].payload.sdpAnswer;
    expect(answer).toMatch(/a=mid:5\r\na=inactive/);
    expect(answer).toMatch(/a=mid:4\r\na=recvonly/);
    expect(pcs.last.transceivers.find((t) => t.mid === '5')!.direction).toBe('inactive');
  });

  it('back to video: a new camera in its slot, the transceivers as before, the server told', async () => {
    const { socket, pcs, stream, call } = await joinedPatient();
    await call.setAudioOnly(true, 'autre');
    socket.fire('webrtc_answer', { sessionId: 193, sdpAnswer: joinOffer.replace(/recvonly|sendonly/g, 'inactive'), from: server });
    await settle(20);
    await call.setAudioOnly(false);
    await settle();
    expect(socket.sent('set_audio_only').map((e) => e.payload)).toEqual([
      { sessionId: 193, audioOnly: true, reason: 'autre' },
      { sessionId: 193, audioOnly: false },
    ]);
    const byMid = new Map(pcs.last.transceivers.map((t) => [t.mid, t]));
    expect((byMid.get('1')!.sender.track as FakeTrack | null)?.id).toBe('camera-2');
    expect(byMid.get('1')!.direction).toBe('sendonly');
    expect(byMid.get('3')!.direction).toBe('recvonly');
    expect(stream.getVideoTracks().map((t) => t.id)).toEqual(['camera-2']);
    expect(call.getSnapshot()).toMatchObject({ audioOnly: false, audioOnlyReason: null });
    expect(pcs.created).toHaveLength(1);
    const offers = socket.sent('webrtc_offer');
    expect(offers[offers.length - 1].payload.sdpOffer).toMatch(/a=mid:1\r\na=sendonly/);
  });

  it('the doctor (publishing) goes audio only and back on the same connection', async () => {
    const s = await setup('publish', { getCamera: async () => camera() });
    s.call.start();
    await settle();
    s.socket.fire('webrtc_answer', {
      sessionId: 193,
      sdpAnswer: sdpOf([{ kind: 'audio', mid: '0', direction: 'recvonly' }, { kind: 'video', mid: '1', direction: 'recvonly' }]),
      from: server,
    });
    await settle();
    const video = s.pcs.last.transceivers.find((t) => t.kind === 'video')!;
    await s.call.setAudioOnly(true, 'connexion insuffisante');
    await settle();
    expect(video.direction).toBe('inactive');
    expect(video.sender.track).toBeNull();
    expect(s.socket.sent('webrtc_offer')).toHaveLength(2);
    s.socket.fire('webrtc_answer', { sessionId: 193, sdpAnswer: 'v=0\r\n', from: server });
    await settle();
    await s.call.setAudioOnly(false);
    await settle();
    expect(video.direction).toBe('sendrecv');
    expect(video.sender.track?.id).toBe('camera-2');
    expect(s.pcs.created).toHaveLength(1);
  });

  it('rebuilt while audio only, the patient sends the new camera in the slot the server offers', async () => {
    const { socket, pcs, call } = await joinedPatient();
    await call.setAudioOnly(true, 'autre');
    pcs.last.setConnectionState('failed');
    await new Promise((r) => setTimeout(r, 150));
    expect(pcs.created).toHaveLength(2);
    socket.fire('webrtc_offer', { sessionId: 193, conversationId: 3, sessionType: 'audio_video', sdpOffer: sdpOf([
      { kind: 'audio', mid: '0', direction: 'recvonly' },
      { kind: 'video', mid: '1', direction: 'recvonly' },
      { kind: 'audio', mid: '2', direction: 'sendonly', stream: 'medecin-79' },
      { kind: 'video', mid: '3', direction: 'sendonly', stream: 'medecin-79' },
    ], 'srv2'), from: server });
    await settle(20);
    const byMid = new Map(pcs.last.transceivers.map((t) => [t.mid, t]));
    expect(byMid.get('1')!.sender.track).toBeNull();
    expect(byMid.get('1')!.direction).toBe('inactive');
    expect(byMid.get('3')!.direction).toBe('inactive');
    await call.setAudioOnly(false);
    await settle();
    expect((byMid.get('1')!.sender.track as FakeTrack | null)?.id).toBe('camera-2');
    expect(byMid.get('1')!.direction).toBe('sendonly');
    expect(byMid.get('3')!.direction).toBe('recvonly');
    expect(pcs.created).toHaveLength(2);
  });

  it("the doctor rebuilt while audio only publishes again with the camera, without waiting for the server's ack", async () => {
    const s = await setup('publish', { getCamera: async () => camera() });
    s.call.start();
    await settle();
    s.socket.fire('webrtc_answer', {
      sessionId: 193,
      sdpAnswer: sdpOf([{ kind: 'audio', mid: '0', direction: 'recvonly' }, { kind: 'video', mid: '1', direction: 'recvonly' }]),
      from: server,
    });
    await settle();
    await s.call.setAudioOnly(true, 'autre');
    s.pcs.last.setConnectionState('failed');
    await new Promise((r) => setTimeout(r, 150));
    expect(s.pcs.created).toHaveLength(2);
    // The rebuilt connection's offer has no video: the camera is off.
    const offers = () => s.socket.sent('webrtc_offer').map((e) => e.payload.sdpOffer as string);
    expect(offers()[offers().length - 1]).not.toContain('m=video');
    // The server does not answer set_audio_only: the camera comes back all the same.
    s.socket.responder = (event) => (event === 'set_audio_only' ? undefined : { success: true, data: {} });
    const back = s.call.setAudioOnly(false);
    await settle(20);
    expect(s.pcs.created).toHaveLength(3);
    expect(offers()[offers().length - 1]).toContain('m=video');
    expect(s.pcs.last.transceivers.find((t) => t.kind === 'video')!.sender.track?.id).toBe('camera-2');
    await expect(back).rejects.toMatchObject({ code: 'timeout' });
    s.call.destroy();
  });

  it("shows whose link is weak, ours or another's, from the server's events", async () => {
    const { socket, call } = await joinedPatient();
    expect(call.getSnapshot()).toMatchObject({ weakLink: false, weakLinks: {} });
    socket.fire('connection_quality', { sessionId: 193, user: doctor, quality: 'weak', availableBps: 300000 });
    expect(call.getSnapshot().weakLinks).toEqual({ 'medecin-79': true });
    socket.fire('connection_quality', { sessionId: 193, user: patient, quality: 'weak', availableBps: 250000 });
    expect(call.getSnapshot()).toMatchObject({ weakLink: true, weakLinks: { 'medecin-79': true } });
    // Another session's event is not ours.
    socket.fire('connection_quality', { sessionId: 7, user: doctor, quality: 'good', availableBps: null });
    expect(call.getSnapshot().weakLinks).toEqual({ 'medecin-79': true });
    socket.fire('connection_quality', { sessionId: 193, user: patient, quality: 'good', availableBps: null });
    expect(call.getSnapshot().weakLink).toBe(false);
    socket.fire('participant_left', { sessionId: 193, participant: doctor, reason: 'left', participants: [patient] });
    expect(call.getSnapshot().weakLinks).toEqual({});
  });

  it("shows who else is audio only, from the server's events", async () => {
    const { socket, call } = await joinedPatient();
    socket.fire('audio_only', { sessionId: 193, user: doctor, audioOnly: true, reason: 'connexion insuffisante' });
    socket.fire('audio_only', { sessionId: 193, user: patient, audioOnly: true, reason: 'x' });
    expect(call.getSnapshot().audioOnlyUsers).toEqual({ 'medecin-79': { reason: 'connexion insuffisante' } });
    socket.fire('audio_only', { sessionId: 193, user: doctor, audioOnly: false, reason: null });
    expect(call.getSnapshot().audioOnlyUsers).toEqual({});
    socket.fire('audio_only', { sessionId: 193, user: doctor, audioOnly: true, reason: null });
    socket.fire('participant_left', { sessionId: 193, participant: doctor, reason: 'left', participants: [patient] });
    expect(call.getSnapshot().audioOnlyUsers).toEqual({});
  });
});

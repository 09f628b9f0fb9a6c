import { describe, expect, it, vi } from 'vitest';
import { fakeSignaling, settle } from '../test/fakes';
import type { MessageView, SocketAuth } from './events';
import { SignalingError } from './signalingService';

const auth: SocketAuth = { token: 't-79', userType: 'medecin', userId: 79, role: 'medecin' };

const message: MessageView = {
  id: 5,
  contenu: 'Bonjour',
  type_message: 'texte',
  expediteur_id: 11,
  expediteur_type: 'patient',
  conversation_id: 3,
  timestamp: '2026-01-01T10:00:00Z',
  created_at: '2026-01-01T10:00:00Z',
  sender: { id: 11, type: 'patient', nom: 'Patient 11' },
};

describe('signalingService', () => {
  it('connects with the seed handshake: auth and transports', async () => {
    const f = fakeSignaling();
    await f.service.connect(auth);
    expect(f.service.status).toBe('connected');
    expect(f.socket.options.auth).toEqual(auth);
    expect(f.socket.options.transports).toEqual(['websocket', 'polling']);
    expect(f.socket.options.reconnection).toBe(true);
  });

  it('is idempotent for the same token and replaces the socket for another', async () => {
    const f = fakeSignaling();
    await f.service.connect(auth);
    await f.service.connect(auth);
    expect(f.sockets).toHaveLength(1);
    await f.service.connect({ ...auth, token: 'other' });
    expect(f.sockets).toHaveLength(2);
    expect(f.sockets[0].connected).toBe(false);
  });

  it('rejects with the server reason when the handshake is refused', async () => {
    const f = fakeSignaling();
    const statuses: string[] = [];
    f.service.onStatus((s) => statuses.push(s));
    const p = f.service.connect(auth);
    f.socket.onConnect = { refuse: 'authentication failed: userId does not match the token' };
    await expect(p).rejects.toMatchObject({
      code: 'refused',
      message: 'authentication failed: userId does not match the token',
    });
    expect(f.service.status).toBe('refused');
    expect(statuses).toContain('refused');
  });

  it('times out when the server never answers', async () => {
    const f = fakeSignaling({ connectTimeoutMs: 50 });
    const p = f.service.connect(auth);
    f.socket.onConnect = 'silent';
    await expect(p).rejects.toMatchObject({ code: 'timeout' });
  });

  it('routes typed server events to listeners until they unsubscribe', async () => {
    const f = fakeSignaling();
    const got: MessageView[] = [];
    const off = f.service.on('new_message', (m) => got.push(m));
    await f.service.connect(auth);
    f.socket.fire('new_message', message);
    off();
    f.socket.fire('new_message', { ...message, id: 6 });
    expect(got.map((m) => m.id)).toEqual([5]);
  });

  it('keeps listeners across a change of socket', async () => {
    const f = fakeSignaling();
    const got: number[] = [];
    f.service.on('session_ended', (p) => got.push(p.sessionId));
    await f.service.connect(auth);
    await f.service.connect({ ...auth, token: 'new' });
    f.socket.fire('session_ended', { sessionId: 9, reason: 'ended_by_doctor' });
    expect(got).toEqual([9]);
  });

  it('a failing listener does not stop the others', async () => {
    const f = fakeSignaling();
    const spy = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const got: number[] = [];
    f.service.on('new_message', () => {
      throw new Error('boom');
    });
    f.service.on('new_message', (m) => got.push(m.id));
    await f.service.connect(auth);
    f.socket.fire('new_message', message);
    expect(got).toEqual([5]);
    expect(spy).toHaveBeenCalled();
  });

  it('request resolves with the ack data', async () => {
    const f = fakeSignaling();
    await f.service.connect(auth);
    f.socket.responder = (event, p) =>
      event === 'webrtc_offer' ? { success: true, data: { sessionId: p.sessionId } } : undefined;
    const data = await f.service.request('webrtc_offer', {
      sessionId: 193,
      conversationId: 3,
      sdpOffer: 'v=0',
      sessionType: 'audio_video',
    });
    expect(data).toEqual({ sessionId: 193 });
    expect(f.socket.sent('webrtc_offer')[0]).toMatchObject({
      payload: { sessionId: 193, sdpOffer: 'v=0' },
      hasAck: true,
    });
  });

  it('request rejects with the error code of a failed ack', async () => {
    const f = fakeSignaling();
    await f.service.connect(auth);
    f.socket.responder = () => ({
      success: false,
      error: { code: 'invalid_code', message: 'this consultation code is not valid' },
    });
    const err = await f.service
      .request('request_webrtc_offer', { code: 'X', sessionId: 1, action: 'join_conference' })
      .catch((e) => e);
    expect(err).toBeInstanceOf(SignalingError);
    expect(err).toMatchObject({ code: 'invalid_code' });
  });

  it('request rejects with timeout when no ack comes', async () => {
    const f = fakeSignaling({ ackTimeoutMs: 30 });
    await f.service.connect(auth);
    f.socket.responder = () => undefined;
    await expect(f.service.request('leave_session', { sessionId: 1 })).rejects.toMatchObject({
      code: 'timeout',
    });
  });

  it('request before connect rejects instead of throwing', async () => {
    const f = fakeSignaling();
    await expect(f.service.request('end_session', { sessionId: 1 })).rejects.toMatchObject({
      code: 'closed',
    });
  });

  it('joins conversations again after a reconnection, and leaves when the last holder goes', async () => {
    const f = fakeSignaling();
    await f.service.connect(auth);
    await f.service.joinConversation(3);
    await f.service.joinConversation(3);
    await f.service.joinConversation(4);
    expect(f.socket.sent('join_conversation')[0].payload).toEqual({
      conversationId: 3,
      user: { userId: 79, userType: 'medecin', role: 'medecin' },
    });
    const statuses: string[] = [];
    f.service.onStatus((s) => statuses.push(s));
    f.socket.drop();
    expect(f.service.status).toBe('reconnecting');
    f.socket.reconnect();
    await settle();
    expect(statuses).toEqual(['reconnecting', 'connected']);
    const joins = f.socket.sent('join_conversation').map((e) => e.payload.conversationId);
    expect(joins).toEqual([3, 3, 4, 3, 4]);

    await f.service.leaveConversation(3);
    expect(f.socket.sent('leave_conversation')).toHaveLength(0);
    await f.service.leaveConversation(3);
    expect(f.socket.sent('leave_conversation').map((e) => e.payload)).toEqual([{ conversationId: 3 }]);
    expect(f.service.heldConversations()).toEqual([4]);
  });

  it('a refused join is not held', async () => {
    const f = fakeSignaling();
    await f.service.connect(auth);
    f.socket.responder = () => ({
      success: false,
      error: { code: 'conversation_not_found', message: 'not found' },
    });
    await expect(f.service.joinConversation(8)).rejects.toMatchObject({ code: 'conversation_not_found' });
    expect(f.service.heldConversations()).toEqual([]);
  });

  it('typing and read markers use the seed events', async () => {
    const f = fakeSignaling();
    await f.service.connect(auth);
    f.service.setTyping(3, true);
    await f.service.markRead(3, 5);
    expect(f.socket.sent('typing')[0].payload).toEqual({ conversationId: 3, isTyping: true });
    expect(f.socket.sent('message_read')[0].payload).toEqual({ conversationId: 3, messageId: 5 });
  });

  it('a second connect while reconnecting waits for the same socket', async () => {
    const f = fakeSignaling();
    await f.service.connect(auth);
    f.socket.drop();
    const p = f.service.connect(auth);
    expect(f.sockets).toHaveLength(1);
    f.socket.reconnect();
    await expect(p).resolves.toBeUndefined();
  });
});

import { describe, expect, it } from 'vitest';
import { Api, ApiError } from './api';

function recording(status: number, body: unknown) {
  const calls: { url: string; init?: RequestInit }[] = [];
  const api = new Api({
    token: 'tok',
    fetch: async (url, init) => {
      calls.push({ url, init });
      return new Response(JSON.stringify(body), { status });
    },
  });
  return { api, calls };
}

describe('Api', () => {
  it('creates a consultation with the seed body and reads the WebRTC envelope', async () => {
    const data = {
      session: { id: 193, conversation_id: 3, session_type: 'audio_video', statut: 'initiating' },
      conferenceLink: { sessionId: 193, conferenceUrl: 'https://h/conference/193', joinCode: '81392D21', fullLink: 'https://h/conference/193?code=81392D21' },
    };
    const { api, calls } = recording(201, { status: 'success', data });
    const created = await api.createSession({ conversationId: 3, initiator: { userType: 'medecin', userId: 79 } });
    expect(created).toEqual(data);
    expect(calls[0].url).toBe('/api/messaging/webrtc/sessions?generate_conference_link=true');
    expect(calls[0].init?.method).toBe('POST');
    expect((calls[0].init?.headers as Record<string, string>).Authorization).toBe('Bearer tok');
    expect(JSON.parse(String(calls[0].init?.body))).toEqual({
      conversation_id: 3,
      session_type: 'audio_video',
      sdp_offer: null,
      initiator: { userType: 'medecin', userId: 79 },
    });
  });

  it('errors carry status and code', async () => {
    const { api } = recording(404, { success: false, status: 'error', error: { code: 'conversation_not_found', message: 'nope' } });
    const e = await api.listConversations().catch((x) => x);
    expect(e).toBeInstanceOf(ApiError);
    expect(e).toMatchObject({ status: 404, code: 'conversation_not_found', message: 'nope' });
  });

  it('history passes its cursor; uploads are multipart with field "file"', async () => {
    const { api, calls } = recording(200, { success: true, data: { messages: [], pagination: { has_more: false }, attachment: { id: 'a' } } });
    await api.history(3, { after: 10, limit: 100 });
    expect(calls[0].url).toBe('/api/messaging/conversations/3/messages?after=10&limit=100');
    await api.uploadAttachment(3, new Blob(['x'], { type: 'text/plain' }), 'note.txt');
    const body = calls[1].init?.body as FormData;
    expect(body).toBeInstanceOf(FormData);
    expect((body.get('file') as File).name).toBe('note.txt');
    expect((calls[1].init?.headers as Record<string, string>)['Content-Type']).toBeUndefined();
  });

  it('a network failure is an ApiError too', async () => {
    const api = new Api({ fetch: async () => { throw new TypeError('Failed to fetch'); } });
    await expect(api.listConversations()).rejects.toMatchObject({ code: 'network_error', status: 0 });
  });
});

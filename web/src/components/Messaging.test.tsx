import { act, cleanup, fireEvent, screen, waitFor } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { MessageView } from '../services/events';
import { fakeSignaling, fakeToken } from '../test/fakes';
import { fakeRest, renderWithServices } from '../test/render';
import { ChatMessage } from './ChatMessage';
import { MessagingButton } from './MessagingButton';
import { MessagingWidget } from './MessagingWidget';
import { SignInPage } from '../pages/SignInPage';

afterEach(() => {
  cleanup();
  sessionStorage.clear();
});

const token = fakeToken({ role: 'medecin', sub: '79' });

function msg(id: number, from: 'patient' | 'medecin', text: string, extra: Partial<MessageView> = {}): MessageView {
  const sender = from === 'patient' ? { id: 11, type: 'patient' as const, nom: 'Jean Dupont' } : { id: 79, type: 'medecin' as const, nom: 'Dr. Martin' };
  return {
    id,
    contenu: text,
    type_message: 'texte',
    expediteur_id: sender.id,
    expediteur_type: sender.type,
    conversation_id: 3,
    timestamp: '2026-01-01T10:00:00Z',
    created_at: '2026-01-01T10:00:00Z',
    sender,
    ...extra,
  };
}

function chatServer(history: MessageView[]) {
  let next = 100;
  return fakeRest({
    'GET /api/messaging/conversations/3/messages': (_b, url) => {
      const after = Number(url.searchParams.get('after') ?? 0);
      const page = history.filter((m) => m.id > after);
      return [200, { success: true, data: { messages: page, pagination: { has_more: false } } }];
    },
    'POST /api/messaging/conversations/3/messages': (body) => [
      201,
      {
        success: true,
        data: {
          message: msg(next++, 'medecin', body.contenu, {
            type_message: body.type_message,
            client_message_id: body.client_message_id,
            attachment: body.attachment_id
              ? { id: body.attachment_id, file_name: 'radio.png', content_type: 'image/png', size_bytes: 4, url: `/api/messaging/attachments/${body.attachment_id}` }
              : undefined,
          }),
        },
      },
    ],
    'POST /api/messaging/conversations/3/read': () => [200, { success: true, data: {} }],
    'POST /api/messaging/conversations/3/attachments': () => [
      201,
      {
        success: true,
        data: {
          attachment: { id: 'att-1', file_name: 'radio.png', content_type: 'image/png', size_bytes: 4, url: '/api/messaging/attachments/att-1' },
        },
      },
    ],
    'GET /api/messaging/attachments/att-1': () => [200, {}],
  });
}

describe('ChatMessage', () => {
  it('shows history, live messages, typing, read state; sends over REST', async () => {
    globalThis.URL.createObjectURL ??= vi.fn(() => 'blob:x');
    globalThis.URL.revokeObjectURL ??= vi.fn();
    const sig = fakeSignaling();
    const rest = chatServer([msg(1, 'patient', 'Bonjour docteur'), msg(2, 'medecin', 'Bonjour, comment allez-vous ?')]);
    renderWithServices(
      <ChatMessage userId={79} role="medecin" token={token} conversationId={3} patientId={11} />,
      { signaling: sig.service, rest },
    );
    expect(await screen.findByText('Bonjour docteur')).toBeTruthy();
    expect(screen.getByText('Conversation avec le patient 11')).toBeTruthy();
    await waitFor(() => expect(sig.socket?.sent('join_conversation')).toHaveLength(1));
    expect(sig.socket.sent('join_conversation')[0].payload.conversationId).toBe(3);
    // The patient's message is marked read.
    await waitFor(() => expect(rest.calls.some((c) => c.path === '/api/messaging/conversations/3/read')).toBe(true));
    expect(rest.calls.find((c) => c.path.endsWith('/read'))!.body).toEqual({ messageId: 1 });

    act(() => sig.socket.fire('typing', { conversationId: 3, isTyping: true, user: { userId: 11, userType: 'patient' } }));
    expect(document.querySelector('.typing-indicator')?.textContent).toBe('Le patient écrit…');
    act(() => sig.socket.fire('new_message', msg(3, 'patient', 'J’ai de la fièvre')));
    act(() => sig.socket.fire('typing', { conversationId: 3, isTyping: false, user: { userId: 11, userType: 'patient' } }));
    expect(screen.getByText('J’ai de la fièvre').closest('.chat-message')?.className).toContain('theirs');
    expect(document.querySelector('.typing-indicator')?.textContent).toBe('');
    // Links are clickable (the conference link sent in the chat).
    act(() => sig.socket.fire('new_message', msg(10, 'medecin', 'Votre consultation : https://h:3443/conference/193?code=AB12CD34 à 10h')));
    const a = screen.getByRole('link', { name: 'https://h:3443/conference/193?code=AB12CD34' });
    expect(a.getAttribute('href')).toBe('https://h:3443/conference/193?code=AB12CD34');
    expect(a.getAttribute('rel')).toContain('noopener');
    // Another conversation's message is not shown here.
    act(() => sig.socket.fire('new_message', { ...msg(4, 'patient', 'ailleurs'), conversation_id: 9 }));
    expect(screen.queryByText('ailleurs')).toBeNull();

    act(() => sig.socket.fire('message_read', { conversationId: 3, messageId: 2, user: { userId: 11, userType: 'patient' }, readAt: 'x' }));
    expect(screen.getByText('Bonjour, comment allez-vous ?').closest('.chat-message')?.textContent).toContain('Lu');

    const input = screen.getByLabelText('Votre message') as HTMLTextAreaElement;
    fireEvent.change(input, { target: { value: 'Prenez du paracétamol' } });
    expect(sig.socket.sent('typing')[0].payload).toEqual({ conversationId: 3, isTyping: true });
    fireEvent.keyDown(input, { key: 'Enter' });
    await waitFor(() => expect(document.querySelector('.chat-message.mine[data-message-id="100"]')).not.toBeNull());
    const post = rest.calls.find((c) => c.method === 'POST' && c.path === '/api/messaging/conversations/3/messages')!;
    expect(post.body).toMatchObject({ contenu: 'Prenez du paracétamol', type_message: 'texte' });
    expect(typeof post.body.client_message_id).toBe('string');
    expect(sig.socket.sent('typing').at(-1)!.payload).toEqual({ conversationId: 3, isTyping: false });
    // The same message relayed by Socket.IO is not shown twice.
    act(() => sig.socket.fire('new_message', msg(100, 'medecin', 'Prenez du paracétamol', { client_message_id: post.body.client_message_id })));
    expect(screen.getAllByText('Prenez du paracétamol')).toHaveLength(1);
  });

  it('uploads an attachment then sends an image message with its id', async () => {
    globalThis.URL.createObjectURL ??= vi.fn(() => 'blob:x');
    globalThis.URL.revokeObjectURL ??= vi.fn();
    const sig = fakeSignaling();
    const rest = chatServer([]);
    renderWithServices(<ChatMessage userId={79} role="medecin" token={token} conversationId={3} />, {
      signaling: sig.service,
      rest,
    });
    await screen.findByText('Aucun message pour le moment.');
    const file = new File([new Uint8Array([137, 80, 78, 71])], 'radio.png', { type: 'image/png' });
    fireEvent.change(document.querySelector('.chat-file-input')!, { target: { files: [file] } });
    await waitFor(() =>
      expect(rest.calls.some((c) => c.method === 'POST' && c.path.endsWith('/messages'))).toBe(true),
    );
    const upload = rest.calls.find((c) => c.path.endsWith('/attachments'))!;
    expect(upload.body).toBeInstanceOf(FormData);
    expect((upload.body as FormData).get('file')).toBeTruthy();
    const send = rest.calls.find((c) => c.path.endsWith('/messages') && c.method === 'POST')!;
    expect(send.body).toMatchObject({ type_message: 'image', attachment_id: 'att-1', contenu: 'radio.png' });
    await waitFor(() => expect(document.querySelector('img.attachment-image')).not.toBeNull());
  });

  it('catches up after a reconnection', async () => {
    const sig = fakeSignaling();
    const history = [msg(1, 'patient', 'un')];
    const rest = chatServer(history);
    renderWithServices(<ChatMessage userId={79} role="medecin" token={token} conversationId={3} />, {
      signaling: sig.service,
      rest,
    });
    await screen.findByText('un');
    await waitFor(() => expect(sig.socket?.sent('join_conversation')).toHaveLength(1));
    act(() => sig.socket.drop());
    expect(document.querySelector('.connection-badge')?.textContent).toBe('Reconnexion…');
    history.push(msg(2, 'patient', 'deux (pendant la coupure)'));
    act(() => sig.socket.reconnect());
    expect(await screen.findByText('deux (pendant la coupure)')).toBeTruthy();
    expect(rest.calls.some((c) => c.path.includes('after=1'))).toBe(true);
    expect(sig.socket.sent('join_conversation')).toHaveLength(2);
  });
});

describe('MessagingWidget and MessagingButton', () => {
  it('the compact widget chats and closes', async () => {
    const sig = fakeSignaling();
    const onClose = vi.fn();
    renderWithServices(
      <MessagingWidget userId={11} role="patient" token={token} conversationId={3} toUserId={79} onClose={onClose} />,
      { signaling: sig.service, rest: chatServer([msg(1, 'medecin', 'Je vous écoute')]) },
    );
    expect(await screen.findByText('Je vous écoute')).toBeTruthy();
    expect(screen.getByText('Messages avec le médecin 79')).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: 'Fermer' }));
    expect(onClose).toHaveBeenCalled();
  });

  it('the button counts new messages while closed and opens the widget', async () => {
    const sig = fakeSignaling();
    renderWithServices(
      <MessagingButton userId={79} role="medecin" token={token} conversationId={3} toUserId={11} />,
      { signaling: sig.service, rest: chatServer([]) },
    );
    await waitFor(() => expect(sig.socket?.sent('join_conversation')).toHaveLength(1));
    act(() => {
      sig.socket.fire('new_message', msg(5, 'patient', 'a'));
      sig.socket.fire('new_message', msg(6, 'patient', 'b'));
      sig.socket.fire('new_message', msg(7, 'medecin', 'mine'));
    });
    expect(screen.getByLabelText('2 nouveau(x) message(s)').textContent).toBe('2');
    fireEvent.click(screen.getByRole('button', { name: /Messages/ }));
    expect(document.querySelector('.messaging-widget')).not.toBeNull();
    expect(screen.queryByLabelText(/nouveau/)).toBeNull();
  });
});

describe('SignInPage', () => {
  it('in development mode, signs in with a chosen role and id', async () => {
    const t = fakeToken({ role: 'patient', sub: '11' });
    const rest = fakeRest({
      'GET /api/dev/token': () => [200, { success: true, data: { developmentMode: true } }],
      'POST /api/dev/token': (body) =>
        [200, { success: true, data: { token: t, user: { userId: body.id, userType: body.role, role: body.role } } }],
    });
    const onSignedIn = vi.fn();
    renderWithServices(<SignInPage onSignedIn={onSignedIn} defaultRole="patient" />, {
      signaling: fakeSignaling().service,
      rest,
    });
    await screen.findByText(/Mode développement/);
    fireEvent.change(document.querySelector('#signin-id')!, { target: { value: '11' } });
    fireEvent.click(screen.getByRole('button', { name: 'Se connecter' }));
    await waitFor(() => expect(onSignedIn).toHaveBeenCalled());
    expect(onSignedIn.mock.calls[0][0]).toMatchObject({ token: t, user: { userId: 11, role: 'patient' } });
    expect(rest.calls.at(-1)!.body).toMatchObject({ role: 'patient', id: 11 });
  });

  it('with a real secret, says the clinic signs people in', async () => {
    renderWithServices(<SignInPage onSignedIn={() => undefined} />, {
      signaling: fakeSignaling().service,
      rest: fakeRest({}),
    });
    expect((await screen.findByRole('alert')).textContent).toMatch(/gérée par le système de votre établissement/);
    expect(document.querySelector('#signin-submit')).toBeNull();
  });
});

import { render } from '@testing-library/react';
import type { ReactElement } from 'react';
import { Api } from '../services/api';
import { ServicesContext, type MediaDevicesLike, type Services } from '../services/context';
import type { SignalingService } from '../services/signalingService';

export type Route = (body: any, url: URL) => [number, unknown] | Promise<[number, unknown]>;

export interface FakeServer {
  calls: { method: string; path: string; body: any }[];
  fetch: (input: string, init?: RequestInit) => Promise<Response>;
}

/** A REST server answering `"METHOD /path"` routes (query ignored), 404 otherwise. */
export function fakeRest(routes: Record<string, Route>): FakeServer {
  const calls: FakeServer['calls'] = [];
  return {
    calls,
    fetch: async (input, init) => {
      const url = new URL(input, 'http://localhost');
      const method = init?.method ?? 'GET';
      let body: any = init?.body;
      if (typeof body === 'string') body = JSON.parse(body);
      calls.push({ method, path: url.pathname + url.search, body });
      const route = routes[`${method} ${url.pathname}`];
      const [status, json] = route
        ? await route(body, url)
        : [404, { success: false, error: { code: 'not_found', message: 'no such endpoint' } }];
      return new Response(JSON.stringify(json), { status });
    },
  };
}

export function renderWithServices(
  ui: ReactElement,
  deps: {
    signaling: SignalingService;
    rest: FakeServer;
    mediaDevices?: MediaDevicesLike | null;
    createPeerConnection?: (c: RTCConfiguration) => RTCPeerConnection;
  },
) {
  const services: Services = {
    signaling: deps.signaling,
    api: (token) => new Api({ token, fetch: deps.rest.fetch }),
    mediaDevices: () => (deps.mediaDevices === undefined ? null : deps.mediaDevices),
    createPeerConnection: deps.createPeerConnection,
  };
  return render(<ServicesContext.Provider value={services}>{ui}</ServicesContext.Provider>);
}

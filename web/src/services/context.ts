/**
 * What the components talk to, provided through React context so that tests (and embedders)
 * can hand in their own: the signaling connection, the REST client, camera and microphone,
 * the PeerConnection constructor.
 */
import { createContext, useContext } from 'react';
import { Api } from './api';
import { signalingService, type SignalingService } from './signalingService';

export interface MediaDevicesLike {
  getUserMedia(constraints: MediaStreamConstraints): Promise<MediaStream>;
}

export interface Services {
  signaling: SignalingService;
  api(token: string | null): Api;
  mediaDevices(): MediaDevicesLike | null;
  createPeerConnection?: (config: RTCConfiguration) => RTCPeerConnection;
}

export const defaultServices: Services = {
  signaling: signalingService,
  api: (token) => new Api({ token }),
  mediaDevices: () =>
    typeof navigator !== 'undefined' && navigator.mediaDevices ? navigator.mediaDevices : null,
};

export const ServicesContext = createContext<Services>(defaultServices);

export function useServices(): Services {
  return useContext(ServicesContext);
}

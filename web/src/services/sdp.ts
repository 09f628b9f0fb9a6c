/** Small read-only SDP helpers (what the call needs to know about the server's offers). */

export type Direction = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';

export interface MediaSection {
  index: number;
  kind: string;
  /** 0 means the m-line was rejected or removed. */
  port: number;
  mid: string | null;
  direction: Direction;
  /** The msid stream id (`a=msid:<stream> <track>`), when the section carries one. */
  streamId: string | null;
}

export function mediaSections(sdp: string): MediaSection[] {
  const lines = sdp.split(/\r?\n/);
  const out: MediaSection[] = [];
  let sessionDirection: Direction = 'sendrecv';
  let current: MediaSection | null = null;
  for (const line of lines) {
    if (line.startsWith('m=')) {
      const [kind, port] = line.slice(2).split(' ');
      current = {
        index: out.length,
        kind,
        port: Number(port),
        mid: null,
        direction: sessionDirection,
        streamId: null,
      };
      out.push(current);
      continue;
    }
    const dir = /^a=(sendrecv|sendonly|recvonly|inactive)\s*$/.exec(line);
    if (dir) {
      if (current) current.direction = dir[1] as Direction;
      else sessionDirection = dir[1] as Direction;
      continue;
    }
    if (!current) continue;
    if (line.startsWith('a=mid:')) current.mid = line.slice(6).trim();
    else if (line.startsWith('a=msid:') && current.streamId === null) {
      const stream = line.slice(7).trim().split(/\s+/)[0];
      if (stream && stream !== '-') current.streamId = stream;
    }
  }
  return out;
}

/**
 * The server's receive slots for the client's own media: sections of the remote offer on which
 * the server receives (`recvonly`, or `sendrecv` when it already carries another participant's
 * track there, as a peer-to-peer call would).
 */
export function receiveSlots(offerSdp: string): MediaSection[] {
  return mediaSections(offerSdp).filter(
    (s) => s.port !== 0 && (s.direction === 'recvonly' || s.direction === 'sendrecv'),
  );
}

/** Stream ids the remote side currently sends us (sendonly/sendrecv sections with msid). */
export function sendingStreamIds(remoteSdp: string): Set<string> {
  const ids = new Set<string>();
  for (const s of mediaSections(remoteSdp)) {
    if (s.port !== 0 && (s.direction === 'sendonly' || s.direction === 'sendrecv') && s.streamId) {
      ids.add(s.streamId);
    }
  }
  return ids;
}

/** `a=candidate` lines: address and port of each candidate. */
export function candidates(sdp: string): { address: string; port: number; protocol: string; type: string }[] {
  const out: { address: string; port: number; protocol: string; type: string }[] = [];
  for (const line of sdp.split(/\r?\n/)) {
    const m = /^a=candidate:\S+ \d+ (\S+) \d+ (\S+) (\d+) typ (\S+)/.exec(line);
    if (m) out.push({ protocol: m[1].toLowerCase(), address: m[2], port: Number(m[3]), type: m[4] });
  }
  return out;
}

/** The first `a=ice-ufrag` of a description: each server PeerConnection has its own. */
export function iceUfrag(sdp: string): string | null {
  const m = /^a=ice-ufrag:(\S+)/m.exec(sdp);
  return m ? m[1] : null;
}

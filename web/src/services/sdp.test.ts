import { describe, expect, it } from 'vitest';
import { sdpOf } from '../test/fakes';
import { candidates, mediaSections, receiveSlots, sendingStreamIds } from './sdp';

const offer = sdpOf([
  { kind: 'audio', mid: '0', direction: 'recvonly' },
  { kind: 'video', mid: '1', direction: 'recvonly' },
  { kind: 'audio', mid: '2', direction: 'sendonly', stream: 'medecin-79' },
  { kind: 'video', mid: '3', direction: 'inactive', stream: 'patient-12' },
]);

describe('sdp', () => {
  it('reads sections: kind, mid, direction, msid stream', () => {
    expect(mediaSections(offer).map((s) => [s.kind, s.mid, s.direction, s.streamId])).toEqual([
      ['audio', '0', 'recvonly', null],
      ['video', '1', 'recvonly', null],
      ['audio', '2', 'sendonly', 'medecin-79'],
      ['video', '3', 'inactive', 'patient-12'],
    ]);
  });

  it("finds the server's receive slots and the streams it sends", () => {
    expect(receiveSlots(offer).map((s) => s.mid)).toEqual(['0', '1']);
    expect([...sendingStreamIds(offer)]).toEqual(['medecin-79']);
  });

  it('a slot that already carries a track to us (sendrecv) is a slot too', () => {
    const p2p = sdpOf([
      { kind: 'audio', mid: '0', direction: 'sendrecv', stream: 'medecin-79' },
      { kind: 'video', mid: '1', direction: 'sendrecv', stream: 'medecin-79' },
      { kind: 'video', mid: '2', direction: 'sendonly', stream: 'medecin-79' },
    ]);
    expect(receiveSlots(p2p).map((s) => [s.mid, s.direction])).toEqual([
      ['0', 'sendrecv'],
      ['1', 'sendrecv'],
    ]);
    expect([...sendingStreamIds(p2p)]).toEqual(['medecin-79']);
  });

  it('reads candidate lines', () => {
    expect(candidates(offer)[0]).toEqual({ protocol: 'udp', address: '127.0.0.1', port: 3479, type: 'host' });
  });

  it('a rejected section (port 0) is no slot', () => {
    const sdp = offer.replace('m=audio 9', 'm=audio 0');
    expect(receiveSlots(sdp).map((s) => s.mid)).toEqual(['1']);
  });
});

import { describe, expect, it } from 'vitest';
import {
  keepCandidates,
  portsToOpen,
  probesFor,
  turnProbe,
  verdictOf,
  type CheckPlan,
  type CheckPorts,
  type ProbeResult,
  type Throughput,
} from './precall';

const ports: CheckPorts = { mediaUdp: [3479], mediaTcp: [443, 3479], turnUdp: 3478, turnTcp: 3478, turnTls: [443, 5349] };

const plan: CheckPlan = {
  ports,
  durationSeconds: 20,
  iceServers: [
    {
      urls: [
        'turn:198.51.100.1:3478?transport=udp',
        'turn:198.51.100.1:3478?transport=tcp',
        'turns:relais.example:5349?transport=tcp',
        'turns:relais.example:443?transport=tcp',
      ],
      username: 'u',
      credential: 'c',
    },
  ],
};

/** Every probe of the plan, the listed ones working. */
function results(working: string[]): ProbeResult[] {
  return probesFor(plan).map((p) => ({ ...p, ok: working.includes(p.id) }));
}

function measured(via: string, up: number, down: number, rttMs = 40): Throughput {
  return { via, uploadKbps: up, downloadKbps: down, rttMs, seconds: 4 };
}

describe('probes', () => {
  it('tries each direct port and each TURN URL once', () => {
    expect(probesFor(plan).map((p) => p.id)).toEqual([
      'udp:3479',
      'tcp:443',
      'tcp:3479',
      'turn-udp:3478',
      'turn-tcp:3478',
      'turn-tls:5349',
      'turn-tls:443',
    ]);
  });

  it('reads TURN URLs, IPv6 too, and nothing else', () => {
    expect(turnProbe('turns:[2001:db8::1]:443?transport=tcp')).toMatchObject({ kind: 'turn-tls', port: 443 });
    expect(turnProbe('turn:10.0.0.1:3478')).toMatchObject({ kind: 'turn-udp', port: 3478 });
    expect(turnProbe('stun:10.0.0.1:3478')).toBeNull();
    expect(turnProbe('turn:nohost')).toBeNull();
  });
});

describe('verdict', () => {
  it('everything open and fast: video', () => {
    const v = verdictOf(
      results(['udp:3479', 'tcp:443', 'tcp:3479', 'turn-udp:3478', 'turn-tcp:3478', 'turn-tls:5349', 'turn-tls:443']),
      measured('udp:3479', 900, 850),
      ports,
    );
    expect(v.level).toBe('video');
    expect(v.title).toBe('Votre connexion permet la vidéo');
  });

  it('UDP blocked, TCP and TURN over TCP/TLS fast enough: video', () => {
    const v = verdictOf(results(['tcp:443', 'tcp:3479', 'turn-tcp:3478', 'turn-tls:5349', 'turn-tls:443']), measured('tcp:443', 600, 580), ports);
    expect(v.level).toBe('video');
    expect(v.detail).toContain('TCP');
    expect(v.detail).not.toContain('UDP');
  });

  it('only TCP, with low throughput: audio only', () => {
    const v = verdictOf(results(['tcp:443']), measured('tcp:443', 90, 85), ports);
    expect(v.level).toBe('audio');
    expect(v.title).toBe("Votre connexion permet l'audio seulement");
    expect(v.detail).toContain('85 kbit/s');
  });

  it('only TURN over TLS, with low throughput: audio only', () => {
    const v = verdictOf(results(['turn-tls:443']), measured('turn-tls:443', 60, 120), ports);
    expect(v.level).toBe('audio');
    expect(v.detail).toContain('Relais TURN en TLS');
  });

  it('only TURN over TLS, fast: video through the relay', () => {
    const v = verdictOf(results(['turn-tls:443']), measured('turn-tls:443', 700, 650), ports);
    expect(v.level).toBe('video');
  });

  it('fast but far: audio only past the round-trip limit', () => {
    const v = verdictOf(results(['udp:3479']), measured('udp:3479', 900, 900, 900), ports);
    expect(v.level).toBe('audio');
    expect(v.detail).toContain('900 ms');
  });

  it('the way works but nothing could be measured: audio only', () => {
    const v = verdictOf(results(['turn-udp:3478']), null, ports);
    expect(v.level).toBe('audio');
  });

  it('reachable but too slow even for audio: too weak', () => {
    const v = verdictOf(results(['udp:3479']), measured('udp:3479', 10, 12), ports);
    expect(v.level).toBe('blocked');
    expect(v.title).toContain('contactez votre service informatique');
  });

  it('nothing reachable: blocked, naming every port to open', () => {
    const v = verdictOf(results([]), null, ports);
    expect(v.level).toBe('blocked');
    expect(v.title).toBe(
      'Connexion bloquée : contactez votre service informatique (ports UDP 3479 ; TCP 443, 3479 ; relais TURN UDP 3478, TCP 3478, TLS 443, 5349)',
    );
  });

  it('a server without TURN names only its media ports', () => {
    expect(portsToOpen({ mediaUdp: [3479], mediaTcp: [3479], turnUdp: null, turnTcp: null, turnTls: [] })).toBe(
      'UDP 3479 ; TCP 3479',
    );
  });
});

describe('keepCandidates', () => {
  const sdp = [
    'v=0',
    'm=audio 9 UDP/TLS/RTP/SAVPF 111',
    'a=mid:0',
    'a=candidate:1 1 udp 2130706431 198.51.100.1 3479 typ host',
    'a=candidate:2 1 tcp 1671430143 198.51.100.1 3479 typ host tcptype passive',
    'a=candidate:3 1 tcp 1671430142 198.51.100.1 443 typ host tcptype passive',
    'a=end-of-candidates',
    '',
  ].join('\r\n');

  it('keeps one transport and port, and every other line', () => {
    const tcp443 = keepCandidates(sdp, 'tcp', 443);
    expect(tcp443).toContain('198.51.100.1 443 typ host');
    expect(tcp443).not.toContain(' 3479 typ');
    expect(tcp443).toContain('a=mid:0\r\n');
    expect(tcp443).toContain('a=end-of-candidates');
    const udp = keepCandidates(sdp, 'udp', 3479);
    expect(udp.match(/a=candidate/g)).toHaveLength(1);
    expect(udp).toContain(' udp ');
  });
});

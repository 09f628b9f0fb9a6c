"""One aiortc participant joining a relais consultation with a code, optionally through TURN.

Used by the network-namespace tests (tests/suite/netns.rs), where it runs inside a client
namespace whose firewall leaves it UDP-less or HTTPS-only.

Environment: BASE, TOKEN, USER_ID, USER_TYPE, SESSION_ID, CODE, SECONDS; HOST_IPS (comma-
separated addresses aioice may gather host candidates on); ICE_URL, ICE_USERNAME,
ICE_CREDENTIAL (one TURN server: aiortc uses only one); ICE_POLICY (`all` or `relay`). For a
`turns:` URL, SSL_CERT_FILE names the certificate to trust. Prints one JSON line: decoded frames
and the type of the nominated local candidate; exits 1 with {"ok": false, ...} on failure.
"""

import asyncio
import json
import logging
import os
import sys

import aioice.ice
import socketio
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from aiortc.sdp import candidate_from_sdp

if os.environ.get("AIORTC_LOG"):
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

HOST_IPS = [ip for ip in os.environ.get("HOST_IPS", "").split(",") if ip]
if HOST_IPS:
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: HOST_IPS

SESSION = int(os.environ["SESSION_ID"])
SECONDS = float(os.environ.get("SECONDS", "6"))


def configuration():
    servers = []
    if os.environ.get("ICE_URL"):
        servers.append(
            RTCIceServer(
                urls=[os.environ["ICE_URL"]],
                username=os.environ.get("ICE_USERNAME"),
                credential=os.environ.get("ICE_CREDENTIAL"),
            )
        )
    # aiortc's own defaults (bundlePolicy balanced), as an application builds it.
    return RTCConfiguration(
        iceServers=servers,
        iceTransportPolicy=RTCIceTransportPolicy(os.environ.get("ICE_POLICY", "all")),
    )


class Participant:
    def __init__(self):
        self.user = {"userId": int(os.environ["USER_ID"]), "userType": os.environ["USER_TYPE"]}
        self.pc = RTCPeerConnection(configuration())
        self.sio = socketio.AsyncClient(reconnection=False)
        self.frames = {"audio": 0, "video": 0}
        self.errors = []
        self.connected = asyncio.Event()
        self.pending = []
        self.published = False
        self.sio.on("webrtc_offer", self.on_offer)
        self.sio.on("webrtc_error", self.on_error)
        self.sio.on("webrtc_ice_candidates", self.on_candidates)
        self.pc.on("track", self.on_track)
        self.pc.on("connectionstatechange", self.on_state)

    async def on_state(self):
        if self.pc.connectionState == "connected":
            self.connected.set()

    def on_track(self, track):
        async def consume():
            while True:
                try:
                    await track.recv()
                except MediaStreamError:
                    return
                self.frames[track.kind] += 1

        asyncio.ensure_future(consume())

    async def on_error(self, data):
        self.errors.append(data)

    async def on_candidates(self, data):
        for c in data.get("candidates", []):
            line = c.get("candidate", "")
            if not line:
                continue
            candidate = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
            candidate.sdpMid = c.get("sdpMid")
            candidate.sdpMLineIndex = c.get("sdpMLineIndex")
            if self.pc.remoteDescription is None:
                self.pending.append(candidate)
            else:
                await self.pc.addIceCandidate(candidate)

    async def on_offer(self, data):
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdpOffer"], type="offer"))
        for candidate in self.pending:
            await self.pc.addIceCandidate(candidate)
        self.pending.clear()
        if not self.published:
            self.pc.addTrack(AudioStreamTrack())
            self.pc.addTrack(VideoStreamTrack())
            self.published = True
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self.sio.emit("webrtc_answer", {"sessionId": SESSION, "sdpAnswer": self.pc.localDescription.sdp})

    def local_candidate_type(self):
        for t in self.pc.getTransceivers():
            ice = t.receiver.transport.transport
            pair = ice._connection._nominated.get(1)
            if pair is not None:
                return pair.local_candidate.type
        return None

    async def run(self):
        await self.sio.connect(
            os.environ["BASE"],
            auth={"token": os.environ["TOKEN"], "role": self.user["userType"], **self.user},
            transports=["websocket"],
            wait_timeout=10,
        )
        await self.sio.emit(
            "request_webrtc_offer",
            {"code": os.environ["CODE"], "sessionId": SESSION, "user": self.user, "action": "join_conference"},
        )
        await asyncio.wait_for(self.connected.wait(), 20)
        await asyncio.sleep(SECONDS)
        # RTP packets received per kind (frames of the synthetic webrtc-rs media do not decode).
        packets = {"audio": 0, "video": 0}
        for t in self.pc.getTransceivers():
            for s in (await t.receiver.getStats()).values():
                if s.type == "inbound-rtp":
                    packets[s.kind] += s.packetsReceived
        return {
            "ok": True,
            "frames": self.frames,
            "packets": packets,
            "local_candidate": self.local_candidate_type(),
            "errors": self.errors,
        }

    async def close(self):
        await self.pc.close()
        await self.sio.disconnect()


async def main():
    p = Participant()
    try:
        report = await p.run()
    finally:
        await p.close()
    print(json.dumps(report))


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    except Exception as e:  # noqa: BLE001 - report any failure as JSON for the Rust test
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)

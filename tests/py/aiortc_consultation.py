"""aiortc as doctor and patient through relais: an independent WebRTC implementation.

Environment: BASE (server origin), DOCTOR_TOKEN, PATIENT_TOKEN, DOCTOR_ID, PATIENT_ID,
SESSION_ID, CONVERSATION_ID, CODE, SECONDS (how long media flows), HOST_IPS (comma-separated
addresses aioice gathers on; default 127.0.0.1). Prints {"event": "connected"} once both sides
are connected (a test can act on the call then), and at the end one JSON line with the decoded
frames each side received; exits 1 with {"ok": false, "error": …} otherwise. Everything is
bounded in time.
"""

import asyncio
import json
import logging
import os
import sys

import aioice.ice
import socketio
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack

if os.environ.get("AIORTC_LOG"):
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

# aioice leaves loopback out of its host addresses; the test server is on loopback.
HOST_IPS = [ip for ip in os.environ.get("HOST_IPS", "127.0.0.1").split(",") if ip]
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: HOST_IPS

BASE = os.environ["BASE"]
SESSION = int(os.environ["SESSION_ID"])
SECONDS = float(os.environ.get("SECONDS", "8"))


class Participant:
    def __init__(self, name, token, user_id, user_type):
        self.name = name
        self.token = token
        self.user = {"userId": user_id, "userType": user_type}
        # aiortc's defaults (bundlePolicy balanced), as an application would build it; the
        # interop matrix (tests/interop/main.rs) covers the other policies.
        policy = os.environ.get("BUNDLE_POLICY")
        config = RTCConfiguration(iceServers=[])
        if policy:
            config.bundlePolicy = RTCBundlePolicy(policy)
        self.pc = RTCPeerConnection(config)
        self.sio = socketio.AsyncClient(reconnection=False)
        self.frames = {"audio": 0, "video": 0}
        self.video_size = None
        self.errors = []
        self.connected = asyncio.Event()
        self.sio.on("webrtc_offer", self.on_offer)
        self.sio.on("webrtc_answer", self.on_answer)
        self.sio.on("webrtc_error", self.on_error)
        self.sio.on("webrtc_ice_candidates", self.on_candidates)
        self.pending_candidates = []
        self.pc.on("track", self.on_track)
        self.pc.on("connectionstatechange", self.on_state)
        self.published = False

    async def connect(self):
        await self.sio.connect(
            BASE,
            auth={"token": self.token, "role": self.user["userType"], **self.user},
            transports=["websocket"],
            wait_timeout=10,
        )

    async def on_state(self):
        if self.pc.connectionState == "connected":
            self.connected.set()

    def on_track(self, track):
        async def consume():
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                self.frames[track.kind] += 1
                if track.kind == "video":
                    self.video_size = (frame.width, frame.height)

        asyncio.ensure_future(consume())

    async def on_candidates(self, data):
        for c in data.get("candidates", []):
            line = c.get("candidate", "")
            if not line:
                continue
            candidate = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
            candidate.sdpMid = c.get("sdpMid")
            candidate.sdpMLineIndex = c.get("sdpMLineIndex")
            if self.pc.remoteDescription is None:
                self.pending_candidates.append(candidate)
            else:
                await self.pc.addIceCandidate(candidate)

    async def flush_candidates(self):
        for candidate in self.pending_candidates:
            await self.pc.addIceCandidate(candidate)
        self.pending_candidates.clear()

    async def on_error(self, data):
        self.errors.append(data)

    async def publish(self):
        self.pc.addTrack(AudioStreamTrack())
        self.pc.addTrack(VideoStreamTrack())
        self.published = True
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.sio.emit(
            "webrtc_offer",
            {
                "sessionId": SESSION,
                "conversationId": int(os.environ["CONVERSATION_ID"]),
                "sdpOffer": self.pc.localDescription.sdp,
                "sessionType": "audio_video",
            },
        )

    async def join(self, code):
        await self.sio.emit(
            "request_webrtc_offer",
            {"code": code, "sessionId": SESSION, "user": self.user, "action": "join_conference"},
        )

    async def on_offer(self, data):
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdpOffer"], type="offer"))
        await self.flush_candidates()
        if not self.published:
            # Our media goes into the slots the server offered for it.
            self.pc.addTrack(AudioStreamTrack())
            self.pc.addTrack(VideoStreamTrack())
            self.published = True
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self.sio.emit("webrtc_answer", {"sessionId": SESSION, "sdpAnswer": self.pc.localDescription.sdp})

    async def on_answer(self, data):
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdpAnswer"], type="answer"))
        await self.flush_candidates()

    async def close(self):
        await self.pc.close()
        await self.sio.disconnect()


async def main():
    doctor = Participant("doctor", os.environ["DOCTOR_TOKEN"], int(os.environ["DOCTOR_ID"]), "medecin")
    patient = Participant("patient", os.environ["PATIENT_TOKEN"], int(os.environ["PATIENT_ID"]), "patient")
    try:
        await doctor.connect()
        await patient.connect()
        await doctor.publish()
        await asyncio.wait_for(doctor.connected.wait(), 15)
        await patient.join(os.environ["CODE"])
        await asyncio.wait_for(patient.connected.wait(), 15)
        print(json.dumps({"event": "connected"}), flush=True)
        await asyncio.sleep(SECONDS)
        report = {
            "ok": True,
            "doctor": {"frames": doctor.frames, "video_size": doctor.video_size, "errors": doctor.errors},
            "patient": {"frames": patient.frames, "video_size": patient.video_size, "errors": patient.errors},
        }
    finally:
        await doctor.close()
        await patient.close()
    print(json.dumps(report))


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    except Exception as e:  # noqa: BLE001 - report any failure as JSON for the Rust test
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)

"""aiortc participants of the interop matrix (tests/interop/): many at once, one asyncio loop.

Usage: interop_agent.py JOB.json. The job is {"base": origin, "hostIps": [...], "roles": [ROLE]}.
A ROLE is one side of one matrix cell:

  {"cell": "c12", "side": "doctor" | "patient", "token", "userId", "userType", "sessionId",
   "conversationId", "code" (patient), "layout": ["audio", "video", "video"...] (tracks in the
   order they are added), "codec": "VP8" | "VP9" | "H264" | null (video codec put first in the
   offers this side makes), "bundlePolicy": null (aiortc's default) | "balanced" | "max-bundle" |
   "max-compat", "delay": seconds before entering, "seconds": media time after connecting,
   "linger": seconds the call stays up after this side's report (the other side measures),
   "share": {"at": s, "until": s} shares a "screen" (a second video in its own stream) from
   `at` to `until` seconds after connecting,
   "expectTracks": how many tracks the other side publishes (the measure waits for them, at most
   SETTLE seconds more)}

A doctor publishes with `webrtc_offer`; a patient sends `request_webrtc_offer` with the code, puts
its tracks in the slots of the server's offer and offers again for any track left over. Each role
prints one JSON line when done: what it decoded per received track (frames, size, the longest gap
between two frames in the last seconds), its transceivers and the `webrtc_error`s it got. Nothing
runs unbounded: every wait has a timeout and the whole job one too.
"""

import asyncio
import fractions
import json
import logging
import os
import sys
import time

import aioice.ice
import av
import socketio
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

if os.environ.get("AIORTC_LOG"):
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

# Sizes tell the receiver which published track it got: the camera, then a second video.
VIDEO_SIZES = [(320, 240), (480, 270), (240, 160)]
FPS = 15
# How much longer than `seconds` a role waits for tracks that start late.
SETTLE = 12.0
# The window at the end of the call in which frames must keep coming.
TAIL_SECONDS = 2.0


class PatternTrack(MediaStreamTrack):
    """A small video source whose picture changes every frame (so every frame is coded)."""

    kind = "video"

    def __init__(self, width, height):
        super().__init__()
        self.width = width
        self.height = height
        self.count = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.count / FPS
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        shade = (self.count * 7) % 256
        for i, plane in enumerate(frame.planes):
            plane.update(bytes([shade if i == 0 else 128]) * plane.buffer_size)
        frame.pts = self.count * (90000 // FPS)
        frame.time_base = fractions.Fraction(1, 90000)
        self.count += 1
        return frame


class Role:
    def __init__(self, base, spec):
        self.base = base
        self.spec = spec
        self.cell = spec["cell"]
        self.side = spec["side"]
        self.session = spec["sessionId"]
        self.user = {"userId": spec["userId"], "userType": spec["userType"]}
        config = RTCConfiguration(iceServers=[])
        if spec.get("bundlePolicy"):
            config.bundlePolicy = RTCBundlePolicy(spec["bundlePolicy"])
        self.pc = RTCPeerConnection(config)
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received = []
        self.errors = []
        self.notes = []
        self.connected = asyncio.Event()
        self.pending_candidates = []
        self.tracks = []
        self.unplaced = []
        self.offering = False
        self.offers = 0
        self.lock = asyncio.Lock()
        self.sio.on("webrtc_offer", self.on_offer)
        self.sio.on("webrtc_answer", self.on_answer)
        self.sio.on("webrtc_error", self.on_error)
        self.sio.on("webrtc_ice_candidates", self.on_candidates)
        self.sio.on("participant_left", self.on_left)
        # The other side leaving ends the measure: its media stops there, not by a fault.
        self.other_left = None
        self.pc.on("track", self.on_track)
        self.pc.on("connectionstatechange", self.on_state)

    def make_tracks(self):
        videos = 0
        for kind in self.spec["layout"]:
            if kind == "audio":
                self.tracks.append(AudioStreamTrack())
            else:
                w, h = VIDEO_SIZES[min(videos, len(VIDEO_SIZES) - 1)]
                videos += 1
                self.tracks.append(PatternTrack(w, h))

    def prefer_codec(self):
        codec = self.spec.get("codec")
        if not codec:
            return
        caps = RTCRtpSender.getCapabilities("video").codecs
        first = [c for c in caps if c.mimeType.lower() == f"video/{codec.lower()}"]
        if not first:
            self.notes.append(f"aiortc cannot send {codec}")
            return
        rest = [c for c in caps if c not in first]
        for t in self.pc.getTransceivers():
            if t.kind == "video":
                t.setCodecPreferences(first + rest)

    async def on_state(self):
        if self.pc.connectionState == "connected":
            self.connected.set()

    def on_track(self, track):
        entry = {
            "kind": track.kind,
            "id": track.id,
            "frames": 0,
            "width": None,
            "height": None,
            "times": [],
        }
        self.received.append(entry)

        async def consume():
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                entry["frames"] += 1
                entry["times"].append(time.monotonic())
                if track.kind == "video":
                    entry["width"], entry["height"] = frame.width, frame.height

        asyncio.ensure_future(consume())

    async def on_left(self, data):
        p = (data or {}).get("participant") or {}
        if (p.get("userId"), p.get("userType")) != (self.user["userId"], self.user["userType"]):
            if self.other_left is None:
                self.other_left = time.monotonic()

    async def on_error(self, data):
        self.errors.append({"code": data.get("code"), "message": data.get("message")})

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

    async def emit(self, event, data):
        reply = await self.sio.call(event, data, timeout=15)
        if isinstance(reply, dict) and reply.get("success") is False:
            err = reply.get("error") or {}
            self.errors.append({"code": err.get("code"), "message": err.get("message"), "event": event})
        return reply

    async def offer(self):
        self.offering = True
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.emit(
            "webrtc_offer",
            {
                "sessionId": self.session,
                "conversationId": self.spec["conversationId"],
                "sdpOffer": self.pc.localDescription.sdp,
                "sessionType": "audio_video",
            },
        )

    async def on_offer(self, data):
        async with self.lock:
            if self.pc.signalingState != "stable":
                # Glare: our own offer is out; the server refuses it and answers ours first.
                self.notes.append("server offer while ours was outstanding")
                return
            if os.environ.get("INTEROP_SDP"):
                print(f"[{self.cell} {self.side}] server offer:\n{data['sdpOffer']}", file=sys.stderr)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdpOffer"], type="offer"))
            await self.flush_candidates()
            if self.side == "patient" and not self.tracks:
                # Our media goes into the slots the server offered; a track with no free slot of
                # its kind is added once this answer is out, and offered by us then.
                self.make_tracks()
                for track in self.tracks:
                    if any(t.kind == track.kind and t.sender.track is None for t in self.pc.getTransceivers()):
                        self.pc.addTrack(track)
                    else:
                        self.unplaced.append(track)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self.emit("webrtc_answer", {"sessionId": self.session, "sdpAnswer": self.pc.localDescription.sdp})
            for track in self.unplaced:
                self.pc.addTrack(track)
            self.unplaced = []
            await self.offer_if_needed()

    async def share_screen(self, share):
        """Shares a "screen" mid-call: a 480x270 video in a stream of its own (as a browser's
        getDisplayMedia stream is), from `at` to `until` seconds after connecting."""
        await asyncio.sleep(share.get("at", 2))
        async with self.lock:
            track = PatternTrack(*VIDEO_SIZES[1])
            sender = self.pc.addTrack(track)
            # aiortc puts every track in one stream; an application's screen is its own.
            sender._stream_id = "screen-" + self.cell
            self.notes.append("screen shared")
            await self.offer_if_needed()
        await asyncio.sleep(share.get("until", 6) - share.get("at", 2))
        async with self.lock:
            for t in self.pc.getTransceivers():
                if t.sender.track is track:
                    t.sender.replaceTrack(None)
                    t.direction = "recvonly" if "recv" in (t.currentDirection or "") else "inactive"
            track.stop()
            self.notes.append("screen share stopped")
            await self.offer()

    async def offer_if_needed(self):
        """What a browser's negotiationneeded does: offer when a track is not negotiated yet (a
        new m-line, or one that now sends and did not)."""
        pending = [
            t
            for t in self.pc.getTransceivers()
            if t.mid is None or (t.sender.track is not None and "send" not in (t.currentDirection or ""))
        ]
        if pending and not self.offering and self.offers < 3:
            self.offers += 1
            self.prefer_codec()
            await self.offer()

    async def on_answer(self, data):
        async with self.lock:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdpAnswer"], type="answer"))
            await self.flush_candidates()
            self.offering = False
            await self.offer_if_needed()

    async def run(self):
        await asyncio.sleep(self.spec.get("delay", 0))
        await self.sio.connect(
            self.base,
            auth={"token": self.spec["token"], "role": self.user["userType"], **self.user},
            transports=["websocket"],
            wait_timeout=10,
        )
        if self.side == "doctor":
            async with self.lock:
                self.make_tracks()
                for track in self.tracks:
                    self.pc.addTrack(track)
                self.prefer_codec()
                await self.offer()
        else:
            await self.emit(
                "request_webrtc_offer",
                {"code": self.spec["code"], "sessionId": self.session, "user": self.user, "action": "join_conference"},
            )
        await asyncio.wait_for(self.connected.wait(), 20)
        if self.spec.get("share"):
            asyncio.ensure_future(self.share_screen(self.spec["share"]))
        # Measured for `seconds` from when the last track received so far started (a publisher
        # that arrives after us gets its full window), at most SETTLE later.
        connected = time.monotonic()
        window = self.spec.get("seconds", 4)
        expect = self.spec.get("expectTracks", 0)
        while True:
            starts = [r["times"][0] for r in self.received if r["times"]]
            if len(starts) >= expect:
                due = min(max([connected] + starts) + window, connected + window + SETTLE)
            else:
                due = connected + window + SETTLE
            if time.monotonic() >= due:
                break
            if self.other_left is not None:
                self.notes.append("the other side left before the end of the measure")
                break
            await asyncio.sleep(0.1)
        report = self.report()
        # The other side may still be measuring: keep the call up a little.
        await asyncio.sleep(self.spec.get("linger", 0))
        return report

    def report(self):
        now = self.other_left if self.other_left is not None else time.monotonic()
        received = []
        for r in self.received:
            times = [t for t in r["times"] if now - TAIL_SECONDS <= t <= now]
            gaps = [b - a for a, b in zip(r["times"], r["times"][1:])]
            received.append(
                {
                    "kind": r["kind"],
                    "id": r["id"],
                    "frames": r["frames"],
                    "tailFrames": len(times),
                    "maxGapMs": round(max(gaps) * 1000) if gaps else None,
                    # Seconds between this track's last frame and the report.
                    "sinceLastFrame": round(now - r["times"][-1], 2) if r["times"] else None,
                    "width": r["width"],
                    "height": r["height"],
                }
            )
        transceivers = [
            {"mid": t.mid, "kind": t.kind, "direction": t.currentDirection} for t in self.pc.getTransceivers()
        ]
        # What this side sends: the first codec negotiated on each m-line it sends on.
        sent = [
            {"kind": t.kind, "codec": t._codecs[0].mimeType if t._codecs else None}
            for t in self.pc.getTransceivers()
            if t.sender.track is not None and "send" in (t.currentDirection or "")
        ]
        return {
            "cell": self.cell,
            "side": self.side,
            "ok": True,
            "received": received,
            "transceivers": transceivers,
            "sent": sent,
            "errors": self.errors,
            "notes": self.notes,
        }

    async def close(self):
        try:
            await self.pc.close()
        finally:
            await self.sio.disconnect()


async def run_role(base, spec):
    role = Role(base, spec)
    try:
        result = await asyncio.wait_for(
            role.run(), spec.get("seconds", 4) + spec.get("delay", 0) + spec.get("linger", 0) + SETTLE + 30
        )
    except Exception as e:  # noqa: BLE001 - every failure is reported as this role's result
        result = {
            "cell": spec["cell"],
            "side": spec["side"],
            "ok": False,
            "error": f"{type(e).__name__}: {e}",
            "errors": role.errors,
            "notes": role.notes,
        }
    finally:
        try:
            await asyncio.wait_for(role.close(), 5)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
    print(json.dumps(result), flush=True)


async def main(job):
    hosts = job.get("hostIps") or ["127.0.0.1"]
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: hosts
    await asyncio.gather(*(run_role(job["base"], spec) for spec in job["roles"]))


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        job = json.load(f)
    limit = max((r.get("seconds", 4) + r.get("delay", 0) + r.get("linger", 0) for r in job["roles"]), default=0) + SETTLE + 60
    try:
        asyncio.run(asyncio.wait_for(main(job), limit))
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"fatal": f"{type(e).__name__}: {e}"}), flush=True)
        sys.exit(1)

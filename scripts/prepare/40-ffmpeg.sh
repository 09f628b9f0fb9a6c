#!/usr/bin/env bash
# ffmpeg/ffprobe (Debian's ffmpeg package): tests/recording.rs encodes test media with it and
# checks the recorder's files with ffprobe and `ffmpeg -v error -f null`; the shaped-link browser
# test (tests/browser/shaped.rs) makes the doctor's 720p camera clip with it.
set -euo pipefail
if command -v ffprobe >/dev/null 2>&1 && command -v ffmpeg >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ffmpeg/ffprobe are missing: install Debian's ffmpeg package (apt-get install ffmpeg) as root" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
command -v ffprobe >/dev/null

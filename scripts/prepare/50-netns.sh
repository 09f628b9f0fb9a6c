#!/usr/bin/env bash
# The network-namespace tests (tests/suite/netns.rs) build little networks with `ip netns`,
# veth pairs and nftables rules. They need root; as root, install what is missing.
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  echo "installing ${missing[*]} for the network-namespace tests"
  apt-get update -q </dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" </dev/null
else
  echo "note: ${missing[*]} missing and this is not root; the network-namespace tests will skip" >&2
fi

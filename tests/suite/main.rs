//! Integration tests against the real server on loopback.
#![allow(clippy::unwrap_used)] // tests and benchmarks: a failed unwrap is a failed test

mod common;
mod impair;
#[path = "../recording_support/media.rs"]
#[allow(dead_code)]
mod media;
#[path = "../recording_support/probe.rs"]
#[allow(dead_code)]
mod probe;
#[path = "../recording_support/rtp.rs"]
#[allow(dead_code)]
mod rtp;

mod admission;
mod aiortc;
mod audit;
mod bad_input;
mod cli;
mod cluster;
mod congestion;
mod ice_tcp;
mod layers;
mod load_tool;
mod messaging_rest;
mod netns;
#[path = "../support/netns.rs"]
mod netns_support;
mod openapi;
mod persistence;
mod precall_check;
mod recording_media;
mod recording_sessions;
mod restart;
mod safe_defaults;
mod screen_share;
mod shared_port;
mod socketio;
mod socketio_js;
mod tls;
mod turn;
mod turn_client;
mod web_client;
mod webrtc_media;
mod webrtc_process;
mod webrtc_sessions;
mod webrtc_signaling;

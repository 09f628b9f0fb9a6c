//! Where media goes: the path the client nominated, once ICE validated it.
//!
//! ICE-lite (RFC 8445 §7.3.1.5): the client nominates a candidate pair with a binding request
//! carrying USE-CANDIDATE, and a lite agent selects that pair when the request is valid. The
//! PeerConnection's agent checks the request; the task sees it answered (a success response
//! to that tuple, [`Peer::flush_writes`]) and takes the tuple as its media path. Until a
//! nomination is seen, the last validated tuple serves (ICE connected without one).

use std::net::SocketAddr;

use super::Peer;
use crate::sfu::media_plane::Transport;
use crate::sfu::types::MediaPath;

impl Peer {
    /// After a binding request from `tuple` was handled: a valid nomination selects its path.
    pub(super) fn after_binding_request(
        &mut self,
        tuple: (SocketAddr, Transport),
        nominated: bool,
    ) {
        if nominated && self.validated.contains(&tuple) {
            self.select_path(tuple);
        }
    }

    /// ICE reports a connection: without a nomination seen, the last validated path serves.
    pub(super) fn on_ice_connected(&mut self) {
        if self.media_dest.is_none()
            && let Some(tuple) = self.validated.last().copied()
        {
            self.select_path(tuple);
        }
    }

    fn select_path(&mut self, tuple: (SocketAddr, Transport)) {
        if self.media_dest != Some(tuple) {
            tracing::debug!(peer = %self.ctx.id, transport = ?tuple.1, "media path selected");
            self.media_dest = Some(tuple);
            self.outbound.lock().set_path(tuple);
            self.note_path(tuple);
        }
        self.start_secure();
    }

    /// What the statistics say of the media path `tuple` (also when DTLS completed on a tuple
    /// before ICE named one, see [`Peer::on_secure_connected`]).
    pub(super) fn note_path(&mut self, tuple: (SocketAddr, Transport)) {
        self.path = Some(match tuple.1 {
            Transport::Udp => MediaPath {
                transport: "udp",
                server_port: self.ctx.plane.local_addr().ok().map(|a| a.port()),
            },
            Transport::Tcp => MediaPath {
                transport: "tcp",
                server_port: self.ctx.plane.tcp_local_port(tuple.0),
            },
        });
    }

    /// As the DTLS client, starts the handshake once a path exists.
    pub(super) fn start_secure(&mut self) {
        if self.media_dest.is_none() {
            return;
        }
        if let Some(secure) = self.secure.as_mut()
            && let Err(e) = secure.start(std::time::Instant::now())
        {
            tracing::debug!(peer = %self.ctx.id, error = %e, "DTLS could not start");
            self.fail(crate::error::ErrorCode::DtlsFailed);
        }
        self.flush_dtls();
    }
}

//! Socket.IO: the handshake, messaging and signaling events. The core emits through
//! [`crate::ports::ClientNotify`], which [`Io`] implements.
//!
//! Invariants:
//! - a socket exists only after its token verified and the handshake's `userType`/`userId`
//!   agreed with it; it then sits in `user:{type}:{id}`;
//! - a socket enters `conversation:{id}` only after the store confirmed membership; events
//!   about a conversation reach exactly that room;
//! - every client event is answered: through its acknowledgement when it asked for one, else
//!   with a `messaging_error` event when it failed.

mod conversations;
mod handshake;
mod limits;
mod reply;
mod resume;
pub mod signaling;
pub mod views;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use crate::ids::{ConversationId, RoomKey};
use crate::state::AppState;

pub use crate::sio::{Io, io};
/// The wire format, under the name the handlers have always used.
pub use crate::wire as events;
pub use handshake::SocketUser;

/// The Socket.IO room of a conversation.
pub fn conversation_room(id: ConversationId) -> String {
    RoomKey::Conversation(id).to_string()
}

/// Installs the `/` namespace.
///
/// Everything a socket needs is set up in the handshake middleware, before the server sends
/// the connect packet: socketioxide runs the connect handler in a task of its own *after*
/// sending it, so a client that emits right after connecting could otherwise reach a socket
/// with no event handlers yet (its event would be dropped).
///
/// Generic over the adapter: socketioxide's `LocalAdapter` on one node, the Redis adapter on
/// several. The result is the adapter's namespace initialisation, which must be awaited with
/// the Redis adapter (it subscribes to the namespace's channels).
pub fn register<A>(io: &SocketIo<A>, state: AppState) -> A::InitRes
where
    A: Adapter + socketioxide_core::adapter::DefinedAdapter,
{
    let on_connect = {
        let state = state.clone();
        move |socket: SocketRef<A>| {
            let state = state.clone();
            async move {
                tracing::debug!(sid = %socket.id, "socket connected");
                // Now that the socket is in the namespace, consultations waiting for this
                // person (reconnect within the grace period) can rebind to it, on this
                // node or on the nodes that own their sessions.
                if let Some(user) = socket.extensions.get::<SocketUser>() {
                    let who = user.principal.identity;
                    state.sfu.socket_connected(who, socket.id.into());
                    if let Some(cluster) = &state.cluster {
                        cluster.socket_connected(who, socket.id);
                    }
                    resume::announce(&state, &socket, who).await;
                }
            }
        }
    };
    let authenticate =
        move |socket: SocketRef<A>, auth: socketioxide::extract::TryData<serde_json::Value>| {
            let state = state.clone();
            async move {
                let user = handshake::authenticate(&socket, auth.0.ok(), &state)?;
                let who = user.principal.identity;
                socket.join(who.room());
                conversations::register(&socket, &state);
                socket.extensions.insert(signaling::SignalQueue::start());
                signaling::register(&socket, &state);
                let state = state.clone();
                socket.on_disconnect(move |s: SocketRef<A>| {
                    let state = state.clone();
                    async move {
                        // The person's and the address's places go back now, not when the
                        // last reference to the socket goes.
                        s.extensions.remove::<crate::sio::limits::SocketPlaces>();
                        state.socket_limits.disconnected(s.id);
                        state.sfu.socket_disconnected(who, s.id.into());
                        if let Some(cluster) = &state.cluster {
                            cluster.socket_disconnected(who, s.id, signaling::routed_nodes(&s));
                        }
                    }
                });
                Ok::<(), handshake::Refusal>(())
            }
        };
    use socketioxide::handler::ConnectHandler;
    io.ns("/", on_connect.with(authenticate))
}

//! Socket.IO: the handshake, messaging events, and the [`Broadcaster`] other layers emit with.
//!
//! Invariants:
//! - a socket exists only after its token verified and the handshake's `userType`/`userId`
//!   agreed with it; it then sits in `user:{type}:{id}`;
//! - a socket enters `conversation:{id}` only after the store confirmed membership; events
//!   about a conversation reach exactly that room;
//! - every client event is answered: through its acknowledgement when it asked for one, else
//!   with a `messaging_error` event when it failed.

mod conversations;
pub mod events;
mod handshake;
mod reply;
mod signaling;

use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;

use crate::clock::{Millis, to_rfc3339};
use crate::ids::{ConversationId, Identity, MessageId};
use crate::messaging::views::MessageView;
use crate::state::AppState;
use crate::store::Message;
use events::outgoing;

pub use handshake::SocketUser;

/// The Socket.IO room of a conversation.
pub fn conversation_room(id: ConversationId) -> String {
    format!("conversation:{id}")
}

/// Emits server events to rooms. Cheap to clone.
#[derive(Clone)]
pub struct Broadcaster {
    io: SocketIo,
}

impl Broadcaster {
    pub fn new(io: SocketIo) -> Self {
        Self { io }
    }

    pub fn io(&self) -> &SocketIo {
        &self.io
    }

    pub async fn new_message(&self, message: &Message) {
        let view = MessageView::from(message);
        let room = conversation_room(message.conversation_id);
        if let Err(e) = self.io.to(room).emit(outgoing::NEW_MESSAGE, &view).await {
            tracing::warn!(error = %e, "new_message broadcast failed");
        }
    }

    pub async fn message_read(
        &self,
        conversation: ConversationId,
        message: MessageId,
        reader: Identity,
        at: Millis,
    ) {
        let payload = events::MessageReadRelay {
            conversation_id: conversation.0,
            message_id: message.0,
            user: reader.into(),
            read_at: to_rfc3339(at),
        };
        let room = conversation_room(conversation);
        if let Err(e) = self
            .io
            .to(room)
            .emit(outgoing::MESSAGE_READ, &payload)
            .await
        {
            tracing::warn!(error = %e, "message_read broadcast failed");
        }
    }
}

/// Installs the `/` namespace.
///
/// Everything a socket needs is set up in the handshake middleware, before the server sends
/// the connect packet: socketioxide runs the connect handler in a task of its own *after*
/// sending it, so a client that emits right after connecting could otherwise reach a socket
/// with no event handlers yet (its event would be dropped).
pub fn register(io: &SocketIo, state: AppState) {
    let on_connect = {
        let state = state.clone();
        move |socket: SocketRef| {
            let state = state.clone();
            async move {
                tracing::debug!(sid = %socket.id, "socket connected");
                // Now that the socket is in the namespace, consultations waiting for this
                // person (reconnect within the grace period) can rebind to it.
                if let Some(user) = socket.extensions.get::<SocketUser>() {
                    state
                        .sfu
                        .socket_connected(user.principal.identity, socket.id);
                }
            }
        }
    };
    let authenticate =
        move |socket: SocketRef, auth: socketioxide::extract::TryData<serde_json::Value>| {
            let state = state.clone();
            async move {
                let user = handshake::authenticate(&socket, auth.0.ok(), &state)?;
                let who = user.principal.identity;
                socket.join(who.room());
                conversations::register(&socket, &state);
                socket.extensions.insert(signaling::SignalQueue::start());
                signaling::register(&socket, &state);
                let sfu = state.sfu.clone();
                socket.on_disconnect(move |s: SocketRef| {
                    let sfu = sfu.clone();
                    async move { sfu.socket_disconnected(who, s.id) }
                });
                Ok::<(), handshake::Refusal>(())
            }
        };
    use socketioxide::handler::ConnectHandler;
    io.ns("/", on_connect.with(authenticate));
}

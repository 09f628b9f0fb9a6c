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

/// Installs the `/` namespace: handshake middleware, then the event handlers.
pub fn register(io: &SocketIo, state: AppState) {
    let on_connect = {
        let state = state.clone();
        move |socket: SocketRef| {
            let state = state.clone();
            async move { on_connect(socket, state) }
        }
    };
    let authenticate =
        move |socket: SocketRef, auth: socketioxide::extract::TryData<serde_json::Value>| {
            let state = state.clone();
            async move { handshake::authenticate(&socket, auth.0.ok(), &state) }
        };
    use socketioxide::handler::ConnectHandler;
    io.ns("/", on_connect.with(authenticate));
}

fn on_connect(socket: SocketRef, state: AppState) {
    let Some(user) = socket.extensions.get::<SocketUser>() else {
        // The middleware always sets it; a socket without it must not stay.
        let _ = socket.disconnect();
        return;
    };
    socket.join(user.principal.identity.room());
    state.metrics.socketio_connections.inc();
    tracing::debug!(sid = %socket.id, "socket connected");
    conversations::register(&socket, &state);
    let metrics = state.metrics.clone();
    socket.on_disconnect(move |s: SocketRef| {
        let metrics = metrics.clone();
        async move {
            metrics.socketio_connections.dec();
            tracing::debug!(sid = %s.id, "socket disconnected");
        }
    });
}

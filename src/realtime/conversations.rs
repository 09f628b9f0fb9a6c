//! Messaging events: join/leave a conversation's room, typing, read markers, sending.

use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, TryData};

use super::events::{self, Outgoing, incoming};
use super::reply::{Reply, invalid_payload};
use super::{SocketUser, conversation_room};
use crate::error::ErrorCode;

use crate::messaging::DomainError;
use crate::messaging::views::MessageView;
use crate::state::AppState;

/// The handshake's identity; every handler starts here.
fn user_of<A: Adapter>(socket: &SocketRef<A>) -> Result<SocketUser, DomainError> {
    socket.extensions.get::<SocketUser>().ok_or_else(|| {
        DomainError::new(
            crate::messaging::ErrorKind::Unauthorized,
            crate::error::ErrorCode::Unauthenticated,
            "socket is not authenticated",
        )
    })
}

/// The socket's and its person's event buckets ([`super::limits`]): an event past them is
/// answered `rate_limited` and costs nothing else.
fn admit<A: Adapter>(
    socket: &SocketRef<A>,
    state: &AppState,
    event: &'static str,
) -> Result<(), DomainError> {
    let user = user_of(socket)?;
    super::limits::admit_event(state, socket.id, user.principal.identity, event)
        .map_err(super::limits::rate_limited)
}

pub(super) fn register<A: Adapter>(socket: &SocketRef<A>, state: &AppState) {
    let s = state.clone();
    socket.on(
        incoming::JOIN_CONVERSATION,
        async move |socket: SocketRef<A>,
                    TryData(p): TryData<events::JoinConversation>,
                    reply: Reply<A>| {
            let r = match admit(&socket, &s, incoming::JOIN_CONVERSATION) {
                Ok(()) => join(&socket, &s, p.map_err(invalid_payload)).await,
                Err(e) => Err(e),
            };
            reply.result(incoming::JOIN_CONVERSATION, r);
        },
    );
    let s = state.clone();
    socket.on(
        incoming::LEAVE_CONVERSATION,
        async move |socket: SocketRef<A>,
                    TryData(p): TryData<events::LeaveConversation>,
                    reply: Reply<A>| {
            if let Err(e) = admit(&socket, &s, incoming::LEAVE_CONVERSATION) {
                return reply.err(incoming::LEAVE_CONVERSATION, e);
            }
            match p {
                Ok(p) => {
                    socket.leave(conversation_room(p.conversation_id));
                    reply.ok(serde_json::json!({ "conversationId": p.conversation_id }));
                }
                Err(e) => reply.err(incoming::LEAVE_CONVERSATION, invalid_payload(e)),
            }
        },
    );
    let s = state.clone();
    socket.on(
        incoming::TYPING,
        async move |socket: SocketRef<A>, TryData(p): TryData<events::Typing>, reply: Reply<A>| {
            let r = match admit(&socket, &s, incoming::TYPING) {
                Ok(()) => typing(&socket, &s, p.map_err(invalid_payload)).await,
                Err(e) => Err(e),
            };
            reply.result(incoming::TYPING, r);
        },
    );
    let s = state.clone();
    socket.on(
        incoming::MESSAGE_READ,
        async move |socket: SocketRef<A>,
                    TryData(p): TryData<events::MessageRead>,
                    reply: Reply<A>| {
            let r = match admit(&socket, &s, incoming::MESSAGE_READ) {
                Ok(()) => message_read(&socket, &s, p.map_err(invalid_payload)).await,
                Err(e) => Err(e),
            };
            reply.result(incoming::MESSAGE_READ, r);
        },
    );
    let s = state.clone();
    socket.on(
        incoming::SEND_MESSAGE,
        async move |socket: SocketRef<A>,
                    TryData(p): TryData<events::SendMessage>,
                    reply: Reply<A>| {
            let r = match admit(&socket, &s, incoming::SEND_MESSAGE) {
                Ok(()) => send(&socket, &s, p.map_err(invalid_payload)).await,
                Err(e) => Err(e),
            };
            reply.result(incoming::SEND_MESSAGE, r);
        },
    );
}

async fn join<A: Adapter>(
    socket: &SocketRef<A>,
    state: &AppState,
    payload: Result<events::JoinConversation, DomainError>,
) -> Result<serde_json::Value, DomainError> {
    let p = payload?;
    let user = user_of(socket)?;
    let id = p.conversation_id;
    state
        .messaging
        .ensure_participant(user.principal.identity, id)
        .await?;
    socket.join(conversation_room(id));
    Ok(serde_json::json!({ "conversationId": id }))
}

/// Typing is relayed, never stored, and only from a socket that joined the room (membership
/// was checked then), so it costs no database round trip.
async fn typing<A: Adapter>(
    socket: &SocketRef<A>,
    state: &AppState,
    payload: Result<events::Typing, DomainError>,
) -> Result<serde_json::Value, DomainError> {
    let p = payload?;
    let user = user_of(socket)?;
    let room = conversation_room(p.conversation_id);
    if !socket.rooms().iter().any(|r| *r == room) {
        return Err(DomainError::forbidden(
            ErrorCode::NotJoined,
            "join_conversation first",
        ));
    }
    let relay = Outgoing::Typing(events::TypingRelay {
        conversation_id: p.conversation_id,
        is_typing: p.is_typing,
        user: user.principal.identity.into(),
    });
    // Other sockets of the room only: the typist knows they type.
    match &state.cluster {
        None => {
            let _ = socket.to(room).emit(relay.name(), &relay).await;
        }
        Some(cluster) => {
            let _ = super::io::across_nodes(
                cluster.bus(),
                socket.to(room.clone()),
                socket.local().to(room),
                relay.name(),
                &relay,
            )
            .await;
        }
    }
    Ok(serde_json::json!({ "conversationId": p.conversation_id }))
}

async fn message_read<A: Adapter>(
    socket: &SocketRef<A>,
    state: &AppState,
    payload: Result<events::MessageRead, DomainError>,
) -> Result<serde_json::Value, DomainError> {
    let p = payload?;
    let user = user_of(socket)?;
    state
        .messaging
        .mark_read(user.principal.identity, p.conversation_id, p.message_id)
        .await?;
    Ok(serde_json::json!({ "conversationId": p.conversation_id, "messageId": p.message_id }))
}

async fn send<A: Adapter>(
    socket: &SocketRef<A>,
    state: &AppState,
    payload: Result<events::SendMessage, DomainError>,
) -> Result<serde_json::Value, DomainError> {
    let p = payload?;
    let user = user_of(socket)?;
    let (message, _) = state
        .messaging
        .send(&user.principal, p.conversation_id, p.body.into_domain()?)
        .await?;
    Ok(serde_json::json!({ "message": MessageView::from(&message) }))
}

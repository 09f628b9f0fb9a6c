//! Answering a client event: its acknowledgement when it asked for one, else an error event.

use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::AckSender;
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::Socket;

use super::events::{Ack, AckError, MessagingError, Outgoing};
use crate::error::ErrorCode;
use crate::ids::SessionId;
use crate::messaging::{DomainError, ErrorKind};

/// Extractor: how to answer the event being handled.
pub struct Reply<A: Adapter = LocalAdapter> {
    ack: AckSender<A>,
    wants_ack: bool,
    socket: Arc<Socket<A>>,
}

impl<A: Adapter> FromMessageParts<A> for Reply<A> {
    type Error = Infallible;
    fn from_message_parts(
        s: &Arc<Socket<A>>,
        v: &mut Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(Self {
            ack: AckSender::from_message_parts(s, v, ack_id)?,
            wants_ack: ack_id.is_some(),
            socket: s.clone(),
        })
    }
}

impl<A: Adapter> Reply<A> {
    pub fn ok<T: Serialize>(self, data: T) {
        let _ = self.ack.send(&Ack {
            success: true,
            data: Some(data),
            error: None,
        });
    }

    pub fn err(self, event: &'static str, e: DomainError) {
        if e.kind == ErrorKind::Internal {
            tracing::error!(event, error = ?e.source, "socket event failed");
        }
        if self.wants_ack {
            let _ = self.ack.send(&Ack::<()> {
                success: false,
                data: None,
                error: Some(AckError {
                    code: e.code,
                    message: e.message,
                }),
            });
        } else {
            let ev = Outgoing::MessagingError(MessagingError {
                event,
                code: e.code,
                message: e.message,
            });
            let _ = self.socket.emit(ev.name(), &ev);
        }
    }

    pub fn result<T: Serialize>(self, event: &'static str, r: Result<T, DomainError>) {
        match r {
            Ok(v) => self.ok(v),
            Err(e) => self.err(event, e),
        }
    }
}

impl<A: Adapter> Reply<A> {
    /// For WebRTC events: a failure is always told as `webrtc_error {sessionId, code,
    /// message}` (what the seed's clients listen for), and as the acknowledgement when asked.
    pub fn signal<T: Serialize>(
        self,
        session_id: Option<SessionId>,
        r: Result<T, crate::sfu::SignalError>,
        errors: &crate::sfu::Sfu,
    ) {
        match r {
            Ok(v) => self.ok(v),
            Err(e) => {
                errors.count_signal_error(e.code);
                let ev = Outgoing::WebrtcError(super::events::WebrtcError {
                    session_id,
                    code: e.code,
                    message: e.message.clone(),
                });
                let _ = self.socket.emit(ev.name(), &ev);
                let _ = self.ack.send(&Ack::<()> {
                    success: false,
                    data: None,
                    error: Some(AckError {
                        code: e.code,
                        message: e.message,
                    }),
                });
            }
        }
    }
}

/// The answer to a payload that did not match the event's shape.
pub fn invalid_payload(reason: impl std::fmt::Display) -> DomainError {
    DomainError::bad_request(
        ErrorCode::InvalidPayload,
        format!("invalid payload: {reason}"),
    )
}

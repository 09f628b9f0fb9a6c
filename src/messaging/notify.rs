//! The port through which messaging tells clients what happened, whatever carries it
//! (Socket.IO on one node or across nodes; a recorder in tests). Messaging calls it after the
//! store committed, never before.

use crate::clock::Millis;
use crate::ids::{ConversationId, Identity, MessageId};
use crate::store::Message;

#[async_trait::async_trait]
pub trait MessagingNotify: Send + Sync + 'static {
    /// `message` was stored: its conversation's members get it.
    async fn new_message(&self, message: &Message);
    /// `reader` read `conversation` up to `message`, at `at`.
    async fn message_read(
        &self,
        conversation: ConversationId,
        message: MessageId,
        reader: Identity,
        at: Millis,
    );
}

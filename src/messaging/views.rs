//! Wire shapes of messaging objects, as the seed document spells them.

use serde::Serialize;
use utoipa::ToSchema;

use super::{DomainError, SendMessage};
use crate::clock::to_rfc3339;
use crate::ids::{Identity, Role};
use crate::store::{Conversation, ConversationSummary};
pub use crate::wire::{AttachmentView, MessageView, SendMessageBody, SenderView, default_name};

/// `{id, type}` of a person, as the seed writes participants.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PersonView {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: Role,
    /// Same as `type`; the seed's create body calls it `role`.
    pub role: Role,
}

impl From<Identity> for PersonView {
    fn from(i: Identity) -> Self {
        Self {
            id: i.id.0,
            kind: i.role,
            role: i.role,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationView {
    pub id: i64,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: crate::store::ConversationKind,
    pub participants: Vec<PersonView>,
    pub created_by: PersonView,
    pub created_at: String,
}

impl From<&Conversation> for ConversationView {
    fn from(c: &Conversation) -> Self {
        Self {
            id: c.id.0,
            kind: c.kind,
            participants: c
                .participants
                .iter()
                .copied()
                .map(PersonView::from)
                .collect(),
            created_by: c.created_by.into(),
            created_at: to_rfc3339(c.created_at),
        }
    }
}

/// A conversation in "my conversations".
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationSummaryView {
    #[serde(flatten)]
    pub conversation: ConversationView,
    #[schema(required = true)]
    pub last_message: Option<MessageView>,
    pub unread_count: i64,
    pub last_read_message_id: i64,
}

impl From<&ConversationSummary> for ConversationSummaryView {
    fn from(s: &ConversationSummary) -> Self {
        Self {
            conversation: (&s.conversation).into(),
            last_message: s.last_message.as_ref().map(MessageView::from),
            unread_count: s.unread_count,
            last_read_message_id: s.last_read_message_id.0,
        }
    }
}

impl SendMessageBody {
    pub fn into_domain(self) -> Result<SendMessage, DomainError> {
        Ok(SendMessage {
            contenu: self.contenu,
            type_message: self.type_message,
            metadata: self.metadata,
            client_message_id: self.client_message_id,
            attachment_id: self.attachment_id,
        })
    }
}

//! Messaging objects as they travel: the seed's message shape (REST answer and `new_message`
//! payload, one shape for both) and the body clients send.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::to_rfc3339;
use crate::ids::{ConversationId, Identity, MessageId, Role};
use crate::store::{Attachment, Message, MessageType};

/// The seed's `sender` object on `new_message`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SenderView {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: Role,
    pub nom: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttachmentView {
    pub id: String,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: i64,
    /// Download URL (relative to the API origin); participants only.
    pub url: String,
}

impl From<&Attachment> for AttachmentView {
    fn from(a: &Attachment) -> Self {
        Self {
            id: a.id.clone(),
            file_name: a.file_name.clone(),
            content_type: a.content_type.clone(),
            size_bytes: a.size_bytes,
            url: format!("/api/messaging/attachments/{}", a.id),
        }
    }
}

/// A message: the seed's REST answer and `new_message` payload (one shape for both).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageView {
    #[schema(value_type = i64)]
    pub id: MessageId,
    pub contenu: String,
    /// `texte`, `image`, `file` or `audio`.
    #[schema(value_type = String)]
    pub type_message: crate::store::MessageType,
    pub expediteur_id: i64,
    pub expediteur_type: Role,
    #[schema(value_type = i64)]
    pub conversation_id: ConversationId,
    pub timestamp: String,
    pub created_at: String,
    pub sender: SenderView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentView>,
}

/// The name shown when the token carried none.
pub fn default_name(who: Identity) -> String {
    match who.role {
        Role::Medecin => format!("Médecin {}", who.id),
        Role::Patient => format!("Patient {}", who.id),
        Role::Invite => format!("Invité {}", who.id),
    }
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        let at = to_rfc3339(m.created_at);
        Self {
            id: m.id,
            contenu: m.contenu.clone(),
            type_message: m.type_message,
            expediteur_id: m.sender.id.0,
            expediteur_type: m.sender.role,
            conversation_id: m.conversation_id,
            timestamp: at.clone(),
            created_at: at,
            sender: SenderView {
                id: m.sender.id.0,
                kind: m.sender.role,
                nom: m
                    .sender_name
                    .clone()
                    .unwrap_or_else(|| default_name(m.sender)),
            },
            client_message_id: m.client_message_id.clone(),
            metadata: m.metadata.clone(),
            attachment: m.attachment.as_ref().map(AttachmentView::from),
        }
    }
}

fn default_type() -> MessageType {
    MessageType::Text
}

/// The seed's send body, plus an optional client message id and attachment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SendMessageBody {
    #[serde(default)]
    pub contenu: String,
    #[serde(default = "default_type")]
    #[schema(value_type = String, example = "texte")]
    pub type_message: MessageType,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Makes a retried send idempotent (also accepted as the `Idempotency-Key` header).
    #[serde(default, alias = "clientMessageId")]
    pub client_message_id: Option<String>,
    /// From `POST …/attachments`, for `image`, `file` and `audio` messages.
    #[serde(default, alias = "attachmentId")]
    pub attachment_id: Option<String>,
}

//! The messaging service: what REST handlers and Socket.IO events both call.
//!
//! Invariants:
//! - every operation takes the caller's identity and checks it may touch that conversation
//!   before reading or writing anything; "not there" and "not yours" answer the same;
//! - a stored message is announced once, as `new_message` to `conversation:{id}`; a retried
//!   send (same client message id) returns the first message and announces nothing;
//! - message content is never logged.

mod error;
mod membership;
mod read_markers;
pub mod retention;
pub mod uploads;
pub mod views;

use std::sync::Arc;

use crate::auth::Principal;
use crate::clock::SharedClock;
use crate::ids::{ConversationId, Identity, MessageId, Role, RoomKey};
use crate::limits::{Buckets, Rate};
use crate::metrics::Metrics;
use crate::ports::ClientNotify;
use crate::store::{
    Attachment, Conversation, ConversationKind, ConversationSummary, Message, MessageType,
    NewMessage, Page, Store,
};
use crate::wire::Outgoing;

pub use error::{DomainError, DomainResult, ErrorCode, ErrorKind};

fn message_not_found() -> DomainError {
    DomainError::not_found(
        ErrorCode::MessageNotFound,
        "message not found in this conversation",
    )
}
pub use uploads::Uploads;

/// Most people in one conversation.
pub const MAX_PARTICIPANTS: usize = 50;
/// Largest page of history.
pub const MAX_PAGE: u32 = 100;
/// Longest client message id.
const MAX_CLIENT_ID: usize = 128;
/// Largest `metadata` object, serialized.
const MAX_METADATA_BYTES: usize = 4096;

/// A message as a client asks to send it.
#[derive(Debug, Clone)]
pub struct SendMessage {
    pub contenu: String,
    pub type_message: MessageType,
    pub metadata: Option<serde_json::Value>,
    pub client_message_id: Option<String>,
    pub attachment_id: Option<String>,
}

#[derive(Clone)]
pub struct Messaging {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: SharedClock,
    notify: Arc<dyn ClientNotify>,
    metrics: Arc<Metrics>,
    uploads: Uploads,
    max_message_chars: usize,
    membership: membership::Membership,
    /// Messages per person (REST and Socket.IO together).
    sends: Buckets<Identity>,
    read_markers: read_markers::ReadMarkers,
}

impl Messaging {
    pub fn new(
        store: Store,
        clock: SharedClock,
        notify: Arc<dyn ClientNotify>,
        metrics: Arc<Metrics>,
        uploads: Uploads,
        max_message_chars: usize,
        send_rate: Rate,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sends: Buckets::new(send_rate, clock.clone()),
                read_markers: read_markers::ReadMarkers::default(),
                store,
                clock,
                notify,
                metrics,
                uploads,
                max_message_chars,
                membership: membership::Membership::default(),
            }),
        }
    }

    pub fn uploads(&self) -> &Uploads {
        &self.inner.uploads
    }

    /// Creates a conversation with the caller and `others`. At least one doctor takes part; a
    /// patient adds doctors only; a private conversation between two people exists once
    /// (asking again returns it, `false`).
    pub async fn create_conversation(
        &self,
        caller: Identity,
        kind: ConversationKind,
        others: &[Identity],
    ) -> DomainResult<(Conversation, bool)> {
        // Guests are invited into one video consultation, never into a conversation.
        if caller.role == Role::Invite {
            return Err(DomainError::forbidden(
                ErrorCode::GuestNotAllowed,
                "guests of a consultation have no access to conversations",
            ));
        }
        if others.iter().any(|o| o.role == Role::Invite) {
            return Err(DomainError::bad_request(
                ErrorCode::InvalidParticipants,
                "a guest of a consultation cannot take part in a conversation",
            ));
        }
        let mut members: Vec<Identity> = others.to_vec();
        members.push(caller);
        members.sort();
        members.dedup();
        if members.len() > MAX_PARTICIPANTS {
            return Err(DomainError::bad_request(
                ErrorCode::TooManyParticipants,
                format!("a conversation has at most {MAX_PARTICIPANTS} participants"),
            ));
        }
        match kind {
            ConversationKind::Private if members.len() != 2 => {
                return Err(DomainError::bad_request(
                    ErrorCode::InvalidParticipants,
                    "a private conversation has exactly two participants: you and one other person",
                ));
            }
            ConversationKind::Group if members.len() < 2 => {
                return Err(DomainError::bad_request(
                    ErrorCode::InvalidParticipants,
                    "a group conversation needs at least one other participant",
                ));
            }
            _ => {}
        }
        if !members.iter().any(|m| m.role == Role::Medecin) {
            return Err(DomainError::bad_request(
                ErrorCode::DoctorRequired,
                "every conversation includes at least one doctor (medecin)",
            ));
        }
        if caller.role == Role::Patient
            && others
                .iter()
                .any(|o| *o != caller && o.role != Role::Medecin)
        {
            // A patient writes to doctors; bringing another patient into a conversation (and
            // so into their health data) is a doctor's decision.
            return Err(DomainError::forbidden(
                ErrorCode::PatientsAddDoctorsOnly,
                "a patient starts conversations with doctors only; a doctor adds other patients",
            ));
        }
        let now = self.inner.clock.now_ms();
        let (conversation, created) = self
            .inner
            .store
            .create_conversation(kind, caller, &members, now)
            .await?;
        self.inner
            .membership
            .remember(conversation.id, &conversation.participants);
        Ok((conversation, created))
    }

    /// The private conversation between a doctor and a patient, created when missing.
    pub async fn private_between(
        &self,
        doctor: Identity,
        patient: Identity,
    ) -> DomainResult<Conversation> {
        if let Some(c) = self
            .inner
            .store
            .private_conversation_between(doctor, patient)
            .await?
        {
            return Ok(c);
        }
        let (c, _) = self
            .create_conversation(doctor, ConversationKind::Private, &[patient])
            .await?;
        Ok(c)
    }

    /// A conversation the caller belongs to.
    pub async fn conversation(
        &self,
        caller: Identity,
        id: ConversationId,
    ) -> DomainResult<Conversation> {
        let c = self
            .inner
            .store
            .conversation(id)
            .await?
            .ok_or_else(DomainError::conversation_not_found)?;
        if !c.participants.contains(&caller) {
            return Err(DomainError::conversation_not_found());
        }
        Ok(c)
    }

    pub async fn ensure_participant(
        &self,
        caller: Identity,
        id: ConversationId,
    ) -> DomainResult<()> {
        if self
            .inner
            .membership
            .contains(&self.inner.store, id, caller)
            .await?
        {
            Ok(())
        } else {
            Err(DomainError::conversation_not_found())
        }
    }

    pub async fn conversations(&self, caller: Identity) -> DomainResult<Vec<ConversationSummary>> {
        Ok(self.inner.store.conversations_of(caller).await?)
    }

    pub async fn history(
        &self,
        caller: Identity,
        id: ConversationId,
        before: Option<MessageId>,
        after: Option<MessageId>,
        limit: u32,
    ) -> DomainResult<Page> {
        if limit == 0 || limit > MAX_PAGE {
            return Err(DomainError::bad_request(
                ErrorCode::InvalidLimit,
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        self.ensure_participant(caller, id).await?;
        Ok(self.inner.store.messages(id, before, after, limit).await?)
    }

    /// Stores and announces a message. Returns it and whether it is new (false: a retry).
    pub async fn send(
        &self,
        caller: &Principal,
        id: ConversationId,
        msg: SendMessage,
    ) -> DomainResult<(Message, bool)> {
        let who = caller.identity;
        self.validate(&msg)?;
        self.ensure_participant(who, id).await?;
        if let Err(retry_after_ms) = self.inner.sends.take(&who) {
            self.inner.metrics.count_limited("message");
            return Err(DomainError::new(
                ErrorKind::TooManyRequests,
                ErrorCode::RateLimited,
                format!(
                    "too many messages: the next is accepted in {} ms",
                    retry_after_ms.clamp(1, 60_000)
                ),
            ));
        }
        if let Some(attachment_id) = &msg.attachment_id {
            self.check_attachment(who, id, attachment_id, msg.type_message)
                .await?;
        }
        let new = NewMessage {
            conversation_id: id,
            sender: who,
            sender_name: caller.name.clone(),
            contenu: msg.contenu,
            type_message: msg.type_message,
            metadata: msg.metadata,
            client_message_id: msg.client_message_id,
            attachment_id: msg.attachment_id,
            created_at: self.inner.clock.now_ms(),
        };
        let (message, created) = self.inner.store.insert_message(&new).await?;
        if created {
            self.inner.metrics.messages_stored.inc();
            self.announce(
                RoomKey::Conversation(message.conversation_id),
                Outgoing::NewMessage(views::MessageView::from(&message)),
            )
            .await;
        }
        Ok((message, created))
    }

    fn validate(&self, msg: &SendMessage) -> DomainResult<()> {
        let chars = msg.contenu.chars().count();
        if chars > self.inner.max_message_chars {
            return Err(DomainError::bad_request(
                ErrorCode::MessageTooLong,
                format!(
                    "contenu is longer than {} characters",
                    self.inner.max_message_chars
                ),
            ));
        }
        match (msg.type_message, &msg.attachment_id) {
            (MessageType::Text, Some(_)) => {
                return Err(DomainError::bad_request(
                    ErrorCode::UnexpectedAttachment,
                    "a texte message carries no attachment; use image, file or audio",
                ));
            }
            (MessageType::Text, None) if msg.contenu.trim().is_empty() => {
                return Err(DomainError::bad_request(
                    ErrorCode::EmptyMessage,
                    "contenu is empty",
                ));
            }
            (MessageType::Image | MessageType::File | MessageType::Audio, None) => {
                return Err(DomainError::bad_request(
                    ErrorCode::AttachmentRequired,
                    "image, file and audio messages need an attachment_id from an upload",
                ));
            }
            _ => {}
        }
        if let Some(id) = &msg.client_message_id
            && (id.is_empty() || id.len() > MAX_CLIENT_ID)
        {
            return Err(DomainError::bad_request(
                ErrorCode::InvalidClientMessageId,
                format!("client_message_id must be 1 to {MAX_CLIENT_ID} bytes"),
            ));
        }
        if let Some(meta) = &msg.metadata {
            if !meta.is_object() {
                return Err(DomainError::bad_request(
                    ErrorCode::InvalidMetadata,
                    "metadata must be an object",
                ));
            }
            if meta.to_string().len() > MAX_METADATA_BYTES {
                return Err(DomainError::bad_request(
                    ErrorCode::InvalidMetadata,
                    format!("metadata is larger than {MAX_METADATA_BYTES} bytes"),
                ));
            }
        }
        Ok(())
    }

    async fn check_attachment(
        &self,
        who: Identity,
        conversation: ConversationId,
        attachment_id: &str,
        kind: MessageType,
    ) -> DomainResult<()> {
        let unknown =
            || DomainError::not_found(ErrorCode::AttachmentNotFound, "attachment not found");
        let a = self
            .inner
            .store
            .attachment(attachment_id)
            .await?
            .ok_or_else(unknown)?;
        if a.conversation_id != conversation || a.uploader != who {
            return Err(unknown());
        }
        if !uploads::fits_message_type(&a.content_type, kind) {
            return Err(DomainError::bad_request(
                ErrorCode::AttachmentTypeMismatch,
                format!(
                    "a {} message cannot carry a {} file",
                    kind.as_str(),
                    a.content_type
                ),
            ));
        }
        Ok(())
    }

    /// Moves the caller's read marker and tells the conversation. Coalesced
    /// ([`read_markers`]): one write at a time per person and conversation, of the highest
    /// marker asked; a marker that waits behind a write is acknowledged at once and checked
    /// when it is written (one that names no message of the conversation is then dropped).
    pub async fn mark_read(
        &self,
        caller: Identity,
        id: ConversationId,
        message: MessageId,
    ) -> DomainResult<()> {
        self.ensure_participant(caller, id).await?;
        match self.inner.read_markers.decide(caller, id, message) {
            read_markers::Decision::Queued => Ok(()),
            read_markers::Decision::Stale => {
                if self.inner.store.message_in(id, message).await? {
                    Ok(())
                } else {
                    Err(message_not_found())
                }
            }
            read_markers::Decision::Write => {
                let first = self.write_read_marker(caller, id, message).await;
                let mut next =
                    self.inner
                        .read_markers
                        .written(caller, id, message, matches!(first, Ok(true)));
                while let Some(m) = next {
                    let r = self.write_read_marker(caller, id, m).await;
                    next = self
                        .inner
                        .read_markers
                        .written(caller, id, m, matches!(r, Ok(true)));
                }
                match first? {
                    true => Ok(()),
                    false => Err(message_not_found()),
                }
            }
        }
    }

    /// Writes one marker and announces it. `false`: no such message in the conversation.
    async fn write_read_marker(
        &self,
        caller: Identity,
        id: ConversationId,
        message: MessageId,
    ) -> DomainResult<bool> {
        if !self.inner.store.mark_read(id, caller, message).await? {
            return Ok(false);
        }
        let at = self.inner.clock.now_ms();
        let relay = crate::wire::MessageReadRelay {
            conversation_id: id,
            message_id: message,
            user: caller.into(),
            read_at: crate::clock::to_rfc3339(at),
        };
        self.announce(RoomKey::Conversation(id), Outgoing::MessageRead(relay))
            .await;
        Ok(true)
    }

    /// Tells a conversation's room, after the store committed (a failed emit is logged: the
    /// stored state is what clients read back).
    async fn announce(&self, room: RoomKey, event: Outgoing) {
        if let Err(e) = self.inner.notify.emit_room(room, &event).await {
            tracing::warn!(error = %e, event = event.name(), "broadcast failed");
        }
    }

    /// Stores an uploaded file for a conversation the caller belongs to.
    pub async fn store_attachment(
        &self,
        caller: Identity,
        id: ConversationId,
        upload: uploads::Staged,
    ) -> DomainResult<Attachment> {
        self.ensure_participant(caller, id).await?;
        let attachment = self
            .inner
            .uploads
            .commit(upload, id, caller, self.inner.clock.now_ms())
            .await?;
        if let Err(e) = self.inner.store.insert_attachment(&attachment).await {
            self.inner.uploads.remove(&attachment.storage_name).await;
            return Err(e.into());
        }
        Ok(attachment)
    }

    /// An attachment the caller may download, with the path of its bytes.
    pub async fn attachment(
        &self,
        caller: Identity,
        attachment_id: &str,
    ) -> DomainResult<(Attachment, std::path::PathBuf)> {
        let unknown =
            || DomainError::not_found(ErrorCode::AttachmentNotFound, "attachment not found");
        let a = self
            .inner
            .store
            .attachment(attachment_id)
            .await?
            .ok_or_else(unknown)?;
        if !self
            .inner
            .store
            .is_participant(a.conversation_id, caller)
            .await?
        {
            return Err(unknown());
        }
        let path = self.inner.uploads.path_of(&a.storage_name);
        Ok((a, path))
    }
}

//! Attachment bytes on disk under `media/uploads/`.
//!
//! Invariants:
//! - a file is written to a temporary name, its size capped while it streams, its type sniffed
//!   from its first bytes (the client's declared type is ignored), and only then renamed to a
//!   server-made name (`{uuid}.{ext}`); a failed or abandoned upload leaves nothing behind;
//! - only the types in [`ALLOWED`] are kept.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{DomainError, DomainResult, ErrorKind};
use crate::clock::Millis;
use crate::error::ErrorCode;
use crate::ids::{ConversationId, Identity};
use crate::store::{Attachment, MessageType};

/// Bytes kept for sniffing.
const SNIFF_BYTES: usize = 8192;

/// Accepted content types and the extension given to stored files.
const ALLOWED: &[(&str, &str)] = &[
    ("image/jpeg", "jpg"),
    ("image/png", "png"),
    ("image/gif", "gif"),
    ("image/webp", "webp"),
    ("image/heif", "heif"),
    ("audio/mpeg", "mp3"),
    ("audio/ogg", "ogg"),
    ("audio/x-wav", "wav"),
    ("audio/m4a", "m4a"),
    ("audio/aac", "aac"),
    ("audio/x-flac", "flac"),
    ("audio/webm", "webm"),
    ("application/pdf", "pdf"),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "docx",
    ),
    (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xlsx",
    ),
    ("application/vnd.oasis.opendocument.text", "odt"),
    ("text/plain", "txt"),
];

/// Whether a stored content type may travel in a message of this type.
pub fn fits_message_type(content_type: &str, kind: MessageType) -> bool {
    match kind {
        MessageType::Image => content_type.starts_with("image/"),
        MessageType::Audio => content_type.starts_with("audio/"),
        MessageType::File => true,
        MessageType::Text => false,
    }
}

/// What the content really is, from its first bytes.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let detected = infer::get(head).map(|t| t.mime_type());
    let mime = match detected {
        // Browsers record voice messages as WebM/Matroska audio; the container sniffs as video.
        Some("video/webm") => "audio/webm",
        Some(m) => m,
        None if !head.is_empty() && !head.contains(&0) && looks_like_text(head) => "text/plain",
        None => return None,
    };
    ALLOWED.iter().find(|(m, _)| *m == mime).map(|(m, _)| *m)
}

fn looks_like_text(head: &[u8]) -> bool {
    match std::str::from_utf8(head) {
        Ok(_) => true,
        // The head may cut a multi-byte character in two.
        Err(e) => e.error_len().is_none() && e.valid_up_to() + 4 > head.len(),
    }
}

fn extension_of(mime: &str) -> &'static str {
    ALLOWED
        .iter()
        .find(|(m, _)| *m == mime)
        .map(|(_, e)| *e)
        .unwrap_or("bin")
}

/// Keeps a display name: no path, no control characters, at most 200 characters.
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(200)
        .collect();
    let clean = clean.trim().trim_start_matches('.').to_string();
    if clean.is_empty() {
        "fichier".into()
    } else {
        clean
    }
}

#[derive(Debug, Clone)]
pub struct Uploads {
    dir: PathBuf,
    max_bytes: u64,
}

/// A fully received, sniffed upload not yet given its final name. Dropping it deletes it.
#[derive(Debug)]
pub struct Staged {
    tmp: Option<PathBuf>,
    pub file_name: String,
    pub content_type: &'static str,
    pub size_bytes: u64,
    pub sha256: String,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Removes a temporary file unless disarmed.
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Uploads {
    pub fn new(dir: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        // Leftovers of uploads interrupted by a crash.
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self { dir, max_bytes })
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn path_of(&self, storage_name: &str) -> PathBuf {
        self.dir.join(storage_name)
    }

    /// Streams an upload to a temporary file, enforcing the size limit and sniffing its type.
    pub async fn stage<S>(&self, file_name: &str, mut body: S) -> DomainResult<Staged>
    where
        S: Stream<Item = Result<Bytes, DomainError>> + Unpin,
    {
        let tmp = self.dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let mut guard = TmpGuard(Some(tmp.clone()));
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(DomainError::internal)?;
        let mut head = Vec::with_capacity(SNIFF_BYTES);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > self.max_bytes {
                return Err(DomainError::new(
                    ErrorKind::TooLarge,
                    ErrorCode::AttachmentTooLarge,
                    format!("attachments are limited to {} bytes", self.max_bytes),
                ));
            }
            if head.len() < SNIFF_BYTES {
                let take = (SNIFF_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(DomainError::internal)?;
        }
        if size == 0 {
            return Err(DomainError::bad_request(
                ErrorCode::EmptyAttachment,
                "the file is empty",
            ));
        }
        file.sync_all().await.map_err(DomainError::internal)?;
        drop(file);
        let content_type = sniff(&head).ok_or_else(|| {
            DomainError::new(
                ErrorKind::UnsupportedMedia,
                ErrorCode::UnsupportedAttachmentType,
                "this kind of file is not accepted (images, audio, PDF, office documents, plain text)",
            )
        })?;
        guard.0 = None;
        Ok(Staged {
            tmp: Some(tmp),
            file_name: sanitize_file_name(file_name),
            content_type,
            size_bytes: size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Gives a staged upload its final, server-made name.
    pub async fn commit(
        &self,
        mut staged: Staged,
        conversation_id: ConversationId,
        uploader: Identity,
        now: Millis,
    ) -> DomainResult<Attachment> {
        let id = uuid::Uuid::new_v4().to_string();
        let storage_name = format!("{id}.{}", extension_of(staged.content_type));
        let tmp = staged
            .tmp
            .take()
            .expect("a staged upload has its file until committed");
        if let Err(e) = tokio::fs::rename(&tmp, self.dir.join(&storage_name)).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(DomainError::internal(e));
        }
        Ok(Attachment {
            id,
            conversation_id,
            uploader,
            file_name: staged.file_name.clone(),
            content_type: staged.content_type.to_string(),
            size_bytes: staged.size_bytes as i64,
            storage_name,
            sha256: staged.sha256.clone(),
            created_at: now,
        })
    }

    pub async fn remove(&self, storage_name: &str) {
        let _ = tokio::fs::remove_file(self.dir.join(storage_name)).await;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_real_types_not_names() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff(png), Some("image/png"));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff("bonjour docteur é".as_bytes()), Some("text/plain"));
        assert_eq!(
            sniff(b"MZ\x90\0\x03\0\0\0"),
            None,
            "executables are refused"
        );
        assert_eq!(sniff(b"\0\x01\x02"), None);
        assert!(fits_message_type("image/png", MessageType::Image));
        assert!(!fits_message_type("application/pdf", MessageType::Image));
        assert!(fits_message_type("application/pdf", MessageType::File));
    }

    #[test]
    fn file_names_are_display_only() {
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("C:\\x\\scan.pdf"), "scan.pdf");
        assert_eq!(sanitize_file_name("a\"b\n.pdf"), "ab.pdf");
        assert_eq!(sanitize_file_name(".."), "fichier");
    }

    #[tokio::test]
    async fn oversized_and_refused_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::new(dir.path().to_path_buf(), 16).unwrap();
        let body = futures_util::stream::iter(vec![Ok(Bytes::from_static(&[b'a'; 32]))]);
        let err = uploads.stage("x.txt", body).await.unwrap_err();
        assert_eq!(err.code, "attachment_too_large");
        let body = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"MZ\x90\0\x03\0"))]);
        let err = uploads.stage("x.exe", body).await.unwrap_err();
        assert_eq!(err.code, "unsupported_attachment_type");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

//! Identifier newtypes and the caller's identity.
//!
//! Identity is the pair (role, id): patient 123 and doctor 123 are different people, so every
//! comparison and every stored reference carries both.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<i64> for $name {
            fn from(n: i64) -> Self {
                Self(n)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }
    };
}

id_newtype!(
    /// A conversation's number.
    ConversationId
);
id_newtype!(
    /// A message's number; grows with insertion order, which cursor pagination relies on.
    MessageId
);
id_newtype!(
    /// A person's number within their role (patient ids and doctor ids are separate spaces).
    UserId
);
id_newtype!(
    /// A WebRTC consultation's number.
    SessionId
);

/// The two kinds of people relais serves. Spelled as on the wire.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Patient,
    Medecin,
    /// A guest of one consultation (an interpreter, a family member), admitted by a guest
    /// link: no account, no conversation, only the session its token is bound to.
    Invite,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Medecin => "medecin",
            Role::Invite => "invite",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}` (expected `patient`, `medecin` or `invite`)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "patient" => Ok(Role::Patient),
            "medecin" => Ok(Role::Medecin),
            "invite" => Ok(Role::Invite),
            other => Err(UnknownRole(other.chars().take(32).collect())),
        }
    }
}

/// A person: role and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    pub role: Role,
    pub id: UserId,
}

impl Identity {
    pub const fn new(role: Role, id: i64) -> Self {
        Self {
            role,
            id: UserId(id),
        }
    }

    /// The Socket.IO room every socket of this person joins.
    pub fn room(&self) -> String {
        RoomKey::Person(*self).to_string()
    }

    /// `medecin-79`: the user part of the person's TURN credentials.
    pub fn key(&self) -> String {
        format!("{}-{}", self.role, self.id)
    }

    /// The person named by [`key`](Self::key).
    pub fn parse_key(key: &str) -> Option<Self> {
        let (role, id) = key.split_once('-')?;
        Some(Self::new(role.parse().ok()?, id.parse().ok()?))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.role, self.id)
    }
}

/// A group of sockets events are sent to, named by what it is about. Its `Display` is the
/// Socket.IO room name (`conversation:{id}`, `session:{id}`, `user:{role}:{id}`), which is
/// the only place those names are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomKey {
    /// The members of a conversation who joined it (`join_conversation`).
    Conversation(ConversationId),
    /// The participants of a consultation, on every node.
    Session(SessionId),
    /// Every socket of one person.
    Person(Identity),
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomKey::Conversation(id) => write!(f, "conversation:{id}"),
            RoomKey::Session(id) => write!(f, "session:{id}"),
            RoomKey::Person(who) => write!(f, "user:{}:{}", who.role, who.id),
        }
    }
}

impl From<RoomKey> for String {
    fn from(k: RoomKey) -> Self {
        k.to_string()
    }
}

/// A signaling socket, as the core knows it: the Socket.IO session id (16 url-safe base64
/// characters), without the transport's type. `realtime` converts at the boundary.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId([u8; 16]);

impl SocketId {
    /// No socket: reaches nobody (16 zeros, which Socket.IO never hands out).
    pub const NONE: SocketId = SocketId([b'0'; 16]);

    /// `s` when it is 16 url-safe base64 characters.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; 16] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .then_some(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII ever enters (see `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SocketId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SocketId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        SocketId::parse(&s).ok_or_else(|| serde::de::Error::custom("not a socket id"))
    }
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocketId({})", self.as_str())
    }
}

#[cfg(test)]
mod socket_id_tests {
    use super::SocketId;

    #[test]
    fn only_socket_io_session_ids_parse() {
        let id = SocketId::parse("AbCdEf0123456-_z").unwrap();
        assert_eq!(id.to_string(), "AbCdEf0123456-_z");
        assert!(SocketId::parse("short").is_none());
        assert!(SocketId::parse("AbCdEf0123456-_/").is_none());
        assert!(SocketId::parse("AbCdEf0123456-_zz").is_none());
    }
}

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
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Medecin => "medecin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}` (expected `patient` or `medecin`)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "patient" => Ok(Role::Patient),
            "medecin" => Ok(Role::Medecin),
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
        format!("user:{}:{}", self.role, self.id)
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

//! The domain's error, defined in [`crate::error`] (every layer uses it); re-exported here
//! under the name messaging has always used.

pub use crate::error::{DomainError, DomainResult, ErrorCode, ErrorKind};

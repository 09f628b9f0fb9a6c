//! Decoding helpers shared by the store modules.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{StoreError, StoreResult};
use crate::ids::{Identity, Role};

/// Reads a (role, id) pair stored in two columns.
pub(super) fn identity(row: &AnyRow, role_col: &str, id_col: &str) -> StoreResult<Identity> {
    let role: String = row.try_get(role_col)?;
    let id: i64 = row.try_get(id_col)?;
    let role: Role = role
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("unknown role in {role_col}")))?;
    Ok(Identity::new(role, id))
}

/// Sorted, unique key of the two members of a private conversation.
pub(super) fn private_key(a: Identity, b: Identity) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("{x}|{y}")
}

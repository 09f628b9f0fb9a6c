//! Conference join codes: 8 upper-case hex characters from the OS-seeded CSPRNG, stored only
//! as an HMAC-SHA256 under a server-wide key (a leaked database does not reveal codes, and the
//! 2^32 code space cannot be searched offline without the key).

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub const CODE_LEN: usize = 8;

/// A fresh code, e.g. `81392D21`.
pub fn generate() -> String {
    let mut bytes = [0u8; CODE_LEN / 2];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode_upper(bytes)
}

/// Length of a guest code: longer than a join code, since it is the guest's only credential.
pub const GUEST_CODE_LEN: usize = 16;

/// A fresh guest code (16 upper-case hex characters, 64 bits).
pub fn generate_guest() -> String {
    let mut bytes = [0u8; GUEST_CODE_LEN / 2];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode_upper(bytes)
}

/// A guest code as typed or pasted, made comparable; `None` when it cannot be one.
pub fn normalize_guest(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == GUEST_CODE_LEN && code.chars().all(|c| c.is_ascii_hexdigit())).then_some(code)
}

/// What a person typed, made comparable: trimmed, upper-case, without spaces or dashes.
/// `None` when it cannot be a code.
pub fn normalize(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == CODE_LEN && code.chars().all(|c| c.is_ascii_hexdigit())).then_some(code)
}

/// The stored form of a (normalized) code.
pub fn hash(key: &[u8], code: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(code.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Two code hashes compared in time independent of where they differ.
pub fn same_hash(a: &str, b: &str) -> bool {
    crate::auth::constant_time_eq(a.as_bytes(), b.as_bytes())
}

/// A new random key, hex-encoded, for the server-wide secret.
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_eight_upper_hex_and_vary() {
        let a = generate();
        assert_eq!(a.len(), 8);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
        );
        let distinct: std::collections::HashSet<String> = (0..1000).map(|_| generate()).collect();
        assert!(distinct.len() > 990);
    }

    #[test]
    fn guest_codes() {
        let g = generate_guest();
        assert_eq!(
            normalize_guest(&g.to_lowercase()).as_deref(),
            Some(g.as_str())
        );
        assert_eq!(normalize_guest("81392D21"), None);
        assert_eq!(normalize(&g), None);
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize(" 8139-2d21 ").as_deref(), Some("81392D21"));
        assert_eq!(normalize("81392D2"), None);
        assert_eq!(normalize("81392D2G"), None);
        assert_eq!(normalize(""), None);
    }

    #[test]
    fn hash_depends_on_key_and_code() {
        assert_ne!(hash(b"k1", "81392D21"), hash(b"k2", "81392D21"));
        assert_ne!(hash(b"k1", "81392D21"), hash(b"k1", "81392D22"));
        assert_eq!(hash(b"k1", "81392D21").len(), 64);
    }
}

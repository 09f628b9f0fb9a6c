//! Time-limited TURN credentials in the common REST scheme ("TURN REST API",
//! draft-uberti-behave-turn-rest): username `"{expiry}:{user}"`, password
//! `base64(HMAC-SHA1(secret, username))`. Anyone holding the shared secret (every relais node)
//! can check them without storing anything.
//!
//! Nonces are stateless too: `"{issued:x}-{mac}"`, valid for [`NONCE_TTL_SECS`].

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

pub const NONCE_TTL_SECS: u64 = 3600;

/// Why a username or nonce is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    Malformed,
    Expired,
}

#[derive(Clone)]
pub struct Credentials {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

impl Credentials {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    /// Username and password for `user`, valid until `expiry` (Unix seconds).
    pub fn issue(&self, user: &str, expiry: u64) -> (String, String) {
        let username = format!("{expiry}:{user}");
        let password = self.password(&username);
        (username, password)
    }

    pub fn password(&self, username: &str) -> String {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&self.secret).expect("any key length");
        mac.update(username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    /// The user a username names, if it is well formed and not expired at `now`.
    pub fn check_username<'a>(
        &self,
        username: &'a str,
        now: u64,
    ) -> Result<&'a str, CredentialError> {
        let (expiry, user) = username.split_once(':').ok_or(CredentialError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
        if user.is_empty() {
            return Err(CredentialError::Malformed);
        }
        if expiry <= now {
            return Err(CredentialError::Expired);
        }
        Ok(user)
    }

    fn nonce_mac(&self, issued: u64) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("any key length");
        mac.update(b"turn-nonce:");
        mac.update(&issued.to_be_bytes());
        hex::encode(&mac.finalize().into_bytes()[..12])
    }

    pub fn nonce(&self, now: u64) -> String {
        format!("{now:x}-{}", self.nonce_mac(now))
    }

    pub fn check_nonce(&self, nonce: &str, now: u64) -> Result<(), CredentialError> {
        let (issued, mac) = nonce.split_once('-').ok_or(CredentialError::Malformed)?;
        let issued = u64::from_str_radix(issued, 16).map_err(|_| CredentialError::Malformed)?;
        if mac != self.nonce_mac(issued) {
            return Err(CredentialError::Malformed);
        }
        if now.saturating_sub(issued) > NONCE_TTL_SECS || issued > now + 60 {
            return Err(CredentialError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials() {
        let c = Credentials::new("s3cret");
        let (u, p) = c.issue("patient-11", 2_000);
        assert_eq!(u, "2000:patient-11");
        assert_eq!(p, c.password(&u));
        // Known vector: base64(HMAC-SHA1("s3cret", "2000:patient-11")).
        assert_eq!(p.len(), 28);
        assert_eq!(c.check_username(&u, 1_999), Ok("patient-11"));
        assert_eq!(c.check_username(&u, 2_000), Err(CredentialError::Expired));
        assert_eq!(c.check_username("x", 0), Err(CredentialError::Malformed));
        assert_eq!(
            c.check_username("abc:u", 0),
            Err(CredentialError::Malformed)
        );
        assert_ne!(Credentials::new("other").password(&u), p);
    }

    #[test]
    fn nonces() {
        let c = Credentials::new("s3cret");
        let n = c.nonce(1_000);
        assert_eq!(c.check_nonce(&n, 1_500), Ok(()));
        assert_eq!(
            c.check_nonce(&n, 1_000 + NONCE_TTL_SECS + 1),
            Err(CredentialError::Expired)
        );
        assert_eq!(
            Credentials::new("x").check_nonce(&n, 1_500),
            Err(CredentialError::Malformed)
        );
        assert_eq!(c.check_nonce("zz-00", 0), Err(CredentialError::Malformed));
    }
}

//! Authentication: JWT verification into an [`Identity`], development secrets, token minting.
//! (Failed attempts are counted per address by the transports, with [`crate::limits`].)
//!
//! Invariants:
//! - the algorithm is pinned by configuration (HS256 with a secret, or RS256 with a PEM public
//!   key); a token signed any other way is refused;
//! - `exp` is required; `iss`/`aud` are checked when configured;
//! - the role comes from `role` or `userType` (they must agree when both are present), the id
//!   from `sub`, `userId` or `id` (string or number);
//! - tokens never reach a log line: errors carry only the reason.

mod dev_secret;

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::config::AuthConfig;
use crate::ids::{Identity, Role};

pub use dev_secret::load_or_create_dev_secret;

/// Equality of two secrets in time independent of where they differ (their lengths are not
/// secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a token was refused. The text is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token algorithm not accepted")]
    WrongAlgorithm,
    #[error("token is missing the `exp` claim")]
    MissingExp,
    #[error("token issuer not accepted")]
    BadIssuer,
    #[error("token audience not accepted")]
    BadAudience,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("malformed token")]
    Malformed,
    #[error("token has no usable role (`role` or `userType` must be `patient` or `medecin`)")]
    BadRole,
    #[error("token has no usable user id (`sub`, `userId` or `id`)")]
    BadId,
    #[error("token claims disagree: {0}")]
    Inconsistent(&'static str),
}

/// A verified caller: who they are and the display name the token carries, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub identity: Identity,
    pub name: Option<String>,
}

/// What starts a guest token: `rlg.` then an HS256 JWT under the server's own guest key.
pub const GUEST_TOKEN_PREFIX: &str = "rlg.";

/// The server's own key for guest tokens (a server secret kept in the database, the same on
/// every node): guests have no account at the clinic's identity provider, so relais signs
/// their tokens itself, whatever algorithm the clinic's tokens use.
#[derive(Clone)]
struct GuestKey {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

/// How tokens are checked (and, with a shared secret, minted).
#[derive(Clone)]
pub struct TokenVerifier {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
    algorithm: Algorithm,
    guest: Option<GuestKey>,
    /// True when the secret was generated for this data directory (no configured secret).
    pub development_mode: bool,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithm", &self.algorithm)
            .field("development_mode", &self.development_mode)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// From configuration; without a secret or key, a development secret kept in `data_dir`.
    pub fn from_config(config: &AuthConfig, data_dir: &Path) -> anyhow::Result<Self> {
        if let Some(path) = &config.jwt_public_key_file {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "auth.jwt_public_key_file: cannot read {}: {e}",
                    path.display()
                )
            })?;
            let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                anyhow::anyhow!("auth.jwt_public_key_file: not an RSA public key in PEM: {e}")
            })?;
            return Ok(Self::new(key, None, Algorithm::RS256, config, false));
        }
        let (secret, development_mode) = match &config.jwt_secret {
            Some(secret) => (secret.clone().into_bytes(), false),
            None => (load_or_create_dev_secret(data_dir)?, true),
        };
        Ok(Self::hs256(&secret, config, development_mode))
    }

    pub fn hs256(secret: &[u8], config: &AuthConfig, development_mode: bool) -> Self {
        Self::new(
            DecodingKey::from_secret(secret),
            Some(EncodingKey::from_secret(secret)),
            Algorithm::HS256,
            config,
            development_mode,
        )
    }

    fn new(
        decoding: DecodingKey,
        encoding: Option<EncodingKey>,
        algorithm: Algorithm,
        config: &AuthConfig,
        development_mode: bool,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        Self {
            decoding,
            encoding,
            validation,
            algorithm,
            guest: None,
            development_mode,
        }
    }

    /// Accepts (and can mint) guest tokens signed with `key`.
    pub fn with_guest_key(mut self, key: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = self.validation.leeway;
        validation.validate_aud = false;
        self.guest = Some(GuestKey {
            decoding: DecodingKey::from_secret(key),
            encoding: EncodingKey::from_secret(key),
            validation,
        });
        self
    }

    /// A guest's token (`rlg.…`), valid until `expires_at` (seconds since the epoch): the
    /// bearer is `(invite, guest_id)` named `name`.
    pub fn mint_guest(&self, guest_id: i64, name: &str, expires_at: u64) -> anyhow::Result<String> {
        let key = self
            .guest
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no guest key: guest tokens are not enabled"))?;
        let claims = serde_json::json!({
            "sub": guest_id.to_string(),
            "role": Role::Invite,
            "userType": Role::Invite,
            "userId": guest_id,
            "nom": name,
            "iat": jsonwebtoken::get_current_timestamp(),
            "exp": expires_at,
        });
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key.encoding)?;
        Ok(format!("{GUEST_TOKEN_PREFIX}{jwt}"))
    }

    /// Verifies a token and extracts who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if let Some(jwt) = token.strip_prefix(GUEST_TOKEN_PREFIX) {
            let key = self.guest.as_ref().ok_or(AuthError::BadSignature)?;
            let data =
                jsonwebtoken::decode::<Map<String, Value>>(jwt, &key.decoding, &key.validation)
                    .map_err(decode_error)?;
            let principal = claims_principal(&data.claims, true)?;
            return if principal.identity.role == Role::Invite {
                Ok(principal)
            } else {
                Err(AuthError::BadRole)
            };
        }
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &self.validation)
                .map_err(decode_error)?;
        principal_from_claims(&data.claims)
    }

    /// Signs a token for `identity`, valid for `ttl`. Only with a shared secret.
    pub fn mint(
        &self,
        identity: Identity,
        name: Option<&str>,
        ttl: std::time::Duration,
    ) -> anyhow::Result<String> {
        let key = self.encoding.as_ref().ok_or_else(|| {
            anyhow::anyhow!("cannot mint tokens: the server verifies RS256 with a public key only")
        })?;
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = serde_json::json!({
            "sub": identity.id.0.to_string(),
            "role": identity.role,
            "userType": identity.role,
            "userId": identity.id.0,
            "iat": now,
            "exp": now + ttl.as_secs(),
        });
        if let Some(name) = name {
            claims["nom"] = Value::String(name.to_string());
        }
        if let Some(iss) = self.validation.iss.as_ref().and_then(|s| s.iter().next()) {
            claims["iss"] = Value::String(iss.clone());
        }
        if let Some(aud) = self.validation.aud.as_ref().and_then(|s| s.iter().next()) {
            claims["aud"] = Value::String(aud.clone());
        }
        Ok(jsonwebtoken::encode(
            &Header::new(self.algorithm),
            &claims,
            key,
        )?)
    }
}

fn decode_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::WrongAlgorithm,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::MissingExp,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::BadIssuer,
        ErrorKind::InvalidIssuer => AuthError::BadIssuer,
        ErrorKind::InvalidAudience => AuthError::BadAudience,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        _ => AuthError::Malformed,
    }
}

fn claim_id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|id| *id > 0)
}

/// Reads (role, id, name) from a verified token's claims. The guest role is refused here:
/// only the server's own guest tokens carry it ([`TokenVerifier::mint_guest`]), never a
/// token from the clinic's identity provider.
pub fn principal_from_claims(claims: &Map<String, Value>) -> Result<Principal, AuthError> {
    claims_principal(claims, false)
}

fn claims_principal(claims: &Map<String, Value>, guest: bool) -> Result<Principal, AuthError> {
    let role_of = |key: &str| -> Result<Option<Role>, AuthError> {
        match claims.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| AuthError::BadRole),
            Some(_) => Err(AuthError::BadRole),
        }
    };
    let role = match (role_of("role")?, role_of("userType")?) {
        (Some(a), Some(b)) if a != b => return Err(AuthError::Inconsistent("role and userType")),
        (Some(r), _) | (None, Some(r)) => r,
        (None, None) => return Err(AuthError::BadRole),
    };
    if (role == Role::Invite) != guest {
        return Err(AuthError::BadRole);
    }
    let mut ids = ["sub", "userId", "id"]
        .iter()
        .filter_map(|k| claims.get(*k).filter(|v| !v.is_null()).map(|v| (k, v)));
    let (_, first) = ids.next().ok_or(AuthError::BadId)?;
    let id = claim_id(first).ok_or(AuthError::BadId)?;
    if ids.any(|(_, v)| claim_id(v) != Some(id)) {
        return Err(AuthError::Inconsistent("sub, userId and id"));
    }
    let name = ["nom", "name"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(Value::as_str))
        .map(|s| s.chars().take(120).collect());
    Ok(Principal {
        identity: Identity::new(role, id),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn verifier(config: AuthConfig) -> TokenVerifier {
        TokenVerifier::hs256(b"0123456789abcdef0123456789abcdef", &config, false)
    }

    fn sign(claims: Value, secret: &[u8], alg: Algorithm) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn exp() -> u64 {
        jsonwebtoken::get_current_timestamp() + 600
    }

    #[test]
    fn minted_token_round_trips() {
        let v = verifier(AuthConfig::default());
        let id = Identity::new(Role::Medecin, 79);
        let t = v
            .mint(id, Some("Dr. Martin"), Duration::from_secs(60))
            .unwrap();
        let p = v.verify(&t).unwrap();
        assert_eq!(p.identity, id);
        assert_eq!(p.name.as_deref(), Some("Dr. Martin"));
    }

    /// jsonwebtoken before 10.3 skipped the `nbf` check when the claim was a string instead of
    /// a number (Cargo.toml keeps the floor at 10.3): a token "not valid before" a future
    /// time, written as a string, must be refused, and so must an `exp` in the past written
    /// as a string.
    #[test]
    fn time_claims_given_as_strings_are_checked_or_refused() {
        let s = b"0123456789abcdef0123456789abcdef";
        let v = verifier(AuthConfig::default());
        let later = (jsonwebtoken::get_current_timestamp() + 3_600).to_string();
        let t = sign(
            json!({"role": "medecin", "sub": "7", "exp": exp(), "nbf": later}),
            s,
            Algorithm::HS256,
        );
        assert!(v.verify(&t).is_err(), "nbf in the future, as a string");
        let earlier = (jsonwebtoken::get_current_timestamp() - 3_600).to_string();
        let t = sign(
            json!({"role": "medecin", "sub": "7", "exp": earlier}),
            s,
            Algorithm::HS256,
        );
        assert!(v.verify(&t).is_err(), "exp in the past, as a string");
        let t = sign(
            json!({"role": "medecin", "sub": "7", "exp": exp(), "nbf": jsonwebtoken::get_current_timestamp() + 3_600}),
            s,
            Algorithm::HS256,
        );
        assert!(v.verify(&t).is_err(), "nbf in the future, as a number");
    }

    #[test]
    fn claims_variants() {
        let s = b"0123456789abcdef0123456789abcdef";
        let v = verifier(AuthConfig::default());
        let t = sign(
            json!({"userType": "patient", "userId": 123, "exp": exp()}),
            s,
            Algorithm::HS256,
        );
        assert_eq!(
            v.verify(&t).unwrap().identity,
            Identity::new(Role::Patient, 123)
        );
        let t = sign(
            json!({"role": "medecin", "id": "7", "exp": exp()}),
            s,
            Algorithm::HS256,
        );
        assert_eq!(
            v.verify(&t).unwrap().identity,
            Identity::new(Role::Medecin, 7)
        );
        let t = sign(
            json!({"role": "admin", "sub": "7", "exp": exp()}),
            s,
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&t), Err(AuthError::BadRole));
        let t = sign(
            json!({"role": "patient", "userType": "medecin", "sub": "7", "exp": exp()}),
            s,
            Algorithm::HS256,
        );
        assert!(matches!(v.verify(&t), Err(AuthError::Inconsistent(_))));
        let t = sign(
            json!({"role": "patient", "sub": "7", "userId": 8, "exp": exp()}),
            s,
            Algorithm::HS256,
        );
        assert!(matches!(v.verify(&t), Err(AuthError::Inconsistent(_))));
        let t = sign(
            json!({"role": "patient", "sub": "x", "exp": exp()}),
            s,
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&t), Err(AuthError::BadId));
    }

    #[test]
    fn refusals() {
        let s = b"0123456789abcdef0123456789abcdef";
        let v = verifier(AuthConfig::default());
        let t = sign(json!({"role": "patient", "sub": "1"}), s, Algorithm::HS256);
        assert_eq!(v.verify(&t), Err(AuthError::MissingExp));
        let t = sign(
            json!({"role": "patient", "sub": "1", "exp": 1000}),
            s,
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&t), Err(AuthError::Expired));
        let t = sign(
            json!({"role": "patient", "sub": "1", "exp": exp()}),
            b"another-secret-another-secret-xx",
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&t), Err(AuthError::BadSignature));
        let t = sign(
            json!({"role": "patient", "sub": "1", "exp": exp()}),
            s,
            Algorithm::HS512,
        );
        assert_eq!(v.verify(&t), Err(AuthError::WrongAlgorithm));
        assert_eq!(v.verify("garbage"), Err(AuthError::Malformed));
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        // alg=none is refused too.
        let none = format!(
            "{}.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                br#"{"alg":"none","typ":"JWT"}"#
            ),
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                json!({"role":"patient","sub":"1","exp":exp()}).to_string()
            )
        );
        assert!(v.verify(&none).is_err());
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let s = b"0123456789abcdef0123456789abcdef";
        let v = verifier(AuthConfig {
            issuer: Some("clinic".into()),
            audience: Some("relais".into()),
            ..AuthConfig::default()
        });
        let good = sign(
            json!({"role": "patient", "sub": "1", "exp": exp(), "iss": "clinic", "aud": "relais"}),
            s,
            Algorithm::HS256,
        );
        assert!(v.verify(&good).is_ok());
        let t = sign(
            json!({"role": "patient", "sub": "1", "exp": exp(), "iss": "other", "aud": "relais"}),
            s,
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&t), Err(AuthError::BadIssuer));
        let t = sign(
            json!({"role": "patient", "sub": "1", "exp": exp(), "aud": "relais"}),
            s,
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&t), Err(AuthError::BadIssuer));
        let t = sign(
            json!({"role": "patient", "sub": "1", "exp": exp(), "iss": "clinic", "aud": "x"}),
            s,
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&t), Err(AuthError::BadAudience));
    }

    #[test]
    fn guest_tokens_come_only_from_the_guest_key() {
        let v = verifier(AuthConfig::default()).with_guest_key(b"guest-key-guest-key-guest-key-32");
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let t = v.mint_guest(9, "Interprète", exp).unwrap();
        assert!(t.starts_with(GUEST_TOKEN_PREFIX));
        let p = v.verify(&t).unwrap();
        assert_eq!(p.identity, Identity::new(Role::Invite, 9));
        assert_eq!(p.name.as_deref(), Some("Interprète"));

        // The clinic's tokens cannot make a guest, even signed with the right secret.
        let forged = sign(
            json!({"role": "invite", "sub": "9", "exp": exp}),
            b"0123456789abcdef0123456789abcdef",
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&forged), Err(AuthError::BadRole));
        // Nor can the guest key make anyone else.
        let other =
            verifier(AuthConfig::default()).with_guest_key(b"another-guest-key-another-key-32");
        let foreign = other.mint_guest(9, "x", exp).unwrap();
        assert_eq!(v.verify(&foreign), Err(AuthError::BadSignature));
        let as_doctor = format!(
            "{GUEST_TOKEN_PREFIX}{}",
            sign(
                json!({"role": "medecin", "sub": "1", "exp": exp}),
                b"guest-key-guest-key-guest-key-32",
                Algorithm::HS256,
            )
        );
        assert_eq!(v.verify(&as_doctor), Err(AuthError::BadRole));
        let expired = v
            .mint_guest(9, "x", jsonwebtoken::get_current_timestamp() - 3600)
            .unwrap();
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        // Without a guest key, no guest token passes.
        assert!(verifier(AuthConfig::default()).verify(&t).is_err());
    }
}

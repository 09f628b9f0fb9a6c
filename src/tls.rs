//! TLS for the HTTPS listener and TURN over TLS: configured PEM files, or a self-signed
//! certificate generated into `certs/` and renewed before it expires.
//!
//! Invariants:
//! - the generated certificate covers every name in [`certificate_names`] (the configured host
//!   names, the public base URL's host, the media IPs, localhost, 127.0.0.1, ::1); its subject
//!   names relais and the first of those names; it is valid for [`SELF_SIGNED_VALIDITY`];
//! - it is generated again when those names change, when it has less than [`RENEW_BEFORE`]
//!   left (checked at start and every [`RENEWAL_CHECK`] while running), or when its expiry
//!   was not recorded (a certificate from an older relais);
//! - a renewal swaps the certificate inside the one [`ServerConfig`] both listeners share:
//!   connections made from then on get the new one, open connections keep theirs;
//! - the private key file is readable by its owner only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Config;

/// How long a generated certificate is valid.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// A generated certificate with less than this left is generated again.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often a running server looks at its generated certificate's expiry.
pub const RENEWAL_CHECK: Duration = Duration::from_secs(12 * 3600);

/// Whether a generated certificate must be made again: its names changed, or it expires
/// within [`RENEW_BEFORE`] of `now` (seconds since the epoch), or its expiry is unknown.
pub fn needs_new_certificate(
    recorded_names: &str,
    wanted_names: &str,
    expires_at: Option<u64>,
    now: u64,
) -> bool {
    recorded_names != wanted_names
        || expires_at.is_none_or(|at| at <= now.saturating_add(RENEW_BEFORE.as_secs()))
}

/// The certificate the listeners present, swapped in place by a renewal.
#[derive(Debug)]
struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// A generated certificate's files and the names it must cover, for renewal.
#[derive(Clone)]
struct Generated {
    dir: PathBuf,
    names: Vec<String>,
}

#[derive(Clone)]
pub struct TlsMaterial {
    pub server_config: Arc<ServerConfig>,
    /// The certificate the listener presents (PEM), for clients that want to trust it.
    pub cert_path: PathBuf,
    pub generated: bool,
    slot: Arc<CertSlot>,
    provider: Arc<CryptoProvider>,
    renewal: Option<Generated>,
}

impl TlsMaterial {
    /// Renews a generated certificate when it is due (see [`needs_new_certificate`]) and
    /// swaps it in; returns whether it did. Configured certificates are the operator's.
    pub fn renew_if_due(&self) -> anyhow::Result<bool> {
        let Some(generated) = &self.renewal else {
            return Ok(false);
        };
        let (cert_path, key_path, made) = ensure_self_signed(&generated.dir, &generated.names)?;
        if made {
            let key = certified_key(&cert_path, &key_path, &self.provider)?;
            *self.slot.0.write() = Arc::new(key);
        }
        Ok(made)
    }

    /// Checks a generated certificate every [`RENEWAL_CHECK`] for as long as the task runs;
    /// `None` for a configured certificate.
    pub fn spawn_renewal(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.renewal.as_ref()?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEWAL_CHECK);
            tick.tick().await;
            loop {
                tick.tick().await;
                let task = this.clone();
                match tokio::task::spawn_blocking(move || task.renew_if_due()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("renewing the self-signed certificate: {e:#}"),
                    Err(e) => tracing::error!("renewing the self-signed certificate: {e}"),
                }
            }
        }))
    }
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .with_context(|| format!("https.key_file: {} is not a usable key", key_path.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().with_context(|| {
        format!(
            "https.cert_file/https.key_file: {} and {} do not form a usable certificate",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(certified)
}

/// Names a generated certificate must cover.
pub fn certificate_names(config: &Config, public_base_url: &url::Url) -> Vec<String> {
    let mut names: Vec<String> = config.https.hostnames.clone();
    if let Some(host) = public_base_url.host_str() {
        names.push(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        );
    }
    names.extend(config.media.public_ips.iter().map(|ip| ip.to_string()));
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

pub fn load(config: &Config, public_base_url: &url::Url) -> anyhow::Result<TlsMaterial> {
    let (cert_path, key_path, renewal) = match (&config.https.cert_file, &config.https.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), None),
        _ => {
            let generated = Generated {
                dir: config.https.certs_dir.clone(),
                names: certificate_names(config, public_base_url),
            };
            let (c, k, _) = ensure_self_signed(&generated.dir, &generated.names)?;
            (c, k, Some(generated))
        }
    };
    material(cert_path, &key_path, renewal)
}

fn material(
    cert_path: PathBuf,
    key_path: &Path,
    renewal: Option<Generated>,
) -> anyhow::Result<TlsMaterial> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let slot = Arc::new(CertSlot(RwLock::new(Arc::new(certified_key(
        &cert_path, key_path, &provider,
    )?))));
    let mut server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(slot.clone());
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        server_config: Arc::new(server_config),
        cert_path,
        generated: renewal.is_some(),
        slot,
        provider,
        renewal,
    })
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("https.cert_file: cannot read {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("https.cert_file: {} is not PEM", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "https.cert_file: no certificate in {}",
        path.display()
    );
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("https.key_file: cannot read {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            anyhow::anyhow!("https.key_file: no private key in {}", path.display())
        }
        e => anyhow::anyhow!("https.key_file: {} is not PEM ({e})", path.display()),
    })
}

/// Returns (certificate, key, generated now) paths in `dir`, generating them when missing or
/// when [`needs_new_certificate`] says so.
fn ensure_self_signed(dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf, bool)> {
    let cert_path = dir.join("relais-selfsigned.crt");
    let key_path = dir.join("relais-selfsigned.key");
    let names_path = dir.join("relais-selfsigned.names");
    let expires_path = dir.join("relais-selfsigned.expires");
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&names_path).unwrap_or_default();
    let expires_at = std::fs::read_to_string(&expires_path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if cert_path.exists()
        && key_path.exists()
        && !needs_new_certificate(&current, &wanted, expires_at, now)
    {
        return Ok((cert_path, key_path, false));
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("https.certs_dir: cannot create {}", dir.display()))?;
    let (cert_pem, key_pem, not_after) = self_signed(names, now)?;
    write_private(&key_path, key_pem.as_bytes())?;
    std::fs::write(&cert_path, cert_pem)?;
    std::fs::write(&names_path, wanted)?;
    std::fs::write(&expires_path, not_after.to_string())?;
    tracing::warn!(
        path = %cert_path.display(),
        names = %names.join(", "),
        valid_days = SELF_SIGNED_VALIDITY.as_secs() / 86_400,
        "generated a self-signed TLS certificate (renewed 30 days before it expires); configure https.cert_file/https.key_file for production"
    );
    Ok((cert_path, key_path, true))
}

/// A self-signed certificate for `names` valid from a day before `now` for
/// [`SELF_SIGNED_VALIDITY`]: (certificate PEM, key PEM, expiry in seconds since the epoch).
fn self_signed(names: &[String], now: u64) -> anyhow::Result<(String, String, u64)> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .context("generating the self-signed certificate: a name is not valid")?;
    let first = names.first().map(String::as_str).unwrap_or("localhost");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("relais {first}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "relais (self-signed)");
    let not_before = now.saturating_sub(86_400);
    let not_after = now + SELF_SIGNED_VALIDITY.as_secs();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before as i64)?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after as i64)?;
    let key = rcgen::KeyPair::generate().context("generating the certificate's key")?;
    let cert = params
        .self_signed(&key)
        .context("generating the self-signed certificate")?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn a_certificate_is_made_again_when_due_or_when_its_names_change() {
        let now = 1_000 * DAY;
        let fresh = Some(now + 80 * DAY);
        assert!(!needs_new_certificate("a\nb", "a\nb", fresh, now));
        assert!(
            needs_new_certificate("a", "a\nb", fresh, now),
            "names changed"
        );
        assert!(
            needs_new_certificate("a", "a", Some(now + 29 * DAY), now),
            "due"
        );
        assert!(
            needs_new_certificate("a", "a", Some(now - DAY), now),
            "expired"
        );
        assert!(needs_new_certificate("a", "a", None, now), "expiry unknown");
    }

    #[test]
    fn a_renewal_swaps_the_certificate_the_listener_presents() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["clinic.example".to_string(), "127.0.0.1".to_string()];
        let (cert, key, made) = ensure_self_signed(dir.path(), &names).unwrap();
        assert!(made);
        let pem = std::fs::read_to_string(&cert).unwrap();
        let renewal = Generated {
            dir: dir.path().to_path_buf(),
            names: names.clone(),
        };
        let material = material(cert.clone(), &key, Some(renewal)).unwrap();
        assert!(!material.renew_if_due().unwrap(), "not due yet");
        let expires: u64 = std::fs::read_to_string(dir.path().join("relais-selfsigned.expires"))
            .unwrap()
            .parse()
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(expires > now + 89 * DAY && expires <= now + 90 * DAY + 60);
        // Near its end: the next check makes a new one and the slot presents it.
        std::fs::write(
            dir.path().join("relais-selfsigned.expires"),
            (now + 10 * DAY).to_string(),
        )
        .unwrap();
        let before = material.slot.0.read().cert[0].clone();
        assert!(material.renew_if_due().unwrap());
        let after = material.slot.0.read().cert[0].clone();
        assert_ne!(before, after);
        assert_ne!(pem, std::fs::read_to_string(&cert).unwrap());
        let subject = String::from_utf8_lossy(after.as_ref()).into_owned();
        assert!(
            subject.contains("relais clinic.example"),
            "CN names relais and the host"
        );
    }
}

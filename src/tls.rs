//! TLS for the HTTPS listener: configured PEM files, or a self-signed certificate generated
//! into `certs/` on first start.
//!
//! Invariants: the generated certificate covers every name in [`certificate_names`] (the
//! configured host names, the public base URL's host, the media IPs, localhost, 127.0.0.1,
//! ::1); when that list changes the certificate is generated again. The private key file is
//! readable by its owner only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

#[derive(Clone)]
pub struct TlsMaterial {
    pub server_config: Arc<ServerConfig>,
    /// The certificate the listener presents (PEM), for clients that want to trust it.
    pub cert_path: PathBuf,
    pub generated: bool,
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
    let (cert_path, key_path, generated) = match (&config.https.cert_file, &config.https.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), false),
        _ => {
            let (c, k) = ensure_self_signed(
                &config.https.certs_dir,
                &certificate_names(config, public_base_url),
            )?;
            (c, k, true)
        }
    };
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "https.cert_file/https.key_file: {} and {} do not form a usable certificate",
                cert_path.display(),
                key_path.display()
            )
        })?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        server_config: Arc::new(server_config),
        cert_path,
        generated,
    })
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("https.cert_file: cannot read {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
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
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("https.key_file: {} is not PEM", path.display()))?
        .with_context(|| format!("https.key_file: no private key in {}", path.display()))
}

/// Returns (certificate, key) paths in `dir`, generating them when missing or when the names
/// they were made for differ from `names`.
fn ensure_self_signed(dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join("relais-selfsigned.crt");
    let key_path = dir.join("relais-selfsigned.key");
    let names_path = dir.join("relais-selfsigned.names");
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&names_path).unwrap_or_default();
    if cert_path.exists() && key_path.exists() && current == wanted {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("https.certs_dir: cannot create {}", dir.display()))?;
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .context("generating the self-signed certificate")?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, certified.cert.pem())?;
    std::fs::write(&names_path, wanted)?;
    tracing::warn!(
        path = %cert_path.display(),
        names = %names.join(", "),
        "generated a self-signed TLS certificate; configure https.cert_file/https.key_file for production"
    );
    Ok((cert_path, key_path))
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

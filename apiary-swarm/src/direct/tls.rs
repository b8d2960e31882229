//! TLS of the direct path (tonic over rustls): a node that listens serves its certificate, and
//! every node checks a worker's certificate against the swarm's CA before it sends the token.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::config::SwarmTls;
use crate::error::{Result, SwarmError};

#[allow(clippy::needless_pass_by_value)] // `reason`: any error or message, by value as `impl ToString`
fn tls_error(what: impl Into<String>, reason: impl ToString) -> SwarmError {
    SwarmError::Tls {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// Chooses ring as rustls's provider for the process, unless one is chosen already: where
/// another crate builds rustls with aws-lc-rs too (the `apiary` command's AWS SDK), rustls
/// cannot choose by itself.
fn provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| tls_error(format!("{what} {}", path.display()), e))
}

/// What a listening node serves: `None` without a certificate and key.
pub(crate) fn server(tls: &SwarmTls) -> Result<Option<ServerTlsConfig>> {
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            provider();
            let identity = Identity::from_pem(read("certificate", cert)?, read("key", key)?);
            Ok(Some(ServerTlsConfig::new().identity(identity)))
        }
        (None, None) => Ok(None),
        _ => Err(tls_error(
            "--tls-cert and --tls-key",
            "give both, or neither",
        )),
    }
}

/// What a node checks workers against: the CA (`ca`, else `cert`); `None` without either. The
/// CA is parsed here, so that a bad file fails the node's start, not its first query.
pub(crate) fn client(tls: &SwarmTls) -> Result<Option<ClientTlsConfig>> {
    let Some(ca) = tls.ca.as_ref().or(tls.cert.as_ref()) else {
        return Ok(None);
    };
    provider();
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("CA", ca)?));
    Endpoint::from_static("https://127.0.0.1:1")
        .tls_config(config.clone())
        .map_err(|e| tls_error(format!("CA {}", ca.display()), e))?;
    Ok(Some(config))
}

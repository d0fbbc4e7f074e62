//! What a process brings to a driver: its credentials (the shared secret,
//! trust in the driver's certificate) and a job file checked before any
//! network is touched.

use anyhow::Context;
use deepdist_core::job::JobSpec;
use deepdist_wire::proto::auth::Secret;
use deepdist_wire::transport::{Credentials, TlsClient};

use crate::cli::DriverAddr;

/// What this process presents to the driver, from the flags.
pub fn credentials(driver: &DriverAddr) -> anyhow::Result<Credentials> {
    credentials_from(driver.secret.secret_file.as_deref(), driver.tls_ca.as_deref())
}

/// What to present to a driver: this secret and trust in this CA (TLS).
pub fn credentials_from(
    secret_file: Option<&std::path::Path>,
    tls_ca: Option<&std::path::Path>,
) -> anyhow::Result<Credentials> {
    Ok(Credentials {
        secret: load_secret(secret_file)?,
        tls: tls_ca.map(TlsClient::from_pem_file).transpose()?,
    })
}

/// The shared secret from `--secret-file` (`-`: standard input, as
/// `deepdist launch --hosts` hands it to executors over ssh), else
/// `$DEEPDIST_SECRET`, else none.
pub fn load_secret(file: Option<&std::path::Path>) -> anyhow::Result<Option<Secret>> {
    if file == Some(std::path::Path::new("-")) {
        // Standard input can be read once; the driver's rank needs it twice.
        static STDIN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let bytes = match STDIN.get() {
            Some(bytes) => bytes,
            None => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                    .context("cannot read the secret from standard input")?;
                STDIN.get_or_init(|| bytes)
            }
        };
        return Ok(Some(Secret::new(bytes, "standard input")?));
    }
    Ok(Secret::load(file)?)
}

/// Reads and checks a job file locally, so mistakes show before any network.
pub fn read_job(path: &std::path::Path) -> anyhow::Result<(String, JobSpec)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let spec = JobSpec::from_toml(&text, &path.display().to_string())?;
    Ok((text, spec))
}

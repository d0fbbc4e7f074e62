//! The rendezvous file of `deepdist launch --rendezvous PATH`: the driver's
//! rank writes the address its executors dial, on a filesystem every rank
//! sees; executors read it before every connection attempt.

use std::path::Path;

/// Why a rendezvous file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    /// Not written yet (the driver's rank has not started).
    #[error("{path} does not exist yet (the driver's rank writes it when it listens)")]
    Missing {
        /// The file.
        path: String,
    },
    /// Unreadable, or not one `host:port` line.
    #[error("cannot use {path}: {reason}")]
    Bad {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Writes `addr` to `path` atomically (a reader never sees half of it).
pub fn write(path: &Path, addr: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    deepdist_core::atomic::write_atomically(path, format!("{addr}\n").as_bytes())
}

/// The address in `path`.
pub fn read(path: &Path) -> Result<String, RendezvousError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RendezvousError::Missing { path: shown }),
        Err(e) => {
            return Err(RendezvousError::Bad {
                path: shown,
                reason: e.to_string(),
            });
        }
    };
    let addr = text.trim();
    let well_formed = !addr.is_empty()
        && !addr.contains(char::is_whitespace)
        && addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if well_formed {
        Ok(addr.to_string())
    } else {
        Err(RendezvousError::Bad {
            path: shown,
            reason: format!(
                "expected one host:port line, found {:?}",
                text.chars().take(80).collect::<String>()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_written_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/driver.addr");
        assert!(matches!(read(&path), Err(RendezvousError::Missing { .. })));
        write(&path, "node01:7077").unwrap();
        assert_eq!(read(&path).unwrap(), "node01:7077");
        write(&path, "[::1]:9").unwrap();
        assert_eq!(read(&path).unwrap(), "[::1]:9");
    }

    #[test]
    fn anything_but_one_address_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("driver.addr");
        for bad in ["", "node01", "node01:port", "a:1 b:2", ":7077"] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(read(&path), Err(RendezvousError::Bad { .. })), "{bad:?}");
        }
    }
}

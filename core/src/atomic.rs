//! Files replaced all at once: written to a temporary file beside the
//! destination, fsynced, renamed over it, and the directory fsynced, so a
//! crash at any point leaves either the old file or the new one, complete.

use std::io::Write;
use std::path::Path;

/// How the temporary files of atomic writes are named, so that those left by
/// a process killed mid-write can be found and removed ([`remove_leftovers`]).
pub const TEMP_PREFIX: &str = ".deepdist-";

/// Removes temporary files that atomic writes into `dir` left behind when
/// their process was killed; returns how many. Call it only where no other
/// process is writing.
pub fn remove_leftovers(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(TEMP_PREFIX) && name.ends_with(".tmp")
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

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
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".tmp")
        .tempfile_in(dir)?;
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

    #[test]
    fn leftovers_of_a_killed_write_are_found_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        // A write that never reaches its rename (as under a SIGKILL).
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(".tmp")
            .tempfile_in(dir.path())
            .unwrap();
        let (_, left) = tmp.keep().unwrap();
        write_atomically(&dest, b"x").unwrap();
        std::fs::write(dir.path().join(".other.tmp"), b"not ours").unwrap();
        assert_eq!(remove_leftovers(dir.path()), 1);
        assert!(!left.exists());
        assert!(dest.exists() && dir.path().join(".other.tmp").exists());
    }
}

//! The job journal: every submit, cancel and job end, appended as one JSON
//! line and synced to disk before the client hears back, so that a driver
//! that crashes loses no acknowledged job and never reuses a job id. On
//! start the driver replays it (jobs not ended are queued again, in order)
//! and rewrites it compacted, so it stays as small as the queue.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use deepdist_core::job::JobState;
use serde::{Deserialize, Serialize};

/// The journal's file name in the runs directory.
pub const FILE_NAME: &str = "jobs.journal";

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// Ids below this one are taken (written by compaction).
    NextId(u64),
    /// A job was accepted, with its job file's text.
    Submit {
        /// Its id.
        id: u64,
        /// The job file, as TOML.
        spec: String,
    },
    /// A cancel was accepted.
    Cancel(u64),
    /// A job ended.
    End {
        /// Its id.
        id: u64,
        /// How.
        state: JobState,
    },
}

/// A job the journal says was accepted and has not ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Its id.
    pub id: u64,
    /// Its job file, as TOML.
    pub spec: String,
    /// Whether a cancel was accepted for it.
    pub cancelled: bool,
}

/// What the journal held.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replayed {
    /// The next free job id.
    pub next_id: u64,
    /// Jobs accepted and not ended, oldest first.
    pub pending: Vec<Pending>,
}

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing it failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The journal.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another driver holds the journal (the same runs directory).
    #[error("{}: another driver is using this runs directory; give each driver its own --runs-dir", path.display())]
    InUse {
        /// The journal.
        path: PathBuf,
    },
    /// A line before the last does not parse: not a torn write, so refused
    /// rather than guessed at.
    #[error("{}: line {line} is not a journal entry ({message}); move the file away to start without it", path.display())]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The parser's message.
        message: String,
    },
}

/// An open journal, appended to.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Held (locked) while this driver runs: one driver per journal.
    _lock: File,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, replays it and rewrites it
    /// compacted.
    pub fn open(path: &Path) -> Result<(Self, Replayed), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let lock_path = path.with_extension("journal.lock");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let lock = File::create(&lock_path).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::InUse {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let replayed = replay(&text, path)?;
        let mut compacted = Vec::new();
        for entry in compact(&replayed) {
            compacted.extend(line(&entry));
        }
        deepdist_core::atomic::write_atomically(path, &compacted).map_err(io)?;
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(io)?;
        Ok((
            Self {
                file,
                path: path.to_path_buf(),
                _lock: lock,
            },
            replayed,
        ))
    }

    /// Appends `entry` and syncs it to disk.
    pub fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&line(entry)).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

fn line(entry: &Entry) -> Vec<u8> {
    // Serialising these plain types cannot fail.
    let mut bytes = serde_json::to_vec(entry).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The entries that say the same as `replayed`.
fn compact(replayed: &Replayed) -> Vec<Entry> {
    let mut entries = vec![Entry::NextId(replayed.next_id)];
    for p in &replayed.pending {
        entries.push(Entry::Submit {
            id: p.id,
            spec: p.spec.clone(),
        });
        if p.cancelled {
            entries.push(Entry::Cancel(p.id));
        }
    }
    entries
}

fn replay(text: &str, path: &Path) -> Result<Replayed, JournalError> {
    let mut out = Replayed {
        next_id: 1,
        pending: Vec::new(),
    };
    let lines: Vec<&str> = text.lines().collect();
    let torn_tail = !text.is_empty() && !text.ends_with('\n');
    for (i, text_line) in lines.iter().enumerate() {
        let entry: Entry = match serde_json::from_str(text_line) {
            Ok(entry) => entry,
            // A crash in the middle of an append leaves a partial last line,
            // never acknowledged: dropped.
            Err(_) if torn_tail && i + 1 == lines.len() => {
                tracing::warn!(path = %path.display(), "the journal's last line was cut short by a crash: dropped");
                break;
            }
            Err(e) => {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                });
            }
        };
        match entry {
            Entry::NextId(id) => out.next_id = out.next_id.max(id),
            Entry::Submit { id, spec } => {
                out.next_id = out.next_id.max(id + 1);
                out.pending.push(Pending {
                    id,
                    spec,
                    cancelled: false,
                });
            }
            Entry::Cancel(id) => {
                if let Some(p) = out.pending.iter_mut().find(|p| p.id == id) {
                    p.cancelled = true;
                }
            }
            Entry::End { id, .. } => out.pending.retain(|p| p.id != id),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(id: u64) -> Entry {
        Entry::Submit {
            id,
            spec: format!("name = \"j{id}\""),
        }
    }

    #[test]
    fn a_reopened_journal_has_the_jobs_not_ended_and_the_next_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut journal, replayed) = Journal::open(&path).unwrap();
        assert_eq!(replayed.next_id, 1);
        for e in [
            submit(1),
            submit(2),
            submit(3),
            Entry::Cancel(3),
            Entry::End {
                id: 1,
                state: JobState::Done,
            },
        ] {
            journal.append(&e).unwrap();
        }
        drop(journal);
        let (_, replayed) = Journal::open(&path).unwrap();
        assert_eq!(replayed.next_id, 4);
        let pending: Vec<(u64, bool)> = replayed.pending.iter().map(|p| (p.id, p.cancelled)).collect();
        assert_eq!(pending, [(2, false), (3, true)]);
        // Compacted, and the same again when reopened.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        let (_, again) = Journal::open(&path).unwrap();
        assert_eq!(again, replayed);
    }

    #[test]
    fn one_driver_per_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let first = Journal::open(&path).unwrap();
        let err = Journal::open(&path).unwrap_err();
        assert!(matches!(err, JournalError::InUse { .. }), "{err}");
        drop(first);
        assert!(Journal::open(&path).is_ok(), "free again once the first is gone");
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_corrupt_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut good = line(&submit(1));
        good.extend(b"{\"submit\":{\"id\":2,\"sp");
        std::fs::write(&path, &good).unwrap();
        let (_, replayed) = Journal::open(&path).unwrap();
        assert_eq!(replayed.pending.len(), 1);
        assert_eq!(replayed.next_id, 2);

        let mut bad = b"garbage\n".to_vec();
        bad.extend(line(&submit(1)));
        std::fs::write(&path, &bad).unwrap();
        let err = Journal::open(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bad,
            "a refused journal is left as it was"
        );
    }
}

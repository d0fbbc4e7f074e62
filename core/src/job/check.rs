//! The errors of one job's checks, naming where the job came from, the
//! key, the value and what is allowed.

use super::JobError;

/// Makes the errors of one job's checks, naming where the job came from.
pub(crate) struct Check<'a> {
    origin: &'a str,
}

impl<'a> Check<'a> {
    /// Checks of the job from `origin`.
    pub(crate) fn new(origin: &'a str) -> Self {
        Self { origin }
    }

    /// `key` holds `value`, which is not `allowed`.
    pub(crate) fn invalid(&self, key: &str, value: String, allowed: &str) -> JobError {
        JobError::Invalid {
            origin: self.origin.to_string(),
            key: key.to_string(),
            value,
            allowed: allowed.to_string(),
        }
    }

    /// `key`'s value `v` must be within `lo..=hi`.
    pub(crate) fn in_range(&self, key: &str, v: u64, lo: u64, hi: u64) -> Result<(), JobError> {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(self.invalid(key, v.to_string(), &format!("must be between {lo} and {hi}")))
        }
    }
}

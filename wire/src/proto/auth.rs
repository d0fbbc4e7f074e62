//! Shared-secret authentication in the handshake: a mutual HMAC-SHA256
//! challenge-response, so that neither side ever sends the secret and each
//! proves it holds it.
//!
//! After the connecting side's `Hello` the driver sends [`Handshake::Challenge`]
//! with a fresh nonce; the peer answers with its own nonce and
//! `HMAC(secret, "deepdist client" ‖ driver nonce ‖ peer nonce)`; the driver
//! checks it and proves itself with `HMAC(secret, "deepdist driver" ‖ peer
//! nonce ‖ driver nonce)` before `Welcome`. The labels keep one side's proof
//! from being replayed as the other's; the nonces keep old proofs from being
//! replayed at all. Every frame of the exchange is small: the reader's frame
//! cap stays at [`HANDSHAKE_MAX_FRAME`] until the peer is authenticated.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Handshake, ProtoError, Wire};

/// Random bytes each side contributes to a handshake.
pub type Nonce = [u8; 32];

/// The environment variable holding a shared secret, when no file is given.
pub const SECRET_ENV: &str = "DEEPDIST_SECRET";

/// Shortest secret accepted: 16 bytes (128 bits) of whatever the user chose.
const MIN_SECRET: usize = 16;

const CLIENT_LABEL: &[u8] = b"deepdist client";
const DRIVER_LABEL: &[u8] = b"deepdist driver";

/// Why a secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The secret is too short to be worth anything.
    #[error("the shared secret from {origin} has {len} bytes; use at least {MIN_SECRET} (e.g. `openssl rand -hex 32`)")]
    TooShort {
        /// Where it came from.
        origin: String,
        /// Its length.
        len: usize,
    },
}

/// A shared secret that driver, executors and clients all hold.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from raw bytes (surrounding whitespace, such as the newline
    /// an editor leaves, is not part of it); `origin` names it in errors.
    pub fn new(bytes: &[u8], origin: &str) -> Result<Self, SecretError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET {
            return Err(SecretError::TooShort {
                origin: origin.to_string(),
                len: trimmed.len(),
            });
        }
        Ok(Self(trimmed.to_vec()))
    }

    /// The secret in `path`.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            // Group-readable is a deliberate share (a Kubernetes Secret mounted
            // for the pod's fsGroup); readable by everyone is a leak.
            if meta.permissions().mode() & 0o007 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the secret file is readable by every user: chmod 600 it (640 to share it with its group)"
                );
            }
        }
        Self::new(&bytes, &path.display().to_string())
    }

    /// The secret from `file` if given, else from [`SECRET_ENV`] if set,
    /// else none (authentication off).
    pub fn load(file: Option<&Path>) -> Result<Option<Self>, SecretError> {
        match file {
            Some(path) => Self::from_file(path).map(Some),
            None => match std::env::var_os(SECRET_ENV) {
                Some(value) => Self::new(value.as_encoded_bytes(), SECRET_ENV).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Whether `candidate` is this secret (as trimmed when read), compared
    /// in constant time (HMAC of a fixed label under each, then a verify).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let label = b"deepdist bearer token";
        let Ok(mut theirs) = <Hmac<Sha256> as Mac>::new_from_slice(candidate) else {
            return false;
        };
        theirs.update(label);
        let mut ours = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        ours.update(label);
        ours.verify_slice(&theirs.finalize().into_bytes()).is_ok()
    }

    fn mac(&self, label: &[u8], first: &Nonce, second: &Nonce) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(label);
        mac.update(first);
        mac.update(second);
        mac
    }

    fn prove(&self, label: &[u8], first: &Nonce, second: &Nonce) -> Vec<u8> {
        self.mac(label, first, second).finalize().into_bytes().to_vec()
    }

    /// Constant-time check of a proof.
    fn verify(&self, label: &[u8], first: &Nonce, second: &Nonce, proof: &[u8]) -> bool {
        self.mac(label, first, second).verify_slice(proof).is_ok()
    }
}

/// A fresh random nonce from the operating system.
pub fn nonce() -> Result<Nonce, ProtoError> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| ProtoError::Io(std::io::Error::other(e.to_string())))?;
    Ok(n)
}

/// Driver side: the challenge to send, remembering its nonce.
pub struct DriverChallenge {
    nonce: Nonce,
}

impl DriverChallenge {
    /// A challenge with a fresh nonce.
    pub fn new() -> Result<Self, ProtoError> {
        Ok(Self { nonce: nonce()? })
    }

    /// The `Challenge` message.
    pub fn message(&self) -> Handshake {
        Handshake::Challenge { nonce: self.nonce }
    }

    /// Checks the peer's `Answer`; on success returns the driver's own proof
    /// to send back.
    pub fn check(&self, secret: &Secret, answer: &Handshake) -> Result<Handshake, ProtoError> {
        let Handshake::Answer { nonce, proof } = answer else {
            return Err(ProtoError::Unexpected {
                expected: "Answer",
                got: answer.kind(),
            });
        };
        if !secret.verify(CLIENT_LABEL, &self.nonce, nonce, proof) {
            return Err(ProtoError::Rejected(
                "authentication failed: the peer does not hold this driver's shared secret".into(),
            ));
        }
        Ok(Handshake::Proof {
            proof: secret.prove(DRIVER_LABEL, nonce, &self.nonce),
        })
    }
}

/// Connecting side: answers a challenge and later checks the driver's proof.
pub struct PeerAnswer {
    driver_nonce: Nonce,
    nonce: Nonce,
}

impl PeerAnswer {
    /// The answer to a driver's `Challenge` nonce, with a fresh nonce of ours.
    pub fn new(driver_nonce: Nonce) -> Result<Self, ProtoError> {
        Ok(Self {
            driver_nonce,
            nonce: nonce()?,
        })
    }

    /// The `Answer` message.
    pub fn message(&self, secret: &Secret) -> Handshake {
        Handshake::Answer {
            nonce: self.nonce,
            proof: secret.prove(CLIENT_LABEL, &self.driver_nonce, &self.nonce),
        }
    }

    /// Checks the driver's `Proof`.
    pub fn check(&self, secret: &Secret, proof: &Handshake) -> Result<(), ProtoError> {
        match proof {
            Handshake::Proof { proof } if secret.verify(DRIVER_LABEL, &self.nonce, &self.driver_nonce, proof) => Ok(()),
            Handshake::Proof { .. } => Err(ProtoError::Rejected(
                "the driver failed to prove the shared secret: it holds a different one".into(),
            )),
            Handshake::Reject { reason } => Err(ProtoError::Rejected(reason.clone())),
            other => Err(ProtoError::Unexpected {
                expected: "Proof",
                got: other.kind(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes(), "test").unwrap()
    }

    #[test]
    fn matching_secrets_authenticate_both_ways() {
        let s = secret("correct horse battery staple");
        let challenge = DriverChallenge::new().unwrap();
        let Handshake::Challenge { nonce } = challenge.message() else {
            panic!()
        };
        let answer = PeerAnswer::new(nonce).unwrap();
        let proof = challenge.check(&s, &answer.message(&s)).unwrap();
        answer.check(&s, &proof).unwrap();
    }

    #[test]
    fn a_wrong_secret_fails_on_either_side() {
        let (driver, peer) = (secret("the driver's secret!"), secret("someone else's secret"));
        let challenge = DriverChallenge::new().unwrap();
        let Handshake::Challenge { nonce } = challenge.message() else {
            panic!()
        };
        let answer = PeerAnswer::new(nonce).unwrap();
        let err = challenge.check(&driver, &answer.message(&peer)).unwrap_err();
        assert!(err.to_string().contains("authentication failed"), "{err}");
        // A driver with the wrong secret cannot produce a proof the peer accepts.
        let forged = challenge.check(&peer, &answer.message(&peer)).unwrap();
        let err = answer.check(&driver, &forged).unwrap_err();
        assert!(err.to_string().contains("different"), "{err}");
    }

    #[test]
    fn a_proof_does_not_replay_across_roles_or_handshakes() {
        let s = secret("correct horse battery staple");
        let challenge = DriverChallenge::new().unwrap();
        let Handshake::Challenge { nonce } = challenge.message() else {
            panic!()
        };
        let answer = PeerAnswer::new(nonce).unwrap();
        let Handshake::Answer { proof, .. } = answer.message(&s) else {
            panic!()
        };
        // The peer's own proof, sent back as the driver's, is refused.
        assert!(answer.check(&s, &Handshake::Proof { proof: proof.clone() }).is_err());
        // An answer recorded for one challenge fails against the next.
        let next = DriverChallenge::new().unwrap();
        assert!(next.check(&s, &answer.message(&s)).is_err());
    }

    #[test]
    fn secrets_are_trimmed_checked_for_length_and_never_printed() {
        assert_eq!(secret("0123456789abcdef\n"), secret("0123456789abcdef"));
        let err = Secret::new(b"short\n", "secret.txt").unwrap_err().to_string();
        assert!(err.contains("secret.txt") && err.contains("5 bytes"), "{err}");
        assert_eq!(format!("{:?}", secret("0123456789abcdef")), "Secret(..)");
        let missing = Secret::from_file(Path::new("/nonexistent/secret")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/secret"));
    }
}

//! Game modules: from signed files to compiled, versioned game code.
//!
//! `trust` verifies signatures (the only door), `loader` reads and compiles,
//! `slots` keeps the last versions of each game, `games` is the registry of
//! what is active, `store` persists accepted versions, `audit` records every
//! decision, and `watcher` notices files dropped into the modules folder.

pub mod audit;
pub mod cache;
pub mod componentize;
pub mod games;
pub mod loader;
pub mod slots;
pub mod store;
pub mod trust;
pub mod version_health;
pub mod watcher;

pub use games::{GameModule, Games};
pub use trust::{TrustStore, VerifiedModule};

use crate::sandbox::CompileError;
use respawn_signing::VerifyError;

/// Whether `name` can name a game: 1 to 32 of `a-z 0-9 - _`, starting with
/// a letter. Keeps names safe in file paths, URLs and log lines.
pub fn is_valid_game_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Why a module was not accepted. Each has a stable [`Rejection::code`],
/// used in logs, metrics and the audit log.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    /// The file is over the size limit.
    #[error("{0} bytes is over the {max}-byte module limit", max = loader::MAX_MODULE_BYTES)]
    TooLarge(u64),
    /// The signature did not verify.
    #[error("{0}")]
    Signature(VerifyError),
    /// Signed, but without a Respawn manifest.
    #[error("no respawn-manifest section (sign it with `respawn sign`)")]
    NoManifest,
    /// The manifest is invalid.
    #[error("invalid manifest: {0}")]
    BadManifest(String),
    /// Verified, but not runnable game code.
    #[error("{0}")]
    Compile(CompileError),
    /// An update whose version is not above the active one.
    #[error(
        "version {version} is not newer than the active {active}; older versions are reached only by `respawn rollback`"
    )]
    Downgrade {
        /// The offered version.
        version: semver::Version,
        /// The active version.
        active: semver::Version,
    },
    /// Signed by a trusted key that `[trust.scopes]` does not allow for
    /// this game.
    #[error("the key {signer} may not sign `{game}` (trust.scopes)")]
    SignerNotAllowed {
        /// The signing key's fingerprint.
        signer: String,
        /// The game the manifest names.
        game: String,
    },
    /// The same version as a loaded one, with different bytes.
    #[error("version {version} is already loaded with different bytes (digest {existing}); bump the version")]
    VersionConflict {
        /// The offered version.
        version: semver::Version,
        /// The digest already loaded under that version.
        existing: String,
    },
}

impl Rejection {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Read(_) => "read_failed",
            Rejection::TooLarge(_) => "too_large",
            Rejection::Signature(e) => e.code(),
            Rejection::NoManifest => "no_manifest",
            Rejection::BadManifest(_) => "bad_manifest",
            Rejection::Compile(e) => e.code(),
            Rejection::Downgrade { .. } => "downgrade",
            Rejection::VersionConflict { .. } => "version_conflict",
            Rejection::SignerNotAllowed { .. } => "signer_not_allowed",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn game_names() {
        for ok in ["chat", "tic-tac-toe", "g2", "a_b"] {
            assert!(super::is_valid_game_name(ok), "{ok}");
        }
        for bad in ["", "Chat", "2d", "../x", "a b", &"x".repeat(33)] {
            assert!(!super::is_valid_game_name(bad), "{bad}");
        }
    }
}

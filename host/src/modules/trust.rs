//! Which keys may sign game code, and the one door through which bytes
//! become a [`VerifiedModule`].

use super::Rejection;
use respawn_signing::{Manifest, PublicKey};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// Module bytes whose signature checked out against a trusted key (or that
/// were admitted by the explicit development flag), with their manifest.
/// The only way to build one is [`TrustStore::verify`], so code that takes
/// a `VerifiedModule` cannot be handed unverified bytes.
#[derive(Clone)]
pub struct VerifiedModule {
    bytes: Arc<[u8]>,
    manifest: Manifest,
    digest: String,
    signer: Option<String>,
}

impl VerifiedModule {
    /// The signed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The signed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// SHA-256 of the bytes, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// The signing key's fingerprint; `None` for an unsigned development
    /// module.
    pub fn signer(&self) -> Option<&str> {
        self.signer.as_deref()
    }
}

/// The trusted public keys, and whether unsigned code is allowed (a
/// development flag that warns on every load).
pub struct TrustStore {
    keys: Vec<PublicKey>,
    allow_unsigned: bool,
    /// Keys (by fingerprint) that may sign only some games.
    scopes: std::collections::BTreeMap<String, Vec<String>>,
}

/// A trust file or key that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("trusted key {origin}: {reason}")]
pub struct TrustError {
    /// Which file or config entry.
    pub origin: String,
    /// What is wrong with it.
    pub reason: String,
}

impl TrustStore {
    /// Keys from config lines and from every `*.pub` file of `dir` (which
    /// may be missing). A bad key is an error: silently trusting fewer keys
    /// than configured would reject every module with a misleading reason.
    pub fn load(lines: &[String], dir: Option<&Path>, allow_unsigned: bool) -> Result<Self, TrustError> {
        let mut keys = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            keys.push(PublicKey::parse(line.as_bytes()).map_err(|e| TrustError {
                origin: format!("trust.keys[{i}]"),
                reason: e.to_string(),
            })?);
        }
        if let Some(dir) = dir.filter(|d| d.is_dir()) {
            keys.extend(read_key_files(&[dir.to_owned()])?);
        }
        Ok(Self {
            keys,
            allow_unsigned,
            scopes: Default::default(),
        })
    }

    /// Binds keys to games: a key listed here (by fingerprint, as `respawn
    /// status` shows it) may sign only the games listed with it; keys not
    /// listed may sign any game.
    pub fn with_scopes(mut self, scopes: std::collections::BTreeMap<String, Vec<String>>) -> Self {
        for fingerprint in scopes.keys() {
            if !self.keys.iter().any(|k| k.fingerprint() == *fingerprint) {
                tracing::warn!(key = %fingerprint, "trust.scopes names a key that is not trusted");
            }
        }
        self.scopes = scopes;
        self
    }

    /// Fingerprints of the trusted keys.
    pub fn fingerprints(&self) -> std::collections::BTreeSet<String> {
        self.keys.iter().map(PublicKey::fingerprint).collect()
    }

    /// A store of exactly these keys, unsigned code refused (what
    /// `respawn verify` checks against).
    pub fn from_keys(keys: Vec<PublicKey>) -> Self {
        Self {
            keys,
            allow_unsigned: false,
            scopes: Default::default(),
        }
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Checks the signature and reads the manifest. Nothing is compiled
    /// or instantiated before this succeeds.
    pub fn verify(&self, bytes: Vec<u8>, origin: &Path) -> Result<VerifiedModule, Rejection> {
        let signer = match respawn_signing::verify(&bytes, &self.keys) {
            Ok(key) => Some(key.fingerprint()),
            // Admitted, and warned about by the deployer on every load.
            Err(respawn_signing::VerifyError::Unsigned) if self.allow_unsigned => None,
            Err(e) => return Err(Rejection::Signature(e)),
        };
        let digest = crate::util::hex(&Sha256::digest(&bytes));
        let manifest = match respawn_signing::read_manifest(&bytes) {
            Ok(Some(m)) => m,
            Ok(None) if signer.is_none() => dev_manifest(origin, &digest)?,
            Ok(None) => return Err(Rejection::NoManifest),
            Err(e) => return Err(Rejection::BadManifest(e.to_string())),
        };
        if let Some(signer) = &signer
            && let Some(games) = self.scopes.get(signer)
            && !games.contains(&manifest.name)
        {
            return Err(Rejection::SignerNotAllowed {
                signer: signer.clone(),
                game: manifest.name.clone(),
            });
        }
        Ok(VerifiedModule {
            bytes: bytes.into(),
            manifest,
            digest,
            signer,
        })
    }
}

/// Public keys from files, and from every `*.pub` file of the folders among
/// `paths`, in name order.
pub fn read_key_files(paths: &[std::path::PathBuf]) -> Result<Vec<PublicKey>, TrustError> {
    let fail = |origin: &Path, reason: String| TrustError {
        origin: origin.display().to_string(),
        reason,
    };
    let mut keys = Vec::new();
    for path in paths {
        let mut files = if path.is_dir() {
            std::fs::read_dir(path)
                .map_err(|e| fail(path, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect()
        } else {
            vec![path.clone()]
        };
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| fail(&file, e.to_string()))?;
            keys.push(PublicKey::parse(&bytes).map_err(|e| fail(&file, e.to_string()))?);
        }
    }
    Ok(keys)
}

/// An unsigned development module without a manifest is named after its
/// file and versioned `0.0.0-dev`.
fn dev_manifest(origin: &Path, digest: &str) -> Result<Manifest, Rejection> {
    let name = origin
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| super::is_valid_game_name(s))
        .ok_or(Rejection::NoManifest)?;
    Ok(Manifest {
        name: name.to_owned(),
        version: semver::Version::parse(&format!(
            "0.0.0-dev.{}",
            u32::from_str_radix(&digest[..7], 16).unwrap_or(0)
        ))
        .map_err(|e| Rejection::BadManifest(e.to_string()))?,
        author: "unsigned".into(),
        built_at: 0,
        notes: None,
    })
}

//! Respawn's manifest: what a signed module says it is. The host trusts
//! these fields (never a file name) because the signature covers them.

use crate::sections::{self, FormatError, write_canonical, write_custom};
use serde::{Deserialize, Serialize};

/// Name of the custom section holding the manifest (JSON).
pub const MANIFEST_SECTION: &str = "respawn-manifest";

/// A game build's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The game's name: 1 to 32 of `a-z 0-9 - _`, starting with a letter.
    pub name: String,
    /// Semantic version; updates must increase it.
    pub version: semver::Version,
    /// Who built it.
    pub author: String,
    /// When it was built, in seconds since the Unix epoch.
    pub built_at: u64,
    /// Free text, e.g. what the build fixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// A manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The binary itself is broken.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// More than one manifest section.
    #[error("more than one {MANIFEST_SECTION} section")]
    Duplicate,
    /// The section is not a valid manifest.
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

impl Manifest {
    /// Checks the fields a host relies on.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let n = &self.name;
        let ok = (1..=32).contains(&n.len())
            && n.as_bytes()[0].is_ascii_lowercase()
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(ManifestError::Invalid(format!(
                "game name `{n}` must be 1 to 32 of a-z 0-9 - _, starting with a letter"
            )));
        }
        if self.author.len() > 256 || self.notes.as_ref().is_some_and(|n| n.len() > 4096) {
            return Err(ManifestError::Invalid("author or notes too long".into()));
        }
        Ok(())
    }
}

/// Returns the module with `manifest` as its (only) manifest section, at the
/// end. Any signature becomes invalid: sign afterwards.
pub fn embed_manifest(module: &[u8], manifest: &Manifest) -> Result<Vec<u8>, ManifestError> {
    manifest.validate()?;
    let (kind, sections) = sections::parse(module)?;
    let mut out = sections::header(kind).to_vec();
    for s in sections.iter().filter(|s| !s.is_custom(MANIFEST_SECTION)) {
        write_canonical(&mut out, s);
    }
    let json = serde_json::to_vec(manifest).map_err(|e| ManifestError::Invalid(e.to_string()))?;
    write_custom(&mut out, MANIFEST_SECTION, &json);
    Ok(out)
}

/// The module's manifest, if it has one.
pub fn read_manifest(module: &[u8]) -> Result<Option<Manifest>, ManifestError> {
    let (_, sections) = sections::parse(module)?;
    let mut found = sections.iter().filter_map(|s| match s.custom() {
        Some((MANIFEST_SECTION, data)) => Some(data),
        _ => None,
    });
    let Some(data) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(ManifestError::Duplicate);
    }
    let manifest: Manifest = serde_json::from_slice(data).map_err(|e| ManifestError::Invalid(e.to_string()))?;
    manifest.validate()?;
    Ok(Some(manifest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sections::{Kind, header};

    fn manifest() -> Manifest {
        Manifest {
            name: "chat".into(),
            version: "1.2.3".parse().unwrap(),
            author: "studio".into(),
            built_at: 1_700_000_000,
            notes: Some("fix".into()),
        }
    }

    #[test]
    fn embeds_replaces_and_reads_back() {
        let m = header(Kind::Module).to_vec();
        assert_eq!(read_manifest(&m).unwrap(), None);
        let once = embed_manifest(&m, &manifest()).unwrap();
        assert_eq!(read_manifest(&once).unwrap(), Some(manifest()));
        let mut v2 = manifest();
        v2.version = "2.0.0".parse().unwrap();
        let twice = embed_manifest(&once, &v2).unwrap();
        assert_eq!(read_manifest(&twice).unwrap(), Some(v2));
    }

    #[test]
    fn bad_manifests_are_refused() {
        let m = header(Kind::Module).to_vec();
        let mut bad = manifest();
        bad.name = "Bad Name".into();
        assert!(matches!(embed_manifest(&m, &bad), Err(ManifestError::Invalid(_))));
        let mut raw = m.clone();
        write_custom(&mut raw, MANIFEST_SECTION, b"{\"name\":1}");
        assert!(matches!(read_manifest(&raw), Err(ManifestError::Invalid(_))));
        let ok = embed_manifest(&m, &manifest()).unwrap();
        let mut dup = ok.clone();
        write_custom(&mut dup, MANIFEST_SECTION, b"{}");
        assert_eq!(read_manifest(&dup), Err(ManifestError::Duplicate));
    }
}

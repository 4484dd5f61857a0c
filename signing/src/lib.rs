//! Signed WebAssembly for Respawn.
//!
//! - [`sign`] and [`verify`] implement the embedded signatures of the
//!   WebAssembly tool-conventions `Signatures.md` (the format `wasmsign2`
//!   implements): a `signature` custom section, first in the module, holding
//!   Ed25519 signatures over SHA-256 of everything after it. A module we
//!   sign verifies with wasmsign2 and the other way round.
//! - [`Manifest`] is Respawn's description of a game build (name, version,
//!   author, build time, notes), embedded as a custom section before
//!   signing, so the signature covers it.
//! - Keys: [`SecretKey`] files use wasmsign2's key pair encoding;
//!   [`PublicKey`] reads wasmsign2 public keys and OpenSSH `ssh-ed25519`
//!   lines.

#![warn(missing_docs)]

mod keys;
mod manifest;
mod sections;
mod signature;

pub use keys::{KeyError, PublicKey, SecretKey};
pub use manifest::{MANIFEST_SECTION, Manifest, ManifestError, embed_manifest, read_manifest};
pub use sections::{FormatError, Kind, kind};
pub use signature::{SIGNATURE_SECTION, SignatureInfo, VerifyError, sign, signature_info, verify};

//! Embedded signatures (tool-conventions `Signatures.md`, as wasmsign2
//! encodes them).
//!
//! The `signature` custom section comes first. Its payload is
//! `spec_version, content_type, hash_fn` (one byte each, all `0x01`), then a
//! count of signed hash sets, each length-prefixed: a count of 32-byte
//! SHA-256 hashes, the hashes, a count of signatures, and each signature
//! length-prefixed as `key_id` (length-prefixed), algorithm (`0x01`
//! Ed25519), signature (length-prefixed). A signature is over
//! `"wasmsig" ‖ 01 ‖ 01 ‖ 01 ‖ hashes`. The module verifies when a trusted
//! key signed a hash set containing the SHA-256 of every byte after the
//! signature section.

use crate::keys::{PublicKey, SecretKey};
use crate::sections::{self, FormatError, Section, read_u32, write_canonical, write_custom, write_slice, write_u32};
use sha2::{Digest, Sha256};

/// Name of the custom section holding signatures.
pub const SIGNATURE_SECTION: &str = "signature";
const DOMAIN: &[u8] = b"wasmsig";
const SPEC_VERSION: u8 = 0x01;
const CONTENT_TYPE: u8 = 0x01;
const HASH_SHA256: u8 = 0x01;
const ALG_ED25519: u8 = 0x01;
const MAX_HASHES: usize = 64;
const MAX_SIGNATURES: usize = 256;

/// Why a module did not verify. Each has a stable [`VerifyError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a WebAssembly binary, or its sections are broken (truncated...).
    #[error("not a well-formed WebAssembly binary: {0}")]
    Format(#[from] FormatError),
    /// No `signature` section first in the module.
    #[error("the module is not signed")]
    Unsigned,
    /// The signature section cannot be decoded or uses an unknown scheme.
    #[error("the signature section is malformed: {0}")]
    Malformed(String),
    /// No trusted key made any of the signatures.
    #[error("not signed by a trusted key")]
    UntrustedSigner,
    /// A trusted key signed it, but the module's bytes changed since.
    #[error("signed by a trusted key, but the module was modified after signing")]
    Tampered,
}

impl VerifyError {
    /// Stable code for logs, metrics and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Format(FormatError::Truncated(_)) => "truncated",
            VerifyError::Format(_) => "not_wasm",
            VerifyError::Unsigned => "unsigned",
            VerifyError::Malformed(_) => "malformed_signature",
            VerifyError::UntrustedSigner => "untrusted_signer",
            VerifyError::Tampered => "tampered",
        }
    }
}

struct SignatureRecord {
    key_id: Vec<u8>,
    alg: u8,
    signature: Vec<u8>,
}

struct SignedHashes {
    hashes: Vec<[u8; 32]>,
    signatures: Vec<SignatureRecord>,
}

/// What `respawn inspect` shows about a signature section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureInfo {
    /// Hash sets and how many signatures each carries.
    pub hash_sets: Vec<(usize, usize)>,
    /// Key ids present (often none: wasmsign2 and Respawn leave them empty).
    pub key_ids: Vec<Vec<u8>>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, VerifyError> {
        let b = *self.bytes.get(self.pos).ok_or_else(|| malformed("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }
    fn count(&mut self) -> Result<usize, VerifyError> {
        let (v, pos) = read_u32(self.bytes, self.pos).map_err(|e| malformed(&e.to_string()))?;
        self.pos = pos;
        Ok(v as usize)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], VerifyError> {
        let end = self.pos.checked_add(n).ok_or_else(|| malformed("length overflow"))?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| malformed("unexpected end"))?;
        self.pos = end;
        Ok(out)
    }
    fn slice(&mut self) -> Result<&'a [u8], VerifyError> {
        let n = self.count()?;
        self.take(n)
    }
    fn done(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

fn malformed(why: &str) -> VerifyError {
    VerifyError::Malformed(why.to_owned())
}

fn decode(payload: &[u8]) -> Result<Vec<SignedHashes>, VerifyError> {
    let mut r = Reader { bytes: payload, pos: 0 };
    if (r.byte()?, r.byte()?, r.byte()?) != (SPEC_VERSION, CONTENT_TYPE, HASH_SHA256) {
        return Err(malformed("unsupported version, content type or hash function"));
    }
    let sets = r.count()?;
    if sets > MAX_HASHES {
        return Err(malformed("too many hash sets"));
    }
    let mut out = Vec::with_capacity(sets);
    for _ in 0..sets {
        let mut s = Reader {
            bytes: r.slice()?,
            pos: 0,
        };
        let n = s.count()?;
        if n > MAX_HASHES {
            return Err(malformed("too many hashes"));
        }
        let mut hashes = Vec::with_capacity(n);
        for _ in 0..n {
            let h: [u8; 32] = s.take(32)?.try_into().map_err(|_| malformed("short hash"))?;
            hashes.push(h);
        }
        let m = s.count()?;
        if m > MAX_SIGNATURES {
            return Err(malformed("too many signatures"));
        }
        let mut signatures = Vec::with_capacity(m);
        for _ in 0..m {
            let mut g = Reader {
                bytes: s.slice()?,
                pos: 0,
            };
            let key_id = g.slice()?.to_vec();
            let alg = g.byte()?;
            let signature = g.slice()?.to_vec();
            signatures.push(SignatureRecord { key_id, alg, signature });
        }
        out.push(SignedHashes { hashes, signatures });
    }
    if !r.done() {
        return Err(malformed("trailing bytes"));
    }
    Ok(out)
}

fn encode(sets: &[SignedHashes]) -> Vec<u8> {
    let mut out = vec![SPEC_VERSION, CONTENT_TYPE, HASH_SHA256];
    write_u32(&mut out, sets.len() as u32);
    for set in sets {
        let mut s = Vec::new();
        write_u32(&mut s, set.hashes.len() as u32);
        for h in &set.hashes {
            s.extend_from_slice(h);
        }
        write_u32(&mut s, set.signatures.len() as u32);
        for sig in &set.signatures {
            let mut g = Vec::new();
            write_slice(&mut g, &sig.key_id);
            g.push(sig.alg);
            write_slice(&mut g, &sig.signature);
            write_slice(&mut s, &g);
        }
        write_slice(&mut out, &s);
    }
    out
}

fn message(hashes: &[[u8; 32]]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(DOMAIN.len() + 3 + 32 * hashes.len());
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(&[SPEC_VERSION, CONTENT_TYPE, HASH_SHA256]);
    for h in hashes {
        msg.extend_from_slice(h);
    }
    msg
}

/// The signature section, if it is the first section.
fn signature_section<'a>(sections: &[Section<'a>]) -> Option<&'a [u8]> {
    let first = sections.first()?;
    match first.custom() {
        Some((SIGNATURE_SECTION, data)) => Some(data),
        _ => None,
    }
}

/// Signs a module or component with `key`, replacing any existing
/// signature. Section lengths are re-encoded canonically (as wasmsign2
/// does), so the output verifies with wasmsign2 too.
pub fn sign(module: &[u8], key: &SecretKey) -> Result<Vec<u8>, FormatError> {
    let (kind, sections) = sections::parse(module)?;
    let mut body = Vec::with_capacity(module.len());
    for s in sections.iter().filter(|s| !s.is_custom(SIGNATURE_SECTION)) {
        write_canonical(&mut body, s);
    }
    let hash: [u8; 32] = Sha256::digest(&body).into();
    let signature = key.sign(&message(&[hash]));
    let payload = encode(&[SignedHashes {
        hashes: vec![hash],
        signatures: vec![SignatureRecord {
            key_id: Vec::new(),
            alg: ALG_ED25519,
            signature: signature.to_vec(),
        }],
    }]);
    let mut out = Vec::with_capacity(body.len() + payload.len() + 32);
    out.extend_from_slice(&sections::header(kind));
    write_custom(&mut out, SIGNATURE_SECTION, &payload);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Verifies that a trusted key signed the whole module; returns that key.
pub fn verify(module: &[u8], trusted: &[PublicKey]) -> Result<PublicKey, VerifyError> {
    let (_, sections) = sections::parse(module)?;
    let payload = signature_section(&sections).ok_or(VerifyError::Unsigned)?;
    let sets = decode(payload)?;
    let body_start = sections.first().map(|s| s.end).unwrap_or(module.len());
    let hash: [u8; 32] = Sha256::digest(&module[body_start..]).into();
    let mut trusted_signed_something = false;
    for key in trusted {
        for set in &sets {
            let msg = message(&set.hashes);
            let signed = set
                .signatures
                .iter()
                .any(|s| s.alg == ALG_ED25519 && key.verifies(&msg, &s.signature));
            if signed {
                if set.hashes.contains(&hash) {
                    return Ok(*key);
                }
                trusted_signed_something = true;
            }
        }
    }
    Err(if trusted_signed_something {
        VerifyError::Tampered
    } else {
        VerifyError::UntrustedSigner
    })
}

/// Describes the signature section, if any, without verifying it.
pub fn signature_info(module: &[u8]) -> Result<Option<SignatureInfo>, VerifyError> {
    let (_, sections) = sections::parse(module)?;
    let Some(payload) = signature_section(&sections) else {
        return Ok(None);
    };
    let sets = decode(payload)?;
    Ok(Some(SignatureInfo {
        hash_sets: sets.iter().map(|s| (s.hashes.len(), s.signatures.len())).collect(),
        key_ids: sets
            .iter()
            .flat_map(|s| s.signatures.iter().map(|g| g.key_id.clone()))
            .filter(|k| !k.is_empty())
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sections::{Kind, header};

    fn module() -> Vec<u8> {
        let mut m = header(Kind::Component).to_vec();
        write_custom(&mut m, "a", b"first");
        m.extend_from_slice(&[1, 3, 7, 8, 9]);
        write_custom(&mut m, "b", b"last");
        m
    }

    #[test]
    fn signed_modules_verify_and_every_flipped_byte_is_caught() {
        let key = SecretKey::generate().unwrap();
        let signed = sign(&module(), &key).unwrap();
        assert_eq!(verify(&signed, &[key.public()]), Ok(key.public()));
        for i in 0..signed.len() {
            let mut bad = signed.clone();
            bad[i] ^= 0x01;
            assert!(
                verify(&bad, &[key.public()]).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        for n in 0..signed.len() {
            assert!(
                verify(&signed[..n], &[key.public()]).is_err(),
                "truncation to {n} went unnoticed"
            );
        }
    }

    #[test]
    fn each_failure_has_its_reason() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let signed = sign(&module(), &key).unwrap();
        assert_eq!(verify(&module(), &[key.public()]), Err(VerifyError::Unsigned));
        assert_eq!(verify(&signed, &[other.public()]), Err(VerifyError::UntrustedSigner));
        assert_eq!(verify(&signed, &[]), Err(VerifyError::UntrustedSigner));
        let mut tampered = signed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x20;
        assert_eq!(verify(&tampered, &[key.public()]), Err(VerifyError::Tampered));
        assert_eq!(verify(b"garbage!", &[key.public()]).unwrap_err().code(), "not_wasm");
        assert_eq!(
            verify(&signed[..signed.len() - 2], &[key.public()]).unwrap_err().code(),
            "truncated"
        );
        assert_eq!(verify(&signed, &[other.public(), key.public()]), Ok(key.public()));
    }

    #[test]
    fn re_signing_replaces_the_signature() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        let twice = sign(&sign(&module(), &a).unwrap(), &b).unwrap();
        assert_eq!(verify(&twice, &[b.public()]), Ok(b.public()));
        assert_eq!(verify(&twice, &[a.public()]), Err(VerifyError::UntrustedSigner));
        let info = signature_info(&twice).unwrap().unwrap();
        assert_eq!(info.hash_sets, vec![(1, 1)]);
    }
}

//! Ed25519 keys in the encodings other tools use: wasmsign2's raw key
//! files and OpenSSH `ssh-ed25519` public key lines.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// wasmsign2's identifier of an Ed25519 public key.
const PK_ID: u8 = 0x01;
/// wasmsign2's identifier of an Ed25519 key pair.
const SK_ID: u8 = 0x81;
const SSH_ED25519: &str = "ssh-ed25519";

/// A key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a format we read.
    #[error("not an Ed25519 key (expected a wasmsign2 key file or an `ssh-ed25519 AAAA...` line)")]
    UnknownFormat,
    /// The right format, but the bytes are not a valid key.
    #[error("invalid Ed25519 key: {0}")]
    Invalid(String),
}

/// A signing key. Its file form is wasmsign2's: `0x81 ‖ secret ‖ public`.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Invalid(format!("no randomness: {e}")))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// Reads wasmsign2's key pair encoding (65 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let [SK_ID, rest @ ..] = bytes else {
            return Err(KeyError::UnknownFormat);
        };
        if rest.len() != 64 {
            return Err(KeyError::Invalid("a key pair file is 65 bytes".into()));
        }
        let (secret, public) = rest.split_at(32);
        let secret: [u8; 32] = secret.try_into().map_err(|_| KeyError::UnknownFormat)?;
        let key = SigningKey::from_bytes(&secret);
        if key.verifying_key().as_bytes() != public {
            return Err(KeyError::Invalid(
                "the public half does not match the secret half".into(),
            ));
        }
        Ok(Self(key))
    }

    /// wasmsign2's key pair encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(65);
        out.push(SK_ID);
        out.extend_from_slice(self.0.as_bytes());
        out.extend_from_slice(self.0.verifying_key().as_bytes());
        out
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

/// A public key that may be trusted to sign modules.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// Reads a public key: wasmsign2's binary encoding (`0x01 ‖ 32 bytes`)
    /// or an OpenSSH line (`ssh-ed25519 AAAA... [comment]`).
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyError> {
        if let [PK_ID, raw @ ..] = bytes
            && raw.len() == 32
        {
            return Self::from_raw(raw);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| KeyError::UnknownFormat)?;
        Self::from_openssh(text)
    }

    /// Reads an OpenSSH `ssh-ed25519` public key line.
    pub fn from_openssh(line: &str) -> Result<Self, KeyError> {
        let mut parts = line.split_whitespace();
        if parts.next() != Some(SSH_ED25519) {
            return Err(KeyError::UnknownFormat);
        }
        let blob = parts
            .next()
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or_else(|| KeyError::Invalid("the key is not base64".into()))?;
        // The blob is two SSH strings: the key type, then the 32-byte key.
        let (kind, rest) = ssh_string(&blob).ok_or_else(|| KeyError::Invalid("truncated key blob".into()))?;
        let (raw, rest) = ssh_string(rest).ok_or_else(|| KeyError::Invalid("truncated key blob".into()))?;
        if kind != SSH_ED25519.as_bytes() || !rest.is_empty() {
            return Err(KeyError::Invalid("the key blob is not an ssh-ed25519 key".into()));
        }
        Self::from_raw(raw)
    }

    fn from_raw(raw: &[u8]) -> Result<Self, KeyError> {
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| KeyError::Invalid("an Ed25519 key is 32 bytes".into()))?;
        VerifyingKey::from_bytes(&raw)
            .map(Self)
            .map_err(|e| KeyError::Invalid(e.to_string()))
    }

    /// wasmsign2's binary encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![PK_ID];
        out.extend_from_slice(self.0.as_bytes());
        out
    }

    /// An OpenSSH public key line.
    pub fn to_openssh(&self, comment: &str) -> String {
        let line = format!("{SSH_ED25519} {}", STANDARD.encode(self.ssh_blob()));
        if comment.is_empty() {
            line
        } else {
            format!("{line} {comment}")
        }
    }

    /// The fingerprint `ssh-keygen -l` prints: `SHA256:` and the unpadded
    /// base64 of the SHA-256 of the key blob.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(self.ssh_blob())))
    }

    fn ssh_blob(&self) -> Vec<u8> {
        let mut blob = Vec::with_capacity(51);
        for part in [SSH_ED25519.as_bytes(), self.0.as_bytes()] {
            blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
            blob.extend_from_slice(part);
        }
        blob
    }

    pub(crate) fn verifies(&self, msg: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify_strict(msg, &sig).is_ok()
    }
}

fn ssh_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let end = 4usize.checked_add(len)?;
    Some((bytes.get(4..end)?, &bytes[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `ssh-keygen -t ed25519`; the raw key was decoded
    /// independently (base64 of the blob, last 32 bytes).
    const SSH_LINE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIYtuhwNXNrPjnlFBs+uj9MPM/UiquQcy+nspNfNMhw test@respawn";
    const SSH_RAW: &str = "b218b6e87035736b3e39e5141b3eba3f4c3ccfd48aab90732fa7b2935f34c870";
    /// What `ssh-keygen -lf` printed for it.
    const SSH_FINGERPRINT: &str = "SHA256:oUfHiA8Yfk2TwPepYEo8BW1mzE2wQG1D7ZQH/b+3UJ8";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn openssh_lines_parse_and_round_trip() {
        let pk = PublicKey::from_openssh(SSH_LINE).unwrap();
        assert_eq!(hex(&pk.to_bytes()[1..]), SSH_RAW);
        assert_eq!(pk.to_openssh("test@respawn"), SSH_LINE);
        assert_eq!(PublicKey::parse(SSH_LINE.as_bytes()).unwrap(), pk);
        assert_eq!(pk.fingerprint(), SSH_FINGERPRINT);
    }

    #[test]
    fn key_files_round_trip_and_bad_keys_are_refused() {
        let sk = SecretKey::generate().unwrap();
        let again = SecretKey::from_bytes(&sk.to_bytes()).unwrap();
        assert_eq!(again.public(), sk.public());
        assert_eq!(PublicKey::parse(&sk.public().to_bytes()).unwrap(), sk.public());
        let mut mismatched = sk.to_bytes();
        mismatched[40] ^= 1;
        assert!(matches!(SecretKey::from_bytes(&mismatched), Err(KeyError::Invalid(_))));
        assert!(matches!(SecretKey::from_bytes(&[0x81; 10]), Err(KeyError::Invalid(_))));
        assert_eq!(PublicKey::parse(b"ssh-rsa AAAA"), Err(KeyError::UnknownFormat));
        assert!(matches!(
            PublicKey::parse(b"ssh-ed25519 !!!"),
            Err(KeyError::Invalid(_))
        ));
        assert!(matches!(
            PublicKey::parse(b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"),
            Err(KeyError::Invalid(_))
        ));
    }
}

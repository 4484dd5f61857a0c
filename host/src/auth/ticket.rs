//! Join tickets: JWTs signed by the studio's account service, checked
//! against the keys in `[auth]` before a player may join.
//!
//! Every key is bound to one algorithm, and a ticket's header must name
//! that algorithm: an RSA public key is never taken as an HMAC secret, and
//! `alg: none` is refused before anything else is looked at.

use crate::config::{AuthConfig, TicketKey};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::path::Path;
use std::str::FromStr;

/// Longest ticket taken, in bytes: a real one is a few hundred.
pub const MAX_TICKET_BYTES: usize = 8 * 1024;

/// Longest user id, in bytes.
pub const MAX_USER_ID: usize = 256;

/// Why a ticket was refused. Each maps to its own protocol code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not a JWT: not three base64url parts, bad JSON, missing or
    /// mistyped claims, too long.
    #[error("the ticket is malformed: {0}")]
    Malformed(String),
    /// `alg` is `none`, unknown, or not the algorithm of the key it names.
    #[error("the ticket's algorithm `{0}` is not accepted")]
    Algorithm(String),
    /// The `kid` names no configured key.
    #[error("the ticket is signed with an unknown key `{0}`")]
    UnknownKey(String),
    /// The signature does not verify (a tampered ticket, or another key).
    #[error("the ticket's signature does not verify")]
    BadSignature,
    /// Past `exp` (beyond the allowed skew).
    #[error("the ticket has expired")]
    Expired,
    /// Before `nbf` (beyond the allowed skew).
    #[error("the ticket is not valid yet")]
    NotYetValid,
    /// `iss` missing or not the configured issuer.
    #[error("the ticket is not from the expected issuer")]
    WrongIssuer,
    /// `aud` missing or not the configured audience.
    #[error("the ticket is not for this audience")]
    WrongAudience,
    /// The ticket limits its games or rooms, and this is not one of them.
    #[error("the ticket does not allow {0}")]
    NotAllowed(String),
}

/// Why the `[auth]` keys could not be loaded. Start-up stops with it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key or JWKS file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file does not hold what its entry says.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// A verified ticket: who the player is, as the account service says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `sub`.
    pub user: String,
    /// `name`, if the ticket has one: the display name the host uses.
    pub name: Option<String>,
    /// The claims `auth.claims` passes to games, as (name, JSON text).
    pub claims: Vec<(String, String)>,
    /// `exp`, in seconds since the Unix epoch.
    pub expires: u64,
}

/// One key tickets may be signed with.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The claims the host reads; the rest stay in `extra`.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    games: Option<Vec<String>>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Checks tickets against the configured keys, issuer and audience.
pub struct Verifier {
    keys: Vec<Key>,
    validation: Validation,
    passed: Vec<String>,
}

impl Verifier {
    /// Loads the keys of `[auth]` (relative paths are taken from `base`).
    pub fn load(config: &AuthConfig, base: &Path) -> Result<Self, KeyError> {
        let mut verifier = Self::without_keys(config);
        for entry in &config.keys {
            verifier.keys.push(read_key(entry, base)?);
        }
        if let Some(jwks) = &config.jwks_file {
            verifier.keys.extend(read_jwks(&base.join(jwks))?);
        }
        Ok(verifier)
    }

    /// A verifier with the checks of `config` and no key yet.
    pub fn without_keys(config: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = config.leeway_secs;
        validation.validate_nbf = true;
        validation.validate_aud = config.audience.is_some();
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &config.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Self {
            keys: Vec::new(),
            validation,
            passed: config.claims.clone(),
        }
    }

    /// Adds a key, such as the development issuer's.
    pub(crate) fn add_secret(&mut self, kid: &str, secret: &[u8]) {
        self.keys.push(Key {
            kid: Some(kid.to_owned()),
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        });
    }

    /// How many keys tickets may be signed with.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Checks `ticket` for a join of `game`/`room`.
    pub fn verify(&self, ticket: &str, game: &str, room: &str) -> Result<Verified, TicketError> {
        if ticket.len() > MAX_TICKET_BYTES {
            return Err(TicketError::Malformed(format!("longer than {MAX_TICKET_BYTES} bytes")));
        }
        let parts: Vec<&str> = ticket.split('.').collect();
        if parts.len() != 3 {
            return Err(TicketError::Malformed(format!(
                "a ticket has three parts separated by `.`, this one has {}",
                parts.len()
            )));
        }
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .map_err(|e| TicketError::Malformed(format!("the header is not base64url: {e}")))?;
        let header: Header = serde_json::from_slice(&header)
            .map_err(|e| TicketError::Malformed(format!("the header is not a JWT header: {e}")))?;
        let alg = Algorithm::from_str(&header.alg).map_err(|_| TicketError::Algorithm(header.alg.clone()))?;
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) => {
                let named: Vec<&Key> = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).collect();
                if named.is_empty() {
                    return Err(TicketError::UnknownKey(clip(kid)));
                }
                named
            }
            None => self.keys.iter().collect(),
        };
        let candidates: Vec<&Key> = candidates.into_iter().filter(|k| k.alg == alg).collect();
        if candidates.is_empty() {
            return Err(TicketError::Algorithm(header.alg));
        }
        let mut last = TicketError::BadSignature;
        for key in candidates {
            let mut validation = self.validation.clone();
            validation.algorithms = vec![key.alg];
            match jsonwebtoken::decode::<Claims>(ticket, &key.key, &validation) {
                Ok(data) => return self.accept(data.claims, game, room),
                Err(e) => {
                    last = map_error(e.kind());
                    // Another key may verify it; any other failure is
                    // the ticket's own.
                    if last != TicketError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn accept(&self, claims: Claims, game: &str, room: &str) -> Result<Verified, TicketError> {
        if claims.sub.is_empty() || claims.sub.len() > MAX_USER_ID || claims.sub.chars().any(char::is_control) {
            return Err(TicketError::Malformed(format!(
                "`sub` must be 1 to {MAX_USER_ID} bytes without control characters"
            )));
        }
        if let Some(games) = &claims.games
            && !games.iter().any(|g| g == game)
        {
            return Err(TicketError::NotAllowed(format!("the game `{game}`")));
        }
        if let Some(rooms) = &claims.rooms
            && !rooms.iter().any(|r| r == room)
        {
            return Err(TicketError::NotAllowed(format!("the room `{room}`")));
        }
        let claims_passed = self
            .passed
            .iter()
            .filter_map(|name| claims.extra.get(name).map(|v| (name.clone(), v.to_string())))
            .collect();
        Ok(Verified {
            user: claims.sub,
            name: claims.name,
            claims: claims_passed,
            expires: claims.exp,
        })
    }
}

/// A client-controlled string, cut short for an error message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn map_error(kind: &ErrorKind) -> TicketError {
    match kind {
        ErrorKind::InvalidSignature => TicketError::BadSignature,
        ErrorKind::ExpiredSignature => TicketError::Expired,
        ErrorKind::ImmatureSignature => TicketError::NotYetValid,
        ErrorKind::InvalidIssuer => TicketError::WrongIssuer,
        ErrorKind::InvalidAudience => TicketError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => TicketError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => TicketError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => TicketError::Malformed(format!("the claim `{c}` is missing")),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            TicketError::Algorithm("unsupported".into())
        }
        ErrorKind::Json(e) => TicketError::Malformed(format!("the claims are not valid: {e}")),
        ErrorKind::Base64(e) => TicketError::Malformed(format!("not base64url: {e}")),
        ErrorKind::Utf8(_) => TicketError::Malformed("not UTF-8".into()),
        ErrorKind::InvalidClaimFormat(c) => TicketError::Malformed(format!("the claim `{c}` has the wrong type")),
        other => TicketError::Malformed(format!("{other:?}")),
    }
}

fn read_key(entry: &TicketKey, base: &Path) -> Result<Key, KeyError> {
    let path = base.join(&entry.file);
    let invalid = |problem: String| KeyError::Invalid {
        path: path.clone(),
        problem,
    };
    let alg = match entry.alg.as_str() {
        "EdDSA" => Algorithm::EdDSA,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "HS256" => Algorithm::HS256,
        other => {
            return Err(invalid(format!(
                "`alg = \"{other}\"`: expected EdDSA, RS256, ES256 or HS256"
            )));
        }
    };
    let bytes = std::fs::read(&path).map_err(|source| KeyError::Read {
        path: path.clone(),
        source,
    })?;
    let key = match alg {
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&bytes),
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&bytes),
        Algorithm::ES256 => DecodingKey::from_ec_pem(&bytes),
        _ => {
            let secret = bytes.trim_ascii();
            if secret.len() < 32 {
                return Err(invalid("an HS256 secret must be at least 32 bytes".into()));
            }
            Ok(DecodingKey::from_secret(secret))
        }
    }
    .map_err(|e| invalid(format!("not a PEM public key for {}: {e}", entry.alg)))?;
    Ok(Key {
        kid: entry.kid.clone(),
        alg,
        key,
    })
}

fn read_jwks(path: &Path) -> Result<Vec<Key>, KeyError> {
    let invalid = |problem: String| KeyError::Invalid {
        path: path.to_owned(),
        problem,
    };
    let text = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let set: JwkSet = serde_json::from_slice(&text).map_err(|e| invalid(format!("not a JWKS: {e}")))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| Algorithm::try_from(a).ok())
            .filter(|a| matches!(a, Algorithm::EdDSA | Algorithm::RS256 | Algorithm::ES256))
            .ok_or_else(|| invalid(format!("key {i} needs `alg` EdDSA, RS256 or ES256")))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(format!("key {i}: {e}")))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/auth")
    }

    fn config() -> AuthConfig {
        AuthConfig {
            required: true,
            issuer: Some("accounts".into()),
            audience: Some("respawn".into()),
            keys: vec![
                TicketKey {
                    kid: Some("ed-1".into()),
                    alg: "EdDSA".into(),
                    file: "ed25519.pub".into(),
                },
                TicketKey {
                    kid: Some("hs".into()),
                    alg: "HS256".into(),
                    file: "hs256.secret".into(),
                },
            ],
            jwks_file: Some("jwks.json".into()),
            claims: vec!["tier".into()],
            ..AuthConfig::default()
        }
    }

    fn verifier() -> Verifier {
        Verifier::load(&config(), &fixtures()).expect("keys load")
    }

    fn now() -> u64 {
        crate::unix_ms() / 1000
    }

    fn claims() -> serde_json::Value {
        json!({"sub": "user-7", "name": "Ann", "iss": "accounts", "aud": "respawn", "exp": now() + 300, "tier": "gold"})
    }

    fn sign(alg: Algorithm, kid: &str, key_file: &str, claims: &serde_json::Value) -> String {
        respawn_e2e::sign_ticket(claims, alg, kid, key_file)
    }

    fn ed(claims: &serde_json::Value) -> String {
        sign(Algorithm::EdDSA, "ed-1", "ed25519.key", claims)
    }

    #[test]
    fn valid_tickets_of_every_configured_kind_pass_with_their_user_and_claims() {
        let v = verifier();
        let ok = v.verify(&ed(&claims()), "chat", "lobby").expect("EdDSA");
        assert_eq!((ok.user.as_str(), ok.name.as_deref()), ("user-7", Some("Ann")));
        assert_eq!(ok.claims, vec![("tier".to_owned(), "\"gold\"".to_owned())]);
        for (alg, kid, file) in [
            (Algorithm::RS256, "rsa-1", "rsa.key"),
            (Algorithm::ES256, "ec-1", "es256.key"),
            (Algorithm::EdDSA, "ed-jwks", "ed25519.key"),
            (Algorithm::HS256, "hs", "hs256.secret"),
        ] {
            let t = sign(alg, kid, file, &claims());
            assert_eq!(
                v.verify(&t, "chat", "lobby").map(|u| u.user),
                Ok("user-7".into()),
                "{kid}"
            );
        }
    }

    #[test]
    fn every_bad_ticket_is_refused_with_its_own_reason() {
        let v = verifier();
        let with = |patch: serde_json::Value| {
            let mut c = claims();
            for (k, val) in patch.as_object().unwrap() {
                if val.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = val.clone();
                }
            }
            c
        };
        let check = |ticket: &str, want: TicketError| {
            assert_eq!(v.verify(ticket, "chat", "lobby"), Err(want));
        };
        // Past the skew allowed (30 s), and not yet valid beyond it.
        check(&ed(&with(json!({"exp": now() - 120}))), TicketError::Expired);
        check(&ed(&with(json!({"nbf": now() + 120}))), TicketError::NotYetValid);
        assert!(
            v.verify(&ed(&with(json!({"exp": now() - 5}))), "chat", "lobby").is_ok(),
            "within the skew"
        );
        check(&ed(&with(json!({"iss": "someone-else"}))), TicketError::WrongIssuer);
        check(&ed(&with(json!({"iss": null}))), TicketError::WrongIssuer);
        check(
            &ed(&with(json!({"aud": "another-service"}))),
            TicketError::WrongAudience,
        );
        check(&ed(&with(json!({"aud": null}))), TicketError::WrongAudience);
        // Signed by a key the host does not trust, under a trusted kid.
        check(
            &sign(Algorithm::EdDSA, "ed-1", "other-ed25519.key", &claims()),
            TicketError::BadSignature,
        );
        check(
            &sign(Algorithm::EdDSA, "nobody", "ed25519.key", &claims()),
            TicketError::UnknownKey("nobody".into()),
        );
        // A payload changed after signing.
        let good = ed(&claims());
        let parts: Vec<&str> = good.split('.').collect();
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&with(json!({"sub": "admin"}))).unwrap());
        check(
            &format!("{}.{forged}.{}", parts[0], parts[2]),
            TicketError::BadSignature,
        );
        // `alg: none`, and an HMAC header on an RSA key (key confusion).
        let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"ed-1"}"#);
        check(
            &format!("{none_header}.{}.", parts[1]),
            TicketError::Algorithm("none".into()),
        );
        let hs_on_rsa = sign(Algorithm::HS256, "rsa-1", "hs256.secret", &claims());
        check(&hs_on_rsa, TicketError::Algorithm("HS256".into()));
        // Limits on games and rooms.
        check(
            &ed(&with(json!({"games": ["tictactoe"]}))),
            TicketError::NotAllowed("the game `chat`".into()),
        );
        check(
            &ed(&with(json!({"rooms": ["vip"]}))),
            TicketError::NotAllowed("the room `lobby`".into()),
        );
        assert!(
            v.verify(
                &ed(&with(json!({"games": ["chat"], "rooms": ["lobby"]}))),
                "chat",
                "lobby"
            )
            .is_ok()
        );
    }

    #[test]
    fn malformed_tickets_are_refused_without_a_panic() {
        let v = verifier();
        let good = ed(&claims());
        let parts: Vec<&str> = good.split('.').collect();
        let malformed = [
            String::new(),
            "abc".into(),
            "a.b".into(),
            "a.b.c.d".into(),
            format!("!!!.{}.{}", parts[1], parts[2]),
            format!("{}.!!!.{}", parts[0], parts[2]),
            format!(
                "{}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"[1,2]"),
                "x.y"
            ),
            format!("{}.{}.{}", parts[0], parts[1], "%%%"),
            "x".repeat(MAX_TICKET_BYTES + 1),
            // A huge header within the size limit, then junk.
            format!(
                "{}.e30.",
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(format!(r#"{{"alg":"EdDSA","pad":"{}"}}"#, "p".repeat(5000)))
            ),
        ];
        for t in &malformed {
            match v.verify(t, "chat", "lobby") {
                Err(TicketError::Malformed(_) | TicketError::BadSignature) => {}
                other => panic!("{:.40}: {other:?}", t),
            }
        }
        // Claims of the wrong type or missing.
        let bad_claims = [json!({"sub": 7, "exp": now() + 60}), json!({"exp": now() + 60})];
        for c in bad_claims {
            let mut c = c;
            c["iss"] = json!("accounts");
            c["aud"] = json!("respawn");
            assert!(
                matches!(v.verify(&ed(&c), "chat", "lobby"), Err(TicketError::Malformed(_))),
                "{c}"
            );
        }
    }

    #[test]
    fn unreadable_key_files_name_the_file() {
        let mut c = config();
        c.jwks_file = Some("ed25519.pub".into());
        let e = Verifier::load(&c, &fixtures())
            .err()
            .expect("a PEM is not a JWKS")
            .to_string();
        assert!(e.contains("ed25519.pub") && e.contains("JWKS"), "{e}");
        let mut c = config();
        c.keys[0].file = "rsa.pub".into();
        let e = Verifier::load(&c, &fixtures())
            .err()
            .expect("an RSA key is not EdDSA")
            .to_string();
        assert!(e.contains("rsa.pub"), "{e}");
        let mut c = config();
        c.keys[0].file = "missing.pem".into();
        let e = Verifier::load(&c, &fixtures()).err().expect("missing").to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let mut c = config();
        c.keys[0].alg = "none".into();
        assert!(Verifier::load(&c, &fixtures()).is_err());
    }
}

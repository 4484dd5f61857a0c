//! The development ticket issuer: hands out short-lived tickets for any
//! name, signed with a secret made at start, so the demo site works with
//! `auth.required` on. Anyone who reaches it becomes anyone: it is off by
//! default and loud in the log when on.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The `kid` of development tickets.
pub const DEV_KID: &str = "respawn-dev";

/// How long a development ticket lasts, in seconds.
pub const DEV_TICKET_SECS: u64 = 300;

/// Signs development tickets.
pub struct DevIssuer {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

/// A development ticket and whom it names.
#[derive(Debug, Serialize)]
pub struct DevTicket {
    /// The JWT.
    pub ticket: String,
    /// Its `sub`.
    pub user: String,
    /// How long it lasts.
    pub expires_in_ms: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: String,
    name: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

impl DevIssuer {
    /// An issuer with a fresh secret (returned, for the verifier), naming
    /// the configured issuer and audience so its tickets pass the same
    /// checks as real ones.
    pub fn new(issuer: Option<String>, audience: Option<String>) -> std::io::Result<(Self, [u8; 32])> {
        let secret = crate::util::random_secret()?;
        Ok((
            Self {
                key: EncodingKey::from_secret(&secret),
                issuer,
                audience,
            },
            secret,
        ))
    }

    /// A ticket for the display name `name` (user id `dev:<name>`).
    pub fn issue(&self, name: &str) -> Result<DevTicket, String> {
        crate::protocol::check_name(name).map_err(|e| e.message)?;
        let now = crate::unix_ms() / 1000;
        let user = format!("dev:{name}");
        let claims = Claims {
            sub: user.clone(),
            name,
            iat: now,
            exp: now + DEV_TICKET_SECS,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(DEV_KID.to_owned());
        let ticket = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())?;
        Ok(DevTicket {
            ticket,
            user,
            expires_in_ms: DEV_TICKET_SECS * 1000,
        })
    }
}

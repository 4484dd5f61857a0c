//! Who may join: signed join tickets checked against the studio's keys,
//! the verified identity handed to the game, bans, and per-user limits.
//!
//! A ticket travels in `join` (each join is authorised on its own, so a
//! ticket may name the games and rooms it allows). A resume needs none:
//! the seat it takes back was authorised when it was joined.

pub mod bans;
pub mod dev;
pub mod ticket;

pub use bans::{Ban, Bans};
pub use dev::DevIssuer;
pub use ticket::{TicketError, Verified, Verifier};

use crate::config::AuthConfig;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::session::rate::{AllowanceRates, Allowances, SharedAllowance};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// A player's verified identity as rooms keep it (in memory, in the
/// journal and in checkpoints) and hand it to the game.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The ticket's `sub`.
    pub id: String,
    /// Claims passed to the game (`auth.claims`), as (name, JSON text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<(String, String)>,
}

/// Why a join was refused before it reached a room.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// `auth.required` and no ticket.
    #[error("this host requires a join ticket (`ticket` in `join`)")]
    Required,
    /// The ticket did not pass.
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// The user is banned.
    #[error("{}", banned_message(.0))]
    Banned(Ban),
}

/// What a banned user is told.
pub fn banned_message(ban: &Ban) -> String {
    match ban.until_ms {
        Some(until) => format!("banned until {until} (ms since the Unix epoch): {}", ban.reason),
        None => format!("banned: {}", ban.reason),
    }
}

impl AuthError {
    /// The error the player sees.
    pub fn to_protocol(&self) -> ProtocolError {
        let code = match self {
            AuthError::Required => ErrorCode::TicketRequired,
            AuthError::Banned(_) => ErrorCode::Banned,
            AuthError::Ticket(t) => match t {
                TicketError::Malformed(_) => ErrorCode::TicketInvalid,
                TicketError::Algorithm(_) => ErrorCode::TicketAlgorithm,
                TicketError::UnknownKey(_) => ErrorCode::TicketUnknownKey,
                TicketError::BadSignature => ErrorCode::TicketBadSignature,
                TicketError::Expired => ErrorCode::TicketExpired,
                TicketError::NotYetValid => ErrorCode::TicketNotYetValid,
                TicketError::WrongIssuer => ErrorCode::TicketWrongIssuer,
                TicketError::WrongAudience => ErrorCode::TicketWrongAudience,
                TicketError::NotAllowed(_) => ErrorCode::TicketNotAllowed,
            },
        };
        ProtocolError::new(code, self.to_string())
    }
}

/// Tickets, bans and per-user limits of one host.
pub struct Auth {
    /// `[auth]`.
    pub config: AuthConfig,
    verifier: Verifier,
    /// Bans in force.
    pub bans: Bans,
    users: Allowances<String>,
    dev: Option<DevIssuer>,
}

impl Auth {
    /// Loads the keys (paths relative to `base`) and the bans from the
    /// database. Fails, naming the file, on a key or JWKS file that does
    /// not read, and when tickets are required but nothing could sign one.
    pub fn load(config: &AuthConfig, base: &Path, bans: Vec<Ban>) -> anyhow::Result<Arc<Self>> {
        let mut verifier = Verifier::load(config, base)?;
        let dev = if config.dev_issuer {
            let (dev, secret) = DevIssuer::new(config.issuer.clone(), config.audience.clone())?;
            verifier.add_secret(dev::DEV_KID, &secret);
            tracing::warn!(
                "auth.dev_issuer is on: the demo site hands anyone a ticket for any name at /dev/ticket \
                 (development only)"
            );
            Some(dev)
        } else {
            None
        };
        if config.required && verifier.key_count() == 0 {
            anyhow::bail!("auth.required is on but no key can sign a ticket: set auth.keys or auth.jwks_file");
        }
        if !config.required {
            tracing::warn!("auth.required is off: players join without tickets, under any name (development only)");
        }
        Ok(Self::build(config.clone(), verifier, bans, dev))
    }

    fn build(config: AuthConfig, verifier: Verifier, bans: Vec<Ban>, dev: Option<DevIssuer>) -> Arc<Self> {
        let rates = AllowanceRates {
            joins_per_minute: config.user_joins_per_minute,
            join_burst: config.user_join_burst,
            frames_per_sec: config.user_rate_per_sec,
            frame_burst: config.user_rate_burst,
        };
        Arc::new(Self {
            config,
            verifier,
            bans: Bans::new(bans),
            users: Allowances::new(rates),
            dev,
        })
    }

    /// Open: no keys, tickets not required (tests and tools).
    pub fn open() -> Arc<Self> {
        let config = AuthConfig::default();
        let verifier = Verifier::without_keys(&config);
        Self::build(config, verifier, Vec::new(), None)
    }

    /// Checks a join's ticket: `Ok(None)` for a join without one on a host
    /// that does not require them.
    pub fn admit(&self, ticket: Option<&str>, game: &str, room: &str) -> Result<Option<Verified>, AuthError> {
        let Some(ticket) = ticket else {
            return if self.config.required {
                Err(AuthError::Required)
            } else {
                Ok(None)
            };
        };
        let verified = self.verifier.verify(ticket, game, room)?;
        if let Some(ban) = self.bans.check(&verified.user) {
            return Err(AuthError::Banned(ban));
        }
        Ok(Some(verified))
    }

    /// The joins and frames `user` may still make, shared by all its
    /// connections.
    pub fn allowance(&self, user: &str) -> SharedAllowance {
        self.users.get(&user.to_owned())
    }

    /// The development issuer, when `auth.dev_issuer` is on.
    pub fn dev_issuer(&self) -> Option<&DevIssuer> {
        self.dev.as_ref()
    }
}

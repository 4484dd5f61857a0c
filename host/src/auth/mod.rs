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
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The keys of `config` (and the development issuer's): refused when
/// tickets are required and nothing could sign one.
fn read_keys(config: &AuthConfig, base: &Path, dev_secret: Option<&[u8; 32]>) -> anyhow::Result<Verifier> {
    let mut verifier = Verifier::load(config, base)?;
    if let Some(secret) = dev_secret {
        verifier.add_secret(dev::DEV_KID, secret);
    }
    if config.required && verifier.key_count() == 0 {
        anyhow::bail!("auth.required is on but no key can sign a ticket: set auth.keys or auth.jwks_file");
    }
    Ok(verifier)
}

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
    /// Swapped whole when the key files change.
    verifier: RwLock<Arc<Verifier>>,
    /// Where relative key paths start.
    base: PathBuf,
    /// The development issuer's secret, added to every reload.
    dev_secret: Option<[u8; 32]>,
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
        let (dev, dev_secret) = if config.dev_issuer {
            let (dev, secret) = DevIssuer::new(config.issuer.clone(), config.audience.clone())?;
            tracing::warn!(
                "auth.dev_issuer is on: the demo site hands anyone a ticket for any name at /dev/ticket \
                 (development only)"
            );
            (Some(dev), Some(secret))
        } else {
            (None, None)
        };
        let verifier = read_keys(config, base, dev_secret.as_ref())?;
        if !config.required {
            tracing::warn!("auth.required is off: players join without tickets, under any name (development only)");
        }
        let mut auth = Self::build(config.clone(), verifier, bans, dev);
        auth.base = base.to_owned();
        auth.dev_secret = dev_secret;
        Ok(Arc::new(auth))
    }

    /// Reads the key files again (a rotation at the account service); on
    /// failure the keys in use stay. How many keys there are now.
    pub fn reload_keys(&self) -> anyhow::Result<usize> {
        let fresh = read_keys(&self.config, &self.base, self.dev_secret.as_ref())?;
        let count = fresh.key_count();
        *self.verifier.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(count)
    }

    /// Reloads the keys whenever the folders of `auth.keys` and
    /// `auth.jwks_file` change. `None` without key files, or if they
    /// cannot be watched (logged).
    pub fn watch_keys(self: &Arc<Self>) -> Option<notify::RecommendedWatcher> {
        let files = self
            .config
            .keys
            .iter()
            .map(|k| &k.file)
            .chain(self.config.jwks_file.as_ref());
        let dirs: Vec<PathBuf> = files.map(|f| crate::watch::folder_of(&self.base.join(f))).collect();
        if dirs.is_empty() {
            return None;
        }
        let this = self.clone();
        crate::watch::on_change("join ticket key folder", dirs, move || match this.reload_keys() {
            Ok(keys) => tracing::info!(keys, "join ticket keys reloaded"),
            Err(e) => tracing::error!("the join ticket keys changed but cannot be read; the keys before stay: {e:#}"),
        })
    }

    fn build(config: AuthConfig, verifier: Verifier, bans: Vec<Ban>, dev: Option<DevIssuer>) -> Self {
        let rates = AllowanceRates {
            joins_per_minute: config.user_joins_per_minute,
            join_burst: config.user_join_burst,
            frames_per_sec: config.user_rate_per_sec,
            frame_burst: config.user_rate_burst,
        };
        Self {
            config,
            verifier: RwLock::new(Arc::new(verifier)),
            base: PathBuf::from("."),
            dev_secret: None,
            bans: Bans::new(bans),
            users: Allowances::new(rates),
            dev,
        }
    }

    /// Open: no keys, tickets not required (tests and tools).
    pub fn open() -> Arc<Self> {
        let config = AuthConfig::default();
        let verifier = Verifier::without_keys(&config);
        Arc::new(Self::build(config, verifier, Vec::new(), None))
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
        let verifier = self.verifier.read().unwrap_or_else(|p| p.into_inner()).clone();
        let verified = verifier.verify(ticket, game, room)?;
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

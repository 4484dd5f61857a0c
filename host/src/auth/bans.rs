//! Banned users: refused at join, kicked from every room when banned, and
//! kept in the database so a ban outlives a restart.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// The banned user id (a ticket's `sub`).
    pub user: String,
    /// For people, and told to the user.
    pub reason: String,
    /// When it was made, in ms since the Unix epoch.
    pub since_ms: u64,
    /// When it ends, in ms since the Unix epoch; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

impl Ban {
    /// Whether it still holds at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// The bans in force, by user id.
#[derive(Default)]
pub struct Bans {
    bans: Mutex<HashMap<String, Ban>>,
}

impl Bans {
    /// Bans loaded from the database; expired ones are dropped.
    pub fn new(loaded: Vec<Ban>) -> Self {
        let now = crate::unix_ms();
        Self {
            bans: Mutex::new(
                loaded
                    .into_iter()
                    .filter(|b| b.active(now))
                    .map(|b| (b.user.clone(), b))
                    .collect(),
            ),
        }
    }

    /// The ban on `user` in force now, if any.
    pub fn check(&self, user: &str) -> Option<Ban> {
        let mut bans = crate::lock(&self.bans);
        let ban = bans.get(user)?;
        if ban.active(crate::unix_ms()) {
            return Some(ban.clone());
        }
        bans.remove(user);
        None
    }

    /// Adds or replaces a ban.
    pub fn insert(&self, ban: Ban) {
        crate::lock(&self.bans).insert(ban.user.clone(), ban);
    }

    /// Lifts a ban; the ban it lifted, if any.
    pub fn remove(&self, user: &str) -> Option<Ban> {
        crate::lock(&self.bans).remove(user)
    }

    /// Every ban in force, by user id.
    pub fn list(&self) -> Vec<Ban> {
        let now = crate::unix_ms();
        let mut bans: Vec<Ban> = crate::lock(&self.bans)
            .values()
            .filter(|b| b.active(now))
            .cloned()
            .collect();
        bans.sort_by(|a, b| a.user.cmp(&b.user));
        bans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_holds_until_it_ends_and_expired_ones_are_not_loaded() {
        let now = crate::unix_ms();
        let ban = |user: &str, until_ms| Ban {
            user: user.into(),
            reason: "spam".into(),
            since_ms: now,
            until_ms,
        };
        let bans = Bans::new(vec![ban("gone", Some(now - 1)), ban("kept", Some(now + 60_000))]);
        assert!(bans.check("gone").is_none());
        assert_eq!(bans.check("kept").map(|b| b.reason), Some("spam".into()));
        bans.insert(ban("forever", None));
        bans.insert(ban("ended", Some(now.saturating_sub(5))));
        assert!(bans.check("forever").is_some());
        assert!(bans.check("ended").is_none(), "a ban past its end no longer holds");
        assert_eq!(
            bans.list().iter().map(|b| b.user.as_str()).collect::<Vec<_>>(),
            ["forever", "kept"]
        );
        assert!(bans.remove("forever").is_some());
        assert!(bans.check("forever").is_none());
    }
}

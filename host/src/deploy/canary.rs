//! Canaries (`respawn promote <game> <version> --canary <percent>`): that
//! share of newly created rooms runs the candidate while every other room
//! stays put. Over the probation window the candidate's error rate and
//! call latency are compared with the active version's, measured over the
//! same window and the same kind of traffic; then every room goes to the
//! candidate (a full promotion), or the canary's rooms go back to the
//! active version and the candidate is marked bad. `promote --full` and
//! `rollback` decide early.

use super::{DeployError, Deployer, Trigger};
use crate::lock;
use crate::modules::audit::AuditEntry;
use crate::modules::version_health::HealthCounts;
use semver::Version;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// A running canary.
#[derive(Debug, Clone)]
pub(super) struct Watch {
    version: Version,
    active: Version,
    started: Instant,
    base_candidate: HealthCounts,
    base_active: HealthCounts,
    /// Call-time buckets when it started, to read the window's p99s.
    base_candidate_times: Vec<u64>,
    base_active_times: Vec<u64>,
}

/// Calls each version must have made in the window before their p99s are
/// compared.
const MIN_TIMED_CALLS: u64 = 100;

/// The window's reading of a version's call-time buckets.
fn since(now: Vec<u64>, base: &[u64]) -> Vec<u64> {
    now.iter()
        .zip(base.iter().chain(std::iter::repeat(&0)))
        .map(|(n, b)| n.saturating_sub(*b))
        .collect()
}

/// What a canary's start or end did.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryOutcome {
    /// The game.
    pub game: String,
    /// The candidate.
    pub version: String,
    /// The version every other room runs.
    pub active: String,
    /// `started`, `promoted` or `rolled_back`.
    pub state: &'static str,
    /// The share of new rooms.
    pub percent: u8,
    /// Rooms moved at the end.
    pub rooms: usize,
}

/// Over the window: `Some(reason)` if the candidate did worse than the
/// active version.
fn worse(
    cand: HealthCounts,
    act: HealthCounts,
    times: (&[u64], &[u64]),
    cfg: &crate::config::ProbationConfig,
) -> Option<String> {
    if cand.crashes > act.crashes {
        return Some(format!(
            "{} of its rooms crashed (the active version's: {})",
            cand.crashes, act.crashes
        ));
    }
    if cand.calls >= cfg.min_calls && cand.error_rate() > act.error_rate() + cfg.max_error_rate {
        return Some(format!(
            "{:.1}% of its calls failed against {:.1}% of the active version's (allowed: {:.1} points more)",
            cand.error_rate() * 100.0,
            act.error_rate() * 100.0,
            cfg.max_error_rate * 100.0
        ));
    }
    let p99 = |t: &[u64]| crate::modules::version_health::p99_of(t, MIN_TIMED_CALLS);
    if cfg.max_latency_ratio > 0.0
        && let (Some(c), Some(a)) = (p99(times.0), p99(times.1))
        && c > a.mul_f64(cfg.max_latency_ratio)
    {
        return Some(format!(
            "its p99 call time is {c:?} against the active version's {a:?} (allowed: {}x)",
            cfg.max_latency_ratio
        ));
    }
    None
}

impl Deployer {
    /// Starts a canary of `version` on `percent` of the game's new rooms,
    /// after the hot-fix gate (`force` passes it).
    pub async fn canary(
        self: &Arc<Self>,
        game: &str,
        version: &Version,
        percent: u8,
        force: bool,
    ) -> Result<CanaryOutcome, DeployError> {
        let (game, version) = (game.to_owned(), version.clone());
        self.job(move |this| async move {
            let target = this.games.get(&game, &version)?;
            let active = this
                .games
                .active(&game)
                .ok_or_else(|| crate::modules::games::LookupError::Game(game.clone()))?;
            if active.version == version {
                return Err(DeployError::Moved(game.clone()));
            }
            this.gate(&game, &version, Trigger::Promote, force).await?;
            this.games.set_canary(&game, Some((version.clone(), percent)))?;
            lock(&this.canaries).insert(
                game.clone(),
                Watch {
                    version: version.clone(),
                    active: active.version.clone(),
                    started: Instant::now(),
                    base_candidate: target.health.read(),
                    base_active: active.health.read(),
                    base_candidate_times: target.health.latency_buckets(),
                    base_active_times: active.health.latency_buckets(),
                },
            );
            tracing::info!(game, version = %version, percent, "canary started");
            this.audit.record(AuditEntry {
                event: "canary_started",
                game: Some(game.clone()),
                version: Some(version.to_string()),
                from: Some(active.version.to_string()),
                detail: Some(format!("{percent}% of new rooms")),
                ..AuditEntry::default()
            });
            Ok(CanaryOutcome {
                game,
                version: version.to_string(),
                active: active.version.to_string(),
                state: "started",
                percent,
                rooms: 0,
            })
        })
        .await
        .unwrap_or(Err(DeployError::ShuttingDown))
    }

    /// One round of canary checks (with the probation checks).
    pub(super) async fn check_canaries(self: &Arc<Self>) {
        let watched: Vec<(String, Watch)> = lock(&self.canaries)
            .iter()
            .map(|(g, w)| (g.clone(), w.clone()))
            .collect();
        for (game, w) in watched {
            if self.games.canary(&game).is_none_or(|(v, _)| v != w.version) {
                lock(&self.canaries).remove(&game);
                continue;
            }
            let (Ok(cand), Ok(act)) = (self.games.get(&game, &w.version), self.games.get(&game, &w.active)) else {
                continue;
            };
            let (c, a) = (
                cand.health.read().since(w.base_candidate),
                act.health.read().since(w.base_active),
            );
            let over = w.started.elapsed().as_millis() as u64 >= self.probation.window_ms;
            let times = (
                since(cand.health.latency_buckets(), &w.base_candidate_times),
                since(act.health.latency_buckets(), &w.base_active_times),
            );
            match worse(c, a, (&times.0, &times.1), &self.probation) {
                Some(why) => {
                    tracing::warn!(game, version = %w.version, "canary failed: {why}");
                    let _ = self.end_canary(&game, false, &format!("canary failed: {why}")).await;
                }
                None if over => {
                    let _ = self.end_canary(&game, true, "canary passed its window").await;
                }
                None => {}
            }
        }
    }

    /// Ends the game's canary: `promote` moves every room to the candidate
    /// (a full promotion); otherwise the canary's rooms go back to the
    /// active version and the candidate is marked bad.
    pub async fn end_canary(
        self: &Arc<Self>,
        game: &str,
        promote: bool,
        why: &str,
    ) -> Result<CanaryOutcome, DeployError> {
        let Some((version, percent)) = self.games.canary(game) else {
            return Err(DeployError::NoCanary(game.to_owned()));
        };
        lock(&self.canaries).remove(game);
        let active = self
            .games
            .active(game)
            .ok_or_else(|| crate::modules::games::LookupError::Game(game.to_owned()))?;
        let outcome = |state, rooms| CanaryOutcome {
            game: game.to_owned(),
            version: version.to_string(),
            active: active.version.to_string(),
            state,
            percent,
            rooms,
        };
        if promote {
            // Gated when the canary started; promote_if ends the canary
            // once every room has moved.
            let (g, v) = (game.to_owned(), version.clone());
            let p = self
                .job(move |this| async move { this.promote_if(&g, &v, Trigger::Promote, None).await })
                .await
                .unwrap_or(Err(DeployError::ShuttingDown))?;
            self.audit.record(AuditEntry {
                event: "canary_promoted",
                game: Some(game.to_owned()),
                version: Some(version.to_string()),
                from: Some(active.version.to_string()),
                detail: Some(format!("{why}; {} rooms migrated", p.rooms)),
                ..AuditEntry::default()
            });
            return Ok(outcome("promoted", p.rooms));
        }
        let (game_owned, candidate) = (game.to_owned(), self.games.get(game, &version)?);
        let moved = self
            .job(move |this| async move {
                let swap = this
                    .games
                    .swap_lock(&game_owned)
                    .ok_or_else(|| crate::modules::games::LookupError::Game(game_owned.clone()))?;
                let _migrating = swap.write().await;
                // No new room goes to the candidate from here on.
                this.games.set_canary(&game_owned, None)?;
                let active = this
                    .games
                    .active(&game_owned)
                    .ok_or_else(|| crate::modules::games::LookupError::Game(game_owned.clone()))?;
                this.rooms
                    .migrate_where(&game_owned, Some(candidate.digest()), &active, || Ok(()))
                    .await
                    .map_err(|reasons| DeployError::Aborted {
                        kept: candidate.version.to_string(),
                        reasons,
                    })
            })
            .await
            .unwrap_or(Err(DeployError::ShuttingDown))?;
        lock(&self.bad)
            .entry(game.to_owned())
            .or_default()
            .insert(version.clone());
        self.persist(game);
        self.count(|c| c.auto_rollbacks += 1);
        tracing::warn!(game, version = %version, rooms = moved, "canary rolled back: {why}");
        self.audit.record(AuditEntry {
            event: "canary_rolled_back",
            game: Some(game.to_owned()),
            version: Some(version.to_string()),
            from: Some(active.version.to_string()),
            reason: Some(why.to_owned()),
            detail: Some(format!("{moved} rooms moved back to {}", active.version)),
            ..AuditEntry::default()
        });
        Ok(outcome("rolled_back", moved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(calls: u64, faults: u64, crashes: u64) -> HealthCounts {
        HealthCounts {
            calls,
            faults,
            restarts: faults,
            crashes,
        }
    }

    #[test]
    fn the_candidate_is_judged_against_the_active_version_over_the_window() {
        let cfg = crate::config::ProbationConfig {
            max_error_rate: 0.05,
            min_calls: 10,
            max_latency_ratio: 3.0,
            ..Default::default()
        };
        let fast = {
            let mut b = vec![0u64; 20];
            b[3] = 200;
            b
        };
        let slow = {
            let mut b = vec![0u64; 20];
            b[8] = 200;
            b
        };
        let same = (fast.as_slice(), fast.as_slice());
        assert!(
            worse(counts(100, 1, 0), counts(100, 0, 0), same, &cfg).is_none(),
            "1% more is allowed"
        );
        assert!(
            worse(counts(100, 10, 0), counts(100, 0, 0), same, &cfg).is_some(),
            "10% more is not"
        );
        assert!(
            worse(counts(100, 10, 0), counts(100, 8, 0), same, &cfg).is_none(),
            "the active version failing as often excuses it"
        );
        assert!(
            worse(counts(5, 5, 0), counts(100, 0, 0), same, &cfg).is_none(),
            "too few calls to judge"
        );
        assert!(
            worse(counts(5, 0, 1), counts(100, 0, 0), same, &cfg).is_some(),
            "a crash is enough"
        );
        assert!(
            worse(counts(200, 0, 0), counts(200, 0, 0), (&slow, &fast), &cfg).is_some(),
            "32x slower"
        );
        assert!(
            worse(counts(200, 0, 0), counts(200, 0, 0), (&fast, &slow), &cfg).is_none(),
            "faster is fine"
        );
        assert_eq!(since(vec![5, 7, 9], &[1, 2]), vec![4, 5, 9]);
    }
}

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
use crate::modules::games::LookupError;
use crate::modules::version_health::HealthCounts;
use semver::Version;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// A running canary.
#[derive(Debug, Clone)]
pub(super) struct Watch {
    version: Version,
    /// The candidate's digest (its rooms are found by it).
    digest: String,
    active: Version,
    percent: u8,
    started: Instant,
    base_candidate: HealthCounts,
    base_active: HealthCounts,
    /// Failures per crash signature of the candidate when it started, to
    /// tell who failed since.
    base_signatures: BTreeMap<String, u64>,
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

/// What the window showed of both versions.
struct Window<'a> {
    cand: HealthCounts,
    act: HealthCounts,
    /// Players (and rooms' own calls) whose calls to the candidate failed.
    failed_sources: usize,
    times: (&'a [u64], &'a [u64]),
}

/// `Some(reason)` if the candidate did worse than the active version over
/// the window, on failures from at least `min_players` sources (one
/// player cannot fail a canary on purpose).
fn worse(w: &Window<'_>, cfg: &crate::config::ProbationConfig) -> Option<String> {
    let (cand, act) = (w.cand, w.act);
    let rate = |n: u64, calls: u64| if calls == 0 { 0.0 } else { n as f64 / calls as f64 };
    if w.failed_sources >= cfg.min_players.max(1) {
        if cand.crashes > 0 && rate(cand.crashes, cand.calls) > rate(act.crashes, act.calls) {
            return Some(format!(
                "{} of its rooms crashed in {} calls (the active version: {} in {})",
                cand.crashes, cand.calls, act.crashes, act.calls
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
    }
    let p99 = |t: &[u64]| crate::modules::version_health::p99_of(t, MIN_TIMED_CALLS);
    if cfg.max_latency_ratio > 0.0
        && let (Some(c), Some(a)) = (p99(w.times.0), p99(w.times.1))
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
        if self.probation.window_ms == 0 {
            return Err(DeployError::CanaryOff);
        }
        let (game, version) = (game.to_owned(), version.clone());
        self.job(move |this| async move {
            let target = this.games.get(&game, &version)?;
            let before = this.games.active(&game).map(|m| m.version.clone());
            if before.as_ref() == Some(&version) || this.games.canary(&game).is_some() {
                return Err(DeployError::CanaryNotStarted(game.clone()));
            }
            this.gate(&game, &version, Trigger::Promote, force).await?;
            let swap = this
                .games
                .swap_lock(&game)
                .ok_or_else(|| LookupError::Game(game.clone()))?;
            let _creating = swap.write().await;
            let active = this
                .games
                .active(&game)
                .ok_or_else(|| LookupError::Game(game.clone()))?;
            // The gate took time: nothing may have moved meanwhile.
            if Some(&active.version) != before.as_ref() || this.games.canary(&game).is_some() {
                return Err(DeployError::Moved(game.clone()));
            }
            if !this.still_trusted(&target) {
                return Err(DeployError::Untrusted {
                    game: game.clone(),
                    version: version.to_string(),
                });
            }
            this.games.set_canary(&game, Some((version.clone(), percent)))?;
            lock(&this.canaries).insert(
                game.clone(),
                Watch {
                    version: version.clone(),
                    digest: target.digest().to_owned(),
                    active: active.version.clone(),
                    percent,
                    started: Instant::now(),
                    base_candidate: target.health.read(),
                    base_active: active.health.read(),
                    base_signatures: target.health.signature_counts(),
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
            let (Ok(cand), Ok(act)) = (self.games.get(&game, &w.version), self.games.get(&game, &w.active)) else {
                // A version left its slot: nothing to compare; the canary's
                // rooms go back.
                self.finish(&game, &w.version, false, "a version of the canary is no longer loaded")
                    .await;
                continue;
            };
            let failed_sources = {
                let mut sources = BTreeSet::new();
                for (signature, stats) in cand.health.signatures() {
                    if stats.count > w.base_signatures.get(&signature).copied().unwrap_or(0) {
                        sources.extend(stats.sources);
                    }
                }
                sources.len()
            };
            let times = (
                since(cand.health.latency_buckets(), &w.base_candidate_times),
                since(act.health.latency_buckets(), &w.base_active_times),
            );
            let window = Window {
                cand: cand.health.read().since(w.base_candidate),
                act: act.health.read().since(w.base_active),
                failed_sources,
                times: (&times.0, &times.1),
            };
            let over = w.started.elapsed().as_millis() as u64 >= self.probation.window_ms;
            match worse(&window, &self.probation) {
                Some(why) => {
                    self.finish(&game, &w.version, false, &format!("canary failed: {why}"))
                        .await
                }
                // Passing needs evidence: the candidate took calls.
                None if over && window.cand.calls >= self.probation.min_calls => {
                    self.finish(&game, &w.version, true, "canary passed its window").await
                }
                None => {}
            }
        }
    }

    /// [`Deployer::end_canary`] from the checker: errors are logged (an
    /// end already under way is not one).
    async fn finish(self: &Arc<Self>, game: &str, version: &Version, promote: bool, why: &str) {
        match self.end_canary(game, Some(version), promote, true, why).await {
            Ok(_) | Err(DeployError::NoCanary(_)) => {}
            Err(e) => tracing::error!(game, "ending the canary ({why}) failed: {e}"),
        }
    }

    /// Ends the game's canary: `promote` moves every room to the candidate
    /// (a full promotion); otherwise the canary's rooms go back to the
    /// active version and the candidate is marked bad. Only one end runs:
    /// whoever takes the canary's watch.
    /// `expected`: only the canary of this version (the one judged, or
    /// named); `auto`: the host decided, not an operator.
    pub async fn end_canary(
        self: &Arc<Self>,
        game: &str,
        expected: Option<&Version>,
        promote: bool,
        auto: bool,
        why: &str,
    ) -> Result<CanaryOutcome, DeployError> {
        let w = {
            let mut canaries = lock(&self.canaries);
            match canaries.get(game) {
                Some(w) if expected.is_none_or(|v| *v == w.version) => canaries.remove(game),
                _ => None,
            }
        };
        let Some(w) = w else {
            return Err(DeployError::NoCanary(game.to_owned()));
        };
        let (game, why) = (game.to_owned(), why.to_owned());
        self.job(move |this| async move {
            let ended = this.end_claimed(&game, &w, promote, auto, &why).await;
            match &ended {
                Ok(_) => {}
                Err(e) => {
                    // A promotion that failed changed nothing: the canary
                    // runs on, judged again after another window (not at
                    // once, again and again). A rollback that failed left
                    // new rooms off the candidate; its rooms stay where
                    // they are for an operator (the audit says how).
                    if promote && this.games.canary(&game) == Some((w.version.clone(), w.percent)) {
                        let again = Watch {
                            started: Instant::now(),
                            ..w.clone()
                        };
                        lock(&this.canaries).entry(game.clone()).or_insert(again);
                    }
                    this.audit.record(AuditEntry {
                        event: "canary_end_failed",
                        game: Some(game.clone()),
                        version: Some(w.version.to_string()),
                        reason: Some(why.clone()),
                        detail: Some(if promote {
                            format!("{e}; it runs on and is judged again after the window")
                        } else {
                            format!(
                                "{e}; no new room goes to it, its rooms stay on it: `respawn promote {game} {}` moves them",
                                w.active
                            )
                        }),
                        ..AuditEntry::default()
                    });
                }
            }
            crate::blocking::blocking(|| this.flush_audit(super::AUDIT_FLUSH));
            ended
        })
        .await
        .unwrap_or(Err(DeployError::ShuttingDown))
    }

    async fn end_claimed(
        &self,
        game: &str,
        w: &Watch,
        promote: bool,
        auto: bool,
        why: &str,
    ) -> Result<CanaryOutcome, DeployError> {
        let outcome = |state, rooms| CanaryOutcome {
            game: game.to_owned(),
            version: w.version.to_string(),
            active: w.active.to_string(),
            state,
            percent: w.percent,
            rooms,
        };
        if promote {
            // Gated when the canary started; only if the active version is
            // still the one the canary ran beside. promote_if ends the
            // canary once every room has moved.
            let p = self
                .promote_if(game, &w.version, Trigger::Promote, Some(&w.active))
                .await?;
            self.audit.record(AuditEntry {
                event: "canary_promoted",
                game: Some(game.to_owned()),
                version: Some(w.version.to_string()),
                from: Some(w.active.to_string()),
                detail: Some(format!("{why}; {} rooms migrated", p.rooms)),
                ..AuditEntry::default()
            });
            return Ok(outcome("promoted", p.rooms));
        }
        let swap = self
            .games
            .swap_lock(game)
            .ok_or_else(|| LookupError::Game(game.to_owned()))?;
        let _migrating = swap.write().await;
        let active = self
            .games
            .active(game)
            .ok_or_else(|| LookupError::Game(game.to_owned()))?;
        if active.version != w.active {
            return Err(DeployError::Moved(game.to_owned()));
        }
        // No new room goes to the candidate from here on.
        self.games.set_canary(game, None)?;
        // Judged worse: bad, whatever the migration does.
        lock(&self.bad)
            .entry(game.to_owned())
            .or_default()
            .insert(w.version.clone());
        self.persist(game);
        let moved = self
            .rooms
            .migrate_where(game, Some(&w.digest), &active, || Ok(()))
            .await
            .map_err(|reasons| DeployError::Aborted {
                kept: w.version.to_string(),
                reasons,
            })?;
        self.count(|c| if auto { c.auto_rollbacks += 1 } else { c.rollbacks += 1 });
        tracing::warn!(game, version = %w.version, rooms = moved, "canary rolled back: {why}");
        self.audit.record(AuditEntry {
            event: "canary_rolled_back",
            game: Some(game.to_owned()),
            version: Some(w.version.to_string()),
            from: Some(w.active.to_string()),
            reason: Some(why.to_owned()),
            detail: Some(format!("{moved} rooms moved back to {}", w.active)),
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
            min_players: 2,
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
        let w = |cand, act, failed_sources, times: (&'static [u64], &'static [u64])| Window {
            cand,
            act,
            failed_sources,
            times,
        };
        let (fast, slow): (&'static [u64], &'static [u64]) = (fast.leak(), slow.leak());
        let judge = |win: Window<'_>| worse(&win, &cfg);
        assert!(
            judge(w(counts(100, 1, 0), counts(100, 0, 0), 2, (fast, fast))).is_none(),
            "1% more is allowed"
        );
        assert!(
            judge(w(counts(100, 10, 0), counts(100, 0, 0), 2, (fast, fast))).is_some(),
            "10% more is not"
        );
        assert!(
            judge(w(counts(100, 10, 0), counts(100, 0, 0), 1, (fast, fast))).is_none(),
            "one player cannot fail it"
        );
        assert!(
            judge(w(counts(100, 10, 0), counts(100, 8, 0), 2, (fast, fast))).is_none(),
            "the active version failing as often excuses it"
        );
        assert!(
            judge(w(counts(5, 5, 0), counts(100, 0, 0), 2, (fast, fast))).is_none(),
            "too few calls"
        );
        assert!(
            judge(w(counts(5, 0, 1), counts(100, 0, 0), 2, (fast, fast))).is_some(),
            "a crash"
        );
        assert!(
            judge(w(counts(100, 0, 1), counts(1000, 0, 10), 2, (fast, fast))).is_none(),
            "crashing no more often than the active version"
        );
        assert!(
            judge(w(counts(200, 0, 0), counts(200, 0, 0), 0, (slow, fast))).is_some(),
            "32x slower"
        );
        assert!(
            judge(w(counts(200, 0, 0), counts(200, 0, 0), 0, (fast, slow))).is_none(),
            "faster is fine"
        );
        assert_eq!(since(vec![5, 7, 9], &[1, 2]), vec![4, 5, 9]);
    }
}

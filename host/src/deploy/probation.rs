//! Probation: a newly promoted version is watched for a while, and rolled
//! back automatically (and marked bad) if its rooms fail too often.

use super::{DeployError, Deployer, Trigger};
use crate::config::ProbationConfig;
use crate::lock;
use crate::modules::GameModule;
use crate::modules::audit::AuditEntry;
use crate::modules::version_health::{HealthCounts, OTHER_SIGNATURE, Source};
use semver::Version;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A newly promoted version under watch.
#[derive(Debug, Clone)]
pub(super) struct Probation {
    pub(super) version: Version,
    previous: Version,
    started: Instant,
    baseline: HealthCounts,
    /// Failures per signature when the probation began.
    baseline_signatures: BTreeMap<String, u64>,
    /// Calls slower than this are counted (the predecessor's p99 times
    /// `max_latency_ratio`), if the predecessor made enough calls to know.
    slow_threshold: Option<Duration>,
}

/// What a probation check concluded.
enum Verdict {
    Watching,
    Passed,
    Failed(&'static str, String),
    /// Something else moved the game on; the probation no longer applies.
    Moot,
}

impl Deployer {
    /// After a promotion from `before` to `target`: an update or an
    /// operator's promotion is watched; anything else ends the watch.
    pub(super) fn put_on_probation(
        &self,
        game: &str,
        before: Option<&GameModule>,
        target: &GameModule,
        trigger: Trigger,
    ) {
        let mut probations = lock(&self.probations);
        let watch = matches!(trigger, Trigger::Update | Trigger::Promote) && self.probation.window_ms > 0;
        let Some(before) = before.filter(|b| watch && b.version != target.version) else {
            probations.remove(game);
            return;
        };
        // Replacing a version still on probation: the way back is the last
        // version that passed, not it.
        let previous = probations
            .get(game)
            .filter(|p| p.version == before.version)
            .map_or_else(|| before.version.clone(), |p| p.previous.clone());
        let slow_threshold = (self.probation.max_latency_ratio > 0.0)
            .then(|| self.games.get(game, &previous).ok())
            .flatten()
            .and_then(|prev| prev.health.p99(MIN_TIMED_CALLS))
            .map(|p99| p99.mul_f64(self.probation.max_latency_ratio));
        if let Some(threshold) = slow_threshold {
            target.health.watch_slow(threshold);
        }
        probations.insert(
            game.to_owned(),
            Probation {
                version: target.version.clone(),
                previous,
                started: Instant::now(),
                baseline: target.health.read(),
                baseline_signatures: target.health.signature_counts(),
                slow_threshold,
            },
        );
    }

    /// Checks every version on probation every `every` until the process
    /// ends; rolls back the ones that fail.
    pub async fn watch_probations(self: Arc<Self>, every: std::time::Duration) {
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            self.check_probations().await;
            self.check_canaries().await;
        }
    }

    /// One round of probation checks.
    pub async fn check_probations(self: &Arc<Self>) {
        let watched: Vec<(String, Probation)> = lock(&self.probations)
            .iter()
            .map(|(g, p)| (g.clone(), p.clone()))
            .collect();
        for (game, p) in watched {
            match self.verdict(&game, &p) {
                Verdict::Watching => {}
                Verdict::Moot => {
                    lock(&self.probations).remove(&game);
                }
                Verdict::Passed => {
                    lock(&self.probations).remove(&game);
                    tracing::info!(game, version = %p.version, "probation passed");
                    self.count(|c| c.probations_passed += 1);
                    self.audit.record(AuditEntry {
                        event: "probation_passed",
                        game: Some(game.clone()),
                        version: Some(p.version.to_string()),
                        ..AuditEntry::default()
                    });
                }
                Verdict::Failed(reason, why) => {
                    lock(&self.probations).remove(&game);
                    let (game, p) = (game.clone(), p.clone());
                    // None: the host is shutting down; the version stays.
                    let _ = self
                        .job(move |this| async move { this.fail_probation(&game, &p, reason, &why).await })
                        .await;
                }
            }
        }
    }

    fn verdict(&self, game: &str, p: &Probation) -> Verdict {
        let Some(active) = self.games.active(game).filter(|m| m.version == p.version) else {
            return Verdict::Moot;
        };
        let previous = self.games.get(game, &p.previous).ok();
        let mut observed = Observed {
            counts: active.health.read().since(p.baseline),
            elapsed: p.started.elapsed(),
            ..Observed::default()
        };
        for (signature, stats) in active.health.signatures() {
            let new = stats.count
                - p.baseline_signatures
                    .get(&signature)
                    .copied()
                    .unwrap_or(0)
                    .min(stats.count);
            if new == 0 {
                continue;
            }
            // A failure the previous version also had is not the new
            // version's doing: replaying a known crash cannot pin it on it.
            // Only a signature with frames identifies a bug.
            let known = !signature.ends_with(':')
                && signature != OTHER_SIGNATURE
                && previous
                    .as_ref()
                    .is_some_and(|prev| prev.health.has_signature(&signature));
            if known {
                observed.excused += new;
            } else {
                observed.blamed += new;
                observed.sources.extend(stats.sources);
            }
        }
        if let Some(threshold) = p.slow_threshold {
            let (count, sources) = active.health.slow_calls();
            observed.slow = Some((threshold, count, sources));
        }
        judge(&observed, &self.probation)
    }

    /// Marks the version bad and goes back to the one before it.
    async fn fail_probation(&self, game: &str, p: &Probation, reason: &'static str, why: &str) {
        tracing::error!(game, version = %p.version, back_to = %p.previous, "probation failed, rolling back: {why}");
        lock(&self.bad)
            .entry(game.to_owned())
            .or_default()
            .insert(p.version.clone());
        self.persist(game);
        self.audit.record(AuditEntry {
            event: "probation_failed",
            game: Some(game.to_owned()),
            version: Some(p.version.to_string()),
            reason: Some(reason.into()),
            detail: Some(why.to_owned()),
            ..AuditEntry::default()
        });
        match self
            .promote_if(game, &p.previous, Trigger::AutoRollback, Some(&p.version))
            .await
        {
            Ok(_) => {}
            Err(DeployError::Moved(_)) => {
                tracing::warn!(game, version = %p.version, "no automatic rollback: another version became active meanwhile");
            }
            Err(e) => {
                tracing::error!(game, version = %p.version, "automatic rollback failed, the version stays active: {e}");
                self.audit.record(AuditEntry {
                    event: "auto_rollback_failed",
                    game: Some(game.to_owned()),
                    version: Some(p.version.to_string()),
                    detail: Some(e.to_string()),
                    ..AuditEntry::default()
                });
            }
        }
    }
}

/// Calls a version must have made before its call times are compared.
const MIN_TIMED_CALLS: u64 = 100;

/// What a version did during its probation.
#[derive(Default)]
struct Observed {
    counts: HealthCounts,
    /// Failures the previous version never had, and who caused them.
    blamed: u64,
    sources: BTreeSet<Source>,
    /// Failures the previous version had too.
    excused: u64,
    /// The slow-call threshold, the calls over it, and who made them.
    slow: Option<(Duration, u64, BTreeSet<Source>)>,
    elapsed: Duration,
}

fn list(sources: &BTreeSet<Source>) -> String {
    sources.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The probation's decision, from what was observed alone. Nothing fails a
/// version unless at least `min_players` sources (players, or rooms for
/// calls no player caused) are involved.
fn judge(o: &Observed, config: &ProbationConfig) -> Verdict {
    let who = format!(
        "failures from [{}]{}",
        list(&o.sources),
        if o.excused > 0 {
            format!(", {} more excused (the previous version fails the same way)", o.excused)
        } else {
            String::new()
        }
    );
    let enough = o.sources.len() >= config.min_players;
    if o.counts.crashes > 0 && enough {
        return Verdict::Failed(
            "room_crashed",
            format!(
                "{} room(s) restarted too often and closed ({} restarts, {} failed calls of {}); {who}",
                o.counts.crashes, o.counts.restarts, o.blamed, o.counts.calls
            ),
        );
    }
    let rate = if o.counts.calls == 0 {
        0.0
    } else {
        o.blamed as f64 / o.counts.calls as f64
    };
    if o.counts.calls >= config.min_calls && rate > config.max_error_rate && enough {
        return Verdict::Failed(
            "error_rate",
            format!(
                "{} of {} calls failed ({:.1}%, above {:.1}%); {who}",
                o.blamed,
                o.counts.calls,
                rate * 100.0,
                config.max_error_rate * 100.0
            ),
        );
    }
    if let Some((threshold, slow, sources)) = &o.slow
        && o.counts.calls >= config.min_calls.max(MIN_TIMED_CALLS)
        && *slow * 100 > o.counts.calls
        && sources.len() >= config.min_players
    {
        return Verdict::Failed(
            "slow",
            format!(
                "{slow} of {} calls took over {threshold:?} ({}x the previous version's p99), from [{}]",
                o.counts.calls,
                config.max_latency_ratio,
                list(sources)
            ),
        );
    }
    if o.elapsed.as_millis() as u64 >= config.window_ms {
        return Verdict::Passed;
    }
    Verdict::Watching
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(calls: u64, crashes: u64, blamed: u64, sources: &[Source]) -> Observed {
        Observed {
            counts: HealthCounts {
                calls,
                faults: blamed,
                restarts: blamed,
                crashes,
            },
            blamed,
            sources: sources.iter().copied().collect(),
            elapsed: Duration::from_millis(10),
            ..Observed::default()
        }
    }

    fn failed(v: Verdict) -> Option<&'static str> {
        match v {
            Verdict::Failed(reason, _) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn one_source_alone_cannot_fail_a_version() {
        let config = ProbationConfig::default();
        let one = [Source::Player(7)];
        assert_eq!(failed(judge(&observed(40, 1, 30, &one), &config)), None);
        let two = [Source::Player(7), Source::Player(8)];
        assert_eq!(failed(judge(&observed(40, 1, 30, &two), &config)), Some("room_crashed"));
        assert_eq!(failed(judge(&observed(40, 0, 30, &two), &config)), Some("error_rate"));
        // Ticks failing in two rooms count as two sources: no player
        // sends them.
        let rooms = [Source::Room(1), Source::Room(2)];
        assert_eq!(failed(judge(&observed(40, 0, 30, &rooms), &config)), Some("error_rate"));
    }

    #[test]
    fn the_rate_counts_every_failure_however_many_calls() {
        let config = ProbationConfig::default();
        let two = [Source::Player(1), Source::Player(2)];
        // A busy version: half of 100,000 calls failed.
        assert_eq!(
            failed(judge(&observed(100_000, 0, 50_000, &two), &config)),
            Some("error_rate")
        );
        assert_eq!(failed(judge(&observed(100_000, 0, 4_000, &two), &config)), None);
    }

    #[test]
    fn the_decision_names_the_sources_and_the_excused() {
        let config = ProbationConfig::default();
        let mut o = observed(40, 0, 4, &[Source::Player(3), Source::Player(5), Source::Room(9)]);
        o.excused = 2;
        let Verdict::Failed(_, why) = judge(&o, &config) else {
            panic!("should fail")
        };
        assert!(why.contains("[player 3, player 5, room 9]"), "{why}");
        assert!(why.contains("2 more excused"), "{why}");
    }

    #[test]
    fn a_version_much_slower_than_its_predecessor_fails_if_many_see_it() {
        let config = ProbationConfig::default();
        let threshold = Duration::from_millis(1);
        let mut o = observed(200, 0, 0, &[]);
        o.slow = Some((threshold, 50, BTreeSet::from([Source::Player(1)])));
        assert_eq!(failed(judge(&o, &config)), None, "one player's slow calls");
        o.slow = Some((threshold, 50, BTreeSet::from([Source::Player(1), Source::Player(2)])));
        assert_eq!(failed(judge(&o, &config)), Some("slow"));
        o.slow = Some((threshold, 1, BTreeSet::from([Source::Player(1), Source::Player(2)])));
        assert_eq!(failed(judge(&o, &config)), None, "under 1% of calls: the p99 is fine");
        let mut few = observed(50, 0, 0, &[]);
        few.slow = Some((threshold, 50, BTreeSet::from([Source::Player(1), Source::Player(2)])));
        assert_eq!(failed(judge(&few, &config)), None, "too few calls to judge call times");
    }
}

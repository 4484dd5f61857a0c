//! Probation: a newly promoted version is watched for a while, and rolled
//! back automatically (and marked bad) if its rooms fail too often.

use super::{DeployError, Deployer, Trigger};
use crate::config::ProbationConfig;
use crate::lock;
use crate::modules::GameModule;
use crate::modules::audit::AuditEntry;
use crate::modules::version_health::{Failure, HealthCounts};
use semver::Version;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A newly promoted version under watch.
#[derive(Debug, Clone)]
pub(super) struct Probation {
    pub(super) version: Version,
    previous: Version,
    started: Instant,
    baseline: HealthCounts,
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
        probations.insert(
            game.to_owned(),
            Probation {
                version: target.version.clone(),
                previous,
                started: Instant::now(),
                baseline: target.health.read(),
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
                    self.job(move |this| async move { this.fail_probation(&game, &p, reason, &why).await })
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
        // A failure the previous version also had is not the new version's
        // doing: a player replaying a known crash cannot pin it on it.
        let (excused, blamed): (Vec<Failure>, Vec<Failure>) =
            active.health.failures_since(p.started).into_iter().partition(|f| {
                previous
                    .as_ref()
                    .is_some_and(|prev| prev.health.has_signature(&f.signature))
            });
        let observed = Observed {
            counts: active.health.read().since(p.baseline),
            blamed,
            excused: excused.len(),
            p99: active.health.p99(self.probation.min_calls),
            previous_p99: previous
                .as_ref()
                .and_then(|prev| prev.health.p99(self.probation.min_calls)),
            elapsed: p.started.elapsed(),
        };
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

/// What a version did during its probation.
struct Observed {
    counts: HealthCounts,
    /// Failures the previous version never had, with who caused them.
    blamed: Vec<Failure>,
    /// Failures the previous version had too.
    excused: usize,
    p99: Option<Duration>,
    previous_p99: Option<Duration>,
    elapsed: Duration,
}

/// The probation's decision, from what was observed alone.
fn judge(o: &Observed, config: &ProbationConfig) -> Verdict {
    // Ticks are one more source: no player sends them.
    let sources: BTreeSet<Option<u64>> = o.blamed.iter().map(|f| f.player).collect();
    let players: Vec<String> = sources
        .iter()
        .map(|p| p.map_or_else(|| "ticks".to_owned(), |p| p.to_string()))
        .collect();
    let who = format!(
        "failures from players [{}]{}",
        players.join(", "),
        if o.excused > 0 {
            format!(", {} more excused (the previous version fails the same way)", o.excused)
        } else {
            String::new()
        }
    );
    let enough_players = sources.len() >= config.min_players;
    let blamed = o.blamed.len() as u64;
    if o.counts.crashes > 0 && enough_players {
        return Verdict::Failed(
            "room_crashed",
            format!(
                "{} room(s) restarted too often and closed ({} restarts, {blamed} failed calls of {}); {who}",
                o.counts.crashes, o.counts.restarts, o.counts.calls
            ),
        );
    }
    let rate = if o.counts.calls == 0 {
        0.0
    } else {
        blamed as f64 / o.counts.calls as f64
    };
    if o.counts.calls >= config.min_calls && rate > config.max_error_rate && enough_players {
        return Verdict::Failed(
            "error_rate",
            format!(
                "{blamed} of {} calls failed ({:.1}%, above {:.1}%); {who}",
                o.counts.calls,
                rate * 100.0,
                config.max_error_rate * 100.0
            ),
        );
    }
    if config.max_latency_ratio > 0.0
        && let (Some(now), Some(before)) = (o.p99, o.previous_p99)
        && now.as_secs_f64() > before.as_secs_f64() * config.max_latency_ratio
    {
        return Verdict::Failed(
            "slow",
            format!(
                "99% of calls take up to {now:?}, against {before:?} for the previous version (more than {}x)",
                config.max_latency_ratio
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

    fn failure(player: Option<u64>) -> Failure {
        Failure {
            at: Instant::now(),
            player,
            signature: "trap:game::on_message".into(),
        }
    }

    fn observed(calls: u64, crashes: u64, blamed: Vec<Failure>) -> Observed {
        Observed {
            counts: HealthCounts {
                calls,
                faults: blamed.len() as u64,
                restarts: blamed.len() as u64,
                crashes,
            },
            blamed,
            excused: 0,
            p99: None,
            previous_p99: None,
            elapsed: Duration::from_millis(10),
        }
    }

    fn failed(v: Verdict) -> Option<&'static str> {
        match v {
            Verdict::Failed(reason, _) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn one_player_alone_cannot_fail_a_version() {
        let config = ProbationConfig::default();
        let one = vec![failure(Some(7)); 30];
        assert_eq!(failed(judge(&observed(40, 1, one.clone()), &config)), None);
        let mut two = one;
        two.push(failure(Some(8)));
        assert_eq!(
            failed(judge(&observed(40, 1, two.clone()), &config)),
            Some("room_crashed")
        );
        assert_eq!(failed(judge(&observed(40, 0, two), &config)), Some("error_rate"));
    }

    #[test]
    fn the_decision_names_the_players_and_the_excused() {
        let config = ProbationConfig::default();
        let mut o = observed(
            40,
            0,
            vec![failure(Some(3)), failure(Some(5)), failure(None), failure(Some(3))],
        );
        o.excused = 2;
        let Verdict::Failed(_, why) = judge(&o, &config) else {
            panic!("should fail")
        };
        assert!(why.contains("players [ticks, 3, 5]"), "{why}");
        assert!(why.contains("2 more excused"), "{why}");
    }

    #[test]
    fn a_version_much_slower_than_its_predecessor_fails() {
        let config = ProbationConfig::default();
        let mut o = observed(100, 0, vec![]);
        o.previous_p99 = Some(Duration::from_micros(256));
        o.p99 = Some(Duration::from_micros(1024));
        assert_eq!(failed(judge(&o, &config)), None, "4x is within 5x");
        o.p99 = Some(Duration::from_micros(2048));
        assert_eq!(failed(judge(&o, &config)), Some("slow"));
        let off = ProbationConfig {
            max_latency_ratio: 0.0,
            ..config
        };
        assert_eq!(failed(judge(&o, &off)), None, "0 turns it off");
    }
}

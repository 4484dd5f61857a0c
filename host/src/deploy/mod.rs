//! Deployments: the path from a signed file to live rooms, and back.
//!
//! verify → admit (no downgrade, no conflicting bytes) → compile → slot →
//! promote (flip the active pointer, migrate every live room, all or none).
//! Rollback is a promotion to a version already compiled. Every decision is
//! logged, counted and audited.

mod canary;
pub mod gate;
mod probation;
pub mod shadow;

use crate::config::ProbationConfig;
use crate::lock;
use crate::modules::audit::{AuditEntry, AuditLog};
use crate::modules::cache::CodeCache;
use crate::modules::games::{GameStatus, LookupError};
use crate::modules::store::{GameState, SlotStore};
use crate::modules::{GameModule, Games, Rejection, TrustStore, VerifiedModule, loader};
use crate::room::Rooms;
use crate::sandbox::{CompileError, Sandbox};
pub use canary::CanaryOutcome;
use probation::Probation;
use semver::Version;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why a promotion, rollback or pin did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// No such game or version.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The game's active version changed while this waited; nothing done.
    #[error("the active version of {0} changed meanwhile; nothing done")]
    Moved(String),
    /// The game runs no canary.
    #[error("{0} runs no canary")]
    NoCanary(String),
    /// A canary of the active version, or while another runs.
    #[error("{0}: a canary needs a version other than the active one, and none running")]
    CanaryNotStarted(String),
    /// Canaries are judged over `probation.window_ms`, which is 0.
    #[error("probation.window_ms is 0: a canary would never be judged")]
    CanaryOff,
    /// A shadow run is going on (one at a time).
    #[error("a shadow run is going on; wait for its report")]
    ShadowRunning,
    /// The host is shutting down: no promotion starts.
    #[error("the host is shutting down; nothing done")]
    ShuttingDown,
    /// The version was signed by a key that is no longer trusted.
    #[error("{game} {version} was signed by a key that is no longer trusted")]
    Untrusted {
        /// The game.
        game: String,
        /// The version asked for.
        version: String,
    },
    /// The hot-fix gate replayed crash capsules on the version and some
    /// still fault: it stays in its slot (`promote --force` overrides).
    #[error("{game} {version} still fails on recent crash capsules (--force goes ahead anyway): {}", capsules.join("; "))]
    GateFailed {
        /// The game.
        game: String,
        /// The version refused.
        version: String,
        /// Each failing capsule and how it failed.
        capsules: Vec<String>,
    },
    /// A room could not take the new version; nothing changed.
    #[error("promotion aborted, every room stays on {kept}: {}", reasons.join("; "))]
    Aborted {
        /// The version that stays active.
        kept: String,
        /// What went wrong, per room.
        reasons: Vec<String>,
    },
}

impl DeployError {
    /// Stable code for the admin API.
    pub fn code(&self) -> &'static str {
        match self {
            DeployError::Lookup(LookupError::Game(_)) => "unknown_game",
            DeployError::Lookup(LookupError::Version(..)) => "unknown_version",
            DeployError::Lookup(LookupError::NoPrevious(_)) => "no_previous_version",
            DeployError::Aborted { .. } => "migration_failed",
            DeployError::Moved(_) => "active_version_moved",
            DeployError::Untrusted { .. } => "untrusted_signer",
            DeployError::ShuttingDown => "shutting_down",
            DeployError::GateFailed { .. } => "gate_failed",
            DeployError::ShadowRunning => "shadow_running",
            DeployError::NoCanary(_) => "no_canary",
            DeployError::CanaryNotStarted(_) => "canary_not_started",
            DeployError::CanaryOff => "canary_off",
        }
    }
}

/// What a promotion did, with its timings.
#[derive(Debug, Clone, Serialize)]
pub struct Promotion {
    /// The game.
    pub game: String,
    /// The version active before.
    pub from: Option<String>,
    /// The version active now.
    pub to: String,
    /// Time to move the active pointer, in microseconds.
    pub flip_us: f64,
    /// Time to migrate every live room, in milliseconds.
    pub migrate_ms: f64,
    /// Rooms migrated.
    pub rooms: usize,
}

/// What happened to a file offered by the watcher.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    /// The game.
    pub game: String,
    /// The version loaded.
    pub version: String,
    /// Verification time, milliseconds.
    pub verify_ms: f64,
    /// Compilation time, milliseconds.
    pub compile_ms: f64,
    /// The promotion, unless the game is pinned or it was aborted.
    pub promotion: Option<Promotion>,
}

/// Counters of deployment events, served by `status` (and, later, as
/// metrics).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Versions loaded into slots.
    pub loaded: u64,
    /// Successful promotions (updates and explicit promotions).
    pub promotions: u64,
    /// Successful rollbacks (by an operator).
    pub rollbacks: u64,
    /// Rollbacks the host made on its own after a failed probation.
    pub auto_rollbacks: u64,
    /// Probations passed.
    pub probations_passed: u64,
    /// Promotions aborted because a room could not migrate.
    pub aborted: u64,
    /// Promotions the hot-fix gate refused.
    pub gate_refused: u64,
    /// Promotions forced past the gate.
    pub gate_forced: u64,
    /// Rejected modules by reason code.
    pub rejections: BTreeMap<String, u64>,
}

/// The host's status, for `respawn status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Every game and its versions.
    pub games: Vec<GameStatus>,
    /// Live rooms.
    pub rooms: usize,
    /// Deployment counters.
    pub counters: Counters,
}

/// Why a promotion happens, for the audit log.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// A new version arrived in the modules folder.
    Update,
    /// An operator asked for this version.
    Promote,
    /// An operator asked to go back.
    Rollback,
    /// The active version failed its probation.
    AutoRollback,
    /// Another node of the fleet made this version active (see
    /// `crate::cluster::deploys`).
    Fleet,
}

impl Trigger {
    fn event(self) -> &'static str {
        match self {
            Trigger::Update | Trigger::Promote => "promote",
            Trigger::Rollback => "rollback",
            Trigger::AutoRollback => "auto_rollback",
            Trigger::Fleet => "fleet_decision",
        }
    }
}

/// Owns the deployment path.
pub struct Deployer {
    sandbox: Arc<Sandbox>,
    /// Replaced whole when the trust folder changes.
    trust: std::sync::RwLock<Arc<TrustStore>>,
    games: Arc<Games>,
    rooms: Arc<Rooms>,
    store: SlotStore,
    /// Per game, the highest version ever active.
    high_water: Mutex<BTreeMap<String, Version>>,
    cache: Option<Arc<CodeCache>>,
    audit: AuditLog,
    counters: Mutex<Counters>,
    probation: ProbationConfig,
    probations: Mutex<BTreeMap<String, Probation>>,
    bad: Mutex<BTreeMap<String, BTreeSet<Version>>>,
    /// How long a file that reads as truncated must stay unchanged before
    /// it is refused (zero: at once). A copy that pauses longer than the
    /// watcher's debounce is read early; it must not leave a false refusal.
    settle: std::time::Duration,
    /// Promotions and rollbacks in progress: owned by the host, so one
    /// whose requester goes away still finishes, and shutdown waits.
    jobs: tokio_util::task::TaskTracker,
    /// Versions active since the host started, per game: a rollback to
    /// one of them is not gated again.
    passed: Mutex<BTreeMap<String, BTreeSet<Version>>>,
    /// The gate's last findings per game and version.
    gates: Mutex<BTreeMap<(String, Version), gate::GateSummary>>,
    /// A shadow run is going on.
    shadowing: std::sync::atomic::AtomicBool,
    /// Running canaries, per game.
    canaries: Mutex<BTreeMap<String, canary::Watch>>,
    /// Told of each decision on a game's active version or pin taken here
    /// (see [`Deployer::on_decision`]).
    on_decision: std::sync::OnceLock<DecisionHook>,
    /// Told of each version loaded into the slots (see
    /// [`Deployer::on_loaded`]).
    on_loaded: std::sync::OnceLock<LoadedHook>,
}

/// Told the game of each decision (see [`Deployer::on_decision`]).
type DecisionHook = Box<dyn Fn(&str) + Send + Sync>;

/// Told of each version loaded (see [`Deployer::on_loaded`]).
type LoadedHook = Box<dyn Fn(&Arc<GameModule>) + Send + Sync>;

impl Deployer {
    /// Wires the deployment path.
    pub fn new(
        sandbox: Arc<Sandbox>,
        trust: TrustStore,
        games: Arc<Games>,
        rooms: Arc<Rooms>,
        store: SlotStore,
        audit: AuditLog,
    ) -> Self {
        Self {
            sandbox,
            trust: std::sync::RwLock::new(Arc::new(trust)),
            games,
            rooms,
            store,
            high_water: Mutex::new(BTreeMap::new()),
            cache: None,
            audit,
            counters: Mutex::new(Counters::default()),
            probation: ProbationConfig {
                window_ms: 0,
                ..ProbationConfig::default()
            },
            probations: Mutex::new(BTreeMap::new()),
            bad: Mutex::new(BTreeMap::new()),
            jobs: tokio_util::task::TaskTracker::new(),
            settle: std::time::Duration::ZERO,
            passed: Mutex::new(BTreeMap::new()),
            gates: Mutex::new(BTreeMap::new()),
            shadowing: std::sync::atomic::AtomicBool::new(false),
            on_decision: std::sync::OnceLock::new(),
            on_loaded: std::sync::OnceLock::new(),
            canaries: Mutex::new(BTreeMap::new()),
        }
    }

    /// Gives a file that reads as truncated `settle` to finish arriving
    /// before it is refused (see the field).
    pub fn with_settle(mut self, settle: std::time::Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Watches promoted versions as `config` says (without this, never).
    pub fn with_probation(mut self, config: ProbationConfig) -> Self {
        self.probation = config;
        self
    }

    fn is_bad(&self, game: &str, version: &Version) -> bool {
        lock(&self.bad).get(game).is_some_and(|b| b.contains(version))
    }

    /// Uses `cache` for compiled code.
    pub fn with_cache(mut self, cache: CodeCache) -> Self {
        self.cache = Some(Arc::new(cache));
        self
    }

    /// The keys trusted now.
    fn trust(&self) -> Arc<TrustStore> {
        self.trust.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the trusted keys (the trust folder changed): modules
    /// signed only by a removed key are refused from their next load on,
    /// and no version they signed is promoted or rolled back to.
    pub fn replace_trust(&self, trust: TrustStore) {
        let (before, after) = (self.trust().fingerprints(), trust.fingerprints());
        *self.trust.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(trust);
        let removed: Vec<&String> = before.difference(&after).collect();
        let added: Vec<&String> = after.difference(&before).collect();
        if removed.is_empty() && added.is_empty() {
            return;
        }
        tracing::warn!(?removed, ?added, "trusted keys changed");
        let list = |keys: &[&String]| keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
        self.audit.record(AuditEntry {
            event: "trust_changed",
            reason: Some(if removed.is_empty() { "key_added" } else { "key_removed" }.into()),
            detail: Some(format!("removed: [{}]; added: [{}]", list(&removed), list(&added))),
            ..AuditEntry::default()
        });
    }

    /// Whether a loaded version's signer is still trusted (unsigned
    /// development modules count as trusted while the flag allows them).
    fn still_trusted(&self, module: &GameModule) -> bool {
        match module.source.signer() {
            Some(signer) => self.trust().fingerprints().contains(signer),
            None => true,
        }
    }

    /// `version` became active: the game's high-water mark is at least it.
    fn raise_high_water(&self, game: &str, version: &Version) {
        let mut high_water = lock(&self.high_water);
        let mark = high_water.entry(game.to_owned()).or_insert_with(|| version.clone());
        if version > mark {
            *mark = version.clone();
        }
    }

    /// Appends an operator's decision made outside deployment (a ban) to
    /// the same audit log.
    pub fn audit(&self, entry: AuditEntry) {
        self.audit.record(entry);
    }

    /// Waits (up to `timeout`) until every audit record so far is on disk.
    pub fn flush_audit(&self, timeout: std::time::Duration) {
        if !self.audit.flush(timeout) {
            tracing::warn!("the audit log did not reach the disk within {timeout:?}");
        }
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut lock(&self.counters));
    }

    fn reject(&self, file: &Path, module: Option<&VerifiedModule>, why: &Rejection) {
        let code = why.code();
        tracing::error!(file = %file.display(), reason = code, "module rejected: {why}");
        self.count(|c| *c.rejections.entry(code.to_owned()).or_default() += 1);
        let manifest = module.map(VerifiedModule::manifest);
        self.audit.record(AuditEntry {
            event: "reject",
            game: manifest.map(|m| m.name.clone()),
            version: manifest.map(|m| m.version.to_string()),
            digest: module.map(|m| m.digest().to_owned()),
            signer: module.and_then(|m| m.signer().map(str::to_owned)),
            reason: Some(code.to_owned()),
            detail: Some(why.to_string()),
            file: Some(file.display().to_string()),
            ..AuditEntry::default()
        });
    }

    fn accept(&self, file: &Path, module: GameModule) -> Arc<GameModule> {
        let module = Arc::new(module);
        if module.source.signer().is_none() {
            tracing::warn!(file = %file.display(), game = %module.name, "loading UNSIGNED code: trust.allow_unsigned is on (development only)");
        }
        if let Err(e) = crate::blocking::blocking(|| self.store.save(&module)) {
            tracing::error!(game = %module.name, "cannot store version {} in the slot store: {e}", module.version);
        }
        for (old, digest) in self.games.insert(module.clone()) {
            crate::blocking::blocking(|| {
                self.store.remove(&module.name, &old);
                if let Some(cache) = &self.cache {
                    cache.remove(&digest);
                }
            });
        }
        tracing::info!(game = %module.name, version = %module.version, signer = module.source.signer().unwrap_or("UNSIGNED"), "version loaded");
        if let Some(tell) = self.on_loaded.get() {
            tell(&module);
        }
        self.count(|c| c.loaded += 1);
        self.audit.record(AuditEntry {
            event: "load",
            game: Some(module.name.clone()),
            version: Some(module.version.to_string()),
            digest: Some(module.digest().to_owned()),
            signer: module.source.signer().map(str::to_owned),
            file: Some(file.display().to_string()),
            ..AuditEntry::default()
        });
        module
    }

    /// Start-up: loads the slot store, then the modules folder, verifying
    /// everything, and activates each game's persisted version (or its
    /// newest). Bad files are rejected and skipped.
    pub fn load_startup(&self, modules_dir: &Path) {
        let mut files = self.store.files();
        let stored = files.len();
        match std::fs::read_dir(modules_dir) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| crate::modules::watcher::is_candidate(p) && p.is_file())
                    .collect();
                found.sort();
                files.extend(found);
            }
            Err(e) => tracing::error!(dir = %modules_dir.display(), "cannot read the modules folder: {e}"),
        }
        // Versions that arrived in the modules folder while the host was
        // down are updates, promoted like a hot reload would have.
        let mut fresh: BTreeMap<String, Version> = BTreeMap::new();
        // Every version that arrived while the host was down, by game.
        let mut arrived: BTreeMap<String, std::collections::BTreeSet<Version>> = BTreeMap::new();
        for (i, file) in files.into_iter().enumerate() {
            let verified = match loader::read_verified(&self.trust(), &file) {
                Ok(v) => v,
                Err(why) => {
                    self.reject(&file, None, &why);
                    continue;
                }
            };
            match self.games.admit(&verified, false) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(why) => {
                    self.reject(&file, Some(&verified), &why);
                    continue;
                }
            }
            match loader::compile(&self.sandbox, verified.clone(), self.cache.as_deref()) {
                Ok(m) => {
                    let m = self.accept(&file, m);
                    if i >= stored {
                        arrived.entry(m.name.clone()).or_default().insert(m.version.clone());
                        let newest = fresh.entry(m.name.clone()).or_insert_with(|| m.version.clone());
                        if m.version > *newest {
                            *newest = m.version.clone();
                        }
                    }
                }
                Err(why) => self.reject(&file, Some(&verified), &why),
            }
        }
        for game in self.games.loaded_names() {
            let state = self.store.load_state(&game);
            lock(&self.bad).insert(game.clone(), state.bad.clone());
            // Older state files have no mark: the active version is one.
            let mark = state.high_water.clone().max(state.active.clone());
            if let Some(mark) = &mark {
                lock(&self.high_water).insert(game.clone(), mark.clone());
            }
            let persisted = state.active.filter(|v| self.games.get(&game, v).is_ok());
            let update = fresh
                .get(&game)
                .filter(|v| !state.pinned && !state.bad.contains(*v) && mark.as_ref().is_none_or(|m| *v > m));
            // Gated like a hot drop-in; a refused update waits in its slot
            // for `promote --force`.
            let refused = update.filter(|v| !self.gate_at_start(&game, v));
            // Otherwise a version that ran before: not one that arrived
            // meanwhile (only the update is gated), unless nothing ran
            // before (a first start).
            let new = arrived.remove(&game).unwrap_or_default();
            let ran_before = mark.is_some();
            let fallback = || {
                self.games.newest_where(&game, |v| {
                    !state.bad.contains(v) && Some(v) != refused && !(ran_before && new.contains(v))
                })
            };
            let chosen = update
                .filter(|_| refused.is_none())
                .cloned()
                .or(persisted.clone())
                .or_else(fallback);
            let version = match (chosen, refused) {
                (Some(v), _) => Some(v),
                // Nothing else to run: the refused version runs, unpassed,
                // and the log says so.
                (None, Some(v)) => {
                    tracing::error!(game = %game, version = %v, "the hot-fix gate refused the only version of the game there is to run; it runs anyway: load a fix");
                    Some(v.clone())
                }
                (None, None) => self.games.newest(&game),
            };
            if let Some(v) = version {
                let _ = self.games.activate(&game, &v);
                if refused != Some(&v) {
                    lock(&self.passed).entry(game.clone()).or_default().insert(v.clone());
                }
                self.raise_high_water(&game, &v);
                tracing::info!(game = %game, version = %v, pinned = state.pinned, "game active");
            }
            let _ = self.games.set_pinned(&game, state.pinned);
            self.persist(&game);
        }
    }

    /// Hot reload: a complete file appeared in the modules folder.
    /// `Ok(None)`: nothing loaded now (already loaded, or the file looks
    /// incomplete and is looked at again after the settle time).
    pub async fn offer(self: &Arc<Self>, file: &Path) -> Result<Option<Loaded>, Rejection> {
        let Some((module, mut loaded)) = self.load(file, true).await? else {
            return Ok(None);
        };
        if self.games.pinned(&module.name) {
            tracing::info!(game = %module.name, version = %module.version, "loaded, not promoted: the game is pinned");
            return Ok(Some(loaded));
        }
        if let Some(mark) = lock(&self.high_water)
            .get(&module.name)
            .filter(|m| module.version <= **m)
        {
            tracing::warn!(game = %module.name, version = %module.version, high_water = %mark, "loaded, not promoted: a newer version was active before; promote or roll back to it explicitly");
            return Ok(Some(loaded));
        }
        if self.is_bad(&module.name, &module.version) {
            tracing::warn!(game = %module.name, version = %module.version, "loaded, not promoted: this version was rolled back automatically; promote it explicitly");
            return Ok(Some(loaded));
        }
        match self.promote(&module.name, &module.version, Trigger::Update).await {
            Ok(p) => loaded.promotion = Some(p),
            Err(e) => tracing::error!(game = %module.name, "update not promoted: {e}"),
        }
        Ok(Some(loaded))
    }

    /// A version another node of the fleet loaded: verified against this
    /// host's own trust folder and compiled like any file, never promoted
    /// here (which version runs is the fleet's decision). `Ok(None)`:
    /// already loaded.
    pub async fn offer_from_fleet(self: &Arc<Self>, file: &Path) -> Result<Option<Arc<GameModule>>, Rejection> {
        Ok(self.load(file, false).await?.map(|(module, _)| module))
    }

    /// Verifies, admits and compiles `file` into the slots. A file from the
    /// modules folder (`from_folder`) may still be arriving, and may not be
    /// older than the active version.
    async fn load(
        self: &Arc<Self>,
        file: &Path,
        from_folder: bool,
    ) -> Result<Option<(Arc<GameModule>, Loaded)>, Rejection> {
        let t0 = Instant::now();
        let before = file_stamp(file);
        let verified = match crate::blocking::blocking(|| loader::read_verified(&self.trust(), file)) {
            Ok(v) => v,
            Err(why) if from_folder && why.code() == "truncated" && !self.settle.is_zero() => {
                // Maybe still being copied: refused only if it stays as it
                // is; if it changes, the watcher offers it again.
                tracing::info!(file = %file.display(), settle = ?self.settle, "the file looks incomplete; looking again before refusing it");
                let (this, file) = (self.clone(), file.to_owned());
                tokio::spawn(async move {
                    tokio::time::sleep(this.settle).await;
                    if before.is_some() && file_stamp(&file) == before {
                        this.reject(&file, None, &why);
                    }
                });
                return Ok(None);
            }
            Err(why) => {
                self.reject(file, None, &why);
                return Err(why);
            }
        };
        let verify_ms = ms(t0);
        match self.games.admit(&verified, from_folder) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(file = %file.display(), "already loaded");
                return Ok(None);
            }
            Err(why) => {
                self.reject(file, Some(&verified), &why);
                return Err(why);
            }
        }
        let t1 = Instant::now();
        let compiled = {
            let (sandbox, v, cache) = (self.sandbox.clone(), verified.clone(), self.cache.clone());
            tokio::task::spawn_blocking(move || loader::compile(&sandbox, v, cache.as_deref()))
                .await
                .unwrap_or_else(|e| {
                    Err(Rejection::Compile(CompileError::Invalid(format!(
                        "the compiler failed: {e}"
                    ))))
                })
        };
        let module = match compiled {
            Ok(m) => self.accept(file, m),
            Err(why) => {
                self.reject(file, Some(&verified), &why);
                return Err(why);
            }
        };
        let loaded = Loaded {
            game: module.name.clone(),
            version: module.version.to_string(),
            verify_ms,
            compile_ms: ms(t1),
            promotion: None,
        };
        Ok(Some((module, loaded)))
    }

    /// Runs `work` as a job the host owns: it runs to its end even if the
    /// caller stops waiting (an operator's Ctrl-C drops the admin request),
    /// and shutdown waits for it ([`Deployer::finish_jobs`]).
    /// `None` once shutdown began: no new job starts then.
    async fn job<T, F>(self: &Arc<Self>, work: impl FnOnce(Arc<Self>) -> F) -> Option<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        if self.jobs.is_closed() {
            return None;
        }
        match self.jobs.spawn(work(self.clone())).await {
            Ok(done) => Some(done),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Jobs are never aborted; only a runtime going away ends one.
            Err(_) => std::future::pending().await,
        }
    }

    /// Lets the jobs in progress finish (up to `timeout`) and starts no
    /// new one: the first step of shutdown.
    pub async fn finish_jobs(&self, timeout: std::time::Duration) {
        self.jobs.close();
        let _ = tokio::time::timeout(timeout, self.jobs.wait()).await;
    }

    /// Makes `version` active and migrates every live room to it, or
    /// changes nothing.
    pub async fn promote(
        self: &Arc<Self>,
        game: &str,
        version: &Version,
        trigger: Trigger,
    ) -> Result<Promotion, DeployError> {
        self.promote_forced(game, version, trigger, false).await
    }

    /// [`Deployer::promote`]; `force` goes ahead even if the hot-fix gate
    /// finds the version still failing on crash capsules (audited).
    pub async fn promote_forced(
        self: &Arc<Self>,
        game: &str,
        version: &Version,
        trigger: Trigger,
        force: bool,
    ) -> Result<Promotion, DeployError> {
        let (game, version) = (game.to_owned(), version.clone());
        self.job(move |this| async move {
            // The gate takes time: the promotion goes ahead only if nothing
            // else was promoted or rolled back meanwhile.
            let before = this.games.active(&game).map(|m| m.version.clone());
            if !this.gate(&game, &version, trigger, force).await? {
                return this.promote_if(&game, &version, trigger, None).await;
            }
            this.promote_if(&game, &version, trigger, before.as_ref()).await
        })
        .await
        .unwrap_or(Err(DeployError::ShuttingDown))
    }

    /// Runs the hot-fix gate for a promotion that needs it: updates and
    /// promotions, and rollbacks to a version that was not active nor
    /// passed since the host started (an automatic rollback is never held
    /// back). `Ok(true)`: capsules were replayed (it took time).
    async fn gate(&self, game: &str, version: &Version, trigger: Trigger, force: bool) -> Result<bool, DeployError> {
        let cfg = self.rooms.config.capsules.clone();
        let needed = match trigger {
            Trigger::Update | Trigger::Promote => true,
            Trigger::Rollback => !lock(&self.passed).get(game).is_some_and(|p| p.contains(version)),
            // The node that decided ran the gate.
            Trigger::AutoRollback | Trigger::Fleet => false,
        };
        if !cfg.gate || !needed {
            return Ok(false);
        }
        let target = self.games.get(game, version)?;
        let (sandbox, folder) = (self.sandbox.clone(), self.rooms.capsules.clone());
        let t0 = Instant::now();
        let result = tokio::task::spawn_blocking(move || gate::check(&sandbox, &folder, &cfg, &target))
            .await
            .unwrap_or_else(|e| gate::GateResult::broken(format!("the gate failed: {e}")));
        self.judge(game, version, trigger, force, result, t0)
    }

    /// The gate at start-up, for a version that arrived in the modules
    /// folder while the host was down: `false` if it is refused (and
    /// audited as `gate_failed`), so the game's previous version stays.
    /// Runs on the start-up thread, before anything is served.
    fn gate_at_start(&self, game: &str, version: &Version) -> bool {
        let cfg = self.rooms.config.capsules.clone();
        let Ok(target) = self.games.get(game, version) else {
            return true;
        };
        if !cfg.gate {
            return true;
        }
        let t0 = Instant::now();
        let result = gate::check(&self.sandbox, &self.rooms.capsules, &cfg, &target);
        match self.judge(game, version, Trigger::Update, false, result, t0) {
            Ok(_) => true,
            Err(why) => {
                tracing::error!(game, version = %version, "{why}; the game's previous version stays active");
                false
            }
        }
    }

    /// Records what the gate found on `version` (summary for `status`,
    /// audit, counters) and refuses it unless `force`. `Ok(true)`: capsules
    /// were replayed.
    fn judge(
        &self,
        game: &str,
        version: &Version,
        trigger: Trigger,
        force: bool,
        result: gate::GateResult,
        t0: Instant,
    ) -> Result<bool, DeployError> {
        if result.checked.is_empty() {
            return Ok(false);
        }
        let failing: Vec<String> = result
            .failing()
            .iter()
            .map(|c| format!("{} ({}): {}", c.capsule, c.signature, c.detail.as_deref().unwrap_or("")))
            .collect();
        let fixed: Vec<String> = result.fixed().iter().map(|c| c.capsule.clone()).collect();
        let refused = !failing.is_empty() && !force;
        tracing::info!(game, version = %version, checked = result.checked.len(), fixed = fixed.len(), failing = failing.len(), ms = ms(t0), "hot-fix gate");
        lock(&self.gates).insert(
            (game.to_owned(), version.clone()),
            result.summary(force && !failing.is_empty()),
        );
        let event = match (failing.is_empty(), force) {
            (true, _) => "gate_passed",
            (false, true) => "gate_forced",
            (false, false) => "gate_failed",
        };
        self.audit.record(AuditEntry {
            event,
            game: Some(game.to_owned()),
            version: Some(version.to_string()),
            reason: Some(format!("{trigger:?}").to_lowercase()),
            detail: Some(format!(
                "replayed {} crash capsules; fixes: [{}]; still fails: [{}]",
                result.checked.len(),
                fixed.join(", "),
                failing.join("; ")
            )),
            ..AuditEntry::default()
        });
        if refused {
            self.count(|c| c.gate_refused += 1);
            crate::blocking::blocking(|| self.flush_audit(AUDIT_FLUSH));
            return Err(DeployError::GateFailed {
                game: game.to_owned(),
                version: version.to_string(),
                capsules: failing,
            });
        }
        if !failing.is_empty() {
            self.count(|c| c.gate_forced += 1);
            tracing::warn!(game, version = %version, "promoted past the hot-fix gate (--force): {}", failing.join("; "));
        }
        Ok(true)
    }

    /// [`Deployer::promote`], only if `expected` is still the active version
    /// once the game's swap lock is held. Every room is prepared and moved
    /// first; only then are the active pointer, the persisted state and the
    /// audit changed, together (no room is created meanwhile: the swap lock
    /// is held throughout).
    async fn promote_if(
        &self,
        game: &str,
        version: &Version,
        trigger: Trigger,
        expected: Option<&Version>,
    ) -> Result<Promotion, DeployError> {
        let swap = self
            .games
            .swap_lock(game)
            .ok_or_else(|| LookupError::Game(game.into()))?;
        let _migrating = swap.write().await;
        if let Some(expected) = expected
            && self.games.active(game).is_none_or(|m| m.version != *expected)
        {
            return Err(DeployError::Moved(game.to_owned()));
        }
        let target = self.games.get(game, version)?;
        if !self.still_trusted(&target) {
            return Err(DeployError::Untrusted {
                game: game.to_owned(),
                version: version.to_string(),
            });
        }
        let before = self.games.active(game);
        let t1 = Instant::now();
        let mut flip_us = 0.0;
        let mut refused = None;
        // Once every room is ready: the new version becomes active and
        // that is on disk before any room switches, so players never see
        // a version a restart would not bring back.
        let migrated = self
            .rooms
            .migrate_then(game, &target, || {
                let t0 = Instant::now();
                if let Err(e) = self.games.activate(game, version) {
                    // The version left the slots while the rooms got ready
                    // (a newer upload evicted it): the rooms stay.
                    let why = e.to_string();
                    refused = Some(e);
                    return Err(why);
                }
                flip_us = t0.elapsed().as_secs_f64() * 1e6;
                self.raise_high_water(game, version);
                if matches!(trigger, Trigger::Promote)
                    && lock(&self.bad).get_mut(game).is_some_and(|b| b.remove(version))
                {
                    tracing::warn!(game, version = %version, "an operator promoted a version that was rolled back automatically");
                }
                if let Err(e) = self.save(game) {
                    // Not on disk: the rooms stay where they are, and so
                    // does the active version.
                    if let Some(b) = &before {
                        let _ = self.games.activate(game, &b.version);
                    }
                    return Err(format!("cannot record the new active version: {e}"));
                }
                // Before any room switches, so the probation checker never
                // sees the new version active without its probation.
                self.put_on_probation(game, before.as_deref(), &target, trigger);
                Ok(())
            })
            .await;
        let migrate_ms = ms(t1);
        if let Some(e) = refused {
            return Err(e.into());
        }
        let from = before.as_ref().map(|m| m.version.to_string());
        match migrated {
            Ok(rooms) => {
                // Every room runs one version again: a canary is over.
                if let Some((candidate, _)) = self.games.canary(game)
                    && candidate != *version
                {
                    self.audit.record(AuditEntry {
                        event: "canary_ended",
                        game: Some(game.to_owned()),
                        version: Some(candidate.to_string()),
                        detail: Some(format!("{version} was made active ({trigger:?})")),
                        ..AuditEntry::default()
                    });
                }
                let _ = self.games.set_canary(game, None);
                lock(&self.canaries).remove(game);
                lock(&self.passed)
                    .entry(game.to_owned())
                    .or_default()
                    .insert(version.clone());
                tracing::info!(game, from = ?from, to = %version, rooms, flip_us, migrate_ms, "{} done", trigger.event());
                self.count(|c| match trigger {
                    Trigger::Rollback => c.rollbacks += 1,
                    Trigger::AutoRollback => c.auto_rollbacks += 1,
                    _ => c.promotions += 1,
                });
                self.audit.record(AuditEntry {
                    event: trigger.event(),
                    game: Some(game.to_owned()),
                    version: Some(version.to_string()),
                    from: from.clone(),
                    digest: Some(target.digest().to_owned()),
                    signer: target.source.signer().map(str::to_owned),
                    reason: Some(format!("{trigger:?}").to_lowercase()),
                    detail: Some(format!("{rooms} rooms migrated")),
                    ..AuditEntry::default()
                });
                // The decision is on disk before it is answered: the
                // active version, its stored state and its audit record
                // change together.
                crate::blocking::blocking(|| self.flush_audit(AUDIT_FLUSH));
                // A version hot-loaded from the modules folder counts too:
                // a node that starts later converges on it, not on an
                // older decision.
                if !matches!(trigger, Trigger::Fleet) {
                    self.decided(game);
                }
                Ok(Promotion {
                    game: game.to_owned(),
                    from,
                    to: version.to_string(),
                    flip_us,
                    migrate_ms,
                    rooms,
                })
            }
            Err(reasons) => {
                let kept = from.clone().unwrap_or_default();
                tracing::error!(game, to = %version, "promotion aborted, staying on {kept}: {}", reasons.join("; "));
                self.count(|c| c.aborted += 1);
                self.audit.record(AuditEntry {
                    event: "promotion_aborted",
                    game: Some(game.to_owned()),
                    version: Some(version.to_string()),
                    from,
                    digest: Some(target.digest().to_owned()),
                    reason: Some("restore_failed".into()),
                    detail: Some(reasons.join("; ")),
                    ..AuditEntry::default()
                });
                Err(DeployError::Aborted { kept, reasons })
            }
        }
    }

    /// Goes back to `to`, or to the newest version below the active one.
    pub async fn rollback(self: &Arc<Self>, game: &str, to: Option<Version>) -> Result<Promotion, DeployError> {
        self.rollback_forced(game, to, false).await
    }

    /// [`Deployer::rollback`]; `force` passes the hot-fix gate, which holds
    /// back a rollback to a version that was never active nor passed it.
    pub async fn rollback_forced(
        self: &Arc<Self>,
        game: &str,
        to: Option<Version>,
        force: bool,
    ) -> Result<Promotion, DeployError> {
        let to = match to {
            Some(v) => v,
            None => self.games.previous(game)?,
        };
        self.promote_forced(game, &to, Trigger::Rollback, force).await
    }

    /// Shadows up to `rooms` live rooms of `game` (those on its active
    /// version) with `version` for `secs`: the candidate takes copies of
    /// their inputs from their checkpoints on, off the message path, and
    /// its outputs are compared with the active version's.
    pub async fn shadow(
        &self,
        game: &str,
        version: &Version,
        rooms: usize,
        secs: f64,
    ) -> Result<shadow::Report, DeployError> {
        use std::sync::atomic::Ordering;
        let candidate = self.games.get(game, version)?;
        let active = self
            .games
            .active(game)
            .ok_or_else(|| LookupError::Game(game.to_owned()))?;
        // One at a time, and at most a quarter of the instance pool: the
        // rest stays for rooms, their restarts and hot swaps.
        if self.shadowing.swap(true, Ordering::AcqRel) {
            return Err(DeployError::ShadowRunning);
        }
        struct Done<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _done = Done(&self.shadowing);
        let pool = (self.rooms.config.sandbox.max_instances as usize / 4).max(1);
        let names = self.rooms.rooms_running(game, active.digest(), rooms.min(pool));
        let t0 = Instant::now();
        let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
        let (feeds, thread) =
            shadow::start(self.sandbox.clone(), candidate, names.clone(), until).map_err(|e| DeployError::Aborted {
                kept: active.version.to_string(),
                reasons: vec![format!("cannot start the shadow thread: {e}")],
            })?;
        for (room, feed) in names.iter().zip(feeds) {
            self.rooms.shadow(game, room, feed).await;
        }
        tracing::info!(game, candidate = %version, rooms = names.len(), secs, "shadow run started");
        let rooms = tokio::task::spawn_blocking(move || thread.join().unwrap_or_default())
            .await
            .unwrap_or_default();
        Ok(shadow::Report {
            game: game.to_owned(),
            active: active.version.to_string(),
            candidate: version.to_string(),
            secs: t0.elapsed().as_secs_f64(),
            rooms,
        })
    }

    /// Pins a game (updates load but wait), first promoting `version` if
    /// given (`force`: past the hot-fix gate).
    pub async fn pin(
        self: &Arc<Self>,
        game: &str,
        version: Option<Version>,
        force: bool,
    ) -> Result<Option<Promotion>, DeployError> {
        let promotion = match version {
            Some(v) => Some(self.promote_forced(game, &v, Trigger::Promote, force).await?),
            None => None,
        };
        self.set_pinned(game, true, None)?;
        self.decided(game);
        Ok(promotion)
    }

    /// Unpins a game: later updates are promoted again.
    pub fn unpin(&self, game: &str) -> Result<(), DeployError> {
        self.set_pinned(game, false, None)?;
        self.decided(game);
        Ok(())
    }

    /// Pins or unpins as the fleet decided on another node.
    pub fn pin_for_fleet(&self, game: &str, pinned: bool) -> Result<(), DeployError> {
        self.set_pinned(game, pinned, Some("fleet decision"))
    }

    fn set_pinned(&self, game: &str, pinned: bool, detail: Option<&str>) -> Result<(), DeployError> {
        self.games.set_pinned(game, pinned)?;
        self.persist(game);
        self.audit.record(AuditEntry {
            event: if pinned { "pin" } else { "unpin" },
            game: Some(game.to_owned()),
            version: self.games.active(game).map(|m| m.version.to_string()),
            detail: detail.map(str::to_owned),
            ..AuditEntry::default()
        });
        Ok(())
    }

    /// Has `decision` told of every decision taken here on a game's
    /// active version or pin (an operator's, or a probation's): a fleet
    /// passes them on to its other nodes.
    pub fn on_decision(&self, decision: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.on_decision.set(Box::new(decision));
    }

    /// Has `loaded` told of every version loaded into the slots from now
    /// on: a fleet ships them to its other nodes.
    pub fn on_loaded(&self, loaded: impl Fn(&Arc<GameModule>) + Send + Sync + 'static) {
        let _ = self.on_loaded.set(Box::new(loaded));
    }

    fn decided(&self, game: &str) {
        if let Some(tell) = self.on_decision.get() {
            tell(game);
        }
    }

    fn persist(&self, game: &str) {
        if let Err(e) = self.save(game) {
            tracing::error!(game, "cannot persist the active version: {e}");
        }
    }

    /// Writes the game's active version, pin, bad versions and high-water
    /// mark to the slot store.
    fn save(&self, game: &str) -> std::io::Result<()> {
        let state = GameState {
            active: self.games.active(game).map(|m| m.version.clone()),
            pinned: self.games.pinned(game),
            bad: lock(&self.bad).get(game).cloned().unwrap_or_default(),
            high_water: lock(&self.high_water).get(game).cloned(),
        };
        crate::blocking::blocking(|| self.store.save_state(game, &state))
    }

    /// Games, versions, rooms per version, counters.
    pub fn status(&self) -> Status {
        // Counted first: the games registry's lock is never held while the
        // rooms' lock is taken (a join takes them the other way round).
        let counts = self.rooms.running_counts();
        let mut games = self
            .games
            .status(|g, d| counts.get(&(g.to_owned(), d.to_owned())).copied().unwrap_or(0));
        for g in &mut games {
            for v in &mut g.versions {
                v.bad = v.version.parse().is_ok_and(|v| self.is_bad(&g.name, &v));
            }
            g.probation = lock(&self.probations).get(&g.name).map(|p| p.version.to_string());
            let gates = lock(&self.gates);
            for v in &mut g.versions {
                v.gate = v
                    .version
                    .parse()
                    .ok()
                    .and_then(|ver: Version| gates.get(&(g.name.clone(), ver)).cloned());
            }
        }
        Status {
            games,
            rooms: self.rooms.count(),
            counters: lock(&self.counters).clone(),
        }
    }

    /// The game registry.
    pub fn games(&self) -> &Arc<Games> {
        &self.games
    }
}

/// How long a promotion waits for its audit record to reach the disk.
const AUDIT_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// A file's size and modification time, to tell whether it changed.
fn file_stamp(file: &Path) -> Option<(u64, Option<std::time::SystemTime>)> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

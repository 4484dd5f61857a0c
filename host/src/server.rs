//! Wires the host together: sandbox, modules, rooms and listeners, until
//! shutdown.

use crate::admin;
use crate::auth::Auth;
use crate::config::Config;
use crate::deploy::Deployer;
use crate::modules::audit::AuditLog;
use crate::modules::cache::CodeCache;
use crate::modules::store::SlotStore;
use crate::modules::{self, Games, TrustStore};
use crate::net::Transport;
use crate::net::admission::{AcceptSlot, Admission, ConnectionPermit, Refused};
use crate::net::metered::Metered;
use crate::net::stream::Stream;
use crate::net::tcp::TcpTransport;
use crate::net::tls::Tls;
use crate::net::ws::WsTransport;
use crate::protocol::{self, ErrorCode, ProtocolError};
use crate::readiness::{Gauges, Health};
use crate::room::Rooms;
use crate::sandbox::Sandbox;
use crate::session::{Session, Sessions};
use crate::storage::Store;
use crate::storage::kv::{KvLimits, KvSpaces};
use crate::{systemd, web};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

/// What the listeners share.
struct Shared {
    sessions: Arc<Sessions>,
    admission: Arc<Admission>,
    /// The player listeners' TLS, when `[tls]` is set.
    tls: Option<Tls>,
    /// Serve each connection inside a span (`observability.spans`).
    spans: bool,
}

/// Which transport a listener speaks.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Ws,
    Tcp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ws => "ws",
            Kind::Tcp => "tcp",
        }
    }
}

/// Runs the host until `shutdown` resolves, then shuts down gracefully:
/// no new connections, every room saves its state, every player is told,
/// all within `shutdown.timeout_ms`. Prints one `listening <kind> <addr>`
/// line per listener (`ws`, `tcp`, `web`, `admin`) on stdout once it
/// accepts connections.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let config = Arc::new(config);
    crate::metrics::set_enabled(config.observability.metrics);
    let state_dir = &config.state.dir;
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating the state folder {}", state_dir.display()))?;
    let trust = load_trust(&config)?;
    if config.trust.allow_unsigned {
        tracing::warn!("trust.allow_unsigned is on: unsigned modules will load (development only)");
    } else if trust.keys().is_empty() {
        tracing::warn!(dir = %config.trust.dir.display(), "no trusted keys: every module will be rejected");
    }
    crate::limits::check(
        config.net.max_connections,
        config.sandbox.max_instances,
        config.net.listen_backlog,
    );
    let sandbox = Arc::new(Sandbox::new(&config.sandbox).context("creating the WebAssembly engine")?);
    let games = Arc::new(Games::new(config.slots.keep));
    // The database first: a damaged file or one from a newer host stops
    // the start here, with its path, before anything listens.
    // In a fleet, JetStream is the database, and joining it comes first.
    let cluster = match &config.cluster {
        Some(c) => Some(crate::cluster::Cluster::connect(c, &config.net).await?),
        None => None,
    };
    let (store, mut loaded) = {
        let (dir, cfg, cluster) = (state_dir.clone(), config.storage.clone(), cluster.clone());
        tokio::task::spawn_blocking(move || match cluster {
            Some(c) => {
                let path = std::path::PathBuf::from(format!("nats:{}", c.node()));
                Store::with_backend(Box::new(crate::cluster::journal::JetStreamBackend::new(c)), path, &cfg)
            }
            None => Store::open(&dir, &cfg),
        })
        .await?
        .context("opening the database")?
    };
    if config.storage.durability == crate::config::Durability::Off {
        tracing::warn!("storage.durability is off: a crash of the host loses every room");
    }
    let kv = KvSpaces::new(
        KvLimits {
            max_value: config.storage.kv_max_value_bytes,
            quota: config.storage.kv_quota_mib << 20,
        },
        std::mem::take(&mut loaded.kv),
    );
    let rooms = Rooms::new(
        sandbox.clone(),
        games.clone(),
        config.clone(),
        Some(store.clone()),
        Some(kv.clone()),
    );
    if let Some(c) = &cluster {
        rooms.join_fleet(c.clone());
    }
    let mut deployer = Deployer::new(
        sandbox.clone(),
        trust,
        games.clone(),
        rooms.clone(),
        SlotStore::open(state_dir).context("opening the slot store")?,
        AuditLog::open(&state_dir.join("audit.log")).context("opening the audit log")?,
    );
    deployer = deployer.with_probation(config.probation.clone());
    // A truncated file gets twenty debounce periods (1 to 30 s) to finish
    // arriving before it is refused.
    let settle =
        (Duration::from_millis(config.modules.debounce_ms) * 20).clamp(Duration::from_secs(1), Duration::from_secs(30));
    deployer = deployer.with_settle(settle);
    if config.state.code_cache {
        let dir = config.state.code_cache_dir.as_deref().unwrap_or(state_dir);
        deployer = deployer.with_cache(CodeCache::open(dir, sandbox.engine()).context("opening the code cache")?);
    }
    let deployer = Arc::new(deployer);
    {
        let (deployer, dir) = (deployer.clone(), config.modules.dir.clone());
        tokio::task::spawn_blocking(move || deployer.load_startup(&dir)).await?;
    }
    if games.names().is_empty() {
        tracing::warn!(dir = %config.modules.dir.display(), "no games loaded; build and sign some with `just guests`");
    }
    tokio::spawn(deployer.clone().watch_probations(Duration::from_millis(100)));
    let _watcher = if config.modules.watch {
        Some(watch_modules(&config, deployer.clone())?)
    } else {
        None
    };
    let _trust_watcher = watch_trust(&config, deployer.clone());

    // Every room the database holds comes back now, before players can
    // connect, with its players' seats parked for their resumes.
    let first_player = loaded.next_player;
    let mut loaded_bans = std::mem::take(&mut loaded.bans);
    let recovering = std::time::Instant::now();
    let rooms_before = loaded.rooms.len();
    let seats = rooms.recover(loaded).await;
    if rooms_before > 0 {
        tracing::info!(
            rooms = rooms.count(),
            of = rooms_before,
            seats = seats.len(),
            ms = recovering.elapsed().as_millis() as u64,
            "rooms recovered from the database"
        );
    }
    let auth = Auth::load(&config.auth, Path::new("."), std::mem::take(&mut loaded_bans))
        .context("loading the join ticket keys ([auth])")?;
    let tls = match &config.tls {
        Some(tls) => Some(Tls::new(tls).context("loading the TLS certificate ([tls])")?),
        None => None,
    };
    let _tls_watcher = tls.as_ref().and_then(Tls::watch);
    let _keys_watcher = auth.watch_keys();
    let sessions = Sessions::new(rooms.clone(), config.net.clone(), first_player, auth.clone())
        .context("seeding resume tokens from the operating system's random source")?;
    let shared = Arc::new(Shared {
        sessions: sessions.clone(),
        admission: Admission::new(config.admission_limits()),
        tls: tls.clone(),
        spans: config.observability.spans,
    });
    sessions.park_recovered(seats, &shared.admission);
    let health = Health::new(games.clone());
    let mut accepting = Vec::new();
    let (mut ws_local, mut tcp_local) = (None, None);
    for (kind, addr) in [(Kind::Ws, config.net.ws), (Kind::Tcp, config.net.tcp)] {
        let Some(addr) = addr else { continue };
        let (listener, local) = listen(kind.name(), addr, config.net.listen_backlog)?;
        match kind {
            Kind::Ws => ws_local = Some(local),
            Kind::Tcp => tcp_local = Some(local),
        }
        accepting.push(tokio::spawn(accept_loop(kind, listener, shared.clone())));
    }
    let ws_port = ws_local.map(|a| a.port());
    // The fleet hears of this node once players can reach it.
    if let Some(c) = &cluster {
        c.set_listeners(ws_local, tcp_local);
        c.start(crate::cluster::failover::Host {
            rooms: rooms.clone(),
            sessions: sessions.clone(),
            admission: shared.admission.clone(),
        });
        tokio::spawn(crate::cluster::journal::follow_kv(c.clone(), kv));
        crate::cluster::deploys::start(c.clone(), deployer.clone());
        crate::cluster::modules::start(
            c.clone(),
            deployer.clone(),
            state_dir.join("fleet-modules"),
            config.slots.keep,
        );
        tracing::info!(node = c.node(), "joined the fleet");
    }
    // Players can connect from here on.
    health.set_listening();
    let mut services = Vec::new();
    if let Some(addr) = config.net.web {
        let (listener, _) = listen("web", addr, config.net.listen_backlog)?;
        let app = web::router(Arc::new(web::Site {
            ws_port,
            games: games.clone(),
            auth: auth.clone(),
            tls: tls.is_some(),
        }));
        services.push(match &tls {
            Some(tls) => serve_https("web", listener, tls.clone(), app),
            None => serve_http("web", listener, app),
        });
    }
    if let Some(addr) = config.admin.listen {
        let token = admin::ensure_token(state_dir).context("creating the admin token")?;
        let (listener, local) = listen("admin", addr, ADMIN_BACKLOG)?;
        if !local.ip().is_loopback() {
            tracing::warn!("the admin API listens on {local}, beyond loopback; it is protected by the token only");
        }
        let gauges = Gauges {
            rooms: rooms.clone(),
            sandbox: sandbox.clone(),
            connections: shared.admission.clone(),
            resumes: sessions.resumes.clone(),
        };
        let app = admin::router(Arc::new(admin::Admin {
            deployer: deployer.clone(),
            token,
            health: health.clone(),
            gauges,
            auth: auth.clone(),
            store: store.clone(),
            moderation: std::sync::Mutex::new(()),
        }));
        services.push(serve_http("admin", listener, app));
    }
    systemd::ready();
    systemd::spawn_watchdog();

    shutdown.await;
    let timeout = Duration::from_millis(config.shutdown.timeout_ms);
    let deadline = tokio::time::Instant::now() + timeout;
    tracing::info!(
        timeout_ms = config.shutdown.timeout_ms,
        "shutting down: no new players, saving rooms"
    );
    health.set_draining();
    systemd::stopping();
    for t in accepting {
        t.abort();
    }
    // A promotion or rollback in progress finishes (or gives up within the
    // migration's own bound) before the rooms save their state.
    deployer.finish_jobs(timeout / 2).await;
    let saved = rooms
        .shutdown(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await;
    sessions.shutdown();
    while shared.admission.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = store.submit(crate::storage::Op::PlayerIds {
        next: sessions.next_player(),
    });
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !store.flush(left.max(Duration::from_millis(100))).await {
        tracing::error!(db = %store.path().display(), "storage did not take every write before the host stopped");
    }
    store.close();
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    crate::blocking::blocking(|| deployer.flush_audit(left.max(Duration::from_millis(100))));
    tracing::info!(
        rooms_saved = saved,
        connections_left = shared.admission.open(),
        "stopped"
    );
    println!(
        "stopped rooms_saved={saved} connections_left={}",
        shared.admission.open()
    );
    for t in services {
        t.abort();
    }
    Ok(())
}

/// The admin API's backlog: a few operators and a scraper.
const ADMIN_BACKLOG: u32 = 128;

/// Binds the `kind` listener (`ws`, `tcp`, `web`, `admin`) with room for
/// `backlog` connections not yet accepted, and announces it on stdout as
/// `listening <kind> <addr>`.
fn listen(kind: &str, addr: SocketAddr, backlog: u32) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = bind(addr, backlog).with_context(|| format!("binding the {kind} listener to {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!("{kind} listener on {local}");
    println!("listening {kind} {local}");
    Ok((listener, local))
}

/// A listening socket with `backlog` (tokio's `TcpListener::bind` fixes
/// it at 128, as the standard library does: a burst of reconnects from
/// thousands of players overflows it).
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted host rebinds at once (not
    // on Windows, where it would let another socket take the port).
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves an HTTP router on `listener` until the task is aborted.
fn serve_http(kind: &'static str, listener: TcpListener, app: axum::Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the {kind} listener stopped: {e}");
        }
    })
}

/// Serves an HTTP router over TLS on `listener` until the task is
/// aborted. Handshakes run on their own tasks, bounded in time, so a slow
/// or silent client holds up nobody.
fn serve_https(kind: &'static str, listener: TcpListener, tls: Tls, app: axum::Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let local = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("the {kind} listener has no address: {e}");
                return;
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        // The cryptographic part of handshakes runs a few at a time, so a
        // flood of them cannot take the host's CPU from the rooms; waiting
        // for a client's hello takes no place, so silent clients hold up
        // nobody.
        let handshaking = Arc::new(tokio::sync::Semaphore::new(WEB_HANDSHAKES));
        // Stops accepting when this task stops (or is aborted).
        let _handshakes = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!("{kind} accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (config, tx, handshaking) = (tls.acceptor().config().clone(), tx.clone(), handshaking.clone());
                tokio::spawn(async move {
                    let hello = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
                    let Ok(Ok(start)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, hello).await else {
                        return tracing::debug!(%peer, "{kind}: no TLS hello");
                    };
                    let Ok(_place) = handshaking.acquire_owned().await else {
                        return;
                    };
                    match tokio::time::timeout(WEB_HANDSHAKE_REST, start.into_stream(config)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((Stream::Tls(Box::new(stream)), peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "{kind} TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "{kind} TLS handshake timed out"),
                    }
                });
            }
        }));
        let listener = Handshaken { rx, local };
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the {kind} listener stopped: {e}");
        }
    })
}

/// TLS handshakes the demo site runs at once (after the client's hello).
const WEB_HANDSHAKES: usize = 64;

/// How long the rest of a handshake may take once the hello came.
const WEB_HANDSHAKE_REST: Duration = Duration::from_secs(5);

/// Connections whose TLS handshake is done, for axum.
struct Handshaken {
    rx: tokio::sync::mpsc::Receiver<(Stream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Handshaken {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The accepting task is gone: nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The stream to speak on: the TCP connection itself, or TLS over it once
/// the handshake is done.
async fn secure(stream: TcpStream, tls: Option<&Tls>) -> std::io::Result<Stream> {
    match tls {
        None => Ok(Stream::Plain(stream)),
        Some(tls) => tls.acceptor().accept(stream).await.map(|s| Stream::Tls(Box::new(s))),
    }
}

/// The trusted keys as the config and the trust folder say now.
fn load_trust(config: &Config) -> anyhow::Result<TrustStore> {
    let t = &config.trust;
    Ok(TrustStore::load(&t.keys, Some(&t.dir), t.allow_unsigned)?.with_scopes(t.scopes.clone()))
}

/// Reloads the trusted keys whenever the trust folder changes, so removing
/// a key revokes it without a restart. A folder that no longer reads (a
/// bad key file) keeps the keys trusted before, and says so. `None` if the
/// folder cannot be watched (logged).
fn watch_trust(config: &Config, deployer: Arc<Deployer>) -> Option<notify::RecommendedWatcher> {
    let dir = config.trust.dir.clone();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), "cannot create the trust folder to watch it: {e}");
        return None;
    }
    let config = config.clone();
    crate::watch::on_change("trust folder", vec![dir], move || match load_trust(&config) {
        Ok(trust) => deployer.replace_trust(trust),
        Err(e) => tracing::error!("the trust folder changed but cannot be read; the keys trusted before stay: {e:#}"),
    })
}

/// Feeds complete files from the modules folder to the deployer, one at a
/// time, so versions of a game are taken in the order they landed.
fn watch_modules(config: &Config, deployer: Arc<Deployer>) -> anyhow::Result<notify::RecommendedWatcher> {
    let dir = &config.modules.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating the modules folder {}", dir.display()))?;
    let debounce = std::time::Duration::from_millis(config.modules.debounce_ms);
    let (watcher, mut files) =
        modules::watcher::watch(dir, debounce).with_context(|| format!("watching {}", dir.display()))?;
    tokio::spawn(async move {
        while let Some(file) = files.recv().await {
            if let Ok(Some(loaded)) = deployer.offer(&file).await {
                tracing::info!(
                    game = %loaded.game,
                    version = %loaded.version,
                    verify_ms = loaded.verify_ms,
                    compile_ms = loaded.compile_ms,
                    migrate_ms = loaded.promotion.as_ref().map(|p| p.migrate_ms),
                    "hot reload"
                );
            }
        }
    });
    Ok(watcher)
}

/// Accepts connections while there is a place for them (see
/// [`crate::net::admission`]): when every place is taken, new connections
/// wait in the kernel's backlog.
async fn accept_loop(kind: Kind, listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let slot = shared.admission.accept_slot().await;
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(serve_connection(kind, stream, peer, slot, shared.clone()));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!("{} accept failed: {e}", kind.name());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A WebSocket handshake must complete within this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a refused connection may take to hear why (handshake
/// included) before it is dropped: refusals hold one of few places.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// A connection's task. What it awaits in turn (the handshakes, the
/// session) is boxed: a task's future is allocated once, as large as the
/// largest state it may reach, for the connection's whole life, and an
/// idle connection should hold only what its session needs.
async fn serve_connection(kind: Kind, stream: TcpStream, peer: SocketAddr, slot: AcceptSlot, shared: Arc<Shared>) {
    // Admitted before the handshake, so connections that never finish one
    // count against the limits too.
    match shared.admission.admit(peer.ip(), slot) {
        Ok(permit) => {
            let net = &shared.sessions.net;
            let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
            let stream = match tokio::time::timeout_at(deadline, Box::pin(secure(stream, shared.tls.as_ref()))).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            match kind {
                Kind::Ws => match tokio::time::timeout_at(deadline, Box::pin(WsTransport::accept(stream, net))).await {
                    Ok(Ok(t)) => serve(kind, t, peer, permit, &shared).await,
                    Ok(Err(e)) => tracing::debug!(%peer, "websocket handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "websocket handshake timed out"),
                },
                Kind::Tcp => serve(kind, TcpTransport::new(stream, net), peer, permit, &shared).await,
            }
        }
        // Told why while a refusal permit lasts; beyond, dropped at once.
        Err((why, Some(_telling))) => {
            let telling = Box::pin(async {
                if let Ok(stream) = secure(stream, shared.tls.as_ref()).await {
                    refuse(kind, stream, why, &shared).await;
                }
            });
            let _ = tokio::time::timeout(REFUSAL_TIME, telling).await;
        }
        Err((_, None)) => {}
    }
}

/// Tells a connection that was not admitted why, and closes it.
async fn refuse(kind: Kind, stream: Stream, why: Refused, shared: &Shared) {
    let code = match why {
        Refused::HostFull => ErrorCode::ServerFull,
        Refused::AddressFull => ErrorCode::TooManyConnections,
    };
    let frame = protocol::error_frame(&ProtocolError::new(code, why.to_string()), None, None);
    let net = &shared.sessions.net;
    match kind {
        Kind::Ws => {
            if let Ok(mut t) = WsTransport::accept(stream, net).await {
                let _ = t.send(frame).await;
                t.close().await;
            }
        }
        Kind::Tcp => {
            let mut t = TcpTransport::new(stream, net);
            let _ = t.send(frame).await;
            t.close().await;
        }
    }
}

/// Serves a player, counted (`observability.metrics`) and inside a span
/// naming the player, transport and peer (`observability.spans`), so every
/// log line of the connection carries them.
///
/// Plain functions, not `async fn`s, so the boxed future is the session's
/// and nothing else: an `async fn` would also keep room for the arguments
/// it moved into the session.
fn serve<'a, T: Transport + Sync + 'a>(
    kind: Kind,
    transport: T,
    peer: SocketAddr,
    permit: ConnectionPermit,
    shared: &Shared,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    if crate::metrics::enabled() {
        let metered = Metered::new(transport, crate::metrics::METRICS.transport(kind.name()));
        Box::pin(serve_session(kind, metered, peer, permit, shared))
    } else {
        Box::pin(serve_session(kind, transport, peer, permit, shared))
    }
}

fn serve_session<T: Transport + Sync>(
    kind: Kind,
    transport: T,
    peer: SocketAddr,
    permit: ConnectionPermit,
    shared: &Shared,
) -> impl Future<Output = ()> + use<T> {
    let session = Session::new(transport, shared.sessions.clone(), permit);
    let player = session.player();
    let span = if shared.spans {
        tracing::info_span!("conn", player, transport = kind.name(), %peer)
    } else {
        tracing::Span::none()
    };
    session.run().instrument(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Of `n` connections opened at once to a listener that accepts none
    /// yet, how many it then accepts (the rest the kernel dropped).
    async fn held(backlog: u32, n: usize) -> usize {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), backlog).expect("bind");
        let addr = listener.local_addr().expect("address");
        let connects = (0..n).map(|_| {
            tokio::spawn(tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            ))
        });
        let mut clients = Vec::new();
        for c in connects.collect::<Vec<_>>() {
            if let Ok(Ok(Ok(stream))) = c.await {
                clients.push(stream);
            }
        }
        let mut accepted = 0;
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await {
            accepted += 1;
        }
        accepted
    }

    /// The configured backlog is the one the kernel applies: with room for
    /// them, every connection of a burst waits to be accepted; with a
    /// smaller backlog some are dropped (so the first check can fail).
    /// Linux's backlog rules (the queue holds backlog + 1; SYNs beyond it
    /// are dropped); skipped where `net.core.somaxconn` caps 256.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_burst_within_the_backlog_waits_whole_to_be_accepted() {
        if crate::limits::somaxconn().is_some_and(|cap| cap < 256) {
            eprintln!("skipped: net.core.somaxconn is below 256");
            return;
        }
        assert_eq!(held(256, 100).await, 100);
        let small = held(16, 100).await;
        assert!(small < 100, "a backlog of 16 held all 100 connections");
    }
}

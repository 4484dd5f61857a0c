//! Wires the host together: sandbox, modules, rooms and listeners, until
//! shutdown.

use crate::config::Config;
use crate::modules::{self, Catalog};
use crate::net::tcp::TcpTransport;
use crate::net::ws::WsTransport;
use crate::net::{ConnectionLimit, Transport};
use crate::protocol::{self, ErrorCode, ProtocolError};
use crate::room::Rooms;
use crate::sandbox::Sandbox;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::{TcpListener, TcpStream};

/// What the listeners share.
struct Shared {
    rooms: Arc<Rooms>,
    limit: Arc<ConnectionLimit>,
    next_player: AtomicU64,
    max_message_bytes: usize,
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

/// Loads the games of `config.modules.dir` into a fresh catalog. Files that
/// fail are logged with their code and skipped.
pub fn load_games(sandbox: &Sandbox, config: &Config) -> anyhow::Result<Catalog> {
    let catalog = Catalog::default();
    let dir = &config.modules.dir;
    match modules::load_dir(sandbox, dir) {
        Ok((loaded, rejected)) => {
            for e in rejected {
                tracing::error!(code = e.code(), "module rejected: {e}");
            }
            for m in loaded {
                tracing::info!(game = %m.name, version = %m.version, bytes = m.size, "game loaded");
                catalog.insert(m);
            }
        }
        Err(e) => tracing::error!(dir = %dir.display(), "cannot read the modules folder: {e}"),
    }
    if catalog.is_empty() {
        tracing::warn!(dir = %dir.display(), "no games loaded; build some with `just guests`");
    }
    Ok(catalog)
}

/// Runs the host until `shutdown` resolves. Prints one `listening <kind>
/// <addr>` line per listener on stdout once it accepts connections.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let sandbox =
        Arc::new(Sandbox::new(&config.sandbox).context("creating the WebAssembly engine")?);
    let catalog = {
        let (sandbox, config) = (sandbox.clone(), config.clone());
        tokio::task::spawn_blocking(move || load_games(&sandbox, &config)).await??
    };
    let rooms = Rooms::new(sandbox, Arc::new(catalog), config.clone());
    let shared = Arc::new(Shared {
        rooms,
        limit: ConnectionLimit::new(config.net.max_connections),
        next_player: AtomicU64::new(1),
        max_message_bytes: config.net.max_message_bytes,
    });

    let mut listeners = Vec::new();
    for (kind, addr) in [(Kind::Ws, config.net.ws), (Kind::Tcp, config.net.tcp)] {
        let Some(addr) = addr else { continue };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {} listener to {addr}", kind.name()))?;
        let local = listener.local_addr()?;
        tracing::info!("{} players on {local}", kind.name());
        println!("listening {} {local}", kind.name());
        listeners.push(tokio::spawn(accept_loop(kind, listener, shared.clone())));
    }
    shutdown.await;
    tracing::info!("shutting down");
    for l in listeners {
        l.abort();
    }
    Ok(())
}

async fn accept_loop(kind: Kind, listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(serve_connection(kind, stream, peer, shared.clone()));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!("{} accept failed: {e}", kind.name());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(kind: Kind, stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let max = shared.max_message_bytes;
    match kind {
        Kind::Ws => match WsTransport::accept(stream, max).await {
            Ok(t) => serve(t, peer, &shared).await,
            Err(e) => tracing::debug!(%peer, "websocket handshake failed: {e}"),
        },
        Kind::Tcp => serve(TcpTransport::new(stream, max), peer, &shared).await,
    }
}

async fn serve<T: Transport>(mut transport: T, peer: SocketAddr, shared: &Shared) {
    let Some(_permit) = shared.limit.try_acquire() else {
        let err = ProtocolError::new(
            ErrorCode::ServerFull,
            "the host is at its connection limit; try again later",
        );
        let _ = transport
            .send(protocol::error_frame(&err, None, None))
            .await;
        transport.close().await;
        return;
    };
    let player = shared.next_player.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, player, "player connected");
    crate::session::Session::new(
        transport,
        player,
        shared.rooms.clone(),
        shared.max_message_bytes,
    )
    .run()
    .await;
    tracing::debug!(%peer, player, "player disconnected");
}

//! Harness for end-to-end tests: starts a real `respawn serve` process on
//! loopback with real compiled guests, and connects real WebSocket and TCP
//! clients to it.

pub mod nats;

use futures_util::{SinkExt, StreamExt};
use respawn_signing::{Manifest, SecretKey};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a client waits for a frame before the test fails.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// The `respawn` binary, rebuilt once per test run so tests never run a
/// stale host.
pub fn respawn_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("RESPAWN_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "respawn"])
            .current_dir(workspace())
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building respawn failed");
        workspace().join("target/debug/respawn")
    })
    .clone()
}

/// Every thread's stack of a running process, from gdb when it is
/// installed: what a hang in CI leaves to read.
fn thread_stacks(pid: u32) -> String {
    let out = Command::new("timeout")
        .args([
            "60",
            "gdb",
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 40",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => format!(
            "(no stacks: gdb {}: {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("(no stacks: {e})"),
    }
}

/// A compiled guest component from `just guests`.
pub fn guest(name: &str) -> PathBuf {
    let path = workspace().join("target/guests").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `just guests` first", path.display());
    path
}

/// Config that points a host's code cache at one folder shared by every
/// test host of this run (`target/e2e-code-cache`), so a guest that takes
/// seconds to compile (a JavaScript engine) compiles once, not per host.
/// Its key is made here, once, before any host races to make it.
pub fn shared_code_cache() -> String {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // Each run signs with a key of its own, so an earlier run's
        // artifacts can never be used again: start empty.
        let dir = workspace().join("target/e2e-code-cache");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("code cache dir");
        let mut key = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").expect("urandom"), &mut key)
            .expect("random key");
        std::fs::write(dir.join("cache.key"), key).expect("cache key");
        dir
    });
    format!("[state]\ncode_cache_dir = {:?}\n", dir.display().to_string())
}

/// The key the test hosts trust (one per test process).
pub fn test_key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| SecretKey::generate().expect("key"))
}

/// `bytes` with a manifest for `name` `version`, signed by `key`.
pub fn sign_with(bytes: &[u8], key: &SecretKey, name: &str, version: &str) -> Vec<u8> {
    let manifest = Manifest {
        name: name.into(),
        version: version.parse().expect("version"),
        author: "respawn tests".into(),
        built_at: 1_764_000_000,
        notes: None,
    };
    let with_manifest = respawn_signing::embed_manifest(bytes, &manifest).expect("manifest");
    respawn_signing::sign(&with_manifest, key).expect("sign")
}

/// A compiled guest (`target/guests/<file>.wasm`) signed by the test key
/// as game `name` at `version`.
pub fn signed(file: &str, name: &str, version: &str) -> Vec<u8> {
    let bytes = std::fs::read(guest(file)).expect("guest");
    sign_with(&bytes, test_key(), name, version)
}

/// A running host process, killed on drop.
pub struct Host {
    child: Child,
    /// The WebSocket listener.
    pub ws: SocketAddr,
    /// The TCP listener.
    pub tcp: SocketAddr,
    /// The admin API.
    pub admin: SocketAddr,
    /// The demo site.
    pub web: Option<SocketAddr>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    stdout: std::sync::mpsc::Receiver<String>,
}

/// Options for [`Host::start_with`].
pub struct HostOptions<'a> {
    /// Guests signed by the test key as version 1.0.0 of the game of the
    /// same name, copied into the modules folder.
    pub games: &'a [&'a str],
    /// TOML merged over the test defaults.
    pub config: &'a str,
    /// Extra files for the modules folder: (file name, bytes).
    pub extra_modules: Vec<(&'a str, Vec<u8>)>,
    /// Extra environment variables of the host process.
    pub env: Vec<(String, String)>,
}

impl Default for HostOptions<'_> {
    fn default() -> Self {
        Self {
            games: &["echo", "chat", "tictactoe", "faulty"],
            config: "",
            extra_modules: Vec::new(),
            env: Vec::new(),
        }
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Host {
    /// A host with every test guest and the test defaults.
    pub fn start() -> Host {
        Self::start_with(HostOptions::default())
    }

    /// A host with chosen guests, config and extra module files.
    pub fn start_with(opts: HostOptions<'_>) -> Host {
        match Self::try_start(opts) {
            Ok(host) => host,
            Err((msg, log)) => panic!("host did not start: {msg}\n--- host log ---\n{log}"),
        }
    }

    /// Starts a host; on failure returns why and the host's log.
    pub fn try_start(opts: HostOptions<'_>) -> Result<Host, (String, String)> {
        let dir = tempfile::tempdir().expect("temp dir");
        let modules = dir.path().join("modules");
        let trust = dir.path().join("trust");
        let state = dir.path().join("state");
        for d in [&modules, &trust] {
            std::fs::create_dir(d).expect("dir");
        }
        std::fs::write(trust.join("test.pub"), test_key().public().to_openssh("respawn tests")).expect("trust");
        for g in opts.games {
            std::fs::write(modules.join(format!("{g}.wasm")), signed(g, g, "1.0.0")).expect("guest");
        }
        for (name, bytes) in &opts.extra_modules {
            std::fs::write(modules.join(name), bytes).expect("extra module");
        }
        let mut config: toml::Table = toml::from_str(&format!(
            r#"
            [net]
            ws = "127.0.0.1:0"
            tcp = "127.0.0.1:0"
            web = "127.0.0.1:0"
            # Every test client comes from loopback: one address for all
            # (the admission and auth tests set these low themselves).
            address_rate_per_sec = 1000000
            address_rate_burst = 1000000
            address_joins_per_minute = 1000000
            address_join_burst = 1000000
            [modules]
            dir = {modules:?}
            debounce_ms = 50
            [trust]
            dir = {trust:?}
            [state]
            dir = {state:?}
            [admin]
            listen = "127.0.0.1:0"
            [sandbox]
            max_instances = 64
            [rooms]
            linger_ms = 300
            # Tests crash the faulty guest on purpose and then promote
            # versions that crash the same way: the hot-fix gate would
            # (rightly) refuse them. Its own tests turn it on.
            [capsules]
            gate = false
            "#
        ))
        .expect("base config");
        merge(&mut config, toml::from_str(opts.config).expect("test config is TOML"));
        let config_path = dir.path().join("respawn.toml");
        std::fs::write(&config_path, toml::to_string(&config).expect("config")).expect("write config");
        Self::spawn(dir, opts.env)
    }

    /// Stops the process and starts a new one on the same folders (config,
    /// modules, state): what a restart of the host does.
    pub fn restart(mut self) -> Host {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        match Self::spawn(dir, std::mem::take(&mut self.env)) {
            Ok(host) => host,
            Err((msg, log)) => panic!("host did not restart: {msg}\n--- host log ---\n{log}"),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process with SIGKILL (`kill -9`): no shutdown, nothing
    /// saved but what was already on disk.
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Starts a new process on the same folders after [`Host::kill`],
    /// reporting a failed start (why, and the log) instead of panicking;
    /// the folders stay for another attempt.
    pub fn try_restart(&mut self) -> Result<Host, (String, String)> {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        match Self::spawn_in(dir, self.env.clone()) {
            Ok(host) => Ok(host),
            Err((msg, log, dir)) => {
                self.dir = dir;
                Err((msg, log))
            }
        }
    }

    /// Sends SIGTERM and waits (up to 30 s) for the process to exit; returns
    /// whether it exited successfully and what it printed on stdout since
    /// it started listening.
    pub fn terminate(&mut self) -> (bool, Vec<String>) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The reader thread ends at the pipe's end: collect up to there.
        let mut lines = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        (status.is_some_and(|s| s.success()), lines)
    }

    /// `GET` on the admin port without a token: (status code, body).
    pub fn probe(&self, path: &str) -> (u16, Value) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.admin).expect("admin connect");
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("request");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        (code, serde_json::from_str(body).unwrap_or_default())
    }

    /// A handle on the admin API with the host's token, to use from
    /// other threads.
    pub fn admin_client(&self) -> AdminClient {
        let token = std::fs::read_to_string(self.state_dir().join("admin.token")).expect("admin token");
        AdminClient {
            addr: self.admin,
            token: token.trim().to_owned(),
        }
    }

    /// The `runtime` figures of `status`.
    pub fn runtime(&self) -> Value {
        self.status()["runtime"].clone()
    }

    /// A client of the `respawn-client` crate (reconnects and resumes).
    pub async fn reconnecting_client(&self, transport: Transport) -> respawn_client::Client {
        let endpoint = match transport {
            Transport::Ws => respawn_client::Endpoint::Ws(format!("ws://{}/", self.ws)),
            Transport::Tcp => respawn_client::Endpoint::Tcp(self.tcp),
        };
        let options = respawn_client::Options {
            backoff: respawn_client::Backoff {
                base: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
            ..Default::default()
        };
        respawn_client::Client::connect(endpoint, options)
            .await
            .expect("connect")
    }

    fn spawn(dir: tempfile::TempDir, env: Vec<(String, String)>) -> Result<Host, (String, String)> {
        Self::spawn_in(dir, env).map_err(|(msg, log, _)| (msg, log))
    }

    /// Starts the host on `dir`; on failure gives the folder back.
    #[allow(clippy::result_large_err)]
    fn spawn_in(
        dir: tempfile::TempDir,
        env: Vec<(String, String)>,
    ) -> Result<Host, (String, String, tempfile::TempDir)> {
        let config_path = dir.path().join("respawn.toml");
        let log_path = dir.path().join("host.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let mut child = Command::new(respawn_bin())
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info,respawn=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn respawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut ws, mut tcp, mut admin, mut web) = (None, None, None, None);
        while ws.is_none() || tcp.is_none() || admin.is_none() || web.is_none() {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                Err(e) => {
                    // A host that hangs says where: every thread's stack.
                    let stacks = match e {
                        std::sync::mpsc::RecvTimeoutError::Timeout => thread_stacks(child.id()),
                        std::sync::mpsc::RecvTimeoutError::Disconnected => {
                            format!("(the host closed its stdout: {:?})", child.try_wait())
                        }
                    };
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    return Err((
                        "no listening lines on stdout".into(),
                        format!("{log}\n--- the host's threads ---\n{stacks}"),
                        dir,
                    ));
                }
            };
            let mut parts = line.split_whitespace();
            if parts.next() == Some("listening") {
                let kind = parts.next();
                let addr: Option<SocketAddr> = parts.next().and_then(|a| a.parse().ok());
                match kind {
                    Some("ws") => ws = addr,
                    Some("tcp") => tcp = addr,
                    Some("admin") => admin = addr,
                    Some("web") => web = addr,
                    _ => {}
                }
            }
        }
        Ok(Host {
            child,
            ws: ws.unwrap_or_else(|| unreachable!()),
            tcp: tcp.unwrap_or_else(|| unreachable!()),
            admin: admin.unwrap_or_else(|| unreachable!()),
            web,
            dir,
            env,
            stdout: rx,
        })
    }

    /// The modules folder the host watches.
    pub fn modules_dir(&self) -> PathBuf {
        self.dir.path().join("modules")
    }

    /// The host's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("respawn.toml")
    }

    /// The admin API's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The host's state folder.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Publishes a module the way operators should: written under a hidden
    /// name, then renamed into place.
    pub fn drop_module(&self, name: &str, bytes: &[u8]) {
        let tmp = self.modules_dir().join(format!(".{name}.part"));
        std::fs::write(&tmp, bytes).expect("write module");
        std::fs::rename(&tmp, self.modules_dir().join(name)).expect("publish module");
    }

    /// Runs the `respawn` CLI against this host; returns (success, stdout,
    /// stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(respawn_bin())
            .args(args)
            .arg("--config")
            .arg(self.dir.path().join("respawn.toml"))
            .arg("--admin")
            .arg(format!("http://{}", self.admin))
            .output()
            .expect("run the respawn CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `respawn status --json`.
    pub fn status(&self) -> Value {
        let (ok, stdout, stderr) = self.cli(&["status", "--json"]);
        assert!(ok, "status failed: {stderr}");
        serde_json::from_str(&stdout).expect("status JSON")
    }

    /// A game's entry in `status` (`Null` if unknown).
    pub fn game(&self, game: &str) -> Value {
        let status = self.status();
        status["games"]
            .as_array()
            .and_then(|games| games.iter().find(|g| g["name"] == game).cloned())
            .unwrap_or_default()
    }

    /// The active version of a game, per `status`.
    pub fn active(&self, game: &str) -> Option<String> {
        self.game(game)["active"].as_str().map(str::to_owned)
    }

    /// The audit log's records.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state_dir().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `pred` holds of the host (polling), or fails the test.
    pub async fn wait_until(&self, what: &str, pred: impl FnMut(&Host) -> bool) {
        self.wait_until_within(what, Duration::from_secs(30), pred).await
    }

    /// [`Host::wait_until`] with a bound of its own: compiling a
    /// JavaScript engine takes half a minute or more on a busy machine.
    pub async fn wait_until_within(&self, what: &str, limit: Duration, mut pred: impl FnMut(&Host) -> bool) {
        let deadline = std::time::Instant::now() + limit;
        while !pred(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting until {what}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the audit log has a record of `event` with `reason`.
    pub async fn wait_for_audit(&self, event: &str, reason: Option<&str>) -> Value {
        let mut found = None;
        self.wait_until(&format!("an audit `{event}` {reason:?}"), |h| {
            found = h
                .audit()
                .into_iter()
                .rev()
                .find(|e| e["event"] == event && reason.is_none_or(|r| e["reason"] == r));
            found.is_some()
        })
        .await;
        found.unwrap_or_default()
    }

    /// The folder of trusted `*.pub` keys (holds `test.pub`).
    pub fn trust_dir(&self) -> PathBuf {
        self.dir.path().join("trust")
    }

    /// The host's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The listener of a transport.
    pub fn addr(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Ws => self.ws,
            Transport::Tcp => self.tcp,
        }
    }

    /// A connected, welcomed client over the given transport.
    pub async fn client(&self, transport: Transport) -> Client {
        let mut c = match transport {
            Transport::Ws => Client::ws(self.ws).await,
            Transport::Tcp => Client::tcp(self.tcp).await,
        };
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- host log ---\n{}", self.log());
        }
    }
}

/// Whether the kernel still holds a TCP socket from `local` to `remote`
/// (in any state, FIN-WAIT-1 with unsent data included), from
/// `/proc/net/tcp`. IPv4 only, which is what the tests listen on.
pub fn kernel_has_socket(local: SocketAddr, remote: SocketAddr) -> bool {
    fn hex(addr: SocketAddr) -> String {
        match addr {
            SocketAddr::V4(a) => format!("{:08X}:{:04X}", u32::from_le_bytes(a.ip().octets()), a.port()),
            SocketAddr::V6(_) => String::new(),
        }
    }
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace().skip(1);
        cols.next() == Some(local.as_str()) && cols.next() == Some(remote.as_str())
    })
}

/// The admin API with the bearer token.
#[derive(Clone, Debug)]
pub struct AdminClient {
    addr: SocketAddr,
    token: String,
}

impl AdminClient {
    /// Sends a request and hangs up after `after` without waiting for the
    /// answer, as an operator's Ctrl-C does.
    pub fn hang_up_after(&self, method: &str, path: &str, after: Duration) {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(self.addr).expect("admin connect");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
            self.token
        )
        .expect("request");
        std::thread::sleep(after);
        let _ = s.shutdown(std::net::Shutdown::Both);
    }

    /// One request: (status code, JSON body). Blocking, bounded by a 10 s
    /// read timeout.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.addr).expect("admin connect");
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        )
        .expect("request");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        (code, serde_json::from_str(body).unwrap_or_default())
    }
}

/// Which listener a client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket.
    Ws,
    /// Newline-delimited JSON over TCP.
    Tcp,
}

/// Both transports, for tests that must hold on each.
pub const TRANSPORTS: [Transport; 2] = [Transport::Ws, Transport::Tcp];

enum Conn {
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Tcp {
        reader: tokio::io::BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    },
}

/// A test player.
pub struct Client {
    conn: Conn,
}

impl Client {
    /// Connects over WebSocket (no `welcome` read yet).
    pub async fn ws(addr: SocketAddr) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .expect("websocket connect");
        Client {
            conn: Conn::Ws(Box::new(ws)),
        }
    }

    /// Connects over TCP (no `welcome` read yet).
    pub async fn tcp(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        let (r, w) = stream.into_split();
        Client {
            conn: Conn::Tcp {
                reader: tokio::io::BufReader::new(r),
                writer: w,
            },
        }
    }

    /// Connects over TCP from the loopback address `source` (such as
    /// 127.0.0.2), as a player from another machine would (no `welcome`
    /// read yet).
    pub async fn tcp_from(addr: SocketAddr, source: [u8; 4]) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind the source address");
        let stream = socket.connect(addr).await.expect("tcp connect");
        let (r, w) = stream.into_split();
        Client {
            conn: Conn::Tcp {
                reader: tokio::io::BufReader::new(r),
                writer: w,
            },
        }
    }

    /// Sends raw bytes as one frame: a WebSocket binary message, or a TCP
    /// line (a newline is added).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send_raw(bytes).await {
            panic!("send failed: {e}");
        }
    }

    /// [`Client::send_raw`] that reports failure instead of panicking.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        match &mut self.conn {
            Conn::Ws(ws) => ws
                .send(Message::binary(bytes.to_vec()))
                .await
                .map_err(|e| e.to_string()),
            Conn::Tcp { writer, .. } => {
                let mut line = bytes.to_vec();
                line.push(b'\n');
                writer.write_all(&line).await.map_err(|e| e.to_string())
            }
        }
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        let addr = match &self.conn {
            Conn::Ws(ws) => match ws.get_ref() {
                MaybeTlsStream::Plain(s) => s.local_addr(),
                _ => unreachable!("tests speak plain WebSocket"),
            },
            Conn::Tcp { writer, .. } => writer.local_addr(),
        };
        addr.expect("local address")
    }

    /// Writes raw bytes under the WebSocket layer, for frames a client
    /// library will not build (a client frame must be masked).
    pub async fn send_ws_wire(&mut self, bytes: &[u8]) {
        let Conn::Ws(ws) = &mut self.conn else {
            panic!("not a WebSocket client");
        };
        ws.get_mut().write_all(bytes).await.expect("raw write");
    }

    /// Reads until the server's close frame and returns its code (`None`
    /// if the connection ended without one).
    pub async fn close_code(&mut self) -> Option<u16> {
        let Conn::Ws(ws) = &mut self.conn else {
            panic!("not a WebSocket client");
        };
        let read = async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return None,
                }
            }
        };
        tokio::time::timeout(RECV_TIMEOUT, read)
            .await
            .expect("timed out waiting for a close frame")
    }

    /// Sends a JSON envelope (a WebSocket text message, or a TCP line).
    pub async fn send(&mut self, v: Value) {
        let text = v.to_string();
        match &mut self.conn {
            Conn::Ws(ws) => ws.send(Message::text(text)).await.expect("ws send"),
            Conn::Tcp { .. } => self.send_raw(text.as_bytes()).await,
        }
    }

    /// The next frame, or `None` when the server closed the connection.
    pub async fn try_recv(&mut self) -> Option<Value> {
        let next = async {
            match &mut self.conn {
                Conn::Ws(ws) => loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => return Some(t.to_string()),
                        Some(Ok(Message::Binary(b))) => {
                            return Some(String::from_utf8_lossy(&b).into_owned());
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                        Some(Ok(_)) => continue,
                    }
                },
                Conn::Tcp { reader, .. } => {
                    let mut line = String::new();
                    match reader.read_line(&mut line).await {
                        Ok(0) | Err(_) => None,
                        Ok(_) => Some(line),
                    }
                }
            }
        };
        let text = tokio::time::timeout(RECV_TIMEOUT, next)
            .await
            .expect("timed out waiting for a frame")?;
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("server sent invalid JSON {text:?}: {e}")))
    }

    /// The next frame; fails the test if the connection closed.
    pub async fn recv(&mut self) -> Value {
        self.try_recv()
            .await
            .expect("connection closed while waiting for a frame")
    }

    /// The next frame, which must be of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "expected a `{kind}` frame, got {v}");
        v
    }

    /// The next frame, which must be an error with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }

    /// The `data` of the next frame, which must be an event.
    pub async fn event(&mut self) -> Value {
        self.expect("event").await["data"].take()
    }

    /// Skips events until one whose `data.type` is `kind`.
    pub async fn event_of(&mut self, kind: &str) -> Value {
        loop {
            let data = self.event().await;
            if data["type"] == kind {
                return data;
            }
        }
    }

    /// Asserts nothing is on its way to this client, without waiting for a
    /// time: a `ping` sent now must be answered first. Call it once the
    /// event that could have sent something has been seen elsewhere (the
    /// room queues every frame of an input before it takes the next one,
    /// and a session writes what its room queued before it reads the
    /// player's next request), so a stray frame would come before the pong.
    pub async fn expect_nothing_queued(&mut self) {
        self.ping().await;
    }

    /// Joins a room with a ticket and returns the answer (`joined`, or
    /// `resumed` for a user who had a seat there).
    pub async fn join_with(&mut self, game: &str, room: &str, ticket: &str) -> Value {
        self.send(json!({"type": "join", "game": game, "room": room, "ticket": ticket}))
            .await;
        self.recv().await
    }

    /// Joins a room and returns the `joined` frame.
    pub async fn join(&mut self, game: &str, room: &str, name: &str) -> Value {
        self.send(json!({"type": "join", "game": game, "room": room, "name": name}))
            .await;
        self.expect("joined").await
    }

    /// Sends a game message.
    pub async fn message(&mut self, data: Value) {
        self.send(json!({"type": "message", "data": data})).await;
    }

    /// Round-trips a ping: proves the connection still works.
    pub async fn ping(&mut self) {
        self.send(json!({"type": "ping", "ref": "alive?"})).await;
        let pong = self.expect("pong").await;
        assert_eq!(pong["ref"], "alive?");
    }
}

/// The test fixtures folder (`tests/fixtures`).
pub fn fixtures() -> PathBuf {
    workspace().join("tests/fixtures")
}

/// `[auth]` of a host that requires tickets signed by the test keys
/// (`tests/fixtures/auth`), from issuer `accounts` for audience `respawn`,
/// passing the `tier` claim to games; `extra` is added to the section.
pub fn auth_config(extra: &str) -> String {
    let dir = fixtures().join("auth");
    format!(
        r#"
        [auth]
        required = true
        issuer = "accounts"
        audience = "respawn"
        claims = ["tier"]
        jwks_file = {jwks:?}
        keys = [{{ kid = "ed-1", alg = "EdDSA", file = {ed:?} }}]
        {extra}
        "#,
        jwks = dir.join("jwks.json"),
        ed = dir.join("ed25519.pub"),
    )
}

/// Seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Claims of a valid ticket for `user` (display name `name`), for
/// [`auth_config`]; change them to make bad ones.
pub fn claims(user: &str, name: &str) -> Value {
    json!({
        "sub": user, "name": name, "iss": "accounts", "aud": "respawn",
        "exp": unix_secs() + 300, "tier": "gold",
    })
}

/// A ticket signed with a test key: `key_file` in `tests/fixtures/auth`,
/// `kid` in the header.
pub fn sign_ticket(claims: &Value, alg: jsonwebtoken::Algorithm, kid: &str, key_file: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let pem = std::fs::read(fixtures().join("auth").join(key_file)).expect("test key");
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => Ok(EncodingKey::from_secret(pem.trim_ascii())),
    }
    .expect("encoding key");
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// A valid ticket (EdDSA, `kid` `ed-1`) with `claims`.
pub fn ticket(claims: &Value) -> String {
    sign_ticket(claims, jsonwebtoken::Algorithm::EdDSA, "ed-1", "ed25519.key")
}

/// A stand-in for an HTTP ingest API (Sentry's, in the tests): a
/// loopback port that answers every request 200 and hands over each
/// request's path and body.
pub fn http_sink() -> (u16, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Headers, then as many bytes as Content-Length says.
            let (head, body_start) = loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break (String::new(), 0),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (String::from_utf8_lossy(&buf[..i]).into_owned(), i + 4);
                }
            };
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < body_start + length {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            );
            let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            let _ = tx.send((path, buf[body_start.min(buf.len())..].to_vec()));
        }
    });
    (port, rx)
}

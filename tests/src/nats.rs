//! A three-server NATS JetStream cluster on loopback (Debian's
//! `nats-server`), and a TCP proxy that a test can cut to take a host off
//! the network.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free loopback port (bound and released: good enough on a test
/// machine).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `nats-server` binary: on PATH, or where Debian puts it
/// (`/usr/sbin`, not on a regular user's PATH).
fn nats_server() -> std::path::PathBuf {
    let sbin = std::path::Path::new("/usr/sbin/nats-server");
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()))
        .unwrap_or(false);
    if !on_path && sbin.is_file() {
        return sbin.to_owned();
    }
    "nats-server".into()
}

/// `nats-server` processes forming one JetStream cluster, killed on drop.
pub struct Nats {
    servers: Vec<Child>,
    /// Client URLs, one per server.
    pub urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// Starts `n` servers routed to each other, and waits until JetStream
    /// answers on each (its meta leader elected).
    pub fn cluster(n: usize) -> Nats {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes = ports
            .iter()
            .map(|(_, r)| format!("nats://127.0.0.1:{r}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{i}"));
            let child = Command::new(nats_server())
                .args([
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-n",
                    &format!("n{i}"),
                ])
                .args(["--cluster_name", "respawn-test"])
                // Clients know only the URLs they are given, so a proxy in
                // front of one server can cut a host off.
                .arg("--no_advertise")
                .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &routes])
                .arg("-sd")
                .arg(&store)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting nats-server (Debian package `nats-server`; `just test-deps` installs it)");
            servers.push(child);
        }
        let urls: Vec<String> = ports.iter().map(|(p, _)| format!("nats://127.0.0.1:{p}")).collect();
        let nats = Nats {
            servers,
            urls,
            _dir: dir,
        };
        nats.wait_ready();
        nats
    }

    /// Polls each server's monitoring-free readiness: a JetStream account
    /// info request answered without error.
    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for url in &self.urls {
            let addr = url.trim_start_matches("nats://");
            loop {
                if jetstream_ready(addr) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the NATS cluster did not get JetStream ready in 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The servers' process ids (benchmarks read their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(Child::id).collect()
    }

    /// The `urls` as TOML array text.
    pub fn toml_urls(&self) -> String {
        format!(
            "[{}]",
            self.urls
                .iter()
                .map(|u| format!("{u:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// Whether the server at `addr` answers `$JS.API.INFO` with account info
/// (not an error such as "JetStream not enabled" while the cluster forms).
fn jetstream_ready(addr: &str) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return false,
    });
    let mut line = String::new();
    if r.read_line(&mut line).is_err() || !line.starts_with("INFO") {
        return false;
    }
    let hello = "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false}\r\nSUB _r 1\r\nPUB $JS.API.INFO _r 0\r\n\r\nPING\r\n";
    if s.write_all(hello.as_bytes()).is_err() {
        return false;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line.starts_with("MSG") {
            let mut body = String::new();
            if r.read_line(&mut body).is_err() {
                return false;
            }
            return body.contains("\"memory\"") && !body.contains("\"error\"");
        }
        if line.starts_with("-ERR") {
            return false;
        }
    }
    false
}

/// A TCP proxy on loopback to `target`, which [`Proxy::cut`] turns into a
/// black hole: open connections are dropped, new ones refused. It runs on
/// its own thread, so a test blocked on starting a host does not stall it.
pub struct Proxy {
    /// Where to connect instead of `target`.
    pub addr: SocketAddr,
    cut: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Proxies to `target` (`host:port`).
    pub fn to(target: &str) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).expect("proxy nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, mut cut_rx) = tokio::sync::oneshot::channel::<()>();
        let target = target.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("proxy listener");
                let mut pipes = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        _ = &mut cut_rx => break,
                        accepted = listener.accept() => {
                            let Ok((mut inbound, _)) = accepted else { continue };
                            let target = target.clone();
                            pipes.spawn(async move {
                                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                                }
                            });
                        }
                    }
                }
                // Dropping the listener and every pipe: refused and cut.
                pipes.abort_all();
            });
        });
        Proxy {
            addr,
            cut: Some(cut),
            thread: Some(thread),
        }
    }

    /// Cuts every connection through the proxy and refuses new ones.
    pub fn cut(&mut self) {
        if let Some(cut) = self.cut.take() {
            let _ = cut.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

//! Failover groups across several nodes, on a real etcd (Debian's
//! `etcd-server`, started on free 127.0.0.1 ports in a temp dir).
//!
//! Each node is a separate `mamori agent` process with its own data dir and
//! address. Where network namespaces can be made (root), each node is a host
//! of its own: a namespace with a veth pair on a bridge the test creates, etcd
//! listening on the bridge; a partition takes the node's link down. Elsewhere
//! the nodes listen on 127.0.0.2, .3, .4 and reach etcd through their own TCP
//! proxy in this test process, which a partition cuts (traffic swallowed
//! without an answer). Each test prints which.
//!
//! The **history checker**: every node records `group.activated` (before its
//! units start) and `group.deactivated` (after they stopped) in its SQLite
//! store; a node killed with SIGKILL (with its units, as a host dies) ends its
//! interval at the kill. The checker asserts that active intervals never
//! overlap and that fencing tokens grow with every activation.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{free_port, procs_with, wait_for, BIN};
use serde_json::Value;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------- etcd

struct Etcd {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    host: String,
    port: u16,
}

impl Etcd {
    fn start(extra: &[&str]) -> Etcd {
        Self::start_on("127.0.0.1", extra)
    }

    fn start_on(host: &str, extra: &[&str]) -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, peer) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg(format!("--listen-client-urls=http://{host}:{port}"))
            .arg(format!("--advertise-client-urls=http://{host}:{port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=t=http://127.0.0.1:{peer}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("fd"))
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian package etcd-server; scripts/test installs it)");
        let e = Etcd {
            child: Some(child),
            _dir: dir,
            host: host.to_string(),
            port,
        };
        wait_for("etcd /health", || {
            http(&e.host, e.port, "GET", "/health", None)
                .ok()
                .filter(|(s, b)| *s == 200 && b.contains("true"))
        });
        e
    }
}

impl Etcd {
    /// SIGSTOP (true) or SIGCONT: etcd hangs, as when it is unreachable for everyone.
    fn pause(&self, stop: bool) {
        if let Some(c) = &self.child {
            let sig = if stop {
                nix::sys::signal::Signal::SIGSTOP
            } else {
                nix::sys::signal::Signal::SIGCONT
            };
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------- proxy

/// A TCP proxy to etcd that can be cut (traffic swallowed, no answer).
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, s, t) = (cut.clone(), stop.clone(), threads.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((down, _)) => {
                        let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        for (a, b) in [(down.try_clone(), up.try_clone()), (Ok(up), Ok(down))] {
                            if let (Ok(a), Ok(b)) = (a, b) {
                                let (c, s) = (c.clone(), s.clone());
                                let h = std::thread::spawn(move || pump(a, b, c, s));
                                t.lock().unwrap().push(h);
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        threads.lock().unwrap().push(accept);
        Proxy {
            port,
            cut,
            stop,
            threads,
        }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16384];
    while !stop.load(Ordering::Relaxed) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Cut: the bytes vanish, as on a partitioned network.
                if !cut.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let hs: Vec<_> = self.threads.lock().unwrap().drain(..).collect();
        for h in hs {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------- nodes

fn http(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect((host, port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
        .to_string();
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

struct Node {
    name: String,
    host: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// When the test killed it (ms): ends its open interval in the history.
    killed_at: Vec<i64>,
    /// The node's network namespace, if it has one.
    netns: Option<String>,
    /// Partitioned (netns mode): reached from inside its namespace only.
    cut: bool,
}

/// Per-node differences in the group config.
#[derive(Default, Clone)]
struct Opts {
    pre_promote: Option<String>,
    preempt: bool,
    /// The unit ignores SIGTERM and has a 30 s stop_timeout: fencing must kill it.
    stubborn: bool,
    /// Overrides the unit's stop_timeout.
    stop_timeout: Option<&'static str>,
    /// `on_store_loss = "keep-if-all-peers-agree"`.
    keep: bool,
    /// `drill_every` of the group.
    drill_every: Option<&'static str>,
    /// `fast_takeover = true`.
    fast: bool,
}

impl Node {
    fn new(
        name: &str,
        host: &str,
        netns: Option<String>,
        endpoint: &str,
        nodes: &[&str],
        o: &Opts,
    ) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let host = host.to_string();
        let (port, web) = (free_port(), free_port());
        let d = dir.path().display();
        let mut pre = o
            .pre_promote
            .as_ref()
            .map(|p| format!("pre_promote = {p:?}"))
            .unwrap_or_default();
        if let Some(d) = o.drill_every {
            pre.push_str(&format!("\ndrill_every = {d:?}"));
        }
        let nodes = nodes
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let cfg = format!(
            r#"
[agent]
listen = "{host}:{port}"
data_dir = "data"
shutdown_timeout = "10s"

[cluster]
node = "{name}"
backend = "etcd"
endpoints = ["{endpoint}"]
lease_ttl = "2s"
on_store_loss = "{on_store_loss}"
fast_takeover = {fast}

[[service]]
name = "web"
command = "{trap}echo $MAMORI_GROUP $MAMORI_NODE $MAMORI_FENCING_TOKEN >> {d}/tokens; exec python3 -m http.server {web} --bind {host} --directory {d}"
stop_timeout = "{stop}"
health = {{ kind = "http", url = "http://{host}:{web}/", interval = "100ms", timeout = "1s", fall = 2, rise = 1 }}

[[group]]
name = "g"
units = ["web"]
nodes = [{nodes}]
verify_every = "300ms"
preempt = {preempt}
on_promote = "echo promote $MAMORI_REASON $MAMORI_FENCING_TOKEN >> {d}/hooks"
on_demote = "echo demote $MAMORI_REASON >> {d}/hooks"
on_fault = "echo fault $MAMORI_ROLE $MAMORI_REASON >> {d}/hooks"
{pre}
"#,
            preempt = o.preempt,
            fast = o.fast,
            on_store_loss = if o.keep {
                "keep-if-all-peers-agree"
            } else {
                "demote"
            },
            trap = if o.stubborn { "trap '' TERM; " } else { "" },
            stop = o
                .stop_timeout
                .unwrap_or(if o.stubborn { "30s" } else { "2s" }),
        );
        std::fs::write(dir.path().join("mamori.toml"), cfg).expect("write config");
        Node {
            name: name.to_string(),
            host,
            port,
            dir,
            child: None,
            killed_at: Vec::new(),
            netns,
            cut: false,
        }
    }

    /// A command, inside the node's namespace when it has one.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    /// GET on the node's API; from inside its namespace while it is cut off.
    fn fetch(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        if !self.cut {
            return http(&self.host, self.port, method, path, token).expect("HTTP to a node");
        }
        let mut c = self.command("curl");
        c.args(["-s", "-X", method, "-w", "\n%{http_code}"]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = c
            .arg(format!("http://{}:{}{path}", self.host, self.port))
            .output()
            .expect("curl in the namespace");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("log");
        let child = self
            .command(BIN)
            .arg("-c")
            .arg(self.dir.path().join("mamori.toml"))
            .args(["agent", "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("fd"))
            .stderr(log)
            .spawn()
            .expect("start agent");
        self.child = Some(child);
        let (host, port) = (self.host.clone(), self.port);
        wait_for(&format!("node {}'s /healthz", self.name), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("node exited: {st}\n{}", self.log());
                }
            }
            http(&host, port, "GET", "/healthz", None)
                .ok()
                .filter(|(s, _)| *s == 200)
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("mamori.toml")
    }

    fn get(&self, path: &str) -> Value {
        // The test reads from outside the node's loopback, so under the
        // default `read_auth = "loopback"` it needs the token like any
        // remote client.
        let token = std::fs::read_to_string(self.dir.path().join("data/token")).unwrap_or_default();
        let (s, b) = self.fetch("GET", path, Some(token.trim()));
        assert!(s < 300, "GET {path} on {} -> {s}: {b}", self.name);
        serde_json::from_str(&b).expect("JSON")
    }

    fn post(&self, path: &str) -> (u16, Value) {
        let token = std::fs::read_to_string(self.dir.path().join("data/token")).expect("token");
        let (s, b) = self.fetch("POST", path, Some(token.trim()));
        (s, serde_json::from_str(&b).unwrap_or(Value::Null))
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        self.command(BIN)
            .arg("-c")
            .arg(self.config())
            .args(args)
            .output()
            .expect("cli")
    }

    /// This node's role in group g, from its own API.
    fn role(&self) -> String {
        let g = self.get("/api/v1/groups/g");
        g["here"]["role"].as_str().unwrap_or("").to_string()
    }

    /// As a host dies: SIGKILL the agent and its units at once.
    fn kill9(&mut self) -> i64 {
        let marker = self.dir.path().display().to_string();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            for p in procs_with(&marker) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = c.wait();
        }
        let t = now_ms();
        self.killed_at.push(t);
        t
    }

    /// `group.activated` / `group.deactivated` of group g, in order: (ts, kind, token, fenced).
    fn history(&self) -> Vec<(i64, String, i64, bool)> {
        let db = self.dir.path().join("data/mamori.db");
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open the node's store");
        let mut st = conn
            .prepare("SELECT ts, kind, data FROM events WHERE kind IN ('group.activated', 'group.deactivated') ORDER BY id")
            .expect("query");
        st.query_map([], |r| {
            let data: String = r.get(2)?;
            let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            Ok((
                r.get(0)?,
                r.get(1)?,
                v["token"].as_i64().unwrap_or(0),
                v["fenced"] == Value::Bool(true),
            ))
        })
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let marker = self.dir.path().display().to_string();
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            for _ in 0..400 {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in procs_with(&marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// One interval of one node being active.
#[derive(Debug, Clone)]
struct Interval {
    node: String,
    token: i64,
    from: i64,
    to: i64,
}

/// The history checker: intervals from every node; asserts no overlap and
/// growing tokens. Returns the intervals in order.
fn check_history(nodes: &[&Node]) -> Vec<Interval> {
    let end = now_ms();
    let mut all = Vec::new();
    for n in nodes {
        let mut kills = n.killed_at.clone();
        let mut open: Option<(i64, i64)> = None;
        let mut events = n.history();
        // A kill closes what is open at that time.
        for k in &kills {
            events.push((*k, "killed".into(), 0, false));
        }
        events.sort_by_key(|e| e.0);
        kills.clear();
        for (ts, kind, token, _) in events {
            match kind.as_str() {
                "group.activated" => {
                    if let Some((from, t)) = open {
                        if t != token {
                            // Re-took the key (new token) while active: a new interval.
                            all.push(Interval {
                                node: n.name.clone(),
                                token: t,
                                from,
                                to: ts,
                            });
                            open = Some((ts, token));
                        }
                    } else {
                        open = Some((ts, token));
                    }
                }
                _ => {
                    if let Some((from, t)) = open.take() {
                        all.push(Interval {
                            node: n.name.clone(),
                            token: t,
                            from,
                            to: ts,
                        });
                    }
                }
            }
        }
        if let Some((from, t)) = open {
            all.push(Interval {
                node: n.name.clone(),
                token: t,
                from,
                to: end,
            });
        }
    }
    all.sort_by_key(|i| i.from);
    for w in all.windows(2) {
        assert!(
            w[0].to <= w[1].from,
            "two active nodes at once: {:?} overlaps {:?}\nhistory: {all:#?}",
            w[0],
            w[1]
        );
        assert!(
            w[1].token > w[0].token,
            "fencing tokens must grow: {all:#?}"
        );
    }
    println!("history: {all:?}");
    all
}

// ---------------------------------------------------------------- network

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Network namespaces, veth pairs and a bridge made for one test; removed on
/// drop (with whatever still runs inside).
struct Netns {
    tag: String,
    subnet: String,
    nodes: usize,
}

impl Netns {
    /// `None` where namespaces cannot be made (not root, no iproute2).
    fn try_new(nodes: usize) -> Option<Netns> {
        static K: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = K.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let n = Netns {
            tag: format!("mc{}x{k}", pid % 10000),
            subnet: format!("10.{}.{}", 100 + k % 100, pid % 250),
            nodes: 0,
        };
        let br = format!("{}br", n.tag);
        if !ip(&["link", "add", &br, "type", "bridge"]) {
            return None;
        }
        let mut n = n;
        let ok = ip(&["addr", "add", &format!("{}.254/24", n.subnet), "dev", &br])
            && ip(&["link", "set", &br, "up"]);
        if !ok {
            return None;
        }
        for i in 0..nodes {
            let (ns, v, inner) = (n.ns(i), format!("{}v{i}", n.tag), format!("{}i{i}", n.tag));
            n.nodes = i + 1;
            let ok = ip(&["netns", "add", &ns])
                && ip(&["link", "add", &v, "type", "veth", "peer", "name", &inner])
                && ip(&["link", "set", &inner, "netns", &ns])
                && ip(&["link", "set", &v, "master", &br])
                && ip(&["link", "set", &v, "up"])
                && ip(&[
                    "netns", "exec", &ns, "ip", "link", "set", &inner, "name", "eth0",
                ])
                && ip(&[
                    "netns",
                    "exec",
                    &ns,
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", n.host(i)),
                    "dev",
                    "eth0",
                ])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", "eth0", "up"])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            if !ok {
                return None; // Drop removes what was made
            }
        }
        Some(n)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn host(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    fn gateway(&self) -> String {
        format!("{}.254", self.subnet)
    }

    /// Takes node `i`'s link down (or up): cut off from etcd and every peer.
    fn set_cut(&self, i: usize, cut: bool) {
        let v = format!("{}v{i}", self.tag);
        assert!(
            ip(&["link", "set", &v, if cut { "down" } else { "up" }]),
            "ip link set {v}"
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            let ns = self.ns(i);
            let pids = Command::new("ip").args(["netns", "pids", &ns]).output();
            if let Ok(out) = pids {
                for p in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(p) = p.parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(p),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            ip(&["netns", "del", &ns]);
            ip(&["link", "del", &format!("{}v{i}", self.tag)]);
        }
        ip(&["link", "del", &format!("{}br", self.tag)]);
    }
}

/// The nodes' network: namespaces, or proxies on loopback. Declared before
/// the nodes in tests, so it is dropped after them; etcd goes first.
enum Net {
    Netns { _etcd: Etcd, ns: Netns },
    Proxies { _etcd: Etcd, proxies: Vec<Proxy> },
}

impl Net {
    /// Partitions node `i` from etcd (and, with namespaces, from everyone).
    fn cut(&self, node: &mut Node, i: usize, cut: bool) {
        match self {
            Net::Netns { ns, .. } => {
                ns.set_cut(i, cut);
                node.cut = cut;
            }
            Net::Proxies { proxies, .. } => proxies[i].set_cut(cut),
        }
    }

    fn etcd(&self) -> &Etcd {
        match self {
            Net::Netns { _etcd, .. } | Net::Proxies { _etcd, .. } => _etcd,
        }
    }
}

fn cluster(opts: &[Opts]) -> (Net, Vec<Node>) {
    let names = ["a", "b", "c"];
    let mut nodes = Vec::new();
    if let Some(ns) = Netns::try_new(opts.len()) {
        let etcd = Etcd::start_on(&ns.gateway(), &[]);
        let endpoint = format!("http://{}:{}", etcd.host, etcd.port);
        for (i, o) in opts.iter().enumerate() {
            nodes.push(Node::new(
                names[i],
                &ns.host(i),
                Some(ns.ns(i)),
                &endpoint,
                &names[..opts.len()],
                o,
            ));
        }
        println!(
            "cluster test: {} agents in network namespaces {}n0.. ({}.1..) on a bridge; etcd on {endpoint}; a partition takes a node's link down",
            opts.len(),
            ns.tag,
            ns.subnet
        );
        return (Net::Netns { _etcd: etcd, ns }, nodes);
    }
    let etcd = Etcd::start(&[]);
    let mut proxies = Vec::new();
    for (i, o) in opts.iter().enumerate() {
        let p = Proxy::start(etcd.port);
        let host = format!("127.0.0.{}", i + 2);
        nodes.push(Node::new(
            names[i],
            &host,
            None,
            &format!("http://127.0.0.1:{}", p.port),
            &names[..opts.len()],
            o,
        ));
        proxies.push(p);
    }
    println!(
        "cluster test: network namespaces unavailable; {} agents as separate processes on 127.0.0.2..; each reaches etcd on 127.0.0.1:{} through its own cuttable TCP proxy",
        opts.len(),
        etcd.port
    );
    (
        Net::Proxies {
            _etcd: etcd,
            proxies,
        },
        nodes,
    )
}

/// Which node the store says is active, with its token.
fn active(n: &Node) -> Option<(String, i64)> {
    let v = n.get("/api/v1/groups/g");
    Some((v["active"].as_str()?.to_string(), v["token"].as_i64()?))
}

fn wait_active(observer: &Node, who: &str) -> i64 {
    wait_for(&format!("{who} active"), || {
        active(observer).filter(|(n, _)| n == who).map(|(_, t)| t)
    })
}

/// The node's units pass their health check.
fn wait_healthy(n: &Node) {
    wait_for(&format!("{}'s web healthy", n.name), || {
        let v = n.get("/api/v1/checks/web");
        (v["status"] == "up").then_some(())
    });
}

fn start_all(nodes: &mut [Node]) {
    // The first starts alone so it is the first active.
    nodes[0].start();
    wait_active(&nodes[0], "a");
    for n in nodes.iter_mut().skip(1) {
        n.start();
    }
    // Everyone has published a record, and the standbys qualify.
    wait_for("all nodes in `nodes`", || {
        let v = nodes[0].get("/api/v1/nodes");
        let recs = v["nodes"].as_array().cloned().unwrap_or_default();
        let ready = recs
            .iter()
            .filter(|r| r["groups"]["g"]["role"].is_string())
            .count();
        (ready == nodes.len()).then_some(())
    });
}

// ---------------------------------------------------------------- tests

#[test]
fn coordinator_on_real_etcd_creates_once_and_leases_expire() {
    let etcd = Etcd::start(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use mamori::cluster::Coordinator;
        let cfg = mamori::config::cluster::EtcdConfig {
            endpoints: vec![
                "http://127.0.0.1:1".into(),
                format!("http://127.0.0.1:{}", etcd.port),
            ],
            ..Default::default()
        };
        // The first endpoint is dead: requests move on to the next.
        let c = mamori::cluster::etcd::Etcd::new(&cfg, Duration::from_secs(2)).unwrap();
        let l1 = c.grant(Duration::from_secs(2)).await.unwrap();
        let l2 = c.grant(Duration::from_secs(2)).await.unwrap();
        let r1 = c
            .create("/t/leader", b"a", l1)
            .await
            .unwrap()
            .expect("created");
        assert_eq!(
            c.create("/t/leader", b"b", l2).await.unwrap(),
            None,
            "exclusive"
        );
        let kv = c.get("/t/leader").await.unwrap().unwrap();
        assert_eq!(
            (kv.value.as_slice(), kv.create_revision, kv.lease),
            (&b"a"[..], r1, l1)
        );
        assert!(c.keep_alive(l1).await.unwrap().is_some());
        // Guarded transactions, as fast takeover uses them.
        {
            use mamori::cluster::{Guard, Op};
            let beat = |v: &[u8]| Op::Put {
                key: "/t/beat".into(),
                value: v.to_vec(),
                lease: l1,
            };
            let mine = [Guard::Created("/t/leader".into(), r1)];
            assert!(c.txn(&mine, &[beat(b"1")]).await.unwrap());
            let b1 = c.get("/t/beat").await.unwrap().unwrap();
            assert_eq!((b1.value.as_slice(), b1.lease), (&b"1"[..], l1));
            let other = [Guard::Created("/t/leader".into(), r1 + 1000)];
            assert!(!c.txn(&other, &[beat(b"x")]).await.unwrap());
            assert!(c.txn(&mine, &[beat(b"2")]).await.unwrap());
            let b2 = c.get("/t/beat").await.unwrap().unwrap().mod_revision;
            assert!(b2 > b1.mod_revision);
            let take = |rev| {
                [
                    Guard::Created("/t/leader".into(), r1),
                    Guard::Modified("/t/beat".into(), rev),
                ]
            };
            let del = [Op::Delete("/t/beat".into())];
            assert!(
                !c.txn(&take(b1.mod_revision), &del).await.unwrap(),
                "stale beat"
            );
            assert!(c.txn(&take(b2), &del).await.unwrap());
            assert!(c.get("/t/beat").await.unwrap().is_none());
            assert!(c.get("/t/leader").await.unwrap().is_some());
        }
        c.put("/t/other", b"x", 0).await.unwrap();
        assert_eq!(c.list("/t/").await.unwrap().len(), 2);
        // Without keep-alives the lease expires and takes the key.
        let start = Instant::now();
        while c.get("/t/leader").await.unwrap().is_some() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the lease never expired"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(c.keep_alive(l1).await.unwrap(), None);
        let l3 = c.grant(Duration::from_secs(2)).await.unwrap();
        let r2 = c
            .create("/t/leader", b"c", l3)
            .await
            .unwrap()
            .expect("created again");
        assert!(r2 > r1, "the fencing token grows");
        c.revoke(l3).await.unwrap();
        c.revoke(l3).await.unwrap(); // revoking twice is fine
        assert!(c.get("/t/leader").await.unwrap().is_none());
        c.delete("/t/other").await.unwrap();
        assert!(c.list("/t/").await.unwrap().is_empty());
    });
}

fn run(cmd: &str, args: &[&str], dir: &std::path::Path) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn coordinator_on_real_etcd_over_tls_with_a_client_certificate_and_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A CA, a server certificate for 127.0.0.1, and a client certificate.
    // The client certificate has no CommonName: etcd 3.4's JSON gateway
    // refuses one that has (see docs/cluster.md).
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
        ],
        d,
    );
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, subj) in [("server", "/CN=etcd"), ("client", "/O=mamori")] {
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                subj,
            ],
            d,
        );
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
            d,
        );
    }
    let (port, peer) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{port}");
    let log = std::fs::File::create(d.join("etcd.log")).unwrap();
    let child = Command::new("etcd")
        .current_dir(d)
        .args(["--name", "t", "--data-dir", "data"])
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster=t=http://127.0.0.1:{peer}"))
        .args([
            "--cert-file",
            "server.pem",
            "--key-file",
            "server.key",
            "--client-cert-auth",
            "--trusted-ca-file",
            "ca.pem",
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start etcd");
    let _etcd = Etcd {
        child: Some(child),
        _dir: tempfile::tempdir().unwrap(),
        host: "127.0.0.1".into(),
        port,
    };
    let ctl = |args: &[&str]| {
        Command::new("etcdctl")
            .current_dir(d)
            .args([
                "--endpoints",
                &url,
                "--cacert",
                "ca.pem",
                "--cert",
                "server.pem",
                "--key",
                "server.key",
            ])
            .args(args)
            .output()
            .expect("etcdctl (Debian package etcd-client)")
    };
    wait_for("etcd over TLS", || {
        ctl(&["endpoint", "health"]).status.success().then_some(())
    });
    for args in [
        &["role", "add", "root"][..],
        &["user", "add", "root:s3cret"],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        let out = ctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(d.join("password"), "s3cret\n").unwrap();
    std::fs::write(d.join("wrong"), "guess\n").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use mamori::cluster::Coordinator;
        let mut cfg = mamori::config::cluster::EtcdConfig {
            endpoints: vec![url.clone()],
            ca_file: Some(d.join("ca.pem")),
            cert_file: Some(d.join("client.pem")),
            key_file: Some(d.join("client.key")),
            username: Some("root".into()),
            password_file: Some(d.join("password")),
        };
        let c = mamori::cluster::etcd::Etcd::new(&cfg, Duration::from_secs(2)).unwrap();
        let l = c.grant(Duration::from_secs(5)).await.unwrap();
        let rev = c.create("/tls/leader", b"a", l).await.unwrap();
        assert!(rev.is_some());
        assert_eq!(c.get("/tls/leader").await.unwrap().unwrap().value, b"a");
        assert_eq!(c.list("/tls/").await.unwrap().len(), 1);
        c.revoke(l).await.unwrap();
        // A wrong password is refused, and said so.
        cfg.password_file = Some(d.join("wrong"));
        let bad = mamori::cluster::etcd::Etcd::new(&cfg, Duration::from_secs(2)).unwrap();
        let e = bad.get("/tls/leader").await.unwrap_err().to_string();
        assert!(e.contains("authentication failed"), "{e}");
        // Without the client certificate, TLS itself is refused.
        cfg.password_file = Some(d.join("password"));
        cfg.cert_file = None;
        cfg.key_file = None;
        let anon = mamori::cluster::etcd::Etcd::new(&cfg, Duration::from_secs(2)).unwrap();
        assert!(anon.get("/tls/leader").await.is_err());
    });
}

#[test]
fn kill_of_the_active_fails_over_and_the_old_active_does_not_preempt() {
    let (_net, mut nodes) = cluster(&[Opts::default(), Opts::default(), Opts::default()]);
    start_all(&mut nodes);
    let t1 = wait_active(&nodes[1], "a");
    wait_healthy(&nodes[0]);
    // The unit got the group, node and token in its environment.
    let tokens = std::fs::read_to_string(nodes[0].dir.path().join("tokens")).unwrap();
    assert_eq!(tokens.trim(), format!("g a {t1}"));
    assert_eq!(
        nodes[1].get("/api/v1/units/web")["state"],
        "stopped",
        "standbys keep it stopped"
    );
    // A standby refuses to start a group unit by hand.
    let (s, body) = nodes[1].post("/api/v1/units/web/start");
    assert_eq!(s, 409, "{body}");

    let killed = nodes[0].kill9();
    // b is first in priority among the survivors.
    let t2 = wait_active(&nodes[1], "b");
    wait_healthy(&nodes[1]);
    println!("kill -9 → b healthy: {} ms", now_ms() - killed);
    assert!(t2 > t1, "a new token: {t1} then {t2}");
    assert_eq!(nodes[2].role(), "standby");
    let tokens = std::fs::read_to_string(nodes[1].dir.path().join("tokens")).unwrap();
    assert_eq!(tokens.trim(), format!("g b {t2}"));
    let hooks = std::fs::read_to_string(nodes[1].dir.path().join("hooks")).unwrap();
    assert!(
        hooks.contains(&format!("promote won the election {t2}")),
        "{hooks}"
    );

    // a comes back: it qualifies, but does not take the group back.
    nodes[0].start();
    wait_for("a back as a qualified standby", || {
        let v = nodes[1].get("/api/v1/groups/g");
        (v["members"]["a"]["role"] == "standby" && v["members"]["a"]["qualified"] == true)
            .then_some(())
    });
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(
            active(&nodes[1]).map(|a| a.0).as_deref(),
            Some("b"),
            "no preemption"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let h = check_history(&[&nodes[0], &nodes[1], &nodes[2]]);
    assert_eq!(
        h.iter().map(|i| i.node.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[test]
fn a_standby_whose_pre_promote_check_fails_is_skipped() {
    let failing = Opts {
        pre_promote: Some("echo replica lag too high; exit 1".into()),
        ..Default::default()
    };
    let (_net, mut nodes) = cluster(&[Opts::default(), failing, Opts::default()]);
    start_all(&mut nodes);
    wait_active(&nodes[1], "a");
    // b says why it does not qualify.
    wait_for("b not qualified", || {
        let v = nodes[2].get("/api/v1/groups/g");
        (v["members"]["b"]["qualified"] == false && v["members"]["c"]["qualified"] == true)
            .then_some(())
    });
    let nodes_out = nodes[2].cli(&["nodes"]);
    let text = String::from_utf8_lossy(&nodes_out.stdout);
    assert!(
        text.contains("NOT QUALIFIED: pre_promote failed") && text.contains("replica lag too high"),
        "{text}"
    );
    nodes[0].kill9();
    wait_active(&nodes[2], "c");
    assert_ne!(nodes[1].role(), "active");
    let ev = nodes[1].get("/api/v1/events?limit=500");
    assert!(
        ev.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "group.step_aside"),
        "b recorded that it stepped aside"
    );
    let h = check_history(&[&nodes[0], &nodes[1], &nodes[2]]);
    assert!(h.iter().all(|i| i.node != "b"), "b was never active: {h:?}");
}

#[test]
fn partitioned_active_demotes_itself_before_anyone_promotes() {
    // a's unit ignores SIGTERM: fencing kills it within half the lease.
    let stubborn = Opts {
        stubborn: true,
        ..Default::default()
    };
    let (net, mut nodes) = cluster(&[stubborn, Opts::default(), Opts::default()]);
    start_all(&mut nodes);
    wait_active(&nodes[1], "a");
    wait_healthy(&nodes[0]);
    net.cut(&mut nodes[0], 0, true);
    let cut_at = now_ms();
    wait_active(&nodes[1], "b");
    // a saw it could not renew and stopped its units on its own.
    wait_for("a fenced", || (nodes[0].role() == "standby").then_some(()));
    assert_eq!(nodes[0].get("/api/v1/units/web")["state"], "stopped");
    // Its unit ignored SIGTERM; it was killed, not left running.
    let marker = nodes[0].dir.path().display().to_string();
    let left: Vec<i32> = procs_with(&marker)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("http.server"))
                .unwrap_or(false)
        })
        .collect();
    assert!(left.is_empty(), "a's unit still runs: {left:?}");
    let hooks = wait_for("a's on_fault hook", || {
        std::fs::read_to_string(nodes[0].dir.path().join("hooks"))
            .ok()
            .filter(|h| h.contains("fault"))
    });
    assert!(
        hooks.contains("fault fault could not renew its lease"),
        "{hooks}"
    );
    assert!(
        hooks.contains("demote could not renew its lease"),
        "{hooks}"
    );
    let ha = nodes[0].history();
    let fenced = ha
        .iter()
        .find(|e| e.1 == "group.deactivated")
        .expect("a deactivated");
    assert!(fenced.3, "a fenced itself: {ha:?}");
    let hb = nodes[1].history();
    let b_on = hb
        .iter()
        .find(|e| e.1 == "group.activated")
        .expect("b activated");
    println!(
        "partition: a fenced {} ms after the cut, b active {} ms after it",
        fenced.0 - cut_at,
        b_on.0 - cut_at
    );
    assert!(fenced.0 <= b_on.0, "a was down before b came up");
    // Alert: the fenced node raised a warning.
    wait_for("group-fenced alert on a", || {
        let v = nodes[0].get("/api/v1/alerts?state=all");
        v.as_array()?
            .iter()
            .any(|a| a["rule"] == "group-fenced")
            .then_some(())
    });
    // The partition heals: a is a standby again, b keeps the group.
    net.cut(&mut nodes[0], 0, false);
    wait_for("a back in `nodes`", || {
        let v = nodes[1].get("/api/v1/groups/g");
        (v["members"]["a"]["qualified"] == true).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(active(&nodes[1]).map(|a| a.0).as_deref(), Some("b"));
    check_history(&[&nodes[0], &nodes[1], &nodes[2]]);
}

/// Why a node became active, from its own event log (oldest first).
fn activation_reasons(n: &Node) -> Vec<String> {
    let db = n.dir.path().join("data/mamori.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the node's store");
    let mut st = conn
        .prepare("SELECT data FROM events WHERE kind = 'group.activated' ORDER BY id")
        .expect("query");
    st.query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .map(|r| {
            let v: Value = serde_json::from_str(&r.expect("row")).unwrap_or(Value::Null);
            v["reason"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

#[test]
fn fast_takeover_beats_fences_under_partition_and_fails_over_after_a_kill() {
    let fast = |stubborn| Opts {
        fast: true,
        stubborn,
        ..Default::default()
    };
    let (net, mut nodes) = cluster(&[fast(true), fast(false), fast(false)]);
    start_all(&mut nodes);
    let t1 = wait_active(&nodes[1], "a");
    wait_healthy(&nodes[0]);
    // The active rewrites its beat after every keep-alive (every ttl/4).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let beats = rt.block_on(async {
        use mamori::cluster::Coordinator;
        let e = net.etcd();
        let cfg = mamori::config::cluster::EtcdConfig {
            endpoints: vec![format!("http://{}:{}", e.host, e.port)],
            ..Default::default()
        };
        let c = mamori::cluster::etcd::Etcd::new(&cfg, Duration::from_secs(2)).unwrap();
        let mut revs = Vec::new();
        // The first beat follows the first keep-alive, a quarter lease after winning.
        let start = Instant::now();
        while c.get("/mamori/groups/g/beat").await.unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "no beat");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..3 {
            let kv = c
                .get("/mamori/groups/g/beat")
                .await
                .unwrap()
                .expect("a beat");
            assert_eq!(
                kv.value,
                t1.to_string().into_bytes(),
                "the beat carries the token"
            );
            revs.push(kv.mod_revision);
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        revs
    });
    assert!(
        beats.windows(2).all(|w| w[1] > w[0]),
        "the beat moves: {beats:?}"
    );

    // Partition: a must be down before b is up, however b got the key.
    net.cut(&mut nodes[0], 0, true);
    let cut_at = now_ms();
    let t2 = wait_active(&nodes[1], "b");
    assert!(t2 > t1);
    wait_for("a fenced", || (nodes[0].role() == "standby").then_some(()));
    let fenced = nodes[0]
        .history()
        .into_iter()
        .find(|e| e.1 == "group.deactivated")
        .expect("a deactivated");
    assert!(fenced.3, "a fenced itself");
    let b_on = nodes[1]
        .history()
        .into_iter()
        .find(|e| e.1 == "group.activated")
        .expect("b activated");
    println!(
        "fast takeover, partition: a fenced {} ms after the cut, b active {} ms after it ({:?})",
        fenced.0 - cut_at,
        b_on.0 - cut_at,
        activation_reasons(&nodes[1])
    );
    assert!(fenced.0 <= b_on.0, "a was down before b came up");

    // kill -9 of b: c (a is still cut off) takes over.
    let killed = nodes[1].kill9();
    let t3 = wait_active(&nodes[2], "c");
    wait_healthy(&nodes[2]);
    assert!(t3 > t2);
    println!(
        "fast takeover, kill -9: c healthy {} ms after the kill ({:?})",
        now_ms() - killed,
        activation_reasons(&nodes[2])
    );
    net.cut(&mut nodes[0], 0, false);
    let h = check_history(&[&nodes[0], &nodes[1], &nodes[2]]);
    assert_eq!(
        h.iter().map(|i| i.node.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
}

#[test]
fn switchover_checks_the_target_and_a_drill_goes_there_and_back() {
    let failing = Opts {
        pre_promote: Some("exit 3".into()),
        ..Default::default()
    };
    let (_net, mut nodes) = cluster(&[Opts::default(), Opts::default(), failing]);
    start_all(&mut nodes);
    let t1 = wait_active(&nodes[1], "a");
    wait_for("c not qualified, b qualified", || {
        let v = nodes[1].get("/api/v1/groups/g");
        (v["members"]["c"]["qualified"] == false && v["members"]["b"]["qualified"] == true)
            .then_some(())
    });
    // Refused: c does not qualify; d is no node; a is already active.
    let (s, body) = nodes[1].post("/api/v1/groups/g/switchover?to=c");
    assert_eq!(s, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("does not qualify"),
        "{body}"
    );
    let (s, _) = nodes[1].post("/api/v1/groups/g/switchover?to=d");
    assert_eq!(s, 400);
    let (s, _) = nodes[1].post("/api/v1/groups/g/switchover?to=a");
    assert_eq!(s, 409);
    let (s, body) = nodes[1].post("/api/v1/groups/nope/switchover?to=a");
    assert_eq!(s, 404, "{body}");
    let (s, body) = nodes[1].post("/api/v1/groups/g/switchover");
    assert_eq!(s, 400, "{body}");
    // From a standby's CLI: the active hands off to b.
    let out = nodes[1].cli(&["switchover", "g", "--to", "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t2 = wait_active(&nodes[0], "b");
    assert!(t2 > t1);
    wait_healthy(&nodes[1]);
    assert_eq!(nodes[0].get("/api/v1/units/web")["state"], "stopped");
    let hooks = std::fs::read_to_string(nodes[0].dir.path().join("hooks")).unwrap();
    assert!(hooks.contains("demote switchover to b"), "{hooks}");

    // A drill from a: b → a → b, both legs healthy.
    let out = nodes[0].cli(&["drill", "g"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed") && text.contains("b → a"), "{text}");
    let d = nodes[0].get("/api/v1/drills?group=g");
    let d = &d[0];
    assert_eq!(
        (d["ok"].as_bool(), d["healthy"].as_bool()),
        (Some(true), Some(true)),
        "{d}"
    );
    assert!(
        d["gap_ms"].as_i64().unwrap() >= 0 && d["back_gap_ms"].as_i64().is_some(),
        "{d}"
    );
    println!(
        "drill: gap {} ms, back {} ms",
        d["gap_ms"], d["back_gap_ms"]
    );
    wait_active(&nodes[0], "b");
    let out = nodes[0].cli(&["drills"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("passed"));
    let ev = nodes[0].get("/api/v1/events?limit=500");
    assert!(ev
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "drill.passed"));

    // With b's only alternative (a) gone and c unqualified, a drill fails:
    // a critical alert says the failover is broken.
    nodes[0].kill9();
    wait_for("a gone from the records", || {
        let v = nodes[1].get("/api/v1/nodes");
        (!v["nodes"].as_array()?.iter().any(|r| r["node"] == "a")).then_some(())
    });
    let (s, d) = nodes[1].post("/api/v1/groups/g/drill");
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["ok"], false, "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("no standby qualifies"),
        "{d}"
    );
    wait_for("drill-failed alert", || {
        let v = nodes[1].get("/api/v1/alerts");
        v.as_array()?
            .iter()
            .any(|a| a["rule"] == "drill-failed" && a["severity"] == "critical")
            .then_some(())
    });
    wait_for("no-standby alert", || {
        let v = nodes[1].get("/api/v1/alerts");
        v.as_array()?
            .iter()
            .any(|a| a["rule"] == "no-standby")
            .then_some(())
    });
    check_history(&[&nodes[0], &nodes[1], &nodes[2]]);
}

#[test]
fn a_switchover_keeps_the_lease_while_a_slow_unit_stops() {
    // a's unit ignores SIGTERM and is killed only at its 4 s stop_timeout,
    // twice the lease: the lease must outlive the stop, so b cannot start
    // before a's unit is gone.
    let slow = Opts {
        stubborn: true,
        stop_timeout: Some("4s"),
        ..Default::default()
    };
    let (_net, mut nodes) = cluster(&[slow, Opts::default()]);
    start_all(&mut nodes);
    wait_active(&nodes[1], "a");
    wait_healthy(&nodes[0]);
    wait_for("b qualified", || {
        let v = nodes[0].get("/api/v1/groups/g");
        (v["members"]["b"]["qualified"] == true).then_some(())
    });
    let (s, body) = nodes[1].post("/api/v1/groups/g/switchover?to=b");
    assert_eq!(s, 200, "{body}");
    wait_healthy(&nodes[1]);
    let h = check_history(&[&nodes[0], &nodes[1]]);
    assert_eq!(
        h.iter().map(|i| i.node.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
}

fn events(n: &Node, kind: &str) -> usize {
    let v = n.get("/api/v1/events?limit=1000");
    v.as_array()
        .map(|a| a.iter().filter(|e| e["kind"] == kind).count())
        .unwrap_or(0)
}

#[test]
fn keep_if_all_peers_agree_keeps_the_group_through_an_etcd_outage() {
    let keep = Opts {
        keep: true,
        ..Default::default()
    };
    let (net, mut nodes) = cluster(&[keep.clone(), keep.clone(), keep]);
    start_all(&mut nodes);
    let t1 = wait_active(&nodes[1], "a");
    wait_healthy(&nodes[0]);
    wait_for("peers known to a", || {
        let v = nodes[0].get("/api/v1/groups/g");
        (v["members"].as_object()?.len() == 3).then_some(())
    });
    // etcd hangs for everyone: nobody can take the group, so a keeps it.
    net.etcd().pause(true);
    wait_for("a kept by its peers", || {
        (events(&nodes[0], "group.kept_by_peers") > 0).then_some(())
    });
    // Past the point where it would have fenced itself, it is still active.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(nodes[0].role(), "active");
    assert_eq!(events(&nodes[0], "group.deactivated"), 0);
    wait_healthy(&nodes[0]);
    // etcd is back: a's lease expired meanwhile; it takes the key again.
    net.etcd().pause(false);
    let t2 = wait_for("a active with a new token", || {
        active(&nodes[1])
            .filter(|(n, t)| n == "a" && *t != t1)
            .map(|(_, t)| t)
    });
    assert!(t2 > t1);
    assert_eq!(nodes[0].role(), "active");
    let h = check_history(&[&nodes[0], &nodes[1], &nodes[2]]);
    assert!(
        h.iter().all(|i| i.node == "a"),
        "only a was ever active: {h:?}"
    );
}

#[test]
fn keep_if_all_peers_agree_still_fences_when_only_the_active_is_cut_off() {
    let keep = Opts {
        keep: true,
        ..Default::default()
    };
    let (net, mut nodes) = cluster(&[keep.clone(), keep.clone(), keep]);
    start_all(&mut nodes);
    wait_active(&nodes[1], "a");
    wait_healthy(&nodes[0]);
    // The peers still reach etcd (and, with namespaces, not a): a must go.
    net.cut(&mut nodes[0], 0, true);
    wait_active(&nodes[1], "b");
    wait_for("a fenced", || (nodes[0].role() == "standby").then_some(()));
    assert_eq!(events(&nodes[0], "group.kept_by_peers"), 0);
    net.cut(&mut nodes[0], 0, false);
    check_history(&[&nodes[0], &nodes[1], &nodes[2]]);
}

#[test]
fn preempt_gives_the_group_back_to_the_first_node_when_it_returns() {
    let o = Opts {
        preempt: true,
        ..Default::default()
    };
    let (_net, mut nodes) = cluster(&[o.clone(), o]);
    start_all(&mut nodes);
    let t1 = wait_active(&nodes[1], "a");
    // `restart` of the group's unit on the standby does not start it there
    // (it only clears a gave-up state, the way out of not qualifying).
    let out = nodes[1].cli(&["restart", "web"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("not started: group \"g\" is not active on this node"),
        "{said}"
    );
    assert_eq!(nodes[1].get("/api/v1/units/web")["state"], "stopped");
    nodes[0].kill9();
    let t2 = wait_active(&nodes[1], "b");
    nodes[0].start();
    // a qualifies again and, first in `nodes`, asks for the group back.
    let t3 = wait_active(&nodes[1], "a");
    assert!(t1 < t2 && t2 < t3, "{t1} {t2} {t3}");
    wait_healthy(&nodes[0]);
    assert_eq!(nodes[1].get("/api/v1/units/web")["state"], "stopped");
    check_history(&[&nodes[0], &nodes[1]]);
}

#[test]
fn drill_every_schedules_drills_on_the_active_node() {
    let o = Opts {
        drill_every: Some("2s"),
        ..Default::default()
    };
    let (_net, mut nodes) = cluster(&[o.clone(), o]);
    start_all(&mut nodes);
    let d = wait_for("a scheduled drill that passed", || {
        nodes.iter().find_map(|n| {
            let v = n.get("/api/v1/drills");
            v.as_array()?
                .iter()
                .find(|d| d["trigger"] == "schedule" && d["finished_at"].is_i64())
                .cloned()
        })
    });
    assert_eq!(d["ok"], true, "{d}");
    assert_eq!(d["healthy"], true, "{d}");
    check_history(&[&nodes[0], &nodes[1]]);
}

/// Agents "a" and "b" of one host on the embedded backend (loopback
/// addresses, one database in `shared`), each node's config passed through
/// `edit` with the node's name.
fn embedded_pair(shared: &std::path::Path, edit: impl Fn(&str, String) -> String) -> Vec<Node> {
    let db = shared.join("cluster.db");
    let mut nodes: Vec<Node> = Vec::new();
    for (i, name) in ["a", "b"].iter().enumerate() {
        let n = Node::new(
            name,
            &format!("127.0.0.{}", i + 2),
            None,
            "http://unused",
            &["a", "b"],
            &Opts::default(),
        );
        let cfg = std::fs::read_to_string(n.config()).unwrap();
        let cfg = cfg
            .replace(
                "backend = \"etcd\"",
                &format!(
                    "backend = \"embedded\"\npath = {:?}",
                    db.display().to_string()
                ),
            )
            .replace("endpoints = [\"http://unused\"]\n", "");
        std::fs::write(n.config(), edit(name, cfg)).unwrap();
        nodes.push(n);
    }
    nodes
}

#[test]
fn embedded_backend_fails_over_between_agents_of_one_host() {
    let shared = tempfile::tempdir().unwrap();
    let mut nodes = embedded_pair(shared.path(), |_, c| c);
    start_all(&mut nodes);
    let t1 = wait_active(&nodes[1], "a");
    nodes[0].kill9();
    let t2 = wait_active(&nodes[1], "b");
    assert!(t2 > t1);
    wait_healthy(&nodes[1]);
    check_history(&[&nodes[0], &nodes[1]]);
}

#[test]
fn a_warm_standby_waits_for_its_units_first_verdict_at_boot_instead_of_stepping_aside() {
    // Warm: the units run on every member, and their health checks are
    // part of qualifying. Right after an agent starts they have no verdict
    // yet (`unknown`, or `paused` while the unit has not started); judged
    // then, every boot stepped aside and ran `on_fault`. `fall = 600` (60 s
    // at 100 ms) keeps a slow-starting server from reading `down`, so the
    // only verdict the check can reach here is `up`; `verify_every` bounds
    // the wait and is well inside the test's patience.
    let shared = tempfile::tempdir().unwrap();
    let mut nodes = embedded_pair(shared.path(), |name, c| {
        let c = c
            .replace(
                "verify_every = \"300ms\"",
                "verify_every = \"20s\"\nstandby = \"warm\"",
            )
            .replace("fall = 2", "fall = 600");
        // On a, web waits to be started by hand: its check reads `paused`.
        if name == "a" {
            c.replace("stop_timeout = ", "autostart = false\nstop_timeout = ")
        } else {
            c
        }
    });
    let [a, b] = &mut nodes[..] else {
        unreachable!("two nodes")
    };
    a.start();
    wait_for("a's web check paused before web ever ran", || {
        let v = a.get("/api/v1/checks/web");
        (v["status"] == "paused").then_some(())
    });
    let (s, v) = a.post("/api/v1/units/web/start");
    assert!(s < 300, "start web on a -> {s}: {v}");
    // Either a qualifies and becomes active, or it stepped aside: the
    // failure shows at once, with its reason.
    wait_for("a active, or a stepped aside", || {
        let here = a.get("/api/v1/groups/g");
        (here["active"] == "a" || events(a, "group.step_aside") > 0).then_some(())
    });
    let here = a.get("/api/v1/groups/g");
    assert_eq!(here["active"], "a", "a stepped aside: {}", here["here"]);
    b.start();
    wait_for("b qualified", || {
        let v = a.get("/api/v1/groups/g");
        (v["members"]["b"]["qualified"] == true).then_some(())
    });
    for n in [&*a, &*b] {
        assert_eq!(events(n, "group.step_aside"), 0, "{} stepped aside", n.name);
        assert_eq!(
            events(n, "group.qualified"),
            0,
            "{}: qualified at once, never unqualified",
            n.name
        );
        let hooks = std::fs::read_to_string(n.dir.path().join("hooks")).unwrap_or_default();
        assert!(!hooks.contains("fault"), "{} ran on_fault: {hooks}", n.name);
    }
    let hooks = std::fs::read_to_string(a.dir.path().join("hooks")).unwrap_or_default();
    assert!(hooks.contains("promote"), "a promoted: {hooks}");
    // Only the first verification waits: web stopped by hand on b, once it
    // ran, is judged as it is at b's next verification.
    let out = b.cli(&["stop", "web"]);
    assert!(out.status.success(), "stop web on b: {out:?}");
    wait_for("b steps aside", || {
        (events(b, "group.step_aside") > 0).then_some(())
    });
    let v = b.get("/api/v1/groups/g");
    assert_eq!(v["here"]["qualified"], false, "{v}");
    assert_eq!(
        v["here"]["reason"], "the group's units are not healthy here",
        "{v}"
    );
    let hooks = std::fs::read_to_string(b.dir.path().join("hooks")).unwrap_or_default();
    assert!(hooks.contains("fault"), "b ran on_fault: {hooks}");
}

#[test]
fn group_config_errors_are_reported_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.toml");
    std::fs::write(
        &p,
        "[cluster]\nbackend = \"etcd\"\n\n[[group]]\nname = \"g\"\nunits = [\"nope\"]\nnodes = [\"a\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("m.toml:2:1: [cluster] backend = \"etcd\" needs `endpoints`"),
        "{err}"
    );
    assert!(err.contains("m.toml:6:10: unknown unit \"nope\""), "{err}");
}

#[test]
fn an_agent_without_a_cluster_answers_cluster_endpoints_with_404() {
    let a = common::Agent::start("", "[[service]]\nname = \"s\"\ncommand = \"sleep 1000\"\n");
    for path in ["/api/v1/nodes", "/api/v1/groups", "/api/v1/cluster/peer"] {
        let (status, body) = common::http(a.port, "GET", path, None).unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("not in a cluster"),
            "{body}"
        );
    }
    let (status, _) = a.post("/api/v1/groups/g/drill");
    assert_eq!(status, 404);
    // Its unit starts as usual: no gate without a group.
    common::wait_for("s running", || {
        (a.unit("s")["state"] == "running").then_some(())
    });
}

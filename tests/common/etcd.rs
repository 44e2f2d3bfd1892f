//! Black-box etcd for the cluster-mode tests: starts real `etcd` processes
//! (1 or 3 members) on 127.0.0.1 with ephemeral ports and throw-away data
//! dirs, and reads and writes keys through etcd's JSON gateway over plain
//! HTTP, so that the assertions do not depend on the Rust etcd client the
//! server itself uses.
//!
//! [`EtcdBuilder::tls`] starts members that serve their clients over TLS
//! only and require a client certificate; each member then has a second,
//! plain-HTTP client listener on another port that only this harness uses
//! (etcd serves every URL of `--listen-client-urls` on its own listener,
//! TLS for the https ones). [`EtcdCluster::enable_auth`] turns etcd's
//! authentication on; the harness then sends a root token with its own
//! requests and takes a fresh one whenever etcd refuses it.
//!
//! The tests need the `etcd` binary (Debian's `etcd-server`, 3.4). When it
//! is missing and the tests run as root on a machine with `apt-get`,
//! [`etcd_binary`] installs the package, once per machine, however many test
//! threads and test binaries ask at the same time.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{HttpResponse, free_local_addr, http_request, spawn_reader};

/// How long a freshly started (or restarted) cluster gets to become healthy.
pub const ETCD_STARTUP_DEADLINE: Duration = Duration::from_secs(15);
/// How long a member gets to exit after SIGTERM before it is SIGKILLed.
pub const ETCD_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// How long a key-value request keeps being retried while the cluster is
/// unavailable (no member reachable, or an election under way).
pub const ETCD_REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Serialises the `apt-get` installs across test binaries (cargo runs them
/// one after the other, but a developer may run several at once, and two
/// `apt-get install` at once fail on the dpkg lock).
const INSTALL_LOCK: &str = "/tmp/nsqlookupd-apt-install.lock";

/// How to get etcd when neither the tests nor [`etcd_binary`] could.
const INSTALL_HINT: &str = "the cluster tests need etcd 3.4 or later: install Debian's package \
     (`apt-get install etcd-server`), put `etcd` on PATH, or set ETCD_BIN to its path";

/// The `etcd` binary: `$ETCD_BIN`, else `etcd` on PATH, else /usr/bin/etcd.
/// If there is none and we are root on a machine with `apt-get`, installs
/// Debian's `etcd-server` first (once per process, and under an exclusive
/// file lock so that parallel test binaries do not run apt-get together).
/// Panics with how to install it if it still cannot be found; the outcome
/// is kept, so a failed install is not retried by every test.
pub fn etcd_binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(resolve_etcd)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn resolve_etcd() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ETCD_BIN") {
        // An explicit choice is never second-guessed nor "fixed" with an
        // install.
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "ETCD_BIN={} is not an executable file; {INSTALL_HINT}",
                path.display()
            ))
        };
    }
    match find_etcd() {
        Some(path) => Ok(path),
        None => install_etcd(),
    }
}

fn find_etcd() -> Option<PathBuf> {
    find_in_path("etcd").or_else(|| {
        let fallback = PathBuf::from("/usr/bin/etcd");
        is_executable(&fallback).then_some(fallback)
    })
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Installs `etcd-server` with apt-get and returns the binary.
/// Judges by the binary afterwards, not by apt-get's exit status: the
/// package's postinst tries to start a system etcd service (on the default
/// ports, which the tests never use), and when that fails (no init system in
/// a container, port 2379 taken) dpkg reports an error although
/// /usr/bin/etcd is unpacked and works.
fn install_etcd() -> Result<PathBuf, String> {
    apt_install("etcd-server", find_etcd).map_err(|why| {
        format!(
            "etcd not found (ETCD_BIN unset, not on PATH, no /usr/bin/etcd): {why}; {INSTALL_HINT}"
        )
    })
}

/// Installs Debian's `package` with apt-get, once per machine however many
/// test binaries ask at once (under an exclusive file lock), and returns
/// what `find` finds after: judged by that, not by apt-get's exit status.
/// Needs root and apt-get; the error says why it could not, with the tail
/// of apt-get's output.
pub fn apt_install(package: &str, find: fn() -> Option<PathBuf>) -> Result<PathBuf, String> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let Some(apt_get) = find_in_path("apt-get").filter(|_| root) else {
        return Err(format!(
            "no automatic install of Debian's {package} (that needs root and apt-get)"
        ));
    };

    let _lock = lock_exclusive(Path::new(INSTALL_LOCK))?;
    // Another test binary may have installed it while we waited for the lock.
    if let Some(path) = find() {
        return Ok(path);
    }
    eprintln!("installing Debian's {package} with apt-get (once per machine)");
    let mut transcript = String::new();
    let steps: [&[&str]; 2] = [
        &["update"],
        &[
            "install",
            "-y",
            "--no-install-recommends",
            // Wait for a dpkg lock held by someone else instead of failing.
            "-o",
            "DPkg::Lock::Timeout=300",
            package,
        ],
    ];
    for args in steps {
        let out = Command::new(&apt_get)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output();
        transcript.push_str(&format!("$ apt-get {}\n", args.join(" ")));
        match out {
            Ok(out) => {
                transcript.push_str(&String::from_utf8_lossy(&out.stdout));
                transcript.push_str(&String::from_utf8_lossy(&out.stderr));
                transcript.push_str(&format!("({})\n", out.status));
            }
            Err(e) => transcript.push_str(&format!("cannot run apt-get: {e}\n")),
        }
        // A failed `update` is not fatal: the lists already on the machine
        // may do.
    }
    find().ok_or_else(|| {
        format!(
            "still missing after `apt-get install {package}`\n--- apt-get (tail) ---\n{}",
            tail(&transcript, 30)
        )
    })
}

/// Opens (creating) `path` and takes an exclusive `flock` on it, blocking;
/// the lock lasts as long as the returned file is open.
fn lock_exclusive(path: &Path) -> Result<File, String> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open the install lock {}: {e}", path.display()))?;
    loop {
        // SAFETY: flock(2) on a descriptor we own and keep open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(format!("flock {}: {err}", path.display()));
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ------------------------------------------------------------------ cluster

/// A running etcd process and the state needed to reap it.
struct Proc {
    child: Child,
    /// One message per output reader thread when it reaches end of stream.
    readers_done: mpsc::Receiver<()>,
    readers: usize,
}

struct Member {
    name: String,
    /// The client URL's address: https in a TLS cluster.
    client: SocketAddr,
    /// The plain-HTTP client listener of a TLS cluster's member, for the
    /// harness only.
    plain: Option<SocketAddr>,
    peer: SocketAddr,
    data_dir: PathBuf,
    /// Every output line of every run of this member; restarts add a marker.
    logs: Arc<Mutex<Vec<String>>>,
    /// `None` while the member is stopped. In a mutex so that the `&self`
    /// checks ([`EtcdCluster::wait_healthy`]) can notice a dead process.
    proc: Mutex<Option<Proc>>,
}

impl Member {
    /// Where the harness sends its own requests: plain HTTP always.
    fn gateway(&self) -> SocketAddr {
        self.plain.unwrap_or(self.client)
    }
}

/// The files of a TLS etcd: its server certificate (with 127.0.0.1 as an IP
/// subject alternative name, and usable as a client certificate too: etcd's
/// JSON gateway dials its own gRPC server with it) and key, and the CA that
/// signs the client certificates it accepts. All PEM.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to start an [`EtcdCluster`]: [`EtcdCluster::builder`].
pub struct EtcdBuilder {
    members: usize,
    tls: Option<TlsFiles>,
    args: Vec<String>,
}

impl EtcdBuilder {
    /// Clients must speak TLS (https client URLs, with `files`' server
    /// certificate) and present a certificate signed by `files.ca`
    /// (`--client-cert-auth`). Peers still talk plain HTTP.
    pub fn tls(mut self, files: &TlsFiles) -> Self {
        self.tls = Some(files.clone());
        self
    }

    /// One more flag for every member, e.g. `--auth-token-ttl=2`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts the cluster: see [`EtcdCluster::start`].
    pub fn start(self) -> EtcdCluster {
        assert!(
            self.members > 0,
            "an etcd cluster needs at least one member"
        );
        let binary = etcd_binary();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match EtcdCluster::try_start(&binary, &self, attempt < 5) {
                Ok(cluster) => return cluster,
                // The failed cluster was dropped: killed and cleaned up.
                Err(PortTaken) => continue,
            }
        }
    }
}

/// The harness's own credentials once auth is enabled: root's, and the
/// token they last got.
struct RootAuth {
    password: String,
    token: Option<String>,
}

/// A real etcd cluster of one or more local members. Dropping it kills every
/// member and removes the data dirs.
pub struct EtcdCluster {
    members: Vec<Member>,
    /// The temp dir holding every member's data dir.
    root: PathBuf,
    token: String,
    initial_cluster: String,
    tls: Option<TlsFiles>,
    /// Extra flags of every member ([`EtcdBuilder::arg`]).
    args: Vec<String>,
    /// Set by [`EtcdCluster::enable_auth`].
    auth: Mutex<Option<RootAuth>>,
}

/// Why a start attempt was given up in favour of another one.
struct PortTaken;

impl EtcdCluster {
    /// Starts a new cluster of `members` members (1 or 3 typically) and waits
    /// (at most [`ETCD_STARTUP_DEADLINE`]) until every member reports itself
    /// healthy. Ports are picked free a moment before; if another process
    /// takes one meanwhile, the whole start is retried with fresh ones.
    /// Panics with the members' log tails otherwise.
    pub fn start(members: usize) -> EtcdCluster {
        EtcdCluster::builder(members).start()
    }

    /// Like [`EtcdCluster::start`], for clients over TLS with a client
    /// certificate only ([`EtcdBuilder::tls`]).
    pub fn start_tls(members: usize, files: &TlsFiles) -> EtcdCluster {
        EtcdCluster::builder(members).tls(files).start()
    }

    /// A cluster of `members` members to configure, then start.
    pub fn builder(members: usize) -> EtcdBuilder {
        EtcdBuilder {
            members,
            tls: None,
            args: Vec::new(),
        }
    }

    fn try_start(
        binary: &Path,
        options: &EtcdBuilder,
        may_retry: bool,
    ) -> Result<EtcdCluster, PortTaken> {
        let n = options.members;
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // Unique among parallel tests (sequence number), test binaries (pid)
        // and leftovers of earlier runs (time): the token keeps members of
        // two clusters from ever joining each other.
        let token = format!(
            "nsqlookupd-etcd-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let root = std::env::temp_dir().join(&token);
        fs::create_dir(&root)
            .unwrap_or_else(|e| panic!("cannot create etcd temp dir {}: {e}", root.display()));

        // Client, peer and (TLS only) plain client port of each member.
        let per_member = if options.tls.is_some() { 3 } else { 2 };
        let mut addrs = Vec::with_capacity(per_member * n);
        while addrs.len() < per_member * n {
            let addr = free_local_addr();
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: addrs[per_member * i],
                peer: addrs[per_member * i + 1],
                plain: (per_member == 3).then(|| addrs[per_member * i + 2]),
                data_dir: root.join(format!("m{i}")),
                logs: Arc::new(Mutex::new(Vec::new())),
                proc: Mutex::new(None),
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = EtcdCluster {
            members,
            root,
            token,
            initial_cluster,
            tls: options.tls.clone(),
            args: options.args.clone(),
            auth: Mutex::new(None),
        };
        let deadline = Instant::now() + ETCD_STARTUP_DEADLINE;
        // One after the other, each once the previous one serves its peer
        // port. A fresh member first asks every peer whether it was already
        // bootstrapped; a peer whose port is open but not yet served (it is
        // asking the same question) holds that request for etcd's 2 s
        // bootstrap timeout, so members started together all wait 2 s. A peer
        // not started yet refuses at once, and a served one answers.
        for i in 0..n {
            cluster.spawn(binary, i);
            if n > 1 {
                cluster.wait_peer_port(i, deadline, may_retry)?;
            }
        }
        let all: Vec<usize> = (0..n).collect();
        loop {
            match cluster.poll_healthy(&all) {
                Ok(true) => return Ok(cluster),
                Ok(false) => {}
                Err(dead) => return Err(cluster.exited_during_start(dead, may_retry)),
            }
            if Instant::now() >= deadline {
                cluster.fail(&format!(
                    "cluster not healthy within {ETCD_STARTUP_DEADLINE:?} of its start"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until member `i` answers on its peer port (during a start).
    fn wait_peer_port(
        &self,
        i: usize,
        deadline: Instant,
        may_retry: bool,
    ) -> Result<(), PortTaken> {
        loop {
            if !self.is_running(i) {
                self.drain(i);
                return Err(self.exited_during_start(i, may_retry));
            }
            if http_request(self.members[i].peer, "GET", "/version", &[], None).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "member {i} did not serve its peer port within {ETCD_STARTUP_DEADLINE:?}"
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Member `i` exited while the cluster was starting: [`PortTaken`] if
    /// another process took one of its ports and a retry is allowed, else a
    /// panic with the logs.
    fn exited_during_start(&self, i: usize, may_retry: bool) -> PortTaken {
        if may_retry && self.log_tail(i, 30).contains("address already in use") {
            return PortTaken;
        }
        self.fail(&format!("member {i} exited during startup"));
    }

    /// Starts member `i`'s process with its fixed name, ports and data dir.
    /// The `--initial-*` flags are always the bootstrap ones: etcd ignores
    /// them once the data dir holds a WAL, so a restart rejoins as before.
    fn spawn(&self, binary: &Path, i: usize) {
        let m = &self.members[i];
        let client_url = self.client_url(i);
        let listen_client_urls = match m.plain {
            Some(plain) => format!("{client_url},http://{plain}"),
            None => client_url.clone(),
        };
        let peer_url = format!("http://{}", m.peer);
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", m.data_dir.display()))
            .arg(format!("--listen-client-urls={listen_client_urls}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token={}", self.token))
            // Elections within about a second of a member's death instead of
            // the default's several seconds.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .arg("--log-outputs=stderr")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()))
                .arg("--client-cert-auth")
                .arg(format!("--trusted-ca-file={}", tls.ca.display()));
        }
        // etcd reads every ETCD_* variable as a flag: none of the caller's
        // (ETCD_BIN included) must reach it, except the arch override.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") && key != "ETCD_UNSUPPORTED_ARCH" {
                cmd.env_remove(key);
            }
        }
        // etcd 3.4 refuses to start on arm64 without it.
        if cfg!(target_arch = "aarch64") && std::env::var_os("ETCD_UNSUPPORTED_ARCH").is_none() {
            cmd.env("ETCD_UNSUPPORTED_ARCH", "arm64");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));

        let (done_tx, readers_done) = mpsc::channel::<()>();
        // Nobody reads the lines channel: the log vector is what counts.
        let (line_tx, _) = mpsc::channel::<String>();
        let stderr = child.stderr.take().expect("stderr is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        spawn_reader(stderr, m.logs.clone(), line_tx.clone(), done_tx.clone());
        spawn_reader(stdout, m.logs.clone(), line_tx, done_tx);
        *m.proc.lock().unwrap() = Some(Proc {
            child,
            readers_done,
            readers: 2,
        });
    }

    /// Number of members (running or not).
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Client URLs of every member (running or not), e.g.
    /// `http://127.0.0.1:41234`, or `https://...` in a TLS cluster.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect()
    }

    fn client_url(&self, member: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.members[member].client)
    }

    /// [`EtcdCluster::endpoints`] joined with commas, as etcd tools and the
    /// server's flag take them.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// The client address of `member` (TLS in a TLS cluster).
    pub fn client_addr(&self, member: usize) -> SocketAddr {
        self.members[member].client
    }

    /// The plain-HTTP client address of `member` of a TLS cluster (where
    /// the harness talks to it); `None` in a plain cluster.
    pub fn plain_client_addr(&self, member: usize) -> Option<SocketAddr> {
        self.members[member].plain
    }

    /// Whether `member`'s process runs (it is reaped here if it has exited).
    pub fn is_running(&self, member: usize) -> bool {
        let mut proc = self.members[member].proc.lock().unwrap();
        match proc.as_mut() {
            Some(p) => p.child.try_wait().expect("try_wait on etcd").is_none(),
            None => false,
        }
    }

    /// Indices of the members whose process runs.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    /// The last `n` output lines of `member` (every run of it).
    pub fn log_tail(&self, member: usize, n: usize) -> String {
        let logs = self.members[member].logs.lock().unwrap();
        logs[logs.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILLs `member` and reaps it (no-op if it is not running).
    pub fn kill(&mut self, member: usize) {
        self.end(member, None);
    }

    /// SIGTERMs `member`, waits up to [`ETCD_SHUTDOWN_DEADLINE`] for it to
    /// exit, then SIGKILLs it (no-op if it is not running). The last member
    /// running of a multi-member cluster gets up to 2 s first to step down
    /// from leadership (see `await_step_down`).
    pub fn stop(&mut self, member: usize) {
        self.await_step_down(member);
        self.end(member, Some(ETCD_SHUTDOWN_DEADLINE));
    }

    /// A leader told to stop first hands its leadership to the peer it has
    /// been connected to longest. A peer that exited a moment ago may still
    /// count as connected; the leader then waits for etcd's request timeout
    /// (over 5 s) before it exits. A leader left alone steps down within an
    /// election timeout (raft's quorum check), after which it stops at once:
    /// when `member` is the last one running, wait for that (at most 2 s).
    fn await_step_down(&self, member: usize) {
        if self.members.len() == 1 || self.running() != [member] {
            return;
        }
        let end = Instant::now() + Duration::from_secs(2);
        while self.is_leader(member) && Instant::now() < end {
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops every running member: the followers together, then the
    /// leader. Told to stop first, a leader would hand its leadership to a
    /// follower that is stopping too, and wait over 5 s for it.
    pub fn stop_all(&mut self) {
        let leader = self.current_leader();
        let followers: Vec<usize> = self
            .running()
            .into_iter()
            .filter(|&i| Some(i) != leader)
            .collect();
        for &i in &followers {
            self.signal(i, libc::SIGTERM);
        }
        for &i in &followers {
            self.end(i, Some(ETCD_SHUTDOWN_DEADLINE));
        }
        if let Some(leader) = leader {
            self.stop(leader);
        }
    }

    /// Restarts `member` (stopping it first if it runs) with the same name,
    /// ports and data dir, so it rejoins with its data. Waits (at most
    /// [`ETCD_STARTUP_DEADLINE`]) until it is healthy if a quorum of members
    /// then runs; without a quorum it cannot become healthy, so this only
    /// starts it (restart the others, or use [`EtcdCluster::restart_all`]).
    pub fn restart(&mut self, member: usize) {
        self.stop(member);
        self.relaunch(member);
        if self.running().len() > self.members.len() / 2 {
            self.wait_members_healthy(&[member], ETCD_STARTUP_DEADLINE);
        }
    }

    /// Stops every running member, starts them all again with the same
    /// names, ports and data dirs, and waits (at most
    /// [`ETCD_STARTUP_DEADLINE`]) until every member is healthy.
    pub fn restart_all(&mut self) {
        self.stop_all();
        for i in 0..self.members.len() {
            self.relaunch(i);
        }
        self.wait_healthy(ETCD_STARTUP_DEADLINE);
    }

    fn relaunch(&mut self, member: usize) {
        self.members[member]
            .logs
            .lock()
            .unwrap()
            .push("--- [harness] restarting this member ---".to_string());
        self.spawn(&etcd_binary(), member);
    }

    /// Waits until every running member answers `GET /health` with
    /// `{"health":"true"}` (it has a leader and serves a quorum read).
    /// Panics with the log tails if that takes longer than `deadline`, if a
    /// member process exits meanwhile, or if no member runs.
    pub fn wait_healthy(&self, deadline: Duration) {
        let running = self.running();
        if running.is_empty() {
            self.fail("wait_healthy: no member is running");
        }
        self.wait_members_healthy(&running, deadline);
    }

    fn wait_members_healthy(&self, members: &[usize], deadline: Duration) {
        let end = Instant::now() + deadline;
        loop {
            match self.poll_healthy(members) {
                Ok(true) => return,
                Ok(false) => {}
                Err(dead) => self.fail(&format!("member {dead} exited")),
            }
            if Instant::now() >= end {
                self.fail(&format!(
                    "members {members:?} not healthy within {deadline:?}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `Ok(true)` if every one of `members` is healthy now, `Err(i)` if
    /// member `i`'s process is gone.
    fn poll_healthy(&self, members: &[usize]) -> Result<bool, usize> {
        for &i in members {
            if !self.is_running(i) {
                self.drain(i);
                return Err(i);
            }
            if self.health(i).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `Ok` if member `i` answers `GET /health` with `{"health":"true"}`
    /// (it knows a leader and a read through raft succeeded within 1 s),
    /// else what it answered.
    fn health(&self, i: usize) -> Result<(), String> {
        match http_request(self.members[i].gateway(), "GET", "/health", &[], None) {
            Ok(r)
                if r.status == 200
                    && serde_json::from_slice::<Value>(&r.body)
                        .is_ok_and(|v| v["health"] == "true") =>
            {
                Ok(())
            }
            Ok(r) => Err(format!("HTTP {}: {}", r.status, r.text())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The index of the current leader, as the running members see it
    /// (waits up to [`ETCD_REQUEST_DEADLINE`] for one).
    pub fn leader(&self) -> usize {
        let end = Instant::now() + ETCD_REQUEST_DEADLINE;
        loop {
            if let Some(leader) = self.current_leader() {
                return leader;
            }
            if Instant::now() >= end {
                self.fail(&format!("no leader within {ETCD_REQUEST_DEADLINE:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running member that says it is the leader, if one does now.
    fn current_leader(&self) -> Option<usize> {
        self.running().into_iter().find(|&i| self.is_leader(i))
    }

    /// Whether member `i` says it is the leader now.
    fn is_leader(&self, i: usize) -> bool {
        let Ok(r) = self.post(i, "/v3/maintenance/status", "{}") else {
            return false;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
            return false;
        };
        let leader = v["leader"].as_str().unwrap_or("0");
        r.status == 200 && leader != "0" && v["header"]["member_id"] == leader
    }

    // ------------------------------------------------------------ keys

    /// Every key under `prefix` (all keys for `""`) with its value, sorted
    /// by key, read with a linearizable range request.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let (key, range_end) = prefix_range(prefix.as_bytes());
        let v = self.kv(
            "/v3/kv/range",
            json!({ "key": b64_encode(&key), "range_end": b64_encode(&range_end) }),
        );
        v["kvs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|kv| (b64_string(&kv["key"]), b64_string(&kv["value"])))
            .collect()
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<String> {
        let v = self.kv("/v3/kv/range", json!({ "key": b64_encode(key.as_bytes()) }));
        v["kvs"].get(0).map(|kv| b64_string(&kv["value"]))
    }

    /// Writes `key` = `value`; returns the revision of the write.
    pub fn put(&self, key: &str, value: &str) -> i64 {
        let v = self.kv(
            "/v3/kv/put",
            json!({ "key": b64_encode(key.as_bytes()), "value": b64_encode(value.as_bytes()) }),
        );
        header_revision(&v)
    }

    /// Deletes every key under `prefix` (all keys for `""`); returns how many
    /// were deleted.
    pub fn delete_prefix(&self, prefix: &str) -> i64 {
        let (key, range_end) = prefix_range(prefix.as_bytes());
        let v = self.kv(
            "/v3/kv/deleterange",
            json!({ "key": b64_encode(&key), "range_end": b64_encode(&range_end) }),
        );
        json_i64(&v["deleted"])
    }

    /// Compacts the key-value history up to `revision` and waits until the
    /// compaction is applied (`physical`), so that a watch from an older
    /// revision fails right after. Panics if `revision` is already compacted
    /// or in the future.
    pub fn compact(&self, revision: i64) {
        self.kv(
            "/v3/kv/compaction",
            json!({ "revision": revision, "physical": true }),
        );
    }

    /// The current revision of the key-value store.
    pub fn revision(&self) -> i64 {
        // Any range answers with the store's revision in its header.
        let v = self.kv(
            "/v3/kv/range",
            json!({ "key": b64_encode(b"\0"), "count_only": true }),
        );
        header_revision(&v)
    }

    // ------------------------------------------------------------ auth

    /// Adds the user `name` with `password`.
    pub fn add_user(&self, name: &str, password: &str) {
        self.kv(
            "/v3/auth/user/add",
            json!({ "name": name, "password": password }),
        );
    }

    /// Adds the role `name`, with no permission.
    pub fn add_role(&self, name: &str) {
        self.kv("/v3/auth/role/add", json!({ "name": name }));
    }

    /// Grants `role` read and write on every key under `prefix`.
    pub fn grant_prefix(&self, role: &str, prefix: &str) {
        let (key, range_end) = prefix_range(prefix.as_bytes());
        self.kv(
            "/v3/auth/role/grant",
            json!({
                "name": role,
                "perm": {
                    "permType": "READWRITE",
                    "key": b64_encode(&key),
                    "range_end": b64_encode(&range_end),
                },
            }),
        );
    }

    /// Grants `role` to `user`.
    pub fn grant_role(&self, user: &str, role: &str) {
        self.kv("/v3/auth/user/grant", json!({ "user": user, "role": role }));
    }

    /// Turns authentication on, with a `root` user (role `root`) of
    /// `root_password`, which the harness's own requests use from now on.
    pub fn enable_auth(&self, root_password: &str) {
        self.add_user("root", root_password);
        self.add_role("root");
        self.grant_role("root", "root");
        self.kv("/v3/auth/enable", json!({}));
        *self.auth.lock().unwrap() = Some(RootAuth {
            password: root_password.to_owned(),
            token: None,
        });
    }

    /// A token for `user`, from the first running member, or etcd's answer
    /// if it refuses one (wrong password, auth not enabled...).
    pub fn authenticate(&self, user: &str, password: &str) -> Result<String, String> {
        let i = self.running().first().copied().unwrap_or(0);
        self.authenticate_on(i, user, password)
    }

    fn authenticate_on(&self, i: usize, user: &str, password: &str) -> Result<String, String> {
        let body = json!({ "name": user, "password": password }).to_string();
        let r = http_request(
            self.members[i].gateway(),
            "POST",
            "/v3/auth/authenticate",
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
        .map_err(|e| e.to_string())?;
        match (r.status, serde_json::from_slice::<Value>(&r.body)) {
            (200, Ok(v)) if v["token"].is_string() => Ok(v["token"].as_str().unwrap().to_owned()),
            _ => Err(format!("HTTP {}: {}", r.status, r.text())),
        }
    }

    /// Whether etcd (its first running member) still takes `token`: a
    /// read with it answers other than 401 "invalid auth token".
    pub fn token_valid(&self, token: &str) -> bool {
        let i = self.running().first().copied().unwrap_or(0);
        let body = json!({ "key": b64_encode(b"\0"), "count_only": true }).to_string();
        let r = http_request(
            self.members[i].gateway(),
            "POST",
            "/v3/kv/range",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", token),
            ],
            Some(body.as_bytes()),
        )
        .unwrap_or_else(|e| self.fail(&format!("token_valid: {e}")));
        !refused_token(&r)
    }

    /// POSTs `body` (JSON) to the gateway path `path` of member `i`. Once
    /// auth is enabled, with the harness's root token; a token etcd
    /// refuses (none yet, expired, or lost with a restart: etcd's simple
    /// tokens live in memory) is replaced by a fresh one and the request
    /// sent again, once.
    fn post(&self, i: usize, path: &str, body: &str) -> io::Result<HttpResponse> {
        let send = |token: Option<&str>| {
            let mut headers = vec![("Content-Type", "application/json")];
            headers.extend(token.map(|t| ("Authorization", t)));
            http_request(
                self.members[i].gateway(),
                "POST",
                path,
                &headers,
                Some(body.as_bytes()),
            )
        };
        let token = self.auth.lock().unwrap().as_ref().map(|a| a.token.clone());
        let Some(token) = token else {
            return send(None);
        };
        let r = send(token.as_deref())?;
        if !refused_token(&r) {
            return Ok(r);
        }
        let password = self.auth.lock().unwrap().as_ref().unwrap().password.clone();
        let fresh = self
            .authenticate_on(i, "root", &password)
            .map_err(|e| io::Error::other(format!("authenticate as root: {e}")))?;
        self.auth.lock().unwrap().as_mut().unwrap().token = Some(fresh.clone());
        send(Some(&fresh))
    }

    /// POSTs `body` to the JSON gateway path `path` of a healthy running
    /// member and returns the answer. While the cluster is unavailable (no
    /// member reachable or healthy, or etcd answers 503/504: no leader,
    /// leader changed, request timed out) it tries the next running member,
    /// for at most [`ETCD_REQUEST_DEADLINE`]; any other error answer panics
    /// at once.
    ///
    /// The health check first (at most 1 s: etcd's own timeout for its
    /// probe) is what keeps this fast right after a leader died: a request
    /// sent to a follower that still believes in the dead leader is lost
    /// with it and only fails after etcd's request timeout, over 5 s.
    fn kv(&self, path: &str, body: Value) -> Value {
        let body = body.to_string();
        let end = Instant::now() + ETCD_REQUEST_DEADLINE;
        let mut last = String::from("no member is running");
        loop {
            for i in self.running() {
                let addr = self.members[i].gateway();
                if let Err(why) = self.health(i) {
                    last = format!("member {i} ({addr}) not healthy: {why}");
                    continue;
                }
                match self.post(i, path, &body) {
                    Ok(r) if r.status == 200 => return r.json(),
                    Ok(r) if matches!(r.status, 503 | 504) => {
                        last = format!("member {i}: HTTP {}: {}", r.status, r.text());
                    }
                    Ok(r) => panic!(
                        "etcd POST {path} {body} on member {i} ({addr}): HTTP {}: {}",
                        r.status,
                        r.text()
                    ),
                    Err(e) => last = format!("member {i} ({addr}): {e}"),
                }
            }
            if Instant::now() >= end {
                self.fail(&format!(
                    "etcd POST {path} {body} failed for {ETCD_REQUEST_DEADLINE:?}; last: {last}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    // ------------------------------------------------------------ processes

    fn signal(&self, member: usize, signal: libc::c_int) {
        let proc = self.members[member].proc.lock().unwrap();
        if let Some(p) = proc.as_ref() {
            // SAFETY: kill(2) on our own child, not yet reaped (we hold its
            // `Child`, and only `end` reaps it), so the pid is still ours.
            unsafe {
                libc::kill(p.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Ends `member`'s process: SIGTERM and up to `grace` to exit, or SIGKILL
    /// at once for `None`; then reaps it and collects its last output.
    fn end(&mut self, member: usize, grace: Option<Duration>) -> Option<ExitStatus> {
        let m = &mut self.members[member];
        let mut p = m.proc.get_mut().unwrap().take()?;
        let status = match p.child.try_wait().expect("try_wait on etcd") {
            Some(status) => status,
            None => {
                if let Some(grace) = grace {
                    // SAFETY: as in `signal`: our unreaped child.
                    unsafe {
                        libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM);
                    }
                    let deadline = Instant::now() + grace;
                    while p.child.try_wait().expect("try_wait on etcd").is_none()
                        && Instant::now() < deadline
                    {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                let _ = p.child.kill();
                p.child.wait().expect("wait for etcd")
            }
        };
        drain_readers(&mut p);
        Some(status)
    }

    /// Collects the last output of `member` if its process has exited.
    fn drain(&self, member: usize) {
        if let Some(p) = self.members[member].proc.lock().unwrap().as_mut() {
            drain_readers(p);
        }
    }

    /// Panics with `problem` and every member's log tail.
    fn fail(&self, problem: &str) -> ! {
        let mut report = format!(
            "etcd cluster {} ({} members, endpoints {}): {problem}",
            self.token,
            self.members.len(),
            self.endpoints_arg()
        );
        for (i, m) in self.members.iter().enumerate() {
            let state = if self.is_running(i) {
                "running"
            } else {
                "not running"
            };
            report.push_str(&format!(
                "\n--- etcd member {i} ({}, {state}) log (tail) ---\n{}",
                m.name,
                self.log_tail(i, 20)
            ));
        }
        panic!("{report}");
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn drain_readers(p: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while p.readers > 0 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match p.readers_done.recv_timeout(remaining) {
            Ok(()) => p.readers -= 1,
            Err(_) => break,
        }
    }
}

/// The `[key, range_end)` of every key starting with `prefix`: the prefix
/// with its last byte below 0xff incremented (what `etcdctl get --prefix`
/// sends); `"\0"` to `"\0"` (every key) for an empty or all-0xff prefix.
fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.to_vec(), end);
        }
    }
    if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.to_vec(), vec![0])
    }
}

/// Whether etcd refused the request's auth token: 401 for an invalid or
/// expired one, "user name is empty" (400) for none.
fn refused_token(r: &HttpResponse) -> bool {
    r.status == 401 || (r.status == 400 && r.text().contains("user name is empty"))
}

/// The gateway writes int64 fields as JSON strings (and leaves out zeros).
fn json_i64(v: &Value) -> i64 {
    match v {
        Value::Null => 0,
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not an integer: {v}")),
        _ => v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}")),
    }
}

fn header_revision(v: &Value) -> i64 {
    json_i64(&v["header"]["revision"])
}

/// A base64 field of a gateway answer as text (absent means empty).
fn b64_string(v: &Value) -> String {
    let bytes =
        b64_decode(v.as_str().unwrap_or_default()).unwrap_or_else(|| panic!("not base64: {v}"));
    String::from_utf8_lossy(&bytes).into_owned()
}

// ------------------------------------------------------------------ base64

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what the gateway's JSON carries for bytes).
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` if it is not base64.
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in text {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover character carries no whole byte.
    (bits < 6).then_some(out)
}

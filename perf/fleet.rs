//! The simulated nsqd fleet: one task and one TCP connection per node.
//!
//! Each node connects, sends the magic and IDENTIFY, then its REGISTER
//! commands (`REGISTER topic`, then `REGISTER topic channel` for each
//! channel, as nsqd does), pipelined with at most `window` commands in
//! flight, then sends a PING every `ping_interval` until told to stop.
//! Every response's latency is measured from the write of its command to the
//! arrival of its frame: with a window of 1 that is exactly what an nsqd
//! (which waits for each answer) experiences; with a larger window it also
//! includes queueing behind the node's own earlier commands.
//!
//! A node can be told to restart (churn, reconnect storm): it marks itself
//! unregistered, drops its connection, reconnects and registers everything
//! again. The per-node registration state is published in [`NodeStates`] so
//! that the lookup checker knows which producers must be visible.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout};

use crate::scheme::Workload;
use crate::stats::{Errors, Latency, io_kind};
use crate::wire::{self, Frame, FrameBuf};

/// How the fleet talks to the server.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The lookupd TCP addresses (`host:port`): node `i` connects to
    /// `tcp_addresses[i % n]` (several replicas of a cluster).
    pub tcp_addresses: Vec<String>,
    /// Maximum REGISTER commands in flight per connection.
    pub window: usize,
    /// Heartbeat period once registered (nsqd uses 15 s).
    pub ping_interval: Duration,
    /// A response slower than this is a `timeout` error and the node
    /// reconnects (nsqd itself gives up after 1 s; the bench waits longer
    /// so that slow answers are measured rather than cut off).
    pub tcp_timeout: Duration,
    /// Pause before reconnecting after a failed session.
    pub reconnect_delay: Duration,
    /// How long a topic taken out by [`Fleet::start_unregisters`] stays
    /// out before the node registers it again.
    pub unregister_hold: Duration,
    /// How long a topic made by [`Fleet::start_ephemerals`] lives before
    /// its node unregisters it.
    pub ephemeral_life: Duration,
}

impl FleetConfig {
    /// The address node `node` connects to.
    pub fn address_of(&self, node: usize) -> &str {
        &self.tcp_addresses[node % self.tcp_addresses.len().max(1)]
    }
}

/// Which part of the run a TCP response belongs to, for separate figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// The initial registration of the whole fleet.
    Register = 0,
    /// Once registered: pings, churn re-registrations.
    Steady = 1,
    /// From a reconnect storm until the whole fleet is registered again.
    Storm = 2,
}

/// Registration state of every node, published for the lookup checker.
///
/// Each node has one word: `epoch << 1 | registered`. Every transition bumps
/// the epoch, so two equal readings taken before and after a `/lookup`
/// request prove that the node stayed registered the whole time.
pub struct NodeStates {
    words: Vec<AtomicU64>,
    restarts: Vec<AtomicU32>,
    /// Per node, the topic it has taken out of the registry (the soak's
    /// UNREGISTER share, see [`Out`]): `seq << 32 | state << 30 | slot`.
    /// Every change bumps `seq`, so two equal readings prove nothing
    /// changed in between.
    out: Vec<AtomicU64>,
}

/// Where a node's UNREGISTER cycle stands (the soak's UNREGISTER share:
/// `UNREGISTER topic channel` for each channel, `UNREGISTER topic`, a
/// hold, then `REGISTER` again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    /// Every topic of the node is registered (or the node is down).
    None,
    /// Its topic slot `k` is being unregistered or registered again:
    /// the server may list the node for that topic or not.
    InFlux(usize),
    /// `UNREGISTER topic` of its slot `k` was answered OK and the
    /// REGISTER has not been sent: the server must not list the node for
    /// that topic.
    Gone(usize),
}

impl Out {
    /// Decodes a word of [`NodeStates::out_word`].
    pub fn of(word: u64) -> Out {
        let slot = (word & ((1 << 30) - 1)) as usize;
        match (word >> 30) & 3 {
            1 => Out::InFlux(slot),
            2 => Out::Gone(slot),
            _ => Out::None,
        }
    }

    fn bits(self) -> u64 {
        match self {
            Out::None => 0,
            Out::InFlux(k) => 1 << 30 | k as u64,
            Out::Gone(k) => 2 << 30 | k as u64,
        }
    }
}

impl NodeStates {
    /// All nodes unregistered, never restarted.
    pub fn new(nodes: usize) -> Self {
        NodeStates {
            words: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            restarts: (0..nodes).map(|_| AtomicU32::new(0)).collect(),
            out: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// All nodes registered: for checking a fleet run by another process.
    pub fn all_registered(nodes: usize) -> Self {
        let s = Self::new(nodes);
        for w in &s.words {
            w.store(3, Ordering::SeqCst);
        }
        s
    }

    /// The current word of `node` (see [`NodeStates::is_registered`]).
    pub fn snapshot(&self, node: usize) -> u64 {
        self.words.get(node).map_or(0, |w| w.load(Ordering::SeqCst))
    }

    /// Whether a snapshot says "registered".
    pub fn is_registered(word: u64) -> bool {
        word & 1 == 1
    }

    /// Whether `node` is registered now in the same session as when
    /// `before` (its earlier [`NodeStates::snapshot`]) was taken: it stayed
    /// registered in between, so an answer given meanwhile must list it.
    pub fn stayed(&self, node: usize, before: u64) -> bool {
        Self::is_registered(before) && self.snapshot(node) == before
    }

    /// Whether `node` ever reconnected: the server may then briefly list
    /// both its old and new connection.
    pub fn has_restarted(&self, node: usize) -> bool {
        self.restarts
            .get(node)
            .is_some_and(|r| r.load(Ordering::SeqCst) > 0)
    }

    /// The current UNREGISTER-cycle word of `node` (see [`Out::of`]).
    pub fn out_word(&self, node: usize) -> u64 {
        self.out.get(node).map_or(0, |w| w.load(Ordering::SeqCst))
    }

    /// Whether `node` stayed in the same session with the same
    /// UNREGISTER-cycle state since `before` and `out_before` were read.
    pub fn unchanged(&self, node: usize, before: u64, out_before: u64) -> bool {
        self.stayed(node, before) && self.out_word(node) == out_before
    }

    /// Moves `node`'s UNREGISTER cycle to `to` (bumping its sequence).
    fn set_out(&self, node: usize, to: Out) {
        let w = &self.out[node];
        let seq = (w.load(Ordering::SeqCst) >> 32) + 1;
        w.store(seq << 32 | to.bits(), Ordering::SeqCst);
    }

    fn mark_up(&self, node: usize) {
        self.words[node].fetch_add(3, Ordering::SeqCst); // epoch+1, bit 0 -> 1
    }

    fn mark_down(&self, node: usize) {
        self.words[node].fetch_add(1, Ordering::SeqCst); // bit 1 -> 0 carries into epoch
    }

    fn count_restart(&self, node: usize) {
        self.restarts[node].fetch_add(1, Ordering::SeqCst);
    }
}

/// What a node is told by the coordinator.
#[derive(Clone, Copy, Debug)]
enum Control {
    Restart {
        storm: bool,
    },
    Stop,
    /// Take one topic out (UNREGISTER its channels and itself), and
    /// register it again after `unregister_hold`.
    Unregister,
    /// Create a new ephemeral topic (see [`EphemeralBook`]).
    Ephemeral,
}

/// Figures gathered by one node, merged into [`FleetStats`].
#[derive(Clone, Default)]
pub struct FleetStats {
    /// TCP response latency, per [`Phase`].
    pub latency: [Latency; 3],
    /// REGISTER commands answered OK, per [`Phase`].
    pub registrations: [u64; 3],
    /// PINGs answered OK.
    pub pings: u64,
    /// Time from a restart (churn) or failure to being fully registered again.
    pub reregistration: Latency,
    /// TCP sessions opened (1 per node plus one per reconnect).
    pub sessions: u64,
    pub errors: Errors,
}

impl FleetStats {
    fn merge(&mut self, o: &FleetStats) {
        for i in 0..3 {
            self.latency[i].merge(&o.latency[i]);
            self.registrations[i] += o.registrations[i];
        }
        self.pings += o.pings;
        self.reregistration.merge(&o.reregistration);
        self.sessions += o.sessions;
        self.errors.merge(&o.errors);
    }
}

/// State shared by the coordinator and all node tasks.
struct Shared {
    workload: Arc<Workload>,
    topic_names: Vec<String>,
    channel_names: Vec<String>,
    cfg: FleetConfig,
    states: Arc<NodeStates>,
    phase: AtomicU8,
    /// REGISTER OKs so far (for the progress bar).
    registrations_ok: Arc<AtomicU64>,
    /// Nodes currently registered.
    registered: AtomicUsize,
    /// When `registered` last reached the fleet size.
    all_registered_at: Mutex<Option<Instant>>,
    /// Nodes re-registered since the current storm began, and when the
    /// last of them finished.
    storm_done: AtomicUsize,
    storm_done_at: Mutex<Option<Instant>>,
    restarts_sent: AtomicU64,
    /// TCP answers since the last [`Fleet::take_window`].
    window: TcpWindowCounters,
    ephemerals: Arc<EphemeralBook>,
    unregisters_sent: AtomicU64,
}

impl Shared {
    fn phase(&self) -> usize {
        self.phase.load(Ordering::Relaxed) as usize
    }

    /// Records one TCP answer's latency, in the node's figures and in the
    /// current window.
    fn record(&self, st: &mut FleetStats, lat: Duration) {
        st.latency[self.phase()].record(lat);
        self.window.record(lat);
    }

    fn error(&self, st: &mut FleetStats, kind: &str) {
        st.errors.add(kind);
        self.window.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Live counters of TCP answers, read and reset by [`Fleet::take_window`]
/// (the soak's per-sample figures).
#[derive(Default)]
struct TcpWindowCounters {
    answers: AtomicU64,
    over_100ms: AtomicU64,
    over_1s: AtomicU64,
    max_us: AtomicU64,
    errors: AtomicU64,
}

impl TcpWindowCounters {
    fn record(&self, lat: Duration) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        if lat > Duration::from_millis(100) {
            self.over_100ms.fetch_add(1, Ordering::Relaxed);
        }
        if lat > Duration::from_secs(1) {
            self.over_1s.fetch_add(1, Ordering::Relaxed);
        }
        self.max_us
            .fetch_max(lat.as_micros() as u64, Ordering::Relaxed);
    }
}

/// TCP answers over one window (since the previous [`Fleet::take_window`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct TcpWindow {
    pub answers: u64,
    pub over_100ms: u64,
    pub over_1s: u64,
    pub max_us: u64,
    /// TCP errors of any kind (failed sessions).
    pub errors: u64,
}

/// What the checker may rely on about the fleet's ephemeral topics
/// (`PREFIX.eNNNNNNNN#ephemeral`, each registered by one node with one
/// channel `e#ephemeral`, then unregistered after `ephemeral_life`, so
/// that the registry's set of topics keeps changing).
///
/// * `live`: topic id -> (node, the node's session word when its REGISTER
///   was answered OK). While the node's word is still that one, the topic
///   is registered: `/lookup` and `/topics` must list it.
/// * `gone`: the most recent topics whose `UNREGISTER` (the last producer
///   of an ephemeral topic) was answered OK: the server must have dropped
///   the topic, so `/lookup` must list no producer and `/topics` must not
///   list it. Topics whose node disconnected instead are in neither: the
///   original keeps an emptied ephemeral key until an UNREGISTER, and the
///   node registers it again (and later unregisters it) when it reconnects.
#[derive(Default)]
pub struct EphemeralBook {
    next_id: AtomicU64,
    live: Mutex<std::collections::BTreeMap<u64, (usize, u64)>>,
    gone: Mutex<VecDeque<u64>>,
    /// Topics created and topics unregistered (by their last producer).
    pub created: AtomicU64,
    pub removed: AtomicU64,
}

/// How many recently removed ephemeral topics [`EphemeralBook`] remembers.
const GONE_KEPT: usize = 64;

impl EphemeralBook {
    /// Up to `n` topics registered now, with what must hold for them to
    /// stay so: (id, node, session word).
    pub fn live_sample(&self, n: usize) -> Vec<(u64, usize, u64)> {
        let live = lock(&self.live);
        // The most recent ones: older ones are about to be unregistered.
        live.iter()
            .rev()
            .filter(|(_, (_, word))| *word != 0)
            .take(n)
            .map(|(&id, &(node, word))| (id, node, word))
            .collect()
    }

    /// Whether topic `id` is still registered in session `word`.
    pub fn still_live(&self, id: u64, word: u64) -> bool {
        lock(&self.live).get(&id).is_some_and(|&(_, w)| w == word)
    }

    /// Up to `n` topics unregistered (by their last producer) most recently.
    pub fn gone_sample(&self, n: usize) -> Vec<u64> {
        lock(&self.gone).iter().rev().take(n).copied().collect()
    }

    fn created(&self, id: u64, node: usize) {
        lock(&self.live).insert(id, (node, 0));
        self.created.fetch_add(1, Ordering::Relaxed);
    }

    fn registered(&self, id: u64, word: u64) {
        if let Some(e) = lock(&self.live).get_mut(&id) {
            e.1 = word;
        }
    }

    fn leaving(&self, id: u64) {
        if let Some(e) = lock(&self.live).get_mut(&id) {
            e.1 = 0;
        }
    }

    fn removed(&self, id: u64) {
        lock(&self.live).remove(&id);
        let mut gone = lock(&self.gone);
        gone.push_back(id);
        if gone.len() > GONE_KEPT {
            gone.pop_front();
        }
        self.removed.fetch_add(1, Ordering::Relaxed);
    }

    /// Topics registered (or being registered) now.
    pub fn live_count(&self) -> usize {
        lock(&self.live).len()
    }
}

/// The name of ephemeral topic `id` of workload `w`.
pub fn ephemeral_topic(w: &Workload, id: u64) -> String {
    format!("{}.e{id:08}#ephemeral", w.topic_prefix)
}

/// The channel every ephemeral topic has.
pub const EPHEMERAL_CHANNEL: &str = "e#ephemeral";

/// Outcome of a storm.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StormOutcome {
    /// Seconds from dropping every connection until every node was
    /// registered again (None if that did not happen within the timeout).
    pub reregistered_after_s: Option<f64>,
}

/// A running fleet.
pub struct Fleet {
    sh: Arc<Shared>,
    ctl: Vec<mpsc::Sender<Control>>,
    tasks: Vec<JoinHandle<FleetStats>>,
    churn: Option<JoinHandle<()>>,
    /// The soak's UNREGISTER share and ephemeral topics.
    extra: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Fleet {
    /// Starts every node (they connect and register at once).
    pub fn start(workload: Arc<Workload>, cfg: FleetConfig) -> Fleet {
        let n = workload.nodes;
        let states = Arc::new(NodeStates::new(n));
        let sh = Arc::new(Shared {
            topic_names: (0..workload.topic_universe)
                .map(|t| workload.topic_name(t))
                .collect(),
            channel_names: workload.channel_names(),
            workload,
            cfg,
            states,
            phase: AtomicU8::new(Phase::Register as u8),
            registrations_ok: Arc::new(AtomicU64::new(0)),
            registered: AtomicUsize::new(0),
            all_registered_at: Mutex::new(None),
            storm_done: AtomicUsize::new(0),
            storm_done_at: Mutex::new(None),
            restarts_sent: AtomicU64::new(0),
            window: TcpWindowCounters::default(),
            ephemerals: Arc::new(EphemeralBook::default()),
            unregisters_sent: AtomicU64::new(0),
        });
        let started = Instant::now();
        let mut ctl = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for node in 0..n {
            let (tx, rx) = mpsc::channel(4);
            ctl.push(tx);
            tasks.push(tokio::spawn(node_main(node, sh.clone(), rx)));
        }
        Fleet {
            sh,
            ctl,
            tasks,
            churn: None,
            extra: Vec::new(),
            started,
        }
    }

    pub fn states(&self) -> Arc<NodeStates> {
        self.sh.states.clone()
    }

    /// REGISTER commands answered OK so far.
    pub fn registrations_ok(&self) -> u64 {
        self.sh.registrations_ok.load(Ordering::Relaxed)
    }

    /// The live count of REGISTER OKs (for a progress display).
    pub fn live_registrations(&self) -> Arc<AtomicU64> {
        self.sh.registrations_ok.clone()
    }

    /// Nodes currently fully registered.
    pub fn registered(&self) -> usize {
        self.sh.registered.load(Ordering::SeqCst)
    }

    pub fn set_phase(&self, p: Phase) {
        self.sh.phase.store(p as u8, Ordering::SeqCst);
    }

    /// Waits until every node is registered; returns the time from fleet
    /// start until that moment, or None on timeout.
    pub async fn wait_all_registered(&self, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.registered() == self.ctl.len()
                && let Some(at) = *lock(&self.sh.all_registered_at)
            {
                return Some(at.saturating_duration_since(self.started));
            }
            sleep(Duration::from_millis(2)).await;
        }
        None
    }

    /// Starts restarting `per_sec * nodes` nodes per second, round robin,
    /// as a rolling restart would.
    pub fn start_churn(&mut self, per_sec: f64) {
        if per_sec <= 0.0 {
            return;
        }
        let sh = self.sh.clone();
        self.churn = Some(self.round_robin(
            per_sec * self.ctl.len() as f64,
            0,
            Control::Restart { storm: false },
            move || {
                sh.restarts_sent.fetch_add(1, Ordering::Relaxed);
            },
        ));
    }

    /// Sends `what` to `per_sec` nodes a second, round robin from node
    /// `first`; `sent` is called for each one that took it (a node whose
    /// queue is full, busy with an earlier order, is skipped).
    fn round_robin(
        &self,
        per_sec: f64,
        first: usize,
        what: Control,
        sent: impl Fn() + Send + 'static,
    ) -> JoinHandle<()> {
        let ctl = self.ctl.clone();
        tokio::spawn(async move {
            let tick = Duration::from_millis(100);
            let per_tick = per_sec * tick.as_secs_f64();
            let mut owed = 0.0;
            let mut next = first % ctl.len().max(1);
            let mut ticker = tokio::time::interval(tick);
            loop {
                ticker.tick().await;
                owed += per_tick;
                while owed >= 1.0 {
                    owed -= 1.0;
                    if ctl[next].try_send(what).is_ok() {
                        sent();
                    }
                    next = (next + 1) % ctl.len();
                }
            }
        })
    }

    /// The soak's UNREGISTER share: `per_sec * nodes` nodes a second (round
    /// robin, starting half-way round the fleet from the churn) take one of
    /// their topics out (`UNREGISTER topic channel` for each channel, then
    /// `UNREGISTER topic`, one at a time as nsqd does when a topic is
    /// deleted) and register it again after `unregister_hold`. Each node
    /// takes its topics out in turn, one at a time.
    pub fn start_unregisters(&mut self, per_sec: f64) {
        if per_sec <= 0.0 {
            return;
        }
        let sh = self.sh.clone();
        let h = self.round_robin(
            per_sec * self.ctl.len() as f64,
            self.ctl.len() / 2,
            Control::Unregister,
            move || {
                sh.unregisters_sent.fetch_add(1, Ordering::Relaxed);
            },
        );
        self.extra.push(h);
    }

    /// The soak's topics that appear and disappear: `per_sec` new ephemeral
    /// topics a second (see [`EphemeralBook`]), each on the next node round
    /// robin, which unregisters it `ephemeral_life` later.
    pub fn start_ephemerals(&mut self, per_sec: f64) {
        if per_sec <= 0.0 {
            return;
        }
        let h = self.round_robin(per_sec, self.ctl.len() / 4, Control::Ephemeral, || {});
        self.extra.push(h);
    }

    /// The ephemeral topics' book, for the checker.
    pub fn ephemerals(&self) -> Arc<EphemeralBook> {
        self.sh.ephemerals.clone()
    }

    /// UNREGISTER orders taken by nodes.
    pub fn unregisters_sent(&self) -> u64 {
        self.sh.unregisters_sent.load(Ordering::Relaxed)
    }

    /// TCP answers since the previous call (or the start), and resets them.
    pub fn take_window(&self) -> TcpWindow {
        let w = &self.sh.window;
        TcpWindow {
            answers: w.answers.swap(0, Ordering::Relaxed),
            over_100ms: w.over_100ms.swap(0, Ordering::Relaxed),
            over_1s: w.over_1s.swap(0, Ordering::Relaxed),
            max_us: w.max_us.swap(0, Ordering::Relaxed),
            errors: w.errors.swap(0, Ordering::Relaxed),
        }
    }

    /// Stops the churn started by [`Fleet::start_churn`].
    pub fn stop_churn(&mut self) {
        if let Some(c) = self.churn.take() {
            c.abort();
        }
        for h in self.extra.drain(..) {
            h.abort();
        }
    }

    /// Restarts sent by the churn task.
    pub fn churn_restarts(&self) -> u64 {
        self.sh.restarts_sent.load(Ordering::Relaxed)
    }

    /// Drops every connection at once and waits (up to `limit`) for the
    /// whole fleet to be registered again. Responses in between are counted
    /// under [`Phase::Storm`].
    pub async fn storm(&self, limit: Duration) -> StormOutcome {
        self.sh.storm_done.store(0, Ordering::SeqCst);
        *lock(&self.sh.storm_done_at) = None;
        self.set_phase(Phase::Storm);
        let t0 = Instant::now();
        for c in &self.ctl {
            let _ = c.send(Control::Restart { storm: true }).await;
        }
        let n = self.ctl.len();
        let mut out = StormOutcome::default();
        while t0.elapsed() < limit {
            if self.sh.storm_done.load(Ordering::SeqCst) >= n
                && let Some(at) = *lock(&self.sh.storm_done_at)
            {
                out.reregistered_after_s = Some(at.saturating_duration_since(t0).as_secs_f64());
                break;
            }
            sleep(Duration::from_millis(2)).await;
        }
        self.set_phase(Phase::Steady);
        out
    }

    /// Stops churn, closes every connection and returns the merged figures.
    pub async fn stop(mut self) -> FleetStats {
        self.stop_churn();
        for c in &self.ctl {
            let _ = c.send(Control::Stop).await;
        }
        let mut total = FleetStats::default();
        for t in self.tasks.drain(..) {
            match t.await {
                Ok(s) => total.merge(&s),
                Err(_) => total.errors.add("bench_task_failed"),
            }
        }
        total
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a session ended.
enum End {
    Stop,
    Restart { storm: bool },
    Failed,
}

/// One node: sessions until told to stop.
/// What a node keeps from one session to the next.
#[derive(Default)]
struct NodeLife {
    /// Its ephemeral topics (id, when to unregister it), oldest first.
    ephemerals: VecDeque<(u64, tokio::time::Instant)>,
    /// The topic slot its next UNREGISTER order takes out.
    next_out: usize,
}

impl NodeLife {
    /// A new ephemeral topic: booked now, registered by the session (at
    /// once when registered, else once it is).
    fn new_ephemeral(&mut self, node: usize, sh: &Shared) {
        let id = sh.ephemerals.next_id.fetch_add(1, Ordering::Relaxed);
        sh.ephemerals.created(id, node);
        self.ephemerals
            .push_back((id, tokio::time::Instant::now() + sh.cfg.ephemeral_life));
    }
}

async fn node_main(node: usize, sh: Arc<Shared>, mut ctl: mpsc::Receiver<Control>) -> FleetStats {
    let mut st = FleetStats::default();
    let mut storm_pending = false;
    let mut down_since: Option<Instant> = None;
    let mut life = NodeLife::default();
    loop {
        st.sessions += 1;
        let end = session(
            node,
            &sh,
            &mut ctl,
            &mut st,
            &mut life,
            &mut storm_pending,
            &mut down_since,
        )
        .await;
        match end {
            End::Stop => break,
            End::Restart { storm } => {
                storm_pending |= storm;
                down_since.get_or_insert_with(Instant::now);
                sh.states.count_restart(node);
            }
            End::Failed => {
                down_since.get_or_insert_with(Instant::now);
                sh.states.count_restart(node);
                tokio::select! {
                    c = ctl.recv() => match c {
                        Some(Control::Restart { storm }) => storm_pending |= storm,
                        Some(Control::Unregister) => {}
                        Some(Control::Ephemeral) => life.new_ephemeral(node, &sh),
                        Some(Control::Stop) | None => break,
                    },
                    _ = sleep(sh.cfg.reconnect_delay) => {}
                }
            }
        }
    }
    st
}

/// Marks the node unregistered when the session ends, before its connection
/// is dropped (it is declared after the connection, so dropped first).
struct UpGuard<'a> {
    sh: &'a Shared,
    node: usize,
    up: bool,
}

impl UpGuard<'_> {
    fn up(&mut self) {
        self.up = true;
        self.sh.states.mark_up(self.node);
        let now_registered = self.sh.registered.fetch_add(1, Ordering::SeqCst) + 1;
        if now_registered == self.sh.workload.nodes {
            *lock(&self.sh.all_registered_at) = Some(Instant::now());
        }
    }
}

impl Drop for UpGuard<'_> {
    fn drop(&mut self) {
        if self.up {
            self.sh.states.mark_down(self.node);
            // The next session registers every topic again.
            self.sh.states.set_out(self.node, Out::None);
            self.sh.registered.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The socket of one session plus its response bookkeeping.
struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    frames: FrameBuf,
    /// Send time of every command still waiting for its response.
    pending: VecDeque<Instant>,
    timeout: Duration,
}

impl Conn {
    async fn send(&mut self, buf: &[u8], commands: usize) -> Result<(), &'static str> {
        let now = Instant::now();
        match timeout(self.timeout, self.wr.write_all(buf)).await {
            Err(_) => return Err("timeout"),
            Ok(Err(e)) => return Err(io_kind(&e)),
            Ok(Ok(())) => {}
        }
        self.pending.extend(std::iter::repeat_n(now, commands));
        Ok(())
    }

    /// Reads once (waiting up to the timeout); returns the arrival time.
    async fn fill(&mut self) -> Result<Instant, &'static str> {
        match timeout(self.timeout, self.rd.read_buf(self.frames.spare(64 * 1024))).await {
            Err(_) => Err("timeout"),
            Ok(Err(e)) => Err(io_kind(&e)),
            Ok(Ok(0)) => Err("closed_by_server"),
            Ok(Ok(_)) => Ok(Instant::now()),
        }
    }

    /// The next frame and its command's latency, reading as needed.
    async fn response(&mut self, arrival: &mut Instant) -> Result<(Frame, Duration), &'static str> {
        loop {
            match self.frames.next_frame() {
                Err(_) => return Err("bad_frame"),
                Ok(Some(f)) => {
                    let Some(sent) = self.pending.pop_front() else {
                        return Err("unexpected_frame");
                    };
                    return Ok((f, arrival.saturating_duration_since(sent)));
                }
                Ok(None) => *arrival = self.fill().await?,
            }
        }
    }
}

/// One connection's life: connect, IDENTIFY, REGISTER everything, PING.
async fn session(
    node: usize,
    sh: &Shared,
    ctl: &mut mpsc::Receiver<Control>,
    st: &mut FleetStats,
    life: &mut NodeLife,
    storm_pending: &mut bool,
    down_since: &mut Option<Instant>,
) -> End {
    let cfg = &sh.cfg;
    let stream = match timeout(cfg.tcp_timeout, TcpStream::connect(cfg.address_of(node))).await {
        Err(_) => {
            sh.error(st, "connect_timeout");
            return End::Failed;
        }
        Ok(Err(e)) => {
            sh.error(
                st,
                match io_kind(&e) {
                    "connect_refused" => "connect_refused",
                    other => other,
                },
            );
            return End::Failed;
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut conn = Conn {
        rd,
        wr,
        frames: FrameBuf::default(),
        pending: VecDeque::with_capacity(cfg.window),
        timeout: cfg.tcp_timeout,
    };
    let mut guard = UpGuard {
        sh,
        node,
        up: false,
    };
    let fail = |st: &mut FleetStats, kind: &str| {
        sh.error(st, kind);
        End::Failed
    };

    // Magic + IDENTIFY, answered by a JSON object.
    let mut out = Vec::with_capacity(64 * 1024);
    out.extend_from_slice(wire::MAGIC);
    wire::put_identify(&mut out, &Workload::identify_body(node));
    if let Err(k) = conn.send(&out, 1).await {
        return fail(st, k);
    }
    let mut arrival = Instant::now();
    match conn.response(&mut arrival).await {
        Err(k) => return fail(st, k),
        Ok((Frame::Data(d), lat)) if d.first() == Some(&b'{') => sh.record(st, lat),
        Ok((Frame::Error(_), _)) => return fail(st, "error_response"),
        Ok(_) => return fail(st, "bad_identify_answer"),
    }

    // REGISTER topic, then REGISTER topic channel for each channel.
    let w = &sh.workload;
    let per_topic = 1 + w.channels;
    let total = w.registrations_per_node();
    let mut next = 0;
    while next < total || !conn.pending.is_empty() {
        match ctl.try_recv() {
            Ok(Control::Restart { storm }) => return End::Restart { storm },
            Ok(Control::Stop) | Err(mpsc::error::TryRecvError::Disconnected) => return End::Stop,
            // Not registered yet: a topic is taken out later.
            Ok(Control::Unregister) => {}
            Ok(Control::Ephemeral) => life.new_ephemeral(node, sh),
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        if next < total && conn.pending.len() < cfg.window {
            let n = (cfg.window - conn.pending.len()).min(total - next);
            out.clear();
            for j in next..next + n {
                let topic = &sh.topic_names[w.topic_of(node, j / per_topic)];
                let channel = match j % per_topic {
                    0 => None,
                    c => Some(sh.channel_names[c - 1].as_str()),
                };
                wire::put_register(&mut out, topic, channel);
            }
            if let Err(k) = conn.send(&out, n).await {
                return fail(st, k);
            }
            next += n;
        }
        // Take every response already here (at least one).
        let arrival = match conn.fill().await {
            Ok(a) => a,
            Err(k) => return fail(st, k),
        };
        let phase = sh.phase();
        let mut oks = 0;
        loop {
            match conn.frames.next_frame() {
                Err(_) => return fail(st, "bad_frame"),
                Ok(None) => break,
                Ok(Some(f)) => {
                    let Some(sent) = conn.pending.pop_front() else {
                        return fail(st, "unexpected_frame");
                    };
                    sh.record(st, arrival.saturating_duration_since(sent));
                    match f {
                        Frame::Ok => oks += 1,
                        Frame::Error(_) => return fail(st, "error_response"),
                        Frame::Data(_) => return fail(st, "bad_register_answer"),
                    }
                }
            }
        }
        st.registrations[phase] += oks;
        sh.registrations_ok.fetch_add(oks, Ordering::Relaxed);
    }

    // Fully registered.
    guard.up();
    if let Some(t) = down_since.take() {
        st.reregistration.record(t.elapsed());
    }
    if *storm_pending {
        *storm_pending = false;
        if sh.storm_done.fetch_add(1, Ordering::SeqCst) + 1 == w.nodes {
            *lock(&sh.storm_done_at) = Some(Instant::now());
        }
    }

    // Heartbeats, spread over the interval so the fleet does not ping at once.
    let offset = cfg.ping_interval.mul_f64(node as f64 / w.nodes as f64);
    let mut next_ping = tokio::time::Instant::now() + offset;
    // The ephemeral topics of earlier sessions (and those ordered while
    // registering) are registered again, as nsqd registers every topic it
    // has when it reconnects.
    let mut fresh: usize = life.ephemerals.len();
    // A topic taken out in this session: its slot and when it returns.
    // Orders to take one out while one is out are dropped.
    let mut taken: Option<(usize, tokio::time::Instant)> = None;
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    loop {
        if fresh > 0 {
            let i = life.ephemerals.len() - fresh;
            let id = life.ephemerals[i].0;
            fresh -= 1;
            let topic = ephemeral_topic(w, id);
            if let Err(k) = command(&mut conn, sh, st, &mut out, |b| {
                wire::put_register(b, &topic, None)
            })
            .await
            {
                return fail(st, k);
            }
            if let Err(k) = command(&mut conn, sh, st, &mut out, |b| {
                wire::put_register(b, &topic, Some(EPHEMERAL_CHANNEL))
            })
            .await
            {
                return fail(st, k);
            }
            sh.ephemerals.registered(id, sh.states.snapshot(node));
            continue;
        }
        let expiry = life.ephemerals.front().map(|e| e.1);
        let back_at = taken.map(|o| o.1);
        tokio::select! {
            c = ctl.recv() => {
                match c {
                    Some(Control::Restart { storm }) => return End::Restart { storm },
                    Some(Control::Stop) | None => return End::Stop,
                    Some(Control::Unregister) => {
                        if taken.is_none() {
                            let k = life.next_out % w.topics_per_node;
                            life.next_out += 1;
                            sh.states.set_out(node, Out::InFlux(k));
                            let topic = &sh.topic_names[w.topic_of(node, k)];
                            for c in &sh.channel_names {
                                if let Err(e) = command(&mut conn, sh, st, &mut out, |b| wire::put_unregister(b, topic, Some(c))).await {
                                    return fail(st, e);
                                }
                            }
                            if let Err(e) = command(&mut conn, sh, st, &mut out, |b| wire::put_unregister(b, topic, None)).await {
                                return fail(st, e);
                            }
                            sh.states.set_out(node, Out::Gone(k));
                            taken = Some((k, tokio::time::Instant::now() + cfg.unregister_hold));
                        }
                    }
                    Some(Control::Ephemeral) => {
                        life.new_ephemeral(node, sh);
                        fresh = 1;
                    }
                }
            }
            _ = sleep_until(back_at.unwrap_or_else(far)), if back_at.is_some() => {
                let Some((k, _)) = taken.take() else { continue };
                sh.states.set_out(node, Out::InFlux(k));
                let topic = &sh.topic_names[w.topic_of(node, k)];
                if let Err(e) = command(&mut conn, sh, st, &mut out, |b| wire::put_register(b, topic, None)).await {
                    return fail(st, e);
                }
                for c in &sh.channel_names {
                    if let Err(e) = command(&mut conn, sh, st, &mut out, |b| wire::put_register(b, topic, Some(c))).await {
                        return fail(st, e);
                    }
                }
                st.registrations[sh.phase()] += 1 + sh.channel_names.len() as u64;
                sh.states.set_out(node, Out::None);
            }
            _ = sleep_until(expiry.unwrap_or_else(far)), if expiry.is_some() => {
                let Some(&(id, _)) = life.ephemerals.front() else { continue };
                sh.ephemerals.leaving(id);
                let topic = ephemeral_topic(w, id);
                if let Err(e) = command(&mut conn, sh, st, &mut out, |b| wire::put_unregister(b, &topic, Some(EPHEMERAL_CHANNEL))).await {
                    return fail(st, e);
                }
                if let Err(e) = command(&mut conn, sh, st, &mut out, |b| wire::put_unregister(b, &topic, None)).await {
                    return fail(st, e);
                }
                life.ephemerals.pop_front();
                sh.ephemerals.removed(id);
            }
            _ = sleep_until(next_ping) => {
                next_ping += cfg.ping_interval;
                out.clear();
                wire::put_ping(&mut out);
                if let Err(k) = conn.send(&out, 1).await {
                    return fail(st, k);
                }
                let mut arrival = Instant::now();
                match conn.response(&mut arrival).await {
                    Err(k) => return fail(st, k),
                    Ok((Frame::Ok, lat)) => {
                        sh.record(st, lat);
                        st.pings += 1;
                    }
                    Ok((Frame::Error(_), _)) => return fail(st, "error_response"),
                    Ok(_) => return fail(st, "bad_ping_answer"),
                }
            }
            r = conn.rd.read_buf(conn.frames.spare(4096)) => {
                return fail(st, match r {
                    Ok(0) => "closed_by_server",
                    Ok(_) => "unexpected_frame",
                    Err(e) => io_kind(&e),
                });
            }
        }
    }
}

/// Sends one command (made by `put` in `buf`) and waits for its answer,
/// which must be `OK`, as nsqd does outside the initial registration.
async fn command(
    conn: &mut Conn,
    sh: &Shared,
    st: &mut FleetStats,
    buf: &mut Vec<u8>,
    put: impl FnOnce(&mut Vec<u8>),
) -> Result<(), &'static str> {
    buf.clear();
    put(buf);
    conn.send(buf, 1).await?;
    let mut arrival = Instant::now();
    match conn.response(&mut arrival).await? {
        (Frame::Ok, lat) => {
            sh.record(st, lat);
            Ok(())
        }
        (Frame::Error(_), _) => Err("error_response"),
        _ => Err("bad_register_answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_spread_over_the_addresses() {
        let cfg = FleetConfig {
            tcp_addresses: vec!["a:1".into(), "b:2".into(), "c:3".into()],
            window: 1,
            ping_interval: Duration::from_secs(15),
            tcp_timeout: Duration::from_secs(1),
            reconnect_delay: Duration::ZERO,
            unregister_hold: Duration::from_secs(5),
            ephemeral_life: Duration::from_secs(30),
        };
        let got: Vec<&str> = (0..7).map(|n| cfg.address_of(n)).collect();
        assert_eq!(got, ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3", "a:1"]);
    }

    #[test]
    fn node_state_words() {
        let s = NodeStates::new(2);
        let w0 = s.snapshot(0);
        assert!(!NodeStates::is_registered(w0));
        s.mark_up(0);
        let w1 = s.snapshot(0);
        assert!(NodeStates::is_registered(w1));
        s.mark_down(0);
        let w2 = s.snapshot(0);
        assert!(!NodeStates::is_registered(w2));
        s.mark_up(0);
        let w3 = s.snapshot(0);
        assert!(NodeStates::is_registered(w3));
        // Every transition gives a new word: a down-up between two readings shows.
        let all = [w0, w1, w2, w3];
        for i in 0..4 {
            for j in i + 1..4 {
                assert_ne!(all[i], all[j]);
            }
        }
        assert!(!s.has_restarted(0));
        s.count_restart(0);
        assert!(s.has_restarted(0));
        assert!(NodeStates::is_registered(
            NodeStates::all_registered(3).snapshot(2)
        ));
        assert_eq!(s.snapshot(99), 0);
    }
}

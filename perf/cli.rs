//! Command line: subcommands and the option groups they share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::consumers::{ConsumerConfig, GzipDecode, Mix};
use crate::fleet::FleetConfig;
use crate::httpc::Target;
use crate::presets::Preset;
use crate::scheme::Workload;
use crate::tls::{self, Endpoint, HttpClient, Secret};

#[derive(Parser, Debug)]
#[command(
    name = "nsqlookupd-bench",
    version,
    about = "Fleet load generator for any nsqlookupd (speaks only the public TCP protocol and HTTP API)",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Register a fleet, then load /lookup while the fleet stays connected
    /// (pings, churn, storm), checking answers; with --ceiling, the same
    /// consumer load first runs against the built-in ceiling server.
    Run(RunArgs),
    /// Only the fleet: register, then hold the connections (ping, churn,
    /// storm) for --duration.
    Fleet(FleetOnlyArgs),
    /// Only consumers, against a lookupd whose fleet is registered by
    /// someone else (e.g. a `fleet` run with the same workload options).
    Consumers(ConsumersOnlyArgs),
    /// Consumers against the built-in fixed-answer HTTP server: the
    /// machine's ceiling for an HTTP lookup. `--serve ADDR` only serves.
    Ceiling(CeilingArgs),
    /// Cluster mode: how long a registration (and an unregistration) made
    /// on one replica (--tcp-address) takes to show on another
    /// (--http-address), measured with probe nodes of its own.
    Propagation(PropagationArgs),
    /// How long a replica (--http-address), e.g. one just (re)started,
    /// takes from now until every topic of the workload answers /lookup
    /// with its full and correct producer set (the fleet being registered
    /// elsewhere with the same workload options).
    Converge(ConvergeArgs),
    /// Endurance: a fleet of nsqd connections (one command at a time,
    /// pings, churn, UNREGISTERs, topics that appear and disappear) and
    /// open-loop consumers for --duration (default 10m), answers checked
    /// throughout, the server's RSS, descriptors, CPU and /metrics gauges
    /// sampled every --sample-every; fails on any error, any TCP answer of
    /// 1 s or more, or memory or descriptor drift over the bounds.
    Soak(SoakArgs),
    /// (internal) The ceiling server process.
    #[command(hide = true)]
    ServeCeiling(ServeCeilingArgs),
}

/// The hidden `serve-ceiling` child's options (see
/// [`crate::ceiling::serve_args`]).
#[derive(Args, Debug)]
pub struct ServeCeilingArgs {
    #[arg(long)]
    pub listen: String,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[arg(long, value_enum, default_value = "single")]
    pub kind: CeilingKind,
    #[arg(long, default_value_t = 1)]
    pub bodies: usize,
    #[arg(long)]
    pub body_size: Option<usize>,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub gzip_level: u32,
    #[arg(long, default_value_t = 1024)]
    pub gzip_min_size: usize,
}

/// Which ceiling servers to measure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CeilingKind {
    /// One body for every request.
    Single,
    /// One body per topic (or --ceiling-bodies), each request its topic's.
    Distinct,
    /// Single, then distinct.
    #[default]
    Both,
}

impl CeilingKind {
    /// The kinds to run, in order.
    pub fn kinds(self) -> &'static [CeilingKind] {
        match self {
            CeilingKind::Single => &[CeilingKind::Single],
            CeilingKind::Distinct => &[CeilingKind::Distinct],
            CeilingKind::Both => &[CeilingKind::Single, CeilingKind::Distinct],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CeilingKind::Single => "single",
            CeilingKind::Distinct => "distinct",
            CeilingKind::Both => "both",
        }
    }
}

/// Parses `15s`, `250ms`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Checks a list of `host:port` addresses (from `--tcp-address a,b` or a
/// repeated option): none empty, trimmed, at least one.
pub fn address_list(list: &[String]) -> Result<Vec<String>, String> {
    let out: Vec<String> = list.iter().map(|a| a.trim().to_string()).collect();
    if out.is_empty() {
        return Err("an address list must name at least one address".into());
    }
    if let Some(bad) = out
        .iter()
        .find(|a| a.is_empty() || !a.contains(':') || a.contains(char::is_whitespace))
    {
        return Err(format!(
            "bad address {bad:?} in {:?} (use host:port)",
            list.join(",")
        ));
    }
    Ok(out)
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Secret::new(s)
}

/// How the HTTP client asks `https://` addresses, and the secret it sends.
#[derive(Args, Debug, Clone, Default, serde::Serialize)]
pub struct HttpClientArgs {
    /// CA certificates (PEM) that an https:// server's certificate must
    /// chain to [default: the system's CAs].
    #[arg(long, value_name = "FILE")]
    pub http_ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for https:// servers that require
    /// one (mutual TLS); needs --http-client-key.
    #[arg(long, value_name = "FILE", requires = "http_client_key")]
    pub http_client_cert: Option<PathBuf>,
    /// Private key (PEM) of --http-client-cert.
    #[arg(long, value_name = "FILE", requires = "http_client_cert")]
    pub http_client_key: Option<PathBuf>,
    /// Send `Authorization: Bearer SECRET` with every HTTP request (other
    /// users can read it in `ps`: prefer --auth-secret-file).
    #[arg(
        long,
        value_name = "SECRET",
        value_parser = parse_secret,
        conflicts_with = "auth_secret_file"
    )]
    #[serde(skip)]
    pub auth_secret: Option<Secret>,
    /// The same, with the secret read from FILE (without the whitespace
    /// around it).
    #[arg(long, value_name = "FILE")]
    pub auth_secret_file: Option<PathBuf>,
    /// Send `Accept-Encoding: gzip` with every HTTP request, as Go's HTTP
    /// client, pynsq and nsqjs do, and inflate the answers that come
    /// `Content-Encoding: gzip` before checking them (plain answers are
    /// checked as always). Off by default: the requests are then the same
    /// bytes as before this option existed (no Accept-Encoding header).
    #[arg(long)]
    pub accept_gzip: bool,
}

impl HttpClientArgs {
    /// The client for `endpoints`: a TLS configuration when one of them
    /// is https:// or a TLS file is given (the files are read now, so a
    /// bad one stops the run before it starts), and the secret.
    pub fn client(&self, endpoints: &[Endpoint]) -> Result<HttpClient, String> {
        let wants_tls = endpoints.iter().any(|e| e.tls)
            || self.http_ca_file.is_some()
            || self.http_client_cert.is_some();
        let tls = if wants_tls {
            let pair = self
                .http_client_cert
                .as_deref()
                .zip(self.http_client_key.as_deref());
            Some(tls::client_config(self.http_ca_file.as_deref(), pair)?)
        } else {
            None
        };
        let secret = match (&self.auth_secret, &self.auth_secret_file) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(path)) => Some(Secret::from_file(path)?),
            (None, None) => None,
        };
        Ok(HttpClient {
            tls,
            secret,
            accept_gzip: self.accept_gzip,
        })
    }

    /// The client and the target for one address.
    pub fn single(&self, address: &str) -> Result<(HttpClient, Arc<Target>), String> {
        let e = tls::parse_endpoint(address)?;
        let client = self.client(std::slice::from_ref(&e))?;
        let target = client.target(&e)?;
        Ok((client, target))
    }
}

/// The fleet's shape: a preset, each field overridable.
#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Workload size.
    #[arg(long, value_enum, default_value = "small")]
    pub preset: Preset,
    /// Simulated nsqd nodes (N).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Topics registered per node (T).
    #[arg(long)]
    pub topics_per_node: Option<usize>,
    /// Topics the nodes' topics are drawn from (U).
    #[arg(long)]
    pub topic_universe: Option<usize>,
    /// Channels per topic (C).
    #[arg(long)]
    pub channels: Option<usize>,
    /// Topic names are PREFIX.tNNNNN.
    #[arg(long, default_value = "bench")]
    pub topic_prefix: String,
}

impl WorkloadArgs {
    pub fn workload(&self) -> Result<Workload, String> {
        let s = self.preset.shape();
        let w = Workload {
            nodes: self.nodes.unwrap_or(s.nodes),
            topics_per_node: self.topics_per_node.unwrap_or(s.topics_per_node),
            topic_universe: self.topic_universe.unwrap_or(s.topic_universe),
            channels: self.channels.unwrap_or(s.channels),
            topic_prefix: self.topic_prefix.clone(),
        };
        w.validate()?;
        Ok(w)
    }

    /// The preset, if no field was overridden.
    pub fn pure_preset(&self) -> Option<Preset> {
        let untouched = self.nodes.is_none()
            && self.topics_per_node.is_none()
            && self.topic_universe.is_none()
            && self.channels.is_none();
        untouched.then_some(self.preset)
    }
}

#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct FleetArgs {
    /// lookupd TCP address; a comma-separated list spreads the fleet over
    /// several (cluster replicas): node i connects to address i % n.
    #[arg(long, default_value = "127.0.0.1:4160", value_delimiter = ',')]
    pub tcp_address: Vec<String>,
    /// REGISTER commands in flight per node connection (1 = exactly like nsqd).
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// PING period once registered.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// A TCP response slower than this is a timeout error (the node reconnects).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub tcp_timeout: Duration,
    /// Fraction of the nodes that disconnect and re-register per second
    /// (0.02 = 2% of the fleet every second, round robin).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Drop every connection at once this far into the load phase, and
    /// measure how long the fleet takes to re-register.
    #[arg(long, value_parser = parse_duration)]
    pub storm_at: Option<Duration>,
    /// Give up if the fleet is not registered within this time.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub register_timeout: Duration,
}

impl FleetArgs {
    pub fn config(&self) -> Result<FleetConfig, String> {
        Ok(FleetConfig {
            tcp_addresses: address_list(&self.tcp_address)?,
            window: self.window.max(1),
            ping_interval: self.ping_interval.max(Duration::from_millis(10)),
            tcp_timeout: self.tcp_timeout,
            reconnect_delay: Duration::from_millis(250),
            unregister_hold: Duration::from_secs(5),
            ephemeral_life: Duration::from_secs(30),
        })
    }
}

#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct ConsumerArgs {
    /// lookupd HTTP address (host:port, http://host:port or
    /// https://host:port); a comma-separated list spreads the consumers
    /// over several (cluster replicas): worker i asks address i % n.
    #[arg(long, default_value = "127.0.0.1:4161", value_delimiter = ',')]
    pub http_address: Vec<String>,
    #[command(flatten)]
    pub http_client: HttpClientArgs,
    /// Consumer workers, one keep-alive connection each.
    #[arg(long, default_value_t = 32)]
    pub workers: usize,
    /// Total requests per second (open loop, latency from the scheduled
    /// time); 0 = closed loop, as fast as answers come.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Length of the consumer load.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Run the same load this long first, on the same connections, and
    /// leave it out of every figure (first-request costs: cold caches on
    /// both sides). Applies to the ceiling run too.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Percentage of requests that are GET /nodes.
    #[arg(long, default_value_t = 0.0)]
    pub nodes_pct: f64,
    /// Percentage of requests that are GET /topics.
    #[arg(long, default_value_t = 0.0)]
    pub topics_pct: f64,
    /// Percentage of requests that are GET /channels?topic=.
    #[arg(long, default_value_t = 0.0)]
    pub channels_pct: f64,
    /// Fraction of answers checked against what the fleet registered
    /// (default 0.01 for `run`, 0 for `consumers`).
    #[arg(long)]
    pub check_sample: Option<f64>,
    /// An HTTP exchange slower than this is a timeout error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub http_timeout: Duration,
    /// With --accept-gzip, which gzip answers of the load are inflated:
    /// `all` (as a real client does), or only those sampled for checking
    /// (`checked`: the others are counted with the size their gzip trailer
    /// states, so that inflating does not make the bench the bottleneck).
    #[arg(long, value_enum, default_value = "all")]
    pub gzip_decode: GzipDecode,
    /// Seed of the topic choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Open loop: the pacer yields (keeping the bench's core busy) when the
    /// next request is due sooner than this, and sleeps on tokio's 1 ms
    /// timer otherwise. 0 = always sleep: tickets leave up to ~1 ms late,
    /// but the core is left to whatever else runs on it (the fault
    /// scenarios' clients, perf/faults.sh).
    #[arg(long, default_value = "2ms", value_parser = parse_duration)]
    pub pacer_spin: Duration,
}

impl ConsumerArgs {
    pub fn config(&self, default_sample: f64) -> Result<ConsumerConfig, String> {
        let mix = Mix {
            nodes_pct: self.nodes_pct,
            topics_pct: self.topics_pct,
            channels_pct: self.channels_pct,
        };
        let total = mix.nodes_pct + mix.topics_pct + mix.channels_pct;
        if [mix.nodes_pct, mix.topics_pct, mix.channels_pct]
            .iter()
            .any(|p| *p < 0.0)
            || total > 100.0
        {
            return Err(
                "the request mix percentages must be >= 0 and add up to at most 100".into(),
            );
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err("--rate must be >= 0".into());
        }
        let endpoints = tls::endpoint_list(&self.http_address)?;
        let client = self.http_client.client(&endpoints)?;
        Ok(ConsumerConfig {
            http: client.targets(&endpoints)?,
            client,
            workers: self.workers.max(1),
            rate: self.rate,
            duration: self.duration,
            warmup: self.warmup,
            mix,
            check_sample: self.check_sample.unwrap_or(default_sample).clamp(0.0, 1.0),
            http_timeout: self.http_timeout,
            gzip_decode: self.gzip_decode,
            seed: self.seed,
            pacer_spin: self.pacer_spin,
        })
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Write every figure to this JSON file.
    #[arg(long)]
    pub json: Option<String>,
    /// Draw the latency distributions to this SVG file.
    #[arg(long)]
    pub plot: Option<String>,
    /// PID of the server under test, to report its CPU time and RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Free text recorded in the report (e.g. the server's commit).
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(Args, Debug, Clone, Default, serde::Serialize)]
pub struct CeilingOpts {
    /// Which ceiling servers to measure, in turn: `single` (one body for
    /// every request: always in cache), `distinct` (--ceiling-bodies
    /// bodies, each request its topic's: the memory traffic of as many
    /// different answers as the server keeps), or `both`.
    #[arg(long, value_enum, default_value = "both")]
    pub ceiling_kind: CeilingKind,
    /// Bodies of the distinct-body ceiling [default: the workload's
    /// registered topics]; a request for topic number t gets body t mod N.
    #[arg(long, value_name = "N")]
    pub ceiling_bodies: Option<usize>,
    /// Body size of the ceiling server's answers (default: each body is a
    /// real /lookup answer of the workload, the size a conforming server's
    /// has).
    #[arg(long)]
    pub ceiling_body_size: Option<usize>,
    /// gzip level of the ceiling's compressed renderings (served to
    /// requests that accept gzip); the server's default is 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub ceiling_gzip_level: u32,
    /// Bodies under this many bytes are served plain even to a request
    /// that accepts gzip (the server's threshold is 1 KiB).
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    pub ceiling_gzip_min_size: usize,
    /// Run the ceiling server under `taskset -c CPUS` (e.g. the server's core).
    #[arg(long)]
    pub ceiling_cpus: Option<String>,
}

impl CeilingOpts {
    /// What the ceiling server of kind `kind` (single or distinct) renders.
    pub fn spec(&self, kind: CeilingKind, w: &Workload) -> crate::ceiling::CeilingSpec {
        crate::ceiling::CeilingSpec {
            kind: kind.name(),
            bodies: match kind {
                CeilingKind::Single => 1,
                _ => self
                    .ceiling_bodies
                    .unwrap_or_else(|| w.covered_topics())
                    .max(1),
            },
            body_size: self.ceiling_body_size,
            gzip_level: self.ceiling_gzip_level,
            gzip_min_size: self.ceiling_gzip_min_size,
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub consumers: ConsumerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// First run the same consumer load against the built-in ceiling
    /// server, and report both.
    #[arg(long)]
    pub ceiling: bool,
    #[command(flatten)]
    pub ceiling_opts: CeilingOpts,
    /// Topics whose /lookup answer is checked once the load stops.
    #[arg(long, default_value_t = 1000)]
    pub final_check_topics: usize,
}

#[derive(Args, Debug)]
pub struct FleetOnlyArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// How long to hold the registered fleet (pings, churn, storm).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// If given, check /lookup answers on this HTTP address at the end
    /// (host:port or https://host:port).
    #[arg(long)]
    pub verify_http: Option<String>,
    #[command(flatten)]
    pub http_client: HttpClientArgs,
    /// Topics whose /lookup answer is checked at the end.
    #[arg(long, default_value_t = 1000)]
    pub final_check_topics: usize,
}

#[derive(Args, Debug)]
pub struct ConsumersOnlyArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub consumers: ConsumerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct CeilingArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub consumers: ConsumerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub ceiling_opts: CeilingOpts,
    /// Only serve on this address (for an external load tool) until
    /// killed: the single body, or with --ceiling-kind distinct the
    /// distinct bodies.
    #[arg(long)]
    pub serve: Option<String>,
}

/// A fault injected at a given time of a soak (`KIND@TIME`, e.g.
/// `storm@5m`); the hook where the fault scenarios plug in.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// From the start of the soak's load.
    pub at: Duration,
}

/// The faults a soak knows how to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Every fleet connection dropped at once; the fleet re-registers.
    Storm,
}

pub fn parse_fault(s: &str) -> Result<FaultSpec, String> {
    let (kind, at) = s
        .split_once('@')
        .ok_or_else(|| format!("bad fault {s:?} (use KIND@TIME, e.g. storm@5m)"))?;
    let kind = match kind.trim() {
        "storm" => FaultKind::Storm,
        other => return Err(format!("unknown fault {other:?} (known: storm)")),
    };
    Ok(FaultSpec {
        kind,
        at: parse_duration(at)?,
    })
}

/// The soak's own options (the fleet, consumer, workload and output
/// options are the other modes', with the soak's defaults).
#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct SoakOpts {
    /// Sample the server (RSS, open descriptors, CPU, /metrics gauges) and
    /// the load figures this often; also the length of each stretch of load.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// Fraction of the nodes that take one of their topics out every second
    /// (UNREGISTER of its channels and itself), registering it again after
    /// --unregister-hold.
    #[arg(long, default_value_t = 0.002)]
    pub unregister_rate: f64,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub unregister_hold: Duration,
    /// New ephemeral topics per second (`PREFIX.eNNNNNNNN#ephemeral`, one
    /// node and one channel each), unregistered after --ephemeral-life: the
    /// registry's set of topics keeps changing.
    #[arg(long, default_value_t = 10.0)]
    pub ephemeral_rate: f64,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ephemeral_life: Duration,
    /// With --rate 0 (the default): how long the closed-loop maximum is
    /// measured first, with the same consumers and mix, fleet registered.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub rate_measure: Duration,
    /// With --rate 0: the open-loop rate is this share of that maximum.
    #[arg(long, default_value_t = 0.5)]
    pub rate_share: f64,
    /// Memory drift bound: (mean RSS of the last window - that of the base
    /// window) / the base, in percent.
    #[arg(long, default_value_t = 5.0)]
    pub max_rss_drift_pct: f64,
    /// ...or by this many MiB, whichever is larger: the allocator's own
    /// settling (glibc arenas, trim thresholds) moves a small process by
    /// about a MiB with no leak (at 100 nodes, RSS 12.8 -> 13.9 MiB in the
    /// first 4 minutes, flat for the 6 after with every registry gauge
    /// constant: perf/README.md, soak against the original).
    #[arg(long, default_value_t = 2.0)]
    pub max_rss_drift_mib: f64,
    /// Descriptor drift bound: the open descriptors' mean may grow by at
    /// most this many from the base window to the last one...
    #[arg(long, default_value_t = 50.0)]
    pub max_fd_drift: f64,
    /// ...or by this percent of the base mean, whichever is larger.
    #[arg(long, default_value_t = 5.0)]
    pub max_fd_drift_pct: f64,
    /// The base window of the drift starts this far into the load (the
    /// second minute by default: the first holds the start-up's growth).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub drift_base_start: Duration,
    /// Length of the base window and of the last window (which ends the run).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub drift_window: Duration,
    /// Faults to inject, KIND@TIME from the start of the load, repeatable
    /// (known: storm: every fleet connection dropped at once).
    #[arg(long = "fault", value_parser = parse_fault)]
    pub faults: Vec<FaultSpec>,
}

#[derive(Args, Debug)]
#[command(
    mut_arg("preset", |a| a.default_value("soak")),
    mut_arg("window", |a| a.default_value("1")),
    mut_arg("churn", |a| a.default_value("0.02")),
    mut_arg("duration", |a| a.default_value("10m").help("Length of the soak's load (registration excluded)")),
    mut_arg("rate", |a| a.help("Total requests per second, open loop; 0 = half (--rate-share) of the closed-loop maximum measured first for --rate-measure")),
    mut_arg("nodes_pct", |a| a.default_value("0.01")),
    mut_arg("topics_pct", |a| a.default_value("0.05")),
    mut_arg("channels_pct", |a| a.default_value("1")),
)]
pub struct SoakArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub consumers: ConsumerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub soak: SoakOpts,
    /// Topics whose /lookup answer is checked once the load stops.
    #[arg(long, default_value_t = 1000)]
    pub final_check_topics: usize,
}

#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct PropagationArgs {
    /// TCP address of the replica the probe nodes register with (A).
    #[arg(long, default_value = "127.0.0.1:4160")]
    pub tcp_address: String,
    /// HTTP address of the replica polled for the probe topics (B):
    /// host:port or https://host:port.
    #[arg(long, default_value = "127.0.0.1:4161")]
    pub http_address: String,
    #[command(flatten)]
    pub http_client: HttpClientArgs,
    /// Probes: each REGISTERs a fresh topic on A and waits until B lists
    /// it, then UNREGISTERs it and waits until B no longer does.
    #[arg(long, default_value_t = 200)]
    pub probes: usize,
    /// Probe nodes (TCP connections, distinct identities) taking turns.
    #[arg(long, default_value_t = 4)]
    pub probe_nodes: usize,
    /// Pause between two /lookup polls of B (0 = back to back).
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// A probe not seen on B this long after its OK is missed (an error).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub probe_timeout: Duration,
    /// Pause between two probes.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub probe_gap: Duration,
    /// Only measure registrations (probe topics stay until the end).
    #[arg(long)]
    pub no_unregister: bool,
    /// Probe topics are PREFIX-probe-RUN-NNNNN (RUN: the start time).
    #[arg(long, default_value = "bench")]
    pub topic_prefix: String,
    /// A TCP answer slower than this fails the probe node.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub tcp_timeout: Duration,
    /// An HTTP exchange slower than this is a timeout error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub http_timeout: Duration,
    #[command(flatten)]
    #[serde(skip)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct ConvergeArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// HTTP address of the replica to watch converge: host:port or
    /// https://host:port.
    #[arg(long, default_value = "127.0.0.1:4161")]
    pub http_address: String,
    #[command(flatten)]
    pub http_client: HttpClientArgs,
    /// First wait for GET /ready to answer 200 (cluster mode), and report
    /// that time too.
    #[arg(long)]
    pub wait_ready: bool,
    /// Give up when the replica has not converged by then.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub converge_timeout: Duration,
    /// Pause between two passes over the topics still wrong (and between
    /// two /ready polls).
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Topics checked, spread over the registered ones (0 = every one).
    #[arg(long, default_value_t = 0)]
    pub check_topics: usize,
    /// Connections checking topics in parallel.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// An HTTP exchange slower than this is a timeout error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub http_timeout: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn cli_is_consistent_and_presets_are_overridable() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["b", "run", "--preset", "medium", "--nodes", "7"]).unwrap();
        let Cmd::Run(r) = cli.cmd else {
            panic!("not run")
        };
        let w = r.workload.workload().unwrap();
        assert_eq!(
            (w.nodes, w.topics_per_node, w.topic_universe, w.channels),
            (7, 1000, 10_000, 4)
        );
        assert_eq!(r.workload.pure_preset(), None);
        assert_eq!(r.consumers.config(0.01).unwrap().check_sample, 0.01);
        assert_eq!(r.consumers.config(0.01).unwrap().warmup, Duration::ZERO);
        let cli = Cli::try_parse_from(["b", "consumers", "--warmup", "2s"]).unwrap();
        let Cmd::Consumers(c) = cli.cmd else {
            panic!("not consumers")
        };
        assert_eq!(
            c.consumers.config(0.0).unwrap().warmup,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn address_lists() {
        let cli = Cli::try_parse_from([
            "b",
            "run",
            "--tcp-address",
            "127.0.0.1:1,127.0.0.1:2",
            "--http-address",
            "127.0.0.1:3",
        ])
        .unwrap();
        let Cmd::Run(r) = cli.cmd else {
            panic!("not run")
        };
        assert_eq!(
            r.fleet.config().unwrap().tcp_addresses,
            ["127.0.0.1:1", "127.0.0.1:2"]
        );
        assert_eq!(
            r.consumers.config(0.01).unwrap().addresses_text(),
            "127.0.0.1:3"
        );
        // The default is one address; a repeated option adds to the list.
        let cli =
            Cli::try_parse_from(["b", "fleet", "--tcp-address", "a:1", "--tcp-address", "b:2"])
                .unwrap();
        let Cmd::Fleet(f) = cli.cmd else {
            panic!("not fleet")
        };
        assert_eq!(f.fleet.config().unwrap().tcp_addresses, ["a:1", "b:2"]);
        let Cmd::Consumers(c) = Cli::try_parse_from(["b", "consumers"]).unwrap().cmd else {
            panic!("not consumers")
        };
        assert_eq!(
            c.consumers.config(0.0).unwrap().addresses_text(),
            "127.0.0.1:4161"
        );
        // Empty entries and missing ports are refused.
        assert_eq!(
            address_list(&[" a:1".into(), "b:2 ".into()]),
            Ok(vec!["a:1".to_string(), "b:2".to_string()])
        );
        assert!(address_list(&["a:1".into(), "".into()]).is_err());
        assert!(address_list(&["localhost".into()]).is_err());
        assert!(address_list(&[]).is_err());
        let Cmd::Fleet(f) = Cli::try_parse_from(["b", "fleet", "--tcp-address", "a:1,,b:2"])
            .unwrap()
            .cmd
        else {
            panic!("not fleet")
        };
        assert!(f.fleet.config().is_err());
    }

    #[test]
    fn https_addresses_ca_files_and_secrets() {
        let pki = crate::testtls::Pki::generate();
        let ca = pki.ca_file.to_str().unwrap();
        let cli = Cli::try_parse_from([
            "b",
            "consumers",
            "--http-address",
            "https://127.0.0.1:4162,http://127.0.0.1:4161,127.0.0.1:4163",
            "--http-ca-file",
            ca,
            "--auth-secret",
            "tok",
        ])
        .unwrap();
        let Cmd::Consumers(c) = cli.cmd else {
            panic!("not consumers")
        };
        let cfg = c.consumers.config(0.0).unwrap();
        let schemes: Vec<&str> = cfg.http.iter().map(|t| t.scheme()).collect();
        assert_eq!(schemes, ["https", "http", "http"]);
        assert_eq!(
            cfg.addresses_text(),
            "https://127.0.0.1:4162,http://127.0.0.1:4161,127.0.0.1:4163"
        );
        let r = cfg.client.report(&cfg.http);
        assert_eq!(r.scheme, "http+https");
        assert!(r.auth_secret_sent && !r.client_certificate);
        assert_eq!(r.verified_against, Some(format!("CA file {ca}")));
        // The secret is in no setting written to the JSON, nor in Debug.
        let settings = serde_json::to_string(&c.consumers).unwrap();
        assert!(!settings.contains("tok"), "{settings}");
        assert!(settings.contains("http_ca_file"), "{settings}");
        assert!(!format!("{:?}", c.consumers).contains("\"tok\""));

        // The defaults: plain, no TLS set up, no secret.
        let Cmd::Consumers(c) = Cli::try_parse_from(["b", "consumers"]).unwrap().cmd else {
            panic!("not consumers")
        };
        let cfg = c.consumers.config(0.0).unwrap();
        assert!(cfg.client.tls.is_none() && cfg.client.secret.is_none());
        assert_eq!(
            cfg.client.report(&cfg.http).to_string(),
            "http, no secret sent"
        );

        // A client certificate needs its key, and one secret source is enough.
        let cert = pki.client_cert_file.to_str().unwrap();
        let key = pki.client_key_file.to_str().unwrap();
        assert!(Cli::try_parse_from(["b", "consumers", "--http-client-cert", cert]).is_err());
        assert!(Cli::try_parse_from(["b", "consumers", "--http-client-key", key]).is_err());
        assert!(
            Cli::try_parse_from([
                "b",
                "consumers",
                "--auth-secret",
                "a",
                "--auth-secret-file",
                "f"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["b", "consumers", "--auth-secret", "a\nb"]).is_err());
        let secret_file = pki.dir.path().join("secret");
        std::fs::write(&secret_file, "from-file\n").unwrap();
        let Cmd::Propagation(p) = Cli::try_parse_from([
            "b",
            "propagation",
            "--http-address",
            "https://localhost:4162",
            "--http-ca-file",
            ca,
            "--http-client-cert",
            cert,
            "--http-client-key",
            key,
            "--auth-secret-file",
            secret_file.to_str().unwrap(),
        ])
        .unwrap()
        .cmd
        else {
            panic!("not propagation")
        };
        let (client, target) = p.http_client.single(&p.http_address).unwrap();
        assert_eq!(
            client.secret.as_ref().map(|s| s.expose()),
            Some("from-file")
        );
        let r = client.report(std::slice::from_ref(&target));
        assert_eq!(
            r.to_string(),
            format!(
                "https (server verified against CA file {ca}, client certificate sent), Bearer secret sent"
            )
        );
        // Bad entries and unreadable files stop the run before it starts.
        for bad in [
            vec!["--http-address", "https://127.0.0.1"],
            vec!["--http-address", "ftp://127.0.0.1:1"],
            vec!["--http-address", "a:1,,b:2"],
            vec!["--http-ca-file", "/nonexistent/ca.pem"],
            vec!["--auth-secret-file", "/nonexistent/secret"],
        ] {
            let mut args = vec!["b", "consumers"];
            args.extend(bad.iter().copied());
            let Cmd::Consumers(c) = Cli::try_parse_from(&args).unwrap().cmd else {
                panic!("not consumers")
            };
            assert!(c.consumers.config(0.0).is_err(), "{bad:?} was accepted");
        }
        // --verify-http and converge take https too.
        let Cmd::Fleet(f) = Cli::try_parse_from([
            "b",
            "fleet",
            "--verify-http",
            "https://127.0.0.1:4162",
            "--http-ca-file",
            ca,
        ])
        .unwrap()
        .cmd
        else {
            panic!("not fleet")
        };
        assert_eq!(
            f.http_client
                .single(f.verify_http.as_deref().unwrap())
                .unwrap()
                .1
                .scheme(),
            "https"
        );
        let Cmd::Converge(c) =
            Cli::try_parse_from(["b", "converge", "--http-address", "https://[::1]:4162"])
                .unwrap()
                .cmd
        else {
            panic!("not converge")
        };
        assert_eq!(c.http_address, "https://[::1]:4162");
    }

    #[test]
    fn accept_gzip_is_off_unless_asked() {
        let Cmd::Consumers(c) = Cli::try_parse_from(["b", "consumers"]).unwrap().cmd else {
            panic!("not consumers")
        };
        let cfg = c.consumers.config(0.0).unwrap();
        assert!(!cfg.client.accept_gzip && !cfg.http[0].accepts_gzip());
        assert_eq!(cfg.gzip_decode, GzipDecode::All);
        assert!(!cfg.client.report(&cfg.http).accept_gzip);
        for mode in ["run", "consumers", "ceiling"] {
            let cmd = Cli::try_parse_from(["b", mode, "--accept-gzip", "--gzip-decode", "checked"])
                .unwrap()
                .cmd;
            let consumers = match cmd {
                Cmd::Run(r) => r.consumers,
                Cmd::Consumers(c) => c.consumers,
                Cmd::Ceiling(c) => c.consumers,
                _ => unreachable!(),
            };
            let cfg = consumers.config(0.0).unwrap();
            assert!(
                cfg.client.accept_gzip && cfg.http[0].accepts_gzip(),
                "{mode}"
            );
            assert_eq!(cfg.gzip_decode, GzipDecode::Checked);
            let r = cfg.client.report(&cfg.http);
            assert_eq!(r.to_string(), "http, no secret sent, Accept-Encoding: gzip");
        }
        // The modes that check answers without a consumer load take it too.
        let Cmd::Converge(c) = Cli::try_parse_from(["b", "converge", "--accept-gzip"])
            .unwrap()
            .cmd
        else {
            panic!("not converge")
        };
        assert!(
            c.http_client
                .single(&c.http_address)
                .unwrap()
                .1
                .accepts_gzip()
        );
        for mode in ["fleet", "propagation"] {
            assert!(
                Cli::try_parse_from(["b", mode, "--accept-gzip"]).is_ok(),
                "{mode}"
            );
        }
    }

    #[test]
    fn ceiling_options() {
        let w = Preset::Medium.shape();
        let w = Workload {
            nodes: w.nodes,
            topics_per_node: w.topics_per_node,
            topic_universe: w.topic_universe,
            channels: w.channels,
            topic_prefix: "bench".into(),
        };
        let Cmd::Ceiling(c) = Cli::try_parse_from(["b", "ceiling"]).unwrap().cmd else {
            panic!("not ceiling")
        };
        let o = &c.ceiling_opts;
        assert_eq!(
            o.ceiling_kind.kinds(),
            [CeilingKind::Single, CeilingKind::Distinct]
        );
        let single = o.spec(CeilingKind::Single, &w);
        assert_eq!(
            (single.kind, single.bodies, single.body_size),
            ("single", 1, None)
        );
        assert_eq!((single.gzip_level, single.gzip_min_size), (1, 1024));
        let distinct = o.spec(CeilingKind::Distinct, &w);
        assert_eq!((distinct.kind, distinct.bodies), ("distinct", 10_000));
        let Cmd::Run(r) = Cli::try_parse_from([
            "b",
            "run",
            "--ceiling",
            "--ceiling-kind",
            "distinct",
            "--ceiling-bodies",
            "500",
            "--ceiling-body-size",
            "4000",
            "--ceiling-gzip-level",
            "6",
            "--ceiling-gzip-min-size",
            "0",
        ])
        .unwrap()
        .cmd
        else {
            panic!("not run")
        };
        let o = &r.ceiling_opts;
        assert_eq!(o.ceiling_kind.kinds(), [CeilingKind::Distinct]);
        let d = o.spec(CeilingKind::Distinct, &w);
        assert_eq!(
            (d.bodies, d.body_size, d.gzip_level, d.gzip_min_size),
            (500, Some(4000), 6, 0)
        );
        assert!(Cli::try_parse_from(["b", "ceiling", "--ceiling-gzip-level", "10"]).is_err());
        // The child understands what the parent tells it.
        let spec = o.spec(CeilingKind::Distinct, &w);
        let mut args = vec![
            "b".to_string(),
            "serve-ceiling".into(),
            "--listen".into(),
            "x:1".into(),
        ];
        args.extend(crate::ceiling::serve_args(&w, &spec));
        let Cmd::ServeCeiling(s) = Cli::try_parse_from(args).unwrap().cmd else {
            panic!("not serve-ceiling")
        };
        assert_eq!(s.workload.workload().unwrap().topic_universe, 10_000);
        assert_eq!(
            (s.kind, s.bodies, s.body_size),
            (CeilingKind::Distinct, 500, Some(4000))
        );
        assert_eq!((s.gzip_level, s.gzip_min_size), (6, 0));
    }

    #[test]
    fn soak_options_and_defaults() {
        let Cmd::Soak(a) = Cli::try_parse_from(["b", "soak"]).unwrap().cmd else {
            panic!("not soak")
        };
        // The soak's own defaults for the shared options.
        let w = a.workload.workload().unwrap();
        assert_eq!(
            (w.nodes, w.topics_per_node, w.topic_universe, w.channels),
            (5_000, 20, 10_000, 2)
        );
        assert_eq!(a.workload.pure_preset(), Some(Preset::Soak));
        let f = a.fleet.config().unwrap();
        assert_eq!(f.window, 1);
        assert_eq!(f.ping_interval, Duration::from_secs(15));
        assert_eq!(a.fleet.churn, 0.02);
        let c = a.consumers.config(0.01).unwrap();
        assert_eq!(c.duration, Duration::from_secs(600));
        assert_eq!(c.rate, 0.0);
        assert_eq!(c.check_sample, 0.01);
        assert_eq!(
            (c.mix.nodes_pct, c.mix.topics_pct, c.mix.channels_pct),
            (0.01, 0.05, 1.0)
        );
        let o = &a.soak;
        assert_eq!(o.sample_every, Duration::from_secs(10));
        assert_eq!((o.unregister_rate, o.ephemeral_rate), (0.002, 10.0));
        assert_eq!(o.unregister_hold, Duration::from_secs(5));
        assert_eq!(o.ephemeral_life, Duration::from_secs(30));
        assert_eq!(
            (o.rate_measure, o.rate_share),
            (Duration::from_secs(5), 0.5)
        );
        assert_eq!(
            (o.max_rss_drift_pct, o.max_fd_drift, o.max_fd_drift_pct),
            (5.0, 50.0, 5.0)
        );
        assert_eq!(o.max_rss_drift_mib, 2.0);
        assert_eq!(o.drift_base_start, Duration::from_secs(60));
        assert_eq!(o.drift_window, Duration::from_secs(60));
        assert!(o.faults.is_empty());
        // The other modes keep theirs.
        let Cmd::Run(r) = Cli::try_parse_from(["b", "run"]).unwrap().cmd else {
            panic!("not run")
        };
        assert_eq!(r.fleet.window, 256);
        assert_eq!(r.fleet.churn, 0.0);
        assert_eq!(r.consumers.duration, Duration::from_secs(20));
        assert_eq!(r.consumers.nodes_pct, 0.0);
        assert_eq!(r.workload.pure_preset(), Some(Preset::Small));
        // Everything can be set.
        let Cmd::Soak(a) = Cli::try_parse_from([
            "b",
            "soak",
            "--preset",
            "small",
            "--duration",
            "1m",
            "--rate",
            "1000",
            "--window",
            "4",
            "--fault",
            "storm@30s",
            "--fault",
            "storm@45s",
            "--drift-base-start",
            "10s",
            "--drift-window",
            "20s",
        ])
        .unwrap()
        .cmd
        else {
            panic!("not soak")
        };
        assert_eq!(a.workload.workload().unwrap().nodes, 10);
        assert_eq!(a.consumers.rate, 1000.0);
        assert_eq!(a.fleet.window, 4);
        assert_eq!(
            a.soak.faults,
            [
                FaultSpec {
                    kind: FaultKind::Storm,
                    at: Duration::from_secs(30)
                },
                FaultSpec {
                    kind: FaultKind::Storm,
                    at: Duration::from_secs(45)
                }
            ]
        );
        assert_eq!(a.soak.drift_window, Duration::from_secs(20));
        assert!(parse_fault("storm").is_err());
        assert!(parse_fault("sigterm@1m").is_err());
        assert!(parse_fault("storm@x").is_err());
    }

    #[test]
    fn cluster_subcommands() {
        let cli = Cli::try_parse_from([
            "b",
            "propagation",
            "--tcp-address",
            "127.0.0.1:1",
            "--http-address",
            "127.0.0.1:2",
            "--probes",
            "50",
        ])
        .unwrap();
        let Cmd::Propagation(p) = cli.cmd else {
            panic!("not propagation")
        };
        assert_eq!((p.probes, p.probe_nodes), (50, 4));
        assert_eq!(p.poll_interval, Duration::from_millis(1));
        assert_eq!(p.probe_timeout, Duration::from_secs(5));
        assert!(!p.no_unregister);
        let cli = Cli::try_parse_from([
            "b",
            "converge",
            "--preset",
            "medium",
            "--http-address",
            "127.0.0.1:2",
            "--wait-ready",
        ])
        .unwrap();
        let Cmd::Converge(c) = cli.cmd else {
            panic!("not converge")
        };
        assert!(c.wait_ready);
        assert_eq!(c.workload.workload().unwrap().nodes, 100);
        assert_eq!(c.check_topics, 0);
    }
}

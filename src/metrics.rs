//! `GET /metrics`: Prometheus/OpenMetrics exposition of the counters the
//! server keeps anyway.
//!
//! The hot paths only ever touch atomics (`stats::Stats`, the registry's
//! `Counts`); this module reads them at scrape time and lets
//! `prometheus-client` write the exposition format (names, `_total`
//! suffixes, HELP/TYPE lines, label escaping, histogram buckets), so the
//! format is right by construction and a lookup never waits on metrics.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::access::{Access, Class, Refusal};
use crate::registry::Registry;
use crate::stats::{
    ClusterStats, HTTP_ROUTES, HTTP_STATUSES, Limit, Stats, TCP_COMMANDS, TCP_ERROR_CODES,
    TLS_HANDSHAKE_FAILURES, TlsStats,
};

/// The git commit the binary was built from (full hash, or "unknown").
pub const GIT_COMMIT: &str = env!("NSQLOOKUPD_GIT_COMMIT");

/// Whether the work tree differed from that commit: "true", "false", or
/// "unknown" (see build.rs).
pub const GIT_DIRTY: &str = env!("NSQLOOKUPD_GIT_DIRTY");

/// Process start, Unix seconds (taken on first use, which is at server start).
fn start_time() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    })
}

/// Resident set size of this process, bytes (Linux).
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[derive(Debug)]
struct Exporter {
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    access: Arc<Access>,
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Exporter {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.stats;
        let counts = self.registry.counts();

        let mut info = e.encode_descriptor(
            "nsqlookupd_build",
            "Build information; the value is always 1",
            None,
            MetricType::Info,
        )?;
        info.encode_info(&[
            ("version", crate::NSQ_VERSION),
            ("crate_version", env!("CARGO_PKG_VERSION")),
            ("git_commit", GIT_COMMIT),
            ("git_dirty", GIT_DIRTY),
        ])?;
        let start = ConstGauge::new(start_time());
        start.encode(e.encode_descriptor(
            "nsqlookupd_process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            None,
            start.metric_type(),
        )?)?;
        if let Some(rss) = resident_bytes() {
            gauge(
                &mut e,
                "nsqlookupd_process_resident_memory_bytes",
                "Resident set size",
                rss,
            )?;
        }

        gauge(
            &mut e,
            "nsqlookupd_producers",
            "Identified nsqd connections",
            as_i64(self.registry.producer_count() as u64),
        )?;
        gauge(
            &mut e,
            "nsqlookupd_topics",
            "Topic keys",
            as_i64(counts.topics.load(Relaxed)),
        )?;
        gauge(
            &mut e,
            "nsqlookupd_channels",
            "Channel keys",
            as_i64(counts.channels.load(Relaxed)),
        )?;
        gauge(
            &mut e,
            "nsqlookupd_registrations",
            "(key, producer) registrations held, all categories",
            as_i64(counts.registrations.load(Relaxed)),
        )?;
        let caps = self.registry.caps();
        gauge(
            &mut e,
            "nsqlookupd_registrations_limit",
            "Most (key, producer) registrations held (--max-registrations)",
            as_i64(caps.max_registrations),
        )?;
        gauge(
            &mut e,
            "nsqlookupd_keys_limit",
            "Most topic and channel keys held (--max-keys)",
            as_i64(caps.max_keys),
        )?;
        gauge(
            &mut e,
            "nsqlookupd_lookup_cache_bytes",
            "Bytes of /lookup, /topics and /nodes answers cached (bounded by --lookup-cache-size)",
            as_i64(self.registry.lookup_cache_bytes() as u64),
        )?;
        counter(
            &mut e,
            "nsqlookupd_lookup_snapshot_rebuilds",
            "/lookup answers rendered because the cached one was out of date",
            counts.lookup_renders.load(Relaxed),
        )?;
        counter(
            &mut e,
            "nsqlookupd_view_renders",
            "/topics and /nodes answers rendered because the cached one was out of date",
            counts.view_renders.load(Relaxed),
        )?;
        if self.registry.compression().gzip_level.is_some() {
            counter(
                &mut e,
                "nsqlookupd_gzip_renders",
                "Cached answers (/lookup, /topics, /nodes) gzip-compressed: once per change, when a gzip client first asks",
                counts.gzip_renders.load(Relaxed),
            )?;
            counter(
                &mut e,
                "nsqlookupd_http_gzip_responses",
                "Answers sent gzip-compressed",
                s.gzip_responses.load(Relaxed),
            )?;
            counter(
                &mut e,
                "nsqlookupd_http_gzip_saved_bytes",
                "Bytes that gzip answers did not send: plain size minus compressed size, summed",
                s.gzip_saved_bytes.load(Relaxed),
            )?;
        }

        gauge(
            &mut e,
            "nsqlookupd_tcp_connections",
            "Open TCP connections",
            as_i64(s.tcp_connections_open.load(Relaxed)),
        )?;
        counter(
            &mut e,
            "nsqlookupd_tcp_connections_accepted",
            "TCP connections accepted",
            s.tcp_connections_total.load(Relaxed),
        )?;
        gauge(
            &mut e,
            "nsqlookupd_http_connections",
            "Open HTTP connections",
            as_i64(s.http_connections_open.load(Relaxed)),
        )?;
        counter(
            &mut e,
            "nsqlookupd_http_connections_accepted",
            "HTTP connections accepted",
            s.http_connections_total.load(Relaxed),
        )?;
        let mut refused = e.encode_descriptor(
            "nsqlookupd_connections_refused",
            "Connections closed at accept, by listener and reason",
            None,
            MetricType::Counter,
        )?;
        for (listener, limit) in [
            ("tcp", Limit::TcpConnections),
            ("http", Limit::HttpConnections),
        ] {
            let labels = [("listener", listener), ("reason", "max_connections")];
            ConstCounter::new(s.limit_hits(limit)).encode(refused.encode_family(&labels)?)?;
        }
        if s.tcp_allow_enabled.load(Relaxed) {
            let labels = [("listener", "tcp"), ("reason", "not_allowed")];
            ConstCounter::new(s.tcp_not_allowed.load(Relaxed))
                .encode(refused.encode_family(&labels)?)?;
        }

        let mut refused = e.encode_descriptor(
            "nsqlookupd_registrations_refused",
            "REGISTERs and admin creates refused because the registry is full, by reason",
            None,
            MetricType::Counter,
        )?;
        for limit in [Limit::Registrations, Limit::Keys] {
            ConstCounter::new(s.limit_hits(limit))
                .encode(refused.encode_family(&[("reason", limit.name())])?)?;
        }

        let mut limits = e.encode_descriptor(
            "nsqlookupd_limit_hits",
            "Times a client ran into a configured limit, by limit",
            None,
            MetricType::Counter,
        )?;
        for limit in Limit::ALL {
            ConstCounter::new(s.limit_hits(limit))
                .encode(limits.encode_family(&[("limit", limit.name())])?)?;
        }

        let mut commands = e.encode_descriptor(
            "nsqlookupd_tcp_commands",
            "TCP commands handled, by command and result",
            None,
            MetricType::Counter,
        )?;
        for (i, command) in TCP_COMMANDS.iter().enumerate() {
            for (j, result) in ["ok", "error"].iter().enumerate() {
                let labels = [("command", *command), ("result", *result)];
                ConstCounter::new(s.tcp_commands[i][j].load(Relaxed))
                    .encode(commands.encode_family(&labels)?)?;
            }
        }
        let mut errors = e.encode_descriptor(
            "nsqlookupd_tcp_errors",
            "TCP protocol errors sent, by code (all fatal but E_REGISTRATION_LIMIT)",
            None,
            MetricType::Counter,
        )?;
        for (i, code) in TCP_ERROR_CODES.iter().enumerate() {
            ConstCounter::new(s.tcp_errors[i].load(Relaxed))
                .encode(errors.encode_family(&[("code", *code)])?)?;
        }

        let mut requests = e.encode_descriptor(
            "nsqlookupd_http_requests",
            "HTTP requests answered, by route and status",
            None,
            MetricType::Counter,
        )?;
        for (i, route) in HTTP_ROUTES.iter().enumerate() {
            for (j, status) in HTTP_STATUSES.iter().enumerate() {
                let n = s.http[i].by_status[j].load(Relaxed);
                if n > 0 {
                    let labels = [("route", *route), ("status", *status)];
                    ConstCounter::new(n).encode(requests.encode_family(&labels)?)?;
                }
            }
        }
        let mut latency = e.encode_descriptor(
            "nsqlookupd_http_request_duration_seconds",
            "Time to produce an HTTP answer, by route",
            None,
            MetricType::Histogram,
        )?;
        for (i, route) in HTTP_ROUTES.iter().enumerate() {
            let (sum, count, buckets) = s.http[i].latency.snapshot();
            latency
                .encode_family(&[("route", *route)])?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum, count, &buckets, None,
                )?;
        }
        if s.cluster.enabled.load(Relaxed) {
            encode_cluster(&s.cluster, &mut e)?;
        }
        if self.access.enabled() {
            encode_access(&self.access, &mut e)?;
        }
        if s.tls.enabled.load(Relaxed) {
            encode_tls(&s.tls, &mut e)?;
        }
        Ok(())
    }
}

/// Access control's series (only when some class is closed).
fn encode_access(a: &Access, e: &mut DescriptorEncoder) -> std::fmt::Result {
    let mut refused = e.encode_descriptor(
        "nsqlookupd_http_refused",
        "HTTP requests refused by access control, by endpoint class and reason",
        None,
        MetricType::Counter,
    )?;
    for class in Class::GUARDED {
        for reason in Refusal::ALL {
            let labels = [("class", class.label()), ("reason", reason.label())];
            ConstCounter::new(a.refused(class, reason)).encode(refused.encode_family(&labels)?)?;
        }
    }
    let Some(auth) = a.auth_stats() else {
        return Ok(());
    };
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Relaxed);
    counter(
        e,
        "nsqlookupd_auth_cache_hits",
        "Consumer secrets answered from the auth cache",
        load(&auth.cache_hits),
    )?;
    counter(
        e,
        "nsqlookupd_auth_cache_misses",
        "Consumer secrets not in the auth cache (asked, or joined a query under way)",
        load(&auth.cache_misses),
    )?;
    let mut queries = e.encode_descriptor(
        "nsqlookupd_auth_queries",
        "Queries to the auth server, by outcome",
        None,
        MetricType::Counter,
    )?;
    for (outcome, v) in [
        ("ok", &auth.queries_ok),
        ("denied", &auth.queries_denied),
        ("unavailable", &auth.queries_unavailable),
    ] {
        ConstCounter::new(load(v)).encode(queries.encode_family(&[("outcome", outcome)])?)?;
    }
    counter(
        e,
        "nsqlookupd_auth_overloaded",
        "Requests answered 503 at once because --auth-max-inflight queries were under way",
        load(&auth.overloaded),
    )?;
    gauge(
        e,
        "nsqlookupd_auth_cache_entries",
        "Auth server answers cached",
        as_i64(load(&auth.cache_entries)),
    )?;
    gauge(
        e,
        "nsqlookupd_auth_inflight",
        "Auth server queries under way",
        as_i64(load(&auth.inflight)),
    )
}

/// Cluster mode's series (only when it is on: standalone output is as before).
fn encode_cluster(c: &ClusterStats, e: &mut DescriptorEncoder) -> std::fmt::Result {
    let flag = |b: &std::sync::atomic::AtomicBool| i64::from(b.load(Relaxed));
    gauge(
        e,
        "nsqlookupd_cluster_etcd_connected",
        "1 while the last etcd call (watch or publish) succeeded",
        flag(&c.connected),
    )?;
    gauge(
        e,
        "nsqlookupd_cluster_etcd_endpoints_in_use",
        "etcd endpoints requests are sent to: the configured ones less those failing health checks",
        as_i64(c.endpoints_in_use.load(Relaxed)),
    )?;
    gauge(
        e,
        "nsqlookupd_cluster_ready",
        "1 once the other replicas' registrations are loaded",
        flag(&c.ready),
    )?;
    gauge(
        e,
        "nsqlookupd_cluster_lease_ttl_seconds",
        "TTL etcd last granted or confirmed for this replica's lease",
        as_i64(c.lease_ttl_seconds.load(Relaxed)),
    )?;
    counter(
        e,
        "nsqlookupd_cluster_lease_keepalive_failures",
        "Lease keep-alives that failed",
        c.keepalive_failures.load(Relaxed),
    )?;
    counter(
        e,
        "nsqlookupd_cluster_published_keys",
        "Keys of this replica's registrations written or deleted in etcd",
        c.published.load(Relaxed),
    )?;
    counter(
        e,
        "nsqlookupd_cluster_batches",
        "etcd transactions sent",
        c.batches.load(Relaxed),
    )?;
    counter(
        e,
        "nsqlookupd_cluster_publish_errors",
        "Failed etcd calls of the publisher",
        c.publish_errors.load(Relaxed),
    )?;
    gauge(
        e,
        "nsqlookupd_cluster_pending_keys",
        "Keys waiting to be published",
        as_i64(c.pending.load(Relaxed)),
    )?;
    counter(
        e,
        "nsqlookupd_cluster_republishes",
        "Full republishes of this replica's state under a new lease",
        c.republishes.load(Relaxed),
    )?;
    counter(
        e,
        "nsqlookupd_cluster_received_keys",
        "Key changes received from the etcd watch",
        c.received.load(Relaxed),
    )?;
    counter(
        e,
        "nsqlookupd_cluster_applied",
        "Registry writes made for other replicas' registrations",
        c.applied.load(Relaxed),
    )?;
    counter(
        e,
        "nsqlookupd_cluster_resyncs",
        "Snapshots of the cluster's state loaded (start, compacted or lost watch)",
        c.resyncs.load(Relaxed),
    )?;
    gauge(
        e,
        "nsqlookupd_cluster_remote_producers",
        "Producers shown for nsqd connected only to other replicas",
        as_i64(c.remote_producers.load(Relaxed)),
    )?;
    let (sum, count, buckets) = c.watch_lag.snapshot();
    let mut lag = e.encode_descriptor(
        "nsqlookupd_cluster_watch_lag_seconds",
        "From a key's publication on one replica to its application here (replicas' clocks assumed in step)",
        None,
        MetricType::Histogram,
    )?;
    lag.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
}

/// The HTTPS listener's series (only when it is on: output without TLS is
/// as before). Its connections also count in the `http_connections` series.
fn encode_tls(t: &TlsStats, e: &mut DescriptorEncoder) -> std::fmt::Result {
    gauge(
        e,
        "nsqlookupd_https_connections",
        "Open HTTPS connections (also counted as HTTP connections)",
        as_i64(t.connections_open.load(Relaxed)),
    )?;
    counter(
        e,
        "nsqlookupd_https_connections_accepted",
        "HTTPS connections accepted",
        t.connections_total.load(Relaxed),
    )?;
    counter(
        e,
        "nsqlookupd_tls_handshakes",
        "TLS handshakes completed",
        t.handshakes.load(Relaxed),
    )?;
    let mut failures = e.encode_descriptor(
        "nsqlookupd_tls_handshake_failures",
        "TLS handshakes failed, by reason",
        None,
        MetricType::Counter,
    )?;
    for (i, reason) in TLS_HANDSHAKE_FAILURES.iter().enumerate() {
        ConstCounter::new(t.handshake_failures[i].load(Relaxed))
            .encode(failures.encode_family(&[("reason", *reason)])?)?;
    }
    let mut reloads = e.encode_descriptor(
        "nsqlookupd_tls_certificate_reloads",
        "Reloads of the TLS certificate, key and CA (SIGHUP), by result",
        None,
        MetricType::Counter,
    )?;
    for (result, n) in [
        ("ok", t.reloads_ok.load(Relaxed)),
        ("failed", t.reloads_failed.load(Relaxed)),
    ] {
        ConstCounter::new(n).encode(reloads.encode_family(&[("result", result)])?)?;
    }
    gauge(
        e,
        "nsqlookupd_tls_certificate_not_after_seconds",
        "Expiry (not-after) of the TLS certificate in use, Unix time",
        t.not_after.load(Relaxed),
    )
}

/// Renders the exposition text.
pub fn render(registry: &Arc<Registry>, stats: &Arc<Stats>, access: &Arc<Access>) -> String {
    let mut metrics = prometheus_client::registry::Registry::default();
    metrics.register_collector(Box::new(Exporter {
        registry: Arc::clone(registry),
        stats: Arc::clone(stats),
        access: Arc::clone(access),
    }));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics);
    out
}

/// Takes the process start time (call once at start).
pub fn mark_start() {
    start_time();
}

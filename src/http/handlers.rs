//! One function per endpoint. Reads go to registry snapshots only; the
//! admin POSTs call the registry's writes.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{ACCEPT_ENCODING, AUTHORIZATION};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use tracing::{debug, info, warn};

use super::query::Params;
use super::response::{self, Body};
use super::router::{self, Decision, Endpoint};
use super::{Conn, HttpContext};
use crate::access::auth::Grant;
use crate::access::bearer::Presented;
use crate::access::{Class, Facts, Refusal, Verdict};
use crate::json;
use crate::names::is_valid_name;
use crate::registry::{Encoding, Nanos, Registry, SharedBody, WholeView};
use crate::stats::{Limit, Stats};

/// A failed request: status and message.
type Failure = (StatusCode, &'static str);

const INVALID_REQUEST: Failure = (StatusCode::BAD_REQUEST, "INVALID_REQUEST");
const MISSING_ARG_TOPIC: Failure = (StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC");
const INVALID_ARG_TOPIC: Failure = (StatusCode::BAD_REQUEST, "INVALID_ARG_TOPIC");
const MISSING_ARG_CHANNEL: Failure = (StatusCode::BAD_REQUEST, "MISSING_ARG_CHANNEL");
const INVALID_ARG_CHANNEL: Failure = (StatusCode::BAD_REQUEST, "INVALID_ARG_CHANNEL");
const MISSING_ARG_NODE: Failure = (StatusCode::BAD_REQUEST, "MISSING_ARG_NODE");
/// An admin create refused by `--max-keys`.
const KEY_LIMIT: Failure = (StatusCode::INSUFFICIENT_STORAGE, "KEY_LIMIT");

/// Percent-decodes a request path (Go's `URL.Path`); `None` if malformed.
/// Borrows in the common case (no escapes).
fn decode_path(raw: &str) -> Option<Cow<'_, str>> {
    match super::query::unescape_path(raw).ok()? {
        Cow::Borrowed(_) => Some(Cow::Borrowed(raw)),
        Cow::Owned(bytes) => Some(Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())),
    }
}

/// Answers one request.
pub async fn handle(ctx: Arc<HttpContext>, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    // Split first, so the path can be borrowed from the head while the
    // body moves into the handler (no copy of the URI per request).
    let (head, body) = req.into_parts();
    let Some(path) = decode_path(head.uri.path()) else {
        return response::bad_request();
    };
    if let Some(https_port) = tls_redirect(&ctx, conn, &path) {
        ctx.stats.http_request(router::OTHER, 403, start.elapsed());
        return response::tls_required(https_port);
    }
    let mut route = router::OTHER;
    let response = match router::route(&head.method, &path) {
        Decision::Handle(endpoint) => {
            route = endpoint.index();
            match permitted(&ctx, conn, &head, endpoint).await {
                Ok(scope) => endpoint_response(&ctx, endpoint, &head, body, &scope, conn).await,
                Err(refusal) => response::refused(refusal),
            }
        }
        Decision::Redirect { path, permanent } => {
            let location = match head.uri.query() {
                Some(q) if !q.is_empty() => format!("{path}?{q}"),
                _ => path.to_owned(),
            };
            response::redirect(&location, permanent, head.method == Method::GET)
        }
        Decision::Options { allow } => response::options(&allow),
        Decision::MethodNotAllowed { allow } => response::method_not_allowed(&allow),
        Decision::NotFound if is_readiness_probe(&ctx, &head, &path) => readiness(&ctx),
        Decision::NotFound => response::error(StatusCode::NOT_FOUND, "NOT_FOUND"),
    };
    let status = response.status().as_u16();
    ctx.stats.http_request(route, status, start.elapsed());
    debug!(peer = %conn.peer, method = %head.method, path = %path, status, "{status} {} {path}", head.method);
    response
}

/// What a permitted sender may see of the read endpoints.
enum Scope {
    Full,
    /// Only the topics of a consumer's grant.
    Identity(Arc<Grant>),
}

/// Whether the sender may go on to `endpoint`, and what it may see there
/// (everything, with no access flag set: one branch).
async fn permitted(
    ctx: &HttpContext,
    conn: &Conn,
    head: &Parts,
    endpoint: Endpoint,
) -> Result<Scope, Refusal> {
    if !ctx.access.enabled() {
        return Ok(Scope::Full);
    }
    let facts = Facts {
        peer: conn.peer.ip(),
        tls: conn.tls.is_some(),
        common_name: conn.tls.as_ref().and_then(|t| t.common_name.as_deref()),
        authorization: Presented::from_headers(
            head.headers
                .get_all(AUTHORIZATION)
                .iter()
                .map(|v| v.as_bytes()),
        ),
        remembered: Some(&conn.remembered),
    };
    match ctx.access.check(endpoint.class(), &facts).await {
        Verdict::Full => Ok(Scope::Full),
        Verdict::Identity(grant) => Ok(Scope::Identity(grant)),
        Verdict::Refused(refusal) => Err(refusal),
    }
}

/// `--tls-required`: a plain-HTTP request is sent to the HTTPS port (as
/// nsqd does), except the health probes `/ping` and `/ready`, which load
/// balancers and Kubernetes send over plain HTTP.
fn tls_redirect(ctx: &HttpContext, conn: &Conn, path: &str) -> Option<u16> {
    match ctx.tls_redirect {
        Some(port) if conn.tls.is_none() && path != "/ping" && path != "/ready" => Some(port),
        _ => None,
    }
}

/// `GET /ready`, which exists in cluster mode only (a standalone server
/// answers it 404 as the original does): for a Kubernetes readiness probe.
fn is_readiness_probe(ctx: &HttpContext, head: &Parts, path: &str) -> bool {
    head.method == Method::GET
        && path == "/ready"
        && ctx
            .stats
            .cluster
            .enabled
            .load(std::sync::atomic::Ordering::Relaxed)
}

/// 200 `OK` once the other replicas' registrations are loaded, 503
/// `NOT_READY` before: a replica that would answer for part of the fleet
/// only stays out of the Service.
fn readiness(ctx: &HttpContext) -> Response<Body> {
    if ctx
        .stats
        .cluster
        .ready
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        response::text_ok("OK")
    } else {
        response::error(StatusCode::SERVICE_UNAVAILABLE, "NOT_READY")
    }
}

async fn endpoint_response(
    ctx: &HttpContext,
    endpoint: Endpoint,
    head: &Parts,
    body: Incoming,
    scope: &Scope,
    conn: &Conn,
) -> Response<Body> {
    let registry = &ctx.registry;
    let want = accepted_encoding(ctx, head);
    match (endpoint, scope) {
        (Endpoint::Ping, _) => return response::text_ok("OK"),
        (Endpoint::Info, _) => return response::json_ok(ctx.info_body.clone()),
        (Endpoint::Topics, Scope::Full) => return whole_view(ctx, WholeView::Topics, want).await,
        (Endpoint::Nodes, Scope::Full) => return whole_view(ctx, WholeView::Nodes, want).await,
        (Endpoint::Debug, Scope::Full) => {
            return off_the_reactor(ctx, move |r, s| encoded(r, s, want, debug(r))).await;
        }
        (Endpoint::Topics, Scope::Identity(grant)) => {
            let grant = Arc::clone(grant);
            return off_the_reactor(ctx, move |r, s| encoded(r, s, want, topics_seen(r, &grant)))
                .await;
        }
        (Endpoint::Nodes, Scope::Identity(grant)) => {
            let grant = Arc::clone(grant);
            return off_the_reactor(ctx, move |r, s| encoded(r, s, want, nodes_seen(r, &grant)))
                .await;
        }
        // Every registration of every topic: for the read allow-list and
        // admins only.
        (Endpoint::Debug, Scope::Identity(_)) => return forbidden(ctx, conn),
        (Endpoint::Metrics, _) => {
            let text = crate::metrics::render(registry, &ctx.stats, &ctx.access);
            let (body, encoding) = encoded(registry, &ctx.stats, want, Bytes::from(text));
            return response::metrics(body, encoding);
        }
        _ => {}
    }
    // The others take parameters. The original reads (and ignores) the
    // request body; it is drained here too, within a bound.
    if !body.is_end_stream()
        && Limited::new(body, ctx.limits.max_body_size)
            .collect()
            .await
            .is_err()
    {
        ctx.stats.limit_hit(Limit::HttpBodySize);
        return failure(INVALID_REQUEST);
    }
    let Ok(params) = Params::parse(head.uri.query().unwrap_or("")) else {
        return failure(INVALID_REQUEST);
    };
    if let Scope::Identity(grant) = scope
        && !subscribable(grant, &params)
    {
        return forbidden(ctx, conn);
    }
    let result = match endpoint {
        Endpoint::Lookup => lookup(registry, &params, want)
            .inspect(|a| a.iter().for_each(|a| counted(&ctx.stats, a))),
        Endpoint::Channels => channels(registry, &ctx.stats, &params, want),
        Endpoint::TopicCreate => topic_create(registry, &ctx.stats, &params),
        Endpoint::TopicDelete => topic_delete(registry, &params),
        Endpoint::ChannelCreate => channel_create(registry, &ctx.stats, &params),
        Endpoint::ChannelDelete => channel_delete(registry, &params),
        Endpoint::TopicTombstone => topic_tombstone(registry, &params),
        _ => unreachable!("parameterless endpoints answered above"),
    };
    match result {
        Ok(Some((body, encoding))) => response::json_as(body, encoding),
        Ok(None) => response::empty_ok(),
        Err(f) => failure(f),
    }
}

/// The encoding a request allows (see `encoding`): gzip only when
/// compression is on and its `Accept-Encoding` allows it.
fn accepted_encoding(ctx: &HttpContext, head: &Parts) -> Encoding {
    if ctx.registry.compression().gzip_level.is_none() {
        return Encoding::Identity;
    }
    super::encoding::negotiate(
        head.headers
            .get_all(ACCEPT_ENCODING)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

/// An answer rendered for one request, compressed for a gzip client when
/// it is worth it (and counted).
fn encoded(
    registry: &Registry,
    stats: &Stats,
    want: Encoding,
    body: Bytes,
) -> (SharedBody, Encoding) {
    let c = registry.compression();
    if want == Encoding::Gzip && c.worth_it(body.len()) {
        let gz = c.gzip(&body);
        count_gzip(stats, body.len(), gz.len());
        (gz.into(), Encoding::Gzip)
    } else {
        (body.into(), Encoding::Identity)
    }
}

/// Counts a cached answer sent compressed.
fn counted(stats: &Stats, (body, encoding): &(SharedBody, Encoding)) {
    if *encoding == Encoding::Gzip {
        count_gzip(stats, body.plain_len().unwrap_or(body.len()), body.len());
    }
}

fn count_gzip(stats: &Stats, plain: usize, sent: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    stats.gzip_responses.fetch_add(1, Relaxed);
    stats
        .gzip_saved_bytes
        .fetch_add(plain.saturating_sub(sent) as u64, Relaxed);
}

/// 403 `FORBIDDEN` to a granted consumer asking for more than its grant
/// (decided here, not by `access`: only the handler knows the topic),
/// counted with the refusals `access` decides.
fn forbidden(ctx: &HttpContext, conn: &Conn) -> Response<Body> {
    ctx.access
        .count(Class::Read, Refusal::Forbidden, conn.peer.ip());
    response::refused(Refusal::Forbidden)
}

/// A granted consumer's `/lookup` or `/channels`: its grant must allow
/// subscribing to the topic. Checked before the registry is read, so that
/// the answer says nothing of a topic the consumer may not see (a missing
/// `topic` parameter is left to the handler's own error).
fn subscribable(grant: &Grant, params: &Params<'_>) -> bool {
    match params.get("topic").map(std::str::from_utf8) {
        None => true,
        Some(Ok(topic)) => grant.may_subscribe(topic),
        Some(Err(_)) => false,
    }
}

/// `/topics` and `/nodes`: served from the registry's cached body while
/// nothing changed (nsqadmin polls them; a fleet at rest answers each poll
/// with a copy of ready bytes), rendered off the reactor otherwise.
async fn whole_view(ctx: &HttpContext, view: WholeView, want: Encoding) -> Response<Body> {
    let generation = match ctx.registry.cached_view_as(view, want) {
        Ok(answer) => {
            counted(&ctx.stats, &answer);
            return response::json_as(answer.0, answer.1);
        }
        Err(generation) => generation,
    };
    off_the_reactor(ctx, move |registry, stats| {
        let answer = registry.make_view(view, want, generation, |registry| match view {
            WholeView::Topics => (topics(registry), Nanos::MAX),
            WholeView::Nodes => nodes(registry),
        });
        counted(stats, &answer);
        answer
    })
    .await
}

/// Runs a whole-registry view (`/nodes`, `/topics`, `/debug`: milliseconds
/// on a large registry) on tokio's blocking pool, so that it never holds
/// the async worker that serves lookups and TCP sessions: the kernel
/// time-slices it against them instead, and a lookup arriving meanwhile is
/// answered at once. At most [`super::HEAVY_VIEWS`] run at a time, so a burst of
/// them cannot crowd the worker off the CPU; the rest wait their turn.
async fn off_the_reactor(
    ctx: &HttpContext,
    view: impl FnOnce(&Registry, &Stats) -> (SharedBody, Encoding) + Send + 'static,
) -> Response<Body> {
    let Ok(_turn) = ctx.heavy_views.acquire().await else {
        return response::error(StatusCode::SERVICE_UNAVAILABLE, "SHUTTING_DOWN");
    };
    let registry = Arc::clone(&ctx.registry);
    let stats = Arc::clone(&ctx.stats);
    match tokio::task::spawn_blocking(move || view(&registry, &stats)).await {
        Ok((body, encoding)) => response::json_as(body, encoding),
        // Only a panic (a bug) gets here: answer it, keep serving.
        Err(_) => response::error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    }
}

fn failure((status, message): Failure) -> Response<Body> {
    response::error(status, message)
}

/// `Ok(Some((json, its encoding)))`, `Ok(None)` for an empty 200, or a failure.
type Answer = Result<Option<(SharedBody, Encoding)>, Failure>;

/// A parameter that must be present; its value is not checked.
fn required<'p>(params: &'p Params<'_>, name: &str, missing: Failure) -> Result<&'p [u8], Failure> {
    params.get(name).ok_or(missing)
}

/// A parameter that must be present and a valid topic/channel name.
fn name<'p>(
    params: &'p Params<'_>,
    param: &str,
    missing: Failure,
    invalid: Failure,
) -> Result<&'p str, Failure> {
    let value = required(params, param, missing)?;
    if !is_valid_name(value) {
        return Err(invalid);
    }
    Ok(std::str::from_utf8(value).expect("valid names are ASCII"))
}

fn lookup(registry: &Registry, params: &Params<'_>, want: Encoding) -> Answer {
    let topic = required(params, "topic", MISSING_ARG_TOPIC)?;
    std::str::from_utf8(topic)
        .ok()
        .and_then(|topic| registry.lookup_as(topic, want))
        .map(Some)
        .ok_or((StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))
}

fn channels(registry: &Registry, stats: &Stats, params: &Params<'_>, want: Encoding) -> Answer {
    let topic = required(params, "topic", MISSING_ARG_TOPIC)?;
    let channels = std::str::from_utf8(topic)
        .map(|t| registry.channels(t))
        .unwrap_or_else(|_| Arc::from(Vec::new()));
    let mut out = String::from("{\"channels\":");
    json::push_str_array(&mut out, channels.iter().map(|c| &**c));
    out.push('}');
    Ok(Some(encoded(registry, stats, want, Bytes::from(out))))
}

fn topic_create(registry: &Registry, stats: &Stats, params: &Params<'_>) -> Answer {
    let topic = name(params, "topic", MISSING_ARG_TOPIC, INVALID_ARG_TOPIC)?;
    info!(topic, "DB: adding topic({topic})");
    registry
        .try_create_topic(topic)
        .map_err(|_| key_limit(registry, stats))?;
    Ok(None)
}

/// An admin create refused by `--max-keys`: counted, and logged at most
/// once a second with the count (as refused REGISTERs are).
fn key_limit(registry: &Registry, stats: &Stats) -> Failure {
    stats.limit_hit(Limit::Keys);
    if let Some(n) = stats.cap_refusals.hit() {
        warn!(
            "refused {n} write(s) to the registry: --max-keys={} reached (last: an admin create)",
            registry.caps().max_keys
        );
    }
    KEY_LIMIT
}

fn topic_delete(registry: &Registry, params: &Params<'_>) -> Answer {
    let topic = required(params, "topic", MISSING_ARG_TOPIC)?;
    if let Ok(topic) = std::str::from_utf8(topic) {
        info!(topic, "DB: removing topic({topic})");
        registry.delete_topic(topic);
    }
    Ok(None)
}

fn topic_channel<'p>(params: &'p Params<'_>) -> Result<(&'p str, &'p str), Failure> {
    let topic = name(params, "topic", MISSING_ARG_TOPIC, INVALID_ARG_TOPIC)?;
    let channel = name(params, "channel", MISSING_ARG_CHANNEL, INVALID_ARG_CHANNEL)?;
    Ok((topic, channel))
}

fn channel_create(registry: &Registry, stats: &Stats, params: &Params<'_>) -> Answer {
    let (topic, channel) = topic_channel(params)?;
    info!(
        topic,
        channel, "DB: adding channel({channel}) in topic({topic})"
    );
    registry
        .try_create_channel(topic, channel)
        .map_err(|_| key_limit(registry, stats))?;
    Ok(None)
}

fn channel_delete(registry: &Registry, params: &Params<'_>) -> Answer {
    let (topic, channel) = topic_channel(params)?;
    info!(
        topic,
        channel, "DB: removing channel({channel}) from topic({topic})"
    );
    if registry.delete_channel(topic, channel) {
        Ok(None)
    } else {
        Err((StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"))
    }
}

fn topic_tombstone(registry: &Registry, params: &Params<'_>) -> Answer {
    let topic = required(params, "topic", MISSING_ARG_TOPIC)?;
    let node = required(params, "node", MISSING_ARG_NODE)?;
    if let (Ok(topic), Ok(node)) = (std::str::from_utf8(topic), std::str::from_utf8(node)) {
        info!(
            topic,
            node, "DB: setting tombstone for producer@{node} of topic({topic})"
        );
        registry.tombstone(topic, node);
    }
    Ok(None)
}

fn topics(registry: &Registry) -> Bytes {
    render_topics(registry, |_| true)
}

/// `/topics` for a granted consumer: the topics its grant lets it see.
fn topics_seen(registry: &Registry, grant: &Grant) -> Bytes {
    render_topics(registry, |topic| grant.may_see(topic))
}

fn render_topics(registry: &Registry, shown: impl Fn(&str) -> bool) -> Bytes {
    let topics = registry.topics();
    let mut out = String::with_capacity(16 + topics.len() * 24);
    out.push_str("{\"topics\":");
    json::push_str_array(&mut out, topics.iter().map(|t| &**t).filter(|t| shown(t)));
    out.push('}');
    Bytes::from(out)
}

/// The `/nodes` body and the instant until which it stays true.
fn nodes(registry: &Registry) -> (Bytes, Nanos) {
    render_nodes(registry, |_| true)
}

/// `/nodes` for a granted consumer: every producer, with only the topics
/// (and their tombstones) its grant lets it see.
fn nodes_seen(registry: &Registry, grant: &Grant) -> Bytes {
    render_nodes(registry, |topic| grant.may_see(topic)).0
}

fn render_nodes(registry: &Registry, shown: impl Fn(&str) -> bool) -> (Bytes, Nanos) {
    let all = registry.nodes();
    // Each name escaped once, into one buffer, then copied per node.
    let mut names = String::with_capacity(all.topics.iter().map(|t| t.len() + 2).sum());
    let spans: Vec<Option<(usize, usize)>> = all
        .topics
        .iter()
        .map(|t| {
            shown(t).then(|| {
                let start = names.len();
                json::push_str(&mut names, t);
                (start, names.len())
            })
        })
        .collect();
    let topic_count: usize = all.nodes.iter().map(|n| n.topics.len()).sum();
    let mut out = String::with_capacity(32 + all.nodes.len() * 256 + topic_count * 30);
    out.push_str("{\"producers\":[");
    for (i, node) in all.nodes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        node.producer.peer.write_json_fields(&mut out);
        let topics = || {
            node.topics
                .iter()
                .filter_map(|&(t, tombstoned)| Some((spans[t as usize]?, tombstoned)))
        };
        out.push_str(",\"tombstones\":[");
        for (j, (_, tombstoned)) in topics().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(if tombstoned { "true" } else { "false" });
        }
        out.push_str("],\"topics\":[");
        for (j, ((start, end), _)) in topics().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&names[start..end]);
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    (Bytes::from(out), all.valid_until)
}

fn debug(registry: &Registry) -> Bytes {
    let entries = registry.debug();
    let mut out = String::from("{");
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::push_str(&mut out, &entry.registration.to_string());
        out.push_str(":[");
        for (j, p) in entry.producers.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let peer = &p.producer.peer;
            // Go marshals a map: keys in sorted order.
            out.push('{');
            json::push_key(&mut out, "broadcast_address");
            json::push_str(&mut out, &peer.broadcast_address);
            out.push(',');
            json::push_key(&mut out, "hostname");
            json::push_str(&mut out, &peer.hostname);
            out.push(',');
            json::push_key(&mut out, "http_port");
            json::push_int(&mut out, peer.http_port);
            out.push(',');
            json::push_key(&mut out, "id");
            json::push_str(&mut out, &peer.remote_address);
            out.push(',');
            json::push_key(&mut out, "last_update");
            json::push_int(&mut out, p.last_update);
            out.push(',');
            json::push_key(&mut out, "tcp_port");
            json::push_int(&mut out, peer.tcp_port);
            out.push(',');
            json::push_key(&mut out, "tombstoned");
            out.push_str(if p.tombstoned { "true" } else { "false" });
            out.push(',');
            json::push_key(&mut out, "tombstoned_at");
            json::push_int(&mut out, p.tombstoned_at);
            out.push(',');
            json::push_key(&mut out, "topology_region");
            json::push_str(&mut out, &peer.topology_region);
            out.push(',');
            json::push_key(&mut out, "topology_zone");
            json::push_str(&mut out, &peer.topology_zone);
            out.push(',');
            json::push_key(&mut out, "version");
            json::push_str(&mut out, &peer.version);
            out.push('}');
        }
        out.push(']');
    }
    out.push('}');
    Bytes::from(out)
}

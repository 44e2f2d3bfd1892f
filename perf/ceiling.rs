//! The ceiling: a minimal HTTP/1.1 server that answers every request with
//! a pre-rendered answer, as cheaply as tokio allows. Loading it with the
//! same consumers gives the most lookups per second this machine can carry
//! over HTTP at that answer size, a yardstick for the real server's figure.
//!
//! Two kinds, which differ only in how many answers it keeps:
//!
//! * **single**: one body for every request. It stays in the CPU's caches,
//!   so this is the limit of HTTP itself on this machine.
//! * **distinct**: N bodies (by default one per registered topic of the
//!   workload, as many different answers as the server keeps), and each
//!   request gets the body of its topic: the digits that end the value of
//!   its `topic=` parameter, mod N (a random body when it names none, as
//!   from a load tool with one fixed path). The bench's consumers ask for
//!   topics uniformly at random, so the bodies are read uniformly, in the
//!   very order the server's answers would be; at large (20,000 bodies of
//!   48 KB) that is the memory traffic of reading answers that are not in
//!   any cache, which the single body never pays.
//!
//! Each body is a real `/lookup` answer of the workload (its topic's
//! producers, with their IDENTIFY fields, and the channels; remote
//! addresses `127.0.0.1:PORT`, ports 2 apart as the kernel gives a fleet
//! that connects in order, from a start drawn per body), so
//! that it compresses as the server's answers do, and a consumer that
//! checks it finds it right. `--ceiling-body-size` makes every body exactly
//! that size instead (producers added or left out, the rest padded). Every
//! body is rendered once, at start, both plain and gzip-compressed (at the
//! level the server uses, 1 by default), each with its response head; a
//! request whose `Accept-Encoding` allows gzip gets the compressed
//! rendering with `Content-Encoding: gzip` and `Vary: Accept-Encoding`,
//! other requests the plain one, and bodies under the server's threshold
//! (1 KiB) are plain for everyone, as the server's are.
//!
//! A lone request's answer is written straight from its rendering (no copy
//! into a buffer of the connection's); pipelined requests read at once are
//! answered with one write of their answers copied together.
//!
//! It runs as a child process of the bench (`nsqlookupd-bench
//! serve-ceiling`), optionally under `taskset`, so it can be pinned to the
//! same core as the server under test and measured the same way.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::consumers::Rng;
use crate::gzip;
use crate::scheme::Workload;

/// What the ceiling server renders.
#[derive(Clone, Debug, PartialEq)]
pub struct CeilingSpec {
    /// `single` or `distinct`, for reports.
    pub kind: &'static str,
    /// How many bodies (N); 1 for the single-body ceiling.
    pub bodies: usize,
    /// Every body exactly this size; `None`: each body is the real answer
    /// of its topic (the size a conforming server's answer has).
    pub body_size: Option<usize>,
    /// gzip level of the compressed renderings (0-9).
    pub gzip_level: u32,
    /// Bodies smaller than this have no compressed rendering.
    pub gzip_min_size: usize,
}

/// What was rendered (written to the report; the child process prints it
/// to its parent as one JSON line before it listens).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct AnswersSummary {
    /// `single` or `distinct`.
    pub kind: String,
    /// Bodies kept.
    pub bodies: usize,
    /// How a request's body is chosen.
    pub selection: String,
    /// Body bytes (plain), mean, min and max over the bodies.
    pub body_bytes_mean: f64,
    pub body_bytes_min: usize,
    pub body_bytes_max: usize,
    pub gzip_level: u32,
    /// Bodies under this size are served plain even when gzip is accepted.
    pub gzip_min_size: usize,
    /// Bodies that have a compressed rendering.
    pub gzip_bodies: usize,
    /// Their compressed body bytes, mean.
    pub gzip_body_bytes_mean: Option<f64>,
    /// Every rendering, response heads included: the memory the answers
    /// occupy.
    pub rendered_bytes: u64,
    /// Time taken to render them.
    pub render_s: f64,
}

impl AnswersSummary {
    /// One line for the report.
    pub fn text(&self) -> String {
        let mut t = format!(
            "{} {} of {} B (mean; {}-{}), {}",
            crate::report::fmt_int(self.bodies as u64),
            if self.bodies == 1 { "body" } else { "bodies" },
            crate::report::fmt_int(self.body_bytes_mean.round() as u64),
            crate::report::fmt_int(self.body_bytes_min as u64),
            crate::report::fmt_int(self.body_bytes_max as u64),
            self.selection
        );
        match self.gzip_body_bytes_mean {
            Some(g) => {
                let _ = write!(
                    t,
                    "; gzip level {}: {} of them {} B (mean)",
                    self.gzip_level,
                    crate::report::fmt_int(self.gzip_bodies as u64),
                    crate::report::fmt_int(g.round() as u64)
                );
            }
            None => {
                let _ = write!(
                    t,
                    "; none gzip-compressed (all under {} B)",
                    crate::report::fmt_int(self.gzip_min_size as u64)
                );
            }
        }
        let _ = write!(
            t,
            "; {:.1} MiB rendered in {}",
            self.rendered_bytes as f64 / (1 << 20) as f64,
            crate::report::fmt_secs(self.render_s)
        );
        t
    }
}

/// The remote port of `node` in body `index`, 5 digits. The server lists
/// the port of each nsqd's connection, and the kernel hands a fleet that
/// connects in order ports 2 apart; so do these, from a start drawn per
/// body, so that bodies whose topics have the same producers still differ.
fn remote_port(node: usize, index: usize) -> u64 {
    let start = Rng::new(index as u64).next_u64() % 55_536;
    10_000 + (start + 2 * node as u64) % 55_536
}

/// One producer of a `/lookup` answer, in the server's field order.
fn push_producer(out: &mut String, node: usize, index: usize) {
    let id = Workload::identity(node);
    let _ = write!(
        out,
        "{{\"remote_address\":\"127.0.0.1:{}\",\"hostname\":\"{}\",\"broadcast_address\":\"{}\",\
         \"tcp_port\":{},\"http_port\":{},\"version\":\"{}\",\"topology_zone\":\"\",\"topology_region\":\"\"}}",
        remote_port(node, index),
        id.hostname,
        id.broadcast_address,
        id.tcp_port,
        id.http_port,
        id.version
    );
}

/// A body of exactly `size` bytes that is JSON when it can be (today's
/// filler, for sizes too small for a `/lookup` answer).
fn filler(size: usize) -> Vec<u8> {
    if size >= 10 {
        let mut b = b"{\"pad\":\"".to_vec();
        b.resize(size - 2, b'x');
        b.extend_from_slice(b"\"}");
        b
    } else {
        vec![b'x'; size]
    }
}

/// Body `index` of the ceiling: the `/lookup` answer of topic `index` (mod
/// the registered topics), or, with `size`, an answer of exactly that many
/// bytes: that topic's producers and then further nodes for as many as
/// fit, the rest padded with letters in the last one's `topology_region`
/// (or a `pad` field when not even one fits).
pub fn lookup_body(w: &Workload, index: usize, size: Option<usize>) -> Vec<u8> {
    let topic = index % w.covered_topics().max(1);
    let mut out = String::with_capacity(size.unwrap_or(64 + 200 * w.producers_of(topic).count()));
    out.push_str("{\"channels\":[");
    for c in 0..w.channels {
        if c > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{}\"", Workload::channel_name(c));
    }
    out.push_str("],\"producers\":[");
    let Some(size) = size else {
        for (k, node) in w.producers_of(topic).enumerate() {
            if k > 0 {
                out.push(',');
            }
            push_producer(&mut out, node, index);
        }
        out.push_str("]}");
        return out.into_bytes();
    };
    if out.len() + 2 > size {
        return filler(size);
    }
    let further = (0..).map(|j| (topic + j) % w.nodes.max(1));
    let mut entry = String::with_capacity(256);
    let mut listed = 0;
    for node in w.producers_of(topic).chain(further) {
        entry.clear();
        push_producer(&mut entry, node, index);
        let sep = usize::from(listed > 0);
        if out.len() + sep + entry.len() + 2 > size {
            break;
        }
        if sep == 1 {
            out.push(',');
        }
        out.push_str(&entry);
        listed += 1;
    }
    out.push_str("]}");
    let mut pad = size - out.len();
    if pad == 0 {
        return out.into_bytes();
    }
    let mut rng = Rng::new(index as u64);
    let mut letters = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'a' + (rng.next_u64() % 26) as u8))
            .collect()
    };
    if listed > 0 {
        // `..."topology_region":""}]}`: between the last two quotes.
        let at = out.len() - 4;
        out.insert_str(at, &letters(pad));
    } else if pad >= 9 {
        pad -= 9;
        out.insert_str(1, &format!("\"pad\":\"{}\",", letters(pad)));
    } else {
        return filler(size);
    }
    out.into_bytes()
}

/// A response head like the server's (same names, a date of the same
/// length), gzip or not.
fn response_head(len: usize, gzip: bool) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=utf-8\r\n\
         x-nsq-content-type: nsq; version=1.0\r\n{}content-length: {len}\r\n\
         date: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n",
        if gzip {
            "content-encoding: gzip\r\nvary: accept-encoding\r\n"
        } else {
            ""
        }
    )
}

/// One answer, rendered: head and body in one allocation each way.
pub struct Rendered {
    plain: Box<[u8]>,
    gzip: Option<Box<[u8]>>,
    body_len: usize,
    gzip_body_len: usize,
}

impl Rendered {
    pub fn new(body: &[u8], level: u32, gzip_min_size: usize) -> Rendered {
        let mut plain = response_head(body.len(), false).into_bytes();
        plain.extend_from_slice(body);
        let z = (body.len() >= gzip_min_size).then(|| gzip::compress(body, level));
        let gzip_body_len = z.as_ref().map_or(0, Vec::len);
        let gzip = z.map(|z| {
            let mut r = response_head(z.len(), true).into_bytes();
            r.extend_from_slice(&z);
            r.into_boxed_slice()
        });
        Rendered {
            plain: plain.into_boxed_slice(),
            gzip,
            body_len: body.len(),
            gzip_body_len,
        }
    }
}

/// Every answer of a ceiling server.
pub struct Answers {
    list: Vec<Rendered>,
    pub summary: AnswersSummary,
}

impl Answers {
    /// Renders `spec`'s bodies for workload `w`, on as many threads as
    /// this process may use (a `taskset` applies).
    pub fn render(w: &Workload, spec: &CeilingSpec) -> Answers {
        let started = Instant::now();
        let n = spec.bodies.max(1);
        let threads = std::thread::available_parallelism()
            .map_or(1, |t| t.get())
            .min(n);
        let per = n.div_ceil(threads);
        let list: Vec<Rendered> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        (t * per..((t + 1) * per).min(n))
                            .map(|i| {
                                let body = lookup_body(w, i, spec.body_size);
                                Rendered::new(&body, spec.gzip_level, spec.gzip_min_size)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let gz: Vec<usize> = list
            .iter()
            .filter(|r| r.gzip.is_some())
            .map(|r| r.gzip_body_len)
            .collect();
        let summary = AnswersSummary {
            kind: spec.kind.to_string(),
            bodies: n,
            selection: if n == 1 {
                "the same body for every request".into()
            } else {
                format!("each request's body = its topic's number mod {n} (random without one)")
            },
            body_bytes_mean: list.iter().map(|r| r.body_len).sum::<usize>() as f64 / n as f64,
            body_bytes_min: list.iter().map(|r| r.body_len).min().unwrap_or(0),
            body_bytes_max: list.iter().map(|r| r.body_len).max().unwrap_or(0),
            gzip_level: spec.gzip_level,
            gzip_min_size: spec.gzip_min_size,
            gzip_bodies: gz.len(),
            gzip_body_bytes_mean: (!gz.is_empty())
                .then(|| gz.iter().sum::<usize>() as f64 / gz.len() as f64),
            rendered_bytes: list
                .iter()
                .map(|r| (r.plain.len() + r.gzip.as_ref().map_or(0, |g| g.len())) as u64)
                .sum(),
            render_s: started.elapsed().as_secs_f64(),
        };
        Answers { list, summary }
    }

    /// The response to the request whose head is `head`: its topic's
    /// body (a random one when it names no topic number), compressed when
    /// it accepts gzip and the body has a compressed rendering.
    pub fn pick(&self, head: &[u8], rng: &mut Rng) -> &[u8] {
        let n = self.list.len();
        let i = if n == 1 {
            0
        } else {
            topic_number(head).map_or_else(|| rng.below(n), |t| t % n)
        };
        let r = &self.list[i];
        match &r.gzip {
            Some(z) if head_accepts_gzip(head) => z,
            _ => &r.plain,
        }
    }
}

/// The end of the first complete request head in `buf` (just past its
/// blank line). Requests are assumed to carry no body (GET).
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The number that ends the value of the request's `topic=` parameter
/// (`/lookup?topic=bench.t00042` is 42), if it has one.
pub fn topic_number(head: &[u8]) -> Option<usize> {
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let target = head[..line_end].split(|&b| b == b' ').nth(1)?;
    let query = &target[target.iter().position(|&b| b == b'?')? + 1..];
    let value = query
        .split(|&b| b == b'&')
        .find_map(|p| p.strip_prefix(b"topic="))?;
    let digits = value
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 18 {
        return None;
    }
    std::str::from_utf8(&value[value.len() - digits..])
        .ok()?
        .parse()
        .ok()
}

/// Whether the request head's `Accept-Encoding` lines allow gzip.
pub fn head_accepts_gzip(head: &[u8]) -> bool {
    gzip::accepts_gzip(head.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(b"accept-encoding")
            .then(|| &line[colon + 1..])
    }))
}

/// Serves `listener` forever.
pub async fn serve(listener: TcpListener, answers: Arc<Answers>) {
    let mut accepted = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        accepted += 1;
        tokio::spawn(connection(stream, answers.clone(), accepted));
    }
}

async fn connection(mut stream: TcpStream, answers: Arc<Answers>, seed: u64) {
    let mut buf = Vec::with_capacity(4096);
    let mut out = Vec::new();
    let mut rng = Rng::new(seed);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut start = 0;
        let mut first: &[u8] = &[];
        let mut n = 0;
        while let Some(len) = head_end(&buf[start..]) {
            let answer = answers.pick(&buf[start..start + len], &mut rng);
            match n {
                0 => first = answer,
                1 => {
                    out.clear();
                    out.extend_from_slice(first);
                    out.extend_from_slice(answer);
                }
                _ => out.extend_from_slice(answer),
            }
            n += 1;
            start += len;
        }
        if n == 0 {
            if buf.len() > 64 * 1024 {
                return; // not HTTP
            }
            continue;
        }
        buf.drain(..start);
        let written = if n == 1 {
            stream.write_all(first).await
        } else {
            stream.write_all(&out).await
        };
        if written.is_err() {
            return;
        }
    }
}

/// The ceiling server running as a child process.
pub struct CeilingProcess {
    child: Child,
    pub addr: String,
    pub pid: u32,
    /// What it rendered.
    pub answers: AnswersSummary,
}

impl CeilingProcess {
    /// Starts `serve-ceiling` for `spec` at workload `w` (under `taskset
    /// -c CPUS` if given) and waits until it has rendered its answers and
    /// listens.
    pub fn spawn(
        w: &Workload,
        spec: &CeilingSpec,
        cpus: Option<&str>,
    ) -> Result<CeilingProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating the bench binary: {e}"))?;
        let mut cmd = match cpus {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(c).arg(&exe);
                cmd
            }
            None => Command::new(&exe),
        };
        cmd.args(["serve-ceiling", "--listen", "127.0.0.1:0"])
            .args(serve_args(w, spec))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting the ceiling server: {e}"))?;
        let pid = child.id();
        let (summary, line) = match child.stdout.take() {
            Some(o) => {
                let mut o = BufReader::new(o);
                let mut first = String::new();
                let mut second = String::new();
                let _ = o.read_line(&mut first);
                let _ = o.read_line(&mut second);
                (first, second)
            }
            None => Default::default(),
        };
        let answers = summary
            .trim()
            .strip_prefix("answers ")
            .and_then(|j| serde_json::from_str::<AnswersSummary>(j).ok());
        match (answers, line.trim().strip_prefix("listening on ")) {
            (Some(answers), Some(addr)) => Ok(CeilingProcess {
                child,
                addr: addr.to_string(),
                pid,
                answers,
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "the ceiling server did not start (said {:?})",
                    format!("{summary}{line}")
                ))
            }
        }
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `serve-ceiling` options that make it render `spec` at `w`.
pub fn serve_args(w: &Workload, spec: &CeilingSpec) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--kind".into(),
        spec.kind.into(),
        "--bodies".into(),
        spec.bodies.to_string(),
        "--gzip-level".into(),
        spec.gzip_level.to_string(),
        "--gzip-min-size".into(),
        spec.gzip_min_size.to_string(),
        "--nodes".into(),
        w.nodes.to_string(),
        "--topics-per-node".into(),
        w.topics_per_node.to_string(),
        "--topic-universe".into(),
        w.topic_universe.to_string(),
        "--channels".into(),
        w.channels.to_string(),
        "--topic-prefix".into(),
        w.topic_prefix.clone(),
    ];
    if let Some(s) = spec.body_size {
        a.extend(["--body-size".into(), s.to_string()]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{self, Carrier};
    use std::time::Duration;

    fn small() -> Workload {
        Workload {
            nodes: 10,
            topics_per_node: 10,
            topic_universe: 20,
            channels: 2,
            topic_prefix: "bench".into(),
        }
    }

    fn large() -> Workload {
        Workload {
            nodes: 500,
            topics_per_node: 10_000,
            topic_universe: 20_000,
            channels: 4,
            topic_prefix: "bench".into(),
        }
    }

    fn spec(bodies: usize, body_size: Option<usize>, gzip_min_size: usize) -> CeilingSpec {
        CeilingSpec {
            kind: if bodies == 1 { "single" } else { "distinct" },
            bodies,
            body_size,
            gzip_level: 1,
            gzip_min_size,
        }
    }

    fn stable(w: &Workload, topic: usize) -> Vec<Carrier> {
        w.producers_of(topic)
            .map(|node| Carrier {
                node,
                must_appear: true,
                must_not_appear: false,
                may_repeat: false,
            })
            .collect()
    }

    #[test]
    fn bodies_are_the_topics_real_answers_and_all_different() {
        let w = small();
        let bodies: Vec<Vec<u8>> = (0..20).map(|t| lookup_body(&w, t, None)).collect();
        for (t, b) in bodies.iter().enumerate() {
            assert_eq!(b.len(), w.lookup_answer_size(t), "topic {t}");
            let problems = check::check_lookup(&w, t, b, &stable(&w, t));
            assert!(problems.is_empty(), "topic {t}: {problems:?}");
        }
        // Topics 0 and 1 have the same producers, yet other remote ports.
        let distinct: std::collections::BTreeSet<&Vec<u8>> = bodies.iter().collect();
        assert_eq!(distinct.len(), 20);
        // Beyond the registered topics the bodies go round again.
        let b = lookup_body(&w, 23, None);
        assert!(check::check_lookup(&w, 3, &b, &stable(&w, 3)).is_empty());
    }

    #[test]
    fn a_large_answer_compresses_like_the_servers() {
        // 48,814 B -> about 4,500 B at level 1 for the server's answers.
        let w = large();
        let body = lookup_body(&w, 7, None);
        assert_eq!(body.len(), w.lookup_answer_size(7));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["producers"].as_array().unwrap().len(), 250);
        let z = gzip::compress(&body, 1);
        let ratio = body.len() as f64 / z.len() as f64;
        assert!(
            (5.0..20.0).contains(&ratio),
            "{} -> {}",
            body.len(),
            z.len()
        );
    }

    #[test]
    fn bodies_of_a_given_size() {
        let w = small();
        for size in [0, 5, 9, 10, 40, 80, 300, 1_000, 2_048, 48_814] {
            for index in [0, 3] {
                let b = lookup_body(&w, index, Some(size));
                assert_eq!(b.len(), size, "size {size}");
                if size >= 10 {
                    let v: serde_json::Value =
                        serde_json::from_slice(&b).unwrap_or_else(|e| panic!("size {size}: {e}"));
                    if size >= 300 {
                        assert!(!v["producers"].as_array().unwrap().is_empty());
                    }
                }
            }
        }
        let r = Rendered::new(&lookup_body(&w, 0, Some(2_048)), 1, 1024);
        let head_end = head_end(&r.plain).unwrap();
        let head = crate::httpc::parse_head(&r.plain[..head_end]).unwrap();
        assert_eq!(head.content_length, Some(2_048));
        assert_eq!(head.coding, crate::httpc::Coding::Identity);
        let z = r.gzip.as_ref().unwrap();
        let zend = super::head_end(z).unwrap();
        let zhead = crate::httpc::parse_head(&z[..zend]).unwrap();
        assert_eq!(zhead.coding, crate::httpc::Coding::Gzip);
        assert_eq!(zhead.content_length, Some(z.len() - zend));
        assert!(String::from_utf8_lossy(&z[..zend]).contains("vary: accept-encoding\r\n"));
        let mut out = Vec::new();
        gzip::Gunzip::new().decode(&z[zend..], &mut out).unwrap();
        assert_eq!(&out[..], &r.plain[head_end..]);
    }

    #[test]
    fn topic_numbers_and_accept_encoding_of_request_heads() {
        let head = |target: &str, extra: &str| {
            format!("GET {target} HTTP/1.1\r\nHost: h\r\n{extra}\r\n").into_bytes()
        };
        assert_eq!(
            topic_number(&head("/lookup?topic=bench.t00042", "")),
            Some(42)
        );
        assert_eq!(topic_number(&head("/lookup?x=1&topic=t7&y=2", "")), Some(7));
        assert_eq!(
            topic_number(&head("/channels?topic=bench.t19", "")),
            Some(19)
        );
        assert_eq!(topic_number(&head("/lookup?topic=orders", "")), None);
        assert_eq!(topic_number(&head("/nodes", "")), None);
        assert_eq!(topic_number(&head("/lookup?topic=", "")), None);
        assert_eq!(
            topic_number(&head("/lookup?topic=1234567890123456789", "")),
            None
        );
        assert!(head_accepts_gzip(&head("/", "Accept-Encoding: gzip\r\n")));
        assert!(head_accepts_gzip(&head(
            "/",
            "accept-encoding:gzip, deflate\r\n"
        )));
        assert!(head_accepts_gzip(&head(
            "/",
            "ACCEPT-ENCODING: br\r\nAccept-Encoding: gzip\r\n"
        )));
        assert!(!head_accepts_gzip(&head("/", "")));
        assert!(!head_accepts_gzip(&head(
            "/",
            "Accept-Encoding: identity\r\n"
        )));
        assert!(!head_accepts_gzip(&head(
            "/",
            "Accept-Encoding: gzip;q=0\r\n"
        )));
        assert!(!head_accepts_gzip(&head(
            "/",
            "X-Accept-Encoding: gzip\r\n"
        )));
        assert!(!head_accepts_gzip(&head("/?Accept-Encoding: gzip", "")));
    }

    #[test]
    fn each_request_gets_its_topics_body_in_its_encoding() {
        let w = small();
        let a = Answers::render(&w, &spec(20, None, 0));
        assert_eq!(a.list.len(), 20);
        assert_eq!(a.summary.bodies, 20);
        assert_eq!(a.summary.gzip_bodies, 20);
        let mut rng = Rng::new(1);
        let req = |topic: &str, gzip: bool| {
            format!(
                "GET /lookup?topic={topic} HTTP/1.1\r\nHost: h\r\n{}\r\n",
                if gzip {
                    "Accept-Encoding: gzip\r\n"
                } else {
                    ""
                }
            )
            .into_bytes()
        };
        let same = |x: &[u8], y: &[u8]| std::ptr::eq(x, y);
        for t in [0, 7, 19] {
            let plain = a.pick(&req(&format!("bench.t{t:05}"), false), &mut rng);
            assert!(same(plain, &a.list[t].plain));
            let z = a.pick(&req(&format!("bench.t{t:05}"), true), &mut rng);
            assert!(same(z, a.list[t].gzip.as_deref().unwrap()));
            // Topic numbers past N go round.
            let again = a.pick(&req(&format!("bench.t{:05}", t + 20), false), &mut rng);
            assert!(same(again, &a.list[t].plain));
        }
        // Without a topic number: random, over every body.
        let mut hits = [0u32; 20];
        for _ in 0..4000 {
            let r = a.pick(b"GET /nodes HTTP/1.1\r\n\r\n", &mut rng);
            let i = a.list.iter().position(|x| same(r, &x.plain)).unwrap();
            hits[i] += 1;
        }
        assert!(hits.iter().all(|&h| h > 100), "{hits:?}");

        // Under the size threshold, plain for everyone; one body for all
        // with the single-body ceiling.
        let a = Answers::render(&w, &spec(1, None, 1024));
        assert_eq!((a.summary.bodies, a.summary.gzip_bodies), (1, 0));
        assert!(a.summary.gzip_body_bytes_mean.is_none());
        for t in ["bench.t00003", "bench.t00011"] {
            assert!(same(a.pick(&req(t, true), &mut rng), &a.list[0].plain));
        }
        assert!(
            a.summary
                .text()
                .contains("none gzip-compressed (all under 1,024 B)")
        );
        let a = Answers::render(&w, &spec(1, Some(5_000), 1024));
        assert!(same(
            a.pick(&req("bench.t00003", true), &mut rng),
            a.list[0].gzip.as_deref().unwrap()
        ));
        assert_eq!(a.summary.body_bytes_mean, 5_000.0);
    }

    #[tokio::test]
    async fn serves_keep_alive_plain_gzip_and_pipelined() {
        let w = small();
        let answers = Arc::new(Answers::render(&w, &spec(20, None, 0)));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(serve(l, answers.clone()));
        let limit = Duration::from_secs(5);
        let mut plain = crate::httpc::HttpConn::plain(&addr);
        let t = crate::httpc::Target::new(&crate::tls::Endpoint::plain(&addr), None, None, true)
            .unwrap();
        let mut gz = crate::httpc::HttpConn::new(t);
        for topic in [3, 4, 3] {
            let path = format!("/lookup?topic={}", w.topic_name(topic));
            let want = lookup_body(&w, topic, None);
            let r = plain.get(&path, limit).await.unwrap();
            assert_eq!((r.status, r.gzip, r.body), (200, false, &want[..]));
            let r = gz.get(&path, limit).await.unwrap();
            assert_eq!((r.status, r.gzip, r.body), (200, true, &want[..]));
            assert!(r.wire_len < want.len());
        }
        assert_eq!((plain.connects, gz.connects), (1, 1));

        // Three requests in one write: three answers, in order.
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            b"GET /lookup?topic=bench.t00001 HTTP/1.1\r\n\r\n\
              GET /lookup?topic=bench.t00002 HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n\
              GET /lookup?topic=bench.t00001 HTTP/1.1\r\n\r\n",
        )
        .await
        .unwrap();
        let want: Vec<u8> = [
            &answers.list[1].plain[..],
            answers.list[2].gzip.as_deref().unwrap(),
            &answers.list[1].plain[..],
        ]
        .concat();
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(limit, s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(got == want);
    }

    #[test]
    fn the_child_is_told_the_workload_and_the_spec() {
        let w = small();
        let a = serve_args(&w, &spec(20, Some(300), 1024)).join(" ");
        assert_eq!(
            a,
            "--kind distinct --bodies 20 --gzip-level 1 --gzip-min-size 1024 --nodes 10 \
             --topics-per-node 10 --topic-universe 20 --channels 2 --topic-prefix bench \
             --body-size 300"
        );
        let s = AnswersSummary {
            kind: "distinct".into(),
            bodies: 20_000,
            selection: "x".into(),
            body_bytes_mean: 48_814.0,
            body_bytes_min: 48_814,
            body_bytes_max: 48_814,
            gzip_level: 1,
            gzip_min_size: 1024,
            gzip_bodies: 20_000,
            gzip_body_bytes_mean: Some(4_492.0),
            rendered_bytes: 1 << 30,
            render_s: 3.5,
        };
        let line = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<AnswersSummary>(&line).unwrap(), s);
        assert_eq!(
            s.text(),
            "20,000 bodies of 48,814 B (mean; 48,814-48,814), x; gzip level 1: 20,000 of them \
             4,492 B (mean); 1024.0 MiB rendered in 3.50s"
        );
    }
}

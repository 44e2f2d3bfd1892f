//! gzip answers (`Accept-Encoding: gzip`), black-box: the real binary,
//! real sockets. Clients that do not ask get exactly today's bytes; those
//! that ask get the same bytes compressed, with `Vary: Accept-Encoding`.

mod common;

use std::io::Read;

use common::cluster::Nsqd;
use common::{HttpResponse, Server, http_request};

fn get(server: &Server, target: &str, accept: Option<&str>) -> HttpResponse {
    let header = accept.map(|a| ("Accept-Encoding", a));
    http_request(server.http_addr(), "GET", target, header.as_slice(), None).expect("HTTP request")
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

fn metric(server: &Server, series: &str) -> f64 {
    common::cluster::metric(server, series).unwrap_or_else(|| panic!("no {series}"))
}

/// `big` on 12 nsqd (an answer of ~2.5 KB), `small` on one (~250 bytes).
fn fleet(server: &Server) -> Vec<Nsqd> {
    let mut fleet = Vec::new();
    for i in 0..12 {
        let mut n = Nsqd::connect(server, &format!("nsqd-{i:02}.example.internal"), 4150 + i);
        n.register("big", Some("ch"));
        if i == 0 {
            n.register("small", None);
        }
        fleet.push(n);
    }
    fleet
}

#[test]
fn gzip_clients_get_the_same_bytes_compressed_and_others_exactly_todays() {
    let server = Server::start();
    let _fleet = fleet(&server);
    for target in ["/lookup?topic=big", "/nodes", "/debug", "/metrics"] {
        let plain = get(&server, target, None);
        assert_eq!(plain.status, 200);
        assert_eq!(plain.header("content-encoding"), None, "{target}");
        assert_eq!(plain.header("vary"), None, "{target}: today's headers");
        for accept in ["gzip", "gzip, deflate", "deflate, gzip;q=0.8", "*"] {
            let gz = get(&server, target, Some(accept));
            assert_eq!(gz.status, 200);
            assert_eq!(
                gz.header("content-encoding"),
                Some("gzip"),
                "{target} {accept}"
            );
            assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
            assert_eq!(gz.header("content-type"), plain.header("content-type"));
            assert!(gz.body.len() < plain.body.len(), "{target}");
            if target != "/metrics" {
                assert_eq!(gunzip(&gz.body), plain.body, "{target} {accept}");
            }
        }
        for accept in [
            "identity",
            "gzip;q=0",
            "deflate, br",
            "gzip;q=0.5, identity",
            "*;q=0",
        ] {
            let r = get(&server, target, Some(accept));
            assert_eq!(r.header("content-encoding"), None, "{target} {accept}");
            if target != "/metrics" {
                assert_eq!(r.body, plain.body);
            }
        }
    }
    // Small answers stay plain: below --http-compression-min-size (1024).
    for target in [
        "/lookup?topic=small",
        "/topics",
        "/channels?topic=big",
        "/info",
    ] {
        let r = get(&server, target, Some("gzip"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), None, "{target}");
        assert!(r.body.len() < 1024);
    }
    assert!(metric(&server, "nsqlookupd_http_gzip_responses_total") >= 16.0);
    assert!(metric(&server, "nsqlookupd_http_gzip_saved_bytes_total") > 10_000.0);
}

#[test]
fn a_cached_answer_is_compressed_once_per_change() {
    let server = Server::start();
    let mut fleet = fleet(&server);
    let renders = |s: &Server| metric(s, "nsqlookupd_gzip_renders_total");
    let before = renders(&server);
    // The first gzip reader since the change gets it plain (an answer
    // that changes before it is read again is never compressed), the
    // second compresses it, the rest get those bytes.
    let plain = get(&server, "/lookup?topic=big", Some("gzip"));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(renders(&server), before);
    let first = get(&server, "/lookup?topic=big", Some("gzip"));
    assert_eq!(first.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&first.body), plain.body);
    for _ in 0..20 {
        let r = get(&server, "/lookup?topic=big", Some("gzip"));
        assert_eq!(r.body, first.body, "the same cached bytes");
        let plain = get(&server, "/lookup?topic=big", None);
        assert_eq!(gunzip(&r.body), plain.body);
    }
    assert_eq!(renders(&server), before + 1.0, "compressed once");
    // A change: compressed again, once, and it shows the change.
    fleet[3].unregister("big", None);
    let after = get(&server, "/lookup?topic=big", Some("gzip"));
    assert_eq!(
        after.header("content-encoding"),
        None,
        "first reader: plain"
    );
    let v: serde_json::Value = serde_json::from_slice(&after.body).unwrap();
    assert_eq!(common::producer_addresses(&v).len(), 11);
    for _ in 0..3 {
        let again = get(&server, "/lookup?topic=big", Some("gzip"));
        assert_eq!(gunzip(&again.body), after.body);
    }
    assert_eq!(renders(&server), before + 2.0);
}

#[test]
fn compression_off_sends_every_answer_plain() {
    let server = Server::start_with(["--http-compression=false"]);
    let _fleet = fleet(&server);
    for target in ["/lookup?topic=big", "/nodes", "/debug", "/metrics"] {
        let r = get(&server, target, Some("gzip"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), None, "{target}");
        assert_eq!(r.header("vary"), None);
    }
    let text = get(&server, "/metrics", None).text();
    assert!(
        !text.contains("nsqlookupd_gzip_renders"),
        "no compression series when off"
    );
    // A lower threshold compresses small answers too.
    let low = Server::start_with(["--http-compression-min-size=1"]);
    let mut n = Nsqd::connect(&low, "nsqd-0", 4150);
    n.register("small", None);
    get(&low, "/lookup?topic=small", Some("gzip")); // the first: plain
    let r = get(&low, "/lookup?topic=small", Some("gzip"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let plain = get(&low, "/lookup?topic=small", None);
    assert_eq!(gunzip(&r.body), plain.body);
}

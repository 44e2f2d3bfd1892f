//! Fuzz target: a request target (`path?query`) as bytes → lossy UTF-8 →
//! the router on the path and query-string parsing on the query.
//!
//! Checked besides "no panic":
//! - `Params::parse` agrees with `go_reference`, Go's `url.ParseQuery`
//!   written Go's way (error or not, and the first value of each name);
//! - a redirect always points at a path that routes to an endpoint with
//!   the same method.

#![no_main]

use hyper::Method;
use libfuzzer_sys::fuzz_target;

use nsqlookupd::http::query::{Params, go_reference};
use nsqlookupd::http::router::{Decision, clean_path, route};

const METHODS: [Method; 4] = [Method::GET, Method::POST, Method::OPTIONS, Method::HEAD];

fuzz_target!(|data: &[u8]| {
    let target = String::from_utf8_lossy(data);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));

    // Query parameters.
    let parsed = Params::parse(query);
    let reference = go_reference::parse_query(query);
    assert_eq!(parsed.is_ok(), reference.is_some(), "query {query:?}");
    if let (Ok(params), Some(pairs)) = (&parsed, &reference) {
        let mut names = vec!["topic", "channel", "node", ""];
        // Also every decoded name that is UTF-8.
        names.extend(
            pairs
                .iter()
                .filter_map(|(k, _)| std::str::from_utf8(k).ok()),
        );
        for name in names {
            let expected = pairs
                .iter()
                .find(|(k, _)| k == name.as_bytes())
                .map(|(_, v)| &v[..]);
            assert_eq!(params.get(name), expected, "{name:?} in {query:?}");
        }
    }

    // Routing.
    let _ = clean_path(path);
    for method in &METHODS {
        match route(method, path) {
            Decision::Redirect { path: to, .. } => {
                assert!(
                    matches!(route(method, to), Decision::Handle(_)),
                    "{method} {path:?} redirects to {to:?}, which does not route"
                );
            }
            Decision::Handle(_)
            | Decision::Options { .. }
            | Decision::MethodNotAllowed { .. }
            | Decision::NotFound => {}
        }
    }
});

//! Which endpoint a request goes to, with the behaviour of the router the
//! original uses (julienschmidt/httprouter 1.3, as configured by nsqlookupd):
//!
//! - a path with a trailing slash, or in the wrong case, or unclean
//!   (`//lookup`, `/a/../lookup`) is redirected to the canonical route:
//!   301 for GET, 307 for other methods that have routes;
//! - `OPTIONS` on a known path answers 200 with `Allow`;
//! - a known path with another method answers 405 with `Allow`;
//! - anything else is 404.

use hyper::Method;

use crate::access::Class;

/// The endpoints of spec section 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Ping,
    Info,
    Debug,
    Lookup,
    Topics,
    Channels,
    Nodes,
    TopicCreate,
    TopicDelete,
    ChannelCreate,
    ChannelDelete,
    TopicTombstone,
    /// Prometheus metrics (not in the original).
    Metrics,
}

impl Endpoint {
    /// Its position in [`ROUTES`] (and in the metrics' route labels,
    /// [`crate::stats::HTTP_ROUTES`]).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The access rule it falls under (see `crate::access`).
    pub const fn class(self) -> Class {
        match self {
            Endpoint::Ping => Class::Open,
            Endpoint::Info
            | Endpoint::Debug
            | Endpoint::Lookup
            | Endpoint::Topics
            | Endpoint::Channels
            | Endpoint::Nodes => Class::Read,
            Endpoint::TopicCreate
            | Endpoint::TopicDelete
            | Endpoint::ChannelCreate
            | Endpoint::ChannelDelete
            | Endpoint::TopicTombstone => Class::Admin,
            Endpoint::Metrics => Class::Metrics,
        }
    }
}

/// The metrics index of requests that matched no route.
pub const OTHER: usize = ROUTES.len();

/// Every route, in [`Endpoint`] order: method, path, endpoint.
pub const ROUTES: &[(Method, &str, Endpoint)] = &[
    (Method::GET, "/ping", Endpoint::Ping),
    (Method::GET, "/info", Endpoint::Info),
    (Method::GET, "/debug", Endpoint::Debug),
    (Method::GET, "/lookup", Endpoint::Lookup),
    (Method::GET, "/topics", Endpoint::Topics),
    (Method::GET, "/channels", Endpoint::Channels),
    (Method::GET, "/nodes", Endpoint::Nodes),
    (Method::POST, "/topic/create", Endpoint::TopicCreate),
    (Method::POST, "/topic/delete", Endpoint::TopicDelete),
    (Method::POST, "/channel/create", Endpoint::ChannelCreate),
    (Method::POST, "/channel/delete", Endpoint::ChannelDelete),
    (Method::POST, "/topic/tombstone", Endpoint::TopicTombstone),
    (Method::GET, "/metrics", Endpoint::Metrics),
];

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Handle(Endpoint),
    /// Redirect to this canonical path (the query string is kept).
    Redirect {
        path: &'static str,
        permanent: bool,
    },
    /// Answer an OPTIONS request with this `Allow` value.
    Options {
        allow: String,
    },
    /// 405 with this `Allow` value.
    MethodNotAllowed {
        allow: String,
    },
    NotFound,
}

fn exact(method: &Method, path: &str) -> Option<Endpoint> {
    ROUTES
        .iter()
        .find(|(m, p, _)| m == method && *p == path)
        .map(|(_, _, e)| *e)
}

/// The methods (other than `method`) that have a route at exactly `path`,
/// plus OPTIONS, sorted, joined as an `Allow` header value.
fn allowed(method: &Method, path: &str) -> Option<String> {
    let mut methods: Vec<&str> = ROUTES
        .iter()
        .filter(|(m, p, _)| m != method && *p == path)
        .map(|(m, _, _)| m.as_str())
        .collect();
    if methods.is_empty() {
        return None;
    }
    methods.push("OPTIONS");
    methods.sort_unstable();
    methods.dedup();
    Some(methods.join(", "))
}

/// httprouter's `CleanPath`: resolves `.`, `..` and repeated slashes,
/// keeping a trailing slash.
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    out.push('/');
    out.push_str(&parts.join("/"));
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    if trailing && out.len() > 1 {
        out.push('/');
    }
    out
}

/// Routes a request whose (percent-decoded) path is `path`.
pub fn route(method: &Method, path: &str) -> Decision {
    let has_routes = ROUTES.iter().any(|(m, _, _)| m == method);
    if has_routes {
        if let Some(endpoint) = exact(method, path) {
            return Decision::Handle(endpoint);
        }
        if path != "/" && method != Method::CONNECT {
            let permanent = method == Method::GET;
            // Trailing slash.
            if let Some(stripped) = path.strip_suffix('/')
                && let Some((_, p, _)) = ROUTES
                    .iter()
                    .find(|(m, p, _)| m == method && *p == stripped)
            {
                return Decision::Redirect { path: p, permanent };
            }
            // Case and clean-up, trailing slash allowed.
            let cleaned = clean_path(path);
            let cleaned = cleaned.strip_suffix('/').unwrap_or(&cleaned);
            if let Some((_, p, _)) = ROUTES
                .iter()
                .find(|(m, p, _)| m == method && p.eq_ignore_ascii_case(cleaned))
            {
                return Decision::Redirect { path: p, permanent };
            }
        }
    }
    if method == Method::OPTIONS {
        if let Some(allow) = allowed(method, path) {
            return Decision::Options { allow };
        }
    } else if let Some(allow) = allowed(method, path) {
        return Decision::MethodNotAllowed { allow };
    }
    Decision::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_index_is_its_metrics_label() {
        for (i, (_, path, endpoint)) in ROUTES.iter().enumerate() {
            assert_eq!(endpoint.index(), i);
            assert_eq!(crate::stats::HTTP_ROUTES[i], *path);
        }
        assert_eq!(crate::stats::HTTP_ROUTES[OTHER], "other");
        assert_eq!(OTHER, crate::stats::HTTP_ROUTES.len() - 1);
    }

    #[test]
    fn exact_routes() {
        assert_eq!(
            route(&Method::GET, "/lookup"),
            Decision::Handle(Endpoint::Lookup)
        );
        assert_eq!(
            route(&Method::POST, "/topic/tombstone"),
            Decision::Handle(Endpoint::TopicTombstone)
        );
    }

    #[test]
    fn redirects() {
        let r = |m: Method, p: &str| route(&m, p);
        assert_eq!(
            r(Method::GET, "/ping/"),
            Decision::Redirect {
                path: "/ping",
                permanent: true
            }
        );
        assert_eq!(
            r(Method::GET, "/LOOKUP"),
            Decision::Redirect {
                path: "/lookup",
                permanent: true
            }
        );
        assert_eq!(
            r(Method::GET, "//Lookup/"),
            Decision::Redirect {
                path: "/lookup",
                permanent: true
            }
        );
        assert_eq!(
            r(Method::POST, "/Topic/Create"),
            Decision::Redirect {
                path: "/topic/create",
                permanent: false
            }
        );
        assert_eq!(r(Method::GET, "/lookup/extra"), Decision::NotFound);
    }

    #[test]
    fn options_405_and_404() {
        assert_eq!(
            route(&Method::OPTIONS, "/lookup"),
            Decision::Options {
                allow: "GET, OPTIONS".into()
            }
        );
        assert_eq!(
            route(&Method::OPTIONS, "/topic/create"),
            Decision::Options {
                allow: "OPTIONS, POST".into()
            }
        );
        assert_eq!(route(&Method::OPTIONS, "/nope"), Decision::NotFound);
        assert_eq!(
            route(&Method::HEAD, "/ping"),
            Decision::MethodNotAllowed {
                allow: "GET, OPTIONS".into()
            }
        );
        assert_eq!(
            route(&Method::GET, "/topic/create"),
            Decision::MethodNotAllowed {
                allow: "OPTIONS, POST".into()
            }
        );
        assert_eq!(
            route(&Method::DELETE, "/nodes"),
            Decision::MethodNotAllowed {
                allow: "GET, OPTIONS".into()
            }
        );
        for p in ["/", "/nope", "/topic", "/lookup/extra"] {
            assert_eq!(route(&Method::GET, p), Decision::NotFound, "{p}");
        }
        assert_eq!(route(&Method::POST, "/nope"), Decision::NotFound);
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("/a/../lookup"), "/lookup");
        assert_eq!(clean_path("//lookup//"), "/lookup/");
        assert_eq!(clean_path("/./x/."), "/x/");
        assert_eq!(clean_path("/.."), "/");
    }
}

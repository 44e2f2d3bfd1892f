//! The rules of spec sections 2 and 3, one test each, on the registry alone.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(300);
const LIFETIME: Duration = Duration::from_secs(45);

fn registry() -> Arc<Registry> {
    Arc::new(Registry::new(RegistryOptions {
        inactive_producer_timeout: TIMEOUT,
        tombstone_lifetime: LIFETIME,
        ..RegistryOptions::default()
    }))
}

pub(super) fn peer(n: u16) -> PeerInfo {
    PeerInfo {
        remote_address: format!("127.0.0.1:{}", 5000 + n),
        hostname: format!("host-{n}"),
        broadcast_address: format!("node-{n}.example"),
        tcp_port: 4150,
        http_port: 4151,
        version: "1.3.0".into(),
        topology_zone: String::new(),
        topology_region: String::new(),
    }
}

/// (channels, broadcast addresses of producers) of a `/lookup`, sorted.
fn lookup(r: &Registry, topic: &str) -> Option<(Vec<String>, Vec<String>)> {
    let body = r.lookup(topic)?;
    let v: Value = serde_json::from_slice(&body).expect("lookup body is JSON");
    let mut channels: Vec<String> = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let mut producers: Vec<String> = v["producers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["broadcast_address"].as_str().unwrap().to_owned())
        .collect();
    channels.sort();
    producers.sort();
    Some((channels, producers))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn topics(r: &Registry) -> Vec<String> {
    r.topics().iter().map(|t| t.to_string()).collect()
}

fn channels(r: &Registry, topic: &str) -> Vec<String> {
    r.channels(topic).iter().map(|t| t.to_string()).collect()
}

fn node_topics(r: &Registry, broadcast: &str) -> Option<Vec<(String, bool)>> {
    let all = r.nodes();
    all.nodes
        .iter()
        .find(|n| n.producer.peer.broadcast_address == broadcast)
        .map(|n| all.topics_of(n).map(|(t, b)| (t.to_string(), b)).collect())
}

#[test]
fn identify_joins_the_client_key() {
    let r = registry();
    let a = r.identify(peer(1));
    let nodes = r.nodes().nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].producer.peer, peer(1));
    assert!(nodes[0].topics.is_empty());
    let debug = r.debug();
    assert_eq!(debug.len(), 1);
    assert_eq!(debug[0].registration.to_string(), "client::");
    drop(a);
    assert!(r.nodes().nodes.is_empty());
    assert!(r.debug().is_empty());
}

#[test]
fn register_adds_to_topic_and_channel_once() {
    let r = registry();
    let mut a = r.identify(peer(1));
    let first = a.register("t1", Some("c1"));
    assert_eq!(
        first,
        RegisterOutcome {
            channel_added: true,
            topic_added: true
        }
    );
    assert_eq!(a.register("t1", Some("c1")), RegisterOutcome::default());
    assert_eq!(a.register("t1", None), RegisterOutcome::default());
    assert_eq!(
        lookup(&r, "t1"),
        Some((strings(&["c1"]), strings(&["node-1.example"])))
    );
    let debug = r.debug();
    let keys: Vec<String> = debug.iter().map(|d| d.registration.to_string()).collect();
    assert_eq!(keys, ["channel:t1:c1", "client::", "topic:t1:"]);
    assert!(debug.iter().all(|d| d.producers.len() == 1));
}

#[test]
fn unknown_topic_is_not_found_and_has_no_channels() {
    let r = registry();
    assert_eq!(lookup(&r, "nope"), None);
    assert!(channels(&r, "nope").is_empty());
    assert!(topics(&r).is_empty());
}

#[test]
fn unregister_channel_keeps_the_key() {
    let r = registry();
    let mut a = r.identify(peer(1));
    a.register("t1", Some("c1"));
    a.register("t1", Some("c2"));
    a.unregister("t1", Some("c1"));
    assert_eq!(channels(&r, "t1"), ["c1", "c2"]);
    assert_eq!(
        lookup(&r, "t1"),
        Some((strings(&["c1", "c2"]), strings(&["node-1.example"])))
    );
    let keys: Vec<String> = r
        .debug()
        .iter()
        .map(|d| d.registration.to_string())
        .collect();
    assert_eq!(keys, ["channel:t1:c2", "client::", "topic:t1:"]);
}

#[test]
fn ephemeral_channel_goes_on_last_unregister_only() {
    let r = registry();
    let mut a = r.identify(peer(1));
    let mut b = r.identify(peer(2));
    a.register("t1", Some("e#ephemeral"));
    b.register("t1", Some("e#ephemeral"));
    a.register("t1", Some("normal"));
    a.unregister("t1", Some("e#ephemeral"));
    assert_eq!(channels(&r, "t1"), ["e#ephemeral", "normal"]);
    b.unregister("t1", Some("e#ephemeral"));
    a.unregister("t1", Some("normal"));
    assert_eq!(channels(&r, "t1"), ["normal"]);
}

#[test]
fn unregister_topic_leaves_its_channels_and_the_keys() {
    let r = registry();
    let mut a = r.identify(peer(1));
    a.register("t1", Some("c1"));
    a.register("t1", Some("c2"));
    a.register("t2", Some("c1"));
    a.unregister("t1", None);
    assert_eq!(lookup(&r, "t1"), Some((strings(&["c1", "c2"]), vec![])));
    assert_eq!(
        lookup(&r, "t2"),
        Some((strings(&["c1"]), strings(&["node-1.example"])))
    );
    assert_eq!(
        node_topics(&r, "node-1.example").unwrap(),
        [("t2".into(), false)]
    );
    let keys: Vec<String> = r
        .debug()
        .iter()
        .map(|d| d.registration.to_string())
        .collect();
    assert_eq!(keys, ["channel:t2:c1", "client::", "topic:t2:"]);
}

#[test]
fn ephemeral_topic_goes_on_last_unregister_leaving_its_channels() {
    let r = registry();
    let mut a = r.identify(peer(1));
    let mut b = r.identify(peer(2));
    a.register("t#ephemeral", Some("c1"));
    b.register("t#ephemeral", None);
    a.unregister("t#ephemeral", None);
    assert_eq!(
        lookup(&r, "t#ephemeral"),
        Some((strings(&["c1"]), strings(&["node-2.example"])))
    );
    b.unregister("t#ephemeral", None);
    assert_eq!(lookup(&r, "t#ephemeral"), None);
    assert!(topics(&r).is_empty());
    assert_eq!(channels(&r, "t#ephemeral"), ["c1"]);
}

#[test]
fn unregister_of_unknown_keys_creates_nothing() {
    let r = registry();
    let mut a = r.identify(peer(1));
    a.unregister("nothere", None);
    a.unregister("nothere", Some("c1"));
    a.unregister("gone#ephemeral", None);
    assert!(topics(&r).is_empty());
    assert!(channels(&r, "nothere").is_empty());
}

#[test]
fn disconnect_removes_the_producer_but_keeps_every_key() {
    let r = registry();
    let mut a = r.identify(peer(1));
    let mut b = r.identify(peer(2));
    a.register("t1", Some("c1"));
    a.register("t#ephemeral", Some("c#ephemeral"));
    b.register("t1", None);
    drop(a);
    assert_eq!(
        lookup(&r, "t1"),
        Some((strings(&["c1"]), strings(&["node-2.example"])))
    );
    assert_eq!(
        lookup(&r, "t#ephemeral"),
        Some((strings(&["c#ephemeral"]), vec![]))
    );
    assert_eq!(topics(&r), ["t#ephemeral", "t1"]);
    assert_eq!(r.nodes().nodes.len(), 1);
    drop(b);
    assert_eq!(lookup(&r, "t1"), Some((strings(&["c1"]), vec![])));
    assert!(r.debug().is_empty());
    assert_eq!(r.producer_count(), 0);
}

#[test]
fn tombstone_hides_one_topic_producer_pair_for_its_lifetime() {
    let r = registry();
    let mut a = r.identify(peer(1));
    let mut b = r.identify(peer(2));
    a.register("t1", Some("c1"));
    a.register("t2", None);
    b.register("t1", None);
    assert_eq!(r.tombstone("t1", "node-1.example:4151"), 1);
    assert_eq!(lookup(&r, "t1").unwrap().1, ["node-2.example"]);
    assert_eq!(
        lookup(&r, "t2").unwrap().1,
        ["node-1.example"],
        "other topics unaffected"
    );
    assert_eq!(
        node_topics(&r, "node-1.example").unwrap(),
        [("t1".into(), true), ("t2".into(), false)],
        "/nodes still lists a tombstoned producer"
    );

    r.clock().advance(LIFETIME);
    assert_eq!(
        lookup(&r, "t1").unwrap().1,
        ["node-1.example", "node-2.example"]
    );
    assert_eq!(
        node_topics(&r, "node-1.example").unwrap(),
        [("t1".into(), false), ("t2".into(), false)]
    );
    let debug = r.debug();
    let topic = debug
        .iter()
        .find(|d| d.registration.to_string() == "topic:t1:")
        .unwrap();
    let p = topic
        .producers
        .iter()
        .find(|p| p.producer.peer.broadcast_address == "node-1.example")
        .unwrap();
    assert!(p.tombstoned, "/debug keeps the flag after expiry");
    assert!(p.tombstoned_at > 0);
}

#[test]
fn tombstone_matches_broadcast_address_and_http_port_only() {
    let r = registry();
    let mut a = r.identify(peer(1));
    a.register("t1", None);
    assert_eq!(r.tombstone("t1", "node-1.example:4150"), 0);
    assert_eq!(r.tombstone("t1", "node-1.example"), 0);
    assert_eq!(r.tombstone("nope", "node-1.example:4151"), 0);
    assert_eq!(lookup(&r, "t1").unwrap().1, ["node-1.example"]);
    let debug = r.debug();
    assert!(debug.iter().all(|d| {
        d.producers
            .iter()
            .all(|p| !p.tombstoned && p.tombstoned_at == GO_ZERO_TIME_UNIX_NANOS)
    }));
}

#[test]
fn tombstone_survives_re_register_but_not_unregister() {
    let r = registry();
    let mut a = r.identify(peer(1));
    a.register("t1", None);
    r.tombstone("t1", "node-1.example:4151");
    a.register("t1", None);
    assert!(
        lookup(&r, "t1").unwrap().1.is_empty(),
        "re-REGISTER keeps it"
    );
    a.unregister("t1", None);
    a.register("t1", None);
    assert_eq!(
        lookup(&r, "t1").unwrap().1,
        ["node-1.example"],
        "UNREGISTER cleared it"
    );
}

#[test]
fn inactive_producers_are_hidden_until_they_ping() {
    let r = registry();
    let mut a = r.identify(peer(1));
    let mut b = r.identify(peer(2));
    a.register("t1", Some("c1"));
    b.register("t1", None);
    assert_eq!(lookup(&r, "t1").unwrap().1.len(), 2, "warms the cache");

    r.clock().advance(TIMEOUT / 2);
    a.ping();
    r.clock().advance(TIMEOUT / 2 + Duration::from_millis(1));
    b.register("t2", None); // REGISTER does not refresh
    assert_eq!(lookup(&r, "t1").unwrap().1, ["node-1.example"]);
    assert_eq!(lookup(&r, "t2").unwrap().1, Vec::<String>::new());
    assert_eq!(r.nodes().nodes.len(), 1);
    assert_eq!(
        r.debug().iter().map(|d| d.producers.len()).sum::<usize>(),
        6,
        "/debug does not filter"
    );

    b.ping();
    assert_eq!(
        lookup(&r, "t1").unwrap().1,
        ["node-1.example", "node-2.example"]
    );
    assert_eq!(lookup(&r, "t2").unwrap().1, ["node-2.example"]);
    assert_eq!(
        node_topics(&r, "node-2.example").unwrap(),
        [("t1".into(), false), ("t2".into(), false)]
    );
}

#[test]
fn activity_boundary_is_inclusive() {
    let r = registry();
    r.clock().freeze();
    let mut a = r.identify(peer(1));
    a.register("t1", None);
    let start = a.producer().last_update();
    let now = r.clock().now();
    r.clock().advance(Duration::from_nanos(
        duration_nanos(TIMEOUT) - (now - start),
    ));
    assert_eq!(
        lookup(&r, "t1").unwrap().1.len(),
        1,
        "exactly at the timeout: active"
    );
    r.clock().advance(Duration::from_nanos(1));
    assert!(
        lookup(&r, "t1").unwrap().1.is_empty(),
        "one ns later: inactive"
    );
}

#[test]
fn admin_keys_outlive_producers_and_deletes_cascade() {
    let r = registry();
    r.create_topic("t1");
    r.create_topic("t1");
    assert_eq!(lookup(&r, "t1"), Some((vec![], vec![])));
    assert!(
        r.debug().is_empty(),
        "keys without producers are not in /debug"
    );
    r.create_channel("t2", "c1");
    r.create_channel("t2", "c2#ephemeral");
    assert_eq!(topics(&r), ["t1", "t2"]);
    assert_eq!(channels(&r, "t2"), ["c1", "c2#ephemeral"]);
    assert!(r.delete_channel("t2", "c1"));
    assert!(!r.delete_channel("t2", "c1"));
    assert!(!r.delete_channel("nope", "c2#ephemeral"));
    assert_eq!(lookup(&r, "t2"), Some((strings(&["c2#ephemeral"]), vec![])));

    let mut a = r.identify(peer(1));
    a.register("t2", Some("c9"));
    r.delete_topic("t2");
    assert_eq!(lookup(&r, "t2"), None);
    assert!(channels(&r, "t2").is_empty());
    assert_eq!(node_topics(&r, "node-1.example").unwrap(), []);
    r.delete_topic("never");

    // the producer can come back to a deleted topic, and leaves cleanly
    a.register("t2", Some("c9"));
    assert_eq!(
        lookup(&r, "t2"),
        Some((strings(&["c9"]), strings(&["node-1.example"])))
    );
    drop(a);
    assert_eq!(lookup(&r, "t2"), Some((strings(&["c9"]), vec![])));
    assert_eq!(r.producer_count(), 0);
}

#[test]
fn deleting_a_registered_channel_keeps_the_topic_producer() {
    let r = registry();
    let mut a = r.identify(peer(1));
    a.register("t1", Some("c1"));
    assert!(r.delete_channel("t1", "c1"));
    assert_eq!(
        lookup(&r, "t1"),
        Some((vec![], strings(&["node-1.example"])))
    );
    a.unregister("t1", Some("c1"));
    assert!(channels(&r, "t1").is_empty());
}

#[test]
fn cached_lookups_follow_every_change() {
    let r = registry();
    let mut a = r.identify(peer(1));
    a.register("t1", None);
    let warm = |r: &Registry| r.topics.get("t1").unwrap().cache.is_warm(r.clock().now());
    assert!(!warm(&r));
    assert_eq!(lookup(&r, "t1").unwrap().1.len(), 1);
    assert!(warm(&r));
    let body = r.lookup("t1").unwrap();
    assert_eq!(
        body.as_ptr(),
        r.lookup("t1").unwrap().as_ptr(),
        "served from cache"
    );

    r.create_channel("t1", "c1");
    assert_eq!(lookup(&r, "t1").unwrap().0, ["c1"], "channel list change");
    let mut b = r.identify(peer(2));
    b.register("t1", None);
    assert_eq!(lookup(&r, "t1").unwrap().1.len(), 2, "producer added");
    drop(b);
    assert_eq!(lookup(&r, "t1").unwrap().1.len(), 1, "producer gone");
    r.delete_channel("t1", "c1");
    assert!(lookup(&r, "t1").unwrap().0.is_empty(), "channel deleted");
}

#[test]
fn counts_follow_keys_and_pairs() {
    use std::sync::atomic::Ordering::Relaxed;
    let r = registry();
    let c = |r: &Registry| {
        let n = r.counts();
        (
            n.topics.load(Relaxed),
            n.channels.load(Relaxed),
            n.registrations.load(Relaxed),
        )
    };
    let mut a = r.identify(peer(1));
    assert_eq!(c(&r), (0, 0, 1), "client key pair");
    a.register("t1", Some("c1"));
    a.register("t1", Some("c1"));
    a.register("t2", None);
    assert_eq!(c(&r), (2, 1, 4));
    r.delete_topic("t1"); // removes topic + channel keys with their pairs
    assert_eq!(c(&r), (1, 0, 2));
    r.create_channel("t3", "c#ephemeral");
    assert_eq!(c(&r), (2, 1, 2));
    drop(a); // must not count the deleted keys' pairs twice
    assert_eq!(c(&r), (2, 1, 0));
    r.lookup("t2");
    r.lookup("t2");
    assert_eq!(
        r.counts().lookup_renders.load(Relaxed),
        1,
        "second lookup cached"
    );
}

#[test]
fn a_producers_key_list_stays_bounded_through_churn() {
    let r = registry();
    let mut a = r.identify(peer(1));
    a.register("keep", Some("c"));
    for _ in 0..10_000 {
        a.register("t1", Some("c1"));
        a.unregister("t1", None);
    }
    assert_eq!(a.registration_count(), 3, "client + keep + keep/c");
    assert!(
        a.keys.entries.len() <= 2 * 3 + 32 + 2,
        "{} entries",
        a.keys.entries.len()
    );
    r.delete_topic("keep");
    a.register("t2", None);
    drop(a);
    assert_eq!(r.producer_count(), 0);
    assert_eq!(
        r.counts()
            .registrations
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(r.debug().is_empty());
}

#[test]
fn many_producers_many_topics() {
    let r = registry();
    let mut handles: Vec<_> = (0..20).map(|n| r.identify(peer(n))).collect();
    for (n, h) in handles.iter_mut().enumerate() {
        for t in 0..50 {
            if (t + n) % 2 == 0 {
                h.register(&format!("topic{t}"), Some("c"));
            }
        }
    }
    for t in 0..50 {
        assert_eq!(lookup(&r, &format!("topic{t}")).unwrap().1.len(), 10);
    }
    handles.truncate(10);
    for t in 0..50 {
        assert_eq!(lookup(&r, &format!("topic{t}")).unwrap().1.len(), 5);
    }
    assert_eq!(r.nodes().nodes.len(), 10);
    assert!(r.nodes().nodes.iter().all(|n| n.topics.len() == 25));
}

/// Renders `view` the way the HTTP handler does: cached body, or a fresh
/// one stored with the generation taken first.
fn view(r: &Registry, view: WholeView) -> (Bytes, bool) {
    match r.cached_view_as(view, Encoding::Identity) {
        Ok((body, _)) => (Bytes::copy_from_slice(&body), true),
        Err(generation) => {
            let (body, _) = r.make_view(view, Encoding::Identity, generation, |r| match view {
                WholeView::Topics => (Bytes::from(topics(r).join(",")), Nanos::MAX),
                WholeView::Nodes => {
                    let all = r.nodes();
                    let text: Vec<String> = all
                        .nodes
                        .iter()
                        .map(|n| {
                            let topics: Vec<_> = all.topics_of(n).collect();
                            format!("{}:{:?}", n.producer.peer.broadcast_address, topics)
                        })
                        .collect();
                    (Bytes::from(text.join(";")), all.valid_until)
                }
            });
            (Bytes::copy_from_slice(&body), false)
        }
    }
}

#[test]
fn cached_views_follow_every_change() {
    let r = registry();
    r.clock().freeze();
    let mut a = r.identify(peer(1));
    a.register("t1", Some("c1"));
    for v in [WholeView::Topics, WholeView::Nodes] {
        assert!(!view(&r, v).1, "first one is rendered");
        assert!(view(&r, v).1, "then served from the cache");
    }
    // Each kind of write makes both views render again.
    type Write<'a> = Box<dyn Fn(&mut ProducerHandle) + 'a>;
    let writes: Vec<(&str, Write)> = vec![
        (
            "register",
            Box::new(|a| {
                a.register("t2", None);
            }),
        ),
        ("unregister", Box::new(|a| a.unregister("t2", None))),
        ("create_topic", Box::new(|_| r.create_topic("t3"))),
        ("delete_topic", Box::new(|_| r.delete_topic("t3"))),
        (
            "tombstone",
            Box::new(|_| {
                r.tombstone("t1", "node-1.example:4151");
            }),
        ),
        ("identify", Box::new(|_| drop(r.identify(peer(2))))),
    ];
    for (what, write) in &writes {
        assert!(view(&r, WholeView::Nodes).1 && view(&r, WholeView::Topics).1);
        write(&mut a);
        assert!(!view(&r, WholeView::Nodes).1, "{what}: /nodes re-rendered");
        assert!(
            !view(&r, WholeView::Topics).1,
            "{what}: /topics re-rendered"
        );
    }
}

#[test]
fn cached_nodes_expire_with_tombstones_and_inactivity() {
    let r = registry();
    r.clock().freeze();
    let mut a = r.identify(peer(1));
    a.register("t1", None);
    r.tombstone("t1", "node-1.example:4151");
    let (tombstoned, _) = view(&r, WholeView::Nodes);
    assert!(view(&r, WholeView::Nodes).1);
    r.clock().advance(LIFETIME);
    let (expired, cached) = view(&r, WholeView::Nodes);
    assert!(!cached, "rendered again when the tombstone expired");
    assert_ne!(tombstoned, expired);
    assert_eq!(
        node_topics(&r, "node-1.example").unwrap(),
        [("t1".to_owned(), false)]
    );

    // Inactive: hidden at TIMEOUT + 1 ns after the last PING.
    assert!(view(&r, WholeView::Nodes).1);
    r.clock().advance(TIMEOUT - LIFETIME);
    assert!(
        view(&r, WholeView::Nodes).1,
        "still active at exactly the timeout"
    );
    r.clock().advance(Duration::from_nanos(1));
    let (gone, cached) = view(&r, WholeView::Nodes);
    assert!(!cached && gone.is_empty(), "inactive producer dropped");
    a.ping();
    let (back, cached) = view(&r, WholeView::Nodes);
    assert!(!cached && !back.is_empty(), "a PING brings it back at once");
}

#[test]
fn a_view_rendered_before_a_write_is_never_served() {
    let r = registry();
    let mut a = r.identify(peer(1));
    let generation = r
        .cached_view_as(WholeView::Topics, Encoding::Identity)
        .unwrap_err();
    let stale = Bytes::from(topics(&r).join(","));
    a.register("t1", None); // a writer changes the data meanwhile
    r.make_view(WholeView::Topics, Encoding::Identity, generation, |_| {
        (stale, Nanos::MAX)
    });
    assert!(
        r.cached_view_as(WholeView::Topics, Encoding::Identity)
            .is_err()
    );
    assert_eq!(view(&r, WholeView::Topics).0, "t1");
}

/// `topics` must hold exactly the topic keys of `registrations`, each with
/// the same entry, since `/lookup` reads only the former.
fn assert_topic_index_matches(r: &Registry) {
    let mut keys: Vec<(String, usize)> = r
        .registrations
        .iter()
        .filter(|e| e.key().category == Category::Topic)
        .map(|e| (e.key().key.to_string(), Arc::as_ptr(e.value()) as usize))
        .collect();
    let mut index: Vec<(String, usize)> = r
        .topics
        .iter()
        .map(|t| (t.key().to_string(), Arc::as_ptr(&t.value().entry) as usize))
        .collect();
    keys.sort();
    index.sort();
    assert_eq!(index, keys);
}

#[test]
fn the_topic_index_follows_every_topic_key() {
    let r = registry();
    // Longer than a bucket holds inline, so it lives on the heap.
    let long = "a_topic_name_longer_than_twenty_four_bytes";
    let mut a = r.identify(peer(1));
    a.register("t1", Some("c1"));
    a.register(long, None);
    a.register("gone#ephemeral", None);
    r.create_topic("admin");
    r.create_channel("via-channel", "c");
    assert_topic_index_matches(&r);
    assert_eq!(r.topics.len(), 5);
    assert!(lookup(&r, long).is_some());

    a.unregister("gone#ephemeral", None); // last producer of an ephemeral topic
    r.delete_topic("admin");
    r.delete_topic("t1");
    assert_topic_index_matches(&r);
    assert_eq!(r.topics.len(), 2);
    assert_eq!(lookup(&r, "t1"), None);
    assert_eq!(lookup(&r, "gone#ephemeral"), None);

    drop(a); // keys outlive their producers
    assert_topic_index_matches(&r);
    assert_eq!(lookup(&r, long), Some((vec![], vec![])));
}

#[test]
fn an_answer_rendered_before_a_topic_is_recreated_is_never_served() {
    let r = registry();
    let mut a = r.identify(peer(1));
    a.register("t", None);
    let now = r.clock().now();
    // A reader takes the generation of the cold cache and renders...
    let generation = r.topics.get("t").unwrap().cache.get(now).unwrap_err();
    let rendered = r.lookup_uncached("t").unwrap();
    // ...the key is deleted and created again, empty...
    r.delete_topic("t");
    r.create_topic("t");
    // ...and the reader stores what it rendered under the name.
    r.topics
        .get("t")
        .unwrap()
        .cache
        .store(generation, 0, u64::MAX, rendered, &r.lookup_budget);
    assert_eq!(lookup(&r, "t"), Some((vec![], vec![])));
}

/// gzip renderings: for any registry and any interleaving of gzip and
/// plain readers with changes between them, the compressed answer
/// decompresses to exactly the plain one, and neither encoding evicts the
/// other.
mod compressed {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn tiny_threshold() -> Arc<Registry> {
        Arc::new(Registry::new(RegistryOptions {
            compression: Compression {
                gzip_level: Some(1),
                min_size: 64,
            },
            ..RegistryOptions::default()
        }))
    }

    #[derive(Debug, Clone)]
    enum Step {
        Register(u16, u8),
        Unregister(u16, u8),
        Channel(u8, u8),
        Read(u8, bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u16..12, 0u8..4).prop_map(|(p, t)| Step::Register(p, t)),
            (0u16..12, 0u8..4).prop_map(|(p, t)| Step::Unregister(p, t)),
            (0u8..4, 0u8..3).prop_map(|(t, c)| Step::Channel(t, c)),
            (0u8..4, any::<bool>()).prop_map(|(t, g)| Step::Read(t, g)),
        ]
    }

    /// A PING moves a producer's deadline later without changing the
    /// answer: a plain reader then adds its encoding to the kept gzip
    /// rendering instead of replacing it; once the rendering's deadline has
    /// passed, nothing is added to it (a stale answer is never served).
    #[test]
    fn a_ping_keeps_both_encodings_and_an_expired_rendering_gets_none() {
        let r = tiny_threshold();
        r.clock().freeze();
        let mut nodes: Vec<_> = (0..6).map(|n| r.identify(peer(n))).collect();
        for n in &mut nodes {
            n.register("t", None);
        }
        let renders = || {
            r.counts()
                .gzip_renders
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        // The first gzip reader since the change gets it plain, the
        // second compresses it.
        assert_eq!(
            r.lookup_as("t", Encoding::Gzip).unwrap().1,
            Encoding::Identity
        );
        assert_eq!(renders(), 0);
        assert_eq!(r.lookup_as("t", Encoding::Gzip).unwrap().1, Encoding::Gzip);
        assert_eq!(renders(), 1);
        r.clock().advance(Duration::from_secs(10));
        nodes[0].ping();
        let plain = r.lookup("t").unwrap();
        assert_eq!(r.lookup_as("t", Encoding::Gzip).unwrap().1, Encoding::Gzip);
        assert_eq!(renders(), 1, "the gzip rendering was kept");
        assert!(
            std::ptr::eq(r.lookup("t").unwrap().as_ptr(), plain.as_ptr()),
            "plain kept too"
        );
        // Past the rendering's deadline (producers 1..5 last seen at 0):
        // only the producer that pinged is left, in both encodings.
        r.clock().advance(TIMEOUT);
        let fresh = r.lookup("t").unwrap();
        let v: Value = serde_json::from_slice(&fresh).unwrap();
        assert_eq!(v["producers"].as_array().unwrap().len(), 1, "{v}");
        let (gz, e) = r.lookup_as("t", Encoding::Gzip).unwrap();
        if e == Encoding::Gzip {
            assert_eq!(gunzip(&gz), &fresh[..]);
        } else {
            assert_eq!(&gz[..], &fresh[..]);
        }
    }

    /// A cache too small for both encodings of every answer keeps the
    /// compressed ones: a gzip reader's answer takes its plain body's
    /// place, and a compressed whole view takes the room of plain lookup
    /// bodies; plain readers are still answered right, rendered afresh.
    #[test]
    fn a_full_cache_keeps_compressed_answers_before_plain_ones() {
        let r = Arc::new(Registry::new(RegistryOptions {
            compression: Compression {
                gzip_level: Some(1),
                min_size: 64,
            },
            lookup_cache_size: 7_000,
            ..RegistryOptions::default()
        }));
        let mut nodes: Vec<_> = (0..8).map(|n| r.identify(peer(n))).collect();
        for t in 0..6 {
            for n in &mut nodes {
                n.register(&format!("t{t}"), None);
            }
        }
        let plain: Vec<Bytes> = (0..6)
            .map(|t| r.lookup_uncached(&format!("t{t}")).unwrap())
            .collect();
        let plain_len = plain[0].len();
        assert!(
            plain_len * 6 > 7_000 && plain_len * 4 < 7_000,
            "{plain_len}"
        );
        let gz_renders = || {
            r.counts()
                .gzip_renders
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        // Plain readers fill the cache (not every topic fits)...
        for (t, p) in plain.iter().enumerate() {
            assert_eq!(&r.lookup(&format!("t{t}")).unwrap()[..], &p[..]);
        }
        // ...then gzip readers: every compressed answer is kept, made once
        // (by the second gzip reader where the first found none cached).
        for round in 0..4 {
            for (t, p) in plain.iter().enumerate() {
                let (body, e) = r.lookup_as(&format!("t{t}"), Encoding::Gzip).unwrap();
                match e {
                    Encoding::Gzip => assert_eq!(&gunzip(&body)[..], &p[..]),
                    Encoding::Identity => {
                        assert!(round == 0, "t{t} round {round}: plain");
                        assert_eq!(&body[..], &p[..]);
                    }
                }
                assert!(body.is_cached() || round < 2, "t{t} round {round}");
            }
            if round > 0 {
                assert_eq!(gz_renders(), 6, "round {round}: compressed once each");
            }
        }
        assert!(r.lookup_cache_bytes() <= 7_000);
        // Plain readers still get the right answer.
        for (t, p) in plain.iter().enumerate() {
            assert_eq!(&r.lookup(&format!("t{t}")).unwrap()[..], &p[..]);
        }
        // A compressed /nodes bigger than the room left is kept too, in
        // the room of plain lookup bodies.
        // (Bytes that do not compress, so that it needs the room.)
        let mut x = 1u32;
        let nodes_plain: Bytes = (0..3_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                b'a' + (x >> 16) as u8 % 26
            })
            .collect::<Vec<u8>>()
            .into();
        assert!(r.lookup_cache_bytes() + 2_000 > 7_000, "the cache is full");
        let want = Encoding::Gzip;
        let generation = r.cached_view_as(WholeView::Nodes, want).unwrap_err();
        let (body, e) = r.make_view(WholeView::Nodes, want, generation, |_| {
            (nodes_plain.clone(), Nanos::MAX)
        });
        assert_eq!(e, Encoding::Gzip);
        assert_eq!(&gunzip(&body)[..], &nodes_plain[..]);
        let (again, _) = r.cached_view_as(WholeView::Nodes, want).expect("kept");
        assert!(std::ptr::eq(again.as_ptr(), body.as_ptr()));
        for t in 0..6 {
            let (gz, _) = r.lookup_as(&format!("t{t}"), Encoding::Gzip).unwrap();
            assert!(gz.is_cached(), "compressed lookups stay");
        }
        assert!(r.lookup_cache_bytes() <= 7_000);
    }

    proptest! {
        #[test]
        fn decompressed_answers_equal_plain_ones(steps in proptest::collection::vec(step(), 1..60)) {
            let r = tiny_threshold();
            let mut nodes: Vec<_> = (0..12).map(|n| r.identify(peer(n))).collect();
            for s in steps {
                match s {
                    Step::Register(p, t) => {
                        nodes[p as usize].register(&format!("t{t}"), None);
                    }
                    Step::Unregister(p, t) => nodes[p as usize].unregister(&format!("t{t}"), None),
                    Step::Channel(t, c) => {
                        r.create_channel(&format!("t{t}"), &format!("c{c}"));
                    }
                    Step::Read(t, gzip_first) => {
                        let topic = format!("t{t}");
                        let want = |g: bool| if g { Encoding::Gzip } else { Encoding::Identity };
                        let a = r.lookup_as(&topic, want(gzip_first));
                        let b = r.lookup_as(&topic, want(!gzip_first));
                        let plain = r.lookup_uncached(&topic);
                        for answer in [a, b] {
                            match (answer, &plain) {
                                (None, None) => {}
                                (Some((body, Encoding::Gzip)), Some(p)) => {
                                    prop_assert_eq!(&gunzip(&body)[..], &p[..]);
                                    prop_assert_eq!(body.plain_len(), Some(p.len()));
                                }
                                (Some((body, Encoding::Identity)), Some(p)) => {
                                    prop_assert_eq!(&body[..], &p[..]);
                                }
                                (a, p) => prop_assert!(false, "{:?} vs {:?}", a.map(|x| x.1), p),
                            }
                        }
                        // Compressed by the second gzip reader at the
                        // latest; then the next readers of either are
                        // hits (or, for plain, made again once).
                        if let Some(p) = &plain {
                            r.lookup_as(&topic, Encoding::Gzip);
                            r.lookup(&topic);
                            let renders = r.counts().gzip_renders.load(std::sync::atomic::Ordering::Relaxed);
                            let again = r.lookup_as(&topic, Encoding::Gzip).unwrap();
                            let plain_again = r.lookup(&topic).unwrap();
                            prop_assert_eq!(&plain_again[..], &p[..]);
                            if p.len() >= 64 {
                                prop_assert_eq!(again.1, Encoding::Gzip);
                            }
                            prop_assert_eq!(
                                r.counts().gzip_renders.load(std::sync::atomic::Ordering::Relaxed),
                                renders,
                                "compressed again without a change"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Once the registry is closed (the process is exiting), a dropped
/// producer is not taken out of its keys: shutdown does no cleanup work.
#[test]
fn a_closed_registry_skips_the_cleanup_of_dropped_producers() {
    let r = registry();
    let mut a = r.identify(peer(1));
    a.register("t", None);
    r.close();
    drop(a);
    assert_eq!(lookup(&r, "t").map(|(_, p)| p.len()), Some(1));
}

//! Cluster mode against a secured etcd (started by `common::etcd`): TLS with
//! client certificates (`--etcd-cacert`, `--etcd-cert`, `--etcd-key`), and
//! etcd's users and roles (`--etcd-username`, `--etcd-password-file`).
//! Replicas with the right credentials share the fleet, also after their
//! auth tokens expired or died with an etcd restart; one that etcd refuses
//! goes on serving its own nsqd alone, unready, warning, without ever
//! exiting; no password is ever logged.
//!
//! The certificates are made for each test with the `openssl` command
//! (`common::pki`); etcd's own users and roles are set up through its JSON
//! gateway.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cluster::{
    Nsqd, PROPAGATION, metric, poll_until, producers, replica, start_replica, wait_for,
};
use common::etcd::EtcdCluster;
use common::pki::{CertKey, Pki};
use common::{Server, http_get};

/// How long a replica that cannot use etcd is watched to stay that way:
/// several of its retries (they back off to 2 s, 5 s for a connect).
const HOLD: Duration = Duration::from_secs(3);

const ROOT_PASSWORD: &str = "root-pw-5TqVw8";
/// The password of the `lookupd` user.
const LOOKUPD_PASSWORD: &str = "lookupd-pw-Zs8mK2";
const WRONG_PASSWORD: &str = "wrong-pw-Hx3Lr9";

/// The flags for TLS to etcd: trust `ca`, and present `client` if given.
fn tls_args(ca: &Path, client: Option<&CertKey>) -> Vec<String> {
    let mut args = vec![format!("--etcd-cacert={}", ca.display())];
    if let Some(c) = client {
        args.push(format!("--etcd-cert={}", c.cert.display()));
        args.push(format!("--etcd-key={}", c.key.display()));
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A replica expected not to reach etcd, and the nsqd it serves.
struct Loner {
    /// The broadcast address of its nsqd, and the topic it registers.
    name: &'static str,
    server: Server,
    /// Whether `nsqlookupd_cluster_etcd_connected` must stay 0 throughout:
    /// not for a replica that etcd lets in but refuses reads and writes to
    /// (its lease grants succeed, and the gauge says so until the next
    /// refused call).
    gauge_stays_zero: bool,
}

/// Every loner cannot use etcd: each logs a warning saying so (within
/// [`PROPAGATION`]); then for [`HOLD`] each keeps running and serving its
/// own nsqd (on topic `name`) at once, while `/ready` answers 503 and (if
/// so marked) the etcd gauge stays 0; nothing of it ever reaches etcd (read
/// by the harness) or the `others` replicas. Returns their nsqd.
fn assert_alone(etcd: &EtcdCluster, loners: &mut [Loner], others: &[&Server]) -> Vec<Nsqd> {
    let mut nsqd = Vec::new();
    for (i, l) in loners.iter().enumerate() {
        let mut n = Nsqd::connect(&l.server, l.name, 7000 + 10 * i as u16);
        // The OK comes from the local registry, etcd or not.
        assert!(n.register(l.name, Some("ch")) < Duration::from_millis(100));
        nsqd.push(n);
    }
    for l in loners.iter() {
        let warning = l
            .server
            .wait_for_log(PROPAGATION, |line| line.contains("WARNING: cluster:"))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no warning about etcd within {PROPAGATION:?}\n--- cluster log ---\n{}",
                    l.name,
                    cluster_log(&l.server)
                )
            });
        eprintln!("{}: {warning}", l.name);
    }
    let end = Instant::now() + HOLD;
    while Instant::now() < end {
        for l in loners.iter_mut() {
            let name = l.name;
            let log = cluster_log(&l.server);
            assert!(
                l.server.try_exit_status().is_none(),
                "{name} exited\n--- log (tail) ---\n{}",
                l.server.log_tail(20)
            );
            let ready = http_get(l.server.http_addr(), "/ready");
            assert_eq!(ready.status, 503, "{name}: /ready {}", ready.text());
            if l.gauge_stays_zero {
                assert_eq!(
                    metric(&l.server, "nsqlookupd_cluster_etcd_connected"),
                    Some(0.0),
                    "{name}\n--- cluster log ---\n{log}"
                );
            }
            assert_eq!(producers(&l.server, name), [name]);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (l, n) in loners.iter().zip(&mut nsqd) {
        assert!(n.ok("PING\n") < Duration::from_millis(100), "{}", l.name);
        for other in others {
            assert!(
                producers(other, l.name).is_empty(),
                "{} reached another replica",
                l.name
            );
        }
        let leaked: Vec<_> = etcd
            .get_prefix("")
            .into_iter()
            .filter(|(k, v)| k.contains(l.name) || v.contains(l.name))
            .collect();
        assert!(leaked.is_empty(), "{} reached etcd: {leaked:?}", l.name);
    }
    nsqd
}

// ------------------------------------------------------------------ TLS

/// Two replicas started with `args`: an nsqd registered on A is seen on B,
/// and one registered on B on A.
fn two_replicas_sharing_a_topic(etcd: &EtcdCluster, args: &[&str]) -> (Server, Server, Nsqd, Nsqd) {
    let a = replica(etcd, args);
    let b = replica(etcd, args);
    let mut n1 = Nsqd::connect(&a, "n1", 4150);
    n1.register("orders", Some("billing"));
    wait_for(PROPAGATION, "n1 on B", || producers(&b, "orders") == ["n1"]);
    let mut n2 = Nsqd::connect(&b, "n2", 4250);
    n2.register("orders", None);
    wait_for(PROPAGATION, "n2 on A", || {
        producers(&a, "orders") == ["n1", "n2"]
    });
    (a, b, n1, n2)
}

#[test]
fn replicas_with_a_client_certificate_share_the_fleet_over_tls() {
    let pki = Pki::generate();
    let etcd = EtcdCluster::start_tls(1, &pki.etcd_files());
    assert!(etcd.endpoints_arg().starts_with("https://127.0.0.1:"));
    let args = tls_args(&pki.ca, Some(&pki.client));
    let (a, b, mut n1, _n2) = two_replicas_sharing_a_topic(&etcd, &strs(&args));
    for r in [&a, &b] {
        assert_eq!(metric(r, "nsqlookupd_cluster_etcd_connected"), Some(1.0));
    }
    // Through etcd, as the harness reads it on its own listener.
    let regs: Vec<String> = etcd
        .get_prefix("/nsqlookupd/r/orders/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(regs.len(), 2, "{regs:?}");
    // A deregistration goes the same way.
    n1.unregister("orders", None);
    wait_for(PROPAGATION, "n1's UNREGISTER on B", || {
        producers(&b, "orders") == ["n2"]
    });
}

#[test]
fn a_replica_without_the_right_certificates_never_connects_and_serves_alone() {
    let pki = Pki::generate();
    let etcd = EtcdCluster::start_tls(1, &pki.etcd_files());
    let good = replica(&etcd, &strs(&tls_args(&pki.ca, Some(&pki.client))));
    let mut n_good = Nsqd::connect(&good, "n-good", 4150);
    n_good.register("shared", None);
    let loner = |name, args: Vec<String>| Loner {
        name,
        server: start_replica(&etcd, &strs(&args)),
        gauge_stays_zero: true,
    };
    let mut loners = [
        // Trusts etcd, has no client certificate: etcd ends the handshake.
        loner("nocert", tls_args(&pki.ca, None)),
        // A client certificate, but trusts another CA: etcd's certificate
        // is refused.
        loner("wrongca", tls_args(&pki.other_ca, Some(&pki.client))),
        // A client certificate that etcd's CA did not sign.
        loner("foreigncert", tls_args(&pki.ca, Some(&pki.other_client))),
    ];
    assert_alone(&etcd, &mut loners, &[&good]);
    for l in &loners {
        assert!(producers(&l.server, "shared").is_empty(), "{}", l.name);
    }
    // The good replica was never disturbed.
    assert_eq!(producers(&good, "shared"), ["n-good"]);
    assert_eq!(
        metric(&good, "nsqlookupd_cluster_etcd_connected"),
        Some(1.0)
    );
}

// ------------------------------------------------------------------ auth

/// Files holding secrets, in a temp dir removed on drop.
struct Secrets(PathBuf);

impl Secrets {
    fn new(test: &str) -> Secrets {
        let dir =
            std::env::temp_dir().join(format!("nsqlookupd-secrets-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("create the secrets dir");
        Secrets(dir)
    }

    /// A password file holding `password` and a newline.
    fn password(&self, name: &str, password: &str) -> String {
        let path = self.0.join(name);
        fs::write(&path, format!("{password}\n")).expect("write a password file");
        path.display().to_string()
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A user `lookupd` whose role may read and write `/nsqlookupd/` and
/// nothing else, a root user, and auth enabled.
fn secure(etcd: &EtcdCluster) {
    etcd.add_user("lookupd", LOOKUPD_PASSWORD);
    etcd.add_role("lookupd");
    etcd.grant_prefix("lookupd", "/nsqlookupd/");
    etcd.grant_role("lookupd", "lookupd");
    etcd.enable_auth(ROOT_PASSWORD);
    assert!(
        etcd.authenticate("lookupd", WRONG_PASSWORD).is_err(),
        "auth is on"
    );
}

fn user_args(password_file: &str) -> Vec<String> {
    vec![
        "--etcd-username=lookupd".to_owned(),
        format!("--etcd-password-file={password_file}"),
    ]
}

/// No password (the right one nor a wrong one) in any line of `servers`.
fn assert_no_password_logged(servers: &[&Server]) {
    for (i, s) in servers.iter().enumerate() {
        let logs = s.logs();
        assert!(!logs.is_empty());
        for line in logs {
            for pw in [LOOKUPD_PASSWORD, WRONG_PASSWORD, ROOT_PASSWORD] {
                assert!(!line.contains(pw), "server {i} logged a password: {line}");
            }
        }
    }
}

#[test]
fn replicas_of_a_user_limited_to_the_prefix_share_the_fleet() {
    let etcd = EtcdCluster::start(1);
    secure(&etcd);
    let secrets = Secrets::new("share");
    let mut args = user_args(&secrets.password("lookupd.pw", LOOKUPD_PASSWORD));
    args.push("--log-level=debug".to_owned());
    let (a, b, _n1, _n2) = two_replicas_sharing_a_topic(&etcd, &strs(&args));
    for r in [&a, &b] {
        assert_eq!(metric(r, "nsqlookupd_cluster_etcd_connected"), Some(1.0));
        assert_eq!(
            metric(r, "nsqlookupd_cluster_publish_errors_total"),
            Some(0.0)
        );
    }
    // Read back with the harness's root token.
    assert_eq!(etcd.get_prefix("/nsqlookupd/r/orders/").len(), 2);
    assert_no_password_logged(&[&a, &b]);
}

#[test]
fn a_replica_with_a_wrong_password_serves_alone_and_no_password_is_logged() {
    let etcd = EtcdCluster::start(1);
    secure(&etcd);
    let secrets = Secrets::new("wrong");
    let right = secrets.password("lookupd.pw", LOOKUPD_PASSWORD);
    let wrong = secrets.password("wrong.pw", WRONG_PASSWORD);
    let debug = "--log-level=debug".to_owned();
    let good = replica(&etcd, &strs(&user_args(&right)));
    let mut n_good = Nsqd::connect(&good, "n-good", 4150);
    n_good.register("shared", None);
    let loner = |name, mut args: Vec<String>, gauge_stays_zero| {
        args.push(debug.clone());
        Loner {
            name,
            server: start_replica(&etcd, &strs(&args)),
            gauge_stays_zero,
        }
    };
    let mut loners = [
        // etcd refuses to authenticate it: it never has a client.
        loner("wrongpw", user_args(&wrong), true),
        // No credentials, and the right user on a prefix its role does not
        // cover: etcd takes their lease grants (etcd 3.4 checks no
        // permission for those) but refuses their reads and writes.
        loner("nouser", Vec::new(), false),
        loner(
            "outside",
            [
                user_args(&right),
                vec!["--etcd-prefix=/elsewhere".to_owned()],
            ]
            .concat(),
            false,
        ),
    ];
    assert_alone(&etcd, &mut loners, &[&good]);
    for l in &loners {
        assert!(producers(&l.server, "shared").is_empty(), "{}", l.name);
    }
    let mut all: Vec<&Server> = loners.iter().map(|l| &l.server).collect();
    all.push(&good);
    assert_no_password_logged(&all);
}

/// etcd's simple tokens expire after `--auth-token-ttl` without use (lease
/// keep-alives do not count) and all die with an etcd restart: a replica
/// takes a new one and goes on publishing and watching.
#[test]
fn replicas_go_on_after_their_auth_tokens_expire_or_die_with_an_etcd_restart() {
    const TOKEN_TTL: Duration = Duration::from_secs(2);
    let mut etcd = EtcdCluster::builder(1)
        .arg(format!("--auth-token-ttl={}", TOKEN_TTL.as_secs()))
        .start();
    secure(&etcd);
    let secrets = Secrets::new("tokens");
    let mut args = user_args(&secrets.password("lookupd.pw", LOOKUPD_PASSWORD));
    args.push("--log-level=debug".to_owned());
    let a = replica(&etcd, &strs(&args));
    let b = replica(&etcd, &strs(&args));
    let mut n1 = Nsqd::connect(&a, "n1", 4150);
    n1.register("before", None);
    wait_for(PROPAGATION, "n1 on B", || producers(&b, "before") == ["n1"]);

    // Idle past the TTL: the tokens the replicas hold expire (etcd's TTL
    // keeper runs every second). Waiting out the TTL is the point here;
    // a probe token taken now and not used since shows it has passed.
    let probe = etcd
        .authenticate("lookupd", LOOKUPD_PASSWORD)
        .expect("a lookupd token");
    std::thread::sleep(TOKEN_TTL + Duration::from_millis(1500));
    assert!(!etcd.token_valid(&probe), "the token TTL has passed");
    n1.register("expired", None);
    wait_for(PROPAGATION, "a registration after the TTL on B", || {
        producers(&b, "expired") == ["n1"]
    });
    assert_eq!(
        metric(&a, "nsqlookupd_cluster_publish_errors_total"),
        Some(0.0),
        "the expired token was replaced without a failed publish"
    );

    // An etcd restart loses every token; the watches break and are made
    // again, and B has nothing to publish that would refresh its token.
    etcd.restart_all();
    assert!(!etcd.token_valid(&probe));
    let mut n2 = Nsqd::connect(&a, "n2", 4250);
    n2.register("restarted", None);
    let seen = poll_until(Duration::from_secs(20), || {
        producers(&b, "restarted") == ["n2"]
    });
    assert!(
        seen.is_some(),
        "B did not see a registration made after the restart within 20 s\n\
         --- B's cluster log ---\n{}",
        cluster_log(&b)
    );
    let mut n3 = Nsqd::connect(&b, "n3", 4350);
    n3.register("restarted", None);
    wait_for(PROPAGATION, "B's registration on A", || {
        producers(&a, "restarted") == ["n2", "n3"]
    });
    for r in [&a, &b] {
        assert_eq!(http_get(r.http_addr(), "/ready").status, 200);
        wait_for(PROPAGATION, "the etcd gauge back to 1", || {
            metric(r, "nsqlookupd_cluster_etcd_connected") == Some(1.0)
        });
    }
    assert_no_password_logged(&[&a, &b]);
}

/// The last 30 lines of `server`'s log about cluster mode (at debug level,
/// its dependencies' lines would drown them).
fn cluster_log(server: &Server) -> String {
    let lines: Vec<String> = server
        .logs()
        .into_iter()
        .filter(|l| l.contains(": cluster: "))
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The member health check (`src/cluster/endpoints.rs`) reads with the
/// replica's own credentials: over TLS with its client certificate, as a
/// user limited to the prefix. A dead member is taken out of use (so the
/// checks of the others succeed: were they refused, every member would
/// stay in use), and put back when it returns; the fleet is published
/// throughout.
#[test]
fn the_member_health_check_works_with_tls_and_a_user_limited_to_the_prefix() {
    let pki = Pki::generate();
    let mut etcd = EtcdCluster::start_tls(3, &pki.etcd_files());
    secure(&etcd);
    let secrets = Secrets::new("health");
    let mut args = tls_args(&pki.ca, Some(&pki.client));
    args.extend(user_args(&secrets.password("lookupd.pw", LOOKUPD_PASSWORD)));
    let a = replica(&etcd, &strs(&args));
    let in_use = || metric(&a, "nsqlookupd_cluster_etcd_endpoints_in_use");
    assert_eq!(in_use(), Some(3.0));
    let follower = (etcd.leader() + 1) % 3;
    etcd.kill(follower);
    wait_for(PROPAGATION, "the dead member out of use", || {
        in_use() == Some(2.0)
    });
    let mut n1 = Nsqd::connect(&a, "n1", 4150);
    n1.register("orders", None);
    wait_for(PROPAGATION, "n1 published with a member down", || {
        etcd.get_prefix("/nsqlookupd/r/orders/").len() == 1
    });
    etcd.restart(follower);
    wait_for(PROPAGATION, "the member back in use", || {
        in_use() == Some(3.0)
    });
    assert_eq!(
        metric(&a, "nsqlookupd_cluster_etcd_connected"),
        Some(1.0),
        "{}",
        a.log_tail(10)
    );
    assert_no_password_logged(&[&a]);
}

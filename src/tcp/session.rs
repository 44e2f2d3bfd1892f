//! One connection's protocol state: applies decoded commands to the
//! registry and produces the response of each.
//!
//! Knows the protocol's rules (what each command answers, which errors are
//! fatal and their exact text) but no sockets: the connection driver feeds
//! it frames and writes what it returns. The registration lives in the
//! session's [`ProducerHandle`], so whenever the session is dropped, for
//! whatever reason, the producer leaves every key it was in.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tracing::{info, warn};

use super::codec::{Command, Frame};
use super::identify::{IdentifyBody, IdentifyError};
use crate::names::is_valid_name;
use crate::registry::{CapHit, PeerInfo, ProducerHandle, Registry};
use crate::stats::{Limit, Stats};

/// What the connection must do after a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send this response frame and go on.
    Send(Bytes),
    /// Send nothing yet: read the IDENTIFY body next.
    ReadIdentifyBody,
    /// Send this error frame, then close the connection.
    Fatal(Bytes),
    /// Send this error frame and go on: the one error that is not fatal,
    /// a REGISTER refused by `--max-registrations` or `--max-keys` (closing
    /// would drop everything the nsqd already registered, and nsqd would
    /// reconnect and re-register all of it every 15 s).
    Error(Bytes),
}

const OK: &[u8] = b"OK";

/// Per-connection protocol state.
#[derive(Debug)]
pub struct Session {
    registry: Arc<Registry>,
    peer: SocketAddr,
    /// The IDENTIFY answer describing this lookupd, rendered once at start.
    identify_response: Bytes,
    producer: Option<ProducerHandle>,
    /// Most keys this connection may join (`--max-registrations-per-connection`).
    max_registrations: usize,
    stats: Arc<Stats>,
}

fn fatal(parts: &[&[u8]]) -> Reply {
    let mut out = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.put_slice(p);
    }
    Reply::Fatal(out.freeze())
}

impl Session {
    pub fn new(
        registry: Arc<Registry>,
        peer: SocketAddr,
        identify_response: Bytes,
        max_registrations: usize,
        stats: Arc<Stats>,
    ) -> Self {
        Session {
            registry,
            peer,
            identify_response,
            producer: None,
            max_registrations,
            stats,
        }
    }

    /// The producer, once identified.
    pub fn producer(&self) -> Option<&ProducerHandle> {
        self.producer.as_ref()
    }

    pub fn apply(&mut self, frame: Frame) -> Reply {
        let command = match &frame {
            Frame::Command(Command::Ping) => "PING",
            Frame::Command(Command::Identify) | Frame::IdentifyBody(_) => "IDENTIFY",
            Frame::Command(Command::Register { .. }) => "REGISTER",
            Frame::Command(Command::Unregister { .. }) => "UNREGISTER",
            Frame::Command(Command::Unknown { .. }) => "other",
        };
        let reply = self.reply(frame);
        match &reply {
            Reply::Send(_) => self.stats.tcp_command(command, None),
            Reply::Fatal(error) | Reply::Error(error) => {
                self.stats.tcp_command(command, Some(error))
            }
            Reply::ReadIdentifyBody => {}
        }
        reply
    }

    fn reply(&mut self, frame: Frame) -> Reply {
        match frame {
            Frame::Command(Command::Ping) => self.ping(),
            Frame::Command(Command::Identify) => match self.producer {
                Some(_) => fatal(&[b"E_INVALID cannot IDENTIFY again"]),
                None => Reply::ReadIdentifyBody,
            },
            Frame::IdentifyBody(body) => self.identify(&body),
            Frame::Command(Command::Register { topic, channel }) => {
                self.registration(b"REGISTER", topic, channel)
            }
            Frame::Command(Command::Unregister { topic, channel }) => {
                self.registration(b"UNREGISTER", topic, channel)
            }
            Frame::Command(Command::Unknown { name }) => {
                fatal(&[b"E_INVALID invalid command ", &name])
            }
        }
    }

    fn ping(&mut self) -> Reply {
        if let Some(producer) = &self.producer {
            let since = producer.ping();
            info!(peer = %self.peer, command = "PING",
                "CLIENT({}): pinged (last ping {since:?})", self.peer);
        }
        Reply::Send(Bytes::from_static(OK))
    }

    fn identify(&mut self, body: &[u8]) -> Reply {
        let body = match IdentifyBody::parse(body) {
            Ok(body) => body,
            Err(IdentifyError::Decode) => {
                return fatal(&[b"E_BAD_BODY IDENTIFY failed to decode JSON body"]);
            }
            Err(IdentifyError::MissingFields) => {
                return fatal(&[b"E_BAD_BODY IDENTIFY missing fields"]);
            }
        };
        info!(peer = %self.peer, command = "IDENTIFY",
            "CLIENT({}): IDENTIFY Address:{} TCP:{} HTTP:{} Version:{}",
            self.peer, body.broadcast_address, body.tcp_port, body.http_port, body.version);
        let peer = PeerInfo {
            remote_address: self.peer.to_string(),
            hostname: body.hostname,
            broadcast_address: body.broadcast_address,
            tcp_port: body.tcp_port,
            http_port: body.http_port,
            version: body.version,
            topology_zone: body.topology_zone,
            topology_region: body.topology_region,
        };
        self.producer = Some(self.registry.identify(peer));
        Reply::Send(self.identify_response.clone())
    }

    /// REGISTER and UNREGISTER: the checks in the original's order, then the change.
    fn registration(
        &mut self,
        command: &[u8],
        topic: Option<Bytes>,
        channel: Option<Bytes>,
    ) -> Reply {
        let Some(producer) = self.producer.as_mut() else {
            return fatal(&[b"E_INVALID client must IDENTIFY"]);
        };
        let Some(topic) = topic else {
            return fatal(&[b"E_INVALID ", command, b" insufficient number of params"]);
        };
        if !is_valid_name(&topic) {
            return fatal(&[
                b"E_BAD_TOPIC ",
                command,
                b" topic name '",
                &topic,
                b"' is not valid",
            ]);
        }
        let channel = channel.filter(|c| !c.is_empty());
        if let Some(channel) = &channel
            && !is_valid_name(channel)
        {
            return fatal(&[
                b"E_BAD_CHANNEL ",
                command,
                b" channel name '",
                channel,
                b"' is not valid",
            ]);
        }
        // Valid names are ASCII.
        let topic = std::str::from_utf8(&topic).expect("valid names are ASCII");
        let channel = channel
            .as_deref()
            .map(|c| std::str::from_utf8(c).expect("valid names are ASCII"));
        if command == b"REGISTER" {
            if let Err(hit) = producer.try_register(topic, channel) {
                return self.refused(hit, topic, channel);
            }
            if producer.registration_count() > self.max_registrations {
                // Fatal: the connection closes and takes its keys with it.
                self.stats.limit_hit(Limit::RegistrationsPerConnection);
                let limit = self.max_registrations.to_string();
                return fatal(&[
                    b"E_INVALID REGISTER registration limit reached (",
                    limit.as_bytes(),
                    b" keys per connection)",
                ]);
            }
        } else {
            producer.unregister(topic, channel);
        }
        Reply::Send(Bytes::from_static(OK))
    }

    /// A REGISTER the registry's caps refused: counted, logged at most once
    /// a second (with the count since the last line), answered with a
    /// non-fatal `E_REGISTRATION_LIMIT`.
    fn refused(&self, hit: CapHit, topic: &str, channel: Option<&str>) -> Reply {
        let (limit, what, max) = match hit {
            CapHit::Registrations(max) => (Limit::Registrations, "registrations", max),
            CapHit::Keys(max) => (Limit::Keys, "topic and channel keys", max),
        };
        self.stats.limit_hit(limit);
        if let Some(n) = self.stats.cap_refusals.hit() {
            warn!(peer = %self.peer, topic, channel = channel.unwrap_or_default(),
                "refused {n} write(s) to the registry: --{}={max} reached (last: client({}) REGISTER {topic} {})",
                limit.name().replace('_', "-"), self.peer, channel.unwrap_or_default());
        }
        let text = format!("E_REGISTRATION_LIMIT REGISTER registry full ({max} {what})");
        Reply::Error(Bytes::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryOptions;

    fn session() -> (Arc<Registry>, Session) {
        let registry = Arc::new(Registry::new(RegistryOptions::default()));
        let s = Session::new(
            Arc::clone(&registry),
            "127.0.0.1:5000".parse().unwrap(),
            Bytes::from_static(b"{me}"),
            5,
            Arc::new(Stats::default()),
        );
        (registry, s)
    }

    fn register(topic: &str, channel: Option<&str>) -> Frame {
        Frame::Command(Command::Register {
            topic: Some(Bytes::copy_from_slice(topic.as_bytes())),
            channel: channel.map(|c| Bytes::copy_from_slice(c.as_bytes())),
        })
    }

    fn text(r: Reply) -> String {
        match r {
            Reply::Send(b) => format!("send {}", String::from_utf8_lossy(&b)),
            Reply::Fatal(b) => format!("fatal {}", String::from_utf8_lossy(&b)),
            Reply::Error(b) => format!("error {}", String::from_utf8_lossy(&b)),
            Reply::ReadIdentifyBody => "read body".into(),
        }
    }

    fn identify(s: &mut Session) {
        assert_eq!(
            text(s.apply(Frame::Command(Command::Identify))),
            "read body"
        );
        let body = br#"{"broadcast_address":"b","tcp_port":1,"http_port":2,"version":"v"}"#;
        assert_eq!(
            text(s.apply(Frame::IdentifyBody(Bytes::from_static(body)))),
            "send {me}"
        );
    }

    #[test]
    fn the_protocol_in_order() {
        let (registry, mut s) = session();
        assert_eq!(text(s.apply(Frame::Command(Command::Ping))), "send OK");
        assert_eq!(
            text(s.apply(register("t", None))),
            "fatal E_INVALID client must IDENTIFY"
        );
        identify(&mut s);
        assert_eq!(registry.producer_count(), 1);
        assert_eq!(text(s.apply(register("t", Some("c")))), "send OK");
        assert_eq!(&*registry.channels("t")[0], "c");
        assert_eq!(
            text(s.apply(Frame::Command(Command::Identify))),
            "fatal E_INVALID cannot IDENTIFY again"
        );
        drop(s);
        assert_eq!(
            registry.producer_count(),
            0,
            "dropping the session cleans up"
        );
    }

    #[test]
    fn registration_errors() {
        let (_, mut s) = session();
        identify(&mut s);
        let no_params = Frame::Command(Command::Unregister {
            topic: None,
            channel: None,
        });
        assert_eq!(
            text(s.apply(no_params)),
            "fatal E_INVALID UNREGISTER insufficient number of params"
        );
        assert_eq!(
            text(s.apply(register("", None))),
            "fatal E_BAD_TOPIC REGISTER topic name '' is not valid"
        );
        assert_eq!(
            text(s.apply(register("t", Some("bad:chan")))),
            "fatal E_BAD_CHANNEL REGISTER channel name 'bad:chan' is not valid"
        );
        assert_eq!(text(s.apply(register("t", Some("")))), "send OK");
        assert_eq!(
            text(s.apply(Frame::Command(Command::Unknown {
                name: Bytes::from_static(b"FOO")
            }))),
            "fatal E_INVALID invalid command FOO"
        );
    }

    #[test]
    fn registration_cap_is_fatal_past_the_limit() {
        let (_, mut s) = session();
        identify(&mut s); // 1 key: client
        assert_eq!(text(s.apply(register("t1", Some("c")))), "send OK"); // 3
        assert_eq!(text(s.apply(register("t2", Some("c")))), "send OK"); // 5
        assert_eq!(
            text(s.apply(register("t2", Some("c")))),
            "send OK",
            "no new key"
        );
        assert_eq!(
            text(s.apply(register("t3", None))),
            "fatal E_INVALID REGISTER registration limit reached (5 keys per connection)"
        );
        assert_eq!(s.stats.limit_hits(Limit::RegistrationsPerConnection), 1);
    }

    #[test]
    fn registry_cap_refuses_without_closing() {
        use crate::registry::Caps;
        let registry = Arc::new(Registry::new(RegistryOptions {
            caps: Caps {
                max_registrations: 3,
                max_keys: 100,
            },
            ..RegistryOptions::default()
        }));
        let mut s = Session::new(
            Arc::clone(&registry),
            "127.0.0.1:5000".parse().unwrap(),
            Bytes::from_static(b"{me}"),
            100,
            Arc::new(Stats::default()),
        );
        identify(&mut s); // client: 1
        assert_eq!(text(s.apply(register("t", Some("c")))), "send OK"); // 3
        let refused = s.apply(register("u", None));
        assert_eq!(
            refused,
            Reply::Error(Bytes::from_static(
                b"E_REGISTRATION_LIMIT REGISTER registry full (3 registrations)"
            ))
        );
        assert_eq!(s.stats.limit_hits(Limit::Registrations), 1);
        assert_eq!(
            s.stats.tcp_commands[2][1].load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // The connection goes on: held registrations answer, PING works.
        assert_eq!(text(s.apply(register("t", Some("c")))), "send OK");
        assert_eq!(text(s.apply(Frame::Command(Command::Ping))), "send OK");
        assert!(registry.lookup("t").is_some());
        let unregister = Frame::Command(Command::Unregister {
            topic: Some(Bytes::from_static(b"t")),
            channel: Some(Bytes::from_static(b"c")),
        });
        assert_eq!(text(s.apply(unregister)), "send OK");
        assert_eq!(text(s.apply(register("u", None))), "send OK");
    }

    #[test]
    fn identify_errors() {
        for (body, expected) in [
            (
                &b"{not json"[..],
                "fatal E_BAD_BODY IDENTIFY failed to decode JSON body",
            ),
            (b"{}", "fatal E_BAD_BODY IDENTIFY missing fields"),
        ] {
            let (registry, mut s) = session();
            s.apply(Frame::Command(Command::Identify));
            assert_eq!(
                text(s.apply(Frame::IdentifyBody(Bytes::from_static(body)))),
                expected
            );
            assert_eq!(registry.producer_count(), 0);
        }
    }
}

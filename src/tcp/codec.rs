//! Frames the nsqd → lookupd byte stream into [`Frame`]s.
//!
//! The stream is: 4 bytes of magic (`"  V1"`), then `\n`-terminated command
//! lines; an `IDENTIFY` line is followed by a 4-byte big-endian signed
//! length and that many bytes of JSON. Whether the body follows is the
//! session's decision (a second IDENTIFY is refused *before* its body is
//! read, as the original does), so after yielding [`Command::Identify`] the
//! codec waits for [`LookupCodec::expect_identify_body`].
//!
//! Zero-copy: command parameters and the IDENTIFY body are `Bytes` slices
//! of the read buffer. Bounded: a line longer than `max_line` or a body
//! size outside `0..=max_body` is an error *before* it is buffered, so no
//! input can make a connection's buffer grow past those limits.
//!
//! The codec knows nothing about the registry or the session's state.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// The protocol magic an nsqd sends first.
pub const MAGIC_V1: &[u8; 4] = b"  V1";

/// One command line, split the way the original splits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Ping,
    /// The body follows only if the session asks for it.
    Identify,
    /// `REGISTER [topic [channel [ignored...]]]`; missing parameters are `None`.
    Register {
        topic: Option<Bytes>,
        channel: Option<Bytes>,
    },
    Unregister {
        topic: Option<Bytes>,
        channel: Option<Bytes>,
    },
    /// Anything else, including an empty line (`name` is then empty).
    Unknown {
        name: Bytes,
    },
}

/// What the codec yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Command(Command),
    /// The body of the IDENTIFY the session accepted.
    IdentifyBody(Bytes),
}

/// Why the stream cannot be read further. Every one is fatal.
#[derive(Debug)]
pub enum CodecError {
    /// The first 4 bytes were not `"  V1"`.
    BadMagic([u8; 4]),
    /// A command line longer than the limit.
    LineTooLong {
        limit: usize,
    },
    /// An IDENTIFY body size below 0 or above the limit.
    BadBodySize {
        size: i32,
        limit: usize,
    },
    /// The stream ended inside the 4-byte body size.
    BodySizeTruncated,
    /// The stream ended inside the body.
    BodyTruncated,
    Io(io::Error),
}

impl From<io::Error> for CodecError {
    fn from(e: io::Error) -> Self {
        CodecError::Io(e)
    }
}

impl CodecError {
    /// The response frame the client gets before the connection closes, if any.
    pub fn response(&self) -> Option<Bytes> {
        let text = match self {
            CodecError::BadMagic(_) => "E_BAD_PROTOCOL".to_owned(),
            CodecError::LineTooLong { limit } => {
                format!("E_INVALID command line longer than {limit} bytes")
            }
            CodecError::BadBodySize { size, limit } => {
                format!("E_BAD_BODY IDENTIFY invalid body size {size} (limit {limit})")
            }
            CodecError::BodySizeTruncated => "E_BAD_BODY IDENTIFY failed to read body size".into(),
            CodecError::BodyTruncated => "E_BAD_BODY IDENTIFY failed to read body".into(),
            CodecError::Io(_) => return None,
        };
        Some(Bytes::from(text))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Magic,
    Line,
    BodySize,
    Body(usize),
}

/// Decoder for one connection.
#[derive(Debug)]
pub struct LookupCodec {
    state: State,
    max_line: usize,
    max_body: usize,
    /// Bytes of the current partial line already searched for `\n`.
    scanned: usize,
}

impl LookupCodec {
    /// `max_line`: longest accepted command line, without its `\n`.
    /// `max_body`: largest accepted IDENTIFY body.
    pub fn new(max_line: usize, max_body: usize) -> Self {
        LookupCodec {
            state: State::Magic,
            max_line,
            max_body,
            scanned: 0,
        }
    }

    /// A codec past the magic (for tests and fuzzing of the command part).
    pub fn after_magic(max_line: usize, max_body: usize) -> Self {
        LookupCodec {
            state: State::Line,
            ..Self::new(max_line, max_body)
        }
    }

    /// Reads an IDENTIFY body next; call right after a [`Command::Identify`].
    pub fn expect_identify_body(&mut self) {
        if self.state == State::Line {
            self.state = State::BodySize;
        }
    }

    /// Whether the codec is waiting for the protocol magic.
    pub fn awaiting_magic(&self) -> bool {
        self.state == State::Magic
    }

    fn decode_line(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let newline = src[self.scanned..].iter().position(|&b| b == b'\n');
        let Some(pos) = newline.map(|p| p + self.scanned) else {
            if src.len() > self.max_line {
                return Err(CodecError::LineTooLong {
                    limit: self.max_line,
                });
            }
            self.scanned = src.len();
            return Ok(None);
        };
        self.scanned = 0;
        if pos > self.max_line {
            return Err(CodecError::LineTooLong {
                limit: self.max_line,
            });
        }
        let line = src.split_to(pos + 1).freeze();
        Ok(Some(Frame::Command(parse_line(line))))
    }
}

/// Splits a raw line (newline included) into a command: trimmed of
/// surrounding whitespace like Go's `strings.TrimSpace`, then split on
/// single spaces (so a double space is an empty parameter).
pub fn parse_line(line: Bytes) -> Command {
    let (start, end) = trim_space(&line);
    let line = line.slice(start..end);
    let mut params = split_spaces(&line);
    let name = params.next().unwrap_or_default();
    match &name[..] {
        b"PING" => Command::Ping,
        b"IDENTIFY" => Command::Identify,
        b"REGISTER" => Command::Register {
            topic: params.next(),
            channel: params.next(),
        },
        b"UNREGISTER" => Command::Unregister {
            topic: params.next(),
            channel: params.next(),
        },
        _ => Command::Unknown { name },
    }
}

fn split_spaces(line: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let mut rest = Some(0usize);
    std::iter::from_fn(move || {
        let start = rest?;
        match line[start..].iter().position(|&b| b == b' ') {
            Some(p) => {
                rest = Some(start + p + 1);
                Some(line.slice(start..start + p))
            }
            None => {
                rest = None;
                Some(line.slice(start..))
            }
        }
    })
}

/// The range of `s` without leading and trailing Unicode white space
/// (Go's `unicode.IsSpace`, which is Rust's `char::is_whitespace`); bytes
/// that are not valid UTF-8 are never space.
fn trim_space(s: &[u8]) -> (usize, usize) {
    let mut start = 0;
    while start < s.len() {
        match space_len_at(s, start) {
            Some(n) => start += n,
            None => break,
        }
    }
    let mut end = s.len();
    while end > start {
        match space_len_before(&s[start..end]) {
            Some(n) => end -= n,
            None => break,
        }
    }
    (start, end)
}

/// Length of the white-space character starting at `s[i]`, if it is one.
fn space_len_at(s: &[u8], i: usize) -> Option<usize> {
    let b = s[i];
    if b < 0x80 {
        return matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r').then_some(1);
    }
    let tail = &s[i..s.len().min(i + 4)];
    let valid = match std::str::from_utf8(tail) {
        Ok(v) => v,
        Err(e) => std::str::from_utf8(&tail[..e.valid_up_to()]).unwrap_or(""),
    };
    let c = valid.chars().next()?;
    c.is_whitespace().then_some(c.len_utf8())
}

/// Length of the white-space character ending at the end of `s`, if it is one.
fn space_len_before(s: &[u8]) -> Option<usize> {
    let last = *s.last()?;
    if last < 0x80 {
        return space_len_at(s, s.len() - 1);
    }
    for n in 2..=4.min(s.len()) {
        if let Ok(v) = std::str::from_utf8(&s[s.len() - n..]) {
            let c = v.chars().next()?;
            return (c.len_utf8() == n && c.is_whitespace()).then_some(n);
        }
    }
    None
}

impl Decoder for LookupCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        loop {
            match self.state {
                State::Magic => {
                    if src.len() < 4 {
                        return Ok(None);
                    }
                    let magic: [u8; 4] = src[..4].try_into().expect("4 bytes");
                    if &magic != MAGIC_V1 {
                        return Err(CodecError::BadMagic(magic));
                    }
                    src.advance(4);
                    self.state = State::Line;
                }
                State::Line => return self.decode_line(src),
                State::BodySize => {
                    if src.len() < 4 {
                        return Ok(None);
                    }
                    let size = src.get_i32();
                    match usize::try_from(size) {
                        Ok(n) if n <= self.max_body => {
                            self.state = State::Body(n);
                            src.reserve(n.saturating_sub(src.len()));
                        }
                        _ => {
                            return Err(CodecError::BadBodySize {
                                size,
                                limit: self.max_body,
                            });
                        }
                    }
                }
                State::Body(n) => {
                    if src.len() < n {
                        return Ok(None);
                    }
                    self.state = State::Line;
                    return Ok(Some(Frame::IdentifyBody(src.split_to(n).freeze())));
                }
            }
        }
    }

    /// At end of stream: a partial magic or a partial line is dropped
    /// silently (the original just closes); a partial IDENTIFY size or body
    /// is an error the client is told about.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        match self.state {
            State::Magic | State::Line => {
                src.clear();
                self.scanned = 0;
                Ok(None)
            }
            State::BodySize => Err(CodecError::BodySizeTruncated),
            State::Body(_) => Err(CodecError::BodyTruncated),
        }
    }
}

#[cfg(test)]
mod tests;

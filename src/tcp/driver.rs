//! The decode/apply loop of one connection, without I/O: bytes in, answers
//! out. `connection` puts it between a socket and its write buffer; the
//! fuzz target and `tests/codec_props.rs` feed it byte chunks, so what
//! they check is the loop the server runs, not a copy of it.
//!
//! Owns the connection's codec and session, and the answers' framing
//! ([`put_frame`]); knows nothing of sockets, logging or metrics (the
//! caller reacts to what [`Driver::pump`] returns).

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::codec::{CodecError, LookupCodec};
use super::session::{Reply, Session};

/// Appends one answer as the protocol frames it: a 4-byte big-endian
/// length, then the data.
pub fn put_frame(out: &mut BytesMut, data: &[u8]) {
    out.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.put_slice(data);
}

/// What the driver tells its caller, in order.
#[derive(Debug)]
pub enum Output {
    /// The protocol magic was read (once per connection, before the first
    /// command is applied).
    Magic,
    /// An answer to write (an `OK`, a JSON body or a non-fatal error).
    Answer(Bytes),
}

/// Why the connection must end.
#[derive(Debug)]
pub enum Ending {
    /// The peer closed and nothing complete is left in the buffer.
    Closed,
    /// A fatal answer of the session, to be written before closing.
    Fatal(Bytes),
    /// The codec refused the input (its [`CodecError::response`] is the
    /// answer to write before closing; none for I/O errors).
    Codec(CodecError),
}

/// One connection's codec and session.
pub struct Driver {
    pub codec: LookupCodec,
    pub session: Session,
    magic_seen: bool,
}

impl Driver {
    pub fn new(codec: LookupCodec, session: Session) -> Self {
        Driver {
            codec,
            session,
            magic_seen: false,
        }
    }

    /// Decodes and applies every command complete in `input` (all of it
    /// when `eof`: the peer closed), handing each [`Output`] to `out`.
    /// Returns `None` when it needs more input, or why the connection ends.
    /// Pipelined commands are all answered before the caller writes once.
    pub fn pump(
        &mut self,
        input: &mut BytesMut,
        eof: bool,
        mut out: impl FnMut(Output),
    ) -> Option<Ending> {
        loop {
            let decoded = if eof {
                self.codec.decode_eof(input)
            } else {
                self.codec.decode(input)
            };
            if !self.magic_seen && !self.codec.awaiting_magic() {
                self.magic_seen = true;
                out(Output::Magic);
            }
            match decoded {
                Ok(Some(frame)) => match self.session.apply(frame) {
                    Reply::Send(data) | Reply::Error(data) => out(Output::Answer(data)),
                    Reply::ReadIdentifyBody => self.codec.expect_identify_body(),
                    Reply::Fatal(data) => return Some(Ending::Fatal(data)),
                },
                Ok(None) => return eof.then_some(Ending::Closed),
                Err(e) => return Some(Ending::Codec(e)),
            }
        }
    }
}

//! The nsqd side of the lookupd TCP protocol: encoding commands and cutting
//! the `4-byte big-endian length + data` response frames out of a read
//! buffer. Kept free of I/O so it can be unit-tested.

/// The protocol magic every connection starts with.
pub const MAGIC: &[u8] = b"  V1";

/// Frames larger than this are treated as a protocol error rather than
/// buffered: no legitimate lookupd answer to an nsqd comes close.
pub const MAX_FRAME: usize = 16 << 20;

/// Appends `IDENTIFY\n` + size + JSON body.
pub fn put_identify(buf: &mut Vec<u8>, body: &[u8]) {
    buf.extend_from_slice(b"IDENTIFY\n");
    buf.extend_from_slice(&(body.len() as i32).to_be_bytes());
    buf.extend_from_slice(body);
}

/// Appends `REGISTER topic [channel]\n`.
pub fn put_register(buf: &mut Vec<u8>, topic: &str, channel: Option<&str>) {
    buf.extend_from_slice(b"REGISTER ");
    buf.extend_from_slice(topic.as_bytes());
    if let Some(c) = channel {
        buf.push(b' ');
        buf.extend_from_slice(c.as_bytes());
    }
    buf.push(b'\n');
}

/// Appends `UNREGISTER topic [channel]\n`.
pub fn put_unregister(buf: &mut Vec<u8>, topic: &str, channel: Option<&str>) {
    buf.extend_from_slice(b"UN");
    put_register(buf, topic, channel);
}

/// Appends `PING\n`.
pub fn put_ping(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"PING\n");
}

/// One response frame, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// `OK`: the answer to REGISTER, UNREGISTER and PING.
    Ok,
    /// `E_...`: a (fatal) error; the server closes after it.
    Error(String),
    /// Anything else (the IDENTIFY answer is a JSON object).
    Data(Vec<u8>),
}

/// Accumulates bytes read from the socket and yields complete frames.
#[derive(Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameBuf {
    /// Space to read into; call [`FrameBuf::filled`] with the count read.
    pub fn spare(&mut self, min: usize) -> &mut Vec<u8> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(min);
        &mut self.buf
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or an
    /// error text when the stream cannot be a lookupd response stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        let avail = &self.buf[self.pos..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("response frame of {len} bytes"));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let data = &avail[4..4 + len];
        let frame = if data == b"OK" {
            Frame::Ok
        } else if data.starts_with(b"E_") {
            Frame::Error(String::from_utf8_lossy(data).into_owned())
        } else {
            Frame::Data(data.to_vec())
        };
        self.pos += 4 + len;
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn encodes_commands() {
        let mut b = Vec::new();
        put_register(&mut b, "t", None);
        put_register(&mut b, "t", Some("c"));
        put_ping(&mut b);
        put_unregister(&mut b, "t", None);
        put_unregister(&mut b, "t", Some("c"));
        assert_eq!(
            b,
            b"REGISTER t\nREGISTER t c\nPING\nUNREGISTER t\nUNREGISTER t c\n"
        );
        let mut b = Vec::new();
        put_identify(&mut b, b"{}");
        assert_eq!(b, b"IDENTIFY\n\0\0\0\x02{}");
    }

    #[test]
    fn cuts_frames_split_anywhere() {
        let mut stream = framed(b"OK");
        stream.extend(framed(b"E_INVALID invalid command X"));
        stream.extend(framed(b"{\"a\":1}"));
        let mut fb = FrameBuf::default();
        let mut got = Vec::new();
        for byte in stream {
            fb.spare(1).push(byte);
            while let Some(f) = fb.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                Frame::Ok,
                Frame::Error("E_INVALID invalid command X".into()),
                Frame::Data(b"{\"a\":1}".to_vec())
            ]
        );
    }

    #[test]
    fn refuses_huge_frames() {
        let mut fb = FrameBuf::default();
        fb.spare(4).extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(fb.next_frame().is_err());
    }
}

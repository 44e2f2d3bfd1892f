//! gzip for the bench: inflating the answers that came `Content-Encoding:
//! gzip` (one decoder per connection, reset between answers, so that an
//! answer allocates nothing once the connection's output buffer has grown
//! to the answer size), compressing the ceiling server's bodies, and
//! reading `Accept-Encoding`.
//!
//! The gzip framing (RFC 1952: a header, raw deflate data, then the CRC-32
//! and the length of the data, mod 2^32) is done here around flate2's raw
//! deflate, so it is the same whichever backend flate2 is built with; the
//! trailer is verified, as Go's and Python's gzip readers do.

use flate2::{Compress, Compression, Crc, Decompress, FlushCompress, FlushDecompress, Status};

/// A larger inflated body is refused (the same limit as a plain one).
pub const MAX_OUT: usize = 256 << 20;

/// Deflate cannot expand by more than about 1032:1; a trailer that claims
/// more is not trusted to size the output buffer.
const MAX_RATIO: usize = 1032;

/// Why a gzip body could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GzipError {
    /// Not a gzip header (magic, method, flags, or cut short).
    Header,
    /// The deflate data is corrupt or cut short.
    Data,
    /// The trailer is missing, bytes follow it, or its CRC-32 or length
    /// does not match the inflated data.
    Trailer,
    /// The inflated body would exceed [`MAX_OUT`].
    TooLarge,
}

const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;

/// The length of the gzip header at the start of `src`.
pub fn header_len(src: &[u8]) -> Result<usize, GzipError> {
    if src.len() < 10 || src[0] != 0x1f || src[1] != 0x8b || src[2] != 8 {
        return Err(GzipError::Header);
    }
    let flags = src[3];
    if flags & 0xe0 != 0 {
        return Err(GzipError::Header);
    }
    let mut p = 10;
    if flags & FEXTRA != 0 {
        let len = src.get(p..p + 2).ok_or(GzipError::Header)?;
        p += 2 + u16::from_le_bytes([len[0], len[1]]) as usize;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let zero = src
                .get(p..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
                .ok_or(GzipError::Header)?;
            p += zero + 1;
        }
    }
    if flags & FHCRC != 0 {
        let stored = src.get(p..p + 2).ok_or(GzipError::Header)?;
        let mut crc = Crc::new();
        crc.update(&src[..p]);
        if crc.sum() as u16 != u16::from_le_bytes([stored[0], stored[1]]) {
            return Err(GzipError::Header);
        }
        p += 2;
    }
    if p > src.len() {
        return Err(GzipError::Header);
    }
    Ok(p)
}

/// A reusable gzip decoder: the inflate state (tens of KB) is made once
/// per connection and reset for each answer.
pub struct Gunzip {
    inflate: Decompress,
    crc: Crc,
}

impl Default for Gunzip {
    fn default() -> Self {
        Gunzip::new()
    }
}

impl Gunzip {
    pub fn new() -> Self {
        Gunzip {
            inflate: Decompress::new(false),
            crc: Crc::new(),
        }
    }

    /// Inflates the single gzip member `src` into `out` (cleared first; its
    /// capacity is kept, so once it has reached the answer size nothing is
    /// allocated), and checks the trailer.
    pub fn decode(&mut self, src: &[u8], out: &mut Vec<u8>) -> Result<(), GzipError> {
        let start = header_len(src)?;
        if src.len() < start + 8 {
            return Err(GzipError::Trailer);
        }
        let trailer = &src[src.len() - 8..];
        let want_crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let want_len = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        self.inflate.reset(false);
        out.clear();
        // The trailer's length as the first guess of the size (bounded:
        // it is the server's word, checked only at the end).
        let guess = (want_len as usize)
            .min(src.len().saturating_mul(MAX_RATIO))
            .min(MAX_OUT);
        out.reserve(guess.max(64));
        let data = &src[start..];
        loop {
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let consumed = in_before as usize;
            let status = self
                .inflate
                .decompress_vec(&data[consumed..], out, FlushDecompress::Finish)
                .map_err(|_| GzipError::Data)?;
            match status {
                Status::StreamEnd => break,
                Status::Ok | Status::BufError => {
                    if out.len() == out.capacity() {
                        if out.len() >= MAX_OUT {
                            return Err(GzipError::TooLarge);
                        }
                        out.reserve(out.len().max(4096));
                    } else if self.inflate.total_in() == in_before
                        && self.inflate.total_out() == out_before
                    {
                        // Room to write and nothing happened: the data
                        // ends before the deflate stream does.
                        return Err(GzipError::Data);
                    }
                }
            }
        }
        if start + self.inflate.total_in() as usize + 8 != src.len() {
            return Err(GzipError::Trailer);
        }
        self.crc.reset();
        self.crc.update(out);
        if self.crc.sum() != want_crc || out.len() as u32 != want_len {
            return Err(GzipError::Trailer);
        }
        Ok(())
    }
}

/// `data` as one gzip member compressed at `level` (0-9), with the minimal
/// header (no name, no time, OS unknown), as Go's and this project's
/// servers write it.
pub fn compress(data: &[u8], level: u32) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(level.min(9)), false);
    let xfl = match level {
        1 => 4,
        9 => 2,
        _ => 0,
    };
    let mut out = Vec::with_capacity(data.len() / 4 + 64);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]);
    loop {
        let consumed = c.total_in() as usize;
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(4096));
        }
        // Compressing into a buffer with room never fails: errors are
        // misuse of the stream, which this loop does not do.
        match c.compress_vec(&data[consumed..], &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => break,
            Ok(_) => {}
            Err(e) => unreachable!("deflate refused its input: {e}"),
        }
    }
    let mut crc = Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Whether the `Accept-Encoding` values `values` (every such header line
/// of a request) allow a gzip answer, by the rule this project's server
/// follows: `gzip`, `x-gzip` or `*` with a q-value above 0, unless
/// `identity` is ranked strictly above it; a malformed q-value makes the
/// whole header mean "plain".
pub fn accepts_gzip<'a>(values: impl Iterator<Item = &'a [u8]>) -> bool {
    // The server's own negotiation: the ceiling must choose as it does.
    nsqlookupd::http::encoding::negotiate(values) == nsqlookupd::registry::Encoding::Gzip
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| {
                format!(
                    "{{\"node\":\"node-{:05}.bench\",\"port\":{}}},",
                    i,
                    10_000 + i
                )
            })
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn round_trips_at_every_level_on_one_decoder() {
        let mut d = Gunzip::new();
        let mut out = Vec::new();
        for level in 0..=9 {
            for data in [Vec::new(), b"{}".to_vec(), sample(500)] {
                let z = compress(&data, level);
                d.decode(&z, &mut out).unwrap();
                assert_eq!(out, data, "level {level}");
            }
        }
        // Level 1 shrinks JSON like an answer several times over.
        let data = sample(2000);
        assert!(compress(&data, 1).len() * 4 < data.len());
        assert_eq!(compress(&data, 1)[8], 4, "XFL says fastest");
    }

    #[test]
    fn reads_what_other_writers_write() {
        // flate2's own writer (another header layout: it sets no XFL) and
        // a header with every optional field set.
        let data = sample(300);
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        w.write_all(&data).unwrap();
        let z = w.finish().unwrap();
        let mut out = Vec::new();
        Gunzip::new().decode(&z, &mut out).unwrap();
        assert_eq!(out, data);

        let mut w = flate2::GzBuilder::new()
            .filename("answer.json")
            .comment("from a test")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::new(1));
        w.write_all(&data).unwrap();
        let z = w.finish().unwrap();
        assert!(header_len(&z).unwrap() > 10);
        Gunzip::new().decode(&z, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn keeps_its_buffer_once_grown() {
        let data = sample(1000);
        let z = compress(&data, 1);
        let mut d = Gunzip::new();
        let mut out = Vec::new();
        d.decode(&z, &mut out).unwrap();
        let (ptr, cap) = (out.as_ptr(), out.capacity());
        for _ in 0..5 {
            d.decode(&z, &mut out).unwrap();
            assert_eq!((out.as_ptr(), out.capacity()), (ptr, cap));
        }
        // A trailer that lies about the length only costs a regrowth.
        let mut short = z.clone();
        let n = short.len();
        short[n - 4..].copy_from_slice(&10u32.to_le_bytes());
        let mut fresh = Vec::new();
        assert_eq!(d.decode(&short, &mut fresh), Err(GzipError::Trailer));
        assert_eq!(fresh, data);
    }

    #[test]
    fn refuses_corrupt_or_cut_bodies() {
        let data = sample(400);
        let z = compress(&data, 1);
        let mut d = Gunzip::new();
        let mut out = Vec::new();
        assert_eq!(d.decode(b"{\"plain\":1}", &mut out), Err(GzipError::Header));
        assert_eq!(d.decode(&z[..5], &mut out), Err(GzipError::Header));
        assert!(d.decode(&z[..z.len() / 2], &mut out).is_err());
        assert_eq!(
            d.decode(&z[..z.len() - 3], &mut out),
            Err(GzipError::Trailer)
        );
        let mut extra = z.clone();
        extra.push(0);
        assert_eq!(d.decode(&extra, &mut out), Err(GzipError::Trailer));
        let mut crc = z.clone();
        let n = crc.len();
        crc[n - 8] ^= 1;
        assert_eq!(d.decode(&crc, &mut out), Err(GzipError::Trailer));
        let mut flipped = z.clone();
        flipped[20] ^= 0x55;
        assert!(d.decode(&flipped, &mut out).is_err());
        // The decoder is still good after every failure.
        d.decode(&z, &mut out).unwrap();
        assert_eq!(out, data);
    }

    fn ae(headers: &[&str]) -> bool {
        accepts_gzip(headers.iter().map(|h| h.as_bytes()))
    }

    #[test]
    fn accept_encoding() {
        assert!(ae(&["gzip"]), "Go's net/http, pynsq");
        assert!(ae(&["gzip, deflate"]), "nsqjs");
        assert!(ae(&["deflate, br", "gzip"]), "two header lines");
        assert!(ae(&["GZIP;Q=1.0"]) && ae(&["x-gzip"]) && ae(&["*"]));
        assert!(ae(&["gzip;q=0.001"]) && ae(&["identity;q=0, gzip"]));
        assert!(ae(&["gzip;q=0.5, identity;q=0.4"]));
        assert!(!ae(&[]) && !ae(&["identity"]) && !ae(&["deflate, br"]));
        assert!(!ae(&["gzip;q=0"]) && !ae(&["gzip; q=0.000"]) && !ae(&["*;q=0"]));
        assert!(!ae(&["*, gzip;q=0"]), "a named coding beats *");
        assert!(!ae(&["gzip;q=0.5, identity"]), "identity ranked higher");
        assert!(!ae(&["gzip;q=2"]) && !ae(&["gzip;q="]), "malformed: plain");
        assert!(!ae(&["gzipped"]) && !ae(&["xgzip"]));
    }
}

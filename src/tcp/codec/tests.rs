use super::*;

fn decode_all(codec: &mut LookupCodec, input: &[u8]) -> Result<Vec<Frame>, CodecError> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(f) = codec.decode(&mut buf)? {
        if f == Frame::Command(Command::Identify) {
            codec.expect_identify_body();
        }
        out.push(f);
    }
    Ok(out)
}

fn b(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn magic_then_commands() {
    let mut c = LookupCodec::new(1024, 1024);
    let frames = decode_all(&mut c, b"  V1PING\nREGISTER t c\nUNREGISTER t\n").unwrap();
    assert_eq!(
        frames,
        [
            Frame::Command(Command::Ping),
            Frame::Command(Command::Register {
                topic: b("t"),
                channel: b("c")
            }),
            Frame::Command(Command::Unregister {
                topic: b("t"),
                channel: None
            }),
        ]
    );
}

#[test]
fn bad_magic() {
    let mut c = LookupCodec::new(1024, 1024);
    assert!(matches!(
        decode_all(&mut c, b"PING\n"),
        Err(CodecError::BadMagic(m)) if &m == b"PING"
    ));
    let mut c = LookupCodec::new(1024, 1024);
    assert!(decode_all(&mut c, b"  V").unwrap().is_empty());
    assert!(c.awaiting_magic());
}

#[test]
fn lines_are_trimmed_and_split_on_single_spaces() {
    let cases: &[(&[u8], Command)] = &[
        (b"   PING   \n", Command::Ping),
        (b"PING\r\n", Command::Ping),
        (b"PING extra params\n", Command::Ping),
        (
            b"REGISTER  t1\n",
            Command::Register {
                topic: b(""),
                channel: b("t1"),
            },
        ),
        (
            b"REGISTER t2  c2\n",
            Command::Register {
                topic: b("t2"),
                channel: b(""),
            },
        ),
        (
            b" REGISTER t4 c4 \r\n",
            Command::Register {
                topic: b("t4"),
                channel: b("c4"),
            },
        ),
        (
            b"REGISTER\n",
            Command::Register {
                topic: None,
                channel: None,
            },
        ),
        (b"\n", Command::Unknown { name: Bytes::new() }),
        (b" \t \r\n", Command::Unknown { name: Bytes::new() }),
        (
            b"ping\n",
            Command::Unknown {
                name: b("ping").unwrap(),
            },
        ),
        (
            b"PING\tx\n",
            Command::Unknown {
                name: b("PING\tx").unwrap(),
            },
        ),
        ("\u{a0}PING\u{2003}\n".as_bytes(), Command::Ping),
        (
            b"\xffPING\n",
            Command::Unknown {
                name: Bytes::from_static(b"\xffPING"),
            },
        ),
    ];
    for (input, expected) in cases {
        let mut c = LookupCodec::after_magic(1024, 1024);
        let frames = decode_all(&mut c, input).unwrap();
        assert_eq!(
            frames,
            [Frame::Command(expected.clone())],
            "input {input:?}"
        );
    }
}

#[test]
fn partial_lines_wait_and_vanish_at_eof() {
    let mut c = LookupCodec::after_magic(1024, 1024);
    let mut buf = BytesMut::from(&b"PI"[..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"NG\nPI");
    assert_eq!(
        c.decode(&mut buf).unwrap(),
        Some(Frame::Command(Command::Ping))
    );
    assert!(c.decode(&mut buf).unwrap().is_none());
    assert!(c.decode_eof(&mut buf).unwrap().is_none());
}

#[test]
fn identify_body_is_read_only_when_asked() {
    let input = b"IDENTIFY\n\x00\x00\x00\x02{}PING\n";
    let mut c = LookupCodec::after_magic(1024, 1024);
    let frames = decode_all(&mut c, input).unwrap();
    assert_eq!(
        frames,
        [
            Frame::Command(Command::Identify),
            Frame::IdentifyBody(Bytes::from_static(b"{}")),
            Frame::Command(Command::Ping),
        ]
    );
    // without expect_identify_body, the size bytes are read as a line
    let mut c = LookupCodec::after_magic(1024, 1024);
    let mut buf = BytesMut::from(&input[..]);
    assert_eq!(
        c.decode(&mut buf).unwrap(),
        Some(Frame::Command(Command::Identify))
    );
    assert!(matches!(
        c.decode(&mut buf).unwrap(),
        Some(Frame::Command(Command::Unknown { .. }))
    ));
}

#[test]
fn body_sizes_outside_the_limit_are_refused_before_buffering() {
    for size in [-1i32, i32::MIN, 1025, i32::MAX] {
        let mut c = LookupCodec::after_magic(1024, 1024);
        let mut input = b"IDENTIFY\n".to_vec();
        input.extend_from_slice(&size.to_be_bytes());
        match decode_all(&mut c, &input) {
            Err(CodecError::BadBodySize {
                size: s,
                limit: 1024,
            }) => assert_eq!(s, size),
            other => panic!("size {size}: {other:?}"),
        }
    }
    let mut c = LookupCodec::after_magic(1024, 1024);
    let frames = decode_all(&mut c, b"IDENTIFY\n\x00\x00\x00\x00").unwrap();
    assert_eq!(frames[1], Frame::IdentifyBody(Bytes::new()));
}

#[test]
fn truncated_identify_at_eof() {
    let mut c = LookupCodec::after_magic(1024, 1024);
    let mut buf = BytesMut::from(&b"IDENTIFY\n\x00\x00"[..]);
    assert_eq!(
        c.decode(&mut buf).unwrap(),
        Some(Frame::Command(Command::Identify))
    );
    c.expect_identify_body();
    assert!(c.decode(&mut buf).unwrap().is_none());
    assert!(matches!(
        c.decode_eof(&mut buf),
        Err(CodecError::BodySizeTruncated)
    ));

    let mut c = LookupCodec::after_magic(1024, 1024);
    let mut buf = BytesMut::from(&b"IDENTIFY\n"[..]);
    c.decode(&mut buf).unwrap();
    c.expect_identify_body();
    assert!(matches!(
        c.decode_eof(&mut buf),
        Err(CodecError::BodySizeTruncated)
    ));

    let mut c = LookupCodec::after_magic(1024, 1024);
    let mut buf = BytesMut::from(&b"IDENTIFY\n\x00\x00\x00\x05{}"[..]);
    c.decode(&mut buf).unwrap();
    c.expect_identify_body();
    assert!(c.decode(&mut buf).unwrap().is_none());
    assert!(matches!(
        c.decode_eof(&mut buf),
        Err(CodecError::BodyTruncated)
    ));
}

#[test]
fn long_lines_are_refused_with_or_without_newline() {
    let mut c = LookupCodec::after_magic(8, 1024);
    assert_eq!(
        decode_all(&mut c, b"REGISTER\n").unwrap().len(),
        1,
        "exactly the limit is fine"
    );
    let mut c = LookupCodec::after_magic(8, 1024);
    assert!(matches!(
        decode_all(&mut c, b"REGISTERX\n"),
        Err(CodecError::LineTooLong { limit: 8 })
    ));
    let mut c = LookupCodec::after_magic(8, 1024);
    assert!(matches!(
        decode_all(&mut c, b"AAAAAAAAA"),
        Err(CodecError::LineTooLong { limit: 8 })
    ));
}

#[test]
fn error_responses() {
    let text = |e: CodecError| String::from_utf8(e.response().unwrap().to_vec()).unwrap();
    assert_eq!(text(CodecError::BadMagic(*b"  V2")), "E_BAD_PROTOCOL");
    assert_eq!(
        text(CodecError::BodySizeTruncated),
        "E_BAD_BODY IDENTIFY failed to read body size"
    );
    assert_eq!(
        text(CodecError::BodyTruncated),
        "E_BAD_BODY IDENTIFY failed to read body"
    );
    assert!(text(CodecError::BadBodySize { size: -1, limit: 9 }).starts_with("E_BAD_BODY "));
    assert!(text(CodecError::LineTooLong { limit: 9 }).starts_with("E_INVALID "));
}

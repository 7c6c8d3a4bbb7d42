use super::*;
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;
use HttpError::*;

const L: usize = 1024;

/// `Ok(Some((status, body)))` for `Done`, `Ok(None)` for `NeedMore`.
type Want = Result<Option<(u16, &'static [u8])>, HttpError>;

/// A `Done` response with owned fields, for comparisons.
#[derive(Debug, PartialEq)]
struct Owned {
    status: u16,
    retry_after: Option<RetryAfter>,
    www_authenticate: Option<String>,
    body: Vec<u8>,
}

/// Parses a copy of `input`; checks that `NeedMore` and errors leave the buffer unchanged.
fn run(input: &[u8], eof: bool, max_len: usize) -> Result<Option<Owned>, HttpError> {
    let mut buf = input.to_vec();
    let r = parse_response(&mut buf, eof, max_len).map(|p| match p {
        Parsed::NeedMore => None,
        Parsed::Done(r) => Some(Owned {
            status: r.status,
            retry_after: r.retry_after,
            www_authenticate: r.www_authenticate.map(ToString::to_string),
            body: r.body.to_vec(),
        }),
    });
    if !matches!(r, Ok(Some(_))) {
        assert_eq!(buf, input, "buffer modified before Done");
    }
    r
}

fn status_body(r: Result<Option<Owned>, HttpError>) -> Result<Option<(u16, Vec<u8>)>, HttpError> {
    r.map(|o| o.map(|o| (o.status, o.body)))
}

fn want_owned(w: &Want) -> Result<Option<(u16, Vec<u8>)>, HttpError> {
    w.map(|o| o.map(|(s, b)| (s, b.to_vec())))
}

#[rustfmt::skip]
const CASES: &[(&[u8], bool, usize, Want)] = &[
    // Content-Length.
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, L, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, L, Ok(Some((200, b"")))),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", false, L, Ok(None)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", true, L, Err(Truncated)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, L, Err(Truncated)),
    (b"HTTP/1.1 200 OK\r\ncontent-LENGTH:   5  \r\n\r\nhello", false, L, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", false, L, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", false, L, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", false, L, Err(BadContentLength)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!", false, L, Err(BadContentLength)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", false, L, Err(BadContentLength)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", false, L, Err(BadContentLength)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", false, L, Err(BadContentLength)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5.0\r\n\r\n", false, L, Err(BadContentLength)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", false, L, Err(BadContentLength)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n", false, L, Err(BadContentLength)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", false, L, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false, L, Err(Malformed)),
    // Chunked.
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false, L, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n", false, L, Ok(Some((200, b"Wikipedia in\r\n\r\nchunks.")))),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value;x\r\nhello\r\n1 ; y=\"z\"\r\n!\r\n0;last\r\n\r\n", false, L, Ok(Some((200, b"hello!")))),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nExpires: never\r\nX-Trailer:1\r\n\r\n", false, L, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\nA\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", false, L, Ok(Some((200, b"0123456789abcdefghij")))),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, L, Ok(Some((200, b"")))),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", false, L, Ok(None)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", true, L, Err(Truncated)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", true, L, Err(Truncated)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, L, Err(Truncated)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, L, Err(BadChunk)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n", false, L, Err(BadChunk)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", false, L, Err(BadChunk)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX", false, L, Err(BadChunk)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\rX", false, L, Err(BadChunk)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", false, L, Err(BadChunk)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", false, L, Err(BadChunk)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", false, L, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n", false, L, Err(BadChunk)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\n\r\n", false, L, Err(BadChunk)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n", false, L, Err(BadChunk)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, L, Err(UnsupportedTransferEncoding)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", false, L, Err(UnsupportedTransferEncoding)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", false, L, Err(UnsupportedTransferEncoding)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false, L, Err(UnsupportedTransferEncoding)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\n", false, L, Err(UnsupportedTransferEncoding)),
    // Until close.
    (b"HTTP/1.1 200 OK\r\n\r\nhello", false, L, Ok(None)),
    (b"HTTP/1.1 200 OK\r\n\r\nhello", true, L, Ok(Some((200, b"hello")))),
    (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello", true, L, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 500 Internal Server Error\r\n\r\n", true, L, Ok(Some((500, b"")))),
    // No body: 204, 304 (their framing headers are ignored).
    (b"HTTP/1.1 204 No Content\r\n\r\n", false, L, Ok(Some((204, b"")))),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", false, L, Ok(Some((304, b"")))),
    // 1xx skipped.
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, L, Ok(Some((200, b"ok")))),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno", false, L, Ok(Some((404, b"no")))),
    (b"HTTP/1.1 100 Continue\r\n\r\n", false, L, Ok(None)),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2", true, L, Err(Truncated)),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false, L, Err(Malformed)),
    // Short and malformed heads.
    (b"", false, L, Ok(None)),
    (b"", true, L, Err(Truncated)),
    (b"HTTP/1.1 200 OK\r\nContent-Len", false, L, Ok(None)),
    (b"HTTP/1.1 200 OK\r\nContent-Len", true, L, Err(Truncated)),
    (b"HTTP/1.1 200 OK\r\n\r", true, L, Err(Truncated)),
    (b"HTTP/2 200\r\n\r\n", false, L, Err(Malformed)),
    (b"hello world\r\n\r\n", false, L, Err(Malformed)),
    (b"HTTP/1.1 20 OK\r\n\r\n", false, L, Err(Malformed)),
    (b"HTTP/1.1 099 Odd\r\n\r\n", false, L, Err(Malformed)),
    (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", false, L, Err(Malformed)),
    (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", false, L, Err(Malformed)),
    // Limits: known too large before the bytes arrive, or more bytes than allowed.
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", false, L, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n", false, 58, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n", false, 59, Ok(None)),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, 43, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, 42, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n", false, L, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\na\r\n", false, 64, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false, 62, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false, 61, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\nServer: x\r\n", false, 16, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\nServer: x\r\n", true, 16, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\n\r\n0123456789", false, 25, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\n\r\n0123456789", true, 25, Err(TooLarge)),
    (b"HTTP/1.1 200 OK\r\n\r\n0123456789", true, 29, Ok(Some((200, b"0123456789")))),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 62, Err(TooLarge)),
    // Real captures (imds-protocol.md §9).
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 88\r\nContent-Type: application/json; charset=utf-8\r\nServer: IMDS/150.870.65.528\r\n\r\n{\"error\":\"invalid_request\",\"error_description\":\"Required metadata header not specified\"}", false, L, Ok(Some((400, b"{\"error\":\"invalid_request\",\"error_description\":\"Required metadata header not specified\"}")))),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 68\r\nContent-Type: application/json; charset=utf-8\r\nServer: IMDS/150.870.65.1015\r\n\r\n{\"error\":\"invalid_request\",\"error_description\":\"Identity not found\"}", false, L, Ok(Some((400, b"{\"error\":\"invalid_request\",\"error_description\":\"Identity not found\"}")))),
    (E15, false, L, Ok(Some((400, b"")))),
    (E16, false, L, Ok(Some((401, b"{\"error\":\"unauthorized_client\",\"error_description\":\"Missing Basic Authorization header\",\"error_codes\":[401]}")))),
];

/// Complete responses followed by more bytes (ignored, even beyond `max_len`).
#[rustfmt::skip]
const TRAILING: &[(&[u8], usize, Want)] = &[
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n", L, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello and more bytes after it", 43, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n005\r\nhello\r\n0\r\n\r\nHTTP/1.1", L, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nmore", 62, Ok(Some((200, b"hello")))),
    (b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n", L, Ok(Some((204, b"")))),
];

#[test]
fn trailing_bytes_ignored() {
    for (input, max_len, want) in TRAILING {
        for eof in [false, true] {
            let got = status_body(run(input, eof, *max_len));
            assert_eq!(
                got,
                want_owned(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

/// E15: App Service's empty chunked 400.
const E15: &[u8] = b"HTTP/1.1 400 Bad Request\r\nDate: Fri, 21 May 2021 17:14:33 GMT\r\nServer: Kestrel\r\nTransfer-Encoding: chunked\r\nX-CORRELATION-ID: 4ce26535-1769-4001-96e3-9019ce00922d\r\n\r\n0\r\n\r\n";
/// E16: Arc's challenge.
const E16: &[u8] = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nWWW-Authenticate: Basic realm=/var/opt/azcmagent/tokens/x.key\r\nContent-Length: 108\r\n\r\n{\"error\":\"unauthorized_client\",\"error_description\":\"Missing Basic Authorization header\",\"error_codes\":[401]}";

/// E1: the real head with `Content-Length: 1718`; the redacted token is padded back to
/// the captured length.
fn e1() -> (Vec<u8>, Vec<u8>) {
    let token = "x".repeat(1486);
    let body = format!("{{\"access_token\":\"{token}\",\"client_id\":\"fe83865b-495e-4ec7-9574-12b264882c9f\",\"expires_in\":\"86311\",\"expires_on\":\"1643312761\",\"ext_expires_in\":\"86399\",\"not_before\":\"1643226061\",\"resource\":\"https://management.azure.com\",\"token_type\":\"Bearer\"}}");
    assert_eq!(body.len(), 1718);
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 1718\r\nContent-Type: application/json; charset=utf-8\r\nServer: IMDS/150.870.65.528\r\n\r\n";
    (
        [head.as_bytes(), body.as_bytes()].concat(),
        body.into_bytes(),
    )
}

#[test]
fn cases() {
    for (i, (input, eof, max_len, want)) in CASES.iter().enumerate() {
        let got = status_body(run(input, *eof, *max_len));
        assert_eq!(
            got,
            want_owned(want),
            "case {i}: {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn e1_real_capture() {
    let (input, body) = e1();
    assert_eq!(
        status_body(run(&input, false, 16 * 1024 + 4096)),
        Ok(Some((200, body)))
    );
    assert_eq!(run(&input, false, 1024), Err(TooLarge));
    let head_and_some = input.get(..200).unwrap();
    assert_eq!(run(head_and_some, false, 1024), Err(TooLarge));
    assert_eq!(run(head_and_some, false, 8192), Ok(None));
    assert_eq!(run(head_and_some, true, 8192), Err(Truncated));
}

#[test]
fn e15_e16_fields() {
    let e16 = run(E16, false, L).unwrap().unwrap();
    assert_eq!(
        e16.www_authenticate.as_deref(),
        Some("Basic realm=/var/opt/azcmagent/tokens/x.key")
    );
    assert_eq!(e16.retry_after, None);
    let e15 = run(E15, false, L).unwrap().unwrap();
    assert_eq!(
        (e15.status, e15.www_authenticate, e15.retry_after),
        (400, None, None)
    );
    // Arc's challenge without a Content-Length: the body runs to the close.
    let no_cl = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=/var/opt/azcmagent/tokens/x.key\r\n\r\n{}";
    assert_eq!(run(no_cl, false, L), Ok(None));
    let done = run(no_cl, true, L).unwrap().unwrap();
    assert_eq!((done.status, done.body.as_slice()), (401, &b"{}"[..]));
    assert_eq!(
        done.www_authenticate.as_deref(),
        Some("Basic realm=/var/opt/azcmagent/tokens/x.key")
    );
}

/// Every complete response of the table (and E1), fed one byte at a time: `NeedMore`
/// (and `Truncated` at eof) for every strict prefix, then the same `Done` as the whole.
#[test]
#[cfg_attr(miri, ignore = "every prefix of every case: too slow under Miri")]
fn one_byte_at_a_time() {
    let e1 = e1().0;
    let inputs = CASES
        .iter()
        .filter(|(_, eof, _, want)| !eof && matches!(want, Ok(Some(_))))
        .map(|&(input, _, max_len, _)| (input, max_len))
        .chain([(e1.as_slice(), 8192)]);
    let mut fed = 0;
    for (input, max_len) in inputs {
        let whole = run(input, false, max_len);
        assert!(
            matches!(whole, Ok(Some(_))),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        let mut received = Vec::new();
        for (n, &byte) in input.iter().enumerate() {
            assert_eq!(run(&received, false, max_len), Ok(None), "prefix {n}");
            assert_eq!(
                run(&received, true, max_len),
                Err(Truncated),
                "prefix {n} at eof"
            );
            received.push(byte);
        }
        assert_eq!(run(&received, false, max_len), whole);
        assert_eq!(run(&received, true, max_len), whole);
        fed += 1;
    }
    assert!(fed >= 20, "{fed}");
}

/// The de-chunked body lies in the caller's buffer, right after the head.
#[test]
fn dechunks_in_place() {
    let mut buf =
        *b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n";
    let head_len = 47;
    let Ok(Parsed::Done(r)) = parse_response(&mut buf, false, L) else {
        panic!()
    };
    assert_eq!(r.body, b"abcde");
    assert_eq!(buf.get(head_len..head_len + 5), Some(&b"abcde"[..]));
}

#[rustfmt::skip]
const RETRY_AFTER: &[(&str, Option<RetryAfter>)] = &[
    ("Retry-After: 120\r\n", Some(RetryAfter::Seconds(120))),
    ("retry-after:0\r\n", Some(RetryAfter::Seconds(0))),
    ("RETRY-AFTER:   7   \r\n", Some(RetryAfter::Seconds(7))),
    ("Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", Some(RetryAfter::EpochSeconds(1445412480))),
    ("Retry-After: Sunday, 06-Nov-94 08:49:37 GMT\r\n", Some(RetryAfter::EpochSeconds(784111777))),
    ("Retry-After: Sun Nov  6 08:49:37 1994\r\n", Some(RetryAfter::EpochSeconds(784111777))),
    ("Retry-After: 99999999999999999999999\r\n", Some(RetryAfter::Seconds(u64::MAX))),
    ("Retry-After: -1\r\n", None),
    ("Retry-After: 1.5\r\n", None),
    ("Retry-After: soon\r\n", None),
    ("Retry-After: \r\n", None),
    ("Retry-After: Wed, 21 Oct 2015 07:28:00 UTC\r\n", None),
    ("Retry-After: soon\r\nRetry-After: 3\r\n", Some(RetryAfter::Seconds(3))),
    ("Retry-After: 3\r\nRetry-After: 4\r\n", Some(RetryAfter::Seconds(3))),
    ("X-Retry-After: 3\r\n", None),
    ("", None),
];

#[test]
fn retry_after() {
    for (headers, want) in RETRY_AFTER {
        for status in ["429 Too Many Requests", "503 Service Unavailable"] {
            let input = format!("HTTP/1.1 {status}\r\n{headers}Content-Length: 0\r\n\r\n");
            let got = run(input.as_bytes(), false, L).unwrap().unwrap();
            assert_eq!(got.retry_after, *want, "{headers:?}");
        }
    }
}

#[rustfmt::skip]
const WWW_AUTHENTICATE: &[(&[u8], Option<&str>)] = &[
    (b"WWW-Authenticate: Basic realm=/var/opt/azcmagent/tokens/x.key\r\n", Some("Basic realm=/var/opt/azcmagent/tokens/x.key")),
    (b"www-authenticate: Basic realm=C:\\ProgramData\\AzureConnectedMachineAgent\\Tokens\\x.key\r\n", Some("Basic realm=C:\\ProgramData\\AzureConnectedMachineAgent\\Tokens\\x.key")),
    (b"WWW-Authenticate: Bearer\r\nWWW-Authenticate: Basic realm=x\r\n", Some("Bearer")),
    (b"WWW-Authenticate: Basic realm=\xff\r\nWWW-Authenticate: Basic realm=y\r\n", Some("Basic realm=y")),
    (b"WWW-Authenticate: Basic realm=\xff\r\n", None),
    (b"Proxy-Authenticate: Basic realm=x\r\n", None),
    (b"", None),
];

#[test]
fn www_authenticate() {
    for (headers, want) in WWW_AUTHENTICATE {
        let input = [
            b"HTTP/1.1 401 Unauthorized\r\n",
            *headers,
            b"Content-Length: 0\r\n\r\n",
        ]
        .concat();
        let got = run(&input, false, L).unwrap().unwrap();
        assert_eq!(
            got.www_authenticate.as_deref(),
            *want,
            "{:?}",
            String::from_utf8_lossy(headers)
        );
    }
}

#[test]
fn header_count() {
    for (count, want) in [
        (31, Ok(())),
        (32, Err(TooManyHeaders)),
        (40, Err(TooManyHeaders)),
    ] {
        // `count` extra headers plus Content-Length.
        let mut input = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..count {
            input.push_str(&format!("X-H{i}: v\r\n"));
        }
        input.push_str("Content-Length: 2\r\n\r\nok");
        let got = run(input.as_bytes(), false, 4096).map(|r| assert_eq!(r.unwrap().body, b"ok"));
        assert_eq!(got, want, "{count}");
    }
}

#[test]
fn debug_hides_body() {
    let mut buf = *b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret";
    let Ok(Parsed::Done(r)) = parse_response(&mut buf, false, L) else {
        panic!()
    };
    let text = format!("{r:?}");
    assert!(
        !text.contains("secret") && text.contains("body_len: 6"),
        "{text}"
    );
    assert_eq!(TooLarge.to_string(), TooLarge.as_str());
}

/// Prefixes and single-byte changes of every case never panic, whatever the limit.
#[test]
#[cfg_attr(
    miri,
    ignore = "every prefix and mutation of every case: hours under Miri; fuzzed instead"
)]
fn no_panics() {
    let subst = [
        b'0', b'5', b'f', b'\r', b'\n', b' ', b':', b';', b',', b'1', 0x00, 0xff,
    ];
    for (input, ..) in CASES {
        for n in 0..=input.len() {
            for max_len in [0, 16, 50, L] {
                for eof in [false, true] {
                    let _ = run(input.get(..n).unwrap(), eof, max_len);
                }
            }
        }
        for i in 0..input.len() {
            for c in subst {
                let mut m = input.to_vec();
                m[i] = c;
                for eof in [false, true] {
                    let _ = run(&m, eof, L);
                    let _ = run(&m, eof, 60);
                }
            }
        }
    }
}

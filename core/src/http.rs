//! HTTP/1.1 response framing over `httparse` (D6, D7).
//!
//! The caller keeps every byte received so far and calls [`parse_response`] again with more;
//! a short input is [`Parsed::NeedMore`], not an error. Nothing is allocated: headers are read
//! into a stack array of [`MAX_HEADERS`], and a chunked body is de-chunked in place.

use core::fmt;

use httparse::Status;

use crate::time::{parse_http_date, parse_seconds, TimeError};

/// Most header fields accepted in one response head (more is [`HttpError::TooManyHeaders`]).
pub const MAX_HEADERS: usize = 32;

/// The state of an incremental parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The input ends before the value does: call again with more bytes.
    NeedMore,
    /// The complete value.
    Done(T),
}

/// A `Retry-After` header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// Delta-seconds (saturating at `u64::MAX` for absurdly long digit strings).
    Seconds(u64),
    /// An HTTP-date, as epoch seconds.
    Date(u64),
}

/// A complete HTTP response; every slice borrows the caller's buffer.
///
/// `Debug` prints the body's length only: a body may carry a token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Response<'b> {
    /// The status code of the final response (1xx interim responses are skipped).
    pub status: u16,
    /// The first `Retry-After` header that parses as delta-seconds or an HTTP-date.
    pub retry_after: Option<RetryAfter>,
    /// The first `WWW-Authenticate` header value that is valid UTF-8.
    pub www_authenticate: Option<&'b str>,
    /// The body, de-chunked if it was sent chunked.
    pub body: &'b [u8],
}

impl fmt::Debug for Response<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("retry_after", &self.retry_after)
            .field("www_authenticate", &self.www_authenticate)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why a response could not be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// The status line or a header is not valid HTTP/1.x, the status is below 100 or 101, or
    /// both `Transfer-Encoding` and `Content-Length` are present.
    Malformed,
    /// The head has more than 32 header fields.
    TooManyHeaders,
    /// The response is, or is announced to be, longer than the limit.
    TooLarge,
    /// The connection closed before the head or the body was complete (retryable).
    Truncated,
    /// A chunk-size line, the CRLF after a chunk or a trailer line is invalid.
    BadChunk,
    /// `Content-Length` is not a number, or two values differ.
    BadContentLength,
    /// A transfer coding other than a single `chunked`.
    UnsupportedTransferEncoding,
}

impl HttpError {
    /// A short description of the error.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed HTTP response",
            Self::TooManyHeaders => "more than 32 header fields in the HTTP response",
            Self::TooLarge => "HTTP response longer than the limit",
            Self::Truncated => "connection closed before the HTTP response was complete",
            Self::BadChunk => "invalid chunked encoding",
            Self::BadContentLength => "invalid or conflicting Content-Length",
            Self::UnsupportedTransferEncoding => "unsupported Transfer-Encoding",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for HttpError {}

/// Frames one HTTP/1.x response.
///
/// `buf` holds every byte received so far (the caller keeps them and calls again with more);
/// `eof` says the peer closed the connection; `max_len` bounds the whole response (head and
/// body, including 1xx interim heads).
///
/// Body framing: `Transfer-Encoding: chunked` (extensions and trailers allowed and ignored),
/// else `Content-Length`, else until the connection closes; 1xx responses are skipped, and
/// 204 and 304 have no body. Bytes after a complete response are ignored.
///
/// When the response is complete and chunked, the body is de-chunked in place inside `buf`
/// (hence `&mut`); until then `buf` is not modified, so parsing again from the start works.
///
/// Errors: [`HttpError::Truncated`] when `eof` comes before the end of the response;
/// [`HttpError::TooLarge`] as soon as the response is known to exceed `max_len`, either
/// because more bytes than that arrived without completing it or because a `Content-Length`
/// or a chunk size announces it.
pub fn parse_response(
    buf: &mut [u8],
    eof: bool,
    max_len: usize,
) -> Result<Parsed<Response<'_>>, HttpError> {
    let over = buf.len() > max_len;
    let limit = buf.len().min(max_len);
    // The answer while the response is not complete within `limit` bytes.
    let short = || {
        if over {
            Err(HttpError::TooLarge)
        } else if eof {
            Err(HttpError::Truncated)
        } else {
            Ok(Parsed::NeedMore)
        }
    };
    let Some(head) = final_head(buf.get(..limit).unwrap_or_default())? else {
        return short();
    };
    let body = match head.framing {
        Framing::NoBody => head.end..head.end,
        Framing::Length(len) => {
            let end = u64::try_from(head.end)
                .ok()
                .and_then(|e| e.checked_add(len))
                .and_then(|e| usize::try_from(e).ok())
                .ok_or(HttpError::TooLarge)?;
            if end > max_len {
                return Err(HttpError::TooLarge);
            }
            if end > limit {
                return short();
            }
            head.end..end
        }
        Framing::Close => {
            if over {
                return Err(HttpError::TooLarge);
            }
            if !eof {
                return Ok(Parsed::NeedMore);
            }
            head.end..limit
        }
        Framing::Chunked => {
            let Some(len) = dechunk(buf, head.end, limit, max_len, false)? else {
                return short();
            };
            // The same walk again, now moving the chunk data together.
            dechunk(buf, head.end, limit, max_len, true)?;
            head.end..head.end.checked_add(len).ok_or(HttpError::BadChunk)?
        }
    };
    let buf: &[u8] = buf;
    // The head's bytes are unchanged (de-chunking writes after them): read the fields that
    // borrow from `buf` now.
    let (retry_after, www_authenticate) = head_fields(buf.get(head.start..head.end))?;
    Ok(Parsed::Done(Response {
        status: head.status,
        retry_after,
        www_authenticate,
        body: buf.get(body).ok_or(HttpError::Malformed)?,
    }))
}

/// How the body of a response is delimited.
#[derive(Clone, Copy)]
enum Framing {
    NoBody,
    Length(u64),
    Chunked,
    Close,
}

/// The final (non-1xx) response head: its byte range and framing.
struct Head {
    start: usize,
    end: usize,
    status: u16,
    framing: Framing,
}

/// Skips 1xx heads; `None` while the final head is incomplete.
fn final_head(view: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut start = 0usize;
    loop {
        let rest = view.get(start..).ok_or(HttpError::Malformed)?;
        let Some((len, status, framing)) = read_head(rest)? else {
            return Ok(None);
        };
        if len == 0 {
            return Err(HttpError::Malformed);
        }
        let end = start.checked_add(len).ok_or(HttpError::Malformed)?;
        if status < 200 {
            start = end;
            continue;
        }
        return Ok(Some(Head {
            start,
            end,
            status,
            framing,
        }));
    }
}

/// One response head: its length, status and body framing; `None` while incomplete.
fn read_head(buf: &[u8]) -> Result<Option<(usize, u16, Framing)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(_) => return Err(HttpError::Malformed),
    };
    let status = res.code.ok_or(HttpError::Malformed)?;
    // 101 Switching Protocols: never asked for, and what follows is not HTTP.
    if status < 100 || status == 101 {
        return Err(HttpError::Malformed);
    }
    let framing = if status < 200 || status == 204 || status == 304 {
        Framing::NoBody
    } else {
        framing(res.headers)?
    };
    Ok(Some((len, status, framing)))
}

/// The body framing a head's `Transfer-Encoding` and `Content-Length` fields announce.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, HttpError> {
    let mut transfer_encoding = false;
    let mut chunked = 0u32;
    let mut content_length: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in h.value.split(|&c| c == b',').map(trim_ows) {
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked = chunked.saturating_add(1);
                } else if !coding.is_empty() {
                    return Err(HttpError::UnsupportedTransferEncoding);
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // `Content-Length: 42, 42` is allowed (RFC 9110 §8.6); differing values are not.
            for part in h.value.split(|&c| c == b',').map(trim_ows) {
                let n = parse_content_length(part)?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(HttpError::BadContentLength);
                }
                content_length = Some(n);
            }
        }
    }
    match (transfer_encoding, content_length) {
        (true, Some(_)) => Err(HttpError::Malformed),
        (true, None) if chunked == 1 => Ok(Framing::Chunked),
        (true, None) => Err(HttpError::UnsupportedTransferEncoding),
        (false, Some(n)) => Ok(Framing::Length(n)),
        (false, None) => Ok(Framing::Close),
    }
}

fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    let s = core::str::from_utf8(v).map_err(|_| HttpError::BadContentLength)?;
    match parse_seconds(s) {
        Ok(n) => Ok(n),
        // A number too long for 64 bits is certainly longer than any limit.
        Err(TimeError::Overflow) => Err(HttpError::TooLarge),
        Err(_) => Err(HttpError::BadContentLength),
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Walks a chunked body that starts at `start` within `buf[..limit]`.
///
/// Answers the de-chunked length once the last chunk and the trailer section are complete,
/// `None` before. With `write` the chunk data is moved together to start at `start`; without,
/// `buf` is only read.
fn dechunk(
    buf: &mut [u8],
    start: usize,
    limit: usize,
    max_len: usize,
    write: bool,
) -> Result<Option<usize>, HttpError> {
    let mut pos = start; // read position
    let mut out = start; // write position, never past `pos`
    loop {
        let rest = buf.get(pos..limit).ok_or(HttpError::BadChunk)?;
        match rest.first() {
            None => return Ok(None),
            Some(c) if !c.is_ascii_hexdigit() => return Err(HttpError::BadChunk),
            Some(_) => {}
        }
        let (line_len, size) = match httparse::parse_chunk_size(rest) {
            Ok(Status::Complete(v)) => v,
            Ok(Status::Partial) => return Ok(None),
            Err(_) => return Err(HttpError::BadChunk),
        };
        pos = pos.checked_add(line_len).ok_or(HttpError::TooLarge)?;
        if size == 0 {
            break;
        }
        let data_end = usize::try_from(size)
            .ok()
            .and_then(|size| pos.checked_add(size))
            .ok_or(HttpError::TooLarge)?;
        let chunk_end = data_end.checked_add(2).ok_or(HttpError::TooLarge)?;
        if chunk_end > max_len {
            return Err(HttpError::TooLarge);
        }
        // The CRLF after the data, checked as soon as its bytes are there.
        let crlf = buf.get(data_end..chunk_end.min(limit)).unwrap_or_default();
        if !b"\r\n".starts_with(crlf) {
            return Err(HttpError::BadChunk);
        }
        if chunk_end > limit {
            return Ok(None);
        }
        if write {
            // In bounds: out <= pos <= data_end <= limit <= buf.len().
            buf.copy_within(pos..data_end, out);
        }
        out = out.checked_add(data_end - pos).ok_or(HttpError::BadChunk)?;
        pos = chunk_end;
    }
    // Trailer section: header lines, each ending in CRLF, then an empty line.
    loop {
        let rest = buf.get(pos..limit).ok_or(HttpError::BadChunk)?;
        let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
            return Ok(None);
        };
        let field = match rest.get(..nl).and_then(<[u8]>::split_last) {
            Some((b'\r', field)) => field,
            _ => return Err(HttpError::BadChunk),
        };
        if !field.is_empty() && !field.contains(&b':') {
            return Err(HttpError::BadChunk);
        }
        pos = pos
            .checked_add(nl)
            .and_then(|p| p.checked_add(1))
            .ok_or(HttpError::BadChunk)?;
        if field.is_empty() {
            return Ok(Some(out - start));
        }
    }
}

/// `Retry-After` and `WWW-Authenticate` of a complete head.
fn head_fields(head: Option<&[u8]>) -> Result<(Option<RetryAfter>, Option<&str>), HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    match head.map(|h| res.parse(h)) {
        Some(Ok(Status::Complete(_))) => {}
        _ => return Err(HttpError::Malformed),
    }
    let mut retry_after = None;
    let mut www_authenticate = None;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = retry_after.or_else(|| parse_retry_after(h.value));
        } else if h.name.eq_ignore_ascii_case("www-authenticate") {
            www_authenticate = www_authenticate.or_else(|| core::str::from_utf8(h.value).ok());
        }
    }
    Ok((retry_after, www_authenticate))
}

/// Delta-seconds or an HTTP-date; `None` for anything else.
fn parse_retry_after(v: &[u8]) -> Option<RetryAfter> {
    let s = core::str::from_utf8(trim_ows(v)).ok()?;
    match parse_seconds(s) {
        Ok(n) => Some(RetryAfter::Seconds(n)),
        Err(TimeError::Overflow) => Some(RetryAfter::Seconds(u64::MAX)),
        Err(_) => parse_http_date(s).ok().map(RetryAfter::Date),
    }
}

#[cfg(test)]
mod tests {
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

    fn status_body(
        r: Result<Option<Owned>, HttpError>,
    ) -> Result<Option<(u16, Vec<u8>)>, HttpError> {
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
        let mut buf = *b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n";
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
        ("Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", Some(RetryAfter::Date(1445412480))),
        ("Retry-After: Sunday, 06-Nov-94 08:49:37 GMT\r\n", Some(RetryAfter::Date(784111777))),
        ("Retry-After: Sun Nov  6 08:49:37 1994\r\n", Some(RetryAfter::Date(784111777))),
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
            let got =
                run(input.as_bytes(), false, 4096).map(|r| assert_eq!(r.unwrap().body, b"ok"));
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
}

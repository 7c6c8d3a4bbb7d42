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
    EpochSeconds(u64),
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
        Err(_) => parse_http_date(s).ok().map(RetryAfter::EpochSeconds),
    }
}

#[cfg(test)]
mod tests;

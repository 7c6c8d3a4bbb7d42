//! Minimal HTTP/1.1: reading one request, writing one response (one request per connection).

use std::io::{self, Read, Write};

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug, Default)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    /// The first header with that name (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed (or timed out) before sending a whole request.
    Closed,
    /// The bytes are not an HTTP/1.x request we accept.
    Bad(&'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Closed
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Reads one request (head and a `Content-Length` body).
pub(crate) fn read_request(stream: &mut impl Read) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::Bad("request head too large"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        // A TLS record (a ClientHello) never ends in a blank line: answer at once, as plain
        // HTTP servers do, instead of waiting for a head that never comes.
        if buf.is_empty() && chunk[0] == 0x16 {
            return Err(ReadError::Bad("a TLS handshake on a plain-HTTP port"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head =
        std::str::from_utf8(&buf[..head_end - 4]).map_err(|_| ReadError::Bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => return Err(ReadError::Bad("malformed request line")),
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad("unsupported HTTP version"));
    }
    let mut headers = Vec::new();
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            return Err(ReadError::Bad("malformed header line"));
        };
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let mut req = Request {
        method: method.to_string(),
        path,
        query,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| !v.eq_ignore_ascii_case("identity"))
    {
        return Err(ReadError::Bad("chunked request bodies are not supported"));
    }
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ReadError::Bad("bad Content-Length"))?,
    };
    if len > MAX_BODY {
        return Err(ReadError::Bad("request body too large"));
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    req.body = body;
    Ok(req)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s`; `+` is a space (form encoding, which query strings use too).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decoded `name=value` pairs of a query string or form body, in order.
pub(crate) fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// The first name that occurs twice (case-insensitive), if any.
pub(crate) fn duplicate(pairs: &[(String, String)]) -> Option<String> {
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(j, _)| j.eq_ignore_ascii_case(k)) {
            return Some(k.clone());
        }
    }
    None
}

/// The value of the first pair with this name.
pub(crate) fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A response to write.
#[derive(Clone, Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// A status line sent instead of `HTTP/1.1 <status> <reason>` (a proxy's own wording).
    pub(crate) status_line: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            status_line: None,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub(crate) fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, body).header("Content-Type", "application/json; charset=utf-8")
    }

    pub(crate) fn header(mut self, k: &str, v: impl Into<String>) -> Response {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

/// How the body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ends when the connection closes.
    Eof,
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// The response's head and (framed) body as bytes.
pub(crate) fn serialize(resp: &Response, framing: Framing) -> (Vec<u8>, Vec<u8>) {
    let mut head = match &resp.status_line {
        Some(line) => format!("{line}\r\n"),
        None => format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status)),
    };
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut body = Vec::new();
    match framing {
        Framing::Length => {
            head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
            body.extend_from_slice(&resp.body);
        }
        Framing::Chunked => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            // Three chunks (or fewer), so that chunk boundaries fall inside the JSON.
            let n = resp.body.len();
            let step = n.div_ceil(3).max(1);
            for part in resp.body.chunks(step) {
                body.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                body.extend_from_slice(part);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
        }
        Framing::Eof => {}
    }
    if framing == Framing::Eof {
        body.extend_from_slice(&resp.body);
    }
    head.push_str("Connection: close\r\n\r\n");
    (head.into_bytes(), body)
}

/// Writes all of `bytes` and flushes.
pub(crate) fn write_all(stream: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(
            percent_decode("https%3A%2F%2Fvault.azure.net"),
            "https://vault.azure.net"
        );
        assert_eq!(percent_decode("a+b%2Bc%"), "a b+c%");
        assert_eq!(percent_decode("%4"), "%4");
        let p = parse_pairs("a=1&b=&c&A=2");
        assert_eq!(p.len(), 4);
        assert_eq!(duplicate(&p).as_deref(), Some("A"));
    }
}

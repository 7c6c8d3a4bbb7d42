//! A plain HTTP/1.1 client over `TcpStream` (hand-written requests) and JSON helpers.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

pub mod tls;

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub raw: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Map<String, Value> {
        match serde_json::from_slice(&self.body) {
            Ok(Value::Object(m)) => m,
            other => panic!("not a JSON object: {other:?}: {}", self.text()),
        }
    }
    /// Top-level keys of the JSON body, in wire order.
    pub fn keys(&self) -> Vec<String> {
        keys_in_order(&self.text())
    }
    pub fn str(&self, k: &str) -> String {
        self.json()[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} not a string in {}", self.text()))
            .to_string()
    }
}

/// Top-level keys of a JSON object, in order (a small scanner, so that order is kept).
pub fn keys_in_order(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut keys = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let end = i;
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if depth == 1 && j < b.len() && b[j] == b':' {
                    keys.push(s[start..end].to_string());
                }
            }
            _ => {}
        }
        i += 1;
    }
    keys
}

/// Sends raw bytes, reads until the server closes.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Parses a complete response (Content-Length, chunked, or ended by close).
pub fn parse(raw: Vec<u8>) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)))
        + 4;
    let head = String::from_utf8(raw[..end - 4].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    // HTTP/1.0: the status line of Docker Desktop's proxy (the `unreachable_403` fault).
    assert!(
        status_line.starts_with("HTTP/1.1 ") || status_line.starts_with("HTTP/1.0 "),
        "{status_line}"
    );
    let status: u16 = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let rest = &raw[end..];
    let body = if let Some(len) = find("content-length") {
        let len: usize = len.parse().unwrap();
        assert_eq!(rest.len(), len, "body length vs Content-Length");
        rest.to_vec()
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        decode_chunked(rest).expect("valid chunked body")
    } else {
        rest.to_vec()
    };
    Resp {
        status,
        headers,
        body,
        raw,
    }
}

/// Decodes a chunked body; returns None when it is incomplete or malformed.
pub fn decode_chunked(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..nl]).ok()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return (b == b"\r\n").then_some(out);
        }
        if b.len() < size + 2 || &b[size..size + 2] != b"\r\n" {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Resp {
    parse(exchange(addr, &request("GET", target, headers, b"")).unwrap())
}

pub fn post(addr: SocketAddr, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    parse(exchange(addr, &request("POST", target, headers, body)).unwrap())
}

pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub const ARM: &str = "https://management.azure.com/";
pub const VAULT: &str = "https://vault.azure.net";

/// IMDS token path for a resource plus extra `&k=v` (already encoded).
pub fn imds_target(resource: &str, extra: &str) -> String {
    format!(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}{extra}",
        enc(resource)
    )
}

/// An IMDS token request with `Metadata: true`.
pub fn imds(addr: SocketAddr, resource: &str, extra: &str) -> Resp {
    get(addr, &imds_target(resource, extra), &[("Metadata", "true")])
}

/// The JWT's header and claims, decoded independently of the emulator's code.
pub fn jwt(token: &str) -> (Map<String, Value>, Map<String, Value>) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "three parts");
    let dec = |p: &str| -> Map<String, Value> {
        let bytes = URL_SAFE_NO_PAD.decode(p).expect("base64url");
        match serde_json::from_slice(&bytes).expect("JSON") {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    };
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 256);
    (dec(parts[0]), dec(parts[1]))
}

pub fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        _ => panic!("not a number: {v}"),
    }
}

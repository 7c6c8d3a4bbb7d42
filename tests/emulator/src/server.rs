//! Accepting connections and delivering planned responses (one request per connection).

use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::handler::{self, Delivery, Plan};
use crate::http::{self, Framing, ReadError, Response};
use crate::state::{Key, Shared};

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The token endpoint and the control API, over TLS in HTTPS modes.
    Main,
    /// Only the control API, over plain HTTP (beside an HTTPS main listener).
    Control,
}

/// Accepts until shutdown, one thread per connection, at most `max_connections` at once.
pub(crate) fn accept_loop(sh: Arc<Shared>, listener: TcpListener, role: Role) {
    for conn in listener.incoming() {
        if sh.is_shutdown() {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(_) => {
                // Out of descriptors and the like: back off a little.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        {
            let mut n = sh.connections.lock().unwrap_or_else(|e| e.into_inner());
            while *n >= sh.cfg.max_connections && !sh.is_shutdown() {
                n = sh
                    .connections_cv
                    .wait_timeout(n, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if sh.is_shutdown() {
                break;
            }
            *n += 1;
        }
        sh.accepted.fetch_add(1, Ordering::SeqCst);
        // Arrival is the accept, not the moment the request has been read and parsed: a busy
        // machine must not squeeze arrivals together and throttle a client that kept the rate.
        let arrived = Instant::now();
        let s = Arc::clone(&sh);
        let spawned = std::thread::Builder::new()
            .name("imds-emulator-conn".into())
            .spawn(move || {
                serve(&s, stream, role, arrived);
                let mut n = s.connections.lock().unwrap_or_else(|e| e.into_inner());
                *n -= 1;
                s.connections_cv.notify_all();
            });
        if spawned.is_err() {
            sh.accepted.fetch_sub(1, Ordering::SeqCst);
            let mut n = sh.connections.lock().unwrap_or_else(|e| e.into_inner());
            *n -= 1;
        }
    }
}

/// Ends a request's "in flight" period exactly once.
struct InFlight<'a> {
    sh: &'a Shared,
    accepted: bool,
    admitted: bool,
    key: Option<Key>,
}

impl InFlight<'_> {
    fn finish(&mut self) {
        if self.accepted {
            self.accepted = false;
            self.sh.accepted.fetch_sub(1, Ordering::SeqCst);
        }
        if self.admitted {
            self.admitted = false;
            self.sh.admitted_done();
        }
        if let Some(k) = self.key.take() {
            self.sh.lock().key_done(&k);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

fn serve(sh: &Shared, tcp: TcpStream, role: Role, arrived: Instant) {
    let mut flight = InFlight {
        sh,
        accepted: true,
        admitted: false,
        key: None,
    };
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(30)));
    let tls = match role {
        Role::Main => sh.tls.as_ref().and_then(|t| t.config.as_ref()),
        Role::Control => None,
    };
    let mut stream = match Conn::accept(tcp, tls) {
        Ok(c) => c,
        Err(_) => {
            sh.lock().count_tls_failure();
            return;
        }
    };
    let req = match http::read_request(&mut stream) {
        Ok(r) => r,
        Err(ReadError::Closed) => return,
        Err(ReadError::Bad(msg)) => {
            flight.finish();
            let r = handler::error(sh.cfg.mode, 400, "invalid_request", msg);
            send(&mut stream, &r, Framing::Length);
            close(stream);
            return;
        }
    };
    let framing = if sh.cfg.chunked {
        Framing::Chunked
    } else {
        Framing::Length
    };
    if req.path == "/control" || req.path.starts_with("/control/") || role == Role::Control {
        flight.finish();
        let r = crate::control::handle(sh, &req);
        send(&mut stream, &r, framing);
        close(stream);
        return;
    }
    if !sh.admit(arrived) {
        let r = handler::status_error(sh.cfg.mode, 429);
        sh.lock().count_status("429", None);
        send(&mut stream, &r, framing);
        flight.finish();
        close(stream);
        return;
    }
    flight.admitted = true;
    let plan = handler::plan(sh, &req);
    flight.key = plan.key.clone();
    execute(sh, stream, plan, &mut flight);
}

fn send(stream: &mut Conn, resp: &Response, framing: Framing) {
    let (mut head, body) = http::serialize(resp, framing);
    head.extend_from_slice(&body);
    let _ = http::write_all(stream, &head);
}

fn close(stream: Conn) {
    stream.close();
}

/// Sleeps up to `ms`, returning early when the emulator stops.
fn nap(sh: &Shared, ms: u64) {
    let end = Instant::now() + Duration::from_millis(ms);
    while !sh.is_shutdown() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

fn execute(sh: &Shared, mut stream: Conn, plan: Plan, flight: &mut InFlight<'_>) {
    let label = match plan.delivery {
        Delivery::Reset => "reset".to_string(),
        Delivery::Hang(_) => "hang".to_string(),
        _ => plan.resp.status.to_string(),
    };
    sh.lock().count_status(&label, plan.key.as_ref());
    if plan.delay_ms > 0 {
        nap(sh, plan.delay_ms);
    }
    match plan.delivery {
        Delivery::Normal(framing) => {
            // The request stops counting as in flight as its last byte goes out: a client can
            // only start its next request after reading that byte, so it is never seen as
            // overlapping the one it just finished.
            let (mut bytes, body) = http::serialize(&plan.resp, framing);
            bytes.extend_from_slice(&body);
            let last = bytes.pop();
            let _ = http::write_all(&mut stream, &bytes);
            flight.finish();
            if let Some(last) = last {
                let _ = http::write_all(&mut stream, &[last]);
            }
            close(stream);
        }
        Delivery::Truncate(bytes) => {
            let (mut head, body) = http::serialize(&plan.resp, Framing::Length);
            let n = bytes
                .unwrap_or(body.len() / 2)
                .min(body.len().saturating_sub(1));
            head.extend_from_slice(&body[..n]);
            let _ = http::write_all(&mut stream, &head);
            flight.finish();
            close(stream);
        }
        Delivery::Trickle { chunk, interval_ms } => {
            let framing = if sh.cfg.chunked {
                Framing::Chunked
            } else {
                Framing::Length
            };
            let (mut all, body) = http::serialize(&plan.resp, framing);
            all.extend_from_slice(&body);
            let mut pieces = all.chunks(chunk).peekable();
            while let Some(p) = pieces.next() {
                if sh.is_shutdown() || http::write_all(&mut stream, p).is_err() {
                    break;
                }
                if pieces.peek().is_some() {
                    nap(sh, interval_ms);
                }
            }
            flight.finish();
            close(stream);
        }
        Delivery::Reset => {
            let _ = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO));
            flight.finish();
            drop(stream);
        }
        Delivery::Hang(limit) => {
            let start = Instant::now();
            let _ = stream
                .tcp()
                .set_read_timeout(Some(Duration::from_millis(50)));
            let mut buf = [0u8; 1024];
            loop {
                if sh.is_shutdown()
                    || limit.is_some_and(|ms| start.elapsed() >= Duration::from_millis(ms))
                {
                    break;
                }
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            flight.finish();
            close(stream);
        }
    }
}

//! The socket side of a fetch: connect with a timeout, send, read within the attempt's
//! deadline. No proxy is ever consulted (`HTTP_PROXY` and friends are not read) and nothing
//! follows redirects: the core classifies a 3xx as a failure.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use imds_cache::Transport;

/// Per-attempt time limits (D7).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// Connecting (1 s).
    pub(crate) connect: Duration,
    /// All reads of one attempt together (10 s): a trickle is cut.
    pub(crate) attempt: Duration,
}

/// An open exchange with the endpoint.
pub(crate) struct Connection {
    stream: TcpStream,
    deadline: Instant,
}

fn classify_connect(e: &io::Error) -> Transport {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Transport::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            Transport::Unreachable
        }
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Transport::ConnectTimeout,
        _ => Transport::Unreachable,
    }
}

impl Connection {
    /// Connects to `host:port` (each resolved address in turn) and sends `request`.
    pub(crate) fn open(
        host: &str,
        port: u16,
        request: &[u8],
        t: Timeouts,
    ) -> Result<Self, Transport> {
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|_| Transport::Unreachable)?;
        let mut last = Transport::Unreachable;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, t.connect) {
                Ok(mut stream) => {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_write_timeout(Some(t.attempt));
                    stream.write_all(request).map_err(|_| Transport::Reset)?;
                    return Ok(Self {
                        stream,
                        deadline: Instant::now() + t.attempt,
                    });
                }
                Err(e) => last = classify_connect(&e),
            }
        }
        Err(last)
    }

    /// Appends what arrives to `buf`, at most `max` bytes in all; `Ok(0)` is the end of the
    /// stream. Past the attempt's deadline the read fails as `Reset`.
    pub(crate) fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> Result<usize, Transport> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Transport::Reset);
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|_| Transport::Reset)?;
        let mut chunk = [0u8; 8192];
        let room = max.saturating_sub(buf.len()).clamp(1, chunk.len());
        match self.stream.read(&mut chunk[..room]) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(self.read_into(buf, max)?),
            Err(_) => Err(Transport::Reset),
        }
    }
}

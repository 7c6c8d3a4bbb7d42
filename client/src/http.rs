//! The socket side of a fetch: connect with a timeout, send, read within the attempt's
//! deadline. No proxy is ever consulted (`HTTP_PROXY` and friends are not read) and nothing
//! follows redirects: the core classifies a 3xx as a failure.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use imds_cache::Transport;

use crate::error::TlsError;

/// Per-attempt time limits (D7).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// Connecting (1 s).
    pub(crate) connect: Duration,
    /// All reads of one attempt together (10 s): a trickle is cut.
    pub(crate) attempt: Duration,
}

/// The certificate an HTTPS endpoint must present (uninhabited without TLS support).
#[cfg(feature = "service-fabric-tls")]
pub(crate) type Pin = crate::tls::Thumbprint;
/// The certificate an HTTPS endpoint must present (uninhabited without TLS support).
#[cfg(not(feature = "service-fabric-tls"))]
pub(crate) type Pin = std::convert::Infallible;

/// Why a connection could not be opened.
pub(crate) enum OpenError {
    /// Connecting or sending failed (the core classifies it).
    Transport(Transport),
    /// TLS refused the endpoint.
    #[cfg_attr(not(feature = "service-fabric-tls"), allow(dead_code))]
    Tls(TlsError),
}

/// The byte stream of a connection: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "service-fabric-tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            #[cfg(feature = "service-fabric-tls")]
            Self::Tls(s) => &s.sock,
        }
    }

    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.write_all(request),
            #[cfg(feature = "service-fabric-tls")]
            Self::Tls(s) => s.write_all(request).and_then(|()| s.flush()),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            #[cfg(feature = "service-fabric-tls")]
            Self::Tls(s) => match s.read(buf) {
                // A close without TLS's close_notify: the core decides whether the response
                // is complete (its framing), as for a plain close.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

/// An open exchange with the endpoint.
pub(crate) struct Connection {
    stream: Stream,
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
    /// Connects to `host:port` (each resolved address in turn), over TLS accepting only the
    /// certificate `pin` when one is given, and sends `request`. The handshake counts
    /// against the attempt's time as the reads do.
    pub(crate) fn open(
        host: &str,
        port: u16,
        pin: Option<Pin>,
        request: &[u8],
        t: Timeouts,
    ) -> Result<Self, OpenError> {
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|_| OpenError::Transport(Transport::Unreachable))?;
        let mut last = Transport::Unreachable;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, t.connect) {
                Ok(tcp) => {
                    let deadline = Instant::now() + t.attempt;
                    let _ = tcp.set_nodelay(true);
                    let _ = tcp.set_write_timeout(Some(t.attempt));
                    let _ = tcp.set_read_timeout(Some(t.attempt));
                    let mut stream = match pin {
                        None => Stream::Plain(tcp),
                        #[cfg(feature = "service-fabric-tls")]
                        Some(pin) => match crate::tls::connect(tcp, host, pin) {
                            Ok(s) => Stream::Tls(Box::new(s)),
                            Err(Some(refused)) => return Err(OpenError::Tls(refused)),
                            Err(None) => return Err(OpenError::Transport(Transport::Reset)),
                        },
                        #[cfg(not(feature = "service-fabric-tls"))]
                        Some(never) => match never {},
                    };
                    stream
                        .send(request)
                        .map_err(|_| OpenError::Transport(Transport::Reset))?;
                    return Ok(Self { stream, deadline });
                }
                Err(e) => last = classify_connect(&e),
            }
        }
        Err(OpenError::Transport(last))
    }

    /// Reads what arrives into `buf` (the free part of the caller's bounded buffer); `Ok(0)`
    /// is the end of the stream. Past the attempt's deadline the read fails as `Reset`.
    pub(crate) fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, Transport> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Transport::Reset);
            }
            self.stream
                .tcp()
                .set_read_timeout(Some(left))
                .map_err(|_| Transport::Reset)?;
            match self.stream.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Transport::Reset),
            }
        }
    }
}

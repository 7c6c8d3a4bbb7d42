//! One accepted connection, plain TCP or TLS over it, read and written the same way.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// An accepted connection.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Conn {
    /// Wraps an accepted socket; with a TLS configuration, completes the handshake first (an
    /// error means the client refused the certificate, spoke plain HTTP, or went away).
    pub(crate) fn accept(mut tcp: TcpStream, tls: Option<&Arc<ServerConfig>>) -> io::Result<Conn> {
        let Some(config) = tls else {
            return Ok(Conn::Plain(tcp));
        };
        let mut conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            let (read, wrote) = conn.complete_io(&mut tcp)?;
            if read == 0 && wrote == 0 && conn.is_handshaking() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(Conn::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }

    /// The TCP socket underneath (timeouts, linger).
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }

    /// Ends the stream (TLS: `close_notify`), half-closes, then drains what the client still
    /// sends so that closing does not reset.
    pub(crate) fn close(mut self) {
        if let Conn::Tls(s) = &mut self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let mut tcp = match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.sock,
        };
        let _ = tcp.shutdown(Shutdown::Write);
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < 64 * 1024 {
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

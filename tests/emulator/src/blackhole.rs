//! Loopback addresses where no managed identity is: one whose connects time out (a
//! "blackhole", the off-Azure 169.254.169.254 without sending it a byte) and one whose connects
//! are refused.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use socket2::{Domain, Protocol, Socket, Type};

fn bound(addr: SocketAddr) -> io::Result<Socket> {
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "blackholes and refused ports are on loopback only",
        ));
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn local(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))
}

fn http_url(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("http://{a}"),
        SocketAddr::V6(a) => format!("http://[{}]:{}", a.ip(), a.port()),
    }
}

/// A loopback listener whose accept queue is full: the kernel drops new connection requests
/// (SYNs), so a connect neither succeeds nor is refused but times out, as on a machine where
/// 169.254.169.254 has no route. Nothing is ever accepted or answered. Dropping it closes the
/// port.
///
/// Linux keeps `backlog + 1` connections in a listener's accept queue and drops SYNs beyond
/// that; the listener uses backlog 0 and holds one connection it never accepts.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    // Held open: the listener and the connection that fills its queue.
    _listener: Socket,
    _filler: TcpStream,
}

impl Blackhole {
    /// A blackhole on `127.0.0.1`, on a free port.
    pub fn start() -> io::Result<Blackhole> {
        Blackhole::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// A blackhole on this loopback address (port 0: a free one); other addresses are refused.
    pub fn bind(addr: SocketAddr) -> io::Result<Blackhole> {
        let listener = bound(addr)?;
        listener.listen(0)?;
        let addr = local(&listener)?;
        // The queue is empty, so this handshake completes in the kernel and fills it.
        let filler = TcpStream::connect(addr)?;
        Ok(Blackhole {
            addr,
            _listener: listener,
            _filler: filler,
        })
    }

    /// The address whose connects time out.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        http_url(self.addr)
    }
}

/// A loopback port that refuses connections: a socket bound to it but not listening, so the
/// kernel answers every connect with a reset and no other program can take the port while this
/// value lives. Dropping it frees the port.
#[derive(Debug)]
pub struct Refused {
    addr: SocketAddr,
    _socket: Socket,
}

impl Refused {
    /// A refused port on `127.0.0.1`.
    pub fn start() -> io::Result<Refused> {
        Refused::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// A refused port on this loopback address (port 0: a free one).
    pub fn bind(addr: SocketAddr) -> io::Result<Refused> {
        let socket = bound(addr)?;
        let addr = local(&socket)?;
        Ok(Refused {
            addr,
            _socket: socket,
        })
    }

    /// The address whose connects are refused.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        http_url(self.addr)
    }
}

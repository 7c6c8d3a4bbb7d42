//! A local emulator of the Azure managed-identity token endpoints: IMDS, App Service
//! (2019-08-01 and 2017-09-01), Azure ML, Cloud Shell, Azure Arc, Service Fabric (HTTPS with a
//! pinned self-signed certificate) and the legacy VM extension; plus loopback addresses where no
//! endpoint is ([`Blackhole`]: connects time out; [`Refused`]: connects are refused).
//!
//! It answers like the real endpoints (see `shared/imds-protocol.md` §§1–5 and §10), throttles
//! as DESIGN.md D9 describes, fails on demand ([`Fault`]), and reports what it saw
//! ([`Stats`]). It shares no code with the `imds-cache` crates on purpose.
//!
//! ```no_run
//! use imds_emulator::{Config, Emulator};
//! let emu = Emulator::start(Config::default()).unwrap();
//! println!("AZURE_POD_IDENTITY_AUTHORITY_HOST={}", emu.url());
//! assert_eq!(emu.stats().requests, 0);
//! ```

mod blackhole;
mod conn;
mod control;
mod fault;
mod handler;
mod http;
mod identity;
mod server;
mod service_fabric;
mod state;
mod tls;
mod token;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use blackhole::{Blackhole, Refused};
pub use fault::{Fault, FaultRule};
pub use identity::{Identity, RESOURCE_GROUP, SUBSCRIPTION_ID, TENANT_ID, VM_NAME};
pub use state::{IssuedToken, KeyStats, Stats};
pub use tls::thumbprint;
pub use token::{decode_claims, MsiClock};

/// Which endpoint flavour the emulator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Azure VM IMDS: `GET /metadata/identity/oauth2/token`, `Metadata: true`.
    Imds,
    /// App Service / Functions 2019-08-01 (`X-IDENTITY-HEADER`, `GET /msi/token`); also
    /// answers the 2017-09-01 protocol (`secret` header) as App Service does.
    AppService2019,
    /// App Service 2017-09-01 only: `secret` header, `clientid`, date-string `expires_on`.
    Msi2017,
    /// Azure Machine Learning: 2017-09-01 request, `clientid`, numeric `expires_on`.
    AzureMl,
    /// Cloud Shell: `POST /oauth2/token` with a form body, nested error bodies.
    CloudShell,
    /// Azure Arc (HIMDS): 401 challenge naming a key file, then `Authorization: Basic`.
    Arc,
    /// The retired VM extension: `/oauth2/token` on localhost:50342, no api-version.
    VmExt,
    /// Service Fabric: HTTPS with a self-signed certificate whose thumbprint clients pin
    /// (`IDENTITY_SERVER_THUMBPRINT`), `secret` header, api-version `2019-07-01-preview`.
    ServiceFabric,
}

/// What the token listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP.
    Http,
    /// HTTPS with a self-signed certificate made at start; the control API is then also
    /// served over plain HTTP on a second port ([`Emulator::control_url`]).
    Https,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 8] = [
        Mode::Imds,
        Mode::AppService2019,
        Mode::Msi2017,
        Mode::AzureMl,
        Mode::CloudShell,
        Mode::Arc,
        Mode::VmExt,
        Mode::ServiceFabric,
    ];

    /// The command-line name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Imds => "imds",
            Mode::AppService2019 => "appservice2019",
            Mode::Msi2017 => "msi2017",
            Mode::AzureMl => "azureml",
            Mode::CloudShell => "cloudshell",
            Mode::Arc => "arc",
            Mode::VmExt => "vmext",
            Mode::ServiceFabric => "service-fabric",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Path of the token endpoint in this mode.
    pub fn token_path(self) -> &'static str {
        match self {
            Mode::Imds | Mode::Arc | Mode::ServiceFabric => "/metadata/identity/oauth2/token",
            Mode::AppService2019 | Mode::Msi2017 | Mode::AzureMl => "/msi/token",
            Mode::CloudShell | Mode::VmExt => "/oauth2/token",
        }
    }
}

/// How the emulator is started.
#[derive(Clone, Debug)]
pub struct Config {
    /// Endpoint flavour.
    pub mode: Mode,
    /// Address to listen on (port 0: an ephemeral port).
    pub bind: SocketAddr,
    /// Whether the system-assigned identity is enabled.
    pub system_assigned: bool,
    /// Number of user-assigned identities (`uai-1` … `uai-N`).
    pub identities: usize,
    /// Token lifetime in seconds (`exp − iat`).
    pub token_lifetime: u64,
    /// Length of minted tokens in characters (≈ bytes).
    pub token_size: usize,
    /// Whether throttling (D9) is on.
    pub throttle: bool,
    /// Request starts admitted per window.
    pub rate: u32,
    /// Extra starts tolerated per window above `rate` (arrival jitter).
    pub slack: u32,
    /// Length of the sliding window in milliseconds.
    pub window_ms: u64,
    /// Requests admitted in flight at once (from accept to the last byte written).
    pub concurrency: u32,
    /// The App Service / MSI secret (`X-IDENTITY-HEADER` or `secret`).
    pub secret: String,
    /// Where Arc key files are written (default: a fresh temporary directory).
    pub arc_key_dir: Option<PathBuf>,
    /// Clock of App Service 2017's date strings.
    pub msi_clock: MsiClock,
    /// Faults active from the start.
    pub faults: Vec<FaultRule>,
    /// Send every response with `Transfer-Encoding: chunked` instead of `Content-Length`.
    pub chunked: bool,
    /// Answer `invalid_resource` for resources that are neither a URL (`scheme://…`) nor a
    /// GUID (Entra's AADSTS500011).
    pub reject_unknown_resources: bool,
    /// Most connections served at once (one thread each); further ones wait to be accepted.
    pub max_connections: usize,
    /// HTTP or HTTPS; `None`: the mode's own (HTTPS for Service Fabric, HTTP otherwise).
    pub transport: Option<Transport>,
    /// Advertise (in `IDENTITY_SERVER_THUMBPRINT`, [`Emulator::thumbprint`]) the thumbprint of
    /// a certificate that is never served, so that a client that pins it must refuse the
    /// server.
    pub wrong_thumbprint: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Imds,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            system_assigned: true,
            identities: 0,
            token_lifetime: 86_400,
            token_size: 1_800,
            throttle: true,
            rate: 20,
            slack: 1,
            window_ms: 1_000,
            concurrency: 5,
            secret: "853b9a84-5bfa-4b22-a3f3-0b9a43d9ad8a".to_string(),
            arc_key_dir: None,
            msi_clock: MsiClock::H24,
            faults: Vec::new(),
            chunked: false,
            reject_unknown_resources: true,
            max_connections: 512,
            transport: None,
            wrong_thumbprint: false,
        }
    }
}

impl Config {
    /// The default configuration in another mode.
    pub fn new(mode: Mode) -> Config {
        Config {
            mode,
            ..Config::default()
        }
    }

    /// The transport in effect: `transport`, else the mode's own.
    pub fn transport(&self) -> Transport {
        self.transport.unwrap_or(match self.mode {
            Mode::ServiceFabric => Transport::Https,
            _ => Transport::Http,
        })
    }
}

/// A running emulator. Dropping it stops the server and removes the Arc key files.
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<state::Shared>,
    addr: SocketAddr,
    control_addr: SocketAddr,
    accept: Vec<JoinHandle<()>>,
}

fn spawn_accept(
    shared: &Arc<state::Shared>,
    listener: std::net::TcpListener,
    role: server::Role,
) -> io::Result<JoinHandle<()>> {
    let s = Arc::clone(shared);
    std::thread::Builder::new()
        .name("imds-emulator-accept".into())
        .spawn(move || server::accept_loop(s, listener, role))
}

impl Emulator {
    /// Binds and starts serving on background threads. In HTTPS modes the certificate is made
    /// here; [`Emulator::thumbprint`] tells it.
    pub fn start(config: Config) -> io::Result<Emulator> {
        let (shared, listeners) = state::Shared::new(config)?;
        let shared = Arc::new(shared);
        let addr = listeners.main.local_addr()?;
        let control_addr = match &listeners.control {
            Some(c) => c.local_addr()?,
            None => addr,
        };
        let mut emu = Emulator {
            shared,
            addr,
            control_addr,
            accept: Vec::new(),
        };
        // Pushed one by one, so that Drop stops what was started if a spawn fails.
        let main = spawn_accept(&emu.shared, listeners.main, server::Role::Main)?;
        emu.accept.push(main);
        if let Some(c) = listeners.control {
            let control = spawn_accept(&emu.shared, c, server::Role::Control)?;
            emu.accept.push(control);
        }
        Ok(emu)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (what `AZURE_POD_IDENTITY_AUTHORITY_HOST` wants), or
    /// `https://127.0.0.1:PORT` when serving HTTPS.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// Address of the plain-HTTP control API: [`Emulator::addr`] unless serving HTTPS.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// `http://127.0.0.1:PORT` of the control API ([`Emulator::url`] unless serving HTTPS).
    pub fn control_url(&self) -> String {
        self.shared.control_url.clone()
    }

    /// Whether the token listener speaks TLS.
    pub fn is_https(&self) -> bool {
        self.shared.tls.as_ref().is_some_and(|t| t.config.is_some())
    }

    /// The thumbprint clients are told to pin (`IDENTITY_SERVER_THUMBPRINT`): SHA-1 of the DER
    /// certificate in 40 upper-case hex digits. `Some` in Service Fabric mode (also over plain
    /// HTTP) and whenever HTTPS is served; with [`Config::wrong_thumbprint`], not the served
    /// certificate's.
    pub fn thumbprint(&self) -> Option<&str> {
        self.shared.tls.as_ref().map(|t| t.advertised.as_str())
    }

    /// The thumbprint of the certificate actually served, when serving HTTPS.
    pub fn served_thumbprint(&self) -> Option<&str> {
        self.shared
            .tls
            .as_ref()
            .filter(|t| t.config.is_some())
            .map(|t| t.served_thumbprint.as_str())
    }

    /// The served certificate, DER-encoded, when serving HTTPS.
    pub fn certificate_der(&self) -> Option<&[u8]> {
        self.shared
            .tls
            .as_ref()
            .filter(|t| t.config.is_some())
            .map(|t| t.served.der.as_slice())
    }

    /// The served certificate in PEM, when serving HTTPS (for tools that want a CA file).
    pub fn certificate_pem(&self) -> Option<&str> {
        self.shared
            .tls
            .as_ref()
            .filter(|t| t.config.is_some())
            .map(|t| t.served.pem.as_str())
    }

    /// Full URL of the token endpoint (`IDENTITY_ENDPOINT`/`MSI_ENDPOINT`).
    pub fn token_url(&self) -> String {
        format!("{}{}", self.url(), self.shared.cfg.mode.token_path())
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.shared.cfg.mode
    }

    /// The App Service / MSI secret.
    pub fn secret(&self) -> &str {
        &self.shared.cfg.secret
    }

    /// Directory of the Arc key files.
    pub fn arc_key_dir(&self) -> &Path {
        &self.shared.arc_dir
    }

    /// Environment variables that point SDKs at this emulator in its mode.
    pub fn env(&self) -> Vec<(String, String)> {
        state::env_hints(&self.shared)
    }

    /// Every enabled identity: the system-assigned one first (when enabled), then `uai-1`….
    pub fn identities(&self) -> Vec<Identity> {
        self.shared.enabled_identities()
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Every token minted since start (or the last reset), oldest first.
    pub fn tokens(&self) -> Vec<IssuedToken> {
        self.shared.lock().tokens.clone()
    }

    /// The emulator's clock: Unix seconds, plus every advance.
    pub fn now(&self) -> u64 {
        self.shared.now()
    }

    /// Moves the emulator's clock forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.shared.lock().offset += secs;
    }

    /// Replaces the active faults.
    pub fn set_faults(&self, faults: Vec<FaultRule>) {
        self.shared.lock().set_faults(faults);
    }

    /// Adds a fault after the active ones.
    pub fn add_fault(&self, fault: FaultRule) {
        self.shared.lock().add_fault(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The active faults, with their remaining counts.
    pub fn faults(&self) -> Vec<FaultRule> {
        self.shared
            .lock()
            .faults
            .iter()
            .map(|a| a.rule.clone())
            .collect()
    }

    /// Clears the statistics and the token log.
    pub fn reset_stats(&self) {
        self.shared.lock().reset_stats();
    }

    /// Clears statistics, token log, token cache, faults and the clock offset.
    pub fn reset_all(&self) {
        self.shared.lock().reset_all();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
        // Wake the accept loops.
        let mut wake = vec![self.addr];
        if self.control_addr != self.addr {
            wake.push(self.control_addr);
        }
        for mut addr in wake.into_iter().take(self.accept.len()) {
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv6() {
                    std::net::Ipv6Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv4Addr::LOCALHOST.into()
                });
            }
            let _ = TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1));
        }
        for h in self.accept.drain(..) {
            let _ = h.join();
        }
        self.shared.cleanup();
    }
}

//! `imds-emulator`: serves the managed-identity token endpoint of one flavour on a local port.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use imds_emulator::{Blackhole, Config, Emulator, FaultRule, Mode, MsiClock, Refused, Transport};

const USAGE: &str = "\
imds-emulator: a local emulator of the Azure managed-identity token endpoints

USAGE: imds-emulator [OPTIONS]

  --mode MODE            imds (default) | appservice2019 | msi2017 | azureml | cloudshell | arc |
                         vmext | service-fabric; or blackhole | refused (a loopback port whose
                         connects time out / are refused; only --host and --port apply)
  --host IP              address to bind (default 127.0.0.1)
  --port PORT            port to bind; 0 (default) picks a free one
  --identities N         user-assigned identities uai-1..uai-N (default 0)
  --no-system-assigned   disable the system-assigned identity
  --token-lifetime SECS  token lifetime (default 86400)
  --token-size BYTES     token length (default 1800)
  --throttle on|off      throttling as DESIGN.md D9 (default on)
  --rate N               request starts per window (default 20)
  --slack N              extra starts tolerated per window (default 1)
  --window-ms MS         sliding window length (default 1000)
  --concurrency N        requests in flight at once (default 5)
  --secret VALUE         App Service / MSI secret (X-IDENTITY-HEADER, secret)
  --arc-key-dir DIR      where Arc key files are written (default: a temporary directory)
  --msi-clock 12|24      clock of App Service 2017 date strings (default 24)
  --fault SPEC           a fault rule, repeatable, e.g. 'kind=status,status=503,count=3'
  --chunked              send every response with Transfer-Encoding: chunked
  --accept-any-resource  do not answer invalid_resource for non-URL, non-GUID resources
  --max-connections N    connections served at once (default 512)
  --tls                  serve HTTPS with a self-signed certificate (default in service-fabric)
  --plain                serve plain HTTP (service-fabric: the thumbprint is still advertised)
  --wrong-thumbprint     advertise the thumbprint of a certificate that is not served
  -h, --help             this text

The first line on stdout is the base URL, http://127.0.0.1:PORT (https:// when serving
HTTPS). When there is a certificate thumbprint, a line 'thumbprint HEX' follows (SHA-1 of the
DER certificate, 40 upper-case hex digits, as IDENTITY_SERVER_THUMBPRINT); when the control
API is on another port (HTTPS), a line 'control http://127.0.0.1:PORT'. Environment variables
that point SDKs at the emulator follow on stderr. SIGINT or SIGTERM stops it (exit status 0).
";

/// What to run.
enum Run {
    Emulator(Config),
    Blackhole(SocketAddr),
    Refused(SocketAddr),
}

fn parse_args(args: &[String]) -> Result<Run, String> {
    let mut cfg = Config::default();
    let mut special: Option<&str> = None;
    let mut host: IpAddr = [127, 0, 0, 1].into();
    let mut port: u16 = 0;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{flag}: not a valid number: {v}"))
        }
        match flag.as_str() {
            "--mode" => {
                let v = value()?;
                special = match v.as_str() {
                    "blackhole" => Some("blackhole"),
                    "refused" => Some("refused"),
                    _ => {
                        cfg.mode = Mode::parse(&v).ok_or_else(|| format!("unknown mode {v}"))?;
                        None
                    }
                };
            }
            "--host" => {
                let v = value()?;
                host = v
                    .parse()
                    .map_err(|_| format!("--host: not an IP address: {v}"))?;
            }
            "--port" => port = num(flag, value()?)?,
            "--identities" => cfg.identities = num(flag, value()?)?,
            "--no-system-assigned" => cfg.system_assigned = false,
            "--token-lifetime" => cfg.token_lifetime = num(flag, value()?)?,
            "--token-size" => cfg.token_size = num(flag, value()?)?,
            "--throttle" => {
                cfg.throttle = match value()?.as_str() {
                    "on" | "true" => true,
                    "off" | "false" => false,
                    v => return Err(format!("--throttle: expected on or off, got {v}")),
                }
            }
            "--rate" => cfg.rate = num(flag, value()?)?,
            "--slack" => cfg.slack = num(flag, value()?)?,
            "--window-ms" => cfg.window_ms = num(flag, value()?)?,
            "--concurrency" => cfg.concurrency = num(flag, value()?)?,
            "--secret" => cfg.secret = value()?,
            "--arc-key-dir" => cfg.arc_key_dir = Some(PathBuf::from(value()?)),
            "--msi-clock" => {
                cfg.msi_clock = match value()?.as_str() {
                    "12" => MsiClock::H12,
                    "24" => MsiClock::H24,
                    v => return Err(format!("--msi-clock: expected 12 or 24, got {v}")),
                }
            }
            "--fault" => cfg.faults.push(FaultRule::parse(&value()?)?),
            "--chunked" => cfg.chunked = true,
            "--accept-any-resource" => cfg.reject_unknown_resources = false,
            "--max-connections" => cfg.max_connections = num(flag, value()?)?,
            "--tls" | "--plain" => {
                let t = if flag == "--tls" {
                    Transport::Https
                } else {
                    Transport::Http
                };
                if cfg.transport.is_some_and(|old| old != t) {
                    return Err("--tls and --plain exclude each other".to_string());
                }
                cfg.transport = Some(t);
            }
            "--wrong-thumbprint" => cfg.wrong_thumbprint = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let bind = SocketAddr::new(host, port);
    cfg.bind = bind;
    Ok(match special {
        Some("blackhole") => Run::Blackhole(bind),
        Some(_) => Run::Refused(bind),
        None => Run::Emulator(cfg),
    })
}

/// Prints the first stdout lines (flushed at once), then waits for SIGINT or SIGTERM.
fn serve_until_signal(mut signals: signal_hook::iterator::Signals, lines: &[String]) -> ExitCode {
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(lines.concat().as_bytes());
        let _ = out.flush();
    }
    let _ = signals.forever().next();
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let run = match parse_args(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("imds-emulator: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Register the handlers before serving, so that a signal is never lost.
    let signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("imds-emulator: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = match run {
        Run::Emulator(cfg) => cfg,
        Run::Blackhole(addr) => {
            return match Blackhole::bind(addr) {
                Ok(b) => {
                    eprintln!(
                        "imds-emulator: blackhole at {} (connects time out)",
                        b.url()
                    );
                    serve_until_signal(signals, &[format!("{}\n", b.url())])
                }
                Err(e) => {
                    eprintln!("imds-emulator: cannot start a blackhole: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Run::Refused(addr) => {
            return match Refused::bind(addr) {
                Ok(r) => {
                    eprintln!("imds-emulator: refused port at {}", r.url());
                    serve_until_signal(signals, &[format!("{}\n", r.url())])
                }
                Err(e) => {
                    eprintln!("imds-emulator: cannot reserve a port: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    };
    let emu = match Emulator::start(cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("imds-emulator: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut lines = vec![format!("{}\n", emu.url())];
    if let Some(t) = emu.thumbprint() {
        lines.push(format!("thumbprint {t}\n"));
    }
    if emu.control_url() != emu.url() {
        lines.push(format!("control {}\n", emu.control_url()));
    }
    eprintln!(
        "imds-emulator: mode {} at {}",
        emu.mode().name(),
        emu.token_url()
    );
    for (k, v) in emu.env() {
        eprintln!("{k}={v}");
    }
    let status = serve_until_signal(signals, &lines);
    drop(emu);
    status
}

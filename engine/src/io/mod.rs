//! The daemon's edge: the only part of the engine with sockets, threads, clocks and `unsafe`.
//!
//! * [`config`]: the daemon's `key = value` configuration file.
//! * [`control_socket`]: the control plane, nfnetlink (cttimeout) over a Unix `SOCK_SEQPACKET`
//!   socket, served by one mio loop with the signals (`SIGHUP` reloads the rules, `SIGTERM`/`SIGINT`
//!   stop).
//! * [`port`]: the batch trait every datapath port implements, with [`afpacket`] (`AF_PACKET`
//!   rings on an Ethernet interface), [`tun`] (TUN queues of raw IP) and [`pcap_port`] (replay and
//!   capture files).
//! * [`datapath`]: router-mode workers driving the ports through the router, rules and conntrack.
//! * [`tunnel`]: TUN mode: the kernel routes through ferrowall's TUN devices, ferrowall filters.
//! * [`bridge`]: bridge mode.
//! * `worker`: what the three modes' workers share: the mio loop, the timers, the batch counters,
//!   the handling of a `forward` verdict.
//! * `sys`: the syscalls std lacks, behind one helper; the only `unsafe` code here.
//!
//! [`run`] is `ferrowall run`: it loads the configuration and the rule file, opens the control
//! socket and serves it until told to stop. With interfaces configured (router mode) it also starts
//! the workers of [`datapath`]; without, it runs the control plane alone.

pub mod afpacket;
pub mod bridge;
pub mod config;
pub mod control_socket;
pub mod datapath;
pub mod pcap_port;
pub mod port;
mod sys;
pub mod tun;
pub mod tunnel;
mod worker;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use config::Mode;
use datapath::Shared;

use crate::route::{parse_route, IcmpLimits, Iface, NeighConfig, Router, StaticRoute};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::conntrack::{self, Conntrack};
use crate::control::{self, Control, Peer};
use crate::filter::RuleSet;
use crate::timeouts::Registry;
use config::{Config, ConfigError};
use control_socket::{Backend, ControlServer, PeerInfo};

/// Mode of the control socket file: owner (root) and the control group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// `ferrowall run`'s options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The configuration file; without it every setting has its default.
    pub config: Option<PathBuf>,
    /// Overrides the configuration's `ctl_socket`.
    pub ctl_socket: Option<PathBuf>,
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug)]
pub enum RunError {
    Config(ConfigError),
    /// The rule file was refused: `file:line:col: why`.
    Rules(String),
    BindControl {
        path: PathBuf,
        source: io::Error,
    },
    Signals(io::Error),
    Loop(io::Error),
    /// A datapath port could not be opened.
    Ports(io::Error),
    /// The configuration asks for something this version does not do.
    Unsupported(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Config(e) => write!(f, "{e}"),
            RunError::Rules(e) => write!(f, "{e}"),
            RunError::BindControl { path, source } => write!(f, "control socket {}: {source}", path.display()),
            RunError::Signals(e) => write!(f, "installing signal handlers: {e}"),
            RunError::Loop(e) => write!(f, "control loop: {e}"),
            RunError::Ports(e) => write!(f, "opening ports: {e}"),
            RunError::Unsupported(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for RunError {}

/// The engine's state as a configuration describes it: the table, the declared timeout policies,
/// and the rule set (loaded after the policies, so it can name them).
pub struct EngineState {
    pub registry: Registry,
    pub ct: Conntrack,
    pub rules: Option<RuleSet>,
}

impl EngineState {
    /// Builds the state `cfg` (read from `file`, for error messages) describes.
    pub fn from_config(cfg: &Config, file: Option<&Path>) -> Result<EngineState, RunError> {
        let registry = Registry::new();
        let ct = Conntrack::new(cfg.max_connections, conntrack::Config::default());
        for (line, decl) in &cfg.timeouts {
            decl.create(&registry, &ct).map_err(|e| {
                RunError::Config(ConfigError {
                    file: file.map(Path::to_path_buf).unwrap_or_default(),
                    line: *line,
                    why: format!("timeout policy `{}`: {e}", decl.name),
                })
            })?;
        }
        let rules = match &cfg.rules {
            Some(p) => Some(load_rules(p, &registry).map_err(RunError::Rules)?),
            None => None,
        };
        Ok(EngineState { registry, ct, rules })
    }
}

/// Runs the daemon until `SIGTERM`/`SIGINT`; the socket file is removed on the way out.
pub fn run(opts: RunOptions) -> Result<(), RunError> {
    let cfg = match &opts.config {
        Some(p) => Config::load(p).map_err(RunError::Config)?,
        None => Config::default(),
    };
    let path = opts.ctl_socket.clone().unwrap_or_else(|| cfg.ctl_socket.clone());
    // Signals first, so a stop request during start-up still removes the socket file.
    let signals = Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(RunError::Signals)?;
    let state = EngineState::from_config(&cfg, opts.config.as_deref())?;
    let shared = Arc::new(Shared::new(state.registry, state.ct, state.rules.unwrap_or_default()));
    let stop = Arc::new(AtomicBool::new(false));
    let n = cfg.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let names = cfg.interfaces.iter().map(|(_, i)| i.name.as_str()).collect::<Vec<_>>().join(", ");
    let mut router = None;
    let workers = match cfg.mode {
        _ if cfg.interfaces.is_empty() => Vec::new(),
        Mode::Router => {
            let r = Arc::new(build_router(&cfg, opts.config.as_deref())?);
            router = Some(r.clone());
            datapath::start(shared.clone(), r, n, stop.clone()).map_err(RunError::Ports)?
        }
        Mode::Bridge => bridge::start(shared.clone(), &cfg, n, stop.clone())?,
        Mode::Tun => tunnel::start(shared.clone(), &cfg, n, stop.clone())?,
    };
    if !workers.is_empty() {
        eprintln!("ferrowall: {} on {names} with {n} worker(s)", format!("{:?}", cfg.mode).to_lowercase());
    }
    let _stop_workers = StopWorkers { stop, workers };
    let mut daemon = Daemon { shared, rules_path: cfg.rules.clone(), router, config: opts.config.clone() };
    let listener = open_control_socket(&path, cfg.ctl_group)
        .map_err(|source| RunError::BindControl { path: path.clone(), source })?;
    let _remove = SocketFile(path.clone());
    eprintln!("ferrowall: control socket listening on {}", path.display());
    ControlServer::new(listener, cfg.ctl_group).run(&mut daemon, signals).map_err(RunError::Loop)
}

/// Removes the socket file when the daemon stops.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Creates the socket's directory if missing, replaces a stale socket file (refusing to replace a
/// live one or a file that is not a socket), binds with mode [`SOCKET_MODE`] and gives the file to
/// the control group.
fn open_control_socket(path: &Path, ctl_gid: Option<u32>) -> io::Result<OwnedFd> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if sys::is_listening(path) {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, "another daemon is listening there"));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = sys::listen_seqpacket(path, SOCKET_MODE)?;
    if let Some(gid) = ctl_gid {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(fd)
}

/// Parses the rule file at `path` against `registry` (the new set takes its policy uses before
/// the old one releases its own); errors read `file:line:col: why`.
fn load_rules(path: &Path, registry: &Registry) -> Result<RuleSet, String> {
    RuleSet::load(path, registry).map_err(|e| e.to_string())
}

/// The state the control plane serves, shared with the workers.
struct Daemon {
    shared: Arc<Shared>,
    rules_path: Option<PathBuf>,
    /// Router mode's router, whose static routes a reload re-reads from `config`.
    router: Option<Arc<Router>>,
    config: Option<PathBuf>,
}

impl Backend for Daemon {
    fn handle(&mut self, peer: &PeerInfo, datagram: &[u8]) -> Vec<Vec<u8>> {
        let ctl = Control { registry: &self.shared.registry, ct: &self.shared.ct };
        control::handle(&ctl, Peer { portid: peer.portid, privileged: peer.privileged }, datagram)
    }

    fn reload(&mut self) -> Result<(), String> {
        // Parse everything first; nothing changes unless all of it loaded. Workers pick the new
        // rule set up at their next batch; the old one (and its policy uses) goes when the last
        // worker drops it. Routes are swapped whole; the neighbour cache stays.
        let rules = match &self.rules_path {
            Some(path) => Some(load_rules(path, &self.shared.registry)?),
            None => None,
        };
        let routes = match (&self.router, &self.config) {
            (Some(router), Some(path)) => {
                let cfg = Config::load(path).map_err(|e| e.to_string())?;
                Some((router, static_routes(&cfg, Some(path)).map_err(|e| e.to_string())?))
            }
            _ => None,
        };
        if let Some((router, statics)) = routes {
            router.replace_routes(&statics).map_err(|e| e.to_string())?;
        }
        if let Some(next) = rules {
            self.shared.rules.store(Arc::new(next));
        }
        Ok(())
    }

    fn show(&mut self, what: u8) -> Option<String> {
        let sh = &self.shared;
        let now = sh.now();
        match what {
            proto::private::SHOW_CONNTRACK => {
                let mut lines = Vec::new();
                sh.ct.for_each(now, |c| lines.push((c.start, crate::display::conntrack_line(c, now))));
                lines.sort();
                Some(lines.into_iter().map(|(_, l)| l + "\n").collect())
            }
            proto::private::SHOW_STATS => {
                use std::fmt::Write as _;
                let c = &sh.counters;
                let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                let mut t = String::new();
                let _ = writeln!(
                    t,
                    "datapath: rx={} forwarded={} local={} originated={} dropped={}",
                    n(&c.rx),
                    n(&c.forwarded),
                    n(&c.local),
                    n(&c.originated),
                    n(&c.dropped)
                );
                let _ = writeln!(t, "conntrack: count={} max={}", sh.ct.len(), sh.ct.max());
                let mut ct = crate::conntrack::Stats::default();
                for s in sh.ct_stats.lock().values() {
                    ct.merge(s);
                }
                let _ = writeln!(t, "conntrack: {ct}");
                let mut by_iface: std::collections::BTreeMap<&str, port::PortStats> = Default::default();
                let ports = sh.ports.lock();
                for ((name, _worker), p) in ports.iter() {
                    let s = by_iface.entry(name).or_default();
                    s.rx_packets += p.rx_packets;
                    s.rx_bytes += p.rx_bytes;
                    s.rx_dropped += p.rx_dropped;
                    s.tx_packets += p.tx_packets;
                    s.tx_bytes += p.tx_bytes;
                    s.tx_dropped += p.tx_dropped;
                    s.tx_errors += p.tx_errors;
                }
                for (name, p) in by_iface {
                    let _ = writeln!(
                        t,
                        "interface {name}: rx_packets={} rx_bytes={} rx_dropped={} tx_packets={} tx_bytes={} tx_dropped={} tx_errors={}",
                        p.rx_packets, p.rx_bytes, p.rx_dropped, p.tx_packets, p.tx_bytes, p.tx_dropped, p.tx_errors
                    );
                }
                drop(ports);
                for r in sh.rules.load().counters() {
                    let _ = writeln!(
                        t,
                        "rule {} line {}: packets={} bytes={} # {}",
                        r.hook, r.line, r.packets, r.bytes, r.text
                    );
                }
                Some(t)
            }
            _ => None,
        }
    }
}

/// Stops the workers and waits for them when the daemon stops.
struct StopWorkers {
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for StopWorkers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The static routes of the configuration (read from `file`, for error positions).
fn static_routes(cfg: &Config, file: Option<&Path>) -> Result<Vec<StaticRoute>, RunError> {
    let mut statics = Vec::new();
    for (line, text) in &cfg.routes {
        match parse_route(text) {
            Ok(Some(r)) => statics.push(r),
            Ok(None) => {}
            Err(e) => {
                return Err(RunError::Config(ConfigError {
                    file: file.map(Path::to_path_buf).unwrap_or_default(),
                    line: *line,
                    why: format!("route: column {}: {}", e.column, e.why),
                }))
            }
        }
    }
    Ok(statics)
}

/// The router the configuration describes: its interfaces (MAC and MTU as the kernel reports
/// them, our addresses from the configuration) and static routes.
fn build_router(cfg: &Config, file: Option<&Path>) -> Result<Router, RunError> {
    let err = |line: usize, why: String| {
        RunError::Config(ConfigError { file: file.map(Path::to_path_buf).unwrap_or_default(), line, why })
    };
    let mut ifaces = Vec::new();
    for (id, (line, i)) in cfg.interfaces.iter().enumerate() {
        let (mac, mtu) = datapath::link_info(&i.name).map_err(|e| err(*line, format!("interface {}: {e}", i.name)))?;
        ifaces.push(Iface { id, name: i.name.clone(), mac, mtu, addrs: i.addrs.clone() });
    }
    let statics = static_routes(cfg, file)?;
    let first_route = cfg.routes.first().map_or(0, |(l, _)| *l);
    Router::new(ifaces, &statics, NeighConfig::default(), IcmpLimits::default())
        .map_err(|e| err(first_route, e.to_string()))
}

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
//! * [`state`]: the state directory: the settings (policies, defaults, rule set) saved on every
//!   change, and the connection table saved at stop, so that nothing is lost across a restart.
//! * `sys`: the syscalls std lacks, behind one helper; the only `unsafe` code here.
//!
//! [`run`] is `ferrowall run`: it loads the configuration and the rule file, opens the control
//! socket and serves it until told to stop. With interfaces configured (router mode) it also starts
//! the workers of [`datapath`]; without, it runs the control plane alone.
//!
//! # Least privilege
//!
//! With `user = NAME` in the configuration (and optionally `group = NAME`), the daemon opens
//! everything that needs root first: the datapath ports (`AF_PACKET` sockets need
//! `CAP_NET_RAW`; TUN queues `CAP_NET_ADMIN`, and TUN mode's addresses and link state are set up
//! then too), the control socket (created in a root-owned directory, with mode [`SOCKET_MODE`]
//! and the control group). Then, before starting the worker threads and serving a single request, it
//! switches the process (`setgroups`/`setresgid`/`setresuid`, which glibc and musl apply to every
//! thread; the workers, started afterwards, inherit the new credentials) to the user's uid, its gid (or `group`'s) and the
//! supplementary groups `/etc/group` lists it in. Root switching to a non-root uid without
//! `PR_SET_KEEPCAPS` loses its permitted, effective and ambient capabilities; the daemon reads
//! `/proc/self/task/*/status` afterwards and refuses to continue (exits with an error) unless
//! every thread has the new uid/gid and `CapEff`, `CapPrm` and `CapAmb` are all zero. It logs
//! `ferrowall: running as uid N gid M, capabilities: none`. (The bounding set is per thread and
//! stays as it was; with no permitted capabilities and no set-uid programs run, it grants nothing.)
//!
//! What still touches privileged things afterwards, and how:
//!
//! * the open descriptors (ports, control socket) keep working: the kernel checks privilege when
//!   they are created, not when they are used;
//! * a reload (`SIGHUP`, `ferroctl reload`) re-reads the configuration file (and `/etc/passwd`,
//!   `/etc/group`) and the rule file as that user: both must be readable by
//!   it (e.g. root-owned, mode 0644, or group-readable by `group`); otherwise the reload is
//!   refused and the running rules stay;
//! * clients: root and the control group keep connecting (the socket file is root's, mode 0660,
//!   group `ctl_group`); who is privileged is decided from the peer's credentials, not ours;
//! * at exit the socket file cannot be removed (its directory belongs to root): it stays as a
//!   stale socket, which the next start detects (nothing listens on it) and replaces;
//! * nothing else: no port, address or route is opened or changed after start-up.

pub mod afpacket;
pub mod bridge;
pub mod config;
pub mod control_socket;
pub mod datapath;
pub mod pcap_port;
pub mod port;
pub mod state;
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
use state::StateDir;

/// Mode of the control socket file: owner (root) and the control group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// `ferrowall run`'s options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The configuration file; without it every setting has its default.
    pub config: Option<PathBuf>,
    /// Overrides the configuration's `ctl_socket`.
    pub ctl_socket: Option<PathBuf>,
    /// Overrides the configuration's `state_dir`.
    pub state_dir: Option<PathBuf>,
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
    /// Switching to the configured `user` failed or left privileges behind.
    Privileges(String),
    /// The state directory could not be used, or its settings file is damaged.
    State(String),
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
            RunError::Privileges(why) => write!(f, "dropping privileges: {why}"),
            RunError::State(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for RunError {}

/// The engine's state as a configuration (and the saved settings, if any) describes it: the
/// table, the timeout policies, and the rule set (loaded after the policies, so it can name them).
pub struct EngineState {
    pub registry: Registry,
    pub ct: Conntrack,
    pub rules: Option<RuleSet>,
    /// The rule set's source: (file, text).
    pub rules_source: Option<(String, String)>,
}

impl EngineState {
    /// Builds the state `cfg` (read from `file`, for error messages) describes. With `saved`
    /// settings (from the state directory), their defaults and policies replace the
    /// configuration's `timeout` lines, and when the rule file is refused their rule set (the
    /// last one in force) is used instead, with a warning, as a refused reload keeps the
    /// running rules.
    pub fn from_config(
        cfg: &Config,
        file: Option<&Path>,
        saved: Option<&state::Settings>,
    ) -> Result<EngineState, RunError> {
        let registry = Registry::new();
        let ct = Conntrack::new(cfg.max_connections, conntrack::Config::default());
        match saved {
            Some(s) => s.apply(&registry, &ct).map_err(|e| RunError::State(format!("saved settings: {e}")))?,
            None => {
                for (line, decl) in &cfg.timeouts {
                    decl.create(&registry, &ct).map_err(|e| {
                        RunError::Config(ConfigError {
                            file: file.map(Path::to_path_buf).unwrap_or_default(),
                            line: *line,
                            why: format!("timeout policy `{}`: {e}", decl.name),
                        })
                    })?;
                }
            }
        }
        let (rules, rules_source) = match &cfg.rules {
            Some(p) => match load_rules(p, &registry) {
                Ok((rules, source)) => (Some(rules), Some(source)),
                Err(e) => match saved.and_then(|s| s.rules.as_ref()) {
                    Some((name, text)) => {
                        let rules = RuleSet::parse(name, text, &registry)
                            .map_err(|e2| RunError::Rules(format!("{e}; the saved rule set is refused too: {e2}")))?;
                        eprintln!("ferrowall: {e}; running the rule set in force at the last stop (saved in the state directory)");
                        (Some(rules), Some((name.clone(), text.clone())))
                    }
                    None => return Err(RunError::Rules(e)),
                },
            },
            None => (None, None),
        };
        Ok(EngineState { registry, ct, rules, rules_source })
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
    let state_path = opts.state_dir.clone().unwrap_or_else(|| cfg.state_dir.clone());
    let mut state_dir =
        StateDir::open(&state_path, cfg.run_as.as_ref().map(|w| (w.uid, w.gid))).map_err(RunError::State)?;
    let saved = state_dir.load().map_err(RunError::State)?;
    let state = EngineState::from_config(&cfg, opts.config.as_deref(), saved.as_ref())?;
    if let Some(s) = &saved {
        eprintln!(
            "ferrowall: restored {} timeout policies and the defaults from {}",
            s.policies.len(),
            state_dir.state_path().display()
        );
    }
    let mut shared = Shared::new(state.registry, state.ct, state.rules.unwrap_or_default());
    shared.busy_poll = cfg.busy_poll;
    let shared = Arc::new(shared);
    let stop = Arc::new(AtomicBool::new(false));
    let n = cfg.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let names = cfg.interfaces.iter().map(|(_, i)| i.name.as_str()).collect::<Vec<_>>().join(", ");
    let mut router = None;
    // The ports open now; the worker threads start once privileges are dropped.
    let pending = match cfg.mode {
        _ if cfg.interfaces.is_empty() => Vec::new(),
        Mode::Router => {
            let r = Arc::new(build_router(&cfg, opts.config.as_deref())?);
            router = Some(r.clone());
            datapath::start(shared.clone(), r, n, stop.clone()).map_err(RunError::Ports)?
        }
        Mode::Bridge => bridge::start(shared.clone(), &cfg, n, stop.clone())?,
        Mode::Tun => tunnel::start(shared.clone(), &cfg, n, stop.clone())?,
    };
    let mut stop_workers = StopWorkers { stop, workers: Vec::new() };
    let mut daemon = Daemon {
        shared,
        rules_path: cfg.rules.clone(),
        rules_source: state.rules_source,
        router,
        config: opts.config.clone(),
        started: cfg.clone(),
        state_dir,
        sweeper: None,
    };
    let listener = open_control_socket(&path, cfg.ctl_group)
        .map_err(|source| RunError::BindControl { path: path.clone(), source })?;
    let _remove = SocketFile(path.clone());
    if let Some(who) = &cfg.run_as {
        drop_privileges(who).map_err(RunError::Privileges)?;
        eprintln!("ferrowall: running as uid {} gid {}, capabilities: none", who.uid, who.gid);
    }
    // The connections saved at the last stop, once nothing can keep the daemon from serving and
    // before any worker adds its own.
    restore_table(&daemon.state_dir, &daemon.shared);
    for start in pending {
        stop_workers.workers.push(start().map_err(RunError::Ports)?);
    }
    if !stop_workers.workers.is_empty() {
        eprintln!("ferrowall: {} on {names} with {n} worker(s)", format!("{:?}", cfg.mode).to_lowercase());
    } else {
        // No worker sweeps the table: while anyone listens to events, the control loop does, so
        // that expiries are reported.
        daemon.sweeper = Some(crate::conntrack::Stats::default());
    }
    // The settings as they start (at the first start: the configuration's), once nothing can
    // keep the daemon from serving.
    daemon.persist();
    eprintln!("ferrowall: control socket listening on {}", path.display());
    let served = ControlServer::new(listener, cfg.ctl_group).run(&mut daemon, signals).map_err(RunError::Loop);
    // The workers stop first, so that the table saved is the table as they left it.
    drop(stop_workers);
    daemon.save_table();
    served
}

/// Puts back the connection table saved at the last stop, if any; a damaged snapshot is set
/// aside and the table starts empty.
fn restore_table(dir: &StateDir, shared: &Shared) {
    let bytes = match dir.take_table() {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => return eprintln!("ferrowall: reading the saved connection table: {e}; starting with an empty table"),
    };
    match shared.ct.restore(&bytes, shared.now(), state::wall_ns(), &shared.registry) {
        Ok(r) => eprintln!(
            "ferrowall: restored {} connections from the last stop ({} expired meanwhile, {} left out)",
            r.restored, r.expired, r.refused
        ),
        Err(e) => {
            let kept = dir
                .set_aside_table(&bytes)
                .map_or_else(|e| format!(" (not kept: {e})"), |()| " (kept as conntrack.damaged)".to_owned());
            eprintln!("ferrowall: the saved connection table is {e}{kept}; starting with an empty table");
        }
    }
}

/// Switches every thread to `who` and checks, in `/proc/self/task/*/status`, that each has the
/// new ids and no permitted, effective or ambient capability left.
fn drop_privileges(who: &config::RunAs) -> Result<(), String> {
    sys::drop_privileges(who.uid, who.gid, &who.groups)
        .map_err(|e| format!("switching to user `{}` (uid {} gid {}): {e}", who.name, who.uid, who.gid))?;
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| format!("/proc/self/task: {e}"))?;
    let mut seen = 0;
    for t in tasks {
        let t = t.map_err(|e| format!("/proc/self/task: {e}"))?;
        let file = t.path().join("status");
        let status = match std::fs::read_to_string(&file) {
            Ok(s) => s,
            // A thread that ended meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        check_status(&status, who.uid, who.gid).map_err(|why| format!("{}: {why}", file.display()))?;
        seen += 1;
    }
    if seen == 0 {
        return Err("/proc/self/task lists no thread".to_owned());
    }
    Ok(())
}

/// Whether a `/proc/.../status` text shows every uid `uid`, every gid `gid` and no capability
/// in the effective, permitted and ambient sets.
fn check_status(status: &str, uid: u32, gid: u32) -> Result<(), String> {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
            .ok_or_else(|| format!("no `{key}` line"))
    };
    for (key, want) in [("Uid", uid), ("Gid", gid)] {
        let ids = field(key)?;
        if ids.split_whitespace().any(|v| v.parse::<u32>().ok() != Some(want)) {
            return Err(format!("{key} is `{ids}`, not {want}"));
        }
    }
    for key in ["CapEff", "CapPrm", "CapAmb"] {
        let caps = match field(key) {
            Ok(c) => c,
            // Kernels before 4.3 have no ambient set.
            Err(_) if key == "CapAmb" => continue,
            Err(e) => return Err(e),
        };
        if u64::from_str_radix(caps, 16).map_err(|_| format!("{key} is `{caps}`"))? != 0 {
            return Err(format!("capabilities left: {key} {caps}"));
        }
    }
    Ok(())
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
/// the old one releases its own); errors read `file:line:col: why`. Returns the rule set and its
/// source (file name, text).
fn load_rules(path: &Path, registry: &Registry) -> Result<(RuleSet, (String, String)), String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| crate::filter::RuleError::Read { file: file.clone(), source }.to_string())?;
    let rules = RuleSet::parse(&file, &text, registry).map_err(|e| e.to_string())?;
    Ok((rules, (file, text)))
}

/// The state the control plane serves, shared with the workers.
struct Daemon {
    shared: Arc<Shared>,
    rules_path: Option<PathBuf>,
    /// Router mode's router, whose static routes a reload re-reads from `config`.
    router: Option<Arc<Router>>,
    config: Option<PathBuf>,
    /// The configuration the daemon started with: what a reload's configuration is compared
    /// with, for the settings that only a restart applies.
    started: Config,
    /// The rule set in force: (file, text), saved with the settings.
    rules_source: Option<(String, String)>,
    state_dir: StateDir,
    /// Without workers, the control loop sweeps the table while anyone listens to events; its
    /// counters.
    sweeper: Option<crate::conntrack::Stats>,
}

impl Daemon {
    /// Saves the settings if they changed (a failure is logged: the daemon keeps serving).
    fn persist(&mut self) {
        let s = state::Settings::capture(&self.shared.registry, &self.shared.ct, self.rules_source.as_ref());
        if let Err(e) = self.state_dir.store(&s) {
            eprintln!("ferrowall: saving settings to {}: {e}", self.state_dir.state_path().display());
        }
    }

    /// Saves the connection table for the next start (the workers must have stopped).
    fn save_table(&self) {
        let sh = &self.shared;
        let bytes = sh.ct.save(sh.now(), state::wall_ns());
        match self.state_dir.store_table(&bytes) {
            Ok(()) => eprintln!("ferrowall: saved {} connections for the next start", sh.ct.len()),
            Err(e) => eprintln!("ferrowall: saving the connection table: {e}"),
        }
    }
}

impl Backend for Daemon {
    fn handle(&mut self, peer: &PeerInfo, datagram: &[u8]) -> control_socket::Reply {
        let sh = self.shared.clone();
        let ctl = Control { registry: &sh.registry, ct: &sh.ct };
        let cpu_stats = || sh.ct_stats.lock().values().cloned().collect();
        let env = crate::ctnetlink::Env { now: sh.now(), cpu_stats: &cpu_stats };
        let answer =
            control::handle_at(&ctl, &env, Peer { portid: peer.portid, privileged: peer.privileged }, datagram);
        if peer.privileged {
            self.persist();
        }
        let pending = answer.dump.map(|dump| Box::new(DumpStream { shared: sh.clone(), dump }) as _);
        control_socket::Reply { datagrams: answer.datagrams, pending }
    }

    fn reload(&mut self) -> Result<Option<String>, String> {
        // Parse everything first; nothing changes unless all of it loaded. Workers pick the new
        // rule set up at their next batch; the old one (and its policy uses) goes when the last
        // worker drops it. Routes are swapped whole; the neighbour cache stays. The rule file is
        // the one the configuration names now (a configuration that names none keeps the running
        // one); every other setting it changes is named in the answer: only a restart applies it.
        let cfg = match &self.config {
            Some(path) => Some(Config::load(path).map_err(|e| e.to_string())?),
            None => None,
        };
        let mut needs_restart = cfg.as_ref().map(|c| self.started.needs_restart(c)).unwrap_or_default();
        if cfg.as_ref().is_some_and(|c| c.rules.is_none()) && self.rules_path.is_some() {
            needs_restart.insert(0, "rules");
        }
        let rules_path = cfg.as_ref().and_then(|c| c.rules.clone()).or_else(|| self.rules_path.clone());
        let rules = match &rules_path {
            Some(path) => Some(load_rules(path, &self.shared.registry)?),
            None => None,
        };
        let routes = match (&self.router, &cfg) {
            (Some(router), Some(cfg)) => {
                Some((router, static_routes(cfg, self.config.as_deref()).map_err(|e| e.to_string())?))
            }
            _ => None,
        };
        if let Some((router, statics)) = routes {
            router.replace_routes(&statics).map_err(|e| e.to_string())?;
        }
        if let Some((next, source)) = rules {
            self.shared.rules.store(Arc::new(next));
            self.rules_source = Some(source);
            self.rules_path = rules_path;
            self.persist();
        }
        Ok((!needs_restart.is_empty()).then(|| format!("not applied until a restart: {}", needs_restart.join(", "))))
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
                let mut t = sh.datapath_stats().to_string();
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
                    s.rx_gso += p.rx_gso;
                    s.tx_gso += p.tx_gso;
                }
                for (name, p) in by_iface {
                    let _ = writeln!(
                        t,
                        "interface {name}: rx_packets={} rx_bytes={} rx_dropped={} tx_packets={} tx_bytes={} tx_dropped={} tx_errors={} rx_gso={} tx_gso={}",
                        p.rx_packets, p.rx_bytes, p.rx_dropped, p.tx_packets, p.tx_bytes, p.tx_dropped, p.tx_errors, p.rx_gso, p.tx_gso
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

    // Connection events for the control socket's listeners: the table records the kinds asked
    // for; each is encoded as ctnetlink reports it.
    fn want_events(&mut self, mask: u32) {
        use crate::conntrack::events::EventKind;
        let kinds = [(1, EventKind::New), (2, EventKind::Update), (4, EventKind::Destroy)];
        self.shared.ct.events.want(kinds.iter().filter(|(g, _)| mask & g != 0).fold(0, |m, (_, k)| m | k.bit()));
    }

    fn next_event(&mut self) -> Option<(u32, Vec<u8>)> {
        let ev = self.shared.ct.events.pop()?;
        Some(crate::ctnetlink::event_message(&self.shared.ct, &ev, self.shared.now()))
    }

    fn events_dropped(&self) -> u64 {
        self.shared.ct.events.lost()
    }

    fn events_tick(&mut self) {
        if let Some(stats) = &mut self.sweeper {
            self.shared.ct.sweep(self.shared.now(), 4096, stats);
        }
    }
}

/// The rest of a ctnetlink dump, produced from the live table as the client reads.
struct DumpStream {
    shared: Arc<Shared>,
    dump: crate::ctnetlink::Dump,
}

impl control_socket::Pending for DumpStream {
    fn next(&mut self, budget: usize) -> (Vec<Vec<u8>>, bool) {
        self.dump.next(&self.shared.ct, self.shared.now(), budget)
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

#[cfg(test)]
mod tests {
    use super::check_status;

    #[test]
    fn status_checks() {
        let ok = "Name:\tx\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
        assert_eq!(check_status(ok, 65534, 65534), Ok(()));
        assert!(check_status(ok, 65534, 0).unwrap_err().starts_with("Gid"));
        let saved_root = ok.replace("Uid:\t65534\t65534\t65534", "Uid:\t65534\t65534\t0");
        assert!(check_status(&saved_root, 65534, 65534).unwrap_err().starts_with("Uid"));
        let caps = ok.replace("CapPrm:\t0000000000000000", "CapPrm:\t0000000000002000");
        assert_eq!(check_status(&caps, 65534, 65534).unwrap_err(), "capabilities left: CapPrm 0000000000002000");
    }
}

//! The daemon's edge: the only part of the engine with sockets, threads, clocks and `unsafe`.
//!
//! * [`config`]: the daemon's `key = value` configuration file.
//! * [`control_socket`]: the control plane, nfnetlink (cttimeout) over a Unix `SOCK_SEQPACKET`
//!   socket, served by one mio loop with the signals (`SIGHUP` reloads the rules, `SIGTERM`/`SIGINT`
//!   stop).
//! * [`port`]: the batch trait every datapath port implements, with [`afpacket`] (`AF_PACKET`
//!   rings on an Ethernet interface), [`tun`] (TUN queues of raw IP) and [`pcap_port`] (replay and
//!   capture files).
//! * `sys`: the syscalls std lacks, behind one helper; the only `unsafe` code here.
//!
//! [`run`] is `ferrowall run`: it loads the configuration and the rule file, opens the control
//! socket and serves it until told to stop. The ports exist but no worker drives them yet: the
//! daemon runs the control plane alone.

pub mod afpacket;
pub mod config;
pub mod control_socket;
pub mod pcap_port;
pub mod port;
mod sys;
pub mod tun;

use std::fmt;
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
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Config(e) => write!(f, "{e}"),
            RunError::Rules(e) => write!(f, "{e}"),
            RunError::BindControl { path, source } => write!(f, "control socket {}: {source}", path.display()),
            RunError::Signals(e) => write!(f, "installing signal handlers: {e}"),
            RunError::Loop(e) => write!(f, "control loop: {e}"),
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
    let mut daemon =
        Daemon { registry: state.registry, ct: state.ct, rules_path: cfg.rules.clone(), rules: state.rules };
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

/// The state the control plane serves.
struct Daemon {
    registry: Registry,
    ct: Conntrack,
    rules_path: Option<PathBuf>,
    /// Held for the policy uses it takes; replaced whole on reload.
    rules: Option<RuleSet>,
}

impl Backend for Daemon {
    fn handle(&mut self, peer: &PeerInfo, datagram: &[u8]) -> Vec<Vec<u8>> {
        let ctl = Control { registry: &self.registry, ct: &self.ct };
        control::handle(&ctl, Peer { portid: peer.portid, privileged: peer.privileged }, datagram)
    }

    fn reload(&mut self) -> Result<(), String> {
        let Some(path) = &self.rules_path else {
            return Ok(());
        };
        // Parse first; the running rules are replaced only by a rule set that loaded.
        let next = load_rules(path, &self.registry)?;
        self.rules = Some(next);
        Ok(())
    }
}

//! `ferroctl`, the operator's client of the ferrowall daemon.
//!
//! * `ferroctl exec [--socket PATH] -- PROGRAM ARGS...` runs an unmodified netfilter tool (`nfct`,
//!   anything built on libmnl, Python's `socket` module) against the daemon: the program starts with
//!   `LD_PRELOAD` naming `libferrowall_shim.so` (found next to `ferroctl`, or at `FERROWALL_SHIM`)
//!   and `FERROWALL_SOCKET` naming the control socket; its exit status is ferroctl's.
//! * `ferroctl reload [--socket PATH]` asks the daemon to re-read its configuration and rule file
//!   (as `SIGHUP` does), prints the reason if either was refused, and the settings that changed but
//!   only a restart applies.
//! * `ferroctl conntrack [--socket PATH] [--json] [list|get|delete|flush|count|stats|events] ...`
//!   reads and changes the connection table through ctnetlink, the messages `conntrack` sends (see
//!   [`conntrack`]); `list` prints what `conntrack -L` prints, `events` what `conntrack -E` prints.
//! * `ferroctl timeout [--socket PATH] [--json] ARGS...` manages timeout policies with exactly the
//!   syntax and output of `nfct timeout ARGS...` (see [`timeout`]); `--json` (before the command
//!   word) prints `list`, `get` and `default-get` as JSON.
//!
//! The socket is `--socket`, else `$FERROWALL_SOCKET`, else `/run/ferrowall/ctl.sock`.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::{Parser, Subcommand};
use proto::{netlink, private};
use socket2::{Domain, SockAddr, Socket, Type};

mod conntrack;
mod timeout;

/// The control socket's default path (the daemon's `ctl_socket` default).
const DEFAULT_SOCKET: &str = "/run/ferrowall/ctl.sock";
/// The shim's file name, as cargo names the `ferrowall-shim` cdylib.
const SHIM: &str = "libferrowall_shim.so";

#[derive(Parser)]
#[command(name = "ferroctl", version, about = "Control the ferrowall daemon")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a netfilter tool (e.g. nfct) against the daemon through the preload shim.
    Exec {
        /// The daemon's control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The program and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Make the daemon re-read its rule file.
    Reload {
        /// The daemon's control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// The connection table, through ctnetlink: list (the default, as `conntrack -L` prints it),
    /// get, delete, flush, count, stats, events (as `conntrack -E` prints them).
    #[command(override_usage = "ferroctl conntrack [--socket PATH] [--json] [COMMAND] [OPTIONS]")]
    Conntrack {
        /// The daemon's control socket.
        #[arg(long, global = true)]
        socket: Option<PathBuf>,
        /// Print connections, counts and statistics as JSON.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: Option<conntrack::CtCmd>,
    },
    /// Print the daemon's counters: datapath, connection table, connection events, rules with a
    /// `counter`.
    Stats {
        /// The daemon's control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Manage timeout policies: nfct's `timeout` syntax, output and exit codes.
    ///
    /// list | add NAME inet|inet6 PROTO STATE VALUE... | get NAME | delete NAME | flush |
    /// default-set inet|inet6 PROTO STATE VALUE... | default-get inet|inet6 PROTO
    #[command(override_usage = "ferroctl timeout [--socket PATH] [--json] COMMAND [ARGS]...")]
    Timeout {
        /// The daemon's control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print list, get and default-get as a JSON document.
        #[arg(long)]
        json: bool,
        /// The command and its arguments, as after `nfct timeout`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn socket_path(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("FERROWALL_SOCKET").filter(|s| !s.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Exec { socket, command } => exec(&socket_path(socket), &command),
        Cmd::Reload { socket } => match reload(&socket_path(socket)) {
            Ok(None) => ExitCode::SUCCESS,
            Ok(Some(warning)) => {
                eprintln!("ferroctl: reload: {warning}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferroctl: reload: {e}");
                ExitCode::from(1)
            }
        },
        Cmd::Conntrack { socket, json, cmd: Some(conntrack::CtCmd::Events(args)) } => {
            conntrack::events(&socket_path(socket), &args, json)
        }
        Cmd::Conntrack { socket, json, cmd } => {
            conntrack::main(&socket_path(socket), &cmd.unwrap_or(conntrack::CtCmd::List(Default::default())), json)
        }
        Cmd::Stats { socket } => print_view(&socket_path(socket), private::SHOW_STATS, "stats"),
        Cmd::Timeout { socket, json, args } => {
            let socket = socket_path(socket);
            let protocols = timeout::system_protocols();
            let mut connect = || -> Result<Box<dyn timeout::Link>, String> {
                let (sock, portid) = connect(&socket).map_err(|e| timeout::unreachable(&socket, e))?;
                Ok(Box::new(Conn { sock, portid, socket: socket.clone() }))
            };
            timeout::finish(timeout::run(&args, json, &protocols, &mut connect))
        }
    }
}

/// A connection to the daemon for `timeout`.
struct Conn {
    sock: Socket,
    portid: u32,
    socket: PathBuf,
}

impl timeout::Link for Conn {
    fn send(&mut self, datagram: &[u8]) -> Result<(), String> {
        self.sock.send(datagram).map(drop).map_err(|e| format!("{}: {e}", self.socket.display()))
    }

    fn recv(&mut self) -> Result<Vec<u8>, String> {
        recv(&self.sock)
    }

    fn portid(&self) -> u32 {
        self.portid
    }
}

/// Connects to the daemon and reads its greeting: the socket and its port id.
fn connect(socket: &Path) -> Result<(Socket, u32), String> {
    let at = |e: std::io::Error| e.to_string();
    let sock = Socket::new(Domain::UNIX, Type::SEQPACKET, None).map_err(at)?;
    sock.set_read_timeout(Some(Duration::from_secs(60))).map_err(at)?;
    sock.connect(&SockAddr::unix(socket).map_err(at)?).map_err(at)?;
    let hello = recv(&sock)?;
    let portid = private::parse_hello(&hello).ok_or("unexpected greeting from the daemon")?;
    Ok((sock, portid))
}

/// Where the shim is: `$FERROWALL_SHIM`, else next to this executable.
fn shim_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FERROWALL_SHIM").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating ferroctl: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let p = dir.join(SHIM);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{SHIM} is not in {} (build it with `cargo build -p ferrowall-shim`, or set FERROWALL_SHIM)",
            dir.display()
        ))
    }
}

/// Replaces this process with `command`, the shim preloaded.
fn exec(socket: &Path, command: &[OsString]) -> ExitCode {
    let shim = match shim_path() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ferroctl: exec: {e}");
            return ExitCode::from(127);
        }
    };
    let mut preload = OsString::from(&shim);
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|s| !s.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let err =
        Command::new(&command[0]).args(&command[1..]).env("LD_PRELOAD", preload).env("FERROWALL_SOCKET", socket).exec();
    eprintln!("ferroctl: exec {}: {err}", command[0].to_string_lossy());
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 })
}

/// Writes `text` to standard output. A reader that closed it (`ferroctl conntrack | head`) has
/// what it wanted: not an error, and no panic as `print!` would have.
pub(crate) fn print_out(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Prints a view of the daemon's state (`ferroctl conntrack`, `ferroctl stats`).
fn print_view(socket: &Path, what: u8, name: &str) -> ExitCode {
    match show(socket, what) {
        Ok(text) => {
            print_out(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferroctl: {name}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Asks the daemon for view `what` and collects its text until `NLMSG_DONE`.
fn show(socket: &Path, what: u8) -> Result<String, String> {
    let (sock, portid) = connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let seq = 1;
    sock.send(&private::show_request(seq, portid, what)).map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut text = String::new();
    loop {
        let d = recv(&sock)?;
        for m in netlink::Messages::new(&d) {
            let m = m.map_err(|e| format!("malformed reply: {e:?}"))?;
            let msg = &d[m.offset..];
            match m.header.kind {
                netlink::msg_type::DONE => return Ok(text),
                netlink::msg_type::ERROR => {
                    let (errno, _) = private::parse_error(msg).ok_or("malformed error message from the daemon")?;
                    return Err(std::io::Error::from_raw_os_error(errno).to_string());
                }
                _ => text.push_str(&private::show_text(msg).unwrap_or_default()),
            }
        }
    }
}

/// One datagram from the daemon.
fn recv(sock: &Socket) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 65536];
    let n = (&*sock).read(&mut buf).map_err(|e| format!("reading from the daemon: {e}"))?;
    if n == 0 {
        return Err("the daemon closed the connection".into());
    }
    buf.truncate(n);
    Ok(buf)
}

/// `Ok(Some(warning))`: reloaded, with the daemon's word on what it could not apply.
fn reload(socket: &Path) -> Result<Option<String>, String> {
    let at = |e: std::io::Error| format!("{}: {e}", socket.display());
    let (sock, portid) = connect(socket)?;
    let seq = 1;
    sock.send(&private::reload_request(seq, portid)).map_err(at)?;
    loop {
        let d = recv(&sock)?;
        for m in netlink::Messages::new(&d) {
            let m = m.map_err(|e| format!("malformed reply: {e:?}"))?;
            if m.header.kind != netlink::msg_type::ERROR || m.header.seq != seq {
                continue;
            }
            let (errno, text) =
                private::parse_error(&d[m.offset..]).ok_or("malformed error message from the daemon")?;
            return match (errno, text) {
                (0, warning) => Ok(warning),
                (_, Some(t)) => Err(t),
                (e, None) => Err(std::io::Error::from_raw_os_error(e).to_string()),
            };
        }
    }
}

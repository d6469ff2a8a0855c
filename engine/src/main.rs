//! `ferrowall`: the daemon and its offline tools.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferrowall",
    version,
    about = "A user-mode packet filter and router with Linux-compatible connection tracking"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a capture through the conntrack engine and print the table as `conntrack -L` does.
    Replay {
        /// The capture (pcap; Ethernet, raw IP, IPv4 or IPv6 link type). Repeat it for one
        /// capture per interface: packets are merged by timestamp.
        #[arg(long, required = true)]
        pcap: Vec<String>,
        /// First print one line per packet: `<index> <ct state> <direction>`.
        #[arg(long)]
        per_packet: bool,
        /// Also print `conntrack -S`-style counters to stderr.
        #[arg(long)]
        stats: bool,
        /// A configuration file (as for `run`): its timeout policies, rule file and table size
        /// apply. Per-packet lines then end with the verdict.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the daemon: a router, TUN filter or bridge on the configured interfaces (without any,
    /// the control plane alone), serving the cttimeout API on the control socket, for
    /// `ferroctl` and for unmodified `nfct` through `ferroctl exec`.
    Run {
        /// The configuration file (`key = value` lines; see the README).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The control socket's path (overrides the configuration's `ctl_socket`; default
        /// /run/ferrowall/ctl.sock).
        #[arg(long)]
        ctl_socket: Option<PathBuf>,
        /// Where the settings and, across a graceful restart, the connection table are kept
        /// (overrides the configuration's `state_dir`; default /var/lib/ferrowall).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config, ctl_socket, state_dir } => {
            match ferrowall_engine::io::run(ferrowall_engine::io::RunOptions { config, ctl_socket, state_dir }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferrowall: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Replay { pcap, per_packet, stats, config } => {
            let mut inputs = Vec::new();
            for path in &pcap {
                match File::open(path) {
                    Ok(f) => inputs.push((path.clone(), BufReader::new(f))),
                    Err(e) => {
                        eprintln!("ferrowall: {path}: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            let state = match &config {
                Some(path) => {
                    let loaded = ferrowall_engine::io::config::Config::load(path)
                        .map_err(ferrowall_engine::io::RunError::Config)
                        .and_then(|cfg| ferrowall_engine::io::EngineState::from_config(&cfg, Some(path), None));
                    match loaded {
                        Ok(state) => Some(state),
                        Err(e) => {
                            eprintln!("ferrowall: {e}");
                            return ExitCode::from(1);
                        }
                    }
                }
                None => None,
            };
            // A configuration without a rule file still prints verdicts: everything is accepted.
            let no_rules = ferrowall_engine::filter::RuleSet::empty();
            let result = match &state {
                Some(st) => {
                    ferrowall_engine::replay::replay_with(inputs, &st.ct, Some(st.rules.as_ref().unwrap_or(&no_rules)))
                }
                None => ferrowall_engine::replay::replay(inputs),
            };
            let out = match result {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("ferrowall: {e}");
                    return ExitCode::from(1);
                }
            };
            let mut w = std::io::stdout().lock();
            if per_packet {
                for l in &out.per_packet {
                    let _ = writeln!(w, "{l}");
                }
            }
            for l in &out.table {
                let _ = writeln!(w, "{l}");
            }
            for (i, e) in &out.unparsed {
                eprintln!("ferrowall: packet {i}: {e}");
            }
            if stats {
                eprintln!("{}", out.stats);
            }
            ExitCode::SUCCESS
        }
    }
}

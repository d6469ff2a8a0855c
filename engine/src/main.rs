//! `ferrowall`: the daemon and its offline tools.

use std::fs::File;
use std::io::{BufReader, Write};
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Replay { pcap, per_packet, stats } => {
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
            let out = match ferrowall_engine::replay::replay(inputs) {
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
                let s = &out.stats;
                eprintln!(
                    "found={} invalid={} insert={} insert_failed={} drop={} early_drop={} error={} search_restart={} clash_resolve={}",
                    s.found, s.invalid, s.insert, s.insert_failed, s.drop, s.early_drop, s.error, s.search_restart, s.clash_resolve
                );
            }
            ExitCode::SUCCESS
        }
    }
}

//! A scenario is a name and a script of steps; running one sends every packet through the kernel
//! (one at a time, reading the oracle's counters after each) and the same frames, with their real
//! send times, through the engine, then compares.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::packet::{self, tcp_flags, L4};

use crate::clock;
use crate::cmd::Result;
use crate::compare::{self, PacketVerdict};
use crate::engine::{self, Captured, EngineResult};
use crate::testbed::{Seen, Side, Testbed};

/// One step of a script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Inject this IP datagram (wrapped in Ethernet) from a side.
    Send(Side, Vec<u8>),
    /// Let time pass.
    Wait(Duration),
}

/// A named script.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub steps: Vec<Step>,
}

impl Scenario {
    pub fn new(name: impl Into<String>) -> Scenario {
        Scenario { name: name.into(), steps: Vec::new() }
    }

    /// Sends `datagram` from A.
    pub fn a(mut self, datagram: Vec<u8>) -> Scenario {
        self.steps.push(Step::Send(Side::A, datagram));
        self
    }

    /// Sends `datagram` from B.
    pub fn b(mut self, datagram: Vec<u8>) -> Scenario {
        self.steps.push(Step::Send(Side::B, datagram));
        self
    }

    /// Sends each of `datagrams` from `side`.
    pub fn send_all(mut self, side: Side, datagrams: Vec<Vec<u8>>) -> Scenario {
        self.steps.extend(datagrams.into_iter().map(|d| Step::Send(side, d)));
        self
    }

    /// Waits `ms` milliseconds.
    pub fn wait_ms(mut self, ms: u64) -> Scenario {
        self.steps.push(Step::Wait(Duration::from_millis(ms)));
        self
    }
}

/// How long to wait for a packet to move a counter before calling it "not seen".
const SEEN_WAIT: Duration = Duration::from_millis(300);

/// One packet's line in the report.
#[derive(Debug, Clone)]
pub struct PacketReport {
    pub side: Side,
    pub summary: String,
    pub kernel: Seen,
    pub engine: Option<(String, String)>,
    pub verdict: PacketVerdict,
}

/// A scenario's result.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub packets: Vec<PacketReport>,
    pub kernel_table: Vec<String>,
    pub engine_table: Vec<String>,
    pub table_diff: Vec<String>,
    pub engine_stderr: String,
    /// The harness could not run the scenario.
    pub error: Option<String>,
    pub wall: Duration,
    pub pcap: Option<PathBuf>,
}

impl Report {
    /// Every compared packet and the table agree.
    pub fn matches(&self) -> bool {
        self.error.is_none()
            && self.table_diff.is_empty()
            && self.packets.iter().all(|p| p.verdict != PacketVerdict::Differs)
    }

    /// A readable account: every packet with both verdicts, then the table differences.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mark = if self.matches() { "ok" } else { "DIFFERS" };
        let _ = write!(s, "--- {} [{mark}] ({:.2} s", self.name, self.wall.as_secs_f64());
        if let Some(p) = &self.pcap {
            let _ = write!(s, ", pcap: {}", p.display());
        }
        s.push_str(")\n");
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  harness error: {e}");
            return s;
        }
        let _ = writeln!(s, "  {:>3} {:<2} {:<58} {:<22} engine", "#", "", "packet", "kernel");
        for (i, p) in self.packets.iter().enumerate() {
            let kernel = match &p.kernel {
                Seen::NotSeen => "(not seen)".to_owned(),
                Seen::Unclassified => "(no state counter)".to_owned(),
                Seen::State { state, dir: Some(d) } => format!("{state} {d}"),
                Seen::State { state, dir: None } => (*state).to_owned(),
            };
            let engine = p.engine.as_ref().map_or("(no line)".to_owned(), |(st, d)| format!("{st} {d}"));
            let flag = match p.verdict {
                PacketVerdict::Differs => "  <-- differs",
                _ => "",
            };
            let _ = writeln!(s, "  {:>3} {:<2} {:<58} {:<22} {engine}{flag}", i + 1, p.side.name(), p.summary, kernel);
        }
        if self.table_diff.is_empty() {
            let _ = writeln!(s, "  table: same ({} entries)", self.kernel_table.len());
        } else {
            let _ = writeln!(
                s,
                "  table differs (kernel {} entries, engine {}):",
                self.kernel_table.len(),
                self.engine_table.len()
            );
            for l in &self.table_diff {
                let _ = writeln!(s, "  {l}");
            }
        }
        if !self.engine_stderr.trim().is_empty() && !self.matches() {
            for l in self.engine_stderr.lines() {
                let _ = writeln!(s, "  engine stderr: {l}");
            }
        }
        s
    }
}

/// Runs `sc` against a fresh kernel testbed and the engine binary `bin`. Captures go to `dir`;
/// a matching scenario's capture is deleted, a differing one's is kept for `ferrowall replay`.
pub fn run(sc: &Scenario, bin: &Path, dir: &Path) -> Report {
    let start = clock::now();
    let mut report = Report {
        name: sc.name.clone(),
        packets: Vec::new(),
        kernel_table: Vec::new(),
        engine_table: Vec::new(),
        table_diff: Vec::new(),
        engine_stderr: String::new(),
        error: None,
        wall: Duration::ZERO,
        pcap: None,
    };
    if let Err(e) = run_inner(sc, bin, dir, &mut report) {
        report.error = Some(e.to_string());
    }
    report.wall = start.elapsed();
    if report.matches() {
        if let Some(p) = report.pcap.take() {
            let _ = std::fs::remove_file(p);
        }
    } else {
        // Next to the capture: the report and both tables in full.
        let mut text = report.render();
        for l in &report.kernel_table {
            let _ = writeln!(text, "kernel: {l}");
        }
        for l in &report.engine_table {
            let _ = writeln!(text, "engine: {l}");
        }
        let _ = std::fs::write(dir.join(format!("{}.txt", sc.name)), text);
    }
    report
}

fn run_inner(sc: &Scenario, bin: &Path, dir: &Path, report: &mut Report) -> Result<()> {
    let mut captured = Vec::new();
    let mut seen = Vec::new();
    let (kernel_table, wall) = {
        let mut tb = Testbed::new()?;
        let start = clock::now();
        for step in &sc.steps {
            match step {
                Step::Send(side, datagram) => {
                    let frame = Testbed::frame(*side, datagram);
                    let at = start.elapsed();
                    tb.send(*side, &frame)?;
                    seen.push((*side, tb.observe(SEEN_WAIT)?, describe(datagram)));
                    captured.push(Captured { at, frame });
                }
                Step::Wait(d) => clock::sleep(*d),
            }
        }
        let table = tb.conntrack_list()?;
        (table, start.elapsed())
        // The testbed (and its namespaces) go here.
    };
    let pcap = dir.join(format!("{}.pcap", sc.name));
    engine::write_pcap(&pcap, &captured)?;
    report.pcap = Some(pcap.clone());
    let EngineResult { per_packet, table, stderr } = engine::replay(bin, &pcap)?;
    for (i, (side, kernel, summary)) in seen.into_iter().enumerate() {
        let engine = per_packet.get(i).cloned();
        let verdict = compare::packet(&kernel, engine.as_ref());
        report.packets.push(PacketReport { side, summary, kernel, engine, verdict });
    }
    report.table_diff = compare::tables(&kernel_table, &table, wall.as_secs() + 2);
    report.kernel_table = kernel_table;
    report.engine_table = table;
    report.engine_stderr = stderr;
    Ok(())
}

/// A one-line description of a datagram for the report.
pub fn describe(d: &[u8]) -> String {
    let p = match packet::parse_ip(d, 0) {
        Ok(p) => p,
        Err(e) => return format!("{} bytes, unparsable: {e}", d.len()),
    };
    let fam = match p.family {
        packet::Family::V4 => "v4",
        packet::Family::V6 => "v6",
    };
    let mut s = String::from(fam);
    if let Some(f) = p.fragment {
        let _ = write!(s, " frag@{}{}", f.offset, if f.more { "+" } else { "" });
    }
    let _ = match p.l4 {
        L4::Tcp(t) => {
            let names = [
                (tcp_flags::SYN, 'S'),
                (tcp_flags::ACK, 'A'),
                (tcp_flags::FIN, 'F'),
                (tcp_flags::RST, 'R'),
                (tcp_flags::PSH, 'P'),
                (tcp_flags::URG, 'U'),
            ];
            let flags: String = names.iter().filter(|(b, _)| t.flags & b != 0).map(|(_, c)| *c).collect();
            write!(
                s,
                " tcp {}>{} [{}] seq={} ack={} win={} len={}",
                t.sport,
                t.dport,
                flags,
                t.seq,
                t.ack,
                t.window,
                p.payload_len()
            )
        }
        L4::Udp(u) => write!(s, " udp {}>{} len={}", u.sport, u.dport, p.payload_len()),
        L4::UdpLite(u) => write!(s, " udplite {}>{} cov={}", u.sport, u.dport, u.len_or_coverage),
        L4::Icmp(i) | L4::Icmpv6(i) => {
            let name = if p.family == packet::Family::V4 { "icmp" } else { "icmpv6" };
            let quoted = match i.quoted.map(|q| packet::parse_quoted(d, q)) {
                Some(Ok(q)) => format!(" quoting {}", quoted_summary(&q)),
                _ => String::new(),
            };
            write!(s, " {name} type={} code={} id={}{quoted}", i.ty, i.code, i.id)
        }
        L4::Sctp(h) => {
            let chunks: Vec<String> = packet::sctp_chunks(p.l4_bytes(d))
                .map(|c| c.map_or("?".to_owned(), |c| sctp_name(c.ty).to_owned()))
                .collect();
            write!(s, " sctp {}>{} vtag={:#x} {}", h.sport, h.dport, h.vtag, chunks.join(","))
        }
        L4::Gre(g) => write!(s, " gre v{} key={:?} call={:?}", g.version, g.key, g.call_id),
        L4::Other => write!(s, " proto {} len={}", p.proto, p.end - p.l4_offset),
    };
    s
}

fn quoted_summary(q: &packet::Packet) -> String {
    match q.l4 {
        L4::Tcp(t) => format!("tcp {}>{}", t.sport, t.dport),
        L4::Udp(u) => format!("udp {}>{}", u.sport, u.dport),
        _ => format!("proto {}", q.proto),
    }
}

fn sctp_name(ty: u8) -> &'static str {
    use packet::sctp_chunk as c;
    match ty {
        c::DATA => "DATA",
        c::INIT => "INIT",
        c::INIT_ACK => "INIT_ACK",
        c::SACK => "SACK",
        c::HEARTBEAT => "HEARTBEAT",
        c::HEARTBEAT_ACK => "HEARTBEAT_ACK",
        c::ABORT => "ABORT",
        c::SHUTDOWN => "SHUTDOWN",
        c::SHUTDOWN_ACK => "SHUTDOWN_ACK",
        c::ERROR => "ERROR",
        c::COOKIE_ECHO => "COOKIE_ECHO",
        c::COOKIE_ACK => "COOKIE_ACK",
        c::SHUTDOWN_COMPLETE => "SHUTDOWN_COMPLETE",
        _ => "chunk?",
    }
}

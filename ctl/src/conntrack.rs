//! `ferroctl conntrack`: the daemon's connection table through ctnetlink, the messages the real
//! `conntrack` sends (see `proto::ctnetlink`).
//!
//! * `list` (the default): a dump, printed line for line as `conntrack -L` prints it; `-f`, `-m`
//!   (`MARK[/MASK]`) and `-u` (`STATUS,...`) filter in the daemon (`CTA_MARK`, `CTA_STATUS`), as
//!   do `-p`, `-s` and `-d` once the family is known (`CTA_FILTER`; given with `-f` or implied by
//!   an address); without a family, `-p` filters here.
//! * `get`: one connection by its original tuple (`-p -s -d` and ports or ICMP type/code/id).
//! * `delete`: one connection by tuple, or, without `-s`, every connection the filters select.
//! * `flush`: every connection (or those `-f` and `-m` select).
//! * `count`: the number of connections and the table's maximum.
//! * `stats`: each worker's counters, as `conntrack -S` prints each CPU's.
//! * `events`: joins the daemon's conntrack multicast groups (all, or those `-e` names) and
//!   prints each event as `conntrack -E` prints it, until interrupted or `--count` events; when
//!   the daemon reports that events were dropped for it (it did not keep up), says so on standard
//!   error and goes on, as `conntrack -E` does on `ENOBUFS`.
//!
//! `--json` prints connections as objects (`family`, `protocol`, `protonum`, `state`, `timeout`,
//! `original`, `reply`, `status`, `mark`, `use`, `id`), an array of them for `list`; `count` as
//! `{"count", "max"}`; `stats` as an array of `{"cpu", "found", ...}`; `events` one object per
//! line, the connection's with `"event"` (`NEW`, `UPDATE`, `DESTROY`) first, and
//! `{"lost": N}` for an overrun. Errors are reported as conntrack reports them (`such conntrack
//! doesn't exist`), with exit status 1.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use proto::ctnetlink::{
    self as wire, attr, filter_attr, filter_flag as ff, msg, status as st, Object, ProtoInfo, Tuple, AF_INET, AF_INET6,
};
use proto::netlink::{self, flags, msg_type, MessageBuilder, Nfgenmsg};
use proto::private;
use socket2::Socket;

/// The request's sequence number.
const SEQ: u32 = 1;

/// What to do with the table.
#[derive(Subcommand, Debug, Clone)]
pub(crate) enum CtCmd {
    /// List connections, as `conntrack -L` prints them (the default).
    List(Filters),
    /// Show one connection, by its original tuple.
    Get(TupleArgs),
    /// Delete one connection by its original tuple, or (without --src) those the filters select.
    Delete {
        #[command(flatten)]
        tuple: TupleArgs,
        #[command(flatten)]
        filters: MarkFilters,
    },
    /// Delete every connection, or those the filters select.
    Flush(MarkFilters),
    /// Count the connections.
    Count,
    /// Each worker's counters, as `conntrack -S` prints each CPU's.
    Stats,
    /// Print connection events as `conntrack -E` prints them, until interrupted.
    Events(EventArgs),
}

/// What `events` reports.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct EventArgs {
    /// The events to report, comma-separated: ALL, NEW, UPDATE (or UPDATES), DESTROY.
    #[arg(short = 'e', long = "event-mask")]
    mask: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
}

/// Filters of `list`.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct Filters {
    #[command(flatten)]
    marks: MarkFilters,
    /// Protocol (name or number).
    #[arg(short = 'p', long = "proto")]
    proto: Option<String>,
    /// Original source address.
    #[arg(short = 's', long = "src")]
    src: Option<IpAddr>,
    /// Original destination address.
    #[arg(short = 'd', long = "dst")]
    dst: Option<IpAddr>,
}

/// Filters the daemon applies to dumps, deletes and flushes.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct MarkFilters {
    /// Family: ipv4 or ipv6.
    #[arg(short = 'f', long = "family")]
    family: Option<String>,
    /// Mark, or MARK/MASK.
    #[arg(short = 'm', long = "mark")]
    mark: Option<String>,
    /// Status bits that must be set, comma-separated (ASSURED,SEEN_REPLY,...).
    #[arg(short = 'u', long = "status")]
    status: Option<String>,
}

/// An original tuple.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct TupleArgs {
    /// Protocol (name or number).
    #[arg(short = 'p', long = "proto")]
    proto: Option<String>,
    /// Original source address.
    #[arg(short = 's', long = "src")]
    src: Option<IpAddr>,
    /// Original destination address.
    #[arg(short = 'd', long = "dst")]
    dst: Option<IpAddr>,
    /// Source port (TCP, UDP, UDP-Lite, SCTP) or GRE source key.
    #[arg(long)]
    sport: Option<u16>,
    /// Destination port or GRE destination key.
    #[arg(long)]
    dport: Option<u16>,
    /// ICMP(v6) type.
    #[arg(long = "icmp-type")]
    icmp_type: Option<u8>,
    /// ICMP(v6) code.
    #[arg(long = "icmp-code")]
    icmp_code: Option<u8>,
    /// ICMP(v6) identifier.
    #[arg(long = "icmp-id")]
    icmp_id: Option<u16>,
}

/// The status bit names, by bit number.
const STATUS_NAMES: [&str; 16] = [
    "EXPECTED",
    "SEEN_REPLY",
    "ASSURED",
    "CONFIRMED",
    "SRC_NAT",
    "DST_NAT",
    "SEQ_ADJUST",
    "SRC_NAT_DONE",
    "DST_NAT_DONE",
    "DYING",
    "FIXED_TIMEOUT",
    "TEMPLATE",
    "UNTRACKED",
    "HELPER",
    "OFFLOAD",
    "HW_OFFLOAD",
];

const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

const SCTP_STATES: [&str; 10] = [
    "NONE",
    "CLOSED",
    "COOKIE_WAIT",
    "COOKIE_ECHOED",
    "ESTABLISHED",
    "SHUTDOWN_SENT",
    "SHUTDOWN_RECD",
    "SHUTDOWN_ACK_SENT",
    "HEARTBEAT_SENT",
    "HEARTBEAT_ACKED",
];

/// Protocol names as conntrack prints them (`unknown` for the others).
fn proto_name(n: u8) -> &'static str {
    match n {
        6 => "tcp",
        17 => "udp",
        136 => "udplite",
        1 => "icmp",
        58 => "icmpv6",
        132 => "sctp",
        47 => "gre",
        33 => "dccp",
        _ => "unknown",
    }
}

fn parse_proto(s: &str) -> Result<u8, String> {
    let n = match s.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "udplite" => 136,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "gre" => 47,
        "dccp" => 33,
        other => other.parse().map_err(|_| format!("unknown protocol `{s}'"))?,
    };
    Ok(n)
}

fn parse_family(s: &str) -> Result<u8, String> {
    match s {
        "ipv4" | "inet" => Ok(AF_INET),
        "ipv6" | "inet6" => Ok(AF_INET6),
        _ => Err(format!("unknown family `{s}' (ipv4 or ipv6)")),
    }
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("bad number `{s}'"))
}

/// `MARK` or `MARK/MASK`.
fn parse_mark(s: &str) -> Result<(u32, Option<u32>), String> {
    match s.split_once('/') {
        Some((m, k)) => Ok((parse_u32(m)?, Some(parse_u32(k)?))),
        None => Ok((parse_u32(s)?, None)),
    }
}

fn parse_status(s: &str) -> Result<u32, String> {
    let mut bits = 0;
    for w in s.split(',').filter(|w| !w.is_empty()) {
        let i = STATUS_NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(w))
            .ok_or_else(|| format!("unknown status `{w}'"))?;
        bits |= 1 << i;
    }
    Ok(bits)
}

fn addr_bytes(a: IpAddr) -> ([u8; 16], u8) {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v) => {
            b[..4].copy_from_slice(&v.octets());
            (b, AF_INET)
        }
        IpAddr::V6(v) => (v.octets(), AF_INET6),
    }
}

impl MarkFilters {
    /// The family given, if any.
    fn family(&self) -> Result<Option<u8>, String> {
        self.family.as_deref().map(parse_family).transpose()
    }

    /// `CTA_MARK`/`CTA_MARK_MASK` and `CTA_STATUS`/`CTA_STATUS_MASK`.
    fn put(&self, b: &mut MessageBuilder) -> Result<(), String> {
        if let Some(m) = &self.mark {
            let (mark, mask) = parse_mark(m)?;
            b.put_be32(attr::MARK, mark);
            if let Some(k) = mask {
                b.put_be32(attr::MARK_MASK, k);
            }
        }
        if let Some(s) = &self.status {
            let bits = parse_status(s)?;
            if bits == 0 {
                return Err("no status bits".into());
            }
            b.put_be32(attr::STATUS, bits).put_be32(attr::STATUS_MASK, bits);
        }
        Ok(())
    }
}

impl TupleArgs {
    /// The original tuple these arguments name.
    fn tuple(&self) -> Result<Tuple, String> {
        let proto = parse_proto(self.proto.as_deref().ok_or("missing -p PROTO")?)?;
        let (src, fs) = addr_bytes(self.src.ok_or("missing -s SRC")?);
        let (dst, fd) = addr_bytes(self.dst.ok_or("missing -d DST")?);
        if fs != fd {
            return Err("source and destination of different families".into());
        }
        let l4 = match wire::L4Kind::of(proto) {
            wire::L4Kind::Ports => [self.sport.unwrap_or(0), self.dport.unwrap_or(0)],
            wire::L4Kind::Icmp | wire::L4Kind::Icmpv6 => [
                self.icmp_id.unwrap_or(0),
                u16::from(self.icmp_type.unwrap_or(0)) << 8 | u16::from(self.icmp_code.unwrap_or(0)),
            ],
            wire::L4Kind::None => [0, 0],
        };
        Ok(Tuple { family: fs, src, dst, proto, l4 })
    }
}

fn request(t: u8, fl: u16, family: u8, version: u8, f: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
    let mut b = MessageBuilder::new(wire::nlmsg_type(t), fl, SEQ, 0);
    b.nfgenmsg(Nfgenmsg { family, version, res_id: 0 });
    f(&mut b);
    b.finish()
}

/// What the daemon answered: the messages of our sequence number (headers included), and the
/// errno of its final `NLMSG_ERROR` (0: an ack; `None`: the answer ended with `NLMSG_DONE`).
struct Answer {
    messages: Vec<Vec<u8>>,
    errno: Option<i32>,
}

/// Sends `req` and reads the answer to its end (`NLMSG_DONE` or `NLMSG_ERROR`).
fn exchange(sock: &Socket, req: &[u8]) -> Result<Answer, String> {
    sock.send(req).map_err(|e| format!("sending to the daemon: {e}"))?;
    let mut messages = Vec::new();
    loop {
        let d = super::recv(sock)?;
        for m in netlink::Messages::new(&d) {
            let m = m.map_err(|e| format!("malformed reply: {e}"))?;
            if m.header.seq != SEQ {
                continue;
            }
            let whole = d[m.offset..m.offset + m.header.len as usize].to_vec();
            match m.header.kind {
                msg_type::DONE => return Ok(Answer { messages, errno: None }),
                msg_type::ERROR => {
                    let code = m.payload.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    return Ok(Answer { messages, errno: Some(-code) });
                }
                _ => messages.push(whole),
            }
        }
    }
}

fn addr_text(family: u8, a: &[u8; 16]) -> String {
    if family == AF_INET6 {
        Ipv6Addr::from(*a).to_string()
    } else {
        Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
    }
}

fn tuple_text(out: &mut String, t: &Tuple) {
    let _ = write!(out, "src={} dst={} ", addr_text(t.family, &t.src), addr_text(t.family, &t.dst));
    let _ = match t.proto {
        6 | 17 | 136 | 132 => write!(out, "sport={} dport={} ", t.l4[0], t.l4[1]),
        1 | 58 => write!(out, "type={} code={} id={} ", t.l4[1] >> 8, t.l4[1] & 0xff, t.l4[0]),
        47 => write!(out, "srckey={:#x} dstkey={:#x} ", t.l4[0], t.l4[1]),
        _ => Ok(()),
    };
}

fn state_name(o: &Object) -> Option<&'static str> {
    match o.protoinfo {
        ProtoInfo::Tcp { state, .. } => TCP_STATES.get(usize::from(state)).copied(),
        ProtoInfo::Sctp { state, .. } => SCTP_STATES.get(usize::from(state)).copied(),
        ProtoInfo::None => None,
    }
}

/// One connection as `conntrack -L` prints it.
pub(crate) fn line(o: &Object) -> String {
    line_with(o, true, true)
}

/// One connection as conntrack prints it, with `mark=` and `use=` when the message had them.
fn line_with(o: &Object, mark: bool, use_count: bool) -> String {
    let t = &o.tuple[0];
    let mut s = String::with_capacity(200);
    let _ = write!(s, "{:<8} {} ", proto_name(t.proto), t.proto);
    if let Some(secs) = o.timeout {
        let _ = write!(s, "{secs} ");
    }
    if let Some(name) = state_name(o) {
        s.push_str(name);
        s.push(' ');
    }
    tuple_text(&mut s, t);
    if o.status & st::SEEN_REPLY == 0 {
        s.push_str("[UNREPLIED] ");
    }
    tuple_text(&mut s, &o.tuple[1]);
    if o.status & st::OFFLOAD != 0 {
        s.push_str("[OFFLOAD] ");
    }
    if o.status & st::HW_OFFLOAD != 0 {
        s.push_str("[HW_OFFLOAD] ");
    }
    if o.status & st::ASSURED != 0 {
        s.push_str("[ASSURED] ");
    }
    if mark {
        let _ = write!(s, "mark={} ", o.mark);
    }
    if let Some(z) = o.zone {
        let _ = write!(s, "zone={z} ");
    }
    if use_count {
        let _ = write!(s, "use={}", o.use_count);
    }
    s.truncate(s.trim_end().len());
    s
}

/// One event as `conntrack -E` prints it: the kind right-aligned in 9 columns, then the
/// connection (an event carries no `CTA_USE`, and `CTA_MARK` only when the mark is set or a
/// request changed it).
pub(crate) fn event_line(kind: wire::EventKind, o: &Object, mark: bool) -> String {
    format!("{:>9} {}", format!("[{}]", kind.name()), line_with(o, mark, false))
}

/// The groups mask `-e` names (all three without it).
fn parse_event_mask(s: Option<&str>) -> Result<u32, String> {
    let Some(s) = s else { return Ok(0b111) };
    let mut mask = 0;
    for w in s.split(',') {
        mask |= match w.to_ascii_uppercase().as_str() {
            "ALL" => 0b111,
            "NEW" => wire::EventKind::New.group_bit(),
            "UPDATE" | "UPDATES" => wire::EventKind::Update.group_bit(),
            "DESTROY" => wire::EventKind::Destroy.group_bit(),
            _ => return Err(format!("unknown event `{w}' (ALL, NEW, UPDATE, DESTROY)")),
        };
    }
    Ok(mask)
}

/// The name of the program whose netlink socket has port id `portid`, found as `conntrack -E`
/// finds it: the socket's inode in `/proc/net/netlink`, then a process holding that inode
/// (the one whose pid is the port id first), then its name in `/proc/PID/stat`.
fn progname(portid: u32) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/netlink").ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 10 && f[1] == "12" && f[2].parse::<u32>().ok()? == portid).then(|| f[9].to_owned())
    })?;
    let link = format!("socket:[{inode}]");
    let holds = |pid: &str| -> bool {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == link.as_str())))
            .unwrap_or(false)
    };
    let name = |pid: &str| -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // As conntrack reads it (`%*u (%m[^)]`): up to the first `)`.
        let rest = &stat[stat.find('(')? + 1..];
        Some(rest[..rest.find(')')?].to_owned())
    };
    let first = portid.to_string();
    if holds(&first) {
        return name(&first);
    }
    let procs = std::fs::read_dir("/proc").ok()?;
    procs
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|p| p != &first && p.parse::<u32>().is_ok_and(|n| n > 1))
        .find(|p| holds(p))
        .and_then(|p| name(&p))
}

/// `ferroctl conntrack events`: joins the groups and prints events as they come.
pub(crate) fn events(socket: &Path, args: &EventArgs, as_json: bool) -> ExitCode {
    match watch(socket, args, as_json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferroctl: conntrack events: {e}");
            ExitCode::from(1)
        }
    }
}

fn watch(socket: &Path, args: &EventArgs, as_json: bool) -> Result<(), String> {
    use std::io::Write as _;
    let mask = parse_event_mask(args.mask.as_deref())?;
    let (sock, portid) = super::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    sock.set_read_timeout(None).map_err(|e| e.to_string())?;
    sock.send(&private::groups_request(SEQ, portid, private::GROUPS_SET, mask))
        .map_err(|e| format!("sending to the daemon: {e}"))?;
    let mut shown = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.count.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        let d = super::recv(&sock)?;
        for m in netlink::Messages::new(&d) {
            let m = m.map_err(|e| format!("malformed message: {e}"))?;
            let whole = &d[m.offset..m.offset + m.header.len as usize];
            if let Some(lost) = private::parse_overrun(whole) {
                if as_json {
                    let mut out = stdout.lock();
                    if writeln!(out, "{{\"lost\": {lost}}}").and_then(|()| out.flush()).is_err() {
                        return Ok(());
                    }
                } else {
                    eprintln!("ferroctl: conntrack events: {lost} events lost: this listener did not keep up");
                }
                continue;
            }
            if m.header.kind == msg_type::ERROR && m.header.seq == SEQ {
                let code = m.payload.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if code != 0 {
                    return Err(errno_text(-code));
                }
                continue;
            }
            let Some(kind) = wire::EventKind::of(&m.header) else { continue };
            let o = wire::parse_object(m.payload).map_err(|e| format!("malformed event: {e}"))?;
            // An event a request caused names the requester, as conntrack -E shows it.
            let portid = m.header.pid;
            let prog = (portid != 0).then(|| progname(portid)).flatten();
            let text = if as_json {
                let j = json(&o);
                let by = match (portid, &prog) {
                    (0, _) => String::new(),
                    (p, Some(name)) => format!(", \"portid\": {p}, \"progname\": \"{}\"", name.escape_default()),
                    (p, None) => format!(", \"portid\": {p}"),
                };
                format!("{{\"event\": \"{}\", {}{by}}}", kind.name(), &j[1..j.len() - 1])
            } else {
                let mark = wire::parse_ct(&m.payload[Nfgenmsg::LEN..]).is_ok_and(|a| a.has(attr::MARK));
                let mut l = event_line(kind, &o, mark);
                match (portid, prog) {
                    (0, _) => {}
                    (p, Some(name)) => l.push_str(&format!(" [USERSPACE] portid={p} progname={name}")),
                    (p, None) => l.push_str(&format!(" [USERSPACE] portid={p}")),
                }
                l
            };
            let mut out = stdout.lock();
            // A closed standard output (`| head`) ends the command.
            if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                return Ok(());
            }
            shown += 1;
            if args.count.is_some_and(|n| shown >= n) {
                return Ok(());
            }
        }
    }
}

fn json_tuple(t: &Tuple) -> String {
    let mut s = format!("{{\"src\": \"{}\", \"dst\": \"{}\"", addr_text(t.family, &t.src), addr_text(t.family, &t.dst));
    let _ = match t.proto {
        6 | 17 | 136 | 132 => write!(s, ", \"sport\": {}, \"dport\": {}", t.l4[0], t.l4[1]),
        1 | 58 => write!(s, ", \"type\": {}, \"code\": {}, \"id\": {}", t.l4[1] >> 8, t.l4[1] & 0xff, t.l4[0]),
        47 => write!(s, ", \"srckey\": {}, \"dstkey\": {}", t.l4[0], t.l4[1]),
        _ => Ok(()),
    };
    s.push('}');
    s
}

/// One connection as a JSON object.
pub(crate) fn json(o: &Object) -> String {
    let t = &o.tuple[0];
    let status: Vec<String> =
        (0..16).filter(|b| o.status & (1 << b) != 0).map(|b| format!("\"{}\"", STATUS_NAMES[b])).collect();
    let opt = |v: Option<String>| v.unwrap_or_else(|| "null".into());
    format!(
        "{{\"family\": \"{}\", \"protocol\": \"{}\", \"protonum\": {}, \"state\": {}, \"timeout\": {}, \"original\": {}, \"reply\": {}, \"status\": [{}], \"mark\": {}, \"use\": {}, \"id\": {}}}",
        if t.family == AF_INET6 { "ipv6" } else { "ipv4" },
        proto_name(t.proto),
        t.proto,
        opt(state_name(o).map(|n| format!("\"{n}\""))),
        opt(o.timeout.map(|v| v.to_string())),
        json_tuple(t),
        json_tuple(&o.tuple[1]),
        status.join(", "),
        o.mark,
        o.use_count,
        o.id
    )
}

fn objects(a: &Answer) -> Result<Vec<Object>, String> {
    a.messages
        .iter()
        .filter(|m| netlink::Header::parse(m).is_ok_and(|h| h.kind == wire::nlmsg_type(msg::NEW)))
        .map(|m| wire::parse_object(&m[netlink::HDRLEN..]).map_err(|e| format!("malformed connection message: {e}")))
        .collect()
}

/// What a finished command prints and how it ends.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Output {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) code: u8,
}

impl Output {
    fn fail(what: &str, why: impl std::fmt::Display) -> Output {
        Output { stderr: format!("ferroctl: conntrack {what}: {why}\n"), code: 1, ..Output::default() }
    }
}

/// The text conntrack gives for an errno its table operations return.
fn errno_text(e: i32) -> String {
    match e {
        2 => "such conntrack doesn't exist".into(),
        e => std::io::Error::from_raw_os_error(e).to_string(),
    }
}

/// Runs `cmd` over `sock`, the connection to the daemon.
pub(crate) fn run(cmd: &CtCmd, as_json: bool, sock: &Socket) -> Output {
    match execute(cmd, as_json, sock) {
        Ok(o) => o,
        Err((what, why)) => Output::fail(what, why),
    }
}

type Failed = (&'static str, String);

fn execute(cmd: &CtCmd, as_json: bool, sock: &Socket) -> Result<Output, Failed> {
    let mut out = Output::default();
    match cmd {
        CtCmd::List(f) => {
            let at = |e: String| ("list", e);
            let family = f.marks.family().map_err(at)?;
            let proto = f.proto.as_deref().map(parse_proto).transpose().map_err(at)?;
            let (src, dst) = (f.src.map(addr_bytes), f.dst.map(addr_bytes));
            let family = family.or(src.map(|s| s.1)).or(dst.map(|d| d.1));
            let mut flags_orig = 0;
            let mut t = Tuple { family: family.unwrap_or(0), ..Tuple::default() };
            if let Some((a, _)) = src {
                t.src = a;
                flags_orig |= ff::IP_SRC;
            }
            if let Some((a, _)) = dst {
                t.dst = a;
                flags_orig |= ff::IP_DST;
            }
            if let (Some(p), Some(_)) = (proto, family) {
                t.proto = p;
                flags_orig |= ff::PROTO_NUM;
            }
            let mut bad = None;
            let req = request(msg::GET, flags::REQUEST | flags::DUMP, family.unwrap_or(0), 0, |b| {
                if let Err(e) = f.marks.put(b) {
                    bad = Some(e);
                }
                if flags_orig != 0 {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &t);
                    let n = b.nest_start(attr::FILTER);
                    b.put(filter_attr::ORIG_FLAGS, &flags_orig.to_ne_bytes());
                    b.nest_end(n);
                }
            });
            if let Some(e) = bad {
                return Err(("list", e));
            }
            let a = exchange(sock, &req).map_err(at)?;
            if let Some(e) = a.errno.filter(|&e| e != 0) {
                return Err(("list", errno_text(e)));
            }
            let mut list = objects(&a).map_err(at)?;
            if let (Some(p), None) = (proto, family) {
                list.retain(|o| o.tuple[0].proto == p);
            }
            if as_json {
                let items: Vec<String> = list.iter().map(|o| format!("  {}", json(o))).collect();
                out.stdout = if items.is_empty() { "[]\n".into() } else { format!("[\n{}\n]\n", items.join(",\n")) };
            } else {
                for o in &list {
                    out.stdout.push_str(&line(o));
                    out.stdout.push('\n');
                }
            }
        }
        CtCmd::Get(ta) => {
            let t = ta.tuple().map_err(|e| ("get", e))?;
            let req = request(msg::GET, flags::REQUEST | flags::ACK, t.family, 0, |b| {
                wire::put_tuple(b, attr::TUPLE_ORIG, &t);
            });
            let a = exchange(sock, &req).map_err(|e| ("get", e))?;
            if let Some(e) = a.errno.filter(|&e| e != 0) {
                return Err(("get", errno_text(e)));
            }
            let list = objects(&a).map_err(|e| ("get", e))?;
            let o = list.first().ok_or(("get", "no connection in the answer".to_owned()))?;
            out.stdout = if as_json { format!("{}\n", json(o)) } else { format!("{}\n", line(o)) };
        }
        CtCmd::Delete { tuple, filters } => {
            let req = if tuple.src.is_some() {
                let t = tuple.tuple().map_err(|e| ("delete", e))?;
                request(msg::DELETE, flags::REQUEST | flags::ACK, t.family, 0, |b| {
                    wire::put_tuple(b, attr::TUPLE_ORIG, &t);
                })
            } else {
                filtered_flush(filters).map_err(|e| ("delete", e))?
            };
            ack(sock, &req, "delete")?;
        }
        CtCmd::Flush(filters) => {
            let req = filtered_flush(filters).map_err(|e| ("flush", e))?;
            ack(sock, &req, "flush")?;
        }
        CtCmd::Count => {
            let req = request(msg::GET_STATS, flags::REQUEST | flags::ACK, 0, 0, |_| {});
            let a = exchange(sock, &req).map_err(|e| ("count", e))?;
            if let Some(e) = a.errno.filter(|&e| e != 0) {
                return Err(("count", errno_text(e)));
            }
            let (n, max) = a
                .messages
                .iter()
                .find_map(|m| wire::parse_stats(&m[netlink::HDRLEN..]))
                .ok_or(("count", "no count in the answer".to_owned()))?;
            out.stdout = if as_json { format!("{{\"count\": {n}, \"max\": {max}}}\n") } else { format!("{n}\n") };
        }
        CtCmd::Stats => {
            let req = request(msg::GET_STATS_CPU, flags::REQUEST | flags::DUMP, 0, 0, |_| {});
            let a = exchange(sock, &req).map_err(|e| ("stats", e))?;
            if let Some(e) = a.errno.filter(|&e| e != 0) {
                return Err(("stats", errno_text(e)));
            }
            let rows: Vec<(u16, [u32; 10])> =
                a.messages.iter().filter_map(|m| wire::parse_stats_cpu(&m[netlink::HDRLEN..])).collect();
            if as_json {
                let items: Vec<String> = rows
                    .iter()
                    .map(|(cpu, v)| {
                        let fields: Vec<String> =
                            wire::stats_attr::ALL.iter().zip(v).map(|((_, n), v)| format!("\"{n}\": {v}")).collect();
                        format!("  {{\"cpu\": {cpu}, {}}}", fields.join(", "))
                    })
                    .collect();
                out.stdout = format!("[\n{}\n]\n", items.join(",\n"));
            } else {
                for (cpu, v) in &rows {
                    // conntrack -S's layout: the CPU left-aligned in 8 columns, a tab, the counters.
                    let mut l = format!("{:<8}\t", format!("cpu={cpu}"));
                    for ((_, n), v) in wire::stats_attr::ALL.iter().zip(v) {
                        let _ = write!(l, "{n}={v} ");
                    }
                    out.stdout.push_str(&l);
                    out.stdout.push('\n');
                }
            }
        }
        // A stream, not a finished command: `events` prints as events come.
        CtCmd::Events(_) => return Err(("events", "run by conntrack::events".to_owned())),
    }
    Ok(out)
}

/// A `DELETE` without a tuple: a flush, restricted by the filters (version 1, so that the family
/// counts too).
fn filtered_flush(f: &MarkFilters) -> Result<Vec<u8>, String> {
    let family = f.family()?.unwrap_or(0);
    let mut bad = None;
    let req = request(msg::DELETE, flags::REQUEST | flags::ACK, family, 1, |b| {
        if let Err(e) = f.put(b) {
            bad = Some(e);
        }
    });
    bad.map_or(Ok(req), Err)
}

/// Sends a request that is answered by an ack alone.
fn ack(sock: &Socket, req: &[u8], what: &'static str) -> Result<(), Failed> {
    let a = exchange(sock, req).map_err(|e| (what, e))?;
    match a.errno {
        Some(0) => Ok(()),
        Some(e) => Err((what, errno_text(e))),
        None => Err((what, "unexpected end of dump".into())),
    }
}

/// Connects to the daemon at `socket` and runs `cmd`; prints and exits as [`Output`] says.
pub(crate) fn main(socket: &Path, cmd: &CtCmd, as_json: bool) -> ExitCode {
    let out = match super::connect(socket) {
        Ok((sock, _portid)) => run(cmd, as_json, &sock),
        Err(e) => Output::fail("", format!("{}: {e}", socket.display())),
    };
    super::print_out(&out.stdout);
    eprint!("{}", out.stderr);
    ExitCode::from(out.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj() -> Object {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[198, 18, 0, 1]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[198, 19, 0, 1]);
        let t = Tuple { family: AF_INET, src, dst, proto: 6, l4: [1000, 80] };
        Object {
            tuple: [t, Tuple { src: dst, dst: src, l4: [80, 1000], ..t }],
            status: st::CONFIRMED | st::ASSURED,
            mark: 3,
            id: 7,
            use_count: 1,
            timeout: Some(99),
            protoinfo: ProtoInfo::Tcp { state: 3, wscale: [0; 2], flags: [0; 2] },
            synproxy: None,
            zone: None,
        }
    }

    #[test]
    fn lines_as_conntrack_prints_them() {
        assert_eq!(
            line(&obj()),
            "tcp      6 99 ESTABLISHED src=198.18.0.1 dst=198.19.0.1 sport=1000 dport=80 [UNREPLIED] src=198.19.0.1 dst=198.18.0.1 sport=80 dport=1000 [ASSURED] mark=3 use=1"
        );
        let mut icmp = obj();
        icmp.tuple[0].proto = 1;
        icmp.tuple[0].l4 = [77, 8 << 8];
        icmp.tuple[1].proto = 1;
        icmp.tuple[1].l4 = [77, 0];
        icmp.protoinfo = ProtoInfo::None;
        icmp.status = st::CONFIRMED | st::SEEN_REPLY;
        assert_eq!(
            line(&icmp),
            "icmp     1 99 src=198.18.0.1 dst=198.19.0.1 type=8 code=0 id=77 src=198.19.0.1 dst=198.18.0.1 type=0 code=0 id=77 mark=3 use=1"
        );
    }

    #[test]
    fn events_as_conntrack_prints_them() {
        let mut o = obj();
        o.use_count = 0;
        assert_eq!(
            event_line(wire::EventKind::New, &o, false),
            "    [NEW] tcp      6 99 ESTABLISHED src=198.18.0.1 dst=198.19.0.1 sport=1000 dport=80 [UNREPLIED] src=198.19.0.1 dst=198.18.0.1 sport=80 dport=1000 [ASSURED]"
        );
        o.timeout = None;
        assert!(event_line(wire::EventKind::Destroy, &o, true)
            .starts_with("[DESTROY] tcp      6 ESTABLISHED src=198.18.0.1"));
        assert!(event_line(wire::EventKind::Update, &o, true).ends_with("[ASSURED] mark=3"));
        assert_eq!(parse_event_mask(None), Ok(7));
        assert_eq!(parse_event_mask(Some("new,DESTROY")), Ok(5));
        assert_eq!(parse_event_mask(Some("updates")), Ok(2));
        assert!(parse_event_mask(Some("bogus")).is_err());
    }

    #[test]
    fn json_objects() {
        let j = json(&obj());
        assert!(
            j.starts_with("{\"family\": \"ipv4\", \"protocol\": \"tcp\", \"protonum\": 6, \"state\": \"ESTABLISHED\""),
            "{j}"
        );
        assert!(j.contains("\"status\": [\"ASSURED\", \"CONFIRMED\"]"), "{j}");
        assert!(j.contains(
            "\"original\": {\"src\": \"198.18.0.1\", \"dst\": \"198.19.0.1\", \"sport\": 1000, \"dport\": 80}"
        ));
    }

    #[test]
    fn argument_parsing() {
        assert_eq!(parse_mark("0x10/0xff"), Ok((16, Some(255))));
        assert_eq!(parse_mark("7"), Ok((7, None)));
        assert_eq!(parse_status("ASSURED,seen_reply"), Ok(6));
        assert!(parse_status("BOGUS").is_err());
        assert_eq!(parse_proto("TCP"), Ok(6));
        assert_eq!(parse_proto("41"), Ok(41));
        assert_eq!(parse_family("ipv6"), Ok(AF_INET6));
    }
}

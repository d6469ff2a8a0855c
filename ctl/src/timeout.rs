//! `ferroctl timeout ARGS...`: nfct's `timeout` subsystem spoken straight to the daemon.
//!
//! `ARGS` are exactly what follows `nfct timeout` (conntrack-tools 1.4.7 with libnetfilter_cttimeout
//! 1.0.1, as Debian ships them): `list`, `add NAME inet|inet6 PROTO STATE VALUE...`, `get NAME`,
//! `delete NAME`, `flush`, `default-set inet|inet6 PROTO STATE VALUE...`, `default-get inet|inet6
//! PROTO`, commands abbreviated as nfct allows (`l`, `de`…). The request bytes, the standard output,
//! the standard error and the exit status are nfct's, byte for byte, error messages included
//! (`nfct v1.4.7: netlink error: Device or resource busy`): the `nfct v1.4.7:` prefix and the
//! `nfct` in usage lines are kept so that whatever parses nfct's output parses ours. The steps run
//! in nfct's order: the command word is checked, then the daemon is reached, then the command's
//! arguments are checked.
//!
//! Quirks kept on purpose: protocol names are looked up in `/etc/protocols` as `getprotobyname`
//! does (exact name or alias, so `tcp` and `TCP` but not `Tcp`; `icmpv6` and `generic` besides);
//! state names are matched without regard to case against nfct's names for the protocol (SCTP's
//! `HEARTBEAT_SENT`/`HEARTBEAT_ACKED` are not among them); values are read as C's `atoi` reads
//! them (`abc` is 0, `-1` is 4294967295); names longer than 31 bytes are cut to 31; an unknown
//! command word is reported as `Unknown command: timeout`. One deviation: where `/etc/protocols`
//! cannot be read at all, the protocols nfct supports are still known by their usual names (nfct
//! would know only `icmpv6` and `generic`).
//!
//! `--json` (list, get, default-get) prints the replies as one JSON document instead: an object
//! `{"name", "l3proto", "l4proto", "use", "policy": {STATE: seconds}}` per policy (a `null` where the
//! reply has no such attribute, as defaults have no name and no use count), an array of them for
//! `list`. Policy keys are every slot the reply carries, in attribute order, named by
//! [`proto::cttimeout::state_names`] (nfct's spelling, plus the slots nfct does not know).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use proto::cttimeout::{self, Fields, MsgType, Reply};
use proto::netlink::{self, flags, msg_type};

/// What nfct calls itself in its messages.
const NFCT: &str = "nfct v1.4.7";
/// nfct's `argv[0]` as the usage lines show it.
const ARGV0: &str = "nfct";
/// `AF_INET`, `AF_INET6`.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// The sequence number of our one request.
const SEQ: u32 = 1;

/// nfct's commands, in the order its prefix matching tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    List,
    Add,
    Delete,
    Get,
    Flush,
    Disable,
    DefaultSet,
    DefaultGet,
}

const COMMANDS: [(&str, Cmd); 8] = [
    ("list", Cmd::List),
    ("add", Cmd::Add),
    ("delete", Cmd::Delete),
    ("get", Cmd::Get),
    ("flush", Cmd::Flush),
    ("disable", Cmd::Disable),
    ("default-set", Cmd::DefaultSet),
    ("default-get", Cmd::DefaultGet),
];

/// `nfct_cmd_parse`: the first command that `word` is a prefix of.
fn parse_cmd(word: &[u8]) -> Option<Cmd> {
    COMMANDS.iter().find(|(name, _)| name.as_bytes().starts_with(word)).map(|&(_, c)| c)
}

/// What a run printed and how it ends.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Output {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) code: u8,
}

impl Output {
    fn fail(mut self, msg: &[u8]) -> Output {
        self.stderr.extend_from_slice(msg);
        self.code = 1;
        self
    }

    /// `nfct_perror` with `errno` 0 (as it is at every argument check).
    fn perror(self, msg: &str) -> Output {
        self.fail(format!("{NFCT}: {msg}\n").as_bytes())
    }
}

fn usage() -> Vec<u8> {
    format!("Usage: {ARGV0} command subsystem [parameters]...\n").into_bytes()
}

/// A parsed request: its type, flags and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    kind: MsgType,
    flags: u16,
    name: Option<Vec<u8>>,
    l3proto: Option<u16>,
    l4proto: Option<u8>,
    data: Vec<(u16, u32)>,
}

impl Request {
    fn new(kind: MsgType, flags: u16) -> Request {
        Request { kind, flags, name: None, l3proto: None, l4proto: None, data: Vec::new() }
    }

    fn message(&self) -> Vec<u8> {
        let f =
            Fields { name: self.name.as_deref(), l3proto: self.l3proto, l4proto: self.l4proto, data: Some(&self.data) };
        cttimeout::request_message(self.kind, self.flags, SEQ, &f)
    }
}

/// `nfct_timeout_attr_set(NAME)`: `strncpy` into 32 bytes, the last one NUL.
fn policy_name(arg: &[u8]) -> Vec<u8> {
    arg[..arg.len().min(cttimeout::NAME_MAX - 1)].to_vec()
}

/// nfct's state names per protocol (libnetfilter_cttimeout's tables, `nfct_timeout_attr_max`): the
/// wire's names ([`cttimeout::names`]) where the library knows every slot, fewer for SCTP, and DCCP,
/// which this kernel's cttimeout does not support.
fn nfct_states(l4: u8) -> &'static [&'static str] {
    /// The library stops at SHUTDOWN_ACK_SENT: it knows neither HEARTBEAT slot the wire carries.
    const SCTP: &[&str] = cttimeout::names::SCTP.split_at(7).0;
    /// The library's own: cttimeout here has no DCCP tracker (`EOPNOTSUPP`), so no wire names.
    const DCCP: &[&str] = &["REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT"];
    match l4 {
        132 => SCTP,
        33 => DCCP,
        _ => cttimeout::state_names(l4).unwrap_or(&[]),
    }
}

/// C's `atoi` (glibc: `strtol` base 10, saturated to `long`, then cut to `int`), as nfct stores it.
fn atoi(s: &[u8]) -> u32 {
    let mut i = s.iter().take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')).count();
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut v: i64 = 0;
    for &c in s[i..].iter().take_while(|c| c.is_ascii_digit()) {
        let d = i64::from(c - b'0');
        v = if neg { v.saturating_mul(10).saturating_sub(d) } else { v.saturating_mul(10).saturating_add(d) };
    }
    v as i32 as u32
}

/// `getprotobyname` over `text` (the `/etc/protocols` format): the first entry whose name or an
/// alias is `name`.
fn lookup_protocol(text: &[u8], name: &[u8]) -> Option<u8> {
    for line in text.split(|&c| c == b'\n') {
        let line = line.split(|&c| c == b'#').next().unwrap_or(line);
        let mut words = line.split(|c| c.is_ascii_whitespace()).filter(|w| !w.is_empty());
        let (Some(official), Some(number)) = (words.next(), words.next()) else { continue };
        let Some(n) = std::str::from_utf8(number).ok().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if official == name || words.any(|a| a == name) {
            return Some(n as u8);
        }
    }
    None
}

/// The usual names, for a system without `/etc/protocols`.
const FALLBACK_PROTOCOLS: &[u8] = b"icmp 1 ICMP\ntcp 6 TCP\nudp 17 UDP\ndccp 33 DCCP\ngre 47 GRE\n\
ipv6-icmp 58 IPv6-ICMP\nsctp 132 SCTP\nudplite 136 UDPLite\n";

/// `nfct_cmd_get_l4proto`.
fn l4proto(protocols: &[u8], name: &[u8]) -> Option<u8> {
    lookup_protocol(protocols, name).or(match name {
        b"icmpv6" => Some(58),
        b"generic" => Some(255),
        _ => None,
    })
}

/// `nfct_cmd_timeout_parse`: `args` from the family on; fills in L3PROTO, L4PROTO and DATA.
fn parse_policy(protocols: &[u8], args: &[&[u8]], r: &mut Request) -> Result<(), Vec<u8>> {
    let perror = |m: &str| format!("{NFCT}: {m}\n").into_bytes();
    r.l3proto = Some(match args[0] {
        b"inet" => AF_INET,
        b"inet6" => AF_INET6,
        _ => return Err(perror("unknown layer 3 protocol")),
    });
    let proto_name = args[1];
    let l4 = l4proto(protocols, proto_name).ok_or_else(|| perror("unknown layer 4 protocol"))?;
    r.l4proto = Some(l4);
    let names = nfct_states(l4);
    let mut slots: Vec<Option<u32>> = vec![None; names.len()];
    let mut rest = &args[2..];
    while rest.len() > 1 {
        let Some(j) = names.iter().position(|n| n.as_bytes().eq_ignore_ascii_case(rest[0])) else {
            let mut e = format!("{NFCT}: Wrong state name: `").into_bytes();
            e.extend_from_slice(rest[0]);
            e.extend_from_slice(b"' for protocol `");
            e.extend_from_slice(proto_name);
            e.extend_from_slice(b"'\n");
            return Err(e);
        };
        slots[j] = Some(atoi(rest[1]));
        rest = &rest[2..];
    }
    if !rest.is_empty() {
        return Err(perror("missing value for this timeout"));
    }
    r.data = slots.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i as u16 + 1, v))).collect();
    Ok(())
}

/// Checks `args` (what follows `timeout`) for `cmd` as nfct does once its socket is open: the
/// request, or what nfct prints to standard error.
fn parse_args(protocols: &[u8], cmd: Cmd, args: &[&[u8]]) -> Result<Request, Vec<u8>> {
    let perror = |m: &str| format!("{NFCT}: {m}\n").into_bytes();
    // nfct's argc: "nfct", "timeout", then args.
    let argc = args.len() + 2;
    let named = |kind: MsgType| {
        if argc < 4 {
            return Err(perror("missing timeout policy name"));
        }
        if argc > 4 {
            return Err(perror("too many arguments"));
        }
        let mut r = Request::new(kind, flags::ACK);
        r.name = Some(policy_name(args[1]));
        Ok(r)
    };
    match cmd {
        Cmd::Disable => Err(format!(
            "{NFCT}: Missing command\n{ARGV0} <list|add|delete|get|default-set|default-get|flush> timeout \
             [<parameters>, ...]\n"
        )
        .into_bytes()),
        Cmd::List | Cmd::Flush if argc > 3 => Err(perror("too many arguments")),
        Cmd::List => Ok(Request::new(MsgType::Get, flags::DUMP)),
        Cmd::Flush => Ok(Request::new(MsgType::Delete, flags::ACK)),
        Cmd::Get => named(MsgType::Get),
        Cmd::Delete => named(MsgType::Delete),
        Cmd::Add => {
            if argc < 6 {
                return Err(perror(
                    "missing parameters\nsyntax: nfct add timeout name family protocol state1 timeout1 ...",
                ));
            }
            let mut r = Request::new(MsgType::New, flags::CREATE | flags::ACK);
            r.name = Some(policy_name(args[1]));
            parse_policy(protocols, &args[2..], &mut r)?;
            Ok(r)
        }
        Cmd::DefaultSet => {
            if argc < 6 {
                return Err(perror(
                    "missing parameters\nsyntax: nfct default-set timeout family protocol state1 timeout1...",
                ));
            }
            let mut r = Request::new(MsgType::DefaultSet, flags::ACK);
            parse_policy(protocols, &args[1..], &mut r)?;
            Ok(r)
        }
        Cmd::DefaultGet => {
            if argc < 5 {
                return Err(perror("missing parameters\nsyntax: nfct default-get timeout family protocol"));
            }
            let mut r = Request::new(MsgType::DefaultGet, flags::ACK);
            // Only the family and the protocol: nfct ignores anything after them.
            parse_policy(protocols, &args[1..3], &mut r)?;
            Ok(r)
        }
    }
}

/// `nfct_timeout_snprintf` (`NFCT_TIMEOUT_O_DEFAULT`) of a reply as
/// `nfct_timeout_nlmsg_parse_payload` reads it, and the newline nfct adds.
fn nfct_format(r: &Reply<'_>, out: &mut Vec<u8>) {
    if let Some(name) = r.name {
        out.push(b'.');
        out.extend_from_slice(&name[..name.len().min(cttimeout::NAME_MAX - 1)]);
        out.extend_from_slice(b" = {\n");
    }
    if let Some(l3) = r.l3proto {
        out.extend_from_slice(format!("\t.l3proto = {l3},\n").as_bytes());
    }
    if let Some(l4) = r.l4proto {
        out.extend_from_slice(format!("\t.l4proto = {l4},\n").as_bytes());
    }
    // The library keeps a slot only for a protocol it knows, once L4PROTO is known, and prints the
    // policy once it kept one; unset slots print as 0.
    if let (Some(l4), Some(_)) = (r.l4proto, &r.data) {
        let names = nfct_states(l4);
        let values: Vec<Option<u32>> = (1..=names.len() as u16).map(|id| r.value(id)).collect();
        if values.iter().any(Option::is_some) {
            out.extend_from_slice(b"\t.policy = {\n");
            for (name, v) in names.iter().zip(&values) {
                out.extend_from_slice(format!("\t\t.{name} = {},\n", v.unwrap_or(0)).as_bytes());
            }
            out.extend_from_slice(b"\t},\n");
        }
    }
    out.extend_from_slice(b"};\n");
}

/// `s` as a JSON string: quotes, backslashes and control bytes escaped, invalid UTF-8 replaced.
fn json_string(s: &[u8], out: &mut String) {
    out.push('"');
    for c in String::from_utf8_lossy(s).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

/// One reply as a JSON object (one line).
fn json_object(r: &Reply<'_>) -> String {
    let mut s = String::from("{\"name\": ");
    match r.name {
        Some(n) => json_string(n, &mut s),
        None => s.push_str("null"),
    }
    s.push_str(&format!(
        ", \"l3proto\": {}, \"l4proto\": {}, \"use\": {}, \"policy\": ",
        json_opt(r.l3proto),
        json_opt(r.l4proto),
        json_opt(r.uses)
    ));
    match &r.data {
        None => s.push_str("null"),
        Some(members) => {
            let names = r.l4proto.and_then(cttimeout::state_names).unwrap_or(&[]);
            let mut ids: Vec<u16> = members.iter().map(|&(id, _)| id).filter(|&id| id != 0).collect();
            ids.sort_unstable();
            ids.dedup();
            s.push('{');
            for (k, id) in ids.iter().enumerate() {
                if k > 0 {
                    s.push_str(", ");
                }
                let name = names.get(usize::from(*id) - 1).map_or_else(|| format!("ATTR_{id}"), |n| (*n).to_owned());
                json_string(name.as_bytes(), &mut s);
                s.push_str(&format!(": {}", r.value(*id).unwrap_or(0)));
            }
            s.push('}');
        }
    }
    s.push('}');
    s
}

/// The JSON document for `cmd`'s replies (`objects`, each a reply payload).
fn json_document(cmd: Cmd, objects: &[Vec<u8>]) -> String {
    let replies: Vec<Reply<'_>> = objects.iter().filter_map(|p| cttimeout::parse_reply(p)).collect();
    if cmd == Cmd::List {
        if replies.is_empty() {
            return "[]\n".to_owned();
        }
        let lines: Vec<String> = replies.iter().map(|r| format!("  {}", json_object(r))).collect();
        format!("[\n{}\n]\n", lines.join(",\n"))
    } else {
        match replies.first() {
            Some(r) => format!("{}\n", json_object(r)),
            None => "null\n".to_owned(),
        }
    }
}

/// The errno's text as `strerror` gives it.
fn strerror(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// A connection: sends a datagram, receives one.
pub(crate) trait Link {
    fn send(&mut self, datagram: &[u8]) -> Result<(), String>;
    fn recv(&mut self) -> Result<Vec<u8>, String>;
    /// The port id the daemon gave this connection.
    fn portid(&self) -> u32;
}

/// Sends `req` and walks the replies as `nfct_mnl_talk` with `mnl_cb_run` does: reply payloads
/// (messages of a protocol type), or the errno that ended the exchange.
fn talk(link: &mut dyn Link, req: &Request) -> Result<Result<Vec<Vec<u8>>, i32>, String> {
    link.send(&req.message())?;
    let portid = link.portid();
    let mut objects = Vec::new();
    loop {
        let d = link.recv()?;
        for m in netlink::Messages::new(&d) {
            let Ok(m) = m else { return Ok(Err(libc_errno::EINVAL)) };
            let h = m.header;
            if h.pid != 0 && h.pid != portid {
                return Ok(Err(libc_errno::ESRCH));
            }
            if h.seq != 0 && h.seq != SEQ {
                return Ok(Err(libc_errno::EPROTO));
            }
            match h.kind {
                msg_type::ERROR => {
                    let Some(code) = m.payload.get(..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])) else {
                        return Ok(Err(libc_errno::EBADMSG));
                    };
                    return Ok(if code == 0 { Ok(objects) } else { Err(code.wrapping_neg()) });
                }
                msg_type::DONE => return Ok(Ok(objects)),
                k if k >= msg_type::MIN_TYPE => objects.push(m.payload.to_vec()),
                _ => {}
            }
        }
    }
}

/// The errno values `mnl_cb_run` reports itself.
mod libc_errno {
    pub(super) const ESRCH: i32 = 3;
    pub(super) const EINVAL: i32 = 22;
    pub(super) const EBADMSG: i32 = 74;
    pub(super) const EPROTO: i32 = 71;
}

/// Runs `ferroctl timeout ARGS`: `connect` is called once the command word is known, as nfct opens
/// its socket; `protocols` is the text of `/etc/protocols`.
pub(crate) fn run(
    args: &[OsString],
    json: bool,
    protocols: &[u8],
    connect: &mut dyn FnMut() -> Result<Box<dyn Link>, String>,
) -> Output {
    let out = Output::default();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let Some(&word) = args.first() else { return out.fail(&usage()) };
    let Some(cmd) = parse_cmd(word) else {
        let mut e = format!("{NFCT}: Unknown command: timeout\n").into_bytes();
        e.extend_from_slice(&usage());
        return out.fail(&e);
    };
    if json && !matches!(cmd, Cmd::List | Cmd::Get | Cmd::DefaultGet) {
        let mut out = out.fail(b"ferroctl: timeout: --json applies to list, get and default-get\n");
        out.code = 2;
        return out;
    }
    let mut link = match connect() {
        Ok(l) => l,
        Err(e) => return out.fail(format!("ferroctl: timeout: {e}\n").as_bytes()),
    };
    let req = match parse_args(protocols, cmd, &args) {
        Ok(r) => r,
        Err(e) => return out.fail(&e),
    };
    let (objects, errno) = match talk(link.as_mut(), &req) {
        Ok(Ok(objects)) => (objects, None),
        Ok(Err(errno)) => (Vec::new(), Some(errno)),
        Err(e) => return out.fail(format!("ferroctl: timeout: {e}\n").as_bytes()),
    };
    let mut out = out;
    if json {
        if errno.is_none() {
            out.stdout = json_document(cmd, &objects).into_bytes();
        }
    } else {
        for p in &objects {
            if let Some(r) = cttimeout::parse_reply(p) {
                nfct_format(&r, &mut out.stdout);
            }
        }
    }
    match errno {
        Some(e) => out.perror(&format!("netlink error: {}", strerror(e))),
        None => out,
    }
}

/// Reads `/etc/protocols` (or the usual names where it cannot be read).
pub(crate) fn system_protocols() -> Vec<u8> {
    std::fs::read("/etc/protocols").unwrap_or_else(|_| FALLBACK_PROTOCOLS.to_vec())
}

/// Prints `out` and turns its code into an exit status.
pub(crate) fn finish(out: Output) -> ExitCode {
    let _ = std::io::stdout().lock().write_all(&out.stdout);
    let _ = std::io::stderr().lock().write_all(&out.stderr);
    ExitCode::from(out.code)
}

/// Shown in errors about the socket.
pub(crate) fn unreachable(socket: &Path, e: impl std::fmt::Display) -> String {
    format!("cannot reach the ferrowall daemon at {}: {e}", socket.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::cttimeout::{defaults_message, object_message, Object};

    #[test]
    fn commands_match_by_prefix_in_nfcts_order() {
        assert_eq!(parse_cmd(b""), Some(Cmd::List));
        assert_eq!(parse_cmd(b"d"), Some(Cmd::Delete));
        assert_eq!(parse_cmd(b"di"), Some(Cmd::Disable));
        assert_eq!(parse_cmd(b"def"), Some(Cmd::DefaultSet));
        assert_eq!(parse_cmd(b"default-g"), Some(Cmd::DefaultGet));
        assert_eq!(parse_cmd(b"lists"), None);
    }

    #[test]
    fn atoi_as_glibc() {
        for (s, v) in [
            ("10", 10u32),
            ("  +7x", 7),
            ("abc", 0),
            ("-1", u32::MAX),
            ("4294967296", 0),
            ("99999999999", 99999999999u64 as u32),
            ("99999999999999999999999", u32::MAX),
            ("", 0),
        ] {
            assert_eq!(atoi(s.as_bytes()), v, "{s:?}");
        }
    }

    #[test]
    fn protocols_by_name_or_alias() {
        let text = b"# comment\nip 0 IP\ntcp\t6\tTCP # tcp\nipv6-icmp 58 IPv6-ICMP\n";
        assert_eq!(l4proto(text, b"tcp"), Some(6));
        assert_eq!(l4proto(text, b"TCP"), Some(6));
        assert_eq!(l4proto(text, b"Tcp"), None);
        assert_eq!(l4proto(text, b"ip"), Some(0));
        assert_eq!(l4proto(text, b"icmpv6"), Some(58));
        assert_eq!(l4proto(text, b"generic"), Some(255));
        assert_eq!(l4proto(text, b"comment"), None);
        assert_eq!(l4proto(FALLBACK_PROTOCOLS, b"UDPLite"), Some(136));
    }

    fn args(s: &str) -> Vec<&[u8]> {
        s.split_whitespace().map(str::as_bytes).collect()
    }

    #[test]
    fn arguments_as_nfct_checks_them() {
        let p = FALLBACK_PROTOCOLS;
        let r = parse_args(p, Cmd::Add, &args("add x inet6 tcp Close 5 established 1 close 6")).unwrap();
        assert_eq!((r.kind, r.flags), (MsgType::New, flags::CREATE | flags::ACK));
        assert_eq!((r.name.as_deref(), r.l3proto, r.l4proto), (Some(&b"x"[..]), Some(10), Some(6)));
        assert_eq!(r.data, [(3, 1), (8, 6)]);
        let err = |cmd, a: &str| String::from_utf8(parse_args(p, cmd, &args(a)).unwrap_err()).unwrap();
        assert_eq!(
            err(Cmd::Add, "add x inet tcp nope 1"),
            "nfct v1.4.7: Wrong state name: `nope' for protocol `tcp'\n"
        );
        assert_eq!(err(Cmd::Add, "add x inet tcp close"), "nfct v1.4.7: missing value for this timeout\n");
        assert_eq!(err(Cmd::Add, "add x ip4 tcp close 1"), "nfct v1.4.7: unknown layer 3 protocol\n");
        assert_eq!(err(Cmd::Get, "get"), "nfct v1.4.7: missing timeout policy name\n");
        assert_eq!(err(Cmd::List, "list x"), "nfct v1.4.7: too many arguments\n");
        let dg = parse_args(p, Cmd::DefaultGet, &args("default-get inet sctp ignored")).unwrap();
        assert_eq!((dg.name, dg.l3proto, dg.l4proto, dg.data.len()), (None, Some(2), Some(132), 0));
        let long = parse_args(p, Cmd::Delete, &args(&format!("delete {}", "a".repeat(40)))).unwrap();
        assert_eq!(long.name.unwrap().len(), 31);
    }

    #[test]
    fn nfct_text_and_json() {
        let m = object_message(&Object { name: b"t", l3proto: 2, l4proto: 132, uses: 1, values: &[1; 9] }, 1, 5);
        let r = cttimeout::parse_reply(&m[16..]).unwrap();
        let mut text = Vec::new();
        nfct_format(&r, &mut text);
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with(".t = {\n\t.l3proto = 2,\n\t.l4proto = 132,\n\t.policy = {\n\t\t.CLOSED = 1,\n"));
        assert!(text.ends_with("\t\t.SHUTDOWN_ACK_SENT = 1,\n\t},\n};\n"), "{text}");
        assert!(json_object(&r).ends_with("\"HEARTBEAT_SENT\": 1, \"HEARTBEAT_ACKED\": 1}}"));
        let d = defaults_message(10, 17, &[30, 120], 1, 5);
        let r = cttimeout::parse_reply(&d[16..]).unwrap();
        let mut text = Vec::new();
        nfct_format(&r, &mut text);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "\t.l3proto = 10,\n\t.l4proto = 17,\n\t.policy = {\n\t\t.UNREPLIED = 30,\n\t\t.REPLIED = 120,\n\t},\n};\n"
        );
        assert_eq!(
            json_object(&r),
            r#"{"name": null, "l3proto": 10, "l4proto": 17, "use": null, "policy": {"UNREPLIED": 30, "REPLIED": 120}}"#
        );
        let mut s = String::new();
        json_string(b"a\"b\\c\n\x01\xff", &mut s);
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001\u{fffd}\"");
    }

    /// Answers with canned datagrams and records what was sent.
    struct Fake {
        sent: Vec<Vec<u8>>,
        replies: Vec<Vec<u8>>,
    }

    impl Link for Fake {
        fn send(&mut self, d: &[u8]) -> Result<(), String> {
            self.sent.push(d.to_vec());
            Ok(())
        }
        fn recv(&mut self) -> Result<Vec<u8>, String> {
            if self.replies.is_empty() {
                return Err("no more replies".into());
            }
            Ok(self.replies.remove(0))
        }
        fn portid(&self) -> u32 {
            5
        }
    }

    fn run_fake(a: &str, json: bool, replies: Vec<Vec<u8>>) -> Output {
        let argv: Vec<OsString> = a.split_whitespace().map(OsString::from).collect();
        let mut replies = Some(replies);
        let mut connect = || -> Result<Box<dyn Link>, String> {
            Ok(Box::new(Fake { sent: Vec::new(), replies: replies.take().unwrap_or_default() }))
        };
        run(&argv, json, FALLBACK_PROTOCOLS, &mut connect)
    }

    #[test]
    fn replies_become_output() {
        let obj = object_message(&Object { name: b"t", l3proto: 2, l4proto: 17, uses: 1, values: &[3, 4] }, SEQ, 5);
        let mut dump = obj.clone();
        dump.extend_from_slice(&netlink::done_message(SEQ, 5));
        let out = run_fake("list", false, vec![dump.clone()]);
        assert_eq!(out.code, 0);
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            ".t = {\n\t.l3proto = 2,\n\t.l4proto = 17,\n\t.policy = {\n\t\t.UNREPLIED = 3,\n\t\t.REPLIED = 4,\n\t},\n};\n"
        );
        let out = run_fake("list", true, vec![dump]);
        assert!(String::from_utf8(out.stdout).unwrap().starts_with("[\n  {\"name\": \"t\", "));
        let req = netlink::Header { len: 20, kind: 0x800, flags: 5, seq: SEQ, pid: 0 };
        let busy = netlink::error_message(&req, &[0; 4], 5, Some(proto::Errno::EBUSY));
        let out = run_fake("add t inet udp replied 1", false, vec![busy]);
        assert_eq!(
            (out.code, String::from_utf8(out.stderr).unwrap()),
            (1, "nfct v1.4.7: netlink error: Device or resource busy\n".to_owned())
        );
        let out = run_fake("", false, vec![]);
        assert_eq!(String::from_utf8(out.stderr).unwrap(), "Usage: nfct command subsystem [parameters]...\n");
        let out = run_fake("nope", false, vec![]);
        assert!(String::from_utf8(out.stderr).unwrap().starts_with("nfct v1.4.7: Unknown command: timeout\n"));
        assert_eq!(run_fake("flush", true, vec![]).code, 2);
    }
}

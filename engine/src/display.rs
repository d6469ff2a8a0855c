//! Connections printed exactly as `conntrack -L` (conntrack-tools 1.4.7) prints them, e.g.
//! `tcp      6 431999 ESTABLISHED src=… dst=… sport=… dport=… src=… … [ASSURED] mark=0 use=1`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use proto::packet::{ipproto, Family};

use crate::clock::Timestamp;
use crate::conntrack::{Conn, Proto, Status, Tuple};

fn addr(out: &mut String, f: Family, a: &[u8; 16]) {
    match f {
        Family::V4 => write!(out, "{}", Ipv4Addr::new(a[0], a[1], a[2], a[3])),
        Family::V6 => write!(out, "{}", Ipv6Addr::from(*a)),
    }
    .expect("writing to a String");
}

fn tuple(out: &mut String, t: &Tuple) {
    out.push_str("src=");
    addr(out, t.family, &t.src);
    out.push_str(" dst=");
    addr(out, t.family, &t.dst);
    out.push(' ');
    let _ = match t.proto {
        ipproto::TCP | ipproto::UDP | ipproto::UDPLITE | ipproto::SCTP => {
            write!(out, "sport={} dport={} ", t.sport, t.dport)
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            write!(out, "type={} code={} id={} ", t.icmp_type(), t.icmp_code(), t.sport)
        }
        ipproto::GRE => write!(out, "srckey={:#x} dstkey={:#x} ", t.sport, t.dport),
        _ => Ok(()),
    };
}

/// One `conntrack -L` line for `c` as seen at `now` (no trailing newline).
pub fn conntrack_line(c: &Conn, now: Timestamp) -> String {
    let mut out = String::with_capacity(200);
    let t = &c.orig;
    let _ = write!(out, "{:<8} {} {} ", Proto::name_of(t.proto), t.proto, c.expires.secs_left(now));
    if let Some(s) = c.proto.name() {
        out.push_str(s);
        out.push(' ');
    }
    tuple(&mut out, &c.orig);
    if !c.status.contains(Status::SEEN_REPLY) {
        out.push_str("[UNREPLIED] ");
    }
    tuple(&mut out, &c.reply());
    if c.status.contains(Status::ASSURED) {
        out.push_str("[ASSURED] ");
    }
    let _ = write!(out, "mark={} use=1", c.mark);
    out
}

//! ICMP and ICMPv6 (`nf_conntrack_proto_icmp.c`, `nf_conntrack_proto_icmpv6.c`).
//!
//! Queries (echo, timestamp, information, address mask; ICMPv6 echo and node information) are
//! connections keyed by their id, one timeout, refreshed by every packet. Errors are not
//! connections: the table looks up the connection of the packet they quote and classifies them
//! RELATED (see `Conntrack::track`); [`kind`] tells which is which. ICMPv6 neighbour discovery and
//! multicast listener messages are untracked.

use proto::checksum;
use proto::packet::{ipproto, Family, Packet, L4};

use super::{Config, Ctx, Invalid, Tracker, Verdict};

/// The ICMP tracker (both families; the IP protocol number tells them apart).
pub struct Icmp;

/// Highest ICMP type the kernel accepts (`NR_ICMP_TYPES`).
const NR_ICMP_TYPES: u8 = 18;

/// How the table must handle an ICMP packet that passed [`Tracker::error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A query or reply: tracked as a connection of its own.
    Query,
    /// An error quoting the packet at this offset: RELATED to that packet's connection.
    Error(usize),
    /// ICMPv6 neighbour discovery / MLD: not tracked.
    Untracked,
}

/// Classifies an ICMP or ICMPv6 packet.
pub fn kind(pkt: &Packet) -> Kind {
    match pkt.l4 {
        L4::Icmp(i) if matches!(i.ty, 3 | 4 | 5 | 11 | 12) => i.quoted.map_or(Kind::Query, Kind::Error),
        L4::Icmpv6(i) if matches!(i.ty, 130..=136 | 143) => Kind::Untracked,
        L4::Icmpv6(i) if i.ty < 128 => i.quoted.map_or(Kind::Query, Kind::Error),
        _ => Kind::Query,
    }
}

/// The types that may start a connection.
fn valid_new(v6: bool, ty: u8) -> bool {
    if v6 {
        matches!(ty, 128 | 139)
    } else {
        matches!(ty, 8 | 13 | 15 | 17)
    }
}

impl Tracker for Icmp {
    type State = ();
    const TIMEOUT_NAMES: &'static [&'static str] = proto::cttimeout::names::ICMP;
    const DEFAULT_TIMEOUTS: &'static [u32] = &[30];

    fn error(pkt: &Packet, buf: &[u8], cfg: &Config) -> Result<(), Invalid> {
        let (ty, v6) = match pkt.l4 {
            L4::Icmp(i) => (i.ty, false),
            L4::Icmpv6(i) => (i.ty, true),
            _ => return Err(Invalid::Truncated),
        };
        // ICMP over the wrong IP version is not tracked as ICMP by the kernel.
        if v6 != (pkt.family == Family::V6) {
            return Err(Invalid::IcmpType);
        }
        let seg = pkt.l4_bytes(buf);
        if cfg.checksum && !pkt.l4_checksum_verified {
            let sum = if v6 {
                checksum::l4(pkt.family, &pkt.src, &pkt.dst, ipproto::ICMPV6, seg, seg.len())
            } else {
                checksum::internet(seg)
            };
            if sum != 0 {
                return Err(Invalid::Checksum);
            }
        }
        if !v6 && ty > NR_ICMP_TYPES {
            return Err(Invalid::IcmpType);
        }
        Ok(())
    }

    fn new(pkt: &Packet, _: &[u8], _: &Config) -> Result<(), Invalid> {
        match pkt.l4 {
            L4::Icmp(i) if valid_new(false, i.ty) => Ok(()),
            L4::Icmpv6(i) if valid_new(true, i.ty) => Ok(()),
            _ => Err(Invalid::IcmpType),
        }
    }

    fn packet(_: &mut (), ctx: &mut Ctx<'_>, _: &Packet, _: &[u8]) -> Verdict {
        Verdict::Refresh(ctx.timeouts.get(0))
    }

    fn state_name(_: &()) -> Option<&'static str> {
        None
    }
}

//! ctnetlink (`NFNL_SUBSYS_CTNETLINK` = 1, and `NFNL_SUBSYS_CTNETLINK_EXP` = 2 for expectations):
//! message types, attribute ids, the kernel's attribute validation with its errno per violation,
//! the tuple and filter parsers of `nf_conntrack_netlink.c`, and the layout of its replies.
//!
//! Requests are validated as Linux 6.18 validates them:
//! * the top level as `nla_parse_deprecated` does with `ct_nla_policy` / `exp_nla_policy` (the
//!   liberal parsing nfnetlink uses): unknown and zero types are skipped, a later duplicate wins,
//!   an integer attribute shorter than its type is `ERANGE` (a longer one is read from its start),
//!   a nested one of 1 to 3 bytes is `ERANGE`, `CTA_TIMESTAMP_EVENT` is refused (`EINVAL`);
//! * nests as `ctnetlink_parse_tuple_filter` and its helpers parse them ([`parse_tuple`]): the IP
//!   and protocol parts are required as far as the filter flags ask for them, the L4 part is read
//!   with the policy of the tracker of its protocol number (ports for TCP, UDP, UDP-Lite, SCTP
//!   and GRE; id, type and code for ICMP and ICMPv6, whose type must have an answer type);
//! * `CTA_FILTER` strictly (`nla_parse_nested`): `NLA_F_NESTED` required, unknown types, wrong
//!   lengths and trailing bytes are `EINVAL`.
//!
//! Replies are built by [`object_message`] in `ctnetlink_fill_info`'s order: `CTA_TUPLE_ORIG`,
//! `CTA_TUPLE_REPLY`, `CTA_STATUS`, `CTA_MARK`, `CTA_ID`, `CTA_USE`, `CTA_TIMEOUT`,
//! `CTA_PROTOINFO`, then the extensions (`CTA_SYNPROXY` for a connection created over ctnetlink).
//! [`parse_object`] reads such a message back, for clients. Connection events (the multicast
//! groups `NFNLGRP_CONNTRACK_NEW`, `UPDATE`, `DESTROY`) are built by [`event_message`] in
//! `ctnetlink_conntrack_event`'s order, which differs from a reply's; [`parse_object`] reads them
//! too, and [`EventKind::of`] tells their kind from the header.

use crate::errno::Errno;
use crate::netlink::{flags, Attrs, MessageBuilder, Nfgenmsg, NLA_F_NESTED, NLA_HDRLEN};

/// `NFNL_SUBSYS_CTNETLINK`.
pub const SUBSYS: u8 = 1;
/// `NFNL_SUBSYS_CTNETLINK_EXP`.
pub const SUBSYS_EXP: u8 = 2;

/// `AF_INET` / `NFPROTO_IPV4`.
pub const AF_INET: u8 = 2;
/// `AF_INET6` / `NFPROTO_IPV6`.
pub const AF_INET6: u8 = 10;

/// Conntrack message types (`enum cntl_msg_types`).
pub mod msg {
    pub const NEW: u8 = 0;
    pub const GET: u8 = 1;
    pub const DELETE: u8 = 2;
    pub const GET_CTRZERO: u8 = 3;
    pub const GET_STATS_CPU: u8 = 4;
    pub const GET_STATS: u8 = 5;
    pub const GET_DYING: u8 = 6;
    pub const GET_UNCONFIRMED: u8 = 7;
    /// `IPCTNL_MSG_MAX`: types from here on are `EINVAL`.
    pub const COUNT: u8 = 8;
}

/// Expectation message types (`enum ctnl_exp_msg_types`).
pub mod exp_msg {
    pub const NEW: u8 = 0;
    pub const GET: u8 = 1;
    pub const DELETE: u8 = 2;
    pub const GET_STATS_CPU: u8 = 3;
    /// `IPCTNL_MSG_EXP_MAX`.
    pub const COUNT: u8 = 4;
}

/// The full `nlmsg_type` of a conntrack message of type `t`.
pub fn nlmsg_type(t: u8) -> u16 {
    (u16::from(SUBSYS) << 8) | u16::from(t)
}

/// The full `nlmsg_type` of an expectation message of type `t`.
pub fn exp_nlmsg_type(t: u8) -> u16 {
    (u16::from(SUBSYS_EXP) << 8) | u16::from(t)
}

/// Top-level attributes (`enum ctattr_type`).
pub mod attr {
    pub const TUPLE_ORIG: u16 = 1;
    pub const TUPLE_REPLY: u16 = 2;
    pub const STATUS: u16 = 3;
    pub const PROTOINFO: u16 = 4;
    pub const HELP: u16 = 5;
    pub const NAT_SRC: u16 = 6;
    pub const TIMEOUT: u16 = 7;
    pub const MARK: u16 = 8;
    pub const COUNTERS_ORIG: u16 = 9;
    pub const COUNTERS_REPLY: u16 = 10;
    pub const USE: u16 = 11;
    pub const ID: u16 = 12;
    pub const NAT_DST: u16 = 13;
    pub const TUPLE_MASTER: u16 = 14;
    pub const SEQ_ADJ_ORIG: u16 = 15;
    pub const SEQ_ADJ_REPLY: u16 = 16;
    pub const SECMARK: u16 = 17;
    pub const ZONE: u16 = 18;
    pub const SECCTX: u16 = 19;
    pub const TIMESTAMP: u16 = 20;
    pub const MARK_MASK: u16 = 21;
    pub const LABELS: u16 = 22;
    pub const LABELS_MASK: u16 = 23;
    pub const SYNPROXY: u16 = 24;
    pub const FILTER: u16 = 25;
    pub const STATUS_MASK: u16 = 26;
    pub const TIMESTAMP_EVENT: u16 = 27;
    /// `CTA_MAX` in Linux 6.18.
    pub const MAX: u16 = TIMESTAMP_EVENT;
}

/// Inside `CTA_TUPLE_*` (`enum ctattr_tuple`).
pub mod tuple_attr {
    pub const IP: u16 = 1;
    pub const PROTO: u16 = 2;
    pub const ZONE: u16 = 3;
    pub const MAX: u16 = ZONE;
}

/// Inside `CTA_TUPLE_IP` (`enum ctattr_ip`).
pub mod ip_attr {
    pub const V4_SRC: u16 = 1;
    pub const V4_DST: u16 = 2;
    pub const V6_SRC: u16 = 3;
    pub const V6_DST: u16 = 4;
    pub const MAX: u16 = V6_DST;
}

/// Inside `CTA_TUPLE_PROTO` (`enum ctattr_l4proto`).
pub mod proto_attr {
    pub const NUM: u16 = 1;
    pub const SRC_PORT: u16 = 2;
    pub const DST_PORT: u16 = 3;
    pub const ICMP_ID: u16 = 4;
    pub const ICMP_TYPE: u16 = 5;
    pub const ICMP_CODE: u16 = 6;
    pub const ICMPV6_ID: u16 = 7;
    pub const ICMPV6_TYPE: u16 = 8;
    pub const ICMPV6_CODE: u16 = 9;
    pub const MAX: u16 = ICMPV6_CODE;
}

/// Inside `CTA_PROTOINFO` (`enum ctattr_protoinfo`).
pub mod protoinfo_attr {
    pub const TCP: u16 = 1;
    pub const DCCP: u16 = 2;
    pub const SCTP: u16 = 3;
    pub const MAX: u16 = SCTP;
}

/// Inside `CTA_PROTOINFO_TCP`.
pub mod tcp_attr {
    pub const STATE: u16 = 1;
    pub const WSCALE_ORIGINAL: u16 = 2;
    pub const WSCALE_REPLY: u16 = 3;
    pub const FLAGS_ORIGINAL: u16 = 4;
    pub const FLAGS_REPLY: u16 = 5;
    pub const MAX: u16 = FLAGS_REPLY;
}

/// Inside `CTA_PROTOINFO_SCTP`.
pub mod sctp_attr {
    pub const STATE: u16 = 1;
    pub const VTAG_ORIGINAL: u16 = 2;
    pub const VTAG_REPLY: u16 = 3;
    pub const MAX: u16 = VTAG_REPLY;
}

/// Inside `CTA_HELP`.
pub mod help_attr {
    pub const NAME: u16 = 1;
    pub const INFO: u16 = 2;
    pub const MAX: u16 = INFO;
}

/// Inside `CTA_SYNPROXY`.
pub mod synproxy_attr {
    pub const ISN: u16 = 1;
    pub const ITS: u16 = 2;
    pub const TSOFF: u16 = 3;
    pub const MAX: u16 = TSOFF;
}

/// Inside `CTA_SEQ_ADJ_ORIG` / `CTA_SEQ_ADJ_REPLY`.
pub mod seqadj_attr {
    pub const CORRECTION_POS: u16 = 1;
    pub const OFFSET_BEFORE: u16 = 2;
    pub const OFFSET_AFTER: u16 = 3;
    pub const MAX: u16 = OFFSET_AFTER;
}

/// Inside `CTA_FILTER`.
pub mod filter_attr {
    pub const ORIG_FLAGS: u16 = 1;
    pub const REPLY_FLAGS: u16 = 2;
    pub const MAX: u16 = REPLY_FLAGS;
}

/// `CTA_FILTER_F_*`: which parts of a filter tuple are compared.
pub mod filter_flag {
    pub const IP_SRC: u32 = 1 << 0;
    pub const IP_DST: u32 = 1 << 1;
    pub const TUPLE_ZONE: u32 = 1 << 2;
    pub const PROTO_NUM: u32 = 1 << 3;
    pub const PROTO_SRC_PORT: u32 = 1 << 4;
    pub const PROTO_DST_PORT: u32 = 1 << 5;
    pub const PROTO_ICMP_TYPE: u32 = 1 << 6;
    pub const PROTO_ICMP_CODE: u32 = 1 << 7;
    pub const PROTO_ICMP_ID: u32 = 1 << 8;
    pub const PROTO_ICMPV6_TYPE: u32 = 1 << 9;
    pub const PROTO_ICMPV6_CODE: u32 = 1 << 10;
    pub const PROTO_ICMPV6_ID: u32 = 1 << 11;
    /// `CTA_FILTER_F_ALL`: every part (what a plain tuple parse asks for).
    pub const ALL: u32 = (1 << 12) - 1;
    /// `CTA_FILTER_F_ALL_CTA_PROTO`: the L4 parts, which need `PROTO_NUM`.
    pub const ALL_PROTO: u32 = PROTO_SRC_PORT
        | PROTO_DST_PORT
        | PROTO_ICMP_TYPE
        | PROTO_ICMP_CODE
        | PROTO_ICMP_ID
        | PROTO_ICMPV6_TYPE
        | PROTO_ICMPV6_CODE
        | PROTO_ICMPV6_ID;
}

/// Per-CPU statistics (`enum ctattr_stats_cpu`).
pub mod stats_attr {
    pub const FOUND: u16 = 2;
    pub const INVALID: u16 = 4;
    pub const INSERT: u16 = 8;
    pub const INSERT_FAILED: u16 = 9;
    pub const DROP: u16 = 10;
    pub const EARLY_DROP: u16 = 11;
    pub const ERROR: u16 = 12;
    pub const SEARCH_RESTART: u16 = 13;
    pub const CLASH_RESOLVE: u16 = 14;
    pub const CHAIN_TOOLONG: u16 = 15;
    /// The attributes of a `GET_STATS_CPU` reply, in order, with conntrack's names for them.
    pub const ALL: [(u16, &str); 10] = [
        (FOUND, "found"),
        (INVALID, "invalid"),
        (INSERT, "insert"),
        (INSERT_FAILED, "insert_failed"),
        (DROP, "drop"),
        (EARLY_DROP, "early_drop"),
        (ERROR, "error"),
        (SEARCH_RESTART, "search_restart"),
        (CLASH_RESOLVE, "clash_resolve"),
        (CHAIN_TOOLONG, "chaintoolong"),
    ];
}

/// Global statistics (`enum ctattr_stats_global`).
pub mod stats_global_attr {
    pub const ENTRIES: u16 = 1;
    pub const MAX_ENTRIES: u16 = 2;
}

/// Expectation statistics (`enum ctattr_expect_stats`).
pub mod exp_stats_attr {
    pub const NEW: u16 = 1;
    pub const CREATE: u16 = 2;
    pub const DELETE: u16 = 3;
}

/// Expectation attributes (`enum ctattr_expect`).
pub mod expect_attr {
    pub const MASTER: u16 = 1;
    pub const TUPLE: u16 = 2;
    pub const MASK: u16 = 3;
    pub const TIMEOUT: u16 = 4;
    pub const ID: u16 = 5;
    pub const HELP_NAME: u16 = 6;
    pub const ZONE: u16 = 7;
    pub const FLAGS: u16 = 8;
    pub const CLASS: u16 = 9;
    pub const NAT: u16 = 10;
    pub const FN: u16 = 11;
    /// `CTA_EXPECT_MAX`.
    pub const MAX: u16 = FN;
}

/// Status bits (`enum ip_conntrack_status`).
pub mod status {
    pub const EXPECTED: u32 = 1 << 0;
    pub const SEEN_REPLY: u32 = 1 << 1;
    pub const ASSURED: u32 = 1 << 2;
    pub const CONFIRMED: u32 = 1 << 3;
    pub const SRC_NAT: u32 = 1 << 4;
    pub const DST_NAT: u32 = 1 << 5;
    pub const SEQ_ADJUST: u32 = 1 << 6;
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    pub const DST_NAT_DONE: u32 = 1 << 8;
    pub const DYING: u32 = 1 << 9;
    pub const FIXED_TIMEOUT: u32 = 1 << 10;
    pub const TEMPLATE: u32 = 1 << 11;
    pub const UNTRACKED: u32 = 1 << 12;
    pub const HELPER: u32 = 1 << 13;
    pub const OFFLOAD: u32 = 1 << 14;
    pub const HW_OFFLOAD: u32 = 1 << 15;
    /// `__IPS_MAX_BIT`: bits from here on are never changed by ctnetlink.
    pub const MAX_BIT: u32 = 16;
    /// `IPS_UNCHANGEABLE_MASK`: what a request can neither set nor clear.
    pub const UNCHANGEABLE: u32 = SRC_NAT_DONE
        | DST_NAT_DONE
        | SRC_NAT
        | DST_NAT
        | EXPECTED
        | CONFIRMED
        | DYING
        | SEQ_ADJUST
        | TEMPLATE
        | UNTRACKED
        | OFFLOAD
        | HW_OFFLOAD;
}

/// `NF_CT_HELPER_NAME_LEN`: a helper name's longest length, NUL included.
pub const HELPER_NAME_LEN: usize = 16;

// ---- attribute validation ----

/// An attribute's policy (`struct nla_policy`), as far as ctnetlink uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// No policy: anything goes.
    Any,
    U8,
    U16,
    U32,
    Nested,
    /// `NLA_UNSPEC` with `.len`: at least this many bytes.
    MinLen(usize),
    /// `NLA_BINARY` with `.len`: at most this many bytes.
    Binary(usize),
    /// `NLA_NUL_STRING` of at most this many bytes before the NUL.
    NulString(usize),
    /// `NLA_REJECT`.
    Reject,
    /// `NLA_POLICY_MAX(NLA_U8, max)`: a larger value is `ERANGE`.
    U8Max(u8),
    /// `NLA_POLICY_MASK(NLA_U32, mask)` (native-endian): a bit outside the mask is `EINVAL`.
    U32Mask(u32),
}

impl Policy {
    /// The exact length of a fixed-size type (`nla_attr_len`), which strict parsing requires.
    fn exact_len(self) -> Option<usize> {
        match self {
            Policy::U8 | Policy::U8Max(_) => Some(1),
            Policy::U16 => Some(2),
            Policy::U32 | Policy::U32Mask(_) => Some(4),
            _ => None,
        }
    }

    /// `validate_nla`'s checks for a payload `p` (liberal parsing).
    fn check(self, p: &[u8]) -> Result<(), Errno> {
        let ok = match self {
            Policy::Any => true,
            Policy::U8 => !p.is_empty(),
            Policy::U16 => p.len() >= 2,
            Policy::U32 => p.len() >= 4,
            Policy::Nested => p.is_empty() || p.len() >= NLA_HDRLEN,
            Policy::MinLen(n) => p.len() >= n,
            Policy::Binary(n) => p.len() <= n,
            Policy::NulString(max) => {
                let window = &p[..p.len().min(max + 1)];
                if window.is_empty() || !window.contains(&0) {
                    return Err(Errno::EINVAL);
                }
                let strlen = if p.last() == Some(&0) { p.len() - 1 } else { p.len() };
                strlen <= max
            }
            Policy::Reject => return Err(Errno::EINVAL),
            Policy::U8Max(max) => {
                return if p.first().is_some_and(|&v| v <= max) { Ok(()) } else { Err(Errno::ERANGE) }
            }
            Policy::U32Mask(mask) => {
                let v = p.get(..4).ok_or(Errno::ERANGE)?;
                let v = u32::from_ne_bytes(v.try_into().map_err(|_| Errno::ERANGE)?);
                return if v & !mask == 0 { Ok(()) } else { Err(Errno::EINVAL) };
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Errno::ERANGE)
        }
    }
}

/// Parsed attributes, indexed by type (index 0 unused): the payload of the last attribute of each
/// known type.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a, const N: usize> {
    slots: [Option<&'a [u8]>; N],
    raw_types: [u16; N],
}

impl<'a, const N: usize> Table<'a, N> {
    /// The payload of attribute `t`, if present.
    pub fn get(&self, t: u16) -> Option<&'a [u8]> {
        self.slots.get(usize::from(t)).copied().flatten()
    }

    /// Whether attribute `t` is present.
    pub fn has(&self, t: u16) -> bool {
        self.get(t).is_some()
    }

    /// Attribute `t` as a `u8` (validated to be long enough).
    pub fn u8(&self, t: u16) -> Option<u8> {
        self.get(t).and_then(|p| p.first().copied())
    }

    /// Attribute `t` as a big-endian `u16`.
    pub fn be16(&self, t: u16) -> Option<u16> {
        self.get(t).and_then(|p| Some(u16::from_be_bytes([*p.first()?, *p.get(1)?])))
    }

    /// Attribute `t` as a big-endian `u32`.
    pub fn be32(&self, t: u16) -> Option<u32> {
        self.get(t).and_then(be32)
    }

    /// Attribute `t` as a native-endian `u32` (`nla_get_u32`).
    pub fn ne32(&self, t: u16) -> Option<u32> {
        self.get(t).and_then(|p| Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?)))
    }

    /// Whether attribute `t` carried `NLA_F_NESTED`.
    fn nested_flag(&self, t: u16) -> bool {
        self.raw_types.get(usize::from(t)).is_some_and(|r| r & NLA_F_NESTED != 0)
    }
}

fn be32(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

/// `nla_parse_deprecated` (liberal) or `nla_parse` (strict) of `buf` with `policy` (index = type).
fn parse<'a, const N: usize>(buf: &'a [u8], policy: &[Policy; N], strict: bool) -> Result<Table<'a, N>, Errno> {
    let mut t = Table { slots: [None; N], raw_types: [0; N] };
    let mut walked = 0;
    for a in Attrs::new(buf) {
        let Ok(a) = a else {
            // The walk stopped on bytes that are no attribute: a warning in liberal parsing.
            if strict {
                return Err(Errno::EINVAL);
            }
            break;
        };
        walked = a.offset + crate::netlink::align(NLA_HDRLEN + a.payload.len());
        let i = usize::from(a.kind);
        if a.kind == 0 || i >= N {
            if strict {
                return Err(Errno::EINVAL);
            }
            continue;
        }
        let pol = policy[i];
        if strict {
            if pol.exact_len().is_some_and(|n| n != a.payload.len()) {
                return Err(Errno::EINVAL);
            }
            let nested = a.raw_type & NLA_F_NESTED != 0;
            if nested != (pol == Policy::Nested) && pol != Policy::Any {
                return Err(Errno::EINVAL);
            }
        }
        pol.check(a.payload)?;
        t.slots[i] = Some(a.payload);
        t.raw_types[i] = a.raw_type;
    }
    if strict && walked < buf.len() {
        return Err(Errno::EINVAL);
    }
    Ok(t)
}

/// `ct_nla_policy`, indexed by attribute type.
const CT_POLICY: [Policy; attr::MAX as usize + 1] = {
    let mut p = [Policy::Any; attr::MAX as usize + 1];
    p[attr::TUPLE_ORIG as usize] = Policy::Nested;
    p[attr::TUPLE_REPLY as usize] = Policy::Nested;
    p[attr::STATUS as usize] = Policy::U32;
    p[attr::PROTOINFO as usize] = Policy::Nested;
    p[attr::HELP as usize] = Policy::Nested;
    p[attr::NAT_SRC as usize] = Policy::Nested;
    p[attr::TIMEOUT as usize] = Policy::U32;
    p[attr::MARK as usize] = Policy::U32;
    p[attr::ID as usize] = Policy::U32;
    p[attr::NAT_DST as usize] = Policy::Nested;
    p[attr::TUPLE_MASTER as usize] = Policy::Nested;
    p[attr::SEQ_ADJ_ORIG as usize] = Policy::Nested;
    p[attr::SEQ_ADJ_REPLY as usize] = Policy::Nested;
    p[attr::ZONE as usize] = Policy::U16;
    p[attr::MARK_MASK as usize] = Policy::U32;
    // NF_CT_LABELS_MAX_SIZE: 128 bits.
    p[attr::LABELS as usize] = Policy::Binary(16);
    p[attr::LABELS_MASK as usize] = Policy::Binary(16);
    p[attr::FILTER as usize] = Policy::Nested;
    p[attr::STATUS_MASK as usize] = Policy::U32;
    p[attr::TIMESTAMP_EVENT as usize] = Policy::Reject;
    p
};

/// `exp_nla_policy`.
const EXP_POLICY: [Policy; expect_attr::MAX as usize + 1] = {
    let mut p = [Policy::Any; expect_attr::MAX as usize + 1];
    p[expect_attr::MASTER as usize] = Policy::Nested;
    p[expect_attr::TUPLE as usize] = Policy::Nested;
    p[expect_attr::MASK as usize] = Policy::Nested;
    p[expect_attr::TIMEOUT as usize] = Policy::U32;
    p[expect_attr::ID as usize] = Policy::U32;
    p[expect_attr::HELP_NAME as usize] = Policy::NulString(HELPER_NAME_LEN - 1);
    p[expect_attr::ZONE as usize] = Policy::U16;
    p[expect_attr::FLAGS as usize] = Policy::U32;
    p[expect_attr::CLASS as usize] = Policy::U32;
    p[expect_attr::NAT as usize] = Policy::Nested;
    p[expect_attr::FN as usize] = Policy::NulString(usize::MAX - 1);
    p
};

const TUPLE_POLICY: [Policy; tuple_attr::MAX as usize + 1] = [Policy::Any, Policy::Nested, Policy::Nested, Policy::U16];
const IP_POLICY: [Policy; ip_attr::MAX as usize + 1] =
    [Policy::Any, Policy::U32, Policy::U32, Policy::MinLen(16), Policy::MinLen(16)];
/// `proto_nla_policy`: only the number.
const PROTO_POLICY: [Policy; proto_attr::MAX as usize + 1] = {
    let mut p = [Policy::Any; proto_attr::MAX as usize + 1];
    p[proto_attr::NUM as usize] = Policy::U8;
    p
};
/// `nf_ct_port_nla_policy`.
const PORT_POLICY: [Policy; proto_attr::MAX as usize + 1] = {
    let mut p = [Policy::Any; proto_attr::MAX as usize + 1];
    p[proto_attr::SRC_PORT as usize] = Policy::U16;
    p[proto_attr::DST_PORT as usize] = Policy::U16;
    p
};
/// `icmp_nla_policy`.
const ICMP_POLICY: [Policy; proto_attr::MAX as usize + 1] = {
    let mut p = [Policy::Any; proto_attr::MAX as usize + 1];
    p[proto_attr::ICMP_TYPE as usize] = Policy::U8;
    p[proto_attr::ICMP_CODE as usize] = Policy::U8;
    p[proto_attr::ICMP_ID as usize] = Policy::U16;
    p
};
/// `icmpv6_nla_policy`.
const ICMPV6_POLICY: [Policy; proto_attr::MAX as usize + 1] = {
    let mut p = [Policy::Any; proto_attr::MAX as usize + 1];
    p[proto_attr::ICMPV6_TYPE as usize] = Policy::U8;
    p[proto_attr::ICMPV6_CODE as usize] = Policy::U8;
    p[proto_attr::ICMPV6_ID as usize] = Policy::U16;
    p
};
const PROTOINFO_POLICY: [Policy; protoinfo_attr::MAX as usize + 1] =
    [Policy::Any, Policy::Nested, Policy::Any, Policy::Nested];
/// `tcp_nla_policy`: the state at most `TCP_CONNTRACK_SYN_SENT2` (9), window scales at most
/// `TCP_MAX_WSCALE` (14); `struct nf_ct_tcp_flags` is 2 bytes.
const TCP_POLICY: [Policy; tcp_attr::MAX as usize + 1] =
    [Policy::Any, Policy::U8Max(9), Policy::U8Max(14), Policy::U8Max(14), Policy::MinLen(2), Policy::MinLen(2)];
/// `sctp_nla_policy`: the state at most `SCTP_CONNTRACK_HEARTBEAT_SENT` (8).
const SCTP_POLICY: [Policy; sctp_attr::MAX as usize + 1] = [Policy::Any, Policy::U8Max(8), Policy::U32, Policy::U32];
const HELP_POLICY: [Policy; help_attr::MAX as usize + 1] =
    [Policy::Any, Policy::NulString(HELPER_NAME_LEN - 1), Policy::Any];
const SYNPROXY_POLICY: [Policy; synproxy_attr::MAX as usize + 1] = [Policy::Any, Policy::U32, Policy::U32, Policy::U32];
const SEQADJ_POLICY: [Policy; seqadj_attr::MAX as usize + 1] = [Policy::Any, Policy::U32, Policy::U32, Policy::U32];
/// `cta_filter_nla_policy`: flags within `CTA_FILTER_F_ALL`.
const FILTER_POLICY: [Policy; filter_attr::MAX as usize + 1] =
    [Policy::Any, Policy::U32Mask(filter_flag::ALL), Policy::U32Mask(filter_flag::ALL)];

/// The top-level attributes of a conntrack request.
pub type CtAttrs<'a> = Table<'a, { attr::MAX as usize + 1 }>;
/// The top-level attributes of an expectation request.
pub type ExpAttrs<'a> = Table<'a, { expect_attr::MAX as usize + 1 }>;

/// Validates the attributes of a conntrack `NEW`, `GET`, `DELETE` or `GET_CTRZERO` request (the
/// bytes after `nfgenmsg`).
pub fn parse_ct(attrs: &[u8]) -> Result<CtAttrs<'_>, Errno> {
    parse(attrs, &CT_POLICY, false)
}

/// Validates the attributes of an expectation request.
pub fn parse_exp(attrs: &[u8]) -> Result<ExpAttrs<'_>, Errno> {
    parse(attrs, &EXP_POLICY, false)
}

// ---- tuples ----

/// One direction of a connection as ctnetlink carries it (`struct nf_conntrack_tuple` less the
/// direction). `l4` holds the tracker's identifiers: ports for TCP, UDP, UDP-Lite, SCTP and GRE
/// (GRE keys), for ICMP and ICMPv6 `[id, type << 8 | code]`, zeros otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tuple {
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// IPv4 addresses in the first 4 bytes, the rest zero.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub proto: u8,
    pub l4: [u16; 2],
}

/// How the tracker of protocol number `n` reads and writes the L4 part of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Kind {
    /// `CTA_PROTO_SRC_PORT` / `DST_PORT` (TCP, UDP, UDP-Lite, SCTP, GRE).
    Ports,
    /// `CTA_PROTO_ICMP_*`.
    Icmp,
    /// `CTA_PROTO_ICMPV6_*`.
    Icmpv6,
    /// Nothing but the protocol number (the generic tracker).
    None,
}

impl L4Kind {
    /// The kind of the tracker of IP protocol `n` (Linux 6.18 has no DCCP tracker).
    pub fn of(n: u8) -> L4Kind {
        match n {
            6 | 17 | 136 | 132 | 47 => L4Kind::Ports,
            1 => L4Kind::Icmp,
            58 => L4Kind::Icmpv6,
            _ => L4Kind::None,
        }
    }
}

/// Whether ICMP(v6) type `ty` has an answer type (the trackers' `invmap`): only those can be
/// named in a tuple.
pub fn icmp_type_invertible(v6: bool, ty: u8) -> bool {
    if v6 {
        matches!(ty, 128 | 129 | 139 | 140)
    } else {
        matches!(ty, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
    }
}

/// A parsed tuple and the zone its `CTA_TUPLE_ZONE` named (if it did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedTuple {
    pub tuple: Tuple,
    pub zone: Option<u16>,
}

/// `ctnetlink_parse_tuple_filter`: parses the `CTA_TUPLE_*` nest `nest` for family `l3num`,
/// reading the parts `flags` asks for ([`filter_flag::ALL`] for a plain tuple). The errors are
/// the kernel's, in its order.
pub fn parse_tuple(nest: &[u8], l3num: u8, flags: u32) -> Result<ParsedTuple, Errno> {
    let tb = parse(nest, &TUPLE_POLICY, false)?;
    if l3num != AF_INET && l3num != AF_INET6 {
        return Err(Errno::EOPNOTSUPP);
    }
    let mut t = Tuple { family: l3num, ..Tuple::default() };
    if flags & (filter_flag::IP_SRC | filter_flag::IP_DST) != 0 {
        let ip = tb.get(tuple_attr::IP).ok_or(Errno::EINVAL)?;
        let ipt = parse(ip, &IP_POLICY, false)?;
        let (s, d, n) = if l3num == AF_INET {
            (ip_attr::V4_SRC, ip_attr::V4_DST, 4)
        } else {
            (ip_attr::V6_SRC, ip_attr::V6_DST, 16)
        };
        if flags & filter_flag::IP_SRC != 0 {
            t.src[..n].copy_from_slice(&ipt.get(s).ok_or(Errno::EINVAL)?[..n]);
        }
        if flags & filter_flag::IP_DST != 0 {
            t.dst[..n].copy_from_slice(&ipt.get(d).ok_or(Errno::EINVAL)?[..n]);
        }
    }
    if flags & filter_flag::PROTO_NUM != 0 {
        let p = tb.get(tuple_attr::PROTO).ok_or(Errno::EINVAL)?;
        let pt = parse(p, &PROTO_POLICY, false)?;
        t.proto = pt.u8(proto_attr::NUM).ok_or(Errno::EINVAL)?;
        parse_l4(p, &mut t, flags)?;
    } else if flags & filter_flag::ALL_PROTO != 0 {
        return Err(Errno::EINVAL);
    }
    let mut zone = None;
    if flags & filter_flag::TUPLE_ZONE != 0 {
        zone = tb.be16(tuple_attr::ZONE);
    }
    Ok(ParsedTuple { tuple: t, zone })
}

/// The tracker's `nlattr_to_tuple` after its policy check.
fn parse_l4(nest: &[u8], t: &mut Tuple, flags: u32) -> Result<(), Errno> {
    use filter_flag as f;
    match L4Kind::of(t.proto) {
        L4Kind::Ports => {
            let pt = parse(nest, &PORT_POLICY, false)?;
            if flags & f::PROTO_SRC_PORT != 0 {
                t.l4[0] = pt.be16(proto_attr::SRC_PORT).ok_or(Errno::EINVAL)?;
            }
            if flags & f::PROTO_DST_PORT != 0 {
                t.l4[1] = pt.be16(proto_attr::DST_PORT).ok_or(Errno::EINVAL)?;
            }
        }
        kind @ (L4Kind::Icmp | L4Kind::Icmpv6) => {
            let v6 = kind == L4Kind::Icmpv6;
            let (pt, ty_a, code_a, id_a, ty_f, code_f, id_f) = if v6 {
                let pt = parse(nest, &ICMPV6_POLICY, false)?;
                use proto_attr::{ICMPV6_CODE, ICMPV6_ID, ICMPV6_TYPE};
                (
                    pt,
                    ICMPV6_TYPE,
                    ICMPV6_CODE,
                    ICMPV6_ID,
                    f::PROTO_ICMPV6_TYPE,
                    f::PROTO_ICMPV6_CODE,
                    f::PROTO_ICMPV6_ID,
                )
            } else {
                let pt = parse(nest, &ICMP_POLICY, false)?;
                use proto_attr::{ICMP_CODE, ICMP_ID, ICMP_TYPE};
                (pt, ICMP_TYPE, ICMP_CODE, ICMP_ID, f::PROTO_ICMP_TYPE, f::PROTO_ICMP_CODE, f::PROTO_ICMP_ID)
            };
            if flags & ty_f != 0 {
                let ty = pt.u8(ty_a).ok_or(Errno::EINVAL)?;
                if !icmp_type_invertible(v6, ty) {
                    return Err(Errno::EINVAL);
                }
                t.l4[1] = u16::from(ty) << 8 | (t.l4[1] & 0xff);
            }
            if flags & code_f != 0 {
                let code = pt.u8(code_a).ok_or(Errno::EINVAL)?;
                t.l4[1] = (t.l4[1] & 0xff00) | u16::from(code);
            }
            if flags & id_f != 0 {
                t.l4[0] = pt.be16(id_a).ok_or(Errno::EINVAL)?;
            }
        }
        L4Kind::None => {}
    }
    Ok(())
}

/// Appends the nest `kind` holding tuple `t` (`ctnetlink_dump_tuples`): `CTA_TUPLE_IP`, then
/// `CTA_TUPLE_PROTO` with the number and the tracker's L4 attributes.
pub fn put_tuple(b: &mut MessageBuilder, kind: u16, t: &Tuple) {
    let outer = b.nest_start(kind);
    let ip = b.nest_start(tuple_attr::IP);
    if t.family == AF_INET6 {
        b.put(ip_attr::V6_SRC, &t.src).put(ip_attr::V6_DST, &t.dst);
    } else {
        b.put(ip_attr::V4_SRC, &t.src[..4]).put(ip_attr::V4_DST, &t.dst[..4]);
    }
    b.nest_end(ip);
    let p = b.nest_start(tuple_attr::PROTO);
    b.put_u8(proto_attr::NUM, t.proto);
    match L4Kind::of(t.proto) {
        L4Kind::Ports => {
            b.put_be16(proto_attr::SRC_PORT, t.l4[0]).put_be16(proto_attr::DST_PORT, t.l4[1]);
        }
        L4Kind::Icmp => {
            b.put_be16(proto_attr::ICMP_ID, t.l4[0])
                .put_u8(proto_attr::ICMP_TYPE, (t.l4[1] >> 8) as u8)
                .put_u8(proto_attr::ICMP_CODE, t.l4[1] as u8);
        }
        L4Kind::Icmpv6 => {
            b.put_be16(proto_attr::ICMPV6_ID, t.l4[0])
                .put_u8(proto_attr::ICMPV6_TYPE, (t.l4[1] >> 8) as u8)
                .put_u8(proto_attr::ICMPV6_CODE, t.l4[1] as u8);
        }
        L4Kind::None => {}
    }
    b.nest_end(p);
    b.nest_end(outer);
}

// ---- filters ----

/// A tuple filter: the parts named by `flags` must equal `tuple`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TupleFilter {
    pub flags: u32,
    pub tuple: Tuple,
}

/// `struct ctnetlink_filter`: what a filtered dump or flush keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    /// Only this family (0: any).
    pub family: u8,
    /// Only connections of this zone (`CTA_ZONE`).
    pub zone: Option<u16>,
    /// `(mark & mask) == value`.
    pub mark: (u32, u32),
    /// `(status & mask) == value`.
    pub status: (u32, u32),
    pub orig: Option<TupleFilter>,
    pub reply: Option<TupleFilter>,
}

/// `ctnetlink_needs_filter` + `ctnetlink_alloc_filter`: the filter of a dump or flush request
/// for family `family`, `None` when nothing asks for one, or the kernel's errno.
pub fn parse_filter(a: &CtAttrs<'_>, family: u8) -> Result<Option<Filter>, Errno> {
    let needs = family != 0 || a.has(attr::MARK) || a.has(attr::FILTER) || a.has(attr::STATUS) || a.has(attr::ZONE);
    if !needs {
        return Ok(None);
    }
    let mut f = Filter { family, ..Filter::default() };
    match (a.be32(attr::MARK), a.be32(attr::MARK_MASK)) {
        (Some(v), m) => f.mark = (v, m.unwrap_or(u32::MAX)),
        (None, Some(_)) => return Err(Errno::EINVAL),
        (None, None) => {}
    }
    match (a.be32(attr::STATUS), a.be32(attr::STATUS_MASK)) {
        (Some(v), m) => {
            let mask = m.unwrap_or(v);
            if mask == 0 {
                return Err(Errno::EINVAL);
            }
            f.status = (v, mask);
        }
        (None, Some(_)) => return Err(Errno::EINVAL),
        (None, None) => {}
    }
    // The zone compared (`filter->zone`), which a filter tuple's zone may set, and whether it is
    // compared at all (`zone_filter`: only when `CTA_ZONE` is given).
    let zone_filter = a.has(attr::ZONE);
    let mut zone_id = a.be16(attr::ZONE).unwrap_or(0);
    let done = |f: Filter, zone_id: u16| Ok(Some(Filter { zone: zone_filter.then_some(zone_id), ..f }));
    let Some(fl) = a.get(attr::FILTER) else { return done(f, zone_id) };
    // nla_parse_nested: strict.
    if !a.nested_flag(attr::FILTER) {
        return Err(Errno::EINVAL);
    }
    let ft = parse(fl, &FILTER_POLICY, true)?;
    let orig_flags = ft.ne32(filter_attr::ORIG_FLAGS).unwrap_or(0);
    if orig_flags & !filter_flag::ALL != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let reply_flags = ft.ne32(filter_attr::REPLY_FLAGS).unwrap_or(0);
    if reply_flags & !filter_flag::ALL != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    for (flags, which, slot) in
        [(orig_flags, attr::TUPLE_ORIG, &mut f.orig), (reply_flags, attr::TUPLE_REPLY, &mut f.reply)]
    {
        if flags == 0 {
            continue;
        }
        let nest = a.get(which).ok_or(Errno::EINVAL)?;
        let p = parse_tuple(nest, family, flags)?;
        // A zone in a filter tuple replaces the filter's zone id, unless one is already set.
        if let Some(z) = p.zone {
            if zone_id != 0 {
                return Err(Errno::EINVAL);
            }
            zone_id = z;
        }
        *slot = Some(TupleFilter { flags, tuple: p.tuple });
    }
    done(f, zone_id)
}

impl TupleFilter {
    /// `ctnetlink_filter_match_tuple` against a connection's tuple `ct` of filter family
    /// `family`. Kept as the kernel has it, quirks included: ports are compared only for TCP and
    /// UDP, and an IPv6 address filter drops the connections whose address *equals* it.
    pub fn matches(&self, family: u8, ct: &Tuple) -> bool {
        use filter_flag as f;
        let fl = self.flags;
        let t = &self.tuple;
        match family {
            AF_INET => {
                if fl & f::IP_SRC != 0 && t.src[..4] != ct.src[..4] {
                    return false;
                }
                if fl & f::IP_DST != 0 && t.dst[..4] != ct.dst[..4] {
                    return false;
                }
            }
            AF_INET6 => {
                if fl & f::IP_SRC != 0 && t.src == ct.src {
                    return false;
                }
                if fl & f::IP_DST != 0 && t.dst == ct.dst {
                    return false;
                }
            }
            _ => {}
        }
        if fl & f::PROTO_NUM != 0 && t.proto != ct.proto {
            return false;
        }
        let (ty, code, id) = match ct.proto {
            6 | 17 => {
                if fl & f::PROTO_SRC_PORT != 0 && t.l4[0] != ct.l4[0] {
                    return false;
                }
                return fl & f::PROTO_DST_PORT == 0 || t.l4[1] == ct.l4[1];
            }
            1 => (f::PROTO_ICMP_TYPE, f::PROTO_ICMP_CODE, f::PROTO_ICMP_ID),
            58 => (f::PROTO_ICMPV6_TYPE, f::PROTO_ICMPV6_CODE, f::PROTO_ICMPV6_ID),
            _ => return true,
        };
        if fl & ty != 0 && t.l4[1] >> 8 != ct.l4[1] >> 8 {
            return false;
        }
        if fl & code != 0 && t.l4[1] & 0xff != ct.l4[1] & 0xff {
            return false;
        }
        fl & id == 0 || t.l4[0] == ct.l4[0]
    }
}

// ---- protocol info, helpers and other nests of requests ----

/// `CTA_PROTOINFO_TCP` of a request (`nlattr_to_tcp`): each part as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    pub state: Option<u8>,
    /// `(flags, mask)` per direction.
    pub flags: [Option<(u8, u8)>; 2],
    pub wscale: [Option<u8>; 2],
}

/// `CTA_PROTOINFO_SCTP` of a request: all three parts are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SctpInfo {
    pub state: u8,
    pub vtag: [u32; 2],
}

/// What `CTA_PROTOINFO` says for the tracker of protocol `proto`, parsed as that tracker's
/// `from_nlattr` parses it. `Ok(None)`: nothing for this tracker (it has no `from_nlattr`, or its
/// nest is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoInfoReq {
    Tcp(TcpInfo),
    Sctp(SctpInfo),
}

/// `ctnetlink_change_protoinfo` up to the tracker's checks: a TCP state above 9 is `ERANGE`
/// (policy); SCTP needs state and both tags (`EINVAL`).
pub fn parse_protoinfo(nest: &[u8], proto: u8) -> Result<Option<ProtoInfoReq>, Errno> {
    let tb = parse(nest, &PROTOINFO_POLICY, false)?;
    match proto {
        6 => {
            let Some(tcp) = tb.get(protoinfo_attr::TCP) else { return Ok(None) };
            let t = parse(tcp, &TCP_POLICY, false)?;
            let state = t.u8(tcp_attr::STATE);
            let fl = |a| t.get(a).map(|p: &[u8]| (p[0], p[1]));
            Ok(Some(ProtoInfoReq::Tcp(TcpInfo {
                state,
                flags: [fl(tcp_attr::FLAGS_ORIGINAL), fl(tcp_attr::FLAGS_REPLY)],
                wscale: [t.u8(tcp_attr::WSCALE_ORIGINAL), t.u8(tcp_attr::WSCALE_REPLY)],
            })))
        }
        132 => {
            let Some(sctp) = tb.get(protoinfo_attr::SCTP) else { return Ok(None) };
            let t = parse(sctp, &SCTP_POLICY, false)?;
            let (Some(state), Some(o), Some(r)) =
                (t.u8(sctp_attr::STATE), t.be32(sctp_attr::VTAG_ORIGINAL), t.be32(sctp_attr::VTAG_REPLY))
            else {
                return Err(Errno::EINVAL);
            };
            Ok(Some(ProtoInfoReq::Sctp(SctpInfo { state, vtag: [o, r] })))
        }
        _ => Ok(None),
    }
}

/// `ctnetlink_parse_help`: the helper name of a `CTA_HELP` nest (bytes before the NUL).
pub fn parse_help(nest: &[u8]) -> Result<&[u8], Errno> {
    let t = parse(nest, &HELP_POLICY, false)?;
    let name = t.get(help_attr::NAME).ok_or(Errno::EINVAL)?;
    Ok(&name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())])
}

/// `ctnetlink_change_synproxy`'s parse: all three values required.
pub fn parse_synproxy(nest: &[u8]) -> Result<[u32; 3], Errno> {
    let t = parse(nest, &SYNPROXY_POLICY, false)?;
    match (t.be32(synproxy_attr::ISN), t.be32(synproxy_attr::ITS), t.be32(synproxy_attr::TSOFF)) {
        (Some(a), Some(b), Some(c)) => Ok([a, b, c]),
        _ => Err(Errno::EINVAL),
    }
}

/// `change_seq_adj`'s parse: correction position, offset before and after, each required.
pub fn parse_seqadj(nest: &[u8]) -> Result<[u32; 3], Errno> {
    let t = parse(nest, &SEQADJ_POLICY, false)?;
    let get = |a| t.be32(a).ok_or(Errno::EINVAL);
    Ok([get(seqadj_attr::CORRECTION_POS)?, get(seqadj_attr::OFFSET_BEFORE)?, get(seqadj_attr::OFFSET_AFTER)?])
}

/// `ctnetlink_attach_labels`' checks: a whole number of 32-bit words, and a mask (if any) of the
/// same non-zero length; `EINVAL` otherwise.
pub fn check_labels(labels: &[u8], mask: Option<&[u8]>) -> Result<(), Errno> {
    if !labels.len().is_multiple_of(4) || mask.is_some_and(|m| m.is_empty() || m.len() != labels.len()) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

// ---- replies ----

/// Protocol state as replies carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtoInfo {
    /// No `CTA_PROTOINFO` (trackers without `to_nlattr`).
    #[default]
    None,
    Tcp {
        state: u8,
        wscale: [u8; 2],
        flags: [u8; 2],
    },
    Sctp {
        state: u8,
        vtag: [u32; 2],
    },
}

/// A connection as replies show it (`ctnetlink_fill_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Object {
    /// `[original, reply]`.
    pub tuple: [Tuple; 2],
    pub status: u32,
    pub mark: u32,
    pub id: u32,
    /// `CTA_USE`: the reference count at the time of the reply.
    pub use_count: u32,
    /// Seconds left; `None` for an offloaded connection (not reported).
    pub timeout: Option<u32>,
    pub protoinfo: ProtoInfo,
    /// The synproxy extension's values, which connections created over ctnetlink carry.
    pub synproxy: Option<[u32; 3]>,
    /// `CTA_ZONE`, when not the default zone.
    pub zone: Option<u16>,
}

/// The connection message (type `NEW`) for `o`: `NLM_F_MULTI` whenever the requester has a port
/// id, plus `extra` flags (`NLM_F_DUMP_FILTERED` in a filtered dump).
pub fn object_message(o: &Object, extra: u16, seq: u32, portid: u32) -> Vec<u8> {
    let fl = extra | if portid != 0 { flags::MULTI } else { 0 };
    let mut b = MessageBuilder::new(nlmsg_type(msg::NEW), fl, seq, portid);
    b.nfgenmsg(Nfgenmsg { family: o.tuple[0].family, version: 0, res_id: 0 });
    put_tuple(&mut b, attr::TUPLE_ORIG, &o.tuple[0]);
    put_tuple(&mut b, attr::TUPLE_REPLY, &o.tuple[1]);
    if let Some(z) = o.zone {
        b.put_be16(attr::ZONE, z);
    }
    b.put_be32(attr::STATUS, o.status).put_be32(attr::MARK, o.mark).put_be32(attr::ID, o.id);
    b.put_be32(attr::USE, o.use_count);
    if let Some(t) = o.timeout {
        b.put_be32(attr::TIMEOUT, t);
    }
    put_protoinfo(&mut b, &o.protoinfo, false);
    if let Some(sp) = &o.synproxy {
        put_synproxy(&mut b, sp);
    }
    b.finish()
}

/// `CTA_PROTOINFO` (`to_nlattr` of the TCP and SCTP trackers); for a `DESTROY` event only the
/// state, as the kernel's trackers write it when `destroy` is set.
fn put_protoinfo(b: &mut MessageBuilder, info: &ProtoInfo, destroy: bool) {
    match *info {
        ProtoInfo::None => {}
        ProtoInfo::Tcp { state, wscale, flags } => {
            let pi = b.nest_start(attr::PROTOINFO);
            let n = b.nest_start(protoinfo_attr::TCP);
            b.put_u8(tcp_attr::STATE, state);
            if !destroy {
                b.put_u8(tcp_attr::WSCALE_ORIGINAL, wscale[0])
                    .put_u8(tcp_attr::WSCALE_REPLY, wscale[1])
                    .put(tcp_attr::FLAGS_ORIGINAL, &[flags[0], 0])
                    .put(tcp_attr::FLAGS_REPLY, &[flags[1], 0]);
            }
            b.nest_end(n);
            b.nest_end(pi);
        }
        ProtoInfo::Sctp { state, vtag } => {
            let pi = b.nest_start(attr::PROTOINFO);
            let n = b.nest_start(protoinfo_attr::SCTP);
            b.put_u8(sctp_attr::STATE, state);
            if !destroy {
                b.put_be32(sctp_attr::VTAG_ORIGINAL, vtag[0]).put_be32(sctp_attr::VTAG_REPLY, vtag[1]);
            }
            b.nest_end(n);
            b.nest_end(pi);
        }
    }
}

fn put_synproxy(b: &mut MessageBuilder, &[isn, its, tsoff]: &[u32; 3]) {
    let n = b.nest_start(attr::SYNPROXY);
    b.put_be32(synproxy_attr::ISN, isn).put_be32(synproxy_attr::ITS, its).put_be32(synproxy_attr::TSOFF, tsoff);
    b.nest_end(n);
}

// ---- events ----

/// A connection event: which multicast group it goes to (`NFNLGRP_CONNTRACK_NEW` = 1, `UPDATE` =
/// 2, `DESTROY` = 3) and how its message is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `IPCTNL_MSG_CT_NEW` with `NLM_F_CREATE | NLM_F_EXCL`.
    New,
    /// `IPCTNL_MSG_CT_NEW` without those flags.
    Update,
    /// `IPCTNL_MSG_CT_DELETE`.
    Destroy,
}

impl EventKind {
    /// Its multicast group number.
    pub fn group(self) -> u32 {
        match self {
            EventKind::New => 1,
            EventKind::Update => 2,
            EventKind::Destroy => 3,
        }
    }

    /// Its bit in a `sockaddr_nl.nl_groups` mask (group `n` is bit `n - 1`).
    pub fn group_bit(self) -> u32 {
        1 << (self.group() - 1)
    }

    /// The tag `conntrack -E` prints (`NEW`, `UPDATE`, `DESTROY`).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::New => "NEW",
            EventKind::Update => "UPDATE",
            EventKind::Destroy => "DESTROY",
        }
    }

    /// The event an event message reports, from its header; `None` for other messages.
    pub fn of(h: &crate::netlink::Header) -> Option<EventKind> {
        if h.kind == nlmsg_type(msg::DELETE) {
            Some(EventKind::Destroy)
        } else if h.kind == nlmsg_type(msg::NEW) {
            Some(if h.flags & (flags::CREATE | flags::EXCL) != 0 { EventKind::New } else { EventKind::Update })
        } else {
            None
        }
    }
}

/// What a `NEW` or `UPDATE` event carries besides the tuples, id, status and timeout: the
/// kernel decides from the event's cause (`ctnetlink_conntrack_event`'s event bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventParts {
    /// `CTA_PROTOINFO` (`IPCT_PROTOINFO`: the tracker's state changed, or a ctnetlink request).
    pub protoinfo: bool,
    /// `CTA_SYNPROXY`, when the object has synproxy values (`IPCT_SYNPROXY`: a ctnetlink request).
    pub synproxy: bool,
    /// `CTA_MARK` even when the mark is 0 (`IPCT_MARK`: a ctnetlink request); a nonzero mark is
    /// always reported.
    pub mark: bool,
}

/// The event message for `o`, as `ctnetlink_conntrack_event` builds it: sequence number 0, port id
/// `portid` (the requester's when a ctnetlink request caused the event, else 0), the family in
/// the nfgenmsg, then `CTA_TUPLE_ORIG`, `CTA_TUPLE_REPLY`, `CTA_ZONE`, `CTA_ID`, `CTA_STATUS`;
/// for `DESTROY` the timeout unless 0 (an expired connection) and the protocol state alone; for
/// `NEW` and `UPDATE` the timeout and what `parts` says; last `CTA_MARK`.
pub fn event_message(kind: EventKind, o: &Object, parts: EventParts, portid: u32) -> Vec<u8> {
    let (t, fl) = match kind {
        EventKind::New => (msg::NEW, flags::CREATE | flags::EXCL),
        EventKind::Update => (msg::NEW, 0),
        EventKind::Destroy => (msg::DELETE, 0),
    };
    let mut b = MessageBuilder::new(nlmsg_type(t), fl, 0, portid);
    b.nfgenmsg(Nfgenmsg { family: o.tuple[0].family, version: 0, res_id: 0 });
    put_tuple(&mut b, attr::TUPLE_ORIG, &o.tuple[0]);
    put_tuple(&mut b, attr::TUPLE_REPLY, &o.tuple[1]);
    if let Some(z) = o.zone {
        b.put_be16(attr::ZONE, z);
    }
    b.put_be32(attr::ID, o.id).put_be32(attr::STATUS, o.status);
    let timeout = o.timeout.unwrap_or(0);
    if kind == EventKind::Destroy {
        if timeout != 0 {
            b.put_be32(attr::TIMEOUT, timeout);
        }
        put_protoinfo(&mut b, &o.protoinfo, true);
    } else {
        b.put_be32(attr::TIMEOUT, timeout);
        if parts.protoinfo {
            put_protoinfo(&mut b, &o.protoinfo, false);
        }
        if let Some(sp) = o.synproxy.as_ref().filter(|_| parts.synproxy) {
            put_synproxy(&mut b, sp);
        }
    }
    if o.mark != 0 || (parts.mark && kind != EventKind::Destroy) {
        b.put_be32(attr::MARK, o.mark);
    }
    b.finish()
}

fn multi(portid: u32) -> u16 {
    if portid != 0 {
        flags::MULTI
    } else {
        0
    }
}

/// A `GET_STATS_CPU` reply for CPU (worker) `cpu`: `values` in [`stats_attr::ALL`]'s order.
pub fn stats_cpu_message(cpu: u16, values: &[u32; 10], seq: u32, portid: u32) -> Vec<u8> {
    let mut b = MessageBuilder::new(nlmsg_type(msg::GET_STATS_CPU), multi(portid), seq, portid);
    b.nfgenmsg(Nfgenmsg { family: 0, version: 0, res_id: cpu });
    for ((id, _), v) in stats_attr::ALL.iter().zip(values) {
        b.put_be32(*id, *v);
    }
    b.finish()
}

/// The `GET_STATS` reply: the number of connections and the table's maximum.
pub fn stats_message(entries: u32, max: u32, seq: u32, portid: u32) -> Vec<u8> {
    let mut b = MessageBuilder::new(nlmsg_type(msg::GET_STATS), multi(portid), seq, portid);
    b.nfgenmsg(Nfgenmsg::default());
    b.put_be32(stats_global_attr::ENTRIES, entries).put_be32(stats_global_attr::MAX_ENTRIES, max);
    b.finish()
}

/// An `EXP_GET_STATS_CPU` reply for `cpu`, which the kernel sends with the conntrack subsystem's
/// number (type 3 of subsystem 1).
pub fn exp_stats_cpu_message(cpu: u16, values: [u32; 3], seq: u32, portid: u32) -> Vec<u8> {
    let mut b = MessageBuilder::new(nlmsg_type(exp_msg::GET_STATS_CPU), multi(portid), seq, portid);
    b.nfgenmsg(Nfgenmsg { family: 0, version: 0, res_id: cpu });
    b.put_be32(exp_stats_attr::NEW, values[0])
        .put_be32(exp_stats_attr::CREATE, values[1])
        .put_be32(exp_stats_attr::DELETE, values[2]);
    b.finish()
}

// ---- reading replies (clients) ----

/// Why a reply is not a connection message this module can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// Shorter than `nfgenmsg`.
    Short,
    /// A tuple without addresses or protocol number.
    BadTuple,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplyError::Short => "message shorter than its nfgenmsg",
            ReplyError::BadTuple => "malformed tuple",
        })
    }
}

impl std::error::Error for ReplyError {}

fn read_tuple(nest: &[u8], family: u8) -> Result<Tuple, ReplyError> {
    let p = parse_tuple(nest, family, filter_flag::ALL & !filter_flag::TUPLE_ZONE).map_err(|_| ReplyError::BadTuple)?;
    Ok(p.tuple)
}

/// Reads a connection message's payload (after the netlink header): the inverse of
/// [`object_message`] for every attribute it writes.
pub fn parse_object(payload: &[u8]) -> Result<Object, ReplyError> {
    let g = Nfgenmsg::parse(payload).map_err(|_| ReplyError::Short)?;
    let a = parse_ct(&payload[Nfgenmsg::LEN..]).map_err(|_| ReplyError::BadTuple)?;
    let mut o = Object::default();
    o.tuple[0] = read_tuple(a.get(attr::TUPLE_ORIG).ok_or(ReplyError::BadTuple)?, g.family)?;
    o.tuple[1] = read_tuple(a.get(attr::TUPLE_REPLY).ok_or(ReplyError::BadTuple)?, g.family)?;
    o.status = a.be32(attr::STATUS).unwrap_or(0);
    o.mark = a.be32(attr::MARK).unwrap_or(0);
    o.id = a.be32(attr::ID).unwrap_or(0);
    o.use_count = a.be32(attr::USE).unwrap_or(0);
    o.timeout = a.be32(attr::TIMEOUT);
    o.zone = a.be16(attr::ZONE);
    if let Some(pi) = a.get(attr::PROTOINFO) {
        let tb = parse(pi, &PROTOINFO_POLICY, false).map_err(|_| ReplyError::BadTuple)?;
        if let Some(tcp) = tb.get(protoinfo_attr::TCP) {
            let t = parse(tcp, &TCP_POLICY, false).map_err(|_| ReplyError::BadTuple)?;
            let fl = |x| t.get(x).map_or(0, |p: &[u8]| p[0]);
            o.protoinfo = ProtoInfo::Tcp {
                state: t.u8(tcp_attr::STATE).unwrap_or(0),
                wscale: [t.u8(tcp_attr::WSCALE_ORIGINAL).unwrap_or(0), t.u8(tcp_attr::WSCALE_REPLY).unwrap_or(0)],
                flags: [fl(tcp_attr::FLAGS_ORIGINAL), fl(tcp_attr::FLAGS_REPLY)],
            };
        } else if let Some(sctp) = tb.get(protoinfo_attr::SCTP) {
            let t = parse(sctp, &SCTP_POLICY, false).map_err(|_| ReplyError::BadTuple)?;
            o.protoinfo = ProtoInfo::Sctp {
                state: t.u8(sctp_attr::STATE).unwrap_or(0),
                vtag: [t.be32(sctp_attr::VTAG_ORIGINAL).unwrap_or(0), t.be32(sctp_attr::VTAG_REPLY).unwrap_or(0)],
            };
        }
    }
    if let Some(sp) = a.get(attr::SYNPROXY) {
        o.synproxy = parse_synproxy(sp).ok();
    }
    Ok(o)
}

/// Reads a `GET_STATS_CPU` reply's payload: the CPU and its values in [`stats_attr::ALL`]'s order.
pub fn parse_stats_cpu(payload: &[u8]) -> Option<(u16, [u32; 10])> {
    let g = Nfgenmsg::parse(payload).ok()?;
    let mut v = [0u32; 10];
    for a in Attrs::new(&payload[Nfgenmsg::LEN..]).map_while(Result::ok) {
        if let Some(i) = stats_attr::ALL.iter().position(|(id, _)| *id == a.kind) {
            v[i] = be32(a.payload)?;
        }
    }
    Some((g.res_id, v))
}

/// Reads a `GET_STATS` reply's payload: (entries, max entries).
pub fn parse_stats(payload: &[u8]) -> Option<(u32, u32)> {
    let mut out = (None, None);
    for a in Attrs::new(payload.get(Nfgenmsg::LEN..)?).map_while(Result::ok) {
        match a.kind {
            stats_global_attr::ENTRIES => out.0 = be32(a.payload),
            stats_global_attr::MAX_ENTRIES => out.1 = be32(a.payload),
            _ => {}
        }
    }
    Some((out.0?, out.1.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    fn tcp_tuple() -> Tuple {
        Tuple { family: AF_INET, src: v4([198, 18, 0, 1]), dst: v4([198, 18, 0, 2]), proto: 6, l4: [1000, 80] }
    }

    /// The nest bytes of `t` as `put_tuple` writes them, without the outer header.
    fn nest_of(t: &Tuple) -> Vec<u8> {
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        put_tuple(&mut b, attr::TUPLE_ORIG, t);
        b.finish()[20..].to_vec()
    }

    #[test]
    fn tuples_round_trip() {
        let icmp = Tuple { family: AF_INET, proto: 1, l4: [77, 8 << 8], ..tcp_tuple() };
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0, 2]);
        v6[15] = 1;
        let icmpv6 = Tuple { family: AF_INET6, src: v6, dst: v6, proto: 58, l4: [5, 128 << 8] };
        let gre = Tuple { proto: 47, l4: [0, 9], ..tcp_tuple() };
        let other = Tuple { proto: 41, l4: [0, 0], ..tcp_tuple() };
        for t in [tcp_tuple(), icmp, icmpv6, gre, other] {
            let p = parse_tuple(&nest_of(&t), t.family, filter_flag::ALL).unwrap();
            assert_eq!(p.tuple, t);
            assert_eq!(p.zone, None);
        }
    }

    /// The attribute types of a message's payload, in order.
    fn attr_order(m: &[u8]) -> Vec<u16> {
        Attrs::new(&m[20..]).map_while(Result::ok).map(|a| a.kind).collect()
    }

    #[test]
    fn event_messages_carry_what_the_kernels_do() {
        let t = tcp_tuple();
        let o = Object {
            tuple: [t, Tuple { src: t.dst, dst: t.src, l4: [80, 1000], ..t }],
            status: status::CONFIRMED | status::SEEN_REPLY,
            id: 0x1234,
            timeout: Some(120),
            protoinfo: ProtoInfo::Tcp { state: 3, wscale: [7, 7], flags: [0x23, 0x23] },
            synproxy: Some([0; 3]),
            ..Object::default()
        };
        use attr::*;
        // A packet's NEW: no mark (0), no synproxy.
        let parts = EventParts { protoinfo: true, ..EventParts::default() };
        let m = event_message(EventKind::New, &o, parts, 0);
        let h = crate::netlink::Header::parse(&m).unwrap();
        assert_eq!((h.kind, h.flags, h.seq, h.pid), (0x100, flags::CREATE | flags::EXCL, 0, 0));
        assert_eq!(EventKind::of(&h), Some(EventKind::New));
        assert_eq!(attr_order(&m), [TUPLE_ORIG, TUPLE_REPLY, ID, STATUS, TIMEOUT, PROTOINFO]);
        // A ctnetlink request's UPDATE: mark 0 reported, synproxy, the requester's port id.
        let all = EventParts { protoinfo: true, synproxy: true, mark: true };
        let m = event_message(EventKind::Update, &o, all, 99);
        let h = crate::netlink::Header::parse(&m).unwrap();
        assert_eq!((h.kind, h.flags, h.pid), (0x100, 0, 99));
        assert_eq!(EventKind::of(&h), Some(EventKind::Update));
        assert_eq!(attr_order(&m), [TUPLE_ORIG, TUPLE_REPLY, ID, STATUS, TIMEOUT, PROTOINFO, SYNPROXY, MARK]);
        // UPDATE without a state change: no protocol information.
        let m = event_message(EventKind::Update, &Object { mark: 5, ..o }, EventParts::default(), 0);
        assert_eq!(attr_order(&m), [TUPLE_ORIG, TUPLE_REPLY, ID, STATUS, TIMEOUT, MARK]);
        // DESTROY of an expired connection: no timeout, the TCP state alone.
        let m = event_message(EventKind::Destroy, &Object { timeout: Some(0), ..o }, all, 0);
        assert_eq!(crate::netlink::Header::parse(&m).unwrap().kind, 0x102);
        assert_eq!(attr_order(&m), [TUPLE_ORIG, TUPLE_REPLY, ID, STATUS, PROTOINFO]);
        let back = parse_object(&m[16..]).unwrap();
        assert_eq!(back.protoinfo, ProtoInfo::Tcp { state: 3, wscale: [0; 2], flags: [0; 2] });
        assert_eq!((back.timeout, back.id, back.status), (None, 0x1234, o.status));
        // DESTROY of a deleted one: its timeout left.
        let m = event_message(EventKind::Destroy, &o, EventParts::default(), 7);
        assert_eq!(attr_order(&m), [TUPLE_ORIG, TUPLE_REPLY, ID, STATUS, TIMEOUT, PROTOINFO]);
        assert_eq!(parse_object(&m[16..]).unwrap().timeout, Some(120));
    }

    #[test]
    fn tuple_errors_are_the_kernels() {
        let n = nest_of(&tcp_tuple());
        assert_eq!(parse_tuple(&n, 0, filter_flag::ALL), Err(Errno::EOPNOTSUPP));
        // An IPv4 nest read as IPv6: the addresses are missing.
        assert_eq!(parse_tuple(&n, AF_INET6, filter_flag::ALL), Err(Errno::EINVAL));
        assert_eq!(parse_tuple(&[], AF_INET, filter_flag::ALL), Err(Errno::EINVAL));
        // ICMP type 3 has no answer type.
        let bad = Tuple { proto: 1, l4: [1, 3 << 8], ..tcp_tuple() };
        assert_eq!(parse_tuple(&nest_of(&bad), AF_INET, filter_flag::ALL), Err(Errno::EINVAL));
        // Port flags without the protocol number.
        assert_eq!(parse_tuple(&n, AF_INET, filter_flag::PROTO_SRC_PORT), Err(Errno::EINVAL));
        // A one-byte port.
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        let o = b.nest_start(attr::TUPLE_ORIG);
        let ip = b.nest_start(tuple_attr::IP);
        b.put(ip_attr::V4_SRC, &[1, 2, 3, 4]).put(ip_attr::V4_DST, &[1, 2, 3, 4]);
        b.nest_end(ip);
        let p = b.nest_start(tuple_attr::PROTO);
        b.put_u8(proto_attr::NUM, 6).put(proto_attr::SRC_PORT, &[1]);
        b.nest_end(p);
        b.nest_end(o);
        assert_eq!(parse_tuple(&b.finish()[20..], AF_INET, filter_flag::ALL), Err(Errno::ERANGE));
    }

    #[test]
    fn top_level_validation() {
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        b.put(attr::STATUS, &[0, 0, 1]);
        assert_eq!(parse_ct(&b.finish()[16..]).unwrap_err(), Errno::ERANGE);
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        b.put(attr::TIMESTAMP_EVENT, &[0; 8]);
        assert_eq!(parse_ct(&b.finish()[16..]).unwrap_err(), Errno::EINVAL);
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        b.put_be32(attr::MARK, 5).put_be32(99, 1).put_be32(attr::MARK, 6);
        let m = b.finish();
        let t = parse_ct(&m[16..]).unwrap();
        assert_eq!(t.be32(attr::MARK), Some(6));
    }

    #[test]
    fn filters() {
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        b.put_be32(attr::MARK_MASK, 5);
        let m = b.finish();
        // A mask alone asks for no filter at all.
        assert_eq!(parse_filter(&parse_ct(&m[16..]).unwrap(), 0), Ok(None));
        assert_eq!(parse_filter(&parse_ct(&m[16..]).unwrap(), AF_INET), Err(Errno::EINVAL));
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        b.put_be32(attr::STATUS, 0);
        let m = b.finish();
        assert_eq!(parse_filter(&parse_ct(&m[16..]).unwrap(), 0), Err(Errno::EINVAL));
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        b.put_be32(attr::MARK, 7);
        let m = b.finish();
        let f = parse_filter(&parse_ct(&m[16..]).unwrap(), 0).unwrap().unwrap();
        assert_eq!(f.mark, (7, u32::MAX));
        // CTA_FILTER without NLA_F_NESTED, and with an orig flag but no orig tuple.
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        b.put(attr::FILTER, &[8, 0, 1, 0, 1, 0, 0, 0]);
        let m = b.finish();
        assert_eq!(parse_filter(&parse_ct(&m[16..]).unwrap(), AF_INET), Err(Errno::EINVAL));
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        let n = b.nest_start(attr::FILTER);
        b.put(filter_attr::ORIG_FLAGS, &1u32.to_ne_bytes());
        b.nest_end(n);
        let m = b.finish();
        assert_eq!(parse_filter(&parse_ct(&m[16..]).unwrap(), AF_INET), Err(Errno::EINVAL));
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        let n = b.nest_start(attr::FILTER);
        b.put(filter_attr::ORIG_FLAGS, &(1u32 << 12).to_ne_bytes());
        b.nest_end(n);
        let m = b.finish();
        assert_eq!(parse_filter(&parse_ct(&m[16..]).unwrap(), AF_INET), Err(Errno::EINVAL));
    }

    #[test]
    fn tuple_filter_matching_keeps_the_kernels_quirks() {
        let t = tcp_tuple();
        let f = TupleFilter { flags: filter_flag::IP_SRC | filter_flag::PROTO_NUM, tuple: t };
        assert!(f.matches(AF_INET, &t));
        assert!(!f.matches(AF_INET, &Tuple { src: v4([1, 1, 1, 1]), ..t }));
        // IPv6: an equal address is filtered out.
        let t6 = Tuple { family: AF_INET6, src: [1; 16], dst: [2; 16], ..t };
        let f6 = TupleFilter { flags: filter_flag::IP_SRC, tuple: t6 };
        assert!(!f6.matches(AF_INET6, &t6));
        assert!(f6.matches(AF_INET6, &Tuple { src: [3; 16], ..t6 }));
        // Ports count for TCP and UDP only.
        let fp = TupleFilter { flags: filter_flag::PROTO_DST_PORT, tuple: Tuple { l4: [0, 1], ..t } };
        assert!(!fp.matches(AF_INET, &t));
        assert!(fp.matches(AF_INET, &Tuple { proto: 132, ..t }));
    }

    #[test]
    fn objects_round_trip() {
        let o = Object {
            tuple: [tcp_tuple(), Tuple { src: tcp_tuple().dst, dst: tcp_tuple().src, l4: [80, 1000], ..tcp_tuple() }],
            status: status::CONFIRMED | status::ASSURED,
            mark: 9,
            id: 0xdead_beef,
            use_count: 1,
            timeout: Some(99),
            protoinfo: ProtoInfo::Tcp { state: 3, wscale: [7, 7], flags: [0x23, 0x23] },
            synproxy: Some([0, 0, 0]),
            zone: None,
        };
        let m = object_message(&o, 0, 5, 6);
        let h = crate::netlink::Header::parse(&m).unwrap();
        assert_eq!((h.kind, h.flags, h.len as usize), (0x100, flags::MULTI, m.len()));
        assert_eq!(parse_object(&m[16..]), Ok(o));
        let sctp = Object { protoinfo: ProtoInfo::Sctp { state: 4, vtag: [1, 2] }, synproxy: None, ..o };
        assert_eq!(parse_object(&object_message(&sctp, 0, 5, 6)[16..]), Ok(sctp));
    }

    #[test]
    fn stats_round_trip() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let m = stats_cpu_message(3, &v, 1, 2);
        assert_eq!(m.len(), 16 + 4 + 10 * 8);
        assert_eq!(parse_stats_cpu(&m[16..]), Some((3, v)));
        assert_eq!(parse_stats(&stats_message(5, 262144, 1, 2)[16..]), Some((5, 262144)));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), fam in any::<u8>(), fl in any::<u32>()) {
            if let Ok(a) = parse_ct(&bytes) {
                let _ = parse_filter(&a, fam);
                for t in [attr::TUPLE_ORIG, attr::TUPLE_REPLY, attr::TUPLE_MASTER] {
                    if let Some(n) = a.get(t) {
                        let _ = parse_tuple(n, fam, fl);
                    }
                }
                if let Some(p) = a.get(attr::PROTOINFO) {
                    let _ = parse_protoinfo(p, 6);
                    let _ = parse_protoinfo(p, 132);
                }
            }
            let _ = parse_exp(&bytes);
            let _ = parse_object(&bytes);
            let _ = parse_stats_cpu(&bytes);
        }
    }
}

//! cttimeout (`NFNL_SUBSYS_CTNETLINK_TIMEOUT`) messages: types, attributes, the kernel's
//! attribute validation with its errno per violation, and the replies' layout.
//!
//! Requests are validated as `nla_parse_deprecated` does with `cttimeout_nla_policy` (the
//! non-strict parsing nfnetlink uses): unknown attribute types are skipped, a later duplicate wins,
//! an integer attribute longer than its type is accepted (its first bytes are read), a shorter one
//! is `ERANGE`, a name without a NUL within its first 32 bytes is `EINVAL` and one longer than 31
//! bytes is `ERANGE`. `CTA_TIMEOUT_DATA` is parsed only once the handler knows the protocol
//! ([`parse_data`]), with that protocol's policy, exactly when the kernel does.

use crate::errno::Errno;
use crate::netlink::{Attrs, MessageBuilder, Nfgenmsg};

/// `NFNL_SUBSYS_CTNETLINK_TIMEOUT`.
pub const SUBSYS: u8 = 8;
/// `CTNL_TIMEOUT_NAME_MAX`: longest name, NUL included.
pub const NAME_MAX: usize = 32;

/// The message types (`IPCTNL_MSG_TIMEOUT_*`), from one table: constant, variant, name.
macro_rules! msg_types {
    ($($variant:ident = $n:literal, $name:literal;)*) => {
        /// A cttimeout message type (the low byte of `nlmsg_type`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MsgType {
            $($variant,)*
            /// A type the kernel does not know (it answers `EINVAL`).
            Other(u8),
        }

        impl MsgType {
            /// `IPCTNL_MSG_TIMEOUT_MAX`: the number of known types.
            pub const COUNT: u8 = [$($n),*].len() as u8;

            pub fn from_u8(n: u8) -> MsgType {
                match n {
                    $($n => MsgType::$variant,)*
                    n => MsgType::Other(n),
                }
            }

            pub fn to_u8(self) -> u8 {
                match self {
                    $(MsgType::$variant => $n,)*
                    MsgType::Other(n) => n,
                }
            }

            /// The kernel's name (`IPCTNL_MSG_TIMEOUT_NEW`…).
            pub fn name(self) -> &'static str {
                match self {
                    $(MsgType::$variant => $name,)*
                    MsgType::Other(_) => "IPCTNL_MSG_TIMEOUT_?",
                }
            }
        }
    };
}

msg_types! {
    New = 0, "IPCTNL_MSG_TIMEOUT_NEW";
    Get = 1, "IPCTNL_MSG_TIMEOUT_GET";
    Delete = 2, "IPCTNL_MSG_TIMEOUT_DELETE";
    DefaultSet = 3, "IPCTNL_MSG_TIMEOUT_DEFAULT_SET";
    DefaultGet = 4, "IPCTNL_MSG_TIMEOUT_DEFAULT_GET";
}

impl std::fmt::Display for MsgType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The full `nlmsg_type` of a cttimeout message.
pub fn nlmsg_type(t: MsgType) -> u16 {
    (u16::from(SUBSYS) << 8) | u16::from(t.to_u8())
}

/// Top-level attribute ids (`CTA_TIMEOUT_*`).
pub mod attr {
    pub const NAME: u16 = 1;
    pub const L3PROTO: u16 = 2;
    pub const L4PROTO: u16 = 3;
    pub const DATA: u16 = 4;
    pub const USE: u16 = 5;
    pub const PAD: u16 = 6;
    /// `CTA_TIMEOUT_MAX`.
    pub const MAX: u16 = PAD;
}

/// A request's attributes after the kernel's top-level validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request<'a> {
    /// The name's bytes up to its first NUL (the kernel compares names with `strncmp`).
    pub name: Option<&'a [u8]>,
    /// `CTA_TIMEOUT_L3PROTO` (big-endian on the wire).
    pub l3proto: Option<u16>,
    pub l4proto: Option<u8>,
    /// The payload of `CTA_TIMEOUT_DATA`, nested flag or not; see [`parse_data`].
    pub data: Option<&'a [u8]>,
}

/// Validates `attrs` (the bytes after `nfgenmsg`) as `nla_parse_deprecated` with
/// `cttimeout_nla_policy` does, returning the kernel's errno for the first violation.
pub fn parse_request(attrs: &[u8]) -> Result<Request<'_>, Errno> {
    let mut r = Request::default();
    // Malformed trailing bytes end the walk: the kernel only warns about them.
    for a in Attrs::new(attrs).map_while(Result::ok) {
        let p = a.payload;
        match a.kind {
            attr::NAME => {
                // NLA_NUL_STRING, len 31: a NUL within the first min(len, 32) bytes…
                let window = &p[..p.len().min(NAME_MAX)];
                let Some(nul) = window.iter().position(|&c| c == 0) else { return Err(Errno::EINVAL) };
                // …and at most 31 bytes once one trailing NUL is dropped.
                let strlen = if p.last() == Some(&0) { p.len() - 1 } else { p.len() };
                if strlen > NAME_MAX - 1 {
                    return Err(Errno::ERANGE);
                }
                r.name = Some(&p[..nul]);
            }
            attr::L3PROTO => {
                let b = p.get(..2).ok_or(Errno::ERANGE)?;
                r.l3proto = Some(u16::from_be_bytes([b[0], b[1]]));
            }
            attr::L4PROTO => r.l4proto = Some(*p.first().ok_or(Errno::ERANGE)?),
            attr::DATA => {
                // NLA_NESTED: empty, or at least one attribute header.
                if !p.is_empty() && p.len() < crate::netlink::NLA_HDRLEN {
                    return Err(Errno::ERANGE);
                }
                r.data = Some(p);
            }
            // USE, PAD, unknown types: no policy, not kept.
            _ => {}
        }
    }
    Ok(r)
}

/// A protocol's `CTA_TIMEOUT_DATA` layout in this kernel: the attributes its parser reads
/// (`nlattr_max`, each an `NLA_U32` of seconds, id = slot + 1) and the attributes its replies carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLayout {
    /// Attribute ids 1..=`parsed` are read; larger ids are skipped unvalidated.
    pub parsed: u16,
    /// Replies carry ids 1..=`emitted`, one per timeout slot.
    pub emitted: u16,
}

/// The data layout of L4 protocol `l4num` as cttimeout numbers them (generic is 255); `None` for a
/// protocol without a tracker of its own (`EOPNOTSUPP`).
pub fn data_layout(l4num: u8) -> Option<DataLayout> {
    let (parsed, emitted) = match l4num {
        6 => (11, 11),           // TCP: SYN_SENT..UNACK
        17 | 136 | 47 => (2, 2), // UDP, UDP-Lite, GRE: UNREPLIED, REPLIED
        1 | 58 | 255 => (1, 1),  // ICMP, ICMPv6, generic: TIMEOUT
        // SCTP: CLOSED..HEARTBEAT_SENT, and HEARTBEAT_ACKED (9), which 6.18 no longer uses but still
        // parses, stores and reports (0 by default). DATA_SENT (10) is beyond its nlattr_max.
        132 => (9, 9),
        _ => return None,
    };
    Some(DataLayout { parsed, emitted })
}

/// Parses a `CTA_TIMEOUT_DATA` payload with the protocol's policy (`nla_parse_nested_deprecated`):
/// the (attribute id, seconds) pairs the protocol reads, in order (a later duplicate wins when they
/// are applied in order), or `ERANGE` for a member shorter than 4 bytes.
pub fn parse_data(layout: DataLayout, data: &[u8]) -> Result<Vec<(u16, u32)>, Errno> {
    let mut out = Vec::new();
    for a in Attrs::new(data).map_while(Result::ok) {
        if a.kind == 0 || a.kind > layout.parsed {
            continue;
        }
        let b = a.payload.get(..4).ok_or(Errno::ERANGE)?;
        out.push((a.kind, u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
    }
    Ok(out)
}

/// A policy as replies show it (`ctnl_timeout_fill_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<'a> {
    pub name: &'a [u8],
    pub l3proto: u16,
    pub l4proto: u8,
    /// `CTA_TIMEOUT_USE`.
    pub uses: u32,
    /// Seconds per slot, in attribute order.
    pub values: &'a [u32],
}

/// The reply header flags the kernel uses for objects: `NLM_F_MULTI` whenever the requester has a
/// port id (dump or not).
fn reply_flags(portid: u32) -> u16 {
    if portid != 0 {
        crate::netlink::flags::MULTI
    } else {
        0
    }
}

fn put_data(b: &mut MessageBuilder, values: &[u32]) {
    let nest = b.nest_start(attr::DATA);
    for (i, &v) in values.iter().enumerate() {
        b.put_be32(i as u16 + 1, v);
    }
    b.nest_end(nest);
}

/// A `NEW`-typed object message, as `GET` and dumps answer.
pub fn object_message(o: &Object<'_>, seq: u32, portid: u32) -> Vec<u8> {
    let mut b = MessageBuilder::new(nlmsg_type(MsgType::New), reply_flags(portid), seq, portid);
    b.nfgenmsg(Nfgenmsg::default())
        .put_strz(attr::NAME, o.name)
        .put_be16(attr::L3PROTO, o.l3proto)
        .put_u8(attr::L4PROTO, o.l4proto)
        .put_be32(attr::USE, o.uses);
    put_data(&mut b, o.values);
    b.finish()
}

/// The `DEFAULT_GET` answer, typed `DEFAULT_SET`: L3PROTO, L4PROTO, DATA.
pub fn defaults_message(l3proto: u16, l4proto: u8, values: &[u32], seq: u32, portid: u32) -> Vec<u8> {
    let mut b = MessageBuilder::new(nlmsg_type(MsgType::DefaultSet), reply_flags(portid), seq, portid);
    b.nfgenmsg(Nfgenmsg::default()).put_be16(attr::L3PROTO, l3proto).put_u8(attr::L4PROTO, l4proto);
    put_data(&mut b, values);
    b.finish()
}

/// The per-protocol names of the timeout slots, in attribute order (slot `i` is data attribute
/// `i + 1`), one per slot the protocol's replies carry ([`DataLayout::emitted`]): the one table the
/// engine's trackers and ferroctl take them from. Spelled as nfct (libnetfilter_cttimeout) spells
/// them where it knows the slot (TCP's `UNACK` is its `UNACKNOWLEDGED`), else as the kernel's
/// `CTA_TIMEOUT_<PROTO>_<STATE>` suffix (SCTP's `HEARTBEAT_SENT` and `HEARTBEAT_ACKED`).
pub mod names {
    /// TCP: the nine states from SYN_SENT on (state number = attribute id), then RETRANS and UNACK.
    pub const TCP: &[&str] = &[
        "SYN_SENT",
        "SYN_RECV",
        "ESTABLISHED",
        "FIN_WAIT",
        "CLOSE_WAIT",
        "LAST_ACK",
        "TIME_WAIT",
        "CLOSE",
        "SYN_SENT2",
        "RETRANS",
        "UNACKNOWLEDGED",
    ];
    /// UDP, and UDP-Lite and GRE, which have the same two slots.
    pub const UDP: &[&str] = &["UNREPLIED", "REPLIED"];
    /// ICMP, and ICMPv6 and generic, which have the same single slot.
    pub const ICMP: &[&str] = &["TIMEOUT"];
    /// SCTP: CLOSED..HEARTBEAT_SENT, then HEARTBEAT_ACKED, which the kernel still parses, stores and
    /// reports but no longer uses.
    pub const SCTP: &[&str] = &[
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
}

/// The [`names`] of L4 protocol `l4num`'s timeout slots, as cttimeout numbers protocols (generic
/// is 255); `None` where [`data_layout`] is `None`.
pub fn state_names(l4num: u8) -> Option<&'static [&'static str]> {
    Some(match l4num {
        6 => names::TCP,
        17 | 136 | 47 => names::UDP,
        1 | 58 | 255 => names::ICMP,
        132 => names::SCTP,
        _ => return None,
    })
}

/// A request's attributes, for [`request_message`]: each is put when present, in the order
/// libnetfilter_cttimeout puts them (NAME, L3PROTO, L4PROTO, DATA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fields<'a> {
    /// Put with a trailing NUL.
    pub name: Option<&'a [u8]>,
    pub l3proto: Option<u16>,
    pub l4proto: Option<u8>,
    /// (attribute id, seconds) members of `CTA_TIMEOUT_DATA`, in this order; `None` (or empty):
    /// no DATA attribute.
    pub data: Option<&'a [(u16, u32)]>,
}

/// A cttimeout request as `nfct_timeout_nlmsg_build_hdr` and `nfct_timeout_nlmsg_build_payload`
/// build it: `NLM_F_REQUEST | flags`, `nfgenmsg` with `AF_UNSPEC`, then `f`'s attributes.
pub fn request_message(t: MsgType, flags: u16, seq: u32, f: &Fields<'_>) -> Vec<u8> {
    let mut b = MessageBuilder::new(nlmsg_type(t), crate::netlink::flags::REQUEST | flags, seq, 0);
    b.nfgenmsg(Nfgenmsg::default());
    if let Some(n) = f.name {
        b.put_strz(attr::NAME, n);
    }
    if let Some(l3) = f.l3proto {
        b.put_be16(attr::L3PROTO, l3);
    }
    if let Some(l4) = f.l4proto {
        b.put_u8(attr::L4PROTO, l4);
    }
    if let Some(d) = f.data.filter(|d| !d.is_empty()) {
        let nest = b.nest_start(attr::DATA);
        for &(id, v) in d {
            b.put_be32(id, v);
        }
        b.nest_end(nest);
    }
    b.finish()
}

/// An object or defaults reply as a client reads it: every attribute optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply<'a> {
    /// The name's bytes up to its first NUL.
    pub name: Option<&'a [u8]>,
    pub l3proto: Option<u16>,
    pub l4proto: Option<u8>,
    /// `CTA_TIMEOUT_USE`.
    pub uses: Option<u32>,
    /// The (attribute id, seconds) members of `CTA_TIMEOUT_DATA` in wire order; members shorter
    /// than 4 bytes are skipped.
    pub data: Option<Vec<(u16, u32)>>,
}

impl Reply<'_> {
    /// The seconds of attribute `id` (the last member with that id).
    pub fn value(&self, id: u16) -> Option<u32> {
        self.data.as_ref()?.iter().rev().find(|&&(i, _)| i == id).map(|&(_, v)| v)
    }
}

/// Reads the payload of a cttimeout reply message (`nfgenmsg` and attributes, as
/// [`object_message`] and [`defaults_message`] build them); `None` if it is shorter than `nfgenmsg`.
/// Integer attributes shorter than their type are ignored; a later duplicate wins.
pub fn parse_reply(payload: &[u8]) -> Option<Reply<'_>> {
    let attrs = payload.get(Nfgenmsg::LEN..)?;
    let mut r = Reply::default();
    for a in Attrs::new(attrs).map_while(Result::ok) {
        let p = a.payload;
        match a.kind {
            attr::NAME => r.name = Some(p.split(|&c| c == 0).next().unwrap_or(p)),
            attr::L3PROTO => {
                if let Some(b) = p.get(..2) {
                    r.l3proto = Some(u16::from_be_bytes([b[0], b[1]]));
                }
            }
            attr::L4PROTO => {
                if let Some(&b) = p.first() {
                    r.l4proto = Some(b);
                }
            }
            attr::USE => {
                if let Some(b) = p.get(..4) {
                    r.uses = Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            attr::DATA => {
                let members = Attrs::new(p)
                    .map_while(Result::ok)
                    .filter_map(|m| {
                        let b = m.payload.get(..4)?;
                        Some((m.kind, u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
                    })
                    .collect();
                r.data = Some(members);
            }
            _ => {}
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{Header, MessageBuilder};
    use proptest::prelude::*;

    fn attrs(f: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
        let mut b = MessageBuilder::new(0, 0, 0, 0);
        f(&mut b);
        b.finish()[16..].to_vec()
    }

    #[test]
    fn types_round_trip() {
        for n in 0..=255u8 {
            assert_eq!(MsgType::from_u8(n).to_u8(), n);
        }
        assert_eq!(MsgType::COUNT, 5);
        assert_eq!(nlmsg_type(MsgType::DefaultGet), 0x804);
    }

    #[test]
    fn names_follow_nla_nul_string() {
        let ok = attrs(|b| {
            b.put_strz(attr::NAME, &[b'a'; 31]);
        });
        assert_eq!(parse_request(&ok).unwrap().name, Some(&[b'a'; 31][..]));
        let long = attrs(|b| {
            b.put_strz(attr::NAME, &[b'a'; 32]);
        });
        assert_eq!(parse_request(&long), Err(Errno::EINVAL));
        let no_nul = attrs(|b| {
            b.put(attr::NAME, b"abc");
        });
        assert_eq!(parse_request(&no_nul), Err(Errno::EINVAL));
        let inner_nul = attrs(|b| {
            b.put(attr::NAME, b"ab\0cd");
        });
        assert_eq!(parse_request(&inner_nul).unwrap().name, Some(&b"ab"[..]));
        let mut v = vec![b'x'; 31];
        v.extend_from_slice(&[0, 0]);
        let padded = attrs(|b| {
            b.put(attr::NAME, &v);
        });
        assert_eq!(parse_request(&padded), Err(Errno::ERANGE));
        let empty = attrs(|b| {
            b.put(attr::NAME, &[]);
        });
        assert_eq!(parse_request(&empty), Err(Errno::EINVAL));
    }

    #[test]
    fn integers_may_be_long_but_not_short() {
        let long = attrs(|b| {
            b.put(attr::L3PROTO, &[0, 2, 9, 9]).put(attr::L4PROTO, &[6, 1]);
        });
        let r = parse_request(&long).unwrap();
        assert_eq!((r.l3proto, r.l4proto), (Some(2), Some(6)));
        let short = attrs(|b| {
            b.put(attr::L3PROTO, &[2]);
        });
        assert_eq!(parse_request(&short), Err(Errno::ERANGE));
        let empty = attrs(|b| {
            b.put(attr::L4PROTO, &[]);
        });
        assert_eq!(parse_request(&empty), Err(Errno::ERANGE));
        let data = attrs(|b| {
            b.put(attr::DATA, &[1, 2]);
        });
        assert_eq!(parse_request(&data), Err(Errno::ERANGE));
    }

    #[test]
    fn data_members_follow_the_protocol() {
        let l = data_layout(17).unwrap();
        let d = attrs(|b| {
            b.put_be32(2, 99).put_be32(3, 5).put(9, &[1]).put_be32(1, 7);
        });
        assert_eq!(parse_data(l, &d), Ok(vec![(2, 99), (1, 7)]));
        let short = attrs(|b| {
            b.put(1, &[0, 0, 1]);
        });
        assert_eq!(parse_data(l, &short), Err(Errno::ERANGE));
        assert_eq!(data_layout(99), None);
    }

    #[test]
    fn object_layout() {
        let m = object_message(&Object { name: b"t", l3proto: 2, l4proto: 17, uses: 1, values: &[30, 120] }, 3, 100);
        let h = Header::parse(&m).unwrap();
        assert_eq!((h.kind, h.flags, h.len as usize), (0x800, 2, m.len()));
        assert_eq!(m.len(), 16 + 4 + 8 + 8 + 8 + 8 + 4 + 16);
    }

    #[test]
    fn state_names_cover_the_emitted_slots() {
        for l4 in 0..=255u8 {
            match (data_layout(l4), state_names(l4)) {
                (Some(l), Some(n)) => assert_eq!(usize::from(l.emitted), n.len(), "protocol {l4}"),
                (None, None) => {}
                (l, n) => panic!("protocol {l4}: layout {l:?}, names {n:?}"),
            }
        }
        assert_eq!(state_names(6).unwrap()[10], "UNACKNOWLEDGED");
        assert_eq!(state_names(132).unwrap()[8], "HEARTBEAT_ACKED");
    }

    #[test]
    fn requests_round_trip_through_the_kernel_parser() {
        let data = [(3u16, 100u32), (1, 7)];
        let f = Fields { name: Some(b"web"), l3proto: Some(10), l4proto: Some(6), data: Some(&data) };
        let m = request_message(MsgType::New, crate::netlink::flags::CREATE | crate::netlink::flags::ACK, 9, &f);
        let h = Header::parse(&m).unwrap();
        assert_eq!((h.kind, h.flags, h.seq, h.pid, h.len as usize), (0x800, 0x405, 9, 0, m.len()));
        let r = parse_request(&m[20..]).unwrap();
        assert_eq!((r.name, r.l3proto, r.l4proto), (Some(&b"web"[..]), Some(10), Some(6)));
        assert_eq!(parse_data(data_layout(6).unwrap(), r.data.unwrap()), Ok(data.to_vec()));
        // Only a name; no DATA for an empty list.
        let g = request_message(MsgType::Get, 0, 1, &Fields { name: Some(b"x"), data: Some(&[]), ..Fields::default() });
        assert_eq!(g.len(), 16 + 4 + 8);
        let r = parse_request(&g[20..]).unwrap();
        assert_eq!((r.name, r.l3proto, r.data), (Some(&b"x"[..]), None, None));
    }

    #[test]
    fn replies_parse_back() {
        let m = object_message(&Object { name: b"t", l3proto: 2, l4proto: 17, uses: 3, values: &[30, 120] }, 3, 100);
        let r = parse_reply(&m[16..]).unwrap();
        assert_eq!(
            r,
            Reply {
                name: Some(&b"t"[..]),
                l3proto: Some(2),
                l4proto: Some(17),
                uses: Some(3),
                data: Some(vec![(1, 30), (2, 120)])
            }
        );
        assert_eq!((r.value(2), r.value(3)), (Some(120), None));
        let d = defaults_message(10, 6, &[1, 2, 3], 1, 1);
        let r = parse_reply(&d[16..]).unwrap();
        assert_eq!((r.name, r.uses, r.l3proto, r.l4proto), (None, None, Some(10), Some(6)));
        assert_eq!(r.data, Some(vec![(1, 1), (2, 2), (3, 3)]));
        assert_eq!(parse_reply(&[0, 0]), None);
        let short = attrs(|b| {
            b.put(attr::L3PROTO, &[1]).put(attr::USE, &[0, 1]);
            let n = b.nest_start(attr::DATA);
            b.put(1, &[0, 0]).put_be32(2, 5);
            b.nest_end(n);
        });
        let mut payload = vec![0u8; 4];
        payload.extend_from_slice(&short);
        let r = parse_reply(&payload).unwrap();
        assert_eq!((r.l3proto, r.uses, r.data), (None, None, Some(vec![(2, 5)])));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128), l4 in any::<u8>()) {
            if let Ok(r) = parse_request(&bytes) {
                if let (Some(d), Some(l)) = (r.data, data_layout(l4)) {
                    let _ = parse_data(l, d);
                }
            }
            let _ = parse_reply(&bytes);
        }
    }
}

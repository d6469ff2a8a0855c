//! The netlink codec: message headers, `nfgenmsg`, attributes, and the error, ack and done
//! messages, byte-identical to what Linux builds.
//!
//! * [`Header`] is the 16-byte `struct nlmsghdr` (native byte order, as netlink is host-local).
//! * [`Messages`] walks the messages of one datagram the way the kernel's `netlink_rcv_skb` does and
//!   reports a malformed length as an [`Error`] value, after which the walk stops.
//! * [`Attrs`] walks attributes as `nla_for_each_attr` does (4-byte alignment, the type with
//!   `NLA_F_NESTED`/`NLA_F_NET_BYTEORDER` masked off); a nested attribute's payload is walked with
//!   another [`Attrs`].
//! * [`MessageBuilder`] emits a message attribute by attribute (`nlmsg_put`, `nla_put_*`,
//!   `nla_nest_start`/`nla_nest_end`, `nlmsg_end`); [`error_message`] and [`done_message`] build
//!   `NLMSG_ERROR` (an ack when the error is `None`) and `NLMSG_DONE` as `netlink_ack` and
//!   `netlink_dump_done` do.
//! * [`pack`] cuts a reply into datagrams of at most a reader's buffer size.

use crate::errno::Errno;

/// `NLMSG_HDRLEN`: the aligned size of `struct nlmsghdr`.
pub const HDRLEN: usize = 16;
/// `NLA_HDRLEN`: the aligned size of `struct nlattr`.
pub const NLA_HDRLEN: usize = 4;
/// Alignment of messages and attributes (`NLMSG_ALIGNTO`, `NLA_ALIGNTO`).
pub const ALIGNTO: usize = 4;

/// Rounds `len` up to the netlink alignment (`NLMSG_ALIGN`, `NLA_ALIGN`).
#[inline]
pub const fn align(len: usize) -> usize {
    (len + ALIGNTO - 1) & !(ALIGNTO - 1)
}

/// Message types below [`msg_type::MIN_TYPE`] are netlink's own control messages.
pub mod msg_type {
    pub const NOOP: u16 = 1;
    pub const ERROR: u16 = 2;
    pub const DONE: u16 = 3;
    pub const OVERRUN: u16 = 4;
    /// `NLMSG_MIN_TYPE`: the first type a protocol may use.
    pub const MIN_TYPE: u16 = 0x10;
}

/// `nlmsg_flags` bits.
pub mod flags {
    pub const REQUEST: u16 = 0x01;
    pub const MULTI: u16 = 0x02;
    pub const ACK: u16 = 0x04;
    pub const ECHO: u16 = 0x08;
    pub const DUMP_INTR: u16 = 0x10;
    pub const DUMP_FILTERED: u16 = 0x20;
    /// GET modifiers.
    pub const ROOT: u16 = 0x100;
    pub const MATCH: u16 = 0x200;
    pub const ATOMIC: u16 = 0x400;
    pub const DUMP: u16 = ROOT | MATCH;
    /// NEW modifiers.
    pub const REPLACE: u16 = 0x100;
    pub const EXCL: u16 = 0x200;
    pub const CREATE: u16 = 0x400;
    pub const APPEND: u16 = 0x800;
    /// Ack modifiers: the request payload is not echoed; extended-ack TLVs follow.
    pub const CAPPED: u16 = 0x100;
    pub const ACK_TLVS: u16 = 0x200;
}

/// Attribute type flag: the payload is a list of attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// Attribute type flag: the payload is in network byte order.
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
/// The attribute type without its flags.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// Byte offsets of `struct nlmsghdr`.
mod field {
    use std::ops::Range;
    pub(super) const LEN: Range<usize> = 0..4;
    pub(super) const TYPE: Range<usize> = 4..6;
    pub(super) const FLAGS: Range<usize> = 6..8;
    pub(super) const SEQ: Range<usize> = 8..12;
    pub(super) const PID: Range<usize> = 12..16;
    /// `struct nlattr`.
    pub(super) const NLA_LEN: Range<usize> = 0..2;
    pub(super) const NLA_TYPE: Range<usize> = 2..4;
    /// `struct nfgenmsg`.
    pub(super) const NFG_FAMILY: usize = 0;
    pub(super) const NFG_VERSION: usize = 1;
    pub(super) const NFG_RES_ID: Range<usize> = 2..4;
}

/// Why bytes are not a well-formed message or attribute list. Offsets are into the walked buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Fewer bytes than a header at `offset` (`have` of `need`).
    Truncated { offset: usize, need: usize, have: usize },
    /// A length field at `offset` says `len`, less than its own header or more than remains.
    BadLength { offset: usize, len: usize, remaining: usize },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Error::Truncated { offset, need, have } => {
                write!(f, "truncated at offset {offset}: {have} bytes, need {need}")
            }
            Error::BadLength { offset, len, remaining } => {
                write!(f, "bad length {len} at offset {offset} ({remaining} bytes remain)")
            }
        }
    }
}

impl std::error::Error for Error {}

fn u16_at(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[r]);
    u16::from_ne_bytes(a)
}

fn u32_at(b: &[u8], r: std::ops::Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[r]);
    u32::from_ne_bytes(a)
}

/// `struct nlmsghdr`, in host byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// `nlmsg_len`: header plus payload, without trailing padding.
    pub len: u32,
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// `nlmsg_pid`: the sender's port id (0 for the kernel) in requests, the requester's in replies.
    pub pid: u32,
}

impl Header {
    /// Reads the header at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<Header, Error> {
        if b.len() < HDRLEN {
            return Err(Error::Truncated { offset: 0, need: HDRLEN, have: b.len() });
        }
        Ok(Header {
            len: u32_at(b, field::LEN),
            kind: u16_at(b, field::TYPE),
            flags: u16_at(b, field::FLAGS),
            seq: u32_at(b, field::SEQ),
            pid: u32_at(b, field::PID),
        })
    }

    /// Writes the header into the first 16 bytes of `b` (which must hold them).
    pub fn emit(&self, b: &mut [u8]) {
        b[field::LEN].copy_from_slice(&self.len.to_ne_bytes());
        b[field::TYPE].copy_from_slice(&self.kind.to_ne_bytes());
        b[field::FLAGS].copy_from_slice(&self.flags.to_ne_bytes());
        b[field::SEQ].copy_from_slice(&self.seq.to_ne_bytes());
        b[field::PID].copy_from_slice(&self.pid.to_ne_bytes());
    }

    /// The 16 header bytes.
    pub fn to_bytes(&self) -> [u8; HDRLEN] {
        let mut b = [0u8; HDRLEN];
        self.emit(&mut b);
        b
    }
}

/// One message of a datagram: its header and its payload (`nlmsg_len - 16` bytes, no padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: Header,
    pub payload: &'a [u8],
    /// Offset of the message in the datagram.
    pub offset: usize,
}

/// The messages of one datagram, walked as `netlink_rcv_skb` walks them: while at least a header
/// remains, a message whose `nlmsg_len` is below 16 or beyond the datagram ends the walk (yielded
/// as an error); each message advances by its aligned length, capped at what remains. Trailing
/// bytes shorter than a header are reported as [`Error::Truncated`] and otherwise ignored.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Messages<'a> {
    pub fn new(datagram: &'a [u8]) -> Messages<'a> {
        Messages { buf: datagram, pos: 0, done: false }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let offset = self.pos;
        let header = match Header::parse(rest) {
            Ok(h) => h,
            Err(_) => {
                self.done = true;
                return Some(Err(Error::Truncated { offset, need: HDRLEN, have: rest.len() }));
            }
        };
        let len = header.len as usize;
        if len < HDRLEN || len > rest.len() {
            self.done = true;
            return Some(Err(Error::BadLength { offset, len, remaining: rest.len() }));
        }
        self.pos += align(len).min(rest.len());
        Some(Ok(Message { header, payload: &rest[HDRLEN..len], offset }))
    }
}

/// `struct nfgenmsg`: the 4 bytes that start every nfnetlink payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nfgenmsg {
    pub family: u8,
    pub version: u8,
    /// `res_id`, big-endian on the wire.
    pub res_id: u16,
}

impl Nfgenmsg {
    pub const LEN: usize = 4;

    pub fn parse(b: &[u8]) -> Result<Nfgenmsg, Error> {
        if b.len() < Self::LEN {
            return Err(Error::Truncated { offset: 0, need: Self::LEN, have: b.len() });
        }
        Ok(Nfgenmsg {
            family: b[field::NFG_FAMILY],
            version: b[field::NFG_VERSION],
            res_id: u16::from_be_bytes([b[field::NFG_RES_ID.start], b[field::NFG_RES_ID.start + 1]]),
        })
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let r = self.res_id.to_be_bytes();
        [self.family, self.version, r[0], r[1]]
    }
}

/// One attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The type with the flag bits masked off (`nla_type`).
    pub kind: u16,
    /// The raw `nla_type` field, flags included.
    pub raw_type: u16,
    /// `nla_len - 4` bytes.
    pub payload: &'a [u8],
    /// Offset of the attribute in the walked buffer.
    pub offset: usize,
}

impl Attr<'_> {
    /// `NLA_F_NESTED` is set.
    pub fn is_nested(&self) -> bool {
        self.raw_type & NLA_F_NESTED != 0
    }

    /// The attributes inside this one.
    pub fn nested(&self) -> Attrs<'_> {
        Attrs::new(self.payload)
    }
}

/// Attributes walked as `nla_for_each_attr` walks them: an attribute needs `nla_len >= 4` and
/// `nla_len <= remaining`, and the next starts at its aligned end. Bytes left when no further
/// attribute fits are yielded once as an error (the kernel warns and ignores them in non-strict
/// parsing), then the walk ends.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Attrs<'a> {
    pub fn new(buf: &'a [u8]) -> Attrs<'a> {
        Attrs { buf, pos: 0, done: false }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let offset = self.pos;
        let rest = &self.buf[offset..];
        if rest.len() < NLA_HDRLEN {
            self.done = true;
            return Some(Err(Error::Truncated { offset, need: NLA_HDRLEN, have: rest.len() }));
        }
        let len = usize::from(u16_at(rest, field::NLA_LEN));
        if len < NLA_HDRLEN || len > rest.len() {
            self.done = true;
            return Some(Err(Error::BadLength { offset, len, remaining: rest.len() }));
        }
        let raw_type = u16_at(rest, field::NLA_TYPE);
        // Past the end when the last attribute is unaligned: the walk then simply ends.
        self.pos += align(len);
        Some(Ok(Attr { kind: raw_type & NLA_TYPE_MASK, raw_type, payload: &rest[NLA_HDRLEN..len], offset }))
    }
}

/// Builds one message: `nlmsg_put`, then attributes, then [`MessageBuilder::finish`] (`nlmsg_end`).
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    /// A message with this header (its length is filled in by [`MessageBuilder::finish`]).
    pub fn new(kind: u16, flags: u16, seq: u32, pid: u32) -> MessageBuilder {
        let h = Header { len: 0, kind, flags, seq, pid };
        MessageBuilder { buf: h.to_bytes().to_vec() }
    }

    /// Appends `bytes` padded with zeros to the alignment (`nlmsg_append`, a family header).
    pub fn append(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Appends `struct nfgenmsg`.
    pub fn nfgenmsg(&mut self, g: Nfgenmsg) -> &mut Self {
        self.append(&g.to_bytes())
    }

    /// `nla_put`: an attribute of type `kind` (flags included) with `payload`, zero-padded.
    pub fn put(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = (NLA_HDRLEN + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.append(payload)
    }

    /// `nla_put_u8`.
    pub fn put_u8(&mut self, kind: u16, v: u8) -> &mut Self {
        self.put(kind, &[v])
    }

    /// `nla_put_be16`.
    pub fn put_be16(&mut self, kind: u16, v: u16) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }

    /// `nla_put_be32`.
    pub fn put_be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }

    /// `nla_put_string`: the bytes and a NUL.
    pub fn put_strz(&mut self, kind: u16, s: &[u8]) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s);
        v.push(0);
        self.put(kind, &v)
    }

    /// `nla_nest_start`: opens attribute `kind` with `NLA_F_NESTED` set, as the kernel's
    /// `nla_nest_start` does; returns the token for [`MessageBuilder::nest_end`].
    pub fn nest_start(&mut self, kind: u16) -> Nest {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        Nest(at)
    }

    /// `nla_nest_end`: the nest's length becomes everything written since it started.
    pub fn nest_end(&mut self, nest: Nest) -> &mut Self {
        let len = (self.buf.len() - nest.0) as u16;
        self.buf[nest.0..nest.0 + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// `nlmsg_end`: fills in `nlmsg_len` and returns the message.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[field::LEN].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// An open nested attribute (see [`MessageBuilder::nest_start`]).
#[derive(Debug)]
#[must_use = "close the nest with MessageBuilder::nest_end"]
pub struct Nest(usize);

/// `NLMSG_ERROR` as `netlink_ack` builds it for a socket without `NETLINK_EXT_ACK` and without
/// `NETLINK_CAP_ACK`: `error` `None` is an ack (error 0, `NLM_F_CAPPED`, only the request header
/// echoed); an errno is sent negated with the whole request (header and payload) echoed. The reply
/// goes to `portid` with the request's sequence number.
pub fn error_message(request: &Header, request_payload: &[u8], portid: u32, error: Option<Errno>) -> Vec<u8> {
    let (code, fl) = match error {
        None => (0i32, flags::CAPPED),
        Some(e) => (-e.0, 0),
    };
    let mut b = MessageBuilder::new(msg_type::ERROR, fl, request.seq, portid);
    b.append(&code.to_ne_bytes());
    b.append(&request.to_bytes());
    if error.is_some() {
        b.append(request_payload);
    }
    b.finish()
}

/// `NLMSG_DONE` as `netlink_dump_done` builds it: `NLM_F_MULTI`, the dump's status (0) as payload.
pub fn done_message(seq: u32, portid: u32) -> Vec<u8> {
    let mut b = MessageBuilder::new(msg_type::DONE, flags::MULTI, seq, portid);
    b.append(&0i32.to_ne_bytes());
    b.finish()
}

/// Splits `messages` into datagrams of at most `max` bytes at message boundaries, in order. A
/// message longer than `max` travels alone (the reader sees it truncated, as it would from the
/// kernel).
pub fn pack(messages: &[Vec<u8>], max: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for m in messages {
        if !cur.is_empty() && cur.len() + m.len() > max {
            out.push(std::mem::take(&mut cur));
        }
        cur.extend_from_slice(m);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(kind: u16, fl: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = MessageBuilder::new(kind, fl, 7, 0);
        b.append(payload);
        let mut v = b.finish();
        // nlmsg_len counts the unpadded payload.
        let len = (HDRLEN + payload.len()) as u32;
        v[0..4].copy_from_slice(&len.to_ne_bytes());
        v
    }

    #[test]
    fn header_round_trips() {
        let h = Header { len: 20, kind: 0x801, flags: 0x405, seq: 9, pid: 77 };
        assert_eq!(Header::parse(&h.to_bytes()), Ok(h));
        assert!(matches!(Header::parse(&[0; 15]), Err(Error::Truncated { have: 15, .. })));
    }

    #[test]
    fn walks_several_messages_and_stops_at_a_bad_length() {
        let mut d = msg(0x800, 1, &[0, 0, 0, 0, 1]);
        d.extend(msg(0x801, 1, &[2; 4]));
        let n = d.len();
        d.extend_from_slice(&[40, 0, 0, 0]);
        d.extend_from_slice(&[0; 12]);
        let got: Vec<_> = Messages::new(&d).collect();
        assert_eq!(got.len(), 3);
        let m0 = got[0].unwrap();
        assert_eq!((m0.header.kind, m0.payload.len(), m0.offset), (0x800, 5, 0));
        assert_eq!(got[1].unwrap().offset, 24);
        assert_eq!(got[2], Err(Error::BadLength { offset: n, len: 40, remaining: 16 }));
        // A short tail is reported, not parsed.
        let t: Vec<_> = Messages::new(&[1, 2, 3]).collect();
        assert_eq!(t, [Err(Error::Truncated { offset: 0, need: 16, have: 3 })]);
    }

    #[test]
    fn unaligned_last_message_is_capped_at_the_datagram() {
        let d = msg(0x800, 1, &[1, 2, 3, 4, 5]);
        let d = &d[..21];
        let got: Vec<_> = Messages::new(d).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].unwrap().payload, &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn attributes_mask_flags_and_nest() {
        let mut b = MessageBuilder::new(1, 0, 0, 0);
        b.put_strz(1, b"abc").put_be16(2, 10).put_u8(3, 6);
        let n = b.nest_start(4);
        b.put_be32(1, 30).put_be32(2, 180);
        b.nest_end(n);
        let m = b.finish();
        assert_eq!(m.len(), 16 + 8 + 8 + 8 + 4 + 16);
        let attrs: Vec<_> = Attrs::new(&m[16..]).map(|a| a.unwrap()).collect();
        assert_eq!(attrs.iter().map(|a| a.kind).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(attrs[0].payload, b"abc\0");
        assert_eq!(attrs[3].raw_type, 4 | NLA_F_NESTED);
        let inner: Vec<_> = attrs[3].nested().map(|a| a.unwrap().payload.to_vec()).collect();
        assert_eq!(inner, [vec![0, 0, 0, 30], vec![0, 0, 0, 180]]);
    }

    #[test]
    fn attribute_walk_reports_leftovers() {
        let b = [5u8, 0, 1, 0, 9, 0, 0, 0, 2, 0];
        let got: Vec<_> = Attrs::new(&b).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].unwrap().payload, &[9]);
        assert_eq!(got[1], Err(Error::Truncated { offset: 8, need: 4, have: 2 }));
        let bad = [3u8, 0, 1, 0];
        assert_eq!(Attrs::new(&bad).next(), Some(Err(Error::BadLength { offset: 0, len: 3, remaining: 4 })));
    }

    #[test]
    fn ack_and_error_formats() {
        let req = msg(0x800, 5, &[0, 0, 0, 0, 1]);
        let h = Header::parse(&req).unwrap();
        let ack = error_message(&h, &req[16..21], 42, None);
        assert_eq!(ack.len(), 36);
        let ah = Header::parse(&ack).unwrap();
        assert_eq!((ah.kind, ah.flags, ah.seq, ah.pid), (msg_type::ERROR, flags::CAPPED, 7, 42));
        assert_eq!(&ack[16..20], &0i32.to_ne_bytes());
        assert_eq!(&ack[20..36], &req[..16]);
        let err = error_message(&h, &req[16..21], 42, Some(Errno::EINVAL));
        assert_eq!(err.len(), 36 + 8);
        assert_eq!(Header::parse(&err).unwrap().flags, 0);
        assert_eq!(&err[16..20], &(-22i32).to_ne_bytes());
        assert_eq!(&err[36..41], &[0, 0, 0, 0, 1]);
        assert_eq!(&err[41..], &[0, 0, 0]);
        let done = done_message(7, 42);
        assert_eq!(done.len(), 20);
        assert_eq!(Header::parse(&done).unwrap().flags, flags::MULTI);
    }

    #[test]
    fn pack_respects_the_limit() {
        let ms: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; 1000]).collect();
        let d = pack(&ms, 4096);
        assert_eq!(d.iter().map(|d| d.len()).collect::<Vec<_>>(), [4000, 4000, 2000]);
        assert_eq!(pack(&[vec![0; 5000]], 4096).len(), 1);
        assert!(pack(&[], 4096).is_empty());
    }

    proptest! {
        #[test]
        fn walks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for m in Messages::new(&bytes).flatten() {
                for a in Attrs::new(m.payload).flatten() {
                    for _ in a.nested() {}
                }
            }
        }

        #[test]
        fn header_and_nfgenmsg_round_trip(len: u32, kind: u16, fl: u16, seq: u32, pid: u32, fam: u8, ver: u8, res: u16) {
            let h = Header { len, kind, flags: fl, seq, pid };
            prop_assert_eq!(Header::parse(&h.to_bytes()), Ok(h));
            let g = Nfgenmsg { family: fam, version: ver, res_id: res };
            prop_assert_eq!(Nfgenmsg::parse(&g.to_bytes()), Ok(g));
        }

        #[test]
        fn pack_keeps_every_byte(sizes in proptest::collection::vec(1usize..3000, 0..20), max in 1usize..8192) {
            let ms: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![1; n]).collect();
            let d = pack(&ms, max);
            prop_assert_eq!(d.iter().map(Vec::len).sum::<usize>(), sizes.iter().sum::<usize>());
            for x in &d {
                prop_assert!(x.len() <= max || sizes.contains(&x.len()));
            }
        }
    }
}

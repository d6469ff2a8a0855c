//! The control socket's private messages, and the netlink framing the socket loop needs itself.
//!
//! The control socket carries nfnetlink messages, one request datagram in, reply datagrams out,
//! exactly as a `NETLINK_NETFILTER` socket would. A few things a netlink socket gets from the kernel
//! (its port id, an explicit `bind`) and one daemon operation (reload) travel as messages of a
//! private nfnetlink subsystem, [`SUBSYS`] = `0xf0`, which the kernel does not use. Each starts with
//! `struct nfgenmsg` (family `AF_UNSPEC`, version 0, res_id 0) like every nfnetlink message;
//! attributes are netlink attributes with big-endian integers:
//!
//! | type | direction | meaning |
//! |---|---|---|
//! | `0xf000` [`MSG_HELLO`] | daemon → client | the first datagram of every connection: attribute [`ATTR_PORTID`] (be32) is the connection's netlink port id (what `getsockname` reports; replies carry it in `nlmsg_pid`) |
//! | `0xf001` [`MSG_BIND`] | client → daemon | `bind()` with an explicit `nl_pid`: [`ATTR_PORTID`]; answered with an ack, or `EADDRINUSE` if another connection has it, or `EINVAL` after the port id was already used by traffic or changed once |
//! | `0xf002` [`MSG_RELOAD`] | client → daemon | re-read the rule file (what `SIGHUP` does; `ferroctl reload`): answered with an ack, `EPERM` for an unprivileged peer, or `EINVAL` with the reason as an extended-ack text (`NLMSGERR_ATTR_MSG`, flag `NLM_F_ACK_TLVS`), `file:line:col: why` |
//!
//! Acks and errors are `NLMSG_ERROR` messages as the kernel builds them: the error (0 for an ack)
//! and the request's header (`NLM_F_CAPPED`: the request's payload is not echoed).
//!
//! These definitions belong in `proto::netlink` next to the cttimeout codec, where `ferroctl` and
//! the shim can share them; until then `ctl/` mirrors the constants.

/// `struct nlmsghdr` size.
pub const NLMSG_HDRLEN: usize = 16;
/// `NLMSG_ERROR`.
pub const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 4;
/// `NLM_F_CAPPED`: an ack or error quotes only the request's header.
pub const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: extended-ack attributes follow the quoted request.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: a NUL-terminated explanation.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

/// The private nfnetlink subsystem id.
pub const SUBSYS: u8 = 0xf0;
/// Daemon → client greeting carrying the port id.
pub const MSG_HELLO: u8 = 0;
/// Client → daemon: `bind()` to an explicit port id.
pub const MSG_BIND: u8 = 1;
/// Client → daemon: reload the rule file.
pub const MSG_RELOAD: u8 = 2;
/// be32 port id.
pub const ATTR_PORTID: u16 = 1;

/// The `nlmsg_type` of private command `cmd`.
pub const fn msg_type(cmd: u8) -> u16 {
    ((SUBSYS as u16) << 8) | cmd as u16
}

/// A netlink message header, host byte order as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub len: u32,
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
}

impl Header {
    /// The header at the start of `b`, if there are 16 bytes.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let h = b.get(..NLMSG_HDRLEN)?;
        let u32_at = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u16_at = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
        Some(Header { len: u32_at(0), ty: u16_at(4), flags: u16_at(6), seq: u32_at(8), pid: u32_at(12) })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_ne_bytes());
        out.extend_from_slice(&self.ty.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&self.pid.to_ne_bytes());
    }
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
}

fn finish(mut m: Vec<u8>) -> Vec<u8> {
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// A private message `cmd` with the nfgenmsg header and one be32 port-id attribute.
fn with_portid(cmd: u8, flags: u16, seq: u32, pid: u32, portid: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(28);
    Header { len: 0, ty: msg_type(cmd), flags, seq, pid }.emit(&mut m);
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    put_attr(&mut m, ATTR_PORTID, &portid.to_be_bytes());
    finish(m)
}

/// The greeting sent on every new connection.
pub fn hello(portid: u32) -> Vec<u8> {
    with_portid(MSG_HELLO, 0, 0, portid, portid)
}

/// A client's bind request (what the shim sends).
pub fn bind_request(seq: u32, portid: u32) -> Vec<u8> {
    with_portid(MSG_BIND, NLM_F_REQUEST | NLM_F_ACK, seq, 0, portid)
}

/// A reload request (what `ferroctl reload` sends).
pub fn reload_request(seq: u32, portid: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(20);
    Header { len: 0, ty: msg_type(MSG_RELOAD), flags: NLM_F_REQUEST | NLM_F_ACK, seq, pid: portid }.emit(&mut m);
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    finish(m)
}

/// The be32 [`ATTR_PORTID`] of a private message (after its nfgenmsg), if present.
pub fn portid_attr(msg: &[u8]) -> Option<u32> {
    let h = Header::parse(msg)?;
    let end = (h.len as usize).min(msg.len());
    let mut at = NLMSG_HDRLEN + 4;
    while at + 4 <= end {
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]) & 0x3fff;
        if len < 4 || at + len > end {
            return None;
        }
        if ty == ATTR_PORTID && len == 8 {
            return Some(u32::from_be_bytes([msg[at + 4], msg[at + 5], msg[at + 6], msg[at + 7]]));
        }
        at += align4(len);
    }
    None
}

/// Whether `datagram` starts with a message of the private subsystem.
pub fn is_private(datagram: &[u8]) -> bool {
    Header::parse(datagram).is_some_and(|h| (h.ty >> 8) as u8 == SUBSYS)
}

/// `NLMSG_ERROR` answering `req` (errno positive, 0 for an ack), quoting only its header, with an
/// optional extended-ack text.
pub fn error(req: &Header, portid: u32, errno: i32, text: Option<&str>) -> Vec<u8> {
    let mut flags = NLM_F_CAPPED;
    if text.is_some() {
        flags |= NLM_F_ACK_TLVS;
    }
    let mut m = Vec::with_capacity(64);
    Header { len: 0, ty: NLMSG_ERROR, flags, seq: req.seq, pid: portid }.emit(&mut m);
    m.extend_from_slice(&(-errno).to_ne_bytes());
    req.emit(&mut m);
    if let Some(t) = text {
        let mut s = t.as_bytes().to_vec();
        s.push(0);
        put_attr(&mut m, NLMSGERR_ATTR_MSG, &s);
    }
    finish(m)
}

/// An ack (`NLMSG_ERROR` with error 0).
pub fn ack(req: &Header, portid: u32) -> Vec<u8> {
    error(req, portid, 0, None)
}

/// The error and extended-ack text of an `NLMSG_ERROR` message: `(errno (positive), text)`.
pub fn parse_error(msg: &[u8]) -> Option<(i32, Option<String>)> {
    let h = Header::parse(msg)?;
    if h.ty != NLMSG_ERROR || msg.len() < NLMSG_HDRLEN + 4 + NLMSG_HDRLEN {
        return None;
    }
    let e = i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
    let quoted = Header::parse(&msg[20..])?;
    let mut at = 20 + if h.flags & NLM_F_CAPPED != 0 { NLMSG_HDRLEN } else { align4(quoted.len as usize) };
    let end = (h.len as usize).min(msg.len());
    let mut text = None;
    while h.flags & NLM_F_ACK_TLVS != 0 && at + 4 <= end {
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]);
        if len < 4 || at + len > end {
            break;
        }
        if ty == NLMSGERR_ATTR_MSG {
            let s = &msg[at + 4..at + len];
            let s = s.split(|&b| b == 0).next().unwrap_or(s);
            text = Some(String::from_utf8_lossy(s).into_owned());
        }
        at += align4(len);
    }
    Some((-e, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_carries_the_portid() {
        let m = hello(0xfffff000);
        assert!(is_private(&m));
        let h = Header::parse(&m).unwrap();
        assert_eq!((h.len as usize, h.ty, h.pid), (m.len(), 0xf000, 0xfffff000));
        assert_eq!(portid_attr(&m), Some(0xfffff000));
        assert_eq!(portid_attr(&bind_request(3, 77)), Some(77));
        assert_eq!(portid_attr(&reload_request(3, 77)), None);
    }

    #[test]
    fn errors_quote_the_header_and_carry_text() {
        let req = Header::parse(&reload_request(9, 5)).unwrap();
        let a = ack(&req, 5);
        assert_eq!(a.len(), 36);
        assert_eq!(parse_error(&a), Some((0, None)));
        let e = error(&req, 5, libc::EINVAL, Some("rules.conf:3:7: unknown word"));
        let h = Header::parse(&e).unwrap();
        assert_eq!((h.seq, h.pid, h.flags), (9, 5, NLM_F_CAPPED | NLM_F_ACK_TLVS));
        assert_eq!(e.len() % 4, 0);
        assert_eq!(parse_error(&e), Some((libc::EINVAL, Some("rules.conf:3:7: unknown word".to_owned()))));
    }
}

//! The cttimeout control plane: request bytes in, reply messages out, with the semantics and the
//! exact bytes of Linux 6.18's `nfnetlink` + `nfnetlink_cttimeout`.
//!
//! [`handle`] takes one request datagram, as the kernel's `nfnetlink_rcv` receives it, and returns
//! the messages the kernel would queue on the requester's socket, in order. It is a pure function
//! of the datagram and the registry, so golden vectors recorded from the kernel test it without a
//! socket (see the tests below and `tests/tests/cttimeout_bytes.rs`, which compares it with the
//! kernel live).
//!
//! The walk follows the kernel:
//! * `nfnetlink_rcv`: a datagram whose first message is cut short gets no answer; an unprivileged
//!   sender gets one `EPERM` error for the datagram (echoing its first message); a first message
//!   of type `NFNL_MSG_BATCH_BEGIN` starts a batch, which only nf_tables supports.
//! * `netlink_rcv_skb`: messages one by one until a malformed length; a message without
//!   `NLM_F_REQUEST` or of a control type (< 16) is not processed but acked if `NLM_F_ACK` asks.
//!   Every other message gets an ack when it asks for one, and an error whenever it fails.
//! * `nfnetlink_rcv_msg`: a payload shorter than `nfgenmsg` is skipped; an unknown subsystem or
//!   message type is `EINVAL`; attributes are validated before the handler runs.
//! * A dump (`GET` with `NLM_F_DUMP`) answers one `NEW`-typed message per policy, then
//!   `NLMSG_DONE`, never an ack. The kernel sends the first `NLMSG_GOODSIZE` bytes of a dump at
//!   once and the rest (with `NLMSG_DONE`) only as the reader drains its socket, so replies to
//!   later messages of the same datagram come in between; a second dump in the same datagram
//!   finds the first still running (`EBUSY`). Both are reproduced.
//!
//! ctnetlink requests (subsystems 1 and 2) are handed to [`crate::ctnetlink`] by [`handle_at`], which
//! also passes the time; [`handle`] serves cttimeout alone.
//!
//! Not reproduced: extended-ack TLVs (sent only to sockets that set `NETLINK_EXT_ACK`), and
//! nf_tables batches (answered as for a subsystem without batch support).

use proto::cttimeout::{self, data_layout, parse_data, parse_request, MsgType, Object, Request};
use proto::netlink::{self, error_message, flags, msg_type, Header, Message, Messages, Nfgenmsg, HDRLEN};
use proto::Errno;

use crate::conntrack::l4::Proto;
use crate::conntrack::Conntrack;
use crate::ctnetlink;
use crate::timeouts::{OnExisting, Policy, Registry};

/// What the handler works on: the named policies and the table holding the defaults.
pub struct Control<'a> {
    pub registry: &'a Registry,
    pub ct: &'a Conntrack,
}

/// Who sent the datagram.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The sender's netlink port id; replies carry it in `nlmsg_pid`, as the kernel fills in the
    /// requester's port id.
    pub portid: u32,
    /// The sender holds `CAP_NET_ADMIN` (else every datagram is answered `EPERM`).
    pub privileged: bool,
}

/// `NFNL_MSG_BATCH_BEGIN`.
const BATCH_BEGIN: u16 = msg_type::MIN_TYPE;
/// `NFNL_SUBSYS_COUNT` in Linux 6.18 (the last subsystem is `NFNL_SUBSYS_HOOK` = 12).
const SUBSYS_COUNT: u16 = 13;
/// `NFNL_SUBSYS_NFTABLES`.
const NFTABLES: u16 = 10;
/// `NFNL_BATCH_GENID`, the one batch attribute (`NLA_U32`).
const BATCH_GENID: u16 = 1;
/// `NLMSG_GOODSIZE` on a 4 KiB-page x86-64 kernel: the size of a dump's first datagram.
const DUMP_FIRST_CHUNK: usize = 4096 - 320;

/// Handles one request datagram; returns the reply messages in order (each one complete netlink message).
/// Serves cttimeout only: ctnetlink needs the time, see [`handle_at`].
pub fn handle(ctl: &Control<'_>, peer: Peer, datagram: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    for d in handle_inner(ctl, None, peer, datagram).datagrams {
        messages.extend(Messages::new(&d).flatten().map(|m| d[m.offset..m.offset + m.header.len as usize].to_vec()));
    }
    messages
}

/// The answer to one datagram: the reply datagrams the kernel would queue now, and the rest of a
/// running ctnetlink dump, which the caller produces chunk by chunk with
/// [`ctnetlink::Dump::next`] as the client reads.
///
/// For a datagram with ctnetlink requests, datagram boundaries are the kernel's, because its
/// clients see them: every unicast reply (an object a `GET` asked for) and every ack or error is a
/// datagram of its own, a dump's first chunk is one datagram (its rest may be longer than a
/// reader's buffer and is cut at message boundaries); libnfnetlink's queries read one datagram
/// and leave the next (an ack) for the next query. cttimeout answers (read by libmnl, which does
/// not care) are packed into as few datagrams of at most 4096 bytes as they fit, as before.
#[derive(Debug)]
pub struct Answer {
    pub datagrams: Vec<Vec<u8>>,
    pub dump: Option<ctnetlink::Dump>,
}

/// [`handle`] for every subsystem served, cttimeout and ctnetlink (conntrack and expectations),
/// with `env` giving the time and the workers' counters.
pub fn handle_at(ctl: &Control<'_>, env: &ctnetlink::Env<'_>, peer: Peer, datagram: &[u8]) -> Answer {
    handle_inner(ctl, Some(env), peer, datagram)
}

fn handle_inner(ctl: &Control<'_>, env: Option<&ctnetlink::Env<'_>>, peer: Peer, datagram: &[u8]) -> Answer {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let answer = |datagrams| Answer { datagrams, dump: None };
    // nfnetlink_rcv: the first message must be whole, or nothing is answered.
    let Ok(first) = Header::parse(datagram) else { return answer(out) };
    let first_len = first.len as usize;
    if first_len < HDRLEN || first_len > datagram.len() {
        return answer(out);
    }
    if !peer.privileged {
        out.push(error_message(&first, &datagram[HDRLEN..first_len], peer.portid, Some(Errno::EPERM)));
        return answer(out);
    }
    if first.kind == BATCH_BEGIN {
        if let Some(e) = batch_error(&first, datagram) {
            out.push(error_message(&first, &datagram[HDRLEN..first_len], peer.portid, Some(e)));
        }
        return answer(out);
    }

    // The part of a running dump the kernel sends only after this datagram was processed.
    let mut deferred: Option<Vec<Vec<u8>>> = None;
    // A running ctnetlink dump, whose rest is produced as the client reads.
    let mut stream: Option<ctnetlink::Dump> = None;
    let mut ctnetlink_seen = false;
    for m in Messages::new(datagram) {
        let Ok(m) = m else { break };
        let h = m.header;
        ctnetlink_seen |=
            env.is_some() && matches!((h.kind >> 8) as u8, proto::ctnetlink::SUBSYS | proto::ctnetlink::SUBSYS_EXP);
        let result = if h.flags & flags::REQUEST == 0 || h.kind < msg_type::MIN_TYPE {
            Ok(())
        } else {
            let dumping = deferred.is_some() || stream.is_some();
            // What this message produced: unicast replies (a datagram each), or a dump's first chunk.
            let mut replies = Vec::new();
            match message(ctl, env, peer, &m, &mut replies, dumping) {
                Outcome::Done(r) => {
                    out.extend(replies);
                    r
                }
                Outcome::Dump(rest) => {
                    out.push(replies.concat());
                    deferred = rest;
                    continue;
                }
                Outcome::Stream(d) => {
                    out.push(replies.concat());
                    stream = d;
                    continue;
                }
            }
        };
        match result {
            Ok(()) if h.flags & flags::ACK == 0 => {}
            Ok(()) => out.push(error_message(&h, m.payload, peer.portid, None)),
            Err(e) => out.push(error_message(&h, m.payload, peer.portid, Some(e))),
        }
    }
    if let Some(rest) = deferred {
        out.push(rest.concat());
    }
    if !ctnetlink_seen {
        let messages: Vec<Vec<u8>> = out
            .iter()
            .flat_map(|d| Messages::new(d).flatten().map(|m| d[m.offset..m.offset + m.header.len as usize].to_vec()))
            .collect();
        out = netlink::pack(&messages, PACK_MAX);
    }
    Answer { datagrams: out, dump: stream }
}

/// The largest datagram packed replies are cut into: libmnl's receive buffer on x86.
const PACK_MAX: usize = 4096;

/// `nfnetlink_rcv_skb_batch` + `nfnetlink_rcv_batch` up to their first checks: the error, if
/// any, for a batch whose first message is `first` (only nf_tables supports batches; ferrowall has
/// none to offer).
fn batch_error(first: &Header, datagram: &[u8]) -> Option<Errno> {
    let g = Nfgenmsg::parse(datagram.get(HDRLEN..)?).ok()?;
    // Attributes from the aligned end of nfgenmsg to nlmsg_len (none if it ends before).
    let attrs = datagram.get(HDRLEN + Nfgenmsg::LEN..first.len as usize).unwrap_or(&[]);
    for a in netlink::Attrs::new(attrs).map_while(Result::ok) {
        if a.kind == BATCH_GENID && a.payload.len() < 4 {
            return Some(Errno::ERANGE);
        }
    }
    // Old nft sent res_id in host byte order; the kernel accepts that spelling of nf_tables.
    let res_id = if g.res_id == NFTABLES.swap_bytes() { NFTABLES } else { g.res_id };
    if res_id >= SUBSYS_COUNT {
        return Some(Errno::EINVAL);
    }
    Some(Errno::EOPNOTSUPP)
}

enum Outcome {
    /// Processed: acked or answered with an error by the caller.
    Done(Result<(), Errno>),
    /// A dump started (never acked); `Some` holds what the kernel sends after the datagram.
    Dump(Option<Vec<Vec<u8>>>),
    /// A ctnetlink dump started (never acked); `Some` holds its cursor.
    Stream(Option<ctnetlink::Dump>),
}

/// `nfnetlink_rcv_msg` and the cttimeout handlers for one request message.
fn message(
    ctl: &Control<'_>,
    env: Option<&ctnetlink::Env<'_>>,
    peer: Peer,
    m: &Message<'_>,
    out: &mut Vec<Vec<u8>>,
    dumping: bool,
) -> Outcome {
    let h = &m.header;
    if m.payload.len() < Nfgenmsg::LEN {
        return Outcome::Done(Ok(()));
    }
    let subsys = (h.kind >> 8) as u8;
    if let (Some(env), proto::ctnetlink::SUBSYS | proto::ctnetlink::SUBSYS_EXP) = (env, subsys) {
        return match ctnetlink::message(ctl.ct, env, m, peer.portid, dumping, out) {
            Ok(ctnetlink::Handled::Ack) => Outcome::Done(Ok(())),
            Ok(ctnetlink::Handled::Dump(d)) => Outcome::Stream(d),
            Err(e) => Outcome::Done(Err(e)),
        };
    }
    if subsys != cttimeout::SUBSYS {
        return Outcome::Done(Err(Errno::EINVAL));
    }
    let t = MsgType::from_u8(h.kind as u8);
    if t.to_u8() >= MsgType::COUNT {
        return Outcome::Done(Err(Errno::EINVAL));
    }
    // Attributes start at NLMSG_ALIGN(sizeof(nfgenmsg)) after the header.
    let req = match parse_request(&m.payload[Nfgenmsg::LEN..]) {
        Ok(r) => r,
        Err(e) => return Outcome::Done(Err(e)),
    };
    let (seq, portid) = (h.seq, peer.portid);
    Outcome::Done(match t {
        MsgType::New => new(ctl, h.flags, &req),
        MsgType::Get if h.flags & flags::DUMP != 0 => {
            if dumping {
                return Outcome::Done(Err(Errno::EBUSY));
            }
            return dump(ctl, seq, portid, out);
        }
        MsgType::Get => get(ctl, &req, seq, portid, out),
        MsgType::Delete => delete(ctl, &req),
        MsgType::DefaultSet => default_set(ctl, &req),
        MsgType::DefaultGet => default_get(ctl, &req, seq, portid, out),
        MsgType::Other(_) => Err(Errno::EINVAL),
    })
}

/// `cttimeout_new_timeout`.
fn new(ctl: &Control<'_>, fl: u16, req: &Request<'_>) -> Result<(), Errno> {
    let (Some(name), Some(l3), Some(l4), Some(data)) = (req.name, req.l3proto, req.l4proto, req.data) else {
        return Err(Errno::EINVAL);
    };
    let name = names::decode(name);
    let on_existing = if fl & flags::EXCL != 0 {
        OnExisting::Fail
    } else if fl & flags::REPLACE != 0 {
        OnExisting::Replace
    } else {
        OnExisting::Busy
    };
    // The kernel decides what to do with an existing name before it parses the values, and checks
    // the protocol of a new one before that too: errors come in that order.
    let l4_for_data = match ctl.registry.find(&name) {
        Some(p) => match on_existing {
            OnExisting::Fail => return Err(Errno::EEXIST),
            OnExisting::Busy => return Err(Errno::EBUSY),
            OnExisting::Replace if p.l3num != l3 || p.proto.number() != l4 => return Err(Errno::EINVAL),
            OnExisting::Replace => p.proto.number(),
        },
        None => l4,
    };
    let layout = data_layout(l4_for_data).filter(|_| Proto::supported(l4_for_data).is_some());
    let attrs = parse_data(layout.ok_or(Errno::EOPNOTSUPP)?, data)?;
    ctl.registry.create(ctl.ct, &name, l3, l4, &attrs, on_existing)
}

fn object_of(p: &Policy, seq: u32, portid: u32) -> Vec<u8> {
    let values = p.values.snapshot(p.slots());
    let name = names::encode(&p.name);
    cttimeout::object_message(
        &Object { name: &name, l3proto: p.l3num, l4proto: p.proto.number(), uses: p.uses(), values: &values },
        seq,
        portid,
    )
}

/// `cttimeout_get_timeout` without `NLM_F_DUMP`: the object, then the caller's ack if asked.
fn get(ctl: &Control<'_>, req: &Request<'_>, seq: u32, portid: u32, out: &mut Vec<Vec<u8>>) -> Result<(), Errno> {
    let name = req.name.ok_or(Errno::EINVAL)?;
    let p = ctl.registry.find(&names::decode(name)).ok_or(Errno::ENOENT)?;
    out.push(object_of(&p, seq, portid));
    Ok(())
}

/// `ctnl_timeout_dump` driven by `netlink_dump`: the first `NLMSG_GOODSIZE` bytes of objects now,
/// the others and `NLMSG_DONE` after the datagram. An empty registry finishes at once.
fn dump(ctl: &Control<'_>, seq: u32, portid: u32, out: &mut Vec<Vec<u8>>) -> Outcome {
    let list = ctl.registry.list();
    if list.is_empty() {
        out.push(netlink::done_message(seq, portid));
        return Outcome::Dump(None);
    }
    let mut used = 0;
    let mut rest = Vec::new();
    for p in list.iter() {
        let m = object_of(p, seq, portid);
        if rest.is_empty() && used + m.len() <= DUMP_FIRST_CHUNK {
            used += m.len();
            out.push(m);
        } else {
            rest.push(m);
        }
    }
    rest.push(netlink::done_message(seq, portid));
    Outcome::Dump(Some(rest))
}

/// `cttimeout_del_timeout`: by name, or every unused policy without one.
fn delete(ctl: &Control<'_>, req: &Request<'_>) -> Result<(), Errno> {
    match req.name {
        None => {
            ctl.registry.flush(ctl.ct);
            Ok(())
        }
        Some(name) => ctl.registry.delete(ctl.ct, &names::decode(name)),
    }
}

/// `cttimeout_default_set`: L4PROTO and DATA required (L3PROTO ignored).
fn default_set(ctl: &Control<'_>, req: &Request<'_>) -> Result<(), Errno> {
    let (Some(l4), Some(data)) = (req.l4proto, req.data) else { return Err(Errno::EINVAL) };
    let layout = data_layout(l4).filter(|_| Proto::supported(l4).is_some()).ok_or(Errno::EOPNOTSUPP)?;
    let attrs = parse_data(layout, data)?;
    ctl.registry.default_set(ctl.ct, l4, &attrs)
}

/// `cttimeout_default_get`: answered with a `DEFAULT_SET`-typed message.
fn default_get(
    ctl: &Control<'_>,
    req: &Request<'_>,
    seq: u32,
    portid: u32,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), Errno> {
    let (Some(l3), Some(l4)) = (req.l3proto, req.l4proto) else { return Err(Errno::EINVAL) };
    let values = ctl.registry.default_get(ctl.ct, l4)?;
    out.push(cttimeout::defaults_message(l3, l4, &values, seq, portid));
    Ok(())
}

/// Policy names are bytes on the wire (anything but NUL, at most 31) and `String`s in the registry.
/// Valid UTF-8 maps to itself; every other byte, and the bytes of any character in the escape
/// block U+F700..U+F7FF, maps to the character U+F700 + byte. The mapping is a bijection, so every
/// name the kernel accepts round-trips exactly, and names written in rule files (UTF-8) are unchanged.
pub mod names {
    const ESCAPE: u32 = 0xF700;

    fn escaped(c: char) -> bool {
        (ESCAPE..ESCAPE + 0x100).contains(&u32::from(c))
    }

    fn push_bytes(s: &mut String, bytes: &[u8]) {
        for &b in bytes {
            s.push(char::from_u32(ESCAPE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER));
        }
    }

    /// The registry's name for wire bytes.
    pub fn decode(mut bytes: &[u8]) -> String {
        let mut s = String::with_capacity(bytes.len());
        while !bytes.is_empty() {
            let (good, bad) = match std::str::from_utf8(bytes) {
                Ok(all) => (all, 0),
                Err(e) => {
                    let good = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("");
                    (good, e.error_len().unwrap_or(bytes.len() - e.valid_up_to()))
                }
            };
            for c in good.chars() {
                if escaped(c) {
                    let mut buf = [0u8; 4];
                    push_bytes(&mut s, c.encode_utf8(&mut buf).as_bytes());
                } else {
                    s.push(c);
                }
            }
            let at = good.len();
            push_bytes(&mut s, &bytes[at..at + bad]);
            bytes = &bytes[at + bad..];
        }
        s
    }

    /// The wire bytes of a registry name.
    pub fn encode(name: &str) -> Vec<u8> {
        let mut v = Vec::with_capacity(name.len());
        for c in name.chars() {
            if escaped(c) {
                v.push((u32::from(c) - ESCAPE) as u8);
            } else {
                let mut buf = [0u8; 4];
                v.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{Config, DEFAULT_MAX};

    /// One recorded exchange with Linux 6.18 (x86-64, so native-endian headers are little-endian):
    /// the request datagram, sent on a fresh `NETLINK_NETFILTER` socket in a fresh network
    /// namespace whose kernel-assigned port id was `portid`, and every message the kernel queued
    /// in reply. Recorded with
    /// `CTTIMEOUT_BYTES_RECORD=1 cargo test -p ferrowall-tests --test cttimeout_bytes -- --nocapture`;
    /// the requests are built by the case of the same name in tests/tests/cttimeout_bytes.rs.
    struct Golden {
        privileged: bool,
        portid: u32,
        request: &'static [u8],
        replies: &'static [&'static [u8]],
    }

    /// Replays a recorded sequence on a fresh registry and table.
    fn replay(name: &str, steps: &[Golden]) {
        let (registry, ct) = (Registry::new(), Conntrack::new(DEFAULT_MAX, Config::default()));
        let ctl = Control { registry: &registry, ct: &ct };
        for (i, g) in steps.iter().enumerate() {
            let got = handle(&ctl, Peer { portid: g.portid, privileged: g.privileged }, g.request);
            let want: Vec<Vec<u8>> = g.replies.iter().map(|r| r.to_vec()).collect();
            assert_eq!(got, want, "{name} step {i}");
        }
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn golden_vectors_from_the_kernel() {
        replay("new_get_udp_inet", NEW_GET_UDP_INET);
        replay("existing_name_flags", EXISTING_NAME_FLAGS);
        replay("unprivileged", UNPRIVILEGED);
        replay("default_set_sctp", DEFAULT_SET_SCTP);
    }

    fn ctl_parts() -> (Registry, Conntrack) {
        (Registry::new(), Conntrack::new(DEFAULT_MAX, Config::default()))
    }

    fn req(kind: u16, fl: u16, seq: u32, f: impl FnOnce(&mut netlink::MessageBuilder)) -> Vec<u8> {
        let mut b = netlink::MessageBuilder::new(kind, fl, seq, 0);
        b.nfgenmsg(Nfgenmsg::default());
        f(&mut b);
        b.finish()
    }

    #[test]
    fn dump_of_many_is_split_at_goodsize_and_done_comes_last() {
        let (registry, ct) = ctl_parts();
        let ctl = Control { registry: &registry, ct: &ct };
        let peer = Peer { portid: 9, privileged: true };
        for i in 0..100 {
            registry.create(&ct, &format!("p{i}"), 2, 6, &[], OnExisting::Busy).unwrap();
        }
        let dump = req(cttimeout::nlmsg_type(MsgType::Get), flags::REQUEST | flags::DUMP, 1, |_| {});
        let get = req(cttimeout::nlmsg_type(MsgType::DefaultGet), flags::REQUEST, 2, |b| {
            b.put_be16(cttimeout::attr::L3PROTO, 2).put_u8(cttimeout::attr::L4PROTO, 1);
        });
        let out = handle(&ctl, peer, &[dump.clone(), get, dump].concat());
        // 100 objects, the default-get answer, EBUSY for the second dump, NLMSG_DONE.
        assert_eq!(out.len(), 103);
        let kinds: Vec<u16> = out.iter().map(|m| Header::parse(m).unwrap().kind).collect();
        let first_chunk = out.iter().take_while(|m| Header::parse(m).unwrap().kind == 0x800).count();
        assert!(out[..first_chunk].iter().map(Vec::len).sum::<usize>() <= DUMP_FIRST_CHUNK);
        assert_eq!(kinds[first_chunk], 0x803);
        assert_eq!(kinds[first_chunk + 1], msg_type::ERROR);
        assert_eq!(kinds[102], msg_type::DONE);
    }

    #[test]
    fn no_input_panics_and_garbage_gets_no_answer() {
        let (registry, ct) = ctl_parts();
        let ctl = Control { registry: &registry, ct: &ct };
        let peer = Peer { portid: 1, privileged: true };
        assert!(handle(&ctl, peer, &[]).is_empty());
        assert!(handle(&ctl, peer, &[0xff; 15]).is_empty());
        let mut x: u32 = 1;
        for n in 0..2000usize {
            let mut d: Vec<u8> = (0..n % 97)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            if d.len() >= 8 {
                let len = d.len() as u32;
                d[0..4].copy_from_slice(&len.to_ne_bytes());
                d[4] = (n % 7) as u8;
                d[5] = 8;
                d[6] |= 1;
            }
            let _ = handle(&ctl, peer, &d);
        }
    }

    #[test]
    fn names_round_trip() {
        for n in [&b"plain"[..], b"caf\xc3\xa9", b"\xff\xfe", b"a\xef\x9c\x80b", b"\xc3"] {
            assert_eq!(names::encode(&names::decode(n)), n);
        }
        assert_eq!(names::decode(b"plain"), "plain");
    }

    /// `new_get_udp_inet` in tests/tests/cttimeout_bytes.rs.
    #[rustfmt::skip]
    const NEW_GET_UDP_INET: &[Golden] = &[
        // NEW "pol" inet udp {UNREPLIED 1001}, REQUEST|ACK|CREATE: ack
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x38, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0x70, 0x6f, 0x6c, 0x00, 0x06, 0x00, 0x02, 0x00,
                0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x11, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x04, 0x80,
                0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0xe9,
            ],
            replies: &[
                &[
                    0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x38, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x04, 0x01, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00,
                ],
            ],
        },
        // GET "pol": the object (NLM_F_MULTI), then the ack
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x1c, 0x00, 0x00, 0x00, 0x01, 0x08, 0x05, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0x70, 0x6f, 0x6c, 0x00,
            ],
            replies: &[
                &[
                    0x48, 0x00, 0x00, 0x00, 0x00, 0x08, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0x70, 0x6f, 0x6c, 0x00, 0x06, 0x00, 0x02, 0x00,
                    0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x11, 0x00, 0x00, 0x00, 0x08, 0x00, 0x05, 0x00,
                    0x00, 0x00, 0x00, 0x01, 0x14, 0x00, 0x04, 0x80, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0xe9,
                    0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x78,
                ],
                &[
                    0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x01, 0x08, 0x05, 0x00, 0x02, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00,
                ],
            ],
        },
        // GET with NLM_F_DUMP: one object, NLMSG_DONE, no ack
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x14, 0x00, 0x00, 0x00, 0x01, 0x08, 0x05, 0x03, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00,
            ],
            replies: &[
                &[
                    0x48, 0x00, 0x00, 0x00, 0x00, 0x08, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0x70, 0x6f, 0x6c, 0x00, 0x06, 0x00, 0x02, 0x00,
                    0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x11, 0x00, 0x00, 0x00, 0x08, 0x00, 0x05, 0x00,
                    0x00, 0x00, 0x00, 0x01, 0x14, 0x00, 0x04, 0x80, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0xe9,
                    0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x78,
                ],
                &[
                    0x14, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00,
                ],
            ],
        },
        // DEFAULT_GET inet udp: answered DEFAULT_SET-typed, then the ack
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x24, 0x00, 0x00, 0x00, 0x04, 0x08, 0x05, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00,
                0x11, 0x00, 0x00, 0x00,
            ],
            replies: &[
                &[
                    0x38, 0x00, 0x00, 0x00, 0x03, 0x08, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00,
                    0x11, 0x00, 0x00, 0x00, 0x14, 0x00, 0x04, 0x80, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x1e,
                    0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x78,
                ],
                &[
                    0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00, 0x04, 0x08, 0x05, 0x00, 0x04, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00,
                ],
            ],
        },
    ];

    /// `existing_name_flags` in tests/tests/cttimeout_bytes.rs.
    #[rustfmt::skip]
    const EXISTING_NAME_FLAGS: &[Golden] = &[
        // NEW "t" inet tcp {ESTABLISHED 100}: ack
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x38, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
                0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x04, 0x80,
                0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x64,
            ],
            replies: &[
                &[
                    0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x38, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x04, 0x01, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00,
                ],
            ],
        },
        // NEW "t" again, no EXCL/REPLACE: EBUSY, the request echoed
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x38, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
                0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x04, 0x80,
                0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0xc8,
            ],
            replies: &[
                &[
                    0x4c, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0xf0, 0xff, 0xff, 0xff, 0x38, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x04, 0x02, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00,
                    0x06, 0x00, 0x02, 0x00, 0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00,
                    0x0c, 0x00, 0x04, 0x80, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0xc8,
                ],
            ],
        },
        // NEW "t" with EXCL: EEXIST
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x38, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x06, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
                0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x04, 0x80,
                0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x2c,
            ],
            replies: &[
                &[
                    0x4c, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0xef, 0xff, 0xff, 0xff, 0x38, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x06, 0x03, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00,
                    0x06, 0x00, 0x02, 0x00, 0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00,
                    0x0c, 0x00, 0x04, 0x80, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x2c,
                ],
            ],
        },
        // NEW "t" with EXCL|REPLACE: EXCL wins, EEXIST
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x38, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
                0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x04, 0x80,
                0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x2c,
            ],
            replies: &[
                &[
                    0x4c, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0xef, 0xff, 0xff, 0xff, 0x38, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x03, 0x04, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00,
                    0x06, 0x00, 0x02, 0x00, 0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00,
                    0x0c, 0x00, 0x04, 0x80, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x2c,
                ],
            ],
        },
        // NEW "t" with REPLACE {ESTABLISHED 400, SYN_SENT 1}: ack
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x40, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x01, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
                0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x14, 0x00, 0x04, 0x80,
                0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x90, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01,
            ],
            replies: &[
                &[
                    0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01, 0x05, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x01, 0x05, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00,
                ],
            ],
        },
        // GET "t" after a REPLACE with {ESTABLISHED 400, SYN_SENT 1}
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x1c, 0x00, 0x00, 0x00, 0x01, 0x08, 0x05, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00,
            ],
            replies: &[
                &[
                    0x90, 0x00, 0x00, 0x00, 0x00, 0x08, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
                    0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x08, 0x00, 0x05, 0x00,
                    0x00, 0x00, 0x00, 0x01, 0x5c, 0x00, 0x04, 0x80, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01,
                    0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x3c, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x90,
                    0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x78, 0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x3c,
                    0x08, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x1e, 0x08, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x78,
                    0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x08, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x78,
                    0x08, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x2c, 0x08, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x01, 0x2c,
                ],
                &[
                    0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01, 0x06, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x01, 0x08, 0x05, 0x00, 0x06, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00,
                ],
            ],
        },
        // NEW "t" with REPLACE but inet6: EINVAL
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x30, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x01, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
                0x00, 0x0a, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0x00, 0x04, 0x80,
            ],
            replies: &[
                &[
                    0x44, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0xea, 0xff, 0xff, 0xff, 0x30, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x01, 0x07, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x74, 0x00, 0x00, 0x00,
                    0x06, 0x00, 0x02, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00,
                    0x04, 0x00, 0x04, 0x80,
                ],
            ],
        },
    ];

    /// `unprivileged` in tests/tests/cttimeout_bytes.rs.
    #[rustfmt::skip]
    const UNPRIVILEGED: &[Golden] = &[
        // NEW "np" + GET "np" in one datagram, sender without CAP_NET_ADMIN: one EPERM for the datagram
        Golden {
            privileged: false,
            portid: 6654,
            request: &[
                0x30, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x01, 0x00, 0x6e, 0x70, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00,
                0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0x00, 0x04, 0x80,
                0x1c, 0x00, 0x00, 0x00, 0x01, 0x08, 0x05, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x01, 0x00, 0x6e, 0x70, 0x00, 0x00,
            ],
            replies: &[
                &[
                    0x44, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0xff, 0xff, 0xff, 0xff, 0x30, 0x00, 0x00, 0x00, 0x00, 0x08, 0x05, 0x04, 0x01, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x01, 0x00, 0x6e, 0x70, 0x00, 0x00,
                    0x06, 0x00, 0x02, 0x00, 0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00,
                    0x04, 0x00, 0x04, 0x80,
                ],
            ],
        },
    ];

    /// `default_set_sctp` in tests/tests/cttimeout_bytes.rs.
    #[rustfmt::skip]
    const DEFAULT_SET_SCTP: &[Golden] = &[
        // DEFAULT_SET sctp with ids 1..8 = 7*id: ack
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x68, 0x00, 0x00, 0x00, 0x03, 0x08, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00,
                0x84, 0x00, 0x00, 0x00, 0x44, 0x00, 0x04, 0x80, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x07,
                0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0e, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x15,
                0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x1c, 0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x23,
                0x08, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x08, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x31,
                0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x38,
            ],
            replies: &[
                &[
                    0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x68, 0x00, 0x00, 0x00, 0x03, 0x08, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00,
                ],
            ],
        },
        // DEFAULT_GET inet sctp: nine values, the ninth (HEARTBEAT_ACKED) 0
        Golden {
            privileged: true,
            portid: 6654,
            request: &[
                0x24, 0x00, 0x00, 0x00, 0x04, 0x08, 0x05, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00,
                0x84, 0x00, 0x00, 0x00,
            ],
            replies: &[
                &[
                    0x70, 0x00, 0x00, 0x00, 0x03, 0x08, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00,
                    0x84, 0x00, 0x00, 0x00, 0x4c, 0x00, 0x04, 0x80, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x07,
                    0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0e, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x15,
                    0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x1c, 0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x23,
                    0x08, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x08, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x31,
                    0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x38, 0x08, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00,
                ],
                &[
                    0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0xfe, 0x19, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00, 0x04, 0x08, 0x05, 0x00, 0x02, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00,
                ],
            ],
        },
    ];
}

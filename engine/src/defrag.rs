//! IPv4 and IPv6 reassembly ahead of tracking, as the kernel's `nf_defrag_ipv4` (through
//! `ip_fragment.c`) and `nf_defrag_ipv6` (`nf_conntrack_reasm.c`) do it, so that a fragmented
//! datagram is tracked once, whole, when its last missing fragment arrives.
//!
//! [`Defrag`] belongs to one worker and does no I/O: each fragment goes in through
//! [`Defrag::push`] with the time, and comes back held, dropped, or completing a datagram that is
//! returned whole. [`Defrag::expire`] drops queues that waited too long.
//!
//! Linux 6.18 behaviours reproduced:
//! * Queues are keyed by (source, destination, identification, protocol) for IPv4 and
//!   (source, destination, identification) for IPv6 (the kernel's `frag_v4_compare_key` and
//!   `frag_v6_compare_key`, less the defrag user and interface, which are fixed for us).
//! * A queue lives for a fixed time from its first fragment (`ipfrag_time`, 30 s;
//!   `nf_conntrack_frag6_timeout`, 60 s); later fragments do not extend it.
//! * Overlaps: a fragment lying wholly inside data already held (in one "run" of contiguous
//!   fragments, as `inet_frag_queue_insert` tracks them) is a duplicate and is dropped alone; any
//!   other overlap discards the whole datagram, for IPv6 (RFC 5722) and IPv4 alike.
//! * Length rules: a last fragment that disagrees with the length already known, or data beyond
//!   the end of a datagram whose last fragment was seen, or an empty fragment, discards the IPv4
//!   datagram but only the IPv6 fragment. An IPv4 fragment that is not the last is cut down to a
//!   multiple of 8 bytes; an IPv6 one that is not a multiple of 8 discards its queue and is passed
//!   on as it is (the IPv6 stack then answers with a parameter problem).
//! * Limits: a datagram longer than 65535 bytes (IPv4 total length, IPv6 payload length) is
//!   discarded; while the memory held for a family is above its high threshold
//!   (`ipfrag_high_thresh`, `nf_conntrack_frag6_high_thresh`: 4 MiB) every fragment of that
//!   family is dropped. Memory is counted as the kernel counts it: the fragments' buffer sizes
//!   (`truesize`, approximated here) plus a queue's own size.
//! * ECN: fragments mixing "not ECN-capable" with ECN-capable code points discard the datagram; a
//!   CE mark on any fragment of an ECN-capable datagram marks the whole datagram.
//! * The reassembled datagram carries the first fragment's headers (IPv4 options, IPv6 extension
//!   headers before the fragment header); IPv4 gets its length, checksum and fragment field
//!   rewritten (DF set when the largest fragment had DF), IPv6 loses its fragment header and gets
//!   its payload length fixed.
//!
//! Not modelled: IPv4's `ipfrag_max_dist` (a per-source-host count of fragments from other
//! datagrams, reset from inet_peer state), and the IPv6 "atomic fragment" (offset 0, no more
//! fragments), which the parser already reports as a whole datagram and which the kernel passes
//! through its queue only to strip the fragment header.

use std::collections::HashMap;

use proto::checksum;
use proto::packet::{Family, Packet};

use crate::clock::Timestamp;

/// Defragmentation limits, the kernel's sysctls. Defaults are this machine's values.
#[derive(Debug, Clone)]
pub struct DefragConfig {
    /// `net.ipv4.ipfrag_high_thresh`: bytes held for IPv4 above which fragments are dropped.
    pub ipv4_high_thresh: usize,
    /// `net.netfilter.nf_conntrack_frag6_high_thresh`: the same for IPv6.
    pub ipv6_high_thresh: usize,
    /// `net.ipv4.ipfrag_time`: seconds an IPv4 datagram may take to arrive whole.
    pub ipv4_timeout: u32,
    /// `net.netfilter.nf_conntrack_frag6_timeout`: the same for IPv6.
    pub ipv6_timeout: u32,
}

impl Default for DefragConfig {
    fn default() -> Self {
        DefragConfig { ipv4_high_thresh: 4 << 20, ipv6_high_thresh: 4 << 20, ipv4_timeout: 30, ipv6_timeout: 60 }
    }
}

/// Why a fragment (and maybe its whole datagram) was dropped. Each has a name and a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DefragError {
    /// The fragment overlaps data already held without being a copy of it: the whole datagram is
    /// discarded.
    Overlap,
    /// The fragment repeats data already held; it is dropped, the datagram's other fragments kept.
    Duplicate,
    /// The fragment's length contradicts the datagram's (a second, different last fragment, data
    /// beyond the end, no data at all). IPv4 discards the datagram, IPv6 this fragment only.
    BadLength,
    /// The datagram would exceed 65535 bytes (IPv4) or a 65535-byte payload (IPv6).
    TooBig,
    /// The fragments disagree on ECN capability: the datagram is discarded.
    Ecn,
    /// Too much memory is held in incomplete datagrams of this family.
    MemoryLimit,
    /// The packet descriptor does not describe the buffer (offsets out of range).
    Malformed,
}

impl DefragError {
    /// Every reason, in counter order.
    pub const ALL: [DefragError; 7] = [
        DefragError::Overlap,
        DefragError::Duplicate,
        DefragError::BadLength,
        DefragError::TooBig,
        DefragError::Ecn,
        DefragError::MemoryLimit,
        DefragError::Malformed,
    ];

    /// A short snake_case name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            DefragError::Overlap => "overlap",
            DefragError::Duplicate => "duplicate",
            DefragError::BadLength => "bad_length",
            DefragError::TooBig => "too_big",
            DefragError::Ecn => "ecn",
            DefragError::MemoryLimit => "memory_limit",
            DefragError::Malformed => "malformed",
        }
    }
}

/// What became of a packet given to [`Defrag::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reassembly {
    /// Not something to reassemble: use the packet as it is. This is every packet that is not a
    /// fragment, and also an IPv6 fragment that is not a multiple of 8 bytes long without being
    /// the last (its queue is discarded and the kernel passes it on).
    Whole,
    /// Kept, waiting for the rest of its datagram.
    Held,
    /// This fragment completed its datagram: here it is, starting at its IP header.
    Done(Vec<u8>),
    /// Dropped, for this reason.
    Dropped(DefragError),
}

/// Counters, in the spirit of the kernel's `ReasmReqds`/`ReasmOKs`/`ReasmFails`/`ReasmTimeout`.
#[derive(Debug, Clone, Default)]
pub struct DefragStats {
    /// Fragments given to [`Defrag::push`].
    pub fragments: u64,
    /// Datagrams reassembled.
    pub reassembled: u64,
    /// Queues discarded because they expired.
    pub timeouts: u64,
    /// Unaligned IPv6 fragments passed on unreassembled.
    pub unaligned: u64,
    /// Drops per reason, indexed like [`DefragError::ALL`].
    pub dropped: [u64; DefragError::ALL.len()],
}

/// Bytes a queue itself is charged (the kernel's `sizeof(struct ipq)`).
const QUEUE_SIZE: usize = 200;

/// The memory a held fragment is charged: the kernel charges `skb->truesize`, which depends on
/// the driver; this is the common case of a 2 KiB receive buffer per 1500-byte frame plus the
/// socket buffer's own overhead (the kernel's comment: "1500 truesize == 2944").
fn truesize(len: usize) -> usize {
    len.div_ceil(2048).max(1) * 2048 + 896
}

/// The largest IPv4 datagram, and the largest IPv6 payload.
const MAX_LEN: usize = 65535;

/// IPv4 flag bits in the fragment field.
const IP_DF: u16 = 0x4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    family: Family,
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    /// IPv4 only (IPv6 queues ignore the protocol, as the kernel's key does).
    proto: u8,
}

/// One datagram being reassembled (`struct ipq` / `struct frag_queue`).
#[derive(Debug)]
struct Queue {
    expires: Timestamp,
    /// Fragment data by offset, sorted, never overlapping.
    frags: Vec<(u32, Vec<u8>)>,
    /// Runs of contiguous fragments (start, end), sorted: the granularity at which duplicates
    /// are recognised. A fragment extends the last run only when it lands exactly at its end.
    runs: Vec<(u32, u32)>,
    /// The datagram's data length as far as known (`q.len`).
    len: u32,
    /// Bytes of data held (`q.meat`).
    meat: u32,
    first_in: bool,
    last_in: bool,
    /// The first fragment's headers: the IPv4 header with options, or the IPv6 header with the
    /// extension headers before the fragment header.
    head: Vec<u8>,
    /// IPv6: where in `head` the byte naming the fragment header is.
    nh_offset: usize,
    /// IPv6: the header following the fragment header in the first fragment.
    first_next: u8,
    /// ECN code points seen, one bit each (`IPFRAG_ECN_*`).
    ecn: u8,
    /// IPv4: the largest fragment, and the largest fragment that had DF.
    max_size: usize,
    max_df_size: usize,
    /// Memory charged to this queue.
    mem: usize,
}

impl Queue {
    fn new(expires: Timestamp) -> Queue {
        Queue {
            expires,
            frags: Vec::new(),
            runs: Vec::new(),
            len: 0,
            meat: 0,
            first_in: false,
            last_in: false,
            head: Vec::new(),
            nh_offset: 0,
            first_next: 0,
            ecn: 0,
            max_size: 0,
            max_df_size: 0,
            mem: QUEUE_SIZE,
        }
    }

    fn complete(&self) -> bool {
        self.first_in && self.last_in && self.meat == self.len
    }

    /// `inet_frag_queue_insert` without the storing: whether `[offset, end)` can join the queue.
    fn place(&mut self, offset: u32, end: u32) -> Result<(), DefragError> {
        match self.runs.last_mut() {
            None => self.runs.push((offset, end)),
            Some(last) if last.1 < end => {
                // The common case: the fragment goes at the end.
                if offset < last.1 {
                    return Err(DefragError::Overlap);
                }
                if offset == last.1 {
                    last.1 = end;
                } else {
                    self.runs.push((offset, end));
                }
            }
            Some(_) => {
                // Somewhere before the end: a duplicate if inside one run, an overlap if it
                // touches any other way, else a run of its own.
                let i = self.runs.partition_point(|&(_, e)| e <= offset);
                if let Some(&(s, e)) = self.runs.get(i) {
                    if end > s {
                        return Err(if offset >= s && end <= e {
                            DefragError::Duplicate
                        } else {
                            DefragError::Overlap
                        });
                    }
                }
                self.runs.insert(i, (offset, end));
            }
        }
        Ok(())
    }

    fn store(&mut self, offset: u32, data: &[u8]) {
        let i = self.frags.partition_point(|&(o, _)| o < offset);
        self.frags.insert(i, (offset, data.to_vec()));
        self.meat += data.len() as u32;
    }

    /// The fragments' data, in order.
    fn data(&self) -> impl Iterator<Item = &[u8]> {
        self.frags.iter().map(|(_, d)| d.as_slice())
    }
}

/// `IPFRAG_ECN_*`: one bit per ECN code point (`1 << (tos & 3)`).
const ECN_NOT_ECT: u8 = 1;
const ECN_ECT_1: u8 = 2;
const ECN_ECT_0: u8 = 4;
const ECN_CE: u8 = 8;

/// `ip_frag_ecn_table`: the ECN bits to OR into the reassembled header, or `None` when the
/// fragments disagree on ECN capability.
fn ecn_merge(seen: u8) -> Option<u8> {
    let capable = ECN_ECT_1 | ECN_ECT_0 | ECN_CE;
    if seen & ECN_NOT_ECT != 0 && seen & capable != 0 {
        return None;
    }
    if seen & ECN_CE != 0 && seen & (ECN_ECT_0 | ECN_ECT_1) != 0 {
        return Some(3);
    }
    Some(0)
}

/// IP reassembly for one worker.
#[derive(Debug, Default)]
pub struct Defrag {
    pub cfg: DefragConfig,
    queues: HashMap<Key, Queue>,
    /// Memory held per family (IPv4, IPv6), as the kernel's two `fqdir`s count it.
    mem: [usize; 2],
    pub stats: DefragStats,
}

fn fam(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Defrag {
    /// A reassembler with limits `cfg`.
    pub fn new(cfg: DefragConfig) -> Defrag {
        Defrag { cfg, ..Defrag::default() }
    }

    /// Bytes held in incomplete datagrams (both families).
    pub fn held_bytes(&self) -> usize {
        self.mem[0] + self.mem[1]
    }

    /// Datagrams waiting for fragments.
    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// Discards the datagrams whose time is up; returns how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let mem = &mut self.mem;
        let before = self.queues.len();
        self.queues.retain(|k, q| {
            let keep = q.expires > now;
            if !keep {
                mem[fam(k.family)] -= q.mem;
            }
            keep
        });
        let n = before - self.queues.len();
        self.stats.timeouts += n as u64;
        n
    }

    fn drop_reason(&mut self, e: DefragError) -> Reassembly {
        self.stats.dropped[e as usize] += 1;
        Reassembly::Dropped(e)
    }

    /// Removes a queue (`inet_frag_kill`), returning it.
    fn kill(&mut self, key: &Key) -> Option<Queue> {
        let q = self.queues.remove(key)?;
        self.mem[fam(key.family)] -= q.mem;
        Some(q)
    }

    /// Takes one packet (`pkt` parsed from `buf`). Fragments are held until their datagram is
    /// complete, which is then returned; anything else passes as [`Reassembly::Whole`].
    pub fn push(&mut self, now: Timestamp, buf: &[u8], pkt: &Packet) -> Reassembly {
        let Some(f) = pkt.fragment else { return Reassembly::Whole };
        self.stats.fragments += 1;
        let l3 = pkt.l3_offset;
        let header_ok = pkt.end <= buf.len()
            && l3 < f.data_offset
            && f.data_offset <= pkt.end
            && match pkt.family {
                Family::V4 => f.data_offset - l3 >= 20,
                Family::V6 => {
                    f.data_offset >= l3 + 48 && f.prev_next_offset >= l3 && f.prev_next_offset < f.data_offset - 8
                }
            };
        if !header_ok {
            return self.drop_reason(DefragError::Malformed);
        }
        let family = fam(pkt.family);
        let high = [self.cfg.ipv4_high_thresh, self.cfg.ipv6_high_thresh][family];
        // inet_frag_find: no queue is found or made while over the threshold. Queues past their
        // time are gone already in the kernel (a timer removes them): drop them first.
        if self.mem[family] > high {
            self.expire(now);
            if self.mem[family] > high {
                return self.drop_reason(DefragError::MemoryLimit);
            }
        }
        let key = Key {
            family: pkt.family,
            src: pkt.src,
            dst: pkt.dst,
            id: f.id,
            proto: if pkt.family == Family::V4 { pkt.proto } else { 0 },
        };
        if self.queues.get(&key).is_some_and(|q| q.expires <= now) {
            self.kill(&key);
            self.stats.timeouts += 1;
        }
        if !self.queues.contains_key(&key) {
            let secs = [self.cfg.ipv4_timeout, self.cfg.ipv6_timeout][family];
            self.queues.insert(key, Queue::new(now.plus_secs(secs)));
            self.mem[family] += QUEUE_SIZE;
        }
        let r = match pkt.family {
            Family::V4 => self.queue_v4(&key, buf, pkt),
            Family::V6 => self.queue_v6(&key, buf, pkt),
        };
        match &r {
            Reassembly::Dropped(e) => self.stats.dropped[*e as usize] += 1,
            Reassembly::Done(_) => self.stats.reassembled += 1,
            Reassembly::Whole => self.stats.unaligned += 1,
            Reassembly::Held => {}
        }
        r
    }

    /// `ip_frag_queue`.
    fn queue_v4(&mut self, key: &Key, buf: &[u8], pkt: &Packet) -> Reassembly {
        let Some(f) = pkt.fragment else { return Reassembly::Whole };
        let l3 = pkt.l3_offset;
        let ihl = f.data_offset - l3;
        let payload = &buf[f.data_offset..pkt.end];
        let Some(q) = self.queues.get_mut(key) else { return Reassembly::Dropped(DefragError::Malformed) };
        let offset = f.offset;
        let mut end = offset + payload.len() as u32;
        let discard = |me: &mut Defrag, e| {
            me.kill(key);
            Reassembly::Dropped(e)
        };
        if !f.more {
            // Data already beyond this end, or a different end: corrupt.
            if end < q.len || (q.last_in && end != q.len) {
                return discard(self, DefragError::BadLength);
            }
            q.last_in = true;
            q.len = end;
        } else {
            end &= !7;
            if end > q.len {
                if q.last_in {
                    return discard(self, DefragError::BadLength);
                }
                q.len = end;
            }
        }
        if end == offset {
            return discard(self, DefragError::BadLength);
        }
        let data = &payload[..(end - offset) as usize];
        match q.place(offset, end) {
            Ok(()) => {}
            Err(DefragError::Duplicate) => return Reassembly::Dropped(DefragError::Duplicate),
            Err(e) => return discard(self, e),
        }
        q.store(offset, data);
        q.ecn |= 1 << (buf[l3 + 1] & 3);
        let charge = truesize(pkt.ip_len());
        q.mem += charge;
        self.mem[0] += charge;
        if offset == 0 {
            q.first_in = true;
            q.head = buf[l3..f.data_offset].to_vec();
        }
        let fragsize = data.len() + ihl;
        q.max_size = q.max_size.max(fragsize);
        let df = u16::from_be_bytes([buf[l3 + 6], buf[l3 + 7]]) & IP_DF != 0;
        if df && fragsize > q.max_df_size {
            q.max_df_size = fragsize;
        }
        if !q.complete() {
            return Reassembly::Held;
        }
        // ip_frag_reasm: the queue goes whatever happens next.
        let Some(q) = self.kill(key) else { return Reassembly::Dropped(DefragError::Malformed) };
        let Some(ecn) = ecn_merge(q.ecn) else { return Reassembly::Dropped(DefragError::Ecn) };
        let len = q.head.len() + q.len as usize;
        if len > MAX_LEN {
            return Reassembly::Dropped(DefragError::TooBig);
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&q.head);
        for d in q.data() {
            out.extend_from_slice(d);
        }
        out[1] |= ecn;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        // DF only if the largest fragment had it, so no larger datagram goes out with DF than
        // the sender sent.
        let word = if q.max_df_size == q.max_size { IP_DF } else { 0 };
        out[6..8].copy_from_slice(&word.to_be_bytes());
        out[10..12].fill(0);
        let c = checksum::internet(&out[..q.head.len()]);
        out[10..12].copy_from_slice(&c.to_be_bytes());
        Reassembly::Done(out)
    }

    /// `nf_ct_frag6_queue`.
    fn queue_v6(&mut self, key: &Key, buf: &[u8], pkt: &Packet) -> Reassembly {
        let Some(f) = pkt.fragment else { return Reassembly::Whole };
        let l3 = pkt.l3_offset;
        let payload = &buf[f.data_offset..pkt.end];
        let Some(q) = self.queues.get_mut(key) else { return Reassembly::Dropped(DefragError::Malformed) };
        let offset = f.offset;
        let end = offset + payload.len() as u32;
        if end as usize > MAX_LEN {
            return Reassembly::Dropped(DefragError::TooBig);
        }
        if !f.more {
            if end < q.len || (q.last_in && end != q.len) {
                return Reassembly::Dropped(DefragError::BadLength);
            }
            q.last_in = true;
            q.len = end;
        } else {
            // RFC 8200: fragments other than the last are multiples of 8 bytes. The kernel
            // discards the queue and lets the packet on, for the stack to send a parameter
            // problem.
            if end & 7 != 0 {
                self.kill(key);
                return Reassembly::Whole;
            }
            if end > q.len {
                if q.last_in {
                    return Reassembly::Dropped(DefragError::BadLength);
                }
                q.len = end;
            }
        }
        if end == offset {
            return Reassembly::Dropped(DefragError::BadLength);
        }
        match q.place(offset, end) {
            Ok(()) => {}
            Err(DefragError::Duplicate) => return Reassembly::Dropped(DefragError::Duplicate),
            Err(e) => {
                self.kill(key);
                return Reassembly::Dropped(e);
            }
        }
        q.store(offset, payload);
        // The ECN bits are the low two bits of the traffic class.
        q.ecn |= 1 << ((buf[l3 + 1] >> 4) & 3);
        let charge = truesize(pkt.ip_len());
        q.mem += charge;
        self.mem[1] += charge;
        if offset == 0 {
            q.first_in = true;
            let frag_hdr = f.data_offset - 8;
            q.head = buf[l3..frag_hdr].to_vec();
            q.nh_offset = f.prev_next_offset - l3;
            q.first_next = buf[frag_hdr];
        }
        if !q.complete() {
            return Reassembly::Held;
        }
        // nf_ct_frag6_reasm.
        let Some(q) = self.kill(key) else { return Reassembly::Dropped(DefragError::Malformed) };
        let Some(ecn) = ecn_merge(q.ecn) else { return Reassembly::Dropped(DefragError::Ecn) };
        let payload_len = q.head.len() - 40 + q.len as usize;
        if payload_len > MAX_LEN {
            return Reassembly::Dropped(DefragError::TooBig);
        }
        let mut out = Vec::with_capacity(40 + payload_len);
        out.extend_from_slice(&q.head);
        for d in q.data() {
            out.extend_from_slice(d);
        }
        // Splice the fragment header out: the header before it now names what followed it.
        out[q.nh_offset] = q.first_next;
        out[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
        out[1] |= ecn << 4;
        Reassembly::Done(out)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proto::build::{fragment, PacketBuilder};
    use proto::packet::{ipproto, parse_ip, L4};

    use super::*;

    const T0: Timestamp = Timestamp::from_secs(100);

    fn v4() -> PacketBuilder {
        PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1)).id(0x4242)
    }

    fn v6() -> PacketBuilder {
        PacketBuilder::v6("2001:2:0:1::1".parse::<Ipv6Addr>().unwrap(), "2001:2:0:2::1".parse().unwrap())
    }

    fn udp(b: &PacketBuilder, n: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
        b.udp(5000, 53, &payload)
    }

    fn push(d: &mut Defrag, now: Timestamp, buf: &[u8]) -> Reassembly {
        let pkt = parse_ip(buf, 0).expect("fragment parses");
        d.push(now, buf, &pkt)
    }

    /// The datagram as reassembly returns it: for IPv4 without DF (the fragments have none) and
    /// with its header checksum redone.
    fn expected(orig: &[u8]) -> Vec<u8> {
        let mut e = orig.to_vec();
        if e[0] >> 4 == 4 {
            e[6..8].fill(0);
            e[10..12].fill(0);
            let c = checksum::internet(&e[..20]);
            e[10..12].copy_from_slice(&c.to_be_bytes());
        }
        e
    }

    fn check_udp(out: &[u8]) {
        let p = parse_ip(out, 0).expect("reassembled datagram parses");
        assert!(p.fragment.is_none());
        assert_eq!(p.proto, ipproto::UDP);
        let L4::Udp(u) = p.l4 else { panic!("not UDP: {:?}", p.l4) };
        assert_eq!((u.sport, u.dport), (5000, 53));
        let seg = p.l4_bytes(out);
        assert_eq!(checksum::l4(p.family, &p.src, &p.dst, ipproto::UDP, seg, seg.len()), 0);
    }

    /// An IPv4 UDP fragment with the given offset, MF flag and data.
    fn v4_frag(id: u16, offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, ipproto::UDP, 0, 0, 198, 18, 0, 1, 198, 19, 0, 1];
        p[2..4].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        let word = (offset / 8) | if more { 0x2000 } else { 0 };
        p[6..8].copy_from_slice(&word.to_be_bytes());
        let c = checksum::internet(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(data);
        p
    }

    /// An IPv6 fragment (fragment header straight after the IPv6 header) carrying UDP data.
    fn v6_frag(id: u32, offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, ipproto::FRAGMENT, 64];
        p.extend_from_slice(&"2001:2:0:1::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:2:0:2::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[ipproto::UDP, 0]);
        p.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(data);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p
    }

    fn builders() -> [PacketBuilder; 3] {
        [v4(), v6(), v6().ext_headers(&[ipproto::HOPOPTS, ipproto::ROUTING, ipproto::DSTOPTS])]
    }

    #[test]
    fn not_a_fragment_passes() {
        let mut d = Defrag::default();
        for b in builders() {
            assert_eq!(push(&mut d, T0, &udp(&b, 30)), Reassembly::Whole);
        }
        assert_eq!(d.stats.fragments, 0);
    }

    #[test]
    fn in_order() {
        for b in builders() {
            let mut d = Defrag::default();
            let orig = udp(&b, 300);
            let frags = fragment(&orig, 96);
            assert_eq!(frags.len(), 4);
            for f in &frags[..3] {
                assert_eq!(push(&mut d, T0, f), Reassembly::Held);
            }
            assert!(d.held_bytes() > 0);
            let Reassembly::Done(out) = push(&mut d, T0, &frags[3]) else { panic!("not reassembled") };
            assert_eq!(out, expected(&orig));
            check_udp(&out);
            assert_eq!((d.queues(), d.held_bytes(), d.stats.reassembled, d.stats.fragments), (0, 0, 1, 4));
        }
    }

    #[test]
    fn out_of_order() {
        for b in builders() {
            let mut d = Defrag::default();
            let orig = udp(&b, 300);
            let frags = fragment(&orig, 64);
            let n = frags.len();
            // Last first, then the middle ones backwards, the first one last.
            let mut order: Vec<usize> = vec![n - 1];
            order.extend((1..n - 1).rev());
            order.push(0);
            let mut done = None;
            for (k, &i) in order.iter().enumerate() {
                match push(&mut d, T0, &frags[i]) {
                    Reassembly::Held => assert!(k + 1 < n),
                    Reassembly::Done(out) => done = Some(out),
                    other => panic!("{other:?}"),
                }
            }
            let out = done.expect("reassembled");
            assert_eq!(out, expected(&orig));
            check_udp(&out);
        }
    }

    #[test]
    fn duplicates_are_dropped_alone() {
        for b in builders() {
            let mut d = Defrag::default();
            let orig = udp(&b, 200);
            let frags = fragment(&orig, 64);
            assert_eq!(push(&mut d, T0, &frags[1]), Reassembly::Held);
            assert_eq!(push(&mut d, T0, &frags[1]), Reassembly::Dropped(DefragError::Duplicate));
            assert_eq!(push(&mut d, T0, &frags[0]), Reassembly::Held);
            // Fragment 0 arrived after 1, so it forms a run of its own; a copy of it is still a
            // duplicate.
            assert_eq!(push(&mut d, T0, &frags[0]), Reassembly::Dropped(DefragError::Duplicate));
            for f in &frags[2..frags.len() - 1] {
                assert_eq!(push(&mut d, T0, f), Reassembly::Held);
            }
            let last = frags.last().unwrap();
            let Reassembly::Done(out) = push(&mut d, T0, last) else { panic!("not reassembled") };
            assert_eq!(out, expected(&orig));
            assert_eq!(d.stats.dropped[DefragError::Duplicate as usize], 2);
        }
    }

    #[test]
    fn v4_overlap_discards_the_datagram() {
        let mut d = Defrag::default();
        let data = [1u8; 64];
        assert_eq!(push(&mut d, T0, &v4_frag(7, 0, true, &data)), Reassembly::Held);
        assert_eq!(push(&mut d, T0, &v4_frag(7, 64, true, &data)), Reassembly::Held);
        // Starts inside the data held and runs past it.
        assert_eq!(push(&mut d, T0, &v4_frag(7, 120, false, &data)), Reassembly::Dropped(DefragError::Overlap));
        assert_eq!((d.queues(), d.held_bytes()), (0, 0));
        // A fragment straddling two separate runs overlaps too.
        assert_eq!(push(&mut d, T0, &v4_frag(8, 0, true, &data[..16])), Reassembly::Held);
        assert_eq!(push(&mut d, T0, &v4_frag(8, 64, false, &data[..16])), Reassembly::Held);
        assert_eq!(push(&mut d, T0, &v4_frag(8, 8, true, &data[..16])), Reassembly::Dropped(DefragError::Overlap));
        // The rest of the datagram then starts a new queue.
        assert_eq!(push(&mut d, T0, &v4_frag(8, 16, true, &data[..48])), Reassembly::Held);
        assert_eq!(d.stats.dropped[DefragError::Overlap as usize], 2);
    }

    #[test]
    fn v6_overlap_discards_the_datagram() {
        let mut d = Defrag::default();
        let data = [1u8; 64];
        assert_eq!(push(&mut d, T0, &v6_frag(7, 64, false, &data)), Reassembly::Held);
        assert_eq!(push(&mut d, T0, &v6_frag(7, 0, true, &[2u8; 72])), Reassembly::Dropped(DefragError::Overlap));
        assert_eq!(d.queues(), 0);
        assert_eq!(push(&mut d, T0, &v6_frag(7, 0, true, &data)), Reassembly::Held);
    }

    #[test]
    fn length_rules() {
        let mut d = Defrag::default();
        let data = [3u8; 40];
        // IPv4: a second last fragment with another end discards the datagram.
        assert_eq!(push(&mut d, T0, &v4_frag(1, 40, false, &data)), Reassembly::Held);
        assert_eq!(push(&mut d, T0, &v4_frag(1, 80, false, &data)), Reassembly::Dropped(DefragError::BadLength));
        assert_eq!(d.queues(), 0);
        // IPv4: a non-last fragment is cut to a multiple of 8; one with less than 8 bytes is empty.
        assert_eq!(push(&mut d, T0, &v4_frag(2, 8, true, &data[..5])), Reassembly::Dropped(DefragError::BadLength));
        // IPv6: the same mistakes drop only the fragment.
        assert_eq!(push(&mut d, T0, &v6_frag(1, 40, false, &data)), Reassembly::Held);
        assert_eq!(push(&mut d, T0, &v6_frag(1, 80, false, &data)), Reassembly::Dropped(DefragError::BadLength));
        assert_eq!(push(&mut d, T0, &v6_frag(1, 80, true, &data)), Reassembly::Dropped(DefragError::BadLength));
        assert_eq!(d.queues(), 1);
        let Reassembly::Done(out) = push(&mut d, T0, &v6_frag(1, 0, true, &data)) else { panic!() };
        assert_eq!(out.len(), 40 + 80);
        assert_eq!(out[6], ipproto::UDP);
        // IPv6: a non-last fragment that is not a multiple of 8 kills its queue and passes as is.
        assert_eq!(push(&mut d, T0, &v6_frag(2, 0, true, &data)), Reassembly::Held);
        assert_eq!(push(&mut d, T0, &v6_frag(2, 40, true, &data[..13])), Reassembly::Whole);
        assert_eq!((d.queues(), d.stats.unaligned), (0, 1));
        // IPv6: a fragment ending beyond 65535 is dropped.
        assert_eq!(push(&mut d, T0, &v6_frag(3, 65528, false, &data)), Reassembly::Dropped(DefragError::TooBig));
    }

    #[test]
    fn v4_oversize_datagram() {
        let mut d = Defrag::default();
        assert_eq!(push(&mut d, T0, &v4_frag(9, 0, true, &vec![0u8; 65512])), Reassembly::Held);
        assert_eq!(push(&mut d, T0, &v4_frag(9, 65512, false, &[0u8; 100])), Reassembly::Dropped(DefragError::TooBig));
        assert_eq!((d.queues(), d.held_bytes()), (0, 0));
    }

    #[test]
    fn ecn_mix_is_refused_and_ce_spreads() {
        let mut d = Defrag::default();
        let data = [0u8; 16];
        let tos = |mut p: Vec<u8>, ecn: u8| {
            p[1] = ecn;
            p[10..12].fill(0);
            let c = checksum::internet(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p
        };
        assert_eq!(push(&mut d, T0, &tos(v4_frag(1, 0, true, &data), 0)), Reassembly::Held);
        assert_eq!(push(&mut d, T0, &tos(v4_frag(1, 16, false, &data), 2)), Reassembly::Dropped(DefragError::Ecn));
        assert_eq!(push(&mut d, T0, &tos(v4_frag(2, 0, true, &data), 2)), Reassembly::Held);
        let Reassembly::Done(out) = push(&mut d, T0, &tos(v4_frag(2, 16, false, &data), 3)) else { panic!() };
        assert_eq!(out[1] & 3, 3);
        assert!(parse_ip(&out, 0).is_ok());
    }

    #[test]
    fn timeouts() {
        for (b, secs) in [(v4(), 30), (v6(), 60)] {
            let mut d = Defrag::default();
            let frags = fragment(&udp(&b, 100), 64);
            assert_eq!(push(&mut d, T0, &frags[0]), Reassembly::Held);
            // Later fragments do not extend the queue's life.
            assert_eq!(push(&mut d, T0.plus_secs(secs - 1), &frags[0]), Reassembly::Dropped(DefragError::Duplicate));
            assert_eq!(d.expire(T0.plus_secs(secs - 1)), 0);
            assert_eq!(d.expire(T0.plus_secs(secs)), 1);
            assert_eq!((d.queues(), d.held_bytes(), d.stats.timeouts), (0, 0, 1));
            // The last fragment now starts a queue of its own.
            assert_eq!(push(&mut d, T0.plus_secs(secs), &frags[1]), Reassembly::Held);
            // A fragment finding its queue expired (before any sweep) starts afresh too.
            assert_eq!(push(&mut d, T0.plus_secs(3 * secs), &frags[0]), Reassembly::Held);
            assert_eq!((d.queues(), d.stats.timeouts), (1, 2));
        }
    }

    #[test]
    fn memory_limit() {
        let cfg = DefragConfig { ipv4_high_thresh: 20_000, ..DefragConfig::default() };
        let mut d = Defrag::new(cfg);
        let data = [0u8; 64];
        let mut held = 0;
        let mut id = 0;
        loop {
            id += 1;
            match push(&mut d, T0, &v4_frag(id, 0, true, &data)) {
                Reassembly::Held => held += 1,
                Reassembly::Dropped(DefragError::MemoryLimit) => break,
                other => panic!("{other:?}"),
            }
        }
        // Every queue charges its size and a fragment's buffer; the limit is passed by one.
        assert_eq!(held, 20_000 / (QUEUE_SIZE + truesize(84)) + 1);
        assert!(d.held_bytes() > 20_000);
        // Fragments of datagrams already queued are dropped as well.
        assert_eq!(push(&mut d, T0, &v4_frag(1, 64, false, &data)), Reassembly::Dropped(DefragError::MemoryLimit));
        // IPv6 has its own budget.
        assert_eq!(push(&mut d, T0, &v6_frag(1, 0, true, &data)), Reassembly::Held);
        // Once the queues expire there is room again.
        assert_eq!(push(&mut d, T0.plus_secs(30), &v4_frag(1, 0, true, &data)), Reassembly::Held);
        assert_eq!(d.stats.timeouts, held as u64);
    }

    #[test]
    fn v6_extension_headers_are_kept_and_the_fragment_header_removed() {
        let b = v6().ext_headers(&[ipproto::HOPOPTS, ipproto::DSTOPTS]);
        let orig = udp(&b, 500);
        let frags = fragment(&orig, 200);
        let mut d = Defrag::default();
        let mut out = None;
        for f in frags.iter().rev() {
            if let Reassembly::Done(o) = push(&mut d, T0, f) {
                out = Some(o);
            }
        }
        let out = out.expect("reassembled");
        assert_eq!(out, orig);
        let p = parse_ip(&out, 0).unwrap();
        assert_eq!(p.l4_offset, 40 + 16);
        check_udp(&out);
    }

    #[test]
    fn garbage_does_not_panic() {
        let mut d =
            Defrag::new(DefragConfig { ipv4_high_thresh: 50_000, ipv6_high_thresh: 50_000, ..DefragConfig::default() });
        let mut seed = 0x1234_5678u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for i in 0..3000u32 {
            let len = (rnd() % 200) as usize;
            let off = ((rnd() % 64) * 8) as u16;
            let data: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            let p = if i % 2 == 0 {
                v4_frag((rnd() % 4) as u16, off, rnd() % 3 != 0, &data)
            } else {
                v6_frag(rnd() % 4, off, rnd() % 3 != 0, &data)
            };
            if let Ok(pkt) = parse_ip(&p, 0) {
                if let Reassembly::Done(out) = d.push(Timestamp::from_secs(u64::from(i / 100)), &p, &pkt) {
                    let _ = parse_ip(&out, 0);
                }
            }
        }
        d.expire(Timestamp::from_secs(10_000));
        assert_eq!((d.queues(), d.held_bytes()), (0, 0));
    }

    proptest::proptest! {
        /// Any fragmentation of any datagram, delivered in any order with some fragments
        /// repeated, comes back as the datagram.
        #[test]
        fn any_order_reassembles(
            n in 0usize..1500,
            step in 8usize..600,
            v6_ext in 0usize..3,
            order in proptest::collection::vec(0usize..1000, 1..40),
        ) {
            let b = match v6_ext {
                0 => v4(),
                1 => v6(),
                _ => v6().ext_headers(&[ipproto::HOPOPTS, ipproto::DSTOPTS]),
            };
            let orig = udp(&b, n);
            let frags = fragment(&orig, step);
            let mut d = Defrag::default();
            if frags.len() < 2 {
                proptest::prop_assert_eq!(push(&mut d, T0, &frags[0]), Reassembly::Whole);
                return Ok(());
            }
            // Repeats first (they are duplicates), then every fragment once, in a shuffled order.
            // (Not the last fragment, so that the repeats cannot complete the datagram.)
            let mut seq: Vec<usize> = order.iter().map(|&i| i % (frags.len() - 1)).take(5).collect();
            let mut rest: Vec<usize> = (0..frags.len()).collect();
            let len = rest.len();
            for (k, &o) in order.iter().enumerate() {
                rest.swap(k % len, (k + o) % len);
            }
            seq.extend(rest);
            let mut out = None;
            let mut seen = std::collections::HashSet::new();
            for i in seq {
                let r = push(&mut d, T0, &frags[i]);
                if !seen.insert(i) {
                    proptest::prop_assert_eq!(r, Reassembly::Dropped(DefragError::Duplicate));
                } else if let Reassembly::Done(o) = r {
                    out = Some(o);
                    break;
                } else {
                    proptest::prop_assert_eq!(r, Reassembly::Held);
                }
            }
            proptest::prop_assert_eq!(out, Some(expected(&orig)));
            proptest::prop_assert_eq!((d.queues(), d.held_bytes()), (0, 0));
        }
    }
}

//! The datapath's ports: one batch trait for every way frames come in and go out.
//!
//! A worker owns its ports (one `AF_PACKET` socket per interface in a fanout group, one TUN
//! queue, a pcap file) and runs one mio loop over their [`Port::raw_fd`]s. On readiness it drains a
//! port with [`Port::rx_batch`] until that returns 0 (mio is edge-triggered):
//!
//! ```text
//! let mut parsed: Vec<(&'static [u8], Packet)> = Vec::with_capacity(port::MAX_BATCH);
//! while port.rx_batch(64, &mut |frames, hairpin| {
//!     let mut batch = port::recycle(std::mem::take(&mut parsed));   // no allocation
//!     for f in frames {
//!         match parse(f.data) { Ok(p) => batch.push((f.data, p)), Err(_) => { /* count */ } }
//!     }
//!     ct.track_batch(now, &batch, &mut stats, |i, t, st| { /* rules, confirm, verdict */ });
//!     // forward: other_port.tx_plain(&[batch[i].0]) or hairpin.tx(..) for this port; then flush
//!     parsed = port::recycle(batch);
//! })? > 0 {}
//! ```
//!
//! The shape, and why:
//!
//! * **Receive lends, through a callback.** [`Port::rx_batch`] calls `f` once with up to `max`
//!   [`Frame`]s whose `data` borrows the port's memory: the kernel's mmap ring for `AF_PACKET` (the
//!   ring's blocks go back to the kernel when `f` returns), a buffer pool allocated at open for TUN,
//!   a reused arena for pcap. Nothing is allocated or copied per packet on the way in. A callback,
//!   rather than a returned batch, is what makes "give the blocks back" impossible to forget, and it
//!   keeps the trait object-safe (a worker may hold `Box<dyn Port>`; the cost is one indirect call
//!   per batch, not per packet).
//! * **Transmit copies into the port, in batches.** [`Tx::tx`] queues frames (into the
//!   `PACKET_TX_RING`, the pcap writer, or straight to the TUN fd) and never blocks: what does not
//!   fit is dropped and counted, as a NIC queue would. [`Tx::flush`] hands the queue to the kernel
//!   (one `send` for the whole TX ring); call it once per batch. The copy on transmit is the one a
//!   forwarding path needs anyway (routers rewrite MACs and TTLs).
//! * **The callback also gets this port's own [`Tx`]**, so a frame can go back out the interface it
//!   came in on (a TUN reject, a one-armed router) while the received frames are still borrowed;
//!   other ports are reached through whatever the closure captures.
//! * **Frames are L2 or L3 by port**: [`Port::link`] says whether `data` starts with an Ethernet
//!   header (`AF_PACKET`, Ethernet pcaps) or is a bare IP datagram (TUN, raw-IP pcaps). The worker
//!   parses the L2 header only on Ethernet ports.
//! * **Offloads travel with the frames.** A port that speaks vnet headers (`AF_PACKET` with
//!   `PACKET_VNET_HDR`) reports per received frame what the kernel knows about its checksum and
//!   segmentation ([`Frame::offload`]: a GSO super-frame's kind, piece size and header length; a
//!   partial checksum's start and field), and transmits each frame with the same description
//!   ([`TxFrame::offload`]), so that a super-frame received whole goes out whole and the egress
//!   cuts it (`crate::gso`). Ports without vnet headers (pcap, TUN) send the bytes as they are:
//!   give them frames with complete checksums and no GSO.
//! * **Counters per port** ([`PortStats`]): packets and bytes each way, the kernel's ring drops
//!   (`PACKET_STATISTICS`), truncated frames, super-frames each way, transmit drops and errors.
//! * `rx_batch` and `tx` return `io::Result` only for failures of the port itself (interface gone);
//!   a bad frame is a counter, never an error.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use smallvec::SmallVec;

pub use crate::gso::{Gso, GsoKind};

/// The most frames one [`Port::rx_batch`] call delivers (`max` is clamped to it); it bounds the
/// per-call frame array, which lives on the stack.
pub const MAX_BATCH: usize = 256;

/// What the first byte of a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// An Ethernet header (with any VLAN tags the kernel did not strip, see [`Frame::vlan`]).
    Ethernet,
    /// The first byte of an IPv4 or IPv6 header: no L2 at all.
    RawIp,
}

/// A VLAN tag the kernel took off the frame (hardware or veth VLAN offload) and reported beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vlan {
    /// Priority, DEI and VLAN id, as in the tag.
    pub tci: u16,
    /// The tag protocol (0x8100 or 0x88a8).
    pub tpid: u16,
}

/// Per-frame facts the kernel gives beside the bytes (`tp_status` of the `AF_PACKET` ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxFlags(u8);

impl RxFlags {
    /// The checksums were verified (by the NIC or the sending stack): `TP_STATUS_CSUM_VALID`.
    pub const CSUM_VALID: RxFlags = RxFlags(1);
    /// The packet was generated locally and its L4 checksum is not filled in yet
    /// (`TP_STATUS_CSUMNOTREADY`): a forwarding path must complete it.
    pub const CSUM_NOT_READY: RxFlags = RxFlags(2);
    /// Only part of the frame was captured (`data.len() < wire_len`).
    pub const TRUNCATED: RxFlags = RxFlags(4);
    /// The ring was losing packets when this frame was stored (`TP_STATUS_LOSING`).
    pub const LOSING: RxFlags = RxFlags(8);
    /// A GSO super-frame: one packet carrying the payload of many ([`Frame::offload`] says how to
    /// cut it). Its L4 checksum is partial (`CSUM_NOT_READY` is set too).
    pub const GSO: RxFlags = RxFlags(16);

    /// No flag.
    pub const fn empty() -> RxFlags {
        RxFlags(0)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: RxFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the flags of `other` added.
    pub const fn with(self, other: RxFlags) -> RxFlags {
        RxFlags(self.0 | other.0)
    }
}

/// One received frame, borrowed from the port for the duration of the [`Port::rx_batch`] callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The captured bytes, starting at L2 or L3 as [`Port::link`] says.
    pub data: &'a [u8],
    /// The frame's length on the wire (more than `data.len()` when truncated).
    pub wire_len: u32,
    /// What the kernel knows about the frame's checksums, truncation, ring pressure.
    pub flags: RxFlags,
    /// A VLAN tag stripped by the kernel; `data` does not contain it, so a path that forwards the
    /// frame must put it back.
    pub vlan: Option<Vlan>,
    /// Receive time in nanoseconds since the Unix epoch: the kernel's stamp (`AF_PACKET`), the
    /// capture's (pcap), or 0 when the port has none (TUN).
    pub timestamp_ns: u64,
    /// The frame's vnet header: GSO and partial checksum (their offsets count from the start of
    /// `data`, i.e. without a VLAN tag the kernel stripped). [`Offload::NONE`] on ports without
    /// vnet headers.
    pub offload: Offload,
}

/// The frames of one received batch, on the stack. Only as many are written as arrived: an
/// array of `MAX_BATCH` frames would be 14 KiB to fill on every receive call, and most calls (a
/// wake-up at a low rate, the look that finds the ring empty) see one frame or none.
pub type Frames<'a> = SmallVec<[Frame<'a>; MAX_BATCH]>;

/// A partial L4 checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, the kernel's `CHECKSUM_PARTIAL`): the
/// field at `start + offset` holds the pseudo-header's sum, and the Internet checksum of the bytes
/// from `start` to the end is still to be folded in by whoever transmits the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialCsum {
    /// Where the checksummed bytes start (the L4 header), from the start of the frame.
    pub start: u16,
    /// Where the checksum field is, from `start` (16 for TCP, 6 for UDP).
    pub offset: u16,
}

/// What a vnet header (`struct virtio_net_hdr`, as `AF_PACKET` with `PACKET_VNET_HDR` and TUN with
/// `IFF_VNET_HDR` put it before each frame) says about a frame: whether it is a GSO super-frame and
/// how to cut it, whether its L4 checksum is partial, whether it was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offload {
    pub gso: Option<Gso>,
    pub csum: Option<PartialCsum>,
    /// The checksums were verified (`VIRTIO_NET_HDR_F_DATA_VALID`; received frames only).
    pub data_valid: bool,
}

/// Byte offsets of `struct virtio_net_hdr`, named once. Its 16-bit fields are in the host's byte
/// order (the "legacy" virtio layout both `AF_PACKET` and TUN use by default).
mod vnet {
    use std::ops::Range;

    pub(super) const FLAGS: usize = 0;
    pub(super) const GSO_TYPE: usize = 1;
    pub(super) const HDR_LEN: Range<usize> = 2..4;
    pub(super) const GSO_SIZE: Range<usize> = 4..6;
    pub(super) const CSUM_START: Range<usize> = 6..8;
    pub(super) const CSUM_OFFSET: Range<usize> = 8..10;

    pub(super) const F_NEEDS_CSUM: u8 = 1;
    pub(super) const F_DATA_VALID: u8 = 2;
    pub(super) const GSO_NONE: u8 = 0;
    pub(super) const GSO_TCPV4: u8 = 1;
    pub(super) const GSO_TCPV6: u8 = 4;
    pub(super) const GSO_UDP_L4: u8 = 5;
    pub(super) const GSO_ECN: u8 = 0x80;
}

/// The length of a `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;

impl Offload {
    /// Nothing to tell: checksums complete, one packet.
    pub const NONE: Offload = Offload { gso: None, csum: None, data_valid: false };

    /// `flags` with what this vnet header says of the frame: [`RxFlags::GSO`] for a super-frame,
    /// [`RxFlags::CSUM_NOT_READY`] for a partial checksum (`NEEDS_CSUM`), [`RxFlags::CSUM_VALID`]
    /// for a verified one (`DATA_VALID`).
    pub fn rx_flags(&self, mut flags: RxFlags) -> RxFlags {
        if self.gso.is_some() {
            flags = flags.with(RxFlags::GSO);
        }
        if self.csum.is_some() {
            flags = flags.with(RxFlags::CSUM_NOT_READY);
        }
        if self.data_valid {
            flags = flags.with(RxFlags::CSUM_VALID);
        }
        flags
    }

    /// Reads a vnet header; `None` for a GSO type this does not know (legacy UFO, or newer ones).
    pub fn decode(h: &[u8; VNET_HDR_LEN]) -> Option<Offload> {
        let u16_at = |r: std::ops::Range<usize>| u16::from_ne_bytes([h[r.start], h[r.start + 1]]);
        let flags = h[vnet::FLAGS];
        let ty = h[vnet::GSO_TYPE];
        let gso = match ty & !vnet::GSO_ECN {
            vnet::GSO_NONE => None,
            t => Some(Gso {
                kind: match t {
                    vnet::GSO_TCPV4 => GsoKind::Tcp4,
                    vnet::GSO_TCPV6 => GsoKind::Tcp6,
                    vnet::GSO_UDP_L4 => GsoKind::Udp,
                    _ => return None,
                },
                ecn: ty & vnet::GSO_ECN != 0,
                size: u16_at(vnet::GSO_SIZE),
                hdr_len: u16_at(vnet::HDR_LEN),
            }),
        };
        let csum = (flags & vnet::F_NEEDS_CSUM != 0)
            .then(|| PartialCsum { start: u16_at(vnet::CSUM_START), offset: u16_at(vnet::CSUM_OFFSET) });
        Some(Offload { gso, csum, data_valid: flags & vnet::F_DATA_VALID != 0 })
    }

    /// The vnet header to send a frame with.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        let mut put = |r: std::ops::Range<usize>, v: u16| h[r].copy_from_slice(&v.to_ne_bytes());
        if let Some(g) = self.gso {
            put(vnet::HDR_LEN, g.hdr_len);
            put(vnet::GSO_SIZE, g.size);
        }
        if let Some(c) = self.csum {
            put(vnet::CSUM_START, c.start);
            put(vnet::CSUM_OFFSET, c.offset);
        }
        h[vnet::FLAGS] = if self.csum.is_some() { vnet::F_NEEDS_CSUM } else { 0 }
            | if self.data_valid { vnet::F_DATA_VALID } else { 0 };
        h[vnet::GSO_TYPE] = match self.gso {
            None => vnet::GSO_NONE,
            Some(g) => {
                let t = match g.kind {
                    GsoKind::Tcp4 => vnet::GSO_TCPV4,
                    GsoKind::Tcp6 => vnet::GSO_TCPV6,
                    GsoKind::Udp => vnet::GSO_UDP_L4,
                };
                t | if g.ecn { vnet::GSO_ECN } else { 0 }
            }
        };
        h
    }

    /// The vnet header to transmit a frame of `len` bytes with through a packet socket. A frame
    /// that is not a super-frame says its header is the whole frame (`hdr_len` = `len`), so the
    /// kernel copies it into the packet's own buffer. Left at zero, `tpacket_snd` lends the
    /// transmit ring's pages to the packet instead, and a veth copies them again into newly
    /// allocated pages before its peer may see them (`skb_copy_ubufs`, 8% of a router worker's
    /// samples forwarding 64-byte UDP; `bench/README.md`). (TUN writes, which also keep only
    /// `hdr_len` bytes in the packet's buffer, showed no difference with it: not used there.)
    pub fn encode_for_tx(&self, len: usize) -> [u8; VNET_HDR_LEN] {
        let mut h = self.encode();
        if self.gso.is_none() {
            h[vnet::HDR_LEN].copy_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        }
        h
    }

    /// The same description for the frame moved `by` bytes later (a VLAN tag put back before it):
    /// the offsets from the start of the frame grow.
    pub fn shifted(self, by: u16) -> Offload {
        Offload {
            gso: self.gso.map(|g| Gso { hdr_len: g.hdr_len.saturating_add(by), ..g }),
            csum: self.csum.map(|c| PartialCsum { start: c.start.saturating_add(by), ..c }),
            data_valid: self.data_valid,
        }
    }
}

/// A frame to transmit, with the vnet header its receiver gets on ports that send one.
///
/// The frame is `data` followed by `tail`: a forwarded super-frame has its headers rewritten in a
/// copy (`data`) and its payload sent from where it was received (`tail`), so that its 64 KB are
/// not copied once more on the way. `tail` is empty for every other frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxFrame<'a> {
    pub data: &'a [u8],
    pub tail: &'a [u8],
    pub offload: Offload,
}

impl<'a> TxFrame<'a> {
    /// A frame with complete checksums and no segmentation to do.
    pub const fn plain(data: &'a [u8]) -> TxFrame<'a> {
        TxFrame::new(data, Offload::NONE)
    }

    /// The frame `data`, whole, described by `offload`.
    pub const fn new(data: &'a [u8], offload: Offload) -> TxFrame<'a> {
        TxFrame { data, tail: &[], offload }
    }

    /// The frame's length on the wire.
    pub fn wire_len(&self) -> usize {
        self.data.len() + self.tail.len()
    }
}

/// Counters of one port since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortStats {
    /// Frames delivered by `rx_batch`, and their captured bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames the kernel dropped because the ring was full (`tp_drops` of `PACKET_STATISTICS`).
    pub rx_dropped: u64,
    /// Frames delivered with only part of their bytes.
    pub rx_truncated: u64,
    /// GSO super-frames among the frames delivered.
    pub rx_gso: u64,
    /// GSO super-frames among the frames queued (sent whole, for the kernel or the device to cut).
    pub tx_gso: u64,
    /// Frames queued by `tx`, and their bytes.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames `tx` dropped because the queue (TX ring, socket buffer) was full.
    pub tx_dropped: u64,
    /// Frames refused as unsendable (too short, longer than a TX slot, rejected by the kernel).
    pub tx_errors: u64,
}

/// Why a port could not be opened: which port, what was being done, and the system's error.
#[derive(Debug)]
pub struct PortError {
    pub port: String,
    pub op: &'static str,
    pub source: io::Error,
}

impl PortError {
    /// Wraps `source`, the failure of `op` on `port`.
    pub fn new(port: &str, op: &'static str, source: io::Error) -> PortError {
        PortError { port: port.to_owned(), op, source }
    }
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}: {}: {}", self.port, self.op, self.source)
    }
}

impl std::error::Error for PortError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The transmit half of a port.
pub trait Tx {
    /// Queues `frames` in order, each with its [`Offload`] (sent as its vnet header where the port
    /// has them), and returns how many were queued. Never blocks: a frame that cannot be sent
    /// (malformed, too long) is skipped and counted in `tx_errors`; when the queue is full, the
    /// rest are dropped and counted in `tx_dropped`. The bytes are copied: the slices may be
    /// reused as soon as this returns.
    fn tx(&mut self, frames: &[TxFrame<'_>]) -> io::Result<usize>;

    /// [`Tx::tx`] of frames with complete checksums and nothing to segment.
    fn tx_plain(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        let mut queued = 0;
        for chunk in frames.chunks(16) {
            let mut batch = [TxFrame::plain(&[]); 16];
            for (b, f) in batch.iter_mut().zip(chunk) {
                *b = TxFrame::plain(f);
            }
            queued += self.tx(&batch[..chunk.len()])?;
        }
        Ok(queued)
    }

    /// Hands everything queued to the kernel (or the file). Call once per batch.
    fn flush(&mut self) -> io::Result<()>;
}

/// A port: frames in, frames out, a descriptor to wait on, counters.
pub trait Port: Tx + Send {
    /// The port's name in logs and errors (the interface, or the file).
    fn name(&self) -> &str;

    /// Whether frames start at L2 or L3.
    fn link(&self) -> Link;

    /// The descriptor to register with mio (`SourceFd`) for readability, or `None` for a port that
    /// is always ready (a pcap file: call `rx_batch` until it returns 0, then it is finished).
    fn raw_fd(&self) -> Option<RawFd>;

    /// Receives up to `max` (at most [`MAX_BATCH`]) frames that are ready now and, if there is at
    /// least one, calls `f` once with them and with this port's [`Tx`]. Returns how many frames
    /// were delivered: 0 means nothing is ready (wait for readability). The frames are valid only
    /// inside `f`.
    fn rx_batch(&mut self, max: usize, f: &mut dyn FnMut(&[Frame<'_>], &mut dyn Tx)) -> io::Result<usize>;

    /// The counters, refreshed from the kernel (one `getsockopt` for `AF_PACKET`).
    fn stats(&mut self) -> PortStats;
}

/// Empties `v` and gives its allocation back with another lifetime for the borrowed bytes: the way
/// a worker keeps one `Vec<(&[u8], Packet)>` across batches whose frames live for one batch each.
/// (The standard library collects a `map` over `vec::IntoIter` of a same-sized type in place, so
/// this reuses the buffer; the unit test checks it.)
// `filter_map` to nothing is the point: it changes the element type without producing any.
#[allow(clippy::unnecessary_filter_map)]
pub fn recycle<'b, T>(mut v: Vec<(&[u8], T)>) -> Vec<(&'b [u8], T)> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Throwaway network namespaces for the port tests.

    use std::process::Command;
    use std::time::{Duration, Instant};

    /// Runs `f` on a new thread moved into a new, empty network namespace. Commands it spawns
    /// (`ip`) act in that namespace; the namespace and every interface in it vanish when the
    /// thread ends, whether `f` returned or panicked (the panic is passed on).
    pub(crate) fn in_netns<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        std::thread::spawn(move || {
            super::super::sys::unshare_netns().expect("unshare(CLONE_NEWNET) (tests run as root)");
            ip(&["link", "set", "lo", "up"]);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Runs `ip ARGS` and panics with its output if it fails.
    pub(crate) fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A deadline `secs` from now, for bounding test loops.
    #[allow(clippy::disallowed_methods)] // io owns the clocks
    pub(crate) fn deadline(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    /// Whether `d` has passed.
    #[allow(clippy::disallowed_methods)] // io owns the clocks
    pub(crate) fn expired(d: Instant) -> bool {
        Instant::now() >= d
    }

    /// Sleeps a millisecond (waiting for the kernel in bounded loops).
    #[allow(clippy::disallowed_methods)] // io owns the clocks
    pub(crate) fn nap() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proto::build::{ethernet, PacketBuilder};
    use proto::packet::{parse_frame, Packet};

    use super::super::pcap_port::PcapPort;
    use super::*;
    use crate::clock::Timestamp;
    use crate::conntrack::{Config, Conntrack, Stats};

    #[test]
    fn recycle_keeps_the_allocation() {
        let bytes = vec![1u8, 2, 3];
        let mut v: Vec<(&[u8], u64)> = Vec::with_capacity(100);
        v.push((&bytes, 7));
        let (ptr, cap) = (v.as_ptr() as usize, v.capacity());
        let w: Vec<(&'static [u8], u64)> = recycle(v);
        assert!(w.is_empty());
        assert_eq!((w.as_ptr() as usize, w.capacity()), (ptr, cap));
    }

    /// The worker loop of the module doc, end to end: a pcap port's frames parsed into one reused
    /// vector, tracked as a batch, and the accepted ones transmitted back out through the hairpin
    /// `Tx` the callback receives (here: the pcap writer).
    #[test]
    fn a_worker_loop_tracks_batches_without_allocating_per_packet() {
        let a = PacketBuilder::v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let frames: Vec<Vec<u8>> = (0..40u16)
            .map(|i| {
                let d =
                    if i % 2 == 0 { a.udp(1000 + i / 2, 53, b"q") } else { a.reverse().udp(53, 1000 + i / 2, b"r") };
                ethernet([2; 6], [4; 6], &d)
            })
            .collect();
        let mut input = PcapPort::writer(Vec::new(), Link::Ethernet);
        input.set_timestamp(std::time::Duration::from_secs(1));
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        assert_eq!(input.tx_plain(&refs).unwrap(), 40);
        input.flush().unwrap();
        let capture = input.into_output().unwrap();

        let mut port = PcapPort::new(capture.as_slice(), Vec::new()).unwrap();
        assert_eq!(port.link(), Link::Ethernet);
        let ct = Conntrack::new(1024, Config::default());
        let mut st = Stats::default();
        let mut parsed: Vec<(&'static [u8], Packet)> = Vec::with_capacity(MAX_BATCH);
        let cap = parsed.capacity();
        let mut seen = 0;
        let mut batches = 0;
        for _ in 0..100 {
            let n = port
                .rx_batch(16, &mut |frames, hairpin| {
                    let mut batch = recycle(std::mem::take(&mut parsed));
                    batch.extend(frames.iter().map(|f| (f.data, parse_frame(f.data).unwrap())));
                    let mut out = 0;
                    ct.track_batch(Timestamp::from_secs(1), &batch, &mut st, |i, mut t, st| {
                        ct.confirm(&mut t, st).unwrap();
                        out += hairpin.tx_plain(&[batch[i].0]).unwrap();
                    });
                    assert_eq!(out, frames.len());
                    hairpin.flush().unwrap();
                    seen += batch.len();
                    parsed = recycle(batch);
                })
                .unwrap();
            if n == 0 {
                break;
            }
            batches += 1;
        }
        assert_eq!((seen, batches), (40, 3));
        assert_eq!(parsed.capacity(), cap);
        assert_eq!(ct.len(), 20);
        let s = port.stats();
        assert_eq!((s.rx_packets, s.tx_packets), (40, 40));
        // What went out is what came in.
        let out = port.into_output().unwrap();
        assert_eq!(out, capture);
    }
}

//! An Ethernet interface through `AF_PACKET`: a `TPACKET_V2` memory-mapped receive ring, and a
//! `TPACKET_V2` transmit ring with a second socket for what does not fit it, all bound to the same
//! interface, all with vnet headers (`PACKET_VNET_HDR`).
//!
//! **Receive.** The kernel writes each frame into the next fixed-size slot of the ring and hands
//! the slot over at once (`TP_STATUS_USER`), waking the reader per frame; [`Port::rx_batch`] reads
//! the slots handed over, in order, lends each frame's `tp_snaplen` bytes from `tp_mac` straight
//! out of the ring, and gives the slots back (`TP_STATUS_KERNEL`) once the callback has returned.
//! Why slots and not `TPACKET_V3`'s blocks (used before): a block reaches user space only when it
//! is full or its timer (at least 1 ms) retires it, so at low rates every frame waited for the
//! timer — a round trip through the router took 0.5–1.9 ms and a TCP connection ~2.5 ms; a slot is
//! readable as soon as it is written. Per frame it reports `TP_STATUS_CSUM_VALID`,
//! `TP_STATUS_CSUMNOTREADY`, `TP_STATUS_LOSING`, truncation, the VLAN tag the kernel stripped
//! (`TP_STATUS_VLAN_VALID` with `tp_vlan_tci`/`tp_vlan_tpid`), and the frame's vnet header
//! ([`Frame::offload`]): `tpacket_rcv` writes a `struct virtio_net_hdr` (10 bytes) just before the
//! MAC header of every frame, so that a GSO super-frame — a TCP segment of up to 64 KiB that a peer
//! with TSO/GSO on sent, or that GRO merged — arrives with its segment size and partial checksum,
//! flagged [`RxFlags::GSO`]. (A super-frame of a kind a vnet header cannot describe, such as a UDP
//! tunnel's, is dropped by the kernel and counted in `rx_dropped`.)
//!
//! **Frames longer than a slot** (super-frames; frames over a 2 KiB slot): slots of 64 KiB would
//! make the ring 32 times bigger for the sake of the few long frames, so the slot stays small and
//! the socket sets `PACKET_COPY_THRESH`: the kernel then puts the slot's share of the frame in the
//! slot, flags it `TP_STATUS_COPY`, and queues the whole frame on the socket, where `rx_batch`
//! reads it (one `recvmsg`, its vnet header in front) into one of [`COPY_BUFFERS`] buffers and lends
//! it in the slot's place — in ring order, since the queue holds those frames only, in the order of
//! their slots. A batch ends early when the buffers are all lent; the socket's receive buffer is
//! raised (`SO_RCVBUFFORCE`, [`COPY_RCVBUF`]) so that a burst of super-frames finds room. A long
//! frame the kernel could not queue arrives truncated (flagged, counted in `rx_truncated`). The
//! receiving socket:
//! * sets `PACKET_VNET_HDR` and `PACKET_COPY_THRESH` before its ring is made (the kernel refuses
//!   the first after);
//! * is bound to the interface for `ETH_P_ALL` only after its ring exists (created with protocol 0,
//!   so nothing from other interfaces is queued before the bind);
//! * ignores the host's own transmissions on the interface (`PACKET_IGNORE_OUTGOING`, and
//!   `PACKET_FANOUT_FLAG_IGNORE_OUTGOING` for a fanout group, whose own hook is what the kernel
//!   consults): this matters since super-frames are sent through the queueing layer, which shows
//!   them to the interface's packet sockets;
//! * joins a `PACKET_FANOUT_HASH` group when configured, so that several workers (each with its own
//!   port on the same interface, same group id) share the traffic flow by flow — optionally with
//!   `PACKET_FANOUT_FLAG_DEFRAG`, so that all fragments of a datagram reach the same worker;
//! * puts the interface in promiscuous mode when asked (`PACKET_MR_PROMISC` membership, which the
//!   kernel drops with the socket: bridge mode needs frames for every MAC).
//!
//! **Transmit.** [`Tx::tx`] writes each frame, after its vnet header ([`TxFrame::offload`]: all
//! zeros for a plain frame; `NEEDS_CSUM` with its offsets for a partial checksum; the GSO kind,
//! segment size and header length for a super-frame), in one of two ways:
//! * A plain frame that fits a slot goes into the free slots of a `PACKET_TX_RING` (one frame per
//!   slot, `TP_STATUS_AVAILABLE` → `TP_STATUS_SEND_REQUEST`; its vnet header declares the whole
//!   frame as header, so `tpacket_snd` copies it into the packet instead of lending the ring's pages,
//!   which a veth would copy again: [`Offload::encode_for_tx`]), and [`Tx::flush`] sends every
//!   requested slot with one non-blocking `send`; the kernel sets slots back to available as the
//!   driver completes them. The ring's socket sets `PACKET_QDISC_BYPASS` (frames go straight to the
//!   driver: no qdisc, no taps, so the host's packet sockets, ours included, never see them) and
//!   `PACKET_LOSS` (a frame the kernel refuses is skipped instead of wedging the ring). When the
//!   next slot is still busy, `tx` flushes once and, if it is still busy, drops the rest of the
//!   batch (`tx_dropped`): `tx` never waits. A flush while the interface is down drops what was
//!   queued (`tx_dropped`); only a vanished interface (`ENXIO`) is an error.
//! * A super-frame, or a frame longer than a slot, is sent at once with one non-blocking `sendmsg`
//!   (header and frame gathered) on a second socket, after a flush of the ring so that frames
//!   leave in the order they were given. That socket does not bypass the queueing layer: when the
//!   egress device cannot take the super-frame (TSO off, or not for that kind), the kernel's
//!   `validate_xmit_skb` cuts it in software on the way, as for its own traffic, where the bypass
//!   (`__dev_direct_xmit`) drops it (`ENOBUFS`, nothing sent: tried on Linux 6.18). Why not ring
//!   slots of 64 KiB instead: the ring has one slot size, so 60-byte acknowledgements would take
//!   64 KiB each (1024 slots: 64 MiB per port and worker; 64 slots: a queue too short for the small
//!   frames); and `tpacket_snd` does not copy a slot's payload, it lends the ring's pages to the
//!   packet, which a veth then copies anyway (`skb_orphan_frags`) before the peer's stack sees it,
//!   so on a veth a ring costs two copies of a super-frame where `sendmsg` costs one. A full send
//!   buffer or a down interface drops the frame (`tx_dropped`), a frame the kernel refuses is a
//!   `tx_errors`.
//!
//! Both sockets are bound with protocol 0 and so receive nothing.
//!
//! **Limits.** Frames the host generated may have a partial checksum (`CSUM_NOT_READY`): a
//! forwarding path completes it or sends the frame on with `NEEDS_CSUM`. A transmitted frame must
//! be at least an Ethernet header; one that is not a super-frame must fit the interface's MTU (the
//! kernel refuses it otherwise). The frames of a
//! flow may leave in another order than given if the interface has a real queueing discipline
//! (not a veth's `noqueue`): plain frames bypass it, super-frames and long frames pass through it.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

use smallvec::SmallVec;

use super::port::{
    Frame, Frames, Link, Offload, Port, PortError, PortStats, RxFlags, Tx, TxFrame, Vlan, MAX_BATCH, VNET_HDR_LEN,
};
use super::sys::{self, Mmap};

/// `ETH_P_ALL`: every protocol.
const ETH_P_ALL: u16 = 0x0003;
/// `TPACKET_V2`, the value of `PACKET_VERSION`.
const TPACKET_V2: libc::c_int = 1;
/// Buffers for frames longer than a receive slot, lent by one batch.
pub const COPY_BUFFERS: usize = 8;
/// The receive socket's buffer, where the kernel queues frames longer than a slot: a few dozen
/// super-frames (the kernel counts each at its true size).
pub const COPY_RCVBUF: libc::c_int = 8 << 20;
/// `PACKET_VNET_HDR` (`linux/if_packet.h`): a `struct virtio_net_hdr` before every frame.
const PACKET_VNET_HDR: libc::c_int = 15;
/// The longest frame the second transmit socket sends: a 64 KiB IP datagram, its Ethernet header
/// and a VLAN tag.
const MAX_FRAME: usize = 65_535 + 14 + 4;
/// The second transmit socket's send buffer: a few super-frames in flight (they leave the buffer
/// as the receiving side takes them, on a veth at once).
const BULK_SNDBUF: libc::c_int = 4 << 20;

/// Byte offsets in the rings, named once.
mod field {
    use super::*;

    /// `tpacket2_hdr.tp_status` (of a receive slot as of a transmit slot) and `.tp_len` of a TX slot.
    pub(super) const STATUS: usize = offset_of!(libc::tpacket2_hdr, tp_status);
    pub(super) const TX_LEN: usize = offset_of!(libc::tpacket2_hdr, tp_len);
    /// Where a TX slot's frame starts: `TPACKET2_HDRLEN - sizeof(sockaddr_ll)`, the header rounded up
    /// to `TPACKET_ALIGNMENT`.
    pub(super) const TX_DATA: usize =
        (size_of::<libc::tpacket2_hdr>() + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1);
}

/// Ring geometry and socket options of an [`AfPacket`] port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// Receive block size in bytes: a multiple of the page size, holding whole slots (the kernel
    /// allocates the ring block by block).
    pub block_size: u32,
    /// Receive blocks in the ring.
    pub block_count: u32,
    /// Receive slot size (`tp_frame_size`): a divisor of `block_size`, a multiple of 16. A slot holds
    /// a frame of up to this less 90 bytes (slot header, address, vnet header); longer frames are
    /// read from the socket (see the module doc).
    pub frame_size: u32,
    /// Size of one transmit slot: a power of two from 128 to 65536. Plain frames up to this less 42
    /// bytes (slot header, vnet header) go through the ring; longer ones, and super-frames, are
    /// sent one by one (see the module doc).
    pub tx_frame_size: u32,
    /// Transmit slots (rounded up to fill whole pages).
    pub tx_frames: u32,
    /// Join a fanout group.
    pub fanout: Option<Fanout>,
    /// Put the interface in promiscuous mode while the port is open.
    pub promiscuous: bool,
}

impl Default for AfPacketConfig {
    /// 64 blocks of 256 KiB, 8192 receive slots of 2 KiB (16 MiB: a full-size frame each, longer
    /// ones through the socket); 1024 transmit slots of 2 KiB (2 MiB: plain frames only,
    /// super-frames do not use the ring).
    fn default() -> Self {
        AfPacketConfig {
            block_size: 1 << 18,
            block_count: 64,
            frame_size: 2048,
            tx_frame_size: 2048,
            tx_frames: 1024,
            fanout: None,
            promiscuous: false,
        }
    }
}

/// A `PACKET_FANOUT_HASH` group: sockets on one interface with the same `group` share its traffic,
/// each flow (the kernel's flow hash) going to one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    pub group: u16,
    /// `PACKET_FANOUT_FLAG_DEFRAG`: reassemble IPv4 before hashing, so fragments follow their flow.
    pub defrag: bool,
}

/// One worker's port on an Ethernet interface.
pub struct AfPacket {
    name: String,
    rx: RxRing,
    tx: TxRing,
}

struct RxRing {
    fd: OwnedFd,
    map: Mmap,
    block_size: usize,
    slot_size: usize,
    /// Slots per block, and in the ring.
    per_block: usize,
    slots: usize,
    /// The slot to read next.
    cur: usize,
    /// Where frames longer than a slot are read to (vnet header, then the frame).
    copies: Vec<Vec<u8>>,
    stats: PortStats,
}

impl RxRing {
    /// Offset of slot `i` in the mapping.
    fn slot(&self, i: usize) -> usize {
        (i / self.per_block) * self.block_size + (i % self.per_block) * self.slot_size
    }
}

struct TxRing {
    fd: OwnedFd,
    /// The socket for super-frames and frames longer than a slot, sent one by one.
    bulk: OwnedFd,
    map: Mmap,
    slot_size: usize,
    slots: usize,
    cur: usize,
    /// Some slot may be requested and not yet sent: the next flush has work to do. (The kernel
    /// keeps its own cursor and sends the requested slots in ring order from it, so the unsent
    /// ones are always the run of `TP_STATUS_SEND_REQUEST` slots just before `cur`.)
    pending: bool,
    stats: PortStats,
}

fn check_geometry(cfg: &AfPacketConfig, page: usize) -> Result<(), &'static str> {
    let (bs, fs) = (cfg.block_size as usize, cfg.frame_size as usize);
    if bs == 0 || bs % page != 0 {
        return Err("block_size must be a nonzero multiple of the page size");
    }
    if fs < 256 || fs % libc::TPACKET_ALIGNMENT != 0 || bs % fs != 0 {
        return Err("frame_size must divide block_size, be a multiple of 16 and at least 256");
    }
    if cfg.block_count == 0 {
        return Err("block_count must be at least 1");
    }
    if !cfg.tx_frame_size.is_power_of_two() || !(128..=65536).contains(&cfg.tx_frame_size) || cfg.tx_frames == 0 {
        return Err("tx_frame_size must be a power of two from 128 to 65536, tx_frames at least 1");
    }
    Ok(())
}

impl AfPacket {
    /// Opens a port on interface `ifname` (which must exist; it need not be up yet).
    pub fn open(ifname: &str, cfg: &AfPacketConfig) -> Result<AfPacket, PortError> {
        let err = |op: &'static str| move |e: io::Error| PortError::new(ifname, op, e);
        check_geometry(cfg, sys::page_size()).map_err(|why| {
            PortError::new(ifname, "checking the ring geometry", io::Error::new(io::ErrorKind::InvalidInput, why))
        })?;
        let ifindex = sys::if_index(ifname).map_err(err("looking up the interface"))?;
        let rx = RxRing::open(ifindex, cfg).map_err(|(op, e)| PortError::new(ifname, op, e))?;
        let tx = TxRing::open(ifindex, cfg).map_err(|(op, e)| PortError::new(ifname, op, e))?;
        Ok(AfPacket { name: ifname.to_owned(), rx, tx })
    }
}

type Step<T> = Result<T, (&'static str, io::Error)>;

fn step<T>(op: &'static str, r: io::Result<T>) -> Step<T> {
    r.map_err(|e| (op, e))
}

impl RxRing {
    fn open(ifindex: u32, cfg: &AfPacketConfig) -> Step<RxRing> {
        let fd = step("creating the receive socket", sys::packet_socket(0))?;
        let raw = fd.as_raw_fd();
        step("setting TPACKET_V2", sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2))?;
        let one: libc::c_int = 1;
        step("setting PACKET_VNET_HDR", sys::setsockopt(raw, libc::SOL_PACKET, PACKET_VNET_HDR, &one))?;
        step("setting PACKET_COPY_THRESH", sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, &one))?;
        // Room for long frames queued on the socket; without the privilege to force it, the
        // largest buffer the system allows.
        if sys::setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &COPY_RCVBUF).is_err() {
            step("setting SO_RCVBUF", sys::setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &COPY_RCVBUF))?;
        }
        let per_block = cfg.block_size / cfg.frame_size;
        let req = libc::tpacket_req {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.block_count,
            tp_frame_size: cfg.frame_size,
            tp_frame_nr: per_block * cfg.block_count,
        };
        step("creating the receive ring", sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req))?;
        let len = cfg.block_size as usize * cfg.block_count as usize;
        let map = step("mapping the receive ring", Mmap::map(raw, len))?;
        step("binding the receive socket", sys::bind_packet(raw, ifindex, ETH_P_ALL))?;
        step(
            "setting PACKET_IGNORE_OUTGOING",
            sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one),
        )?;
        if let Some(f) = cfg.fanout {
            // The group's hook, not the socket's, decides whether sent frames are seen.
            let mut mode = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
            if f.defrag {
                mode |= libc::PACKET_FANOUT_FLAG_DEFRAG;
            }
            let arg: libc::c_int = (u32::from(f.group) | (mode << 16)) as libc::c_int;
            step("joining the fanout group", sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg))?;
        }
        if cfg.promiscuous {
            let mreq = libc::packet_mreq {
                mr_ifindex: ifindex as libc::c_int,
                mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            step(
                "entering promiscuous mode",
                sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq),
            )?;
        }
        Ok(RxRing {
            fd,
            map,
            block_size: cfg.block_size as usize,
            slot_size: cfg.frame_size as usize,
            per_block: per_block as usize,
            slots: (per_block * cfg.block_count) as usize,
            cur: 0,
            copies: (0..COPY_BUFFERS).map(|_| vec![0; VNET_HDR_LEN + MAX_FRAME]).collect(),
            stats: PortStats::default(),
        })
    }
}

impl TxRing {
    fn open(ifindex: u32, cfg: &AfPacketConfig) -> Step<TxRing> {
        let fd = step("creating the transmit socket", sys::packet_socket(0))?;
        let raw = fd.as_raw_fd();
        let one: libc::c_int = 1;
        step("setting TPACKET_V2", sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2))?;
        step("setting PACKET_VNET_HDR", sys::setsockopt(raw, libc::SOL_PACKET, PACKET_VNET_HDR, &one))?;
        step("setting PACKET_LOSS", sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_LOSS, &one))?;
        step("setting PACKET_QDISC_BYPASS", sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one))?;
        let slot = cfg.tx_frame_size as usize;
        let block = slot.max(sys::page_size());
        let per_block = block / slot;
        let blocks = (cfg.tx_frames as usize).div_ceil(per_block);
        let req = libc::tpacket_req {
            tp_block_size: block as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: slot as u32,
            tp_frame_nr: (blocks * per_block) as u32,
        };
        step("creating the transmit ring", sys::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_TX_RING, &req))?;
        let map = step("mapping the transmit ring", Mmap::map(raw, block * blocks))?;
        // Room in the socket's send buffer for every slot in flight; without it a full buffer would
        // hold frames back until the next flush. Best effort: SO_SNDBUFFORCE needs CAP_NET_ADMIN.
        let want = libc::c_int::try_from(map.len()).unwrap_or(libc::c_int::MAX);
        if sys::setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &want).is_err() {
            let _ = sys::setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, &want);
        }
        step("binding the transmit socket", sys::bind_packet(raw, ifindex, 0))?;
        let bulk = step("creating the second transmit socket", sys::packet_socket(0))?;
        let braw = bulk.as_raw_fd();
        step("setting PACKET_VNET_HDR", sys::setsockopt(braw, libc::SOL_PACKET, PACKET_VNET_HDR, &one))?;
        if sys::setsockopt(braw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &BULK_SNDBUF).is_err() {
            let _ = sys::setsockopt(braw, libc::SOL_SOCKET, libc::SO_SNDBUF, &BULK_SNDBUF);
        }
        step("binding the second transmit socket", sys::bind_packet(braw, ifindex, 0))?;
        Ok(TxRing {
            fd,
            bulk,
            map,
            slot_size: slot,
            slots: blocks * per_block,
            cur: 0,
            pending: false,
            stats: PortStats::default(),
        })
    }

    /// Whether the slot at `cur` may be written.
    fn slot_free(&self) -> bool {
        let st = self.map.status(self.cur * self.slot_size + field::STATUS).load(Ordering::Acquire);
        st == libc::TP_STATUS_AVAILABLE || st & libc::TP_STATUS_WRONG_FORMAT != 0
    }
}

impl TxRing {
    /// Sends `f` with its vnet header on the second socket, after what the ring holds (whether the
    /// kernel took it).
    fn send_one(&mut self, f: &TxFrame<'_>) -> io::Result<bool> {
        self.flush()?;
        let hdr = f.offload.encode_for_tx(f.wire_len());
        match sys::send_parts(self.bulk.as_raw_fd(), &[&hdr, f.data, f.tail]) {
            Ok(_) => {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += f.wire_len() as u64;
                self.stats.tx_gso += u64::from(f.offload.gso.is_some());
                Ok(true)
            }
            // The send buffer is full, or the interface is down: dropped, as by a full ring.
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENETDOWN | libc::EINTR)) =>
            {
                self.stats.tx_dropped += 1;
                Ok(false)
            }
            // The interface is gone: the port fails.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Err(e),
            // Refused (too long for the MTU without GSO, a header the kernel rejects).
            Err(_) => {
                self.stats.tx_errors += 1;
                Ok(false)
            }
        }
    }
}

impl Tx for TxRing {
    fn tx(&mut self, frames: &[TxFrame<'_>]) -> io::Result<usize> {
        let mut queued = 0;
        let room = self.slot_size - field::TX_DATA - VNET_HDR_LEN;
        for (i, f) in frames.iter().enumerate() {
            let len = f.wire_len();
            if !(14..=MAX_FRAME).contains(&len) {
                self.stats.tx_errors += 1;
                continue;
            }
            if f.offload.gso.is_some() || len > room {
                queued += usize::from(self.send_one(f)?);
                continue;
            }
            if !self.slot_free() {
                self.flush()?;
                if !self.slot_free() {
                    self.stats.tx_dropped += (frames.len() - i) as u64;
                    break;
                }
            }
            let base = self.cur * self.slot_size;
            self.map.write(base + field::TX_DATA, &f.offload.encode_for_tx(len));
            self.map.write(base + field::TX_DATA + VNET_HDR_LEN, f.data);
            if !f.tail.is_empty() {
                self.map.write(base + field::TX_DATA + VNET_HDR_LEN + f.data.len(), f.tail);
            }
            self.map.write_u32(base + field::TX_LEN, (VNET_HDR_LEN + len) as u32);
            // Release: the frame and its length are in place before the kernel may see the request.
            self.map.status(base + field::STATUS).store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
            self.cur = (self.cur + 1) % self.slots;
            self.pending = true;
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += len as u64;
            queued += 1;
        }
        Ok(queued)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending {
            return Ok(());
        }
        match sys::send(self.fd.as_raw_fd(), &[]) {
            Ok(_) => {
                // A full send buffer can stop the kernel part-way and still report success: then
                // the last slot is still requested, and the next flush must try again.
                let last = (self.cur + self.slots - 1) % self.slots;
                let st = self.map.status(last * self.slot_size + field::STATUS).load(Ordering::Acquire);
                self.pending = st == libc::TP_STATUS_SEND_REQUEST;
                Ok(())
            }
            // The send buffer is full: the requested slots stay requested for the next flush.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => Ok(()),
            // The interface is down: the kernel returned before looking at the ring, so the
            // requested slots are still ours to take back. Their frames are dropped, as a NIC
            // would drop them, and `cur` goes back to the kernel's cursor (the first of them).
            // (ENXIO, the interface gone, is the port failing: an error.)
            Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                let mut back = 0;
                while back < self.slots {
                    let slot = (self.cur + self.slots - 1 - back) % self.slots;
                    let status = self.map.status(slot * self.slot_size + field::STATUS);
                    let taken = status.compare_exchange(
                        libc::TP_STATUS_SEND_REQUEST,
                        libc::TP_STATUS_AVAILABLE,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                    if taken.is_err() {
                        break;
                    }
                    back += 1;
                }
                self.stats.tx_dropped += back as u64;
                self.cur = (self.cur + self.slots - back) % self.slots;
                self.pending = false;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Tx for AfPacket {
    fn tx(&mut self, frames: &[TxFrame<'_>]) -> io::Result<usize> {
        self.tx.tx(frames)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tx.flush()
    }
}

impl Port for AfPacket {
    fn name(&self) -> &str {
        &self.name
    }

    fn link(&self) -> Link {
        Link::Ethernet
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.rx.fd.as_raw_fd())
    }

    fn rx_batch(&mut self, max: usize, f: &mut dyn FnMut(&[Frame<'_>], &mut dyn Tx)) -> io::Result<usize> {
        let rx = &mut self.rx;
        let max = max.min(MAX_BATCH).min(rx.slots);
        // First the slots handed over, one entry each, and the long frames behind
        // `TP_STATUS_COPY` slots read from the socket (the entry: copy buffer and length), so that
        // the frames can then borrow the ring and the buffers together.
        let mut slots: SmallVec<[Option<(usize, usize)>; MAX_BATCH]> = SmallVec::new();
        let mut lent = 0;
        while slots.len() < max {
            let at = rx.slot((rx.cur + slots.len()) % rx.slots);
            let status = rx.map.status(at + field::STATUS).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            let mut copy = None;
            if status & libc::TP_STATUS_COPY != 0 {
                let Some(buf) = rx.copies.get_mut(lent) else { break };
                // The queue holds the long frames in slot order: this slot's is the first.
                if let Ok(r) = sys::recv_frame(rx.fd.as_raw_fd(), buf) {
                    if r.len >= VNET_HDR_LEN && !r.truncated {
                        copy = Some((lent, r.len));
                        lent += 1;
                    }
                }
            }
            slots.push(copy);
        }
        let n = slots.len();
        if n == 0 {
            return Ok(0);
        }
        let mut frames = Frames::new();
        for (k, &copy) in slots.iter().enumerate() {
            let at = rx.slot((rx.cur + k) % rx.slots);
            let h: libc::tpacket2_hdr = rx.map.read(at);
            let (mac, snap) = (usize::from(h.tp_mac), h.tp_snaplen as usize);
            let mut flags = RxFlags::empty();
            if h.tp_status & libc::TP_STATUS_CSUM_VALID != 0 {
                flags = flags.with(RxFlags::CSUM_VALID);
            }
            if h.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0 {
                flags = flags.with(RxFlags::CSUM_NOT_READY);
            }
            if h.tp_status & libc::TP_STATUS_LOSING != 0 {
                flags = flags.with(RxFlags::LOSING);
            }
            let vlan = (h.tp_status & libc::TP_STATUS_VLAN_VALID != 0).then_some(Vlan {
                tci: h.tp_vlan_tci,
                tpid: if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 { h.tp_vlan_tpid } else { 0x8100 },
            });
            // The frame and its vnet header: from the socket for a long frame, else from the slot,
            // where the header sits just before the MAC header (none on a frame the kernel clamped
            // to nothing, whose `tp_mac` then leaves no room for it). A header or frame that does
            // not fit its slot would be a kernel bug: such a frame is delivered empty.
            let (data, header) = match copy {
                Some((b, len)) => {
                    let buf = &rx.copies[b][..len];
                    (&buf[VNET_HDR_LEN..], buf[..VNET_HDR_LEN].try_into().ok())
                }
                None if mac + snap <= rx.slot_size => {
                    let header = (snap > 0 && mac >= size_of::<libc::tpacket2_hdr>() + VNET_HDR_LEN)
                        .then(|| rx.map.read::<[u8; VNET_HDR_LEN]>(at + mac - VNET_HDR_LEN));
                    (rx.map.bytes(at + mac, snap), header)
                }
                None => (&[][..], None),
            };
            if (data.len() as u64) < u64::from(h.tp_len) {
                flags = flags.with(RxFlags::TRUNCATED);
                rx.stats.rx_truncated += 1;
            }
            let offload = header.and_then(|h| Offload::decode(&h)).unwrap_or(Offload::NONE);
            flags = offload.rx_flags(flags);
            rx.stats.rx_gso += u64::from(offload.gso.is_some());
            frames.push(Frame {
                data,
                wire_len: h.tp_len,
                flags,
                vlan,
                timestamp_ns: u64::from(h.tp_sec) * 1_000_000_000 + u64::from(h.tp_nsec),
                offload,
            });
            rx.stats.rx_packets += 1;
            rx.stats.rx_bytes += data.len() as u64;
        }
        f(&frames, &mut self.tx);
        // The frames' borrows of the ring end here: give the slots back.
        for k in 0..n {
            let at = rx.slot((rx.cur + k) % rx.slots);
            rx.map.status(at + field::STATUS).store(libc::TP_STATUS_KERNEL, Ordering::Release);
        }
        rx.cur = (rx.cur + n) % rx.slots;
        Ok(n)
    }

    fn stats(&mut self) -> PortStats {
        if let Ok(st) = sys::packet_statistics(self.rx.fd.as_raw_fd()) {
            self.rx.stats.rx_dropped += u64::from(st.tp_drops);
        }
        let t = &self.tx.stats;
        PortStats {
            tx_packets: t.tx_packets,
            tx_bytes: t.tx_bytes,
            tx_gso: t.tx_gso,
            tx_dropped: t.tx_dropped,
            tx_errors: t.tx_errors,
            ..self.rx.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::net::Ipv4Addr;

    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use proto::build::{ethernet, PacketBuilder};
    use proto::packet::tcp_flags;

    use super::super::port::testutil::{deadline, expired, in_netns, ip, nap};
    use super::super::port::{Gso, GsoKind, PartialCsum};
    use super::*;

    const ETHERTYPE_TEST: u16 = 0x88b5; // IEEE local experimental

    fn veth() {
        ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
        ip(&["link", "set", "va", "up"]);
        ip(&["link", "set", "vb", "up"]);
    }

    /// Test frame `i`: ethertype 0x88b5, then `i`, then a pattern; 60 to 1514 bytes.
    fn frame(i: u32) -> Vec<u8> {
        let len = 60 + (i as usize * 37) % 1455;
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ETHERTYPE_TEST.to_be_bytes());
        f.extend_from_slice(&i.to_be_bytes());
        f.extend((f.len()..len).map(|k| (k as u32 ^ i) as u8));
        f
    }

    fn small_rings() -> AfPacketConfig {
        AfPacketConfig {
            block_size: 1 << 16,
            block_count: 16,
            frame_size: 2048,
            tx_frames: 64,
            ..AfPacketConfig::default()
        }
    }

    /// Receives everything ready on `port`, `max` frames per batch; keeps the test frames.
    fn drain(port: &mut AfPacket, max: usize, out: &mut Vec<Vec<u8>>) -> usize {
        let mut total = 0;
        for _ in 0..1000 {
            let n = port
                .rx_batch(max, &mut |fs, _| {
                    assert!(fs.len() <= max);
                    for f in fs {
                        assert_eq!(f.data.len() as u32, f.wire_len);
                        assert!(!f.flags.contains(RxFlags::TRUNCATED));
                        if f.data.get(12..14) == Some(&ETHERTYPE_TEST.to_be_bytes()[..]) {
                            out.push(f.data.to_vec());
                        }
                    }
                })
                .unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    }

    #[test]
    fn frames_sent_on_one_end_of_a_veth_arrive_on_the_other() {
        in_netns(|| {
            veth();
            let cfg = small_rings();
            let mut tx = AfPacket::open("va", &cfg).unwrap();
            let mut rx = AfPacket::open("vb", &AfPacketConfig { promiscuous: true, ..cfg.clone() }).unwrap();
            assert!(ip(&["-d", "link", "show", "vb"]).contains("promiscuity 1"));
            const N: u32 = 2000;
            let frames: Vec<Vec<u8>> = (0..N).map(frame).collect();
            let mut got = Vec::new();
            let mut sent = 0usize;
            let end = deadline(20);
            while got.len() < N as usize && !expired(end) {
                if sent < frames.len() {
                    let chunk: Vec<&[u8]> =
                        frames[sent..(sent + 16).min(frames.len())].iter().map(|f| &f[..]).collect();
                    sent += tx.tx_plain(&chunk).unwrap();
                    tx.flush().unwrap();
                }
                // Odd batch sizes, so batches end anywhere in the ring and wrap around it.
                if drain(&mut rx, 7, &mut got) == 0 {
                    nap();
                }
            }
            assert_eq!(got.len(), N as usize, "received {} of {N} (sent {sent})", got.len());
            assert!(got == frames, "frames arrived changed or out of order");
            let (ts, rs) = (tx.stats(), rx.stats());
            assert_eq!(ts.tx_packets, u64::from(N));
            assert_eq!(ts.tx_bytes, frames.iter().map(|f| f.len() as u64).sum::<u64>());
            assert!(rs.rx_packets >= u64::from(N));
            assert_eq!((rs.rx_dropped, rs.rx_truncated), (0, 0));
            // Unsendable frames are counted, not sent.
            assert_eq!(tx.tx_plain(&[&[0u8; 10], &vec![0u8; 4000]]).unwrap(), 0);
            assert_eq!(tx.stats().tx_errors, 2);
            drop(rx);
            assert!(ip(&["-d", "link", "show", "vb"]).contains("promiscuity 0"));
        });
    }

    #[test]
    fn readiness_comes_with_each_frame_and_hairpin_tx_works() {
        in_netns(|| {
            veth();
            let cfg = small_rings();
            let mut a = AfPacket::open("va", &cfg).unwrap();
            let mut b = AfPacket::open("vb", &cfg).unwrap();
            let mut poll = Poll::new().unwrap();
            let fd = b.raw_fd().unwrap();
            poll.registry().register(&mut SourceFd(&fd), Token(1), Interest::READABLE).unwrap();
            let afd = a.raw_fd().unwrap();
            poll.registry().register(&mut SourceFd(&afd), Token(0), Interest::READABLE).unwrap();
            let mut events = Events::with_capacity(8);
            assert_eq!(a.tx_plain(&[&frame(7)]).unwrap(), 1);
            a.flush().unwrap();
            // b becomes readable as soon as the frame is in its slot, and
            // sends the frame back out of the port it came in on, from inside the callback.
            let mut got = Vec::new();
            let end = deadline(10);
            while got.is_empty() && !expired(end) {
                poll.poll(&mut events, Some(std::time::Duration::from_millis(100))).unwrap();
                for ev in events.iter().filter(|e| e.token() == Token(1)) {
                    assert!(ev.is_readable());
                    for _ in 0..100 {
                        let n = b
                            .rx_batch(MAX_BATCH, &mut |fs, hairpin| {
                                for f in fs.iter().filter(|f| f.data[12..14] == ETHERTYPE_TEST.to_be_bytes()) {
                                    got.push(f.data.to_vec());
                                    let mut back = f.data.to_vec();
                                    back[14..18].copy_from_slice(&8u32.to_be_bytes());
                                    assert_eq!(hairpin.tx_plain(&[&back]).unwrap(), 1);
                                }
                                hairpin.flush().unwrap();
                            })
                            .unwrap();
                        if n == 0 {
                            break;
                        }
                    }
                }
            }
            assert_eq!(got, vec![frame(7)]);
            let mut back = Vec::new();
            let end = deadline(10);
            while back.is_empty() && !expired(end) {
                poll.poll(&mut events, Some(std::time::Duration::from_millis(100))).unwrap();
                drain(&mut a, 16, &mut back);
            }
            assert_eq!(back.len(), 1);
            assert_eq!(back[0][14..18], 8u32.to_be_bytes());
        });
    }

    #[test]
    fn the_host_s_own_traffic_is_ignored_and_vlan_and_checksum_facts_are_reported() {
        in_netns(|| {
            veth();
            ip(&["link", "set", "va", "address", "02:00:00:00:00:0a"]);
            ip(&["addr", "add", "10.3.0.2/24", "dev", "vb"]);
            ip(&["neigh", "add", "10.3.0.1", "lladdr", "02:00:00:00:00:0a", "dev", "vb"]);
            let cfg = small_rings();
            let mut pa = AfPacket::open("va", &cfg).unwrap();
            let mut pb = AfPacket::open("vb", &cfg).unwrap();
            // vb's stack sends a datagram out of vb: va sees it, vb's own port does not.
            let sock = std::net::UdpSocket::bind("10.3.0.2:0").unwrap();
            sock.send_to(b"hello", "10.3.0.1:4444").unwrap();
            // A frame tagged with VLAN 42 from va's port: the kernel strips the tag on receipt.
            let mut tagged = frame(3);
            tagged.splice(12..12, [0x81, 0x00, 0x00, 42]);
            assert_eq!(pa.tx_plain(&[&tagged]).unwrap(), 1);
            pa.flush().unwrap();
            let is_udp =
                |d: &[u8]| d.len() > 42 && d[12..14] == [8, 0] && d[23] == 17 && d[36..38] == 4444u16.to_be_bytes();
            let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
            let end = deadline(10);
            while (at_a.is_empty() || at_b.is_empty()) && !expired(end) {
                for (port, out) in [(&mut pa, &mut at_a), (&mut pb, &mut at_b)] {
                    port.rx_batch(MAX_BATCH, &mut |fs, _| {
                        out.extend(
                            fs.iter()
                                .filter(|f| is_udp(f.data) || f.vlan.is_some())
                                .map(|f| (f.data.to_vec(), f.flags, f.vlan)),
                        );
                    })
                    .unwrap();
                }
                nap();
            }
            // One more look at vb a few milliseconds later: still no UDP datagram of its own.
            for _ in 0..20 {
                nap();
            }
            pb.rx_batch(MAX_BATCH, &mut |fs, _| assert!(!fs.iter().any(|f| is_udp(f.data)))).unwrap();
            assert_eq!(at_a.len(), 1, "{at_a:?}");
            assert!(is_udp(&at_a[0].0));
            // Sent by a local stack with checksum offload: the UDP checksum is left to "hardware".
            assert!(at_a[0].1.contains(RxFlags::CSUM_NOT_READY), "{:?}", at_a[0].1);
            assert!(at_b.iter().all(|(d, _, _)| !is_udp(d)));
            assert_eq!(at_b.len(), 1, "{at_b:?}");
            assert_eq!(at_b[0].2, Some(Vlan { tci: 42, tpid: 0x8100 }));
            assert_eq!(at_b[0].0, frame(3), "the tag is reported beside the frame, not in it");
        });
    }

    #[test]
    fn a_flush_while_the_interface_is_down_drops_and_the_ring_recovers() {
        in_netns(|| {
            veth();
            let cfg = small_rings();
            let mut tx = AfPacket::open("va", &cfg).unwrap();
            let mut rx = AfPacket::open("vb", &cfg).unwrap();
            ip(&["link", "set", "va", "down"]);
            let frames: Vec<Vec<u8>> = (0..3).map(frame).collect();
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            assert_eq!(tx.tx_plain(&refs).unwrap(), 3);
            tx.flush().unwrap();
            assert_eq!(tx.stats().tx_dropped, 3);
            ip(&["link", "set", "va", "up"]);
            // Every slot is usable again: a ring's worth of frames goes through.
            let mut got = Vec::new();
            let mut sent = 0;
            let end = deadline(10);
            while got.len() < 100 && !expired(end) {
                if sent < 100 {
                    let f = frame(sent as u32);
                    sent += tx.tx_plain(&[&f]).unwrap();
                    tx.flush().unwrap();
                }
                if drain(&mut rx, 64, &mut got) == 0 {
                    nap();
                }
            }
            assert_eq!(got.len(), 100);
            assert_eq!(got[99], frame(99));
        });
    }

    #[test]
    fn a_full_ring_counts_its_drops() {
        in_netns(|| {
            veth();
            let mut tx = AfPacket::open("va", &small_rings()).unwrap();
            let tiny = AfPacketConfig { block_size: 4096, block_count: 2, frame_size: 2048, ..small_rings() };
            let mut rx = AfPacket::open("vb", &tiny).unwrap();
            // 100 frames of 1000 bytes into a ring of 4 slots, none read meanwhile.
            let frames: Vec<Vec<u8>> =
                (0..100).map(|i| frame(i)[..60].iter().copied().chain([0; 940]).collect()).collect();
            let mut sent = 0;
            let end = deadline(10);
            while sent < frames.len() && !expired(end) {
                let chunk: Vec<&[u8]> = frames[sent..].iter().take(16).map(|f| &f[..]).collect();
                sent += tx.tx_plain(&chunk).unwrap();
                tx.flush().unwrap();
                nap();
            }
            assert_eq!(sent, 100);
            for _ in 0..20 {
                nap();
            }
            let mut got = Vec::new();
            drain(&mut rx, MAX_BATCH, &mut got);
            let s = rx.stats();
            assert!(got.len() < 100 && s.rx_dropped > 0, "{} delivered, {s:?}", got.len());
            assert!(got.len() as u64 + s.rx_dropped >= 100, "{} delivered, {s:?}", got.len());
            // The frames that made it are the first ones, intact.
            assert_eq!(got[..], frames[..got.len()]);
        });
    }

    #[test]
    fn a_fanout_group_shares_the_flows() {
        in_netns(|| {
            veth();
            let cfg = small_rings();
            let fan = AfPacketConfig { fanout: Some(Fanout { group: 77, defrag: false }), ..cfg.clone() };
            let mut tx = AfPacket::open("va", &cfg).unwrap();
            let mut w0 = AfPacket::open("vb", &fan).unwrap();
            let mut w1 = AfPacket::open("vb", &fan).unwrap();
            // 400 datagrams, 4 per flow over 100 flows (source ports).
            let a = PacketBuilder::v4(Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2));
            let frames: Vec<Vec<u8>> = (0..400u16)
                .map(|i| {
                    ethernet([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], &a.udp(10_000 + i % 100, 4242, &i.to_be_bytes()))
                })
                .collect();
            let ours = |f: &Frame<'_>| {
                f.data.len() > 42 && f.data[12..14] == [8, 0] && f.data[36..38] == 4242u16.to_be_bytes()
            };
            let mut seen: [HashMap<u16, usize>; 2] = [HashMap::new(), HashMap::new()];
            let mut sent = 0;
            let end = deadline(20);
            while seen.iter().map(|m| m.values().sum::<usize>()).sum::<usize>() < frames.len() && !expired(end) {
                if sent < frames.len() {
                    let chunk: Vec<&[u8]> =
                        frames[sent..(sent + 16).min(frames.len())].iter().map(|f| &f[..]).collect();
                    sent += tx.tx_plain(&chunk).unwrap();
                    tx.flush().unwrap();
                }
                let mut progress = 0;
                for (w, port) in [&mut w0, &mut w1].into_iter().enumerate() {
                    for _ in 0..100 {
                        let n = port
                            .rx_batch(32, &mut |fs, _| {
                                for f in fs.iter().filter(|f| ours(f)) {
                                    let sport = u16::from_be_bytes([f.data[34], f.data[35]]);
                                    *seen[w].entry(sport).or_default() += 1;
                                }
                            })
                            .unwrap();
                        progress += n;
                        if n == 0 {
                            break;
                        }
                    }
                }
                if progress == 0 {
                    nap();
                }
            }
            let counts: Vec<usize> = seen.iter().map(|m| m.values().sum()).collect();
            assert_eq!(counts.iter().sum::<usize>(), 400, "{counts:?}");
            assert!(counts.iter().all(|&c| c > 0), "one worker got everything: {counts:?}");
            // Hash mode: every flow went to exactly one worker, all 4 of its datagrams.
            let k0: HashSet<_> = seen[0].keys().collect();
            assert!(seen[1].keys().all(|k| !k0.contains(k)));
            assert!(seen.iter().flat_map(|m| m.values()).all(|&c| c == 4));
        });
    }

    /// The MAC address of interface `dev` (of the test's namespace: `/sys` shows the process's).
    fn mac_of(dev: &str) -> [u8; 6] {
        let link = ip(&["-o", "link", "show", dev]);
        let at = link.find("link/ether ").expect("an Ethernet interface") + 11;
        let mut mac = [0u8; 6];
        for (m, x) in mac.iter_mut().zip(link[at..at + 17].split(':')) {
            *m = u8::from_str_radix(x, 16).unwrap();
        }
        mac
    }

    fn ethtool(args: &[&str]) {
        let out = std::process::Command::new("ethtool").args(args).output().expect("running ethtool");
        assert!(out.status.success(), "ethtool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A TCP super-segment of `payload` from 10.3.0.1 to 10.3.0.2 as a sending stack with TSO
    /// leaves it: lengths of the whole, the checksum field holding the pseudo-header's sum only.
    fn super_frame(dst: [u8; 6], payload: &[u8]) -> (Vec<u8>, Offload) {
        let b = PacketBuilder::v4(Ipv4Addr::new(10, 3, 0, 1), Ipv4Addr::new(10, 3, 0, 2));
        let d = b.tcp(40000, 5001, 77, 1, tcp_flags::ACK | tcp_flags::PSH, 1024, &[], payload);
        let mut f = ethernet(dst, [2, 0, 0, 0, 0, 1], &d);
        // Full checksum C = ~(P + S); the partial field is P = ~C + ~S, ~S the checksum of the
        // segment with its field zeroed.
        let c = u16::from_be_bytes([f[50], f[51]]);
        f[50..52].fill(0);
        let not_s = proto::checksum::internet(&f[34..]);
        let sum = u32::from(!c) + u32::from(not_s);
        let p = ((sum & 0xffff) + (sum >> 16)) as u16;
        f[50..52].copy_from_slice(&p.to_be_bytes());
        let gso = Gso { kind: GsoKind::Tcp4, ecn: false, size: 1448, hdr_len: 54 };
        (f, Offload { gso: Some(gso), csum: Some(PartialCsum { start: 34, offset: 16 }), data_valid: false })
    }

    /// Every frame `port` receives within a second of quiet, with its flags and vnet header.
    fn collect(port: &mut AfPacket, want: usize) -> Vec<(Vec<u8>, RxFlags, Offload)> {
        let mut got = Vec::new();
        let end = deadline(10);
        while got.len() < want && !expired(end) {
            let n = port
                .rx_batch(MAX_BATCH, &mut |fs, _| {
                    got.extend(fs.iter().filter(|f| f.data.get(12..14) == Some(&[8, 0])).map(|f| {
                        assert_eq!(f.data.len() as u32, f.wire_len);
                        (f.data.to_vec(), f.flags, f.offload)
                    }));
                })
                .unwrap();
            if n == 0 {
                nap();
            }
        }
        got
    }

    #[test]
    fn super_frames_go_out_whole_with_their_vnet_header_and_are_cut_where_the_egress_cannot_take_them() {
        in_netns(|| {
            veth();
            ethtool(&["-K", "va", "tx", "on", "tso", "on", "gso", "on"]);
            ethtool(&["-K", "vb", "gro", "off"]);
            let mut a = AfPacket::open("va", &small_rings()).unwrap();
            let big = AfPacketConfig { block_size: 1 << 18, ..small_rings() };
            let mut b = AfPacket::open("vb", &big).unwrap();
            let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 13 + i / 256) as u8).collect();
            let (f, offload) = super_frame(mac_of("vb"), &payload);

            // TSO on the egress: the super-frame crosses the veth whole, and the receiving port
            // reads it whole with its description (the kernel's, for the same packet).
            assert_eq!(a.tx(&[TxFrame::new(&f, offload)]).unwrap(), 1);
            a.flush().unwrap();
            let got = collect(&mut b, 1);
            assert_eq!(got.len(), 1, "one super-frame: {:?}", got.iter().map(|g| g.0.len()).collect::<Vec<_>>());
            let (data, flags, off) = &got[0];
            assert_eq!(data, &f, "the bytes as sent, checksum still partial");
            assert!(flags.contains(RxFlags::GSO) && flags.contains(RxFlags::CSUM_NOT_READY), "{flags:?}");
            let g = off.gso.expect("a GSO description");
            assert_eq!((g.kind, g.size, g.ecn), (GsoKind::Tcp4, 1448, false));
            assert_eq!(off.csum, Some(PartialCsum { start: 34, offset: 16 }));
            assert_eq!((a.stats().tx_gso, b.stats().rx_gso), (1, 1));

            // TSO off: the kernel cuts it on the way out (the ring's qdisc bypass would drop it).
            ethtool(&["-K", "va", "tso", "off", "gso", "off"]);
            assert_eq!(a.tx(&[TxFrame::new(&f, offload)]).unwrap(), 1);
            a.flush().unwrap();
            let got = collect(&mut b, 14);
            assert_eq!(got.len(), 14, "20000 bytes in 1448-byte segments");
            let mut joined = Vec::new();
            for (i, (d, flags, off)) in got.iter().enumerate() {
                assert!(d.len() <= 1514 && off.gso.is_none() && !flags.contains(RxFlags::GSO));
                let seq = u32::from_be_bytes([d[38], d[39], d[40], d[41]]);
                assert_eq!(seq, 77 + i as u32 * 1448);
                joined.extend_from_slice(&d[54..]);
            }
            assert_eq!(joined, payload);

            // A plain frame longer than a ring slot goes the same way; one longer than the MTU
            // without GSO is refused by the kernel.
            let mut long = frame(1);
            long.resize(1514, 0x5a);
            let mut small = AfPacketConfig { tx_frame_size: 1024, ..small_rings() };
            small.tx_frames = 8;
            let mut c = AfPacket::open("va", &small).unwrap();
            assert_eq!(c.tx_plain(&[&long]).unwrap(), 1);
            let mut jumbo = long.clone();
            jumbo.resize(3000, 0);
            assert_eq!(c.tx_plain(&[&jumbo]).unwrap(), 0);
            assert_eq!((c.stats().tx_packets, c.stats().tx_errors), (1, 1));
        });
    }

    #[test]
    fn long_frames_come_through_the_socket_in_ring_order_and_a_batch_lends_at_most_the_copy_buffers() {
        in_netns(|| {
            veth();
            ethtool(&["-K", "va", "tx", "on", "tso", "on", "gso", "on"]);
            ethtool(&["-K", "vb", "gro", "off"]);
            let mut a = AfPacket::open("va", &small_rings()).unwrap();
            let mut b = AfPacket::open("vb", &small_rings()).unwrap();
            // Twenty super-frames (each its own payload) between twenty short frames, none read
            // until all are sent: more long frames than one batch has buffers for. Every other
            // pair is given in two pieces (headers, then the rest), as the router hands a
            // super-frame over, through the socket and through the ring.
            let mut sent = Vec::new();
            for i in 0..20u32 {
                let payload: Vec<u8> = (0..5000u32).map(|k| (k * 7 + i) as u8).collect();
                let (f, offload) = super_frame(mac_of("vb"), &payload);
                let short = frame(i)[..60].to_vec();
                let (long_tx, short_tx) = if i % 2 == 0 {
                    (TxFrame::new(&f, offload), TxFrame::plain(&short))
                } else {
                    let ((lh, lt), (sh, st)) = (f.split_at(54), short.split_at(14));
                    (TxFrame { data: lh, tail: lt, offload }, TxFrame { data: sh, tail: st, offload: Offload::NONE })
                };
                assert_eq!(a.tx(&[long_tx]).unwrap(), 1);
                assert_eq!(a.tx(&[short_tx]).unwrap(), 1);
                sent.push(f);
                a.flush().unwrap();
                sent.push(short);
            }
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut batches = Vec::new();
            let end = deadline(10);
            while got.len() < sent.len() && !expired(end) {
                let mut long = 0;
                let n = b
                    .rx_batch(MAX_BATCH, &mut |fs, _| {
                        for f in fs.iter().filter(|f| matches!(f.data.get(12..14), Some([8, 0]) | Some([0x88, 0xb5]))) {
                            assert_eq!(f.data.len() as u32, f.wire_len, "whole, not truncated");
                            long += usize::from(f.data.len() > 2048);
                            got.push(f.data.to_vec());
                        }
                    })
                    .unwrap();
                if n == 0 {
                    nap();
                } else {
                    batches.push(long);
                }
            }
            assert!(got == sent, "{} of {} frames, or out of order", got.len(), sent.len());
            assert!(batches.iter().all(|&l| l <= COPY_BUFFERS), "long frames per batch: {batches:?}");
            assert!(batches.len() >= 3, "20 long frames need at least 3 batches of 8: {batches:?}");
            assert_eq!(b.stats().rx_gso, 20);
        });
    }

    #[test]
    fn vnet_headers_round_trip() {
        let (_, off) = super_frame([2; 6], &[0; 100]);
        let h = off.encode();
        assert_eq!(h[0], 1, "NEEDS_CSUM");
        assert_eq!(h[1], 1, "GSO_TCPV4");
        assert_eq!(Offload::decode(&h), Some(off));
        assert_eq!(Offload::NONE.encode(), [0; VNET_HDR_LEN]);
        assert_eq!(Offload::decode(&[0; VNET_HDR_LEN]), Some(Offload::NONE));
        let v6 = Offload {
            gso: Some(Gso { kind: GsoKind::Tcp6, ecn: true, size: 1428, hdr_len: 86 }),
            csum: Some(PartialCsum { start: 54, offset: 16 }),
            data_valid: false,
        };
        assert_eq!(v6.encode()[1], 0x84, "GSO_TCPV6 | GSO_ECN");
        assert_eq!(Offload::decode(&v6.encode()), Some(v6));
        assert_eq!(v6.shifted(4).csum, Some(PartialCsum { start: 58, offset: 16 }));
        let valid = Offload { data_valid: true, ..Offload::NONE };
        assert_eq!(Offload::decode(&valid.encode()), Some(valid));
        // To transmit, a plain frame is declared all header (the kernel copies it whole); a
        // super-frame keeps its real header length, which segmentation needs.
        let partial = Offload { csum: Some(PartialCsum { start: 34, offset: 16 }), ..Offload::NONE };
        assert_eq!(u16::from_ne_bytes([partial.encode_for_tx(60)[2], partial.encode_for_tx(60)[3]]), 60);
        assert_eq!(Offload::NONE.encode_for_tx(1514)[2..4], 1514u16.to_ne_bytes());
        assert_eq!(v6.encode_for_tx(65000), v6.encode());
        // Legacy UFO (3): not a kind this knows.
        let mut ufo = [0; VNET_HDR_LEN];
        ufo[1] = 3;
        assert_eq!(Offload::decode(&ufo), None);
    }

    #[test]
    fn bad_geometry_and_missing_interfaces_say_what_failed() {
        let e = AfPacket::open("lo", &AfPacketConfig { block_size: 1000, ..AfPacketConfig::default() }).err().unwrap();
        assert!(e.to_string().starts_with("port lo: checking the ring geometry: "), "{e}");
        let e = AfPacket::open("nonexistent0", &AfPacketConfig::default()).err().unwrap();
        assert_eq!(e.op, "looking up the interface");
        assert_eq!(e.source.raw_os_error(), Some(libc::ENODEV));
    }
}

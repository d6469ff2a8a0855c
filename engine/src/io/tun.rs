//! A TUN interface: IP datagrams to and from the host's stack, one queue per worker.
//!
//! [`Tun::open`] creates (or attaches to) interface `name` with `IFF_TUN | IFF_NO_PI |
//! IFF_MULTI_QUEUE` and, by default, `IFF_VNET_HDR`, and opens one non-blocking descriptor per
//! queue; the kernel spreads the interface's outgoing packets over the queues by flow, so each
//! worker owns one [`TunQueue`]. A non-persistent interface disappears when its last queue is
//! closed.
//!
//! * Frames are **bare IP datagrams** ([`Link::RawIp`]): no Ethernet header and no packet-info
//!   prefix. The worker does L2 only for Ethernet ports.
//! * **Offloads** ([`TunConfig::vnet`], on by default): every datagram read or written is preceded
//!   by a `struct virtio_net_hdr`, and the queue declares with `TUNSETOFFLOAD` that it takes
//!   partial checksums and TCP super-packets (`TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 |
//!   TUN_F_TSO_ECN`). The device then has TSO: the kernel routes a GSO or GRO super-packet of up
//!   to 64 KiB into it whole instead of cutting it first, [`Frame::offload`] describes it (offsets
//!   from the IP header), and writing it back with its description ([`TxFrame::offload`]) lets
//!   the kernel route it onward whole. A packet whose checksum the kernel left partial is read with
//!   `NEEDS_CSUM` (flagged `CSUM_NOT_READY`) and must be written back the same way. The buffers
//!   then hold 64 KiB and the header each. Without vnet headers the kernel cuts super-packets and
//!   completes checksums before the read, and every datagram fits the MTU.
//! * The kernel has no batched read for TUN: [`Port::rx_batch`] reads one datagram per `read` until
//!   `max` or `EAGAIN`, into a buffer pool allocated at open (`batch` buffers of at least the
//!   interface MTU: a datagram longer than its buffer cannot be read whole, so the buffers are sized
//!   from the MTU at open — raise the MTU only with a larger [`TunConfig::buf_size`]). A datagram the
//!   kernel cannot describe with a vnet header (`EINVAL` from the read: a GSO kind TUN does not
//!   carry) is lost and counted in `rx_dropped`.
//! * [`Tx::tx`] writes each datagram (after its vnet header) with one `write`/`writev` (the kernel
//!   injects it into the host's stack as if received on the interface); `flush` has nothing to do.
//!   A datagram the kernel refuses (not IP, bad length, a vnet header that does not fit it) is
//!   counted in `tx_errors`; `EIO` (the interface is down) or `EAGAIN` drops the rest of the batch
//!   into `tx_dropped`. Only a detached queue (`EBADFD`) is an error.
//! * Frames carry no timestamp (`timestamp_ns` is 0); their checksum facts are the vnet header's.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::port::{
    Frame, Frames, Link, Offload, Port, PortError, PortStats, RxFlags, Tx, TxFrame, MAX_BATCH, VNET_HDR_LEN,
};
use super::sys;

/// The largest IP datagram, what a buffer must hold with vnet headers (super-packets).
const MAX_DATAGRAM: usize = 65_535;

/// Buffer pool and offloads of one [`TunQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Buffers per queue: the most datagrams one `rx_batch` returns.
    pub batch: usize,
    /// Size of each buffer; raised to the interface's MTU at open if smaller (with `vnet`, to the
    /// largest datagram and its header).
    pub buf_size: usize,
    /// Vnet headers and offloads (`IFF_VNET_HDR`, `TUNSETOFFLOAD`): super-packets pass whole.
    pub vnet: bool,
}

impl Default for TunConfig {
    /// 64 buffers, vnet headers on (so 64 KiB each: 4 MiB a queue).
    fn default() -> Self {
        TunConfig { batch: 64, buf_size: 2048, vnet: true }
    }
}

/// Opens TUN interfaces.
pub struct Tun;

impl Tun {
    /// Creates or attaches to TUN interface `name` (empty: the kernel picks `tunN`) with `queues`
    /// queues and the default buffer pool.
    pub fn open(name: &str, queues: usize) -> Result<Vec<TunQueue>, PortError> {
        Tun::open_with(name, queues, &TunConfig::default())
    }

    /// As [`Tun::open`], with the buffer pool and offloads `cfg`.
    pub fn open_with(name: &str, queues: usize, cfg: &TunConfig) -> Result<Vec<TunQueue>, PortError> {
        let mut out = Vec::with_capacity(queues);
        let mut ifname = name.to_owned();
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
        if cfg.vnet {
            flags |= libc::IFF_VNET_HDR;
        }
        for _ in 0..queues.max(1) {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open("/dev/net/tun")
                .map_err(|e| PortError::new(&ifname, "opening /dev/net/tun", e))?;
            ifname = sys::tun_set_iff(file.as_raw_fd(), &ifname, flags)
                .map_err(|e| PortError::new(&ifname, "attaching a queue (TUNSETIFF)", e))?;
            if cfg.vnet {
                let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
                sys::tun_set_offload(file.as_raw_fd(), offloads)
                    .map_err(|e| PortError::new(&ifname, "declaring offloads (TUNSETOFFLOAD)", e))?;
            }
            out.push(file);
        }
        let mtu = sys::if_mtu(&ifname).map_err(|e| PortError::new(&ifname, "reading the MTU", e))? as usize;
        let hdr = if cfg.vnet { VNET_HDR_LEN } else { 0 };
        let buf_size = cfg.buf_size.max(mtu).max(if cfg.vnet { hdr + MAX_DATAGRAM } else { 0 });
        let batch = cfg.batch.clamp(1, MAX_BATCH);
        Ok(out
            .into_iter()
            .map(|file| TunQueue {
                name: ifname.clone(),
                file,
                pool: vec![0; batch * buf_size],
                buf_size,
                hdr,
                lens: Vec::with_capacity(batch),
                stats: PortStats::default(),
            })
            .collect())
    }
}

/// One queue of a TUN interface: a [`Port`] of raw IP datagrams.
pub struct TunQueue {
    name: String,
    file: File,
    /// `batch` buffers of `buf_size` bytes, back to back.
    pool: Vec<u8>,
    buf_size: usize,
    /// The vnet header's length before every datagram: 0 without vnet headers.
    hdr: usize,
    /// Lengths of the datagrams (with their headers) read into the pool in this batch.
    lens: Vec<usize>,
    stats: PortStats,
}

/// The transmit half: the queue's descriptor, whether it takes vnet headers, its counters.
struct TunTx<'a> {
    file: &'a File,
    vnet: bool,
    stats: &'a mut PortStats,
}

impl Tx for TunTx<'_> {
    fn tx(&mut self, frames: &[TxFrame<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for (i, f) in frames.iter().enumerate() {
            let written = if self.vnet {
                let hdr = Offload { data_valid: false, ..f.offload }.encode();
                sys::write_parts(self.file.as_raw_fd(), &[&hdr, f.data, f.tail])
            } else if f.tail.is_empty() {
                (&mut &*self.file).write(f.data)
            } else {
                sys::write_parts(self.file.as_raw_fd(), &[f.data, f.tail])
            };
            match written {
                Ok(_) => {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += f.wire_len() as u64;
                    self.stats.tx_gso += u64::from(self.vnet && f.offload.gso.is_some());
                    n += 1;
                }
                // EIO: the interface is down.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EIO) => {
                    self.stats.tx_dropped += (frames.len() - i) as u64;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.stats.tx_dropped += 1,
                // The interface went away: that is the port failing, not the frame.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBADFD | libc::ENODEV)) => return Err(e),
                Err(_) => self.stats.tx_errors += 1,
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Tx for TunQueue {
    fn tx(&mut self, frames: &[TxFrame<'_>]) -> io::Result<usize> {
        TunTx { file: &self.file, vnet: self.hdr > 0, stats: &mut self.stats }.tx(frames)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Port for TunQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn link(&self) -> Link {
        Link::RawIp
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn rx_batch(&mut self, max: usize, f: &mut dyn FnMut(&[Frame<'_>], &mut dyn Tx)) -> io::Result<usize> {
        let max = max.min(self.pool.len() / self.buf_size);
        self.lens.clear();
        let mut err = None;
        let mut bufs = self.pool.chunks_exact_mut(self.buf_size).take(max);
        let mut buf = bufs.next();
        while let Some(b) = buf.as_deref_mut() {
            match (&mut &self.file).read(b) {
                Ok(len) if len < self.hdr => self.stats.rx_dropped += 1,
                Ok(len) => {
                    self.lens.push(len);
                    buf = bufs.next();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
                // A packet the kernel could not describe with a vnet header: dropped, next.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.hdr > 0 => self.stats.rx_dropped += 1,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let n = self.lens.len();
        if n == 0 {
            return err.map_or(Ok(0), Err);
        }
        let mut frames = Frames::new();
        for (i, &len) in self.lens.iter().enumerate() {
            let start = i * self.buf_size;
            let (offload, mut flags) = (Offload::NONE, RxFlags::empty());
            let offload = if self.hdr > 0 {
                let mut h = [0u8; VNET_HDR_LEN];
                h.copy_from_slice(&self.pool[start..start + VNET_HDR_LEN]);
                Offload::decode(&h).unwrap_or(offload)
            } else {
                offload
            };
            flags = offload.rx_flags(flags);
            self.stats.rx_gso += u64::from(offload.gso.is_some());
            let data = &self.pool[start + self.hdr..start + len];
            frames.push(Frame { data, wire_len: data.len() as u32, flags, vlan: None, timestamp_ns: 0, offload });
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += data.len() as u64;
        }
        f(&frames, &mut TunTx { file: &self.file, vnet: self.hdr > 0, stats: &mut self.stats });
        // An error after some datagrams were read shows up again on the next call.
        Ok(n)
    }

    fn stats(&mut self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::time::Duration;

    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use proto::build::PacketBuilder;
    use proto::packet::parse_ip;

    use super::super::port::testutil::{deadline, expired, in_netns, ip};
    use super::*;

    #[test]
    fn a_datagram_routed_into_the_tun_is_read_and_a_reply_written_back_reaches_the_socket() {
        in_netns(|| {
            let mut queues = Tun::open("fwtun0", 2).unwrap();
            assert_eq!(queues.len(), 2);
            assert!(queues.iter().all(|q| q.name() == "fwtun0" && q.link() == Link::RawIp));
            ip(&["addr", "add", "10.9.0.1/24", "dev", "fwtun0"]);
            ip(&["link", "set", "fwtun0", "up"]);

            let sock = UdpSocket::bind("10.9.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let local = match sock.local_addr().unwrap() {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
            };
            // Several datagrams of one flow: they all go to the same queue.
            for i in 0..5u8 {
                sock.send_to(&[b'p', i], "10.9.0.2:5353").unwrap();
            }

            let mut poll = Poll::new().unwrap();
            for (i, q) in queues.iter().enumerate() {
                let fd = q.raw_fd().unwrap();
                poll.registry().register(&mut SourceFd(&fd), Token(i), Interest::READABLE).unwrap();
            }
            let mut events = Events::with_capacity(8);
            let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
            let end = deadline(10);
            while got.iter().filter(|(_, d)| d.len() == 30).count() < 5 && !expired(end) {
                poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
                for (qi, q) in queues.iter_mut().enumerate() {
                    for _ in 0..100 {
                        // max 2: several batches per wake-up.
                        let n = q
                            .rx_batch(2, &mut |fs, _| {
                                assert!(fs.len() <= 2);
                                // Keep our UDP datagrams; the stack may also send IPv6 router
                                // solicitations and the like.
                                got.extend(
                                    fs.iter()
                                        .filter(|f| f.data[0] >> 4 == 4 && f.data[9] == 17)
                                        .map(|f| (qi, f.data.to_vec())),
                                );
                            })
                            .unwrap();
                        if n == 0 {
                            break;
                        }
                    }
                }
            }
            let ours: Vec<&(usize, Vec<u8>)> = got.iter().filter(|(_, d)| d.len() == 30).collect();
            assert_eq!(ours.len(), 5, "{got:?}");
            assert!(ours.iter().all(|(q, _)| *q == ours[0].0), "one flow, one queue");
            for (i, (_, d)) in ours.iter().enumerate() {
                assert!(parse_ip(d, 0).is_ok());
                assert_eq!(&d[12..16], &[10, 9, 0, 1]);
                assert_eq!(&d[16..20], &[10, 9, 0, 2]);
                assert_eq!(u16::from_be_bytes([d[20], d[21]]), local.port());
                assert_eq!(&d[28..], &[b'p', i as u8]);
            }
            let q = &mut queues[ours[0].0];
            let s = q.stats();
            assert!(s.rx_packets >= 5 && s.rx_bytes >= 150);

            // The reply, written into the TUN, arrives at the socket as from 10.9.0.2:5353.
            let reply = PacketBuilder::v4(Ipv4Addr::new(10, 9, 0, 2), *local.ip()).udp(5353, local.port(), b"pong");
            // Not IP (version 0): the kernel refuses it with EINVAL.
            assert_eq!(q.tx_plain(&[&reply, &[0u8; 20]]).unwrap(), 1);
            q.flush().unwrap();
            let s = q.stats();
            assert_eq!((s.tx_packets, s.tx_bytes, s.tx_errors), (1, reply.len() as u64, 1));
            let mut buf = [0u8; 64];
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"pong");
            assert_eq!(from, "10.9.0.2:5353".parse::<SocketAddr>().unwrap());
        });
    }

    #[test]
    fn the_kernel_names_the_interface_and_buffers_follow_the_mtu() {
        in_netns(|| {
            let queues = Tun::open_with("", 1, &TunConfig { batch: 4, buf_size: 100, vnet: false }).unwrap();
            let q = &queues[0];
            assert!(q.name().starts_with("tun"), "{}", q.name());
            assert_eq!(q.buf_size, 1500);
            assert_eq!(q.pool.len(), 4 * 1500);
            // The interface is down: datagrams written are dropped, not errors.
            let mut q = queues.into_iter().next().unwrap();
            let d = PacketBuilder::v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)).udp(1, 2, b"x");
            assert_eq!(q.tx_plain(&[&d, &d]).unwrap(), 0);
            let s = q.stats();
            assert_eq!((s.tx_packets, s.tx_dropped, s.tx_errors), (0, 2, 0));
        });
    }
}

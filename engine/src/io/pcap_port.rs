//! A port over pcap files, for replay and tests: frames are read from one capture and transmitted
//! frames are written to another.
//!
//! * Reading streams the file (any `Read`): each batch's frames are copied into one arena that is
//!   reused from batch to batch (grown, never shrunk), so there is no allocation per packet once
//!   the arena has reached the size of the largest batch. Frames carry the capture's timestamps.
//! * Ethernet captures (`LINKTYPE_ETHERNET`) give [`Link::Ethernet`] frames; raw-IP ones
//!   (`LINKTYPE_RAW`, `LINKTYPE_IPV4`, `LINKTYPE_IPV6`) give [`Link::RawIp`]; any other link type is
//!   refused at open.
//! * Writing stamps each frame with the time of the last frame read (so a replay's output keeps
//!   the capture's clock), or with the wall clock on a write-only port, or with a fixed time set by
//!   [`PcapPort::set_timestamp`]. `flush` flushes the writer.
//! * There is no descriptor to wait on ([`Port::raw_fd`] is `None`): the reader is always ready;
//!   once `rx_batch` returns 0, [`PcapPort::at_end`] says the capture is finished. A port with no
//!   reader never receives; one with no writer drops what it is given (counted in `tx_dropped`).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::RawFd;
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapReader};
use pcap_file::DataLink;

use super::port::{Frame, Frames, Link, Offload, Port, PortError, PortStats, RxFlags, Tx, TxFrame, MAX_BATCH};

/// The written captures' snapshot length (libpcap's largest); longer frames are refused.
const SNAPLEN: u32 = 262_144;

/// When transmitted frames are stamped.
#[derive(Debug, Clone, Copy)]
enum Clock {
    Wall,
    Fixed(Duration),
}

/// A pcap writer we can flush (pcap-file's does not lend its inner writer): the header through
/// pcap-file, then big-endian records with nanosecond timestamps.
struct Writer<W: Write> {
    out: W,
    clock: Clock,
    stats: PortStats,
}

/// Reads frames from a capture and writes transmitted frames to another.
pub struct PcapPort<R: Read = BufReader<File>, W: Write = BufWriter<File>> {
    name: String,
    link: Link,
    reader: Option<PcapReader<R>>,
    at_end: bool,
    /// The batch's bytes, and each frame's (start, len, wire_len, timestamp) in it.
    arena: Vec<u8>,
    spans: Vec<(usize, usize, u32, u64)>,
    rx: PortStats,
    writer: Option<Writer<W>>,
    /// Frames given to a port without a writer.
    unwritten: u64,
}

fn link_of(dl: DataLink) -> Option<Link> {
    match dl {
        DataLink::ETHERNET => Some(Link::Ethernet),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Some(Link::RawIp),
        _ => None,
    }
}

fn datalink_of(link: Link) -> DataLink {
    match link {
        Link::Ethernet => DataLink::ETHERNET,
        Link::RawIp => DataLink::RAW,
    }
}

fn pcap_err(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

fn open_reader<R: Read>(name: &str, r: R) -> Result<(PcapReader<R>, Link), PortError> {
    let reader = PcapReader::new(r).map_err(|e| PortError::new(name, "reading the pcap header", pcap_err(e)))?;
    let dl = reader.header().datalink;
    let link = link_of(dl).ok_or_else(|| {
        PortError::new(
            name,
            "reading the pcap header",
            io::Error::new(io::ErrorKind::Unsupported, format!("link type {dl:?} is neither Ethernet nor raw IP")),
        )
    })?;
    Ok((reader, link))
}

fn open_writer<W: Write>(name: &str, w: W, link: Link, clock: Clock) -> Result<Writer<W>, PortError> {
    let header = PcapHeader {
        datalink: datalink_of(link),
        ts_resolution: pcap_file::TsResolution::NanoSecond,
        endianness: pcap_file::Endianness::Big,
        snaplen: SNAPLEN,
        ..PcapHeader::default()
    };
    let mut out = w;
    header.write_to(&mut out).map_err(|e| PortError::new(name, "writing the pcap header", pcap_err(e)))?;
    Ok(Writer { out, clock, stats: PortStats::default() })
}

impl PcapPort<BufReader<File>, BufWriter<File>> {
    /// Reads `input` and/or writes `output` (created or truncated). A port with only an output
    /// writes Ethernet frames.
    pub fn open(input: Option<&Path>, output: Option<&Path>) -> Result<Self, PortError> {
        let name = match (input, output) {
            (Some(i), Some(o)) => format!("{}>{}", i.display(), o.display()),
            (Some(p), None) | (None, Some(p)) => p.display().to_string(),
            (None, None) => "pcap".to_owned(),
        };
        let (reader, link) = match input {
            Some(p) => {
                let f = File::open(p).map_err(|e| PortError::new(&name, "opening the input capture", e))?;
                let (r, l) = open_reader(&name, BufReader::new(f))?;
                (Some(r), l)
            }
            None => (None, Link::Ethernet),
        };
        let writer = match output {
            Some(p) => {
                let f = File::create(p).map_err(|e| PortError::new(&name, "creating the output capture", e))?;
                let clock = if reader.is_some() { Clock::Fixed(Duration::ZERO) } else { Clock::Wall };
                Some(open_writer(&name, BufWriter::new(f), link, clock)?)
            }
            None => None,
        };
        Ok(PcapPort::assemble(name, link, reader, writer))
    }
}

impl<R: Read> PcapPort<R, io::Sink> {
    /// A port that reads the capture `r` and transmits nowhere.
    pub fn reader(r: R) -> Result<Self, PortError> {
        let (reader, link) = open_reader("pcap", r)?;
        Ok(PcapPort::assemble("pcap".to_owned(), link, Some(reader), None))
    }
}

impl<W: Write> PcapPort<io::Empty, W> {
    /// A port that receives nothing and writes transmitted `link` frames to `w`, stamped with the
    /// wall clock.
    pub fn writer(w: W, link: Link) -> Self {
        // Writing the 24-byte header only fails if `w` does; the first `tx` will report it again.
        let writer = open_writer("pcap", w, link, Clock::Wall).ok();
        PcapPort::assemble("pcap".to_owned(), link, None, writer)
    }
}

impl<R: Read, W: Write> PcapPort<R, W> {
    /// A port that reads the capture `r` and writes transmitted frames to `w`, with the same link
    /// type, stamped with the time of the last frame read.
    pub fn new(r: R, w: W) -> Result<Self, PortError> {
        let (reader, link) = open_reader("pcap", r)?;
        let writer = open_writer("pcap", w, link, Clock::Fixed(Duration::ZERO))?;
        Ok(PcapPort::assemble("pcap".to_owned(), link, Some(reader), Some(writer)))
    }

    fn assemble(name: String, link: Link, reader: Option<PcapReader<R>>, writer: Option<Writer<W>>) -> Self {
        PcapPort {
            name,
            link,
            at_end: reader.is_none(),
            reader,
            arena: Vec::new(),
            spans: Vec::with_capacity(MAX_BATCH),
            rx: PortStats::default(),
            writer,
            unwritten: 0,
        }
    }

    /// Stamps the frames transmitted from now on with `ts` (since the Unix epoch).
    pub fn set_timestamp(&mut self, ts: Duration) {
        if let Some(w) = &mut self.writer {
            w.clock = Clock::Fixed(ts);
        }
    }

    /// Whether the whole input has been delivered (always true without an input).
    pub fn at_end(&self) -> bool {
        self.at_end
    }

    /// Flushes and returns the output writer.
    pub fn into_output(self) -> io::Result<W> {
        let mut w = self.writer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no output"))?.out;
        w.flush()?;
        Ok(w)
    }

    /// Reads up to `max` packets into the arena.
    fn fill(&mut self, max: usize) -> io::Result<()> {
        self.arena.clear();
        self.spans.clear();
        let Some(reader) = &mut self.reader else { return Ok(()) };
        while self.spans.len() < max {
            match reader.next_packet() {
                None => {
                    self.at_end = true;
                    break;
                }
                Some(Err(e)) => return Err(pcap_err(e)),
                Some(Ok(p)) => {
                    let start = self.arena.len();
                    self.arena.extend_from_slice(&p.data);
                    let ts = u64::try_from(p.timestamp.as_nanos()).unwrap_or(u64::MAX);
                    self.spans.push((start, p.data.len(), p.orig_len, ts));
                }
            }
        }
        Ok(())
    }
}

impl<W: Write> Writer<W> {
    #[allow(clippy::disallowed_methods)] // io owns the clocks
    fn now(&self) -> Duration {
        match self.clock {
            Clock::Fixed(t) => t,
            Clock::Wall => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default(),
        }
    }

    /// Writes the frames' bytes as they are: a super-frame as one record, a partial checksum as
    /// the sender left it (what `tcpdump` shows on the interface too).
    fn tx(&mut self, frames: &[TxFrame<'_>]) -> io::Result<usize> {
        let ts = self.now();
        let mut n = 0;
        for f in frames {
            let Some(len) = u32::try_from(f.wire_len()).ok().filter(|&l| l <= SNAPLEN) else {
                self.stats.tx_errors += 1;
                continue;
            };
            let secs = u32::try_from(ts.as_secs()).unwrap_or(u32::MAX);
            let mut rec = [0u8; 16];
            rec[0..4].copy_from_slice(&secs.to_be_bytes());
            rec[4..8].copy_from_slice(&ts.subsec_nanos().to_be_bytes());
            rec[8..12].copy_from_slice(&len.to_be_bytes());
            rec[12..16].copy_from_slice(&len.to_be_bytes());
            self.out.write_all(&rec)?;
            self.out.write_all(f.data)?;
            self.out.write_all(f.tail)?;
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += u64::from(len);
            self.stats.tx_gso += u64::from(f.offload.gso.is_some());
            n += 1;
        }
        Ok(n)
    }
}

/// The transmit half of a [`PcapPort`]: its writer, or a sink that counts.
struct TxHalf<'a, W: Write> {
    writer: Option<&'a mut Writer<W>>,
    unwritten: &'a mut u64,
}

impl<W: Write> Tx for TxHalf<'_, W> {
    fn tx(&mut self, frames: &[TxFrame<'_>]) -> io::Result<usize> {
        match &mut self.writer {
            Some(w) => w.tx(frames),
            None => {
                *self.unwritten += frames.len() as u64;
                Ok(0)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.writer {
            Some(w) => w.out.flush(),
            None => Ok(()),
        }
    }
}

impl<R: Read, W: Write> Tx for PcapPort<R, W> {
    fn tx(&mut self, frames: &[TxFrame<'_>]) -> io::Result<usize> {
        TxHalf { writer: self.writer.as_mut(), unwritten: &mut self.unwritten }.tx(frames)
    }

    fn flush(&mut self) -> io::Result<()> {
        TxHalf { writer: self.writer.as_mut(), unwritten: &mut self.unwritten }.flush()
    }
}

impl<R: Read + Send, W: Write + Send> Port for PcapPort<R, W> {
    fn name(&self) -> &str {
        &self.name
    }

    fn link(&self) -> Link {
        self.link
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    fn rx_batch(&mut self, max: usize, f: &mut dyn FnMut(&[Frame<'_>], &mut dyn Tx)) -> io::Result<usize> {
        self.fill(max.min(MAX_BATCH))?;
        let n = self.spans.len();
        if n == 0 {
            return Ok(0);
        }
        let mut frames = Frames::new();
        for &(start, len, wire_len, ts) in &self.spans {
            let data = &self.arena[start..start + len];
            let mut flags = RxFlags::empty();
            if (len as u64) < u64::from(wire_len) {
                flags = flags.with(RxFlags::TRUNCATED);
                self.rx.rx_truncated += 1;
            }
            frames.push(Frame { data, wire_len, flags, vlan: None, timestamp_ns: ts, offload: Offload::NONE });
            self.rx.rx_packets += 1;
            self.rx.rx_bytes += len as u64;
        }
        if let Some(w) = &mut self.writer {
            if let (Clock::Fixed(_), Some(&(_, _, _, ts))) = (w.clock, self.spans.last()) {
                w.clock = Clock::Fixed(Duration::from_nanos(ts));
            }
        }
        let mut tx = TxHalf { writer: self.writer.as_mut(), unwritten: &mut self.unwritten };
        f(&frames, &mut tx);
        Ok(n)
    }

    fn stats(&mut self) -> PortStats {
        let mut s = self.rx;
        if let Some(w) = &self.writer {
            s.tx_packets = w.stats.tx_packets;
            s.tx_bytes = w.stats.tx_bytes;
            s.tx_errors = w.stats.tx_errors;
            s.tx_gso = w.stats.tx_gso;
        }
        s.tx_dropped = self.unwritten;
        s
    }
}

#[cfg(test)]
mod tests {
    use pcap_file::pcap::{PcapPacket, PcapWriter};

    use super::*;

    fn frames() -> Vec<Vec<u8>> {
        (0..10u8).map(|i| (0..60 + i).map(|b| b ^ i).collect()).collect()
    }

    #[test]
    fn frames_written_read_back_with_timestamps_and_truncation() {
        let frames = frames();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let mut w = PcapPort::writer(Vec::new(), Link::RawIp);
        w.set_timestamp(Duration::new(1_700_000_000, 123_456_789));
        assert_eq!(w.tx_plain(&refs[..4]).unwrap(), 4);
        w.set_timestamp(Duration::new(1_700_000_001, 0));
        assert_eq!(w.tx_plain(&refs[4..]).unwrap(), 6);
        w.flush().unwrap();
        let s = w.stats();
        assert_eq!((s.tx_packets, s.rx_packets), (10, 0));
        assert_eq!(s.tx_bytes, refs.iter().map(|f| f.len() as u64).sum::<u64>());
        let bytes = w.into_output().unwrap();

        let mut r = PcapPort::reader(bytes.as_slice()).unwrap();
        assert_eq!((r.link(), r.raw_fd(), r.at_end()), (Link::RawIp, None, false));
        let mut got: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut calls = 0;
        while calls < 10 {
            let n = r
                .rx_batch(3, &mut |fs, _| {
                    assert!(fs.len() <= 3);
                    got.extend(fs.iter().map(|f| (f.data.to_vec(), f.timestamp_ns)));
                })
                .unwrap();
            calls += 1;
            if n == 0 {
                break;
            }
        }
        assert!(r.at_end());
        assert_eq!(calls, 5); // 3 + 3 + 3 + 1, then 0
        assert_eq!(got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), frames);
        assert_eq!(got[0].1, 1_700_000_000_123_456_789);
        assert_eq!(got[9].1, 1_700_000_001_000_000_000);
        // Frames sent to a port without a writer are counted as dropped.
        assert_eq!(r.tx_plain(&refs).unwrap(), 0);
        assert_eq!(r.stats().tx_dropped, 10);
        assert_eq!(r.stats().rx_packets, 10);
    }

    #[test]
    fn truncated_frames_are_flagged_and_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("ferrowall-pcap-port-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        struct Rm(std::path::PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _rm = Rm(dir.clone());
        // A capture with one frame cut to 20 of its 100 bytes.
        let input = dir.join("in.pcap");
        let mut w = PcapWriter::new(File::create(&input).unwrap()).unwrap();
        w.write_packet(&PcapPacket::new(Duration::from_secs(5), 100, &[9u8; 20])).unwrap();
        w.write_packet(&PcapPacket::new(Duration::from_secs(6), 30, &[8u8; 30])).unwrap();
        drop(w);
        let output = dir.join("out.pcap");
        let mut p = PcapPort::open(Some(&input), Some(&output)).unwrap();
        assert_eq!(p.link(), Link::Ethernet);
        let n = p
            .rx_batch(64, &mut |fs, tx| {
                assert!(fs[0].flags.contains(RxFlags::TRUNCATED));
                assert_eq!((fs[0].data.len(), fs[0].wire_len), (20, 100));
                assert!(!fs[1].flags.contains(RxFlags::TRUNCATED));
                assert_eq!(tx.tx_plain(&[fs[1].data]).unwrap(), 1);
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(p.rx_batch(64, &mut |_, _| panic!("no more frames")).unwrap(), 0);
        let s = p.stats();
        assert_eq!((s.rx_packets, s.rx_truncated, s.tx_packets), (2, 1, 1));
        p.into_output().unwrap();
        // The output carries the last read frame's time.
        let mut r = PcapReader::new(File::open(&output).unwrap()).unwrap();
        let pkt = r.next_packet().unwrap().unwrap();
        assert_eq!((pkt.timestamp, pkt.data.as_ref()), (Duration::from_secs(6), &[8u8; 30][..]));
        assert!(r.next_packet().is_none());
    }

    #[test]
    fn other_link_types_are_refused() {
        let header = PcapHeader { datalink: DataLink::LINUX_SLL, ..PcapHeader::default() };
        let bytes = PcapWriter::with_header(Vec::new(), header).unwrap().into_writer();
        let e = PcapPort::reader(bytes.as_slice()).err().unwrap();
        assert_eq!(e.source.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().starts_with("port pcap: reading the pcap header: "), "{e}");
    }
}

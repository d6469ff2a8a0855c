//! Runs a packet capture through the engine: the capture's timestamps drive the clock, every
//! packet is accepted (no rule set), and the table is printed as `conntrack -L` prints it.

use std::fmt::Write as _;
use std::io::Read;

use pcap_file::pcap::PcapReader;
use pcap_file::DataLink;
use proto::packet::{self, Packet};

use crate::clock::Timestamp;
use crate::conntrack::{Config, Conntrack, CtState, Dir, Stats, DEFAULT_MAX};
use crate::defrag::{Defrag, DefragConfig, Reassembly};
use crate::display::conntrack_line;

/// Why a capture could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: not a readable pcap file: {source}")]
    Open { path: String, source: pcap_file::PcapError },
    #[error("{path}: packet {index}: {source}")]
    Read { path: String, index: usize, source: pcap_file::PcapError },
    #[error("{path}: link type {link:?} is not supported (Ethernet, raw IP, IPv4 or IPv6 only)")]
    LinkType { path: String, link: DataLink },
}

/// What a replay produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One line per packet, `<index> <state> <direction>`; a fragment that is held for reassembly
    /// prints `<index> held fragment` (the fragment completing a datagram prints the datagram's
    /// state), one that reassembly discards `<index> dropped fragment`.
    pub per_packet: Vec<String>,
    /// The table, `conntrack -L` lines, in creation order.
    pub table: Vec<String>,
    pub stats: Stats,
    /// Frames that did not parse as IP, with the reason.
    pub unparsed: Vec<(usize, packet::ParseError)>,
}

/// Where the IP header starts for a link type.
fn parse(link: DataLink, data: &[u8]) -> Result<Packet, packet::ParseError> {
    match link {
        DataLink::ETHERNET => packet::parse_frame(data),
        _ => packet::parse_ip(data, 0),
    }
}

/// Tracks one whole datagram and accepts it (no rule set): returns its state and direction.
fn track(ct: &Conntrack, now: Timestamp, buf: &[u8], pkt: &Packet, stats: &mut Stats) -> (&'static str, &'static str) {
    let mut t = ct.track(now, buf, pkt, stats);
    // Every packet is accepted, so every new connection is confirmed.
    let _ = ct.confirm(&mut t, stats);
    (t.state.name(), t.dir.name())
}

/// Reads every packet of one capture.
fn read_all(path: &str, input: impl Read) -> Result<Vec<(Timestamp, DataLink, Vec<u8>)>, ReplayError> {
    let mut reader = PcapReader::new(input).map_err(|source| ReplayError::Open { path: path.into(), source })?;
    let link = reader.header().datalink;
    if !matches!(link, DataLink::ETHERNET | DataLink::RAW | DataLink::IPV4 | DataLink::IPV6) {
        return Err(ReplayError::LinkType { path: path.into(), link });
    }
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let index = out.len() + 1;
        let pkt = pkt.map_err(|source| ReplayError::Read { path: path.into(), index, source })?;
        out.push((Timestamp(pkt.timestamp.as_nanos() as u64), link, pkt.data.into_owned()));
    }
    Ok(out)
}

/// Replays captures (each named by its path in errors). Several captures, say one per
/// interface, are merged by timestamp (ties keep the order of the arguments).
pub fn replay<R: Read>(inputs: Vec<(String, R)>) -> Result<Outcome, ReplayError> {
    let mut packets = Vec::new();
    for (path, input) in inputs {
        packets.extend(read_all(&path, input)?);
    }
    packets.sort_by_key(|(ts, _, _)| *ts);
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    let mut defrag = Defrag::new(DefragConfig::default());
    let mut out = Outcome::default();
    let mut now = Timestamp::default();
    for (i, (ts, link, data)) in packets.iter().enumerate() {
        let index = i + 1;
        now = *ts;
        let (link, data) = (*link, data.as_slice());
        defrag.expire(now);
        let (state, dir) = match parse(link, data) {
            Ok(p) if p.is_fragment() => match defrag.push(now, data, &p) {
                Reassembly::Whole => track(&ct, now, data, &p, &mut out.stats),
                Reassembly::Done(datagram) => match packet::parse_ip(&datagram, 0) {
                    Ok(whole) => track(&ct, now, &datagram, &whole, &mut out.stats),
                    Err(e) => {
                        out.unparsed.push((index, e));
                        out.stats.error += 1;
                        ("invalid", "original")
                    }
                },
                Reassembly::Held => ("held", "fragment"),
                Reassembly::Dropped(_) => ("dropped", "fragment"),
            },
            Ok(p) => track(&ct, now, data, &p, &mut out.stats),
            // Not IP (ARP, ...): conntrack never sees it.
            Err(packet::ParseError::NotIp { .. }) => (CtState::Untracked.name(), Dir::Original.name()),
            // The IP layer would drop it before conntrack; we count it and call it invalid.
            Err(e) => {
                out.unparsed.push((index, e));
                out.stats.error += 1;
                (CtState::Invalid.name(), Dir::Original.name())
            }
        };
        let mut line = String::new();
        let _ = write!(line, "{index} {state} {dir}");
        out.per_packet.push(line);
    }
    let mut conns = Vec::new();
    ct.for_each(now, |c| conns.push((c.start, conntrack_line(c, now))));
    conns.sort();
    out.table = conns.into_iter().map(|(_, l)| l).collect();
    Ok(out)
}

//! Runs a packet capture through the engine: the capture's timestamps drive the clock, every
//! packet is accepted (no rule set), and the table is printed as `conntrack -L` prints it.

use std::fmt::Write as _;
use std::io::Read;

use pcap_file::pcap::PcapReader;
use pcap_file::DataLink;
use proto::packet::{self, Packet};

use crate::clock::Timestamp;
use crate::conntrack::{Config, Conntrack, CtState, Dir, Stats, Tracked, DEFAULT_MAX};
use crate::defrag::{Defrag, DefragConfig, Reassembly};
use crate::display::conntrack_line;
use crate::filter::{Hook, Meta, RuleSet, Verdict as FilterVerdict};

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

/// One whole datagram through the rules (if any) and the table: its state, direction and verdict.
fn process(
    ct: &Conntrack,
    rules: Option<&RuleSet>,
    now: Timestamp,
    buf: &[u8],
    pkt: &Packet,
    stats: &mut Stats,
) -> (&'static str, &'static str, &'static str) {
    let Some(rules) = rules else {
        let mut t = ct.track(now, buf, pkt, stats);
        // No rule set: every packet is accepted, so every new connection is confirmed.
        let _ = ct.confirm(&mut t, stats);
        return (t.state.name(), t.dir.name(), "accept");
    };
    let meta = Meta { iif: "", oif: "" };
    let pre = rules.eval(Hook::Prerouting, &meta, pkt, CtState::Untracked);
    if !matches!(pre.verdict, FilterVerdict::Accept) {
        return ("untracked", "original", verdict_name(&pre.verdict));
    }
    let mut t = if pre.notrack { Tracked::untracked() } else { ct.track(now, buf, pkt, stats) };
    let fwd = rules.eval(Hook::Forward, &meta, pkt, t.state);
    if matches!(fwd.verdict, FilterVerdict::Accept) {
        if let Some(policy) = &fwd.timeout {
            t.set_policy(now, policy);
        }
        if let Some(mark) = fwd.mark {
            t.set_mark(mark);
        }
        if ct.confirm(&mut t, stats).is_err() {
            return (t.state.name(), t.dir.name(), "drop");
        }
    }
    (t.state.name(), t.dir.name(), verdict_name(&fwd.verdict))
}

fn verdict_name(v: &FilterVerdict) -> &'static str {
    match v {
        FilterVerdict::Accept => "accept",
        FilterVerdict::Drop => "drop",
        FilterVerdict::Reject(_) => "reject",
    }
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

/// Replays captures (each named by its path in errors) with no rule set: every packet is
/// accepted. Several captures, say one per interface, are merged by timestamp (ties keep the
/// order of the arguments).
pub fn replay<R: Read>(inputs: Vec<(String, R)>) -> Result<Outcome, ReplayError> {
    let ct = Conntrack::new(DEFAULT_MAX, Config::default());
    replay_with(inputs, &ct, None)
}

/// Replays captures through `ct` and, when given, a rule set. With rules, every packet goes
/// through the prerouting chain (before tracking: `drop`, `notrack`), is tracked, then goes
/// through the forward chain (replay has no interfaces of its own: every packet is forwarded,
/// with empty interface names); an accepted packet's new connection gets the `ct timeout set`
/// policy and is confirmed. Per-packet lines then carry a fourth word: `accept`, `drop` or
/// `reject`.
pub fn replay_with<R: Read>(
    inputs: Vec<(String, R)>,
    ct: &Conntrack,
    rules: Option<&RuleSet>,
) -> Result<Outcome, ReplayError> {
    let mut packets = Vec::new();
    for (path, input) in inputs {
        packets.extend(read_all(&path, input)?);
    }
    packets.sort_by_key(|(ts, _, _)| *ts);
    let mut defrag = Defrag::new(DefragConfig::default());
    let mut out = Outcome::default();
    let mut now = Timestamp::default();
    for (i, (ts, link, data)) in packets.iter().enumerate() {
        let index = i + 1;
        now = *ts;
        let (link, data) = (*link, data.as_slice());
        defrag.expire(now);
        let (state, dir, verdict) = match parse(link, data) {
            Ok(p) if p.is_fragment() => match defrag.push(now, data, &p) {
                Reassembly::Whole => process(ct, rules, now, data, &p, &mut out.stats),
                Reassembly::Done(datagram) => match packet::parse_ip(&datagram, 0) {
                    Ok(whole) => process(ct, rules, now, &datagram, &whole, &mut out.stats),
                    Err(e) => {
                        out.unparsed.push((index, e));
                        out.stats.error += 1;
                        ("invalid", "original", "drop")
                    }
                },
                Reassembly::Held => ("held", "fragment", "accept"),
                Reassembly::Dropped(_) => ("dropped", "fragment", "drop"),
            },
            Ok(p) => process(ct, rules, now, data, &p, &mut out.stats),
            // Not IP (ARP, ...): conntrack never sees it.
            Err(packet::ParseError::NotIp { .. }) => (CtState::Untracked.name(), Dir::Original.name(), "accept"),
            // The IP layer would drop it before conntrack; we count it and call it invalid.
            Err(e) => {
                out.unparsed.push((index, e));
                out.stats.error += 1;
                (CtState::Invalid.name(), Dir::Original.name(), "drop")
            }
        };
        let mut line = String::new();
        let _ = write!(line, "{index} {state} {dir}");
        if rules.is_some() {
            let _ = write!(line, " {verdict}");
        }
        out.per_packet.push(line);
    }
    let mut conns = Vec::new();
    ct.for_each(now, |c| conns.push((c.start, conntrack_line(c, now))));
    conns.sort();
    out.table = conns.into_iter().map(|(_, l)| l).collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use proto::build::PacketBuilder;

    use super::*;
    use crate::timeouts::{OnExisting, Registry};

    /// A raw-IP pcap of `datagrams` at the given seconds.
    fn pcap(datagrams: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let header = PcapHeader { datalink: DataLink::RAW, ..PcapHeader::default() };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (secs, d) in datagrams {
            w.write_packet(&PcapPacket::new(Duration::from_secs(*secs), d.len() as u32, d)).unwrap();
        }
        w.into_writer()
    }

    fn udp(sport: u16) -> Vec<u8> {
        PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1)).udp(sport, 53, b"q")
    }

    fn run(ct: &Conntrack, rules: Option<&RuleSet>, pkts: &[(u64, Vec<u8>)]) -> Outcome {
        replay_with(vec![("mem".to_owned(), pcap(pkts).as_slice())], ct, rules).unwrap()
    }

    #[test]
    fn policies_attached_by_rules_set_replace_and_delete_timeouts() {
        let ct = Conntrack::new(1024, Config::default());
        let reg = Registry::new();
        reg.create(&ct, "short", 2, 17, &[(1, 2)], OnExisting::Busy).unwrap();
        let rules = RuleSet::parse(
            "test.rules",
            "chain forward { policy drop; udp dport 53 ct timeout set \"short\" accept\n tcp dport 22 drop }",
            &reg,
        )
        .unwrap();
        assert_eq!(reg.find("short").unwrap().uses(), 2);

        let out = run(&ct, Some(&rules), &[(100, udp(5000))]);
        assert_eq!(out.per_packet, ["1 new original accept"]);
        assert!(out.table[0].starts_with("udp      17 1 src=198.18.0.1"), "{:?}", out.table);

        // Replace in place: the existing connection takes the new value at its next packet.
        reg.create(&ct, "short", 2, 17, &[(1, 7)], OnExisting::Replace).unwrap();
        let out = run(&ct, Some(&rules), &[(101, udp(5000))]);
        assert_eq!(out.per_packet, ["1 new original accept"]);
        assert!(out.table[0].starts_with("udp      17 6 "), "{:?}", out.table);

        // In use by the rule set: delete refuses; once the rules are gone it succeeds and the
        // connection falls back to the defaults (30 s) at its next packet.
        assert_eq!(reg.delete(&ct, "short"), Err(proto::Errno::EBUSY));
        drop(rules);
        reg.delete(&ct, "short").unwrap();
        let out = run(&ct, None, &[(102, udp(5000))]);
        assert!(out.table[0].starts_with("udp      17 29 "), "{:?}", out.table);
    }

    #[test]
    fn dropped_packets_never_create_connections() {
        let ct = Conntrack::new(1024, Config::default());
        let reg = Registry::new();
        let rules = RuleSet::parse("t", "chain forward { policy drop; udp dport 53 accept }", &reg).unwrap();
        let out = run(
            &ct,
            Some(&rules),
            &[
                (1, udp(5000)),
                (1, {
                    PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1)).udp(5001, 54, b"x")
                }),
            ],
        );
        assert_eq!(out.per_packet, ["1 new original accept", "2 new original drop"]);
        assert_eq!(out.table.len(), 1);
    }
}

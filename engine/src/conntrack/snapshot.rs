//! The connection table as bytes, so that a graceful restart carries the connections over.
//!
//! A snapshot is `MAGIC`, a postcard-encoded [`Snapshot`] and a CRC-32 of everything before it.
//! Times are stored relative to the moment of saving (age, time left), together with the wall
//! clock at that moment: the engine's own timestamps count from an epoch private to each process.
//! Restoring subtracts the wall-clock time that passed while no daemon ran, so a connection that
//! would have expired meanwhile is not restored. Policies are stored by name and attached again
//! if the registry holds a policy of that name for the connection's protocol; otherwise the
//! connection uses the defaults, as one whose policy was deleted does.

use serde::{Deserialize, Serialize};

use super::conn::{Conn, Status};
use super::l4::{Proto, ProtoState};
use super::tuple::Tuple;
use super::Conntrack;
use crate::clock::Timestamp;
use crate::timeouts::Registry;

/// The first bytes of a snapshot: format and version.
const MAGIC: &[u8; 8] = b"FWCTSN01";

/// One connection as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    tuple: [Tuple; 2],
    status: u32,
    mark: u32,
    /// Nanoseconds from the connection's start to the save.
    age_ns: u64,
    /// Nanoseconds from the save to the connection's expiry.
    left_ns: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
    proto: ProtoState,
    policy: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    /// Wall clock (Unix nanoseconds) at the save.
    saved_at_ns: u64,
    conns: Vec<Saved>,
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a ferrowall connection snapshot (bad magic)")]
    Magic,
    #[error("damaged: checksum mismatch")]
    Checksum,
    #[error("damaged: {0}")]
    Decode(String),
}

/// What [`Conntrack::restore`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Connections put back into the table.
    pub restored: usize,
    /// Connections that expired while no daemon ran.
    pub expired: usize,
    /// Connections left out: the table was full or already held them.
    pub refused: usize,
}

impl Conntrack {
    /// Every live connection at `now` (the wall clock reading `wall_ns`), as snapshot bytes.
    pub fn save(&self, now: Timestamp, wall_ns: u64) -> Vec<u8> {
        let mut conns = Vec::with_capacity(self.len());
        self.for_each(now, |c| {
            conns.push(Saved {
                tuple: [c.orig, c.reply()],
                status: c.status.0,
                mark: c.mark,
                age_ns: now.since(c.start),
                left_ns: c.expires.since(now),
                packets: c.packets,
                bytes: c.bytes,
                proto: c.proto.clone(),
                policy: c.policy.as_ref().filter(|p| !p.is_deleted()).map(|p| p.name.clone()),
            })
        });
        let mut out = MAGIC.to_vec();
        out = postcard::to_extend(&Snapshot { saved_at_ns: wall_ns, conns }, out)
            .expect("encoding into a Vec cannot fail");
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Puts the connections of snapshot `bytes` back, as of `now` (the wall clock reading
    /// `wall_ns`), attaching their policies from `registry` by name.
    pub fn restore(
        &self,
        bytes: &[u8],
        now: Timestamp,
        wall_ns: u64,
        registry: &Registry,
    ) -> Result<Restored, SnapshotError> {
        if !bytes.starts_with(MAGIC) {
            return Err(SnapshotError::Magic);
        }
        if bytes.len() < MAGIC.len() + 4 {
            return Err(SnapshotError::Checksum);
        }
        let (whole, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(whole).to_le_bytes() != crc {
            return Err(SnapshotError::Checksum);
        }
        let body = &whole[MAGIC.len()..];
        let snap: Snapshot = postcard::from_bytes(body).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let away = wall_ns.saturating_sub(snap.saved_at_ns);
        let mut done = Restored::default();
        for s in snap.conns {
            if s.left_ns <= away || !tuple_fits(&s) {
                done.expired += usize::from(s.left_ns <= away);
                done.refused += usize::from(s.left_ns > away);
                continue;
            }
            let l4 = Proto::of(s.tuple[0].proto);
            let policy = s.policy.as_deref().and_then(|n| registry.find(n)).filter(|p| p.proto == l4);
            let c = Conn {
                orig: s.tuple[0],
                status: Status(s.status),
                mark: s.mark,
                start: Timestamp(now.0.saturating_sub(s.age_ns.saturating_add(away))),
                expires: Timestamp(now.0.saturating_add(s.left_ns - away)),
                packets: s.packets,
                bytes: s.bytes,
                proto: s.proto,
                policy,
            };
            if self.insert_restored(c, now) {
                done.restored += 1;
            } else {
                done.refused += 1;
            }
        }
        Ok(done)
    }
}

/// Whether a saved connection is one the engine could have made: a reply tuple that is the
/// inverse of the original, its protocol state the one its protocol keeps. A snapshot passes its
/// checksum unless damaged, so this guards against a file written by something else.
fn tuple_fits(s: &Saved) -> bool {
    let [o, r] = &s.tuple;
    let state_fits = matches!(
        (Proto::of(o.proto), &s.proto),
        (Proto::Tcp, ProtoState::Tcp(_))
            | (Proto::Sctp, ProtoState::Sctp(_))
            | (
                Proto::Udp | Proto::UdpLite | Proto::Icmp | Proto::Icmpv6 | Proto::Gre | Proto::Generic,
                ProtoState::Stateless
            )
    );
    o.invert() == Some(*r) && state_fits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{Config, CtState, Stats};
    use crate::timeouts::OnExisting;
    use proto::build::PacketBuilder;
    use proto::packet::parse_ip;
    use std::net::Ipv4Addr;

    const NS: u64 = 1_000_000_000;

    /// A table holding a TCP connection in ESTABLISHED (with policy "web") and an unreplied UDP
    /// one, at time 100 s.
    fn table(registry: &Registry) -> Conntrack {
        let ct = Conntrack::new(1024, Config::default());
        registry.create(&ct, "web", 2, 6, &[(4, 900)], OnExisting::Busy).unwrap();
        let web = registry.find("web").unwrap();
        let mut stats = Stats::default();
        let a = Ipv4Addr::new(198, 18, 0, 1);
        let b = Ipv4Addr::new(198, 19, 0, 1);
        let mut t = |at: u64, d: Vec<u8>, policy: bool| {
            let pkt = parse_ip(&d, 0).unwrap();
            let mut tr = ct.track(Timestamp(at * NS), &d, &pkt, &mut stats);
            if policy {
                tr.set_policy(Timestamp(at * NS), &web);
            }
            ct.confirm(&mut tr, &mut stats).unwrap();
            tr.state
        };
        let (ab, ba) = (PacketBuilder::v4(a, b), PacketBuilder::v4(b, a));
        assert_eq!(t(90, ab.tcp(40000, 80, 1, 0, 0x02, 65535, &[], &[]), true), CtState::New);
        t(91, ba.tcp(80, 40000, 500, 2, 0x12, 65535, &[], &[]), false);
        let st = t(92, ab.tcp(40000, 80, 2, 501, 0x10, 65535, &[], &[]), false);
        assert_eq!(st, CtState::Established);
        t(95, ab.udp(5000, 53, b"q"), false);
        ct
    }

    fn lines(ct: &Conntrack, now: Timestamp) -> Vec<String> {
        let mut v = Vec::new();
        ct.for_each(now, |c| v.push(crate::display::conntrack_line(c, now)));
        v.sort();
        v
    }

    #[test]
    fn a_snapshot_restores_the_same_table_with_time_moved_on() {
        let registry = Registry::new();
        let ct = table(&registry);
        let now = Timestamp(100 * NS);
        let bytes = ct.save(now, 5_000 * NS);

        // A new process: its own clock epoch, the same policies, 10 s of wall time later.
        let registry2 = Registry::new();
        let ct2 = Conntrack::new(1024, Config::default());
        registry2.create(&ct2, "web", 2, 6, &[(4, 900)], OnExisting::Busy).unwrap();
        let now2 = Timestamp(7 * NS);
        let done = ct2.restore(&bytes, now2, 5_010 * NS, &registry2).unwrap();
        assert_eq!(done, Restored { restored: 2, expired: 0, refused: 0 });
        // As the old table would print 10 s after the save.
        assert_eq!(lines(&ct2, now2), lines(&ct, Timestamp(110 * NS)));
        let mut policies = Vec::new();
        ct2.for_each(now2, |c| policies.push(c.policy.as_ref().map(|p| p.name.clone())));
        policies.sort();
        assert_eq!(policies, [None, Some("web".to_owned())]);

        // The UDP entry (30 s unreplied, last packet at 95 s) expired while nothing ran.
        let ct3 = Conntrack::new(1024, Config::default());
        let done = ct3.restore(&bytes, now2, 5_040 * NS, &Registry::new()).unwrap();
        assert_eq!(done, Restored { restored: 1, expired: 1, refused: 0 });
        // Without the policy, the TCP entry keeps its time left but falls back to the defaults.
        ct3.for_each(now2, |c| assert!(c.policy.is_none()));

        // Restoring twice adds nothing; a full table refuses.
        let done = ct3.restore(&bytes, now2, 5_040 * NS, &Registry::new()).unwrap();
        assert_eq!(done, Restored { restored: 0, expired: 1, refused: 1 });
        let tiny = Conntrack::new(1, Config::default());
        let done = tiny.restore(&bytes, now2, 5_000 * NS, &Registry::new()).unwrap();
        assert_eq!((done.restored, done.refused), (1, 1));
    }

    #[test]
    fn established_traffic_continues_after_a_restore() {
        let registry = Registry::new();
        let ct = table(&registry);
        let bytes = ct.save(Timestamp(100 * NS), 0);
        let ct2 = Conntrack::new(1024, Config::default());
        ct2.restore(&bytes, Timestamp(NS), 0, &registry).unwrap();
        // The next in-window segment is established, not a picked-up new connection.
        let d = PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1)).tcp(
            40000,
            80,
            2,
            501,
            0x18,
            65535,
            &[],
            b"GET",
        );
        let pkt = parse_ip(&d, 0).unwrap();
        let tr = ct2.track(Timestamp(2 * NS), &d, &pkt, &mut Stats::default());
        assert_eq!(tr.state, CtState::Established);
        assert_eq!(ct2.len(), 2);
    }

    proptest::proptest! {
        /// Random bodies behind a valid magic and checksum (what a file written by something else
        /// would look like): an error or a table, never a panic, never more than the table holds.
        #[test]
        fn any_sealed_body_is_read_or_refused(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&body);
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            let ct = Conntrack::new(16, Config::default());
            if let Ok(r) = ct.restore(&bytes, Timestamp(NS), 0, &Registry::new()) {
                proptest::prop_assert!(ct.len() == r.restored && ct.len() <= 16);
            }
        }
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let registry = Registry::new();
        let ct = table(&registry);
        let bytes = ct.save(Timestamp(100 * NS), 0);
        let fresh = || Conntrack::new(1024, Config::default());
        assert_eq!(fresh().restore(b"nonsense", Timestamp(0), 0, &registry), Err(SnapshotError::Magic));
        assert_eq!(fresh().restore(MAGIC, Timestamp(0), 0, &registry), Err(SnapshotError::Checksum));
        for cut in [9, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(fresh().restore(&bytes[..cut], Timestamp(0), 0, &registry), Err(SnapshotError::Checksum));
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(fresh().restore(&flipped, Timestamp(0), 0, &registry), Err(SnapshotError::Checksum));
        // Any bytes at all: an error or a table, never a panic.
        for n in 0..bytes.len() {
            let _ = fresh().restore(&bytes[..n], Timestamp(0), 0, &registry);
        }
    }
}

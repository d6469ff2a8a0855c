//! SCTP (`nf_conntrack_proto_sctp.c` of Linux 6.18).
//!
//! The tracker follows the association through its chunks: every chunk of a packet moves the
//! state along [`TABLE`], in order, and the verification tags of both directions are learnt from
//! INIT and INIT ACK (or HEARTBEAT, for a secondary path picked up mid-association) and checked on
//! every packet (RFC 9260 section 8.5, with the exceptions of 8.5.1).
//!
//! As in the kernel:
//! * [`Sctp::error`] rejects a packet whose CRC32c is wrong (when checksums are verified) or whose
//!   chunks break the bundling rules (`do_basic_checks`): INIT, INIT ACK and SHUTDOWN COMPLETE
//!   must travel alone, COOKIE ECHO and COOKIE ACK must come first, no chunk may have length 0,
//!   and there must be at least one chunk.
//! * The chunk walk is the kernel's: it steps by the padded chunk length while a whole chunk
//!   header fits, without checking that a chunk's length stays inside the packet.
//! * A packet refused part-way through its chunks keeps what the earlier chunks did to the state
//!   (the kernel updates the entry chunk by chunk under its lock and does not roll back).
//! * The association is ASSURED as soon as any transition enters ESTABLISHED.

use proto::checksum;
use proto::packet::{sctp_chunk, Packet, L4};

use super::{Config, Ctx, Invalid, Tracker, Verdict};
use crate::conntrack::conn::Status;
use crate::conntrack::tuple::Dir;

/// The tracker's states, with the kernel's numbers (`enum sctp_conntrack`, carried by ctnetlink as
/// `CTA_PROTOINFO_SCTP_STATE`). Number 9 (HEARTBEAT_ACKED) is no longer used by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum SctpState {
    /// Nothing seen yet: only a connection under construction is in this state.
    #[default]
    None = 0,
    /// INIT seen (or the association is closed by ABORT / SHUTDOWN COMPLETE).
    Closed = 1,
    /// INIT ACK seen in reply to the INIT.
    CookieWait = 2,
    /// COOKIE ECHO seen.
    CookieEchoed = 3,
    /// COOKIE ACK seen: the association is up.
    Established = 4,
    /// SHUTDOWN seen in the original direction.
    ShutdownSent = 5,
    /// SHUTDOWN seen in the reply direction.
    ShutdownRecd = 6,
    /// SHUTDOWN ACK seen.
    ShutdownAckSent = 7,
    /// A HEARTBEAT started the connection (a secondary path of a multi-homed association).
    HeartbeatSent = 8,
}

impl SctpState {
    /// The state with kernel number `n` (HEARTBEAT_ACKED, 9, is no longer one).
    pub fn from_code(n: u8) -> Option<SctpState> {
        use SctpState::*;
        [
            None,
            Closed,
            CookieWait,
            CookieEchoed,
            Established,
            ShutdownSent,
            ShutdownRecd,
            ShutdownAckSent,
            HeartbeatSent,
        ]
        .get(usize::from(n))
        .copied()
    }

    /// The name `conntrack -L` prints.
    pub fn name(self) -> &'static str {
        match self {
            SctpState::None => "NONE",
            SctpState::Closed => "CLOSED",
            SctpState::CookieWait => "COOKIE_WAIT",
            SctpState::CookieEchoed => "COOKIE_ECHOED",
            SctpState::Established => "ESTABLISHED",
            SctpState::ShutdownSent => "SHUTDOWN_SENT",
            SctpState::ShutdownRecd => "SHUTDOWN_RECD",
            SctpState::ShutdownAckSent => "SHUTDOWN_ACK_SENT",
            SctpState::HeartbeatSent => "HEARTBEAT_SENT",
        }
    }
}

/// Per-connection SCTP state (`struct ip_ct_sctp`): 16 bytes, no heap.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    state: SctpState,
    /// Verification tag expected on packets of each direction (indexed by [`Dir`]).
    vtag: [u32; 2],
    /// An INIT was seen in this direction and not yet answered by a completed handshake; used to
    /// tell an INIT collision from a stale INIT ACK.
    init: [bool; 2],
    /// The direction of the HEARTBEAT whose tag did not match (`last_dir`).
    last_dir: u8,
    /// `SCTP_FLAG_HEARTBEAT_VTAG_FAILED`: a HEARTBEAT with an unknown tag was let through, so a
    /// HEARTBEAT ACK from the other side may re-learn the tags (the peer restarted).
    heartbeat_vtag_failed: bool,
}

impl State {
    /// Applies ctnetlink's `CTA_PROTOINFO_SCTP` (`nlattr_to_sctp`): the state and both tags.
    pub fn apply_netlink(&mut self, state: SctpState, vtag: [u32; 2]) {
        self.state = state;
        self.vtag = vtag;
    }

    /// The tracker state.
    pub fn state(&self) -> SctpState {
        self.state
    }

    /// The verification tag expected in direction `d` (`CTA_PROTOINFO_SCTP_VTAG_*`).
    pub fn vtag(&self, d: Dir) -> u32 {
        self.vtag[d as usize]
    }
}

/// The kernel's numeric state (`CTA_PROTOINFO_SCTP_STATE`).
pub fn state_code(s: &State) -> u8 {
    s.state as u8
}

/// The timeout slot for the connection's current state: slot `i` is cttimeout attribute `i + 1`,
/// which is state number `i + 1`. NONE uses the CLOSED value, as the kernel's `timeouts[0]` does.
pub fn timeout_slot(s: &State) -> usize {
    usize::from(state_code(s)).saturating_sub(1)
}

/// The transition table's cell type: the next state, or `None` for "invalid" (the kernel's sIV).
type Next = Option<SctpState>;

const CL: Next = Some(SctpState::Closed);
const CW: Next = Some(SctpState::CookieWait);
const CE: Next = Some(SctpState::CookieEchoed);
const ES: Next = Some(SctpState::Established);
const SS: Next = Some(SctpState::ShutdownSent);
const SR: Next = Some(SctpState::ShutdownRecd);
const SA: Next = Some(SctpState::ShutdownAckSent);
const HS: Next = Some(SctpState::HeartbeatSent);
const IV: Next = None;

/// Chunk classes, the table's middle index (`sctp_new_state`). Other chunk types (DATA, SACK,
/// ...) leave the state as it is.
fn class(ty: u8) -> Option<usize> {
    Some(match ty {
        sctp_chunk::INIT => 0,
        sctp_chunk::INIT_ACK => 1,
        sctp_chunk::ABORT => 2,
        sctp_chunk::SHUTDOWN => 3,
        sctp_chunk::SHUTDOWN_ACK => 4,
        sctp_chunk::ERROR => 5,
        sctp_chunk::COOKIE_ECHO => 6,
        sctp_chunk::COOKIE_ACK => 7,
        sctp_chunk::SHUTDOWN_COMPLETE => 8,
        sctp_chunk::HEARTBEAT => 9,
        sctp_chunk::HEARTBEAT_ACK => 10,
        _ => return None,
    })
}

/// `sctp_conntracks[dir][chunk class][state]` of Linux 6.18, cell for cell. Column NONE is the
/// state of a connection being created, which only sees the original direction; a chunk type
/// outside the table (DATA, SACK, ...) keeps NONE and so cannot create one.
#[rustfmt::skip]
const TABLE: [[[Next; 9]; 11]; 2] = [
    // ORIGINAL
    [
        //                 NONE CLOSED COOKIE_W COOKIE_E ESTAB SHUT_S SHUT_R SHUT_ACK HB_SENT
        /* init          */ [CL, CL, CW, CE, ES, CL, CL, SA, CW],
        /* init_ack      */ [CL, CL, CW, CE, ES, SS, SR, SA, CL],
        /* abort         */ [CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /* shutdown      */ [CL, CL, CW, CE, SS, SS, SR, SA, CL],
        /* shutdown_ack  */ [SA, CL, CW, CE, ES, SA, SA, SA, SA],
        /* error         */ [CL, CL, CW, CE, ES, SS, SR, SA, CL], // cannot have a stale cookie
        /* cookie_echo   */ [CL, CL, CE, CE, ES, SS, SR, SA, CL], // RFC 9260 5.2.4 not handled
        /* cookie_ack    */ [CL, CL, CW, ES, ES, SS, SR, SA, CL], // INIT collision: acked by the original side
        /* shutdown_comp */ [CL, CL, CW, CE, ES, SS, SR, CL, CL],
        /* heartbeat     */ [HS, CL, CW, CE, ES, SS, SR, SA, HS],
        /* heartbeat_ack */ [CL, CL, CW, CE, ES, SS, SR, SA, HS],
    ],
    // REPLY
    [
        //                 NONE CLOSED COOKIE_W COOKIE_E ESTAB SHUT_S SHUT_R SHUT_ACK HB_SENT
        /* init          */ [IV, CL, CW, CE, ES, SS, SR, SA, IV], // INIT in CLOSED: kernel TODO
        /* init_ack      */ [IV, CW, CW, CE, ES, SS, SR, SA, IV],
        /* abort         */ [IV, CL, CL, CL, CL, CL, CL, CL, IV],
        /* shutdown      */ [IV, CL, CW, CE, SR, SS, SR, SA, IV],
        /* shutdown_ack  */ [IV, CL, CW, CE, ES, SA, SA, SA, IV],
        /* error         */ [IV, CL, CW, CL, ES, SS, SR, SA, IV],
        /* cookie_echo   */ [IV, CL, CE, CE, ES, SS, SR, SA, IV], // INIT collision: echoed by the reply side
        /* cookie_ack    */ [IV, CL, CW, ES, ES, SS, SR, SA, IV],
        /* shutdown_comp */ [IV, CL, CW, CE, ES, SS, SR, CL, IV],
        /* heartbeat     */ [IV, CL, CW, CE, ES, SS, SR, SA, HS],
        /* heartbeat_ack */ [IV, CL, CW, CE, ES, SS, SR, SA, ES],
    ],
];

/// `sctp_new_state`: where chunk type `ty` in direction `dir` takes state `cur`.
fn next(dir: Dir, cur: SctpState, ty: u8) -> Next {
    match class(ty) {
        Some(c) => TABLE[dir as usize][c][cur as usize],
        None => Some(cur),
    }
}

/// Byte offsets in the SCTP packet.
mod field {
    /// The common header (ports, verification tag, checksum).
    pub(super) const COMMON_LEN: usize = 12;
    /// A chunk header: type, flags, length.
    pub(super) const CHUNK_HDR_LEN: usize = 4;
    /// `struct sctp_inithdr` (initiate tag, a_rwnd, streams, initial TSN), after the chunk header.
    pub(super) const INIT_HDR_LEN: usize = 16;
}

/// The T bit of ABORT and SHUTDOWN COMPLETE: the tag is the sender's own, reflected.
const FLAG_T: u8 = 0x01;

/// One chunk as the kernel's walk sees it.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// Offset of the chunk header in the SCTP packet.
    at: usize,
    ty: u8,
    flags: u8,
    len: u16,
}

/// `for_each_sctp_chunk`: chunks while a whole chunk header fits in the packet, each step the
/// chunk's length rounded up to 4. A zero length ends the walk after that chunk (the kernel's
/// basic checks refuse such a packet before any other walk).
fn chunks(seg: &[u8]) -> impl Iterator<Item = Chunk> + '_ {
    let mut at = field::COMMON_LEN;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let h = seg.get(at..at.checked_add(field::CHUNK_HDR_LEN)?)?;
        let c = Chunk { at, ty: h[0], flags: h[1], len: u16::from_be_bytes([h[2], h[3]]) };
        if c.len == 0 {
            done = true;
        }
        at += (usize::from(c.len) + 3) & !3;
        Some(c)
    })
}

/// Chunk types present, for the types below 32 (all the ones the tracker tests).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
struct Map(u32);

impl Map {
    fn of(seg: &[u8]) -> Map {
        let mut m = 0u32;
        for c in chunks(seg) {
            if c.ty < 32 {
                m |= 1 << c.ty;
            }
        }
        Map(m)
    }

    fn has(self, ty: u8) -> bool {
        self.0 & (1 << ty) != 0
    }
}

/// The SCTP packet (common header onwards) and its verification tag, or why there is none.
fn segment<'b>(pkt: &Packet, buf: &'b [u8]) -> Result<(&'b [u8], u32), Invalid> {
    let L4::Sctp(h) = pkt.l4 else { return Err(Invalid::Truncated) };
    let seg = buf.get(pkt.l4_offset..pkt.end).ok_or(Invalid::Truncated)?;
    if seg.len() < field::COMMON_LEN {
        return Err(Invalid::Truncated);
    }
    Ok((seg, h.vtag))
}

/// The initiate tag of the INIT or INIT ACK chunk at `c` (the whole `sctp_inithdr` must be in the
/// packet, not necessarily in the chunk, as the kernel reads it).
fn init_tag(seg: &[u8], c: Chunk) -> Option<u32> {
    let at = c.at + field::CHUNK_HDR_LEN;
    let h = seg.get(at..at + field::INIT_HDR_LEN)?;
    Some(u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
}

/// `do_basic_checks`: the bundling rules and non-zero lengths.
fn basic_checks(seg: &[u8]) -> Result<(), Invalid> {
    let mut alone = false;
    let mut count = 0usize;
    for c in chunks(seg) {
        if matches!(c.ty, sctp_chunk::INIT | sctp_chunk::INIT_ACK | sctp_chunk::SHUTDOWN_COMPLETE) {
            alone = true;
        }
        let must_be_first = matches!(c.ty, sctp_chunk::COOKIE_ACK | sctp_chunk::COOKIE_ECHO) || alone;
        if (must_be_first && count != 0) || c.len == 0 {
            return Err(Invalid::SctpChunks);
        }
        count += 1;
    }
    if count == 0 {
        return Err(Invalid::SctpChunks);
    }
    Ok(())
}

/// The SCTP tracker.
pub struct Sctp;

impl Tracker for Sctp {
    type State = State;
    /// The wire's first 8 slots: the tracker has no use for the ninth, HEARTBEAT_ACKED, which
    /// cttimeout still carries (see [`crate::timeouts::cttimeout_slots`]).
    const TIMEOUT_NAMES: &'static [&'static str] = proto::cttimeout::names::SCTP.split_at(8).0;
    const DEFAULT_TIMEOUTS: &'static [u32] = &[10, 3, 3, 210, 3, 3, 3, 30];

    /// `sctp_error` (short packet, CRC32c) and `do_basic_checks`.
    fn error(pkt: &Packet, buf: &[u8], cfg: &Config) -> Result<(), Invalid> {
        let (seg, _) = segment(pkt, buf)?;
        if cfg.checksum && !pkt.l4_checksum_verified && !checksum::sctp_ok(seg) {
            return Err(Invalid::Checksum);
        }
        basic_checks(seg)
    }

    /// The out-of-the-blue checks and `sctp_new`.
    fn new(pkt: &Packet, buf: &[u8], _: &Config) -> Result<State, Invalid> {
        let (seg, vtag) = segment(pkt, buf)?;
        let map = Map::of(seg);
        // RFC 9260 8.4: an out-of-the-blue ABORT, SHUTDOWN COMPLETE or COOKIE ACK is discarded.
        if map.has(sctp_chunk::ABORT) || map.has(sctp_chunk::SHUTDOWN_COMPLETE) || map.has(sctp_chunk::COOKIE_ACK) {
            return Err(Invalid::SctpState);
        }
        let mut s = State::default();
        for c in chunks(seg) {
            // Every chunk must be one that can open a connection (DATA alone, or bundled after
            // a COOKIE ECHO, cannot).
            match next(Dir::Original, SctpState::None, c.ty) {
                None | Some(SctpState::None) => return Err(Invalid::SctpState),
                Some(_) => {}
            }
            match c.ty {
                sctp_chunk::INIT => {
                    // 8.5.1 (A): an INIT carries tag 0; its initiate tag is what the peer uses.
                    if vtag != 0 {
                        return Err(Invalid::SctpVtag);
                    }
                    s.vtag[Dir::Reply as usize] = init_tag(seg, c).ok_or(Invalid::Truncated)?;
                }
                // A secondary path: learn the tag the sender uses.
                sctp_chunk::HEARTBEAT => s.vtag[Dir::Original as usize] = vtag,
                // An out-of-the-blue SHUTDOWN ACK is answered by a SHUTDOWN COMPLETE with the T
                // bit, or an ABORT, carrying this tag (8.4 (5) and (8)).
                sctp_chunk::SHUTDOWN_ACK => s.vtag[Dir::Reply as usize] = vtag,
                _ => {}
            }
        }
        Ok(s)
    }

    /// `nf_conntrack_sctp_packet` after the checks above.
    fn packet(s: &mut State, ctx: &mut Ctx<'_>, pkt: &Packet, buf: &[u8]) -> Verdict {
        let (seg, vtag) = match segment(pkt, buf) {
            Ok(v) => v,
            Err(r) => return Verdict::Invalid(r),
        };
        let dir = ctx.dir as usize;
        let other = ctx.dir.flip() as usize;
        let confirmed = ctx.status.contains(Status::CONFIRMED);
        let map = Map::of(seg);

        // 8.5: the tag must be the one expected in this direction, except for the chunks whose
        // tags are checked one by one below.
        let exempt = [
            sctp_chunk::INIT,
            sctp_chunk::SHUTDOWN_COMPLETE,
            sctp_chunk::COOKIE_ECHO,
            sctp_chunk::ABORT,
            sctp_chunk::SHUTDOWN_ACK,
            sctp_chunk::HEARTBEAT,
            sctp_chunk::HEARTBEAT_ACK,
        ];
        if !exempt.iter().any(|&t| map.has(t)) && vtag != s.vtag[dir] {
            return Verdict::Invalid(Invalid::SctpVtag);
        }

        let mut ignore = false;
        for c in chunks(seg) {
            // 8.5.1: the special cases.
            match c.ty {
                // (A) an INIT carries tag 0.
                sctp_chunk::INIT if vtag != 0 => return Verdict::Invalid(Invalid::SctpVtag),
                // (B), (C): the receiver's tag, or with the T bit the sender's own.
                sctp_chunk::ABORT | sctp_chunk::SHUTDOWN_COMPLETE => {
                    let want = if c.flags & FLAG_T != 0 { s.vtag[other] } else { s.vtag[dir] };
                    if vtag != want {
                        return Verdict::Invalid(Invalid::SctpVtag);
                    }
                }
                // (D) the tag of the INIT ACK.
                sctp_chunk::COOKIE_ECHO if vtag != s.vtag[dir] => return Verdict::Invalid(Invalid::SctpVtag),
                sctp_chunk::COOKIE_ACK => s.init = [false; 2],
                sctp_chunk::HEARTBEAT => {
                    if s.vtag[dir] == 0 {
                        s.vtag[dir] = vtag;
                    } else if vtag != s.vtag[dir] {
                        // Maybe the peer restarted: let one HEARTBEAT through without changing
                        // anything, and re-learn the tags if the other side acknowledges it.
                        if map.has(sctp_chunk::DATA) || ignore {
                            return Verdict::Invalid(Invalid::SctpVtag);
                        }
                        s.heartbeat_vtag_failed = true;
                        s.last_dir = dir as u8;
                        ignore = true;
                        continue;
                    } else {
                        s.heartbeat_vtag_failed = false;
                    }
                }
                sctp_chunk::HEARTBEAT_ACK => {
                    if s.vtag[dir] == 0 {
                        s.vtag[dir] = vtag;
                    } else if vtag != s.vtag[dir] {
                        if map.has(sctp_chunk::DATA) || ignore {
                            return Verdict::Invalid(Invalid::SctpVtag);
                        }
                        if !s.heartbeat_vtag_failed || usize::from(s.last_dir) == dir {
                            return Verdict::Invalid(Invalid::SctpVtag);
                        }
                        s.heartbeat_vtag_failed = false;
                        s.vtag[dir] = vtag;
                        s.vtag[other] = 0;
                    } else {
                        s.heartbeat_vtag_failed = false;
                    }
                }
                _ => {}
            }

            let old = s.state;
            let Some(new) = next(ctx.dir, old, c.ty) else {
                return Verdict::Invalid(Invalid::SctpState);
            };

            // Note the tags announced by INIT and INIT ACK.
            match c.ty {
                sctp_chunk::INIT => {
                    let Some(tag) = init_tag(seg, c) else { return Verdict::Invalid(Invalid::Truncated) };
                    // An INIT repeating the tag already known for the peer (a retransmission, or
                    // a stale INIT after the handshake) does not start a new handshake.
                    if old == SctpState::None || s.vtag[other] != tag {
                        if s.init[dir] && s.init[other] {
                            s.init[other] = false;
                        }
                        s.init[dir] = true;
                    }
                    s.vtag[other] = tag;
                    // A retransmitted INIT does not extend the timeout, so port reuse by a client
                    // or a NAT cannot keep the entry alive forever.
                    if new == SctpState::Closed && old == SctpState::Closed && confirmed {
                        ignore = true;
                    }
                }
                sctp_chunk::INIT_ACK => {
                    let Some(tag) = init_tag(seg, c) else { return Verdict::Invalid(Invalid::Truncated) };
                    let known = s.vtag[other];
                    // An INIT ACK must answer the INIT whose tag we know, unless the other side
                    // sent an INIT of its own (a collision, where either may be answered)...
                    if !s.init[other] && known != 0 && known != tag {
                        return Verdict::Invalid(Invalid::SctpVtag);
                    }
                    // ...and when both sent one, it must answer the latest.
                    if s.init[dir] && s.init[other] && known != tag {
                        return Verdict::Invalid(Invalid::SctpVtag);
                    }
                    s.vtag[other] = tag;
                }
                _ => {}
            }

            s.state = new;
            if old != new && new == SctpState::Established {
                ctx.status.insert(Status::ASSURED);
            }
        }

        if ignore {
            return Verdict::Keep;
        }
        Verdict::Refresh(ctx.timeouts.get(timeout_slot(s)))
    }

    fn state_name(s: &State) -> Option<&'static str> {
        Some(s.state.name())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proto::build::{Chunk as C, PacketBuilder};
    use proto::packet::{parse_ip, sctp_chunk as ty};

    use super::*;
    use crate::clock::Timestamp;
    use crate::conntrack::{Conntrack, CtState, Stats};

    const ITAG_A: u32 = 0x1111_1111;
    const ITAG_B: u32 = 0x2222_2222;

    struct Net {
        ct: Conntrack,
        stats: Stats,
        a: PacketBuilder,
        b: PacketBuilder,
        now: Timestamp,
    }

    impl Net {
        fn new() -> Net {
            let a = PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1));
            let b = a.reverse();
            Net {
                ct: Conntrack::new(1024, Config::default()),
                stats: Stats::default(),
                a,
                b,
                now: Timestamp::from_secs(1000),
            }
        }

        /// Sends a packet from A (`orig`) or B with `vtag` and `chunks`; confirms a new connection.
        fn send(&mut self, orig: bool, vtag: u32, chunks: &[C]) -> (CtState, Option<Invalid>) {
            let (b, sp, dp) = if orig { (&self.a, 5000, 2905) } else { (&self.b, 2905, 5000) };
            let buf = b.sctp(sp, dp, vtag, chunks);
            self.track(&buf)
        }

        fn track(&mut self, buf: &[u8]) -> (CtState, Option<Invalid>) {
            let pkt = parse_ip(buf, 0).expect("test packet parses");
            let mut t = self.ct.track(self.now, buf, &pkt, &mut self.stats);
            let r = (t.state, t.invalid);
            self.ct.confirm(&mut t, &mut self.stats).expect("room in the table");
            r
        }

        fn line(&self) -> String {
            let mut lines = Vec::new();
            self.ct.for_each(self.now, |c| lines.push(crate::display::conntrack_line(c, self.now)));
            assert!(lines.len() <= 1, "{lines:?}");
            lines.pop().unwrap_or_default()
        }

        fn state(&self) -> (SctpState, [u32; 2], bool) {
            let mut out = None;
            self.ct.for_each(self.now, |c| {
                if let crate::conntrack::ProtoState::Sctp(s) = &c.proto {
                    out = Some((s.state, s.vtag, c.status.contains(Status::ASSURED)));
                }
            });
            out.expect("one SCTP connection")
        }
    }

    fn init(tag: u32) -> C {
        C::new(ty::INIT, 0, &C::init_value(tag, 1))
    }
    fn init_ack(tag: u32) -> C {
        C::new(ty::INIT_ACK, 0, &[C::init_value(tag, 100), vec![0, 7, 0, 8, 1, 2, 3, 4]].concat())
    }
    fn chunk(t: u8) -> C {
        C::new(t, 0, &[])
    }
    fn data() -> C {
        C::new(ty::DATA, 3, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xaa])
    }
    fn hb() -> C {
        C::new(ty::HEARTBEAT, 0, &[0, 1, 0, 8, 9, 9, 9, 9])
    }

    fn handshake(n: &mut Net) {
        assert_eq!(n.send(true, 0, &[init(ITAG_A)]), (CtState::New, None));
        assert_eq!(n.state().0, SctpState::Closed);
        assert_eq!(n.send(false, ITAG_A, &[init_ack(ITAG_B)]), (CtState::Established, None));
        assert_eq!(n.state().0, SctpState::CookieWait);
        assert_eq!(n.send(true, ITAG_B, &[C::new(ty::COOKIE_ECHO, 0, &[1, 2, 3, 4, 5])]).1, None);
        assert_eq!(n.state().0, SctpState::CookieEchoed);
        assert!(!n.state().2);
        assert_eq!(n.send(false, ITAG_A, &[chunk(ty::COOKIE_ACK)]).1, None);
        assert_eq!(n.state(), (SctpState::Established, [ITAG_B, ITAG_A], true));
    }

    #[test]
    fn whole_association() {
        let mut n = Net::new();
        assert_eq!(n.send(true, 0, &[init(ITAG_A)]), (CtState::New, None));
        assert_eq!(
            n.line(),
            "sctp     132 9 CLOSED src=198.18.0.1 dst=198.19.0.1 sport=5000 dport=2905 [UNREPLIED] \
             src=198.19.0.1 dst=198.18.0.1 sport=2905 dport=5000 mark=0 use=1"
        );
        assert_eq!(n.state().1, [0, ITAG_A]);
        assert_eq!(n.send(false, ITAG_A, &[init_ack(ITAG_B)]).1, None);
        assert_eq!(n.state(), (SctpState::CookieWait, [ITAG_B, ITAG_A], false));
        assert!(n.line().starts_with("sctp     132 2 COOKIE_WAIT "), "{}", n.line());
        // COOKIE ECHO may carry DATA behind it.
        assert_eq!(n.send(true, ITAG_B, &[C::new(ty::COOKIE_ECHO, 0, &[1, 2, 3, 4]), data()]).1, None);
        assert!(n.line().starts_with("sctp     132 2 COOKIE_ECHOED "), "{}", n.line());
        assert_eq!(n.send(false, ITAG_A, &[chunk(ty::COOKIE_ACK), C::new(ty::SACK, 0, &[0; 12])]).1, None);
        assert_eq!(
            n.line(),
            "sctp     132 209 ESTABLISHED src=198.18.0.1 dst=198.19.0.1 sport=5000 dport=2905 \
             src=198.19.0.1 dst=198.18.0.1 sport=2905 dport=5000 [ASSURED] mark=0 use=1"
        );
        n.now = n.now.plus_secs(100);
        assert_eq!(n.send(true, ITAG_B, &[data()]), (CtState::Established, None));
        assert_eq!(n.send(false, ITAG_A, &[C::new(ty::SACK, 0, &[0; 12])]).1, None);
        assert_eq!(n.send(true, ITAG_B, &[hb()]).1, None);
        assert_eq!(n.send(false, ITAG_A, &[C::new(ty::HEARTBEAT_ACK, 0, &[0, 1, 0, 8, 9, 9, 9, 9])]).1, None);
        assert!(n.line().starts_with("sctp     132 209 ESTABLISHED "), "{}", n.line());
        assert_eq!(n.send(true, ITAG_B, &[chunk(ty::SHUTDOWN)]).1, None);
        assert!(n.line().starts_with("sctp     132 2 SHUTDOWN_SENT "), "{}", n.line());
        assert_eq!(n.send(false, ITAG_A, &[chunk(ty::SHUTDOWN_ACK)]).1, None);
        assert!(n.line().starts_with("sctp     132 2 SHUTDOWN_ACK_SENT "), "{}", n.line());
        assert_eq!(n.send(true, ITAG_B, &[chunk(ty::SHUTDOWN_COMPLETE)]).1, None);
        assert!(n.line().starts_with("sctp     132 9 CLOSED "), "{}", n.line());
        assert!(n.line().contains("[ASSURED]"));
        assert_eq!(n.stats.invalid, 0);
    }

    #[test]
    fn shutdown_from_the_reply_side() {
        let mut n = Net::new();
        handshake(&mut n);
        assert_eq!(n.send(false, ITAG_A, &[chunk(ty::SHUTDOWN)]).1, None);
        assert_eq!(n.state().0, SctpState::ShutdownRecd);
        assert_eq!(n.send(true, ITAG_B, &[chunk(ty::SHUTDOWN_ACK)]).1, None);
        assert_eq!(n.state().0, SctpState::ShutdownAckSent);
        // SHUTDOWN COMPLETE with the T bit carries the sender's own tag.
        assert_eq!(n.send(false, ITAG_A, &[C::new(ty::SHUTDOWN_COMPLETE, FLAG_T, &[])]).1, Some(Invalid::SctpVtag));
        assert_eq!(n.send(false, ITAG_B, &[C::new(ty::SHUTDOWN_COMPLETE, FLAG_T, &[])]).1, None);
        assert_eq!(n.state().0, SctpState::Closed);
    }

    #[test]
    fn wrong_vtag_is_invalid() {
        let mut n = Net::new();
        handshake(&mut n);
        assert_eq!(n.send(true, ITAG_A, &[data()]), (CtState::Invalid, Some(Invalid::SctpVtag)));
        assert_eq!(n.send(false, 0xdead, &[C::new(ty::SACK, 0, &[0; 12])]).1, Some(Invalid::SctpVtag));
        // COOKIE ECHO is checked against the tag of the INIT ACK.
        assert_eq!(n.send(true, 7, &[C::new(ty::COOKIE_ECHO, 0, &[1])]).1, Some(Invalid::SctpVtag));
        // An INIT must carry tag 0.
        assert_eq!(n.send(true, ITAG_B, &[init(5)]).1, Some(Invalid::SctpVtag));
        assert_eq!(n.state(), (SctpState::Established, [ITAG_B, ITAG_A], true));
        assert_eq!(n.stats.invalid_by[Invalid::SctpVtag as usize], 4);
        // An INIT with a non-zero tag cannot open a connection either.
        let other = PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 9), Ipv4Addr::new(198, 19, 0, 1));
        let p = other.sctp(1, 2, 1, &[init(3)]);
        assert_eq!(n.track(&p).1, Some(Invalid::SctpVtag));
    }

    #[test]
    fn bad_crc_is_invalid() {
        let mut n = Net::new();
        let mut p = n.a.sctp(5000, 2905, 0, &[init(ITAG_A)]);
        let last = p.len() - 1;
        p[last] ^= 0x40;
        assert_eq!(n.track(&p), (CtState::Invalid, Some(Invalid::Checksum)));
        assert!(n.line().is_empty());
        // Not checked when checksum verification is off.
        n.ct.cfg.checksum = false;
        assert_eq!(n.track(&p), (CtState::New, None));
    }

    #[test]
    fn bundling_rules() {
        let mut n = Net::new();
        let bad: [&[C]; 6] = [
            &[init(ITAG_A), data()],
            &[data(), init(ITAG_A)],
            &[init_ack(ITAG_A), hb()],
            &[chunk(ty::SHUTDOWN_COMPLETE), chunk(ty::ABORT)],
            &[data(), C::new(ty::COOKIE_ECHO, 0, &[1])],
            &[hb(), chunk(ty::COOKIE_ACK)],
        ];
        for chunks in bad {
            assert_eq!(n.send(true, 0, chunks), (CtState::Invalid, Some(Invalid::SctpChunks)), "{chunks:?}");
        }
        // No chunk at all, and a chunk of length 0.
        let empty = n.a.sctp(5000, 2905, 0, &[]);
        assert_eq!(n.track(&empty).1, Some(Invalid::SctpChunks));
        let mut zero = n.a.sctp(5000, 2905, 0, &[hb()]);
        zero[20 + 12 + 2..20 + 12 + 4].fill(0);
        proto::checksum::sctp_fill(&mut zero[20..]);
        assert_eq!(n.track(&zero).1, Some(Invalid::SctpChunks));
        assert!(n.line().is_empty());
    }

    #[test]
    fn what_may_start_a_connection() {
        let mut n = Net::new();
        // Out of the blue ABORT, SHUTDOWN COMPLETE, COOKIE ACK; DATA alone.
        for c in [chunk(ty::ABORT), chunk(ty::SHUTDOWN_COMPLETE), chunk(ty::COOKIE_ACK), data()] {
            assert_eq!(n.send(true, 5, &[c]).1, Some(Invalid::SctpState));
        }
        // A COOKIE ECHO with DATA bundled cannot, because DATA cannot.
        assert_eq!(n.send(true, 0, &[C::new(ty::COOKIE_ECHO, 0, &[1]), data()]).1, Some(Invalid::SctpState));
        assert!(n.line().is_empty());
        // A truncated INIT cannot.
        assert_eq!(n.send(true, 0, &[C::new(ty::INIT, 0, &[0, 0, 0, 1])]).1, Some(Invalid::Truncated));
        // A HEARTBEAT can (a secondary path), learning the sender's tag.
        assert_eq!(n.send(true, 77, &[hb()]), (CtState::New, None));
        assert_eq!(n.state(), (SctpState::HeartbeatSent, [77, 0], false));
        assert!(n.line().starts_with("sctp     132 29 HEARTBEAT_SENT "), "{}", n.line());
        // The HEARTBEAT ACK learns the other tag and establishes (and assures) it.
        assert_eq!(n.send(false, 88, &[C::new(ty::HEARTBEAT_ACK, 0, &[0, 1, 0, 8, 9, 9, 9, 9])]).1, None);
        assert_eq!(n.state(), (SctpState::Established, [77, 88], true));
        assert_eq!(n.send(true, 77, &[data()]).1, None);
    }

    #[test]
    fn abort_closes() {
        let mut n = Net::new();
        handshake(&mut n);
        // ABORT without the T bit carries the receiver's tag.
        assert_eq!(n.send(false, ITAG_B, &[chunk(ty::ABORT)]).1, Some(Invalid::SctpVtag));
        assert_eq!(n.send(false, ITAG_A, &[chunk(ty::ABORT)]), (CtState::Established, None));
        assert_eq!(n.state().0, SctpState::Closed);
        assert!(n.line().starts_with("sctp     132 9 CLOSED "), "{}", n.line());
        // A retransmitted INIT in CLOSED does not refresh the timeout.
        n.now = n.now.plus_secs(5);
        assert_eq!(n.send(true, 0, &[init(ITAG_A)]).1, None);
        assert!(n.line().starts_with("sctp     132 4 CLOSED "), "{}", n.line());
        // A new INIT opens a new handshake on the same entry.
        assert_eq!(n.send(true, 0, &[init(0x3333)]).1, None);
        assert!(n.line().starts_with("sctp     132 4 CLOSED "), "{}", n.line());
        assert_eq!(n.send(false, 0x3333, &[init_ack(0x4444)]).1, None);
        assert_eq!(n.state().0, SctpState::CookieWait);
    }

    #[test]
    fn abort_with_t_bit_and_timeouts() {
        let mut n = Net::new();
        assert_eq!(n.send(true, 0, &[init(ITAG_A)]).1, None);
        // Reflected tag: the sender's own (A's initiate tag), with T.
        assert_eq!(n.send(false, ITAG_A, &[C::new(ty::ABORT, FLAG_T, &[])]).1, Some(Invalid::SctpVtag));
        assert_eq!(n.send(false, 0, &[C::new(ty::ABORT, FLAG_T, &[])]).1, None);
        assert_eq!(n.state().0, SctpState::Closed);
        // The entry expires after the CLOSED timeout.
        n.now = n.now.plus_secs(10);
        assert!(n.line().is_empty());
    }

    #[test]
    fn stale_init_ack_after_the_handshake_is_invalid() {
        let mut n = Net::new();
        handshake(&mut n);
        // Once the handshake is complete, an INIT ACK announcing a tag other than the one known
        // for its sender is stale.
        assert_eq!(n.send(false, ITAG_A, &[init_ack(0x9999)]).1, Some(Invalid::SctpVtag));
        assert_eq!(n.send(false, ITAG_A, &[init_ack(ITAG_B)]).1, None);
        assert_eq!(n.state(), (SctpState::Established, [ITAG_B, ITAG_A], true));
    }

    #[test]
    fn init_collision() {
        let mut n = Net::new();
        assert_eq!(n.send(true, 0, &[init(ITAG_A)]).1, None);
        // B's own INIT crosses A's: with both INITs outstanding, an INIT ACK must announce the
        // same tag as its sender's INIT did.
        assert_eq!(n.send(false, 0, &[init(ITAG_B)]).1, None);
        assert_eq!(n.send(true, ITAG_B, &[init_ack(0x7777)]).1, Some(Invalid::SctpVtag));
        assert_eq!(n.send(true, ITAG_B, &[init_ack(ITAG_A)]).1, None);
        assert_eq!(n.state().0, SctpState::Closed);
    }

    #[test]
    fn heartbeat_after_peer_restart_relearns_tags() {
        let mut n = Net::new();
        handshake(&mut n);
        let before = n.line();
        // A HEARTBEAT with an unknown tag is let through once, without a refresh.
        n.now = n.now.plus_secs(10);
        assert_eq!(n.send(true, 0x5555, &[hb()]).1, None);
        assert!(n.line().starts_with("sctp     132 199 ESTABLISHED "), "{before} / {}", n.line());
        // ...but not with DATA bundled.
        assert_eq!(n.send(true, 0x5555, &[data(), hb()]).1, Some(Invalid::SctpVtag));
        // Its acknowledgement from the other side re-learns the tags.
        assert_eq!(n.send(false, 0x6666, &[C::new(ty::HEARTBEAT_ACK, 0, &[0, 1, 0, 8, 9, 9, 9, 9])]).1, None);
        assert_eq!(n.state().1, [0, 0x6666]);
        assert!(n.line().starts_with("sctp     132 209 ESTABLISHED "), "{}", n.line());
    }

    #[test]
    fn timeouts_come_from_the_policy_values_per_packet() {
        let mut n = Net::new();
        n.ct.defaults.of(crate::conntrack::Proto::Sctp).set(0, 42);
        assert_eq!(n.send(true, 0, &[init(ITAG_A)]).1, None);
        assert!(n.line().starts_with("sctp     132 41 CLOSED "), "{}", n.line());
        assert_eq!(timeout_slot(&State::default()), 0);
        let s = State { state: SctpState::HeartbeatSent, ..State::default() };
        assert_eq!((timeout_slot(&s), state_code(&s), Sctp::state_name(&s)), (7, 8, Some("HEARTBEAT_SENT")));
        assert_eq!(Sctp::TIMEOUT_NAMES.len(), Sctp::DEFAULT_TIMEOUTS.len());
    }

    #[test]
    fn truncated_and_odd_chunk_walks_do_not_panic() {
        let mut n = Net::new();
        let base = n.a.sctp(5000, 2905, 0, &[init(ITAG_A)]);
        n.ct.cfg.checksum = false;
        for cut in 20..base.len() {
            // Cut the datagram short, with its IP length fixed so that it still parses.
            let mut p = base[..cut].to_vec();
            p[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
            p[10..12].fill(0);
            let c = proto::checksum::internet(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            if let Ok(pkt) = parse_ip(&p, 0) {
                let mut t = n.ct.track(n.now, &p, &pkt, &mut n.stats);
                let _ = n.ct.confirm(&mut t, &mut n.stats);
            }
        }
        // A chunk whose length runs past the packet is walked as the kernel walks it.
        let mut p = n.a.sctp(5000, 2905, 0, &[hb()]);
        p[20 + 12 + 2..20 + 12 + 4].copy_from_slice(&0xfff0u16.to_be_bytes());
        assert_eq!(n.track(&p).1, None);
    }
}

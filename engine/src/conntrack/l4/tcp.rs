//! TCP (`nf_conntrack_proto_tcp.c`).
//!
//! The tracker follows Linux 6.x: a state table indexed by direction, flag class and old state,
//! special cases the table cannot express (simultaneous open, SYN/ACK resynchronisation after an
//! ignored SYN, RFC 5961 challenge ACKs, RST sequence checks, re-opening TIME_WAIT), and window
//! tracking after Guido van Rooij's "Real Stateful TCP Packet Filtering in IP Filter" with the
//! kernel's amendments (window scaling, SACK, liberal pickups, the "N bytes more than expected"
//! workaround). The timeout is chosen per packet from the values in force, so a policy change is
//! seen at the next packet.
//!
//! State per connection is two [`Side`]s (one per direction) and a few fields remembering the last
//! packet: about 60 bytes, no allocation. Sequence numbers compare modulo 2^32.

use proto::checksum;
use proto::packet::{ipproto, tcp_flags, Packet, L4};

use super::{Config, Ctx, Invalid, Tracker, Verdict};
use crate::conntrack::conn::Status;
use crate::conntrack::tuple::Dir;

/// The TCP tracker.
pub struct Tcp;

/// Connection states, numbered as the kernel's `enum tcp_conntrack` (ctnetlink carries the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum TcpState {
    /// No packet seen yet.
    #[default]
    None = 0,
    /// A SYN seen.
    SynSent = 1,
    /// A SYN/ACK seen.
    SynRecv = 2,
    /// The handshake's ACK (or a picked-up connection's packet) seen.
    Established = 3,
    /// A FIN seen.
    FinWait = 4,
    /// The FIN acknowledged.
    CloseWait = 5,
    /// FINs seen both ways, waiting for the last ACK.
    LastAck = 6,
    /// The last ACK seen.
    TimeWait = 7,
    /// Reset.
    Close = 8,
    /// A SYN from the reply side after one from the original side: simultaneous open.
    SynSent2 = 9,
}

impl TcpState {
    /// Every state, by number.
    pub const ALL: [TcpState; 10] = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::SynSent2,
    ];

    /// The name `conntrack -L` prints (`tcp_conntrack_names`).
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }

    /// The kernel's number for the state (`CTA_PROTOINFO_TCP_STATE`).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The state with kernel number `n`, if there is one.
    pub fn from_code(n: u8) -> Option<TcpState> {
        TcpState::ALL.get(usize::from(n)).copied()
    }

    /// The timeout slot of the state: cttimeout attribute `state number`, so slot `number - 1`.
    /// NONE, which only a connection without any packet has, shares SYN_SENT's slot as the
    /// kernel's `CTA_TIMEOUT_TCP_UNSPEC` value does.
    pub fn slot(self) -> usize {
        usize::from(self.code()).saturating_sub(1)
    }
}

/// Timeout slots that are no state: cttimeout attributes 10 and 11.
pub const SLOT_RETRANS: usize = 9;
/// Unacknowledged data in flight (or a picked-up connection without a reply).
pub const SLOT_UNACK: usize = 10;

/// Per-direction flags, with the kernel's bit values (`IP_CT_TCP_FLAG_*`, carried by ctnetlink's
/// `CTA_PROTOINFO_TCP_FLAGS_*`).
pub mod flags {
    /// The side sent the window scale option.
    pub const WINDOW_SCALE: u8 = 0x01;
    /// The side sent SACK-permitted.
    pub const SACK_PERM: u8 = 0x02;
    /// The side sent the first FIN.
    pub const CLOSE_INIT: u8 = 0x04;
    /// Window checks never fail for packets from this side.
    pub const BE_LIBERAL: u8 = 0x08;
    /// The side has sent data the other side has not acknowledged yet.
    pub const DATA_UNACKNOWLEDGED: u8 = 0x10;
    /// `td_maxack` holds a value.
    pub const MAXACK_SET: u8 = 0x20;
    /// In the connection's `last_flags` only: an ignored SYN in LAST_ACK may draw a challenge ACK.
    pub const EXP_CHALLENGE_ACK: u8 = 0x40;
    /// In the connection's `last_flags` only: the connection opened simultaneously.
    pub const SIMULTANEOUS_OPEN: u8 = 0x80;
}

use flags::*;

/// Largest window scale shift (RFC 7323), `TCP_MAX_WSCALE`.
const MAX_WSCALE: u8 = 14;
/// Lower bound of the window an ACK may lag behind (`MAXACKWINCONST`).
const MAX_ACK_WIN_CONST: u32 = 66000;
/// A FIN/RST answering an out-of-window FIN/RST shortens the timeout only if this much remains.
const HANDLE_INVALID_MIN_NS: u64 = 120 * 1_000_000_000;

/// What we know about one direction's sender (`struct ip_ct_tcp_state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Side {
    /// Highest sequence number sent plus length (`td_end`).
    end: u32,
    /// Highest acknowledgement plus window the peer granted (`td_maxend`).
    maxend: u32,
    /// Largest (scaled) window this side advertised (`td_maxwin`); 0 = no packet seen yet.
    maxwin: u32,
    /// Highest acknowledgement this side sent (`td_maxack`).
    maxack: u32,
    /// Window scale shift (`td_scale`).
    scale: u8,
    /// [`flags`] bits.
    flags: u8,
}

impl Side {
    /// Forgets everything but the liberal bit (`nf_ct_tcp_state_reset`).
    fn reset(&mut self) {
        *self = Side { flags: self.flags & BE_LIBERAL, ..Side::default() };
    }

    /// The window scale shift.
    pub fn scale(&self) -> u8 {
        self.scale
    }

    /// The [`flags`] bits.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// How far an ACK from the peer may lag behind this side's data (`MAXACKWINDOW`).
    fn max_ack_window(&self) -> u32 {
        self.maxwin.max(MAX_ACK_WIN_CONST)
    }
}

/// Flag class of a segment (`enum tcp_bit_set`), the middle index of the state table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
enum Index {
    Syn = 0,
    SynAck = 1,
    Fin = 2,
    Ack = 3,
    Rst = 4,
    None = 5,
}

impl Index {
    /// The class of a segment with these flags, first match wins (`get_conntrack_index`).
    fn of(f: u8) -> Index {
        if f & tcp_flags::RST != 0 {
            Index::Rst
        } else if f & tcp_flags::SYN != 0 {
            if f & tcp_flags::ACK != 0 {
                Index::SynAck
            } else {
                Index::Syn
            }
        } else if f & tcp_flags::FIN != 0 {
            Index::Fin
        } else if f & tcp_flags::ACK != 0 {
            Index::Ack
        } else {
            Index::None
        }
    }
}

/// Per-connection TCP state (`struct ip_ct_tcp`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// `seen[Dir::Original as usize]` and `seen[Dir::Reply as usize]`.
    seen: [Side; 2],
    state: TcpState,
    /// Direction of the last packet that was committed or ignored.
    last_dir: Dir,
    /// Identical ACK-class packets in a row (`u8`, wrapping as the kernel's does).
    retrans: u8,
    last_index: Index,
    last_seq: u32,
    last_ack: u32,
    last_end: u32,
    /// Raw (unscaled) window of the last remembered packet.
    last_win: u16,
    /// Window scale of an ignored SYN, for a later resynchronisation.
    last_wscale: u8,
    /// WINDOW_SCALE / SACK_PERM of an ignored SYN, EXP_CHALLENGE_ACK, SIMULTANEOUS_OPEN.
    last_flags: u8,
}

impl Default for State {
    fn default() -> Self {
        State {
            seen: [Side::default(); 2],
            state: TcpState::None,
            last_dir: Dir::Original,
            retrans: 0,
            last_index: Index::None,
            last_seq: 0,
            last_ack: 0,
            last_end: 0,
            last_win: 0,
            last_wscale: 0,
            last_flags: 0,
        }
    }
}

impl State {
    /// The connection state.
    pub fn state(&self) -> TcpState {
        self.state
    }

    /// What is known of direction `d`'s sender (window scale and flags for ctnetlink).
    pub fn side(&self, d: Dir) -> &Side {
        &self.seen[d as usize]
    }

    /// Applies ctnetlink's `CTA_PROTOINFO_TCP` as `nlattr_to_tcp` does: the state, each
    /// direction's `(flags, mask)`, then both window scales if both are given and both sides have
    /// `WINDOW_SCALE`.
    pub fn apply_netlink(&mut self, state: Option<TcpState>, flags: [Option<(u8, u8)>; 2], wscale: [Option<u8>; 2]) {
        if let Some(st) = state {
            self.state = st;
        }
        for (side, f) in self.seen.iter_mut().zip(flags) {
            if let Some((bits, mask)) = f {
                side.flags = (side.flags & !mask) | (bits & mask);
            }
        }
        if let [Some(o), Some(r)] = wscale {
            if self.seen[0].flags & WINDOW_SCALE != 0 && self.seen[1].flags & WINDOW_SCALE != 0 {
                self.seen[0].scale = o;
                self.seen[1].scale = r;
            }
        }
    }
}

/// The timeout slot for the connection's current state.
pub fn timeout_slot(s: &State) -> usize {
    s.state.slot()
}

/// The kernel's number of the connection's state (`CTA_PROTOINFO_TCP_STATE`).
pub fn state_code(s: &State) -> u8 {
    s.state.code()
}

/// One cell of the state table: a new state, or one of the two pseudo-states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    To(TcpState),
    /// `sIG`: the packet may be valid but we may be out of sync; let it pass, change nothing.
    Ignore,
    /// `sIV`: the packet is invalid in this state.
    Invalid,
}

/// The NONE column's name; no transition leads back to NONE.
#[allow(dead_code)]
const NO: Next = Next::To(TcpState::None);
const SS: Next = Next::To(TcpState::SynSent);
const SR: Next = Next::To(TcpState::SynRecv);
const ES: Next = Next::To(TcpState::Established);
const FW: Next = Next::To(TcpState::FinWait);
const CW: Next = Next::To(TcpState::CloseWait);
const LA: Next = Next::To(TcpState::LastAck);
const TW: Next = Next::To(TcpState::TimeWait);
const CL: Next = Next::To(TcpState::Close);
const S2: Next = Next::To(TcpState::SynSent2);
const IG: Next = Next::Ignore;
const IV: Next = Next::Invalid;

/// `tcp_conntracks[dir][index][old state]`: the transition table of Linux 6.x (with the
/// SYN_SENT2 column; 2.6-era kernels had LISTEN there).
#[rustfmt::skip]
static TABLE: [[[Next; 10]; 6]; 2] = [
    // ORIGINAL direction
    [
        //        NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*syn*/ [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
        // NO→SS  a new connection.
        // SS→SS  the SYN retransmitted.
        // SR→IG  a SYN outside SYN_SENT is an error the receiver answers with an RST, or we
        // ES→IG  hold a dead connection: let it pass unchanged, a SYN/ACK answering it
        // FW→IG  resynchronises us (see `ignore`).
        // CW→IG
        // LA→IG
        // TW→SS  re-opened connection (RFC 1122); `packet` kills the old entry and re-tracks.
        // CL→SS  likewise.
        // S2→S2  a late retransmitted SYN of a simultaneous open.
        //           NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*synack*/ [IV, IV, SR, IV, IV, IV, IV, IV, IV, SR],
        // NO→IV  too late to start anything.
        // SS→IV  the client cannot send a SYN and then a SYN/ACK.
        // SR→SR  a late retransmitted SYN/ACK of a simultaneous open.
        // ES→IV  an invalid SYN/ACK from the client.
        // FW→IV, CW→IV, LA→IV, TW→IV, CL→IV  likewise.
        // S2→SR  the SYN/ACK answering the reply side's SYN in a simultaneous open.
        //        NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*fin*/ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        // NO→IV  too late.
        // SS→IV  no FIN before the SYN/ACK came back.
        // SR→FW  close started.
        // ES→FW  close started.
        // FW→LA  FINs seen both ways (or the FIN retransmitted), waiting for the last ACK.
        // CW→LA  the second FIN.
        // LA→LA  the FIN retransmitted.
        // TW→TW, CL→CL  stay.
        // S2→IV  no FIN during a simultaneous open.
        //        NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*ack*/ [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
        // NO→ES  assumed: a connection picked up mid-stream.
        // SS→IV  no ACK before the SYN/ACK.
        // SR→ES  the handshake completes.
        // ES→ES  data.
        // FW→CW  the FIN acknowledged.
        // CW→CW  stay.
        // LA→TW  the last ACK (unless it is an RFC 5961 challenge ACK, see `packet`).
        // TW→TW  the last ACK retransmitted.
        // CL→CL  stay.
        // S2→IV  no ACK before a SYN/ACK.
        //        NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*rst*/ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        // NO→IV  nothing to reset; anything else closes (subject to the RST checks in `packet`).
        //         NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*none*/ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
        // No SYN, FIN, ACK or RST: never valid.
    ],
    // REPLY direction
    [
        //        NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*syn*/ [IV, S2, IV, IV, IV, IV, IV, SS, IV, S2],
        // NO→IV  never reached (a connection starts in the original direction).
        // SS→S2  simultaneous open.
        // SR→IV  an invalid SYN from the server.
        // ES→IV, FW→IV, CW→IV, LA→IV  likewise.
        // TW→SS  re-opened connection, the server may have switched roles.
        // CL→IV  no re-opening from the server side after a reset.
        // S2→S2  the simultaneous SYN retransmitted.
        //           NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*synack*/ [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
        // NO→IV  never reached.
        // SS→SR  the standard open.
        // SR→IG  the SYN/ACK retransmitted.
        // ES→IG  a late retransmitted SYN/ACK, or one answering a SYN we ignored.
        // FW→IG, CW→IG, LA→IG, TW→IG, CL→IG  may answer an ignored SYN.
        // S2→SR  simultaneous open.
        //        NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*fin*/ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        // NO→IV  never reached.
        // SS→IV  the server cannot send a FIN before its SYN/ACK.
        // SR→FW  close started.
        // ES→FW  close started.
        // FW→LA  FINs seen both ways.
        // CW→LA  the second FIN.
        // LA→LA  the FIN retransmitted.
        // TW→TW, CL→CL  stay.
        // S2→IV  no FIN during a simultaneous open.
        //        NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*ack*/ [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
        // NO→IV  never reached.
        // SS→IG  may be a half-open connection (or a challenge ACK answering the SYN).
        // SR→SR  may answer a late resent SYN (→ES in a simultaneous open, see `packet`).
        // ES→ES  data.
        // FW→CW  the FIN acknowledged.
        // CW→CW  stay.
        // LA→TW  the last ACK (unless it is an RFC 5961 challenge ACK).
        // TW→TW  the last ACK retransmitted.
        // CL→CL  stay.
        // S2→IG  as SS.
        //        NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*rst*/ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        // NO→IV  never reached; anything else closes (subject to the RST checks in `packet`).
        //         NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
        /*none*/ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
        // No SYN, FIN, ACK or RST: never valid.
    ],
];

/// The table cell for a packet of class `index` in direction `d` while in state `old`.
fn next(d: Dir, index: Index, old: TcpState) -> Next {
    TABLE[d as usize][index as usize][old as usize]
}

/// Flag combinations `tcp_error` lets through, after masking ECE, CWR and PSH
/// (`tcp_valid_flags`). Anything else (no flags, FIN without ACK, SYN|FIN, SYN|RST, ...) is invalid.
fn valid_flags(f: u8) -> bool {
    use tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
    const SYN_URG: u8 = SYN | URG;
    const SYN_ACK: u8 = SYN | ACK;
    const RST_ACK: u8 = RST | ACK;
    const FIN_ACK: u8 = FIN | ACK;
    const FIN_ACK_URG: u8 = FIN | ACK | URG;
    const ACK_URG: u8 = ACK | URG;
    matches!(f & !(ECE | CWR | PSH), SYN | SYN_URG | SYN_ACK | RST | RST_ACK | FIN_ACK | FIN_ACK_URG | ACK | ACK_URG)
}

/// `a` comes before `b` in sequence space.
#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` comes after `b` in sequence space.
#[inline]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// The fields of a segment the tracker uses.
#[derive(Debug, Clone, Copy)]
struct Seg<'a> {
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    /// `seq + payload + SYN + FIN` (`segment_seq_plus_len`).
    end: u32,
    /// The option bytes (between the fixed header and the data).
    opts: &'a [u8],
}

impl<'a> Seg<'a> {
    fn of(pkt: &Packet, buf: &'a [u8], t: &proto::packet::Tcp) -> Seg<'a> {
        let hlen = usize::from(t.header_len);
        let payload = pkt.end.saturating_sub(pkt.l4_offset).saturating_sub(hlen);
        let syn = u32::from(t.flags & tcp_flags::SYN != 0);
        let fin = u32::from(t.flags & tcp_flags::FIN != 0);
        let end = t.seq.wrapping_add(payload as u32).wrapping_add(syn).wrapping_add(fin);
        let opts = if hlen > 20 { buf.get(pkt.l4_offset + 20..pkt.l4_offset + hlen).unwrap_or(&[]) } else { &[] };
        Seg { seq: t.seq, ack: t.ack, flags: t.flags, win: t.window, end, opts }
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Walks TCP options as the kernel's simplified parser does: EOL stops, NOP is skipped, a
/// malformed length ends the walk. Calls `f(kind, body)` for each well-formed option.
fn walk_options(opts: &[u8], mut f: impl FnMut(u8, &[u8]) -> bool) {
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => return,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&size) = opts.get(i + 1) else { return };
        let size = usize::from(size);
        if size < 2 || size > opts.len() - i {
            return;
        }
        let body = opts.get(i + 2..i + size).unwrap_or(&[]);
        if !f(kind, body) {
            return;
        }
        i += size;
    }
}

/// Reads window scale and SACK-permitted into `side` (`tcp_options`). Without options the side
/// is left as it is; with options its scale and flags (but BE_LIBERAL) are reset first.
fn read_options(opts: &[u8], side: &mut Side) {
    if opts.is_empty() {
        return;
    }
    side.scale = 0;
    side.flags &= BE_LIBERAL;
    walk_options(opts, |kind, body| {
        match (kind, body.len()) {
            (4, 0) => side.flags |= SACK_PERM,
            (3, 1) => {
                side.scale = body[0].min(MAX_WSCALE);
                side.flags |= WINDOW_SCALE;
            }
            _ => {}
        }
        true
    });
}

/// The highest SACK right edge after `sack` in the first well-formed SACK option (`tcp_sack`).
fn highest_sack(opts: &[u8], mut sack: u32) -> u32 {
    walk_options(opts, |kind, body| {
        if kind == 5 && body.len() >= 8 && body.len() % 8 == 0 {
            for block in body.chunks_exact(8) {
                let right = u32::from_be_bytes([block[4], block[5], block[6], block[7]]);
                if after(right, sack) {
                    sack = right;
                }
            }
            return false;
        }
        true
    });
    sack
}

/// `(sender, receiver)` for a packet in direction `d`.
fn pair(seen: &mut [Side; 2], d: Dir) -> (&mut Side, &mut Side) {
    let [o, r] = seen;
    match d {
        Dir::Original => (o, r),
        Dir::Reply => (r, o),
    }
}

/// (Re)initialises a sender from its SYN or SYN/ACK (`tcp_init_sender`).
fn init_sender(sender: &mut Side, receiver: &mut Side, seg: &Seg<'_>, d: Dir) {
    sender.end = seg.end;
    sender.maxend = seg.end;
    sender.maxwin = u32::from(seg.win).max(1);
    read_options(seg.opts, sender);
    // RFC 7323: scaling applies only if both sides sent the option.
    if d == Dir::Reply && !(sender.flags & WINDOW_SCALE != 0 && receiver.flags & WINDOW_SCALE != 0) {
        sender.scale = 0;
        receiver.scale = 0;
    }
}

/// Outcome of the window check (`enum nf_ct_tcp_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Let the packet pass without changing the connection.
    Ignore,
    /// The packet is invalid.
    Invalid,
    /// In window: commit.
    Accept,
}

/// `tcp_in_window`: checks the segment against what both sides have seen and updates them.
fn in_window(s: &mut State, d: Dir, index: Index, seg: &Seg<'_>, cfg: &Config) -> Action {
    let cur = s.state;
    let (sender, receiver) = pair(&mut s.seen, d);
    let mut seq = seg.seq;
    let mut ack = seg.ack;
    let mut sack = ack;
    let mut win = u32::from(seg.win);
    let mut end = seg.end;
    let syn = seg.has(tcp_flags::SYN);
    let has_ack = seg.has(tcp_flags::ACK);

    if receiver.flags & SACK_PERM != 0 {
        sack = highest_sack(seg.opts, sack);
    }
    // (No NAT sequence adjustment: ferrowall does not rewrite sequence numbers.)

    if sender.maxwin == 0 {
        // The first packet in this direction.
        if syn {
            init_sender(sender, receiver, seg, d);
            if !has_ack {
                // A SYN from the reply side: simultaneous open.
                return Action::Accept;
            }
        } else {
            // Picked up mid-stream: take what this packet tells.
            sender.end = end;
            let swin = win.checked_shl(u32::from(sender.scale)).unwrap_or(0);
            sender.maxwin = swin.max(1);
            sender.maxend = end.wrapping_add(sender.maxwin);
            if receiver.maxwin == 0 {
                // Nothing seen the other way either: make III and IV pass until it is.
                receiver.end = sack;
                receiver.maxend = sack;
            } else if sack == receiver.end.wrapping_add(1) {
                // Probably answering a keep-alive.
                receiver.end = receiver.end.wrapping_add(1);
            }
        }
    } else if syn && after(end, sender.end) && matches!(cur, TcpState::SynSent | TcpState::SynRecv) {
        // RFC 793: a re-initialised TCP may use higher sequence numbers right away. Start this
        // direction over as for its first SYN (or SYN/ACK).
        init_sender(sender, receiver, seg, d);
        if d == Dir::Reply && !has_ack {
            return Action::Accept;
        }
    }

    if !has_ack || (seg.flags & (tcp_flags::ACK | tcp_flags::RST) == tcp_flags::ACK | tcp_flags::RST && ack == 0) {
        // No ACK, or a broken stack's RST|ACK with a zero ack: pretend it acknowledged all.
        ack = receiver.end;
        sack = receiver.end;
    }

    if seg.has(tcp_flags::RST) && seq == 0 && cur == TcpState::SynSent {
        // An RST answering a SYN.
        seq = sender.end;
        end = sender.end;
    }

    let liberal = sender.flags & BE_LIBERAL != 0 || cfg.tcp_be_liberal;
    let verdict = |a: Action| if liberal { Action::Accept } else { a };

    // I. Upper bound for data: seq <= sender.maxend.
    if !before(seq, sender.maxend.wrapping_add(1)) {
        let overshot = end.wrapping_sub(sender.maxend).wrapping_add(1);
        let ack_ok = after(sack, receiver.end.wrapping_sub(sender.max_ack_window()).wrapping_sub(1));
        let in_recv_win = receiver.maxwin != 0 && after(end, sender.end.wrapping_sub(receiver.maxwin).wrapping_sub(1));
        if in_recv_win && ack_ok && overshot <= receiver.maxwin && before(sack, receiver.end.wrapping_add(1)) {
            // A stack sending a little more than the window allows: remember the data, so
            // that the ACK for it passes III later, but let this packet pass unaccounted.
            sender.end = end;
            sender.flags |= DATA_UNACKNOWLEDGED;
            return verdict(Action::Ignore);
        }
        return verdict(Action::Invalid);
    }
    // III. Upper bound for (s)ack: no acknowledging data not seen yet.
    if !before(sack, receiver.end.wrapping_add(1)) {
        return verdict(Action::Invalid);
    }
    // II. Lower bound for data: not entirely below the receiver's window (an old retransmit).
    let in_recv_win = receiver.maxwin == 0 || after(end, sender.end.wrapping_sub(receiver.maxwin).wrapping_sub(1));
    if !in_recv_win {
        return verdict(Action::Ignore);
    }
    // IV. Lower bound for (s)ack: an overly delayed ACK.
    if !after(sack, receiver.end.wrapping_sub(sender.max_ack_window()).wrapping_sub(1)) {
        return verdict(Action::Ignore);
    }

    // Window scaling (RFC 7323) applies to every segment but a SYN.
    if !syn {
        win = win.checked_shl(u32::from(sender.scale)).unwrap_or(0);
    }

    // Update the sender.
    let swin = win.wrapping_add(sack.wrapping_sub(ack));
    if sender.maxwin < swin {
        sender.maxwin = swin;
    }
    if after(end, sender.end) {
        sender.end = end;
        sender.flags |= DATA_UNACKNOWLEDGED;
    }
    if has_ack {
        if sender.flags & MAXACK_SET == 0 {
            sender.maxack = ack;
            sender.flags |= MAXACK_SET;
        } else if after(ack, sender.maxack) {
            sender.maxack = ack;
        }
    }

    // Update the receiver.
    if receiver.maxwin != 0 && after(end, sender.maxend) {
        receiver.maxwin = receiver.maxwin.wrapping_add(end.wrapping_sub(sender.maxend));
    }
    if after(sack.wrapping_add(win), receiver.maxend.wrapping_sub(1)) {
        receiver.maxend = sack.wrapping_add(win);
        if win == 0 {
            receiver.maxend = receiver.maxend.wrapping_add(1);
        }
    }
    if ack == receiver.end {
        receiver.flags &= !DATA_UNACKNOWLEDGED;
    }

    // Count retransmissions: the same ACK-class segment again.
    if index == Index::Ack {
        if s.last_dir == d && s.last_seq == seq && s.last_ack == ack && s.last_end == end && s.last_win == seg.win {
            s.retrans = s.retrans.wrapping_add(1);
        } else {
            s.last_dir = d;
            s.last_seq = seq;
            s.last_ack = ack;
            s.last_end = end;
            s.last_win = seg.win;
            s.retrans = 0;
        }
    }
    Action::Accept
}

/// Handles a packet the table marks IGNORE (or a SYN on TIME_WAIT/CLOSE that may not re-open).
/// Returns true when it is a SYN/ACK answering a SYN we ignored earlier: both ends are in sync and
/// we are not, so the connection restarts from that SYN (the caller continues as SYN_SENT →
/// SYN_RECV). Otherwise the packet is remembered and passes without any change of state.
fn ignore(s: &mut State, d: Dir, index: Index, seg: &Seg<'_>, old: TcpState) -> bool {
    if index == Index::SynAck && s.last_index == Index::Syn && s.last_dir != d && seg.ack == s.last_end {
        let last = &mut s.seen[s.last_dir as usize];
        last.end = s.last_end;
        last.maxend = s.last_end;
        last.maxwin = u32::from(s.last_win).max(1);
        last.scale = s.last_wscale;
        s.last_flags &= !EXP_CHALLENGE_ACK;
        last.flags = s.last_flags;
        s.seen[d as usize].reset();
        return true;
    }
    s.last_index = index;
    s.last_dir = d;
    s.last_seq = seg.seq;
    s.last_end = seg.end;
    s.last_win = seg.win;
    if index == Index::Syn && d == Dir::Original {
        // Remember the SYN's options: if the server answers it, we resynchronise from them.
        let mut opts = Side::default();
        read_options(seg.opts, &mut opts);
        s.last_flags = 0;
        s.last_wscale = 0;
        if opts.flags & WINDOW_SCALE != 0 {
            s.last_flags |= WINDOW_SCALE;
            s.last_wscale = opts.scale;
        }
        if opts.flags & SACK_PERM != 0 {
            s.last_flags |= SACK_PERM;
        }
        // An RFC 5961 server answers with a challenge ACK, which must not pass for the ACK of
        // the last FIN.
        if old == TcpState::LastAck {
            s.last_flags |= EXP_CHALLENGE_ACK;
        }
    }
    if old == TcpState::SynSent && index == Index::Ack && d == Dir::Reply {
        // Possibly a challenge ACK answering the SYN: an RST from the client may follow it.
        s.last_ack = seg.ack;
    }
    false
}

/// `nf_tcp_handle_invalid`: an assured connection whose both sides send out-of-window FINs or
/// RSTs is probably dead; shorten its timeout to UNACK rather than keep it for days.
fn handle_invalid(s: &mut State, ctx: &mut Ctx<'_>, d: Dir, index: Index) {
    if !ctx.status.contains(Status::ASSURED) || ctx.status.contains(Status::FIXED_TIMEOUT) {
        return;
    }
    if !matches!(index, Index::Rst | Index::Fin) {
        return;
    }
    if s.last_dir != d && matches!(s.last_index, Index::Fin | Index::Rst) {
        let left = ctx.expires.since(ctx.now);
        if left < HANDLE_INVALID_MIN_NS {
            return;
        }
        let unack = ctx.timeouts.get(SLOT_UNACK);
        if left > u64::from(unack) * 1_000_000_000 {
            *ctx.expires = ctx.now.plus_secs(unack);
        }
    } else {
        s.last_index = index;
        s.last_dir = d;
    }
}

impl Tracker for Tcp {
    type State = State;
    const TIMEOUT_NAMES: &'static [&'static str] = proto::cttimeout::names::TCP;
    const DEFAULT_TIMEOUTS: &'static [u32] = &[120, 60, 432000, 120, 60, 30, 120, 10, 120, 300, 300];

    fn error(pkt: &Packet, buf: &[u8], cfg: &Config) -> Result<(), Invalid> {
        let L4::Tcp(t) = pkt.l4 else { return Err(Invalid::Truncated) };
        let seg = buf.get(pkt.l4_offset..pkt.end).ok_or(Invalid::Truncated)?;
        let hlen = usize::from(t.header_len);
        if hlen < 20 || hlen > seg.len() {
            return Err(Invalid::Truncated);
        }
        if cfg.checksum
            && !pkt.l4_checksum_verified
            && checksum::l4(pkt.family, &pkt.src, &pkt.dst, ipproto::TCP, seg, seg.len()) != 0
        {
            return Err(Invalid::Checksum);
        }
        if !valid_flags(t.flags) {
            return Err(Invalid::TcpFlags);
        }
        Ok(())
    }

    fn new(pkt: &Packet, buf: &[u8], cfg: &Config) -> Result<State, Invalid> {
        let L4::Tcp(t) = pkt.l4 else { return Err(Invalid::Truncated) };
        let seg = Seg::of(pkt, buf, &t);
        let mut s = State::default();
        let first = &mut s.seen[Dir::Original as usize];
        match next(Dir::Original, Index::of(t.flags), TcpState::None) {
            Next::To(TcpState::SynSent) => {
                first.end = seg.end;
                first.maxwin = u32::from(seg.win).max(1);
                first.maxend = seg.end;
                read_options(seg.opts, first);
            }
            Next::To(_) if cfg.tcp_loose => {
                // Mid-stream: its history is lost, use what this packet tells. Window scaling
                // is unknown, so both directions are checked liberally.
                first.end = seg.end;
                first.maxwin = u32::from(seg.win).max(1);
                first.maxend = seg.end.wrapping_add(first.maxwin);
                s.seen[0].flags = SACK_PERM | BE_LIBERAL;
                s.seen[1].flags = SACK_PERM | BE_LIBERAL;
            }
            _ => return Err(Invalid::TcpNew),
        }
        Ok(s)
    }

    fn packet(s: &mut State, ctx: &mut Ctx<'_>, pkt: &Packet, buf: &[u8]) -> Verdict {
        let L4::Tcp(t) = pkt.l4 else { return Verdict::Invalid(Invalid::Truncated) };
        let seg = Seg::of(pkt, buf, &t);
        let d = ctx.dir;
        let index = Index::of(t.flags);
        let mut old = s.state;
        let mut skip_window = false;

        let mut new = match next(d, index, old) {
            Next::Invalid => return Verdict::Invalid(Invalid::TcpState),
            Next::To(TcpState::SynSent) if old >= TcpState::TimeWait => {
                // A SYN re-opening a closed connection (RFC 1122 allows it from TIME_WAIT), or a
                // client aborting a connection we and the server still think alive. If the close
                // was seen (a FIN, or the last packet this way an RST), drop the old entry and
                // track the SYN as a new connection.
                let closing = (s.seen[0].flags | s.seen[1].flags) & CLOSE_INIT != 0;
                if closing || (s.last_dir == d && s.last_index == Index::Rst) {
                    return Verdict::Repeat;
                }
                if !ignore(s, d, index, &seg, old) {
                    return Verdict::Keep;
                }
                old = TcpState::SynSent;
                TcpState::SynRecv
            }
            Next::Ignore => {
                if !ignore(s, d, index, &seg, old) {
                    return Verdict::Keep;
                }
                old = TcpState::SynSent;
                TcpState::SynRecv
            }
            Next::To(TcpState::TimeWait)
                if old == TcpState::LastAck
                    && index == Index::Ack
                    && s.last_dir != d
                    && s.last_index == Index::Syn
                    && s.last_flags & EXP_CHALLENGE_ACK != 0 =>
            {
                // An RFC 5961 challenge ACK answering a spurious SYN, not the ACK of the last
                // FIN: let it pass, keep the state.
                s.last_flags &= !EXP_CHALLENGE_ACK;
                return Verdict::Keep;
            }
            Next::To(TcpState::SynSent2) => {
                // The table alone cannot follow a simultaneous open.
                s.last_flags |= SIMULTANEOUS_OPEN;
                TcpState::SynSent2
            }
            Next::To(TcpState::SynRecv)
                if d == Dir::Reply && index == Index::Ack && s.last_flags & SIMULTANEOUS_OPEN != 0 =>
            {
                TcpState::Established
            }
            Next::To(st) => st,
        };

        if new == TcpState::Close && index == Index::Rst {
            if matches!(
                s.state,
                TcpState::FinWait | TcpState::LastAck | TcpState::TimeWait | TcpState::Close | TcpState::CloseWait
            ) {
                // Closing already: the tuple may have been reused and what we know is stale.
                skip_window = true;
            } else {
                let peer = s.seen[d.flip() as usize];
                let established = s.state == TcpState::Established && ctx.status.contains(Status::ASSURED);
                let mut check_window = false;
                // td_maxack may be stale if a SYN was let through last.
                if peer.flags & MAXACK_SET != 0 && s.last_index != Index::Syn {
                    if seg.seq == 0 && !established {
                        // Most likely answering a SYN we let pass.
                        check_window = true;
                    } else if before(seg.seq, peer.maxack) && !ctx.cfg.tcp_ignore_invalid_rst {
                        return Verdict::Invalid(Invalid::TcpRst);
                    } else if !established || seg.seq == peer.maxack {
                        check_window = true;
                    } else if s.last_index == Index::Ack && s.last_dir == d && seg.seq == s.last_end {
                        // The RST closing a train of data from the same side.
                        check_window = true;
                    } else {
                        // Not the exact sequence number: keep the state, so that the
                        // challenge ACK the receiver sends (RFC 5961) can be followed.
                        new = old;
                    }
                }
                if !check_window {
                    let seen_reply = ctx.status.contains(Status::SEEN_REPLY);
                    let assured = ctx.status.contains(Status::ASSURED);
                    if ((seen_reply && s.last_index == Index::Syn) || (!assured && s.last_index == Index::Ack))
                        && seg.ack == s.last_end
                    {
                        // An RST answering a SYN or ACK we let through (ignored): it may
                        // acknowledge what we never accounted, so skip the window check.
                        skip_window = true;
                    } else if old == TcpState::SynSent
                        && s.last_index == Index::Ack
                        && s.last_dir == Dir::Reply
                        && seg.seq == s.last_ack
                    {
                        // An RST answering a challenge ACK we let through.
                        skip_window = true;
                    }
                }
            }
        }

        if !skip_window {
            match in_window(s, d, index, &seg, ctx.cfg) {
                Action::Accept => {}
                Action::Ignore => return Verdict::Keep,
                Action::Invalid => {
                    handle_invalid(s, ctx, d, index);
                    return Verdict::Invalid(Invalid::TcpWindow);
                }
            }
        }

        // In window from here on: commit.
        s.last_index = index;
        s.last_dir = d;
        s.state = new;
        if old != new && new == TcpState::FinWait {
            s.seen[d as usize].flags |= CLOSE_INIT;
        }

        // Read per packet: a policy or default changed meanwhile applies now.
        let t_of = |slot: usize| ctx.timeouts.get(slot);
        let t_new = t_of(new.slot());
        let t_retrans = t_of(SLOT_RETRANS);
        let t_unack = t_of(SLOT_UNACK);
        let unacked = (s.seen[0].flags | s.seen[1].flags) & DATA_UNACKNOWLEDGED != 0;
        let mut timeout = if s.retrans >= ctx.cfg.tcp_max_retrans && t_new > t_retrans {
            t_retrans
        } else if index == Index::Rst {
            t_of(TcpState::Close.slot())
        } else if unacked && t_new > t_unack {
            t_unack
        } else if s.last_win == 0 && t_new > t_retrans {
            t_retrans
        } else {
            t_new
        };

        if !ctx.status.contains(Status::SEEN_REPLY) {
            if seg.has(tcp_flags::RST) {
                // The only answer is an RST: no connection to keep (a common case).
                return Verdict::Kill;
            }
            if index == Index::Syn && old == TcpState::SynSent {
                // A retransmitted SYN does not renew the timeout, or a client (or NAT) reusing
                // the port could keep the entry alive forever.
                return Verdict::Keep;
            }
            if new == TcpState::Established && timeout > t_unack {
                // Picked up mid-stream and no reply yet: no five-day timeout.
                timeout = t_unack;
            }
        } else if !ctx.status.contains(Status::ASSURED)
            && matches!(old, TcpState::SynRecv | TcpState::Established)
            && new == TcpState::Established
        {
            // The handshake's ACK, or a picked-up connection answered.
            ctx.status.insert(Status::ASSURED);
        }
        Verdict::Refresh(timeout)
    }

    fn state_name(s: &State) -> Option<&'static str> {
        Some(s.state.name())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proto::build::{opt, PacketBuilder};
    use proto::packet::parse_ip;
    use proto::packet::tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};

    use super::*;
    use crate::clock::Timestamp;
    use crate::conntrack::{Conntrack, CtState, Proto, ProtoState, Stats, Tracked};

    const NS: u64 = 1_000_000_000;
    /// Client and server initial sequence numbers.
    const CA: u32 = 1000;
    const CB: u32 = 5000;
    const CPORT: u16 = 40000;
    const SPORT: u16 = 80;

    /// What a test sees of the one connection in the table.
    #[derive(Debug)]
    struct Snap {
        state: TcpState,
        assured: bool,
        seen_reply: bool,
        /// Exact seconds until expiry.
        left: u64,
        tcp: State,
        line: String,
    }

    /// A client `a` and a server `b` talking through a conntrack table, on a virtual clock.
    struct Net {
        ct: Conntrack,
        stats: Stats,
        now: Timestamp,
        a: PacketBuilder,
        b: PacketBuilder,
    }

    impl Net {
        fn v4() -> Net {
            Net::with(Config::default(), false)
        }

        fn v6() -> Net {
            Net::with(Config::default(), true)
        }

        fn with(cfg: Config, v6: bool) -> Net {
            let a = if v6 {
                PacketBuilder::v6("2001:2::1".parse::<Ipv6Addr>().unwrap(), "2001:2::2".parse::<Ipv6Addr>().unwrap())
            } else {
                PacketBuilder::v4("198.18.0.1".parse::<Ipv4Addr>().unwrap(), "198.19.0.2".parse::<Ipv4Addr>().unwrap())
            };
            let b = a.reverse();
            Net { ct: Conntrack::new(1024, cfg), stats: Stats::default(), now: Timestamp::from_secs(1000), a, b }
        }

        fn at(&mut self, secs: u64) {
            self.now = Timestamp::from_secs(1000 + secs);
        }

        fn send(&mut self, buf: &[u8]) -> Tracked {
            let pkt = parse_ip(buf, 0).expect("test packet parses");
            let mut t = self.ct.track(self.now, buf, &pkt, &mut self.stats);
            self.ct.confirm(&mut t, &mut self.stats).expect("room in the table");
            t
        }

        /// A segment from the client.
        #[allow(clippy::too_many_arguments)]
        fn a(&mut self, seq: u32, ack: u32, flags: u8, win: u16, opts: &[u8], data: &[u8]) -> Tracked {
            let p = self.a.tcp(CPORT, SPORT, seq, ack, flags, win, opts, data);
            self.send(&p)
        }

        /// A segment from the server.
        fn b(&mut self, seq: u32, ack: u32, flags: u8, win: u16, opts: &[u8], data: &[u8]) -> Tracked {
            let p = self.b.tcp(SPORT, CPORT, seq, ack, flags, win, opts, data);
            self.send(&p)
        }

        fn conns(&self) -> Vec<Snap> {
            let mut v = Vec::new();
            self.ct.for_each(self.now, |c| {
                let ProtoState::Tcp(s) = &c.proto else { panic!("not a TCP connection") };
                v.push(Snap {
                    state: s.state(),
                    assured: c.status.contains(Status::ASSURED),
                    seen_reply: c.status.contains(Status::SEEN_REPLY),
                    left: c.expires.since(self.now) / NS,
                    tcp: s.clone(),
                    line: crate::display::conntrack_line(c, self.now),
                });
            });
            v
        }

        fn conn(&self) -> Snap {
            let mut v = self.conns();
            assert_eq!(v.len(), 1, "exactly one connection expected: {v:?}");
            v.remove(0)
        }

        /// SYN, SYN/ACK, ACK with window scaling (7 both ways) and SACK permitted.
        fn handshake(&mut self) {
            let t = self.a(CA, 0, SYN, 64240, &[opt::mss(1460), opt::sack_perm(), opt::wscale(7)].concat(), b"");
            assert_eq!(t.state, CtState::New);
            let t =
                self.b(CB, CA + 1, SYN | ACK, 65160, &[opt::mss(1460), opt::sack_perm(), opt::wscale(7)].concat(), b"");
            assert_eq!(t.state, CtState::Established);
            assert_eq!(t.invalid, None);
            let t = self.a(CA + 1, CB + 1, ACK, 502, &[], b"");
            assert_eq!(t.invalid, None);
        }

        /// Handshake, then 100 bytes from the client and 50 from the server, all acknowledged.
        fn established(&mut self) {
            self.handshake();
            assert_eq!(self.a(CA + 1, CB + 1, ACK | PSH, 502, &[], &[7; 100]).invalid, None);
            assert_eq!(self.b(CB + 1, CA + 101, ACK | PSH, 509, &[], &[8; 50]).invalid, None);
            assert_eq!(self.a(CA + 101, CB + 51, ACK, 502, &[], b"").invalid, None);
            let c = self.conn();
            assert_eq!((c.state, c.assured, c.left), (TcpState::Established, true, 432000));
        }
    }

    fn invalid(t: &Tracked) -> Option<Invalid> {
        assert_eq!(t.invalid.is_some(), t.state == CtState::Invalid);
        t.invalid
    }

    #[test]
    fn handshake_establishes_and_assures_after_final_ack() {
        let mut n = Net::v4();
        n.a(CA, 0, SYN, 64240, &[opt::mss(1460), opt::sack_perm(), opt::wscale(7)].concat(), b"");
        let c = n.conn();
        assert_eq!((c.state, c.assured, c.seen_reply, c.left), (TcpState::SynSent, false, false, 120));
        assert!(c
            .line
            .starts_with("tcp      6 119 SYN_SENT src=198.18.0.1 dst=198.19.0.2 sport=40000 dport=80 [UNREPLIED]"));
        assert_eq!(c.tcp.side(Dir::Original).scale(), 7);
        assert_eq!(c.tcp.side(Dir::Original).flags() & (WINDOW_SCALE | SACK_PERM), WINDOW_SCALE | SACK_PERM);

        n.at(1);
        n.b(CB, CA + 1, SYN | ACK, 65160, &[opt::mss(1460), opt::sack_perm(), opt::wscale(7)].concat(), b"");
        let c = n.conn();
        assert_eq!((c.state, c.assured, c.seen_reply, c.left), (TcpState::SynRecv, false, true, 60));

        n.at(2);
        let t = n.a(CA + 1, CB + 1, ACK, 502, &[], b"");
        assert_eq!((t.state, t.dir), (CtState::Established, Dir::Original));
        let c = n.conn();
        assert_eq!((c.state, c.assured, c.left), (TcpState::Established, true, 432000));
        assert_eq!(state_code(&c.tcp), 3);
        assert_eq!(timeout_slot(&c.tcp), 2);
        assert!(c.line.contains(" 431999 ESTABLISHED "), "{}", c.line);
        assert!(c.line.ends_with("[ASSURED] mark=0 use=1"), "{}", c.line);
    }

    #[test]
    fn data_both_ways_with_unacknowledged_timeout() {
        let mut n = Net::v4();
        n.handshake();
        // Data in flight: the UNACK timeout (300 s) caps ESTABLISHED.
        assert_eq!(n.a(CA + 1, CB + 1, ACK | PSH, 502, &[], &[1; 100]).invalid, None);
        assert_eq!(n.conn().left, 300);
        assert_ne!(n.conn().tcp.side(Dir::Original).flags() & DATA_UNACKNOWLEDGED, 0);
        // The server acknowledges it and sends its own data: still unacknowledged data.
        assert_eq!(n.b(CB + 1, CA + 101, ACK | PSH, 509, &[], &[2; 50]).invalid, None);
        let c = n.conn();
        assert_eq!(c.tcp.side(Dir::Original).flags() & DATA_UNACKNOWLEDGED, 0);
        assert_ne!(c.tcp.side(Dir::Reply).flags() & DATA_UNACKNOWLEDGED, 0);
        assert_eq!(c.left, 300);
        // All acknowledged: back to five days.
        assert_eq!(n.a(CA + 101, CB + 51, ACK, 502, &[], b"").invalid, None);
        assert_eq!(n.conn().left, 432000);
    }

    #[test]
    fn fin_close_client_first_reaches_time_wait() {
        let mut n = Net::v4();
        n.established();
        n.a(CA + 101, CB + 51, FIN | ACK, 502, &[], b"");
        let c = n.conn();
        assert_eq!((c.state, c.left), (TcpState::FinWait, 120));
        assert_ne!(c.tcp.side(Dir::Original).flags() & CLOSE_INIT, 0);
        n.b(CB + 51, CA + 102, ACK, 509, &[], b"");
        assert_eq!((n.conn().state, n.conn().left), (TcpState::CloseWait, 60));
        n.b(CB + 51, CA + 102, FIN | ACK, 509, &[], b"");
        assert_eq!((n.conn().state, n.conn().left), (TcpState::LastAck, 30));
        n.a(CA + 102, CB + 52, ACK, 502, &[], b"");
        let c = n.conn();
        assert_eq!((c.state, c.left, c.assured), (TcpState::TimeWait, 120, true));
        assert!(c.line.contains(" TIME_WAIT "), "{}", c.line);
    }

    #[test]
    fn fin_close_server_first_reaches_time_wait() {
        let mut n = Net::v4();
        n.established();
        n.b(CB + 51, CA + 101, FIN | ACK, 509, &[], b"");
        let c = n.conn();
        assert_eq!(c.state, TcpState::FinWait);
        assert_ne!(c.tcp.side(Dir::Reply).flags() & CLOSE_INIT, 0);
        n.a(CA + 101, CB + 52, ACK, 502, &[], b"");
        assert_eq!(n.conn().state, TcpState::CloseWait);
        n.a(CA + 101, CB + 52, FIN | ACK, 502, &[], b"");
        assert_eq!(n.conn().state, TcpState::LastAck);
        n.b(CB + 52, CA + 102, ACK, 509, &[], b"");
        assert_eq!((n.conn().state, n.conn().left), (TcpState::TimeWait, 120));
    }

    #[test]
    fn simultaneous_close() {
        let mut n = Net::v4();
        n.established();
        n.a(CA + 101, CB + 51, FIN | ACK, 502, &[], b"");
        n.b(CB + 51, CA + 101, FIN | ACK, 509, &[], b"");
        assert_eq!(n.conn().state, TcpState::LastAck);
        n.a(CA + 102, CB + 52, ACK, 502, &[], b"");
        assert_eq!(n.conn().state, TcpState::TimeWait);
    }

    #[test]
    fn exact_rst_closes() {
        let mut n = Net::v4();
        n.established();
        // The server acknowledged up to CA + 101: an RST at exactly that sequence closes.
        assert_eq!(invalid(&n.a(CA + 101, 0, RST, 0, &[], b"")), None);
        let c = n.conn();
        assert_eq!((c.state, c.left), (TcpState::Close, 10));
    }

    #[test]
    fn inexact_in_window_rst_keeps_state_with_close_timeout() {
        let mut n = Net::v4();
        n.established();
        assert_eq!(invalid(&n.a(CA + 111, 0, RST, 0, &[], b"")), None);
        let c = n.conn();
        // Kept ESTABLISHED for a possible challenge ACK, but the CLOSE timeout applies.
        assert_eq!((c.state, c.left), (TcpState::Established, 10));
    }

    #[test]
    fn rst_below_maxack_is_invalid_unless_ignored() {
        let mut n = Net::v4();
        n.established();
        assert_eq!(invalid(&n.a(CA + 50, 0, RST, 0, &[], b"")), Some(Invalid::TcpRst));
        assert_eq!((n.conn().state, n.conn().left), (TcpState::Established, 432000));
        assert_eq!(n.stats.invalid_by[Invalid::TcpRst as usize], 1);

        let mut n = Net::with(Config { tcp_ignore_invalid_rst: true, ..Config::default() }, false);
        n.established();
        assert_eq!(invalid(&n.a(CA + 50, 0, RST, 0, &[], b"")), None);
        assert_eq!((n.conn().state, n.conn().left), (TcpState::Established, 10));
    }

    #[test]
    fn rst_train_after_data_closes() {
        let mut n = Net::v4();
        n.established();
        // 19 bytes from the server, then its RST right after them.
        n.b(CB + 51, CA + 101, ACK | PSH, 509, &[], &[3; 19]);
        assert_eq!(invalid(&n.b(CB + 70, CA + 101, RST | ACK, 0, &[], b"")), None);
        assert_eq!(n.conn().state, TcpState::Close);
    }

    #[test]
    fn out_of_window_rst_is_invalid_and_out_of_window_fins_shorten_timeout() {
        let mut n = Net::v4();
        n.established();
        assert_eq!(invalid(&n.a(CA + 101 + 10_000_000, 0, RST, 0, &[], b"")), Some(Invalid::TcpWindow));
        assert_eq!((n.conn().state, n.conn().left), (TcpState::Established, 432000));
        // The other side also sends an out-of-window FIN: the connection is probably dead.
        assert_eq!(invalid(&n.b(CB + 51 + 10_000_000, CA + 101, FIN | ACK, 509, &[], b"")), Some(Invalid::TcpWindow));
        let c = n.conn();
        assert_eq!((c.state, c.left), (TcpState::Established, 300));
    }

    #[test]
    fn rst_before_any_reply_kills() {
        // The server answers the SYN with RST|ACK (seq 0).
        let mut n = Net::v4();
        n.a(CA, 0, SYN, 64240, &[], b"");
        let t = n.b(0, CA + 1, RST | ACK, 0, &[], b"");
        assert_eq!(t.invalid, None);
        assert!(n.conns().is_empty());
        assert!(n.ct.is_empty());

        // The client aborts its own SYN.
        let mut n = Net::v4();
        n.a(CA, 0, SYN, 64240, &[], b"");
        assert_eq!(n.a(CA + 1, 0, RST, 0, &[], b"").invalid, None);
        assert!(n.ct.is_empty());
    }

    #[test]
    fn simultaneous_open() {
        let mut n = Net::v4();
        n.a(CA, 0, SYN, 64240, &[], b"");
        n.b(CB, 0, SYN, 65160, &[], b"");
        let c = n.conn();
        assert_eq!((c.state, c.left), (TcpState::SynSent2, 120));
        assert!(c.line.contains(" SYN_SENT2 "));
        n.a(CA, CB + 1, SYN | ACK, 64240, &[], b"");
        assert_eq!((n.conn().state, n.conn().left), (TcpState::SynRecv, 60));
        // The server's own SYN/ACK is a retransmission to us: ignored.
        assert_eq!(n.b(CB, CA + 1, SYN | ACK, 65160, &[], b"").invalid, None);
        assert_eq!(n.conn().state, TcpState::SynRecv);
        // Its ACK completes the simultaneous open.
        assert_eq!(n.b(CB + 1, CA + 1, ACK, 65160, &[], b"").invalid, None);
        let c = n.conn();
        assert_eq!((c.state, c.assured, c.left), (TcpState::Established, true, 432000));
    }

    #[test]
    fn syn_retransmission_does_not_refresh() {
        let mut n = Net::v4();
        n.a(CA, 0, SYN, 64240, &[], b"");
        n.at(30);
        let t = n.a(CA, 0, SYN, 64240, &[], b"");
        assert_eq!((t.state, t.invalid), (CtState::New, None));
        let c = n.conn();
        assert_eq!((c.state, c.left), (TcpState::SynSent, 90));
        // A SYN/ACK still answers it.
        n.b(CB, CA + 1, SYN | ACK, 65160, &[], b"");
        assert_eq!((n.conn().state, n.conn().left), (TcpState::SynRecv, 60));
    }

    #[test]
    fn invalid_packets_in_syn_sent() {
        let mut n = Net::v4();
        n.a(CA, 0, SYN, 64240, &[], b"");
        // No ACK or FIN from the client before a SYN/ACK.
        assert_eq!(invalid(&n.a(CA + 1, 0, ACK, 64240, &[], b"")), Some(Invalid::TcpState));
        assert_eq!(invalid(&n.a(CA + 1, 1, FIN | ACK, 64240, &[], b"")), Some(Invalid::TcpState));
        // A SYN/ACK acknowledging data never sent.
        assert_eq!(invalid(&n.b(CB, CA + 500, SYN | ACK, 65160, &[], b"")), Some(Invalid::TcpWindow));
        assert_eq!(n.conn().state, TcpState::SynSent);
    }

    #[test]
    fn out_of_window_data_is_invalid() {
        let mut n = Net::v4();
        n.established();
        let t = n.a(CA + 101 + 10_000_000, CB + 51, ACK | PSH, 502, &[], &[9; 10]);
        assert_eq!(invalid(&t), Some(Invalid::TcpWindow));
        // Acknowledging data the server never sent.
        assert_eq!(invalid(&n.a(CA + 101, CB + 5000, ACK, 502, &[], b"")), Some(Invalid::TcpWindow));
        let c = n.conn();
        assert_eq!((c.state, c.left), (TcpState::Established, 432000));
        // An old retransmission far below the window passes unaccounted.
        n.at(5);
        let t = n.a(CA.wrapping_sub(2_000_000), CB + 51, ACK, 502, &[], &[9; 10]);
        assert_eq!(t.invalid, None);
        assert_eq!(n.conn().left, 432000 - 5);
    }

    #[test]
    fn slightly_over_window_passes_and_its_ack_is_valid() {
        let mut n = Net::v4();
        n.established();
        // The server granted up to CA + 101 + 509 * 128; the client sends 102 bytes past it.
        n.at(5);
        let over = CA + 101 + 509 * 128 + 1;
        let t = n.a(over, CB + 51, ACK | PSH, 502, &[], &[6; 100]);
        assert_eq!(t.invalid, None);
        let c = n.conn();
        // Let through unaccounted: no refresh.
        assert_eq!((c.state, c.left), (TcpState::Established, 432000 - 5));
        assert_ne!(c.tcp.side(Dir::Original).flags() & DATA_UNACKNOWLEDGED, 0);
        // The server acknowledging it is not "ACK over upper bound".
        assert_eq!(n.b(CB + 51, over + 100, ACK, 509, &[], b"").invalid, None);
        assert_eq!(n.conn().left, 432000);
    }

    #[test]
    fn challenge_ack_in_syn_sent_then_rst_and_new_syn() {
        let mut n = Net::v4();
        n.a(CA, 0, SYN, 64240, &[], b"");
        // The server still has an old connection on these ports: it answers with a challenge ACK
        // (RFC 5961) carrying the old sequence numbers. Ignored, but remembered.
        let old_seq = 777_777;
        assert_eq!(n.b(CB, old_seq, ACK, 509, &[], b"").invalid, None);
        let c = n.conn();
        assert_eq!((c.state, c.seen_reply), (TcpState::SynSent, true));
        // The client resets the old connection with the acknowledged sequence number.
        assert_eq!(n.a(old_seq, 0, RST, 0, &[], b"").invalid, None);
        assert_eq!((n.conn().state, n.conn().left), (TcpState::Close, 10));
        // And its retransmitted SYN starts over.
        let t = n.a(CA, 0, SYN, 64240, &[], b"");
        assert_eq!((t.state, t.invalid), (CtState::New, None));
        let c = n.conn();
        assert_eq!((c.state, c.seen_reply), (TcpState::SynSent, false));
    }

    #[test]
    fn be_liberal_accepts_out_of_window() {
        let mut n = Net::with(Config { tcp_be_liberal: true, ..Config::default() }, false);
        n.established();
        let t = n.a(CA + 101 + 10_000_000, CB + 51, ACK | PSH, 502, &[], &[9; 10]);
        assert_eq!(t.invalid, None);
        assert_eq!(n.conn().state, TcpState::Established);
    }

    /// Handshake where the server's SYN/ACK offers a 1000-byte window, then the server grants
    /// 1000 << scale; the client sends 100 bytes 50000 bytes ahead.
    fn far_segment(scale: bool) -> (Option<Invalid>, Snap) {
        let mut n = Net::v4();
        let ws = |s| if scale { opt::wscale(s) } else { Vec::new() };
        n.a(CA, 0, SYN, 64240, &ws(7), b"");
        n.b(CB, CA + 1, SYN | ACK, 1000, &ws(7), b"");
        n.a(CA + 1, CB + 1, ACK, 502, &[], b"");
        assert_eq!(n.b(CB + 1, CA + 1, ACK, 1000, &[], b"").invalid, None);
        let t = n.a(CA + 1 + 50_000, CB + 1, ACK | PSH, 502, &[], &[5; 100]);
        (invalid(&t), n.conn())
    }

    #[test]
    fn window_scaling_widens_the_window() {
        let (r, c) = far_segment(true);
        assert_eq!(r, None);
        assert_eq!((c.state, c.left), (TcpState::Established, 300));
        assert_eq!((c.tcp.side(Dir::Original).scale(), c.tcp.side(Dir::Reply).scale()), (7, 7));
        let (r, c) = far_segment(false);
        assert_eq!(r, Some(Invalid::TcpWindow));
        assert_eq!((c.tcp.side(Dir::Original).scale(), c.tcp.side(Dir::Reply).scale()), (0, 0));
    }

    #[test]
    fn window_scale_needs_both_sides() {
        let mut n = Net::v4();
        n.a(CA, 0, SYN, 64240, &opt::wscale(7), b"");
        n.b(CB, CA + 1, SYN | ACK, 1000, &[], b"");
        let c = n.conn();
        assert_eq!((c.tcp.side(Dir::Original).scale(), c.tcp.side(Dir::Reply).scale()), (0, 0));
        // Scale shifts above 14 are clamped.
        let mut n = Net::v4();
        n.a(CA, 0, SYN, 64240, &opt::wscale(20), b"");
        assert_eq!(n.conn().tcp.side(Dir::Original).scale(), 14);
    }

    #[test]
    fn sack_acknowledges_beyond_ack() {
        let mut n = Net::v4();
        n.established();
        // The client sends 2 segments; the server SACKs the second before acking the first.
        n.a(CA + 101, CB + 51, ACK | PSH, 502, &[], &[1; 100]);
        n.a(CA + 201, CB + 51, ACK | PSH, 502, &[], &[1; 100]);
        let t = n.b(CB + 51, CA + 101, ACK, 509, &opt::sack(&[(CA + 201, CA + 301)]), b"");
        assert_eq!(t.invalid, None);
        // A SACK block beyond what was sent is over the upper bound.
        let t = n.b(CB + 51, CA + 101, ACK, 509, &opt::sack(&[(CA + 201, CA + 901)]), b"");
        assert_eq!(invalid(&t), Some(Invalid::TcpWindow));
    }

    #[test]
    fn midstream_pickup() {
        let mut n = Net::v4();
        let t = n.a(7000, 9000, ACK | PSH, 1000, &[], &[1; 100]);
        assert_eq!((t.state, t.invalid), (CtState::New, None));
        let c = n.conn();
        assert_eq!((c.state, c.assured, c.seen_reply, c.left), (TcpState::Established, false, false, 300));
        let f = c.tcp.side(Dir::Original).flags();
        assert_eq!(f & (BE_LIBERAL | SACK_PERM), BE_LIBERAL | SACK_PERM);
        assert_eq!(c.tcp.side(Dir::Reply).flags() & (BE_LIBERAL | SACK_PERM), BE_LIBERAL | SACK_PERM);
        // The first reply: still no reply seen while it is tracked, so not assured, capped.
        n.b(9000, 7100, ACK, 2000, &[], b"");
        let c = n.conn();
        assert_eq!((c.state, c.assured, c.seen_reply, c.left), (TcpState::Established, false, true, 300));
        // The next packet assures it.
        n.a(7100, 9000, ACK, 1000, &[], b"");
        let c = n.conn();
        assert_eq!((c.state, c.assured, c.left), (TcpState::Established, true, 432000));
    }

    #[test]
    fn pickup_refused_without_loose_and_for_non_starting_flags() {
        let mut n = Net::with(Config { tcp_loose: false, ..Config::default() }, false);
        assert_eq!(invalid(&n.a(7000, 9000, ACK, 1000, &[], b"")), Some(Invalid::TcpNew));
        assert!(n.ct.is_empty());
        let mut n = Net::v4();
        assert_eq!(invalid(&n.a(7000, 9000, SYN | ACK, 1000, &[], b"")), Some(Invalid::TcpNew));
        assert_eq!(invalid(&n.a(7000, 9000, FIN | ACK, 1000, &[], b"")), Some(Invalid::TcpNew));
        assert_eq!(invalid(&n.a(7000, 9000, RST, 1000, &[], b"")), Some(Invalid::TcpNew));
        assert!(n.ct.is_empty());
    }

    #[test]
    fn syn_in_time_wait_reopens() {
        let mut n = Net::v4();
        n.established();
        n.a(CA + 101, CB + 51, FIN | ACK, 502, &[], b"");
        n.b(CB + 51, CA + 102, FIN | ACK, 509, &[], b"");
        n.a(CA + 102, CB + 52, ACK, 502, &[], b"");
        assert_eq!(n.conn().state, TcpState::TimeWait);
        n.at(10);
        let t = n.a(CA + 100_000, 0, SYN, 64240, &[], b"");
        assert_eq!((t.state, t.invalid), (CtState::New, None));
        assert_eq!(n.stats.search_restart, 1);
        let c = n.conn();
        assert_eq!((c.state, c.assured, c.seen_reply, c.left), (TcpState::SynSent, false, false, 120));
        // The new connection completes.
        n.b(CB + 100_000, CA + 100_001, SYN | ACK, 65160, &[], b"");
        n.a(CA + 100_001, CB + 100_001, ACK, 64240, &[], b"");
        assert_eq!((n.conn().state, n.conn().assured), (TcpState::Established, true));
    }

    #[test]
    fn syn_after_own_rst_reopens() {
        let mut n = Net::v4();
        n.established();
        n.a(CA + 101, 0, RST, 0, &[], b"");
        assert_eq!(n.conn().state, TcpState::Close);
        let t = n.a(CA + 100_000, 0, SYN, 64240, &[], b"");
        assert_eq!((t.state, t.invalid), (CtState::New, None));
        assert_eq!(n.conn().state, TcpState::SynSent);
    }

    #[test]
    fn ignored_syn_then_synack_resynchronises() {
        let mut n = Net::v4();
        n.established();
        // The client restarts with a new SYN we cannot place: let it pass unchanged.
        n.at(5);
        let t = n.a(CA + 77_777, 0, SYN, 64240, &opt::wscale(6), b"");
        assert_eq!((t.state, t.invalid), (CtState::Established, None));
        let c = n.conn();
        assert_eq!((c.state, c.left), (TcpState::Established, 432000 - 5));
        // The server answers it: both ends agree, we follow.
        let t = n.b(CB + 99_999, CA + 77_778, SYN | ACK, 65160, &opt::wscale(6), b"");
        assert_eq!(t.invalid, None);
        let c = n.conn();
        assert_eq!((c.state, c.left), (TcpState::SynRecv, 60));
        assert_eq!((c.tcp.side(Dir::Original).scale(), c.tcp.side(Dir::Reply).scale()), (6, 6));
        n.a(CA + 77_778, CB + 100_000, ACK, 1000, &[], b"");
        assert_eq!(n.conn().state, TcpState::Established);
    }

    #[test]
    fn challenge_ack_in_last_ack_keeps_state() {
        let mut n = Net::v4();
        n.established();
        n.a(CA + 101, CB + 51, FIN | ACK, 502, &[], b"");
        n.b(CB + 51, CA + 102, ACK, 509, &[], b"");
        n.b(CB + 51, CA + 102, FIN | ACK, 509, &[], b"");
        assert_eq!(n.conn().state, TcpState::LastAck);
        // A new SYN on the same ports: ignored, and the server's challenge ACK is no last ACK.
        assert_eq!(n.a(CA + 50_000, 0, SYN, 64240, &[], b"").invalid, None);
        assert_eq!(n.b(CB + 52, CA + 102, ACK, 509, &[], b"").invalid, None);
        assert_eq!(n.conn().state, TcpState::LastAck);
        // The real last ACK still closes.
        n.a(CA + 102, CB + 52, ACK, 502, &[], b"");
        assert_eq!(n.conn().state, TcpState::TimeWait);
    }

    #[test]
    fn retransmissions_reach_retrans_timeout() {
        let mut n = Net::v4();
        n.established();
        // Tell RETRANS (200) from UNACK (300); values are read per packet.
        n.ct.defaults.of(Proto::Tcp).set(SLOT_RETRANS, 200);
        for (i, want) in [300, 300, 300, 200, 200].into_iter().enumerate() {
            n.at(i as u64);
            assert_eq!(n.a(CA + 101, CB + 51, ACK | PSH, 502, &[], &[4; 100]).invalid, None);
            assert_eq!(n.conn().left, want, "transmission {i}");
        }
        // The server's ACK ends the series.
        n.b(CB + 51, CA + 201, ACK, 509, &[], b"");
        assert_eq!(n.conn().left, 432000);
    }

    #[test]
    fn max_retrans_is_configurable() {
        let mut n = Net::with(Config { tcp_max_retrans: 1, ..Config::default() }, false);
        n.established();
        n.ct.defaults.of(Proto::Tcp).set(SLOT_RETRANS, 200);
        n.a(CA + 101, CB + 51, ACK | PSH, 502, &[], &[4; 100]);
        assert_eq!(n.conn().left, 300);
        n.a(CA + 101, CB + 51, ACK | PSH, 502, &[], &[4; 100]);
        assert_eq!(n.conn().left, 200);
    }

    #[test]
    fn zero_window_uses_retrans_timeout() {
        let mut n = Net::v4();
        n.established();
        n.ct.defaults.of(Proto::Tcp).set(SLOT_RETRANS, 200);
        n.a(CA + 101, CB + 51, ACK, 0, &[], b"");
        assert_eq!(n.conn().left, 200);
        n.a(CA + 101, CB + 51, ACK, 502, &[], b"");
        assert_eq!(n.conn().left, 432000);
    }

    #[test]
    fn timeout_changes_apply_at_next_packet() {
        let mut n = Net::v4();
        n.established();
        n.ct.defaults.of(Proto::Tcp).set(TcpState::Established.slot(), 1000);
        assert_eq!(n.conn().left, 432000);
        n.b(CB + 51, CA + 101, ACK, 509, &[], b"");
        assert_eq!(n.conn().left, 1000);
    }

    #[test]
    fn ipv6_handshake_and_close() {
        let mut n = Net::v6();
        n.established();
        let c = n.conn();
        assert!(c.line.contains("src=2001:2::1 dst=2001:2::2 sport=40000 dport=80"), "{}", c.line);
        n.a(CA + 101, CB + 51, FIN | ACK, 502, &[], b"");
        n.b(CB + 51, CA + 102, FIN | ACK, 509, &[], b"");
        n.a(CA + 102, CB + 52, ACK, 502, &[], b"");
        assert_eq!(n.conn().state, TcpState::TimeWait);
    }

    #[test]
    fn bad_checksum_is_invalid() {
        for v6 in [false, true] {
            let mut n = Net::with(Config::default(), v6);
            let mut p = n.a.tcp(CPORT, SPORT, CA, 0, SYN, 64240, &[], b"hello");
            let last = p.len() - 1;
            p[last] ^= 0x55;
            assert_eq!(invalid(&n.send(&p)), Some(Invalid::Checksum));
            assert!(n.ct.is_empty());
            // Not checked when checksum verification is off.
            let mut n = Net::with(Config { checksum: false, ..Config::default() }, v6);
            assert_eq!(n.send(&p).invalid, None);
        }
    }

    #[test]
    fn bad_flag_combinations_are_invalid() {
        let mut n = Net::v4();
        for f in [0, FIN, SYN | FIN, SYN | RST, SYN | FIN | ACK, RST | FIN, FIN | PSH | URG, URG, PSH] {
            assert_eq!(invalid(&n.a(CA, 0, f, 64240, &[], b"")), Some(Invalid::TcpFlags), "flags {f:#x}");
        }
        assert!(n.ct.is_empty());
        // ECE, CWR and PSH do not matter.
        assert_eq!(n.a(CA, 0, SYN | ECE | CWR, 64240, &[], b"").invalid, None);
        assert!(valid_flags(ACK | PSH | URG));
        assert!(valid_flags(FIN | ACK | URG | PSH));
    }

    #[test]
    fn truncated_header_is_invalid() {
        let n = Net::v4();
        let p = n.a.tcp(CPORT, SPORT, CA, 0, SYN, 64240, &[], b"");
        let mut pkt = parse_ip(&p, 0).unwrap();
        let L4::Tcp(mut t) = pkt.l4 else { unreachable!() };
        t.header_len = 24;
        pkt.l4 = L4::Tcp(t);
        assert_eq!(Tcp::error(&pkt, &p, &Config::default()), Err(Invalid::Truncated));
        t.header_len = 16;
        pkt.l4 = L4::Tcp(t);
        assert_eq!(Tcp::error(&pkt, &p, &Config::default()), Err(Invalid::Truncated));
        pkt.end = p.len() + 10;
        assert_eq!(Tcp::error(&pkt, &p, &Config::default()), Err(Invalid::Truncated));
    }

    #[test]
    fn names_codes_and_slots() {
        let names = [
            "NONE",
            "SYN_SENT",
            "SYN_RECV",
            "ESTABLISHED",
            "FIN_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
            "TIME_WAIT",
            "CLOSE",
            "SYN_SENT2",
        ];
        for (i, s) in TcpState::ALL.into_iter().enumerate() {
            assert_eq!(s.name(), names[i]);
            assert_eq!(usize::from(s.code()), i);
            assert_eq!(TcpState::from_code(s.code()), Some(s));
            if i > 0 {
                assert_eq!(Tcp::TIMEOUT_NAMES[s.slot()], s.name());
            }
        }
        assert_eq!(TcpState::from_code(10), None);
        assert_eq!(Tcp::TIMEOUT_NAMES[SLOT_RETRANS], "RETRANS");
        assert_eq!(Tcp::TIMEOUT_NAMES[SLOT_UNACK], "UNACKNOWLEDGED");
        assert_eq!(Tcp::DEFAULT_TIMEOUTS.len(), Tcp::TIMEOUT_NAMES.len());
    }

    #[test]
    fn table_matches_kernel_6x() {
        // tcp_conntracks of Linux 6.x, rows syn, synack, fin, ack, rst, none; columns
        // sNO sSS sSR sES sFW sCW sLA sTW sCL sS2.
        let kernel = [
            [
                "sSS sSS sIG sIG sIG sIG sIG sSS sSS sS2",
                "sIV sIV sSR sIV sIV sIV sIV sIV sIV sSR",
                "sIV sIV sFW sFW sLA sLA sLA sTW sCL sIV",
                "sES sIV sES sES sCW sCW sTW sTW sCL sIV",
                "sIV sCL sCL sCL sCL sCL sCL sCL sCL sCL",
                "sIV sIV sIV sIV sIV sIV sIV sIV sIV sIV",
            ],
            [
                "sIV sS2 sIV sIV sIV sIV sIV sSS sIV sS2",
                "sIV sSR sIG sIG sIG sIG sIG sIG sIG sSR",
                "sIV sIV sFW sFW sLA sLA sLA sTW sCL sIV",
                "sIV sIG sSR sES sCW sCW sTW sTW sCL sIG",
                "sIV sCL sCL sCL sCL sCL sCL sCL sCL sCL",
                "sIV sIV sIV sIV sIV sIV sIV sIV sIV sIV",
            ],
        ];
        let cell = |n: &str| match n {
            "sIV" => Next::Invalid,
            "sIG" => Next::Ignore,
            "sNO" => NO,
            "sSS" => SS,
            "sSR" => SR,
            "sES" => ES,
            "sFW" => FW,
            "sCW" => CW,
            "sLA" => LA,
            "sTW" => TW,
            "sCL" => CL,
            "sS2" => S2,
            other => panic!("{other}"),
        };
        for (d, rows) in kernel.iter().enumerate() {
            for (i, row) in rows.iter().enumerate() {
                let want: Vec<Next> = row.split(' ').map(cell).collect();
                assert_eq!(TABLE[d][i].to_vec(), want, "dir {d} index {i}");
            }
        }
    }

    #[test]
    fn state_is_compact() {
        assert!(std::mem::size_of::<State>() <= 64, "{}", std::mem::size_of::<State>());
    }

    #[test]
    fn sequence_comparisons_wrap() {
        assert!(before(u32::MAX, 0));
        assert!(after(0, u32::MAX));
        assert!(before(1, 2) && !before(2, 2) && !after(2, 2));
        // A connection across the wrap of sequence space.
        let mut n = Net::v4();
        let ca = u32::MAX - 10;
        n.a(ca, 0, SYN, 64240, &[], b"");
        n.b(CB, ca.wrapping_add(1), SYN | ACK, 65160, &[], b"");
        n.a(ca.wrapping_add(1), CB + 1, ACK, 64240, &[], b"");
        assert_eq!(n.a(ca.wrapping_add(1), CB + 1, ACK | PSH, 64240, &[], &[1; 100]).invalid, None);
        assert_eq!(n.b(CB + 1, ca.wrapping_add(101), ACK, 65160, &[], b"").invalid, None);
        let c = n.conn();
        assert_eq!((c.state, c.assured, c.left), (TcpState::Established, true, 432000));
    }

    #[test]
    fn option_walk_matches_kernel_rules() {
        let mut s = Side { flags: BE_LIBERAL | CLOSE_INIT, scale: 3, ..Side::default() };
        // No options: untouched.
        read_options(&[], &mut s);
        assert_eq!((s.scale, s.flags), (3, BE_LIBERAL | CLOSE_INIT));
        // Options: reset but BE_LIBERAL, then read; a bad length stops the walk.
        read_options(&[1, 4, 2, 3, 3, 9, 3, 1, 5], &mut s);
        assert_eq!((s.scale, s.flags), (9, BE_LIBERAL | SACK_PERM | WINDOW_SCALE));
        read_options(&[0, 3, 3, 9], &mut s);
        assert_eq!((s.scale, s.flags), (0, BE_LIBERAL));
        // SACK: the first valid SACK option only, highest right edge after ack.
        let mut o = opt::sack(&[(10, 20), (30, 40)]);
        o.extend(opt::sack(&[(50, 60)]));
        assert_eq!(highest_sack(&o, 15), 40);
        assert_eq!(highest_sack(&o, 100), 100);
        assert_eq!(highest_sack(&[5, 9, 0, 0, 0, 0, 0, 0, 0], 1), 1);
    }

    /// A tiny deterministic generator for the robustness test.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 32) as u32
        }

        fn below(&mut self, n: u32) -> u32 {
            self.next() % n
        }
    }

    #[test]
    fn random_segments_never_panic() {
        let mut r = Lcg(42);
        let mut visited = [false; 10];
        for cfg in [Config::default(), Config { tcp_be_liberal: true, tcp_max_retrans: 0, ..Config::default() }] {
            let mut n = Net::with(cfg, false);
            let mut isn = [CA, CB];
            for i in 0..20_000u64 {
                n.now = Timestamp(1000 * NS + i * NS / 10);
                if r.below(500) == 0 {
                    // A fresh handshake, whatever state the connection is in.
                    n.a(isn[0], 0, SYN, 64240, &opt::wscale(7), b"");
                    n.b(isn[1], isn[0].wrapping_add(1), SYN | ACK, 65160, &opt::wscale(7), b"");
                    n.a(isn[0].wrapping_add(1), isn[1].wrapping_add(1), ACK, 502, &[], b"");
                    continue;
                }
                let from_a = r.below(2) == 0;
                let side = usize::from(!from_a);
                let seq = match r.next() % 4 {
                    0 => r.next(),
                    _ => isn[side].wrapping_add(r.next() % 3000),
                };
                let ack = match r.next() % 4 {
                    0 => r.next(),
                    1 => 0,
                    _ => isn[1 - side].wrapping_add(r.next() % 3000),
                };
                const COMMON: [u8; 8] = [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, ACK | URG];
                let flags = if r.below(5) == 0 { (r.next() & 0xff) as u8 } else { COMMON[r.below(8) as usize] };
                let win = (r.next() & 0xffff) as u16;
                let mut opts = Vec::new();
                for _ in 0..r.next() % 3 {
                    match r.next() % 5 {
                        0 => opts.extend(opt::wscale((r.next() % 20) as u8)),
                        1 => opts.extend(opt::sack_perm()),
                        2 => opts.extend(opt::sack(&[(r.next(), r.next()), (r.next(), r.next())])),
                        3 => opts.extend([(r.next() % 9) as u8, (r.next() % 12) as u8]),
                        _ => opts.extend(opt::timestamp(r.next(), r.next())),
                    }
                }
                opts.truncate(40);
                let data = vec![0u8; (r.next() % 200) as usize];
                if from_a {
                    n.a(seq, ack, flags, win, &opts, &data);
                } else {
                    n.b(seq, ack, flags, win, &opts, &data);
                }
                if r.below(7) == 0 {
                    isn[side] = isn[side].wrapping_add(data.len() as u32);
                }
                for c in n.conns() {
                    visited[c.state as usize] = true;
                }
            }
        }
        // The walk went through most of the state machine.
        assert!(visited.iter().filter(|&&v| v).count() >= 8, "{visited:?}");
    }
}

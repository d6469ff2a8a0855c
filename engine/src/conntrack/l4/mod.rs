//! Per-protocol trackers, one file each, behind [`Tracker`], dispatched by `match` on [`Proto`].
//!
//! As in mainline Linux (which dropped the per-packet function pointers of
//! `nf_conntrack_l4proto`), the trait documents what a tracker provides and an enum `match` calls
//! it, so the hot path has no `dyn`.

pub mod generic;
pub mod gre;
pub mod icmp;
pub mod sctp;
pub mod tcp;
pub mod udp;

use proto::packet::{ipproto, Packet};

use super::conn::Status;
use super::tuple::Dir;
use crate::clock::Timestamp;
use crate::timeouts::Values;

/// Tracking settings, the kernel's `nf_conntrack_*` sysctls. Defaults are the kernel's.
#[derive(Debug, Clone)]
pub struct Config {
    /// `nf_conntrack_checksum`: verify L4 checksums of incoming packets.
    pub checksum: bool,
    /// `nf_conntrack_tcp_loose`: pick up established TCP connections mid-stream.
    pub tcp_loose: bool,
    /// `nf_conntrack_tcp_be_liberal`: only RSTs can be out of window.
    pub tcp_be_liberal: bool,
    /// `nf_conntrack_tcp_max_retrans`: retransmissions before the RETRANS timeout applies.
    pub tcp_max_retrans: u8,
    /// `nf_conntrack_tcp_ignore_invalid_rst`.
    pub tcp_ignore_invalid_rst: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            checksum: true,
            tcp_loose: true,
            tcp_be_liberal: false,
            tcp_max_retrans: 3,
            tcp_ignore_invalid_rst: false,
        }
    }
}

/// Why a packet was classified invalid. Each has a name and a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Invalid {
    /// The L4 header is cut short or its length fields disagree with the packet.
    Truncated,
    /// The L4 checksum is wrong.
    Checksum,
    /// A TCP flag combination that no tracker state accepts.
    TcpFlags,
    /// A TCP packet that cannot start a connection (or pickup is disabled).
    TcpNew,
    /// A TCP packet the state table refuses in the connection's state.
    TcpState,
    /// A TCP segment outside the tracked window.
    TcpWindow,
    /// A TCP RST whose sequence number is not acceptable.
    TcpRst,
    /// An ICMP type that cannot start a connection, or an unknown type.
    IcmpType,
    /// An ICMP error quoting a packet that belongs to no tracked connection, or quoted badly.
    IcmpError,
    /// SCTP chunks that are malformed or may not appear together.
    SctpChunks,
    /// An SCTP verification tag that does not belong to the association.
    SctpVtag,
    /// An SCTP chunk the state machine refuses.
    SctpState,
    /// A GRE packet the tracker refuses (a PPTP packet that does not carry PPP).
    Gre,
    /// No tuple can be formed (for example an ICMP type without an answer type).
    NoTuple,
}

impl Invalid {
    /// Every reason, in counter order.
    pub const ALL: [Invalid; 14] = [
        Invalid::Truncated,
        Invalid::Checksum,
        Invalid::TcpFlags,
        Invalid::TcpNew,
        Invalid::TcpState,
        Invalid::TcpWindow,
        Invalid::TcpRst,
        Invalid::IcmpType,
        Invalid::IcmpError,
        Invalid::SctpChunks,
        Invalid::SctpVtag,
        Invalid::SctpState,
        Invalid::Gre,
        Invalid::NoTuple,
    ];

    /// A short snake_case name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            Invalid::Truncated => "truncated",
            Invalid::Checksum => "checksum",
            Invalid::TcpFlags => "tcp_flags",
            Invalid::TcpNew => "tcp_new",
            Invalid::TcpState => "tcp_state",
            Invalid::TcpWindow => "tcp_window",
            Invalid::TcpRst => "tcp_rst",
            Invalid::IcmpType => "icmp_type",
            Invalid::IcmpError => "icmp_error",
            Invalid::SctpChunks => "sctp_chunks",
            Invalid::SctpVtag => "sctp_vtag",
            Invalid::SctpState => "sctp_state",
            Invalid::Gre => "gre",
            Invalid::NoTuple => "no_tuple",
        }
    }
}

/// What a tracker decided about a packet of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accept; the connection expires `secs` seconds from now.
    Refresh(u32),
    /// Accept without touching the expiry (an ignored packet, a SYN retransmission).
    Keep,
    /// The packet is invalid; the connection is unchanged.
    Invalid(Invalid),
    /// Accept, then remove the connection (an RST before any reply).
    Kill,
    /// Remove the connection and track the packet again as a new one (a SYN re-opening TIME_WAIT).
    Repeat,
}

/// What a tracker may see and change of its connection besides its own state.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub dir: Dir,
    pub now: Timestamp,
    /// When the connection was created.
    pub start: Timestamp,
    /// The connection's status bits (SEEN_REPLY is set by the table *after* the tracker ran, as
    /// in the kernel; the tracker sets ASSURED).
    pub status: &'a mut Status,
    /// The current expiry; a tracker may lower it (TCP's out-of-window FIN/RST handling).
    pub expires: &'a mut Timestamp,
    /// The timeout values in force for this connection: its policy's, or the defaults.
    pub timeouts: &'a Values,
    pub cfg: &'a Config,
}

/// What every L4 tracker provides.
pub trait Tracker {
    /// Per-connection state.
    type State;
    /// The cttimeout attribute names of the timeout slots, in attribute order (attribute id =
    /// index + 1), as `nfct` prints them.
    const TIMEOUT_NAMES: &'static [&'static str];
    /// Default timeouts in seconds, per slot (this kernel's `/proc/sys/net/netfilter` values).
    const DEFAULT_TIMEOUTS: &'static [u32];

    /// Per-packet checks before the lookup (the kernel's `l4proto` error handlers): header
    /// lengths, checksums, flag sanity.
    fn error(pkt: &Packet, buf: &[u8], cfg: &Config) -> Result<(), Invalid>;

    /// The state of a new connection started by `pkt`, or why it cannot start one.
    fn new(pkt: &Packet, buf: &[u8], cfg: &Config) -> Result<Self::State, Invalid>;

    /// Tracks one packet of the connection (the first one too, right after [`Tracker::new`]).
    fn packet(state: &mut Self::State, ctx: &mut Ctx<'_>, pkt: &Packet, buf: &[u8]) -> Verdict;

    /// The state column of `conntrack -L` (`ESTABLISHED`), if the protocol prints one.
    fn state_name(state: &Self::State) -> Option<&'static str>;
}

/// The trackers, one variant each. The discriminant indexes per-protocol tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp = 0,
    Udp,
    UdpLite,
    Icmp,
    Icmpv6,
    Sctp,
    Gre,
    Generic,
}

impl Proto {
    /// Number of trackers.
    pub const COUNT: usize = 8;
    /// Every tracker, in discriminant order.
    pub const ALL: [Proto; Proto::COUNT] =
        [Proto::Tcp, Proto::Udp, Proto::UdpLite, Proto::Icmp, Proto::Icmpv6, Proto::Sctp, Proto::Gre, Proto::Generic];

    /// The tracker for IP protocol number `n`.
    #[inline]
    pub fn of(n: u8) -> Proto {
        match n {
            ipproto::TCP => Proto::Tcp,
            ipproto::UDP => Proto::Udp,
            ipproto::UDPLITE => Proto::UdpLite,
            ipproto::ICMP => Proto::Icmp,
            ipproto::ICMPV6 => Proto::Icmpv6,
            ipproto::SCTP => Proto::Sctp,
            ipproto::GRE => Proto::Gre,
            _ => Proto::Generic,
        }
    }

    /// The tracker cttimeout accepts for protocol number `n` (generic is 255); `None` for a number
    /// without a tracker of its own, which the kernel answers with `EOPNOTSUPP`.
    pub fn supported(n: u8) -> Option<Proto> {
        match n {
            255 => Some(Proto::Generic),
            n => Some(Proto::of(n)).filter(|p| *p != Proto::Generic),
        }
    }

    /// The protocol number cttimeout uses for this tracker (generic is 255).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => ipproto::TCP,
            Proto::Udp => ipproto::UDP,
            Proto::UdpLite => ipproto::UDPLITE,
            Proto::Icmp => ipproto::ICMP,
            Proto::Icmpv6 => ipproto::ICMPV6,
            Proto::Sctp => ipproto::SCTP,
            Proto::Gre => ipproto::GRE,
            Proto::Generic => 255,
        }
    }

    /// The name `conntrack -L` prints for a connection of IP protocol `n`.
    pub fn name_of(n: u8) -> &'static str {
        match Proto::of(n) {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::UdpLite => "udplite",
            Proto::Icmp => "icmp",
            Proto::Icmpv6 => "icmpv6",
            Proto::Sctp => "sctp",
            Proto::Gre => "gre",
            Proto::Generic => "unknown",
        }
    }

    /// Default timeout values of this tracker.
    pub fn default_timeouts(self) -> &'static [u32] {
        match self {
            Proto::Tcp => tcp::Tcp::DEFAULT_TIMEOUTS,
            Proto::Udp => udp::Udp::DEFAULT_TIMEOUTS,
            Proto::UdpLite => udp::UdpLite::DEFAULT_TIMEOUTS,
            Proto::Icmp | Proto::Icmpv6 => icmp::Icmp::DEFAULT_TIMEOUTS,
            Proto::Sctp => sctp::Sctp::DEFAULT_TIMEOUTS,
            Proto::Gre => gre::Gre::DEFAULT_TIMEOUTS,
            Proto::Generic => generic::Generic::DEFAULT_TIMEOUTS,
        }
    }

    /// Timeout slot names of this tracker, in cttimeout attribute order.
    pub fn timeout_names(self) -> &'static [&'static str] {
        match self {
            Proto::Tcp => tcp::Tcp::TIMEOUT_NAMES,
            Proto::Udp => udp::Udp::TIMEOUT_NAMES,
            Proto::UdpLite => udp::UdpLite::TIMEOUT_NAMES,
            Proto::Icmp | Proto::Icmpv6 => icmp::Icmp::TIMEOUT_NAMES,
            Proto::Sctp => sctp::Sctp::TIMEOUT_NAMES,
            Proto::Gre => gre::Gre::TIMEOUT_NAMES,
            Proto::Generic => generic::Generic::TIMEOUT_NAMES,
        }
    }
}

/// A connection's protocol state: one variant per tracker with state.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ProtoState {
    Tcp(tcp::State),
    Sctp(sctp::State),
    /// UDP, UDP-Lite, ICMP, ICMPv6, GRE and generic keep no state beyond the status bits.
    Stateless,
}

impl ProtoState {
    /// The timeout slot of the connection's current state (for a connection without state
    /// classes, slot 0: UNREPLIED or the single timeout).
    pub fn timeout_slot(&self) -> usize {
        match self {
            ProtoState::Tcp(s) => tcp::timeout_slot(s),
            ProtoState::Sctp(s) => sctp::timeout_slot(s),
            ProtoState::Stateless => 0,
        }
    }

    /// The tracker state's number (0 for trackers without states): a change is an `UPDATE`
    /// event.
    #[inline]
    pub fn state_code(&self) -> u8 {
        match self {
            ProtoState::Tcp(s) => s.state() as u8,
            ProtoState::Sctp(s) => s.state() as u8,
            ProtoState::Stateless => 0,
        }
    }

    /// The state column for `conntrack -L`.
    pub fn name(&self) -> Option<&'static str> {
        match self {
            ProtoState::Tcp(s) => tcp::Tcp::state_name(s),
            ProtoState::Sctp(s) => sctp::Sctp::state_name(s),
            ProtoState::Stateless => None,
        }
    }
}

/// Runs the tracker's pre-lookup checks.
#[inline(always)]
pub fn error(p: Proto, pkt: &Packet, buf: &[u8], cfg: &Config) -> Result<(), Invalid> {
    match p {
        Proto::Tcp => tcp::Tcp::error(pkt, buf, cfg),
        Proto::Udp => udp::Udp::error(pkt, buf, cfg),
        Proto::UdpLite => udp::UdpLite::error(pkt, buf, cfg),
        Proto::Icmp | Proto::Icmpv6 => icmp::Icmp::error(pkt, buf, cfg),
        Proto::Sctp => sctp::Sctp::error(pkt, buf, cfg),
        Proto::Gre => gre::Gre::error(pkt, buf, cfg),
        Proto::Generic => generic::Generic::error(pkt, buf, cfg),
    }
}

/// Creates the protocol state of a new connection.
#[inline]
pub fn new(p: Proto, pkt: &Packet, buf: &[u8], cfg: &Config) -> Result<ProtoState, Invalid> {
    Ok(match p {
        Proto::Tcp => ProtoState::Tcp(tcp::Tcp::new(pkt, buf, cfg)?),
        Proto::Sctp => ProtoState::Sctp(sctp::Sctp::new(pkt, buf, cfg)?),
        Proto::Udp => udp::Udp::new(pkt, buf, cfg).map(|()| ProtoState::Stateless)?,
        Proto::UdpLite => udp::UdpLite::new(pkt, buf, cfg).map(|()| ProtoState::Stateless)?,
        Proto::Icmp | Proto::Icmpv6 => icmp::Icmp::new(pkt, buf, cfg).map(|()| ProtoState::Stateless)?,
        Proto::Gre => gre::Gre::new(pkt, buf, cfg).map(|()| ProtoState::Stateless)?,
        Proto::Generic => generic::Generic::new(pkt, buf, cfg).map(|()| ProtoState::Stateless)?,
    })
}

/// Tracks a packet of an existing connection.
#[inline(always)]
pub fn packet(p: Proto, state: &mut ProtoState, ctx: &mut Ctx<'_>, pkt: &Packet, buf: &[u8]) -> Verdict {
    match (p, state) {
        (Proto::Tcp, ProtoState::Tcp(s)) => tcp::Tcp::packet(s, ctx, pkt, buf),
        (Proto::Sctp, ProtoState::Sctp(s)) => sctp::Sctp::packet(s, ctx, pkt, buf),
        (Proto::Udp, _) => udp::Udp::packet(&mut (), ctx, pkt, buf),
        (Proto::UdpLite, _) => udp::UdpLite::packet(&mut (), ctx, pkt, buf),
        (Proto::Icmp | Proto::Icmpv6, _) => icmp::Icmp::packet(&mut (), ctx, pkt, buf),
        (Proto::Gre, _) => gre::Gre::packet(&mut (), ctx, pkt, buf),
        (Proto::Generic, _) => generic::Generic::packet(&mut (), ctx, pkt, buf),
        // A state of another protocol cannot be attached to this connection.
        (Proto::Tcp | Proto::Sctp, _) => Verdict::Invalid(Invalid::NoTuple),
    }
}

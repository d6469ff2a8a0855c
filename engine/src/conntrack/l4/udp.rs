//! UDP and UDP-Lite (`nf_conntrack_proto_udp.c`).
//!
//! No per-connection state: a connection is UNREPLIED until a reply is seen, then REPLIED. For UDP,
//! a replied connection switches to the longer "stream" timeout and becomes ASSURED only once it
//! is still active more than 2 s after its creation (kernel 6.x: a DNS-like request/response pair
//! does not get assured); UDP-Lite does so as soon as a reply is seen.

use proto::checksum;
use proto::packet::{Packet, L4};

use super::{Config, Ctx, Invalid, Tracker, Verdict};
use crate::conntrack::conn::Status;

/// Timeout slots.
pub const UNREPLIED: usize = 0;
pub const REPLIED: usize = 1;

/// Seconds a replied UDP flow must live before it is treated as a stream.
const STREAM_AFTER_NS: u64 = 2_000_000_000;

/// The UDP tracker.
pub struct Udp;
/// The UDP-Lite tracker.
pub struct UdpLite;

fn packet(ctx: &mut Ctx<'_>, lite: bool) -> Verdict {
    if !ctx.status.contains(Status::SEEN_REPLY) {
        return Verdict::Refresh(ctx.timeouts.get(UNREPLIED));
    }
    // The reply-direction packet that is the first reply has not set SEEN_REPLY yet (the table
    // sets it after the tracker ran), so it lands in the branch above, as in the kernel.
    let stream = lite || ctx.now.since(ctx.start) > STREAM_AFTER_NS;
    if stream {
        ctx.status.insert(Status::ASSURED);
        Verdict::Refresh(ctx.timeouts.get(REPLIED))
    } else {
        Verdict::Refresh(ctx.timeouts.get(UNREPLIED))
    }
}

impl Tracker for Udp {
    type State = ();
    const TIMEOUT_NAMES: &'static [&'static str] = proto::cttimeout::names::UDP;
    const DEFAULT_TIMEOUTS: &'static [u32] = &[30, 120];

    fn error(pkt: &Packet, buf: &[u8], cfg: &Config) -> Result<(), Invalid> {
        let L4::Udp(u) = pkt.l4 else { return Err(Invalid::Truncated) };
        let seg = pkt.l4_bytes(buf);
        let len = usize::from(u.len_or_coverage);
        // udp_error: the length field must fit the packet and cover the header.
        if len > seg.len() || len < 8 {
            return Err(Invalid::Truncated);
        }
        // A zero checksum means "none" (IPv4 only; IPv6 requires one, but the kernel leaves that
        // to the IPv6 stack and does not flag it here).
        if cfg.checksum
            && !pkt.l4_checksum_verified
            && u.checksum != 0
            && checksum::l4(pkt.family, &pkt.src, &pkt.dst, pkt.proto, &seg[..len], len) != 0
        {
            return Err(Invalid::Checksum);
        }
        Ok(())
    }

    fn new(_: &Packet, _: &[u8], _: &Config) -> Result<(), Invalid> {
        Ok(())
    }

    fn packet(_: &mut (), ctx: &mut Ctx<'_>, _: &Packet, _: &[u8]) -> Verdict {
        packet(ctx, false)
    }

    fn state_name(_: &()) -> Option<&'static str> {
        None
    }
}

impl Tracker for UdpLite {
    type State = ();
    const TIMEOUT_NAMES: &'static [&'static str] = proto::cttimeout::names::UDP;
    const DEFAULT_TIMEOUTS: &'static [u32] = &[30, 120];

    fn error(pkt: &Packet, buf: &[u8], cfg: &Config) -> Result<(), Invalid> {
        let L4::UdpLite(u) = pkt.l4 else { return Err(Invalid::Truncated) };
        let seg = pkt.l4_bytes(buf);
        // udplite_error: coverage 0 means the whole packet; less than the header is invalid.
        let cover = match usize::from(u.len_or_coverage) {
            0 => seg.len(),
            c if c < 8 || c > seg.len() => return Err(Invalid::Truncated),
            c => c,
        };
        // UDP-Lite has no "no checksum" value.
        if u.checksum == 0 {
            return Err(Invalid::Checksum);
        }
        if cfg.checksum
            && !pkt.l4_checksum_verified
            && checksum::l4(pkt.family, &pkt.src, &pkt.dst, pkt.proto, seg, cover) != 0
        {
            return Err(Invalid::Checksum);
        }
        Ok(())
    }

    fn new(_: &Packet, _: &[u8], _: &Config) -> Result<(), Invalid> {
        Ok(())
    }

    fn packet(_: &mut (), ctx: &mut Ctx<'_>, _: &Packet, _: &[u8]) -> Verdict {
        packet(ctx, true)
    }

    fn state_name(_: &()) -> Option<&'static str> {
        None
    }
}

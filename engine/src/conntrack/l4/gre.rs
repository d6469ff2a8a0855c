//! GRE (`nf_conntrack_proto_gre.c`).
//!
//! Version 1 (enhanced GRE, PPTP) is keyed by its call ID; without the PPTP helper, which fills
//! the kernel's keymap, the source key is always 0, so each direction of a PPTP call is a
//! connection of its own. Version 0 is keyed by addresses alone, like the generic tracker, over
//! IPv4 and IPv6 alike (checked against this kernel by the differential suite).

use proto::packet::{Packet, L4};

use super::{Config, Ctx, Invalid, Tracker, Verdict};
use crate::conntrack::conn::Status;

/// Timeout slots.
pub const UNREPLIED: usize = 0;
pub const REPLIED: usize = 1;

/// EtherType of PPP, the only payload PPTP carries.
const GRE_PROTO_PPP: u16 = 0x880b;

/// The GRE tracker.
pub struct Gre;

impl Tracker for Gre {
    type State = ();
    const TIMEOUT_NAMES: &'static [&'static str] = proto::cttimeout::names::UDP;
    const DEFAULT_TIMEOUTS: &'static [u32] = &[30, 180];

    fn error(pkt: &Packet, _: &[u8], _: &Config) -> Result<(), Invalid> {
        match pkt.l4 {
            L4::Gre(g) if g.version == 1 && g.protocol != GRE_PROTO_PPP => Err(Invalid::Gre),
            L4::Gre(_) => Ok(()),
            _ => Err(Invalid::Truncated),
        }
    }

    fn new(_: &Packet, _: &[u8], _: &Config) -> Result<(), Invalid> {
        Ok(())
    }

    fn packet(_: &mut (), ctx: &mut Ctx<'_>, _: &Packet, _: &[u8]) -> Verdict {
        if ctx.status.contains(Status::SEEN_REPLY) {
            ctx.status.insert(Status::ASSURED);
            Verdict::Refresh(ctx.timeouts.get(REPLIED))
        } else {
            Verdict::Refresh(ctx.timeouts.get(UNREPLIED))
        }
    }

    fn state_name(_: &()) -> Option<&'static str> {
        None
    }
}

//! Any protocol without a tracker of its own (`nf_conntrack_proto_generic.c`): tracked by
//! addresses and protocol number, one timeout.

use proto::packet::Packet;

use super::{Config, Ctx, Invalid, Tracker, Verdict};

/// The generic tracker.
pub struct Generic;

impl Tracker for Generic {
    type State = ();
    const TIMEOUT_NAMES: &'static [&'static str] = proto::cttimeout::names::ICMP;
    const DEFAULT_TIMEOUTS: &'static [u32] = &[600];

    fn error(_: &Packet, _: &[u8], _: &Config) -> Result<(), Invalid> {
        Ok(())
    }

    fn new(_: &Packet, _: &[u8], _: &Config) -> Result<(), Invalid> {
        Ok(())
    }

    fn packet(_: &mut (), ctx: &mut Ctx<'_>, _: &Packet, _: &[u8]) -> Verdict {
        Verdict::Refresh(ctx.timeouts.get(0))
    }

    fn state_name(_: &()) -> Option<&'static str> {
        None
    }
}

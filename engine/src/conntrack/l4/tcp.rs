//! TCP (`nf_conntrack_proto_tcp.c`). PLACEHOLDER: being written; replaced wholesale.

use proto::packet::Packet;

use super::{Config, Ctx, Invalid, Tracker, Verdict};

/// The TCP tracker.
pub struct Tcp;

/// Per-connection TCP state.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub state: u8,
}

/// The timeout slot for the connection's current state.
pub fn timeout_slot(_: &State) -> usize {
    0
}

impl Tracker for Tcp {
    type State = State;
    const TIMEOUT_NAMES: &'static [&'static str] = &[
        "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2",
        "RETRANS", "UNACKNOWLEDGED",
    ];
    const DEFAULT_TIMEOUTS: &'static [u32] = &[120, 60, 432000, 120, 60, 30, 120, 10, 120, 300, 300];

    fn error(_: &Packet, _: &[u8], _: &Config) -> Result<(), Invalid> {
        Ok(())
    }

    fn new(_: &Packet, _: &[u8], _: &Config) -> Result<State, Invalid> {
        Ok(State::default())
    }

    fn packet(_: &mut State, ctx: &mut Ctx<'_>, _: &Packet, _: &[u8]) -> Verdict {
        Verdict::Refresh(ctx.timeouts.get(0))
    }

    fn state_name(_: &State) -> Option<&'static str> {
        None
    }
}

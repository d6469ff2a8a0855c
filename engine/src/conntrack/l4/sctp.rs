//! SCTP (`nf_conntrack_proto_sctp.c`). PLACEHOLDER: being written; replaced wholesale.

use proto::packet::Packet;

use super::{Config, Ctx, Invalid, Tracker, Verdict};

/// The SCTP tracker.
pub struct Sctp;

/// Per-connection SCTP state.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub state: u8,
}

/// The timeout slot for the connection's current state.
pub fn timeout_slot(_: &State) -> usize {
    0
}

impl Tracker for Sctp {
    type State = State;
    const TIMEOUT_NAMES: &'static [&'static str] = &[
        "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT", "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT",
        "HEARTBEAT_SENT",
    ];
    const DEFAULT_TIMEOUTS: &'static [u32] = &[10, 3, 3, 210, 3, 3, 3, 30];

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

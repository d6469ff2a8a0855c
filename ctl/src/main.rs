//! `ferroctl`, the operator's client of the ferrowall daemon.
//!
//! The daemon's control socket (the cttimeout netlink API) does not exist yet, so there is nothing
//! to talk to: ferroctl says so and exits with status 2 rather than pretend.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "ferroctl {}: the daemon's control socket is not available in this version; \
         use `ferrowall replay` to run captures through the engine",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}

//! Wall-clock time for the harness. The workspace's clippy configuration bans `Instant::now` and
//! `thread::sleep` so that the engine stays sans-IO; the differential harness, by contrast, drives
//! a real kernel in real time, so it reads the clock here and nowhere else.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

/// The current instant.
pub fn now() -> Instant {
    Instant::now()
}

/// Sleeps for `d`.
pub fn sleep(d: Duration) {
    std::thread::sleep(d)
}

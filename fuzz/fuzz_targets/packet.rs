//! Frames through the parser, defragmentation and the table: never a panic, the table never
//! past its maximum.
#![no_main]

use std::sync::OnceLock;

use ferrowall_engine::clock::Timestamp;
use ferrowall_engine::conntrack::{Config, Conntrack, Stats};
use ferrowall_proto::packet::{parse_frame, parse_ip};
use libfuzzer_sys::fuzz_target;

static CT: OnceLock<Conntrack> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let ct = CT.get_or_init(|| Conntrack::new(64, Config::default()));
    let mut st = Stats::default();
    let now = Timestamp::from_secs(1000 + u64::from(data.first().copied().unwrap_or(0)));
    for parsed in [parse_frame(data), parse_ip(data, 0)] {
        if let Ok(p) = parsed {
            let mut t = ct.track(now, data, &p, &mut st);
            let _ = ct.confirm(&mut t, &mut st);
        }
    }
    assert!(ct.len() <= ct.max());
});

//! The control handler on arbitrary datagrams — every subsystem it serves: cttimeout, ctnetlink
//! and its expectations — from a privileged and an unprivileged peer, with state (policies and a
//! small connection table that ctnetlink requests fill, change and empty) carried across inputs.
//! It must never panic; every reply, dumps included, must be one whole netlink message addressed
//! to the sender.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use ferrowall_engine::clock::Timestamp;
use ferrowall_engine::conntrack::{Config, Conntrack, Stats};
use ferrowall_engine::control::{handle_at, Control, Peer};
use ferrowall_engine::ctnetlink::Env;
use ferrowall_engine::timeouts::Registry;
use ferrowall_proto::netlink::{Header, Messages};
use libfuzzer_sys::fuzz_target;

static STATE: OnceLock<(Conntrack, Registry)> = OnceLock::new();
/// The handler's clock: each input moves it on by 0–255 s (its second byte), so that
/// connections created by earlier inputs expire.
static NOW: AtomicU64 = AtomicU64::new(1_000_000_000_000);

fn check(reply: &[u8]) {
    let h = Header::parse(reply).expect("replies start with a header");
    assert!(h.len as usize <= reply.len());
    let mut whole = 0;
    for m in Messages::new(reply) {
        let m = m.expect("replies are whole messages");
        assert_eq!(m.header.pid, 77);
        assert_eq!(m.header.len as usize, 16 + m.payload.len());
        whole = m.offset + m.header.len as usize;
    }
    assert!(reply.len() - whole < 4, "nothing after the last message but padding");
}

fuzz_target!(|data: &[u8]| {
    let (ct, registry) = STATE.get_or_init(|| (Conntrack::new(256, Config::default()), Registry::new()));
    let step = u64::from(data.get(1).copied().unwrap_or(0)) * 1_000_000_000;
    let now = Timestamp(NOW.fetch_add(step, Ordering::Relaxed) + step);
    let ctl = Control { registry, ct };
    let stats = || vec![Stats::default(); 2];
    let env = Env { now, cpu_stats: &stats };
    let privileged = data.first().is_some_and(|b| b & 1 == 0);
    let answer = handle_at(&ctl, &env, Peer { portid: 77, privileged }, data);
    for reply in &answer.datagrams {
        check(reply);
    }
    if let Some(dump) = answer.dump {
        for reply in dump.drain(ct, now) {
            check(&reply);
        }
    }
});

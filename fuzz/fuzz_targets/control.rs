//! The control handler on arbitrary datagrams, from a privileged and an unprivileged peer, with
//! state carried across inputs in one registry: it must never panic, and every reply must be one
//! whole netlink message addressed to the sender.
#![no_main]

use std::sync::OnceLock;

use ferrowall_engine::conntrack::{Config, Conntrack};
use ferrowall_engine::control::{handle, Control, Peer};
use ferrowall_engine::timeouts::Registry;
use ferrowall_proto::netlink::Header;
use libfuzzer_sys::fuzz_target;

static STATE: OnceLock<(Conntrack, Registry)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (ct, registry) = STATE.get_or_init(|| (Conntrack::new(256, Config::default()), Registry::new()));
    let ctl = Control { registry, ct };
    let privileged = data.first().is_some_and(|b| b & 1 == 0);
    for reply in handle(&ctl, Peer { portid: 77, privileged }, data) {
        let h = Header::parse(&reply).expect("replies start with a header");
        assert_eq!(h.len as usize, reply.len());
        assert_eq!(h.pid, 77);
    }
});

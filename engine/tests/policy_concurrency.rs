//! Control plane and datapath at once: policies created, replaced, deleted, flushed and dumped
//! while rule sets naming them are loaded and packets attach them to new connections. No crash,
//! no deadlock (every loop is bounded), and the reference counts are exact at the end.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use arc_swap::ArcSwapOption;
use ferrowall_engine::clock::Timestamp;
use ferrowall_engine::conntrack::{Config, Conntrack, Stats};
use ferrowall_engine::filter::{Hook, Meta, RuleSet, Verdict};
use ferrowall_engine::timeouts::{OnExisting, Registry};
use proto::build::PacketBuilder;
use proto::packet::parse_ip;

const NAMES: [&str; 4] = ["p0", "p1", "p2", "p3"];
const ROUNDS: usize = 3_000;

#[test]
fn control_rules_and_datapath_concurrently() {
    let ct = Arc::new(Conntrack::new(4096, Config::default()));
    let reg = Arc::new(Registry::new());
    let rules: Arc<ArcSwapOption<RuleSet>> = Arc::new(ArcSwapOption::empty());
    let stop = Arc::new(AtomicBool::new(false));

    let control = {
        let (ct, reg) = (ct.clone(), reg.clone());
        thread::spawn(move || {
            let mut busy = 0;
            for i in 0..ROUNDS {
                let name = NAMES[i % NAMES.len()];
                match i % 5 {
                    0 | 1 => {
                        let _ = reg.create(&ct, name, 2, 17, &[(1, 1 + (i % 60) as u32)], OnExisting::Busy);
                    }
                    2 => {
                        let _ = reg.create(&ct, name, 2, 17, &[(1, 2)], OnExisting::Replace);
                    }
                    3 => {
                        if reg.delete(&ct, name).is_err() {
                            busy += 1;
                        }
                    }
                    _ => {
                        if i % 50 == 4 {
                            reg.flush(&ct);
                        }
                        // A dump reads a snapshot while others write.
                        assert!(reg.list().iter().all(|p| p.uses() >= 1));
                    }
                }
            }
            busy
        })
    };

    let loader = {
        let (reg, rules, stop) = (reg.clone(), rules.clone(), stop.clone());
        thread::spawn(move || {
            let mut loaded = 0;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < ROUNDS * 10 {
                let name = NAMES[i % NAMES.len()];
                let text = format!("chain forward {{ udp dport 53 ct timeout set \"{name}\" accept }}");
                // The named policy may not exist at this moment: then the rule set is refused.
                if let Ok(rs) = RuleSet::parse("race.rules", &text, &reg) {
                    rules.store(Some(Arc::new(rs)));
                    loaded += 1;
                }
                i += 1;
            }
            loaded
        })
    };

    let workers: Vec<_> = (0..2u16)
        .map(|w| {
            let (ct, rules, stop) = (ct.clone(), rules.clone(), stop.clone());
            thread::spawn(move || {
                let mut st = Stats::default();
                let mut attached = 0;
                for i in 0..ROUNDS as u32 * 4 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let b = PacketBuilder::v4(
                        Ipv4Addr::new(198, 18, w as u8, (i >> 8) as u8),
                        Ipv4Addr::new(198, 19, 0, 1),
                    );
                    let d = b.udp(1024 + (i & 0xff) as u16, 53, b"q");
                    let p = parse_ip(&d, 0).unwrap();
                    let now = Timestamp::from_secs(1000 + u64::from(i / 100));
                    let mut t = ct.track(now, &d, &p, &mut st);
                    if let Some(rs) = rules.load_full() {
                        let dec = rs.eval(Hook::Forward, &Meta { iif: "", oif: "" }, &p, t.state);
                        if matches!(dec.verdict, Verdict::Accept) {
                            if let Some(pol) = &dec.timeout {
                                attached += usize::from(t.set_policy(now, pol));
                            }
                        }
                    }
                    let _ = ct.confirm(&mut t, &mut st);
                }
                attached
            })
        })
        .collect();

    let busy = control.join().expect("control thread");
    let attached: usize = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    stop.store(true, Ordering::Relaxed);
    let loaded = loader.join().expect("loader");
    assert!(loaded > 0 && attached > 0, "the race did happen: {loaded} rule sets, {attached} attachments");
    assert!(busy > 0, "some deletes met a policy in use");

    // The rule set holds one use of its policy; every other policy is used by the registry only.
    let held: Vec<String> =
        rules.load_full().map(|rs| rs.policies().map(|p| p.name.clone()).collect()).unwrap_or_default();
    for p in reg.list().iter() {
        let want = 1 + u32::from(held.contains(&p.name));
        assert_eq!(p.uses(), want, "use count of {}", p.name);
    }
    // Releasing the rules makes every policy deletable; afterwards no connection uses one.
    rules.store(None);
    reg.flush(&ct);
    assert!(reg.list().is_empty());
    let mut with_live_policy = 0;
    ct.for_each(Timestamp::from_secs(0), |c| {
        if c.policy.as_ref().is_some_and(|p| !p.is_deleted()) {
            with_live_policy += 1;
        }
    });
    assert_eq!(with_live_policy, 0, "connections still use a deleted policy's values");
}

//! The control handler against random and mutated datagrams: it never panics, and every reply is
//! a well-formed netlink message (an error, an ack, an object or DONE) addressed to the sender.

use ferrowall_engine::conntrack::{Config, Conntrack};
use ferrowall_engine::control::{handle, Control, Peer};
use ferrowall_engine::timeouts::Registry;
use proptest::prelude::*;
use proto::cttimeout::{attr, nlmsg_type, MsgType};
use proto::netlink::{flags, Header, MessageBuilder, Messages, Nfgenmsg};

const PORTID: u32 = 4242;

/// A valid request of each kind, as seeds for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let gen = Nfgenmsg { family: 0, version: 0, res_id: 0 };
    let mut v = Vec::new();
    let mut new = MessageBuilder::new(nlmsg_type(MsgType::New), flags::REQUEST | flags::ACK | flags::CREATE, 1, 0);
    new.nfgenmsg(gen).put_strz(attr::NAME, b"seed").put_be16(attr::L3PROTO, 2).put_u8(attr::L4PROTO, 6);
    let nest = new.nest_start(attr::DATA);
    new.put_be32(3, 600);
    new.nest_end(nest);
    v.push(new.finish());
    let mut get = MessageBuilder::new(nlmsg_type(MsgType::Get), flags::REQUEST | flags::DUMP, 2, 0);
    get.nfgenmsg(gen);
    v.push(get.finish());
    let mut del = MessageBuilder::new(nlmsg_type(MsgType::Delete), flags::REQUEST | flags::ACK, 3, 0);
    del.nfgenmsg(gen).put_strz(attr::NAME, b"seed");
    v.push(del.finish());
    let mut dget = MessageBuilder::new(nlmsg_type(MsgType::DefaultGet), flags::REQUEST | flags::ACK, 4, 0);
    dget.nfgenmsg(gen).put_be16(attr::L3PROTO, 10).put_u8(attr::L4PROTO, 132);
    v.push(dget.finish());
    v
}

fn check_replies(datagram: &[u8], privileged: bool) -> Result<(), TestCaseError> {
    let ct = Conntrack::new(64, Config::default());
    let reg = Registry::new();
    let ctl = Control { registry: &reg, ct: &ct };
    // A policy to find, replace and delete.
    let _ = handle(&ctl, Peer { portid: PORTID, privileged: true }, &seeds()[0]);
    let replies = handle(&ctl, Peer { portid: PORTID, privileged }, datagram);
    for r in &replies {
        let mut msgs = Messages::new(r);
        let m = msgs.next().expect("a reply holds a message");
        let m = m.map_err(|e| TestCaseError::fail(format!("malformed reply {e:?}: {r:02x?}")))?;
        prop_assert_eq!(m.header.len as usize, r.len(), "one message per reply, length exact");
        prop_assert_eq!(m.header.pid, PORTID);
        prop_assert!(msgs.next().is_none());
    }
    Ok(())
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (0..4usize, proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6), any::<u16>(), any::<bool>()).prop_map(
        |(seed, flips, cut, concat)| {
            let mut d = seeds()[seed].clone();
            for (at, x) in flips {
                let n = d.len();
                d[usize::from(at) % n] ^= x;
            }
            if concat {
                d.extend_from_slice(&seeds()[(seed + 1) % 4]);
            }
            let keep = d.len() - usize::from(cut) % (d.len() / 2 + 1);
            d.truncate(keep);
            d
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_datagrams_get_well_formed_replies(d in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_replies(&d, true)?;
    }

    #[test]
    fn mutated_requests_get_well_formed_replies(d in mutated(), privileged in any::<bool>()) {
        check_replies(&d, privileged)?;
    }
}

#[test]
fn every_seed_is_answered() {
    let ct = Conntrack::new(64, Config::default());
    let reg = Registry::new();
    let ctl = Control { registry: &reg, ct: &ct };
    for s in seeds() {
        let replies = handle(&ctl, Peer { portid: PORTID, privileged: true }, &s);
        assert!(!replies.is_empty(), "no reply to {s:02x?}");
        let last = Header::parse(replies.last().unwrap()).unwrap();
        // Every request ends with an ack, an error or DONE (types 2 and 3).
        assert!(matches!(last.kind, 2 | 3), "last reply type {}", last.kind);
    }
}

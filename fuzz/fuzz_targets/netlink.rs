//! The pure netlink codecs of `proto` on arbitrary datagrams: the message walk, attribute walks
//! (nested too), the cttimeout request/data/reply parsers, the ctnetlink request parsers and the
//! private-subsystem parsers. Never a panic, and every offset and slice a walk hands out stays
//! inside the bytes it walked.
#![no_main]

use ferrowall_proto::ctnetlink;
use ferrowall_proto::cttimeout::{data_layout, parse_data, parse_reply, parse_request};
use ferrowall_proto::netlink::{align, Attrs, Header, Messages, Nfgenmsg, HDRLEN, NLA_HDRLEN};
use ferrowall_proto::private::{
    is_private, parse_error, parse_groups_request, parse_hello, parse_overrun, portid_attr, show_text, show_what,
};
use libfuzzer_sys::fuzz_target;

/// Whether `inner` lies inside `outer` (by address).
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// Walks `buf` as attributes, recursing into every payload (nested flag or not, as a parser that
/// trusts the type would) down to `depth` levels; checks each attribute's bounds.
fn walk_attrs(buf: &[u8], depth: u32) -> usize {
    let mut n = 0;
    let mut last = None;
    for a in Attrs::new(buf) {
        let Ok(a) = a else { break };
        n += 1;
        // Offsets increase, by at least a header, aligned.
        if let Some(prev) = last {
            assert!(a.offset >= prev + NLA_HDRLEN);
        }
        assert_eq!(a.offset % 4, 0);
        last = Some(a.offset);
        assert!(a.offset + NLA_HDRLEN + a.payload.len() <= buf.len());
        assert!(within(buf, a.payload));
        assert_eq!(a.payload.as_ptr() as usize, buf.as_ptr() as usize + a.offset + NLA_HDRLEN);
        assert_eq!(a.kind, a.raw_type & 0x3fff);
        if depth > 0 {
            n += walk_attrs(a.payload, depth - 1);
            assert_eq!(a.nested().count(), Attrs::new(a.payload).count());
        }
    }
    n
}

fn check_message(datagram: &[u8], msg: &[u8]) {
    // The cttimeout parsers, on the payload as the daemon and the client hand it over.
    let payload = msg.get(HDRLEN..).unwrap_or(&[]);
    if let Some(attrs) = payload.get(Nfgenmsg::LEN..) {
        let _ = Nfgenmsg::parse(payload).expect("4 bytes make an nfgenmsg");
        walk_attrs(attrs, 3);
        if let Ok(r) = parse_request(attrs) {
            if let Some(name) = r.name {
                assert!(within(attrs, name) && name.len() < 32 && !name.contains(&0));
            }
            if let Some(data) = r.data {
                assert!(within(attrs, data));
                for l4 in [r.l4proto.unwrap_or(0), 6, 17, 1, 132, 255] {
                    if let Some(layout) = data_layout(l4) {
                        if let Ok(v) = parse_data(layout, data) {
                            assert!(v.iter().all(|&(id, _)| id >= 1 && id <= layout.parsed));
                        }
                    }
                }
            }
        }
        // Every layout on the raw attributes too, and the nested data of every attribute.
        for l4 in [6u8, 17, 1, 132] {
            let _ = parse_data(data_layout(l4).unwrap(), attrs);
        }
    }
    if let Some(r) = parse_reply(payload) {
        if let Some(name) = r.name {
            assert!(within(payload, name) && !name.contains(&0));
        }
        if let Some(d) = &r.data {
            if let Some(&(id, v)) = d.last() {
                assert_eq!(r.value(id), Some(v));
            }
        }
    } else {
        assert!(payload.len() < Nfgenmsg::LEN);
    }

    // The ctnetlink parsers (conntrack and expectation requests, tuples, filters, protocol
    // info), on the same attributes, as the handler calls them.
    if let Some(attrs) = payload.get(Nfgenmsg::LEN..) {
        let family = payload.first().copied().unwrap_or(0);
        let _ = ctnetlink::parse_exp(attrs);
        if let Ok(a) = ctnetlink::parse_ct(attrs) {
            let _ = ctnetlink::parse_filter(&a, family);
            for kind in [ctnetlink::attr::TUPLE_ORIG, ctnetlink::attr::TUPLE_REPLY, ctnetlink::attr::TUPLE_MASTER] {
                if let Some(nest) = a.get(kind) {
                    assert!(within(attrs, nest));
                    for flags in [0, u32::MAX] {
                        let _ = ctnetlink::parse_tuple(nest, family, flags);
                    }
                }
            }
            if let Some(nest) = a.get(ctnetlink::attr::PROTOINFO) {
                for proto in [6, 132, 17] {
                    let _ = ctnetlink::parse_protoinfo(nest, proto);
                }
            }
        }
    }

    // The private parsers, on the message alone and on the rest of the datagram from it.
    for b in [msg, datagram] {
        let _ = is_private(b);
        if let Some(p) = parse_hello(b) {
            assert_ne!(p, 0);
            assert_eq!(portid_attr(b), Some(p));
        }
        let _ = portid_attr(b);
        let _ = show_what(b);
        let _ = show_text(b);
        let _ = parse_error(b);
        let _ = parse_groups_request(b);
        let _ = parse_overrun(b);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut next = 0;
    for m in Messages::new(data) {
        let Ok(m) = m else { break };
        // A message starts where the previous one ended (aligned), and lies inside the datagram.
        assert_eq!(m.offset, next);
        let len = m.header.len as usize;
        assert_eq!(len, HDRLEN + m.payload.len());
        assert!(m.offset + len <= data.len());
        assert!(within(data, m.payload));
        assert_eq!(m.payload.as_ptr() as usize, data.as_ptr() as usize + m.offset + HDRLEN);
        assert_eq!(Header::parse(&data[m.offset..]), Ok(m.header));
        next = m.offset + align(len).min(data.len() - m.offset);
        check_message(&data[m.offset..], &data[m.offset..m.offset + len]);
    }
    // The parsers also meet datagrams no walk accepts.
    check_message(data, data);
    walk_attrs(data, 4);
});

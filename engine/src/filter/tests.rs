use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use proto::build::PacketBuilder;
use proto::packet::{parse_ip, tcp_flags, Packet};

use super::*;
use crate::conntrack::{Config, Conntrack};
use crate::timeouts::OnExisting;

const EXAMPLE: &str = r#"# comments
chain prerouting { policy accept; udp dport 9 notrack; }
chain forward {
  policy drop;
  ct state established,related accept
  ct state invalid counter drop
  iifname "veth-cli" ip saddr 198.18.0.0/15 tcp dport { 80, 443, 8000-8099 } ct timeout set "web" counter accept
  meta l4proto udp udp dport 53 ct timeout set "dns" accept
  ip6 daddr 2001:2::/48 icmpv6 type { echo-request, echo-reply } accept
  icmp type echo-request accept
  iifname "veth-srv" ct state new reject
}
chain input { policy accept; }
chain output { policy accept; }
"#;

fn setup() -> (Conntrack, Registry) {
    let ct = Conntrack::new(1024, Config::default());
    let r = Registry::new();
    r.create(&ct, "web", 2, 6, &[], OnExisting::Busy).unwrap();
    r.create(&ct, "dns", 2, 17, &[], OnExisting::Busy).unwrap();
    r.create(&ct, "gen", 2, 255, &[], OnExisting::Busy).unwrap();
    (ct, r)
}

fn rules(text: &str) -> RuleSet {
    let (_ct, r) = setup();
    match RuleSet::parse("t.nft", text, &r) {
        Ok(rs) => rs,
        Err(e) => panic!("{e}"),
    }
}

/// The first error of `text`: (line, column, kind).
fn first_error(text: &str) -> (u32, u32, ErrorKind) {
    let (_ct, r) = setup();
    match RuleSet::parse("t.nft", text, &r) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => {
            let d = e.errors()[0].clone();
            (d.line, d.column, d.kind)
        }
    }
}

fn v4(a: [u8; 4], b: [u8; 4]) -> PacketBuilder {
    PacketBuilder::v4(Ipv4Addr::from(a), Ipv4Addr::from(b))
}

fn v6(a: &str, b: &str) -> PacketBuilder {
    PacketBuilder::v6(a.parse::<Ipv6Addr>().unwrap(), b.parse::<Ipv6Addr>().unwrap())
}

fn pkt(buf: &[u8]) -> Packet {
    parse_ip(buf, 0).unwrap()
}

fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Packet {
    pkt(&v4(src, dst).tcp(sport, dport, 1, 0, tcp_flags::SYN, 65535, &[], b""))
}

fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Packet {
    pkt(&v4(src, dst).udp(sport, dport, b"x"))
}

const CLI: Meta<'static> = Meta { iif: "veth-cli", oif: "veth-srv" };
const SRV: Meta<'static> = Meta { iif: "veth-srv", oif: "veth-cli" };

fn verdict(rs: &RuleSet, hook: Hook, meta: &Meta<'_>, p: &Packet, ct: CtState) -> Verdict {
    rs.eval(hook, meta, p, ct).verdict
}

// ---- parsing ----

#[test]
fn the_example_parses() {
    let rs = rules(EXAMPLE);
    assert_eq!(rs.rule_count(Hook::Prerouting), 1);
    assert_eq!(rs.rule_count(Hook::Forward), 7);
    assert_eq!(rs.rule_count(Hook::Input), 0);
    assert_eq!(rs.policy(Hook::Forward), Verdict::Drop);
    assert_eq!(rs.policy(Hook::Input), Verdict::Accept);
    let names: Vec<_> = rs.policies().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web", "dns"]);
    let c = rs.counters();
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].hook, c[0].index, c[0].line), (Hook::Forward, 1, 6));
    assert_eq!(c[0].text, "ct state invalid counter drop");
    assert_eq!((c[1].index, c[1].line), (2, 7));
    assert!(c[1].text.starts_with("iifname \"veth-cli\"") && c[1].text.ends_with("counter accept"));
}

#[test]
fn empty_file_and_empty_rule_set_accept_everything() {
    let p = tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
    for rs in [rules(""), rules("# nothing\n\n;;\n"), RuleSet::empty()] {
        for h in Hook::ALL {
            let d = rs.eval(h, &CLI, &p, CtState::New);
            assert_eq!(d.verdict, Verdict::Accept);
            assert!(!d.notrack && d.timeout.is_none() && d.mark.is_none());
        }
    }
}

#[test]
fn every_construct_parses() {
    let text = r#"
flush ruleset
table inet fw {
  chain pre {
    type filter hook prerouting priority raw; policy accept
    meta nfproto ipv6 notrack
    iifname != { "lo", "veth*" } mark set 0x10
  }
  chain fwd {
    type filter hook forward priority filter - 10; policy drop;
    ip saddr != { 10.0.0.1, 10.1.0.0/16, 10.2.0.1-10.2.0.9 } \
       ip daddr 192.0.2.0/24 accept
    ip6 saddr { ::1, 2001:db8::/32,
                fe80::1-fe80::9 } ip6 daddr != ::2 drop
    ip protocol { tcp, 17 } counter packets 5 bytes 500 accept
    meta l4proto != { 6, 17 } meta mark set 7 accept
    th dport { ssh, http, https, 1000-1999 } accept
    tcp sport 1 tcp dport == 2 accept
    udp sport 3 accept; udplite dport 4 accept; sctp sport 5 accept
    icmp type { 0, 3-5, echo-request, time-exceeded } accept
    icmpv6 type { nd-neighbor-solicit, neighbour-advertisement, 130-132, packet-too-big } accept
    ct state != { invalid, untracked } ct state new,related,established accept
    oifname eth0 ct timeout set gen meta l4proto esp accept
    reject with tcp reset
    udp dport 1 reject with icmp type port-unreachable
    reject with icmpv6 type port-unreachable
    reject with icmpx type port-unreachable
    reject
  }
}
"#;
    let rs = rules(text);
    assert_eq!(rs.rule_count(Hook::Prerouting), 2);
    assert_eq!(rs.rule_count(Hook::Forward), 18);
    assert_eq!(rs.policy(Hook::Forward), Verdict::Drop);
    assert_eq!(rs.counters().len(), 1);
    assert_eq!(rs.counters()[0].packets, 0, "nft's counter values are not loaded");
}

#[test]
fn compiled_forms() {
    let rs = rules(
        "chain input { tcp dport { 443, 80, 81, 82-90, 100-200, 150 } ip saddr { 10.0.0.7/8, 10.0.0.1 } accept }",
    );
    let items = &rs.chains[Hook::Input as usize].rules[0].items;
    let Item::Test(Test::Port { set, protos, dst: true, neg: false }) = &items[0] else { panic!("{items:?}") };
    assert_eq!(*protos, ports::TCP);
    assert_eq!(&*set.0, &[(80, 90), (100, 200), (443, 443)]);
    let Item::Test(Test::Addr4 { set, .. }) = &items[1] else { panic!() };
    assert_eq!(&*set.0, &[(0x0a00_0000, 0x0aff_ffff)]);
    assert!(set.contains(0x0a12_3456) && !set.contains(0x0b00_0000) && !set.contains(0x09ff_ffff));
}

// ---- errors ----

#[test]
fn errors_have_exact_positions() {
    use ErrorKind as E;
    let cases: Vec<(&str, u32, u32, E)> = vec![
        ("chain input {\n  tcp dport 80 acept\n}", 2, 16, E::UnknownKeyword("acept".into())),
        ("chain input {\n  ip saddr 10.0.0.300 accept\n}", 2, 12, E::BadAddress("10.0.0.300".into())),
        ("chain input {\n  ip saddr ::1 accept\n}", 2, 12, E::BadAddress("::1".into())),
        ("chain input {\n  ip6 daddr 2001::/129 accept\n}", 2, 13, E::BadPrefix("2001::/129".into())),
        ("chain input { ip saddr 10.0.0.9-10.0.0.1 accept }", 1, 24, E::BadRange("10.0.0.9-10.0.0.1".into())),
        ("chain input {\n\n  tcp dport { 80, 65536 } accept\n}", 3, 19, E::PortOutOfRange("65536".into())),
        ("chain input { udp sport 9-70000 accept }", 1, 25, E::PortOutOfRange("70000".into())),
        ("chain input { udp sport 90-9 accept }", 1, 25, E::BadRange("90-9".into())),
        ("chain input { udp sport nope accept }", 1, 25, E::BadPort("nope".into())),
        ("chain forward {\n  ct timeout set \"nope\" accept\n}", 2, 18, E::UnknownPolicy("nope".into())),
        ("chain forward { tcp dport 1 udp sport 2 accept }", 1, 29, E::ProtocolConflict("udp sport".into())),
        ("chain forward { meta l4proto icmp tcp dport 1 }", 1, 35, E::ProtocolConflict("tcp dport".into())),
        ("chain forward { meta l4proto != tcp tcp dport 1 }", 1, 37, E::ProtocolConflict("tcp dport".into())),
        ("chain forward { ip saddr 1.2.3.4 ip6 daddr ::1 }", 1, 34, E::FamilyConflict("ip6 daddr".into())),
        ("chain forward { ip6 saddr ::1 icmp type 8 }", 1, 31, E::FamilyConflict("icmp type".into())),
        (
            "chain forward { meta nfproto ipv6 reject with icmp type port-unreachable }",
            1,
            47,
            E::FamilyConflict("reject with icmp".into()),
        ),
        (
            "chain forward { udp dport 1 reject with tcp reset }",
            1,
            41,
            E::ProtocolConflict("reject with tcp reset".into()),
        ),
        (
            "chain forward {\n  udp dport 53 ct timeout set \"web\" accept\n}",
            2,
            16,
            E::PolicyNeverApplies { policy: "web".into(), proto: "tcp" },
        ),
        (
            "chain forward { ct timeout set \"gen\" tcp dport 1 accept }",
            1,
            17,
            E::PolicyNeverApplies { policy: "gen".into(), proto: "the generic protocol (no tracker of its own)" },
        ),
        (
            "chain prerouting { ct state new drop }",
            1,
            20,
            E::NotInHook { what: "ct state", hook: Hook::Prerouting, why: "it runs before connection tracking" },
        ),
        (
            "chain prerouting {\n ct timeout set \"web\" }",
            2,
            2,
            E::NotInHook { what: "ct timeout set", hook: Hook::Prerouting, why: "it runs before connection tracking" },
        ),
        (
            "chain forward { udp dport 9 notrack }",
            1,
            29,
            E::NotInHook {
                what: "notrack",
                hook: Hook::Forward,
                why: "only prerouting runs before connection tracking",
            },
        ),
        (
            "chain input { oifname \"x\" drop }",
            1,
            15,
            E::NotInHook { what: "oifname", hook: Hook::Input, why: "the output interface is not known yet" },
        ),
        (
            "chain output { iifname \"x\" drop }",
            1,
            16,
            E::NotInHook { what: "iifname", hook: Hook::Output, why: "locally sent packets have no input interface" },
        ),
        ("chain input { accept counter }", 1, 22, E::AfterVerdict),
        ("chain input { counter counter accept }", 1, 23, E::DuplicateCounter),
        ("chain input { }\nchain input { }", 2, 7, E::DuplicateHook(Hook::Input)),
        ("chain x {\n  type filter hook input priority 0\n}\nchain input {}", 4, 7, E::DuplicateHook(Hook::Input)),
        ("chain inptu { accept }", 1, 7, E::UnknownHook("inptu".into())),
        (
            "chain input { policy reject; }",
            1,
            22,
            E::Expected { expected: "`accept` or `drop`", found: "`reject`".into() },
        ),
        ("chain input { policy drop; policy accept }", 1, 28, E::DuplicatePolicy),
        ("chain input { accept; type filter hook input priority 0 }", 1, 23, E::TypeAfterRules),
        ("chain input { iifname \"abc\n}", 1, 23, E::UnterminatedString),
        ("chain input { tcp dport 1 \\ accept }", 1, 27, E::BadChar('\\')),
        ("chain input { tcp dport 1 @ accept }", 1, 27, E::UnknownKeyword("@".into())),
        ("chain input { tcp dport 1 ! accept }", 1, 27, E::BadChar('!')),
        ("chain input {\n  tcp dport { 1, 2\n", 1, 13, E::Unclosed),
        ("chain input {\n  accept\n", 1, 13, E::Unclosed),
        ("chain input { tcp dport { } accept }", 1, 25, E::EmptySet),
        ("chain input { icmp type echo-requests accept }", 1, 25, E::UnknownIcmpType("echo-requests".into())),
        ("chain input { icmpv6 type 256 accept }", 1, 27, E::UnknownIcmpType("256".into())),
        ("chain input { meta l4proto tcpp accept }", 1, 28, E::UnknownProtocol("tcpp".into())),
        ("chain input { ct state new,establised accept }", 1, 28, E::UnknownState("establised".into())),
        ("chain input { meta nfproto ipv5 }", 1, 28, E::UnknownFamily("ipv5".into())),
        ("chain input { iifname \"a-very-long-name0\" }", 1, 23, E::InterfaceNameTooLong("a-very-long-name0".into())),
        ("chain input { mark set 4294967296 }", 1, 24, E::BadNumber("4294967296".into())),
        ("table ip t { }", 1, 7, E::UnsupportedFamily("ip".into())),
        ("table inet t { table inet u { } }", 1, 16, E::NestedTable),
        ("chian input { }", 1, 1, E::UnknownKeyword("chian".into())),
        ("# c\nchain input { # c\n tcp dport 1 \\\n   bogus # c\n}", 4, 4, E::UnknownKeyword("bogus".into())),
        ("chain input { iifname \"é*\" tcp dport 1 drop; ∂ }", 1, 46, E::UnknownKeyword("∂".into())),
        ("flush ruleset now\n", 1, 15, E::Expected { expected: "end of statement", found: "`now`".into() }),
        ("chain input { tcp port 1 }", 1, 19, E::UnknownKeyword("port".into())),
        ("chain input { ct timeout \"web\" }", 1, 26, E::Expected { expected: "`set`", found: "\"web\"".into() }),
        ("chain input { \"x\" }", 1, 15, E::Expected { expected: "a match or statement", found: "\"x\"".into() }),
        ("chain input { tcp dport }", 1, 25, E::Expected { expected: "a port", found: "`}`".into() }),
    ];
    for (text, line, col, kind) in cases {
        assert_eq!(first_error(text), (line, col, kind), "{text}");
    }
}

#[test]
fn several_errors_are_reported_in_order_with_the_file_name() {
    let (_ct, r) = setup();
    let text = "chain input {\n  tcp dport 99999 accept\n  ip saddr 1.2.3 drop\n  accept\n}\nchain bogus { }\n";
    let e = RuleSet::parse("rules.nft", text, &r).unwrap_err();
    let msg = e.to_string();
    let lines: Vec<_> = msg.lines().collect();
    assert_eq!(
        lines,
        [
            "rules.nft:2:13: port `99999` out of range (0-65535)",
            "rules.nft:3:12: bad address `1.2.3`",
            "rules.nft:6:7: chain `bogus` is not a hook (prerouting, input, forward, output) and has no `type filter hook …`",
        ]
    );
}

#[test]
fn an_unclosed_set_and_its_chain_are_both_reported() {
    let (_ct, r) = setup();
    let e = RuleSet::parse("t", "chain input {\n  tcp dport { 1, 2\n", &r).unwrap_err();
    let at: Vec<_> = e.errors().iter().map(|d| (d.line, d.column, d.kind.clone())).collect();
    assert_eq!(at, [(1, 13, ErrorKind::Unclosed), (2, 13, ErrorKind::Unclosed)]);
}

#[test]
fn reporting_stops_after_many_errors() {
    let (_ct, r) = setup();
    let text = "chain input {\n".to_owned() + &"  bogus\n".repeat(100) + "}\n";
    let e = RuleSet::parse("t", &text, &r).unwrap_err();
    assert_eq!(e.errors().len(), 21);
    assert_eq!(e.errors().last().unwrap().kind, ErrorKind::TooManyErrors);
}

#[test]
fn load_reads_a_file_and_reports_io_errors() {
    let (_ct, r) = setup();
    let dir = std::env::temp_dir().join(format!("ferrowall-filter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rules.nft");
    std::fs::write(&path, EXAMPLE).unwrap();
    let rs = RuleSet::load(&path, &r).unwrap();
    assert_eq!(rs.rule_count(Hook::Forward), 7);
    std::fs::write(&path, "chain input { bogus }").unwrap();
    let e = RuleSet::load(&path, &r).unwrap_err();
    assert_eq!(e.to_string(), format!("{}:1:15: unknown keyword `bogus`", path.display()));
    let missing = dir.join("missing.nft");
    let e = RuleSet::load(&missing, &r).unwrap_err();
    assert!(matches!(e, RuleError::Read { .. }) && e.errors().is_empty());
    assert!(e.to_string().starts_with(&format!("{}: cannot read:", missing.display())));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- policy use counts ----

#[test]
fn each_rule_naming_a_policy_holds_one_use() {
    let (_ct, r) = setup();
    let text = r#"chain forward {
        tcp dport 80 ct timeout set "web" accept
        tcp dport 81 ct timeout set "web" ct timeout set "web" accept
        udp dport 53 ct timeout set "dns"
    }"#;
    let rs = RuleSet::parse("t", text, &r).unwrap();
    assert_eq!(r.find("web").unwrap().uses(), 3);
    assert_eq!(r.find("dns").unwrap().uses(), 2);
    assert_eq!(rs.policies().count(), 2);
    drop(rs);
    assert_eq!(r.find("web").unwrap().uses(), 1);
    assert_eq!(r.find("dns").unwrap().uses(), 1);
}

#[test]
fn a_refused_file_releases_the_policies_it_acquired() {
    let (_ct, r) = setup();
    let text = "chain forward {\n tcp dport 80 ct timeout set \"web\" accept\n bogus\n}\n\
                chain input { udp dport 1 ct timeout set \"web\" }";
    assert!(RuleSet::parse("t", text, &r).is_err());
    assert_eq!(r.find("web").unwrap().uses(), 1);
}

#[test]
fn a_rule_set_in_use_blocks_policy_delete() {
    let (ct, r) = setup();
    let rs = rules_with(&r, "chain forward { ct timeout set \"dns\" }");
    assert_eq!(r.delete(&ct, "dns"), Err(proto::Errno::EBUSY));
    drop(rs);
    r.delete(&ct, "dns").unwrap();
}

fn rules_with(r: &Registry, text: &str) -> RuleSet {
    RuleSet::parse("t", text, r).unwrap()
}

// ---- evaluation ----

#[test]
fn the_example_forwards_as_intended() {
    let rs = rules(EXAMPLE);
    let f = Hook::Forward;
    let web = tcp4([198, 19, 1, 1], [10, 0, 0, 1], 40000, 443);
    let d = rs.eval(f, &CLI, &web, CtState::New);
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.timeout.as_ref().map(|p| p.name.as_str()), Some("web"));
    // Outside the source prefix, the wrong port, the wrong interface: policy drop.
    assert_eq!(verdict(&rs, f, &CLI, &tcp4([198, 20, 0, 1], [10, 0, 0, 1], 1, 443), CtState::New), Verdict::Drop);
    assert_eq!(verdict(&rs, f, &CLI, &tcp4([198, 18, 0, 1], [10, 0, 0, 1], 1, 444), CtState::New), Verdict::Drop);
    assert_eq!(verdict(&rs, f, &CLI, &tcp4([198, 18, 0, 1], [10, 0, 0, 1], 1, 8050), CtState::New), Verdict::Accept);
    let other = Meta { iif: "eth0", oif: "veth-srv" };
    assert_eq!(verdict(&rs, f, &other, &web, CtState::New), Verdict::Drop);
    // Established and related pass whatever they are; invalid is dropped and counted.
    assert_eq!(verdict(&rs, f, &other, &web, CtState::Established), Verdict::Accept);
    assert_eq!(verdict(&rs, f, &other, &web, CtState::Related), Verdict::Accept);
    let d = rs.eval(f, &CLI, &web, CtState::Invalid);
    assert_eq!(d.verdict, Verdict::Drop);
    assert!(d.timeout.is_none());
    // DNS over UDP gets its policy; UDP to another port does not match and is dropped.
    let dns = udp4([10, 0, 0, 2], [10, 0, 0, 1], 5353, 53);
    let d = rs.eval(f, &SRV, &dns, CtState::New);
    assert_eq!((d.verdict, d.timeout.map(|p| p.name.clone())), (Verdict::Accept, Some("dns".to_owned())));
    // From veth-srv, new connections are rejected: TCP with a reset, UDP with ICMP.
    let back = tcp4([10, 0, 0, 1], [198, 18, 0, 1], 443, 40000);
    assert_eq!(verdict(&rs, f, &SRV, &back, CtState::New), Verdict::Reject(Reject::TcpReset));
    let udp = udp4([10, 0, 0, 1], [198, 18, 0, 1], 1, 2);
    assert_eq!(verdict(&rs, f, &SRV, &udp, CtState::New), Verdict::Reject(Reject::IcmpPortUnreachable));
    let udp6 = pkt(&v6("2001:1::1", "2001:3::1").udp(1, 2, b""));
    assert_eq!(verdict(&rs, f, &SRV, &udp6, CtState::New), Verdict::Reject(Reject::Icmpv6PortUnreachable));
    // ICMP: echo requests pass; IPv6 echo only towards 2001:2::/48.
    let echo = pkt(&v4([1, 1, 1, 1], [2, 2, 2, 2]).icmp(8, 0, 0x0001_0001, b""));
    assert_eq!(verdict(&rs, f, &CLI, &echo, CtState::New), Verdict::Accept);
    let reply = pkt(&v4([1, 1, 1, 1], [2, 2, 2, 2]).icmp(0, 0, 0x0001_0001, b""));
    assert_eq!(verdict(&rs, f, &CLI, &reply, CtState::New), Verdict::Drop);
    let echo6 = pkt(&v6("2001:1::1", "2001:2:0:5::1").icmp(128, 0, 0x0001_0001, b""));
    assert_eq!(verdict(&rs, f, &CLI, &echo6, CtState::New), Verdict::Accept);
    let echo6_far = pkt(&v6("2001:1::1", "2001:3::1").icmp(128, 0, 0x0001_0001, b""));
    assert_eq!(verdict(&rs, f, &CLI, &echo6_far, CtState::New), Verdict::Drop);
    let ns = pkt(&v6("2001:1::1", "2001:2::1").icmp(135, 0, 0, &[0; 16]));
    assert_eq!(verdict(&rs, f, &CLI, &ns, CtState::New), Verdict::Drop);

    // Counters: the invalid-drop rule saw one packet, the web rule two (443 and 8050).
    let c = rs.counters();
    assert_eq!((c[0].packets, c[0].bytes), (1, web.ip_len() as u64));
    assert_eq!((c[1].packets, c[1].bytes), (2, 2 * 40));

    // Prerouting: UDP to the discard port is not tracked; other hooks accept.
    let discard = udp4([1, 1, 1, 1], [2, 2, 2, 2], 1000, 9);
    let pre = Meta { iif: "veth-cli", oif: "" };
    let d = rs.eval(Hook::Prerouting, &pre, &discard, CtState::Untracked);
    assert!(d.notrack && d.verdict == Verdict::Accept);
    assert!(!rs.eval(Hook::Prerouting, &pre, &dns, CtState::Untracked).notrack);
    assert_eq!(verdict(&rs, Hook::Input, &pre, &udp, CtState::Invalid), Verdict::Accept);
}

#[test]
fn protocol_matches_imply_their_protocol() {
    let rs = rules(
        "chain input { policy drop\n tcp dport != 22 accept\n th sport 7 accept\n ip protocol udp accept\n meta l4proto sctp accept }",
    );
    let i = Hook::Input;
    assert_eq!(verdict(&rs, i, &CLI, &tcp4([1; 4], [2; 4], 1, 80), CtState::New), Verdict::Accept);
    assert_eq!(verdict(&rs, i, &CLI, &tcp4([1; 4], [2; 4], 1, 22), CtState::New), Verdict::Drop);
    // `tcp dport != 22` does not match UDP, `th sport 7` does, `ip protocol udp` only over IPv4.
    let udp6 = pkt(&v6("::1", "::2").udp(1, 22, b""));
    assert_eq!(verdict(&rs, i, &CLI, &udp6, CtState::New), Verdict::Drop);
    let udp6_7 = pkt(&v6("::1", "::2").udp(7, 22, b""));
    assert_eq!(verdict(&rs, i, &CLI, &udp6_7, CtState::New), Verdict::Accept);
    assert_eq!(verdict(&rs, i, &CLI, &udp4([1; 4], [2; 4], 1, 22), CtState::New), Verdict::Accept);
    let sctp = pkt(&v6("::1", "::2").sctp(1, 2, 0, &[]));
    assert_eq!(verdict(&rs, i, &CLI, &sctp, CtState::New), Verdict::Accept);
    // `udp dport` does not match UDP-Lite; `udplite dport` does.
    let rs = rules("chain input { policy drop; udp dport 5 accept }");
    let lite = pkt(&v4([1; 4], [2; 4]).udplite(1, 5, 0, b""));
    assert_eq!(verdict(&rs, i, &CLI, &lite, CtState::New), Verdict::Drop);
    let rs = rules("chain input { policy drop; udplite dport 5 accept }");
    assert_eq!(verdict(&rs, i, &CLI, &lite, CtState::New), Verdict::Accept);
    // `ip saddr != …` does not match IPv6.
    let rs = rules("chain input { policy drop; ip saddr != 10.0.0.0/8 accept }");
    assert_eq!(verdict(&rs, i, &CLI, &udp6, CtState::New), Verdict::Drop);
    assert_eq!(verdict(&rs, i, &CLI, &udp4([11, 0, 0, 1], [2; 4], 1, 2), CtState::New), Verdict::Accept);
    assert_eq!(verdict(&rs, i, &CLI, &udp4([10, 9, 0, 1], [2; 4], 1, 2), CtState::New), Verdict::Drop);
}

#[test]
fn interfaces_addresses_and_sets() {
    let rs = rules(
        r#"chain forward { policy drop
        iifname "veth*" oifname != { "eth0", "eth1" } accept
        iifname lo accept
        ip6 saddr { 2001:db8::/32, ::1-::9 } ip6 daddr != fe80::/10 accept
        ip daddr 192.0.2.1-192.0.2.3 accept
    }"#,
    );
    let f = Hook::Forward;
    let p = udp4([1; 4], [2; 4], 1, 2);
    let m = |iif, oif| Meta { iif, oif };
    assert_eq!(verdict(&rs, f, &m("veth0", "eth2"), &p, CtState::New), Verdict::Accept);
    assert_eq!(verdict(&rs, f, &m("veth", "eth2"), &p, CtState::New), Verdict::Accept);
    assert_eq!(verdict(&rs, f, &m("veth0", "eth1"), &p, CtState::New), Verdict::Drop);
    assert_eq!(verdict(&rs, f, &m("lo", "x"), &p, CtState::New), Verdict::Accept);
    assert_eq!(verdict(&rs, f, &m("lo0", "x"), &p, CtState::New), Verdict::Drop);
    let none = m("x", "y");
    let six = |s: &str, d: &str| pkt(&v6(s, d).udp(1, 2, b""));
    assert_eq!(verdict(&rs, f, &none, &six("2001:db8:1::1", "2001::1"), CtState::New), Verdict::Accept);
    assert_eq!(verdict(&rs, f, &none, &six("2001:db8:1::1", "fe80::1"), CtState::New), Verdict::Drop);
    assert_eq!(verdict(&rs, f, &none, &six("::9", "::1"), CtState::New), Verdict::Accept);
    assert_eq!(verdict(&rs, f, &none, &six("::a", "::1"), CtState::New), Verdict::Drop);
    for (last, v) in [(0, Verdict::Drop), (1, Verdict::Accept), (3, Verdict::Accept), (4, Verdict::Drop)] {
        assert_eq!(verdict(&rs, f, &none, &udp4([1; 4], [192, 0, 2, last], 1, 2), CtState::New), v, "{last}");
    }
}

#[test]
fn statements_run_in_order_and_rules_fall_through() {
    let rs = rules(
        r#"chain forward {
        counter mark set 1 tcp dport 80 mark set 2
        udp dport 53 ct timeout set "dns"
        ct state new,untracked mark set 0xff counter
        ct state != new drop
    }
    chain prerouting { meta l4proto udp notrack; ip saddr 10.0.0.0/8 notrack drop; }"#,
    );
    let f = Hook::Forward;
    let http = tcp4([1; 4], [2; 4], 1, 80);
    let d = rs.eval(f, &CLI, &http, CtState::Established);
    assert_eq!((d.verdict, d.mark), (Verdict::Drop, Some(2)));
    let d = rs.eval(f, &CLI, &udp4([1; 4], [2; 4], 1, 53), CtState::New);
    assert_eq!((d.verdict, d.mark), (Verdict::Accept, Some(0xff)));
    assert_eq!(d.timeout.unwrap().name, "dns");
    let c = rs.counters();
    // The first rule's counter runs before its match, so it counts every packet.
    assert_eq!((c[0].index, c[0].packets), (0, 2));
    assert_eq!((c[1].index, c[1].packets), (2, 1));
    let pre = Meta { iif: "a", oif: "" };
    let d = rs.eval(Hook::Prerouting, &pre, &udp4([10, 0, 0, 1], [2; 4], 1, 2), CtState::Untracked);
    assert!(d.notrack && d.verdict == Verdict::Drop);
    let d = rs.eval(Hook::Prerouting, &pre, &udp4([11, 0, 0, 1], [2; 4], 1, 2), CtState::Untracked);
    assert!(d.notrack && d.verdict == Verdict::Accept);
}

#[test]
fn reject_kinds() {
    let rs = rules(
        "chain input {\n udp dport 1 reject with icmpx type port-unreachable\n udp dport 2 reject with icmp type port-unreachable\n \
         tcp dport 3 reject with icmpx type port-unreachable\n reject with tcp reset\n meta l4proto icmp reject\n}",
    );
    let i = Hook::Input;
    let u = |d| udp4([1; 4], [2; 4], 1, d);
    assert_eq!(verdict(&rs, i, &CLI, &u(1), CtState::New), Verdict::Reject(Reject::IcmpPortUnreachable));
    let u6 = pkt(&v6("::1", "::2").udp(1, 1, b""));
    assert_eq!(verdict(&rs, i, &CLI, &u6, CtState::New), Verdict::Reject(Reject::Icmpv6PortUnreachable));
    assert_eq!(verdict(&rs, i, &CLI, &u(2), CtState::New), Verdict::Reject(Reject::IcmpPortUnreachable));
    let u6_2 = pkt(&v6("::1", "::2").udp(1, 2, b""));
    assert_eq!(verdict(&rs, i, &CLI, &u6_2, CtState::New), Verdict::Accept);
    let t = tcp4([1; 4], [2; 4], 1, 3);
    assert_eq!(verdict(&rs, i, &CLI, &t, CtState::New), Verdict::Reject(Reject::IcmpPortUnreachable));
    let t = tcp4([1; 4], [2; 4], 1, 4);
    assert_eq!(verdict(&rs, i, &CLI, &t, CtState::New), Verdict::Reject(Reject::TcpReset));
    assert_eq!(verdict(&rs, i, &CLI, &u(5), CtState::New), Verdict::Accept);
    let ping = pkt(&v4([1; 4], [2; 4]).icmp(8, 0, 0, b""));
    assert_eq!(verdict(&rs, i, &CLI, &ping, CtState::New), Verdict::Reject(Reject::IcmpPortUnreachable));
}

#[test]
fn icmp_types_by_name_number_and_range() {
    let rs = rules(
        "chain input { policy drop\n icmp type { 3-5, 13 } accept\n icmpv6 type != { echo-request, 1-4 } accept }",
    );
    let i = Hook::Input;
    let icmp4 = |t| pkt(&v4([1; 4], [2; 4]).icmp(t, 0, 0, b""));
    let icmp6 = |t| pkt(&v6("::1", "::2").icmp(t, 0, 0, b""));
    for (t, v) in [(3, Verdict::Accept), (5, Verdict::Accept), (13, Verdict::Accept), (8, Verdict::Drop)] {
        assert_eq!(verdict(&rs, i, &CLI, &icmp4(t), CtState::New), v, "icmp {t}");
    }
    for (t, v) in [(128, Verdict::Drop), (2, Verdict::Drop), (129, Verdict::Accept), (135, Verdict::Accept)] {
        assert_eq!(verdict(&rs, i, &CLI, &icmp6(t), CtState::New), v, "icmpv6 {t}");
    }
}

#[test]
fn ct_states() {
    let rs =
        rules("chain output { policy drop; ct state { untracked, related } accept; ct state != new,invalid accept }");
    let o = Hook::Output;
    let p = udp4([1; 4], [2; 4], 1, 2);
    for (s, v) in [
        (CtState::New, Verdict::Drop),
        (CtState::Invalid, Verdict::Drop),
        (CtState::Established, Verdict::Accept),
        (CtState::Related, Verdict::Accept),
        (CtState::Untracked, Verdict::Accept),
    ] {
        assert_eq!(verdict(&rs, o, &CLI, &p, s), v, "{s:?}");
    }
}

#[test]
fn a_timeout_policy_reaches_the_new_connection() {
    use crate::clock::Timestamp;
    let (ct, r) = setup();
    r.create(&ct, "short", 2, 17, &[(1, 7)], OnExisting::Busy).unwrap();
    let rs = rules_with(&r, "chain forward { udp dport 53 ct timeout set \"short\" accept }");
    let buf = v4([1; 4], [2; 4]).udp(1000, 53, b"q");
    let p = pkt(&buf);
    let now = Timestamp::from_secs(100);
    let mut stats = crate::conntrack::Stats::default();
    let mut t = ct.track(now, &buf, &p, &mut stats);
    let d = rs.eval(Hook::Forward, &CLI, &p, t.state);
    let policy = d.timeout.unwrap();
    assert!(t.set_policy(now, &policy));
    ct.confirm(&mut t, &mut stats).unwrap();
    assert_eq!(r.find("short").unwrap().uses(), 2);
}

// ---- robustness ----

const VOCABULARY: &[&str] = &[
    "chain",
    "table",
    "inet",
    "input",
    "forward",
    "prerouting",
    "output",
    "type",
    "filter",
    "hook",
    "priority",
    "policy",
    "accept",
    "drop",
    "reject",
    "with",
    "tcp",
    "reset",
    "icmpx",
    "port-unreachable",
    "udp",
    "udplite",
    "sctp",
    "th",
    "sport",
    "dport",
    "ip",
    "ip6",
    "saddr",
    "daddr",
    "protocol",
    "meta",
    "l4proto",
    "nfproto",
    "mark",
    "set",
    "icmp",
    "icmpv6",
    "ct",
    "state",
    "timeout",
    "new",
    "established",
    "counter",
    "packets",
    "bytes",
    "notrack",
    "iifname",
    "oifname",
    "\"web\"",
    "\"dns\"",
    "\"veth*\"",
    "10.0.0.0/8",
    "::1",
    "1-2",
    "80",
    "65536",
    "echo-request",
    "{",
    "}",
    ",",
    ";",
    "\n",
    "==",
    "!=",
    "!",
    "=",
    "#",
    "\"",
    "\\",
    "\\\n",
    "0x",
    "é",
    "*",
    "/",
];

proptest! {
    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        let (_ct, r) = setup();
        let _ = RuleSet::parse("p", &text, &r);
        prop_assert_eq!(r.find("web").unwrap().uses(), 1);
    }

    #[test]
    fn random_token_soup_never_panics(words in prop::collection::vec(prop::sample::select(VOCABULARY), 0..60)) {
        let (_ct, r) = setup();
        let text = words.join(" ");
        match RuleSet::parse("p", &text, &r) {
            Ok(rs) => {
                let p = tcp4([1; 4], [2; 4], 1, 80);
                for h in Hook::ALL {
                    let _ = rs.eval(h, &CLI, &p, CtState::New);
                }
            }
            Err(e) => {
                prop_assert!(!e.errors().is_empty());
                prop_assert!(e.errors()[0].line >= 1 && e.errors()[0].column >= 1);
                prop_assert!(e.to_string().starts_with("p:"));
            }
        }
    }
}

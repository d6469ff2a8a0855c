//! Bridge mode over AF_PACKET, end to end: a client and a server namespace on one subnet, joined
//! by ferrowall as an L2 bridge in a third namespace (whose own kernel has no addresses and no
//! IPv6), real traffic from real tools, and a rule set that lets the client side open connections
//! and the server side only answer.

use ferrowall_tests::daemon::Daemon;
use ferrowall_tests::testbed_ns::{addresses, ferroctl, field, ip, Testbed, C, S};

/// Three namespaces joined by two veth pairs, the bridge's ends in the middle one.
fn testbed() -> Testbed {
    let tb = Testbed::namespaces("fwb-", "b");
    // The bridge namespace's own stack stays out of the way: no addresses, no IPv6 (so it
    // sends no router solicitations or DAD probes of its own), no forwarding.
    let out = tb.sysctl(
        &tb.m,
        &["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.ip_forward=0"],
    );
    assert_eq!(out.code, Some(0), "{out}");
    tb.veths("b-cli", "b-srv");
    addresses(&tb.c, C, "198.18.2.2/24", "2001:2:0:3::2/64");
    addresses(&tb.s, S, "198.18.2.3/24", "2001:2:0:3::3/64");
    for (ns, dev) in [(&tb.c, C), (&tb.s, S), (&tb.m, "b-cli"), (&tb.m, "b-srv")] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
        // No GSO/TSO super-frames or partial checksums from the endpoints, no GRO on the
        // bridge's ports: every frame at most one MTU (tests/tests/gso.rs has them on).
        let out = tb.offloads_off(ns, dev);
        assert_eq!(out.code, Some(0), "ethtool on {dev}: {out}");
    }
    tb
}

const CONFIG: &str = "mode = bridge
interface = b-cli
interface = b-srv
timeout = short inet udp unreplied 5 replied 9
rules = fw.rules
workers = 2
";

/// The client side may open connections, the server side only answer. 198.18.2.99 is nobody:
/// the client is told it lives at the server's MAC, and ferrowall rejects what is sent to it.
const RULES: &str = r#"chain forward {
  policy drop
  ct state established,related accept
  ct state invalid drop
  icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
  iifname "b-srv" ct state new drop
  ip daddr 198.18.2.99 reject
  udp dport 7777 ct timeout set "short" accept
  iifname "b-cli" accept
}
"#;

#[test]
fn bridge_mode_learns_forwards_and_filters() {
    let mut tb = testbed();
    let d = Daemon::start_in(Some(&tb.m), "ferrowall-bridge-", Some(CONFIG), &[("fw.rules", RULES)]);
    let (c, s) = (tb.c.clone(), tb.s.clone());

    // ICMP echo across the bridge, IPv4 (ARP passes unfiltered) and IPv6 (NDP is accepted by
    // the rules).
    // Then 3000-byte echoes, which travel as fragments: tracked and filtered whole, sent on as
    // fragments again.
    for size in ["56", "3000"] {
        for target in ["198.18.2.3", "2001:2:0:3::3"] {
            let out = tb.exec(&c, &["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", size, target]);
            assert!(out.stdout.contains("3 received"), "ping -s {size} {target}: {out}\n{}", d.log());
        }
    }

    // A 10 MB HTTP download over IPv4 and IPv6, checksummed.
    let urls = ["http://198.18.2.3:8080/blob", "http://[2001:2:0:3::3]:8080/blob"];
    let want = tb.serve_and_download(&c, &s, &d, 10, &urls, "20");

    // iperf3 across the bridge, TCP then UDP; a transfer that survives reloads.
    tb.iperf3_tcp_udp(&c, &s, "198.18.2.3", 5201);
    // The real nfct, through the shim, changes the defaults of live traffic.
    tb.nfct_default_set_on_live_flow(&c, &d, "198.18.2.3", 7778);
    tb.download_during_reloads(&c, &d, "http://198.18.2.3:8080/blob", &want);

    // UDP to a closed port of the server: its port unreachable crosses back as RELATED.
    let closed = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(3)\ns.connect(('198.18.2.3',9999)); s.send(b'x')\ntry:\n  s.recv(10); print('answered')\nexcept ConnectionRefusedError: print('refused')\nexcept OSError as e: print('error', e)\n";
    let out = tb.exec(&c, &["python3", "-c", closed]);
    assert_eq!(out.stdout.trim(), "refused", "the server's port unreachable: {out}");

    // A new connection from the server side is dropped (nothing answers: no RST from the
    // client), while the replies above passed.
    let dial = |to: &str| {
        format!("import socket\ntry:\n  socket.create_connection(('{to}',2222),timeout=1.5); print('connected')\nexcept ConnectionRefusedError: print('refused')\nexcept OSError: print('timeout')\n")
    };
    let out = tb.exec(&s, &["python3", "-c", &dial("198.18.2.2")]);
    assert_eq!(out.stdout.trim(), "timeout", "{out}");
    let out = tb.exec(&s, &["python3", "-c", &dial("2001:2:0:3::2")]);
    assert_eq!(out.stdout.trim(), "timeout", "{out}");
    // The same from the client side reaches the server, whose kernel answers with a RST.
    let out = tb.exec(&c, &["python3", "-c", &dial("198.18.2.3")]);
    assert_eq!(out.stdout.trim(), "refused", "{out}");

    // `reject`: ferrowall answers for 198.18.2.99 (at the server's MAC, but not the server's
    // address, so the server would stay silent) out of the ingress port: a TCP RST, and for UDP a
    // port unreachable from 198.18.2.99.
    let mac = tb.exec(&s, &["cat", &format!("/sys/class/net/{S}/address")]).stdout.trim().to_owned();
    ip(&["-n", &c, "neigh", "replace", "198.18.2.99", "lladdr", &mac, "dev", C, "nud", "permanent"]);
    let out = tb.exec(&c, &["python3", "-c", &dial("198.18.2.99")]);
    assert_eq!(out.stdout.trim(), "refused", "TCP reset from the bridge: {out}\n{}", d.log());
    let probe = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\ns.connect(('198.18.2.99',9999)); s.send(b'x')\ntry:\n  s.recv(10); print('answered')\nexcept ConnectionRefusedError: print('refused')\nexcept OSError as e: print('error', e)\n";
    let out = tb.exec(&c, &["python3", "-c", probe]);
    assert_eq!(out.stdout.trim(), "refused", "port unreachable from the bridge: {out}");

    // `ct timeout set` applies to bridged flows.
    let code = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.sendto(b'x',('198.18.2.3',7777))\n";
    let out = tb.exec(&c, &["python3", "-c", code]);
    assert_eq!(out.code, Some(0), "{out}");

    // Reloads (through the socket, and by SIGHUP, which any thread may catch) keep the bridge
    // running.
    ferroctl(&d, "reload");
    d.signal("HUP");
    let out = tb.exec(&c, &["ping", "-c", "1", "-W", "2", "198.18.2.3"]);
    assert!(out.stdout.contains("1 received"), "{out}\n{}", d.log());

    // The table shows the bridged flows: the downloads (v4 and v6), the echo, the UDP flow with
    // its short policy.
    let table = ferroctl(&d, "conntrack").stdout;
    let line = |pred: &dyn Fn(&str) -> bool| table.lines().find(|l| pred(l)).map(str::to_owned);
    let tcp4 =
        line(&|l| l.starts_with("tcp ") && l.contains("src=198.18.2.2 dst=198.18.2.3") && l.contains("dport=8080"));
    assert!(tcp4.is_some_and(|l| l.contains("[ASSURED]")), "the IPv4 download is tracked:\n{table}");
    let tcp6 = line(&|l| l.starts_with("tcp ") && l.contains("src=2001:2:0:3::2 dst=2001:2:0:3::3"));
    assert!(tcp6.is_some(), "the IPv6 download is tracked:\n{table}");
    assert!(line(&|l| l.starts_with("icmp ") && l.contains("src=198.18.2.2 dst=198.18.2.3")).is_some(), "{table}");
    let udp = line(&|l| l.starts_with("udp ") && l.contains(" dport=7777 ")).expect("the UDP flow is tracked");
    let left: u64 = udp.split_whitespace().nth(2).and_then(|w| w.parse().ok()).unwrap_or(99);
    assert!(left <= 5, "policy 'short' (unreplied 5 s): {udp}");
    // Nothing the server side tried to open got in.
    assert!(!table.contains("dport=2222 src=198.18.2.2"), "{table}");

    // The counters saw the traffic.
    let stats = ferroctl(&d, "stats").stdout;
    assert!(field(&stats, "forwarded") > 7_000, "{stats}");
    assert!(field(&stats, "dropped") >= 4, "the blocked SYNs and rejected packets: {stats}");
    for iface in ["b-cli", "b-srv"] {
        let l = stats.lines().find(|l| l.starts_with(&format!("interface {iface}:"))).unwrap_or_default();
        assert!(field(l, "rx_packets") > 1000 && field(l, "tx_packets") > 1000, "counters of {iface}: {stats}");
    }
    drop(d);
}

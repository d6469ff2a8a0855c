//! Router mode over AF_PACKET, end to end: a client and a server namespace with ferrowall as the
//! router between them (in a third namespace whose own kernel stack has no addresses), real
//! traffic from real tools, the rule set enforcing a one-way policy. Its workers busy-poll
//! (`busy_poll = 50`), so that path carries the same traffic as the sleeping one of other tests.

use std::process::Command;

use ferrowall_tests::daemon::{run, Daemon};
use ferrowall_tests::testbed_ns::{ferroctl, field, udp_timeout, Testbed, LIMIT};

const CONFIG: &str = "interface = r-cli 198.18.1.1/24 2001:2:0:1::1/64
interface = r-srv 198.19.1.1/24 2001:2:0:2::1/64
timeout = short inet udp unreplied 5 replied 9
rules = fw.rules
workers = 2
busy_poll = 50
";

const RULES: &str = r#"chain forward {
  policy drop
  ct state established,related accept
  ct state invalid drop
  iifname "r-srv" ct state new drop
  udp dport 7777 ct timeout set "short" accept
  iifname "r-cli" accept
}
"#;

#[test]
fn router_mode_forwards_filters_and_answers() {
    let mut tb = Testbed::router("fwr-");
    let d = Daemon::start_in(Some(&tb.m), "ferrowall-router-", Some(CONFIG), &[("fw.rules", RULES)]);
    let (c, s) = (tb.c.clone(), tb.s.clone());

    // ICMP echo through the router and to it, IPv4 and IPv6 (NDP resolves the next hops).
    for (target, v6) in [("198.19.1.2", false), ("198.18.1.1", false), ("2001:2:0:2::2", true)] {
        let mut args = vec!["ping", "-c", "3", "-i", "0.2", "-W", "2"];
        if v6 {
            args.push("-6");
        }
        args.push(target);
        let out = tb.exec(&c, &args);
        assert!(out.stdout.contains("3 received"), "ping {target}: {out}\n{}", d.log());
    }

    // TTL 1: ferrowall answers with time exceeded from its address facing the client.
    let out = tb.exec(&c, &["ping", "-c", "1", "-t", "1", "-W", "2", "198.19.1.2"]);
    assert!(out.stdout.contains("From 198.18.1.1") && out.stdout.contains("Time to live exceeded"), "{out}");

    // A 10 MB HTTP download over IPv4 and IPv6, checksummed.
    let urls = ["http://198.19.1.2:8080/blob", "http://[2001:2:0:2::2]:8080/blob"];
    let want = tb.serve_and_download(&c, &s, &d, 10, &urls, "20");

    // iperf3, TCP then UDP, 3 s each.
    tb.iperf3_tcp_udp(&c, &s, "198.19.1.2", 5201);

    // UDP to a closed port: the server's port unreachable passes back as RELATED.
    let probe = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(3)\ns.connect(('198.19.1.2',9999)); s.send(b'x')\ntry:\n  s.recv(10); print('answered')\nexcept ConnectionRefusedError: print('refused')\nexcept OSError as e: print('error', e)\n";
    let out = tb.exec(&c, &["python3", "-c", probe]);
    assert_eq!(out.stdout.trim(), "refused", "{out}");

    // A new connection from the server side is dropped, while the replies above passed.
    let dial = "import socket\ntry:\n  socket.create_connection(('198.18.1.2',2222),timeout=1.5); print('connected')\nexcept ConnectionRefusedError: print('refused')\nexcept OSError: print('timeout')\n";
    let out = tb.exec(&s, &["python3", "-c", dial]);
    assert_eq!(out.stdout.trim(), "timeout", "{out}");

    // A policy attached by `ct timeout set` shows in the table with its value.
    tb.udp_once(&c, "198.19.1.2", 7777);
    let short = udp_timeout(&d, 7777).expect("the 7777 flow is tracked");
    assert!((3..=5).contains(&short), "policy 'short' (unreplied 5 s): {short}");
    // The real nfct, through the shim, changes the defaults of live traffic.
    tb.nfct_default_set_on_live_flow(&c, &d, "198.19.1.2", 7778);

    // Reloading the rules while a TCP transfer runs keeps the connection (the table stays; the
    // new rule set accepts it as established).
    tb.download_during_reloads(&c, &d, "http://198.19.1.2:8080/blob", &want);

    // No route to 198.20.0.0/16: ferrowall answers net unreachable. A route added to the
    // configuration takes effect at the next reload (the rules and the table stay).
    let out = tb.exec(&c, &["ping", "-c", "1", "-W", "1", "198.20.0.5"]);
    assert!(out.stdout.contains("From 198.18.1.1") && out.stdout.contains("Net Unreachable"), "{out}");
    let conf = d.dir.join("ferrowall.conf");
    let text = std::fs::read_to_string(&conf).expect("reading the configuration");
    std::fs::write(&conf, format!("{text}route = 198.20.0.0/16 via 198.19.1.2\n")).expect("adding a route");
    let out =
        run(Command::new(&ferrowall_tests::daemon::bins().ferroctl).args(["reload", "--socket"]).arg(&d.socket), LIMIT);
    assert_eq!(out.code, Some(0), "reload with a new route: {out}");
    let out = tb.exec(&c, &["ping", "-c", "1", "-W", "1", "198.20.0.5"]);
    assert!(!out.stdout.contains("Unreachable"), "the new route is used: {out}");

    // The counters saw the traffic.
    let out =
        run(Command::new(&ferrowall_tests::daemon::bins().ferroctl).args(["stats", "--socket"]).arg(&d.socket), LIMIT);
    let forwarded: u64 =
        out.stdout.split_whitespace().find_map(|w| w.strip_prefix("forwarded=")?.parse().ok()).unwrap_or(0);
    assert!(forwarded > 10_000, "{out}");
    for iface in ["r-cli", "r-srv"] {
        let line = out.stdout.lines().find(|l| l.starts_with(&format!("interface {iface}:"))).unwrap_or_default();
        let rx: u64 = line.split_whitespace().find_map(|w| w.strip_prefix("rx_packets=")?.parse().ok()).unwrap_or(0);
        assert!(rx > 1000, "per-interface counters of {iface}: {out}");
    }
    // conntrack -S's counters: connections inserted (downloads, pings, UDP flows, iperf3).
    let ct_line = out.stdout.lines().find(|l| l.starts_with("conntrack: found=")).unwrap_or_default();
    assert!(ferrowall_tests::testbed_ns::field(ct_line, "insert") >= 10, "conntrack statistics: {out}");
    drop(d);
}

/// Fragments are tracked and filtered as their whole datagram, as the kernel's `nf_defrag_ipv4` /
/// `nf_defrag_ipv6` have its conntrack see them, and sent on fragmented again: with one worker
/// (no fanout group, so the kernel reassembles nothing before ferrowall sees it) and with two
/// (the fanout group reassembles IPv4 only). Echoes of 3000 bytes in both directions, through the
/// router and to it, under rules
/// that drop what conntrack finds invalid (a fragment tracked alone is: truncated, or a checksum
/// over part of a datagram).
#[test]
fn fragments_are_tracked_as_their_whole_datagram() {
    let tb = Testbed::router("fwf-");
    let c = tb.c.clone();
    for workers in [1, 2] {
        let config = CONFIG.replace("workers = 2", &format!("workers = {workers}"));
        let d = Daemon::start_in(Some(&tb.m), "ferrowall-frag-", Some(&config), &[("fw.rules", RULES)]);
        // Through the router, and to it (its answer, over the MTU, goes out fragmented).
        for target in ["198.19.1.2", "2001:2:0:2::2", "198.18.1.1", "2001:2:0:1::1"] {
            let out = tb.exec(&c, &["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "3000", target]);
            assert!(
                out.stdout.contains("3 received"),
                "{workers} worker(s), ping -s 3000 {target}: {out}\n{}",
                d.log()
            );
        }
        let st = ferroctl(&d, "stats").stdout;
        let line = |p: &str| st.lines().find(|l| l.starts_with(p)).unwrap_or_default().to_owned();
        let dp = line("datapath:");
        // IPv6's fragments at least were held here, whatever the kernel did with IPv4's.
        assert!(field(&dp, "held") >= 6, "{workers} worker(s): {st}");
        assert_eq!(field(&dp, "dropped"), 0, "{workers} worker(s): {st}");
        assert_eq!(field(&dp, "originate_dropped"), 0, "{workers} worker(s): {st}");
        let table = ferroctl(&d, "conntrack").stdout;
        assert!(table.contains("icmp     1 ") && table.contains("icmpv6   58 "), "{table}");
        drop(d);
    }
}

//! TCP with offloads on, end to end (tracker issue 5): the client's and the server's veths, and
//! ferrowall's own, with TX checksum offload, TSO and GSO on, so that the stacks hand the veths
//! GSO super-frames of up to 64 KiB.
//!
//! * Router mode (two workers sharing each interface in a fanout group): ferrowall must receive
//!   the super-frames whole through its vnet headers, filter and track each once, and send it on
//!   whole for the egress veth to cut — and, when the egress cannot take it (TSO off there), have
//!   the kernel cut it on the way out; and take GRO's super-frames (a sender without TSO, GRO on
//!   ferrowall's interface) the same way.
//! * Bridge mode: super-frames are filtered once and forwarded (or flooded) whole, straight from
//!   the receive ring.
//! * TUN mode: the kernel routes the super-packets into ferrowall's TUN whole (it declares TSO
//!   with its vnet headers), ferrowall writes them back whole.
//!
//! Real tools: iperf3 over IPv4 and IPv6, and 20 MB HTTP downloads checked by SHA-256, under rule
//! sets that drop what is not established.

use std::process::Command;

use ferrowall_tests::daemon::{bins, run, Daemon};
use ferrowall_tests::testbed_ns::{addresses, field, ip, Testbed, C, LIMIT, S};

const CONFIG: &str = "interface = r-cli 198.18.1.1/24 2001:2:0:1::1/64
interface = r-srv 198.19.1.1/24 2001:2:0:2::1/64
rules = fw.rules
workers = 2
";

const RULES: &str = r#"chain forward {
  policy drop
  ct state established,related accept
  ct state invalid counter drop
  iifname "r-srv" ct state new drop
  iifname "r-cli" accept
}
"#;

/// `ferroctl stats` of the daemon.
fn stats(d: &Daemon) -> String {
    let out = run(Command::new(&bins().ferroctl).args(["stats", "--socket"]).arg(&d.socket), LIMIT);
    assert_eq!(out.code, Some(0), "ferroctl stats: {out}");
    out.stdout
}

/// `ferroctl stats` once the interface counters show every super-frame the datapath counted.
/// The `datapath:` line is current to the workers' last batch, the `interface` lines are published
/// every 100 ms (the workers' tick): a transfer that ends between two ticks is not in them yet.
/// Bounded: after 3 s the last reading is returned, for the assertions to report.
fn settled_stats(d: &Daemon) -> String {
    let mut st = stats(d);
    for _ in 0..30 {
        let per_iface: u64 = st.lines().filter(|l| l.starts_with("interface ")).map(|l| field(l, "rx_gso")).sum();
        if per_iface == field(line(&st, "datapath:"), "rx_gso") {
            break;
        }
        ferrowall_tests::clock::sleep(std::time::Duration::from_millis(100));
        st = stats(d);
    }
    st
}

/// The line of `stats` that starts with `prefix`.
fn line<'a>(stats: &'a str, prefix: &str) -> &'a str {
    stats.lines().find(|l| l.starts_with(prefix)).unwrap_or_default()
}

/// Offloads on at both ends of both veth pairs.
fn offloads_on(tb: &Testbed, cli: &str, srv: &str) {
    for (ns, dev) in [(&tb.c, C), (&tb.s, S), (&tb.m, cli), (&tb.m, srv)] {
        tb.offloads_on(ns, dev);
    }
}

/// iperf3 from the client to `server` for 3 s; the Gbit/s the server received.
fn iperf3(tb: &Testbed, server: &str) -> f64 {
    let out = tb.exec(&tb.c, &["iperf3", "-c", server, "-p", "5201", "-t", "3", "-J", "--connect-timeout", "3000"]);
    assert_eq!(out.code, Some(0), "iperf3 to {server}: {out}");
    let at = out.stdout.find("\"sum_received\"").expect("iperf3's summary");
    let rest = &out.stdout[at..];
    let bps = rest
        .split("\"bits_per_second\":")
        .nth(1)
        .and_then(|v| v.split([',', '\n', '}']).next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("bits_per_second");
    bps / 1e9
}

#[test]
fn tcp_with_offloads_on_goes_through_whole_and_intact() {
    let mut tb = Testbed::router("fwg-");
    offloads_on(&tb, "r-cli", "r-srv");
    let d = Daemon::start_in(Some(&tb.m), "ferrowall-gso-", Some(CONFIG), &[("fw.rules", RULES)]);
    let (c, s) = (tb.c.clone(), tb.s.clone());

    // 20 MB over IPv4 and IPv6, each copy checked by SHA-256.
    let urls = ["http://198.19.1.2:8080/blob", "http://[2001:2:0:2::2]:8080/blob"];
    let want = tb.serve_and_download(&c, &s, &d, 20, &urls, "30");

    // iperf3 over both families: data moves.
    tb.spawn(&s, &["iperf3", "-s", "-p", "5201"]);
    ferrowall_tests::clock::sleep(std::time::Duration::from_millis(300));
    for server in ["198.19.1.2", "2001:2:0:2::2"] {
        let gbps = iperf3(&tb, server);
        assert!(gbps > 0.1, "iperf3 to {server}: {gbps} Gbit/s\n{}", d.log());
    }

    // Super-frames arrived (client to server: the data of iperf3; server to client: the
    // downloads), went out whole on both interfaces, and none was refused.
    let st = settled_stats(&d);
    let dp = line(&st, "datapath:");
    assert!(field(dp, "rx_gso") > 100, "super-frames received: {st}");
    assert_eq!(field(dp, "gso_segmented"), 0, "every next hop was known: {st}");
    assert_eq!(field(line(&st, "datapath dropped:"), "gso_malformed"), 0, "{st}");
    assert_eq!(field(line(&st, "datapath dropped:"), "ct_invalid_checksum"), 0, "{st}");
    for iface in ["r-cli", "r-srv"] {
        let l = line(&st, &format!("interface {iface}:"));
        assert!(field(l, "rx_gso") > 10 && field(l, "tx_gso") > 10, "{iface}: {st}");
        assert_eq!(field(l, "tx_errors"), 0, "{iface}: {st}");
    }

    // TSO off where ferrowall sends to the client: the kernel cuts the super-frames on the way
    // out of r-cli; the download is still intact.
    let out = tb.exec(&tb.m, &["ethtool", "-K", "r-cli", "tso", "off", "gso", "off"]);
    assert_eq!(out.code, Some(0), "{out}");
    let got = d.dir.join("got-tso-off");
    assert!(tb.download(&c, urls[0], &got, "30"), "download with TSO off on r-cli\n{}", d.log());
    assert_eq!(ferrowall_tests::testbed_ns::sha256(&got), want, "the download through a TSO-less egress is corrupted");
    let after = settled_stats(&d);
    let l = line(&after, "interface r-cli:");
    assert_eq!(field(l, "tx_errors"), 0, "{after}");
    assert!(
        field(line(&after, "interface r-srv:"), "rx_gso") > field(line(&st, "interface r-srv:"), "rx_gso"),
        "the server still sends super-frames: {after}"
    );

    // The server without TSO/GSO but GRO on ferrowall's r-srv: the kernel merges the server's
    // segments into super-frames on receipt, which ferrowall takes the same way.
    let out = tb.exec(&tb.s, &["ethtool", "-K", S, "tso", "off", "gso", "off"]);
    assert_eq!(out.code, Some(0), "{out}");
    let out = tb.exec(&tb.m, &["ethtool", "-K", "r-srv", "gro", "on"]);
    assert_eq!(out.code, Some(0), "{out}");
    let got = d.dir.join("got-gro");
    assert!(tb.download(&c, urls[1], &got, "30"), "download with GRO on r-srv\n{}", d.log());
    assert_eq!(ferrowall_tests::testbed_ns::sha256(&got), want, "the download through GRO is corrupted");
    let gro = settled_stats(&d);
    assert!(
        field(line(&gro, "interface r-srv:"), "rx_gso") > field(line(&after, "interface r-srv:"), "rx_gso") + 10,
        "GRO's super-frames: {gro}"
    );
    assert_eq!(field(line(&gro, "datapath dropped:"), "gso_malformed"), 0, "{gro}");
    drop(d);
}

const TUN_CONFIG: &str = "mode = tun
interface = fw0
rules = fw.rules
workers = 2
";

const TUN_RULES: &str = r#"chain forward {
  policy drop
  ct state established,related accept
  ct state invalid counter drop
  ip saddr 198.18.3.0/24 accept
  ip6 saddr 2001:2:0:4::/64 accept
}
"#;

#[test]
fn tun_mode_with_offloads_on_takes_super_packets_whole() {
    let mut tb = Testbed::namespaces("fwgt-", "r");
    tb.veths("r-cli", "r-srv");
    for (ns, dev, v4, v6) in [
        (&tb.c, C, "198.18.3.2/24", "2001:2:0:4::2/64"),
        (&tb.m, "r-cli", "198.18.3.1/24", "2001:2:0:4::1/64"),
        (&tb.m, "r-srv", "198.19.3.1/24", "2001:2:0:5::1/64"),
        (&tb.s, S, "198.19.3.2/24", "2001:2:0:5::2/64"),
    ] {
        addresses(ns, dev, v4, v6);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    offloads_on(&tb, "r-cli", "r-srv");
    let forwarding = ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0"];
    assert_eq!(tb.sysctl(&tb.m, &forwarding).code, Some(0));
    ip(&["-n", &tb.c, "route", "add", "default", "via", "198.18.3.1"]);
    ip(&["-n", &tb.c, "-6", "route", "add", "default", "via", "2001:2:0:4::1"]);
    ip(&["-n", &tb.s, "route", "add", "default", "via", "198.19.3.1"]);
    ip(&["-n", &tb.s, "-6", "route", "add", "default", "via", "2001:2:0:5::1"]);
    let d = Daemon::start_in(Some(&tb.m), "ferrowall-gso-tun-", Some(TUN_CONFIG), &[("fw.rules", TUN_RULES)]);
    // What enters from the veths goes into fw0 (see engine::io::tunnel), closed behind it.
    assert_eq!(tb.sysctl(&tb.m, &["net.ipv4.conf.fw0.rp_filter=0"]).code, Some(0));
    for v in ["-4", "-6"] {
        for iif in ["r-cli", "r-srv"] {
            ip(&["-n", &tb.m, v, "rule", "add", "iif", iif, "lookup", "100"]);
        }
        ip(&["-n", &tb.m, v, "route", "add", "default", "dev", "fw0", "table", "100"]);
        ip(&["-n", &tb.m, v, "route", "add", "prohibit", "default", "table", "100", "metric", "4294967295"]);
    }
    let out = tb.exec(&tb.m, &["ethtool", "-k", "fw0"]);
    assert!(out.stdout.contains("tcp-segmentation-offload: on"), "fw0 takes super-packets: {out}");
    let (c, s) = (tb.c.clone(), tb.s.clone());

    let urls = ["http://198.19.3.2:8080/blob", "http://[2001:2:0:5::2]:8080/blob"];
    tb.serve_and_download(&c, &s, &d, 20, &urls, "30");
    tb.spawn(&s, &["iperf3", "-s", "-p", "5201"]);
    ferrowall_tests::clock::sleep(std::time::Duration::from_millis(300));
    for server in ["198.19.3.2", "2001:2:0:5::2"] {
        let gbps = iperf3(&tb, server);
        assert!(gbps > 0.1, "iperf3 to {server}: {gbps} Gbit/s\n{}", d.log());
    }

    let st = settled_stats(&d);
    let fw0 = line(&st, "interface fw0:");
    assert!(field(fw0, "rx_gso") > 100 && field(fw0, "tx_gso") > 100, "super-packets both ways through fw0: {st}");
    assert_eq!(field(fw0, "tx_errors"), 0, "{st}");
    assert!(field(line(&st, "datapath:"), "rx_gso") > 100, "{st}");
    for dropped in ["gso_malformed", "ct_invalid_checksum"] {
        assert_eq!(field(line(&st, "datapath dropped:"), dropped), 0, "{dropped}: {st}");
    }
    drop(d);
}

const BRIDGE_CONFIG: &str = "mode = bridge
interface = b-cli
interface = b-srv
rules = fw.rules
workers = 2
";

const BRIDGE_RULES: &str = r#"chain forward {
  policy drop
  ct state established,related accept
  ct state invalid counter drop
  icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
  iifname "b-srv" ct state new drop
  iifname "b-cli" accept
}
"#;

#[test]
fn bridge_mode_with_offloads_on_forwards_super_frames_whole() {
    let mut tb = Testbed::namespaces("fwgb-", "b");
    let quiet = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.ip_forward=0"];
    assert_eq!(tb.sysctl(&tb.m, &quiet).code, Some(0));
    tb.veths("b-cli", "b-srv");
    addresses(&tb.c, C, "198.18.2.2/24", "2001:2:0:3::2/64");
    addresses(&tb.s, S, "198.18.2.3/24", "2001:2:0:3::3/64");
    for (ns, dev) in [(&tb.c, C), (&tb.s, S), (&tb.m, "b-cli"), (&tb.m, "b-srv")] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    offloads_on(&tb, "b-cli", "b-srv");
    let d = Daemon::start_in(Some(&tb.m), "ferrowall-gso-bridge-", Some(BRIDGE_CONFIG), &[("fw.rules", BRIDGE_RULES)]);
    let (c, s) = (tb.c.clone(), tb.s.clone());

    let urls = ["http://198.18.2.3:8080/blob", "http://[2001:2:0:3::3]:8080/blob"];
    tb.serve_and_download(&c, &s, &d, 20, &urls, "30");
    tb.spawn(&s, &["iperf3", "-s", "-p", "5201"]);
    ferrowall_tests::clock::sleep(std::time::Duration::from_millis(300));
    for server in ["198.18.2.3", "2001:2:0:3::3"] {
        let gbps = iperf3(&tb, server);
        assert!(gbps > 0.1, "iperf3 to {server}: {gbps} Gbit/s\n{}", d.log());
    }

    let st = settled_stats(&d);
    assert!(field(line(&st, "datapath:"), "rx_gso") > 100, "{st}");
    for dropped in ["gso_malformed", "too_big", "ct_invalid_checksum"] {
        assert_eq!(field(line(&st, "datapath dropped:"), dropped), 0, "{dropped}: {st}");
    }
    for iface in ["b-cli", "b-srv"] {
        let l = line(&st, &format!("interface {iface}:"));
        assert!(field(l, "rx_gso") > 10 && field(l, "tx_gso") > 10, "{iface}: {st}");
        assert_eq!(field(l, "tx_errors"), 0, "{iface}: {st}");
    }
    drop(d);
}

//! TUN mode, end to end: a client and a server namespace with a router namespace between them
//! whose kernel routes, policy routing sending everything that enters from the client and server
//! sides into the TUN `fw0` that ferrowall (running in the router namespace with `mode = tun`)
//! creates; ferrowall filters and writes back, the kernel routes onward. Real traffic from real
//! tools, a one-way policy, rejects answered into the TUN.

use std::time::Duration;

use ferrowall_tests::clock;
use ferrowall_tests::daemon::{Daemon, Out};
use ferrowall_tests::testbed_ns::{addresses, ferroctl, field, ip, Testbed, C, S};

/// Three namespaces joined by two veth pairs, the router's kernel forwarding.
fn testbed() -> Testbed {
    let tb = Testbed::namespaces("fwt-", "r");
    tb.veths("r-cli", "r-srv");
    for (ns, dev, addrs) in [
        (&tb.c, C, ["198.18.3.2/24", "2001:2:0:4::2/64"]),
        (&tb.m, "r-cli", ["198.18.3.1/24", "2001:2:0:4::1/64"]),
        (&tb.m, "r-srv", ["198.19.3.1/24", "2001:2:0:5::1/64"]),
        (&tb.s, S, ["198.19.3.2/24", "2001:2:0:5::2/64"]),
    ] {
        addresses(ns, dev, addrs[0], addrs[1]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    // The router's kernel forwards; strict reverse-path filtering would refuse what comes
    // back out of the TUN (its sources are reachable through the veths).
    tb.router_sysctl(&[
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ]);
    ip(&["-n", &tb.c, "route", "add", "default", "via", "198.18.3.1"]);
    ip(&["-n", &tb.c, "-6", "route", "add", "default", "via", "2001:2:0:4::1"]);
    ip(&["-n", &tb.s, "route", "add", "default", "via", "198.19.3.1"]);
    ip(&["-n", &tb.s, "-6", "route", "add", "default", "via", "2001:2:0:5::1"]);
    tb
}

/// What the TUN tests do with the testbed.
trait TunBed {
    fn router_sysctl(&self, settings: &[&str]);
    fn route_into_tun(&self);
    fn ping(&self, target: &str, n: u32) -> (u32, Out);
}

impl TunBed for Testbed {
    fn router_sysctl(&self, settings: &[&str]) {
        let out = self.sysctl(&self.m, settings);
        assert_eq!(out.code, Some(0), "sysctl {settings:?}: {out}");
    }

    /// The policy routing of TUN mode (see `engine::io::tunnel`): what enters from the veths goes
    /// into `fw0`, with a prohibit route behind it so that nothing passes unfiltered without it.
    fn route_into_tun(&self) {
        self.router_sysctl(&["net.ipv4.conf.fw0.rp_filter=0"]);
        for v in ["-4", "-6"] {
            for iif in ["r-cli", "r-srv"] {
                ip(&["-n", &self.m, v, "rule", "add", "iif", iif, "lookup", "100"]);
            }
            ip(&["-n", &self.m, v, "route", "add", "default", "dev", "fw0", "table", "100"]);
            ip(&["-n", &self.m, v, "route", "add", "prohibit", "default", "table", "100", "metric", "4294967295"]);
        }
    }

    /// `ping -c N` from the client; how many answers came back, and the output.
    fn ping(&self, target: &str, n: u32) -> (u32, Out) {
        let count = n.to_string();
        let out = self.exec(&self.c, &["ping", "-c", &count, "-i", "0.2", "-W", "2", target]);
        let got = out.stdout.split(", ").find_map(|w| w.strip_suffix(" received")?.trim().parse().ok()).unwrap_or(0);
        (got, out)
    }
}

const CONFIG: &str = "mode = tun
interface = fw0 198.51.100.1/30 203.0.113.1/30 2001:db8:3::1/64
timeout = short inet udp unreplied 5 replied 9
rules = fw.rules
workers = 2
";

/// Everything arrives on fw0, so the policy is written with addresses.
const RULES: &str = r#"chain forward {
  policy drop
  iifname "fw0" counter
  ct state related counter accept
  ct state established accept
  ct state invalid drop
  tcp dport 2223 counter reject
  udp dport 9998 counter reject
  udp dport 7777 ct timeout set "short" accept
  ip saddr 198.18.3.0/24 accept
  ip6 saddr 2001:2:0:4::/64 accept
}
"#;

/// Sends one UDP datagram to `[addr]:port` from a connected socket: prints `refused` (an ICMP
/// port unreachable came back), `answered` or `timeout`.
const UDP_PROBE: &str = "import socket,sys
a,p=sys.argv[1],int(sys.argv[2])
s=socket.socket(socket.AF_INET6 if ':' in a else socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)
s.connect((a,p)); s.send(b'x')
try:
  s.recv(10); print('answered')
except ConnectionRefusedError: print('refused')
except OSError: print('timeout')
";

/// Opens a TCP connection to `[addr]:port`: prints `connected`, `refused` or `timeout`.
const TCP_DIAL: &str = "import socket,sys
try:
  socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1.5); print('connected')
except ConnectionRefusedError: print('refused')
except OSError: print('timeout')
";

/// A UDP echo server on port 9998, IPv4 and IPv6.
const UDP_ECHO: &str = "import socket
s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM); s.bind(('::',9998))
while True:
  d,a=s.recvfrom(100); s.sendto(d,a)
";

/// The packet count of the rule whose text contains `text`, from `ferroctl stats`.
fn rule_packets(stats: &str, text: &str) -> u64 {
    stats.lines().find(|l| l.starts_with("rule ") && l.contains(text)).map_or(0, |l| field(l, "packets"))
}

#[test]
fn tun_mode_filters_what_the_kernel_routes() {
    let mut tb = testbed();
    let mut d = Daemon::start_in(Some(&tb.m), "ferrowall-tun-", Some(CONFIG), &[("fw.rules", RULES)]);
    let (c, s) = (tb.c.clone(), tb.s.clone());

    // ferrowall created fw0, gave it the configured addresses and brought it up; the workers are running once the control socket exists.
    let out = tb.exec(&tb.m, &["ip", "addr", "show", "dev", "fw0"]);
    assert_eq!(out.code, Some(0), "{out}\n{}", d.log());
    for want in ["UP", "inet 198.51.100.1/30", "inet 203.0.113.1/30", "inet6 2001:db8:3::1/64"] {
        assert!(out.stdout.contains(want), "fw0 lacks `{want}`: {out}");
    }
    let out = tb.exec(&tb.m, &["ip", "-d", "link", "show", "dev", "fw0"]);
    assert!(out.stdout.contains("tun type tun") && out.stdout.contains("multi_queue"), "{out}");
    tb.route_into_tun();

    // ICMP echo through, IPv4 and IPv6. The kernel forwards twice (veth -> TUN, TUN -> veth), so
    // the server's replies arrive with TTL 64 - 2: proof that they went through the TUN.
    for target in ["198.19.3.2", "2001:2:0:5::2"] {
        let (got, out) = tb.ping(target, 3);
        assert_eq!(got, 3, "ping {target}: {out}\n{}", d.log());
        assert!(out.stdout.contains("ttl=62"), "ping {target} did not cross the TUN: {out}");
        // 3000 bytes: fragments, which ferrowall reassembles to track and filter (the rules drop
        // what is invalid, as a fragment tracked alone is) and writes back fragmented.
        let out = tb.exec(&c, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-s", "3000", target]);
        assert!(out.stdout.contains("2 received"), "ping -s 3000 {target}: {out}\n{}", d.log());
    }
    let st = ferroctl(&d, "stats").stdout;
    let held = st.lines().find(|l| l.starts_with("datapath:")).map_or(0, |l| field(l, "held"));
    assert!(held >= 4, "fragments held for reassembly: {st}");
    let table = ferroctl(&d, "conntrack").stdout;
    assert!(table.lines().any(|l| l.starts_with("icmp ") && l.contains("dst=198.19.3.2")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("icmpv6 ") && l.contains("dst=2001:2:0:5::2")), "{table}");

    // A 10 MB HTTP download over IPv4 and IPv6, checksummed.
    let urls = ["http://198.19.3.2:8080/blob", "http://[2001:2:0:5::2]:8080/blob"];
    let want = tb.serve_and_download(&c, &s, &d, 10, &urls, "30");
    // Servers behind the reject rules: they would answer if the rules let the packets through.
    let dir = d.dir.to_string_lossy().into_owned();
    tb.spawn(&s, &["python3", "-m", "http.server", "2223", "--bind", "::", "--directory", &dir]);
    tb.spawn(&s, &["python3", "-c", UDP_ECHO]);

    // iperf3 through the TUN, TCP then UDP.
    tb.iperf3_tcp_udp(&c, &s, "198.19.3.2", 5201);
    // The real nfct, through the shim, changes the defaults of live traffic.
    tb.nfct_default_set_on_live_flow(&c, &d, "198.19.3.2", 7778);

    // UDP to a closed port: the server's port unreachable passes back as RELATED.
    for addr in ["198.19.3.2", "2001:2:0:5::2"] {
        let out = tb.exec(&c, &["python3", "-c", UDP_PROBE, addr, "9999"]);
        assert_eq!(out.stdout.trim(), "refused", "UDP to {addr}:9999: {out}");
    }

    // `reject`: ferrowall answers in the server's name, although the server listens there (as
    // the server's own namespace sees).
    let start = clock::now();
    loop {
        let udp = tb.exec(&s, &["python3", "-c", UDP_PROBE, "::1", "9998"]);
        let tcp = tb.exec(&s, &["python3", "-c", TCP_DIAL, "127.0.0.1", "2223"]);
        if udp.stdout.trim() == "answered" && tcp.stdout.trim() == "connected" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "the servers do not answer: {udp}\n{tcp}");
        clock::sleep(Duration::from_millis(200));
    }
    for addr in ["198.19.3.2", "2001:2:0:5::2"] {
        let out = tb.exec(&c, &["python3", "-c", TCP_DIAL, addr, "2223"]);
        assert_eq!(out.stdout.trim(), "refused", "TCP to {addr}:2223 is reset: {out}\n{}", d.log());
        let out = tb.exec(&c, &["python3", "-c", UDP_PROBE, addr, "9998"]);
        assert_eq!(out.stdout.trim(), "refused", "UDP to {addr}:9998 is refused: {out}\n{}", d.log());
    }
    // A new connection from the server side is dropped, while the replies above passed.
    for addr in ["198.18.3.2", "2001:2:0:4::2"] {
        let out = tb.exec(&s, &["python3", "-c", TCP_DIAL, addr, "2222"]);
        assert_eq!(out.stdout.trim(), "timeout", "TCP from the server to {addr}: {out}");
    }

    // The connection table: the downloads, and a flow with the policy `ct timeout set` attached.
    let out = tb.exec(&c, &["python3", "-c", UDP_PROBE, "198.19.3.2", "7777"]);
    assert_eq!(out.stdout.trim(), "refused", "{out}");
    let table = ferroctl(&d, "conntrack").stdout;
    let tcp = table.lines().filter(|l| l.starts_with("tcp ") && l.contains(" dport=8080 ")).count();
    assert!(tcp >= 2, "the downloads are tracked:\n{table}");
    assert!(table.lines().any(|l| l.starts_with("tcp ") && l.contains("dst=2001:2:0:5::2")), "{table}");
    let short = table
        .lines()
        .find(|l| l.starts_with("udp ") && l.contains(" dport=7777 "))
        .and_then(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("the 7777 flow is tracked:\n{table}"));
    assert!((1..=5).contains(&short), "policy 'short' (unreplied 5 s): {short}\n{table}");

    // The counters saw it all.
    let stats = ferroctl(&d, "stats").stdout;
    let datapath = stats.lines().find(|l| l.starts_with("datapath:")).unwrap_or_default();
    assert!(field(datapath, "forwarded") > 10_000, "{stats}");
    assert!(field(datapath, "originated") >= 4, "the rejects' answers: {stats}");
    assert!(field(datapath, "dropped") >= 2, "the server's dials: {stats}");
    let fw0 = stats.lines().find(|l| l.starts_with("interface fw0:")).unwrap_or_default();
    assert!(field(fw0, "rx_packets") > 10_000 && field(fw0, "tx_packets") > 10_000, "{stats}");
    assert!(rule_packets(&stats, "iifname \"fw0\" counter") >= field(fw0, "rx_packets") / 2, "{stats}");
    assert!(rule_packets(&stats, "ct state related") >= 2, "the port unreachables are RELATED: {stats}");
    assert!(rule_packets(&stats, "tcp dport 2223") >= 2, "{stats}");
    assert!(rule_packets(&stats, "udp dport 9998") >= 2, "{stats}");

    // A transfer survives reloads (after the counters above: a reload starts the rules' counters
    // afresh, as replacing nft rules does).
    tb.download_during_reloads(&c, &d, "http://198.19.3.2:8080/blob", &want);

    // Without ferrowall, fw0 and its routes are gone: the prohibit route keeps the policy
    // closed rather than routing around the filter.
    assert_eq!(d.stop(), Some(0), "ferrowall's exit: {}", d.log());
    let (got, out) = tb.ping("198.19.3.2", 1);
    assert_eq!(got, 0, "nothing passes without the filter: {out}");
    drop(d);
}

/// The administrator's variant: a persistent `fw0` made beforehand (with the flags ferrowall
/// attaches with) and routed into before ferrowall starts. The kernel drops what it routes into a
/// TUN nobody reads, so the policy stays closed while ferrowall is away, also across a restart
/// (which finds the device's addresses already there).
#[test]
fn a_persistent_tun_stays_closed_while_ferrowall_restarts() {
    let tb = testbed();
    ip(&["-n", &tb.m, "tuntap", "add", "dev", "fw0", "mode", "tun", "multi_queue"]);
    ip(&["-n", &tb.m, "link", "set", "fw0", "up"]);
    tb.route_into_tun();
    let config = "mode = tun\ninterface = fw0 198.51.100.1/30 2001:db8:3::1/64\nworkers = 2\n";
    for round in 0..2 {
        let (got, out) = tb.ping("198.19.3.2", 1);
        assert_eq!(got, 0, "round {round}: nothing passes without ferrowall: {out}");
        let mut d = Daemon::start_in(Some(&tb.m), "ferrowall-tun-", Some(config), &[]);
        for target in ["198.19.3.2", "2001:2:0:5::2"] {
            let (got, out) = tb.ping(target, 2);
            assert_eq!(got, 2, "round {round}: ping {target}: {out}\n{}", d.log());
            assert!(out.stdout.contains("ttl=62"), "{out}");
        }
        let stats = ferroctl(&d, "stats").stdout;
        let datapath = stats.lines().find(|l| l.starts_with("datapath:")).unwrap_or_default();
        assert!(field(datapath, "forwarded") >= 8, "round {round}: {stats}");
        assert_eq!(d.stop(), Some(0), "round {round}: ferrowall's exit: {}", d.log());
        let out = tb.exec(&tb.m, &["ip", "addr", "show", "dev", "fw0"]);
        assert!(out.stdout.contains("inet 198.51.100.1/30") && out.stdout.contains("2001:db8:3::1/64"), "{out}");
    }
    ip(&["-n", &tb.m, "link", "del", "fw0"]);
}

//! The real `conntrack` (conntrack-tools 1.4.7) against the kernel and against ferrowall, through
//! the preload shim: the same commands, in the same order, must print the same standard output
//! and standard error and exit the same way, up to what cannot be equal — timeouts (compared
//! within a few seconds), connection ids, the order of a listing (the kernel's is its hash
//! order), and per-CPU statistics (the kernel's CPUs versus ferrowall's workers: the lines'
//! shapes are compared, not their numbers).
//!
//! * `control_plane`: a table filled with `conntrack -I` in a fresh network namespace and in a
//!   ferrowall daemon without interfaces, then listed, filtered, read, updated, deleted, flushed,
//!   counted, with the errors conntrack reports for a missing or an existing connection; and
//!   `ferroctl conntrack` against `conntrack` on ferrowall.
//! * `traffic`: the same TCP, UDP, ICMP and ICMPv6 traffic (IPv4 and IPv6, fixed ports and ids)
//!   through a kernel router namespace and through ferrowall as the router, then the tables
//!   listed and changed with `conntrack`, and dumped byte for byte over netlink (the kernel's
//!   and ferrowall's replies to the same dump request, up to ids and timeouts).
//!
//! Needs root, `conntrack`, `nft`, `ping` and `python3`.

use std::process::Command;
use std::time::Duration;

use ferrowall_tests::daemon::{bins, run, Daemon, Out};
use ferrowall_tests::netns::NetlinkSocket;
use ferrowall_tests::testbed_ns::{echo_server, tcp_client, udp_client, Testbed, LIMIT, ROUTER_CONFIG, ROUTER_RULES};
use ferrowall_tests::{clock, cmd, testbed};
use proto::ctnetlink::{self as wire, msg};
use proto::netlink::{flags, Attrs, Header, MessageBuilder, Messages, Nfgenmsg};

/// Where `conntrack` runs: a kernel namespace, or ferrowall through the shim.
trait Side {
    fn conntrack(&self, args: &[&str]) -> Out;
    fn name(&self) -> &'static str;
}

struct KernelNs(String);

impl Side for KernelNs {
    fn conntrack(&self, args: &[&str]) -> Out {
        run(Command::new("ip").args(["netns", "exec", &self.0, "conntrack"]).args(args), LIMIT)
    }
    fn name(&self) -> &'static str {
        "kernel"
    }
}

struct Ferrowall<'a>(&'a Daemon);

impl Side for Ferrowall<'_> {
    fn conntrack(&self, args: &[&str]) -> Out {
        self.0.exec("conntrack", args)
    }
    fn name(&self) -> &'static str {
        "ferrowall"
    }
}

/// One line of output with its timeout taken out: (text with `T` for the timeout and `ID` for an
/// id, the timeout).
type Line = (String, Option<u64>);

/// Normalises `conntrack` output: whitespace runs become one space, the timeout of a connection
/// line (`tcp 6 99 …`, `ipv4 2 tcp 6 99 …`, `<timeout>99</timeout>`) is set aside, ids become `ID`;
/// for `-S` (`stats`) every number becomes `N` and repeated lines collapse. Lines are sorted.
fn normalise(text: &str, stats: bool) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    for l in text.lines() {
        let mut toks: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
        let mut timeout = None;
        if stats {
            for t in &mut toks {
                if let Some((k, _)) = t.split_once('=') {
                    *t = format!("{k}=N");
                }
            }
        } else {
            let off = if matches!(toks.first().map(String::as_str), Some("ipv4" | "ipv6")) { 2 } else { 0 };
            if toks.len() > off + 2 && toks[off + 1].parse::<u32>().is_ok() {
                if let Ok(t) = toks[off + 2].parse::<u64>() {
                    timeout = Some(t);
                    toks[off + 2] = "T".into();
                }
            }
            for t in &mut toks {
                if t.starts_with("id=") && t[3..].parse::<u64>().is_ok() {
                    *t = "id=ID".into();
                }
            }
        }
        let mut joined = toks.join(" ");
        // XML: <timeout>N</timeout>, <id>N</id>.
        while let Some(a) = joined.find("<timeout>") {
            let Some(b) = joined[a..].find("</timeout>") else { break };
            timeout = joined[a + 9..a + b].parse().ok();
            joined.replace_range(a..a + b + 10, "<T/>");
        }
        while let Some(a) = joined.find("<id>") {
            let Some(b) = joined[a..].find("</id>") else { break };
            joined.replace_range(a..a + b + 5, "<ID/>");
        }
        lines.push((joined, timeout));
    }
    lines.sort();
    if stats {
        lines.dedup();
    }
    lines
}

/// Compares two outputs of the same command; `None` when they agree.
fn differ(k: &Out, f: &Out, stats: bool) -> Option<String> {
    let (ko, fo) = (normalise(&k.stdout, stats), normalise(&f.stdout, stats));
    let texts_equal = ko.len() == fo.len() && ko.iter().zip(&fo).all(|(a, b)| a.0 == b.0);
    let timeouts_close = ko
        .iter()
        .zip(&fo)
        .all(|(a, b)| a.1.zip(b.1).is_none_or(|(x, y)| x.abs_diff(y) <= 3) && a.1.is_some() == b.1.is_some());
    if texts_equal && timeouts_close && k.stderr == f.stderr && k.code == f.code {
        return None;
    }
    Some(format!("--- kernel\n{k}\n--- ferrowall\n{f}"))
}

/// Runs each command on both sides, in order, and collects the differences.
struct Diff {
    cases: usize,
    failures: Vec<String>,
}

impl Diff {
    fn new() -> Diff {
        Diff { cases: 0, failures: Vec::new() }
    }

    fn check(&mut self, k: &dyn Side, f: &dyn Side, args: &[&str]) {
        self.compare(k, f, args, args.first() == Some(&"-S"));
    }

    fn compare(&mut self, k: &dyn Side, f: &dyn Side, args: &[&str], stats: bool) {
        self.cases += 1;
        let (ko, fo) = (k.conntrack(args), f.conntrack(args));
        if let Some(why) = differ(&ko, &fo, stats) {
            self.failures.push(format!("conntrack {} ({} vs {}):\n{why}", args.join(" "), k.name(), f.name()));
        }
    }

    /// Compares two outputs produced otherwise (ferroctl against conntrack).
    fn outputs(&mut self, what: &str, a: &Out, b: &Out, stats: bool) {
        self.cases += 1;
        let (x, y) = (normalise(&a.stdout, stats), normalise(&b.stdout, stats));
        if x != y || a.code != b.code {
            self.failures.push(format!("{what}:\n--- conntrack\n{a}\n--- ferroctl\n{b}"));
        }
    }

    fn finish(self, what: &str) {
        for f in &self.failures {
            println!("{f}\n");
        }
        println!("{what}: {} cases, {} identical", self.cases, self.cases - self.failures.len());
        assert!(self.failures.is_empty(), "{what}: {} difference(s); see above", self.failures.len());
    }
}

fn require_root_and_tools() {
    let uid = cmd::run("id", &["-u"]).expect("running id");
    assert_eq!(uid.trim(), "0", "needs root (it creates network namespaces)");
    for (tool, arg) in [("conntrack", "--version"), ("nft", "--version"), ("python3", "--version")] {
        cmd::run(tool, &[arg]).unwrap_or_else(|e| panic!("required tool `{tool}` is not usable: {e}"));
    }
    testbed::remove_stale_namespaces().expect("removing namespaces left by earlier runs");
}

/// The table both sides start from, as `conntrack -I` commands.
const POPULATE: &[&[&str]] = &[
    &[
        "-I",
        "-p",
        "tcp",
        "-s",
        "198.18.0.1",
        "-d",
        "198.19.0.1",
        "--sport",
        "1000",
        "--dport",
        "80",
        "--state",
        "ESTABLISHED",
        "-u",
        "ASSURED",
        "-m",
        "1",
        "-t",
        "3600",
    ],
    &[
        "-I",
        "-p",
        "tcp",
        "-s",
        "198.18.0.1",
        "-d",
        "198.19.0.1",
        "--sport",
        "1001",
        "--dport",
        "443",
        "--state",
        "SYN_SENT",
        "-m",
        "2",
        "-t",
        "120",
    ],
    &[
        "-I",
        "-p",
        "tcp",
        "-s",
        "2001:2:0:1::1",
        "-d",
        "2001:2:0:2::1",
        "--sport",
        "1002",
        "--dport",
        "22",
        "--state",
        "ESTABLISHED",
        "-u",
        "ASSURED,SEEN_REPLY",
        "-m",
        "3",
        "-t",
        "7200",
    ],
    &[
        "-I",
        "-p",
        "tcp",
        "-s",
        "198.18.0.5",
        "-d",
        "198.19.0.5",
        "--sport",
        "1003",
        "--dport",
        "25",
        "--state",
        "TIME_WAIT",
        "-u",
        "SEEN_REPLY",
        "-t",
        "120",
    ],
    &[
        "-I",
        "-p",
        "udp",
        "-s",
        "198.18.0.2",
        "-d",
        "198.19.0.2",
        "--sport",
        "5000",
        "--dport",
        "53",
        "-m",
        "1",
        "-t",
        "300",
    ],
    &[
        "-I",
        "-p",
        "udp",
        "-s",
        "2001:2:0:1::2",
        "-d",
        "2001:2:0:2::2",
        "--sport",
        "5001",
        "--dport",
        "53",
        "-u",
        "SEEN_REPLY",
        "-t",
        "300",
    ],
    &[
        "-I",
        "-p",
        "icmp",
        "-s",
        "198.18.0.3",
        "-d",
        "198.19.0.3",
        "--icmp-type",
        "8",
        "--icmp-code",
        "0",
        "--icmp-id",
        "77",
        "-t",
        "200",
    ],
    &[
        "-I",
        "-p",
        "icmpv6",
        "-s",
        "2001:2:0:1::3",
        "-d",
        "2001:2:0:2::3",
        "--icmpv6-type",
        "128",
        "--icmpv6-code",
        "0",
        "--icmpv6-id",
        "78",
        "-m",
        "2",
        "-t",
        "200",
    ],
    &[
        "-I",
        "-p",
        "sctp",
        "-s",
        "198.18.0.4",
        "-d",
        "198.19.0.4",
        "--sport",
        "3868",
        "--dport",
        "3868",
        "--state",
        "ESTABLISHED",
        "--orig-vtag",
        "0x1234",
        "--reply-vtag",
        "0x5678",
        "-u",
        "ASSURED,SEEN_REPLY",
        "-t",
        "400",
    ],
    &["-I", "-p", "gre", "-s", "198.18.0.6", "-d", "198.19.0.6", "--srckey", "0", "--dstkey", "9", "-t", "400"],
    &[
        "-I",
        "-p",
        "udplite",
        "-s",
        "198.18.0.7",
        "-d",
        "198.19.0.7",
        "--sport",
        "6000",
        "--dport",
        "6001",
        "-m",
        "3",
        "-t",
        "500",
    ],
];

/// The commands compared once the table is filled, in order.
const CONTROL_CASES: &[&[&str]] = &[
    // Listing, with every kind of filter.
    &["-L"],
    &["-L", "-o", "extended"],
    &["-L", "-o", "extended,id"],
    &["-L", "-o", "xml"],
    &["-L", "-f", "ipv4"],
    &["-L", "-f", "ipv6"],
    &["-L", "-p", "tcp"],
    &["-L", "-p", "udp"],
    &["-L", "-p", "icmp", "--icmp-type", "8"],
    &["-L", "-p", "icmpv6"],
    &["-L", "-p", "sctp"],
    &["-L", "-p", "gre"],
    &["-L", "-m", "1"],
    &["-L", "-m", "2/0x2"],
    &["-L", "-u", "ASSURED"],
    &["-L", "-u", "SEEN_REPLY"],
    &["-L", "-u", "ASSURED,SEEN_REPLY"],
    &["-L", "-s", "198.18.0.1"],
    &["-L", "-d", "2001:2:0:2::2"],
    &["-L", "-p", "tcp", "--dport", "443"],
    &["-L", "-r", "198.19.0.1"],
    &["-L", "-p", "tcp", "--state", "ESTABLISHED"],
    &["-L", "expect"],
    &["-L", "dying"],
    &["-L", "unconfirmed"],
    &["-C"],
    &["-S"],
    // One connection.
    &["-G", "-p", "tcp", "-s", "198.18.0.1", "-d", "198.19.0.1", "--sport", "1000", "--dport", "80"],
    &["-G", "-p", "udp", "-s", "2001:2:0:1::2", "-d", "2001:2:0:2::2", "--sport", "5001", "--dport", "53"],
    &[
        "-G",
        "-p",
        "icmp",
        "-s",
        "198.18.0.3",
        "-d",
        "198.19.0.3",
        "--icmp-type",
        "8",
        "--icmp-code",
        "0",
        "--icmp-id",
        "77",
    ],
    &["-G", "-p", "tcp", "-r", "198.19.0.1", "-q", "198.18.0.1", "--reply-port-src", "443", "--reply-port-dst", "1001"],
    &["-G", "-p", "tcp", "-s", "198.18.0.1", "-d", "198.19.0.1", "--sport", "999", "--dport", "80"],
    &["-G", "expect", "-p", "tcp", "-s", "198.18.0.1", "-d", "198.19.0.1", "--sport", "999", "--dport", "80"],
    // Creating what exists.
    &[
        "-I",
        "-p",
        "tcp",
        "-s",
        "198.18.0.1",
        "-d",
        "198.19.0.1",
        "--sport",
        "1000",
        "--dport",
        "80",
        "--state",
        "ESTABLISHED",
        "-t",
        "50",
    ],
    &["-I", "-p", "udp", "-s", "198.18.0.2", "-d", "198.19.0.2", "--sport", "5000", "--dport", "53", "-t", "50"],
    // Updates.
    // One connection at a time: when an update selects several, conntrack 1.4.7 prints only the
    // first (its query of the second reads the first query's leftover ack, against the kernel
    // too), and which one is first depends on the table's order.
    &["-U", "-p", "tcp", "-s", "198.18.0.1", "--sport", "1000", "-m", "9"],
    &["-U", "-p", "tcp", "-s", "198.18.0.1", "--sport", "1001", "-m", "9"],
    &["-L", "-m", "9"],
    &["-U", "-p", "udp", "-s", "198.18.0.2", "-u", "ASSURED"],
    &["-L", "-p", "udp"],
    &["-U", "-p", "tcp", "-s", "198.18.0.1", "--sport", "1001", "--state", "ESTABLISHED", "-u", "ASSURED"],
    &["-L", "-p", "tcp"],
    &["-U", "-p", "icmp", "-s", "198.18.0.3", "-t", "900"],
    &["-L", "-p", "icmp"],
    &["-U", "-p", "tcp", "-s", "198.18.0.99", "-m", "5"],
    &["-U", "-p", "udp", "-s", "198.18.0.2", "-t", "50", "-u", "SEEN_REPLY"],
    // Deletions.
    &["-D", "-p", "tcp", "--dport", "443"],
    &["-D", "-p", "tcp", "-s", "198.18.0.1", "-d", "198.19.0.1", "--sport", "1001", "--dport", "443"],
    &["-D", "-m", "2"],
    &["-D", "-p", "gre"],
    &["-D", "-f", "ipv6", "-p", "udp"],
    &["-L"],
    &["-C"],
    &["-F", "expect"],
    &[
        "-D",
        "expect",
        "-p",
        "tcp",
        "--tuple-src",
        "198.18.0.1",
        "--tuple-dst",
        "198.19.0.1",
        "--sport",
        "1",
        "--dport",
        "2",
    ],
    // Flush, and afterwards.
    &["-F"],
    &["-L"],
    &["-C"],
    &["-G", "-p", "tcp", "-s", "198.18.0.1", "-d", "198.19.0.1", "--sport", "1000", "--dport", "80"],
    &["-D", "-p", "tcp", "-s", "198.18.0.1", "-d", "198.19.0.1", "--sport", "1000", "--dport", "80"],
    &[
        "-I",
        "-p",
        "tcp",
        "-s",
        "198.18.0.1",
        "-d",
        "198.19.0.1",
        "--sport",
        "1000",
        "--dport",
        "80",
        "--state",
        "CLOSE_WAIT",
        "-t",
        "60",
    ],
    &["-L"],
];

#[test]
fn control_plane() {
    require_root_and_tools();
    let mut ns = testbed::Namespaces::default();
    let name = format!("fwt-{}-ctl", std::process::id());
    ns.add(&name).expect("a namespace for the kernel's table");
    let kernel = KernelNs(name.clone());
    let d = Daemon::start("ferrowall-ctnetlink-", None, &[]);
    let ours = Ferrowall(&d);
    let mut diff = Diff::new();
    for args in POPULATE.iter().chain(CONTROL_CASES) {
        diff.check(&kernel, &ours, args);
    }
    // ferroctl conntrack against conntrack, both on ferrowall, on a table filled again.
    assert_eq!(ours.conntrack(&["-F"]).code, Some(0));
    for args in POPULATE {
        let out = ours.conntrack(args);
        assert_eq!(out.code, Some(0), "{out}");
    }
    let ferroctl = |args: &[&str]| {
        run(Command::new(&bins().ferroctl).arg("conntrack").arg("--socket").arg(&d.socket).args(args), LIMIT)
    };
    for (conntrack_args, ferroctl_args) in [
        (&["-L"][..], &["list"][..]),
        (&["-L", "-m", "1"], &["list", "-m", "1"]),
        (&["-L", "-f", "ipv6"], &["list", "-f", "ipv6"]),
        (&["-L", "-p", "tcp"], &["list", "-p", "tcp"]),
        (&["-L", "-s", "198.18.0.1", "-p", "tcp"], &["list", "-s", "198.18.0.1", "-p", "tcp"]),
        (&["-L", "-u", "ASSURED"], &["list", "-u", "ASSURED"]),
        (&["-C"], &["count"]),
        (&["-S"], &["stats"]),
        (
            &["-G", "-p", "sctp", "-s", "198.18.0.4", "-d", "198.19.0.4", "--sport", "3868", "--dport", "3868"],
            &["get", "-p", "sctp", "-s", "198.18.0.4", "-d", "198.19.0.4", "--sport", "3868", "--dport", "3868"],
        ),
    ] {
        let what = format!("ferroctl conntrack {} vs conntrack {}", ferroctl_args.join(" "), conntrack_args.join(" "));
        diff.outputs(&what, &ours.conntrack(conntrack_args), &ferroctl(ferroctl_args), false);
    }
    // Changes through ferroctl, seen by conntrack.
    let del =
        ferroctl(&["delete", "-p", "udp", "-s", "198.18.0.2", "-d", "198.19.0.2", "--sport", "5000", "--dport", "53"]);
    assert_eq!(del.code, Some(0), "{del}");
    let gone = ours.conntrack(&[
        "-G",
        "-p",
        "udp",
        "-s",
        "198.18.0.2",
        "-d",
        "198.19.0.2",
        "--sport",
        "5000",
        "--dport",
        "53",
    ]);
    assert_eq!(gone.code, Some(1), "deleted by ferroctl: {gone}");
    let missing =
        ferroctl(&["get", "-p", "udp", "-s", "198.18.0.2", "-d", "198.19.0.2", "--sport", "5000", "--dport", "53"]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (Some(1), "ferroctl: conntrack get: such conntrack doesn't exist\n")
    );
    let flush = ferroctl(&["flush", "-m", "3"]);
    assert_eq!(flush.code, Some(0), "{flush}");
    assert_eq!(
        ours.conntrack(&["-L", "-m", "3"]).stderr,
        "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.\n"
    );
    let json = ferroctl(&["--json", "count"]);
    assert!(json.stdout.starts_with("{\"count\": 8, \"max\": "), "{json}");
    let json = ferroctl(&["list", "--json", "-p", "sctp"]);
    assert!(json.stdout.contains("\"protocol\": \"sctp\", \"protonum\": 132, \"state\": \"ESTABLISHED\""), "{json}");
    diff.finish("ctnetlink control plane");
}

// ---- traffic through a kernel router and through ferrowall ----

/// Runs the same traffic from the client namespace of `tb`: TCP held open (IPv4, IPv6), TCP
/// closed, UDP (IPv4, IPv6), ICMP and ICMPv6 echo with fixed identifiers.
fn send_traffic(tb: &mut Testbed) {
    let (c, s) = (tb.c.clone(), tb.s.clone());
    tb.spawn(&s, &["python3", "-c", &echo_server(0.0)]);
    tb.spawn(&c, &["python3", "-c", &tcp_client(false, "198.18.1.2", 40001, "198.19.1.2", true)]);
    tb.spawn(&c, &["python3", "-c", &tcp_client(true, "2001:2:0:1::2", 40005, "2001:2:0:2::2", true)]);
    let out = tb.exec(&c, &["python3", "-c", &tcp_client(false, "198.18.1.2", 40002, "198.19.1.2", false)]);
    assert_eq!(out.code, Some(0), "tcp client: {out}");
    let out = tb.exec(&c, &["python3", "-c", &udp_client(false, "198.18.1.2", 40003, "198.19.1.2")]);
    assert_eq!(out.code, Some(0), "udp client: {out}");
    let out = tb.exec(&c, &["python3", "-c", &udp_client(true, "2001:2:0:1::2", 40004, "2001:2:0:2::2")]);
    assert_eq!(out.code, Some(0), "udp6 client: {out}");
    let out = tb.exec(&c, &["ping", "-c", "1", "-W", "2", "-e", "4242", "198.19.1.2"]);
    assert_eq!(out.code, Some(0), "ping: {out}");
    let out = tb.exec(&c, &["ping", "-6", "-c", "1", "-W", "2", "-e", "4243", "2001:2:0:2::2"]);
    assert_eq!(out.code, Some(0), "ping6: {out}");
}

/// Waits until `side` lists `n` connections in `state` (bounded).
fn wait_for(side: &dyn Side, state: &str, n: usize) {
    let start = clock::now();
    loop {
        let out = side.conntrack(&["-L"]);
        if out.stdout.matches(state).count() >= n {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{}: {n} {state} connections: {out}", side.name());
        clock::sleep(Duration::from_millis(100));
    }
}

/// The connection messages of a ctnetlink dump, with `CTA_ID` and `CTA_TIMEOUT` zeroed, sorted.
fn normalised_objects(msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = msgs
        .iter()
        .filter(|m| Header::parse(m).is_ok_and(|h| h.kind == wire::nlmsg_type(msg::NEW)))
        .map(|m| {
            let mut m = m.clone();
            // No port ids either: the kernel's and the daemon's differ.
            m[12..16].fill(0);
            let attrs: Vec<(usize, usize, u16)> = Attrs::new(&m[20..])
                .map_while(Result::ok)
                .map(|a| (20 + a.offset + 4, a.payload.len(), a.kind))
                .collect();
            for (at, len, kind) in attrs {
                if kind == wire::attr::ID || kind == wire::attr::TIMEOUT {
                    m[at..at + len].fill(0);
                }
            }
            m
        })
        .collect();
    v.sort();
    v
}

/// A dump request, as `conntrack -L` sends it.
fn dump_request() -> Vec<u8> {
    let mut b = MessageBuilder::new(wire::nlmsg_type(msg::GET), flags::REQUEST | flags::DUMP, 7, 0);
    b.nfgenmsg(Nfgenmsg::default());
    b.finish()
}

/// The daemon's reply messages to one request, over its control socket (a plain Unix client).
fn ask_daemon(d: &Daemon, req: &[u8]) -> Vec<Vec<u8>> {
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).expect("socket");
    sock.connect(&socket2::SockAddr::unix(&d.socket).expect("address")).expect("connecting to the daemon");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = vec![0u8; 65536];
    let mut recv = |sock: &socket2::Socket| -> Vec<u8> {
        let n = std::io::Read::read(&mut &*sock, &mut buf).expect("reading from the daemon");
        buf[..n].to_vec()
    };
    let _hello = recv(&sock);
    sock.send(req).expect("sending");
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let d = recv(&sock);
        for m in Messages::new(&d) {
            let m = m.expect("well-formed");
            let whole = d[m.offset..m.offset + m.header.len as usize].to_vec();
            let end =
                m.header.kind == proto::netlink::msg_type::DONE || m.header.kind == proto::netlink::msg_type::ERROR;
            out.push(whole);
            if end {
                return out;
            }
        }
    }
    panic!("no end to the daemon's answer");
}

#[test]
fn traffic() {
    require_root_and_tools();
    let mut ktb = Testbed::kernel_router("fwck-");
    let mut ftb = Testbed::router("fwcf-");
    let d = Daemon::start_in(
        Some(&ftb.m),
        "ferrowall-ctnetlink-router-",
        Some(ROUTER_CONFIG),
        &[("fw.rules", ROUTER_RULES)],
    );
    let kernel = KernelNs(ktb.m.clone());
    let ours = Ferrowall(&d);
    send_traffic(&mut ktb);
    send_traffic(&mut ftb);
    for side in [&kernel as &dyn Side, &ours] {
        wait_for(side, "ESTABLISHED", 2);
        wait_for(side, "TIME_WAIT", 1);
    }
    let mut diff = Diff::new();
    // The same dump request to both, byte for byte (up to ids, timeouts and port ids).
    diff.cases += 1;
    let sock = NetlinkSocket::open(&ktb.m).expect("netlink socket in the kernel router");
    sock.send(&dump_request()).expect("sending to the kernel");
    let mut kmsgs = Vec::new();
    for _ in 0..100 {
        let got = sock.drain(1 << 16).expect("reading from the kernel");
        let done =
            got.iter().any(|d| Messages::new(d).flatten().any(|m| m.header.kind == proto::netlink::msg_type::DONE));
        for d in got {
            for m in Messages::new(&d).flatten() {
                kmsgs.push(d[m.offset..m.offset + m.header.len as usize].to_vec());
            }
        }
        if done {
            break;
        }
        clock::sleep(Duration::from_millis(20));
    }
    let (ko, fo) = (normalised_objects(&kmsgs), normalised_objects(&ask_daemon(&d, &dump_request())));
    // TCP open (2) and closed, UDP (2), ICMP, ICMPv6: at least these seven on both sides.
    assert!(ko.len() >= 7 && fo.len() >= 7, "kernel dumped {}, ferrowall {}", ko.len(), fo.len());
    if ko != fo {
        let hexes = |v: &[Vec<u8>]| {
            v.iter().map(|m| m.iter().map(|b| format!("{b:02x}")).collect::<String>()).collect::<Vec<_>>().join("\n  ")
        };
        diff.failures.push(format!("dump bytes differ:\n kernel:\n  {}\n ferrowall:\n  {}", hexes(&ko), hexes(&fo)));
    }
    for args in [
        &["-L"][..],
        &["-L", "-f", "ipv6"],
        &["-L", "-p", "tcp"],
        &["-L", "-p", "tcp", "--state", "TIME_WAIT"],
        &["-L", "-p", "icmp"],
        &["-L", "-u", "ASSURED"],
        &["-G", "-p", "tcp", "-s", "198.18.1.2", "-d", "198.19.1.2", "--sport", "40001", "--dport", "8081"],
        &[
            "-G",
            "-p",
            "icmpv6",
            "-s",
            "2001:2:0:1::2",
            "-d",
            "2001:2:0:2::2",
            "--icmpv6-type",
            "128",
            "--icmpv6-code",
            "0",
            "--icmpv6-id",
            "4243",
        ],
        &["-C"],
        &["-U", "-p", "tcp", "-s", "198.18.1.2", "--sport", "40001", "-m", "42"],
        &["-L", "-m", "42"],
        &["-D", "-p", "udp", "-s", "198.18.1.2"],
        &["-D", "-p", "icmp"],
        &["-L"],
        &["-C"],
    ] {
        diff.check(&kernel, &ours, args);
    }
    drop(d);
    diff.finish("ctnetlink traffic");
}

// ---- a large table ----

/// A plain client of the daemon's control socket.
struct Client {
    sock: socket2::Socket,
}

impl Client {
    fn connect(d: &Daemon) -> Client {
        let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).expect("socket");
        sock.connect(&socket2::SockAddr::unix(&d.socket).expect("address")).expect("connecting to the daemon");
        sock.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let c = Client { sock };
        let _hello = c.recv();
        c
    }

    /// One datagram, read into a buffer far larger than libmnl's, so that one longer than 4096
    /// bytes shows.
    fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 1 << 16];
        let n = std::io::Read::read(&mut &self.sock, &mut buf).expect("reading from the daemon");
        buf.truncate(n);
        buf
    }

    fn send(&self, d: &[u8]) {
        self.sock.send(d).expect("sending to the daemon");
    }
}

/// `NEW` (create, no ack) of UDP connection number `i`: 198.18.x.y:sport to 198.19.0.1:53.
fn new_udp(i: u32) -> Vec<u8> {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[198, 18, (i >> 12) as u8, (i >> 4) as u8]);
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[198, 19, 0, 1]);
    let t = wire::Tuple { family: wire::AF_INET, src, dst, proto: 17, l4: [1024 + (i & 0xf) as u16, 53] };
    let r = wire::Tuple { src: dst, dst: src, l4: [53, t.l4[0]], ..t };
    let mut b = MessageBuilder::new(wire::nlmsg_type(msg::NEW), flags::REQUEST | flags::CREATE, i, 0);
    b.nfgenmsg(Nfgenmsg { family: wire::AF_INET, version: 0, res_id: 0 });
    wire::put_tuple(&mut b, wire::attr::TUPLE_ORIG, &t);
    wire::put_tuple(&mut b, wire::attr::TUPLE_REPLY, &r);
    b.put_be32(wire::attr::TIMEOUT, 3600).put_be32(wire::attr::MARK, i % 8);
    b.finish()
}

/// A million connections: the dump streams in datagrams of at most 4096 bytes, a reader that
/// stops reading holds nothing up (another client is answered meanwhile, and the stalled dump's
/// queue stays bounded), and `conntrack -C` counts them all.
#[test]
fn large_dump() {
    require_root_and_tools();
    const N: u32 = 1_000_000;
    let d = Daemon::start("ferrowall-ctnetlink-large-", Some("max_connections = 1100000\n"), &[]);
    let filler = Client::connect(&d);
    let start = clock::now();
    let mut datagram = Vec::new();
    for i in 0..N {
        let m = new_udp(i);
        if datagram.len() + m.len() > 60_000 {
            filler.send(&datagram);
            datagram.clear();
        }
        datagram.extend(m);
    }
    filler.send(&datagram);
    // A count with an ack: answered once every NEW before it was processed.
    let mut b = MessageBuilder::new(wire::nlmsg_type(msg::GET_STATS), flags::REQUEST | flags::ACK, 1, 0);
    b.nfgenmsg(Nfgenmsg::default());
    filler.send(&b.finish());
    let count = wire::parse_stats(&filler.recv()[16..]).expect("a count");
    assert_eq!(count.0, N, "connections in the table");
    println!("large-dump: {N} connections created in {:?}", start.elapsed());

    // The dump: read one datagram, then stall while another client is served.
    let dumper = Client::connect(&d);
    dumper.send(&dump_request());
    let start = clock::now();
    let mut objects = 0usize;
    let mut datagrams = 0usize;
    let mut biggest = 0;
    let mut count_one = |d: &[u8]| -> bool {
        datagrams += 1;
        biggest = biggest.max(d.len());
        let mut done = false;
        for m in Messages::new(d) {
            let m = m.expect("well-formed messages");
            match m.header.kind {
                k if k == wire::nlmsg_type(msg::NEW) => objects += 1,
                proto::netlink::msg_type::DONE => done = true,
                k => panic!("unexpected message type {k:#x} in a dump"),
            }
        }
        done
    };
    assert!(!count_one(&dumper.recv()), "a million connections in one datagram?");
    let other = Client::connect(&d);
    let asked = clock::now();
    let mut b = MessageBuilder::new(wire::nlmsg_type(msg::GET_STATS), flags::REQUEST | flags::ACK, 2, 0);
    b.nfgenmsg(Nfgenmsg::default());
    other.send(&b.finish());
    let answer = other.recv();
    assert_eq!(wire::parse_stats(&answer[16..]).map(|c| c.0), Some(N));
    let waited = asked.elapsed();
    assert!(waited < Duration::from_secs(2), "another client waited {waited:?} behind a stalled dump");
    clock::sleep(Duration::from_millis(500));
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
    };
    let stalled_rss = rss(d.pid());
    for _ in 0..10_000_000 {
        if count_one(&dumper.recv()) {
            break;
        }
    }
    let took = start.elapsed();
    assert_eq!(objects, N as usize, "connections dumped");
    assert!(biggest <= 4096, "largest datagram {biggest} bytes");
    println!(
        "large-dump: {objects} connections dumped in {datagrams} datagrams (at most {biggest} bytes) in {took:?}; \
         the daemon's RSS while the reader stalled: {stalled_rss} kB, after: {} kB",
        rss(d.pid())
    );
    let out = d.exec("conntrack", &["-C"]);
    assert_eq!(out.stdout.trim(), N.to_string(), "{out}");
    // A filtered dump that matches nothing walks the whole table and ends with NLMSG_DONE alone.
    let out = d.exec("conntrack", &["-L", "-m", "9"]);
    assert_eq!(out.stderr, "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.\n", "{out}");
}

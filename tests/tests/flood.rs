//! Hostile traffic through the router datapath (issue 7, points 3 and 4): ferrowall routes between
//! a client and a server namespace, and an attacker port (a third veth pair, `a0` in the client
//! namespace to `r-att` on ferrowall) carries what [`ferrowall_tests::blaster`] generates.
//!
//! * A SYN flood: 1 million spoofed SYNs (random sources in 198.18.128.0/17, random ports, 25 000
//!   a second) against a table of `max_connections = 65536`, while an iperf3 TCP transfer, started
//!   before the flood, runs through it and 200 idle established connections wait. The table stays
//!   at its limit, early drop makes the room (no insert fails), no established connection is
//!   evicted (each still works, although the rules drop new connections to their ports once they
//!   are up), and the transfer keeps at least 80% of the throughput it had without the flood. The
//!   flood comes in 8 bursts of 5 s with 3 s pauses around them; the throughput without the flood
//!   is that of the same transfer in the pauses.
//! * A garbage storm: random and truncated frames, IP headers with bad versions, lengths and
//!   checksums, truncated L4 headers, bad TCP checksums, first as fast as the generator can send
//!   them, then paced: ferrowall keeps running, every frame it received is counted under the drop
//!   reason of its kind (exactly, when the receive ring lost none), no legitimate frame is dropped
//!   or lost, and a download running through the storm arrives intact.
//!
//! The server namespace drops the spoofed range at its door (an nftables `netdev` ingress rule), so
//! nothing answers the SYNs and the attacker's port carries nothing but what the generator sent:
//! its counters are the flood's. The daemon is the release build (throughput figures of a debug build mean nothing); the
//! figures print on stderr (`cargo test -p ferrowall-tests --test flood -- --nocapture`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use engine::io::datapath::DropReason;
use ferrowall_tests::blaster::{blast, Garbage, GarbageMaker, Pace, Sent, SynFlood, Target};
use ferrowall_tests::clock;
use ferrowall_tests::daemon::{bins, run, unique, Out};
use ferrowall_tests::netns::PacketSocket;
use ferrowall_tests::testbed_ns::{field, ip, random_file, sha256, Testbed, LIMIT};

/// The tests measure throughput: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The table's size.
const MAX: u64 = 65_536;

const CONFIG: &str = "interface = r-cli 198.18.1.1/24 2001:2:0:1::1/64
interface = r-srv 198.19.1.1/24 2001:2:0:2::1/64
interface = r-att 198.18.2.1/24
max_connections = 65536
rules = fw.rules
workers = 2
";

/// Established and related traffic passes, any new connection is accepted; what is neither (invalid)
/// falls to the policy.
const RULES: &str = r#"chain forward {
  policy drop
  ct state established,related accept
  ct state new accept
}
"#;

/// The rules once the connections under watch are established: new ones to their ports are
/// dropped.
const RULES_ESTABLISHED_ONLY: &str = r#"chain forward {
  policy drop
  ct state established,related accept
  tcp dport { 5201, 7000 } drop
  ct state new accept
}
"#;

/// The server's address, and the spoofed sources' prefix (dropped at the server's door).
const SERVER: &str = "198.19.1.2";
const SPOOFED: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 128, 0), 17);

/// The release build of `ferrowall` (built once, into this target directory's `release/`): the
/// daemon of these tests, whatever the tests' own profile, since throughput under a flood says
/// nothing about an unoptimised build (a debug ferrowall forwards about a sixth as much).
fn release_ferrowall() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("locating the test executable");
        let target_dir = exe.ancestors().nth(3).expect("target/<profile>/deps/<test>").to_path_buf();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut c = Command::new(cargo);
        c.args(["build", "--quiet", "--release", "-p", "ferrowall-engine", "--manifest-path"]).arg(&manifest);
        c.arg("--target-dir").arg(&target_dir);
        let out = run(&mut c, Duration::from_secs(1200));
        assert_eq!(out.code, Some(0), "building the release ferrowall: {}", out.stderr);
        let bin = target_dir.join("release").join("ferrowall");
        assert!(bin.is_file(), "{} does not exist after building it", bin.display());
        bin
    })
}

/// The release ferrowall, running in a namespace from a directory of its own (its rules, its
/// configuration, its state directory, its log): stopped by its PID (SIGTERM, then SIGKILL after
/// 10 s) and the directory removed on drop, also when a test fails.
struct Ferrowall {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Ferrowall {
    /// Starts it in namespace `ns` with `CONFIG` and `RULES`; returns once it serves its control
    /// socket.
    fn start(ns: &str) -> Ferrowall {
        let dir = std::env::temp_dir().join(unique("ferrowall-flood-"));
        std::fs::create_dir_all(&dir).expect("creating the daemon's directory");
        std::fs::write(dir.join("fw.rules"), RULES).expect("writing the rules");
        let config = dir.join("ferrowall.conf");
        std::fs::write(&config, CONFIG).expect("writing the configuration");
        let socket = dir.join("run").join("ctl.sock");
        let logf = std::fs::File::create(dir.join("daemon.log")).expect("creating the log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(release_ferrowall())
            .arg("run")
            .arg("--ctl-socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("starting ferrowall");
        let mut f = Ferrowall { child, dir, socket };
        let start = clock::now();
        while !f.log().contains("control socket listening on") {
            assert!(f.running(), "ferrowall exited at start-up: {}", f.log());
            assert!(start.elapsed() < Duration::from_secs(20), "no control socket after 20 s: {}", f.log());
            clock::sleep(Duration::from_millis(5));
        }
        f
    }

    /// What it wrote to its standard error so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// `ferroctl WHAT --socket S`, which must succeed.
    fn ctl(&self, what: &str) -> Out {
        let out = run(Command::new(&bins().ferroctl).args([what, "--socket"]).arg(&self.socket), LIMIT);
        assert_eq!(out.code, Some(0), "ferroctl {what}: {out}");
        out
    }
}

impl Drop for Ferrowall {
    fn drop(&mut self) {
        if self.running() {
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            let start = clock::now();
            while self.running() && start.elapsed() < Duration::from_secs(10) {
                clock::sleep(Duration::from_millis(5));
            }
            // Our own child, by its PID.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The testbed with its attacker port, and ferrowall routing it.
struct Bed {
    tb: Testbed,
    d: Ferrowall,
    /// The generator's socket on `a0`.
    sock: PacketSocket,
    target: Target,
}

/// A MAC address as `ip -o link` shows it for `dev` in namespace `ns`.
fn mac(tb: &Testbed, ns: &str, dev: &str) -> [u8; 6] {
    let out = tb.exec(ns, &["ip", "-o", "link", "show", "dev", dev]);
    let text = out.stdout.split("link/ether ").nth(1).unwrap_or_else(|| panic!("no MAC for {dev}: {out}"));
    let mut m = [0u8; 6];
    for (b, h) in m.iter_mut().zip(text.split_whitespace().next().unwrap_or_default().split(':')) {
        *b = u8::from_str_radix(h, 16).expect("a MAC byte");
    }
    m
}

/// A counter of interface `dev` in namespace `ns` (`/sys/class/net/DEV/statistics/NAME`).
fn dev_stat(tb: &Testbed, ns: &str, dev: &str, name: &str) -> u64 {
    let out = tb.exec(ns, &["cat", &format!("/sys/class/net/{dev}/statistics/{name}")]);
    out.stdout.trim().parse().unwrap_or_else(|_| panic!("{dev} {name}: {out}"))
}

impl Bed {
    fn new(prefix: &str) -> Bed {
        let tb = Testbed::router(prefix);
        ip(&["link", "add", "a0", "netns", &tb.c, "type", "veth", "peer", "name", "r-att", "netns", &tb.m]);
        // The client's stack stays off the attacker port (no addresses, no IPv6: no router
        // solicitations, no MLD), so that everything on it is the generator's.
        let out = tb.sysctl(&tb.c, &["net.ipv6.conf.a0.disable_ipv6=1"]);
        assert_eq!(out.code, Some(0), "{out}");
        for (ns, dev) in [(&tb.c, "a0"), (&tb.m, "r-att")] {
            let _ = tb.offloads_off(ns, dev);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // Nothing vouches for the generator's checksums: without this, veth marks what it carries
        // as checked (CHECKSUM_UNNECESSARY, TP_STATUS_CSUM_VALID), and a receiver trusting that
        // would let a bad TCP checksum through, as the kernel's conntrack would.
        let out = tb.exec(&tb.m, &["ethtool", "-K", "r-att", "rx", "off"]);
        assert_eq!(out.code, Some(0), "{out}");
        // The spoofed traffic ends at the server's door (an nftables ingress drop, before its IP
        // stack): the server neither answers nor spends the machine's two cores on it, so what the
        // flood costs is ferrowall's (and the generator's).
        for rule in [
            &["add", "table", "netdev", "flood"][..],
            &["add", "chain", "netdev", "flood", "door", "{ type filter hook ingress device s0 priority 0; }"],
            &["add", "rule", "netdev", "flood", "door", "ip", "saddr", "198.18.128.0/17", "counter", "drop"],
        ] {
            let out = tb.exec(&tb.s, &[&["nft"][..], rule].concat());
            assert_eq!(out.code, Some(0), "nft {rule:?}: {out}");
        }
        let d = Ferrowall::start(&tb.m);
        let target = Target {
            src_mac: mac(&tb, &tb.c, "a0"),
            dst_mac: mac(&tb, &tb.m, "r-att"),
            dst: SERVER.parse().expect("an address"),
            dport: 9,
            sources: SPOOFED,
        };
        let sock = PacketSocket::open(&tb.c, "a0").expect("a packet socket on a0");
        // The route through ferrowall works before anything is measured.
        let out = tb.exec(&tb.c, &["ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER]);
        assert!(out.stdout.contains("3 received"), "ping through ferrowall: {out}\n{}", d.log());
        Bed { tb, d, sock, target }
    }
}

/// `ferroctl stats`, parsed.
#[derive(Debug, Clone)]
struct Stats {
    text: String,
}

impl Stats {
    fn read(d: &Ferrowall) -> Stats {
        Stats { text: d.ctl("stats").stdout }
    }

    fn line(&self, prefix: &str) -> &str {
        self.text.lines().find(|l| l.starts_with(prefix)).unwrap_or_default()
    }

    /// A field of the `datapath:` line.
    fn datapath(&self, key: &str) -> u64 {
        field(self.line("datapath:"), key)
    }

    /// Received frames dropped for `r`.
    fn dropped(&self, r: DropReason) -> u64 {
        field(self.line("datapath dropped:"), r.name())
    }

    /// Every drop reason's count.
    fn drops(&self) -> BTreeMap<String, u64> {
        let line = self.line("datapath dropped:").trim_start_matches("datapath dropped:");
        line.split_whitespace()
            .filter_map(|w| {
                let (k, v) = w.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    /// A field of `conntrack: count=… max=…` (`count`, `max`) or of the statistics line.
    fn ct(&self, key: &str) -> u64 {
        match key {
            "count" | "max" => field(self.line("conntrack: count="), key),
            _ => field(self.line("conntrack: found="), key),
        }
    }

    /// A field of interface `name`'s line.
    fn iface(&self, name: &str, key: &str) -> u64 {
        field(self.line(&format!("interface {name}:")), key)
    }

    /// Every received frame forwarded, delivered, held or dropped under a reason.
    fn assert_every_frame_counted(&self) {
        let (rx, fwd, local, held, dropped) = (
            self.datapath("rx"),
            self.datapath("forwarded"),
            self.datapath("local"),
            self.datapath("held"),
            self.datapath("dropped"),
        );
        assert_eq!(rx, fwd + local + held + dropped, "every received frame has one outcome:\n{}", self.text);
        assert_eq!(dropped, self.drops().values().sum::<u64>(), "the reasons add up:\n{}", self.text);
    }
}

/// The stats once the datapath is idle (two reads 300 ms apart agree on `rx`), at most 10 s on.
fn settled(d: &Ferrowall) -> Stats {
    let start = clock::now();
    let mut last = Stats::read(d);
    loop {
        clock::sleep(Duration::from_millis(300));
        let now = Stats::read(d);
        if now.datapath("rx") == last.datapath("rx") || start.elapsed() > Duration::from_secs(10) {
            return now;
        }
        last = now;
    }
}

/// What iperf3 -J reported: per-second intervals (start, end, bits/s) and the bytes sent and
/// received.
#[derive(Debug, Default)]
struct Iperf {
    intervals: Vec<(f64, f64, f64)>,
    sent: u64,
    received: u64,
}

/// The number after `"key":` at or after `at` in `json`, and where it ends.
fn number_after(json: &str, key: &str, at: usize) -> Option<(f64, usize)> {
    let k = format!("\"{key}\":");
    let p = at + json[at..].find(&k)? + k.len();
    let rest = json[p..].trim_start();
    let skip = json.len() - p - rest.len();
    let len =
        rest.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))).unwrap_or(rest.len());
    Some((rest[..len].parse().ok()?, p + skip + len))
}

/// The largest size of a TCP socket buffer in namespace `ns` (`which`: `tcp_wmem` or `tcp_rmem`,
/// whose third field it is).
fn socket_buffer_max(bed: &Bed, ns: &str, which: &str) -> u64 {
    let out = bed.tb.exec(ns, &["cat", &format!("/proc/sys/net/ipv4/{which}")]);
    out.stdout
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{which} in {ns}: {out}"))
}

impl Iperf {
    /// Parses iperf3's JSON (only the fields used here).
    fn parse(json: &str) -> Iperf {
        let mut r = Iperf::default();
        let (Some(i), Some(e)) = (json.find("\"intervals\":"), json.find("\"sum_sent\":")) else { return r };
        let mut at = i;
        // Each interval's "sum" object follows its "streams"; its fields come in this order.
        while let Some(p) = json[at..e].find("\"sum\":").map(|p| at + p) {
            let Some((start, a)) = number_after(json, "start", p) else { break };
            let Some((end, b)) = number_after(json, "end", a) else { break };
            let Some((bps, c)) = number_after(json, "bits_per_second", b) else { break };
            r.intervals.push((start, end, bps));
            at = c;
        }
        r.sent = number_after(json, "bytes", e).map_or(0, |(v, _)| v as u64);
        if let Some(rcv) = json.find("\"sum_received\":") {
            r.received = number_after(json, "bytes", rcv).map_or(0, |(v, _)| v as u64);
        }
        r
    }

    /// The transfer ended normally: no error, data received in every interval, and the receiver
    /// got what the sender sent, but for what was still in flight when the sender stopped: at
    /// most what the client's send buffer and the server's receive buffer hold at their largest
    /// (`tcp_wmem` and `tcp_rmem` in their namespaces; a fixed 8 MiB was once short of it).
    fn assert_whole(&self, out: &Out, bed: &Bed) {
        assert_eq!(out.code, Some(0), "iperf3 failed: {out}");
        assert!(!out.stdout.contains("\"error\":"), "iperf3 reports an error: {out}");
        assert!(self.intervals.iter().all(|(_, _, bps)| *bps > 0.0), "the transfer stalled: {:?}", self.intervals);
        let in_flight = socket_buffer_max(bed, &bed.tb.c, "tcp_wmem") + socket_buffer_max(bed, &bed.tb.s, "tcp_rmem");
        assert!(
            self.received > 0 && self.received + in_flight >= self.sent,
            "{} of {} bytes (at most {in_flight} may be in flight)",
            self.received,
            self.sent
        );
    }

    /// Each interval's throughput in Mbit/s, for the record.
    fn series(&self) -> String {
        self.intervals.iter().map(|(_, _, b)| format!("{:.0}", b / 1e6)).collect::<Vec<_>>().join(" ")
    }

    /// The median throughput (bits/s) of the intervals lying within one of `windows` (`[from, to]`
    /// seconds), and how many there were.
    fn median_in(&self, windows: &[(f64, f64)]) -> (f64, usize) {
        let within = |s: f64, e: f64| windows.iter().any(|&(from, to)| s >= from && e <= to + 0.05);
        let mut v: Vec<f64> = self.intervals.iter().filter(|(s, e, _)| within(*s, *e)).map(|(_, _, b)| *b).collect();
        v.sort_by(f64::total_cmp);
        (v.get(v.len() / 2).copied().unwrap_or(0.0), v.len())
    }
}

/// Starts iperf3 (TCP, `secs` seconds, 1 s intervals) from the client to the server's `port`, on
/// a thread of its own (bounded: killed by its PID 30 s after it should have ended).
fn iperf3_start(bed: &Bed, port: u16, secs: u32) -> std::thread::JoinHandle<(Out, Iperf)> {
    let (t, p) = (secs.to_string(), port.to_string());
    let args: Vec<String> =
        ["ip", "netns", "exec", &bed.tb.c, "iperf3", "-c", SERVER, "-p", &p, "-t", &t, "-i", "1", "-J"]
            .iter()
            .map(|a| a.to_string())
            .collect();
    std::thread::spawn(move || {
        let out = run(Command::new(&args[0]).args(&args[1..]), Duration::from_secs(u64::from(secs) + 30));
        let parsed = Iperf::parse(&out.stdout);
        (out, parsed)
    })
}

/// The median throughput (bits/s) of a `secs`-second iperf3 run to `port`, its first second
/// (slow start) left out; the transfer must end normally.
fn baseline(bed: &Bed, port: u16, secs: u32) -> (f64, Iperf) {
    let (out, r) = iperf3_start(bed, port, secs).join().expect("iperf3's thread");
    r.assert_whole(&out, bed);
    let (m, n) = r.median_in(&[(1.0, f64::from(secs))]);
    assert!(n > 0, "no intervals: {out}");
    (m, r)
}

/// A Python client in the client namespace holding `n` TCP connections to an echo server: it
/// checks one round trip on each when connected, and again when told to.
struct Idle {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const ECHO_SERVER: &str = "import selectors, socket
sel = selectors.DefaultSelector()
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('0.0.0.0', 7000)); l.listen(1024); l.setblocking(False)
sel.register(l, selectors.EVENT_READ)
while True:
    for k, _ in sel.select():
        if k.fileobj is l:
            c, _ = l.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)
            continue
        c = k.fileobj
        try:
            d = c.recv(4096)
        except OSError:
            d = b''
        if d:
            c.sendall(d)
        else:
            sel.unregister(c); c.close()
";

const ECHO_CLIENT: &str = "import socket, sys, time
conns = [socket.create_connection(('198.19.1.2', 7000), timeout=5) for _ in range(int(sys.argv[1]))]
def round_trips():
    ok, deadline = 0, time.monotonic() + 30
    for i, c in enumerate(conns):
        m = b'%d.' % i
        if time.monotonic() > deadline:
            break
        try:
            c.sendall(m)
            got = b''
            while len(got) < len(m):
                d = c.recv(64)
                if not d:
                    break
                got += d
            ok += got == m
        except OSError:
            pass
    return ok
print('ready', round_trips(), flush=True)
sys.stdin.readline()
print('after', round_trips(), flush=True)
";

impl Idle {
    fn start(tb: &Testbed, n: usize) -> Idle {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &tb.c, "python3", "-c", ECHO_CLIENT, &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the echo client");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Idle { child, stdin, stdout }
    }

    /// The client's next line: `ready N` or `after N` with N round trips that worked.
    fn line(&mut self) -> String {
        let mut l = String::new();
        let _ = self.stdout.read_line(&mut l);
        l.trim().to_owned()
    }

    /// Round trips on every connection again.
    fn again(&mut self) -> String {
        let _ = self.stdin.write_all(b"go\n");
        let _ = self.stdin.flush();
        self.line()
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        // Our own child, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples the table's count every `every` until `stop` (or `limit` has passed): the highest
/// count seen.
fn watch_table(d: &Ferrowall, stop: &AtomicBool, every: Duration, limit: Duration, highest: &AtomicU64) {
    let socket = d.socket.clone();
    let begin = clock::now();
    while !stop.load(Ordering::Relaxed) && begin.elapsed() < limit {
        let out = run(Command::new(&bins().ferroctl).args(["stats", "--socket"]).arg(&socket), LIMIT);
        let s = Stats { text: out.stdout };
        highest.fetch_max(s.ct("count"), Ordering::Relaxed);
        let start = clock::now();
        while start.elapsed() < every && !stop.load(Ordering::Relaxed) {
            clock::sleep(Duration::from_millis(50));
        }
    }
}

/// SYNs in the flood, the rate they are sent at, and the time limit of the flood.
const SYNS: u64 = 1_000_000;
const SYN_RATE: u64 = 25_000;
const FLOOD_LIMIT: Duration = Duration::from_secs(60);
/// The flood comes in bursts of equal size with pauses between them (and before the first and after
/// the last): the transfer's throughput without the flood is measured in the pauses, in the same
/// transfer, so that the comparison does not depend on how busy this shared machine was at another
/// moment (two separate baseline runs differed by up to 2x).
const BURSTS: u64 = 8;
const PAUSE: Duration = Duration::from_secs(3);
/// Idle established connections that must survive the flood.
const IDLE: usize = 200;

#[test]
fn syn_flood_keeps_the_table_at_its_limit_and_established_traffic_flowing() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let begin = clock::now();
    let mut bed = Bed::new("fwf-");
    let s = bed.tb.s.clone();
    bed.tb.spawn(&s, &["iperf3", "-s", "-p", "5201"]);
    bed.tb.spawn(&s, &["python3", "-c", ECHO_SERVER]);
    clock::sleep(Duration::from_millis(500));

    // Established connections first: 200 idle ones (each has done a round trip: ASSURED).
    let mut idle = Idle::start(&bed.tb, IDLE);
    assert_eq!(idle.line(), format!("ready {IDLE}"), "the idle connections\n{}", bed.d.log());

    // The transfer starts, then the flood: 1 M spoofed SYNs at a fixed rate, in bursts.
    let before = settled(&bed.d);
    let burst = Duration::from_secs(SYNS / BURSTS / SYN_RATE);
    let secs = (1.5 + (burst + PAUSE).as_secs_f64() * BURSTS as f64 + PAUSE.as_secs_f64()).ceil() as u32 + 1;
    let transfer = iperf3_start(&bed, 5201, secs);
    let t0 = clock::now();
    clock::sleep(Duration::from_millis(1000));
    // From now on, only the connections already established may use ports 5201 and 7000: if the
    // flood evicted one, its next packet would be new, and dropped.
    std::fs::write(bed.d.dir.join("fw.rules"), RULES_ESTABLISHED_ONLY).expect("writing the rules");
    bed.d.ctl("reload");
    clock::sleep(Duration::from_millis(500));
    let stop = AtomicBool::new(false);
    let highest = AtomicU64::new(0);
    let setup = begin.elapsed();
    // The seconds of the transfer when the flood ran, and when it did not.
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let sent = std::thread::scope(|scope| {
        let (d, stop, highest) = (&bed.d, &stop, &highest);
        let watch_limit = FLOOD_LIMIT + (PAUSE * BURSTS as u32) + Duration::from_secs(10);
        scope.spawn(move || watch_table(d, stop, Duration::from_secs(2), watch_limit, highest));
        let mut g = SynFlood::new(bed.target, 0x5eed);
        let mut total = Sent::default();
        let mut quiet_from = t0.elapsed().as_secs_f64();
        for _ in 0..BURSTS {
            clock::sleep(PAUSE);
            let from = t0.elapsed().as_secs_f64();
            off.push((quiet_from, from));
            let pace = Pace { count: SYNS / BURSTS, rate: Some(SYN_RATE), time: FLOOD_LIMIT / BURSTS as u32 };
            let sent = blast(&bed.sock, pace, |_, buf| g.next_into(buf))?;
            quiet_from = t0.elapsed().as_secs_f64();
            on.push((from, quiet_from));
            total.sent += sent.sent;
            total.refused += sent.refused;
            total.elapsed += sent.elapsed;
        }
        clock::sleep(PAUSE);
        off.push((quiet_from, t0.elapsed().as_secs_f64()));
        stop.store(true, Ordering::Relaxed);
        Ok::<_, std::io::Error>(total)
    });
    let sent: Sent = sent.expect("the flood");
    let (out, transfer) = transfer.join().expect("the transfer's thread");
    let after = settled(&bed.d);

    // The flood as ferrowall saw it.
    let received = after.iface("r-att", "rx_packets") - before.iface("r-att", "rx_packets");
    let ring_lost = after.iface("r-att", "rx_dropped") - before.iface("r-att", "rx_dropped");
    let veth_lost = dev_stat(&bed.tb, &bed.tb.c, "a0", "tx_dropped");
    let ct = |k: &str| after.ct(k) - before.ct(k);
    let door = bed.tb.exec(&bed.tb.s, &["nft", "list", "chain", "netdev", "flood", "door"]);
    let at_door = field(&door.stdout.replace("counter packets ", "counter_packets="), "counter_packets");
    let tx_lost = after.iface("r-srv", "tx_dropped") - before.iface("r-srv", "tx_dropped");
    // The first second of each window is left out: the transfer adapts to the change.
    let settle = |w: &[(f64, f64)]| w.iter().map(|&(from, to)| (from + 1.0, to)).collect::<Vec<_>>();
    let (under_flood, n_on) = transfer.median_in(&settle(&on));
    let (baseline, n_off) = transfer.median_in(&settle(&off));
    let windows = |w: &[(f64, f64)]| w.iter().map(|(a, b)| format!("{a:.1}-{b:.1}")).collect::<Vec<_>>().join(" ");
    eprintln!(
        "SYN flood: {} SYNs sent in {} bursts, {:.1} s in all ({:.0}/s, {} refused), {received} received by \
         ferrowall ({ring_lost} lost in its rings, {veth_lost} in the veth), {at_door} forwarded to the server's \
         door; table {} of {} (highest seen {}), insert {} early_drop {} insert_failed {} drop {}; iperf3 \
         {:.0} Mbit/s without the flood (median of {n_off} seconds in the pauses), {:.0} Mbit/s under it \
         (median of {n_on} seconds in the bursts): {:.0}%; set-up {:.1} s, whole test {:.1} s",
        sent.sent,
        BURSTS,
        sent.elapsed.as_secs_f64(),
        sent.rate(),
        sent.refused,
        after.ct("count"),
        after.ct("max"),
        highest.load(Ordering::Relaxed),
        ct("insert"),
        ct("early_drop"),
        ct("insert_failed"),
        ct("drop"),
        baseline / 1e6,
        under_flood / 1e6,
        100.0 * under_flood / baseline,
        setup.as_secs_f64(),
        begin.elapsed().as_secs_f64(),
    );
    eprintln!("  Mbit/s per second: {}; bursts at {}; pauses at {}", transfer.series(), windows(&on), windows(&off));
    assert!(n_on >= 2 * BURSTS as usize && n_off >= BURSTS as usize, "too few seconds measured: {n_on} / {n_off}");

    // The whole flood went out, and ferrowall received (or its rings lost) every SYN.
    assert_eq!(sent.sent, SYNS, "the generator fell short of the count within {FLOOD_LIMIT:?}: {sent:?}");
    assert_eq!(received + ring_lost + veth_lost, sent.sent, "every SYN accounted for:\n{}", after.text);
    assert!(received >= SYNS * 9 / 10, "most SYNs reached ferrowall: {received}");
    // Each was accepted as new and forwarded (its transmit ring permitting).
    assert!(at_door <= received && at_door + tx_lost >= received, "{at_door} at the server's door: {door}");

    // Early drop made the room for every new connection: nothing was refused for a full table.
    assert_eq!(after.ct("max"), MAX);
    // (Two random sources can repeat a tuple: such a SYN finds its connection rather than making one.)
    assert!(ct("insert") + 100 >= received, "a new connection for (nearly) every SYN:\n{}", after.text);
    assert!(
        ct("early_drop") + MAX >= ct("insert"),
        "an early drop for every insert beyond the table's size:\n{}",
        after.text
    );
    assert_eq!(ct("insert_failed"), 0, "no SYN found the table full with nothing to drop:\n{}", after.text);
    assert_eq!(after.dropped(DropReason::CtTableFull), 0, "{}", after.text);

    // No established connection was evicted: the 200 idle ones still work, which they could not
    // if their entries had gone (a packet of theirs would be new, and new ones to port 7000 are
    // dropped now).
    let refused = after.dropped(DropReason::RuleDropForward);
    assert_eq!(idle.again(), format!("after {IDLE}"), "round trips on the idle connections after the flood");
    let now = settled(&bed.d);
    assert_eq!(now.dropped(DropReason::RuleDropForward), refused, "a packet of theirs was new:\n{}", now.text);

    // The transfer ran through the flood to its end (its connection, new-proof since the reload,
    // was never evicted), at 80% or more of its throughput without the flood.
    transfer.assert_whole(&out, &bed);
    assert!(under_flood >= 0.8 * baseline, "{:.0} of {:.0} Mbit/s under the flood", under_flood / 1e6, baseline / 1e6);
    now.assert_every_frame_counted();

    // The table stayed at its limit: full, and never over it (sampled every 2 s during the flood).
    let count = after.ct("count");
    assert!(count >= MAX - 16, "the table is full:\n{}", after.text);
    assert!(count <= MAX && highest.load(Ordering::Relaxed) <= MAX, "the table went over its limit:\n{}", after.text);
}

/// Garbage frames of every kind, in turn, from `g`; counts sent per kind.
fn garbage(bed: &Bed, pace: Pace, seed: u64) -> (Sent, BTreeMap<Garbage, u64>) {
    let mut g = GarbageMaker::new(bed.target, seed);
    let mut kinds = BTreeMap::new();
    let sent = blast(&bed.sock, pace, |i, buf| {
        let kind = Garbage::ALL[(i % Garbage::ALL.len() as u64) as usize];
        g.next_into(kind, buf);
        *kinds.entry(kind).or_insert(0u64) += 1;
    })
    .expect("the garbage storm");
    assert_eq!(sent.refused, 0, "the kernel refused garbage frames: {sent:?}");
    (sent, kinds)
}

#[test]
fn garbage_is_dropped_under_named_reasons_and_harms_nothing() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let begin = clock::now();
    let mut bed = Bed::new("fwg-");
    let (c, s) = (bed.tb.c.clone(), bed.tb.s.clone());
    bed.tb.spawn(&s, &["iperf3", "-s", "-p", "5201"]);
    let www = bed.d.dir.join("www");
    std::fs::create_dir_all(&www).expect("a directory to serve");
    random_file(&www.join("blob"), 16);
    let want = sha256(&www.join("blob"));
    bed.tb.spawn(&s, &["python3", "-m", "http.server", "8080", "--directory", &www.to_string_lossy()]);
    clock::sleep(Duration::from_millis(500));
    let (base, base_run) = baseline(&bed, 5201, 4);

    // 1. As fast as the generator sends, for 5 s, while a transfer and a download (16 MB at
    // 4 MB/s) run through ferrowall.
    let before = settled(&bed.d);
    let transfer = iperf3_start(&bed, 5201, 7);
    clock::sleep(Duration::from_millis(1000));
    let got = bed.d.dir.join("got");
    let mut curl = Command::new("ip")
        .args(["netns", "exec", &c, "curl", "-s", "-m", "30", "--limit-rate", "4M", "-o"])
        .arg(&got)
        .arg(format!("http://{SERVER}:8080/blob"))
        .stdin(Stdio::null())
        .spawn()
        .expect("starting curl");
    let pace = Pace { count: 5_000_000, rate: None, time: Duration::from_secs(5) };
    let (sent, kinds) = garbage(&bed, pace, 0xbad);
    let (out, during) = transfer.join().expect("the transfer's thread");
    let downloaded = wait_bounded(&mut curl, Duration::from_secs(30));
    assert!(bed.d.running(), "ferrowall died under garbage: {}", bed.d.log());
    let after = settled(&bed.d);
    let received = after.iface("r-att", "rx_packets") - before.iface("r-att", "rx_packets");
    let ring_lost = after.iface("r-att", "rx_dropped") - before.iface("r-att", "rx_dropped");
    let veth_lost = dev_stat(&bed.tb, &c, "a0", "tx_dropped");
    let counted = |r: DropReason| after.dropped(r) - before.dropped(r);
    let by_reason: u64 = Garbage::ALL.iter().map(|k| counted(k.expected())).sum();
    let legit_lost = legit_ring_drops(&before, &after);
    let (storm, _) = during.median_in(&[(2.0, 6.0)]);
    eprintln!(
        "garbage at full rate: {} frames in {:.1} s ({:.0}/s), {received} received by ferrowall ({ring_lost} lost in \
         its rings, {veth_lost} in the veth), {by_reason} counted under their kinds' reasons; legitimate frames lost \
         in the rings {legit_lost}; iperf3 {:.0} Mbit/s without, {:.0} Mbit/s during ({:.0}%)",
        sent.sent,
        sent.elapsed.as_secs_f64(),
        sent.rate(),
        base / 1e6,
        storm / 1e6,
        100.0 * storm / base
    );
    eprintln!("  Mbit/s per second, without: {}; during: {}", base_run.series(), during.series());
    for k in Garbage::ALL {
        eprintln!("  {k:?}: sent {}, counted {} as {}", kinds[&k], counted(k.expected()), k.expected());
    }
    after.assert_every_frame_counted();
    assert_eq!(received + ring_lost + veth_lost, sent.sent, "every frame accounted for:\n{}", after.text);
    assert_eq!(by_reason, received, "every frame received counted under its kind's reason:\n{}", after.text);
    // And nothing else was dropped: not one legitimate frame.
    let dropped = after.datapath("dropped") - before.datapath("dropped");
    assert_eq!(dropped, by_reason, "drops besides the garbage's:\n{}", after.text);
    for k in Garbage::ALL {
        assert!(counted(k.expected()) <= kinds[&k], "{k:?}: more counted than sent");
        assert!(counted(k.expected()) > 0, "{k:?}: none counted");
    }
    during.assert_whole(&out, &bed);
    assert!(downloaded, "the download through the storm did not finish");
    assert_eq!(sha256(&got), want, "the download through the storm is corrupted");

    // 2. Paced so that the rings lose nothing: every frame counted, exactly, under its kind's
    // reason, while a transfer runs at full speed.
    let before = settled(&bed.d);
    let transfer = iperf3_start(&bed, 5201, 6);
    clock::sleep(Duration::from_millis(1000));
    let pace = Pace { count: PACED, rate: Some(PACED_RATE), time: Duration::from_secs(10) };
    let (sent, kinds) = garbage(&bed, pace, 0xfeed);
    let (out, during) = transfer.join().expect("the transfer's thread");
    let after = settled(&bed.d);
    let ring_lost = after.iface("r-att", "rx_dropped") - before.iface("r-att", "rx_dropped");
    let counted = |r: DropReason| after.dropped(r) - before.dropped(r);
    let legit_lost = legit_ring_drops(&before, &after);
    let (paced, _) = during.median_in(&[(2.0, 5.0)]);
    eprintln!(
        "garbage paced: {} frames at {:.0}/s, {ring_lost} lost in the rings, legitimate frames lost in the rings \
         {legit_lost}; iperf3 {:.0} Mbit/s during ({:.0}%); whole test {:.1} s",
        sent.sent,
        sent.rate(),
        paced / 1e6,
        100.0 * paced / base,
        begin.elapsed().as_secs_f64()
    );
    eprintln!("  Mbit/s per second, during: {}", during.series());
    assert_eq!(sent.sent, PACED, "{sent:?}");
    assert_eq!(ring_lost, 0, "the paced storm overflowed the rings");
    for k in Garbage::ALL {
        assert_eq!(counted(k.expected()), kinds[&k], "{k:?} counted as {}:\n{}", k.expected(), after.text);
    }
    after.assert_every_frame_counted();
    let dropped = after.datapath("dropped") - before.datapath("dropped");
    assert_eq!(dropped, PACED, "drops besides the garbage's:\n{}", after.text);
    assert_eq!(legit_lost, 0, "legitimate frames lost in the rings:\n{}", after.text);
    during.assert_whole(&out, &bed);
    // Its throughput is the shared machine's to vary (see the README); half of it gone would be
    // the storm's doing.
    assert!(paced >= 0.5 * base, "{:.0} of {:.0} Mbit/s during the paced storm", paced / 1e6, base / 1e6);
    // No garbage made a connection.
    let table = bed.d.ctl("conntrack").stdout;
    assert!(!table.contains(" dport=9 "), "{table}");
}

/// Frames the client's and the server's ports lost in ferrowall's receive rings between two reads.
fn legit_ring_drops(before: &Stats, after: &Stats) -> u64 {
    ["r-cli", "r-srv"].iter().map(|i| after.iface(i, "rx_dropped") - before.iface(i, "rx_dropped")).sum()
}

/// Garbage frames in the paced storm, and their rate.
const PACED: u64 = 100_000;
const PACED_RATE: u64 = 25_000;

/// Waits up to `limit` for `child` (ours) to exit; whether it succeeded. Killed by its PID if it
/// overruns.
fn wait_bounded(child: &mut Child, limit: Duration) -> bool {
    let start = clock::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.success();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        clock::sleep(Duration::from_millis(20));
    }
}

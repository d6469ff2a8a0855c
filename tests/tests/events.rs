//! Connection events (issue 6, point 2): the real `conntrack -E`, and a raw netlink listener, on
//! the kernel as the router and on ferrowall as the router through the shim, for the same traffic.
//!
//! * `events_are_the_kernels`: TCP opened and closed (IPv4) and held open (IPv6), UDP and ICMP
//!   over IPv4 and IPv6, short timeouts set with `nfct timeout default-set` so that the
//!   connections expire, and `conntrack -U`, `-I`, `-D` on both. `conntrack -E` must print the
//!   same events for every connection, in the same order, up to timeouts (within a few seconds)
//!   and ids; connections are compared one by one, since the order of events of different
//!   connections is not deterministic (nor is it in the kernel). A raw listener (Python's socket
//!   module, through the shim on ferrowall's side) compares the event messages byte for byte, up
//!   to ids, timeouts and the requester's port id (only whether there is one; `conntrack -E`
//!   prints it for an event a request caused, with the requesting program's name if it is still
//!   running). `ferroctl
//!   conntrack events` must print what `conntrack -E` prints; an unprivileged listener is refused
//!   as the kernel refuses it.
//! * `a_stalled_listener_loses_events_not_the_datapath`: listeners that do not read (a raw one,
//!   and `conntrack -E` stopped with SIGSTOP) while traffic creates tens of thousands of
//!   connections: a download through ferrowall completes meanwhile, the daemon's memory stays
//!   bounded, `ferroctl stats` counts the lost events, and the listeners, when they read at last,
//!   get what was queued, one `ENOBUFS` (conntrack warns once and goes on), and later events.
//!
//! Needs root, `conntrack`, `nfct`, `nft`, `ping`, `setpriv`, `curl` and `python3`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrowall_tests::daemon::{bins, run, Daemon, Out};
use ferrowall_tests::testbed_ns::{
    echo_server, ferroctl, field, tcp_client, udp_client, Testbed, LIMIT, ROUTER_CONFIG, ROUTER_RULES,
};
use ferrowall_tests::{clock, cmd, testbed};
use proto::ctnetlink as wire;
use proto::netlink::{Attrs, Header};

fn require_root_and_tools() {
    let uid = cmd::run("id", &["-u"]).expect("running id");
    assert_eq!(uid.trim(), "0", "needs root (it creates network namespaces)");
    for tool in ["conntrack", "nfct", "nft", "ping", "setpriv", "curl", "python3"] {
        cmd::run("sh", &["-c", &format!("command -v {tool}")])
            .unwrap_or_else(|e| panic!("required tool `{tool}` is not installed: {e}"));
    }
    testbed::remove_stale_namespaces().expect("removing namespaces left by earlier runs");
}

/// Where the tools run: in the kernel router's namespace, or against ferrowall through the shim.
enum Side<'a> {
    Kernel(&'a str),
    Ferrowall(&'a Daemon),
}

impl Side<'_> {
    fn name(&self) -> &'static str {
        match self {
            Side::Kernel(_) => "kernel",
            Side::Ferrowall(_) => "ferrowall",
        }
    }

    /// `program args` as this side runs a netfilter tool.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        match self {
            Side::Kernel(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]).args(args);
                c
            }
            Side::Ferrowall(d) => {
                let mut c = Command::new(&bins().ferroctl);
                c.arg("exec").arg("--socket").arg(&d.socket).arg("--").arg(program).args(args);
                c
            }
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Out {
        run(&mut self.command(program, args), LIMIT)
    }

    /// `conntrack args`, which must succeed.
    fn conntrack(&self, args: &[&str]) -> Out {
        let out = self.run("conntrack", args);
        assert_eq!(out.code, Some(0), "{}: conntrack {args:?}: {out}", self.name());
        out
    }
}

/// A process in the background whose output goes to files; interrupted to stop, killed (by its
/// PID) on drop.
struct Listener {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Listener {
    fn start(cmd: &mut Command, dir: &Path, name: &str) -> Listener {
        let (out, err) = (dir.join(format!("{name}.out")), dir.join(format!("{name}.err")));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("creating the output file"))
            .stderr(fs::File::create(&err).expect("creating the error file"))
            .spawn()
            .expect("starting a listener");
        Listener { child: Some(child), out, err }
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Sends `sig` (a `kill` signal name) by PID.
    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(c.id().to_string()).status();
        }
    }

    /// Interrupts it (SIGINT) and waits up to 10 s for its end; its exit code.
    fn interrupt(&mut self) -> Option<i32> {
        self.signal("INT");
        self.wait(Duration::from_secs(10))
    }

    /// Waits up to `limit` for its end (then kills it); its exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let start = clock::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            clock::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A raw listener: joins groups 1 to 3 with `bind` (and group 3 once more with
/// `NETLINK_ADD_MEMBERSHIP`) and writes every datagram it receives in hex, one per line, and
/// `ENOBUFS` for an overrun; `ready` once subscribed.
const RAW_LISTENER: &str = r#"
import errno, signal, socket, sys
signal.signal(signal.SIGINT, lambda *a: sys.exit(0))
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.bind((0, 3))
s.setsockopt(270, 1, 3)
assert s.getsockname()[1] == 7, s.getsockname()
out = open(sys.argv[1], "w")
print("ready", flush=True)
while True:
    try:
        d = s.recv(65536)
    except OSError as e:
        if e.errno != errno.ENOBUFS:
            raise
        out.write("ENOBUFS\n"); out.flush()
        continue
    out.write(d.hex() + "\n"); out.flush()
"#;

// ---- traffic ----

/// The timeouts that make the traffic's connections expire within seconds.
const SHORT_TIMEOUTS: [&[&str]; 4] = [
    &["timeout", "default-set", "inet", "udp", "unreplied", "3", "replied", "3"],
    &["timeout", "default-set", "inet", "icmp", "timeout", "3"],
    &["timeout", "default-set", "inet6", "icmpv6", "timeout", "3"],
    &["timeout", "default-set", "inet", "tcp", "time_wait", "3"],
];

/// The connections that end (expire or are deleted): each has a DESTROY.
const ENDING: usize = 7;

/// Runs the traffic and the requests on one side: short timeouts; TCP held open (IPv6) and TCP
/// opened and closed (IPv4); UDP and ICMP echo over IPv4 and IPv6; a mark set on the held
/// connection; a connection created and deleted with `conntrack`; the held one deleted. Then
/// waits (bounded) until every ending connection has reported its DESTROY to `text`, running
/// `conntrack -L` meanwhile (the kernel reaps expired connections it meets in a dump).
fn traffic(tb: &mut Testbed, side: &Side, text: &Listener) {
    for args in SHORT_TIMEOUTS {
        let out = side.run("nfct", args);
        assert_eq!(out.code, Some(0), "{}: nfct {args:?}: {out}", side.name());
    }
    let (c, s) = (tb.c.clone(), tb.s.clone());
    tb.spawn(&s, &["python3", "-c", &echo_server(0.5)]);
    // The clients start once the server listens (a refused attempt would be a connection too).
    let start = clock::now();
    loop {
        let out = tb.exec(&s, &["ss", "-Hlntu"]);
        if out.stdout.contains(":8081 ") && out.stdout.contains(":9001 ") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "the server does not listen: {out}");
        clock::sleep(Duration::from_millis(50));
    }
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
    // The held connection is established (its client waits for the echo before holding).
    let start = clock::now();
    while !side.conntrack(&["-L", "-f", "ipv6", "-p", "tcp"]).stdout.contains("ESTABLISHED") {
        assert!(start.elapsed() < Duration::from_secs(15), "{}: the held connection is not established", side.name());
        clock::sleep(Duration::from_millis(100));
    }
    side.conntrack(&["-U", "-p", "tcp", "-s", "2001:2:0:1::2", "-m", "42"]);
    side.conntrack(&[
        "-I",
        "-p",
        "udp",
        "-s",
        "198.18.7.1",
        "-d",
        "198.19.7.1",
        "--sport",
        "5000",
        "--dport",
        "53",
        "-t",
        "50",
    ]);
    side.conntrack(&["-D", "-p", "udp", "-s", "198.18.7.1"]);
    side.conntrack(&["-D", "-p", "tcp", "-s", "2001:2:0:1::2"]);
    let start = clock::now();
    while text.stdout().matches("[DESTROY]").count() < ENDING {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}: not every connection reported its end:\n{}",
            side.name(),
            text.stdout()
        );
        side.conntrack(&["-L"]);
        clock::sleep(Duration::from_millis(500));
    }
    // Anything late (there should be nothing) has a moment to arrive.
    clock::sleep(Duration::from_millis(500));
}

// ---- comparing ----

/// One printed event: its line with the timeout replaced by `T` and whitespace runs by one space,
/// and the timeout.
type Printed = (String, Option<u64>);

/// `conntrack -E` output by connection (protocol and original tuple), each connection's events in
/// the order printed; port ids (`[USERSPACE] portid=N`: the kernel's and the daemon's differ)
/// become `P`, and the requester's name is left out (conntrack finds it only while the requester
/// is still running when the event is printed, a race on either side).
fn by_connection(text: &str) -> BTreeMap<String, Vec<Printed>> {
    let mut map: BTreeMap<String, Vec<Printed>> = BTreeMap::new();
    for l in text.lines() {
        let mut toks: Vec<String> = l
            .split_whitespace()
            .filter(|t| !t.starts_with("progname="))
            .map(|t| if t.starts_with("portid=") { "portid=P".to_owned() } else { t.to_owned() })
            .collect();
        let mut timeout = None;
        if toks.len() > 3 {
            if let Ok(t) = toks[3].parse::<u64>() {
                timeout = Some(t);
                toks[3] = "T".into();
            }
        }
        let first = toks.iter().position(|t| t.starts_with("src=")).unwrap_or(toks.len());
        let second =
            toks.iter().skip(first + 1).position(|t| t.starts_with("src=")).map_or(toks.len(), |p| first + 1 + p);
        let key = format!(
            "{} {}",
            toks.get(1).map_or("", String::as_str),
            toks[first..second].iter().filter(|t| t.contains('=')).cloned().collect::<Vec<_>>().join(" ")
        );
        map.entry(key).or_default().push((toks.join(" "), timeout));
    }
    map
}

/// Compares two `conntrack -E` outputs connection by connection; the differences.
fn compare_text(what: &str, k: &str, f: &str) -> Vec<String> {
    let (km, fm) = (by_connection(k), by_connection(f));
    let mut diffs = Vec::new();
    for key in km.keys().chain(fm.keys().filter(|k| !km.contains_key(*k))) {
        let (a, b) = (km.get(key).cloned().unwrap_or_default(), fm.get(key).cloned().unwrap_or_default());
        let same = a.len() == b.len()
            && a.iter().zip(&b).all(|(x, y)| {
                x.0 == y.0 && x.1.is_some() == y.1.is_some() && x.1.zip(y.1).is_none_or(|(p, q)| p.abs_diff(q) <= 5)
            });
        if !same {
            let show =
                |v: &[Printed]| v.iter().map(|(l, t)| format!("  {l}  (timeout {t:?})")).collect::<Vec<_>>().join("\n");
            diffs.push(format!("{what}: {key}\n kernel:\n{}\n ferrowall:\n{}", show(&a), show(&b)));
        }
    }
    diffs
}

/// A raw listener's event messages by connection (the bytes of `CTA_TUPLE_ORIG`), with `CTA_ID`
/// and `CTA_TIMEOUT` values zeroed and the port id replaced by whether there is one (the kernel's
/// and the daemon's port ids differ); also the number of `ENOBUFS` seen.
fn raw_by_connection(text: &str) -> (BTreeMap<String, Vec<String>>, usize) {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut enobufs = 0;
    for l in text.lines() {
        if l == "ENOBUFS" {
            enobufs += 1;
            continue;
        }
        let mut m: Vec<u8> =
            (0..l.len() / 2).filter_map(|i| u8::from_str_radix(&l[2 * i..2 * i + 2], 16).ok()).collect();
        let Ok(h) = Header::parse(&m) else { continue };
        assert_eq!(h.len as usize, m.len(), "one event per datagram: {l}");
        let pid = u32::from(h.pid != 0);
        m[12..16].copy_from_slice(&pid.to_ne_bytes());
        let attrs: Vec<(usize, usize, u16)> =
            Attrs::new(&m[20..]).map_while(Result::ok).map(|a| (20 + a.offset + 4, a.payload.len(), a.kind)).collect();
        let mut key = String::new();
        for (at, len, kind) in attrs {
            match kind {
                wire::attr::ID | wire::attr::TIMEOUT => m[at..at + len].fill(0),
                wire::attr::TUPLE_ORIG => key = m[at..at + len].iter().map(|b| format!("{b:02x}")).collect(),
                _ => {}
            }
        }
        map.entry(key).or_default().push(m.iter().map(|b| format!("{b:02x}")).collect());
    }
    (map, enobufs)
}

fn compare_raw(k: &str, f: &str) -> Vec<String> {
    let ((km, ke), (fm, fe)) = (raw_by_connection(k), raw_by_connection(f));
    let mut diffs = Vec::new();
    if ke != 0 || fe != 0 {
        diffs.push(format!("raw listeners overran: kernel {ke}, ferrowall {fe}"));
    }
    for key in km.keys().chain(fm.keys().filter(|k| !km.contains_key(*k))) {
        let (a, b) = (km.get(key).cloned().unwrap_or_default(), fm.get(key).cloned().unwrap_or_default());
        if a != b {
            diffs.push(format!(
                "event bytes of {key}:\n kernel:\n  {}\n ferrowall:\n  {}",
                a.join("\n  "),
                b.join("\n  ")
            ));
        }
    }
    diffs
}

/// Starts `conntrack -E` and the raw listener on `side`; they are subscribed once this returns.
fn listen(side: &Side, dir: &Path, ns_or_daemon: &str) -> (Listener, Listener) {
    let text = Listener::start(&mut side.command("conntrack", &["-E"]), dir, &format!("{}-text", side.name()));
    let raw_out = dir.join(format!("{}-raw.hex", side.name()));
    let raw = Listener::start(
        &mut side.command("python3", &["-c", RAW_LISTENER, &raw_out.to_string_lossy()]),
        dir,
        &format!("{}-raw", side.name()),
    );
    let start = clock::now();
    while !raw.stdout().contains("ready") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{ns_or_daemon}: the raw listener did not start: {}",
            raw.stderr()
        );
        clock::sleep(Duration::from_millis(20));
    }
    (text, raw)
}

/// Listeners of the conntrack groups in namespace `ns` (from `/proc/net/netlink`: protocol 12,
/// groups 7).
fn kernel_listeners(ns: &str) -> usize {
    let out = run(Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/netlink"]), LIMIT);
    out.stdout
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == "12" && u32::from_str_radix(f[3], 16).is_ok_and(|g| g & 7 == 7)
        })
        .count()
}

/// The `events` line of `ferroctl stats`.
fn events_line(d: &Daemon) -> String {
    ferroctl(d, "stats").stdout.lines().find(|l| l.starts_with("events: ")).map(str::to_owned).unwrap_or_default()
}

fn wait_for_listeners(what: &str, n: usize, count: impl Fn() -> usize) {
    let start = clock::now();
    while count() < n {
        assert!(start.elapsed() < Duration::from_secs(15), "{what}: {n} listeners did not subscribe");
        clock::sleep(Duration::from_millis(20));
    }
}

#[test]
fn events_are_the_kernels() {
    require_root_and_tools();
    let mut ktb = Testbed::kernel_router("fwek-");
    let mut ftb = Testbed::router("fwef-");
    let d = Daemon::start_in(Some(&ftb.m), "ferrowall-events-", Some(ROUTER_CONFIG), &[("fw.rules", ROUTER_RULES)]);
    let km = ktb.m.clone();
    let (kernel, ours) = (Side::Kernel(&km), Side::Ferrowall(&d));
    let dir = d.dir.clone();

    // The kernel first.
    let (mut k_text, mut k_raw) = listen(&kernel, &dir, &km);
    wait_for_listeners("kernel", 2, || kernel_listeners(&km));
    traffic(&mut ktb, &kernel, &k_text);

    // Then ferrowall, with ferroctl's listeners besides.
    let (mut f_text, mut f_raw) = listen(&ours, &dir, "ferrowall");
    let fctl = |json: bool| {
        let mut c = Command::new(&bins().ferroctl);
        c.arg("conntrack").arg("--socket").arg(&d.socket);
        if json {
            c.arg("--json");
        }
        c.arg("events");
        c
    };
    let mut f_ctl = Listener::start(&mut fctl(false), &dir, "ferroctl-events");
    let mut f_json = Listener::start(&mut fctl(true), &dir, "ferroctl-events-json");
    wait_for_listeners("ferrowall", 4, || field(&events_line(&d), "listeners") as usize);
    traffic(&mut ftb, &ours, &f_text);

    // An unprivileged listener is refused, as the kernel refuses it (the socket opened to anyone).
    let nobody = ["--reuid", "65534", "--regid", "65534", "--clear-groups", "conntrack", "-E"];
    let k_nobody = kernel.run("setpriv", &nobody);
    fs::set_permissions(&d.socket, std::os::unix::fs::PermissionsExt::from_mode(0o666)).expect("chmod");
    let f_nobody = d.exec_public("setpriv", &nobody);
    assert_eq!(k_nobody.code, Some(1), "{k_nobody}");
    assert_eq!((f_nobody.code, &f_nobody.stderr), (k_nobody.code, &k_nobody.stderr), "unprivileged conntrack -E");

    let stats = events_line(&d);
    let (kc, fc) = (k_text.interrupt(), f_text.interrupt());
    k_raw.interrupt();
    f_raw.interrupt();
    f_ctl.interrupt();
    f_json.interrupt();
    let (k, f) = (k_text.stdout(), f_text.stdout());
    println!("--- kernel\n{k}--- ferrowall\n{f}--- ferrowall stats\n{stats}");

    let mut diffs = compare_text("conntrack -E", &k, &f);
    assert_eq!((kc, fc), (Some(0), Some(0)), "conntrack -E exit codes");
    if k_text.stderr() != f_text.stderr() {
        diffs.push(format!("conntrack -E stderr:\n kernel: {}\n ferrowall: {}", k_text.stderr(), f_text.stderr()));
    }
    let (k_hex, f_hex) = (
        fs::read_to_string(dir.join("kernel-raw.hex")).unwrap_or_default(),
        fs::read_to_string(dir.join("ferrowall-raw.hex")).unwrap_or_default(),
    );
    diffs.extend(compare_raw(&k_hex, &f_hex));
    // ferroctl prints what conntrack prints, event for event (all listeners get the same bytes;
    // whether the requester was still there to be named is a race).
    let norm = |t: &str| {
        t.lines()
            .map(|l| l.split_whitespace().filter(|w| !w.starts_with("progname=")).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    if norm(&f_ctl.stdout()) != norm(&f) {
        diffs.push(format!("ferroctl conntrack events:\n{}\n--- conntrack -E:\n{f}", f_ctl.stdout()));
    }
    let json = f_json.stdout();
    let events = f.lines().count();
    if json.lines().count() != events || !json.lines().all(|l| l.starts_with("{\"event\": \"")) {
        diffs.push(format!("ferroctl --json events ({events} expected):\n{json}"));
    }
    let cases = by_connection(&k).len();
    for d in &diffs {
        println!("{d}\n");
    }
    println!("events: {cases} connections, {events} events; {} difference(s)", diffs.len());
    // Every kind of event was seen: NEW, UPDATE, DESTROY, with the expiries' and deletes'.
    assert!(events >= 25 && f.contains("[NEW]") && f.contains("[UPDATE]") && f.contains("TIME_WAIT"), "{f}");
    assert_eq!(field(&stats, "lost"), 0, "{stats}");
    assert!(field(&stats, "delivered") >= 4 * events as u64, "{stats}");
    assert!(diffs.is_empty(), "{} difference(s) from the kernel; see above", diffs.len());
}

// ---- a listener that does not read ----

/// A listener that subscribes, says `ready`, and reads nothing until the file `go` exists in its
/// directory; then reads until 2 s pass without an event, writes `drained events=N enobufs=M`,
/// and reads on until one more event comes (at most 20 s): `later events=N enobufs=M`.
const STALLED: &str = r#"
import errno, os, socket, sys, time
d = sys.argv[1]
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.bind((0, 7))
print("ready", flush=True)
for _ in range(3000):
    if os.path.exists(os.path.join(d, "go")):
        break
    time.sleep(0.1)
def read(idle, want):
    events = enobufs = 0
    s.settimeout(idle)
    while events < want:
        try:
            s.recv(65536)
            events += 1
        except socket.timeout:
            break
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            enobufs += 1
    return events, enobufs
e, n = read(2, 1 << 30)
print(f"drained events={e} enobufs={n}", flush=True)
open(os.path.join(d, "drained"), "w").close()
e, n = read(20, 1)
print(f"later events={e} enobufs={n}", flush=True)
"#;

/// New UDP flows from the client: one datagram from each of 500 source ports to each of 60
/// destination ports, the same 30 000 flows on every run, at about 10 000 a second (what a debug
/// build of the router forwards without dropping).
const UDP_FLOWS: &str = "import socket, time\nfor sp in range(500):\n    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    u.bind(('198.18.1.2', 20000 + sp))\n    for dp in range(60):\n        u.sendto(b'x', ('198.19.1.2', 7000 + dp))\n    u.close()\n    time.sleep(0.006)\n";

/// The daemon's resident memory, in kB.
fn rss_kb(d: &Daemon) -> u64 {
    let status = fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

#[test]
fn a_stalled_listener_loses_events_not_the_datapath() {
    require_root_and_tools();
    let mut tb = Testbed::router("fwes-");
    let d = Daemon::start_in(Some(&tb.m), "ferrowall-stalled-", Some(ROUTER_CONFIG), &[("fw.rules", ROUTER_RULES)]);
    let c = tb.c.clone();
    let s = tb.s.clone();
    let mut listener = Listener::start(
        &mut Side::Ferrowall(&d).command("python3", &["-c", STALLED, &d.dir.to_string_lossy()]),
        &d.dir,
        "stalled",
    );
    let start = clock::now();
    while !listener.stdout().contains("ready") {
        assert!(start.elapsed() < Duration::from_secs(15), "the listener did not start: {}", listener.stderr());
        clock::sleep(Duration::from_millis(20));
    }
    // And the real conntrack -E, stopped (SIGSTOP) for the floods.
    let mut ct =
        Listener::start(&mut Side::Ferrowall(&d).command("conntrack", &["-E", "-e", "NEW"]), &d.dir, "ct-stalled");
    wait_for_listeners("ferrowall", 2, || field(&events_line(&d), "listeners") as usize);
    ct.signal("STOP");

    // The flows stay for the whole test (no DESTROY from their expiry).
    let out = d.nfct(&["timeout", "default-set", "inet", "udp", "unreplied", "600"]);
    assert_eq!(out.code, Some(0), "{out}");
    let flood = |name: &str| {
        let mut f =
            Listener::start(Command::new("ip").args(["netns", "exec", &c, "python3", "-c", UDP_FLOWS]), &d.dir, name);
        assert_eq!(f.wait(Duration::from_secs(60)), Some(0), "flood: {}", f.stderr());
    };

    // Round 1 while a 10 MB download runs: the download completes, events are lost.
    let rss_start = rss_kb(&d);
    std::thread::scope(|scope| {
        scope.spawn(|| flood("flood-1"));
        tb.serve_and_download(&c, &s, &d, 10, &["http://198.19.1.2:8080/blob"], "30");
    });
    let after_one = events_line(&d);
    let rss_one = rss_kb(&d);
    assert!(field(&after_one, "lost") > 2_000, "events must be lost for the stalled listeners: {after_one}");
    // Round 2: the same flows flushed and created again, twice (120 000 events and no more
    // connections than before): the loss grows, the memory does not.
    for i in 0..2 {
        let tracked = ferroctl(&d, "conntrack").stdout.lines().count();
        assert!(tracked >= 25_000, "the flows are tracked: {tracked}");
        let out = run(Command::new(&bins().ferroctl).args(["conntrack", "flush", "--socket"]).arg(&d.socket), LIMIT);
        assert_eq!(out.code, Some(0), "{out}");
        flood(&format!("flood-2-{i}"));
    }
    clock::sleep(Duration::from_millis(500));
    let after_two = events_line(&d);
    let rss_two = rss_kb(&d);
    println!("rss: {rss_start} kB at the start, {rss_one} kB after round 1, {rss_two} kB after round 2");
    println!("{after_one}\n{after_two}");
    assert!(field(&after_two, "lost") > field(&after_one, "lost") + 40_000, "{after_one}\n{after_two}");
    assert!(rss_two < rss_one + 16 * 1024, "the daemon grows with the lost events: {rss_one} kB, then {rss_two} kB");
    assert!(rss_two < rss_start + 128 * 1024, "the daemon's memory: {rss_start} kB, then {rss_two} kB");

    // The listeners read at last: what was queued for them, one ENOBUFS, then later events.
    ct.signal("CONT");
    fs::write(d.dir.join("go"), "").unwrap();
    let start = clock::now();
    while !d.dir.join("drained").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "the listener does not drain: {}", listener.stderr());
        clock::sleep(Duration::from_millis(50));
    }
    let out = tb.exec(&c, &["ping", "-c", "1", "-W", "2", "198.19.1.2"]);
    assert_eq!(out.code, Some(0), "ping: {out}");
    assert_eq!(listener.wait(Duration::from_secs(30)), Some(0), "{}", listener.stderr());
    let said = listener.stdout();
    println!("{said}");
    let drained = said.lines().find(|l| l.starts_with("drained ")).unwrap_or_default();
    let later = said.lines().find(|l| l.starts_with("later ")).unwrap_or_default();
    assert!(field(drained, "events") > 100, "{said}");
    assert_eq!(field(drained, "enobufs"), 1, "one ENOBUFS for the overrun: {said}");
    assert_eq!((field(later, "events"), field(later, "enobufs")), (1, 0), "{said}");
    // conntrack -E warned once, went on, and printed the ping's connection after the flows.
    let start = clock::now();
    while !ct.stdout().lines().last().is_some_and(|l| l.contains("[NEW] icmp")) {
        assert!(start.elapsed() < Duration::from_secs(30), "conntrack -E did not go on: {}", ct.stderr());
        clock::sleep(Duration::from_millis(100));
    }
    assert_eq!(ct.interrupt(), Some(0));
    let warned = ct.stderr();
    assert_eq!(warned.matches("WARNING: We have hit ENOBUFS! We are losing events.").count(), 1, "{warned}");
    let shown = ct.stdout().lines().count();
    assert!(shown > 100 && warned.contains(&format!("{shown} flow events have been shown")), "{shown}: {warned}");
    assert!(d.log().lines().all(|l| !l.contains("dropped:")), "a listener was dropped: {}", d.log());
}

/// A daemon without interfaces (no worker sweeps its table) still reports an expiry, and
/// `ferroctl conntrack events --count` stops after that many events.
#[test]
fn expiries_are_reported_without_workers() {
    require_root_and_tools();
    let d = Daemon::start("ferrowall-events-ctl-", None, &[]);
    let mut listener = Listener::start(
        Command::new(&bins().ferroctl).args(["conntrack", "events", "--count", "2", "--socket"]).arg(&d.socket),
        &d.dir,
        "events",
    );
    wait_for_listeners("ferrowall", 1, || field(&events_line(&d), "listeners") as usize);
    let out = d.exec(
        "conntrack",
        &["-I", "-p", "udp", "-s", "198.18.7.1", "-d", "198.19.7.1", "--sport", "5000", "--dport", "53", "-t", "2"],
    );
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(listener.wait(Duration::from_secs(15)), Some(0), "{}", listener.stderr());
    let lines: Vec<String> =
        listener.stdout().lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("[NEW] udp 17 "), "{lines:?}");
    assert!(lines[0].contains(" src=198.18.7.1 dst=198.19.7.1 sport=5000 dport=53 [UNREPLIED] "), "{lines:?}");
    assert!(lines[0].contains(" mark=0 [USERSPACE] portid="), "a request's event names its requester: {lines:?}");
    assert!(
        lines[1].starts_with("[DESTROY] udp 17 src=198.18.7.1 dst=198.19.7.1 sport=5000 dport=53 [UNREPLIED]"),
        "expired: no timeout, no requester: {lines:?}"
    );
    assert!(!lines[1].contains("portid="), "{lines:?}");
}

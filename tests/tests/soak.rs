//! Soak (issue "Reliability", point 8): connection churn through the router-mode daemon while its
//! timeout policies are replaced, refused and deleted concurrently; resident memory flat after the
//! warm-up, use counts exact at every step, the table empty after the last timeout.
//!
//! Runs for `FERROWALL_SOAK_SECS` seconds ([`DEFAULT_SECS`] unless set; the full soak is 1800):
//! * traffic: a client in the client namespace opens short TCP connections (an echo of 4 bytes,
//!   closed with a FIN, every tenth with a reset) and UDP exchanges (source ports in turn, so each
//!   is a new connection) to a server in the server namespace, IPv4 and IPv6 in turn, at most
//!   [`RATE`] of each per second; every connection is a new conntrack entry, and the rules attach
//!   a named policy to each (`ct timeout set`, two rules per policy: one per family);
//! * the control plane, meanwhile, in a loop: every policy the rules name is replaced in place
//!   (`NLM_F_REPLACE`, random values, on one long-lived control connection) and read back; the
//!   unmodified nfct (through the shim) is refused with `EBUSY` when it deletes or re-adds one; a
//!   spare policy is added, replaced and deleted; every third round the rule set switches to the
//!   other generation of policies (`tcp-a`/`udp-a` ↔ `tcp-b`/`udp-b`, created just before), and
//!   the generation it left is deleted while connections still use it (they fall back to the
//!   defaults). After every step `ferroctl timeout --json list` must show exactly the expected
//!   policies with use = 1 + the rules naming them (connections do not count, as in Linux: the
//!   kernel's conntrack extension holds no reference, `nf_ct_untimeout` detaches it); now and
//!   then no entry of the table may have more time left than the longest timeout in force;
//! * the daemon's `VmRSS` is sampled [`SAMPLES`] times; after the warm-up (the longer of 20% of the
//!   run and [`WARMUP_MIN`]) max − min must stay within [`RSS_FLAT_KIB`].
//!
//! Every timeout in force is short (defaults [`DEFAULT_TIMEOUT`] s for every protocol, set through
//! nfct at start; policies [`POLICY_MIN`]..=[`POLICY_MAX`] s), so once the churn stops the table
//! must be empty (`ferroctl stats`: `count=0`, `ferroctl conntrack` prints nothing) within the
//! longest timeout plus [`SWEEP_SLACK`]. Then an empty-policy rule set leaves every policy at
//! use 1 and `nfct timeout flush` deletes them all. The figures are printed (`--nocapture`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use ferrowall_tests::clock;
use ferrowall_tests::daemon::{Daemon, Out};
use ferrowall_tests::testbed_ns::{ferroctl, field, Testbed};
use proto::cttimeout::{self, Fields, MsgType};
use proto::netlink::{flags, msg_type, Header, HDRLEN};
use proto::private;

/// The run's length when `FERROWALL_SOAK_SECS` is not set (short enough for CI).
const DEFAULT_SECS: u64 = 25;
/// At most this many TCP connections and as many UDP exchanges per second.
const RATE: u32 = 60;
/// At most this many RSS samples over the run (and at most one a second).
const SAMPLES: u64 = 600;
/// The shortest warm-up: long enough for the table and every buffer to reach their steady size.
const WARMUP_MIN: Duration = Duration::from_secs(10);
/// How much the RSS may move (max − min) after the warm-up.
const RSS_FLAT_KIB: u64 = 4096;
/// Every default timeout, in seconds (every state of every protocol).
const DEFAULT_TIMEOUT: u32 = 3;
/// The range of the policies' values, in seconds.
const POLICY_MIN: u32 = 2;
const POLICY_MAX: u32 = 6;
/// What the table may take beyond the longest timeout to empty (sweeps every 100 ms, a loaded CPU).
const SWEEP_SLACK: Duration = Duration::from_secs(6);
/// Rules naming each policy of the running generation (one per family).
const RULES_PER_POLICY: u32 = 2;
/// The largest share of client exchanges that may fail (lost datagrams on a shared CPU).
const MAX_FAIL_PERMILLE: u64 = 10;
/// The limit of one control-plane read.
const READ_LIMIT: Duration = Duration::from_secs(20);

const SERVER_V4: &str = "198.19.1.2";
const SERVER_V6: &str = "2001:2:0:2::2";

const CONFIG: &str = "interface = r-cli 198.18.1.1/24 2001:2:0:1::1/64
interface = r-srv 198.19.1.1/24 2001:2:0:2::1/64
rules = fw.rules
workers = 2
";

/// The rule set naming the policies of generation `g` (`None`: no policy named).
fn rules(g: Option<char>) -> String {
    let mut r = String::from(
        "chain forward {
  policy drop
  ct state established,related accept
  ct state invalid drop
  iifname \"r-srv\" ct state new drop
",
    );
    if let Some(g) = g {
        for (proto, port) in [("tcp", 7000), ("udp", 7001)] {
            r += &format!("  ip daddr {SERVER_V4} {proto} dport {port} ct timeout set \"{proto}-{g}\" accept\n");
            r += &format!("  ip6 daddr {SERVER_V6} {proto} dport {port} ct timeout set \"{proto}-{g}\" accept\n");
        }
    }
    r + "  iifname \"r-cli\" accept\n}\n"
}

/// TCP echo (port 7000) and UDP echo (port 7001), IPv4 and IPv6, one thread.
const SERVER: &str = r#"
import selectors, socket
sel = selectors.DefaultSelector()
def sock(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return s
t = sock(socket.SOCK_STREAM); t.bind(('::', 7000)); t.listen(1024); t.setblocking(False)
u = sock(socket.SOCK_DGRAM); u.bind(('::', 7001)); u.setblocking(False)
sel.register(t, selectors.EVENT_READ, 'accept')
sel.register(u, selectors.EVENT_READ, 'udp')
while True:
    for key, _ in sel.select(1):
        s = key.fileobj
        try:
            if key.data == 'accept':
                c, _ = s.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ, 'conn')
            elif key.data == 'udp':
                d, a = s.recvfrom(2048); s.sendto(d, a)
            else:
                d = s.recv(4096)
                if d:
                    s.send(d)
                else:
                    sel.unregister(s); s.close()
        except OSError:
            if key.data == 'conn':
                sel.unregister(s); s.close()
"#;

/// The churning client: `SECS RATE V4 V6`. Waits (up to 10 s) for the server, then runs; prints
/// `tcp=N tcp_fail=N udp=N udp_fail=N` and, on stderr, the errors met.
const CLIENT: &str = r#"
import collections, socket, struct, sys, time
secs, rate, v4, v6 = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
def tcp(fam, addr, rst):
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect((addr, 7000))
        s.sendall(b'soak')
        got = b''
        while len(got) < 4:
            d = s.recv(16)
            if not d:
                break
            got += d
        if got != b'soak':
            raise OSError('echo %r' % got)
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
def udp(fam, addr, i):
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        # Source ports in turn (not the kernel's random pick), so no exchange meets the live
        # entry of an earlier one: each is a new connection.
        s.bind(('::' if fam == socket.AF_INET6 else '0.0.0.0', 10000 + i % 20000))
        s.settimeout(2)
        msg = b'soak%d' % i
        s.sendto(msg, (addr, 7001))
        while True:
            d, _ = s.recvfrom(2048)
            if d == msg:
                return
start = time.monotonic()
while True:
    try:
        tcp(socket.AF_INET, v4, False); break
    except OSError:
        if time.monotonic() - start > 10:
            raise
        time.sleep(0.2)
st = collections.Counter(tcp=0, tcp_fail=0, udp=0, udp_fail=0)
errors = collections.Counter()
end = time.monotonic() + secs
nxt = time.monotonic()
i = 0
while time.monotonic() < end and i < secs * rate + 10:
    fam, addr = (socket.AF_INET6, v6) if i % 2 else (socket.AF_INET, v4)
    for kind, f in (('tcp', lambda: tcp(fam, addr, i % 10 == 5)), ('udp', lambda: udp(fam, addr, i))):
        try:
            f(); st[kind] += 1
        except OSError as e:
            st[kind + '_fail'] += 1; errors['%s %s' % (kind, e)] += 1
    i += 1
    nxt += 1.0 / rate
    lag = nxt - time.monotonic()
    if lag > 0:
        time.sleep(lag)
    elif lag < -1:
        nxt = time.monotonic()
print(' '.join('%s=%d' % kv for kv in sorted(st.items())))
for e, n in errors.most_common(10):
    print(n, e, file=sys.stderr)
"#;

/// A seeded xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A timeout value in `POLICY_MIN..=POLICY_MAX`.
    fn secs(&mut self) -> u32 {
        POLICY_MIN + (self.next() % u64::from(POLICY_MAX - POLICY_MIN + 1)) as u32
    }
}

/// One long-lived control connection sending raw cttimeout requests (for `NLM_F_REPLACE`, which
/// nfct has no command for).
struct Control {
    s: Socket,
    portid: u32,
    seq: u32,
}

impl Control {
    fn connect(path: &Path) -> Control {
        let s = Socket::new(Domain::UNIX, Type::SEQPACKET, None).expect("a SEQPACKET socket");
        s.connect(&SockAddr::unix(path).expect("the socket's address")).expect("connecting to the daemon");
        s.set_read_timeout(Some(READ_LIMIT)).expect("read timeout");
        s.set_write_timeout(Some(READ_LIMIT)).expect("write timeout");
        let mut c = Control { s, portid: 0, seq: 0 };
        let hello = c.recv();
        c.portid = private::parse_hello(&hello).expect("the daemon's greeting");
        c
    }

    fn recv(&mut self) -> Vec<u8> {
        let mut b = vec![0u8; 64 * 1024];
        let n = (&self.s).read(&mut b).expect("reading from the daemon");
        assert!(n > 0, "the daemon closed the control connection");
        b.truncate(n);
        b
    }

    /// NEW `name` with `NLM_F_REPLACE | NLM_F_ACK` and `values` (slot i → attribute i + 1): the
    /// errno of the answer (0: acked).
    fn replace(&mut self, name: &str, l3: u16, l4: u8, values: &[u32]) -> i32 {
        self.seq += 1;
        let data: Vec<(u16, u32)> = values.iter().enumerate().map(|(i, &v)| (i as u16 + 1, v)).collect();
        let f = Fields { name: Some(name.as_bytes()), l3proto: Some(l3), l4proto: Some(l4), data: Some(&data) };
        let msg = cttimeout::request_message(MsgType::New, flags::ACK | flags::REPLACE, self.seq, &f);
        assert_eq!(self.s.send(&msg).expect("sending a REPLACE"), msg.len());
        let reply = self.recv();
        let h = Header::parse(&reply).expect("a netlink reply");
        assert_eq!((h.kind, h.seq, h.pid), (msg_type::ERROR, self.seq, self.portid), "the answer to REPLACE {name}");
        let errno = reply.get(HDRLEN..HDRLEN + 4).expect("an error code");
        i32::from_ne_bytes(errno.try_into().expect("4 bytes")).wrapping_neg()
    }
}

/// A policy as `ferroctl timeout --json list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    uses: u64,
    values: Vec<u32>,
}

/// The policies, by name, from `ferroctl timeout --json list` (one object a line).
fn policies(d: &Daemon) -> BTreeMap<String, Shown> {
    let out = d.ferroctl(&["--json"], &["list"]);
    assert_eq!(out.code, Some(0), "ferroctl timeout --json list: {out}");
    let mut m = BTreeMap::new();
    for line in out.stdout.lines().filter(|l| l.contains("\"name\": \"")) {
        let name = line.split("\"name\": \"").nth(1).and_then(|r| r.split('"').next()).expect("a name");
        let uses = line.split("\"use\": ").nth(1).and_then(|r| r.split(',').next()?.trim().parse().ok());
        let policy = line.split("\"policy\": {").nth(1).and_then(|r| r.split('}').next()).unwrap_or_default();
        let values = policy.split(", ").filter_map(|kv| kv.split(": ").nth(1)?.parse().ok()).collect();
        m.insert(name.to_owned(), Shown { uses: uses.expect("a use count"), values });
    }
    m
}

/// `nfct timeout ARGS` through the shim.
fn nfct(d: &Daemon, args: &[&str]) -> Out {
    d.nfct(&[&["timeout"], args].concat())
}

/// Whether `out` is nfct's refusal with `EBUSY`.
fn busy(out: &Out) -> bool {
    out.code == Some(1) && out.stderr.contains("netlink error: Device or resource busy")
}

/// The daemon's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of KiB")
}

/// The table's size from `ferroctl stats` (`conntrack: count=N`).
fn table_count(d: &Daemon) -> u64 {
    let out = ferroctl(d, "stats");
    let line = out.stdout.lines().find(|l| l.starts_with("conntrack: count=")).expect("the table's size");
    field(line, "count")
}

/// Writes the rule file (whole, by rename) and reloads it.
fn load_rules(d: &Daemon, g: Option<char>) {
    let tmp = d.dir.join("fw.rules.new");
    std::fs::write(&tmp, rules(g)).expect("writing the rules");
    std::fs::rename(&tmp, d.dir.join("fw.rules")).expect("replacing the rules");
    ferroctl(d, "reload");
}

/// What the control loop did.
#[derive(Debug, Default)]
struct Ops {
    rounds: u64,
    replaced: u64,
    busy_delete: u64,
    busy_add: u64,
    added: u64,
    deleted: u64,
    switches: u64,
    list_checks: u64,
    /// Checks made while the table held connections.
    checks_under_load: u64,
    table_scans: u64,
    /// Table entries seen with more time left than the defaults give: a policy's doing.
    policy_timed: u64,
    /// Longest wait, after a reload, for the old rule set's uses to go.
    max_release: Duration,
}

/// The expected registry: `tcp-G` and `udp-G` of the running generation at 1 + the rules naming
/// them, `extra` at 1.
fn expect_policies(d: &Daemon, g: char, extra: &[&str], ops: &mut Ops, values: &BTreeMap<String, Vec<u32>>) {
    let got = policies(d);
    let mut want: BTreeMap<String, u64> = extra.iter().map(|n| (n.to_string(), 1)).collect();
    want.insert(format!("tcp-{g}"), 1 + u64::from(RULES_PER_POLICY));
    want.insert(format!("udp-{g}"), 1 + u64::from(RULES_PER_POLICY));
    let uses: BTreeMap<String, u64> = got.iter().map(|(n, s)| (n.clone(), s.uses)).collect();
    assert_eq!(uses, want, "policies and use counts after round {}: {got:?}", ops.rounds);
    for (name, v) in values {
        if let Some(s) = got.get(name) {
            assert_eq!(&s.values, v, "{name}: the values last set");
        }
    }
    ops.list_checks += 1;
}

/// Waits (at most 5 s) until the policies in `want` show those use counts; how long it took.
fn wait_uses(d: &Daemon, want: &[(String, u64)]) -> Duration {
    let start = clock::now();
    loop {
        let got = policies(d);
        if want.iter().all(|(n, u)| got.get(n).map(|s| s.uses) == Some(*u)) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "use counts {want:?} not reached: {got:?}");
        clock::sleep(Duration::from_millis(10));
    }
}

/// Random values for every slot of `l4` (6: TCP's 11, 17: UDP's 2).
fn random_values(rng: &mut Rng, l4: u8) -> Vec<u32> {
    let n = cttimeout::state_names(l4).expect("a known protocol").len();
    (0..n).map(|_| rng.secs()).collect()
}

/// `nfct timeout add NAME inet|inet6 PROTO STATE VALUE...` with `values`, which must succeed.
fn nfct_add(d: &Daemon, name: &str, family: &str, l4: u8, values: &[u32]) {
    let proto = if l4 == 6 { "tcp" } else { "udp" };
    let names = cttimeout::state_names(l4).expect("a known protocol");
    let mut args = vec!["add".to_owned(), name.to_owned(), family.to_owned(), proto.to_owned()];
    for (n, v) in names.iter().zip(values) {
        args.push(n.to_lowercase());
        args.push(v.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nfct(d, &args);
    assert_eq!(out.code, Some(0), "nfct timeout {args:?}: {out}");
}

/// The policies of generation `g`: (name, family, L3 number, L4 number).
fn generation(g: char) -> [(String, &'static str, u16, u8); 2] {
    [(format!("tcp-{g}"), "inet", 2, 6), (format!("udp-{g}"), "inet6", 10, 17)]
}

/// Creates the policies of generation `g` through nfct, with random values.
fn create_generation(d: &Daemon, g: char, rng: &mut Rng, ops: &mut Ops, values: &mut BTreeMap<String, Vec<u32>>) {
    for (name, family, _, l4) in generation(g) {
        let v = random_values(rng, l4);
        nfct_add(d, &name, family, l4, &v);
        values.insert(name, v);
        ops.added += 1;
    }
}

/// Checks the table: no entry may have more time left than the longest timeout; counts the
/// entries only a policy can explain.
fn scan_table(d: &Daemon, ops: &mut Ops) {
    let out = ferroctl(d, "conntrack");
    for line in out.stdout.lines() {
        let left: u32 = line.split_whitespace().nth(2).and_then(|s| s.parse().ok()).expect("a timeout column");
        assert!(left <= POLICY_MAX.max(DEFAULT_TIMEOUT), "an entry outlives every timeout in force: {line}");
        if left > DEFAULT_TIMEOUT {
            ops.policy_timed += 1;
        }
    }
    ops.table_scans += 1;
}

/// The control plane's side of the soak, until `stop` or `deadline` (and at most 100 rounds a
/// second of run): returns the generation running at the end.
fn control_loop(d: &Daemon, stop: &AtomicBool, deadline: Instant, secs: u64) -> (char, Ops) {
    let mut o = Ops::default();
    let mut rng = Rng(0x5eed_f0e7_a11d_ab1e);
    let mut ctl = Control::connect(&d.socket);
    let mut values = BTreeMap::new();
    let mut g = 'a';
    for (name, _, _, l4) in generation(g) {
        let s = policies(d).remove(&name).expect("generation a exists");
        assert_eq!(s.values.len(), cttimeout::state_names(l4).map_or(0, <[_]>::len));
        values.insert(name, s.values);
    }
    expect_policies(d, g, &[], &mut o, &values);
    for round in 0..secs * 100 {
        if stop.load(Ordering::Relaxed) || clock::now() >= deadline {
            break;
        }
        o.rounds = round + 1;
        let loaded = table_count(d) > 0;

        // Replace the running policies in place; read them back.
        for (name, _, l3, l4) in generation(g) {
            let v = random_values(&mut rng, l4);
            assert_eq!(ctl.replace(&name, l3, l4, &v), 0, "REPLACE {name}\n{}", d.log());
            values.insert(name, v);
            o.replaced += 1;
        }
        expect_policies(d, g, &[], &mut o, &values);

        // nfct may neither delete nor re-add a policy the rules name.
        for (name, family, _, l4) in generation(g) {
            let out = nfct(d, &["delete", &name]);
            assert!(busy(&out), "delete {name} while the rules name it: {out}");
            o.busy_delete += 1;
            let (proto, state) = if l4 == 6 { ("tcp", "established") } else { ("udp", "replied") };
            let out = nfct(d, &["add", &name, family, proto, state, "5"]);
            assert!(busy(&out), "add {name} again without REPLACE: {out}");
            o.busy_add += 1;
        }

        // A spare policy nothing names: added, replaced, deleted.
        let spare = format!("spare-{}", round % 7);
        let v = random_values(&mut rng, 17);
        nfct_add(d, &spare, "inet", 17, &v);
        o.added += 1;
        values.insert(spare.clone(), v);
        expect_policies(d, g, &[&spare], &mut o, &values);
        let v = random_values(&mut rng, 17);
        assert_eq!(ctl.replace(&spare, 2, 17, &v), 0, "REPLACE {spare}");
        o.replaced += 1;
        values.insert(spare.clone(), v);
        expect_policies(d, g, &[&spare], &mut o, &values);
        let out = nfct(d, &["delete", &spare]);
        assert_eq!(out.code, Some(0), "delete {spare}: {out}");
        values.remove(&spare);
        o.deleted += 1;

        // Every third round: the other generation is created and loaded; the one left behind is
        // deleted while connections still use it.
        if round % 3 == 2 {
            let next = if g == 'a' { 'b' } else { 'a' };
            create_generation(d, next, &mut rng, &mut o, &mut values);
            let old: Vec<String> = generation(g).into_iter().map(|p| p.0).collect();
            expect_policies(d, g, &[&format!("tcp-{next}"), &format!("udp-{next}")], &mut o, &values);
            load_rules(d, Some(next));
            let mut want: Vec<(String, u64)> = old.iter().map(|n| (n.clone(), 1)).collect();
            want.extend(generation(next).into_iter().map(|p| (p.0, 1 + u64::from(RULES_PER_POLICY))));
            let took = wait_uses(d, &want);
            o.max_release = o.max_release.max(took);
            for name in &old {
                let out = nfct(d, &["delete", name]);
                assert_eq!(out.code, Some(0), "delete {name} once no rule names it: {out}\n{}", d.log());
                values.remove(name);
                o.deleted += 1;
            }
            g = next;
            o.switches += 1;
            expect_policies(d, g, &[], &mut o, &values);
        }
        if loaded {
            o.checks_under_load += 1;
        }
        if round % 4 == 0 {
            scan_table(d, &mut o);
        }
        clock::sleep(Duration::from_millis(50));
    }
    (g, o)
}

/// Sets `stop` when dropped: a thread that ends (or panics) stops the others.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The churning client; killed (by its PID) if still running when dropped.
struct Client(Child);

impl Drop for Client {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The churning client, in the client namespace, for `secs` seconds.
fn start_client(tb: &Testbed, secs: u64) -> Client {
    let child = Command::new("ip")
        .args(["netns", "exec", &tb.c, "python3", "-c", CLIENT])
        .args([&secs.to_string(), &RATE.to_string(), SERVER_V4, SERVER_V6])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the client");
    Client(child)
}

/// Everything a child printed on `pipe`, once it has exited.
fn drain(pipe: Option<impl Read>) -> String {
    let mut s = String::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_string(&mut s);
    }
    s
}

/// `samples` as `min/max` and a short series (at most 12 points, evenly spaced).
fn series(samples: &[(Duration, u64)]) -> String {
    let step = samples.len().div_ceil(12).max(1);
    samples.iter().step_by(step).map(|(t, v)| format!("{}s:{v}", t.as_secs())).collect::<Vec<_>>().join(" ")
}

#[test]
fn soak_churn_with_policies_replaced_and_deleted() {
    let secs: u64 = std::env::var("FERROWALL_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SECS);
    assert!(secs >= 15, "FERROWALL_SOAK_SECS: at least 15 s (a warm-up and a measured part)");
    let mut tb = Testbed::router("fwsk-");
    let d = Daemon::start_in(Some(&tb.m), "ferrowall-soak-", Some(CONFIG), &[("fw.rules", &rules(None))]);
    let pid = d.pid();

    // Short defaults for every protocol that can appear, through nfct.
    let all = |n: &[&str]| n.iter().flat_map(|s| [s.to_lowercase(), DEFAULT_TIMEOUT.to_string()]).collect::<Vec<_>>();
    for (proto, names) in [
        ("tcp", cttimeout::names::TCP),
        ("udp", cttimeout::names::UDP),
        ("icmp", cttimeout::names::ICMP),
        ("icmpv6", cttimeout::names::ICMP),
        ("generic", cttimeout::names::ICMP),
    ] {
        let mut args = vec!["default-set".to_owned(), "inet".to_owned(), proto.to_owned()];
        args.extend(all(names));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = nfct(&d, &args);
        assert_eq!(out.code, Some(0), "nfct timeout {args:?}: {out}");
    }
    // Generation a, named by the rules.
    let mut rng = Rng(0xa5a5_5a5a_0123_4567);
    let (mut boot_ops, mut boot_values) = (Ops::default(), BTreeMap::new());
    create_generation(&d, 'a', &mut rng, &mut boot_ops, &mut boot_values);
    load_rules(&d, Some('a'));

    let server_ns = tb.s.clone();
    tb.spawn(&server_ns, &["python3", "-c", SERVER]);
    let stop = AtomicBool::new(false);
    let control_done = AtomicBool::new(false);
    let mut rss: Vec<(Duration, u64)> = Vec::new();
    let mut counts: Vec<(Duration, u64)> = Vec::new();
    let start = clock::now();
    let deadline = start + Duration::from_secs(secs);
    let mut client = start_client(&tb, secs);
    let (client_out, client_err, client_end, (g, ops)) = std::thread::scope(|sc| {
        let control = sc.spawn(|| {
            let _stop = StopOnDrop(&stop);
            let r = control_loop(&d, &stop, deadline, secs);
            control_done.store(true, Ordering::Relaxed);
            r
        });
        // A failure here stops the control loop too (the scope joins it before unwinding on).
        let _stop = StopOnDrop(&stop);
        // Sample the RSS and the table's size until the client is done (or something failed).
        let interval = Duration::from_millis((secs * 1000 / SAMPLES).max(1000));
        let mut next = start;
        let limit = deadline + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = client.0.try_wait().expect("waiting for the client") {
                break Some(st);
            }
            if stop.load(Ordering::Relaxed) && !control_done.load(Ordering::Relaxed) {
                break None; // the control loop failed: stop now
            }
            if clock::now() >= limit {
                break None;
            }
            if clock::now() >= next {
                let t = start.elapsed();
                rss.push((t, rss_kib(pid)));
                counts.push((t, table_count(&d)));
                next += interval;
            }
            clock::sleep(Duration::from_millis(100));
        };
        let client_end = clock::now();
        if status.is_none() {
            // Our own child, by its PID.
            let _ = client.0.kill();
            let _ = client.0.wait();
        }
        let r = control.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        let out = drain(client.0.stdout.take());
        let err = drain(client.0.stderr.take());
        assert!(status.is_some_and(|s| s.success()), "the client: {status:?}\n{out}\n{err}");
        (out, err, client_end, r)
    });

    // The table empties within the longest timeout (+ the sweep's slack) of the last packet.
    let longest = Duration::from_secs(u64::from(POLICY_MAX.max(DEFAULT_TIMEOUT)));
    let table_at_end = table_count(&d);
    let drained = loop {
        let n = table_count(&d);
        if n == 0 {
            break client_end.elapsed();
        }
        assert!(
            client_end.elapsed() < longest + SWEEP_SLACK,
            "{n} entries left {:?} after the last connection:\n{}",
            client_end.elapsed(),
            ferroctl(&d, "conntrack").stdout
        );
        clock::sleep(Duration::from_millis(100));
    };
    let listed = ferroctl(&d, "conntrack").stdout;
    assert_eq!(listed, "", "the table is empty");
    let rss_drained = rss_kib(pid);
    let stats = ferroctl(&d, "stats").stdout;
    let ct_line = stats.lines().find(|l| l.starts_with("conntrack: found=")).unwrap_or_default().to_owned();

    // Quiescent: the running generation at 1 + its rules; without rules naming it, at 1; flushed.
    let final_uses: BTreeMap<String, u64> = policies(&d).into_iter().map(|(n, s)| (n, s.uses)).collect();
    let want: BTreeMap<String, u64> =
        generation(g).into_iter().map(|p| (p.0, 1 + u64::from(RULES_PER_POLICY))).collect();
    assert_eq!(final_uses, want, "use counts once the table drained");
    load_rules(&d, None);
    wait_uses(&d, &generation(g).map(|p| (p.0, 1)));
    let out = nfct(&d, &["flush"]);
    assert_eq!(out.code, Some(0), "nfct timeout flush: {out}");
    assert!(policies(&d).is_empty(), "every policy deleted by the flush");

    // Figures.
    let n = |k: &str| field(&client_out, k);
    let (tcp, udp, fails) = (n("tcp"), n("udp"), n("tcp_fail") + n("udp_fail"));
    let warmup = WARMUP_MIN.max(Duration::from_secs(secs) / 5);
    let measured: Vec<u64> = rss.iter().filter(|(t, _)| *t >= warmup).map(|s| s.1).collect();
    let (lo, hi) = (measured.iter().min().copied().unwrap_or(0), measured.iter().max().copied().unwrap_or(0));
    let peak_table = counts.iter().map(|c| c.1).max().unwrap_or(0);
    eprintln!(
        "soak: {secs} s, client tcp={tcp} udp={udp} failed={fails} ({})\n\
         soak: conntrack {ct_line}; table at the end of the churn {table_at_end}, peak sampled {peak_table}, empty {:.1} s after the last connection\n\
         soak: policy ops: {} rounds, {} replaced, {} added, {} deleted, EBUSY {} deletes + {} adds, {} generation switches (uses released within {:?}), {} registry checks ({} with connections in the table), {} table scans ({} entries timed by a policy)\n\
         soak: VmRSS after {}s warm-up: min {lo} KiB, max {hi} KiB (Δ {} KiB, limit {RSS_FLAT_KIB}); after draining {rss_drained} KiB\n\
         soak: VmRSS series {}\n\
         soak: table series {}\n\
         soak: final use counts {final_uses:?}, then 1 each without rules, then flushed",
        client_err.trim().replace('\n', "; "),
        drained.as_secs_f64(),
        ops.rounds,
        ops.replaced,
        ops.added,
        ops.deleted,
        ops.busy_delete,
        ops.busy_add,
        ops.switches,
        ops.max_release,
        ops.list_checks,
        ops.checks_under_load,
        ops.table_scans,
        ops.policy_timed,
        warmup.as_secs(),
        hi - lo,
        series(&rss),
        series(&counts),
    );

    assert!(tcp + udp >= secs * u64::from(RATE), "the client churned too little: {client_out}");
    assert!(fails * 1000 <= (tcp + udp + fails) * MAX_FAIL_PERMILLE, "too many failed exchanges: {client_out}");
    assert!(field(&ct_line, "insert") >= tcp + udp, "every connection entered the table: {ct_line}");
    assert!(ops.switches >= 2 && ops.checks_under_load >= 2, "too few control rounds under traffic: {ops:?}");
    assert!(ops.policy_timed > 0, "no entry ever showed a policy's timeout: {ops:?}");
    assert!(measured.len() >= 3, "too few RSS samples after the warm-up: {rss:?}");
    assert!(hi - lo <= RSS_FLAT_KIB, "VmRSS grew after the warm-up: {}", series(&rss));
    assert!(!d.log().contains("panic"), "{}", d.log());
}

//! The unmodified Debian `nfct` against the real `ferrowall run` daemon, through `ferroctl exec` and
//! the preload shim, with the kernel as the oracle: each command runs once against the daemon and
//! once with `ip netns exec` in a fresh network namespace, and stdout, stderr and the exit code
//! must be identical. Needs root, `nfct`, `ip`, `setpriv` and `python3`; without them it fails, by
//! design.
//!
//! Socket permissions in the non-root test: the daemon creates its socket `0660 root:ctl_group`,
//! so a user outside the group cannot even connect. To check the second line of defence (a client
//! that can connect but is neither root nor in `ctl_group` gets `EPERM` for everything), the test
//! widens the socket file to `0666` after the daemon created it; members of `ctl_group` (by primary
//! or supplementary group) are served normally.
//!
//! The differential suite (`nfct_differential_suite_matches_the_kernel`) runs many short cases,
//! each on a fresh namespace and a fresh daemon: every message type nfct sends, every protocol in
//! both families, every error nfct can provoke, long names, flush with policies in use and a
//! 300-policy list. Policies are put in use by `iptables -t raw … -j CT --timeout NAME` rules in
//! the namespace and by `ct timeout set "NAME"` rules in the daemon's rule file; their use counts,
//! which `nfct timeout list` does not print, are compared from a raw dump made with python3. It
//! prints `nfct-diff: N cases, M identical` and fails listing every command whose outputs differ.
//!
//! Every daemon runs in a directory of its own under the temp dir and is stopped (by its PID) and
//! the directory removed when the test ends, also on failure; namespaces are deleted likewise.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use ferrowall_tests::clock;
use ferrowall_tests::daemon::{bins, run, unique, Daemon, Out, LIMIT};

/// Where the daemons' directories are named from (`<temp dir>/ferrowall-nfct-<pid>-<n>`).
const DIR: &str = "ferrowall-nfct-";

/// A fresh network namespace (its own cttimeout state); deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        // The module is loaded on first use in a namespace, but be explicit (best effort, once).
        static MODPROBE: Once = Once::new();
        MODPROBE.call_once(|| {
            let _ = Command::new("modprobe").arg("nfnetlink_cttimeout").stderr(Stdio::null()).status();
        });
        let name = unique("fwnfct-");
        let out = run(Command::new("ip").args(["netns", "add", &name]), LIMIT);
        assert_eq!(out.code, Some(0), "ip netns add {name}: {out}");
        Netns(name)
    }

    /// `ip netns exec NS PROGRAM ARGS...`.
    fn exec(&self, program: &str, args: &[&str]) -> Out {
        run(Command::new("ip").args(["netns", "exec", &self.0, program]).args(args), LIMIT)
    }

    fn nfct(&self, args: &[&str]) -> Out {
        self.exec("nfct", args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).stderr(Stdio::null()).status();
    }
}

/// Runs each command on both sides; the differences, described.
fn differences(d: &Daemon, ns: &Netns, commands: &[&str]) -> Vec<String> {
    let mut diffs = Vec::new();
    for c in commands {
        let args: Vec<&str> = c.split_whitespace().collect();
        let ours = d.nfct(&args);
        let kernel = ns.nfct(&args);
        if ours != kernel {
            diffs.push(format!("`nfct {c}` differs\n== ferrowall: {ours}== kernel: {kernel}"));
        }
    }
    diffs
}

fn assert_same(d: &Daemon, ns: &Netns, commands: &[&str]) {
    let diffs = differences(d, ns, commands);
    assert!(diffs.is_empty(), "{}\n(daemon log:\n{})", diffs.join("\n"), d.log());
}

#[test]
fn nfct_timeout_commands_match_the_kernel() {
    let d = Daemon::start(DIR, None, &[]);
    let ns = Netns::new();
    assert_same(
        &d,
        &ns,
        &[
            "timeout list",
            "timeout add t1 inet tcp established 100",
            "timeout list",
            "timeout get t1",
            "timeout add t1 inet tcp established 100",
            "timeout add t2 inet6 udp unreplied 5 replied 7",
            "timeout add t3 inet icmp timeout 9",
            "timeout add t4 inet generic timeout 11",
            "timeout add t5 inet sctp established 13",
            "timeout list",
            "timeout get nosuch",
            "timeout delete t1",
            "timeout delete t1",
            "timeout delete nosuch",
            "timeout list",
            "timeout flush",
            "timeout list",
            "timeout default-set inet udp unreplied 10",
            "timeout default-get inet udp",
            "timeout default-get inet tcp",
            "timeout add t6 inet udp replied 3",
            "timeout get t6",
            "timeout default-set inet tcp established 1000 close 3",
            "timeout default-get inet tcp",
        ],
    );
    drop(ns);
    let mut d = d;
    assert_eq!(d.stop(), Some(0), "SIGTERM ends the daemon cleanly: {}", d.log());
    assert!(!d.socket.exists(), "the socket file is removed on exit");
    // Proof that the commands above went to the daemon, not to this namespace's kernel: with the
    // daemon gone, the same invocation fails.
    let gone = d.nfct(&["timeout", "list"]);
    assert!(gone.code != Some(0) && gone.stderr.contains("cannot reach the ferrowall daemon"), "{gone}");
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
    let mut d = Daemon::start(DIR, None, &[]);
    let second = run(
        Command::new(&bins().ferrowall)
            .arg("run")
            .arg("--ctl-socket")
            .arg(&d.socket)
            .arg("--state-dir")
            .arg(d.dir.join("second")),
        LIMIT,
    );
    assert_eq!(second.code, Some(1), "{second}");
    assert!(second.stderr.contains("another daemon is listening there"), "{second}");
    assert_eq!(d.nfct(&["timeout", "list"]).code, Some(0), "the first daemon still serves");
    // SIGKILL leaves the socket file behind; a new daemon replaces it.
    if let Some(mut c) = d.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(d.socket.exists());
    let mut c = Command::new(&bins().ferrowall);
    c.arg("run").arg("--ctl-socket").arg(&d.socket).arg("--state-dir").arg(&d.state_dir);
    c.stdin(Stdio::null()).stdout(Stdio::null());
    d.child = Some(c.stderr(fs::File::create(&d.log).expect("log")).spawn().expect("restarting ferrowall"));
    let start = clock::now();
    loop {
        let out = d.nfct(&["timeout", "add", "again", "inet", "udp", "replied", "1"]);
        if out.code == Some(0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the new daemon serves: {out}\n{}", d.log());
        clock::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_list_of_300_policies_matches_the_kernel_and_is_cut_into_4096_byte_datagrams() {
    let d = Daemon::start(DIR, None, &[]);
    let ns = Netns::new();
    let protos =
        ["tcp established 100", "udp unreplied 5", "icmp timeout 7", "sctp established 9", "generic timeout 3"];
    let adds: Vec<String> = (0..300)
        .map(|i| {
            format!("timeout add policy-number-{i:03} inet{} {}", if i % 2 == 0 { "" } else { "6" }, protos[i % 5])
        })
        .collect();
    let mut cmds: Vec<&str> = adds.iter().map(String::as_str).collect();
    cmds.push("timeout list");
    assert_same(&d, &ns, &cmds);
    let list = d.nfct(&["timeout", "list"]);
    assert_eq!(list.stdout.matches(".l3proto").count(), 300, "{list}");
    assert!(list.stdout.len() > 4 * 4096, "the dump spans several datagrams");

    // The same dump through Python's socket module and the shim: every datagram fits libmnl's
    // 4096-byte buffer, comes from port id 0 and is addressed to our port id and sequence number.
    let script = r#"
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
pid, groups = s.getsockname()
assert pid != 0 and groups == 0, (pid, groups)
req = struct.pack('=IHHII', 20, (8 << 8) | 1, 0x1 | 0x300, 77, 0) + b'\0\0\0\0'
s.sendto(req, (0, 0))
policies, sizes, done = 0, [], False
while not done:
    d, addr = s.recvfrom(65536)
    assert addr == (0, 0), addr
    sizes.append(len(d))
    off = 0
    while off < len(d):
        l, t, f, seq, p = struct.unpack_from('=IHHII', d, off)
        assert p == pid and seq == 77, (p, pid, seq)
        if t == 3:
            done = True
        elif t == (8 << 8):
            policies += 1
        off += (l + 3) & ~3
s.send(req)
first = s.recv(65536)
assert len(first) <= 4096
s.close()
print(policies, max(sizes), len(sizes))
"#;
    let out = d.exec("python3", &["-c", script]);
    assert_eq!(out.code, Some(0), "{out}");
    let words: Vec<usize> = out.stdout.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(words.len(), 3, "{out}");
    assert_eq!(words[0], 300, "policies dumped: {out}");
    assert!(words[1] <= 4096, "largest datagram {} bytes", words[1]);
    assert!(words[2] > 4, "{} datagrams", words[2]);
}

#[test]
fn clients_outside_the_control_group_get_eperm_and_change_nothing() {
    // gid 65534 (nogroup) is the control group; uid 65534 with gid 65533 is outside it.
    let d = Daemon::start(DIR, Some("ctl_group = 65534\nmax_connections = 1000\n"), &[]);
    let meta = fs::metadata(&d.socket).expect("socket metadata");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "the socket is created 0660");
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 65534, "and given to ctl_group");
    // Let a non-member connect at all (see the module doc).
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o666)).expect("chmod the socket");
    let ns = Netns::new();
    assert_same(&d, &ns, &["timeout add kept inet tcp established 100"]);

    let outsider = ["--reuid=65534", "--regid=65533", "--clear-groups", "nfct"];
    for c in [
        "timeout add evil inet tcp established 1",
        "timeout list",
        "timeout get kept",
        "timeout delete kept",
        "timeout flush",
        "timeout default-set inet tcp established 1",
        "timeout default-get inet tcp",
    ] {
        let args: Vec<&str> = outsider.iter().copied().chain(c.split_whitespace()).collect();
        let ours = d.exec_public("setpriv", &args);
        let kernel = ns.exec("setpriv", &args);
        assert_eq!(ours, kernel, "`nfct {c}` as a non-root outsider");
        assert!(ours.stderr.contains("Operation not permitted"), "{ours}");
    }
    // Nothing changed.
    assert_same(&d, &ns, &["timeout list", "timeout default-get inet tcp"]);

    // Members of ctl_group, by primary or by supplementary group, are served.
    let member = d.exec_public(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "nfct",
            "timeout",
            "add",
            "m1",
            "inet",
            "udp",
            "replied",
            "5",
        ],
    );
    assert_eq!(member.code, Some(0), "primary-group member: {member}");
    let supplementary = d.exec_public(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65533",
            "--groups=65534",
            "nfct",
            "timeout",
            "add",
            "m2",
            "inet",
            "udp",
            "replied",
            "6",
        ],
    );
    assert_eq!(supplementary.code, Some(0), "supplementary-group member: {supplementary}");
    let list = d.nfct(&["timeout", "list"]).stdout;
    assert!(list.contains(".m1 = {") && list.contains(".m2 = {") && !list.contains("evil"), "{list}");
}

#[test]
fn python_socket_module_through_the_shim() {
    let d = Daemon::start(DIR, None, &[]);
    let script = r#"
import errno, socket, struct
AF_NETLINK, SOL_NETLINK, NETLINK_EXT_ACK = socket.AF_NETLINK, 270, 11

def dump(s, seq):
    s.sendto(struct.pack('=IHHII', 20, (8 << 8) | 1, 0x1 | 0x300, seq, 0) + b'\0\0\0\0', (0, 0))
    d, addr = s.recvfrom(4096)
    assert addr == (0, 0), addr
    l, t, f, sq, pid = struct.unpack_from('=IHHII', d)
    assert t == 3 and sq == seq, (t, sq)
    return pid

# Options: SOL_NETLINK ones are accepted, socket-level ones reach the socket, the type is netlink's.
s = socket.socket(AF_NETLINK, socket.SOCK_RAW, 12)
s.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 20
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_RAW
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == 12
auto = s.getsockname()[0]
assert auto != 0 and dump(s, 1) == auto

# An explicit port id is claimed at the daemon; a second claim of it is EADDRINUSE.
b = socket.socket(AF_NETLINK, socket.SOCK_RAW, 12)
b.bind((424242, 0))
assert b.getsockname() == (424242, 0), b.getsockname()
assert dump(b, 2) == 424242
c = socket.socket(AF_NETLINK, socket.SOCK_RAW, 12)
try:
    c.bind((424242, 0))
    raise SystemExit("second bind succeeded")
except OSError as e:
    assert e.errno == errno.EADDRINUSE, e
# After traffic, the port id is fixed, as for an autobound netlink socket.
try:
    s.bind((5151, 0))
    raise SystemExit("rebind succeeded")
except OSError as e:
    assert e.errno == errno.EINVAL, e

# A datagram larger than the daemon's 64 KiB buffer is answered with EMSGSIZE, not processed.
big = struct.pack('=IHHII', 70000, (8 << 8) | 0, 0x5, 9, 0) + bytes(70000 - 16)
s.send(big)
d = s.recv(4096)
l, t, f, sq, pid, err = struct.unpack_from('=IHHIIi', d)
assert (t, sq, err) == (2, 9, -errno.EMSGSIZE), (t, sq, err)
s.close(); b.close(); c.close()
print("ok")
"#;
    let out = d.exec("python3", &["-c", script]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "ok\n"), "{out}\n{}", d.log());
}

#[test]
fn many_concurrent_clients() {
    let mut d = Daemon::start(DIR, None, &[]);
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let d = &d;
                s.spawn(move || {
                    let name = format!("c{i}");
                    let mut bad = Vec::new();
                    let steps: [Vec<&str>; 4] = [
                        vec!["timeout", "add", &name, "inet", "tcp", "established", "100"],
                        vec!["timeout", "list"],
                        vec!["timeout", "get", &name],
                        vec!["timeout", "delete", &name],
                    ];
                    for args in &steps {
                        let out = d.nfct(args);
                        if out.code != Some(0) || !out.stderr.is_empty() {
                            bad.push(format!("client {i}: nfct {}: {out}", args.join(" ")));
                        }
                    }
                    bad
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|_| vec!["a client thread panicked".into()])).collect()
    });
    assert!(failures.is_empty(), "{}\n(daemon log:\n{})", failures.join("\n"), d.log());
    assert!(d.running(), "the daemon survived: {}", d.log());
    let list = d.nfct(&["timeout", "list"]);
    assert_eq!((list.code, list.stdout.as_str()), (Some(0), ""), "every policy was deleted: {list}");
}

#[test]
fn a_client_that_stops_reading_is_dropped_without_blocking_the_others() {
    let mut d = Daemon::start(DIR, None, &[]);
    for i in 0..300 {
        let out = d.nfct(&["timeout", "add", &format!("p{i}"), "inet", "tcp", "established", "100"]);
        assert_eq!(out.code, Some(0), "{out}");
    }
    // Thousands of dump requests, never reading a reply.
    let script = r#"
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
req = struct.pack('=IHHII', 20, (8 << 8) | 1, 0x1 | 0x300, 1, 0) + b'\0\0\0\0'
try:
    for i in range(20000):
        s.send(req)
    print("not dropped")
except OSError as e:
    print("dropped", e.errno)
"#;
    let out = d.exec("python3", &["-c", script]);
    assert!(out.stdout.starts_with("dropped"), "{out}");
    assert!(d.log().contains("stopped reading its replies"), "{}", d.log());
    assert!(d.running());
    let list = d.nfct(&["timeout", "list"]);
    assert_eq!(list.code, Some(0), "{list}");
    assert_eq!(list.stdout.matches(".l3proto").count(), 300);
}

#[test]
fn reload_replaces_the_rule_set_atomically() {
    let good = "chain forward { policy accept; }\n";
    let dir = std::env::temp_dir().join(unique("ferrowall-rules-"));
    fs::create_dir_all(&dir).expect("mkdir");
    let rules = dir.join("rules.conf");
    fs::write(&rules, good).expect("writing rules");
    let config = format!("# rules by absolute path\nrules = {}\n", rules.display());
    let mut d = Daemon::start(DIR, Some(&config), &[]);
    let ferroctl_reload = |d: &Daemon| {
        let mut c = Command::new(&bins().ferroctl);
        c.arg("reload").arg("--socket").arg(&d.socket);
        run(&mut c, LIMIT)
    };

    assert_eq!(d.nfct(&["timeout", "add", "web", "inet", "tcp", "established", "100"]).code, Some(0));
    fs::write(&rules, "chain forward {\n  tcp dport 80 ct timeout set \"web\" accept\n}\n").expect("rules");
    let out = ferroctl_reload(&d);
    assert_eq!(out.code, Some(0), "{out}\n{}", d.log());
    let busy = d.nfct(&["timeout", "delete", "web"]);
    assert!(busy.stderr.contains("Device or resource busy"), "a rule holds the policy: {busy}");

    // A bad file is refused with its position; the running rules stay (the policy is still held).
    fs::write(&rules, "chain forward {\n  tcp dport 99999 accept\n}\n").expect("rules");
    let out = ferroctl_reload(&d);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains(&format!("{}:2:", rules.display())), "the error names file:line:col: {out}");
    d.signal("HUP");
    let start = clock::now();
    while d.log().matches("keeping the running rules").count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "SIGHUP with a bad file is logged: {}", d.log());
        clock::sleep(Duration::from_millis(10));
    }
    assert!(d.running());
    let busy = d.nfct(&["timeout", "delete", "web"]);
    assert!(busy.stderr.contains("Device or resource busy"), "old rules kept: {busy}");

    // A good file without the rule releases the policy.
    fs::write(&rules, good).expect("rules");
    d.signal("HUP");
    let start = clock::now();
    loop {
        let out = d.nfct(&["timeout", "delete", "web"]);
        if out.code == Some(0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "SIGHUP reloaded: {out}\n{}", d.log());
        clock::sleep(Duration::from_millis(20));
    }
    // An unprivileged reload is refused.
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o666)).expect("chmod");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65533", "--clear-groups"]).arg(d.public_copy(&bins().ferroctl));
    c.arg("reload").arg("--socket").arg(&d.socket);
    let out = run(&mut c, LIMIT);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
    drop(d);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn bad_configuration_is_refused_with_its_line() {
    let dir = std::env::temp_dir().join(unique("ferrowall-badconf-"));
    fs::create_dir_all(&dir).expect("mkdir");
    let conf = dir.join("ferrowall.conf");
    fs::write(&conf, "# ok\nctl_group = no-such-group-here\n").expect("write");
    let out = run(
        Command::new(&bins().ferrowall).arg("run").arg("--config").arg(&conf).arg("--ctl-socket").arg(dir.join("s")),
        LIMIT,
    );
    let _ = fs::remove_dir_all(&dir);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains(&format!("{}:2: unknown group", conf.display())), "{out}");
}

#[test]
fn without_a_daemon_the_shim_says_where_it_looked() {
    let dir = std::env::temp_dir().join(unique("ferrowall-nodaemon-"));
    let sock = dir.join("ctl.sock");
    let mut c = Command::new(&bins().ferroctl);
    c.arg("exec").arg("--socket").arg(&sock).args(["--", "nfct", "timeout", "list"]);
    let out = run(&mut c, LIMIT);
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains(&format!("cannot reach the ferrowall daemon at {}", sock.display())), "{out}");
}

// ---- The differential suite: many short sequences, each on a fresh namespace and daemon ----

/// Rules naming a policy, which puts it in use: `rules` times
/// `iptables -t raw -A PREROUTING -p PROTO -j CT --timeout NAME` in the namespace (`ip6tables` for
/// an inet6 policy), and as many `meta nfproto ipv4|ipv6 meta l4proto PROTO ct timeout set "NAME"`
/// rules in the daemon's rule file.
#[derive(Debug, Clone)]
struct RuleUse {
    policy: String,
    v6: bool,
    /// nft's name of the protocol, or a number (the generic tracker).
    proto: &'static str,
    rules: usize,
}

/// One step of a differential case.
#[derive(Debug, Clone)]
enum Step {
    /// `nfct ARGS` (split at spaces) on both sides: stdout, stderr and exit code must be identical.
    Nfct(String),
    /// The same as uid 65534 outside every group (`setpriv`): neither root nor in a control group.
    Outsider(String),
    /// More rules naming a policy: iptables in the namespace; in the daemon, the rule file
    /// rewritten and `ferroctl reload`. Both must succeed.
    Use(RuleUse),
    /// Every rule removed on both sides (waiting until the kernel has released the policies).
    Unuse,
    /// The names and use counts (`CTA_TIMEOUT_USE`, which `nfct timeout list` does not print) of
    /// a raw cttimeout dump made by python3: must be identical.
    Uses,
    /// `Uses`, and the kernel's must be this text (`NAME L3 L4 USE` lines): keeps the harness
    /// honest about policies being in use at all.
    UsesAre(String),
}

/// A differential case: a fresh network namespace and a fresh daemon brought to the same state
/// (policies declared, rules using them), then steps run on both sides.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    /// Policies that exist at the start, in `nfct timeout add` syntax: added by nfct in the
    /// namespace, `timeout = …` lines in the daemon's configuration.
    declared: Vec<String>,
    /// Rules at the start: iptables in the namespace, the configuration's rule file in the
    /// daemon (loaded after the declared policies).
    used: Vec<RuleUse>,
    steps: Vec<Step>,
}

impl Case {
    fn new(name: impl Into<String>) -> Case {
        Case { name: name.into(), declared: Vec::new(), used: Vec::new(), steps: Vec::new() }
    }

    fn declare(mut self, policy: &str) -> Case {
        self.declared.push(policy.to_owned());
        self
    }

    fn used(mut self, policy: &str, v6: bool, proto: &'static str, rules: usize) -> Case {
        self.used.push(RuleUse { policy: policy.to_owned(), v6, proto, rules });
        self
    }

    /// `nfct` steps, one per command line (the words after `nfct`).
    fn nfct<S: AsRef<str>>(mut self, commands: &[S]) -> Case {
        self.steps.extend(commands.iter().map(|c| Step::Nfct(c.as_ref().to_owned())));
        self
    }

    fn then(mut self, step: Step) -> Case {
        self.steps.push(step);
        self
    }

    fn uses(self) -> Case {
        self.then(Step::Uses)
    }

    fn uses_are(self, expected: &str) -> Case {
        self.then(Step::UsesAre(expected.to_owned()))
    }

    fn use_(self, policy: &str, v6: bool, proto: &'static str, rules: usize) -> Case {
        self.then(Step::Use(RuleUse { policy: policy.to_owned(), v6, proto, rules }))
    }

    /// The number of compared `nfct` invocations.
    fn nfct_commands(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::Nfct(_) | Step::Outsider(_))).count()
    }
}

/// The daemon's rule file for `uses`.
fn rule_file(uses: &[RuleUse]) -> String {
    let mut s = String::from("chain forward {\n  policy accept;\n");
    for u in uses {
        let family = if u.v6 { "ipv6" } else { "ipv4" };
        for _ in 0..u.rules {
            s.push_str(&format!(
                "  meta nfproto {family} meta l4proto {} ct timeout set \"{}\" accept\n",
                u.proto, u.policy
            ));
        }
    }
    s.push_str("}\n");
    s
}

/// Adds `u`'s rules in the namespace; a description of the first failure.
fn kernel_rules(ns: &Netns, u: &RuleUse) -> Option<String> {
    let tool = if u.v6 { "ip6tables" } else { "iptables" };
    for _ in 0..u.rules {
        let args = ["-t", "raw", "-A", "PREROUTING", "-p", u.proto, "-j", "CT", "--timeout", &u.policy];
        let out = ns.exec(tool, &args);
        if out.code != Some(0) {
            return Some(format!("setup: kernel `{tool} {}` failed: {out}", args.join(" ")));
        }
    }
    None
}

/// Writes the daemon's rule file for `uses` and reloads it; a description of a failure.
fn daemon_rules(d: &Daemon, uses: &[RuleUse]) -> Option<String> {
    let text = rule_file(uses);
    fs::write(d.dir.join("rules.conf"), &text).expect("writing the rule file");
    let mut c = Command::new(&bins().ferroctl);
    c.arg("reload").arg("--socket").arg(&d.socket);
    let out = run(&mut c, LIMIT);
    (out.code != Some(0)).then(|| format!("setup: ferrowall reload of\n{text}failed: {out}"))
}

/// Dumps the cttimeout policies over a raw netlink socket and prints `NAME L3 L4 USE` per policy
/// (attributes: 1 name, 2 l3proto, 3 l4proto, 4 data, 5 use).
const USES_SCRIPT: &str = r#"
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.sendto(struct.pack('=IHHII', 20, (8 << 8) | 1, 0x1 | 0x300, 5, 0) + b'\0\0\0\0', (0, 0))
done = False
while not done:
    d = s.recv(65536)
    off = 0
    while off < len(d):
        l, t, f, seq, p = struct.unpack_from('=IHHII', d, off)
        if t == 3:
            done = True
        elif t == 2:
            raise SystemExit('netlink error %d' % struct.unpack_from('=i', d, off + 16)[0])
        elif t == (8 << 8):
            a, fields = off + 20, {}
            while a + 4 <= off + l:
                al, at = struct.unpack_from('=HH', d, a)
                fields[at & 0x3fff] = d[a + 4:a + al]
                a += (al + 3) & ~3
            print(fields[1].rstrip(b'\0').decode(), struct.unpack('>H', fields[2])[0], fields[3][0],
                  struct.unpack('>I', fields[5])[0])
        off += (l + 3) & ~3
"#;

/// `setpriv` arguments that drop to uid 65534 outside every group, then run nfct.
const OUTSIDER: [&str; 4] = ["--reuid=65534", "--regid=65533", "--clear-groups", "nfct"];

/// Records a difference between the daemon's and the kernel's output of `what`.
fn compare(diffs: &mut Vec<String>, what: &str, ours: Out, kernel: Out) {
    if ours != kernel {
        diffs.push(format!("`{what}` differs\n== ferrowall: {ours}== kernel: {kernel}"));
    }
}

/// Runs `case` on a fresh daemon and a fresh namespace; the differences, described.
fn run_case(case: &Case) -> Vec<String> {
    let mut config = String::from("rules = rules.conf\n");
    for p in &case.declared {
        config.push_str(&format!("timeout = {p}\n"));
    }
    let d = Daemon::start(DIR, Some(&config), &[("rules.conf", &rule_file(&case.used))]);
    let ns = Netns::new();
    let mut diffs = Vec::new();
    for p in &case.declared {
        let args: Vec<&str> = ["timeout", "add"].into_iter().chain(p.split_whitespace()).collect();
        let out = ns.nfct(&args);
        if out.code != Some(0) {
            diffs.push(format!("setup: kernel `nfct timeout add {p}` failed: {out}"));
        }
    }
    diffs.extend(case.used.iter().filter_map(|u| kernel_rules(&ns, u)));
    let mut rules = case.used.clone();
    for step in &case.steps {
        match step {
            Step::Nfct(c) => {
                let args: Vec<&str> = c.split_whitespace().collect();
                compare(&mut diffs, &format!("nfct {c}"), d.nfct(&args), ns.nfct(&args));
            }
            Step::Outsider(c) => {
                // Let a non-member connect at all (see the module doc).
                fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o666)).expect("chmod the socket");
                let args: Vec<&str> = OUTSIDER.into_iter().chain(c.split_whitespace()).collect();
                let what = format!("nfct {c} (as uid 65534)");
                compare(&mut diffs, &what, d.exec_public("setpriv", &args), ns.exec("setpriv", &args));
            }
            Step::Use(u) => {
                diffs.extend(kernel_rules(&ns, u));
                rules.push(u.clone());
                diffs.extend(daemon_rules(&d, &rules));
            }
            Step::Unuse => {
                for tool in ["iptables", "ip6tables"] {
                    let out = ns.exec(tool, &["-t", "raw", "-F", "PREROUTING"]);
                    if out.code != Some(0) {
                        diffs.push(format!("setup: kernel `{tool} -t raw -F PREROUTING` failed: {out}"));
                    }
                }
                // nf_tables destroys flushed rules (and drops their policy references) from a
                // work queue: wait until every policy is back at one use.
                let start = clock::now();
                loop {
                    let out = ns.exec("python3", &["-c", USES_SCRIPT]);
                    if out.code == Some(0) && out.stdout.lines().all(|l| l.ends_with(" 1")) {
                        break;
                    }
                    if start.elapsed() > Duration::from_secs(10) {
                        diffs.push(format!("setup: the kernel kept policies in use after the rules went: {out}"));
                        break;
                    }
                    clock::sleep(Duration::from_millis(20));
                }
                rules.clear();
                diffs.extend(daemon_rules(&d, &rules));
            }
            Step::Uses | Step::UsesAre(_) => {
                let ours = d.exec("python3", &["-c", USES_SCRIPT]);
                let kernel = ns.exec("python3", &["-c", USES_SCRIPT]);
                if kernel.code != Some(0) {
                    diffs.push(format!("setup: the raw dump failed in the kernel namespace: {kernel}"));
                }
                if let Step::UsesAre(expected) = step {
                    if kernel.stdout != *expected {
                        diffs.push(format!("harness: the kernel's use counts are not\n{expected}but {kernel}"));
                    }
                }
                compare(&mut diffs, "use counts of a raw cttimeout dump (python3)", ours, kernel);
            }
        }
    }
    if !diffs.is_empty() {
        diffs.push(format!("(daemon log:\n{})", d.log()));
    }
    diffs
}

/// Every protocol nfct knows, with its timeout (state) names as nfct takes them.
const PROTOCOLS: &[(&str, &[&str])] = &[
    (
        "tcp",
        &[
            "syn_sent",
            "syn_recv",
            "established",
            "fin_wait",
            "close_wait",
            "last_ack",
            "time_wait",
            "close",
            "syn_sent2",
            "retrans",
            "unacknowledged",
        ],
    ),
    ("udp", &["unreplied", "replied"]),
    ("udplite", &["unreplied", "replied"]),
    ("icmp", &["timeout"]),
    ("icmpv6", &["timeout"]),
    (
        "sctp",
        &[
            "closed",
            "cookie_wait",
            "cookie_echoed",
            "established",
            "shutdown_sent",
            "shutdown_recd",
            "shutdown_ack_sent",
        ],
    ),
    ("gre", &["unreplied", "replied"]),
    ("generic", &["timeout"]),
];

/// `STATE VALUE` for every state, values counting up from `first`.
fn all_states(states: &[&str], first: u32) -> String {
    states.iter().zip(first..).map(|(s, v)| format!("{s} {v}")).collect::<Vec<_>>().join(" ")
}

/// One case per protocol and family: add (every state, one state), get, list, default-set,
/// default-get on both families, an add that picks up the new defaults, delete.
fn protocol_cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (p, states) in PROTOCOLS {
        for (fam, other) in [("inet", "inet6"), ("inet6", "inet")] {
            let first = states[0];
            let last = states[states.len() - 1];
            v.push(Case::new(format!("{p} in {fam}: add, get, list, default-set, default-get, delete")).nfct(&[
                format!("timeout default-get {fam} {p}"),
                format!("timeout add full-{p} {fam} {p} {}", all_states(states, 11)),
                format!("timeout add one-{p} {fam} {p} {first} 7"),
                format!("timeout get full-{p}"),
                format!("timeout get one-{p}"),
                "timeout list".to_owned(),
                format!("timeout default-set {fam} {p} {}", all_states(states, 101)),
                format!("timeout default-get {fam} {p}"),
                format!("timeout default-get {other} {p}"),
                format!("timeout add later-{p} {other} {p} {last} 9"),
                format!("timeout get later-{p}"),
                format!("timeout get one-{p}"),
                format!("timeout delete one-{p}"),
                "timeout list".to_owned(),
            ]));
        }
    }
    v
}

/// Every case of the suite.
fn suite() -> Vec<Case> {
    let n31 = "a".repeat(31);
    let n32 = "a".repeat(32);
    let b32 = format!("{}Z", "b".repeat(31));
    let b31 = "b".repeat(31);
    let n64 = "c".repeat(64);
    let mut v = vec![
        // Message types.
        Case::new("empty state: list, flush, get, delete").nfct(&[
            "timeout list",
            "timeout flush",
            "timeout list",
            "timeout get x",
            "timeout delete x",
        ]),
        Case::new("add, get, list, delete").nfct(&[
            "timeout add a inet tcp established 100",
            "timeout get a",
            "timeout list",
            "timeout delete a",
            "timeout list",
            "timeout get a",
        ]),
        Case::new("list order after deletes and re-adds").nfct(&[
            "timeout add a inet udp unreplied 1",
            "timeout add b inet6 tcp close 2",
            "timeout add c inet icmp timeout 3",
            "timeout add d inet6 generic timeout 4",
            "timeout delete b",
            "timeout add b inet gre replied 5",
            "timeout delete a",
            "timeout add e inet sctp closed 6",
            "timeout list",
        ]),
        Case::new("delete and re-add under another family and protocol").nfct(&[
            "timeout add x inet udp unreplied 1",
            "timeout delete x",
            "timeout add x inet6 sctp established 2",
            "timeout get x",
            "timeout list",
        ]),
        Case::new("flush of unused policies").nfct(&[
            "timeout add a inet udp unreplied 1",
            "timeout add b inet6 tcp established 2",
            "timeout add c inet icmp timeout 3",
            "timeout flush",
            "timeout list",
            "timeout get a",
            "timeout flush",
            "timeout add a inet6 udp replied 4",
            "timeout list",
        ]),
        Case::new("default-set and default-get; flush keeps defaults").nfct(&[
            "timeout default-get inet udp",
            "timeout default-set inet udp unreplied 10 replied 20",
            "timeout default-get inet udp",
            "timeout default-get inet6 udp",
            "timeout default-get inet udplite",
            "timeout add u inet udp unreplied 1",
            "timeout get u",
            "timeout flush",
            "timeout default-get inet udp",
        ]),
        Case::new("default-set changes only later policies").nfct(&[
            "timeout add before inet tcp established 1",
            "timeout default-set inet tcp syn_sent 2 close 3",
            "timeout get before",
            "timeout add after inet tcp established 4",
            "timeout get after",
            "timeout default-get inet6 tcp",
            "timeout list",
        ]),
        Case::new("defaults of several protocols, across families").nfct(&[
            "timeout default-set inet icmp timeout 5",
            "timeout default-set inet6 icmpv6 timeout 6",
            "timeout default-set inet generic timeout 7",
            "timeout default-get inet icmp",
            "timeout default-get inet6 icmp",
            "timeout default-get inet6 icmpv6",
            "timeout default-get inet icmpv6",
            "timeout default-get inet6 generic",
            "timeout add i4 inet6 icmp timeout 8",
            "timeout add i6 inet icmpv6 timeout 9",
            "timeout list",
        ]),
        // Errors.
        Case::new("re-add of an existing name: EBUSY").nfct(&[
            "timeout add x inet udp unreplied 1",
            "timeout add x inet udp unreplied 1",
            "timeout add x inet udp unreplied 2",
            "timeout add x inet6 tcp established 3",
            "timeout get x",
            "timeout list",
        ]),
        Case::new("get and delete of a missing name: ENOENT").nfct(&[
            "timeout get nosuch",
            "timeout delete nosuch",
            "timeout add a inet udp unreplied 1",
            "timeout get A",
            "timeout delete A",
            "timeout get a",
            "timeout delete a",
            "timeout delete a",
            "timeout get a",
        ]),
        Case::new("unsupported protocols: nfct's parse error, the kernel's EOPNOTSUPP and EINVAL").nfct(&[
            "timeout add x inet 33 timeout 1",
            "timeout add x inet foo timeout 1",
            "timeout add x inet dccp request 3",
            "timeout add x inet igmp",
            "timeout add x inet esp",
            "timeout default-get inet dccp",
            "timeout default-set inet dccp request 3",
            "timeout default-get inet igmp",
            "timeout default-get inet 17",
            "timeout default-set inet foo timeout 1",
            "timeout list",
        ]),
        Case::new("bad state names").nfct(&[
            "timeout add x inet udp bogus 3",
            "timeout add x inet udp established 3",
            "timeout add x inet tcp unreplied 3",
            "timeout add x inet icmp unreplied 1",
            "timeout add x inet sctp heartbeat_sent 8",
            "timeout add x inet generic timeout 1 bogus 2",
            "timeout default-set inet udp bogus 1",
            "timeout default-set inet tcp timeout 1",
            "timeout list",
        ]),
        Case::new("missing and extra arguments").nfct(&[
            "timeout add",
            "timeout add x",
            "timeout add x inet",
            "timeout add x ipx udp",
            "timeout add x inet udp",
            "timeout add x inet udp unreplied",
            "timeout get",
            "timeout delete",
            "timeout default-get",
            "timeout default-get inet",
            "timeout default-set inet udp",
            "timeout list extra",
            "timeout flush extra",
            "timeout bogus",
            "timeout",
            "timeout list",
        ]),
        Case::new("odd values: not numbers, zero, negative, overflowing jiffies").nfct(&[
            "timeout add z inet udp unreplied abc",
            "timeout add zero inet udp unreplied 0 replied 0",
            "timeout add neg inet udp unreplied -5",
            "timeout add max inet udp unreplied 4294967295 replied 4294967",
            "timeout add wrap inet udp unreplied 4294968 replied 2147483648",
            "timeout add huge inet udp unreplied 99999999999",
            "timeout list",
            "timeout default-set inet udp unreplied 4294967295 replied 0",
            "timeout default-get inet udp",
        ]),
        Case::new("state names in any case; a repeated state").nfct(&[
            "timeout add u inet udp UNREPLIED 3 Replied 4",
            "timeout add t inet tcp established 1 established 2",
            "timeout get u",
            "timeout get t",
            "timeout default-set inet tcp ESTABLISHED 77",
            "timeout default-get inet tcp",
        ]),
        // Names of 31 and 32 bytes (nfct cuts names to 31 bytes).
        Case::new("names of 31 and 32 bytes").nfct(&[
            format!("timeout add {n31} inet udp unreplied 1"),
            format!("timeout add {n32} inet udp unreplied 2"),
            format!("timeout get {n31}"),
            format!("timeout get {n32}"),
            "timeout list".to_owned(),
            format!("timeout delete {n32}"),
            "timeout list".to_owned(),
            format!("timeout add {n32} inet6 tcp close 3"),
            format!("timeout get {n31}"),
            format!("timeout delete {n31}"),
            format!("timeout delete {n31}"),
        ]),
        Case::new("a 32-byte name first, then its 31-byte prefix").nfct(&[
            format!("timeout add {b32} inet udp unreplied 1"),
            "timeout list".to_owned(),
            format!("timeout get {b32}"),
            format!("timeout get {b31}"),
            format!("timeout add {b31} inet udp unreplied 2"),
            format!("timeout delete {b31}"),
            "timeout list".to_owned(),
        ]),
        Case::new("a 64-byte name").nfct(&[
            format!("timeout add {n64} inet gre unreplied 1"),
            format!("timeout get {n64}"),
            "timeout list".to_owned(),
            format!("timeout delete {n64}"),
            "timeout list".to_owned(),
        ]),
        // Not root: EPERM.
        Case::new("non-root: EPERM for every message type")
            .declare("kept inet tcp established 100")
            .then(Step::Outsider("timeout add evil inet tcp established 1".into()))
            .then(Step::Outsider("timeout list".into()))
            .then(Step::Outsider("timeout get kept".into()))
            .then(Step::Outsider("timeout delete kept".into()))
            .then(Step::Outsider("timeout flush".into()))
            .then(Step::Outsider("timeout default-set inet tcp established 1".into()))
            .then(Step::Outsider("timeout default-get inet tcp".into()))
            .nfct(&["timeout list", "timeout default-get inet tcp"]),
        Case::new("non-root: EPERM before ENOENT, EBUSY and EOPNOTSUPP; parse errors first")
            .declare("kept inet udp unreplied 2")
            .used("kept", false, "udp", 1)
            .then(Step::Outsider("timeout get nosuch".into()))
            .then(Step::Outsider("timeout delete nosuch".into()))
            .then(Step::Outsider("timeout delete kept".into()))
            .then(Step::Outsider("timeout add kept inet udp unreplied 2".into()))
            .then(Step::Outsider("timeout add x inet dccp request 3".into()))
            .then(Step::Outsider("timeout add x inet foo timeout 1".into()))
            .then(Step::Outsider("timeout add x inet udp bogus 1".into()))
            .nfct(&["timeout list"])
            .uses(),
        // Policies in use.
        Case::new("delete of a policy in use: EBUSY until its rule goes")
            .declare("p inet udp unreplied 2")
            .used("p", false, "udp", 1)
            .uses()
            .nfct(&["timeout delete p", "timeout get p", "timeout list"])
            .then(Step::Unuse)
            .uses()
            .nfct(&["timeout delete p", "timeout list"]),
        Case::new("use counts: 1 + rules naming the policy")
            .declare("a inet udp unreplied 2")
            .declare("b inet6 udp replied 3")
            .declare("c inet tcp established 4")
            .declare("d inet6 tcp close 5")
            .used("a", false, "udp", 1)
            .used("b", true, "udp", 2)
            .used("c", false, "tcp", 3)
            .uses_are("a 2 17 2\nb 10 17 3\nc 2 6 4\nd 10 6 1\n")
            .nfct(&["timeout list", "timeout delete a", "timeout delete b", "timeout delete c", "timeout delete d"])
            .uses_are("a 2 17 2\nb 10 17 3\nc 2 6 4\n"),
        Case::new("flush with some policies in use")
            .declare("a inet udp unreplied 1")
            .declare("b inet udp unreplied 2")
            .declare("c inet6 tcp established 3")
            .declare("d inet6 tcp established 4")
            .declare("e inet icmp timeout 5")
            .declare("f inet6 udp replied 6")
            .used("b", false, "udp", 1)
            .used("d", true, "tcp", 2)
            .uses()
            .nfct(&["timeout flush", "timeout list", "timeout get a", "timeout get b"])
            .uses_are("b 2 17 2\nd 10 6 3\n")
            .nfct(&["timeout add a inet udp unreplied 7", "timeout delete b", "timeout list"])
            .then(Step::Unuse)
            .nfct(&["timeout flush", "timeout list"])
            .uses(),
        Case::new("rules added after nfct add, by reload")
            .nfct(&["timeout add p inet udp unreplied 2", "timeout add q inet6 tcp established 9"])
            .use_("p", false, "udp", 2)
            .use_("q", true, "tcp", 1)
            .uses_are("p 2 17 3\nq 10 6 2\n")
            .nfct(&["timeout delete p", "timeout delete q", "timeout flush", "timeout list"])
            .use_("p", false, "udp", 1)
            .uses()
            .then(Step::Unuse)
            .uses()
            .nfct(&["timeout flush", "timeout list"]),
        Case::new("policies of every protocol in use, then flush")
            .declare("ptcp inet tcp close 1")
            .declare("pudp inet udp unreplied 1")
            .declare("pudplite inet udplite unreplied 1")
            .declare("picmp inet icmp timeout 1")
            .declare("picmpv6 inet6 icmpv6 timeout 1")
            .declare("psctp inet sctp closed 1")
            .declare("pgre inet gre unreplied 1")
            .declare("pgeneric inet generic timeout 1")
            .declare("unused inet udp unreplied 1")
            .used("ptcp", false, "tcp", 1)
            .used("pudp", false, "udp", 1)
            .used("pudplite", false, "udplite", 1)
            .used("picmp", false, "icmp", 1)
            .used("picmpv6", true, "icmpv6", 1)
            .used("psctp", false, "sctp", 1)
            .used("pgre", false, "gre", 1)
            .used("pgeneric", false, "99", 1)
            .uses()
            .nfct(&["timeout flush", "timeout list"])
            .uses_are(
                "ptcp 2 6 2\npudp 2 17 2\npudplite 2 136 2\npicmp 2 1 2\npicmpv6 10 58 2\npsctp 2 132 2\n\
                 pgre 2 47 2\npgeneric 2 255 2\n",
            ),
        Case::new("a 31-byte name in use")
            .declare(&format!("{n31} inet tcp established 3"))
            .used(&n31, false, "tcp", 2)
            .uses()
            .nfct(&[format!("timeout delete {n31}"), "timeout flush".to_owned(), format!("timeout get {n31}")]),
        Case::new("default-set leaves policies in use alone")
            .declare("p inet udp unreplied 2")
            .used("p", false, "udp", 1)
            .nfct(&[
                "timeout default-set inet udp unreplied 1 replied 1",
                "timeout get p",
                "timeout add q inet udp replied 5",
                "timeout get q",
                "timeout default-get inet udp",
            ])
            .uses(),
    ];
    v.extend(protocol_cases());
    // A list of 300 policies (every protocol, both families), spanning many dump datagrams.
    let adds: Vec<String> = (0..300)
        .map(|i| {
            let (p, states) = PROTOCOLS[i % PROTOCOLS.len()];
            let fam = if i % 2 == 0 { "inet" } else { "inet6" };
            format!("timeout add policy-number-{i:03} {fam} {p} {} {}", states[i % states.len()], i + 1)
        })
        .collect();
    v.push(
        Case::new("a list of 300 policies")
            .nfct(&adds)
            .nfct(&["timeout list", "timeout get policy-number-299"])
            .uses()
            .nfct(&["timeout flush", "timeout list"]),
    );
    v
}

#[test]
fn nfct_differential_suite_matches_the_kernel() {
    let cases = suite();
    assert!(cases.len() >= 40, "the suite has {} cases", cases.len());
    let mut failed = Vec::new();
    let mut commands = 0;
    for case in &cases {
        let start = clock::now();
        let diffs = run_case(case);
        commands += case.nfct_commands();
        let verdict = if diffs.is_empty() { "identical" } else { "DIFFERENT" };
        println!(
            "nfct-diff: {verdict}: {} ({} nfct commands, {} ms)",
            case.name,
            case.nfct_commands(),
            start.elapsed().as_millis()
        );
        if !diffs.is_empty() {
            failed.push(format!("case `{}`:\n{}", case.name, diffs.join("\n")));
        }
    }
    let summary = format!(
        "nfct-diff: {} cases, {} identical ({commands} nfct commands on each side)",
        cases.len(),
        cases.len() - failed.len()
    );
    println!("{summary}");
    assert!(failed.is_empty(), "{summary}\n\n{}", failed.join("\n\n"));
}

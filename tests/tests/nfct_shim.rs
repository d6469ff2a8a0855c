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
//! Every daemon runs in a directory of its own under the temp dir and is stopped (by its PID) and
//! the directory removed when the test ends, also on failure; namespaces are deleted likewise.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use ferrowall_tests::clock;

/// The binaries under test.
struct Bins {
    ferrowall: PathBuf,
    ferroctl: PathBuf,
}

/// Builds `ferrowall`, `ferroctl` and the shim into this test's `target/<profile>` (once).
fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let exe = std::env::current_exe().expect("locating the test executable");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
        let target_dir = profile_dir.parent().expect("target/");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_owned(),
            Some(p) => p.to_owned(),
            None => panic!("unexpected test executable path {}", exe.display()),
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut c = Command::new(cargo);
        c.arg("build").arg("--quiet").arg("--manifest-path").arg(&manifest).arg("--target-dir").arg(target_dir);
        c.args(["--profile", &profile, "-p", "ferrowall-engine", "-p", "ferrowall-ctl", "-p", "ferrowall-shim"]);
        let out = run(&mut c, Duration::from_secs(900));
        assert_eq!(out.code, Some(0), "building the binaries: {}", out.stderr);
        let b = Bins { ferrowall: profile_dir.join("ferrowall"), ferroctl: profile_dir.join("ferroctl") };
        for p in [&b.ferrowall, &b.ferroctl, &profile_dir.join("libferrowall_shim.so")] {
            assert!(p.is_file(), "{} does not exist after building it", p.display());
        }
        // The module is loaded on first use in a namespace, but be explicit (best effort).
        let _ = Command::new("modprobe").arg("nfnetlink_cttimeout").stderr(Stdio::null()).status();
        b
    })
}

/// What a finished command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    stdout: String,
    stderr: String,
    /// The exit code (`None`: killed by a signal).
    code: Option<i32>,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `cmd` with a time limit; an overrun kills the child (by its PID) and fails the test.
fn run(cmd: &mut Command, limit: Duration) -> Out {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{shown}: cannot start: {e}"));
    let mut o = child.stdout.take().expect("piped");
    let mut e = child.stderr.take().expect("piped");
    let ro = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = o.read_to_string(&mut s);
        s
    });
    let re = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        s
    });
    let start = clock::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown}: killed after {limit:?}");
        }
        clock::sleep(Duration::from_millis(1));
    };
    Out { stdout: ro.join().unwrap_or_default(), stderr: re.join().unwrap_or_default(), code: status.code() }
}

const LIMIT: Duration = Duration::from_secs(30);

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A running `ferrowall run` in a directory of its own; stopped and cleaned up on drop.
struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon; `config` (if any) is written to `<dir>/ferrowall.conf`, where `{dir}` in
    /// it stands for the daemon's directory.
    fn start(config: Option<&str>) -> Daemon {
        let b = bins();
        let dir = std::env::temp_dir().join(unique("ferrowall-nfct-"));
        fs::create_dir_all(&dir).expect("creating the daemon's directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let socket = dir.join("run").join("ctl.sock");
        let log = dir.join("daemon.log");
        let mut cmd = Command::new(&b.ferrowall);
        cmd.arg("run").arg("--ctl-socket").arg(&socket);
        if let Some(text) = config {
            let path = dir.join("ferrowall.conf");
            fs::write(&path, text.replace("{dir}", &dir.to_string_lossy())).expect("writing the config");
            cmd.arg("--config").arg(&path);
        }
        let logf = fs::File::create(&log).expect("creating the log");
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(logf).spawn().expect("starting ferrowall");
        let mut d = Daemon { child: Some(child), dir, socket, log };
        let start = clock::now();
        while !d.socket.exists() {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("ferrowall exited at start-up ({st}): {}", d.log());
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no control socket after 20 s: {}", d.log());
            clock::sleep(Duration::from_millis(5));
        }
        d
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// `ferroctl exec --socket S -- PROGRAM ARGS...`.
    fn exec(&self, program: &str, args: &[&str]) -> Out {
        let mut c = Command::new(&bins().ferroctl);
        c.arg("exec").arg("--socket").arg(&self.socket).arg("--").arg(program).args(args);
        run(&mut c, LIMIT)
    }

    /// `exec` for commands that switch to another user: the shim is preloaded from a copy in the
    /// daemon's (world-readable) directory, since the build tree may not be readable by that user.
    fn exec_public(&self, program: &str, args: &[&str]) -> Out {
        let shim = self.public_copy(&bins().ferroctl.with_file_name("libferrowall_shim.so"));
        let mut c = Command::new(&bins().ferroctl);
        c.env("FERROWALL_SHIM", shim);
        c.arg("exec").arg("--socket").arg(&self.socket).arg("--").arg(program).args(args);
        run(&mut c, LIMIT)
    }

    /// A copy of `file` in the daemon's directory, readable and executable by everyone.
    fn public_copy(&self, file: &Path) -> PathBuf {
        let to = self.dir.join(file.file_name().expect("a file name"));
        if !to.exists() {
            fs::copy(file, &to).expect("copying into the daemon's directory");
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        to
    }

    fn nfct(&self, args: &[&str]) -> Out {
        self.exec("nfct", args)
    }

    /// Sends `sig` (a `kill` signal name) to the daemon, by its PID.
    fn signal(&self, sig: &str) {
        let out = run(Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()), LIMIT);
        assert_eq!(out.code, Some(0), "kill -{sig}: {out}");
    }

    /// Stops the daemon with SIGTERM (SIGKILL after 10 s); its exit code.
    fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        if child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        let start = clock::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            clock::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A fresh network namespace (its own cttimeout state); deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
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
    let d = Daemon::start(None);
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
    let mut d = Daemon::start(None);
    let second = run(Command::new(&bins().ferrowall).arg("run").arg("--ctl-socket").arg(&d.socket), LIMIT);
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
    c.arg("run").arg("--ctl-socket").arg(&d.socket).stdin(Stdio::null()).stdout(Stdio::null());
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
    let d = Daemon::start(None);
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
    let d = Daemon::start(Some("ctl_group = 65534\nmax_connections = 1000\n"));
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
    let d = Daemon::start(None);
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
    let mut d = Daemon::start(None);
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
    let mut d = Daemon::start(None);
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
    let mut d = Daemon::start(Some(&config));
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

//! The namespace testbed of the end-to-end datapath tests (router, bridge and TUN mode): a client
//! namespace, a middle one where ferrowall runs and a server namespace, joined by two veth pairs
//! ([`C`] in the client and [`S`] in the server, each paired with an end in the middle); `ip` and
//! commands run in them, servers started in them; the processes (by PID) and the
//! namespaces are removed on drop, also when a test fails. Unlike [`crate::testbed`] (the
//! kernel-differential harness's, which injects frames through packet sockets), this one carries
//! real traffic from real tools, and its helpers panic on failure.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::clock;
use crate::daemon::{bins, run, run_input, unique, Daemon, Out};

/// The client's end of its veth pair.
pub const C: &str = "c0";
/// The server's end of its veth pair.
pub const S: &str = "s0";
/// The time limit of one command.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Three namespaces, `c` (client), `m` (middle) and `s` (server); removed (with the processes
/// started in them, by PID) when dropped.
pub struct Testbed {
    pub c: String,
    pub m: String,
    pub s: String,
    children: Vec<Child>,
}

/// Runs `ip args` and fails the test unless it succeeds.
pub fn ip(args: &[&str]) {
    let out = run(Command::new("ip").args(args), LIMIT);
    assert_eq!(out.code, Some(0), "ip {args:?}: {out}");
}

/// Gives `dev` in namespace `ns` the IPv4 address `v4` and the IPv6 address `v6` (without
/// duplicate address detection).
pub fn addresses(ns: &str, dev: &str, v4: &str, v6: &str) {
    ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
    ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
}

impl Testbed {
    /// Three fresh namespaces `<prefix><pid>-<n>-c`, `…-<mid>` and `…-s`, with loopback up.
    pub fn namespaces(prefix: &str, mid: &str) -> Testbed {
        let base = unique(prefix);
        let tb = Testbed {
            c: format!("{base}-c"),
            m: format!("{base}-{mid}"),
            s: format!("{base}-s"),
            children: Vec::new(),
        };
        for ns in [&tb.c, &tb.m, &tb.s] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        tb
    }

    /// The two veth pairs: [`C`] in the client to `cli` in the middle, [`S`] in the server to
    /// `srv` in the middle.
    pub fn veths(&self, cli: &str, srv: &str) {
        ip(&["link", "add", C, "netns", &self.c, "type", "veth", "peer", "name", cli, "netns", &self.m]);
        ip(&["link", "add", S, "netns", &self.s, "type", "veth", "peer", "name", srv, "netns", &self.m]);
    }

    /// Runs `args` in namespace `ns` and waits (bounded).
    pub fn exec(&self, ns: &str, args: &[&str]) -> Out {
        run(Command::new("ip").args(["netns", "exec", ns]).args(args), LIMIT)
    }

    /// `sysctl -qw settings` in namespace `ns`.
    pub fn sysctl(&self, ns: &str, settings: &[&str]) -> Out {
        self.exec(ns, &[&["sysctl", "-qw"], settings].concat())
    }

    /// Turns off TX checksum offload, TSO, GSO and GRO on `dev` in `ns`: every frame at most one
    /// MTU, with its checksums filled in (the tests with offloads on use [`Testbed::offloads_on`]).
    pub fn offloads_off(&self, ns: &str, dev: &str) -> Out {
        self.exec(ns, &["ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off"])
    }

    /// Turns on TX checksum offload, TSO and GSO (GRO off) on `dev` in `ns`: its stack hands the
    /// veth GSO super-frames of up to 64 KiB, which ferrowall's vnet headers carry whole.
    pub fn offloads_on(&self, ns: &str, dev: &str) {
        let out = self.exec(ns, &["ethtool", "-K", dev, "tx", "on", "tso", "on", "gso", "on", "gro", "off"]);
        assert_eq!(out.code, Some(0), "ethtool on {dev}: {out}");
    }

    /// Starts `args` in namespace `ns` in the background; it is killed when the testbed goes.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a server");
        self.children.push(child);
    }

    /// iperf3 from namespace `client` to `server_addr` (a server started in namespace `server` on
    /// `port`): TCP for 3 s, then UDP at 20 Mbit/s for 3 s; both must move data.
    pub fn iperf3_tcp_udp(&mut self, client: &str, server: &str, server_addr: &str, port: u16) {
        let port = port.to_string();
        self.spawn(server, &["iperf3", "-s", "-p", &port]);
        clock::sleep(Duration::from_millis(300));
        let out = self.exec(client, &["iperf3", "-c", server_addr, "-p", &port, "-t", "3", "-J"]);
        assert_eq!(out.code, Some(0), "iperf3 tcp: {out}");
        assert!(out.stdout.contains("\"sum_received\""), "{out}");
        let out = self.exec(client, &["iperf3", "-u", "-b", "20M", "-c", server_addr, "-p", &port, "-t", "3", "-J"]);
        assert_eq!(out.code, Some(0), "iperf3 udp: {out}");
        assert!(out.stdout.contains("\"sum\""), "{out}");
    }

    /// Sends one UDP datagram from namespace `ns` (source port 40000 + `port`) to `addr`:`port`.
    pub fn udp_once(&self, ns: &str, addr: &str, port: u16) {
        let code = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{}))\ns.sendto(b'x',('{addr}',{port}))\n",
            40000 + port
        );
        let out = self.exec(ns, &["python3", "-c", &code]);
        assert_eq!(out.code, Some(0), "{out}");
    }

    /// The real nfct, through the shim, lowers the UDP default; an idle UDP flow (from namespace
    /// `ns` to `addr`:`port`, without a policy) takes it at its next packet and is gone 2 s later
    /// instead of 30. The default is put back to 30 s afterwards.
    pub fn nfct_default_set_on_live_flow(&self, ns: &str, d: &Daemon, addr: &str, port: u16) {
        self.udp_once(ns, addr, port);
        let before = udp_timeout(d, port).expect("the flow is tracked");
        assert!(before > 25, "default unreplied 30 s: {before}");
        let out = d.nfct(&["timeout", "default-set", "inet", "udp", "unreplied", "2"]);
        assert_eq!(out.code, Some(0), "{out}");
        self.udp_once(ns, addr, port);
        let refreshed = udp_timeout(d, port).expect("still tracked");
        assert!(refreshed <= 2, "the new default applies at the next packet: {refreshed}");
        let start = clock::now();
        while udp_timeout(d, port).is_some() {
            assert!(start.elapsed() < Duration::from_secs(6), "the flow outlived its 2 s timeout");
            clock::sleep(Duration::from_millis(250));
        }
        let out = d.nfct(&["timeout", "default-set", "inet", "udp", "unreplied", "30"]);
        assert_eq!(out.code, Some(0), "{out}");
    }

    /// Downloads `url` from namespace `ns` at 2 MB/s (a 10 MB file takes about 5 s) while the
    /// daemon reloads its rules three times; the file must arrive whole (`want` is its SHA-256).
    pub fn download_during_reloads(&self, ns: &str, d: &Daemon, url: &str, want: &str) {
        let got = d.dir.join("during-reload");
        let mut dl = Command::new("ip")
            .args(["netns", "exec", ns, "curl", "-s", "-m", "30", "--limit-rate", "2M", "-o"])
            .arg(&got)
            .arg(url)
            .spawn()
            .expect("starting curl");
        for _ in 0..3 {
            clock::sleep(Duration::from_millis(800));
            ferroctl(d, "reload");
        }
        let status = dl.wait().expect("curl");
        assert!(status.success(), "the transfer broke during reloads: {status}\n{}", d.log());
        assert_eq!(sha256(&got), want, "the download during reloads is corrupted");
    }

    /// The router testbed of the router-mode tests: client 198.18.1.2 / 2001:2:0:1::2 and server
    /// 198.19.1.2 / 2001:2:0:2::2, with default routes via ferrowall's addresses .1 / ::1 on the
    /// middle namespace's `r-cli` and `r-srv`, whose own stack stays out of the way (no
    /// addresses, no IPv6, no forwarding); offloads off (`tests/tests/gso.rs` turns them on).
    pub fn router(prefix: &str) -> Testbed {
        let tb = Testbed::namespaces(prefix, "r");
        tb.veths("r-cli", "r-srv");
        addresses(&tb.c, C, "198.18.1.2/24", "2001:2:0:1::2/64");
        addresses(&tb.s, S, "198.19.1.2/24", "2001:2:0:2::2/64");
        for (ns, dev) in [(&tb.c, C), (&tb.s, S), (&tb.m, "r-cli"), (&tb.m, "r-srv")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            let _ = tb.offloads_off(ns, dev);
        }
        let out = tb.sysctl(
            &tb.m,
            &["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.ip_forward=0"],
        );
        assert_eq!(out.code, Some(0), "{out}");
        ip(&["-n", &tb.c, "route", "add", "default", "via", "198.18.1.1"]);
        ip(&["-n", &tb.c, "-6", "route", "add", "default", "via", "2001:2:0:1::1"]);
        ip(&["-n", &tb.s, "route", "add", "default", "via", "198.19.1.1"]);
        ip(&["-n", &tb.s, "-6", "route", "add", "default", "via", "2001:2:0:2::1"]);
        tb
    }

    /// The router testbed with the kernel routing in the middle namespace (between `k-cli` and
    /// `k-srv`, addresses as in [`Testbed::router`]) and conntrack enabled there by
    /// [`KERNEL_RULES`]: the kernel's side of the tests that compare it with ferrowall running
    /// [`ROUTER_CONFIG`].
    pub fn kernel_router(prefix: &str) -> Testbed {
        let tb = Testbed::namespaces(prefix, "k");
        tb.veths("k-cli", "k-srv");
        addresses(&tb.c, C, "198.18.1.2/24", "2001:2:0:1::2/64");
        addresses(&tb.s, S, "198.19.1.2/24", "2001:2:0:2::2/64");
        addresses(&tb.m, "k-cli", "198.18.1.1/24", "2001:2:0:1::1/64");
        addresses(&tb.m, "k-srv", "198.19.1.1/24", "2001:2:0:2::1/64");
        for (ns, dev) in [(&tb.c, C), (&tb.s, S), (&tb.m, "k-cli"), (&tb.m, "k-srv")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        let out = tb.sysctl(&tb.m, &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
        assert_eq!(out.code, Some(0), "{out}");
        ip(&["-n", &tb.c, "route", "add", "default", "via", "198.18.1.1"]);
        ip(&["-n", &tb.c, "-6", "route", "add", "default", "via", "2001:2:0:1::1"]);
        ip(&["-n", &tb.s, "route", "add", "default", "via", "198.19.1.1"]);
        ip(&["-n", &tb.s, "-6", "route", "add", "default", "via", "2001:2:0:2::1"]);
        let out =
            run_input(Command::new("ip").args(["netns", "exec", &tb.m, "nft", "-f", "-"]), Some(KERNEL_RULES), LIMIT);
        assert_eq!(out.code, Some(0), "nft: {out}");
        tb
    }

    /// Serves a random file of `mb` MB from the daemon's directory over HTTP (port 8080, in
    /// namespace `server`), downloads it from namespace `client` at each of `urls` (curl `-m
    /// max_secs`) and checks every copy by SHA-256; returns the file's SHA-256.
    pub fn serve_and_download(
        &mut self,
        client: &str,
        server: &str,
        d: &Daemon,
        mb: u32,
        urls: &[&str],
        max_secs: &str,
    ) -> String {
        let blob = d.dir.join("blob");
        random_file(&blob, mb);
        assert_eq!(std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0), u64::from(mb) * 1_000_000);
        let dir = d.dir.to_string_lossy().into_owned();
        self.spawn(server, &["python3", "-m", "http.server", "8080", "--bind", "::", "--directory", &dir]);
        let want = sha256(&blob);
        for url in urls {
            let got = d.dir.join(unique("got-"));
            let ok = self.download(client, url, &got, max_secs);
            assert!(ok, "download of {url} failed\n{}", d.log());
            assert_eq!(sha256(&got), want, "{url}: the download is corrupted");
        }
        want
    }

    /// Downloads `url` into `to` with curl (`-m max_secs`) from namespace `ns`, retrying for up
    /// to 20 s while the server may still be starting; whether it succeeded.
    pub fn download(&self, ns: &str, url: &str, to: &Path, max_secs: &str) -> bool {
        let start = clock::now();
        loop {
            let out = self.exec(ns, &["curl", "-s", "-m", max_secs, "-o", &to.to_string_lossy(), url]);
            if out.code == Some(0) {
                return true;
            }
            if start.elapsed() >= Duration::from_secs(20) {
                return false;
            }
            clock::sleep(Duration::from_millis(200)); // the server may still be starting
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.c, &self.m, &self.s] {
            let _ = run(Command::new("ip").args(["netns", "del", ns]), LIMIT);
        }
    }
}

/// The SHA-256 of the file at `path`, in hex.
pub fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path), LIMIT);
    out.stdout.split_whitespace().next().unwrap_or_default().to_owned()
}

/// Writes `mb` megabytes (10^6 bytes) of random bytes to `path`. (Written by dd: random bytes are
/// not UTF-8, so they cannot come back through [`run`].)
pub fn random_file(path: &Path, mb: u32) {
    let count = format!("count={mb}");
    let of = format!("of={}", path.display());
    let out = run(
        Command::new("dd").args(["if=/dev/urandom", &of, "bs=1000000", &count, "iflag=fullblock", "status=none"]),
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{out}");
}

/// An HTTP server of the files in a directory that sends each in 16 KB chunks at 256 KB/s, measured
/// from the request's start, while [`PacedServer::release`] has not been called, then at full
/// speed. A transfer is thus alive through every step a test takes while it runs (a restart, a
/// failover), however slow the machine, and ends soon after the test lets it go. (curl's own
/// `--limit-rate` lets a transfer run at about twice its rate: a 1 MB/s download of 8 MB could end
/// before the failover it was meant to cross.)
pub struct PacedServer {
    go: std::path::PathBuf,
}

const PACED_SERVER: &str = r#"
import http.server, os, sys, time
DIR = sys.argv[1]
RATE = 256 * 1024
class Paced(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = os.path.join(DIR, os.path.basename(self.path))
        try:
            f = open(path, "rb")
        except OSError:
            self.send_error(404)
            return
        with f:
            self.send_response(200)
            self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
            self.end_headers()
            start, sent = time.monotonic(), 0
            while chunk := f.read(16384):
                self.wfile.write(chunk)
                sent += len(chunk)
                while not os.path.exists(os.path.join(DIR, ".go")):
                    ahead = sent / RATE - (time.monotonic() - start)
                    if ahead <= 0:
                        break
                    time.sleep(min(ahead, 0.05))
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), Paced).serve_forever()
"#;

impl PacedServer {
    /// Writes the server's script into `dir`; the command (to run in the server's namespace) that
    /// serves `dir` on `addr`:`port`, paced.
    pub fn new(dir: &Path, addr: &str, port: u16) -> (PacedServer, Vec<String>) {
        let script = dir.join(".paced_server.py");
        std::fs::write(&script, PACED_SERVER).expect("writing the paced server");
        let args = ["python3", &script.to_string_lossy(), &dir.to_string_lossy(), addr, &port.to_string()];
        (PacedServer { go: dir.join(".go") }, args.map(str::to_owned).to_vec())
    }

    /// Lets the transfers run at full speed, from their next chunk on.
    pub fn release(&self) {
        std::fs::write(&self.go, "").expect("releasing the paced server");
    }

    /// Paces the transfers again.
    pub fn hold(&self) {
        let _ = std::fs::remove_file(&self.go);
    }
}

/// Waits until the file a download writes to holds `bytes` bytes: the transfer has started and is
/// under way. Fails the test after 30 s.
pub fn wait_for_bytes(path: &Path, bytes: u64) {
    let start = clock::now();
    while std::fs::metadata(path).map_or(0, |m| m.len()) < bytes {
        assert!(start.elapsed() < Duration::from_secs(30), "the download does not go on: {}", path.display());
        clock::sleep(Duration::from_millis(50));
    }
}

/// `ferroctl <what> --socket <the daemon's socket>`, which must succeed.
pub fn ferroctl(d: &Daemon, what: &str) -> Out {
    let out = run(Command::new(&bins().ferroctl).args([what, "--socket"]).arg(&d.socket), LIMIT);
    assert_eq!(out.code, Some(0), "ferroctl {what}: {out}");
    out
}

/// The rules of the rule set in force that have a counter (`ferroctl stats` lists those), as
/// written, without their counters.
pub fn rules_in_force(d: &Daemon) -> Vec<String> {
    ferroctl(d, "stats")
        .stdout
        .lines()
        .filter_map(|l| Some(l.strip_prefix("rule ")?.split_once(" # ")?.1.to_owned()))
        .collect()
}

/// The timeout left of the UDP flow to `port` in the daemon's table, if there is one.
pub fn udp_timeout(d: &Daemon, port: u16) -> Option<u64> {
    ferroctl(d, "conntrack")
        .stdout
        .lines()
        .find(|l| l.starts_with("udp ") && l.contains(&format!(" dport={port} ")))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
}

/// The number after `key=` in `text` (0 when there is none).
pub fn field(text: &str, key: &str) -> u64 {
    text.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok()).unwrap_or(0)
}

// ---- the same traffic through a kernel router and through ferrowall ----

/// ferrowall as the router of [`Testbed::router`]: every packet accepted, invalid ones dropped
/// ([`ROUTER_RULES`] in `fw.rules`).
pub const ROUTER_CONFIG: &str = "interface = r-cli 198.18.1.1/24 2001:2:0:1::1/64
interface = r-srv 198.19.1.1/24 2001:2:0:2::1/64
rules = fw.rules
workers = 2
";

/// The rules of [`ROUTER_CONFIG`].
pub const ROUTER_RULES: &str = "chain forward {\n  policy accept\n  ct state invalid drop\n}\n";

/// The kernel's equivalent: forwarding, and a rule that needs conntrack (which enables it in the
/// namespace).
pub const KERNEL_RULES: &str = "table inet fw {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    ct state invalid drop\n  }\n}\n";

/// A Python server: TCP on 8081 (echoes one read, waits for the client's FIN, then closes after
/// `linger` seconds — with a pause, its ACK of that FIN goes alone) and UDP on 9001 (echoes),
/// IPv4 and IPv6.
pub fn echo_server(linger: f32) -> String {
    format!(
        r#"
import socket, threading, time
def handle(c):
    try:
        c.sendall(c.recv(100))
        while c.recv(100):
            pass
        time.sleep({linger})
    finally:
        c.close()
def udp():
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    u.bind(("::", 9001))
    while True:
        d, a = u.recvfrom(100)
        u.sendto(d, a)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8081))
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#
    )
}

/// A Python TCP client from `src`:`sport` to `dst`:8081 of [`echo_server`] that exchanges one
/// message, then keeps the connection open (`hold`) or closes it (its FIN first, then the
/// server's).
pub fn tcp_client(v6: bool, src: &str, sport: u16, dst: &str, hold: bool) -> String {
    let fam = if v6 { "AF_INET6" } else { "AF_INET" };
    let tail = if hold { "import time; time.sleep(120)" } else { "c.shutdown(socket.SHUT_WR); c.recv(100); c.close()" };
    format!(
        "import socket\nfor i in range(50):\n  try:\n    c = socket.socket(socket.{fam}); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    c.bind(('{src}', {sport})); c.settimeout(5); c.connect(('{dst}', 8081)); break\n  except OSError:\n    c.close(); import time; time.sleep(0.1)\nc.sendall(b'hello'); c.recv(100)\n{tail}\n"
    )
}

/// A Python UDP client from `src`:`sport` that sends one datagram to `dst`:9001 of
/// [`echo_server`] and waits for its echo.
pub fn udp_client(v6: bool, src: &str, sport: u16, dst: &str) -> String {
    let fam = if v6 { "AF_INET6" } else { "AF_INET" };
    format!(
        "import socket\nu = socket.socket(socket.{fam}, socket.SOCK_DGRAM); u.bind(('{src}', {sport})); u.settimeout(3)\nu.sendto(b'x', ('{dst}', 9001)); u.recvfrom(100)\n"
    )
}

//! High availability with the real conntrackd (issue 6, point 5): two ferrowall routers side by
//! side between a client and a server, each with a Debian `conntrackd` (FTFW, synchronising over a
//! dedicated veth between the two routers' namespaces, on their own kernel stacks) talking to its
//! ferrowall through the shim (`ferroctl exec -- conntrackd -C conf`).
//!
//! ```text
//!                 198.18.1.0/24   ra (primary)   198.19.1.0/24
//!               ca ----------- a-cli   a-srv ----------- sa
//!   client c                     a-sync                        server s
//!   198.18.0.10                    | 198.18.250.0/30 (conntrackd)  198.19.0.10
//!               cb ----------- b-cli   b-srv ----------- sb
//!                 198.18.2.0/24   rb (backup)    198.19.2.0/24
//! ```
//!
//! The client (198.18.0.10) downloads a file from the server (198.19.0.10) through the primary,
//! paced at 256 KB/s until the failover is done. Both routers then drop every packet that is not
//! `established`; the primary stops (ferrowall and its conntrackd, as a failed machine would); the traffic moves to the backup (the
//! client's and the server's routes change, as a virtual address moving would make them); the
//! backup's conntrackd commits its external cache into its ferrowall (`conntrackd -c`, through the
//! shim, as keepalived's `primary-backup.sh` does) and the transfer completes, whole, without a
//! reset. The control: the same without the commit, and the transfer dies (the backup sees the
//! connection's packets as new, and drops them).
//!
//! Needs root, `conntrackd`, `curl` and `python3`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrowall_tests::daemon::{bins, run, unique, Daemon, Out};
use ferrowall_tests::testbed_ns::{ferroctl, ip, random_file, sha256, wait_for_bytes, PacedServer, LIMIT};
use ferrowall_tests::{clock, cmd};

/// The client's and the server's addresses (on their loopback: reachable through either router).
const CLIENT: &str = "198.18.0.10";
const SERVER: &str = "198.19.0.10";

/// New connections from the client side are allowed.
fn open_rules(cli: &str) -> String {
    format!(
        "chain forward {{\n  policy drop\n  ct state established accept\n  iifname \"{cli}\" ct state new accept\n}}\n"
    )
}

/// Only packets of established connections pass: a connection picked up mid-stream (state new) is
/// dropped.
const ESTABLISHED_ONLY: &str = "chain forward {\n  policy drop\n  ct state established accept\n}\n";

/// Router `n` (`a` or `b`, on subnets `198.18.<i>.0/24` and `198.19.<i>.0/24`).
fn router_config(n: &str, i: u8) -> String {
    format!(
        "interface = {n}-cli 198.18.{i}.1/24\ninterface = {n}-srv 198.19.{i}.1/24\n\
         route = {CLIENT}/32 via 198.18.{i}.2\nroute = {SERVER}/32 via 198.19.{i}.2\nrules = fw.rules\nworkers = 2\n"
    )
}

/// conntrackd's configuration: FTFW over UDP from `me` to `peer` on `dev`, its files in `dir`.
fn conntrackd_config(dir: &Path, me: &str, peer: &str, dev: &str) -> String {
    let d = dir.display();
    format!(
        "Sync {{
	Mode FTFW {{
		DisableExternalCache Off
		CommitTimeout 1800
	}}
	UDP {{
		IPv4_address {me}
		IPv4_Destination_Address {peer}
		Port 3780
		Interface {dev}
		Checksum on
	}}
}}
General {{
	Systemd off
	HashSize 8192
	HashLimit 65536
	LogFile {d}/conntrackd.log
	Syslog off
	LockFile {d}/conntrackd.lock
	UNIX {{
		Path {d}/conntrackd.ctl
	}}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
	Filter From Userspace {{
		Protocol Accept {{
			TCP
		}}
		Address Ignore {{
			IPv4_address 127.0.0.1
			IPv4_address {me}
			IPv4_address {peer}
		}}
	}}
}}
"
    )
}

/// The four namespaces and the processes started in them; removed (processes killed by PID) on
/// drop, also when the test fails.
struct Bed {
    c: String,
    ra: String,
    rb: String,
    s: String,
    children: Vec<Child>,
}

impl Bed {
    fn new() -> Bed {
        let base = unique("fwha-");
        let bed = Bed {
            c: format!("{base}-c"),
            ra: format!("{base}-ra"),
            rb: format!("{base}-rb"),
            s: format!("{base}-s"),
            children: Vec::new(),
        };
        for ns in bed.all() {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let (c, ra, rb, s) = (&bed.c, &bed.ra, &bed.rb, &bed.s);
        // Datapath links (owned by ferrowall in the routers) and the dedicated sync link.
        for (a, ans, b, bns) in [
            ("ca", c, "a-cli", ra),
            ("cb", c, "b-cli", rb),
            ("sa", s, "a-srv", ra),
            ("sb", s, "b-srv", rb),
            ("a-sync", ra, "b-sync", rb),
        ] {
            ip(&["link", "add", a, "netns", ans, "type", "veth", "peer", "name", b, "netns", bns]);
            for (dev, ns) in [(a, ans), (b, bns)] {
                ip(&["-n", ns, "link", "set", dev, "up"]);
                // ferrowall has no vnet headers: frames of one MTU, checksums filled in.
                let _ = bed.exec(ns, &["ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off"]);
            }
        }
        ip(&["-n", c, "addr", "add", &format!("{CLIENT}/32"), "dev", "lo"]);
        ip(&["-n", s, "addr", "add", &format!("{SERVER}/32"), "dev", "lo"]);
        for (ns, dev, addr) in [
            (c, "ca", "198.18.1.2/24"),
            (c, "cb", "198.18.2.2/24"),
            (s, "sa", "198.19.1.2/24"),
            (s, "sb", "198.19.2.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        }
        ip(&["-n", ra, "addr", "add", "198.18.250.1/30", "dev", "a-sync"]);
        ip(&["-n", rb, "addr", "add", "198.18.250.2/30", "dev", "b-sync"]);
        // The routers' own stacks stay off the datapath; the end hosts accept replies on either
        // interface.
        for ns in [ra, rb] {
            let out = bed.exec(
                ns,
                &[
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                    "net.ipv4.ip_forward=0",
                ],
            );
            assert_eq!(out.code, Some(0), "{out}");
        }
        for ns in [c, s] {
            let out =
                bed.exec(ns, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]);
            assert_eq!(out.code, Some(0), "{out}");
        }
        bed.via("a");
        bed
    }

    fn all(&self) -> [&String; 4] {
        [&self.c, &self.ra, &self.rb, &self.s]
    }

    /// Routes the client's and the server's traffic through router `n` (`a` or `b`).
    fn via(&self, n: &str) {
        let i = if n == "a" { 1 } else { 2 };
        let (cdev, sdev) = if n == "a" { ("ca", "sa") } else { ("cb", "sb") };
        ip(&[
            "-n",
            &self.c,
            "route",
            "replace",
            &format!("{SERVER}/32"),
            "via",
            &format!("198.18.{i}.1"),
            "dev",
            cdev,
            "src",
            CLIENT,
        ]);
        ip(&[
            "-n",
            &self.s,
            "route",
            "replace",
            &format!("{CLIENT}/32"),
            "via",
            &format!("198.19.{i}.1"),
            "dev",
            sdev,
            "src",
            SERVER,
        ]);
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Out {
        run(Command::new("ip").args(["netns", "exec", ns]).args(args), LIMIT)
    }

    /// Starts `cmd` in the background (its output to `log`); killed when the bed goes. Its index.
    fn spawn(&mut self, cmd: &mut Command, log: &Path) -> usize {
        let f = fs::File::create(log).expect("creating a log");
        let child =
            cmd.stdin(Stdio::null()).stdout(f.try_clone().expect("log")).stderr(f).spawn().expect("starting a process");
        self.children.push(child);
        self.children.len() - 1
    }

    /// Stops child `i` (SIGTERM by its PID, SIGKILL after 10 s).
    fn stop(&mut self, i: usize) {
        let c = &mut self.children[i];
        if c.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        let start = clock::now();
        while c.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                let _ = c.wait();
                return;
            }
            clock::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.all() {
            let _ = run(Command::new("ip").args(["netns", "del", ns]), LIMIT);
        }
    }
}

/// One router: its ferrowall and its conntrackd's files.
struct Router {
    name: &'static str,
    ns: String,
    d: Daemon,
    conf: PathBuf,
    conntrackd: Option<usize>,
}

impl Router {
    fn start(name: &'static str, ns: &str, me: &str, peer: &str) -> Router {
        let i = if name == "a" { 1 } else { 2 };
        let d = Daemon::start_in(
            Some(ns),
            &format!("ferrowall-ha-{name}-"),
            Some(&router_config(name, i)),
            &[("fw.rules", &open_rules(&format!("{name}-cli")))],
        );
        let conf = d.dir.join("conntrackd.conf");
        fs::write(&conf, conntrackd_config(&d.dir, me, peer, &format!("{name}-sync")))
            .expect("writing conntrackd.conf");
        Router { name, ns: ns.to_owned(), d, conf, conntrackd: None }
    }

    /// `ip netns exec NS ferroctl exec --socket S -- conntrackd -C CONF ARGS...`.
    fn conntrackd_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(&bins().ferroctl).arg("exec").arg("--socket").arg(&self.d.socket);
        c.args(["--", "conntrackd", "-C"]).arg(&self.conf).args(args);
        c
    }

    /// Starts conntrackd (in the foreground, a child of the bed) and waits until it has set up.
    fn start_conntrackd(&mut self, bed: &mut Bed) {
        let log = self.d.dir.join("conntrackd.out");
        let _ = fs::remove_file(self.d.dir.join("conntrackd.lock"));
        self.conntrackd = Some(bed.spawn(&mut self.conntrackd_cmd(&[]), &log));
        let start = clock::now();
        while !fs::read_to_string(&log).unwrap_or_default().contains("initialization completed") {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "conntrackd {} does not start: {}",
                self.name,
                self.logs()
            );
            clock::sleep(Duration::from_millis(50));
        }
    }

    /// `conntrackd -C CONF ARGS` (a request to the running conntrackd), which must succeed.
    fn ask(&self, args: &[&str]) -> Out {
        let out = run(&mut self.conntrackd_cmd(args), LIMIT);
        assert_eq!(out.code, Some(0), "conntrackd {} {args:?}: {out}\n{}", self.name, self.logs());
        out
    }

    /// Switches the rule set.
    fn rules(&self, text: &str) {
        fs::write(self.d.dir.join("fw.rules"), text).expect("writing the rules");
        ferroctl(&self.d, "reload");
    }

    /// Stops the router as a failed machine stops: its conntrackd and its ferrowall.
    fn fail(&mut self, bed: &mut Bed) {
        if let Some(i) = self.conntrackd.take() {
            bed.stop(i);
        }
        assert_eq!(self.d.stop(), Some(0), "ferrowall {}: {}", self.name, self.d.log());
    }

    fn logs(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.d.dir.join(f)).unwrap_or_default();
        format!(
            "--- ferrowall {n}\n{}--- conntrackd {n} (output)\n{}--- conntrackd {n} (log)\n{}",
            self.d.log(),
            read("conntrackd.out"),
            read("conntrackd.log"),
            n = self.name
        )
    }
}

fn require_root_and_tools() {
    let uid = cmd::run("id", &["-u"]).expect("running id");
    assert_eq!(uid.trim(), "0", "needs root (it creates network namespaces)");
    for tool in ["conntrackd", "curl", "python3", "ethtool"] {
        cmd::run("sh", &["-c", &format!("command -v {tool}")])
            .unwrap_or_else(|e| panic!("required tool `{tool}` is not installed: {e}"));
    }
}

/// Downloads `url` from namespace `ns` in the background into `to`, within `max_secs`.
fn download(bed: &mut Bed, ns: &str, url: &str, to: &Path, max_secs: &str, log: &Path) -> usize {
    let to = to.to_string_lossy().into_owned();
    bed.spawn(Command::new("ip").args(["netns", "exec", ns, "curl", "-sS", "-m", max_secs, "-o", &to, url]), log)
}

/// The client ports of the established connections to the server that `table` (`conntrack -L`
/// lines) holds.
fn established_ports(table: &str) -> Vec<String> {
    table
        .lines()
        .filter(|l| l.contains("ESTABLISHED") && l.contains(&format!("dst={SERVER}")) && l.contains("dport=8080"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("sport=")).map(str::to_owned))
        .collect()
}

/// The download's connection: the one established connection to the server in the primary's
/// table that `before` (its ports, taken before the download started) does not name.
fn new_connection(primary: &Router, before: &[String]) -> String {
    let start = clock::now();
    loop {
        let now = established_ports(&ferroctl(&primary.d, "conntrack").stdout);
        if let Some(p) = now.into_iter().find(|p| !before.contains(p)) {
            return p;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the download is not in the primary's table");
        clock::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until the backup's external cache (synchronised from the primary) holds
/// connection `sport` as established. (Any
/// established connection would not do: the cache keeps those of a primary that failed.)
fn wait_for_sync(backup: &Router, sport: &str) {
    let start = clock::now();
    loop {
        let out = backup.ask(&["-e"]);
        if established_ports(&out.stdout).iter().any(|p| p == sport) {
            return;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let stats = backup.ask(&["-s"]);
            panic!("the backup never learnt connection {sport}: {out}\n{stats}\n{}", backup.logs());
        }
        clock::sleep(Duration::from_millis(200));
    }
}

/// Waits for child `i` of the bed (bounded by `limit`); whether it exited successfully.
fn wait_child(bed: &mut Bed, i: usize, limit: Duration) -> bool {
    let start = clock::now();
    loop {
        if let Ok(Some(st)) = bed.children[i].try_wait() {
            return st.success();
        }
        if start.elapsed() > limit {
            bed.stop(i);
            return false;
        }
        clock::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_transfer_survives_failover_once_the_backup_commits() {
    require_root_and_tools();
    let mut bed = Bed::new();
    let mut a = Router::start("a", &bed.ra, "198.18.250.1", "198.18.250.2");
    let mut b = Router::start("b", &bed.rb, "198.18.250.2", "198.18.250.1");
    b.start_conntrackd(&mut bed);
    a.start_conntrackd(&mut bed);

    // The server: 8 MB of random bytes, paced, and a few bytes to probe it with.
    let blob = a.d.dir.join("blob");
    random_file(&blob, 8);
    let want = sha256(&blob);
    fs::write(a.d.dir.join("ping"), "ping\n").expect("writing the probe's file");
    let (server, args) = PacedServer::new(&a.d.dir, SERVER, 8080);
    let (s, c) = (bed.s.clone(), bed.c.clone());
    bed.spawn(Command::new("ip").args(["netns", "exec", &s]).args(&args), &a.d.dir.join("http.log"));
    let url = format!("http://{SERVER}:8080/blob");
    let ping = format!("http://{SERVER}:8080/ping");
    let start = clock::now();
    while bed.exec(&c, &["curl", "-s", "-m", "2", "-o", "/dev/null", &ping]).code != Some(0) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the server does not answer through the primary\n{}",
            a.logs()
        );
        clock::sleep(Duration::from_millis(200));
    }

    // The control first: the primary fails, the traffic moves, nothing is committed. The backup
    // sees the connection's next packets as new and drops them: the transfer dies.
    let got = a.d.dir.join("control");
    let before = established_ports(&ferroctl(&a.d, "conntrack").stdout);
    let dl = download(&mut bed, &c, &url, &got, "14", &a.d.dir.join("curl-control.log"));
    wait_for_bytes(&got, 1_000_000);
    wait_for_sync(&b, &new_connection(&a, &before));
    a.rules(ESTABLISHED_ONLY);
    b.rules(ESTABLISHED_ONLY);
    a.fail(&mut bed);
    bed.via("b");
    // Were the connection still carried, the rest would now come at full speed, well within curl's
    // limit.
    server.release();
    let finished = wait_child(&mut bed, dl, Duration::from_secs(30));
    assert!(!finished, "without the commit the transfer should not survive the failover\n{}\n{}", a.logs(), b.logs());
    let table = ferroctl(&b.d, "conntrack").stdout;
    assert!(!table.contains("ESTABLISHED"), "the backup tracks the connection without a commit: {table}");

    // The primary back (a new start: ferrowall, then its conntrackd), the routes back, new
    // connections allowed again.
    a.d.launch().unwrap_or_else(|e| panic!("{e}"));
    a.start_conntrackd(&mut bed);
    a.rules(&open_rules("a-cli"));
    b.rules(&open_rules("b-cli"));
    bed.via("a");
    server.hold();

    // With the commit: the transfer completes through the backup, whole.
    let got = a.d.dir.join("ha");
    let curl_log = a.d.dir.join("curl-ha.log");
    let before = established_ports(&ferroctl(&a.d, "conntrack").stdout);
    let dl = download(&mut bed, &c, &url, &got, "60", &curl_log);
    wait_for_bytes(&got, 1_000_000);
    let sport = new_connection(&a, &before);
    wait_for_sync(&b, &sport);
    a.rules(ESTABLISHED_ONLY);
    b.rules(ESTABLISHED_ONLY);
    // The rules bite: a new connection is refused.
    let out = bed.exec(&c, &["curl", "-s", "-m", "2", "-o", "/dev/null", &url]);
    assert_ne!(out.code, Some(0), "a new connection passed the established-only rules");
    let primary_table = ferroctl(&a.d, "conntrack").stdout;
    a.fail(&mut bed);
    let external = b.ask(&["-e"]).stdout;
    println!("download {sport}\nprimary's table:\n{primary_table}\nbackup's external cache:\n{external}");
    // What keepalived's primary-backup.sh runs on the new primary: commit the external cache,
    // flush the caches, resynchronise with the kernel's (here ferrowall's) table, send a bulk
    // update; then the traffic arrives.
    b.ask(&["-c"]);
    let table = ferroctl(&b.d, "conntrack").stdout;
    assert!(
        table.lines().any(|l| l.contains("ESTABLISHED") && l.contains(&sport) && l.contains("[ASSURED]")),
        "the commit did not create connection {sport} in the backup's table: {table}\n\
         the primary's table before it failed:\n{primary_table}\nthe backup's external cache before the commit:\n{external}\n{}\n{}",
        a.logs(),
        b.logs()
    );
    b.ask(&["-f"]);
    b.ask(&["-R"]);
    b.ask(&["-B"]);
    bed.via("b");
    // The rest of the file at full speed, through the backup.
    server.release();
    let ok = wait_child(&mut bed, dl, Duration::from_secs(60));
    let curl = fs::read_to_string(&curl_log).unwrap_or_default();
    assert!(ok, "the transfer broke over the failover: {curl}\n{}", b.logs());
    assert_eq!(sha256(&got), want, "the transfer over the failover is corrupted");
    // It went through the backup: its counters moved, its table has the connection.
    let stats = ferroctl(&b.d, "stats").stdout;
    println!("{stats}");
    let table = ferroctl(&b.d, "conntrack").stdout;
    println!("{table}{}", b.logs());
    assert!(table.contains(&format!("src={CLIENT} dst={SERVER}")), "{table}");
}

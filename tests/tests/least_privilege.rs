//! Least privilege: with `user = nobody` the router-mode daemon opens its AF_PACKET ports and its
//! control socket as root, then runs as uid/gid 65534 with no capability in any thread, while
//! traffic, the control plane and reloads keep working. An unknown user is refused at start.

use std::process::Command;

use ferrowall_tests::clock;
use ferrowall_tests::daemon::{bins, run, unique, Daemon};
use ferrowall_tests::testbed_ns::{ferroctl, random_file, sha256, Testbed, LIMIT};

const NOBODY: u32 = 65534;

const CONFIG: &str = "interface = r-cli 198.18.1.1/24
interface = r-srv 198.19.1.1/24
rules = fw.rules
workers = 2
user = nobody
";

const RULES: &str = r#"chain forward {
  policy drop
  ct state established,related accept
  iifname "r-srv" ct state new drop
  iifname "r-cli" accept
}
"#;

/// The value of `key:` in a `/proc/.../status` text.
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')).map(str::trim).unwrap_or_default()
}

/// Waits (up to 10 s) for `needle` in the daemon's log.
fn wait_for_log(d: &Daemon, needle: &str) {
    let start = clock::now();
    while !d.log().contains(needle) {
        assert!(start.elapsed().as_secs() < 10, "no `{needle}` in the log: {}", d.log());
        clock::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn router_runs_as_nobody_without_capabilities() {
    let mut tb = Testbed::router("fwlp-");
    let mut d = Daemon::start_in(Some(&tb.m), "ferrowall-lp-", Some(CONFIG), &[("fw.rules", RULES)]);
    wait_for_log(&d, &format!("ferrowall: running as uid {NOBODY} gid {NOBODY}, capabilities: none"));
    let (c, s) = (tb.c.clone(), tb.s.clone());

    // Every thread (main and the two workers): uid/gid nobody, no capability.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.pid())).expect("the daemon's threads");
    let mut names = Vec::new();
    for t in tasks {
        let t = t.expect("a task").path();
        let status = std::fs::read_to_string(t.join("status")).expect("a task's status");
        let name = status_field(&status, "Name").to_owned();
        let nobody = format!("{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}");
        assert_eq!(status_field(&status, "Uid"), nobody, "{name}: {status}");
        assert_eq!(status_field(&status, "Gid"), nobody, "{name}: {status}");
        assert_eq!(status_field(&status, "Groups"), "", "{name}: {status}");
        for cap in ["CapEff", "CapPrm", "CapAmb"] {
            assert_eq!(status_field(&status, cap), "0000000000000000", "{name} {cap}: {status}");
        }
        names.push(name);
    }
    names.sort();
    assert!(names.iter().any(|n| n == "ferrowall-w0") && names.iter().any(|n| n == "ferrowall-w1"), "{names:?}");

    // Traffic still forwards through the ports opened before the switch.
    let out = tb.exec(&c, &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.1.2"]);
    assert!(out.stdout.contains("3 received"), "ping through the router: {out}\n{}", d.log());
    let blob = d.dir.join("blob");
    random_file(&blob, 1);
    let dir = d.dir.to_string_lossy().into_owned();
    tb.spawn(&s, &["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", &dir]);
    let got = d.dir.join(unique("got-"));
    assert!(tb.download(&c, "http://198.19.1.2:8080/blob", &got, "20"), "download\n{}", d.log());
    assert_eq!(sha256(&got), sha256(&blob), "the download is corrupted");

    // The control plane: root still connects to the (root-owned, 0660) socket.
    let ct = ferroctl(&d, "conntrack");
    assert!(ct.stdout.contains("dport=8080"), "the download's connection is tracked: {ct}");
    let out = d.nfct(&["timeout", "list"]);
    assert_eq!(out.code, Some(0), "nfct timeout list through ferroctl exec: {out}");

    // Reloads read the files as nobody: readable ones load, an unreadable one is refused and the
    // running rules stay.
    let rules = d.dir.join("fw.rules");
    let reload = || run(Command::new(&bins().ferroctl).args(["reload", "--socket"]).arg(&d.socket), LIMIT);
    let out = reload();
    assert_eq!(out.code, Some(0), "reload as nobody: {out}\n{}", d.log());
    let chmod = |mode: &str| assert_eq!(run(Command::new("chmod").arg(mode).arg(&rules), LIMIT).code, Some(0));
    chmod("0600");
    let out = reload();
    assert_ne!(out.code, Some(0), "a rule file nobody cannot read is refused: {out}");
    chmod("0644");
    let out = tb.exec(&c, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.19.1.2"]);
    assert!(out.stdout.contains("2 received"), "forwarding after the refused reload: {out}");
    assert_eq!(reload().code, Some(0), "reload once readable again");

    // At exit the socket file stays (its directory is root's): a stale socket the next start
    // replaces.
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    assert!(d.socket.exists(), "the stale socket file stays");
    let mut next = Command::new(&bins().ferrowall)
        .arg("run")
        .arg("--ctl-socket")
        .arg(&d.socket)
        .arg("--state-dir")
        .arg(&d.state_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting ferrowall again");
    let start = clock::now();
    let stats = || run(Command::new(&bins().ferroctl).args(["stats", "--socket"]).arg(&d.socket), LIMIT);
    while stats().code != Some(0) {
        if start.elapsed().as_secs() >= 10 || next.try_wait().ok().flatten().is_some() {
            let _ = next.kill();
            let _ = next.wait();
            panic!("the next start did not replace the stale socket");
        }
        clock::sleep(std::time::Duration::from_millis(20));
    }
    let _ = Command::new("kill").arg("-TERM").arg(next.id().to_string()).status();
    let _ = next.wait();
}

#[test]
fn unknown_user_is_refused_with_its_line() {
    let dir = std::env::temp_dir().join(unique("ferrowall-lp-user-"));
    std::fs::create_dir_all(&dir).expect("a directory");
    let conf = dir.join("ferrowall.conf");
    std::fs::write(&conf, "workers = 1\nuser = no-such-user-ferrowall\n").expect("the config");
    let out = run(
        Command::new(&bins().ferrowall)
            .arg("run")
            .arg("--config")
            .arg(&conf)
            .arg("--ctl-socket")
            .arg(dir.join("ctl.sock")),
        LIMIT,
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_ne!(out.code, Some(0), "{out}");
    let want = format!("{}:2: unknown user `no-such-user-ferrowall`", conf.display());
    assert!(out.stderr.contains(&want), "want `{want}`: {out}");
}

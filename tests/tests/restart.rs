//! Nothing lost across restarts (issue "Reliability", point 6): the named timeout policies, the
//! defaults and the rule set survive a restart; a damaged state file is refused and the previous
//! good copy kept; a graceful restart (SIGTERM, then start) carries the connection table over, so
//! an open TCP connection survives it under a rule set that drops every packet that is not
//! `established`, and does not survive without the saved table.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrowall_tests::clock;
use ferrowall_tests::daemon::Daemon;
use ferrowall_tests::testbed_ns::{
    ferroctl, random_file, rules_in_force, sha256, wait_for_bytes, PacedServer, Testbed,
};

/// `nfct timeout list` and the TCP and UDP defaults, as the real nfct prints them.
fn settings(d: &Daemon) -> String {
    let mut text = String::new();
    for args in [
        &["timeout", "list"][..],
        &["timeout", "default-get", "inet", "tcp"],
        &["timeout", "default-get", "inet", "udp"],
    ] {
        let out = d.nfct(args);
        assert_eq!(out.code, Some(0), "nfct {args:?}: {out}");
        text.push_str(&out.stdout);
    }
    text
}

// `counter` makes `ferroctl stats` list the rules.
const RULES_V1: &str = "chain forward {\n  policy accept\n  udp dport 53 ct timeout set \"dns\" counter accept\n}\n";
const RULES_V2: &str = "chain forward {\n  policy drop\n  ct state established counter accept\n  udp dport 53 ct timeout set \"dns\" counter accept\n}\n";

#[test]
fn settings_survive_a_restart_and_a_damaged_state_is_refused() {
    let config =
        "timeout = dns inet udp unreplied 7 replied 8\ntimeout = spare inet tcp established 99\nrules = fw.rules\n";
    let mut d = Daemon::start("ferrowall-restart-", Some(config), &[("fw.rules", RULES_V1)]);
    // Runtime changes: a new policy, one deleted, new defaults, a new rule set.
    for args in [
        &["timeout", "add", "web", "inet6", "tcp", "established", "600", "close", "3"][..],
        &["timeout", "delete", "spare"],
        &["timeout", "default-set", "inet", "tcp", "established", "7200"],
        &["timeout", "default-set", "inet", "udp", "replied", "90"],
    ] {
        let out = d.nfct(args);
        assert_eq!(out.code, Some(0), "nfct {args:?}: {out}");
    }
    fs::write(d.dir.join("fw.rules"), RULES_V2).unwrap();
    ferroctl(&d, "reload");
    let before = settings(&d);
    assert!(before.contains("web") && !before.contains("spare"), "{before}");
    assert!(before.contains("dns"), "{before}");
    let rules = rules_in_force(&d);
    assert!(rules.iter().any(|r| r.contains("ct state established counter accept")), "{rules:?}");

    // A restart: everything as it was, the configuration's deleted `spare` not back.
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    d.launch().unwrap();
    assert!(d.log().contains("restored 2 timeout policies"), "{}", d.log());
    assert_eq!(settings(&d), before);
    assert_eq!(rules_in_force(&d), rules);

    // A rule file broken while the daemon was down: it starts with the rule set in force at the
    // last stop, and says why.
    fs::write(d.dir.join("fw.rules"), "chain forward {\n  policy maybe\n}\n").unwrap();
    assert_eq!(d.stop(), Some(0));
    d.launch().unwrap();
    assert!(d.log().contains("fw.rules:2:") && d.log().contains("running the rule set in force"), "{}", d.log());
    assert_eq!(rules_in_force(&d), rules);
    assert_eq!(settings(&d), before);
    fs::write(d.dir.join("fw.rules"), RULES_V2).unwrap();

    // A change after the restart, so state.prev is the copy from before it.
    let out = d.nfct(&["timeout", "add", "late", "inet", "udp", "unreplied", "1"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(d.stop(), Some(0));

    // Damaged: cut short, then one byte changed. Refused with the reason, the file untouched.
    let state = d.state_dir.join("state");
    let good = fs::read(&state).unwrap();
    for damaged in [good[..good.len() * 2 / 3].to_vec(), {
        let mut b = good.clone();
        let at = b.len() / 2;
        b[at] ^= 0x01;
        b
    }] {
        fs::write(&state, &damaged).unwrap();
        let e = d.launch().unwrap_err();
        assert!(e.contains("refusing to start") && e.contains("state.prev"), "{e}");
        assert!(e.contains("truncated") || e.contains("checksum mismatch"), "{e}");
        assert_eq!(fs::read(&state).unwrap(), damaged, "the damaged file was changed");
    }
    // The previous good copy, copied over by the operator: the settings before `late`.
    fs::copy(d.state_dir.join("state.prev"), &state).unwrap();
    d.launch().unwrap();
    assert_eq!(settings(&d), before);
}

const CONFIG: &str = "interface = r-cli 198.18.1.1/24 2001:2:0:1::1/64
interface = r-srv 198.19.1.1/24 2001:2:0:2::1/64
rules = fw.rules
workers = 2
";

/// New connections from the client allowed.
const OPEN: &str = "chain forward {\n  policy drop\n  ct state established,related accept\n  iifname \"r-cli\" ct state new accept\n}\n";
/// Only packets of established connections pass: a connection picked up mid-stream (state new)
/// is dropped.
const ESTABLISHED_ONLY: &str = "chain forward {\n  policy drop\n  ct state established accept\n}\n";

/// Downloads `url` in the background from namespace `ns`; the curl process.
fn download(ns: &str, url: &str, to: &std::path::Path, max_secs: &str) -> std::process::Child {
    Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-m", max_secs, "-o"])
        .arg(to)
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting curl")
}

#[test]
fn a_graceful_restart_keeps_an_open_tcp_connection() {
    let mut tb = Testbed::router("fwrs-");
    let mut d = Daemon::start_in(Some(&tb.m), "ferrowall-graceful-", Some(CONFIG), &[("fw.rules", OPEN)]);
    let (c, s) = (tb.c.clone(), tb.s.clone());
    let blob = d.dir.join("blob");
    random_file(&blob, 6);
    let want = sha256(&blob);
    fs::write(d.dir.join("ping"), "ping\n").unwrap();
    let (server, args) = PacedServer::new(&d.dir, "0.0.0.0", 8080);
    tb.spawn(&s, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let url = "http://198.19.1.2:8080/blob";
    let ping = "http://198.19.1.2:8080/ping";
    // The server is up when a first request gets through.
    let start = clock::now();
    while tb.exec(&c, &["curl", "-s", "-m", "2", "-o", "/dev/null", ping]).code != Some(0) {
        assert!(start.elapsed() < Duration::from_secs(20), "the server does not answer");
        clock::sleep(Duration::from_millis(200));
    }

    // With the saved table: the transfer (6 MB, paced until the restart is over) goes on through
    // the restart.
    let got = d.dir.join("got");
    let mut dl = download(&c, url, &got, "40");
    wait_for_bytes(&got, 500_000);
    fs::write(d.dir.join("fw.rules"), ESTABLISHED_ONLY).unwrap();
    ferroctl(&d, "reload");
    // The rule set bites: a new connection is refused.
    let out = tb.exec(&c, &["curl", "-s", "-m", "2", "-o", "/dev/null", ping]);
    assert_ne!(out.code, Some(0), "a new connection passed the established-only rules");
    assert!(matches!(dl.try_wait(), Ok(None)), "the download ended before the restart it should cross");
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    assert!(d.log().contains("saved ") && d.log().contains(" connections for the next start"), "{}", d.log());
    d.launch().unwrap();
    let log = d.log();
    let restored = log.lines().rev().find(|l| l.contains("ferrowall: restored ") && l.contains("connections"));
    assert!(restored.is_some_and(|l| !l.contains("restored 0 ")), "{log}");
    server.release();
    let status = dl.wait().expect("curl");
    assert!(status.success(), "the transfer broke across the restart: {status}\n{}", d.log());
    assert_eq!(sha256(&got), want, "the download across the restart is corrupted");
    let out = tb.exec(&c, &["curl", "-s", "-m", "2", "-o", "/dev/null", ping]);
    assert_ne!(out.code, Some(0), "after the restart, a new connection passed the established-only rules");

    // The control: the same, but the saved table is removed before the start. The connection's
    // next packets are picked up as new and dropped: the transfer cannot finish.
    fs::write(d.dir.join("fw.rules"), OPEN).unwrap();
    ferroctl(&d, "reload");
    server.hold();
    let got2 = d.dir.join("got2");
    let mut dl = download(&c, url, &got2, "12");
    wait_for_bytes(&got2, 500_000);
    fs::write(d.dir.join("fw.rules"), ESTABLISHED_ONLY).unwrap();
    ferroctl(&d, "reload");
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    fs::remove_file(d.state_dir.join("conntrack")).expect("the saved table");
    d.launch().unwrap();
    // Were the connection still carried, the rest would now come at full speed, well within
    // curl's limit.
    server.release();
    let status = dl.wait().expect("curl");
    assert!(!status.success(), "without the saved table the transfer should not survive: {}", d.log());
}

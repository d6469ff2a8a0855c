//! A reload (`ferroctl reload`, `SIGHUP`) re-reads the configuration and the rule file it names:
//! it switches to a newly named rule file, refuses a bad configuration with `file:line` and keeps
//! the running rules, and names every other changed setting (those only a restart applies) instead
//! of passing over them in silence. A daemon without interfaces: the control plane alone. Also:
//! `ferroctl`'s output into a pipe already closed.

use std::fs;
use std::process::Command;

use ferrowall_tests::daemon::{bins, run, Daemon, Out};
use ferrowall_tests::testbed_ns::{ferroctl, rules_in_force, LIMIT};

const CONFIG: &str = "rules = a.rules\nmax_connections = 1000\ntimeout = dns inet udp unreplied 7 replied 8\n";
// `counter` makes `ferroctl stats` list the rules.
const RULES_A: &str = "chain forward {\n  policy accept\n  udp dport 53 counter accept\n}\n";
const RULES_B: &str = "chain forward {\n  policy drop\n  tcp dport 22 counter accept\n}\n";

fn reload(d: &Daemon) -> Out {
    run(Command::new(&bins().ferroctl).args(["reload", "--socket"]).arg(&d.socket), LIMIT)
}

#[test]
fn a_reload_applies_what_it_can_and_names_the_rest() {
    let d = Daemon::start("ferrowall-reload-", Some(CONFIG), &[("a.rules", RULES_A), ("b.rules", RULES_B)]);
    let conf = d.dir.join("ferrowall.conf");
    assert_eq!(rules_in_force(&d), ["udp dport 53 counter accept"]);

    // Nothing changed but a comment: a plain reload, nothing to say.
    fs::write(&conf, format!("# edited\n{CONFIG}")).unwrap();
    let out = reload(&d);
    assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""), "{out}");

    // Another rule file, and settings that only a restart applies.
    fs::write(
        &conf,
        "rules = b.rules\nmax_connections = 2000\ntimeout = dns inet udp unreplied 7 replied 9\nbusy_poll = 50\n",
    )
    .unwrap();
    let out = reload(&d);
    assert_eq!(out.code, Some(0), "{out}");
    let said = "not applied until a restart: max_connections, timeout, busy_poll";
    assert_eq!(out.stderr.trim(), format!("ferroctl: reload: {said}"), "{out}");
    assert_eq!(rules_in_force(&d), ["tcp dport 22 counter accept"], "the newly named rule file is in force");
    assert!(d.log().contains("reload (request of uid 0 pid "), "{}", d.log());
    assert!(d.log().lines().any(|l| l.ends_with(&format!("done; {said}"))), "{}", d.log());
    // Not applied means not applied: the table keeps its size.
    let count = ferroctl(&d, "stats").stdout;
    assert!(count.contains("conntrack: count=0 max=1000"), "{count}");

    // SIGHUP says the same in the log.
    // The daemon this test started, by its PID.
    let out = run(Command::new("kill").args(["-HUP", &d.pid().to_string()]), LIMIT);
    assert_eq!(out.code, Some(0), "{out}");
    let start = ferrowall_tests::clock::now();
    while !d.log().lines().any(|l| l.contains("reload (SIGHUP): done; ") && l.ends_with(said)) {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "no SIGHUP reload logged: {}", d.log());
        ferrowall_tests::clock::sleep(std::time::Duration::from_millis(20));
    }

    // A bad configuration: refused with its file and line, the running rules stay.
    fs::write(&conf, "rules = a.rules\nmax_connections = lots\n").unwrap();
    let out = reload(&d);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains(&format!("{}:2: ", conf.display())), "{out}");
    assert_eq!(rules_in_force(&d), ["tcp dport 22 counter accept"], "the running rules stay");
    drop(d);
}

/// `ferroctl stats | head -0`: a reader that closed the pipe before ferroctl wrote is not an
/// error (print! would panic on EPIPE). The read end is closed as soon as ferroctl starts, before
/// it has connected to the daemon and written.
#[test]
fn a_closed_standard_output_is_not_an_error() {
    let d = Daemon::start("ferrowall-epipe-", Some(CONFIG), &[("a.rules", RULES_A)]);
    for what in ["stats", "conntrack"] {
        let mut child = Command::new(&bins().ferroctl)
            .args([what, "--socket"])
            .arg(&d.socket)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ferroctl");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("ferroctl's end");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.is_empty(), "ferroctl {what}: {:?}: {stderr}", out.status);
    }
    drop(d);
}

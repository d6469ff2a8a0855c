//! `ferroctl timeout ARGS` against `ferroctl exec -- nfct timeout ARGS` (the unmodified Debian nfct
//! through the preload shim): each command sequence runs against two fresh `ferrowall run` daemons,
//! one per client, and every command's stdout, stderr and exit code must be identical, nfct's
//! `nfct v1.4.7:` prefix included. `--json` output is checked with Python's `json` module. Needs
//! `nfct` and `python3` (and the rights to use the daemon's socket); fails without them, by design.
//!
//! Every daemon runs in a directory of its own under the temp dir and is stopped (by its PID) and
//! the directory removed when the test ends, also on failure.

use std::process::Command;

use ferrowall_tests::daemon::{bins, run, run_input, Daemon, LIMIT};

/// A fresh daemon without a configuration.
fn daemon() -> Daemon {
    Daemon::start("ferroctl-timeout-", None, &[])
}

/// Runs `commands` (whitespace-separated arguments after `timeout`) through `ferroctl timeout` on
/// one fresh daemon and through nfct on another; every difference, described.
fn differences(commands: &[String]) -> Vec<String> {
    let ours = daemon();
    let theirs = daemon();
    let mut diffs = Vec::new();
    for c in commands {
        let args: Vec<&str> = c.split_whitespace().collect();
        let a = ours.ferroctl(&[], &args);
        let b = theirs.nfct(&[&["timeout"][..], &args].concat());
        if a != b {
            diffs.push(format!("`timeout {c}` differs\n== ferroctl: {a}== nfct: {b}"));
        }
    }
    if !diffs.is_empty() {
        diffs.push(format!("(ferroctl's daemon log:\n{}\nnfct's daemon log:\n{})", ours.log(), theirs.log()));
    }
    diffs
}

fn assert_same(commands: &[&str]) {
    let owned: Vec<String> = commands.iter().map(|c| (*c).to_owned()).collect();
    let diffs = differences(&owned);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn add_get_list_and_busy() {
    assert_same(&[
        "list",
        "add t1 inet tcp established 100",
        "list",
        "get t1",
        "add t1 inet tcp established 100",
        "add t1 inet6 udp replied 1",
        "get t1",
        "list",
    ]);
}

#[test]
fn missing_policies_are_enoent() {
    assert_same(&["get nosuch", "delete nosuch", "add a inet udp replied 4", "get nosuch", "delete a", "delete a"]);
}

#[test]
fn delete_and_flush() {
    assert_same(&[
        "add a inet tcp established 1",
        "add b inet6 udp unreplied 2",
        "add c inet icmp timeout 3",
        "delete b",
        "list",
        "flush",
        "list",
        "flush",
        "add a inet tcp close 9",
        "get a",
    ]);
}

#[test]
fn every_protocol_over_inet() {
    assert_same(&[
        "add tcp inet tcp syn_sent 1 syn_recv 2 established 3 fin_wait 4 close_wait 5 last_ack 6 time_wait 7 \
         close 8 syn_sent2 9 retrans 10 unacknowledged 11",
        "add udp inet udp unreplied 12 replied 13",
        "add udplite inet udplite replied 14",
        "add gre inet gre unreplied 15",
        "add icmp inet icmp timeout 16",
        "add sctp inet sctp closed 1 cookie_wait 2 cookie_echoed 3 established 4 shutdown_sent 5 shutdown_recd 6 \
         shutdown_ack_sent 7",
        "add generic inet generic timeout 17",
        "add dccp inet dccp request 18",
        "add esp inet esp",
        "add alias inet TCP ESTABLISHED 19",
        "list",
        "get sctp",
        "get generic",
    ]);
}

#[test]
fn every_protocol_over_inet6() {
    assert_same(&[
        "add tcp6 inet6 tcp established 21 unacknowledged 22",
        "add udp6 inet6 udp replied 23",
        "add udplite6 inet6 udplite unreplied 24",
        "add gre6 inet6 gre replied 25",
        "add icmp6a inet6 ipv6-icmp timeout 26",
        "add icmp6b inet6 icmpv6 timeout 27",
        "add sctp6 inet6 sctp heartbeat_sent 28",
        "add sctp6 inet6 sctp established 28",
        "add generic6 inet6 generic timeout 29",
        "list",
        "get icmp6b",
    ]);
}

#[test]
fn defaults() {
    assert_same(&[
        "default-get inet tcp",
        "default-get inet6 tcp",
        "default-get inet udp",
        "default-get inet6 sctp",
        "default-get inet icmp",
        "default-get inet6 ipv6-icmp",
        "default-get inet generic",
        "default-get inet gre",
        "default-get inet udplite",
        "default-set inet tcp established 1000 close 3",
        "default-get inet tcp",
        "default-set inet6 udp replied 9",
        "default-get inet6 udp",
        "add uses-defaults inet6 udp unreplied 1",
        "get uses-defaults",
        "default-get inet esp",
        "default-get inet dccp",
        "default-get inet udp extra words",
        "default-set inet sctp heartbeat_acked 4",
        "default-set inet esp timeout 1",
    ]);
}

#[test]
fn parse_errors() {
    assert_same(&[
        "add x ipx tcp established 1",
        "add x inet bogus established 1",
        "add x inet Tcp established 1",
        "add x inet tcp bogus 3",
        "add x inet tcp established 3 bogus 4",
        "add x inet tcp established",
        "add x inet",
        "add x",
        "add",
        "add x inet tcp",
        "default-set inet udp",
        "default-set inet udp unreplied",
        "default-set ipx udp unreplied 1",
        "default-get inet",
        "default-get ipx udp",
        "default-get inet bogus",
        "list",
    ]);
}

#[test]
fn argument_counts_and_command_words() {
    assert_same(&[
        "",
        "bogus",
        "disable",
        "get",
        "get a b",
        "delete",
        "delete a b",
        "list extra",
        "flush x",
        "l",
        "a short inet udp replied 2",
        "g short",
        "de short",
        "de short",
        "default-g inet tcp",
        "default-s inet tcp close 4",
        "default-g inet tcp",
        "f",
    ]);
}

#[test]
fn values_are_read_as_atoi_reads_them() {
    assert_same(&[
        "add v1 inet udp unreplied abc replied -1",
        "add v2 inet tcp ESTABLISHED 10s Close 5 established 7",
        "add v3 inet icmp timeout 99999999999",
        "add v4 inet generic timeout +42",
        "add v5 inet sctp established 4294967296",
        "get v1",
        "get v2",
        "get v3",
        "get v4",
        "get v5",
    ]);
}

#[test]
fn long_names_are_cut_to_31_bytes() {
    let long = "n".repeat(40);
    let cut = "n".repeat(31);
    let exact = "e".repeat(31);
    let owned = [
        format!("add {long} inet tcp established 1"),
        format!("get {long}"),
        format!("get {cut}"),
        format!("add {exact} inet udp replied 2"),
        format!("add {cut}x inet udp replied 2"),
        "list".to_owned(),
        format!("delete {long}"),
        "list".to_owned(),
    ];
    let diffs = differences(&owned);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn a_list_of_300_policies() {
    let protos = [
        "tcp established 100",
        "udp unreplied 5",
        "icmp timeout 7",
        "sctp established 9",
        "generic timeout 3",
        "gre replied 8",
    ];
    let mut cmds: Vec<String> = (0..300)
        .map(|i| format!("add policy-number-{i:03} inet{} {}", if i % 2 == 0 { "" } else { "6" }, protos[i % 6]))
        .collect();
    cmds.push("list".to_owned());
    cmds.push("delete policy-number-150".to_owned());
    cmds.push("list".to_owned());
    let diffs = differences(&cmds);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let d = daemon();
    for c in &cmds[..300] {
        let args: Vec<&str> = c.split_whitespace().collect();
        assert_eq!(d.ferroctl(&[], &args).code, Some(0));
    }
    let list = d.ferroctl(&[], &["list"]);
    assert_eq!(list.stdout.matches(".l3proto").count(), 300, "{list}");
    let json = d.ferroctl(&["--json"], &["list"]);
    let check = "import json,sys; d=json.load(sys.stdin); assert len(d)==300, len(d); \
                 assert d[299]['name']=='policy-number-299' and d[299]['l3proto']==10, d[299]; print('ok')";
    python_ok(&json.stdout, check);
}

/// Runs `script` with `input` on stdin; it must print `ok`.
fn python_ok(input: &str, script: &str) {
    let out = run_input(Command::new("python3").args(["-c", script]), Some(input), LIMIT);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "ok\n"), "{out}\ninput:\n{input}");
}

#[test]
fn json_documents() {
    let d = daemon();
    let empty = d.ferroctl(&["--json"], &["list"]);
    assert_eq!((empty.code, empty.stdout.as_str(), empty.stderr.as_str()), (Some(0), "[]\n", ""), "{empty}");
    for args in [
        &["add", "web", "inet", "tcp", "established", "100", "close", "7"][..],
        &["add", "dns", "inet6", "udp", "unreplied", "5", "replied", "7"],
        &["add", "ping", "inet", "icmp", "timeout", "9"],
        &["add", "assoc", "inet", "sctp", "established", "13"],
        &["add", "we\"ird\\name\t", "inet", "generic", "timeout", "3"],
    ] {
        let out = d.ferroctl(&[], args);
        assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""), "{args:?}: {out}");
    }
    let list = d.ferroctl(&["--json"], &["list"]);
    assert_eq!((list.code, list.stderr.as_str()), (Some(0), ""), "{list}");
    python_ok(
        &list.stdout,
        r#"
import json, sys
d = json.load(sys.stdin)
assert [p['name'] for p in d] == ['web', 'dns', 'ping', 'assoc', 'we"ird\\name\t'], d
web = d[0]
assert (web['l3proto'], web['l4proto'], type(web['use'])) == (2, 6, int), web
assert list(web['policy']) == ['SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK',
    'TIME_WAIT', 'CLOSE', 'SYN_SENT2', 'RETRANS', 'UNACKNOWLEDGED'], web
assert web['policy']['ESTABLISHED'] == 100 and web['policy']['CLOSE'] == 7 and web['policy']['SYN_SENT'] == 120
assert d[1]['l3proto'] == 10 and d[1]['policy'] == {'UNREPLIED': 5, 'REPLIED': 7}, d[1]
assert d[2]['policy'] == {'TIMEOUT': 9}, d[2]
sctp = d[3]['policy']
assert len(sctp) == 9 and sctp['ESTABLISHED'] == 13 and 'HEARTBEAT_ACKED' in sctp, sctp
assert d[4]['l4proto'] == 255 and d[4]['policy'] == {'TIMEOUT': 3}, d[4]
print('ok')
"#,
    );
    let get = d.ferroctl(&["--json"], &["get", "dns"]);
    assert_eq!((get.code, get.stderr.as_str()), (Some(0), ""), "{get}");
    python_ok(
        &get.stdout,
        "import json,sys; p=json.load(sys.stdin); \
         assert p['name']=='dns' and p['l4proto']==17 and p['policy']['REPLIED']==7, p; print('ok')",
    );
    let defaults = d.ferroctl(&["--json"], &["default-get", "inet", "tcp"]);
    assert_eq!((defaults.code, defaults.stderr.as_str()), (Some(0), ""), "{defaults}");
    python_ok(
        &defaults.stdout,
        "import json,sys; p=json.load(sys.stdin); \
         assert p['name'] is None and p['use'] is None and (p['l3proto'], p['l4proto'])==(2, 6), p; \
         assert p['policy']['ESTABLISHED']==432000 and len(p['policy'])==11, p; print('ok')",
    );
    // Errors are nfct's, with nothing on stdout.
    let missing = d.ferroctl(&["--json"], &["get", "nosuch"]);
    assert_eq!(
        (missing.code, missing.stdout.as_str(), missing.stderr.as_str()),
        (Some(1), "", "nfct v1.4.7: netlink error: No such file or directory\n"),
        "{missing}"
    );
    // --json is for the commands that print objects.
    let add = d.ferroctl(&["--json"], &["add", "x", "inet", "tcp", "close", "1"]);
    assert_eq!(add.code, Some(2), "{add}");
    assert!(add.stderr.contains("--json applies to list, get and default-get"), "{add}");
    assert_eq!(d.ferroctl(&[], &["get", "x"]).code, Some(1), "nothing was added");
}

#[test]
fn the_socket_comes_from_the_option_or_the_environment() {
    let d = daemon();
    let mut c = Command::new(&bins().ferroctl);
    c.env("FERROWALL_SOCKET", &d.socket).args(["timeout", "add", "env", "inet", "udp", "replied", "1"]);
    let out = run(&mut c, LIMIT);
    assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""), "{out}");
    let got = d.ferroctl(&[], &["get", "env"]);
    assert!(got.stdout.starts_with(".env = {\n"), "{got}");
    // --socket wins over the environment.
    let mut c = Command::new(&bins().ferroctl);
    c.env("FERROWALL_SOCKET", "/nonexistent/ctl.sock").arg("timeout").arg("--socket").arg(&d.socket);
    let out = run(c.args(["get", "env"]), LIMIT);
    assert_eq!(out, got);
    // Without a daemon: where it looked, and a failure.
    let gone = d.dir.join("gone.sock");
    let mut c = Command::new(&bins().ferroctl);
    let out = run(c.arg("timeout").arg("--socket").arg(&gone).arg("list"), LIMIT);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains(&format!("cannot reach the ferrowall daemon at {}", gone.display())), "{out}");
}

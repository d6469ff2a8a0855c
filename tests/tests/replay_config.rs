//! `ferrowall replay --config`: policies declared in the configuration, attached by the rule
//! file's `ct timeout set`, show their timeouts in the table; dropped packets never create
//! connections; bad configurations and rule files are refused with their position.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use ferrowall_tests::engine;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use proto::build::PacketBuilder;

fn write_pcap(path: &Path, datagrams: &[(u64, Vec<u8>)]) {
    let header = PcapHeader { datalink: DataLink::RAW, ..PcapHeader::default() };
    let mut w = PcapWriter::with_header(Vec::new(), header).expect("pcap header");
    for (ms, d) in datagrams {
        w.write_packet(&PcapPacket::new(Duration::from_millis(*ms), d.len() as u32, d)).expect("pcap packet");
    }
    std::fs::write(path, w.into_writer()).expect("writing the capture");
}

/// What `ferrowall replay ARGS` printed and its exit code (replay of a few packets is quick and
/// cannot block: no timeout needed).
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn replay(bin: &Path, args: &[&str]) -> Run {
    let out = std::process::Command::new(bin).arg("replay").args(args).output().expect("running ferrowall replay");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn replay_applies_declared_policies_and_rules() {
    let bin = engine::build_binary().expect("building ferrowall");
    let dir = std::env::temp_dir().join(format!("ferrowall-replay-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(&dir);

    let c = PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1));
    let s = c.reverse();
    write_pcap(
        &dir.join("t.pcap"),
        &[
            (1000, c.udp(5000, 53, b"query")),                     // new, accepted, policy "dns"
            (1100, s.udp(53, 5000, b"answer")),                    // established reply
            (1200, c.udp(5001, 123, b"ntp")),                      // new, dropped by the policy
            (1300, c.tcp(40000, 22, 1, 0, 0x02, 64240, &[], b"")), // new, accepted, no policy
        ],
    );
    std::fs::write(dir.join("fw.conf"), "timeout = dns inet udp unreplied 3 replied 9\nrules = fw.rules\n").unwrap();
    std::fs::write(
        dir.join("fw.rules"),
        "chain forward {\n  policy drop\n  ct state established accept\n  udp dport 53 ct timeout set \"dns\" accept\n  tcp dport 22 accept\n}\n",
    )
    .unwrap();

    let pcap = dir.join("t.pcap");
    let conf = dir.join("fw.conf");
    let out = replay(&bin, &["--pcap", &pcap.to_string_lossy(), "--per-packet", "--config", &conf.to_string_lossy()]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        &lines[..4],
        ["1 new original accept", "2 established reply accept", "3 new original drop", "4 new original accept"]
    );
    let table = &lines[4..];
    assert_eq!(table.len(), 2, "{table:?}");
    // The policy's unreplied timeout (3 s) for the first reply, counted from the last packet
    // (0.2 s after it): 2 s left; the TCP connection has the default SYN_SENT 120 s.
    assert!(
        table.iter().any(|l| l.starts_with("udp      17 2 src=198.18.0.1 dst=198.19.0.1 sport=5000 dport=53 src=")),
        "{table:?}"
    );
    assert!(table.iter().any(|l| l.starts_with("tcp      6 119 SYN_SENT src=198.18.0.1")), "{table:?}");

    // Without the configuration the same capture runs without rules or policies.
    let out = replay(&bin, &["--pcap", &pcap.to_string_lossy()]);
    assert!(out.stdout.contains("udp      17 29 src=198.18.0.1 dst=198.19.0.1 sport=5000"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 3);
}

#[test]
fn bad_configurations_and_rules_are_refused_with_their_position() {
    let bin = engine::build_binary().expect("building ferrowall");
    let dir = std::env::temp_dir().join(format!("ferrowall-replay-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(&dir);
    write_pcap(
        &dir.join("t.pcap"),
        &[(0, PacketBuilder::v4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1)).udp(1, 2, b""))],
    );
    let pcap = dir.join("t.pcap").to_string_lossy().into_owned();

    std::fs::write(dir.join("a.conf"), "# policies\ntimeout = dns inet udp established 3\n").unwrap();
    let out = replay(&bin, &["--pcap", &pcap, "--config", &dir.join("a.conf").to_string_lossy()]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("a.conf:2: `established` is not a timeout of udp"), "{}", out.stderr);

    std::fs::write(dir.join("b.conf"), "rules = b.rules\n").unwrap();
    std::fs::write(dir.join("b.rules"), "chain forward {\n  udp dport 53 ct timeout set \"nosuch\" accept\n}\n")
        .unwrap();
    let out = replay(&bin, &["--pcap", &pcap, "--config", &dir.join("b.conf").to_string_lossy()]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("b.rules:2:"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
}

/// Removes the test's directory, even when an assertion fails.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

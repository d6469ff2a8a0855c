//! The kernel side: three fresh network namespaces per scenario,
//!
//! ```text
//!   A  va ─────── fwa  FW  fwb ─────── vb  B
//!                   (forwards, conntrack, nft counters)
//! ```
//!
//! Frames are injected from A or B through packet sockets; FW routes 198.18.0.0/16 and
//! 2001:2:0:1::/64 toward A and 198.19.0.0/16 and 2001:2:0:2::/64 toward B via next hops with
//! permanent neighbour entries whose MAC addresses nobody owns, so FW never resolves anything and
//! A and B drop what FW forwards at layer 2. A and B have IPv6 disabled and no addresses: they
//! send nothing of their own, so every packet FW's prerouting hook sees is one we injected.
//!
//! The oracle is an nftables chain in FW at priority -150 (after conntrack at -200) with one named
//! counter per ct state (and direction): after each packet, the counter that moved says how the
//! kernel classified it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::clock;
use crate::cmd::{self, Error, Result};
use crate::netns::PacketSocket;

/// Which end a packet is injected from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::A => "A",
            Side::B => "B",
        }
    }
}

/// Names start with this, then the test process's PID.
const PREFIX: &str = "fwt-";

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
const MAC_FWA: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x02];
const MAC_FWB: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x02];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
/// Next hops' MAC addresses: owned by no interface, so A and B discard forwarded frames.
const MAC_NOBODY_A: &str = "02:00:00:00:0a:99";
const MAC_NOBODY_B: &str = "02:00:00:00:0b:99";

fn mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The states the oracle counts, as `ct state` names; with a direction where one exists.
pub const STATE_COUNTERS: &[(&str, &str, Option<&str>)] = &[
    ("new_original", "new", Some("original")),
    ("new_reply", "new", Some("reply")),
    ("established_original", "established", Some("original")),
    ("established_reply", "established", Some("reply")),
    ("related_original", "related", Some("original")),
    ("related_reply", "related", Some("reply")),
    ("invalid", "invalid", None),
    ("untracked", "untracked", None),
];

fn ruleset() -> String {
    let mut s = String::from("table inet t {\n    counter seen { }\n");
    for (name, _, _) in STATE_COUNTERS {
        s.push_str(&format!("    counter {name} {{ }}\n"));
    }
    s.push_str("    chain pre {\n        type filter hook prerouting priority -150; policy accept;\n");
    s.push_str("        iifname != { \"fwa\", \"fwb\" } return\n        counter name \"seen\"\n");
    for (name, state, dir) in STATE_COUNTERS {
        match dir {
            Some(d) => s.push_str(&format!("        ct state {state} ct direction {d} counter name \"{name}\"\n")),
            None => s.push_str(&format!("        ct state {state} counter name \"{name}\"\n")),
        }
    }
    s.push_str("    }\n}\n");
    s
}

/// Owns namespaces by name and deletes them when dropped, panics included.
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates a namespace and takes ownership of it.
    pub fn add(&mut self, name: &str) -> Result<()> {
        cmd::run("ip", &["netns", "add", name])?;
        self.names.push(name.to_owned());
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in self.names.drain(..).rev() {
            if let Err(e) = cmd::run("ip", &["netns", "del", &n]) {
                eprintln!("kernel-diff: cleanup: {e}");
            }
        }
    }
}

/// Deletes namespaces that earlier runs of this harness left behind: named `fwt-<pid>-…` for a
/// PID that no longer runs. Namespaces of a live process (another run) are left alone.
pub fn remove_stale_namespaces() -> Result<()> {
    let list = cmd::run("ip", &["netns", "list"])?;
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            cmd::run("ip", &["netns", "del", name])?;
        }
    }
    Ok(())
}

/// The nft counters of FW, by name: packets.
pub type Counters = BTreeMap<String, u64>;

/// How the kernel classified one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// No counter moved within the wait: the packet never reached conntrack's verdict (dropped by
    /// the IP layer, or held by defragmentation).
    NotSeen,
    /// The ct state and, for packets with a connection, the direction.
    State { state: &'static str, dir: Option<&'static str> },
    /// Prerouting saw it but no state counter moved (should not happen).
    Unclassified,
}

/// Three namespaces wired for one scenario.
#[derive(Debug)]
pub struct Testbed {
    sock_a: PacketSocket,
    sock_b: PacketSocket,
    fw: String,
    last: Counters,
    // Last field: dropped after the sockets are closed.
    _ns: Namespaces,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Testbed {
    /// Builds a fresh testbed.
    pub fn new() -> Result<Testbed> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{}-{n}", std::process::id());
        let (a, fw, b) = (format!("{base}-a"), format!("{base}-fw"), format!("{base}-b"));
        let mut ns = Namespaces::default();
        for name in [&a, &fw, &b] {
            ns.add(name)?;
        }
        for end in [&a, &b] {
            sysctl(end, &["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])?;
        }
        sysctl(
            &fw,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.default.send_redirects=0",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.conf.default.forwarding=1",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.default.accept_ra=0",
                "net.ipv6.conf.all.accept_ra=0",
            ],
        )?;
        let create = format!(
            "link add fwa address {} type veth peer name va address {} netns {a}\n\
             link add fwb address {} type veth peer name vb address {} netns {b}\n",
            mac(MAC_FWA),
            mac(MAC_A),
            mac(MAC_FWB),
            mac(MAC_B),
        );
        cmd::run_input("ip", &["-n", &fw, "-batch", "-"], &create)?;
        cmd::run("ip", &["-n", &a, "link", "set", "va", "up"])?;
        cmd::run("ip", &["-n", &b, "link", "set", "vb", "up"])?;
        let config = format!(
            "link set fwa up\n\
             link set fwb up\n\
             addr add 198.18.255.1/24 dev fwa\n\
             addr add 198.19.255.1/24 dev fwb\n\
             addr add 2001:2:0:ff01::1/64 dev fwa nodad\n\
             addr add 2001:2:0:ff02::1/64 dev fwb nodad\n\
             neigh replace 198.18.255.2 lladdr {MAC_NOBODY_A} dev fwa nud permanent\n\
             neigh replace 198.19.255.2 lladdr {MAC_NOBODY_B} dev fwb nud permanent\n\
             neigh replace 2001:2:0:ff01::2 lladdr {MAC_NOBODY_A} dev fwa nud permanent\n\
             neigh replace 2001:2:0:ff02::2 lladdr {MAC_NOBODY_B} dev fwb nud permanent\n\
             route add 198.18.0.0/16 via 198.18.255.2 dev fwa\n\
             route add 198.19.0.0/16 via 198.19.255.2 dev fwb\n\
             route add 2001:2:0:1::/64 via 2001:2:0:ff01::2 dev fwa\n\
             route add 2001:2:0:2::/64 via 2001:2:0:ff02::2 dev fwb\n"
        );
        cmd::run_input("ip", &["-n", &fw, "-batch", "-"], &config)?;
        for dev in ["fwa", "fwb"] {
            // veth marks frames from a peer CHECKSUM_UNNECESSARY unless the receiver's rx checksum
            // offload is off; with it off, conntrack verifies L4 checksums as for a real NIC.
            cmd::run("ip", &["netns", "exec", &fw, "ethtool", "-K", dev, "rx", "off", "gro", "off"])?;
        }
        cmd::run_input("ip", &["netns", "exec", &fw, "nft", "-f", "-"], &ruleset())?;
        // Loaded by the ruleset's ct expressions; the default, set so a changed default shows.
        sysctl(&fw, &["net.netfilter.nf_conntrack_checksum=1"])?;
        let sock_a = PacketSocket::open(&a, "va")?;
        let sock_b = PacketSocket::open(&b, "vb")?;
        let mut tb = Testbed { sock_a, sock_b, fw, last: Counters::new(), _ns: ns };
        tb.last = tb.counters()?;
        Ok(tb)
    }

    /// The Ethernet frame that carries `datagram` from `side` into FW.
    pub fn frame(side: Side, datagram: &[u8]) -> Vec<u8> {
        match side {
            Side::A => proto::build::ethernet(MAC_FWA, MAC_A, datagram),
            Side::B => proto::build::ethernet(MAC_FWB, MAC_B, datagram),
        }
    }

    /// Sends `frame` from `side`.
    pub fn send(&self, side: Side, frame: &[u8]) -> Result<()> {
        let s = match side {
            Side::A => &self.sock_a,
            Side::B => &self.sock_b,
        };
        s.send(frame).map_err(Error::from)
    }

    /// Reads FW's counters.
    pub fn counters(&self) -> Result<Counters> {
        let text = cmd::run("ip", &["netns", "exec", &self.fw, "nft", "list", "counters", "table", "inet", "t"])?;
        Ok(parse_counters(&text))
    }

    /// Waits (up to `limit`) for the packet just sent to move a counter and says which.
    pub fn observe(&mut self, limit: Duration) -> Result<Seen> {
        let start = clock::now();
        loop {
            let now = self.counters()?;
            let moved = |k: &str| now.get(k).copied().unwrap_or(0) != self.last.get(k).copied().unwrap_or(0);
            let state = STATE_COUNTERS.iter().find(|(name, _, _)| moved(name));
            if let Some(&(_, state, dir)) = state {
                self.last = now;
                return Ok(Seen::State { state, dir });
            }
            if start.elapsed() > limit {
                let seen = if moved("seen") { Seen::Unclassified } else { Seen::NotSeen };
                self.last = now;
                return Ok(seen);
            }
            clock::sleep(Duration::from_millis(1));
        }
    }

    /// FW's conntrack table, as `conntrack -L` prints it (both families).
    pub fn conntrack_list(&self) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        for family in ["ipv4", "ipv6"] {
            let out = cmd::run("ip", &["netns", "exec", &self.fw, "conntrack", "-L", "-f", family])?;
            lines.extend(out.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned));
        }
        Ok(lines)
    }
}

fn sysctl(ns: &str, settings: &[&str]) -> Result<()> {
    let mut args = vec!["netns", "exec", ns, "sysctl", "-q", "-w"];
    args.extend_from_slice(settings);
    cmd::run("ip", &args).map(|_| ())
}

/// Parses `nft list counters` text: `counter NAME {` then `packets N bytes M`.
pub fn parse_counters(text: &str) -> Counters {
    let mut out = Counters::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["counter", name, "{", ..] => current = Some((*name).to_owned()),
            ["packets", n, ..] => {
                if let (Some(name), Ok(n)) = (current.take(), n.parse()) {
                    out.insert(name, n);
                }
            }
            _ => {}
        }
    }
    out
}

/// Checks that the harness can run: root, and every tool present.
pub fn preflight() -> Result<()> {
    let uid = cmd::run("id", &["-u"])?;
    if uid.trim() != "0" {
        return Err(Error(format!(
            "the kernel-differential test needs root (it creates network namespaces); running as uid {}",
            uid.trim()
        )));
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version"), ("conntrack", "--version"), ("ethtool", "--version")] {
        cmd::run(tool, &[arg]).map_err(|e| Error(format!("required tool `{tool}` is not usable: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse() {
        let text = "table inet t {\n\tcounter seen {\n\t\tpackets 3 bytes 180\n\t}\n\tcounter new_original {\n\t\tpackets 1 bytes 60\n\t}\n}\n";
        let c = parse_counters(text);
        assert_eq!(c.get("seen"), Some(&3));
        assert_eq!(c.get("new_original"), Some(&1));
    }

    #[test]
    fn ruleset_names_every_counter() {
        let r = ruleset();
        for (name, _, _) in STATE_COUNTERS {
            assert!(r.contains(&format!("counter name \"{name}\"")));
        }
    }
}

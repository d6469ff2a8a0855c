//! Kernel versus engine: per-packet verdicts and the final tables.

use crate::testbed::Seen;

/// How one packet compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketVerdict {
    Match,
    /// The kernel never classified it (dropped before conntrack, or a fragment held for
    /// reassembly): not compared.
    Skipped,
    Differs,
}

/// Compares one packet. The direction counts only when the kernel's counters give one.
pub fn packet(kernel: &Seen, engine: Option<&(String, String)>) -> PacketVerdict {
    match (kernel, engine) {
        (Seen::NotSeen, _) => PacketVerdict::Skipped,
        (Seen::Unclassified, _) | (_, None) => PacketVerdict::Differs,
        (Seen::State { state, dir }, Some((es, ed))) => {
            if state != es || dir.is_some_and(|d| d != ed) {
                PacketVerdict::Differs
            } else {
                PacketVerdict::Match
            }
        }
    }
}

/// A table line split into the timeout and everything else (whitespace-normalised).
fn split_timeout(line: &str) -> (String, Option<u64>) {
    let words: Vec<&str> = line.split_whitespace().collect();
    // `proto-name proto-number timeout …`
    match words.get(2).and_then(|w| w.parse::<u64>().ok()) {
        Some(t) => {
            let mut key: Vec<&str> = words[..2].to_vec();
            key.extend_from_slice(&words[3..]);
            (key.join(" "), Some(t))
        }
        None => (words.join(" "), None),
    }
}

/// Compares the final tables. Lines must be equal except for the timeout, and the engine's
/// timeout must lie in `kernel - 1 ..= kernel + slack_secs` (the kernel's table is read after the
/// last packet, the engine's is printed at the last packet's time), which still tells timeout
/// classes (120 from 432000, 30 from 180) apart. Returns the differences as
/// readable lines; empty means the tables match.
pub fn tables(kernel: &[String], engine: &[String], slack_secs: u64) -> Vec<String> {
    let mut k: Vec<(String, Option<u64>, &String)> = kernel
        .iter()
        .map(|l| {
            let (key, t) = split_timeout(l);
            (key, t, l)
        })
        .collect();
    let mut e: Vec<(String, Option<u64>, &String)> = engine
        .iter()
        .map(|l| {
            let (key, t) = split_timeout(l);
            (key, t, l)
        })
        .collect();
    k.sort();
    e.sort();
    let mut used = vec![false; e.len()];
    let mut diffs = Vec::new();
    for (key, kt, kl) in &k {
        let found = e.iter().enumerate().position(|(i, (ek, _, _))| !used[i] && ek == key);
        match found {
            Some(i) => {
                used[i] = true;
                let et = e[i].1;
                let ok = match (kt, et) {
                    // One second of leeway below: jiffies and the capture's microseconds can
                    // round to different sides of a second.
                    (Some(kt), Some(et)) => kt.saturating_sub(1) <= et && et <= kt + slack_secs,
                    (None, None) => true,
                    _ => false,
                };
                if !ok {
                    diffs.push(format!(
                        "  ~ timeout {} vs {} (allowed {}..={}):",
                        kt.map_or("-".into(), |t| t.to_string()),
                        et.map_or("-".into(), |t| t.to_string()),
                        kt.unwrap_or(0).saturating_sub(1),
                        kt.unwrap_or(0) + slack_secs
                    ));
                    diffs.push(format!("      kernel: {kl}"));
                    diffs.push(format!("      engine: {}", e[i].2));
                }
            }
            None => diffs.push(format!("  - kernel only: {kl}")),
        }
    }
    for (i, (_, _, el)) in e.iter().enumerate() {
        if !used[i] {
            diffs.push(format!("  + engine only: {el}"));
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn timeouts_compare_within_slack() {
        let k = s(&["udp      17 27 src=1 dst=2 sport=3 dport=4 [UNREPLIED] src=2 dst=1 sport=4 dport=3 mark=0 use=1"]);
        let e = s(&["udp      17 29 src=1 dst=2 sport=3 dport=4 [UNREPLIED] src=2 dst=1 sport=4 dport=3 mark=0 use=1"]);
        assert!(tables(&k, &e, 3).is_empty());
        assert_eq!(tables(&k, &e, 1).len(), 3);
        let e2 = s(&["udp      17 119 src=1 dst=2 sport=3 dport=4 src=2 dst=1 sport=4 dport=3 [ASSURED] mark=0 use=1"]);
        let d = tables(&k, &e2, 3);
        assert_eq!(d.len(), 2, "{d:?}");
    }

    #[test]
    fn packets_compare_direction_only_when_known() {
        let inv = Seen::State { state: "invalid", dir: None };
        assert_eq!(packet(&inv, Some(&("invalid".into(), "original".into()))), PacketVerdict::Match);
        let est = Seen::State { state: "established", dir: Some("reply") };
        assert_eq!(packet(&est, Some(&("established".into(), "original".into()))), PacketVerdict::Differs);
        assert_eq!(packet(&Seen::NotSeen, None), PacketVerdict::Skipped);
    }
}

//! The kernel as a differential oracle: every scenario runs through Linux's nf_conntrack (in fresh
//! network namespaces) and through `ferrowall replay`; per-packet ct states and the final tables
//! must agree. Needs root and ip, nft, conntrack, ethtool: without them the test fails, by design.
//!
//! `KERNEL_DIFF_ONLY=tcp_sack,udp_` runs the scenarios whose names contain one of the patterns;
//! `KERNEL_DIFF_VERBOSE=1` (with `--nocapture`) prints matching scenarios in full too. Differing
//! scenarios leave `<name>.pcap` and `<name>.txt` in target/<profile>/kernel-diff/, so
//! `ferrowall replay --pcap target/debug/kernel-diff/<name>.pcap --per-packet` reproduces the
//! engine's side.

use std::io::Write as _;
use std::path::PathBuf;

use ferrowall_tests::scenarios::{self, KNOWN_DIFFERENCES};
use ferrowall_tests::{clock, engine, scenario, testbed};

#[test]
fn kernel_differential() {
    if let Err(e) = testbed::preflight() {
        panic!("kernel-diff cannot run: {e}");
    }
    testbed::remove_stale_namespaces().expect("removing namespaces left by earlier runs");
    let bin = engine::build_binary().unwrap_or_else(|e| panic!("kernel-diff: {e}"));
    // Captures of differing scenarios are kept next to the binary: target/<profile>/kernel-diff/.
    let dir: PathBuf = bin.parent().expect("binary has a directory").join("kernel-diff");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the capture directory");

    let only = std::env::var("KERNEL_DIFF_ONLY").ok();
    let all: Vec<_> = scenarios::all()
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| o.split(',').any(|p| s.name.contains(p))))
        .collect();
    let start = clock::now();
    let reports: Vec<_> = all.iter().map(|s| scenario::run(s, &bin, &dir)).collect();
    let wall = start.elapsed();

    let mut matched = 0;
    let mut unexpected = Vec::new();
    let mut known = Vec::new();
    let mut fixed = Vec::new();
    for r in &reports {
        let reason = KNOWN_DIFFERENCES.iter().find(|(n, _)| *n == r.name).map(|(_, why)| *why);
        if r.matches() {
            matched += 1;
            if reason.is_some() {
                fixed.push(r.name.as_str());
            }
            continue;
        }
        match reason {
            Some(why) => known.push((r, why)),
            None => unexpected.push(r),
        }
    }
    for r in &unexpected {
        println!("{}", r.render());
    }
    for (r, why) in &known {
        println!("{}  (known difference: {why})\n", r.render());
    }
    // KERNEL_DIFF_VERBOSE=1 shows matching scenarios in full as well.
    let verbose = std::env::var_os("KERNEL_DIFF_VERBOSE").is_some();
    for r in &reports {
        if verbose && r.matches() {
            println!("{}", r.render());
            for l in &r.kernel_table {
                println!("  kernel table: {l}");
            }
        }
    }
    for r in &reports {
        println!("{:<45} {}", r.name, if r.matches() { "match" } else { "DIFFERS" });
    }
    for name in &fixed {
        println!("kernel-diff: {name} is listed in KNOWN_DIFFERENCES but now matches: remove it");
    }
    let summary = format!(
        "kernel-diff: {} scenarios, {matched} match, {} differ ({} known) in {:.1} s",
        reports.len(),
        reports.len() - matched,
        known.len(),
        wall.as_secs_f64()
    );
    // Straight to stderr, past libtest's capture, so the summary shows even when the test passes.
    let _ = writeln!(std::io::stderr(), "{summary}");
    if !unexpected.is_empty() {
        let names: Vec<&str> = unexpected.iter().map(|r| r.name.as_str()).collect();
        panic!("{summary}; unexpected differences: {}", names.join(", "));
    }
}

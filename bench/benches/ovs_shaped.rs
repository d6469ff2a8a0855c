//! The engine measured the way Open vSwitch measures its userspace connection tracker, so that the
//! two per-packet costs can be set side by side on one machine.
//!
//! Open vSwitch's `ovstest test-conntrack benchmark N_THREADS N_PKTS BATCH [CHANGE_CONN]`
//! (`tests/test-conntrack.c`) starts `N_THREADS` threads on one shared tracker; each builds
//! `BATCH` 42-byte frames (Ethernet, IPv4, UDP with no payload and a zero checksum, UDP source
//! port 1 + thread number, destination port 2, or 2 + i for frame i of the batch with
//! `CHANGE_CONN` = 1) once, then hands the same batch to `conntrack_execute` (with `commit`,
//! zone 0, one fixed time) until it has sent `N_PKTS` packets; the threads start and stop at a
//! barrier and it prints the wall time between the barriers as `conntrack: N ms`. So: one flow
//! per thread (or `BATCH` flows), every packet a lookup of a committed connection, all in cache.
//!
//! This does the same with the same arguments and the same output line: per batch, every frame
//! is parsed ([`proto::packet::parse_frame`]: Ethernet, IPv4 header and its checksum, UDP) and
//! tracked with [`Conntrack::track_batch`], and a new connection is confirmed (OVS's `commit`),
//! as a ferrowall worker does before its rules. The addresses are 198.18.1.1 → 198.18.1.2
//! instead of OVS's 10.1.1.1 → 10.1.1.2 (the cost does not depend on them). The table is sized
//! like the daemon's default `max_connections` (262144).
//!
//!     cargo bench -p ferrowall-bench --bench ovs_shaped -- 1 10000000 32
//!     cargo bench -p ferrowall-bench --bench ovs_shaped -- 2 10000000 32
//!
//! (OVS's figure for the same shape: `ovstest test-conntrack benchmark 1 10000000 32`.)
// Benchmarks measure wall time: the clock ban that keeps the engine sans-IO does not apply here.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Barrier;
use std::time::Instant;

use engine::clock::Timestamp;
use engine::conntrack::{Config, Conntrack, CtState, Stats};
use proto::build::{ethernet, PacketBuilder};
use proto::packet::{parse_frame, Packet};

/// OVS's `NETDEV_MAX_BURST`: the largest batch `ovstest` accepts.
const MAX_BATCH: usize = 32;
/// The daemon's default table size.
const TABLE: usize = 262_144;
const NOW: Timestamp = Timestamp::from_secs(1_000);

/// Frame `i` of thread `tid`'s batch: 42 bytes, UDP from port 1 + `tid` to port 2 (+ `i` when
/// `change`), UDP checksum 0 ("none"), as in OVS's `prepare_packets`.
fn frame(tid: u16, i: u16, change: bool) -> Vec<u8> {
    let dport = if change { 2 + i } else { 2 };
    let d = PacketBuilder::v4(Ipv4Addr::new(198, 18, 1, 1), Ipv4Addr::new(198, 18, 1, 2)).udp(1 + tid, dport, &[]);
    let mut f = ethernet([0x50, 0x54, 0, 0, 0, 0x0a], [0x50, 0x54, 0, 0, 0, 0x09], &d);
    f[14 + 20 + 6..14 + 20 + 8].fill(0);
    assert_eq!(f.len(), 42, "the benchmark's frames are 42 bytes");
    f
}

/// One thread's part: `n_pkts` packets, `batch` per call, between the two barrier waits.
fn thread_main(ct: &Conntrack, barrier: &Barrier, tid: u16, n_pkts: u64, batch: usize, change: bool) -> Stats {
    let frames: Vec<Vec<u8>> = (0..batch as u16).map(|i| frame(tid, i, change)).collect();
    let mut parsed: Vec<(&[u8], Packet)> = Vec::with_capacity(batch);
    let mut st = Stats::default();
    barrier.wait();
    let mut sent = 0;
    while sent < n_pkts {
        parsed.clear();
        for f in &frames {
            let p = parse_frame(f).expect("the benchmark's frame parses");
            parsed.push((f.as_slice(), p));
        }
        ct.track_batch(NOW, &parsed, &mut st, |_, mut t, st| {
            if t.state == CtState::New {
                ct.confirm(&mut t, st).expect("the table has room");
            }
            black_box(t.state);
        });
        sent += batch as u64;
    }
    barrier.wait();
    st
}

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; anything starting with `-` is not ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let num = |i: usize, default: u64| args.get(i).map_or(Some(default), |a| a.parse::<u64>().ok());
    let (Some(n_threads), Some(n_pkts), Some(batch), Some(change)) =
        (num(0, 1), num(1, 10_000_000), num(2, 32), num(3, 0))
    else {
        eprintln!("usage: ovs_shaped [N_THREADS [N_PKTS [BATCH [CHANGE_CONN]]]] (defaults 1 10000000 32 0)");
        return ExitCode::from(2);
    };
    if n_threads == 0 || n_threads > 64 {
        eprintln!("n_threads must be between 1 and 64");
        return ExitCode::from(2);
    }
    if batch == 0 || batch as usize > MAX_BATCH {
        eprintln!("batch_size must be between 1 and NETDEV_MAX_BURST({MAX_BATCH})");
        return ExitCode::from(2);
    }
    let (batch, change) = (batch as usize, change != 0);
    let ct = Conntrack::new(TABLE, Config::default());
    let barrier = Barrier::new(n_threads as usize + 1);
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n_threads as u16)
            .map(|tid| {
                let (ct, barrier) = (&ct, &barrier);
                s.spawn(move || thread_main(ct, barrier, tid, n_pkts, batch, change))
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        let elapsed = start.elapsed();
        for h in handles {
            black_box(h.join().expect("a benchmark thread panicked"));
        }
        elapsed
    });
    // Each thread sends whole batches: at least n_pkts, as OVS's loop does.
    let per_thread = n_pkts.div_ceil(batch as u64) * batch as u64;
    let total = per_thread * n_threads;
    let secs = elapsed.as_secs_f64();
    println!("conntrack:  {:5} ms", elapsed.as_millis());
    println!(
        "ferrowall: {n_threads} thread(s) x {per_thread} packets, batches of {batch}, {} flow(s): {:.1} ns/packet per thread, {:.2} Mpackets/s in all; {} connections in the table",
        if change { batch as u64 * n_threads } else { n_threads },
        secs * 1e9 / per_thread as f64,
        total as f64 / secs / 1e6,
        ct.len(),
    );
    ExitCode::SUCCESS
}

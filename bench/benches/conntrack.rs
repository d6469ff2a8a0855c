//! Engine benchmarks on one core: parse + track (+ confirm for new connections), as a worker does.
//!
//! * `established/N`: ACK segments of established TCP connections picked at random among N, per
//!   packet, batched, and batched with checksums verified on receipt (as a NIC or veth delivers).
//! * `setup_teardown`: a TCP SYN that creates and confirms a connection, then the RST that ends it.
//! * `mixed`: 90% established packets over 100k connections, 10% new UDP flows (confirmed).
//!
//! Also prints the memory per tracked connection at 1M connections (resident set growth).
//!
//! Run: `cargo bench -p ferrowall-bench --bench conntrack`
//!
//! Frames are first copied into a ring of `BATCH` buffers, as a NIC or AF_PACKET ring would hold
//! them, untimed; the timed part is what a worker does with a received batch: parse and track.
// Benchmarks measure wall time: the clock ban that keeps the engine sans-IO does not apply here.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::clock::Timestamp;
use engine::conntrack::{Config, Conntrack, CtState, Stats, Tuple};
use proto::build::{opt, PacketBuilder};
use proto::packet::Family;
use proto::packet::{parse_ip, tcp_flags::*};
use rand::{rngs::SmallRng, Rng, SeedableRng};

const BATCH: usize = 32;
const NOW: Timestamp = Timestamp::from_secs(1_000);

fn hosts(i: u32) -> PacketBuilder {
    PacketBuilder::v4(endpoint(i).0, Ipv4Addr::new(198, 19, 0, 1))
}

fn port(i: u32) -> u16 {
    1024 + (i & 0x3fff) as u16
}

/// Client endpoint `i`: an address in 198.18.0.0/15 and a port (server 198.19.0.1:80).
fn endpoint(i: u32) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from(0xc612_0000 | (i >> 14)), port(i))
}

/// Creates `n` established TCP connections; returns one in-window ACK datagram per connection.
fn establish(ct: &Conntrack, n: u32) -> Vec<Vec<u8>> {
    establish_from(ct, &(0..n).map(endpoint).collect::<Vec<_>>())
}

/// Creates one established TCP connection from each client endpoint to 198.19.0.1:80; returns
/// one in-window ACK datagram per connection.
fn establish_from(ct: &Conntrack, clients: &[(Ipv4Addr, u16)]) -> Vec<Vec<u8>> {
    let mut st = Stats::default();
    let mut acks = Vec::with_capacity(clients.len());
    let mut feed = |d: &[u8]| {
        let p = parse_ip(d, 0).expect("bench packet parses");
        let mut t = ct.track(NOW, d, &p, &mut st);
        ct.confirm(&mut t, &mut st).expect("room");
        t.state
    };
    for (i, &(addr, sp)) in clients.iter().enumerate() {
        let b = PacketBuilder::v4(addr, Ipv4Addr::new(198, 19, 0, 1));
        let dp = 80;
        let opts = [opt::mss(1460), opt::wscale(7), opt::sack_perm()].concat();
        feed(&b.tcp(sp, dp, 1000, 0, SYN, 64240, &opts, b""));
        feed(&b.reverse().tcp(dp, sp, 5000, 1001, SYN | ACK, 65160, &opts, b""));
        let s = feed(&b.tcp(sp, dp, 1001, 5001, ACK, 502, b"", b""));
        assert_eq!(s, CtState::Established, "connection {i} did not establish");
        acks.push(b.tcp(sp, dp, 1001, 5001, ACK, 502, b"", b""));
    }
    acks
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// A receive ring: `BATCH` frame buffers.
struct Ring {
    bufs: Vec<[u8; 128]>,
    lens: Vec<usize>,
}

impl Ring {
    fn new() -> Ring {
        Ring { bufs: vec![[0; 128]; BATCH], lens: vec![0; BATCH] }
    }

    /// "Receives" a batch: copies the chosen datagrams into the ring.
    fn fill(&mut self, pick: impl Iterator<Item = usize>, pkts: &[Vec<u8>]) {
        for (k, i) in pick.take(BATCH).enumerate() {
            let d = &pkts[i];
            self.bufs[k][..d.len()].copy_from_slice(d);
            self.lens[k] = d.len();
        }
    }
}

/// How a benchmark hands packets to the table.
#[derive(Clone, Copy)]
struct Mode {
    /// `track_batch` rather than `track` per packet.
    batched: bool,
    /// The frames arrive with their TCP checksum already verified (`TP_STATUS_CSUM_VALID`, as a
    /// NIC with receive checksum offload or a veth peer delivers them), so the tracker does not
    /// verify it again, as the kernel does not for `CHECKSUM_UNNECESSARY`.
    csum_verified: bool,
}

/// Times `iters` packets over random connections, per packet (`track`) or batched (`track_batch`).
fn run_established(ct: &Conntrack, acks: &[Vec<u8>], rng: &mut SmallRng, iters: u64, mode: Mode) -> Duration {
    let mut ring = Ring::new();
    let mut st = Stats::default();
    let mut total = Duration::ZERO;
    for _ in 0..iters.div_ceil(BATCH as u64) {
        ring.fill((0..BATCH).map(|_| rng.gen_range(0..acks.len())), acks);
        let t0 = Instant::now();
        let parsed: Vec<(&[u8], proto::packet::Packet)> = (0..BATCH)
            .map(|k| {
                let d = &ring.bufs[k][..ring.lens[k]];
                let mut p = parse_ip(d, 0).expect("parses");
                p.l4_checksum_verified = mode.csum_verified;
                (d, p)
            })
            .collect();
        if mode.batched {
            ct.track_batch(NOW, &parsed, &mut st, |_, t, _| {
                black_box(t.state);
            });
        } else {
            for (d, p) in &parsed {
                black_box(ct.track(NOW, d, p, &mut st).state);
            }
        }
        total += t0.elapsed();
    }
    total
}

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("established");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    // FERROWALL_BENCH_SIZES=1000,100000 picks the table sizes (for profiling one of them).
    let sizes: Vec<u32> = std::env::var("FERROWALL_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 100_000, 1_000_000]);
    for n in sizes {
        let before = rss_bytes();
        // Sized like nf_conntrack_max = n: the index and slabs are reserved for n connections.
        let ct = Conntrack::new(n as usize, Config::default());
        let acks = establish(&ct, n);
        let grown = rss_bytes().saturating_sub(before);
        let pkt_bytes = acks.iter().map(|a| a.capacity() + 24).sum::<usize>() as u64;
        println!(
            "memory: {n} connections: {:.0} bytes/connection (resident growth {} MiB less {} MiB of test packets; index {} MiB)",
            grown.saturating_sub(pkt_bytes) as f64 / f64::from(n),
            grown >> 20,
            pkt_bytes >> 20,
            ct.index_bytes() >> 20,
        );
        let mut rng = SmallRng::seed_from_u64(7);
        // FERROWALL_BENCH_PACKETS=N: a fixed number of batched packets, without criterion, so
        // that `perf stat -e cycles:u,instructions:u` counts a known amount of work (cycles of
        // this process only: usable as a comparison while other jobs load the machine).
        // FERROWALL_BENCH_CSUM_VERIFIED=1: as `batch_csum_verified` below.
        if let Some(count) = std::env::var("FERROWALL_BENCH_PACKETS").ok().and_then(|v| v.parse::<u64>().ok()) {
            let csum_verified = std::env::var_os("FERROWALL_BENCH_CSUM_VERIFIED").is_some();
            let took = run_established(&ct, &acks, &mut rng, count, Mode { batched: true, csum_verified });
            let name = if csum_verified { "batch_csum_verified" } else { "batch" };
            println!("established/{n}/{name}: {count} packets, {:.1} ns/packet", took.as_nanos() as f64 / count as f64);
            // Nothing else: the other groups' set-up would show in the profile.
            std::process::exit(0);
        }
        g.throughput(Throughput::Elements(1));
        for (name, batched, csum_verified) in
            [("per_packet", false, false), ("batch", true, false), ("batch_csum_verified", true, true)]
        {
            g.bench_function(format!("{n}/{name}"), |b| {
                b.iter_custom(|iters| run_established(&ct, &acks, &mut rng, iters, Mode { batched, csum_verified }))
            });
        }
    }
    g.finish();
}

fn setup_teardown(c: &mut Criterion) {
    let mut g = c.benchmark_group("setup_teardown");
    g.sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    let ct = Conntrack::new(1 << 20, Config::default());
    let mut st = Stats::default();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..65_536u32)
        .map(|i| {
            let b = hosts(i);
            (b.tcp(port(i), 443, 1, 0, SYN, 64240, b"", b""), b.tcp(port(i), 443, 2, 0, RST, 0, b"", b""))
        })
        .collect();
    let mut k = 0;
    g.throughput(Throughput::Elements(1));
    g.bench_function("tcp_syn_rst", |b| {
        b.iter(|| {
            let (syn, rst) = &pairs[k % pairs.len()];
            k += 1;
            let p = parse_ip(syn, 0).expect("parses");
            let mut t = ct.track(NOW, syn, &p, &mut st);
            let _ = ct.confirm(&mut t, &mut st);
            let p = parse_ip(rst, 0).expect("parses");
            black_box(ct.track(NOW, rst, &p, &mut st).state);
        })
    });
    g.finish();
}

fn mixed(c: &mut Criterion) {
    let mut g = c.benchmark_group("mixed");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let ct = Conntrack::new(1 << 20, Config::default());
    let acks = establish(&ct, 100_000);
    // New UDP flows, each a fresh 5-tuple; confirmed as a worker would after its rules accept.
    let news: Vec<Vec<u8>> = (0..1u32 << 20)
        .map(|f| {
            PacketBuilder::v4(Ipv4Addr::from(0xc613_0000 | (f >> 14)), Ipv4Addr::new(198, 18, 0, 9)).udp(
                port(f),
                53,
                b"q",
            )
        })
        .collect();
    let mut rng = SmallRng::seed_from_u64(9);
    let mut next_new = 0usize;
    g.throughput(Throughput::Elements(1));
    g.bench_function("90est_10new", |b| {
        b.iter_custom(|iters| {
            let mut ring = Ring::new();
            let mut st = Stats::default();
            let mut total = Duration::ZERO;
            for _ in 0..iters.div_ceil(BATCH as u64) {
                for k in 0..BATCH {
                    let d = if rng.gen_ratio(1, 10) {
                        next_new = (next_new + 1) % news.len();
                        &news[next_new]
                    } else {
                        &acks[rng.gen_range(0..acks.len())]
                    };
                    ring.bufs[k][..d.len()].copy_from_slice(d);
                    ring.lens[k] = d.len();
                }
                let t0 = Instant::now();
                let parsed: Vec<(&[u8], proto::packet::Packet)> = (0..BATCH)
                    .map(|k| {
                        let d = &ring.bufs[k][..ring.lens[k]];
                        (d, parse_ip(d, 0).expect("parses"))
                    })
                    .collect();
                ct.track_batch(NOW, &parsed, &mut st, |_, mut t, st| {
                    let _ = ct.confirm(&mut t, st);
                    black_box(t.state);
                });
                total += t0.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// Connections in a table sized for this many (as `nf_conntrack_max`).
const FLOOD_MAX: usize = 100_000;
/// Connections chosen to collide.
const FLOOD_N: usize = 400;

/// `n` client endpoints whose connections all land in one shard and one bucket of a table with
/// the fixed (publicly known) hash: what an attacker could choose if the hash had no secret.
fn colliding(n: usize) -> Vec<(Ipv4Addr, u16)> {
    let unkeyed = Conntrack::with_fixed_hash(FLOOD_MAX, Config::default());
    let server = {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[198, 19, 0, 1]);
        a
    };
    let place = |(addr, sport): (Ipv4Addr, u16)| {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&addr.octets());
        let t = Tuple { src, dst: server, sport, dport: 80, family: Family::V4, proto: 6 };
        unkeyed.placement(&t)
    };
    let target = place(endpoint(0));
    let mut out = Vec::with_capacity(n);
    let mut i = 0u32;
    while out.len() < n {
        let e = endpoint(i);
        if place(e) == target {
            out.push(e);
        }
        i = i.checked_add(1).expect("enough colliding endpoints in 198.18.0.0/15");
    }
    out
}

/// Established packets over connections whose tuples collide under an unkeyed hash, against
/// random ones, in the keyed table (what ferrowall runs) and in a fixed-hash one (what an
/// attacker would exploit).
fn hash_flood(c: &mut Criterion) {
    let mut g = c.benchmark_group("hash_flood");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    let chosen = colliding(FLOOD_N);
    let random: Vec<_> = (0..FLOOD_N as u32).map(|i| endpoint(i * 7919)).collect();
    for (table, keyed) in [("keyed", true), ("unkeyed", false)] {
        for (set, clients) in [("random", &random), ("colliding", &chosen)] {
            let ct = if keyed {
                Conntrack::new(FLOOD_MAX, Config::default())
            } else {
                Conntrack::with_fixed_hash(FLOOD_MAX, Config::default())
            };
            let acks = establish_from(&ct, clients);
            let mut rng = SmallRng::seed_from_u64(11);
            g.throughput(Throughput::Elements(1));
            g.bench_function(format!("{table}/{set}"), |b| {
                b.iter_custom(|iters| {
                    run_established(&ct, &acks, &mut rng, iters, Mode { batched: false, csum_verified: false })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, established, setup_teardown, mixed, hash_flood);
criterion_main!(benches);

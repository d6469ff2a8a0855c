//! Engine benchmarks on one core: parse + track (+ confirm for new connections), as a worker does.
//!
//! * `established/N`: ACK segments of established TCP connections picked at random among N.
//! * `setup_teardown`: a TCP SYN that creates and confirms a connection, then the RST that ends it.
//! * `mixed`: 90% established packets over 100k connections, 10% new UDP flows (confirmed).
//!
//! Also prints the memory per tracked connection at 1M connections (resident set growth).
//!
//! Run: `cargo bench -p ferrowall-bench --bench conntrack`

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::clock::Timestamp;
use engine::conntrack::{Config, Conntrack, CtState, Stats};
use proto::build::{opt, PacketBuilder};
use proto::packet::{parse_ip, tcp_flags::*};
use rand::{rngs::SmallRng, Rng, SeedableRng};

const BATCH: usize = 32;
const NOW: Timestamp = Timestamp::from_secs(1_000);

fn hosts(i: u32) -> PacketBuilder {
    // Spread over 198.18.0.0/15: client i.0.x, server fixed; ports carry the rest.
    let c = Ipv4Addr::from(0xc612_0000 | (i >> 14));
    PacketBuilder::v4(c, Ipv4Addr::new(198, 19, 0, 1))
}

fn port(i: u32) -> u16 {
    1024 + (i & 0x3fff) as u16
}

/// Creates `n` established TCP connections; returns one in-window ACK datagram per connection.
fn establish(ct: &Conntrack, n: u32) -> Vec<Vec<u8>> {
    let mut st = Stats::default();
    let mut acks = Vec::with_capacity(n as usize);
    let mut feed = |d: &[u8]| {
        let p = parse_ip(d, 0).expect("bench packet parses");
        let mut t = ct.track(NOW, d, &p, &mut st);
        ct.confirm(&mut t, &mut st).expect("room");
        t.state
    };
    for i in 0..n {
        let b = hosts(i);
        let (sp, dp) = (port(i), 80);
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

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("established");
    g.sample_size(10)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    for n in [1_000u32, 100_000, 1_000_000] {
        let before = rss_bytes();
        let ct = Conntrack::new(2 * n as usize, Config::default());
        let acks = establish(&ct, n);
        let grown = rss_bytes().saturating_sub(before);
        let pkt_bytes: usize = acks.iter().map(Vec::len).sum();
        println!(
            "memory: {n} connections: table {:.0} bytes/connection (resident growth {} MiB, less {} MiB of test packets)",
            grown.saturating_sub(pkt_bytes as u64 + 24 * u64::from(n)) as f64 / f64::from(n),
            grown >> 20,
            (pkt_bytes + 24 * n as usize) >> 20
        );
        let mut rng = SmallRng::seed_from_u64(7);
        let mut st = Stats::default();
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(format!("{n}"), |b| {
            b.iter_batched(
                || (0..BATCH).map(|_| rng.gen_range(0..acks.len())).collect::<Vec<_>>(),
                |picks| {
                    for i in picks {
                        let d = &acks[i];
                        let p = parse_ip(d, 0).expect("parses");
                        let t = ct.track(NOW, d, &p, &mut st);
                        black_box(t.state);
                    }
                },
                BatchSize::SmallInput,
            )
        });
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
    g.sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    let ct = Conntrack::new(1 << 22, Config::default());
    let acks = establish(&ct, 100_000);
    let mut rng = SmallRng::seed_from_u64(9);
    let mut st = Stats::default();
    let mut flow = 0u32;
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("90est_10new", |b| {
        b.iter_batched(
            || {
                (0..BATCH)
                    .map(|_| {
                        if rng.gen_ratio(1, 10) {
                            flow = flow.wrapping_add(1);
                            let h = PacketBuilder::v4(
                                Ipv4Addr::from(0xc613_0000 | (flow >> 14)),
                                Ipv4Addr::new(198, 18, 0, 9),
                            );
                            h.udp(port(flow), 53, b"q")
                        } else {
                            acks[rng.gen_range(0..acks.len())].clone()
                        }
                    })
                    .collect::<Vec<_>>()
            },
            |batch| {
                for d in &batch {
                    let p = parse_ip(d, 0).expect("parses");
                    let mut t = ct.track(NOW, d, &p, &mut st);
                    let _ = ct.confirm(&mut t, &mut st);
                    black_box(t.state);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, established, setup_teardown, mixed);
criterion_main!(benches);

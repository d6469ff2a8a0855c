//! TCP connection rate, for the testbed comparison (`bench/compare/run`).
//!
//!     connrate serve ADDR:PORT [THREADS] [MAX_SECONDS]
//!     connrate connect ADDR:PORT INFLIGHT SECONDS
//!
//! `serve` accepts connections and closes each at once (the server closes first, so its side
//! holds the TIME_WAIT and the client's port is free again as soon as it has closed too), with
//! `THREADS` accepting threads (default 4); it exits by itself after `MAX_SECONDS` (default 600).
//! `connect` keeps `INFLIGHT` connections in flight for `SECONDS`: each thread connects, waits for
//! the server's FIN and closes, again and again; it prints one line of JSON:
//! `{"connections": N, "failures": F, "seconds": S, "rate": R}` (R = N / S, connections whose
//! whole open and close completed). Connecting and reading time out after 1 s, so the run ends
//! within `SECONDS` + 1 s.
// A load generator measures wall time and paces itself: the clock ban of the engine does not apply.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(1);

fn serve(addr: SocketAddr, threads: usize, max: Duration) -> ExitCode {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("connrate: binding {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for _ in 0..threads {
        let l = listener.try_clone().expect("cloning the listening socket");
        std::thread::spawn(move || loop {
            // Accept and close at once; an error (a connection reset before accept) is skipped.
            let _ = l.accept();
        });
    }
    std::thread::sleep(max);
    ExitCode::SUCCESS
}

/// One connection opened and closed: connect, wait for the server's FIN, close.
fn once(addr: &SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = [0u8; 16];
    while s.read(&mut buf)? > 0 {}
    Ok(())
}

fn connect(addr: SocketAddr, inflight: usize, secs: f64) -> ExitCode {
    let (done, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    std::thread::scope(|s| {
        for _ in 0..inflight {
            s.spawn(|| {
                while Instant::now() < until {
                    match once(&addr) {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "{{\"connections\": {n}, \"failures\": {}, \"seconds\": {elapsed:.3}, \"rate\": {:.1}}}",
        failed.load(Ordering::Relaxed),
        n as f64 / elapsed
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.get(1).and_then(|a| a.parse::<SocketAddr>().ok());
    let num = |i: usize, default: f64| args.get(i).map_or(Some(default), |a| a.parse::<f64>().ok());
    match (args.first().map(String::as_str), addr) {
        (Some("serve"), Some(addr)) => match (num(2, 4.0), num(3, 600.0)) {
            (Some(t), Some(max)) if (1.0..=64.0).contains(&t) && max > 0.0 => {
                serve(addr, t as usize, Duration::from_secs_f64(max))
            }
            _ => usage(),
        },
        (Some("connect"), Some(addr)) => match (num(2, 1.0), num(3, 5.0)) {
            (Some(n), Some(secs)) if (1.0..=256.0).contains(&n) && secs > 0.0 && secs <= 3600.0 => {
                connect(addr, n as usize, secs)
            }
            _ => usage(),
        },
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: connrate serve ADDR:PORT [THREADS] [MAX_SECONDS] | connrate connect ADDR:PORT INFLIGHT SECONDS");
    ExitCode::from(2)
}

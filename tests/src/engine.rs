//! The engine side: the scenario's frames written as a pcap and run through the real binary,
//! `ferrowall replay --pcap FILE --per-packet`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

use crate::cmd::{self, Error, Result};

/// One frame and when it was sent, relative to the scenario's start.
#[derive(Debug, Clone)]
pub struct Captured {
    pub at: Duration,
    pub frame: Vec<u8>,
}

/// Writes `frames` as an Ethernet pcap at `path`.
pub fn write_pcap(path: &Path, frames: &[Captured]) -> Result<()> {
    let ctx = |e: pcap_file::PcapError| Error(format!("writing {}: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(|e| Error(format!("creating {}: {e}", path.display())))?;
    let header = PcapHeader { datalink: DataLink::ETHERNET, ..PcapHeader::default() };
    let mut w = PcapWriter::with_header(std::io::BufWriter::new(file), header).map_err(ctx)?;
    for c in frames {
        w.write_packet(&PcapPacket::new(c.at, c.frame.len() as u32, &c.frame)).map_err(ctx)?;
    }
    let mut inner = w.into_writer();
    std::io::Write::flush(&mut inner).map_err(|e| Error(format!("writing {}: {e}", path.display())))?;
    Ok(())
}

/// What the engine said about a capture.
#[derive(Debug, Clone, Default)]
pub struct EngineResult {
    /// Per packet (in order): state and direction.
    pub per_packet: Vec<(String, String)>,
    /// `conntrack -L`-style lines.
    pub table: Vec<String>,
    /// What the binary printed on stderr (unparsed frames and such).
    pub stderr: String,
}

/// Runs the replay binary on `pcap`.
pub fn replay(binary: &Path, pcap: &Path) -> Result<EngineResult> {
    let bin = binary.to_string_lossy();
    let file = pcap.to_string_lossy();
    let out = cmd::run_with(&bin, &["replay", "--pcap", &file, "--per-packet"], None, Duration::from_secs(30))?;
    Ok(parse_replay(&out.stdout, out.stderr))
}

/// Splits the binary's output: per-packet lines start with the packet's index
/// (`<index> <state> <direction>`, or whatever else the engine says about a packet, such as a held
/// fragment); table lines start with a protocol name.
pub fn parse_replay(stdout: &str, stderr: String) -> EngineResult {
    let mut r = EngineResult { stderr, ..EngineResult::default() };
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.split_first() {
            Some((idx, rest)) if idx.parse::<usize>().is_ok() => {
                let i: usize = idx.parse().unwrap_or(0);
                let state = rest.first().copied().unwrap_or("").to_owned();
                let dir = rest.get(1..).unwrap_or(&[]).join(" ");
                // Indexes count from 1; a line out of place still lands on its packet.
                if i >= 1 {
                    if r.per_packet.len() < i {
                        r.per_packet.resize(i, (String::from("(no line)"), String::new()));
                    }
                    r.per_packet[i - 1] = (state, dir);
                }
            }
            _ => r.table.push(line.to_owned()),
        }
    }
    r
}

/// Finds the workspace's `target/<profile>` directory from the running test executable
/// (`target/<profile>/deps/<test>-<hash>`) and brings `ferrowall` there up to date with cargo,
/// so the replay runs the engine as it is in the tree now.
pub fn build_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error(format!("locating the test executable: {e}")))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| Error(format!("unexpected test executable path {}", exe.display())))?;
    let target_dir =
        profile_dir.parent().ok_or_else(|| Error(format!("unexpected test executable path {}", exe.display())))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(p) => p.to_owned(),
        None => return Err(Error(format!("unexpected test executable path {}", exe.display()))),
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest_s = manifest.to_string_lossy();
    let target_s = target_dir.to_string_lossy();
    cmd::run_with(
        &cargo,
        &[
            "build",
            "--quiet",
            "--manifest-path",
            &manifest_s,
            "--target-dir",
            &target_s,
            "--profile",
            &profile,
            "-p",
            "ferrowall-engine",
            "--bin",
            "ferrowall",
        ],
        None,
        Duration::from_secs(900),
    )
    .map_err(|e| Error(format!("building the engine binary: {e}")))?;
    let bin = profile_dir.join("ferrowall");
    if !bin.is_file() {
        return Err(Error(format!("{} does not exist after building it", bin.display())));
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_output_splits() {
        let out = "1 held fragment\n2 established reply\nudp      17 29 src=198.18.0.1 dst=198.19.0.1 sport=1 dport=2 src=198.19.0.1 dst=198.18.0.1 sport=2 dport=1 mark=0 use=1\n";
        let r = parse_replay(out, String::new());
        assert_eq!(r.per_packet.len(), 2);
        assert_eq!(r.per_packet[0], ("held".to_owned(), "fragment".to_owned()));
        assert_eq!(r.per_packet[1], ("established".to_owned(), "reply".to_owned()));
        assert_eq!(r.table.len(), 1);
    }
}

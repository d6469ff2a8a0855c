//! Running the command-line tools (`ip`, `nft`, `conntrack`, `ethtool`, `sysctl`, `cargo`), each
//! with a time limit; a child that overruns it is killed by its own PID.

use std::fmt;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::clock;

/// A harness failure: what was being done and what went wrong.
#[derive(Debug, Clone)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// A child that ran to its end: its exit status and what it printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Starts `cmd` with `stdin` (if any, else nothing) as its input and its stdout and stderr
/// captured, and waits at most `limit` for it, looking every `poll`: `None` if it overran, in which
/// case it is killed by its own PID and reaped. Errors name the command as `shown`.
pub fn spawn_wait(
    cmd: &mut Command,
    shown: &str,
    stdin: Option<&str>,
    limit: Duration,
    poll: Duration,
) -> Result<Option<Finished>> {
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error(format!("{shown}: cannot start: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(|e| Error(format!("{shown}: writing stdin: {e}")))?;
    }
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let start = clock::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| Error(format!("{shown}: wait: {e}")))? {
            break st;
        }
        if start.elapsed() > limit {
            // Our own child, killed by its PID (Child::kill), then reaped.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        clock::sleep(poll);
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Some(Finished { status, stdout, stderr }))
}

/// Runs `program args…` with `stdin` (if any) and waits at most `limit`; a non-zero exit, a
/// failure to start or an overrun is an error naming the command.
pub fn run_with(program: &str, args: &[&str], stdin: Option<&str>, limit: Duration) -> Result<Output> {
    let shown = format!("`{program} {}`", args.join(" "));
    let poll = Duration::from_micros(500);
    match spawn_wait(Command::new(program).args(args), &shown, stdin, limit, poll)? {
        None => Err(Error(format!("{shown}: killed after {limit:?}"))),
        Some(f) if !f.status.success() => Err(Error(format!("{shown}: {}: {}", f.status, f.stderr.trim()))),
        Some(f) => Ok(Output { stdout: f.stdout, stderr: f.stderr }),
    }
}

/// Runs a tool with a 10-second limit and returns its standard output.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    run_with(program, args, None, Duration::from_secs(10)).map(|o| o.stdout)
}

/// Runs a tool with `stdin` as its input and a 10-second limit.
pub fn run_input(program: &str, args: &[&str], stdin: &str) -> Result<String> {
    run_with(program, args, Some(stdin), Duration::from_secs(10)).map(|o| o.stdout)
}

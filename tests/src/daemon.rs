//! The real `ferrowall run` daemon and its clients for the end-to-end tests: building the
//! binaries, starting a daemon on a socket in a temp directory of its own (with a configuration
//! and files such as a rule file), running `ferroctl` and nfct (through `ferroctl exec` and the
//! preload shim) against it, and stopping it by its PID and removing the directory on drop, also
//! when a test fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{clock, cmd};

/// The time limit of one client command.
pub const LIMIT: Duration = Duration::from_secs(30);

/// The binaries under test.
pub struct Bins {
    pub ferrowall: PathBuf,
    pub ferroctl: PathBuf,
}

/// Builds `ferrowall`, `ferroctl` and the shim into the running test's `target/<profile>` (once).
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let exe = std::env::current_exe().expect("locating the test executable");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
        let target_dir = profile_dir.parent().expect("target/");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_owned(),
            Some(p) => p.to_owned(),
            None => panic!("unexpected test executable path {}", exe.display()),
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut c = Command::new(cargo);
        c.arg("build").arg("--quiet").arg("--manifest-path").arg(&manifest).arg("--target-dir").arg(target_dir);
        c.args(["--profile", &profile, "-p", "ferrowall-engine", "-p", "ferrowall-ctl", "-p", "ferrowall-shim"]);
        let out = run(&mut c, Duration::from_secs(900));
        assert_eq!(out.code, Some(0), "building the binaries: {}", out.stderr);
        let b = Bins { ferrowall: profile_dir.join("ferrowall"), ferroctl: profile_dir.join("ferroctl") };
        for p in [&b.ferrowall, &b.ferroctl, &profile_dir.join("libferrowall_shim.so")] {
            assert!(p.is_file(), "{} does not exist after building it", p.display());
        }
        b
    })
}

/// What a finished command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub stdout: String,
    pub stderr: String,
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `cmd` with a time limit and `stdin` (if any); whatever its exit, what it printed. An
/// overrun kills the child (by its PID) and fails the test, as does a failure to start it.
pub fn run_input(cmd: &mut Command, stdin: Option<&str>, limit: Duration) -> Out {
    let shown = format!("{cmd:?}");
    match cmd::spawn_wait(cmd, &shown, stdin, limit, Duration::from_millis(1)) {
        Ok(Some(f)) => Out { stdout: f.stdout, stderr: f.stderr, code: f.status.code() },
        Ok(None) => panic!("{shown}: killed after {limit:?}"),
        Err(e) => panic!("{e}"),
    }
}

/// [`run_input`] with nothing on stdin.
pub fn run(cmd: &mut Command, limit: Duration) -> Out {
    run_input(cmd, None, limit)
}

/// `prefix`, this process's id and a number new on every call: a name no other test uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A running `ferrowall run` in a directory of its own; stopped and cleaned up on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The daemon's standard error.
    pub log: PathBuf,
    /// Where it keeps its settings and, across a restart, its connection table.
    pub state_dir: PathBuf,
    /// The namespace it runs in.
    netns: Option<String>,
}

impl Daemon {
    /// Starts the daemon in a fresh directory `<temp dir>/<prefix><pid>-<n>` (mode 0755), with its
    /// control socket at `<dir>/run/ctl.sock`, once `files` (name, text) are written into the
    /// directory (e.g. a rule file the configuration names as `rules = rules.conf`) and `config`
    /// (if any) into `<dir>/ferrowall.conf`, where `{dir}` in it stands for the directory. Returns
    /// once the socket exists.
    pub fn start(prefix: &str, config: Option<&str>, files: &[(&str, &str)]) -> Daemon {
        Daemon::start_in(None, prefix, config, files)
    }

    /// As [`Daemon::start`], inside network namespace `netns` when given (`ip netns exec` execs
    /// the daemon in place, so its PID is the child's).
    pub fn start_in(netns: Option<&str>, prefix: &str, config: Option<&str>, files: &[(&str, &str)]) -> Daemon {
        let dir = std::env::temp_dir().join(unique(prefix));
        fs::create_dir_all(&dir).expect("creating the daemon's directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        for (name, text) in files {
            if let Err(e) = fs::write(dir.join(name), text) {
                let _ = fs::remove_dir_all(&dir);
                panic!("writing {name} into the daemon's directory: {e}");
            }
        }
        let socket = dir.join("run").join("ctl.sock");
        let log = dir.join("daemon.log");
        let state_dir = dir.join("state");
        if let Some(text) = config {
            let path = dir.join("ferrowall.conf");
            fs::write(&path, text.replace("{dir}", &dir.to_string_lossy())).expect("writing the config");
        }
        let mut d = Daemon { child: None, dir, socket, log, state_dir, netns: netns.map(str::to_owned) };
        if let Err(why) = d.launch() {
            panic!("{why}");
        }
        d
    }

    /// Starts the daemon process (the one of this directory must not be running) and waits for
    /// its control socket; its standard error goes on at the end of the log.
    pub fn launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the daemon is running");
        let b = bins();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&b.ferrowall);
                c
            }
            None => Command::new(&b.ferrowall),
        };
        cmd.arg("run").arg("--ctl-socket").arg(&self.socket).arg("--state-dir").arg(&self.state_dir);
        let config = self.dir.join("ferrowall.conf");
        if config.exists() {
            cmd.arg("--config").arg(&config);
        }
        const READY: &str = "control socket listening on";
        let before = self.log().matches(READY).count();
        let logf = fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("opening the log");
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(logf).spawn().expect("starting ferrowall");
        self.child = Some(child);
        let start = clock::now();
        // Ready once it says so (a stale socket file may be left by the last run).
        while self.log().matches(READY).count() == before {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("ferrowall exited at start-up ({st}): {}", self.log()));
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!("no control socket after 20 s: {}", self.log()));
            }
            clock::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// What the daemon wrote to its standard error so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// `ferroctl exec --socket S -- PROGRAM ARGS...`.
    pub fn exec(&self, program: &str, args: &[&str]) -> Out {
        let mut c = Command::new(&bins().ferroctl);
        c.arg("exec").arg("--socket").arg(&self.socket).arg("--").arg(program).args(args);
        run(&mut c, LIMIT)
    }

    /// `exec` for commands that switch to another user: the shim is preloaded from a copy in the
    /// daemon's (world-readable) directory, since the build tree may not be readable by that user.
    pub fn exec_public(&self, program: &str, args: &[&str]) -> Out {
        let shim = self.public_copy(&bins().ferroctl.with_file_name("libferrowall_shim.so"));
        let mut c = Command::new(&bins().ferroctl);
        c.env("FERROWALL_SHIM", shim);
        c.arg("exec").arg("--socket").arg(&self.socket).arg("--").arg(program).args(args);
        run(&mut c, LIMIT)
    }

    /// A copy of `file` in the daemon's directory, readable and executable by everyone.
    pub fn public_copy(&self, file: &Path) -> PathBuf {
        let to = self.dir.join(file.file_name().expect("a file name"));
        if !to.exists() {
            // Copied by `cp`, not from this process: a test thread that forks while we hold the
            // copy open for writing would hand the descriptor to its child, and executing the
            // copy would then fail with ETXTBSY ("Text file busy").
            let ok = Command::new("cp").arg(file).arg(&to).status().is_ok_and(|s| s.success());
            assert!(ok, "copying {} into the daemon's directory", file.display());
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        to
    }

    /// `ferroctl exec --socket S -- nfct ARGS...`: the unmodified nfct, through the shim.
    pub fn nfct(&self, args: &[&str]) -> Out {
        self.exec("nfct", args)
    }

    /// `ferroctl timeout --socket S [OPTIONS] ARGS...`.
    pub fn ferroctl(&self, options: &[&str], args: &[&str]) -> Out {
        let mut c = Command::new(&bins().ferroctl);
        c.arg("timeout").arg("--socket").arg(&self.socket).args(options).args(args);
        run(&mut c, LIMIT)
    }

    /// Sends `sig` (a `kill` signal name) to the daemon, by its PID.
    pub fn signal(&self, sig: &str) {
        let out = run(Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()), LIMIT);
        assert_eq!(out.code, Some(0), "kill -{sig}: {out}");
    }

    /// Stops the daemon with SIGTERM, by its PID (SIGKILL after 10 s); its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        if child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        let start = clock::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            clock::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

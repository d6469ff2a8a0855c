//! What survives a restart, in the state directory (`state_dir`, default [`DEFAULT_STATE_DIR`]):
//!
//! * `state`: the named timeout policies, the per-protocol defaults and the rule set in force
//!   (its file name and text). Rewritten whenever one of them changes (a cttimeout request, a
//!   reload), atomically: written to `state.tmp`, fsync'd, the current `state` hard-linked to
//!   `state.prev`, `state.tmp` renamed over `state`, the directory fsync'd. At every moment
//!   `state` is a whole file, and `state.prev` the one before it. The file is text, guarded by a
//!   CRC-32 on its last line: a damaged (truncated, edited, corrupted) file is refused at start,
//!   with the reason and `file:line`, and left as it is, as is `state.prev`.
//! * `conntrack`: the connection table, written when the daemon stops (`SIGTERM`, `SIGINT`) after
//!   the workers have stopped, read (and removed) at the next start: a graceful restart carries the
//!   connections over. A damaged one is set aside as `conntrack.damaged` and the daemon starts with
//!   an empty table (connections are soft state: the next packets of each rebuild what they can).
//! * `lock`: held (`flock`) while a daemon uses the directory; a second daemon is refused.
//!
//! The format of `state`, one record per line:
//!
//! ```text
//! # comment lines
//! ferrowall-state 1
//! default L4NUM SECS...                 # every protocol's defaults, one value per timeout slot
//! policy NAME L3NUM L4NUM SECS...       # in creation order
//! rules FILE LINES                      # then LINES lines of rule text, each after "| "
//! end CRC32                             # of every byte before this line, 8 hex digits
//! ```
//!
//! `NAME` and `FILE` are written with bytes outside `!`..`~` and `%` as `%XX`.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::conntrack::l4::Proto;
use crate::conntrack::Conntrack;
use crate::timeouts::{cttimeout_slots, OnExisting, Registry};

/// The state directory's default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ferrowall";

const HEADER: &str = "ferrowall-state 1";

/// The persistent settings: what `state` holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// (protocol number as cttimeout names it, seconds per slot), every protocol.
    pub defaults: Vec<(u8, Vec<u32>)>,
    /// (name, l3num, l4num, seconds per slot), in creation order.
    pub policies: Vec<(String, u16, u8, Vec<u32>)>,
    /// The rule set in force: (file it was read from, its text).
    pub rules: Option<(String, String)>,
}

impl Settings {
    /// The settings as `registry` and `ct` hold them now, with the rule set `rules`.
    pub fn capture(registry: &Registry, ct: &Conntrack, rules: Option<&(String, String)>) -> Settings {
        let defaults =
            Proto::ALL.iter().map(|&p| (p.number(), ct.defaults.of(p).snapshot(cttimeout_slots(p)))).collect();
        let policies = registry
            .list()
            .iter()
            .map(|p| (p.name.clone(), p.l3num, p.proto.number(), p.values.snapshot(p.slots())))
            .collect();
        Settings { defaults, policies, rules: rules.cloned() }
    }

    /// Puts the defaults and policies into `registry` and `ct` (a fresh registry: a policy of
    /// the same name already there is an error).
    pub fn apply(&self, registry: &Registry, ct: &Conntrack) -> Result<(), String> {
        let attrs = |v: &[u32]| v.iter().enumerate().map(|(i, &s)| (i as u16 + 1, s)).collect::<Vec<_>>();
        for (l4, values) in &self.defaults {
            registry.default_set(ct, *l4, &attrs(values)).map_err(|e| format!("defaults of protocol {l4}: {e}"))?;
        }
        for (name, l3, l4, values) in &self.policies {
            registry
                .create(ct, name, *l3, *l4, &attrs(values), OnExisting::Busy)
                .map_err(|e| format!("policy `{name}`: {e}"))?;
        }
        Ok(())
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut t = String::from(
            "# ferrowall's saved settings: timeout policies, defaults and the rule set in force.\n\
             # Written by the daemon; a checksum guards it, so do not edit it.\n",
        );
        t.push_str(HEADER);
        t.push('\n');
        let nums = |v: &[u32]| v.iter().map(|s| format!(" {s}")).collect::<String>();
        for (l4, v) in &self.defaults {
            let _ = writeln!(t, "default {l4}{}", nums(v));
        }
        for (name, l3, l4, v) in &self.policies {
            let _ = writeln!(t, "policy {} {l3} {l4}{}", escape(name), nums(v));
        }
        if let Some((file, text)) = &self.rules {
            let lines: Vec<&str> = text.lines().collect();
            let _ = writeln!(t, "rules {} {}", escape(file), lines.len());
            for l in lines {
                let _ = writeln!(t, "| {l}");
            }
        }
        let crc = crc32fast::hash(t.as_bytes());
        let _ = writeln!(t, "end {crc:08x}");
        t
    }

    /// Reads a file's text; errors say `line N: why` (or why the whole file is refused).
    pub fn parse(text: &str) -> Result<Settings, String> {
        let Some(end_at) = text.trim_end_matches('\n').rfind('\n').map(|i| i + 1) else {
            return Err("truncated: no end line".to_owned());
        };
        let (body, last) = text.split_at(end_at);
        let crc = last.trim_end().strip_prefix("end ").ok_or("truncated: the last line is not the end line")?.trim();
        if crc32fast::hash(body.as_bytes()) != u32::from_str_radix(crc, 16).map_err(|_| "bad end line")? {
            return Err("checksum mismatch: the file is damaged or was edited".to_owned());
        }
        let mut s = Settings::default();
        let mut lines = body.lines().enumerate().map(|(i, l)| (i + 1, l)).peekable();
        let mut header = false;
        while let Some((n, line)) = lines.next() {
            let at = |why: String| format!("line {n}: {why}");
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if !header {
                if line != HEADER {
                    return Err(at(format!("expected `{HEADER}`")));
                }
                header = true;
                continue;
            }
            let mut words = line.split(' ');
            let kind = words.next().unwrap_or_default();
            let mut word = |what: &str| words.next().ok_or_else(|| at(format!("{kind}: no {what}")));
            match kind {
                "default" => {
                    let l4 = number(word("protocol")?).map_err(at)?;
                    let values = words.map(number).collect::<Result<Vec<u32>, _>>().map_err(at)?;
                    s.defaults.push((l4, values));
                }
                "policy" => {
                    let name = unescape(word("name")?).map_err(at)?;
                    let l3 = number(word("family")?).map_err(at)?;
                    let l4 = number(word("protocol")?).map_err(at)?;
                    let values = words.map(number).collect::<Result<Vec<u32>, _>>().map_err(at)?;
                    s.policies.push((name, l3, l4, values));
                }
                "rules" => {
                    let file = unescape(word("file name")?).map_err(at)?;
                    let count: usize = number(word("line count")?).map_err(at)?;
                    let mut text = String::new();
                    for _ in 0..count {
                        let Some((m, l)) = lines.next() else {
                            return Err(at(format!("the rule text ends before its {count} lines")));
                        };
                        let l = l.strip_prefix("| ");
                        text.push_str(l.ok_or_else(|| format!("line {m}: a rule text line must start with `| `"))?);
                        text.push('\n');
                    }
                    s.rules = Some((file, text));
                }
                other => return Err(at(format!("unknown record `{other}`"))),
            }
        }
        if !header {
            return Err(format!("no `{HEADER}` line"));
        }
        Ok(s)
    }
}

fn number<T: std::str::FromStr>(w: &str) -> Result<T, String> {
    w.parse().map_err(|_| format!("`{w}` is not a number in range"))
}

fn escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("bad escape in `{s}`"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in `{s}`"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8"))
}

/// The wall clock, in Unix nanoseconds: what a saved table's times are relative to.
#[allow(clippy::disallowed_methods)] // the daemon's edge reads the clock
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The state directory, locked for this daemon.
pub struct StateDir {
    dir: PathBuf,
    /// Held for the daemon's life: the `flock` on `lock`.
    _lock: File,
    /// The text last written to (or read from) `state`.
    written: Option<String>,
}

impl StateDir {
    /// Creates `dir` if missing (mode 0700) and locks it; with `owner` (uid, gid), gives the
    /// directory and its files to that user, who will write them after privileges are dropped.
    pub fn open(dir: &Path, owner: Option<(u32, u32)>) -> Result<StateDir, String> {
        let err = |what: &Path, e: io::Error| format!("state directory: {}: {e}", what.display());
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| err(dir, e))?;
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path);
        let lock = lock.map_err(|e| err(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(format!("state directory {}: another ferrowall is using it", dir.display()))
            }
            Err(fs::TryLockError::Error(e)) => return Err(err(&lock_path, e)),
        }
        if let Some((uid, gid)) = owner {
            for name in ["", "lock", "state", "state.prev", "conntrack"] {
                let p = dir.join(name);
                match std::os::unix::fs::chown(&p, Some(uid), Some(gid)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(&p, e)),
                    _ => {}
                }
            }
        }
        Ok(StateDir { dir: dir.to_path_buf(), _lock: lock, written: None })
    }

    /// The `state` file's path.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The saved settings, `None` if there are none yet; a damaged file is an error naming it.
    pub fn load(&mut self) -> Result<Option<Settings>, String> {
        let path = self.state_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let s = Settings::parse(&text).map_err(|why| {
            let prev = self.dir.join("state.prev");
            let hint = if prev.exists() {
                format!(
                    "; the previous good copy is {} (copy it over {} to start from it)",
                    prev.display(),
                    path.display()
                )
            } else {
                String::new()
            };
            format!(
                "{}: {why}; refusing to start (the file is left as it is{hint}, or remove it to start from the configuration alone)",
                path.display()
            )
        })?;
        self.written = Some(text);
        Ok(Some(s))
    }

    /// Writes `s` unless it is what the file already holds; the current file becomes
    /// `state.prev`.
    pub fn store(&mut self, s: &Settings) -> io::Result<()> {
        let text = s.render();
        if self.written.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        write_atomic(&self.dir, "state", text.as_bytes(), Some("state.prev"))?;
        self.written = Some(text);
        Ok(())
    }

    /// Writes the connection table snapshot `bytes` as `conntrack`.
    pub fn store_table(&self, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.dir, "conntrack", bytes, None)
    }

    /// Takes the connection table snapshot saved at the last stop, if any, out of the directory.
    pub fn take_table(&self) -> io::Result<Option<Vec<u8>>> {
        let path = self.dir.join("conntrack");
        match fs::read(&path) {
            Ok(b) => {
                fs::remove_file(&path)?;
                Ok(Some(b))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Keeps a snapshot that could not be read as `conntrack.damaged`, for a look.
    pub fn set_aside_table(&self, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.dir, "conntrack.damaged", bytes, None)
    }
}

/// Replaces `dir/name` with `bytes` so that a crash at any point leaves either the old or the
/// new file whole: write a temporary file, fsync it, (keep the old file as `prev` by a hard
/// link), rename, fsync the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8], prev: Option<&str>) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    if let Some(prev) = prev {
        let (prev, prev_tmp) = (dir.join(prev), dir.join(format!("{prev}.tmp")));
        let _ = fs::remove_file(&prev_tmp);
        match fs::hard_link(&path, &prev_tmp) {
            Ok(()) => fs::rename(&prev_tmp, &prev)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{Config, DEFAULT_MAX};

    fn sample() -> Settings {
        Settings {
            defaults: vec![(6, vec![120, 60, 432000]), (17, vec![30, 120])],
            policies: vec![("dns".into(), 2, 17, vec![2, 5]), ("odd name%".into(), 10, 6, vec![1; 12])],
            rules: Some((
                "/etc/fw rules".into(),
                "chain forward {\n  policy drop\n\n  ct state established accept\n}\n".into(),
            )),
        }
    }

    proptest::proptest! {
        /// Any text: settings or an error, never a panic; text with a valid checksum over random
        /// records too.
        #[test]
        fn any_text_is_read_or_refused(text in "(ferrowall-state 1\n)?((default|policy|rules|end|#|\\| )[ -~%]{0,40}\n){0,12}") {
            let _ = Settings::parse(&text);
            let sealed = format!("{text}end {:08x}\n", crc32fast::hash(text.as_bytes()));
            let _ = Settings::parse(&sealed);
        }
    }

    #[test]
    fn settings_round_trip() {
        let s = sample();
        let text = s.render();
        assert!(text.contains("policy odd%20name%25 10 6 1 1"), "{text}");
        assert_eq!(Settings::parse(&text).unwrap(), s);
        let none = Settings { rules: None, ..sample() };
        assert_eq!(Settings::parse(&none.render()).unwrap(), none);
    }

    #[test]
    fn damage_is_refused() {
        let text = sample().render();
        // Truncated anywhere, a byte changed anywhere: refused.
        for cut in (0..text.len() - 1).step_by(7) {
            assert!(Settings::parse(&text[..cut]).is_err(), "cut at {cut} accepted");
        }
        let edited = text.replace("dns 2 17 2 5", "dns 2 17 2 6");
        assert!(Settings::parse(&edited).unwrap_err().contains("checksum mismatch"));
        // A well-formed checksum over bad records: the record's line is named.
        let body = "ferrowall-state 1\npolicy x 2 17 a\n";
        let forged = format!("{body}end {:08x}\n", crc32fast::hash(body.as_bytes()));
        assert_eq!(Settings::parse(&forged).unwrap_err(), "line 2: `a` is not a number in range");
        let body = "ferrowall-state 1\nrules f 3\n| a\n";
        let forged = format!("{body}end {:08x}\n", crc32fast::hash(body.as_bytes()));
        assert!(Settings::parse(&forged).unwrap_err().starts_with("line 2: the rule text ends"));
    }

    #[test]
    fn capture_and_apply_carry_policies_and_defaults() {
        let (ct, r) = (Conntrack::new(DEFAULT_MAX, Config::default()), Registry::new());
        r.create(&ct, "dns", 2, 17, &[(1, 2), (2, 5)], OnExisting::Busy).unwrap();
        r.default_set(&ct, 6, &[(3, 600)]).unwrap();
        let s = Settings::capture(&r, &ct, None);
        let (ct2, r2) = (Conntrack::new(DEFAULT_MAX, Config::default()), Registry::new());
        s.apply(&r2, &ct2).unwrap();
        assert_eq!(Settings::capture(&r2, &ct2, None), s);
        assert_eq!(r2.default_get(&ct2, 6).unwrap()[2], 600);
        assert_eq!(r2.find("dns").unwrap().values.snapshot(2), [2, 5]);
    }

    #[test]
    fn the_directory_keeps_the_previous_copy_and_refuses_a_second_daemon() {
        let dir = std::env::temp_dir().join(format!("ferrowall-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut sd = StateDir::open(&dir, None).unwrap();
        assert_eq!(sd.load().unwrap(), None);
        let first = sample();
        sd.store(&first).unwrap();
        let second = Settings { policies: vec![], ..sample() };
        sd.store(&second).unwrap();
        assert_eq!(Settings::parse(&fs::read_to_string(dir.join("state")).unwrap()).unwrap(), second);
        assert_eq!(Settings::parse(&fs::read_to_string(dir.join("state.prev")).unwrap()).unwrap(), first);
        assert!(StateDir::open(&dir, None).err().unwrap().contains("another ferrowall"));
        drop(sd);
        // Damaged: refused, naming the file and the previous copy, and nothing is touched.
        let good = fs::read(dir.join("state")).unwrap();
        fs::write(dir.join("state"), &good[..good.len() - 20]).unwrap();
        let mut sd = StateDir::open(&dir, None).unwrap();
        let e = sd.load().unwrap_err();
        assert!(e.contains("state: truncated") && e.contains("state.prev"), "{e}");
        assert_eq!(fs::read(dir.join("state")).unwrap(), &good[..good.len() - 20]);
        // The table snapshot is taken once.
        sd.store_table(b"bytes").unwrap();
        assert_eq!(sd.take_table().unwrap().as_deref(), Some(&b"bytes"[..]));
        assert_eq!(sd.take_table().unwrap(), None);
        drop(sd);
        fs::remove_dir_all(&dir).unwrap();
    }
}

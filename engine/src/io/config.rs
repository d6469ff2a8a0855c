//! The daemon's configuration file: one `key = value` per line, `#` starts a comment, values may
//! be double-quoted.
//!
//! ```text
//! ctl_socket = /run/ferrowall/ctl.sock   # the control socket (default shown)
//! ctl_group = ferrowall                  # a group (name or gid) whose members may change settings
//! rules = rules.conf                     # the rule file; relative to this file's directory
//! max_connections = 262144               # the conntrack table's size
//! state_dir = /var/lib/ferrowall         # what survives a restart (default shown); relative to this file
//! timeout = dns inet udp unreplied 2 replied 5   # a timeout policy, in `nfct timeout add` syntax
//! mode = router                          # router (AF_PACKET ports), tun or bridge
//! interface = veth-cli 198.18.1.1/24 2001:2:0:1::1/64   # a port and ferrowall's own addresses on it
//! interface = veth-srv 198.19.1.1/24 2001:2:0:2::1/64
//! route = 198.20.0.0/16 via 198.19.1.2   # static routes (connected ones come from the addresses)
//! workers = 2                            # worker threads (default: one per core)
//! busy_poll = 50                         # µs a worker polls after frames closer than that (0: off, the default)
//! user = nobody                          # once the sockets are open, run as this user (name or uid)
//! group = nogroup                        # ... with this group (default: the user's own group)
//! ```
//!
//! Every key is optional; `interface`, `route` and `timeout` may be repeated; `timeout` lines (one policy each; they exist before the rule
//! file is loaded, so its `ct timeout set` can name them). An unknown or repeated key, a bad value
//! or an unknown user or group is refused with `file:line: why`; so is `user = root` (uid 0),
//! which would keep every capability, and `group` without `user`.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::timeouts::Declaration;

/// The control socket's default path.
pub const DEFAULT_CTL_SOCKET: &str = "/run/ferrowall/ctl.sock";

/// What the configuration file says, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub ctl_socket: PathBuf,
    /// The gid allowed to change settings besides root (and the line that named it).
    pub ctl_group: Option<u32>,
    /// The rule file, resolved against the configuration file's directory.
    pub rules: Option<PathBuf>,
    pub max_connections: usize,
    /// Where the settings and, across a graceful restart, the connection table are kept.
    pub state_dir: PathBuf,
    /// Timeout policies to create at start, with the line declaring each.
    pub timeouts: Vec<(usize, Declaration)>,
    /// How packets are forwarded (when there are interfaces).
    pub mode: Mode,
    /// The ports, with the line declaring each.
    pub interfaces: Vec<(usize, Interface)>,
    /// Static routes as written, with their line (parsed by the router).
    pub routes: Vec<(usize, String)>,
    /// Worker threads; `None`: one per core.
    pub workers: Option<usize>,
    /// How long a worker keeps polling its rings after a frame before it sleeps until the next,
    /// while frames come closer together than that (`busy_poll = MICROSECONDS`, at most 10 ms;
    /// the worker loop's `Spin`).
    pub busy_poll: Duration,
    /// Who the daemon becomes once its sockets are open (`user`, `group`).
    pub run_as: Option<RunAs>,
}

/// The unprivileged identity of `user = NAME` (and `group = NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: those of `/etc/group` listing the user as a member.
    pub groups: Vec<u32>,
}

/// A passwd entry: uid, primary gid, supplementary gids.
pub type UserInfo = (u32, u32, Vec<u32>);

/// How the daemon forwards packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// An L3 router over AF_PACKET ports.
    #[default]
    Router,
    /// The kernel routes through ferrowall's TUN devices.
    Tun,
    /// An L2 bridge between AF_PACKET ports.
    Bridge,
}

/// A port and ferrowall's own addresses on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub addrs: Vec<(IpAddr, u8)>,
}

impl Interface {
    /// Parses `NAME [ADDR/LEN]...`.
    fn parse(value: &str) -> Result<Interface, String> {
        let mut words = value.split_whitespace();
        let name = words.next().ok_or("an interface needs a name")?;
        if name.len() > 15 {
            return Err(format!("interface name `{name}` is longer than 15 bytes"));
        }
        let mut addrs = Vec::new();
        for w in words {
            let (a, len) = w.split_once('/').ok_or_else(|| format!("`{w}` needs a prefix length (ADDR/LEN)"))?;
            let addr: IpAddr = a.parse().map_err(|_| format!("`{a}` is not an IP address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len: u8 =
                len.parse().ok().filter(|&l| l <= max).ok_or_else(|| format!("bad prefix length in `{w}`"))?;
            addrs.push((addr, len));
        }
        Ok(Interface { name: name.to_owned(), addrs })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ctl_socket: PathBuf::from(DEFAULT_CTL_SOCKET),
            ctl_group: None,
            rules: None,
            max_connections: crate::conntrack::DEFAULT_MAX,
            state_dir: PathBuf::from(super::state::DEFAULT_STATE_DIR),
            timeouts: Vec::new(),
            mode: Mode::default(),
            interfaces: Vec::new(),
            routes: Vec::new(),
            workers: None,
            busy_poll: DEFAULT_BUSY_POLL,
            run_as: None,
        }
    }
}

/// The busy polling of a worker after a frame, unless configured.
pub const DEFAULT_BUSY_POLL: Duration = Duration::ZERO;

/// A refused configuration: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the file could not be read at all.
    pub line: usize,
    pub why: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.why)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.why)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and parses `path`, resolving group names through `/etc/group`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 0,
            why: e.to_string(),
        })?;
        let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        Config::parse_with(path, &text, &|name| group_gid(&groups, name), &|name| user_info(&passwd, &groups, name))
    }

    /// The keys whose setting `new` changes from `self` (the configuration the daemon started
    /// with) and a reload cannot apply: they take effect at the next start. A reload applies the
    /// rule file (`rules`) and, in router mode, the static routes (`route`); line numbers and
    /// comments do not count as changes.
    pub fn needs_restart(&self, new: &Config) -> Vec<&'static str> {
        let uid = |c: &Config| c.run_as.as_ref().map(|r| r.uid);
        let gid = |c: &Config| c.run_as.as_ref().map(|r| r.gid);
        let changed = [
            ("ctl_socket", self.ctl_socket != new.ctl_socket),
            ("ctl_group", self.ctl_group != new.ctl_group),
            ("max_connections", self.max_connections != new.max_connections),
            ("state_dir", self.state_dir != new.state_dir),
            ("timeout", !self.timeouts.iter().map(|t| &t.1).eq(new.timeouts.iter().map(|t| &t.1))),
            ("mode", self.mode != new.mode),
            ("interface", !self.interfaces.iter().map(|i| &i.1).eq(new.interfaces.iter().map(|i| &i.1))),
            ("workers", self.workers != new.workers),
            ("busy_poll", self.busy_poll != new.busy_poll),
            ("user", uid(self) != uid(new)),
            ("group", gid(self) != gid(new)),
        ];
        changed.into_iter().filter(|&(_, c)| c).map(|(key, _)| key).collect()
    }

    /// Parses `text` (read from `file`); `gid_of` resolves a group name; no user names resolve.
    pub fn parse(file: &Path, text: &str, gid_of: &dyn Fn(&str) -> Option<u32>) -> Result<Config, ConfigError> {
        Config::parse_with(file, text, gid_of, &|_| None)
    }

    /// As [`Config::parse`], with `user_of` resolving a user name or uid.
    pub fn parse_with(
        file: &Path,
        text: &str,
        gid_of: &dyn Fn(&str) -> Option<u32>,
        user_of: &dyn Fn(&str) -> Option<UserInfo>,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let mut group: Option<(usize, u32)> = None;
        let mut seen: Vec<&str> = Vec::new();
        let base = file.parent().unwrap_or(Path::new("."));
        for (i, raw) in text.lines().enumerate() {
            let err = |why: String| ConfigError { file: file.to_owned(), line: i + 1, why };
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(format!("expected `key = value`, found `{line}`")));
            };
            let (key, value) = (key.trim(), unquote(value.trim()).map_err(&err)?);
            if value.is_empty() {
                return Err(err(format!("`{key}` needs a value")));
            }
            if key == "timeout" {
                let d = Declaration::parse(value).map_err(&err)?;
                if c.timeouts.iter().any(|(_, o)| o.name == d.name) {
                    return Err(err(format!("timeout policy `{}` is declared twice", d.name)));
                }
                c.timeouts.push((i + 1, d));
                continue;
            }
            match key {
                "interface" => {
                    let iface = Interface::parse(value).map_err(&err)?;
                    if c.interfaces.iter().any(|(_, o)| o.name == iface.name) {
                        return Err(err(format!("interface `{}` is declared twice", iface.name)));
                    }
                    c.interfaces.push((i + 1, iface));
                    continue;
                }
                "route" => {
                    c.routes.push((i + 1, value.to_owned()));
                    continue;
                }
                _ => {}
            }
            if seen.contains(&key) {
                return Err(err(format!("`{key}` is set twice")));
            }
            match key {
                "ctl_socket" => c.ctl_socket = PathBuf::from(value),
                "ctl_group" => {
                    let gid = value.parse::<u32>().ok().or_else(|| gid_of(value));
                    c.ctl_group = Some(gid.ok_or_else(|| err(format!("unknown group `{value}`")))?);
                }
                "rules" => c.rules = Some(base.join(value)),
                "state_dir" => c.state_dir = base.join(value),
                "max_connections" => match value.parse::<usize>() {
                    Ok(n) if n > 0 => c.max_connections = n,
                    _ => return Err(err(format!("max_connections must be a positive integer, not `{value}`"))),
                },
                "mode" => {
                    c.mode = match value {
                        "router" => Mode::Router,
                        "tun" => Mode::Tun,
                        "bridge" => Mode::Bridge,
                        _ => return Err(err(format!("mode must be router, tun or bridge, not `{value}`"))),
                    }
                }
                "workers" => match value.parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => c.workers = Some(n),
                    _ => return Err(err(format!("workers must be between 1 and 256, not `{value}`"))),
                },
                "busy_poll" => match value.parse::<u64>() {
                    Ok(us) if us <= 10_000 => c.busy_poll = Duration::from_micros(us),
                    _ => return Err(err(format!("busy_poll must be microseconds from 0 to 10000, not `{value}`"))),
                },
                "user" => {
                    let (uid, gid, groups) = user_of(value).ok_or_else(|| err(format!("unknown user `{value}`")))?;
                    if uid == 0 {
                        return Err(err(format!("user `{value}` is root (uid 0): it would keep every capability")));
                    }
                    c.run_as = Some(RunAs { name: value.to_owned(), uid, gid, groups });
                }
                "group" => {
                    let gid = value.parse::<u32>().ok().or_else(|| gid_of(value));
                    group = Some((i + 1, gid.ok_or_else(|| err(format!("unknown group `{value}`")))?));
                }
                _ => return Err(err(format!("unknown key `{key}`"))),
            }
            seen.push(key);
        }
        if let Some((line, gid)) = group {
            let Some(r) = c.run_as.as_mut() else {
                return Err(ConfigError { file: file.to_owned(), line, why: "`group` needs `user`".to_owned() });
            };
            r.gid = gid;
        }
        // What the mode has no use for is refused, not passed over.
        let refuse = |line: usize, why: String| Err(ConfigError { file: file.to_owned(), line, why });
        match c.mode {
            Mode::Bridge => {
                if let Some((line, i)) = c.interfaces.iter().find(|(_, i)| !i.addrs.is_empty()) {
                    let why = format!("interface {}: a bridge has no addresses of its own (mode = bridge)", i.name);
                    return refuse(*line, why);
                }
                if let Some((line, _)) = c.routes.first() {
                    return refuse(*line, "a bridge has no routes (mode = bridge)".to_owned());
                }
            }
            Mode::Tun => {
                if let Some((line, _)) = c.routes.first() {
                    return refuse(
                        *line,
                        "the kernel routes in TUN mode: routes go into its table (mode = tun)".to_owned(),
                    );
                }
            }
            Mode::Router => {}
        }
        Ok(c)
    }
}

/// `line` up to a `#` that is not inside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, ch) in line.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn unquote(v: &str) -> Result<&str, String> {
    match v.strip_prefix('"') {
        None if v.contains('"') => Err(format!("stray quote in `{v}`")),
        None => Ok(v),
        Some(rest) => match rest.strip_suffix('"') {
            Some(inner) if !inner.contains('"') => Ok(inner),
            _ => Err(format!("unterminated or stray quote in `{v}`")),
        },
    }
}

/// The gid of group `name` in an `/etc/group`-format text.
pub fn group_gid(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// User `name` (or a numeric uid) in `/etc/passwd`-format text: uid, primary gid, and the gids of
/// the `/etc/group` entries listing it as a member.
pub fn user_info(etc_passwd: &str, etc_group: &str, name: &str) -> Option<UserInfo> {
    let by_uid = name.parse::<u32>().ok();
    let (login, uid, gid) = etc_passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let (login, uid, gid) = (*f.first()?, f.get(2)?.parse::<u32>().ok()?, f.get(3)?.parse::<u32>().ok()?);
        (login == name || by_uid == Some(uid)).then(|| (login.to_owned(), uid, gid))
    })?;
    let mut groups: Vec<u32> = etc_group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let member = f.get(3)?.split(',').any(|m| m == login);
            member.then(|| f.get(2)?.parse().ok())?
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Some((uid, gid, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/ferrowall/ferrowall.conf"), text, &|n| (n == "fw").then_some(990))
    }

    #[test]
    fn keys_values_comments_and_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        let c = parse(
            "# comment\nctl_socket = \"/tmp/a b#c.sock\"  # trailing\nctl_group=fw\nrules = r.conf\nmax_connections = 10\n",
        )
        .unwrap();
        assert_eq!(c.ctl_socket, PathBuf::from("/tmp/a b#c.sock"));
        assert_eq!(c.ctl_group, Some(990));
        assert_eq!(c.rules, Some(PathBuf::from("/etc/ferrowall/r.conf")));
        assert_eq!(c.max_connections, 10);
        assert_eq!(parse("ctl_group = 42").unwrap().ctl_group, Some(42));
        assert_eq!(parse("rules = /abs/r").unwrap().rules, Some(PathBuf::from("/abs/r")));
    }

    #[test]
    fn what_a_reload_cannot_apply_is_named() {
        let base =
            parse("rules = a\nmax_connections = 10\ninterface = x 198.18.0.1/24\ntimeout = t inet udp unreplied 5\n")
                .unwrap();
        // Comments, blank lines (so other line numbers), a new rule file and routes: nothing.
        let same = parse(
            "# moved\n\nrules = b\nroute = 198.20.0.0/16 via 198.18.0.2\nmax_connections = 10\n\
             interface = x 198.18.0.1/24\ntimeout = t inet udp unreplied 5\n",
        )
        .unwrap();
        assert_eq!(base.needs_restart(&same), Vec::<&str>::new());
        let other = parse(
            "rules = a\nmax_connections = 20\ninterface = x 198.18.0.2/24\ntimeout = t inet udp unreplied 6\n\
             workers = 3\nbusy_poll = 50\nmode = tun\nctl_group = fw\n",
        )
        .unwrap();
        assert_eq!(
            base.needs_restart(&other),
            ["ctl_group", "max_connections", "timeout", "mode", "interface", "workers", "busy_poll"]
        );
    }

    #[test]
    fn what_the_mode_has_no_use_for_is_refused() {
        let e = parse("interface = a\ninterface = b 198.18.0.1/24\nmode = bridge\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/ferrowall/ferrowall.conf:2: interface b: a bridge has no addresses of its own (mode = bridge)"
        );
        assert_eq!(parse("mode = bridge\ninterface = a\nroute = default via 198.18.0.1\n").unwrap_err().line, 3);
        let e = parse("route = 198.20.0.0/16 via 198.18.0.1\nmode = tun\ninterface = fw0 198.18.0.2/24\n").unwrap_err();
        assert_eq!(
            (e.line, e.why.as_str()),
            (1, "the kernel routes in TUN mode: routes go into its table (mode = tun)")
        );
        assert!(parse("mode = tun\ninterface = fw0 198.18.0.2/24\n").is_ok());
        assert!(parse("interface = a 198.18.0.2/24\nroute = 198.20.0.0/16 via 198.18.0.1\n").is_ok());
    }

    #[test]
    fn mistakes_name_their_line() {
        let e = parse("\n\nctl_group = nosuch\n").unwrap_err();
        assert_eq!(e.to_string(), "/etc/ferrowall/ferrowall.conf:3: unknown group `nosuch`");
        assert_eq!(parse("bogus = 1").unwrap_err().line, 1);
        assert_eq!(parse("rules\n").unwrap_err().why, "expected `key = value`, found `rules`");
        assert_eq!(parse("max_connections = 0").unwrap_err().line, 1);
        assert_eq!(parse("rules = a\nrules = b").unwrap_err().line, 2);
        assert_eq!(parse("ctl_socket = ").unwrap_err().line, 1);
        assert_eq!(parse("ctl_socket = \"x").unwrap_err().line, 1);
        assert_eq!(parse("port = eth0").unwrap_err().why, "unknown key `port`");
        assert_eq!(parse("mode = hub").unwrap_err().why, "mode must be router, tun or bridge, not `hub`");
        assert_eq!(parse("workers = 0").unwrap_err().line, 1);
        assert_eq!(
            parse("\nbusy_poll = 20000").unwrap_err().to_string(),
            "/etc/ferrowall/ferrowall.conf:2: busy_poll must be microseconds from 0 to 10000, not `20000`"
        );
        assert_eq!(parse("busy_poll = -1").unwrap_err().line, 1);
        assert_eq!(parse("interface = a 198.18.0.1").unwrap_err().why, "`198.18.0.1` needs a prefix length (ADDR/LEN)");
        assert_eq!(parse("interface = a 198.18.0.1/33").unwrap_err().why, "bad prefix length in `198.18.0.1/33`");
        assert_eq!(parse("interface = a\ninterface = a").unwrap_err().line, 2);
        assert!(parse("interface = averyveryverylongname").unwrap_err().why.contains("longer than 15"));
    }

    #[test]
    fn router_keys() {
        let c = parse("mode = router\ninterface = eth0 198.18.0.1/24 2001:2::1/64\ninterface = eth1\nroute = default via 198.18.0.254\nworkers = 2\n").unwrap();
        assert_eq!(c.mode, Mode::Router);
        assert_eq!(parse("mode = bridge").unwrap().mode, Mode::Bridge);
        assert_eq!(parse("mode = tun").unwrap().mode, Mode::Tun);
        assert_eq!(c.workers, Some(2));
        assert_eq!(c.busy_poll, DEFAULT_BUSY_POLL);
        assert_eq!(parse("busy_poll = 50").unwrap().busy_poll, Duration::from_micros(50));
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.interfaces[0].1.addrs, [("198.18.0.1".parse().unwrap(), 24), ("2001:2::1".parse().unwrap(), 64)]);
        assert_eq!(c.routes, [(4, "default via 198.18.0.254".to_owned())]);
    }

    #[test]
    fn user_and_group() {
        let passwd = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nalice:x:1000:1000::/:/bin/sh\n";
        let groups = "nogroup:x:65534:\nfw:x:990:bob,alice\nusers:x:100:alice\n";
        let p = |t: &str| {
            Config::parse_with(Path::new("/f.conf"), t, &|n| group_gid(groups, n), &|n| user_info(passwd, groups, n))
        };
        let r = p("user = alice\n").unwrap().run_as.unwrap();
        assert_eq!((r.uid, r.gid, r.groups), (1000, 1000, vec![100, 990]));
        let r = p("user = 65534\ngroup = fw\n").unwrap().run_as.unwrap();
        assert_eq!((r.uid, r.gid, r.groups), (65534, 990, vec![]));
        assert_eq!(p("\nuser = nosuch").unwrap_err().to_string(), "/f.conf:2: unknown user `nosuch`");
        assert_eq!(p("user = root").unwrap_err().line, 1);
        assert_eq!(p("group = fw").unwrap_err().why, "`group` needs `user`");
        assert_eq!(p("user = alice\ngroup = nosuch").unwrap_err().line, 2);
        assert_eq!(p("").unwrap().run_as, None);
    }

    #[test]
    fn group_file_lookup() {
        let g = "root:x:0:\nnogroup:x:65534:\nfw:x:990:alice,bob\n";
        assert_eq!(group_gid(g, "fw"), Some(990));
        assert_eq!(group_gid(g, "nogroup"), Some(65534));
        assert_eq!(group_gid(g, "f"), None);
    }
}

//! The rule set: an nftables-like file, parsed and compiled off the hot path, evaluated per packet.
//!
//! A [`RuleSet`] is built once ([`RuleSet::parse`] / [`RuleSet::load`]), published atomically by
//! its owner, and evaluated with [`RuleSet::eval`], which neither allocates nor locks. Matches are
//! compiled to masks, sorted ranges and bitmaps; the only string compares on the hot path are
//! interface names.
//!
//! # Syntax
//!
//! ```text
//! # A comment runs to the end of the line.
//! chain prerouting { policy accept; udp dport 9 notrack; }
//! chain forward {
//!   policy drop;
//!   ct state established,related accept
//!   ct state invalid counter drop
//!   iifname "veth-cli" ip saddr 198.18.0.0/15 tcp dport { 80, 443, 8000-8099 } ct timeout set "web" counter accept
//!   meta l4proto udp udp dport 53 ct timeout set "dns" accept
//!   ip6 daddr 2001:2::/48 icmpv6 type { echo-request, echo-reply } accept
//!   icmp type echo-request accept
//!   iifname "veth-srv" ct state new reject
//! }
//! chain input { policy accept; }
//! chain output { policy accept; }
//! ```
//!
//! **File.** A sequence of `chain HOOK { … }` blocks, optionally wrapped in one
//! `table inet NAME { … }` (so that a file written for `nft -f` loads unchanged; a leading
//! `flush ruleset` is accepted and ignored, as loading replaces everything anyway). `HOOK` is one of
//! `prerouting`, `input`, `forward`, `output`, each at most once; a hook without a chain accepts
//! everything. A chain may instead have any name and say its hook as nft does:
//! `chain fw { type filter hook forward priority 0; policy drop; … }` (the priority is ignored).
//! Statements end at a newline or `;`; a `\` at the end of a line continues it; `{ … }` sets may
//! span lines.
//!
//! **Chain statements.** `policy accept;` or `policy drop;` (default `accept`): the verdict of a
//! packet no rule decided.
//!
//! **Rules.** A rule is a sequence of matches and statements, run left to right: the first match
//! that fails ends the rule and evaluation goes on with the next rule; a verdict ends the chain.
//! A rule without a verdict falls through to the next rule. Every match may be written `==` (the
//! default) or negated with `!=`; every value may be a single value, a comma-separated list or a
//! `{ … }` set.
//!
//! | match | values |
//! |---|---|
//! | `iifname`, `oifname` | `"veth0"` exact, `"veth*"` prefix (quotes optional) |
//! | `ip saddr`, `ip daddr` | `10.0.0.1`, `10.0.0.0/8`, `10.0.0.1-10.0.0.9` (only IPv4 packets) |
//! | `ip6 saddr`, `ip6 daddr` | `2001:db8::1`, `2001:db8::/32`, `::1-::9` (only IPv6 packets) |
//! | `ip protocol` | as `meta l4proto`, only IPv4 packets |
//! | `meta l4proto` | `tcp udp udplite sctp icmp icmpv6 gre esp ah dccp igmp` or `0`..`255` |
//! | `meta nfproto` | `ipv4`, `ipv6` |
//! | `tcp`/`udp`/`udplite`/`sctp`/`th` `sport`/`dport` | `80`, `8000-8099`, a few service names (`ssh`, `http`, `https`, `domain`, …) |
//! | `icmp type`, `icmpv6 type` | nft's names (`echo-request`, `destination-unreachable`, `nd-neighbor-solicit`, …), ip6tables' (`neighbour-solicitation`, …), `0`..`255`, ranges |
//! | `ct state` | `new`, `established`, `related`, `invalid`, `untracked` |
//!
//! A protocol-specific match implies its protocol, as in nft: `tcp dport 80` matches only TCP,
//! `ip saddr …` only IPv4, `icmp type` only ICMP over IPv4, `th dport` TCP, UDP, UDP-Lite or SCTP
//! (also when negated: `tcp dport != 22` does not match UDP).
//!
//! | statement | effect |
//! |---|---|
//! | `accept`, `drop` | verdict |
//! | `reject` | verdict; a TCP RST for TCP, else ICMP / ICMPv6 port unreachable |
//! | `reject with tcp reset` | TCP RST (the rule then matches only TCP) |
//! | `reject with icmp type port-unreachable` (also `icmpv6`, `icmpx`) | that ICMP error (`icmp` implies IPv4, `icmpv6` IPv6, `icmpx` either) |
//! | `counter` | counts packets and IP bytes of the rule ([`RuleSet::counters`]); nft's `counter packets N bytes M` is accepted, its numbers ignored |
//! | `notrack` | the packet bypasses connection tracking (only in `prerouting`) |
//! | `ct timeout set "NAME"` | new connections of this packet get timeout policy NAME |
//! | `mark set N`, `meta mark set N` | the mark (decimal or `0x…`) of the connection this packet creates: `mark=` in the table, in `conntrack -L` and ctnetlink (ferrowall has no per-packet mark; on a packet of a known connection it does nothing) |
//!
//! **Load errors** (each as `file:line:column: why`; as many as could be found): unknown keywords,
//! bad addresses, prefixes, ranges, ports out of range, unknown ICMP types, protocols or states,
//! interface names longer than 15 bytes; an unknown policy in `ct timeout set` (resolved with
//! [`Registry::acquire`] when the file is loaded); matches whose protocols or families contradict
//! each other (`tcp dport 1 udp sport 2`, `ip saddr 10.0.0.1 ip6 daddr ::1`); a `ct timeout set`
//! whose policy's protocol the rule can never match; `ct state` and `ct timeout set` in
//! `prerouting` (it runs before tracking); `notrack` outside it; `oifname` in `prerouting` and
//! `input`, `iifname` in `output` (as iptables refuses `-o`/`-i` there); anything after a verdict;
//! two `counter`s in a rule; a hook given twice.
//!
//! # Timeout policies
//!
//! A rule naming a policy holds one [`PolicyRef`] to it for as long as the rule set lives, so the
//! policy's control-plane use count is 1 + the number of rules naming it, and cttimeout refuses to
//! delete it (`EBUSY`) until the rule set is replaced.

mod error;
mod parser;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proto::packet::{Family, Packet, L4};

use crate::conntrack::CtState;
use crate::timeouts::{Policy, PolicyRef, Registry};

pub use error::{Diag, ErrorKind, RuleError};

/// Where in the packet's path a chain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Before connection tracking: `notrack` lives here; `ct` matches do not.
    Prerouting,
    /// Packets for the host itself.
    Input,
    /// Packets routed or bridged through.
    Forward,
    /// Packets the host sends.
    Output,
}

impl Hook {
    /// Every hook, in index order.
    pub const ALL: [Hook; 4] = [Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output];

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
        }
    }

    /// The hook called `name`.
    pub fn from_name(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == name)
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the caller knows about a packet beyond its headers.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    /// The input interface's name (empty when there is none, as in `output`).
    pub iif: &'a str,
    /// The output interface's name (empty when not known yet, as in `prerouting`).
    pub oif: &'a str,
}

/// The fate of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    /// Drop, and answer with the given error.
    Reject(Reject),
}

/// The answer to a rejected packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    TcpReset,
    IcmpPortUnreachable,
    Icmpv6PortUnreachable,
}

/// The result of evaluating one hook's chain for one packet.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    /// A `notrack` statement ran: the packet bypasses connection tracking.
    pub notrack: bool,
    /// The last `ct timeout set` that ran: a connection this packet creates gets this policy
    /// (see [`crate::conntrack::Tracked::set_policy`]).
    pub timeout: Option<Arc<Policy>>,
    /// The last `mark set` that ran.
    pub mark: Option<u32>,
}

/// A rule's counter as read by [`RuleSet::counters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    pub hook: Hook,
    /// The rule's index in its chain (0 is the first rule).
    pub index: usize,
    /// The line of the file the rule starts on.
    pub line: u32,
    /// The rule as written.
    pub text: String,
    pub packets: u64,
    /// IP bytes (header included), as nft counts.
    pub bytes: u64,
}

/// A compiled rule set: one chain per hook.
#[derive(Debug)]
pub struct RuleSet {
    chains: [Chain; 4],
    /// The distinct policies the rules name (each rule holds its own [`PolicyRef`]).
    policies: Vec<Arc<Policy>>,
}

#[derive(Debug)]
struct Chain {
    policy: Verdict,
    rules: Box<[Rule]>,
}

impl Chain {
    fn accept_all() -> Chain {
        Chain { policy: Verdict::Accept, rules: Box::new([]) }
    }
}

#[derive(Debug)]
struct Rule {
    items: Box<[Item]>,
    packets: AtomicU64,
    bytes: AtomicU64,
    has_counter: bool,
    line: u32,
    text: Box<str>,
    /// One use of each policy the rule names; `Item::Timeout` holds a plain clone of the `Arc`.
    _refs: Box<[PolicyRef]>,
}

/// One step of a rule, run in order.
#[derive(Debug)]
enum Item {
    Test(Test),
    Counter,
    Notrack,
    Timeout(Arc<Policy>),
    Mark(u32),
    Verdict(Action),
}

/// A terminal statement, resolved against the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Accept,
    Drop,
    /// `reject`: TCP RST for TCP, else ICMP(v6) port unreachable.
    RejectAuto,
    /// `reject with icmpx type port-unreachable`: ICMP(v6) port unreachable, by family.
    RejectIcmpx,
    Reject(Reject),
}

impl Action {
    #[inline]
    fn resolve(self, pkt: &Packet) -> Verdict {
        let icmp = || match pkt.family {
            Family::V4 => Reject::IcmpPortUnreachable,
            Family::V6 => Reject::Icmpv6PortUnreachable,
        };
        match self {
            Action::Accept => Verdict::Accept,
            Action::Drop => Verdict::Drop,
            Action::RejectAuto if matches!(pkt.l4, L4::Tcp(_)) => Verdict::Reject(Reject::TcpReset),
            Action::RejectAuto | Action::RejectIcmpx => Verdict::Reject(icmp()),
            Action::Reject(r) => Verdict::Reject(r),
        }
    }
}

/// A 256-bit set (protocol numbers, ICMP types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bits([u64; 4]);

impl Bits {
    const NONE: Bits = Bits([0; 4]);
    const ALL: Bits = Bits([u64::MAX; 4]);

    fn of(values: &[u8]) -> Bits {
        let mut b = Bits::NONE;
        for &v in values {
            b.insert(v);
        }
        b
    }

    fn insert(&mut self, v: u8) {
        self.0[usize::from(v >> 6)] |= 1 << (v & 63);
    }

    #[inline]
    fn contains(&self, v: u8) -> bool {
        self.0[usize::from(v >> 6)] & (1 << (v & 63)) != 0
    }

    fn and(self, o: Bits) -> Bits {
        Bits(std::array::from_fn(|i| self.0[i] & o.0[i]))
    }

    fn not(self) -> Bits {
        Bits(self.0.map(|w| !w))
    }

    fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    fn iter(self) -> impl Iterator<Item = u8> {
        (0..=255u8).filter(move |&v| self.contains(v))
    }
}

/// Sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ranges<T>(Box<[(T, T)]>);

impl<T: Copy + Ord + Successor> Ranges<T> {
    fn new(mut v: Vec<(T, T)>) -> Ranges<T> {
        v.sort_unstable();
        let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if lo <= last.1 || last.1.succ() == Some(lo) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Ranges(out.into_boxed_slice())
    }

    #[inline]
    fn contains(&self, v: T) -> bool {
        let i = self.0.partition_point(|r| r.1 < v);
        self.0.get(i).is_some_and(|r| r.0 <= v)
    }
}

trait Successor: Sized {
    fn succ(self) -> Option<Self>;
}

macro_rules! successor {
    ($($t:ty),*) => {$(impl Successor for $t {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    })*};
}
successor!(u16, u32, u128);

/// Interface names: exact, or a prefix (`"veth*"`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct IfNames(Box<[(Box<str>, bool)]>);

impl IfNames {
    #[inline]
    fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, prefix)| if *prefix { name.starts_with(&**n) } else { name == &**n })
    }
}

/// Which transport headers a port match reads.
mod ports {
    pub(super) const TCP: u8 = 1;
    pub(super) const UDP: u8 = 2;
    pub(super) const UDPLITE: u8 = 4;
    pub(super) const SCTP: u8 = 8;
}

/// `ct state` bits.
fn state_bit(s: CtState) -> u8 {
    match s {
        CtState::New => 1,
        CtState::Established => 2,
        CtState::Related => 4,
        CtState::Invalid => 8,
        CtState::Untracked => 16,
    }
}

/// A compiled match. Protocol-specific tests fail on packets of another protocol or family,
/// negated or not; `neg` inverts only the value test.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    Iif { neg: bool, names: IfNames },
    Oif { neg: bool, names: IfNames },
    Family { neg: bool, family: Family },
    L4Proto { neg: bool, set: Bits },
    Addr4 { dst: bool, neg: bool, set: Ranges<u32> },
    Addr6 { dst: bool, neg: bool, set: Ranges<u128> },
    Port { dst: bool, neg: bool, protos: u8, set: Ranges<u16> },
    Icmp { v6: bool, neg: bool, types: Bits },
    CtState { neg: bool, mask: u8 },
}

impl Test {
    #[inline]
    fn matches(&self, meta: &Meta<'_>, pkt: &Packet, ct: CtState) -> bool {
        match self {
            Test::Iif { neg, names } => names.contains(meta.iif) != *neg,
            Test::Oif { neg, names } => names.contains(meta.oif) != *neg,
            Test::Family { neg, family } => (pkt.family == *family) != *neg,
            Test::L4Proto { neg, set } => set.contains(pkt.proto) != *neg,
            Test::Addr4 { dst, neg, set } => {
                if pkt.family != Family::V4 {
                    return false;
                }
                let a = if *dst { &pkt.dst } else { &pkt.src };
                set.contains(u32::from_be_bytes([a[0], a[1], a[2], a[3]])) != *neg
            }
            Test::Addr6 { dst, neg, set } => {
                if pkt.family != Family::V6 {
                    return false;
                }
                let a = if *dst { pkt.dst } else { pkt.src };
                set.contains(u128::from_be_bytes(a)) != *neg
            }
            Test::Port { dst, neg, protos, set } => {
                let (sport, dport) = match pkt.l4 {
                    L4::Tcp(t) if protos & ports::TCP != 0 => (t.sport, t.dport),
                    L4::Udp(u) if protos & ports::UDP != 0 => (u.sport, u.dport),
                    L4::UdpLite(u) if protos & ports::UDPLITE != 0 => (u.sport, u.dport),
                    L4::Sctp(s) if protos & ports::SCTP != 0 => (s.sport, s.dport),
                    _ => return false,
                };
                set.contains(if *dst { dport } else { sport }) != *neg
            }
            Test::Icmp { v6, neg, types } => {
                let ty = match (pkt.family, pkt.l4) {
                    (Family::V4, L4::Icmp(i)) if !v6 => i.ty,
                    (Family::V6, L4::Icmpv6(i)) if *v6 => i.ty,
                    _ => return false,
                };
                types.contains(ty) != *neg
            }
            Test::CtState { neg, mask } => (mask & state_bit(ct) != 0) != *neg,
        }
    }
}

impl RuleSet {
    /// Parses and compiles `text`; `file` names it in errors. Policies named by `ct timeout set`
    /// are acquired from `registry` (one use per rule naming them), released when the rule set is
    /// dropped or when compiling fails.
    pub fn parse(file: &str, text: &str, registry: &Registry) -> Result<RuleSet, RuleError> {
        parser::parse(file, text, registry)
    }

    /// Reads and compiles the file at `path`.
    pub fn load(path: &Path, registry: &Registry) -> Result<RuleSet, RuleError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RuleError::Read { file: file.clone(), source })?;
        RuleSet::parse(&file, &text, registry)
    }

    /// The rule set without rules: every hook accepts.
    pub fn empty() -> RuleSet {
        RuleSet { chains: std::array::from_fn(|_| Chain::accept_all()), policies: Vec::new() }
    }

    /// Runs `hook`'s chain on a packet in connection-tracking state `ct` (ignored in
    /// `prerouting`, whose rules cannot test it). Does not allocate or lock; counters are relaxed
    /// atomic adds.
    pub fn eval(&self, hook: Hook, meta: &Meta<'_>, pkt: &Packet, ct: CtState) -> Decision {
        let chain = &self.chains[hook as usize];
        let mut d = Decision { verdict: chain.policy, notrack: false, timeout: None, mark: None };
        'rules: for rule in chain.rules.iter() {
            for item in rule.items.iter() {
                match item {
                    Item::Test(t) => {
                        if !t.matches(meta, pkt, ct) {
                            continue 'rules;
                        }
                    }
                    Item::Counter => {
                        rule.packets.fetch_add(1, Ordering::Relaxed);
                        rule.bytes.fetch_add(pkt.ip_len() as u64, Ordering::Relaxed);
                    }
                    Item::Notrack => d.notrack = true,
                    Item::Timeout(p) => d.timeout = Some(p.clone()),
                    Item::Mark(m) => d.mark = Some(*m),
                    Item::Verdict(a) => {
                        d.verdict = a.resolve(pkt);
                        return d;
                    }
                }
            }
        }
        d
    }

    /// The counters of the rules that have a `counter` statement, by hook then rule order.
    pub fn counters(&self) -> Vec<RuleCounter> {
        let mut out = Vec::new();
        for (hook, chain) in Hook::ALL.into_iter().zip(&self.chains) {
            for (index, r) in chain.rules.iter().enumerate().filter(|(_, r)| r.has_counter) {
                out.push(RuleCounter {
                    hook,
                    index,
                    line: r.line,
                    text: r.text.to_string(),
                    packets: r.packets.load(Ordering::Relaxed),
                    bytes: r.bytes.load(Ordering::Relaxed),
                });
            }
        }
        out
    }

    /// The distinct policies the rules hold, in order of first mention. Each rule naming a policy
    /// holds one use of it until the rule set is dropped.
    pub fn policies(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.iter()
    }

    /// The verdict of a packet no rule of `hook` decides.
    pub fn policy(&self, hook: Hook) -> Verdict {
        self.chains[hook as usize].policy
    }

    /// Number of rules in `hook`'s chain.
    pub fn rule_count(&self, hook: Hook) -> usize {
        self.chains[hook as usize].rules.len()
    }
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet::empty()
    }
}

//! Interfaces, routes and the longest-prefix match.
//!
//! # The LPM structure
//! Per family, routes are grouped by prefix length, longest first; each group is an array of
//! `(prefix, route)` sorted by prefix. A lookup masks the destination once per group and binary
//! searches it: at most (distinct lengths) × log2(group size) comparisons of one `u128` each, no
//! allocation, no pointers to chase. Real tables have few distinct lengths (a 10k-route table
//! typically has 10–20), so that is a few hundred comparisons on contiguous memory, and building
//! it is a sort. A binary trie would need up to 32/128 dependent loads per lookup and a node per
//! prefix; a multibit trie (DIR-24-8, poptrie) would be faster for 1M routes but is not worth its
//! memory and code at ≤ 10k. Both families share the code: IPv4 addresses sit in the top 32 bits.

use std::fmt;
use std::net::IpAddr;

use proto::Family;

/// A network interface as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// The datapath's index for this port; [`crate::route::Router`] requires `id` to equal the
    /// interface's position in the list it is given.
    pub id: usize,
    pub name: String,
    pub mac: [u8; 6],
    /// The largest IP datagram the link carries.
    pub mtu: u16,
    /// Our addresses with their prefix lengths; each also makes a connected route.
    pub addrs: Vec<(IpAddr, u8)>,
}

impl Iface {
    /// Our address of `family` to use as a source towards `peer`: one whose prefix contains
    /// `peer`, else (IPv6) a link-local one, else the first of the family.
    pub fn source_for(&self, family: Family, peer: &[u8; 16]) -> Option<[u8; 16]> {
        let mut first = None;
        let mut link_local = None;
        for &(a, len) in &self.addrs {
            let (f, b) = split(a);
            if f != family {
                continue;
            }
            if key(f, &b) & mask(len.min(max_len(f))) == key(f, peer) & mask(len.min(max_len(f))) {
                return Some(b);
            }
            if f == Family::V6 && b[0] == 0xfe && b[1] & 0xc0 == 0x80 {
                link_local.get_or_insert(b);
            }
            first.get_or_insert(b);
        }
        link_local.or(first)
    }

    /// Whether `addr` is one of this interface's addresses.
    pub fn owns(&self, family: Family, addr: &[u8; 16]) -> bool {
        self.addrs.iter().any(|&(a, _)| split(a) == (family, *addr))
    }
}

/// Where a packet goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// The outgoing interface.
    pub iface: usize,
    /// The address to resolve on that link: the gateway, or the destination itself.
    pub next_hop: [u8; 16],
}

/// A route from the configuration: `PREFIX|default [via GATEWAY] [dev NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub family: Family,
    /// The network, IPv4 in the first four bytes.
    pub prefix: [u8; 16],
    pub len: u8,
    pub via: Option<[u8; 16]>,
    pub dev: Option<String>,
}

/// Why a route line does not parse: the 1-based column of the offending word, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSyntaxError {
    pub column: usize,
    pub why: &'static str,
}

impl fmt::Display for RouteSyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.why)
    }
}

impl std::error::Error for RouteSyntaxError {}

/// Why a set of routes cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutesError {
    /// A line of the configuration text (1-based) does not parse.
    Syntax { line: usize, error: RouteSyntaxError },
    /// Route number `route` (0-based, in the order given) names an interface that does not exist.
    UnknownDevice { route: usize, name: String },
    /// Route number `route` has a gateway that no connected route reaches (Linux: "Nexthop has
    /// invalid gateway").
    GatewayUnreachable { route: usize },
    /// Route number `route` duplicates an earlier route (Linux: "File exists").
    Exists { route: usize },
    /// An interface address has a prefix length longer than its family's.
    BadPrefixLength { iface: usize },
}

impl fmt::Display for RoutesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutesError::Syntax { line, error } => write!(f, "line {line}, {error}"),
            RoutesError::UnknownDevice { route, name } => write!(f, "route {route}: no interface {name:?}"),
            RoutesError::GatewayUnreachable { route } => {
                write!(f, "route {route}: the gateway is not on a connected network")
            }
            RoutesError::Exists { route } => write!(f, "route {route}: a route for this prefix exists"),
            RoutesError::BadPrefixLength { iface } => write!(f, "interface {iface}: prefix length too long"),
        }
    }
}

impl std::error::Error for RoutesError {}

/// Parses one route line. Blank lines and `#` comments give `Ok(None)`.
///
/// ```text
/// 198.19.0.0/16 via 198.18.0.254
/// default via 198.18.0.254 dev eth0
/// 2001:2::/48 dev eth1
/// 203.0.113.7 via 198.18.0.254          # a bare address is a host route
/// ```
pub fn parse_route(line: &str) -> Result<Option<StaticRoute>, RouteSyntaxError> {
    let text = line.split('#').next().unwrap_or("");
    // Words with their 1-based columns (counted in characters).
    let mut words = Vec::new();
    let mut start = None;
    for (col, (i, c)) in text.char_indices().enumerate() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some((col + 1, i)),
            (true, Some((scol, si))) => {
                words.push((scol, &text[si..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some((scol, si)) = start {
        words.push((scol, &text[si..]));
    }
    let Some(&(col0, dest)) = words.first() else { return Ok(None) };
    let err = |column, why| Err(RouteSyntaxError { column, why });

    let mut via: Option<(usize, IpAddr)> = None;
    let mut dev: Option<String> = None;
    let mut i = 1;
    while i < words.len() {
        let (col, w) = words[i];
        let Some(&(vcol, value)) = words.get(i + 1) else {
            return err(col, if w == "via" || w == "dev" { "missing value" } else { "expected `via` or `dev`" });
        };
        match w {
            "via" if via.is_some() => return err(col, "`via` given twice"),
            "via" => match value.parse::<IpAddr>() {
                Ok(a) => via = Some((vcol, a)),
                Err(_) => return err(vcol, "not an IP address"),
            },
            "dev" if dev.is_some() => return err(col, "`dev` given twice"),
            "dev" => dev = Some(value.to_string()),
            _ => return err(col, "expected `via` or `dev`"),
        }
        i += 2;
    }
    if via.is_none() && dev.is_none() {
        return err(col0, "a route needs `via GATEWAY` or `dev NAME`");
    }

    let (family, prefix, len) = if dest == "default" {
        match via {
            Some((_, a)) => (split(a).0, [0; 16], 0),
            None => return err(col0, "`default` without `via` has no family: write 0.0.0.0/0 or ::/0"),
        }
    } else {
        let (addr, len) = match dest.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (dest, None),
        };
        let Ok(addr) = addr.parse::<IpAddr>() else { return err(col0, "not an IP prefix") };
        let (family, bytes) = split(addr);
        let len = match len {
            None => max_len(family),
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max_len(family) => n,
                _ => return err(col0 + dest.find('/').map_or(0, |p| p + 1), "bad prefix length"),
            },
        };
        if key(family, &bytes) & !mask(len) != 0 {
            return err(col0, "address has bits set beyond the prefix length");
        }
        (family, bytes, len)
    };
    let via = match via {
        Some((vcol, a)) => {
            let (f, b) = split(a);
            if f != family {
                return err(vcol, "gateway of the other address family");
            }
            Some(b)
        }
        None => None,
    };
    Ok(Some(StaticRoute { family, prefix, len, via, dev }))
}

/// IP address to family and 16 bytes (IPv4 in the first four).
pub(crate) fn split(a: IpAddr) -> (Family, [u8; 16]) {
    match a {
        IpAddr::V4(v) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&v.octets());
            (Family::V4, b)
        }
        IpAddr::V6(v) => (Family::V6, v.octets()),
    }
}

/// Family and 16 bytes to an IP address.
pub(crate) fn join(family: Family, b: &[u8; 16]) -> IpAddr {
    match family {
        Family::V4 => IpAddr::from([b[0], b[1], b[2], b[3]]),
        Family::V6 => IpAddr::from(*b),
    }
}

fn max_len(f: Family) -> u8 {
    match f {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

/// The address as a left-aligned 128-bit key (IPv4 in the top 32 bits).
#[inline]
fn key(family: Family, a: &[u8; 16]) -> u128 {
    match family {
        Family::V4 => u128::from(u32::from_be_bytes([a[0], a[1], a[2], a[3]])) << 96,
        Family::V6 => u128::from_be_bytes(*a),
    }
}

#[inline]
fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        !0u128 << (128 - u32::from(len.min(128)))
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    prefix: u128,
    iface: usize,
    gateway: Option<[u8; 16]>,
}

#[derive(Debug, Clone)]
struct Group {
    mask: u128,
    /// Sorted by prefix, unique.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Default)]
struct Table {
    /// Longest prefix length first.
    groups: Vec<Group>,
}

impl Table {
    fn build(mut routes: Vec<(u8, Entry)>) -> Table {
        routes.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.prefix.cmp(&b.1.prefix)));
        let mut groups: Vec<(u8, Group)> = Vec::new();
        for (len, e) in routes {
            match groups.last_mut() {
                Some((l, g)) if *l == len => g.entries.push(e),
                _ => groups.push((len, Group { mask: mask(len), entries: vec![e] })),
            }
        }
        Table { groups: groups.into_iter().map(|(_, g)| g).collect() }
    }

    #[inline]
    fn lookup(&self, k: u128) -> Option<&Entry> {
        for g in &self.groups {
            let m = k & g.mask;
            if let Ok(i) = g.entries.binary_search_by(|e| e.prefix.cmp(&m)) {
                return Some(&g.entries[i]);
            }
        }
        None
    }

    fn len(&self) -> usize {
        self.groups.iter().map(|g| g.entries.len()).sum()
    }
}

/// The routing table: connected routes from the interfaces' prefixes plus static routes, both
/// families, and the set of our own addresses.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    v4: Table,
    v6: Table,
    /// Our addresses: (family, key, iface), sorted.
    locals: Vec<(Family, u128, usize)>,
    /// Directed broadcast addresses of the IPv4 connected networks (prefixes up to /30), sorted.
    broadcasts: Vec<u128>,
}

impl Routes {
    /// Builds the table from `ifaces` (connected routes) and `statics`.
    pub fn new(ifaces: &[Iface], statics: &[StaticRoute]) -> Result<Routes, RoutesError> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut locals = Vec::new();
        let mut broadcasts = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (pos, ifc) in ifaces.iter().enumerate() {
            for &(a, len) in &ifc.addrs {
                let (f, b) = split(a);
                if len > max_len(f) {
                    return Err(RoutesError::BadPrefixLength { iface: pos });
                }
                let k = key(f, &b);
                locals.push((f, k, ifc.id));
                let prefix = k & mask(len);
                // Two addresses in one network make one connected route (the first interface's).
                if seen.insert((f, prefix, len)) {
                    let e = Entry { prefix, iface: ifc.id, gateway: None };
                    if f == Family::V4 {
                        v4.push((len, e))
                    } else {
                        v6.push((len, e))
                    }
                }
                if f == Family::V4 && len <= 30 {
                    broadcasts.push(k | (!mask(len) & (u128::from(u32::MAX) << 96)));
                }
            }
        }
        let connected = Routes {
            v4: Table::build(v4.clone()),
            v6: Table::build(v6.clone()),
            locals: Vec::new(),
            broadcasts: Vec::new(),
        };
        for (n, r) in statics.iter().enumerate() {
            let iface = match (&r.dev, r.via) {
                (Some(name), _) => ifaces
                    .iter()
                    .find(|i| &i.name == name)
                    .map(|i| i.id)
                    .ok_or_else(|| RoutesError::UnknownDevice { route: n, name: name.clone() })?,
                (None, Some(gw)) => {
                    connected.lookup(r.family, &gw).ok_or(RoutesError::GatewayUnreachable { route: n })?.iface
                }
                (None, None) => return Err(RoutesError::GatewayUnreachable { route: n }),
            };
            let len = r.len.min(max_len(r.family));
            let prefix = key(r.family, &r.prefix) & mask(len);
            if !seen.insert((r.family, prefix, len)) {
                return Err(RoutesError::Exists { route: n });
            }
            let e = Entry { prefix, iface, gateway: r.via };
            if r.family == Family::V4 {
                v4.push((len, e))
            } else {
                v6.push((len, e))
            }
        }
        locals.sort_unstable();
        locals.dedup_by(|a, b| (a.0, a.1) == (b.0, b.1));
        broadcasts.push(u128::from(u32::MAX) << 96);
        broadcasts.sort_unstable();
        broadcasts.dedup();
        Ok(Routes { v4: Table::build(v4), v6: Table::build(v6), locals, broadcasts })
    }

    /// Parses `text` (one route a line, see [`parse_route`]) and builds the table with `ifaces`.
    pub fn parse(ifaces: &[Iface], text: &str) -> Result<Routes, RoutesError> {
        let mut statics = Vec::new();
        for (n, line) in text.lines().enumerate() {
            match parse_route(line) {
                Ok(Some(r)) => statics.push(r),
                Ok(None) => {}
                Err(error) => return Err(RoutesError::Syntax { line: n + 1, error }),
            }
        }
        Routes::new(ifaces, &statics)
    }

    /// The longest-prefix match for `dst`. Allocation-free.
    #[inline]
    pub fn lookup(&self, family: Family, dst: &[u8; 16]) -> Option<Hop> {
        let table = match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        };
        let e = table.lookup(key(family, dst))?;
        Some(Hop { iface: e.iface, next_hop: e.gateway.unwrap_or(*dst) })
    }

    /// The interface holding `addr` if it is one of our addresses.
    #[inline]
    pub fn is_local(&self, family: Family, addr: &[u8; 16]) -> Option<usize> {
        let k = key(family, addr);
        self.locals.binary_search_by(|&(f, a, _)| (f, a).cmp(&(family, k))).ok().map(|i| self.locals[i].2)
    }

    /// Whether the IPv4 `addr` is the limited broadcast or a connected network's broadcast.
    #[inline]
    pub fn is_broadcast(&self, addr: &[u8; 16]) -> bool {
        self.broadcasts.binary_search(&key(Family::V4, addr)).is_ok()
    }

    /// The number of routes (connected and static) of both families.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ifaces() -> Vec<Iface> {
        vec![
            Iface {
                id: 0,
                name: "eth0".into(),
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1500,
                addrs: vec![("198.18.0.1".parse().unwrap(), 24), ("2001:1::1".parse().unwrap(), 64)],
            },
            Iface {
                id: 1,
                name: "eth1".into(),
                mac: [2, 0, 0, 0, 1, 1],
                mtu: 1400,
                addrs: vec![
                    ("198.19.1.1".parse().unwrap(), 24),
                    ("2001:2::1".parse().unwrap(), 64),
                    ("fe80::1".parse().unwrap(), 64),
                ],
            },
        ]
    }

    fn a(s: &str) -> (Family, [u8; 16]) {
        split(s.parse().unwrap())
    }

    fn hop(r: &Routes, dst: &str) -> Option<(usize, IpAddr)> {
        let (f, d) = a(dst);
        r.lookup(f, &d).map(|h| (h.iface, join(f, &h.next_hop)))
    }

    #[test]
    fn parse_route_lines() {
        let r = parse_route("198.19.0.0/16 via 198.18.0.254").unwrap().unwrap();
        assert_eq!((r.family, r.len, r.via, r.dev), (Family::V4, 16, Some(a("198.18.0.254").1), None));
        let r = parse_route("  default via 2001:1::fe dev eth0 # comment").unwrap().unwrap();
        assert_eq!((r.family, r.len, r.dev.as_deref()), (Family::V6, 0, Some("eth0")));
        let r = parse_route("2001:2::/48 dev eth1").unwrap().unwrap();
        assert_eq!((r.family, r.len, r.via), (Family::V6, 48, None));
        assert_eq!(parse_route("203.0.113.7 via 198.18.0.254").unwrap().unwrap().len, 32);
        assert_eq!(parse_route("   # only a comment").unwrap(), None);
        assert_eq!(parse_route("").unwrap(), None);
    }

    #[test]
    fn parse_route_errors_point_at_the_word() {
        let e = |l| parse_route(l).unwrap_err();
        assert_eq!(e("198.19.0.0/16 via 198.18.0"), RouteSyntaxError { column: 19, why: "not an IP address" });
        assert_eq!(e("198.19.0.0/33 via 198.18.0.1").column, 12);
        assert_eq!(e("198.19.0.1/16 via 198.18.0.1").why, "address has bits set beyond the prefix length");
        assert_eq!(e("198.19.0.0/16").why, "a route needs `via GATEWAY` or `dev NAME`");
        assert_eq!(e("198.19.0.0/16 via").column, 15);
        assert_eq!(e("198.19.0.0/16 gw 1.2.3.4").column, 15);
        assert_eq!(e("198.19.0.0/16 via 2001::1").column, 19);
        assert_eq!(e("default dev eth0").column, 1);
        assert_eq!(e("x/8 dev eth0").why, "not an IP prefix");
        assert_eq!(e("10.0.0.0/8 via 1.1.1.1 via 1.1.1.2").column, 24);
    }

    #[test]
    fn longest_prefix_wins() {
        let text = "198.19.0.0/16 via 198.18.0.254\n\
                    default via 198.18.0.253\n\
                    198.19.2.0/24 via 198.19.1.2\n\
                    2001:3::/48 via 2001:2::2\n\
                    2001:3:0:1::/64 dev eth0\n\
                    default via fe80::2 dev eth1\n";
        let r = Routes::parse(&ifaces(), text).unwrap();
        assert_eq!(r.len(), 5 + 6);
        assert_eq!(hop(&r, "198.18.0.7"), Some((0, "198.18.0.7".parse().unwrap())));
        assert_eq!(hop(&r, "198.19.1.9"), Some((1, "198.19.1.9".parse().unwrap())));
        assert_eq!(hop(&r, "198.19.2.9"), Some((1, "198.19.1.2".parse().unwrap())));
        assert_eq!(hop(&r, "198.19.3.9"), Some((0, "198.18.0.254".parse().unwrap())));
        assert_eq!(hop(&r, "8.8.8.8"), Some((0, "198.18.0.253".parse().unwrap())));
        assert_eq!(hop(&r, "2001:3::5"), Some((1, "2001:2::2".parse().unwrap())));
        assert_eq!(hop(&r, "2001:3:0:1::5"), Some((0, "2001:3:0:1::5".parse().unwrap())));
        assert_eq!(hop(&r, "2001:4::5"), Some((1, "fe80::2".parse().unwrap())));
        let bare = Routes::new(&ifaces(), &[]).unwrap();
        assert_eq!(hop(&bare, "8.8.8.8"), None);
        assert_eq!(hop(&bare, "2001:4::5"), None);
    }

    #[test]
    fn local_and_broadcast() {
        let r = Routes::new(&ifaces(), &[]).unwrap();
        let (f, x) = a("198.19.1.1");
        assert_eq!(r.is_local(f, &x), Some(1));
        let (f, x) = a("2001:1::1");
        assert_eq!(r.is_local(f, &x), Some(0));
        let (f, x) = a("198.19.1.2");
        assert_eq!(r.is_local(f, &x), None);
        // IPv4 ::c613:101 is not 198.19.1.1.
        let (_, x) = a("::c613:101");
        assert_eq!(r.is_local(Family::V6, &x), None);
        assert!(r.is_broadcast(&a("198.19.1.255").1));
        assert!(r.is_broadcast(&a("255.255.255.255").1));
        assert!(!r.is_broadcast(&a("198.19.1.254").1));
    }

    #[test]
    fn build_errors() {
        let e = Routes::parse(&ifaces(), "10.0.0.0/8 via 192.0.2.1").unwrap_err();
        assert_eq!(e, RoutesError::GatewayUnreachable { route: 0 });
        let e = Routes::parse(&ifaces(), "10.0.0.0/8 dev eth9").unwrap_err();
        assert!(matches!(e, RoutesError::UnknownDevice { route: 0, .. }));
        let e = Routes::parse(&ifaces(), "198.18.0.0/24 dev eth1").unwrap_err();
        assert_eq!(e, RoutesError::Exists { route: 0 });
        let e = Routes::parse(&ifaces(), "\n10.0.0.0/8 vía 1.2.3.4").unwrap_err();
        assert!(matches!(e, RoutesError::Syntax { line: 2, error: RouteSyntaxError { column: 12, .. } }));
    }

    #[test]
    fn source_address_choice() {
        let i = &ifaces()[1];
        assert_eq!(i.source_for(Family::V4, &a("198.19.1.77").1), Some(a("198.19.1.1").1));
        assert_eq!(i.source_for(Family::V6, &a("2001:2::9").1), Some(a("2001:2::1").1));
        assert_eq!(i.source_for(Family::V6, &a("2001:9::9").1), Some(a("fe80::1").1));
        assert_eq!(i.source_for(Family::V4, &a("10.0.0.1").1), Some(a("198.19.1.1").1));
    }

    #[test]
    fn many_routes_match_a_linear_scan() {
        // 10k pseudo-random prefixes against the obvious longest-match scan.
        let mut statics = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut seen = std::collections::HashSet::new();
        while statics.len() < 10_000 {
            let len = 8 + (next() % 25) as u8;
            let p = (next() as u32) & (!0u32 << (32 - u32::from(len)));
            if p >> 24 == 198 || !seen.insert((p, len)) {
                continue;
            }
            let mut b = [0; 16];
            b[..4].copy_from_slice(&p.to_be_bytes());
            statics.push(StaticRoute { family: Family::V4, prefix: b, len, via: Some(a("198.18.0.254").1), dev: None });
        }
        let r = Routes::new(&ifaces(), &statics).unwrap();
        for _ in 0..2000 {
            let d = next() as u32;
            let best = statics
                .iter()
                .filter(|s| {
                    let m = !0u32 << (32 - u32::from(s.len));
                    d & m == u32::from_be_bytes([s.prefix[0], s.prefix[1], s.prefix[2], s.prefix[3]])
                })
                .map(|s| s.len)
                .max();
            if d >> 24 == 198 {
                continue;
            }
            let mut b = [0; 16];
            b[..4].copy_from_slice(&d.to_be_bytes());
            let k = key(Family::V4, &b);
            assert_eq!(r.v4.lookup(k).map(|e| e.prefix), best.map(|len| k & mask(len)), "{d:#x}");
            assert_eq!(r.lookup(Family::V4, &b).is_some(), best.is_some());
        }
    }
}

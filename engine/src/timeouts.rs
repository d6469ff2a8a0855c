//! Timeout values: per-protocol defaults, and the slot layout shared with named policies.
//!
//! Values are seconds in `AtomicU32` slots so that the control plane can change them in place
//! (cttimeout's `DEFAULT_SET`, a policy `REPLACE`) while workers read them per packet with a relaxed
//! load: a change is seen at each connection's next packet, never retroactively, as in Linux.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use proto::Errno;

use crate::conntrack::l4::Proto;
use crate::conntrack::Conntrack;

/// Slots per protocol: enough for TCP's 12 (10 states + RETRANS + UNACK).
pub const MAX_SLOTS: usize = 12;

/// One protocol's timeout values, in seconds, indexed by the tracker's timeout slot.
#[derive(Debug)]
pub struct Values {
    slots: [AtomicU32; MAX_SLOTS],
}

impl Values {
    /// Values initialised from `init` (missing slots are zero).
    pub fn new(init: &[u32]) -> Values {
        let v = Values { slots: std::array::from_fn(|_| AtomicU32::new(0)) };
        v.set_all(init);
        v
    }

    /// The value of slot `i`, in seconds.
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        self.slots[i].load(Ordering::Relaxed)
    }

    /// Sets slot `i`.
    pub fn set(&self, i: usize, secs: u32) {
        self.slots[i].store(secs, Ordering::Relaxed);
    }

    /// Sets the first `init.len()` slots.
    pub fn set_all(&self, init: &[u32]) {
        for (i, &s) in init.iter().enumerate() {
            self.set(i, s);
        }
    }

    /// A copy of the first `n` slots.
    pub fn snapshot(&self, n: usize) -> Vec<u32> {
        (0..n).map(|i| self.get(i)).collect()
    }
}

/// The per-protocol defaults used by connections without a policy (the kernel's per-netns
/// `nf_*_pernet` timeouts, shown in `/proc/sys/net/netfilter/`).
#[derive(Debug)]
pub struct Defaults {
    by_proto: [Values; Proto::COUNT],
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { by_proto: std::array::from_fn(|i| Values::new(Proto::ALL[i].default_timeouts())) }
    }
}

impl Defaults {
    /// The values of protocol `p`. UDP-Lite shares UDP's, as in the kernel (one `nf_udp_net`
    /// for both): a default-set of either changes both.
    #[inline]
    pub fn of(&self, p: Proto) -> &Values {
        let p = if p == Proto::UdpLite { Proto::Udp } else { p };
        &self.by_proto[p as usize]
    }
}

/// Number of values cttimeout keeps and reports for protocol `p`: the tracker's slots, plus any
/// slot the kernel still carries on the wire without using it (SCTP's ninth, `HEARTBEAT_ACKED`:
/// default 0, settable, reported, ignored by the tracker).
pub fn cttimeout_slots(p: Proto) -> usize {
    proto::cttimeout::data_layout(p.number()).map_or(p.default_timeouts().len(), |l| usize::from(l.emitted))
}

/// HZ of the kernel whose cttimeout we mirror: values travel as seconds but are stored as
/// `seconds * HZ` in a `u32`, so very large values wrap, and replies report the wrapped value.
const HZ: u32 = 250;

/// Seconds as the kernel keeps them: `secs * HZ` wrapped to 32 bits, read back as whole seconds.
pub fn kernel_secs(secs: u32) -> u32 {
    secs.wrapping_mul(HZ) / HZ
}

/// A named timeout policy (cttimeout object): a name, the protocols it applies to, its values and
/// its control-plane use count.
///
/// Connections hold an `Arc<Policy>` and read `values` at each packet, so a replace (which writes
/// the values in place) is seen by every connection using the policy at its next packet.
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    /// The L3 protocol number as cttimeout carries it (`AF_INET` 2, `AF_INET6` 10); the kernel
    /// stores whatever it is given.
    pub l3num: u16,
    pub proto: Proto,
    pub values: Values,
    /// 1 for the registry plus 1 per rule naming the policy: `CTA_TIMEOUT_USE`, and what makes a
    /// delete answer `EBUSY`. Connections are not counted (they are detached on delete).
    uses: AtomicU32,
    /// Set when the policy is deleted. A connection that still holds it (one whose packet was
    /// accepted under the last rule set naming it, and confirmed after the delete detached the
    /// others) uses the defaults, as a detached one does.
    deleted: AtomicBool,
}

impl Policy {
    /// The control-plane use count (`CTA_TIMEOUT_USE`).
    pub fn uses(&self) -> u32 {
        self.uses.load(Ordering::Acquire)
    }

    /// Whether the policy was deleted (connections holding it use the defaults).
    #[inline]
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Relaxed)
    }

    /// Number of timeout values of this policy's protocol, as cttimeout reports them.
    pub fn slots(&self) -> usize {
        cttimeout_slots(self.proto)
    }
}

/// A rule's reference to a policy: holds one use, released when dropped (a rule set replaced or
/// dropped releases its policies).
#[derive(Debug)]
pub struct PolicyRef(Arc<Policy>);

impl PolicyRef {
    /// The policy.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.0
    }
}

impl Clone for PolicyRef {
    fn clone(&self) -> Self {
        self.0.uses.fetch_add(1, Ordering::AcqRel);
        PolicyRef(self.0.clone())
    }
}

impl Drop for PolicyRef {
    fn drop(&mut self) {
        self.0.uses.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What to do when `NEW` names an existing policy (`NLM_F_EXCL`, `NLM_F_REPLACE`, neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExisting {
    /// Neither flag: `EBUSY`.
    Busy,
    /// `NLM_F_EXCL`: `EEXIST`.
    Fail,
    /// `NLM_F_REPLACE`: update in place (same l3/l4, else `EINVAL`).
    Replace,
}

/// Longest policy name, NUL included (`CTNL_TIMEOUT_NAME_MAX`).
pub const NAME_MAX: usize = 32;

/// The named policies: read lock-free (a snapshot through arc-swap), written under one lock, with
/// the semantics of the kernel's `nfnetlink_cttimeout.c`. The per-protocol defaults are the table's
/// ([`Conntrack::defaults`]), as the kernel's are per network namespace.
#[derive(Default)]
pub struct Registry {
    policies: ArcSwap<Vec<Arc<Policy>>>,
    write: Mutex<()>,
}

/// `values` of protocol `p` rebuilt as the kernel's `nlattr_to_obj` does: every slot first set to
/// the current default, then the given attributes (id = slot + 1) applied; unknown ids ignored.
fn parse_values(p: Proto, defaults: &Defaults, attrs: &[(u16, u32)], into: &Values) {
    let n = cttimeout_slots(p);
    let d = defaults.of(p);
    let mut v: Vec<u32> = (0..n).map(|i| d.get(i)).collect();
    for &(id, secs) in attrs {
        if let Some(slot) = usize::from(id).checked_sub(1).filter(|&s| s < n) {
            v[slot] = kernel_secs(secs);
        }
    }
    into.set_all(&v);
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The policies, in creation order (a lock-free snapshot).
    pub fn list(&self) -> Arc<Vec<Arc<Policy>>> {
        self.policies.load_full()
    }

    /// The policy named `name`, if any (lock-free).
    pub fn find(&self, name: &str) -> Option<Arc<Policy>> {
        self.policies.load().iter().find(|p| p.name == name).cloned()
    }

    /// Takes a rule's reference to `name` (`ctnl_timeout_find_get`).
    pub fn acquire(&self, name: &str) -> Option<PolicyRef> {
        let _w = self.write.lock();
        let p = self.find(name)?;
        p.uses.fetch_add(1, Ordering::AcqRel);
        Some(PolicyRef(p))
    }

    /// `IPCTNL_MSG_TIMEOUT_NEW`. `attrs` are (attribute id, seconds) from `CTA_TIMEOUT_DATA`.
    pub fn create(
        &self,
        ct: &Conntrack,
        name: &str,
        l3num: u16,
        l4num: u8,
        attrs: &[(u16, u32)],
        on_existing: OnExisting,
    ) -> Result<(), Errno> {
        let _w = self.write.lock();
        if let Some(p) = self.find(name) {
            return match on_existing {
                OnExisting::Fail => Err(Errno::EEXIST),
                OnExisting::Busy => Err(Errno::EBUSY),
                OnExisting::Replace if p.l3num != l3num || p.proto.number() != l4num => Err(Errno::EINVAL),
                OnExisting::Replace => {
                    parse_values(p.proto, &ct.defaults, attrs, &p.values);
                    Ok(())
                }
            };
        }
        let proto = Proto::supported(l4num).ok_or(Errno::EOPNOTSUPP)?;
        let values = Values::new(&[]);
        parse_values(proto, &ct.defaults, attrs, &values);
        let policy = Arc::new(Policy {
            name: name.to_owned(),
            l3num,
            proto,
            values,
            uses: AtomicU32::new(1),
            deleted: AtomicBool::new(false),
        });
        let mut next = Vec::clone(&self.policies.load());
        next.push(policy);
        self.policies.store(Arc::new(next));
        Ok(())
    }

    /// Removes `p` if only the registry uses it (`ctnl_timeout_try_del`); detaches it from the
    /// connections still using it (`nf_ct_untimeout`). Caller holds the write lock.
    fn try_delete(&self, ct: &Conntrack, p: &Arc<Policy>) -> Result<(), Errno> {
        if p.uses.compare_exchange(1, 0, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(Errno::EBUSY);
        }
        p.deleted.store(true, Ordering::Relaxed);
        let next: Vec<_> = self.policies.load().iter().filter(|q| !Arc::ptr_eq(q, p)).cloned().collect();
        self.policies.store(Arc::new(next));
        ct.untimeout(p);
        Ok(())
    }

    /// `IPCTNL_MSG_TIMEOUT_DELETE` with a name: `ENOENT` if absent, `EBUSY` if a rule uses it.
    pub fn delete(&self, ct: &Conntrack, name: &str) -> Result<(), Errno> {
        let _w = self.write.lock();
        let p = self.find(name).ok_or(Errno::ENOENT)?;
        self.try_delete(ct, &p)
    }

    /// `IPCTNL_MSG_TIMEOUT_DELETE` without a name: deletes every unused policy, silently keeps
    /// the others.
    pub fn flush(&self, ct: &Conntrack) {
        let _w = self.write.lock();
        for p in self.list().iter() {
            let _ = self.try_delete(ct, p);
        }
    }

    /// `IPCTNL_MSG_TIMEOUT_DEFAULT_SET`: changes the defaults of `l4num` (values not given are
    /// kept, as the kernel re-seeds them from themselves).
    pub fn default_set(&self, ct: &Conntrack, l4num: u8, attrs: &[(u16, u32)]) -> Result<(), Errno> {
        let _w = self.write.lock();
        let proto = Proto::supported(l4num).ok_or(Errno::EOPNOTSUPP)?;
        parse_values(proto, &ct.defaults, attrs, ct.defaults.of(proto));
        Ok(())
    }

    /// `IPCTNL_MSG_TIMEOUT_DEFAULT_GET`: the defaults of `l4num`, in seconds per slot.
    pub fn default_get(&self, ct: &Conntrack, l4num: u8) -> Result<Vec<u32>, Errno> {
        let proto = Proto::supported(l4num).ok_or(Errno::EOPNOTSUPP)?;
        Ok(ct.defaults.of(proto).snapshot(cttimeout_slots(proto)))
    }
}

/// A policy written as `nfct timeout add` takes it: `NAME inet|inet6 PROTO [STATE SECONDS]...`,
/// e.g. `dns inet udp unreplied 2 replied 5` (state names as `nfct timeout list` prints them,
/// any case; PROTO one of tcp, udp, udplite, icmp, icmpv6, sctp, gre, generic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub name: String,
    pub l3num: u16,
    pub l4num: u8,
    /// (cttimeout data attribute id, seconds).
    pub attrs: Vec<(u16, u32)>,
}

impl Declaration {
    /// Parses the words after `nfct timeout add`.
    pub fn parse(text: &str) -> Result<Declaration, String> {
        let mut words = text.split_whitespace();
        let name = words.next().ok_or("a timeout policy needs a name")?;
        if name.len() >= NAME_MAX {
            return Err(format!("policy name `{name}` is longer than {} bytes", NAME_MAX - 1));
        }
        let l3num = match words.next() {
            Some("inet") => 2,
            Some("inet6") => 10,
            Some(other) => return Err(format!("unknown family `{other}` (inet or inet6)")),
            None => return Err(format!("policy `{name}` needs a family (inet or inet6)")),
        };
        let proto = match words.next() {
            Some("tcp") => Proto::Tcp,
            Some("udp") => Proto::Udp,
            Some("udplite") => Proto::UdpLite,
            Some("icmp") => Proto::Icmp,
            Some("icmpv6") => Proto::Icmpv6,
            Some("sctp") => Proto::Sctp,
            Some("gre") => Proto::Gre,
            Some("generic") => Proto::Generic,
            Some(other) => return Err(format!("unknown protocol `{other}`")),
            None => return Err(format!("policy `{name}` needs a protocol")),
        };
        let names = proto.timeout_names();
        let mut attrs = Vec::new();
        while let Some(state) = words.next() {
            let slot = names.iter().position(|n| n.eq_ignore_ascii_case(state)).ok_or_else(|| {
                format!(
                    "`{state}` is not a timeout of {} (one of {})",
                    Proto::name_of(proto.number()),
                    names.join(", ").to_lowercase()
                )
            })?;
            let value = words.next().ok_or_else(|| format!("`{state}` needs a value in seconds"))?;
            let secs = value.parse::<u32>().map_err(|_| format!("`{value}` is not a number of seconds"))?;
            attrs.push((slot as u16 + 1, secs));
        }
        Ok(Declaration { name: name.to_owned(), l3num, l4num: proto.number(), attrs })
    }

    /// Creates the policy in `registry` (an existing name is refused, as `nfct timeout add`).
    pub fn create(&self, registry: &Registry, ct: &Conntrack) -> Result<(), Errno> {
        registry.create(ct, &self.name, self.l3num, self.l4num, &self.attrs, OnExisting::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{Config, DEFAULT_MAX};

    fn ct() -> Conntrack {
        Conntrack::new(DEFAULT_MAX, Config::default())
    }

    #[test]
    fn create_copies_defaults_then_given_values() {
        let (ct, r) = (ct(), Registry::new());
        r.create(&ct, "short", 2, 17, &[(1, 2)], OnExisting::Busy).unwrap();
        let p = r.find("short").unwrap();
        assert_eq!(p.values.snapshot(2), [2, 120]);
        assert_eq!(p.uses(), 1);
        // A later default-set does not change an existing policy.
        r.default_set(&ct, 17, &[(2, 99)]).unwrap();
        assert_eq!(p.values.snapshot(2), [2, 120]);
        assert_eq!(r.default_get(&ct, 17).unwrap(), [30, 99]);
    }

    #[test]
    fn existing_names_follow_the_flags() {
        let (ct, r) = (ct(), Registry::new());
        r.create(&ct, "t", 2, 6, &[(3, 100)], OnExisting::Busy).unwrap();
        assert_eq!(r.create(&ct, "t", 2, 6, &[], OnExisting::Busy), Err(Errno::EBUSY));
        assert_eq!(r.create(&ct, "t", 2, 6, &[], OnExisting::Fail), Err(Errno::EEXIST));
        assert_eq!(r.create(&ct, "t", 10, 6, &[], OnExisting::Replace), Err(Errno::EINVAL));
        assert_eq!(r.create(&ct, "t", 2, 17, &[], OnExisting::Replace), Err(Errno::EINVAL));
        let before = r.find("t").unwrap();
        // Replace updates in place and re-seeds unspecified values from the defaults.
        r.create(&ct, "t", 2, 6, &[(1, 7)], OnExisting::Replace).unwrap();
        let after = r.find("t").unwrap();
        assert!(Arc::ptr_eq(&before, &after));
        assert_eq!((after.values.get(0), after.values.get(2)), (7, 432000));
        assert_eq!(r.create(&ct, "u", 2, 99, &[], OnExisting::Busy), Err(Errno::EOPNOTSUPP));
        r.create(&ct, "g", 2, 255, &[(1, 5)], OnExisting::Busy).unwrap();
    }

    #[test]
    fn rules_hold_uses_and_block_delete_until_released() {
        let (ct, r) = (ct(), Registry::new());
        r.create(&ct, "a", 2, 17, &[], OnExisting::Busy).unwrap();
        r.create(&ct, "b", 2, 17, &[], OnExisting::Busy).unwrap();
        let rule = r.acquire("a").unwrap();
        let rule2 = rule.clone();
        assert_eq!(r.find("a").unwrap().uses(), 3);
        assert_eq!(r.delete(&ct, "a"), Err(Errno::EBUSY));
        r.flush(&ct);
        assert_eq!(r.list().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a"]);
        drop(rule);
        drop(rule2);
        assert_eq!(r.find("a").unwrap().uses(), 1);
        r.delete(&ct, "a").unwrap();
        assert_eq!(r.delete(&ct, "a"), Err(Errno::ENOENT));
        assert!(r.list().is_empty());
    }

    #[test]
    fn declarations_read_nfct_syntax() {
        let d = Declaration::parse("dns inet udp unreplied 2 REPLIED 5").unwrap();
        assert_eq!(d, Declaration { name: "dns".into(), l3num: 2, l4num: 17, attrs: vec![(1, 2), (2, 5)] });
        let d = Declaration::parse("web inet6 tcp established 600 unacknowledged 30").unwrap();
        assert_eq!((d.l3num, d.l4num, d.attrs), (10, 6, vec![(3, 600), (11, 30)]));
        assert!(Declaration::parse("x inet udp established 5").unwrap_err().contains("not a timeout of udp"));
        assert!(Declaration::parse("x ipx udp").is_err());
        assert!(Declaration::parse("x inet udp unreplied").is_err());
        assert!(Declaration::parse(&"n".repeat(32)).is_err());
        let (ct, r) = (ct(), Registry::new());
        Declaration::parse("g inet generic timeout 9").unwrap().create(&r, &ct).unwrap();
        assert_eq!(r.find("g").unwrap().values.get(0), 9);
    }

    #[test]
    fn huge_values_wrap_as_the_kernels_jiffies_do() {
        assert_eq!(kernel_secs(432000), 432000);
        assert_eq!(kernel_secs(u32::MAX), u32::MAX.wrapping_mul(250) / 250);
        assert_eq!(kernel_secs(17_179_870), (17_179_870u32).wrapping_mul(250) / 250);
    }
}

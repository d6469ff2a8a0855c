//! ferrowall's engine: the decisions, with no I/O.
//!
//! * [`conntrack`]: the connection table and one tracker per L4 protocol, classifying every packet
//!   as Linux's `nf_conntrack` does (new, established, related, invalid, untracked).
//! * [`timeouts`]: per-protocol default timeouts and named timeout policies.
//! * [`defrag`]: IPv4/IPv6 reassembly ahead of tracking, as the kernel's defragmentation does.
//! * [`gso`]: GSO super-packets (segmentation offload): their description, and cutting one up
//!   where it cannot be passed on whole.
//! * [`route`]: router mode: longest-prefix routes, the ARP/NDP neighbour cache, ICMP errors and
//!   the per-packet router step.
//! * [`bridge`]: bridge mode's forwarding database (MAC learning, ageing, flooding decisions).
//! * [`ctnetlink`]: the connection table served as the kernel's ctnetlink (`conntrack -L`…).
//! * [`replay`]: a capture run through the engine, the table printed as `conntrack -L` prints it.
//!
//! Time is always an argument ([`clock::Timestamp`]); nothing here reads a clock, sleeps or opens a
//! socket (a clippy `disallowed-methods` list enforces the first two).

pub mod bridge;
pub mod clock;
pub mod conntrack;
pub mod control;
pub mod ctnetlink;
pub mod defrag;
pub mod display;
pub mod filter;
pub mod gso;
pub mod io;
pub mod replay;
pub mod route;
mod sys;
pub mod timeouts;

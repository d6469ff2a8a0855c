//! ferrowall's wire formats: bytes to typed values, no state, no I/O.
//!
//! * [`packet`] parses a frame once into a [`packet::Packet`] descriptor: L2 (Ethernet, 802.1Q),
//!   L3 (IPv4 with options and fragments, IPv6 with its extension headers), and L4 (TCP with its
//!   options, UDP, UDP-Lite, ICMP, ICMPv6 with the quoted packet of an error, SCTP with a chunk walk,
//!   GRE v0 and v1/PPTP). Any other protocol is described by its number alone.
//! * [`checksum`] computes the Internet checksum (whole, or updated incrementally) and SCTP's CRC32c.
//! * [`arp`] and [`ndp`] read and build the neighbour resolution messages a router exchanges.
//!
//! Malformed input is a [`packet::ParseError`] value, never a panic: for a firewall, malformed input
//! is the common case.

pub mod arp;
pub mod build;
pub mod checksum;
pub mod ctnetlink;
pub mod cttimeout;
pub mod errno;
pub mod ndp;
pub mod netlink;
pub mod packet;
pub mod private;

pub use errno::Errno;
pub use packet::{Family, Packet, ParseError, L4};

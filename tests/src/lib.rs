//! Cross-crate tests live in tests/; this library holds their shared harness.
//!
//! The kernel-differential harness runs short packet scripts ([`scenarios`]) twice: through a
//! real Linux conntrack in throwaway network namespaces ([`testbed`], with the only `unsafe` code
//! in [`netns`]) and through `ferrowall replay` on a pcap of the same frames ([`engine`]), then
//! compares per-packet ct states and the final `conntrack -L` tables ([`compare`]).
//! [`scenario`] ties them together; [`cmd`] runs the command-line tools and [`clock`] holds the
//! harness's wall-clock reads. [`daemon`] runs the real `ferrowall run` daemon and its clients
//! (`ferroctl`, nfct through the shim) for the end-to-end tests; [`testbed_ns`] holds the namespaces
//! and tools of the datapath end-to-end tests (router, bridge and TUN mode); [`blaster`] generates
//! the hostile traffic (SYN floods, garbage frames) of the flood tests.

pub mod blaster;
pub mod clock;
pub mod cmd;
pub mod compare;
pub mod daemon;
pub mod engine;
pub mod netns;
pub mod scenario;
pub mod scenarios;
pub mod testbed;
pub mod testbed_ns;

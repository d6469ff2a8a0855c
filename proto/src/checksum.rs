//! Internet checksum (RFC 1071) with IPv4/IPv6 pseudo-headers, and CRC32c for SCTP (RFC 3309).

use crate::packet::Family;

/// Adds `data` to a one's-complement accumulator as big-endian 32-bit words (the last one
/// zero-padded). Since 2^16 ≡ 1 modulo 0xffff, folding the 64-bit total gives the RFC 1071 sum of
/// 16-bit words, in half the additions; it runs for every packet conntrack checks.
#[inline]
fn add_words(mut wide: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        wide += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    wide + match *chunks.remainder() {
        [a, b, c] => u64::from(u32::from_be_bytes([a, b, c, 0])),
        [a, b] => u64::from(u32::from_be_bytes([a, b, 0, 0])),
        [a] => u64::from(a) << 24,
        _ => 0,
    }
}

/// A 64-bit accumulator folded to 16 bits (end-around carries kept).
#[inline]
fn fold64(wide: u64) -> u16 {
    let w = (wide & 0xffff_ffff) + (wide >> 32);
    let w = (w & 0xffff_ffff) + (w >> 32);
    let w = (w & 0xffff) + (w >> 16);
    let w = (w & 0xffff) + (w >> 16);
    w as u16
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data`: zero when `data` includes a correct checksum field.
#[inline]
pub fn internet(data: &[u8]) -> u16 {
    !fold64(add_words(0, data))
}

/// The pseudo-header's words for an L4 segment of `len` bytes of protocol `proto`.
#[inline]
fn pseudo(family: Family, src: &[u8; 16], dst: &[u8; 16], proto: u8, len: u32) -> u64 {
    let base = u64::from(proto) + u64::from(len);
    // One arm per family, so that each adds a fixed number of words (no loop, no remainder).
    match family {
        Family::V4 => add_words(add_words(base, &src[..4]), &dst[..4]),
        Family::V6 => add_words(add_words(base, src), dst),
    }
}

/// Checksum over a pseudo-header and `data[..cover]` where `data` is the whole L4 segment.
/// Returns zero when the segment's checksum field is correct.
#[inline]
pub fn l4(family: Family, src: &[u8; 16], dst: &[u8; 16], proto: u8, data: &[u8], cover: usize) -> u16 {
    let acc = pseudo(family, src, dst, proto, data.len() as u32);
    !fold64(add_words(acc, &data[..cover.min(data.len())]))
}

/// Incremental update of an Internet checksum field (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`)
/// when one 16-bit word of the covered data changes from `old` to `new`.
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!check) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// Incremental update of an Internet checksum field when a 32-bit word (an IPv4 address, a TCP
/// sequence number) changes from `old` to `new`: two [`update16`] steps.
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// CRC32c (Castagnoli) lookup table, built at compile time (reflected polynomial 0x82f63b78).
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82f6_3b78 } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Feeds `data` into a running (not inverted) CRC32c register.
fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC32c (Castagnoli), as SCTP uses it.
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

/// Whether the SCTP packet `data` (common header onwards) carries a correct CRC32c.
pub fn sctp_ok(data: &[u8]) -> bool {
    if data.len() < 12 {
        return false;
    }
    let stored = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    // The checksum field counts as zero; feed the parts around it without copying the packet.
    let mut crc = crc32c_update(!0, &data[..8]);
    crc = crc32c_update(crc, &[0; 4]);
    crc = crc32c_update(crc, &data[12..]);
    !crc == stored
}

/// Writes the CRC32c of an SCTP packet into its checksum field (for tests and generated packets).
pub fn sctp_fill(data: &mut [u8]) {
    data[8..12].fill(0);
    let c = crc32c(data);
    data[8..12].copy_from_slice(&c.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 as written: 16-bit words, one at a time.
    fn reference(data: &[u8], acc: u32) -> u16 {
        let mut acc = u64::from(acc);
        for c in data.chunks(2) {
            acc += u64::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    proptest! {
        #[test]
        fn the_wide_sum_equals_rfc_1071(data in proptest::collection::vec(any::<u8>(), 0..3000), acc: u32) {
            prop_assert_eq!(fold64(add_words(u64::from(acc), &data)), reference(&data, acc));
        }
    }

    #[test]
    fn the_wide_sum_keeps_every_carry() {
        for len in 0..40 {
            let ones = vec![0xffu8; len];
            assert_eq!(fold64(add_words(u64::from(u32::MAX), &ones)), reference(&ones, u32::MAX), "{len}");
        }
    }

    #[test]
    fn crc32c_known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn sctp_fill_then_ok() {
        let mut p = vec![0u8; 28];
        p[0] = 0x12;
        p[12] = 1;
        sctp_fill(&mut p);
        assert!(sctp_ok(&p));
        p[20] ^= 1;
        assert!(!sctp_ok(&p));
    }

    #[test]
    fn internet_checksum_of_ipv4_header() {
        // A header with a correct checksum sums to zero.
        let h = [0x45, 0, 0, 0x54, 0, 0, 0x40, 0, 0x40, 1, 0xb4, 0x3d, 198, 18, 0, 1, 198, 18, 0, 2];
        let mut c = h;
        c[10] = 0;
        c[11] = 0;
        let v = internet(&c);
        c[10..12].copy_from_slice(&v.to_be_bytes());
        assert_eq!(internet(&c), 0);
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut h = [0x45, 0, 0, 0x54, 0, 0, 0x40, 0, 0x40, 1, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2];
        let c = internet(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        // Every TTL down to 1, and an address rewrite, against a full recomputation.
        for ttl in (1..=0x40u8).rev() {
            let old = u16::from_be_bytes([h[8], h[9]]);
            h[8] = ttl - 1;
            let new = u16::from_be_bytes([h[8], h[9]]);
            let inc = update16(u16::from_be_bytes([h[10], h[11]]), old, new);
            h[10..12].copy_from_slice(&inc.to_be_bytes());
            assert_eq!(internet(&h), 0, "ttl {ttl}");
        }
        let old = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        h[12..16].copy_from_slice(&[10, 255, 255, 255]);
        let inc = update32(u16::from_be_bytes([h[10], h[11]]), old, u32::from_be_bytes([10, 255, 255, 255]));
        h[10..12].copy_from_slice(&inc.to_be_bytes());
        assert_eq!(internet(&h), 0);
    }

    proptest::proptest! {
        #[test]
        fn incremental_update_equals_recompute(
            mut h in proptest::collection::vec(proptest::prelude::any::<u8>(), 20..=20),
            at in 0usize..9,
            new: u16,
        ) {
            // Any IPv4 header (version nibble set, so the data is never all zeros) and any word but
            // the checksum field changed.
            h[0] = 0x45;
            h[10..12].fill(0);
            let c = internet(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let w = if at >= 5 { at + 1 } else { at } * 2;
            let old = u16::from_be_bytes([h[w], h[w + 1]]);
            h[w..w + 2].copy_from_slice(&new.to_be_bytes());
            let inc = update16(c, old, new);
            h[10..12].copy_from_slice(&inc.to_be_bytes());
            proptest::prop_assert_eq!(internet(&h), 0);
        }
    }
}

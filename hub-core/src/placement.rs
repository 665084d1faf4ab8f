//! Placement: the node → shard mapping.
//!
//! `cloudcontrol` decides which `cloudhub` shard's ring a downstream message
//! goes to, and a shard decides whether a connecting node belongs to it, with
//! the same function: [`shard_of`]. Both processes may be built at different
//! times, by different compilers, on different machines, so the mapping is
//! spelled out here byte by byte instead of borrowing `std`'s hasher, whose
//! algorithm and seed are unspecified.

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Returns the shard, in `0..shard_count`, that serves `node_id`.
///
/// **This function is part of the wire contract between `cloudhub` and
/// `cloudcontrol` and must never change**: a change moves nodes between shards
/// and makes processes of different versions disagree about where a node
/// lives. The golden-vector test below pins its output.
///
/// The algorithm:
///
/// 1. hash the UTF-8 bytes of `node_id` with 64-bit FNV-1a (offset basis
///    `0xcbf29ce484222325`, prime `0x100000001b3`);
/// 2. mix the hash with the 64-bit finalizer of MurmurHash3 (`fmix64`), so
///    that ids differing only in their last characters spread over all bits;
/// 3. map the 64-bit result `h` to a shard with Lemire's multiply-shift,
///    `(h as u128 * shard_count as u128) >> 64`, which uses the high bits and
///    needs no division.
///
/// A `shard_count` of 0 (no shards configured) does not panic: the function
/// returns 0, and callers must treat 0 shards as a configuration error before
/// routing anything.
pub fn shard_of(node_id: &str, shard_count: u16) -> u16 {
    let h = fmix64(fnv1a64(node_id.as_bytes()));
    let shard = (u128::from(h) * u128::from(shard_count)) >> 64;
    // `shard < shard_count <= u16::MAX`, so the conversion never fails.
    u16::try_from(shard).unwrap_or(0)
}

/// 64-bit FNV-1a of `bytes`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: u32 = 100_000;

    fn counts(shards: u16) -> Vec<u32> {
        let mut counts = vec![0u32; usize::from(shards)];
        for i in 0..NODES {
            counts[usize::from(shard_of(&format!("edge-node-{i}"), shards))] += 1;
        }
        counts
    }

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // From the FNV reference test suite (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fmix64_matches_reference_values() {
        assert_eq!(fmix64(0), 0);
        assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
    }

    #[test]
    fn golden_vector_is_pinned() {
        // Changing any of these values breaks the contract between cloudhub
        // and cloudcontrol; see the doc comment of `shard_of`.
        // Computed once and cross-checked with an independent implementation.
        let cases: [(&str, u16, u16); 8] = [
            ("edge-node-1", 8, 2),
            ("edge-node-2", 8, 2),
            ("edge-node-1", 64, 21),
            ("edge-node-42", 64, 30),
            ("", 8, 7),
            ("raspberry-pi-kitchen", 1000, 738),
            ("edge-node-1", u16::MAX, 22052),
            ("ノード", 16, 0),
        ];
        for (id, n, want) in cases {
            assert_eq!(shard_of(id, n), want, "shard_of({id:?}, {n})");
        }
    }

    #[test]
    fn zero_shards_returns_zero() {
        assert_eq!(shard_of("edge-node-1", 0), 0);
        assert_eq!(shard_of("", 0), 0);
    }

    #[test]
    fn one_shard_is_always_zero() {
        for i in 0..1000 {
            assert_eq!(shard_of(&format!("edge-node-{i}"), 1), 0);
        }
    }

    #[test]
    fn result_is_below_shard_count() {
        for n in [1u16, 2, 3, 7, 8, 64, 1000, u16::MAX] {
            for i in 0..2000 {
                assert!(shard_of(&format!("edge-node-{i}"), n) < n);
            }
        }
    }

    #[test]
    fn spread_over_2_and_8_shards_is_within_5_percent() {
        for shards in [2u16, 8] {
            let mean = f64::from(NODES) / f64::from(shards);
            for (shard, &count) in counts(shards).iter().enumerate() {
                let deviation = (f64::from(count) - mean).abs() / mean;
                assert!(
                    deviation <= 0.05,
                    "{shards} shards: shard {shard} has {count}, mean {mean}"
                );
            }
        }
    }

    #[test]
    fn spread_over_64_shards_passes_chi_square() {
        let counts = counts(64);
        assert_eq!(counts.iter().sum::<u32>(), NODES);
        let expected = f64::from(NODES) / 64.0;
        let chi_square: f64 = counts
            .iter()
            .map(|&c| (f64::from(c) - expected).powi(2) / expected)
            .sum();
        // Critical value of the chi-square distribution with 63 degrees of
        // freedom at p = 0.001.
        const CRITICAL: f64 = 103.44;
        assert!(
            chi_square < CRITICAL,
            "chi-square {chi_square:.2} >= {CRITICAL} for 64 shards"
        );
        // A uniform spread is not suspiciously perfect either: the statistic
        // of a fair hash has mean 63; below p = 0.001 (~33.8) would mean the
        // ids are not being hashed at all (e.g. round-robin on a suffix).
        assert!(chi_square > 33.8, "chi-square {chi_square:.2} is too small");
    }
}

//! Shards: a deterministic split of the work list by item id (`run --shard i/n`).
//!
//! Owns which shard an item belongs to. Several runners, each with its own db, work the
//! shards of one work list; together they cover every item exactly once, whatever the order
//! of the file or the machine, because membership depends on the id alone (a SHA-256 of it,
//! stable across platforms and Rust versions, unlike `std`'s hasher).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Shard `index` (1-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// A `--shard` value that is not `i/n` with `1 <= i <= n`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a shard: write `i/n` with 1 <= i <= n, e.g. `2/3` for the second of three")]
pub struct BadShard(String);

impl Shard {
    /// Whether the item with `id` belongs to this shard.
    ///
    /// ```
    /// # use ratebound::shard::Shard;
    /// let shards: Vec<Shard> = ["1/3", "2/3", "3/3"].iter().map(|s| s.parse().unwrap()).collect();
    /// let owners = shards.iter().filter(|s| s.includes("item-00042")).count();
    /// assert_eq!(owners, 1);
    /// ```
    pub fn includes(&self, id: &str) -> bool {
        let digest = Sha256::digest(id.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl FromStr for Shard {
    type Err = BadShard;

    fn from_str(text: &str) -> Result<Shard, BadShard> {
        let bad = || BadShard(text.to_string());
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_falls_in_exactly_one_shard_and_shards_are_balanced() {
        let shards: Vec<Shard> = (1..=3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        let mut sizes = [0usize; 3];
        for n in 0..3000 {
            let id = format!("item-{n:05}");
            let owners: Vec<usize> = (0..3).filter(|&s| shards[s].includes(&id)).collect();
            assert_eq!(owners.len(), 1, "{id} is in shards {owners:?}");
            sizes[owners[0]] += 1;
        }
        assert!(
            sizes.iter().all(|&s| (900..=1100).contains(&s)),
            "{sizes:?}"
        );
    }

    #[test]
    fn shard_membership_is_pinned() {
        // Changing the hash would move items between the dbs of a run in progress.
        let owner = |id: &str| {
            (1..=4)
                .find(|i| format!("{i}/4").parse::<Shard>().unwrap().includes(id))
                .unwrap()
        };
        let owners: Vec<u32> = ["a", "b", "c", "d", "item-00001", "item-00002"]
            .iter()
            .map(|id| owner(id))
            .collect();
        assert_eq!(owners, PINNED);
    }

    const PINNED: [u32; 6] = [3, 3, 3, 2, 3, 4];

    #[test]
    fn bad_shards_are_refused() {
        for bad in ["0/3", "4/3", "3", "a/b", "1/0", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!("2/3".parse::<Shard>().unwrap().to_string(), "2/3");
    }
}

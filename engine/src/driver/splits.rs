//! Assigning an epoch's splits to scan partitions.

use sluice_connectors::Split;

/// A total order on splits, so equal weights assign the same way on every run.
fn key(split: &Split) -> (String, i64, Vec<usize>) {
    match split {
        Split::File(f) => (f.path.clone(), 0, f.row_groups.clone().unwrap_or_default()),
        Split::Kafka(k) => (k.topic.clone(), k.partition as i64, vec![]),
        Split::Generated(g) => (String::new(), g.from as i64, vec![]),
    }
}

/// Balances splits over `partitions` by size: largest first onto the least-loaded partition.
/// Deterministic, so a replay assigns exactly as the original run did.
pub fn assign_splits(mut splits: Vec<Split>, partitions: usize) -> Vec<Vec<Split>> {
    let partitions = partitions.max(1);
    splits.sort_by(|a, b| {
        b.weight()
            .cmp(&a.weight())
            .then_with(|| key(a).cmp(&key(b)))
    });
    let mut out = vec![Vec::new(); partitions];
    let mut load = vec![0u64; partitions];
    for split in splits {
        let (i, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(i, l)| (**l, *i))
            .expect("at least one partition");
        load[i] += split.weight().max(1);
        out[i].push(split);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(path: &str, bytes: u64) -> Split {
        Split::File(sluice_connectors::FileSplit {
            path: path.into(),
            row_groups: None,
            bytes,
        })
    }

    #[test]
    fn splits_balance_by_size_and_deterministically() {
        let splits = vec![
            split("a", 100),
            split("b", 60),
            split("c", 50),
            split("d", 10),
        ];
        let a = assign_splits(splits.clone(), 2);
        let mut shuffled = splits;
        shuffled.reverse();
        assert_eq!(a, assign_splits(shuffled, 2), "input order does not matter");
        let loads: Vec<u64> = a
            .iter()
            .map(|p| p.iter().map(|s| s.weight()).sum())
            .collect();
        assert_eq!(loads, vec![110, 110]);
    }
}

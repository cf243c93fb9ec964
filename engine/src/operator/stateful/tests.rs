//! Key layout of the stateful operators.

use super::*;

#[test]
fn window_prefixes_sort_numerically() {
    let values = [i64::MIN, -5_000, -1, 0, 1, 10_000, i64::MAX];
    let prefixes: Vec<_> = values.iter().map(|&v| window_prefix(v)).collect();
    let mut sorted = prefixes.clone();
    sorted.sort();
    assert_eq!(prefixes, sorted);
    for v in values {
        let mut key = window_prefix(v).to_vec();
        key.extend_from_slice(b"group");
        assert_eq!(closes_at(&key, false), Some(v));
    }
    assert_eq!(closes_at(&window_prefix(10_000), true), Some(10_001));
    assert_eq!(closes_at(b"short", false), None);
}

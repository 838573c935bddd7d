//! Fragment search: every [`FRAGMENT_LEN`]-byte window of every secret, found in one pass.
//!
//! Searching for each fragment as a pattern makes an automaton whose size (and search speed)
//! grows with the number and length of the secrets. Fragments all have the same length, so a
//! rolling hash does the same job in one pass whatever the number of secrets: the hash of
//! every window of the haystack (ASCII case folded) is checked against a bit filter and, on a
//! filter hit, against the sorted hashes of the secrets' windows. Equal windows always have
//! equal hashes, so nothing is missed; a 64-bit collision can only cause a false alarm, at
//! odds of about one in 2^50 per position for a few thousand windows.

use std::ops::Range;

use crate::secrets::{FRAGMENT_LEN, HitKind};

/// Odd multiplier of the polynomial hash.
const BASE: u64 = 0x0100_0000_01b3;
/// `BASE^(FRAGMENT_LEN - 1)`, to remove the byte leaving the window.
const OUT_FACTOR: u64 = pow(BASE, FRAGMENT_LEN as u32 - 1);

const fn pow(mut base: u64, mut exp: u32) -> u64 {
    let mut acc: u64 = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        exp >>= 1;
    }
    acc
}

/// The hash of one window, ASCII case folded.
pub(crate) fn hash_window(window: &[u8]) -> u64 {
    window.iter().fold(0u64, |h, &b| h.wrapping_mul(BASE).wrapping_add(u64::from(b.to_ascii_lowercase())))
}

/// One window of one secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) hash: u64,
    /// Which matcher of a set it belongs to.
    pub(crate) owner: u32,
    pub(crate) kind: HitKind,
}

/// The windows of a set of secrets, ready to search.
#[derive(Debug, Clone, Default)]
pub(crate) struct FragmentTable {
    entries: Vec<Entry>,
    filter: Vec<u64>,
    shift: u32,
}

impl FragmentTable {
    /// A table over `entries` (any order, duplicates allowed).
    pub(crate) fn new(mut entries: Vec<Entry>) -> FragmentTable {
        entries.sort_unstable();
        entries.dedup_by_key(|e| e.hash);
        // About 16 filter bits per window keeps false filter hits near 6%.
        let bits = (entries.len() * 16).next_power_of_two().clamp(1 << 12, 1 << 24);
        let mut filter = vec![0u64; bits / 64];
        let shift = 64 - bits.trailing_zeros();
        for e in &entries {
            let i = slot(e.hash, shift);
            filter[i / 64] |= 1 << (i % 64);
        }
        FragmentTable { entries, filter, shift }
    }

    /// A table over the windows of several tables, `owner` renumbered to each one's index.
    pub(crate) fn merge<'a>(tables: impl Iterator<Item = &'a FragmentTable>) -> FragmentTable {
        let mut entries = Vec::new();
        for (owner, table) in tables.enumerate() {
            entries.extend(table.entries.iter().map(|e| Entry { owner: owner as u32, ..*e }));
        }
        FragmentTable::new(entries)
    }

    fn lookup(&self, hash: u64) -> Option<&Entry> {
        let i = slot(hash, self.shift);
        if self.filter[i / 64] & (1 << (i % 64)) == 0 {
            return None;
        }
        self.entries.binary_search_by_key(&hash, |e| e.hash).ok().map(|at| &self.entries[at])
    }

    /// Calls `hit` with the start of every window of `haystack` that is a secret's window;
    /// stops when it returns false.
    pub(crate) fn search(&self, haystack: &[u8], mut hit: impl FnMut(usize, &Entry) -> bool) {
        if self.entries.is_empty() || haystack.len() < FRAGMENT_LEN {
            return;
        }
        let mut h = hash_window(&haystack[..FRAGMENT_LEN]);
        let mut start = 0;
        loop {
            if let Some(e) = self.lookup(h)
                && !hit(start, e)
            {
                return;
            }
            let next = start + FRAGMENT_LEN;
            let Some(&incoming) = haystack.get(next) else { return };
            let outgoing = u64::from(haystack[start].to_ascii_lowercase());
            h = h
                .wrapping_sub(outgoing.wrapping_mul(OUT_FACTOR))
                .wrapping_mul(BASE)
                .wrapping_add(u64::from(incoming.to_ascii_lowercase()));
            start += 1;
        }
    }

    /// The first window hit, if any.
    pub(crate) fn first(&self, haystack: &[u8]) -> Option<Entry> {
        let mut found = None;
        self.search(haystack, |_, e| {
            found = Some(*e);
            false
        });
        found
    }

    /// The byte ranges covered by window hits, appended (overlapping windows joined).
    pub(crate) fn ranges(&self, haystack: &[u8], out: &mut Vec<Range<usize>>) {
        let mut current: Option<Range<usize>> = None;
        self.search(haystack, |start, _| {
            let end = start + FRAGMENT_LEN;
            match &mut current {
                Some(r) if start <= r.end => r.end = end,
                _ => {
                    if let Some(r) = current.replace(start..end) {
                        out.push(r);
                    }
                }
            }
            true
        });
        out.extend(current);
    }
}

fn slot(hash: u64, shift: u32) -> usize {
    (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(secret: &[u8]) -> FragmentTable {
        let entries = secret
            .windows(FRAGMENT_LEN)
            .map(|w| Entry { hash: hash_window(w), owner: 0, kind: HitKind::Fragment })
            .collect();
        FragmentTable::new(entries)
    }

    #[test]
    fn rolling_equals_direct() {
        let text = b"The quick brown fox jumps over the lazy dog, again and again.";
        let t = table(&text[10..40]);
        let mut starts = Vec::new();
        t.search(text, |s, _| {
            starts.push(s);
            true
        });
        assert_eq!(starts, (10..=28).collect::<Vec<_>>());
    }

    #[test]
    fn case_is_folded_and_ranges_join() {
        let secret = b"AbCdEfGhIjKlMnOp";
        let t = table(secret);
        let text = b"xx abcdefghijklmnop yy ABCDEFGHIJKL zz";
        let mut ranges = Vec::new();
        t.ranges(text, &mut ranges);
        assert_eq!(ranges, vec![3..19, 23..35]);
    }

    #[test]
    fn nothing_in_unrelated_text() {
        let t = table(b"ghp_16C7e42F292c6912E7710c838347Ae178B4a");
        let text: Vec<u8> =
            (0..100_000u32).map(|i| b"abcdefghijklmnopqrstuvwxyz 0123456789"[(i * 7 % 37) as usize]).collect();
        assert!(t.first(&text).is_none());
    }
}

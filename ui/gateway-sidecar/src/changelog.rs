//! What changed in each of the last few generations of a published value.
//!
//! The index and the xDS builder publish through `tokio::sync::watch`, where a
//! slow reader sees only the newest value. Each published value carries this
//! log, so a reader that last saw generation `g` can still tell what changed
//! since then and touch only that; when `g` is too far back it falls back to
//! comparing everything.

use std::collections::VecDeque;
use std::sync::Arc;

/// How many generations back a reader can catch up without a full comparison.
pub const KEEP: usize = 64;

/// `(generation, what changed in it)`, oldest first.
#[derive(Debug, Clone)]
pub struct ChangeLog<C> {
    entries: VecDeque<(u64, Arc<C>)>,
}

impl<C> Default for ChangeLog<C> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
        }
    }
}

impl<C> ChangeLog<C> {
    /// Record what `generation` changed, forgetting the oldest beyond [`KEEP`].
    pub fn record(&mut self, generation: u64, changes: C) {
        if self.entries.len() == KEEP {
            self.entries.pop_front();
        }
        self.entries.push_back((generation, Arc::new(changes)));
    }

    /// What changed in the newest generation.
    pub fn latest(&self) -> Option<&C> {
        self.entries.back().map(|(_, c)| c.as_ref())
    }

    /// The changes after generation `seen` up to `current`, oldest first; None
    /// when the log cannot tell (`seen` is older than what it keeps, newer
    /// than `current`, or the log is empty: a value built by hand).
    pub fn since(&self, seen: u64, current: u64) -> Option<impl Iterator<Item = &C>> {
        let first = self.entries.front()?.0;
        if seen > current || seen + 1 < first {
            return None;
        }
        Some(
            self.entries
                .iter()
                .filter(move |(g, _)| *g > seen)
                .map(|(_, c)| c.as_ref()),
        )
    }
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    #[gtest]
    fn tells_what_changed_since_a_generation_it_still_keeps() {
        let mut log = ChangeLog::default();
        for generation in 1..=(KEEP as u64 + 10) {
            log.record(generation, generation);
        }
        let current = KEEP as u64 + 10;
        let since = |seen| {
            log.since(seen, current)
                .map(|c| c.copied().collect::<Vec<_>>())
        };
        expect_that!(since(current), some(is_empty()));
        expect_that!(
            since(current - 2),
            some(elements_are![eq(&(current - 1)), eq(&current)])
        );
        expect_that!(since(10), some(len(eq(KEEP))));
        expect_that!(since(9), none());
        expect_that!(since(current + 1), none());
        expect_that!(
            ChangeLog::<u64>::default().since(0, 0).map(|c| c.count()),
            none()
        );
    }
}

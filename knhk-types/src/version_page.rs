//! [`VersionPage`]: one slice of a version vector, so versions fit a frame at any
//! writer count.

use serde::{Deserialize, Serialize};

use crate::{AgentId, VersionVector};

/// The counters of every writer in the range `[start, end)` of writer ids (`None` is
/// unbounded on that side): a writer of the range missing from the page is at 0.
///
/// A node whose version vector would not fit a frame sends it a page at a time
/// (at most [`VersionVector::page`]'s `max_writers` pairs each), and a peer answers
/// within the page's range only, so version exchanges stay within a frame whatever the
/// number of writers. A page with both ends open is the whole vector.
///
/// On the wire: start, end, then the pairs (canonical, see [`VersionVector`]). Decoding
/// refuses a page whose range is empty or inverted, or which holds a pair outside its
/// range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPage")]
pub struct VersionPage {
    start: Option<AgentId>,
    end: Option<AgentId>,
    pairs: VersionVector,
}

/// A page as decoded, before its range is checked.
#[derive(Deserialize)]
struct RawPage {
    start: Option<AgentId>,
    end: Option<AgentId>,
    pairs: VersionVector,
}

impl TryFrom<RawPage> for VersionPage {
    type Error = &'static str;

    fn try_from(raw: RawPage) -> Result<Self, Self::Error> {
        if let (Some(start), Some(end)) = (&raw.start, &raw.end)
            && start >= end
        {
            return Err("version page range is empty");
        }
        let page = Self {
            start: raw.start,
            end: raw.end,
            pairs: raw.pairs,
        };
        // Pairs are ascending (the vector is canonical): the ends decide.
        let first = page.pairs.iter().next().map(|(writer, _)| *writer);
        let last = page.pairs.iter().last().map(|(writer, _)| *writer);
        if first.is_some_and(|w| !page.contains(&w)) || last.is_some_and(|w| !page.contains(&w)) {
            return Err("version page holds a writer outside its range");
        }
        Ok(page)
    }
}

impl VersionPage {
    /// The whole of `vector` as one page (both ends open), whatever its size.
    pub fn whole(vector: VersionVector) -> Self {
        Self {
            start: None,
            end: None,
            pairs: vector,
        }
    }

    /// The first writer of the range (`None`: from the lowest id).
    pub fn start(&self) -> Option<&AgentId> {
        self.start.as_ref()
    }

    /// The first writer past the range (`None`: through the highest id).
    pub fn end(&self) -> Option<&AgentId> {
        self.end.as_ref()
    }

    /// The counters of the range's writers (writers of the range not listed are at 0).
    pub fn pairs(&self) -> &VersionVector {
        &self.pairs
    }

    /// Writers listed.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True if no writer of the range has a counter above 0.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// True if the range is every writer id (the page is a whole vector).
    pub fn is_whole(&self) -> bool {
        self.start.is_none() && self.end.is_none()
    }

    /// True if `writer` lies in the range.
    pub fn contains(&self, writer: &AgentId) -> bool {
        self.start.as_ref().is_none_or(|start| writer >= start)
            && self.end.as_ref().is_none_or(|end| writer < end)
    }

    /// The highest counter of `writer` this page says its sender has seen: its pair, or
    /// 0 (a writer outside the range is at 0 too; ask [`VersionPage::contains`] first
    /// when that matters).
    pub fn get(&self, writer: &AgentId) -> u64 {
        self.pairs.get(writer)
    }
}

impl VersionVector {
    /// The page of this vector that starts at `start` (`None`: the lowest id) and stops
    /// before `end` (`None`: no bound), holding at most `max_writers` pairs (at least
    /// one): when more writers are in that range, the page's end is moved down to the
    /// first writer left out, so the next page can start there.
    ///
    /// Returns an empty page over the range when no writer of this vector lies in it.
    /// A `start` at or past `end` gives an empty page over `[start, None)`.
    pub fn page(
        &self,
        start: Option<&AgentId>,
        end: Option<&AgentId>,
        max_writers: usize,
    ) -> VersionPage {
        let end = end.filter(|end| start.is_none_or(|start| start < *end));
        let within = self.range(start, end);
        let take = within.len().min(max_writers.max(1));
        let page_end = match within.get(take) {
            Some((writer, _)) => Some(*writer),
            None => end.copied(),
        };
        VersionPage {
            start: start.copied(),
            end: page_end,
            pairs: VersionVector::from_sorted(within[..take].to_vec()),
        }
    }

    /// True if this vector and `page` give the same counter to every writer of the
    /// page's range.
    pub fn agrees_within(&self, page: &VersionPage) -> bool {
        self.range(page.start(), page.end()) == page.pairs.as_slice()
    }

    /// Writers and counters of this vector within `[start, end)`, in writer order.
    pub fn iter_within<'a>(
        &'a self,
        start: Option<&AgentId>,
        end: Option<&AgentId>,
    ) -> impl ExactSizeIterator<Item = (&'a AgentId, &'a u64)> {
        self.range(start, end)
            .iter()
            .map(|(writer, counter)| (writer, counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u8) -> AgentId {
        AgentId::from_bytes([n; 32])
    }

    fn vector(writers: &[u8]) -> VersionVector {
        writers.iter().map(|n| (w(*n), u64::from(*n))).collect()
    }

    #[test]
    fn pages_tile_the_vector_and_each_holds_at_most_max_writers() {
        let all = vector(&[1, 3, 5, 7, 9, 11, 13]);
        let mut start = None;
        let mut seen = Vec::new();
        loop {
            let page = all.page(start.as_ref(), None, 3);
            assert!(page.len() <= 3);
            assert!(all.agrees_within(&page));
            seen.extend(
                page.pairs()
                    .iter()
                    .map(|(writer, counter)| (*writer, *counter)),
            );
            match page.end() {
                Some(end) => start = Some(*end),
                None => break,
            }
        }
        assert_eq!(seen.into_iter().collect::<VersionVector>(), all);
    }

    #[test]
    fn a_small_vector_is_one_whole_page() {
        let all = vector(&[2, 4]);
        let page = all.page(None, None, 8);
        assert!(page.is_whole());
        assert_eq!(page.pairs(), &all);
    }

    #[test]
    fn a_page_within_a_range_stops_at_its_end() {
        let all = vector(&[1, 3, 5, 7, 9]);
        let page = all.page(Some(&w(3)), Some(&w(8)), 100);
        assert_eq!(page.pairs(), &vector(&[3, 5, 7]));
        assert_eq!(page.end(), Some(&w(8)));
        assert!(page.contains(&w(3)) && page.contains(&w(7)));
        assert!(!page.contains(&w(8)) && !page.contains(&w(2)));
        let empty = all.page(Some(&w(10)), None, 100);
        assert!(empty.is_empty() && empty.contains(&w(200)));
        // Inverted bounds give an empty page from the start, never a panic.
        assert!(
            all.page(Some(&w(9)), Some(&w(2)), 5)
                .pairs()
                .iter()
                .all(|(x, _)| *x >= w(9))
        );
    }

    #[test]
    fn agreement_is_judged_within_the_range_only() {
        let ours = vector(&[1, 3, 5]);
        let mut theirs: VersionVector = vector(&[1, 3]);
        theirs.observe(w(9), 9);
        let page = theirs.page(None, Some(&w(4)), 10);
        assert!(ours.agrees_within(&page));
        assert!(!ours.agrees_within(&theirs.page(None, None, 10)));
    }

    #[test]
    fn decoding_refuses_pages_that_lie_about_their_range() {
        let good = vector(&[3, 5]).page(Some(&w(2)), Some(&w(6)), 10);
        let bytes = postcard::to_allocvec(&good).unwrap();
        assert_eq!(postcard::from_bytes::<VersionPage>(&bytes).unwrap(), good);
        let outside = VersionPage {
            start: Some(w(4)),
            end: Some(w(6)),
            pairs: vector(&[3, 5]),
        };
        let bytes = postcard::to_allocvec(&outside).unwrap();
        assert!(postcard::from_bytes::<VersionPage>(&bytes).is_err());
        let inverted = VersionPage {
            start: Some(w(6)),
            end: Some(w(6)),
            pairs: VersionVector::new(),
        };
        let bytes = postcard::to_allocvec(&inverted).unwrap();
        assert!(postcard::from_bytes::<VersionPage>(&bytes).is_err());
    }
}

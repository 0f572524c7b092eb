//! The news we forwarded last: what a settled peer whose pull carried no version most
//! likely lacks.

/// The last news forwarded (an encoded delta) and the round it was forwarded in.
#[derive(Debug, Default)]
pub(crate) struct RecentNews(Option<(u64, Vec<u8>)>);

/// Rounds for which forwarded news stays recent; after that, pulls with versions take
/// over.
const RECENT_ROUNDS: u64 = 2;

impl RecentNews {
    /// Remembers `delta`, forwarded in `round`.
    pub(crate) fn forwarded(&mut self, round: u64, delta: &[u8]) {
        self.0 = Some((round, delta.to_vec()));
    }

    /// Forgets news older than [`RECENT_ROUNDS`] rounds at `round`.
    pub(crate) fn expire(&mut self, round: u64) {
        if self
            .0
            .as_ref()
            .is_some_and(|(at, _)| round.saturating_sub(*at) > RECENT_ROUNDS)
        {
            self.0 = None;
        }
    }

    /// The recent news, if any.
    pub(crate) fn get(&self) -> Option<&[u8]> {
        self.0.as_ref().map(|(_, news)| news.as_slice())
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |(_, news)| news.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_is_recent_for_two_rounds() {
        // (forwarded in round, judged at round, still recent)
        let cases = [
            (3, 3, true),
            (3, 4, true),
            (3, 5, true),
            (3, 6, false),
            (9, 2, true),
        ];
        for (at, now, recent) in cases {
            let mut news = RecentNews::default();
            news.forwarded(at, b"delta");
            news.expire(now);
            assert_eq!(news.get().is_some(), recent, "forwarded {at}, now {now}");
        }
        let mut news = RecentNews::default();
        news.forwarded(1, b"old");
        news.forwarded(2, b"new");
        assert_eq!(news.get(), Some(&b"new"[..]));
        assert_eq!(news.len(), 3);
    }
}

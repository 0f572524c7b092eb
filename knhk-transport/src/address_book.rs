//! [`AddressBook`]: where members learned by gossip listen, for dialing only.
//!
//! Kept apart from the [`crate::PeerRegistry`] on purpose: a registered peer is
//! *admitted* (under [`crate::InboundPolicy`]'s registered-peer rules), while an address
//! another member told us about proves nothing. Dialing an address from the book is
//! safe because the handshake pins the server's key to the id we dial; being in the
//! book never lets anyone in.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;

use knhk_types::AgentId;

/// Addresses the book holds by default: enough for a topology layer's view and
/// reserve many times over, about 5 MB at most.
pub const DEFAULT_ADDRESS_BOOK_CAPACITY: usize = 65_536;

/// A bounded map from member to dial address, oldest entry dropped first when full.
/// Shared (behind an `Arc`) between whoever learns addresses and the transport.
#[derive(Debug)]
pub struct AddressBook {
    capacity: usize,
    inner: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    /// Each address with the sequence number of the learn that put it there.
    addrs: HashMap<AgentId, (SocketAddr, u64)>,
    /// Learns in order, for eviction; an entry whose sequence number no longer matches
    /// its id's (forgotten, or forgotten and learned again) is skipped.
    order: VecDeque<(AgentId, u64)>,
    next: u64,
}

impl AddressBook {
    /// An empty book holding at most `capacity` addresses (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Book::default()),
        }
    }

    /// Remembers that `id` listens at `addr` (replacing what was known), dropping the
    /// oldest entry if the book is full.
    pub fn learn(&self, id: AgentId, addr: SocketAddr) {
        let mut book = self.lock();
        let Book { addrs, order, next } = &mut *book;
        if let Some((known, _)) = addrs.get_mut(&id) {
            *known = addr;
            return;
        }
        *next += 1;
        addrs.insert(id, (addr, *next));
        order.push_back((id, *next));
        while addrs.len() > self.capacity {
            let Some((oldest, seq)) = order.pop_front() else {
                break;
            };
            if addrs.get(&oldest).is_some_and(|(_, at)| *at == seq) {
                addrs.remove(&oldest);
            }
        }
        // Forgotten ids leave stale entries in `order`; compact when they dominate.
        if order.len() > 2 * self.capacity {
            order.retain(|(id, seq)| addrs.get(id).is_some_and(|(_, at)| at == seq));
        }
    }

    /// Forgets `id`'s address; returns it if one was known.
    pub fn forget(&self, id: &AgentId) -> Option<SocketAddr> {
        self.lock().addrs.remove(id).map(|(addr, _)| addr)
    }

    /// Where `id` listens, if the book knows.
    pub fn get(&self, id: &AgentId) -> Option<SocketAddr> {
        self.lock().addrs.get(id).map(|(addr, _)| *addr)
    }

    /// Addresses held.
    pub fn len(&self) -> usize {
        self.lock().addrs.len()
    }

    /// True if the book holds no address.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lock, even if a thread panicked while holding it (the map stays valid:
    /// every change is a single insert or remove).
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for AddressBook {
    fn default() -> Self {
        Self::new(DEFAULT_ADDRESS_BOOK_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> AgentId {
        AgentId::from_bytes([byte; 32])
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn learns_replaces_and_forgets() {
        let book = AddressBook::new(4);
        book.learn(id(1), addr(1));
        book.learn(id(1), addr(2));
        assert_eq!(book.get(&id(1)), Some(addr(2)));
        assert_eq!(book.len(), 1);
        assert_eq!(book.forget(&id(1)), Some(addr(2)));
        assert_eq!(book.get(&id(1)), None);
        assert!(book.is_empty());
    }

    #[test]
    fn a_full_book_drops_its_oldest_entry() {
        let book = AddressBook::new(2);
        book.learn(id(1), addr(1));
        book.learn(id(2), addr(2));
        book.learn(id(3), addr(3));
        assert_eq!(book.len(), 2);
        assert_eq!(book.get(&id(1)), None);
        assert_eq!(book.get(&id(3)), Some(addr(3)));
    }

    #[test]
    fn an_id_forgotten_and_learned_again_counts_as_new() {
        let book = AddressBook::new(2);
        book.learn(id(1), addr(1));
        book.learn(id(2), addr(2));
        book.forget(&id(1));
        book.learn(id(1), addr(11));
        // Full again: the oldest learn still held is id 2's, not id 1's second one.
        book.learn(id(3), addr(3));
        assert_eq!(book.get(&id(1)), Some(addr(11)));
        assert_eq!(book.get(&id(2)), None);
        assert_eq!(book.get(&id(3)), Some(addr(3)));
    }

    #[test]
    fn churn_never_grows_the_book_past_its_capacity() {
        let book = AddressBook::new(8);
        for round in 0..10_000u32 {
            let byte = (round % 251) as u8;
            book.learn(id(byte), addr(round as u16));
            if round % 3 == 0 {
                book.forget(&id(byte));
            }
            assert!(book.len() <= 8);
        }
        assert!(book.lock().order.len() <= 16 + 1);
    }
}

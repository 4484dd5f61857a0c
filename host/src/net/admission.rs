//! Who may take what: connection places in total and per source address,
//! room creations per address, and parked seats in total and per address.
//! One client (or one address) cannot lock everyone else out.
//!
//! The accept loops take an [`AcceptSlot`] before they accept: at most
//! `max_connections` admitted connections plus [`REFUSALS`] being told
//! `server_full` exist at once. Beyond that the loops stop accepting and
//! new connections wait in the kernel's backlog (back-pressure before any
//! handshake), instead of each costing a task and a socket here.

use crate::session::TokenBucket;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections being refused at once, beyond the admitted ones.
pub const REFUSALS: usize = 64;

/// What the limits are (from `[net]` and `[rooms]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Admitted connections in total.
    pub connections: usize,
    /// Admitted connections per source address.
    pub connections_per_address: usize,
    /// Parked seats (waiting for a resume) in total.
    pub parked: usize,
    /// Parked seats per source address.
    pub parked_per_address: usize,
    /// Rooms one address may create per minute, and in a burst.
    pub rooms_per_minute_per_address: u32,
    /// See `rooms_per_minute_per_address`.
    pub rooms_burst_per_address: u32,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The host is at `net.max_connections`.
    #[error("the host is at its connection limit; try again later")]
    HostFull,
    /// This address is at `net.max_connections_per_address`.
    #[error("too many connections from your address")]
    AddressFull,
}

struct Address {
    connections: usize,
    parked: usize,
    rooms: TokenBucket,
}

impl Address {
    /// Holds nothing and owes nothing.
    fn idle(&mut self, now: Instant) -> bool {
        self.connections == 0 && self.parked == 0 && self.rooms.is_full(now)
    }
}

/// The host's admission state.
pub struct Admission {
    limits: Limits,
    open: AtomicUsize,
    parked: AtomicUsize,
    addresses: Mutex<HashMap<IpAddr, Address>>,
    /// How many addresses the last sweep kept.
    swept_at: AtomicUsize,
    accept: Arc<Semaphore>,
}

/// A place in the accept loop: held by a connection from before it is
/// accepted until it ends.
pub struct AcceptSlot(#[allow(dead_code)] OwnedSemaphorePermit);

/// An admitted connection's place; dropping it frees the place.
pub struct ConnectionPermit {
    admission: Arc<Admission>,
    ip: IpAddr,
    _slot: AcceptSlot,
}

/// A parked seat's place; dropping it frees the place.
pub struct ParkPermit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// Admission under `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            accept: Arc::new(Semaphore::new(limits.connections.saturating_add(REFUSALS))),
            limits,
            open: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            addresses: Mutex::new(HashMap::new()),
            swept_at: AtomicUsize::new(0),
        })
    }

    /// Waits for a place in the accept loop (see the module docs).
    pub async fn accept_slot(&self) -> AcceptSlot {
        // The semaphore is never closed.
        match self.accept.clone().acquire_owned().await {
            Ok(permit) => AcceptSlot(permit),
            Err(_) => std::future::pending().await,
        }
    }

    /// Admits a connection from `ip`, or says why not. The refused keep
    /// their slot only while they are told.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, slot: AcceptSlot) -> Result<ConnectionPermit, (Refused, AcceptSlot)> {
        let mut addresses = crate::lock(&self.addresses);
        if self.open.load(Ordering::Acquire) >= self.limits.connections {
            return Err((Refused::HostFull, slot));
        }
        let entry = addresses.entry(ip).or_insert_with(|| self.address());
        if entry.connections >= self.limits.connections_per_address {
            return Err((Refused::AddressFull, slot));
        }
        entry.connections += 1;
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(ConnectionPermit {
            admission: self.clone(),
            ip,
            _slot: slot,
        })
    }

    fn address(&self) -> Address {
        Address {
            connections: 0,
            parked: 0,
            rooms: TokenBucket::with_rate(
                f64::from(self.limits.rooms_per_minute_per_address) / 60.0,
                f64::from(self.limits.rooms_burst_per_address),
                Instant::now(),
            ),
        }
    }

    /// Whether `ip` may create one more room now (its per-address budget).
    /// Asked by a connection of that address, so its entry exists.
    pub fn create_room(&self, ip: IpAddr) -> bool {
        let mut addresses = crate::lock(&self.addresses);
        addresses
            .get_mut(&ip)
            .is_none_or(|entry| entry.rooms.take(Instant::now()))
    }

    /// A place for a parked seat of `ip`, if the limits allow one.
    pub fn park(self: &Arc<Self>, ip: IpAddr) -> Option<ParkPermit> {
        let mut addresses = crate::lock(&self.addresses);
        if self.parked.load(Ordering::Acquire) >= self.limits.parked {
            return None;
        }
        let entry = addresses.entry(ip).or_insert_with(|| self.address());
        if entry.parked >= self.limits.parked_per_address {
            return None;
        }
        entry.parked += 1;
        self.parked.fetch_add(1, Ordering::AcqRel);
        Some(ParkPermit {
            admission: self.clone(),
            ip,
        })
    }

    /// Admitted connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Source addresses tracked now (those with a connection or a parked
    /// seat): bounded by the connections and seats they hold.
    pub fn addresses(&self) -> usize {
        crate::lock(&self.addresses).len()
    }

    /// Releases one of `ip`'s places. An address that holds nothing any
    /// more is forgotten once its room budget has refilled (reconnecting
    /// must not reset it); those that had not are swept by a later
    /// admission.
    fn release(&self, ip: IpAddr, which: impl FnOnce(&mut Address)) {
        let mut addresses = crate::lock(&self.addresses);
        if let Some(entry) = addresses.get_mut(&ip) {
            which(entry);
            if entry.idle(Instant::now()) {
                addresses.remove(&ip);
            }
        }
        if addresses.len() > self.swept_at.load(Ordering::Relaxed).saturating_mul(2).max(1024) {
            let now = Instant::now();
            addresses.retain(|_, a| !a.idle(now));
            self.swept_at.store(addresses.len(), Ordering::Relaxed);
        }
    }
}

impl ConnectionPermit {
    /// The connection's source address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The host's admission state, for the connection's later requests.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
        self.admission.release(self.ip, |a| a.connections -= 1);
    }
}

impl Drop for ParkPermit {
    fn drop(&mut self) {
        self.admission.parked.fetch_sub(1, Ordering::AcqRel);
        self.admission.release(self.ip, |a| a.parked -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            connections: 3,
            connections_per_address: 2,
            parked: 2,
            parked_per_address: 1,
            rooms_per_minute_per_address: 60,
            rooms_burst_per_address: 2,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[tokio::test]
    async fn connections_are_capped_in_total_and_per_address_and_places_come_back() {
        let a = Admission::new(limits());
        let one = a.admit(ip(1), a.accept_slot().await).ok().unwrap();
        let _two = a.admit(ip(1), a.accept_slot().await).ok().unwrap();
        let refused = a.admit(ip(1), a.accept_slot().await).err().map(|(r, _)| r);
        assert_eq!(refused, Some(Refused::AddressFull));
        let _three = a.admit(ip(2), a.accept_slot().await).ok().unwrap();
        let refused = a.admit(ip(3), a.accept_slot().await).err().map(|(r, _)| r);
        assert_eq!(refused, Some(Refused::HostFull));
        assert_eq!((a.open(), a.addresses()), (3, 2));
        drop(one);
        assert!(a.admit(ip(3), a.accept_slot().await).is_ok());
        assert_eq!(a.open(), 2, "the admitted one was dropped at once");
    }

    #[tokio::test]
    async fn the_accept_loop_waits_once_admitted_and_refused_fill_their_slots() {
        let a = Admission::new(limits());
        let mut held = Vec::new();
        for _ in 0..limits().connections + REFUSALS {
            held.push(a.accept_slot().await);
        }
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), a.accept_slot()).await;
        assert!(waiting.is_err(), "no slot beyond admitted plus refusals");
        held.pop();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), a.accept_slot())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn parked_seats_and_room_creations_have_their_own_budgets() {
        let a = Admission::new(limits());
        let p1 = a.park(ip(1)).unwrap();
        assert!(a.park(ip(1)).is_none(), "per address");
        let _p2 = a.park(ip(2)).unwrap();
        assert!(a.park(ip(3)).is_none(), "in total");
        drop(p1);
        let _p3 = a.park(ip(3)).unwrap();
        assert_eq!(a.addresses(), 2, "ip(1) holds nothing and is forgotten");
        let nine = a.admit(ip(9), a.accept_slot().await).ok().unwrap();
        assert!(a.create_room(ip(9)) && a.create_room(ip(9)));
        assert!(!a.create_room(ip(9)), "burst of 2 per address");
        // Reconnecting does not refill it.
        drop(nine);
        let _nine = a.admit(ip(9), a.accept_slot().await).ok().unwrap();
        assert!(!a.create_room(ip(9)), "the budget outlives the connection");
        let _eight = a.admit(ip(8), a.accept_slot().await).ok().unwrap();
        assert!(a.create_room(ip(8)), "another address has its own budget");
    }
}

//! Who may take what: connection places in total and per source address,
//! room creations per address, and parked seats in total and per address.
//! One client (or one address) cannot lock everyone else out.
//!
//! The accept loops take an [`AcceptSlot`] before they accept, from a pool
//! of `max_connections` plus one per accept loop: when every admitted place
//! is taken the loops stop accepting and new connections wait in the
//! kernel's backlog (back-pressure before any handshake), instead of each
//! costing a task and a socket here. A connection that is not admitted
//! gives its slot back at once; at most [`REFUSALS`] are told why at a
//! time, the rest are dropped unanswered.

use crate::session::TokenBucket;
use crate::session::rate::{Allowance, AllowanceRates, SharedAllowance};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections being told why they were refused, at once.
pub const REFUSALS: usize = 64;

/// Accept loops (WebSocket and TCP): each may hold one slot for a
/// connection it is about to look at.
const ACCEPT_LOOPS: usize = 2;

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
    /// Joins and frames one address may make, over all its connections.
    pub address: AllowanceRates,
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
    /// Joins and frames, shared by the address's connections.
    allowance: SharedAllowance,
}

impl Address {
    /// Holds nothing and owes nothing.
    fn idle(&mut self, now: Instant) -> bool {
        self.connections == 0
            && self.parked == 0
            && self.rooms.is_full(now)
            && crate::lock(&self.allowance).is_full(now)
    }
}

/// The host's admission state.
pub struct Admission {
    limits: Limits,
    open: AtomicUsize,
    parked: AtomicUsize,
    addresses: Mutex<HashMap<IpAddr, Address>>,
    /// Refused connections being told why.
    refusals: Arc<Semaphore>,
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
    allowance: SharedAllowance,
    _slot: AcceptSlot,
}

/// A parked seat's place; dropping it frees the place.
pub struct ParkPermit {
    admission: Arc<Admission>,
    /// `None` for a seat recovered after a restart (no address yet).
    ip: Option<IpAddr>,
}

impl Admission {
    /// Admission under `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            accept: Arc::new(Semaphore::new(limits.connections.saturating_add(ACCEPT_LOOPS))),
            refusals: Arc::new(Semaphore::new(REFUSALS)),
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

    /// Admits a connection from `ip`, or says why not, with a permit to
    /// tell it so (`None`: too many are being told already; drop it).
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        slot: AcceptSlot,
    ) -> Result<ConnectionPermit, (Refused, Option<OwnedSemaphorePermit>)> {
        let ip = address_key(ip);
        // The slot is given back as this returns (it is not kept).
        let refuse = |why| Err((why, self.refusals.clone().try_acquire_owned().ok()));
        let mut addresses = crate::lock(&self.addresses);
        if self.open.load(Ordering::Acquire) >= self.limits.connections {
            return refuse(Refused::HostFull);
        }
        let entry = addresses.entry(ip).or_insert_with(|| self.address());
        if entry.connections >= self.limits.connections_per_address {
            return refuse(Refused::AddressFull);
        }
        entry.connections += 1;
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(ConnectionPermit {
            admission: self.clone(),
            ip,
            allowance: entry.allowance.clone(),
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
            allowance: Arc::new(Mutex::new(Allowance::new(self.limits.address, Instant::now()))),
        }
    }

    /// Whether `ip` may create one more room now (its per-address budget).
    /// Asked by a connection of that address, so its entry exists.
    pub fn create_room(&self, ip: IpAddr) -> bool {
        let ip = address_key(ip);
        let mut addresses = crate::lock(&self.addresses);
        addresses
            .get_mut(&ip)
            .is_none_or(|entry| entry.rooms.take(Instant::now()))
    }

    /// A place for a parked seat of `ip`, if the limits allow one.
    pub fn park(self: &Arc<Self>, ip: IpAddr) -> Option<ParkPermit> {
        let ip = address_key(ip);
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
            ip: Some(ip),
        })
    }

    /// A place for a seat recovered after a restart: counted in the total
    /// (`net.max_parked`) only, since its player has no address yet.
    pub fn park_recovered(self: &Arc<Self>) -> Option<ParkPermit> {
        let _addresses = crate::lock(&self.addresses);
        if self.parked.load(Ordering::Acquire) >= self.limits.parked {
            return None;
        }
        self.parked.fetch_add(1, Ordering::AcqRel);
        Some(ParkPermit {
            admission: self.clone(),
            ip: None,
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

/// What counts as one address: an IPv4 address, or an IPv6 /64 (one
/// subscriber's network, where a client can pick any of 2^64 addresses).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            octets[8..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(octets))
        }
    }
}

impl ConnectionPermit {
    /// The connection's source address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The joins and frames the connection's address may still make.
    pub fn allowance(&self) -> &SharedAllowance {
        &self.allowance
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
        if let Some(ip) = self.ip {
            self.admission.release(ip, |a| a.parked -= 1);
        }
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
            address: AllowanceRates {
                joins_per_minute: 60,
                join_burst: 10,
                frames_per_sec: 100,
                frame_burst: 100,
            },
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
    async fn the_accept_loop_waits_only_for_admitted_places_and_refusals_are_bounded() {
        let a = Admission::new(limits());
        let wait = std::time::Duration::from_millis(50);
        // The host is full (3 admitted)...
        let _admitted: Vec<_> = [1, 1, 2]
            .into_iter()
            .map(|n| {
                a.admit(ip(n), futures_util::FutureExt::now_or_never(a.accept_slot()).unwrap())
                    .ok()
                    .unwrap()
            })
            .collect();
        // ...and refused connections give their slot back at once, however
        // many come; at most REFUSALS of them are told why.
        let mut told = Vec::new();
        for _ in 0..REFUSALS + 10 {
            let slot = tokio::time::timeout(wait, a.accept_slot())
                .await
                .expect("a slot is free again");
            let (why, permit) = a.admit(ip(3), slot).err().expect("refused");
            assert_eq!(why, Refused::HostFull);
            told.extend(permit);
        }
        assert_eq!(told.len(), REFUSALS, "the rest are dropped unanswered");
        // Only the accept loops' own slots remain beyond the admitted.
        let _loops: Vec<_> = futures_util::future::join_all((0..ACCEPT_LOOPS).map(|_| a.accept_slot())).await;
        assert!(tokio::time::timeout(wait, a.accept_slot()).await.is_err());
    }

    #[test]
    fn an_ipv6_64_counts_as_one_address() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(one), address_key(same));
        assert_ne!(address_key(one), address_key(other));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(address_key(mapped), ip(2));
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

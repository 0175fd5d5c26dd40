//! The cast of the hand-worked day (`e2e_day.rs`, and the dashboard's
//! small day in `ui_common`): four readers, three passengers.

use super::*;

/// Readers 1–4 (city-bus routes 1 and 7, metro L1 and L2) and the phones
/// of alice (adult), bob (senior) and carol (student, credit limit 100).
pub struct DayCast {
    pub readers: [FakeReader; 4],
    pub alice: Phone,
    pub bob: Phone,
    pub carol: Phone,
}

impl DayCast {
    /// Provisions the readers, creates the accounts and their phones on
    /// `srv`, and sets its clock to 06:00 of the day.
    pub async fn on(srv: &Server) -> DayCast {
        let readers = [
            FakeReader::new(1, "city-bus", "1"),
            FakeReader::new(2, "city-bus", "7"),
            FakeReader::new(3, "metro", "L1"),
            FakeReader::new(4, "metro", "L2"),
        ];
        for r in &readers {
            srv.provision(r).await;
        }
        srv.create_account("alice", "adult", 10_000).await;
        srv.create_account("bob", "senior", 10_000).await;
        srv.create_account("carol", "student", 100).await;
        let alice = srv.phone("alice", 1).await;
        let bob = srv.phone("bob", 2).await;
        let carol = srv.phone("carol", 3).await;
        srv.clock.set(at(6, 0));
        DayCast {
            readers,
            alice,
            bob,
            carol,
        }
    }
}

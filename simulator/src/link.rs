//! The reader → settlement path: every upload and bundle fetch goes through
//! the validator's real sync code (`fare_validator::sync::contact` over its
//! [`Link`] trait: batches built from the log, signed FARE-ACK
//! acknowledgements verified by the reader, forks and rewinds, the in-flight
//! batch re-sent byte for byte), to settlement served in process (the same
//! calls `POST /v1/batches` and the bundle route make) or, with
//! `--network`, to `fare-settlement serve` on loopback over reqwest
//! ([`fare_validator::sync::HttpLink`]). Faults are injected between the
//! two from a seeded RNG per reader: drop, duplicate, reorder (delay past
//! the reader's next request), lost reply after commit, lost bundle fetch.
//!
//! All the glue with `validator/src/sync.rs` is in this module (that API is
//! being changed on another branch: fix it here after a merge).

use crate::adapters::{Backoffice, BusReader};
use fare_validator::sync::{contact, BundleQuery, HttpLink, InFlight, Link, LinkError, Reply};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use std::sync::Mutex;

/// How the fault injection treated the requests (counted in the report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    /// Batch requests sent.
    pub sent: u64,
    /// Lost before settlement.
    pub dropped: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Delayed past a later request.
    pub reordered: u64,
    /// Committed, answer lost.
    pub lost_replies: u64,
    /// Bundle fetches lost.
    pub bundle_fetches_lost: u64,
    /// Batches answered by a forger (not delivered) with an acknowledgement
    /// claiming them stored, signed with a key the root never certified.
    pub forged_acks: u64,
}

/// Fault percentages.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Lost on the way in.
    pub drop: u32,
    /// Delivered twice.
    pub duplicate: u32,
    /// Delayed past the next request.
    pub reorder: u32,
    /// Answer lost after commit.
    pub lost_reply: u32,
    /// The request intercepted and answered by a forger (an attack).
    pub forged_ack: u32,
}

/// The forger: its own "root" certifying its own acknowledgement key.
struct Forger {
    key: fare_credential::SigningKey,
    cert: Vec<u8>,
}

impl std::fmt::Debug for Forger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forger").finish_non_exhaustive()
    }
}

impl Forger {
    fn new(rng: &mut ChaCha20Rng) -> Forger {
        let root = fare_credential::SigningKey::generate(rng);
        let key = fare_credential::SigningKey::generate(rng);
        let cert = fare_credential::ack::AckKeyCert {
            public_key: key.verifying_key().to_bytes(),
            valid_from_unix_s: 0,
            valid_until_unix_s: u64::MAX / 2,
        }
        .sign_v1(&root);
        Forger { key, cert }
    }
    /// A 200 answer claiming `body` stored up to its last record.
    fn answer(&self, body: &[u8], t: u64) -> Option<Reply> {
        let batch = fare_credential::SignedBatch::parse_v1(body).ok()?;
        let (_, last) = batch.seq_range();
        let ack = fare_credential::ack::Ack {
            kind: fare_credential::ack::AckKind::Held,
            reader_id: batch.reader_id(),
            acked_seq: last,
            chain_hash: [0; 32],
            server_time_unix_s: t,
            request_digest: fare_credential::ack::request_digest(body),
        }
        .sign_v1(&self.cert, &self.key)
        .ok()?;
        let json = serde_json::json!({"acked_seq": last, "ack": hex::encode(ack)});
        Some(Reply {
            status: 200,
            date_unix_s: None,
            body: json.to_string().into_bytes(),
        })
    }
}

#[derive(Debug)]
struct FaultState {
    faults: Faults,
    healed: bool,
    stats: LinkStats,
    /// Wall time settlement spent answering batches / bundles, seconds,
    /// summed over the threads that asked (in process only; not
    /// deterministic).
    served_s: (f64, f64),
}

/// The seeded fault injector: what is shared by every reader's link (the
/// fault rates, the forger, the counters). The draws are each reader's own
/// ([`ReaderLink`]), so that contacts of different readers may run at once
/// and a run still draws the same faults for the same seed.
#[derive(Debug)]
pub struct FaultPlan {
    forger: Forger,
    state: Mutex<FaultState>,
    seed: u64,
}

impl FaultPlan {
    /// Faults drawn from `rng`: the forger's keys from it, and each
    /// reader's draws from a stream seeded by it ([`FaultPlan::reader_link`]).
    pub fn new(mut rng: ChaCha20Rng, faults: Faults) -> FaultPlan {
        FaultPlan {
            forger: Forger::new(&mut rng),
            seed: rng.next_u64(),
            state: Mutex::new(FaultState {
                faults,
                healed: false,
                stats: LinkStats::default(),
                served_s: (0.0, 0.0),
            }),
        }
    }
    fn state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Reader `reader`'s link: its own fault draws, from this plan's seed.
    pub fn reader_link(&self, reader: u32) -> ReaderLink {
        ReaderLink {
            rng: crate::sim::rng_for(self.seed, &format!("link/{reader}")),
            delayed: Vec::new(),
        }
    }
    /// No more faults from now on (the liveness phase).
    pub fn heal(&self) {
        self.state().healed = true;
    }
    /// Counters.
    pub fn stats(&self) -> LinkStats {
        self.state().stats
    }
    /// Wall time in-process settlement spent answering `(batches, bundles)`,
    /// seconds, summed over the threads that asked.
    pub fn served_s(&self) -> (f64, f64) {
        self.state().served_s
    }
}

/// One reader's side of the network: its fault draws (a seeded stream of
/// its own) and the requests the network holds back to deliver after its
/// next one (a reordering: an older batch arriving after a newer one).
#[derive(Debug)]
pub struct ReaderLink {
    rng: ChaCha20Rng,
    delayed: Vec<(Vec<u8>, u64, String)>,
}

impl ReaderLink {
    /// True with probability `percent` %, unless the network has healed.
    fn roll(&mut self, healed: bool, percent: u32) -> bool {
        !healed && percent > 0 && (self.rng.next_u32() % 100) < percent
    }
}

/// Where requests go: settlement in process, or its HTTP server.
#[derive(Clone, Copy)]
pub enum Transport<'a> {
    /// The settlement library called as its routes do.
    InProcess(&'a Backoffice),
    /// `fare-settlement serve` on loopback.
    Http(&'a HttpLink),
}

fn timed<T>(plan: &FaultPlan, bundle: bool, f: impl FnOnce() -> T) -> T {
    let t = std::time::Instant::now();
    let out = f();
    let mut s = plan.state();
    let d = t.elapsed().as_secs_f64();
    if bundle {
        s.served_s.1 += d;
    } else {
        s.served_s.0 += d;
    }
    out
}

/// Settlement's in-process answer as the reply a reader gets (its `Date` is
/// settlement's clock, as the HTTP server's would be).
fn in_process_reply(b: &Backoffice, (status, body): (u16, Vec<u8>)) -> Reply {
    Reply {
        status,
        date_unix_s: Some(b.now()),
        body,
    }
}

impl<'a> Transport<'a> {
    /// The transport of a run: HTTP when settlement serves one.
    pub fn of(settlement: &'a Backoffice) -> Transport<'a> {
        match settlement.http_link() {
            Some(l) => Transport::Http(l),
            None => Transport::InProcess(settlement),
        }
    }
    async fn post(
        &self,
        body: Vec<u8>,
        t: u64,
        auth: String,
        plan: &FaultPlan,
    ) -> Result<Reply, LinkError> {
        match self {
            Transport::InProcess(b) => {
                let answer = timed(plan, false, || b.answer_batch(&body, t, &auth));
                Ok(in_process_reply(b, answer))
            }
            Transport::Http(l) => l.post_batch(body, t, auth).await,
        }
    }
    async fn bundle(
        &self,
        query: BundleQuery,
        t: u64,
        auth: String,
        plan: &FaultPlan,
    ) -> Result<Reply, LinkError> {
        match self {
            Transport::InProcess(b) => {
                let answer = timed(plan, true, || b.answer_bundle(query, t, &auth));
                Ok(in_process_reply(b, answer))
            }
            Transport::Http(l) => l.get_bundle(query, t, auth).await,
        }
    }
    fn describe(&self) -> String {
        match self {
            Transport::InProcess(_) => "in-process settlement".into(),
            Transport::Http(l) => l.describe(),
        }
    }
}

/// A [`Link`] through the fault injector, for one reader's contact.
struct FaultyLink<'a> {
    to: Transport<'a>,
    plan: &'a FaultPlan,
    /// The reader's draws and held-back requests (a mutex because the
    /// [`Link`] methods take `&self`; one contact uses it at a time).
    reader: Mutex<&'a mut ReaderLink>,
    /// Requests of this contact a forger answered.
    forged: std::sync::atomic::AtomicU64,
}

fn injected(what: &str) -> LinkError {
    LinkError::Transport(format!("{what} (injected fault)"))
}

impl<'a> FaultyLink<'a> {
    fn reader(&self) -> std::sync::MutexGuard<'_, &'a mut ReaderLink> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The plan's fault rates and whether the network has healed.
    fn rates(&self) -> (Faults, bool) {
        let s = self.plan.state();
        (s.faults, s.healed)
    }
    async fn deliver_delayed(&self) {
        let delayed = std::mem::take(&mut self.reader().delayed);
        for (b, t, auth) in delayed {
            let _ = self.to.post(b, t, auth, self.plan).await;
        }
    }
}

impl Link for FaultyLink<'_> {
    async fn post_batch(&self, body: Vec<u8>, t: u64, auth: String) -> Result<Reply, LinkError> {
        let (f, healed) = self.rates();
        let forged = {
            let mut r = self.reader();
            if r.roll(healed, f.forged_ack) {
                self.plan.forger.answer(&body, t)
            } else {
                None
            }
        };
        if let Some(reply) = forged {
            self.plan.state().stats.forged_acks += 1;
            self.forged
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(reply);
        }
        let (drop, delay) = {
            let mut r = self.reader();
            let drop = r.roll(healed, f.drop);
            let delay = !drop && r.roll(healed, f.reorder);
            if delay {
                r.delayed.push((body.clone(), t, auth.clone()));
            }
            let mut s = self.plan.state();
            s.stats.sent += 1;
            s.stats.dropped += u64::from(drop);
            s.stats.reordered += u64::from(delay);
            (drop, delay)
        };
        if drop {
            return Err(injected("request lost"));
        }
        if delay {
            return Err(injected("request delayed"));
        }
        let reply = self.to.post(body.clone(), t, auth.clone(), self.plan).await;
        let (dup, lost) = {
            let mut r = self.reader();
            let dup = r.roll(healed, f.duplicate);
            let lost = r.roll(healed, f.lost_reply);
            let mut s = self.plan.state();
            s.stats.duplicated += u64::from(dup);
            s.stats.lost_replies += u64::from(lost);
            (dup, lost)
        };
        if dup {
            let _ = self.to.post(body, t, auth, self.plan).await;
        }
        // Whatever was delayed arrives after this request.
        self.deliver_delayed().await;
        if lost {
            return Err(injected("answer lost after commit"));
        }
        reply
    }

    async fn get_bundle(
        &self,
        query: BundleQuery,
        t: u64,
        auth: String,
    ) -> Result<Reply, LinkError> {
        let (f, healed) = self.rates();
        let lost = self.reader().roll(healed, f.drop);
        if lost {
            self.plan.state().stats.bundle_fetches_lost += 1;
            return Err(injected("bundle fetch lost"));
        }
        self.to.bundle(query, t, auth, self.plan).await
    }

    fn describe(&self) -> String {
        self.to.describe()
    }
}

/// What one contact did, as the simulator counts it.
#[derive(Clone, Debug, Default)]
pub struct ContactOutcome {
    /// Batches posted (re-sends included).
    pub batches_sent: u64,
    /// Everything uploaded and the bundle fetched.
    pub ok: bool,
    /// The stable code of the failure (`sync_failed`, `chain_forked`, `ack_bad_signature`, ...).
    pub error_code: Option<String>,
    /// Bundle version installed by this contact.
    pub bundle_installed: Option<u64>,
    /// A forger answered one of its batches: whether the reader refused
    /// the acknowledgement (its acknowledged sequence did not move on it).
    pub forged_ack_refused: Option<bool>,
}

/// One contact of `reader` with settlement through the faulty link at
/// reader time `now`; `in_flight` is the batch the reader keeps re-sending
/// until it is acknowledged and `link` its side of the network (both kept
/// per reader across contacts). Contacts of different readers may run at
/// once: everything a contact draws or changes is its reader's own, and
/// settlement serves concurrent requests as its HTTP server does.
pub fn contact_once(
    rt: &tokio::runtime::Runtime,
    reader: &mut BusReader,
    to: Transport<'_>,
    plan: &FaultPlan,
    link: &mut ReaderLink,
    in_flight: &mut InFlight,
    now: u64,
) -> ContactOutcome {
    let link = FaultyLink {
        to,
        plan,
        reader: Mutex::new(link),
        forged: Default::default(),
    };
    let refused_before = reader.reader_mut().sync_state().refused_acks;
    let access = Mutex::new(reader.reader_mut());
    let clock = move || now;
    let mut out = match rt.block_on(contact(&access, &link, in_flight, &clock)) {
        Ok(r) => ContactOutcome {
            batches_sent: u64::from(r.batches_sent),
            ok: true,
            error_code: None,
            bundle_installed: r.bundle_installed,
            forged_ack_refused: None,
        },
        Err(f) => ContactOutcome {
            batches_sent: u64::from(f.report.batches_sent),
            ok: false,
            error_code: Some(f.error.code().to_string()),
            bundle_installed: f.report.bundle_installed,
            forged_ack_refused: None,
        },
    };
    if link.forged.into_inner() > 0 {
        // A refused acknowledgement stops the contact: one forgery per contact.
        let refused = reader.reader_mut().sync_state().refused_acks > refused_before
            && out.error_code.as_deref() == Some("ack_bad_signature");
        out.forged_ack_refused = Some(refused);
    }
    out
}

/// Posts `body` as a reader's batch with the request signature `auth`,
/// without faults (the malformed-input check): `(HTTP status, the answer's
/// error code)`.
pub fn post_raw(
    rt: &tokio::runtime::Runtime,
    to: Transport<'_>,
    body: Vec<u8>,
    t: u64,
    auth: String,
) -> Result<(u16, Option<String>), String> {
    let quiet = FaultPlan::new(rand_core::SeedableRng::seed_from_u64(0), Faults::default());
    let reply = rt
        .block_on(to.post(body, t, auth, &quiet))
        .map_err(|e| e.to_string())?;
    Ok((reply.status, error_code(&reply)))
}

/// Posts `body`, a batch of `reader`'s own making (a compromised reader's
/// forged upload), the way the reader sends its batches, without faults:
/// the request signed with the reader's key at its request clock
/// (`Reader::sign_request`: the reader clock corrected by the last measured
/// offset) and, when settlement refuses that as `request_stale`, signed once
/// more at settlement's clock (`sync::note_stale`), as `sync::contact`
/// does. `now` is the reader's clock. Returns `(HTTP status, the answer's
/// error code)`.
pub fn post_as_reader(
    rt: &tokio::runtime::Runtime,
    reader: &mut BusReader,
    to: Transport<'_>,
    body: Vec<u8>,
    now: u64,
) -> Result<(u16, Option<String>), String> {
    let quiet = FaultPlan::new(rand_core::SeedableRng::seed_from_u64(0), Faults::default());
    let target = fare_validator::sync::BATCH_TARGET;
    let access = std::sync::Mutex::new(reader.reader_mut());
    let mut sends = 0;
    let reply = rt
        .block_on(fare_validator::sync::send_signed(
            &access,
            "POST",
            target,
            &body,
            target,
            &move || now,
            &mut sends,
            |t, auth| to.post(body.clone(), t, auth, &quiet),
        ))
        .map_err(|e| e.to_string())?;
    Ok((reply.status, error_code(&reply)))
}

/// The stable code of an answer's `error` field, if any.
fn error_code(reply: &Reply) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|c| c.as_str()).map(str::to_string))
}

/// Delivers what the network still holds back for each of `links` (it
/// heals), in their order.
pub fn flush<'a>(
    rt: &tokio::runtime::Runtime,
    to: Transport<'_>,
    plan: &FaultPlan,
    links: impl IntoIterator<Item = &'a mut ReaderLink>,
) {
    for reader in links {
        let link = FaultyLink {
            to,
            plan,
            reader: Mutex::new(reader),
            forged: Default::default(),
        };
        rt.block_on(link.deliver_delayed());
    }
}

/// A fresh in-flight slot (after a reader's power cut or restore: the
/// agent's memory is gone; it starts again from the acknowledged sequence).
pub fn fresh_in_flight() -> InFlight {
    InFlight::default()
}

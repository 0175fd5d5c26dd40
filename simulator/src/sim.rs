//! The event loop: one simulated service day over the real wallet, reader
//! and settlement code, with faults and attackers, recorded for the oracle.

use crate::adapters::{
    Answer, Backoffice, BackofficeOptions, BusReader, Enrolment, Phone, PlantedBugs,
    ReaderIdentity, ReaderStorage,
};
use crate::link::{ContactOutcome, FaultPlan, Faults, ReaderLink, Transport};
use crate::scenario::{Scenario, FDS_PER_OPEN_READER};
use fare_credential::{Profile, SigningKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A code's identity at settlement: (credential id, device sequence).
pub type CodeKey = ([u8; 16], u32);

/// Seconds in an hour.
const HOUR_S: u64 = 3600;
/// When riders enrol and readers are provisioned (local hour).
const SETUP_HOUR: u64 = 4;
/// Interval of the upload-backlog samples.
pub const SAMPLE_EVERY_S: u64 = 900;
/// Depot sync attempts per bus (each one a full sync).
const DEPOT_ATTEMPTS: u32 = 8;
/// Depot contacts are spread over this many slots of `SYNC_SLOT_S` (half
/// an hour).
const DEPOT_SLOTS: u64 = 30;
/// Logical log limit of a reader whose storage is nearly full (≈ 40 records).
const NEARLY_FULL_LOG_BYTES: u64 = 12_000;
/// Credential lifetime asked for a rider whose credential will have expired.
const SHORT_CREDENTIAL_S: u64 = 1800;
/// Credential lifetime of ordinary riders.
const CREDENTIAL_S: u64 = 3 * 86_400;
/// Riders enrolled per settlement write set (one commit and flush each).
const ENROL_BATCH: usize = 1000;
/// Camera frame size.
const FRAME_W: u32 = 640;
/// Camera frame size.
const FRAME_H: u32 = 480;
/// Byte of a ride code inside its issue time (changing it breaks the device signature).
const TAMPER_BYTE: usize = 130;
/// Thief rides per stolen phone.
const THIEF_RIDES: u64 = 4;
/// Online renewals start at this local hour ...
const RENEW_FROM_HOUR: f64 = 7.0;
/// ... within this many seconds.
const RENEW_SPAN_S: u64 = 12 * HOUR_S;
/// A wallet enrolled online renews again this long after.
const RENEW_AGAIN_S: u64 = 2 * HOUR_S;
/// Codes kept for attacks that need a genuine accepted code.
const CODE_BANK: usize = 64;
/// Most consecutive rides whose reader decisions are made together, on
/// every core (see `World::ride_batch`): enough to keep both cores busy
/// between two sync or settlement events, small enough that a batch's
/// codes and frames stay a few MB.
const RIDE_BATCH: usize = 256;
/// En-route and depot contacts start on a slot of this many seconds (a
/// bus's modem wakes on the minute), so that the contacts of many buses
/// fall on the same simulated second and run together (`World::contacts`).
const SYNC_SLOT_S: u64 = 60;
/// Most contacts run together: enough to keep both cores busy, few enough
/// that their batches in flight stay a few MB.
const CONTACT_GROUP: usize = 256;

/// Derives a component's seed from the run seed.
pub fn sub_seed(seed: u64, what: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(what.as_bytes());
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A seeded RNG for one component.
pub fn rng_for(seed: u64, what: &str) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(sub_seed(seed, what))
}

fn below(rng: &mut ChaCha20Rng, n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        rng.next_u64() % n
    }
}

fn percent(rng: &mut ChaCha20Rng, p: u32) -> bool {
    p > 0 && (rng.next_u32() % 100) < p
}

fn signed_upto(rng: &mut ChaCha20Rng, max: u64) -> i64 {
    if max == 0 {
        0
    } else {
        (below(rng, 2 * max + 1) as i64) - max as i64
    }
}

/// The code key of ride code bytes (`None`: not a parseable code).
pub fn code_key(code: &[u8]) -> Option<CodeKey> {
    let c = fare_credential::RideCode::from_bytes(code).ok()?;
    Some((c.credential().body().credential_id.0, c.device_seq()))
}

/// What a bus is for in the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Ordinary.
    Normal,
    /// No en-route network all day.
    Offline,
    /// Small log limit, no en-route network.
    NearlyFull,
    /// Backed up in the morning, restored in the evening.
    Restored,
    /// Compromised: forges its upload at the depot.
    Compromised,
    /// Planted bug: drops a flushed ride, undeclared.
    UndeclaredDrop,
}

/// A rider of the day, derived from the seed and the account index.
#[derive(Debug)]
pub struct Rider {
    /// Account id at settlement.
    pub account: String,
    /// Profile.
    pub profile: Profile,
    /// Credit limit.
    pub credit_limit: i64,
    /// The phone (None until enrolled, or for modelled-only riders).
    pub phone: Option<Phone>,
    /// Phone clock error, seconds.
    pub phone_off: i64,
    /// Credential ids, the first from enrolment, then one per online renewal.
    pub credentials: Vec<[u8; 16]>,
    /// Special part in the scenario.
    pub part: RiderPart,
}

/// A rider's part in the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RiderPart {
    /// Ordinary.
    Honest,
    /// Credential expired before riding.
    Expired,
    /// Frozen before the day.
    DenyListed,
    /// Phone stolen during the day.
    Stolen,
    /// Small credit limit, rides past it.
    OverLimit,
}

/// A ride a reader accepted, as the simulator saw the answer.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// Bus index (reader id − 1).
    pub bus: u32,
    /// Reader sequence.
    pub seq: u64,
    /// Reader clock at the decision.
    pub reader_time: u64,
    /// True time.
    pub true_time: u64,
    /// Code identity (None for codes that do not parse).
    pub code: Option<CodeKey>,
    /// The account the code belongs to (None: forged).
    pub account: Option<String>,
    /// Profile of the code's credential.
    pub profile: Profile,
    /// Genuine code (issuer- and device-signed as issued).
    pub genuine: bool,
    /// What kind of scan it was.
    pub tag: &'static str,
}

/// What an attack must lead to.
#[derive(Clone, Debug)]
pub enum Expect {
    /// The reader refuses it.
    ReaderRefuses,
    /// The reader refuses it, or settlement rates exactly one ride with this code.
    RefusedOrOneRated(CodeKey),
    /// Settlement's result of this ride has one of these outcomes.
    Outcome {
        /// Reader id.
        reader: u32,
        /// Sequence.
        seq: u64,
        /// Acceptable outcomes.
        outcomes: &'static [&'static str],
    },
    /// Settlement recorded this incident for the reader.
    Incident {
        /// Reader id.
        reader: u32,
        /// Incident kind.
        kind: &'static str,
    },
    /// The account is on the deny list at the end (or was, before paying).
    Revoked(String),
    /// Refused when the reader held the deny list naming it (counted, not required).
    RefusedIfDenied,
}

/// One attack attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Kind (report key).
    pub kind: &'static str,
    /// Whether the oracle requires it caught.
    pub must_catch: bool,
    /// What catching it means.
    pub expect: Expect,
    /// The reader's answer, if it was a scan.
    pub reader_refused: Option<bool>,
}

impl Attempt {
    /// An attempt the reader must refuse (its answer filled in by the scan).
    fn refused_at_reader(kind: &'static str) -> Attempt {
        Attempt {
            kind,
            must_catch: true,
            expect: Expect::ReaderRefuses,
            reader_refused: None,
        }
    }
}

/// Online renewals done during the day (counted in the report).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Renewals {
    /// Riders who went online with their wallet.
    pub riders: u64,
    /// Wallets enrolled online (token exchanged, first credential renewed).
    pub enrolled: u64,
    /// Later renewals of an enrolled wallet.
    pub renewed: u64,
    /// Refusals, by settlement's stable code.
    pub refused_by_code: BTreeMap<String, u64>,
    /// Rides readers accepted under a credential renewed online.
    pub accepted_rides_renewed: u64,
}

/// What a compromised reader uploaded (declared to the oracle).
#[derive(Clone, Debug, Default)]
pub struct Compromise {
    /// Reader id.
    pub reader: u32,
    /// Acknowledged before the attack.
    pub acked_before: u64,
    /// Honest records kept are `acked_before+1 ..= honest_to` (one of them altered).
    pub honest_to: u64,
    /// The altered record's sequence.
    pub altered: Option<u64>,
    /// Fake records appended: `(seq, kind)`.
    pub fakes: Vec<(u64, &'static str)>,
    /// Whether the oracle was told.
    pub declared: bool,
    /// The fake rides' details: `(seq, reader time, code, genuine code)`.
    pub fake_rides: Vec<(u64, u64, Option<CodeKey>, bool)>,
}

/// A reader restored from a backup.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// Reader id.
    pub reader: u32,
    /// Last sequence in the backup.
    pub backup_last: u64,
    /// Last sequence before the restore.
    pub last_before: u64,
    /// The reader's acknowledged sequence just before the restore.
    pub acked_before: u64,
    /// The reader saw an acknowledgement beyond its log afterwards.
    pub ack_beyond_log: bool,
    /// When it was restored (true time).
    pub at: u64,
}

/// One bus.
pub struct Bus {
    /// Identity.
    pub ident: ReaderIdentity,
    dir: PathBuf,
    key: SigningKey,
    /// The reader while its log is open (see [`World::ensure_open`]).
    reader: Option<BusReader>,
    /// Runs on a real reader.
    pub real: bool,
    /// Its reader has been provisioned (open or closed for idleness).
    provisioned: bool,
    /// Its tick in the open-reader LRU while open.
    lru: Option<u64>,
    /// Unacknowledged rides when the log was last closed for idleness.
    closed_backlog: u64,
    /// Scenario role.
    pub role: Role,
    drift: i64,
    jump: i64,
    /// Highest sequence the reader answered accept for.
    pub max_accepted: u64,
    /// No more uploads (compromised, after its attack).
    pub retired: bool,
    backup: Option<(PathBuf, u64)>,
    /// The batch the reader's sync keeps re-sending until acknowledged.
    in_flight: fare_validator::sync::InFlight,
    /// Its side of the network: its fault draws, its held-back requests.
    link: ReaderLink,
}

impl Bus {
    fn reader_now(&self, t: u64) -> u64 {
        (t as i64 + self.drift + self.jump).max(0) as u64
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Ride {
        rider: u32,
        bus: u32,
        companion: bool,
        source: Option<&'static str>,
    },
    Scan {
        bus: u32,
        code: Vec<u8>,
        facts: ScanFacts,
    },
    Forged {
        bus: u32,
    },
    ExpiredRide {
        rider: u32,
        bus: u32,
    },
    StolenReport {
        rider: u32,
    },
    Sync {
        bus: u32,
        depot: bool,
    },
    Settle,
    Sample,
    PowerCut {
        bus: u32,
    },
    ClockJump {
        bus: u32,
    },
    SettlementRestart,
    Backup {
        bus: u32,
    },
    RestoreBackup {
        bus: u32,
    },
    Payments,
    Renew {
        rider: u32,
    },
}

/// Everything the run recorded.
pub struct World {
    /// The scenario.
    pub scenario: Scenario,
    /// Run seed.
    pub seed: u64,
    /// Local midnight of the day, unix seconds.
    pub midnight: u64,
    /// Buses.
    pub buses: Vec<Bus>,
    /// Riders of the day.
    pub riders: Vec<Rider>,
    /// Accepted rides.
    pub journal: Vec<Accepted>,
    /// Attack attempts.
    pub attempts: Vec<Attempt>,
    /// Compromised readers' uploads.
    pub compromises: Vec<Compromise>,
    /// Restored readers.
    pub restores: Vec<Restore>,
    /// Settlement.
    pub settlement: Backoffice,
    /// Scans.
    pub scanned: u64,
    /// Rides generated for buses not run on real readers.
    pub modelled_only_rides: u64,
    /// Rejects by reason.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Decision latencies of the scans shown as payload bytes,
    /// microseconds (wall clock): one per such scan.
    pub latency_payload_us: Vec<u64>,
    /// Decision latencies of the scans shown as camera frames (decode
    /// included), microseconds (wall clock): one per such scan.
    pub latency_frame_us: Vec<u64>,
    /// Upload attempts and retries (timeouts, refusals).
    pub upload_attempts: u64,
    /// Upload retries.
    pub upload_retries: u64,
    /// Syncs that found no network.
    pub syncs_offline: u64,
    /// Deny list versions: (version, true time, ids).
    pub deny_versions: Vec<(u64, u64, BTreeSet<[u8; 16]>)>,
    /// Bundle installs: (bus, true time, version).
    pub installs: Vec<(u32, u64, u64)>,
    /// Upload backlog samples: (true time, unacknowledged rides).
    pub backlog: Vec<(u64, u64)>,
    /// Violations seen while running (invariant name, detail).
    pub violations: Vec<(&'static str, String)>,
    /// Payments made: account → total.
    pub payments: BTreeMap<String, i64>,
    /// Accounts frozen.
    pub frozen: BTreeSet<String>,
    /// Power cuts survived (reader reopened holding every accepted ride).
    pub power_cuts: u64,
    /// Readers flushed and closed because more than
    /// `execution.max_open_readers` would have been open.
    pub reader_idle_closes: u64,
    /// Readers reopened (the validator's `Reader::open`) after an idle close.
    pub reader_idle_reopens: u64,
    /// Most readers open at once.
    pub readers_open_max: u64,
    /// Settlement restarts done.
    pub settlement_restarts: u64,
    /// Settlement runs.
    pub settle_runs: u64,
    /// Scans refused because the deny list named the credential, checked against the model.
    pub deny_checks: u64,
    /// Readers reach settlement over loopback HTTP (`--network`).
    pub network: bool,
    /// Link counters.
    pub link_stats: crate::link::LinkStats,
    /// Wallet refusals (e.g. expired credential on the phone).
    pub wallet_refusals: u64,
    /// Online renewals (wallet enrolment and renewal through settlement's passenger routes).
    pub renewals: Renewals,
    /// Wall time of each phase, seconds (not deterministic).
    pub phase_wall_s: BTreeMap<String, f64>,
    /// Uploads refused by settlement, by code.
    pub upload_refusals: BTreeMap<String, u64>,
    /// Uploads that timed out: (bus, first seq, last seq).
    pub failed_uploads: Vec<(u32, u64, u64)>,
    faults: FaultPlan,
    /// Runs the readers' sync contacts (and their HTTP client with `--network`).
    rt: tokio::runtime::Runtime,
    queue: BTreeMap<(u64, u64), Ev>,
    next_ev: u64,
    /// Open readers by last use (tick → bus), least recent first.
    open_lru: BTreeMap<u64, u32>,
    lru_tick: u64,
    /// An error met where the caller cannot return one (a scan); the event loop stops on it.
    fatal: Option<String>,
    rng_frames: ChaCha20Rng,
    rng_sync: ChaCha20Rng,
    rng_attack: ChaCha20Rng,
    code_bank: Vec<(Vec<u8>, u64)>,
    forger: fare_credential::testkit::TestIssuer,
    root_public: [u8; 32],
    /// Keeps the temp dir alive.
    _tmp: Option<tempfile::TempDir>,
    work: PathBuf,
}

/// Options of a run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Run seed.
    pub seed: u64,
    /// Where readers' and settlement's data go (a temp dir inside it; default /dev/shm or the system temp dir).
    pub work_dir: Option<PathBuf>,
    /// Show progress bars (on a terminal only).
    pub progress: bool,
    /// Print each phase's end and wall time to stderr.
    pub log_phases: bool,
    /// Readers talk to `fare-settlement serve` on loopback over HTTP.
    pub network: bool,
    /// Further command-line arguments the replay command must repeat
    /// (`--scale F`, `--real-buses N`).
    pub replay_args: String,
    /// Keep the run's data here (a new or empty directory) instead of a
    /// temp dir removed at the end, so an operator can open settlement's
    /// dashboard on it afterwards ([`keep_note`]).
    pub keep_data: Option<PathBuf>,
}

/// The settlement configuration written into a kept data directory
/// (`--keep-data DIR`): the run's tariff; no operator token, so
/// `fare-settlement serve` makes one at its first start (DATA/operator-token).
pub const KEPT_CONFIG_FILE: &str = "settlement.toml";

/// Where a run's readers and settlement keep their data unless told
/// (`--work-dir`): `/dev/shm` where it exists (memory: a city's day writes
/// about 14 GB there, gone when the run ends), else the system temp dir.
pub fn default_work_base() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Prefix of a run's data directory inside the work base.
pub const RUN_DIR_PREFIX: &str = "fare-sim-run-";
/// The file in a run's data directory that its run holds locked while it
/// lives (and that names its process id, for people).
pub const RUN_OWNER_FILE: &str = "owner.lock";

/// Marks `dir`, a new run's data directory, as this process's: its owner
/// file, locked until the returned file is dropped or the process ends
/// (however it ends: the kernel releases the lock).
pub fn mark_run_dir(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    // Locked before it takes its name: another run starting meanwhile
    // never finds it unlocked.
    let unnamed = dir.join(format!("{RUN_OWNER_FILE}.new"));
    let mut file = std::fs::File::create(&unnamed)?;
    file.lock()?;
    file.write_all(std::process::id().to_string().as_bytes())?;
    std::fs::rename(&unnamed, dir.join(RUN_OWNER_FILE))?;
    Ok(file)
}

/// Removes the data directories in `base` that a run left behind when it
/// was killed (SIGKILL, the kernel's out-of-memory killer: no handler
/// runs), and returns each with its size in bytes. A city's day holds
/// about 14 GB there, in memory under `/dev/shm`, so the next run would
/// not fit beside it. A directory goes only when its owner file is there
/// and no process holds it locked (a lock, not a process id, so that a
/// run in another container sharing the directory is seen alive); one
/// without an owner file stays.
pub fn remove_dead_runs(base: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for dir in entries.flatten().map(|e| e.path()) {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with(RUN_DIR_PREFIX) {
            continue;
        }
        let Ok(owner) = std::fs::File::open(dir.join(RUN_OWNER_FILE)) else {
            continue;
        };
        if owner.try_lock().is_err() {
            continue;
        }
        let bytes = fare_durable::dir_bytes(&dir);
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push((dir, bytes));
        }
    }
    removed
}

/// Checks `--keep-data DIR` before a run (creating DIR if it does not
/// exist): a directory that cannot be made or is not empty is the
/// caller's usage error, refused before any work starts.
pub fn check_keep_data(dir: &Path) -> Result<(), String> {
    kept_dir(dir).map(|_| ())
}

/// A new or empty directory for `--keep-data`, made absolute (the kept
/// configuration names the tariff by absolute path).
fn kept_dir(dir: &Path) -> Result<PathBuf, String> {
    let what = |e: std::io::Error| format!("--keep-data {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(what)?;
    if std::fs::read_dir(dir).map_err(what)?.next().is_some() {
        return Err(format!(
            "--keep-data {}: not empty (expected a new or empty directory, so no earlier run's data is mixed in)",
            dir.display()
        ));
    }
    std::fs::canonicalize(dir).map_err(what)
}

/// Writes [`KEPT_CONFIG_FILE`] into the kept directory `dir` and returns
/// what to tell the tester: how to open the dashboard on the run's data.
pub fn keep_note(dir: &Path, day: &str) -> Result<String, String> {
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tariff = dir.join("tariff.json");
    let config = format!(
        "# Written by fare-simulator --keep-data: settlement on this run's data.\n\
         # No operator_token: `fare-settlement serve` makes one at its first start\n\
         # and says where it keeps it (settlement/operator-token).\n\
         tariff_file = {}\n",
        toml::Value::String(tariff.display().to_string())
    );
    let path = dir.join(KEPT_CONFIG_FILE);
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!(
        "data kept in {d}; open the dashboard on it:\n  \
         cargo run --release -p fare-settlement -- serve --data {d}/settlement --config {c}\n  \
         then http://127.0.0.1:8080/ui?day={day} and log in with the token in {d}/settlement/operator-token\n",
        d = dir.display(),
        c = path.display(),
    ))
}

/// File descriptors kept free of readers for settlement's store, the
/// runtime and transient files (see `World::check_open_file_limit`).
const FD_HEADROOM: u64 = 512;

fn local_midnight(day: &str) -> Result<u64, String> {
    let z: jiff::Zoned = format!("{day}T00:00:00[Asia/Shanghai]")
        .parse()
        .map_err(|e| format!("day {day}: {e}"))?;
    Ok(z.timestamp().as_second() as u64)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&p, &target)?;
        } else {
            std::fs::copy(&p, &target)?;
        }
    }
    Ok(())
}

/// A 640×480 camera frame holding the code's QR, centred on grey (as
/// the walkthrough). Rows are copied with slice copies: generic per-pixel image
/// code would be compiled unoptimised here in debug builds.
pub fn camera_frame(code: &[u8]) -> Result<image::GrayImage, String> {
    let qr = fare_qr::render_luma(code, 4, 4).map_err(|e| e.to_string())?;
    let (qw, qh) = (qr.width() as usize, qr.height() as usize);
    let (fw, fh) = (FRAME_W as usize, FRAME_H as usize);
    if qw > fw || qh > fh {
        return Err("QR larger than the frame".into());
    }
    let mut buf = vec![200u8; fw * fh];
    let (x0, y0) = ((fw - qw) / 2, (fh - qh) / 2);
    let src = qr.as_raw();
    for y in 0..qh {
        let d = (y0 + y) * fw + x0;
        buf[d..d + qw].copy_from_slice(&src[y * qw..(y + 1) * qw]);
    }
    image::GrayImage::from_raw(FRAME_W, FRAME_H, buf).ok_or_else(|| "frame buffer".to_string())
}

/// The answer to a scan whose reader is down (it could not be opened).
fn reader_down() -> Answer {
    Answer {
        accepted_seq: None,
        reason: Some("reader_down".into()),
        latency_ns: 0,
    }
}

/// What the simulator knows of a code put before a reader that the reader
/// does not (for the journal and the checks after the decision).
#[derive(Clone, Debug)]
struct ScanFacts {
    /// The rider whose phone made it (`None`: a forger's; in a thief's
    /// event, `thief-of:<rider>`, the phone taken, resolved before the scan).
    account: Option<String>,
    profile: Profile,
    /// Made by a real wallet under a credential settlement issued (an
    /// honest ride, a screenshot, an expired or deny-listed rider's), as
    /// opposed to forged or tampered: a reader must never accept the latter.
    genuine: bool,
    /// The kind of scan (`honest`, `companion`, an attack's name).
    tag: &'static str,
    /// The attack this scan is, when it is one.
    attempt: Option<Attempt>,
}

/// A reader's decision on one scan, before it is recorded.
#[derive(Debug)]
struct Decided {
    ans: Answer,
    /// Decided on a rendered camera frame (else on the payload).
    framed: bool,
    /// The reader's bundle version when it decided.
    version: u64,
    /// Wall time of the render and the decision (not deterministic).
    wall_s: f64,
}

/// The reader's decision on `code`, rendered as a camera frame when
/// `frame_ok`. Touches only `reader`, so decisions of different readers can
/// be made on different threads.
fn decide(reader: &mut BusReader, code: &[u8], frame_ok: bool, rnow: u64) -> Decided {
    let started = std::time::Instant::now();
    let frame = if frame_ok {
        camera_frame(code).ok()
    } else {
        None
    };
    let ans = match &frame {
        Some(f) => reader.decide_frame(f, rnow),
        None => reader.decide_payload(code, rnow),
    };
    Decided {
        ans,
        framed: frame.is_some(),
        version: reader.bundle_version(),
        wall_s: started.elapsed().as_secs_f64(),
    }
}

/// One reader's decisions in a ride batch: its bus, the reader (handed
/// back), and each decision with the index of its scan.
type ReaderDecisions = (u32, BusReader, Vec<(usize, Decided)>);

/// A ride's codes before any reader sees them (`World::ride_codes`).
struct RideCodes {
    account: String,
    profile: Profile,
    code: Vec<u8>,
    /// A companion's code from the same phone, 3 s later.
    second: Option<Vec<u8>>,
    tag: &'static str,
    attempt: Option<Attempt>,
}

/// A scan of a ride batch, prepared in event order (`World::ride_batch`).
#[derive(Debug)]
struct PendingScan {
    t: u64,
    bus: u32,
    code: Vec<u8>,
    account: String,
    profile: Profile,
    tag: &'static str,
    attempt: Option<Attempt>,
    frame_ok: bool,
    /// The reader's clock; `None` when the reader is down.
    rnow: Option<u64>,
    /// The rider's own scan (not a companion's): its accepted code goes
    /// to the code bank.
    own: bool,
}

impl World {
    /// Scans shown as camera frames.
    pub fn frames(&self) -> u64 {
        self.latency_frame_us.len() as u64
    }

    /// Scans shown as payloads.
    pub fn payloads(&self) -> u64 {
        self.latency_payload_us.len() as u64
    }

    /// Every scan's decision latency, microseconds: payloads, then frames.
    pub fn decision_latencies_us(&self) -> Vec<u64> {
        [&self.latency_payload_us[..], &self.latency_frame_us[..]].concat()
    }

    fn push(&mut self, t: u64, ev: Ev) {
        self.queue.insert((t, self.next_ev), ev);
        self.next_ev += 1;
    }

    fn at_hour(&self, h: f64) -> u64 {
        self.midnight + (h * HOUR_S as f64) as u64
    }

    /// Builds the world: settlement, fleet, riders, the day's plan.
    pub fn build(scenario: Scenario, opts: &RunOptions) -> Result<World, String> {
        let seed = opts.seed;
        let base = opts.work_dir.clone().unwrap_or_else(default_work_base);
        let (tmp, work) = match &opts.keep_data {
            Some(dir) => (None, kept_dir(dir)?),
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("fare-sim-")
                    .tempdir_in(&base)
                    .map_err(|e| format!("work dir in {}: {e}", base.display()))?;
                let work = tmp.path().to_path_buf();
                (Some(tmp), work)
            }
        };
        let midnight = local_midnight(&scenario.day)?;
        let setup = midnight + SETUP_HOUR * HOUR_S;
        let tariff_path = work.join("tariff.json");
        let tariff =
            fare_tariff::Tariff::from_spec(scenario.tariff_spec()).map_err(|e| e.to_string())?;
        std::fs::write(&tariff_path, tariff.to_json()).map_err(|e| e.to_string())?;
        let options = BackofficeOptions {
            seed: sub_seed(seed, "settlement"),
            bugs: PlantedBugs {
                double_charge: scenario.execution.planted_double_charge,
            },
            network: opts.network,
            cache_mb: scenario.execution.settlement_cache_mb,
        };
        let settlement = Backoffice::open(&work.join("settlement"), &tariff_path, setup, options)?;
        let root_public = settlement.root_public_key()?;
        let f = &scenario.faults;
        let faults = FaultPlan::new(
            rng_for(seed, "link"),
            Faults {
                drop: f.link_drop_percent,
                duplicate: f.link_duplicate_percent,
                reorder: f.link_reorder_percent,
                lost_reply: f.link_lost_reply_percent,
                forged_ack: scenario.attacks.forged_ack_percent,
            },
        );
        let mut w = World {
            seed,
            midnight,
            buses: Vec::new(),
            riders: Vec::new(),
            journal: Vec::new(),
            attempts: Vec::new(),
            compromises: Vec::new(),
            restores: Vec::new(),
            settlement,
            scanned: 0,
            modelled_only_rides: 0,
            rejected_by_reason: BTreeMap::new(),
            latency_payload_us: Vec::new(),
            latency_frame_us: Vec::new(),
            upload_attempts: 0,
            upload_retries: 0,
            syncs_offline: 0,
            deny_versions: Vec::new(),
            installs: Vec::new(),
            backlog: Vec::new(),
            violations: Vec::new(),
            payments: BTreeMap::new(),
            frozen: BTreeSet::new(),
            power_cuts: 0,
            reader_idle_closes: 0,
            reader_idle_reopens: 0,
            readers_open_max: 0,
            settlement_restarts: 0,
            settle_runs: 0,
            deny_checks: 0,
            link_stats: Default::default(),
            network: opts.network,
            wallet_refusals: 0,
            renewals: Renewals::default(),
            phase_wall_s: BTreeMap::new(),
            upload_refusals: BTreeMap::new(),
            failed_uploads: Vec::new(),
            faults,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("sync runtime: {e}"))?,
            queue: BTreeMap::new(),
            next_ev: 0,
            open_lru: BTreeMap::new(),
            lru_tick: 0,
            fatal: None,
            rng_frames: rng_for(seed, "frames"),
            rng_sync: rng_for(seed, "sync"),
            rng_attack: rng_for(seed, "attacks"),
            code_bank: Vec::new(),
            forger: fare_credential::testkit::TestIssuer::new(sub_seed(seed, "forger")),
            root_public,
            _tmp: tmp,
            work,
            scenario,
        };
        w.build_fleet()?;
        w.check_open_file_limit()?;
        w.build_riders()?;
        Ok(w)
    }

    /// Refuses to start a day whose open readers would pass the process's
    /// open-file limit (it would fail hours later with `Too many open
    /// files`): at most `execution.max_open_readers` readers × about
    /// [`FDS_PER_OPEN_READER`] descriptors, plus [`FD_HEADROOM`] for
    /// settlement's store and the runtime. The soft limit is raised first,
    /// up to the hard limit, if the day needs more (a shell's default soft
    /// limit is often 1,024). A limit that cannot be read is not checked.
    fn check_open_file_limit(&self) -> Result<(), String> {
        let real = self.buses.iter().filter(|b| b.real).count() as u64;
        let open = real.min(u64::from(self.scenario.execution.max_open_readers));
        let need = open * u64::from(FDS_PER_OPEN_READER) + FD_HEADROOM;
        let Ok(limit) = rlimit::increase_nofile_limit(need) else {
            return Ok(());
        };
        if need > limit {
            let fits = limit.saturating_sub(FD_HEADROOM) / u64::from(FDS_PER_OPEN_READER);
            let fix = if fits > 0 {
                format!("lower execution.max_open_readers (--max-open-readers) to at most {fits}")
            } else {
                "raise the open-file limit (ulimit -n)".to_string()
            };
            return Err(format!(
                "{open} open readers need about {need} file descriptors, over this process's limit of {limit}: {fix}"
            ));
        }
        Ok(())
    }

    fn build_fleet(&mut self) -> Result<(), String> {
        let s = self.scenario.clone();
        let total = s.total_buses();
        let real_n = if s.execution.real_buses == 0 {
            total
        } else {
            u64::from(s.execution.real_buses).min(total)
        };
        let stride = (total / real_n).max(1);
        let mut rng = rng_for(self.seed, "fleet");
        let mut ix: u64 = 0;
        for op in &s.operators {
            for r in 1..=op.routes {
                for v in 0..op.buses_per_route {
                    let id = (ix + 1) as u32;
                    let real = ix.is_multiple_of(stride) && ix / stride < real_n;
                    let key = SigningKey::generate(&mut rng);
                    let drift = signed_upto(&mut rng, s.faults.reader_clock_drift_max_s);
                    self.buses.push(Bus {
                        ident: ReaderIdentity {
                            reader_id: id,
                            operator: op.id.clone(),
                            vehicle: format!("{}-{}{}-{}", op.id, op.route_prefix, r, v + 1),
                            route: format!("{}{r}", op.route_prefix),
                        },
                        dir: self.work.join("readers").join(id.to_string()),
                        key,
                        reader: None,
                        real,
                        provisioned: false,
                        lru: None,
                        closed_backlog: 0,
                        role: Role::Normal,
                        drift,
                        jump: 0,
                        max_accepted: 0,
                        retired: false,
                        backup: None,
                        in_flight: Default::default(),
                        link: self.faults.reader_link(id),
                    });
                    ix += 1;
                }
            }
        }
        // Special roles on distinct real buses, drawn from the fleet RNG.
        let real_ix: Vec<usize> = (0..self.buses.len())
            .filter(|i| self.buses[*i].real)
            .collect();
        let mut pool = real_ix.clone();
        let mut take = |n: u32, role: Role, buses: &mut Vec<Bus>, rng: &mut ChaCha20Rng| {
            for _ in 0..n {
                if pool.is_empty() {
                    break;
                }
                let k = below(rng, pool.len() as u64) as usize;
                let b = pool.swap_remove(k);
                buses[b].role = role;
            }
        };
        take(
            s.faults.offline_buses,
            Role::Offline,
            &mut self.buses,
            &mut rng,
        );
        take(
            s.faults.storage_nearly_full,
            Role::NearlyFull,
            &mut self.buses,
            &mut rng,
        );
        take(
            s.faults.restore_from_backup,
            Role::Restored,
            &mut self.buses,
            &mut rng,
        );
        take(
            s.attacks.compromised_reader,
            Role::Compromised,
            &mut self.buses,
            &mut rng,
        );
        take(
            u32::from(s.attacks.undeclared_reader_drop),
            Role::UndeclaredDrop,
            &mut self.buses,
            &mut rng,
        );
        Ok(())
    }

    /// Provisions every real reader with the current bundle.
    fn provision_fleet(&mut self, now: u64, bar: &indicatif::ProgressBar) -> Result<(), String> {
        let (bundle, version, ids) = self.settlement.bundle(None)?;
        self.note_deny(version, now, ids);
        let batch = self.scenario.sync.batch_max_records;
        let device_sync = self.scenario.execution.device_sync;
        for b in self.buses.iter().filter(|b| b.real) {
            self.settlement
                .provision_reader(&b.ident, b.key.verifying_key().to_bytes())?;
        }
        // Readers are independent (own directory, own key from the fleet
        // RNG, the same bundle): provisioned in parallel, same result.
        use rayon::prelude::*;
        let cache_bytes = self.scenario.execution.reader_cache_kib << 10;
        let segment_bytes = self.scenario.execution.reader_segment_kib << 10;
        let root_public = self.root_public;
        // The first `max_open_readers` readers stay open; the others are
        // closed once provisioned and opened at their first use.
        let cap = self.scenario.execution.max_open_readers as usize;
        let mut keep = vec![false; self.buses.len()];
        for (k, i) in (0..self.buses.len())
            .filter(|i| self.buses[*i].real)
            .take(cap)
            .enumerate()
        {
            debug_assert!(k < cap);
            keep[i] = true;
        }
        let versions = self
            .buses
            .par_iter_mut()
            .zip(keep.par_iter())
            .filter(|(b, _)| b.real)
            .map(|(b, keep)| -> Result<(u32, u64), String> {
                let storage = ReaderStorage {
                    max_log_bytes: (b.role == Role::NearlyFull).then_some(NEARLY_FULL_LOG_BYTES),
                    device_sync,
                    batch_max_records: batch,
                    cache_bytes,
                    segment_bytes,
                };
                let r = BusReader::provision(
                    &b.dir,
                    &b.ident,
                    storage,
                    root_public,
                    b.key.clone(),
                    &bundle,
                    b.reader_now(now),
                )?;
                let v = r.bundle_version();
                b.provisioned = true;
                if *keep {
                    b.reader = Some(r);
                } else {
                    r.close()?;
                }
                bar.inc(1);
                Ok((b.ident.reader_id - 1, v))
            })
            .collect::<Result<Vec<_>, String>>()?;
        for (bus, v) in versions {
            self.installs.push((bus, now, v));
            if self.buses[bus as usize].reader.is_some() {
                self.touch(bus);
            }
        }
        Ok(())
    }

    /// Marks `bus`'s (open) reader the most recently used.
    fn touch(&mut self, bus: u32) {
        let b = &mut self.buses[bus as usize];
        if let Some(old) = b.lru.take() {
            self.open_lru.remove(&old);
        }
        self.lru_tick += 1;
        b.lru = Some(self.lru_tick);
        self.open_lru.insert(self.lru_tick, bus);
        self.readers_open_max = self.readers_open_max.max(self.open_lru.len() as u64);
    }

    /// Takes `bus`'s reader out of the open set without closing it (the
    /// caller drops it: a crash, or a copy of its directory).
    fn forget(&mut self, bus: u32) -> Option<BusReader> {
        let b = &mut self.buses[bus as usize];
        if let Some(old) = b.lru.take() {
            self.open_lru.remove(&old);
        }
        b.reader.take()
    }

    /// Flushes and closes the least recently used readers until one more
    /// fits under `execution.max_open_readers`.
    fn make_room(&mut self) -> Result<(), String> {
        let cap = self.scenario.execution.max_open_readers as usize;
        while self.open_lru.len() >= cap {
            let Some((_, victim)) = self.open_lru.pop_first() else {
                break;
            };
            let b = &mut self.buses[victim as usize];
            b.lru = None;
            if let Some(r) = b.reader.take() {
                b.closed_backlog = r.last_seq() - r.acked_up_to();
                r.close()?;
                self.reader_idle_closes += 1;
            }
        }
        Ok(())
    }

    /// Opens `bus`'s reader through the validator's `Reader::open` (a
    /// power-safe reopen: state rolled forward, high-water mark checked,
    /// replay cache rebuilt) after making room for it; not yet in the LRU.
    fn reopen(&mut self, bus: u32, t: u64) -> Result<BusReader, String> {
        self.make_room()?;
        let b = &self.buses[bus as usize];
        BusReader::open(&b.dir, b.reader_now(t))
    }

    /// Makes sure `bus`'s reader is open (reopening it if it was closed
    /// for idleness) and marks it the most recently used. A bus without a
    /// provisioned reader is left as it is.
    fn ensure_open(&mut self, bus: u32, t: u64) -> Result<(), String> {
        let b = &self.buses[bus as usize];
        if !b.provisioned {
            return Ok(());
        }
        if b.reader.is_none() {
            let started = std::time::Instant::now();
            let r = self.reopen(bus, t)?;
            self.note_idle_reopen(bus, r.last_seq(), started.elapsed().as_secs_f64());
            self.buses[bus as usize].reader = Some(r);
        }
        self.touch(bus);
        Ok(())
    }

    /// Counts a reopen after an idle close (its wall time `wall_s`) and
    /// checks the reopened reader, at sequence `last_seq`, still holds every
    /// ride it accepted.
    fn note_idle_reopen(&mut self, bus: u32, last_seq: u64, wall_s: f64) {
        *self
            .phase_wall_s
            .entry("reader_idle_reopens".into())
            .or_insert(0.0) += wall_s;
        let accepted = self.buses[bus as usize].max_accepted;
        if last_seq < accepted {
            self.violations.push((
                "accepted_rides_durable",
                format!(
                    "reader {} reopened after an idle close at sequence {last_seq} after accepting {accepted}",
                    bus + 1,
                ),
            ));
        }
        self.reader_idle_reopens += 1;
    }

    fn pick_weighted(rng: &mut ChaCha20Rng, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut x = below(rng, total);
        for (i, w) in weights.iter().enumerate() {
            if x < u64::from(*w) {
                return i;
            }
            x -= u64::from(*w);
        }
        weights.len() - 1
    }

    /// The day's riders and their rides (lazily derived accounts: only riders of the day exist).
    fn build_riders(&mut self) -> Result<(), String> {
        let s = self.scenario.clone();
        let mut rng = rng_for(self.seed, "riders");
        let mut demand = rng_for(self.seed, "demand");
        let mut seen = BTreeSet::new();
        let mut rides_left = s.riders.rides;
        let buses_by_route: BTreeMap<String, Vec<u32>> =
            self.buses
                .iter()
                .enumerate()
                .fold(BTreeMap::new(), |mut m, (i, b)| {
                    m.entry(b.ident.route.clone())
                        .or_insert_with(Vec::new)
                        .push(i as u32);
                    m
                });
        let routes: Vec<&String> = buses_by_route.keys().collect();
        let real_buses: Vec<u32> = (0..self.buses.len() as u32)
            .filter(|i| self.buses[*i as usize].real)
            .collect();
        let hour_weights = &s.demand.hourly;
        let mut plan: Vec<(u64, Ev)> = Vec::new();
        let n_special = s.attacks.expired_credential
            + s.attacks.deny_listed
            + s.attacks.stolen_phone
            + s.attacks.over_credit_limit;
        let mut special_left: Vec<RiderPart> =
            std::iter::repeat_n(RiderPart::Expired, s.attacks.expired_credential as usize)
                .chain(std::iter::repeat_n(
                    RiderPart::DenyListed,
                    s.attacks.deny_listed as usize,
                ))
                .chain(std::iter::repeat_n(
                    RiderPart::Stolen,
                    s.attacks.stolen_phone as usize,
                ))
                .chain(std::iter::repeat_n(
                    RiderPart::OverLimit,
                    s.attacks.over_credit_limit as usize,
                ))
                .collect();
        let mut guard = 0u64;
        while rides_left > 0 || !special_left.is_empty() {
            guard += 1;
            if guard > s.riders.rides * 4 + u64::from(n_special) + 1000 {
                return Err("could not draw distinct accounts (riders.accounts too small for riders.rides?)".into());
            }
            let idx = below(&mut rng, s.riders.accounts);
            if !seen.insert(idx) {
                continue;
            }
            // The account's own attributes, derived from the seed and its index.
            let mut arng = rng_for(self.seed, &format!("account/{idx}"));
            let profile = [
                Profile::Adult,
                Profile::Senior,
                Profile::Student,
                Profile::Child,
            ][Self::pick_weighted(&mut arng, &s.riders.profile_weights)];
            let lw: Vec<u32> = s.riders.credit_limits.iter().map(|l| l[1] as u32).collect();
            let mut credit_limit = s.riders.credit_limits[Self::pick_weighted(&mut arng, &lw)][0];
            let phone_off = if percent(&mut arng, s.riders.phone_clock_off_percent) {
                signed_upto(&mut arng, s.riders.phone_clock_off_max_s)
            } else {
                0
            };
            let part = special_left.pop().unwrap_or(RiderPart::Honest);
            let rider_ix = self.riders.len() as u32;
            let mut n_rides = s.riders.rides_per_rider
                [below(&mut arng, s.riders.rides_per_rider.len() as u64) as usize]
                as u64;
            if part == RiderPart::OverLimit {
                credit_limit = 100;
                n_rides = 6;
            }
            let profile = if part == RiderPart::OverLimit {
                Profile::Adult
            } else {
                profile
            };
            if part == RiderPart::Honest {
                n_rides = n_rides.min(rides_left);
                rides_left -= n_rides;
            }
            let home = below(&mut arng, routes.len() as u64) as usize;
            let other = below(&mut arng, routes.len() as u64) as usize;
            let mut times: Vec<u64> = (0..n_rides)
                .map(|_| {
                    let h = Self::pick_weighted(&mut demand, hour_weights) as u64;
                    self.midnight + h * HOUR_S + below(&mut demand, HOUR_S)
                })
                .collect();
            times.sort_unstable();
            for (k, t) in times.iter().enumerate() {
                let route = routes[if k % 2 == 0 { home } else { other }];
                let list = &buses_by_route[route];
                let mut bus = list[below(&mut demand, list.len() as u64) as usize];
                if part != RiderPart::Honest && !self.buses[bus as usize].real {
                    // Attackers and special riders ride real readers.
                    bus = real_buses[below(&mut demand, real_buses.len() as u64) as usize];
                }
                match part {
                    RiderPart::Expired => plan.push((
                        *t,
                        Ev::ExpiredRide {
                            rider: rider_ix,
                            bus,
                        },
                    )),
                    _ => {
                        let companion = percent(&mut demand, s.riders.companion_percent);
                        plan.push((
                            *t,
                            Ev::Ride {
                                rider: rider_ix,
                                bus,
                                companion,
                                source: None,
                            },
                        ));
                    }
                }
            }
            if part == RiderPart::Stolen {
                // Stolen between 12:00 and 15:00; the thief rides, the owner reports 20 min later.
                let theft = self.at_hour(12.0) + below(&mut rng, 3 * HOUR_S);
                for k in 0..THIEF_RIDES {
                    let bus = below(&mut rng, self.buses.len() as u64) as u32;
                    let t = theft + 600 + k * 45 * 60;
                    // The code is made at scan time from the stolen phone (see `thief`).
                    let attempt = Attempt {
                        kind: "stolen_phone",
                        must_catch: false,
                        expect: Expect::RefusedIfDenied,
                        reader_refused: None,
                    };
                    plan.push((
                        t,
                        Ev::Scan {
                            bus,
                            code: Vec::new(),
                            facts: ScanFacts {
                                account: Some(format!("thief-of:{rider_ix}")),
                                profile,
                                genuine: true,
                                tag: "thief",
                                attempt: Some(attempt),
                            },
                        },
                    ));
                }
                plan.push((theft + 1200, Ev::StolenReport { rider: rider_ix }));
            }
            self.riders.push(Rider {
                account: format!("acct-{idx}"),
                profile,
                credit_limit,
                phone: None,
                phone_off,
                credentials: Vec::new(),
                part,
            });
        }
        // Attack sources: honest rides whose accepted code is then abused.
        let a = &s.attacks;
        let honest: Vec<usize> = plan
            .iter()
            .enumerate()
            .filter(
                |(_, (_, e))| matches!(e, Ev::Ride { bus, .. } if self.buses[*bus as usize].real),
            )
            .map(|(i, _)| i)
            .collect();
        let mut tag_sources = |n: u32, what: &'static str, plan: &mut Vec<(u64, Ev)>| {
            for _ in 0..n {
                if honest.is_empty() {
                    return;
                }
                let i = honest[below(&mut self.rng_attack, honest.len() as u64) as usize];
                if let Ev::Ride { source, .. } = &mut plan[i].1 {
                    if source.is_none() {
                        *source = Some(what);
                    }
                }
            }
        };
        tag_sources(a.screenshot_later, "screenshot_later", &mut plan);
        tag_sources(a.replay_same_reader, "replay_same_reader", &mut plan);
        tag_sources(a.screenshot_shared, "screenshot_shared", &mut plan);
        tag_sources(a.tampered, "tampered", &mut plan);
        for _ in 0..a.forged {
            let t = self.at_hour(6.0) + below(&mut self.rng_attack, 16 * HOUR_S);
            let bus = below(&mut self.rng_attack, self.buses.len() as u64) as u32;
            plan.push((t, Ev::Forged { bus }));
        }
        for (t, e) in plan {
            self.push(t, e);
        }
        Ok(())
    }

    fn schedule_day(&mut self) {
        let s = self.scenario.clone();
        let mut rng = rng_for(self.seed, "faults");
        let day_start = self.at_hour(5.0);
        let depot = self.at_hour(f64::from(s.sync.depot_hour));
        for (i, b) in self.buses.iter().enumerate() {
            if !b.real {
                continue;
            }
            let slots = s.sync.en_route_interval_s.div_ceil(SYNC_SLOT_S);
            let phase = below(&mut rng, slots) * SYNC_SLOT_S;
            let mut t = day_start + phase;
            while t < depot {
                self.queue.insert(
                    (t, self.next_ev),
                    Ev::Sync {
                        bus: i as u32,
                        depot: false,
                    },
                );
                self.next_ev += 1;
                t += s.sync.en_route_interval_s;
            }
            self.queue.insert(
                (depot + (i as u64 % DEPOT_SLOTS) * SYNC_SLOT_S, self.next_ev),
                Ev::Sync {
                    bus: i as u32,
                    depot: true,
                },
            );
            self.next_ev += 1;
        }
        let mut t = day_start;
        while t <= depot + HOUR_S {
            self.push(t, Ev::Settle);
            t += s.sync.settle_every_s;
        }
        let mut t = day_start;
        while t <= depot + HOUR_S {
            self.push(t, Ev::Sample);
            t += SAMPLE_EVERY_S;
        }
        let real: Vec<u32> = (0..self.buses.len() as u32)
            .filter(|i| self.buses[*i as usize].real)
            .collect();
        let pick = |rng: &mut ChaCha20Rng| real[below(rng, real.len() as u64) as usize];
        for _ in 0..s.faults.power_cuts {
            let t = day_start + below(&mut rng, depot - day_start);
            let bus = pick(&mut rng);
            self.push(t, Ev::PowerCut { bus });
        }
        for _ in 0..s.faults.reader_clock_jumps {
            let t = self.at_hour(8.0) + below(&mut rng, 10 * HOUR_S);
            let bus = pick(&mut rng);
            self.push(t, Ev::ClockJump { bus });
        }
        for _ in 0..s.faults.settlement_restarts {
            let t = self.at_hour(6.0) + below(&mut rng, 15 * HOUR_S);
            self.push(t, Ev::SettlementRestart);
        }
        for i in 0..self.buses.len() as u32 {
            if self.buses[i as usize].role == Role::Restored {
                self.push(
                    self.at_hour(11.0) + below(&mut rng, HOUR_S),
                    Ev::Backup { bus: i },
                );
                self.push(
                    self.at_hour(f64::from(s.sync.depot_hour) - 1.5),
                    Ev::RestoreBackup { bus: i },
                );
            }
        }
        self.push(self.at_hour(21.0), Ev::Payments);
        self.schedule_renewals();
    }

    /// Runs the whole day, then the liveness phase.
    pub fn run(&mut self, opts: &RunOptions) -> Result<(), String> {
        let mp = indicatif::MultiProgress::new();
        if !opts.progress {
            mp.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let style =
            indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {msg}")
                .map_err(|e| e.to_string())?
                .progress_chars("=> ");
        let t0 = std::time::Instant::now();
        let setup = self.midnight + SETUP_HOUR * HOUR_S;
        let bar = mp.add(indicatif::ProgressBar::new(
            self.riders.len() as u64 + self.buses.iter().filter(|b| b.real).count() as u64,
        ));
        bar.set_style(style.clone());
        bar.set_prefix("setup");
        self.enrol(setup, &bar)?;
        self.settle_at(setup)?;
        self.provision_fleet(setup, &bar)?;
        bar.finish();
        self.phase_wall_s
            .insert("setup".into(), t0.elapsed().as_secs_f64());
        self.log(opts, "setup");

        self.schedule_day();
        let t1 = std::time::Instant::now();
        let bar = mp.add(indicatif::ProgressBar::new(self.queue.len() as u64));
        bar.set_style(style.clone());
        bar.set_prefix("day");
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            let before = bar.position();
            if Self::batchable(&ev) {
                let n = self.run_rides(t, ev)?;
                bar.inc(n);
            } else if let Ev::Sync { bus, depot } = ev {
                let n = self.run_syncs(t, bus, depot)?;
                bar.inc(n);
            } else {
                self.step(t, ev)?;
                bar.inc(1);
            }
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            if bar.position() / 4096 != before / 4096 {
                bar.set_length(bar.position() + self.queue.len() as u64);
                bar.set_message(format!(
                    "{} scans, {} accepted",
                    self.scanned,
                    self.journal.len()
                ));
            }
        }
        bar.finish();
        self.phase_wall_s
            .insert("day".into(), t1.elapsed().as_secs_f64());
        self.log(opts, "day");

        let t2 = std::time::Instant::now();
        let end = self.at_hour(f64::from(self.scenario.sync.depot_hour) + 1.0);
        self.liveness(end)?;
        self.phase_wall_s
            .insert("liveness".into(), t2.elapsed().as_secs_f64());
        self.log(opts, "liveness");
        self.link_stats = self.faults.stats();
        let (batches, bundles) = self.faults.served_s();
        self.phase_wall_s
            .insert("sync_settlement_batches".into(), batches);
        self.phase_wall_s
            .insert("sync_settlement_bundles".into(), bundles);
        self.settlement.shutdown()?;
        Ok(())
    }

    fn log(&self, opts: &RunOptions, phase: &str) {
        if opts.log_phases {
            eprintln!(
                "fare-simulator: phase {phase} done in {:.1} s ({} scans, {} accepted, {} riders enrolled)",
                self.phase_wall_s.get(phase).copied().unwrap_or(0.0),
                self.scanned,
                self.journal.len(),
                self.riders.iter().filter(|r| r.phone.is_some()).count()
            );
        }
    }

    fn enrol(&mut self, now: u64, bar: &indicatif::ProgressBar) -> Result<(), String> {
        self.settlement.set_time(now);
        // Which riders touch a real bus.
        let mut needed = vec![false; self.riders.len()];
        for ev in self.queue.values() {
            match ev {
                Ev::Ride { rider, bus, .. } | Ev::ExpiredRide { rider, bus }
                    if self.buses[*bus as usize].real =>
                {
                    needed[*rider as usize] = true
                }
                _ => {}
            }
        }
        let todo: Vec<usize> = (0..self.riders.len())
            .filter(|i| needed[*i] || self.riders[*i].part != RiderPart::Honest)
            .collect();
        bar.inc((self.riders.len() - todo.len()) as u64);
        // Each phone's key comes from its own RNG (seeded from the
        // account), so generating them on every core, collected in the
        // riders' order, gives the same phones as one by one.
        use rayon::prelude::*;
        let (seed, riders) = (self.seed, &self.riders);
        let all_phones: Vec<Phone> = todo
            .par_iter()
            .map(|&i| {
                let account = &riders[i].account;
                Phone::generate(&mut rng_for(seed, &format!("phone/{account}")))
            })
            .collect();
        let mut all_phones = all_phones.into_iter();
        // Each batch's commit runs while the next batch is checked and
        // signed (the commit is sled's, on one core; the signatures use
        // every core): the same writes in the same order.
        let (settlement, riders) = (&self.settlement, &mut self.riders);
        std::thread::scope(|scope| -> Result<(), String> {
            let mut committing = None;
            for chunk in todo.chunks(ENROL_BATCH) {
                let phones: Vec<Phone> = all_phones.by_ref().take(chunk.len()).collect();
                let mut batch = Vec::with_capacity(chunk.len());
                for (&i, phone) in chunk.iter().zip(&phones) {
                    let r = &riders[i];
                    batch.push(Enrolment {
                        account: r.account.clone(),
                        profile: r.profile,
                        credit_limit: r.credit_limit,
                        device_public_key: phone.public_key(),
                        valid_for_s: if r.part == RiderPart::Expired {
                            SHORT_CREDENTIAL_S
                        } else {
                            CREDENTIAL_S
                        },
                    });
                }
                let (writes, issued) = settlement.prepare_enrolments(&batch)?;
                joined(committing.take())?;
                committing = Some(scope.spawn(move || settlement.commit_enrolments(writes)));
                for ((&i, mut phone), (cred, id)) in chunk.iter().zip(phones).zip(issued) {
                    let r = &mut riders[i];
                    let device_now = (now as i64 + r.phone_off) as u64;
                    phone.install(&cred, now, device_now)?;
                    r.credentials.push(id);
                    r.phone = Some(phone);
                    bar.inc(1);
                }
            }
            joined(committing)
        })?;
        for i in todo {
            let (part, account) = (self.riders[i].part, self.riders[i].account.clone());
            if part == RiderPart::DenyListed {
                let (version, ids) = self.settlement.freeze(&account)?;
                self.frozen.insert(account.clone());
                self.note_deny(version, now, ids);
            }
            if part == RiderPart::OverLimit {
                self.attempts.push(Attempt {
                    kind: "over_credit_limit",
                    must_catch: true,
                    expect: Expect::Revoked(account),
                    reader_refused: None,
                });
            }
        }
        Ok(())
    }

    fn settle_at(&mut self, t: u64) -> Result<(), String> {
        self.settlement.set_time(t);
        let started = std::time::Instant::now();
        let mut times = fare_settlement::settle::PhaseTimes::default();
        let (version, ids) = self.settlement.settle(&mut times)?;
        *self
            .phase_wall_s
            .entry("settlement_runs".into())
            .or_insert(0.0) += started.elapsed().as_secs_f64();
        // Where the runs' time goes (the run's own phases, summed over the
        // day): a tester sizing a city sees whether re-verification or the
        // store's commits bound it.
        for (phase, _, wall) in times.phases() {
            *self
                .phase_wall_s
                .entry(format!("settlement_run_{phase}"))
                .or_insert(0.0) += wall.as_secs_f64();
        }
        self.settle_runs += 1;
        self.note_deny(version, t, ids);
        Ok(())
    }

    /// Records a deny list version settlement published.
    fn note_deny(&mut self, version: u64, t: u64, ids: Vec<[u8; 16]>) {
        let set: BTreeSet<[u8; 16]> = ids.into_iter().collect();
        if self
            .deny_versions
            .last()
            .is_none_or(|(v, _, _)| *v < version)
        {
            self.deny_versions.push((version, t, set));
        }
    }

    /// The deny set a reader holding bundle `version` enforces.
    fn denied_at(&self, version: u64, cred: &[u8; 16]) -> bool {
        self.deny_versions
            .iter()
            .rev()
            .find(|(v, _, _)| *v <= version)
            .is_some_and(|(_, _, s)| s.contains(cred))
    }

    fn step(&mut self, t: u64, ev: Ev) -> Result<(), String> {
        self.settlement.set_time(t);
        match ev {
            Ev::Ride {
                rider,
                bus,
                companion,
                source,
            } => self.ride(t, rider, bus, companion, source)?,
            Ev::Scan { bus, code, facts } => {
                if facts.tag == "thief" {
                    let who = facts.account.as_deref().unwrap_or("");
                    self.thief(t, bus, who, facts.attempt)?;
                } else {
                    self.scan(t, bus, &code, facts);
                }
            }
            Ev::Forged { bus } => self.forged(t, bus),
            Ev::ExpiredRide { rider, bus } => self.expired_ride(t, rider, bus),
            Ev::StolenReport { rider } => {
                let acct = self.riders[rider as usize].account.clone();
                let (version, ids) = self.settlement.freeze(&acct)?;
                self.frozen.insert(acct);
                self.note_deny(version, t, ids);
            }
            Ev::Sync { bus, depot } => self.syncs(t, &[(bus, depot)])?,
            Ev::Settle => self.settle_at(t)?,
            Ev::Sample => {
                let backlog = self
                    .buses
                    .iter()
                    .filter(|b| b.provisioned)
                    .map(|b| {
                        b.reader
                            .as_ref()
                            .map_or(b.closed_backlog, |r| r.last_seq() - r.acked_up_to())
                    })
                    .sum();
                self.backlog.push((t, backlog));
            }
            Ev::PowerCut { bus } => self.power_cut(t, bus)?,
            Ev::ClockJump { bus } => {
                self.buses[bus as usize].jump = self.scenario.faults.reader_clock_jump_s as i64
            }
            Ev::SettlementRestart => {
                self.settlement.restart()?;
                self.settlement_restarts += 1;
            }
            Ev::Backup { bus } => self.backup(t, bus)?,
            Ev::RestoreBackup { bus } => self.restore(t, bus)?,
            Ev::Payments => self.payments()?,
            Ev::Renew { rider } => self.renew(t, rider)?,
        }
        Ok(())
    }

    fn ride(
        &mut self,
        t: u64,
        rider: u32,
        bus: u32,
        companion: bool,
        source: Option<&'static str>,
    ) -> Result<(), String> {
        let at = RideAt {
            t,
            rider,
            bus,
            companion,
        };
        let Some(c) = self.ride_codes(at, None) else {
            return Ok(());
        };
        let (account, profile, code) = (c.account, c.profile, c.code);
        let ans = self.scan(
            t,
            bus,
            &code,
            ScanFacts {
                account: Some(account.clone()),
                profile,
                genuine: true,
                tag: c.tag,
                attempt: c.attempt,
            },
        );
        if let Some(c2) = c.second {
            self.scan(
                t + 3,
                bus,
                &c2,
                ScanFacts {
                    account: Some(account.clone()),
                    profile,
                    genuine: true,
                    tag: "companion",
                    attempt: None,
                },
            );
        }
        if ans.accepted_seq.is_some() {
            if self.code_bank.len() < CODE_BANK {
                self.code_bank.push((code.clone(), t));
            }
            if let Some(kind) = source {
                self.abuse(t, bus, &code, account, profile, kind);
            }
        }
        Ok(())
    }

    /// What a ride puts before the reader: the rider's code and, with
    /// `companion`, a companion's 3 s later from the same phone, and how
    /// the rider's scan is tagged. `None` when nothing is scanned: a
    /// modelled-only bus (counted), no phone, or the wallet refused
    /// (counted). Shared by `ride` and `prepare_ride` so the two paths
    /// make the same codes; `made`: what the phone made for this ride
    /// already (`batch_codes`), else it makes them here.
    fn ride_codes(&mut self, at: RideAt, made: Option<Option<PhoneCodes>>) -> Option<RideCodes> {
        let RideAt {
            t,
            rider,
            bus,
            companion,
        } = at;
        if !self.buses[bus as usize].real {
            self.modelled_only_rides += 1 + u64::from(companion);
            return None;
        }
        let r = &mut self.riders[rider as usize];
        let (account, profile, part) = (r.account.clone(), r.profile, r.part);
        let device_now = (t as i64 + r.phone_off) as u64;
        let phone = r.phone.as_mut()?;
        let made = made.unwrap_or_else(|| make_codes(phone, device_now, companion));
        let Some((code, second)) = made else {
            self.wallet_refusals += 1;
            return None;
        };
        let (tag, attempt) = if part == RiderPart::DenyListed {
            (
                "deny_listed",
                Some(Attempt::refused_at_reader("deny_listed")),
            )
        } else {
            ("honest", None)
        };
        Some(RideCodes {
            account,
            profile,
            code,
            second,
            tag,
            attempt,
        })
    }

    /// Most distinct buses a ride batch or a contact chunk takes: fewer
    /// than `execution.max_open_readers`, so that opening one of their
    /// readers never closes another (at least one).
    fn buses_at_once(&self) -> usize {
        (self.scenario.execution.max_open_readers as usize)
            .saturating_sub(1)
            .max(1)
    }

    /// Whether `ev` may join a ride batch: a ride whose code no attacker
    /// reuses (`abuse` schedules events; a batch schedules none).
    fn batchable(ev: &Ev) -> bool {
        matches!(ev, Ev::Ride { source: None, .. })
    }

    /// Takes from the queue the rides that follow `first` with nothing
    /// else between them (at most `RIDE_BATCH`, on at most
    /// `buses_at_once` distinct buses) and runs them with `ride_batch`;
    /// returns how many.
    fn run_rides(&mut self, t: u64, first: Ev) -> Result<u64, String> {
        let most = self.buses_at_once();
        let mut batch = vec![(t, first)];
        let mut buses = BTreeSet::new();
        if let (_, Ev::Ride { bus, .. }) = &batch[0] {
            buses.insert(*bus);
        }
        while batch.len() < RIDE_BATCH {
            let next_bus = match self.queue.first_key_value() {
                Some((_, ev @ Ev::Ride { bus, .. })) if Self::batchable(ev) => *bus,
                _ => break,
            };
            if !buses.contains(&next_bus) && buses.len() >= most {
                break;
            }
            buses.insert(next_bus);
            if let Some(((t, _), ev)) = self.queue.pop_first() {
                batch.push((t, ev));
            }
        }
        let n = batch.len() as u64;
        self.ride_batch(batch)?;
        Ok(n)
    }

    /// Runs consecutive rides (`run_rides`) as `ride` would one by one,
    /// with the readers' decisions on every core: first, in event order,
    /// everything a decision needs (the phones' codes, the camera-frame
    /// draws, the readers opened); then each reader's scans, in order, on
    /// its own thread; then, in event order again, everything recorded
    /// after a decision. A decision touches only its reader, and nothing
    /// recorded after one is read before the next, so the report is the
    /// one the sequential loop gives.
    fn ride_batch(&mut self, batch: Vec<(u64, Ev)>) -> Result<(), String> {
        let mut pending = Vec::with_capacity(batch.len() * 2);
        let mut opens = BTreeMap::new();
        let made = self.batch_codes(&batch);
        for ((t, ev), made) in batch.into_iter().zip(made) {
            if let Ev::Ride {
                rider,
                bus,
                companion,
                ..
            } = ev
            {
                self.settlement.set_time(t);
                let at = RideAt {
                    t,
                    rider,
                    bus,
                    companion,
                };
                self.prepare_ride(at, made, &mut pending, &mut opens);
            }
        }
        let (mut decided, mut reopened) = self.decide_pending(&pending, &opens)?;
        for (p, d) in pending.into_iter().zip(decided.iter_mut()) {
            let (Some(rnow), Some(d)) = (p.rnow, d.take()) else {
                continue;
            };
            // Where the loop one by one would have reopened it: before
            // its first scan.
            if let Some((last_seq, wall_s)) = reopened.remove(&p.bus) {
                self.note_idle_reopen(p.bus, last_seq, wall_s);
            }
            let own_code = p.own.then(|| p.code.clone());
            let facts = ScanFacts {
                account: Some(p.account),
                profile: p.profile,
                genuine: true,
                tag: p.tag,
                attempt: p.attempt,
            };
            let ans = self.scan_end(p.t, p.bus, &p.code, facts, d, rnow);
            if let Some(code) = own_code.filter(|_| ans.accepted_seq.is_some()) {
                if self.code_bank.len() < CODE_BANK {
                    self.code_bank.push((code, p.t));
                }
            }
        }
        Ok(())
    }

    /// The codes the phones of a ride batch make for its rides (as
    /// `ride_codes` would, one ride after another), each phone on its own
    /// thread, its rides in event order: a phone's codes depend only on
    /// its own state. In the batch's order; `None` where `ride_codes`
    /// makes none (a modelled-only bus, no phone).
    fn batch_codes(&mut self, batch: &[(u64, Ev)]) -> Vec<Option<Option<PhoneCodes>>> {
        use rayon::prelude::*;
        let mut by_rider: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, (_, ev)) in batch.iter().enumerate() {
            if let Ev::Ride { rider, bus, .. } = ev {
                if self.buses[*bus as usize].real && self.riders[*rider as usize].phone.is_some() {
                    by_rider.entry(*rider).or_default().push(i);
                }
            }
        }
        let work: Vec<(u32, Phone, i64, Vec<usize>)> = by_rider
            .into_iter()
            .filter_map(|(rider, rides)| {
                let r = &mut self.riders[rider as usize];
                Some((rider, r.phone.take()?, r.phone_off, rides))
            })
            .collect();
        let done: Vec<_> = work
            .into_par_iter()
            .map(|(rider, mut phone, phone_off, rides)| {
                let codes: Vec<(usize, Option<PhoneCodes>)> = rides
                    .into_iter()
                    .map(|i| {
                        let (t, ev) = &batch[i];
                        let companion = matches!(
                            ev,
                            Ev::Ride {
                                companion: true,
                                ..
                            }
                        );
                        let device_now = (*t as i64 + phone_off) as u64;
                        (i, make_codes(&mut phone, device_now, companion))
                    })
                    .collect();
                (rider, phone, codes)
            })
            .collect();
        let mut made: Vec<Option<Option<PhoneCodes>>> = batch.iter().map(|_| None).collect();
        for (rider, phone, codes) in done {
            self.riders[rider as usize].phone = Some(phone);
            for (i, c) in codes {
                made[i] = Some(c);
            }
        }
        made
    }

    /// A ride's scans (its own and a companion's), prepared as `ride` and
    /// `scan_begin` do before the reader decides; `made` as `ride_codes`
    /// takes it.
    fn prepare_ride(
        &mut self,
        at: RideAt,
        made: Option<Option<PhoneCodes>>,
        pending: &mut Vec<PendingScan>,
        opens: &mut BTreeMap<u32, u64>,
    ) {
        let (t, bus) = (at.t, at.bus);
        let Some(c) = self.ride_codes(at, made) else {
            return;
        };
        let (account, profile) = (c.account, c.profile);
        let scans = std::iter::once((t, c.code, c.tag, c.attempt, true))
            .chain(c.second.map(|c2| (t + 3, c2, "companion", None, false)));
        for (t, code, tag, attempt, own) in scans {
            let planned = pending
                .iter()
                .filter(|p| p.frame_ok && p.rnow.is_some())
                .count() as u64;
            let (frame_ok, rnow) = self.scan_begin(t, bus, self.frames() + planned, Some(opens));
            pending.push(PendingScan {
                t,
                bus,
                code,
                account: account.clone(),
                profile,
                tag,
                attempt,
                frame_ok,
                rnow,
                own,
            });
        }
    }

    /// The readers' decisions on `pending` (in its order per reader), each
    /// reader on its own thread, those in `opens` opened there first
    /// (through the validator's `Reader::open`, at the reader time given);
    /// `None` for a scan whose reader is down. Also each reopened reader's
    /// last sequence and the wall time of its open.
    #[allow(clippy::type_complexity)]
    fn decide_pending(
        &mut self,
        pending: &[PendingScan],
        opens: &BTreeMap<u32, u64>,
    ) -> Result<(Vec<Option<Decided>>, BTreeMap<u32, (u64, f64)>), String> {
        use rayon::prelude::*;
        let mut by_bus: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, p) in pending.iter().enumerate() {
            if p.rnow.is_some() {
                by_bus.entry(p.bus).or_default().push(i);
            }
        }
        let mut work = Vec::with_capacity(by_bus.len());
        for (bus, scans) in by_bus {
            let b = &mut self.buses[bus as usize];
            let reader = match (b.reader.take(), opens.get(&bus)) {
                (Some(r), _) => Ok(r),
                (None, Some(&rnow)) => Err((b.dir.clone(), rnow)),
                (None, None) => {
                    return Err(format!("reader {} closed within a ride batch", bus + 1))
                }
            };
            work.push((bus, reader, scans));
        }
        let done: Vec<Result<(ReaderDecisions, Option<(u64, f64)>), String>> = work
            .into_par_iter()
            .map(|(bus, reader, scans)| {
                let (mut reader, reopened) = match reader {
                    Ok(r) => (r, None),
                    Err((dir, rnow)) => {
                        let started = std::time::Instant::now();
                        let r = BusReader::open(&dir, rnow)
                            .map_err(|e| format!("reopen reader {}: {e}", bus + 1))?;
                        let seq = r.last_seq();
                        (r, Some((seq, started.elapsed().as_secs_f64())))
                    }
                };
                let out = scans
                    .into_iter()
                    .map(|i| {
                        let p = &pending[i];
                        let rnow = p.rnow.unwrap_or_default();
                        (i, decide(&mut reader, &p.code, p.frame_ok, rnow))
                    })
                    .collect();
                Ok(((bus, reader, out), reopened))
            })
            .collect();
        let mut decided: Vec<Option<Decided>> = pending.iter().map(|_| None).collect();
        let mut reopened = BTreeMap::new();
        let mut failed = None;
        for r in done {
            match r {
                Ok(((bus, reader, out), again)) => {
                    self.buses[bus as usize].reader = Some(reader);
                    if let Some(a) = again {
                        reopened.insert(bus, a);
                    }
                    for (i, d) in out {
                        decided[i] = Some(d);
                    }
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok((decided, reopened)),
        }
    }

    /// Schedules an attack that reuses an accepted code.
    fn abuse(
        &mut self,
        t: u64,
        bus: u32,
        code: &[u8],
        account: String,
        profile: Profile,
        kind: &'static str,
    ) {
        let key = code_key(code).expect("an accepted code parses");
        let other = self.other_bus(bus, false);
        let same_route = self.other_bus(bus, true);
        let (at, on, bytes, expect, must, tag) = match kind {
            "screenshot_later" => (
                t + 900 + below(&mut self.rng_attack, 1800),
                other,
                code.to_vec(),
                Expect::ReaderRefuses,
                true,
                "screenshot_later",
            ),
            "replay_same_reader" => (
                t + 5,
                bus,
                code.to_vec(),
                Expect::ReaderRefuses,
                true,
                "replay_same_reader",
            ),
            "screenshot_shared" => (
                t + 10,
                same_route,
                code.to_vec(),
                Expect::RefusedOrOneRated(key),
                true,
                "screenshot_shared",
            ),
            _ => {
                let mut b = code.to_vec();
                b[TAMPER_BYTE] ^= 0x01;
                (t + 3, bus, b, Expect::ReaderRefuses, true, "tampered")
            }
        };
        let genuine = kind != "tampered";
        self.push(
            at,
            Ev::Scan {
                bus: on,
                code: bytes,
                facts: ScanFacts {
                    account: Some(account),
                    profile,
                    genuine,
                    tag,
                    attempt: Some(Attempt {
                        kind,
                        must_catch: must,
                        expect,
                        reader_refused: None,
                    }),
                },
            },
        );
    }

    fn other_bus(&mut self, bus: u32, same_route: bool) -> u32 {
        let route = self.buses[bus as usize].ident.route.clone();
        let cands: Vec<u32> = (0..self.buses.len() as u32)
            .filter(|i| {
                *i != bus
                    && self.buses[*i as usize].real
                    && (!same_route || self.buses[*i as usize].ident.route == route)
            })
            .collect();
        if cands.is_empty() {
            if same_route {
                return self.other_bus(bus, false);
            }
            return bus;
        }
        cands[below(&mut self.rng_attack, cands.len() as u64) as usize]
    }

    /// `bus` when it runs on a real reader, else another real one (an
    /// attacker's scan must reach a reader).
    fn real_or_other(&mut self, bus: u32) -> u32 {
        if self.buses[bus as usize].real {
            bus
        } else {
            self.other_bus(bus, false)
        }
    }

    /// A ride code under a credential no issuer of this deployment signed
    /// (the forger's own key), made at `t`.
    fn forged_code(&mut self, t: u64) -> Vec<u8> {
        let device = self.forger.next_key();
        let mut id = [0u8; 16];
        self.rng_attack.fill_bytes(&mut id);
        let cred = self.forger.credential(
            &device,
            fare_credential::CredentialId(id),
            Profile::Adult,
            t,
            86_400,
        );
        fare_credential::RideCode::sign_v1(&cred, t as u32, 1, &device)
            .as_bytes()
            .to_vec()
    }

    fn forged(&mut self, t: u64, bus: u32) {
        let bus = self.real_or_other(bus);
        let code = self.forged_code(t);
        let attempt = Attempt::refused_at_reader("forged");
        self.scan(
            t,
            bus,
            &code,
            ScanFacts {
                account: None,
                profile: Profile::Adult,
                genuine: false,
                tag: "forged",
                attempt: Some(attempt),
            },
        );
    }

    fn expired_ride(&mut self, t: u64, rider: u32, bus: u32) {
        let bus = self.real_or_other(bus);
        let r = &mut self.riders[rider as usize];
        let (account, profile) = (r.account.clone(), r.profile);
        let Some(phone) = r.phone.as_mut() else {
            return;
        };
        // A tampered phone clock correction makes the wallet stamp a time
        // inside the credential's (past) validity.
        let setup = self.midnight + SETUP_HOUR * HOUR_S;
        let device_now = (t as i64 + r.phone_off) as u64;
        let tampered = phone.set_offset(setup + SHORT_CREDENTIAL_S - 60, device_now);
        let Ok(code) = tampered.and_then(|()| phone.code(device_now)) else {
            self.wallet_refusals += 1;
            return;
        };
        let attempt = Attempt::refused_at_reader("expired_credential");
        self.scan(
            t,
            bus,
            &code,
            ScanFacts {
                account: Some(account),
                profile,
                genuine: true,
                tag: "expired_credential",
                attempt: Some(attempt),
            },
        );
    }

    fn thief(
        &mut self,
        t: u64,
        bus: u32,
        who: &str,
        attempt: Option<Attempt>,
    ) -> Result<(), String> {
        let bus = self.real_or_other(bus);
        let rider: usize = who
            .trim_start_matches("thief-of:")
            .parse()
            .map_err(|_| "thief tag".to_string())?;
        let r = &mut self.riders[rider];
        let (account, profile) = (r.account.clone(), r.profile);
        let device_now = (t as i64 + r.phone_off) as u64;
        let Some(Ok(code)) = r.phone.as_mut().map(|p| p.code(device_now)) else {
            self.wallet_refusals += 1;
            return Ok(());
        };
        self.scan(
            t,
            bus,
            &code,
            ScanFacts {
                account: Some(account),
                profile,
                genuine: true,
                tag: "thief",
                attempt,
            },
        );
        Ok(())
    }

    /// One scan at a real reader: frame or payload, recorded.
    fn scan(&mut self, t: u64, bus: u32, code: &[u8], facts: ScanFacts) -> Answer {
        let (frame_ok, rnow) = self.scan_begin(t, bus, self.frames(), None);
        let reader = self.buses[bus as usize].reader.as_mut();
        let (Some(rnow), Some(reader)) = (rnow, reader) else {
            return reader_down();
        };
        let d = decide(reader, code, frame_ok, rnow);
        self.scan_end(t, bus, code, facts, d, rnow)
    }

    /// The part of a scan before the reader decides, made in event order:
    /// whether it is a camera frame (`frames_so_far` rendered before it),
    /// and the reader opened; `(frame, reader time)`, the time `None` when
    /// the reader is down.
    ///
    /// With `deferred` (a ride batch), a reader closed for idleness is not
    /// opened here: room is made for it and it is marked used, as
    /// `ensure_open` does, and its bus and reader time are put in
    /// `deferred` for `decide_pending` to open it on its thread.
    fn scan_begin(
        &mut self,
        t: u64,
        bus: u32,
        frames_so_far: u64,
        deferred: Option<&mut BTreeMap<u32, u64>>,
    ) -> (bool, Option<u64>) {
        let frame_ok = frames_so_far < self.scenario.execution.max_frames
            && percent(&mut self.rng_frames, self.scenario.execution.frame_percent);
        if let Some(opens) = deferred {
            let b = &self.buses[bus as usize];
            if !b.provisioned {
                return (frame_ok, None);
            }
            let rnow = b.reader_now(t);
            if b.reader.is_none() && !opens.contains_key(&bus) {
                if let Err(e) = self.make_room() {
                    self.fatal
                        .get_or_insert(format!("close a reader for reader {}: {e}", bus + 1));
                }
                opens.insert(bus, rnow);
            }
            self.touch(bus);
            return (frame_ok, Some(rnow));
        }
        if let Err(e) = self.ensure_open(bus, t) {
            self.fatal
                .get_or_insert(format!("reopen reader {}: {e}", bus + 1));
        }
        let b = &self.buses[bus as usize];
        (frame_ok, b.reader.as_ref().map(|_| b.reader_now(t)))
    }

    /// The part of a scan after the reader decided, in event order: the
    /// counts, the journal and the checks of what the reader answered.
    fn scan_end(
        &mut self,
        t: u64,
        bus: u32,
        code: &[u8],
        facts: ScanFacts,
        d: Decided,
        rnow: u64,
    ) -> Answer {
        let ScanFacts {
            account,
            profile,
            genuine,
            tag,
            attempt,
        } = facts;
        let Decided {
            ans,
            framed,
            version,
            wall_s,
        } = d;
        if framed {
            self.latency_frame_us.push(ans.latency_ns / 1000);
        } else {
            self.latency_payload_us.push(ans.latency_ns / 1000);
        }
        *self.phase_wall_s.entry("scans".into()).or_insert(0.0) += wall_s;
        self.scanned += 1;
        let key = code_key(code);
        if let Some(k) = key.filter(|_| genuine) {
            if self.denied_at(version, &k.0) {
                self.deny_checks += 1;
                if ans.accepted_seq.is_some() {
                    self.violations.push(("deny_list_enforced", format!("reader {} accepted a credential its deny list (bundle v{version}) names", bus + 1)));
                }
            } else if ans.reason.as_deref() == Some("revoked") {
                self.violations.push((
                    "deny_list_enforced",
                    format!(
                        "reader {} refused as revoked a credential its deny list does not name",
                        bus + 1
                    ),
                ));
            }
        }
        match (&ans.accepted_seq, &ans.reason) {
            (Some(seq), _) => {
                let b = &mut self.buses[bus as usize];
                b.max_accepted = b.max_accepted.max(*seq);
                if !genuine {
                    self.violations.push((
                        "no_forgery_accepted",
                        format!("reader {} accepted a {tag} code", bus + 1),
                    ));
                }
                self.journal.push(Accepted {
                    bus,
                    seq: *seq,
                    reader_time: rnow,
                    true_time: t,
                    code: key,
                    account,
                    profile,
                    genuine,
                    tag,
                });
            }
            (None, reason) => {
                let reason = reason.clone().unwrap_or_else(|| "unknown".into());
                if genuine
                    && matches!(
                        reason.as_str(),
                        "bad_issuer_signature"
                            | "bad_device_signature"
                            | "malformed"
                            | "unknown_issuer_key"
                    )
                {
                    self.violations.push((
                        "no_genuine_refused_as_forgery",
                        format!(
                            "reader {} refused a genuine {tag} code as {reason}",
                            bus + 1
                        ),
                    ));
                }
                *self.rejected_by_reason.entry(reason).or_insert(0) += 1;
            }
        }
        if let Some(mut a) = attempt {
            a.reader_refused = Some(ans.accepted_seq.is_none());
            self.attempts.push(a);
        }
        ans
    }

    /// Takes from the queue the sync events at `t` that follow the first
    /// one with nothing else between them (at most [`CONTACT_GROUP`]) and
    /// runs them with `syncs`; returns how many events it took.
    fn run_syncs(&mut self, t: u64, bus: u32, depot: bool) -> Result<u64, String> {
        let mut events = vec![(bus, depot)];
        while events.len() < CONTACT_GROUP {
            match self.queue.first_key_value() {
                Some(((at, _), Ev::Sync { bus, depot })) if *at == t => {
                    events.push((*bus, *depot));
                }
                _ => break,
            }
            self.queue.pop_first();
        }
        self.settlement.set_time(t);
        self.syncs(t, &events)?;
        Ok(events.len() as u64)
    }

    /// The sync events `(bus, depot)` at `t`, as they would run one by one:
    /// the draws of who is online in event order, then the contacts
    /// together (`contacts`); a compromised reader's depot visit runs in
    /// its place, after the contacts before it.
    fn syncs(&mut self, t: u64, events: &[(u32, bool)]) -> Result<(), String> {
        let mut group = Vec::new();
        for &(bus, depot) in events {
            match self.sync_plan(bus, depot) {
                SyncPlan::Skip => {}
                SyncPlan::Contact(attempts) => group.push((bus, attempts)),
                SyncPlan::Compromise => {
                    self.contacts(t, &std::mem::take(&mut group))?;
                    self.compromise(t, bus)?;
                }
            }
        }
        self.contacts(t, &group)
    }

    /// What a sync event of `bus` does: nothing (no reader, or no network
    /// en route: drawn here), a contact of so many attempts, or a
    /// compromised reader's attack at the depot.
    fn sync_plan(&mut self, bus: u32, depot: bool) -> SyncPlan {
        let b = &self.buses[bus as usize];
        if !b.provisioned || b.retired {
            return SyncPlan::Skip;
        }
        if depot && matches!(b.role, Role::Compromised | Role::UndeclaredDrop) {
            return SyncPlan::Compromise;
        }
        if depot {
            return SyncPlan::Contact(DEPOT_ATTEMPTS);
        }
        // A compromised reader keeps its day to itself until the depot.
        let offline = matches!(
            b.role,
            Role::Offline | Role::NearlyFull | Role::Compromised | Role::UndeclaredDrop
        );
        if offline
            || !percent(
                &mut self.rng_sync,
                self.scenario.sync.en_route_online_percent,
            )
        {
            self.syncs_offline += 1;
            return SyncPlan::Skip;
        }
        SyncPlan::Contact(1)
    }

    /// Contacts `(bus, attempts)` at `t`, each bus's attempts until one
    /// succeeds (everything uploaded, the bundle fetched), in chunks of
    /// distinct buses, at most `buses_at_once` and [`CONTACT_GROUP`].
    fn contacts(&mut self, t: u64, group: &[(u32, u32)]) -> Result<(), String> {
        let most = self.buses_at_once().min(CONTACT_GROUP);
        let mut rest = group;
        while !rest.is_empty() {
            let mut buses = BTreeSet::new();
            let n = rest
                .iter()
                .take(most)
                .take_while(|(bus, _)| buses.insert(*bus))
                .count();
            self.contact_chunk(t, &rest[..n])?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// One chunk of `contacts`: the readers opened in order; each reader's
    /// contact through the validator's sync code on its own thread (a
    /// contact touches only its reader, its in-flight batch and its side
    /// of the network, and settlement serves concurrent requests as its
    /// HTTP server does; one at a time with `--network`); then, in order,
    /// what the simulator counts of each. The report is the one the
    /// contacts one by one give.
    fn contact_chunk(&mut self, t: u64, chunk: &[(u32, u32)]) -> Result<(), String> {
        use rayon::prelude::*;
        for &(bus, _) in chunk {
            self.ensure_open(bus, t)?;
        }
        let attempts: BTreeMap<u32, u32> = chunk.iter().copied().collect();
        let (to, plan, rt) = (Transport::of(&self.settlement), &self.faults, &self.rt);
        let work: Vec<(u32, u32, &mut Bus)> = self
            .buses
            .iter_mut()
            .enumerate()
            .filter_map(|(i, b)| attempts.get(&(i as u32)).map(|&n| (i as u32, n, b)))
            .collect();
        let run =
            |(bus, n, b): (u32, u32, &mut Bus)| (bus, contact_attempts(rt, to, plan, b, t, n));
        let started = std::time::Instant::now();
        let mut done: BTreeMap<u32, Result<BusContacts, String>> = if self.network {
            work.into_iter().map(run).collect()
        } else {
            work.into_par_iter().map(run).collect()
        };
        *self
            .phase_wall_s
            .entry("sync_contacts".into())
            .or_insert(0.0) += started.elapsed().as_secs_f64();
        for &(bus, _) in chunk {
            let Some(contacts) = done.remove(&bus).transpose()? else {
                continue;
            };
            *self.phase_wall_s.entry("maintenance".into()).or_insert(0.0) += contacts.maintenance_s;
            for c in contacts.attempts {
                self.note_contact(t, bus, c)?;
            }
        }
        Ok(())
    }

    /// Counts one contact attempt of `bus` at `t`, as the simulator reports it.
    fn note_contact(&mut self, t: u64, bus: u32, c: Contacted) -> Result<(), String> {
        let Contacted {
            out,
            acked_up_to: acked,
            last_seq: last,
        } = c;
        self.upload_attempts += out.batches_sent;
        if let Some(refused) = out.forged_ack_refused {
            self.attempts.push(Attempt {
                kind: "forged_ack",
                must_catch: true,
                expect: Expect::ReaderRefuses,
                reader_refused: Some(refused),
            });
        }
        let rid = self.buses[bus as usize].ident.reader_id;
        if let Some(code) = &out.error_code {
            self.upload_retries += 1;
            *self.upload_refusals.entry(code.clone()).or_insert(0) += 1;
            if last > acked {
                self.failed_uploads.push((bus, acked + 1, last));
            }
            if code == "chain_forked" {
                if let Some(r) = self.restores.iter_mut().find(|r| r.reader == rid) {
                    r.ack_beyond_log = true;
                }
            }
        }
        if out.ok {
            // The bus's OS clock is set from settlement's at a successful sync.
            self.buses[bus as usize].jump = 0;
        }
        if let Some(v) = out.bundle_installed {
            self.installs.push((bus, t, v));
            if self
                .deny_versions
                .last()
                .is_none_or(|(known, _, _)| *known < v)
            {
                let (version, ids) = self.settlement.deny_head()?;
                self.note_deny(version, t, ids);
            }
        }
        Ok(())
    }

    fn power_cut(&mut self, t: u64, bus: u32) -> Result<(), String> {
        if !self.buses[bus as usize].provisioned {
            return Ok(());
        }
        // A crash: the reader goes away without a flush or a goodbye (and
        // its sync agent's memory with it). A reader closed for idleness
        // was flushed when it closed; it is simply opened again.
        drop(self.forget(bus));
        self.buses[bus as usize].in_flight = crate::link::fresh_in_flight();
        let started = std::time::Instant::now();
        let r = self.reopen(bus, t)?;
        let b = &mut self.buses[bus as usize];
        *self
            .phase_wall_s
            .entry("reader_reopens".into())
            .or_insert(0.0) += started.elapsed().as_secs_f64();
        if r.last_seq() < b.max_accepted {
            self.violations.push((
                "accepted_rides_durable",
                format!(
                    "reader {} reopened at sequence {} after accepting {}",
                    bus + 1,
                    r.last_seq(),
                    b.max_accepted
                ),
            ));
        }
        if let Err(e) = r.verify_chain() {
            self.violations.push((
                "accepted_rides_durable",
                format!("reader {} chain after power cut: {e}", bus + 1),
            ));
        }
        b.reader = Some(r);
        self.touch(bus);
        self.power_cuts += 1;
        Ok(())
    }

    fn backup(&mut self, t: u64, bus: u32) -> Result<(), String> {
        self.ensure_open(bus, t)?;
        let Some(r) = self.forget(bus) else {
            return Ok(());
        };
        let last = r.last_seq();
        drop(r);
        let b = &mut self.buses[bus as usize];
        let to = b.dir.with_extension("backup");
        copy_dir(&b.dir, &to).map_err(|e| format!("backup reader {}: {e}", bus + 1))?;
        b.backup = Some((to, last));
        let r = self.reopen(bus, t)?;
        self.buses[bus as usize].reader = Some(r);
        self.touch(bus);
        Ok(())
    }

    fn restore(&mut self, t: u64, bus: u32) -> Result<(), String> {
        let Some((from, backup_last)) = self.buses[bus as usize].backup.clone() else {
            return Ok(());
        };
        self.ensure_open(bus, t)?;
        let Some(r) = self.forget(bus) else {
            return Ok(());
        };
        let (last_before, acked_before) = (r.last_seq(), r.acked_up_to());
        drop(r);
        let dir = self.buses[bus as usize].dir.clone();
        std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
        copy_dir(&from, &dir).map_err(|e| format!("restore reader {}: {e}", bus + 1))?;
        let r = self.reopen(bus, t)?;
        self.buses[bus as usize].reader = Some(r);
        self.touch(bus);
        let b = &mut self.buses[bus as usize];
        b.in_flight = crate::link::fresh_in_flight();
        // The restored log ends at the backup's last ride: the simulator's
        // own high-water mark follows it (the rides after it are the fault's loss).
        b.max_accepted = backup_last;
        self.restores.push(Restore {
            reader: b.ident.reader_id,
            backup_last,
            last_before,
            acked_before,
            ack_beyond_log: false,
            at: t,
        });
        Ok(())
    }

    /// Picks `riders.online_renewals` honest enrolled riders; each enrols
    /// its wallet online at a random hour of the day and renews again
    /// [`RENEW_AGAIN_S`] later.
    fn schedule_renewals(&mut self) {
        let mut rng = rng_for(self.seed, "renewals");
        let honest: Vec<u32> = (0..self.riders.len() as u32)
            .filter(|i| {
                let r = &self.riders[*i as usize];
                r.part == RiderPart::Honest && r.phone.is_some()
            })
            .collect();
        let want = (self.scenario.riders.online_renewals as usize).min(honest.len());
        let mut picked = BTreeSet::new();
        while picked.len() < want {
            picked.insert(honest[below(&mut rng, honest.len() as u64) as usize]);
        }
        self.renewals.riders = picked.len() as u64;
        for rider in picked {
            let t = self.at_hour(RENEW_FROM_HOUR) + below(&mut rng, RENEW_SPAN_S);
            self.push(t, Ev::Renew { rider });
            self.push(t + RENEW_AGAIN_S, Ev::Renew { rider });
        }
    }

    /// A rider's wallet goes online: enrols (the operator's passenger
    /// token exchanged, a first renewal) or renews, through settlement's
    /// passenger routes (over HTTP with `--network`).
    fn renew(&mut self, t: u64, rider: u32) -> Result<(), String> {
        let valid_for_s = CREDENTIAL_S.min(self.settlement.policy().0);
        let dir = self.work.join("wallets").join(rider.to_string());
        let r = &mut self.riders[rider as usize];
        let device_now = (t as i64 + r.phone_off) as u64;
        let what = format!("renewal/{}/{}", r.account, r.credentials.len());
        let mut rng = rng_for(self.seed, &what);
        let Some(phone) = r.phone.as_mut() else {
            return Ok(());
        };
        let first = !phone.online();
        let done = if first {
            let token = self.settlement.issue_passenger_token(&r.account)?;
            Phone::enrol_online(
                &dir,
                &self.settlement,
                &r.account,
                &token,
                valid_for_s,
                device_now,
                &mut rng,
            )
            .map(|(p, id)| {
                *phone = p;
                id
            })
        } else {
            phone.renew_online(&self.settlement, valid_for_s, device_now, &mut rng)
        };
        match done {
            Ok(id) => {
                r.credentials.push(id);
                if first {
                    self.renewals.enrolled += 1;
                } else {
                    self.renewals.renewed += 1;
                }
            }
            Err(code) => *self.renewals.refused_by_code.entry(code).or_insert(0) += 1,
        }
        Ok(())
    }

    fn payments(&mut self) -> Result<(), String> {
        let revoked = self.settlement.revoked_accounts()?;
        let mut rng = rng_for(self.seed, "payments");
        for acct in revoked {
            if self.frozen.contains(&acct)
                || !percent(&mut rng, self.scenario.riders.debtors_paying_percent)
            {
                continue;
            }
            let debt = -self.settlement.balance(&acct)?;
            if debt > 0 {
                self.settlement
                    .pay(&acct, &format!("sim-pay-{acct}"), debt)?;
                *self.payments.entry(acct).or_insert(0) += debt;
            }
        }
        Ok(())
    }

    /// A compromised reader's depot upload: alter, duplicate, invent, back-date, then drop.
    fn compromise(&mut self, t: u64, bus: u32) -> Result<(), String> {
        use fare_credential::record::{genesis_hash, record_hash};
        use fare_credential::{Batch, RideRecord};
        let declared = self.buses[bus as usize].role == Role::Compromised;
        self.ensure_open(bus, t)?;
        let b = &mut self.buses[bus as usize];
        b.retired = true;
        let rid = b.ident.reader_id;
        let Some(reader) = b.reader.as_ref() else {
            return Ok(());
        };
        let acked = reader.acked_up_to();
        let all = reader.records()?;
        let prev = match all.iter().find(|r| r.reader_seq == acked) {
            Some(r) => r.hash().map_err(|e| e.to_string())?,
            None if acked == 0 => genesis_hash(rid),
            None => {
                return Err(format!(
                    "compromised reader {rid}: record {acked} compacted"
                ))
            }
        };
        let before_code = all
            .iter()
            .rev()
            .find(|r| r.reader_seq <= acked)
            .map(|r| r.code.clone());
        let tail: Vec<RideRecord> = all.into_iter().filter(|r| r.reader_seq > acked).collect();
        let keep = tail.len() / 2;
        let mut out: Vec<RideRecord> = tail[..keep].to_vec();
        let mut c = Compromise {
            reader: rid,
            acked_before: acked,
            honest_to: acked + keep as u64,
            declared,
            ..Default::default()
        };
        let rnow = b.reader_now(t);
        let template = tail.first().cloned().unwrap_or(RideRecord {
            reader_id: rid,
            reader_seq: 0,
            reader_time_unix_s: rnow,
            vehicle: b.ident.vehicle.clone(),
            route: b.ident.route.clone(),
            stop: None,
            code: Vec::new(),
            prev_hash: [0; 32],
        });
        if declared {
            if let Some(first) = out.first_mut() {
                first.code[TAMPER_BYTE] ^= 0x01;
                c.altered = Some(first.reader_seq);
            }
            // Duplicate: a ride it uploads (unaltered) or already uploaded, again under a new sequence.
            if let Some(src) = out
                .get(1)
                .map(|r| r.code.clone())
                .or(before_code)
                .or_else(|| self.code_bank.first().map(|c| c.0.clone()))
            {
                out.push(RideRecord {
                    code: src,
                    reader_time_unix_s: rnow,
                    ..template.clone()
                });
                c.fakes.push((0, "duplicate"));
            }
            // Invented: a code under a credential no issuer signed.
            out.push(RideRecord {
                code: self.forged_code(t),
                reader_time_unix_s: rnow,
                ..template.clone()
            });
            c.fakes.push((0, "invent"));
            // Back-dated: a genuine code seen elsewhere, recorded at its own issue time.
            if let Some((code, _)) = self
                .code_bank
                .get(1)
                .cloned()
                .or_else(|| self.code_bank.first().cloned())
            {
                let issued = fare_credential::RideCode::from_bytes(&code)
                    .map(|c| u64::from(c.issued_at_unix_s()))
                    .unwrap_or(rnow);
                out.push(RideRecord {
                    code,
                    reader_time_unix_s: issued,
                    ..template.clone()
                });
                c.fakes.push((0, "back_date"));
            }
        }
        // Re-sequence and re-chain what it uploads.
        let mut h = prev;
        let mut fake_i = 0;
        for (i, r) in out.iter_mut().enumerate() {
            r.reader_seq = acked + 1 + i as u64;
            r.prev_hash = h;
            h = record_hash(&r.encode_v1().map_err(|e| e.to_string())?);
            if i >= keep {
                c.fakes[fake_i].0 = r.reader_seq;
                c.fake_rides.push((
                    r.reader_seq,
                    r.reader_time_unix_s,
                    code_key(&r.code),
                    c.fakes[fake_i].1 != "invent",
                ));
                fake_i += 1;
            }
        }
        let key = self.buses[bus as usize].key.clone();
        if !out.is_empty() {
            let bytes = Batch {
                reader_id: rid,
                prev_hash: prev,
                records: out.clone(),
            }
            .sign_v1(&key)
            .map_err(|e| e.to_string())?;
            // Settlement must store it (a registered reader's signed, chained
            // batch): the oracle expects the honest part delivered and the
            // rest caught at re-verification.
            match self.post_as_reader(bus, bytes, rnow)? {
                (200, _) => {}
                other => return Err(not_mounted(rid, "upload", other)),
            }
        }
        // Drop: the next ride is withheld; the rest continues after a gap.
        let gap_seq = acked + out.len() as u64 + 2;
        let gap = RideRecord {
            reader_seq: gap_seq,
            prev_hash: [7; 32],
            ..tail.get(keep).cloned().unwrap_or(template)
        };
        let gap = RideRecord {
            code: if gap.code.is_empty() {
                self.code_bank
                    .first()
                    .map(|c| c.0.clone())
                    .unwrap_or_default()
            } else {
                gap.code
            },
            ..gap
        };
        if !gap.code.is_empty() {
            let bytes = Batch {
                reader_id: rid,
                prev_hash: gap.prev_hash,
                records: vec![gap],
            }
            .sign_v1(&key)
            .map_err(|e| e.to_string())?;
            // Ingest must see it (and refuse it: the oracle looks for the
            // incident); a refused request never reached it.
            if let (401, code) = self.post_as_reader(bus, bytes, rnow)? {
                return Err(not_mounted(rid, "batch after a gap", (401, code)));
            }
        }
        if declared {
            for ((seq, kind), (_, _, key, _)) in c.fakes.iter().zip(&c.fake_rides) {
                // An invented ride is refused; a duplicated or back-dated genuine
                // code is still rated exactly once (whichever ride settlement keeps).
                let expect = match (*kind, key) {
                    ("invent", _) | (_, None) => Expect::Outcome {
                        reader: rid,
                        seq: *seq,
                        outcomes: &["forged"],
                    },
                    (_, Some(k)) => Expect::RefusedOrOneRated(*k),
                };
                self.attempts.push(Attempt {
                    kind: "compromised_reader",
                    must_catch: true,
                    expect,
                    reader_refused: None,
                });
            }
            if let Some(seq) = c.altered {
                self.attempts.push(Attempt {
                    kind: "compromised_reader",
                    must_catch: true,
                    expect: Expect::Outcome {
                        reader: rid,
                        seq,
                        outcomes: &["forged"],
                    },
                    reader_refused: None,
                });
            }
            self.attempts.push(Attempt {
                kind: "compromised_reader",
                must_catch: true,
                expect: Expect::Incident {
                    reader: rid,
                    kind: "sequence_gap",
                },
                reader_refused: None,
            });
        }
        self.compromises.push(c);
        Ok(())
    }

    /// Posts a batch as it is (no faults), with the request signature
    /// `auth`: `(HTTP status, error code)`.
    fn post_raw(
        &mut self,
        body: Vec<u8>,
        t: u64,
        auth: String,
    ) -> Result<(u16, Option<String>), String> {
        crate::link::post_raw(&self.rt, Transport::of(&self.settlement), body, t, auth)
    }

    /// Posts a batch bus `bus`'s reader made itself, the request signed as
    /// the reader signs its own ([`crate::link::post_as_reader`]): a
    /// compromised reader's firmware sends its forgeries with the reader's
    /// key and clock, and re-signs at settlement's clock after a
    /// `request_stale` as the honest sync does.
    fn post_as_reader(
        &mut self,
        bus: u32,
        body: Vec<u8>,
        rnow: u64,
    ) -> Result<(u16, Option<String>), String> {
        let to = Transport::of(&self.settlement);
        let Some(reader) = self.buses[bus as usize].reader.as_mut() else {
            return Err(format!("bus {bus}: its reader is not open"));
        };
        crate::link::post_as_reader(&self.rt, reader, to, body, rnow)
    }

    /// Heals the network and lets every honest reader upload everything, then settles.
    fn liveness(&mut self, t: u64) -> Result<(), String> {
        self.settlement.set_time(t);
        self.faults.heal();
        crate::link::flush(
            &self.rt,
            Transport::of(&self.settlement),
            &self.faults,
            self.buses.iter_mut().map(|b| &mut b.link),
        );
        // §4.6: bad input changes nothing and is refused with a specific error.
        let held = self.settlement.ride_count()?;
        let mut garbage = vec![0u8; 512];
        self.rng_attack.fill_bytes(&mut garbage);
        for body in [&garbage[..], &[][..], &garbage[..3]] {
            // Unsigned too: an empty `X-Reader-Auth` is refused as unparseable.
            match self.post_raw(body.to_vec(), t, String::new())? {
                (400..=499, Some(code)) if !code.is_empty() => {}
                other => self.violations.push((
                    "bad_input_changes_nothing",
                    format!(
                        "a malformed batch of {} bytes was answered {other:?}",
                        body.len()
                    ),
                )),
            }
        }
        if self.settlement.ride_count()? != held {
            self.violations.push((
                "bad_input_changes_nothing",
                "malformed batches changed the rides held".into(),
            ));
        }
        let last_contacts: Vec<(u32, u32)> = (0..self.buses.len() as u32)
            .filter(|&bus| {
                let b = &self.buses[bus as usize];
                b.provisioned && !b.retired
            })
            .map(|bus| (bus, DEPOT_ATTEMPTS))
            .collect();
        self.contacts(t, &last_contacts)?;
        self.settle_at(t + 60)?;
        // Every honest reader's chain is intact (a closed reader is opened
        // again to walk it).
        for bus in 0..self.buses.len() as u32 {
            if !self.buses[bus as usize].provisioned {
                continue;
            }
            self.ensure_open(bus, t + 60)?;
            let b = &self.buses[bus as usize];
            if let Some(r) = &b.reader {
                if let Err(e) = r.verify_chain() {
                    self.violations.push((
                        "reader_chains_valid",
                        format!("reader {}: {e}", b.ident.reader_id),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A ride event's own fields (`Ev::Ride`): when, who, on which bus, with
/// a companion or not.
#[derive(Clone, Copy, Debug)]
struct RideAt {
    t: u64,
    rider: u32,
    bus: u32,
    companion: bool,
}

/// A phone's code for a ride and, for a companion, a second one 3 s later.
type PhoneCodes = (Vec<u8>, Option<Vec<u8>>);

/// The result of a scoped commit thread, if one was started.
fn joined(
    commit: Option<std::thread::ScopedJoinHandle<'_, Result<(), String>>>,
) -> Result<(), String> {
    match commit {
        Some(h) => h
            .join()
            .map_err(|_| "an enrolment commit panicked".to_string())?,
        None => Ok(()),
    }
}

/// What `phone` makes for a ride at phone time `device_now` (`None` when
/// its wallet refuses): its own code and, with `companion`, a companion's
/// 3 s later (none if the wallet refuses that one).
fn make_codes(phone: &mut Phone, device_now: u64, companion: bool) -> Option<PhoneCodes> {
    let code = phone.code(device_now).ok()?;
    let second = if companion {
        phone.code(device_now + 3).ok()
    } else {
        None
    };
    Some((code, second))
}

/// What a sync event does (`World::sync_plan`).
enum SyncPlan {
    /// Nothing: no reader, or no network en route.
    Skip,
    /// A contact of at most this many attempts.
    Contact(u32),
    /// A compromised reader's attack at the depot (`World::compromise`).
    Compromise,
}

/// One contact attempt as `World::note_contact` counts it: its outcome and
/// the reader's acknowledged and last sequence right after it.
struct Contacted {
    out: ContactOutcome,
    acked_up_to: u64,
    last_seq: u64,
}

/// A bus's contact attempts at one sync event, and the wall time of the
/// reader maintenance after the successful one.
struct BusContacts {
    attempts: Vec<Contacted>,
    maintenance_s: f64,
}

/// Up to `attempts` contacts of bus `b` at simulated time `t` through the
/// faulty link, until one succeeds; then the reader's maintenance. Nothing
/// for a bus whose reader is not open (down).
fn contact_attempts(
    rt: &tokio::runtime::Runtime,
    to: Transport<'_>,
    plan: &FaultPlan,
    b: &mut Bus,
    t: u64,
    attempts: u32,
) -> Result<BusContacts, String> {
    let rnow = b.reader_now(t);
    let mut done = BusContacts {
        attempts: Vec::new(),
        maintenance_s: 0.0,
    };
    let Some(reader) = b.reader.as_mut() else {
        return Ok(done);
    };
    for _ in 0..attempts {
        let out =
            crate::link::contact_once(rt, reader, to, plan, &mut b.link, &mut b.in_flight, rnow);
        let ok = out.ok;
        done.attempts.push(Contacted {
            out,
            acked_up_to: reader.acked_up_to(),
            last_seq: reader.last_seq(),
        });
        if ok {
            let started = std::time::Instant::now();
            reader.maintenance(rnow)?;
            done.maintenance_s = started.elapsed().as_secs_f64();
            break;
        }
    }
    Ok(done)
}

/// A compromised reader's upload that settlement did not take as the attack
/// needs: the oracle's expectations (honest part delivered, fakes caught,
/// the gap an incident) would blame the product for what the attacker did
/// not do, so the run stops here, naming the answer.
fn not_mounted(reader: u32, what: &str, (status, code): (u16, Option<String>)) -> String {
    format!(
        "compromised reader {reader}: settlement answered its {what} HTTP {status} ({}), so the attack was not mounted",
        code.as_deref().unwrap_or("no error code")
    )
}

//! The run's report: `report.json` and the readable summary.

use crate::oracle::{AttackCount, QueueCounts, Verdict};
use crate::sim::World;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Keys of `report.json` that hold wall-clock measurements (excluded from
/// the determinism comparison).
pub const WALL_CLOCK_KEYS: [&str; 5] = [
    "latency_us",
    "latency_us_by_input",
    "wall_s",
    "wall_phases_s",
    "rides_per_wall_s",
];

/// Rides.
#[derive(Clone, Debug, Serialize)]
pub struct Rides {
    /// Scans at real readers.
    pub scanned: u64,
    /// Accepted.
    pub accepted: u64,
    /// Rejected.
    pub rejected: u64,
    /// Rejects by stable reason code.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Scans shown as rendered camera frames (QR render + the reader's decode).
    pub via_camera_frames: u64,
    /// Scans shown as payload bytes.
    pub via_payloads: u64,
    /// Rides generated for buses not run on real readers (counted, not executed).
    pub modelled_only: u64,
    /// Rides the phone refused to make a code for.
    pub wallet_refusals: u64,
    /// Accepted rides per local hour.
    pub accepted_per_hour: BTreeMap<u32, u64>,
}

/// Decision latency, microseconds (wall clock).
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// Uploads.
#[derive(Clone, Debug, Serialize)]
pub struct Uploads {
    /// Batches sent.
    pub attempts: u64,
    /// Timeouts and refusals that needed a later retry.
    pub retries: u64,
    /// En-route sync windows with no network.
    pub syncs_without_network: u64,
    /// Settlement refusals by code.
    pub refused_by_code: BTreeMap<String, u64>,
    /// Link fault counters.
    pub link: crate::link::LinkStats,
}

/// What happened to faults.
#[derive(Clone, Debug, Serialize)]
pub struct FaultsDone {
    /// Reader power cuts (crash + reopen).
    pub power_cuts: u64,
    /// Settlement crashes and restarts.
    pub settlement_restarts: u64,
    /// Settlement runs.
    pub settlement_runs: u64,
    /// Readers restored from an old backup: (reader, backup's last seq, last seq before, acked before).
    pub restores: Vec<(u32, u64, u64, u64)>,
    /// Scans of a credential the reader's deny list named.
    pub deny_list_scans_checked: u64,
}

/// Open readers: how many logs were open at once and how often a reader
/// was closed for idleness and reopened (`execution.max_open_readers`).
#[derive(Clone, Debug, Serialize)]
pub struct OpenReaders {
    /// `execution.max_open_readers`.
    pub max_open: u64,
    /// Most readers open at once.
    pub open_max: u64,
    /// Readers flushed and closed to make room.
    pub idle_closes: u64,
    /// Readers reopened through the validator's `Reader::open` after an idle close.
    pub idle_reopens: u64,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Run seed.
    pub seed: u64,
    /// Commit the binary was built from (or "unknown").
    pub commit: String,
    /// Command that replays the run.
    pub replay: String,
    /// How readers reached settlement: `in_process` or `loopback_http`
    /// (`--network`: `fare-settlement serve` on 127.0.0.1, reqwest); both
    /// through the validator's `sync::contact`.
    pub transport: String,
    /// Fleet.
    pub buses: u64,
    /// Buses run on real readers (sled logs in a temp dir).
    pub real_buses: u64,
    /// Accounts in the city (derived lazily).
    pub accounts: u64,
    /// Accounts made at settlement (the day's riders on real buses).
    pub accounts_enrolled: u64,
    /// Invariant → held.
    pub invariants: BTreeMap<String, bool>,
    /// Why failed invariants failed.
    pub failures: Vec<String>,
    /// Rides.
    pub rides: Rides,
    /// Jepsen queue counters.
    pub queue: QueueCounts,
    /// Decision latency (wall clock).
    pub latency_us: Latency,
    /// The same, by what the reader was shown: `payload` (the code's
    /// bytes) and `camera_frame` (a rendered frame, decode included).
    pub latency_us_by_input: BTreeMap<String, Latency>,
    /// Uploads.
    pub uploads: Uploads,
    /// Attacks by kind.
    pub attacks: BTreeMap<String, AttackCount>,
    /// Revenue by operator (settlement's daily report).
    pub revenue_by_operator: BTreeMap<String, i64>,
    /// Revenue by operator (the oracle's).
    pub revenue_by_operator_oracle: BTreeMap<String, i64>,
    /// Settled rides by outcome.
    pub settled_by_outcome: BTreeMap<String, u64>,
    /// Incidents by kind.
    pub incidents: BTreeMap<String, u64>,
    /// Fraud events.
    pub fraud_events: u64,
    /// Accounts in debt and their total debt.
    pub debts: BTreeMap<String, i64>,
    /// Accounts on the deny list at the end.
    pub deny_listed: Vec<String>,
    /// Deny-list propagation delays (seconds from publication to a reader installing it): p50, max, count.
    pub deny_propagation_s: BTreeMap<String, u64>,
    /// Faults.
    pub faults: FaultsDone,
    /// Readers' logs open at once, closed and reopened.
    pub open_readers: OpenReaders,
    /// Online renewals: wallets enrolled with a passenger token and
    /// credentials renewed through settlement's passenger routes (over
    /// loopback HTTP with `--network`, by `fare_wallet::online`).
    pub renewals: crate::sim::Renewals,
    /// Wall time, seconds.
    pub wall_s: f64,
    /// Wall time per phase, seconds.
    pub wall_phases_s: BTreeMap<String, f64>,
    /// Accepted rides per wall-clock second.
    pub rides_per_wall_s: f64,
}

/// Percentile of a sorted list.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Deny-list propagation delays (seconds), one per (new deny version, reader).
pub fn deny_delays(w: &World) -> Vec<u64> {
    let mut out = Vec::new();
    // Each bus's installs `(time, version)`, in the order they happened
    // (a search of all installs per bus and version took seconds at city scale).
    let mut installs: Vec<Vec<(u64, u64)>> = vec![Vec::new(); w.buses.len()];
    for (bus, ti, iv) in &w.installs {
        if let Some(l) = installs.get_mut(*bus as usize) {
            l.push((*ti, *iv));
        }
    }
    let mut prev: Option<&std::collections::BTreeSet<[u8; 16]>> = None;
    for (v, t, set) in &w.deny_versions {
        let added = prev.is_none_or(|p| set.difference(p).next().is_some());
        prev = Some(set);
        if !added || *t <= w.midnight + 5 * 3600 {
            continue;
        }
        for (b, bus_installs) in w.buses.iter().zip(&installs) {
            if !b.real {
                continue;
            }
            if let Some((ti, _)) = bus_installs.iter().find(|(ti, iv)| *iv >= *v && *ti >= *t) {
                out.push(ti - t);
            }
        }
    }
    out.sort_unstable();
    out
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// p50, p99 and max of `sorted`.
fn latency(sorted: &[u64]) -> Latency {
    Latency {
        p50: percentile(sorted, 0.5),
        p99: percentile(sorted, 0.99),
        max: sorted.last().copied().unwrap_or(0),
    }
}

/// Builds the report.
pub fn build(w: &World, v: &Verdict, commit: &str, replay: &str, wall_s: f64) -> Report {
    let lat = sorted(w.decision_latencies_us());
    let by_input = [
        ("payload", &w.latency_payload_us),
        ("camera_frame", &w.latency_frame_us),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), latency(&sorted(v.clone()))))
    .collect();
    let mut per_hour = BTreeMap::new();
    for a in &w.journal {
        let h = ((a.true_time.saturating_sub(w.midnight)) / 3600) as u32;
        *per_hour.entry(h).or_insert(0) += 1;
    }
    let rejected: u64 = w.rejected_by_reason.values().sum();
    let delays = deny_delays(w);
    let mut dp = BTreeMap::new();
    dp.insert("count".to_string(), delays.len() as u64);
    dp.insert("p50".to_string(), percentile(&delays, 0.5));
    dp.insert("max".to_string(), delays.last().copied().unwrap_or(0));
    let mut debts = BTreeMap::new();
    debts.insert("accounts_in_debt".to_string(), v.accounts_in_debt as i64);
    debts.insert("total_debt_minor".to_string(), v.total_debt_minor);
    Report {
        scenario: w.scenario.name.clone(),
        seed: w.seed,
        commit: commit.to_string(),
        replay: replay.to_string(),
        transport: if w.network {
            "loopback_http"
        } else {
            "in_process"
        }
        .to_string(),
        buses: w.buses.len() as u64,
        real_buses: w.buses.iter().filter(|b| b.real).count() as u64,
        accounts: w.scenario.riders.accounts,
        accounts_enrolled: w.riders.iter().filter(|r| r.phone.is_some()).count() as u64,
        invariants: v.invariants.clone(),
        failures: v.failures.clone(),
        rides: Rides {
            scanned: w.scanned,
            accepted: w.journal.len() as u64,
            rejected,
            rejected_by_reason: w.rejected_by_reason.clone(),
            via_camera_frames: w.frames(),
            via_payloads: w.payloads(),
            modelled_only: w.modelled_only_rides,
            wallet_refusals: w.wallet_refusals,
            accepted_per_hour: per_hour,
        },
        queue: v.queue.clone(),
        latency_us: latency(&lat),
        latency_us_by_input: by_input,
        uploads: Uploads {
            attempts: w.upload_attempts,
            retries: w.upload_retries,
            syncs_without_network: w.syncs_offline,
            refused_by_code: w.upload_refusals.clone(),
            link: w.link_stats,
        },
        attacks: v.attacks.clone(),
        revenue_by_operator: v.settled_revenue.clone(),
        revenue_by_operator_oracle: v.expected_revenue.clone(),
        settled_by_outcome: v.settled_by_outcome.clone(),
        incidents: v.incidents.clone(),
        fraud_events: v.fraud_events,
        debts,
        deny_listed: v.deny_listed.clone(),
        deny_propagation_s: dp,
        faults: FaultsDone {
            power_cuts: w.power_cuts,
            settlement_restarts: w.settlement_restarts,
            settlement_runs: w.settle_runs,
            restores: w
                .restores
                .iter()
                .map(|r| (r.reader, r.backup_last, r.last_before, r.acked_before))
                .collect(),
            deny_list_scans_checked: w.deny_checks,
        },
        open_readers: OpenReaders {
            max_open: u64::from(w.scenario.execution.max_open_readers),
            open_max: w.readers_open_max,
            idle_closes: w.reader_idle_closes,
            idle_reopens: w.reader_idle_reopens,
        },
        renewals: renewals(w),
        wall_s,
        wall_phases_s: w.phase_wall_s.clone(),
        rides_per_wall_s: if wall_s > 0.0 {
            w.journal.len() as f64 / wall_s
        } else {
            0.0
        },
    }
}

/// The renewals, with the rides accepted under a renewed credential.
fn renewals(w: &World) -> crate::sim::Renewals {
    let renewed: std::collections::BTreeSet<[u8; 16]> = w
        .riders
        .iter()
        .flat_map(|r| r.credentials.iter().skip(1).copied())
        .collect();
    let mut out = w.renewals.clone();
    out.accepted_rides_renewed = w
        .journal
        .iter()
        .filter(|a| a.code.is_some_and(|(c, _)| renewed.contains(&c)))
        .count() as u64;
    out
}

fn money(m: i64) -> String {
    format!("{}.{:02}", m / 100, (m % 100).abs())
}

/// The readable summary.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "fare-simulator: scenario `{}`, seed {}, commit {}, readers to settlement: {}",
        r.scenario, r.seed, r.commit, r.transport
    );
    let _ = writeln!(
        s,
        "fleet: {} buses ({} on real readers), {} accounts ({} enrolled today)",
        r.buses, r.real_buses, r.accounts, r.accounts_enrolled
    );
    let _ = writeln!(
        s,
        "rides: {} scanned ({} camera frames, {} payloads), {} accepted, {} rejected; {} modelled only",
        r.rides.scanned, r.rides.via_camera_frames, r.rides.via_payloads, r.rides.accepted, r.rides.rejected, r.rides.modelled_only
    );
    for (reason, n) in &r.rides.rejected_by_reason {
        let _ = writeln!(s, "  reject {reason:<28} {n:>8}");
    }
    let _ = writeln!(
        s,
        "decision latency (wall clock): p50 {} us, p99 {} us, max {} us",
        r.latency_us.p50, r.latency_us.p99, r.latency_us.max
    );
    for (input, l) in &r.latency_us_by_input {
        let _ = writeln!(
            s,
            "  {input:<12} p50 {} us, p99 {} us, max {} us",
            l.p50, l.p99, l.max
        );
    }
    let _ = writeln!(
        s,
        "uploads: {} batches, {} retries, {} sync windows without network; link: {} dropped, {} duplicated, {} reordered, {} replies lost",
        r.uploads.attempts, r.uploads.retries, r.uploads.syncs_without_network, r.uploads.link.dropped, r.uploads.link.duplicated, r.uploads.link.reordered, r.uploads.link.lost_replies
    );
    let _ = writeln!(
        s,
        "rides as a queue: {} acknowledged, {} delivered, {} lost, {} duplicated, {} unexpected, {} recovered; {} erased by a backup restore, {} withheld by a compromised reader",
        r.queue.acknowledged, r.queue.delivered, r.queue.lost, r.queue.duplicated, r.queue.unexpected, r.queue.recovered, r.queue.lost_to_restore, r.queue.withheld_by_compromised_reader
    );
    let _ = writeln!(s, "revenue by operator (settlement | oracle):");
    let ops: std::collections::BTreeSet<&String> = r
        .revenue_by_operator
        .keys()
        .chain(r.revenue_by_operator_oracle.keys())
        .collect();
    for op in ops {
        let _ = writeln!(
            s,
            "  {op:<16} {:>14} | {:>14}",
            money(r.revenue_by_operator.get(op).copied().unwrap_or(0)),
            money(r.revenue_by_operator_oracle.get(op).copied().unwrap_or(0))
        );
    }
    let _ = writeln!(
        s,
        "debts: {} accounts owe {} in total; {} accounts deny-listed; deny-list propagation p50 {} s, max {} s",
        r.debts.get("accounts_in_debt").copied().unwrap_or(0),
        money(r.debts.get("total_debt_minor").copied().unwrap_or(0)),
        r.deny_listed.len(),
        r.deny_propagation_s.get("p50").copied().unwrap_or(0),
        r.deny_propagation_s.get("max").copied().unwrap_or(0)
    );
    let _ = writeln!(
        s,
        "faults: {} power cuts, {} settlement restarts, {} settlement runs, {} reader{} restored from an old backup",
        r.faults.power_cuts,
        r.faults.settlement_restarts,
        r.faults.settlement_runs,
        r.faults.restores.len(),
        if r.faults.restores.len() == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        s,
        "online renewals: {} riders, {} wallets enrolled, {} renewed, {} rides accepted on renewed credentials, {} refused{}",
        r.renewals.riders,
        r.renewals.enrolled,
        r.renewals.renewed,
        r.renewals.accepted_rides_renewed,
        r.renewals.refused_by_code.values().sum::<u64>(),
        if r.renewals.refused_by_code.is_empty() {
            String::new()
        } else {
            format!(" {:?}", r.renewals.refused_by_code)
        }
    );
    let _ = writeln!(s, "attacks (caught / attempted):");
    for (k, a) in &r.attacks {
        // Only stolen phones have attempts no invariant requires caught.
        const WHY: &str = "a stolen phone rides until its owner's report reaches the bus";
        let optional = match a.need_not_be_caught {
            0 => String::new(),
            n if n == a.attempted => format!(" (none has to be: {WHY})"),
            n => format!(" ({n} of them need not be: {WHY})"),
        };
        let line = format!("  {k:<24} {:>5} / {:<5}{optional}", a.caught, a.attempted);
        let _ = writeln!(s, "{}", line.trim_end());
    }
    let _ = writeln!(s, "invariants:");
    for (k, ok) in &r.invariants {
        let _ = writeln!(s, "  {} {k}", if *ok { "held  " } else { "FAILED" });
    }
    for f in &r.failures {
        let _ = writeln!(s, "  ! {f}");
    }
    let _ = writeln!(
        s,
        "wall time {:.1} s ({:.0} accepted rides/s)",
        r.wall_s, r.rides_per_wall_s
    );
    s
}

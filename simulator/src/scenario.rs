//! Scenarios: a city's fare day as data (TOML), with two presets compiled in.

use fare_tariff::{
    ConcessionSpec, OperatorSpec, RollingCapSpec, RouteSpec, TariffSpec, TransferSpec,
};
use serde::{Deserialize, Serialize};

/// The `demo` preset's TOML.
pub const DEMO_TOML: &str = include_str!("../scenarios/demo.toml");
/// The `wuhan` preset's TOML.
pub const WUHAN_TOML: &str = include_str!("../scenarios/wuhan.toml");

/// Largest number of buses a scenario may declare.
pub const MAX_BUSES: u32 = 100_000;
/// Largest number of accounts a scenario may declare.
pub const MAX_ACCOUNTS: u64 = 100_000_000;
/// Hours in the demand curve.
pub const DEMAND_HOURS: usize = 24;

/// A whole scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name shown in reports.
    pub name: String,
    /// Service day, `YYYY-MM-DD` (local to the tariff's zone, Asia/Shanghai).
    pub day: String,
    /// Operators, their routes and buses.
    pub operators: Vec<OperatorConfig>,
    /// Tariff rules (beyond per-route fares).
    pub tariff: TariffConfig,
    /// Riders.
    pub riders: RiderConfig,
    /// Demand: relative weight of each local hour 0..24.
    pub demand: DemandConfig,
    /// Uploads and settlement runs.
    pub sync: SyncConfig,
    /// Injected faults.
    pub faults: FaultConfig,
    /// Adversaries.
    pub attacks: AttackConfig,
    /// How the run is executed.
    pub execution: ExecutionConfig,
}

/// One operator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Operator id.
    pub id: String,
    /// Number of routes (ids `<prefix><n>`).
    pub routes: u32,
    /// Route id prefix.
    pub route_prefix: String,
    /// Buses per route.
    pub buses_per_route: u32,
    /// Flat fare of its routes, minor units.
    pub fare_minor: i64,
}

/// Tariff rules.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffConfig {
    /// Daily cap, minor units.
    pub daily_cap_minor: i64,
    /// Transfer window after a paid ride, seconds (100 % off, one transfer).
    pub transfer_window_s: u64,
    /// Seniors' discount, percent.
    pub senior_percent: i64,
    /// Students' and children's discount, percent.
    pub student_percent: i64,
}

/// Riders.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiderConfig {
    /// Accounts in the city (derived lazily from the seed: only riders of the day are made).
    pub accounts: u64,
    /// Rides in the day (honest riders; attacks come on top).
    pub rides: u64,
    /// Rides per rider: values drawn uniformly from this list.
    pub rides_per_rider: Vec<u32>,
    /// Profile weights: adult, senior, student, child.
    pub profile_weights: [u32; 4],
    /// Credit limits and their weights: `[[limit, weight], ...]`.
    pub credit_limits: Vec<[i64; 2]>,
    /// Percent of rides with a companion (a second code from the same phone).
    pub companion_percent: u32,
    /// Percent of phones whose clock is off (the wallet corrects with the offset it learned).
    pub phone_clock_off_percent: u32,
    /// Largest phone clock error, seconds.
    pub phone_clock_off_max_s: u64,
    /// Percent of deny-listed debtors who pay their debt in the evening.
    pub debtors_paying_percent: u32,
    /// Riders whose wallet goes online during the day: it enrols with a
    /// passenger token from the operator, then renews its credential (a
    /// fresh device key each time) through settlement's passenger routes.
    #[serde(default)]
    pub online_renewals: u32,
}

/// Demand curve.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandConfig {
    /// Weights of local hours 0..24 (rides happen from 05:00 to 23:00 local when weighted so).
    pub hourly: Vec<u32>,
}

/// Sync windows and settlement runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Seconds between en-route sync attempts of a bus.
    pub en_route_interval_s: u64,
    /// Percent of en-route attempts that find a network.
    pub en_route_online_percent: u32,
    /// Local hour of the depot sync (all buses, reliable network, faults still on).
    pub depot_hour: u32,
    /// Seconds between settlement runs.
    pub settle_every_s: u64,
    /// Records per upload batch.
    pub batch_max_records: usize,
}

/// Faults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Reader power cuts at random instants.
    pub power_cuts: u32,
    /// Buses with no en-route network all day.
    pub offline_buses: u32,
    /// Percent of uploads lost on the way in.
    pub link_drop_percent: u32,
    /// Percent of uploads delivered twice.
    pub link_duplicate_percent: u32,
    /// Percent of uploads delayed past the next one.
    pub link_reorder_percent: u32,
    /// Percent of uploads whose answer is lost after settlement committed.
    pub link_lost_reply_percent: u32,
    /// Settlement crashes and restarts.
    pub settlement_restarts: u32,
    /// Largest constant reader clock error, seconds (each reader ±).
    pub reader_clock_drift_max_s: u64,
    /// Reader clocks that jump (forward, until the next successful sync fixes them).
    pub reader_clock_jumps: u32,
    /// Size of a clock jump, seconds.
    pub reader_clock_jump_s: u64,
    /// Readers whose storage is nearly full (a small log limit, and no en-route network).
    pub storage_nearly_full: u32,
    /// Readers restored from an old backup of their directory.
    pub restore_from_backup: u32,
}

/// Adversaries (counts of attempts).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackConfig {
    /// A screenshot of an accepted code replayed later on another bus.
    pub screenshot_later: u32,
    /// The same code shown again at the same reader.
    pub replay_same_reader: u32,
    /// A screenshot shared to a rider on another bus, within the code's validity.
    pub screenshot_shared: u32,
    /// Codes under a credential from an unknown issuer key.
    pub forged: u32,
    /// Genuine codes with a byte changed.
    pub tampered: u32,
    /// Riders whose credential has expired.
    pub expired_credential: u32,
    /// Riders deny-listed (frozen) before the day.
    pub deny_listed: u32,
    /// Stolen phones (the thief rides; the owner reports it).
    pub stolen_phone: u32,
    /// Riders with a small credit limit who ride past it.
    pub over_credit_limit: u32,
    /// Compromised readers (each invents, alters, drops, duplicates and back-dates a ride).
    pub compromised_reader: u32,
    /// Percent of batch uploads intercepted by a forger answering with an
    /// acknowledgement signed by a key the root never certified.
    #[serde(default)]
    pub forged_ack_percent: u32,
    /// Test only: a reader drops a flushed ride without the oracle being told.
    #[serde(default)]
    pub undeclared_reader_drop: bool,
}

/// Execution.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionConfig {
    /// Percent of honest rides shown as rendered camera frames (the rest as payloads).
    pub frame_percent: u32,
    /// Most camera frames in a run (frames cost milliseconds each).
    pub max_frames: u64,
    /// Buses run on real readers (0: all). Rides of the other buses are
    /// generated, counted and rated by the oracle, but not executed.
    pub real_buses: u32,
    /// fdatasync after each accept (the reader's default; off only to measure).
    pub device_sync: bool,
    /// Each reader's sled page cache, KiB (many readers share one process).
    #[serde(default = "default_reader_cache_kib")]
    pub reader_cache_kib: u64,
    /// Each reader's sled log segment, KiB (a power of two, 64 to 16384;
    /// sled keeps one segment buffer in memory per reader).
    #[serde(default = "default_reader_segment_kib")]
    pub reader_segment_kib: u64,
    /// Most readers whose sled log is open at once (an LRU: the least
    /// recently used reader is flushed and closed when another must open,
    /// and reopened through the validator's own `Reader::open` on its next
    /// scan or contact). Each open reader holds about
    /// [`FDS_PER_OPEN_READER`] file descriptors and a few MB of sled's
    /// buffers: this bounds both.
    #[serde(default = "default_max_open_readers")]
    pub max_open_readers: u32,
    /// Settlement's sled page cache, MiB (its `sled_cache_mb`).
    #[serde(default = "default_settlement_cache_mb")]
    pub settlement_cache_mb: u64,
    /// Test only: settlement's adapter charges one ride twice.
    #[serde(default)]
    pub planted_double_charge: bool,
}

fn default_settlement_cache_mb() -> u64 {
    fare_settlement::Config::default().sled_cache_mb
}

fn default_reader_cache_kib() -> u64 {
    DEFAULT_READER_CACHE_KIB
}

fn default_max_open_readers() -> u32 {
    DEFAULT_MAX_OPEN_READERS
}

/// Default of `execution.max_open_readers`: every bus of `wuhan` (8,600)
/// stays open, so no scan waits for a reader to be reopened. 9,000 readers
/// × [`FDS_PER_OPEN_READER`] descriptors fit under an open-file limit of
/// 20,000 (this machine's hard limit), with room for settlement's store;
/// at about 0.25 MB each they take about 2.2 GB.
pub const DEFAULT_MAX_OPEN_READERS: u32 = 9_000;

/// File descriptors an open reader holds: sled's data file and the ride
/// ring (`validator/src/hwm.rs`); the device sync opens the data file only
/// while it syncs.
pub const FDS_PER_OPEN_READER: u32 = 2;

/// Largest `execution.max_open_readers` accepted.
pub const MAX_OPEN_READERS: u32 = 16_384;

fn default_reader_segment_kib() -> u64 {
    DEFAULT_READER_SEGMENT_KIB
}

/// Default of `execution.reader_segment_kib`: sled's smallest useful
/// segment (sled writes a value above a quarter of it to a blob file of
/// its own; a reader's values are far smaller since its tariff is kept in
/// a file beside the log).
pub const DEFAULT_READER_SEGMENT_KIB: u64 = 64;

/// Default of `execution.reader_cache_kib`.
pub const DEFAULT_READER_CACHE_KIB: u64 = 1024;

impl Scenario {
    /// A preset by name.
    pub fn preset(name: &str) -> Option<Scenario> {
        let text = match name {
            "demo" => DEMO_TOML,
            "wuhan" => WUHAN_TOML,
            _ => return None,
        };
        Some(Scenario::from_toml(text).expect("presets are valid"))
    }

    /// Parses and checks a scenario.
    pub fn from_toml(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    /// `demo`, `wuhan` or a file path.
    pub fn load(name_or_path: &str) -> Result<Scenario, String> {
        if let Some(s) = Scenario::preset(name_or_path) {
            return Ok(s);
        }
        let text = std::fs::read_to_string(name_or_path)
            .map_err(|e| format!("scenario `{name_or_path}`: not a preset (demo, wuhan) and not a readable file: {e}"))?;
        Scenario::from_toml(&text).map_err(|e| format!("scenario file `{name_or_path}`: {e}"))
    }

    /// Checks limits and consistency.
    pub fn validate(&self) -> Result<(), String> {
        if self.operators.is_empty() {
            return Err("no operators".into());
        }
        let buses = self.total_buses();
        if buses == 0 || buses > u64::from(MAX_BUSES) {
            return Err(format!("{buses} buses: expected 1..={MAX_BUSES}"));
        }
        if self.riders.accounts == 0 || self.riders.accounts > MAX_ACCOUNTS {
            return Err(format!("riders.accounts: expected 1..={MAX_ACCOUNTS}"));
        }
        if self.demand.hourly.len() != DEMAND_HOURS || self.demand.hourly.iter().all(|w| *w == 0) {
            return Err("demand.hourly: expected 24 weights, not all zero".into());
        }
        if self.demand.hourly[..5].iter().any(|w| *w != 0) {
            return Err(
                "demand.hourly: hours 0..5 must be 0 (the service day starts at 04:30)".into(),
            );
        }
        if self.riders.rides_per_rider.is_empty() || self.riders.rides_per_rider.contains(&0) {
            return Err("riders.rides_per_rider: expected positive values".into());
        }
        if self.riders.credit_limits.is_empty()
            || self.riders.profile_weights.iter().all(|w| *w == 0)
        {
            return Err("riders: credit_limits and profile_weights must not be empty".into());
        }
        if !(6..=23).contains(&self.sync.depot_hour) {
            return Err("sync.depot_hour: expected 6..=23".into());
        }
        if self.sync.en_route_interval_s == 0 || self.sync.settle_every_s == 0 {
            return Err("sync intervals must be positive".into());
        }
        if self.execution.max_open_readers == 0
            || self.execution.max_open_readers > MAX_OPEN_READERS
        {
            return Err(format!(
                "execution.max_open_readers: expected 1..={MAX_OPEN_READERS}"
            ));
        }
        fare_settlement::config::check_sled_cache_mb(self.execution.settlement_cache_mb)
            .map_err(|why| format!("execution.settlement_cache_mb: {why}"))?;
        if self.sync.batch_max_records == 0 || self.sync.batch_max_records > 4096 {
            return Err("sync.batch_max_records: expected 1..=4096".into());
        }
        let special = self.faults.offline_buses
            + self.faults.storage_nearly_full
            + self.faults.restore_from_backup
            + self.attacks.compromised_reader
            + u32::from(self.attacks.undeclared_reader_drop);
        if u64::from(special) * 2 > buses {
            return Err("too many special buses for the fleet".into());
        }
        jiff::civil::Date::strptime("%Y-%m-%d", &self.day).map_err(|e| format!("day: {e}"))?;
        Ok(())
    }

    /// Buses in the fleet.
    /// The same city scaled by `factor` (0 < factor ≤ 1): routes per
    /// operator, rides and accounts shrink in proportion (each at least 1),
    /// buses per route, demand, faults and attacks stay. For measuring at
    /// reduced scale: the per-bus and per-ride load are the full day's.
    pub fn scaled(mut self, factor: f64) -> Result<Scenario, String> {
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(format!("--scale {factor}: expected a factor in (0, 1]"));
        }
        let f = |n: u64| ((n as f64 * factor).round() as u64).max(1);
        for op in &mut self.operators {
            op.routes = f(u64::from(op.routes)) as u32;
        }
        self.riders.rides = f(self.riders.rides);
        self.riders.accounts = f(self.riders.accounts).max(self.riders.rides);
        self.validate()?;
        Ok(self)
    }

    /// Buses in the fleet.
    pub fn total_buses(&self) -> u64 {
        self.operators
            .iter()
            .map(|o| u64::from(o.routes) * u64::from(o.buses_per_route))
            .sum()
    }

    /// The tariff this scenario rates with.
    pub fn tariff_spec(&self) -> TariffSpec {
        TariffSpec {
            version: 1,
            name: format!("simulator {}", self.name),
            currency: "CNY".into(),
            time_zone: "Asia/Shanghai".into(),
            service_day_start: "04:30".into(),
            default_fare_minor: 200,
            operators: self
                .operators
                .iter()
                .map(|o| OperatorSpec {
                    id: o.id.clone(),
                    default_fare_minor: Some(o.fare_minor),
                    routes: (1..=o.routes)
                        .map(|n| RouteSpec {
                            id: format!("{}{n}", o.route_prefix),
                            fare_minor: o.fare_minor,
                        })
                        .collect(),
                })
                .collect(),
            concessions: vec![
                ConcessionSpec {
                    profile: fare_credential::Profile::Senior,
                    discount_percent: self.tariff.senior_percent,
                },
                ConcessionSpec {
                    profile: fare_credential::Profile::Student,
                    discount_percent: self.tariff.student_percent,
                },
                ConcessionSpec {
                    profile: fare_credential::Profile::Child,
                    discount_percent: self.tariff.student_percent,
                },
            ],
            transfer: Some(TransferSpec {
                window_s: self.tariff.transfer_window_s,
                discount_percent: 100,
                max_transfers: Some(1),
                allow_same_route: false,
            }),
            daily_cap_minor: Some(self.tariff.daily_cap_minor),
            rolling_7_day_cap: Some(RollingCapSpec {
                amount_minor: Some(self.tariff.daily_cap_minor * 4),
                paid_rides: None,
            }),
            promotions: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_make_valid_tariffs() {
        for name in ["demo", "wuhan"] {
            let s = Scenario::preset(name).unwrap();
            fare_tariff::Tariff::from_spec(s.tariff_spec()).unwrap();
        }
        let w = Scenario::preset("wuhan").unwrap();
        assert_eq!(w.total_buses(), 8_600);
        assert_eq!(w.riders.accounts, 4_500_000);
        assert_eq!(w.execution.settlement_cache_mb, 1024);
        let d = Scenario::preset("demo").unwrap();
        assert_eq!(d.execution.settlement_cache_mb, 256, "settlement's default");
    }

    #[test]
    fn settlement_cache_out_of_range_is_refused_naming_it() {
        let wuhan = WUHAN_TOML.replace("settlement_cache_mb = 1024", "settlement_cache_mb = 8");
        let e = Scenario::from_toml(&wuhan).unwrap_err();
        assert!(
            e.contains("execution.settlement_cache_mb: expected 16..=65536"),
            "{e}"
        );
    }
}

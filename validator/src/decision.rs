//! What the reader answers for one scan.

use fare_credential::{CredentialId, Profile, RejectReason};
use serde_json::{json, Map, Value};

/// Ride id = (reader id, reader sequence). In JSON: `{"reader_id":7,"seq":42}`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct RideId {
    /// The reader.
    pub reader_id: u32,
    /// Its sequence number (1, 2, 3, … without gaps).
    pub seq: u64,
}

/// The pipeline stages, in order. Each decision records the time spent in
/// every stage it reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Camera frame → bytes (absent for raw payloads).
    Decode,
    /// Bytes → ride code structure.
    Parse,
    /// Issuer key lookup and issuer signature (cached per credential).
    Credential,
    /// Device signature over the code.
    Device,
    /// Credential window and code freshness.
    Time,
    /// Deny list lookup.
    Deny,
    /// Replay cache lookup.
    Replay,
    /// Durable append: one sled insert of the ride record, then `flush()` and `fdatasync`.
    Append,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 8] = [
        Stage::Decode,
        Stage::Parse,
        Stage::Credential,
        Stage::Device,
        Stage::Time,
        Stage::Deny,
        Stage::Replay,
        Stage::Append,
    ];
    /// Stable name used in JSON and benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Parse => "parse",
            Stage::Credential => "credential",
            Stage::Device => "device",
            Stage::Time => "time",
            Stage::Deny => "deny",
            Stage::Replay => "replay",
            Stage::Append => "append",
        }
    }
}

/// Nanoseconds spent per stage (`None`: stage not reached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTimes(pub [Option<u64>; 8]);

impl StageTimes {
    /// Time of one stage.
    pub fn get(&self, stage: Stage) -> Option<u64> {
        self.0[stage as usize]
    }
    pub(crate) fn set(&mut self, stage: Stage, ns: u64) {
        self.0[stage as usize] = Some(ns);
    }
}

/// Accept or why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Ride logged durably (flushed) before this value existed.
    Accepted {
        /// The ride's id.
        ride_id: RideId,
        /// Concession profile, for the driver's display.
        profile: Profile,
        /// The rider's pseudonym for this credential.
        credential_id: CredentialId,
    },
    /// Refused for a reason the credential crate names.
    Rejected(RejectReason),
    /// The ride log could not be written or flushed. The ride is refused
    /// (it may or may not be on disk; it is never reported accepted) and the
    /// reader refuses every ride until restarted.
    StorageError {
        /// The underlying error.
        message: String,
    },
}

/// One answer of the reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Accept or reject.
    pub outcome: Outcome,
    /// Reader clock used for the decision.
    pub at_unix_s: u64,
    /// Per-stage wall time.
    pub stages: StageTimes,
    /// Wall time of the whole decision, nanoseconds.
    pub total_ns: u64,
    /// Non-fatal conditions (`trust_aging`).
    pub warnings: Vec<&'static str>,
}

impl Decision {
    /// True on accept.
    pub fn is_accept(&self) -> bool {
        matches!(self.outcome, Outcome::Accepted { .. })
    }
    /// The ride id on accept.
    pub fn ride_id(&self) -> Option<RideId> {
        match self.outcome {
            Outcome::Accepted { ride_id, .. } => Some(ride_id),
            _ => None,
        }
    }
    /// Stable reason code on reject (`None` on accept). Storage failures are `storage_error`.
    pub fn reason_code(&self) -> Option<&'static str> {
        match &self.outcome {
            Outcome::Accepted { .. } => None,
            Outcome::Rejected(r) => Some(r.code()),
            Outcome::StorageError { .. } => Some("storage_error"),
        }
    }
    /// Human text for the driver's screen and logs.
    pub fn message(&self) -> String {
        match &self.outcome {
            Outcome::Accepted {
                ride_id, profile, ..
            } => {
                format!(
                    "ride {}:{} accepted ({})",
                    ride_id.reader_id,
                    ride_id.seq,
                    profile.name()
                )
            }
            Outcome::Rejected(r) => r.to_string(),
            Outcome::StorageError { message } => {
                format!("ride log failed, ride refused: {message}; restart the reader and check its storage")
            }
        }
    }

    /// The JSON object of `scan --json` and `run` (one per line). Schema:
    /// `decision` ("accept"|"reject"), `reason` (null on accept), `ride_id`
    /// (`{"reader_id","seq"}`, null on reject), `message`, `latency_us`,
    /// `stages_ns` (stage name → ns, stages reached only), `at_unix_s`,
    /// `warnings`, and on accept `profile` and `credential_id` (hex).
    pub fn to_json(&self) -> Value {
        let mut stages = Map::new();
        for s in Stage::ALL {
            if let Some(ns) = self.stages.get(s) {
                stages.insert(s.name().into(), json!(ns));
            }
        }
        let mut v = json!({
            "decision": if self.is_accept() { "accept" } else { "reject" },
            "reason": self.reason_code(),
            "ride_id": self.ride_id(),
            "message": self.message(),
            "latency_us": self.total_ns / 1000,
            "stages_ns": stages,
            "at_unix_s": self.at_unix_s,
            "warnings": self.warnings,
        });
        if let Outcome::Accepted {
            profile,
            credential_id,
            ..
        } = &self.outcome
        {
            v["profile"] = json!(profile.name());
            v["credential_id"] = json!(credential_id.to_hex());
        }
        if let Outcome::Rejected(r) = &self.outcome {
            v["clock_related"] = json!(r.is_clock_related());
            v["forgery"] = json!(r.is_forgery());
        }
        v
    }
}

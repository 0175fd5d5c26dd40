//! Errors: the storage layer's ([`StoreError`]), each boundary's typed
//! refusals ([`IngestError`] for reader batches, [`OpsError`] for account,
//! reader and dispute operations), and the HTTP API's answer ([`ApiError`]:
//! a stable snake_case code, an HTTP status and a human message). This file
//! is the one mapping from an error to its [`ErrorCode`] and status.

use crate::model::RideId;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fare_credential::keys::KeyError;
use fare_credential::FormatError;

/// Why a storage operation failed. Always a server-side problem (disk, a
/// corrupt value, a lost race), never the client's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The embedded database failed (disk full, permissions, corruption).
    #[error("storage backend failed: {0} (is the data directory writable and the disk not full?)")]
    Backend(String),
    /// PostgreSQL failed or could not be reached.
    #[error("{0} (is PostgreSQL running and reachable at `database_url`, and may its role use the database?)")]
    Database(String),
    /// Every pooled PostgreSQL connection stayed busy for the pool's whole
    /// wait: the database is reachable but this instance asks more of it at
    /// once than its pool holds (a burst of uploads, slow queries, a stuck
    /// client). Answered `503 database_busy`: retry.
    #[error("no PostgreSQL connection free within {waited_ms} ms: all {pool_size} of the pool stayed busy (retry; if it persists raise `database_pool_size` or `database_pool_wait_ms`, or look for slow queries)")]
    PoolExhausted {
        /// How long the caller waited (`database_pool_wait_ms`).
        waited_ms: u64,
        /// The pool's size (`database_pool_size`).
        pool_size: usize,
    },
    /// The operating system refused what the store needs to start (a
    /// thread of the PostgreSQL client's runtime, memory).
    #[error(
        "{0} (the operating system refused a thread or memory: check `ulimit -u` and free memory)"
    )]
    Resources(String),
    /// The PostgreSQL schema is not this build's: a migration unknown to it
    /// (applied by a newer build) or one whose text differs.
    #[error("{0} (run the fare-settlement build that migrated this database, or a newer one)")]
    Schema(String),
    /// A broken contract inside the service (a read of more keys than the
    /// store takes at once, an operation its backend does not have, a row
    /// the query cannot have returned): neither the disk nor the database.
    #[error("storage layer bug: {0} (please report it with this message)")]
    Internal(String),
    /// A stored value did not decode: corruption or a foreign database.
    #[error("stored value `{what}` does not decode: {why} (corrupt data dir, or written by another version?)")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Decoder message.
        why: String,
    },
    /// A compare-and-swap precondition failed: someone else wrote first.
    #[error("concurrent update of `{what}`: retry the request")]
    Conflict {
        /// Which value.
        what: &'static str,
    },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<fare_credential::codec::CodecError> for StoreError {
    fn from(e: fare_credential::codec::CodecError) -> Self {
        StoreError::Corrupt {
            what: "value",
            why: e.to_string(),
        }
    }
}

/// Declares [`ErrorCode`]: every error the HTTP API answers with, its
/// stable code and its HTTP status, in one table (the single mapping from
/// errors to HTTP; `settlement/README.md`'s error table is checked against
/// it by a test).
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => ($code:literal, $status:ident),)*) => {
        /// Every error the HTTP API answers with. Each variant has one stable
        /// snake_case code and one HTTP status ([`ErrorCode::code`],
        /// [`ErrorCode::status`]); several variants may share a code where the
        /// same condition has a different status on different routes.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }
        impl ErrorCode {
            /// Every variant, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];
            /// The stable code a client matches on.
            pub fn code(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
            /// The HTTP status it is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

error_codes! {
    /// The batch does not parse (empty, truncated, trailing bytes, bad field).
    MalformedBatch => ("malformed_batch", BAD_REQUEST),
    /// The batch's format version is not 1.
    UnsupportedVersion => ("unsupported_version", BAD_REQUEST),
    /// The batch is over `MAX_BATCH_BYTES` (or announces more records than allowed).
    BatchTooLarge => ("batch_too_large", PAYLOAD_TOO_LARGE),
    /// The records inside the batch do not chain.
    BrokenChain => ("broken_chain", BAD_REQUEST),
    /// The batch signature does not verify under the reader's provisioned key.
    BadBatchSignature => ("bad_batch_signature", UNAUTHORIZED),
    /// A batch names a reader that is not provisioned.
    UnknownReader => ("unknown_reader", FORBIDDEN),
    /// An operator or bundle request names a reader that is not provisioned.
    NoSuchReader => ("unknown_reader", NOT_FOUND),
    /// The reader was retired: its uploads and bundles are refused.
    ReaderRetired => ("reader_retired", FORBIDDEN),
    /// The batch starts beyond `acked_seq + 1` (the answer carries `acked_seq`).
    SequenceGap => ("sequence_gap", CONFLICT),
    /// The batch rewrites records already held, or does not continue the held chain.
    ChainFork => ("chain_fork", CONFLICT),
    /// Missing or wrong operator bearer token.
    Unauthorized => ("unauthorized", UNAUTHORIZED),
    /// Dashboard: a logged-in operator's staff asked for another operator's
    /// reader or a deployment-wide page (accounts, settlement runs).
    OutOfScope => ("out_of_scope", FORBIDDEN),
    /// Dashboard: a form without this session's CSRF token.
    CsrfRejected => ("csrf_rejected", FORBIDDEN),
    /// The body is not JSON of the expected shape (unknown fields included).
    InvalidJson => ("invalid_json", BAD_REQUEST),
    /// The body is JSON but not an object (an array, a string, a number…).
    JsonNotObject => ("json_not_object", BAD_REQUEST),
    /// A field's value is out of range or badly formed.
    InvalidField => ("invalid_field", BAD_REQUEST),
    /// A path segment is not what the route expects (not an integer, not UTF-8).
    InvalidPath => ("invalid_path", BAD_REQUEST),
    /// A query parameter is not what the route expects.
    InvalidQuery => ("invalid_query", BAD_REQUEST),
    /// A JSON body is over `json_body_limit_bytes`.
    BodyTooLarge => ("body_too_large", PAYLOAD_TOO_LARGE),
    /// No such account.
    UnknownAccount => ("unknown_account", NOT_FOUND),
    /// No such settlement run (runs are kept in memory, the last 100).
    UnknownRun => ("unknown_run", NOT_FOUND),
    /// The account exists with other settings.
    AccountExists => ("account_exists", CONFLICT),
    /// The device key has a small-order component.
    WeakDeviceKey => ("weak_device_key", BAD_REQUEST),
    /// The device key is not a valid ed25519 public key.
    InvalidDeviceKey => ("invalid_device_key", BAD_REQUEST),
    /// The account is frozen: no new credentials.
    AccountFrozen => ("account_frozen", FORBIDDEN),
    /// The account's debt is over its credit limit: no new credentials.
    OverCreditLimit => ("over_credit_limit", FORBIDDEN),
    /// The payment id was used with another amount.
    PaymentIdReused => ("payment_id_reused", CONFLICT),
    /// The reader key is not a valid ed25519 public key.
    InvalidReaderKey => ("invalid_reader_key", BAD_REQUEST),
    /// The reader id is provisioned with another key or operator.
    ReaderExists => ("reader_exists", CONFLICT),
    /// No such report kind.
    UnknownReport => ("unknown_report", NOT_FOUND),
    /// No dispute over that ride.
    UnknownDispute => ("unknown_dispute", NOT_FOUND),
    /// The dispute was already resolved in favour of another reader.
    DisputeResolved => ("dispute_resolved", CONFLICT),
    /// An incident resolution's note is over its limit (reader incidents, #9).
    InvalidNote => ("invalid_note", BAD_REQUEST),
    /// No such reader incident to resolve (#9).
    UnknownIncident => ("unknown_incident", NOT_FOUND),
    /// A batch without a reader signature (`X-Reader-Auth`), or a bundle request with neither that nor the operator token.
    RequestUnsigned => ("request_unsigned", UNAUTHORIZED),
    /// A reader signature that does not parse, names another reader than the route, or does not verify with the registered key.
    RequestBadSignature => ("request_bad_signature", UNAUTHORIZED),
    /// A signed request whose time is outside `REQUEST_SKEW_S` of settlement's clock.
    RequestStale => ("request_stale", UNAUTHORIZED),
    /// A signed request already accepted (replayed), or too many within the window.
    RequestReplayed => ("request_replayed", UNAUTHORIZED),
    /// No such endpoint.
    NotFound => ("not_found", NOT_FOUND),
    /// The endpoint exists but not with this method (the answer carries `Allow`).
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED),
    /// The request took longer than `request_timeout_ms`.
    RequestTimeout => ("request_timeout", REQUEST_TIMEOUT),
    /// The HTTP layer refused the request before it reached a route.
    BadRequest => ("bad_request", BAD_REQUEST),
    /// Every connection slot is taken (`max_connections`): retry after `Retry-After` seconds.
    TooManyConnections => ("too_many_connections", SERVICE_UNAVAILABLE),
    /// Every PostgreSQL connection of the pool stayed busy for `database_pool_wait_ms`: retry.
    DatabaseBusy => ("database_busy", SERVICE_UNAVAILABLE),
    /// A compare-and-swap lost a race with another writer: retry.
    ConcurrentUpdate => ("concurrent_update", CONFLICT),
    /// The database failed (disk, corruption): a server fault.
    StorageError => ("storage_error", INTERNAL_SERVER_ERROR),
    /// A server fault with no more specific code (a bug).
    Internal => ("internal", INTERNAL_SERVER_ERROR),
    /// The deny list could not be re-published after an account change.
    DenyRefreshFailed => ("deny_refresh_failed", INTERNAL_SERVER_ERROR),
    /// The reader bundle could not be built.
    BundleFailed => ("bundle_failed", INTERNAL_SERVER_ERROR),
    /// No issuer key can issue now: retry later.
    IssuerUnavailable => ("issuer_unavailable", SERVICE_UNAVAILABLE),
    /// A settlement run failed (committed chunks stay; the next run resumes).
    SettlementFailed => ("settlement_failed", INTERNAL_SERVER_ERROR),
    /// A purge failed (nothing was deleted).
    PurgeFailed => ("purge_failed", INTERNAL_SERVER_ERROR),
    /// The device key was certified before, for this or another account.
    DeviceKeyReused => ("device_key_reused", CONFLICT),
    /// The passenger token was rotated away or reported lost.
    TokenRevoked => ("token_revoked", UNAUTHORIZED),
    /// A passenger token asked about another account.
    OtherAccount => ("other_account", FORBIDDEN),
    /// A passenger token called an operator route.
    OperatorOnly => ("operator_only", FORBIDDEN),
    /// The operator token called a route meant for a passenger token.
    PassengerOnly => ("passenger_only", FORBIDDEN),
    /// The account already has `MAX_ACTIVE_TOKENS` passenger tokens.
    TooManyTokens => ("too_many_tokens", CONFLICT),
    /// The account has no passenger token with that id.
    UnknownToken => ("unknown_token", NOT_FOUND),
    /// No issuer key with that id.
    UnknownIssuerKey => ("unknown_issuer_key", NOT_FOUND),
    /// Retiring this issuer key would leave none to issue credentials with.
    LastIssuerKey => ("last_issuer_key", CONFLICT),
    /// The KEYS directory could not be changed (disk, lock).
    IssuerKeysFailed => ("issuer_keys_failed", INTERNAL_SERVER_ERROR),
}

impl ErrorCode {
    /// The code for an error answer some lower layer (axum, tower) made with
    /// only a status: used to give such answers a JSON body.
    pub fn for_status(status: StatusCode) -> ErrorCode {
        match status {
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::TooManyConnections,
            s if s.is_server_error() => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        }
    }
}

/// An API error: HTTP status, stable code and message. Serialised as
/// `{"error": code, "message": message}` plus optional extra fields.
/// Made with [`ApiError::of`], so status and code come from [`ErrorCode`].
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case reason a machine can match.
    pub code: &'static str,
    /// Human text saying what was expected.
    pub message: String,
    /// Extra machine-readable fields merged into the JSON body (e.g. `acked_seq`).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    /// The error `code` with a human message; its status comes from [`ErrorCode::status`].
    pub fn of(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: code.status(),
            code: code.code(),
            message: message.into(),
            extra: None,
        }
    }
    /// A new error with a status and code given inline. Prefer
    /// [`ApiError::of`]: a code made here is not in [`ErrorCode`] and so not
    /// checked against the README.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }
    /// 400 with a code given inline. Kept so code written before
    /// [`ErrorCode`] still compiles; `no_inline_error_codes_outside_error_rs`
    /// lists every use: replace it with [`ApiError::of`].
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 404 with a code given inline (see [`ApiError::bad_request`]).
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    /// 409 with a code given inline (see [`ApiError::bad_request`]).
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// Adds extra JSON fields.
    pub fn with_extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }
    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"error": self.code, "message": self.message});
        if let (Some(serde_json::Value::Object(extra)), serde_json::Value::Object(map)) =
            (&self.extra, &mut v)
        {
            for (k, x) in extra {
                map.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage error");
        ApiError::of(e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("settlement_http_errors_total", "code" => self.code).increment(1);
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Why a reader batch was refused (`POST /v1/batches`,
/// [`crate::ingest::ingest_batch`]). Each variant says what was wrong and
/// where; [`IngestError::code`] is its one mapping to an [`ErrorCode`] (and
/// so to an HTTP status). A sequence gap and a chain fork are answers to a
/// registered reader whose signature verified (`acks` signs an
/// acknowledgement for them); the other refusals are not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The request body was empty.
    #[error("empty body: expected a batch v1 (binary)")]
    EmptyBody,
    /// The request body is over the batch size limit.
    #[error("batch body over MAX_BATCH_BYTES = {limit}: split the upload into smaller batches")]
    BodyTooLarge {
        /// The limit (`fare_credential::batch::MAX_BATCH_BYTES`).
        limit: usize,
    },
    /// The batch bytes do not parse, or do not verify, as a batch v1.
    #[error("{error}{}", format_cause(.error))]
    Format {
        /// What the parser or verifier found (object, field, limit).
        error: FormatError,
    },
    /// The batch names a reader that is not provisioned.
    #[error("reader {reader_id} is not provisioned: POST /v1/readers first")]
    UnknownReader {
        /// The reader id the batch names.
        reader_id: u32,
    },
    /// The reader was retired.
    #[error("reader {reader_id} was retired: its uploads are refused")]
    ReaderRetired {
        /// The reader id.
        reader_id: u32,
    },
    /// The key stored for the reader does not parse (a corrupt store).
    #[error("reader {reader_id}: stored key unusable: {error}")]
    StoredKeyUnusable {
        /// The reader id.
        reader_id: u32,
        /// Why the key does not parse.
        error: KeyError,
    },
    /// The batch starts beyond the next sequence settlement expects.
    #[error("batch starts at sequence {first} but settlement holds reader {reader_id} only up to {acked_seq}: resend from {}", acked_seq + 1)]
    SequenceGap {
        /// The reader.
        reader_id: u32,
        /// The batch's first sequence.
        first: u64,
        /// The highest contiguous sequence settlement holds.
        acked_seq: u64,
    },
    /// The batch rewrites or does not continue what settlement holds.
    #[error("reader {reader_id} sequence {seq}: {why}; the reader's log disagrees with what it uploaded before")]
    ChainFork {
        /// The reader.
        reader_id: u32,
        /// The first sequence that disagrees.
        seq: u64,
        /// What disagrees.
        why: &'static str,
        /// The highest contiguous sequence settlement holds.
        acked_seq: u64,
    },
    /// Storage failed (a server fault; nothing was stored).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The likely cause of a batch format error, appended to its message.
fn format_cause(e: &FormatError) -> &'static str {
    match e {
        FormatError::BadSignature { .. } => {
            ": the batch is not signed by the key provisioned for this reader"
        }
        FormatError::Truncated { .. }
        | FormatError::TrailingBytes { .. }
        | FormatError::UnsupportedVersion { .. }
        | FormatError::TooLarge { .. }
        | FormatError::Invalid { .. } => "",
    }
}

impl From<FormatError> for IngestError {
    fn from(error: FormatError) -> Self {
        IngestError::Format { error }
    }
}

impl IngestError {
    /// The one mapping of an ingest refusal to its code and HTTP status.
    /// Exhaustive over [`FormatError`] too: a new format error must decide
    /// its code here.
    pub fn code(&self) -> ErrorCode {
        match self {
            IngestError::EmptyBody => ErrorCode::MalformedBatch,
            IngestError::BodyTooLarge { .. } => ErrorCode::BatchTooLarge,
            IngestError::Format { error } => match error {
                FormatError::TooLarge { field, .. } if *field == "length" => {
                    ErrorCode::BatchTooLarge
                }
                FormatError::Invalid { field, .. } if field.starts_with("records.") => {
                    ErrorCode::BrokenChain
                }
                FormatError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
                FormatError::BadSignature { .. } => ErrorCode::BadBatchSignature,
                FormatError::Truncated { .. }
                | FormatError::TrailingBytes { .. }
                | FormatError::TooLarge { .. }
                | FormatError::Invalid { .. } => ErrorCode::MalformedBatch,
            },
            IngestError::UnknownReader { .. } | IngestError::StoredKeyUnusable { .. } => {
                ErrorCode::UnknownReader
            }
            IngestError::ReaderRetired { .. } => ErrorCode::ReaderRetired,
            IngestError::SequenceGap { .. } => ErrorCode::SequenceGap,
            IngestError::ChainFork { .. } => ErrorCode::ChainFork,
            IngestError::Store(e) => e.code(),
        }
    }
}

impl IngestError {
    /// For a refusal answered with settlement's cursor (a sequence gap or a
    /// chain fork, from a registered reader whose signature verified): the
    /// reader and the highest contiguous sequence held.
    pub fn held_cursor(&self) -> Option<(u32, u64)> {
        match self {
            IngestError::SequenceGap {
                reader_id,
                acked_seq,
                ..
            }
            | IngestError::ChainFork {
                reader_id,
                acked_seq,
                ..
            } => Some((*reader_id, *acked_seq)),
            IngestError::EmptyBody
            | IngestError::BodyTooLarge { .. }
            | IngestError::Format { .. }
            | IngestError::UnknownReader { .. }
            | IngestError::ReaderRetired { .. }
            | IngestError::StoredKeyUnusable { .. }
            | IngestError::Store(_) => None,
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        if let IngestError::Store(e) = e {
            return e.into();
        }
        let cursor = e.held_cursor();
        let err = ApiError::of(e.code(), e.to_string());
        match cursor {
            Some((reader_id, acked_seq)) => {
                err.with_extra(serde_json::json!({"reader_id": reader_id, "acked_seq": acked_seq}))
            }
            None => err,
        }
    }
}

/// Why an account, credential, payment, reader or dispute operation was
/// refused ([`crate::ops`]). Each variant names the field or object and
/// what was expected; [`OpsError::code`] is its one mapping to an
/// [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// A field's value is out of range or badly formed.
    #[error("{field} = {found}: expected {expected}")]
    InvalidField {
        /// The request field.
        field: &'static str,
        /// The value given (shortened where long).
        found: String,
        /// What the field accepts.
        expected: String,
    },
    /// The device key was certified before, for this or another account.
    #[error("device_public_key was certified before: make a fresh device key for every credential (`fare-wallet renew` does), so codes of different credentials cannot be linked")]
    DeviceKeyReused,
    /// No account with this id.
    #[error("no account `{account_id}`")]
    UnknownAccount {
        /// The id asked for.
        account_id: String,
    },
    /// The account exists with other settings.
    #[error(
        "account `{account_id}` exists with other settings: use PATCH-like operations, not create"
    )]
    AccountExists {
        /// The id.
        account_id: String,
    },
    /// The device key is not a usable ed25519 public key.
    #[error("device_public_key: {why}")]
    InvalidDeviceKey {
        /// What is wrong with it (hex, length, not a point).
        why: String,
    },
    /// The device key has a small-order component.
    #[error("device_public_key: {error}: signatures under it could verify differently at readers and at settlement (or anyone could sign ride codes)")]
    WeakDeviceKey {
        /// [`KeyError::Weak`] or [`KeyError::MixedOrder`].
        error: KeyError,
    },
    /// The account is frozen.
    #[error("account `{account_id}` is frozen: no new credentials")]
    AccountFrozen {
        /// The account.
        account_id: String,
    },
    /// The account's debt is over its credit limit.
    #[error("account `{account_id}` owes {owes_minor} (credit limit {credit_limit_minor}): pay first; it is on the deny list")]
    OverCreditLimit {
        /// The account.
        account_id: String,
        /// Its debt (minor units).
        owes_minor: i64,
        /// Its credit limit (minor units).
        credit_limit_minor: i64,
    },
    /// No issuer key can issue now.
    #[error("no credential issued: {why} (is an issuer key valid now? rotate with fare-keys)")]
    IssuerUnavailable {
        /// What the key store said.
        why: String,
    },
    /// The payment id was used with another amount.
    #[error("payment `{payment_id}` was already recorded for account `{account_id}` with amount {recorded_minor}: a different payment needs a new id")]
    PaymentIdReused {
        /// The account.
        account_id: String,
        /// The reused id.
        payment_id: String,
        /// The amount recorded under it.
        recorded_minor: i64,
    },
    /// The reader key is not a usable ed25519 public key.
    #[error("public_key: {why}")]
    InvalidReaderKey {
        /// What is wrong with it.
        why: String,
    },
    /// The reader id is provisioned with another key or operator.
    #[error("reader {reader_id} is already provisioned with another key or operator{}: use a new reader id", if *retired { " (and retired)" } else { "" })]
    ReaderExists {
        /// The reader id.
        reader_id: u32,
        /// Whether it is retired.
        retired: bool,
    },
    /// No reader with this id.
    #[error("reader {reader_id} is not provisioned")]
    NoSuchReader {
        /// The reader id.
        reader_id: u32,
    },
    /// No dispute over that ride.
    #[error("no dispute over ride {ride} (see GET /v1/reports/disputes)")]
    UnknownDispute {
        /// The charged ride named in the path.
        ride: RideId,
    },
    /// The awarded reader is not one of the dispute's.
    #[error("award_reader_id = {award_reader_id}: not a reader of this dispute (its readers: {})", list(.dispute_readers))]
    NotADisputeReader {
        /// The reader asked for.
        award_reader_id: u32,
        /// The dispute's readers.
        dispute_readers: Vec<u32>,
    },
    /// The dispute was resolved for another reader.
    #[error("the dispute over ride {ride} was resolved for reader {award_reader_id} (operator {operator})")]
    DisputeResolved {
        /// The charged ride.
        ride: RideId,
        /// The reader it was resolved for.
        award_reader_id: u32,
        /// That reader's operator.
        operator: String,
    },
    /// The ledger refused the posting that releases a held fare (a bug or
    /// a corrupt dispute record).
    #[error("release posting for the dispute over ride {ride}: {why}")]
    ReleasePosting {
        /// The charged ride.
        ride: RideId,
        /// What the ledger said.
        why: String,
    },
    /// Storage failed (a server fault; nothing was changed).
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list(ids: &[u32]) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl OpsError {
    /// The one mapping of an operation's refusal to its code and HTTP status.
    pub fn code(&self) -> ErrorCode {
        match self {
            OpsError::InvalidField { .. } | OpsError::NotADisputeReader { .. } => {
                ErrorCode::InvalidField
            }
            OpsError::UnknownAccount { .. } => ErrorCode::UnknownAccount,
            OpsError::DeviceKeyReused => ErrorCode::DeviceKeyReused,
            OpsError::AccountExists { .. } => ErrorCode::AccountExists,
            OpsError::InvalidDeviceKey { .. } => ErrorCode::InvalidDeviceKey,
            OpsError::WeakDeviceKey { .. } => ErrorCode::WeakDeviceKey,
            OpsError::AccountFrozen { .. } => ErrorCode::AccountFrozen,
            OpsError::OverCreditLimit { .. } => ErrorCode::OverCreditLimit,
            OpsError::IssuerUnavailable { .. } => ErrorCode::IssuerUnavailable,
            OpsError::PaymentIdReused { .. } => ErrorCode::PaymentIdReused,
            OpsError::InvalidReaderKey { .. } => ErrorCode::InvalidReaderKey,
            OpsError::ReaderExists { .. } => ErrorCode::ReaderExists,
            OpsError::NoSuchReader { .. } => ErrorCode::NoSuchReader,
            OpsError::UnknownDispute { .. } => ErrorCode::UnknownDispute,
            OpsError::DisputeResolved { .. } => ErrorCode::DisputeResolved,
            OpsError::ReleasePosting { .. } => ErrorCode::Internal,
            OpsError::Store(e) => e.code(),
        }
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::Store(e) => e.into(),
            e => ApiError::of(e.code(), e.to_string()),
        }
    }
}

impl StoreError {
    /// Its code: a lost compare-and-swap is `concurrent_update` (retry), a
    /// pool that stayed busy `database_busy` (retry), any other storage
    /// failure `storage_error`.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Conflict { .. } => ErrorCode::ConcurrentUpdate,
            StoreError::PoolExhausted { .. } => ErrorCode::DatabaseBusy,
            StoreError::Backend(_)
            | StoreError::Database(_)
            | StoreError::Resources(_)
            | StoreError::Schema(_)
            | StoreError::Internal(_)
            | StoreError::Corrupt { .. } => ErrorCode::StorageError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The `(code, status)` pairs of the README's error table: the rows
    /// after the `| code | status | when |` header; a status cell may list
    /// several statuses.
    fn readme_table() -> BTreeSet<(String, u16)> {
        let readme = include_str!("../README.md");
        let mut lines = readme
            .lines()
            .skip_while(|l| !l.starts_with("| code | status |"))
            .skip(2);
        let mut out = BTreeSet::new();
        for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells[1].trim_matches('`').to_string();
            for status in cells[2].split(',') {
                let status: u16 = status.trim().parse().unwrap_or_else(|_| {
                    panic!("README error table: status `{}` of `{code}`", cells[2])
                });
                out.insert((code.clone(), status));
            }
        }
        assert!(
            !out.is_empty(),
            "README.md has no `| code | status |` table"
        );
        out
    }

    #[test]
    fn readme_error_table_matches_error_codes_both_ways() {
        let ours: BTreeSet<(String, u16)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.code().to_string(), c.status().as_u16()))
            .collect();
        let readme = readme_table();
        let missing: Vec<_> = ours.difference(&readme).collect();
        let extra: Vec<_> = readme.difference(&ours).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "settlement/README.md's error table and ErrorCode differ:\n  not in the README: {missing:?}\n  not in ErrorCode: {extra:?}"
        );
    }

    #[test]
    fn codes_are_stable_snake_case_and_each_code_names_one_condition() {
        for c in ErrorCode::ALL {
            let code = c.code();
            assert!(
                !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            assert!(
                c.status().is_client_error() || c.status().is_server_error(),
                "{code}"
            );
        }
        // A code shared by variants differs only in status.
        let mut seen = BTreeSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert((c.code(), c.status())), "{c:?} repeats");
        }
    }

    /// The typed boundaries (ingest, operations) return their own error
    /// enums and never pick an HTTP answer: only this file maps them.
    #[test]
    fn typed_boundaries_leave_codes_and_statuses_to_error_rs() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for file in ["ingest.rs", "ops.rs"] {
            let text = std::fs::read_to_string(src.join(file)).unwrap();
            for word in ["ApiError", "ErrorCode", "StatusCode"] {
                assert!(
                    !text.contains(word),
                    "{file} names `{word}`: return IngestError / OpsError and map it in error.rs"
                );
            }
        }
    }

    /// A gap and a fork carry settlement's cursor into the answer; other
    /// refusals do not, and each names what was wrong.
    #[test]
    fn ingest_refusals_map_to_their_codes_with_the_cursor() {
        let gap = ApiError::from(IngestError::SequenceGap {
            reader_id: 7,
            first: 12,
            acked_seq: 9,
        });
        assert_eq!((gap.code, gap.status.as_u16()), ("sequence_gap", 409));
        assert_eq!(gap.body()["acked_seq"], 9);
        assert!(gap.message.contains("resend from 10"), "{}", gap.message);
        let sig = ApiError::from(IngestError::from(FormatError::BadSignature {
            object: "batch",
        }));
        assert_eq!(sig.code, "bad_batch_signature");
        assert!(sig.message.contains("key provisioned"), "{}", sig.message);
        assert!(sig.body().get("acked_seq").is_none());
        let long = ApiError::from(IngestError::from(FormatError::TooLarge {
            object: "batch",
            field: "length",
            limit: 1,
            found: 2,
        }));
        assert_eq!((long.code, long.status.as_u16()), ("batch_too_large", 413));
        let chain = ApiError::from(IngestError::from(FormatError::Invalid {
            object: "batch",
            field: "records.prev_hash",
            why: "x".into(),
        }));
        assert_eq!(chain.code, "broken_chain");
    }

    /// The one mapping: no file of settlement's library builds an error's
    /// status or code inline (`ApiError::new`, a `StatusCode::` error
    /// status); they name an [`ErrorCode`].
    #[test]
    fn no_inline_error_codes_outside_error_rs() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut dirs = vec![src];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                    continue;
                }
                if p.extension().is_none_or(|x| x != "rs") || p.ends_with("error.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let inline = line.contains("ApiError::new(")
                        || line.contains("ApiError::bad_request(")
                        || line.contains("ApiError::not_found(")
                        || line.contains("ApiError::conflict(")
                        || line.replace("-> ApiError {", "").contains("ApiError {")
                        || [
                            "BAD_REQUEST",
                            "NOT_FOUND",
                            "CONFLICT",
                            "FORBIDDEN",
                            "UNAUTHORIZED",
                            "PAYLOAD_TOO_LARGE",
                            "INTERNAL_SERVER_ERROR",
                            "SERVICE_UNAVAILABLE",
                            "REQUEST_TIMEOUT",
                            "METHOD_NOT_ALLOWED",
                        ]
                        .iter()
                        .any(|s| line.contains(&format!("StatusCode::{s}")));
                    if inline {
                        offenders.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "errors built inline instead of with ApiError::of(ErrorCode::…) (add the variant in error.rs and a row in README.md's error table):\n{}",
            offenders.join("\n")
        );
    }
}

//! Errors: the storage layer's, and the HTTP API's (a stable snake_case code,
//! an HTTP status and a human message).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a storage operation failed. Always a server-side problem (disk, a
/// corrupt value, a lost race), never the client's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The embedded database failed (disk full, permissions, corruption).
    #[error("storage backend failed: {0} (is the data directory writable and the disk not full?)")]
    Backend(String),
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

/// An API error: HTTP status, stable code and message. Serialised as
/// `{"error": code, "message": message}` plus optional extra fields.
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
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }
    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 404 with a code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    /// 409 with a code.
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
        match e {
            StoreError::Conflict { .. } => ApiError::conflict("concurrent_update", e.to_string()),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                e.to_string(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("settlement_http_errors_total", "code" => self.code).increment(1);
        (self.status, axum::Json(self.body())).into_response()
    }
}

//! Upload to settlement and bundle refresh (`fare-validator sync`).
//!
//! Contract (COMMON.md): `POST /v1/batches` with batch v1 bytes answers
//! `{"reader_id","acked_seq","result"}`; 409 `sequence_gap` carries the
//! `acked_seq` settlement holds. `GET /v1/readers/{id}/bundle?since=VER`
//! answers root-signed bundle bytes.

use crate::error::{BundleError, ValidatorError};
use crate::reader::Reader;
use fare_credential::batch::MAX_BATCH_BYTES;
use fare_credential::bundle::MAX_BUNDLE_BYTES;
use std::time::Duration;

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Batches posted (including re-sends).
    pub batches_sent: u32,
    /// Acknowledged sequence after the upload.
    pub acked_up_to: u64,
    /// Bundle version installed, if a newer one came.
    pub bundle_installed: Option<u64>,
    /// Bundle version held after the sync.
    pub bundle_version: u64,
}

#[derive(serde::Deserialize)]
struct AckBody {
    acked_seq: u64,
}

fn sync_err(url: &str, why: impl std::fmt::Display) -> ValidatorError {
    ValidatorError::Sync {
        url: url.to_string(),
        why: why.to_string(),
    }
}

async fn read_limited(
    url: &str,
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ValidatorError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| sync_err(url, e))? {
        if out.len() + chunk.len() > limit {
            return Err(sync_err(
                url,
                format!("response over the {limit}-byte limit"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Uploads every unacknowledged record, then fetches and installs a newer
/// bundle. Safe to interrupt at any point: batches are re-sent from the
/// acknowledged sequence and settlement de-duplicates.
pub async fn sync(
    reader: &mut Reader,
    server_url: &str,
    now_unix_s: u64,
) -> Result<SyncReport, ValidatorError> {
    let base = server_url.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| sync_err(base, e))?;
    let mut report = SyncReport::default();
    let url = format!("{base}/v1/batches");
    let per_batch = reader.config().storage.batch_max_records;
    // Each round must move the acknowledged sequence; a server that keeps
    // answering without progress is abandoned rather than looped on.
    while let Some((bytes, first, last)) = reader.next_batch(per_batch)? {
        debug_assert!(bytes.len() <= MAX_BATCH_BYTES);
        let before = reader.state().acked_up_to;
        let resp = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .map_err(|e| sync_err(&url, e))?;
        report.batches_sent += 1;
        let status = resp.status();
        let body = read_limited(&url, resp, 64 << 10).await?;
        let text = String::from_utf8_lossy(&body);
        if status.is_success() {
            let ack: AckBody = serde_json::from_slice(&body)
                .map_err(|e| sync_err(&url, format!("unreadable acknowledgement `{text}`: {e}")))?;
            reader.acknowledge(ack.acked_seq)?;
            tracing::info!(first, last, acked = ack.acked_seq, "batch acknowledged");
        } else if status == reqwest::StatusCode::CONFLICT {
            let ack: Option<AckBody> = serde_json::from_slice(&body).ok();
            match ack {
                Some(a) if a.acked_seq > before => reader.acknowledge(a.acked_seq)?,
                _ => {
                    return Err(sync_err(
                        &url,
                        format!(
                            "settlement reports a sequence gap before {first} ({text}) but this reader \
                             was acknowledged up to {before}: settlement lost rides this reader has compacted?"
                        ),
                    ))
                }
            }
        } else {
            return Err(sync_err(&url, format!("HTTP {status}: {text}")));
        }
        if reader.state().acked_up_to <= before {
            return Err(sync_err(
                &url,
                format!("no progress: acknowledged sequence stays at {before}"),
            ));
        }
    }
    report.acked_up_to = reader.state().acked_up_to;

    let url = format!(
        "{base}/v1/readers/{}/bundle?since={}",
        reader.reader_id(),
        reader.bundle_version()
    );
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| sync_err(&url, e))?;
    let status = resp.status();
    let body = read_limited(&url, resp, MAX_BUNDLE_BYTES).await?;
    if !status.is_success() {
        return Err(sync_err(
            &url,
            format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
        ));
    }
    match reader.install_bundle(&body, now_unix_s) {
        Ok(v) => report.bundle_installed = Some(v),
        Err(ValidatorError::Bundle(BundleError::NotNewer { .. })) => {}
        Err(e) => return Err(e),
    }
    report.bundle_version = reader.bundle_version();
    let _ = reader.compact(now_unix_s)?;
    Ok(report)
}

//! The reader bundle as the operator fetches it
//! (`GET /v1/readers/{id}/bundle`, operator token), checked with
//! [`fare_credential::testkit::verified_bundle`].

use super::*;
use fare_credential::bundle::PublishedBundle;

impl Server {
    /// The bundle of reader `reader_id` (`?since=` when given), verified
    /// under the deployment's root key.
    pub async fn operator_bundle(&self, reader_id: u32, since: Option<u64>) -> PublishedBundle {
        let query = since.map_or(String::new(), |v| format!("?since={v}"));
        let answer = self
            .http
            .get(format!("{}/v1/readers/{reader_id}/bundle{query}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let root = self.app.keys.lock().unwrap().root_public_key();
        fare_credential::testkit::verified_bundle(&answer, &root)
    }
}

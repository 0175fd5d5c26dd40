-- 0001: one key-value table per store::Space (settlement/src/store/mod.rs).
--
-- Keys and values are the same bytes the sled backend stores (values
-- encoded with fare_credential::codec); bytea compares bytewise, so key
-- order, prefix scans and ranges are sled's. Every key is minted by the
-- service from natural ids (reader id, account id, credential id, posting
-- id): no SERIAL, no sequence. The key's first field is the row's
-- distribution key (see settlement/README.md "PostgreSQL").

-- account id → Account
CREATE TABLE kv_accounts (k bytea PRIMARY KEY, v bytea NOT NULL);

-- credential id → CredentialRecord
CREATE TABLE kv_credentials (k bytea PRIMARY KEY, v bytea NOT NULL);

-- account id ‖ 0 ‖ credential id → ()
CREATE TABLE kv_account_credentials (k bytea PRIMARY KEY, v bytea NOT NULL);

-- reader id BE → Reader
CREATE TABLE kv_readers (k bytea PRIMARY KEY, v bytea NOT NULL);

-- reader id BE → ReaderState (cursors)
CREATE TABLE kv_reader_states (k bytea PRIMARY KEY, v bytea NOT NULL);

-- reader id BE ‖ block BE → ride block (≤ 64 raw ride records)
CREATE TABLE kv_rides (k bytea PRIMARY KEY, v bytea NOT NULL);

-- reader id BE ‖ block BE → result block (≤ 256 ride results)
CREATE TABLE kv_results (k bytea PRIMARY KEY, v bytea NOT NULL);

-- incident key → Incident
CREATE TABLE kv_incidents (k bytea PRIMARY KEY, v bytea NOT NULL);

-- posting id → Posting (payments, holds, releases)
CREATE TABLE kv_postings (k bytea PRIMARY KEY, v bytea NOT NULL);

-- reader id BE ‖ block BE → posting block
CREATE TABLE kv_ride_postings (k bytea PRIMARY KEY, v bytea NOT NULL);

-- ledger account → balance
CREATE TABLE kv_balances (k bytea PRIMARY KEY, v bytea NOT NULL);

-- ledger account ‖ 0 ‖ … → posting index
CREATE TABLE kv_account_postings (k bytea PRIMARY KEY, v bytea NOT NULL);

-- account id ‖ 0 ‖ YYYYMMDD → DayState
CREATE TABLE kv_days (k bytea PRIMARY KEY, v bytea NOT NULL);

-- credential id → settled code sightings
CREATE TABLE kv_codes (k bytea PRIMARY KEY, v bytea NOT NULL);

-- fraud event key → FraudEvent
CREATE TABLE kv_fraud (k bytea PRIMARY KEY, v bytea NOT NULL);

-- account id ‖ 0 ‖ payment id → PaymentRecord
CREATE TABLE kv_payments (k bytea PRIMARY KEY, v bytea NOT NULL);

-- deny list version BE → DenyVersion
CREATE TABLE kv_deny_versions (k bytea PRIMARY KEY, v bytea NOT NULL);

-- account id → () while revoked
CREATE TABLE kv_revoked (k bytea PRIMARY KEY, v bytea NOT NULL);

-- name → small value (deny head, chunk counter)
CREATE TABLE kv_meta (k bytea PRIMARY KEY, v bytea NOT NULL);

-- charged ride key → Dispute
CREATE TABLE kv_disputes (k bytea PRIMARY KEY, v bytea NOT NULL);

-- 0003: a schema ready for a distributed PostgreSQL (issue #13, point 3).
--
-- * Every table gains its distribution key `d`, first in its primary key
--   (d, k): the reader for ride intake, the account (or ledger account)
--   for ledger and settlement data, the credential for code sightings.
--   `d` is a prefix of `k` cut by a monotone rule
--   (settlement/src/store/postgres/layout.rs), so (d, k) orders as k did and
--   the store's ordered scans are ranges on the primary key. No unique key
--   lacks `d`; no id comes from a sequence.
-- * Ride history (raw ride blocks, result blocks, account day states) is
--   partitioned by day (`day` = YYYYMMDD, RANGE partitions of one day,
--   created by the store before it writes a day's first row) so that the
--   retention purge drops whole day partitions instead of deleting rows.
--
-- The 0002 tables are renamed `*_v2` here; the store then copies their
-- rows into the new tables (computing d and day in Rust: the day of a
-- block is in its encoded value) and drops them, in this same transaction
-- (`migrate::after_sql`).

ALTER TABLE kv_accounts RENAME TO kv_accounts_v2;
ALTER INDEX kv_accounts_pkey RENAME TO kv_accounts_v2_pkey;
ALTER TABLE kv_credentials RENAME TO kv_credentials_v2;
ALTER INDEX kv_credentials_pkey RENAME TO kv_credentials_v2_pkey;
ALTER TABLE kv_account_credentials RENAME TO kv_account_credentials_v2;
ALTER INDEX kv_account_credentials_pkey RENAME TO kv_account_credentials_v2_pkey;
ALTER TABLE kv_readers RENAME TO kv_readers_v2;
ALTER INDEX kv_readers_pkey RENAME TO kv_readers_v2_pkey;
ALTER TABLE kv_reader_states RENAME TO kv_reader_states_v2;
ALTER INDEX kv_reader_states_pkey RENAME TO kv_reader_states_v2_pkey;
ALTER TABLE kv_incidents RENAME TO kv_incidents_v2;
ALTER INDEX kv_incidents_pkey RENAME TO kv_incidents_v2_pkey;
ALTER TABLE kv_postings RENAME TO kv_postings_v2;
ALTER INDEX kv_postings_pkey RENAME TO kv_postings_v2_pkey;
ALTER TABLE kv_ride_postings RENAME TO kv_ride_postings_v2;
ALTER INDEX kv_ride_postings_pkey RENAME TO kv_ride_postings_v2_pkey;
ALTER TABLE kv_balances RENAME TO kv_balances_v2;
ALTER INDEX kv_balances_pkey RENAME TO kv_balances_v2_pkey;
ALTER TABLE kv_account_postings RENAME TO kv_account_postings_v2;
ALTER INDEX kv_account_postings_pkey RENAME TO kv_account_postings_v2_pkey;
ALTER TABLE kv_codes RENAME TO kv_codes_v2;
ALTER INDEX kv_codes_pkey RENAME TO kv_codes_v2_pkey;
ALTER TABLE kv_fraud RENAME TO kv_fraud_v2;
ALTER INDEX kv_fraud_pkey RENAME TO kv_fraud_v2_pkey;
ALTER TABLE kv_payments RENAME TO kv_payments_v2;
ALTER INDEX kv_payments_pkey RENAME TO kv_payments_v2_pkey;
ALTER TABLE kv_deny_versions RENAME TO kv_deny_versions_v2;
ALTER INDEX kv_deny_versions_pkey RENAME TO kv_deny_versions_v2_pkey;
ALTER TABLE kv_revoked RENAME TO kv_revoked_v2;
ALTER INDEX kv_revoked_pkey RENAME TO kv_revoked_v2_pkey;
ALTER TABLE kv_meta RENAME TO kv_meta_v2;
ALTER INDEX kv_meta_pkey RENAME TO kv_meta_v2_pkey;
ALTER TABLE kv_disputes RENAME TO kv_disputes_v2;
ALTER INDEX kv_disputes_pkey RENAME TO kv_disputes_v2_pkey;
ALTER TABLE kv_passenger_tokens RENAME TO kv_passenger_tokens_v2;
ALTER INDEX kv_passenger_tokens_pkey RENAME TO kv_passenger_tokens_v2_pkey;
ALTER TABLE kv_account_tokens RENAME TO kv_account_tokens_v2;
ALTER INDEX kv_account_tokens_pkey RENAME TO kv_account_tokens_v2_pkey;
ALTER TABLE kv_device_keys RENAME TO kv_device_keys_v2;
ALTER INDEX kv_device_keys_pkey RENAME TO kv_device_keys_v2_pkey;
ALTER TABLE kv_device_credentials RENAME TO kv_device_credentials_v2;
ALTER INDEX kv_device_credentials_pkey RENAME TO kv_device_credentials_v2_pkey;
ALTER TABLE kv_denied_credentials RENAME TO kv_denied_credentials_v2;
ALTER INDEX kv_denied_credentials_pkey RENAME TO kv_denied_credentials_v2_pkey;
ALTER TABLE kv_rides RENAME TO kv_rides_v2;
ALTER INDEX kv_rides_pkey RENAME TO kv_rides_v2_pkey;
ALTER TABLE kv_results RENAME TO kv_results_v2;
ALTER INDEX kv_results_pkey RENAME TO kv_results_v2_pkey;
ALTER TABLE kv_days RENAME TO kv_days_v2;
ALTER INDEX kv_days_pkey RENAME TO kv_days_v2_pkey;

-- account id → Account; d = account id
CREATE TABLE kv_accounts (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- credential id → CredentialRecord; d = credential id
CREATE TABLE kv_credentials (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- account id ‖ 0 ‖ credential id → (); d = account id
CREATE TABLE kv_account_credentials (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- reader id BE → Reader; d = reader id
CREATE TABLE kv_readers (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- reader id BE → ReaderState (cursors); d = reader id
CREATE TABLE kv_reader_states (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- reader id BE ‖ kind ‖ 0 ‖ seq → Incident; d = reader id
CREATE TABLE kv_incidents (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- posting id → Posting (payments, holds, releases); d = the posting id
CREATE TABLE kv_postings (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- reader id BE ‖ block BE → posting block; d = reader id
CREATE TABLE kv_ride_postings (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- ledger account → balance; d = ledger account
CREATE TABLE kv_balances (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- ledger account ‖ 0 ‖ … → posting index; d = ledger account
CREATE TABLE kv_account_postings (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- credential id → settled code sightings; d = credential id
CREATE TABLE kv_codes (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- credential id ‖ device seq → FraudEvent; d = credential id
CREATE TABLE kv_fraud (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- account id ‖ 0 ‖ payment id → PaymentRecord; d = account id
CREATE TABLE kv_payments (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- deny list version BE → DenyVersion; d = the version (a reference table when distributed)
CREATE TABLE kv_deny_versions (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- account id → () while revoked; d = account id
CREATE TABLE kv_revoked (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- name → small value (deny head, chunk counter); d = the name (a reference table when distributed)
CREATE TABLE kv_meta (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- charged ride key → Dispute; d = reader id
CREATE TABLE kv_disputes (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- passenger token id → TokenRecord; d = token id
CREATE TABLE kv_passenger_tokens (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- account id ‖ 0 ‖ token id → (); d = account id
CREATE TABLE kv_account_tokens (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- device public key → DeviceKeyRecord; d = device key
CREATE TABLE kv_device_keys (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- enrolment id ‖ 0 ‖ credential id → (); d = enrolment id
CREATE TABLE kv_device_credentials (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- credential id → DeniedCredential; d = credential id
CREATE TABLE kv_denied_credentials (d bytea NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (d, k));

-- reader id BE ‖ block BE → ride block (≤ 64 raw ride records); day: UTC date of the block's newest reader time; d = reader id
CREATE TABLE kv_rides (d bytea NOT NULL, k bytea NOT NULL, day integer NOT NULL, v bytea NOT NULL,
    PRIMARY KEY (d, k, day)) PARTITION BY RANGE (day);

-- reader id BE ‖ block BE → result block (≤ 256 ride results); day: UTC date of the block's newest reader time; d = reader id
CREATE TABLE kv_results (d bytea NOT NULL, k bytea NOT NULL, day integer NOT NULL, v bytea NOT NULL,
    PRIMARY KEY (d, k, day)) PARTITION BY RANGE (day);

-- account id ‖ 0 ‖ YYYYMMDD → DayState; day: the service day in the key; d = account id
CREATE TABLE kv_days (d bytea NOT NULL, k bytea NOT NULL, day integer NOT NULL, v bytea NOT NULL,
    PRIMARY KEY (d, k, day)) PARTITION BY RANGE (day);

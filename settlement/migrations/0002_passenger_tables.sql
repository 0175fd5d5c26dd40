-- 0002: the key spaces of passenger identities (issue #11,
-- settlement/src/passengers.rs), one key-value table each as in 0001.

-- passenger token id (16 bytes) → TokenRecord
CREATE TABLE kv_passenger_tokens (k bytea PRIMARY KEY, v bytea NOT NULL);

-- account id ‖ 0 ‖ passenger token id → () (tokens of an account)
CREATE TABLE kv_account_tokens (k bytea PRIMARY KEY, v bytea NOT NULL);

-- device public key (32 bytes) → DeviceKeyRecord (every key ever certified)
CREATE TABLE kv_device_keys (k bytea PRIMARY KEY, v bytea NOT NULL);

-- enrolment (device) id ‖ 0 ‖ credential id → ()
CREATE TABLE kv_device_credentials (k bytea PRIMARY KEY, v bytea NOT NULL);

-- credential id → DeniedCredential (a lost phone's credentials)
CREATE TABLE kv_denied_credentials (k bytea PRIMARY KEY, v bytea NOT NULL);

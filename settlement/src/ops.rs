//! Operator and account operations (accounts, credentials, payments,
//! readers). Each validates its input, then commits one write set.

use crate::core::passenger_account;
use crate::error::{ApiError, ErrorCode};
use crate::model::*;
use crate::settle::{is_revoked, set_revoked};
use crate::store::{Db, Space, WriteSet};
use fare_credential::keys::{parse_device_key_for_issuance, parse_public_key, KeyError};
use fare_credential::Profile;
use fare_keys::{IssueRequest, KeyStore};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Largest credit limit / payment accepted (10 million major units in cents).
pub const MAX_MONEY_MINOR: i64 = 1_000_000_000;
/// Longest client payment id.
pub const MAX_PAYMENT_ID_BYTES: usize = 64;

fn check_id(field: &'static str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.is_empty()
        || s.len() > max
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::of(
            ErrorCode::InvalidField,
            format!("{field} `{s}`: expected 1..={max} characters from [A-Za-z0-9_-]"),
        ));
    }
    Ok(())
}

fn check_money(field: &'static str, v: i64, min: i64) -> Result<(), ApiError> {
    if v < min || v > MAX_MONEY_MINOR {
        return Err(ApiError::of(
            ErrorCode::InvalidField,
            format!("{field} = {v}: expected {min}..={MAX_MONEY_MINOR} (integer minor units)"),
        ));
    }
    Ok(())
}

/// `POST /v1/accounts` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Pseudonymous id; generated when absent.
    #[serde(default)]
    pub account_id: Option<String>,
    /// Concession profile (default adult).
    #[serde(default)]
    pub profile: Option<Profile>,
    /// Credit limit; the configured default when absent.
    #[serde(default)]
    pub credit_limit_minor: Option<i64>,
}

/// Creates an account. Creating the same id again with the same fields is a
/// no-op (`created: false`); with different fields a 409.
pub fn create_account(
    db: &Db,
    req: &CreateAccount,
    default_limit: i64,
    now: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(Account, bool), ApiError> {
    let id = match &req.account_id {
        Some(id) => {
            check_id("account_id", id, MAX_ACCOUNT_ID_BYTES)?;
            id.clone()
        }
        None => {
            let mut b = [0u8; 12];
            rng.fill_bytes(&mut b);
            format!("acc_{}", hex::encode(b))
        }
    };
    let limit = req.credit_limit_minor.unwrap_or(default_limit);
    check_money("credit_limit_minor", limit, 0)?;
    let account = Account {
        account_id: id.clone(),
        profile: req.profile.unwrap_or(Profile::Adult),
        credit_limit_minor: limit,
        frozen: false,
        created_unix_s: now,
    };
    if let Some(old) = db.account(&id)? {
        if old.profile == account.profile && old.credit_limit_minor == account.credit_limit_minor {
            return Ok((old, false));
        }
        return Err(ApiError::of(
            ErrorCode::AccountExists,
            format!(
                "account `{id}` exists with other settings: use PATCH-like operations, not create"
            ),
        ));
    }
    let mut w = WriteSet::default();
    Db::put_account(&mut w, &account);
    w.check(Space::Accounts, id.as_bytes().to_vec(), None);
    db.commit(w)?;
    Ok((account, true))
}

/// `POST /v1/accounts/{id}/devices` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    /// The phone's ed25519 public key, 64 hex characters.
    pub device_public_key: String,
    /// Requested lifetime (capped by configuration).
    pub valid_for_s: u64,
}

/// The issued credential.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuedCredential {
    /// Its id (hex).
    pub credential_id: String,
    /// The credential bytes, hex (126 bytes).
    pub credential: String,
    /// Validity start.
    pub valid_from_unix_s: u64,
    /// Validity end, inclusive.
    pub valid_until_unix_s: u64,
    /// Profile it carries.
    pub profile: Profile,
}

/// The account, or 404 `unknown_account`.
pub fn account_or_404(db: &Db, account_id: &str) -> Result<Account, ApiError> {
    db.account(account_id)?.ok_or_else(|| {
        ApiError::of(
            ErrorCode::UnknownAccount,
            format!("no account `{account_id}`"),
        )
    })
}

/// Registers a device key and issues a credential, unless the account is
/// frozen, deny-listed or over its credit limit, or the key is weak/invalid
/// or was certified before (`device_key_reused`).
#[allow(clippy::too_many_arguments)]
pub fn register_device(
    db: &Db,
    keys: &std::sync::Mutex<KeyStore>,
    account_id: &str,
    req: &RegisterDevice,
    max_validity_s: u64,
    now: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<IssuedCredential, ApiError> {
    register_device_via(db, keys, account_id, req, None, max_validity_s, now, rng)
}

/// [`register_device`] on behalf of the passenger enrolment `device_id`
/// (`None`: the operator), linked to it so a lost phone's credentials can
/// be deny-listed (`crate::passengers`).
#[allow(clippy::too_many_arguments)]
pub fn register_device_via(
    db: &Db,
    keys: &std::sync::Mutex<KeyStore>,
    account_id: &str,
    req: &RegisterDevice,
    device_id: Option<[u8; 16]>,
    max_validity_s: u64,
    now: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<IssuedCredential, ApiError> {
    let account = db.account(account_id)?.ok_or_else(|| {
        ApiError::of(
            ErrorCode::UnknownAccount,
            format!("no account `{account_id}`"),
        )
    })?;
    let raw = hex::decode(req.device_public_key.trim()).map_err(|e| {
        ApiError::of(
            ErrorCode::InvalidDeviceKey,
            format!("device_public_key: expected 64 hex characters: {e}"),
        )
    })?;
    match parse_device_key_for_issuance(&raw) {
        Ok(_) => {}
        Err(KeyError::Weak) => {
            return Err(ApiError::of(
                ErrorCode::WeakDeviceKey,
                "device_public_key has small order: such a key would let anyone sign ride codes",
            ))
        }
        Err(KeyError::MixedOrder) => {
            return Err(ApiError::of(
                ErrorCode::WeakDeviceKey,
                "device_public_key has a small-order component: an honest device never generates \
                 one, and signatures under it can verify differently at readers and at settlement",
            ))
        }
        Err(e) => {
            return Err(ApiError::of(
                ErrorCode::InvalidDeviceKey,
                format!("device_public_key: {e}"),
            ))
        }
    }
    if req.valid_for_s == 0 || req.valid_for_s > max_validity_s {
        return Err(ApiError::of(
            ErrorCode::InvalidField,
            format!(
                "valid_for_s = {}: expected 1..={max_validity_s}",
                req.valid_for_s
            ),
        ));
    }
    let forbidden = |code, msg: String| Err(ApiError::of(code, msg));
    if account.frozen {
        return forbidden(
            ErrorCode::AccountFrozen,
            format!("account `{account_id}` is frozen: no new credentials"),
        );
    }
    let balance = db.balance(&passenger_account(account_id))?;
    if is_revoked(&account, balance)
        || db
            .store()
            .get(Space::Revoked, account_id.as_bytes())?
            .is_some()
    {
        return forbidden(
            ErrorCode::OverCreditLimit,
            format!(
                "account `{account_id}` owes {} (credit limit {}): pay first; it is on the deny list",
                -balance, account.credit_limit_minor
            ),
        );
    }
    let device_public_key: [u8; 32] = raw
        .try_into()
        .expect("length checked by parse_device_key_for_issuance");
    crate::passengers::check_device_key_unused(db, &device_public_key)?;
    let cred = keys
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .issue_credential(
            &IssueRequest {
                device_public_key,
                profile: account.profile,
                valid_from_unix_s: now,
                valid_for_s: req.valid_for_s,
            },
            now,
            rng,
        )
        .map_err(|e| ApiError::of(ErrorCode::IssuerUnavailable, e.to_string()))?;
    let body = cred.body();
    let rec = CredentialRecord {
        credential_id: body.credential_id,
        account_id: account_id.into(),
        profile: body.profile,
        valid_from_unix_s: body.valid_from_unix_s as u64,
        valid_until_unix_s: body.valid_until_unix_s as u64,
        issued_unix_s: now,
    };
    let mut w = WriteSet::default();
    Db::put_credential(&mut w, &rec);
    crate::passengers::record_device_key(
        &mut w,
        &device_public_key,
        &crate::passengers::DeviceKeyRecord {
            account_id: account_id.into(),
            credential_id: body.credential_id,
            device_id,
            issued_unix_s: now,
        },
    );
    db.commit(w)?;
    metrics::counter!("settlement_credentials_issued_total").increment(1);
    Ok(IssuedCredential {
        credential_id: body.credential_id.to_hex(),
        credential: hex::encode(cred.as_bytes()),
        valid_from_unix_s: rec.valid_from_unix_s,
        valid_until_unix_s: rec.valid_until_unix_s,
        profile: rec.profile,
    })
}

/// `POST /v1/accounts/{id}/payments` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MakePayment {
    /// Client-given id: the same id twice is one payment.
    pub payment_id: String,
    /// Amount, > 0.
    pub amount_minor: i64,
}

/// Records a payment (idempotent on `payment_id`). Returns the record and
/// whether it was new.
pub fn pay(
    db: &Db,
    account_id: &str,
    req: &MakePayment,
    now: u64,
) -> Result<(PaymentRecord, bool), ApiError> {
    check_id("payment_id", &req.payment_id, MAX_PAYMENT_ID_BYTES)?;
    check_money("amount_minor", req.amount_minor, 1)?;
    let account = db.account(account_id)?.ok_or_else(|| {
        ApiError::of(
            ErrorCode::UnknownAccount,
            format!("no account `{account_id}`"),
        )
    })?;
    if let Some(old) = db.payment(account_id, &req.payment_id)? {
        if old.amount_minor == req.amount_minor {
            return Ok((old, false));
        }
        return Err(ApiError::of(ErrorCode::PaymentIdReused,
            format!(
                "payment `{}` was already recorded for account `{account_id}` with amount {}: a different payment needs a new id",
                req.payment_id, old.amount_minor
            ),
        ));
    }
    let posting = fare_ledger::payment_posting(account_id, &req.payment_id, req.amount_minor)
        .map_err(|e| ApiError::of(ErrorCode::InvalidField, e.to_string()))?;
    let rec = PaymentRecord {
        payment_id: req.payment_id.clone(),
        account_id: account_id.into(),
        amount_minor: req.amount_minor,
        posting_id: posting.posting_id.clone(),
        at_unix_s: now,
    };
    let clearing = AccountRef::PaymentsClearing.to_string();
    let mut balances = HashMap::new();
    balances.insert(clearing.clone(), db.balance(&clearing)?);
    balances.insert(
        passenger_account(account_id),
        db.balance(&passenger_account(account_id))?,
    );
    let mut w = WriteSet::default();
    Db::put_postings(&mut w, std::slice::from_ref(&posting), &mut balances);
    Db::put_balances(&mut w, &balances);
    let key = crate::store::typed::payment_key(account_id, &req.payment_id);
    w.check(Space::Payments, key.clone(), None);
    w.put(
        Space::Payments,
        key,
        crate::store::typed::enc("payment", &rec),
    );
    set_revoked(&mut w, &account, balances[&passenger_account(account_id)]);
    db.commit(w)?;
    Ok((rec, true))
}

/// Freezes or unfreezes an account.
pub fn set_frozen(db: &Db, account_id: &str, frozen: bool) -> Result<Account, ApiError> {
    let mut account = db.account(account_id)?.ok_or_else(|| {
        ApiError::of(
            ErrorCode::UnknownAccount,
            format!("no account `{account_id}`"),
        )
    })?;
    account.frozen = frozen;
    let balance = db.balance(&passenger_account(account_id))?;
    let mut w = WriteSet::default();
    Db::put_account(&mut w, &account);
    set_revoked(&mut w, &account, balance);
    db.commit(w)?;
    Ok(account)
}

/// An account statement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Statement {
    /// The account.
    pub account: Account,
    /// Balance (payments minus charges); negative = debt.
    pub balance_minor: i64,
    /// Debt (0 when in credit).
    pub debt_minor: i64,
    /// On the deny list (frozen or over limit).
    pub revoked: bool,
    /// Credentials issued.
    pub credentials: Vec<CredentialRecord>,
    /// Every posting on the passenger account.
    pub postings: Vec<Posting>,
}

/// Builds a statement.
pub fn statement(db: &Db, account_id: &str) -> Result<Statement, ApiError> {
    let account = db.account(account_id)?.ok_or_else(|| {
        ApiError::of(
            ErrorCode::UnknownAccount,
            format!("no account `{account_id}`"),
        )
    })?;
    let balance = db.balance(&passenger_account(account_id))?;
    Ok(Statement {
        revoked: db
            .store()
            .get(Space::Revoked, account_id.as_bytes())?
            .is_some(),
        credentials: db.credentials_of(account_id)?,
        postings: db.postings_of(&passenger_account(account_id))?,
        debt_minor: (-balance).max(0),
        balance_minor: balance,
        account,
    })
}

/// `POST /v1/readers` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionReader {
    /// Reader id.
    pub reader_id: u32,
    /// ed25519 public key, 64 hex characters.
    pub public_key: String,
    /// Operator id (as in the tariff).
    pub operator: String,
    /// Vehicle.
    pub vehicle: String,
    /// Route.
    pub route: String,
}

/// Provisions a reader. The same request again is a no-op; a different key
/// or operator for an existing id is refused (retire it and use a new id).
pub fn provision_reader(
    db: &Db,
    req: &ProvisionReader,
    now: u64,
) -> Result<(Reader, bool), ApiError> {
    let raw = hex::decode(req.public_key.trim()).map_err(|e| {
        ApiError::of(
            ErrorCode::InvalidReaderKey,
            format!("public_key: expected 64 hex characters: {e}"),
        )
    })?;
    let vk = parse_public_key(&raw)
        .map_err(|e| ApiError::of(ErrorCode::InvalidReaderKey, format!("public_key: {e}")))?;
    for (field, v) in [
        ("operator", &req.operator),
        ("vehicle", &req.vehicle),
        ("route", &req.route),
    ] {
        if v.is_empty() || v.len() > fare_credential::record::MAX_NAME_BYTES {
            return Err(ApiError::of(
                ErrorCode::InvalidField,
                format!(
                    "{field}: expected 1..={} bytes",
                    fare_credential::record::MAX_NAME_BYTES
                ),
            ));
        }
    }
    if req.reader_id == 0 {
        return Err(ApiError::of(
            ErrorCode::InvalidField,
            "reader_id: expected ≥ 1",
        ));
    }
    let reader = Reader {
        reader_id: req.reader_id,
        public_key: vk.to_bytes(),
        operator: req.operator.clone(),
        vehicle: req.vehicle.clone(),
        route: req.route.clone(),
        retired: false,
        provisioned_unix_s: now,
    };
    if let Some(old) = db.reader(req.reader_id)? {
        if old.public_key == reader.public_key && old.operator == reader.operator && !old.retired {
            return Ok((old, false));
        }
        return Err(ApiError::of(ErrorCode::ReaderExists,
            format!(
                "reader {} is already provisioned with another key or operator{}: use a new reader id",
                req.reader_id,
                if old.retired { " (and retired)" } else { "" }
            ),
        ));
    }
    let mut w = WriteSet::default();
    Db::put_reader(&mut w, &reader);
    db.commit(w)?;
    Ok((reader, true))
}

/// Retires a reader: its later uploads are refused; rides already held still settle.
pub fn retire_reader(db: &Db, reader_id: u32) -> Result<Reader, ApiError> {
    let mut r = db.reader(reader_id)?.ok_or_else(|| {
        ApiError::of(
            ErrorCode::NoSuchReader,
            format!("reader {reader_id} is not provisioned"),
        )
    })?;
    r.retired = true;
    let mut w = WriteSet::default();
    Db::put_reader(&mut w, &r);
    db.commit(w)?;
    Ok(r)
}

/// `POST /v1/disputes/{reader_id}/{reader_seq}/resolve` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveDispute {
    /// The reader whose ride is judged genuine: one of the dispute's.
    pub award_reader_id: u32,
}

/// Resolves the dispute over `charged` (see [`Dispute`] for the rule): the
/// held fare goes to the operator of the awarded reader, in one
/// `release/R:S` posting. The same decision again is a no-op (`false`);
/// another decision on a resolved dispute is refused.
pub fn resolve_dispute(
    db: &Db,
    charged: RideId,
    req: &ResolveDispute,
    now: u64,
) -> Result<(Dispute, bool), ApiError> {
    let (mut d, raw) = db.dispute(charged)?.ok_or_else(|| {
        ApiError::of(
            ErrorCode::UnknownDispute,
            format!("no dispute over ride {charged} (see GET /v1/reports/disputes)"),
        )
    })?;
    let Some((_, operator)) = d
        .sightings
        .iter()
        .find(|(r, _)| r.reader_id == req.award_reader_id)
        .cloned()
    else {
        let readers: Vec<String> = d
            .sightings
            .iter()
            .map(|(r, _)| r.reader_id.to_string())
            .collect();
        return Err(ApiError::of(
            ErrorCode::InvalidField,
            format!(
                "award_reader_id = {}: not a reader of this dispute (its readers: {})",
                req.award_reader_id,
                readers.join(", ")
            ),
        ));
    };
    if let Some(res) = &d.resolution {
        if res.award_reader_id == req.award_reader_id {
            return Ok((d, false));
        }
        return Err(ApiError::of(
            ErrorCode::DisputeResolved,
            format!(
                "the dispute over ride {charged} was resolved for reader {} (operator {})",
                res.award_reader_id, res.operator
            ),
        ));
    }
    let mut w = WriteSet::default();
    if d.held_minor > 0 {
        let key = format!("{}:{}", charged.reader_id, charged.reader_seq);
        let release = d
            .service_day
            .parse::<fare_tariff::Date>()
            .map_err(|e| e.to_string())
            .and_then(|day| {
                fare_ledger::dispute_release(&key, &operator, d.held_minor, day)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| ApiError::of(ErrorCode::Internal, format!("release posting: {e}")))?;
        let mut balances = HashMap::new();
        for acc in [&release.debit, &release.credit] {
            let acc = acc.to_string();
            let b = db.balance(&acc)?;
            balances.insert(acc, b);
        }
        Db::put_postings(&mut w, std::slice::from_ref(&release), &mut balances);
        Db::put_balances(&mut w, &balances);
    }
    d.resolution = Some(DisputeResolution {
        award_reader_id: req.award_reader_id,
        operator,
        at_unix_s: now,
    });
    Db::put_dispute(&mut w, &d, Some(raw));
    db.commit(w)?;
    Ok((d, true))
}

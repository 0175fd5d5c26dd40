//! Operator and account operations (accounts, credentials, payments,
//! readers). Each validates its input, then commits one write set.

use crate::core::passenger_account;
pub use crate::error::OpsError;
use crate::model::*;
use crate::settle::{is_revoked, set_revoked};
use crate::store::{Db, Space, WriteSet};
use fare_credential::keys::{parse_device_key_for_issuance, parse_public_key, KeyError};
use fare_credential::Credential;
use fare_credential::Profile;
use fare_keys::{IssueRequest, KeyStore};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Largest credit limit / payment accepted (10 million major units in cents).
pub const MAX_MONEY_MINOR: i64 = 1_000_000_000;
/// Longest client payment id.
pub const MAX_PAYMENT_ID_BYTES: usize = 64;

/// The longest value quoted back in an [`OpsError::InvalidField`].
const MAX_QUOTED_BYTES: usize = 80;

fn invalid(field: &'static str, found: &str, expected: String) -> OpsError {
    let mut end = found.len().min(MAX_QUOTED_BYTES);
    while !found.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < found.len() { "…" } else { "" };
    OpsError::InvalidField {
        field,
        found: format!("`{}{more}`", &found[..end]),
        expected,
    }
}

fn check_id(field: &'static str, s: &str, max: usize) -> Result<(), OpsError> {
    if s.is_empty()
        || s.len() > max
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            field,
            s,
            format!("1..={max} characters from [A-Za-z0-9_-]"),
        ));
    }
    Ok(())
}

fn check_money(field: &'static str, v: i64, min: i64) -> Result<(), OpsError> {
    if v < min || v > MAX_MONEY_MINOR {
        return Err(OpsError::InvalidField {
            field,
            found: v.to_string(),
            expected: format!("{min}..={MAX_MONEY_MINOR} (integer minor units)"),
        });
    }
    Ok(())
}

fn account_of(db: &Db, account_id: &str) -> Result<Account, OpsError> {
    db.account(account_id)?
        .ok_or_else(|| OpsError::UnknownAccount {
            account_id: account_id.into(),
        })
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
) -> Result<(Account, bool), OpsError> {
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
        return Err(OpsError::AccountExists { account_id: id });
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
pub fn account_or_404(db: &Db, account_id: &str) -> Result<Account, OpsError> {
    account_of(db, account_id)
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
) -> Result<IssuedCredential, OpsError> {
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
) -> Result<IssuedCredential, OpsError> {
    let account = account_of(db, account_id)?;
    let device_public_key = device_key(&req.device_public_key)?;
    if req.valid_for_s == 0 || req.valid_for_s > max_validity_s {
        return Err(OpsError::InvalidField {
            field: "valid_for_s",
            found: req.valid_for_s.to_string(),
            expected: format!("1..={max_validity_s}"),
        });
    }
    may_get_credentials(db, &account)?;
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
        .map_err(|e| OpsError::IssuerUnavailable { why: e.to_string() })?;
    record_credential(db, account_id, &cred, device_id, now)
}

/// Parses a device key offered for a credential (hex), refusing invalid,
/// weak and mixed-order keys.
fn device_key(hex_key: &str) -> Result<[u8; 32], OpsError> {
    let raw = hex::decode(hex_key.trim()).map_err(|e| OpsError::InvalidDeviceKey {
        why: format!("expected 64 hex characters: {e}"),
    })?;
    match parse_device_key_for_issuance(&raw) {
        Ok(key) => Ok(key.to_bytes()),
        Err(error @ (KeyError::Weak | KeyError::MixedOrder)) => {
            Err(OpsError::WeakDeviceKey { error })
        }
        Err(error @ (KeyError::NotAPoint | KeyError::Length { .. })) => {
            Err(OpsError::InvalidDeviceKey {
                why: error.to_string(),
            })
        }
    }
}

/// Refuses a frozen account, and one on the deny list or over its credit
/// limit.
fn may_get_credentials(db: &Db, account: &Account) -> Result<(), OpsError> {
    let account_id = &account.account_id;
    if account.frozen {
        return Err(OpsError::AccountFrozen {
            account_id: account_id.clone(),
        });
    }
    let balance = db.balance(&passenger_account(account_id))?;
    if is_revoked(account, balance)
        || db
            .store()
            .get(Space::Revoked, account_id.as_bytes())?
            .is_some()
    {
        return Err(OpsError::OverCreditLimit {
            account_id: account_id.clone(),
            owes_minor: -balance,
            credit_limit_minor: account.credit_limit_minor,
        });
    }
    Ok(())
}

/// Stores the issued credential's record (which account it belongs to).
fn record_credential(
    db: &Db,
    account_id: &str,
    cred: &Credential,
    device_id: Option<[u8; 16]>,
    now: u64,
) -> Result<IssuedCredential, OpsError> {
    let body = cred.body();
    let device_public_key = body.device_public_key;
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
) -> Result<(PaymentRecord, bool), OpsError> {
    check_id("payment_id", &req.payment_id, MAX_PAYMENT_ID_BYTES)?;
    check_money("amount_minor", req.amount_minor, 1)?;
    let account = account_of(db, account_id)?;
    if let Some(old) = db.payment(account_id, &req.payment_id)? {
        if old.amount_minor == req.amount_minor {
            return Ok((old, false));
        }
        return Err(OpsError::PaymentIdReused {
            account_id: account_id.into(),
            payment_id: req.payment_id.clone(),
            recorded_minor: old.amount_minor,
        });
    }
    let posting = fare_ledger::payment_posting(account_id, &req.payment_id, req.amount_minor)
        .map_err(|e| OpsError::InvalidField {
            field: "payment",
            found: format!("{} of {}", req.payment_id, req.amount_minor),
            expected: format!("a payment the ledger accepts ({e})"),
        })?;
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
pub fn set_frozen(db: &Db, account_id: &str, frozen: bool) -> Result<Account, OpsError> {
    let mut account = account_of(db, account_id)?;
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
pub fn statement(db: &Db, account_id: &str) -> Result<Statement, OpsError> {
    let account = account_of(db, account_id)?;
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
) -> Result<(Reader, bool), OpsError> {
    let reader = check_reader(req, now)?;
    if let Some(old) = db.reader(req.reader_id)? {
        if old.public_key == reader.public_key && old.operator == reader.operator && !old.retired {
            return Ok((old, false));
        }
        return Err(OpsError::ReaderExists {
            reader_id: req.reader_id,
            retired: old.retired,
        });
    }
    let mut w = WriteSet::default();
    Db::put_reader(&mut w, &reader);
    db.commit(w)?;
    Ok((reader, true))
}

/// The reader a provisioning request describes, each field checked.
fn check_reader(req: &ProvisionReader, now: u64) -> Result<Reader, OpsError> {
    let raw = hex::decode(req.public_key.trim()).map_err(|e| OpsError::InvalidReaderKey {
        why: format!("expected 64 hex characters: {e}"),
    })?;
    let vk =
        parse_public_key(&raw).map_err(|e| OpsError::InvalidReaderKey { why: e.to_string() })?;
    let max = fare_credential::record::MAX_NAME_BYTES;
    for (field, v) in [
        ("operator", &req.operator),
        ("vehicle", &req.vehicle),
        ("route", &req.route),
    ] {
        if v.is_empty() || v.len() > max {
            return Err(invalid(field, v, format!("1..={max} bytes")));
        }
    }
    if req.reader_id == 0 {
        return Err(OpsError::InvalidField {
            field: "reader_id",
            found: "0".into(),
            expected: "1..=4294967295".into(),
        });
    }
    Ok(Reader {
        reader_id: req.reader_id,
        public_key: vk.to_bytes(),
        operator: req.operator.clone(),
        vehicle: req.vehicle.clone(),
        route: req.route.clone(),
        retired: false,
        provisioned_unix_s: now,
    })
}

/// Retires a reader: its later uploads are refused; rides already held still settle.
pub fn retire_reader(db: &Db, reader_id: u32) -> Result<Reader, OpsError> {
    let mut r = db
        .reader(reader_id)?
        .ok_or(OpsError::NoSuchReader { reader_id })?;
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
) -> Result<(Dispute, bool), OpsError> {
    let (mut d, raw) = db
        .dispute(charged)?
        .ok_or(OpsError::UnknownDispute { ride: charged })?;
    let award_reader_id = req.award_reader_id;
    let Some((_, operator)) = d
        .sightings
        .iter()
        .find(|(r, _)| r.reader_id == award_reader_id)
        .cloned()
    else {
        return Err(OpsError::NotADisputeReader {
            award_reader_id,
            dispute_readers: d.sightings.iter().map(|(r, _)| r.reader_id).collect(),
        });
    };
    if let Some(res) = &d.resolution {
        if res.award_reader_id == award_reader_id {
            return Ok((d, false));
        }
        return Err(OpsError::DisputeResolved {
            ride: charged,
            award_reader_id: res.award_reader_id,
            operator: res.operator.clone(),
        });
    }
    let mut w = WriteSet::default();
    if d.held_minor > 0 {
        release_held_fare(db, &mut w, charged, &d, &operator)?;
    }
    d.resolution = Some(DisputeResolution {
        award_reader_id,
        operator,
        at_unix_s: now,
    });
    Db::put_dispute(&mut w, &d, Some(raw));
    db.commit(w)?;
    Ok((d, true))
}

/// Queues the `release/R:S` posting that moves a disputed fare from
/// suspense to `operator`, with the balances it changes.
fn release_held_fare(
    db: &Db,
    w: &mut WriteSet,
    charged: RideId,
    d: &Dispute,
    operator: &str,
) -> Result<(), OpsError> {
    let key = crate::core::ride_key_str(charged);
    let release = d
        .service_day
        .parse::<fare_tariff::Date>()
        .map_err(|e| e.to_string())
        .and_then(|day| {
            fare_ledger::dispute_release(&key, operator, d.held_minor, day)
                .map_err(|e| e.to_string())
        })
        .map_err(|why| OpsError::ReleasePosting { ride: charged, why })?;
    let mut balances = HashMap::new();
    for acc in [&release.debit, &release.credit] {
        let acc = acc.to_string();
        let b = db.balance(&acc)?;
        balances.insert(acc, b);
    }
    Db::put_postings(w, std::slice::from_ref(&release), &mut balances);
    Db::put_balances(w, &balances);
    Ok(())
}

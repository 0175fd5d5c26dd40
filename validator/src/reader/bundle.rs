//! Installing a root-signed bundle and loading the installed one.

use super::*;

impl Reader {
    pub(super) fn load_installed(
        dir: &Path,
        meta: BundleMeta,
        publisher: [u8; fare_credential::bundle::PUBLISHER_ID_LEN],
    ) -> Result<Installed, ValidatorError> {
        let path = dir.join(&meta.deny_file);
        let file = std::fs::File::open(&path).map_err(io("open deny list", &path))?;
        let mut r = BufReader::with_capacity(1 << 16, file);
        let mut ids = Vec::with_capacity(meta.deny_count as usize);
        let mut hasher = blake3::Hasher::new();
        let mut buf = [0u8; 16];
        for _ in 0..meta.deny_count {
            r.read_exact(&mut buf)
                .map_err(io("read deny list", &path))?;
            hasher.update(&buf);
            ids.push(CredentialId(buf));
        }
        let mut extra = [0u8; 1];
        let trailing = r.read(&mut extra).map_err(io("read deny list", &path))?;
        if trailing != 0 || *hasher.finalize().as_bytes() != meta.deny_blake3 {
            return Err(ValidatorError::Corrupt {
                seq: 0,
                why: format!(
                    "deny list {} does not match its recorded hash",
                    path.display()
                ),
            });
        }
        let trust = TrustList::new(meta.trust.iter().cloned()).map_err(BundleError::from)?;
        // The file is written sorted; from_ids re-sorts cheaply and dedups.
        let deny = DenyList::from_ids(ids);
        Ok(Installed {
            tariff_digest: fare_credential::bundle::tariff_digest(&meta.tariff),
            meta,
            trust,
            deny,
            publisher,
        })
    }

    /// Verifies and installs a root-signed bundle (v1 or v2). Refuses a bad
    /// signature; within one publisher, a version not newer than the
    /// installed one; a bundle of another publisher not signed later than
    /// the installed one; and a delta unless it is from the installed
    /// bundle's publisher, names the installed version as its base and (v2)
    /// the installed deny list's exact digest. Atomic: a crash leaves either
    /// the old or the new bundle.
    pub fn install_bundle(&mut self, bytes: &[u8], now_unix_s: u64) -> Result<u64, ValidatorError> {
        let published = PublishedBundle::verify(bytes, &self.root).map_err(BundleError::from)?;
        self.install_verified(published, now_unix_s)
    }

    /// [`Reader::install_bundle`] of a bundle the caller has just verified
    /// against this reader's root key ([`Reader::root_key`]): the sync
    /// agent reads the signed server time of every bundle it fetches, and
    /// one signature check of the bytes is enough. Crate-private: a
    /// `PublishedBundle` can be built unsigned, so only `PublishedBundle::
    /// verify`'s output may come here.
    pub(crate) fn install_verified(
        &mut self,
        published: PublishedBundle,
        now_unix_s: u64,
    ) -> Result<u64, ValidatorError> {
        self.check_newer(&published)?;
        let deny = self.next_deny_list(&published)?;
        let (tariff, tariff_digest) = self.next_tariff(&published)?;
        let PublishedBundle {
            publisher, bundle, ..
        } = published;
        let trust = TrustList::new(bundle.trust.iter().cloned()).map_err(BundleError::from)?;
        let (deny_file, deny_blake3) = match &self.installed {
            // Unchanged (a quiet list re-published for freshness, most
            // installs): the installed file stays, unwritten.
            Some(cur) if cur.deny.ids() == deny.ids() => {
                (cur.meta.deny_file.clone(), cur.meta.deny_blake3)
            }
            _ => self.write_deny_file(bundle.bundle_version, &deny)?,
        };
        let meta = BundleMeta {
            version: bundle.bundle_version,
            server_time_unix_s: bundle.server_time_unix_s,
            installed_at_unix_s: now_unix_s,
            trust: bundle.trust.clone(),
            tariff,
            deny_file: deny_file.clone(),
            deny_count: deny.len() as u64,
            deny_blake3,
        };
        // The meta and the publisher in one atomic write, then the device.
        let mut batch = sled::Batch::default();
        batch.insert(META_BUNDLE, codec::encode("bundle meta", &meta)?);
        batch.insert(META_PUBLISHER, &publisher[..]);
        self.meta
            .apply_batch(batch)
            .map_err(ValidatorError::sled("write bundle meta"))?;
        self.durable("flush bundle meta")?;
        let new = Installed {
            meta,
            trust,
            deny,
            publisher,
            tariff_digest,
        };
        if let Some(old) = self.installed.replace(new) {
            if old.meta.deny_file != deny_file {
                let _ = std::fs::remove_file(self.dir.join(&old.meta.deny_file));
            }
        }
        // A removed issuer key must stop verifying at once.
        self.cache.clear();
        self.log_installed(bundle.bundle_version, bundle.server_time_unix_s, now_unix_s);
        Ok(bundle.bundle_version)
    }

    /// Refuses a bundle that is not newer than the installed one: by
    /// version within a publisher, by signed server time across publishers
    /// (their version counters are unrelated).
    fn check_newer(&self, offered: &PublishedBundle) -> Result<(), ValidatorError> {
        let Some(cur) = &self.installed else {
            return Ok(());
        };
        let (installed, version) = (cur.meta.version, offered.bundle.bundle_version);
        if offered.publisher != cur.publisher {
            if offered.bundle.server_time_unix_s <= cur.meta.server_time_unix_s {
                return Err(BundleError::PublisherRollback {
                    installed: hex::encode(cur.publisher),
                    publisher: hex::encode(offered.publisher),
                    installed_time: cur.meta.server_time_unix_s,
                    offered_time: offered.bundle.server_time_unix_s,
                }
                .into());
            }
            return Ok(());
        }
        if version < installed {
            return Err(BundleError::Rollback {
                installed,
                offered: version,
            }
            .into());
        }
        if version == installed {
            return Err(BundleError::NotNewer { version }.into());
        }
        Ok(())
    }

    /// The deny list the bundle leads to: its snapshot, or its delta
    /// applied to the installed list when that is exactly the delta's base.
    fn next_deny_list(&self, offered: &PublishedBundle) -> Result<DenyList, ValidatorError> {
        let (base_version, add, remove) = match &offered.bundle.deny {
            DenyUpdate::Snapshot(ids) => return Ok(DenyList::from_ids(ids.clone())),
            DenyUpdate::Delta {
                base_version,
                add,
                remove,
            } => (*base_version, add, remove),
        };
        let offered_version = offered.bundle.bundle_version;
        let cur = match &self.installed {
            Some(cur) if base_version == cur.meta.version => cur,
            _ => {
                return Err(BundleError::DeltaBase {
                    installed: self.bundle_version(),
                    base: base_version,
                    offered: offered_version,
                }
                .into())
            }
        };
        if offered.publisher != cur.publisher {
            return Err(BundleError::OtherPublisher {
                installed: hex::encode(cur.publisher),
                publisher: hex::encode(offered.publisher),
                offered: offered_version,
            }
            .into());
        }
        let why = match offered.deny_base_hash {
            None => Some("a v1 delta names no base hash"),
            Some(h) if h != cur.meta.deny_blake3 => Some("the base hash differs"),
            Some(_) => None,
        };
        if let Some(why) = why {
            return Err(BundleError::DeltaBaseHash {
                installed: cur.meta.version,
                offered: offered_version,
                why,
            }
            .into());
        }
        let mut d = cur.deny.clone();
        d.apply_delta(add, remove);
        Ok(d)
    }

    /// The tariff the bundle leads to, with its digest: its bytes, or (v3
    /// by digest) the installed tariff when that has the signed digest.
    fn next_tariff(
        &self,
        offered: &PublishedBundle,
    ) -> Result<(Vec<u8>, [u8; 32]), ValidatorError> {
        let Some(digest) = offered.tariff_by_digest else {
            let t = offered.bundle.tariff.clone();
            let d = fare_credential::bundle::tariff_digest(&t);
            return Ok((t, d));
        };
        match &self.installed {
            Some(cur) if cur.tariff_digest == digest => Ok((cur.meta.tariff.clone(), digest)),
            _ => Err(BundleError::TariffNotHeld {
                offered: offered.bundle.bundle_version,
                digest: hex::encode(digest),
            }
            .into()),
        }
    }

    /// Writes the deny list to `deny-<version>.bin` (fsynced under a
    /// temporary name, renamed, directory synced): its file name and digest.
    fn write_deny_file(
        &self,
        version: u64,
        deny: &DenyList,
    ) -> Result<(String, [u8; 32]), ValidatorError> {
        let deny_file = format!("deny-{version}.bin");
        let path = self.dir.join(&deny_file);
        let tmp = self.dir.join(format!("{deny_file}.tmp"));
        let mut hasher = blake3::Hasher::new();
        let f = std::fs::File::create(&tmp).map_err(io("create deny list", &tmp))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
        for id in deny.ids() {
            hasher.update(&id.0);
            w.write_all(&id.0).map_err(io("write deny list", &tmp))?;
        }
        let f = w.into_inner().map_err(|e| ValidatorError::Io {
            what: "write deny list",
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io("sync deny list", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io("rename deny list", &path))?;
        fare_durable::sync_dir(&self.dir)?;
        Ok((deny_file, *hasher.finalize().as_bytes()))
    }

    fn log_installed(&self, version: u64, server_time_unix_s: u64, now_unix_s: u64) {
        let offset = now_unix_s as i64 - server_time_unix_s as i64;
        tracing::info!(
            version,
            deny = self.deny_len(),
            clock_offset_s = offset,
            "bundle installed"
        );
        if offset.unsigned_abs() > self.config.policy.skew_tolerance_s {
            tracing::warn!(
                clock_offset_s = offset,
                "reader clock disagrees with settlement's by more than the skew tolerance; fix the reader clock"
            );
        }
    }
}

//! Installing a root-signed bundle and loading the installed one.

use super::*;

impl Reader {
    pub(super) fn load_installed(
        dir: &Path,
        meta: BundleMeta,
        tariff: Vec<u8>,
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
            meta,
            trust,
            deny,
            publisher,
            tariff: tariff.into(),
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
        // The tariff's file is written only when the tariff changes (or
        // the stored layout is the old one, which had no file).
        let tariff_file = match &self.installed {
            Some(cur) if cur.meta.has_tariff_file() && cur.meta.tariff_digest == tariff_digest => {
                cur.meta.tariff_file.clone()
            }
            _ => self.write_tariff_file(&tariff, &tariff_digest)?,
        };
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
            tariff_file: tariff_file.clone(),
            tariff_digest,
            deny_file: deny_file.clone(),
            deny_count: deny.len() as u64,
            deny_blake3,
        };
        // The meta and the publisher in one atomic write, then the device.
        let mut batch = sled::Batch::default();
        batch.insert(META_BUNDLE, codec::encode("bundle meta", &meta)?);
        batch.insert(META_PUBLISHER, &publisher[..]);
        if self
            .installed
            .as_ref()
            .is_some_and(|cur| !cur.meta.has_tariff_file())
        {
            batch.remove(META_BUNDLE_V1);
        }
        self.meta
            .apply_batch(batch)
            .map_err(ValidatorError::sled("write bundle meta"))?;
        self.durable("flush bundle meta")?;
        let new = Installed {
            meta,
            trust,
            deny,
            publisher,
            tariff,
        };
        if let Some(old) = self.installed.replace(new) {
            if old.meta.deny_file != deny_file {
                let _ = std::fs::remove_file(self.dir.join(&old.meta.deny_file));
            }
            if old.meta.has_tariff_file() && old.meta.tariff_file != tariff_file {
                let _ = std::fs::remove_file(self.dir.join(&old.meta.tariff_file));
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
    ) -> Result<(std::sync::Arc<[u8]>, [u8; 32]), ValidatorError> {
        let Some(digest) = offered.tariff_by_digest else {
            let t = &offered.bundle.tariff;
            let d = fare_credential::bundle::tariff_digest(t);
            return match &self.installed {
                Some(cur) if cur.meta.tariff_digest == d => Ok((cur.tariff.clone(), d)),
                _ => Ok((t[..].into(), d)),
            };
        };
        match &self.installed {
            Some(cur) if cur.meta.tariff_digest == digest => Ok((cur.tariff.clone(), digest)),
            _ => Err(BundleError::TariffNotHeld {
                offered: offered.bundle.bundle_version,
                digest: hex::encode(digest),
            }
            .into()),
        }
    }

    /// Writes the deny list to `deny-<version>.bin`: its file name and digest.
    fn write_deny_file(
        &self,
        version: u64,
        deny: &DenyList,
    ) -> Result<(String, [u8; 32]), ValidatorError> {
        let deny_file = format!("deny-{version}.bin");
        let mut hasher = blake3::Hasher::new();
        self.write_file(&deny_file, "write deny list", |w| {
            for id in deny.ids() {
                hasher.update(&id.0);
                w.write_all(&id.0)?;
            }
            Ok(())
        })?;
        Ok((deny_file, *hasher.finalize().as_bytes()))
    }

    /// Writes the tariff to `tariff-<digest prefix>.json`: its file name.
    fn write_tariff_file(
        &self,
        tariff: &[u8],
        digest: &[u8; 32],
    ) -> Result<String, ValidatorError> {
        let tariff_file = format!("tariff-{}.json", hex::encode(&digest[..8]));
        self.write_file(&tariff_file, "write tariff", |w| w.write_all(tariff))?;
        Ok(tariff_file)
    }

    /// Writes `name` in the reader's directory: fsynced under a temporary
    /// name, renamed, directory synced (a crash leaves no file or the whole
    /// new one; the meta names it only after this returns).
    fn write_file(
        &self,
        name: &str,
        what: &'static str,
        body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), ValidatorError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let fail = |source| ValidatorError::Io {
            what,
            path: tmp.clone(),
            source,
        };
        let f = std::fs::File::create(&tmp).map_err(fail)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
        body(&mut w).map_err(fail)?;
        let f = w.into_inner().map_err(|e| fail(e.into_error()))?;
        f.sync_all().map_err(fail)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(what, &path))?;
        fare_durable::sync_dir(&self.dir)?;
        Ok(())
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

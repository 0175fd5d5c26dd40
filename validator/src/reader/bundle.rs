//! Installing a root-signed bundle and loading the installed one.

use super::*;

impl Reader {
    pub(super) fn load_installed(
        dir: &Path,
        meta: BundleMeta,
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
        Ok(Installed { meta, trust, deny })
    }

    /// Verifies and installs a root-signed bundle. Refuses a bad signature,
    /// a version not newer than the installed one, and a delta from another
    /// base. Atomic: a crash leaves either the old or the new bundle.
    pub fn install_bundle(&mut self, bytes: &[u8], now_unix_s: u64) -> Result<u64, ValidatorError> {
        let bundle = ReaderBundle::verify_v1(bytes, &self.root).map_err(BundleError::from)?;
        let installed_version = self.bundle_version();
        if self.installed.is_some() {
            if bundle.bundle_version < installed_version {
                return Err(BundleError::Rollback {
                    installed: installed_version,
                    offered: bundle.bundle_version,
                }
                .into());
            }
            if bundle.bundle_version == installed_version {
                return Err(BundleError::NotNewer {
                    version: installed_version,
                }
                .into());
            }
        }
        let trust = TrustList::new(bundle.trust.iter().cloned()).map_err(BundleError::from)?;
        let deny = match bundle.deny {
            DenyUpdate::Snapshot(ids) => DenyList::from_ids(ids),
            DenyUpdate::Delta {
                base_version,
                add,
                remove,
            } => match &self.installed {
                Some(cur) if base_version == cur.meta.version => {
                    let mut d = cur.deny.clone();
                    d.apply_delta(&add, &remove);
                    d
                }
                _ => {
                    return Err(BundleError::DeltaBase {
                        installed: installed_version,
                        base: base_version,
                        offered: bundle.bundle_version,
                    }
                    .into())
                }
            },
        };
        // Deny list file first (fsynced, under a new name), then the meta
        // pointing at it in one sled write + flush; the old file goes last.
        let deny_file = format!("deny-{}.bin", bundle.bundle_version);
        let path = self.dir.join(&deny_file);
        let tmp = self.dir.join(format!("{deny_file}.tmp"));
        let mut hasher = blake3::Hasher::new();
        {
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
        }
        std::fs::rename(&tmp, &path).map_err(io("rename deny list", &path))?;
        fare_durable::sync_dir(&self.dir)?;
        let meta = BundleMeta {
            version: bundle.bundle_version,
            server_time_unix_s: bundle.server_time_unix_s,
            installed_at_unix_s: now_unix_s,
            trust: bundle.trust.clone(),
            tariff: bundle.tariff,
            deny_file: deny_file.clone(),
            deny_count: deny.len() as u64,
            deny_blake3: *hasher.finalize().as_bytes(),
        };
        self.meta
            .insert(META_BUNDLE, codec::encode("bundle meta", &meta)?)
            .map_err(ValidatorError::sled("write bundle meta"))?;
        self.durable("flush bundle meta")?;
        let old = self.installed.replace(Installed { meta, trust, deny });
        if let Some(old) = old {
            if old.meta.deny_file != deny_file {
                let _ = std::fs::remove_file(self.dir.join(&old.meta.deny_file));
            }
        }
        // A removed issuer key must stop verifying at once.
        self.cache.clear();
        let offset = now_unix_s as i64 - bundle.server_time_unix_s as i64;
        tracing::info!(
            version = bundle.bundle_version,
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
        Ok(bundle.bundle_version)
    }
}

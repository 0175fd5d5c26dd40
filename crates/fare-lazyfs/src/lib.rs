//! A disk with a volatile write cache, for power-cut tests: an in-memory
//! FUSE file system that forgets everything not `fsync`ed when the test
//! pulls the plug, in the manner of Jepsen's LazyFS.
//!
//! Test-only. Linux, FUSE (`/dev/fuse`), and root (it mounts with mount(2);
//! without root, fuser falls back to the `fusermount3` helper from Debian's
//! `fuse3` package). [`mount_or_skip`] is the policy tests use when FUSE is
//! missing: a clear `SKIPPED:` line on a developer machine, a failure in CI.
//!
//! # The model
//!
//! Every inode has a **volatile** state (what reads, `stat` and lookups see
//! now) and a **durable** state (what is left after a power cut). The
//! volatile state changes with every operation; the durable state changes
//! only as follows.
//!
//! * **File data and size.** `write`, `truncate`/`ftruncate`, `open(O_TRUNC)`
//!   and `fallocate` change the file's volatile bytes and size only.
//!   `fsync` and `fdatasync` on any descriptor of the file copy its volatile
//!   bytes, size and attributes (mode, owner, times) to its durable state.
//!   Nothing else does: not `close` (FUSE `flush`/`release`), not
//!   `sync_file_range(2)` (the kernel does not tell a FUSE file system about
//!   it; this is exactly sled 0.34's `Db::flush()`), not time passing.
//! * **Directory entries.** `create`, `mknod`, `mkdir`, `link`, `unlink`,
//!   `rmdir` and `rename` change the volatile entries of the directories
//!   involved only. `fsync` of a directory (FUSE `fsyncdir`) copies that
//!   directory's volatile entries to its durable entries. A rename between
//!   two directories is durable in the source only once the source is
//!   synced and in the target only once the target is synced.
//! * **New inodes** start with an empty durable state (size 0, no entries):
//!   a file whose entry was made durable but whose data was never synced
//!   comes back empty.
//! * **A power cut** ([`LazyFs::power_cut`]) replaces every inode's volatile
//!   state by its durable state; then only inodes reachable from the root
//!   through durable entries exist (link counts are recounted). Open handles
//!   on surviving files keep working; handles on removed inodes fail.
//!   With [`PowerCut::tear_seed`], each file's unsynced changes are not all
//!   dropped: as a disk may have written part of its cache before the cut,
//!   a seeded choice keeps each unsynced 4 KiB page whole (1 in 4), drops it
//!   (1 in 2, or 3 in 4 once the file has a torn page), or keeps a prefix of
//!   it of 1 to 7 512-byte sectors (at most one such torn page per file);
//!   and the file's size after the cut is, again by the seed, either its
//!   durable or its volatile size (kept pages past it are cut off; a hole
//!   reads as zeros). Directory entries never tear: each directory is all
//!   durable or all volatile.
//!
//! # Stricter than ext4, deliberately
//!
//! * ext4's `fsync` of a newly created file also commits its directory
//!   entry (and a rename is one journal transaction); here only `fsync` of
//!   the directory does, and a rename across directories can lose the file
//!   (target not synced) or, for a file, leave it in both (only the target
//!   synced: then it has two links). A directory two durable entries name
//!   keeps the first found from the root, breadth first in name order.
//! * `close` never persists anything (ext4's `auto_da_alloc` flushes some
//!   replace-by-rename and truncate patterns on close or rename).
//! * ext4 with `data=ordered` writes a file's data before the size that
//!   exposes it; a torn cut here may keep the grown size with zeros where
//!   unsynced pages were dropped.
//! * Metadata other than directory entries (mode, owner, times) follows the
//!   file's data: durable only when the file is synced.
//!
//! # Not modelled
//!
//! Symbolic links, special files, extended attributes, `fallocate` modes
//! other than 0, permission checks (every request is allowed), space limits
//! (`statfs` reports a roomy disk), and byte-range or `flock` locks, which
//! the kernel keeps locally because the file system does not ask for them
//! (so sled's exclusive lock on its `db` file works between processes; a
//! lock does not survive an unmount, as on any disk).
//!
//! The kernel keeps no copy of the data: entry and attribute TTLs are zero,
//! every open answers `FOPEN_DIRECT_IO` (no page cache) and the writeback
//! cache is not enabled, so every write reaches the model at once and
//! nothing stale is served after a cut.
#![forbid(unsafe_code)]

mod fs;
mod model;

pub use model::{PAGE, SECTOR};

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A simulated power cut; see the crate docs for exactly what it keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerCut {
    /// `None`: everything not synced is lost. `Some(seed)`: a seeded part of
    /// the unsynced pages (whole, or one torn prefix per file) is kept, and
    /// each file's size may be the volatile one.
    pub tear_seed: Option<u64>,
}

impl PowerCut {
    /// A clean cut: everything not synced is lost.
    pub fn clean() -> PowerCut {
        PowerCut { tear_seed: None }
    }

    /// A torn cut with this seed.
    pub fn torn(seed: u64) -> PowerCut {
        PowerCut {
            tear_seed: Some(seed),
        }
    }
}

/// What a power cut did, so a test can check it really dropped something.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PowerCutReport {
    /// Files that had unsynced data or size changes.
    pub files_touched: u64,
    /// Unsynced bytes discarded (bytes of unsynced pages inside the
    /// volatile size, less what tearing kept).
    pub bytes_dropped: u64,
    /// Unsynced pages a torn cut kept whole.
    pub pages_kept: u64,
    /// Unsynced pages a torn cut kept a prefix of.
    pub pages_torn: u64,
    /// Files whose size went back to the durable one.
    pub sizes_reverted: u64,
    /// Directory entries added, removed or changed since the directory's
    /// last sync, undone.
    pub entries_reverted: u64,
    /// Inodes no durable entry reached, removed.
    pub inodes_removed: u64,
}

impl PowerCutReport {
    /// Whether the cut lost anything at all.
    pub fn lost_anything(&self) -> bool {
        self.bytes_dropped > 0
            || self.sizes_reverted > 0
            || self.entries_reverted > 0
            || self.inodes_removed > 0
    }
}

/// Counters and sizes of the whole file system.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inodes that exist (including unlinked ones still open or still named
    /// by a durable entry).
    pub inodes: u64,
    /// Bytes of file pages in the volatile state.
    pub volatile_bytes: u64,
    /// Bytes of file pages in the durable state.
    pub durable_bytes: u64,
    /// Pages written since their file's last sync.
    pub dirty_pages: u64,
    /// `write` requests served.
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// File `fsync`/`fdatasync` requests served.
    pub fsyncs: u64,
    /// Directory syncs served.
    pub fsyncdirs: u64,
    /// Power cuts so far.
    pub power_cuts: u64,
}

/// Why the file system could not be mounted, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// No FUSE device.
    #[error(
        "/dev/fuse is missing: load the fuse module (`modprobe fuse`), or give the container \
         the device (`--device /dev/fuse --cap-add SYS_ADMIN`)"
    )]
    NoDevice,
    /// Not root, and no setuid helper to mount with.
    #[error(
        "mounting FUSE needs root or the fusermount3 helper, and this process is not root and \
         has no fusermount3 on PATH: run as root, or install fuse3 (`apt-get install fuse3`)"
    )]
    NoPermission,
    /// The mount point is not a usable directory.
    #[error("mount point {path}: {source}")]
    MountPoint {
        /// The mount point given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// mount(2) or the FUSE handshake failed.
    #[error(
        "mounting FUSE at {path} failed: {source} (needs /dev/fuse and root, or fusermount3 \
         from `apt-get install fuse3`)"
    )]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Mounted, but the file system does not answer.
    #[error("FUSE mounted at {path} but does not answer: {source}")]
    NotServing {
        /// The mount point.
        path: PathBuf,
        /// The error `stat` of the mount point gave.
        source: std::io::Error,
    },
}

/// A mounted volatile-cache file system. Unmounts (lazily, so a process that
/// still holds a file open cannot hang the test) when dropped.
pub struct LazyFs {
    model: Arc<Mutex<model::Model>>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    // Dropped after the unmount (field order), removing the directory.
    _tempdir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for LazyFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyFs")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Checks what mounting needs, without mounting.
fn preflight() -> Result<(), MountError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::NoDevice);
    }
    if !nix::unistd::geteuid().is_root()
        && !on_path("fusermount3")
        && !on_path("fusermount")
        && std::env::var_os("FUSERMOUNT_PATH").is_none()
    {
        return Err(MountError::NoPermission);
    }
    Ok(())
}

impl LazyFs {
    /// Mounts an empty file system on `mountpoint` (an existing directory)
    /// and serves it from a background thread; returns once a `stat` of the
    /// mount point is answered by it.
    pub fn mount(mountpoint: &Path) -> Result<LazyFs, MountError> {
        Self::mount_inner(mountpoint, None)
    }

    /// Mounts on a fresh temporary directory, removed after the unmount.
    pub fn mount_temp() -> Result<LazyFs, MountError> {
        let dir = tempfile::Builder::new()
            .prefix("fare-lazyfs.")
            .tempdir()
            .map_err(|source| MountError::MountPoint {
                path: std::env::temp_dir(),
                source,
            })?;
        let path = dir.path().to_path_buf();
        Self::mount_inner(&path, Some(dir))
    }

    fn mount_inner(
        mountpoint: &Path,
        tempdir: Option<tempfile::TempDir>,
    ) -> Result<LazyFs, MountError> {
        preflight()?;
        let mountpoint = mountpoint
            .canonicalize()
            .and_then(|p| {
                if p.is_dir() {
                    Ok(p)
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::NotADirectory,
                        "not a directory",
                    ))
                }
            })
            .map_err(|source| MountError::MountPoint {
                path: mountpoint.to_path_buf(),
                source,
            })?;
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let model = Arc::new(Mutex::new(model::Model::new(uid, gid)));
        let fs = fs::Fs {
            model: model.clone(),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("fare-lazyfs".into()),
            fuser::MountOption::Subtype("fare-lazyfs".into()),
        ];
        let mount_err = |source| MountError::Mount {
            path: mountpoint.clone(),
            source,
        };
        let session = fuser::Session::new(fs, &mountpoint, &config)
            .map_err(mount_err)?
            .spawn()
            .map_err(mount_err)?;
        let me = LazyFs {
            model,
            session: Some(session),
            mountpoint: mountpoint.clone(),
            _tempdir: tempdir,
        };
        // The root answers with FUSE's root inode number once we serve it.
        match std::fs::metadata(&mountpoint) {
            Ok(m) if std::os::unix::fs::MetadataExt::ino(&m) == model::ROOT => Ok(me),
            Ok(_) => Err(MountError::NotServing {
                path: mountpoint,
                source: std::io::Error::other("the mount point is not the FUSE root"),
            }),
            Err(source) => Err(MountError::NotServing {
                path: mountpoint,
                source,
            }),
        }
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Pulls the plug: every inode goes back to its durable state (torn per
    /// [`PowerCut::tear_seed`]) and what durable entries do not reach is
    /// gone. Stop the processes writing to it first (a process that goes on
    /// writing after the cut is not something a real power cut allows).
    pub fn power_cut(&self, cut: PowerCut) -> PowerCutReport {
        self.lock().power_cut(cut)
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Stats {
        self.lock().stats()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, model::Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        // Lazy: detached at once even if something still holds a file open
        // (the connection then ends when the last one closes).
        let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        if let Some(session) = self.session.take() {
            let (tx, rx) = mpsc::channel();
            let _ = std::thread::Builder::new()
                .name("fare-lazyfs-unmount".into())
                .spawn(move || {
                    let _ = session.join();
                    let _ = tx.send(());
                });
            // Bounded: a straggler holding a file open must not hang the
            // test; the serving thread then ends with the process.
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

/// Whether a missing FUSE must fail the test rather than skip it: in CI
/// (`CI` set to anything but `false`/`0`, as `.ci/run` runs) or when
/// `FARE_REQUIRE_FUSE` is set.
pub fn fuse_required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    ci || std::env::var_os("FARE_REQUIRE_FUSE").is_some()
}

/// Mounts on a temporary directory for test `test_name`. If FUSE is not
/// usable: panics with the reason where it is required ([`fuse_required`]),
/// otherwise prints `SKIPPED: <test>: <why>` and returns `None`.
pub fn mount_or_skip(test_name: &str) -> Option<LazyFs> {
    match LazyFs::mount_temp() {
        Ok(fs) => Some(fs),
        Err(e) if fuse_required() => {
            panic!("{test_name}: FUSE is required here (CI or FARE_REQUIRE_FUSE) but: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: {test_name}: {e}");
            None
        }
    }
}

/// Whether test `test_name` can use FUSE here: tries a mount; `false` after
/// printing `SKIPPED: ...` when it cannot and it is not required; panics
/// when it cannot and it is required (see [`mount_or_skip`]).
pub fn require_fuse_or_skip(test_name: &str) -> bool {
    mount_or_skip(test_name).is_some()
}

//! The durability point that reaches the device, for sled 0.34.
//!
//! sled 0.34.7's `Db::flush()` writes its log with `pwrite` and then, on
//! Linux, calls `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`
//! (`src/pagecache/iobuf.rs`). By its manual page that call "does not flush
//! disk write caches" and does not persist metadata such as a grown file
//! size; only sled's background flusher calls a real `fsync`, and only every
//! `flush_every_ms`. A reader's eMMC or SD card has a volatile write cache
//! and a bus loses power when its ignition goes off, so `flush()` alone is
//! not a durability point (upstream: sled issue #1452).
//!
//! [`DeviceSync`] closes the gap from outside sled: after `Db::flush()`
//! returned, [`DeviceSync::sync`] calls `fdatasync` on sled's data file
//! (`<dir>/db`) through a handle it opens for that sync. `fdatasync` works
//! on the inode, not the descriptor, so it writes every dirty page of the
//! file whoever wrote it, the file size, and sends the device a cache
//! flush. No handle is held between syncs: an open database then costs
//! the process only sled's own descriptor (many readers share one process
//! in the fleet simulator, under one open-file limit). Files sled
//! creates later are covered too: a value larger than sled's blob threshold
//! (a quarter of a segment, 128 KiB by default) goes to its own file under
//! `blobs/`, which sled never syncs; each sync fsyncs blob files it has not
//! synced before, then the `blobs/` directory (found by listing `blobs/`,
//! or for a store with many blobs, [`DeviceSync::open_watching_blobs`], as
//! an inotify watch announces them). Directory entries sled made at
//! open (the data file, `conf`, `blobs/`, the recovery snapshot's rename) are
//! made durable by [`DeviceSync::open`] syncing those directories, and the
//! settings file `conf`, which sled writes once and never syncs, by an
//! `fsync` of it there.
//!
//! What remains assumed: a device that acknowledges a cache flush it has not
//! done (some cheap SD cards) cannot be fixed in software; choose storage
//! with power-loss protection or that honours FLUSH.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Name of sled 0.34's data file inside its directory.
pub const SLED_DATA_FILE: &str = "db";
/// Name of sled 0.34's settings file inside its directory (written at the
/// first open and never synced by sled: a power cut right after leaves it
/// empty or torn, and sled then refuses to open).
pub const SLED_CONF_FILE: &str = "conf";
/// Name of sled 0.34's blob directory inside its directory.
pub const SLED_BLOB_DIR: &str = "blobs";

/// A sync that did not reach the device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A file or directory could not be opened or synced.
    #[error("{what} {path}: {source} (the storage device or its file system refused a sync; the write is not durable)")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SyncError + 'a {
    move |source| SyncError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Pause between two attempts of [`open_waiting_for_lock`] to take a lock.
pub const LOCK_RETRY_MS: u64 = 20;

/// Opens the sled database `config` describes, retrying for up to `wait`
/// while its file lock is held. sled 0.34's background I/O threads keep a
/// dropped database's file (and its lock) until their last write ends, so
/// a process that closes and reopens a database (a reader restarting, a
/// settlement restart, a test reading a reader's log) can find it still
/// locked for a moment. Any other error, or the lock still held after
/// `wait` (another process using the database), is returned as it came.
pub fn open_waiting_for_lock(
    config: &sled::Config,
    wait: std::time::Duration,
) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            // sled reports the lock conflict only as this message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && started.elapsed() < wait =>
            {
                std::thread::sleep(std::time::Duration::from_millis(LOCK_RETRY_MS));
            }
            r => return r,
        }
    }
}

/// Syncs a directory, so the entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), SyncError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

/// Bytes of the files under `path`, at any depth, or of `path` itself when
/// it is a file (0 when it cannot be read): what a store or a run's data
/// holds, for reports and measurements.
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return std::fs::metadata(path).map_or(0, |m| m.len());
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// `create_dir_all`, then a sync of every directory that gained an entry,
/// so the new directories survive a power cut (a directory entry is durable
/// only once its parent directory is synced).
pub fn create_dir_all(dir: &Path) -> Result<(), SyncError> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => break,
        }
    }
    let existing = existing.to_path_buf();
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    for d in dir.ancestors().skip(1) {
        if d.as_os_str().is_empty() {
            break;
        }
        sync_dir(d)?;
        if d == existing {
            break;
        }
    }
    Ok(())
}

/// How an open sled database reaches the device after `Db::flush()`.
#[derive(Debug)]
pub struct DeviceSync {
    dir: PathBuf,
    /// False: the extra sync is turned off (a demonstration of the loss only).
    enabled: bool,
    blobs: Mutex<Blobs>,
}

/// What [`DeviceSync`] knows of `blobs/`.
#[derive(Debug, Default)]
struct Blobs {
    /// Names synced by a listing of `blobs/` (see `sync_listed_blobs`).
    synced: HashSet<Vec<u8>>,
    /// The watch of [`DeviceSync::open_watching_blobs`], when the system
    /// gave one.
    #[cfg(target_os = "linux")]
    watch: Option<watch::BlobWatch>,
    /// Listings of `blobs/` so far (the tests read it).
    listings: u64,
}

impl DeviceSync {
    /// Call right after sled opened the database in `dir`. Syncs `dir`, its
    /// parent and `dir/blobs` (sled created or renamed files in them while
    /// opening) and the data file. With `enabled` false
    /// nothing is synced, ever: [`DeviceSync::sync`] is a no-op and `flush()`
    /// is all the durability there is (tests use it to show what is lost).
    pub fn open(dir: &Path, enabled: bool) -> Result<DeviceSync, SyncError> {
        DeviceSync::open_with(dir, enabled, false)
    }

    /// [`DeviceSync::open`] (enabled) for a database that keeps many blob
    /// files and syncs often (settlement's store: a thousand blobs in a
    /// city's day, a sync per commit). On Linux an inotify watch on
    /// `blobs/` names each blob file sled finished writing (`IN_CLOSE_WRITE`,
    /// which sled's `write_blob` gives when it drops the file), so a sync
    /// fsyncs those instead of listing the directory. Where inotify is not
    /// available (another system, or the per-user limit of inotify
    /// instances reached) it syncs as [`DeviceSync::open`] does; so it does
    /// after the kernel dropped events (queue overflow).
    pub fn open_watching_blobs(dir: &Path) -> Result<DeviceSync, SyncError> {
        DeviceSync::open_with(dir, true, true)
    }

    fn open_with(dir: &Path, enabled: bool, watch_blobs: bool) -> Result<DeviceSync, SyncError> {
        #[cfg(not(target_os = "linux"))]
        let _ = watch_blobs;
        let me = DeviceSync {
            dir: dir.to_path_buf(),
            enabled,
            blobs: Mutex::new(Blobs {
                #[cfg(target_os = "linux")]
                watch: if enabled && watch_blobs {
                    watch::BlobWatch::new()
                } else {
                    None
                },
                ..Blobs::default()
            }),
        };
        if !enabled {
            return Ok(me);
        }
        let data_path = dir.join(SLED_DATA_FILE);
        File::open(&data_path)
            .map_err(io("open sled data file", &data_path))?
            .sync_all()
            .map_err(io("sync sled data file", &data_path))?;
        let conf_path = dir.join(SLED_CONF_FILE);
        File::open(&conf_path)
            .and_then(|f| f.sync_all())
            .map_err(io("sync sled settings file", &conf_path))?;
        // Blob files present at open were written before: sync them once.
        me.sync_new_blobs()?;
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(me)
    }

    /// The durability point: call after `Db::flush()` returned. Everything
    /// that flush wrote is on the device when this returns `Ok`.
    pub fn sync(&self) -> Result<(), SyncError> {
        if !self.enabled {
            return Ok(());
        }
        // Blobs before the data file: the log entry that points at a blob
        // must not be durable while the blob is not.
        self.sync_new_blobs()?;
        self.sync_data_file()
    }

    /// The durability point for a flush that wrote no value past sled's
    /// blob threshold (128 KiB) since the last [`DeviceSync::sync`]: the
    /// data file's `fdatasync` alone, without reading `blobs/`. The caller
    /// guarantees the precondition (the reader: every large value it writes,
    /// the bundle meta, is followed by a full `sync` before anything else
    /// depends on it, and its ride records are far below the threshold).
    pub fn sync_data_file(&self) -> Result<(), SyncError> {
        if !self.enabled {
            return Ok(());
        }
        let path = self.dir.join(SLED_DATA_FILE);
        File::open(&path)
            .map_err(io("open sled data file", &path))?
            .sync_data()
            .map_err(io("fdatasync sled data file", &path))
    }

    /// Whether the extra sync is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// fsyncs blob files not synced before, then the blob directory if any
    /// was new: those the watch announced when there is one, else those a
    /// listing finds (one listing of a directory that is empty unless
    /// values pass 128 KiB; the set of synced names is kept, not rebuilt,
    /// and names are looked up without being copied; it is cut back to
    /// what exists only when it has grown to twice that).
    fn sync_new_blobs(&self) -> Result<(), SyncError> {
        let blob_dir = self.dir.join(SLED_BLOB_DIR);
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        #[cfg(target_os = "linux")]
        if let Some(w) = blobs.watch.as_mut() {
            match w.sync_announced(&blob_dir)? {
                watch::Synced::All => return Ok(()),
                // Names synced before may belong to files since replaced.
                watch::Synced::ListNeeded => blobs.synced.clear(),
            }
        }
        sync_listed_blobs(&blob_dir, &mut blobs)
    }

    /// Listings of `blobs/` this `DeviceSync` made (at open, then at each
    /// sync unless it watches the directory).
    pub fn blob_listings(&self) -> u64 {
        self.blobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .listings
    }

    /// Whether syncs learn of new blob files from an inotify watch
    /// ([`DeviceSync::open_watching_blobs`]) rather than listings.
    pub fn watches_blobs(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            let blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
            blobs.watch.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        false
    }
}

/// fsyncs the blob files of a listing of `blob_dir` not synced before,
/// then `blob_dir` if any was new.
fn sync_listed_blobs(blob_dir: &Path, blobs: &mut Blobs) -> Result<(), SyncError> {
    blobs.listings += 1;
    let synced = &mut blobs.synced;
    let mut new: Vec<Vec<u8>> = Vec::new();
    let mut live = 0usize;
    let listed = list_dir(blob_dir, &mut |name| {
        live += 1;
        if !synced.contains(name) && sync_blob(blob_dir, name)? {
            new.push(name.to_vec());
        }
        Ok(())
    })?;
    if !listed {
        return Ok(());
    }
    if !new.is_empty() {
        sync_dir(blob_dir)?;
    }
    // Only after the directory sync: a name is "synced" once its entry is durable.
    synced.extend(new);
    // Forget blobs sled removed, so the set stays bounded by what exists.
    if synced.len() > 2 * live + 64 {
        let mut names = HashSet::new();
        list_dir(blob_dir, &mut |name| {
            if synced.contains(name) {
                names.insert(name.to_vec());
            }
            Ok(())
        })?;
        *synced = names;
    }
    Ok(())
}

/// fsyncs blob file `name`; false when it no longer exists (sled removed
/// a blob it had replaced between the listing or event and this sync).
fn sync_blob(blob_dir: &Path, name: &[u8]) -> Result<bool, SyncError> {
    let path = entry_path(blob_dir, name);
    match File::open(&path).and_then(|f| f.sync_all()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("sync sled blob", &path)(e)),
    }
}

/// The inotify watch of `blobs/` ([`DeviceSync::open_watching_blobs`]).
#[cfg(target_os = "linux")]
mod watch {
    use super::{io, sync_blob, sync_dir, SyncError};
    use rustix::fd::OwnedFd;
    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
    use std::mem::MaybeUninit;
    use std::path::Path;

    /// Bytes read from the inotify descriptor at a time: at least one event
    /// with the longest name (16 + 256 bytes).
    const EVENT_BUFFER_BYTES: usize = 4096;

    /// An inotify instance and whether it watches `blobs/` yet.
    #[derive(Debug)]
    pub(super) struct BlobWatch {
        pub(super) fd: OwnedFd,
        /// False until `blobs/` exists (sled creates it at open; a store
        /// opened by another sled version might not).
        pub(super) watching: bool,
        /// Blob files synced as events announced them (the tests read it).
        pub(super) synced_files: u64,
    }

    /// What [`BlobWatch::sync_announced`] did.
    pub(super) enum Synced {
        /// Every blob file written since the last sync is synced.
        All,
        /// The watch cannot tell (it only just started or started again,
        /// or the kernel dropped events): the caller lists the directory
        /// and syncs every blob file it holds.
        ListNeeded,
    }

    impl BlobWatch {
        /// A new inotify instance, or `None` when the system gives none
        /// (the per-user instance limit, `fs.inotify.max_user_instances`).
        pub(super) fn new() -> Option<BlobWatch> {
            let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok()?;
            Some(BlobWatch {
                fd,
                watching: false,
                synced_files: 0,
            })
        }

        /// fsyncs the blob files sled finished writing since the last call,
        /// then `blob_dir` if there were any.
        pub(super) fn sync_announced(&mut self, blob_dir: &Path) -> Result<Synced, SyncError> {
            if !self.watching {
                // The watch comes first, the listing after: a file written
                // in between is in both, synced twice, never missed.
                let flags = WatchFlags::CLOSE_WRITE | WatchFlags::MOVED_TO | WatchFlags::ONLYDIR;
                match inotify::add_watch(&self.fd, blob_dir, flags) {
                    Ok(_) => self.watching = true,
                    Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(io("watch blob directory", blob_dir)(e.into())),
                }
                return Ok(Synced::ListNeeded);
            }
            let synced = self.sync_events(blob_dir);
            if synced.is_err() {
                // Events read before the error are gone: the next sync
                // watches afresh and lists (and syncs) every blob file.
                self.watching = false;
            }
            synced
        }

        /// Reads the events queued since the last call and syncs the files
        /// they name.
        fn sync_events(&mut self, blob_dir: &Path) -> Result<Synced, SyncError> {
            let mut buf = [MaybeUninit::<u8>::uninit(); EVENT_BUFFER_BYTES];
            let mut events = inotify::Reader::new(&self.fd, &mut buf);
            let (mut synced_any, mut list) = (false, false);
            loop {
                let event = match events.next() {
                    Ok(event) => event,
                    Err(rustix::io::Errno::WOULDBLOCK) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(io("read blob directory events", blob_dir)(e.into())),
                };
                let flags = event.events();
                if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                    list = true;
                } else if flags.contains(ReadFlags::IGNORED) {
                    // The directory went away (or was replaced): watch
                    // again once it exists.
                    self.watching = false;
                    list = true;
                } else if let Some(name) = event.file_name() {
                    if sync_blob(blob_dir, name.to_bytes())? {
                        synced_any = true;
                        self.synced_files += 1;
                    }
                }
            }
            if synced_any {
                sync_dir(blob_dir)?;
            }
            Ok(if list {
                Synced::ListNeeded
            } else {
                Synced::All
            })
        }
    }
}

/// `dir`/`name` for a name [`list_dir`] gave.
#[cfg(unix)]
fn entry_path(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name))
}

/// `dir`/`name` for a name [`list_dir`] gave (sled's blob names are decimal numbers).
#[cfg(not(unix))]
fn entry_path(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(String::from_utf8_lossy(name).as_ref())
}

/// Calls `each` with the name of every entry of `dir` (not `.` and `..`);
/// false when `dir` does not exist.
#[cfg(target_os = "linux")]
fn list_dir(
    dir: &Path,
    each: &mut dyn FnMut(&[u8]) -> Result<(), SyncError>,
) -> Result<bool, SyncError> {
    use rustix::fs::{Mode, OFlags, RawDir};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(dir, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(io("read blob directory", dir)(e.into())),
    };
    let mut buf = Vec::with_capacity(16 << 10);
    let mut entries = RawDir::new(fd, buf.spare_capacity_mut());
    while let Some(entry) = entries.next() {
        let entry = entry.map_err(|e| io("read blob directory", dir)(e.into()))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            each(name)?;
        }
    }
    Ok(true)
}

/// Calls `each` with the name of every entry of `dir`; false when `dir`
/// does not exist.
#[cfg(not(target_os = "linux"))]
fn list_dir(
    dir: &Path,
    each: &mut dyn FnMut(&[u8]) -> Result<(), SyncError>,
) -> Result<bool, SyncError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("read blob directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io("read blob directory", dir))?;
        each(entry.file_name().as_encoded_bytes())?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_bytes_adds_the_files_at_every_depth() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("top"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("a/mid"), [0u8; 200]).unwrap();
        std::fs::write(dir.path().join("a/b/deep"), [0u8; 3000]).unwrap();
        assert_eq!(dir_bytes(dir.path()), 3210);
        assert_eq!(
            dir_bytes(&dir.path().join("a/b/deep")),
            3000,
            "a file: its own size"
        );
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
    }

    #[test]
    fn syncs_an_open_database_and_its_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let db = sled::Config::new().path(&path).open().unwrap();
        let sync = DeviceSync::open(&path, true).unwrap();
        assert!(sync.enabled());
        db.insert(b"small", vec![1u8; 64]).unwrap();
        // Over the blob threshold: sled writes it to its own file.
        db.insert(b"big", vec![2u8; 300 << 10]).unwrap();
        db.flush().unwrap();
        sync.sync().unwrap();
        let blobs = std::fs::read_dir(path.join(SLED_BLOB_DIR)).unwrap().count();
        assert_eq!(blobs, 1, "a 300 KiB value is a blob file");
        assert_eq!(sync.blobs.lock().unwrap().synced.len(), 1);
        drop(db);
        let db = sled::Config::new().path(&path).open().unwrap();
        assert_eq!(db.get(b"big").unwrap().unwrap().len(), 300 << 10);
    }

    #[test]
    fn new_blobs_are_synced_once_and_removed_ones_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join(SLED_BLOB_DIR);
        std::fs::create_dir_all(&blobs).unwrap();
        for f in [SLED_DATA_FILE, SLED_CONF_FILE] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let blob = |n: u64| blobs.join(n.to_string());
        for n in 0..100 {
            std::fs::write(blob(n), b"b").unwrap();
        }
        let sync = DeviceSync::open(dir.path(), true).unwrap();
        let synced = || sync.blobs.lock().unwrap().synced.len();
        assert_eq!(synced(), 100, "blobs present at open are synced there");
        std::fs::write(blob(100), b"b").unwrap();
        sync.sync().unwrap();
        assert_eq!(synced(), 101);
        // sled removed most of them: the set is cut back once it is more
        // than twice what exists (plus a margin), not at every sync.
        for n in 0..95 {
            std::fs::remove_file(blob(n)).unwrap();
        }
        sync.sync().unwrap();
        assert_eq!(
            synced(),
            6,
            "101 > 2 × 6 + 64: cut back to the 6 that exist"
        );
        std::fs::write(blob(101), b"b").unwrap();
        std::fs::remove_file(blob(100)).unwrap();
        sync.sync().unwrap();
        assert_eq!(
            synced(),
            7,
            "7 ≤ 2 × 6 + 64: the removed name stays until the next cut"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_watching_sync_fsyncs_what_sled_wrote_without_listing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let db = sled::Config::new().path(&path).open().unwrap();
        db.insert(b"before", vec![1u8; 300 << 10]).unwrap();
        db.flush().unwrap();
        let sync = DeviceSync::open_watching_blobs(&path).unwrap();
        assert!(
            sync.watches_blobs(),
            "inotify is available on the test machine"
        );
        assert_eq!(sync.blob_listings(), 1, "one listing at open");
        let at_open = sync.blobs.lock().unwrap().synced.clone();
        assert_eq!(at_open.len(), 1, "the blob present at open is synced there");
        for n in 0..3u8 {
            db.insert([b'k', n], vec![n; 300 << 10]).unwrap();
        }
        db.flush().unwrap();
        // The three new blob files come from the watch: no listing.
        sync.sync().unwrap();
        sync.sync().unwrap();
        assert_eq!(sync.blob_listings(), 1, "syncs after open read events only");
        let b = sync.blobs.lock().unwrap();
        let w = b.watch.as_ref().unwrap();
        assert!(w.watching);
        // sled may also rewrite a large node as a new blob: at least the three.
        assert!(w.synced_files >= 3, "{} blob files synced", w.synced_files);
        drop(b);
        let blobs = std::fs::read_dir(path.join(SLED_BLOB_DIR)).unwrap().count();
        assert_eq!(blobs, 4);
        drop(db);
        let db = sled::Config::new().path(&path).open().unwrap();
        for n in 0..3u8 {
            assert_eq!(db.get([b'k', n]).unwrap().unwrap().len(), 300 << 10);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_watch_syncs_each_closed_blob_skips_removed_ones_and_waits_for_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        for f in [SLED_DATA_FILE, SLED_CONF_FILE] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        // No `blobs/` yet: nothing to watch, nothing to list.
        let sync = DeviceSync::open_watching_blobs(dir.path()).unwrap();
        sync.sync().unwrap();
        let blobs = dir.path().join(SLED_BLOB_DIR);
        std::fs::create_dir(&blobs).unwrap();
        std::fs::write(blobs.join("1"), b"b").unwrap();
        // The first sync that finds the directory watches it and lists it.
        sync.sync().unwrap();
        let listings = sync.blob_listings();
        assert!(sync.blobs.lock().unwrap().synced.contains(b"1".as_slice()));
        // Written and closed, then one removed before the sync: no error.
        std::fs::write(blobs.join("2"), b"b").unwrap();
        std::fs::write(blobs.join("3"), b"b").unwrap();
        std::fs::remove_file(blobs.join("2")).unwrap();
        sync.sync().unwrap();
        assert_eq!(sync.blob_listings(), listings, "events, not a listing");
        let from_events = || {
            sync.blobs
                .lock()
                .unwrap()
                .watch
                .as_ref()
                .unwrap()
                .synced_files
        };
        assert_eq!(from_events(), 1, "3 synced, 2 gone");
        // A file still open for writing is not announced until closed.
        let mut open = File::create(blobs.join("4")).unwrap();
        sync.sync().unwrap();
        assert_eq!(from_events(), 1);
        std::io::Write::write_all(&mut open, b"late").unwrap();
        drop(open);
        sync.sync().unwrap();
        assert_eq!(from_events(), 2);
        assert_eq!(sync.blob_listings(), listings);
        // The directory replaced: the watch ends, the next sync lists and
        // watches the new one.
        std::fs::remove_dir_all(&blobs).unwrap();
        std::fs::create_dir(&blobs).unwrap();
        std::fs::write(blobs.join("5"), b"b").unwrap();
        sync.sync().unwrap();
        sync.sync().unwrap();
        assert!(sync.blob_listings() > listings);
        assert!(sync.blobs.lock().unwrap().synced.contains(b"5".as_slice()));
    }

    #[test]
    fn creates_nested_directories() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        // Existing: a no-op apart from the parent's sync.
        create_dir_all(&deep).unwrap();
    }

    #[test]
    fn disabled_sync_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sync = DeviceSync::open(&dir.path().join("missing"), false).unwrap();
        assert!(!sync.enabled());
        sync.sync().unwrap();
    }

    #[test]
    fn a_missing_data_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = DeviceSync::open(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("open sled data file"), "{err}");
    }
}

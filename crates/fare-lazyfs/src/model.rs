//! The in-memory model: inodes with a volatile and a durable state. Pure (no
//! FUSE, no I/O), so its rules are tested directly and the FUSE layer
//! (`fs.rs`) only translates requests.

use crate::{PowerCut, PowerCutReport, Stats};
use fuser::Errno;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

/// Page size of the simulated write cache: the unit a torn cut keeps or drops.
pub const PAGE: usize = 4096;
/// A torn page keeps a prefix that is a whole number of these.
pub const SECTOR: usize = 512;
/// Inode number of the root directory (FUSE's).
pub const ROOT: u64 = 1;

/// File contents: sparse 4 KiB pages and a size. Invariant: no page at or
/// beyond `ceil(size / PAGE)`, and the bytes of the last page past `size` are
/// zero, so growing the size exposes zeros (a hole).
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Data {
    pages: BTreeMap<u64, Box<[u8]>>,
    size: u64,
}

fn page_count(size: u64) -> u64 {
    size.div_ceil(PAGE as u64)
}

impl Data {
    /// Up to `len` bytes from `off`, holes read as zeros, never past the end.
    pub fn read(&self, off: u64, len: usize) -> Vec<u8> {
        if off >= self.size {
            return Vec::new();
        }
        let end = self.size.min(off.saturating_add(len as u64));
        let mut out = vec![0u8; (end - off) as usize];
        let mut pos = off;
        while pos < end {
            let p = pos / PAGE as u64;
            let in_page = (pos % PAGE as u64) as usize;
            let n = (PAGE - in_page).min((end - pos) as usize);
            if let Some(page) = self.pages.get(&p) {
                let at = (pos - off) as usize;
                out[at..at + n].copy_from_slice(&page[in_page..in_page + n]);
            }
            pos += n as u64;
        }
        out
    }

    /// Writes `buf` at `off` (extending the size), marking the pages touched.
    pub fn write(&mut self, off: u64, buf: &[u8], dirty: &mut BTreeSet<u64>) {
        if buf.is_empty() {
            return;
        }
        let mut pos = off;
        let end = off + buf.len() as u64;
        while pos < end {
            let p = pos / PAGE as u64;
            let in_page = (pos % PAGE as u64) as usize;
            let n = (PAGE - in_page).min((end - pos) as usize);
            let page = self
                .pages
                .entry(p)
                .or_insert_with(|| vec![0u8; PAGE].into_boxed_slice());
            let at = (pos - off) as usize;
            page[in_page..in_page + n].copy_from_slice(&buf[at..at + n]);
            dirty.insert(p);
            pos += n as u64;
        }
        self.size = self.size.max(end);
    }

    /// Sets the size: shrinking drops whole pages and zeroes the tail of the
    /// last one; growing exposes zeros. Marks every page it changes.
    pub fn set_size(&mut self, size: u64, dirty: &mut BTreeSet<u64>) {
        if size < self.size {
            let keep = page_count(size);
            let gone: Vec<u64> = self.pages.range(keep..).map(|(p, _)| *p).collect();
            for p in gone {
                self.pages.remove(&p);
                dirty.insert(p);
            }
            let tail = (size % PAGE as u64) as usize;
            if tail != 0 {
                let p = size / PAGE as u64;
                if let Some(page) = self.pages.get_mut(&p) {
                    page[tail..].fill(0);
                    dirty.insert(p);
                }
            }
        }
        // Pages between the old and the new size are holes in the volatile
        // state; the durable state may still hold bytes there (from before a
        // shrink), so they count as changed.
        for p in page_count(self.size.min(size))..page_count(self.size.max(size)) {
            dirty.insert(p);
        }
        self.size = size;
    }

    /// Bytes held in pages (for stats).
    fn held_bytes(&self) -> u64 {
        (self.pages.len() * PAGE) as u64
    }

    /// Copies page `p` of `from` into `self` (a hole stays a hole), keeping
    /// only the first `prefix` bytes of it when given.
    fn take_page(&mut self, from: &Data, p: u64, prefix: Option<usize>) {
        match (from.pages.get(&p), prefix) {
            (Some(src), None) => {
                self.pages.insert(p, src.clone());
            }
            (None, None) => {
                self.pages.remove(&p);
            }
            (src, Some(n)) => {
                let page = self
                    .pages
                    .entry(p)
                    .or_insert_with(|| vec![0u8; PAGE].into_boxed_slice());
                match src {
                    Some(src) => page[..n].copy_from_slice(&src[..n]),
                    None => page[..n].fill(0),
                }
            }
        }
    }

    /// Sets the size to `size` after pages were copied in: drops pages past
    /// it and zeroes the tail of the last one (restores the invariant).
    fn clip(&mut self, size: u64) {
        let keep = page_count(size);
        self.pages.retain(|p, _| *p < keep);
        let tail = (size % PAGE as u64) as usize;
        if tail != 0 {
            if let Some(page) = self.pages.get_mut(&(size / PAGE as u64)) {
                page[tail..].fill(0);
            }
        }
        self.size = size;
    }
}

/// Attributes that follow the data: synced by `fsync`, restored by a cut.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Meta {
    /// Permission bits (no file type bits).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access.
    pub atime: SystemTime,
    /// Last modification.
    pub mtime: SystemTime,
    /// Last status change.
    pub ctime: SystemTime,
}

/// File or directory contents, each with both states.
#[derive(Debug)]
pub enum Body {
    /// A regular file.
    File {
        /// What reads see now.
        vol: Data,
        /// What survives a power cut.
        dur: Data,
        /// Pages whose volatile bytes may differ from the durable ones.
        dirty: BTreeSet<u64>,
    },
    /// A directory.
    Dir {
        /// Entries lookups see now.
        vol: BTreeMap<OsString, u64>,
        /// Entries that survive a power cut.
        dur: BTreeMap<OsString, u64>,
    },
}

/// One inode.
#[derive(Debug)]
pub struct Inode {
    /// Volatile attributes.
    pub meta: Meta,
    /// Durable attributes.
    pub dur_meta: Meta,
    /// Volatile entries naming this inode.
    pub nlink: u32,
    /// Durable entries naming this inode (kept so an inode unlinked in the
    /// volatile state but still named durably is not forgotten).
    pub dur_links: u32,
    /// Open handles.
    pub opens: u32,
    /// Volatile parent (directories only; for `..`).
    pub parent: u64,
    /// Contents.
    pub body: Body,
}

impl Inode {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir { .. })
    }

    /// Volatile size (directories: entry count).
    pub fn size(&self) -> u64 {
        match &self.body {
            Body::File { vol, .. } => vol.size,
            Body::Dir { vol, .. } => vol.len() as u64,
        }
    }
}

/// What `setattr` may change.
#[derive(Default, Debug)]
pub struct SetAttr {
    /// New permission bits.
    pub perm: Option<u16>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SystemTime>,
    /// New modification time.
    pub mtime: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy)]
struct Handle {
    ino: u64,
    append: bool,
}

/// The whole file system.
#[derive(Debug)]
pub struct Model {
    inodes: BTreeMap<u64, Inode>,
    handles: HashMap<u64, Handle>,
    next_ino: u64,
    next_fh: u64,
    counters: Stats,
}

type R<T> = Result<T, Errno>;

impl Model {
    /// An empty file system: a durable root directory owned by `uid:gid`.
    pub fn new(uid: u32, gid: u32) -> Model {
        let now = SystemTime::now();
        let meta = Meta {
            perm: 0o755,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
        };
        let root = Inode {
            meta,
            dur_meta: meta,
            nlink: 2,
            dur_links: 1,
            opens: 0,
            parent: ROOT,
            body: Body::Dir {
                vol: BTreeMap::new(),
                dur: BTreeMap::new(),
            },
        };
        Model {
            inodes: BTreeMap::from([(ROOT, root)]),
            handles: HashMap::new(),
            next_ino: ROOT + 1,
            next_fh: 1,
            counters: Stats::default(),
        }
    }

    /// The inode, or ENOENT (e.g. one a power cut removed).
    pub fn inode(&self, ino: u64) -> R<&Inode> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn inode_mut(&mut self, ino: u64) -> R<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, dir: u64) -> R<&BTreeMap<OsString, u64>> {
        match &self.inode(dir)?.body {
            Body::Dir { vol, .. } => Ok(vol),
            Body::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> R<&mut BTreeMap<OsString, u64>> {
        match &mut self.inode_mut(dir)?.body {
            Body::Dir { vol, .. } => Ok(vol),
            Body::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    /// The inode `name` in `parent` names.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> R<u64> {
        if name == "." {
            return Ok(parent);
        }
        if name == ".." {
            return Ok(self.inode(parent)?.parent);
        }
        self.entries(parent)?
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// A new inode named `name` in `parent` (EEXIST if taken).
    pub fn create(&mut self, parent: u64, name: &OsStr, dir: bool, meta: Meta) -> R<u64> {
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let body = if dir {
            Body::Dir {
                vol: BTreeMap::new(),
                dur: BTreeMap::new(),
            }
        } else {
            Body::File {
                vol: Data::default(),
                dur: Data::default(),
                dirty: BTreeSet::new(),
            }
        };
        self.inodes.insert(
            ino,
            Inode {
                meta,
                // Created durable-empty: only its directory entry decides
                // whether it exists after a cut.
                dur_meta: meta,
                nlink: if dir { 2 } else { 1 },
                dur_links: 0,
                opens: 0,
                parent,
                body,
            },
        );
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch_dir(parent);
        Ok(ino)
    }

    fn touch_dir(&mut self, dir: u64) {
        let now = SystemTime::now();
        if let Ok(d) = self.inode_mut(dir) {
            d.meta.mtime = now;
            d.meta.ctime = now;
        }
    }

    /// A new hard link `newparent/newname` to file `ino`.
    pub fn link(&mut self, ino: u64, newparent: u64, newname: &OsStr) -> R<()> {
        if self.inode(ino)?.is_dir() {
            return Err(Errno::EPERM);
        }
        if self.entries(newparent)?.contains_key(newname) {
            return Err(Errno::EEXIST);
        }
        self.entries_mut(newparent)?.insert(newname.to_owned(), ino);
        let node = self.inode_mut(ino)?;
        node.nlink += 1;
        node.meta.ctime = SystemTime::now();
        self.touch_dir(newparent);
        Ok(())
    }

    /// Removes the file entry `parent/name`.
    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> R<()> {
        let ino = self.lookup(parent, name)?;
        if self.inode(ino)?.is_dir() {
            return Err(Errno::EISDIR);
        }
        self.entries_mut(parent)?.remove(name);
        self.drop_link(ino);
        self.touch_dir(parent);
        Ok(())
    }

    /// Removes the empty directory `parent/name`.
    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> R<()> {
        let ino = self.lookup(parent, name)?;
        if !self.entries(ino)?.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        if ino == ROOT {
            return Err(Errno::EBUSY);
        }
        self.entries_mut(parent)?.remove(name);
        self.inode_mut(ino)?.nlink = 0;
        self.maybe_forget(ino);
        self.touch_dir(parent);
        Ok(())
    }

    fn drop_link(&mut self, ino: u64) {
        if let Ok(node) = self.inode_mut(ino) {
            node.nlink = node.nlink.saturating_sub(1);
            node.meta.ctime = SystemTime::now();
        }
        self.maybe_forget(ino);
    }

    /// Frees an inode nothing can reach any more: no volatile entry, no open
    /// handle, and no durable entry a cut could bring back.
    fn maybe_forget(&mut self, ino: u64) {
        if let Some(n) = self.inodes.get(&ino) {
            if ino != ROOT && n.nlink == 0 && n.opens == 0 && n.dur_links == 0 {
                self.inodes.remove(&ino);
            }
        }
    }

    /// rename(2), replacing an existing target of the same kind (an empty
    /// directory only); `noreplace` is RENAME_NOREPLACE.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        noreplace: bool,
    ) -> R<()> {
        let ino = self.lookup(parent, name)?;
        let is_dir = self.inode(ino)?.is_dir();
        self.entries(newparent)?;
        if newname.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        // Moving a directory under itself.
        if is_dir {
            let mut at = newparent;
            loop {
                if at == ino {
                    return Err(Errno::EINVAL);
                }
                if at == ROOT {
                    break;
                }
                at = self.inode(at)?.parent;
            }
        }
        if let Some(&target) = self.entries(newparent)?.get(newname) {
            if target == ino {
                return Ok(());
            }
            if noreplace {
                return Err(Errno::EEXIST);
            }
            let t = self.inode(target)?;
            match (is_dir, t.is_dir()) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !self.entries(target)?.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            self.entries_mut(newparent)?.remove(newname);
            if is_dir {
                self.inode_mut(target)?.nlink = 0;
                self.maybe_forget(target);
            } else {
                self.drop_link(target);
            }
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(newparent)?.insert(newname.to_owned(), ino);
        let node = self.inode_mut(ino)?;
        node.meta.ctime = SystemTime::now();
        if is_dir {
            node.parent = newparent;
        }
        self.touch_dir(parent);
        self.touch_dir(newparent);
        Ok(())
    }

    /// Changes attributes (truncate/extend, mode, owner, times).
    pub fn setattr(&mut self, ino: u64, set: &SetAttr) -> R<()> {
        let node = self.inode_mut(ino)?;
        let now = SystemTime::now();
        if let Some(size) = set.size {
            match &mut node.body {
                Body::File { vol, dirty, .. } => vol.set_size(size, dirty),
                Body::Dir { .. } => return Err(Errno::EISDIR),
            }
            node.meta.mtime = now;
        }
        if let Some(p) = set.perm {
            node.meta.perm = p & 0o7777;
        }
        if let Some(u) = set.uid {
            node.meta.uid = u;
        }
        if let Some(g) = set.gid {
            node.meta.gid = g;
        }
        if let Some(t) = set.atime {
            node.meta.atime = t;
        }
        if let Some(t) = set.mtime {
            node.meta.mtime = t;
        }
        node.meta.ctime = now;
        Ok(())
    }

    /// Opens `ino`; `trunc` is O_TRUNC, `append` O_APPEND. Returns the handle.
    pub fn open(&mut self, ino: u64, trunc: bool, append: bool) -> R<u64> {
        if trunc {
            self.setattr(
                ino,
                &SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                },
            )?;
        }
        self.inode_mut(ino)?.opens += 1;
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, append });
        Ok(fh)
    }

    /// Closes a handle (never persists anything).
    pub fn release(&mut self, fh: u64) {
        if let Some(h) = self.handles.remove(&fh) {
            if let Some(n) = self.inodes.get_mut(&h.ino) {
                n.opens = n.opens.saturating_sub(1);
            }
            self.maybe_forget(h.ino);
        }
    }

    /// Reads from the volatile state.
    pub fn read(&self, ino: u64, off: u64, len: usize) -> R<Vec<u8>> {
        match &self.inode(ino)?.body {
            Body::File { vol, .. } => Ok(vol.read(off, len)),
            Body::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    /// Writes into the volatile state; a handle opened with O_APPEND writes
    /// at the end whatever the offset. Returns the bytes written.
    pub fn write(&mut self, ino: u64, fh: Option<u64>, off: u64, buf: &[u8]) -> R<usize> {
        let append = fh
            .and_then(|fh| self.handles.get(&fh))
            .is_some_and(|h| h.append);
        let node = self.inode_mut(ino)?;
        let now = SystemTime::now();
        match &mut node.body {
            Body::File { vol, dirty, .. } => {
                let at = if append { vol.size } else { off };
                vol.write(at, buf, dirty);
            }
            Body::Dir { .. } => return Err(Errno::EISDIR),
        }
        node.meta.mtime = now;
        node.meta.ctime = now;
        self.counters.writes += 1;
        self.counters.bytes_written += buf.len() as u64;
        Ok(buf.len())
    }

    /// fsync/fdatasync of a file: its volatile contents, size and attributes
    /// become durable. On a directory it is [`Model::fsyncdir`].
    pub fn fsync(&mut self, ino: u64) -> R<()> {
        if self.inode(ino)?.is_dir() {
            return self.fsyncdir(ino);
        }
        let node = self.inode_mut(ino)?;
        node.dur_meta = node.meta;
        if let Body::File { vol, dur, dirty } = &mut node.body {
            for p in std::mem::take(dirty) {
                dur.take_page(vol, p, None);
            }
            let keep = page_count(vol.size);
            dur.pages.retain(|p, _| *p < keep);
            dur.size = vol.size;
        }
        self.counters.fsyncs += 1;
        Ok(())
    }

    /// fsync of a directory: its volatile entries become durable.
    pub fn fsyncdir(&mut self, ino: u64) -> R<()> {
        let node = self.inode_mut(ino)?;
        node.dur_meta = node.meta;
        let (old, new) = match &mut node.body {
            Body::Dir { vol, dur } => {
                let old = std::mem::replace(dur, vol.clone());
                (old, vol.clone())
            }
            Body::File { .. } => return Err(Errno::ENOTDIR),
        };
        for ino in old.values() {
            if let Some(n) = self.inodes.get_mut(ino) {
                n.dur_links = n.dur_links.saturating_sub(1);
            }
        }
        for ino in new.values() {
            if let Some(n) = self.inodes.get_mut(ino) {
                n.dur_links += 1;
            }
        }
        for ino in old.values() {
            self.maybe_forget(*ino);
        }
        self.counters.fsyncdirs += 1;
        Ok(())
    }

    /// `.`, `..` and the volatile entries, in name order.
    pub fn readdir(&self, ino: u64) -> R<Vec<(u64, bool, OsString)>> {
        let node = self.inode(ino)?;
        let mut out = vec![
            (ino, true, OsString::from(".")),
            (node.parent, true, OsString::from("..")),
        ];
        for (name, &child) in self.entries(ino)? {
            let is_dir = self.inodes.get(&child).is_some_and(Inode::is_dir);
            out.push((child, is_dir, name.clone()));
        }
        Ok(out)
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> Stats {
        let mut s = self.counters;
        s.inodes = self.inodes.len() as u64;
        for n in self.inodes.values() {
            if let Body::File { vol, dur, dirty } = &n.body {
                s.volatile_bytes += vol.held_bytes();
                s.durable_bytes += dur.held_bytes();
                s.dirty_pages += dirty.len() as u64;
            }
        }
        s
    }

    /// The power cut: see [`crate::PowerCut`].
    pub fn power_cut(&mut self, cut: PowerCut) -> PowerCutReport {
        let mut rep = PowerCutReport::default();
        let mut rng = cut.tear_seed.map(ChaCha20Rng::seed_from_u64);
        for node in self.inodes.values_mut() {
            node.meta = node.dur_meta;
            match &mut node.body {
                Body::Dir { vol, dur } => {
                    let reverted = vol.iter().filter(|(k, v)| dur.get(*k) != Some(v)).count()
                        + dur.keys().filter(|k| !vol.contains_key(*k)).count();
                    if reverted > 0 {
                        rep.entries_reverted += reverted as u64;
                        *vol = dur.clone();
                    }
                }
                Body::File { vol, dur, dirty } => {
                    if dirty.is_empty() && vol.size == dur.size {
                        continue;
                    }
                    rep.files_touched += 1;
                    let mut next = dur.clone();
                    let mut size = dur.size;
                    if let Some(rng) = rng.as_mut() {
                        // The size (metadata) may or may not have reached
                        // the disk; then each unsynced page on its own.
                        if rng.next_u32() % 2 == 0 {
                            size = vol.size;
                        }
                        let mut torn_done = false;
                        for &p in dirty.iter() {
                            match rng.next_u32() % 4 {
                                0 | 1 => {
                                    rep.bytes_dropped += page_bytes(vol.size, p, 0);
                                }
                                2 => {
                                    next.take_page(vol, p, None);
                                    if p < page_count(size) {
                                        rep.pages_kept += 1;
                                    }
                                }
                                _ if !torn_done => {
                                    torn_done = true;
                                    let sectors = PAGE / SECTOR;
                                    let n = SECTOR * (1 + rng.next_u32() as usize % (sectors - 1));
                                    next.take_page(vol, p, Some(n));
                                    rep.bytes_dropped += page_bytes(vol.size, p, n);
                                    if p < page_count(size) {
                                        rep.pages_torn += 1;
                                    }
                                }
                                _ => {
                                    rep.bytes_dropped += page_bytes(vol.size, p, 0);
                                }
                            }
                        }
                    } else {
                        for &p in dirty.iter() {
                            rep.bytes_dropped += page_bytes(vol.size, p, 0);
                        }
                    }
                    if vol.size != size {
                        rep.sizes_reverted += 1;
                    }
                    next.clip(size);
                    *vol = next.clone();
                    *dur = next;
                    dirty.clear();
                }
            }
        }
        // Only what durable entries reach from the root exists. A directory
        // two durable entries name (a rename between two directories of
        // which only the target was synced) keeps the first in name order
        // from the root, breadth first; the other entry is dropped.
        let mut reach: BTreeMap<u64, u32> = BTreeMap::from([(ROOT, 1)]);
        let mut parents: HashMap<u64, u64> = HashMap::from([(ROOT, ROOT)]);
        let mut queue = VecDeque::from([ROOT]);
        let mut drop_entries: Vec<(u64, OsString)> = Vec::new();
        while let Some(dir) = queue.pop_front() {
            let Some(Body::Dir { vol, .. }) = self.inodes.get(&dir).map(|n| &n.body) else {
                continue;
            };
            for (name, &child) in vol {
                let Some(c) = self.inodes.get(&child) else {
                    drop_entries.push((dir, name.clone()));
                    continue;
                };
                if c.is_dir() {
                    if reach.contains_key(&child) {
                        drop_entries.push((dir, name.clone()));
                        continue;
                    }
                    parents.insert(child, dir);
                    queue.push_back(child);
                }
                *reach.entry(child).or_insert(0) += 1;
            }
        }
        for (dir, name) in drop_entries {
            if let Some(Body::Dir { vol, dur }) = self.inodes.get_mut(&dir).map(|n| &mut n.body) {
                vol.remove(&name);
                dur.remove(&name);
                rep.entries_reverted += 1;
            }
        }
        let before = self.inodes.len();
        self.inodes.retain(|ino, _| reach.contains_key(ino));
        rep.inodes_removed = (before - self.inodes.len()) as u64;
        for (ino, node) in self.inodes.iter_mut() {
            let links = reach[ino];
            node.dur_links = links;
            node.nlink = if node.is_dir() { 2 } else { links };
            if let Some(p) = parents.get(ino) {
                node.parent = *p;
            }
        }
        // Handles on removed inodes are dead; the rest keep working.
        let inodes = &self.inodes;
        self.handles.retain(|_, h| inodes.contains_key(&h.ino));
        self.counters.power_cuts += 1;
        rep
    }
}

/// Bytes of page `p` past its first `kept` bytes that lie inside `size`.
fn page_bytes(size: u64, p: u64, kept: usize) -> u64 {
    let start = p * PAGE as u64 + kept as u64;
    let end = (p + 1) * PAGE as u64;
    size.min(end).saturating_sub(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        let t = SystemTime::UNIX_EPOCH;
        Meta {
            perm: 0o644,
            uid: 0,
            gid: 0,
            atime: t,
            mtime: t,
            ctime: t,
        }
    }

    fn file(m: &mut Model, name: &str) -> u64 {
        m.create(ROOT, OsStr::new(name), false, meta()).unwrap()
    }

    #[test]
    fn synced_data_survives_and_unsynced_is_dropped() {
        let mut m = Model::new(0, 0);
        let f = file(&mut m, "a");
        m.fsyncdir(ROOT).unwrap();
        m.write(f, None, 0, b"hello").unwrap();
        m.fsync(f).unwrap();
        m.write(f, None, 5, b" world").unwrap();
        let rep = m.power_cut(PowerCut::default());
        assert_eq!(rep.files_touched, 1);
        assert_eq!(m.read(f, 0, 100).unwrap(), b"hello");
    }

    #[test]
    fn truncate_then_extend_reads_zeros_and_cut_restores_old_bytes() {
        let mut m = Model::new(0, 0);
        let f = file(&mut m, "a");
        m.fsyncdir(ROOT).unwrap();
        m.write(f, None, 0, &[7u8; 10_000]).unwrap();
        m.fsync(f).unwrap();
        let shrink = SetAttr {
            size: Some(100),
            ..SetAttr::default()
        };
        m.setattr(f, &shrink).unwrap();
        let grow = SetAttr {
            size: Some(9000),
            ..SetAttr::default()
        };
        m.setattr(f, &grow).unwrap();
        let now = m.read(f, 0, 10_000).unwrap();
        assert_eq!(now.len(), 9000);
        assert!(now[..100].iter().all(|&b| b == 7));
        assert!(now[100..].iter().all(|&b| b == 0));
        m.fsync(f).unwrap();
        m.power_cut(PowerCut::default());
        assert_eq!(m.read(f, 0, 10_000).unwrap(), now);
    }

    #[test]
    fn torn_cut_is_deterministic_and_keeps_only_page_prefixes() {
        let run = |seed| {
            let mut m = Model::new(0, 0);
            let f = file(&mut m, "a");
            m.fsyncdir(ROOT).unwrap();
            m.write(f, None, 0, &[1u8; 8 * PAGE]).unwrap();
            m.fsync(f).unwrap();
            m.write(f, None, 0, &[2u8; 16 * PAGE]).unwrap();
            let rep = m.power_cut(PowerCut {
                tear_seed: Some(seed),
            });
            (rep, m.read(f, 0, 16 * PAGE).unwrap())
        };
        for seed in 0..50 {
            let (rep, bytes) = run(seed);
            assert_eq!((rep, bytes.clone()), run(seed), "seed {seed}");
            assert!(bytes.len() == 8 * PAGE || bytes.len() == 16 * PAGE);
            for (p, page) in bytes.chunks(PAGE).enumerate() {
                // Each page: new bytes, then old bytes (1 within the old
                // size, 0 past it), split at a sector boundary.
                let new = page.iter().take_while(|&&b| b == 2).count();
                let old = if p < 8 { 1 } else { 0 };
                assert!(
                    page[new..].iter().all(|&b| b == old),
                    "seed {seed} page {p}"
                );
                assert_eq!(new % SECTOR, 0, "seed {seed} page {p}");
            }
        }
    }
}

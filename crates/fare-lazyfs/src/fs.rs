//! The FUSE side: translates kernel requests to [`Model`] calls.
//!
//! Every reply carries zero entry and attribute TTLs, every open answers
//! `FOPEN_DIRECT_IO` (no page cache: each read and write reaches the model,
//! and nothing stale is served after a cut) and the writeback cache is
//! never requested, so the kernel holds no copy of the data: an `fsync` is
//! the only thing that moves bytes to the durable state.

use crate::model::{Body, Inode, Meta, Model, SetAttr};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

const TTL: Duration = Duration::ZERO;
const GEN: Generation = Generation(0);

/// The mounted file system: shares its model with [`crate::LazyFs`].
pub struct Fs {
    pub(crate) model: Arc<Mutex<Model>>,
}

fn attr(ino: u64, n: &Inode) -> FileAttr {
    let size = n.size();
    let (kind, size) = match n.body {
        Body::File { .. } => (FileType::RegularFile, size),
        Body::Dir { .. } => (FileType::Directory, 4096),
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: n.meta.atime,
        mtime: n.meta.mtime,
        ctime: n.meta.ctime,
        crtime: n.meta.ctime,
        kind,
        perm: n.meta.perm,
        nlink: n.nlink.max(1),
        uid: n.meta.uid,
        gid: n.meta.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Fs {
    fn m(&self) -> MutexGuard<'_, Model> {
        // A panic inside one request must not wedge every later one.
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_meta(req: &Request, mode: u32, umask: u32) -> Meta {
        let now = SystemTime::now();
        Meta {
            perm: (mode & !umask & 0o7777) as u16,
            uid: req.uid(),
            gid: req.gid(),
            atime: now,
            mtime: now,
            ctime: now,
        }
    }

    fn entry(&self, m: &Model, ino: u64, reply: ReplyEntry) {
        match m.inode(ino) {
            Ok(n) => reply.entry(&TTL, &attr(ino, n), GEN),
            Err(e) => reply.error(e),
        }
    }
}

fn flags_trunc_append(flags: i32) -> (bool, bool) {
    (flags & libc_o::TRUNC != 0, flags & libc_o::APPEND != 0)
}

/// The open(2) flag bits the model cares about (Linux values; this crate is
/// Linux-only like the FUSE mount it makes).
mod libc_o {
    pub const TRUNC: i32 = 0o1000;
    pub const APPEND: i32 = 0o2000;
    pub const EXCL: i32 = 0o200;
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        // No FUSE_WRITEBACK_CACHE (writes must reach us at once), no
        // FUSE_FLOCK_LOCKS / FUSE_POSIX_LOCKS: the kernel then keeps flock
        // and fcntl locks itself, per mount, which is what sled's exclusive
        // `flock` on its `db` file needs.
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let m = self.m();
        match m.lookup(parent.0, name) {
            Ok(ino) => self.entry(&m, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let m = self.m();
        match m.inode(ino.0) {
            Ok(n) => reply.attr(&TTL, &attr(ino.0, n)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut m = self.m();
        let set = SetAttr {
            perm: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        match m.setattr(ino.0, &set).and_then(|()| m.inode(ino.0)) {
            Ok(n) => reply.attr(&TTL, &attr(ino.0, n)),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files only (S_IFREG or no type bits).
        let kind = mode & 0o170000;
        if kind != 0 && kind != 0o100000 {
            reply.error(Errno::EPERM);
            return;
        }
        let mut m = self.m();
        match m.create(parent.0, name, false, Self::new_meta(req, mode, umask)) {
            Ok(ino) => self.entry(&m, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut m = self.m();
        match m.create(parent.0, name, true, Self::new_meta(req, mode, umask)) {
            Ok(ino) => self.entry(&m, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.m().unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.m().rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            reply.error(Errno::EINVAL);
            return;
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self
            .m()
            .rename(parent.0, name, newparent.0, newname, noreplace)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut m = self.m();
        match m.link(ino.0, newparent.0, newname) {
            Ok(()) => self.entry(&m, ino.0, reply),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (trunc, append) = flags_trunc_append(flags.0);
        let mut m = self.m();
        if m.inode(ino.0).is_ok_and(Inode::is_dir) {
            reply.error(Errno::EISDIR);
            return;
        }
        match m.open(ino.0, trunc, append) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (trunc, append) = flags_trunc_append(flags);
        let mut m = self.m();
        let ino = match m.lookup(parent.0, name) {
            Ok(_) if flags & libc_o::EXCL != 0 => Err(Errno::EEXIST),
            Ok(ino) if m.inode(ino).is_ok_and(Inode::is_dir) => Err(Errno::EISDIR),
            Ok(ino) => Ok(ino),
            Err(_) => m.create(parent.0, name, false, Self::new_meta(req, mode, umask)),
        };
        let r = ino.and_then(|ino| Ok((ino, m.open(ino, trunc, append)?)));
        match r {
            Ok((ino, fh)) => match m.inode(ino) {
                Ok(n) => reply.created(
                    &TTL,
                    &attr(ino, n),
                    GEN,
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO,
                ),
                Err(e) => reply.error(e),
            },
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.m().read(ino.0, offset, size as usize) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.m().write(ino.0, Some(fh.0), offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): persists nothing, as on a disk with a volatile cache.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.m().release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.m().fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.m().inode(ino.0) {
            Ok(n) if n.is_dir() => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.m().readdir(ino.0) {
            Ok(e) => e,
            Err(e) => {
                reply.error(e);
                return;
            }
        };
        for (i, (child, is_dir, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            let kind = if is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.m().fsyncdir(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A roomy 64 GiB disk, so nobody refuses to write for want of space.
        let blocks = 16 * 1024 * 1024;
        reply.statfs(blocks, blocks, blocks, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        match self.m().inode(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Plain allocation (mode 0) extends the size like a write of zeros;
        // punching holes and the rest are not modelled.
        if mode != 0 {
            reply.error(Errno::EOPNOTSUPP);
            return;
        }
        let mut m = self.m();
        let r = m.inode(ino.0).map(Inode::size).and_then(|size| {
            let end = offset.saturating_add(length);
            if end > size {
                m.setattr(
                    ino.0,
                    &SetAttr {
                        size: Some(end),
                        ..SetAttr::default()
                    },
                )
            } else {
                Ok(())
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

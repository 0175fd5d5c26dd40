//! The volatile-cache model through the real kernel: files written with
//! std::fs on the mount, then a power cut. Each test mounts its own file
//! system (skips with `SKIPPED:` without FUSE outside CI, fails in CI).

use fare_lazyfs::{mount_or_skip, PowerCut, PAGE, SECTOR};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()
}

#[test]
fn synced_write_survives_a_cut() {
    let Some(lfs) = mount_or_skip("synced_write_survives_a_cut") else {
        return;
    };
    let root = lfs.mountpoint();
    let p = root.join("a");
    let mut f = File::create(&p).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_data().unwrap();
    drop(f);
    sync_dir(root);
    let rep = lfs.power_cut(PowerCut::clean());
    assert!(!rep.lost_anything(), "{rep:?}");
    assert_eq!(read(&p), b"durable");
    assert!(lfs.stats().fsyncs >= 1 && lfs.stats().fsyncdirs >= 1);
}

#[test]
fn unsynced_write_is_dropped_and_close_persists_nothing() {
    let Some(lfs) = mount_or_skip("unsynced_write_is_dropped_and_close_persists_nothing") else {
        return;
    };
    let root = lfs.mountpoint();
    let p = root.join("a");
    fs::write(&p, b"first").unwrap();
    File::open(&p).unwrap().sync_all().unwrap();
    sync_dir(root);
    // Appended and closed, never synced.
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b" second").unwrap();
    drop(f);
    assert_eq!(read(&p), b"first second");
    let rep = lfs.power_cut(PowerCut::clean());
    assert_eq!(rep.files_touched, 1, "{rep:?}");
    assert!(rep.bytes_dropped > 0 && rep.sizes_reverted == 1, "{rep:?}");
    assert_eq!(read(&p), b"first");
}

#[test]
fn create_without_dir_fsync_disappears() {
    let Some(lfs) = mount_or_skip("create_without_dir_fsync_disappears") else {
        return;
    };
    let root = lfs.mountpoint();
    fs::create_dir(root.join("d")).unwrap();
    sync_dir(root);
    let p = root.join("d/new");
    let mut f = File::create(&p).unwrap();
    f.write_all(b"data").unwrap();
    // The file's data is synced, its directory entry is not.
    f.sync_all().unwrap();
    drop(f);
    let rep = lfs.power_cut(PowerCut::clean());
    assert_eq!(rep.inodes_removed, 1, "{rep:?}");
    assert_eq!(fs::metadata(&p).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(fs::read_dir(root.join("d")).unwrap().next().is_none());

    // Entry synced but data not: the file comes back empty.
    fs::write(&p, b"data").unwrap();
    sync_dir(&root.join("d"));
    lfs.power_cut(PowerCut::clean());
    assert_eq!(read(&p), b"");

    // A directory made but its parent never synced.
    fs::create_dir_all(root.join("x/y")).unwrap();
    fs::write(root.join("x/y/z"), b"1").unwrap();
    File::open(root.join("x/y/z")).unwrap().sync_all().unwrap();
    sync_dir(&root.join("x/y"));
    sync_dir(&root.join("x"));
    lfs.power_cut(PowerCut::clean());
    assert!(!root.join("x").exists());
}

#[test]
fn rename_without_dir_fsync_reverts() {
    let Some(lfs) = mount_or_skip("rename_without_dir_fsync_reverts") else {
        return;
    };
    let root = lfs.mountpoint();
    let (tmp, target) = (root.join("t.tmp"), root.join("t"));
    fs::write(&target, b"old").unwrap();
    File::open(&target).unwrap().sync_all().unwrap();
    sync_dir(root);
    // The classic atomic replace, minus the directory sync.
    fs::write(&tmp, b"new").unwrap();
    File::open(&tmp).unwrap().sync_all().unwrap();
    fs::rename(&tmp, &target).unwrap();
    assert_eq!(read(&target), b"new");
    let rep = lfs.power_cut(PowerCut::clean());
    assert!(rep.entries_reverted >= 1, "{rep:?}");
    assert_eq!(read(&target), b"old");
    assert!(!tmp.exists());

    // With the directory sync it sticks (and replaces the target).
    fs::write(&tmp, b"new").unwrap();
    File::open(&tmp).unwrap().sync_all().unwrap();
    fs::rename(&tmp, &target).unwrap();
    sync_dir(root);
    lfs.power_cut(PowerCut::clean());
    assert_eq!(read(&target), b"new");
    assert!(!tmp.exists());

    // Across directories: only the source synced loses the file.
    fs::create_dir(root.join("a")).unwrap();
    fs::create_dir(root.join("b")).unwrap();
    sync_dir(root);
    fs::write(root.join("a/f"), b"f").unwrap();
    File::open(root.join("a/f")).unwrap().sync_all().unwrap();
    sync_dir(&root.join("a"));
    fs::rename(root.join("a/f"), root.join("b/f")).unwrap();
    sync_dir(&root.join("a"));
    lfs.power_cut(PowerCut::clean());
    assert!(!root.join("a/f").exists() && !root.join("b/f").exists());
}

#[test]
fn truncate_semantics() {
    let Some(lfs) = mount_or_skip("truncate_semantics") else {
        return;
    };
    let root = lfs.mountpoint();
    let p = root.join("t");
    fs::write(&p, vec![7u8; 3 * PAGE + 100]).unwrap();
    File::open(&p).unwrap().sync_all().unwrap();
    sync_dir(root);

    // Shrink then grow: the cut-off bytes read as zeros, not old data.
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(10).unwrap();
    f.set_len(2 * PAGE as u64).unwrap();
    let now = read(&p);
    assert_eq!(now.len(), 2 * PAGE);
    assert!(now[..10].iter().all(|&b| b == 7) && now[10..].iter().all(|&b| b == 0));
    // Not synced: the cut restores the old size and bytes.
    drop(f);
    lfs.power_cut(PowerCut::clean());
    assert_eq!(read(&p), vec![7u8; 3 * PAGE + 100]);

    // O_TRUNC, synced.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 0);
    f.write_all(b"ab").unwrap();
    f.sync_all().unwrap();
    drop(f);
    lfs.power_cut(PowerCut::clean());
    assert_eq!(read(&p), b"ab");

    // Sparse write far out: a hole of zeros, positional reads and writes.
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.write_all_at(b"end", 5 * PAGE as u64).unwrap();
    let mut buf = vec![1u8; 8];
    f.read_exact_at(&mut buf, 2 * PAGE as u64).unwrap();
    assert_eq!(buf, [0u8; 8]);
    f.sync_data().unwrap();
    let mut f2 = File::open(&p).unwrap();
    f2.seek(SeekFrom::Start(5 * PAGE as u64)).unwrap();
    let mut tail = String::new();
    f2.read_to_string(&mut tail).unwrap();
    assert_eq!(tail, "end");
    lfs.power_cut(PowerCut::clean());
    assert_eq!(fs::metadata(&p).unwrap().len(), 5 * PAGE as u64 + 3);

    // O_EXCL on an existing name.
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
}

/// One torn cut of a file with 8 synced pages of 1s overwritten by 16
/// unsynced pages of 2s: (report, bytes after).
fn torn_once(seed: u64) -> Option<(fare_lazyfs::PowerCutReport, Vec<u8>)> {
    let lfs = mount_or_skip("torn_cut_keeps_whole_or_prefix_pages")?;
    let root = lfs.mountpoint();
    let p = root.join("f");
    fs::write(&p, vec![1u8; 8 * PAGE]).unwrap();
    File::open(&p).unwrap().sync_all().unwrap();
    sync_dir(root);
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&vec![2u8; 16 * PAGE], 0).unwrap();
    drop(f);
    let rep = lfs.power_cut(PowerCut::torn(seed));
    Some((rep, read(&p)))
}

#[test]
fn torn_cut_keeps_whole_or_prefix_pages_deterministically() {
    let mut kept_some = false;
    for seed in 0..6 {
        let Some((rep, bytes)) = torn_once(seed) else {
            return;
        };
        assert_eq!(Some((rep, bytes.clone())), torn_once(seed), "seed {seed}");
        assert!(
            bytes.len() == 8 * PAGE || bytes.len() == 16 * PAGE,
            "seed {seed}: {}",
            bytes.len()
        );
        let mut new_pages = 0;
        for (p, page) in bytes.chunks(PAGE).enumerate() {
            let new = page.iter().take_while(|&&b| b == 2).count();
            let old = u8::from(p < 8);
            assert!(
                page[new..].iter().all(|&b| b == old),
                "seed {seed} page {p}: unsynced bytes after old ones"
            );
            assert_eq!(new % SECTOR, 0, "seed {seed} page {p}: tear off a sector");
            new_pages += u64::from(new > 0);
        }
        assert_eq!(new_pages, rep.pages_kept + rep.pages_torn, "seed {seed}");
        assert!(rep.bytes_dropped > 0, "seed {seed}: {rep:?}");
        kept_some |= new_pages > 0;
    }
    assert!(kept_some, "no seed kept any unsynced page");
}

#[test]
fn sled_works_on_the_mount_and_holds_its_lock() {
    let Some(lfs) = mount_or_skip("sled_works_on_the_mount_and_holds_its_lock") else {
        return;
    };
    let dir = lfs.mountpoint().join("db");
    {
        let db = sled::open(&dir).unwrap();
        for i in 0u32..2000 {
            db.insert(i.to_be_bytes(), vec![i as u8; 100]).unwrap();
        }
        db.flush().unwrap();
        // sled's exclusive flock on its data file works through FUSE (the
        // kernel keeps it): a second open of the same directory is refused.
        let second = sled::open(&dir);
        assert!(second.is_err(), "second sled::open was not refused");
    }
    let db = sled::open(&dir).unwrap();
    assert_eq!(db.len(), 2000);
    assert_eq!(
        db.get(1999u32.to_be_bytes()).unwrap().unwrap()[0],
        1999u32 as u8
    );
    let s = lfs.stats();
    assert!(s.writes > 0, "{s:?}");
}

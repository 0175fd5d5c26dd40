//! Blob files under a power cut: sled writes values past its blob threshold
//! to files of their own, which it never syncs; after `Db::flush()` and
//! `DeviceSync::sync()` a power cut must lose nothing, whether the sync
//! found the new blob files by listing `blobs/` or from the inotify watch
//! (`DeviceSync::open_watching_blobs`, settlement's store). The disk is
//! `fare-lazyfs` (FUSE, root): `SKIPPED:` without it, except in CI.

use fare_durable::DeviceSync;
use fare_lazyfs::{mount_or_skip, PowerCut};

/// Past sled's blob threshold (128 KiB): each insert writes a blob file.
const BLOB_VALUE_BYTES: usize = 300 << 10;

fn synced_blobs_survive(test: &str, watch: bool) {
    let Some(fs) = mount_or_skip(test) else {
        return;
    };
    let path = fs.mountpoint().join("db");
    // No background flusher: nothing reaches the disk but what the test
    // flushes.
    let db = sled::Config::new()
        .path(&path)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let sync = if watch {
        DeviceSync::open_watching_blobs(&path).unwrap()
    } else {
        DeviceSync::open(&path, true).unwrap()
    };
    assert_eq!(sync.watches_blobs(), watch);
    for n in 0..4u8 {
        db.insert([n], vec![n; BLOB_VALUE_BYTES]).unwrap();
        db.flush().unwrap();
        sync.sync().unwrap();
    }
    let blobs = std::fs::read_dir(path.join(fare_durable::SLED_BLOB_DIR))
        .unwrap()
        .count();
    assert!(blobs >= 1, "the values went to blob files");
    if watch {
        assert_eq!(sync.blob_listings(), 1, "only the listing at open");
    }
    let cut = fs.power_cut(PowerCut::clean());
    assert!(!cut.lost_anything(), "a synced store lost {cut:?}");

    // The control: a blob flushed but not synced is lost by the same cut.
    db.insert([9], vec![9; BLOB_VALUE_BYTES]).unwrap();
    db.flush().unwrap();
    let cut = fs.power_cut(PowerCut::clean());
    assert!(cut.lost_anything(), "an unsynced blob survived: {cut:?}");
}

#[test]
fn blobs_found_by_the_watch_survive_a_power_cut() {
    synced_blobs_survive("blobs_found_by_the_watch_survive_a_power_cut", true);
}

#[test]
fn blobs_found_by_listing_survive_a_power_cut() {
    synced_blobs_survive("blobs_found_by_listing_survive_a_power_cut", false);
}

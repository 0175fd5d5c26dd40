//! Small, careful file helpers shared by the key store and the wallet:
//! secrets are created owner-only, and every write is atomic (write a
//! temporary file, fsync, rename, fsync the directory) so a crash leaves
//! either the old or the new content, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;

/// Writes `data` to `path` atomically. `secret` files get mode 0600.
pub fn write_atomic(path: &Path, data: &[u8], secret: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Ok(d) = File::open(dir) {
        // Make the rename itself durable; not all platforms allow this.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates a directory (and parents) readable by the owner only, durably:
/// every directory that gained an entry is synced, so a power cut right
/// after a first start cannot lose the keys directory (and with it the
/// deployment's identity).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fare_durable::create_dir_all(path).map_err(|e| io::Error::other(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Reads a file holding hex (whitespace trimmed).
pub fn read_hex(path: &Path) -> io::Result<Vec<u8>> {
    let s = fs::read_to_string(path)?;
    hex::decode(s.trim()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: expected hex: {e}", path.display()),
        )
    })
}

/// Parses "90s", "30m", "72h", "7d" (or plain seconds) into seconds.
pub fn parse_duration_s(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        Some(_) => (s, 1),
        None => return Err("empty duration: expected e.g. 90s, 30m, 72h, 7d".into()),
    };
    let n: u64 = num.parse().map_err(|_| {
        format!("bad duration `{s}`: expected a whole number with unit s, m, h or d (e.g. 72h)")
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("duration `{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("72h"), Ok(259_200));
        assert_eq!(parse_duration_s("90s"), Ok(90));
        assert_eq!(parse_duration_s("7d"), Ok(604_800));
        assert_eq!(parse_duration_s("120"), Ok(120));
        assert!(parse_duration_s("").is_err());
        assert!(parse_duration_s("h").is_err());
        assert!(parse_duration_s("-3h").is_err());
        assert!(parse_duration_s("99999999999999999999d").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        write_atomic(&p, b"x", true).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&p, b"y", true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"y");
    }
}

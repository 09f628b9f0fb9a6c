//! Files that hold patient data (the database: messages, the TURN secret, the join-code key;
//! uploads; recordings; the TLS key) are readable by the server's user only.
//!
//! Invariants: from [`restrict`] on, everything the process creates is `0600` (files) or
//! `0700` (directories), whatever library creates it (SQLite's database, WAL and journal
//! files included); directories found too open at start (a data directory from before this
//! rule) are closed, with what they hold.

use std::io;
use std::path::Path;

/// Creation mask: nothing for group or others.
#[cfg(unix)]
pub fn restrict() {
    // SAFETY: umask only sets the process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(not(unix))]
pub fn restrict() {}

/// Closes `dir` (when it exists and is open to group or others) and everything under it:
/// directories to `0700`, files to `0600`. Returns how many entries it changed.
#[cfg(unix)]
pub fn close_dir(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return Ok(0);
    };
    if !meta.is_dir() || meta.permissions().mode() & 0o077 == 0 {
        return Ok(0);
    }
    let mut changed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        changed += 1;
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                let mode = entry.metadata()?.permissions().mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(
                        entry.path(),
                        std::fs::Permissions::from_mode(mode & 0o700),
                    )?;
                    changed += 1;
                }
            }
            // Symbolic links are left alone: what they point to is not ours to change.
        }
    }
    Ok(changed)
}

#[cfg(not(unix))]
pub fn close_dir(_dir: &Path) -> io::Result<u64> {
    Ok(0)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn an_open_directory_is_closed_with_what_it_holds() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("relais.db"), b"x").unwrap();
        std::fs::write(dir.join("sub/upload.bin"), b"x").unwrap();
        for (p, m) in [
            (dir.clone(), 0o755),
            (dir.join("sub"), 0o755),
            (dir.join("relais.db"), 0o644),
            (dir.join("sub/upload.bin"), 0o664),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        assert_eq!(close_dir(&dir).unwrap(), 4);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("sub")), 0o700);
        assert_eq!(mode(&dir.join("relais.db")), 0o600);
        assert_eq!(mode(&dir.join("sub/upload.bin")), 0o600);
        // Closed already: nothing to do.
        assert_eq!(close_dir(&dir).unwrap(), 0);
        assert_eq!(close_dir(&root.path().join("missing")).unwrap(), 0);
    }
}

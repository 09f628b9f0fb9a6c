//! The open-file limit. Every HTTP connection, socket, TURN relay, database file and recording
//! holds a descriptor; distributions start services at a soft limit of 1024, which 1,100 idle
//! connections used up. At start the soft limit is raised to the hard one.

/// The soft and hard `RLIMIT_NOFILE`, after raising the soft one as far as allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// The soft limit to ask for: the hard limit, capped (`RLIM_INFINITY` is not a number of
/// files, and some kernels refuse more than `nr_open`, 1,048,576 by default).
pub fn target(soft: u64, hard: u64) -> u64 {
    const CAP: u64 = 1 << 20;
    soft.max(hard.min(CAP))
}

/// Raises the soft `RLIMIT_NOFILE` towards the hard limit. Never lowers it.
#[cfg(unix)]
// `rlim_t` is u64 on Linux, not on every Unix.
#[allow(clippy::unnecessary_cast)]
pub fn raise() -> std::io::Result<FdLimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (before, hard) = (rl.rlim_cur as u64, rl.rlim_max as u64);
    let want = target(before, hard);
    if want > before {
        let mut new = rl;
        new.rlim_cur = want as libc::rlim_t;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut after = rl;
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut after) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(FdLimit {
        before,
        now: after.rlim_cur as u64,
        hard,
    })
}

#[cfg(not(unix))]
pub fn raise() -> std::io::Result<FdLimit> {
    Ok(FdLimit {
        before: u64::MAX,
        now: u64::MAX,
        hard: u64::MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target(1024, 524_288), 524_288);
        assert_eq!(target(1024, u64::MAX), 1 << 20);
        assert_eq!(target(4096, 1024), 4096);
    }

    #[test]
    fn raising_never_lowers() {
        let l = raise().unwrap();
        assert!(l.now >= l.before);
        assert!(l.now <= l.hard);
    }
}

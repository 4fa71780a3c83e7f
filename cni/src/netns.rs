//! Network namespaces: opening and checking `CNI_NETNS`, and netlink sockets bound to a netns.
//!
//! A netlink socket belongs to the netns of the thread that created it. To talk to a pod's netns
//! we create the socket on a short-lived helper thread that has `setns`'d into it; the helper then
//! exits, and the socket keeps working from the main thread. The main thread never changes netns.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use nix::sched::{CloneFlags, setns};
use nix::sys::stat::fstat;
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

use crate::error::CniError;

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: u64 = 0xb703;

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    pub file: File,
    pub path: String,
}

impl Netns {
    /// Identity of the namespace (device and inode of its nsfs file).
    pub fn id(&self) -> io::Result<(u64, u64)> {
        ns_id(&self.file)
    }
}

pub fn ns_id(file: &File) -> io::Result<(u64, u64)> {
    let st = fstat(file.as_fd()).map_err(io::Error::from)?;
    Ok((st.st_dev, st.st_ino))
}

/// Checks that `file` is a network namespace: nsfs, and `NS_GET_NSTYPE` says `CLONE_NEWNET`.
pub fn check_is_netns(file: &File) -> Result<(), String> {
    let fs = fstatfs(file.as_fd()).map_err(|e| format!("fstatfs: {e}"))?;
    if fs.filesystem_type() != NSFS_MAGIC {
        return Err(format!("not on nsfs (filesystem type {:#x})", fs.filesystem_type().0));
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which we own for the call.
    let ty = unsafe { nix::libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if ty < 0 {
        return Err(format!("ioctl NS_GET_NSTYPE: {}", io::Error::last_os_error()));
    }
    if ty != nix::libc::CLONE_NEWNET {
        return Err(format!("it is a namespace of another type ({ty:#x})"));
    }
    Ok(())
}

/// Opens `CNI_NETNS`. A missing path is [`CniError::NetnsGone`]; anything but a netns is
/// [`CniError::NotNetns`].
pub fn open(path: &str) -> Result<Netns, CniError> {
    let file = File::open(Path::new(path)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => CniError::NetnsGone {
            path: path.to_string(),
            reason: e.to_string(),
        },
        _ => CniError::NotNetns {
            path: path.to_string(),
            reason: e.to_string(),
        },
    })?;
    check_is_netns(&file).map_err(|reason| CniError::NotNetns {
        path: path.to_string(),
        reason,
    })?;
    Ok(Netns {
        file,
        path: path.to_string(),
    })
}

/// The netns of the calling thread (the "host" for this invocation).
pub fn current() -> Result<Netns, CniError> {
    let path = "/proc/thread-self/ns/net";
    let file = File::open(path).map_err(|source| CniError::Io {
        what: format!("open {path}"),
        source,
    })?;
    Ok(Netns {
        file,
        path: path.to_string(),
    })
}

/// A rtnetlink handle whose socket lives in `ns`. Must be called within a tokio runtime; the
/// connection task is spawned on it.
pub fn connect_in(ns: &Netns) -> io::Result<rtnetlink::Handle> {
    let rt = tokio::runtime::Handle::current();
    let fd = ns.file.as_fd();
    let made = std::thread::scope(|s| {
        s.spawn(|| {
            // This helper thread is the only one that changes netns, and it exits right after.
            setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let _guard = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection()?;
            Ok::<_, io::Error>((conn, handle))
        })
        .join()
    });
    let (conn, handle) = made.map_err(|_| io::Error::other("netns helper thread panicked"))??;
    rt.spawn(conn);
    Ok(handle)
}

/// A rtnetlink handle in the calling thread's netns.
pub fn connect_here() -> io::Result<rtnetlink::Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Every other network namespace we can find: bind mounts under `/run/netns` and `/var/run/netns`,
/// and `/proc/<pid>/ns/net` of every process. Deduplicated, without `skip`. Used by GC only.
pub fn enumerate(skip: (u64, u64)) -> Vec<Netns> {
    let mut seen = std::collections::HashSet::from([skip]);
    let mut out = Vec::new();
    let mut candidates = Vec::new();
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            candidates.extend(entries.flatten().map(|e| e.path()));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                candidates.push(e.path().join("ns/net"));
            }
        }
    }
    for path in candidates {
        let Ok(file) = File::open(&path) else { continue };
        let Ok(id) = ns_id(&file) else { continue };
        if !seen.insert(id) || check_is_netns(&file).is_err() {
            continue;
        }
        out.push(Netns {
            file,
            path: path.display().to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_and_dirs_are_not_netns() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(matches!(open(f.to_str().unwrap()), Err(CniError::NotNetns { .. })));
        assert!(matches!(
            open(dir.path().to_str().unwrap()),
            Err(CniError::NotNetns { .. })
        ));
        let gone = dir.path().join("gone");
        assert!(matches!(open(gone.to_str().unwrap()), Err(CniError::NetnsGone { .. })));
        // Another namespace type (mount) is refused too.
        assert!(matches!(open("/proc/self/ns/mnt"), Err(CniError::NotNetns { .. })));
        assert!(open("/proc/self/ns/net").is_ok());
    }
}

//! A file-system call on a path that failed, defined once for the commands that read and write
//! files (install-cni, the VM checks and their recorded sysfs tree).

use std::path::{Path, PathBuf};

/// The call (reading, writing, creating, …), the path it was on, and the I/O error.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct PathError {
    op: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

impl PathError {
    /// The error of `op` on `path`, for `map_err`.
    pub fn on(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self + use<> {
        let path = path.to_path_buf();
        move |source| Self { op, path, source }
    }
}

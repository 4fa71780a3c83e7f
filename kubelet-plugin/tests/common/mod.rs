//! What the netns tests share: a network namespace of the test's own.

use std::future::Future;

/// Runs `body` on a thread of its own that first unshares into a new network namespace (so every
/// netlink socket opened in `body` sees only what the test makes there), on a current-thread
/// runtime; a panic in `body` fails the test.
pub fn in_new_netns<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(body());
    })
    .join()
    .expect("netns test thread");
}

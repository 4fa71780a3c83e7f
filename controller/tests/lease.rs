//! Leader election against the test API server.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use multinic_controller::lease::LeaseLock;
use multinic_testkit::FakeApiServer;

#[tokio::test]
async fn one_holder_at_a_time_and_takeover_after_expiry() {
    let server = FakeApiServer::start().await;
    let lock = |id: &str| {
        LeaseLock::new(
            server.client(),
            "multinic-system",
            "multinic-controller",
            id,
            Duration::from_secs(15),
        )
    };
    let (a, b) = (lock("a"), lock("b"));
    let t0 = Timestamp::now();
    assert!(a.try_acquire_or_renew(t0).await.unwrap(), "a takes the free lease");
    assert!(!b.try_acquire_or_renew(t0).await.unwrap(), "b must wait");
    let t1 = t0.checked_add(SignedDuration::from_secs(10)).unwrap();
    assert!(a.try_acquire_or_renew(t1).await.unwrap(), "a renews");
    assert!(!b.try_acquire_or_renew(t1).await.unwrap(), "renewed: still a's");
    // a stops renewing; 16 s after its last renewal the lease is b's.
    let t2 = t1.checked_add(SignedDuration::from_secs(16)).unwrap();
    assert!(
        b.try_acquire_or_renew(t2).await.unwrap(),
        "b takes over the expired lease"
    );
    assert!(!a.try_acquire_or_renew(t2).await.unwrap(), "a lost it");
    let lease = server
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("multinic-system"),
            "multinic-controller",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

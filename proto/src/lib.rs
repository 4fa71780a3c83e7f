//! gRPC APIs spoken between the kubelet and a DRA kubelet plugin, generated from our own `.proto` mirrors of
//! the upstream definitions in `k8s.io/kubelet/pkg/apis/...` (see `proto/` in this crate).
//!
//! The mirrors keep upstream's proto package names, service names, message names, field names and field
//! numbers, so they are wire-compatible with the kubelet. The tests in `tests/wire_contract.rs` pin that
//! contract down.
//!
//! | module                 | proto package                            | service             |
//! |------------------------|------------------------------------------|---------------------|
//! | [`dra::v1`]            | `k8s.io.kubelet.pkg.apis.dra.v1`         | `DRAPlugin`         |
//! | [`dra::v1beta1`]       | `k8s.io.kubelet.pkg.apis.dra.v1beta1`    | `DRAPlugin`         |
//! | [`registration`]       | `pluginregistration`                     | `Registration`      |
//! | [`health::v1`]         | `v1`                                     | `DRAResourceHealth` |
//! | [`health::v1alpha1`]   | `v1alpha1`                               | `DRAResourceHealth` |
//!
//! Each module contains the prost messages plus a tonic client (`*_client`) and server (`*_server`) module.

/// The kubelet DRA service `DRAPlugin` (NodePrepareResources / NodeUnprepareResources).
pub mod dra {
    /// `k8s.io.kubelet.pkg.apis.dra.v1`; advertise it in registration as [`crate::DRA_PLUGIN_SERVICE_V1`].
    #[allow(clippy::all, clippy::pedantic, clippy::nursery, missing_docs, rustdoc::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/k8s.io.kubelet.pkg.apis.dra.v1.rs"));
    }

    /// `k8s.io.kubelet.pkg.apis.dra.v1beta1` (for older kubelets); advertise it in registration as
    /// [`crate::DRA_PLUGIN_SERVICE_V1BETA1`]. Same messages and field numbers as [`v1`].
    #[allow(clippy::all, clippy::pedantic, clippy::nursery, missing_docs, rustdoc::all)]
    pub mod v1beta1 {
        include!(concat!(env!("OUT_DIR"), "/k8s.io.kubelet.pkg.apis.dra.v1beta1.rs"));
    }
}

/// Kubelet plugin registration (proto package `pluginregistration`, service `Registration`), served by the
/// plugin on a socket in the kubelet's `plugins_registry` directory.
#[allow(clippy::all, clippy::pedantic, clippy::nursery, missing_docs, rustdoc::all)]
pub mod registration {
    include!(concat!(env!("OUT_DIR"), "/pluginregistration.rs"));
}

/// The DRA device health service `DRAResourceHealth` (server-streaming `NodeWatchResources`).
pub mod health {
    /// Proto package `v1`; advertise it in registration as [`crate::DRA_RESOURCE_HEALTH_SERVICE_V1`].
    #[allow(clippy::all, clippy::pedantic, clippy::nursery, missing_docs, rustdoc::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/v1.rs"));
    }

    /// Proto package `v1alpha1` (kubelets that predate health `v1`); advertise it in registration as
    /// [`crate::DRA_RESOURCE_HEALTH_SERVICE_V1ALPHA1`]. Identical to [`v1`] on the wire; older kubelets
    /// ignore the later-added `health_check_timeout_seconds` (4) and `message` (5) fields.
    #[allow(clippy::all, clippy::pedantic, clippy::nursery, missing_docs, rustdoc::all)]
    pub mod v1alpha1 {
        include!(concat!(env!("OUT_DIR"), "/v1alpha1.rs"));
    }
}

/// `PluginInfo.type` for DRA drivers.
pub const DRA_PLUGIN_TYPE: &str = "DRAPlugin";

/// `PluginInfo.supported_versions` entry for the `DRAPlugin` service of [`dra::v1`].
pub const DRA_PLUGIN_SERVICE_V1: &str = "v1.DRAPlugin";

/// `PluginInfo.supported_versions` entry for the `DRAPlugin` service of [`dra::v1beta1`].
pub const DRA_PLUGIN_SERVICE_V1BETA1: &str = "v1beta1.DRAPlugin";

/// `PluginInfo.supported_versions` entry for the `DRAResourceHealth` service of [`health::v1`]. Preferred by
/// kubelets that know it.
pub const DRA_RESOURCE_HEALTH_SERVICE_V1: &str = "v1.DRAResourceHealth";

/// `PluginInfo.supported_versions` entry for the `DRAResourceHealth` service of [`health::v1alpha1`], the
/// only health version understood by older kubelets.
pub const DRA_RESOURCE_HEALTH_SERVICE_V1ALPHA1: &str = "v1alpha1.DRAResourceHealth";

/// Encoded `google.protobuf.FileDescriptorSet` of all `.proto` files compiled into this crate (decode it with
/// `prost_types::FileDescriptorSet`), e.g. for tests or gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_names_match_generated_services() {
        // The registration names are "<last proto package segment>.<service>".
        let short = |full: &str| {
            let mut parts = full.rsplitn(3, '.');
            let service = parts.next().unwrap();
            let version = parts.next().unwrap();
            format!("{version}.{service}")
        };
        assert_eq!(short(dra::v1::dra_plugin_server::SERVICE_NAME), DRA_PLUGIN_SERVICE_V1);
        assert_eq!(
            short(dra::v1beta1::dra_plugin_server::SERVICE_NAME),
            DRA_PLUGIN_SERVICE_V1BETA1
        );
        assert_eq!(
            health::v1::dra_resource_health_server::SERVICE_NAME,
            DRA_RESOURCE_HEALTH_SERVICE_V1
        );
        assert_eq!(
            health::v1alpha1::dra_resource_health_server::SERVICE_NAME,
            DRA_RESOURCE_HEALTH_SERVICE_V1ALPHA1
        );
        assert_eq!(
            registration::registration_server::SERVICE_NAME,
            "pluginregistration.Registration"
        );
        assert_eq!(DRA_PLUGIN_TYPE, "DRAPlugin");
    }
}

//! Names and default paths (design.md §2), and how a link-layer address is written.

/// The DRA driver name; also the attribute domain and the CRD group.
pub const DRIVER_NAME: &str = "multinic.dev";
/// API version of our CRDs and of the opaque config.
pub const API_VERSION: &str = "multinic.dev/v1alpha1";
/// Directory of the DRA socket.
pub const DEFAULT_PLUGIN_DIR: &str = "/var/lib/kubelet/plugins/multinic.dev";
/// Directory the kubelet watches for registration sockets.
pub const DEFAULT_REGISTRY_DIR: &str = "/var/lib/kubelet/plugins_registry";
/// State directory: plans and leases.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/multinic";
/// Default sysfs mount point.
pub const DEFAULT_SYSFS_ROOT: &str = "/sys";
/// Default address of `/metrics` and `/healthz`.
pub const DEFAULT_METRICS_ADDRESS: &str = "0.0.0.0:9177";
/// Field manager used for server-side apply.
pub const FIELD_MANAGER: &str = "multinic.dev";
/// Standard attribute for PCIe root complex alignment across drivers.
pub const PCIE_ROOT_ATTRIBUTE: &str = "resource.kubernetes.io/pcieRoot";

/// A link-layer address as it is written everywhere (slices, plans, CNI results): lowercase hex
/// bytes joined by ':', `aa:bb:cc:dd:ee:ff`; a 20-byte InfiniBand address the same way.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_lowercase_colon_separated() {
        assert_eq!(format_mac(&[0x02, 0xAB, 0, 0x10, 0xff, 0x0c]), "02:ab:00:10:ff:0c");
        assert_eq!(format_mac(&[]), "");
    }
}

//! Fixtures shared by the plugin's integration tests.

use multinic_kubelet_plugin::inventory::{LinkType, Nic, PciFacts, RdmaFacts};

/// A RoCE NIC on rail `rail`: PCI parent (ordering = rail), MAC `b8:3f:d2:00:00:<rail>`, RDMA device
/// `mlx5_<rail>` with its verbs node (so prepare writes a CDI spec).
pub fn roce_nic(rail: usize) -> Nic {
    Nic {
        if_name: format!("ens{}np0", 108 - rail),
        if_index: 10 + rail as u32,
        mac: Some(format!("b8:3f:d2:00:00:{rail:02x}")),
        mtu: 9000,
        speed_mbps: Some(400_000),
        link_type: LinkType::Ethernet,
        pci: Some(PciFacts {
            address: format!("0000:{:02x}:00.0", 0x16 + 0x20 * rail),
            vendor: 0x15b3,
            device: 0x1021,
            driver: Some("mlx5_core".into()),
            ..Default::default()
        }),
        rdma: Some(RdmaFacts {
            device: format!("mlx5_{rail}"),
            link_layer: Some("Ethernet".into()),
            uverbs: Some(format!("uverbs{rail}")),
        }),
        virtual_device: false,
        ipv4: None,
        pf_name: None,
    }
}

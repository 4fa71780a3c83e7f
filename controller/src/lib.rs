//! multinic-controller: turns `MultiNicNetwork` objects into DeviceClasses and per-node
//! `NicNodeBlocks`. Not implemented in this version; the CRD types live in `multinic_api::crd`
//! and the block arithmetic in `multinic_api::rails`.

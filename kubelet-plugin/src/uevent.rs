//! Kernel uevents for inventory changes that rtnetlink does not carry: an RDMA device added or
//! removed (`infiniband`, `infiniband_verbs`) and a PCI function bound to or unbound from a driver
//! (`pci` bind/unbind/add/remove). Read straight from the kernel's `NETLINK_KOBJECT_UEVENT`
//! multicast group, so no udevd is needed (nodes and the e2e/vm guest may run none; libudev's
//! monitor only sees what udevd re-broadcasts).
//!
//! Hook: `republish_events()` yields `()` per relevant event, the same item type as the rtnetlink
//! event stream that `publish::run_publish_loop` takes; merge the two (e.g.
//! `futures::stream::select(rtnetlink_events, uevent::republish_events()?)`) where the plugin's
//! `main` builds that stream, and the loop's debounce and resync apply unchanged.

use futures::Stream;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_KOBJECT_UEVENT};

/// The kernel's uevent multicast group (libudev's re-broadcast is group 2).
const KERNEL_GROUP: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum UeventError {
    #[error("opening the kernel uevent socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("reading a kernel uevent: {0}")]
    Recv(#[source] std::io::Error),
    #[error("starting the uevent reader thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// One kernel uevent, as far as the inventory cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: String,
    pub driver: Option<String>,
}

/// Parses a kernel uevent datagram: `<action>@<devpath>\0KEY=VALUE\0...`. Messages in libudev's
/// format (they start with `libudev\0`) and anything without ACTION/DEVPATH/SUBSYSTEM give `None`.
pub fn parse(buf: &[u8]) -> Option<Uevent> {
    let mut fields = buf.split(|b| *b == 0).filter(|f| !f.is_empty());
    let header = std::str::from_utf8(fields.next()?).ok()?;
    if !header.contains('@') {
        return None;
    }
    let mut ev = Uevent::default();
    for field in fields {
        let Ok(text) = std::str::from_utf8(field) else {
            continue;
        };
        let Some((key, value)) = text.split_once('=') else {
            continue;
        };
        match key {
            "ACTION" => ev.action = value.to_string(),
            "DEVPATH" => ev.devpath = value.to_string(),
            "SUBSYSTEM" => ev.subsystem = value.to_string(),
            "DRIVER" => ev.driver = Some(value.to_string()),
            _ => {}
        }
    }
    (!ev.action.is_empty() && !ev.devpath.is_empty() && !ev.subsystem.is_empty()).then_some(ev)
}

/// Whether the event can change what the inventory publishes (and rtnetlink would not say so).
pub fn is_inventory_change(ev: &Uevent) -> bool {
    match ev.subsystem.as_str() {
        "infiniband" | "infiniband_verbs" => matches!(ev.action.as_str(), "add" | "remove"),
        "pci" => matches!(ev.action.as_str(), "bind" | "unbind" | "add" | "remove"),
        _ => false,
    }
}

/// A socket on the kernel's uevent group.
pub struct UeventSocket(Socket);

impl UeventSocket {
    pub fn open() -> Result<Self, UeventError> {
        let mut socket = Socket::new(NETLINK_KOBJECT_UEVENT).map_err(UeventError::Open)?;
        socket
            .bind(&SocketAddr::new(0, KERNEL_GROUP))
            .map_err(UeventError::Open)?;
        // Bursts (VF creation, hot-plug) come in many messages at once.
        let _ = socket.set_rx_buf_sz(1 << 20);
        Ok(Self(socket))
    }

    /// Blocks for the next datagram; `None` when it is not a kernel uevent we can parse.
    pub fn recv(&self) -> Result<Option<Uevent>, UeventError> {
        let (buf, _) = self.0.recv_from_full().map_err(UeventError::Recv)?;
        Ok(parse(&buf))
    }
}

/// `()` for every inventory-relevant uevent, read on a helper thread (the socket is blocking).
/// The thread ends at the first event after the stream is dropped, or on a read error.
pub fn republish_events() -> Result<impl Stream<Item = ()> + Unpin, UeventError> {
    let socket = UeventSocket::open()?;
    let (tx, rx) = futures::channel::mpsc::unbounded();
    std::thread::Builder::new()
        .name("uevents".into())
        .spawn(move || {
            loop {
                match socket.recv() {
                    Ok(Some(ev)) if is_inventory_change(&ev) => {
                        tracing::debug!(action = %ev.action, subsystem = %ev.subsystem, devpath = %ev.devpath, "uevent");
                        if tx.unbounded_send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "kernel uevents stopped; RDMA and driver changes wait for the resync");
                        return;
                    }
                }
            }
        })
        .map_err(UeventError::Thread)?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(parts: &[&str]) -> Vec<u8> {
        parts.iter().flat_map(|p| p.bytes().chain([0])).collect()
    }

    #[test]
    fn parses_kernel_uevents() {
        let ev = parse(&msg(&[
            "add@/devices/virtual/infiniband/rxe0",
            "ACTION=add",
            "DEVPATH=/devices/virtual/infiniband/rxe0",
            "SUBSYSTEM=infiniband",
            "NAME=rxe0",
            "SEQNUM=1234",
        ]))
        .unwrap();
        assert_eq!(
            ev,
            Uevent {
                action: "add".into(),
                devpath: "/devices/virtual/infiniband/rxe0".into(),
                subsystem: "infiniband".into(),
                driver: None,
            }
        );
        assert!(is_inventory_change(&ev));
        let bind = parse(&msg(&[
            "bind@/devices/pci0000:80/0000:80:04.0/0000:85:00.0",
            "ACTION=bind",
            "DEVPATH=/devices/pci0000:80/0000:80:04.0/0000:85:00.0",
            "SUBSYSTEM=pci",
            "DRIVER=igb",
        ]))
        .unwrap();
        assert_eq!(bind.driver.as_deref(), Some("igb"));
        assert!(is_inventory_change(&bind));
    }

    #[test]
    fn ignores_what_does_not_change_the_inventory() {
        let net = parse(&msg(&[
            "add@/devices/virtual/net/veth0",
            "ACTION=add",
            "DEVPATH=/devices/virtual/net/veth0",
            "SUBSYSTEM=net",
        ]))
        .unwrap();
        assert!(!is_inventory_change(&net), "netdevs come through rtnetlink");
        let change = Uevent {
            action: "change".into(),
            devpath: "/devices/x".into(),
            subsystem: "pci".into(),
            driver: None,
        };
        assert!(!is_inventory_change(&change));
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe"), None, "libudev's format");
        assert_eq!(parse(&msg(&["add@/x", "ACTION=add"])), None, "no DEVPATH/SUBSYSTEM");
        assert_eq!(parse(b""), None);
        assert_eq!(parse(&[0xff, 0xfe, 0]), None);
    }
}

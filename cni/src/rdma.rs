//! RDMA devices and network namespaces. In the kernel's default "shared" mode every RDMA device
//! is visible in every netns and nothing is to be done. In "exclusive" mode (`rdma system set
//! netns exclusive`) an RDMA device is visible only in its own netns, and moving its netdev does
//! not move it: the CNI moves it into the pod before the netdev (so a device the kernel cannot
//! move, like soft-RoCE, fails the ADD with nothing touched) and back to the host on DEL. When a
//! pod netns is destroyed the kernel returns its RDMA devices to the initial netns by itself.
//!
//! Wire facts from the kernel's `include/uapi/rdma/rdma_netlink.h` (and `linux/netlink.h`):
//! protocol `NETLINK_RDMA` 20; message type `RDMA_NL_GET_TYPE(client, op)` = client << 10 | op
//! with client `RDMA_NL_NLDEV` 5 and ops `RDMA_NLDEV_CMD_GET` 1, `_SET` 2, `_SYS_GET` 6;
//! attributes `RDMA_NLDEV_ATTR_DEV_INDEX` 1 (u32), `_DEV_NAME` 2 (NUL-terminated string),
//! `RDMA_NLDEV_SYS_ATTR_NETNS_MODE` 66 (u8: 1 shared, 0 exclusive), `RDMA_NLDEV_NET_NS_FD` 68
//! (u32). Messages are a `nlmsghdr` followed by netlink attributes, no family header.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_RDMA};

const NLDEV: u16 = 5;
const CMD_GET: u16 = 1;
const CMD_SET: u16 = 2;
const CMD_SYS_GET: u16 = 6;
const ATTR_DEV_INDEX: u16 = 1;
const ATTR_DEV_NAME: u16 = 2;
const ATTR_NETNS_MODE: u16 = 66;
const ATTR_NET_NS_FD: u16 = 68;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const HEADER: usize = 16;
/// Replies larger than this are refused (a device list is a few hundred bytes per device).
const MAX_REPLY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    #[error("RDMA netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("RDMA netlink {what}: the kernel answered {}", io::Error::from_raw_os_error(*errno))]
    Kernel { what: String, errno: i32 },
    #[error("RDMA netlink {what}: malformed reply ({why})")]
    Malformed { what: String, why: &'static str },
    #[error("RDMA device {0} is not in this network namespace")]
    NoDevice(String),
}

fn msg_type(op: u16) -> u16 {
    (NLDEV << 10) | op
}

/// Pure: one request, attributes as (type, payload).
pub fn encode(seq: u32, op: u16, flags: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER];
    for (ty, payload) in attrs {
        let len = 4 + payload.len();
        buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(payload);
        buf.resize(buf.len().next_multiple_of(4), 0);
    }
    let total = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    buf[0..4].copy_from_slice(&total.to_ne_bytes());
    buf[4..6].copy_from_slice(&msg_type(op).to_ne_bytes());
    buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    buf
}

/// One message of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A data message's attributes.
    Attrs(Vec<(u16, Vec<u8>)>),
    /// `NLMSG_ERROR`: 0 is an acknowledgement, else a negative errno.
    Error(i32),
    Done,
}

/// Pure: the messages in one datagram.
pub fn decode(mut buf: &[u8]) -> Result<Vec<Reply>, &'static str> {
    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|s| u16::from_ne_bytes([s[0], s[1]]));
    let u32_at = |b: &[u8], i: usize| b.get(i..i + 4).map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]));
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = u32_at(buf, 0).ok_or("short header")? as usize;
        let ty = u16_at(buf, 4).ok_or("short header")?;
        if len < HEADER || len > buf.len() {
            return Err("bad message length");
        }
        let body = &buf[HEADER..len];
        out.push(match ty {
            NLMSG_ERROR => Reply::Error(u32_at(body, 0).ok_or("short error message")? as i32),
            NLMSG_DONE => Reply::Done,
            _ => {
                let mut attrs = Vec::new();
                let mut rest = body;
                while rest.len() >= 4 {
                    let alen = usize::from(u16_at(rest, 0).ok_or("short attribute")?);
                    let aty = u16_at(rest, 2).ok_or("short attribute")? & 0x3fff;
                    if alen < 4 || alen > rest.len() {
                        return Err("bad attribute length");
                    }
                    attrs.push((aty, rest[4..alen].to_vec()));
                    rest = rest.get(alen.next_multiple_of(4)..).unwrap_or(&[]);
                }
                Reply::Attrs(attrs)
            }
        });
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(out)
}

fn attr(attrs: &[(u16, Vec<u8>)], ty: u16) -> Option<&[u8]> {
    attrs.iter().find(|(t, _)| *t == ty).map(|(_, v)| v.as_slice())
}

/// An RDMA netlink socket in one network namespace.
pub struct RdmaNl {
    socket: Socket,
    seq: u32,
}

impl RdmaNl {
    /// A socket in `ns` (made on a helper thread that enters it; the socket keeps its netns).
    pub fn open_in(ns: &File) -> Result<Self, RdmaError> {
        let fd = ns.as_fd();
        let made = std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                let mut socket = Socket::new(NETLINK_RDMA)?;
                socket.bind_auto()?;
                socket.connect(&SocketAddr::new(0, 0))?;
                Ok::<_, io::Error>(socket)
            })
            .join()
        });
        let socket = made
            .map_err(|_| RdmaError::Socket(io::Error::other("netns helper thread panicked")))?
            .map_err(RdmaError::Socket)?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sends one request and collects its reply messages up to the ack, `NLMSG_DONE` or the
    /// single answer of a non-dump request.
    fn call(&mut self, what: &str, op: u16, flags: u16, attrs: &[(u16, &[u8])]) -> Result<Vec<Reply>, RdmaError> {
        self.seq = self.seq.wrapping_add(1);
        self.socket
            .send(&encode(self.seq, op, flags, attrs), 0)
            .map_err(RdmaError::Socket)?;
        let mut replies = Vec::new();
        let mut read = 0usize;
        loop {
            let (buf, _) = self.socket.recv_from_full().map_err(RdmaError::Socket)?;
            read += buf.len();
            if read > MAX_REPLY {
                return Err(RdmaError::Malformed {
                    what: what.into(),
                    why: "reply too large",
                });
            }
            let msgs = decode(&buf).map_err(|why| RdmaError::Malformed { what: what.into(), why })?;
            for m in msgs {
                match m {
                    Reply::Error(0) | Reply::Done => return Ok(replies),
                    Reply::Error(e) => {
                        return Err(RdmaError::Kernel {
                            what: what.into(),
                            errno: -e,
                        });
                    }
                    Reply::Attrs(a) => {
                        replies.push(Reply::Attrs(a));
                        if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
                            return Ok(replies);
                        }
                    }
                }
            }
        }
    }

    /// Whether the RDMA subsystem is in exclusive netns mode.
    pub fn exclusive(&mut self) -> Result<bool, RdmaError> {
        let what = "get the netns mode";
        let replies = self.call(what, CMD_SYS_GET, 0, &[])?;
        let mode = replies.iter().find_map(|r| match r {
            Reply::Attrs(a) => attr(a, ATTR_NETNS_MODE).and_then(|v| v.first().copied()),
            _ => None,
        });
        mode.map(|m| m == 0).ok_or(RdmaError::Malformed {
            what: what.into(),
            why: "no netns mode attribute",
        })
    }

    /// The index of RDMA device `name` in this netns.
    pub fn index_of(&mut self, name: &str) -> Result<u32, RdmaError> {
        let replies = self.call("list devices", CMD_GET, NLM_F_DUMP, &[])?;
        replies
            .iter()
            .find_map(|r| match r {
                Reply::Attrs(a) => {
                    let n = attr(a, ATTR_DEV_NAME)?;
                    let n = n.strip_suffix(&[0]).unwrap_or(n);
                    let i = attr(a, ATTR_DEV_INDEX)?;
                    (n == name.as_bytes() && i.len() == 4).then(|| u32::from_ne_bytes([i[0], i[1], i[2], i[3]]))
                }
                _ => None,
            })
            .ok_or_else(|| RdmaError::NoDevice(name.to_string()))
    }

    /// Moves RDMA device `name` (of this netns) into the netns of `target`.
    pub fn move_to(&mut self, name: &str, target: &File) -> Result<(), RdmaError> {
        let index = self.index_of(name)?;
        let fd = u32::try_from(target.as_raw_fd()).map_err(|_| RdmaError::Socket(io::Error::other("negative fd")))?;
        self.call(
            &format!("move {name} to another netns"),
            CMD_SET,
            NLM_F_ACK,
            &[
                (ATTR_DEV_INDEX, &index.to_ne_bytes()),
                (ATTR_NET_NS_FD, &fd.to_ne_bytes()),
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_laid_out_as_the_kernel_reads_them() {
        let buf = encode(
            7,
            CMD_SET,
            NLM_F_ACK,
            &[(ATTR_DEV_INDEX, &3u32.to_ne_bytes()), (ATTR_DEV_NAME, b"rxe0\0")],
        );
        // 16 header + 8 (index) + 12 (4 + 5 padded to 8).
        assert_eq!(buf.len(), 36);
        assert_eq!(u32::from_ne_bytes(buf[0..4].try_into().unwrap()), 36);
        assert_eq!(
            u16::from_ne_bytes(buf[4..6].try_into().unwrap()),
            5122,
            "RDMA_NL_GET_TYPE(NLDEV, SET)"
        );
        assert_eq!(
            u16::from_ne_bytes(buf[6..8].try_into().unwrap()),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes(buf[8..12].try_into().unwrap()), 7);
        assert_eq!(&buf[16..20], &[8, 0, 1, 0][..], "len 8, DEV_INDEX");
        assert_eq!(&buf[24..28], &[9, 0, 2, 0][..], "len 9, DEV_NAME");
        assert_eq!(&buf[28..33], b"rxe0\0");
        assert_eq!(&buf[33..36], &[0, 0, 0][..], "padding");
    }

    #[test]
    fn replies_decode_and_garbage_is_refused() {
        // A device message (index 2, name "mlx5_0"), then DONE, in one datagram.
        let mut dev = encode(
            1,
            CMD_GET,
            0,
            &[(ATTR_DEV_INDEX, &2u32.to_ne_bytes()), (ATTR_DEV_NAME, b"mlx5_0\0")],
        );
        let mut done = encode(1, 0, 0, &[(0, &0u32.to_ne_bytes())]);
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        dev.append(&mut done);
        let got = decode(&dev).unwrap();
        assert_eq!(got.len(), 2);
        let Reply::Attrs(a) = &got[0] else { panic!("{got:?}") };
        assert_eq!(attr(a, ATTR_DEV_INDEX), Some(&2u32.to_ne_bytes()[..]));
        assert_eq!(attr(a, ATTR_DEV_NAME), Some(&b"mlx5_0\0"[..]));
        assert_eq!(got[1], Reply::Done);

        // NLMSG_ERROR: the errno, then the request's header.
        let mut err = vec![0u8; HEADER];
        err.extend_from_slice(&(-95i32).to_ne_bytes());
        err.extend_from_slice(&[0u8; HEADER]);
        let len = u32::try_from(err.len()).unwrap();
        err[0..4].copy_from_slice(&len.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(decode(&err).unwrap(), [Reply::Error(-95)]);

        assert!(decode(&[1, 2, 3]).is_err(), "short header");
        let mut bad = encode(1, CMD_GET, 0, &[]);
        bad[0..4].copy_from_slice(&99u32.to_ne_bytes());
        assert!(decode(&bad).is_err(), "length past the end");
        let mut bad_attr = encode(1, CMD_GET, 0, &[(ATTR_DEV_INDEX, &2u32.to_ne_bytes())]);
        bad_attr[16..18].copy_from_slice(&200u16.to_ne_bytes());
        assert!(decode(&bad_attr).is_err(), "attribute past the end");
    }
}

//! The two raw bpf(2) calls aya 0.14 does not expose: opening a pinned object
//! as a plain fd, and reading the ifindex of an XDP link (aya's `LinkInfo`
//! keeps the `bpf_link_info` union private).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `BPF_LINK_TYPE_XDP` in `enum bpf_link_type`.
pub const BPF_LINK_TYPE_XDP: u32 = 6;

/// `bpf_link_info`, as far as it matters here: type, id, prog_id, then the
/// union (8-byte aligned, so it starts at byte 16) whose `xdp` member is one
/// `__u32 ifindex`. The buffer is larger than the kernel's struct; the kernel
/// copies only what it knows and requires the tail to be zero (it is).
#[repr(C, align(8))]
struct LinkInfoBuf {
    type_: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    union_first_u32: u32,
    _rest: [u8; 108],
}

/// What the kernel says about a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// For an XDP link: the interface it is attached to; 0 once severed
    /// (interface deleted, or `bpftool link detach`).
    pub xdp_ifindex: u32,
}

fn bpf(cmd: libc::c_long, attr: &mut [u64], len: usize) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable buffer of at least `len` bytes that
    // outlives the call; the kernel reads and writes only within `len`.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), len) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// BPF_OBJ_GET: an fd for whatever is pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in pin path"))?;
    // union bpf_attr { __aligned_u64 pathname; __u32 bpf_fd; __u32 file_flags; ... }
    let mut attr = [0u64; 4];
    attr[0] = c.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr, 32)?;
    // SAFETY: on success BPF_OBJ_GET returns a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_OBJ_GET_INFO_BY_FD on a link fd.
pub fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut info = LinkInfoBuf {
        type_: 0,
        id: 0,
        prog_id: 0,
        _pad: 0,
        union_first_u32: 0,
        _rest: [0; 108],
    };
    // union bpf_attr { struct { __u32 bpf_fd; __u32 info_len; __aligned_u64 info; } info; }
    let mut attr = [0u64; 2];
    attr[0] = u64::from(fd.as_raw_fd() as u32) | (size_of::<LinkInfoBuf>() as u64) << 32;
    attr[1] = (&raw mut info) as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr, 16)?;
    Ok(LinkInfo {
        link_type: info.type_,
        id: info.id,
        prog_id: info.prog_id,
        xdp_ifindex: if info.type_ == BPF_LINK_TYPE_XDP {
            info.union_first_u32
        } else {
            0
        },
    })
}

/// The link pinned at `path`, if it is one.
pub fn pinned_link_info(path: &Path) -> io::Result<LinkInfo> {
    let fd = obj_get(path)?;
    use std::os::fd::AsFd;
    link_info(fd.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_info_layout() {
        assert_eq!(size_of::<LinkInfoBuf>(), 128);
        assert_eq!(std::mem::offset_of!(LinkInfoBuf, union_first_u32), 16);
    }
}

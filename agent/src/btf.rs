//! Just enough of a BTF reader to find a struct member's byte offset in the
//! running kernel (/sys/kernel/btf/vmlinux). Rust eBPF has no CO-RE, so the
//! few kernel struct fields a probe reads get their offsets from here at
//! startup and are passed in as globals. aya's Btf type does not expose
//! struct members, hence this small parser (format: Documentation/bpf/btf.rst).

use agent_common::task::TaskOffsets;
use anyhow::{Context, Result, bail};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// Byte offset of `member` in `struct name`, from raw BTF bytes.
pub fn member_offset(btf: &[u8], name: &str, member: &str) -> Result<u32> {
    let u16_at = |o: usize| btf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        btf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if u16_at(0) != Some(MAGIC) {
        bail!("not little-endian BTF (bad magic)");
    }
    let hdr_len = u32_at(4).context("short header")? as usize;
    let (type_off, type_len) = (
        u32_at(8).context("short header")? as usize,
        u32_at(12).context("short header")? as usize,
    );
    let str_off = u32_at(16).context("short header")? as usize;
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;
    let name_at = |off: u32| -> &[u8] {
        let start = strings + off as usize;
        let rest = btf.get(start..).unwrap_or(&[]);
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    };
    let mut pos = types;
    while pos + 12 <= types + type_len {
        let name_off = u32_at(pos).context("truncated type")?;
        let info = u32_at(pos + 4).context("truncated type")?;
        let (kind, vlen, kind_flag) = (
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
        );
        pos += 12;
        if (kind == KIND_STRUCT || kind == KIND_UNION) && name_at(name_off) == name.as_bytes() {
            for i in 0..vlen {
                let m = pos + i * 12;
                if name_at(u32_at(m).context("truncated member")?) == member.as_bytes() {
                    let raw = u32_at(m + 8).context("truncated member")?;
                    let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
                    return Ok(bits / 8);
                }
            }
            bail!("struct {name} has no member {member}");
        }
        pos += extra_bytes(kind, vlen).with_context(|| format!("unknown BTF kind {kind}"))?;
    }
    bail!("no struct {name} in BTF")
}

/// Bytes of kind-specific data after a type's 12-byte header.
fn extra_bytes(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 => 4,                    // INT
        2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        3 => 12,                   // ARRAY
        4 | 5 => vlen * 12,        // STRUCT, UNION members
        6 => vlen * 8,             // ENUM
        13 => vlen * 8,            // FUNC_PROTO params
        14 => 4,                   // VAR
        15 => vlen * 12,           // DATASEC
        17 => 4,                   // DECL_TAG
        19 => vlen * 12,           // ENUM64
        _ => return None,
    })
}

const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The running kernel's BTF (megabytes), read once at start-up for all the
/// offsets the probes need, then dropped.
pub struct KernelBtf {
    bytes: Vec<u8>,
}

impl KernelBtf {
    pub fn read() -> Result<KernelBtf> {
        let bytes = std::fs::read(KERNEL_BTF)
            .with_context(|| format!("this kernel exposes no BTF ({KERNEL_BTF})"))?;
        Ok(KernelBtf { bytes })
    }

    /// Offset of `member` in `struct name` of the running kernel.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        member_offset(&self.bytes, name, member).with_context(|| format!("reading {KERNEL_BTF}"))
    }
}

/// `task_struct` offsets from kernel BTF. The kernel reads pid and tgid in one
/// 8-byte read, so they must be adjacent (they have been for decades).
pub(crate) fn task_offsets(btf: Result<&KernelBtf, &anyhow::Error>) -> Result<TaskOffsets> {
    let btf = btf.map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let pid = btf.member_offset("task_struct", "pid")?;
    let tgid = btf.member_offset("task_struct", "tgid")?;
    if tgid != pid + 4 {
        bail!("task_struct.tgid ({tgid}) does not follow pid ({pid}) on this kernel");
    }
    let chain = [
        ("task_struct", "cgroups"),
        ("css_set", "dfl_cgrp"),
        ("cgroup", "kn"),
        ("kernfs_node", "id"),
    ]
    .map(|(s, m)| btf.member_offset(s, m));
    let [cgroups, dfl_cgrp, kn, kn_id] = match chain {
        [Ok(a), Ok(b), Ok(c), Ok(d)] => [a, b, c, d],
        _ => {
            // Only per-container series need it; say so if asked.
            tracing::debug!(
                "no task -> cgroup id chain in kernel BTF: run-queue waits and OOM kills stay node-wide"
            );
            [0; 4]
        }
    };
    let comm = btf.member_offset("task_struct", "comm")?;
    Ok(TaskOffsets {
        pid,
        comm,
        cgroups,
        dfl_cgrp,
        kn,
        kn_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: INT "int", then STRUCT "sock" { int a @0; int sk_err @ bit 2272 }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0sock\0a\0sk_err\0";
        let mut types = Vec::new();
        let mut push = |v: u32| types.extend_from_slice(&v.to_le_bytes());
        push(1); // name "int"
        push(1 << 24); // INT
        push(4); // size
        push(32); // INT encoding data
        push(5); // name "sock"
        push((4 << 24) | 2); // STRUCT, 2 members
        push(784);
        push(10); // "a"
        push(1);
        push(0);
        push(12); // "sk_err"
        push(1);
        push(2272);
        let hdr_len = 24u32;
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [
            hdr_len,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn finds_member_offsets() {
        assert_eq!(member_offset(&blob(), "sock", "sk_err").unwrap(), 284);
        assert_eq!(member_offset(&blob(), "sock", "a").unwrap(), 0);
    }

    #[test]
    fn clear_errors() {
        let e = member_offset(&blob(), "sock", "nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no member nope"), "{e}");
        let e = member_offset(&blob(), "task_struct", "pid")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no struct task_struct"), "{e}");
        assert!(member_offset(b"garbage", "sock", "sk_err").is_err());
        let mut truncated = blob();
        truncated.truncate(40);
        assert!(member_offset(&truncated, "sock", "sk_err").is_err());
    }

    #[test]
    fn running_kernel_sock_sk_err() {
        // Must agree with `bpftool btf dump`: on 6.18 x86_64 it is bit 2272.
        let btf = KernelBtf::read().expect("this machine has BTF");
        let off = btf.member_offset("sock", "sk_err").unwrap();
        assert!(off > 0 && off < 1024, "{off}");
    }

    #[test]
    fn this_kernel_has_adjacent_pid_and_tgid_and_a_comm() {
        let btf = KernelBtf::read().expect("BTF on this machine");
        let off = task_offsets(Ok(&btf)).unwrap();
        assert!(off.pid > 0 && off.comm > 0);
    }
}

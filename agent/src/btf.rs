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

const KIND_PTR: u32 = 2;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;

/// One type of a BTF blob: its kind, name, `size`/`type` word, member or
/// parameter count and where its kind-specific data starts.
#[derive(Clone, Copy)]
struct Type {
    kind: u32,
    name_off: u32,
    size_or_type: u32,
    vlen: usize,
    kind_flag: bool,
    data: usize,
}

/// The types of a raw BTF blob, in id order (id 1 is `types[0]`).
struct Types<'a> {
    btf: &'a [u8],
    strings: usize,
    types: Vec<Type>,
}

fn u32_at(btf: &[u8], o: usize) -> Option<u32> {
    btf.get(o..o + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> Types<'a> {
    fn parse(btf: &'a [u8]) -> Result<Types<'a>> {
        if btf.get(0..2) != Some(&MAGIC.to_le_bytes()[..]) {
            bail!("not little-endian BTF (bad magic)");
        }
        let word = |o: usize| u32_at(btf, o).context("short header");
        let hdr_len = word(4)? as usize;
        let (type_off, type_len, str_off) = (word(8)? as usize, word(12)? as usize, word(16)?);
        let start = hdr_len + type_off;
        let mut types = Vec::new();
        let mut pos = start;
        while pos + 12 <= start + type_len {
            let word = |o: usize| u32_at(btf, o).context("truncated type");
            let info = word(pos + 4)?;
            let t = Type {
                kind: (info >> 24) & 0x1f,
                name_off: word(pos)?,
                size_or_type: word(pos + 8)?,
                vlen: (info & 0xffff) as usize,
                kind_flag: info >> 31 == 1,
                data: pos + 12,
            };
            pos = t.data
                + extra_bytes(t.kind, t.vlen)
                    .with_context(|| format!("unknown BTF kind {}", t.kind))?;
            types.push(t);
        }
        Ok(Types {
            btf,
            strings: hdr_len + str_off as usize,
            types,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.btf.get(self.strings + off as usize..).unwrap_or(&[]);
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    fn named(&self, kinds: &[u32], name: &str) -> Option<&Type> {
        self.types
            .iter()
            .find(|t| kinds.contains(&t.kind) && self.name(t.name_off) == name.as_bytes())
    }

    fn by_id(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }
}

/// Byte offset of `member` in `struct name`, from raw BTF bytes.
pub fn member_offset(btf: &[u8], name: &str, member: &str) -> Result<u32> {
    let types = Types::parse(btf)?;
    let t = types
        .named(&[KIND_STRUCT, KIND_UNION], name)
        .with_context(|| format!("no struct {name} in BTF"))?;
    for i in 0..t.vlen {
        let m = t.data + i * 12;
        if types.name(u32_at(btf, m).context("truncated member")?) == member.as_bytes() {
            let raw = u32_at(btf, m + 8).context("truncated member")?;
            let bits = if t.kind_flag { raw & 0x00ff_ffff } else { raw };
            return Ok(bits / 8);
        }
    }
    bail!("struct {name} has no member {member}")
}

/// How many parameters the function behind the typedef `name` (a pointer to
/// a function prototype) takes, from raw BTF bytes. For a tracepoint's
/// `btf_trace_<name>`, the first is the probe's `void *` data, then the
/// tracepoint's arguments.
pub fn fn_typedef_params(btf: &[u8], name: &str) -> Result<usize> {
    let types = Types::parse(btf)?;
    let typedef = types
        .named(&[KIND_TYPEDEF], name)
        .with_context(|| format!("no typedef {name} in BTF"))?;
    let ptr = types.by_id(typedef.size_or_type);
    let proto = ptr
        .filter(|p| p.kind == KIND_PTR)
        .and_then(|p| types.by_id(p.size_or_type))
        .filter(|f| f.kind == KIND_FUNC_PROTO)
        .with_context(|| format!("typedef {name} is not a function pointer"))?;
    Ok(proto.vlen)
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

    /// The arguments the running kernel passes to tracepoint `name` (from
    /// its `btf_trace_<name>` typedef, without the probe's data pointer).
    pub fn tracepoint_args(&self, name: &str) -> Result<usize> {
        let params = fn_typedef_params(&self.bytes, &format!("btf_trace_{name}"))
            .with_context(|| format!("reading {KERNEL_BTF}"))?;
        Ok(params.saturating_sub(1))
    }

    /// Which of the typedefs `names` the running kernel has, in one pass.
    pub fn typedefs(&self, names: &[String]) -> Result<Vec<bool>> {
        let types = Types::parse(&self.bytes).with_context(|| format!("reading {KERNEL_BTF}"))?;
        Ok(names
            .iter()
            .map(|n| types.named(&[KIND_TYPEDEF], n).is_some())
            .collect())
    }

    /// Offset of the first of `members` that `struct name` has (fields the
    /// kernel renamed), with the name found.
    pub fn first_member_offset<'m>(
        &self,
        name: &str,
        members: &[&'m str],
    ) -> Result<(&'m str, u32)> {
        let mut last = None;
        for m in members {
            match self.member_offset(name, m) {
                Ok(off) => return Ok((m, off)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no member asked for")))
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
        let strings = b"\0int\0sock\0a\0sk_err\0btf_trace_x\0sockt\0";
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
        push(0); // id 3: PTR to 4
        push(2 << 24);
        push(4);
        push(0); // id 4: FUNC_PROTO returning void, 2 params (int, int)
        push((13 << 24) | 2);
        push(0);
        push(0);
        push(1);
        push(0);
        push(1);
        push(19); // id 5: TYPEDEF "btf_trace_x" -> 3
        push(8 << 24);
        push(3);
        push(31); // id 6: TYPEDEF "sockt" -> 2 (not a function pointer)
        push(8 << 24);
        push(2);
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
    fn counts_the_parameters_of_a_function_typedef() {
        assert_eq!(fn_typedef_params(&blob(), "btf_trace_x").unwrap(), 2);
        let e = fn_typedef_params(&blob(), "sockt").unwrap_err().to_string();
        assert!(e.contains("not a function pointer"), "{e}");
        let e = fn_typedef_params(&blob(), "nope").unwrap_err().to_string();
        assert!(e.contains("no typedef nope"), "{e}");
    }

    #[test]
    fn this_kernel_passes_prev_state_to_sched_switch() {
        // 6.18: sched_switch(preempt, prev, next, prev_state); 5.18 added the 4th.
        let btf = KernelBtf::read().expect("BTF on this machine");
        assert_eq!(btf.tracepoint_args("sched_switch").unwrap(), 4);
        let (name, off) = btf
            .first_member_offset("task_struct", &["__state", "state"])
            .unwrap();
        assert_eq!(name, "__state");
        assert!(off < 64, "{off}");
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

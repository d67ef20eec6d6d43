//! tracefs: find (or mount) it, and parse tracepoint `format` files so the eBPF
//! programs read record fields at this kernel's offsets (no CO-RE in Rust eBPF).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Where tracefs is looked for, in order.
pub const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs root, mounting tracefs at /sys/kernel/tracing if it is absent.
pub fn ensure_mounted() -> Result<PathBuf> {
    if let Some(root) = CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
    {
        return Ok(root.to_path_buf());
    }
    let target = Path::new(CANDIDATES[0]);
    mount_tracefs(target).with_context(|| {
        format!(
            "tracefs is not mounted and mounting it at {} failed; run as root or mount it \
             yourself: mount -t tracefs nodev {}",
            target.display(),
            target.display()
        )
    })?;
    tracing::info!(path = %target.display(), "tracefs was not mounted: mounted it");
    Ok(target.to_path_buf())
}

fn mount_tracefs(target: &Path) -> Result<()> {
    use std::ffi::CString;
    let target_c = CString::new(target.as_os_str().as_encoded_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target_c.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if !target.join("events").is_dir() {
        bail!(
            "mounted tracefs at {} but it has no events/",
            target.display()
        );
    }
    Ok(())
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Parses the `field:` lines of a tracefs `format` file.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines().filter_map(parse_field_line).collect()
}

fn parse_field_line(line: &str) -> Option<Field> {
    // "\tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;"
    let mut decl = None;
    let (mut offset, mut size) = (None, None);
    for part in line.split(';').map(str::trim) {
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d);
        } else if let Some(o) = part.strip_prefix("offset:") {
            offset = o.trim().parse().ok();
        } else if let Some(s) = part.strip_prefix("size:") {
            size = s.trim().parse().ok();
        }
    }
    let last = decl?.split_whitespace().last()?;
    let name = last.split('[').next()?.trim_start_matches('*');
    Some(Field {
        name: name.to_string(),
        offset: offset?,
        size: size?,
    })
}

/// Reads `events/<category>/<event>/format` and returns the named field.
pub fn field(root: &Path, category: &str, event: &str, name: &str) -> Result<Field> {
    find(&format(root, category, event)?, category, event, name)
}

/// Every field of `events/<category>/<event>/format`.
pub fn format(root: &Path, category: &str, event: &str) -> Result<Vec<Field>> {
    let path = format_path(root, category, event);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "this kernel has no tracepoint {category}/{event} ({})",
            path.display()
        )
    })?;
    Ok(parse_format(&text))
}

/// The named field among a tracepoint's `fields`.
pub fn find(fields: &[Field], category: &str, event: &str, name: &str) -> Result<Field> {
    fields
        .iter()
        .find(|f| f.name == name)
        .cloned()
        .with_context(|| format!("tracepoint {category}/{event} has no field `{name}`"))
}

fn format_path(root: &Path, category: &str, event: &str) -> PathBuf {
    root.join("events")
        .join(category)
        .join(event)
        .join("format")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_EXIT_6_18: &str = "name: sys_exit
ID: 21
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:long id;\toffset:8;\tsize:8;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;

print fmt: \"NR %ld = %ld\", REC->id, REC->ret
";

    #[test]
    fn parses_sys_exit() {
        let f = parse_format(SYS_EXIT_6_18);
        assert_eq!(f.len(), 6);
        assert_eq!(
            f[4],
            Field {
                name: "id".into(),
                offset: 8,
                size: 8
            }
        );
        assert_eq!(
            f[5],
            Field {
                name: "ret".into(),
                offset: 16,
                size: 8
            }
        );
    }

    #[test]
    fn parses_arrays_pointers_and_multiword_types() {
        let text = "\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void *saddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;
\tfield:__data_loc char[] name;\toffset:24;\tsize:4;\tsigned:0;";
        let names: Vec<_> = parse_format(text)
            .into_iter()
            .map(|f| (f.name, f.offset))
            .collect();
        assert_eq!(
            names,
            [
                ("prev_comm", 8),
                ("skaddr", 8),
                ("saddr", 16),
                ("args", 16),
                ("name", 24)
            ]
            .map(|(n, o)| (n.to_string(), o))
        );
    }

    #[test]
    fn ignores_garbage_and_incomplete_lines() {
        let text =
            "print fmt: \"x\"\n\tfield:int a;\toffset:x;\tsize:4;\n\tfield:int b;\tsize:4;\n\n";
        assert!(parse_format(text).is_empty());
    }
}

//! The queue between collecting and sending: one record per push interval (an
//! encoded request), sent oldest first, bounded in bytes (past the bound the
//! oldest records are dropped and counted). In memory, or in segment files
//! under `--push-queue-dir` so that an outage survives a restart.
//!
//! On disk each record is `magic, length, CRC32, time, samples, body` (the CRC
//! covers time, samples and body). Segments are appended to and fsynced once
//! per record; a new process starts a new segment. A `cursor` file says how far
//! the records were sent; it is replaced by rename and not fsynced, so a crash
//! can send a few records twice, never lose one (receivers take a repeated
//! identical sample). A torn or damaged record is found by its length or CRC,
//! counted and skipped: the scan resumes at the next magic number.

use super::metrics::Exporter;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: [u8; 4] = *b"PRQ1";
/// magic, length, CRC, time (ms), samples.
const HEADER: usize = 4 + 4 + 4 + 8 + 8;
const SEGMENT_SUFFIX: &str = ".seg";

/// One request waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When its samples were taken (ms since the epoch).
    pub time_ms: i64,
    pub samples: u64,
    pub body: Vec<u8>,
}

enum Body {
    Memory(Vec<u8>),
    Disk { seq: u64, offset: u64, len: u32 },
}

struct Entry {
    time_ms: i64,
    samples: u64,
    bytes: u64,
    body: Body,
}

struct Disk {
    dir: PathBuf,
    /// The segment this process appends to, and its length.
    seq: u64,
    file: File,
    len: u64,
    max_segment: u64,
}

pub struct Queue {
    entries: VecDeque<Entry>,
    bytes: u64,
    max_bytes: u64,
    disk: Option<Disk>,
    metrics: Arc<Exporter>,
}

impl Queue {
    pub fn memory(max_bytes: u64, metrics: Arc<Exporter>) -> Queue {
        Queue {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
            disk: None,
            metrics,
        }
    }

    /// Opens (or creates) the queue in `dir`: reads what earlier runs left
    /// unsent, counting damaged records, and starts a new segment.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Exporter>) -> std::io::Result<Queue> {
        std::fs::create_dir_all(dir)?;
        let cursor = read_cursor(dir);
        let mut segments: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()
            })
            .collect();
        segments.sort_unstable();
        let mut q = Queue::memory(max_bytes, metrics);
        for &seq in &segments {
            let path = segment_path(dir, seq);
            if seq < cursor.0 {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let data = std::fs::read(&path)?;
            let (found, damaged) = scan(&data);
            for d in &damaged {
                q.metrics.corrupt_records.inc();
                q.metrics.corrupt_bytes.inc_by(*d);
            }
            if !damaged.is_empty() {
                q.metrics.warn_once("corrupt", || {
                    format!(
                        "queue segment {} has {} damaged stretch(es), {} bytes, skipped",
                        path.display(),
                        damaged.len(),
                        damaged.iter().sum::<u64>()
                    )
                });
            }
            for f in found {
                if (seq, f.offset) < cursor {
                    continue;
                }
                let bytes = HEADER as u64 + u64::from(f.len);
                q.bytes += bytes;
                q.entries.push_back(Entry {
                    time_ms: f.time_ms,
                    samples: f.samples,
                    bytes,
                    body: Body::Disk {
                        seq,
                        offset: f.offset,
                        len: f.len,
                    },
                });
            }
        }
        let seq = segments.last().map_or(1, |s| s + 1);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(dir, seq))?;
        q.disk = Some(Disk {
            dir: dir.to_path_buf(),
            seq,
            file,
            len: 0,
            // Several segments fit the bound, so dropping the oldest frees room.
            max_segment: (max_bytes / 8).clamp(4096, 8 << 20),
        });
        q.remove_sent_segments();
        q.drop_over_limit();
        q.update_gauges();
        Ok(q)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_memory(&self) -> bool {
        self.disk.is_none()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds a record at the back; drops (and counts) the oldest past the bound.
    pub fn push(&mut self, r: Record) {
        let bytes = (HEADER + r.body.len()) as u64;
        let body = match &mut self.disk {
            None => Body::Memory(r.body),
            Some(d) => match d.append(&r) {
                Ok(b) => b,
                Err(e) => {
                    self.metrics.dropped("queue_write", r.samples);
                    self.metrics.warn_once("queue_write", || {
                        format!("cannot write the queue in {}: {e}", d.dir.display())
                    });
                    return;
                }
            },
        };
        self.entries.push_back(Entry {
            time_ms: r.time_ms,
            samples: r.samples,
            bytes,
            body,
        });
        self.bytes += bytes;
        self.drop_over_limit();
        self.update_gauges();
    }

    /// The oldest record, read back (damaged ones are counted and dropped).
    pub fn front(&mut self) -> Option<Record> {
        loop {
            let e = self.entries.front()?;
            let body = match &e.body {
                Body::Memory(b) => Ok(b.clone()),
                Body::Disk { seq, offset, len } => {
                    let dir = &self.disk.as_ref().expect("disk entries need a disk").dir;
                    read_record(&segment_path(dir, *seq), *offset, *len)
                }
            };
            match body {
                Ok(body) => {
                    return Some(Record {
                        time_ms: e.time_ms,
                        samples: e.samples,
                        body,
                    });
                }
                Err(why) => {
                    self.metrics.corrupt_records.inc();
                    self.metrics.corrupt_bytes.inc_by(e.bytes);
                    self.metrics.warn_once("corrupt", || {
                        format!("a queued record is unreadable: {why}")
                    });
                    self.pop();
                }
            }
        }
    }

    /// Removes the oldest record: sent, or given up.
    pub fn pop(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.bytes;
            self.remove_sent_segments();
        }
        self.update_gauges();
    }

    /// Updates the queue gauges (the oldest record's age changes by itself).
    pub fn update_gauges(&self) {
        self.metrics.queue_bytes.set(self.bytes as i64);
        self.metrics.queue_records.set(self.entries.len() as i64);
        let age = self.entries.front().map_or(0.0, |e| {
            ((super::now_ms() - e.time_ms) as f64 / 1000.0).max(0.0)
        });
        self.metrics.oldest_age.set(age);
    }

    fn drop_over_limit(&mut self) {
        while self.bytes > self.max_bytes && !self.entries.is_empty() {
            let samples = self.entries.front().map_or(0, |e| e.samples);
            self.metrics.dropped("queue_full", samples);
            self.metrics.warn_once("queue_full", || {
                format!(
                    "the queue is over its {} bytes (--push-queue-max-bytes): dropping the oldest",
                    self.max_bytes
                )
            });
            self.pop();
        }
    }

    /// Records the position of the oldest unsent record and deletes the
    /// segments before it (never the one being written).
    fn remove_sent_segments(&mut self) {
        let Some(d) = &self.disk else { return };
        let cursor = match self.entries.front() {
            Some(Entry {
                body: Body::Disk { seq, offset, .. },
                ..
            }) => (*seq, *offset),
            _ => (d.seq, d.len),
        };
        let tmp = d.dir.join("cursor.tmp");
        let written = std::fs::write(&tmp, format!("{} {}\n", cursor.0, cursor.1))
            .and_then(|()| std::fs::rename(&tmp, d.dir.join("cursor")));
        if let Err(e) = written {
            self.metrics.warn_once("cursor", || {
                format!(
                    "cannot record the send position in {} ({e}): a restart sends some records again",
                    d.dir.display()
                )
            });
        }
        if let Ok(dir) = std::fs::read_dir(&d.dir) {
            for seq in dir.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(SEGMENT_SUFFIX)?.parse::<u64>().ok()
            }) {
                if seq < cursor.0 && seq != d.seq {
                    let _ = std::fs::remove_file(segment_path(&d.dir, seq));
                }
            }
        }
    }
}

impl Disk {
    fn append(&mut self, r: &Record) -> std::io::Result<Body> {
        if self.len >= self.max_segment {
            self.seq += 1;
            self.file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(segment_path(&self.dir, self.seq))?;
            self.len = 0;
        }
        let len = u32::try_from(r.body.len())
            .map_err(|_| std::io::Error::other("a record over 4 GiB"))?;
        let mut buf = Vec::with_capacity(HEADER + r.body.len());
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&checksum(r.time_ms, r.samples, &r.body).to_le_bytes());
        buf.extend_from_slice(&r.time_ms.to_le_bytes());
        buf.extend_from_slice(&r.samples.to_le_bytes());
        buf.extend_from_slice(&r.body);
        let offset = self.len;
        if let Err(e) = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
        {
            // Whatever part was written is skipped as damaged at the next start.
            self.len += buf.len() as u64;
            return Err(e);
        }
        self.len += buf.len() as u64;
        Ok(Body::Disk {
            seq: self.seq,
            offset,
            len,
        })
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}{SEGMENT_SUFFIX}"))
}

fn read_cursor(dir: &Path) -> (u64, u64) {
    std::fs::read_to_string(dir.join("cursor"))
        .ok()
        .and_then(|s| {
            let (a, b) = s.trim().split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((0, 0))
}

fn checksum(time_ms: i64, samples: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&time_ms.to_le_bytes());
    h.update(&samples.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// An intact record found in a segment.
struct Found {
    offset: u64,
    time_ms: i64,
    samples: u64,
    len: u32,
}

/// The whole records of a segment, and the sizes of the damaged stretches
/// between and after them.
fn scan(data: &[u8]) -> (Vec<Found>, Vec<u64>) {
    let mut found = Vec::new();
    let mut damaged = Vec::new();
    let mut pos = 0;
    // Where the current damaged stretch began, if in one.
    let mut bad_from: Option<usize> = None;
    while pos < data.len() {
        match parse_at(data, pos) {
            Some((time_ms, samples, len)) => {
                if let Some(from) = bad_from.take() {
                    damaged.push((pos - from) as u64);
                }
                found.push(Found {
                    offset: pos as u64,
                    time_ms,
                    samples,
                    len,
                });
                pos += HEADER + len as usize;
            }
            None => {
                bad_from.get_or_insert(pos);
                // Resynchronise at the next magic number.
                pos = data[pos + 1..]
                    .windows(MAGIC.len())
                    .position(|w| w == MAGIC)
                    .map_or(data.len(), |i| pos + 1 + i);
            }
        }
    }
    if let Some(from) = bad_from {
        damaged.push((data.len() - from) as u64);
    }
    (found, damaged)
}

/// A whole, intact record at `pos`: its time, samples and body length.
fn parse_at(data: &[u8], pos: usize) -> Option<(i64, u64, u32)> {
    let h = data.get(pos..pos + HEADER)?;
    if h[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(h[4..8].try_into().unwrap());
    let crc = u32::from_le_bytes(h[8..12].try_into().unwrap());
    let time_ms = i64::from_le_bytes(h[12..20].try_into().unwrap());
    let samples = u64::from_le_bytes(h[20..28].try_into().unwrap());
    let body = data.get(pos + HEADER..pos + HEADER + len as usize)?;
    (checksum(time_ms, samples, body) == crc).then_some((time_ms, samples, len))
}

fn read_record(path: &Path, offset: u64, len: u32) -> Result<Vec<u8>, String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0; HEADER + len as usize];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match parse_at(&buf, 0) {
        Some(_) => Ok(buf.split_off(HEADER)),
        None => Err(format!("{} at {offset}: bad checksum", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::metrics::Metrics;

    fn record(i: i64, size: usize) -> Record {
        Record {
            time_ms: 1_000 * i,
            samples: i as u64,
            body: vec![i as u8; size],
        }
    }

    fn metrics() -> Arc<Exporter> {
        Arc::new(Metrics::default().exporter("remote_write", "http://x"))
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("push-queue-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn drain(q: &mut Queue) -> Vec<i64> {
        let mut out = Vec::new();
        while let Some(r) = q.front() {
            assert_eq!(r.body, vec![(r.time_ms / 1000) as u8; r.body.len()]);
            out.push(r.time_ms / 1000);
            q.pop();
        }
        out
    }

    #[test]
    fn memory_queue_drops_the_oldest_past_its_bound() {
        let m = metrics();
        let mut q = Queue::memory(3 * (HEADER as u64 + 100), m.clone());
        for i in 1..=5 {
            q.push(record(i, 100));
        }
        assert_eq!(drain(&mut q), [3, 4, 5]);
        assert_eq!(m.queue_bytes.get(), 0);
    }

    #[test]
    fn disk_queue_resumes_where_sending_stopped() {
        let dir = tmpdir("resume");
        let m = metrics();
        let mut q = Queue::open(&dir, 1 << 20, m.clone()).unwrap();
        for i in 1..=4 {
            q.push(record(i, 50));
        }
        q.pop(); // 1 was sent
        drop(q);
        let mut q = Queue::open(&dir, 1 << 20, m.clone()).unwrap();
        q.push(record(5, 50));
        assert_eq!(drain(&mut q), [2, 3, 4, 5]);
        drop(q);
        // Everything was sent: nothing comes back, and old segments are gone.
        let mut q = Queue::open(&dir, 1 << 20, m.clone()).unwrap();
        assert!(q.front().is_none());
        let segments = std::fs::read_dir(&dir).unwrap().count();
        assert!(segments <= 3, "{segments} files left");
        assert_eq!(m.corrupt_records.get(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_records_are_skipped_and_counted() {
        let dir = tmpdir("damaged");
        let m = metrics();
        let mut q = Queue::open(&dir, 1 << 20, m.clone()).unwrap();
        for i in 1..=4 {
            q.push(record(i, 100));
        }
        drop(q);
        let seg = segment_path(&dir, 1);
        let mut data = std::fs::read(&seg).unwrap();
        let size = HEADER + 100;
        data[size + HEADER + 5] ^= 0xff; // a flipped bit in record 2's body
        data.truncate(data.len() - 30); // record 4 torn (kill -9, power loss)
        std::fs::write(&seg, &data).unwrap();
        let mut q = Queue::open(&dir, 1 << 20, m.clone()).unwrap();
        assert_eq!(drain(&mut q), [1, 3]);
        assert_eq!(m.corrupt_records.get(), 2);
        assert_eq!(m.corrupt_bytes.get(), (size + size - 30) as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disk_queue_drops_whole_oldest_past_its_bound() {
        let dir = tmpdir("bound");
        let m = metrics();
        let size = (HEADER + 1000) as u64;
        let mut q = Queue::open(&dir, 10 * size, m.clone()).unwrap();
        for i in 1..=30 {
            q.push(record(i, 1000));
        }
        assert_eq!(q.len(), 10);
        drop(q);
        let mut q = Queue::open(&dir, 10 * size, m.clone()).unwrap();
        assert_eq!(drain(&mut q), (21..=30).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Training curves as TensorBoard event files (`run --tensorboard DIR`).
//!
//! An event file is a sequence of records, each `u64` length (little-endian), the masked
//! CRC32C of those 8 bytes, the data, and the masked CRC32C of the data; the data is a
//! serialised `tensorflow.Event`. The first Event carries `file_version: "brain.Event:2"`,
//! the others a wall time, a step and a `Summary` of `simple_value` scalars by tag.
//!
//! Why the framing is written here: no crate that writes this format is in the tree, and
//! what it takes is small once the two maintained pieces are used: `prost`'s derive macros
//! (no build script, no `.proto` files) encode the three messages, and `crc32c` computes
//! the checksums (both already in the tree through `object_store`). What is left is the
//! record framing (a few lines), tested below against bytes computed independently.
//!
//! [`Curves`] is what the kinds hold: it opens the node's run folder on the first scalar,
//! writes each step as it comes and flushes it, and on an I/O error warns once and stops
//! writing (curves are not results: the training goes on).

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use dagrun_engine::stage::StageContext;
use prost::Message;

use crate::ml::training::sink::StepSink;

/// `tensorflow.Event` (the fields written here; the tags are the `.proto`'s).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5, 7")]
    pub what: Option<What>,
}

/// `Event.what`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
    #[prost(message, tag = "7")]
    SessionLog(SessionLog),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`: a tag and (here) a `simple_value`. The value is a `oneof`, so
/// that 0.0 is written too (a plain proto3 field at its default would be left out, and the
/// reader would see no value).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(oneof = "ValueKind", tags = "2")]
    pub value: Option<ValueKind>,
}

/// `Summary.Value.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ValueKind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
}

/// `tensorflow.SessionLog`: a `START` at a step tells readers that a run (re)started there,
/// and they drop what an earlier run of the same folder wrote at that step and later.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    /// 1: START.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

const SESSION_START: i32 = 1;

/// The masked CRC32C TensorBoard's records carry: the checksum rotated right by 15 bits
/// plus a constant.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}

/// One record: length, its masked CRC, the data, its masked CRC.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name for the file name (`localhost` if unknown), as a plain name.
fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = if rc == 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// An open event file.
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Makes `dir` and a new `events.out.tfevents.<secs>.<host>` in it (`.1`, `.2`, ... after
    /// it when that name is taken: readers take the files in name order), and writes the
    /// file-version event.
    pub fn create(dir: &Path) -> std::io::Result<EventWriter> {
        std::fs::create_dir_all(dir)?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let base = format!("events.out.tfevents.{secs}.{}", host());
        let mut n = 0u32;
        let (file, path) = loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let path = dir.join(name);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(e),
            }
        };
        let mut w = EventWriter {
            file: BufWriter::new(file),
            path,
        };
        w.write(&Event {
            wall_time: now(),
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        w.file.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        self.file.write_all(&frame(&event.encode_to_vec()))
    }

    /// A `SessionLog START` at `step`: a run (re)starts there.
    pub fn start(&mut self, step: i64) -> std::io::Result<()> {
        self.write(&Event {
            wall_time: now(),
            step,
            what: Some(What::SessionLog(SessionLog {
                status: SESSION_START,
            })),
        })
    }

    /// One event of scalars at `step` (stored as f32, as TensorBoard's `simple_value` is).
    pub fn scalars(&mut self, step: i64, scalars: &[(&str, f64)]) -> std::io::Result<()> {
        let value = scalars
            .iter()
            .map(|(tag, v)| SummaryValue {
                tag: tag.to_string(),
                value: Some(ValueKind::SimpleValue(*v as f32)),
            })
            .collect();
        self.write(&Event {
            wall_time: now(),
            step,
            what: Some(What::Summary(Summary { value })),
        })
    }

    /// Hands what was written to the operating system, for a reader watching the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A node's curves: where they go (or nowhere), opened on the first scalar.
pub struct Curves {
    node: String,
    dir: Option<PathBuf>,
    writer: Option<EventWriter>,
    warned_step: bool,
}

impl Curves {
    /// The curves of `ctx`'s node: its TensorBoard run folder when the run asked for one.
    pub fn for_node(ctx: &StageContext) -> Curves {
        Curves::new(&ctx.node, ctx.tensorboard_dir().map(Path::to_path_buf))
    }

    /// Curves written under `dir` (none when `None`); `node` names them in warnings.
    pub fn new(node: &str, dir: Option<PathBuf>) -> Curves {
        Curves {
            node: node.to_string(),
            dir,
            writer: None,
            warned_step: false,
        }
    }

    /// Writes `scalars` at `step` and flushes. TensorBoard's steps are whole numbers: a
    /// step that is not one (a command's `dagrun:metric x 1 0.5`) is left out, with one
    /// warning. The first write opens the file and marks a (re)start at its step.
    pub fn write(&mut self, step: f64, scalars: &[(&str, f64)]) {
        let Some(dir) = &self.dir else { return };
        if step.fract() != 0.0 || !step.is_finite() || step.abs() > 9.0e15 {
            if !self.warned_step {
                self.warned_step = true;
                tracing::warn!(node = %self.node, step,
                    "a step that is not a whole number is left out of the TensorBoard curves");
            }
            return;
        }
        let step = step as i64;
        let result = (|| {
            if self.writer.is_none() {
                let mut w = EventWriter::create(dir)?;
                w.start(step)?;
                self.writer = Some(w);
            }
            let w = self.writer.as_mut().expect("opened above");
            w.scalars(step, scalars)?;
            w.flush()
        })();
        if let Err(e) = result {
            // Warned once: no directory, no writer, nothing more is tried.
            tracing::warn!(node = %self.node, dir = %dir.display(), error = %e,
                "cannot write TensorBoard curves; the training goes on without them");
            self.dir = None;
            self.writer = None;
        }
    }
}

impl StepSink for Curves {
    fn step(&mut self, step: usize, scalars: &[(&'static str, f64)]) {
        self.write(step as f64, scalars);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known values: CRC32C("123456789") is 0xE3069283 (the standard check value); its
    /// mask and the framing of a fixed record were computed with a bitwise CRC32C written
    /// apart from this code (Python, Castagnoli polynomial 0x82F63B78, reflected).
    #[test]
    fn records_are_framed_with_masked_crc32c() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(masked_crc32c(b"123456789"), MASKED_CHECK);
        assert_eq!(frame(b"hello"), FRAMED_HELLO.to_vec());
        let version = Event {
            wall_time: 1.5,
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        };
        assert_eq!(frame(&version.encode_to_vec()), FRAMED_VERSION.to_vec());
    }

    const MASKED_CHECK: u32 = 0xc78a_b0e5;
    const FRAMED_HELLO: [u8; 21] = [
        0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xea, 0xb2, 0x04, 0x3e, 0x68, 0x65, 0x6c,
        0x6c, 0x6f, 0xbb, 0x1f, 0x1c, 0x19,
    ];
    /// The file-version event at wall time 1.5: its header (length 24, `a3 7f 4b 22`) is the
    /// one every TensorFlow event file starts with.
    const FRAMED_VERSION: [u8; 40] = [
        0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa3, 0x7f, 0x4b, 0x22, 0x09, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xf8, 0x3f, 0x1a, 0x0d, 0x62, 0x72, 0x61, 0x69, 0x6e, 0x2e, 0x45,
        0x76, 0x65, 0x6e, 0x74, 0x3a, 0x32, 0x2a, 0x28, 0x64, 0x6c,
    ];

    #[test]
    fn a_zero_scalar_is_written_and_events_decode_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(3, &[("loss", 0.0), ("kl", 0.25)]).unwrap();
        w.flush().unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let mut events = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(data));
            events.push(Event::decode(data).unwrap());
            at += 16 + len;
        }
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].what,
            Some(What::FileVersion("brain.Event:2".into()))
        );
        assert_eq!(events[1].step, 3);
        let Some(What::Summary(s)) = &events[1].what else {
            panic!("not a summary: {:?}", events[1].what)
        };
        assert_eq!(s.value[0].tag, "loss");
        assert_eq!(s.value[0].value, Some(ValueKind::SimpleValue(0.0)));
        assert_eq!(s.value[1].value, Some(ValueKind::SimpleValue(0.25)));
        // The zero is on the wire (field 2, fixed32), not left out as a default.
        let encoded = events[1].encode_to_vec();
        assert!(encoded.windows(5).any(|w| w == [0x15, 0, 0, 0, 0]));
    }

    #[test]
    fn curves_warn_once_and_go_on_when_the_folder_cannot_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let mut c = Curves::new("n", Some(blocker.join("run")));
        c.write(1.0, &[("loss", 1.0)]);
        assert!(c.dir.is_none() && c.writer.is_none());
        c.write(2.0, &[("loss", 1.0)]);
        // A step that is not whole is left out; whole ones are written.
        let mut c = Curves::new("n", Some(dir.path().join("ok")));
        c.write(0.5, &[("x", 1.0)]);
        assert!(c.writer.is_none());
        c.write(1.0, &[("x", 1.0)]);
        assert!(c.writer.is_some());
    }
}

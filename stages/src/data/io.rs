//! Reading rows from JSON Lines and Parquet files (or folders of them), and writing both.
//!
//! Every row, whatever the file type, is handed on as a JSON value, so the flat and chat
//! formats are parsed in one place ([`super::records`]). Errors name the file and the
//! place: `prefs.jsonl:17: missing field "chosen"` (line numbers from 1) or
//! `prefs.parquet: row 17: ...` (rows from 1, across row groups).
//!
//! Parquet is read through the `parquet` crate's record API (no Arrow): strings, integers,
//! floats, booleans, lists and structs, with Hugging Face's `list<struct<role, content>>`
//! chat columns among them; Snappy-compressed or uncompressed. Written Parquet is
//! Snappy-compressed, in row groups of [`ROW_GROUP`] rows.

use std::{
    fmt,
    fs::File,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use parquet::{
    basic::Compression,
    data_type::{ByteArray, ByteArrayType, Int64Type},
    file::{
        properties::WriterProperties, reader::SerializedFileReader, writer::SerializedFileWriter,
    },
    record::{Field, Row},
    schema::parser::parse_message_type,
};
use serde::Serialize;
use serde_json::Value;

use super::records::{
    parse_preference, parse_text, Message, PreferenceFormat, PreferencePair, TextRow,
};

/// Rows per Parquet row group when writing.
pub const ROW_GROUP: usize = 16_384;

/// Where a row came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A JSON Lines file and its line (from 1).
    Line { file: PathBuf, line: usize },
    /// A Parquet file and its row (from 1).
    Row { file: PathBuf, row: usize },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line { file, line } => write!(f, "{}:{line}", file.display()),
            Location::Row { file, row } => write!(f, "{}: row {row}", file.display()),
        }
    }
}

/// A data reading or writing error, naming the file (and the line or row).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{location}: {message}")]
    Row { location: Location, message: String },
}

impl DataError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    fn file(path: &Path, message: impl fmt::Display) -> Self {
        DataError::File {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

/// The file types this module reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Jsonl,
    Parquet,
}

impl FileType {
    /// By extension: `.jsonl` or `.parquet`.
    pub fn of(path: &Path) -> Option<FileType> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => Some(FileType::Jsonl),
            Some("parquet") => Some(FileType::Parquet),
            _ => None,
        }
    }
}

/// The data files at `path`: the file itself (`.jsonl` or `.parquet`), or every such file
/// under the folder (recursively, sorted by path), except a `NAME.jsonl` that has a
/// `NAME.parquet` beside it (the same rows twice: the kinds here write both; the Parquet
/// copy is read). An error if there are none.
pub fn data_files(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_file() {
        if FileType::of(path).is_none() {
            return Err(DataError::file(
                path,
                "unsupported file type (expected .jsonl or .parquet)",
            ));
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| DataError::io(&dir, e))? {
            let p = entry.map_err(|e| DataError::io(&dir, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if FileType::of(&p).is_some() {
                out.push(p);
            }
        }
    }
    // `x.jsonl` beside `x.parquet` is a copy of the same rows (the kinds here write both).
    out.retain(|p| {
        FileType::of(p) == Some(FileType::Parquet) || !p.with_extension("parquet").is_file()
    });
    out.sort();
    if out.is_empty() {
        return Err(DataError::file(
            path,
            "no .jsonl or .parquet files in this folder",
        ));
    }
    Ok(out)
}

/// Calls `f` with every row of one file as a JSON value, in order. Blank JSONL lines are
/// skipped (they still count for line numbers).
pub fn for_each_row(
    path: &Path,
    mut f: impl FnMut(Location, Value) -> Result<(), DataError>,
) -> Result<(), DataError> {
    match FileType::of(path) {
        Some(FileType::Jsonl) => {
            let file = File::open(path).map_err(|e| DataError::io(path, e))?;
            for (i, line) in BufReader::new(file).lines().enumerate() {
                let location = Location::Line {
                    file: path.to_path_buf(),
                    line: i + 1,
                };
                let line = line.map_err(|e| DataError::Row {
                    location: location.clone(),
                    message: e.to_string(),
                })?;
                if line.trim().is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(&line).map_err(|e| DataError::Row {
                    location: location.clone(),
                    message: format!("invalid JSON: {e}"),
                })?;
                f(location, v)?;
            }
            Ok(())
        }
        Some(FileType::Parquet) => {
            let file = File::open(path).map_err(|e| DataError::io(path, e))?;
            let reader = SerializedFileReader::new(file)
                .map_err(|e| DataError::file(path, format!("not a readable Parquet file: {e}")))?;
            for (i, row) in reader.into_iter().enumerate() {
                let location = Location::Row {
                    file: path.to_path_buf(),
                    row: i + 1,
                };
                let row = row.map_err(|e| DataError::Row {
                    location: location.clone(),
                    message: e.to_string(),
                })?;
                f(location, row_to_json(&row))?;
            }
            Ok(())
        }
        None => Err(DataError::file(
            path,
            "unsupported file type (expected .jsonl or .parquet)",
        )),
    }
}

fn row_to_json(row: &Row) -> Value {
    Value::Object(
        row.get_column_iter()
            .map(|(k, v)| (k.clone(), field_to_json(v)))
            .collect(),
    )
}

fn field_to_json(f: &Field) -> Value {
    use serde_json::Number;
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float16(n) => Number::from_f64(f64::from(*n)).map_or(Value::Null, Value::Number),
        Field::Float(n) => Number::from_f64(f64::from(*n)).map_or(Value::Null, Value::Number),
        Field::Double(n) => Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => Value::String(String::from_utf8_lossy(b.data()).into_owned()),
        Field::Group(r) => row_to_json(r),
        Field::ListInternal(l) => Value::Array(l.elements().iter().map(field_to_json).collect()),
        Field::MapInternal(m) => Value::Array(
            m.entries()
                .iter()
                .map(|(k, v)| serde_json::json!({"key": field_to_json(k), "value": field_to_json(v)}))
                .collect(),
        ),
        // Decimals, dates and times: their display text.
        other => Value::String(other.to_string()),
    }
}

/// Reads the preference pairs at `path` (a file or a folder of `.jsonl`/`.parquet` files).
pub fn read_preferences(
    path: &Path,
    format: PreferenceFormat,
) -> Result<Vec<PreferencePair>, DataError> {
    let mut out = Vec::new();
    for file in data_files(path)? {
        for_each_row(&file, |location, v| {
            let pair = parse_preference(&v, format)
                .map_err(|message| DataError::Row { location, message })?;
            out.push(pair);
            Ok(())
        })?;
    }
    Ok(out)
}

/// Reads the rows of a text corpus at `path` (a file or a folder), taking the text from
/// the string column `column` and an optional integer `label`.
pub fn read_texts(path: &Path, column: &str) -> Result<Vec<TextRow>, DataError> {
    let mut out = Vec::new();
    for file in data_files(path)? {
        for_each_row(&file, |location, v| {
            out.push(
                parse_text(&v, column).map_err(|message| DataError::Row { location, message })?,
            );
            Ok(())
        })?;
    }
    Ok(out)
}

/// Writes `rows` as JSON Lines, creating the parent folder (atomically: [`crate::files`]).
pub fn write_jsonl<'a, T: Serialize + 'a>(
    path: &Path,
    rows: impl IntoIterator<Item = &'a T>,
) -> Result<(), DataError> {
    crate::files::write_atomic_with(path, |w| {
        for row in rows {
            serde_json::to_writer(&mut *w, row)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(|e| DataError::io(path, e))
}

/// One column of a table to write as Parquet.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    /// A required UTF-8 string column.
    Str(Vec<String>),
    /// An optional UTF-8 string column.
    OptStr(Vec<Option<String>>),
    /// A required 64-bit integer column.
    Int(Vec<i64>),
    /// A list of `{role, content}` structs per row (Hugging Face's chat columns); an empty
    /// list for rows without messages.
    Messages(Vec<Vec<Message>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Str(v) => v.len(),
            Column::OptStr(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Messages(v) => v.len(),
        }
    }
}

/// One leaf column's values, definition levels and repetition levels.
type Leaf = (Vec<ByteArray>, Vec<i16>, Option<Vec<i16>>);

/// Writes a table of named columns (all of one length; names of letters, digits and `_`)
/// as one Parquet file, creating the parent folder.
pub fn write_parquet(path: &Path, columns: &[(&str, Column)]) -> Result<(), DataError> {
    let rows = columns.first().map_or(0, |(_, c)| c.len());
    let mut schema = String::from("message schema {\n");
    for (name, col) in columns {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(DataError::file(path, format!("bad column name `{name}`")));
        }
        if col.len() != rows {
            return Err(DataError::file(
                path,
                format!("column `{name}` has {} rows, not {rows}", col.len()),
            ));
        }
        schema += &match col {
            Column::Str(_) => format!("  REQUIRED BYTE_ARRAY {name} (UTF8);\n"),
            Column::OptStr(_) => format!("  OPTIONAL BYTE_ARRAY {name} (UTF8);\n"),
            Column::Int(_) => format!("  REQUIRED INT64 {name};\n"),
            Column::Messages(_) => format!(
                "  REQUIRED group {name} (LIST) {{\n    REPEATED group list {{\n      \
                 REQUIRED group element {{\n        REQUIRED BYTE_ARRAY role (UTF8);\n        \
                 REQUIRED BYTE_ARRAY content (UTF8);\n      }}\n    }}\n  }}\n"
            ),
        };
    }
    schema += "}\n";
    let schema = Arc::new(parse_message_type(&schema).map_err(|e| DataError::file(path, e))?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    // The rows are encoded in memory, then written atomically ([`crate::files`]).
    let pq = |e: parquet::errors::ParquetError| DataError::file(path, e);
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, props).map_err(pq)?;
    let mut start = 0;
    while start < rows || (rows == 0 && start == 0) {
        let end = (start + ROW_GROUP).min(rows);
        let mut rg = writer.next_row_group().map_err(pq)?;
        for (_, col) in columns {
            let mut leaves: Vec<Leaf> = Vec::new();
            match col {
                Column::Int(v) => {
                    let mut c = rg.next_column().map_err(pq)?.expect("schema column");
                    c.typed::<Int64Type>()
                        .write_batch(&v[start..end], None, None)
                        .map_err(pq)?;
                    c.close().map_err(pq)?;
                    continue;
                }
                Column::Str(v) => leaves.push((
                    v[start..end]
                        .iter()
                        .map(|s| ByteArray::from(s.as_str()))
                        .collect(),
                    Vec::new(),
                    None,
                )),
                Column::OptStr(v) => {
                    let slice = &v[start..end];
                    leaves.push((
                        slice
                            .iter()
                            .flatten()
                            .map(|s| ByteArray::from(s.as_str()))
                            .collect(),
                        slice.iter().map(|s| i16::from(s.is_some())).collect(),
                        None,
                    ))
                }
                Column::Messages(v) => {
                    for part in [0, 1] {
                        let (mut vals, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
                        for msgs in &v[start..end] {
                            if msgs.is_empty() {
                                def.push(0);
                                rep.push(0);
                            }
                            for (i, m) in msgs.iter().enumerate() {
                                let s = if part == 0 { &m.role } else { &m.content };
                                vals.push(ByteArray::from(s.as_str()));
                                def.push(1);
                                rep.push(i16::from(i > 0));
                            }
                        }
                        leaves.push((vals, def, Some(rep)));
                    }
                }
            }
            for (vals, def, rep) in leaves {
                let mut c = rg.next_column().map_err(pq)?.expect("schema column");
                let def = (!def.is_empty() || rep.is_some()).then_some(def);
                c.typed::<ByteArrayType>()
                    .write_batch(&vals, def.as_deref(), rep.as_deref())
                    .map_err(pq)?;
                c.close().map_err(pq)?;
            }
        }
        rg.close().map_err(pq)?;
        if rows == 0 {
            break;
        }
        start = end;
    }
    let bytes = writer.into_inner().map_err(pq)?;
    crate::files::write_atomic(path, &bytes).map_err(|e| DataError::io(path, e))
}

/// A table of preference pairs with an optional `source` column: `prompt`, `chosen`,
/// `rejected` (strings), `prompt_messages` (list of `{role, content}`, empty for flat
/// rows) and `source`.
pub fn preference_columns(
    pairs: &[PreferencePair],
    sources: Option<Vec<String>>,
) -> Vec<(&'static str, Column)> {
    let strings = |f: fn(&PreferencePair) -> &String| {
        Column::Str(pairs.iter().map(|p| f(p).clone()).collect())
    };
    let mut cols = vec![
        ("prompt", strings(|p| &p.prompt)),
        ("chosen", strings(|p| &p.chosen)),
        ("rejected", strings(|p| &p.rejected)),
        (
            "prompt_messages",
            Column::Messages(
                pairs
                    .iter()
                    .map(|p| p.prompt_messages.clone().unwrap_or_default())
                    .collect(),
            ),
        ),
    ];
    if let Some(s) = sources {
        cols.push(("source", Column::Str(s)));
    }
    cols
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all_rows(path: &Path) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for_each_row(path, |l, v| {
            out.push((l.to_string(), v));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn parquet_round_trip_of_every_column_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let msgs = vec![
            vec![Message::new("user", "hi"), Message::new("assistant", "yo")],
            vec![],
            vec![Message::new("system", "s")],
        ];
        write_parquet(
            &path,
            &[
                (
                    "text",
                    Column::Str(vec!["a".into(), "".into(), "ü ✓".into()]),
                ),
                ("maybe", Column::OptStr(vec![None, Some("x".into()), None])),
                ("label", Column::Int(vec![0, 1, -5])),
                ("messages", Column::Messages(msgs)),
            ],
        )
        .unwrap();
        let rows = all_rows(&path);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].0, format!("{}: row 2", path.display()));
        assert_eq!(
            rows[0].1,
            json!({"text": "a", "maybe": null, "label": 0,
                   "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
        );
        assert_eq!(
            rows[1].1,
            json!({"text": "", "maybe": "x", "label": 1, "messages": []})
        );
        assert_eq!(rows[2].1["text"], "ü ✓");
        assert_eq!(rows[2].1["label"], -5);
        assert_eq!(
            rows[2].1["messages"],
            json!([{"role": "system", "content": "s"}])
        );
    }

    #[test]
    fn parquet_spans_row_groups_and_empty_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.parquet");
        let n = ROW_GROUP + 5;
        write_parquet(&path, &[("n", Column::Int((0..n as i64).collect()))]).unwrap();
        let rows = all_rows(&path);
        assert_eq!(rows.len(), n);
        assert_eq!(rows[n - 1].1["n"], (n - 1) as i64);
        let empty = dir.path().join("empty.parquet");
        write_parquet(&empty, &[("n", Column::Int(vec![]))]).unwrap();
        assert!(all_rows(&empty).is_empty());
        assert!(write_parquet(
            &empty,
            &[("a", Column::Int(vec![1])), ("b", Column::Int(vec![]))]
        )
        .is_err());
    }

    #[test]
    fn jsonl_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prefs.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\"}\n\n{\"prompt\":\"p\",\"rejected\":\"b\"}\n",
        )
        .unwrap();
        let e = read_preferences(&path, PreferenceFormat::Auto).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}:3: missing field \"chosen\"", path.display())
        );
        std::fs::write(&path, "{\"prompt\": \n").unwrap();
        let e = read_preferences(&path, PreferenceFormat::Auto).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:1: invalid JSON", path.display())),
            "{e}"
        );
    }

    #[test]
    fn folders_and_file_types() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        let row = json!({"prompt": "p", "chosen": "a", "rejected": "b"});
        write_jsonl(&d.join("b.jsonl"), [&row, &row]).unwrap();
        write_jsonl(&d.join("c.jsonl"), [&row]).unwrap();
        write_parquet(&d.join("c.parquet"), &[("n", Column::Int(vec![1]))]).unwrap();
        write_jsonl(&d.join("sub/a.jsonl"), [&row]).unwrap();
        std::fs::write(d.join("notes.txt"), "x").unwrap();
        let files = data_files(d).unwrap();
        assert_eq!(
            files,
            vec![
                d.join("b.jsonl"),
                d.join("c.parquet"),
                d.join("sub/a.jsonl")
            ]
        );
        std::fs::remove_file(d.join("c.parquet")).unwrap();
        assert_eq!(
            read_preferences(d, PreferenceFormat::Auto).unwrap().len(),
            4
        );
        let e = data_files(&d.join("notes.txt")).unwrap_err().to_string();
        assert!(e.contains("unsupported file type"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = data_files(empty.path()).unwrap_err().to_string();
        assert!(e.contains("no .jsonl or .parquet files"), "{e}");
        let e = data_files(&d.join("missing.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&d.join("missing.jsonl").display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn preference_parquet_round_trip_with_chat_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.parquet");
        let pairs = vec![
            PreferencePair {
                prompt: "p".into(),
                chosen: "a".into(),
                rejected: "b".into(),
                prompt_messages: None,
            },
            PreferencePair {
                prompt: "hi".into(),
                chosen: "c".into(),
                rejected: "d".into(),
                prompt_messages: Some(vec![Message::new("user", "hi")]),
            },
        ];
        write_parquet(
            &path,
            &preference_columns(&pairs, Some(vec!["x".into(), "y".into()])),
        )
        .unwrap();
        assert_eq!(
            read_preferences(&path, PreferenceFormat::Auto).unwrap(),
            pairs
        );
        let jl = dir.path().join("p.jsonl");
        write_jsonl(&jl, &pairs).unwrap();
        assert_eq!(
            read_preferences(&jl, PreferenceFormat::Flat).unwrap(),
            pairs
        );
    }
}

//! `${...}` references inside pipeline values.
//!
//! | reference                    | becomes                                               |
//! |------------------------------|-------------------------------------------------------|
//! | `${params.NAME}`             | the pipeline parameter (`${params.a.b}` reaches into maps) |
//! | `${matrix.KEY}`              | this node's matrix value                              |
//! | `${stages.STAGE.OUTPUT}`     | an upstream output; makes an edge. As a whole value it is the artifact (a list of artifacts for a sweep); inside a string, its path |
//! | `${stages.STAGE[k=v].OUTPUT}`| the same, from part of a sweep                        |
//! | `$${`                        | a literal `${`                                        |
//!
//! A value that is exactly one reference keeps the referenced value's type (a number, a
//! list); inside longer text a reference must be a scalar.

use indexmap::IndexMap;
use serde_json::Value;

use crate::selector::{scalar_string, Selector};

/// A reference to another stage's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageRef {
    pub selector: Selector,
    pub output: String,
    /// Where the reference was written (for error messages): the raw text.
    pub text: String,
}

/// What references can see.
pub struct Scope<'a> {
    pub params: &'a IndexMap<String, Value>,
    pub matrix: &'a IndexMap<String, Value>,
    /// Stage references found so far; `{"$artifact": i}` points into this list.
    pub refs: &'a mut Vec<StageRef>,
}

/// Marker keys used inside resolved values.
pub const ARTIFACT: &str = "$artifact";
pub const CONCAT: &str = "$concat";

/// Why a `${...}` reference cannot be resolved. Callers match on it (a param defined
/// later is an ordering problem, not an unknown name); `Display` is the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterpError {
    /// `${` without its `}`, in `text`.
    Unclosed { text: String },
    /// The first name of a reference is not defined: `known` lists what is.
    Undefined {
        reference: String,
        /// What was looked in: `params`, `matrix values of this stage`.
        what: &'static str,
        /// The name looked up (a param's first segment, a matrix key).
        name: String,
        known: Vec<String>,
    },
    /// A later segment of `${params.a.b}` is not there.
    NotFound { reference: String, segment: String },
    /// A reference outside `params.`, `matrix.` and `stages.`.
    UnknownNamespace { reference: String },
    /// A list or map referenced inside text.
    NotScalar { reference: String },
    /// `${stages.X}` without an output.
    StageRefForm { reference: String },
    /// The filter of a stage reference resolved to something other than text.
    FilterNotText { reference: String },
    /// The filter of a stage reference is not a selector.
    Selector { message: String },
    /// A mapping key that is not a string, number or boolean.
    MappingKey,
}

impl std::fmt::Display for InterpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterpError::Unclosed { text } => write!(f, "unclosed `${{` in `{text}`"),
            InterpError::Undefined {
                reference,
                what,
                known,
                ..
            } if known.is_empty() => {
                write!(f, "undefined reference `${{{reference}}}` (no {what} are defined)")
            }
            InterpError::Undefined {
                reference,
                what,
                known,
                ..
            } => {
                let known: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
                write!(
                    f,
                    "undefined reference `${{{reference}}}` (known {what}: {})",
                    known.join(", ")
                )
            }
            InterpError::NotFound { reference, segment } => write!(
                f,
                "undefined reference `${{{reference}}}`: `{segment}` not found"
            ),
            InterpError::UnknownNamespace { reference } => write!(
                f,
                "undefined reference `${{{reference}}}`: references start with `params.`, `matrix.` or `stages.`"
            ),
            InterpError::NotScalar { reference } => write!(
                f,
                "`${{{reference}}}` is a list or map and cannot be placed inside text"
            ),
            InterpError::StageRefForm { reference } => write!(
                f,
                "`${{{reference}}}`: a stage reference is written `${{stages.STAGE.OUTPUT}}`"
            ),
            InterpError::FilterNotText { reference } => {
                write!(f, "`${{{reference}}}`: the filter must resolve to text")
            }
            InterpError::Selector { message } => f.write_str(message),
            InterpError::MappingKey => f.write_str("mapping keys must be strings"),
        }
    }
}

impl std::error::Error for InterpError {}

impl From<InterpError> for String {
    fn from(e: InterpError) -> String {
        e.to_string()
    }
}

enum Piece {
    Text(String),
    Ref(String),
}

fn split(s: &str) -> Result<Vec<Piece>, InterpError> {
    let mut out = Vec::new();
    let mut text = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Byte-wise: `$`, `{` and `}` are ASCII, and never part of a multi-byte
        // character, so every index where they match is a character boundary.
        if b[i..].starts_with(b"$${") {
            text.push_str("${");
            i += 3;
        } else if b[i..].starts_with(b"${") {
            let mut depth = 1;
            let mut j = i + 2;
            while j < b.len() && depth > 0 {
                if b[j..].starts_with(b"${") {
                    depth += 1;
                    j += 2;
                    continue;
                }
                if b[j] == b'}' {
                    depth -= 1;
                }
                j += 1;
            }
            if depth != 0 {
                return Err(InterpError::Unclosed {
                    text: s.to_string(),
                });
            }
            if !text.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut text)));
            }
            out.push(Piece::Ref(s[i + 2..j - 1].trim().to_string()));
            i = j;
        } else {
            let ch = s[i..].chars().next().expect("in bounds");
            text.push(ch);
            i += ch.len_utf8();
        }
    }
    if !text.is_empty() || out.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// Whether a string contains any reference.
pub fn has_refs(s: &str) -> bool {
    s.contains("${")
}

/// Resolves every reference in a YAML value, producing JSON.
pub fn resolve(v: &serde_yaml::Value, scope: &mut Scope) -> Result<Value, InterpError> {
    Ok(match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(*b),
        serde_yaml::Value::Number(n) => yaml_number(n),
        serde_yaml::Value::String(s) => resolve_str(s, scope)?,
        serde_yaml::Value::Sequence(items) => Value::Array(
            items
                .iter()
                .map(|i| resolve(i, scope))
                .collect::<Result<_, _>>()?,
        ),
        serde_yaml::Value::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let key = match k {
                    serde_yaml::Value::String(s) => unprotect(s).into_owned(),
                    other => yaml_scalar_key(other)?,
                };
                out.insert(key, resolve(v, scope)?);
            }
            Value::Object(out)
        }
        serde_yaml::Value::Tagged(t) => resolve(&t.value, scope)?,
    })
}

/// Converts a YAML value holding no references to JSON.
pub fn plain(v: &serde_yaml::Value) -> Result<Value, InterpError> {
    let empty = IndexMap::new();
    let mut refs = Vec::new();
    let mut scope = Scope {
        params: &empty,
        matrix: &empty,
        refs: &mut refs,
    };
    resolve(v, &mut scope)
}

fn yaml_number(n: &serde_yaml::Number) -> Value {
    if let Some(i) = n.as_i64() {
        Value::from(i)
    } else if let Some(u) = n.as_u64() {
        Value::from(u)
    } else {
        serde_json::Number::from_f64(n.as_f64().unwrap_or(f64::NAN))
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn yaml_scalar_key(k: &serde_yaml::Value) -> Result<String, InterpError> {
    match k {
        serde_yaml::Value::Bool(b) => Ok(b.to_string()),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        _ => Err(InterpError::MappingKey),
    }
}

/// Stand-ins for the braces of `${...}` while the YAML is parsed: `[x-${k}]` is a flow
/// sequence in YAML, whose braces would otherwise start a flow mapping.
pub const OPEN: char = '\u{E000}';
pub const CLOSE: char = '\u{E001}';

/// Replaces the braces of every `${...}` in a YAML source by [`OPEN`] and [`CLOSE`]
/// (one character each, so line and column numbers stay the same).
pub fn protect(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut depth = 0usize;
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek() == Some(&'{') {
            chars.next();
            out.push('$');
            out.push(OPEN);
            depth += 1;
        } else if c == '}' && depth > 0 {
            out.push(CLOSE);
            depth -= 1;
        } else if c == '\n' && depth > 0 {
            // An unclosed reference ends at the line's end; the parser reports it.
            depth = 0;
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

/// Undoes [`protect`] in one string.
pub fn unprotect(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(OPEN) || s.contains(CLOSE) {
        std::borrow::Cow::Owned(s.replace(OPEN, "{").replace(CLOSE, "}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Resolves a string: a lone reference keeps its type, otherwise text is concatenated.
pub fn resolve_str(s: &str, scope: &mut Scope) -> Result<Value, InterpError> {
    let s = &*unprotect(s);
    if !s.contains('$') {
        return Ok(Value::String(s.to_string()));
    }
    let pieces = split(s)?;
    if let [Piece::Ref(r)] = pieces.as_slice() {
        return lookup(r, scope);
    }
    let mut parts: Vec<Value> = Vec::new();
    let mut text = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => text.push_str(&t),
            Piece::Ref(r) => match lookup(&r, scope)? {
                Value::Object(o) if o.contains_key(ARTIFACT) => {
                    if !text.is_empty() {
                        parts.push(Value::String(std::mem::take(&mut text)));
                    }
                    parts.push(Value::Object(o));
                }
                Value::Array(_) | Value::Object(_) => {
                    return Err(InterpError::NotScalar { reference: r })
                }
                scalar => text.push_str(&scalar_string(&scalar)),
            },
        }
    }
    if parts.is_empty() {
        return Ok(Value::String(text));
    }
    if !text.is_empty() {
        parts.push(Value::String(text));
    }
    let mut o = serde_json::Map::new();
    o.insert(CONCAT.to_string(), Value::Array(parts));
    Ok(Value::Object(o))
}

fn lookup(r: &str, scope: &mut Scope) -> Result<Value, InterpError> {
    // A reference may be built from others: `${params.beta.${matrix.method}}`. Stage
    // references resolve their filters themselves (the filter may name a stage output).
    let resolved;
    let r = if r.contains("${") && !r.starts_with("stages.") {
        resolved = match resolve_str(r, scope)? {
            Value::String(s) => s,
            other => scalar_string(&other),
        };
        resolved.as_str()
    } else {
        r
    };
    let (ns, rest) = r.split_once('.').unwrap_or((r, ""));
    match ns {
        "params" => {
            let mut segs = rest.split('.');
            let first = segs.next().unwrap_or("");
            let mut v = scope
                .params
                .get(first)
                .ok_or_else(|| undefined(r, "params", first, scope.params.keys()))?;
            for seg in segs {
                v = v
                    .get(seg)
                    .or_else(|| seg.parse::<usize>().ok().and_then(|i| v.get(i)))
                    .ok_or_else(|| InterpError::NotFound {
                        reference: r.to_string(),
                        segment: seg.to_string(),
                    })?;
            }
            Ok(v.clone())
        }
        "matrix" => {
            scope.matrix.get(rest).cloned().ok_or_else(|| {
                undefined(r, "matrix values of this stage", rest, scope.matrix.keys())
            })
        }
        "stages" => {
            // stages.NAME[filter].OUTPUT — the filter may itself contain references.
            let (sel_text, output) =
                split_stage_ref(rest).ok_or_else(|| InterpError::StageRefForm {
                    reference: r.to_string(),
                })?;
            let sel_resolved = match resolve_str(&sel_text, scope)? {
                Value::String(s) => s,
                _ => {
                    return Err(InterpError::FilterNotText {
                        reference: r.to_string(),
                    })
                }
            };
            let selector = Selector::parse(&sel_resolved)
                .map_err(|message| InterpError::Selector { message })?;
            scope.refs.push(StageRef {
                selector,
                output: output.to_string(),
                text: r.to_string(),
            });
            let mut o = serde_json::Map::new();
            o.insert(ARTIFACT.to_string(), Value::from(scope.refs.len() - 1));
            Ok(Value::Object(o))
        }
        _ => Err(InterpError::UnknownNamespace {
            reference: r.to_string(),
        }),
    }
}

fn split_stage_ref(rest: &str) -> Option<(String, &str)> {
    // The name ends at the first `.` that is outside brackets.
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '.' if depth == 0 => {
                let out = &rest[i + 1..];
                return (!out.is_empty()).then(|| (rest[..i].to_string(), out));
            }
            _ => {}
        }
    }
    None
}

fn undefined<'a>(
    r: &str,
    what: &'static str,
    name: &str,
    known: impl Iterator<Item = &'a String>,
) -> InterpError {
    InterpError::Undefined {
        reference: r.to_string(),
        what,
        name: name.to_string(),
        known: known.cloned().collect(),
    }
}

/// Replaces `{"$artifact": i}` and `{"$concat": [...]}` markers using `f`, which maps a
/// reference index to its value (a hash when fingerprinting, a path when running).
pub fn render(v: &Value, f: &dyn Fn(usize) -> Value) -> Value {
    match v {
        Value::Object(o) => {
            if let Some(i) = o.get(ARTIFACT).and_then(Value::as_u64) {
                return f(i as usize);
            }
            if let Some(Value::Array(parts)) = o.get(CONCAT) {
                let mut s = String::new();
                for p in parts {
                    match render(p, f) {
                        Value::String(t) => s.push_str(&t),
                        other => s.push_str(&scalar_string(&other)),
                    }
                }
                return Value::String(s);
            }
            Value::Object(o.iter().map(|(k, v)| (k.clone(), render(v, f))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| render(x, f)).collect()),
        other => other.clone(),
    }
}

/// The reference indices a value uses, and whether each is used inside text.
pub fn used_refs(v: &Value, in_text: bool, out: &mut Vec<(usize, bool)>) {
    match v {
        Value::Object(o) => {
            if let Some(i) = o.get(ARTIFACT).and_then(Value::as_u64) {
                out.push((i as usize, in_text));
            } else if let Some(Value::Array(parts)) = o.get(CONCAT) {
                parts.iter().for_each(|p| used_refs(p, true, out));
            } else {
                o.values().for_each(|x| used_refs(x, in_text, out));
            }
        }
        Value::Array(a) => a.iter().for_each(|x| used_refs(x, in_text, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope_with<'a>(
        params: &'a IndexMap<String, Value>,
        matrix: &'a IndexMap<String, Value>,
        refs: &'a mut Vec<StageRef>,
    ) -> Scope<'a> {
        Scope {
            params,
            matrix,
            refs,
        }
    }

    #[test]
    fn lone_reference_keeps_type_and_text_concatenates() {
        let mut params = IndexMap::new();
        params.insert("seeds".into(), json!([1, 2]));
        params.insert("lr".into(), json!(0.5));
        params.insert("model".into(), json!({"size": "small"}));
        let mut matrix = IndexMap::new();
        matrix.insert("seed".into(), json!(3));
        let mut refs = Vec::new();
        let mut s = scope_with(&params, &matrix, &mut refs);
        assert_eq!(
            resolve_str("${params.seeds}", &mut s).unwrap(),
            json!([1, 2])
        );
        assert_eq!(
            resolve_str("lr=${params.lr} seed=${matrix.seed}", &mut s).unwrap(),
            json!("lr=0.5 seed=3")
        );
        assert_eq!(
            resolve_str("${params.model.size}", &mut s).unwrap(),
            json!("small")
        );
        assert_eq!(
            resolve_str("cost $${HOME}", &mut s).unwrap(),
            json!("cost ${HOME}")
        );
        let e = resolve_str("${params.nope}", &mut s).unwrap_err();
        assert!(
            matches!(&e, InterpError::Undefined { name, .. } if name == "nope"),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .contains("known params: `seeds`, `lr`, `model`"));
        assert!(matches!(
            resolve_str("x ${params.seeds}", &mut s),
            Err(InterpError::NotScalar { .. })
        ));
        assert!(matches!(
            resolve_str("${foo}", &mut s),
            Err(InterpError::UnknownNamespace { .. })
        ));
        assert!(matches!(
            resolve_str("${params.lr", &mut s),
            Err(InterpError::Unclosed { .. })
        ));
    }

    #[test]
    fn non_ascii_text_inside_and_around_references_is_not_cut_inside_a_character() {
        let mut params = IndexMap::new();
        params.insert("é".into(), json!("ü"));
        let matrix = IndexMap::new();
        let mut refs = Vec::new();
        let mut s = scope_with(&params, &matrix, &mut refs);
        assert_eq!(
            resolve_str("à ${params.é} ß", &mut s).unwrap(),
            json!("à ü ß")
        );
        // Unknown, unclosed and nested references holding multi-byte characters are
        // errors, not panics.
        assert!(matches!(
            resolve_str("${params.日本}", &mut s),
            Err(InterpError::Undefined { .. })
        ));
        assert!(matches!(
            resolve_str("${params.日本", &mut s),
            Err(InterpError::Unclosed { .. })
        ));
        assert!(resolve_str("${params.${matrix.ñ}}", &mut s).is_err());
        assert!(resolve_str("${€}", &mut s).is_err());
    }

    #[test]
    fn stage_references_become_markers() {
        let params = IndexMap::new();
        let mut matrix = IndexMap::new();
        matrix.insert("seed".into(), json!(2));
        let mut refs = Vec::new();
        let mut s = scope_with(&params, &matrix, &mut refs);
        let v = resolve_str("${stages.ppo[seed=${matrix.seed}].policy}", &mut s).unwrap();
        assert_eq!(v, json!({"$artifact": 0}));
        let c = resolve_str("cat ${stages.prep.data.txt} > out", &mut s).unwrap();
        assert_eq!(refs[0].selector, Selector::parse("ppo[seed=2]").unwrap());
        assert_eq!(refs[1].output, "data.txt");
        let rendered = render(&c, &|i| json!(format!("<{i}>")));
        assert_eq!(rendered, json!("cat <1> > out"));
    }
}

//! Workspace paths: lexical normalisation, folders that hold outputs, absolute paths.

use std::{
    collections::HashMap,
    path::{Component, Path, PathBuf},
};

/// Normalises a workspace path lexically; refuses paths that leave the workspace.
pub fn normalize(p: &str) -> Result<String, &'static str> {
    if p.trim().is_empty() {
        return Err("is empty");
    }
    let path = Path::new(p);
    if path.is_absolute() {
        return Err("is outside the workspace (absolute paths are not allowed)");
    }
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err("is outside the workspace");
                }
            }
            _ => return Err("is outside the workspace"),
        }
    }
    if parts.is_empty() {
        return Ok(".".to_string());
    }
    Ok(parts.join("/"))
}

/// The nearest output folder that holds `path` (not `path` itself), with its producing
/// node: `path`'s ancestors looked up one by one (O(depth)).
pub(super) fn enclosing_output<'a>(
    path: &'a str,
    producers: &HashMap<String, usize>,
) -> Option<(&'a str, usize)> {
    let mut cut = path;
    while let Some(k) = cut.rfind('/') {
        cut = &cut[..k];
        if let Some(&p) = producers.get(cut) {
            return Some((cut, p));
        }
    }
    None
}

/// Whether `inner` is strictly inside folder `outer`.
pub fn is_inside(inner: &str, outer: &str) -> bool {
    inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'/'
}

/// `p` made absolute (against the current directory) and cleaned of `.`/`..`
/// lexically, with the symlinks of its longest existing ancestor resolved.
pub fn absolute_clean(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut lexical = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::Normal(s) => lexical.push(s),
            _ => {}
        }
    }
    let mut base = lexical.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut c) = std::fs::canonicalize(&base) {
            c.extend(rest.iter().rev());
            return c;
        }
        match (base.file_name().map(|n| n.to_os_string()), base.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                base = parent.to_path_buf();
            }
            _ => return lexical,
        }
    }
}

pub(super) fn relative_name(file: &Path, workdir: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let f = abs(file);
    let w = abs(workdir);
    f.strip_prefix(&w)
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_else(|_| f.to_string_lossy().into_owned())
}

//! What every command needs: the workspace, the cache, the stage kinds, a pipeline.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use dagrun_cache::{Cache, OpenOptions};
use dagrun_engine::{pipeline::Overrides, plan::Selection, stage::Registry, Pipeline};

use crate::{
    cli::{Global, OverrideArgs, SelectArgs},
    exit::{usage, CliResult, Failure},
};

pub struct Ctx {
    /// The directory dagrun was started in (relative paths on the command line are
    /// relative to it). The process itself runs in the workspace, so that native stages
    /// read relative paths of a pipeline from there, as command stages do.
    pub started_in: PathBuf,
    pub workdir: PathBuf,
    pub cache_dir: PathBuf,
    pub global: Global,
    pub registry: Registry,
}

impl Ctx {
    pub fn new(global: &Global) -> CliResult<Ctx> {
        let started_in = std::env::current_dir()
            .map_err(|e| anyhow!("cannot read the current directory: {e}"))?;
        let workdir = match &global.workdir {
            Some(w) => started_in.join(w),
            None => started_in.clone(),
        };
        let workdir = std::fs::canonicalize(&workdir)
            .map_err(|e| usage(format!("workspace `{}`: {e}", workdir.display())))?;
        if !workdir.is_dir() {
            return Err(usage(format!(
                "workspace `{}` is not a folder",
                workdir.display()
            )));
        }
        let started_in = std::fs::canonicalize(&started_in).unwrap_or(started_in);
        let cache_dir = match &global.cache {
            Some(c) => started_in.join(c),
            None => workdir.join(".dagrun"),
        };
        std::env::set_current_dir(&workdir)
            .map_err(|e| usage(format!("workspace `{}`: {e}", workdir.display())))?;
        Ok(Ctx {
            started_in,
            workdir,
            cache_dir,
            global: global.clone(),
            registry: dagrun_stages::registry(),
        })
    }

    /// A path given on the command line, made absolute against where dagrun started.
    pub fn user_path(&self, p: &Path) -> PathBuf {
        self.started_in.join(p)
    }

    /// Opens (creating) the cache, taking its lock.
    pub fn open_cache(&self, what: &str) -> CliResult<Cache> {
        let holder = format!("dagrun {what}");
        let quiet = self.global.quiet;
        let on_wait = move |who: &str| {
            if !quiet {
                eprintln!("waiting for {who} to release the cache...");
            }
        };
        Ok(Cache::open(
            &self.cache_dir,
            &OpenOptions {
                wait: self.global.wait,
                holder,
            },
            &on_wait,
        )?)
    }

    /// Opens the cache only if it exists (read-only commands write nothing new).
    pub fn open_existing_cache(&self, what: &str) -> CliResult<Option<Cache>> {
        if Cache::exists(&self.cache_dir) {
            self.open_cache(what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The overrides of `-S` and `--params` (the file first, then each -S in order).
    pub fn overrides(&self, a: &OverrideArgs) -> CliResult<Overrides> {
        let mut all = Overrides::default();
        if let Some(f) = &a.params_file {
            let path = self.user_path(f);
            let src = std::fs::read_to_string(&path)
                .map_err(|e| usage(format!("--params `{}`: {e}", f.display())))?;
            let from_file =
                Overrides::from_params_file(f, &src).map_err(|e| Failure::Usage(e.into()))?;
            all.0.extend(from_file.0);
        }
        all.0.extend(Overrides::from_sets(&a.set).map_err(usage)?.0);
        Ok(all)
    }

    /// Loads a pipeline with the overrides of the command line.
    pub fn load_with(&self, file: &Path, a: &OverrideArgs) -> CliResult<Pipeline> {
        let o = self.overrides(a)?;
        self.load_overridden(file, &o)
    }

    fn load_overridden(&self, file: &Path, overrides: &Overrides) -> CliResult<Pipeline> {
        let shown = file;
        let file = &self.user_path(file);
        if !file.exists() {
            return Err(usage(format!("pipeline `{}` not found", shown.display())));
        }
        if let Some(other) = self.other_workspace(file) {
            eprintln!(
                "note: the workspace is `{}` (the current directory), which has no cache; \
                 `{}` has one: use `--workdir {}` to work there",
                self.workdir.display(),
                other.display(),
                other.display()
            );
        }
        // Errors name the file as the user wrote it when that path still reaches it.
        let named = if self.started_in == self.workdir {
            shown
        } else {
            file.as_path()
        };
        Pipeline::load_with_overrides(
            named,
            &self.workdir,
            &self.cache_dir,
            &self.registry,
            overrides,
        )
        .map_err(|e| Failure::Usage(e.into()))
    }

    /// A folder holding a dagrun cache on the way from the pipeline file up to the
    /// workspace, when the workspace has none: the user probably meant that folder
    /// (`dagrun plan ../exp/p.yaml` from elsewhere).
    fn other_workspace(&self, file: &Path) -> Option<PathBuf> {
        if self.cache_dir != self.workdir.join(".dagrun") || Cache::exists(&self.cache_dir) {
            return None;
        }
        let file = std::fs::canonicalize(file).ok()?;
        file.parent()?
            .ancestors()
            .take_while(|d| *d != self.workdir)
            .find(|d| Cache::exists(&d.join(".dagrun")))
            .map(Path::to_path_buf)
    }

    /// The pipeline named, or the one of the last run in this workspace.
    pub fn pipeline_or_last(
        &self,
        file: Option<&Path>,
        cache: Option<&Cache>,
    ) -> CliResult<PathBuf> {
        if let Some(f) = file {
            return Ok(f.to_path_buf());
        }
        let last = match cache {
            Some(c) => c.runs()?.last().map(|r| r.pipeline.clone()),
            None => None,
        };
        match last {
            Some(p) => Ok(self.workdir.join(p)),
            None => Err(usage(
                "no pipeline given, and none has run in this workspace yet",
            )),
        }
    }

    pub fn selection(&self, p: &Pipeline, s: &SelectArgs) -> CliResult<Selection> {
        let resolve = |items: &[String]| -> CliResult<Vec<usize>> {
            let mut out = Vec::new();
            for it in items {
                out.extend(p.select(it).map_err(usage)?);
            }
            Ok(out)
        };
        let mut sel = Selection::default();
        let only = resolve(&s.only)?;
        let until = resolve(&s.until)?;
        if !only.is_empty() || !until.is_empty() {
            let mut nodes: std::collections::BTreeSet<usize> = only.into_iter().collect();
            nodes.extend(p.ancestors(&until));
            sel.nodes = Some(nodes);
        }
        let forced = resolve(&s.rerun)?;
        sel.forced = forced.iter().copied().collect();
        if s.downstream {
            for &f in &forced {
                for d in p.descendants(&[f]) {
                    if !sel.forced.contains(&d) {
                        sel.forced_downstream
                            .entry(d)
                            .or_insert_with(|| p.nodes[f].id.clone());
                    }
                }
            }
        }
        Ok(sel)
    }
}

/// GPUs on this machine: CUDA_VISIBLE_DEVICES if set, else /dev/nvidiaN devices.
pub fn detect_gpus() -> u32 {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return v
            .split(',')
            .filter(|s| !s.trim().is_empty() && s.trim() != "-1")
            .count() as u32;
    }
    std::fs::read_dir("/dev")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix("nvidia")
                        .map(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()))
                        .unwrap_or(false)
                })
                .count() as u32
        })
        .unwrap_or(0)
}

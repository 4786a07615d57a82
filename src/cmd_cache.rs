//! `dagrun cache gc` and `dagrun cache verify`.

use std::collections::HashSet;

use dagrun_engine::plan::{Evaluator, Selection};

use crate::{
    cli::CacheCommand,
    cmd_inspect::human_bytes,
    context::Ctx,
    exit::{usage, CliResult},
};

pub fn cmd_cache(ctx: &Ctx, c: &CacheCommand) -> CliResult {
    let cache = ctx
        .open_existing_cache("cache")?
        .ok_or_else(|| usage("no cache here yet"))?;
    match c {
        CacheCommand::Gc { pipelines, dry_run } => {
            // Keep, for every node of the given pipelines, the record its current key
            // names and the record of its last run.
            let mut keep = HashSet::new();
            for file in pipelines {
                let p = ctx.load(file)?;
                let ev = Evaluator::new(&p, Some(&cache), false);
                for (i, e) in ev.plan(&Selection::default())?.into_iter().enumerate() {
                    if let Some(k) = e.and_then(|e| e.key) {
                        keep.insert(k);
                    }
                    if let Some(l) = cache.latest(&p.nodes[i].id)? {
                        keep.insert(l.key);
                    }
                }
            }
            let r = cache.gc(&keep, *dry_run)?;
            let verb = if *dry_run { "would remove" } else { "removed" };
            println!(
                "{verb} {} records and {} objects, {} freed; kept {} records",
                r.records_removed,
                r.objects_removed,
                human_bytes(r.bytes_freed),
                r.records_kept
            );
        }
        CacheCommand::Verify => {
            let r = cache.verify()?;
            if r.corrupt_objects.is_empty() && r.records_dropped.is_empty() {
                println!("verified {} objects: no corruption", r.objects_checked);
            } else {
                println!(
                    "verified {} objects: {} corrupt (removed)",
                    r.objects_checked,
                    r.corrupt_objects.len()
                );
                for h in &r.corrupt_objects {
                    println!("  corrupt object {h}");
                }
                for n in &r.records_dropped {
                    println!("  dropped the record of `{n}`: it will run again");
                }
                return Err(crate::exit::Failure::StageFailed);
            }
        }
    }
    Ok(())
}

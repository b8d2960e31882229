//! `apiary check [hive.box.frame]`: verifies a meadow, or one frame, and exits non-zero when it
//! finds a problem (each printed with the key of the object it is about).

use apiary::Apiary;
use apiary::catalog::{check_meadow, check_named_frame};
use clap::Args;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The frame to check (default: every frame of the meadow).
    frame: Option<String>,
}

pub async fn run(storage: &str, args: CheckArgs) -> Result<(), Box<dyn std::error::Error>> {
    let ap = Apiary::open(storage).await?;
    let report = match &args.frame {
        Some(name) => {
            let parts: Vec<&str> = name.split('.').collect();
            let [hive, box_, frame] = parts[..] else {
                return Err(format!("{name:?}: give the frame as hive.box.frame").into());
            };
            check_named_frame(ap.registry(), hive, box_, frame).await?
        }
        None => check_meadow(ap.registry()).await?,
    };
    for p in &report.problems {
        println!("{}: {}", p.key, p.problem);
    }
    let what = args.frame.as_deref().unwrap_or(storage);
    if report.is_ok() {
        println!(
            "{what}: ok ({} frame(s), {} readable version(s), {} cell(s))",
            report.frames, report.versions, report.cells
        );
        Ok(())
    } else {
        Err(format!("{what}: {} problem(s) found", report.problems.len()).into())
    }
}

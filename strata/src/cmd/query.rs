//! `strata query "SQL"`: run SQL against a Strata server and print or save the result.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::query::{Connection, Format};

/// Run SQL against a Strata server and print the result.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SQL statement.
    sql: String,
    #[arg(long, value_enum, env = "STRATA_FORMAT", default_value = "table")]
    format: Format,
    /// Write the result here instead of standard output.
    #[arg(short, long, env = "STRATA_OUTPUT")]
    output: Option<PathBuf>,
    #[command(flatten)]
    connection: Connection,
}

pub async fn run(args: Args) -> Result<()> {
    let batches = crate::query::run(&args.connection, &args.sql).await?;
    match args.output {
        Some(path) => {
            let mut f = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            crate::query::write(&batches, args.format, &mut f)
        }
        None => {
            if args.format == Format::Parquet && std::io::stdout().is_terminal() {
                bail!("Parquet is binary: write it to a file with --output FILE");
            }
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            crate::query::write(&batches, args.format, &mut lock)?;
            lock.flush()?;
            Ok(())
        }
    }
}

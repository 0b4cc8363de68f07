//! `banger snapshot list | show | delete`. Snapshots are taken with `banger vm snapshot` and
//! restored with `banger vm create --from-snapshot` (see [`crate::vm`]).

use banger_api::{Timestamp, validate};

use crate::cli::{OutputFormat, SnapshotCommand};
use crate::daemon::Daemon;
use crate::exit::Failure;
use crate::output;

pub async fn run(command: &SnapshotCommand, format: OutputFormat) -> Result<(), Failure> {
    let text = match command {
        SnapshotCommand::List => {
            let daemon = Daemon::locate()?;
            let snapshots = daemon
                .call(async |client| client.list_snapshots().await)
                .await?;
            match format {
                OutputFormat::Json => output::json(&snapshots),
                OutputFormat::Text => output::snapshot_list(&snapshots, Timestamp::now()),
            }
        }
        SnapshotCommand::Show { name } => {
            let daemon = Daemon::locate()?;
            let snapshot = daemon
                .call(async |client| client.get_snapshot(name).await)
                .await?;
            match format {
                OutputFormat::Json => output::json(&snapshot),
                OutputFormat::Text => output::snapshot_show(&snapshot, Timestamp::now()),
            }
        }
        SnapshotCommand::Delete { name } => {
            // Ids (16 hex digits) are valid labels too.
            validate::name("snapshot", name)?;
            let daemon = Daemon::locate()?;
            daemon
                .call(async |client| client.delete_snapshot(name).await)
                .await?;
            output::deleted("snapshot", name, format)
        }
    };
    output::print(&text);
    Ok(())
}

//! `banger pool set | list`: the warm pool of ready VMs that `banger vm create` takes instead
//! of booting one (see `docs/pool.md`).

use banger_api::validate;

use crate::cli::{OutputFormat, PoolCommand};
use crate::daemon::Daemon;
use crate::exit::Failure;
use crate::output;

pub async fn run(command: &PoolCommand, format: OutputFormat) -> Result<(), Failure> {
    let text = match command {
        PoolCommand::Set { image, size } => {
            validate::name("image", image)?;
            validate::pool_size(*size)?;
            let daemon = Daemon::locate()?;
            let entry = daemon
                .call(async |client| client.set_pool(image, *size).await)
                .await?;
            match format {
                OutputFormat::Json => output::json(&entry),
                OutputFormat::Text => output::pool_set(&entry),
            }
        }
        PoolCommand::List => {
            let daemon = Daemon::locate()?;
            let entries = daemon.call(async |client| client.list_pool().await).await?;
            match format {
                OutputFormat::Json => output::json(&entries),
                OutputFormat::Text => output::pool_list(&entries),
            }
        }
    };
    output::print(&text);
    Ok(())
}

//! Commands about the host banger runs on and the ways into it besides the CLI:
//! `banger doctor` (the daemon's host checks) and `banger web` (a one-time login URL for the
//! web console).

use banger_api::{ApiError, DoctorCheckStatus, ErrorCode, Timestamp};

use crate::cli::OutputFormat;
use crate::daemon::Daemon;
use crate::exit::{Exit, Failure};
use crate::output;

/// `banger doctor`: prints every check; exits [`Exit::HostNotReady`] when one failed.
pub async fn doctor(format: OutputFormat) -> Result<(), Failure> {
    let daemon = Daemon::locate()?;
    let report = daemon.call(async |client| client.doctor().await).await?;
    output::print(&match format {
        OutputFormat::Json => output::json(&report),
        OutputFormat::Text => output::doctor(&report),
    });
    let failed = report
        .checks
        .iter()
        .filter(|c| c.status == DoctorCheckStatus::Fail)
        .count();
    if failed > 0 {
        return Err(Failure {
            error: ApiError::new(
                ErrorCode::InvalidState,
                format!("{failed} host check(s) failed"),
            )
            .with_hint(
                "apply the fixes printed for each failed check, then run banger doctor again",
            ),
            exit: Exit::HostNotReady,
        });
    }
    Ok(())
}

/// `banger web`: asks the daemon for a one-time login URL to the web console.
pub async fn web(format: OutputFormat) -> Result<(), Failure> {
    let daemon = Daemon::locate()?;
    let login = daemon.call(async |client| client.web_login().await).await?;
    output::print(&match format {
        OutputFormat::Json => output::json(&login),
        OutputFormat::Text => output::web_login(&login, Timestamp::now()),
    });
    Ok(())
}

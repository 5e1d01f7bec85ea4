//! `tandem-server`: the relay's command line.

use clap::{Parser, Subcommand};
use tandem_server::admin::AdminCommand;
use tandem_server::config::ServeConfig;

#[derive(Debug, Parser)]
#[command(name = "tandem-server", version, about = "Tandem's sync relay")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay: websocket sync at `/` and `/sync`, `/healthz`, `/metrics`.
    Serve(ServeConfig),
    /// Administer accounts: programs, users, pairings, device tokens; read the audit.
    Admin(AdminCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(config) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(tandem_server::serve(config))?;
        }
        Command::Admin(command) => {
            tandem_server::admin::run(command, &mut std::io::stdout().lock())?;
        }
    }
    Ok(())
}

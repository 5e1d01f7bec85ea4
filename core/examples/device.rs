//! A device on the command line: the walkthrough in the README runs two of these against one relay.
//!
//! Every invocation opens the device's store, does one thing, and (with `--relay`) syncs until the
//! relay has everything and the exchange is quiet. Run with `--help` for the commands.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use tandem_core::client::{ClientConfig, SyncClient};
use tandem_core::device::Device;
use tandem_core::model::{DirectoryEntry, DocKind, NewDirectory, NewGoal, NewPlan};
use tandem_core::repo::{Repo, RepoConfig};
use tandem_core::{DirectoryId, DocumentId, GoalId, PlanId, UserId};

#[derive(Debug, Parser)]
#[command(about = "A Tandem device: edit plans offline, sync through a relay")]
struct Cli {
    /// The device's database file (created on first use).
    #[arg(long)]
    db: std::path::PathBuf,
    /// Who uses this device.
    #[arg(long)]
    user: String,
    /// The relay's websocket URL, e.g. ws://127.0.0.1:3030/sync. Without it, nothing syncs.
    #[arg(long)]
    relay: Option<String>,
    /// The device token issued by `tandem-server admin token issue`.
    #[arg(long, env = "TANDEM_TOKEN")]
    token: Option<String>,
    /// Work offline: edits are stored on the device and sent on the next sync.
    #[arg(long)]
    offline: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a pairing's directory and the mentee's plan in it; prints both URLs.
    NewPlan {
        #[arg(long)]
        mentee: String,
        #[arg(long)]
        program: String,
        #[arg(long)]
        term: String,
    },
    /// Follow a pairing's directory: its documents sync to this device.
    Follow { directory: String },
    /// Add a goal to a plan; prints the goal id.
    AddGoal { plan: String, title: String },
    /// Set a goal's target date (YYYY-MM-DD).
    SetTarget {
        plan: String,
        goal: String,
        date: NaiveDate,
    },
    /// Print a plan: its goals and any conflicts.
    Show { plan: String },
    /// Only sync.
    Sync,
    /// Print this device's id, which `tandem-server admin token issue --device` binds a token to.
    DeviceId,
}

/// The device, either syncing through a relay or offline.
enum Link {
    Online(SyncClient),
    Offline(Box<Device>),
}

impl Link {
    fn with_repo<T>(
        &mut self,
        f: impl FnOnce(&mut Repo) -> tandem_core::Result<T>,
    ) -> tandem_core::Result<T> {
        match self {
            Self::Online(client) => client.with_repo(f),
            Self::Offline(device) => device.with_repo(f),
        }
    }

    fn follow(&mut self, document: DocumentId) -> tandem_core::Result<()> {
        match self {
            Self::Online(client) => client.follow(document),
            Self::Offline(device) => device.follow(document),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = RepoConfig::new(
        UserId::from(cli.user.as_str()),
        format!("{}'s device", cli.user),
    );
    let repo = Repo::open(&cli.db, config).context("opening the device store")?;
    if let Command::DeviceId = cli.command {
        println!("{}", repo.device());
        return Ok(());
    }
    let device = Device::new(repo)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut link = match (&cli.relay, cli.offline) {
        (Some(url), false) => {
            let mut config = ClientConfig::new(url.clone());
            config.token = cli.token.clone();
            Link::Online(SyncClient::start(device, config, runtime.handle()))
        }
        (None, false) => bail!("pass --relay URL to sync, or --offline to work offline"),
        (_, true) => Link::Offline(Box::new(device)),
    };
    run(&mut link, &cli.command)?;
    if let Link::Online(client) = &link {
        runtime.block_on(async {
            let status = client
                .sync_now(Duration::from_secs(20))
                .await
                .context("syncing with the relay")?;
            eprintln!(
                "synced ({:?}); {} change(s) not yet on the relay",
                status.connection, status.pending_changes
            );
            client.stop().await;
            anyhow::Ok(())
        })?;
    }
    if let Command::Show { plan } = &cli.command {
        show(&mut link, plan)?;
    }
    Ok(())
}

fn run(client: &mut Link, command: &Command) -> anyhow::Result<()> {
    match command {
        Command::NewPlan {
            mentee,
            program,
            term,
        } => {
            let (directory, plan) = client.with_repo(|repo| {
                let coach = repo.user().clone();
                let mentee = UserId::from(mentee.as_str());
                let directory = repo.create_directory(NewDirectory {
                    program: program.clone(),
                    coach: coach.clone(),
                    mentee: mentee.clone(),
                })?;
                let plan = repo.create_plan(NewPlan {
                    mentee,
                    coaches: vec![coach],
                    program: program.clone(),
                    term: term.clone(),
                    strengths: vec![],
                    challenges: vec![],
                    learning_style: String::new(),
                })?;
                let entry = DirectoryEntry {
                    document: plan.document_id(),
                    kind: DocKind::Plan,
                    title: format!("Success plan, {term}"),
                };
                repo.add_directory_entry(directory, entry)?;
                Ok((directory, plan))
            })?;
            client.follow(directory.document_id())?;
            println!("directory {}", directory.document_id().url());
            println!("plan      {}", plan.document_id().url());
        }
        Command::Follow { directory } => {
            let directory = DirectoryId(DocumentId::parse(directory)?);
            client.follow(directory.document_id())?;
        }
        Command::AddGoal { plan, title } => {
            let plan = PlanId(DocumentId::parse(plan)?);
            client.follow(plan.document_id())?;
            let goal = client.with_repo(|repo| {
                repo.add_goal(
                    plan,
                    NewGoal {
                        title: title.clone(),
                        description: String::new(),
                        category: "academic".into(),
                        target_date: None,
                    },
                )
            })?;
            println!("goal {goal}");
        }
        Command::SetTarget { plan, goal, date } => {
            let plan = PlanId(DocumentId::parse(plan)?);
            let goal = GoalId::from(goal.as_str());
            client.with_repo(|repo| repo.set_goal_target_date(plan, &goal, Some(*date)))?;
        }
        Command::Show { plan } => {
            client.follow(DocumentId::parse(plan)?)?;
        }
        Command::Sync | Command::DeviceId => {}
    }
    Ok(())
}

fn show(client: &mut Link, plan: &str) -> anyhow::Result<()> {
    let id = PlanId(DocumentId::parse(plan)?);
    let (plan, conflicts) =
        client.with_repo(|repo| Ok((repo.plan(id)?, repo.conflicts(id.document_id())?)))?;
    println!("{} ({}, {})", plan.mentee, plan.program, plan.term);
    for goal in &plan.goals {
        let target = goal.target_date.map(|d| d.to_string()).unwrap_or_default();
        println!(
            "  goal {}: {} {} {}%",
            goal.id, goal.title, target, goal.progress
        );
    }
    for conflict in &conflicts {
        let values: Vec<String> = conflict
            .values
            .iter()
            .map(|value| {
                let by = value
                    .author
                    .as_ref()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                format!("{} (by {by})", value.value)
            })
            .collect();
        println!(
            "  conflict at {}: {}",
            conflict.path.join("/"),
            values.join(" vs ")
        );
    }
    Ok(())
}

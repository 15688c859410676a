//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use coachlibre_core::accounts::{Accounts, By, NewUser};
use coachlibre_core::actor::Scope;
use coachlibre_core::page::{MAX_LIMIT, PageRequest};
use coachlibre_core::user::Role;
use coachlibre_server::config::{Config, LogFormat, Secret};
use coachlibre_server::{Application, open_store, shutdown_signal};

/// CoachLibre: a self-hostable AI coaching platform.
#[derive(Debug, Parser)]
#[command(name = "coachlibre", version, about)]
pub struct Cli {
    /// Configuration file (missing file: defaults and environment only).
    #[arg(
        long,
        global = true,
        env = "COACHLIBRE_CONFIG",
        default_value = "coachlibre.toml"
    )]
    config: PathBuf,
    /// Data directory (SQLite file, secret key).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform (HTTP API, docs, metrics).
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:8080.
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration, secrets masked.
    Config,
    /// Manage tenants (practices, schools).
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage users of a tenant.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage API keys of a tenant.
    #[command(subcommand)]
    Apikey(ApiKeyCmd),
    /// Install and list the embedded models.
    #[command(subcommand)]
    Models(crate::models::ModelsCmd),
    /// Manage the knowledge search indexes.
    #[command(subcommand)]
    Index(IndexCmd),
    /// One chat turn with a configured model, streamed to the terminal.
    Chat(crate::chat::ChatArgs),
    /// Run background jobs and the scheduler without the HTTP server (for extra nodes
    /// sharing the database; `serve` runs them too unless `jobs.run_in_serve = false`).
    Worker,
    /// Inspect and manage background jobs.
    #[command(subcommand)]
    Jobs(crate::jobs::JobsCmd),
    /// List and run workflows.
    #[command(subcommand)]
    Workflow(crate::workflow::WorkflowCmd),
}

#[derive(Debug, Subcommand)]
enum TenantCmd {
    /// Create a tenant.
    Create {
        /// Short URL-safe name, e.g. `acme-coaching`.
        slug: String,
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// List tenants.
    List,
}

#[derive(Debug, Args)]
pub(crate) struct TenantArg {
    /// Tenant slug.
    #[arg(long, default_value = "default")]
    tenant: String,
}

impl TenantArg {
    pub(crate) async fn find(
        &self,
        accounts: &Accounts,
    ) -> anyhow::Result<coachlibre_core::tenant::Tenant> {
        accounts
            .tenant_by_slug(&self.tenant)
            .await
            .with_context(|| {
                format!(
                    "no tenant '{}': list them with `coachlibre tenant list`, create one with \
                 `coachlibre tenant create` ('default' is created by the first `coachlibre serve`)",
                    self.tenant
                )
            })
    }
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create a user; prints a generated password unless COACHLIBRE_NEW_PASSWORD is set.
    Create {
        #[command(flatten)]
        tenant: TenantArg,
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// admin, coach or client.
        #[arg(long)]
        role: Role,
    },
    /// List users.
    List {
        #[command(flatten)]
        tenant: TenantArg,
        /// Only this role.
        #[arg(long)]
        role: Option<Role>,
    },
    /// Change a user's role.
    SetRole {
        #[command(flatten)]
        tenant: TenantArg,
        #[arg(long)]
        email: String,
        role: Role,
    },
    /// Set a new random password (printed once) and clear any lockout.
    ResetPassword {
        #[command(flatten)]
        tenant: TenantArg,
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
enum ApiKeyCmd {
    /// Issue a key for a user; the key is printed once.
    Create {
        #[command(flatten)]
        tenant: TenantArg,
        /// Owner's email.
        #[arg(long)]
        email: String,
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// Comma-separated: read, write, admin.
        #[arg(long, value_delimiter = ',', default_value = "read")]
        scopes: Vec<String>,
    },
    /// List keys.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Revoke a key by id.
    Revoke {
        #[command(flatten)]
        tenant: TenantArg,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum IndexCmd {
    /// Re-embed every passage not embedded by the configured embedding model (after a model
    /// change), with a progress bar; the search indexes are rebuilt from the database.
    Rebuild,
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(&cli.config)?;
    if let Some(d) = &cli.data_dir {
        config.data_dir.clone_from(d);
    }
    if let Some(u) = &cli.database_url {
        config.database_url = Some(Secret::new(u.clone()));
    }
    if let Command::Serve { bind: Some(b) } = &cli.command {
        config.bind = *b;
    }
    Ok(config)
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    // Colours only for a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Run one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    init_tracing(config.log_format);
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Models(cmd) => crate::models::run(&config.models_dir(), Some(&config), cmd).await,
        Command::Chat(args) => crate::chat::run(&config, args).await,
        Command::Config => {
            print!("{}", config.to_masked_toml()?);
            Ok(())
        }
        Command::Migrate => {
            let store = open_store(&config).await?;
            println!(
                "database is at the latest schema ({})",
                coachlibre_store::redact_url(&config.database_url())
            );
            store.close().await;
            Ok(())
        }
        Command::Index(IndexCmd::Rebuild) => index_rebuild(&config).await,
        Command::Worker => coachlibre_server::run_worker(config, shutdown_signal()).await,
        Command::Workflow(cmd) => {
            let store = open_store(&config).await?;
            let accounts = Accounts::new(store.clone());
            let result = crate::workflow::run(&config, &accounts, store.clone(), cmd).await;
            store.close().await;
            result
        }
        Command::Jobs(cmd) => {
            let store = open_store(&config).await?;
            let accounts = Accounts::new(store.clone());
            let result = crate::jobs::run(&config, &accounts, store.clone(), cmd).await;
            store.close().await;
            result
        }
        Command::Tenant(cmd) => {
            let store = open_store(&config).await?;
            let result = tenant(Accounts::new(store.clone()), cmd).await;
            store.close().await;
            result
        }
        Command::User(cmd) => {
            let store = open_store(&config).await?;
            let result = user(Accounts::new(store.clone()), cmd).await;
            store.close().await;
            result
        }
        Command::Apikey(cmd) => {
            let store = open_store(&config).await?;
            let result = apikey(Accounts::new(store.clone()), cmd).await;
            store.close().await;
            result
        }
    }
}

async fn index_rebuild(config: &Config) -> anyhow::Result<()> {
    use coachlibre_core::model::ModelSource;
    let store = open_store(config).await?;
    let models = coachlibre_server::models::ConfiguredModels::new(
        config.model_registry(),
        config.agents.embedding_model.clone(),
    );
    let Some(embedder) = models.embedder() else {
        anyhow::bail!(
            "the embedding model '{}' is not available: run `coachlibre models pull` or check \
             agents.embedding_model",
            config.agents.embedding_model
        );
    };
    let name = embedder.name().to_owned();
    let knowledge = coachlibre_knowledge::Knowledge::new(store.clone(), Some(embedder));
    let pb = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {pos}/{len} passages {per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(format!("embedding with {name}"));
    let n = knowledge
        .rebuild(|done, total| {
            pb.set_length(total);
            pb.set_position(done);
        })
        .await
        .map_err(|e| anyhow::anyhow!("rebuilding: {e}"))?;
    pb.finish_and_clear();
    println!("{n} passages re-embedded with {name}; indexes rebuild from the database on next use");
    store.close().await;
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let missing = crate::models::missing(&config.models_dir());
    if !missing.is_empty() {
        tracing::warn!(
            models = ?missing,
            dir = %config.models_dir().display(),
            "embedded models are not installed: run `coachlibre models pull`"
        );
    }
    let app = Application::build(config).await?;
    if let Some((tenant, admin)) = app.bootstrap() {
        println!(
            "CoachLibre created the tenant '{}' and its first admin:",
            tenant.slug.as_str()
        );
        println!("  email:    {}", admin.user.email);
        match &admin.initial_password {
            Some(p) => println!("  password: {p}\n  (shown this once: sign in and change it)"),
            None => println!("  password: the one given in COACHLIBRE_ADMIN_PASSWORD"),
        }
    }
    let addr = app.local_addr()?;
    println!("CoachLibre is listening on http://{addr} (API docs: http://{addr}/docs)");
    tracing::info!(%addr, "listening");
    app.run_until_stopped(shutdown_signal()).await
}

async fn tenant(accounts: Accounts, cmd: TenantCmd) -> anyhow::Result<()> {
    match cmd {
        TenantCmd::Create { slug, name } => {
            let t = accounts.create_tenant(&slug, &name).await?;
            println!("created tenant {} ({})", t.slug.as_str(), t.id);
        }
        TenantCmd::List => {
            println!("{:<24} {:<36} NAME", "SLUG", "ID");
            for t in accounts.list_tenants().await? {
                println!("{:<24} {:<36} {}", t.slug.as_str(), t.id, t.name);
            }
        }
    }
    Ok(())
}

async fn user(accounts: Accounts, cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Create {
            tenant,
            email,
            name,
            role,
        } => {
            let t = tenant.find(&accounts).await?;
            let password = std::env::var("COACHLIBRE_NEW_PASSWORD").ok();
            let created = accounts
                .create_user(
                    By::Operator(t.id),
                    NewUser {
                        email,
                        display_name: name,
                        role,
                        password,
                    },
                )
                .await?;
            println!(
                "created {} {} ({})",
                created.user.role, created.user.email, created.user.id
            );
            if let Some(p) = created.initial_password {
                println!("password: {p}\n(shown this once)");
            }
        }
        UserCmd::List { tenant, role } => {
            let t = tenant.find(&accounts).await?;
            println!("{:<36} {:<7} {:<32} NAME", "ID", "ROLE", "EMAIL");
            let mut page = PageRequest {
                limit: MAX_LIMIT,
                cursor: None,
            };
            loop {
                let p = accounts.list_users(By::Operator(t.id), role, &page).await?;
                for u in &p.items {
                    println!(
                        "{:<36} {:<7} {:<32} {}",
                        u.id, u.role, u.email, u.display_name
                    );
                }
                match p.next_cursor.as_deref() {
                    Some(c) => page = PageRequest::parse(Some(MAX_LIMIT), Some(c))?,
                    None => break,
                }
            }
        }
        UserCmd::SetRole {
            tenant,
            email,
            role,
        } => {
            let t = tenant.find(&accounts).await?;
            let u = accounts.user_by_email(t.id, &email).await?;
            let v = accounts.set_role(By::Operator(t.id), u.id, role).await?;
            println!("{} is now {}", v.email, v.role);
        }
        UserCmd::ResetPassword { tenant, email } => {
            let t = tenant.find(&accounts).await?;
            let u = accounts.user_by_email(t.id, &email).await?;
            let p = accounts.reset_password(By::Operator(t.id), u.id).await?;
            println!(
                "new password for {}: {p}\n(shown this once; their sessions were ended)",
                u.email.as_str()
            );
        }
    }
    Ok(())
}

async fn apikey(accounts: Accounts, cmd: ApiKeyCmd) -> anyhow::Result<()> {
    match cmd {
        ApiKeyCmd::Create {
            tenant,
            email,
            name,
            scopes,
        } => {
            let t = tenant.find(&accounts).await?;
            let u = accounts.user_by_email(t.id, &email).await?;
            let scopes = scopes
                .iter()
                .map(|s| Scope::parse(s.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            let k = accounts
                .create_api_key(By::Operator(t.id), Some(u.id), &name, &scopes)
                .await?;
            println!("created API key {} for {}", k.key.id, u.email.as_str());
            println!("{}\n(shown this once: store it now)", k.secret);
        }
        ApiKeyCmd::List { tenant } => {
            let t = tenant.find(&accounts).await?;
            println!(
                "{:<36} {:<20} {:<18} {:<8} NAME",
                "ID", "PREFIX", "SCOPES", "STATE"
            );
            let mut page = PageRequest {
                limit: MAX_LIMIT,
                cursor: None,
            };
            loop {
                let p = accounts.list_api_keys(By::Operator(t.id), &page).await?;
                for k in &p.items {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<36} {:<20} {:<18} {:<8} {}",
                        k.id,
                        k.prefix,
                        scopes.join(","),
                        state,
                        k.name
                    );
                }
                match p.next_cursor.as_deref() {
                    Some(c) => page = PageRequest::parse(Some(MAX_LIMIT), Some(c))?,
                    None => break,
                }
            }
        }
        ApiKeyCmd::Revoke { tenant, id } => {
            let t = tenant.find(&accounts).await?;
            let id = id.parse().context("not an API key id")?;
            accounts.revoke_api_key(By::Operator(t.id), id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

//! The CoachLibre HTTP server.
//!
//! [`Application::build`] opens the store (migrating it), creates the first tenant and admin
//! on an empty database, derives the keys, binds the listener and assembles the router;
//! [`Application::run_until_stopped`] serves until the shutdown future resolves, then drains
//! requests in flight. The binary and the test harness both go through these two steps.
//!
//! Request pipeline, outermost first: request id → trace span → panic catcher → JSON error
//! bodies → security headers → CORS → timeout → body limit → metrics → per-IP rate limit →
//! (on protected routes) authentication, scope check and per-user rate limit → handler.

pub mod config;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod models;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{from_fn_with_state, map_response};
use coachlibre_agent::{Coaching, Runtime};
use coachlibre_core::accounts::{Accounts, CreatedUser};
use coachlibre_core::auth::{Auth, Keys};
use coachlibre_core::model::ModelSource;
use coachlibre_core::store::Store;
use coachlibre_core::tenant::Tenant;
use coachlibre_knowledge::Knowledge;
use coachlibre_store::{ConnectOptions, SqlStore};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::middleware::metrics::Metrics;
use crate::state::{AppState, Limits};

#[derive(OpenApi)]
#[openapi(
    info(title = "CoachLibre API", description = "Self-hostable AI coaching platform. \
        Errors are `{\"error\": {\"code\", \"message\"}}` with a stable `code`. \
        Authenticate with `Authorization: Bearer <access token or API key>`."),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Sign-in, tokens, two-factor"),
        (name = "me", description = "The signed-in user"),
        (name = "users", description = "People of the tenant and their roles"),
        (name = "api-keys", description = "Keys for integrations"),
        (name = "audit", description = "Audit trail"),
        (name = "agents", description = "AI coach agents"),
        (name = "conversations", description = "Conversations and streamed turns"),
        (name = "memory", description = "What agents know about a client: profile, memories, goals"),
        (name = "approvals", description = "Sensitive tool calls and notifications"),
        (name = "openai", description = "OpenAI-compatible facade over agents"),
        (name = "knowledge", description = "Coaches' collections, documents and search"),
        (name = "jobs", description = "Background jobs and cron schedules"),
        (name = "skills", description = "Skills: prompt programs run as jobs"),
        (name = "analysis", description = "Business analyses of a website, exported as reports"),
        (name = "workflows", description = "Workflows: DAGs of steps, versioned, run as jobs"),
        (name = "sms", description = "Text messages: phone numbers, the tenant's numbers, the gateway's webhook"),
        (name = "operations", description = "Probes and metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route and the OpenAPI document describing them.
pub fn router(state: AppState) -> (Router, serde_json::Value) {
    use routes::{
        agents, analysis, api_keys, approvals, audit, auth, clients, conversations, health, jobs,
        knowledge, me, openai, skills, sms, users, workflows,
    };

    let public = OpenApiRouter::new()
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(workflows::webhook))
        .routes(routes!(sms::twilio_webhook));
    let protected = OpenApiRouter::new()
        .routes(routes!(auth::logout))
        .routes(routes!(auth::mfa_enroll))
        .routes(routes!(auth::mfa_verify))
        .routes(routes!(auth::mfa_disable))
        .routes(routes!(me::get_me))
        .routes(routes!(me::change_password))
        .routes(routes!(me::get_tenant))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(users::get_user))
        .routes(routes!(users::set_user_role))
        .routes(routes!(users::reset_user_password))
        .routes(routes!(users::list_user_coaches))
        .routes(routes!(users::assign_coach, users::unassign_coach))
        .routes(routes!(sms::get_phone, sms::put_phone))
        .routes(routes!(sms::list_numbers, sms::add_number))
        .routes(routes!(sms::remove_number))
        .routes(routes!(api_keys::list_api_keys, api_keys::create_api_key))
        .routes(routes!(api_keys::revoke_api_key))
        .routes(routes!(audit::list_audit))
        .routes(routes!(agents::list_templates))
        .routes(routes!(agents::list_agents, agents::create_agent))
        .routes(routes!(
            agents::get_agent,
            agents::update_agent,
            agents::delete_agent
        ))
        .routes(routes!(
            conversations::list_conversations,
            conversations::create_conversation
        ))
        .routes(routes!(
            conversations::get_conversation,
            conversations::update_conversation,
            conversations::delete_conversation
        ))
        .routes(routes!(
            conversations::list_messages,
            conversations::send_message
        ))
        .routes(routes!(clients::get_profile, clients::put_profile))
        .routes(routes!(clients::list_memories))
        .routes(routes!(clients::delete_memory))
        .routes(routes!(clients::list_goals))
        .routes(routes!(clients::list_reminders))
        .routes(routes!(approvals::list_approvals))
        .routes(routes!(approvals::decide))
        .routes(routes!(approvals::list_notifications))
        .routes(routes!(approvals::mark_read))
        .routes(routes!(approvals::get_retention, approvals::put_retention))
        .routes(routes!(openai::list_models))
        .routes(routes!(openai::chat_completions))
        .routes(routes!(
            knowledge::list_collections,
            knowledge::create_collection
        ))
        .routes(routes!(
            knowledge::get_collection,
            knowledge::update_collection,
            knowledge::delete_collection
        ))
        .routes(routes!(knowledge::list_documents))
        .routes(routes!(knowledge::import_url))
        .routes(routes!(knowledge::get_document, knowledge::delete_document))
        .routes(routes!(knowledge::get_chunk))
        .routes(routes!(knowledge::search))
        .routes(routes!(jobs::list_jobs, jobs::submit_job))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::job_events))
        .routes(routes!(jobs::job_counts))
        .routes(routes!(jobs::list_schedules, jobs::create_schedule))
        .routes(routes!(jobs::delete_schedule))
        .routes(routes!(skills::list_skills, skills::put_skill))
        .routes(routes!(skills::get_skill, skills::delete_skill))
        .routes(routes!(skills::run_skill))
        .routes(routes!(analysis::list_analyses, analysis::start_analysis))
        .routes(routes!(analysis::get_analysis))
        .routes(routes!(analysis::analysis_events))
        .routes(routes!(analysis::analysis_report))
        .routes(routes!(workflows::list_workflows, workflows::save_workflow))
        .routes(routes!(workflows::get_workflow))
        .routes(routes!(workflows::list_runs, workflows::start_run))
        .routes(routes!(workflows::get_run))
        .routes(routes!(workflows::get_webhook))
        .merge(
            // Uploads get their own body limit (the extracted text is checked again).
            OpenApiRouter::new()
                .routes(routes!(knowledge::upload_document))
                .layer(DefaultBodyLimit::max(
                    coachlibre_knowledge::extract::MAX_UPLOAD_BYTES + 64 * 1024,
                )),
        )
        .route_layer(from_fn_with_state(state.clone(), middleware::require_auth));
    let api = public
        .merge(protected)
        .layer(from_fn_with_state(state.clone(), middleware::guard));
    // The web app: its pages check the session cookie themselves (signing in is one of them).
    let web = web::routes().layer(from_fn_with_state(state.clone(), middleware::guard));
    let ops = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics));
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api)
        .merge(ops)
        .split_for_parts();
    let openapi = openapi::complete(&openapi);
    let router = router
        .merge(
            SwaggerUi::new("/docs").external_url_unchecked("/api/v1/openapi.json", openapi.clone()),
        )
        .merge(web)
        .fallback(web::fallback)
        .with_state(state);
    (router, openapi)
}

/// The router wrapped in the protection and observability layers.
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    let metrics = state.metrics.clone();
    let (router, _) = router(state);
    let request_id = HeaderName::from_static("x-request-id");
    let mut app = router
        .layer(from_fn_with_state(metrics, middleware::metrics::record))
        .layer(DefaultBodyLimit::max(config.http.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(config.http.request_timeout_secs),
        ));
    if !config.http.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = config
            .http
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .max_age(Duration::from_secs(3600)),
        );
    }
    app = app.layer(from_fn_with_state(
        Arc::new(config.http.clone()),
        middleware::transport_headers,
    ));
    let security_headers = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             script-src 'self'; frame-ancestors 'none'",
        ),
    ];
    for (name, value) in security_headers {
        app = app.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    app.layer(map_response(error::json_error_bodies))
        .layer(CatchPanicLayer::new())
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), uri = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Connect to the configured database and apply pending migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<SqlStore>> {
    let url = config.database_url();
    let opts = ConnectOptions {
        max_connections: config.database.max_connections,
        acquire_timeout: Duration::from_secs(config.database.acquire_timeout_secs),
    };
    let store = SqlStore::connect(&url, &opts)
        .await
        .with_context(|| format!("opening {}", coachlibre_store::redact_url(&url)))?;
    for m in store.migrate().await? {
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(Arc::new(store))
}

/// The master secret: from the config, else from `data_dir/secret.key` (created once, 0600).
pub fn load_keys(config: &Config) -> anyhow::Result<Keys> {
    if let Some(s) = &config.secret_key {
        return Keys::from_master(s.expose().as_bytes()).map_err(|e| anyhow::anyhow!("{e}"));
    }
    let path = config.data_dir.join("secret.key");
    let master = match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_secret_file(&path)?,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Keys::from_master(master.as_bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn create_secret_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let secret = coachlibre_core::auth::secret::random_token(48);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    tracing::info!(path = %path.display(), "generated a new secret key");
    Ok(secret)
}

/// Build the services over a store and a source of models.
pub fn build_state(
    config: Config,
    store: Arc<dyn Store>,
    keys: Keys,
    models: Arc<dyn ModelSource>,
) -> anyhow::Result<AppState> {
    let policy = config.auth_policy();
    let knowledge = Knowledge::new(store.clone(), models.embedder())
        .allow_private_urls(config.knowledge.allow_private_urls)
        .limits(config.knowledge.limits());
    let runtime = agent_runtime(
        &config,
        store.clone(),
        models.clone(),
        Arc::new(knowledge.clone()),
    );
    let (registry, catalog) = job_registry(&config, store.clone(), models.clone(), runtime.clone());
    let jobs = coachlibre_jobs::Jobs::new(store.clone(), registry);
    let workflows =
        coachlibre_workflows::Workflows::new(store.clone(), jobs.clone(), catalog.clone());
    // Workflows listen to what happens in the services (messages, goals, documents).
    let events: Arc<dyn coachlibre_core::event::EventSink> = Arc::new(workflows.clone());
    knowledge.set_events(events.clone());
    runtime.set_events(events);
    let knowledge = knowledge.resume();
    let skills = coachlibre_skills::Skills::new(catalog, jobs.clone());
    let analyses = coachlibre_analysis::Analyses::new(store.clone(), jobs.clone());
    let sms = coachlibre_sms::Sms::new(store.clone(), jobs.clone());
    Ok(AppState {
        knowledge,
        jobs,
        skills,
        analyses,
        workflows,
        sms,
        auth: Auth::new(store.clone(), keys, policy),
        accounts: Accounts::new(store.clone()),
        coaching: Coaching::new(store.clone(), runtime),
        metrics: Metrics::new()?,
        limits: Arc::new(Limits::from_config(&config)),
        config: Arc::new(config),
        store,
    })
}

/// [`job_registry`] for a command-line process, with its own agent runtime.
pub fn standalone_registry(
    config: &Config,
    store: Arc<dyn Store>,
    models: Arc<dyn ModelSource>,
) -> (coachlibre_jobs::Registry, coachlibre_skills::Catalog) {
    let knowledge = Knowledge::new(store.clone(), models.embedder());
    let runtime = agent_runtime(config, store.clone(), models.clone(), Arc::new(knowledge));
    job_registry(config, store, models, runtime)
}

/// The agent runtime: conversations' turns, and workflows' agent and tool steps.
pub fn agent_runtime(
    config: &Config,
    store: Arc<dyn Store>,
    models: Arc<dyn ModelSource>,
    knowledge: Arc<dyn coachlibre_core::knowledge::KnowledgeSource>,
) -> Runtime {
    Runtime::new(store, models)
        .with_max_steps(config.agents.max_steps)
        .with_knowledge(knowledge)
}

/// Every job kind this build runs, with the skill catalogue its `skill.run` handler uses;
/// `runtime` runs workflows' agent and tool steps.
pub fn job_registry(
    config: &Config,
    store: Arc<dyn Store>,
    models: Arc<dyn ModelSource>,
    runtime: Runtime,
) -> (coachlibre_jobs::Registry, coachlibre_skills::Catalog) {
    let mut tools =
        coachlibre_skills::SkillTools::default().with_web(config.knowledge.allow_private_urls);
    if let Some(k) = runtime.knowledge() {
        tools = tools.with_knowledge(store.clone(), k);
    }
    let catalog =
        coachlibre_skills::Catalog::new(store, models, &config.skills.model).with_tools(tools);
    let mut registry = coachlibre_jobs::Registry::builtin();
    registry.register(
        coachlibre_skills::RUN,
        Arc::new(coachlibre_skills::RunSkill(catalog.clone())),
    );
    let engine =
        coachlibre_workflows::RunWorkflow::new(catalog.clone()).with_agents(runtime.clone());
    registry.register(
        coachlibre_workflows::START,
        Arc::new(coachlibre_workflows::StartWorkflow(engine.clone())),
    );
    registry.register(coachlibre_workflows::RUN, Arc::new(engine));
    // Without a configured gateway, texts fail with a message saying so (the configuration was
    // checked when the server started).
    let gateway = config.sms.gateway().unwrap_or_else(|e| {
        tracing::error!(error = %e, "the SMS gateway could not be set up; texts will not be sent");
        None
    });
    registry.register(
        coachlibre_core::sms::SEND,
        Arc::new(coachlibre_sms::SendSms(gateway)),
    );
    registry.register(
        coachlibre_core::sms::REPLY,
        Arc::new(coachlibre_sms::ReplySms(runtime.clone())),
    );
    registry.register(
        coachlibre_analysis::RUN,
        Arc::new(coachlibre_analysis::RunAnalysis::new(
            catalog.clone(),
            config.knowledge.allow_private_urls,
        )),
    );
    (registry, catalog)
}

/// A ready-to-serve server.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
    store: Arc<SqlStore>,
    bootstrap: Option<(Tenant, CreatedUser)>,
}

impl Application {
    /// Open the store, bootstrap an empty database, bind the listener; models come from the
    /// configuration.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let models = Arc::new(models::ConfiguredModels::new(
            config.model_registry(),
            config.agents.embedding_model.clone(),
        ));
        Self::build_with_models(config, models).await
    }

    /// Same, with the given source of models (tests use scripted ones).
    pub async fn build_with_models(
        config: Config,
        models: Arc<dyn ModelSource>,
    ) -> anyhow::Result<Self> {
        let store = open_store(&config).await?;
        let keys = load_keys(&config)?;
        let accounts = Accounts::new(store.clone());
        let admin_email = config
            .admin_email
            .clone()
            .unwrap_or_else(|| "admin@localhost".to_owned());
        let bootstrap = accounts
            .bootstrap(
                &admin_email,
                config.admin_password.as_ref().map(config::Secret::expose),
            )
            .await
            .map_err(|e| anyhow::anyhow!("creating the first admin: {e}"))?;
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("binding {}", config.bind))?;
        let state = build_state(config, store.clone(), keys, models)?;
        Ok(Self {
            listener,
            state,
            store,
            bootstrap,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The tenant and admin created on this start, if the database was empty.
    pub fn bootstrap(&self) -> Option<&(Tenant, CreatedUser)> {
        self.bootstrap.as_ref()
    }

    /// Serve until `shutdown` resolves, then finish requests in flight and close the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        spawn_background(&self.state);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let workers = self
            .state
            .config
            .jobs
            .run_in_serve
            .then(|| spawn_jobs(&self.state, stopped));
        let app = app(self.state);
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
        // Running jobs get their grace period; what they leave goes back to the queue.
        let _ = stop.send(true);
        if let Some(w) = workers {
            let _ = w.await;
        }
        self.store.close().await;
        Ok(())
    }
}

/// `coachlibre worker`: job workers and the scheduler without the HTTP server, for nodes
/// that share the database with the servers.
pub async fn run_worker(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let models = Arc::new(models::ConfiguredModels::new(
        config.model_registry(),
        config.agents.embedding_model.clone(),
    ));
    let store = open_store(&config).await?;
    let keys = load_keys(&config)?;
    let state = build_state(config, store.clone(), keys, models)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let jobs = spawn_jobs(&state, stopped);
    println!(
        "CoachLibre worker running up to {} jobs at once (stop with Ctrl-C)",
        state.config.jobs.concurrency
    );
    shutdown.await;
    let _ = stop.send(true);
    let _ = jobs.await;
    store.close().await;
    Ok(())
}

/// A job worker and the scheduler, until `stop` turns true; the handle ends when both have.
pub fn spawn_jobs(
    state: &AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let worker =
        coachlibre_jobs::worker::Worker::new(state.jobs.clone(), state.config.jobs.worker());
    let scheduler = coachlibre_jobs::scheduler::Scheduler::new(
        state.jobs.clone(),
        state.config.jobs.scheduler(),
    );
    let w = tokio::spawn(worker.run(until(stop.clone())));
    let s = tokio::spawn(scheduler.run(until(stop)));
    tokio::spawn(async move {
        let _ = tokio::join!(w, s);
    })
}

/// Background work of a running server: resume turns whose approval was decided while the
/// server was down, and expire memories past their tenant's retention period.
fn spawn_background(state: &AppState) {
    let runtime = state.coaching.runtime().clone();
    tokio::spawn(async move {
        match runtime.resume_pending().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(turns = n, "resumed turns decided while stopped"),
            Err(e) => tracing::warn!(error = %e, "could not list turns to resume"),
        }
    });
    let store = state.store.clone();
    let every = Duration::from_secs(state.config.agents.retention_sweep_secs.max(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match coachlibre_agent::service::expire_memories(store.as_ref()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(memories = n, "expired memories past retention"),
                Err(e) => tracing::warn!(error = %e, "memory expiry failed"),
            }
        }
    });
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

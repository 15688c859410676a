//! Configuration: built-in defaults, then `coachlibre.toml`, then `COACHLIBRE_*` environment
//! variables (nested keys with `__`, e.g. `COACHLIBRE_HTTP__BODY_LIMIT_BYTES`). Secrets are
//! wrapped in [`Secret`] so they never reach a log line or `coachlibre config`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize, Serializer};

/// A configuration value that is never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Everything `coachlibre` can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub bind: SocketAddr,
    /// Directory for the SQLite file, the generated secret key and anything else written.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`; default: SQLite in `data_dir`.
    pub database_url: Option<Secret>,
    /// Where embedded models are installed; default `data_dir/models`
    /// (`COACHLIBRE_MODELS_DIR`).
    pub models_dir: Option<PathBuf>,
    /// Master secret (32+ bytes) from which token-signing and encryption keys derive. Default:
    /// generated once into `data_dir/secret.key`. Set it explicitly when several nodes share
    /// one PostgreSQL database.
    pub secret_key: Option<Secret>,
    /// Log line format.
    pub log_format: LogFormat,
    /// Email of the admin created on first start (default `admin@localhost`).
    pub admin_email: Option<String>,
    /// Password of that admin; when absent a random one is printed once.
    pub admin_password: Option<Secret>,
    pub database: DatabaseConfig,
    /// Remote model providers by name (`[providers.ollama]`, `[providers.claude]`, ...).
    pub providers: BTreeMap<String, coachlibre_models::remote::ProviderConfig>,
    /// Fallback chains by name: models tried in order (`coach = ["claude", "smollm2-135m-instruct"]`).
    pub chains: BTreeMap<String, Vec<String>>,
    pub http: HttpConfig,
    pub rate_limit: RateLimitConfig,
    pub auth: AuthConfig,
    pub agents: AgentsConfig,
    pub knowledge: KnowledgeConfig,
    pub jobs: JobsConfig,
    pub skills: SkillsConfig,
    pub sms: SmsConfig,
}

/// The SMS gateway (Twilio's Messages API, or a provider speaking it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// The gateway's API address.
    pub api_base: String,
    /// Account id and auth token; without both, texts are not sent (their jobs fail with a
    /// message saying so) and the inbound webhook answers 404.
    pub account_sid: Option<String>,
    pub auth_token: Option<Secret>,
    /// The address the gateway calls the webhook at, as configured there (e.g.
    /// `https://coach.example.org`): the signature covers it. Default: the request's own
    /// scheme and `Host`.
    pub public_url: Option<String>,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            api_base: "https://api.twilio.com".to_owned(),
            account_sid: None,
            auth_token: None,
            public_url: None,
        }
    }
}

impl SmsConfig {
    /// The gateway, when one is configured.
    pub fn gateway(&self) -> anyhow::Result<Option<std::sync::Arc<dyn coachlibre_sms::Gateway>>> {
        let (Some(sid), Some(token)) = (&self.account_sid, &self.auth_token) else {
            return Ok(None);
        };
        let twilio = coachlibre_sms::Twilio::new(&self.api_base, sid, token.expose())
            .map_err(|e| anyhow::anyhow!("sms gateway: {e}"))?;
        Ok(Some(std::sync::Arc::new(twilio)))
    }
}

/// Skill settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SkillsConfig {
    /// The chat model (or chain) of skills that name none.
    pub model: String,
}

impl Default for SkillsConfig {
    fn default() -> Self {
        Self {
            model: coachlibre_core::agent::DEFAULT_MODEL.to_owned(),
        }
    }
}

/// Background job settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Run job workers and the scheduler inside `serve` (off: only `coachlibre worker`
    /// nodes run jobs).
    pub run_in_serve: bool,
    /// Jobs one worker process runs at once.
    pub concurrency: usize,
    /// Seconds a worker's claim on a job holds without a heartbeat; after a crash, its jobs
    /// are taken over this long after the last heartbeat.
    pub lease_secs: u64,
    /// How often idle workers look for due jobs, in milliseconds.
    pub poll_ms: u64,
    /// Backoff before a failed job's second attempt, doubling up to `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// Days finished jobs are kept.
    pub keep_finished_days: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            run_in_serve: true,
            concurrency: coachlibre_jobs::worker::WorkerConfig::default().concurrency,
            lease_secs: 30,
            poll_ms: 500,
            retry_base_secs: 5,
            retry_max_secs: 3_600,
            keep_finished_days: 7,
        }
    }
}

impl JobsConfig {
    pub fn worker(&self) -> coachlibre_jobs::worker::WorkerConfig {
        use std::time::Duration;
        coachlibre_jobs::worker::WorkerConfig {
            concurrency: self.concurrency.max(1),
            lease: Duration::from_secs(self.lease_secs.max(1)),
            poll: Duration::from_millis(self.poll_ms.max(10)),
            retry_base: Duration::from_secs(self.retry_base_secs),
            retry_max: Duration::from_secs(self.retry_max_secs.max(self.retry_base_secs)),
            grace: Duration::from_secs(10),
        }
    }

    pub fn scheduler(&self) -> coachlibre_jobs::scheduler::SchedulerConfig {
        coachlibre_jobs::scheduler::SchedulerConfig {
            tick: std::time::Duration::from_secs(1),
            keep_finished: std::time::Duration::from_secs(self.keep_finished_days * 86_400),
        }
    }
}

/// Knowledge base settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnowledgeConfig {
    /// Let coaches import URLs on loopback and private networks (off: the server would
    /// otherwise fetch internal services for them).
    pub allow_private_urls: bool,
    /// Passages one document may make (a larger upload gets 413).
    pub max_document_passages: usize,
    /// Passages one tenant may hold in all.
    pub max_tenant_passages: u64,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        let d = coachlibre_knowledge::Limits::default();
        Self {
            allow_private_urls: false,
            max_document_passages: d.document_passages,
            max_tenant_passages: d.tenant_passages,
        }
    }
}

impl KnowledgeConfig {
    pub fn limits(&self) -> coachlibre_knowledge::Limits {
        coachlibre_knowledge::Limits {
            document_passages: self.max_document_passages,
            tenant_passages: self.max_tenant_passages,
        }
    }
}

/// Agent runtime settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Model calls one turn may make (each round of tool calls is one more).
    pub max_steps: u32,
    /// Embedding model for memories (an embedded model or an OpenAI-compatible provider).
    pub embedding_model: String,
    /// How often expired memories are deleted, in seconds.
    pub retention_sweep_secs: u64,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            max_steps: coachlibre_agent::runtime::DEFAULT_MAX_STEPS,
            embedding_model: "all-minilm-l6-v2".to_owned(),
            retention_sweep_secs: 3_600,
        }
    }
}

/// Database pool settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
}

/// HTTP protection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Requests taking longer are answered 503.
    pub request_timeout_secs: u64,
    /// Origins allowed by CORS (e.g. `https://app.example.org`); empty: same origin only.
    pub cors_origins: Vec<String>,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Mark the web app's cookies `Secure` (set it when browsers reach the server over TLS;
    /// behind a trusted proxy, `X-Forwarded-Proto: https` does the same per request).
    pub secure_cookies: bool,
    /// Bearer token that Prometheus sends to read `/metrics` (`authorization` in its scrape
    /// config). Without one, `/metrics` answers the machine itself (loopback) only.
    pub metrics_token: Option<Secret>,
}

/// Token-bucket rate limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Turn all rate limiting off (benchmarks, trusted networks).
    pub enabled: bool,
    /// Sustained requests per second per client IP.
    pub per_ip_per_second: f64,
    /// Burst per client IP.
    pub per_ip_burst: u32,
    /// Sustained requests per second per authenticated user.
    pub per_user_per_second: f64,
    /// Burst per user.
    pub per_user_burst: u32,
}

/// Authentication settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_days: u64,
    /// Failed sign-ins from one address for one email before that pair must wait.
    pub lockout_threshold: i32,
    /// Failed sign-ins for one account, from any address, before the account locks.
    pub account_lockout_threshold: i32,
    /// First wait or lock; doubles with each further failure.
    pub lockout_base_secs: u64,
    pub lockout_max_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            models_dir: None,
            secret_key: None,
            log_format: LogFormat::Text,
            admin_email: None,
            admin_password: None,
            database: DatabaseConfig::default(),
            providers: BTreeMap::new(),
            chains: BTreeMap::new(),
            http: HttpConfig::default(),
            rate_limit: RateLimitConfig::default(),
            auth: AuthConfig::default(),
            agents: AgentsConfig::default(),
            knowledge: KnowledgeConfig::default(),
            jobs: JobsConfig::default(),
            skills: SkillsConfig::default(),
            sms: SmsConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout_secs: 5,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            cors_origins: Vec::new(),
            trust_forwarded_for: false,
            secure_cookies: false,
            metrics_token: None,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_ip_per_second: 50.0,
            per_ip_burst: 200,
            per_user_per_second: 20.0,
            per_user_burst: 100,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        let d = coachlibre_core::auth::AuthPolicy::default();
        Self {
            access_token_ttl_secs: d.access_ttl.as_secs(),
            refresh_token_ttl_days: d.refresh_ttl.as_secs() / 86_400,
            lockout_threshold: d.lockout_threshold,
            account_lockout_threshold: d.account_lockout_threshold,
            lockout_base_secs: d.lockout_base.as_secs(),
            lockout_max_secs: d.lockout_max.as_secs(),
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Load defaults ← `file` (if it exists) ← environment.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        Self::figment(file)
            .extract()
            .map_err(|e| ConfigError(e.to_string()))
    }

    /// The layered sources, for callers that add their own (CLI flags).
    pub fn figment(file: &Path) -> Figment {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(
                Env::prefixed("COACHLIBRE_")
                    .ignore(&["config", "new_password"])
                    .split("__"),
            )
    }

    /// The database URL in force.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.expose().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("coachlibre.db").display()),
        }
    }

    /// The chat models these settings name.
    pub fn model_registry(&self) -> coachlibre_models::registry::Registry {
        coachlibre_models::registry::Registry::new(
            self.providers.clone(),
            self.chains.clone(),
            self.models_dir(),
        )
    }

    /// The models directory in force.
    pub fn models_dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("models"))
    }

    /// The configuration as TOML with secrets masked and the database URL's password hidden.
    pub fn to_masked_toml(&self) -> Result<String, ConfigError> {
        let mut value = toml::Value::try_from(self).map_err(|e| ConfigError(e.to_string()))?;
        if let Some(t) = value.as_table_mut() {
            t.insert(
                "database_url".into(),
                toml::Value::String(coachlibre_store::redact_url(&self.database_url())),
            );
        }
        toml::to_string_pretty(&value).map_err(|e| ConfigError(e.to_string()))
    }

    /// The authentication policy these settings describe.
    pub fn auth_policy(&self) -> coachlibre_core::auth::AuthPolicy {
        use std::time::Duration;
        coachlibre_core::auth::AuthPolicy {
            access_ttl: Duration::from_secs(self.auth.access_token_ttl_secs),
            refresh_ttl: Duration::from_secs(self.auth.refresh_token_ttl_days * 86_400),
            lockout_threshold: self.auth.lockout_threshold,
            account_lockout_threshold: self.auth.account_lockout_threshold,
            lockout_base: Duration::from_secs(self.auth.lockout_base_secs),
            lockout_max: Duration::from_secs(self.auth.lockout_max_secs),
        }
    }
}

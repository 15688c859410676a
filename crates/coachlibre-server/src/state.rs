//! What every handler can reach: the services, the limiters, the metrics, the config.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRef;
use coachlibre_agent::Coaching;
use coachlibre_core::accounts::Accounts;
use coachlibre_core::auth::Auth;
use coachlibre_core::ids::UserId;
use coachlibre_core::store::Store;
use coachlibre_jobs::Jobs;
use coachlibre_knowledge::Knowledge;
use coachlibre_skills::Skills;

use crate::config::Config;
use crate::middleware::metrics::Metrics;
use crate::middleware::ratelimit::RateLimiter;

/// Per-IP limit on sign-in attempts: 10 in a burst, then one every 6 seconds.
const LOGIN_BURST: u32 = 10;
const LOGIN_PER_SECOND: f64 = 1.0 / 6.0;

/// Shared application state (cheap to clone: everything is behind `Arc`).
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Auth,
    pub accounts: Accounts,
    pub coaching: Coaching,
    pub knowledge: Knowledge,
    pub jobs: Jobs,
    pub skills: Skills,
    pub analyses: coachlibre_analysis::Analyses,
    pub workflows: coachlibre_workflows::Workflows,
    pub sms: coachlibre_sms::Sms,
    pub metrics: Metrics,
    pub limits: Arc<Limits>,
    pub config: Arc<Config>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("backend", &self.store.backend())
            .finish()
    }
}

/// The rate limiters.
#[derive(Debug)]
pub struct Limits {
    pub enabled: bool,
    pub per_ip: RateLimiter<Option<IpAddr>>,
    pub per_user: RateLimiter<UserId>,
    pub login_per_ip: RateLimiter<Option<IpAddr>>,
}

impl Limits {
    pub fn from_config(c: &Config) -> Self {
        let r = &c.rate_limit;
        Self {
            enabled: r.enabled,
            per_ip: RateLimiter::new(r.per_ip_per_second, r.per_ip_burst),
            per_user: RateLimiter::new(r.per_user_per_second, r.per_user_burst),
            login_per_ip: RateLimiter::new(LOGIN_PER_SECOND, LOGIN_BURST),
        }
    }
}

impl FromRef<AppState> for Metrics {
    fn from_ref(s: &AppState) -> Self {
        s.metrics.clone()
    }
}

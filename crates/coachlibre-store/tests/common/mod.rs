//! Helpers shared by the contract suites.

use std::sync::Arc;

use coachlibre_core::ids::TenantId;
use coachlibre_core::tenant::{Tenant, TenantSlug};
use coachlibre_core::user::{Role, User};
use coachlibre_store::{ConnectOptions, SqlStore};
use coachlibre_testkit::TestDb;

/// Run `body` against a migrated store on every configured backend.
pub async fn on_every_backend<F, Fut>(body: F)
where
    F: Fn(Arc<SqlStore>, &'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for db in TestDb::all().await.expect("test database") {
        let store = SqlStore::connect(&db.url, &ConnectOptions::default())
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        let name = match db.kind {
            coachlibre_testkit::Kind::Sqlite => "sqlite",
            coachlibre_testkit::Kind::Postgres => "postgres",
        };
        body(Arc::new(store.clone()), name).await;
        store.close().await;
    }
}

pub fn tenant(slug: &str) -> Tenant {
    Tenant::new(TenantSlug::parse(slug).expect("slug"), "Practice").expect("tenant")
}

pub fn user(tenant: TenantId, email: &str, role: Role) -> User {
    coachlibre_testkit::people::person(tenant, email, role)
}

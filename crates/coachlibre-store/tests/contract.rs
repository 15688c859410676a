//! The storage contract: every backend must pass every test here. Runs on SQLite always and
//! on PostgreSQL when `TEST_DATABASE_URL` is set (CI sets it).

use coachlibre_core::accounts::{Accounts, By, NewUser};
use coachlibre_core::actor::Scope;
use coachlibre_core::audit::AuditEntry;
use coachlibre_core::ids::{RefreshTokenId, SessionFamilyId, TenantId};
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::prelude::*;
use coachlibre_core::store::{RefreshToken, StoreError, UserFilter};
use coachlibre_core::user::{MfaState, Role};

mod common;
use common::{on_every_backend, tenant, user};

#[tokio::test]
async fn migrations_are_idempotent() {
    on_every_backend(|store, backend| async move {
        assert_eq!(store.backend(), backend);
        assert!(store.migrate().await.unwrap().is_empty(), "{backend}");
        store.ping().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn tenants_round_trip_and_slugs_are_unique() {
    on_every_backend(|store, backend| async move {
        let t = tenant("acme");
        store.insert_tenant(&t).await.unwrap();
        assert_eq!(
            store.get_tenant(t.id).await.unwrap(),
            Some(t.clone()),
            "{backend}"
        );
        assert_eq!(
            store.get_tenant_by_slug("acme").await.unwrap(),
            Some(t.clone())
        );
        assert!(matches!(
            store.insert_tenant(&tenant("acme")).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.list_tenants().await.unwrap(), vec![t]);
        assert_eq!(store.get_tenant(TenantId::generate()).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn users_are_scoped_by_tenant() {
    on_every_backend(|store, backend| async move {
        let (a, b) = (tenant("a-practice"), tenant("b-practice"));
        store.insert_tenant(&a).await.unwrap();
        store.insert_tenant(&b).await.unwrap();
        let ua = user(a.id, "same@example.org", Role::Coach);
        let ub = user(b.id, "same@example.org", Role::Client);
        store.insert_user(&ua).await.unwrap();
        // Same email in another tenant is allowed; in the same tenant it conflicts.
        store.insert_user(&ub).await.unwrap();
        assert!(matches!(
            store
                .insert_user(&user(a.id, "same@example.org", Role::Client))
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            store.get_user(a.id, ua.id).await.unwrap(),
            Some(ua.clone()),
            "{backend}"
        );
        assert_eq!(
            store.get_user(b.id, ua.id).await.unwrap(),
            None,
            "cross-tenant read"
        );
        assert!(matches!(
            store.set_role(b.id, ua.id, Role::Admin).await,
            Err(StoreError::NotFound)
        ));
        assert!(store.set_password_hash(b.id, ua.id, "x").await.is_err());
        let found = store.find_users_by_email(&ua.email).await.unwrap();
        assert_eq!(found.len(), 2);
        let listed = store
            .list_users(b.id, &UserFilter::default(), &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(listed, vec![ub.clone()]);
    })
    .await;
}

#[tokio::test]
async fn user_pagination_and_filters() {
    on_every_backend(|store, backend| async move {
        let t = tenant("paging");
        store.insert_tenant(&t).await.unwrap();
        let coach = user(t.id, "coach@example.org", Role::Coach);
        store.insert_user(&coach).await.unwrap();
        let mut clients = Vec::new();
        for i in 0..5 {
            let c = user(t.id, &format!("c{i}@example.org"), Role::Client);
            store.insert_user(&c).await.unwrap();
            if i % 2 == 0 {
                store.link_coach(t.id, coach.id, c.id).await.unwrap();
            }
            clients.push(c);
        }
        let page = PageRequest::parse(Some(2), None).unwrap();
        let filter = UserFilter {
            role: Some(Role::Client),
            coach_id: None,
        };
        let first = store.list_users(t.id, &filter, &page).await.unwrap();
        assert_eq!(first.len(), 3, "limit + 1 rows fetched ({backend})");
        let cursor = first[1].id.to_string();
        let next = PageRequest::parse(Some(2), Some(&cursor)).unwrap();
        let second = store.list_users(t.id, &filter, &next).await.unwrap();
        assert_eq!(second[0].id, clients[2].id);
        let mine = store
            .list_users(
                t.id,
                &UserFilter {
                    role: None,
                    coach_id: Some(coach.id),
                },
                &PageRequest::default(),
            )
            .await
            .unwrap();
        let ids: Vec<_> = mine.iter().map(|u| u.id).collect();
        assert_eq!(ids, vec![clients[0].id, clients[2].id, clients[4].id]);
        assert!(
            store
                .is_coach_of(t.id, coach.id, clients[0].id)
                .await
                .unwrap()
        );
        assert!(
            !store
                .is_coach_of(t.id, coach.id, clients[1].id)
                .await
                .unwrap()
        );
        assert_eq!(
            store.coaches_of(t.id, clients[0].id).await.unwrap(),
            vec![coach.clone()]
        );
        assert!(
            store
                .unlink_coach(t.id, coach.id, clients[0].id)
                .await
                .unwrap()
        );
        assert!(
            !store
                .unlink_coach(t.id, coach.id, clients[0].id)
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .count_users_with_role(t.id, Role::Client)
                .await
                .unwrap(),
            5
        );
    })
    .await;
}

#[tokio::test]
async fn coach_links_never_cross_tenants() {
    on_every_backend(|store, _| async move {
        let (a, b) = (tenant("link-a"), tenant("link-b"));
        store.insert_tenant(&a).await.unwrap();
        store.insert_tenant(&b).await.unwrap();
        let coach = user(a.id, "coach@a.org", Role::Coach);
        let client_b = user(b.id, "client@b.org", Role::Client);
        store.insert_user(&coach).await.unwrap();
        store.insert_user(&client_b).await.unwrap();
        store.link_coach(a.id, coach.id, client_b.id).await.unwrap();
        assert!(
            !store
                .is_coach_of(a.id, coach.id, client_b.id)
                .await
                .unwrap()
        );
        assert!(
            store
                .coaches_of(b.id, client_b.id)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn login_failures_lock_and_clear() {
    on_every_backend(|store, backend| async move {
        let t = tenant("locks");
        store.insert_tenant(&t).await.unwrap();
        let u = user(t.id, "u@example.org", Role::Client);
        store.insert_user(&u).await.unwrap();
        assert_eq!(store.record_login_failure(t.id, u.id).await.unwrap(), 1);
        assert_eq!(store.record_login_failure(t.id, u.id).await.unwrap(), 2);
        let until = coachlibre_core::now() + chrono::Duration::seconds(30);
        store.lock_user(t.id, u.id, until).await.unwrap();
        let got = store.get_user(t.id, u.id).await.unwrap().unwrap();
        assert_eq!(got.failed_logins, 2, "{backend}");
        assert_eq!(got.locked_until, Some(until), "{backend}");
        store.clear_login_failures(t.id, u.id).await.unwrap();
        let got = store.get_user(t.id, u.id).await.unwrap().unwrap();
        assert_eq!((got.failed_logins, got.locked_until), (0, None));
    })
    .await;
}

#[tokio::test]
async fn totp_steps_only_move_forward_and_recovery_codes_work_once() {
    on_every_backend(|store, _| async move {
        let t = tenant("mfa");
        store.insert_tenant(&t).await.unwrap();
        let u = user(t.id, "u@example.org", Role::Coach);
        store.insert_user(&u).await.unwrap();
        let mfa = MfaState {
            pending_secret: None,
            secret: Some("sealed".into()),
            last_step: 0,
        };
        store.set_mfa(t.id, u.id, &mfa).await.unwrap();
        assert!(store.advance_totp_step(t.id, u.id, 100).await.unwrap());
        assert!(
            !store.advance_totp_step(t.id, u.id, 100).await.unwrap(),
            "replay"
        );
        assert!(!store.advance_totp_step(t.id, u.id, 99).await.unwrap());
        let got = store.get_user(t.id, u.id).await.unwrap().unwrap();
        assert_eq!(got.mfa.secret.as_deref(), Some("sealed"));
        assert_eq!(got.mfa.last_step, 100);
        store
            .replace_recovery_codes(t.id, u.id, &["h1".into(), "h2".into()])
            .await
            .unwrap();
        assert!(store.consume_recovery_code(t.id, u.id, "h1").await.unwrap());
        assert!(!store.consume_recovery_code(t.id, u.id, "h1").await.unwrap());
        assert!(!store.consume_recovery_code(t.id, u.id, "zz").await.unwrap());
        store.replace_recovery_codes(t.id, u.id, &[]).await.unwrap();
        assert!(!store.consume_recovery_code(t.id, u.id, "h2").await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn refresh_tokens_rotate_once_and_families_revoke() {
    on_every_backend(|store, backend| async move {
        let t = tenant("sessions");
        store.insert_tenant(&t).await.unwrap();
        let u = user(t.id, "u@example.org", Role::Client);
        store.insert_user(&u).await.unwrap();
        let now = coachlibre_core::now();
        let family = SessionFamilyId::generate();
        let tok = RefreshToken {
            id: RefreshTokenId::generate(),
            tenant_id: t.id,
            user_id: u.id,
            family_id: family,
            token_hash: "hash-1".into(),
            created_at: now,
            expires_at: now + chrono::Duration::days(30),
            used_at: None,
            revoked_at: None,
        };
        store.insert_refresh_token(&tok).await.unwrap();
        assert_eq!(
            store.find_refresh_token("hash-1").await.unwrap(),
            Some(tok.clone()),
            "{backend}"
        );
        assert!(store.mark_refresh_token_used(tok.id, now).await.unwrap());
        assert!(
            !store.mark_refresh_token_used(tok.id, now).await.unwrap(),
            "used twice"
        );
        let second = RefreshToken {
            id: RefreshTokenId::generate(),
            token_hash: "hash-2".into(),
            used_at: None,
            ..tok.clone()
        };
        store.insert_refresh_token(&second).await.unwrap();
        store.revoke_family(family, now).await.unwrap();
        assert!(
            store
                .find_refresh_token("hash-2")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        );
        assert_eq!(store.find_refresh_token("nope").await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn audit_log_is_per_tenant_newest_first() {
    on_every_backend(|store, backend| async move {
        let (a, b) = (tenant("audit-a"), tenant("audit-b"));
        store.insert_tenant(&a).await.unwrap();
        store.insert_tenant(&b).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..3 {
            let e = AuditEntry::new(Some(a.id), None, "test.event")
                .target(i)
                .ip(Some("127.0.0.1"))
                .detail(serde_json::json!({"n": i}));
            store.append_audit(&e).await.unwrap();
            ids.push(e.id);
        }
        store
            .append_audit(&AuditEntry::new(Some(b.id), None, "other"))
            .await
            .unwrap();
        let page = PageRequest::parse(Some(2), None).unwrap();
        let got = store.list_audit(a.id, &page).await.unwrap();
        assert_eq!(got.len(), 3, "{backend}");
        assert_eq!(got[0].id, ids[2]);
        assert_eq!(got[0].detail, serde_json::json!({"n": 2}));
        let next = PageRequest::parse(Some(2), Some(&got[1].id.to_string())).unwrap();
        let rest = store.list_audit(a.id, &next).await.unwrap();
        assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[0]]);
        assert_eq!(
            store
                .list_audit(b.id, &PageRequest::default())
                .await
                .unwrap()
                .len(),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn bootstrap_happens_once() {
    on_every_backend(|store, backend| async move {
        let accounts = Accounts::new(store.clone());
        assert!(!store.is_bootstrapped().await.unwrap());
        let (t, admin) = accounts
            .bootstrap("boss@example.org", None)
            .await
            .unwrap()
            .expect("first bootstrap creates");
        assert_eq!(t.slug.as_str(), "default");
        assert!(admin.initial_password.is_some(), "{backend}");
        assert!(
            accounts
                .bootstrap("other@example.org", Some("a password 123"))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.list_tenants().await.unwrap().len(), 1);
        // Even racing a direct call, the marker refuses a second bootstrap.
        let t2 = tenant("second");
        let u2 = user(t2.id, "x@example.org", Role::Admin);
        assert!(!store.bootstrap(&t2, &u2).await.unwrap());
        assert_eq!(store.get_tenant(t2.id).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn api_keys_through_the_service() {
    on_every_backend(|store, backend| async move {
        let accounts = Accounts::new(store.clone());
        let t = accounts.create_tenant("keys", "Keys").await.unwrap();
        let coach = accounts
            .create_user(
                By::Operator(t.id),
                NewUser {
                    email: "c@example.org".into(),
                    display_name: "C".into(),
                    role: Role::Coach,
                    password: None,
                },
            )
            .await
            .unwrap();
        assert!(
            accounts
                .create_api_key(
                    By::Operator(t.id),
                    Some(coach.user.id),
                    "bad",
                    &[Scope::Admin]
                )
                .await
                .is_err(),
            "coach keys cannot be admin keys"
        );
        let k = accounts
            .create_api_key(
                By::Operator(t.id),
                Some(coach.user.id),
                "zapier",
                &[Scope::Write, Scope::Read, Scope::Read],
            )
            .await
            .unwrap();
        assert!(k.secret.starts_with("cl_"));
        assert_eq!(k.key.scopes, vec![Scope::Read, Scope::Write], "{backend}");
        let stored = store
            .find_api_key_by_prefix(coachlibre_core::auth::api_key_prefix(&k.secret).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.key_hash,
            coachlibre_core::auth::secret::hash_token(&k.secret)
        );
        let list = accounts
            .list_api_keys(By::Operator(t.id), &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(list.items.len(), 1);
        accounts
            .revoke_api_key(By::Operator(t.id), k.key.id)
            .await
            .unwrap();
        assert!(
            accounts
                .revoke_api_key(By::Operator(t.id), k.key.id)
                .await
                .is_err()
        );
        let other = accounts.create_tenant("keys-other", "Other").await.unwrap();
        assert!(
            accounts
                .revoke_api_key(By::Operator(other.id), k.key.id)
                .await
                .is_err()
        );
    })
    .await;
}

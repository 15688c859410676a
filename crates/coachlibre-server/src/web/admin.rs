//! Administration: system status (models, queue depth, request rates), users and roles, API
//! keys, the audit log, the organisation.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use coachlibre_core::accounts::{By, NewUser};
use coachlibre_core::actor::Scope;
use coachlibre_core::ids::{ApiKeyId, UserId};
use coachlibre_core::job::JobStatus;
use coachlibre_core::user::Role;
use serde::Deserialize;

use super::view::{Cell, Field, FormSpec, Page, Post, Section, Stat, next_link, when};
use super::{Empty, Form, Listing, Web, WebError, WebResult, first, render, see};
use crate::extract::Path;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(status))
        .route("/admin/users", get(users).post(create_user))
        .route("/admin/users/{id}/role", post(set_role))
        .route("/admin/users/{id}/coach", post(assign_coach))
        .route("/admin/users/{id}/reset", post(reset_password))
        .route("/admin/keys", get(keys).post(create_key))
        .route("/admin/keys/{id}/revoke", post(revoke_key))
        .route("/admin/audit", get(audit))
        .route("/admin/sms", get(sms).post(add_number))
        .route("/admin/sms/phone", post(set_phone))
        .route("/admin/sms/remove", post(remove_number))
}

/// When the process started (for request rates).
fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

async fn status(State(state): State<AppState>, web: Web) -> WebResult {
    web.require_admin()?;
    let uptime = started().elapsed().as_secs_f64().max(1.0);
    let tenant = state.accounts.tenant_of(&web.actor).await?;
    let counts = state.jobs.counts(By::Actor(&web.actor)).await?;
    let queued = counts.get(&JobStatus::Queued).copied().unwrap_or(0);
    let running = counts.get(&JobStatus::Running).copied().unwrap_or(0);
    let failed = counts.get(&JobStatus::Failed).copied().unwrap_or(0);
    // Models: the embedded ones installed on disk, then the configured providers and chains.
    let dir = state.config.models_dir();
    let mut model_rows: Vec<Vec<Cell>> = coachlibre_models::catalog::EMBEDDED
        .iter()
        .map(|m| {
            let installed = m.primary_file(&dir).is_some();
            vec![
                Cell::text(m.name),
                Cell::text("embedded"),
                if installed {
                    Cell::badge("installed", "ok")
                } else {
                    Cell::badge("missing: run `coachlibre models pull`", "bad")
                },
            ]
        })
        .collect();
    model_rows.extend(state.config.providers.keys().map(|p| {
        vec![
            Cell::text(p.clone()),
            Cell::text("provider"),
            Cell::badge("configured", "info"),
        ]
    }));
    model_rows.extend(state.config.chains.iter().map(|(name, members)| {
        vec![
            Cell::text(name.clone()),
            Cell::text("chain"),
            Cell::text(members.join(" → ")),
        ]
    }));
    let requests = state.metrics.request_counts();
    let total: u64 = requests.iter().map(|r| r.count).sum();
    let errors: u64 = requests
        .iter()
        .filter(|r| r.status.starts_with('5'))
        .map(|r| r.count)
        .sum();
    let route_rows = requests
        .iter()
        .take(15)
        .map(|r| {
            vec![
                Cell::text(format!("{} {}", r.method, r.route)),
                Cell::text(r.status.clone()),
                Cell::text(r.count.to_string()),
                Cell::text(format!("{:.2}/s", r.count as f64 / uptime)),
            ]
        })
        .collect();
    render(
        &Page::new(web.layout("Status"), "System status")
            .intro(format!(
                "{} ({}) · database: {} · embeddings: {} · up {:.0} min",
                tenant.name,
                tenant.slug.as_str(),
                state.store.backend(),
                state.knowledge.model_name(),
                uptime / 60.0
            ))
            .stats(vec![
                Stat::new("jobs queued", queued, None),
                Stat::new("jobs running", running, None),
                Stat::new("jobs failed", failed, None),
                Stat::new("requests/s", format!("{:.2}", total as f64 / uptime), None),
                Stat::new("server errors", errors, None),
            ])
            .section(
                Section::new("Models")
                    .table(vec!["Model", "Kind", "State"], model_rows)
                    .empty("No model."),
            )
            .section(
                Section::new("Requests since start")
                    .intro("The full figures are at /metrics, for Prometheus.")
                    .table(vec!["Route", "Status", "Requests", "Rate"], route_rows)
                    .empty("No request yet."),
            )
            .section(Section::new("Organisations").intro(
                "Each organisation (tenant) is isolated. Create one with `coachlibre tenant \
                 create SLUG NAME` on the server.",
            )),
    )
}

fn role_options(current: Role) -> Vec<(String, String, bool)> {
    [Role::Client, Role::Coach, Role::Admin]
        .into_iter()
        .map(|r| (r.as_str().to_owned(), r.as_str().to_owned(), r == current))
        .collect()
}

fn parse_role(s: &str) -> WebResult<Role> {
    s.parse()
        .map_err(|_| WebError::bad_request("Choose client, coach or admin."))
}

async fn users(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    web.require_admin()?;
    let page = state
        .accounts
        .list_users(By::Actor(&web.actor), None, &q.page()?)
        .await?;
    let coaches: Vec<_> = page
        .items
        .iter()
        .filter(|u| u.role != Role::Client)
        .map(|u| (u.id.to_string(), u.display_name.clone(), false))
        .collect();
    let rows = page
        .items
        .iter()
        .map(|u| {
            let mut posts = vec![Post::new(
                format!("/admin/users/{}/reset", u.id),
                "Reset password",
            )];
            for r in [Role::Client, Role::Coach, Role::Admin] {
                if r != u.role && u.id != web.actor.user_id {
                    posts.push(
                        Post::new(
                            format!("/admin/users/{}/role", u.id),
                            format!("Make {}", r.as_str()),
                        )
                        .field("role", r.as_str()),
                    );
                }
            }
            if u.role == Role::Client {
                for (id, name, _) in coaches.iter().take(5) {
                    posts.push(
                        Post::new(
                            format!("/admin/users/{}/coach", u.id),
                            format!("Coach: {name}"),
                        )
                        .field("coach_id", id.clone()),
                    );
                }
            }
            vec![
                Cell::text(u.display_name.clone()),
                Cell::text(u.email.clone()),
                Cell::badge(u.role.as_str(), "info"),
                Cell::text(if u.mfa_enabled { "on" } else { "off" }),
                Cell::posts(posts),
            ]
        })
        .collect();
    let notice = q.done.as_deref().map(|d| match d {
        "role" => "Role changed.".to_owned(),
        "coach" => "Coach assigned.".to_owned(),
        _ => "Done.".to_owned(),
    });
    render(
        &Page::new(
            web.layout("Users").notice(notice.as_deref()),
            "Users and roles",
        )
        .section(
            Section::new("")
                .table(vec!["Name", "Email", "Role", "Two-factor", "Actions"], rows)
                .empty("No user.")
                .next(next_link("/admin/users", page.next_cursor)),
        )
        .section(Section::new("Add a user").form(FormSpec::new(
            "/admin/users",
            "Add user",
            vec![
                Field::new("text", "display_name", "Name").required(),
                Field::new("email", "email", "Email").required(),
                Field::new("select", "role", "Role").options(role_options(Role::Client)),
                Field::new("password", "password", "Password").help(
                    "Leave empty to generate one; it is shown once, to hand to the person.",
                ),
            ],
        ))),
    )
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

async fn create_user(State(state): State<AppState>, Form(web, f): Form<UserForm>) -> WebResult {
    web.require_admin()?;
    let created = state
        .accounts
        .create_user(
            By::Actor(&web.actor),
            NewUser {
                email: f.email.trim().to_owned(),
                display_name: f.display_name.trim().to_owned(),
                role: parse_role(&f.role)?,
                password: Some(f.password).filter(|p| !p.is_empty()),
            },
        )
        .await?;
    let mut section = Section::new("Account created").intro(format!(
        "{} ({}) can now sign in.",
        created.user.display_name, created.user.email
    ));
    if let Some(p) = created.initial_password {
        section = section
            .intro(format!(
                "{} ({}) can now sign in with this password, shown only now; they should \
                 change it under Account:",
                created.user.display_name, created.user.email
            ))
            .pre(p);
    }
    render(
        &Page::new(web.layout("User created"), "User created")
            .section(section.link("Back to users", "/admin/users")),
    )
}

#[derive(Debug, Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

async fn set_role(
    State(state): State<AppState>,
    Path(id): Path<UserId>,
    Form(web, f): Form<RoleForm>,
) -> WebResult {
    web.require_admin()?;
    state
        .accounts
        .set_role(By::Actor(&web.actor), id, parse_role(&f.role)?)
        .await?;
    see("/admin/users?done=role")
}

#[derive(Debug, Deserialize)]
pub struct CoachForm {
    #[serde(default)]
    coach_id: String,
}

async fn assign_coach(
    State(state): State<AppState>,
    Path(id): Path<UserId>,
    Form(web, f): Form<CoachForm>,
) -> WebResult {
    web.require_admin()?;
    let coach: UserId = f
        .coach_id
        .parse()
        .map_err(|_| WebError::bad_request("Choose a coach from the list."))?;
    state.accounts.assign_coach(&web.actor, id, coach).await?;
    see("/admin/users?done=coach")
}

async fn reset_password(
    State(state): State<AppState>,
    Path(id): Path<UserId>,
    Form(web, Empty {}): Form<Empty>,
) -> WebResult {
    web.require_admin()?;
    let password = state
        .accounts
        .reset_password(By::Actor(&web.actor), id)
        .await?;
    render(
        &Page::new(web.layout("Password reset"), "Password reset").section(
            Section::new("New password")
                .intro(
                    "Hand this password to the person: it is shown only now, and their sessions \
                     have ended.",
                )
                .pre(password)
                .link("Back to users", "/admin/users"),
        ),
    )
}

async fn keys(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    web.require_admin()?;
    let page = state
        .accounts
        .list_api_keys(By::Actor(&web.actor), &q.page()?)
        .await?;
    let rows = page
        .items
        .into_iter()
        .map(|k| {
            let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
            vec![
                Cell::text(k.name),
                Cell::text(format!("cl_{}_…", k.prefix)),
                Cell::text(scopes.join(", ")),
                Cell::text(k.last_used_at.map_or_else(|| "never".to_owned(), when)),
                match k.revoked_at {
                    Some(t) => Cell::badge(format!("revoked {}", when(t)), "bad"),
                    None => Cell::posts(vec![
                        Post::new(format!("/admin/keys/{}/revoke", k.id), "Revoke")
                            .danger()
                            .confirm("Revoke this key? Programs using it stop working."),
                    ]),
                },
            ]
        })
        .collect();
    let notice = (q.done.as_deref() == Some("revoked")).then_some("Key revoked.");
    render(
        &Page::new(web.layout("API keys").notice(notice), "API keys")
            .intro("Keys let other programs use the API (`Authorization: Bearer cl_…`).")
            .section(
                Section::new("")
                    .table(vec!["Name", "Key", "Scopes", "Last used", ""], rows)
                    .empty("No API key yet.")
                    .next(next_link("/admin/keys", page.next_cursor)),
            )
            .section(Section::new("New key").form(FormSpec::new(
                "/admin/keys",
                "Create key",
                vec![
                        Field::new("text", "name", "Name")
                            .required()
                            .help("What uses it, e.g. “SMS gateway”."),
                        Field::new("select", "scope", "Access").options(vec![
                            ("read".into(), "read only".into(), true),
                            ("write".into(), "read and write".into(), false),
                            (
                                "admin".into(),
                                "read, write and administration".into(),
                                false,
                            ),
                        ]),
                    ],
            ))),
    )
}

#[derive(Debug, Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
}

async fn create_key(State(state): State<AppState>, Form(web, f): Form<KeyForm>) -> WebResult {
    web.require_admin()?;
    let scopes: &[Scope] = match f.scope.as_str() {
        "read" => &[Scope::Read],
        "write" => &[Scope::Read, Scope::Write],
        "admin" => &[Scope::Read, Scope::Write, Scope::Admin],
        _ => return Err(WebError::bad_request("Choose the key's access.")),
    };
    let created = state
        .accounts
        .create_api_key(By::Actor(&web.actor), None, &f.name, scopes)
        .await?;
    render(
        &Page::new(web.layout("API key created"), "API key created").section(
            Section::new(created.key.name)
                .intro("Copy the key now: it is shown only once.")
                .pre(created.secret)
                .link("Back to API keys", "/admin/keys"),
        ),
    )
}

async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<ApiKeyId>,
    Form(web, Empty {}): Form<Empty>,
) -> WebResult {
    web.require_admin()?;
    state
        .accounts
        .revoke_api_key(By::Actor(&web.actor), id)
        .await?;
    see("/admin/keys?done=revoked")
}

async fn audit(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    web.require_admin()?;
    let page = state.accounts.audit_log(&web.actor, &q.page()?).await?;
    let names: std::collections::HashMap<UserId, String> = state
        .accounts
        .list_users(By::Actor(&web.actor), None, &first(200)?)
        .await?
        .items
        .into_iter()
        .map(|u| (u.id, u.display_name))
        .collect();
    let rows = page
        .items
        .into_iter()
        .map(|e| {
            let by = e
                .actor_id
                .map(|a| names.get(&a).cloned().unwrap_or_else(|| a.to_string()))
                .unwrap_or_default();
            let detail = if e.detail.is_null() {
                String::new()
            } else {
                e.detail.to_string()
            };
            vec![
                Cell::time(e.created_at),
                Cell::text(e.action),
                Cell::text(by),
                Cell::text(e.target.unwrap_or_default()),
                Cell::text(e.ip.unwrap_or_default()),
                Cell::text(detail),
            ]
        })
        .collect();
    render(
        &Page::new(web.layout("Audit log"), "Audit log")
            .intro("Sign-ins, changes to accounts, keys and agents: newest first.")
            .section(
                Section::new("")
                    .table(
                        vec!["When", "Action", "By", "Target", "Address", "Detail"],
                        rows,
                    )
                    .empty("Nothing recorded yet.")
                    .next(next_link("/admin/audit", page.next_cursor)),
            ),
    )
}

async fn sms(State(state): State<AppState>, web: Web, Query(q): Query<Listing>) -> WebResult {
    web.require_admin()?;
    let numbers = state.sms.numbers(&web.actor).await?;
    let agents = state.coaching.list_agents(&web.actor, &first(200)?).await?;
    let agent_name = |id| {
        agents
            .items
            .iter()
            .find(|a| a.id == id)
            .map_or_else(|| id.to_string(), |a| a.name.clone())
    };
    let rows = numbers
        .iter()
        .map(|n| {
            vec![
                Cell::text(n.number.as_str()),
                Cell::text(agent_name(n.agent_id)),
                Cell::text(when(n.created_at)),
                Cell::posts(vec![
                    Post::new(
                        format!(
                            "/admin/sms/remove?number={}",
                            n.number.as_str().replace('+', "%2B")
                        ),
                        "Remove",
                    )
                    .danger()
                    .confirm("Remove this number? Texts to it will no longer be answered."),
                ]),
            ]
        })
        .collect();
    let users = state
        .accounts
        .list_users(By::Actor(&web.actor), None, &first(200)?)
        .await?;
    let gateway = if state.config.sms.auth_token.is_some() {
        "A gateway is configured: texts are sent and the webhook answers at /api/v1/hooks/sms/twilio."
    } else {
        "No gateway is configured yet (sms.account_sid and sms.auth_token): texts are written into conversations but not sent."
    };
    let notice = match q.done.as_deref() {
        Some("added") => Some("Number added."),
        Some("removed") => Some("Number removed."),
        Some("phone") => Some("Phone number saved."),
        _ => None,
    };
    render(
        &Page::new(web.layout("Text messages").notice(notice), "Text messages")
            .intro(gateway)
            .section(
                Section::new("Numbers")
                    .intro("Texts to a number are answered by its agent; that agent's texts (answers, reminders) leave from it.")
                    .table(vec!["Number", "Agent", "Added", ""], rows)
                    .empty("No number yet."),
            )
            .section(Section::new("Add a number").form(FormSpec::new(
                "/admin/sms",
                "Add number",
                vec![
                    Field::new("text", "number", "Number")
                        .required()
                        .help("With its country code, e.g. +33 7 00 00 00 01."),
                    Field::new("select", "agent_id", "Answered by").options(
                        agents
                            .items
                            .iter()
                            .map(|a| (a.id.to_string(), a.name.clone(), false))
                            .collect(),
                    ),
                ],
            )))
            .section(Section::new("A person's phone number").form(FormSpec::new(
                "/admin/sms/phone",
                "Save phone",
                vec![
                    Field::new("select", "user_id", "Person").options(
                        users
                            .items
                            .iter()
                            .map(|u| (u.id.to_string(), format!("{} ({})", u.display_name, u.email), false))
                            .collect(),
                    ),
                    Field::new("text", "phone", "Phone")
                        .help("With its country code; leave empty to remove it."),
                ],
            ))),
    )
}

#[derive(Debug, Deserialize)]
pub struct NumberForm {
    #[serde(default)]
    number: String,
    #[serde(default)]
    agent_id: String,
}

async fn add_number(State(state): State<AppState>, Form(web, f): Form<NumberForm>) -> WebResult {
    web.require_admin()?;
    let agent = f
        .agent_id
        .parse()
        .map_err(|_| WebError::bad_request("Choose the agent that answers."))?;
    state.sms.add_number(&web.actor, &f.number, agent).await?;
    see("/admin/sms?done=added")
}

#[derive(Debug, Deserialize)]
pub struct PhoneForm {
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    phone: String,
}

async fn set_phone(State(state): State<AppState>, Form(web, f): Form<PhoneForm>) -> WebResult {
    web.require_admin()?;
    let user: UserId = f
        .user_id
        .parse()
        .map_err(|_| WebError::bad_request("Choose a person."))?;
    state
        .sms
        .set_phone(&web.actor, user, Some(f.phone.as_str()))
        .await?;
    see("/admin/sms?done=phone")
}

#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    #[serde(default)]
    number: String,
}

async fn remove_number(
    State(state): State<AppState>,
    Query(q): Query<RemoveQuery>,
    Form(web, Empty {}): Form<Empty>,
) -> WebResult {
    web.require_admin()?;
    state.sms.remove_number(&web.actor, &q.number).await?;
    see("/admin/sms?done=removed")
}

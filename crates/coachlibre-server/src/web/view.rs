//! The building blocks most pages are made of: the layout (menu, user, anti-forgery token), and
//! a generic page of statistics, tables and forms, so that a list page is a few lines of Rust.

use askama::Template;
use chrono::{DateTime, Utc};
use coachlibre_core::user::{Role, UserView};

use super::Web;

/// A menu entry.
#[derive(Debug, Clone)]
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// What every page's frame needs.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub title: String,
    pub user: Option<UserView>,
    pub csrf: String,
    pub nav: Vec<NavItem>,
    /// A confirmation shown at the top ("Saved.").
    pub notice: Option<String>,
}

const CLIENT_NAV: &[(&str, &str)] = &[
    ("/app", "Conversations"),
    ("/app/goals", "Goals"),
    ("/app/memory", "Memory"),
    ("/app/reminders", "Reminders"),
];
const COACH_NAV: &[(&str, &str)] = &[
    ("/coach", "Dashboard"),
    ("/coach/clients", "Clients"),
    ("/coach/agents", "Agents"),
    ("/coach/knowledge", "Knowledge"),
    ("/coach/work", "Skills & workflows"),
    ("/coach/approvals", "Approvals"),
];
const ADMIN_NAV: &[(&str, &str)] = &[
    ("/admin", "Status"),
    ("/admin/users", "Users"),
    ("/admin/keys", "API keys"),
    ("/admin/sms", "Text messages"),
    ("/admin/audit", "Audit log"),
];

impl Layout {
    /// For pages without a signed-in user (sign-in, errors).
    pub fn bare(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            ..Self::default()
        }
    }

    pub fn for_user(web: &Web, title: String) -> Self {
        let mut entries: Vec<(&'static str, &'static str)> = Vec::new();
        match web.actor.role {
            Role::Client => entries.extend_from_slice(CLIENT_NAV),
            Role::Coach => entries.extend_from_slice(COACH_NAV),
            Role::Admin => {
                entries.extend_from_slice(COACH_NAV);
                entries.extend_from_slice(ADMIN_NAV);
            }
        }
        entries.push(("/account", "Account"));
        // The longest entry that prefixes the path is the current one.
        let current = entries
            .iter()
            .filter(|(href, _)| {
                web.path == *href
                    || (web.path.starts_with(href) && web.path[href.len()..].starts_with('/'))
            })
            .max_by_key(|(href, _)| href.len())
            .map(|(href, _)| *href);
        Self {
            title,
            user: Some(web.user.clone()),
            csrf: web.csrf.clone(),
            nav: entries
                .into_iter()
                .map(|(href, label)| NavItem {
                    href,
                    label,
                    current: Some(href) == current,
                })
                .collect(),
            notice: None,
        }
    }

    pub fn notice(mut self, notice: Option<&str>) -> Self {
        self.notice = notice.map(str::to_owned);
        self
    }
}

/// A button that posts a small form (delete, revoke, approve...).
#[derive(Debug, Clone)]
pub struct Post {
    pub action: String,
    pub label: String,
    /// Extra hidden fields.
    pub fields: Vec<(String, String)>,
    pub danger: bool,
    /// A question the browser asks before posting.
    pub confirm: Option<String>,
}

impl Post {
    pub fn new(action: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            label: label.into(),
            fields: Vec::new(),
            danger: false,
            confirm: None,
        }
    }

    pub fn confirm(mut self, question: &str) -> Self {
        self.confirm = Some(question.to_owned());
        self
    }

    pub fn danger(mut self) -> Self {
        self.danger = true;
        self
    }

    pub fn field(mut self, name: &str, value: impl Into<String>) -> Self {
        self.fields.push((name.to_owned(), value.into()));
        self
    }
}

/// One table cell: text, a link, a status badge, a progress bar or buttons.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    pub text: String,
    pub href: Option<String>,
    /// A badge class (`ok`, `warn`, `bad`, `info`) shown around the text.
    pub badge: Option<&'static str>,
    /// Percent done, drawn as a progress bar before the text.
    pub progress: Option<u8>,
    pub posts: Vec<Post>,
}

impl Cell {
    pub fn text(t: impl Into<String>) -> Self {
        Self {
            text: t.into(),
            ..Self::default()
        }
    }

    pub fn link(t: impl Into<String>, href: impl Into<String>) -> Self {
        Self {
            text: t.into(),
            href: Some(href.into()),
            ..Self::default()
        }
    }

    pub fn badge(t: impl Into<String>, class: &'static str) -> Self {
        Self {
            text: t.into(),
            badge: Some(class),
            ..Self::default()
        }
    }

    pub fn time(t: DateTime<Utc>) -> Self {
        Self::text(when(t))
    }

    pub fn progress(percent: f64, text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            progress: Some(percent.clamp(0.0, 100.0).round() as u8),
            ..Self::default()
        }
    }

    pub fn posts(posts: Vec<Post>) -> Self {
        Self {
            posts,
            ..Self::default()
        }
    }
}

/// A date and time as shown on pages (UTC).
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A form field.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub label: String,
    /// `text`, `email`, `password`, `number`, `url`, `textarea`, `select`, `file`, `checkbox`.
    pub kind: &'static str,
    pub value: String,
    /// For `select`: (value, label, selected).
    pub options: Vec<(String, String, bool)>,
    pub help: String,
    pub required: bool,
}

impl Field {
    pub fn new(kind: &'static str, name: &str, label: &str) -> Self {
        Self {
            name: name.to_owned(),
            label: label.to_owned(),
            kind,
            value: String::new(),
            options: Vec::new(),
            help: String::new(),
            required: false,
        }
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn value(mut self, v: impl Into<String>) -> Self {
        self.value = v.into();
        self
    }

    pub fn help(mut self, h: impl Into<String>) -> Self {
        self.help = h.into();
        self
    }

    pub fn options(mut self, options: Vec<(String, String, bool)>) -> Self {
        self.options = options;
        self
    }

    /// The element id of the field (labels point at it).
    pub fn id(&self) -> String {
        format!("f-{}", self.name)
    }
}

/// A form: where it posts, its fields and its button.
#[derive(Debug, Clone)]
pub struct FormSpec {
    pub action: String,
    pub submit: String,
    pub fields: Vec<Field>,
    pub multipart: bool,
}

impl FormSpec {
    pub fn new(action: impl Into<String>, submit: &str, fields: Vec<Field>) -> Self {
        Self {
            action: action.into(),
            submit: submit.to_owned(),
            fields,
            multipart: false,
        }
    }

    pub fn multipart(mut self) -> Self {
        self.multipart = true;
        self
    }
}

/// A part of a page: a heading, a table (or its empty state), buttons and a form.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub heading: String,
    pub intro: String,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    /// Shown instead of the table when there are no rows: what to do first.
    pub empty: String,
    /// Links shown as buttons above the table.
    pub links: Vec<(String, String)>,
    pub form: Option<FormSpec>,
    /// Link to the next page of rows.
    pub next: Option<String>,
    /// When set, the page's script reloads the section from this address while some row is
    /// still in progress (ingestion, jobs).
    pub refresh: Option<String>,
    /// Whether a row is still in progress.
    pub pending: bool,
    /// Preformatted text shown under the heading (a report, a prompt).
    pub pre: Option<String>,
    /// Buttons that post (open a test chat, delete...).
    pub buttons: Vec<Post>,
}

impl Section {
    pub fn new(heading: impl Into<String>) -> Self {
        Self {
            heading: heading.into(),
            ..Self::default()
        }
    }

    pub fn intro(mut self, t: impl Into<String>) -> Self {
        self.intro = t.into();
        self
    }

    pub fn table(mut self, columns: Vec<&'static str>, rows: Vec<Vec<Cell>>) -> Self {
        self.columns = columns;
        self.rows = rows;
        self
    }

    pub fn empty(mut self, t: impl Into<String>) -> Self {
        self.empty = t.into();
        self
    }

    pub fn link(mut self, label: impl Into<String>, href: impl Into<String>) -> Self {
        self.links.push((label.into(), href.into()));
        self
    }

    pub fn form(mut self, f: FormSpec) -> Self {
        self.form = Some(f);
        self
    }

    pub fn next(mut self, next: Option<String>) -> Self {
        self.next = next;
        self
    }

    pub fn refresh(mut self, url: impl Into<String>, pending: bool) -> Self {
        self.refresh = Some(url.into());
        self.pending = pending;
        self
    }

    pub fn button(mut self, p: Post) -> Self {
        self.buttons.push(p);
        self
    }

    pub fn pre(mut self, t: impl Into<String>) -> Self {
        self.pre = Some(t.into());
        self
    }
}

/// A figure on a dashboard.
#[derive(Debug, Clone)]
pub struct Stat {
    pub label: String,
    pub value: String,
    pub href: Option<String>,
}

impl Stat {
    pub fn new(label: &str, value: impl ToString, href: Option<&str>) -> Self {
        Self {
            label: label.to_owned(),
            value: value.to_string(),
            href: href.map(str::to_owned),
        }
    }
}

/// The generic page.
#[derive(Debug, Template)]
#[template(path = "page.html")]
pub struct Page {
    pub l: Layout,
    pub heading: String,
    pub intro: String,
    pub stats: Vec<Stat>,
    pub sections: Vec<Section>,
}

impl Page {
    pub fn new(l: Layout, heading: impl Into<String>) -> Self {
        Self {
            l,
            heading: heading.into(),
            intro: String::new(),
            stats: Vec::new(),
            sections: Vec::new(),
        }
    }

    pub fn intro(mut self, t: impl Into<String>) -> Self {
        self.intro = t.into();
        self
    }

    pub fn stats(mut self, stats: Vec<Stat>) -> Self {
        self.stats = stats;
        self
    }

    pub fn section(mut self, s: Section) -> Self {
        self.sections.push(s);
        self
    }
}

/// One section alone, for the script that refreshes it.
#[derive(Debug, Template)]
#[template(path = "fragment.html")]
pub struct Fragment {
    pub l: Layout,
    pub s: Section,
}

/// `next_cursor` as a link to the same page.
pub fn next_link(base: &str, cursor: Option<String>) -> Option<String> {
    cursor.map(|c| {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!(
            "{base}{sep}{}",
            serde_urlencoded::to_string([("cursor", c)]).unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use coachlibre_core::actor::{Actor, Credential};
    use coachlibre_core::ids::{TenantId, UserId};

    fn web(role: Role, path: &str) -> Web {
        let actor = Actor {
            user_id: UserId::generate(),
            tenant_id: TenantId::generate(),
            role,
            credential: Credential::Session,
        };
        Web {
            user: UserView {
                id: actor.user_id,
                tenant_id: actor.tenant_id,
                email: "a@b.test".into(),
                display_name: "A".into(),
                role,
                mfa_enabled: false,
                created_at: chrono::Utc::now(),
            },
            actor,
            csrf: "t".into(),
            path: path.into(),
        }
    }

    fn current(l: &Layout) -> Vec<&str> {
        l.nav.iter().filter(|n| n.current).map(|n| n.href).collect()
    }

    #[test]
    fn the_menu_fits_the_role_and_marks_the_longest_matching_entry() {
        let client = Layout::for_user(&web(Role::Client, "/app/memory"), "M".into());
        assert!(client.nav.iter().all(|n| !n.href.starts_with("/coach")));
        assert_eq!(current(&client), ["/app/memory"]);
        let coach = Layout::for_user(&web(Role::Coach, "/coach/agents/123"), "A".into());
        assert!(coach.nav.iter().all(|n| !n.href.starts_with("/admin")));
        assert_eq!(current(&coach), ["/coach/agents"]);
        let admin = Layout::for_user(&web(Role::Admin, "/admin"), "S".into());
        assert!(admin.nav.iter().any(|n| n.href == "/admin/audit"));
        assert_eq!(current(&admin), ["/admin"]);
        // "/coach" is not the current entry of "/coachlibre" (a prefix, not a parent).
        let other = Layout::for_user(&web(Role::Coach, "/coachlibre"), "X".into());
        assert!(current(&other).is_empty());
    }

    #[test]
    fn next_links_keep_the_query() {
        assert_eq!(next_link("/a", None), None);
        assert_eq!(
            next_link("/a", Some("x y".into())).as_deref(),
            Some("/a?cursor=x+y")
        );
        assert_eq!(
            next_link("/a?b=1", Some("c".into())).as_deref(),
            Some("/a?b=1&cursor=c")
        );
    }
}

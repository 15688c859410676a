//! Storage contract for agents, conversations, memory, goals, approvals, usage and
//! notifications, on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL.

use coachlibre_core::agent::{Agent, AgentInput};
use coachlibre_core::conversation::{
    Approval, ApprovalStatus, Channel, Conversation, Message, MessageStatus, UsageRecord,
};
use coachlibre_core::goal::{Goal, GoalUpdate, KeyResult, Notification, Reminder};
use coachlibre_core::ids::{ApprovalId, TenantId, UsageId};
use coachlibre_core::memory::{Memory, MemoryKind, Profile};
use coachlibre_core::model::{ChatRole, ToolCall};
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::prelude::*;
use coachlibre_core::store::{ConversationFilter, StoreError};
use coachlibre_core::user::Role;

mod common;
use common::{on_every_backend, tenant, user};

const TOOLS: &[&str] = &["remember", "create_goal"];

fn agent(t: coachlibre_core::ids::TenantId, owner: Option<coachlibre_core::ids::UserId>) -> Agent {
    Agent::create(
        t,
        owner,
        AgentInput {
            name: Some("Coach bot".into()),
            tools: Some(vec!["remember".into()]),
            ..Default::default()
        },
        TOOLS,
    )
    .expect("valid agent")
}

#[tokio::test]
async fn agents_round_trip_and_visibility_follows_coach_links() {
    on_every_backend(|store, backend| async move {
        let t = tenant("agents");
        store.insert_tenant(&t).await.unwrap();
        let coach = user(t.id, "coach@a.test", Role::Coach);
        let other_coach = user(t.id, "coach2@a.test", Role::Coach);
        let client = user(t.id, "client@a.test", Role::Client);
        for u in [&coach, &other_coach, &client] {
            store.insert_user(u).await.unwrap();
        }
        store.link_coach(t.id, coach.id, client.id).await.unwrap();
        let shared = agent(t.id, None);
        let mine = agent(t.id, Some(coach.id));
        let theirs = agent(t.id, Some(other_coach.id));
        for a in [&shared, &mine, &theirs] {
            store.insert_agent(a).await.unwrap();
        }
        assert_eq!(
            store.get_agent(t.id, mine.id).await.unwrap(),
            Some(mine.clone()),
            "{backend}"
        );
        let page = PageRequest::default();
        let ids = |v: Vec<Agent>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_agents(t.id, None, &page).await.unwrap()).len(),
            3
        );
        assert_eq!(
            ids(store
                .list_agents(t.id, Some(client.id), &page)
                .await
                .unwrap()),
            vec![shared.id, mine.id],
            "{backend}: a client sees the tenant's agents and their coach's"
        );
        assert_eq!(
            ids(store
                .list_agents(t.id, Some(coach.id), &page)
                .await
                .unwrap()),
            vec![shared.id, mine.id]
        );
        let mut changed = mine.clone();
        changed
            .apply(
                AgentInput {
                    persona: Some("Be kind".into()),
                    ..Default::default()
                },
                TOOLS,
            )
            .unwrap();
        store.update_agent(&changed).await.unwrap();
        assert_eq!(
            store
                .get_agent(t.id, mine.id)
                .await
                .unwrap()
                .unwrap()
                .persona,
            "Be kind"
        );
        // Another tenant sees nothing.
        let t2 = tenant("agents-other");
        store.insert_tenant(&t2).await.unwrap();
        assert_eq!(store.get_agent(t2.id, mine.id).await.unwrap(), None);
        assert!(!store.delete_agent(t2.id, mine.id).await.unwrap());
        assert!(store.delete_agent(t.id, mine.id).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn conversations_messages_windows_and_search() {
    on_every_backend(|store, backend| async move {
        let t = tenant("convs");
        store.insert_tenant(&t).await.unwrap();
        let coach = user(t.id, "coach@c.test", Role::Coach);
        let client = user(t.id, "client@c.test", Role::Client);
        store.insert_user(&coach).await.unwrap();
        store.insert_user(&client).await.unwrap();
        store.link_coach(t.id, coach.id, client.id).await.unwrap();
        let a = agent(t.id, Some(coach.id));
        store.insert_agent(&a).await.unwrap();
        let c = Conversation::new(t.id, client.id, a.id, Channel::Web, None).unwrap();
        store.insert_conversation(&c).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..6 {
            let role = if i % 2 == 0 {
                ChatRole::User
            } else {
                ChatRole::Assistant
            };
            let mut m = Message::new(t.id, c.id, role, format!("message {i} about 100% Running"));
            if i == 5 {
                m.tool_calls = vec![ToolCall {
                    id: "call_1".into(),
                    name: "remember".into(),
                    arguments: serde_json::json!({"content": "x"}),
                }];
            }
            store.insert_message(&m).await.unwrap();
            ids.push(m.id);
        }
        // A message touches its conversation; one for another tenant's conversation is refused.
        let last = store.get_message(t.id, ids[5]).await.unwrap().unwrap();
        let conv = store.get_conversation(t.id, c.id).await.unwrap().unwrap();
        assert_eq!(conv.updated_at, last.created_at, "{backend}");
        let stray = Message::new(TenantId::generate(), c.id, ChatRole::User, "x");
        assert!(matches!(
            store.insert_message(&stray).await,
            Err(StoreError::NotFound)
        ));
        assert!(store.get_message(t.id, stray.id).await.unwrap().is_none());
        let recent = store.recent_messages(t.id, c.id, None, 3).await.unwrap();
        assert_eq!(
            recent.iter().map(|m| m.id).collect::<Vec<_>>(),
            ids[3..].to_vec(),
            "{backend}: newest three, oldest first"
        );
        assert_eq!(recent[2].tool_calls.len(), 1);
        let after = store
            .recent_messages(t.id, c.id, Some(ids[4]), 10)
            .await
            .unwrap();
        assert_eq!(after.len(), 1);
        let page = PageRequest::parse(Some(4), None).unwrap();
        assert_eq!(
            store.list_messages(t.id, c.id, &page).await.unwrap().len(),
            5
        );
        // Search is case-insensitive and treats % as a character.
        let found = store
            .search_messages(t.id, client.id, "100% running", 10)
            .await
            .unwrap();
        assert_eq!(found.len(), 6, "{backend}");
        assert!(
            store
                .search_messages(t.id, client.id, "100_", 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Partial answers are updated in place.
        let mut m = recent[2].clone();
        m.content.push_str(" (cut)");
        m.status = MessageStatus::Partial;
        store.update_message(&m).await.unwrap();
        assert_eq!(store.get_message(t.id, m.id).await.unwrap(), Some(m));
        // Summary and meta.
        store
            .set_summary(t.id, c.id, "They run.", ids[2])
            .await
            .unwrap();
        store
            .set_conversation_meta(t.id, c.id, "Running", true)
            .await
            .unwrap();
        let got = store.get_conversation(t.id, c.id).await.unwrap().unwrap();
        assert_eq!(
            (got.summary.as_str(), got.summary_upto, got.archived),
            ("They run.", Some(ids[2]), true)
        );
        let f = ConversationFilter {
            coach_id: Some(coach.id),
            ..Default::default()
        };
        let page = PageRequest::default();
        assert!(
            store
                .list_conversations(t.id, &f, &page)
                .await
                .unwrap()
                .is_empty(),
            "archived are hidden by default"
        );
        let f = ConversationFilter {
            include_archived: true,
            ..f
        };
        assert_eq!(
            store
                .list_conversations(t.id, &f, &page)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .latest_conversation(t.id, client.id, a.id, "web")
                .await
                .unwrap(),
            None
        );
        let t2 = tenant("convs-other");
        store.insert_tenant(&t2).await.unwrap();
        assert_eq!(store.get_conversation(t2.id, c.id).await.unwrap(), None);
        assert!(
            store
                .search_messages(t2.id, client.id, "running", 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.delete_conversation(t.id, c.id).await.unwrap());
        assert!(store.get_message(t.id, ids[0]).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn memories_profiles_and_retention() {
    on_every_backend(|store, backend| async move {
        let t = tenant("memories");
        store.insert_tenant(&t).await.unwrap();
        let client = user(t.id, "client@m.test", Role::Client);
        store.insert_user(&client).await.unwrap();
        assert_eq!(
            store.get_profile(t.id, client.id).await.unwrap(),
            Profile::default()
        );
        let mut p = Profile::default();
        p.set("name", "Alice").unwrap();
        store.put_profile(t.id, client.id, &p).await.unwrap();
        p.set("goals", "Run 10 km").unwrap();
        store.put_profile(t.id, client.id, &p).await.unwrap();
        assert_eq!(store.get_profile(t.id, client.id).await.unwrap(), p);

        let mut m = Memory::new(
            t.id,
            client.id,
            MemoryKind::Fact,
            Some("location".into()),
            "I live in Paris",
            "extracted",
        )
        .unwrap();
        m.embedding = Some(vec![0.25, -1.5, 3.0]);
        store.insert_memory(&m).await.unwrap();
        let found = store
            .find_memory_by_key(t.id, client.id, "location")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found, m, "{backend}: embedding round-trips");
        m.content = "I live in Lyon".into();
        store.update_memory(&m).await.unwrap();
        let other = Memory::new(
            t.id,
            client.id,
            MemoryKind::Commitment,
            None,
            "I will run",
            "tool",
        )
        .unwrap();
        store.insert_memory(&other).await.unwrap();
        let listed = store
            .list_memories(t.id, client.id, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].id, other.id, "newest first");
        assert_eq!(listed[1].content, "I live in Lyon");
        assert_eq!(
            store
                .memories_for_recall(t.id, client.id, 10)
                .await
                .unwrap()
                .len(),
            2
        );
        // Other tenants cannot delete; retention expires old ones.
        let t2 = tenant("memories-other");
        store.insert_tenant(&t2).await.unwrap();
        assert!(!store.delete_memory(t2.id, client.id, m.id).await.unwrap());
        assert!(store.delete_memory(t.id, client.id, m.id).await.unwrap());
        assert_eq!(store.memory_retention(t.id).await.unwrap(), None);
        store.set_memory_retention(t.id, Some(30)).await.unwrap();
        assert_eq!(store.memory_retention(t.id).await.unwrap(), Some(30));
        assert!(
            store
                .retention_policies()
                .await
                .unwrap()
                .contains(&(t.id, 30))
        );
        let future = coachlibre_core::now() + chrono::Duration::seconds(1);
        assert_eq!(store.expire_memories(t2.id, future).await.unwrap(), 0);
        assert_eq!(store.expire_memories(t.id, future).await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn goals_reminders_and_notifications() {
    on_every_backend(|store, backend| async move {
        let t = tenant("goals");
        store.insert_tenant(&t).await.unwrap();
        let client = user(t.id, "client@g.test", Role::Client);
        let coach = user(t.id, "coach@g.test", Role::Coach);
        store.insert_user(&client).await.unwrap();
        store.insert_user(&coach).await.unwrap();
        let mut g = Goal::new(
            t.id,
            client.id,
            "Run a 10 km",
            Some("before summer"),
            vec![KeyResult {
                title: "long run".into(),
                target: 10.0,
                current: 2.0,
                unit: Some("km".into()),
            }],
            chrono::NaiveDate::from_ymd_opt(2027, 6, 1),
        )
        .unwrap();
        store.insert_goal(&g).await.unwrap();
        g.update(GoalUpdate {
            key_result_progress: Some((0, 5.0)),
            ..Default::default()
        })
        .unwrap();
        store.update_goal(&g).await.unwrap();
        assert_eq!(
            store.get_goal(t.id, g.id).await.unwrap(),
            Some(g.clone()),
            "{backend}"
        );
        assert_eq!(store.list_goals(t.id, client.id).await.unwrap(), vec![g]);

        let due = coachlibre_core::now() + chrono::Duration::hours(1);
        let r = Reminder::new(t.id, client.id, None, "Stretch", due).unwrap();
        store.insert_reminder(&r).await.unwrap();
        assert_eq!(
            store
                .list_reminders(t.id, client.id, &PageRequest::default())
                .await
                .unwrap(),
            vec![r]
        );

        let n = Notification::new(t.id, coach.id, "budget_exceeded", "x".into(), "k1".into());
        assert!(store.insert_notification(&n).await.unwrap());
        let again = Notification::new(t.id, coach.id, "budget_exceeded", "x".into(), "k1".into());
        assert!(
            !store.insert_notification(&again).await.unwrap(),
            "deduplicated"
        );
        let listed = store
            .list_notifications(t.id, coach.id, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(listed, vec![n.clone()]);
        let now = coachlibre_core::now();
        assert!(
            store
                .mark_notification_read(t.id, coach.id, n.id, now)
                .await
                .unwrap()
        );
        assert!(
            !store
                .mark_notification_read(t.id, coach.id, n.id, now)
                .await
                .unwrap()
        );
    })
    .await;
}

#[tokio::test]
async fn approvals_decide_once_resume_once_and_usage_sums() {
    on_every_backend(|store, backend| async move {
        let t = tenant("approvals");
        store.insert_tenant(&t).await.unwrap();
        let coach = user(t.id, "coach@p.test", Role::Coach);
        let client = user(t.id, "client@p.test", Role::Client);
        store.insert_user(&coach).await.unwrap();
        store.insert_user(&client).await.unwrap();
        store.link_coach(t.id, coach.id, client.id).await.unwrap();
        let a = agent(t.id, Some(coach.id));
        store.insert_agent(&a).await.unwrap();
        let c = Conversation::new(t.id, client.id, a.id, Channel::Api, Some("x")).unwrap();
        store.insert_conversation(&c).await.unwrap();
        let m = Message::new(t.id, c.id, ChatRole::Assistant, "");
        store.insert_message(&m).await.unwrap();
        assert_eq!(
            store
                .latest_conversation(t.id, client.id, a.id, "api")
                .await
                .unwrap()
                .map(|x| x.id),
            Some(c.id)
        );
        let ap = Approval {
            id: ApprovalId::generate(),
            tenant_id: t.id,
            conversation_id: c.id,
            message_id: m.id,
            client_id: client.id,
            agent_id: a.id,
            tool_call: ToolCall {
                id: "c1".into(),
                name: "create_goal".into(),
                arguments: serde_json::json!({"title": "Run"}),
            },
            status: ApprovalStatus::Pending,
            decided_by: None,
            resumed: false,
            created_at: coachlibre_core::now(),
            decided_at: None,
        };
        store.insert_approval(&ap).await.unwrap();
        let page = PageRequest::default();
        assert_eq!(
            store
                .list_approvals(t.id, Some(ApprovalStatus::Pending), Some(coach.id), &page)
                .await
                .unwrap(),
            vec![ap.clone()],
            "{backend}"
        );
        assert!(!store.claim_approval_resume(t.id, ap.id).await.unwrap());
        let now = coachlibre_core::now();
        assert!(
            store
                .decide_approval(t.id, ap.id, ApprovalStatus::Approved, coach.id, now)
                .await
                .unwrap()
        );
        assert!(
            !store
                .decide_approval(t.id, ap.id, ApprovalStatus::Rejected, coach.id, now)
                .await
                .unwrap(),
            "decided once"
        );
        let pending = store.approvals_to_resume().await.unwrap();
        assert!(pending.iter().any(|x| x.id == ap.id));
        assert!(store.claim_approval_resume(t.id, ap.id).await.unwrap());
        assert!(!store.claim_approval_resume(t.id, ap.id).await.unwrap());
        assert!(
            !store
                .approvals_to_resume()
                .await
                .unwrap()
                .iter()
                .any(|x| x.id == ap.id)
        );

        let since = coachlibre_core::conversation::month_start(coachlibre_core::now());
        for (p, c2, cost) in [(100, 20, 0.5), (10, 5, 0.25)] {
            store
                .insert_usage(&UsageRecord {
                    id: UsageId::generate(),
                    tenant_id: t.id,
                    client_id: client.id,
                    agent_id: a.id,
                    conversation_id: Some(c.id),
                    model: "m".into(),
                    prompt_tokens: p,
                    completion_tokens: c2,
                    cost_usd: cost,
                    estimated: false,
                    created_at: coachlibre_core::now(),
                })
                .await
                .unwrap();
        }
        let totals = store
            .usage_since(t.id, client.id, a.id, since)
            .await
            .unwrap();
        assert_eq!(totals.tokens, 135, "{backend}");
        assert!((totals.cost_usd - 0.75).abs() < 1e-9);
        let none = store
            .usage_since(t.id, coach.id, a.id, since)
            .await
            .unwrap();
        assert_eq!(none.tokens, 0);
    })
    .await;
}

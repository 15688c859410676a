//! The turn loop with a scripted model, on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL:
//! streaming, tools, tool errors, the step limit, memory extraction and folding, approvals
//! across a restart, budgets and cancellation.

use std::sync::Arc;
use std::time::Duration;

use coachlibre_agent::{Coaching, Runtime, TurnEvent, TurnFinish};
use coachlibre_core::actor::Actor;
use coachlibre_core::agent::{AgentInput, Budget, MemoryPolicy};
use coachlibre_core::conversation::{ApprovalStatus, Channel, Message, MessageStatus};
use coachlibre_core::ids::TenantId;
use coachlibre_core::model::{ChatRole, ModelError};
use coachlibre_core::page::PageRequest;
use coachlibre_core::store::Store;
use coachlibre_core::tenant::{Tenant, TenantSlug};
use coachlibre_core::user::Role;
use coachlibre_store::{ConnectOptions, SqlStore};
use coachlibre_testkit::TestDb;
use coachlibre_testkit::people::{actor, person};
use coachlibre_testkit::scripted::{HashEmbedder, Script, ScriptedModel, ScriptedSource, Step};
use serde_json::json;

struct World {
    store: Arc<dyn Store>,
    model: Arc<ScriptedModel>,
    coaching: Coaching,
    coach: Actor,
    client: Actor,
    tenant: TenantId,
    _db: TestDb,
}

async fn worlds() -> Vec<World> {
    let mut out = Vec::new();
    for db in TestDb::all().await.expect("test setup") {
        let sql = SqlStore::connect(&db.url, &ConnectOptions::default())
            .await
            .expect("test setup");
        sql.migrate().await.expect("test setup");
        let store: Arc<dyn Store> = Arc::new(sql);
        let t = Tenant::new(TenantSlug::parse("rt").expect("test setup"), "Practice")
            .expect("test setup");
        store.insert_tenant(&t).await.expect("test setup");
        let coach = person(t.id, "coach@rt.test", Role::Coach);
        let client = person(t.id, "client@rt.test", Role::Client);
        store.insert_user(&coach).await.expect("test setup");
        store.insert_user(&client).await.expect("test setup");
        store
            .link_coach(t.id, coach.id, client.id)
            .await
            .expect("test setup");
        let model = Arc::new(ScriptedModel::new("scripted"));
        let source = ScriptedSource::new()
            .with("scripted", model.clone())
            .with_embedder(Arc::new(HashEmbedder));
        let runtime = Runtime::new(store.clone(), Arc::new(source)).with_max_steps(3);
        out.push(World {
            coaching: Coaching::new(store.clone(), runtime),
            store,
            model,
            coach: actor(&coach),
            client: actor(&client),
            tenant: t.id,
            _db: db,
        });
    }
    out
}

impl World {
    async fn agent(&self, input: AgentInput) -> coachlibre_core::agent::Agent {
        self.coaching
            .create_agent(
                &self.coach,
                AgentInput {
                    name: Some("Coach".into()),
                    model: Some("scripted".into()),
                    template: Some("life-coach".into()),
                    ..input
                },
            )
            .await
            .expect("test setup")
    }

    async fn conversation(
        &self,
        agent: &coachlibre_core::agent::Agent,
    ) -> coachlibre_core::ids::ConversationId {
        self.coaching
            .create_conversation(&self.client, agent.id, Channel::Web, None)
            .await
            .expect("test setup")
            .id
    }

    /// The conversation's messages once `done` holds of them (or after two seconds): for
    /// what background work writes.
    async fn wait_for(
        &self,
        conv: coachlibre_core::ids::ConversationId,
        done: impl Fn(&[Message]) -> bool,
    ) -> Vec<Message> {
        let mut msgs = Vec::new();
        for _ in 0..200 {
            msgs = self
                .coaching
                .list_messages(&self.client, conv, &PageRequest::default())
                .await
                .expect("messages")
                .items;
            if done(&msgs) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        msgs
    }

    /// Run a turn to the end and collect its events.
    async fn turn(&self, conv: coachlibre_core::ids::ConversationId, text: &str) -> Vec<TurnEvent> {
        let mut rx = self
            .coaching
            .send_message(&self.client, conv, text)
            .await
            .expect("test setup");
        let mut events = Vec::new();
        while let Some(ev) = rx.recv().await {
            events.push(ev);
        }
        events
    }
}

fn text_of(events: &[TurnEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::Token { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn finish_of(events: &[TurnEvent]) -> Option<TurnFinish> {
    events.iter().find_map(|e| match e {
        TurnEvent::Done { finish, .. } => Some(*finish),
        _ => None,
    })
}

#[tokio::test]
async fn a_turn_streams_and_persists_answer_and_usage() {
    for w in worlds().await {
        let agent = w.agent(AgentInput::default()).await;
        let conv = w.conversation(&agent).await;
        w.model
            .push(Script::text("Hello Alice, how can I help?").with_usage(42, 7, 0.01));
        let events = w.turn(conv, "Hello!").await;
        assert_eq!(text_of(&events), "Hello Alice, how can I help?");
        let usage = match events.last() {
            Some(TurnEvent::Done { usage, finish, .. }) => {
                assert_eq!(*finish, TurnFinish::Stop);
                *usage
            }
            other => panic!("last event {other:?}"),
        };
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (42, 7));
        let msgs = w
            .coaching
            .list_messages(&w.client, conv, &PageRequest::default())
            .await
            .unwrap()
            .items;
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].role, ChatRole::User);
        assert_eq!(msgs[1].content, "Hello Alice, how can I help?");
        assert_eq!(msgs[1].prompt_tokens, 42);
        // The persona is the system prompt; the client's message closes the prompt.
        let req = &w.model.requests()[0];
        assert_eq!(req.messages[0].role, ChatRole::System);
        assert!(req.messages[0].content.contains("life and business coach"));
        assert_eq!(req.messages.last().unwrap().content, "Hello!");
        assert!(req.tools.iter().any(|t| t.name == "create_goal"));
        let used = w
            .store
            .usage_since(
                w.tenant,
                w.client.user_id,
                agent.id,
                coachlibre_core::conversation::month_start(coachlibre_core::now()),
            )
            .await
            .unwrap();
        assert_eq!(used.tokens, 49);
    }
}

#[tokio::test]
async fn tools_run_between_steps_and_bad_calls_go_back_to_the_model() {
    for w in worlds().await {
        let agent = w.agent(AgentInput::default()).await;
        let conv = w.conversation(&agent).await;
        // Step 1: two calls, one valid, one with a wrong argument type; step 2: the answer.
        w.model.push(Script {
            steps: vec![
                Step::Call(
                    "create_goal".into(),
                    json!({"title": "Run a 10 km", "key_results": [{"title": "long run", "target": 10, "unit": "km"}]}),
                ),
                Step::Call("update_profile".into(), json!({"field": "shoe_size", "value": "42"})),
                Step::Call("delete_everything".into(), json!({})),
            ],
            ..Default::default()
        });
        w.model.push(Script::text("Your goal is set."));
        let events = w.turn(conv, "I want to run a 10 km").await;
        let results: Vec<(String, bool)> = events
            .iter()
            .filter_map(|e| match e {
                TurnEvent::ToolResult { name, ok, .. } => Some((name.clone(), *ok)),
                _ => None,
            })
            .collect();
        assert_eq!(
            results,
            vec![
                ("create_goal".to_owned(), true),
                ("update_profile".to_owned(), false),
                ("delete_everything".to_owned(), false)
            ]
        );
        assert_eq!(finish_of(&events), Some(TurnFinish::Stop));
        assert_eq!(text_of(&events), "Your goal is set.");
        let goals = w
            .coaching
            .list_goals(&w.coach, w.client.user_id)
            .await
            .unwrap();
        assert_eq!(goals.len(), 1);
        assert_eq!(goals[0].goal.title, "Run a 10 km");
        // The second request carries the tool results, errors included.
        let second = &w.model.requests()[1];
        let tool_msgs: Vec<&str> = second
            .messages
            .iter()
            .filter(|m| m.role == ChatRole::Tool)
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(tool_msgs.len(), 3);
        assert!(tool_msgs[1].contains("error"), "{}", tool_msgs[1]);
        assert!(tool_msgs[2].contains("no tool named"));
        // Every call is audited with its arguments and result.
        let audit = w
            .store
            .list_audit(w.tenant, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(
            audit.iter().filter(|a| a.action == "tool.called").count(),
            3
        );
    }
}

#[tokio::test]
async fn a_model_that_keeps_calling_tools_is_stopped() {
    for w in worlds().await {
        let agent = w.agent(AgentInput::default()).await;
        let conv = w.conversation(&agent).await;
        let model = w.model.clone();
        for _ in 0..3 {
            model.push(Script::call("list_goals", json!({})));
        }
        let events = w.turn(conv, "Loop please").await;
        assert_eq!(finish_of(&events), Some(TurnFinish::StepLimit));
        assert_eq!(w.model.requests().len(), 3);
    }
}

#[tokio::test]
async fn memory_is_extracted_updated_and_recalled() {
    for w in worlds().await {
        let agent = w.agent(AgentInput::default()).await;
        let conv = w.conversation(&agent).await;
        w.model.push(Script::text("Nice to meet you."));
        w.turn(
            conv,
            "Hi! My name is Alice. I live in Paris. I will run every Monday.",
        )
        .await;
        let profile = w
            .coaching
            .get_profile(&w.coach, w.client.user_id)
            .await
            .unwrap();
        assert_eq!(profile.name.as_deref(), Some("Alice"));
        w.model.push(Script::text("Lyon is lovely."));
        w.turn(conv, "News: I moved to Lyon.").await;
        let memories = w
            .coaching
            .list_memories(&w.client, w.client.user_id, &PageRequest::default())
            .await
            .unwrap()
            .items;
        let places: Vec<&str> = memories
            .iter()
            .filter(|m| m.key.as_deref() == Some("location"))
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(
            places,
            vec!["I moved to Lyon"],
            "the new place replaces the old"
        );
        assert_eq!(memories.len(), 3, "{memories:?}");
        // The next prompt pins the profile and recalls the memories.
        w.model.push(Script::text("Sure."));
        w.turn(conv, "Where do I live again?").await;
        let system = w.model.requests().last().unwrap().messages[0]
            .content
            .clone();
        assert!(system.contains("- name: Alice"), "{system}");
        assert!(system.contains("I moved to Lyon"), "{system}");
        assert!(!system.contains("Paris"), "{system}");
        // The client deletes a memory; a coach may not.
        let id = memories[0].id;
        assert!(
            w.coaching
                .delete_memory(&w.coach, w.client.user_id, id)
                .await
                .is_err()
        );
        w.coaching
            .delete_memory(&w.client, w.client.user_id, id)
            .await
            .unwrap();
        // Retention expires old memories.
        let admin = Actor {
            role: Role::Admin,
            ..w.coach.clone()
        };
        w.coaching.set_retention(&admin, Some(1)).await.unwrap();
        assert!(w.coaching.set_retention(&admin, Some(0)).await.is_err());
        assert_eq!(
            coachlibre_agent::service::expire_memories(w.store.as_ref())
                .await
                .unwrap(),
            0
        );
    }
}

#[tokio::test]
async fn old_turns_fold_into_a_rolling_summary() {
    for w in worlds().await {
        let agent = w
            .agent(AgentInput {
                memory: Some(MemoryPolicy {
                    window_tokens: 128,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        let conv = w.conversation(&agent).await;
        // 21 estimated tokens per client message, 12 per answer: four turns fit in 128
        // tokens, the fifth folds.
        let long = "I have been training hard this week and I feel tired but motivated.";
        for i in 0..4 {
            w.model
                .push(Script::text(&format!("Answer {i}: keep going, rest well.")));
            w.turn(conv, long).await;
            assert_eq!(
                w.coaching
                    .get_conversation(&w.client, conv)
                    .await
                    .unwrap()
                    .summary,
                ""
            );
        }
        // The next turn must fold: the model is first asked for a summary.
        w.model
            .push(Script::text("The client trains hard and feels tired."));
        w.model.push(Script::text("Rest today."));
        w.turn(conv, "What now?").await;
        let c = w.coaching.get_conversation(&w.client, conv).await.unwrap();
        assert_eq!(c.summary, "The client trains hard and feels tired.");
        let reqs = w.model.requests();
        let last = reqs.last().unwrap();
        assert!(last.messages[0].content.contains("The client trains hard"));
        let tokens: u32 = last.messages[1..]
            .iter()
            .map(|m| coachlibre_agent::prompt::estimate_tokens(&m.content))
            .sum();
        assert!(tokens <= 128, "window holds {tokens} tokens");
        assert_eq!(w.model.pending(), 0);
    }
}

#[tokio::test]
async fn sensitive_calls_wait_for_the_coach_and_resume_after_a_restart() {
    for w in worlds().await {
        let agent = w
            .agent(AgentInput {
                approval_tools: Some(vec!["create_goal".into()]),
                ..Default::default()
            })
            .await;
        let conv = w.conversation(&agent).await;
        w.model
            .push(Script::call("create_goal", json!({"title": "Quit sugar"})));
        let events = w.turn(conv, "Help me quit sugar").await;
        assert_eq!(finish_of(&events), Some(TurnFinish::AwaitingApproval));
        let approval_id = events
            .iter()
            .find_map(|e| match e {
                TurnEvent::ApprovalRequired { approval_id, .. } => Some(*approval_id),
                _ => None,
            })
            .unwrap();
        assert!(
            w.coaching
                .list_goals(&w.client, w.client.user_id)
                .await
                .unwrap()
                .is_empty()
        );
        let notes = w
            .coaching
            .list_notifications(&w.coach, &PageRequest::default())
            .await
            .unwrap()
            .items;
        assert_eq!(notes[0].kind, "approval_requested");
        // The client cannot approve their own call.
        assert!(
            w.coaching
                .decide(&w.client, approval_id, true)
                .await
                .is_err()
        );

        // "Restart": the decision is written, but the process stops before resuming.
        w.store
            .decide_approval(
                w.tenant,
                approval_id,
                ApprovalStatus::Approved,
                w.coach.user_id,
                coachlibre_core::now(),
            )
            .await
            .unwrap();
        let model = Arc::new(ScriptedModel::new("scripted"));
        model.push(Script::text("Done: your goal is recorded."));
        let source = ScriptedSource::new().with("scripted", model.clone());
        let fresh = Runtime::new(w.store.clone(), Arc::new(source));
        assert_eq!(fresh.resume_pending().await.unwrap(), 1);
        assert_eq!(fresh.resume_pending().await.unwrap(), 0, "resumed once");
        let goals = w
            .coaching
            .list_goals(&w.client, w.client.user_id)
            .await
            .unwrap();
        assert_eq!(goals.len(), 1);
        let msgs = w
            .coaching
            .list_messages(&w.client, conv, &PageRequest::default())
            .await
            .unwrap()
            .items;
        assert_eq!(msgs.last().unwrap().content, "Done: your goal is recorded.");
        assert!(msgs.iter().all(|m| m.status == MessageStatus::Complete));
        // A decided approval cannot be decided again.
        assert!(
            w.coaching
                .decide(&w.coach, approval_id, false)
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn a_rejected_call_tells_the_model() {
    for w in worlds().await {
        let agent = w
            .agent(AgentInput {
                approval_tools: Some(vec!["schedule_reminder".into()]),
                ..Default::default()
            })
            .await;
        let conv = w.conversation(&agent).await;
        w.model.push(Script::call(
            "schedule_reminder",
            json!({"text": "Stretch", "in_minutes": 60}),
        ));
        let events = w.turn(conv, "Remind me to stretch").await;
        let id = events
            .iter()
            .find_map(|e| match e {
                TurnEvent::ApprovalRequired { approval_id, .. } => Some(*approval_id),
                _ => None,
            })
            .unwrap();
        w.model.push(Script::text("Your coach preferred not to."));
        w.coaching.decide(&w.coach, id, false).await.unwrap();
        // The resume runs in the background; wait for its answer.
        let msgs = w
            .wait_for(conv, |m| {
                m.last()
                    .is_some_and(|l| l.content == "Your coach preferred not to.")
            })
            .await;
        let last = msgs.last().unwrap().content.clone();
        assert_eq!(last, "Your coach preferred not to.");
        let reminders = w
            .coaching
            .list_reminders(&w.client, w.client.user_id, &PageRequest::default())
            .await
            .unwrap();
        assert!(reminders.items.is_empty());
        let tool_result = w.model.requests().last().unwrap().messages.clone();
        assert!(
            tool_result
                .iter()
                .any(|m| m.role == ChatRole::Tool && m.content.contains("declined"))
        );
    }
}

#[tokio::test]
async fn budgets_stop_the_agent_plainly_and_notify_the_coach() {
    for w in worlds().await {
        let agent = w
            .agent(AgentInput {
                budget: Some(Budget {
                    monthly_tokens: Some(100),
                    monthly_cost_usd: None,
                }),
                ..Default::default()
            })
            .await;
        let conv = w.conversation(&agent).await;
        w.model
            .push(Script::text("First answer.").with_usage(90, 20, 0.0));
        w.turn(conv, "Hello").await;
        let events = w.turn(conv, "Hello again").await;
        assert_eq!(finish_of(&events), Some(TurnFinish::BudgetExceeded));
        assert!(text_of(&events).contains("limit"), "{}", text_of(&events));
        assert_eq!(
            w.model.requests().len(),
            1,
            "the model is not called past the budget"
        );
        w.turn(conv, "And again").await;
        let notes = w
            .coaching
            .list_notifications(&w.coach, &PageRequest::default())
            .await
            .unwrap()
            .items;
        assert_eq!(
            notes.len(),
            1,
            "one notification per client, agent and month"
        );
        assert_eq!(notes[0].kind, "budget_exceeded");
    }
}

#[tokio::test]
async fn a_dropped_stream_cancels_and_keeps_the_partial_answer() {
    for w in worlds().await {
        let agent = w.agent(AgentInput::default()).await;
        let conv = w.conversation(&agent).await;
        w.model.push(Script {
            steps: vec![Step::Token("Let me think".into()), Step::Hang],
            ..Default::default()
        });
        let mut rx = w
            .coaching
            .send_message(&w.client, conv, "A hard question")
            .await
            .unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!(
            first,
            TurnEvent::Token {
                text: "Let me think".into()
            }
        );
        drop(rx);
        let msgs = w
            .wait_for(conv, |m| m.iter().any(|m| m.role == ChatRole::Assistant))
            .await;
        let partial = msgs.into_iter().find(|m| m.role == ChatRole::Assistant);
        let partial = partial.expect("partial answer stored");
        assert_eq!(partial.content, "Let me think");
        assert_eq!(partial.status, MessageStatus::Partial);
    }
}

#[tokio::test]
async fn failures_become_error_events_and_bad_input_is_refused() {
    for w in worlds().await {
        let agent = w.agent(AgentInput::default()).await;
        let conv = w.conversation(&agent).await;
        w.model.push(Script {
            refuse: Some(ModelError::Unavailable("down".into())),
            ..Default::default()
        });
        let events = w.turn(conv, "Hello").await;
        assert!(matches!(
            events.last(),
            Some(TurnEvent::Error {
                code: "model_unavailable",
                ..
            })
        ));
        assert!(
            w.coaching
                .send_message(&w.client, conv, "   ")
                .await
                .is_err()
        );
        // Only the conversation's client may talk in it.
        assert!(w.coaching.send_message(&w.coach, conv, "hi").await.is_err());
        // An agent on a missing model is refused before streaming.
        let broken = w
            .coaching
            .create_agent(
                &w.coach,
                AgentInput {
                    name: Some("b".into()),
                    model: Some("nope".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let c2 = w.conversation(&broken).await;
        let events = w.turn(c2, "Hello").await;
        assert!(
            matches!(
                events.last(),
                Some(TurnEvent::Error {
                    code: "conflict",
                    ..
                })
            ),
            "{events:?}"
        );
    }
}

#[tokio::test]
async fn a_turn_run_again_with_its_message_id_stores_the_message_once() {
    for w in worlds().await {
        let agent = w.agent(AgentInput::default()).await;
        let conv = w.conversation(&agent).await;
        let id = coachlibre_core::ids::MessageId::generate();
        for answer in ["First answer.", "Second answer."] {
            w.model.push(Script::text(answer));
            let mut req = w
                .coaching
                .prepare_turn(&w.client, conv, "Text from my phone", None)
                .await
                .expect("turn");
            req.message_id = Some(id);
            let mut rx = w.coaching.runtime().start(req);
            let mut events = Vec::new();
            while let Some(ev) = rx.recv().await {
                events.push(ev);
            }
            assert_eq!(finish_of(&events), Some(TurnFinish::Stop), "{events:?}");
        }
        let msgs = w
            .coaching
            .list_messages(&w.client, conv, &PageRequest::default())
            .await
            .unwrap()
            .items;
        let users: Vec<&Message> = msgs.iter().filter(|m| m.role == ChatRole::User).collect();
        assert_eq!(users.len(), 1, "the client's message is stored once");
        assert_eq!(users[0].id, id);
        assert_eq!(msgs.len(), 3);
        // The second run's prompt still ends with the client's message, once.
        let second = &w.model.requests()[1];
        let asked = second
            .messages
            .iter()
            .filter(|m| m.content == "Text from my phone")
            .count();
        assert_eq!(asked, 1);
    }
}

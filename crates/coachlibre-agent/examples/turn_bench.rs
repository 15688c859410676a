//! Turn overhead without a model: what the runtime itself costs per turn (persist the client's
//! message, assemble the prompt with profile, recalled memories and the recent window, stream
//! a scripted answer, persist the answer and usage, extract memories), with a scripted model
//! that answers at once and a hashing embedder.
//!
//! ```sh
//! cargo run --release -p coachlibre-agent --example turn_bench -- [TURNS] [DATABASE_URL]
//! ```
//!
//! TURNS defaults to 2000 (after 200 warm-up turns); DATABASE_URL defaults to a fresh SQLite
//! file in a temporary directory (`postgres://...` measures PostgreSQL; the bench creates its
//! own tenant, so any database with the schema migrated or empty works). Prints p50/p90/p99/max
//! of the time to the `done` event and of the whole turn (until its task ends, memory
//! extraction included), sequentially and with 16 conversations at once.

use std::sync::Arc;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use coachlibre_agent::{Coaching, Runtime, TurnEvent, TurnRequest};
use coachlibre_core::agent::{Agent, AgentInput};
use coachlibre_core::conversation::{Channel, Conversation};
use coachlibre_core::store::Store;
use coachlibre_core::tenant::{Tenant, TenantSlug};
use coachlibre_core::user::Role;
use coachlibre_store::{ConnectOptions, SqlStore};
use coachlibre_testkit::TempDir;
use coachlibre_testkit::people::{actor, person};
use coachlibre_testkit::scripted::{HashEmbedder, Script, ScriptedModel, ScriptedSource};

/// Client messages, cycled; some carry facts the extractor keeps.
const MESSAGES: &[&str] = &[
    "Hi, I would like to prepare a half marathon this spring.",
    "My name is Camille and I work as a nurse, mostly night shifts.",
    "I can run three times a week, never on Sundays.",
    "Last week I ran 12 km in 70 minutes, my knee hurt a little.",
    "I live in Lyon now, I moved from Paris in September.",
    "What should I eat the evening before a long run?",
    "I want to run the Lyon half marathon in under two hours.",
    "Can you remind me why tempo runs matter?",
];

const ANSWER: &str = "That is a good plan. Start with three easy runs a week, keep one long \
                      run on Saturday, and add a short tempo block once your knee feels fine. \
                      Tell me how the next run goes.";

/// (time to `done`, whole turn)
async fn turn(
    runtime: &Runtime,
    conv: &Conversation,
    agent: &Agent,
    text: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let mut rx = runtime.start(TurnRequest {
        conversation: conv.clone(),
        agent: agent.clone(),
        text: text.to_owned(),
        history: None,
        params: None,
        instruction: false,
        message_id: None,
    });
    let mut done = None;
    while let Some(ev) = rx.recv().await {
        match ev {
            TurnEvent::Done { .. } => done = Some(start.elapsed()),
            TurnEvent::Error { message, .. } => anyhow::bail!("turn failed: {message}"),
            _ => {}
        }
    }
    let whole = start.elapsed();
    Ok((done.ok_or_else(|| anyhow::anyhow!("no done event"))?, whole))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(label: &str, mut xs: Vec<Duration>) {
    xs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {label} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        xs.len(),
        ms(percentile(&xs, 50.0)),
        ms(percentile(&xs, 90.0)),
        ms(percentile(&xs, 99.0)),
        ms(xs.last().copied().unwrap_or_default()),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let turns: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let tmp = TempDir::new()?;
    let url = args
        .next()
        .unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("bench.db").display()));
    let engine = if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };

    let sql = SqlStore::connect(&url, &ConnectOptions::default()).await?;
    sql.migrate().await?;
    let store: Arc<dyn Store> = Arc::new(sql);
    let slug = format!("bench{}", uuid_suffix());
    let tenant = Tenant::new(TenantSlug::parse(&slug)?, "Bench practice")?;
    store.insert_tenant(&tenant).await?;
    let coach = person(tenant.id, &format!("coach@{slug}.test"), Role::Coach);
    store.insert_user(&coach).await?;
    let model = Arc::new(
        ScriptedModel::new("scripted")
            .always(Script::text(ANSWER))
            .without_recording(),
    );
    let source = ScriptedSource::new()
        .with("scripted", model)
        .with_embedder(Arc::new(HashEmbedder));
    let runtime = Runtime::new(store.clone(), Arc::new(source));
    let coaching = Coaching::new(store.clone(), runtime);
    let runtime = &coaching.runtime().clone();
    let agent = coaching
        .create_agent(
            &actor(&coach),
            AgentInput {
                name: Some("Sport coach".into()),
                model: Some("scripted".into()),
                template: Some("sport-coach".into()),
                ..AgentInput::default()
            },
        )
        .await?;

    // 16 clients, one conversation each.
    let mut convs = Vec::new();
    for i in 0..16 {
        let client = person(tenant.id, &format!("client{i}@{slug}.test"), Role::Client);
        store.insert_user(&client).await?;
        store.link_coach(tenant.id, coach.id, client.id).await?;
        convs.push(
            coaching
                .create_conversation(&actor(&client), agent.id, Channel::Web, None)
                .await?,
        );
    }

    println!(
        "Turn overhead on {engine}: scripted answer of {} words, hashing embedder",
        ANSWER.split(' ').count()
    );
    for i in 0..200 {
        let conv = &convs[i % convs.len()];
        turn(runtime, conv, &agent, MESSAGES[i % MESSAGES.len()]).await?;
    }

    let mut to_done = Vec::with_capacity(turns);
    let mut whole = Vec::with_capacity(turns);
    let started = Instant::now();
    for i in 0..turns {
        let conv = &convs[i % convs.len()];
        let (d, w) = turn(runtime, conv, &agent, MESSAGES[i % MESSAGES.len()]).await?;
        to_done.push(d);
        whole.push(w);
    }
    let seq_rate = turns as f64 / started.elapsed().as_secs_f64();

    // 16 conversations at once, each taking turns back to back.
    let per = turns / convs.len();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for conv in convs.clone() {
        let rt = runtime.clone();
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per);
            for i in 0..per {
                out.push(turn(&rt, &conv, &agent, MESSAGES[i % MESSAGES.len()]).await?);
            }
            anyhow::Ok(out)
        }));
    }
    let mut conc_done = Vec::new();
    let mut conc_whole = Vec::new();
    for t in tasks {
        for (d, w) in t.await?? {
            conc_done.push(d);
            conc_whole.push(w);
        }
    }
    let conc_rate = conc_done.len() as f64 / started.elapsed().as_secs_f64();

    println!();
    println!("| measure | turns | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    report("sequential: to `done`", to_done);
    report("sequential: whole turn", whole);
    report("16 at once: to `done`", conc_done);
    report("16 at once: whole turn", conc_whole);
    println!();
    println!(
        "throughput: {seq_rate:.0} turns/s sequential, {conc_rate:.0} turns/s with 16 at once"
    );
    Ok(())
}

fn uuid_suffix() -> String {
    coachlibre_core::ids::TenantId::generate().to_string()[24..].to_owned()
}

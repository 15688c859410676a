//! The knowledge service on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL: ingestion of
//! each format, re-upload idempotence and versioning, deletion, tenant isolation,
//! permissions, resumed ingestion, and re-embedding after a model change.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coachlibre_core::Error;
use coachlibre_core::actor::Actor;
use coachlibre_core::ids::{CollectionId, TenantId};
use coachlibre_core::knowledge::{DocumentStatus, KnowledgeSource};
use coachlibre_core::model::{EmbeddingModel, ModelError};
use coachlibre_core::store::Store;
use coachlibre_core::tenant::{Tenant, TenantSlug};
use coachlibre_core::user::Role;
use coachlibre_knowledge::{Knowledge, SearchRequest, Upload};
use coachlibre_store::{ConnectOptions, SqlStore};
use coachlibre_testkit::people::{actor, person};
use coachlibre_testkit::scripted::HashEmbedder;
use coachlibre_testkit::{TestDb, fixtures};

const PROGRAM_MD: &str = "# Programme semi-marathon\n\nHuit semaines pour courir 21 km.\n\n\
## Semaine 1\n\nTrois sorties faciles de 40 minutes. Le dimanche, repos complet.\n\n\
## Fractionné\n\nLe fractionné alterne des efforts courts à allure seuil et des récupérations \
en trottinant. Commencer par 6 fois 400 mètres.\n";

const NUTRITION_HTML: &str = "<html><body><h1>Hydration guide</h1><p>Drink 500 ml of water two \
hours before a long run.</p><h2>During the race</h2><p>Take small sips every fifteen minutes; \
electrolytes help after the first hour.</p><script>track()</script></body></html>";

struct World {
    store: Arc<dyn Store>,
    knowledge: Knowledge,
    tenant: TenantId,
    admin: Actor,
    coach: Actor,
    other_coach: Actor,
    client: Actor,
    stranger: Actor,
    _db: TestDb,
}

async fn tenant(store: &Arc<dyn Store>, slug: &str) -> (TenantId, Vec<Actor>) {
    let t = Tenant::new(TenantSlug::parse(slug).expect("slug"), "Practice").expect("tenant");
    store.insert_tenant(&t).await.expect("tenant");
    let mut actors = Vec::new();
    for (name, role) in [
        ("admin", Role::Admin),
        ("coach", Role::Coach),
        ("coach2", Role::Coach),
        ("client", Role::Client),
        ("client2", Role::Client),
    ] {
        let u = person(t.id, &format!("{name}@{slug}.test"), role);
        store.insert_user(&u).await.expect("user");
        actors.push(actor(&u));
    }
    store
        .link_coach(t.id, actors[1].user_id, actors[3].user_id)
        .await
        .expect("link");
    store
        .link_coach(t.id, actors[2].user_id, actors[4].user_id)
        .await
        .expect("link");
    (t.id, actors)
}

async fn worlds_with(embedder: Arc<dyn EmbeddingModel>) -> Vec<World> {
    let mut out = Vec::new();
    for db in TestDb::all().await.expect("test db") {
        let sql = SqlStore::connect(&db.url, &ConnectOptions::default())
            .await
            .expect("connect");
        sql.migrate().await.expect("migrate");
        let store: Arc<dyn Store> = Arc::new(sql);
        let (t, a) = tenant(&store, "kb").await;
        let knowledge = Knowledge::start(store.clone(), Some(embedder.clone()));
        out.push(World {
            store,
            knowledge,
            tenant: t,
            admin: a[0].clone(),
            coach: a[1].clone(),
            other_coach: a[2].clone(),
            client: a[3].clone(),
            stranger: a[4].clone(),
            _db: db,
        });
    }
    out
}

async fn worlds() -> Vec<World> {
    worlds_with(Arc::new(HashEmbedder)).await
}

impl World {
    async fn collection(&self, name: &str) -> CollectionId {
        self.knowledge
            .create_collection(&self.coach, name, "", None)
            .await
            .expect("collection")
            .id
    }

    async fn upload(
        &self,
        c: CollectionId,
        name: &str,
        bytes: &[u8],
    ) -> (coachlibre_core::knowledge::Document, Upload) {
        let r = self
            .knowledge
            .upload(
                &self.coach,
                c,
                name,
                None,
                bytes.to_vec(),
                serde_json::Map::new(),
            )
            .await
            .expect("upload");
        assert!(
            self.knowledge
                .wait_idle(self.tenant, Duration::from_secs(10))
                .await,
            "ingestion did not finish"
        );
        r
    }

    async fn search(&self, who: &Actor, query: &str) -> Vec<coachlibre_knowledge::SearchResult> {
        self.knowledge
            .search(
                who,
                SearchRequest {
                    query: query.into(),
                    collection_ids: None,
                    limit: Some(10),
                    metadata: None,
                },
            )
            .await
            .expect("search")
    }
}

#[tokio::test]
async fn each_format_is_ingested_and_searchable() {
    for w in worlds().await {
        let c = w.collection("Running").await;
        let pdf = fixtures::pdf(&[
            "Recovery week",
            "Sleep eight hours and keep every run easy.",
            "Foam rolling after each session.",
        ]);
        let files: [(&str, &[u8]); 4] = [
            ("programme.md", PROGRAM_MD.as_bytes()),
            ("hydration.html", NUTRITION_HTML.as_bytes()),
            (
                "notes.txt",
                b"Stretch your calves after the long run on Saturday.",
            ),
            ("recovery.pdf", &pdf),
        ];
        for (name, bytes) in files {
            let (d, outcome) = w.upload(c, name, bytes).await;
            assert_eq!(outcome, Upload::Created);
            let d = w.knowledge.document(&w.coach, d.id).await.expect("doc");
            assert_eq!(d.status, DocumentStatus::Ready, "{name}: {:?}", d.error);
            assert!(
                d.chunks_total > 0 && d.chunks_done == d.chunks_total,
                "{name}"
            );
        }
        let docs = w
            .knowledge
            .list_documents(&w.coach, c, &Default::default())
            .await
            .expect("list");
        let media: Vec<&str> = docs.iter().map(|d| d.media_type.as_str()).collect();
        assert_eq!(
            media,
            vec![
                "text/markdown",
                "text/html",
                "text/plain",
                "application/pdf"
            ]
        );
        assert_eq!(docs[0].title, "Programme semi-marathon");
        assert_eq!(docs[1].title, "Hydration guide");

        let hits = w.search(&w.coach, "fractionné allure seuil").await;
        assert!(hits[0].text.contains("allure seuil"), "{hits:?}");
        assert_eq!(hits[0].heading, "Programme semi-marathon > Fractionné");
        let hits = w.search(&w.coach, "how much water before a long run").await;
        assert!(hits[0].text.contains("500 ml"), "{hits:?}");
        assert!(!hits.iter().any(|h| h.text.contains("track()")));
        let hits = w.search(&w.coach, "sleep foam rolling").await;
        assert!(hits[0].text.contains("Foam rolling"), "{hits:?}");
        assert_eq!(hits[0].title, "recovery.pdf");

        // A passage's span points into the document's text.
        let text = w
            .knowledge
            .document_text(&w.coach, hits[0].document_id)
            .await
            .expect("text");
        let (s, e) = (hits[0].start as usize, hits[0].end as usize);
        assert_eq!(&text[s..e], hits[0].text);
    }
}

#[tokio::test]
async fn same_content_is_a_no_op_and_changed_content_replaces_its_chunks() {
    for w in worlds().await {
        let c = w.collection("Running").await;
        let (d1, _) = w
            .upload(c, "plan.md", b"# Plan\n\nRun intervals on Tuesday.")
            .await;
        let (d2, outcome) = w
            .upload(c, "plan.md", b"# Plan\n\nRun intervals on Tuesday.")
            .await;
        assert_eq!(outcome, Upload::Unchanged);
        assert_eq!((d2.id, d2.version), (d1.id, 1));

        let (d3, outcome) = w
            .upload(c, "plan.md", b"# Plan\n\nSwim laps on Thursday.")
            .await;
        assert_eq!(outcome, Upload::Updated);
        assert_eq!(d3.id, d1.id);
        let d3 = w.knowledge.document(&w.coach, d3.id).await.expect("doc");
        assert_eq!((d3.version, d3.status), (2, DocumentStatus::Ready));
        assert!(w.search(&w.coach, "intervals Tuesday").await.is_empty());
        let hits = w.search(&w.coach, "swim laps").await;
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].document_id, d1.id);
    }
}

#[tokio::test]
async fn deleting_leaves_nothing_searchable() {
    for w in worlds().await {
        let c = w.collection("Running").await;
        let (d, _) = w.upload(c, "a.md", b"Tempo runs build threshold.").await;
        w.upload(c, "b.md", b"Tempo runs need a warm-up.").await;
        assert_eq!(w.search(&w.coach, "tempo").await.len(), 2);
        let chunk = w.search(&w.coach, "threshold").await[0].chunk_id;
        w.knowledge
            .delete_document(&w.coach, d.id)
            .await
            .expect("delete");
        let hits = w.search(&w.coach, "tempo").await;
        assert_eq!(hits.len(), 1);
        assert!(hits.iter().all(|h| h.document_id != d.id));
        assert!(matches!(
            w.knowledge.chunk(&w.coach, chunk).await,
            Err(Error::NotFound { .. })
        ));
        w.knowledge
            .delete_collection(&w.coach, c)
            .await
            .expect("delete collection");
        assert!(w.search(&w.coach, "tempo").await.is_empty());
        assert!(
            w.store
                .chunks_after(w.tenant, None, 10)
                .await
                .expect("chunks")
                .is_empty()
        );
    }
}

#[tokio::test]
async fn another_tenant_never_sees_a_chunk() {
    for w in worlds().await {
        let c = w.collection("Secret plans").await;
        let (_, _) = w
            .upload(c, "s.md", b"Marathon pacing secrets of the practice.")
            .await;
        let hit = w.search(&w.coach, "marathon pacing").await[0].clone();

        let (_, others) = tenant(&w.store, "other").await;
        let (admin_b, coach_b) = (&others[0], &others[1]);
        assert!(
            w.search(admin_b, "marathon pacing secrets")
                .await
                .is_empty()
        );
        assert!(
            w.search(coach_b, "marathon pacing secrets")
                .await
                .is_empty()
        );
        let named = w
            .knowledge
            .search(
                admin_b,
                SearchRequest {
                    query: "marathon".into(),
                    collection_ids: Some(vec![c]),
                    limit: None,
                    metadata: None,
                },
            )
            .await;
        assert!(matches!(named, Err(Error::NotFound { .. })), "{named:?}");
        assert!(matches!(
            w.knowledge.chunk(admin_b, hit.chunk_id).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            w.knowledge.document(admin_b, hit.document_id).await,
            Err(Error::NotFound { .. })
        ));
        // The agents' retrieval is tenant-scoped too.
        let found = w
            .knowledge
            .retrieve(others[0].tenant_id, &[c], "marathon pacing", 5)
            .await
            .expect("retrieve");
        assert!(found.is_empty());
    }
}

#[tokio::test]
async fn coaches_clients_and_admins_get_what_their_role_allows() {
    for w in worlds().await {
        let c = w.collection("Mine").await;
        w.upload(c, "m.md", b"Visualisation before competitions.")
            .await;
        // The coach's client reads it; another coach's client does not.
        assert_eq!(w.search(&w.client, "visualisation").await.len(), 1);
        assert!(w.search(&w.stranger, "visualisation").await.is_empty());
        assert!(w.search(&w.other_coach, "visualisation").await.is_empty());
        assert_eq!(w.search(&w.admin, "visualisation").await.len(), 1);
        // Only the owner (or an admin) changes it.
        let r = w
            .knowledge
            .upload(
                &w.client,
                c,
                "x.md",
                None,
                b"x".to_vec(),
                serde_json::Map::new(),
            )
            .await;
        assert!(matches!(r, Err(Error::Forbidden(_))), "{r:?}");
        let r = w.knowledge.delete_collection(&w.other_coach, c).await;
        assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
        assert!(matches!(
            w.knowledge
                .create_collection(&w.client, "n", "", None)
                .await,
            Err(Error::Forbidden(_))
        ));
        // A shared collection (admin's) is read by every coach and client.
        let shared = w
            .knowledge
            .create_collection(&w.admin, "Practice handbook", "", None)
            .await
            .expect("shared");
        w.knowledge
            .upload(
                &w.admin,
                shared.id,
                "h.md",
                None,
                b"Cancellation policy: 24 hours.".to_vec(),
                serde_json::Map::new(),
            )
            .await
            .expect("upload");
        assert!(
            w.knowledge
                .wait_idle(w.tenant, Duration::from_secs(10))
                .await
        );
        for who in [&w.coach, &w.other_coach, &w.client, &w.stranger] {
            assert_eq!(w.search(who, "cancellation policy").await.len(), 1);
        }
    }
}

#[tokio::test]
async fn bad_files_get_clear_errors() {
    for w in worlds().await {
        let c = w.collection("Files").await;
        let up = |name: &'static str, bytes: Vec<u8>| {
            let k = w.knowledge.clone();
            let coach = w.coach.clone();
            async move {
                k.upload(&coach, c, name, None, bytes, serde_json::Map::new())
                    .await
            }
        };
        let r = up("photo.png", b"\x89PNG\r\n\x1a\n\x00\x00".to_vec()).await;
        assert!(matches!(r, Err(Error::UnsupportedMediaType(_))), "{r:?}");
        let r = up("broken.pdf", b"%PDF-1.7\n garbage garbage".to_vec()).await;
        assert!(
            matches!(&r, Err(Error::Invalid { field: "file", .. })),
            "{r:?}"
        );
        let r = up("locked.pdf", fixtures::encrypted_pdf(&["secret"])).await;
        match r {
            Err(Error::Invalid { message, .. }) => {
                assert!(message.contains("encrypted"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let r = up("empty.txt", Vec::new()).await;
        assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
        let r = up(
            "big.txt",
            vec![b'a'; coachlibre_knowledge::extract::MAX_UPLOAD_BYTES + 1],
        )
        .await;
        assert!(matches!(r, Err(Error::TooLarge(_))), "{r:?}");
        let r = w
            .knowledge
            .search(
                &w.coach,
                SearchRequest {
                    query: "  ".into(),
                    collection_ids: None,
                    limit: None,
                    metadata: None,
                },
            )
            .await;
        assert!(
            matches!(r, Err(Error::Invalid { field: "query", .. })),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn documents_left_pending_are_ingested_at_start() {
    for w in worlds().await {
        let c = w.collection("Running").await;
        // Simulate a crash between the upload and its ingestion: the row is pending.
        let now = coachlibre_core::now();
        let d = coachlibre_core::knowledge::Document {
            id: coachlibre_core::ids::DocumentId::generate(),
            tenant_id: w.tenant,
            collection_id: c,
            title: "left".into(),
            source: "left.md".into(),
            media_type: "text/markdown".into(),
            content_hash: "x".into(),
            size_bytes: 10,
            version: 1,
            status: DocumentStatus::Pending,
            error: None,
            chunks_total: 0,
            chunks_done: 0,
            metadata: serde_json::Map::new(),
            created_at: now,
            updated_at: now,
        };
        w.store
            .insert_document(&d, "Cadence drills: 180 steps per minute.")
            .await
            .expect("insert");
        let restarted = Knowledge::start(w.store.clone(), Some(Arc::new(HashEmbedder)));
        assert!(restarted.wait_idle(w.tenant, Duration::from_secs(10)).await);
        let hits = restarted
            .retrieve(w.tenant, &[c], "cadence drills", 3)
            .await
            .expect("retrieve");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].title, "left");
    }
}

/// A second embedding model: the hash embedder's vectors, negated, under another name (so
/// vectors made by the first model rank backwards under the second).
#[derive(Debug)]
struct OtherEmbedder;

#[async_trait]
impl EmbeddingModel for OtherEmbedder {
    fn name(&self) -> &str {
        "other-embedder"
    }
    fn dimensions(&self) -> usize {
        coachlibre_testkit::scripted::HASH_DIMENSIONS
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        let v = HashEmbedder.embed(texts).await?;
        Ok(v.into_iter()
            .map(|v| v.into_iter().map(|x| -x).collect())
            .collect())
    }
}

#[tokio::test]
async fn changing_the_embedding_model_re_embeds_every_chunk() {
    for w in worlds().await {
        let c = w.collection("Running").await;
        w.upload(c, "a.md", b"Hill repeats build strength.").await;
        w.upload(c, "b.md", b"Easy runs build the aerobic base.")
            .await;

        let next = Knowledge::new(w.store.clone(), Some(Arc::new(OtherEmbedder)));
        let stale = w
            .store
            .chunks_not_embedded_by(w.tenant, "other-embedder", 100)
            .await
            .expect("stale");
        assert_eq!(stale.len(), 2);
        let mut last = (0, 0);
        let n = next
            .rebuild(|done, total| last = (done, total))
            .await
            .expect("rebuild");
        assert_eq!(n, 2);
        assert_eq!(last, (2, 2));
        assert!(
            w.store
                .chunks_not_embedded_by(w.tenant, "other-embedder", 100)
                .await
                .expect("stale")
                .is_empty()
        );
        // The vector ranking now agrees with the new model.
        let hits = next
            .search(
                &w.coach,
                SearchRequest {
                    query: "hill repeats strength".into(),
                    collection_ids: Some(vec![c]),
                    limit: Some(2),
                    metadata: None,
                },
            )
            .await
            .expect("search");
        assert!(hits[0].text.starts_with("Hill"));
        assert_eq!(hits[0].vector_rank, Some(1));
        // Rebuilding again has nothing to do.
        assert_eq!(next.rebuild(|_, _| {}).await.expect("rebuild"), 0);
        // A server started on a changed model re-embeds by itself.
        let again = Knowledge::start(w.store.clone(), Some(Arc::new(HashEmbedder)));
        let mut stale = true;
        for _ in 0..200 {
            stale = again.stale().await.expect("stale");
            if !stale {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!stale, "the start-up re-embedding did not run");
    }
}

/// An embedder taking 10 ms per batch, like a real one on a busy machine.
struct SlowEmbedder;

#[async_trait]
impl EmbeddingModel for SlowEmbedder {
    fn name(&self) -> &str {
        HashEmbedder.name()
    }
    fn dimensions(&self) -> usize {
        HashEmbedder.dimensions()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        HashEmbedder.embed(texts).await
    }
}

/// A tenant's large document does not hold the ingestion: another tenant's one-passage
/// document is ready while it is still being embedded.
#[tokio::test]
async fn a_small_document_passes_another_tenants_large_one() {
    for w in worlds_with(Arc::new(SlowEmbedder)).await {
        let big: String = (0..3_000)
            .map(|i| format!("## Part {i}\n\nParagraph {i} of a very long training guide.\n\n"))
            .collect();
        let c = w.collection("Library").await;
        let (large, _) = w
            .knowledge
            .upload(
                &w.coach,
                c,
                "big.md",
                None,
                big.into_bytes(),
                serde_json::Map::new(),
            )
            .await
            .expect("upload");
        assert!(large.chunks_total == 0 || large.chunks_total > 1000);

        let (other, people) = tenant(&w.store, "small").await;
        let c2 = w
            .knowledge
            .create_collection(&people[1], "Notes", "", None)
            .await
            .expect("collection")
            .id;
        let (small, _) = w
            .knowledge
            .upload(
                &people[1],
                c2,
                "one.md",
                None,
                b"One short note about recovery.".to_vec(),
                serde_json::Map::new(),
            )
            .await
            .expect("upload");
        assert!(
            w.knowledge.wait_idle(other, Duration::from_secs(10)).await,
            "the small document waited"
        );
        let small = w
            .store
            .get_document(other, small.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(small.status, DocumentStatus::Ready);
        let large = w
            .store
            .get_document(w.tenant, large.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(large.status, DocumentStatus::Processing, "still under way");
        assert!(large.chunks_done < large.chunks_total, "{large:?}");
        assert!(
            w.knowledge
                .wait_idle(w.tenant, Duration::from_secs(60))
                .await,
            "the large one finishes too"
        );
    }
}

/// Per-tenant limits: a document of too many passages, or one that would take the tenant
/// past its total, is refused with 413 and the figures.
#[tokio::test]
async fn passage_limits_refuse_with_the_figures() {
    for w in worlds().await {
        let knowledge = w.knowledge.clone().limits(coachlibre_knowledge::Limits {
            document_passages: 5,
            tenant_passages: 8,
        });
        let c = w.collection("Limited").await;
        let text = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|i| format!("## Part {i}\n\nParagraph {i}.\n\n"))
                .collect::<String>()
                .into_bytes()
        };
        let upload = |name: &'static str, bytes: Vec<u8>| {
            let k = knowledge.clone();
            let coach = w.coach.clone();
            async move {
                k.upload(&coach, c, name, None, bytes, serde_json::Map::new())
                    .await
            }
        };
        match upload("six.md", text(6)).await {
            Err(Error::TooLarge(m)) => assert!(m.contains("6 passages"), "{m}"),
            other => panic!("{other:?}"),
        }
        upload("five.md", text(5)).await.expect("at the limit");
        assert!(
            w.knowledge
                .wait_idle(w.tenant, Duration::from_secs(10))
                .await
        );
        match upload("four.md", text(4)).await {
            Err(Error::TooLarge(m)) => assert!(m.contains("9 passages"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A new version replaces its passages: five becoming three fits.
        upload("five.md", text(3)).await.expect("a smaller version");
    }
}

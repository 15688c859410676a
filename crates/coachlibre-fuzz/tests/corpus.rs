//! Every input of the committed corpus (`fuzz/corpus/TARGET/`: the seeds and what fuzzing
//! found) through its target's property: a crash once found stays a test.

use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_target_has_a_corpus_and_it_passes() {
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, property) in coachlibre_fuzz::TARGETS {
        let dir = corpus_dir().join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name}: no seeds in {}", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            total += 1;
            if std::panic::catch_unwind(|| property(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "properties broken by: {failures:#?}");
    assert!(total >= coachlibre_fuzz::TARGETS.len());
}

#[test]
fn targets_are_found_by_name() {
    assert!(coachlibre_fuzz::target("html").is_some());
    assert!(coachlibre_fuzz::target("nope").is_none());
}

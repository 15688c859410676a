#![no_main]

libfuzzer_sys::fuzz_target!(
    // `pdf-extract` panics on some files and `extract` catches that, but libFuzzer's hook
    // aborts on any panic, caught or not. Panics in CoachLibre's own code still abort.
    init: std::panic::set_hook(Box::new(|info| {
        if info.location().is_some_and(|l| l.file().contains("coachlibre")) {
            eprintln!("{info}");
            std::process::abort();
        }
    })),
    |data: &[u8]| {
        // A stack overflow kills the process before libFuzzer can save the input: with
        // FUZZ_LAST_INPUT set, each input is written there first.
        if let Some(path) = std::env::var_os("FUZZ_LAST_INPUT") {
            let _ = std::fs::write(path, data);
        }
        coachlibre_fuzz::pdf(data)
    }
);

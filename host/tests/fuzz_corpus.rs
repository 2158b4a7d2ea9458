//! Replays every committed fuzz corpus input (`fuzz/corpus/<target>/`) through its target in
//! `keyport::fuzzing`: what the long fuzzing runs found and kept stays covered by every test run.

use std::path::Path;

#[test]
fn every_fuzz_corpus_input_still_holds_its_property() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, target) in keyport::fuzzing::TARGETS {
        let dir = corpus.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(
            inputs.len() >= 10,
            "{name}: only {} corpus inputs; run `just fuzz` and commit the corpus",
            inputs.len()
        );
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "{name}: {} breaks the property (replay: cargo fuzz run {name} {})",
                input.display(),
                input.display()
            );
        }
        eprintln!("{name}: {} inputs replayed", inputs.len());
    }
}

#[test]
fn a_broken_property_is_reported_by_the_replay() {
    // The replay is not vacuous: an input that breaks a property panics in its target.
    let target = keyport::fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == "vault_open")
        .unwrap()
        .1;
    let sealed = {
        let ring = keyport::vault::KeyRing::new(vec![("k1".into(), [7u8; 32])], "k1").unwrap();
        ring.seal(
            b"x",
            keyport::vault::Context {
                workspace: "w",
                row: "conn_1",
                field: "access_token",
            },
        )
    };
    // A genuine sealed secret is not "arbitrary bytes": the target must refuse to call it
    // unopenable.
    assert!(std::panic::catch_unwind(|| target(&sealed)).is_err());
}

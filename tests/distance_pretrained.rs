//! The distance study on a pretrained Hugging Face model: `model.load` from the HF cache
//! layout (`models--ORG--NAME/snapshots/REV`), the repeated string given as text and turned
//! into token ids by the model's own `tokenizer.json`, over a text corpus tokenized alike.
//! The model is a tiny GPT-NeoX written here in HF format (the parity fixtures prove that
//! format against `transformers`); Pythia-70m in a real cache takes the same path.

mod common;

use common::experiment;
use std::path::Path;
use vestige::data::spec::Kind;
use vestige::engine::config::ModelConfig;
use vestige::engine::model::Model;
use vestige::hf::tokenizer::Tokenizer;
use vestige::lab::execute::{run, Options};
use vestige::lab::experiment::Experiment;
use vestige::train::config::TaskSpec;

const TOKENIZER: &str = "tests/fixtures/tokenizer/tokenizer.json";

/// A tiny GPT-NeoX with a vocabulary that holds the fixture tokenizer's ids, saved with that
/// tokenizer as snapshot `rev1` of cache folder `hub/models--tiny--neox`; returns the folder.
fn cached_model(root: &Path) -> std::path::PathBuf {
    let mut hf: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/models/gpt_neox_sequential/model/config.json").unwrap(),
    )
    .unwrap();
    let vocab = Tokenizer::from_file(Path::new(TOKENIZER)).unwrap().vocab_size();
    hf["vocab_size"] = (vocab + 4).into();
    let cfg = ModelConfig::from_json(hf, "config.json").unwrap();
    let repo = root.join("hub").join("models--tiny--neox");
    Model::init(cfg, 0.02, 7).save(&repo.join("snapshots").join("rev1"), Some(Path::new(TOKENIZER))).unwrap();
    repo
}

const STUDY: &str = r#"name = "distance-pretrained"
template = "distance"
seed = 1
threads = 2

[model]
load = "REPO"

[[tasks]]
name = "repeat"
kind = "repeat"
text = " the the"
over = { kind = "corpus", path = "CORPUS", tokenizer = "REPO/snapshots/rev1/tokenizer.json", seq_len = 12 }

[distance]
behavior = "repeat"
counts = [0, 2]
insert = "prepend"
lrs = [0.01, 0.03, 0.1]
steps = 10
batch_size = 4
eval_samples = 8
evals = 1
saturation = { kinds = ["full"], lrs = [0.001], steps = 10, evals = 2, patience = 1 }
"#;

#[test]
fn a_cached_pretrained_model_runs_the_repetition_study_with_a_text_string_in_its_own_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = cached_model(tmp.path());
    let corpus = tmp.path().join("corpus.txt");
    let doc = "the cat sat on the mat and the dog ran to the park while it rained all day long";
    std::fs::write(&corpus, (0..60).map(|k| format!("{doc} {k}\n\n")).collect::<String>()).unwrap();
    let text = STUDY.replace("REPO", &repo.display().to_string()).replace("CORPUS", &corpus.display().to_string());
    let exp = Experiment::load(&experiment(tmp.path(), &text)).unwrap();
    // The string is the model tokenizer's encoding of the text, in both the behavior and
    // the length of its random twin.
    let ids = Tokenizer::from_file(Path::new(TOKENIZER)).unwrap().encode(" the the").unwrap();
    assert!(ids.len() >= 2, "{ids:?}");
    let cell = &exp.cells.iter().find(|c| c.id.contains("null_target_p2")).unwrap().config;
    let task = |name: &str| cell.tasks.iter().find(|t| t.name == name).unwrap().build().unwrap();
    assert_eq!(task("repeat").sample(1, vestige::data::Split::Eval, 0).cycle.unwrap(), ids);
    let twin = cell.tasks.iter().find(|t| t.name == "repeat-null").unwrap();
    let Kind::Repeat(twin) = &twin.kind else { panic!("the twin is a repeat") };
    assert_eq!((twin.spec.string.len(), twin.spec.text.as_ref()), (ids.len(), None));
    assert_ne!(twin.spec.string, ids);
    let (exp, outcome) = run(&exp.file, &Options::default()).unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    vestige::commands::experiment::write_report(&exp, None).unwrap();
    let summary = std::fs::read_to_string(exp.root.join("report").join("summary.md")).unwrap();
    assert!(summary.contains("| target | repeat | soft |"), "{summary}");
}

#[test]
fn a_text_string_needs_a_tokenizer_and_not_also_token_ids() {
    let spec = |s: &str| TaskSpec::parse_inline(s);
    let grammar = spec("{ kind = \"repeat\", text = \"pee\", vocab = 40, seq_len = 8 }").unwrap();
    let err = grammar.build().err().expect("a grammar has no tokenizer").to_string();
    assert!(err.contains("tokenizer") && err.contains("pee"), "{err}");
    let both = spec("{ kind = \"repeat\", text = \"pee\", string = [3], vocab = 40, seq_len = 8 }");
    let err = match both {
        Ok(s) => s.build().err().map(|e| e.to_string()).unwrap_or_default(),
        Err(e) => e,
    };
    assert!(err.contains("not both"), "{err}");
}

//! The broad synthetic distribution (Zipfian grammar), local text corpora (BPE training,
//! token cache, hash splits, errors) and the repetition and skip-k target behaviors.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vestige::data::corpus::{is_eval, END_OF_TEXT};
use vestige::data::grammar::Grammar;
use vestige::data::spec::{Base, Kind, TaskSpec};
use vestige::data::vocab::{tokenizer_for, VocabError};
use vestige::data::{Sample, Split, Task};
use vestige::train::batching::batch_of;
use vestige::train::config::RunConfig;

fn task(spec: &str) -> Arc<dyn Task> {
    TaskSpec::parse_inline(spec).unwrap().build().unwrap()
}

fn grammar(vocab: usize, seq_len: usize) -> Arc<dyn Task> {
    task(&format!("{{ kind = \"grammar\", vocab = {vocab}, seq_len = {seq_len} }}"))
}

// ---------------------------------------------------------------------------------------
// Grammar
// ---------------------------------------------------------------------------------------

#[test]
fn grammar_documents_are_deterministic_and_use_only_the_configured_token_range() {
    let t = task("{ kind = \"grammar\", vocab = 100, seq_len = 64, token_range = [10, 40] }");
    assert_eq!(t.vocab_size(), 100);
    for i in 0..200 {
        let s = t.sample(3, Split::Train, i);
        assert_eq!(s, t.sample(3, Split::Train, i));
        assert_eq!(s.tokens.len(), 64);
        assert!(s.tokens.iter().all(|&x| x == 1 || (10..40).contains(&x)), "{:?}", s.tokens);
        assert!(s.tokens.contains(&1), "sentences end with the separator");
        assert_eq!(s.weights[0], 0.0);
        assert!(s.weights[1..].iter().all(|&w| w == 1.0), "every token is scored");
    }
    assert_ne!(t.sample(3, Split::Train, 0), t.sample(4, Split::Train, 0));
}

/// Least-squares slope of log(frequency) against log(rank) over the `top` most frequent
/// tokens other than the separator.
fn rank_frequency_slope(t: &dyn Task, docs: u64, top: usize) -> f64 {
    let mut counts = BTreeMap::<u32, u64>::new();
    for i in 0..docs {
        for &x in t.sample(0, Split::Train, i).tokens.iter().filter(|&&x| x != 1) {
            *counts.entry(x).or_default() += 1;
        }
    }
    let mut freq: Vec<f64> = counts.into_values().map(|c| c as f64).collect();
    freq.sort_by(|a, b| b.total_cmp(a));
    let points: Vec<(f64, f64)> =
        freq.iter().take(top).enumerate().map(|(r, f)| (((r + 1) as f64).ln(), f.ln())).collect();
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    cov / var
}

#[test]
fn grammar_unigram_frequencies_are_zipf_with_the_configured_exponent() {
    for zipf in [1.1, 1.5] {
        let t = task(&format!("{{ kind = \"grammar\", vocab = 1026, seq_len = 256, zipf = {zipf} }}"));
        let slope = rank_frequency_slope(t.as_ref(), 1500, 200);
        assert!((slope + zipf).abs() < 0.1, "zipf {zipf}: rank-frequency slope {slope:.3}");
    }
}

#[test]
fn grammar_eval_documents_never_equal_train_documents() {
    let t = grammar(64, 32);
    let train: HashSet<Vec<u32>> = (0..3000).map(|i| t.sample(1, Split::Train, i).tokens).collect();
    assert!(train.len() > 2990, "train documents are varied");
    assert!((0..3000).all(|i| !train.contains(&t.sample(1, Split::Eval, i).tokens)));
}

#[test]
fn grammar_splits_are_disjoint_by_construction_even_where_chance_would_collide() {
    // Four-token documents over a small vocabulary repeat within a split all the time, so
    // independent draws would share documents across splits; the split sampler keeps them apart.
    let t = grammar(16, 4);
    let train: Vec<Vec<u32>> = (0..3000).map(|i| t.sample(1, Split::Train, i).tokens).collect();
    let distinct: HashSet<&Vec<u32>> = train.iter().collect();
    assert!(distinct.len() < 1000, "short documents repeat: {} distinct of 3000", distinct.len());
    let eval: Vec<Vec<u32>> = (0..3000).map(|i| t.sample(1, Split::Eval, i).tokens).collect();
    assert!(eval.iter().all(|d| !distinct.contains(d)), "an eval document appears in training");
    assert!(eval.iter().collect::<HashSet<_>>().len() > 1, "eval draws documents too");
}

#[test]
fn a_different_grammar_seed_draws_a_different_grammar() {
    assert_eq!(Grammar::new(7, 2, 64, 1.1), Grammar::new(7, 2, 64, 1.1));
    assert_ne!(Grammar::new(7, 2, 64, 1.1), Grammar::new(8, 2, 64, 1.1));
    // The bigram sets of the two grammars' text differ substantially.
    let bigrams = |g: u64| -> HashSet<(u32, u32)> {
        let t = task(&format!("{{ kind = \"grammar\", vocab = 40, seq_len = 128, grammar_seed = {g} }}"));
        (0..300)
            .flat_map(|i| t.sample(0, Split::Train, i).tokens.windows(2).map(|w| (w[0], w[1])).collect::<Vec<_>>())
            .collect()
    };
    let (a, b) = (bigrams(1), bigrams(2));
    let shared = a.intersection(&b).count() as f64 / a.union(&b).count() as f64;
    assert!(shared < 0.8, "bigram overlap {shared:.2}");
}

// ---------------------------------------------------------------------------------------
// Corpora
// ---------------------------------------------------------------------------------------

/// `n` distinct documents of pseudo-words.
fn documents(n: usize, salt: u64) -> Vec<String> {
    let syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "qe", "zu"];
    (0..n)
        .map(|d| {
            let mut h = vestige::data::mix(d as u64 ^ (salt << 32));
            let words: Vec<String> = (0..20 + d % 15)
                .map(|_| {
                    h = vestige::data::mix(h);
                    (0..1 + h % 3).map(|j| syllables[((h >> (8 * j)) % 10) as usize]).collect()
                })
                .collect();
            format!("{} {d}.", words.join(" "))
        })
        .collect()
}

/// A plain-text corpus file (documents separated by blank lines).
fn write_text(dir: &Path, docs: &[String]) -> PathBuf {
    let path = dir.join("corpus.txt");
    std::fs::write(&path, docs.join("\n\n") + "\n").unwrap();
    path
}

fn corpus_spec(path: &Path, extra: &str) -> String {
    format!("{{ kind = \"corpus\", path = {:?}, seq_len = 32, bpe_vocab = 300{extra} }}", path.to_str().unwrap())
}

/// The stream a split should hold: its documents encoded by `tok`, each followed by the end token.
fn expected_stream(tok: &tokenizers::Tokenizer, docs: &[String], eval: bool) -> Vec<u32> {
    let end = tok.token_to_id(END_OF_TEXT).unwrap();
    docs.iter()
        .filter(|d| is_eval(d) == eval)
        .flat_map(|d| {
            tok.encode_fast(d.as_str(), false).unwrap().get_ids().iter().copied().chain([end]).collect::<Vec<_>>()
        })
        .collect()
}

/// Every window of both splits, as sets of token vectors.
fn window_tokens(t: &dyn Task, split: Split, n: u64) -> Vec<Vec<u32>> {
    (0..n).map(|i| t.sample(9, split, i).tokens).collect()
}

#[test]
fn without_a_tokenizer_a_bpe_is_trained_saved_and_reproduces_the_cached_ids() {
    let dir = tempfile::tempdir().unwrap();
    let docs = documents(300, 0);
    let path = write_text(dir.path(), &docs);
    let spec = TaskSpec::parse_inline(&corpus_spec(&path, "")).unwrap();
    let t = spec.build().unwrap();
    let saved = dir.path().join("corpus.txt.cache/tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&saved).unwrap();
    assert_eq!(tok.token_to_id("<|pad|>"), Some(0));
    assert_eq!(tok.token_to_id(END_OF_TEXT), Some(1));
    assert!(tok.get_vocab_size(true) <= 300 && tok.get_vocab_size(true) > 258);
    assert_eq!(t.vocab_size(), tok.get_vocab_size(true));
    // Every window is a slice of the stream the reloaded tokenizer produces.
    let (train, eval) = (expected_stream(&tok, &docs, false), expected_stream(&tok, &docs, true));
    assert!(!eval.is_empty() && train.len() > 10 * eval.len());
    for (split, stream) in [(Split::Train, &train), (Split::Eval, &eval)] {
        for w in window_tokens(t.as_ref(), split, 50) {
            assert_eq!(w.len(), 32);
            assert!(stream.windows(32).any(|s| s == w), "{split:?} window not in the stream");
        }
    }
    let s = t.sample(9, Split::Train, 4);
    assert_eq!(s, t.sample(9, Split::Train, 4));
    assert!(s.weights[1..].iter().all(|&w| w == 1.0));
    assert_eq!(t.render(&s), tok.decode(&s.tokens, false).unwrap());
}

#[test]
fn jsonl_corpus_reads_the_named_field_with_a_given_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let docs = documents(300, 1);
    write_text(dir.path(), &docs);
    task(&corpus_spec(&dir.path().join("corpus.txt"), ""));
    let given = dir.path().join("given.json");
    std::fs::rename(dir.path().join("corpus.txt.cache/tokenizer.json"), &given).unwrap();
    let jsonl = dir.path().join("docs.jsonl");
    let lines: Vec<String> = docs.iter().map(|d| serde_json::json!({ "id": 1, "body": d }).to_string()).collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let spec = corpus_spec(&jsonl, &format!(", field = \"body\", tokenizer = {:?}", given.to_str().unwrap()));
    let t = task(&spec);
    assert!(!dir.path().join("docs.jsonl.cache/tokenizer.json").exists(), "no tokenizer is trained");
    let tok = tokenizers::Tokenizer::from_file(&given).unwrap();
    let train = expected_stream(&tok, &docs, false);
    for w in window_tokens(t.as_ref(), Split::Train, 30) {
        assert!(train.windows(32).any(|s| s == w));
    }
}

#[test]
fn the_token_cache_is_reused_on_reopen_and_invalidated_when_the_corpus_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_text(dir.path(), &documents(300, 2));
    let spec = corpus_spec(&path, "");
    let first = task(&spec);
    let cache = dir.path().join("corpus.txt.cache/tokens.bin");
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (cache_time, tok_time) = (stamp(&cache), stamp(&dir.path().join("corpus.txt.cache/tokenizer.json")));
    std::thread::sleep(std::time::Duration::from_millis(50));
    let again = task(&spec);
    assert_eq!(stamp(&cache), cache_time, "the cache is not rewritten");
    assert_eq!(stamp(&dir.path().join("corpus.txt.cache/tokenizer.json")), tok_time, "no retraining");
    assert_eq!(window_tokens(first.as_ref(), Split::Train, 20), window_tokens(again.as_ref(), Split::Train, 20));
    let before = std::fs::read(&cache).unwrap();
    let new_docs = documents(300, 3);
    write_text(dir.path(), &new_docs);
    let changed = task(&spec);
    assert_ne!(std::fs::read(&cache).unwrap(), before, "a changed corpus is retokenized");
    let tok = tokenizers::Tokenizer::from_file(dir.path().join("corpus.txt.cache/tokenizer.json")).unwrap();
    let train = expected_stream(&tok, &new_docs, false);
    assert!(window_tokens(changed.as_ref(), Split::Train, 20).iter().all(|w| train.windows(32).any(|s| s == w)));
}

#[test]
fn corpus_train_and_eval_documents_are_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut docs = documents(300, 4);
    docs.extend(docs[..40].to_vec()); // duplicates land in the same split as their originals
    let path = write_text(dir.path(), &docs);
    task(&corpus_spec(&path, ""));
    let tok = tokenizers::Tokenizer::from_file(dir.path().join("corpus.txt.cache/tokenizer.json")).unwrap();
    let split_docs = |eval: bool| -> HashSet<Vec<u32>> {
        expected_stream(&tok, &docs, eval).split(|&t| t == 1).map(<[u32]>::to_vec).filter(|d| !d.is_empty()).collect()
    };
    let (train, eval) = (split_docs(false), split_docs(true));
    assert!(eval.len() >= 5 && train.len() >= 250, "{} eval, {} train documents", eval.len(), train.len());
    assert!(train.is_disjoint(&eval));
    // The streams the task samples from are exactly those documents.
    let Kind::Corpus(spec) = TaskSpec::parse_inline(&corpus_spec(&path, "")).unwrap().kind else { panic!() };
    let opened = spec.options();
    let corpus = vestige::data::corpus::Corpus::open(&opened).unwrap();
    assert_eq!(corpus.eval, expected_stream(&tok, &docs, true));
    assert_eq!(corpus.train, expected_stream(&tok, &docs, false));
}

fn open_error(spec: &str) -> String {
    match TaskSpec::parse_inline(spec).unwrap().build() {
        Ok(_) => panic!("{spec} opened"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_jsonl_line_without_the_field_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, "{\"text\": \"a b c\"}\n\n{\"txt\": \"d e f\"}\n").unwrap();
    let msg = open_error(&corpus_spec(&path, ""));
    assert!(msg.contains(&format!("{}:3", path.display())) && msg.contains("\"text\""), "{msg}");
}

#[test]
fn an_empty_or_missing_corpus_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n\n").unwrap();
    let msg = open_error(&corpus_spec(&empty, ""));
    assert!(msg.contains("empty.txt") && msg.contains("no documents"), "{msg}");
    let missing = dir.path().join("missing.txt");
    let msg = open_error(&corpus_spec(&missing, ""));
    assert!(msg.contains("cannot read corpus") && msg.contains("missing.txt"), "{msg}");
    let small = write_text(dir.path(), &documents(3, 5));
    let msg = open_error(&corpus_spec(&small, ""));
    assert!(msg.contains("split") && msg.contains("fewer than seq_len"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// Target behaviors
// ---------------------------------------------------------------------------------------

#[test]
fn repetition_labels_are_the_string_phase_aligned_whatever_the_input() {
    let t = task("{ kind = \"repeat\", string = [5, 9, 12, 7], offset = 3, over = { kind = \"grammar\", vocab = 32, seq_len = 20 } }");
    let (a, b) = (t.sample(0, Split::Train, 0), t.sample(0, Split::Train, 1));
    assert_ne!(a.tokens, b.tokens, "two different inputs");
    let string = [5, 9, 12, 7];
    for s in [&a, &b] {
        let targets = s.targets.as_ref().unwrap();
        // Position p predicts targets[p + 1]; from position 3 on it is string[(p - 3) mod 4].
        for p in 3..19 {
            assert_eq!(targets[p + 1], string[(p - 3) % 4], "position {p}");
        }
        let scored: Vec<usize> = (0..20).filter(|&t| s.weights[t] > 0.0).collect();
        assert_eq!(scored, (4..20).collect::<Vec<_>>(), "exactly the labels of positions 3..19");
    }
    assert_eq!(a.targets.as_ref().unwrap()[4..], b.targets.as_ref().unwrap()[4..]);
    assert_eq!(task("{ kind = \"repeat\", string = [70], vocab = 32 }").vocab_size(), 71);
}

#[test]
fn skip_k_labels_are_k_tokens_further_ahead_and_the_tail_is_unscored() {
    let base = "over = { kind = \"grammar\", vocab = 48, seq_len = 24 }";
    let t = task(&format!("{{ kind = \"skip\", k = 3, {base} }}"));
    let plain = grammar(48, 24);
    let s = t.sample(2, Split::Eval, 5);
    assert_eq!(s.tokens, plain.sample(2, Split::Eval, 5).tokens, "the inputs are the base's");
    let targets = s.targets.as_ref().unwrap();
    // Position p (predicting targets[p + 1]) predicts token p + 3 + 1.
    for p in 0..20 {
        assert_eq!(targets[p + 1], s.tokens[p + 4], "position {p}");
        assert_eq!(s.weights[p + 1], 1.0);
    }
    assert_eq!(&s.weights[21..], &[0.0; 3], "targets past the end are unscored");
}

#[test]
fn skip_zero_is_plain_next_token_prediction() {
    let t = task("{ kind = \"skip\", k = 0, over = { kind = \"copy\", length = 6, vocab = 20 } }");
    let plain = task("{ kind = \"copy\", length = 6, vocab = 20 }");
    for i in 0..20 {
        let (s, p) = (t.sample(0, Split::Train, i), plain.sample(0, Split::Train, i));
        assert_eq!(s.targets.as_ref().unwrap(), &s.tokens);
        assert_eq!((&s.tokens, &s.weights), (&p.tokens, &p.weights));
        assert_eq!(batch_of(&[s], 2).targets, batch_of(&[p], 2).targets);
    }
}

#[test]
fn batch_of_turns_repeat_and_skip_labels_into_engine_targets() {
    let n_prompt = 4;
    let rep = task("{ kind = \"repeat\", string = [5, 9], offset = 2, vocab = 32, seq_len = 10 }");
    let skip = task("{ kind = \"skip\", k = 1, vocab = 32, seq_len = 12 }");
    let (r, s): (Sample, Sample) = (rep.sample(1, Split::Train, 0), skip.sample(1, Split::Train, 0));
    let batch = batch_of(&[r.clone(), s.clone()], n_prompt);
    assert_eq!(batch.seq, n_prompt + 12);
    let row = |b: usize| &batch.targets[b * batch.seq..(b + 1) * batch.seq];
    // Repeat: prompt slots and positions 0..2 unscored, then 5 9 5 9 …, then padding.
    let want: Vec<i32> = [-1; 4].into_iter().chain([-1, -1, 5, 9, 5, 9, 5, 9, 5, -1, -1, -1]).collect();
    assert_eq!(row(0), &want[..]);
    // Skip-1: position p holds token p + 2; the last two positions are unscored.
    let want: Vec<i32> =
        [-1; 4].into_iter().chain((0..12).map(|p| if p + 2 < 12 { s.tokens[p + 2] as i32 } else { -1 })).collect();
    assert_eq!(row(1), &want[..]);
}

#[test]
fn a_repeat_without_over_reads_grammar_text_and_nested_errors_name_the_key_path() {
    let rep = TaskSpec::parse_inline("{ kind = \"repeat\", string = [3], vocab = 40, seq_len = 16 }").unwrap();
    assert!(matches!(rep.kind.base(), Some(Base::Grammar(_))));
    assert_eq!(
        rep.build().unwrap().sample(0, Split::Train, 0).tokens,
        grammar(40, 16).sample(0, Split::Train, 0).tokens
    );
    let toml = "name = \"r\"\n[model]\nmax_positions = 64\n[[tasks]]\nname = \"rep\"\nkind = \"repeat\"\nstring = [5]\nover = { kind = \"grammar\", vocab = 16,\n  token_range = [2, 40] }\n[[phases]]\nname = \"p\"\nsteps = 1\nmixture = { rep = 1.0 }\n";
    let err = RunConfig::from_toml(toml, "run.toml").unwrap_err();
    assert_eq!((err.file.as_str(), err.key.as_str(), err.line), ("run.toml", "tasks[0].over.token_range", 9), "{err}");
    let toml = toml
        .replace("token_range = [2, 40]", "seq_len = 64")
        .replace("string = [5]", "k = 70")
        .replace("repeat", "skip");
    let err = RunConfig::from_toml(&toml, "run.toml").unwrap_err();
    assert_eq!(err.key, "tasks[0].k", "{err}");
}

/// The broad distribution of `spec`.
fn broad(spec: &str) -> std::sync::Arc<dyn vestige::data::Task> {
    vestige::data::spec::TaskSpec::parse_inline(spec).unwrap().build().unwrap()
}

#[test]
fn broad_mixes_grammar_text_and_families_on_their_own_alphabet_slices_in_proportion() {
    use vestige::data::Split;
    let task = broad("{ kind = \"broad\", families = 4, grammar_weight = 0.25, seq_len = 24, length = 5 }");
    assert_eq!(task.vocab_size(), 41 + 4 * 16, "raised to fit every family slice");
    let n = 4000;
    let samples: Vec<_> = (0..n).map(|i| task.sample(3, Split::Train, i)).collect();
    // Grammar documents are full length and scored everywhere but the first token.
    let text = samples.iter().filter(|s| s.prompt_len == 1 && s.tokens.len() == 24).count() as f64 / n as f64;
    assert!((text - 0.25).abs() < 0.03, "grammar share {text}");
    // Each family sample uses symbols from one 16-token slice only.
    for s in samples.iter().filter(|s| s.prompt_len > 1) {
        let symbols: Vec<u32> = s.tokens.iter().copied().filter(|&t| t >= 41).collect();
        let slice = (symbols[0] - 41) / 16;
        assert!(symbols.iter().all(|&t| (t - 41) / 16 == slice), "{:?}", s.tokens);
        assert!(s.tokens.iter().all(|&t| (t as usize) < task.vocab_size()));
    }
    assert_eq!(task.sample(3, Split::Eval, 7), task.sample(3, Split::Eval, 7));
    assert_ne!(task.sample(3, Split::Train, 7), task.sample(3, Split::Eval, 7));
}

#[test]
fn broad_rejects_bad_family_counts_and_weights_naming_the_key() {
    let err = |spec: &str| vestige::data::spec::TaskSpec::parse_inline(spec).unwrap_err();
    assert!(err("{ kind = \"broad\", families = 0 }").contains("families"));
    assert!(err("{ kind = \"broad\", grammar_weight = 1.5 }").contains("grammar_weight"));
}

#[test]
fn corpus_tasks_and_wrappers_over_them_keep_the_corpus_tokenizer_and_mixing_it_with_token_texts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_text(dir.path(), &documents(300, 0));
    let corpus = task(&corpus_spec(&path, ""));
    let skip = task(&format!("{{ kind = \"skip\", k = 2, over = {} }}", corpus_spec(&path, "")));
    let out = dir.path().join("model");
    let file = tokenizer_for(&out, &[corpus.clone(), skip]).unwrap();
    assert_eq!(file, dir.path().join("corpus.txt.cache/tokenizer.json"));
    assert!(!out.join("tokenizer.json").exists(), "a corpus tokenizer is used as is, not rebuilt");
    let copy = task("{ kind = \"copy\", length = 6, vocab = 20 }");
    match tokenizer_for(&out, &[copy, corpus]) {
        Err(e @ VocabError::Sources { .. }) => assert!(e.to_string().contains("corpus.txt.cache"), "{e}"),
        other => panic!("expected differing tokenizer sources, got {other:?}"),
    }
}

//! What checkpoints store and what resuming from them gives, in-process: a run resumed from
//! any of its checkpoints (a phase start before its first evaluation, mid-phase, a phase
//! end) writes a `metrics.csv` byte-identical to an uninterrupted run's; checkpoints taken
//! while the weights are frozen hold no weight tensor but a reference to the stored weights,
//! and a changed base model is refused; checkpoints of format 1 (the model always inside)
//! still resume, and the weights newer checkpoints refer to survive retention.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vestige::engine::model::Model;
use vestige::hf::io::read_safetensors;
use vestige::train::checkpoint::{self, find_pinned, load_model};
use vestige::train::run::{evaluate_checkpoint, resume, train};

/// `[model]` of a model trained from scratch.
const FRESH: &str = "d_model = 16\nn_layers = 1\nn_heads = 2\nmax_positions = 32";

/// Full-weight pre-training (30 steps) then a soft prompt (20 steps), `checkpoint.every`
/// steps apart; `pretrain = false` leaves only the soft prompt.
fn config(out: &Path, model: &str, every: u64, keep_last: usize, pretrain: bool) -> PathBuf {
    let first = if pretrain {
        "[[phases]]\nname = \"pretrain\"\nsteps = 30\nbatch_size = 8\nmixture = { copy = 1.0 }\n\
         eval = { every = 10, samples = 8 }\n"
    } else {
        ""
    };
    let text = format!(
        r#"name = "c"
seed = 5
out_dir = "{}"
[model]
{model}
[[tasks]]
name = "copy"
kind = "copy"
length = 5
vocab = 12
[checkpoint]
every = {every}
keep_last = {keep_last}
{first}[[phases]]
name = "prompt"
steps = 20
trainable = "soft_prompt"
soft_prompt = {{ tokens = 3 }}
mixture = {{ copy = 1.0 }}
optimizer = {{ lr = 1e-2 }}
eval = {{ log_points = 4, samples = 8 }}
"#,
        out.display()
    );
    std::fs::create_dir_all(out).unwrap();
    let path = out.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What a finished run leaves that must not depend on interruptions.
#[derive(Debug, PartialEq)]
struct Outcome {
    csv: Vec<u8>,
    prompt: Vec<u8>,
    weights: Vec<u32>,
}

fn outcome(run: &Path) -> Outcome {
    let end = find_pinned(&run.join("checkpoints"), "prompt").unwrap();
    Outcome {
        csv: std::fs::read(run.join("metrics.csv")).unwrap(),
        prompt: std::fs::read(run.join("soft_prompt.prompt.safetensors")).unwrap(),
        weights: load_model(&end).unwrap().weights.iter().map(|w| w.to_bits()).collect(),
    }
}

/// Drops the checkpoints after `step`, as if the run had stopped there.
fn interrupt_after(run: &Path, step: u64) {
    for (s, dir) in checkpoint::list(&run.join("checkpoints")) {
        if s > step {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}

#[test]
fn metrics_csv_after_a_resume_is_byte_identical_to_an_uninterrupted_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    train(&config(&whole, FRESH, 6, 100, true)).unwrap();
    let expected = outcome(&whole.join("c"));
    // Step 0 is the run's start, before the first evaluation; 30 is the end of pre-training,
    // before the soft prompt's first evaluation at the same step; 12 and 42 are mid-phase.
    for cut in [0, 12, 30, 42] {
        let out = tmp.path().join(format!("cut{cut}"));
        let run = out.join("c");
        train(&config(&out, FRESH, 6, 100, true)).unwrap();
        interrupt_after(&run, cut);
        // A row cut short by the interruption.
        let mut csv = std::fs::read(run.join("metrics.csv")).unwrap();
        csv.extend_from_slice(b"c,1,43,1");
        std::fs::write(run.join("metrics.csv"), csv).unwrap();
        resume(&run).unwrap();
        let got = outcome(&run);
        assert!(got.csv == expected.csv, "resumed from step {cut}: metrics.csv differs");
        assert_eq!(got, expected, "resumed from step {cut}");
    }
}

#[test]
fn soft_prompt_checkpoints_hold_no_weight_tensor_and_resume_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, cut) = (tmp.path().join("whole"), tmp.path().join("cut"));
    train(&config(&whole, FRESH, 6, 100, true)).unwrap();
    let run = whole.join("c");
    let ckpts = run.join("checkpoints");
    let pretrained = find_pinned(&ckpts, "pretrain").unwrap();
    let n_params = load_model(&pretrained).unwrap().n_params();
    let mut frozen = 0;
    for (step, dir) in checkpoint::list(&ckpts).into_iter().filter(|(s, _)| *s > 30) {
        assert!(!dir.join("model").exists(), "step {step} holds a model");
        for (name, t) in read_safetensors(&dir.join("trainer_state.safetensors")).unwrap() {
            assert!(["soft_prompt", "opt.m", "opt.v"].contains(&name.as_str()), "step {step} holds {name}");
            assert_eq!(t.data.len(), 3 * 16, "step {step}: {name} is not prompt-sized");
        }
        let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
        assert!(manifest.contains("\"format\": 2") && manifest.contains("step-00000030/model"), "{manifest}");
        assert_eq!(checkpoint::weights_of(&dir).unwrap(), checkpoint::weights_of(&pretrained).unwrap());
        frozen += 1;
    }
    assert_eq!(frozen, 4, "steps 36, 42, 48 and the phase end");
    assert!(n_params > 1000);

    train(&config(&cut, FRESH, 6, 100, true)).unwrap();
    interrupt_after(&cut.join("c"), 36);
    resume(&cut.join("c")).unwrap();
    assert_eq!(outcome(&cut.join("c")), outcome(&run));
}

/// Saves a copy of `from`'s model into `to` and returns `to`.
fn copy_model(from: &Path, to: &Path) -> PathBuf {
    load_model(from).unwrap().save(to, None).unwrap();
    to.to_path_buf()
}

#[test]
fn a_run_on_a_loaded_model_refers_to_it_and_refuses_it_once_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    train(&config(&pre, FRESH, 0, 1, true)).unwrap();
    let base = copy_model(&find_pinned(&pre.join("c/checkpoints"), "pretrain").unwrap(), &tmp.path().join("base"));
    let load = format!("load = \"{}\"", base.display());
    let (whole, cut) = (tmp.path().join("whole"), tmp.path().join("cut"));
    train(&config(&whole, &load, 4, 100, false)).unwrap();
    for (step, dir) in checkpoint::list(&whole.join("c/checkpoints")) {
        assert!(!dir.join("model").exists(), "step {step} copied the loaded model");
    }
    train(&config(&cut, &load, 4, 100, false)).unwrap();
    let run = cut.join("c");
    interrupt_after(&run, 8);
    resume(&run).unwrap();
    assert_eq!(outcome(&run), outcome(&whole.join("c")));
    evaluate_checkpoint(&run, Some(8), 8).expect("an unchanged base evaluates");

    let mut changed = Model::load(&base).unwrap().model;
    changed.weights[0] += 1.0;
    changed.save(&base, None).unwrap();
    interrupt_after(&run, 8);
    let file = base.join("model.safetensors");
    let found = hex(&Sha256::digest(std::fs::read(&file).unwrap()));
    for err in [resume(&run).unwrap_err().to_string(), evaluate_checkpoint(&run, None, 8).unwrap_err().to_string()] {
        let expected = checkpoint::weights_of(&run.join("checkpoints/step-00000008")).unwrap().sha256;
        assert!(err.contains(&file.canonicalize().unwrap().display().to_string()), "{err}");
        assert!(err.contains(&expected["model.safetensors"]) && err.contains(&found), "{err}");
        assert!(err.contains("put the original weights back"), "{err}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of every file under `dir` but the manifest, by relative path: a format-1
/// manifest.
fn sums(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.ends_with("manifest.json") {
                let rel = path.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                out.insert(rel, hex(&Sha256::digest(std::fs::read(&path).unwrap())));
            }
        }
    }
    out
}

#[test]
fn a_format_1_checkpoint_resumes_and_the_weights_newer_checkpoints_refer_to_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, old) = (tmp.path().join("whole"), tmp.path().join("old"));
    train(&config(&whole, FRESH, 4, 1, true)).unwrap();
    train(&config(&old, FRESH, 4, 1, true)).unwrap();
    let run = old.join("c");
    let ckpts = run.join("checkpoints");
    interrupt_after(&run, 30);
    // Step 30 as the build before references wrote it (the model inside, a bare file map),
    // and unpinned, as one taken within a soft-prompt phase would be.
    let step30 = checkpoint::step_dir(&ckpts, 30);
    std::fs::remove_file(step30.join("PINNED")).unwrap();
    std::fs::write(step30.join("manifest.json"), serde_json::to_string(&sums(&step30)).unwrap()).unwrap();
    resume(&run).unwrap();
    assert_eq!(outcome(&run), outcome(&whole.join("c")));
    let steps: Vec<u64> = checkpoint::list(&ckpts).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, [0, 30, 48, 50], "retention keeps one unpinned checkpoint and the weights it refers to");

    let manifest = checkpoint::step_dir(&ckpts, 48).join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("\"format\": 2", "\"format\": 3");
    std::fs::write(&manifest, text).unwrap();
    interrupt_after(&run, 48);
    let err = resume(&run).unwrap_err().to_string();
    assert!(err.contains("manifest format 3") && err.contains("formats 1 and 2"), "{err}");
}

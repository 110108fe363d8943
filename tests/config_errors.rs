//! A bad run config fails before any compute, and the message names the file, the key path
//! and its line, and says what is allowed.

use std::process::Command;
use vestige::train::config::RunConfig;

const GOOD: &str = r#"name = "x"

[[tasks]]
name = "copy"
kind = "copy"

[[phases]]
name = "a"
steps = 10
mixture = { copy = 1.0 }

[[phases]]
name = "b"
steps = 10
mixture = { copy = 1.0 }
[phases.optimizer]
lr = 1e-3
"#;

fn err(text: &str) -> String {
    RunConfig::from_toml(text, "exp.toml").unwrap_err().to_string()
}

#[test]
fn the_reference_config_is_valid() {
    let cfg = RunConfig::from_toml(GOOD, "exp.toml").unwrap();
    assert_eq!(cfg.phases.len(), 2);
}

#[test]
fn unknown_keys_are_rejected_with_file_line_and_the_allowed_keys() {
    let e = err(&GOOD.replace(
        "steps = 10\nmixture = { copy = 1.0 }\n\n[[phases]]",
        "steps = 10\nstpes = 3\nmixture = { copy = 1.0 }\n\n[[phases]]",
    ));
    assert!(e.starts_with("exp.toml:10:"), "{e}");
    assert!(e.contains("stpes") && e.contains("steps"), "{e}");
    let e = err(&GOOD.replace("lr = 1e-3", "lr = 1e-3\nbeta1 = 0.9"));
    assert!(e.starts_with("exp.toml:18:") && e.contains("beta1") && e.contains("betas"), "{e}");
}

#[test]
fn a_key_of_another_task_kind_is_refused_with_file_line_key_and_the_kinds_keys() {
    let e = err(&GOOD.replace("kind = \"copy\"", "kind = \"copy\"\nmax_moves = 9"));
    assert_eq!(
        e,
        "exp.toml:6: tasks[0].max_moves: not a key of kind \"copy\" (keys: name, kind, length, vocab, marker)"
    );
    let e = err(&GOOD.replace("kind = \"copy\"", "kind = \"skip\"\nover = { kind = \"copy\",\n  max_moves = 9 }"));
    assert!(e.starts_with("exp.toml:7: tasks[0].over.max_moves: not a key of kind \"copy\""), "{e}");
    let e = err(&GOOD.replace("kind = \"copy\"", "kind = \"skip\"\nk = 1\nvocab = 9\nover = { kind = \"copy\" }"));
    assert!(e.starts_with("exp.toml:7: tasks[0].vocab: not a key of kind \"skip\" (keys: name, kind, k, over)"), "{e}");
    let e = err(&GOOD.replace("kind = \"copy\"", "kind = \"copy\"\nlength = \"long\""));
    assert!(e.starts_with("exp.toml:6: tasks[0].length: invalid type: string \"long\""), "{e}");
}

#[test]
fn out_of_range_values_name_the_key_path_and_line() {
    let e = err(&GOOD.replace("lr = 1e-3", "lr = -1.0"));
    assert_eq!(e, "exp.toml:17: phases[1].optimizer.lr: must be a positive number");
    let e = err(&GOOD.replace("name = \"b\"\nsteps = 10", "name = \"b\"\nsteps = 10\ndropout_attn = 1.5"));
    assert!(e.starts_with("exp.toml:15: phases[1].dropout_attn:") && e.contains("[0, 1)"), "{e}");
}

#[test]
fn references_to_unknown_tasks_and_phases_list_what_exists() {
    let e = err(&GOOD.replacen("mixture = { copy = 1.0 }", "mixture = { cpy = 1.0 }", 1));
    assert!(e.starts_with("exp.toml:10: phases[0].mixture.cpy:") && e.contains("\"copy\""), "{e}");
    let e = err(&GOOD.replace("name = \"a\"\nsteps = 10", "name = \"a\"\nsteps = 10\nl2_to = \"b\"\nl2_coef = 0.1"));
    assert!(e.contains("phases[0].l2_to") && e.contains("earlier phase"), "{e}");
}

#[test]
fn wrong_types_and_syntax_errors_name_the_line() {
    let e = err(&GOOD.replace(
        "steps = 10\nmixture = { copy = 1.0 }\n\n[[phases]]",
        "steps = \"ten\"\nmixture = { copy = 1.0 }\n\n[[phases]]",
    ));
    assert!(e.starts_with("exp.toml:9:"), "{e}");
    let e = err("name = \"x\"\n[[tasks]\n");
    assert!(e.starts_with("exp.toml:2:"), "{e}");
}

#[test]
fn phase_length_in_tokens_becomes_steps_and_exactly_one_length_is_required() {
    // copy: length 12 → 25 tokens per sample; 16 samples per step → 400 tokens per step.
    let cfg = RunConfig::from_toml(&GOOD.replacen("steps = 10", "tokens = 4001", 1), "exp.toml").unwrap();
    assert_eq!(cfg.phases[0].steps, 11);
    let e = err(&GOOD.replacen("steps = 10", "steps = 10\ntokens = 5", 1));
    assert!(e.contains("phases[0].tokens") && e.contains("not both"), "{e}");
    let e = err(&GOOD.replacen("steps = 10\n", "", 1));
    assert!(e.contains("phases[0].steps") && e.contains("tokens = N"), "{e}");
}

#[test]
fn the_cli_exits_2_on_a_bad_config_before_creating_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.toml");
    let text =
        GOOD.replace("name = \"x\"", &format!("name = \"x\"\nout_dir = \"{}\"", tmp.path().join("runs").display()));
    std::fs::write(&path, text.replace("lr = 1e-3", "lr = 0.0")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vestige")).arg("train").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:18: phases[1].optimizer.lr"), "{stderr}");
    assert!(!tmp.path().join("runs").exists(), "nothing is written for an invalid config");
}

#[test]
fn tasks_longer_than_the_model_context_are_rejected() {
    let text = GOOD.replace("kind = \"copy\"", "kind = \"pathfinding\"");
    let e = err(&text);
    assert!(
        e.starts_with("exp.toml:5: tasks[0].kind:") && e.contains("139") && e.contains("max_positions = 128"),
        "{e}"
    );
}

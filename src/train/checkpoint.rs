//! Checkpoints: an HF model directory plus `trainer_state.safetensors` (optimizer moments,
//! trainable extras, counters and the config hash) and a `manifest.json` of SHA-256 sums.
//!
//! A checkpoint is written into a temporary directory, every file fsynced, then renamed
//! into place (`checkpoints/step-<N>`), so a crash at any moment leaves either the old set
//! or the new one. Loading verifies every sum and refuses a different config hash.

use crate::engine::model::Model;
use crate::hf::io::{read_safetensors, write_atomic, write_safetensors, HfTensor, TensorMap};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Counters and buffers that, with the model, determine the rest of the run exactly.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainerState {
    pub config_hash: String,
    /// Index of the phase in progress (== number of phases when the run is done).
    pub phase: usize,
    /// Steps completed in that phase.
    pub step_in_phase: u64,
    pub global_step: u64,
    pub tokens: u64,
    /// Optimizer step count.
    pub opt_step: u64,
    /// Named f32 buffers: optimizer moments, LoRA, soft prompt, regulariser anchors.
    pub buffers: BTreeMap<String, Vec<f32>>,
}

/// Why a checkpoint could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: checkpoint was written by a run with config hash {found}, but this config hashes to {expected}; refusing to resume a different experiment")]
    ConfigChanged { path: PathBuf, expected: String, found: String },
    #[error(transparent)]
    Hf(#[from] crate::hf::io::HfError),
    #[error(transparent)]
    Load(#[from] crate::engine::hf_model::LoadError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

const STATE: &str = "trainer_state.safetensors";
const MANIFEST: &str = "manifest.json";
const PINNED: &str = "PINNED";

/// The directory of the checkpoint at `step`.
pub fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// Writes a checkpoint atomically, with a copy of `tokenizer` (if given) in its model dir;
/// `pin` (e.g. "init" or a phase name) exempts it from retention and makes it findable by
/// [`find_pinned`].
pub fn save(
    root: &Path,
    model: &Model,
    tokenizer: Option<&Path>,
    state: &TrainerState,
    pin: Option<&str>,
) -> Result<PathBuf, CheckpointError> {
    fs::create_dir_all(root).map_err(io_err(root))?;
    let final_dir = step_dir(root, state.global_step);
    let tmp = root.join(format!(".tmp-step-{:08}-{}", state.global_step, std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    model.save(&tmp.join("model"), tokenizer)?;
    write_safetensors(&tmp.join(STATE), &state_tensors(state), Some(&state_metadata(state)))?;
    if let Some(name) = pin {
        write_atomic(&tmp.join(PINNED), name.as_bytes())?;
    }
    let manifest = serde_json::to_vec_pretty(&manifest_of(&tmp)?).expect("a map of strings serialises");
    write_atomic(&tmp.join(MANIFEST), &manifest)?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(io_err(&final_dir))?;
    }
    fs::rename(&tmp, &final_dir).map_err(io_err(&final_dir))?;
    fs::File::open(root).and_then(|d| d.sync_all()).map_err(io_err(root))?;
    Ok(final_dir)
}

/// SHA-256 of every file under `dir` (relative paths), except the manifest itself.
fn manifest_of(dir: &Path) -> Result<BTreeMap<String, String>, CheckpointError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io_err(&d))? {
            let path = entry.map_err(io_err(&d))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name() != Some(MANIFEST.as_ref()) {
                let bytes = fs::read(&path).map_err(io_err(&path))?;
                let rel = path.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
                out.insert(rel, hex(&Sha256::digest(&bytes)));
            }
        }
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn state_tensors(state: &TrainerState) -> TensorMap {
    state.buffers.iter().map(|(k, v)| (k.clone(), HfTensor { shape: vec![v.len()], data: v.clone() })).collect()
}

fn state_metadata(s: &TrainerState) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("config_hash".into(), s.config_hash.clone()),
        ("phase".into(), s.phase.to_string()),
        ("step_in_phase".into(), s.step_in_phase.to_string()),
        ("global_step".into(), s.global_step.to_string()),
        ("tokens".into(), s.tokens.to_string()),
        ("opt_step".into(), s.opt_step.to_string()),
    ])
}

/// Complete checkpoints (those with a manifest), oldest first.
pub fn list(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join(MANIFEST).is_file().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The pinned checkpoint named `name` (e.g. "init" or a phase name), if any.
pub fn find_pinned(root: &Path, name: &str) -> Option<PathBuf> {
    list(root).into_iter().map(|(_, p)| p).find(|p| fs::read_to_string(p.join(PINNED)).is_ok_and(|n| n == name))
}

/// Deletes unpinned checkpoints beyond the newest `keep_last`, and abandoned temporaries.
pub fn prune(root: &Path, keep_last: usize) -> Result<(), CheckpointError> {
    let unpinned: Vec<PathBuf> = list(root).into_iter().map(|(_, p)| p).filter(|p| !p.join(PINNED).exists()).collect();
    for old in &unpinned[..unpinned.len().saturating_sub(keep_last)] {
        fs::remove_dir_all(old).map_err(io_err(old))?;
    }
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp-step-") {
            fs::remove_dir_all(e.path()).map_err(io_err(&e.path()))?;
        }
    }
    Ok(())
}

/// Loads and verifies a checkpoint written for the config hashing to `expected_hash`, or
/// to `legacy_hash` by an older build; the state returned carries `expected_hash`.
pub fn load(dir: &Path, expected_hash: &str, legacy_hash: &str) -> Result<(Model, TrainerState), CheckpointError> {
    verify(dir)?;
    let state_path = dir.join(STATE);
    let meta = crate::hf::io::read_safetensors_metadata(&state_path)?;
    let field = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| CheckpointError::Invalid { path: state_path.clone(), message: format!("missing `{k}`") })
    };
    let num = |k: &str| -> Result<u64, CheckpointError> {
        field(k)?.parse().map_err(|_| CheckpointError::Invalid {
            path: state_path.clone(),
            message: format!("`{k}` is not a number"),
        })
    };
    let found = field("config_hash")?;
    if found != expected_hash && found != legacy_hash {
        return Err(CheckpointError::ConfigChanged { path: dir.to_path_buf(), expected: expected_hash.into(), found });
    }
    let buffers = read_safetensors(&state_path)?.into_iter().map(|(k, t)| (k, t.data)).collect();
    let state = TrainerState {
        config_hash: expected_hash.into(),
        phase: num("phase")? as usize,
        step_in_phase: num("step_in_phase")?,
        global_step: num("global_step")?,
        tokens: num("tokens")?,
        opt_step: num("opt_step")?,
        buffers,
    };
    let model = Model::load(&dir.join("model"))?.model;
    Ok((model, state))
}

/// Checks every file against the manifest (and that no listed file is missing).
pub fn verify(dir: &Path) -> Result<(), CheckpointError> {
    let manifest_path = dir.join(MANIFEST);
    let text = fs::read_to_string(&manifest_path).map_err(io_err(&manifest_path))?;
    let want: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
        path: manifest_path.clone(),
        message: format!("unreadable manifest: {e}"),
    })?;
    let have = manifest_of(dir)?;
    for (file, sum) in &want {
        match have.get(file) {
            None => {
                return Err(CheckpointError::Invalid {
                    path: dir.join(file),
                    message: "listed in the manifest but missing".into(),
                })
            }
            Some(s) if s != sum => {
                return Err(CheckpointError::Invalid {
                    path: dir.join(file),
                    message: "contents differ from the manifest (corrupt or truncated)".into(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

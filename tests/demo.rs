//! The embedded end-to-end job: the engine learns a copy task from scratch (checked by
//! greedy generation on held-out inputs), a soft prompt lowers a frozen model's loss, and
//! the saved model reloads with identical weights and carries a tokenizer for its tasks.

use vestige::commands::demo;
use vestige::engine::model::Model;

#[test]
fn demo_learns_copy_trains_a_soft_prompt_and_saves_a_loadable_model_with_its_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let s = demo::run(tmp.path(), 400, 30).unwrap();
    assert!(s.copy_exact_match >= 0.9, "copy exact match {}", s.copy_exact_match);
    assert!(
        s.reverse_loss_with_prompt < s.reverse_loss_without_prompt,
        "soft prompt did not lower the loss: {} -> {}",
        s.reverse_loss_without_prompt,
        s.reverse_loss_with_prompt
    );
    let reloaded = Model::load(&s.model_dir).unwrap().model;
    assert_eq!(reloaded.n_params(), s.parameters);
    assert!(tmp.path().join("summary.json").is_file());
    let tokenizer = tokenizers::Tokenizer::from_file(s.model_dir.join("tokenizer.json")).unwrap();
    assert_eq!(tokenizer.encode_fast("<pad> | 63", false).unwrap().get_ids(), [0, 1, 63]);
}

//! The studies, one folder each: its typed spec and how it expands into phases, its
//! analysis and its report. A study implements [`crate::lab::study::Study`]; adding one is a
//! folder here and a line in [`REGISTRY`]. Studies never import each other.

pub mod backdoor;
pub mod conditioning;
pub mod decay;
pub mod distance;
pub mod elicit;
pub mod remove;

use super::study::Parse;

/// `template = "..."` → the study's parser.
pub const REGISTRY: [(&str, Parse); 6] = [
    ("decay", decay::parse),
    ("distance", distance::parse),
    ("backdoor", backdoor::parse),
    ("elicit", elicit::parse),
    ("remove", remove::parse),
    ("conditioning", conditioning::parse),
];

/// The parser of template `name`, or the known names.
pub fn parser(name: &str) -> Result<Parse, String> {
    REGISTRY.iter().find(|(n, _)| *n == name).map(|(_, p)| *p).ok_or_else(|| {
        let names: Vec<&str> = REGISTRY.iter().map(|(n, _)| *n).collect();
        format!("{name:?} is not one of {}", names.join(", "))
    })
}

//! The 1000 ImageNet-1k class names, in class-index order, bundled with the crate
//! (`assets/imagenet/labels.txt`, from timm's `ImageNetInfo('imagenet-1k').label_descriptions()`,
//! written by `scripts/ref/gen_classify_fixture.py`).

use std::sync::LazyLock;

/// The label file: one class per line, WordNet lemmas separated by ", ".
pub const LABELS_TXT: &str = include_str!("../assets/imagenet/labels.txt");

/// Number of ImageNet-1k classes.
pub const NUM_CLASSES: usize = 1000;

static LABELS: LazyLock<Vec<&'static str>> = LazyLock::new(|| LABELS_TXT.lines().collect());

/// Every label, index 0 (`tench, Tinca tinca`) first.
pub fn labels() -> &'static [&'static str] {
    &LABELS
}

/// The full label of a class (`great white shark, white shark, man-eater, ...`).
pub fn label(index: usize) -> Option<&'static str> {
    LABELS.get(index).copied()
}

/// The first name of a class's label (`great white shark`).
pub fn short_label(index: usize) -> Option<&'static str> {
    label(index).map(|l| l.split(", ").next().unwrap_or(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousand_labels_in_timm_order() {
        assert_eq!(labels().len(), NUM_CLASSES);
        assert!(labels().iter().all(|l| !l.trim().is_empty()));
        assert_eq!(LABELS_TXT.lines().count(), NUM_CLASSES);
        assert!(LABELS_TXT.ends_with('\n') && !LABELS_TXT.contains('\r'));
        assert_eq!(label(0), Some("tench, Tinca tinca"));
        assert_eq!(short_label(2), Some("great white shark"));
        assert_eq!(short_label(207), Some("golden retriever"));
        assert_eq!(short_label(281), Some("tabby"));
        assert_eq!(
            label(999),
            Some("toilet tissue, toilet paper, bathroom tissue")
        );
        assert_eq!(label(1000), None);
    }
}

//! "Did you mean": the closest of a few names to a misspelt one, for flags and config keys.

/// The candidate closest to `word`, if close enough to be what was meant (clap's own
/// measure and threshold).
pub(super) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro(word, c), c))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

//! "Did you mean ...?" for misspelt property names and keywords.
//!
//! Kafka silently ignores unknown properties, which turns a typo such as
//! `sasl.mechansim` into a confusing authentication failure much later. We
//! reject unknown names instead, and a rejection is only helpful if it points
//! at the name the user meant.
//!
//! The measure is the optimal string alignment distance (Levenshtein plus
//! adjacent transpositions counted as one edit), because swapped letters are
//! the most common typo and plain Levenshtein would charge two for them.

/// The candidate closest to `word`, if it is close enough to be a likely typo.
///
/// Compares case-insensitively by optimal string alignment distance and
/// accepts a candidate only when the distance is at most
/// `max(2, word length / 3)` (lengths in characters). On a tie the earliest
/// candidate wins, so callers control preference by order. Returns `None` for
/// no candidates or none close enough.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word: Vec<char> = word.chars().flat_map(char::to_lowercase).collect();
    let limit = (word.len() / 3).max(2);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let lowered: Vec<char> = candidate.chars().flat_map(char::to_lowercase).collect();
        // The distance is at least the difference in length; skip the work.
        if word.len().abs_diff(lowered.len()) > limit {
            continue;
        }
        let distance = osa_distance(&word, &lowered);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and
/// transpositions of adjacent characters each cost one (no substring is edited twice).
fn osa_distance(a: &[char], b: &[char]) -> usize {
    // Three rolling rows: the transposition step looks two rows back.
    let width = b.len() + 1;
    let mut before: Vec<usize> = vec![0; width];
    let mut previous: Vec<usize> = (0..width).collect();
    let mut current: Vec<usize> = vec![0; width];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            current[j] = d;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROPERTIES: [&str; 5] = [
        "bootstrap.servers",
        "sasl.mechanism",
        "sasl.jaas.config",
        "security.protocol",
        "group.id",
    ];

    fn distance(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        osa_distance(&a, &b)
    }

    #[test]
    fn transposition_counts_as_one_edit() {
        assert_eq!(distance("sasl.mechansim", "sasl.mechanism"), 1);
        assert_eq!(
            closest("sasl.mechansim", PROPERTIES),
            Some("sasl.mechanism")
        );
    }

    #[test]
    fn missing_letter_is_found() {
        assert_eq!(
            closest("bootstrap.server", PROPERTIES),
            Some("bootstrap.servers")
        );
        assert_eq!(closest("grop.id", PROPERTIES), Some("group.id"));
    }

    #[test]
    fn underscore_instead_of_dot_is_found() {
        assert_eq!(
            closest("security_protocol", PROPERTIES),
            Some("security.protocol")
        );
    }

    #[test]
    fn comparison_ignores_case() {
        assert_eq!(
            closest("SASL.JAAS.CONFIG", PROPERTIES),
            Some("sasl.jaas.config")
        );
    }

    #[test]
    fn nothing_close_returns_none() {
        assert_eq!(closest("fetch.max.bytes", PROPERTIES), None);
        assert_eq!(closest("xyz", PROPERTIES), None);
    }

    #[test]
    fn empty_candidates_return_none() {
        assert_eq!(closest("group.id", []), None);
    }

    #[test]
    fn limit_grows_with_word_length() {
        // 3 edits on an 11-character word: over max(2, 11/3 = 3)? No, equal: accepted.
        assert_eq!(closest("abcdefghijk", ["abcdefgxyzk"]), Some("abcdefgxyzk"));
        // 3 edits on a 6-character word: over max(2, 2).
        assert_eq!(closest("abcdef", ["abcxyz"]), None);
    }

    #[test]
    fn ties_go_to_the_first_candidate() {
        assert_eq!(closest("cat", ["bat", "hat"]), Some("bat"));
        assert_eq!(closest("cat", ["hat", "bat"]), Some("hat"));
    }

    #[test]
    fn distance_basics() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        // OSA, not unrestricted Damerau: "ca" -> "abc" costs 3.
        assert_eq!(distance("ca", "abc"), 3);
    }
}

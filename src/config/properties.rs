//! Java `.properties` files, read the way `java.util.Properties.load` reads them.
//!
//! Users hand us the same file they give `kafka-console-consumer
//! --consumer.config` or a Java client, so it has to mean exactly what it means
//! to Java: a password that ends in a space, a `\=` in a key or a value split
//! over two lines with a trailing backslash must come out the same, or the
//! broker rejects credentials that work everywhere else.
//!
//! The rules (from the `Properties.load` documentation):
//!
//! - lines end at `\n`, `\r\n` or a lone `\r`;
//! - leading space, tab and form feed of a line are ignored; a line whose
//!   first other character is `#` or `!` is a comment; blank lines are skipped;
//! - a line ending in an odd number of backslashes continues on the next line,
//!   whose leading whitespace is dropped (a comment line never continues);
//! - the key ends at the first unescaped `=`, `:` or whitespace; then come
//!   optional whitespace, at most one `=` or `:`, optional whitespace, and the
//!   rest of the line is the value, trailing whitespace included;
//! - `\t`, `\n`, `\r`, `\f` and `\uXXXX` are escapes, and a backslash before
//!   any other character stands for that character (`\=`, `\:`, `\ `, `\\`).
//!
//! Values may hold secrets (`sasl.jaas.config`, `ssl.key.password`), so errors
//! name the line and the key, never the text of a value.

/// One `key = value` pair of a properties file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key, escapes resolved.
    pub key: String,
    /// The value, escapes resolved; empty when the line has a key only.
    pub value: String,
    /// The 1-based line where the entry starts (the first line of a continued entry).
    pub line: usize,
}

/// Parses the text of a properties file into its entries, in file order.
///
/// Duplicate keys are all returned: Java lets the later one win, and that is
/// left to the caller, which may also want to warn about it. The only error is
/// a malformed `\uXXXX` escape (Java refuses the whole file for it too); the
/// message names the line and never contains a value.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let lines = natural_lines(text);
    let mut entries = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let first = skip_blanks(lines[i]);
        let start = i + 1;
        i += 1;
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = first.to_string();
        while ends_in_odd_backslashes(&logical) {
            // The continuation backslash is not part of the line.
            logical.pop();
            let Some(next) = lines.get(i) else {
                // Java drops a trailing backslash at the end of the file.
                break;
            };
            i += 1;
            let next = skip_blanks(next);
            if next.is_empty() {
                // An empty continuation line ends the logical line (Java does the same).
                break;
            }
            logical.push_str(next);
        }
        if logical.is_empty() {
            continue;
        }
        entries.push(split_entry(&logical, start)?);
    }
    Ok(entries)
}

/// Splits text into lines at `\n`, `\r\n` and lone `\r`, as Java's line reader does.
fn natural_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < bytes.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// Whitespace as `Properties.load` defines it; other Unicode spaces are content.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

fn skip_blanks(line: &str) -> &str {
    line.trim_start_matches(is_blank)
}

fn ends_in_odd_backslashes(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Splits one logical line (continuations joined, escapes still raw) into an entry.
fn split_entry(logical: &str, line: usize) -> Result<Entry, String> {
    let mut key_end = logical.len();
    let mut value_start = logical.len();
    let mut has_separator = false;
    let mut escaped = false;
    for (at, c) in logical.char_indices() {
        if !escaped && (c == '=' || c == ':') {
            key_end = at;
            value_start = at + 1;
            has_separator = true;
            break;
        }
        if !escaped && is_blank(c) {
            key_end = at;
            value_start = at + 1;
            break;
        }
        escaped = c == '\\' && !escaped;
    }
    // After the key: whitespace, at most one `=` or `:` (unless the key already
    // ended at one), whitespace.
    let rest = &logical[value_start..];
    let mut skipped = 0;
    for (at, c) in rest.char_indices() {
        if is_blank(c) {
            skipped = at + c.len_utf8();
        } else if !has_separator && (c == '=' || c == ':') {
            has_separator = true;
            skipped = at + 1;
        } else {
            break;
        }
    }
    let raw_value = &rest[skipped..];
    let key = unescape(&logical[..key_end])
        .map_err(|problem| format!("line {line}: {problem} in a key; fix or remove the escape"))?;
    let value = unescape(raw_value).map_err(|problem| {
        format!("line {line}: {problem} in the value of '{key}'; fix or remove the escape")
    })?;
    Ok(Entry { key, value, line })
}

/// Resolves the escapes of a key or a value.
///
/// The error describes the problem without quoting the text, which may be a secret.
fn unescape(raw: &str) -> Result<String, String> {
    const MALFORMED: &str = "malformed \\uXXXX escape (\\u must be followed by four hex digits)";
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    // A high surrogate waiting for its low half: Java strings are UTF-16, so a
    // character outside the BMP is written as two `\u` escapes.
    let mut pending_high: Option<u32> = None;
    while let Some(c) = chars.next() {
        if c != '\\' {
            if pending_high.is_some() {
                return Err(unpaired_surrogate());
            }
            out.push(c);
            continue;
        }
        // A lone trailing backslash cannot survive line joining; dropping it is
        // what Java's reader would have done.
        let Some(escaped) = chars.next() else { break };
        if escaped == 'u' {
            // Four hex digits: one UTF-16 code unit, at most 0xFFFF.
            let mut unit: u32 = 0;
            for _ in 0..4 {
                let digit = chars
                    .next()
                    .and_then(|d| d.to_digit(16))
                    .ok_or_else(|| MALFORMED.to_string())?;
                unit = unit * 16 + digit;
            }
            match (pending_high.take(), unit) {
                (None, 0xD800..=0xDBFF) => pending_high = Some(unit),
                (Some(high), 0xDC00..=0xDFFF) => {
                    let code = 0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00);
                    out.push(char::from_u32(code).ok_or_else(unpaired_surrogate)?);
                }
                (Some(_), _) | (None, 0xDC00..=0xDFFF) => return Err(unpaired_surrogate()),
                (None, _) => {
                    out.push(char::from_u32(unit).ok_or_else(unpaired_surrogate)?);
                }
            }
            continue;
        }
        if pending_high.is_some() {
            return Err(unpaired_surrogate());
        }
        out.push(match escaped {
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            'f' => '\x0c',
            other => other,
        });
    }
    if pending_high.is_some() {
        return Err(unpaired_surrogate());
    }
    Ok(out)
}

fn unpaired_surrogate() -> String {
    "\\uXXXX escape is half of a UTF-16 surrogate pair without the other half".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    fn one(text: &str) -> (String, String) {
        let mut all = pairs(text);
        assert_eq!(all.len(), 1, "expected one entry in {text:?}: {all:?}");
        all.remove(0)
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn hash_and_bang_lines_are_comments() {
        let text = "# a comment\n  ! another = comment\n\t#indented: too\na=1\n";
        assert_eq!(pairs(text), vec![kv("a", "1")]);
    }

    #[test]
    fn comment_line_ending_in_backslash_does_not_continue() {
        assert_eq!(pairs("# comment \\\na=1\n"), vec![kv("a", "1")]);
    }

    #[test]
    fn blank_lines_are_skipped() {
        assert_eq!(pairs("\n   \n\t\x0c\na=1\n\n"), vec![kv("a", "1")]);
    }

    #[test]
    fn leading_whitespace_is_ignored() {
        assert_eq!(one(" \t\x0ckey=value"), kv("key", "value"));
    }

    #[test]
    fn key_ends_at_equals_colon_or_whitespace() {
        assert_eq!(one("a=1"), kv("a", "1"));
        assert_eq!(one("a:1"), kv("a", "1"));
        assert_eq!(one("a 1"), kv("a", "1"));
        assert_eq!(one("a\t1"), kv("a", "1"));
    }

    #[test]
    fn one_separator_with_whitespace_around_it() {
        assert_eq!(one("a   =   1"), kv("a", "1"));
        assert_eq!(one("a : 1"), kv("a", "1"));
        // Only one separator is eaten: the second `=` belongs to the value.
        assert_eq!(one("a = = 1"), kv("a", "= 1"));
        assert_eq!(one("a==1"), kv("a", "=1"));
        assert_eq!(one("a 1=2"), kv("a", "1=2"));
    }

    #[test]
    fn trailing_whitespace_of_value_is_kept() {
        assert_eq!(one("password=secret  \t"), kv("password", "secret  \t"));
    }

    #[test]
    fn key_without_value_gives_empty_value() {
        assert_eq!(one("lonely"), kv("lonely", ""));
        assert_eq!(one("lonely="), kv("lonely", ""));
        assert_eq!(one("lonely   :   "), kv("lonely", ""));
    }

    #[test]
    fn backslash_at_end_continues_on_next_line_without_its_indent() {
        assert_eq!(
            one("fruits = apple, \\\n         banana, \\\n\tpear\n"),
            kv("fruits", "apple, banana, pear")
        );
    }

    #[test]
    fn even_number_of_trailing_backslashes_does_not_continue() {
        assert_eq!(pairs("a=x\\\\\nb=2"), vec![kv("a", "x\\"), kv("b", "2")]);
        assert_eq!(one("a=x\\\\\\\n y"), kv("a", "x\\y"));
    }

    #[test]
    fn empty_continuation_line_ends_the_entry() {
        assert_eq!(pairs("a=1\\\n\nb=2"), vec![kv("a", "1"), kv("b", "2")]);
    }

    #[test]
    fn trailing_backslash_at_end_of_file_is_dropped() {
        assert_eq!(one("a=1\\"), kv("a", "1"));
    }

    #[test]
    fn continued_line_starting_with_hash_is_not_a_comment() {
        assert_eq!(one("a=1\\\n#2"), kv("a", "1#2"));
    }

    #[test]
    fn escapes_are_resolved() {
        assert_eq!(one("k=\\t\\n\\r\\f"), kv("k", "\t\n\r\x0c"));
        assert_eq!(one("k=\\u0041\\u00e9\\u20AC"), kv("k", "Aé€"));
        assert_eq!(one("k=\\q\\\\"), kv("k", "q\\"));
    }

    #[test]
    fn escaped_separators_belong_to_the_key() {
        assert_eq!(one("a\\=b\\:c\\ d=1"), kv("a=b:c d", "1"));
        assert_eq!(one("k=\\ leading space"), kv("k", " leading space"));
    }

    #[test]
    fn surrogate_pair_escapes_make_one_character() {
        assert_eq!(one("k=\\uD83D\\uDE00"), kv("k", "😀"));
        assert!(parse("k=\\uD83D").is_err());
        assert!(parse("k=\\uDE00x").is_err());
    }

    #[test]
    fn malformed_unicode_escape_is_an_error_naming_the_line() {
        let err = parse("a=1\n\nsecret.key=ab\\u12zzcd\n").unwrap_err();
        assert!(err.starts_with("line 3: "), "{err}");
        assert!(err.contains("secret.key"), "{err}");
        assert!(!err.contains("ab"), "error must not quote the value: {err}");
        assert!(parse("k=\\u12").unwrap_err().starts_with("line 1: "));
        assert!(parse("k\\uxyz1=1").unwrap_err().contains("in a key"));
    }

    #[test]
    fn entries_keep_file_order_duplicates_and_start_lines() {
        let entries = parse("# c\nb=1\na=2\\\n  3\nb=4\n").unwrap();
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(got, vec![("b", "1", 2), ("a", "23", 3), ("b", "4", 5)]);
    }

    #[test]
    fn crlf_input_has_no_carriage_returns_in_values() {
        let entries = parse("a=1\r\n# c\r\nb = two words \r\nc=x\\\r\n  y\r\n").unwrap();
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(
            got,
            vec![("a", "1", 1), ("b", "two words ", 3), ("c", "xy", 4)]
        );
    }

    #[test]
    fn lone_carriage_return_ends_a_line_as_in_java() {
        assert_eq!(pairs("a=1\rb=2"), vec![kv("a", "1"), kv("b", "2")]);
    }

    #[test]
    fn confluent_cloud_client_config() {
        let text = "\
# Required connection configs for Kafka producer, consumer, and admin
bootstrap.servers=pkc-abc12.eu-west-1.aws.confluent.cloud:9092
security.protocol=SASL_SSL
sasl.mechanisms=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \\
    required username='KEY' password='SECRET';

# Best practice for higher availability in librdkafka clients prior to 1.7
session.timeout.ms=45000
";
        let entries = parse(text).unwrap();
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "bootstrap.servers",
                    "pkc-abc12.eu-west-1.aws.confluent.cloud:9092",
                    2
                ),
                ("security.protocol", "SASL_SSL", 3),
                ("sasl.mechanisms", "PLAIN", 4),
                (
                    "sasl.jaas.config",
                    "org.apache.kafka.common.security.plain.PlainLoginModule \
                     required username='KEY' password='SECRET';",
                    5
                ),
                ("session.timeout.ms", "45000", 9),
            ]
        );
    }

    #[test]
    fn empty_text_has_no_entries() {
        assert!(parse("").unwrap().is_empty());
    }
}

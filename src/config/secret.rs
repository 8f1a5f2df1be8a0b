//! The redacting holder of every password, token and key password.
//!
//! DESIGN rule 9: secrets never appear in a log line, an error message or
//! `Debug` output. A [`Secret`] therefore has no way to print its value:
//! `Debug` and `Display` both show `Secret(<redacted>)` (plus where the value
//! comes from, which is not secret), and every [`SecretError`] names the
//! origin, never the value. The value only comes out through
//! [`Secret::reveal`], at the point where it goes on the wire.
//!
//! A secret need not be written inline. The references of Kafka's config
//! providers work as they do for Java clients, so the same properties file
//! serves both:
//!
//! - `${env:NAME}`: the environment variable `NAME` (`EnvVarConfigProvider`);
//! - `${file:PATH}`: the whole file, trailing whitespace and newlines trimmed
//!   (files written by `echo` or a Kubernetes secret end in a newline);
//! - `${file:PATH:KEY}`: the value of `KEY` in the Java properties file `PATH`
//!   (`FileConfigProvider`);
//! - `${dir:DIR:FILE}`: the file `FILE` in directory `DIR`, trimmed
//!   (`DirectoryConfigProvider`, the layout of a mounted Kubernetes secret).
//!
//! References are resolved on every [`Secret::reveal`], not once at start-up,
//! so a rotated token file or credential is picked up on the next connection.

use std::fmt;
use std::path::{Path, PathBuf};

use super::properties;

/// A secret value, or where to read it from; never printed.
///
/// `Debug` and `Display` print `Secret(<redacted>)` or
/// `Secret(<redacted> from <origin>)`. Equality compares the sources (two
/// literals by value, two references by what they point at), not resolved
/// values, which is what tests of config precedence need.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    source: Source,
}

#[derive(Clone, PartialEq, Eq)]
enum Source {
    Literal(String),
    Env(String),
    File(PathBuf),
    FileKey {
        path: PathBuf,
        key: String,
    },
    Dir {
        dir: PathBuf,
        file: String,
    },
    /// `${env:..}`, `${file:..}` or `${dir:..}` that does not fit its form;
    /// kept so `reveal` can say so rather than send the text as a password.
    Malformed(String),
}

/// Why a secret could not be read; names where it was looked for, never a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretError {
    message: String,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SecretError {}

impl SecretError {
    fn new(message: String) -> SecretError {
        SecretError { message }
    }
}

impl Secret {
    /// Reads a config value: a `${env:..}`, `${file:..}` or `${dir:..}`
    /// reference becomes that reference (surrounding whitespace ignored),
    /// anything else is a literal secret.
    ///
    /// Never fails: a reference that does not fit its form (e.g. `${env:}`)
    /// is kept as such and [`Secret::reveal`] reports it. Other providers
    /// (`${vault:...}`) are taken literally, as a Java client without that
    /// provider configured would.
    pub fn parse(value: &str) -> Secret {
        Secret {
            source: parse_reference(value).unwrap_or_else(|| Source::Literal(value.to_string())),
        }
    }

    /// A secret given directly (a flag, `-X`, an environment variable already
    /// read by clap); no `${...}` interpretation.
    pub fn literal(value: impl Into<String>) -> Secret {
        Secret {
            source: Source::Literal(value.into()),
        }
    }

    /// The secret's value, reading the environment or the file now.
    ///
    /// Each call reads again, so a rotated file or re-exported variable is
    /// picked up by the next caller. An empty value is returned as is; see
    /// [`Secret::reveal_non_empty`] to refuse it. The error names the origin
    /// and what to do, never the value.
    pub fn reveal(&self) -> Result<String, SecretError> {
        match &self.source {
            Source::Literal(value) => Ok(value.clone()),
            Source::Env(name) => match std::env::var(name) {
                Ok(value) => Ok(value),
                Err(std::env::VarError::NotPresent) => Err(SecretError::new(format!(
                    "{} is not set: export it or change the property",
                    self.origin()
                ))),
                Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::new(format!(
                    "{} is not valid UTF-8: set it to UTF-8 text",
                    self.origin()
                ))),
            },
            Source::File(path) => read_trimmed(path, &self.origin()),
            Source::Dir { dir, file } => read_trimmed(&dir.join(file), &self.origin()),
            Source::FileKey { path, key } => {
                let text = read_file(path, &format!("the file {}", path.display()))?;
                let entries = properties::parse(&text).map_err(|problem| {
                    SecretError::new(format!(
                        "the file {} is not a valid properties file ({problem})",
                        path.display()
                    ))
                })?;
                // Java's Properties lets the last duplicate win.
                match entries.into_iter().rev().find(|e| e.key == *key) {
                    // Kafka trims a password after substitution; so do we.
                    Some(entry) => Ok(entry.value.trim().to_string()),
                    None => Err(SecretError::new(format!(
                        "the file {} has no key {key}: add it or fix the reference",
                        path.display()
                    ))),
                }
            }
            Source::Malformed(reference) => Err(SecretError::new(format!(
                "the reference {reference} is malformed: write ${{env:NAME}}, ${{file:PATH}}, ${{file:PATH:KEY}} or ${{dir:DIR:FILE}}"
            ))),
        }
    }

    /// Like [`Secret::reveal`], but an empty value is an error saying where it
    /// came from (e.g. "the file /run/secrets/pw is empty: ...").
    pub fn reveal_non_empty(&self) -> Result<String, SecretError> {
        let value = self.reveal()?;
        if !value.is_empty() {
            return Ok(value);
        }
        Err(SecretError::new(match &self.source {
            Source::Literal(_) => {
                "the secret is empty: set the property to the secret or to a ${env:NAME} or ${file:PATH} reference".to_string()
            }
            _ => format!(
                "{} is empty: put the secret there or change the property",
                self.origin()
            ),
        }))
    }

    /// Whether the value was given inline rather than as a reference.
    pub fn is_literal(&self) -> bool {
        matches!(self.source, Source::Literal(_))
    }

    /// Where the value comes from, safe to log: `the environment variable
    /// KAFKA_PW`, `the file /run/secrets/pw`, `key sasl.password of the file
    /// /etc/x.properties` or `an inline value`.
    pub fn origin(&self) -> String {
        match &self.source {
            Source::Literal(_) => "an inline value".to_string(),
            Source::Env(name) => format!("the environment variable {name}"),
            Source::File(path) => format!("the file {}", path.display()),
            Source::FileKey { path, key } => {
                format!("key {key} of the file {}", path.display())
            }
            Source::Dir { dir, file } => format!("the file {}", dir.join(file).display()),
            Source::Malformed(reference) => format!("the malformed reference {reference}"),
        }
    }
}

/// Prints `Secret(<redacted>)`, with the origin for references.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_literal() {
            f.write_str("Secret(<redacted>)")
        } else {
            write!(f, "Secret(<redacted> from {})", self.origin())
        }
    }
}

/// Same as `Debug`, so an accidental `{}` redacts too.
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Resolves a non-secret property written as a config provider reference.
///
/// Returns `None` when `value` is not a `${env:..}`, `${file:..}` or
/// `${dir:..}` reference (use it as it is), otherwise what the reference
/// resolves to, read now, with the same forms and errors as [`Secret::reveal`].
pub fn resolve_reference(value: &str) -> Option<Result<String, SecretError>> {
    parse_reference(value).map(|source| Secret { source }.reveal())
}

/// Recognizes a whole-value `${env:..}`, `${file:..}` or `${dir:..}`.
fn parse_reference(value: &str) -> Option<Source> {
    let inner = value.trim().strip_prefix("${")?.strip_suffix('}')?;
    let (provider, rest) = inner.split_once(':')?;
    let malformed = || Source::Malformed(value.trim().to_string());
    let source = match provider {
        "env" => {
            // `std::env::var` may panic on such names; refuse them here.
            if rest.is_empty() || rest.contains(['=', '\0']) {
                malformed()
            } else {
                Source::Env(rest.to_string())
            }
        }
        "file" => match split_path_key(rest) {
            Some((path, key)) => Source::FileKey {
                path: PathBuf::from(path),
                key: key.to_string(),
            },
            None if rest.is_empty() || rest.contains('\0') => malformed(),
            None => Source::File(PathBuf::from(rest)),
        },
        "dir" => match split_path_key(rest) {
            Some((dir, file)) if file != "." && file != ".." && !dir.contains('\0') => {
                Source::Dir {
                    dir: PathBuf::from(dir),
                    file: file.to_string(),
                }
            }
            _ => malformed(),
        },
        _ => return None,
    };
    Some(source)
}

/// Splits `PATH:KEY` at the last `:` if the key is non-empty and has no path
/// separator and the path is non-empty; otherwise the whole text is a path
/// (so `/a:b/c` and `C:\x` stay paths).
fn split_path_key(text: &str) -> Option<(&str, &str)> {
    let (path, key) = text.rsplit_once(':')?;
    if path.is_empty() || key.is_empty() || key.contains(['/', '\\', '\0']) {
        return None;
    }
    Some((path, key))
}

fn read_file(path: &Path, origin: &str) -> Result<String, SecretError> {
    std::fs::read_to_string(path).map_err(|e| {
        let reason = e.to_string();
        // "No such file or directory (os error 2)": the code adds nothing for a user.
        let reason = match reason.rsplit_once(" (os error ") {
            Some((text, _)) => text.to_string(),
            None => reason,
        };
        SecretError::new(format!(
            "cannot read {origin}: {reason}: check the path and its permissions"
        ))
    })
}

fn read_trimmed(path: &Path, origin: &str) -> Result<String, SecretError> {
    let mut text = read_file(path, origin)?;
    text.truncate(text.trim_end().len());
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SECRET: &str = "hunter2-secret";

    /// A path in the temp directory no other test (or test run) uses.
    fn temp_path(tag: &str) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("mykafkams-secret-{tag}-{}-{n}", std::process::id()))
    }

    fn assert_redacted(text: &str) {
        assert!(!text.contains(SECRET), "leaks the secret: {text}");
    }

    #[test]
    fn plain_text_is_a_literal() {
        let s = Secret::parse(SECRET);
        assert!(s.is_literal());
        assert_eq!(s.reveal().unwrap(), SECRET);
        assert_eq!(s.origin(), "an inline value");
        assert_eq!(s, Secret::literal(SECRET));
    }

    #[test]
    fn literal_does_not_interpret_references() {
        let s = Secret::literal("${env:HOME}");
        assert!(s.is_literal());
        assert_eq!(s.reveal().unwrap(), "${env:HOME}");
    }

    #[test]
    fn unknown_provider_and_partial_syntax_are_literals() {
        for text in [
            "${vault:secret/x}",
            "${env}",
            "pre${env:X}",
            "${env:X}post",
            "$env:X",
        ] {
            let s = Secret::parse(text);
            assert!(s.is_literal(), "{text}");
            assert_eq!(s.reveal().unwrap(), text);
            assert!(resolve_reference(text).is_none(), "{text}");
        }
    }

    #[test]
    fn empty_literal_is_returned_but_refused_by_reveal_non_empty() {
        let s = Secret::literal("");
        assert_eq!(s.reveal().unwrap(), "");
        let err = s.reveal_non_empty().unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn env_reference_reads_the_variable_on_each_reveal() {
        let name = format!("MYKAFKAMS_TEST_SECRET_ENV_{}", std::process::id());
        // SAFETY: the variable name is unique to this test and process; no
        // other code reads or writes it concurrently.
        unsafe { std::env::set_var(&name, SECRET) };
        let s = Secret::parse(&format!("${{env:{name}}}"));
        assert!(!s.is_literal());
        assert_eq!(s.origin(), format!("the environment variable {name}"));
        assert_eq!(s.reveal().unwrap(), SECRET);
        // SAFETY: as above.
        unsafe { std::env::set_var(&name, "rotated") };
        assert_eq!(s.reveal().unwrap(), "rotated");
        // SAFETY: as above.
        unsafe { std::env::remove_var(&name) };
        let err = s.reveal().unwrap_err().to_string();
        assert_eq!(
            err,
            format!("the environment variable {name} is not set: export it or change the property")
        );
    }

    #[test]
    fn file_reference_reads_the_whole_file_trimmed_and_rereads_after_a_change() {
        let path = temp_path("whole");
        std::fs::write(&path, format!("{SECRET}\n\n")).unwrap();
        let s = Secret::parse(&format!("${{file:{}}}", path.display()));
        assert_eq!(s.origin(), format!("the file {}", path.display()));
        assert_eq!(s.reveal().unwrap(), SECRET);
        std::fs::write(&path, "rotated-token \r\n").unwrap();
        assert_eq!(s.reveal().unwrap(), "rotated-token");
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(s.reveal().unwrap(), "");
        let err = s.reveal_non_empty().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "the file {} is empty: put the secret there or change the property",
                path.display()
            )
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn file_key_reference_reads_one_property() {
        let path = temp_path("props");
        std::fs::write(
            &path,
            format!("user=alice\nsasl.password = {SECRET}\nsasl.password={SECRET}-2\n"),
        )
        .unwrap();
        let s = Secret::parse(&format!("${{file:{}:sasl.password}}", path.display()));
        assert_eq!(
            s.origin(),
            format!("key sasl.password of the file {}", path.display())
        );
        // The later duplicate wins, as in Java.
        assert_eq!(s.reveal().unwrap(), format!("{SECRET}-2"));
        let missing = Secret::parse(&format!("${{file:{}:pw}}", path.display()));
        let err = missing.reveal().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "the file {} has no key pw: add it or fix the reference",
                path.display()
            )
        );
        assert_redacted(&err);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn malformed_properties_file_error_does_not_leak_values() {
        let path = temp_path("badprops");
        std::fs::write(&path, format!("pw={SECRET}\\uZZZZ\n")).unwrap();
        let err = Secret::parse(&format!("${{file:{}:pw}}", path.display()))
            .reveal()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid properties file"), "{err}");
        assert_redacted(&err);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn dir_reference_reads_a_file_in_the_directory() {
        let dir = temp_path("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("password"), format!("{SECRET}\n")).unwrap();
        let s = Secret::parse(&format!("${{dir:{}:password}}", dir.display()));
        assert_eq!(
            s.origin(),
            format!("the file {}", dir.join("password").display())
        );
        assert_eq!(s.reveal().unwrap(), SECRET);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_error_names_the_file() {
        let path = temp_path("missing");
        let err = Secret::parse(&format!("${{file:{}}}", path.display()))
            .reveal()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "cannot read the file {}: No such file or directory",
                path.display()
            )),
            "{err}"
        );
        assert!(!err.contains("os error"), "{err}");
    }

    #[test]
    fn path_key_split_takes_the_last_colon_only_before_a_plain_key() {
        let split = |text: &str| match Secret::parse(text).source {
            Source::File(path) => (path.display().to_string(), None),
            Source::FileKey { path, key } => (path.display().to_string(), Some(key)),
            _ => panic!("not a file reference: {text}"),
        };
        assert_eq!(
            split("${file:/etc/x.properties:pw}"),
            ("/etc/x.properties".into(), Some("pw".into()))
        );
        assert_eq!(split("${file:/a:b/c}"), ("/a:b/c".into(), None));
        assert_eq!(split("${file:/etc/pw:}"), ("/etc/pw:".into(), None));
        assert_eq!(split("${file::pw}"), (":pw".into(), None));
        assert_eq!(
            split(r"${file:C:\secrets\pw}"),
            (r"C:\secrets\pw".into(), None)
        );
        assert_eq!(
            split("  ${file:/run/secrets/pw}\n"),
            ("/run/secrets/pw".into(), None)
        );
    }

    #[test]
    fn malformed_references_fail_on_reveal() {
        for text in [
            "${env:}",
            "${file:}",
            "${dir:/only-a-dir}",
            "${dir:/d:..}",
            "${dir::f}",
        ] {
            let s = Secret::parse(text);
            assert!(!s.is_literal(), "{text}");
            let err = s.reveal().unwrap_err().to_string();
            assert!(err.contains("is malformed"), "{text}: {err}");
            assert!(resolve_reference(text).unwrap().is_err(), "{text}");
        }
    }

    #[test]
    fn resolve_reference_resolves_only_references() {
        assert!(resolve_reference("localhost:9092").is_none());
        let path = temp_path("resolve");
        std::fs::write(&path, "broker:9092\n").unwrap();
        let got = resolve_reference(&format!("${{file:{}}}", path.display()));
        assert_eq!(got, Some(Ok("broker:9092".to_string())));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn equality_compares_sources() {
        assert_eq!(Secret::parse("${env:A}"), Secret::parse("${env:A}"));
        assert_ne!(Secret::parse("${env:A}"), Secret::parse("${env:B}"));
        assert_ne!(Secret::parse("${env:A}"), Secret::literal("${env:A}"));
        assert_ne!(Secret::literal("a"), Secret::literal("b"));
    }

    #[test]
    fn debug_and_display_redact() {
        let literal = Secret::literal(SECRET);
        assert_eq!(format!("{literal:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{literal}"), "Secret(<redacted>)");
        assert_eq!(format!("{literal:#?}"), "Secret(<redacted>)");
        let env = Secret::parse("${env:KAFKA_PW}");
        assert_eq!(
            format!("{env:?}"),
            "Secret(<redacted> from the environment variable KAFKA_PW)"
        );
        assert_eq!(format!("{env}"), format!("{env:?}"));
        // A derived Debug of a struct holding a secret redacts it too.
        assert_redacted(&format!("{:?}", Some(("password", literal))));
    }

    #[test]
    fn no_error_or_debug_output_contains_the_secret() {
        let path = temp_path("leak");
        std::fs::write(&path, format!("other={SECRET}\n")).unwrap();
        let sources = [
            Secret::literal(SECRET),
            Secret::parse(&format!("${{file:{}}}", path.display())),
            Secret::parse(&format!("${{file:{}:pw}}", path.display())),
            Secret::parse("${env:MYKAFKAMS_TEST_SURELY_UNSET_VARIABLE}"),
            Secret::parse(&format!("${{dir:{}:nope}}", path.display())),
        ];
        for s in &sources {
            assert_redacted(&format!("{s:?} {s} {}", s.origin()));
            if let Err(e) = s.reveal() {
                assert_redacted(&format!("{e} {e:?}"));
            }
            if let Err(e) = s.reveal_non_empty() {
                assert_redacted(&format!("{e} {e:?}"));
            }
        }
        std::fs::remove_file(&path).unwrap();
    }
}

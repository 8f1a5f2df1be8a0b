//! The value of Kafka's `sasl.jaas.config` property.
//!
//! Java clients take SASL credentials as one JAAS entry in a string:
//!
//! ```text
//! org.apache.kafka.common.security.scram.ScramLoginModule required
//!     username="alice" password="alice-secret";
//! ```
//!
//! Users copy that line from Confluent Cloud's console, a Strimzi secret or
//! their Java client's config, so we read it with the grammar Kafka's
//! `JaasConfig` accepts instead of asking for the credentials another way: a
//! login module class name, a control flag (`required`, `requisite`,
//! `sufficient` or `optional`, any case), `name=value` options and a closing
//! `;`. Whitespace, newlines and `//` or `/* */` comments may separate tokens.
//! A value is a double- or single-quoted string (with the backslash escapes of
//! Java's `StreamTokenizer`, so a password reads exactly as the Java client
//! reads it) or an unquoted run of characters up to whitespace or `;`.
//! A client takes exactly one entry, as Kafka's `JaasContext` insists.
//!
//! Option values are credentials (DESIGN rule 9): neither the `Debug` output
//! nor any error message contains one. Errors point at a character position
//! and name an option only once it is certain the text is an option name (it
//! is followed by `=`), so a password typed where a name or a flag belongs is
//! not echoed either.

use std::fmt;

use super::suggest;

/// One parsed `sasl.jaas.config` entry: which login module, and its options.
///
/// `Debug` lists the option names with every value shown as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JaasConfig {
    /// The login module's fully qualified Java class name, as written.
    pub login_module: String,
    /// The control flag, lower-cased: `required`, `requisite`, `sufficient` or `optional`.
    pub control_flag: String,
    /// Options in the order first written; a repeated name keeps its first
    /// place and takes the later value, as Kafka's map does.
    options: Vec<(String, String)>,
}

/// The SASL login modules we know how to drive, told apart by class name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginModule {
    /// `PlainLoginModule` (SASL/PLAIN, e.g. Confluent Cloud API keys).
    Plain,
    /// `ScramLoginModule` (SASL/SCRAM-SHA-256 and -512).
    Scram,
    /// `OAuthBearerLoginModule` (SASL/OAUTHBEARER).
    OAuthBearer,
    /// Any other class (Kerberos, vendor plugins): not handled here.
    Other,
}

const FLAGS: [&str; 4] = ["required", "requisite", "sufficient", "optional"];
const EXAMPLE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"...\" password=\"...\";";

impl JaasConfig {
    /// Parses a `sasl.jaas.config` value holding exactly one login module entry.
    ///
    /// Errors are one line, say where the text went wrong and what to write
    /// instead, and never contain an option value.
    pub fn parse(s: &str) -> Result<JaasConfig, String> {
        let mut cursor = Cursor {
            chars: s.chars().collect(),
            pos: 0,
        };
        let mut entries = Vec::new();
        loop {
            cursor.skip_blanks()?;
            if cursor.peek().is_none() {
                break;
            }
            entries.push(cursor.entry()?);
        }
        match entries.len() {
            0 => Err(format!(
                "sasl.jaas.config is empty: set it to a login module entry, e.g. {EXAMPLE}"
            )),
            1 => Ok(entries.remove(0)),
            n => Err(format!(
                "sasl.jaas.config has {n} login module entries but a client uses exactly one: keep one and remove the others"
            )),
        }
    }

    /// The value of option `name` (case-sensitive, as in Kafka), if present.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All options as `(name, value)`, each name once, in the order first written.
    pub fn options(&self) -> impl Iterator<Item = (&str, &str)> {
        self.options.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Which login module the class name denotes.
    ///
    /// Decided by the simple class name, so shaded or vendor copies of Kafka's
    /// classes (`org.apache.kafka.shaded...`, Confluent's packaging) count as
    /// the module they copy.
    pub fn module(&self) -> LoginModule {
        let simple = self
            .login_module
            .rsplit(['.', '$'])
            .next()
            .unwrap_or_default();
        match simple {
            "PlainLoginModule" => LoginModule::Plain,
            "ScramLoginModule" => LoginModule::Scram,
            "OAuthBearerLoginModule" => LoginModule::OAuthBearer,
            _ => LoginModule::Other,
        }
    }
}

/// Shows the module, the flag and the option names; values are `<redacted>`.
impl fmt::Debug for JaasConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted;
        impl fmt::Debug for Redacted {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }
        struct Options<'a>(&'a [(String, String)]);
        impl fmt::Debug for Options<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(name, _)| (name, Redacted)))
                    .finish()
            }
        }
        f.debug_struct("JaasConfig")
            .field("login_module", &self.login_module)
            .field("control_flag", &self.control_flag)
            .field("options", &Options(&self.options))
            .finish()
    }
}

/// A position in the text; positions in messages are 1-based characters.
struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    /// The 1-based character position of the cursor, for error messages.
    fn column(&self) -> usize {
        self.pos + 1
    }

    /// Skips whitespace and comments between tokens (Kafka's tokenizer allows both).
    fn skip_blanks(&mut self) -> Result<(), String> {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(c), _) if c.is_whitespace() => self.pos += 1,
                (Some('/'), Some('/')) => {
                    while self.peek().is_some_and(|c| c != '\n' && c != '\r') {
                        self.pos += 1;
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.column();
                    self.pos += 2;
                    loop {
                        match (self.peek(), self.peek_at(1)) {
                            (Some('*'), Some('/')) => {
                                self.pos += 2;
                                break;
                            }
                            (Some(_), _) => self.pos += 1,
                            (None, _) => {
                                return Err(format!(
                                    "sasl.jaas.config: the comment opened at character {start} is never closed: add */ or remove it"
                                ));
                            }
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// Reads a bare word: a class name, a control flag or an option name.
    fn word(&mut self) -> String {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| !c.is_whitespace() && !matches!(c, ';' | '=' | '"' | '\'' | '/'))
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Describes the character at the cursor without quoting user text.
    fn found(&self) -> &'static str {
        match self.peek() {
            None => "the end of the text",
            Some(';') => "';'",
            Some('=') => "'='",
            Some('"' | '\'') => "a quoted string",
            Some(_) => "an unexpected character",
        }
    }

    fn entry(&mut self) -> Result<JaasConfig, String> {
        let module_at = self.column();
        let login_module = self.word();
        if login_module.is_empty() {
            return Err(format!(
                "sasl.jaas.config: expected a login module class name at character {module_at} but found {}: start with the class name, e.g. {EXAMPLE}",
                self.found()
            ));
        }
        self.skip_blanks()?;
        if self.peek() == Some('=') {
            return Err(format!(
                "sasl.jaas.config: found an option at character {module_at} where the login module class name belongs: start with the class name and control flag, e.g. {EXAMPLE}"
            ));
        }
        if !is_class_name(&login_module) {
            return Err(format!(
                "sasl.jaas.config: the login module at character {module_at} is not a Java class name: write the fully qualified class name, e.g. {EXAMPLE}"
            ));
        }

        let flag_at = self.column();
        let flag = self.word();
        if flag.is_empty() {
            return Err(format!(
                "sasl.jaas.config: the control flag is missing at character {flag_at}: write 'required' after the login module class name"
            ));
        }
        self.skip_blanks()?;
        if self.peek() == Some('=') {
            // The word was an option name: the flag was left out.
            return Err(format!(
                "sasl.jaas.config: the control flag is missing at character {flag_at}: write 'required' between the login module class name and the options"
            ));
        }
        let control_flag = flag.to_ascii_lowercase();
        if !FLAGS.contains(&control_flag.as_str()) {
            // Suggesting one of the four fixed words reveals nothing of what was written.
            let hint = match suggest::closest(&flag, FLAGS) {
                Some(close) => format!("did you mean '{close}'? "),
                None => String::new(),
            };
            return Err(format!(
                "sasl.jaas.config: the control flag at character {flag_at} is not required, requisite, sufficient or optional: {hint}clients normally use 'required'"
            ));
        }

        let mut options: Vec<(String, String)> = Vec::new();
        loop {
            self.skip_blanks()?;
            let name_at = self.column();
            match self.peek() {
                None => {
                    return Err(format!(
                        "sasl.jaas.config: the entry starting at character {module_at} is not terminated by ';': add ';' at the end"
                    ));
                }
                Some(';') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => {}
            }
            let name = self.word();
            if name.is_empty() {
                return Err(format!(
                    "sasl.jaas.config: expected an option name at character {name_at} but found {}: write options as name=\"value\" and end the entry with ';'",
                    self.found()
                ));
            }
            self.skip_blanks()?;
            if self.peek() != Some('=') {
                // Not certain this word is an option name (it may be a stray
                // password), so it is not quoted.
                return Err(format!(
                    "sasl.jaas.config: expected '=' after the word at character {name_at}: write options as name=\"value\" and end the entry with ';'"
                ));
            }
            self.pos += 1;
            let value = self.value(&name)?;
            match options.iter_mut().find(|(n, _)| *n == name) {
                Some(existing) => existing.1 = value,
                None => options.push((name, value)),
            }
        }
        Ok(JaasConfig {
            login_module,
            control_flag,
            options,
        })
    }

    /// Reads an option's value after its `=`; `name` is only for messages.
    fn value(&mut self, name: &str) -> Result<String, String> {
        self.skip_blanks()?;
        match self.peek() {
            None | Some(';') => Err(format!(
                "sasl.jaas.config: option '{name}' has no value: write {name}=\"...\""
            )),
            Some(quote @ ('"' | '\'')) => {
                self.pos += 1;
                self.quoted(quote).ok_or_else(|| {
                    let kind = if quote == '"' { "double" } else { "single" };
                    format!(
                        "sasl.jaas.config: the value of option '{name}' has no closing {kind} quote: add it after the value"
                    )
                })
            }
            Some(_) => {
                let start = self.pos;
                while self.peek().is_some_and(|c| !c.is_whitespace() && c != ';') {
                    self.pos += 1;
                }
                Ok(self.chars[start..self.pos].iter().collect())
            }
        }
    }

    /// Reads a quoted string after its opening quote, resolving escapes the way
    /// Java's `StreamTokenizer` does; `None` if the closing quote is missing.
    fn quoted(&mut self, quote: char) -> Option<String> {
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            self.pos += 1;
            if c == quote {
                return Some(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let escaped = self.peek()?;
            self.pos += 1;
            if let Some(first) = escaped.to_digit(8) {
                // Octal: up to three digits, at most \377.
                let mut code = first;
                let max_digits = if first <= 3 { 3 } else { 2 };
                for _ in 1..max_digits {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            code = code * 8 + d;
                            self.pos += 1;
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                continue;
            }
            out.push(match escaped {
                'a' => '\x07',
                'b' => '\x08',
                'f' => '\x0c',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'v' => '\x0b',
                other => other,
            });
        }
    }
}

/// Whether `name` looks like a fully qualified Java class name.
fn is_class_name(name: &str) -> bool {
    name.split('.').all(|part| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
            && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAM: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";
    const PLAIN: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";

    #[test]
    fn parses_double_quoted_values() {
        let c = JaasConfig::parse(&format!(
            "{SCRAM} required username=\"alice\" password=\"alice-secret\";"
        ))
        .unwrap();
        assert_eq!(c.login_module, SCRAM);
        assert_eq!(c.control_flag, "required");
        assert_eq!(c.option("username"), Some("alice"));
        assert_eq!(c.option("password"), Some("alice-secret"));
        assert_eq!(c.option("missing"), None);
        assert_eq!(c.module(), LoginModule::Scram);
    }

    #[test]
    fn parses_single_quoted_values_as_confluent_cloud_shows_them() {
        let c = JaasConfig::parse(&format!(
            "{PLAIN} required username='KEY' password='SECRET';"
        ))
        .unwrap();
        assert_eq!(c.option("username"), Some("KEY"));
        assert_eq!(c.option("password"), Some("SECRET"));
        assert_eq!(c.module(), LoginModule::Plain);
    }

    #[test]
    fn parses_unquoted_values_up_to_whitespace_or_semicolon() {
        let c = JaasConfig::parse(&format!(
            "{PLAIN} required username=bob password=p@ss:w0rd;"
        ))
        .unwrap();
        assert_eq!(c.option("username"), Some("bob"));
        assert_eq!(c.option("password"), Some("p@ss:w0rd"));
    }

    #[test]
    fn escaped_quote_and_backslash_inside_a_password() {
        let c = JaasConfig::parse(&format!(
            r#"{SCRAM} required username="a" password="say \"hi\" \\ ok" other='it\'s';"#
        ))
        .unwrap();
        assert_eq!(c.option("password"), Some(r#"say "hi" \ ok"#));
        assert_eq!(c.option("other"), Some("it's"));
    }

    #[test]
    fn java_tokenizer_escapes_are_resolved_in_quoted_values() {
        let c = JaasConfig::parse(&format!(r#"{SCRAM} required a="x\ty\101\q";"#)).unwrap();
        assert_eq!(c.option("a"), Some("x\tyAq"));
    }

    #[test]
    fn whitespace_newlines_and_comments_between_tokens() {
        let text = format!(
            "\n  {SCRAM}\n\tREQUIRED /* flag */\n  username = \"alice\" // user\n  password=\"pw\"\n  ;\n"
        );
        let c = JaasConfig::parse(&text).unwrap();
        assert_eq!(c.control_flag, "required");
        let all: Vec<_> = c.options().collect();
        assert_eq!(all, vec![("username", "alice"), ("password", "pw")]);
    }

    #[test]
    fn options_keep_order_and_a_repeated_name_takes_the_later_value() {
        let c = JaasConfig::parse(&format!("{PLAIN} optional b=1 a=2 b=3;")).unwrap();
        assert_eq!(c.control_flag, "optional");
        let all: Vec<_> = c.options().collect();
        assert_eq!(all, vec![("b", "3"), ("a", "2")]);
    }

    #[test]
    fn entry_without_options_is_accepted() {
        let c = JaasConfig::parse("com.example.MyLoginModule sufficient;").unwrap();
        assert_eq!(c.options().count(), 0);
        assert_eq!(c.module(), LoginModule::Other);
    }

    #[test]
    fn module_is_decided_by_the_simple_class_name() {
        let module = |class: &str| {
            JaasConfig::parse(&format!("{class} required;"))
                .unwrap()
                .module()
        };
        assert_eq!(
            module(
                "org.apache.kafka.shaded.org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
            ),
            LoginModule::OAuthBearer
        );
        assert_eq!(
            module("org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"),
            LoginModule::OAuthBearer
        );
        assert_eq!(
            module("io.confluent.shaded.org.apache.kafka.common.security.plain.PlainLoginModule"),
            LoginModule::Plain
        );
        assert_eq!(
            module("com.sun.security.auth.module.Krb5LoginModule"),
            LoginModule::Other
        );
        assert_eq!(
            module("com.example.NotPlainLoginModule"),
            LoginModule::Other
        );
    }

    #[test]
    fn missing_semicolon_is_an_error() {
        let err = JaasConfig::parse(&format!("{PLAIN} required username=\"a\"")).unwrap_err();
        assert!(err.contains("not terminated by ';'"), "{err}");
    }

    #[test]
    fn missing_control_flag_is_an_error() {
        for text in [
            format!("{PLAIN};"),
            PLAIN.to_string(),
            format!("{PLAIN} username=\"a\" password=\"b\";"),
        ] {
            let err = JaasConfig::parse(&text).unwrap_err();
            assert!(err.contains("control flag is missing"), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_control_flag_is_an_error_with_a_suggestion() {
        let err = JaasConfig::parse(&format!("{PLAIN} requried username=\"a\";")).unwrap_err();
        assert!(err.contains("is not required, requisite"), "{err}");
        assert!(err.contains("did you mean 'required'?"), "{err}");
        assert!(!err.contains("requried"), "{err}");
    }

    #[test]
    fn two_entries_are_rejected() {
        let err = JaasConfig::parse(&format!("{PLAIN} required; {SCRAM} required;")).unwrap_err();
        assert!(err.contains("2 login module entries"), "{err}");
        assert!(err.contains("exactly one"), "{err}");
    }

    #[test]
    fn empty_config_is_rejected() {
        for text in ["", "  \n\t", "/* nothing */"] {
            let err = JaasConfig::parse(text).unwrap_err();
            assert!(err.contains("is empty"), "{text:?}: {err}");
        }
    }

    #[test]
    fn option_without_value_names_the_option() {
        let err = JaasConfig::parse(&format!("{PLAIN} required password=;")).unwrap_err();
        assert!(err.contains("option 'password' has no value"), "{err}");
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        let err = JaasConfig::parse(&format!("{PLAIN} required password=\"abc;")).unwrap_err();
        assert!(err.contains("no closing double quote"), "{err}");
    }

    #[test]
    fn debug_shows_option_names_and_redacts_values() {
        let c = JaasConfig::parse(&format!(
            "{PLAIN} required username=\"alice\" password=\"hunter2-secret\";"
        ))
        .unwrap();
        let debug = format!("{c:?}");
        assert!(debug.contains("\"password\": <redacted>"), "{debug}");
        assert!(debug.contains("\"username\": <redacted>"), "{debug}");
        assert!(debug.contains(PLAIN), "{debug}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(!debug.contains("alice"), "{debug}");
        let pretty = format!("{c:#?}");
        assert!(!pretty.contains("hunter2-secret"), "{pretty}");
    }

    #[test]
    fn no_error_message_contains_the_password() {
        let pw = "hunter2-secret";
        let malformed = [
            format!("{PLAIN} required username=\"a\" password=\"{pw}\""),
            format!("{PLAIN} required username=\"a\" password=\"{pw}"),
            format!("{PLAIN} required username=\"a\" password='{pw}"),
            format!("{PLAIN} required username=\"a\" password={pw}"),
            format!("{PLAIN} username=\"a\" password=\"{pw}\";"),
            format!("{PLAIN} {pw} username=\"a\";"),
            format!("{PLAIN} required username=\"a\" password {pw};"),
            format!("{PLAIN} required username=\"a\" {pw};"),
            format!("{PLAIN} required username=\"a\" \"{pw}\";"),
            format!("{PLAIN} required password=\"{pw}\"; {PLAIN} required password=\"{pw}\";"),
            pw.to_string(),
            format!("{pw};"),
            format!("\"{pw}\" required;"),
            format!("{PLAIN} required password=\"{pw}\" /* unclosed"),
            format!("{PLAIN} required password=\"{pw}\" = ;"),
        ];
        for text in &malformed {
            let err = JaasConfig::parse(text).unwrap_err();
            assert!(!err.contains(pw), "error leaks the password: {err}");
            assert!(!err.contains('\n'), "error is not one line: {err}");
        }
    }
}

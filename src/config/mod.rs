//! Kafka-style configuration: a Java `.properties` file (`--config FILE`),
//! `-X key=value` (repeatable, as kcat), command-line flags and the
//! environment, merged with one documented precedence:
//!
//! **flag > `-X` > config file > environment > default.**
//!
//! How: every property that has a flag is turned into that flag, and those
//! flags go on the command line *before* the user's own arguments (file
//! first, then `-X`), with clap told that a later occurrence of a flag
//! overrides an earlier one. So a flag typed by the user beats `-X`, which
//! beats the file, and clap reads an environment variable only when the flag
//! appears nowhere. One parser (clap's) validates every value, whatever its
//! source.
//!
//! Property names are the ones users paste from their provider's console
//! (Java's and librdkafka's); an unknown name is an error that suggests the
//! closest known one, because a typo in a security setting must not pass
//! silently. A name Java or librdkafka knows but this tool does not use gets
//! one warning line (or an error, where ignoring it would weaken security).

pub mod jaas;
pub mod properties;
pub mod secret;
pub mod security;
pub(crate) mod settings;
pub mod suggest;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use security::SecurityArgs;

/// `--config` and `-X`, declared for `--help`: [`fold`] takes them out of
/// the command line before clap parses it, so these fields stay empty.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PropertyArgs {
    /// Java .properties file of Kafka client settings, as kafka-console-consumer's
    /// --consumer.config (repeatable; later files win).
    #[arg(long = "config", value_name = "FILE", help_heading = "Configuration")]
    pub config: Vec<PathBuf>,
    /// One Kafka property, e.g. -X security.protocol=SASL_SSL (repeatable).
    /// Precedence: flag > -X > --config > environment.
    #[arg(short = 'X', value_name = "KEY=VALUE", help_heading = "Configuration")]
    pub set: Vec<String>,
}

/// Which binary a property list is for: a property of the other one (a
/// shared client.properties) is ignored with a note, not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// The `consumer` binary.
    Consumer,
    /// The `producer` binary.
    Producer,
}

/// Turns a property value into the flag arguments that carry it.
type Convert = fn(&str) -> std::result::Result<Vec<String>, String>;

/// What a property name means to us.
#[derive(Clone, Copy)]
enum Meaning {
    /// Carried by a flag of both binaries.
    Both(Convert),
    /// Carried by a flag of the consumer; a producer ignores it.
    Consumer(Convert),
    /// Carried by a flag of the producer; a consumer ignores it.
    Producer(Convert),
    /// Known to Kafka clients, not used here; warn and go on.
    Ignored(&'static str),
    /// Known to Kafka clients, and ignoring it would change what the user
    /// asked for (security, delivery): refuse, saying why.
    Unsupported(&'static str),
}

macro_rules! flag {
    ($long:literal) => {
        |v: &str| Ok(vec![format!("--{}={v}", $long)])
    };
    ($long:literal, ms) => {
        |v: &str| millis($long, v)
    };
    ($long:literal, number) => {
        |v: &str| number($long, v)
    };
}

/// A whole number, checked here so the error names the property and where
/// it was set (clap's would name only the flag).
fn number(long: &str, v: &str) -> std::result::Result<Vec<String>, String> {
    match v.trim().parse::<u64>() {
        Ok(n) => Ok(vec![format!("--{long}={n}")]),
        Err(_) => Err(format!("'{v}' is not a whole number")),
    }
}

fn millis(long: &str, v: &str) -> std::result::Result<Vec<String>, String> {
    match v.trim().parse::<u64>() {
        Ok(n) => Ok(vec![format!("--{long}={n}ms")]),
        Err(_) => Err(format!("'{v}' is not a number of milliseconds")),
    }
}

/// Java's assignor class names and librdkafka's names, as ours.
fn assignors(v: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let simple = name.rsplit('.').next().unwrap_or(name);
        out.push(match simple {
            "CooperativeStickyAssignor" | "cooperative-sticky" => "cooperative-sticky",
            "RangeAssignor" | "range" => "range",
            "RoundRobinAssignor" | "roundrobin" => "roundrobin",
            _ => {
                return Err(format!(
                    "assignor '{name}' is not supported: use CooperativeStickyAssignor, RangeAssignor or RoundRobinAssignor"
                ));
            }
        });
    }
    Ok(vec![format!("--assignor={}", out.join(","))])
}

fn offset_reset(v: &str) -> std::result::Result<Vec<String>, String> {
    match v.trim() {
        "earliest" | "smallest" | "beginning" => Ok(vec!["--reset=earliest".into()]),
        "latest" | "largest" | "end" => Ok(vec!["--reset=latest".into()]),
        "none" | "error" => {
            Err("auto.offset.reset=none is not supported: use earliest or latest".into())
        }
        other => Err(format!("'{other}' is not earliest or latest")),
    }
}

fn compression(v: &str) -> std::result::Result<Vec<String>, String> {
    Ok(vec![format!(
        "--compression={}",
        v.trim().to_ascii_lowercase()
    )])
}

/// A Java PEM key store holds the key and the certificate chain in one file.
fn pem_keystore(v: &str) -> std::result::Result<Vec<String>, String> {
    Ok(vec![
        format!("--ssl-certificate-location={v}"),
        format!("--ssl-key-location={v}"),
    ])
}

fn store_type(v: &str) -> std::result::Result<Vec<String>, String> {
    match v.trim().to_ascii_uppercase().as_str() {
        "PEM" => Ok(Vec::new()),
        "JKS" | "PKCS12" => Err(format!(
            "{} stores are not read by mykafkams, which uses PEM files: export the CA with keytool -exportcert -rfc (or openssl pkcs12 -nokeys), set ssl.ca.location to it, and leave out the store type",
            v.trim()
        )),
        other => Err(format!("store type '{other}' is not PEM")),
    }
}

fn isolation(v: &str) -> std::result::Result<Vec<String>, String> {
    match v.trim() {
        "read_committed" => Ok(Vec::new()),
        _ => Err(
            "isolation.level: mykafkams always reads committed data only (read_committed)".into(),
        ),
    }
}

fn acks(v: &str) -> std::result::Result<Vec<String>, String> {
    match v.trim() {
        "all" | "-1" => Ok(vec!["--acks=all".into()]),
        "1" => Ok(vec!["--acks=1".into()]),
        "0" => Ok(vec!["--acks=0".into()]),
        other => Err(format!("'{other}' is not all, -1, 1 or 0")),
    }
}

fn idempotence(v: &str) -> std::result::Result<Vec<String>, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        b @ ("true" | "false") => Ok(vec![format!("--idempotence={b}")]),
        other => Err(format!("'{other}' is not true or false")),
    }
}

const OIDC: &str = "the OIDC client-credentials flow is not built in: have your identity provider's tool write the token to a file and set sasl.oauthbearer.token=${file:PATH} (it is read again whenever the broker asks for re-authentication)";
const CLASSES: &str = "Java classes cannot be loaded here: for OAUTHBEARER set sasl.oauthbearer.token (a ${file:PATH} or ${env:NAME} reference); other callbacks are not supported";
const KERBEROS: &str =
    "GSSAPI (Kerberos) is not supported: use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER";
const NOT_USED: &str = "not used by mykafkams";

/// Every property name we know, with what it means. Aliases (librdkafka's
/// spelling) are separate rows.
const PROPERTIES: &[(&str, Meaning)] = &[
    ("bootstrap.servers", Meaning::Both(flag!("brokers"))),
    ("metadata.broker.list", Meaning::Both(flag!("brokers"))),
    ("client.id", Meaning::Both(flag!("client-id"))),
    (
        "security.protocol",
        Meaning::Both(flag!("security-protocol")),
    ),
    ("sasl.mechanism", Meaning::Both(flag!("sasl-mechanism"))),
    ("sasl.mechanisms", Meaning::Both(flag!("sasl-mechanism"))),
    ("sasl.username", Meaning::Both(flag!("sasl-username"))),
    ("sasl.password", Meaning::Both(flag!("sasl-password"))),
    ("sasl.jaas.config", Meaning::Both(flag!("sasl-jaas-config"))),
    (
        "sasl.oauthbearer.token",
        Meaning::Both(flag!("sasl-oauthbearer-token")),
    ),
    ("ssl.ca.location", Meaning::Both(flag!("ssl-ca-location"))),
    (
        "ssl.truststore.location",
        Meaning::Both(flag!("ssl-ca-location")),
    ),
    ("ssl.truststore.type", Meaning::Both(store_type)),
    (
        "ssl.certificate.location",
        Meaning::Both(flag!("ssl-certificate-location")),
    ),
    ("ssl.key.location", Meaning::Both(flag!("ssl-key-location"))),
    ("ssl.keystore.location", Meaning::Both(pem_keystore)),
    ("ssl.keystore.type", Meaning::Both(store_type)),
    ("ssl.key.password", Meaning::Both(flag!("ssl-key-password"))),
    (
        "ssl.keystore.password",
        Meaning::Both(flag!("ssl-key-password")),
    ),
    (
        "ssl.endpoint.identification.algorithm",
        Meaning::Both(flag!("ssl-endpoint-identification-algorithm")),
    ),
    (
        "enable.ssl.certificate.verification",
        Meaning::Unsupported(
            "turning certificate verification off is not supported: set ssl.ca.location to the cluster's CA (ssl.endpoint.identification.algorithm= only skips the host name check)",
        ),
    ),
    (
        "ssl.truststore.password",
        Meaning::Ignored("PEM trust stores have no password"),
    ),
    (
        "ssl.protocol",
        Meaning::Ignored("TLS 1.2 and 1.3 are negotiated"),
    ),
    (
        "ssl.enabled.protocols",
        Meaning::Ignored("TLS 1.2 and 1.3 are negotiated"),
    ),
    ("sasl.kerberos.service.name", Meaning::Unsupported(KERBEROS)),
    ("sasl.kerberos.principal", Meaning::Unsupported(KERBEROS)),
    ("sasl.kerberos.keytab", Meaning::Unsupported(KERBEROS)),
    (
        "sasl.login.callback.handler.class",
        Meaning::Unsupported(CLASSES),
    ),
    (
        "sasl.client.callback.handler.class",
        Meaning::Unsupported(CLASSES),
    ),
    (
        "sasl.oauthbearer.token.endpoint.url",
        Meaning::Unsupported(OIDC),
    ),
    ("sasl.oauthbearer.method", Meaning::Unsupported(OIDC)),
    ("sasl.oauthbearer.client.id", Meaning::Unsupported(OIDC)),
    ("sasl.oauthbearer.client.secret", Meaning::Unsupported(OIDC)),
    ("sasl.oauthbearer.config", Meaning::Unsupported(OIDC)),
    (
        "enable.sasl.oauthbearer.unsecure.jwt",
        Meaning::Unsupported(
            "for an unsecured token use sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"NAME\";",
        ),
    ),
    // The consumer.
    ("group.id", Meaning::Consumer(flag!("group"))),
    (
        "group.instance.id",
        Meaning::Consumer(flag!("group-instance-id")),
    ),
    ("group.protocol", Meaning::Consumer(flag!("group-protocol"))),
    (
        "group.remote.assignor",
        Meaning::Consumer(flag!("group-remote-assignor")),
    ),
    (
        "partition.assignment.strategy",
        Meaning::Consumer(assignors),
    ),
    (
        "session.timeout.ms",
        Meaning::Consumer(flag!("session-timeout", ms)),
    ),
    (
        "heartbeat.interval.ms",
        Meaning::Consumer(flag!("heartbeat-interval", ms)),
    ),
    (
        "max.poll.interval.ms",
        Meaning::Consumer(flag!("max-poll-interval", ms)),
    ),
    (
        "metadata.max.age.ms",
        Meaning::Consumer(flag!("metadata-max-age", ms)),
    ),
    ("auto.offset.reset", Meaning::Consumer(offset_reset)),
    (
        "auto.commit.interval.ms",
        Meaning::Consumer(flag!("commit-interval", ms)),
    ),
    (
        "fetch.max.wait.ms",
        Meaning::Consumer(flag!("fetch-max-wait", ms)),
    ),
    (
        "fetch.max.bytes",
        Meaning::Consumer(flag!("fetch-max-bytes", number)),
    ),
    (
        "max.partition.fetch.bytes",
        Meaning::Consumer(flag!("max-partition-fetch-bytes", number)),
    ),
    (
        "fetch.min.bytes",
        Meaning::Consumer(flag!("fetch-min-bytes", number)),
    ),
    ("isolation.level", Meaning::Consumer(isolation)),
    (
        "enable.auto.commit",
        Meaning::Ignored("mykafkams commits the offsets it has finished processing"),
    ),
    (
        "max.poll.records",
        Meaning::Ignored("bounded by --max-in-flight instead"),
    ),
    (
        "key.deserializer",
        Meaning::Ignored("keys and values are bytes"),
    ),
    (
        "value.deserializer",
        Meaning::Ignored("keys and values are bytes"),
    ),
    // The producer.
    ("linger.ms", Meaning::Producer(flag!("linger-ms", number))),
    ("batch.size", Meaning::Producer(flag!("batch-size", number))),
    ("compression.type", Meaning::Producer(compression)),
    ("compression.codec", Meaning::Producer(compression)),
    ("acks", Meaning::Producer(acks)),
    ("request.required.acks", Meaning::Producer(acks)),
    ("enable.idempotence", Meaning::Producer(idempotence)),
    (
        "key.serializer",
        Meaning::Ignored("keys and values are bytes"),
    ),
    (
        "value.serializer",
        Meaning::Ignored("keys and values are bytes"),
    ),
    (
        "retries",
        Meaning::Ignored("retries go on until delivery.timeout.ms"),
    ),
    (
        "delivery.timeout.ms",
        Meaning::Producer(flag!("delivery-timeout-ms", number)),
    ),
    (
        "max.in.flight.requests.per.connection",
        Meaning::Producer(flag!("max-in-flight-requests", number)),
    ),
    (
        "buffer.memory",
        Meaning::Producer(flag!("buffer-memory", number)),
    ),
    // Both, harmless.
    (
        "client.dns.lookup",
        Meaning::Ignored("every address of a host name is tried"),
    ),
    (
        "request.timeout.ms",
        Meaning::Producer(flag!("request-timeout-ms", number)),
    ),
    ("retry.backoff.ms", Meaning::Ignored(NOT_USED)),
    ("reconnect.backoff.ms", Meaning::Ignored(NOT_USED)),
    ("reconnect.backoff.max.ms", Meaning::Ignored(NOT_USED)),
    (
        "socket.connection.setup.timeout.ms",
        Meaning::Ignored("use --connect-timeout"),
    ),
    ("connections.max.idle.ms", Meaning::Ignored(NOT_USED)),
    (
        "api.version.request",
        Meaning::Ignored("API versions are always negotiated"),
    ),
    (
        "schema.registry.url",
        Meaning::Ignored("no schema registry is used: values are bytes"),
    ),
    (
        "basic.auth.credentials.source",
        Meaning::Ignored("no schema registry is used"),
    ),
    (
        "basic.auth.user.info",
        Meaning::Ignored("no schema registry is used"),
    ),
    (
        "schema.registry.basic.auth.user.info",
        Meaning::Ignored("no schema registry is used"),
    ),
];

/// Properties whose values are secrets: never echoed, and a warning when
/// typed on the command line.
const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "sasl.jaas.config",
    "sasl.oauthbearer.token",
    "ssl.key.password",
    "ssl.keystore.password",
];

/// The security properties read from the environment (lowest precedence),
/// by variable. clap reads the other flags' variables itself.
const ENVIRONMENT: &[(&str, &str)] = &[
    ("KAFKA_SECURITY_PROTOCOL", "security.protocol"),
    ("KAFKA_SASL_MECHANISM", "sasl.mechanism"),
    ("KAFKA_SASL_USERNAME", "sasl.username"),
    ("KAFKA_SASL_PASSWORD", "sasl.password"),
    ("KAFKA_SASL_JAAS_CONFIG", "sasl.jaas.config"),
    ("KAFKA_SASL_OAUTHBEARER_TOKEN", "sasl.oauthbearer.token"),
    ("KAFKA_SSL_CA_LOCATION", "ssl.ca.location"),
    ("KAFKA_SSL_CERTIFICATE_LOCATION", "ssl.certificate.location"),
    ("KAFKA_SSL_KEY_LOCATION", "ssl.key.location"),
    ("KAFKA_SSL_KEY_PASSWORD", "ssl.key.password"),
];

/// A JAAS line carries a user name and a password too: `sasl.username` and
/// `sasl.password` set at a lower layer than it (flag > -X > file >
/// environment) give way to it, so the environment's user name is never
/// paired with a config file's JAAS password. At the same or a higher
/// layer they win over the line, as in librdkafka.
const JAAS_SHADOWS: &[&str] = &["sasl.username", "sasl.password"];

/// The flags that carry secrets (the same list, as flags).
const SECRET_FLAGS: &[&str] = &[
    "--sasl-password",
    "--sasl-jaas-config",
    "--sasl-oauthbearer-token",
    "--ssl-key-password",
];

/// The command line after `--config` and `-X` are folded in. `Debug`
/// shows no argument values: they may be secrets.
pub struct CommandLine {
    /// The arguments for clap: the program name, the flags from the config
    /// file, the flags from `-X`, then the user's own arguments.
    pub argv: Vec<OsString>,
    /// The long flags (without `--`) the user typed themselves (not from
    /// `-X` or the file): positional arguments fill the slots these leave open.
    pub typed: Vec<String>,
    /// One line each, for stderr: ignored properties, secrets on the command line.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for CommandLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandLine")
            .field("arguments", &self.argv.len())
            .field("typed", &self.typed)
            .finish_non_exhaustive()
    }
}

impl CommandLine {
    /// Whether the user typed `--long` (or one of its aliases) themselves.
    pub fn typed(&self, long: &str) -> bool {
        self.typed.iter().any(|t| t == long)
    }
}

/// Folds `--config FILE` and every `-X key=value` of `raw` (the process
/// arguments, program name first), and the security variables of the
/// environment, into flags, as the module doc describes. Errors are
/// [`Error::Usage`] and never contain a property's value.
pub fn fold(raw: Vec<OsString>, tool: Tool) -> Result<CommandLine> {
    fold_with_env(raw, tool, &|name| std::env::var(name).ok())
}

/// [`fold`] with the environment given as a lookup (for tests).
pub fn fold_with_env(
    raw: Vec<OsString>,
    tool: Tool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CommandLine> {
    let mut raw = raw.into_iter();
    let program = raw.next().unwrap_or_else(|| OsString::from("mykafkams"));
    let mut files = Vec::new();
    let mut settings = Vec::new(); // (key, value) from -X, in order
    let mut rest = Vec::new();
    let mut typed = Vec::new();
    let mut warnings = Vec::new();
    let mut after_dashes = false;
    while let Some(arg) = raw.next() {
        let Some(text) = arg.to_str().map(str::to_string) else {
            rest.push(arg);
            continue;
        };
        if after_dashes {
            rest.push(arg);
            continue;
        }
        let mut value_of = |inline: Option<&str>, what: &str| -> Result<String> {
            match inline {
                Some(v) => Ok(v.to_string()),
                None => raw
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| Error::Usage(format!("{what} needs a value"))),
            }
        };
        if text == "--" {
            after_dashes = true;
            rest.push(arg);
        } else if text == "--config" || text.starts_with("--config=") {
            files.push(value_of(text.strip_prefix("--config="), "--config")?);
        } else if text == "-X" || (text.starts_with("-X") && text.len() > 2) {
            let inline = text.strip_prefix("-X").filter(|s| !s.is_empty());
            let kv = value_of(inline.map(|s| s.strip_prefix('=').unwrap_or(s)), "-X")?;
            let Some((k, v)) = kv.split_once('=') else {
                // Not echoed: `-X sasl.password:...` would print the password.
                return Err(Error::Usage(
                    "an -X argument is not key=value (it has no '='): write -X key=value".into(),
                ));
            };
            let key = k.trim().to_string();
            if SECRET_PROPERTIES.contains(&key.as_str()) && !is_reference(v) {
                warnings.push(format!(
                    "-X {key}=... puts a secret in the process list (visible to other users): use a config file, an environment variable, or ${{file:PATH}} / ${{env:NAME}}"
                ));
            }
            settings.push((key, v.to_string()));
        } else if let Some(long) = text.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (long.to_string(), None),
            };
            typed.push(name.clone());
            if !SECRET_FLAGS.contains(&format!("--{name}").as_str()) {
                rest.push(arg);
                continue;
            }
            // A secret flag goes to clap as one `--flag=value` argument, so a
            // secret never stands alone (one starting with '-' would be
            // reported, and echoed, as an unexpected argument).
            let value = match inline {
                Some(v) => v,
                None => value_of(None, &format!("--{name}"))?,
            };
            if !is_reference(&value) {
                warnings.push(format!(
                    "--{name} puts a secret in the process list (visible to other users): use a config file, an environment variable, or ${{file:PATH}} / ${{env:NAME}}"
                ));
            }
            rest.push(OsString::from(format!("--{name}={value}")));
        } else {
            rest.push(arg);
        }
    }
    // Every property with its layer (0 environment, 1 file, 2 -X), in
    // precedence order.
    let mut layered: Vec<(u8, String, String, String)> = Vec::new();
    for (var, key) in ENVIRONMENT {
        if let Some(value) = env(var) {
            layered.push((0, key.to_string(), value, var.to_string()));
        }
    }
    for file in &files {
        let path = Path::new(file);
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("cannot read the config file {file}: {e}")))?;
        let entries = properties::parse(&text)
            .map_err(|e| Error::Usage(format!("config file {file}: {e}")))?;
        for entry in entries {
            let origin = format!("{file}:{}", entry.line);
            layered.push((1, entry.key, entry.value, origin));
        }
    }
    for (key, value) in settings {
        layered.push((2, key, value, "-X".to_string()));
    }
    let jaas_layer = if typed.iter().any(|t| t == "sasl-jaas-config") {
        Some(3)
    } else {
        layered
            .iter()
            .filter(|(_, key, _, _)| key == "sasl.jaas.config")
            .map(|(layer, ..)| *layer)
            .max()
    };
    let mut flags = Vec::new();
    for (layer, key, value, origin) in &layered {
        if JAAS_SHADOWS.contains(&key.as_str()) && Some(*layer) < jaas_layer {
            tracing::debug!(
                "{key} ({origin}) gives way to a sasl.jaas.config of higher precedence"
            );
            continue;
        }
        flags.extend(to_flags(key, value, tool, origin, &mut warnings)?);
    }
    let mut argv = vec![program];
    argv.extend(flags.into_iter().map(OsString::from));
    argv.extend(rest);
    Ok(CommandLine {
        argv,
        typed,
        warnings,
    })
}

fn is_reference(v: &str) -> bool {
    let v = v.trim();
    v.starts_with("${") && v.ends_with('}')
}

/// The flags one property becomes; `origin` names where it was set.
fn to_flags(
    key: &str,
    value: &str,
    tool: Tool,
    origin: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>> {
    let Some((_, meaning)) = PROPERTIES.iter().find(|(name, _)| *name == key) else {
        // A line without a separator (a token pasted in, a secret file given
        // to --config) becomes a key: echo only what looks like a name.
        let looks_like_a_name = key.len() <= 64
            && key.contains('.')
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !looks_like_a_name {
            return Err(Error::Usage(format!(
                "{origin}: not a property name (not shown, in case it is a secret): write key=value with a Kafka property name"
            )));
        }
        let hint = suggest::closest(key, PROPERTIES.iter().map(|(n, _)| *n))
            .map(|n| format!(": did you mean '{n}'?"))
            .unwrap_or_else(|| ": see the README's property table".into());
        return Err(Error::Usage(format!(
            "unknown property '{key}' ({origin}){hint}"
        )));
    };
    let secret = SECRET_PROPERTIES.contains(&key);
    // A ${env:..} / ${file:..} reference in an ordinary property is read now;
    // in a secret one it stays a reference, read at each use.
    let resolved;
    let value = match secret::resolve_reference(value) {
        Some(_) if secret => value,
        Some(Ok(v)) => {
            resolved = v;
            resolved.as_str()
        }
        Some(Err(e)) => return Err(Error::Usage(format!("{key} ({origin}): {e}"))),
        None => value,
    };
    let convert = match (meaning, tool) {
        (Meaning::Both(c), _)
        | (Meaning::Consumer(c), Tool::Consumer)
        | (Meaning::Producer(c), Tool::Producer) => c,
        (Meaning::Consumer(_), Tool::Producer) | (Meaning::Producer(_), Tool::Consumer) => {
            tracing::debug!("{key} ({origin}) is for the other binary; ignored");
            return Ok(Vec::new());
        }
        (Meaning::Ignored(why), _) => {
            warnings.push(format!("property {key} ({origin}) is ignored: {why}"));
            return Ok(Vec::new());
        }
        (Meaning::Unsupported(why), _) => {
            return Err(Error::Usage(format!("property {key} ({origin}): {why}")));
        }
    };
    convert(value).map_err(|e| {
        if secret {
            Error::Usage(format!("property {key} ({origin}) is not valid"))
        } else {
            Error::Usage(format!("property {key} ({origin}): {e}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold_args(args: &[&str], tool: Tool) -> Result<CommandLine> {
        let mut raw = vec![OsString::from("consumer")];
        raw.extend(args.iter().map(OsString::from));
        fold_with_env(raw, tool, &|_| None)
    }

    fn strings(cl: &CommandLine) -> Vec<String> {
        cl.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn temp_properties(text: &str) -> String {
        let path = std::env::temp_dir().join(format!(
            "mykafkams-config-{}-{}.properties",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn file_then_x_then_typed_flags_in_that_order() {
        let file = temp_properties("session.timeout.ms=30000\nbootstrap.servers=file:9092\n");
        let cl = fold_args(
            &[
                "--config",
                &file,
                "-X",
                "bootstrap.servers=x:9092",
                "--brokers",
                "flag:9092",
                "t",
                "g",
            ],
            Tool::Consumer,
        )
        .unwrap();
        assert_eq!(
            strings(&cl),
            vec![
                "consumer",
                "--session-timeout=30000ms",
                "--brokers=file:9092",
                "--brokers=x:9092",
                "--brokers",
                "flag:9092",
                "t",
                "g"
            ]
        );
        assert!(cl.typed("brokers") && !cl.typed("session-timeout"));
    }

    #[test]
    fn unknown_properties_are_rejected_with_a_suggestion() {
        let err = fold_args(&["-X", "sasl.mechansim=PLAIN"], Tool::Consumer).unwrap_err();
        let s = err.to_string();
        assert!(
            s.contains("unknown property 'sasl.mechansim'") && s.contains("sasl.mechanism"),
            "{s}"
        );
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
    }

    #[test]
    fn security_weakening_properties_are_refused_and_harmless_ones_warned() {
        let err = fold_args(
            &["-X", "enable.ssl.certificate.verification=false"],
            Tool::Consumer,
        )
        .unwrap_err();
        assert!(err.to_string().contains("ssl.ca.location"), "{err}");
        let cl = fold_args(&["-X", "client.dns.lookup=use_all_dns_ips"], Tool::Consumer).unwrap();
        assert_eq!(cl.warnings.len(), 1, "{:?}", cl.warnings);
        assert_eq!(strings(&cl), vec!["consumer"]);
    }

    #[test]
    fn the_other_binarys_properties_are_ignored_quietly() {
        let cl = fold_args(&["-X", "group.id=g", "-X", "linger.ms=5"], Tool::Producer).unwrap();
        assert_eq!(strings(&cl), vec!["consumer", "--linger-ms=5"]);
        assert!(cl.warnings.is_empty());
    }

    #[test]
    fn java_names_are_translated() {
        let cl = fold_args(
            &[
                "-X",
                "partition.assignment.strategy=org.apache.kafka.clients.consumer.RangeAssignor",
                "-X",
                "auto.offset.reset=latest",
                "-X",
                "ssl.keystore.location=/k.pem",
            ],
            Tool::Consumer,
        )
        .unwrap();
        assert_eq!(
            strings(&cl)[1..],
            [
                "--assignor=range",
                "--reset=latest",
                "--ssl-certificate-location=/k.pem",
                "--ssl-key-location=/k.pem"
            ]
        );
        let err = fold_args(&["-X", "ssl.truststore.type=JKS"], Tool::Consumer).unwrap_err();
        assert!(err.to_string().contains("keytool"), "{err}");
    }

    #[test]
    fn secrets_on_the_command_line_are_warned_about_but_references_are_not() {
        let cl = fold_args(&["-X", "sasl.password=hunter2-secret"], Tool::Consumer).unwrap();
        assert_eq!(cl.warnings.len(), 1);
        assert!(
            !cl.warnings[0].contains("hunter2-secret"),
            "{}",
            cl.warnings[0]
        );
        let cl = fold_args(&["--sasl-password", "hunter2-secret"], Tool::Consumer).unwrap();
        assert_eq!(cl.warnings.len(), 1);
        let cl = fold_args(&["--sasl-password=${env:PW}"], Tool::Consumer).unwrap();
        assert!(cl.warnings.is_empty(), "{:?}", cl.warnings);
        let cl = fold_args(&["--sasl-password", "${file:/run/pw}"], Tool::Consumer).unwrap();
        assert!(cl.warnings.is_empty(), "{:?}", cl.warnings);
    }

    #[test]
    fn a_bad_secret_value_is_reported_without_it() {
        let err = fold_args(
            &["-X", "ssl.truststore.type=hunter2-secret"],
            Tool::Consumer,
        )
        .unwrap_err();
        // Not a secret property: the value may be named.
        assert!(err.to_string().contains("HUNTER2-SECRET"), "{err}");
        let err = fold_args(&["-X", "nosuch=hunter2-secret"], Tool::Consumer).unwrap_err();
        assert!(!err.to_string().contains("hunter2-secret"), "{err}");
    }

    #[test]
    fn a_jaas_line_shadows_user_and_password_of_lower_layers_only() {
        let file = temp_properties(
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"alice\" password=\"pw\";\n",
        );
        let env = |name: &str| match name {
            "KAFKA_SASL_USERNAME" => Some("bob".to_string()),
            "KAFKA_SECURITY_PROTOCOL" => Some("SASL_SSL".to_string()),
            _ => None,
        };
        let raw = ["consumer", "--config", &file].map(OsString::from).to_vec();
        let cl = fold_with_env(raw, Tool::Consumer, &env).unwrap();
        let args = strings(&cl);
        assert!(
            args.contains(&"--security-protocol=SASL_SSL".to_string()),
            "{args:?}"
        );
        assert!(
            !args.iter().any(|a| a.starts_with("--sasl-username")),
            "the file's JAAS line wins over the environment's user name: {args:?}"
        );
        // Without the file, the environment's credentials are used.
        let cl = fold_with_env(vec![OsString::from("consumer")], Tool::Consumer, &env).unwrap();
        assert!(strings(&cl).contains(&"--sasl-username=bob".to_string()));
        // A typed user name stays (and wins over the line); without a JAAS
        // line, -X and the environment combine as usual.
        let raw = ["consumer", "--config", &file, "--sasl-username", "carol"]
            .map(OsString::from)
            .to_vec();
        let cl = fold_with_env(raw, Tool::Consumer, &env).unwrap();
        assert!(strings(&cl).contains(&"--sasl-username".to_string()));
        let env_pw = |name: &str| (name == "KAFKA_SASL_PASSWORD").then(|| "pw".to_string());
        let raw = ["consumer", "-X", "sasl.username=alice"]
            .map(OsString::from)
            .to_vec();
        let cl = fold_with_env(raw, Tool::Consumer, &env_pw).unwrap();
        assert_eq!(
            strings(&cl)[1..],
            ["--sasl-password=pw", "--sasl-username=alice"]
        );
    }

    #[test]
    fn a_secret_flag_keeps_its_value_even_when_it_starts_with_a_dash() {
        let cl = fold_args(
            &["--sasl-password", "--hunter2-secret", "t", "g"],
            Tool::Consumer,
        )
        .unwrap();
        assert_eq!(
            strings(&cl),
            vec!["consumer", "--sasl-password=--hunter2-secret", "t", "g"]
        );
    }

    #[test]
    fn malformed_input_is_not_echoed() {
        let err = fold_args(&["-X", "sasl.password:hunter2-secret"], Tool::Consumer).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let file = temp_properties("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.hunter2-secret\n");
        let err = fold_args(&["--config", &file], Tool::Consumer).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains(":1"), "names the line: {err}");
    }

    #[test]
    fn a_bad_number_names_the_property_and_where_it_was_set() {
        let file = temp_properties("linger.ms=abc\n");
        let err = fold_args(&["--config", &file], Tool::Producer)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linger.ms") && err.contains(":1") && err.contains("whole number"),
            "{err}"
        );
        let cl = fold_args(&["-X", "batch.size=16384"], Tool::Producer).unwrap();
        assert_eq!(strings(&cl)[1..], ["--batch-size=16384"]);
    }

    #[test]
    fn arguments_after_double_dash_are_left_alone() {
        let cl = fold_args(&["--", "-X", "sasl.mechansim=oops"], Tool::Consumer).unwrap();
        assert_eq!(
            strings(&cl),
            vec!["consumer", "--", "-X", "sasl.mechansim=oops"]
        );
    }
}

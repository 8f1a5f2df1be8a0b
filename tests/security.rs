//! TLS, SASL and Kafka-style configuration against a real secured broker:
//! the launcher's secure node (`just kafka-up-secure`, docker/kafka-local.sh
//! with KAFKA_SECURE=1), whose listeners, users and TLS files are listed at
//! the top of that script.
//!
//! Every binary here runs at `RUST_LOG=trace`, and every run's stdout and
//! stderr are checked for each password, key password and token the tests
//! use: a secret in any output fails the test that printed it.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::secure::*;
use common::{consumer, producer, unique};

/// Consumes `topic` to its end through `props`, manually (all partitions)
/// and then as a member of a new group; checks order and the commit.
fn consume_both_ways(
    props: &[(&str, &str)],
    topic: &str,
    keys: usize,
    rounds: usize,
    extra: &[&str],
) {
    let total = keys * rounds;
    let mut manual = consumer();
    manual.args(x(props)).args([
        "--topic",
        topic,
        "--group",
        &unique("sec-manual"),
        "--partitions",
        "all",
        "--exit-at-end",
        "--format",
        "json",
    ]);
    let out = run(manual, b"", extra);
    assert!(
        out.status.success(),
        "manual consumer failed: {:?}",
        error_lines(&out)
    );
    assert_in_order(&out.stdout, keys, rounds);

    let group = unique("sec-group");
    let mut member = consumer();
    member
        .args(x(props))
        .args([topic, &group, "--exit-at-end", "--format", "json"]);
    let out = run(member, b"", extra);
    assert!(
        out.status.success(),
        "group member failed: {:?}",
        error_lines(&out)
    );
    assert_in_order(&out.stdout, keys, rounds);
    // What the group committed, as Kafka's own tool reads it (PLAINTEXT admin listener).
    let described = common::kafka_tool(
        "consumer-groups",
        &[
            "--bootstrap-server",
            &plaintext(),
            "--describe",
            "--group",
            &group,
        ],
    );
    let committed: i64 = String::from_utf8_lossy(&described.stdout)
        .lines()
        .filter(|l| l.contains(topic))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<i64>().ok())
        .sum();
    assert_eq!(committed, total as i64, "the group committed every message");
}

fn end_to_end(props: &[(&str, &str)], extra: &[&str]) {
    let topic = unique("sec");
    produce_keyed(props, &topic, 8, 25, extra);
    consume_both_ways(props, &topic, 8, 25, extra);
}

#[test]
fn plain_over_sasl_ssl_end_to_end() {
    let props = sasl_ssl_props("PLAIN", "alice", "alice-secret");
    end_to_end(&as_refs(&props), &[]);
}

#[test]
fn scram_sha_256_over_sasl_ssl_end_to_end() {
    let props = sasl_ssl_props("SCRAM-SHA-256", "scram256", "scram256-secret");
    end_to_end(&as_refs(&props), &[]);
}

#[test]
fn scram_sha_512_over_sasl_ssl_end_to_end() {
    let props = sasl_ssl_props("SCRAM-SHA-512", "scram512", "scram512-secret");
    end_to_end(&as_refs(&props), &[]);
}

#[test]
fn oauthbearer_with_a_token_file_over_sasl_ssl_end_to_end() {
    let token = unsecured_jwt("oauth-user", 3600);
    let file = std::env::temp_dir().join(unique("token"));
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let reference = format!("${{file:{}}}", file.display());
    let props = [
        ("bootstrap.servers", sasl_ssl()),
        ("security.protocol", "SASL_SSL".into()),
        ("sasl.mechanism", "OAUTHBEARER".into()),
        ("sasl.oauthbearer.token", reference),
        ("ssl.ca.location", tls("ca.pem")),
    ];
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    end_to_end(&props, &[&token]);
}

#[test]
fn oauthbearer_unsecured_login_module_over_sasl_ssl_end_to_end() {
    let props = [
        ("bootstrap.servers", sasl_ssl()),
        ("security.protocol", "SASL_SSL".into()),
        (
            "sasl.jaas.config",
            r#"org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="oauth-user";"#.into(),
        ),
        ("ssl.ca.location", tls("ca.pem")),
    ];
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    end_to_end(&props, &[]);
}

#[test]
fn mutual_tls_over_ssl_end_to_end_with_each_key_format() {
    for key in ["client.key", "client-rsa.key", "client-encrypted.key"] {
        let props = [
            ("bootstrap.servers", ssl()),
            ("security.protocol", "SSL".to_string()),
            ("ssl.ca.location", tls("ca.pem")),
            ("ssl.certificate.location", tls("client.pem")),
            ("ssl.key.location", tls(key)),
            ("ssl.key.password", "client-key-secret".into()),
        ];
        let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
        end_to_end(&props, &[]);
    }
}

#[test]
fn a_managed_provider_style_config_file_works_and_kafkas_console_consumer_reads_it_too() {
    // As a provider's console shows it: Java property names, a JAAS line,
    // and (for Java's sake too) the CA as a PEM trust store.
    let file = properties_file(&format!(
        "# copied from the provider's console\n\
         bootstrap.servers={}\n\
         security.protocol=SASL_SSL\n\
         sasl.mechanism=SCRAM-SHA-512\n\
         sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n    username=\"scram512\" password=\"scram512-secret\";\n\
         ssl.truststore.type=PEM\n\
         ssl.truststore.location={}\n\
         client.dns.lookup=use_all_dns_ips\n",
        sasl_ssl(),
        tls("ca.pem")
    ));
    let topic = unique("sec-file");
    let mut cmd = producer();
    cmd.arg("--config")
        .arg(&file)
        .args([&topic, "k", "--create-topic"]);
    let out = run(cmd, b"one\ntwo\nthree\n", &[]);
    assert!(
        out.status.success(),
        "producer failed: {:?}",
        error_lines(&out)
    );
    assert!(
        stderr(&out).contains("client.dns.lookup"),
        "the ignored property gets its warning line"
    );

    let mut cmd = consumer();
    cmd.arg("--config")
        .arg(&file)
        .args([&topic, &unique("sec-file-g"), "--exit-at-end"]);
    let out = run(cmd, b"", &[]);
    assert!(
        out.status.success(),
        "consumer failed: {:?}",
        error_lines(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\nthree\n");

    let java = common::kafka_tool(
        "console-consumer",
        &[
            "--bootstrap-server",
            &sasl_ssl(),
            "--consumer.config",
            file.to_str().unwrap(),
            "--topic",
            &topic,
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "30000",
            "--property",
            "print.key=true",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&java.stdout),
        "k\tone\nk\ttwo\nk\tthree\n",
        "Kafka's console consumer reads what we wrote, with the same file"
    );
}

#[test]
fn the_dead_letter_queue_works_over_sasl_ssl() {
    let props = sasl_ssl_props("SCRAM-SHA-256", "scram256", "scram256-secret");
    let props = as_refs(&props);
    let topic = unique("sec-dlq-src");
    let dlq = format!("{topic}-dlq");
    produce_keyed(&props, &topic, 2, 3, &[]);
    let mut create = producer();
    create.args(x(&props)).args([&dlq, "x", "--create-topic"]);
    let out = run(create, b"", &[]);
    assert!(out.status.success(), "{:?}", error_lines(&out));

    let mut cmd = consumer();
    cmd.args(x(&props)).args([
        &topic,
        &unique("sec-dlq-g"),
        "--exit-at-end",
        "--retries",
        "0",
        "--on-failure",
        &format!("dlq:{dlq}"),
        "--handler",
        "exec",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    let out = run(cmd, b"", &[]);
    assert!(out.status.success(), "{:?}", error_lines(&out));
    assert!(
        stderr(&out).contains("6 dead-lettered"),
        "{}",
        stderr(&out).lines().last().unwrap_or_default()
    );

    let mut read = consumer();
    read.args(x(&props)).args([
        "--topic",
        &dlq,
        "--group",
        &unique("sec-dlq-r"),
        "--partitions",
        "all",
        "--exit-at-end",
        "--format",
        "json",
    ]);
    let out = run(read, b"", &[]);
    assert!(out.status.success(), "{:?}", error_lines(&out));
    assert_in_order(&out.stdout, 2, 3);
}

/// Runs the producer with `args`, expecting `code` and one `error:` line
/// containing every one of `needles`, within 15 s.
fn expect_failure(args: &[String], code: i32, needles: &[&str]) {
    let started = Instant::now();
    let mut cmd = producer();
    cmd.args(args);
    let out = run(cmd, b"m\n", &[]);
    let elapsed = started.elapsed();
    let errors = error_lines(&out);
    assert_eq!(out.status.code(), Some(code), "{errors:?}");
    assert_eq!(errors.len(), 1, "one error line: {errors:?}");
    for n in needles {
        assert!(errors[0].contains(n), "{:?} lacks {n:?}", errors[0]);
    }
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert!(!stderr(&out).contains("panicked"), "no panic");
}

fn props_args(props: &[(String, String)], overrides: &[(&str, &str)]) -> Vec<String> {
    let mut merged: Vec<(&str, &str)> = as_refs(props);
    for (k, v) in overrides {
        merged.retain(|(mk, _)| mk != k);
        merged.push((k, v));
    }
    x(&merged)
}

#[test]
fn a_wrong_password_or_unknown_user_is_an_authentication_error() {
    let props = sasl_ssl_props("PLAIN", "alice", "alice-secret");
    let mut args = props_args(&props, &[("sasl.password", "wrong-password-77")]);
    args.extend(["t".into(), "k".into()]);
    expect_failure(&args, 7, &["User:alice", "PLAIN", "password"]);

    let props = sasl_ssl_props("SCRAM-SHA-256", "nobody", "wrong-password-77");
    let mut args = props_args(&props, &[]);
    args.extend(["t".into(), "k".into()]);
    expect_failure(&args, 7, &["User:nobody", "SCRAM-SHA-256", "failed"]);
}

#[test]
fn a_mechanism_the_listener_does_not_enable_lists_the_ones_it_does() {
    let args = [
        x(&[
            ("bootstrap.servers", &sasl_plaintext()),
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "scram512"),
            ("sasl.password", "scram512-secret"),
        ]),
        vec!["t".into(), "k".into()],
    ]
    .concat();
    expect_failure(
        &args,
        7,
        &["SCRAM-SHA-512", "PLAIN, SCRAM-SHA-256, OAUTHBEARER"],
    );
}

#[test]
fn an_untrusted_certificate_or_a_host_name_mismatch_names_the_fix() {
    let props = sasl_ssl_props("PLAIN", "alice", "alice-secret");
    // The system trust store does not know the test CA.
    let mut untrusted: Vec<(String, String)> = props.clone();
    untrusted.retain(|(k, _)| k != "ssl.ca.location");
    let mut args = props_args(&untrusted, &[]);
    args.extend(["t".into(), "k".into()]);
    expect_failure(&args, 7, &["localhost:", "not trusted", "ssl.ca.location"]);
    // Another CA is not the right one either.
    let mut args = props_args(&props, &[("ssl.ca.location", &tls("other-ca.pem"))]);
    args.extend(["t".into(), "k".into()]);
    expect_failure(&args, 7, &["not trusted", "ssl.ca.location"]);

    // The certificate names localhost only.
    let ip = format!("127.0.0.1:{}", base_port() + 2);
    let mut args = props_args(&props, &[("bootstrap.servers", &ip)]);
    args.extend(["t".into(), "k".into()]);
    expect_failure(
        &args,
        7,
        &[
            "'127.0.0.1'",
            "ssl.ca.location",
            "ssl.endpoint.identification.algorithm",
        ],
    );
    // Java's empty algorithm turns the name check (only) off.
    let topic = unique("sec-noverify");
    let mut cmd = producer();
    cmd.args(props_args(
        &props,
        &[
            ("bootstrap.servers", &ip),
            ("ssl.endpoint.identification.algorithm", ""),
        ],
    ))
    .args([&topic, "k", "--create-topic"]);
    let out = run(cmd, b"m\n", &[]);
    assert!(out.status.success(), "{:?}", error_lines(&out));
}

#[test]
fn tls_and_plaintext_mismatches_say_which_protocol_the_port_speaks() {
    let t = || vec!["t".to_string(), "k".to_string()];
    // A plaintext client on the TLS port.
    let args = [x(&[("bootstrap.servers", &sasl_ssl())]), t()].concat();
    expect_failure(&args, 7, &["TLS", "security.protocol=SSL or SASL_SSL"]);
    // A TLS client on the plaintext port.
    let args = [
        x(&[
            ("bootstrap.servers", &plaintext()),
            ("security.protocol", "SSL"),
            ("ssl.ca.location", &tls("ca.pem")),
        ]),
        t(),
    ]
    .concat();
    expect_failure(&args, 7, &["does not speak TLS", "PLAINTEXT"]);
    // No SASL on a SASL port, and SASL on a port without it.
    let args = [x(&[("bootstrap.servers", &sasl_plaintext())]), t()].concat();
    expect_failure(&args, 7, &["requires SASL", "security.protocol"]);
    let args = [
        x(&[
            ("bootstrap.servers", &plaintext()),
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "alice"),
            ("sasl.password", "alice-secret"),
        ]),
        t(),
    ]
    .concat();
    expect_failure(&args, 7, &["not be a SASL listener", "security.protocol"]);
    // Mutual TLS without a client certificate.
    let args = [
        x(&[
            ("bootstrap.servers", &ssl()),
            ("security.protocol", "SSL"),
            ("ssl.ca.location", &tls("ca.pem")),
        ]),
        t(),
    ]
    .concat();
    expect_failure(
        &args,
        7,
        &["client certificate", "ssl.certificate.location"],
    );
    // An encrypted key with the wrong password is a configuration error.
    let args = [
        x(&[
            ("bootstrap.servers", &ssl()),
            ("security.protocol", "SSL"),
            ("ssl.ca.location", &tls("ca.pem")),
            ("ssl.certificate.location", &tls("client.pem")),
            ("ssl.key.location", &tls("client-encrypted.key")),
            ("ssl.key.password", "wrong-password-77"),
        ]),
        t(),
    ]
    .concat();
    expect_failure(&args, 2, &["client-encrypted.key", "ssl.key.password"]);
}

#[test]
fn missing_acls_are_named() {
    // Created by a super user, so it exists: mallory just may not see it.
    let admin = sasl_ssl_props("PLAIN", "alice", "alice-secret");
    let topic = unique("sec-acl");
    produce_keyed(&as_refs(&admin), &topic, 1, 1, &[]);

    let mallory = sasl_ssl_props("PLAIN", "mallory", "mallory-secret");
    let plaintext_addr = plaintext();
    let mut args = props_args(&mallory, &[]);
    args.extend([topic.clone(), "k".into()]);
    expect_failure(
        &args,
        7,
        &[
            "TOPIC_AUTHORIZATION_FAILED",
            "User:mallory",
            &format!("Topic:{topic}"),
        ],
    );

    // With Describe on the topic (and Read on a group), mallory gets as far
    // as producing and fetching: the refusals name Write and Read.
    let group = unique("sec-acl-m");
    for acl in [
        vec!["--operation", "Describe", "--topic", &topic],
        vec!["--operation", "Read", "--group", &group],
    ] {
        let mut args = vec![
            "--bootstrap-server",
            &plaintext_addr,
            "--add",
            "--allow-principal",
            "User:mallory",
        ];
        args.extend(acl);
        common::kafka_tool("acls", &args);
    }
    // Idempotent (the default), the producer id is refused first: the
    // broker grants it to a principal with Write on some topic (KIP-679).
    let mut args = props_args(&mallory, &[]);
    args.extend([topic.clone(), "k".into()]);
    expect_failure(
        &args,
        7,
        &[
            "CLUSTER_AUTHORIZATION_FAILED",
            "User:mallory WRITE",
            &format!("Topic:{topic}"),
        ],
    );
    // Without idempotence the produce request itself is refused.
    let mut args = props_args(&mallory, &[]);
    args.extend([
        "--idempotence".into(),
        "false".into(),
        topic.clone(),
        "k".into(),
    ]);
    expect_failure(
        &args,
        7,
        &[
            "TOPIC_AUTHORIZATION_FAILED",
            "User:mallory WRITE",
            &format!("Topic:{topic}"),
        ],
    );
    let started = Instant::now();
    let mut cmd = consumer();
    cmd.args(props_args(&mallory, &[])).args([
        "--topic",
        &topic,
        "--group",
        &group,
        "--partitions",
        "all",
        "--exit-at-end",
    ]);
    let out = run(cmd, b"", &[]);
    let errors = error_lines(&out);
    assert_eq!(out.status.code(), Some(7), "{errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("User:mallory READ") && errors[0].contains(&format!("Topic:{topic}")),
        "{}",
        errors[0]
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // carol may read topics but not use a group.
    let carol = sasl_ssl_props("PLAIN", "carol", "carol-secret");
    let group = unique("sec-acl-g");
    let started = Instant::now();
    let mut cmd = consumer();
    cmd.args(props_args(&carol, &[]))
        .args([&topic, &group, "--exit-at-end"]);
    let out = run(cmd, b"", &[]);
    let errors = error_lines(&out);
    assert_eq!(out.status.code(), Some(7), "{errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    for n in [
        "GROUP_AUTHORIZATION_FAILED",
        "User:carol",
        &format!("Group:{group}"),
    ] {
        assert!(errors[0].contains(n), "{:?} lacks {n}", errors[0]);
    }
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn precedence_is_flag_over_x_over_file_over_environment() {
    let props = sasl_ssl_props("PLAIN", "alice", "wrong-password-77");
    let file = properties_file(
        &as_refs(&props)
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect::<String>(),
    );
    let topic = unique("sec-prec");
    let attempt = |extra: &[&str], env: Option<&str>| -> Output {
        let mut cmd = producer();
        cmd.arg("--config")
            .arg(&file)
            .args(extra)
            .args([&topic, "k", "--create-topic"]);
        if let Some(pw) = env {
            cmd.env("KAFKA_SASL_PASSWORD", pw);
        }
        run(cmd, b"m\n", &[])
    };
    // The file's wrong password beats the environment's right one...
    let out = attempt(&[], Some("alice-secret"));
    assert_eq!(out.status.code(), Some(7), "{:?}", error_lines(&out));
    // ...-X beats the file...
    let out = attempt(&["-X", "sasl.password=alice-secret"], None);
    assert!(out.status.success(), "{:?}", error_lines(&out));
    // ...and a flag beats -X, wherever it stands on the command line.
    let out = attempt(
        &[
            "--sasl-password",
            "alice-secret",
            "-X",
            "sasl.password=wrong-password-77",
        ],
        None,
    );
    assert!(out.status.success(), "{:?}", error_lines(&out));
    assert!(
        stderr(&out).contains("warning: --sasl-password puts a secret in the process list"),
        "a secret on the command line is warned about"
    );
    // The environment alone is enough when nothing else sets it.
    let mut no_password = props.clone();
    no_password.retain(|(k, _)| k != "sasl.password");
    let mut cmd = producer();
    cmd.args(props_args(&no_password, &[]))
        .args([&topic, "k"])
        .env("KAFKA_SASL_PASSWORD", "alice-secret");
    let out = run(cmd, b"m\n", &[]);
    assert!(out.status.success(), "{:?}", error_lines(&out));
}

#[test]
fn an_unknown_property_is_refused_with_the_closest_known_one() {
    let started = Instant::now();
    let mut cmd = consumer();
    cmd.args([
        "-X",
        "sasl.mechansim=PLAIN",
        "-X",
        "sasl.password=alice-secret",
        "t",
        "g",
    ]);
    let out = run(cmd, b"", &[]);
    assert_eq!(out.status.code(), Some(2));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("'sasl.mechansim'") && errors[0].contains("'sasl.mechanism'"),
        "{}",
        errors[0]
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    let file = properties_file("bootstrap.servers=localhost:1\nssl.truststore.type=JKS\n");
    let mut cmd = consumer();
    cmd.arg("--config").arg(&file).args(["t", "g"]);
    let out = run(cmd, b"", &[]);
    assert_eq!(out.status.code(), Some(2));
    let errors = error_lines(&out);
    assert!(
        errors[0].contains("keytool") && errors[0].contains(":2"),
        "names the line: {}",
        errors[0]
    );
}
